//! Sources through the real protocol, with the built-in datagen connector
//! (no broker): views over a stream, connector-fed tables that resume after
//! `kill -9` without a gap or a duplicate, the JSON decode path, the status
//! relations, and the errors of the source statements.
//!
//! Waits are on conditions (a view reaching an expected count), polled with
//! a deadline; they never assume how long the server takes.

#[path = "support/query.rs"]
mod query;
#[path = "support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use anyhow::bail;
use query::{error_of as sqlstate, rows, value, wait_for};
use server::TestServer;

const ROWS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_a_datagen_source_see_every_row_once() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (id bigint, k int, ts timestamptz, \
                WATERMARK FOR ts AS ts - INTERVAL '1 second') \
             WITH (connector = 'datagen', fields.id.kind = 'sequence', \
                   fields.k.min = '1', fields.k.max = '7', datagen.seed = '42', \
                   datagen.rows = '{ROWS}', datagen.rows.per.second = '1000000', \
                   datagen.start.time = '2026-01-01 00:00:00+00');
             CREATE MATERIALIZED VIEW totals AS
                SELECT count(*) AS n, sum(id) AS s, count(DISTINCT id) AS d FROM ev;
             CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n FROM ev GROUP BY k;"
        ))
        .await?;
    let expected = format!("{ROWS}|{}|{ROWS}", ROWS * (ROWS + 1) / 2);
    wait_for(&client, "SELECT n, s, d FROM totals", &expected).await?;
    // The second view has a reader of its own and sees the whole stream too.
    wait_for(&client, "SELECT sum(n) FROM per_k", &ROWS.to_string()).await?;
    assert_eq!(value(&client, "SELECT count(*) FROM per_k").await?, "7");

    // The same generator through JSON messages and the decoder: same rows.
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev_json (id bigint, k int, ts timestamptz) \
             WITH (connector = 'datagen', fields.id.kind = 'sequence', \
                   fields.k.min = '1', fields.k.max = '7', datagen.seed = '42', \
                   datagen.rows = '{ROWS}', datagen.rows.per.second = '1000000', \
                   datagen.start.time = '2026-01-01 00:00:00+00') \
             FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_k_json AS
                SELECT k, count(*) AS n, max(ts) AS last FROM ev_json GROUP BY k;
             CREATE MATERIALIZED VIEW per_k_typed AS
                SELECT k, count(*) AS n, max(ts) AS last FROM ev GROUP BY k;"
        ))
        .await?;
    wait_for(&client, "SELECT sum(n) FROM per_k_json", &ROWS.to_string()).await?;
    wait_for(&client, "SELECT sum(n) FROM per_k_typed", &ROWS.to_string()).await?;
    assert_eq!(
        rows(&client, "SELECT * FROM per_k_json").await?,
        rows(&client, "SELECT * FROM per_k_typed").await?
    );

    // Status: the reader of `totals` read every row; the watermark is the
    // last event time less a second.
    let status = rows(
        &client,
        "SELECT \"offset\", rows, bad_records, status, watermark IS NOT NULL \
         FROM eddy_catalog.source_partitions WHERE source = 'ev' AND feeds = 'totals'",
    )
    .await?;
    assert_eq!(status, vec![format!("{ROWS}|{ROWS}|0|running|t")]);
    // Row i's event time is start + i / rate: the last is at 0.019999 s.
    assert_eq!(
        value(
            &client,
            "SELECT watermark FROM eddy_catalog.source_partitions \
             WHERE source = 'ev' AND feeds = 'totals'"
        )
        .await?,
        "2025-12-31 23:59:59.019999+00"
    );

    // Views over a stream are rebuilt after kill -9 from the stored start.
    let mut server = server;
    let before = rows(&client, "SELECT * FROM per_k").await?;
    drop(client);
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    wait_for(&client, "SELECT n, s, d FROM totals", &expected).await?;
    wait_for(&client, "SELECT sum(n) FROM per_k", &ROWS.to_string()).await?;
    assert_eq!(rows(&client, "SELECT * FROM per_k").await?, before);
    Ok(())
}

/// Two readers commit side by side (one publishes while the other's epoch
/// is computed): views created over their views meanwhile, and a join of
/// both, start from their inputs as of the epochs their dataflows saw, so
/// each ends with every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_views_of_two_readers_created_mid_stream_miss_nothing() -> anyhow::Result<()> {
    const MANY: u64 = 400_000;
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (id bigint, k int) \
             WITH (connector = 'datagen', fields.id.kind = 'sequence', \
                   fields.k.min = '1', fields.k.max = '50', datagen.seed = '7', \
                   datagen.rows = '{MANY}', datagen.rows.per.second = '100000');
             CREATE MATERIALIZED VIEW counts AS SELECT k, count(*) AS n FROM ev GROUP BY k;
             CREATE MATERIALIZED VIEW sums AS SELECT k, sum(id) AS s FROM ev GROUP BY k;"
        ))
        .await?;
    // Created while both readers stream (the rows take four seconds to come
    // due): each is filled from `counts` or both views as of one epoch.
    let mut made = Vec::new();
    for i in 0..4 {
        client
            .batch_execute(&format!(
                "CREATE MATERIALIZED VIEW total_{i} AS SELECT sum(n) AS n FROM counts;
                 CREATE MATERIALIZED VIEW joined_{i} AS
                    SELECT sum(c.n) AS n, sum(s.s) AS s FROM counts c JOIN sums s ON c.k = s.k;"
            ))
            .await?;
        made.push(value(&client, "SELECT coalesce(sum(n), 0) FROM counts").await?);
    }
    let total = MANY * (MANY + 1) / 2;
    wait_for(&client, "SELECT sum(n) FROM counts", &MANY.to_string()).await?;
    wait_for(&client, "SELECT sum(s) FROM sums", &total.to_string()).await?;
    for i in 0..4 {
        wait_for(
            &client,
            &format!("SELECT n FROM total_{i}"),
            &MANY.to_string(),
        )
        .await?;
        wait_for(
            &client,
            &format!("SELECT n, s FROM joined_{i}"),
            &format!("{MANY}|{total}"),
        )
        .await?;
    }
    // Not a test of the above unless some were made mid-stream: the first
    // is made milliseconds after `counts`, four seconds before the last row.
    let mid = made.iter().filter(|n| n.parse() != Ok(MANY)).count();
    assert!(
        mid > 0,
        "every view was made after the stream ended: {made:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_table_resumes_after_kill_9_without_gap_or_duplicate() -> anyhow::Result<()> {
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    // 6,000 rows at 3,000 a second: the kill lands mid-stream.
    client
        .batch_execute(
            "CREATE TABLE clicks (id bigint, page varchar) \
             WITH (connector = 'datagen', fields.id.kind = 'sequence', \
                   fields.page.kind = 'choice', fields.page.values = 'a,b,c', \
                   datagen.rows = '6000', datagen.rows.per.second = '3000');
             CREATE MATERIALIZED VIEW seen AS
                SELECT count(*) AS n, count(DISTINCT id) AS d, max(id) AS m FROM clicks;",
        )
        .await?;
    // Kill once some rows, not all, are in.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: u64 = value(&client, "SELECT n FROM seen").await?.parse()?;
        if n > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("no rows arrived");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(client);
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    wait_for(&client, "SELECT n, d, m FROM seen", "6000|6000|6000").await?;
    assert_eq!(value(&client, "SELECT count(*) FROM clicks").await?, "6000");
    assert_eq!(
        value(
            &client,
            "SELECT count(*) FROM clicks WHERE page NOT IN ('a', 'b', 'c')"
        )
        .await?,
        "0"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_statements_refuse_bad_input_clearly() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE SOURCE s WITH (connector = 'datagen', generator = 'logins');
             CREATE MATERIALIZED VIEW per_city AS SELECT city, count(*) AS n FROM s GROUP BY city;",
        )
        .await?;
    // A stream keeps no rows.
    let (code, message, hint) = sqlstate(&client, "SELECT * FROM s").await?;
    assert_eq!(code, "42809");
    assert!(message.contains("stream"), "{message}");
    assert!(hint.is_some_and(|h| h.contains("MATERIALIZED VIEW")));
    // Names are unique across relations.
    let dup = "CREATE SOURCE per_city (a int) WITH (connector = 'datagen')";
    assert_eq!(sqlstate(&client, dup).await?.0, "42P07");
    client
        .batch_execute("CREATE SOURCE IF NOT EXISTS s (a int) WITH (connector = 'datagen')")
        .await?;
    // Options are checked.
    for (sql, code) in [
        ("CREATE SOURCE x (a int) WITH (connector = 'nope')", "22023"),
        (
            "CREATE SOURCE x (a int) WITH (connector = 'datagen', fields.a.kind = 'nope')",
            "22023",
        ),
        (
            "CREATE SOURCE x (a int) WITH (connector = 'datagen', bad.record.action = 'maybe')",
            "22023",
        ),
        (
            "CREATE SOURCE x (a int, WATERMARK FOR a AS a) WITH (connector = 'datagen')",
            "42804",
        ),
        (
            "CREATE SOURCE x (t timestamptz, WATERMARK FOR t AS t - nope) \
             WITH (connector = 'datagen')",
            "42P16",
        ),
        (
            "CREATE SOURCE x (a int WITH (connector = 'datagen')",
            "42601",
        ),
    ] {
        assert_eq!(sqlstate(&client, sql).await?.0, code, "{sql}");
    }
    // DROP: dependants, wrong kinds, missing.
    assert_eq!(sqlstate(&client, "DROP SOURCE s").await?.0, "2BP01");
    assert_eq!(sqlstate(&client, "DROP SOURCE per_city").await?.0, "42809");
    assert_eq!(sqlstate(&client, "DROP SOURCE nothing").await?.0, "42P01");
    client
        .batch_execute("DROP SOURCE IF EXISTS nothing")
        .await?;
    assert_eq!(
        rows(&client, "SHOW SOURCES").await?,
        vec!["s|source|datagen|NULL"]
    );
    client.batch_execute("DROP SOURCE s CASCADE").await?;
    assert!(rows(&client, "SHOW SOURCES").await?.is_empty());
    assert_eq!(
        sqlstate(&client, "SELECT * FROM per_city").await?.0,
        "42P01"
    );
    // The server is still up and serving.
    assert_eq!(value(&client, "SELECT 1").await?, "1");
    // Prepared (extended protocol) source statements work too.
    client
        .execute(
            "CREATE SOURCE p (a int) WITH (connector = 'datagen', datagen.rows = '10')",
            &[],
        )
        .await?;
    let shown = client.query("SHOW SOURCES", &[]).await?;
    assert_eq!(shown.len(), 1);
    Ok(())
}
