//! An outline of the YAML document (every key and value with its position and dotted path),
//! used to name the YAML path of a problem that serde-saphyr reports by position alone.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

use super::problem::{child, item, Pos};

/// Keys and values in document order.
#[derive(Debug)]
pub(crate) struct Outline {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    at: Pos,
    path: String,
    /// For a key, the mapping holding it; otherwise the node itself.
    container: String,
    is_key: bool,
    is_container: bool,
}

impl Outline {
    /// Outlines `text`; `None` if it is not well-formed YAML with string keys.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        // Last wins, so a document with a duplicate key still gets an outline.
        let options = serde_saphyr::options! { duplicate_keys: DuplicateKeyPolicy::LastWins };
        let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, options).ok()?;
        let mut entries = Vec::new();
        walk(&root, String::new(), &mut entries);
        entries.sort_by_key(|entry| entry.at);
        Some(Self { entries })
    }

    /// The path of the node at `at` (the key, when a key and a block mapping value start
    /// there), or else of the last node starting before it.
    pub(crate) fn path_at(&self, at: Pos) -> String {
        let mut exact = self.entries.iter().filter(|e| e.at == at);
        exact
            .clone()
            .rev()
            .find(|e| e.is_key)
            .or_else(|| exact.next_back())
            .or_else(|| self.entries.iter().rev().find(|e| e.at <= at))
            .map(|e| e.path.clone())
            .unwrap_or_default()
    }

    /// The mapping (or sequence) at `at`, or holding the key at `at`, with its path and start:
    /// serde-saphyr places a missing field at one of the two.
    pub(crate) fn container_at(&self, at: Pos) -> Option<(String, Pos)> {
        let exact = || self.entries.iter().filter(|e| e.at == at);
        let path = match exact().find(|e| e.is_container) {
            Some(container) => return Some((container.path.clone(), container.at)),
            None => &exact().find(|e| e.is_key)?.container,
        };
        let container = self
            .entries
            .iter()
            .find(|e| e.is_container && e.path == *path)?;
        Some((container.path.clone(), container.at))
    }
}

fn walk(node: &Spanned<Node>, path: String, entries: &mut Vec<Entry>) {
    let at = Pos::of(node.referenced);
    match &node.value {
        Node::Scalar => entries.push(Entry {
            at,
            container: path.clone(),
            path,
            is_key: false,
            is_container: false,
        }),
        Node::Seq(items) => {
            for (index, value) in items.iter().enumerate() {
                walk(value, item(&path, index), entries);
            }
            entries.push(Entry {
                at,
                container: path.clone(),
                path,
                is_key: false,
                is_container: true,
            });
        }
        Node::Map(pairs) => {
            for (key, value) in pairs {
                let key_path = child(&path, &key.value);
                entries.push(Entry {
                    at: Pos::of(key.referenced),
                    path: key_path.clone(),
                    container: path.clone(),
                    is_key: true,
                    is_container: false,
                });
                walk(value, key_path, entries);
            }
            entries.push(Entry {
                at,
                container: path.clone(),
                path,
                is_key: false,
                is_container: true,
            });
        }
    }
}

/// The shape of a YAML node; scalar values are not kept.
enum Node {
    Scalar,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(value) = seq.next_element()? {
            items.push(value);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry()? {
            pairs.push(pair);
        }
        Ok(Node::Map(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listen:
  address: x
clusters:
  main:
    primary: { host: h, port: 5 }
    replicas:
      - host: r
        port: 6
";

    fn at(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn names_keys_values_and_containers() {
        let outline = Outline::parse(DOC).expect("outline");
        let cases = [
            (at(1, 1), "listen"),
            (at(2, 3), "listen.address"),
            (at(2, 12), "listen.address"),
            (at(5, 14), "clusters.main.primary"),
            (at(5, 16), "clusters.main.primary.host"),
            (at(5, 22), "clusters.main.primary.host"),
            (at(5, 31), "clusters.main.primary.port"),
            (at(7, 9), "clusters.main.replicas[0].host"),
            (at(8, 15), "clusters.main.replicas[0].port"),
            (at(9, 1), "clusters.main.replicas[0].port"),
        ];
        for (pos, expected) in cases {
            assert_eq!(outline.path_at(pos), expected, "{pos:?}");
        }
        let containers = [
            (at(1, 1), Some(("", at(1, 1)))),
            (at(2, 3), Some(("listen", at(2, 3)))),
            (at(5, 16), Some(("clusters.main.primary", at(5, 14)))),
            (at(7, 9), Some(("clusters.main.replicas[0]", at(7, 9)))),
            (at(7, 7), Some(("clusters.main.replicas", at(7, 7)))),
            (at(2, 12), None),
        ];
        for (pos, expected) in containers {
            let found = outline.container_at(pos);
            let found = found.as_ref().map(|(path, at)| (path.as_str(), *at));
            assert_eq!(found, expected, "{pos:?}");
        }
    }

    #[test]
    fn invalid_yaml_has_no_outline() {
        assert!(Outline::parse("a: [1, 2\n").is_none());
        assert!(Outline::parse("a: 1\na: 2\n").is_some());
    }
}
