//! PostgreSQL catalog compatibility: the `pg_catalog` and `information_schema`
//! schemas, the Postgres functions that clients call, and the SQL rewrites
//! that let DataFusion plan the catalog queries of psql, pgjdbc and psycopg.
//!
//! Owns: the shape and rows of every catalog relation (built per query from a
//! [`CatalogSource`]), type OIDs and `format_type` names, and the rewriting of
//! Postgres-only syntax (`OPERATOR(pg_catalog.~)`, `::regclass`, `ARRAY(...)`,
//! correlated scalar subqueries, ...). Leaves to others: the user relations
//! themselves (the source), the wire protocol, `SHOW`/`SET`, and parameters.
//!
//! Layout:
//! - `types`: built-in Postgres types (OIDs, names, `format_type`).
//! - `table`: column specs and a row builder producing Arrow batches.
//! - `defs`: column lists of every catalog relation.
//! - `snapshot`: one consistent view of user + system relations per query.
//! - `rows` / `info_rows`: rows of `pg_catalog` / `information_schema`.
//! - `provider`: the DataFusion `SchemaProvider`s.
//! - `functions`: scalar functions (`format_type`, `pg_get_expr`, ...).
//! - `rewrite`: AST rewrites applied before planning.

mod defs;
mod functions;
mod info_rows;
mod provider;
mod rewrite;
mod rows;
mod snapshot;
mod table;
#[cfg(test)]
mod tests;
mod types;

use std::sync::Arc;

use datafusion::catalog::SchemaProvider;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;

/// What a relation is, as far as Postgres clients are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Table,
    View,
    MaterializedView,
    /// A streaming source; shown to clients as a foreign table (`relkind 'f'`),
    /// since its rows live in an external system.
    Source,
}

/// One column of a relation.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub type_oid: u32,
    /// As `format_type()` prints it, e.g. "character varying(20)".
    pub type_name: String,
    /// -1 if none.
    pub typmod: i32,
    pub not_null: bool,
    pub default_sql: Option<String>,
}

/// One relation (table, view, materialized view or source).
#[derive(Debug, Clone)]
pub struct RelationInfo {
    pub oid: u32,
    /// "public" for user relations.
    pub schema: String,
    pub name: String,
    pub kind: RelationKind,
    pub columns: Vec<ColumnInfo>,
    /// Column indexes of the primary key; empty if none.
    pub primary_key: Vec<usize>,
    pub pk_index_oid: u32,
    pub view_sql: Option<String>,
}

/// Live view of the catalog; called on every catalog query so results are current.
pub trait CatalogSource: Send + Sync + std::fmt::Debug {
    fn relations(&self) -> Vec<RelationInfo>;

    /// Name of the role that owns every object (role OID 10, a superuser).
    fn owner_name(&self) -> String {
        DEFAULT_OWNER.to_string()
    }
}

pub const DATABASE_NAME: &str = "eddy";
/// Owner role name used when the source does not name one.
pub const DEFAULT_OWNER: &str = "eddy";
/// The Postgres version we claim; psql picks its catalog queries by this, so
/// the wire layer should report the same `server_version`.
pub const SERVER_VERSION: &str = "15.0";
pub const SERVER_VERSION_NUM: i32 = 150000;

/// `SchemaProvider` for `pg_catalog` (tables built on demand from `source`).
pub fn pg_catalog_schema(source: Arc<dyn CatalogSource>) -> Arc<dyn SchemaProvider> {
    Arc::new(provider::CatalogSchema::pg_catalog(source))
}

/// `SchemaProvider` for `information_schema` (tables built on demand from `source`).
pub fn information_schema(source: Arc<dyn CatalogSource>) -> Arc<dyn SchemaProvider> {
    Arc::new(provider::CatalogSchema::information_schema(source))
}

/// Register the Postgres functions clients call, for one session.
pub fn register_functions(
    ctx: &SessionContext,
    source: Arc<dyn CatalogSource>,
    user: &str,
    backend_pid: i32,
) {
    functions::register(ctx, source, user, backend_pid);
}

/// Rewrite a parsed statement so DataFusion can plan client catalog queries.
pub fn rewrite_statement(stmt: &mut Statement, is_user_relation: &dyn Fn(&str) -> bool) {
    rewrite::rewrite_statement(stmt, is_user_relation);
}

/// The name PostgreSQL gives an unnamed output column (`count`, `int4`,
/// `?column?`), as its `FigureColname` does.
pub fn figure_column_name(expr: &datafusion::sql::sqlparser::ast::Expr) -> String {
    rewrite::figure_column_name(expr)
}

/// Names of the relations served in `pg_catalog`, for callers that resolve
/// unqualified names themselves.
pub fn pg_catalog_table_names() -> Vec<&'static str> {
    defs::PG_CATALOG.iter().map(|d| d.name).collect()
}
