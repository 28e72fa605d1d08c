//! Materialized views through the real protocol: views survive `kill -9`
//! with identical contents; a query never sees two views (or a view and its
//! table) at different epochs, even while another connection writes; a
//! write (a COPY too) is visible in every view to every connection once
//! acknowledged; key lookups on a view go to its index; and a failing view
//! leaves the server and the other views running.

#[path = "support/query.rs"]
mod query;
#[path = "support/server.rs"]
mod server;

use anyhow::bail;
use query::{copy_rows, rows, value};
use server::TestServer;
use tokio_postgres::Client;

const VIEWS: &[(&str, &str)] = &[
    (
        "per_key",
        "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi FROM t GROUP BY k",
    ),
    (
        "joined",
        "SELECT t.id, t.v, d.label FROM t LEFT JOIN dim d ON t.k = d.k",
    ),
    (
        "top_per_key",
        "SELECT id, k, v, rn FROM (SELECT id, k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, id) AS rn FROM t) WHERE rn <= 2",
    ),
    ("over_view", "SELECT count(*) AS keys, sum(n) AS rows FROM per_key"),
];

async fn create_schema(client: &Client) -> anyhow::Result<()> {
    client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, k int, v int);
             CREATE TABLE dim (k int PRIMARY KEY, label text);
             INSERT INTO dim VALUES (0, 'zero'), (1, 'one'), (2, 'two');",
        )
        .await?;
    for (name, query) in VIEWS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_survive_kill9_with_identical_contents() -> anyhow::Result<()> {
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    create_schema(&client).await?;
    let values: Vec<String> = (0..2000)
        .map(|i| format!("({i}, {}, {})", i % 7, (i * 37) % 101))
        .collect();
    client
        .batch_execute(&format!("INSERT INTO t VALUES {}", values.join(",")))
        .await?;
    client
        .batch_execute(
            "UPDATE t SET v = v + 1000 WHERE id % 5 = 0;
             DELETE FROM t WHERE id % 11 = 0;
             UPDATE dim SET label = 'uno' WHERE k = 1;",
        )
        .await?;
    let mut before = Vec::new();
    for (name, _) in VIEWS {
        before.push(rows(&client, &format!("SELECT * FROM {name}")).await?);
    }
    server.kill9()?;
    drop(client);
    server.restart()?;
    let client = server.connect().await?;
    for ((name, query), expected) in VIEWS.iter().zip(&before) {
        let after = rows(&client, &format!("SELECT * FROM {name}")).await?;
        assert_eq!(&after, expected, "view {name} changed across the restart");
        // And it is still the query's answer.
        assert_eq!(&rows(&client, query).await?, expected, "view {name}");
    }
    // Still maintained after the restart.
    client
        .batch_execute("INSERT INTO t VALUES (5000, 3, 1)")
        .await?;
    let n = rows(&client, "SELECT n FROM per_key WHERE k = 3").await?;
    let direct = rows(&client, "SELECT count(*) FROM t WHERE k = 3").await?;
    assert_eq!(n, direct);
    Ok(())
}

/// One connection writes; another keeps checking invariants that hold at
/// every epoch but not between a table's change and its views' changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_see_one_epoch_across_views_and_tables() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let writer = server.connect().await?;
    create_schema(&writer).await?;
    let reader = server.connect().await?;
    let checks = [
        // Two views over the same table agree.
        "SELECT (SELECT coalesce(sum(n), 0) FROM per_key) = (SELECT count(*) FROM joined)",
        // A view over a view agrees with its input.
        "SELECT (SELECT rows FROM over_view) IS NOT DISTINCT FROM (SELECT sum(n) FROM per_key)",
        // A view agrees with its table.
        "SELECT (SELECT count(*) FROM t) = (SELECT count(*) FROM joined)",
    ];
    let write = tokio::spawn(async move {
        for i in 0..300i64 {
            let sql = match i % 3 {
                0 => format!(
                    "INSERT INTO t VALUES ({i}, {}, {i}), ({}, 1, 1)",
                    i % 4,
                    i + 100_000
                ),
                1 => format!("UPDATE t SET k = k + 1 WHERE id = {}", i - 1),
                _ => format!("DELETE FROM t WHERE id = {}", i + 99_998),
            };
            writer.batch_execute(&sql).await?;
        }
        anyhow::Ok(writer)
    });
    let mut rounds = 0;
    while !write.is_finished() || rounds == 0 {
        for check in checks {
            let answer = rows(&reader, check).await?;
            if answer != ["t"] {
                bail!("{check} gave {answer:?} after {rounds} rounds");
            }
        }
        rounds += 1;
    }
    let writer = write.await??;
    // Read-your-writes, from another connection too.
    writer
        .batch_execute("INSERT INTO t VALUES (-1, 42, 7)")
        .await?;
    assert_eq!(
        rows(&reader, "SELECT n, s FROM per_key WHERE k = 42").await?,
        ["1|7"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_key_lookup_on_a_view() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    create_schema(&client).await?;
    client
        .batch_execute("INSERT INTO t VALUES (1, 1, 10), (2, 1, 20), (3, 2, 5)")
        .await?;
    // Reads of the view so far (the backfill of `over_view` scanned it).
    let reads = "SELECT scans, key_lookups FROM eddy_catalog.views WHERE name = 'per_key'";
    let scans: i64 = client.query_one(reads, &[]).await?.get(0);
    let lookup = client
        .prepare("SELECT n, s FROM per_key WHERE k = $1")
        .await?;
    let row = client.query_one(&lookup, &[&1i32]).await?;
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2, 30));
    client.execute("DELETE FROM t WHERE id = 2", &[]).await?;
    let row = client.query_one(&lookup, &[&1i32]).await?;
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 10));
    assert!(client.query(&lookup, &[&9i32]).await?.is_empty());
    // Those three reads went to the view's index, none read it whole; so
    // does an ad-hoc query fixing the key, unlike one that does not.
    let counts = |scans: i64, lookups: i64| vec![format!("{scans}|{lookups}")];
    assert_eq!(rows(&client, reads).await?, counts(scans, 3));
    assert_eq!(
        rows(&client, "SELECT s FROM per_key WHERE k = 2").await?,
        ["5"]
    );
    assert_eq!(rows(&client, reads).await?, counts(scans, 4));
    assert_eq!(
        rows(&client, "SELECT k, s FROM per_key WHERE n = 1").await?,
        ["1|10", "2|5"]
    );
    assert_eq!(rows(&client, reads).await?, counts(scans + 1, 4));
    Ok(())
}

/// From its second read of every row on, a view keeps its rows decoded and
/// adds what each change inserts. A change taking rows back lets them go;
/// the next image is keyed (a key's row replaced in place) when every key
/// holds one row, and none is kept otherwise. Reads stay exact throughout,
/// rows inserted more than once included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_every_row_stay_exact_with_the_rows_kept_decoded() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, k int, v int);
             CREATE MATERIALIZED VIEW log AS SELECT id, v FROM t WHERE v >= 0;
             CREATE MATERIALIZED VIEW ks AS SELECT k FROM t;
             CREATE MATERIALIZED VIEW per_k AS
                SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k;
             INSERT INTO t VALUES (1, 1, 10), (2, 1, 20), (3, 2, -5);",
        )
        .await?;
    let bytes = "SELECT output_bytes FROM eddy_catalog.views WHERE name = 'log'";
    let output_bytes = |sql: &'static str| {
        let client = &client;
        async move {
            value(client, sql)
                .await?
                .parse::<i64>()
                .map_err(anyhow::Error::from)
        }
    };
    // Each view read whole, checked against the table.
    let check = || async {
        assert_eq!(
            rows(&client, "SELECT count(*), sum(v) FROM log").await?,
            rows(&client, "SELECT count(*), sum(v) FROM t WHERE v >= 0").await?
        );
        assert_eq!(
            rows(&client, "SELECT k, count(*) FROM ks GROUP BY k ORDER BY k").await?,
            rows(&client, "SELECT k, count(*) FROM t GROUP BY k ORDER BY k").await?
        );
        assert_eq!(
            rows(&client, "SELECT * FROM per_k ORDER BY k").await?,
            rows(
                &client,
                "SELECT k, count(*), sum(v) FROM t GROUP BY k ORDER BY k"
            )
            .await?
        );
        anyhow::Ok(())
    };
    let encoded = output_bytes(bytes).await?;
    check().await?;
    assert_eq!(output_bytes(bytes).await?, encoded);
    // The second read keeps the rows it decoded.
    check().await?;
    let kept = output_bytes(bytes).await?;
    assert!(kept > encoded, "{kept} > {encoded}");
    // Insertions add to them: one by one, several of one `k` at once,
    // and a COPY large enough to be compacted.
    client
        .batch_execute(
            "INSERT INTO t VALUES (4, 1, 40); INSERT INTO t VALUES (5, 2, 50), (6, 2, 60)",
        )
        .await?;
    check().await?;
    let data: String = (100..30_100)
        .map(|i| format!("{i}\t{}\t{}\n", i % 7, i % 1000))
        .collect();
    copy_rows(&client, "COPY t FROM STDIN", data.into_bytes()).await?;
    check().await?;
    let grown = output_bytes(bytes).await?;
    assert!(grown > kept);
    // A change taking rows back: the kept rows go, reads are exact.
    client
        .execute("UPDATE t SET v = v + 1 WHERE id = 1", &[])
        .await?;
    let after_update = output_bytes(bytes).await?;
    assert!(after_update < grown, "{after_update} < {grown}");
    check().await?;
    check().await?;
    // Keyed now: kept again, and further changes replace rows in it.
    assert!(output_bytes(bytes).await? > after_update);
    for i in 0..20 {
        client
            .execute(
                "UPDATE t SET v = v + 1 WHERE id % 20 = $1",
                &[&i64::from(i)],
            )
            .await?;
        check().await?;
    }
    client.execute("DELETE FROM t WHERE k = 2", &[]).await?;
    check().await?;
    client
        .execute("INSERT INTO t VALUES (7, 2, 70)", &[])
        .await?;
    check().await?;
    assert_eq!(
        rows(&client, "SELECT id, v FROM log WHERE id < 100 ORDER BY id").await?,
        ["1|12", "2|21", "4|41", "7|70"]
    );
    Ok(())
}

/// COPY is a write like INSERT: once it returns, every view shows its
/// rows; a COPY that fails (a duplicate key) changes no view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_shows_in_every_view_once_it_returns() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    create_schema(&client).await?;
    let copied = copy_rows(
        &client,
        "COPY t FROM STDIN",
        b"1\t1\t10\n2\t1\t20\n3\t2\t5\n4\t7\t1\n".to_vec(),
    )
    .await?;
    assert_eq!(copied, 4);
    let per_key = "SELECT k, n, s FROM per_key";
    assert_eq!(rows(&client, per_key).await?, ["1|2|30", "2|1|5", "7|1|1"]);
    assert_eq!(
        rows(&client, "SELECT id, label FROM joined").await?,
        ["1|one", "2|one", "3|two", "4|NULL"]
    );
    assert_eq!(
        rows(&client, "SELECT keys, rows FROM over_view").await?,
        ["3|4"]
    );
    let err = copy_rows(&client, "COPY t FROM STDIN", b"5\t1\t1\n1\t2\t2\n".to_vec())
        .await
        .expect_err("id 1 is taken");
    assert_eq!(
        err.downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .map(|c| c.code()),
        Some("23505")
    );
    assert_eq!(rows(&client, per_key).await?, ["1|2|30", "2|1|5", "7|1|1"]);
    assert_eq!(
        rows(&client, "SELECT keys, rows FROM over_view").await?,
        ["3|4"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_and_bad_views_do_not_stop_the_server() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    create_schema(&client).await?;
    client
        .batch_execute("CREATE MATERIALIZED VIEW ratio AS SELECT id, 100 / v AS r FROM t")
        .await?;
    // A division by zero makes that row's value NULL; the write commits and
    // every view keeps up.
    client
        .batch_execute("INSERT INTO t VALUES (1, 0, 0), (2, 0, 4)")
        .await?;
    assert_eq!(
        rows(&client, "SELECT * FROM ratio").await?,
        ["1|NULL", "2|25"]
    );
    assert_eq!(rows(&client, "SELECT n FROM per_key").await?, ["2"]);
    let err = client
        .batch_execute("CREATE MATERIALIZED VIEW nope AS SELECT id FROM t ORDER BY id")
        .await
        .expect_err("ORDER BY without LIMIT is refused");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"));
    let err = client
        .batch_execute("DROP TABLE t")
        .await
        .expect_err("views depend on t");
    assert_eq!(err.code().map(|c| c.code()), Some("2BP01"));
    // One line per dependant, naming what it reads as PostgreSQL does.
    let detail = err.as_db_error().and_then(|e| e.detail()).unwrap_or("");
    for line in [
        "materialized view per_key depends on table t",
        "materialized view over_view depends on materialized view per_key",
        "materialized view ratio depends on table t",
    ] {
        assert!(detail.lines().any(|l| l == line), "{line:?} in {detail:?}");
    }
    client.batch_execute("DROP TABLE t CASCADE").await?;
    assert_eq!(
        rows(&client, "SHOW MATERIALIZED VIEWS").await?,
        Vec::<String>::new()
    );
    Ok(())
}
