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
        }
    }

    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }
}
