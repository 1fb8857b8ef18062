//! `${NAME}` substitution in the rules text, before parsing, inside scalars only (comments are
//! left alone, `$${` is a literal `${`). Every changed span is recorded so that a line:column in
//! the expanded text maps back to what the user wrote.
//!
//! Values are inserted so that they stay one scalar whatever they contain: escaped inside
//! double quotes, with `''` inside single quotes, and a plain scalar holding a placeholder is
//! rewritten as a double-quoted one (the parser still reads `"5432"` as a number). Lines never
//! move. Caveats: a placeholder on a continuation line of a multi-line plain scalar breaks it
//! (quote such values), and block scalars (`|`, `>`) only take values without line breaks.

use super::columns::{ColumnMap, LineOut};
use super::problem::Pos;

/// Looks up an environment variable; `None` when unset.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The expanded text and what is needed to report problems against the original.
#[derive(Debug, Default)]
pub(crate) struct Expansion {
    pub text: String,
    pub columns: ColumnMap,
    pub problems: Vec<EnvProblem>,
    /// Source positions of scalars (and placeholders) that received a value, with the variable:
    /// a parse error there must not echo the value.
    substituted: Vec<(Pos, String)>,
    /// Source positions of scalars whose substitution failed: later complaints there are noise.
    tainted: Vec<Pos>,
    /// Every substituted value, to scrub from parser messages.
    values: Vec<String>,
}

/// A bad or unset variable reference.
#[derive(Debug)]
pub(crate) struct EnvProblem {
    /// Where the `${` is in the source.
    pub at: Pos,
    /// Where the substituted scalar is in the expanded text (to name its YAML path).
    pub expanded: Pos,
    pub message: String,
}

impl Expansion {
    /// The variable whose value sits at this source position, if any.
    pub(crate) fn variable_at(&self, source: Pos) -> Option<&str> {
        self.substituted
            .iter()
            .find(|(pos, _)| *pos == source)
            .map(|(_, name)| name.as_str())
    }

    pub(crate) fn is_tainted(&self, source: Pos) -> bool {
        self.tainted.contains(&source)
    }

    /// Replaces substituted values (of 4 characters or more, shorter ones would mangle
    /// ordinary words) by `<redacted>`.
    pub(crate) fn redact(&self, message: &str) -> String {
        self.values
            .iter()
            .filter(|value| value.chars().count() >= 4)
            .fold(message.to_owned(), |text, value| {
                text.replace(value.as_str(), "<redacted>")
            })
    }
}

/// Substitutes every `${NAME}` outside comments with `env(NAME)`.
pub(crate) fn expand(text: &str, env: Env<'_>) -> Expansion {
    let mut expander = Expander {
        env,
        state: State::default(),
        out: Expansion::default(),
    };
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let body = raw.strip_suffix('\n').unwrap_or(raw);
        let body = body.strip_suffix('\r').unwrap_or(body);
        let src: Vec<char> = body.chars().collect();
        let mut line = LineOut::new(index + 1, &src);
        expander.line(&mut line);
        let (expanded, edits) = line.finish();
        expander.out.text.push_str(&expanded);
        expander.out.text.push_str(&raw[body.len()..]);
        expander.out.columns.push_line(edits);
    }
    expander.out
}

/// Lexical state carried from one line to the next.
#[derive(Default)]
struct State {
    quote: Option<char>,
    /// Indentation of the line that opened a block scalar, while inside one.
    block_indent: Option<usize>,
    flow_depth: usize,
    /// Source position of the scalar being read (its first character or quote).
    scalar_at: Pos,
}

struct Expander<'a> {
    env: Env<'a>,
    state: State,
    out: Expansion,
}

/// A `$` that starts something.
enum Placeholder {
    /// `$${`: a literal `${`.
    Escaped,
    Variable {
        name: String,
        len: usize,
    },
    /// `${` not followed by `NAME}`.
    Malformed,
}

impl Placeholder {
    fn len(&self) -> usize {
        match self {
            Self::Escaped => 3,
            Self::Variable { len, .. } => *len,
            Self::Malformed => 2,
        }
    }
}

const MALFORMED: &str = "malformed variable reference: expected ${NAME} with NAME made of \
                         letters, digits and underscores (write $${ for a literal ${)";

impl Expander<'_> {
    fn line(&mut self, l: &mut LineOut<'_>) {
        let src = l.src;
        let indent = src.iter().take_while(|c| **c == ' ').count();
        if let Some(parent) = self.state.block_indent {
            if indent == src.len() || indent > parent {
                self.block_line(l);
                return;
            }
            self.state.block_indent = None;
        }
        let mut i = 0;
        let mut scalar_start = true;
        while i < src.len() {
            if let Some(quote) = self.state.quote {
                i = self.quoted(l, i, quote);
                scalar_start &= self.state.quote.is_some();
                continue;
            }
            let c = src[i];
            let next = src.get(i + 1).copied();
            let in_flow = self.state.flow_depth > 0;
            let ends_token = next.is_none_or(|n| n.is_whitespace() || (in_flow && is_flow(n)));
            if c.is_whitespace() {
                l.copy(i, i + 1);
                i += 1;
            } else if c == '#' && (i == 0 || src[i - 1].is_whitespace()) {
                l.copy(i, src.len());
                break;
            } else if scalar_start && (c == '"' || c == '\'') {
                self.state.quote = Some(c);
                self.state.scalar_at = l.pos(i);
                l.copy(i, i + 1);
                i += 1;
            } else if (c == '[' || c == '{') && (scalar_start || in_flow) {
                self.state.flow_depth += 1;
                (scalar_start, i) = (true, l.copy(i, i + 1));
            } else if (c == ']' || c == '}') && in_flow {
                self.state.flow_depth -= 1;
                (scalar_start, i) = (false, l.copy(i, i + 1));
            } else if (c == ',' && in_flow) || (matches!(c, '-' | '?' | ':') && ends_token) {
                (scalar_start, i) = (true, l.copy(i, i + 1));
            } else if matches!(c, '|' | '>') && scalar_start && !in_flow {
                self.state.block_indent = Some(indent);
                self.state.scalar_at = l.pos(i);
                l.copy(i, src.len());
                break;
            } else if matches!(c, '&' | '*' | '!') && scalar_start {
                let end = (i..src.len())
                    .find(|&j| src[j].is_whitespace())
                    .unwrap_or(src.len());
                i = l.copy(i, end);
            } else {
                let end = plain_end(src, i, in_flow).max(i + 1);
                if (i..end).any(|j| placeholder(&src[..end], j).is_some()) {
                    self.plain(l, i, end);
                } else {
                    l.copy(i, end);
                }
                (scalar_start, i) = (false, end);
            }
        }
    }

    /// Continues a quoted scalar from `i`; returns where it stopped (after the closing quote or
    /// at the end of the line).
    fn quoted(&mut self, l: &mut LineOut<'_>, i: usize, quote: char) -> usize {
        let src = l.src;
        let mut j = i;
        while j < src.len() {
            let c = src[j];
            if quote == '"' && c == '\\' {
                j = l.copy(j, (j + 2).min(src.len()));
            } else if quote == '\'' && c == '\'' && src.get(j + 1) == Some(&'\'') {
                j = l.copy(j, j + 2);
            } else if c == quote {
                self.state.quote = None;
                return l.copy(j, j + 1);
            } else if let Some(token) = placeholder(src, j) {
                let len = token.len();
                self.quoted_placeholder(l, j, token, quote);
                j += len;
            } else {
                j = l.copy(j, j + 1);
            }
        }
        j
    }

    fn quoted_placeholder(
        &mut self,
        l: &mut LineOut<'_>,
        j: usize,
        token: Placeholder,
        quote: char,
    ) {
        let (at, expanded) = (l.pos(j), l.out_pos());
        match token {
            Placeholder::Escaped => l.replace(j, 3, "${"),
            Placeholder::Malformed => {
                self.fail(at, expanded, MALFORMED.to_owned());
                l.copy(j, j + 2);
            }
            Placeholder::Variable { name, len } => {
                let text = match self.resolve(&name, at, expanded) {
                    Some(value) if quote == '"' => escape_double(&value),
                    Some(value) if value.chars().any(is_break_or_control) => {
                        let message = format!(
                            "the value of {name} has a line break or control character, which a \
                             single-quoted scalar cannot hold; use double quotes"
                        );
                        self.fail(at, expanded, message);
                        String::new()
                    }
                    Some(value) => value.replace('\'', "''"),
                    None => String::new(),
                };
                l.replace(j, len, &text);
            }
        }
    }

    /// Rewrites the plain scalar `src[i..end]`, which holds a placeholder, as a double-quoted one.
    fn plain(&mut self, l: &mut LineOut<'_>, i: usize, end: usize) {
        let src = &l.src[..end];
        self.state.scalar_at = l.pos(i);
        let expanded = l.out_pos();
        let mut text = String::from('"');
        let mut j = i;
        while j < end {
            let Some(token) = placeholder(src, j) else {
                text.push_str(&escape_double(&src[j].to_string()));
                j += 1;
                continue;
            };
            let at = l.pos(j);
            j += token.len();
            match token {
                Placeholder::Escaped => text.push_str("${"),
                Placeholder::Malformed => {
                    self.fail(at, expanded, MALFORMED.to_owned());
                    text.push_str("${");
                }
                Placeholder::Variable { name, .. } => {
                    if let Some(value) = self.resolve(&name, at, expanded) {
                        text.push_str(&escape_double(&value));
                    }
                }
            }
        }
        text.push('"');
        l.replace(i, end - i, &text);
    }

    /// A content line of a block scalar: values go in as they are, if they fit on the line.
    fn block_line(&mut self, l: &mut LineOut<'_>) {
        let src = l.src;
        let mut j = 0;
        while j < src.len() {
            let Some(token) = placeholder(src, j) else {
                j = l.copy(j, j + 1);
                continue;
            };
            let (at, expanded, len) = (l.pos(j), l.out_pos(), token.len());
            match token {
                Placeholder::Escaped => l.replace(j, len, "${"),
                Placeholder::Malformed => {
                    self.fail(at, expanded, MALFORMED.to_owned());
                    l.copy(j, j + len);
                }
                Placeholder::Variable { name, .. } => {
                    let text = match self.resolve(&name, at, expanded) {
                        Some(value) if value.chars().any(is_break_or_control) => {
                            let message = format!(
                                "the value of {name} has a line break or control character, \
                                 which a block scalar line cannot hold; use a double-quoted scalar"
                            );
                            self.fail(at, expanded, message);
                            String::new()
                        }
                        Some(value) => value,
                        None => String::new(),
                    };
                    l.replace(j, len, &text);
                }
            }
            j += len;
        }
    }

    /// The variable's value, recorded for redaction; an unset variable is reported.
    fn resolve(&mut self, name: &str, at: Pos, expanded: Pos) -> Option<String> {
        let Some(value) = (self.env)(name) else {
            self.fail(
                at,
                expanded,
                format!("environment variable {name} is not set"),
            );
            return None;
        };
        self.out.values.push(value.clone());
        for pos in [self.state.scalar_at, at] {
            self.out.substituted.push((pos, name.to_owned()));
        }
        Some(value)
    }

    fn fail(&mut self, at: Pos, expanded: Pos, message: String) {
        self.out.tainted.push(self.state.scalar_at);
        self.out.problems.push(EnvProblem {
            at,
            expanded,
            message,
        });
    }
}

/// Recognises `$${`, `${NAME}` or a malformed `${` at `src[i]`.
fn placeholder(src: &[char], i: usize) -> Option<Placeholder> {
    if src.get(i) != Some(&'$') {
        return None;
    }
    match (src.get(i + 1), src.get(i + 2)) {
        (Some('$'), Some('{')) => return Some(Placeholder::Escaped),
        (Some('{'), _) => {}
        _ => return None,
    }
    let Some(close) = src[i + 2..].iter().position(|c| *c == '}') else {
        return Some(Placeholder::Malformed);
    };
    let name: String = src[i + 2..i + 2 + close].iter().collect();
    let valid = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    Some(if valid {
        Placeholder::Variable {
            name,
            len: close + 3,
        }
    } else {
        Placeholder::Malformed
    })
}

/// End (exclusive, trailing spaces trimmed) of the plain scalar starting at `src[i]`.
fn plain_end(src: &[char], i: usize, in_flow: bool) -> usize {
    let mut j = i;
    while j < src.len() {
        let c = src[j];
        let next = src.get(j + 1).copied();
        let is_comment = c == '#' && j > i && src[j - 1].is_whitespace();
        let is_colon =
            c == ':' && next.is_none_or(|n| n.is_whitespace() || (in_flow && is_flow(n)));
        if is_comment || is_colon || (in_flow && is_flow(c)) {
            break;
        }
        if c == '$' && next == Some('{') {
            if let Some(close) = src[j..].iter().position(|c| *c == '}') {
                j += close + 1;
                continue;
            }
        }
        j += 1;
    }
    while j > i && src[j - 1].is_whitespace() {
        j -= 1;
    }
    j
}

fn is_flow(c: char) -> bool {
    matches!(c, ',' | '[' | ']' | '{' | '}')
}

fn is_break_or_control(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `value` as the inside of a YAML double-quoted scalar.
fn escape_double(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        let value = match name {
            "PW" => "a\"b\\c",
            "QUOTE" => "it's",
            "R" => "eu",
            "H" => "hostname-long",
            "P" => "5432",
            "LINES" => "l1\nl2",
            "EMPTY" => "",
            _ => return None,
        };
        Some(value.to_owned())
    }

    fn expanded(text: &str) -> Expansion {
        expand(text, &vars)
    }

    #[test]
    fn substitutes_by_context() {
        let cases = [
            ("password: ${PW}\n", "password: \"a\\\"b\\\\c\"\n"),
            ("a: \"x-${PW}-y\"\n", "a: \"x-a\\\"b\\\\c-y\"\n"),
            ("a: 'x${QUOTE}'\n", "a: 'xit''s'\n"),
            (
                "host: db-${R}.internal # c\n",
                "host: \"db-eu.internal\" # c\n",
            ),
            (
                "p: { host: ${H}, port: ${P} }\n",
                "p: { host: \"hostname-long\", port: \"5432\" }\n",
            ),
            ("- ${R}\n- [${R}, x]\n", "- \"eu\"\n- [\"eu\", x]\n"),
            ("a: ${LINES}\n", "a: \"l1\\nl2\"\n"),
            ("a: ${EMPTY}\n", "a: \"\"\n"),
            ("a: $${X}\nb: \"$${X}\"\n", "a: \"${X}\"\nb: \"${X}\"\n"),
            (
                "a: |\n  line ${R}\n  $${R}\nb: ${R}\n",
                "a: |\n  line eu\n  ${R}\nb: \"eu\"\n",
            ),
            ("a: \"multi\n  ${R} line\"\n", "a: \"multi\n  eu line\"\n"),
            ("&x ${R}: *x\n", "&x \"eu\": *x\n"),
            ("a: $5 and {b}\r\nc: d\r\n", "a: $5 and {b}\r\nc: d\r\n"),
        ];
        for (text, expected) in cases {
            let out = expanded(text);
            assert_eq!(out.text, expected, "{text:?}");
            assert!(out.problems.is_empty(), "{text:?}: {:?}", out.problems);
        }
    }

    #[test]
    fn comments_are_left_alone() {
        let text = "# ${UNSET}\nkey: v # ${UNSET}\n  # indented ${UNSET}\n";
        let out = expanded(text);
        assert_eq!(out.text, text);
        assert!(out.problems.is_empty());
    }

    #[test]
    fn columns_map_back() {
        let out = expanded("p: { host: ${H}, port: ${P} }\n");
        let pos = |line, column| Pos { line, column };
        let cases = [
            (pos(1, 1), pos(1, 1)),
            (pos(1, 12), pos(1, 12)),
            (pos(1, 20), pos(1, 12)),
            (pos(1, 27), pos(1, 16)),
            (pos(1, 29), pos(1, 18)),
            (pos(1, 35), pos(1, 24)),
            (pos(2, 1), pos(2, 1)),
        ];
        for (expanded_at, source) in cases {
            assert_eq!(
                out.columns.to_source(expanded_at),
                source,
                "{expanded_at:?}"
            );
        }
    }

    #[test]
    fn problems_name_the_variable_not_a_value() {
        let out = expanded("a: x\nb: pre-${UNSET}\nc: '${LINES}'\nd: ${1X}\ne: \"${X\"\n");
        let got: Vec<(usize, usize, &str)> = out
            .problems
            .iter()
            .map(|p| (p.at.line, p.at.column, p.message.as_str()))
            .collect();
        let single = "the value of LINES has a line break or control character, which a \
                      single-quoted scalar cannot hold; use double quotes";
        assert_eq!(
            got,
            [
                (2, 8, "environment variable UNSET is not set"),
                (3, 5, single),
                (4, 4, MALFORMED),
                (5, 5, MALFORMED),
            ]
        );
        assert_eq!(
            out.text,
            "a: x\nb: \"pre-\"\nc: ''\nd: \"${1X}\"\ne: \"${X\"\n"
        );
        assert!(out.is_tainted(Pos { line: 2, column: 4 }));
        assert!(out.is_tainted(Pos { line: 3, column: 4 }));
        assert!(!out.is_tainted(Pos { line: 1, column: 4 }));
    }

    #[test]
    fn remembers_substituted_scalars_and_redacts() {
        let out = expanded("a: ${H}\nb: \"x${P}\"\n");
        assert_eq!(out.variable_at(Pos { line: 1, column: 4 }), Some("H"));
        assert_eq!(out.variable_at(Pos { line: 2, column: 4 }), Some("P"));
        assert_eq!(out.variable_at(Pos { line: 2, column: 6 }), Some("P"));
        assert_eq!(out.variable_at(Pos { line: 1, column: 1 }), None);
        assert_eq!(
            out.redact("bad hostname-long and 5432"),
            "bad <redacted> and <redacted>"
        );
    }
}
