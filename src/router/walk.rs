//! One walk over a parsed statement: the tables it reads and writes, the functions it calls,
//! and whether anything inside it writes (writable CTEs, SELECT INTO, row locks).

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FromTable, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins, Visit, Visitor,
};

/// What one walk found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Every table in a FROM-like position, in order, repeats kept.
    factors: Vec<String>,
    /// Targets of writes that the AST also holds as FROM-like tables (UPDATE, DELETE, MERGE).
    factor_targets: Vec<String>,
    pub(crate) written: Vec<String>,
    pub(crate) functions: Vec<String>,
    /// Names of CTEs, which read as tables but are not.
    ctes: Vec<String>,
    /// A nested write, SELECT INTO or a row-locking clause.
    pub(crate) writes: bool,
}

impl Walk {
    /// Walks `statement` and everything nested in it.
    pub(crate) fn of(statement: &Statement) -> Walk {
        let mut walk = Walk::default();
        let _ = statement.visit(&mut walk);
        walk
    }

    /// Records a table written by the statement itself (not seen as a FROM-like table).
    pub(crate) fn write_target(&mut self, name: &ObjectName) {
        self.written.push(name_of(name));
    }

    /// Records a table read outside FROM-like positions (COPY t TO).
    pub(crate) fn read(&mut self, name: &ObjectName) {
        self.factors.push(name_of(name));
    }

    /// Records a function called outside expressions (CALL).
    pub(crate) fn call(&mut self, name: &ObjectName) {
        self.functions.push(function_name(name));
    }

    /// Tables read: FROM-like tables less one occurrence per write target and less CTEs.
    pub(crate) fn tables_read(&self) -> Vec<String> {
        let mut read = self.factors.clone();
        for target in &self.factor_targets {
            if let Some(at) = read.iter().position(|t| t == target) {
                read.remove(at);
            }
        }
        read.retain(|t| !self.ctes.contains(t));
        read
    }

    fn target_tables(&mut self, tables: &[TableWithJoins]) {
        for table in tables {
            self.target_factor(&table.relation);
        }
    }

    fn target_factor(&mut self, factor: &TableFactor) {
        if let TableFactor::Table { name, .. } = factor {
            let name = name_of(name);
            self.written.push(name.clone());
            self.factor_targets.push(name);
        }
    }
}

impl Visitor for Walk {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        match statement {
            Statement::Insert(insert) => {
                self.writes = true;
                if let TableObject::TableName(name) = &insert.table {
                    self.write_target(name);
                }
            }
            Statement::Update { table, .. } => {
                self.writes = true;
                self.target_tables(std::slice::from_ref(table));
            }
            Statement::Delete(delete) => {
                self.writes = true;
                let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) =
                    &delete.from;
                self.target_tables(tables);
            }
            Statement::Merge { table, .. } => {
                self.writes = true;
                self.target_factor(table);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if !query.locks.is_empty() {
            self.writes = true;
        }
        if let SetExpr::Select(select) = query.body.as_ref() {
            if let Some(into) = &select.into {
                self.writes = true;
                self.write_target(&into.name);
            }
        }
        if let Some(with) = &query.with {
            let names = with.cte_tables.iter().map(|cte| ident(&cte.alias.name));
            self.ctes.extend(names);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            // `FROM f(1)`: a set-returning function, not a table.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => {
                self.functions.push(function_name(name));
            }
            // sqlparser reads PostgreSQL's `FROM ONLY t` as table `only` aliased `t`;
            // `only` is reserved in PostgreSQL, so no table has that name unquoted.
            TableFactor::Table {
                name,
                alias: Some(alias),
                ..
            } if is_only(name) => self.factors.push(ident(&alias.name)),
            TableFactor::Table { name, .. } => self.factors.push(name_of(name)),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            self.functions.push(function_name(&function.name));
        }
        ControlFlow::Continue(())
    }
}

/// An identifier as PostgreSQL folds it: unquoted lower-case, quoted as written. A string
/// literal sqlparser took for a name (`FROM 'x'`, not PostgreSQL) is `?`: a classification
/// must not depend on literals, which the parse cache's key ignores.
fn ident(ident: &sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some('\'') => "?".to_owned(),
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

fn is_only(name: &ObjectName) -> bool {
    matches!(name.0.as_slice(), [ObjectNamePart::Identifier(id)]
        if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("only"))
}

/// `s.t` or `t`.
pub(crate) fn name_of(name: &ObjectName) -> String {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) => ident(id),
            other => other.to_string().to_lowercase(),
        })
        .collect();
    parts.join(".")
}

/// The unqualified, lower-case name of a function (`pg_catalog.nextval` → `nextval`).
fn function_name(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(id)) => id.value.to_lowercase(),
        Some(other) => other.to_string().to_lowercase(),
        None => String::new(),
    }
}
