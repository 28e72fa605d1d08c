//! Identifier rules shared by the statements EddyDB executes itself:
//! unquoted names fold to lower case, quoted names keep their case, and
//! only the `public` schema holds user relations.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{Ident, ObjectName, Statement};

use crate::catalog::{Catalog, TableDef};
use crate::error::{Error, Result};
use crate::query::PUBLIC_SCHEMA;
use crate::storage::Table;

pub fn normalize(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The relation name of `[eddy.][public.]name`.
pub fn relation_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(normalize).unwrap_or_else(|| p.to_string()))
        .collect();
    match parts.as_slice() {
        [table] => Ok(table.clone()),
        [schema, table] if schema == PUBLIC_SCHEMA => Ok(table.clone()),
        [db, schema, table] if db == crate::query::CATALOG_NAME && schema == PUBLIC_SCHEMA => {
            Ok(table.clone())
        }
        _ => Err(Error::UndefinedTable(name.to_string())),
    }
}

/// The table a statement writes to (or copies). A view is not one.
pub fn resolve_table(catalog: &Catalog, name: &ObjectName) -> Result<Arc<Table>> {
    let relation = relation_name(name)?;
    if let Some(view) = catalog.view(&relation) {
        return Err(Error::WrongObjectType(format!(
            "cannot change {} \"{relation}\"",
            view.def().kind_name()
        )));
    }
    catalog
        .table(&relation)
        .ok_or(Error::UndefinedTable(relation))
}

/// Column indexes for a column list; all columns when the list is empty.
pub fn column_indexes(def: &TableDef, columns: &[Ident]) -> Result<Vec<usize>> {
    if columns.is_empty() {
        return Ok((0..def.columns.len()).collect());
    }
    let mut indexes = Vec::with_capacity(columns.len());
    for ident in columns {
        let name = normalize(ident);
        let i = def.column_index(&name).ok_or_else(|| {
            Error::UndefinedColumn(format!(
                "column \"{name}\" of relation \"{}\" does not exist",
                def.name
            ))
        })?;
        if indexes.contains(&i) {
            return Err(Error::DuplicateColumn(format!(
                "column \"{name}\" specified more than once"
            )));
        }
        indexes.push(i);
    }
    Ok(indexes)
}

/// Quotes an identifier for SQL text EddyDB generates.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `SELECT cols FROM table` as a statement (COPY table TO STDOUT).
pub fn select_all(catalog: &Catalog, table: &ObjectName, columns: &[Ident]) -> Result<Statement> {
    let table = resolve_table(catalog, table)?;
    let indexes = column_indexes(table.def(), columns)?;
    let list: Vec<String> = indexes
        .iter()
        .map(|i| quote(&table.def().columns[*i].name))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}",
        list.join(", "),
        quote(&table.def().name)
    );
    let mut stmts = super::parse(&sql)?;
    stmts
        .pop()
        .ok_or_else(|| Error::Internal("generated query did not parse".into()))
}
