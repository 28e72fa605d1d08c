//! pgjdbc, psycopg and tokio-postgres metadata queries: the rows the drivers
//! build `DatabaseMetaData` results and type information from.

use super::{captured, context, rows, run, s};

async fn jdbc(nth: usize) -> Vec<Vec<Option<String>>> {
    let ctx = context();
    let (sql, params) = captured::JDBC[nth];
    rows(&run(&ctx, sql, params).await.expect("jdbc query runs"))
}

fn column(rows: &[Vec<Option<String>>], i: usize) -> Vec<Option<String>> {
    rows.iter().map(|r| r[i].clone()).collect()
}

#[tokio::test]
async fn jdbc_get_tables() {
    // getTables(null, null, "%", {TABLE, VIEW, MATERIALIZED VIEW})
    let tables = jdbc(0).await;
    assert_eq!(
        column(&tables, 2),
        [s("mv_orders"), s("events"), s("orders"), s("big_orders")]
    );
    assert_eq!(
        column(&tables, 3),
        [s("MATERIALIZED VIEW"), s("TABLE"), s("TABLE"), s("VIEW")]
    );
    assert_eq!(tables[0][0], None, "TABLE_CAT is NULL");
    // getTables(null, "public", null, null) also lists the index and the source.
    let all = jdbc(1).await;
    assert!(all.contains(&vec![
        None,
        s("public"),
        s("orders_pkey"),
        s("INDEX"),
        None,
        s(""),
        s(""),
        s(""),
        s(""),
        s("")
    ]));
    assert!(column(&all, 3).contains(&s("FOREIGN TABLE")));
}

#[tokio::test]
async fn jdbc_get_columns() {
    let columns = jdbc(2).await;
    // nspname, relname, attname, atttypid, attnotnull, atttypmod, attlen, typtypmod, attnum, ..., adsrc
    let summary: Vec<_> = columns
        .iter()
        .map(|r| {
            (
                r[2].clone(),
                r[3].clone(),
                r[4].clone(),
                r[5].clone(),
                r[8].clone(),
                r[11].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (s("id"), s("23"), s("true"), s("-1"), s("1"), None),
            (s("customer"), s("1043"), s("true"), s("24"), s("2"), None),
            (
                s("amount"),
                s("1700"),
                s("false"),
                s("655366"),
                s("3"),
                None
            ),
            (
                s("created_at"),
                s("1184"),
                s("true"),
                s("-1"),
                s("4"),
                s("now()")
            ),
            (
                s("note"),
                s("25"),
                s("false"),
                s("-1"),
                s("5"),
                s("'none'::text")
            ),
        ]
    );
}

#[tokio::test]
async fn jdbc_get_primary_keys_schemas_and_indexes() {
    assert_eq!(
        jdbc(3).await,
        vec![vec![
            None,
            s("public"),
            s("orders"),
            s("id"),
            s("1"),
            s("orders_pkey")
        ]]
    );
    assert_eq!(
        column(&jdbc(4).await, 0),
        [s("information_schema"), s("pg_catalog"), s("public")]
    );
    let index = jdbc(5).await;
    assert_eq!(index.len(), 1);
    // NON_UNIQUE, INDEX_NAME, TYPE (3 = other), ORDINAL_POSITION, COLUMN_NAME, ASC_OR_DESC
    let row = &index[0];
    assert_eq!(
        [&row[3], &row[5], &row[6], &row[7], &row[8], &row[9]],
        [
            &s("false"),
            &s("orders_pkey"),
            &s("3"),
            &s("1"),
            &s("id"),
            &s("A")
        ]
    );
    assert_eq!(jdbc(6).await, vec![vec![s("32")]], "max_index_keys");
    assert!(jdbc(7).await.is_empty(), "no foreign keys");
}

#[tokio::test]
async fn jdbc_result_set_metadata_and_types() {
    // Column nullability for ResultSetMetaData, by (table oid, attnum).
    let fields = jdbc(8).await;
    assert_eq!(
        column(&fields, 2),
        [
            s("id"),
            s("customer"),
            s("amount"),
            s("created_at"),
            s("note")
        ]
    );
    assert_eq!(
        column(&fields, 5),
        [s("true"), s("true"), s("false"), s("true"), s("false")]
    );
    // Type lookups for an OID the driver does not know (jsonb).
    assert_eq!(
        jdbc(10).await,
        vec![vec![s("false"), s("b"), s("jsonb"), s("3802")]]
    );
    assert_eq!(
        jdbc(11).await,
        vec![vec![s("true"), s("pg_catalog"), s("jsonb")]]
    );
    assert_eq!(jdbc(12).await, vec![vec![s("public")]], "current_schema()");
    let type_names = jdbc(13).await;
    assert!(type_names.contains(&vec![s("_varchar"), s("1015")]));
    let all_types = jdbc(14).await;
    assert!(all_types.contains(&vec![s("true"), s("b"), s("_int4"), s("1007")]));
}

#[tokio::test]
async fn psycopg_type_info() {
    let ctx = context();
    let (sql, params) = captured::PSYCOPG[0];
    let jsonb = rows(&run(&ctx, sql, params).await.expect("runs"));
    assert_eq!(
        jsonb,
        vec![vec![s("jsonb"), s("3802"), s("3807"), s("jsonb"), s(",")]]
    );
    let (sql, params) = captured::PSYCOPG[1];
    let orders = rows(&run(&ctx, sql, params).await.expect("runs"));
    assert!(orders.is_empty(), "relations have no row type");
}

#[tokio::test]
async fn tokio_postgres_type_info() {
    let ctx = context();
    let run_nth = |n: usize| {
        let (sql, params) = captured::TOKIO_POSTGRES[n];
        run(&ctx, sql, params)
    };
    let jsonb = rows(&run_nth(0).await.expect("runs"));
    assert_eq!(
        jsonb,
        vec![vec![
            s("jsonb"),
            s("b"),
            s("0"),
            None,
            s("0"),
            s("pg_catalog"),
            s("0")
        ]]
    );
    let varchar_array = rows(&run_nth(1).await.expect("runs"));
    assert_eq!(varchar_array[0][..3], [s("_varchar"), s("b"), s("1043")]);
    assert!(
        rows(&run_nth(2).await.expect("runs")).is_empty(),
        "no enums"
    );
    assert_eq!(rows(&run_nth(3).await.expect("runs")).len(), 5);
}
