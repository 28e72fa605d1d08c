//! Checkpoints through the real server process: views over streams survive
//! `kill -9` at arbitrary moments, a damaged checkpoint is passed over for
//! the one before it, and a crash while a checkpoint is written leaves the
//! previous one in use. In every case each view must end up exactly equal
//! to the same query maintained from scratch by a view created afterwards
//! (the datagen stream is a pure function of its options, so a new view
//! reads the very same events).
//!
//! The same crash test against a Kafka broker is in `kafka_sources.rs`.

#[path = "support/query.rs"]
mod query;
#[path = "support/server.rs"]
mod server;

use std::time::Duration;

use anyhow::{ensure, Context};
use query::{rows, value, wait_for, wait_until};
use server::{ServerOptions, TestServer};
use tokio_postgres::Client;

/// The views under test, by name: aggregates of every accumulator kind, a
/// global aggregate, top-N, a join of two sources, a view over a view, and
/// tumbling and hopping windows over a source with late events (whose
/// watermarks must survive a crash for the same events to be found late),
/// one emitting on window close, and an OVER window whose rows the
/// watermark lets go.
const VIEWS: [(&str, &str); 10] = [
    ("totals", "SELECT count(*) AS n, sum(id) AS s FROM ev"),
    (
        "per_k",
        "SELECT k, count(*) AS n, sum(v) AS sv, min(v) AS lo, max(v) AS hi, \
         count(DISTINCT v) AS dv, avg(v) AS av, string_agg(DISTINCT tag, ',') AS tags \
         FROM ev GROUP BY k",
    ),
    (
        "top3",
        "SELECT k, v, id FROM (SELECT k, v, id, row_number() OVER \
         (PARTITION BY k ORDER BY v DESC, id) AS rn FROM ev) t WHERE rn <= 3",
    ),
    (
        "labelled",
        "SELECT d.label, count(*) AS n, max(e.id) AS last \
         FROM ev e JOIN dim d ON e.k = d.k GROUP BY d.label",
    ),
    (
        "busiest",
        "SELECT max(n) AS most, sum(n) AS total FROM {per_k}",
    ),
    (
        "per_second",
        "SELECT page, window_start, window_end, count(*) AS c \
         FROM TUMBLE(clicks, ts, INTERVAL '1 second') GROUP BY page, window_start, window_end",
    ),
    (
        "closed",
        "SELECT page, window_start, count(*) AS c FROM TUMBLE(clicks, ts, INTERVAL '1 second') \
         GROUP BY page, window_start EMIT ON WINDOW CLOSE",
    ),
    (
        "hopping",
        "SELECT window_start, count(*) AS c, count(DISTINCT user_id) AS users \
         FROM HOP(clicks, ts, INTERVAL '1 second', INTERVAL '3 seconds') GROUP BY window_start",
    ),
    (
        "sessions",
        "SELECT user_id, window_start, window_end, count(*) AS c \
         FROM SESSION(clicks, ts, INTERVAL '500 milliseconds', user_id) \
         GROUP BY user_id, window_start, window_end EMIT ON WINDOW CLOSE",
    ),
    (
        // Rows leave an OVER window's state as the watermark passes them:
        // its checkpoints log pruned rows as well as new ones.
        "click_history",
        "SELECT user_id, ts, page, count(*) OVER (PARTITION BY user_id ORDER BY ts \
           RANGE BETWEEN INTERVAL '1 second' PRECEDING AND CURRENT ROW) AS last_second, \
         lag(page) OVER (PARTITION BY user_id ORDER BY ts) AS before FROM clicks",
    ),
];

/// Every click `per_second` (named with `prefix`) has read: counted in a
/// window or kept as too late.
fn clicks_read(prefix: &str) -> String {
    format!(
        "SELECT (SELECT sum(c) FROM {prefix}per_second) + (SELECT count(*) \
         FROM eddy_catalog.late_events WHERE feeds = '{prefix}per_second')"
    )
}

/// Creates the sources (`rows` events at `rate` a second, and a quarter as
/// many clicks, 2% of them 1 s late, which is too late) and the views.
async fn create(client: &Client, rows: u64, rate: u64) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (id bigint, k int, v int, tag varchar) \
             WITH (connector = 'datagen', fields.id.kind = 'sequence', \
                   fields.k.min = '1', fields.k.max = '40', \
                   fields.v.min = '1', fields.v.max = '1000', \
                   fields.tag.kind = 'choice', fields.tag.values = 'a,b,c,d', \
                   datagen.seed = '7', datagen.rows = '{rows}', \
                   datagen.rows.per.second = '{rate}');
             CREATE SOURCE dim (k int, label varchar) \
             WITH (connector = 'datagen', fields.k.kind = 'sequence', \
                   fields.k.start = '1', fields.k.end = '40', \
                   fields.label.kind = 'choice', fields.label.values = 'x,y,z', \
                   datagen.rows = '40');
             CREATE SOURCE clicks (user_id varchar, page varchar, ts timestamptz, \
                   WATERMARK FOR ts AS ts - INTERVAL '200 milliseconds') \
             WITH (connector = 'datagen', generator = 'page_clicks', \
                   late.fraction = '0.02', late.by = '1 second', \
                   watermark.allowed.lateness = '300 milliseconds', \
                   datagen.rows = '{clicks}', datagen.rows.per.second = '{click_rate}');",
            clicks = rows / 4,
            click_rate = rate / 4,
        ))
        .await?;
    create_views(client, "").await
}

/// The views, their names prefixed by `prefix`.
async fn create_views(client: &Client, prefix: &str) -> anyhow::Result<()> {
    for (name, query) in VIEWS {
        let query = query.replace("{per_k}", &format!("{prefix}per_k"));
        client
            .batch_execute(&format!(
                "CREATE MATERIALIZED VIEW {prefix}{name} AS {query}"
            ))
            .await
            .with_context(|| format!("creating {prefix}{name}"))?;
    }
    Ok(())
}

/// Waits until every event is in, builds the views again from scratch
/// under `ref_` names, and checks that each view equals its reference
/// exactly.
async fn check_against_fresh_views(client: &Client, rows_total: u64) -> anyhow::Result<()> {
    let total = rows_total.to_string();
    wait_for(client, "SELECT n FROM totals", &total).await?;
    wait_for(client, "SELECT total FROM busiest", &total).await?;
    wait_for(client, "SELECT sum(n) FROM labelled", &total).await?;
    let clicks = (rows_total / 4).to_string();
    wait_for(client, &clicks_read(""), &clicks).await?;
    create_views(client, "ref_").await?;
    wait_for(client, "SELECT n FROM ref_totals", &total).await?;
    wait_for(client, "SELECT total FROM ref_busiest", &total).await?;
    wait_for(client, "SELECT sum(n) FROM ref_labelled", &total).await?;
    wait_for(client, &clicks_read("ref_"), &clicks).await?;
    // The window-closing views and the OVER window have read every click
    // (and so closed the same windows as their references).
    for prefix in ["", "ref_"] {
        for view in ["closed", "sessions", "click_history"] {
            let sql = format!(
                "SELECT max(\"offset\") FROM eddy_catalog.source_partitions \
                 WHERE feeds = '{prefix}{view}'"
            );
            wait_for(client, &sql, &clicks).await?;
        }
    }
    // Each click read is in three hopping windows.
    let read: u64 = value(client, "SELECT sum(c) FROM per_second")
        .await?
        .parse()?;
    for prefix in ["", "ref_"] {
        let sql = format!("SELECT sum(c) FROM {prefix}hopping");
        wait_for(client, &sql, &(3 * read).to_string()).await?;
    }
    let late = |feeds: &str| {
        format!(
            "SELECT \"offset\", event_time, reason FROM eddy_catalog.late_events \
             WHERE feeds = '{feeds}' ORDER BY 1"
        )
    };
    let (got, expected) = (
        rows(client, &late("per_second")).await?,
        rows(client, &late("ref_per_second")).await?,
    );
    ensure!(!expected.is_empty(), "no click was too late");
    ensure!(
        got == expected,
        "the late events differ from a view that never crashed: {} against {}",
        got.len(),
        expected.len()
    );
    for (name, _) in VIEWS {
        let mut got = rows(client, &format!("SELECT * FROM {name}")).await?;
        let mut expected = rows(client, &format!("SELECT * FROM ref_{name}")).await?;
        got.sort();
        expected.sort();
        ensure!(!expected.is_empty(), "ref_{name} is empty");
        ensure!(
            got == expected,
            "{name} differs from a view that never crashed:\n got {got:?}\n expected {expected:?}"
        );
    }
    Ok(())
}

/// After the last restart: every view exact (see
/// [`check_against_fresh_views`]), and the log saying a checkpoint was
/// recovered from. Returns the log.
async fn check_recovered(server: &TestServer, rows_total: u64) -> anyhow::Result<String> {
    let client = server.connect().await?;
    check_against_fresh_views(&client, rows_total)
        .await
        .with_context(|| server.log_tail())?;
    let log = server.log_text();
    ensure!(
        log.contains("recovered from checkpoint"),
        "no restart recovered from a checkpoint:\n{}",
        server.log_tail()
    );
    Ok(log)
}

fn options(interval: &str) -> ServerOptions {
    ServerOptions {
        checkpoint_interval: Some(interval.to_string()),
        ..ServerOptions::default()
    }
}

/// A small xorshift generator: kill points differ from run to run, and the
/// seed is printed so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_streams_are_exact_after_kill_9_at_random_moments() -> anyhow::Result<()> {
    const ROWS: u64 = 400_000;
    let seed = std::env::var("EDDYDB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("kill points from EDDYDB_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut kill_at: Vec<u64> = (0..3)
        .map(|_| ROWS / 10 + rng.below(ROWS * 8 / 10))
        .collect();
    kill_at.sort_unstable();

    let mut server = TestServer::start_with(options("100ms"))?;
    let client = server.connect().await?;
    create(&client, ROWS, 80_000).await?;
    drop(client);
    for (i, at) in kill_at.iter().enumerate() {
        let client = server.connect().await?;
        wait_until(&client, "SELECT n FROM totals", |n| {
            n.parse::<u64>().is_ok_and(|n| n >= *at)
        })
        .await
        .with_context(|| format!("kill {i}"))?;
        drop(client);
        server.kill9()?;
        server.restart()?;
    }
    check_recovered(&server, ROWS).await?;
    let client = server.connect().await?;
    let taken: u64 = value(&client, "SELECT count(*) FROM eddy_catalog.checkpoints")
        .await?
        .parse()?;
    ensure!(taken > 0, "eddy_catalog.checkpoints is empty");
    // After a view's first whole state, checkpoints store its changes
    // only: the restarts above recovered from chains of them.
    let incremental: u64 = value(
        &client,
        "SELECT count(*) FROM eddy_catalog.checkpoints WHERE views_changes_only > 0",
    )
    .await?
    .parse()?;
    ensure!(
        incremental > 0,
        "no checkpoint stored changes only ({taken} taken)"
    );

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_is_passed_over_for_the_one_before() -> anyhow::Result<()> {
    const ROWS: u64 = 150_000;
    let mut server = TestServer::start_with(options("50ms"))?;
    let client = server.connect().await?;
    create(&client, ROWS, 60_000).await?;
    wait_for(&client, "SELECT n FROM totals", &ROWS.to_string()).await?;
    wait_until(
        &client,
        "SELECT count(*) >= 3 FROM eddy_catalog.checkpoints",
        |v| v == "t",
    )
    .await?;
    // The newest checkpoint complete before the kill (a later one may be
    // half written: its states are not named by any manifest).
    let complete: u64 = value(
        &client,
        "SELECT max(checkpoint_id) FROM eddy_catalog.checkpoints",
    )
    .await?
    .parse()?;
    drop(client);
    server.kill9()?;

    // Flip a byte in the newest state written: the newest checkpoint (and
    // any after it naming the same state) no longer checks out.
    {
        let folder = server.data_dir().join("checkpoints");
        let mut states: Vec<_> = std::fs::read_dir(&folder)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        // Named `<checkpoint id>-<view id>.state`, in hex.
        states.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').next())
                .and_then(|id| u64::from_str_radix(id, 16).ok())
                .is_some_and(|id| id <= complete)
        });
        states.sort();
        let newest = states.last().context("no checkpoint state stored")?;
        let mut damaged = std::fs::read(newest)?;
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x5a;
        std::fs::write(newest, damaged)?;
    }
    server.restart()?;
    let log = check_recovered(&server, ROWS).await?;
    ensure!(
        log.contains("checkpoint is damaged; using the one before it"),
        "the damage went unnoticed:\n{}",
        server.log_tail()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_checkpoint_is_written_leaves_the_one_before_in_use() -> anyhow::Result<()>
{
    const ROWS: u64 = 150_000;
    let mut server = TestServer::start_with(options("50ms"))?;
    let client = server.connect().await?;
    create(&client, ROWS, 30_000).await?;
    // Once the views run and checkpoints are being taken, the server is
    // killed and restarted with the failpoint set a little ahead: it
    // aborts once that checkpoint's states are flushed, before its
    // manifest, while the stream is still being read.
    wait_until(
        &client,
        "SELECT count(*) >= 3 FROM eddy_catalog.checkpoints",
        |v| v == "t",
    )
    .await?;
    let newest: u64 = value(
        &client,
        "SELECT max(checkpoint_id) FROM eddy_catalog.checkpoints",
    )
    .await?
    .parse()?;
    drop(client);
    server.kill9()?;
    let failing = newest + 15;
    server.options_mut().env = vec![(
        "EDDYDB_FAILPOINT".to_string(),
        format!("checkpoint-before-manifest:{failing}"),
    )];
    server.restart()?;
    let status = server.wait_exit(Duration::from_secs(60))?;
    ensure!(!status.success(), "the failpoint did not abort the server");
    ensure!(server
        .log_text()
        .contains("failpoint checkpoint-before-manifest"));
    server.options_mut().env.clear();
    server.restart()?;
    let log = check_recovered(&server, ROWS).await?;
    // The last start's recovery (the log holds every start's).
    let recovered = log
        .lines()
        .rfind(|l| l.contains("recovered from checkpoint"))
        .context("no recovery line in the log")?;
    ensure!(
        recovered.contains(&format!("checkpoint={}", failing - 1)),
        "expected recovery from checkpoint {}: {recovered}",
        failing - 1
    );
    Ok(())
}

/// A view whose state is large next to what changes in it: after the cold
/// keys are in, each checkpoint stores a few hundred groups, the chain
/// grows until a compaction folds it beside the dataflow, and a `kill -9`
/// once a checkpoint names the folded state recovers the view exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_chain_recovers_exactly_after_kill_9() -> anyhow::Result<()> {
    const COLD: u64 = 20_000;
    const HOT: u64 = 400_000;
    let query = "SELECT k, count(*) AS n, sum(v) AS s, \
                   count(*) FILTER (WHERE hot AND v <= 10) AS hot_small FROM \
                 (SELECT k, v, false AS hot FROM cold UNION ALL SELECT k, v, true AS hot FROM hot) \
                 AS e GROUP BY k";
    // An OVER window's partitions are checkpointed as changes too: the
    // cold keys' partitions stay, a tenth of the hot rows change theirs.
    let over = "SELECT k, v, lag(v) OVER w AS before, count(*) OVER w AS n FROM \
                (SELECT k, v FROM cold UNION ALL SELECT k, v FROM hot WHERE v <= 10) AS e \
                WINDOW w AS (PARTITION BY k ORDER BY v ROWS BETWEEN 2 PRECEDING AND 1 PRECEDING)";
    let mut server = TestServer::start_with(options("100ms"))?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE SOURCE cold (k bigint, v int) \
             WITH (connector = 'datagen', fields.k.kind = 'sequence', \
                   fields.k.start = '1', fields.k.end = '{COLD}', \
                   fields.v.min = '1', fields.v.max = '100', \
                   datagen.seed = '3', datagen.rows = '{COLD}');
             CREATE SOURCE hot (k bigint, v int) \
             WITH (connector = 'datagen', fields.k.min = '1', fields.k.max = '1000', \
                   fields.v.min = '1', fields.v.max = '100', datagen.seed = '5', \
                   datagen.rows = '{HOT}', datagen.rows.per.second = '20000');
             CREATE MATERIALIZED VIEW per_key AS {query};
             CREATE MATERIALIZED VIEW recent AS {over};"
        ))
        .await?;
    wait_until(
        &client,
        "SELECT count(*) > 0 FROM eddy_catalog.checkpoints WHERE views_compacted > 0",
        |v| v == "t",
    )
    .await
    .with_context(|| server.log_tail())?;
    drop(client);
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    let total = (COLD + HOT).to_string();
    wait_for(&client, "SELECT sum(n) FROM per_key", &total).await?;
    client
        .batch_execute(&format!("CREATE MATERIALIZED VIEW ref_per_key AS {query}"))
        .await?;
    wait_for(&client, "SELECT sum(n) FROM ref_per_key", &total).await?;
    client
        .batch_execute(&format!("CREATE MATERIALIZED VIEW ref_recent AS {over}"))
        .await?;
    // One row out per row in.
    let n = value(
        &client,
        &format!("SELECT {COLD} + sum(hot_small) FROM per_key"),
    )
    .await?;
    wait_for(&client, "SELECT count(*) FROM recent", &n).await?;
    wait_for(&client, "SELECT count(*) FROM ref_recent", &n).await?;
    let differing = value(
        &client,
        "SELECT count(*) FROM ((SELECT * FROM recent EXCEPT ALL SELECT * FROM ref_recent) \
         UNION ALL (SELECT * FROM ref_recent EXCEPT ALL SELECT * FROM recent)) d",
    )
    .await?;
    ensure!(
        differing == "0" && n.parse::<u64>()? > COLD,
        "recent: {differing} rows differ from a view that never crashed ({n} rows)"
    );
    let mut got = rows(&client, "SELECT * FROM per_key").await?;
    let mut expected = rows(&client, "SELECT * FROM ref_per_key").await?;
    got.sort();
    expected.sort();
    ensure!(got.len() as u64 == COLD, "{} groups", got.len());
    ensure!(
        got == expected,
        "per_key differs from a view that never crashed"
    );
    let recovered = server.log_text();
    ensure!(
        recovered.contains("recovered from checkpoint"),
        "no recovery:\n{}",
        server.log_tail()
    );
    Ok(())
}
