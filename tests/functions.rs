//! User functions through the real protocol: SQL functions inlined into
//! views and queries, Python functions run in worker processes whose
//! failures stay in the rows they concern, and both surviving a restart.

#[path = "support/query.rs"]
mod query;
#[path = "support/server.rs"]
mod server;

use anyhow::ensure;
use query::{error_of, rows, value, wait_for, wait_until};
use server::{ServerOptions, TestServer};

/// SQL functions: usable in ad-hoc queries and views (also nested), kept
/// across a restart, protected from DROP while a view calls them, and
/// refused with clear errors when their body or call is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_functions_inline_into_queries_and_views() -> anyhow::Result<()> {
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE FUNCTION with_tax(amount numeric(10,2), rate numeric(4,2)) RETURNS numeric(12,2)
               LANGUAGE sql AS $$ amount * (1 + rate) $$;
             CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';
             CREATE FUNCTION label(n int) RETURNS text LANGUAGE sql
               RETURN CASE WHEN twice(n) > 10 THEN 'big' ELSE 'small' END;
             CREATE TABLE orders (id int PRIMARY KEY, amount numeric(10,2), qty int);
             INSERT INTO orders VALUES (1, 10.00, 2), (2, 99.50, 7);
             CREATE MATERIALIZED VIEW priced AS
               SELECT id, with_tax(amount, 0.25) AS gross, twice(qty) AS pairs, label(qty) AS size
               FROM orders;",
        )
        .await?;
    ensure!(value(&client, "SELECT twice(21)").await? == "42");
    ensure!(value(&client, "SELECT with_tax(8, 0.5)").await? == "12.00");
    let expected = ["1|12.50|4|small", "2|124.38|14|big"];
    ensure!(rows(&client, "SELECT * FROM priced").await? == expected);
    client
        .batch_execute(
            "INSERT INTO orders VALUES (3, 1.00, 6); UPDATE orders SET qty = 1 WHERE id = 2",
        )
        .await?;
    let expected = ["1|12.50|4|small", "2|124.38|2|small", "3|1.25|12|big"];
    ensure!(rows(&client, "SELECT * FROM priced").await? == expected);
    // In writes too: INSERT … SELECT, SET, WHERE.
    client
        .batch_execute(
            "INSERT INTO orders SELECT 4, with_tax(8, 0.5), twice(5);
             UPDATE orders SET qty = twice(qty) WHERE label(qty) = 'big' AND id = 4;
             DELETE FROM orders WHERE twice(qty) = 40",
        )
        .await?;
    ensure!(rows(&client, "SELECT * FROM priced").await? == expected);
    client
        .batch_execute("INSERT INTO orders SELECT 4, with_tax(8, 0.5), twice(5)")
        .await?;
    let with_four = [
        "1|12.50|4|small",
        "2|124.38|2|small",
        "3|1.25|12|big",
        "4|15.00|20|big",
    ];
    ensure!(rows(&client, "SELECT * FROM priced").await? == with_four);
    client
        .batch_execute("DELETE FROM orders WHERE twice(id) = 8")
        .await?;

    // Dropping a function a view calls (directly or through another).
    let (code, message, hint) = error_of(&client, "DROP FUNCTION twice").await?;
    ensure!(code == "2BP01", "{code} {message}");
    ensure!(message.contains("function twice(integer)"), "{message}");
    ensure!(hint.is_some_and(|h| h.contains("CASCADE")));
    let (code, _, _) = error_of(
        &client,
        "CREATE OR REPLACE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 3'",
    )
    .await?;
    ensure!(code == "2BP01", "{code}");

    // Wrong definitions and calls.
    let cases = [
        (
            "CREATE FUNCTION bad1(x int) RETURNS int LANGUAGE sql AS $$ x + y $$",
            "42703",
            "reads only its arguments",
        ),
        (
            "CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql AS $$ x $$",
            "42723",
            "already exists",
        ),
        (
            "CREATE FUNCTION abs(x int) RETURNS int LANGUAGE sql AS $$ x $$",
            "42723",
            "built-in",
        ),
        (
            "CREATE FUNCTION bad2(x int) RETURNS int LANGUAGE cobol AS $$ x $$",
            "42704",
            "language \"cobol\"",
        ),
        (
            "CREATE FUNCTION bad3(x int) RETURNS int LANGUAGE sql AS $$ SELECT x FROM orders $$",
            "42P13",
            "one expression",
        ),
        ("SELECT twice(1, 2)", "42883", "twice(integer)"),
        ("CREATE OR REPLACE FUNCTION label(n int) RETURNS text LANGUAGE sql AS $$ label(n - 1) $$", "42P13", "call itself"),
        ("CREATE FUNCTION bad4(n int) RETURNS int LANGUAGE sql AS $$ $1 + $2 $$", "42P13", "no parameter $2"),
        ("DROP FUNCTION nothing_here", "42883", "does not exist"),
    ];
    for (sql, want, text) in cases {
        let (code, message, _) = error_of(&client, sql).await?;
        ensure!(
            code == want && message.contains(text),
            "{sql}: {code} {message}"
        );
    }
    client
        .batch_execute("DROP FUNCTION IF EXISTS nothing_here")
        .await?;

    // Functions and the views calling them come back after a restart.
    server.stop()?;
    server.restart()?;
    let client = server.connect().await?;
    ensure!(value(&client, "SELECT label(9)").await? == "big");
    ensure!(rows(&client, "SELECT * FROM priced").await? == expected);
    client.batch_execute("DROP FUNCTION twice CASCADE").await?;
    ensure!(
        value(
            &client,
            "SELECT count(*) FROM pg_matviews WHERE matviewname = 'priced'"
        )
        .await?
            == "0"
    );
    let (code, _, _) = error_of(&client, "SELECT label(1)").await?;
    ensure!(
        code == "42883",
        "label's body calls a dropped function: {code}"
    );
    Ok(())
}

const SCORE: &str = "CREATE FUNCTION score(x bigint, y double precision) RETURNS double precision
  LANGUAGE python AS $$
import math

def score(x, y):
    if x == 3:
        raise ValueError('three is not allowed')
    print('scoring', x)  # goes to the server log, not to the protocol
    return math.sqrt(x) * y
$$";

/// A Python function in a view: rows it fails on are NULL and kept with
/// their traceback in eddy_catalog.function_errors, the other rows are
/// scored, and the view keeps following its table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_functions_fail_only_the_rows_they_fail_on() -> anyhow::Result<()> {
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "{SCORE};
             CREATE TABLE points (x bigint PRIMARY KEY, y double precision);
             INSERT INTO points SELECT g, 2 FROM generate_series(1, 5) AS g(g);
             CREATE MATERIALIZED VIEW scored AS SELECT x, score(x, y) AS s FROM points;"
        ))
        .await?;
    ensure!(value(&client, "SELECT round(score(4, 1.5)::numeric, 2)").await? == "3.00");
    let got = rows(&client, "SELECT x, round(s::numeric, 3) FROM scored").await?;
    ensure!(
        got == ["1|2.000", "2|2.828", "3|NULL", "4|4.000", "5|4.472"],
        "{got:?}"
    );
    let errors = rows(
        &client,
        "SELECT function, arguments, message, traceback LIKE '%ValueError: three is not allowed%' \
         FROM eddy_catalog.function_errors",
    )
    .await?;
    ensure!(errors.len() == 1, "{errors:?}");
    ensure!(errors[0].starts_with("score|[3,2.0]|"), "{errors:?}");
    ensure!(
        errors[0].contains("three is not allowed") && errors[0].ends_with("|t"),
        "{errors:?}"
    );
    client
        .batch_execute("INSERT INTO points VALUES (9, 1); DELETE FROM points WHERE x = 1")
        .await?;
    ensure!(value(&client, "SELECT s FROM scored WHERE x = 9").await? == "3");
    ensure!(value(&client, "SELECT count(*) FROM scored").await? == "5");

    // A NULL argument reaches the function as None.
    client
        .batch_execute(
            "CREATE FUNCTION describe(t text) RETURNS text LANGUAGE python AS $$
def describe(t):
    return 'nothing' if t is None else t.upper()
$$",
        )
        .await?;
    ensure!(
        value(&client, "SELECT describe(NULL) || '/' || describe('abc')").await? == "nothing/ABC"
    );

    // A value of the wrong type is that row's error, not the batch's.
    client
        .batch_execute(
            "CREATE FUNCTION halve(x bigint) RETURNS double precision LANGUAGE python AS $$
def halve(x):
    return 'half' if x == 7 else x / 2
$$",
        )
        .await?;
    let halves = rows(
        &client,
        "SELECT g, halve(g) FROM generate_series(6, 8) AS t(g) ORDER BY g",
    )
    .await?;
    ensure!(halves == ["6|3", "7|NULL", "8|4"], "{halves:?}");
    let wrong = value(
        &client,
        "SELECT message FROM eddy_catalog.function_errors WHERE function = 'halve'",
    )
    .await?;
    ensure!(wrong.contains("wrong return type"), "{wrong}");

    // Definitions are checked at CREATE, by a worker.
    let (code, message, hint) = error_of(
        &client,
        "CREATE FUNCTION broken(x int) RETURNS int LANGUAGE python AS $$ def broken(x) return x $$",
    )
    .await?;
    ensure!(
        code == "22023" && message.contains("broken"),
        "{code} {message}"
    );
    ensure!(hint.is_some_and(|h| h.contains("SyntaxError")));
    let (code, message, _) = error_of(
        &client,
        "CREATE FUNCTION misnamed(x int) RETURNS int LANGUAGE python AS $$
def other(x):
    return x
$$",
    )
    .await?;
    ensure!(
        code == "22023" && message.contains("misnamed"),
        "{code} {message}"
    );

    // Both functions, and the view, are back after a restart.
    server.stop()?;
    server.restart()?;
    let client = server.connect().await?;
    ensure!(value(&client, "SELECT count(*) FROM scored WHERE s IS NULL").await? == "1");
    client
        .batch_execute("INSERT INTO points VALUES (16, 0.5)")
        .await?;
    ensure!(value(&client, "SELECT s FROM scored WHERE x = 16").await? == "2");
    ensure!(value(&client, "SELECT describe('x')").await? == "X");
    Ok(())
}

/// User code cannot block or crash the server: a call that hangs is cut
/// off after the timeout (that row alone), and a worker that dies takes
/// only its batch's rows, after which a fresh worker serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_and_crashing_python_code_leaves_the_server_running() -> anyhow::Result<()> {
    let server = TestServer::start_with(ServerOptions {
        env: vec![("EDDYDB_FUNCTION_TIMEOUT".into(), "1s".into())],
        ..ServerOptions::default()
    })?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE FUNCTION slow(x int) RETURNS int LANGUAGE python AS $$
import time

def slow(x):
    if x == 2:
        time.sleep(30)
    return x * 10
$$;
             CREATE FUNCTION fragile(x int) RETURNS int LANGUAGE python AS $$
import os

def fragile(x):
    if x < 0:
        os._exit(3)
    return x + 1
$$;
             CREATE TABLE nums (x int PRIMARY KEY);
             INSERT INTO nums VALUES (1), (2), (3);
             CREATE MATERIALIZED VIEW slowed AS SELECT x, slow(x) AS y FROM nums;",
        )
        .await?;
    ensure!(rows(&client, "SELECT * FROM slowed").await? == ["1|10", "2|NULL", "3|30"]);
    let timed_out = value(
        &client,
        "SELECT message FROM eddy_catalog.function_errors WHERE function = 'slow'",
    )
    .await?;
    ensure!(timed_out.contains("timed out"), "{timed_out}");

    ensure!(value(&client, "SELECT fragile(-1) IS NULL").await? == "t");
    let died = value(
        &client,
        "SELECT message FROM eddy_catalog.function_errors WHERE function = 'fragile'",
    )
    .await?;
    ensure!(died.contains("exit"), "{died}");
    ensure!(value(&client, "SELECT fragile(41)").await? == "42");
    wait_until(
        &client,
        "SELECT count(*) FROM eddy_catalog.function_errors",
        |n| n == "2",
    )
    .await?;
    Ok(())
}

/// The login-anomaly example (scenario 1), small: profiles equal the batch
/// answer, and the SQL and Python scores agree on every login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_anomaly_example_runs_as_its_readme_says() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let out = server.run_example(
        "login_anomaly.sh",
        &[
            ("LOGINS", "20000"),
            ("LOGIN_RATE", "4000"),
            ("USERS", "300"),
        ],
    )?;
    ensure!(
        out.contains("profiles differing from the batch answer: 0"),
        "{out}"
    );
    ensure!(
        out.contains("logins scored differently by SQL and Python: 0"),
        "{out}"
    );
    ensure!(out.contains("caught"), "{out}");
    Ok(())
}

/// A profile over a stream: its extremes and its sliced, ordered list keep
/// one value (or the slice) per user, since a stream never takes a row
/// back. It matches the batch answer after `kill -9` and holds far less
/// than the same view over a table, where any row may be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_over_a_stream_keep_only_what_insertions_can_change() -> anyhow::Result<()> {
    let mut server = TestServer::start_with(ServerOptions {
        checkpoint_interval: Some("100ms".into()),
        ..ServerOptions::default()
    })?;
    let client = server.connect().await?;
    let stream = "connector = 'datagen', generator = 'logins', generator.users = '200', \
                  datagen.rows = '40000', datagen.rows.per.second = '4000', \
                  datagen.start.time = '2026-01-01 00:00:00+00', datagen.seed = '9'";
    let profile = |from: &str| {
        format!(
            "SELECT user_id, count(*) AS logins, min(city) AS first_city, max(ts) AS last_login, \
               first_value(ip ORDER BY ts) AS first_ip, last_value(device ORDER BY ts) AS device, \
               (array_agg(city ORDER BY ts DESC))[1:3] AS recent \
             FROM {from} GROUP BY user_id"
        )
    };
    client
        .batch_execute(&format!(
            "CREATE SOURCE logins (user_id varchar, city varchar, ip varchar, device varchar, \
               ts timestamptz) WITH ({stream});
             CREATE TABLE logins_all (user_id varchar, city varchar, ip varchar, device varchar, \
               ts timestamptz) WITH ({stream});
             CREATE MATERIALIZED VIEW profiles AS {};",
            profile("logins")
        ))
        .await?;
    let explain = rows(&client, "EXPLAIN profiles").await?.join("\n");
    ensure!(
        explain.contains("keeping 3 (append-only input)"),
        "{explain}"
    );
    let progress = "SELECT coalesce(sum(logins), 0) FROM profiles";
    let client = crash_once_checkpointed(&mut server, &client, progress).await?;
    wait_for(&client, "SELECT sum(logins) FROM profiles", "40000").await?;
    wait_for(&client, "SELECT count(*) FROM logins_all", "40000").await?;
    let columns = "user_id, logins, first_city, last_login, first_ip, device, \
                   array_to_string(recent, ',')";
    let live = format!("SELECT {columns} FROM profiles");
    let batch = format!("SELECT {columns} FROM ({}) b", profile("logins_all"));
    let diff = value(
        &client,
        &format!(
            "SELECT count(*) FROM (({batch} EXCEPT {live}) UNION ALL ({live} EXCEPT {batch})) d"
        ),
    )
    .await?;
    ensure!(diff == "0", "{diff} profiles differ from the batch answer");
    ensure!(server.log_text().contains("recovered from checkpoint"));

    client
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW table_profiles AS {}",
            profile("logins_all")
        ))
        .await?;
    let explain = rows(&client, "EXPLAIN table_profiles").await?.join("\n");
    ensure!(!explain.contains("append-only"), "{explain}");
    let state = |view: &str| {
        format!(
            "SELECT sum(state_bytes) FROM eddy_catalog.operators \
             WHERE view = '{view}' AND operator LIKE 'Aggregate%'"
        )
    };
    let on_stream: i64 = value(&client, &state("profiles")).await?.parse()?;
    let on_table: i64 = value(&client, &state("table_profiles")).await?.parse()?;
    ensure!(
        on_stream * 5 < on_table,
        "{on_stream} bytes over the stream against {on_table} over the table"
    );
    Ok(())
}

/// Kills the server with `kill -9` once `progress` (a count of rows a view
/// has taken in) reaches 5,000 and a checkpoint is written (the backlogs
/// are due at once, so the stream may be read whole by then); restarts it
/// and returns a new client.
async fn crash_once_checkpointed(
    server: &mut TestServer,
    client: &tokio_postgres::Client,
    progress: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    wait_until(client, progress, |n| {
        n.parse::<i64>().is_ok_and(|n| n >= 5000)
    })
    .await?;
    wait_until(
        client,
        "SELECT count(*) > 0 FROM eddy_catalog.checkpoints",
        |v| v == "t",
    )
    .await?;
    server.kill9()?;
    server.restart()?;
    server.connect().await
}

const MEAN_GAP: &str = "CREATE AGGREGATE mean_gap(ts timestamptz) RETURNS double precision
  LANGUAGE python AS $$
def create_state():
    return {'first': None, 'last': None, 'n': 0}

def accumulate(state, ts):
    state['first'] = ts if state['first'] is None else min(state['first'], ts)
    state['last'] = ts if state['last'] is None else max(state['last'], ts)
    state['n'] += 1

def finish(state):
    if state['n'] < 2:
        return None
    return (state['last'] - state['first']).total_seconds() / (state['n'] - 1)
$$";

/// A Python aggregate keeps its per-user state in the view; the state is
/// checkpointed with it, so after `kill -9` the view goes on to exactly
/// the batch answer. It also works ad hoc, takes rows back with
/// `retract`, and fails only the groups whose rows it fails on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_aggregates_keep_their_state_through_a_crash() -> anyhow::Result<()> {
    let mut server = TestServer::start_with(ServerOptions {
        checkpoint_interval: Some("100ms".into()),
        ..ServerOptions::default()
    })?;
    let client = server.connect().await?;
    let stream = "connector = 'datagen', datagen.rows = '30000', datagen.rows.per.second = '3000', \
                  datagen.start.time = '2026-01-01 00:00:00+00', datagen.seed = '3', \
                  fields.user_id.kind = 'random', fields.user_id.min = '1', fields.user_id.max = '20'";
    client
        .batch_execute(&format!(
            "{MEAN_GAP};
             CREATE SOURCE logins (user_id int, ts timestamptz) WITH ({stream});
             CREATE TABLE logins_all (user_id int, ts timestamptz) WITH ({stream});
             CREATE MATERIALIZED VIEW gaps AS
               SELECT user_id, count(*) AS n, mean_gap(ts) AS gap FROM logins GROUP BY user_id;"
        ))
        .await?;
    let progress = "SELECT coalesce(sum(n), 0) FROM gaps";
    let client = crash_once_checkpointed(&mut server, &client, progress).await?;
    wait_for(&client, "SELECT sum(n) FROM gaps", "30000").await?;
    wait_for(&client, "SELECT count(*) FROM logins_all", "30000").await?;
    // The batch answer: the same aggregate over every row.
    let expected = "SELECT user_id, count(*), round(CAST(mean_gap(ts) AS numeric), 9) \
                    FROM logins_all GROUP BY user_id";
    let live = "SELECT user_id, n, round(CAST(gap AS numeric), 9) FROM gaps";
    let diff = value(
        &client,
        &format!("SELECT count(*) FROM (({expected} EXCEPT {live}) UNION ALL ({live} EXCEPT {expected})) d"),
    )
    .await?;
    ensure!(diff == "0", "{diff} groups differ from the batch answer");
    ensure!(server.log_text().contains("recovered from checkpoint"));

    // Retractions, errors in one group, definitions checked at CREATE.
    client
        .batch_execute(
            "CREATE AGGREGATE total(v int) RETURNS bigint LANGUAGE python AS $$
def create_state():
    return 0

def accumulate(state, v):
    if v == 13:
        raise ValueError('unlucky')
    return state + v

def retract(state, v):
    return state - v

def finish(state):
    return state
$$;
             CREATE TABLE items (id int PRIMARY KEY, k text, v int);
             INSERT INTO items VALUES (1, 'a', 1), (2, 'a', 2), (3, 'b', 13), (4, 'b', 4);
             CREATE MATERIALIZED VIEW totals AS SELECT k, total(v) AS t FROM items GROUP BY k;
             DELETE FROM items WHERE id = 1;",
        )
        .await?;
    ensure!(rows(&client, "SELECT * FROM totals").await? == ["a|2", "b|4"]);
    ensure!(value(&client, "SELECT total(v) FROM items WHERE k = 'a'").await? == "2");
    let errors = value(
        &client,
        "SELECT count(*) FROM eddy_catalog.function_errors \
         WHERE function = 'total' AND message LIKE '%unlucky%'",
    )
    .await?;
    ensure!(errors != "0");
    let (code, _, hint) = error_of(
        &client,
        "CREATE AGGREGATE broken(v int) RETURNS int LANGUAGE python AS $$
def accumulate(state, v):
    return state
def finish(state):
    return state
$$",
    )
    .await?;
    ensure!(
        code == "22023" && hint.is_some_and(|h| h.contains("create_state")),
        "{code}"
    );
    client.batch_execute("DROP AGGREGATE total CASCADE").await?;
    ensure!(
        value(
            &client,
            "SELECT count(*) FROM pg_matviews WHERE matviewname = 'totals'"
        )
        .await?
            == "0"
    );
    Ok(())
}
