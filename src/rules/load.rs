//! Loading a rules file: read, `${VAR}` substitution, the typed parse (syntax, types and unknown
//! fields, positioned by serde-saphyr), then the semantic pass. Every problem comes back as
//! `file:line:column: yaml.path: message`, positioned in the file as written.

use std::cell::OnceCell;
use std::path::Path;

use serde_saphyr::{DefaultMessageFormatter, Error as YamlError, MessageFormatter};

use super::build::{build, Found};
use super::config::Config;
use super::env::{expand, EnvProblem, Expansion};
use super::outline::Outline;
use super::problem::{child, ConfigErrors, Pos, Problem};
use super::schema::RawConfig;

/// Loads the rules file at `path`, taking `${VAR}` values from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole_file(path, format!("cannot read the file: {e}")))?;
    load_str(&text, path, &|name| std::env::var(name).ok())
}

/// Loads rules from `text`; `file` names it in problems and anchors relative TLS paths;
/// `env` supplies `${VAR}` values.
pub fn load_str(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let expansion = expand(text, env);
    let mut report = Report {
        file,
        expansion: &expansion,
        outline: OnceCell::new(),
        problems: Vec::new(),
    };
    for problem in &expansion.problems {
        report.env_problem(problem);
    }
    match serde_saphyr::from_str::<RawConfig>(&expansion.text) {
        Ok(raw) => match build(raw, file.parent().unwrap_or(Path::new(""))) {
            Ok(config) if report.problems.is_empty() => return Ok(config),
            Ok(_) => {}
            Err(found) => found.into_iter().for_each(|f| report.semantic(f)),
        },
        Err(error) => report.parse_error(&error),
    }
    let mut problems = report.problems;
    problems.sort_by_key(|p| (p.line, p.column));
    Err(ConfigErrors { problems })
}

/// Turns positioned findings into `Problem`s against the source text.
struct Report<'a> {
    file: &'a Path,
    expansion: &'a Expansion,
    /// Built on first use: only failing loads need YAML paths by position.
    outline: OnceCell<Option<Outline>>,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn push(&mut self, at: Pos, path: String, message: String) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: at.line,
            column: at.column,
            path,
            message,
        });
    }

    fn outline(&self) -> Option<&Outline> {
        self.outline
            .get_or_init(|| Outline::parse(&self.expansion.text))
            .as_ref()
    }

    fn path_at(&self, expanded: Pos) -> String {
        self.outline()
            .map(|outline| outline.path_at(expanded))
            .unwrap_or_default()
    }

    fn env_problem(&mut self, problem: &EnvProblem) {
        let path = self.path_at(problem.expanded);
        self.push(problem.at, path, problem.message.clone());
    }

    fn semantic(&mut self, found: Found) {
        let at = self.expansion.columns.to_source(found.at);
        // An unset variable was already reported; what its empty value breaks is noise.
        if !self.expansion.is_tainted(at) {
            self.push(at, found.path, found.message);
        }
    }

    fn parse_error(&mut self, error: &YamlError) {
        let Some(expanded) = error.location().map(Pos::of).filter(|p| p.line > 0) else {
            let message = self.expansion.redact(&plain_message(error));
            self.push(Pos::default(), String::new(), message);
            return;
        };
        let at = self.expansion.columns.to_source(expanded);
        if self.expansion.is_tainted(at) {
            return;
        }
        // An alias points at its anchor: the value may have been substituted there.
        let defined = error.locations().map(|l| {
            self.expansion
                .columns
                .to_source(Pos::of(l.defined_location))
        });
        let variable = self
            .expansion
            .variable_at(at)
            .or_else(|| defined.and_then(|d| self.expansion.variable_at(d)));
        let inner = original(error);
        let message = match variable {
            Some(name) => substituted_message(inner, name),
            None => self.expansion.redact(&plain_message(inner)),
        };
        let missing_from = match inner {
            YamlError::SerdeMissingField { field, .. } => self
                .outline()
                .and_then(|outline| outline.container_at(expanded))
                .map(|(path, start)| (child(&path, field), start)),
            _ => None,
        };
        match missing_from {
            // Point at the mapping that lacks the field.
            Some((path, start)) => {
                let start = self.expansion.columns.to_source(start);
                self.push(start, path, message);
            }
            None => {
                let path = self.path_at(expanded);
                self.push(at, path, message);
            }
        }
    }
}

/// The error under snippet and alias wrappers.
fn original(mut error: &YamlError) -> &YamlError {
    while let YamlError::WithSnippet { error: inner, .. }
    | YamlError::AliasError { error: inner, .. } = error
    {
        error = inner;
    }
    error
}

/// serde-saphyr's message without location suffix or snippet, on one line.
fn plain_message(error: &YamlError) -> String {
    DefaultMessageFormatter
        .format_message(original(error))
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A message about a substituted value that never repeats the value.
fn substituted_message(error: &YamlError, variable: &str) -> String {
    let expected = match error {
        YamlError::SerdeInvalidType { expected, .. }
        | YamlError::SerdeInvalidValue { expected, .. } => Some(expected.clone()),
        YamlError::SerdeUnknownVariant { expected, .. } => {
            Some(format!("one of {}", expected.join(", ")))
        }
        YamlError::InvalidScalar { ty, .. } => Some((*ty).to_owned()),
        _ => None,
    };
    match expected {
        Some(expected) => {
            format!("the value of {variable} is not valid here: expected {expected}")
        }
        None => format!("the value of {variable} is not valid here"),
    }
}
