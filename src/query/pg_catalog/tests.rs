//! End-to-end tests: the catalog queries real clients send (see `captured`)
//! are parsed, rewritten, planned and executed by DataFusion set up the way
//! the server sets it up, against a fake catalog of five relations, and the
//! rows clients rely on are checked.

mod captured;
mod drivers;
mod info_schema;
mod psql;
mod sql;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::{CatalogProvider, MemTable, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{
    information_schema, pg_catalog_schema, register_functions, rewrite_statement, CatalogSource,
    ColumnInfo, RelationInfo, RelationKind, DATABASE_NAME,
};

#[derive(Debug)]
struct FakeSource;

fn column(
    name: &str,
    type_oid: u32,
    typmod: i32,
    not_null: bool,
    default: Option<&str>,
) -> ColumnInfo {
    ColumnInfo {
        name: name.to_string(),
        type_oid,
        type_name: super::types::format_type(type_oid, Some(typmod)),
        typmod,
        not_null,
        default_sql: default.map(str::to_string),
    }
}

fn relation(oid: u32, name: &str, kind: RelationKind, columns: Vec<ColumnInfo>) -> RelationInfo {
    RelationInfo {
        oid,
        schema: "public".to_string(),
        name: name.to_string(),
        kind,
        columns,
        primary_key: Vec::new(),
        pk_index_oid: 0,
        view_sql: None,
    }
}

/// The relations psql, pgjdbc and psycopg were captured against, same OIDs.
impl CatalogSource for FakeSource {
    fn relations(&self) -> Vec<RelationInfo> {
        let mut orders = relation(
            16385,
            "orders",
            RelationKind::Table,
            vec![
                column("id", 23, -1, true, None),
                column("customer", 1043, 24, true, None),
                column("amount", 1700, 655_366, false, None),
                column("created_at", 1184, -1, true, Some("now()")),
                column("note", 25, -1, false, Some("'none'::text")),
            ],
        );
        orders.primary_key = vec![0];
        orders.pk_index_oid = 16392;
        let events = relation(
            16394,
            "events",
            RelationKind::Table,
            vec![
                column("ev_id", 20, -1, false, None),
                column("kind", 25, -1, false, None),
                column("payload", 3802, -1, false, None),
                column("flag", 16, -1, false, None),
            ],
        );
        let mut big_orders = relation(
            16399,
            "big_orders",
            RelationKind::View,
            vec![
                column("id", 23, -1, false, None),
                column("amount", 1700, 655_366, false, None),
            ],
        );
        big_orders.view_sql = Some("SELECT id, amount FROM orders WHERE amount > 100".to_string());
        let mut mv_orders = relation(
            16403,
            "mv_orders",
            RelationKind::MaterializedView,
            vec![
                column("customer", 1043, 24, false, None),
                column("total", 1700, -1, false, None),
            ],
        );
        mv_orders.view_sql =
            Some("SELECT customer, sum(amount) AS total FROM orders GROUP BY customer".to_string());
        let ft = relation(
            16415,
            "ft",
            RelationKind::Source,
            vec![
                column("a", 23, -1, false, None),
                column("b", 25, -1, false, None),
            ],
        );
        vec![orders, events, big_orders, mv_orders, ft]
    }
}

fn user_table(names: &[(&str, DataType)]) -> Arc<MemTable> {
    let fields: Vec<Field> = names
        .iter()
        .map(|(n, t)| Field::new(*n, t.clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("user table"))
}

/// A session configured as the server configures it.
fn context() -> SessionContext {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE_NAME, "public")
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config(config);
    let source: Arc<dyn CatalogSource> = Arc::new(FakeSource);
    let public = Arc::new(MemorySchemaProvider::new());
    let tz = Some("UTC".into());
    let orders = user_table(&[
        ("id", DataType::Int32),
        ("customer", DataType::Utf8),
        ("amount", DataType::Decimal128(10, 2)),
        ("created_at", DataType::Timestamp(TimeUnit::Microsecond, tz)),
        ("note", DataType::Utf8),
    ]);
    use datafusion::catalog::SchemaProvider;
    public
        .register_table("orders".into(), orders)
        .expect("orders");
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema("public", public).expect("public");
    catalog
        .register_schema("pg_catalog", pg_catalog_schema(Arc::clone(&source)))
        .expect("pg_catalog");
    catalog
        .register_schema(
            "information_schema",
            information_schema(Arc::clone(&source)),
        )
        .expect("information_schema");
    ctx.register_catalog(DATABASE_NAME, Arc::new(catalog));
    register_functions(&ctx, source, "postgres", 4242);
    ctx
}

fn is_user_relation(name: &str) -> bool {
    FakeSource.relations().iter().any(|r| r.name == name)
}

/// Parse, rewrite, plan (binding `params` as text coerced to the inferred
/// parameter types) and run one statement, as the server does.
async fn run(ctx: &SessionContext, sql: &str, params: &[&str]) -> Result<Vec<RecordBatch>> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)?;
    let mut statement = statements.remove(0);
    rewrite_statement(&mut statement, &is_user_relation);
    let mut plan = ctx
        .state()
        .statement_to_plan(DfStatement::Statement(Box::new(statement)))
        .await?;
    if !params.is_empty() {
        let types = plan.get_parameter_types()?;
        let values = params
            .iter()
            .enumerate()
            .map(
                |(i, text)| match types.get(&format!("${}", i + 1)).cloned().flatten() {
                    Some(t) => ScalarValue::try_from_string((*text).to_string(), &t),
                    None => Ok(ScalarValue::Utf8(Some((*text).to_string()))),
                },
            )
            .collect::<Result<Vec<_>>>()?;
        plan = plan.with_param_values(values)?;
    }
    ctx.execute_logical_plan(plan).await?.collect().await
}

/// Rows as text, NULL as `None`.
fn rows(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    let options = FormatOptions::default();
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| c.is_valid(row).then(|| f.value(row).to_string()))
                    .collect(),
            );
        }
    }
    out
}

async fn query(ctx: &SessionContext, sql: &str) -> Vec<Vec<Option<String>>> {
    match run(ctx, sql, &[]).await {
        Ok(batches) => rows(&batches),
        Err(e) => panic!("query failed: {e}\n{sql}"),
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn psql(command: &str, nth: usize) -> &'static str {
    captured::PSQL
        .iter()
        .filter(|(c, _)| *c == command)
        .nth(nth)
        .map(|(_, q)| *q)
        .unwrap_or_else(|| panic!("no captured query {nth} for {command}"))
}

#[tokio::test]
async fn every_captured_query_runs() {
    let ctx = context();
    let all = captured::PSQL
        .iter()
        .map(|(cmd, q)| (*cmd, *q, &[][..]))
        .chain(captured::JDBC.iter().map(|(q, p)| ("jdbc", *q, *p)))
        .chain(captured::PSYCOPG.iter().map(|(q, p)| ("psycopg", *q, *p)))
        .chain(
            captured::TOKIO_POSTGRES
                .iter()
                .map(|(q, p)| ("tokio-postgres", *q, *p)),
        );
    let mut failures = Vec::new();
    for (client, sql, params) in all {
        if let Err(e) = run(&ctx, sql, params).await {
            failures.push(format!("{client}: {e}\n{sql}\n"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
