//! Real clients against a real `eddydb` process: psql's describe commands and
//! `\copy`, a Python psycopg 3 session (tests/python/psycopg_smoke.py),
//! pgbench with a custom script, pgjdbc metadata and prepared statements
//! (tests/java/Metadata.java), and `kill -9` durability of acknowledged
//! writes (including a crash in the middle of a COPY).
//!
//! Each test starts its own server in a fresh data directory. The external
//! programs must be installed (scripts/test.sh does it); a missing one fails
//! the test with the install hint rather than skipping it.

#[path = "support/query.rs"]
mod query;
#[path = "support/server.rs"]
mod server;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::task::Poll;

use anyhow::{bail, ensure, Context};
use futures::SinkExt;
use query::copy_rows;
use server::TestServer;

/// What an external client printed.
struct ClientOutput {
    stdout: String,
    stderr: String,
}

/// Runs an external client, failing with its output when it exits non-zero.
fn run_client(mut command: Command, what: &str) -> anyhow::Result<ClientOutput> {
    let output: Output = command
        .output()
        .with_context(|| format!("running {what} (install it with scripts/test.sh)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!(
            "{what} failed with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            output.status
        );
    }
    Ok(ClientOutput { stdout, stderr })
}

/// psql with no psqlrc, stopping at the first error, in unaligned output.
fn psql(server: &TestServer, script: &str) -> anyhow::Result<String> {
    let path = server.scratch_dir().join("script.psql");
    std::fs::write(&path, script)?;
    let mut command = Command::new("psql");
    command
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-A", "-h", "127.0.0.1", "-p"])
        .arg(server.port().to_string())
        .args(["-U", "eddy", "-d", "eddy", "-f"])
        .arg(&path)
        .env("PGCONNECT_TIMEOUT", "30")
        .current_dir(server.scratch_dir());
    Ok(run_client(command, "psql")?.stdout)
}

fn assert_has_line(output: &str, wanted: &str) {
    assert!(
        output.lines().any(|line| line == wanted),
        "expected the line {wanted:?} in:\n{output}"
    );
}

fn assert_has_line_starting(output: &str, prefix: &str) {
    assert!(
        output.lines().any(|line| line.starts_with(prefix)),
        "expected a line starting with {prefix:?} in:\n{output}"
    );
}

#[test]
fn psql_describe_commands() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    psql(
        &server,
        "CREATE TABLE items (id int PRIMARY KEY, name varchar(20) NOT NULL, qty int DEFAULT 0, \
         price numeric(10,2), seen timestamptz);\n\
         CREATE TABLE other (k text);\n",
    )?;
    let tables = psql(&server, "\\dt\n")?;
    assert_has_line_starting(&tables, "public|items|table|");
    assert_has_line_starting(&tables, "public|other|table|");

    let described = psql(&server, "\\d items\n")?;
    assert!(described.contains("Table \"public.items\""), "{described}");
    assert_has_line(&described, "id|integer||not null|");
    assert_has_line(&described, "name|character varying(20)||not null|");
    assert_has_line(&described, "qty|integer|||0");
    assert_has_line(&described, "price|numeric(10,2)|||");
    assert_has_line(&described, "seen|timestamp with time zone|||");
    let pk = described
        .lines()
        .find(|line| line.contains("\"items_pkey\" PRIMARY KEY"))
        .with_context(|| format!("no primary key index in:\n{described}"))?;
    assert!(pk.trim_end().ends_with("(id)"), "{pk}");

    let databases = psql(&server, "\\l\n")?;
    assert_has_line_starting(&databases, "eddy|");
    let schemas = psql(&server, "\\dn\n")?;
    assert_has_line_starting(&schemas, "public|");
    Ok(())
}

#[test]
fn psql_copy_csv_in_and_text_out() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let csv = server.scratch_dir().join("people.csv");
    std::fs::write(
        &csv,
        "id,name,city,score\n\
         1,ann,Oslo,1.5\n\
         2,\"bob, jr\",\"say \"\"hi\"\"\",\n\
         3,cid,,-2\n",
    )?;
    let out = psql(
        &server,
        "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, city text, score double precision);\n\
         \\copy people FROM 'people.csv' CSV HEADER\n\
         \\copy (SELECT id, name, city, score FROM people ORDER BY id) TO STDOUT\n\
         \\copy (SELECT id, name, city FROM people WHERE id > 1 ORDER BY id) TO STDOUT CSV HEADER\n",
    )?;
    let expected = "CREATE TABLE\n\
                    COPY 3\n\
                    1\tann\tOslo\t1.5\n\
                    2\tbob, jr\tsay \"hi\"\t\\N\n\
                    3\tcid\t\\N\t-2\n\
                    id,name,city\n\
                    2,\"bob, jr\",\"say \"\"hi\"\"\"\n\
                    3,cid,\n";
    assert_eq!(out, expected);
    Ok(())
}

fn python_path() -> PathBuf {
    match std::env::var_os("EDDYDB_TEST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python"),
    }
}

#[test]
fn psycopg_smoke_script() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/psycopg_smoke.py");
    let mut command = Command::new(python_path());
    command.arg(script).arg(server.port().to_string());
    let out = run_client(command, "python (psycopg venv)")?.stdout;
    assert!(out.contains("psycopg smoke: ok"), "{out}");
    Ok(())
}

const PGBENCH_ACCOUNTS: i32 = 1000;
const PGBENCH_CLIENTS: u32 = 4;
const PGBENCH_TRANSACTIONS: u32 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_custom_script() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE TABLE accounts (aid int PRIMARY KEY, abalance int, filler text)")
        .await?;
    let rows: String = (1..=PGBENCH_ACCOUNTS)
        .map(|aid| format!("{aid}\t0\t{}\n", "x".repeat(84)))
        .collect();
    copy_rows(&client, "COPY accounts FROM STDIN", rows.into_bytes()).await?;

    let script = server.scratch_dir().join("bench.sql");
    std::fs::write(
        &script,
        format!(
            "\\set aid random(1, {PGBENCH_ACCOUNTS})\n\
             SELECT abalance FROM accounts WHERE aid = :aid;\n\
             UPDATE accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"
        ),
    )?;
    let mut command = Command::new("pgbench");
    command
        .args([
            "-n",
            // Break failures down by SQLSTATE class and print each one.
            "--failures-detailed",
            "--verbose-errors",
            "-M",
            "prepared",
            "-j",
            "2",
            "-h",
            "127.0.0.1",
            "-U",
            "eddy",
        ])
        .args(["-c", &PGBENCH_CLIENTS.to_string()])
        .args(["-t", &PGBENCH_TRANSACTIONS.to_string()])
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-f")
        .arg(&script)
        .arg("eddy");
    let out = tokio::task::spawn_blocking(move || run_client(command, "pgbench")).await??;
    let report = format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr);
    let total = PGBENCH_CLIENTS * PGBENCH_TRANSACTIONS;
    let processed = format!("number of transactions actually processed: {total}/{total}");
    assert!(out.stdout.contains(&processed), "{report}");
    assert!(
        out.stdout
            .contains("number of failed transactions: 0 (0.000%)"),
        "{report}"
    );
    // Every transaction added 1 to one balance: a lost update shows here.
    let sum: i64 = client
        .query_one("SELECT sum(abalance)::bigint FROM accounts", &[])
        .await?
        .get(0);
    assert_eq!(sum, i64::from(total));
    Ok(())
}

/// COPY checks a column's declared type the way INSERT does: invalid JSON
/// for `jsonb` (22P02) and an over-long `varchar(n)` value (22001) fail the
/// whole COPY, which stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_checks_json_and_varchar_columns() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE TABLE docs (id bigint PRIMARY KEY, tag varchar(3), body jsonb)")
        .await?;
    let statement = "COPY docs FROM STDIN";
    for (data, sqlstate) in [
        ("1\tok\t{\"a\": 1}\n2\tok\t{bad\n", "22P02"),
        ("1\tok\t{}\n2\ttoo long\t{}\n", "22001"),
    ] {
        let error = copy_rows(&client, statement, data.as_bytes().to_vec())
            .await
            .expect_err("the COPY must fail");
        let db = error
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .with_context(|| format!("not a database error: {error:#}"))?;
        assert_eq!(db.code().code(), sqlstate, "{db:?}");
    }
    let stored = copy_rows(&client, statement, b"3\tok\t[1, 2]\n".to_vec()).await?;
    assert_eq!(stored, 1);
    let rows = client.query("SELECT id, body::text FROM docs", &[]).await?;
    let rows: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, vec![(3, "[1, 2]".to_string())]);
    Ok(())
}

/// A COPY large enough to be decoded on several threads reports the first
/// bad line as one thread would (its line number, nothing stored), and
/// stores every row of a good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_copy_fails_at_its_first_bad_line_and_stores_every_row() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE TABLE big (id bigint, body text)")
        .await?;
    let line = |id: u64| format!("{id},\"row {id}, quoted\"\n");
    let mut data: String = (1..=60_000).map(line).collect();
    // Lines 40,001 and 50,001 are bad; the first is reported.
    data = data
        .replacen("40001,", "forty,", 1)
        .replacen("50001,", "fifty,", 1);
    let statement = "COPY big FROM STDIN WITH (FORMAT csv)";
    let error = copy_rows(&client, statement, data.into_bytes())
        .await
        .expect_err("the COPY must fail");
    let db = error
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
        .with_context(|| format!("not a database error: {error:#}"))?;
    assert_eq!(db.code().code(), "22P02", "{db:?}");
    assert!(db.message().contains("\"forty\""), "{db:?}");
    assert_eq!(db.where_(), Some("COPY big, line 40001, column id"));
    let count: i64 = client
        .query_one("SELECT count(*) FROM big", &[])
        .await?
        .get(0);
    assert_eq!(count, 0);

    let data: String = (1..=60_000).map(line).collect();
    assert_eq!(
        copy_rows(&client, statement, data.into_bytes()).await?,
        60_000
    );
    // Every row once (the decoder's unit test checks their order).
    let row = client
        .query_one(
            "SELECT count(DISTINCT id), min(id), max(id), sum(id), \
             count(*) FILTER (WHERE body = 'row ' || id || ', quoted') FROM big",
            &[],
        )
        .await?;
    let got: (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(got, (60_000, 1, 60_000, 1_800_030_000, 60_000));
    Ok(())
}

/// (count, sum of id) of a table, the fingerprint the crash tests compare.
async fn fingerprint(client: &tokio_postgres::Client, table: &str) -> anyhow::Result<(i64, i64)> {
    let row = client
        .query_one(
            &format!("SELECT count(*), coalesce(sum(id), 0)::bigint FROM {table}"),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

fn id_range_fingerprint(ids: std::ops::Range<i64>) -> (i64, i64) {
    (ids.end - ids.start, ids.sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_acknowledged_writes() -> anyhow::Result<()> {
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE TABLE durable (id bigint PRIMARY KEY, body text NOT NULL)")
        .await?;
    // Single-row inserts, then one multi-row insert, then a COPY: each
    // acknowledged before the next starts.
    for id in 0..200i64 {
        client
            .execute(
                "INSERT INTO durable VALUES ($1, $2)",
                &[&id, &format!("row {id}")],
            )
            .await?;
    }
    let values: Vec<String> = (200..1200)
        .map(|id| format!("({id}, 'multi {id}')"))
        .collect();
    let inserted = client
        .execute(
            &format!("INSERT INTO durable VALUES {}", values.join(",")),
            &[],
        )
        .await?;
    assert_eq!(inserted, 1000);
    let copied: String = (1200..21200)
        .map(|id| format!("{id}\tcopy {id}\n"))
        .collect();
    let copied = copy_rows(&client, "COPY durable FROM STDIN", copied.into_bytes()).await?;
    assert_eq!(copied, 20000);
    client
        .execute("UPDATE durable SET body = 'updated' WHERE id < 10", &[])
        .await?;
    client
        .execute("DELETE FROM durable WHERE id >= 21100", &[])
        .await?;

    server.kill9()?;
    drop(client);
    server.restart()?;

    let client = server.connect().await?;
    assert_eq!(
        fingerprint(&client, "durable").await?,
        id_range_fingerprint(0..21100)
    );
    let updated: i64 = client
        .query_one("SELECT count(*) FROM durable WHERE body = 'updated'", &[])
        .await?
        .get(0);
    assert_eq!(updated, 10);
    let body: String = client
        .query_one("SELECT body FROM durable WHERE id = 20000", &[])
        .await?
        .get(0);
    assert_eq!(body, "copy 20000");
    Ok(())
}

/// SIGTERM and SIGINT both shut the server down cleanly (exit status 0) and
/// everything written before survives the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_shut_down_cleanly() -> anyhow::Result<()> {
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE kept (id bigint PRIMARY KEY); INSERT INTO kept VALUES (1), (2)",
        )
        .await?;
    drop(client);
    for (signal, id) in [("TERM", 3i64), ("INT", 4)] {
        let status = server.stop_with_signal(signal)?;
        assert!(status.success(), "exit status after SIG{signal}: {status}");
        server.restart()?;
        let client = server.connect().await?;
        client
            .execute("INSERT INTO kept VALUES ($1)", &[&id])
            .await?;
        let (count, sum) = fingerprint(&client, "kept").await?;
        assert_eq!((count, sum), (id, (1..=id).sum()), "after SIG{signal}");
    }
    Ok(())
}

const CRASH_COPY_ROWS: i64 = 200_000;
const CRASH_COPY_CHUNK: i64 = 10_000;

fn copy_chunk(start: i64) -> Cursor<Vec<u8>> {
    let text: String = (start..start + CRASH_COPY_CHUNK)
        .map(|id| format!("{id}\tcopied row {id} with some padding text\n"))
        .collect();
    Cursor::new(text.into_bytes())
}

/// Where in a COPY the server is crashed.
#[derive(Clone, Copy, Debug)]
enum CrashPoint {
    /// With 90% of the data sent and no CopyDone: the COPY cannot commit.
    MidData,
    /// Right after CopyDone is handed to the connection, then after this many
    /// acknowledged INSERTs from another session (each a round trip, so the
    /// crash lands progressively later in the server's commit).
    AfterCopyDone { probes: i64 },
}

/// Streams a large COPY from a second client and crashes the server while
/// the COPY is in flight, at several points. Every time the table holds all
/// of that COPY's rows or none (all of them if the COPY was acknowledged),
/// and every row acknowledged before, or meanwhile by another session,
/// survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_copy_is_all_or_nothing() -> anyhow::Result<()> {
    let mut server = TestServer::start()?;
    let mut writer = server.connect().await?;
    writer
        .batch_execute("CREATE TABLE log (id bigint PRIMARY KEY, body text)")
        .await?;
    let earlier: String = (0..1000).map(|id| format!("{id}\tearlier\n")).collect();
    copy_rows(&writer, "COPY log FROM STDIN", earlier.into_bytes()).await?;
    let mut acknowledged = id_range_fingerprint(0..1000);
    let points = [
        CrashPoint::MidData,
        CrashPoint::AfterCopyDone { probes: 0 },
        CrashPoint::AfterCopyDone { probes: 3 },
        CrashPoint::AfterCopyDone { probes: 30 },
    ];
    for (round, point) in (1i64..).zip(points) {
        let base = round * 1_000_000;
        let copy_acked =
            copy_then_crash(&mut server, &writer, base, point, &mut acknowledged).await?;
        server.restart()?;
        writer = server.connect().await?;
        let found = fingerprint(&writer, "log").await?;
        let copy = id_range_fingerprint(base..base + CRASH_COPY_ROWS);
        let with_copy = (acknowledged.0 + copy.0, acknowledged.1 + copy.1);
        let allowed = match (point, copy_acked) {
            (_, true) => found == with_copy,
            (CrashPoint::MidData, false) => found == acknowledged,
            (CrashPoint::AfterCopyDone { .. }, false) => {
                found == acknowledged || found == with_copy
            }
        };
        assert!(
            allowed,
            "{point:?} (COPY acknowledged: {copy_acked}): table holds (count, sum) = {found:?}; \
             acknowledged rows {acknowledged:?}, with the whole COPY {with_copy:?}"
        );
        let copy_kept = found == with_copy;
        eprintln!("{point:?}: COPY acknowledged {copy_acked}, kept after the crash {copy_kept}");
        acknowledged = found;
    }
    // Each kept COPY is a record file of its own beside sled; a DROP
    // removes them with the table.
    let records = server.data_dir().join("tables");
    let files = |dir: &Path| {
        walk_files(dir)
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "record"))
            .count()
    };
    ensure!(
        files(&records) > 0,
        "no record files in {}",
        records.display()
    );
    writer.batch_execute("DROP TABLE log").await?;
    ensure!(files(&records) == 0, "record files left after DROP TABLE");
    Ok(())
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| match e.path().is_dir() {
            true => walk_files(&e.path()),
            false => vec![e.path()],
        })
        .collect()
}

/// Runs one COPY of `CRASH_COPY_ROWS` rows from a new session, with INSERTs
/// from `writer` meanwhile (added to `acknowledged`), and kills the server
/// at `point`. Returns whether the COPY was acknowledged before the kill.
async fn copy_then_crash(
    server: &mut TestServer,
    writer: &tokio_postgres::Client,
    base: i64,
    point: CrashPoint,
    acknowledged: &mut (i64, i64),
) -> anyhow::Result<bool> {
    let copier = server.connect().await?;
    let sink = copier
        .copy_in::<_, Cursor<Vec<u8>>>("COPY log FROM STDIN")
        .await?;
    futures::pin_mut!(sink);
    let (rows, probes) = match point {
        CrashPoint::MidData => (CRASH_COPY_ROWS * 9 / 10, 1),
        CrashPoint::AfterCopyDone { probes } => (CRASH_COPY_ROWS, probes),
    };
    for start in (0..rows).step_by(CRASH_COPY_CHUNK as usize) {
        sink.feed(copy_chunk(base + start)).await?;
    }
    sink.flush().await?;
    // One poll hands CopyDone to the connection task; a second one, after
    // the probes, tells whether the server has acknowledged the COPY.
    if matches!(point, CrashPoint::AfterCopyDone { .. }) {
        let _ = poll_finish_once(sink.as_mut()).await;
    }
    for i in 0..probes {
        insert_during_copy(writer, base - 1 - i, acknowledged).await?;
    }
    let copy_acked = match point {
        CrashPoint::MidData => false,
        CrashPoint::AfterCopyDone { .. } => {
            matches!(poll_finish_once(sink.as_mut()).await, Poll::Ready(Ok(_)))
        }
    };
    // The copier stays open until the kill, so the server sees a crash
    // rather than a client that went away.
    server.kill9()?;
    drop(copier);
    Ok(copy_acked)
}

/// Polls a COPY's completion exactly once: the first poll sends CopyDone,
/// a later one reports whether the server has acknowledged the COPY.
async fn poll_finish_once(
    mut sink: std::pin::Pin<&mut tokio_postgres::CopyInSink<Cursor<Vec<u8>>>>,
) -> Poll<Result<u64, tokio_postgres::Error>> {
    futures::future::poll_fn(|cx| Poll::Ready(sink.as_mut().poll_finish(cx))).await
}

/// Another session commits a row while a COPY is open; an open COPY must not
/// block other writers (a stalled loader would otherwise stop everyone).
async fn insert_during_copy(
    writer: &tokio_postgres::Client,
    id: i64,
    acknowledged: &mut (i64, i64),
) -> anyhow::Result<()> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
    let insert = writer.execute("INSERT INTO log VALUES ($1, 'during')", &params);
    tokio::time::timeout(std::time::Duration::from_secs(30), insert)
        .await
        .context("an INSERT from another session blocked while a COPY was open")??;
    *acknowledged = (acknowledged.0 + 1, acknowledged.1 + id);
    Ok(())
}

/// Debian's libpostgresql-jdbc-java puts pgjdbc here (scripts/test.sh installs it).
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// pgjdbc's DatabaseMetaData (tables, columns, primary keys) and prepared
/// statements in its default extended-protocol mode, via
/// tests/java/Metadata.java compiled into the server's scratch directory.
#[test]
fn jdbc_metadata_and_prepared_statements() -> anyhow::Result<()> {
    if !Path::new(PGJDBC_JAR).is_file() {
        bail!("{PGJDBC_JAR} is missing: install libpostgresql-jdbc-java (scripts/test.sh does)");
    }
    let server = TestServer::start()?;
    psql(
        &server,
        "CREATE TABLE orders (id int PRIMARY KEY, name varchar(20) NOT NULL, \
         amount numeric(10,2), at timestamptz DEFAULT now());\n",
    )?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/Metadata.java");
    let mut javac = Command::new("javac");
    javac
        .args(["-cp", PGJDBC_JAR, "-d"])
        .arg(server.scratch_dir())
        .arg(source);
    run_client(javac, "javac (a JDK)")?;

    let classpath = format!("{PGJDBC_JAR}:{}", server.scratch_dir().display());
    // socketTimeout turns a server that never answers into a failure
    // rather than a hung test.
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/eddy?user=eddy&socketTimeout=120",
        server.port()
    );
    let mut java = Command::new("java");
    java.args(["-cp", &classpath, "Metadata", &url]);
    let out = run_client(java, "java (a JRE)")?.stdout;

    let tables: Vec<&str> = out.lines().filter(|l| l.starts_with("table ")).collect();
    assert_eq!(tables, ["table public.orders type=TABLE"], "{out}");
    // getColumns orders its rows by ordinal position.
    let columns: Vec<&str> = out.lines().filter(|l| l.starts_with("column ")).collect();
    let expected_columns = [
        "column orders.id int4 10 nullable=0",
        "column orders.name varchar 20 nullable=0",
        "column orders.amount numeric 10 nullable=1",
        "column orders.at timestamptz 35 nullable=1",
    ];
    assert_eq!(columns, expected_columns, "{out}");
    assert_has_line(&out, "scale orders.amount 2");
    assert_has_line(&out, "default orders.at now()");
    let pks: Vec<&str> = out.lines().filter(|l| l.starts_with("pk ")).collect();
    assert_eq!(pks, ["pk orders.id seq=1 name=orders_pkey"], "{out}");
    assert_has_line(&out, "inserted 1");
    let selects: Vec<&str> = out.lines().filter(|l| l.starts_with("row")).collect();
    let one_pair = ["row ada", "rows id=1 1", "rows id=2 0"];
    assert_eq!(selects, one_pair.repeat(3), "{out}");
    assert_has_line(&out, "jdbc metadata: ok");
    Ok(())
}
