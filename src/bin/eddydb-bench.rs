//! `eddydb-bench`: the benchmarks of EddyDB, as a program that prints
//! figures (it never asserts on timings).
//!
//! - `copy`: bulk load through `COPY ... FROM STDIN` driven by `psql`, with a
//!   5-column row stream generated on the fly; reports rows/s, bytes and the
//!   server's peak RSS.
//! - `pgbench`: primary-key point lookups with `pgbench -M prepared` against a
//!   fresh EddyDB and a throwaway PostgreSQL cluster, side by side.
//! - `view-latency`: one-row INSERT, then a read of the materialized view by
//!   key, checked for read-your-writes; latency percentiles and backfill time.
//! - `view-copy`: COPY into a table a join+aggregate view depends on, beside
//!   the same COPY with no view.
//! - `view-refresh`: batches of INSERT/UPDATE/DELETE with the view maintained
//!   by EddyDB, beside PostgreSQL's `REFRESH MATERIALIZED VIEW` after each.
//! - `source-ingest`: ~100-byte events of a `datagen` source into a per-key
//!   view: events/s and CPU from a backlog, with and without the JSON
//!   decode, then the view's staleness behind a paced stream.
//! - `kafka-ingest`: the same events produced to a 4-partition topic of a
//!   local tansu broker, drained by a bare rdkafka consumer and by EddyDB
//!   into the per-key view, in the same run: EddyDB's rate as a ratio of
//!   the bare consumer's.
//! - `checkpoints`: the same backlog into a per-key view with checkpoints
//!   every second and with none (the cost), then views of growing state:
//!   checkpoint duration and bytes, and the time from a restart to the view
//!   serving again.
//! - `context-join`: a large context table (~200-byte rows) loaded by COPY,
//!   then ~100-byte `datagen` events decorated with it through a temporal
//!   (lookup) or a regular join into a small per-device-type count: load
//!   rate and memory, events/s and CPU, the latency of a change to the
//!   table (regular join), and the view's staleness behind a paced stream.
//! - `logins`: scenario 1 (login anomaly detection) with the SQL of
//!   `examples/login_anomaly.sh` over the `logins` generator: logins/s and
//!   CPU from a backlog scored by the SQL function, then by the Python one,
//!   and the staleness of the profiles and scores behind a paced stream.
//!
//! This file owns starting and stopping the servers it measures, and the
//! Kafka broker (always by PID, also on failure or Ctrl-C), the data generators, and the CPU
//! accounting read from `/proc`. It talks to servers only through the real
//! clients (`psql`, `pgbench`, and `tokio-postgres` where a single statement
//! is timed), so it measures what a user would see; the server itself is not
//! linked in.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// How long a server may take to come up before the run is abandoned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server gets to exit after SIGTERM before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Generated rows are handed to psql in chunks of about this size.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;
/// Rows generated without sending, to measure the generator on its own.
const GENERATOR_PROBE_ROWS: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[derive(Debug, Parser)]
#[command(
    name = "eddydb-bench",
    about = "Benchmarks of EddyDB: COPY bulk load, pgbench point lookups, materialized views"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
    #[command(flatten)]
    tools: Tools,
}

#[derive(Debug, Args)]
struct Tools {
    /// The eddydb server binary (default: `eddydb` beside this program).
    #[arg(long, global = true)]
    eddydb: Option<PathBuf>,
    /// Folder holding PostgreSQL 15's psql, pgbench, initdb, pg_ctl.
    #[arg(long, global = true, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin: PathBuf,
    /// Unprivileged OS user that runs PostgreSQL when this runs as root
    /// (created with useradd if missing; initdb refuses to run as root).
    #[arg(long, global = true, default_value = "eddybench")]
    pg_os_user: String,
    /// Folder under which the temporary data directories are made.
    #[arg(long, global = true)]
    work_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Bulk load a generated 5-column table with COPY FROM STDIN through psql.
    Copy(CopyArgs),
    /// Point lookups by primary key with pgbench, EddyDB beside PostgreSQL.
    Pgbench(PgbenchArgs),
    /// One-row INSERT, then a read of the view by key: read-your-writes latency.
    ViewLatency(ViewLatencyArgs),
    /// COPY into `orders` with a join+aggregate view maintained, and without.
    ViewCopy(ViewCopyArgs),
    /// Batches of changes: EddyDB's maintained view beside PostgreSQL's REFRESH.
    ViewRefresh(ViewRefreshArgs),
    /// Datagen events into a per-key view: backlog throughput, then freshness.
    SourceIngest(SourceIngestArgs),
    /// Kafka events into the per-key view, against a bare rdkafka consumer.
    KafkaIngest(KafkaIngestArgs),
    /// Checkpoints: their cost on ingest, their size and duration, restart time.
    Checkpoints(CheckpointArgs),
    /// Events decorated with a large context table through a join: load,
    /// throughput, table-change latency, freshness.
    ContextJoin(ContextJoinArgs),
    /// Login anomaly detection (scenario 1): logins scored by the SQL and by
    /// the Python function with per-user profiles; throughput, freshness.
    Logins(LoginsArgs),
}

#[derive(Debug, Args)]
struct ContextJoinArgs {
    /// Rows of the context table (about 200 bytes each as CSV), loaded with
    /// one COPY before the events start.
    #[arg(long, default_value_t = 16_000_000)]
    rows: u64,
    /// Events of the backlog the view decorates (about 100 bytes each as a
    /// JSON message), their context ids uniform over the table's.
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// How the view joins each event to its context row.
    #[arg(long, value_enum, default_value_t = JoinKind::Temporal)]
    join: JoinKind,
    /// Samples of the table-change latency (regular join only); `0` skips
    /// them.
    #[arg(long, default_value_t = 200)]
    probes: u32,
    /// Events per second of the paced source of the freshness part.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Length of the freshness part's measured window; `0` skips it.
    #[arg(long, default_value_t = 20)]
    seconds: u32,
    /// Events through `FORMAT PLAIN ENCODE JSON` instead of typed rows.
    #[arg(long)]
    json: bool,
    /// Events per second of event time in the backlog (the generator's
    /// clock): with `--events`, how much event time the backlog spans.
    #[arg(long, default_value_t = BACKLOG_ROWS_PER_SECOND)]
    event_rate: u64,
    /// Dataflow workers of the server (`eddydb serve --workers`; default:
    /// the server's own, one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Pause between two reads of the reader's progress, and of the view
    /// in the freshness part.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Write the table's CSV to a scratch file first, off the clock, and
    /// have psql read the COPY from it: the load's figures then leave out
    /// this program making the rows (it otherwise shares the machine's
    /// cores with the server while the COPY runs).
    #[arg(long)]
    csv_file: bool,
}

/// How the context-join views find each event's context row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum JoinKind {
    /// `JOIN contexts FOR SYSTEM_TIME AS OF PROCTIME()`: each event looks up
    /// the table as it is when the event arrives; a later change to the
    /// table does not revise what was already joined.
    Temporal,
    /// A plain `JOIN contexts`: both sides are kept, and a change to a
    /// context row revises every event already joined with it.
    Regular,
}

impl JoinKind {
    fn name(self) -> &'static str {
        match self {
            JoinKind::Temporal => "temporal",
            JoinKind::Regular => "regular",
        }
    }

    /// `contexts` as the right side of the join, named `c`.
    fn contexts(self) -> &'static str {
        match self {
            JoinKind::Temporal => "JOIN contexts FOR SYSTEM_TIME AS OF PROCTIME() AS c",
            JoinKind::Regular => "JOIN contexts AS c",
        }
    }
}

#[derive(Debug, Args)]
struct CheckpointArgs {
    /// Events of each ingest run's backlog (with and without checkpoints);
    /// `0` skips the ingest runs.
    #[arg(long, default_value_t = 5_000_000)]
    rows: u64,
    /// Distinct keys of the ingest runs' per-key view.
    #[arg(long, default_value_t = 100_000)]
    ingest_keys: u64,
    /// Keys of a second, "cold" source the ingest runs' view also reads
    /// (one event per key, `1..=N`, through UNION ALL): a large state of
    /// which the events touch only the first `--ingest-keys`. `0` reads
    /// the events alone.
    #[arg(long, default_value_t = 0)]
    cold_keys: u64,
    /// Checkpoint interval of the ingest run with checkpoints.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// Checkpoint interval of the state-size runs: long, so that the state
    /// is written once, by the shutdown checkpoint.
    #[arg(long, default_value = "10m")]
    state_interval: String,
    /// Groups of each state-size run (one event per group), comma-separated;
    /// `0` skips them.
    #[arg(long, value_delimiter = ',', default_values_t = [4_000_000u64, 16_000_000])]
    state_keys: Vec<u64>,
    /// Dataflow workers of the server (`eddydb serve --workers`).
    #[arg(long)]
    workers: Option<usize>,
    /// Pause between two reads of the reader's progress.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
}

#[derive(Debug, Args)]
struct CopyArgs {
    /// Rows to generate and load.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// COPY format of the generated stream.
    #[arg(long, value_enum, default_value_t = CopyFormat::Text)]
    format: CopyFormat,
    /// Server to load: EddyDB, or a throwaway PostgreSQL for comparison.
    #[arg(long, value_enum, default_value_t = ServerKind::Eddydb)]
    against: ServerKind,
    /// Leave out the primary key, to see what maintaining it costs.
    #[arg(long)]
    no_primary_key: bool,
    /// Print the server's CPU, RSS and data folder size every half second
    /// of the COPY, to see which phase the time goes to.
    #[arg(long)]
    timeline: bool,
}

#[derive(Debug, Args)]
struct PgbenchArgs {
    /// Rows of the `accounts` table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// pgbench clients (-c).
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// pgbench worker threads (-j).
    #[arg(long, default_value_t = 2)]
    jobs: u32,
    /// Length of the measured run (-T).
    #[arg(long, default_value_t = 30)]
    seconds: u32,
    /// Length of an unreported run before the measured one (0 to skip).
    #[arg(long, default_value_t = 5)]
    warmup_seconds: u32,
}

#[derive(Debug, Args)]
struct ViewLatencyArgs {
    /// Rows of `t` loaded before the view is created.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Distinct values of the grouping key `k`, drawn uniformly.
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// INSERT-then-SELECT round trips measured.
    #[arg(long, default_value_t = 2_000)]
    samples: u32,
}

#[derive(Debug, Args)]
struct ViewCopyArgs {
    /// Orders to COPY.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Customers, loaded before the view is created.
    #[arg(long, default_value_t = 100_000)]
    customers: u64,
    /// COPY statements the orders are split into (about equal sizes).
    #[arg(long, default_value_t = 1)]
    copies: u64,
    /// Print the server's CPU, RSS and data folder size every half second.
    #[arg(long)]
    timeline: bool,
}

#[derive(Debug, Args)]
struct ViewRefreshArgs {
    /// Orders loaded before the view is created.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Customers the orders refer to.
    #[arg(long, default_value_t = 100_000)]
    customers: u64,
    /// Batches of changes applied (and timed) after the view exists.
    #[arg(long, default_value_t = 50)]
    batches: u32,
    /// Changes per batch: 40% INSERT, 30% UPDATE, 30% DELETE.
    #[arg(long, default_value_t = 1_000)]
    batch_size: u32,
}

#[derive(Debug, Args)]
struct SourceIngestArgs {
    /// Events in the backlog of each throughput run.
    #[arg(long, default_value_t = 5_000_000)]
    rows: u64,
    /// Dataflow workers of the server (`eddydb serve --workers`; default:
    /// the server's own, one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Events per second of the paced source of the freshness run.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Length of the freshness run's measured window.
    #[arg(long, default_value_t = 20)]
    seconds: u32,
    /// Pause between two reads of a view, in both parts.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// What the backlog runs poll to see the last event arrive.
    #[arg(long, value_enum, default_value_t = IngestWatch::Status)]
    watch: IngestWatch,
    /// Parts to run, comma-separated; each gets a fresh server.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [IngestPart::Json, IngestPart::Typed, IngestPart::Freshness])]
    parts: Vec<IngestPart>,
    /// The view the backlog runs maintain.
    #[arg(long, value_enum, default_value_t = IngestView::Count)]
    view: IngestView,
    /// Events per second of event time in the backlog (the generator's
    /// clock): with `--rows`, how much event time the backlog spans.
    #[arg(long, default_value_t = BACKLOG_ROWS_PER_SECOND)]
    event_rate: u64,
    /// Give the source `WATERMARK FOR ts AS ts - INTERVAL 'N seconds'`,
    /// so windowed views close (and free) their windows as time passes.
    #[arg(long)]
    watermark_s: Option<u64>,
}

/// What the source-ingest backlog runs maintain; every one is named
/// `per_user` and sums its counts in `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IngestView {
    /// Events per user (100K users).
    Count,
    /// Events per user per 1-second tumbling window.
    Tumble,
    /// Events per user per 1-minute tumbling window.
    TumbleMinute,
    /// Events per user per hopping window of 10 s sliding by 2 s (Nexmark
    /// q5's shape): every event is in 5 windows.
    Hop,
    /// Events per user per session, closed after 1 s without an event.
    Session,
    /// Events per user and segment, each event decorated by a lookup join
    /// (`FOR SYSTEM_TIME AS OF PROCTIME()`) with a 100K-row `users` table.
    Lookup,
    /// The same through a regular join, which also keeps every event.
    Join,
}

impl IngestView {
    fn create(self) -> &'static str {
        match self {
            IngestView::Count => PER_USER_VIEW,
            IngestView::Tumble => {
                "CREATE MATERIALIZED VIEW per_user AS SELECT user_id, window_start, \
                 count(*) AS n FROM TUMBLE(events, ts, INTERVAL '1 second') \
                 GROUP BY user_id, window_start"
            }
            IngestView::TumbleMinute => {
                "CREATE MATERIALIZED VIEW per_user AS SELECT user_id, window_start, \
                 count(*) AS n FROM TUMBLE(events, ts, INTERVAL '1 minute') \
                 GROUP BY user_id, window_start"
            }
            IngestView::Hop => {
                "CREATE MATERIALIZED VIEW per_user AS SELECT user_id, window_start, \
                 count(*) AS n FROM HOP(events, ts, INTERVAL '2 seconds', INTERVAL '10 seconds') \
                 GROUP BY user_id, window_start"
            }
            IngestView::Session => {
                "CREATE MATERIALIZED VIEW per_user AS SELECT user_id, window_start, window_end, \
                 count(*) AS n FROM SESSION(events, ts, INTERVAL '1 second', user_id) \
                 GROUP BY user_id, window_start, window_end"
            }
            IngestView::Lookup => {
                "CREATE MATERIALIZED VIEW per_user AS SELECT e.user_id, u.segment, \
                 count(*) AS n FROM events e \
                 JOIN users FOR SYSTEM_TIME AS OF PROCTIME() AS u ON e.user_id = u.user_id \
                 GROUP BY e.user_id, u.segment"
            }
            IngestView::Join => {
                "CREATE MATERIALIZED VIEW per_user AS SELECT e.user_id, u.segment, \
                 count(*) AS n FROM events e JOIN users u ON e.user_id = u.user_id \
                 GROUP BY e.user_id, u.segment"
            }
        }
    }

    /// What the view reads besides the events, made before the clock
    /// starts: a context row for every user id the events carry.
    fn setup(self) -> Option<&'static str> {
        match self {
            IngestView::Lookup | IngestView::Join => Some(
                "CREATE TABLE users (user_id bigint PRIMARY KEY, segment varchar); \
                 INSERT INTO users SELECT g, 'segment-' || (g % 16) \
                 FROM generate_series(1, 100000) AS g(g)",
            ),
            _ => None,
        }
    }

    /// How many times the view counts each event.
    fn copies(self) -> u64 {
        match self {
            IngestView::Hop => 5,
            _ => 1,
        }
    }
}

#[derive(Debug, Args)]
struct KafkaIngestArgs {
    /// Events produced to the topic; every run reads all of them.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Partitions of the topic; events go to them in turn.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// The tansu broker binary.
    #[arg(long, env = "EDDYDB_TANSU", default_value = "target/tools/bin/tansu")]
    tansu: PathBuf,
    /// tansu's storage engine.
    #[arg(long, value_enum, default_value_t = BrokerStorage::Memory)]
    storage: BrokerStorage,
    /// Dataflow workers of the server (`eddydb serve --workers`).
    #[arg(long)]
    workers: Option<usize>,
    /// Pause between two reads of the reader's row count.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// The view EddyDB maintains while it reads the topic.
    #[arg(long, value_enum, default_value_t = IngestView::Count)]
    view: IngestView,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BrokerStorage {
    /// `memory://`: fast; exact when each partition is read from its start.
    Memory,
    /// `sqlite://`: durable and exact, about 10x slower.
    Sqlite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IngestWatch {
    /// `sum(n)` of the view: a scan of all its groups per read.
    View,
    /// The view's reader's row count in `eddy_catalog.source_partitions`,
    /// which counts a poll once its commit has made it visible; the view's
    /// `sum(n)` is then checked once.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IngestPart {
    /// Backlog through `FORMAT PLAIN ENCODE JSON`: generate, encode, decode, count.
    Json,
    /// The same backlog as typed rows: generate and count only.
    Typed,
    /// A paced source: how far the view's newest event trails the clock.
    Freshness,
}

#[derive(Debug, Args)]
struct LoginsArgs {
    /// Logins in the backlog of the `sql` and `python` parts.
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    /// Users of the generator (`generator.users`).
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Dataflow workers of the server (`eddydb serve --workers`; default:
    /// the server's own, one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Logins per second of the paced source of the freshness part.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Length of the freshness part's measured window.
    #[arg(long, default_value_t = 20)]
    seconds: u32,
    /// Pause between two reads of the readers' progress, and of the views
    /// in the freshness part.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Logins per second of event time in the backlog (the generator's
    /// clock): with `--rows`, how much event time the backlog spans.
    #[arg(long, default_value_t = BACKLOG_ROWS_PER_SECOND)]
    event_rate: u64,
    /// Parts to run, comma-separated; each gets a fresh server.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [LoginsPart::Sql, LoginsPart::Python, LoginsPart::Freshness])]
    parts: Vec<LoginsPart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LoginsPart {
    /// Backlog scored by the SQL function `login_anomaly` into
    /// `scored_logins`, with `user_profiles`.
    Sql,
    /// The same backlog scored by the Python function `anomaly_score` into
    /// `py_scored_logins`, with `user_profiles`.
    Python,
    /// A paced source: how far `user_profiles` and `scored_logins` trail
    /// the clock.
    Freshness,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CopyFormat {
    Text,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerKind {
    Eddydb,
    Postgres,
}

impl CopyFormat {
    fn name(self) -> &'static str {
        match self {
            CopyFormat::Text => "text",
            CopyFormat::Csv => "csv",
        }
    }
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Eddydb => "EddyDB",
            ServerKind::Postgres => "PostgreSQL",
        }
    }
}

/// `error`, with whether the child `name` still runs and the end of its log.
fn explain_child(name: &str, child: &mut Child, log: &Path, error: anyhow::Error) -> anyhow::Error {
    let state = match child.try_wait() {
        Ok(Some(status)) => format!("{name} has exited ({status})"),
        Ok(None) => format!("{name} is still running"),
        Err(e) => format!("{name} state unknown: {e}"),
    };
    let log = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n    ");
    anyhow!("{error:#}\n  {state}; last lines of its log:\n    {tail}")
}

fn main() {
    let cli = Cli::parse();
    let cleanup = Cleanup::default();
    spawn_signal_watcher(cleanup.clone());
    let outcome = run(&cli, &cleanup);
    cleanup.run_all();
    if let Err(error) = outcome {
        eprintln!("eddydb-bench: error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli, cleanup: &Cleanup) -> Result<()> {
    let env = BenchEnv::new(&cli.tools, cleanup)?;
    print_machine(&env)?;
    match &cli.command {
        BenchCommand::Copy(args) => copy_benchmark(&env, args),
        BenchCommand::Pgbench(args) => pgbench_benchmark(&env, args),
        BenchCommand::ViewLatency(args) => view_latency_benchmark(&env, args),
        BenchCommand::ViewCopy(args) => view_copy_benchmark(&env, args),
        BenchCommand::ViewRefresh(args) => view_refresh_benchmark(&env, args),
        BenchCommand::SourceIngest(args) => source_ingest_benchmark(&env, args),
        BenchCommand::KafkaIngest(args) => kafka_ingest_benchmark(&env, args),
        BenchCommand::Checkpoints(args) => checkpoint_benchmark(&env, args),
        BenchCommand::ContextJoin(args) => context_join_benchmark(&env, args),
        BenchCommand::Logins(args) => logins_benchmark(&env, args),
    }
}

/// Resolved tool paths and the per-run scratch folder.
struct BenchEnv {
    eddydb: PathBuf,
    pg_bin: PathBuf,
    pg_os_user: String,
    scratch: TempDir,
    cleanup: Cleanup,
    clock_ticks_per_s: f64,
    /// EddyDB servers started so far; each gets a data folder of its own.
    eddy_servers: std::cell::Cell<u32>,
}

impl BenchEnv {
    fn new(tools: &Tools, cleanup: &Cleanup) -> Result<BenchEnv> {
        let eddydb = match &tools.eddydb {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("cannot locate this program to find eddydb beside it")?
                .with_file_name("eddydb"),
        };
        if !eddydb.is_file() {
            bail!(
                "eddydb binary not found at {} (use --eddydb)",
                eddydb.display()
            );
        }
        for tool in ["psql", "pgbench", "initdb", "pg_ctl"] {
            let path = tools.pg_bin.join(tool);
            if !path.is_file() {
                bail!("{} not found (use --pg-bin)", path.display());
            }
        }
        let parent = tools.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        Ok(BenchEnv {
            eddydb,
            pg_bin: tools.pg_bin.clone(),
            pg_os_user: tools.pg_os_user.clone(),
            scratch: TempDir::new(&parent, cleanup)?,
            cleanup: cleanup.clone(),
            clock_ticks_per_s: clock_ticks_per_s(),
            eddy_servers: std::cell::Cell::new(0),
        })
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.pg_bin.join(name)
    }
}

// ---------------------------------------------------------------------------
// Cleanup: every process and folder this program makes is registered here,
// so it is removed on success, on error, and on SIGINT/SIGTERM alike.
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum Action {
    /// SIGTERM, then SIGKILL after the grace period.
    Terminate {
        pid: u32,
    },
    /// `pg_ctl stop -m immediate`, then SIGKILL of the postmaster if alive.
    StopPostgres {
        pg_ctl: PathBuf,
        os_user: Option<String>,
        data: PathBuf,
    },
    RemoveDir(PathBuf),
}

#[derive(Clone, Default)]
struct Cleanup(Arc<Mutex<Registry>>);

#[derive(Default)]
struct Registry {
    next_id: u64,
    actions: Vec<(u64, Action)>,
}

/// Names one registered action; running it twice is harmless.
#[derive(Debug, Clone, Copy)]
struct Token(u64);

impl Cleanup {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, action: Action) -> Token {
        let mut registry = self.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        registry.actions.push((id, action));
        Token(id)
    }

    /// The lock is held while the action runs, so a signal arriving
    /// meanwhile waits for it instead of exiting halfway through.
    fn run(&self, token: Token) {
        let mut registry = self.lock();
        let index = registry.actions.iter().position(|(id, _)| *id == token.0);
        if let Some(index) = index {
            perform(registry.actions.remove(index).1);
        }
    }

    /// Newest first, so processes stop before their folders are removed.
    fn run_all(&self) {
        Self::drain(&mut self.lock());
    }

    /// For the signal path: nothing can be registered between the last
    /// action and the exit, because the lock is still held when it happens.
    fn run_all_and_exit(&self, code: i32) -> ! {
        let mut held = self.lock();
        Self::drain(&mut held);
        std::process::exit(code);
    }

    fn drain(registry: &mut Registry) {
        while let Some((_, action)) = registry.actions.pop() {
            perform(action);
        }
    }
}

fn perform(action: Action) {
    match action {
        Action::Terminate { pid } => terminate(pid, "TERM"),
        Action::StopPostgres {
            pg_ctl,
            os_user,
            data,
        } => {
            let mut stop = as_user(os_user.as_deref(), &pg_ctl);
            stop.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
            if let Some(pid) = postmaster_pid(&data) {
                terminate(pid, "QUIT");
            }
        }
        Action::RemoveDir(path) => {
            if let Err(error) = fs::remove_dir_all(&path) {
                if error.kind() != io::ErrorKind::NotFound {
                    eprintln!("eddydb-bench: cannot remove {}: {error}", path.display());
                }
            }
        }
    }
}

/// Sends `signal` to `pid`, waits for it to go, and kills it if it stays.
fn terminate(pid: u32, signal: &str) {
    if !process_alive(pid) {
        return;
    }
    send_signal(pid, signal);
    if !wait_gone(pid, SHUTDOWN_GRACE) {
        eprintln!("eddydb-bench: pid {pid} ignored SIG{signal}; sending SIGKILL");
        send_signal(pid, "KILL");
        wait_gone(pid, SHUTDOWN_GRACE);
    }
}

fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// A zombie counts as gone: it has released everything but its PID.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).first() != Some(&"Z"),
        Err(_) => false,
    }
}

/// Polls because a process this program did not spawn cannot be waited on.
fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn spawn_signal_watcher(cleanup: Cleanup) {
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("eddydb-bench: no signal handling: {error}");
                return;
            }
        };
        let signal = runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut interrupt = signal(SignalKind::interrupt())?;
            let mut terminate = signal(SignalKind::terminate())?;
            tokio::select! {
                _ = interrupt.recv() => io::Result::Ok("SIGINT"),
                _ = terminate.recv() => io::Result::Ok("SIGTERM"),
            }
        });
        if let Ok(name) = signal {
            eprintln!("eddydb-bench: {name}: stopping servers and removing temporary folders");
            cleanup.run_all_and_exit(130);
        }
    });
}

struct TempDir {
    path: PathBuf,
    token: Token,
    cleanup: Cleanup,
}

impl TempDir {
    fn new(parent: &Path, cleanup: &Cleanup) -> Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("eddydb-bench-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let token = cleanup.register(Action::RemoveDir(path.clone()));
        Ok(TempDir {
            path,
            token,
            cleanup: cleanup.clone(),
        })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        self.cleanup.run(self.token);
    }
}

// ---------------------------------------------------------------------------
// Machine and /proc accounting
// ---------------------------------------------------------------------------

fn print_machine(env: &BenchEnv) -> Result<()> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown");
    let processors = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo_kb(&meminfo, "MemTotal:").unwrap_or(0);
    let avail_kb = meminfo_kb(&meminfo, "MemAvailable:").unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let command_line: Vec<String> = std::env::args().collect();
    println!("== machine");
    println!("command line   {}", command_line.join(" "));
    println!("date (UTC)     {}", utc_now_string());
    println!("nproc          {nproc} (/proc/cpuinfo processors: {processors})");
    println!("cpu model      {model}");
    println!(
        "memory         {:.1} GiB total, {:.1} GiB available",
        gib(mem_kb * 1024),
        gib(avail_kb * 1024)
    );
    println!("kernel         {}", kernel.trim());
    println!("load average   {}", load.trim());
    println!(
        "eddydb         {} ({})",
        env.eddydb.display(),
        eddydb_version(env)
    );
    println!("postgres tools {}", env.pg_bin.display());
    println!();
    Ok(())
}

fn eddydb_version(env: &BenchEnv) -> String {
    Command::new(&env.eddydb)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "version unknown".to_string())
}

fn meminfo_kb(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn clock_ticks_per_s() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|hz| *hz > 0.0)
        .unwrap_or(100.0)
}

/// The fields of `/proc/PID/stat` after the command name, which may itself
/// hold spaces and parentheses; index 0 is field 3 (state).
fn stat_fields(stat: &str) -> Vec<&str> {
    match stat.rfind(')') {
        Some(end) => stat[end + 1..].split_whitespace().collect(),
        None => Vec::new(),
    }
}

/// (ppid, own utime+stime, reaped children's cutime+cstime) in clock ticks.
fn proc_times(pid: &str) -> Option<(u32, u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&stat);
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let ppid = fields.get(1)?.parse().ok()?;
    Some((ppid, field(11)? + field(12)?, field(13)? + field(14)?))
}

/// CPU ticks of `root` and its live children, plus those already reaped:
/// PostgreSQL backends exit when pgbench disconnects, and their time then
/// moves into the postmaster's children counters, so the sum stays whole.
fn tree_ticks(root: u32) -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let root_name = root.to_string();
    let mut total = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        match proc_times(pid) {
            Some((_, own, reaped)) if pid == root_name => total += own + reaped,
            Some((ppid, own, _)) if ppid == root => total += own,
            _ => {}
        }
    }
    total
}

/// Busy ticks of the whole machine, all cores, from the first line of /proc/stat.
fn machine_busy_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal; guest time is already in user.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    values.iter().take(8).sum::<u64>() - idle
}

/// The peak resident memory of `pid` (since it started, or since
/// [`reset_peak_rss`]).
fn vm_hwm_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// The resident memory of `pid` now.
fn vm_rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// A `kB` line of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    meminfo_kb(&status, key).map(|kb| kb * 1024)
}

/// Restarts VmHWM of `pid` from its current RSS (`/proc/PID/clear_refs`,
/// Linux 4.0 on), so the next peak read is one phase's own; false when the
/// kernel refused.
fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// (apparent bytes, bytes allocated on disk) of everything under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut sizes = (0, 0);
    let Ok(entries) = fs::read_dir(dir) else {
        return sizes;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (apparent, allocated) = dir_size(&entry.path());
            sizes = (sizes.0 + apparent, sizes.1 + allocated);
        } else {
            sizes = (sizes.0 + meta.len(), sizes.1 + meta.blocks() * 512);
        }
    }
    sizes
}

/// Where CPU time went during one phase: this program (the generator),
/// the clients it spawned and reaped (psql, pgbench), the server, and
/// whatever else ran on the machine meanwhile.
#[derive(Debug, Clone)]
struct CpuSnapshot {
    at: Instant,
    machine: u64,
    own: u64,
    clients: u64,
    server: u64,
    /// Of `server`: its child processes' ticks, live and reaped (the
    /// workers of Python functions).
    server_children: u64,
    server_threads: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
struct CpuUsage {
    wall_s: f64,
    generator_s: f64,
    clients_s: f64,
    server_s: f64,
    /// Of `server_s`: the server's child processes.
    server_children_s: f64,
    machine_s: f64,
    /// Server CPU per thread name, busiest first; threads that ended during
    /// the phase are missing here but counted in `server_s`.
    server_threads_s: Vec<(String, f64)>,
}

impl CpuSnapshot {
    /// `live_client` is a client still running: its time so far counts now,
    /// and once reaped it counts through this program's children counters.
    fn take(server_pid: u32, live_client: Option<u32>) -> CpuSnapshot {
        let (_, own, reaped) = proc_times("self").unwrap_or((0, 0, 0));
        let live = live_client
            .and_then(|pid| proc_times(&pid.to_string()))
            .map_or(0, |(_, ticks, _)| ticks);
        let clients = reaped + live;
        let server = tree_ticks(server_pid);
        let server_own = proc_times(&server_pid.to_string()).map_or(server, |(_, ticks, _)| ticks);
        CpuSnapshot {
            at: Instant::now(),
            machine: machine_busy_ticks(),
            own,
            clients,
            server,
            server_children: server.saturating_sub(server_own),
            server_threads: thread_ticks_by_name(server_pid),
        }
    }

    fn usage_since(&self, start: &CpuSnapshot, ticks_per_s: f64) -> CpuUsage {
        let secs = |end: u64, begin: u64| end.saturating_sub(begin) as f64 / ticks_per_s;
        CpuUsage {
            wall_s: self.at.duration_since(start.at).as_secs_f64(),
            generator_s: secs(self.own, start.own),
            clients_s: secs(self.clients, start.clients),
            server_s: secs(self.server, start.server),
            server_children_s: secs(self.server_children, start.server_children),
            machine_s: secs(self.machine, start.machine),
            server_threads_s: thread_deltas(&start.server_threads, &self.server_threads)
                .into_iter()
                .map(|(name, ticks)| (name, ticks as f64 / ticks_per_s))
                .collect(),
        }
    }
}

/// utime+stime of each thread of `pid`, summed by thread name, so pools of
/// like-named workers read as one line.
fn thread_ticks_by_name(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let name = match (stat.find('('), stat.rfind(')')) {
            (Some(open), Some(close)) if open < close => stat[open + 1..close].to_string(),
            _ => continue,
        };
        let fields = stat_fields(&stat);
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        *by_name.entry(name).or_insert(0) += field(11) + field(12);
    }
    by_name
}

fn thread_deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    let mut deltas: Vec<(String, u64)> = after
        .iter()
        .map(|(name, ticks)| {
            let earlier = before.get(name).copied().unwrap_or(0);
            (name.clone(), ticks.saturating_sub(earlier))
        })
        .filter(|(_, ticks)| *ticks > 0)
        .collect();
    deltas.sort_by_key(|(_, ticks)| std::cmp::Reverse(*ticks));
    deltas
}

impl CpuUsage {
    fn print(&self, client_name: &str, cores: usize, server_threads: bool) {
        let ours = self.generator_s + self.clients_s + self.server_s;
        let other = (self.machine_s - ours).max(0.0);
        let wall_s = self.wall_s.max(1e-9);
        let row =
            |name: &str, s: f64| println!("    {name:<24} {s:7.2} s {:6.1}%", 100.0 * s / wall_s);
        println!(
            "  cpu over {:.2} s wall (100% = one core; {cores} cores):",
            self.wall_s
        );
        row("server", self.server_s);
        if server_threads {
            let mut listed = 0.0;
            for (name, s) in self.server_threads_s.iter().take(8) {
                row(&format!("  thread {name}"), *s);
                listed += s;
            }
            row("  other/ended threads", (self.server_s - listed).max(0.0));
        }
        row(client_name, self.clients_s);
        if self.generator_s > 0.005 {
            row("this program", self.generator_s);
        }
        row("other processes", other);
        row("machine busy", self.machine_s);
    }
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// How the clients reach a running server.
struct Target {
    kind: ServerKind,
    port: u16,
    dbname: &'static str,
    server_pid: u32,
}

/// A psql that connects over TCP to `target` and stops on the first error.
fn psql(env: &BenchEnv, target: &Target) -> Command {
    let mut command = Command::new(env.tool("psql"));
    command
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "eddy",
        ])
        .arg("-p")
        .arg(target.port.to_string())
        .arg("-d")
        .arg(target.dbname)
        .env("PGCONNECT_TIMEOUT", "30")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS");
    command
}

/// Runs one statement and returns psql's unaligned, tuples-only output.
fn run_sql(env: &BenchEnv, target: &Target, sql: &str) -> Result<String> {
    let output = psql(env, target)
        .args(["-q", "-A", "-t", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", env.tool("psql").display()))?;
    if !output.status.success() {
        bail!(
            "{} rejected `{sql}` ({}): {}",
            target.kind.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

struct EddyServer {
    child: Child,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    token: Token,
    cleanup: Cleanup,
}

impl EddyServer {
    fn start(env: &BenchEnv) -> Result<EddyServer> {
        EddyServer::start_with(env, &[])
    }

    /// `extra` goes to `eddydb serve` after the listen address and data folder.
    fn start_with(env: &BenchEnv, extra: &[String]) -> Result<EddyServer> {
        let started = env.eddy_servers.get();
        let suffix = match started {
            0 => String::new(),
            n => format!("-{}", n + 1),
        };
        let data = env.scratch.path.join(format!("eddydb-data{suffix}"));
        EddyServer::start_in(env, data, extra)
    }

    /// A server on the data folder `data` (a restart when it exists).
    fn start_in(env: &BenchEnv, data: PathBuf, extra: &[String]) -> Result<EddyServer> {
        let started = env.eddy_servers.get();
        env.eddy_servers.set(started + 1);
        let log = env.scratch.path.join(format!("eddydb-{}.log", started + 1));
        let log_file = File::create(&log).context("cannot create the server log")?;
        let mut child = Command::new(&env.eddydb)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", env.eddydb.display()))?;
        let token = env.cleanup.register(Action::Terminate { pid: child.id() });
        let stdout = child.stdout.take();
        let mut server = EddyServer {
            child,
            port: 0,
            data,
            log,
            token,
            cleanup: env.cleanup.clone(),
        };
        let stdout = stdout.ok_or_else(|| anyhow!("eddydb stdout was not captured"))?;
        let address = wait_for_listen_line(stdout).map_err(|e| server.explain(e))?;
        server.port = address.port();
        Ok(server)
    }

    fn target(&self) -> Target {
        Target {
            kind: ServerKind::Eddydb,
            port: self.port,
            dbname: "eddy",
            server_pid: self.child.id(),
        }
    }

    /// Adds the server's state and the end of its log to a failure.
    fn explain(&mut self, error: anyhow::Error) -> anyhow::Error {
        explain_child("eddydb", &mut self.child, &self.log, error)
    }

    /// SIGTERM and wait; a non-zero exit is reported, not hidden.
    fn stop(mut self) -> Result<ExitStatus> {
        self.cleanup.run(self.token);
        let status = self.child.wait().context("cannot reap eddydb")?;
        if !status.success() {
            return Err(self.explain(anyhow!("eddydb exited with {status} after SIGTERM")));
        }
        Ok(status)
    }
}

impl Drop for EddyServer {
    fn drop(&mut self) {
        self.cleanup.run(self.token);
        let _ = self.child.wait();
    }
}

/// Reads the server's stdout until its readiness line, then keeps draining
/// it on a thread so the server never blocks on a full pipe.
fn wait_for_listen_line(stdout: std::process::ChildStdout) -> Result<SocketAddr> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sender = Some(sender);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(address) = line.trim().strip_prefix("eddydb listening on ") {
                if let Some(sender) = sender.take() {
                    let _ = sender.send(Ok(address.to_string()));
                }
            }
        }
        if let Some(sender) = sender {
            let _ = sender.send(Err("eddydb closed stdout without printing its address"));
        }
    });
    let line = receiver
        .recv_timeout(STARTUP_TIMEOUT)
        .map_err(|_| anyhow!("eddydb did not report listening within {STARTUP_TIMEOUT:?}"))?
        .map_err(|e| anyhow!(e))?;
    line.parse()
        .with_context(|| format!("cannot parse eddydb's listen address `{line}`"))
}

/// `cmd` run as `os_user` through runuser, or directly when not root.
fn as_user(os_user: Option<&str>, program: &Path) -> Command {
    match os_user {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// initdb refuses root, so a root run uses (and if needed creates) an
/// unprivileged account; a non-root run uses itself.
fn postgres_os_user(name: &str) -> Result<Option<String>> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string));
    if uid.as_deref() != Some("0") {
        return Ok(None);
    }
    let exists = Command::new("id")
        .arg("-u")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        println!("creating OS user `{name}` to run PostgreSQL (initdb refuses root)");
        run_checked(
            Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ]),
            "useradd",
        )?;
    }
    Ok(Some(name.to_string()))
}

fn run_checked(command: &mut Command, what: &str) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

fn free_loopback_port() -> Result<u16> {
    // The port is released before postgres binds it; another program could
    // take it meanwhile, which pg_ctl then reports as a start failure.
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

struct PgCluster {
    pg_ctl: PathBuf,
    os_user: Option<String>,
    root: PathBuf,
    data: PathBuf,
    port: u16,
    pid: u32,
    token: Token,
    cleanup: Cleanup,
}

impl PgCluster {
    fn start(env: &BenchEnv) -> Result<PgCluster> {
        let os_user = postgres_os_user(&env.pg_os_user)?;
        let root = env.scratch.path.join("postgres");
        fs::create_dir(&root).with_context(|| format!("cannot create {}", root.display()))?;
        if let Some(user) = &os_user {
            run_checked(Command::new("chown").arg(user).arg(&root), "chown")?;
        }
        let data = root.join("data");
        let pg_cmd = |tool: &str| {
            let mut command = as_user(os_user.as_deref(), &env.tool(tool));
            command.current_dir(&root);
            command
        };
        run_checked(
            pg_cmd("initdb").arg("-D").arg(&data).args([
                "-U",
                "eddy",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
            "initdb",
        )?;
        let token = env.cleanup.register(Action::StopPostgres {
            pg_ctl: env.tool("pg_ctl"),
            os_user: os_user.clone(),
            data: data.clone(),
        });
        let port = free_loopback_port()?;
        let options =
            format!("-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''");
        let started = run_checked(
            pg_cmd("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(root.join("postgres.log"))
                .args(["-w", "-t", "120", "-o", &options, "start"]),
            "pg_ctl start",
        );
        let cluster = PgCluster {
            pg_ctl: env.tool("pg_ctl"),
            pid: postmaster_pid(&data).unwrap_or(0),
            os_user,
            root,
            data,
            port,
            token,
            cleanup: env.cleanup.clone(),
        };
        started.map_err(|e| cluster.explain(e))?;
        if cluster.pid == 0 {
            bail!("postgres started but postmaster.pid is unreadable");
        }
        Ok(cluster)
    }

    fn target(&self) -> Target {
        Target {
            kind: ServerKind::Postgres,
            port: self.port,
            dbname: "postgres",
            server_pid: self.pid,
        }
    }

    fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        let log = fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n    ");
        anyhow!("{error:#}\n  last lines of the postgres log:\n    {tail}")
    }

    fn stop(self) -> Result<()> {
        let mut stop = as_user(self.os_user.as_deref(), &self.pg_ctl);
        stop.current_dir(&self.root)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]);
        let stopped = run_checked(&mut stop, "pg_ctl stop");
        stopped.map(|_| ()).map_err(|e| self.explain(e))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.cleanup.run(self.token);
    }
}

/// Either server, started fresh in the scratch folder.
enum Server {
    Eddy(EddyServer),
    Postgres(PgCluster),
}

impl Server {
    fn start(env: &BenchEnv, kind: ServerKind) -> Result<Server> {
        Ok(match kind {
            ServerKind::Eddydb => Server::Eddy(EddyServer::start(env)?),
            ServerKind::Postgres => Server::Postgres(PgCluster::start(env)?),
        })
    }

    fn target(&self) -> Target {
        match self {
            Server::Eddy(server) => server.target(),
            Server::Postgres(cluster) => cluster.target(),
        }
    }

    fn explain(&mut self, error: anyhow::Error) -> anyhow::Error {
        match self {
            Server::Eddy(server) => server.explain(error),
            Server::Postgres(cluster) => cluster.explain(error),
        }
    }

    fn data_dir(&self) -> &Path {
        match self {
            Server::Eddy(server) => &server.data,
            Server::Postgres(cluster) => &cluster.data,
        }
    }

    fn stop(self) -> Result<()> {
        match self {
            Server::Eddy(server) => server.stop().map(|_| ()),
            Server::Postgres(cluster) => cluster.stop(),
        }
    }
}

// ---------------------------------------------------------------------------
// Row generators: deterministic, allocation-free per row, and cheap enough
// that the client side is not what a COPY run measures.
// ---------------------------------------------------------------------------

trait RowSource {
    /// Appends row `index` (0-based) and its newline to `out`.
    fn write_row(&mut self, index: u64, delimiter: u8, out: &mut Vec<u8>);
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_u64(out, value.unsigned_abs());
}

fn push_two_digits(out: &mut Vec<u8>, value: u64) {
    out.push(b'0' + (value / 10 % 10) as u8);
    out.push(b'0' + (value % 10) as u8);
}

/// (year, month, day) of a count of days since 1970-01-01, by the
/// era-of-400-years method, valid for the whole proleptic Gregorian range.
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD HH:MM:SS` of Unix seconds, UTC.
fn push_timestamp(out: &mut Vec<u8>, unix_s: i64) {
    let (year, month, day) = civil_from_days(unix_s.div_euclid(86_400));
    let second_of_day = unix_s.rem_euclid(86_400) as u64;
    push_i64(out, year);
    out.push(b'-');
    push_two_digits(out, month);
    out.push(b'-');
    push_two_digits(out, day);
    out.push(b' ');
    push_two_digits(out, second_of_day / 3_600);
    out.push(b':');
    push_two_digits(out, second_of_day / 60 % 60);
    out.push(b':');
    push_two_digits(out, second_of_day % 60);
}

fn utc_now_string() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut out = Vec::new();
    push_timestamp(&mut out, now);
    String::from_utf8_lossy(&out).into_owned()
}

/// `bench(id int primary key, big bigint, name text, amount double
/// precision, created timestamp)`: a 20-letter name, a two-decimal amount,
/// and timestamps three seconds apart from 2024-01-01.
struct BenchRows;

fn bench_ddl(primary_key: bool) -> String {
    let key = if primary_key { " PRIMARY KEY" } else { "" };
    format!(
        "CREATE TABLE bench (id int{key}, big bigint, name text, \
         amount double precision, created timestamp)"
    )
}
const TIMESTAMP_BASE_S: i64 = 1_704_067_200;

impl RowSource for BenchRows {
    fn write_row(&mut self, index: u64, delimiter: u8, out: &mut Vec<u8>) {
        let r1 = splitmix64(index);
        let r2 = splitmix64(r1);
        let r3 = splitmix64(r2);
        push_u64(out, index + 1);
        out.push(delimiter);
        push_u64(out, r1 >> 1);
        out.push(delimiter);
        for i in 0..20 {
            let bits = if i < 12 {
                r2 >> (i * 5)
            } else {
                r3 >> ((i - 12) * 5)
            };
            out.push(b'a' + ((bits & 31) % 26) as u8);
        }
        out.push(delimiter);
        let cents = r3 % 100_000_000;
        push_u64(out, cents / 100);
        out.push(b'.');
        push_two_digits(out, cents % 100);
        out.push(delimiter);
        push_timestamp(out, TIMESTAMP_BASE_S + 3 * index as i64);
        out.push(b'\n');
    }
}

/// `accounts(aid int primary key, abalance int, filler text)`, shaped like
/// pgbench's own table: an 84-character filler, balances in ±1,000,000.
struct AccountRows;

const ACCOUNTS_DDL: &str = "CREATE TABLE accounts (aid int PRIMARY KEY, abalance int, filler text)";
const FILLER: &[u8; 84] =
    b"accounts-filler-accounts-filler-accounts-filler-accounts-filler-accounts-filler-acco";

fn account_balance(aid: u64) -> i64 {
    (splitmix64(aid) % 2_000_001) as i64 - 1_000_000
}

impl RowSource for AccountRows {
    fn write_row(&mut self, index: u64, delimiter: u8, out: &mut Vec<u8>) {
        let aid = index + 1;
        push_u64(out, aid);
        out.push(delimiter);
        push_i64(out, account_balance(aid));
        out.push(delimiter);
        out.extend_from_slice(FILLER);
        out.push(b'\n');
    }
}

/// Rows per second of the generator alone, on one core, writing nowhere.
fn generator_rate(source: &mut dyn RowSource, rows: u64) -> (f64, u64) {
    let mut buffer = Vec::with_capacity(WRITE_CHUNK_BYTES + 1024);
    let mut bytes = 0u64;
    let started = Instant::now();
    for index in 0..rows {
        source.write_row(index, b'\t', &mut buffer);
        if buffer.len() >= WRITE_CHUNK_BYTES {
            bytes += buffer.len() as u64;
            buffer.clear();
        }
    }
    bytes += buffer.len() as u64;
    std::hint::black_box(&buffer);
    (
        rows as f64 / started.elapsed().as_secs_f64().max(1e-9),
        bytes,
    )
}

// ---------------------------------------------------------------------------
// COPY through psql
// ---------------------------------------------------------------------------

struct CopyOutcome {
    rows: u64,
    bytes: u64,
    usage: CpuUsage,
    /// Until this program handed psql the last row.
    streaming: CpuUsage,
    /// From then until psql exited: the server finishing the COPY.
    tail: CpuUsage,
}

/// Streams `rows` generated rows into `table` with one psql `COPY ... FROM
/// STDIN`. The clock covers psql's whole life: connect, stream, commit.
fn copy_in(
    env: &BenchEnv,
    target: &Target,
    table: &str,
    format: CopyFormat,
    source: &mut dyn RowSource,
    rows: u64,
) -> Result<CopyOutcome> {
    copy_in_from(env, target, table, format, source, rows, false)
}

/// [`copy_in`]; with `from_file` the rows are written to a scratch file
/// before the clock starts, and psql reads the COPY's data from it.
fn copy_in_from(
    env: &BenchEnv,
    target: &Target,
    table: &str,
    format: CopyFormat,
    source: &mut dyn RowSource,
    rows: u64,
    from_file: bool,
) -> Result<CopyOutcome> {
    let (statement, delimiter) = match format {
        CopyFormat::Text => (format!("COPY {table} FROM STDIN"), b'\t'),
        CopyFormat::Csv => (format!("COPY {table} FROM STDIN WITH (FORMAT csv)"), b','),
    };
    // Files, not pipes, so psql can never block on output nobody reads.
    let out_path = env.scratch.path.join("psql-copy.out");
    let err_path = env.scratch.path.join("psql-copy.err");
    let csv_path = env.scratch.path.join("copy-input.csv");
    let written = match from_file {
        true => Some(
            stream_rows(File::create(&csv_path)?, source, delimiter, rows)
                .context("writing the rows to a file")?,
        ),
        false => None,
    };
    let input = match written {
        Some(_) => Stdio::from(File::open(&csv_path)?),
        None => Stdio::piped(),
    };
    let before = CpuSnapshot::take(target.server_pid, None);
    let mut child = psql(env, target)
        .arg("-c")
        .arg(&statement)
        .stdin(input)
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("cannot run {}", env.tool("psql").display()))?;
    let streamed = match written {
        Some(bytes) => Ok(bytes),
        None => {
            let stdin = child
                .stdin
                .take()
                .ok_or_else(|| anyhow!("psql stdin was not captured"))?;
            stream_rows(stdin, source, delimiter, rows)
        }
    };
    let sent = CpuSnapshot::take(target.server_pid, Some(child.id()));
    let status = child.wait().context("cannot reap psql")?;
    let done = CpuSnapshot::take(target.server_pid, None);
    if written.is_some() {
        let _ = fs::remove_file(&csv_path);
    }
    let hz = env.clock_ticks_per_s;
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() || !stderr.trim().is_empty() {
        bail!(
            "psql `{statement}` into {} failed ({status}): {}",
            target.kind.name(),
            stderr.trim()
        );
    }
    let bytes = streamed.context("writing rows to psql")?;
    let reported = stdout
        .trim()
        .strip_prefix("COPY ")
        .and_then(|n| n.parse::<u64>().ok());
    match reported {
        Some(n) if n == rows => Ok(CopyOutcome {
            rows,
            bytes,
            usage: done.usage_since(&before, hz),
            streaming: sent.usage_since(&before, hz),
            tail: done.usage_since(&sent, hz),
        }),
        _ => bail!(
            "{} answered `{}` to a COPY of {rows} rows",
            target.kind.name(),
            stdout.trim()
        ),
    }
}

/// Writes rows until done (or psql goes away); returns the bytes written.
fn stream_rows(
    mut stdin: impl Write,
    source: &mut dyn RowSource,
    delimiter: u8,
    rows: u64,
) -> io::Result<u64> {
    let mut buffer = Vec::with_capacity(WRITE_CHUNK_BYTES + 1024);
    let mut bytes = 0u64;
    for index in 0..rows {
        source.write_row(index, delimiter, &mut buffer);
        if buffer.len() >= WRITE_CHUNK_BYTES {
            stdin.write_all(&buffer)?;
            bytes += buffer.len() as u64;
            buffer.clear();
        }
    }
    stdin.write_all(&buffer)?;
    bytes += buffer.len() as u64;
    // Dropping stdin sends EOF, which makes psql end the COPY.
    Ok(bytes)
}

fn copy_benchmark(env: &BenchEnv, args: &CopyArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "== copy benchmark: {} rows, {} format, into {}",
        args.rows,
        args.format.name(),
        args.against.name()
    );
    println!("table: {}", bench_ddl(!args.no_primary_key));
    let (rate, probe_bytes) = generator_rate(&mut BenchRows, args.rows.min(GENERATOR_PROBE_ROWS));
    println!(
        "generator alone: {:.0} rows/s on one core ({:.1} bytes/row)",
        rate,
        probe_bytes as f64 / args.rows.clamp(1, GENERATOR_PROBE_ROWS) as f64
    );
    let mut server = Server::start(env, args.against)?;
    let target = server.target();
    let measured = measure_copy(env, &target, args, &server).map_err(|e| server.explain(e));
    let measured = measured?;
    let (apparent, allocated) = dir_size(server.data_dir());
    server.stop()?;
    let (apparent_after, allocated_after) = dir_size_after_stop(env, args.against);
    println!();
    println!("== copy result ({})", target.kind.name());
    println!("rows loaded          {}", measured.copy.rows);
    println!("COPY wall time       {:.2} s", measured.copy.usage.wall_s);
    println!(
        "throughput           {:.0} rows/s   (target >= 500000 rows/s for EddyDB)",
        measured.copy.rows as f64 / measured.copy.usage.wall_s
    );
    println!(
        "input stream         {:.1} MiB ({:.1} MiB/s)",
        mib(measured.copy.bytes),
        mib(measured.copy.bytes) / measured.copy.usage.wall_s
    );
    println!(
        "data dir after COPY  {:.1} MiB apparent, {:.1} MiB on disk",
        mib(apparent),
        mib(allocated)
    );
    println!(
        "data dir after stop  {:.1} MiB apparent, {:.1} MiB on disk",
        mib(apparent_after),
        mib(allocated_after)
    );
    match measured.peak_rss {
        Some((idle, peak)) => println!(
            "server peak RSS      {:.1} MiB (VmHWM; {:.1} MiB before the COPY)",
            mib(peak),
            mib(idle)
        ),
        None => println!("server peak RSS      not measured (PostgreSQL is many processes)"),
    }
    println!(
        "count(*) afterwards  {} ({:.2} s)",
        measured.count, measured.count_s
    );
    let threads = args.against == ServerKind::Eddydb;
    measured.copy.usage.print("psql", cores, threads);
    println!("  phase 1, rows streaming (until the last row was handed to psql):");
    measured.copy.streaming.print("psql", cores, threads);
    println!("  phase 2, after the last row was sent until psql got `COPY n`:");
    measured.copy.tail.print("psql", cores, threads);
    Ok(())
}

struct CopyMeasurement {
    copy: CopyOutcome,
    peak_rss: Option<(u64, u64)>,
    count: String,
    count_s: f64,
}

fn measure_copy(
    env: &BenchEnv,
    target: &Target,
    args: &CopyArgs,
    server: &Server,
) -> Result<CopyMeasurement> {
    let is_eddy = matches!(server, Server::Eddy(_));
    run_sql(env, target, &bench_ddl(!args.no_primary_key))?;
    let idle_rss = vm_hwm_bytes(target.server_pid);
    println!(
        "server up on port {}, table created; starting COPY",
        target.port
    );
    let timeline = args
        .timeline
        .then(|| Timeline::start(target.server_pid, server.data_dir().to_path_buf()));
    let copy = copy_in(env, target, "bench", args.format, &mut BenchRows, args.rows);
    if let Some(timeline) = timeline {
        timeline.finish(env.clock_ticks_per_s);
    }
    let copy = copy?;
    let peak_rss = match (is_eddy, idle_rss, vm_hwm_bytes(target.server_pid)) {
        (true, Some(idle), Some(peak)) => Some((idle, peak)),
        _ => None,
    };
    let started = Instant::now();
    let count = run_sql(env, target, "SELECT count(*) FROM bench")?;
    let count_s = started.elapsed().as_secs_f64();
    if count != copy.rows.to_string() {
        bail!(
            "{} holds {count} rows after a COPY of {} rows",
            target.kind.name(),
            copy.rows
        );
    }
    Ok(CopyMeasurement {
        copy,
        peak_rss,
        count,
        count_s,
    })
}

fn dir_size_after_stop(env: &BenchEnv, kind: ServerKind) -> (u64, u64) {
    match kind {
        ServerKind::Eddydb => dir_size(&env.scratch.path.join("eddydb-data")),
        ServerKind::Postgres => dir_size(&env.scratch.path.join("postgres").join("data")),
    }
}

/// Samples a server every [`TIMELINE_INTERVAL`] on a thread of its own.
struct Timeline {
    stop: mpsc::Sender<()>,
    samples: std::thread::JoinHandle<Vec<TimelineSample>>,
}

const TIMELINE_INTERVAL: Duration = Duration::from_millis(500);

struct TimelineSample {
    at_s: f64,
    cpu_ticks: u64,
    rss_bytes: u64,
    data_bytes: u64,
}

impl Timeline {
    fn start(pid: u32, data_dir: PathBuf) -> Timeline {
        let (stop, stopped) = mpsc::channel::<()>();
        let samples = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            loop {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                samples.push(TimelineSample {
                    at_s: started.elapsed().as_secs_f64(),
                    cpu_ticks: proc_times(&pid.to_string()).map_or(0, |(_, own, _)| own),
                    rss_bytes: meminfo_kb(&status, "VmRSS:").unwrap_or(0) * 1024,
                    data_bytes: dir_size(&data_dir).0,
                });
                // The receive doubles as the sampling clock and the stop signal.
                match stopped.recv_timeout(TIMELINE_INTERVAL) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return samples,
                }
            }
        });
        Timeline { stop, samples }
    }

    fn finish(self, ticks_per_s: f64) {
        let _ = self.stop.send(());
        let Ok(samples) = self.samples.join() else {
            return;
        };
        println!("timeline of the COPY (server process):");
        println!(
            "  {:>7} {:>8} {:>10} {:>13}",
            "t s", "cpu %", "RSS MiB", "data dir MiB"
        );
        for pair in samples.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let cpu_s = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks_per_s;
            let pct = 100.0 * cpu_s / (b.at_s - a.at_s).max(1e-9);
            println!(
                "  {:>7.1} {:>8.0} {:>10.1} {:>13.1}",
                b.at_s,
                pct,
                mib(b.rss_bytes),
                mib(b.data_bytes)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// pgbench point lookups
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct PgbenchOutcome {
    tps: f64,
    latency_ms: f64,
    transactions: u64,
    failed: u64,
    usage: Option<CpuUsage>,
    /// TCP segments sent machine-wide during the run (both ends are local).
    tcp_segments: u64,
}

fn run_pgbench(
    env: &BenchEnv,
    target: &Target,
    script: &Path,
    args: &PgbenchArgs,
    seconds: u32,
) -> Result<PgbenchOutcome> {
    let before = CpuSnapshot::take(target.server_pid, None);
    let segments_before = tcp_out_segments();
    let output = Command::new(env.tool("pgbench"))
        .args(["-n", "-M", "prepared", "-h", "127.0.0.1", "-U", "eddy"])
        .arg("-p")
        .arg(target.port.to_string())
        .arg("-c")
        .arg(args.clients.to_string())
        .arg("-j")
        .arg(args.jobs.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(script)
        .arg(target.dbname)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", env.tool("pgbench").display()))?;
    let usage =
        CpuSnapshot::take(target.server_pid, None).usage_since(&before, env.clock_ticks_per_s);
    let tcp_segments = tcp_out_segments().saturating_sub(segments_before);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "pgbench against {} failed ({}):\n{}\n{}",
            target.kind.name(),
            output.status,
            stdout.trim(),
            stderr.trim()
        );
    }
    let mut outcome = parse_pgbench(&stdout)
        .with_context(|| format!("unexpected pgbench output:\n{stdout}\n{stderr}"))?;
    outcome.usage = Some(usage);
    outcome.tcp_segments = tcp_segments;
    Ok(outcome)
}

/// `Tcp: OutSegs` of /proc/net/snmp: a header line names the columns and
/// the next `Tcp:` line holds the values.
fn tcp_out_segments() -> u64 {
    let snmp = fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "OutSegs")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

fn parse_pgbench(stdout: &str) -> Result<PgbenchOutcome> {
    let value_after = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|v| v.split('/').next().unwrap_or(v).to_string())
    };
    let number = |prefix: &str| -> Result<f64> {
        value_after(prefix)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no `{prefix}` line"))
    };
    Ok(PgbenchOutcome {
        tps: number("tps = ")?,
        latency_ms: number("latency average = ")?,
        transactions: number("number of transactions actually processed: ")? as u64,
        failed: value_after("number of failed transactions: ")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        usage: None,
        tcp_segments: 0,
    })
}

struct SideResult {
    name: &'static str,
    load_rows_per_s: f64,
    outcome: PgbenchOutcome,
}

/// Loads `accounts`, checks it, warms up, and runs the measured pgbench.
fn bench_one(
    env: &BenchEnv,
    kind: ServerKind,
    args: &PgbenchArgs,
    script: &Path,
) -> Result<SideResult> {
    let mut server = Server::start(env, kind)?;
    let target = server.target();
    println!(
        "-- {}: server up on port {}",
        target.kind.name(),
        target.port
    );
    let result = bench_started(env, &target, args, script).map_err(|e| server.explain(e));
    let result = result?;
    server.stop()?;
    Ok(result)
}

fn bench_started(
    env: &BenchEnv,
    target: &Target,
    args: &PgbenchArgs,
    script: &Path,
) -> Result<SideResult> {
    run_sql(env, target, ACCOUNTS_DDL)?;
    let load = copy_in(
        env,
        target,
        "accounts",
        CopyFormat::Text,
        &mut AccountRows,
        args.rows,
    )?;
    let load_rows_per_s = load.rows as f64 / load.usage.wall_s;
    println!(
        "   loaded {} rows in {:.2} s ({load_rows_per_s:.0} rows/s)",
        load.rows, load.usage.wall_s
    );
    if target.kind == ServerKind::Postgres {
        // Fresh statistics and visibility map, as any tuned PostgreSQL has.
        run_sql(env, target, "VACUUM ANALYZE accounts")?;
    }
    let probe = args.rows.div_ceil(2).max(1);
    let got = run_sql(
        env,
        target,
        &format!("SELECT abalance FROM accounts WHERE aid = {probe}"),
    )?;
    if got != account_balance(probe).to_string() {
        bail!(
            "{}: aid {probe} has abalance `{got}`, expected {}",
            target.kind.name(),
            account_balance(probe)
        );
    }
    if args.warmup_seconds > 0 {
        let warm = run_pgbench(env, target, script, args, args.warmup_seconds)?;
        println!(
            "   warm-up {} s: {:.0} tps (not reported)",
            args.warmup_seconds, warm.tps
        );
    }
    let outcome = run_pgbench(env, target, script, args, args.seconds)?;
    println!(
        "   measured {} s: {:.0} tps, latency average {:.3} ms, {} transactions, {} failed",
        args.seconds, outcome.tps, outcome.latency_ms, outcome.transactions, outcome.failed
    );
    if let Some(usage) = &outcome.usage {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        usage.print("pgbench", cores, target.kind == ServerKind::Eddydb);
        let per_txn = |s: f64| 1e6 * s / outcome.transactions.max(1) as f64;
        println!(
            "  per transaction: server {:.1} us cpu, pgbench {:.1} us cpu, {:.2} TCP segments",
            per_txn(usage.server_s),
            per_txn(usage.clients_s),
            outcome.tcp_segments as f64 / outcome.transactions.max(1) as f64
        );
    }
    Ok(SideResult {
        name: target.kind.name(),
        load_rows_per_s,
        outcome,
    })
}

fn pgbench_benchmark(env: &BenchEnv, args: &PgbenchArgs) -> Result<()> {
    if args.rows == 0 || args.rows > i32::MAX as u64 {
        bail!("--rows must be between 1 and {}", i32::MAX);
    }
    let script = env.scratch.path.join("lookup.sql");
    let script_text = format!(
        "\\set aid random(1, {})\nSELECT abalance FROM accounts WHERE aid = :aid;\n",
        args.rows
    );
    fs::write(&script, &script_text).context("cannot write the pgbench script")?;
    println!(
        "== pgbench benchmark: {} accounts rows, pgbench -n -M prepared -c {} -j {} -T {}",
        args.rows, args.clients, args.jobs, args.seconds
    );
    println!("table: {ACCOUNTS_DDL}");
    println!(
        "script:\n  {}",
        script_text.trim_end().replace('\n', "\n  ")
    );
    println!("(servers run one at a time; each is stopped before the next starts)");
    let eddy = bench_one(env, ServerKind::Eddydb, args, &script)?;
    let postgres = bench_one(env, ServerKind::Postgres, args, &script)?;
    println!();
    println!("== pgbench result");
    println!(
        "{:<12} {:>12} {:>14} {:>14} {:>8}",
        "server", "tps", "latency ms", "load rows/s", "failed"
    );
    for side in [&eddy, &postgres] {
        println!(
            "{:<12} {:>12.0} {:>14.3} {:>14.0} {:>8}",
            side.name,
            side.outcome.tps,
            side.outcome.latency_ms,
            side.load_rows_per_s,
            side.outcome.failed
        );
    }
    println!(
        "ratio EddyDB/PostgreSQL tps: {:.3}   (target >= 0.5)",
        eddy.outcome.tps / postgres.outcome.tps.max(1e-9)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// A blocking tokio-postgres client, to time single statements
// ---------------------------------------------------------------------------

/// One connection with its own single-threaded runtime: the connection task
/// runs only inside `block_on`, on this thread, so a timed statement never
/// waits for a wake-up on the other core.
struct SqlClient {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    server: &'static str,
}

type SqlParam<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

impl SqlClient {
    fn connect(target: &Target) -> Result<SqlClient> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the client's tokio runtime")?;
        let config = format!(
            "host=127.0.0.1 port={} user=eddy dbname={} connect_timeout=30",
            target.port, target.dbname
        );
        let (client, connection) = runtime
            .block_on(tokio_postgres::connect(&config, tokio_postgres::NoTls))
            .with_context(|| format!("cannot connect to {}", target.kind.name()))?;
        runtime.spawn(connection);
        Ok(SqlClient {
            runtime,
            client,
            server: target.kind.name(),
        })
    }

    /// Runs `sql` with the simple protocol; returns the last command's count.
    fn command(&self, sql: &str) -> Result<u64> {
        let messages = self
            .runtime
            .block_on(self.client.simple_query(sql))
            .with_context(|| self.rejected(sql))?;
        let counts = messages.iter().filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        });
        Ok(counts.last().unwrap_or(0))
    }

    /// The rows of `sql` in text form, NULL as `NULL`.
    fn text_rows(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let messages = self
            .runtime
            .block_on(self.client.simple_query(sql))
            .with_context(|| self.rejected(sql))?;
        let rows = messages.iter().filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        });
        Ok(rows.collect())
    }

    fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        self.runtime
            .block_on(self.client.prepare(sql))
            .with_context(|| self.rejected(sql))
    }

    fn execute(&self, statement: &tokio_postgres::Statement, params: &[SqlParam]) -> Result<u64> {
        self.runtime
            .block_on(self.client.execute(statement, params))
            .with_context(|| format!("{} failed to execute a prepared statement", self.server))
    }

    fn query_opt(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[SqlParam],
    ) -> Result<Option<tokio_postgres::Row>> {
        self.runtime
            .block_on(self.client.query_opt(statement, params))
            .with_context(|| format!("{} failed to run a prepared query", self.server))
    }

    fn rejected(&self, sql: &str) -> String {
        format!("{} rejected `{}`", self.server, abbreviate(sql, 160))
    }
}

/// `text` cut to about `limit` characters, for error messages.
fn abbreviate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

/// Seconds `f` took, with its result.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let started = Instant::now();
    let value = f()?;
    Ok((value, started.elapsed().as_secs_f64()))
}

fn micros(from: Instant, to: Instant) -> u64 {
    to.duration_since(from).as_micros() as u64
}

/// Microsecond timings, sorted once and read by nearest rank.
struct Percentiles(Vec<u64>);

impl Percentiles {
    fn new(mut us: Vec<u64>) -> Percentiles {
        us.sort_unstable();
        Percentiles(us)
    }

    /// The smallest value with at least `q` of the samples at or below it.
    fn at(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        let rank = (q * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    fn max(&self) -> u64 {
        self.0.last().copied().unwrap_or(0)
    }

    fn print_row(&self, name: &str) {
        println!(
            "  {name:<22} {:>9} {:>9} {:>9} {:>9}",
            self.at(0.50),
            self.at(0.90),
            self.at(0.99),
            self.max()
        );
    }
}

fn print_percentile_header(unit: &str) {
    println!(
        "  {unit:<22} {:>9} {:>9} {:>9} {:>9}",
        "p50", "p90", "p99", "max"
    );
}

/// The server's VmHWM at named points of a run; the last mark is the peak.
#[derive(Default)]
struct RssMarks(Vec<(&'static str, u64)>);

impl RssMarks {
    fn mark(&mut self, pid: u32, name: &'static str) {
        if let Some(bytes) = vm_hwm_bytes(pid) {
            self.0.push((name, bytes));
        }
    }

    fn print(&self) {
        let Some(((_, peak), earlier)) = self.0.split_last() else {
            println!("server peak RSS      not measured");
            return;
        };
        let earlier: Vec<String> = earlier
            .iter()
            .map(|(name, bytes)| format!("{:.1} MiB {name}", mib(*bytes)))
            .collect();
        println!(
            "server peak RSS      {:.1} MiB (VmHWM; {})",
            mib(*peak),
            earlier.join(", ")
        );
    }
}

// ---------------------------------------------------------------------------
// view-latency: INSERT, then read the view by key (read-your-writes)
// ---------------------------------------------------------------------------

const KEYED_DDL: &str = "CREATE TABLE t (id bigint PRIMARY KEY, k int, v int)";
const KEYED_VIEW_DDL: &str =
    "CREATE MATERIALIZED VIEW v AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k";
const KEYED_INSERT: &str = "INSERT INTO t VALUES ($1, $2, $3)";
const KEYED_SELECT: &str = "SELECT n, s FROM v WHERE k = $1";

/// (k, v) of row `id` of `t`: `k` uniform in 0..keys, `v` in 0..1000. The
/// sampled INSERTs continue the same sequence past the loaded ids.
fn keyed_row(id: u64, keys: u32) -> (i32, i32) {
    let r = splitmix64(id ^ 0x6b65_7965_6400);
    ((r % u64::from(keys)) as i32, ((r >> 40) % 1_000) as i32)
}

/// `t(id bigint primary key, k int, v int)`, see [`keyed_row`].
struct KeyedRows {
    keys: u32,
}

impl RowSource for KeyedRows {
    fn write_row(&mut self, index: u64, delimiter: u8, out: &mut Vec<u8>) {
        let id = index + 1;
        let (k, v) = keyed_row(id, self.keys);
        push_u64(out, id);
        out.push(delimiter);
        push_i64(out, k.into());
        out.push(delimiter);
        push_i64(out, v.into());
        out.push(b'\n');
    }
}

/// What `v` must hold, kept beside the server: (count, sum) per key.
struct KeyModel(Vec<(i64, i64)>);

impl KeyModel {
    fn of_rows(rows: u64, keys: u32) -> KeyModel {
        let mut model = KeyModel(vec![(0, 0); keys as usize]);
        for id in 1..=rows {
            let (k, v) = keyed_row(id, keys);
            model.add(k, v);
        }
        model
    }

    /// Counts one more row and returns the key's new (count, sum).
    fn add(&mut self, k: i32, v: i32) -> (i64, i64) {
        let group = &mut self.0[k as usize];
        *group = (group.0 + 1, group.1 + i64::from(v));
        *group
    }

    /// The whole view against the model, which proves the backfill.
    fn check_view(&self, client: &SqlClient) -> Result<()> {
        let rows = client.text_rows("SELECT k, n, s FROM v")?;
        let expected_rows = self.0.iter().filter(|(n, _)| *n > 0).count();
        if rows.len() != expected_rows {
            bail!("view v has {} rows, expected {expected_rows}", rows.len());
        }
        for row in &rows {
            let parsed: Vec<i64> = row.iter().filter_map(|f| f.parse().ok()).collect();
            let expected = parsed
                .first()
                .and_then(|k| self.0.get(usize::try_from(*k).ok()?));
            match (parsed.as_slice(), expected) {
                ([_, n, s], Some(want)) if (*n, *s) == *want => {}
                _ => bail!("view v holds {row:?}, which the loaded rows do not give"),
            }
        }
        Ok(())
    }
}

/// Microseconds of each sample: INSERT and SELECT together, then each alone.
#[derive(Default)]
struct RoundTrips {
    total_us: Vec<u64>,
    insert_us: Vec<u64>,
    select_us: Vec<u64>,
}

fn read_your_writes(
    client: &SqlClient,
    model: &mut KeyModel,
    args: &ViewLatencyArgs,
) -> Result<RoundTrips> {
    let insert = client.prepare(KEYED_INSERT)?;
    let select = client.prepare(KEYED_SELECT)?;
    let mut trips = RoundTrips::default();
    for sample in 0..u64::from(args.samples) {
        let id = args.rows + 1 + sample;
        let (k, v) = keyed_row(id, args.keys);
        let sent = Instant::now();
        client.execute(&insert, &[&(id as i64), &k, &v])?;
        let inserted = Instant::now();
        let row = client.query_opt(&select, &[&k])?;
        let answered = Instant::now();
        let got = match row {
            Some(row) => (row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?),
            None => (0, 0),
        };
        let expected = model.add(k, v);
        if got != expected {
            bail!(
                "read-your-writes violated: right after INSERT of id {id} (k = {k}, v = {v}) \
                 returned, v shows (n, s) = {got:?} for k = {k}; expected {expected:?}"
            );
        }
        trips.total_us.push(micros(sent, answered));
        trips.insert_us.push(micros(sent, inserted));
        trips.select_us.push(micros(inserted, answered));
    }
    Ok(trips)
}

struct LatencyOutcome {
    load: CopyOutcome,
    backfill_s: f64,
    trips: RoundTrips,
    usage: CpuUsage,
    rss: RssMarks,
}

fn view_latency_run(
    env: &BenchEnv,
    target: &Target,
    args: &ViewLatencyArgs,
) -> Result<LatencyOutcome> {
    let mut rss = RssMarks::default();
    rss.mark(target.server_pid, "idle");
    run_sql(env, target, KEYED_DDL)?;
    let mut rows = KeyedRows { keys: args.keys };
    let load = copy_in(env, target, "t", CopyFormat::Text, &mut rows, args.rows)?;
    println!(
        "loaded {} rows into t in {:.2} s; creating the view",
        load.rows, load.usage.wall_s
    );
    rss.mark(target.server_pid, "after the load");
    let client = SqlClient::connect(target)?;
    let ((), backfill_s) = timed(|| client.command(KEYED_VIEW_DDL).map(drop))?;
    rss.mark(target.server_pid, "after the backfill");
    let mut model = KeyModel::of_rows(args.rows, args.keys);
    model.check_view(&client)?;
    println!(
        "view v backfilled in {backfill_s:.2} s and checked; {} samples",
        args.samples
    );
    let before = CpuSnapshot::take(target.server_pid, None);
    let trips = read_your_writes(&client, &mut model, args)?;
    let usage =
        CpuSnapshot::take(target.server_pid, None).usage_since(&before, env.clock_ticks_per_s);
    rss.mark(target.server_pid, "at the end");
    Ok(LatencyOutcome {
        load,
        backfill_s,
        trips,
        usage,
        rss,
    })
}

fn view_latency_benchmark(env: &BenchEnv, args: &ViewLatencyArgs) -> Result<()> {
    if args.keys == 0 || args.keys > i32::MAX as u32 {
        bail!("--keys must be between 1 and {}", i32::MAX);
    }
    println!(
        "== view-latency benchmark: {} rows, {} keys, {} samples, EddyDB",
        args.rows, args.keys, args.samples
    );
    println!("table: {KEYED_DDL} (k uniform in 0..{})", args.keys);
    println!("view:  {KEYED_VIEW_DDL}");
    println!("each sample, one connection (tokio-postgres, prepared statements):");
    println!("  {KEYED_INSERT}  -- a random k");
    println!("  {KEYED_SELECT}  -- same k; n must have gone up by one, s by v");
    let mut server = EddyServer::start(env)?;
    let target = server.target();
    let outcome = view_latency_run(env, &target, args).map_err(|e| server.explain(e));
    let outcome = outcome?;
    server.stop()?;
    print_latency_result(args, &outcome);
    Ok(())
}

fn print_latency_result(args: &ViewLatencyArgs, outcome: &LatencyOutcome) {
    let load = &outcome.load;
    println!();
    println!("== view-latency result (EddyDB)");
    println!(
        "rows in t            {} ({} keys), loaded in {:.2} s ({:.0} rows/s)",
        load.rows,
        args.keys,
        load.usage.wall_s,
        load.rows as f64 / load.usage.wall_s.max(1e-9)
    );
    println!(
        "view backfill        {:.2} s (CREATE MATERIALIZED VIEW v)",
        outcome.backfill_s
    );
    let samples = outcome.trips.total_us.len();
    println!("samples              {samples}, every one read its own write");
    print_percentile_header("latency us");
    let trips = &outcome.trips;
    Percentiles::new(trips.total_us.clone()).print_row("INSERT + SELECT");
    Percentiles::new(trips.insert_us.clone()).print_row("INSERT alone");
    Percentiles::new(trips.select_us.clone()).print_row("SELECT alone");
    println!("  (target: INSERT + SELECT p99 < 5000 us, and the same at 1M and 10M rows)");
    outcome.rss.print();
    let usage = &outcome.usage;
    usage.print("psql", available_cores(), true);
    let per_sample = |s: f64| 1e6 * s / samples.max(1) as f64;
    println!(
        "  per sample: server {:.1} us cpu, this program {:.1} us cpu",
        per_sample(usage.server_s),
        per_sample(usage.generator_s)
    );
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

// ---------------------------------------------------------------------------
// The join+aggregate view of view-copy and view-refresh: `orders` joined to
// `customers`, summed per region
// ---------------------------------------------------------------------------

const CUSTOMERS_DDL: &str = "CREATE TABLE customers (id bigint PRIMARY KEY, region text)";
const ORDERS_DDL: &str =
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, amount int)";
const SALES_VIEW_DDL: &str = "CREATE MATERIALIZED VIEW sales AS \
     SELECT c.region, count(*) AS orders, sum(o.amount) AS amount \
     FROM orders o JOIN customers c ON o.customer_id = c.id GROUP BY c.region";
const SALES_VIEW_READ: &str = "SELECT region, orders, amount FROM sales ORDER BY region";
const SALES_ADHOC: &str = "SELECT c.region, count(*) AS orders, sum(o.amount) AS amount \
     FROM orders o JOIN customers c ON o.customer_id = c.id GROUP BY c.region ORDER BY c.region";
/// Regions the customers are spread over: the rows of the view.
const REGIONS: u64 = 16;

/// `customers(id bigint primary key, region text)`: regions `region-00` to
/// `region-15`, uniformly.
struct CustomerRows;

impl RowSource for CustomerRows {
    fn write_row(&mut self, index: u64, delimiter: u8, out: &mut Vec<u8>) {
        let id = index + 1;
        push_u64(out, id);
        out.push(delimiter);
        out.extend_from_slice(b"region-");
        push_two_digits(out, splitmix64(id ^ 0x7265_6769_6f6e) % REGIONS);
        out.push(b'\n');
    }
}

/// (customer_id, amount) of order `id`: any of the customers, an amount in
/// 1..=1000. `salt` 0 gives the loaded rows; a batch's UPDATE uses another.
fn order_row(id: u64, customers: u64, salt: u64) -> (u64, u64) {
    let r = splitmix64(id ^ 0x6f72_6465_7273 ^ salt.rotate_left(40));
    (r % customers + 1, (r >> 40) % 1_000 + 1)
}

/// `orders(id bigint primary key, customer_id bigint, amount int)` from
/// `first_id` on, see [`order_row`].
struct OrderRows {
    customers: u64,
    first_id: u64,
}

impl RowSource for OrderRows {
    fn write_row(&mut self, index: u64, delimiter: u8, out: &mut Vec<u8>) {
        let id = self.first_id + index;
        let (customer, amount) = order_row(id, self.customers, 0);
        push_u64(out, id);
        out.push(delimiter);
        push_u64(out, customer);
        out.push(delimiter);
        push_u64(out, amount);
        out.push(b'\n');
    }
}

/// Creates both tables and loads the customers.
fn load_customers(env: &BenchEnv, target: &Target, customers: u64) -> Result<CopyOutcome> {
    run_sql(env, target, CUSTOMERS_DDL)?;
    run_sql(env, target, ORDERS_DDL)?;
    copy_in(
        env,
        target,
        "customers",
        CopyFormat::Text,
        &mut CustomerRows,
        customers,
    )
}

/// COPYs orders 1..=rows in `copies` statements of about equal size, one
/// psql each; the usage covers all of them.
fn copy_orders(
    env: &BenchEnv,
    target: &Target,
    rows: u64,
    customers: u64,
    copies: u64,
) -> Result<(CpuUsage, u64)> {
    let per_copy = rows.div_ceil(copies.max(1)).max(1);
    let before = CpuSnapshot::take(target.server_pid, None);
    let (mut first, mut bytes) = (0, 0);
    while first < rows {
        let count = per_copy.min(rows - first);
        let mut source = OrderRows {
            customers,
            first_id: first + 1,
        };
        bytes += copy_in(env, target, "orders", CopyFormat::Text, &mut source, count)?.bytes;
        first += count;
    }
    let usage =
        CpuSnapshot::take(target.server_pid, None).usage_since(&before, env.clock_ticks_per_s);
    Ok((usage, bytes))
}

/// The view's rows, after checking them against the ad-hoc query.
struct SalesCheck {
    rows: Vec<Vec<String>>,
    view_read_s: f64,
    adhoc_s: f64,
}

fn check_sales_view(client: &SqlClient) -> Result<SalesCheck> {
    let (rows, view_read_s) = timed(|| client.text_rows(SALES_VIEW_READ))?;
    let (adhoc, adhoc_s) = timed(|| client.text_rows(SALES_ADHOC))?;
    if rows != adhoc {
        bail!(
            "{}: view sales differs from the ad-hoc query\n  view:   {rows:?}\n  ad hoc: {adhoc:?}",
            client.server
        );
    }
    Ok(SalesCheck {
        rows,
        view_read_s,
        adhoc_s,
    })
}

/// Sum of the view's `orders` column, to compare with count(*).
fn sales_order_count(rows: &[Vec<String>]) -> u64 {
    rows.iter()
        .filter_map(|row| row.get(1)?.parse::<u64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------
// view-copy: COPY orders with the join+aggregate view maintained, and without
// ---------------------------------------------------------------------------

/// One fresh server's COPY of the orders, with or without the view.
struct CopySide {
    with_view: bool,
    usage: CpuUsage,
    bytes: u64,
    view_create_s: Option<f64>,
    check: Option<SalesCheck>,
    adhoc_s: f64,
    rss: RssMarks,
}

impl CopySide {
    fn name(&self) -> &'static str {
        if self.with_view {
            "view sales maintained"
        } else {
            "no view"
        }
    }
}

fn view_copy_side(env: &BenchEnv, args: &ViewCopyArgs, with_view: bool) -> Result<CopySide> {
    let mut server = EddyServer::start(env)?;
    let target = server.target();
    println!(
        "-- {}: server up on port {}",
        if with_view {
            "with the view"
        } else {
            "no view"
        },
        target.port
    );
    let side = view_copy_started(env, &target, args, with_view, &server.data);
    let side = side.map_err(|e| server.explain(e))?;
    let data = server.data.clone();
    server.stop()?;
    // The next side's server needs the disk more than this folder does.
    fs::remove_dir_all(&data).with_context(|| format!("cannot remove {}", data.display()))?;
    Ok(side)
}

fn view_copy_started(
    env: &BenchEnv,
    target: &Target,
    args: &ViewCopyArgs,
    with_view: bool,
    data_dir: &Path,
) -> Result<CopySide> {
    let mut rss = RssMarks::default();
    load_customers(env, target, args.customers)?;
    let client = SqlClient::connect(target)?;
    let view_create_s = match with_view {
        true => Some(timed(|| client.command(SALES_VIEW_DDL))?.1),
        false => None,
    };
    rss.mark(target.server_pid, "before the COPY");
    println!(
        "   {} customers loaded; starting the COPY of orders",
        args.customers
    );
    let timeline = args
        .timeline
        .then(|| Timeline::start(target.server_pid, data_dir.to_path_buf()));
    let copied = copy_orders(env, target, args.rows, args.customers, args.copies);
    if let Some(timeline) = timeline {
        timeline.finish(env.clock_ticks_per_s);
    }
    let (usage, bytes) = copied?;
    rss.mark(target.server_pid, "at the end");
    let (count, adhoc_s) = timed(|| client.text_rows(SALES_ADHOC))?;
    if sales_order_count(&count) != args.rows {
        bail!(
            "the join of orders and customers counts {count:?}, not {} orders",
            args.rows
        );
    }
    let check = match with_view {
        true => Some(check_sales_view(&client)?),
        false => None,
    };
    Ok(CopySide {
        with_view,
        usage,
        bytes,
        view_create_s,
        check,
        adhoc_s,
        rss,
    })
}

fn view_copy_benchmark(env: &BenchEnv, args: &ViewCopyArgs) -> Result<()> {
    if args.customers == 0 || args.rows == 0 {
        bail!("--rows and --customers must be at least 1");
    }
    println!(
        "== view-copy benchmark: COPY of {} orders in {} statement(s), {} customers, EddyDB",
        args.rows, args.copies, args.customers
    );
    println!("tables: {CUSTOMERS_DDL}; {ORDERS_DDL}");
    println!("view (created after the customers, before the orders): {SALES_VIEW_DDL}");
    println!("(two fresh servers, one at a time: first no view, then the view)");
    let plain = view_copy_side(env, args, false)?;
    let viewed = view_copy_side(env, args, true)?;
    print_copy_sides(args, &plain, &viewed);
    Ok(())
}

fn print_copy_sides(args: &ViewCopyArgs, plain: &CopySide, viewed: &CopySide) {
    let rate = |side: &CopySide| args.rows as f64 / side.usage.wall_s.max(1e-9);
    println!();
    println!("== view-copy result (EddyDB)");
    println!(
        "orders COPY          {} rows, {:.1} MiB, in {} statement(s)",
        args.rows,
        mib(viewed.bytes),
        args.copies
    );
    for side in [plain, viewed] {
        println!(
            "{:<22} {:>8.2} s {:>12.0} rows/s",
            side.name(),
            side.usage.wall_s,
            rate(side)
        );
    }
    println!(
        "ratio with/without view: {:.3}   (target >= 1000000 rows/s with the view, 2 cores)",
        rate(viewed) / rate(plain).max(1e-9)
    );
    if let Some(created) = viewed.view_create_s {
        println!("view creation        {created:.3} s (over the customers, no orders yet)");
    }
    if let Some(check) = &viewed.check {
        println!(
            "view check           sales ({} rows) equals the ad-hoc join+aggregate; \
             view read {:.1} ms, ad-hoc query {:.2} s",
            check.rows.len(),
            1e3 * check.view_read_s,
            check.adhoc_s
        );
    }
    println!("ad-hoc query, no-view server: {:.2} s", plain.adhoc_s);
    for side in [plain, viewed] {
        println!("-- {}", side.name());
        side.rss.print();
        side.usage.print("psql", available_cores(), true);
    }
}

// ---------------------------------------------------------------------------
// view-refresh: batches of changes, EddyDB maintaining the view beside
// PostgreSQL refreshing it
// ---------------------------------------------------------------------------

const SALES_REFRESH: &str = "REFRESH MATERIALIZED VIEW sales";

/// One batch's statements, the same text for both servers, and the rows
/// each must change.
struct ChangeBatch {
    statements: [String; 3],
    counts: [u64; 3],
}

/// Makes batches of changes to `orders`, tracking which ids exist so that
/// every UPDATE and DELETE hits rows that are there.
struct ChangePlan {
    live: Vec<u64>,
    next_id: u64,
    customers: u64,
    draws: u64,
}

impl ChangePlan {
    fn new(rows: u64, customers: u64) -> ChangePlan {
        ChangePlan {
            live: (1..=rows).collect(),
            next_id: rows + 1,
            customers,
            draws: 0,
        }
    }

    /// A live id at random; `take` also removes it.
    fn pick(&mut self, take: bool) -> u64 {
        self.draws += 1;
        let at = (splitmix64(self.draws ^ 0x6368_616e_6765) % self.live.len() as u64) as usize;
        match take {
            true => self.live.swap_remove(at),
            false => self.live[at],
        }
    }

    /// 40% INSERT, 30% UPDATE, 30% DELETE; `number` (from 1) varies the
    /// updated values between batches.
    fn batch(&mut self, number: u64, size: u64) -> ChangeBatch {
        let (inserts, updates) = (size * 4 / 10, size * 3 / 10);
        let deletes = size - inserts - updates;
        ChangeBatch {
            statements: [
                self.inserts(inserts),
                self.updates(updates, number),
                self.deletes(deletes),
            ],
            counts: [inserts, updates, deletes],
        }
    }

    fn inserts(&mut self, count: u64) -> String {
        let values: Vec<String> = (0..count)
            .map(|_| {
                let id = self.next_id;
                self.next_id += 1;
                self.live.push(id);
                let (customer, amount) = order_row(id, self.customers, 0);
                format!("({id}, {customer}, {amount})")
            })
            .collect();
        format!("INSERT INTO orders VALUES {}", values.join(", "))
    }

    /// Moves orders to other customers (so other regions) with new amounts.
    fn updates(&mut self, count: u64, salt: u64) -> String {
        let mut ids = std::collections::BTreeSet::new();
        while (ids.len() as u64) < count {
            ids.insert(self.pick(false));
        }
        let values: Vec<String> = ids
            .iter()
            .map(|&id| {
                let (customer, amount) = order_row(id, self.customers, salt);
                format!("({id}, {customer}, {amount})")
            })
            .collect();
        format!(
            "UPDATE orders SET customer_id = d.customer_id, amount = d.amount \
             FROM (VALUES {}) AS d(id, customer_id, amount) WHERE orders.id = d.id",
            values.join(", ")
        )
    }

    fn deletes(&mut self, count: u64) -> String {
        let ids: Vec<String> = (0..count).map(|_| self.pick(true).to_string()).collect();
        format!("DELETE FROM orders WHERE id IN ({})", ids.join(", "))
    }
}

/// Microseconds per batch: the whole batch, then each of its parts.
#[derive(Default)]
struct BatchTimes {
    total_us: Vec<u64>,
    /// INSERT, UPDATE, DELETE, REFRESH (zero where there is none).
    parts_us: [Vec<u64>; 4],
}

/// Runs one batch; PostgreSQL then refreshes the view. EddyDB's statements
/// return only once the view reflects them, so nothing follows them.
fn apply_batch(
    client: &SqlClient,
    batch: &ChangeBatch,
    refresh: bool,
    times: &mut BatchTimes,
) -> Result<()> {
    let mut marks = [Instant::now(); 5];
    for (i, (sql, expected)) in batch.statements.iter().zip(batch.counts).enumerate() {
        let changed = client.command(sql)?;
        if changed != expected {
            bail!(
                "{}: `{}` changed {changed} rows, expected {expected}",
                client.server,
                abbreviate(sql, 60)
            );
        }
        marks[i + 1] = Instant::now();
    }
    if refresh {
        client.command(SALES_REFRESH)?;
    }
    marks[4] = Instant::now();
    times.total_us.push(micros(marks[0], marks[4]));
    for (part, pair) in times.parts_us.iter_mut().zip(marks.windows(2)) {
        part.push(micros(pair[0], pair[1]));
    }
    Ok(())
}

struct RefreshSide {
    kind: ServerKind,
    load_s: f64,
    create_s: f64,
    times: BatchTimes,
    usage: CpuUsage,
    check: SalesCheck,
    rss: RssMarks,
}

fn refresh_side(
    env: &BenchEnv,
    kind: ServerKind,
    args: &ViewRefreshArgs,
    batches: &[ChangeBatch],
) -> Result<RefreshSide> {
    let mut server = Server::start(env, kind)?;
    let target = server.target();
    println!("-- {}: server up on port {}", kind.name(), target.port);
    let side = refresh_started(env, &target, args, batches).map_err(|e| server.explain(e));
    let side = side?;
    server.stop()?;
    Ok(side)
}

fn refresh_started(
    env: &BenchEnv,
    target: &Target,
    args: &ViewRefreshArgs,
    batches: &[ChangeBatch],
) -> Result<RefreshSide> {
    let is_eddy = target.kind == ServerKind::Eddydb;
    let ((), load_s) = timed(|| {
        load_customers(env, target, args.customers)?;
        copy_orders(env, target, args.rows, args.customers, 1).map(drop)
    })?;
    if !is_eddy {
        // Fresh statistics and visibility map, as any tuned PostgreSQL has.
        run_sql(env, target, "VACUUM ANALYZE")?;
    }
    let client = SqlClient::connect(target)?;
    let ((), create_s) = timed(|| client.command(SALES_VIEW_DDL).map(drop))?;
    println!("   loaded in {load_s:.2} s, view created in {create_s:.2} s; applying batches");
    let mut rss = RssMarks::default();
    if is_eddy {
        rss.mark(target.server_pid, "before the batches");
    }
    let before = CpuSnapshot::take(target.server_pid, None);
    let mut times = BatchTimes::default();
    for batch in batches {
        apply_batch(&client, batch, !is_eddy, &mut times)?;
    }
    let usage =
        CpuSnapshot::take(target.server_pid, None).usage_since(&before, env.clock_ticks_per_s);
    if is_eddy {
        rss.mark(target.server_pid, "at the end");
    }
    Ok(RefreshSide {
        kind: target.kind,
        load_s,
        create_s,
        times,
        usage,
        check: check_sales_view(&client)?,
        rss,
    })
}

fn view_refresh_benchmark(env: &BenchEnv, args: &ViewRefreshArgs) -> Result<()> {
    if args.customers == 0 || args.rows < u64::from(args.batch_size) || args.batch_size < 10 {
        bail!("need --customers >= 1, --batch-size >= 10 and --rows >= --batch-size");
    }
    let mut plan = ChangePlan::new(args.rows, args.customers);
    let batches: Vec<ChangeBatch> = (1..=u64::from(args.batches))
        .map(|number| plan.batch(number, u64::from(args.batch_size)))
        .collect();
    let counts = batches.first().map_or([0; 3], |b| b.counts);
    println!(
        "== view-refresh benchmark: {} orders, {} customers, {} batches of {} changes \
         ({} INSERT, {} UPDATE, {} DELETE rows)",
        args.rows, args.customers, args.batches, args.batch_size, counts[0], counts[1], counts[2]
    );
    println!("tables: {CUSTOMERS_DDL}; {ORDERS_DDL}");
    println!("view (created after the load): {SALES_VIEW_DDL}");
    println!("each batch, one statement per kind, autocommit, on one tokio-postgres connection:");
    for sql in batches.first().map(|b| &b.statements[..]).unwrap_or(&[]) {
        println!("  {}", abbreviate(sql, 110));
    }
    println!("  then on PostgreSQL only: {SALES_REFRESH}");
    println!("(servers run one at a time; each is stopped before the next starts)");
    let postgres = refresh_side(env, ServerKind::Postgres, args, &batches)?;
    let eddy = refresh_side(env, ServerKind::Eddydb, args, &batches)?;
    print_refresh_sides(&postgres, &eddy);
    if postgres.check.rows != eddy.check.rows {
        bail!(
            "the engines end with different views\n  PostgreSQL: {:?}\n  EddyDB:     {:?}",
            postgres.check.rows,
            eddy.check.rows
        );
    }
    println!(
        "view check           both end with the same sales ({} rows, {} orders), \
         each equal to its ad-hoc query",
        eddy.check.rows.len(),
        sales_order_count(&eddy.check.rows)
    );
    Ok(())
}

fn print_refresh_sides(postgres: &RefreshSide, eddy: &RefreshSide) {
    println!();
    println!("== view-refresh result");
    println!(
        "  {:<22} {:>10} {:>10}   {:>10} {:>10}",
        "per batch, ms", "PG p50", "PG p99", "Eddy p50", "Eddy p99"
    );
    let ms = |us: u64| us as f64 / 1e3;
    let row = |name: &str, pg: &[u64], eddy: Option<&[u64]>| {
        let (pg, eddy) = (
            Percentiles::new(pg.to_vec()),
            eddy.map(|e| Percentiles::new(e.to_vec())),
        );
        let eddy_cell = |q: f64| {
            eddy.as_ref()
                .map_or("-".into(), |e| format!("{:.2}", ms(e.at(q))))
        };
        println!(
            "  {name:<22} {:>10.2} {:>10.2}   {:>10} {:>10}",
            ms(pg.at(0.5)),
            ms(pg.at(0.99)),
            eddy_cell(0.5),
            eddy_cell(0.99)
        );
    };
    row(
        "whole batch",
        &postgres.times.total_us,
        Some(&eddy.times.total_us),
    );
    let names = ["INSERT", "UPDATE", "DELETE", "REFRESH"];
    for (i, name) in names.iter().enumerate() {
        let eddy_part = (i < 3).then_some(&eddy.times.parts_us[i][..]);
        row(name, &postgres.times.parts_us[i], eddy_part);
    }
    let whole = |side: &RefreshSide, q: f64| Percentiles::new(side.times.total_us.clone()).at(q);
    let ratio = |q: f64| whole(postgres, q) as f64 / whole(eddy, q).max(1) as f64;
    println!(
        "ratio PostgreSQL/EddyDB per-batch time: p50 {:.2}, p99 {:.2}",
        ratio(0.5),
        ratio(0.99)
    );
    for side in [postgres, eddy] {
        println!(
            "-- {}: load {:.2} s, CREATE MATERIALIZED VIEW {:.2} s, final view read {:.1} ms, \
             ad-hoc query {:.2} s",
            side.kind.name(),
            side.load_s,
            side.create_s,
            1e3 * side.check.view_read_s,
            side.check.adhoc_s
        );
        side.rss.print();
        side.usage
            .print("psql", available_cores(), side.kind == ServerKind::Eddydb);
        let batches = side.times.total_us.len().max(1) as f64;
        println!(
            "  per batch: server {:.1} ms cpu",
            1e3 * side.usage.server_s / batches
        );
    }
}

// ---------------------------------------------------------------------------
// source-ingest: datagen events into a per-key view, from a backlog
// (throughput) and from a paced stream (freshness)
// ---------------------------------------------------------------------------

/// The events of every part; `ts` has no kind, so it follows the event
/// clock (row i at start.time + i / rows.per.second).
const EVENT_COLUMNS: &str =
    "user_id bigint, event_type varchar, amount numeric(10,2), page varchar, ts timestamptz";
const EVENT_FIELDS: &str = "fields.user_id.kind = 'random', fields.user_id.min = '1', \
     fields.user_id.max = '100000', fields.event_type.kind = 'choice', \
     fields.event_type.values = 'view,click,cart,buy', fields.amount.kind = 'random', \
     fields.amount.min = '0', fields.amount.max = '1000', fields.page.kind = 'random', \
     fields.page.length = '8', datagen.seed = '7'";
/// The JSON keys, in column order, as arrow-json writes them.
const EVENT_NAMES: [&str; 5] = ["user_id", "event_type", "amount", "page", "ts"];
const PER_USER_VIEW: &str = "CREATE MATERIALIZED VIEW per_user AS \
     SELECT user_id, count(*) AS n FROM events GROUP BY user_id";
const PER_USER_TOTAL: &str = "SELECT sum(n) FROM per_user";
const LATEST_VIEW: &str = "CREATE MATERIALIZED VIEW latest AS \
     SELECT event_type AS k, count(*) AS n, max(ts) AS last FROM events GROUP BY event_type";
const LATEST_READ: &str = "SELECT max(last), sum(n) FROM latest";
const PER_USER_READER_ROWS: &str = "SELECT sum(rows) FROM eddy_catalog.source_partitions \
     WHERE source = 'events' AND feeds = 'per_user'";
const EVENTS_STATUS: &str = "SELECT \"offset\", rows, events_per_second, bad_records, status \
     FROM eddy_catalog.source_partitions WHERE source = 'events'";
/// The backlog's event clock: with a start a day back, 86.4 G rows are due,
/// so all of `--rows` is due at once and replayed at full speed.
const BACKLOG_ROWS_PER_SECOND: u64 = 1_000_000;
/// Leading rows of the stream read back to size its JSON messages.
const PROBE_ROWS: u64 = 10_000;
/// Give up on a view that has not reached its count by then.
const INGEST_TIMEOUT: Duration = Duration::from_secs(1_800);
/// Unmeasured seconds of the paced stream before the freshness window.
const FRESHNESS_WARMUP: Duration = Duration::from_secs(2);

/// `CREATE SOURCE name` of the events, with the part's own `options`.
fn events_source_ddl(name: &str, options: &str, json: bool) -> String {
    datagen_source_ddl(name, EVENT_COLUMNS, EVENT_FIELDS, options, json)
}

/// `CREATE SOURCE name (columns)` of a datagen source with the column
/// options `fields` and the source options `options`, read as JSON
/// messages or as typed rows.
fn datagen_source_ddl(
    name: &str,
    columns: &str,
    fields: &str,
    options: &str,
    json: bool,
) -> String {
    let format = if json {
        " FORMAT PLAIN ENCODE JSON"
    } else {
        ""
    };
    format!(
        "CREATE SOURCE {name} ({columns}) \
         WITH (connector = 'datagen', {fields}, {options}){format}"
    )
}

/// A source paced at `rate` events per second from its creation on.
fn paced_options(rate: u64) -> String {
    format!("datagen.rows.per.second = '{rate}'")
}

/// `datagen.start.time` a day before now, so the whole backlog is due.
fn backlog_options(rows: u64) -> String {
    backlog_options_at(rows, BACKLOG_ROWS_PER_SECOND)
}

/// [`backlog_options`] with `rate` events per second of event time.
fn backlog_options_at(rows: u64, rate: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut start = Vec::new();
    push_timestamp(&mut start, now - 86_400);
    format!(
        "datagen.rows = '{rows}', datagen.rows.per.second = '{rate}', \
         datagen.start.time = '{}+00'",
        String::from_utf8_lossy(&start)
    )
}

/// The backlog source of a source-ingest run, with its watermark if asked.
fn ingest_source_ddl(args: &SourceIngestArgs, json: bool) -> String {
    let ddl = events_source_ddl(
        "events",
        &backlog_options_at(args.rows, args.event_rate),
        json,
    );
    match args.watermark_s {
        Some(s) => ddl.replacen(
            EVENT_COLUMNS,
            &format!("{EVENT_COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{s} seconds'"),
            1,
        ),
        None => ddl,
    }
}

/// Bytes of the JSON message arrow-json's `LineDelimitedWriter` makes of
/// one event, from the row's PostgreSQL text: bigint and numeric(10,2) are
/// written with the same digits, the strings are letters (quoted, nothing
/// escaped), and the timestamp is RFC 3339 with `Z` and 0, 3 or 6 fraction
/// digits.
fn event_json_len(row: &[String]) -> usize {
    let mut len = 2 + EVENT_NAMES.len() - 1;
    for (name, value) in EVENT_NAMES.iter().zip(row) {
        len += name.len() + 3;
        len += match *name {
            "event_type" | "page" => value.len() + 2,
            "ts" => rfc3339_len(value) + 2,
            _ => value.len(),
        };
    }
    len
}

/// Length of `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z` for PostgreSQL's text of
/// the same instant, which drops trailing zeros of the fraction.
fn rfc3339_len(pg_text: &str) -> usize {
    let digits = pg_text.find('.').map_or(0, |dot| {
        pg_text[dot + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count()
    });
    let fraction = match digits {
        0 => 0,
        1..=3 => 4,
        _ => 7,
    };
    19 + fraction + 1
}

/// Microseconds since the epoch of a timestamptz in PostgreSQL's text form.
fn parse_timestamptz_us(text: &str) -> Result<i64> {
    chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .map(|t| t.timestamp_micros())
        .with_context(|| format!("cannot parse the timestamptz `{text}`"))
}

fn unix_now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The first integer of a one-row answer, NULL as 0.
fn first_count(client: &SqlClient, sql: &str) -> Result<u64> {
    let rows = client.text_rows(sql)?;
    let cell = rows.first().and_then(|r| r.first()).map_or("NULL", |c| c);
    match cell {
        "NULL" => Ok(0),
        n => n
            .parse()
            .with_context(|| format!("`{sql}` gave `{n}`, not a count")),
    }
}

/// Reads `sql` every `poll` until it counts `rows`; returns the reads made.
fn wait_for_count(client: &SqlClient, sql: &str, rows: u64, poll: Duration) -> Result<u32> {
    let deadline = Instant::now() + INGEST_TIMEOUT;
    let mut reads = 0;
    loop {
        let got = first_count(client, sql)?;
        reads += 1;
        if got == rows {
            return Ok(reads);
        }
        if got > rows || Instant::now() > deadline {
            bail!("`{sql}` counts {got} after {reads} reads; expected {rows}");
        }
        std::thread::sleep(poll);
    }
}

/// Average JSON message of the first [`PROBE_ROWS`] events, read back
/// through a throwaway source and view with the same options, then dropped.
fn probe_event_bytes(client: &SqlClient, args: &SourceIngestArgs) -> Result<f64> {
    let rows = PROBE_ROWS.min(args.rows).max(1);
    client.command(&events_source_ddl("probe", &backlog_options(rows), true))?;
    let names = EVENT_NAMES.join(", ");
    client.command(&format!(
        "CREATE MATERIALIZED VIEW probe_rows AS SELECT {names} FROM probe"
    ))?;
    let poll = Duration::from_millis(args.poll_ms);
    wait_for_count(client, "SELECT count(*) FROM probe_rows", rows, poll)?;
    let sample = client.text_rows(&format!("SELECT {names} FROM probe_rows"))?;
    client.command("DROP SOURCE probe CASCADE")?;
    let bytes: usize = sample.iter().map(|row| event_json_len(row)).sum();
    if let Some(row) = sample.first() {
        println!("   first probe row: {}", row.join(" | "));
    }
    Ok(bytes as f64 / sample.len().max(1) as f64)
}

/// One backlog run: from CREATE MATERIALIZED VIEW until the view counts
/// every event.
struct IngestRun {
    json: bool,
    rows: u64,
    reads: u32,
    usage: CpuUsage,
    /// Server CPU in the second before the view, and in the second after
    /// the stream ended (a reader at rest should use none).
    idle_before: CpuUsage,
    idle_after: CpuUsage,
    /// One read of the full view, timed after the run.
    read_us: Percentiles,
    status: Vec<Vec<String>>,
    rss: RssMarks,
    event_bytes: Option<f64>,
    /// Resident MiB and the aggregate's state after each tenth of the events.
    rss_by_tenth: Vec<(f64, String)>,
}

impl IngestRun {
    fn name(&self) -> &'static str {
        match self.json {
            true => "ENCODE JSON",
            false => "typed rows",
        }
    }

    fn events_per_s(&self) -> f64 {
        self.rows as f64 / self.usage.wall_s.max(1e-9)
    }

    fn events_per_cpu_s(&self) -> f64 {
        self.rows as f64 / self.usage.server_s.max(1e-9)
    }
}

/// Server CPU over the next second, with nothing asked of it.
fn idle_second(env: &BenchEnv, pid: u32) -> CpuUsage {
    let before = CpuSnapshot::take(pid, None);
    std::thread::sleep(Duration::from_secs(1));
    CpuSnapshot::take(pid, None).usage_since(&before, env.clock_ticks_per_s)
}

fn ingest_run(
    env: &BenchEnv,
    target: &Target,
    args: &SourceIngestArgs,
    json: bool,
) -> Result<IngestRun> {
    let client = SqlClient::connect(target)?;
    let event_bytes = match json {
        true => Some(probe_event_bytes(&client, args)?),
        false => None,
    };
    let mut setup = vec![ingest_source_ddl(args, json)];
    setup.extend(args.view.setup().map(str::to_string));
    let watched = match args.watch {
        IngestWatch::View => PER_USER_TOTAL,
        IngestWatch::Status => PER_USER_READER_ROWS,
    };
    let check = |client: &SqlClient| check_view_total(client, args.rows * args.view.copies());
    let plan = BacklogPlan {
        setup,
        create: vec![args.view.create().to_string()],
        watch: vec![watched.to_string()],
        state_of: ("per_user", "aggregate"),
        check: &check,
        read: PER_USER_TOTAL,
        status: EVENTS_STATUS,
    };
    let poll = Duration::from_millis(args.poll_ms);
    let run = backlog_run(env, target, &client, &plan, args.rows, poll)?;
    Ok(IngestRun {
        json,
        event_bytes,
        ..run
    })
}

/// What a backlog run makes, waits for and checks.
struct BacklogPlan<'a> {
    /// Made before the clock starts: the source, tables, functions, plain
    /// views.
    setup: Vec<String>,
    /// Made once the clock has started: the measured views.
    create: Vec<String>,
    /// Counts waited for in turn until each reaches the run's rows; the
    /// first is the one sampled by tenths ([`wait_for_count_sampling`]).
    watch: Vec<String>,
    /// The operator whose state is sampled, as [`operator_state`] takes it.
    state_of: (&'a str, &'a str),
    /// Fails unless the views hold what their readers read; run once the
    /// clock has stopped.
    check: &'a dyn Fn(&SqlClient) -> Result<()>,
    /// Timed 20 times after the run.
    read: &'a str,
    /// The source's rows of `eddy_catalog.source_partitions`, in the
    /// columns [`print_run_tail`] labels.
    status: &'a str,
}

/// One backlog run of `rows` events by `plan`: from its first `create`
/// until every watched count reaches `rows`. The run is typed rows with
/// no message size; a JSON run says otherwise.
fn backlog_run(
    env: &BenchEnv,
    target: &Target,
    client: &SqlClient,
    plan: &BacklogPlan,
    rows: u64,
    poll: Duration,
) -> Result<IngestRun> {
    let pid = target.server_pid;
    for statement in &plan.setup {
        client.command(statement)?;
    }
    let mut rss = RssMarks::default();
    rss.mark(pid, "before the view");
    let idle_before = idle_second(env, pid);
    let before = CpuSnapshot::take(pid, None);
    for statement in &plan.create {
        client.command(statement)?;
    }
    let Some((first, rest)) = plan.watch.split_first() else {
        bail!("bug: a backlog run with no count to wait for");
    };
    let (mut reads, rss_by_tenth) =
        wait_for_count_sampling(client, first, rows, poll, pid, plan.state_of)?;
    for watched in rest {
        reads += wait_for_count(client, watched, rows, poll)?;
    }
    let usage = CpuSnapshot::take(pid, None).usage_since(&before, env.clock_ticks_per_s);
    rss.mark(pid, "at the end");
    (plan.check)(client)?;
    let idle_after = idle_second(env, pid);
    let mut read_us = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        client.text_rows(plan.read)?;
        read_us.push(micros(started, Instant::now()));
    }
    Ok(IngestRun {
        json: false,
        rows,
        reads,
        usage,
        idle_before,
        idle_after,
        read_us: Percentiles::new(read_us),
        status: client.text_rows(plan.status)?,
        rss,
        event_bytes: None,
        rss_by_tenth,
    })
}

/// The state EXPLAIN reports for the first operator of `view` whose line
/// names `operator` (in any case) and has a state, e.g. `12.5 MiB`.
fn operator_state(client: &SqlClient, view: &str, operator: &str) -> Result<String> {
    let lines = client.text_rows(&format!("EXPLAIN {view}"))?;
    let operator = operator.to_ascii_lowercase();
    Ok(lines
        .iter()
        .flatten()
        .find(|l| l.contains("[state ") && l.to_ascii_lowercase().contains(&operator))
        .and_then(|l| {
            l.rsplit_once("[state ")
                .map(|(_, s)| s.trim_end_matches(']').to_string())
        })
        .unwrap_or_else(|| "?".to_string()))
}

/// [`wait_for_count`], sampling the server's resident memory (VmRSS, MiB)
/// and the state of one operator, `(view, operator)` as [`operator_state`]
/// takes them, each time another tenth of `rows` has been counted.
fn wait_for_count_sampling(
    client: &SqlClient,
    sql: &str,
    rows: u64,
    poll: Duration,
    pid: u32,
    state_of: (&str, &str),
) -> Result<(u32, Vec<(f64, String)>)> {
    let deadline = Instant::now() + INGEST_TIMEOUT;
    let (mut reads, mut samples) = (0, Vec::new());
    loop {
        let got = first_count(client, sql)?;
        reads += 1;
        while (samples.len() as u64) < 10 && got * 10 >= rows * (samples.len() as u64 + 1) {
            let rss = mib(vm_rss_bytes(pid).unwrap_or(0));
            samples.push((rss, operator_state(client, state_of.0, state_of.1)?));
        }
        if got == rows {
            return Ok((reads, samples));
        }
        if got > rows || Instant::now() > deadline {
            bail!("`{sql}` counts {got} after {reads} reads; expected {rows}");
        }
        std::thread::sleep(poll);
    }
}

/// A query of one view answering (newest event time, events counted), read
/// by [`freshness_run`].
#[derive(Debug, Clone, Copy)]
struct FreshnessRead {
    view: &'static str,
    sql: &'static str,
    /// The name of its staleness row in [`print_freshness`].
    label: &'static str,
}

/// The freshness read of source-ingest and context-join: the view
/// `latest`, shaped as [`LATEST_VIEW`].
const LATEST_FRESHNESS: FreshnessRead = FreshnessRead {
    view: "latest",
    sql: LATEST_READ,
    label: "now - max(last)",
};

/// One view's staleness, sampled on the client clock.
struct Staleness {
    read: FreshnessRead,
    /// now − newest event time, taken when each answer arrived: an upper
    /// bound.
    lag_us: Vec<u64>,
    /// The same with now taken when the read was sent: a lower bound
    /// (negative ones count as 0).
    lag_at_send_us: Vec<u64>,
    /// Round trip of each read of the view.
    read_us: Vec<u64>,
    /// The view's count at each read.
    counts: Vec<u64>,
}

impl Staleness {
    fn new(read: FreshnessRead) -> Staleness {
        Staleness {
            read,
            lag_us: Vec::new(),
            lag_at_send_us: Vec::new(),
            read_us: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// Reads the view once and keeps the sample.
    fn sample(&mut self, client: &SqlClient) -> Result<()> {
        let (sent_us, sent) = (unix_now_us(), Instant::now());
        let latest = read_latest(client, self.read.sql)?;
        let (now_us, answered) = (unix_now_us(), Instant::now());
        let view = self.read.view;
        let (last_us, n) = latest.ok_or_else(|| anyhow!("view {view} became empty"))?;
        self.lag_us
            .push(u64::try_from(now_us - last_us).unwrap_or(0));
        self.lag_at_send_us
            .push(u64::try_from(sent_us - last_us).unwrap_or(0));
        self.read_us.push(micros(sent, answered));
        self.counts.push(n);
        Ok(())
    }

    /// Events the view counted over the window.
    fn counted(&self) -> u64 {
        match (self.counts.first(), self.counts.last()) {
            (Some(first), Some(last)) => last.saturating_sub(*first),
            _ => 0,
        }
    }
}

/// The staleness of one or more views behind a paced stream.
struct Freshness {
    /// One per read, in the order [`freshness_run`] was given them.
    views: Vec<Staleness>,
    usage: CpuUsage,
    status: Vec<Vec<String>>,
    rss: RssMarks,
}

/// One read of `sql`, shaped as [`LATEST_READ`]: (newest event time in µs
/// since the epoch, events counted).
fn read_latest(client: &SqlClient, sql: &str) -> Result<Option<(i64, u64)>> {
    let rows = client.text_rows(sql)?;
    match rows.first().map(Vec::as_slice) {
        Some([last, n]) if last != "NULL" => Ok(Some((parse_timestamptz_us(last)?, n.parse()?))),
        _ => Ok(None),
    }
}

/// The newest visible event may trail the clock by this much when the
/// freshness window opens.
const CAUGHT_UP: Duration = Duration::from_secs(1);
/// How long a view that starts behind its paced source may take to catch up
/// before its freshness is measured anyway.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// Reads each of `reads` every `poll_ms` for `seconds`, after `setup` has
/// created a paced source and the views they read; `status` is the
/// source's rows of `eddy_catalog.source_partitions`.
fn freshness_run(
    env: &BenchEnv,
    target: &Target,
    setup: &[String],
    reads: &[FreshnessRead],
    status: &str,
    seconds: u32,
    poll_ms: u64,
) -> Result<Freshness> {
    let pid = target.server_pid;
    let client = SqlClient::connect(target)?;
    for statement in setup {
        client.command(statement)?;
    }
    let poll = Duration::from_millis(poll_ms);
    let deadline = Instant::now() + Duration::from_secs(60);
    for read in reads {
        while read_latest(&client, read.sql)?.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "view {} is still empty a minute after its creation",
                    read.view
                );
            }
            std::thread::sleep(poll);
        }
    }
    for read in reads {
        wait_caught_up(&client, read, poll)?;
    }
    std::thread::sleep(FRESHNESS_WARMUP);
    let mut rss = RssMarks::default();
    rss.mark(pid, "after the warm-up");
    let mut views: Vec<Staleness> = reads.iter().map(|read| Staleness::new(*read)).collect();
    let before = CpuSnapshot::take(pid, None);
    let window = Duration::from_secs(u64::from(seconds));
    while before.at.elapsed() < window {
        for view in &mut views {
            view.sample(&client)?;
        }
        std::thread::sleep(poll);
    }
    let usage = CpuSnapshot::take(pid, None).usage_since(&before, env.clock_ticks_per_s);
    rss.mark(pid, "at the end");
    Ok(Freshness {
        views,
        usage,
        status: client.text_rows(status)?,
        rss,
    })
}

/// A view that had a backfill to do (a join with a large table) starts
/// behind its paced source: waits until its newest event is less than
/// [`CAUGHT_UP`] old, or says how far behind it still is after
/// [`CATCH_UP_LIMIT`] and goes on.
fn wait_caught_up(client: &SqlClient, read: &FreshnessRead, poll: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let latest = read_latest(client, read.sql)?;
        let (last_us, _) = latest.ok_or_else(|| anyhow!("view {} became empty", read.view))?;
        let lag_us = unix_now_us() - last_us;
        if lag_us < CAUGHT_UP.as_micros() as i64 {
            return Ok(());
        }
        if started.elapsed() > CATCH_UP_LIMIT {
            println!(
                "   view {} is still {:.1} s behind its source after {CATCH_UP_LIMIT:?}; \
                 measuring anyway",
                read.view,
                lag_us as f64 / 1e6
            );
            return Ok(());
        }
        std::thread::sleep(poll);
    }
}

/// A fresh server for one part, started with `--workers` if given.
fn ingest_server(env: &BenchEnv, workers: Option<usize>, part: &str) -> Result<EddyServer> {
    let extra = match workers {
        Some(n) => vec!["--workers".to_string(), n.to_string()],
        None => Vec::new(),
    };
    let server = EddyServer::start_with(env, &extra)?;
    println!("-- {part}: server up on port {}", server.port);
    Ok(server)
}

fn source_ingest_benchmark(env: &BenchEnv, args: &SourceIngestArgs) -> Result<()> {
    if args.rows == 0 || args.rate == 0 || args.seconds == 0 {
        bail!("--rows, --rate and --seconds must be at least 1");
    }
    let workers = args
        .workers
        .map_or("the server's default".to_string(), |n| n.to_string());
    println!(
        "== source-ingest benchmark: {} events of backlog, freshness at {} events/s for {} s, \
         workers: {workers}, reads every {} ms",
        args.rows, args.rate, args.seconds, args.poll_ms
    );
    println!(
        "source: {}",
        events_source_ddl("events", "<part's options>", true)
    );
    println!(
        "backlog: {}",
        backlog_options_at(args.rows, args.event_rate)
    );
    if let Some(s) = args.watermark_s {
        println!("watermark: ts - {s} s");
    }
    println!("throughput view: {}", args.view.create());
    println!(
        "until the last event: every {} ms `{}`",
        args.poll_ms,
        match args.watch {
            IngestWatch::View => PER_USER_TOTAL,
            IngestWatch::Status => PER_USER_READER_ROWS,
        }
    );
    println!("freshness view:  {LATEST_VIEW}; read: {LATEST_READ}");
    let mut runs = Vec::new();
    for json in [true, false] {
        let part = if json {
            IngestPart::Json
        } else {
            IngestPart::Typed
        };
        if args.parts.contains(&part) {
            let mut server = ingest_server(env, args.workers, &format!("{part:?} backlog"))?;
            let run = ingest_run(env, &server.target(), args, json);
            runs.push(run.map_err(|e| server.explain(e))?);
            server.stop()?;
        }
    }
    let freshness = match args.parts.contains(&IngestPart::Freshness) {
        true => {
            let mut server = ingest_server(env, args.workers, "freshness")?;
            let setup = [
                events_source_ddl("events", &paced_options(args.rate), true),
                LATEST_VIEW.to_string(),
            ];
            let run = freshness_run(
                env,
                &server.target(),
                &setup,
                &[LATEST_FRESHNESS],
                EVENTS_STATUS,
                args.seconds,
                args.poll_ms,
            );
            let run = run.map_err(|e| server.explain(e))?;
            server.stop()?;
            Some(run)
        }
        false => None,
    };
    print_ingest_runs(&runs, args.view);
    if let Some(freshness) = &freshness {
        print_freshness(
            "source-ingest freshness result (ENCODE JSON, paced)",
            args.rate,
            args.poll_ms,
            freshness,
        );
    }
    Ok(())
}

fn print_ingest_runs(runs: &[IngestRun], view: IngestView) {
    let target = match view {
        IngestView::Count => "target >= 1000000 per core for JSON decode + count",
        IngestView::Tumble | IngestView::TumbleMinute => {
            "target >= 1000000 per core for a tumbling count per key"
        }
        IngestView::Hop => "target >= 300000 per core for a hopping count per key",
        IngestView::Session => "no target set for a session count per key",
        IngestView::Lookup | IngestView::Join => {
            "target >= 1000000 on 2 cores for a stream-table join"
        }
    };
    for run in runs {
        println!();
        println!("== source-ingest backlog result ({})", run.name());
        if let Some(bytes) = run.event_bytes {
            println!(
                "JSON message size    {bytes:.1} bytes on average (first {PROBE_ROWS} events)"
            );
        }
        println!(
            "events               {} in {:.2} s (CREATE MATERIALIZED VIEW until all {} \
             visible; {} polls)",
            run.rows, run.usage.wall_s, run.rows, run.reads
        );
        println!("throughput           {:.0} events/s", run.events_per_s());
        println!(
            "server CPU           {:.2} s: {:.0} events per CPU-second   ({target})",
            run.usage.server_s,
            run.events_per_cpu_s()
        );
        println!(
            "one read of the view {} us p50, {} us max (after the run, 20 reads)",
            run.read_us.at(0.5),
            run.read_us.max()
        );
        print_idle_and_tenths(run, "aggregate state");
        print_run_tail(&run.status, &run.rss, &run.usage);
    }
    if let (Some(json), Some(typed)) = (runs.iter().find(|r| r.json), runs.iter().find(|r| !r.json))
    {
        let per_event = |run: &IngestRun| run.usage.server_s / run.rows as f64;
        println!(
            "JSON encode + decode: {:.0}% of the server CPU per event \
             ({:.2} us with JSON, {:.2} us typed)",
            100.0 * (1.0 - per_event(typed) / per_event(json).max(1e-12)),
            1e6 * per_event(json),
            1e6 * per_event(typed)
        );
    }
}

/// A backlog run's server CPU at rest around it, and its resident memory
/// and sampled operator state (under the heading `state`) by tenth.
fn print_idle_and_tenths(run: &IngestRun, state: &str) {
    let share = |usage: &CpuUsage| 100.0 * usage.server_s / usage.wall_s.max(1e-9);
    let busiest = run.idle_after.server_threads_s.first();
    println!(
        "server idle          {:.1}% of a core the second before the view, \
         {:.1}% the second after the last event (busiest thread: {})",
        share(&run.idle_before),
        share(&run.idle_after),
        busiest.map_or("none".to_string(), |(name, s)| format!("{name} {s:.2} s"))
    );
    let tenths: Vec<String> = run
        .rss_by_tenth
        .iter()
        .map(|(m, _)| format!("{m:.0}"))
        .collect();
    println!("RSS by tenth (MiB)   {}", tenths.join(" "));
    let states: Vec<&str> = run.rss_by_tenth.iter().map(|(_, s)| s.as_str()).collect();
    println!("{state:<20} {}", states.join(" | "));
}

/// Fails unless `sum(n)` of the per-user view equals `expected` (the rows
/// its reader counted, times the windows each is in).
fn check_view_total(client: &SqlClient, expected: u64) -> Result<()> {
    let total = first_count(client, PER_USER_TOTAL)?;
    if total != expected {
        bail!("the view sums to {total}, not the {expected} its reader's events make");
    }
    Ok(())
}

/// The source's status rows, the server's peak RSS and the CPU of a run.
fn print_run_tail(status: &[Vec<String>], rss: &RssMarks, usage: &CpuUsage) {
    for row in status {
        println!(
            "source_partitions    offset, rows, events/s, bad, status: {}",
            row.join(", ")
        );
    }
    rss.print();
    usage.print("clients", available_cores(), true);
}

/// A freshness run's figures under the heading `== {title}`; with several
/// views, each is named before its rows.
fn print_freshness(title: &str, rate: u64, poll_ms: u64, run: &Freshness) {
    println!();
    println!("== {title}");
    let Some(first) = run.views.first() else {
        println!("no view was read");
        return;
    };
    let several = run.views.len() > 1;
    let per_s = |n: u64| n as f64 / run.usage.wall_s.max(1e-9);
    let the_view = match several {
        true => format!("view {}", first.read.view),
        false => "the view".to_string(),
    };
    println!(
        "paced source         {} events/s; {the_view} counted {} events in the {:.1} s window \
         ({:.0} events/s)",
        rate,
        first.counted(),
        run.usage.wall_s,
        per_s(first.counted())
    );
    for view in &run.views[1..] {
        println!(
            "                     view {} counted {} events ({:.0} events/s)",
            view.read.view,
            view.counted(),
            per_s(view.counted())
        );
    }
    let each = if several { " of each view" } else { "" };
    println!(
        "samples              {}, one read{each} every {} ms",
        first.lag_us.len(),
        poll_ms
    );
    print_percentile_header("us");
    for view in &run.views {
        if several {
            println!("  {}: {}", view.read.view, view.read.sql);
        }
        Percentiles::new(view.lag_us.clone()).print_row(view.read.label);
        Percentiles::new(view.lag_at_send_us.clone()).print_row("  with now at the send");
        Percentiles::new(view.read_us.clone()).print_row("read round trip");
    }
    println!("  (staleness of the view: the newest visible event's time against the client's");
    println!("  clock when the answer arrived; event time = due time, so it includes pacing,");
    println!("  the reader's poll, the commit and the read)");
    print_run_tail(&run.status, &run.rss, &run.usage);
}

// ---------------------------------------------------------------------------
// kafka-ingest: the same events through a local tansu broker, read by a bare
// rdkafka consumer and by EddyDB into the per-key view, in the same run
// ---------------------------------------------------------------------------

/// How long the broker may take to answer its first metadata request (a
/// debug build on a loaded machine is slow to start).
const BROKER_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one admin or metadata request to the broker.
const BROKER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A drain that sees no message for this long has lost some: give up.
const DRAIN_STALL: Duration = Duration::from_secs(30);
/// Producing waits at most this long for the last delivery reports.
const PRODUCE_FLUSH_TIMEOUT: Duration = Duration::from_secs(600);
const KAFKA_TOPIC: &str = "events";
/// librdkafka producer settings: a 50 ms linger fills batches of up to
/// 10,000 events (~1 MB) per partition; the queue holds 500,000 events.
const PRODUCER_SETTINGS: [(&str, &str); 4] = [
    ("linger.ms", "50"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "500000"),
    ("compression.type", "none"),
];
const KAFKA_STATUS: &str = "SELECT partition, \"offset\", high_watermark, rows, bad_records, \
     status FROM eddy_catalog.source_partitions WHERE source = 'events' ORDER BY partition";

/// A tansu broker on a free loopback port, in a folder of the scratch dir.
struct Broker {
    child: Child,
    port: u16,
    log: PathBuf,
    token: Token,
    cleanup: Cleanup,
}

impl Broker {
    fn start(env: &BenchEnv, tansu: &Path, storage: BrokerStorage) -> Result<Broker> {
        if !tansu.is_file() {
            bail!(
                "no tansu broker at {} (use --tansu or EDDYDB_TANSU)",
                tansu.display()
            );
        }
        let dir = env.scratch.path.join("tansu");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log = dir.join("broker.log");
        let port = free_loopback_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let engine = match storage {
            BrokerStorage::Memory => "memory://tansu/",
            BrokerStorage::Sqlite => "sqlite://tansu.db",
        };
        let child = Command::new(tansu)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", engine])
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(File::create(&log).context("cannot create the broker log")?)
            .stderr(Stdio::from(File::options().append(true).open(&log)?))
            .spawn()
            .with_context(|| format!("cannot start {}", tansu.display()))?;
        let token = env.cleanup.register(Action::Terminate { pid: child.id() });
        let mut broker = Broker {
            child,
            port,
            log,
            token,
            cleanup: env.cleanup.clone(),
        };
        broker.wait_until_ready().map_err(|e| broker.explain(e))?;
        Ok(broker)
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    /// Until a metadata request lists the broker; a TCP connect comes first
    /// so librdkafka's reconnect back-off never delays the answer.
    fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + BROKER_STARTUP_TIMEOUT;
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut last_error = "not polled".to_string();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("tansu exited during startup ({status})");
            }
            match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                Ok(_) => match self.broker_count() {
                    Ok(n) if n > 0 => return Ok(()),
                    Ok(_) => last_error = "metadata lists no broker".to_string(),
                    Err(e) => last_error = format!("metadata request: {e:#}"),
                },
                Err(e) => last_error = format!("connect {address}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("tansu not ready within {BROKER_STARTUP_TIMEOUT:?}: {last_error}")
    }

    fn admin(&self) -> Result<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>> {
        self.client_config()
            .create()
            .context("cannot create a Kafka admin client")
    }

    fn broker_count(&self) -> Result<usize> {
        let metadata = self
            .admin()?
            .inner()
            .fetch_metadata(None, BROKER_REQUEST_TIMEOUT)?;
        Ok(metadata.brokers().len())
    }

    /// CreateTopics through the admin API, then waits until every partition
    /// has a leader.
    fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
        let admin = self.admin()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new()
            .request_timeout(Some(BROKER_REQUEST_TIMEOUT))
            .operation_timeout(Some(BROKER_REQUEST_TIMEOUT));
        let results = futures::executor::block_on(admin.create_topics([&topic], &options))
            .with_context(|| format!("CreateTopics {name}"))?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("cannot create topic {topic}: {code}");
            }
        }
        let deadline = Instant::now() + BROKER_REQUEST_TIMEOUT;
        loop {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(name), BROKER_REQUEST_TIMEOUT)?;
            let ready = metadata.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("topic {name} has no {partitions} led partitions after {BROKER_REQUEST_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn explain(&mut self, error: anyhow::Error) -> anyhow::Error {
        explain_child("tansu", &mut self.child, &self.log, error)
    }

    /// SIGTERM (SIGKILL after the grace period) and reap.
    fn stop(mut self) -> Result<()> {
        self.cleanup.run(self.token);
        self.child.wait().context("cannot reap tansu")?;
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.cleanup.run(self.token);
        let _ = self.child.wait();
    }
}

/// Appends event `index` as one JSON message of the shape the datagen
/// source's `ENCODE JSON` writes (about 105 bytes), with `ts` one
/// microsecond after the previous event's, from `start_us`.
fn push_event_json(index: u64, start_us: i64, out: &mut Vec<u8>) {
    const TYPES: [&str; 4] = ["view", "click", "cart", "buy"];
    const LETTERS: &[u8; 52] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let r1 = splitmix64(index ^ 0x5eed);
    let r2 = splitmix64(r1);
    out.extend_from_slice(b"{\"user_id\":");
    push_u64(out, 1 + r1 % 100_000);
    out.extend_from_slice(b",\"event_type\":\"");
    out.extend_from_slice(TYPES[(r1 >> 20) as usize % TYPES.len()].as_bytes());
    out.extend_from_slice(b"\",\"amount\":");
    let cents = (r1 >> 24) % 100_001;
    push_u64(out, cents / 100);
    out.push(b'.');
    push_two_digits(out, cents % 100);
    out.extend_from_slice(b",\"page\":\"");
    for i in 0..8 {
        out.push(LETTERS[((r2 >> (i * 6)) % 52) as usize]);
    }
    out.extend_from_slice(b"\",\"ts\":\"");
    let ts_us = start_us + index as i64;
    let at = out.len();
    push_timestamp(out, ts_us.div_euclid(1_000_000));
    if let Some(space) = out[at..].iter().position(|b| *b == b' ') {
        out[at + space] = b'T';
    }
    out.push(b'.');
    let fraction = ts_us.rem_euclid(1_000_000) as u64;
    for divisor in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(b'0' + (fraction / divisor % 10) as u8);
    }
    out.extend_from_slice(b"Z\"}");
}

/// Counts delivery reports; the first failure is kept for the message.
#[derive(Default)]
struct DeliveryCount {
    delivered: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for DeliveryCount {}

impl rdkafka::producer::ProducerContext for DeliveryCount {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        use std::sync::atomic::Ordering::Relaxed;
        match result {
            Ok(_) => self.delivered.fetch_add(1, Relaxed),
            Err((error, _)) => {
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| error.to_string());
                self.failed.fetch_add(1, Relaxed)
            }
        };
    }
}

/// One pass over the topic: producing it, or draining it.
struct KafkaPass {
    name: String,
    rows: u64,
    bytes: u64,
    wall_s: f64,
    /// The producer or consumer: this program, or the EddyDB server.
    client_s: f64,
    broker_s: f64,
    machine_s: f64,
    load: String,
}

impl KafkaPass {
    fn events_per_s(&self) -> f64 {
        self.rows as f64 / self.wall_s.max(1e-9)
    }
}

/// CPU ticks of this program, the broker and the machine, now.
struct KafkaClock {
    at: Instant,
    own: u64,
    broker: u64,
    machine: u64,
}

impl KafkaClock {
    fn start(broker: &Broker) -> KafkaClock {
        KafkaClock {
            at: Instant::now(),
            own: proc_times("self").map_or(0, |(_, own, _)| own),
            broker: tree_ticks(broker.pid()),
            machine: machine_busy_ticks(),
        }
    }

    /// The pass since `start`; the client is this program unless
    /// `client_s` (the server's, measured apart) is given.
    fn pass(&self, env: &BenchEnv, broker: &Broker, name: &str, rows: u64) -> KafkaPass {
        let now = KafkaClock::start(broker);
        let secs = |end: u64, begin: u64| end.saturating_sub(begin) as f64 / env.clock_ticks_per_s;
        KafkaPass {
            name: name.to_string(),
            rows,
            bytes: 0,
            wall_s: now.at.duration_since(self.at).as_secs_f64(),
            client_s: secs(now.own, self.own),
            broker_s: secs(now.broker, self.broker),
            machine_s: secs(now.machine, self.machine),
            load: load_average(),
        }
    }
}

fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Produces `rows` events, partition `i % partitions` for event `i`, and
/// returns once the broker has acknowledged every one.
fn produce_events(env: &BenchEnv, broker: &Broker, args: &KafkaIngestArgs) -> Result<KafkaPass> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let mut config = broker.client_config();
    for (key, value) in PRODUCER_SETTINGS {
        config.set(key, value);
    }
    let clock = KafkaClock::start(broker);
    let producer: BaseProducer<DeliveryCount> = config
        .create_with_context(DeliveryCount::default())
        .context("cannot create the Kafka producer")?;
    let start_us = unix_now_us() - 86_400_000_000;
    let (mut event, mut bytes) = (Vec::with_capacity(256), 0u64);
    for index in 0..args.rows {
        event.clear();
        push_event_json(index, start_us, &mut event);
        bytes += event.len() as u64;
        if index == 0 {
            println!("   first event: {}", String::from_utf8_lossy(&event));
        }
        let partition = (index % args.partitions as u64) as i32;
        loop {
            let record = BaseRecord::<(), [u8]>::to(KAFKA_TOPIC)
                .partition(partition)
                .payload(event.as_slice());
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((error, _)) => bail!("cannot produce event {index}: {error}"),
            }
        }
        if index % 1_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(PRODUCE_FLUSH_TIMEOUT)
        .context("the producer's flush did not finish")?;
    let mut pass = clock.pass(env, broker, "produce (rdkafka BaseProducer)", args.rows);
    pass.bytes = bytes;
    let counts = producer.context();
    let delivered = counts.delivered.load(std::sync::atomic::Ordering::Relaxed);
    let failed = counts.failed.load(std::sync::atomic::Ordering::Relaxed);
    if delivered != args.rows {
        let first = counts.first_error.lock().unwrap_or_else(|e| e.into_inner());
        bail!(
            "{delivered} of {} events delivered, {failed} failed (first: {})",
            args.rows,
            first.as_deref().unwrap_or("none")
        );
    }
    Ok(pass)
}

/// A bare rdkafka consumer: every partition assigned from its beginning,
/// nothing committed, drained until it has read every event. Each offset
/// must follow the previous one of its partition (tansu's memory engine
/// skips the rest of a batch when a fetch starts inside it).
fn drain_bare(
    env: &BenchEnv,
    broker: &Broker,
    args: &KafkaIngestArgs,
    run: u32,
) -> Result<KafkaPass> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let mut config = broker.client_config();
    config
        .set("group.id", "eddydb-bench-bare")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let clock = KafkaClock::start(broker);
    let consumer: BaseConsumer = config.create().context("cannot create the consumer")?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in 0..args.partitions {
        assignment.add_partition_offset(KAFKA_TOPIC, partition, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut next_offset = vec![0i64; args.partitions as usize];
    let (mut read, mut bytes, mut last_message) = (0u64, 0u64, Instant::now());
    while read < args.rows {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let expected = &mut next_offset[message.partition() as usize];
                if message.offset() != *expected {
                    bail!(
                        "partition {} jumped from offset {} to {}",
                        message.partition(),
                        *expected,
                        message.offset()
                    );
                }
                *expected += 1;
                bytes += message.payload().map_or(0, |p| p.len() as u64);
                read += 1;
                last_message = Instant::now();
            }
            Some(Err(error)) => bail!("the bare consumer failed: {error}"),
            None if last_message.elapsed() > DRAIN_STALL => {
                bail!(
                    "the bare consumer read {read} of {} events, then nothing for {DRAIN_STALL:?}",
                    args.rows
                )
            }
            None => {}
        }
    }
    let mut pass = clock.pass(env, broker, &format!("bare rdkafka consumer #{run}"), read);
    pass.bytes = std::hint::black_box(bytes);
    Ok(pass)
}

fn kafka_source_ddl(broker: &Broker) -> String {
    format!(
        "CREATE SOURCE events ({EVENT_COLUMNS}) WITH (connector = 'kafka', \
         topic = '{KAFKA_TOPIC}', properties.bootstrap.server = '{}', \
         scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON",
        broker.bootstrap()
    )
}

/// EddyDB's run: a fresh server, the source, then the clock from CREATE
/// MATERIALIZED VIEW until the view's reader has read every event.
struct KafkaEddyRun {
    pass: KafkaPass,
    usage: CpuUsage,
    reads: u32,
    status: Vec<Vec<String>>,
    rss: RssMarks,
}

fn drain_eddy(env: &BenchEnv, broker: &Broker, args: &KafkaIngestArgs) -> Result<KafkaEddyRun> {
    let extra = match args.workers {
        Some(n) => vec!["--workers".to_string(), n.to_string()],
        None => Vec::new(),
    };
    let mut server = EddyServer::start_with(env, &extra)?;
    println!("-- EddyDB: server up on port {}", server.port);
    let run = drain_eddy_started(env, broker, args, &server.target());
    let run = run.map_err(|e| server.explain(e))?;
    server.stop()?;
    Ok(run)
}

fn drain_eddy_started(
    env: &BenchEnv,
    broker: &Broker,
    args: &KafkaIngestArgs,
    target: &Target,
) -> Result<KafkaEddyRun> {
    let pid = target.server_pid;
    let client = SqlClient::connect(target)?;
    client.command(&kafka_source_ddl(broker))?;
    if let Some(setup) = args.view.setup() {
        client.command(setup)?;
    }
    let mut rss = RssMarks::default();
    rss.mark(pid, "before the view");
    let before = CpuSnapshot::take(pid, None);
    let clock = KafkaClock::start(broker);
    client.command(args.view.create())?;
    let poll = Duration::from_millis(args.poll_ms);
    let reads = wait_for_count(&client, PER_USER_READER_ROWS, args.rows, poll)?;
    let usage = CpuSnapshot::take(pid, None).usage_since(&before, env.clock_ticks_per_s);
    let mut pass = clock.pass(env, broker, "EddyDB into per_user", args.rows);
    pass.client_s = usage.server_s;
    rss.mark(pid, "at the end");
    check_view_total(&client, args.rows * args.view.copies())?;
    Ok(KafkaEddyRun {
        pass,
        usage,
        reads,
        status: client.text_rows(KAFKA_STATUS)?,
        rss,
    })
}

fn kafka_ingest_benchmark(env: &BenchEnv, args: &KafkaIngestArgs) -> Result<()> {
    if args.rows == 0 || args.partitions < 1 {
        bail!("--rows and --partitions must be at least 1");
    }
    println!(
        "== kafka-ingest benchmark: {} events over {} partitions, tansu {} ({:?} storage)",
        args.rows,
        args.partitions,
        args.tansu.display(),
        args.storage
    );
    let mut broker = Broker::start(env, &args.tansu, args.storage)?;
    println!(
        "broker up on {} (pid {}); topic `{KAFKA_TOPIC}`",
        broker.bootstrap(),
        broker.pid()
    );
    let passes = kafka_passes(env, &broker, args).map_err(|e| broker.explain(e));
    let (produced, drains, eddy) = passes?;
    broker.stop()?;
    print_kafka_result(args, &produced, &drains, &eddy);
    Ok(())
}

/// Produce, then bare / EddyDB / bare over the same topic.
fn kafka_passes(
    env: &BenchEnv,
    broker: &Broker,
    args: &KafkaIngestArgs,
) -> Result<(KafkaPass, Vec<KafkaPass>, KafkaEddyRun)> {
    broker.create_topic(KAFKA_TOPIC, args.partitions)?;
    let settings: Vec<String> = PRODUCER_SETTINGS
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("producing ({}, acks=all)", settings.join(", "));
    let produced = produce_events(env, broker, args)?;
    println!(
        "   {} events in {:.2} s; bare consumer #1",
        produced.rows, produced.wall_s
    );
    let first = drain_bare(env, broker, args, 1)?;
    println!("   {:.2} s; EddyDB", first.wall_s);
    println!("source: {}", kafka_source_ddl(broker));
    println!("view:   {}", args.view.create());
    println!(
        "until the last event: every {} ms `{PER_USER_READER_ROWS}`",
        args.poll_ms
    );
    let eddy = drain_eddy(env, broker, args)?;
    println!("   {:.2} s; bare consumer #2", eddy.pass.wall_s);
    let second = drain_bare(env, broker, args, 2)?;
    Ok((produced, vec![first, second], eddy))
}

fn print_kafka_result(
    args: &KafkaIngestArgs,
    produced: &KafkaPass,
    drains: &[KafkaPass],
    eddy: &KafkaEddyRun,
) {
    println!();
    println!("== kafka-ingest result");
    println!(
        "JSON message size    {:.1} bytes on average ({} events, {:.1} MiB)",
        produced.bytes as f64 / produced.rows.max(1) as f64,
        produced.rows,
        mib(produced.bytes)
    );
    println!(
        "  {:<32} {:>8} {:>10} {:>9} {:>9} {:>9}  load",
        "pass (in run order)", "wall s", "events/s", "client s", "broker s", "machine s"
    );
    let row = |pass: &KafkaPass| {
        println!(
            "  {:<32} {:>8.2} {:>10.0} {:>9.2} {:>9.2} {:>9.2}  {}",
            pass.name,
            pass.wall_s,
            pass.events_per_s(),
            pass.client_s,
            pass.broker_s,
            pass.machine_s,
            pass.load
        );
    };
    row(produced);
    if let Some((first, rest)) = drains.split_first() {
        row(first);
        row(&eddy.pass);
        rest.iter().for_each(row);
    }
    println!("  (client: the producer or bare consumer is this program, EddyDB is its server)");
    let bare = drains.iter().map(KafkaPass::events_per_s).sum::<f64>() / drains.len().max(1) as f64;
    let ratio = eddy.pass.events_per_s() / bare.max(1e-9);
    println!(
        "ratio EddyDB / mean(bare) = {:.0} / {:.0} = {ratio:.2}   (target >= 0.9: {})",
        eddy.pass.events_per_s(),
        bare,
        if ratio >= 0.9 { "met" } else { "missed" }
    );
    println!(
        "EddyDB server CPU    {:.2} s: {:.0} events per CPU-second; {} polls of the count",
        eddy.usage.server_s,
        args.rows as f64 / eddy.usage.server_s.max(1e-9),
        eddy.reads
    );
    for row in &eddy.status {
        println!(
            "source_partitions    partition, offset, high watermark, rows, bad, status: {}",
            row.join(", ")
        );
    }
    eddy.rss.print();
    eddy.usage.print("clients", available_cores(), true);
}

// ---------------------------------------------------------------------------
// checkpoints: the cost of checkpoints on ingest, and checkpoint and restart
// figures by state size
// ---------------------------------------------------------------------------

/// Datagen events over `keys` users, typed (no JSON), with `options`:
/// users drawn at random, or one new user per event (`sequential`).
fn keyed_events_ddl(keys: u64, sequential: bool, options: &str) -> String {
    let users = match sequential {
        true => format!(
            "fields.user_id.kind = 'sequence', fields.user_id.start = '1', \
             fields.user_id.end = '{keys}'"
        ),
        false => format!(
            "fields.user_id.kind = 'random', fields.user_id.min = '1', \
             fields.user_id.max = '{keys}'"
        ),
    };
    format!(
        "CREATE SOURCE events (user_id bigint, amount numeric(10,2), ts timestamptz) \
         WITH (connector = 'datagen', {users}, fields.amount.kind = 'random', \
               fields.amount.min = '0', fields.amount.max = '1000', datagen.seed = '7', \
               {options})"
    )
}

const KEYED_VIEW: &str = "CREATE MATERIALIZED VIEW per_user AS \
     SELECT user_id, count(*) AS n, sum(amount) AS s FROM events GROUP BY user_id";

/// The source of `--cold-keys`: one event per key, as fast as it goes.
fn cold_events_ddl(keys: u64) -> String {
    keyed_events_ddl(keys, true, &backlog_options(keys)).replacen(
        "CREATE SOURCE events",
        "CREATE SOURCE cold_events",
        1,
    )
}

/// The per-key view, over the events and, with `cold_keys`, the cold ones.
fn keyed_view(cold_keys: u64) -> String {
    match cold_keys {
        0 => KEYED_VIEW.to_string(),
        _ => KEYED_VIEW.replacen(
            "FROM events",
            "FROM (SELECT user_id, amount FROM events \
             UNION ALL SELECT user_id, amount FROM cold_events) AS e",
            1,
        ),
    }
}
const KEYED_READER_ROWS: &str = "SELECT sum(rows) FROM eddy_catalog.source_partitions \
     WHERE feeds = 'per_user'";
const COLD_READER_ROWS: &str = "SELECT sum(rows) FROM eddy_catalog.source_partitions \
     WHERE feeds = 'per_user' AND source = 'cold_events'";
const HOT_READER_ROWS: &str = "SELECT sum(rows) FROM eddy_catalog.source_partitions \
     WHERE feeds = 'per_user' AND source = 'events'";
const LAST_CHECKPOINT_ID: &str =
    "SELECT coalesce(max(checkpoint_id), 0) FROM eddy_catalog.checkpoints";
const CHECKPOINT_FIGURES: &str = "SELECT count(*), coalesce(avg(snapshot_ms), 0), \
     coalesce(max(snapshot_ms), 0), coalesce(avg(duration_ms), 0), \
     coalesce(max(duration_ms), 0), coalesce(sum(bytes_written), 0), \
     coalesce(max(state_bytes), 0) FROM eddy_catalog.checkpoints";
const LAST_CHECKPOINT: &str = "SELECT checkpoint_id, snapshot_ms, duration_ms, bytes_written, \
     state_bytes FROM eddy_catalog.checkpoints ORDER BY checkpoint_id DESC LIMIT 1";

fn checkpoint_server_args(args: &CheckpointArgs, interval: &str) -> Vec<String> {
    let mut extra = vec!["--checkpoint-interval".to_string(), interval.to_string()];
    if let Some(n) = args.workers {
        extra.extend(["--workers".to_string(), n.to_string()]);
    }
    extra
}

fn checkpoint_benchmark(env: &BenchEnv, args: &CheckpointArgs) -> Result<()> {
    if args.ingest_keys == 0 {
        bail!("--ingest-keys must be at least 1");
    }
    println!(
        "== checkpoints benchmark: {} events over {} keys, with checkpoints every {} and \
         with none; state runs of {:?} groups",
        args.rows, args.ingest_keys, args.interval, args.state_keys
    );
    println!(
        "source: {}",
        keyed_events_ddl(args.ingest_keys, false, &backlog_options(args.rows))
    );
    if args.cold_keys > 0 {
        println!("cold:   {}", cold_events_ddl(args.cold_keys));
    }
    println!("view:   {}", keyed_view(args.cold_keys));
    let poll = Duration::from_millis(args.poll_ms);
    let intervals = match args.rows {
        0 => Vec::new(),
        _ => vec!["0", args.interval.as_str()],
    };
    for interval in intervals {
        let mut server = EddyServer::start_with(env, &checkpoint_server_args(args, interval))?;
        let run = checkpoint_ingest_run(env, &server, args, interval, poll);
        run.map_err(|e| server.explain(e))?;
        server.stop()?;
    }
    for keys in args.state_keys.iter().copied().filter(|k| *k > 0) {
        checkpoint_state_run(env, args, keys, poll)?;
    }
    Ok(())
}

/// One backlog through the per-key view; prints rate, CPU and checkpoints.
fn checkpoint_ingest_run(
    env: &BenchEnv,
    server: &EddyServer,
    args: &CheckpointArgs,
    interval: &str,
    poll: Duration,
) -> Result<()> {
    let target = server.target();
    let client = SqlClient::connect(&target)?;
    client.command(&keyed_events_ddl(
        args.ingest_keys,
        false,
        &backlog_options(args.rows),
    ))?;
    if args.cold_keys > 0 {
        client.command(&cold_events_ddl(args.cold_keys))?;
    }
    let mut before = CpuSnapshot::take(target.server_pid, None);
    client.command(&keyed_view(args.cold_keys))?;
    // With cold keys, the figures are of the events read once every cold
    // key is in the state, and of the checkpoints taken from then on.
    let (mut rows, mut first_checkpoint) = (args.rows + args.cold_keys, 0);
    if args.cold_keys > 0 {
        wait_for_count(&client, COLD_READER_ROWS, args.cold_keys, poll)?;
        before = CpuSnapshot::take(target.server_pid, None);
        let read = first_count(&client, HOT_READER_ROWS)?;
        first_checkpoint = first_count(&client, LAST_CHECKPOINT_ID)? + 1;
        println!();
        println!(
            "cold keys read      {} cold keys in the state, {read} events read then; \
             figures below are of the {} events after, and checkpoints from {first_checkpoint}",
            args.cold_keys,
            args.rows - read
        );
        rows = args.rows - read;
    }
    wait_for_count(&client, KEYED_READER_ROWS, args.rows + args.cold_keys, poll)?;
    let usage =
        CpuSnapshot::take(target.server_pid, None).usage_since(&before, env.clock_ticks_per_s);
    let total = first_count(&client, "SELECT sum(n) FROM per_user")?;
    if total != args.rows + args.cold_keys {
        bail!(
            "per_user counts {total} events, expected {}",
            args.rows + args.cold_keys
        );
    }
    let figures = client.text_rows(&CHECKPOINT_FIGURES.replace(
        "FROM eddy_catalog.checkpoints",
        &format!("FROM eddy_catalog.checkpoints WHERE checkpoint_id >= {first_checkpoint}"),
    ))?;
    let f = figures.first().context("no checkpoint figures")?;
    println!();
    println!("== checkpoints ingest result (--checkpoint-interval {interval})");
    println!(
        "events/s             {:.0} (wall {:.2} s)",
        rows as f64 / usage.wall_s.max(1e-9),
        usage.wall_s
    );
    println!(
        "events per CPU-s     {:.0} (server CPU {:.2} s)",
        rows as f64 / usage.server_s.max(1e-9),
        usage.server_s
    );
    print_checkpoint_figures(f);
    Ok(())
}

/// A row of [`CHECKPOINT_FIGURES`].
fn print_checkpoint_figures(f: &[String]) {
    let at = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    println!(
        "checkpoints          {} taken; snapshot avg {:.1} ms max {:.1} ms; \
         written in avg {:.1} ms max {:.1} ms; {:.1} MiB written; largest state {:.1} MiB",
        at(0),
        at(1),
        at(2),
        at(3),
        at(4),
        mib(at(5) as u64),
        mib(at(6) as u64),
    );
}

/// A view of `keys` groups: the checkpoint a clean shutdown writes, then the
/// time from starting the server again until the view answers in full.
fn checkpoint_state_run(
    env: &BenchEnv,
    args: &CheckpointArgs,
    keys: u64,
    poll: Duration,
) -> Result<()> {
    let extra = checkpoint_server_args(args, &args.state_interval);
    let mut server = EddyServer::start_with(env, &extra)?;
    let target = server.target();
    let data = server.data.clone();
    let ingest = || -> Result<(f64, u64)> {
        let client = SqlClient::connect(&target)?;
        client.command(&keyed_events_ddl(keys, true, &backlog_options(keys)))?;
        let started = Instant::now();
        client.command(KEYED_VIEW)?;
        wait_for_count(&client, KEYED_READER_ROWS, keys, poll)?;
        Ok((
            started.elapsed().as_secs_f64(),
            vm_hwm_bytes(target.server_pid).unwrap_or(0),
        ))
    };
    let (ingest_s, peak) = ingest().map_err(|e| server.explain(e))?;
    // SIGTERM: readers stop, and the server writes a last checkpoint.
    let stopping = Instant::now();
    server.stop()?;
    let stop_s = stopping.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut server = EddyServer::start_in(env, data.clone(), &extra)?;
    let listening_s = started.elapsed().as_secs_f64();
    let target = server.target();
    let serve = || -> Result<(u64, Vec<String>)> {
        let client = SqlClient::connect(&target)?;
        let count = first_count(&client, "SELECT count(*) FROM per_user")?;
        let last = client.text_rows(LAST_CHECKPOINT)?;
        Ok((count, last.into_iter().next().unwrap_or_default()))
    };
    let (count, last) = serve().map_err(|e| server.explain(e))?;
    let serving_s = started.elapsed().as_secs_f64();
    let rss = vm_hwm_bytes(target.server_pid).unwrap_or(0);
    server.stop()?;
    if count != keys {
        bail!("per_user has {count} groups after the restart, expected {keys}");
    }
    let number = |i: usize| {
        last.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    println!();
    println!("== checkpoints state result ({keys} groups)");
    println!(
        "ingest               {ingest_s:.2} s; server peak RSS {:.1} MiB",
        mib(peak)
    );
    println!(
        "last checkpoint      #{} at shutdown: state {:.1} MiB, snapshot {:.0} ms, \
         written in {:.0} ms ({:.1} MiB written); SIGTERM to exit {stop_s:.2} s",
        last.first().map_or("?", String::as_str),
        number(4) / (1u64 << 20) as f64,
        number(1),
        number(2),
        number(3) / (1u64 << 20) as f64,
    );
    println!(
        "restart              listening after {listening_s:.2} s, view answering in full \
         after {serving_s:.2} s; peak RSS after restart {:.1} MiB",
        mib(rss)
    );
    println!("data folder          {:.1} MiB", mib(dir_bytes(&data)));
    Ok(())
}

/// Bytes of the files under `path`.
fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

// ---------------------------------------------------------------------------
// context-join: a fast event stream decorated with a large context table,
// through a temporal (lookup) join or a regular one, into a small count
// ---------------------------------------------------------------------------

const CONTEXTS_DDL: &str = "CREATE TABLE contexts (context_id bigint PRIMARY KEY, \
     customer text, device_type text, device_id text, ip text, connection text, \
     updated_at timestamptz)";
/// The device types of the contexts, drawn uniformly: the groups of the views.
const DEVICE_TYPES: [&str; 16] = [
    "phone-android",
    "phone-ios",
    "tablet-android",
    "tablet-ios",
    "laptop-windows",
    "laptop-macos",
    "desktop-windows",
    "desktop-linux",
    "smart-tv",
    "set-top-box",
    "game-console",
    "smartwatch",
    "smart-speaker",
    "e-reader",
    "car-infotainment",
    "iot-sensor",
];
const CONNECTION_KINDS: [&str; 8] = [
    "wifi",
    "ethernet",
    "lte",
    "5g",
    "dsl",
    "fiber",
    "cable",
    "satellite",
];
/// Letters of the provider named in `connection`: they bring a row to about
/// 200 bytes of CSV.
const PROVIDER_LETTERS: usize = 44;
const CONTEXT_EVENT_COLUMNS: &str = "id bigint, context_id bigint, ts timestamptz, pad varchar";
/// Letters of `pad`: with them an event is about 100 bytes as a JSON message.
const CONTEXT_EVENT_PAD: u64 = 20;
const DECORATED_READER_ROWS: &str = "SELECT sum(rows) FROM eddy_catalog.source_partitions \
     WHERE source = 'events' AND feeds = 'decorated'";
const DECORATED_READ: &str = "SELECT device_type, events FROM decorated";
const PROBE_KEYS_READER_ROWS: &str = "SELECT sum(rows) FROM eddy_catalog.source_partitions \
     WHERE source = 'events' AND feeds = 'probe_keys'";
/// What a table-change probe reads until its change shows.
const PROBE_READ: &str = "SELECT events FROM decorated WHERE device_type = $1";
/// Pause between two reads of a probe's group.
const PROBE_POLL: Duration = Duration::from_micros(200);
/// Give up on a probe whose change has not shown by then.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// `contexts`: context ids 0..rows, each row about 200 bytes of CSV and a
/// function of its id alone; see [`device_type`].
struct ContextRows;

/// The device type of context `id`, uniform over [`DEVICE_TYPES`].
fn device_type(id: u64) -> &'static str {
    DEVICE_TYPES[(splitmix64(id ^ 0x6465_7669_6365) % DEVICE_TYPES.len() as u64) as usize]
}

/// `count` lowercase letters drawn from `seed`, 12 from each splitmix64
/// output.
fn push_letters(out: &mut Vec<u8>, seed: u64, count: usize) {
    let mut bits = splitmix64(seed);
    for i in 0..count {
        if i > 0 && i % 12 == 0 {
            bits = splitmix64(bits);
        }
        out.push(b'a' + ((bits >> (i % 12 * 5)) & 31) as u8 % 26);
    }
}

/// The low `digits` hexadecimal digits of `value`, lowercase.
fn push_hex(out: &mut Vec<u8>, value: u64, digits: u32) {
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[((value >> (4 * i)) & 15) as usize]);
    }
}

impl RowSource for ContextRows {
    fn write_row(&mut self, index: u64, delimiter: u8, out: &mut Vec<u8>) {
        // One independent draw per field.
        let draw = |field: u64| splitmix64(index.wrapping_mul(16) | field);
        push_u64(out, index);
        out.push(delimiter);
        // customer: an e-mail address.
        push_letters(out, draw(1), 12);
        out.push(b'.');
        push_letters(out, draw(2), 12);
        out.push(b'@');
        push_letters(out, draw(3), 10);
        out.extend_from_slice(b".example.com");
        out.push(delimiter);
        out.extend_from_slice(device_type(index).as_bytes());
        out.push(delimiter);
        // device_id: a UUID.
        let (high, low) = (draw(4), draw(5));
        push_hex(out, high >> 32, 8);
        out.push(b'-');
        push_hex(out, high >> 16, 4);
        out.push(b'-');
        push_hex(out, high, 4);
        out.push(b'-');
        push_hex(out, low >> 48, 4);
        out.push(b'-');
        push_hex(out, low, 12);
        out.push(delimiter);
        let ip = draw(6);
        out.extend_from_slice(b"10.");
        push_u64(out, ip & 255);
        out.push(b'.');
        push_u64(out, (ip >> 8) & 255);
        out.push(b'.');
        push_u64(out, (ip >> 16) & 255);
        out.push(delimiter);
        let kind = CONNECTION_KINDS[((ip >> 32) % CONNECTION_KINDS.len() as u64) as usize];
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b" via ");
        push_letters(out, draw(7), PROVIDER_LETTERS);
        out.push(delimiter);
        push_timestamp(out, TIMESTAMP_BASE_S + (draw(8) % 31_536_000) as i64);
        out.extend_from_slice(b"+00");
        out.push(b'\n');
    }
}

/// `CREATE SOURCE events` of the context-join: ids in sequence, context ids
/// uniform over the table's, `ts` on the event clock, and padding letters.
fn context_events_ddl(args: &ContextJoinArgs, options: &str) -> String {
    let fields = format!(
        "fields.id.kind = 'sequence', fields.context_id.kind = 'random', \
         fields.context_id.min = '0', fields.context_id.max = '{}', \
         fields.pad.kind = 'random', fields.pad.length = '{CONTEXT_EVENT_PAD}', \
         datagen.seed = '11'",
        args.rows.saturating_sub(1)
    );
    datagen_source_ddl("events", CONTEXT_EVENT_COLUMNS, &fields, options, args.json)
}

/// The throughput view: events counted per device type of their context,
/// so its output stays small and the join is what is measured.
fn decorated_view(join: JoinKind) -> String {
    format!(
        "CREATE MATERIALIZED VIEW decorated AS SELECT c.device_type, count(*) AS events \
         FROM events e {} ON e.context_id = c.context_id GROUP BY c.device_type",
        join.contexts()
    )
}

/// The freshness view over the same join, named and shaped as
/// [`LATEST_VIEW`], so that [`freshness_run`] reads it.
fn decorated_latest_view(join: JoinKind) -> String {
    format!(
        "CREATE MATERIALIZED VIEW latest AS SELECT c.device_type AS k, count(*) AS n, \
         max(e.ts) AS last FROM events e {} ON e.context_id = c.context_id \
         GROUP BY c.device_type",
        join.contexts()
    )
}

fn context_join_benchmark(env: &BenchEnv, args: &ContextJoinArgs) -> Result<()> {
    if args.rows == 0 || args.events == 0 || args.event_rate == 0 || args.rate == 0 {
        bail!("--rows, --events, --event-rate and --rate must be at least 1");
    }
    let workers = args
        .workers
        .map_or("the server's default".to_string(), |n| n.to_string());
    println!(
        "== context-join benchmark: {} context rows, {} events, {} join, workers: {workers}, \
         reads every {} ms",
        args.rows,
        args.events,
        args.join.name(),
        args.poll_ms
    );
    println!("table:  {CONTEXTS_DDL}");
    println!(
        "load:   COPY contexts FROM STDIN WITH (FORMAT csv) through psql, rows made {}",
        match args.csv_file {
            true => "here into a file first, then read by psql",
            false => "here while psql sends them",
        }
    );
    println!(
        "source: {}",
        context_events_ddl(args, &backlog_options_at(args.events, args.event_rate))
    );
    println!("view:   {}", decorated_view(args.join));
    println!(
        "until the last event: every {} ms `{DECORATED_READER_ROWS}`",
        args.poll_ms
    );
    if args.join == JoinKind::Regular && args.probes > 0 {
        println!(
            "table-change probes: {} x `UPDATE contexts SET device_type = 'probe-<i>' \
             WHERE context_id = <k>`, then `{PROBE_READ}` until non-zero",
            args.probes
        );
    }
    if args.seconds > 0 {
        println!(
            "freshness: {} events/s for {} s into {}; read: {LATEST_READ}",
            args.rate,
            args.seconds,
            decorated_latest_view(args.join)
        );
    }
    let probe_rows = args.rows.min(GENERATOR_PROBE_ROWS);
    let (rate, probe_bytes) = generator_rate(&mut ContextRows, probe_rows);
    println!(
        "generator alone: {:.0} rows/s on one core ({:.1} bytes/row)",
        rate,
        probe_bytes as f64 / probe_rows.max(1) as f64
    );
    let mut server = ingest_server(env, args.workers, "context-join")?;
    let run = context_join_run(env, &server, args);
    run.map_err(|e| server.explain(e))?;
    server.stop()?;
    Ok(())
}

/// The parts in order on one server, each printing its result when done.
fn context_join_run(env: &BenchEnv, server: &EddyServer, args: &ContextJoinArgs) -> Result<()> {
    let target = server.target();
    let csv_bytes = context_load(env, &target, &server.data, args)?;
    let client = SqlClient::connect(&target)?;
    context_join_throughput(env, &target, &client, args, csv_bytes)?;
    match (args.join, args.probes) {
        (_, 0) => {}
        (JoinKind::Regular, _) => context_probes(&client, args)?,
        (JoinKind::Temporal, _) => {
            println!();
            println!(
                "(table-change latency not measured: a temporal join does not revise what it \
                 has joined when a context changes; --join regular measures it)"
            );
        }
    }
    if args.seconds > 0 {
        client.command("DROP SOURCE events CASCADE")?;
        let setup = [
            context_events_ddl(args, &paced_options(args.rate)),
            decorated_latest_view(args.join),
        ];
        let run = freshness_run(
            env,
            &target,
            &setup,
            &[LATEST_FRESHNESS],
            EVENTS_STATUS,
            args.seconds,
            args.poll_ms,
        )?;
        let title = format!(
            "context-join freshness result ({} join, {}, paced)",
            args.join.name(),
            if args.json {
                "ENCODE JSON"
            } else {
                "typed rows"
            }
        );
        print_freshness(&title, args.rate, args.poll_ms, &run);
    }
    Ok(())
}

/// Creates `contexts` and loads it with one COPY; prints the figures and
/// returns the bytes of CSV sent.
fn context_load(
    env: &BenchEnv,
    target: &Target,
    data: &Path,
    args: &ContextJoinArgs,
) -> Result<u64> {
    let pid = target.server_pid;
    run_sql(env, target, CONTEXTS_DDL)?;
    let idle = vm_rss_bytes(pid).unwrap_or(0);
    println!("   table created; loading {} rows", args.rows);
    if args.csv_file {
        println!("   writing the CSV to a scratch file first (--csv-file; off the clock)");
    }
    let load = copy_in_from(
        env,
        target,
        "contexts",
        CopyFormat::Csv,
        &mut ContextRows,
        args.rows,
        args.csv_file,
    )?;
    let (resident, peak) = (
        vm_rss_bytes(pid).unwrap_or(0),
        vm_hwm_bytes(pid).unwrap_or(0),
    );
    let (apparent, allocated) = dir_size(data);
    let wall_s = load.usage.wall_s.max(1e-9);
    let of_csv = |bytes: u64| bytes as f64 / load.bytes.max(1) as f64;
    println!();
    println!("== context-join load result");
    println!(
        "rows loaded          {} (one COPY ... WITH (FORMAT csv))",
        load.rows
    );
    println!(
        "CSV stream           {} bytes ({:.1} MiB, {:.1} bytes/row)",
        load.bytes,
        mib(load.bytes),
        load.bytes as f64 / load.rows.max(1) as f64
    );
    println!("COPY wall time       {:.2} s", load.usage.wall_s);
    println!(
        "throughput           {:.0} rows/s, {:.1} MiB/s of CSV",
        load.rows as f64 / wall_s,
        mib(load.bytes) / wall_s
    );
    println!(
        "server memory        {:.1} MiB resident after the load (VmRSS; {:.2}x the CSV), \
         peak {:.1} MiB (VmHWM; {:.2}x the CSV); {:.1} MiB before it",
        mib(resident),
        of_csv(resident),
        mib(peak),
        of_csv(peak),
        mib(idle)
    );
    println!(
        "data dir after COPY  {:.1} MiB apparent, {:.1} MiB on disk",
        mib(apparent),
        mib(allocated)
    );
    load.usage.print("psql", available_cores(), true);
    Ok(load.bytes)
}

/// The backlog of events through the join into `decorated`, from CREATE
/// MATERIALIZED VIEW until its reader has made every event visible.
fn context_join_throughput(
    env: &BenchEnv,
    target: &Target,
    client: &SqlClient,
    args: &ContextJoinArgs,
    csv_bytes: u64,
) -> Result<()> {
    let pid = target.server_pid;
    let backlog = backlog_options_at(args.events, args.event_rate);
    client.command(&context_events_ddl(args, &backlog))?;
    let peak_reset = reset_peak_rss(pid);
    let mut rss = RssMarks::default();
    rss.mark(pid, "before the view");
    let before = CpuSnapshot::take(pid, None);
    client.command(&decorated_view(args.join))?;
    let created = CpuSnapshot::take(pid, None);
    let visible_at_create = first_count(client, DECORATED_READER_ROWS)?;
    let poll = Duration::from_millis(args.poll_ms);
    let (reads, rss_by_tenth) = wait_for_count_sampling(
        client,
        DECORATED_READER_ROWS,
        args.events,
        poll,
        pid,
        ("decorated", "join"),
    )?;
    let done = CpuSnapshot::take(pid, None);
    let usage = done.usage_since(&before, env.clock_ticks_per_s);
    let after_create = done.usage_since(&created, env.clock_ticks_per_s);
    rss.mark(pid, "at the end");
    let resident = vm_rss_bytes(pid).unwrap_or(0);
    let groups = client.text_rows(DECORATED_READ)?;
    let decorated: u64 = groups
        .iter()
        .filter_map(|row| row.get(1)?.parse::<u64>().ok())
        .sum();
    if decorated != args.events {
        bail!(
            "decorated counts {decorated} events, not the {} its reader read: \
             some found no context",
            args.events
        );
    }
    let status = client.text_rows(EVENTS_STATUS)?;
    let per_s = |events: u64, s: f64| events as f64 / s.max(1e-9);
    let streamed = args.events.saturating_sub(visible_at_create);
    println!();
    println!(
        "== context-join throughput result ({} join, {})",
        args.join.name(),
        if args.json {
            "ENCODE JSON"
        } else {
            "typed rows"
        }
    );
    println!(
        "events               {} in {:.2} s (CREATE MATERIALIZED VIEW until all {} visible; \
         {} polls)",
        args.events, usage.wall_s, args.events, reads
    );
    println!(
        "throughput           {:.0} events/s",
        per_s(args.events, usage.wall_s)
    );
    println!(
        "server CPU           {:.2} s: {:.0} events per CPU-second",
        usage.server_s,
        per_s(args.events, usage.server_s)
    );
    println!(
        "view created in      {:.2} s ({visible_at_create} events visible then); after it: \
         {:.0} events/s, {:.0} events per CPU-second",
        created.at.duration_since(before.at).as_secs_f64(),
        per_s(streamed, after_create.wall_s),
        per_s(streamed, after_create.server_s)
    );
    println!(
        "view decorated       {} groups summing to {decorated} events: every event found \
         its context",
        groups.len()
    );
    let tenths: Vec<String> = rss_by_tenth
        .iter()
        .map(|(m, _)| format!("{m:.0}"))
        .collect();
    println!("RSS by tenth (MiB)   {}", tenths.join(" "));
    let states: Vec<&str> = rss_by_tenth.iter().map(|(_, s)| s.as_str()).collect();
    println!("join state           {}", states.join(" | "));
    println!(
        "server RSS at end    {:.1} MiB (VmRSS; {:.2}x the table's CSV)",
        mib(resident),
        resident as f64 / csv_bytes.max(1) as f64
    );
    if !peak_reset {
        println!("(VmHWM could not be reset before the view: the peak below includes the load)");
    }
    print_run_tail(&status, &rss, &usage);
    Ok(())
}

/// For the regular join: an UPDATE of one context row's device type, timed
/// until `decorated` shows the events joined with that row under the new
/// type.
fn context_probes(client: &SqlClient, args: &ContextJoinArgs) -> Result<()> {
    let ((keys, span), keys_s) = timed(|| probe_keys(client, args))?;
    let read = client.prepare(PROBE_READ)?;
    let (mut visible_us, mut update_us, mut reads_per) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..u64::from(args.probes) {
        let key = keys[(splitmix64(i) % keys.len() as u64) as usize];
        let label = format!("probe-{i}");
        let update =
            format!("UPDATE contexts SET device_type = '{label}' WHERE context_id = {key}");
        let sent = Instant::now();
        let changed = client.command(&update)?;
        let updated = Instant::now();
        if changed != 1 {
            bail!("`{update}` changed {changed} rows, expected 1");
        }
        let mut reads = 0u64;
        let visible = loop {
            let row = client.query_opt(&read, &[&label])?;
            let answered = Instant::now();
            reads += 1;
            let events = match row {
                Some(row) => row.try_get::<_, i64>(0)?,
                None => 0,
            };
            if events > 0 {
                break answered;
            }
            if sent.elapsed() > PROBE_TIMEOUT {
                bail!(
                    "decorated has no group `{label}` {PROBE_TIMEOUT:?} after `{update}` \
                     ({reads} reads)"
                );
            }
            std::thread::sleep(PROBE_POLL);
        };
        visible_us.push(micros(sent, visible));
        update_us.push(micros(sent, updated));
        reads_per.push(reads);
    }
    let reads = Percentiles::new(reads_per);
    println!();
    println!("== context-join table-change latency (regular join)");
    println!(
        "measures             from sending `UPDATE contexts SET device_type = 'probe-<i>' \
         WHERE context_id = <k>` until `{PROBE_READ}` with $1 = 'probe-<i>' is non-zero: \
         a change to the table, through the join, visible in the view (one connection, \
         reads {} us apart)",
        PROBE_POLL.as_micros()
    );
    println!(
        "probe keys           {} context ids below {span} with at least one event (from a \
         throwaway view over the backlog, {keys_s:.2} s)",
        keys.len()
    );
    println!("samples              {}", args.probes);
    print_percentile_header("latency us");
    Percentiles::new(visible_us).print_row("UPDATE to visible");
    Percentiles::new(update_us).print_row("UPDATE alone");
    println!(
        "reads until visible  {} p50, {} p99, {} max",
        reads.at(0.5),
        reads.at(0.99),
        reads.max()
    );
    Ok(())
}

/// Context ids with at least one event in the backlog (a change to one
/// without would never show in `decorated`): a throwaway view reads the
/// backlog again, keeping only the ids below a bound that leaves several
/// per probe. Returns them, sorted, with the bound.
fn probe_keys(client: &SqlClient, args: &ContextJoinArgs) -> Result<(Vec<i64>, u64)> {
    let span = (4 * u64::from(args.probes))
        .saturating_mul(args.rows)
        .div_ceil(args.events)
        .max(u64::from(args.probes))
        .min(args.rows);
    client.command(&format!(
        "CREATE MATERIALIZED VIEW probe_keys AS SELECT context_id, count(*) AS n \
         FROM events WHERE context_id < {span} GROUP BY context_id"
    ))?;
    let poll = Duration::from_millis(args.poll_ms);
    wait_for_count(client, PROBE_KEYS_READER_ROWS, args.events, poll)?;
    let rows = client.text_rows("SELECT context_id FROM probe_keys")?;
    let mut keys: Vec<i64> = rows
        .iter()
        .filter_map(|row| row.first()?.parse::<i64>().ok())
        .collect();
    if keys.is_empty() {
        bail!("no event of the backlog has a context id below {span}");
    }
    keys.sort_unstable();
    Ok((keys, span))
}

// ---------------------------------------------------------------------------
// logins: scenario 1, login anomaly detection, with the SQL of
// examples/login_anomaly.sh over the built-in `logins` generator: backlog
// throughput with the SQL and with the Python scoring function, then the
// staleness of the profiles and scores behind a paced stream
// ---------------------------------------------------------------------------

/// The columns of the `logins` generator, with the example's watermark.
const LOGIN_COLUMNS: &str = "user_id varchar, city varchar, ip varchar, device varchar, \
     ts timestamptz, WATERMARK FOR ts AS ts - INTERVAL '1 second'";
/// The model in SQL, as in `examples/login_anomaly.sh`.
const LOGIN_ANOMALY_FUNCTION: &str =
    "CREATE FUNCTION login_anomaly(new_city boolean, new_device boolean, outside boolean,
                              last_minute bigint) RETURNS double precision
LANGUAGE sql AS $$
  0.5 * CAST(new_city AS int) + 0.2 * CAST(new_device AS int) + 0.3 * CAST(outside AS int)
  + CAST(least(last_minute, 10) AS double precision) / 100
$$";
/// The same model in Python, as in `examples/login_anomaly.sh`.
const ANOMALY_SCORE_FUNCTION: &str =
    "CREATE FUNCTION anomaly_score(new_city boolean, new_device boolean, outside boolean,
                              last_minute bigint) RETURNS double precision
LANGUAGE python AS $$
def anomaly_score(new_city, new_device, outside, last_minute):
    score = 0.5 * new_city + 0.2 * new_device + 0.3 * outside
    return score + min(last_minute, 10) / 100
$$";
/// Each login with its user's history just before it (a plain view, which
/// each scoring view inlines).
const LOGIN_FEATURES_VIEW: &str = "CREATE VIEW login_features AS
SELECT user_id, ts, city, ip, device,
  coalesce(NOT array_has(array_agg(city) OVER recent, city), false) AS new_city,
  coalesce(NOT array_has(array_agg(device) OVER recent, device), false) AS new_device,
  NOT starts_with(ip, '10.') AS outside,
  count(*) OVER (PARTITION BY user_id ORDER BY ts
                 RANGE BETWEEN INTERVAL '1 minute' PRECEDING AND CURRENT ROW) AS last_minute,
  lag(ts) OVER (PARTITION BY user_id ORDER BY ts) AS previous_login
FROM logins
WINDOW recent AS (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 5 PRECEDING AND 1 PRECEDING)";
const SCORED_LOGINS_VIEW: &str = "CREATE MATERIALIZED VIEW scored_logins AS
SELECT user_id, ts, city, ip, device, previous_login,
  login_anomaly(new_city, new_device, outside, last_minute) AS score
FROM login_features";
const PY_SCORED_LOGINS_VIEW: &str = "CREATE MATERIALIZED VIEW py_scored_logins AS
SELECT user_id, ts, anomaly_score(new_city, new_device, outside, last_minute) AS score
FROM login_features";
const USER_PROFILES_VIEW: &str = "CREATE MATERIALIZED VIEW user_profiles AS
SELECT user_id,
  count(*) AS logins,
  count(DISTINCT city) AS cities,
  approx_distinct(device) AS devices,
  last_value(city ORDER BY ts) AS last_city,
  (array_agg(city ORDER BY ts DESC))[1:5] AS recent_cities,
  max(ts) AS last_login
FROM logins GROUP BY user_id";
const PROFILES_TOTAL: &str = "SELECT sum(logins) FROM user_profiles";
/// The dashboard's point lookup (docs/login_anomaly.md), timed after a run.
const PROFILE_BY_ID: &str = "SELECT * FROM user_profiles WHERE user_id = 'u42'";
const LOGINS_STATUS: &str = "SELECT \"offset\", rows, events_per_second, bad_records, status \
     FROM eddy_catalog.source_partitions WHERE source = 'logins'";
const OPERATOR_STATES: &str = "SELECT view, operator, state_bytes FROM eddy_catalog.operators \
     WHERE state_bytes > 0";
const FUNCTION_ERRORS: &str = "SELECT count(*) FROM eddy_catalog.function_errors";
/// What the freshness part reads: the profiles first (the target's), then
/// the scores.
const LOGINS_FRESHNESS: [FreshnessRead; 2] = [
    FreshnessRead {
        view: "user_profiles",
        sql: "SELECT max(last_login), sum(logins) FROM user_profiles",
        label: "now - max(last_login)",
    },
    FreshnessRead {
        view: "scored_logins",
        sql: "SELECT max(ts), count(*) FROM scored_logins",
        label: "now - max(ts)",
    },
];
/// The scenario's throughput target, with the SQL function on 2 cores.
const LOGINS_TARGET_PER_S: f64 = 250_000.0;
/// The scenario's freshness target: p99 from a login to its profile.
const LOGINS_FRESHNESS_TARGET_MS: f64 = 100.0;

impl LoginsPart {
    /// (CREATE FUNCTION, the scoring view's name, its CREATE) of a part.
    fn scoring(self) -> (&'static str, &'static str, &'static str) {
        match self {
            LoginsPart::Python => (
                ANOMALY_SCORE_FUNCTION,
                "py_scored_logins",
                PY_SCORED_LOGINS_VIEW,
            ),
            LoginsPart::Sql | LoginsPart::Freshness => {
                (LOGIN_ANOMALY_FUNCTION, "scored_logins", SCORED_LOGINS_VIEW)
            }
        }
    }
}

/// One backlog part of `logins`.
struct LoginsRun {
    part: LoginsPart,
    run: IngestRun,
    /// (view, operator, state_bytes) of each operator holding state at the
    /// end.
    operators: Vec<Vec<String>>,
    /// Rows of `eddy_catalog.function_errors` at the end.
    function_errors: u64,
    /// A row of [`CHECKPOINT_FIGURES`]: the checkpoints the run took.
    checkpoints: Option<Vec<String>>,
}

/// `CREATE SOURCE logins` of the example, with the part's `options`.
fn logins_source_ddl(users: u64, options: &str) -> String {
    let fields = format!("generator = 'logins', generator.users = '{users}', datagen.seed = '1'");
    datagen_source_ddl("logins", LOGIN_COLUMNS, &fields, options, false)
}

/// The rows the reader of `view` has made visible, as
/// [`PER_USER_READER_ROWS`] counts them for `per_user`.
fn login_reader_rows(view: &str) -> String {
    format!(
        "SELECT sum(rows) FROM eddy_catalog.source_partitions \
         WHERE source = 'logins' AND feeds = '{view}'"
    )
}

/// Fails unless `sql` counts `expected`.
fn check_count(client: &SqlClient, sql: &str, expected: u64) -> Result<()> {
    let got = first_count(client, sql)?;
    if got != expected {
        bail!("`{sql}` gives {got}, not the {expected} logins its reader read");
    }
    Ok(())
}

fn logins_benchmark(env: &BenchEnv, args: &LoginsArgs) -> Result<()> {
    let counts = [args.rows, args.users, args.rate, args.event_rate];
    if counts.contains(&0) || args.seconds == 0 {
        bail!("--rows, --users, --rate, --event-rate and --seconds must be at least 1");
    }
    if args.rows / args.event_rate >= 86_400 {
        bail!("--rows / --event-rate must be under a day of event time, so all of it is due");
    }
    print_logins_sql(args);
    let mut sql_run: Option<LoginsRun> = None;
    for part in [LoginsPart::Sql, LoginsPart::Python] {
        if !args.parts.contains(&part) {
            continue;
        }
        let mut server = ingest_server(env, args.workers, &format!("{part:?} backlog"))?;
        let run = logins_backlog_run(env, &server.target(), args, part);
        let run = run.map_err(|e| server.explain(e))?;
        server.stop()?;
        print_logins_run(&run, sql_run.as_ref());
        if part == LoginsPart::Sql {
            sql_run = Some(run);
        }
    }
    if args.parts.contains(&LoginsPart::Freshness) {
        let mut server = ingest_server(env, args.workers, "freshness")?;
        let setup = [
            logins_source_ddl(args.users, &paced_options(args.rate)),
            LOGIN_ANOMALY_FUNCTION.to_string(),
            LOGIN_FEATURES_VIEW.to_string(),
            USER_PROFILES_VIEW.to_string(),
            SCORED_LOGINS_VIEW.to_string(),
        ];
        let run = freshness_run(
            env,
            &server.target(),
            &setup,
            &LOGINS_FRESHNESS,
            LOGINS_STATUS,
            args.seconds,
            args.poll_ms,
        );
        let run = run.map_err(|e| server.explain(e))?;
        server.stop()?;
        print_logins_freshness(args, &run);
    }
    Ok(())
}

/// The SQL every part runs, so that the figures can be cited with it.
fn print_logins_sql(args: &LoginsArgs) {
    let workers = args
        .workers
        .map_or("the server's default".to_string(), |n| n.to_string());
    println!(
        "== logins benchmark: {} logins of backlog from {} users, freshness at {} logins/s \
         for {} s, workers: {workers}, reads every {} ms",
        args.rows, args.users, args.rate, args.seconds, args.poll_ms
    );
    println!("-- the SQL of examples/login_anomaly.sh:");
    println!("{};", logins_source_ddl(args.users, "<part's options>"));
    for statement in [
        LOGIN_ANOMALY_FUNCTION,
        ANOMALY_SCORE_FUNCTION,
        LOGIN_FEATURES_VIEW,
        SCORED_LOGINS_VIEW,
        PY_SCORED_LOGINS_VIEW,
        USER_PROFILES_VIEW,
    ] {
        println!("{statement};");
    }
    println!("-- sql and python parts: a backlog of all --rows logins, due at once:");
    println!("--   {}", backlog_options_at(args.rows, args.event_rate));
    println!(
        "--   before the clock: the source, the part's function (login_anomaly | anomaly_score),"
    );
    println!("--   login_features; the clock runs from CREATE MATERIALIZED VIEW scored_logins |");
    println!(
        "--   py_scored_logins and user_profiles until every {} ms both of",
        args.poll_ms
    );
    println!("--   `{}`", login_reader_rows("<scoring view>"));
    println!("--   `{}`", login_reader_rows("user_profiles"));
    println!(
        "--   count {} logins; then `SELECT count(*) FROM <scoring view>` and `{PROFILES_TOTAL}`",
        args.rows
    );
    println!("--   must give {} too.", args.rows);
    println!(
        "-- freshness part: the source paced at {}:",
        paced_options(args.rate)
    );
    println!(
        "--   login_anomaly, login_features, user_profiles, scored_logins; read every {} ms:",
        args.poll_ms
    );
    for read in &LOGINS_FRESHNESS {
        println!("--   `{}`", read.sql);
    }
}

/// A backlog part: the part's scoring view and `user_profiles` over all of
/// `--rows` logins, due when the views are created.
fn logins_backlog_run(
    env: &BenchEnv,
    target: &Target,
    args: &LoginsArgs,
    part: LoginsPart,
) -> Result<LoginsRun> {
    let (function, view, create) = part.scoring();
    let client = SqlClient::connect(target)?;
    let backlog = backlog_options_at(args.rows, args.event_rate);
    let scored = format!("SELECT count(*) FROM {view}");
    let check = |client: &SqlClient| -> Result<()> {
        check_count(client, &scored, args.rows)?;
        check_count(client, PROFILES_TOTAL, args.rows)
    };
    let plan = BacklogPlan {
        setup: vec![
            logins_source_ddl(args.users, &backlog),
            function.to_string(),
            LOGIN_FEATURES_VIEW.to_string(),
        ],
        create: vec![create.to_string(), USER_PROFILES_VIEW.to_string()],
        watch: vec![login_reader_rows(view), login_reader_rows("user_profiles")],
        state_of: (view, "over"),
        check: &check,
        read: PROFILE_BY_ID,
        status: LOGINS_STATUS,
    };
    let poll = Duration::from_millis(args.poll_ms);
    let run = backlog_run(env, target, &client, &plan, args.rows, poll)?;
    Ok(LoginsRun {
        part,
        run,
        operators: client.text_rows(OPERATOR_STATES)?,
        function_errors: first_count(&client, FUNCTION_ERRORS)?,
        checkpoints: client.text_rows(CHECKPOINT_FIGURES)?.pop(),
    })
}

/// A backlog part's figures; `sql` is the SQL function's run, if there
/// was one before, for the Python run to be compared with.
fn print_logins_run(run: &LoginsRun, sql: Option<&LoginsRun>) {
    let (_, view, _) = run.part.scoring();
    let python = run.part == LoginsPart::Python;
    let ingest = &run.run;
    let per_s = ingest.events_per_s();
    println!();
    println!(
        "== logins backlog result ({} function, {view} and user_profiles)",
        if python { "Python" } else { "SQL" }
    );
    println!(
        "logins               {} in {:.2} s (CREATE MATERIALIZED VIEW {view}, user_profiles \
         until all {} visible in both; {} polls)",
        ingest.rows, ingest.usage.wall_s, ingest.rows, ingest.reads
    );
    println!("throughput           {per_s:.0} logins/s");
    println!(
        "server CPU           {:.2} s: {:.0} logins per CPU-second ({:.2} s of it in the \
         server's child processes)",
        ingest.usage.server_s,
        ingest.events_per_cpu_s(),
        ingest.usage.server_children_s
    );
    let verdict = |met: bool| if met { "met" } else { "not met" };
    let cores = available_cores();
    if python {
        println!(
            "  (the Python workers are child processes of the server: their CPU, live and \
             reaped, is in the server's)"
        );
        let errors = match run.function_errors {
            0 => "0".to_string(),
            n => format!("{n}: NOT 0, those logins were scored NULL"),
        };
        println!("function errors      {errors} (`{FUNCTION_ERRORS}`)");
        println!(
            "target               the SQL function's throughput, >= {LOGINS_TARGET_PER_S:.0} \
             logins/s on 2 cores ({cores} cores here): {}",
            verdict(per_s >= LOGINS_TARGET_PER_S)
        );
        if let Some(sql) = sql {
            println!(
                "Python / SQL         {:.2} of the SQL function's {:.0} logins/s",
                per_s / sql.run.events_per_s().max(1e-9),
                sql.run.events_per_s()
            );
        }
    } else {
        println!(
            "target               >= {LOGINS_TARGET_PER_S:.0} logins/s on 2 cores with the SQL \
             function ({cores} cores here): {}; the hand-written Go system did 20000/s on 4 cores",
            verdict(per_s >= LOGINS_TARGET_PER_S)
        );
    }
    println!(
        "one profile by id    {} us p50, {} us max (`{PROFILE_BY_ID}`, after the run, 20 reads)",
        ingest.read_us.at(0.5),
        ingest.read_us.max()
    );
    print_idle_and_tenths(ingest, "window state");
    print_operator_states(&run.operators);
    if let Some(figures) = &run.checkpoints {
        print_checkpoint_figures(figures);
    }
    if python {
        println!("(the server's RSS below is its own process's; the Python workers' is not in it)");
    }
    print_run_tail(&ingest.status, &ingest.rss, &ingest.usage);
}

/// Rows of [`OPERATOR_STATES`]: the state each operator holds.
fn print_operator_states(rows: &[Vec<String>]) {
    println!("state per operator at the end (`{OPERATOR_STATES}`):");
    let mut total = 0;
    for row in rows {
        let [view, operator, bytes] = row.as_slice() else {
            continue;
        };
        let bytes: u64 = bytes.parse().unwrap_or(0);
        total += bytes;
        println!(
            "  {view:<18} {:>9.1} MiB  {}",
            mib(bytes),
            abbreviate(operator, 100)
        );
    }
    println!("  all operators      {:>9.1} MiB", mib(total));
}

fn print_logins_freshness(args: &LoginsArgs, run: &Freshness) {
    let title = "logins freshness result (paced; user_profiles and scored_logins)";
    print_freshness(title, args.rate, args.poll_ms, run);
    if let Some(profiles) = run.views.first() {
        let p99_ms = Percentiles::new(profiles.lag_us.clone()).at(0.99) as f64 / 1e3;
        let verdict = match p99_ms <= LOGINS_FRESHNESS_TARGET_MS {
            true => "met",
            false => "not met",
        };
        println!(
            "profiles p99         {p99_ms:.1} ms: {verdict}   \
             (target p99 <= {LOGINS_FRESHNESS_TARGET_MS:.0} ms (event -> profile visible))"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn bench_rows_have_five_well_formed_fields() {
        let mut out = Vec::new();
        BenchRows.write_row(86_400, b'\t', &mut out);
        let line = String::from_utf8(out).expect("ascii");
        let fields: Vec<&str> = line.trim_end().split('\t').collect();
        assert_eq!(fields.len(), 5);
        assert_eq!(fields[0], "86401");
        assert!(fields[1].parse::<i64>().is_ok());
        assert_eq!(fields[2].len(), 20);
        assert!(fields[3].parse::<f64>().is_ok());
        assert_eq!(fields[4], "2024-01-04 00:00:00");
    }

    #[test]
    fn account_rows_carry_the_expected_balance() {
        let mut out = Vec::new();
        AccountRows.write_row(41, b',', &mut out);
        let line = String::from_utf8(out).expect("ascii");
        let fields: Vec<&str> = line.trim_end().split(',').collect();
        assert_eq!(fields[0], "42");
        assert_eq!(fields[1], account_balance(42).to_string());
        assert_eq!(fields[2].len(), 84);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::new((1..=100).rev().collect());
        assert_eq!(
            (p.at(0.5), p.at(0.9), p.at(0.99), p.max()),
            (50, 90, 99, 100)
        );
        assert_eq!(Percentiles::new(vec![7]).at(0.01), 7);
        assert_eq!(Percentiles::new(Vec::new()).at(0.5), 0);
    }

    #[test]
    fn keyed_rows_agree_with_the_model() {
        let mut out = Vec::new();
        KeyedRows { keys: 10 }.write_row(4, b'\t', &mut out);
        let line = String::from_utf8(out).expect("ascii");
        let fields: Vec<i64> = line
            .trim_end()
            .split('\t')
            .map(|f| f.parse().unwrap())
            .collect();
        let mut model = KeyModel::of_rows(5, 10);
        let (k, v) = (fields[1] as i32, fields[2] as i32);
        assert_eq!(fields[0], 5);
        assert!((0..10).contains(&k) && (0..1_000).contains(&v));
        let before = model.0[k as usize];
        assert_eq!(model.add(k, v), (before.0 + 1, before.1 + i64::from(v)));
        assert_eq!(model.0.iter().map(|g| g.0).sum::<i64>(), 6);
    }

    #[test]
    fn order_and_customer_rows_are_well_formed() {
        let mut out = Vec::new();
        CustomerRows.write_row(0, b'\t', &mut out);
        OrderRows {
            customers: 3,
            first_id: 11,
        }
        .write_row(1, b'\t', &mut out);
        let text = String::from_utf8(out).expect("ascii");
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines[0][0], "1");
        assert!(lines[0][1].starts_with("region-") && lines[0][1].len() == 9);
        assert_eq!(lines[1][0], "12");
        assert!((1..=3).contains(&lines[1][1].parse::<u64>().unwrap()));
        assert!((1..=1_000).contains(&lines[1][2].parse::<u64>().unwrap()));
    }

    #[test]
    fn context_rows_are_csv_of_about_200_bytes() {
        let mut out = Vec::new();
        for index in 10_000_000..10_001_000u64 {
            ContextRows.write_row(index, b',', &mut out);
        }
        let text = String::from_utf8(out).expect("ascii");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1_000);
        for (line, index) in lines.iter().zip(10_000_000u64..) {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 7, "{line}");
            assert_eq!(fields[0], index.to_string());
            assert!(fields[1].ends_with(".example.com"), "{line}");
            assert_eq!(fields[2], device_type(index));
            assert_eq!(fields[3].len(), 36, "{line}");
            assert!(fields[4].starts_with("10."), "{line}");
            assert!(!line.contains('"'), "{line}");
            assert!(parse_timestamptz_us(fields[6]).is_ok(), "{line}");
        }
        let average = text.len() as f64 / lines.len() as f64;
        assert!((190.0..210.0).contains(&average), "{average}");
    }

    #[test]
    fn change_plan_touches_only_live_rows() {
        let mut plan = ChangePlan::new(50, 5);
        let first = plan.batch(1, 20);
        assert_eq!(first.counts, [8, 6, 6]);
        assert!(first.statements[0].starts_with("INSERT INTO orders VALUES (51, "));
        for number in 2..=30 {
            let batch = plan.batch(number, 20);
            let deleted = batch.statements[2]
                .trim_start_matches("DELETE FROM orders WHERE id IN (")
                .trim_end_matches(')');
            for id in deleted.split(", ").map(|id| id.parse::<u64>().unwrap()) {
                assert!(!plan.live.contains(&id), "{id} deleted but still live");
            }
        }
        assert_eq!(plan.live.len(), 50 + 30 * (8 - 6));
        let mut live = plan.live.clone();
        live.sort_unstable();
        live.dedup();
        assert_eq!(live.len(), plan.live.len());
    }

    /// The size estimate against arrow-json's writer, the encoder the
    /// server's datagen reader uses for `ENCODE JSON`.
    #[test]
    fn event_json_len_matches_arrow_json() {
        use datafusion::arrow::array::{
            ArrayRef, Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray,
        };
        use datafusion::arrow::json::LineDelimitedWriter;
        use datafusion::arrow::record_batch::RecordBatch;
        let ts_text = [
            "2026-11-22 16:54:16+00",
            "2026-11-22 16:54:16.12+00",
            "2026-11-22 16:54:16.000001+00",
        ];
        let ts: Vec<i64> = ts_text
            .iter()
            .map(|t| parse_timestamptz_us(t).unwrap())
            .collect();
        assert_eq!(ts[2] - ts[0], 1);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 99_999, 100_000])),
            Arc::new(StringArray::from(vec!["view", "click", "buy"])),
            Arc::new(
                Decimal128Array::from(vec![0, 52_312, 100_000])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(StringArray::from(vec!["abcdefgh", "ABCDEFGH", "xYzxYzxY"])),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        ];
        let batch = RecordBatch::try_from_iter(EVENT_NAMES.iter().zip(columns)).unwrap();
        let mut out = Vec::new();
        let mut writer = LineDelimitedWriter::new(&mut out);
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let text = [
            ["1", "view", "0.00", "abcdefgh", ts_text[0]],
            ["99999", "click", "523.12", "ABCDEFGH", ts_text[1]],
            ["100000", "buy", "1000.00", "xYzxYzxY", ts_text[2]],
        ];
        for (line, row) in lines.iter().zip(text) {
            let row: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            assert_eq!(
                event_json_len(&row),
                line.len(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// The Kafka events are JSON of the datagen source's columns, about
    /// 100 bytes, with an RFC 3339 `ts` one microsecond apart.
    #[test]
    fn kafka_events_are_json_of_the_event_columns() {
        let start_us = parse_timestamptz_us("2026-11-22 16:54:16.999999+00").unwrap();
        let mut sizes = Vec::new();
        for index in 0..1_000u64 {
            let mut out = Vec::new();
            push_event_json(index, start_us, &mut out);
            let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            let object = value.as_object().expect("an object");
            assert_eq!(object.len(), EVENT_NAMES.len());
            assert!(EVENT_NAMES.iter().all(|name| object.contains_key(*name)));
            let user_id = object["user_id"].as_u64().unwrap();
            assert!((1..=100_000).contains(&user_id));
            let amount = object["amount"].as_f64().unwrap();
            assert!((0.0..=1000.0).contains(&amount));
            assert_eq!(object["page"].as_str().unwrap().len(), 8);
            let ts = object["ts"].as_str().unwrap();
            let parsed = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
            assert_eq!(parsed.timestamp_micros(), start_us + index as i64);
            sizes.push(out.len());
        }
        let mut first = Vec::new();
        push_event_json(1, start_us, &mut first);
        assert!(String::from_utf8(first)
            .unwrap()
            .contains("\"ts\":\"2026-11-22T16:54:17.000000Z\""));
        let average = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!((95.0..115.0).contains(&average), "{average}");
    }

    #[test]
    fn pgbench_summary_is_parsed() {
        let text = "transaction type: lookup.sql\n\
                    number of transactions actually processed: 12345\n\
                    number of failed transactions: 0 (0.000%)\n\
                    latency average = 0.648 ms\n\
                    initial connection time = 5.1 ms\n\
                    tps = 12337.5 (without initial connection time)\n";
        let outcome = parse_pgbench(text).expect("parsed");
        assert_eq!(outcome.transactions, 12345);
        assert_eq!(outcome.failed, 0);
        assert!((outcome.latency_ms - 0.648).abs() < 1e-9);
        assert!((outcome.tps - 12337.5).abs() < 1e-9);
    }
}
