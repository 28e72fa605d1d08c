//! Python scalar functions and aggregates, run in child processes.
//!
//! This file owns the worker processes of one definition (a [`PythonPool`]
//! for a scalar function, a [`PythonAggregatePool`] for an aggregate, both
//! over the same `Workers`), the frame protocol spoken with them, and the
//! conversion of Arrow columns to the JSON wire form `worker.py` reads, and
//! of its replies back to an Arrow column. User code never runs in the
//! server's process: a worker that dies is replaced, one that stops
//! answering is killed, and a row that raises is NULL with its traceback
//! reported. Turning a whole-batch failure into NULLs and error records for
//! a query is left to [`super::python_udf`]; keeping an aggregate's states
//! (with the view, in its checkpoints) is left to the dataflow.
//!
//! Protocol: frames of a 4-byte big-endian length followed by UTF-8 JSON, in
//! both directions. The first frame sets the worker up for one definition;
//! each later frame is one batch of rows, column-oriented, answered with one
//! result per row (scalar) or per group (aggregate) after any number of
//! `{"progress": n}` frames (sent while a batch is slow, so that a slow
//! batch is not taken for a hung worker). `worker.py` describes the Python
//! side.
//!
//! Aggregates keep no state in their workers: each call carries the states
//! of the groups it updates, pickled by Python and opaque here, and returns
//! the new ones, so that the dataflow can checkpoint them like any other
//! state and any worker can serve any call.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use datafusion::arrow::array::{
    new_empty_array, Array, ArrayRef, AsArray, BinaryArray, BooleanArray, GenericListArray,
    LargeBinaryArray, LargeStringArray, OffsetSizeTrait, PrimitiveArray, StringArray,
    StringViewArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Decimal128Type, FieldRef, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt8Type,
};
use serde::Deserialize;
use serde_json::Value;

/// The worker program, passed to the interpreter with `-c` so that nothing
/// is written to disk.
const WORKER_SOURCE: &str = include_str!("worker.py");

/// Idle workers kept per function; more are started when calls overlap and
/// killed when they finish.
const MAX_IDLE_WORKERS: usize = 4;

/// A batch may be silent this much longer than the per-call time limit
/// before its worker is taken to be hung: the worker's own timer should
/// have ended the call, so a longer silence means it cannot.
const HANG_GRACE: Duration = Duration::from_secs(5);

/// How long a worker may take to start and run the function's body (which
/// may import large libraries), on top of the per-call limit.
const SETUP_GRACE: Duration = Duration::from_secs(60);

/// Largest frame in either direction.
const MAX_FRAME_BYTES: usize = 1 << 30;

/// Frames read ahead of the caller; the worker sends few per batch.
const FRAME_QUEUE: usize = 8;

/// Lines of a worker's stderr kept for the message of a dead worker.
const STDERR_TAIL_LINES: usize = 20;

/// Longest stderr line kept; the rest of a longer line is dropped.
const MAX_STDERR_LINE_BYTES: usize = 4096;

/// How long a dead worker's last stderr lines are waited for.
const STDERR_DRAIN_WAIT: Duration = Duration::from_secs(1);

/// How user Python runs: the interpreter, the per-call time limit and the
/// address-space limit of each worker process.
#[derive(Debug, Clone)]
pub struct PythonConfig {
    /// The interpreter, e.g. `python3` (looked up in `PATH`).
    pub program: PathBuf,
    /// Per call of the function (one row). Zero means no limit, and then a
    /// silent worker is never taken to be hung.
    pub timeout: Duration,
    /// Bytes, the `RLIMIT_AS` of each worker process.
    pub memory_limit: Option<u64>,
}

/// A function's wire types (see worker.py), from an Arrow type; `None` if unsupported.
pub fn wire_type(data_type: &DataType) -> Option<String> {
    WireType::of(data_type).map(|w| w.name())
}

/// How values of one argument or result travel as JSON:
///
/// | wire          | JSON value                    | Python value                  |
/// |---------------|-------------------------------|-------------------------------|
/// | `bool`        | true / false                  | `bool`                        |
/// | `int`         | number                        | `int`                         |
/// | `float`       | number, or "NaN", "Infinity", "-Infinity" | `float`           |
/// | `decimal`     | string                        | `decimal.Decimal`             |
/// | `text`        | string                        | `str`                         |
/// | `bytea`       | hex string                    | `bytes`                       |
/// | `date`        | days since 1970-01-01         | `datetime.date`               |
/// | `timestamp`   | µs since the epoch            | naive `datetime.datetime`     |
/// | `timestamptz` | µs since the epoch            | UTC `datetime.datetime`       |
/// | `list:<t>`    | array of `<t>` values         | `list`                        |
///
/// NULL is JSON null and Python `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WireType {
    Bool,
    Int,
    Float,
    Decimal,
    Text,
    Bytea,
    Date,
    Timestamp,
    Timestamptz,
    List(Box<WireType>),
}

impl WireType {
    fn of(data_type: &DataType) -> Option<WireType> {
        use DataType as D;
        Some(match data_type {
            D::Boolean => WireType::Bool,
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 => {
                WireType::Int
            }
            D::Float32 | D::Float64 => WireType::Float,
            D::Decimal128(_, _) => WireType::Decimal,
            D::Utf8 | D::LargeUtf8 | D::Utf8View => WireType::Text,
            D::Binary | D::LargeBinary => WireType::Bytea,
            D::Date32 => WireType::Date,
            D::Timestamp(_, None) => WireType::Timestamp,
            D::Timestamp(_, Some(_)) => WireType::Timestamptz,
            D::List(field) | D::LargeList(field) => {
                WireType::List(Box::new(WireType::of(field.data_type())?))
            }
            _ => return None,
        })
    }

    fn name(&self) -> String {
        match self {
            WireType::Bool => "bool".into(),
            WireType::Int => "int".into(),
            WireType::Float => "float".into(),
            WireType::Decimal => "decimal".into(),
            WireType::Text => "text".into(),
            WireType::Bytea => "bytea".into(),
            WireType::Date => "date".into(),
            WireType::Timestamp => "timestamp".into(),
            WireType::Timestamptz => "timestamptz".into(),
            WireType::List(element) => format!("list:{}", element.name()),
        }
    }
}

/// One row's failure inside Python.
#[derive(Debug, Clone)]
pub struct RowError {
    pub row: usize,
    /// One line, e.g. `ValueError: negative input`.
    pub message: String,
    /// The Python traceback; empty for a result of the wrong type.
    pub traceback: String,
}

/// Why a whole batch failed (the worker could not be started, died, or stopped answering).
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("cannot start the Python interpreter: {0}")]
    Spawn(#[source] io::Error),
    /// The body does not run, or does not define a function of the name
    /// (an aggregate: create_state, accumulate and finish).
    #[error("{message}")]
    Definition { message: String, traceback: String },
    #[error("the Python worker process exited ({status}){}", last_output(.stderr_tail))]
    Died { status: String, stderr_tail: String },
    #[error(
        "the Python worker sent nothing for {seconds} s and was killed \
         (a call that ignores its time limit, or a process that stopped)"
    )]
    Hung { seconds: f64 },
    #[error("the Python worker broke the protocol: {0}")]
    Protocol(String),
    /// The columns given do not match the function's declaration (a bug of
    /// the caller).
    #[error("{0}")]
    Arguments(String),
}

fn last_output(stderr_tail: &str) -> String {
    if stderr_tail.is_empty() {
        String::new()
    } else {
        format!("; its last output:\n{stderr_tail}")
    }
}

/// A pool of worker processes for one scalar function. `Send + Sync`;
/// `call` may run concurrently from several threads (each takes its own
/// worker from the pool, spawning one when none is idle; the pool keeps at
/// most a handful idle). A worker that died, hung or broke protocol is
/// killed (by its PID, via Child::kill + wait) and not returned to the pool.
/// Dropping the pool kills its idle workers.
pub struct PythonPool {
    workers: Workers,
}

impl PythonPool {
    pub fn new(
        config: PythonConfig,
        name: String,
        body: String,
        args: Vec<DataType>,
        returns: DataType,
    ) -> Result<PythonPool, PythonError> {
        let workers = Workers::new(config, Kind::Scalar, name, body, args, returns)?;
        Ok(PythonPool { workers })
    }

    /// Starts one worker now and checks the definition (used at CREATE FUNCTION so a
    /// syntax error or a missing function is reported at once); keeps it idle in the pool.
    pub fn check(&self) -> Result<(), PythonError> {
        self.workers.check()
    }

    /// Runs the function over `n` rows: `columns[i]` is argument i (length n).
    /// Returns the result column (of `returns`, NULL where a row failed) and the row errors.
    pub fn call(
        &self,
        columns: &[ArrayRef],
        n: usize,
    ) -> Result<(ArrayRef, Vec<RowError>), PythonError> {
        let mut request = self.workers.begin_request(columns, n)?;
        request.push('}');
        let request = checked_frame(request)?;
        if n == 0 {
            return Ok((new_empty_array(&self.workers.returns), Vec::new()));
        }
        self.workers
            .exchange(&request, |reply| self.finish(reply, n))
    }

    /// The result column and row errors of a batch reply.
    fn finish(&self, reply: Reply, n: usize) -> Result<(ArrayRef, Vec<RowError>), PythonError> {
        let results = reply
            .results
            .ok_or_else(|| PythonError::Protocol("a batch reply without results".into()))?;
        if results.len() != n {
            return Err(PythonError::Protocol(format!(
                "{} results for a batch of {n} rows",
                results.len()
            )));
        }
        let values: Vec<&Value> = results.iter().collect();
        let (array, failures) =
            decode_values(&values, &self.workers.returns).map_err(PythonError::Protocol)?;
        let errors = row_errors(reply.errors, failures, n, "row", "")?;
        Ok((array, errors))
    }
}

impl fmt::Debug for PythonPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.workers.describe(f, "PythonPool")
    }
}

/// One group's work in an aggregate call: its state so far (None: a new group,
/// made by create_state()) and its rows, as indexes into the argument columns
/// with a weight (+n: accumulate n times, -n: retract n times), in order.
#[derive(Debug, Clone)]
pub struct GroupUpdate {
    pub state: Option<Vec<u8>>,
    pub rows: Vec<(usize, i64)>,
}

/// What an aggregate call gives back: per group (same order), the new state
/// (None when the group's state could not be produced — keep the old one),
/// the finished values as one array of the return type (NULL where finish
/// failed), and the failures (RowError.row = the group's index; message says
/// which function failed — accumulate/retract/finish/pickle — and for
/// accumulate/retract the row's argument values).
#[derive(Debug)]
pub struct AggregateOutput {
    pub states: Vec<Option<Vec<u8>>>,
    pub values: ArrayRef,
    pub errors: Vec<RowError>,
}

/// A pool of worker processes for one aggregate, pooled and supervised as a
/// [`PythonPool`]'s are. The workers are stateless between calls: a group's
/// state travels with each call (Python `pickle`, protocol 5, opaque here)
/// and comes back updated.
pub struct PythonAggregatePool {
    workers: Workers,
}

impl PythonAggregatePool {
    pub fn new(
        config: PythonConfig,
        name: String,
        body: String,
        args: Vec<DataType>,
        returns: DataType,
    ) -> Result<Self, PythonError> {
        let workers = Workers::new(config, Kind::Aggregate, name, body, args, returns)?;
        Ok(PythonAggregatePool { workers })
    }

    /// Starts a worker and checks the body defines create_state, accumulate and finish (callables);
    /// `retract` is optional. Errors as PythonError::Definition with message + traceback.
    pub fn check(&self) -> Result<(), PythonError> {
        self.workers.check()
    }

    /// Whether the body defines retract (known after the first worker started: check() or a call).
    pub fn retracts(&self) -> Option<bool> {
        self.workers.retract.get().copied()
    }

    /// Updates every group of `groups` in one crossing to a worker:
    /// `columns[i]` is argument i, and the groups' rows index into them.
    pub fn update(
        &self,
        columns: &[ArrayRef],
        groups: &[GroupUpdate],
    ) -> Result<AggregateOutput, PythonError> {
        let n = self.rows_given(columns, groups)?;
        let mut request = self.workers.begin_request(columns, n)?;
        self.write_groups(&mut request, groups, n)?;
        let request = checked_frame(request)?;
        if groups.is_empty() {
            return Ok(AggregateOutput {
                states: Vec::new(),
                values: new_empty_array(&self.workers.returns),
                errors: Vec::new(),
            });
        }
        self.workers
            .exchange(&request, |reply| self.finish(reply, groups.len()))
    }

    /// The rows of the argument columns: their length, or for an aggregate
    /// without arguments one past the highest row a group names.
    fn rows_given(
        &self,
        columns: &[ArrayRef],
        groups: &[GroupUpdate],
    ) -> Result<usize, PythonError> {
        if let Some(first) = columns.first() {
            return Ok(first.len());
        }
        let rows = groups.iter().flat_map(|group| group.rows.iter());
        let n = rows.map(|&(row, _)| row.saturating_add(1)).max();
        Ok(n.unwrap_or(0))
    }

    /// `,"groups":[{"state": base64 or null, "rows": [row, weight, row, weight, …]}, …]}`,
    /// closing the request. The pairs are flat: Python decodes an array of
    /// numbers several times faster than an array of pairs.
    fn write_groups(
        &self,
        out: &mut String,
        groups: &[GroupUpdate],
        n: usize,
    ) -> Result<(), PythonError> {
        out.push_str(",\"groups\":[");
        for (g, group) in groups.iter().enumerate() {
            if g > 0 {
                out.push(',');
            }
            out.push_str("{\"state\":");
            match &group.state {
                Some(state) => {
                    out.push('"');
                    push_base64(out, state);
                    out.push('"');
                }
                None => out.push_str("null"),
            }
            out.push_str(",\"rows\":[");
            for (k, &(row, weight)) in group.rows.iter().enumerate() {
                if row >= n {
                    return Err(PythonError::Arguments(format!(
                        "bug: group {g} of a call of Python aggregate {} names row {row} \
                         of {n} argument rows",
                        self.workers.name
                    )));
                }
                if k > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{row},{weight}"); // writing to a String cannot fail
            }
            out.push_str("]}");
        }
        out.push_str("]}");
        Ok(())
    }

    /// The states, values and errors of an aggregate reply.
    fn finish(&self, reply: Reply, count: usize) -> Result<AggregateOutput, PythonError> {
        let groups = reply
            .groups
            .ok_or_else(|| PythonError::Protocol("an aggregate reply without groups".into()))?;
        if groups.len() != count {
            return Err(PythonError::Protocol(format!(
                "{} results for a call of {count} groups",
                groups.len()
            )));
        }
        let states = groups
            .iter()
            .map(|group| group.state.as_deref().map(decode_base64).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(PythonError::Protocol)?;
        let values: Vec<&Value> = groups.iter().map(|group| &group.value).collect();
        let (values, failures) =
            decode_values(&values, &self.workers.returns).map_err(PythonError::Protocol)?;
        let errors = row_errors(reply.errors, failures, count, "group", "finish: ")?;
        Ok(AggregateOutput {
            states,
            values,
            errors,
        })
    }
}

impl fmt::Debug for PythonAggregatePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.workers.describe(f, "PythonAggregatePool")
    }
}

/// The errors of one reply, the worker's and the values that did not fit
/// the result type (`prefix` says where those came from), sorted by row
/// (for aggregates: by group, in the order they happened within a group).
fn row_errors(
    reported: Vec<(usize, String, String)>,
    failures: RowFailures,
    n: usize,
    unit: &str,
    prefix: &str,
) -> Result<Vec<RowError>, PythonError> {
    let mut errors = Vec::with_capacity(reported.len() + failures.len());
    for (row, message, traceback) in reported {
        if row >= n {
            return Err(PythonError::Protocol(format!(
                "an error for {unit} {row} of a batch of {n} {unit}s"
            )));
        }
        errors.push(RowError {
            row,
            message,
            traceback,
        });
    }
    errors.extend(failures.into_iter().map(|(row, message)| RowError {
        row,
        message: format!("{prefix}{message}"),
        traceback: String::new(),
    }));
    errors.sort_by_key(|e| e.row);
    Ok(errors)
}

/// A request frame's body, refused when a worker would not accept it.
fn checked_frame(request: String) -> Result<Vec<u8>, PythonError> {
    if request.len() > MAX_FRAME_BYTES {
        return Err(PythonError::Arguments(format!(
            "one batch takes {} bytes as JSON, more than the {MAX_FRAME_BYTES} a Python \
             worker accepts",
            request.len()
        )));
    }
    Ok(request.into_bytes())
}

/// Which protocol a worker speaks after its setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scalar,
    Aggregate,
}

/// The worker processes of one definition, scalar or aggregate: each set up
/// by the same first frame, kept idle between calls (a handful at most),
/// and used for one request and its reply at a time.
struct Workers {
    config: PythonConfig,
    name: String,
    args: Vec<DataType>,
    returns: DataType,
    /// The encoded setup frame every new worker gets.
    setup: Vec<u8>,
    idle: Mutex<Vec<Worker>>,
    /// Whether an aggregate's body defines `retract`, as the first setup
    /// reply said (every worker runs the same body).
    retract: OnceLock<bool>,
}

impl Workers {
    fn new(
        config: PythonConfig,
        kind: Kind,
        name: String,
        body: String,
        args: Vec<DataType>,
        returns: DataType,
    ) -> Result<Workers, PythonError> {
        let arg_wires = args
            .iter()
            .map(supported_wire)
            .collect::<Result<Vec<_>, _>>()?;
        let return_wire = supported_wire(&returns)?;
        let setup = serde_json::json!({
            "kind": match kind {
                Kind::Scalar => "scalar",
                Kind::Aggregate => "aggregate",
            },
            "name": name,
            "body": body,
            "args": arg_wires,
            "returns": return_wire,
            "timeout": config.timeout.as_secs_f64(),
            "memory_limit": config.memory_limit,
        });
        Ok(Workers {
            config,
            name,
            args,
            returns,
            setup: setup.to_string().into_bytes(),
            idle: Mutex::new(Vec::new()),
            retract: OnceLock::new(),
        })
    }

    fn check(&self) -> Result<(), PythonError> {
        let worker = self.start_worker()?;
        self.give_back(worker);
        Ok(())
    }

    /// Sends one request to a worker and reads its reply into `finish`. The
    /// worker goes back to the pool only when both went well; otherwise it
    /// is dropped, which kills and reaps it.
    fn exchange<T>(
        &self,
        request: &[u8],
        finish: impl FnOnce(Reply) -> Result<T, PythonError>,
    ) -> Result<T, PythonError> {
        let mut worker = self.take_worker()?;
        if worker.send(request).is_err() {
            return Err(worker.died());
        }
        let outcome = worker.next_reply(self.silence_limit()).and_then(finish);
        if outcome.is_ok() {
            self.give_back(worker);
        }
        outcome
    }

    /// The longest a batch may go without a frame from its worker.
    fn silence_limit(&self) -> Option<Duration> {
        (!self.config.timeout.is_zero()).then(|| self.config.timeout + HANG_GRACE)
    }

    /// The start of a request frame, `{"columns": [[…], …], "n": n`, left
    /// open for the caller to add to and close.
    fn begin_request(&self, columns: &[ArrayRef], n: usize) -> Result<String, PythonError> {
        if columns.len() != self.args.len() {
            return Err(PythonError::Arguments(format!(
                "bug: Python function {} takes {} arguments but was given {}",
                self.name,
                self.args.len(),
                columns.len()
            )));
        }
        let mut out = String::with_capacity(32 + n * 8 * columns.len());
        out.push_str("{\"columns\":[");
        for (k, (column, declared)) in columns.iter().zip(&self.args).enumerate() {
            self.check_argument(k, column, declared, n)?;
            if k > 0 {
                out.push(',');
            }
            out.push('[');
            write_values(&mut out, column.as_ref()).map_err(PythonError::Arguments)?;
            out.push(']');
        }
        let _ = write!(out, "],\"n\":{n}"); // writing to a String cannot fail
        Ok(out)
    }

    fn check_argument(
        &self,
        k: usize,
        column: &ArrayRef,
        declared: &DataType,
        n: usize,
    ) -> Result<(), PythonError> {
        if column.len() != n {
            return Err(PythonError::Arguments(format!(
                "bug: argument {} of Python function {} has {} rows, expected {n}",
                k + 1,
                self.name,
                column.len()
            )));
        }
        if WireType::of(column.data_type()) != WireType::of(declared) {
            return Err(PythonError::Arguments(format!(
                "bug: argument {} of Python function {} is {} where {declared} was declared",
                k + 1,
                self.name,
                column.data_type()
            )));
        }
        Ok(())
    }

    /// An idle worker, or a new one. Workers that exited while idle (killed
    /// by the OOM killer, say) are reaped and skipped.
    fn take_worker(&self) -> Result<Worker, PythonError> {
        loop {
            let idle = lock(&self.idle).pop();
            let Some(mut worker) = idle else {
                return self.start_worker();
            };
            if worker.is_running() {
                return Ok(worker);
            }
            tracing::warn!(function = %self.name, "an idle Python worker exited");
        }
    }

    fn give_back(&self, worker: Worker) {
        let surplus = {
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE_WORKERS {
                idle.push(worker);
                None
            } else {
                Some(worker)
            }
        };
        // Killed outside the lock, so other calls do not wait for the reaping.
        drop(surplus);
    }

    /// Starts a worker and sets it up for this definition.
    fn start_worker(&self) -> Result<Worker, PythonError> {
        let mut worker = Worker::start(&self.config.program, &self.name)?;
        if worker.send(&self.setup).is_err() {
            return Err(worker.died());
        }
        let reply = worker.next_reply(Some(self.config.timeout + SETUP_GRACE))?;
        if reply.ok == Some(true) {
            if let Some(retract) = reply.retract {
                let _ = self.retract.set(retract); // every worker runs the same body
            }
            return Ok(worker);
        }
        match reply.error {
            Some(message) => Err(PythonError::Definition {
                message,
                traceback: reply.traceback.unwrap_or_default(),
            }),
            None => Err(PythonError::Protocol(
                "the setup reply is neither ok nor an error".into(),
            )),
        }
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>, label: &str) -> fmt::Result {
        f.debug_struct(label)
            .field("name", &self.name)
            .field("program", &self.config.program)
            .field("args", &self.args)
            .field("returns", &self.returns)
            .finish_non_exhaustive()
    }
}

fn supported_wire(data_type: &DataType) -> Result<String, PythonError> {
    wire_type(data_type).ok_or_else(|| PythonError::Definition {
        message: format!("values of type {data_type} cannot be passed to or from Python"),
        traceback: String::new(),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks (idle workers, stderr lines) stays
    // consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------- workers

/// A frame from a worker's stdout, as its reader thread saw it.
enum Frame {
    Body(Vec<u8>),
    /// The stream cannot be read as frames any more.
    Broken(String),
}

/// Any frame a worker sends; which fields are set tells what it is.
#[derive(Debug, Deserialize)]
struct Reply {
    progress: Option<u64>,
    /// A scalar batch's values, one per row.
    results: Option<Vec<Value>>,
    /// An aggregate call's groups, in the order they were sent.
    groups: Option<Vec<GroupReply>>,
    /// (row or group, message, traceback)
    #[serde(default)]
    errors: Vec<(usize, String, String)>,
    ok: Option<bool>,
    /// In an aggregate's setup reply: whether the body defines `retract`.
    retract: Option<bool>,
    error: Option<String>,
    traceback: Option<String>,
}

/// One group of an aggregate reply.
#[derive(Debug, Deserialize)]
struct GroupReply {
    /// The new state, pickled and in base64; null when it could not be made.
    state: Option<String>,
    /// `finish(state)` as a wire value.
    #[serde(default)]
    value: Value,
}

/// One worker process. Dropping it kills and reaps the process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    frames: Receiver<Frame>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Disconnects when the stderr thread has read everything.
    stderr_done: Receiver<()>,
}

impl Worker {
    /// Starts the process and its two reader threads (stdout frames onto a
    /// channel, so that waiting can time out; stderr lines into the log).
    fn start(program: &Path, function: &str) -> Result<Worker, PythonError> {
        let mut child = Command::new(program)
            .arg("-u")
            .arg("-c")
            .arg(WORKER_SOURCE)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(PythonError::Spawn)?;
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
            reap(&mut child);
            return Err(PythonError::Protocol(
                "bug: the worker's pipes were not opened".into(),
            ));
        };
        let (frame_sender, frames) = mpsc::sync_channel(FRAME_QUEUE);
        let (done_sender, stderr_done) = mpsc::sync_channel(1);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let tail = Arc::clone(&stderr_tail);
        let name = function.to_string();
        // Thread names cannot hold NUL; identifiers never should.
        let label = function.replace('\0', "");
        let started = thread::Builder::new()
            .name(format!("py-out-{label}"))
            .spawn(move || read_frames(stdout, frame_sender))
            .and_then(|_| {
                thread::Builder::new()
                    .name(format!("py-err-{label}"))
                    .spawn(move || log_stderr(stderr, &name, &tail, done_sender))
            });
        if let Err(e) = started {
            reap(&mut child);
            return Err(PythonError::Spawn(e));
        }
        Ok(Worker {
            child,
            stdin,
            frames,
            stderr_tail,
            stderr_done,
        })
    }

    fn send(&mut self, body: &[u8]) -> io::Result<()> {
        let length = u32::try_from(body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        self.stdin.write_all(&length.to_be_bytes())?;
        self.stdin.write_all(body)?;
        self.stdin.flush()
    }

    /// The next frame that is not progress. `silence` is the longest wait
    /// for any frame; past it the worker is killed as hung.
    fn next_reply(&mut self, silence: Option<Duration>) -> Result<Reply, PythonError> {
        loop {
            let frame = match silence {
                Some(limit) => self.frames.recv_timeout(limit),
                None => self
                    .frames
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            let body = match frame {
                Ok(Frame::Body(body)) => body,
                Ok(Frame::Broken(reason)) => return Err(PythonError::Protocol(reason)),
                Err(RecvTimeoutError::Timeout) => {
                    reap(&mut self.child);
                    let seconds = silence.map_or(0.0, |limit| limit.as_secs_f64());
                    return Err(PythonError::Hung { seconds });
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.died()),
            };
            let reply: Reply = serde_json::from_slice(&body)
                .map_err(|e| PythonError::Protocol(format!("an unreadable frame: {e}")))?;
            if reply.progress.is_none() {
                return Ok(reply);
            }
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Reaps the process (killing it, should it still run with its stdout
    /// closed) and describes how it ended, with its last stderr lines.
    fn died(&mut self) -> PythonError {
        let status = reap(&mut self.child);
        // The stderr thread may still be logging the last lines.
        let _ = self.stderr_done.recv_timeout(STDERR_DRAIN_WAIT);
        let tail = lock(&self.stderr_tail);
        let stderr_tail = tail.iter().cloned().collect::<Vec<_>>().join("\n");
        PythonError::Died {
            status,
            stderr_tail,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

/// Kills the process (by its PID; a no-op once it has exited) and waits for
/// it, so that no zombie remains. Returns how it ended.
fn reap(child: &mut Child) -> String {
    let _ = child.kill();
    match child.wait() {
        Ok(status) => status.to_string(),
        Err(e) => format!("status unknown: {e}"),
    }
}

/// The stdout reader thread: frames onto the channel until end of stream.
fn read_frames(mut stdout: ChildStdout, frames: SyncSender<Frame>) {
    loop {
        let frame = match read_frame(&mut stdout) {
            Ok(Some(body)) => Frame::Body(body),
            Ok(None) => return,
            Err(reason) => Frame::Broken(reason),
        };
        let broken = matches!(frame, Frame::Broken(_));
        if frames.send(frame).is_err() || broken {
            return;
        }
    }
}

/// One frame's body, or `None` at end of stream (also in the middle of a
/// frame: the process died while writing it).
fn read_frame(source: &mut impl Read) -> Result<Option<Vec<u8>>, String> {
    let mut header = [0u8; 4];
    match source.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("cannot read from the worker: {e}")),
    }
    let length = u32::from_be_bytes(header) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(format!(
            "a frame of {length} bytes, more than the {MAX_FRAME_BYTES} allowed"
        ));
    }
    let mut body = vec![0; length];
    match source.read_exact(&mut body) {
        Ok(()) => Ok(Some(body)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(format!("cannot read from the worker: {e}")),
    }
}

/// The stderr thread: every line (user `print()` output, tracebacks of a
/// dying worker) goes to the server log and the last few are kept.
fn log_stderr(
    stderr: ChildStderr,
    function: &str,
    tail: &Mutex<VecDeque<String>>,
    _done: SyncSender<()>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    while let Ok(true) = read_line_capped(&mut reader, &mut line, MAX_STDERR_LINE_BYTES) {
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        tracing::info!(function = %function, "{text}");
        let mut tail = lock(tail);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    }
}

/// Reads one line into `line`, keeping at most `cap` bytes of it. False at
/// end of stream with nothing read.
fn read_line_capped(reader: &mut impl BufRead, line: &mut Vec<u8>, cap: usize) -> io::Result<bool> {
    line.clear();
    let mut read_any = false;
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let (chunk, used, complete) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (&buffer[..at], at + 1, true),
            None => (buffer, buffer.len(), false),
        };
        let room = cap.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if complete {
            return Ok(true);
        }
    }
}

// ---------------------------------------------------------------- states

/// The standard base64 alphabet, in which aggregate states travel (as
/// Python's `binascii` writes and reads it).
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends `bytes` in base64, padded with `=`.
fn push_base64(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |k: usize| u32::from(chunk.get(k).copied().unwrap_or(0));
        let bits = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for k in 0..4 {
            if k <= chunk.len() {
                let sextet = (bits >> (18 - 6 * k)) & 63;
                out.push(char::from(BASE64_ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

/// Bytes from padded base64, as [`push_base64`] and Python's
/// `binascii.b2a_base64` write it.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("a state that is not base64 ({} characters)", text.len());
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return Err(invalid());
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (k, quad) in bytes.chunks(4).enumerate() {
        let last = (k + 1) * 4 == bytes.len();
        let padding = if last {
            quad.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if padding > 2 {
            return Err(invalid());
        }
        let mut bits = 0u32;
        for &c in &quad[..4 - padding] {
            bits = (bits << 6) | u32::from(base64_sextet(c).ok_or_else(invalid)?);
        }
        bits <<= 6 * padding;
        let decoded = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        out.extend_from_slice(&decoded[..3 - padding]);
    }
    Ok(out)
}

fn base64_sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

// ---------------------------------------------------------------- Arrow -> wire

/// One row's argument values as a JSON array, for error records.
pub(crate) fn row_json(columns: &[ArrayRef], row: usize) -> String {
    let mut out = String::from("[");
    for (k, column) in columns.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        let mut value = String::new();
        if row < column.len() && write_values(&mut value, column.slice(row, 1).as_ref()).is_ok() {
            out.push_str(&value);
        } else {
            out.push_str("null");
        }
    }
    out.push(']');
    out
}

/// Appends the wire value of every row of `array`, comma-separated.
fn write_values(out: &mut String, array: &dyn Array) -> Result<(), String> {
    use DataType as D;
    match array.data_type() {
        D::Boolean => {
            let values = array.as_boolean();
            each_row(out, array, |out, i| {
                out.push_str(if values.value(i) { "true" } else { "false" })
            });
        }
        D::Int8 => write_integers(out, array.as_primitive::<Int8Type>()),
        D::Int16 => write_integers(out, array.as_primitive::<Int16Type>()),
        D::Int32 => write_integers(out, array.as_primitive::<Int32Type>()),
        D::Int64 => write_integers(out, array.as_primitive::<Int64Type>()),
        D::UInt8 => write_integers(out, array.as_primitive::<UInt8Type>()),
        D::UInt16 => write_integers(out, array.as_primitive::<UInt16Type>()),
        D::UInt32 => write_integers(out, array.as_primitive::<UInt32Type>()),
        D::Date32 => write_integers(out, array.as_primitive::<Date32Type>()),
        D::Float32 => {
            let values = array.as_primitive::<Float32Type>();
            each_row(out, array, |out, i| push_float(out, values.value(i)));
        }
        D::Float64 => {
            let values = array.as_primitive::<Float64Type>();
            each_row(out, array, |out, i| push_float(out, values.value(i)));
        }
        D::Decimal128(_, scale) => {
            let values = array.as_primitive::<Decimal128Type>();
            each_row(out, array, |out, i| {
                out.push('"');
                push_decimal(out, values.value(i), *scale);
                out.push('"');
            });
        }
        D::Utf8 => {
            let strings = array.as_string::<i32>();
            write_texts(out, array, |i| strings.value(i));
        }
        D::LargeUtf8 => {
            let strings = array.as_string::<i64>();
            write_texts(out, array, |i| strings.value(i));
        }
        D::Utf8View => {
            let strings = array.as_string_view();
            write_texts(out, array, |i| strings.value(i));
        }
        D::Binary => {
            let bytes = array.as_binary::<i32>();
            write_hex(out, array, |i| bytes.value(i));
        }
        D::LargeBinary => {
            let bytes = array.as_binary::<i64>();
            write_hex(out, array, |i| bytes.value(i));
        }
        D::Timestamp(unit, _) => write_timestamps(out, array, *unit),
        D::List(_) => return write_lists(out, array.as_list::<i32>()),
        D::LargeList(_) => return write_lists(out, array.as_list::<i64>()),
        other => return Err(format!("values of type {other} cannot be passed to Python")),
    }
    Ok(())
}

/// Calls `write` for every non-null row, with commas and nulls between.
fn each_row(out: &mut String, array: &dyn Array, mut write: impl FnMut(&mut String, usize)) {
    for i in 0..array.len() {
        if i > 0 {
            out.push(',');
        }
        if array.is_null(i) {
            out.push_str("null");
        } else {
            write(out, i);
        }
    }
}

fn write_integers<T: ArrowPrimitiveType>(out: &mut String, array: &PrimitiveArray<T>)
where
    T::Native: fmt::Display,
{
    each_row(out, array, |out, i| {
        let _ = write!(out, "{}", array.value(i));
    });
}

/// Finite floats in Rust's shortest round-trip form, which always reads
/// back as a float (`1.0`, `1e-7`); the others as the strings worker.py
/// reads with `float()`.
fn push_float<F: Into<f64> + fmt::Debug + Copy>(out: &mut String, value: F) {
    let wide: f64 = value.into();
    if wide.is_nan() {
        out.push_str("\"NaN\"");
    } else if wide.is_infinite() {
        out.push_str(if wide > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// `value` scaled down by 10^`scale`, in plain notation (`-0.05`, `1200`).
fn push_decimal(out: &mut String, value: i128, scale: i8) {
    if scale <= 0 {
        let _ = write!(out, "{value}");
        if value != 0 {
            out.extend(std::iter::repeat_n('0', usize::from(scale.unsigned_abs())));
        }
        return;
    }
    let digits = value.unsigned_abs().to_string();
    let scale = usize::from(scale.unsigned_abs());
    if value < 0 {
        out.push('-');
    }
    if digits.len() <= scale {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    } else {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    }
}

fn write_texts<'a>(out: &mut String, array: &'a dyn Array, value: impl Fn(usize) -> &'a str) {
    each_row(out, array, |out, i| push_json_string(out, value(i)));
}

/// A JSON string literal: quotes, backslashes and control characters
/// escaped, everything else as UTF-8.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Every escaped byte is ASCII, so `i` is a character boundary.
        out.push_str(&text[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

fn write_hex<'a>(out: &mut String, array: &'a dyn Array, value: impl Fn(usize) -> &'a [u8]) {
    each_row(out, array, |out, i| {
        out.push('"');
        for byte in value(i) {
            let _ = write!(out, "{byte:02x}");
        }
        out.push('"');
    });
}

/// Timestamps of any unit as microseconds; nanoseconds round down, so a
/// time never moves past the next microsecond.
fn write_timestamps(out: &mut String, array: &dyn Array, unit: TimeUnit) {
    match unit {
        TimeUnit::Second => write_micros(
            out,
            array.as_primitive::<TimestampSecondType>(),
            |seconds| seconds.saturating_mul(1_000_000),
        ),
        TimeUnit::Millisecond => write_micros(
            out,
            array.as_primitive::<TimestampMillisecondType>(),
            |millis| millis.saturating_mul(1_000),
        ),
        TimeUnit::Microsecond => write_micros(
            out,
            array.as_primitive::<TimestampMicrosecondType>(),
            |micros| micros,
        ),
        TimeUnit::Nanosecond => write_micros(
            out,
            array.as_primitive::<TimestampNanosecondType>(),
            |nanos| nanos.div_euclid(1_000),
        ),
    }
}

fn write_micros<T: ArrowPrimitiveType<Native = i64>>(
    out: &mut String,
    array: &PrimitiveArray<T>,
    to_micros: impl Fn(i64) -> i64,
) {
    each_row(out, array, |out, i| {
        let _ = write!(out, "{}", to_micros(array.value(i)));
    });
}

fn write_lists<O: OffsetSizeTrait>(
    out: &mut String,
    lists: &GenericListArray<O>,
) -> Result<(), String> {
    let mut outcome = Ok(());
    each_row(out, lists, |out, i| {
        if outcome.is_ok() {
            out.push('[');
            outcome = write_values(out, lists.value(i).as_ref());
            out.push(']');
        }
    });
    outcome
}

// ---------------------------------------------------------------- wire -> Arrow

/// Rows whose value cannot be stored in the result type, with the reason.
type RowFailures = Vec<(usize, String)>;

/// Builds a column of `data_type` from wire values; a value that does not
/// fit is NULL and a row failure. `Err` only for a type without a decoder.
fn decode_values(
    values: &[&Value],
    data_type: &DataType,
) -> Result<(ArrayRef, RowFailures), String> {
    use DataType as D;
    Ok(match data_type {
        D::Boolean => boxed(collect_rows::<BooleanArray, _>(values, boolean)),
        D::Int8 => decode_primitive::<Int8Type>(values, data_type, |v| integer(v, "Int8")),
        D::Int16 => decode_primitive::<Int16Type>(values, data_type, |v| integer(v, "smallint")),
        D::Int32 => decode_primitive::<Int32Type>(values, data_type, |v| integer(v, "integer")),
        D::Int64 => decode_primitive::<Int64Type>(values, data_type, |v| integer(v, "bigint")),
        D::UInt8 => decode_primitive::<UInt8Type>(values, data_type, |v| integer(v, "UInt8")),
        D::UInt16 => decode_primitive::<UInt16Type>(values, data_type, |v| integer(v, "UInt16")),
        D::UInt32 => decode_primitive::<UInt32Type>(values, data_type, |v| integer(v, "UInt32")),
        D::Date32 => decode_primitive::<Date32Type>(values, data_type, |v| integer(v, "date")),
        D::Float32 => decode_primitive::<Float32Type>(values, data_type, float32),
        D::Float64 => decode_primitive::<Float64Type>(values, data_type, float),
        D::Decimal128(precision, scale) => {
            decode_primitive::<Decimal128Type>(values, data_type, |v| {
                decimal(v, *precision, *scale)
            })
        }
        D::Utf8 => boxed(collect_rows::<StringArray, _>(values, text)),
        D::LargeUtf8 => boxed(collect_rows::<LargeStringArray, _>(values, text)),
        D::Utf8View => boxed(collect_rows::<StringViewArray, _>(values, text)),
        D::Binary => boxed(collect_rows::<BinaryArray, _>(values, hex_bytes)),
        D::LargeBinary => boxed(collect_rows::<LargeBinaryArray, _>(values, hex_bytes)),
        D::Timestamp(unit, _) => decode_timestamps(values, data_type, *unit),
        D::List(field) => decode_lists::<i32>(values, field)?,
        D::LargeList(field) => decode_lists::<i64>(values, field)?,
        other => return Err(format!("bug: no decoder for results of type {other}")),
    })
}

fn boxed<A: Array + 'static>((array, failures): (A, RowFailures)) -> (ArrayRef, RowFailures) {
    (Arc::new(array), failures)
}

/// Parses every non-null value with `parse` into an array collected from
/// options; a value `parse` refuses is NULL and a row failure.
fn collect_rows<'v, A, P>(
    values: &[&'v Value],
    parse: impl Fn(&'v Value) -> Result<P, String>,
) -> (A, RowFailures)
where
    A: FromIterator<Option<P>>,
{
    let mut failures = Vec::new();
    let array = values
        .iter()
        .enumerate()
        .map(|(row, &value)| {
            if value.is_null() {
                return None;
            }
            match parse(value) {
                Ok(parsed) => Some(parsed),
                Err(message) => {
                    failures.push((row, message));
                    None
                }
            }
        })
        .collect();
    (array, failures)
}

/// Like [`collect_rows`], with the declared type kept (a timestamp's time
/// zone, a decimal's precision and scale).
fn decode_primitive<T: ArrowPrimitiveType>(
    values: &[&Value],
    data_type: &DataType,
    parse: impl Fn(&Value) -> Result<T::Native, String>,
) -> (ArrayRef, RowFailures) {
    let (array, failures) = collect_rows::<PrimitiveArray<T>, _>(values, parse);
    (Arc::new(array.with_data_type(data_type.clone())), failures)
}

fn decode_timestamps(
    values: &[&Value],
    data_type: &DataType,
    unit: TimeUnit,
) -> (ArrayRef, RowFailures) {
    let convert = |v: &Value| timestamp(v, unit);
    match unit {
        TimeUnit::Second => decode_primitive::<TimestampSecondType>(values, data_type, convert),
        TimeUnit::Millisecond => {
            decode_primitive::<TimestampMillisecondType>(values, data_type, convert)
        }
        TimeUnit::Microsecond => {
            decode_primitive::<TimestampMicrosecondType>(values, data_type, convert)
        }
        TimeUnit::Nanosecond => {
            decode_primitive::<TimestampNanosecondType>(values, data_type, convert)
        }
    }
}

/// Lists of the element type. A row with an element that does not fit (or
/// a NULL element where the element field is not nullable) is NULL as a
/// whole; the elements are then decoded again without it, so that the child
/// array holds only the elements of valid rows.
fn decode_lists<O: OffsetSizeTrait>(
    values: &[&Value],
    field: &FieldRef,
) -> Result<(ArrayRef, RowFailures), String> {
    let mut failures = Vec::new();
    let mut valid: Vec<bool> = Vec::with_capacity(values.len());
    for (row, value) in values.iter().enumerate() {
        match value {
            Value::Array(_) => valid.push(true),
            Value::Null => valid.push(false),
            other => {
                failures.push((row, unexpected(other, "a list")));
                valid.push(false);
            }
        }
    }
    let (elements, owners) = list_elements(values, &valid);
    let (mut child, child_failures) = decode_values(&elements, field.data_type())?;
    let mut dropped = false;
    for (k, message) in child_failures {
        if std::mem::replace(&mut valid[owners[k]], false) {
            failures.push((owners[k], format!("list element: {message}")));
            dropped = true;
        }
    }
    if !field.is_nullable() {
        for (k, element) in elements.iter().enumerate() {
            if element.is_null() && std::mem::replace(&mut valid[owners[k]], false) {
                failures.push((
                    owners[k],
                    "NULL element in a list of non-null elements".into(),
                ));
                dropped = true;
            }
        }
    }
    if dropped {
        let (elements, _) = list_elements(values, &valid);
        child = decode_values(&elements, field.data_type())?.0;
    }
    let lengths = values.iter().zip(&valid).map(|(value, &ok)| match value {
        Value::Array(items) if ok => items.len(),
        _ => 0,
    });
    let offsets = OffsetBuffer::<O>::from_lengths(lengths);
    let nulls = NullBuffer::from(valid);
    let lists = GenericListArray::<O>::try_new(Arc::clone(field), offsets, child, Some(nulls))
        .map_err(|e| format!("bug: cannot build the list result: {e}"))?;
    Ok((Arc::new(lists), failures))
}

/// The elements of the valid list rows, flattened, and the row of each.
fn list_elements<'v>(values: &[&'v Value], valid: &[bool]) -> (Vec<&'v Value>, Vec<usize>) {
    let mut elements = Vec::new();
    let mut owners = Vec::new();
    for (row, (&value, &ok)) in values.iter().zip(valid).enumerate() {
        if let (Value::Array(items), true) = (value, ok) {
            elements.extend(items.iter());
            owners.extend(std::iter::repeat_n(row, items.len()));
        }
    }
    (elements, owners)
}

fn unexpected(value: &Value, expected: &str) -> String {
    let shown: String = value.to_string().chars().take(40).collect();
    format!("the worker sent {shown} where {expected} was expected")
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| unexpected(value, "a boolean"))
}

fn integer<N: TryFrom<i64>>(value: &Value, type_name: &str) -> Result<N, String> {
    let wide = value
        .as_i64()
        .ok_or_else(|| unexpected(value, "an integer"))?;
    N::try_from(wide).map_err(|_| format!("value {wide} out of range for {type_name}"))
}

fn float(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => match text.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| unexpected(value, "a number"))
}

fn float32(value: &Value) -> Result<f32, String> {
    let wide = float(value)?;
    let narrow = wide as f32;
    if wide.is_finite() && !narrow.is_finite() {
        return Err(format!("value {wide} out of range for real"));
    }
    Ok(narrow)
}

fn decimal(value: &Value, precision: u8, scale: i8) -> Result<i128, String> {
    match value {
        Value::String(text) => parse_decimal(text, precision, scale),
        Value::Number(number) => parse_decimal(&number.to_string(), precision, scale),
        other => Err(unexpected(other, "a decimal string")),
    }
}

/// A decimal text (`-12.345`, `1E+3`) as the unscaled integer of
/// `Decimal128(precision, scale)`, rounded half away from zero as
/// PostgreSQL rounds numeric values.
fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let invalid = || format!("invalid numeric value {text:?}");
    let overflow =
        || format!("numeric field overflow: {text} does not fit numeric({precision}, {scale})");
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => {
            let exponent: i64 = unsigned[at + 1..].parse().map_err(|_| invalid())?;
            (&unsigned[..at], exponent)
        }
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    // The value is digits × 10^(exponent − fraction digits); its unscaled
    // integer is that × 10^scale.
    let shift = exponent
        .saturating_sub(fraction.len() as i64)
        .saturating_add(i64::from(scale));
    let digits = digits.trim_start_matches('0');
    let magnitude = if digits.is_empty() {
        0
    } else if shift >= 0 {
        if shift.saturating_add(digits.len() as i64) > 38 {
            return Err(overflow());
        }
        let base: i128 = digits.parse().map_err(|_| overflow())?;
        base.checked_mul(10_i128.pow(shift as u32))
            .ok_or_else(overflow)?
    } else {
        round_digits(digits, shift.unsigned_abs()).ok_or_else(overflow)?
    };
    if magnitude >= 10_i128.pow(u32::from(precision.min(38))) {
        return Err(overflow());
    }
    Ok(if negative { -magnitude } else { magnitude })
}

/// `digits` with its last `drop` digits removed, rounding half up; `None`
/// when what remains does not fit an i128.
fn round_digits(digits: &str, drop: u64) -> Option<i128> {
    let Ok(drop) = usize::try_from(drop) else {
        return Some(0);
    };
    if drop > digits.len() {
        return Some(0);
    }
    let (kept, dropped) = digits.split_at(digits.len() - drop);
    let base: i128 = if kept.is_empty() {
        0
    } else {
        kept.parse().ok()?
    };
    let round_up = dropped.as_bytes().first().is_some_and(|&d| d >= b'5');
    base.checked_add(i128::from(round_up))
}

fn text(value: &Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| unexpected(value, "a string"))
}

fn hex_bytes(value: &Value) -> Result<Vec<u8>, String> {
    let hex = text(value)?;
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    if hex.len() % 2 != 0 {
        return Err(unexpected(value, "a hex string"));
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| unexpected(value, "a hex string"))
}

/// Microseconds since the epoch in the declared unit (rounding down to
/// coarser units).
fn timestamp(value: &Value, unit: TimeUnit) -> Result<i64, String> {
    let micros = value
        .as_i64()
        .ok_or_else(|| unexpected(value, "microseconds since the epoch"))?;
    match unit {
        TimeUnit::Second => Ok(micros.div_euclid(1_000_000)),
        TimeUnit::Millisecond => Ok(micros.div_euclid(1_000)),
        TimeUnit::Microsecond => Ok(micros),
        TimeUnit::Nanosecond => micros
            .checked_mul(1_000)
            .ok_or_else(|| format!("timestamp {micros} µs out of range for nanoseconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Date32Array, Decimal128Array, Float64Array, Int64Array, ListArray,
        TimestampMicrosecondArray, TimestampMillisecondArray,
    };

    fn config(timeout: Duration) -> PythonConfig {
        PythonConfig {
            program: PathBuf::from("python3"),
            timeout,
            memory_limit: None,
        }
    }

    fn pool(body: &str, args: Vec<DataType>, returns: DataType) -> PythonPool {
        pool_with(config(Duration::from_secs(10)), body, args, returns)
    }

    fn pool_with(
        config: PythonConfig,
        body: &str,
        args: Vec<DataType>,
        returns: DataType,
    ) -> PythonPool {
        PythonPool::new(config, "f".into(), body.into(), args, returns).expect("pool")
    }

    fn ints(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    fn call(pool: &PythonPool, columns: &[ArrayRef]) -> (ArrayRef, Vec<RowError>) {
        let n = columns.first().map_or(0, |c| c.len());
        pool.call(columns, n).expect("call")
    }

    #[test]
    fn pools_are_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<PythonPool>();
    }

    #[test]
    fn ints_and_floats() {
        let pool = pool(
            "def f(a, b):\n    return a * 2 + b\n",
            vec![DataType::Int64, DataType::Float64],
            DataType::Float64,
        );
        let b: ArrayRef = Arc::new(Float64Array::from(vec![0.5, -1.0, 0.25]));
        let (result, errors) = call(&pool, &[ints(&[Some(1), Some(2), Some(3)]), b]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            result.as_primitive::<Float64Type>().values().to_vec(),
            vec![2.5, 3.0, 6.25]
        );
        // The worker is reused for the next batch.
        let b: ArrayRef = Arc::new(Float64Array::from(vec![f64::NAN]));
        let (result, _) = call(&pool, &[ints(&[Some(1)]), b]);
        assert!(result.as_primitive::<Float64Type>().value(0).is_nan());
    }

    #[test]
    fn none_reaches_user_code() {
        let pool = pool(
            "def f(x):\n    if x is None:\n        return -1\n    return None if x == 0 else x\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        let (result, errors) = call(&pool, &[ints(&[Some(5), None, Some(0)])]);
        assert!(errors.is_empty(), "{errors:?}");
        let result = result.as_primitive::<Int64Type>();
        assert_eq!((result.value(0), result.value(1)), (5, -1));
        assert!(result.is_null(2));
    }

    #[test]
    fn exceptions_fail_their_rows_only() {
        let pool = pool(
            "def f(x):\n    if x == 2:\n        raise ValueError('no twos here')\n    return x + 1\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        let (result, errors) = call(&pool, &[ints(&[Some(1), Some(2), Some(3)])]);
        let result = result.as_primitive::<Int64Type>();
        assert_eq!((result.value(0), result.value(2)), (2, 4));
        assert!(result.is_null(1));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].row, 1);
        assert_eq!(errors[0].message, "ValueError: no twos here");
        assert!(errors[0].traceback.contains("no twos here"));
        assert!(errors[0].traceback.contains("line 3, in f"));
    }

    #[test]
    fn wrong_return_types_fail_their_rows() {
        let floats = pool(
            "def f(x):\n    return 'text' if x == 1 else x\n",
            vec![DataType::Int64],
            DataType::Float64,
        );
        let (result, errors) = call(&floats, &[ints(&[Some(1), Some(2)])]);
        assert_eq!(result.as_primitive::<Float64Type>().value(1), 2.0);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].message,
            "wrong return type: expected float, got str"
        );

        let integers = pool(
            "def f(x):\n    return x * 1000000\n",
            vec![DataType::Int64],
            DataType::Int32,
        );
        let (result, errors) = call(&integers, &[ints(&[Some(1), Some(10_000)])]);
        assert_eq!(result.as_primitive::<Int32Type>().value(0), 1_000_000);
        assert!(result.is_null(1));
        assert_eq!(
            errors[0].message,
            "value 10000000000 out of range for integer"
        );
    }

    #[test]
    fn a_call_past_its_time_limit_fails_its_row_only() {
        let pool = pool_with(
            config(Duration::from_secs(1)),
            "import time\ndef f(x):\n    if x == 2:\n        time.sleep(60)\n    return x\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        let (result, errors) = call(&pool, &[ints(&[Some(1), Some(2), Some(3)])]);
        let result = result.as_primitive::<Int64Type>();
        assert_eq!((result.value(0), result.value(2)), (1, 3));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].row, 1);
        assert_eq!(errors[0].message, "timed out after 1 s");
        assert!(errors[0].traceback.contains("time.sleep(60)"));
    }

    #[test]
    fn a_worker_that_ignores_its_time_limit_is_killed() {
        // With SIGALRM blocked the worker's own timer cannot end the call.
        let pool = pool_with(
            config(Duration::from_millis(200)),
            "import signal, time\ndef f(x):\n    \
             signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])\n    \
             time.sleep(60)\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        let error = pool.call(&[ints(&[Some(1)])], 1).expect_err("hung");
        assert!(matches!(error, PythonError::Hung { .. }), "{error}");
        assert!(lock(&pool.workers.idle).is_empty());
    }

    #[test]
    fn a_dead_worker_fails_the_batch_and_is_replaced() {
        let pool = pool(
            "import os, sys\ndef f(x):\n    if x == 3:\n        \
             print('about to exit', file=sys.stderr)\n        os._exit(3)\n    return x\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        let error = pool
            .call(&[ints(&[Some(1), Some(3)])], 2)
            .expect_err("died");
        match &error {
            PythonError::Died {
                status,
                stderr_tail,
            } => {
                assert!(status.contains('3'), "{status}");
                assert!(stderr_tail.contains("about to exit"), "{stderr_tail}");
            }
            other => panic!("expected Died, got {other:?}"),
        }
        let (result, errors) = call(&pool, &[ints(&[Some(7)])]);
        assert!(errors.is_empty());
        assert_eq!(result.as_primitive::<Int64Type>().value(0), 7);
    }

    #[test]
    fn definition_errors_are_reported_at_check() {
        let broken = pool(
            "def f(x):\n    return (x\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        match broken.check().expect_err("syntax error") {
            PythonError::Definition { message, .. } => {
                assert!(message.starts_with("SyntaxError"), "{message}")
            }
            other => panic!("expected Definition, got {other:?}"),
        }
        let missing = pool(
            "def g(x):\n    return x\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        match missing.check().expect_err("no f") {
            PythonError::Definition { message, .. } => {
                assert_eq!(message, "the body does not define a function named f")
            }
            other => panic!("expected Definition, got {other:?}"),
        }
        let raising = pool("raise RuntimeError('at import')\n", vec![], DataType::Int64);
        match raising.check().expect_err("raises") {
            PythonError::Definition { message, traceback } => {
                assert_eq!(message, "RuntimeError: at import");
                assert!(traceback.contains("line 1"), "{traceback}");
            }
            other => panic!("expected Definition, got {other:?}"),
        }
        let fine = pool(
            "def f(x):\n    return x\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        fine.check().expect("check");
        assert_eq!(lock(&fine.workers.idle).len(), 1);
    }

    #[test]
    fn print_and_input_do_not_break_the_protocol() {
        let pool = pool(
            "import os, sys\ndef f(x):\n    print('noise', x, '\\x00\\x00\\x00\\x05{}')\n    \
             os.write(1, b'raw bytes on fd 1')\n    return x + len(sys.stdin.read())\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        let (result, errors) = call(&pool, &[ints(&[Some(1), Some(2)])]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            result.as_primitive::<Int64Type>().values().to_vec(),
            vec![1, 2]
        );
    }

    #[test]
    fn a_slow_batch_is_not_taken_for_a_hung_worker() {
        // 30 rows of 0.2 s: longer than the 5.5 s a silent worker is given,
        // but each row within its limit, and progress frames keep coming.
        let pool = pool_with(
            config(Duration::from_millis(500)),
            "import time\ndef f(x):\n    time.sleep(0.2)\n    return x\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        let input: Vec<Option<i64>> = (0..30).map(Some).collect();
        let (result, errors) = call(&pool, &[ints(&input)]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(result.as_primitive::<Int64Type>().value(29), 29);
    }

    #[test]
    fn functions_without_arguments() {
        let pool = pool("def f():\n    return 7\n", vec![], DataType::Int32);
        let (result, errors) = pool.call(&[], 3).expect("call");
        assert!(errors.is_empty());
        assert_eq!(
            result.as_primitive::<Int32Type>().values().to_vec(),
            vec![7, 7, 7]
        );
        let (empty, _) = pool.call(&[], 0).expect("call");
        assert_eq!(empty.len(), 0);
    }

    #[test]
    fn concurrent_calls_use_their_own_workers() {
        let pool = pool(
            "def f(x):\n    return -x\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        thread::scope(|scope| {
            for t in 0..4_i64 {
                let pool = &pool;
                scope.spawn(move || {
                    let input: Vec<Option<i64>> = (0..1000).map(|i| Some(i * t)).collect();
                    let (result, _) = call(pool, &[ints(&input)]);
                    let expected: Vec<i64> = (0..1000).map(|i| -i * t).collect();
                    assert_eq!(
                        result.as_primitive::<Int64Type>().values().to_vec(),
                        expected
                    );
                });
            }
        });
        assert!(lock(&pool.workers.idle).len() <= MAX_IDLE_WORKERS);
    }

    #[test]
    fn memory_limit_fails_the_row_that_exceeds_it() {
        let pool = pool_with(
            PythonConfig {
                memory_limit: Some(512 << 20),
                ..config(Duration::from_secs(10))
            },
            "def f(x):\n    return len(bytearray(x))\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        let (result, errors) = call(&pool, &[ints(&[Some(10), Some(4 << 30)])]);
        assert_eq!(result.as_primitive::<Int64Type>().value(0), 10);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "MemoryError");
    }

    /// `def f(x): return x` gives back what it was given.
    fn round_trip(array: ArrayRef) {
        let data_type = array.data_type().clone();
        let pool = pool(
            "def f(x):\n    return x\n",
            vec![data_type.clone()],
            data_type,
        );
        let (result, errors) = call(&pool, &[Arc::clone(&array)]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(result.to_data(), array.to_data());
    }

    #[test]
    fn values_round_trip() {
        round_trip(Arc::new(StringArray::from(vec![
            Some("héllo \"quoted\" \\ back\nslash \t \u{1} ☃"),
            None,
            Some(""),
        ])));
        round_trip(Arc::new(BooleanArray::from(vec![
            Some(true),
            None,
            Some(false),
        ])));
        round_trip(Arc::new(BinaryArray::from_opt_vec(vec![
            Some(&b"\x00\xff\x10"[..]),
            None,
            Some(&b""[..]),
        ])));
        round_trip(Arc::new(Date32Array::from(vec![
            Some(0),
            Some(19_000),
            Some(-1),
            None,
        ])));
        round_trip(Arc::new(TimestampMicrosecondArray::from(vec![
            Some(0),
            Some(1_700_000_000_123_456),
            Some(-1),
            None,
        ])));
        round_trip(Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None])
                .with_timezone("UTC"),
        ));
        round_trip(Arc::new(TimestampMillisecondArray::from(vec![
            Some(1_700_000_000_123),
            Some(-1),
        ])));
        round_trip(Arc::new(
            Decimal128Array::from(vec![Some(150), Some(-1), Some(0), None, Some(123_456_789)])
                .with_precision_and_scale(12, 2)
                .expect("decimal type"),
        ));
        round_trip(Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            vec![Some(vec![Some(1), None, Some(3)]), None, Some(vec![])],
        )));
        round_trip(Arc::new(Float64Array::from(vec![
            Some(1.0),
            Some(0.1),
            Some(-1e-7),
            Some(1e300),
            Some(f64::INFINITY),
            None,
        ])));
    }

    #[test]
    fn python_values_meet_their_types() {
        let pool = pool(
            "import datetime, decimal\ndef f(t, d, n, b):\n    \
             return (isinstance(t, datetime.datetime) and t.tzinfo is not None and t.year == 2023\n        \
             and type(d) is datetime.date and d.year == 2022\n        \
             and isinstance(n, decimal.Decimal) and str(n) == '1.50'\n        \
             and b == b'\\x01\\x02')\n",
            vec![
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                DataType::Date32,
                DataType::Decimal128(10, 2),
                DataType::Binary,
            ],
            DataType::Boolean,
        );
        let t: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_700_000_000_000_000]).with_timezone("UTC"),
        );
        let d: ArrayRef = Arc::new(Date32Array::from(vec![19_000]));
        let n: ArrayRef = Arc::new(
            Decimal128Array::from(vec![150])
                .with_precision_and_scale(10, 2)
                .expect("decimal type"),
        );
        let b: ArrayRef = Arc::new(BinaryArray::from_vec(vec![&b"\x01\x02"[..]]));
        let (result, errors) = call(&pool, &[t, d, n, b]);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(result.as_boolean().value(0));
    }

    #[test]
    fn decimals_are_rescaled_and_rounded() {
        assert_eq!(parse_decimal("1.005", 10, 2), Ok(101));
        assert_eq!(parse_decimal("-1.005", 10, 2), Ok(-101));
        assert_eq!(parse_decimal("1.004", 10, 2), Ok(100));
        assert_eq!(parse_decimal("1E+3", 10, 2), Ok(100_000));
        assert_eq!(parse_decimal("0.000", 10, 2), Ok(0));
        assert_eq!(parse_decimal("12", 10, 0), Ok(12));
        assert_eq!(parse_decimal("0.0000001", 10, 2), Ok(0));
        assert!(parse_decimal("123456789", 5, 2).is_err());
        assert!(parse_decimal("abc", 5, 2).is_err());
        assert!(parse_decimal("1e400", 38, 2).is_err());
        let mut text = String::new();
        push_decimal(&mut text, -5, 2);
        assert_eq!(text, "-0.05");
        text.clear();
        push_decimal(&mut text, 12, -2);
        assert_eq!(text, "1200");
    }

    #[test]
    fn rows_render_as_json() {
        let texts: ArrayRef = Arc::new(StringArray::from(vec![Some("a\"b"), None]));
        let columns = [ints(&[Some(1), Some(2)]), texts];
        assert_eq!(row_json(&columns, 0), r#"[1,"a\"b"]"#);
        assert_eq!(row_json(&columns, 1), "[2,null]");
    }

    // ------------------------------------------------------------ aggregates

    /// Sums and counts integers; finish shows both as "sum/count".
    const SUM_COUNT: &str = "\
def create_state():
    return {'sum': 0, 'count': 0}

def accumulate(state, x):
    if x == 13:
        raise ValueError('unlucky')
    state['sum'] += x
    state['count'] += 1

def retract(state, x):
    return {'sum': state['sum'] - x, 'count': state['count'] - 1}

def finish(state):
    return f\"{state['sum']}/{state['count']}\"
";

    fn aggregate(body: &str, args: Vec<DataType>, returns: DataType) -> PythonAggregatePool {
        aggregate_with(config(Duration::from_secs(10)), body, args, returns)
    }

    fn aggregate_with(
        config: PythonConfig,
        body: &str,
        args: Vec<DataType>,
        returns: DataType,
    ) -> PythonAggregatePool {
        PythonAggregatePool::new(config, "agg".into(), body.into(), args, returns)
            .expect("aggregate pool")
    }

    fn sum_count() -> PythonAggregatePool {
        aggregate(SUM_COUNT, vec![DataType::Int64], DataType::Utf8)
    }

    fn group(state: &Option<Vec<u8>>, rows: &[(usize, i64)]) -> GroupUpdate {
        GroupUpdate {
            state: state.clone(),
            rows: rows.to_vec(),
        }
    }

    fn texts(values: &ArrayRef) -> Vec<Option<String>> {
        let values = values.as_string::<i32>();
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    fn shown(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some(v.to_string())).collect()
    }

    #[test]
    fn aggregate_pools_are_shared_between_threads() {
        fn shared<T: Send + Sync + fmt::Debug>() {}
        shared::<PythonAggregatePool>();
    }

    #[test]
    fn aggregates_carry_their_states_across_calls() {
        let pool = sum_count();
        assert_eq!(pool.retracts(), None);
        let first = pool
            .update(
                &[ints(&[Some(1), Some(2), Some(3), Some(4), Some(5)])],
                &[
                    group(&None, &[(0, 1), (2, 1), (4, 1)]),
                    group(&None, &[(1, 1), (3, 2)]),
                ],
            )
            .expect("first update");
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert_eq!(texts(&first.values), shown(&["9/3", "10/3"]));
        assert_eq!(pool.retracts(), Some(true));
        // Pickle protocol 5: PROTO opcode, then the version.
        let state = first.states[0].as_ref().expect("state");
        assert_eq!(&state[..2], &[0x80, 5]);

        let second = pool
            .update(
                &[ints(&[Some(10), Some(20)])],
                &[
                    group(&first.states[0], &[(0, 1)]),
                    group(&first.states[1], &[(1, 1)]),
                    group(&None, &[]),
                ],
            )
            .expect("second update");
        assert!(second.errors.is_empty(), "{:?}", second.errors);
        assert_eq!(texts(&second.values), shown(&["19/4", "30/4", "0/0"]));
        assert!(second.states.iter().all(Option::is_some));

        let empty = pool.update(&[ints(&[])], &[]).expect("no groups");
        assert!(empty.states.is_empty() && empty.values.is_empty());
    }

    #[test]
    fn retractions_undo_accumulations() {
        let pool = sum_count();
        let added = pool
            .update(
                &[ints(&[Some(5), Some(7)])],
                &[group(&None, &[(0, 1), (1, 3)])],
            )
            .expect("accumulate");
        assert_eq!(texts(&added.values), shown(&["26/4"]));
        let retracted = pool
            .update(
                &[ints(&[Some(5), Some(7)])],
                &[group(&added.states[0], &[(1, -2), (0, -1), (0, 0)])],
            )
            .expect("retract");
        assert!(retracted.errors.is_empty(), "{:?}", retracted.errors);
        assert_eq!(texts(&retracted.values), shown(&["7/1"]));
    }

    #[test]
    fn without_retract_retractions_fail_and_accumulations_go_on() {
        let body = SUM_COUNT.replace("def retract(", "def not_retract(");
        let pool = aggregate(&body, vec![DataType::Int64], DataType::Utf8);
        pool.check().expect("check");
        assert_eq!(pool.retracts(), Some(false));
        let output = pool
            .update(
                &[ints(&[Some(1), Some(2), Some(4)])],
                &[
                    group(&None, &[(0, 1), (1, -1), (2, 1), (1, -1)]),
                    group(&None, &[(1, -1)]),
                ],
            )
            .expect("update");
        assert_eq!(texts(&output.values), shown(&["5/2", "0/0"]));
        let groups: Vec<usize> = output.errors.iter().map(|e| e.row).collect();
        assert_eq!(
            groups,
            vec![0, 1],
            "one error per group: {:?}",
            output.errors
        );
        assert_eq!(
            output.errors[0].message,
            "aggregate agg cannot retract rows: define retract(state, x)"
        );
        assert!(output.states.iter().all(Option::is_some));
    }

    #[test]
    fn an_exception_in_accumulate_skips_its_row_only() {
        let pool = sum_count();
        let output = pool
            .update(
                &[ints(&[Some(1), Some(13), Some(2)])],
                &[group(&None, &[(0, 1), (1, 1), (2, 1)])],
            )
            .expect("update");
        assert_eq!(texts(&output.values), shown(&["3/2"]));
        assert!(output.states[0].is_some());
        assert_eq!(output.errors.len(), 1, "{:?}", output.errors);
        let error = &output.errors[0];
        assert_eq!(error.row, 0);
        assert_eq!(
            error.message,
            "accumulate for arguments [13]: ValueError: unlucky"
        );
        assert!(
            error.traceback.contains("in accumulate"),
            "{}",
            error.traceback
        );
    }

    #[test]
    fn a_finish_of_the_wrong_type_is_null() {
        let body = "\
def create_state():
    return []
def accumulate(state, x):
    state.append(x)
def finish(state):
    return 'text' if 0 in state else sum(state) * 10 ** 9
";
        let pool = aggregate(body, vec![DataType::Int64], DataType::Int32);
        let output = pool
            .update(
                &[ints(&[Some(0), Some(1), Some(3)])],
                &[
                    group(&None, &[(0, 1)]),
                    group(&None, &[(1, 1)]),
                    group(&None, &[(2, 1)]),
                ],
            )
            .expect("update");
        let values = output.values.as_primitive::<Int32Type>();
        assert!(values.is_null(0) && values.is_null(2));
        assert_eq!(values.value(1), 1_000_000_000);
        let messages: Vec<(usize, &str)> = output
            .errors
            .iter()
            .map(|e| (e.row, e.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            vec![
                (0, "finish: wrong return type: expected int, got str"),
                (2, "finish: value 3000000000 out of range for integer"),
            ]
        );
        // The states are kept all the same.
        assert!(output.states.iter().all(Option::is_some));
    }

    #[test]
    fn aggregate_definition_errors_are_reported_at_check() {
        let body = SUM_COUNT.replace("def create_state(", "def make_state(");
        let pool = aggregate(&body, vec![DataType::Int64], DataType::Utf8);
        match pool.check().expect_err("no create_state") {
            PythonError::Definition { message, .. } => {
                assert!(
                    message.starts_with("the body does not define a function named create_state"),
                    "{message}"
                )
            }
            other => panic!("expected Definition, got {other:?}"),
        }
        let pool = aggregate(
            "create_state = 1\ndef accumulate(s, x): pass\ndef finish(s): pass\n",
            vec![DataType::Int64],
            DataType::Int64,
        );
        match pool.check().expect_err("not callable") {
            PythonError::Definition { message, .. } => {
                assert_eq!(message, "create_state in the body is a int, not a function")
            }
            other => panic!("expected Definition, got {other:?}"),
        }
    }

    #[test]
    fn a_state_that_cannot_be_pickled_is_none() {
        let body = "\
def create_state():
    return {'n': 0}
def accumulate(state, x):
    state['n'] += 1
    if x < 0:
        state['f'] = lambda: x
def finish(state):
    return state['n']
";
        let pool = aggregate(body, vec![DataType::Int64], DataType::Int64);
        let output = pool
            .update(
                &[ints(&[Some(1), Some(-1)])],
                &[group(&None, &[(0, 1)]), group(&None, &[(0, 1), (1, 1)])],
            )
            .expect("update");
        assert!(output.states[0].is_some());
        assert!(output.states[1].is_none());
        // finish still ran on the state as it was.
        let values = output.values.as_primitive::<Int64Type>();
        assert_eq!((values.value(0), values.value(1)), (1, 2));
        assert_eq!(output.errors.len(), 1, "{:?}", output.errors);
        assert_eq!(output.errors[0].row, 1);
        assert!(
            output.errors[0]
                .message
                .starts_with("pickle.dumps(state): "),
            "{}",
            output.errors[0].message
        );
    }

    #[test]
    fn states_may_hold_classes_of_the_body() {
        let body = "\
import dataclasses
@dataclasses.dataclass
class Gap:
    last: int = None
    total: int = 0
def create_state():
    return Gap()
def accumulate(state, x):
    if state.last is not None:
        state.total += x - state.last
    state.last = x
def finish(state):
    return state.total
";
        let pool = aggregate(body, vec![DataType::Int64], DataType::Int64);
        let first = pool
            .update(
                &[ints(&[Some(3), Some(5)])],
                &[group(&None, &[(0, 1), (1, 1)])],
            )
            .expect("first");
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        // A fresh worker (the pool's only idle one is taken by this call,
        // so the state is read by a process that did not write it).
        drop(lock(&pool.workers.idle).pop());
        let second = pool
            .update(&[ints(&[Some(9)])], &[group(&first.states[0], &[(0, 1)])])
            .expect("second");
        assert!(second.errors.is_empty(), "{:?}", second.errors);
        assert_eq!(second.values.as_primitive::<Int64Type>().value(0), 6);
    }

    #[test]
    fn aggregates_without_arguments() {
        let body = "def create_state():\n    return 0\ndef accumulate(n):\n    return n + 1\n\
                    def retract(n):\n    return n - 1\ndef finish(n):\n    return n\n";
        let pool = aggregate(body, vec![], DataType::Int64);
        let output = pool
            .update(&[], &[group(&None, &[(0, 1), (7, 2), (3, -1)])])
            .expect("update");
        assert!(output.errors.is_empty(), "{:?}", output.errors);
        assert_eq!(output.values.as_primitive::<Int64Type>().value(0), 2);
    }

    #[test]
    fn an_accumulate_past_its_time_limit_skips_its_row_only() {
        let body = SUM_COUNT.replace(
            "    if x == 13:",
            "    if x == 2:\n        import time\n        time.sleep(60)\n    if x == 13:",
        );
        let pool = aggregate_with(
            config(Duration::from_secs(1)),
            &body,
            vec![DataType::Int64],
            DataType::Utf8,
        );
        let output = pool
            .update(
                &[ints(&[Some(1), Some(2), Some(3)])],
                &[group(&None, &[(0, 1), (1, 1), (2, 1)])],
            )
            .expect("update");
        assert_eq!(texts(&output.values), shown(&["4/2"]));
        assert_eq!(output.errors.len(), 1, "{:?}", output.errors);
        assert_eq!(
            output.errors[0].message,
            "accumulate for arguments [2]: timed out after 1 s"
        );
    }

    #[test]
    fn a_dead_aggregate_worker_fails_the_call_and_is_replaced() {
        let body = SUM_COUNT.replace(
            "    if x == 13:",
            "    if x == 3:\n        import os\n        os._exit(3)\n    if x == 13:",
        );
        let pool = aggregate(&body, vec![DataType::Int64], DataType::Utf8);
        let error = pool
            .update(
                &[ints(&[Some(1), Some(3)])],
                &[group(&None, &[(0, 1), (1, 1)])],
            )
            .expect_err("died");
        assert!(matches!(error, PythonError::Died { .. }), "{error}");
        let output = pool
            .update(
                &[ints(&[Some(1), Some(2)])],
                &[group(&None, &[(0, 1), (1, 1)])],
            )
            .expect("next update");
        assert_eq!(texts(&output.values), shown(&["3/2"]));
    }

    #[test]
    fn aggregate_calls_that_do_not_fit_the_declaration_are_refused() {
        let pool = sum_count();
        let error = pool
            .update(&[ints(&[Some(1)])], &[group(&None, &[(1, 1)])])
            .expect_err("row out of range");
        assert!(matches!(error, PythonError::Arguments(_)), "{error}");
        let error = pool
            .update(&[], &[group(&None, &[])])
            .expect_err("no column");
        assert!(matches!(error, PythonError::Arguments(_)), "{error}");
    }

    #[test]
    fn states_travel_in_base64() {
        let encoded = |bytes: &[u8]| {
            let mut out = String::new();
            push_base64(&mut out, bytes);
            out
        };
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\x00", "//4A"),
        ] {
            assert_eq!(encoded(bytes), text);
            assert_eq!(decode_base64(text).as_deref(), Ok(bytes));
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_base64(&encoded(&all)), Ok(all));
        for bad in ["Zm9", "Zm=v", "Z===", "Zm9v!A==", "Zg==Zg=="] {
            assert!(decode_base64(bad).is_err(), "{bad}");
        }
    }
}
