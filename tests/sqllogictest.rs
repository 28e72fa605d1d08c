//! The sqllogictest runner (`harness = false`): every `sqllogictest/**/*.slt`
//! file runs against its own fresh `eddydb` server and data directory over
//! tokio-postgres, two files at a time, and the run closes with the line
//! `N passed, N failed`.
//!
//! Usage (`cargo test --test sqllogictest -- [OPTIONS] [FILTER...]`):
//! - `FILTER`: run only files whose path (relative to `sqllogictest/`)
//!   contains one of the filters (`--exact`: equals one).
//! - `--complete`: rewrite the expected output of the selected files.
//! - `--server postgres://user@host:port/db`: run against an already running
//!   server (files run one at a time; they must clean up after themselves).
//!   The engine label for `onlyif`/`skipif` is then `postgres`, else `eddydb`;
//!   `--engine NAME` overrides it.
//! - `--test-threads N`: files run at once (default 2).
//! - `--list` prints the files in libtest's terse format, so test runners that
//!   list before running (nextest) can drive this binary.
//!
//! Errors render as `db error: ERROR: 42P01: relation "nope" does not exist`,
//! so `statement error 42P01` (regex over the text) and `statement error
//! (42P01)` (SQLSTATE) both work. Column types are checked: `I` integers, `R`
//! float/numeric, `T` text types, and any other letter for every other type.

#[path = "support/server.rs"]
mod server;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType, Record, Runner};
use tokio_postgres::types::Type;
use tokio_postgres::SimpleQueryMessage;

/// Failures reported per file before the rest are only counted.
const MAX_REPORTED_FAILURES: usize = 20;

#[derive(Debug, Default)]
struct Args {
    complete: bool,
    server: Option<String>,
    engine: Option<String>,
    filters: Vec<String>,
    exact: bool,
    list: bool,
    ignored: bool,
    threads: Option<usize>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--complete" => args.complete = true,
            "--server" => args.server = Some(value("--server")?),
            "--engine" => args.engine = Some(value("--engine")?),
            "--exact" => args.exact = true,
            "--list" => args.list = true,
            "--ignored" => args.ignored = true,
            "--test-threads" => {
                let n = value("--test-threads")?;
                let n = n.parse().map_err(|_| format!("bad --test-threads {n:?}"))?;
                args.threads = Some(n);
            }
            // libtest options that runners pass and that mean nothing here.
            "--nocapture" | "--quiet" | "-q" | "--show-output" => {}
            "--format" | "--color" => {
                value(&flag)?;
            }
            f if f.starts_with('-') => return Err(format!("unknown option {f}")),
            _ => args.filters.push(arg),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("sqllogictest: {msg}");
            return ExitCode::from(2);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sqllogictest");
    let files = match discover(&root) {
        Ok(files) => select(files, &root, &args),
        Err(err) => {
            eprintln!("sqllogictest: cannot read {}: {err}", root.display());
            return ExitCode::FAILURE;
        }
    };
    if args.list {
        if !args.ignored {
            for (name, _) in &files {
                println!("{name}: test");
            }
        }
        return ExitCode::SUCCESS;
    }
    let (passed, failed) = run_all(files, &args);
    println!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// All `.slt` files under `dir`, recursively, in path order.
fn discover(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "slt") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Names each file by its path below `root` and applies the filters.
fn select(files: Vec<PathBuf>, root: &Path, args: &Args) -> Vec<(String, PathBuf)> {
    files
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            (name, path)
        })
        .filter(|(name, _)| {
            args.filters.is_empty()
                || args.filters.iter().any(|f| {
                    if args.exact {
                        name == f
                    } else {
                        name.contains(f.as_str())
                    }
                })
        })
        .collect()
}

/// What one file's run came to.
struct FileReport {
    name: String,
    elapsed: Duration,
    failures: Vec<String>,
}

/// Runs the files on a small pool of threads, each with its own
/// single-threaded tokio runtime, and prints each file's result as it ends.
fn run_all(files: Vec<(String, PathBuf)>, args: &Args) -> (usize, usize) {
    let threads = match (&args.server, args.threads) {
        // Files share the one database of an external server.
        (Some(_), _) => 1,
        (None, Some(n)) => n.max(1),
        (None, None) => 2,
    };
    let queue = Mutex::new(files.into_iter().collect::<VecDeque<_>>());
    let (tx, rx) = mpsc::channel::<FileReport>();
    let (mut passed, mut failed) = (0, 0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let queue = &queue;
            scope.spawn(move || loop {
                let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                let Some((name, path)) = next else { break };
                if tx.send(run_one(name, &path, args)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for report in rx {
            print_report(&report);
            if report.failures.is_empty() {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    });
    (passed, failed)
}

fn print_report(report: &FileReport) {
    let secs = report.elapsed.as_secs_f64();
    if report.failures.is_empty() {
        println!("ok      {} ({secs:.1}s)", report.name);
        return;
    }
    let mut text = format!("FAILED  {} ({secs:.1}s)\n", report.name);
    for failure in &report.failures {
        for line in failure.lines() {
            text.push_str("    ");
            text.push_str(line);
            text.push('\n');
        }
    }
    print!("{text}");
}

fn run_one(name: String, path: &Path, args: &Args) -> FileReport {
    let started = Instant::now();
    let failures = match run_file_blocking(path, args) {
        Ok(failures) => failures,
        Err(err) => vec![format!("{err:#}")],
    };
    FileReport {
        name,
        elapsed: started.elapsed(),
        failures,
    }
}

/// Starts the file's server (unless `--server`), then runs or completes it.
fn run_file_blocking(path: &Path, args: &Args) -> anyhow::Result<Vec<String>> {
    let mut server = None;
    let config = match &args.server {
        Some(url) => url.parse::<tokio_postgres::Config>()?,
        None => server.insert(server::TestServer::start()?).pg_config(),
    };
    let engine = match (&args.engine, &args.server) {
        (Some(engine), _) => engine.clone(),
        (None, Some(_)) => "postgres".to_string(),
        (None, None) => "eddydb".to_string(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let mut runner = Runner::new(move || PgDb::connect(config.clone(), engine.clone()));
        runner.with_column_validator(sqllogictest::strict_column_validator);
        let outcome = if args.complete {
            complete_file(&mut runner, path).await
        } else {
            run_records(&mut runner, path).await
        };
        runner.shutdown_async().await;
        outcome
    });
    if let (Ok(failures), Some(server)) = (&result, &server) {
        if !failures.is_empty() {
            return Ok(with_log_tail(failures.clone(), server));
        }
    }
    result
}

fn with_log_tail(mut failures: Vec<String>, server: &server::TestServer) -> Vec<String> {
    failures.push(format!("server log tail:\n{}", server.log_tail()));
    failures
}

type PgRunner<M> = Runner<PgDb, M>;

/// Runs every record, collecting failures instead of stopping at the first,
/// so one report shows everything a server change broke.
async fn run_records<M>(runner: &mut PgRunner<M>, path: &Path) -> anyhow::Result<Vec<String>>
where
    M: sqllogictest::MakeConnection<Conn = PgDb>,
{
    let records = sqllogictest::parse_file::<DefaultColumnType>(path)?;
    let mut failures = Vec::new();
    let mut failed = 0usize;
    for record in records {
        if let Record::Halt { .. } = record {
            break;
        }
        if let Err(err) = runner.run_async(record).await {
            failed += 1;
            if failures.len() < MAX_REPORTED_FAILURES {
                failures.push(format!("{}\n", err.display(false)));
            }
        }
    }
    if failed > failures.len() {
        failures.push(format!("... and {} more failures", failed - failures.len()));
    }
    Ok(failures)
}

async fn complete_file<M>(runner: &mut PgRunner<M>, path: &Path) -> anyhow::Result<Vec<String>>
where
    M: sqllogictest::MakeConnection<Conn = PgDb>,
{
    runner
        .update_test_file(
            path,
            " ",
            sqllogictest::default_validator,
            sqllogictest::default_normalizer,
            sqllogictest::strict_column_validator,
        )
        .await
        .map_err(|err| anyhow::anyhow!("completing {}: {err}", path.display()))?;
    Ok(Vec::new())
}

/// A server error as the `.slt` files see it.
#[derive(Debug)]
struct PgError {
    sqlstate: Option<String>,
    text: String,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(err: tokio_postgres::Error) -> PgError {
        match err.as_db_error() {
            Some(db) => PgError {
                sqlstate: Some(db.code().code().to_string()),
                text: format!(
                    "db error: {}: {}: {}",
                    db.severity(),
                    db.code().code(),
                    db.message()
                ),
            },
            None => PgError {
                sqlstate: None,
                text: format!("client error: {err}"),
            },
        }
    }
}

/// One tokio-postgres session of a test file.
struct PgDb {
    client: tokio_postgres::Client,
    engine: String,
}

impl PgDb {
    async fn connect(config: tokio_postgres::Config, engine: String) -> Result<PgDb, PgError> {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            // Ends with an error only when the server goes away, which the
            // next statement reports.
            let _ = connection.await;
        });
        Ok(PgDb { client, engine })
    }

    /// Column types of a row-returning statement, from a Describe of the
    /// same text; `Any` for every column when it cannot be described
    /// (several statements in one record, say).
    async fn column_types(&self, sql: &str, columns: usize) -> Vec<DefaultColumnType> {
        match self.client.prepare(sql).await {
            Ok(stmt) if stmt.columns().len() == columns => {
                stmt.columns().iter().map(|c| letter(c.type_())).collect()
            }
            _ => vec![DefaultColumnType::Any; columns],
        }
    }
}

fn letter(ty: &Type) -> DefaultColumnType {
    if [Type::INT2, Type::INT4, Type::INT8, Type::OID].contains(ty) {
        DefaultColumnType::Integer
    } else if [Type::FLOAT4, Type::FLOAT8, Type::NUMERIC].contains(ty) {
        DefaultColumnType::FloatingPoint
    } else if [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::CHAR,
    ]
    .contains(ty)
    {
        DefaultColumnType::Text
    } else {
        DefaultColumnType::Any
    }
}

fn render(value: Option<&str>) -> String {
    match value {
        None => "NULL".to_string(),
        Some("") => "(empty)".to_string(),
        Some(text) => text.to_string(),
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for PgDb {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let messages = self.client.simple_query(sql).await?;
        let mut columns = None;
        let mut rows = Vec::new();
        let mut count = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(cols) => {
                    columns.get_or_insert(cols.len());
                }
                SimpleQueryMessage::Row(row) => {
                    rows.push((0..row.len()).map(|i| render(row.get(i))).collect());
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: self.column_types(sql, n).await,
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(count)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        &self.engine
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.sqlstate.clone()
    }
}
