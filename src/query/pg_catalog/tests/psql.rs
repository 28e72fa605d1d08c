//! psql 15 meta-commands: the rows each captured query returns.

use super::{context, psql, query, s};

#[tokio::test]
async fn list_commands_show_user_relations() {
    let ctx = context();
    let names = |rows: Vec<Vec<Option<String>>>| -> Vec<(String, String)> {
        rows.into_iter()
            .map(|r| {
                (
                    r[1].clone().unwrap_or_default(),
                    r[2].clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    let dt = names(query(&ctx, psql("\\dt", 0)).await);
    assert_eq!(
        dt,
        [
            ("events".into(), "table".into()),
            ("orders".into(), "table".into())
        ]
    );
    let d = names(query(&ctx, psql("\\d", 0)).await);
    let expected = [
        ("big_orders", "view"),
        ("events", "table"),
        ("ft", "foreign table"),
        ("mv_orders", "materialized view"),
        ("orders", "table"),
    ];
    assert_eq!(d, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    assert_eq!(
        names(query(&ctx, psql("\\dv", 0)).await),
        [("big_orders".into(), "view".into())]
    );
    assert_eq!(
        names(query(&ctx, psql("\\dm", 0)).await),
        [("mv_orders".into(), "materialized view".into())]
    );
    assert_eq!(
        names(query(&ctx, psql("\\dE", 0)).await),
        [("ft".into(), "foreign table".into())]
    );
    assert!(query(&ctx, psql("\\ds", 0)).await.is_empty());
    assert!(query(&ctx, psql("\\df", 0)).await.is_empty());
    let di = query(&ctx, psql("\\di", 0)).await;
    assert_eq!(
        di,
        vec![vec![
            s("public"),
            s("orders_pkey"),
            s("index"),
            s("eddy"),
            s("orders")
        ]]
    );
    let dt_plus = query(&ctx, psql("\\dt+", 0)).await;
    assert_eq!(
        dt_plus[1][..6],
        [
            s("public"),
            s("orders"),
            s("table"),
            s("eddy"),
            s("permanent"),
            s("heap")
        ]
    );
}

#[tokio::test]
async fn databases_schemas_and_roles() {
    let ctx = context();
    let l = query(&ctx, psql("\\l", 0)).await;
    assert_eq!(l.len(), 1);
    assert_eq!(
        l[0][..5],
        [s("eddy"), s("eddy"), s("UTF8"), s("C.UTF-8"), s("C.UTF-8")]
    );
    assert_eq!(l[0][6], s("libc"));
    assert_eq!(
        query(&ctx, psql("\\dn", 0)).await,
        vec![vec![s("public"), s("eddy")]]
    );
    let du = query(&ctx, psql("\\du", 0)).await;
    assert_eq!(du.len(), 1);
    assert_eq!(du[0][..3], [s("eddy"), s("true"), s("true")]);
}

#[tokio::test]
async fn describe_table_shows_columns_defaults_and_primary_key() {
    let ctx = context();
    let lookup = query(&ctx, psql("\\d orders", 0)).await;
    assert_eq!(lookup, vec![vec![s("16385"), s("public"), s("orders")]]);
    let details = query(&ctx, psql("\\d orders", 1)).await;
    // relchecks, relkind, relhasindex, ... amname
    assert_eq!(details[0][..3], [s("0"), s("r"), s("true")]);
    assert_eq!(details[0][14], s("heap"));
    let columns = query(&ctx, psql("\\d orders", 2)).await;
    let described: Vec<_> = columns
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone()))
        .collect();
    assert_eq!(
        described,
        vec![
            (s("id"), s("integer"), None, s("true")),
            (s("customer"), s("character varying(20)"), None, s("true")),
            (s("amount"), s("numeric(10,2)"), None, s("false")),
            (
                s("created_at"),
                s("timestamp with time zone"),
                s("now()"),
                s("true")
            ),
            (s("note"), s("text"), s("'none'::text"), s("false")),
        ]
    );
    let indexes = query(&ctx, psql("\\d orders", 3)).await;
    assert_eq!(indexes.len(), 1);
    let index = &indexes[0];
    assert_eq!(index[..3], [s("orders_pkey"), s("true"), s("true")]);
    assert_eq!(
        index[5],
        s("CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (id)")
    );
    assert_eq!(index[6], s("PRIMARY KEY (id)"));
    assert_eq!(index[7], s("p"));
    // Policies, statistics, publications, inheritance: planned, and empty.
    for nth in 4..=8 {
        assert!(
            query(&ctx, psql("\\d orders", nth)).await.is_empty(),
            "query {nth}"
        );
    }
}

#[tokio::test]
async fn describe_view_index_source_and_missing() {
    let ctx = context();
    let viewdef = query(&ctx, psql("\\d+ big_orders", 2)).await;
    assert_eq!(
        viewdef,
        vec![vec![s("SELECT id, amount FROM orders WHERE amount > 100")]]
    );
    assert!(
        query(&ctx, psql("\\d+ big_orders", 3)).await.is_empty(),
        "no rules"
    );
    let index_lookup = query(&ctx, psql("\\d orders_pkey", 0)).await;
    assert_eq!(
        index_lookup,
        vec![vec![s("16392"), s("public"), s("orders_pkey")]]
    );
    let index_columns = query(&ctx, psql("\\d orders_pkey", 2)).await;
    assert_eq!(
        index_columns,
        vec![vec![s("id"), s("integer"), s("yes"), s("id")]]
    );
    let index_info = query(&ctx, psql("\\d orders_pkey", 3)).await;
    assert_eq!(index_info[0][..2], [s("true"), s("true")]);
    assert_eq!(index_info[0][8..10], [s("btree"), s("orders")]);
    let server = query(&ctx, psql("\\d ft", 6)).await;
    assert_eq!(
        server,
        vec![vec![s("eddy_source"), None]],
        "psql needs exactly one row"
    );
    assert!(query(&ctx, psql("\\d nosuch", 0)).await.is_empty());
}
