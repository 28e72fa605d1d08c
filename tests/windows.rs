//! Windows over a stream with late events, through the real protocol.
//!
//! The oracle is a connector-fed table reading the very same generator
//! (a datagen stream is a pure function of its options): a table keeps every
//! row, so the same window query run ad hoc over it is the batch answer.
//! A source whose allowed lateness covers the late events must match it
//! exactly, at every level of a rollup; a source with a smaller allowance
//! must match it minus the events it kept in `eddy_catalog.late_events`.
//! `EMIT ON WINDOW CLOSE` must give exactly the batch answer's rows for the
//! windows the frontier has passed, and none for the others.
//! The same generator with a crash in the middle is in `checkpoints.rs`.

#[path = "support/query.rs"]
mod query;
#[path = "support/server.rs"]
mod server;

use std::collections::BTreeMap;

use anyhow::ensure;
use query::{error_of, rows, value, wait_for};
use server::{ServerOptions, TestServer};

const ROWS: u64 = 60_000;

/// The generator: 1,000 clicks a second of event time from 2026-01-01, 5%
/// of them stamped 3 seconds behind the clock.
fn generator() -> String {
    format!(
        "connector = 'datagen', generator = 'page_clicks', \
         datagen.rows = '{ROWS}', datagen.rows.per.second = '1000', \
         datagen.start.time = '2026-01-01 00:00:00+00', \
         late.fraction = '0.05', late.by = '3 seconds'"
    )
}

fn source(name: &str, lateness: &str) -> String {
    format!(
        "CREATE SOURCE {name} (user_id varchar, page varchar, ts timestamptz, \
            WATERMARK FOR ts AS ts - INTERVAL '1 second') \
         WITH ({}, watermark.allowed.lateness = '{lateness}')",
        generator()
    )
}

/// Rows of `sql` as `window|count` → count.
async fn counts(
    client: &tokio_postgres::Client,
    sql: &str,
) -> anyhow::Result<BTreeMap<String, i64>> {
    rows(client, sql)
        .await?
        .into_iter()
        .map(|row| {
            let (window, n) = row.rsplit_once('|').expect("two columns");
            Ok((window.to_string(), n.parse()?))
        })
        .collect()
}

/// How many rows `view` and the batch query `expected` do not share.
async fn differing(
    client: &tokio_postgres::Client,
    expected: &str,
    view: &str,
) -> anyhow::Result<String> {
    value(
        client,
        &format!(
            "SELECT count(*) FROM (({expected} EXCEPT SELECT * FROM {view}) \
             UNION ALL (SELECT * FROM {view} EXCEPT {expected})) d"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_correct_windows_and_too_late_ones_are_kept() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE oracle (user_id varchar, page varchar, ts timestamptz) WITH ({});
             {};
             {};
             CREATE MATERIALIZED VIEW lenient AS
                SELECT window_start, count(*) AS n
                FROM TUMBLE(clicks, ts, INTERVAL '1 second') GROUP BY window_start;
             CREATE MATERIALIZED VIEW lenient_10s AS
                SELECT date_bin(INTERVAL '10 seconds', window_start) AS w, sum(n) AS n
                FROM lenient GROUP BY 1;
             CREATE MATERIALIZED VIEW lenient_pages AS
                SELECT page, window_start, count(*) AS n
                FROM HOP(clicks, ts, INTERVAL '2 seconds', INTERVAL '10 seconds')
                GROUP BY page, window_start;
             CREATE MATERIALIZED VIEW lenient_top AS
                SELECT window_start, page, n FROM (
                  SELECT window_start, page, n, row_number() OVER (
                    PARTITION BY window_start ORDER BY n DESC, page) AS rn
                  FROM (SELECT window_start, page, count(*) AS n
                        FROM TUMBLE(clicks, ts, INTERVAL '1 second') GROUP BY 1, 2) c
                ) r WHERE rn = 1;
             CREATE MATERIALIZED VIEW lenient_sessions AS
                SELECT user_id, window_start, window_end, count(*) AS n
                FROM SESSION(clicks, ts, INTERVAL '1 second', user_id)
                GROUP BY user_id, window_start, window_end;
             CREATE MATERIALIZED VIEW strict AS
                SELECT window_start, count(*) AS n
                FROM TUMBLE(strict_clicks, ts, INTERVAL '1 second') GROUP BY window_start;",
            generator(),
            source("clicks", "5 seconds"),
            source("strict_clicks", "1 second"),
        ))
        .await?;
    let total = ROWS.to_string();
    wait_for(&client, "SELECT count(*) FROM oracle", &total).await?;
    wait_for(&client, "SELECT sum(n) FROM lenient", &total).await?;
    wait_for(&client, "SELECT sum(n) FROM lenient_10s", &total).await?;
    wait_for(&client, "SELECT sum(n) FROM lenient_sessions", &total).await?;
    wait_for(
        &client,
        "SELECT sum(rows) FROM eddy_catalog.source_partitions WHERE feeds = 'lenient_top'",
        &total,
    )
    .await?;
    wait_for(
        &client,
        "SELECT (SELECT sum(n) FROM strict) + (SELECT count(*) FROM eddy_catalog.late_events \
         WHERE feeds = 'strict')",
        &total,
    )
    .await?;

    // Within the allowance every late event counted in its own window, and
    // the rollup over the windows is exact too.
    let batch = |size: &str| {
        format!(
            "SELECT window_start, count(*) FROM TUMBLE(oracle, ts, INTERVAL '{size}') \
             GROUP BY 1 ORDER BY 1"
        )
    };
    let oracle = counts(&client, &batch("1 second")).await?;
    ensure!(oracle.len() > 50, "too few windows: {}", oracle.len());
    ensure!(counts(&client, "SELECT * FROM lenient ORDER BY 1").await? == oracle);
    ensure!(
        counts(&client, "SELECT * FROM lenient_10s ORDER BY 1").await?
            == counts(&client, &batch("10 seconds")).await?
    );
    let batch_hop = "SELECT page, window_start, count(*) AS n \
         FROM HOP(oracle, ts, INTERVAL '2 seconds', INTERVAL '10 seconds') GROUP BY 1, 2";
    let hop_diff = differing(&client, batch_hop, "lenient_pages").await?;
    ensure!(
        hop_diff == "0",
        "{hop_diff} hopping windows differ from the batch answer"
    );
    // The busiest page per window: right, and its closed windows let go.
    let batch_top = "SELECT window_start, page, n FROM (SELECT window_start, page, n, \
         row_number() OVER (PARTITION BY window_start ORDER BY n DESC, page) AS rn \
         FROM (SELECT window_start, page, count(*) AS n \
               FROM TUMBLE(oracle, ts, INTERVAL '1 second') GROUP BY 1, 2) c) r WHERE rn = 1";
    let top_diff = differing(&client, batch_top, "lenient_top").await?;
    ensure!(
        top_diff == "0",
        "{top_diff} top rows differ from the batch answer"
    );
    let plan = rows(&client, "EXPLAIN lenient_top").await?.join("\n");
    ensure!(plan.contains("partitions close when"), "{plan}");
    // Sessions too: late events extended and merged sessions already
    // emitted, and the view ends up with the batch answer's sessions.
    let batch_sessions = "SELECT user_id, window_start, window_end, count(*) \
         FROM SESSION(oracle, ts, INTERVAL '1 second', user_id) GROUP BY 1, 2, 3";
    let session_diff = differing(&client, batch_sessions, "lenient_sessions").await?;
    ensure!(
        session_diff == "0",
        "{session_diff} sessions differ from the batch answer"
    );
    let sessions: i64 = value(&client, "SELECT count(*) FROM lenient_sessions")
        .await?
        .parse()?;
    ensure!(
        (1_000..ROWS as i64).contains(&sessions),
        "{sessions} sessions of {ROWS} events"
    );
    let kept_lenient: i64 = value(
        &client,
        "SELECT count(*) FROM eddy_catalog.late_events WHERE feeds LIKE 'lenient%'",
    )
    .await?
    .parse()?;
    ensure!(
        kept_lenient == 0,
        "{kept_lenient} events within the allowance were kept apart"
    );

    // With one second allowed, the 3-second-late events are kept apart,
    // each with its time, its partition's watermark and its row.
    let late = counts(
        &client,
        "SELECT date_bin(INTERVAL '1 second', event_time), count(*) \
         FROM eddy_catalog.late_events WHERE feeds = 'strict' GROUP BY 1 ORDER BY 1",
    )
    .await?;
    let kept: i64 = late.values().sum();
    ensure!(kept > 1000, "only {kept} events were too late");
    let mut expected = oracle.clone();
    for (window, n) in &late {
        *expected.get_mut(window).expect("a late event's window") -= n;
    }
    expected.retain(|_, n| *n > 0);
    ensure!(counts(&client, "SELECT * FROM strict ORDER BY 1").await? == expected);
    let wrong = value(
        &client,
        "SELECT count(*) FROM eddy_catalog.late_events WHERE feeds = 'strict' AND NOT ( \
           source = 'strict_clicks' AND watermark - event_time > INTERVAL '1 second' \
           AND reason LIKE 'event time is % behind its partition''s watermark; \
the allowed lateness is 1 s' \
           AND row LIKE '{\"user_id\":%' AND \"offset\" BETWEEN 0 AND 59999)",
    )
    .await?;
    ensure!(wrong == "0", "{wrong} late events are not described right");

    // A lateness without a watermark, or of no fixed length, is refused.
    let (code, message, _) = error_of(
        &client,
        &format!(
            "CREATE SOURCE x (ts timestamptz) WITH ({}, watermark.allowed.lateness = '1 s')",
            generator()
        ),
    )
    .await?;
    ensure!(
        code == "42P16" && message.contains("WATERMARK FOR"),
        "{code}: {message}"
    );
    let (code, ..) = error_of(&client, &source("y", "1 month")).await?;
    ensure!(code == "22023", "{code}");
    let (code, _, hint) = error_of(
        &client,
        "SELECT * FROM HOP(oracle, ts, INTERVAL '3 seconds', INTERVAL '10 seconds')",
    )
    .await?;
    ensure!(
        code == "22023" && hint.is_some_and(|h| h.starts_with("Write HOP(")),
        "{code}"
    );

    // Dropping a view forgets the late events its reader kept.
    client
        .batch_execute("DROP MATERIALIZED VIEW strict")
        .await?;
    wait_for(
        &client,
        "SELECT count(*) FROM eddy_catalog.late_events",
        "0",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_on_window_close_gives_the_final_rows_of_closed_windows() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE oracle (user_id varchar, page varchar, ts timestamptz) WITH ({});
             {};
             CREATE MATERIALIZED VIEW closed AS
                SELECT page, window_start, count(*) AS n, count(DISTINCT user_id) AS users
                FROM TUMBLE(clicks, ts, INTERVAL '1 second') GROUP BY page, window_start
                EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW closed_hop AS
                SELECT window_start, window_end, count(*) AS n
                FROM HOP(clicks, ts, INTERVAL '2 seconds', INTERVAL '4 seconds')
                GROUP BY window_start, window_end
                EMIT ON WINDOW CLOSE;
             {};
             CREATE MATERIALIZED VIEW closed_join AS
                SELECT a.window_start, count(*) AS pairs
                FROM TUMBLE(clicks, ts, INTERVAL '1 second') a
                JOIN TUMBLE(again, ts, INTERVAL '1 second') b
                  ON a.user_id = b.user_id AND a.window_start = b.window_start
                GROUP BY a.window_start
                EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW closed_10s AS
                SELECT date_bin(INTERVAL '10 seconds', window_start) AS w, sum(n) AS n
                FROM closed GROUP BY 1
                EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW closed_sessions AS
                SELECT user_id, window_start, window_end, count(*) AS n
                FROM SESSION(clicks, ts, INTERVAL '1 second', user_id)
                GROUP BY user_id, window_start, window_end
                EMIT ON WINDOW CLOSE;",
            generator(),
            source("clicks", "5 seconds"),
            source("again", "5 seconds"),
        ))
        .await?;
    let total = ROWS.to_string();
    wait_for(&client, "SELECT count(*) FROM oracle", &total).await?;
    // Every view has read every event of each source it reads.
    for view in ["closed", "closed_hop", "closed_sessions", "closed_join"] {
        let read = format!(
            "SELECT min(n) FROM (SELECT source, sum(rows) AS n \
             FROM eddy_catalog.source_partitions WHERE feeds = '{view}' GROUP BY source) s"
        );
        wait_for(&client, &read, &total).await?;
    }
    // No event older than this can come any more: its reader's watermark
    // minus the allowed lateness.
    let frontier = |view: &str| {
        format!(
            "(SELECT max(watermark) FROM eddy_catalog.source_partitions \
              WHERE feeds = '{view}') - INTERVAL '5 seconds'"
        )
    };
    let closed = format!(
        "SELECT page, window_start, count(*), count(DISTINCT user_id) \
         FROM TUMBLE(oracle, ts, INTERVAL '1 second') GROUP BY 1, 2 \
         HAVING window_start + INTERVAL '1 second' < {}",
        frontier("closed")
    );
    ensure!(differing(&client, &closed, "closed").await? == "0");
    let windows: i64 = value(&client, "SELECT count(DISTINCT window_start) FROM closed")
        .await?
        .parse()?;
    ensure!(windows > 40, "only {windows} windows closed");
    // A rollup over `closed` closes its windows in turn: a 10-second window
    // once every second in it is closed (1 s and 1 µs after it began).
    let closed_10s = format!(
        "SELECT date_bin(INTERVAL '10 seconds', ts), count(*) FROM oracle GROUP BY 1 \
         HAVING date_bin(INTERVAL '10 seconds', ts) + INTERVAL '11 seconds' < {}",
        frontier("closed")
    );
    let diff = differing(&client, &closed_10s, "closed_10s").await?;
    ensure!(
        diff == "0",
        "closed_10s differs from the batch answer: {:?} against {:?}",
        rows(&client, "SELECT * FROM closed_10s ORDER BY 1").await?,
        rows(&client, &format!("{closed_10s} ORDER BY 1")).await?
    );
    // A windowed join closes its windows too (the same stream twice).
    let closed_join = format!(
        "SELECT a.window_start, count(*) \
         FROM TUMBLE(oracle, ts, INTERVAL '1 second') a \
         JOIN TUMBLE(oracle, ts, INTERVAL '1 second') b \
           ON a.user_id = b.user_id AND a.window_start = b.window_start \
         GROUP BY 1 HAVING a.window_start + INTERVAL '1 second' < {}",
        frontier("closed_join")
    );
    ensure!(differing(&client, &closed_join, "closed_join").await? == "0");
    let joined: i64 = value(&client, "SELECT count(*) FROM closed_join")
        .await?
        .parse()?;
    ensure!(joined > 40, "only {joined} joined windows closed");
    let rolled: i64 = value(&client, "SELECT count(*) FROM closed_10s")
        .await?
        .parse()?;
    ensure!(rolled >= 4, "only {rolled} ten-second windows closed");
    let closed_hop = format!(
        "SELECT window_start, window_end, count(*) \
         FROM HOP(oracle, ts, INTERVAL '2 seconds', INTERVAL '4 seconds') GROUP BY 1, 2 \
         HAVING window_end < {}",
        frontier("closed_hop")
    );
    ensure!(differing(&client, &closed_hop, "closed_hop").await? == "0");
    // A session is final once the frontier reaches its end.
    let closed_sessions = format!(
        "SELECT user_id, window_start, window_end, count(*) \
         FROM SESSION(oracle, ts, INTERVAL '1 second', user_id) GROUP BY 1, 2, 3 \
         HAVING window_end <= {}",
        frontier("closed_sessions")
    );
    ensure!(differing(&client, &closed_sessions, "closed_sessions").await? == "0");
    let sessions: i64 = value(&client, "SELECT count(*) FROM closed_sessions")
        .await?
        .parse()?;
    ensure!(sessions > 1_000, "only {sessions} sessions closed");

    // A query the engine cannot close windows for is refused at CREATE.
    let (code, _, hint) = error_of(
        &client,
        "CREATE MATERIALIZED VIEW nope AS SELECT page, count(*) FROM clicks GROUP BY page \
         EMIT ON WINDOW CLOSE",
    )
    .await?;
    ensure!(
        code == "0A000" && hint.is_some_and(|h| h.contains("WATERMARK")),
        "{code}"
    );
    // Nor one that also reads a table: its frontier would never move.
    let (code, _, hint) = error_of(
        &client,
        "CREATE MATERIALIZED VIEW nope AS SELECT w.window_start, w.n, o.user_id \
         FROM (SELECT window_start, count(*) AS n FROM TUMBLE(clicks, ts, INTERVAL '1 second') \
               GROUP BY window_start) w JOIN oracle o ON o.ts = w.window_start \
         EMIT ON WINDOW CLOSE",
    )
    .await?;
    ensure!(
        code == "0A000" && hint.is_some_and(|h| h.contains("only such sources")),
        "{code}"
    );
    let (code, ..) = error_of(&client, "SELECT 1 EMIT ON WINDOW CLOSE").await?;
    ensure!(code == "42601", "{code}");
    Ok(())
}

/// The scenario-3 example runs as its README words say and finds the hourly
/// totals equal to the batch answer.
#[test]
fn the_late_minute_totals_example_matches_the_batch_answer() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let stdout = server.run_example("late_minute_totals.sh", &[])?;
    ensure!(
        stdout.contains("hourly totals that differ from the batch answer: 0"),
        "{stdout}"
    );
    Ok(())
}

/// A trailing range (`WHERE ts > now() - INTERVAL …`) keeps the rows of the
/// last seconds, and rows leave the view, and the views over it, as they
/// age, with nothing else happening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_leave_a_trailing_range_as_they_age() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE ev (id int PRIMARY KEY, k text, ts timestamptz);
             INSERT INTO ev VALUES (1, 'a', now() - INTERVAL '1 hour'),
                                   (2, 'a', now() + INTERVAL '1 hour'),
                                   (3, 'b', NULL);
             CREATE MATERIALIZED VIEW recent AS
                SELECT id, k, ts FROM ev WHERE ts > now() - INTERVAL '5 seconds' AND k <> 'z';
             CREATE MATERIALIZED VIEW recent_per_k AS
                SELECT k, count(*) AS n FROM recent GROUP BY k;",
        )
        .await?;
    // Backfilled: the row an hour old is out, NULL is never in.
    ensure!(rows(&client, "SELECT id FROM recent ORDER BY id").await? == ["2"]);
    client
        .batch_execute("INSERT INTO ev VALUES (4, 'b', now()), (5, 'z', now())")
        .await?;
    ensure!(rows(&client, "SELECT id FROM recent ORDER BY id").await? == ["2", "4"]);
    ensure!(value(&client, "SELECT n FROM recent_per_k WHERE k = 'b'").await? == "1");
    // Five seconds on, row 4 leaves on its own, and its count with it.
    wait_for(&client, "SELECT count(*) FROM recent WHERE id = 4", "0").await?;
    wait_for(
        &client,
        "SELECT count(*) FROM recent_per_k WHERE k = 'b'",
        "0",
    )
    .await?;
    ensure!(rows(&client, "SELECT id FROM recent ORDER BY id").await? == ["2"]);
    // A deleted row in range leaves at once.
    client.batch_execute("DELETE FROM ev WHERE id = 2").await?;
    ensure!(value(&client, "SELECT count(*) FROM recent").await? == "0");

    // now() anywhere else in a view is still refused, with the way out.
    let (code, _, hint) = error_of(
        &client,
        "CREATE MATERIALIZED VIEW v AS SELECT id FROM ev \
         WHERE ts > now() - INTERVAL '1 minute' OR id = 1",
    )
    .await?;
    ensure!(
        code == "0A000" && hint.is_some_and(|h| h.contains("ANDed")),
        "{code}"
    );
    let (code, _, hint) = error_of(&client, "CREATE MATERIALIZED VIEW v AS SELECT now()").await?;
    ensure!(
        code == "0A000" && hint.is_some_and(|h| h.contains("now() - INTERVAL")),
        "{code}"
    );
    // The range is over a time, not a number.
    let (code, ..) = error_of(
        &client,
        "CREATE MATERIALIZED VIEW v AS SELECT id FROM ev WHERE id > now() - INTERVAL '1 minute'",
    )
    .await?;
    ensure!(code == "42804", "{code}");
    // Ad-hoc queries keep now() as it is.
    ensure!(
        value(
            &client,
            "SELECT count(*) FROM ev WHERE ts > now() - INTERVAL '1 day'"
        )
        .await?
            == "3"
    );
    Ok(())
}

/// An OVER window over a stream whose events arrive out of order equals
/// the batch answer (late rows re-evaluate the rows after them), also after
/// `kill -9` part-way (its rows come back from a checkpoint), and with a
/// watermark keeps only the rows its frame can still reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_windows_follow_late_rows_and_free_what_no_frame_reaches() -> anyhow::Result<()> {
    let mut server = TestServer::start_with(ServerOptions {
        checkpoint_interval: Some("200ms".into()),
        ..ServerOptions::default()
    })?;
    let client = server.connect().await?;
    let view = |name: &str, source: &str| {
        format!(
            "CREATE MATERIALIZED VIEW {name} AS \
             SELECT user_id, page, ts, \
               count(*) OVER (PARTITION BY user_id ORDER BY ts \
                 RANGE BETWEEN INTERVAL '2 seconds' PRECEDING AND CURRENT ROW) AS burst, \
               max(page) OVER (PARTITION BY user_id ORDER BY ts \
                 RANGE BETWEEN INTERVAL '2 seconds' PRECEDING AND INTERVAL '1 millisecond' PRECEDING) AS before \
             FROM {source}"
        )
    };
    client
        .batch_execute(&format!(
            "{};
             CREATE SOURCE clicks_unbounded (user_id varchar, page varchar, ts timestamptz) WITH ({});
             CREATE TABLE oracle (user_id varchar, page varchar, ts timestamptz) WITH ({});
             {};
             {};",
            source("clicks", "5 seconds"),
            generator(),
            generator(),
            view("bursts", "clicks"),
            view("bursts_unbounded", "clicks_unbounded"),
        ))
        .await?;
    // A ROWS-only frame: a user's last row is all that stays.
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW previous AS SELECT user_id, ts, \
             lag(page) OVER (PARTITION BY user_id ORDER BY ts) AS previous_page FROM clicks",
        )
        .await?;
    // Killed part-way: the windows' rows come back from the checkpoint.
    query::wait_until(&client, "SELECT count(*) FROM bursts", |n| {
        n.parse::<u64>().is_ok_and(|n| n >= ROWS / 3)
    })
    .await?;
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    let all = ROWS.to_string();
    wait_for(&client, "SELECT count(*) FROM oracle", &all).await?;
    let expected = "SELECT user_id, page, ts, \
         count(*) OVER (PARTITION BY user_id ORDER BY ts \
           RANGE BETWEEN INTERVAL '2 seconds' PRECEDING AND CURRENT ROW), \
         max(page) OVER (PARTITION BY user_id ORDER BY ts \
           RANGE BETWEEN INTERVAL '2 seconds' PRECEDING AND INTERVAL '1 millisecond' PRECEDING) \
         FROM oracle";
    for v in ["bursts", "bursts_unbounded"] {
        wait_for(&client, &format!("SELECT count(*) FROM {v}"), &all).await?;
        ensure!(differing(&client, expected, v).await? == "0", "{v} differs");
    }
    let explain = rows(&client, "EXPLAIN bursts").await?.join("\n");
    ensure!(
        explain.contains("Over:") && explain.contains("are freed"),
        "{explain}"
    );
    let state = |view: &str| {
        format!(
            "SELECT state_bytes FROM eddy_catalog.operators \
             WHERE view = '{view}' AND operator LIKE 'Over%'"
        )
    };
    let bounded: i64 = value(&client, &state("bursts")).await?.parse()?;
    let unbounded: i64 = value(&client, &state("bursts_unbounded")).await?.parse()?;
    // Of 60 seconds of clicks, the last few (frame, lateness, watermark delay) stay.
    ensure!(
        bounded * 4 < unbounded,
        "with a watermark {bounded} B, without {unbounded} B"
    );
    wait_for(&client, "SELECT count(*) FROM previous", &all).await?;
    let rows_only: i64 = value(&client, &state("previous")).await?.parse()?;
    ensure!(
        rows_only * 4 < unbounded,
        "lag with a watermark {rows_only} B, RANGE without {unbounded} B"
    );
    Ok(())
}
