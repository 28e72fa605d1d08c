//! Joins of streams with context tables, and of streams with streams,
//! through the real protocol.
//!
//! The oracle, as in `windows.rs`, is a connector-fed table reading the very
//! same generator (a datagen stream is a pure function of its options): it
//! keeps every row, so the view's query run ad hoc over it is the batch
//! answer.

#[path = "support/query.rs"]
mod query;
#[path = "support/server.rs"]
mod server;

use anyhow::ensure;
use query::{error_of, rows, value, wait_for, wait_until};
use server::{ServerOptions, TestServer};

const EVENTS: u64 = 20_000;

/// Events for the context ids 0..40, a thousand a second of event time,
/// all in the past, so they are read as one backlog.
fn events(rows: u64) -> String {
    format!(
        "connector = 'datagen', datagen.rows = '{rows}', datagen.rows.per.second = '1000', \
         datagen.start.time = '2026-01-01 00:00:00+00', datagen.seed = '7', \
         fields.id.kind = 'sequence', fields.context_id.kind = 'random', \
         fields.context_id.min = '0', fields.context_id.max = '39', \
         fields.value.kind = 'random', fields.value.min = '1', fields.value.max = '100'"
    )
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
            "SELECT count(*) FROM (({expected} EXCEPT ALL SELECT * FROM {view}) \
             UNION ALL (SELECT * FROM {view} EXCEPT ALL {expected})) d"
        ),
    )
    .await
}

/// A regular join of a stream with a context table equals the batch join
/// after every round of INSERT, UPDATE and DELETE on the table: a change
/// of the context retracts the joined rows it affects and emits them anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regular_join_follows_every_change_of_the_context_table() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE contexts (context_id bigint PRIMARY KEY, segment text, weight int);
             INSERT INTO contexts SELECT g, 'segment-' || (g % 5), g * 1 FROM generate_series(0, 29) AS g(g);
             CREATE SOURCE events (id bigint, context_id bigint, value int, ts timestamptz)
               WITH ({src});
             CREATE TABLE events_all (id bigint, context_id bigint, value int, ts timestamptz)
               WITH ({src});
             CREATE MATERIALIZED VIEW decorated AS
               SELECT e.id, e.value, c.segment, c.weight
               FROM events e LEFT JOIN contexts c ON e.context_id = c.context_id;
             CREATE MATERIALIZED VIEW per_segment AS
               SELECT c.segment, count(*) AS events, sum(e.value * c.weight) AS score
               FROM events e JOIN contexts c ON e.context_id = c.context_id
               GROUP BY c.segment;",
            src = events(EVENTS)
        ))
        .await?;
    let all = EVENTS.to_string();
    wait_for(&client, "SELECT count(*) FROM events_all", &all).await?;
    wait_for(&client, "SELECT count(*) FROM decorated", &all).await?;
    let decorated = "SELECT e.id, e.value, c.segment, c.weight \
                     FROM events_all e LEFT JOIN contexts c ON e.context_id = c.context_id";
    let per_segment = "SELECT c.segment, count(*), sum(e.value * c.weight) \
                       FROM events_all e JOIN contexts c ON e.context_id = c.context_id \
                       GROUP BY c.segment";
    let rounds = [
        "SELECT 1",
        "UPDATE contexts SET segment = 'vip' WHERE context_id % 7 = 0",
        "DELETE FROM contexts WHERE context_id BETWEEN 10 AND 14",
        "INSERT INTO contexts SELECT g, 'late', 1 FROM generate_series(30, 39) AS g(g)",
        "UPDATE contexts SET weight = weight * 3, segment = 'moved' WHERE context_id > 20",
        "UPDATE contexts SET context_id = context_id + 100 WHERE context_id < 3",
        "DELETE FROM contexts",
        "INSERT INTO contexts SELECT g, 'back', 2 FROM generate_series(0, 39) AS g(g)",
    ];
    for round in rounds {
        client.batch_execute(round).await?;
        let d = differing(&client, decorated, "decorated").await?;
        let p = differing(&client, per_segment, "per_segment").await?;
        ensure!(
            d == "0" && p == "0",
            "after {round}: {d} and {p} rows differ"
        );
    }
    ensure!(
        value(&client, "SELECT count(DISTINCT segment) FROM per_segment").await? == "1",
        "every context row was replaced"
    );
    Ok(())
}

/// A lookup join joins each event with the table as it is when the event
/// arrives: a change of the table after an event leaves that event's
/// output as it was, while a regular join over the same stream rewrites
/// it. Events without context get NULLs in a LEFT lookup join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_join_keeps_what_each_event_saw() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    // Paced in real time from now, so events arrive before and after the
    // UPDATE below.
    client
        .batch_execute(
            "CREATE TABLE contexts (context_id bigint PRIMARY KEY, segment text);
             INSERT INTO contexts SELECT g, 'before' FROM generate_series(0, 29) AS g(g);
             CREATE SOURCE events (id bigint, context_id bigint)
               WITH (connector = 'datagen', datagen.rows = '3000',
                     datagen.rows.per.second = '1000', datagen.seed = '3',
                     fields.id.kind = 'sequence', fields.context_id.kind = 'random',
                     fields.context_id.min = '0', fields.context_id.max = '39');
             CREATE MATERIALIZED VIEW looked_up AS
               SELECT e.id, e.context_id, c.segment
               FROM events e LEFT JOIN contexts FOR SYSTEM_TIME AS OF PROCTIME() AS c
                 ON e.context_id = c.context_id;
             CREATE MATERIALIZED VIEW joined AS
               SELECT e.id, c.segment
               FROM events e LEFT JOIN contexts c ON e.context_id = c.context_id;",
        )
        .await?;
    wait_until(&client, "SELECT count(*) > 100 FROM looked_up", |v| {
        v == "t"
    })
    .await?;
    client
        .batch_execute("UPDATE contexts SET segment = 'after'")
        .await?;
    // What the view held when the UPDATE returned is fixed from then on.
    let before = rows(
        &client,
        "SELECT id FROM looked_up WHERE segment = 'before' ORDER BY id",
    )
    .await?;
    wait_for(&client, "SELECT count(*) FROM looked_up", "3000").await?;
    wait_for(&client, "SELECT count(*) FROM joined", "3000").await?;
    let still = rows(
        &client,
        "SELECT id FROM looked_up WHERE segment = 'before' ORDER BY id",
    )
    .await?;
    ensure!(!before.is_empty() && still == before, "past output changed");
    // Events are read in order: every event after the UPDATE saw 'after'.
    let last_before = value(
        &client,
        "SELECT max(id) FROM looked_up WHERE segment = 'before'",
    )
    .await?;
    let wrong = value(
        &client,
        &format!(
            "SELECT count(*) FROM looked_up WHERE context_id < 30 AND \
             ((id <= {last_before}) <> (segment = 'before'))"
        ),
    )
    .await?;
    ensure!(wrong == "0", "{wrong} events saw the wrong context");
    ensure!(
        value(
            &client,
            "SELECT count(*) FROM looked_up WHERE segment = 'after'"
        )
        .await?
            != "0",
        "no event came after the UPDATE"
    );
    // Missing context: NULLs, in both joins.
    let unmatched = "SELECT count(*) FROM looked_up WHERE context_id >= 30 AND segment IS NOT NULL";
    ensure!(value(&client, unmatched).await? == "0");
    // The regular join rewrote everything it joined.
    ensure!(
        value(
            &client,
            "SELECT count(*) FROM joined WHERE segment = 'before'"
        )
        .await?
            == "0",
        "the regular join kept old context"
    );
    // The lookup join keeps only the table's rows, not the stream's.
    let state: i64 = value(
        &client,
        "SELECT state_bytes FROM eddy_catalog.operators \
         WHERE view = 'looked_up' AND operator LIKE 'Join%lookup%'",
    )
    .await?
    .parse()?;
    let regular: i64 = value(
        &client,
        "SELECT state_bytes FROM eddy_catalog.operators \
         WHERE view = 'joined' AND operator LIKE 'Join%'",
    )
    .await?
    .parse()?;
    ensure!(
        state > 0 && state * 10 < regular,
        "lookup {state} B, regular {regular} B"
    );
    Ok(())
}

/// An interval join between two streams equals the batch answer, and with
/// watermarks lets go of rows that can match nothing more: its state ends
/// far smaller than the same join's without watermarks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_join_matches_the_batch_answer_and_frees_its_state() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let clicks = |watermark: &str| {
        format!(
            "(user_id bigint, ts timestamptz{watermark}) WITH (connector = 'datagen', \
             datagen.rows = '{EVENTS}', datagen.rows.per.second = '1000', \
             datagen.start.time = '2026-01-01 00:00:00+00', datagen.seed = '5', \
             fields.user_id.kind = 'random', fields.user_id.min = '1', fields.user_id.max = '50')"
        )
    };
    let view = |name: &str, source: &str| {
        format!(
            "CREATE MATERIALIZED VIEW {name} AS \
             SELECT a.user_id, count(*) AS follow_ups FROM {source} a JOIN {source} b \
             ON a.user_id = b.user_id AND b.ts > a.ts AND b.ts <= a.ts + INTERVAL '2 seconds' \
             GROUP BY a.user_id"
        )
    };
    client
        .batch_execute(&format!(
            "CREATE SOURCE clicks {};
             CREATE SOURCE clicks_unbounded {};
             CREATE TABLE clicks_all {};
             {};
             {};",
            clicks(", WATERMARK FOR ts AS ts - INTERVAL '1 second'"),
            clicks(""),
            clicks(""),
            view("follow_ups", "clicks"),
            view("follow_ups_unbounded", "clicks_unbounded"),
        ))
        .await?;
    let all = EVENTS.to_string();
    wait_for(&client, "SELECT count(*) FROM clicks_all", &all).await?;
    let expected = "SELECT a.user_id, count(*) AS n FROM clicks_all a JOIN clicks_all b \
                    ON a.user_id = b.user_id AND b.ts > a.ts \
                    AND b.ts <= a.ts + INTERVAL '2 seconds' GROUP BY a.user_id";
    let total = value(&client, &format!("SELECT sum(n) FROM ({expected}) t")).await?;
    for v in ["follow_ups", "follow_ups_unbounded"] {
        wait_for(&client, &format!("SELECT sum(follow_ups) FROM {v}"), &total).await?;
        ensure!(differing(&client, expected, v).await? == "0", "{v} differs");
    }
    let explain = rows(&client, "EXPLAIN follow_ups").await?.join("\n");
    ensure!(
        explain.contains("left rows expire") && explain.contains("right rows expire"),
        "{explain}"
    );
    let state = |view: &str| {
        format!(
            "SELECT state_bytes FROM eddy_catalog.operators \
             WHERE view = '{view}' AND operator LIKE 'Join%'"
        )
    };
    let bounded: i64 = value(&client, &state("follow_ups")).await?.parse()?;
    let unbounded: i64 = value(&client, &state("follow_ups_unbounded"))
        .await?
        .parse()?;
    // The last 3 seconds of 20 are held at most.
    ensure!(
        bounded * 4 < unbounded,
        "with watermarks {bounded} B, without {unbounded} B"
    );
    Ok(())
}

/// Over `--memory-limit`, the view whose state grows past it fails with
/// 53200 and lets go of its state; the server, the other views and the
/// tables go on. A view that would not fit from the start is not created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_over_the_memory_limit_fails_alone() -> anyhow::Result<()> {
    let server = TestServer::start_with(ServerOptions {
        env: vec![("EDDYDB_MEMORY_LIMIT".into(), "2MB".into())],
        ..ServerOptions::default()
    })?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE contexts (context_id bigint PRIMARY KEY, segment text);
             INSERT INTO contexts SELECT g, 's' || (g % 3) FROM generate_series(0, 39) AS g(g);
             CREATE MATERIALIZED VIEW small AS SELECT segment, count(*) FROM contexts GROUP BY segment;
             CREATE SOURCE events (id bigint, context_id bigint, value int, ts timestamptz)
               WITH ({});
             CREATE MATERIALIZED VIEW every_event AS SELECT id, count(*) FROM events GROUP BY id;",
            events(200_000)
        ))
        .await?;
    wait_for(
        &client,
        "SELECT status FROM eddy_catalog.views WHERE name = 'every_event'",
        "failed",
    )
    .await?;
    let (code, message, hint) = error_of(&client, "SELECT count(*) FROM every_event").await?;
    ensure!(code == "53200", "{code}: {message}");
    ensure!(message.contains("memory limit of 2.0 MiB"), "{message}");
    ensure!(hint.is_some_and(|h| h.contains("--memory-limit")));
    // Its state is gone; the others keep serving and following changes.
    ensure!(
        value(
            &client,
            "SELECT state_bytes FROM eddy_catalog.views WHERE name = 'every_event'"
        )
        .await?
            == "0"
    );
    client
        .batch_execute("INSERT INTO contexts VALUES (100, 's0')")
        .await?;
    wait_for(
        &client,
        "SELECT count FROM small WHERE segment = 's0'",
        "15",
    )
    .await?;
    let held = value(
        &client,
        "SELECT sum(state_bytes) FROM eddy_catalog.operators WHERE view = 'small'",
    )
    .await?;
    ensure!(held.parse::<i64>()? > 0, "{held}");
    // Too big from the start: refused, and nothing is left behind.
    client
        .batch_execute(
            "CREATE TABLE wide (id bigint PRIMARY KEY, body text);
             INSERT INTO wide SELECT g, repeat('x', 100) FROM generate_series(1, 30000) AS g(g);",
        )
        .await?;
    let (code, message, _) = error_of(
        &client,
        "CREATE MATERIALIZED VIEW copy_of_wide AS SELECT body, count(*) FROM wide GROUP BY id, body",
    )
    .await?;
    ensure!(code == "53200", "{code}: {message}");
    let (code, ..) = error_of(&client, "SELECT * FROM copy_of_wide").await?;
    ensure!(code == "42P01", "{code}");
    // Dropping the failed view frees its place for another.
    client
        .batch_execute("DROP MATERIALIZED VIEW every_event")
        .await?;
    ensure!(
        value(&client, "SELECT count(*) FROM eddy_catalog.views").await? == "1",
        "only small is left"
    );
    // A write that takes a view over the budget is kept; the view fails,
    // and so does the view over it, whose input stopped changing.
    client
        .batch_execute(
            "CREATE TABLE notes (id bigint, body text);
             CREATE MATERIALIZED VIEW note_rows AS SELECT id, body FROM notes;
             CREATE MATERIALIZED VIEW note_count AS SELECT count(*) AS n FROM note_rows;
             INSERT INTO notes SELECT g, repeat('y', 100) FROM generate_series(1, 40000) AS g(g);",
        )
        .await?;
    ensure!(value(&client, "SELECT count(*) FROM notes").await? == "40000");
    let (code, ..) = error_of(&client, "SELECT * FROM note_rows").await?;
    ensure!(code == "53200", "{code}");
    let (code, message, _) = error_of(&client, "SELECT * FROM note_count").await?;
    ensure!(
        code == "55000" && message.contains("\"note_rows\""),
        "{code}: {message}"
    );
    Ok(())
}

/// The scenario-2 example runs as its README words say: the regular join
/// equals the batch answer, and the lookup join decorated events after the
/// context update with the new context only.
#[test]
fn the_context_decoration_example_matches_the_batch_answer() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let stdout = server.run_example(
        "context_decoration.sh",
        &[
            ("CONTEXT_ROWS", "20000"),
            // An 8-second live half: building the views and the update
            // must fit in it even on a loaded machine.
            ("EVENTS", "40000"),
            ("EVENT_RATE", "2500"),
        ],
    )?;
    ensure!(
        stdout.contains("device counts that differ from the batch answer: 0"),
        "{stdout}"
    );
    Ok(())
}
