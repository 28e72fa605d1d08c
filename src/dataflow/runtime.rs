//! Worker threads. Each worker holds one instance of every operator of
//! every installed dataflow and owns one shard of the keys. A step feeds
//! one epoch's input changes to a dataflow: the coordinator splits them
//! across workers, each worker runs the graph in order, exchanges hand rows
//! to the worker owning their key, and the output parts come back to the
//! coordinator.
//!
//! Steps run one at a time, and every worker sends exactly one message per
//! exchange node per step to every worker, so a worker knows when an
//! exchange is complete without any further signalling.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::batch::ChangeBatch;
use super::expr::evaluate_all;
use super::graph::{instantiate, Graph, NodeKind};
use super::operator::{Operator, Shard};
use super::row::shard_of_rows;
use super::state::{corrupt, StateReader, StateWriter};
use crate::error::{Error, Result};

pub type DataflowId = u64;

/// One step's input: changes per source node.
pub type StepInput = Vec<(usize, ChangeBatch)>;

/// What a step of a dataflow did.
#[derive(Debug)]
pub struct Stepped {
    /// The output changes, netted per worker.
    pub changes: ChangeBatch,
    /// The operator state all workers hold after the step, in bytes.
    pub state_bytes: usize,
}

enum Command {
    Install {
        id: DataflowId,
        graph: Arc<Graph>,
        reply: Sender<Result<()>>,
    },
    Step {
        id: DataflowId,
        epoch: u64,
        start: bool,
        frontier: Option<i64>,
        now_us: i64,
        inputs: StepInput,
        /// The output, and the worker's operator state bytes after the step.
        reply: Sender<Result<(Vec<ChangeBatch>, usize)>>,
    },
    Remove {
        id: DataflowId,
    },
    StateBytes {
        id: DataflowId,
        reply: Sender<Vec<usize>>,
    },
    Checkpoint {
        id: DataflowId,
        changes: bool,
        reply: Sender<Result<Vec<u8>>>,
    },
    Restore {
        id: DataflowId,
        chain: Vec<Vec<u8>>,
        reply: Sender<Result<()>>,
    },
}

/// A batch sent from one worker to another at an exchange.
struct Exchanged {
    node: usize,
    batch: Option<ChangeBatch>,
}

pub struct Runtime {
    workers: Vec<Sender<Command>>,
    threads: Vec<JoinHandle<()>>,
    /// One step at a time (see the module comment).
    step_lock: Mutex<()>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Runtime {
    pub fn new(workers: usize) -> Result<Runtime> {
        let count = workers.max(1);
        let (exchange_tx, exchange_rx): (Vec<_>, Vec<_>) =
            (0..count).map(|_| channel::<Exchanged>()).unzip();
        let mut senders = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for (index, exchange_rx) in exchange_rx.into_iter().enumerate() {
            let (tx, rx) = channel();
            let worker = Worker {
                shard: Shard { index, count },
                peers: exchange_tx.clone(),
                exchange_rx,
                pending: HashMap::new(),
                dataflows: HashMap::new(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("eddydb-worker-{index}"))
                .spawn(move || worker.run(rx))
                .map_err(|e| Error::Internal(format!("cannot start worker thread: {e}")))?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Runtime {
            workers: senders,
            threads,
            step_lock: Mutex::new(()),
        })
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Instantiates `graph`'s operators on every worker.
    pub fn install(&self, id: DataflowId, graph: Arc<Graph>) -> Result<()> {
        let _step = self.step_lock.lock().expect("step lock");
        let replies = self.broadcast(|reply| Command::Install {
            id,
            graph: Arc::clone(&graph),
            reply,
        })?;
        replies.into_iter().collect()
    }

    pub fn remove(&self, id: DataflowId) {
        let _step = self.step_lock.lock().expect("step lock");
        for worker in &self.workers {
            let _ = worker.send(Command::Remove { id });
        }
    }

    /// Runs one epoch of dataflow `id` and returns its output changes,
    /// each worker's consolidated (a row one worker adds and another
    /// retracts stays as two changes). `start` runs the operators' start hooks first (the
    /// first step after install); `frontier` is the view's event-time
    /// frontier after this epoch, when known (see `Operator::on_frontier`).
    pub fn step(
        &self,
        id: DataflowId,
        graph: &Graph,
        epoch: u64,
        start: bool,
        frontier: Option<i64>,
        inputs: StepInput,
    ) -> Result<Stepped> {
        let _step = self.step_lock.lock().expect("step lock");
        let count = self.workers.len();
        let mut parts: Vec<StepInput> = vec![Vec::new(); count];
        for (node, batch) in inputs {
            // Rows go to workers in contiguous slices; exchanges route them.
            let per = batch.len().div_ceil(count).max(1);
            for (w, part) in parts.iter_mut().enumerate() {
                let from = (w * per).min(batch.len());
                let len = per.min(batch.len() - from);
                if len > 0 {
                    let data = batch.data.slice(from, len);
                    part.push((
                        node,
                        ChangeBatch::new(data, batch.diffs[from..from + len].to_vec()),
                    ));
                }
            }
        }
        let mut parts = parts.into_iter();
        // One clock for every worker of the step.
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let replies = self.broadcast(|reply| Command::Step {
            id,
            epoch,
            start,
            frontier,
            now_us,
            inputs: parts.next().unwrap_or_default(),
            reply,
        })?;
        let mut out = Vec::new();
        let mut state_bytes = 0;
        for reply in replies {
            let (changes, bytes) = reply?;
            out.extend(changes);
            state_bytes += bytes;
        }
        // Netted per worker: a row one worker adds and another retracts
        // stays as two changes, which sum to nothing where they land.
        Ok(Stepped {
            changes: ChangeBatch::concat(&graph.output_schema(), &out)?,
            state_bytes,
        })
    }

    /// State bytes per node, summed over workers.
    pub fn state_bytes(&self, id: DataflowId) -> Result<Vec<usize>> {
        let _step = self.step_lock.lock().expect("step lock");
        let replies = self.broadcast(|reply| Command::StateBytes { id, reply })?;
        let mut total: Vec<usize> = Vec::new();
        for part in replies {
            total.resize(total.len().max(part.len()), 0);
            for (t, b) in total.iter_mut().zip(part) {
                *t += b;
            }
        }
        Ok(total)
    }

    /// Every worker's operator states of dataflow `id`, as of the last
    /// step, in worker order: whole states, from which operators track
    /// their changes, or with `changes` only what changed since the last
    /// checkpoint, from operators that track them (see
    /// [`Operator::checkpoint_changes`]).
    pub fn checkpoint(&self, id: DataflowId, changes: bool) -> Result<Vec<Vec<u8>>> {
        let _step = self.step_lock.lock().expect("step lock");
        self.broadcast(|reply| Command::Checkpoint { id, changes, reply })?
            .into_iter()
            .collect()
    }

    /// Loads states [`Runtime::checkpoint`] returned into the freshly
    /// installed dataflow `id`: per worker, a chain of them, oldest first,
    /// the first whole. The dataflow then goes on without its start step.
    pub fn restore(&self, id: DataflowId, chains: Vec<Vec<Vec<u8>>>) -> Result<()> {
        if chains.len() != self.workers.len() {
            return Err(Error::Internal(format!(
                "a checkpoint of {} workers cannot be restored on {}",
                chains.len(),
                self.workers.len()
            )));
        }
        let _step = self.step_lock.lock().expect("step lock");
        let mut chains = chains.into_iter();
        self.broadcast(|reply| Command::Restore {
            id,
            chain: chains.next().unwrap_or_default(),
            reply,
        })?
        .into_iter()
        .collect()
    }

    fn broadcast<T>(&self, mut command: impl FnMut(Sender<T>) -> Command) -> Result<Vec<T>> {
        let mut waiting = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let (tx, rx) = channel();
            worker
                .send(command(tx))
                .map_err(|_| Error::Internal("a dataflow worker has stopped".into()))?;
            waiting.push(rx);
        }
        waiting
            .into_iter()
            .map(|rx| {
                rx.recv()
                    .map_err(|_| Error::Internal("a dataflow worker has stopped".into()))
            })
            .collect()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.workers.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

struct Installed {
    graph: Arc<Graph>,
    operators: Vec<Option<Box<dyn Operator>>>,
}

struct Worker {
    shard: Shard,
    peers: Vec<Sender<Exchanged>>,
    exchange_rx: Receiver<Exchanged>,
    /// Exchange messages that arrived for a node this worker has not reached.
    pending: HashMap<usize, Vec<Option<ChangeBatch>>>,
    dataflows: HashMap<DataflowId, Installed>,
}

impl Worker {
    fn run(mut self, commands: Receiver<Command>) {
        while let Ok(command) = commands.recv() {
            match command {
                Command::Install { id, graph, reply } => {
                    let _ = reply.send(self.install(id, graph));
                }
                Command::Step {
                    id,
                    epoch,
                    start,
                    frontier,
                    now_us,
                    inputs,
                    reply,
                } => {
                    let step = StepClock {
                        epoch,
                        start,
                        frontier,
                        now_us,
                    };
                    let stepped = self.step(id, step, inputs);
                    let _ = reply.send(stepped.map(|out| (out, self.held_bytes(id))));
                }
                Command::Remove { id } => {
                    self.dataflows.remove(&id);
                }
                Command::StateBytes { id, reply } => {
                    let _ = reply.send(self.node_bytes(id));
                }
                Command::Checkpoint { id, changes, reply } => {
                    let _ = reply.send(self.checkpoint(id, changes));
                }
                Command::Restore { id, chain, reply } => {
                    let _ = reply.send(self.restore(id, &chain));
                }
            }
        }
    }

    /// Each node's operator state bytes (0 for sources and exchanges).
    fn node_bytes(&self, id: DataflowId) -> Vec<usize> {
        self.dataflows.get(&id).map_or(Vec::new(), |d| {
            d.operators
                .iter()
                .map(|op| op.as_ref().map_or(0, |o| o.state_bytes()))
                .collect()
        })
    }

    fn held_bytes(&self, id: DataflowId) -> usize {
        self.node_bytes(id).into_iter().sum()
    }

    fn install(&mut self, id: DataflowId, graph: Arc<Graph>) -> Result<()> {
        let operators = graph
            .nodes
            .iter()
            .map(|n| instantiate(&n.kind))
            .collect::<Result<Vec<_>>>()?;
        self.dataflows.insert(id, Installed { graph, operators });
        Ok(())
    }

    /// Each node's operator state in node order (see [`write_states`]).
    fn checkpoint(&mut self, id: DataflowId, changes: bool) -> Result<Vec<u8>> {
        let dataflow = self.installed(id)?;
        write_states(&mut dataflow.operators, changes, true)
    }

    /// Loads a chain of states `checkpoint` wrote (see [`read_states`]).
    fn restore(&mut self, id: DataflowId, chain: &[Vec<u8>]) -> Result<()> {
        let shard = self.shard;
        let dataflow = self.installed(id)?;
        let chain: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
        dataflow.operators = read_states(&dataflow.graph, shard, &chain)?;
        Ok(())
    }

    fn installed(&mut self, id: DataflowId) -> Result<&mut Installed> {
        self.dataflows
            .get_mut(&id)
            .ok_or_else(|| Error::Internal(format!("dataflow {id} is not installed")))
    }

    /// Runs every node in order. After a failure the worker still takes its
    /// part in every exchange (with nothing to send), so no other worker is
    /// left waiting.
    fn step(
        &mut self,
        id: DataflowId,
        clock: StepClock,
        inputs: StepInput,
    ) -> Result<Vec<ChangeBatch>> {
        let Some(mut dataflow) = self.dataflows.remove(&id) else {
            return Err(Error::Internal(format!("dataflow {id} is not installed")));
        };
        let graph = Arc::clone(&dataflow.graph);
        let mut failure: Option<Error> = None;
        let mut outputs: Vec<Vec<ChangeBatch>> = vec![Vec::new(); graph.nodes.len()];
        let mut inputs: HashMap<usize, Vec<ChangeBatch>> =
            inputs.into_iter().fold(HashMap::new(), |mut m, (n, b)| {
                m.entry(n).or_default().push(b);
                m
            });
        for (i, node) in graph.nodes.iter().enumerate() {
            let inbox: Vec<(usize, ChangeBatch)> = if failure.is_some() {
                Vec::new()
            } else {
                node.inputs
                    .iter()
                    .enumerate()
                    .flat_map(|(port, from)| outputs[*from].iter().map(move |b| (port, b.clone())))
                    .collect()
            };
            let result = match &node.kind {
                NodeKind::Source { .. } => Ok(inputs.remove(&i).unwrap_or_default()),
                NodeKind::Exchange { keys } => self.exchange(i, keys, inbox, failure.is_some()),
                _ if failure.is_some() => Ok(Vec::new()),
                _ => {
                    let op = dataflow.operators[i]
                        .as_mut()
                        .ok_or_else(|| Error::Internal("operator missing".into()));
                    let step = OperatorStep {
                        shard: self.shard,
                        clock,
                    };
                    op.and_then(|op| run_operator(op.as_mut(), step, inbox))
                }
            };
            match result {
                Ok(out) => outputs[i] = out,
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        self.dataflows.insert(id, dataflow);
        match failure {
            Some(e) => Err(e),
            // Each worker nets out its own output, in parallel with the
            // others; what the caller gathers is only concatenated.
            None => match outputs.pop() {
                Some(out) if !out.is_empty() => {
                    Ok(vec![
                        ChangeBatch::concat(&graph.output_schema(), &out)?.consolidate()?
                    ])
                }
                _ => Ok(Vec::new()),
            },
        }
    }

    fn exchange(
        &mut self,
        node: usize,
        keys: &[Arc<dyn datafusion::physical_plan::PhysicalExpr>],
        inbox: Vec<(usize, ChangeBatch)>,
        failed: bool,
    ) -> Result<Vec<ChangeBatch>> {
        let count = self.shard.count;
        let mut routed: Vec<Vec<ChangeBatch>> = vec![Vec::new(); count];
        let mut error = None;
        if !failed {
            for (_, batch) in inbox {
                match route(keys, &batch, count) {
                    Ok(parts) => {
                        for (w, part) in parts.into_iter().enumerate() {
                            routed[w].extend(part);
                        }
                    }
                    Err(e) => error = error.or(Some(e)),
                }
            }
        }
        if count == 1 {
            return match error {
                Some(e) => Err(e),
                None => Ok(routed.pop().unwrap_or_default()),
            };
        }
        for (w, parts) in routed.into_iter().enumerate() {
            let schema = parts.first().map(|b| b.schema());
            let batch = match schema {
                Some(schema) => Some(ChangeBatch::concat(&schema, &parts)?),
                None => None,
            };
            let _ = self.peers[w].send(Exchanged { node, batch });
        }
        let mut received = self.pending.remove(&node).unwrap_or_default();
        while received.len() < count {
            let message = self
                .exchange_rx
                .recv()
                .map_err(|_| Error::Internal("exchange channel closed".into()))?;
            if message.node == node {
                received.push(message.batch);
            } else {
                self.pending
                    .entry(message.node)
                    .or_default()
                    .push(message.batch);
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(received.into_iter().flatten().collect()),
        }
    }
}

/// One worker's operator states of a dataflow, in node order, each flagged
/// as changes only or whole and length-prefixed (empty for sources and
/// exchanges): with `changes`, what changed since the last checkpoint from
/// operators that track that, whole states from the others. With `track`,
/// operators written whole track their changes from here on.
fn write_states(
    operators: &mut [Option<Box<dyn Operator>>],
    changes: bool,
    track: bool,
) -> Result<Vec<u8>> {
    let estimate: usize = operators
        .iter()
        .flatten()
        .map(|op| op.state_bytes() + 64)
        .sum();
    let mut state = StateWriter::with_capacity(estimate);
    state.len(operators.len());
    for op in operators.iter_mut() {
        let flag = state.written();
        state.bool(false);
        let section = state.begin_section();
        if let Some(op) = op {
            if changes && op.checkpoint_changes(&mut state)? {
                state.set_bool(flag, true);
            } else {
                op.checkpoint(&mut state)?;
                if track {
                    op.track_changes();
                }
            }
        }
        state.end_section(section);
    }
    Ok(state.into_bytes())
}

/// Fresh operators of `graph` on `shard`, loaded from a chain of states
/// [`write_states`] wrote, oldest first: each restores the last whole
/// state of its own and applies the changes written after it.
fn read_states(
    graph: &Graph,
    shard: Shard,
    chain: &[&[u8]],
) -> Result<Vec<Option<Box<dyn Operator>>>> {
    let nodes = graph.nodes.len();
    // Per node, per state of the chain: (changes only, bytes).
    let mut sections: Vec<Vec<(bool, &[u8])>> = vec![Vec::new(); nodes];
    for bytes in chain {
        let mut state = StateReader::new(bytes);
        let written = state.count(9)?;
        if written != nodes {
            return Err(corrupt(format!(
                "{written} operators in the checkpoint, {nodes} in the dataflow"
            )));
        }
        for node in &mut sections {
            let changes = state.bool()?;
            node.push((changes, state.bytes()?));
        }
        state.finish()?;
    }
    let mut operators = Vec::with_capacity(nodes);
    for (i, node) in sections.iter().enumerate() {
        let base = node
            .iter()
            .rposition(|(changes, _)| !changes)
            .ok_or_else(|| corrupt(format!("operator {i} has no whole state")))?;
        let Some(mut op) = instantiate(&graph.nodes[i].kind)? else {
            operators.push(None);
            continue;
        };
        let inputs: Vec<_> = graph.nodes[i]
            .inputs
            .iter()
            .map(|n| graph.schema_of(*n))
            .collect();
        let mut whole = StateReader::new(node[base].1);
        op.restore(shard, &inputs, &mut whole)?;
        whole.finish()?;
        for (_, changes) in &node[base + 1..] {
            let mut changes = StateReader::new(changes);
            op.restore_changes(&mut changes)?;
            changes.finish()?;
        }
        operators.push(Some(op));
    }
    Ok(operators)
}

/// One worker's operator states, whole, that a chain of them gives: what
/// a checkpoint would have written whole at the chain's last state. Runs
/// beside the dataflow (on fresh operators), so that a long chain is
/// replaced without the dataflow pausing to write its state whole.
pub fn compact_states(graph: &Graph, shard: Shard, chain: &[&[u8]]) -> Result<Vec<u8>> {
    let mut operators = read_states(graph, shard, chain)?;
    write_states(&mut operators, false, false)
}

/// Splits `batch` by the worker owning each row's key.
fn route(
    keys: &[Arc<dyn datafusion::physical_plan::PhysicalExpr>],
    batch: &ChangeBatch,
    count: usize,
) -> Result<Vec<Option<ChangeBatch>>> {
    if count == 1 {
        return Ok(vec![Some(batch.clone())]);
    }
    let key_columns = evaluate_all(keys, &batch.data)?;
    let shards = shard_of_rows(&key_columns, batch.len(), count)?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); count];
    for (row, shard) in shards.iter().enumerate() {
        indices[*shard].push(row as u32);
    }
    indices
        .into_iter()
        .map(|idx| match idx.len() {
            0 => Ok(None),
            n if n == batch.len() => Ok(Some(batch.clone())),
            _ => batch.take(&idx).map(Some),
        })
        .collect()
}

/// What one step tells every worker: its epoch, whether it is the first,
/// the event-time frontier, and the wall clock.
#[derive(Debug, Clone, Copy)]
struct StepClock {
    epoch: u64,
    start: bool,
    frontier: Option<i64>,
    now_us: i64,
}

/// What one step tells every operator.
#[derive(Debug, Clone, Copy)]
struct OperatorStep {
    shard: Shard,
    clock: StepClock,
}

/// Feeds one node's inputs to its operator. A panic inside an operator is a
/// bug; it becomes an error so the other workers are not left waiting.
fn run_operator(
    op: &mut dyn Operator,
    step: OperatorStep,
    inbox: Vec<(usize, ChangeBatch)>,
) -> Result<Vec<ChangeBatch>> {
    let mut out = Vec::new();
    let clock = step.clock;
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        if clock.start {
            op.on_start(step.shard, &mut out)?;
        }
        op.on_clock(clock.now_us, &mut out)?;
        for (port, batch) in inbox {
            if !batch.is_empty() {
                op.on_batch(port, batch, &mut out)?;
            }
        }
        op.on_barrier(clock.epoch, &mut out)?;
        match clock.frontier {
            Some(frontier) => op.on_frontier(frontier, &mut out),
            None => Ok(()),
        }
    }));
    match result {
        Ok(Ok(())) => Ok(out.into_iter().filter(|b| !b.is_empty()).collect()),
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::Internal(format!(
                "a dataflow operator panicked: {what}"
            )))
        }
    }
}
