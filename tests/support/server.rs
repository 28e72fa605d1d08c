//! Test support shared by the integration tests: a self-removing temporary
//! directory, an `eddydb` server process started on port 0 over its own data
//! directory (stopped with SIGTERM, crashed with SIGKILL, restarted on the same
//! directory, always killed on drop), and a tokio-postgres connect helper.
//!
//! Included by each test crate with `#[path = "support/server.rs"] mod server;`.
//! It knows nothing about SQL: the tests own what they send.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};

/// How long a server may take to print its listening line. Generous because
/// the machine is shared with compilers and other test binaries.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it is killed.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

const LISTEN_PREFIX: &str = "eddydb listening on ";

/// A directory under `std::env::temp_dir()`, removed with its contents on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> anyhow::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        // create_dir (not create_dir_all) fails if the name is taken, so two
        // tests can never share a directory.
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Command-line settings of a test server beyond `--listen` and `--data-dir`.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    pub max_connections: Option<u32>,
    pub max_message_bytes: Option<u64>,
    /// `--workers N`: dataflow and query worker threads.
    pub workers: Option<usize>,
    /// `--checkpoint-interval`, e.g. `100ms`.
    pub checkpoint_interval: Option<String>,
    /// Extra environment variables of the server process.
    pub env: Vec<(String, String)>,
}

impl ServerOptions {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(n) = self.max_connections {
            args.extend(["--max-connections".to_string(), n.to_string()]);
        }
        if let Some(n) = self.max_message_bytes {
            args.extend(["--max-message-bytes".to_string(), n.to_string()]);
        }
        if let Some(n) = self.workers {
            args.extend(["--workers".to_string(), n.to_string()]);
        }
        if let Some(every) = &self.checkpoint_interval {
            args.extend(["--checkpoint-interval".to_string(), every.clone()]);
        }
        args
    }
}

/// The binary under test. `EDDYDB_TEST_BIN` points the suite at another build
/// (or another Postgres-speaking server wrapped to the same command line).
pub fn server_binary() -> PathBuf {
    match std::env::var_os("EDDYDB_TEST_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_eddydb")),
    }
}

/// One `eddydb serve` process with its own data directory and log file.
pub struct TestServer {
    root: TempDir,
    options: ServerOptions,
    child: Option<Child>,
    addr: SocketAddr,
    starts: u32,
}

impl TestServer {
    /// Starts a server with default options in a fresh data directory.
    pub fn start() -> anyhow::Result<TestServer> {
        TestServer::start_with(ServerOptions::default())
    }

    /// Starts a server with `options` in a fresh data directory.
    pub fn start_with(options: ServerOptions) -> anyhow::Result<TestServer> {
        let root = TempDir::new("eddydb-test")?;
        std::fs::create_dir(root.path().join("data"))?;
        let placeholder: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut server = TestServer {
            root,
            options,
            child: None,
            addr: placeholder,
            starts: 0,
        };
        server.spawn()?;
        Ok(server)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A scratch directory beside the data directory, for CSV files, scripts
    /// and other client-side files; removed with the server.
    pub fn scratch_dir(&self) -> &Path {
        self.root.path()
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `postgres://eddy@127.0.0.1:PORT/eddy`, for clients that take a URL.
    pub fn url(&self) -> String {
        format!("postgres://eddy@{}/eddy", self.addr)
    }

    /// A tokio-postgres config for user `eddy`, database `eddy`, no TLS.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.addr.ip().to_string())
            .port(self.port())
            .user("eddy")
            .dbname("eddy")
            .connect_timeout(Duration::from_secs(30));
        config
    }

    /// Connects with tokio-postgres and drives the connection on a task.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect_config(&self.pg_config()).await
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut child = Command::new(server_binary())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(self.options.args())
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            // The log is a file read by people on failure: no colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", server_binary().display()))?;
        let stdout = child.stdout.take().context("server stdout was not piped")?;
        self.child = Some(child);
        match wait_for_listen_line(stdout) {
            Ok(addr) => {
                self.addr = addr;
                Ok(())
            }
            Err(err) => {
                self.kill_quietly();
                Err(err.context(format!("server start #{} failed", self.starts)))
                    .with_context(|| format!("server log:\n{}", self.log_tail()))
            }
        }
    }

    /// Stops the server with SIGTERM and waits for it, returning its status.
    /// Killed (and an error returned) if it does not exit in time.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.stop_with_signal("TERM")
    }

    /// Sends `signal` (a `kill -SIGNAL` name such as `INT`) and waits for the
    /// server to exit, killing it if it does not within [`SHUTDOWN_TIMEOUT`].
    pub fn stop_with_signal(&mut self, signal: &str) -> anyhow::Result<ExitStatus> {
        let child = self.child.take().context("server is not running")?;
        let pid = child.id();
        send_signal(pid, signal)?;
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let mut child = child;
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(SHUTDOWN_TIMEOUT) {
            Ok(status) => {
                let _ = waiter.join();
                Ok(status?)
            }
            Err(_) => {
                send_signal(pid, "KILL")?;
                let _ = waiter.join();
                bail!("server pid {pid} did not exit within {SHUTDOWN_TIMEOUT:?} of SIG{signal}")
            }
        }
    }

    /// Crashes the server with SIGKILL (`kill -9`) and reaps it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("server is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Waits for a server that is to exit by itself (a failpoint aborts
    /// it), at most [`SHUTDOWN_TIMEOUT`] after `within`; returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = std::time::Instant::now() + within + SHUTDOWN_TIMEOUT;
        let child = self.child.as_mut().context("server is not running")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("server did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Options for the next [`TestServer::restart`].
    pub fn options_mut(&mut self) -> &mut ServerOptions {
        &mut self.options
    }

    /// The server's whole stderr log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the server again on the same data directory (on a new port).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("restart of a running server: stop() or kill9() it first");
        }
        self.spawn()
    }

    /// Runs `examples/<script>` against this server, as its README words
    /// say (with `env` set); fails unless it succeeds, and returns its
    /// standard output.
    pub fn run_example(&self, script: &str, env: &[(&str, &str)]) -> anyhow::Result<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(script);
        let output = Command::new("bash")
            .arg(path)
            .env("EDDYDB_PORT", self.port().to_string())
            .env("PGCONNECT_TIMEOUT", "30")
            .envs(env.iter().copied())
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "{script} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    }

    /// The last 8 KiB of the server's stderr log, for failure messages.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log_path(), 8192).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill_quietly();
        if std::thread::panicking() {
            eprintln!("---- eddydb server log tail ----\n{}", self.log_tail());
        }
    }
}

/// Connects with an explicit tokio-postgres config (no TLS) and spawns the
/// connection driver on the current tokio runtime.
pub async fn connect_config(
    config: &tokio_postgres::Config,
) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // The connection ends with an error when a test kills the server or
        // provokes a FATAL; the test itself asserts on what it expects.
        let _ = connection.await;
    });
    Ok(client)
}

/// Blocks until the server prints its listening line, EOF, or the timeout.
/// The reader thread keeps draining stdout afterwards so the server can never
/// block on a full pipe.
fn wait_for_listen_line(stdout: impl Read + Send + 'static) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = mpsc::channel::<anyhow::Result<String>>();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = match lines.next() {
            Some(Ok(line)) => Ok(line),
            Some(Err(e)) => Err(anyhow!("reading server stdout: {e}")),
            None => Err(anyhow!("server exited before printing its listening line")),
        };
        let _ = tx.send(first);
        for _ in lines.map_while(Result::ok) {}
    });
    let line = rx
        .recv_timeout(STARTUP_TIMEOUT)
        .map_err(|_| anyhow!("no listening line within {STARTUP_TIMEOUT:?}"))??;
    parse_listen_line(&line)
}

fn parse_listen_line(line: &str) -> anyhow::Result<SocketAddr> {
    let addr = line
        .strip_prefix(LISTEN_PREFIX)
        .with_context(|| format!("unexpected first stdout line {line:?}"))?;
    addr.trim()
        .parse()
        .with_context(|| format!("bad address in listening line {line:?}"))
}

/// Sends a signal by name with the system `kill`, since std only offers SIGKILL.
pub fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed: {status}");
    }
    Ok(())
}

fn read_tail(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
