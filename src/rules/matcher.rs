//! The `match:` of a routing rule in the semantic pass: non-empty lists, table names, defined
//! users and databases, and the `sql` regex compiled now so a bad one fails the load.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::build::{at, Builder};
use super::config::RuleMatch;
use super::list::OneOrMany;
use super::problem::{child, item, Pos};
use super::routing::Defined;
use super::schema::{RawList, RawMatch};

impl Builder<'_> {
    pub(super) fn rule_match(
        &mut self,
        raw: &Spanned<RawMatch>,
        path: &str,
        defined: &Defined,
    ) -> RuleMatch {
        let raw = &raw.value;
        RuleMatch {
            kinds: self
                .list(&raw.kind, &child(path, "kind"))
                .map(|kinds| kinds.into_iter().map(|(_, _, kind)| *kind).collect()),
            tables: self.tables(&raw.tables, &child(path, "tables")),
            tables_read: self.tables(&raw.tables_read, &child(path, "tables_read")),
            tables_written: self.tables(&raw.tables_written, &child(path, "tables_written")),
            sql: raw
                .sql
                .as_ref()
                .and_then(|sql| self.sql(sql, &child(path, "sql"))),
            users: self.defined(&raw.user, &child(path, "user"), "user", defined.users),
            databases: self.defined(
                &raw.database,
                &child(path, "database"),
                "database",
                defined.databases,
            ),
            application_names: self.names(&raw.application_name, &child(path, "application_name")),
        }
    }

    /// The items of a condition with their positions and paths; an empty list is reported.
    fn list<'r, T>(
        &mut self,
        raw: &'r RawList<T>,
        path: &str,
    ) -> Option<Vec<(Pos, String, &'r T)>> {
        let raw = raw.as_ref()?;
        if raw.value.is_empty() {
            let message = "must not be empty (leave the condition out to match anything)";
            self.report(at(raw), path, message);
        }
        let items = raw.value.items(at(raw)).into_iter().enumerate();
        let path_of = |index| match &raw.value {
            OneOrMany::One(_) => path.to_owned(),
            OneOrMany::Many(_) => item(path, index),
        };
        Some(
            items
                .map(|(i, (pos, value))| (pos, path_of(i), value))
                .collect(),
        )
    }

    /// Names compared as written; each must be non-empty.
    fn names(&mut self, raw: &RawList<String>, path: &str) -> Option<Vec<String>> {
        let items = self.list(raw, path)?;
        let mut names = Vec::new();
        for (pos, path, name) in items {
            if name.is_empty() {
                self.report(pos, path, "must not be empty");
            }
            names.push(name.clone());
        }
        Some(names)
    }

    /// Names that must be keys of `known` (a rule naming an unknown user would never match).
    fn defined<V>(
        &mut self,
        raw: &RawList<String>,
        path: &str,
        what: &str,
        known: &BTreeMap<String, V>,
    ) -> Option<Vec<String>> {
        let items = self.list(raw, path)?;
        let mut names = Vec::new();
        for (pos, path, name) in items {
            if !known.contains_key(name) {
                self.report(pos, path, format!("{what} {name:?} is not defined"));
            }
            names.push(name.clone());
        }
        Some(names)
    }

    /// `table` or `schema.table`, stored lower-case.
    fn tables(&mut self, raw: &RawList<String>, path: &str) -> Option<Vec<String>> {
        let items = self.list(raw, path)?;
        let mut tables = Vec::new();
        for (pos, path, table) in items {
            let parts: Vec<&str> = table.split('.').collect();
            if parts.len() > 2 || parts.iter().any(|part| part.trim().is_empty()) {
                let message = format!("invalid table {table:?}: expected table or schema.table");
                self.report(pos, path, message);
            }
            tables.push(table.to_lowercase());
        }
        Some(tables)
    }

    /// Compiled now, so that a bad pattern fails the load rather than a query.
    fn sql(&mut self, raw: &Spanned<String>, path: &str) -> Option<regex::Regex> {
        regex::Regex::new(&raw.value)
            .map_err(|e| self.report(at(raw), path, regex_message(&e)))
            .ok()
    }
}

/// The regex crate's message on one line: its reason, without the caret drawing.
fn regex_message(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => {
            let reason = text
                .lines()
                .find_map(|line| line.strip_prefix("error: "))
                .unwrap_or(text.lines().last().unwrap_or_default());
            format!("invalid regex: {reason}")
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("regex too large: it compiles to more than {limit} bytes")
        }
        other => format!("invalid regex: {}", other.to_string().replace('\n', " ")),
    }
}
