//! Test support for the Kafka sources: a real Kafka-protocol broker (tansu,
//! see shared/KAFKA.md) in a temporary directory on a free loopback port,
//! with its durable sqlite storage engine, so it can be stopped, crashed and
//! restarted on the same port and data; topics created through the Kafka
//! admin API; and records produced by a real client, Python confluent-kafka
//! (tests/python/kafka_produce.py), fed JSON lines on stdin.
//!
//! Included beside the server harness, whose `TempDir` and `send_signal` it
//! uses:
//!
//! ```ignore
//! #[path = "support/server.rs"]
//! mod server;
//! #[path = "support/kafka.rs"]
//! mod kafka;
//! ```
//!
//! Nothing is skipped: a missing tansu binary or Python venv fails with the
//! hint to run scripts/test.sh, which installs both. `EDDYDB_TANSU` and
//! `EDDYDB_TEST_PYTHON` point at other installs.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use crate::server::{send_signal, TempDir};

/// How long a broker may take to answer its first metadata request. Generous
/// because tansu is a debug build on a machine shared with compilers.
pub const BROKER_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to exit after SIGTERM before it is killed.
pub const BROKER_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one admin or metadata request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports tried when a broker cannot bind the one it was given (another
/// process took it between our probe and tansu's bind).
const PORT_ATTEMPTS: u32 = 3;
/// Readiness polls back off from the first delay to the last.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);

/// One Kafka record to produce. `partition: None` lets the producer's
/// partitioner choose (by key hash); `None` key or value sends none (a `None`
/// value is a tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// A record with a value and no key, partition left to the producer.
    pub fn value(value: impl Into<Vec<u8>>) -> Record {
        Record {
            partition: None,
            key: None,
            value: Some(value.into()),
        }
    }

    /// A record with a key and a value, partition left to the producer.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Record {
        Record {
            partition: None,
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }

    /// A record with a key and a null value.
    pub fn tombstone(key: impl Into<Vec<u8>>) -> Record {
        Record {
            partition: None,
            key: Some(key.into()),
            value: None,
        }
    }

    /// The same record, sent to `partition`.
    pub fn in_partition(self, partition: i32) -> Record {
        Record {
            partition: Some(partition),
            ..self
        }
    }

    /// The JSON line kafka_produce.py reads: bytes as hex, null when absent.
    fn json_line(&self) -> String {
        let line = serde_json::json!({
            "partition": self.partition,
            "key": self.key.as_deref().map(hex),
            "value": self.value.as_deref().map(hex),
        });
        format!("{line}\n")
    }
}

/// A tansu broker process with its own data directory and log file.
pub struct Broker {
    root: TempDir,
    port: u16,
    child: Option<Child>,
    starts: u32,
    /// Whether the last start failed because the process exited.
    exited_at_start: bool,
}

impl Broker {
    /// Starts a broker on a free loopback port over a fresh sqlite database
    /// and returns once it answers a metadata request.
    pub fn start() -> anyhow::Result<Broker> {
        let binary = tansu_binary()?;
        let root = TempDir::new("eddydb-kafka")?;
        std::fs::create_dir(root.path().join("data"))?;
        let mut broker = Broker {
            root,
            port: 0,
            child: None,
            starts: 0,
            exited_at_start: false,
        };
        for _ in 0..PORT_ATTEMPTS {
            broker.port = free_port()?;
            match broker.spawn(&binary) {
                Ok(()) => return Ok(broker),
                // Most likely the port was taken before tansu bound it.
                Err(_) if broker.exited_at_start => continue,
                Err(err) => return Err(err),
            }
        }
        bail!(
            "broker exited at startup on {PORT_ATTEMPTS} ports; broker log:\n{}",
            broker.log_tail()
        )
    }

    /// `127.0.0.1:PORT`, the `bootstrap.servers` of clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A librdkafka config with `bootstrap.servers` set, for test clients.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    /// Creates `name` with `partitions` partitions through the Kafka admin
    /// API (CreateTopics) and waits until the metadata shows every partition
    /// with a leader. Fails if the topic exists.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT));
        let results = futures::executor::block_on(admin.create_topics([&topic], &options))
            .with_context(|| format!("CreateTopics {name}"))?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("creating topic {topic}: {code}");
            }
        }
        self.wait_for_partitions(&admin, name, partitions)
    }

    /// Produces `records` to `topic` in order with Python confluent-kafka
    /// (acks=all) and returns once every one is acknowledged.
    pub fn produce(&self, topic: &str, records: &[Record]) -> anyhow::Result<()> {
        let python = python_binary()?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kafka_produce.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(self.bootstrap())
            .arg(topic)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} (run scripts/test.sh)", python.display()))?;
        let input: String = records.iter().map(Record::json_line).collect();
        let mut stdin = child.stdin.take().context("producer stdin was not piped")?;
        // Written from a thread: the script may print (and fill a pipe)
        // before it has read all of its input.
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let output = child.wait_with_output()?;
        let written = writer
            .join()
            .map_err(|_| anyhow!("producer stdin writer panicked"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!(
                "kafka_produce.py failed with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                output.status
            );
        }
        written.context("writing records to kafka_produce.py")?;
        let expected = format!("produced {}", records.len());
        if stdout.trim() != expected {
            bail!("kafka_produce.py printed {stdout:?}, expected {expected:?}\n{stderr}");
        }
        Ok(())
    }

    /// Stops the broker with SIGTERM and waits for it; killed (and an error
    /// returned) if it does not exit within [`BROKER_SHUTDOWN_TIMEOUT`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let child = self.child.take().context("broker is not running")?;
        let pid = child.id();
        send_signal(pid, "TERM")?;
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let mut child = child;
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(BROKER_SHUTDOWN_TIMEOUT) {
            Ok(status) => {
                let _ = waiter.join();
                status?;
                Ok(())
            }
            Err(_) => {
                send_signal(pid, "KILL")?;
                let _ = waiter.join();
                bail!("broker pid {pid} did not exit within {BROKER_SHUTDOWN_TIMEOUT:?} of SIGTERM")
            }
        }
    }

    /// Crashes the broker with SIGKILL and reaps it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("broker is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the broker again on the same port and data directory, so
    /// clients configured with [`Broker::bootstrap`] reconnect to it.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("restart of a running broker: stop() or kill9() it first");
        }
        self.spawn(&tansu_binary()?)
    }

    /// The last 8 KiB of the broker's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let path = self.log_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let start = bytes.len().saturating_sub(8192);
                String::from_utf8_lossy(&bytes[start..]).into_owned()
            }
            Err(e) => format!("<no log at {}: {e}>", path.display()),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("broker.log")
    }

    fn spawn(&mut self, binary: &Path) -> anyhow::Result<()> {
        self.starts += 1;
        self.exited_at_start = false;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // Relative to the working directory: the data folder.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.root.path().join("data"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        self.child = Some(child);
        match self.wait_until_ready() {
            Ok(()) => Ok(()),
            Err(err) => {
                self.kill_quietly();
                Err(err.context(format!(
                    "broker start #{} on port {} failed; broker log:\n{}",
                    self.starts,
                    self.port,
                    self.log_tail()
                )))
            }
        }
    }

    /// Polls with a growing delay until the broker answers a metadata request
    /// listing itself, it exits, or [`BROKER_STARTUP_TIMEOUT`] passes. A TCP
    /// connect comes first so librdkafka's own reconnect backoff never
    /// delays the answer.
    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + BROKER_STARTUP_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut delay = POLL_FIRST;
        let mut last_error = String::from("not polled");
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().transpose()) {
                self.exited_at_start = true;
                bail!("broker exited during startup with {}", status?);
            }
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(_) => match self.fetch_broker_count() {
                    Ok(n) if n > 0 => return Ok(()),
                    Ok(_) => last_error = "metadata lists no broker".into(),
                    Err(e) => last_error = format!("metadata request: {e:#}"),
                },
                Err(e) => last_error = format!("connect {addr}: {e}"),
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(POLL_MAX);
        }
        bail!("broker not ready within {BROKER_STARTUP_TIMEOUT:?}: {last_error}")
    }

    fn fetch_broker_count(&self) -> anyhow::Result<usize> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let metadata = admin.inner().fetch_metadata(None, REQUEST_TIMEOUT)?;
        Ok(metadata.brokers().len())
    }

    fn wait_for_partitions(
        &self,
        admin: &AdminClient<DefaultClientContext>,
        name: &str,
        partitions: i32,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut delay = POLL_FIRST;
        loop {
            let metadata = admin.inner().fetch_metadata(Some(name), REQUEST_TIMEOUT)?;
            let ready = metadata.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("topic {name} has no {partitions} led partitions within {REQUEST_TIMEOUT:?}");
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(POLL_MAX);
        }
    }

    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill_quietly();
        if std::thread::panicking() {
            eprintln!("---- tansu broker log tail ----\n{}", self.log_tail());
        }
    }
}

/// The tansu binary: `EDDYDB_TANSU`, else the one scripts/test.sh builds into
/// target/tools.
pub fn tansu_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("EDDYDB_TANSU") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/tansu"),
    };
    if !path.is_file() {
        bail!(
            "no tansu broker at {} (run scripts/test.sh to build it, or set EDDYDB_TANSU)",
            path.display()
        );
    }
    Ok(path)
}

/// The Python with confluent-kafka: `EDDYDB_TEST_PYTHON`, else the venv
/// scripts/test.sh creates.
pub fn python_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("EDDYDB_TEST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python"),
    };
    if !path.is_file() {
        bail!(
            "no Python at {} (run scripts/test.sh to create the venv with confluent-kafka, \
             or set EDDYDB_TEST_PYTHON)",
            path.display()
        );
    }
    Ok(path)
}

/// A loopback port nobody listens on right now. tansu needs the number up
/// front (it advertises it), so a race with another process is possible;
/// [`Broker::start`] retries on another port.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("probing a free port")?;
    Ok(listener.local_addr()?.port())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
