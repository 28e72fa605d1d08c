//! Server settings. Every flag can also come from an `EDDYDB_*` environment
//! variable, so a service manager can configure EddyDB without a command line.

use std::path::PathBuf;

/// `eddydb [serve] [flags]`
#[derive(Debug, clap::Parser)]
#[command(
    name = "eddydb",
    version,
    about = "EddyDB: a streaming SQL database server speaking the Postgres protocol",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the server (what a bare `eddydb` does).
    Serve(Config),
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on for Postgres clients.
    #[arg(long, env = "EDDYDB_LISTEN", default_value = "127.0.0.1:6690")]
    pub listen: String,
    /// Folder holding the catalog and all table data (created if missing).
    #[arg(long, env = "EDDYDB_DATA_DIR", default_value = "eddydb-data")]
    pub data_dir: PathBuf,
    /// Most client connections open at once; more are refused with 53300.
    #[arg(long, env = "EDDYDB_MAX_CONNECTIONS", default_value_t = 100)]
    pub max_connections: usize,
    /// Largest protocol message a client may send, in bytes; larger ones
    /// close the connection with 54000.
    #[arg(long, env = "EDDYDB_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Dataflow worker threads that maintain views, and the parallelism of
    /// ad-hoc queries (default: number of cores).
    #[arg(long, env = "EDDYDB_WORKERS")]
    pub workers: Option<usize>,
    /// Log filter, e.g. `info`, `debug`, `eddydb=debug`.
    #[arg(long, env = "EDDYDB_LOG", default_value = "info")]
    pub log: String,
    /// How often views over streams are checkpointed: `1s`, `500ms`, `2m`;
    /// `0` takes none (checkpoints already stored are still used at start;
    /// without one a view reads its streams again from where it started).
    #[arg(long, env = "EDDYDB_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub checkpoint_interval: std::time::Duration,
    /// Budget for the state of all materialized views together (operator
    /// state and the rows they serve): `4GB`, `512MB`, `64KiB`, or bytes;
    /// `0` for none. A view whose state would take the total over it fails
    /// with 53200; the others go on.
    #[arg(long, env = "EDDYDB_MEMORY_LIMIT", default_value = "0", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// The Python interpreter that runs `LANGUAGE python` functions, each
    /// in worker processes of its own.
    #[arg(long, env = "EDDYDB_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// How long one call of a Python function may take before its row is
    /// given up (the row's result is NULL and the error is kept in
    /// `eddy_catalog.function_errors`).
    #[arg(long, env = "EDDYDB_FUNCTION_TIMEOUT", default_value = "10s", value_parser = parse_interval)]
    pub function_timeout: std::time::Duration,
    /// Address space each Python worker process may use: `1GB`, `512MB`;
    /// `0` for no limit.
    #[arg(long, env = "EDDYDB_FUNCTION_MEMORY_LIMIT", default_value = "2GB", value_parser = parse_bytes)]
    pub function_memory_limit: u64,
}

/// `4GB`, `512MiB`, `64kB`, or a bare number of bytes (units are powers of
/// 1024, as in PostgreSQL's memory settings).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(text, "a size such as 512MB or 4GB")?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kb" | "kib" | "k" => 10,
        "mb" | "mib" | "m" => 20,
        "gb" | "gib" | "g" => 30,
        "tb" | "tib" | "t" => 40,
        other => return Err(format!("unknown unit {other:?}: use kB, MB, GB or TB")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{:?} is too large", text.trim()))
}

/// The leading digits of `text` as a number, and the unit after them
/// (trimmed); `what` names the expected form in the error.
fn number_and_unit<'a>(text: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n = number
        .parse()
        .map_err(|_| format!("{text:?} is not {what}"))?;
    Ok((n, unit.trim()))
}

/// `500ms`, `1s`, `2m`, or a bare number of milliseconds.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = number_and_unit(text, "a duration such as 500ms, 1s or 2m")?;
    let millis = match unit {
        "" | "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" | "min" => n.saturating_mul(60_000),
        other => return Err(format!("unknown unit {other:?}: use ms, s or m")),
    };
    Ok(std::time::Duration::from_millis(millis))
}

impl Config {
    /// Settings for tests and embedding: everything under `data_dir`, port chosen by the caller.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: "127.0.0.1:0".to_string(),
            data_dir: data_dir.into(),
            max_connections: 100,
            max_message_bytes: 64 * 1024 * 1024,
            workers: None,
            log: "info".to_string(),
            checkpoint_interval: std::time::Duration::from_secs(1),
            memory_limit: 0,
            python: PathBuf::from("python3"),
            function_timeout: std::time::Duration::from_secs(10),
            function_memory_limit: 2 << 30,
        }
    }

    /// How `LANGUAGE python` functions run.
    pub fn python(&self) -> crate::function::python::PythonConfig {
        crate::function::python::PythonConfig {
            program: self.python.clone(),
            timeout: self.function_timeout,
            memory_limit: Some(self.function_memory_limit).filter(|b| *b > 0),
        }
    }

    /// `None` when checkpoints are off.
    pub fn checkpoint_interval(&self) -> Option<std::time::Duration> {
        Some(self.checkpoint_interval).filter(|d| !d.is_zero())
    }

    /// `None` without a budget.
    pub fn memory_limit(&self) -> Option<u64> {
        Some(self.memory_limit).filter(|b| *b > 0)
    }

    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }
}
