//! Functions, rewrites and catalog liveness through plain SQL.

use std::sync::{Arc, Mutex};

use datafusion::prelude::SessionContext;

use super::super::{defs, pg_catalog_schema, register_functions, CatalogSource, RelationInfo};
use super::{context, query, run, s, FakeSource};

#[tokio::test]
async fn session_and_catalog_functions() {
    let ctx = context();
    let row = query(
        &ctx,
        "SELECT current_database(), current_schema(), current_user, session_user, \
         pg_backend_pid(), (current_schemas(true))[1], pg_catalog.format_type(1043, 24), \
         pg_size_pretty(10240::bigint), quote_ident('Orders'), current_setting('server_version'), \
         has_table_privilege('orders', 'SELECT'), pg_table_is_visible(16385), \
         pg_get_constraintdef(16392), pg_encoding_to_char(6), pg_is_in_recovery()",
    )
    .await;
    assert_eq!(
        row,
        vec![vec![
            s("eddy"),
            s("public"),
            s("postgres"),
            s("postgres"),
            s("4242"),
            s("pg_catalog"),
            s("character varying(20)"),
            s("10 kB"),
            s("\"Orders\""),
            s("15.0"),
            s("true"),
            s("true"),
            s("PRIMARY KEY (id)"),
            s("UTF8"),
            s("false"),
        ]]
    );
    let version = query(&ctx, "SELECT version()").await;
    assert!(version[0][0]
        .as_deref()
        .is_some_and(|v| v.starts_with("PostgreSQL 15.0 ")));
}

#[tokio::test]
async fn reg_casts_resolve_and_print() {
    let ctx = context();
    let row = query(
        &ctx,
        "SELECT 'orders'::regclass::oid, 'pg_catalog.pg_class'::regclass::oid, \
         16385::regclass, 'integer'::regtype::oid, 1184::regtype, 'public'::regnamespace::oid, \
         'information_schema.tables'::regclass::text, to_regclass('nosuch')",
    )
    .await;
    assert_eq!(
        row,
        vec![vec![
            s("16385"),
            s("1259"),
            s("orders"),
            s("23"),
            s("timestamp with time zone"),
            s("2200"),
            s("information_schema.tables"),
            None,
        ]]
    );
    let attrs = query(
        &ctx,
        "SELECT attname FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0 \
         ORDER BY attnum LIMIT 2",
    )
    .await;
    assert_eq!(attrs, vec![vec![s("id")], vec![s("customer")]]);
}

#[tokio::test]
async fn output_columns_are_named_like_postgres() {
    let ctx = context();
    let names = |sql: &'static str| {
        let ctx = &ctx;
        async move {
            let batches = run(ctx, sql, &[]).await.expect("runs");
            let schema = batches[0].schema();
            schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names("SELECT 1, NULL, 'x'::text, oid::regclass, relname FROM pg_class LIMIT 1").await,
        ["?column?", "NULL", "text", "oid", "relname"]
    );
    assert_eq!(
        names("SELECT count(*), max(relname) FROM pg_class HAVING count(*) > 0 ORDER BY count(*)")
            .await,
        ["count", "max"]
    );
}

#[tokio::test]
async fn every_catalog_relation_can_be_read() {
    let ctx = context();
    for def in defs::PG_CATALOG {
        query(&ctx, &format!("SELECT * FROM pg_catalog.{}", def.name)).await;
        query(&ctx, &format!("SELECT * FROM {}", def.name)).await;
    }
    for def in defs::INFORMATION_SCHEMA {
        query(
            &ctx,
            &format!("SELECT * FROM information_schema.{}", def.name),
        )
        .await;
    }
    let described = query(
        &ctx,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'pg_class'::regclass",
    )
    .await;
    assert_eq!(
        described,
        vec![vec![s("33")]],
        "catalogs describe themselves"
    );
}

/// A catalog whose contents change between queries.
#[derive(Debug, Default)]
struct Growing(Mutex<Vec<RelationInfo>>);

impl CatalogSource for Growing {
    fn relations(&self) -> Vec<RelationInfo> {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[tokio::test]
async fn catalog_queries_see_current_relations() {
    let source = Arc::new(Growing::default());
    let ctx = SessionContext::new();
    let schema = pg_catalog_schema(Arc::clone(&source) as Arc<dyn CatalogSource>);
    ctx.catalog("datafusion")
        .expect("default catalog")
        .register_schema("pg_catalog", schema)
        .expect("register");
    register_functions(&ctx, Arc::clone(&source) as Arc<dyn CatalogSource>, "u", 1);
    let count = "SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = 2200";
    assert_eq!(query(&ctx, count).await, vec![vec![s("0")]]);
    let added = FakeSource.relations().into_iter().next().expect("orders");
    source.0.lock().expect("lock").push(added);
    assert_eq!(
        query(&ctx, count).await,
        vec![vec![s("2")]],
        "table and its index"
    );
}

#[tokio::test]
async fn user_relations_shadow_catalog_names() {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let rewritten = |sql: &str, user: &dyn Fn(&str) -> bool| {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0);
        super::super::rewrite_statement(&mut stmt, user);
        stmt.to_string()
    };
    let none = |_: &str| false;
    assert_eq!(
        rewritten("SELECT typname FROM pg_type", &none),
        "SELECT typname FROM pg_catalog.pg_type"
    );
    assert_eq!(
        rewritten("SELECT typname FROM pg_type", &|n: &str| n == "pg_type"),
        "SELECT typname FROM pg_type"
    );
    assert_eq!(
        rewritten(
            "WITH pg_type AS (SELECT 1 AS typname) SELECT typname FROM pg_type",
            &none
        ),
        "WITH pg_type AS (SELECT 1 AS typname) SELECT typname FROM pg_type"
    );
    assert_eq!(
        rewritten("SELECT * FROM t WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default", &none),
        "SELECT * FROM t WHERE c.relname ~ '^(t)$'"
    );
}

fn rewritten(sql: &str) -> String {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .expect("parses")
        .remove(0);
    super::super::rewrite_statement(&mut stmt, &|n: &str| n == "orders");
    stmt.to_string()
}

#[test]
fn postgres_only_syntax_is_rewritten() {
    assert_eq!(
        rewritten(
            "SELECT (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d \
             WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef) AS dflt FROM pg_attribute a"
        ),
        "SELECT CASE WHEN a.atthasdef THEN (SELECT max(pg_get_expr(d.adbin, d.adrelid, true)) \
         FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) END AS dflt \
         FROM pg_catalog.pg_attribute a"
    );
    assert_eq!(
        rewritten(
            "SELECT c.oid::pg_catalog.regclass FROM pg_class c WHERE c.oid = 'orders'::regclass"
        ),
        "SELECT regclassout(CAST(c.oid AS INT UNSIGNED)) AS \"oid\" FROM pg_catalog.pg_class c \
         WHERE c.oid = to_regclass('orders')"
    );
    assert_eq!(
        rewritten("SELECT ARRAY(SELECT rolname FROM pg_roles WHERE oid = ANY(p.polroles) ORDER BY 1) FROM pg_policy p"),
        "SELECT (SELECT array_agg(rolname ORDER BY rolname) FROM pg_catalog.pg_roles \
         WHERE oid = ANY(p.polroles)) AS \"array\" FROM pg_catalog.pg_policy p"
    );
    assert_eq!(
        rewritten("SELECT (information_schema._pg_expandarray(i.indkey)).n FROM pg_index i"),
        "SELECT get_field((unnest(_pg_expandarray_list(i.indkey))), 'n') AS \"n\" FROM pg_catalog.pg_index i"
    );
}

#[tokio::test]
async fn user_queries_keep_their_meaning() {
    let ctx = context();
    let grouped = run(
        &ctx,
        "SELECT customer, count(*) FROM orders WHERE note = '{}' GROUP BY customer ORDER BY count(*) DESC",
        &[],
    )
    .await
    .expect("runs");
    assert!(grouped.iter().all(|b| b.num_rows() == 0));
    let union = query(&ctx, "SELECT NULL AS x UNION ALL SELECT 'a' ORDER BY 1").await;
    assert_eq!(union, vec![vec![s("a")], vec![None]]);
    let numbered = run(
        &ctx,
        "SELECT row_number() OVER (ORDER BY id) AS n FROM orders",
        &[],
    )
    .await
    .expect("runs");
    let schema = numbered.first().map(|b| b.schema());
    if let Some(schema) = schema {
        assert_eq!(
            schema.field(0).data_type(),
            &datafusion::arrow::datatypes::DataType::Int64
        );
    }
}

#[tokio::test]
async fn unknown_types_print_as_the_source_names_them() {
    let source = Arc::new(Growing::default());
    let mut rel = FakeSource.relations().remove(1);
    rel.columns[0].type_oid = 99_999;
    rel.columns[0].type_name = "eddy_interval_set".to_string();
    source.0.lock().expect("lock").push(rel);
    let ctx = SessionContext::new();
    register_functions(&ctx, Arc::clone(&source) as Arc<dyn CatalogSource>, "u", 1);
    let printed = query(&ctx, "SELECT format_type(99999, -1), format_type(23, -1)").await;
    assert_eq!(printed, vec![vec![s("eddy_interval_set"), s("integer")]]);
}
