//! What a rules file can get wrong: one `Problem` per mistake, rendered
//! `file:line:column: yaml.path: message`, and `ConfigErrors` to carry all of them at once.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based line and character column, in the rules text as the user wrote it
/// (or, before mapping, in the text after `${VAR}` substitution).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The position serde-saphyr recorded for a value or an error.
    pub(crate) fn of(location: serde_saphyr::Location) -> Self {
        Self {
            line: usize::try_from(location.line()).unwrap_or(usize::MAX),
            column: usize::try_from(location.column()).unwrap_or(usize::MAX),
        }
    }
}

/// One mistake in a rules file. `line` and `column` are 1-based; both are 0 when the
/// problem concerns the whole file (it could not be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted YAML path of the offending node, e.g. `databases.app.cluster`; empty for the document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found in a rules file; `Display` writes one per line, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    /// A problem with the file as a whole, such as failing to read it.
    pub(crate) fn whole_file(file: &Path, message: String) -> Self {
        let problem = Problem {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            path: String::new(),
            message,
        };
        Self {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// `parent.key`, or `parent["odd key"]` when the key is not a plain word, so paths stay unambiguous.
pub(crate) fn child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (plain, parent.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{parent}.{key}"),
        (false, _) => format!("{parent}[{key:?}]"),
    }
}

/// `parent[index]` for a sequence item.
pub(crate) fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let mut p = Problem {
            file: PathBuf::from("rules/pgstrata.yaml"),
            line: 14,
            column: 9,
            path: "databases.app.cluster".into(),
            message: "cluster \"eu-2\" is not defined".into(),
        };
        assert_eq!(
            p.to_string(),
            "rules/pgstrata.yaml:14:9: databases.app.cluster: cluster \"eu-2\" is not defined"
        );
        p.path.clear();
        assert_eq!(
            p.to_string(),
            "rules/pgstrata.yaml:14:9: cluster \"eu-2\" is not defined"
        );
        let whole = ConfigErrors::whole_file(Path::new("x.yaml"), "cannot read".into());
        assert_eq!(whole.to_string(), "x.yaml: cannot read");
    }

    #[test]
    fn paths() {
        assert_eq!(child("", "users"), "users");
        assert_eq!(child("users", "app-1"), "users.app-1");
        assert_eq!(child("users", "a.b"), "users[\"a.b\"]");
        assert_eq!(child("users", ""), "users[\"\"]");
        assert_eq!(
            item("clusters.main.replicas", 2),
            "clusters.main.replicas[2]"
        );
    }
}
