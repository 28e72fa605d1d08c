//! `information_schema` as BI tools and ORMs read it.

use super::{context, query, s};

#[tokio::test]
async fn columns_carry_postgres_type_facts() {
    let ctx = context();
    let columns = query(
        &ctx,
        "SELECT column_name, ordinal_position, column_default, is_nullable, data_type, \
         character_maximum_length, numeric_precision, numeric_scale, datetime_precision, udt_name \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'orders' ORDER BY ordinal_position",
    )
    .await;
    assert_eq!(
        columns,
        vec![
            vec![
                s("id"),
                s("1"),
                None,
                s("NO"),
                s("integer"),
                None,
                s("32"),
                s("0"),
                None,
                s("int4")
            ],
            vec![
                s("customer"),
                s("2"),
                None,
                s("NO"),
                s("character varying"),
                s("20"),
                None,
                None,
                None,
                s("varchar")
            ],
            vec![
                s("amount"),
                s("3"),
                None,
                s("YES"),
                s("numeric"),
                None,
                s("10"),
                s("2"),
                None,
                s("numeric")
            ],
            vec![
                s("created_at"),
                s("4"),
                s("now()"),
                s("NO"),
                s("timestamp with time zone"),
                None,
                None,
                None,
                s("6"),
                s("timestamptz")
            ],
            vec![
                s("note"),
                s("5"),
                s("'none'::text"),
                s("YES"),
                s("text"),
                None,
                None,
                None,
                None,
                s("text")
            ],
        ]
    );
}

#[tokio::test]
async fn tables_views_and_schemata() {
    let ctx = context();
    let tables = query(
        &ctx,
        "SELECT table_name, table_type FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY table_name",
    )
    .await;
    assert_eq!(
        tables,
        vec![
            vec![s("big_orders"), s("VIEW")],
            vec![s("events"), s("BASE TABLE")],
            vec![s("ft"), s("FOREIGN")],
            vec![s("mv_orders"), s("VIEW")],
            vec![s("orders"), s("BASE TABLE")],
        ]
    );
    let views = query(
        &ctx,
        "SELECT table_name, view_definition FROM information_schema.views \
         WHERE table_schema = 'public' ORDER BY 1",
    )
    .await;
    assert_eq!(
        views[0],
        vec![
            s("big_orders"),
            s("SELECT id, amount FROM orders WHERE amount > 100")
        ]
    );
    let schemata = query(
        &ctx,
        "SELECT schema_name FROM information_schema.schemata ORDER BY 1",
    )
    .await;
    assert_eq!(
        schemata,
        vec![
            vec![s("information_schema")],
            vec![s("pg_catalog")],
            vec![s("public")]
        ]
    );
}

#[tokio::test]
async fn primary_keys_through_constraints() {
    let ctx = context();
    let keys = query(
        &ctx,
        "SELECT tc.constraint_name, kcu.column_name, kcu.ordinal_position \
         FROM information_schema.table_constraints tc \
         JOIN information_schema.key_column_usage kcu \
           ON tc.constraint_name = kcu.constraint_name AND tc.table_schema = kcu.table_schema \
         WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_name = 'orders'",
    )
    .await;
    assert_eq!(keys, vec![vec![s("orders_pkey"), s("id"), s("1")]]);
    let checks = query(
        &ctx,
        "SELECT count(*) FROM information_schema.table_constraints \
         WHERE table_name = 'orders' AND constraint_type = 'CHECK'",
    )
    .await;
    assert_eq!(
        checks,
        vec![vec![s("3")]],
        "one NOT NULL check per NOT NULL column"
    );
}
