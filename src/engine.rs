//! The engine: materialized views kept current by the dataflow, and the
//! commit path that makes a table change and every view's change to it
//! visible at once.
//!
//! A commit is one epoch. Under the engine's commit lock it (1) makes the
//! table change durable, (2) runs the change through every dependent view's
//! dataflow, in creation order so a view over a view sees its input's
//! change, and (3) under the publish lock and behind the read gate,
//! publishes the table change and all view changes together. Queries plan
//! under the gate's read side, so a query sees one closed epoch for every
//! table and view it reads; and the writing statement returns only after
//! (3), so it reads its own writes. A stream reader's commit lets go of the
//! commit lock before (3), so that the next epoch is computed meanwhile;
//! the publish lock, taken before, keeps the epochs in order.
//!
//! **Architecture Invariant:** nothing becomes visible to a reader between
//! two epochs' publications: table rows and view rows of an epoch are
//! published together, behind the gate.

mod checkpoint;
mod image;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::dataflow::arrangement::Arrangement;
use crate::dataflow::graph::Graph;
use crate::dataflow::operator::Shard;
use crate::dataflow::row::RowCodec;
use crate::dataflow::runtime::{Runtime, StepInput};
use crate::dataflow::state::{checksum, corrupt, StatePieces, StateReader, StateWriter};
use crate::dataflow::ChangeBatch;
use crate::error::{Error, Result};
use crate::source::reader::{Offsets, Resume};
use crate::storage::{Change, PreparedChange, Store, Table};

pub use checkpoint::CheckpointInfo;
use checkpoint::{Checkpoints, Manifest, StateRef, ViewEntry};
use image::ScanImage;

/// How often views holding a trailing range (`WHERE t > now() - …`) are
/// stepped with the clock alone: how late at most a row leaves them.
pub const CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// A view as stored in the catalog: enough to plan it again at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewDef {
    pub id: u64,
    pub name: String,
    /// The defining query, as it will be planned again at start.
    pub query: String,
    /// Output column names given in `CREATE … VIEW v (a, b)`.
    #[serde(default)]
    pub column_names: Vec<String>,
    pub materialized: bool,
    /// Tables, views and sources the query reads.
    pub depends_on: Vec<String>,
    /// Per stream source the view reads: where its reader started, resolved
    /// when the view was created. At start the view is rebuilt by reading
    /// from there again.
    #[serde(default)]
    pub stream_starts: BTreeMap<String, crate::source::reader::Offsets>,
    /// `EMIT ON WINDOW CLOSE`: windowed groups are emitted once, final.
    #[serde(default)]
    pub emit_on_window_close: bool,
    /// User functions the query calls (directly or through other
    /// functions): they cannot be dropped while the view exists.
    #[serde(default)]
    pub functions: Vec<String>,
}

impl ViewDef {
    pub fn oid(&self) -> u32 {
        16384 + (self.id as u32) * 2
    }

    pub fn kind_name(&self) -> &'static str {
        if self.materialized {
            "materialized view"
        } else {
            "view"
        }
    }
}

/// A materialized view: its dataflow and its output arrangement.
#[derive(Debug)]
pub struct MaterializedView {
    pub def: ViewDef,
    pub graph: Arc<Graph>,
    pub schema: SchemaRef,
    /// Output columns the arrangement is indexed by.
    pub key_columns: Vec<usize>,
    key_codec: RowCodec,
    /// Identifies the dataflow a checkpoint of this view was taken from.
    fingerprint: u64,
    state: RwLock<ViewState>,
    /// Reads of every row, since the server started.
    scans: AtomicU64,
    /// Reads through the index by key, since the server started.
    key_lookups: AtomicU64,
}

#[derive(Debug)]
struct ViewState {
    output: Arrangement,
    /// The rows decoded, once the view has been read whole twice, as long
    /// as the image can follow the changes (`image.rs`).
    image: Option<ScanImage>,
    /// Which kind of image the next read builds.
    image_kind: ImageKind,
    /// Bumped by every change of `output`: a read that decoded the rows
    /// keeps them as the image only if no change came in between.
    version: u64,
    failed: Option<String>,
    /// The failure was for needing more memory than the budget.
    out_of_memory: bool,
}

/// The kind of image of its rows a view keeps for reads (`image.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageKind {
    /// Rows only added so far: no index.
    Plain,
    /// Rows were taken back: each key's row indexed.
    Keyed,
    /// A key holds several rows and rows are taken back: none.
    Never,
}

impl MaterializedView {
    /// `schema` is the view's own (its column names); the graph's output
    /// has the same types.
    pub fn new(
        def: ViewDef,
        graph: Graph,
        schema: SchemaRef,
        key_columns: Vec<usize>,
    ) -> Result<MaterializedView> {
        // Without a known key, the first column indexes the rows.
        let key_columns = if key_columns.is_empty() && !schema.fields().is_empty() {
            vec![0]
        } else {
            key_columns
        };
        let key_codec = RowCodec::new(key_columns.iter().map(|c| schema.field(*c).data_type()))?;
        Ok(MaterializedView {
            def,
            fingerprint: graph_fingerprint(&graph),
            graph: Arc::new(graph),
            state: RwLock::new(ViewState {
                output: Arrangement::new(Arc::clone(&schema))?,
                image: None,
                image_kind: ImageKind::Plain,
                version: 0,
                failed: None,
                out_of_memory: false,
            }),
            schema,
            key_columns,
            key_codec,
            scans: AtomicU64::new(0),
            key_lookups: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    fn apply(&self, delta: &ChangeBatch) -> Result<()> {
        let delta = delta.clone().with_schema(Arc::clone(&self.schema))?;
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|c| Arc::clone(delta.data.column(*c)))
            .collect();
        let keys = self.key_codec.encode(&keys)?;
        let mut state = self.state.write().expect("view lock");
        // Failed by a later epoch while this one waited to be published
        // (a view over views of two readers): its rows are not served.
        if state.failed.is_some() {
            return Ok(());
        }
        state.version += 1;
        state.output.update(&delta, |i| keys.row(i).data())?;
        if let Some(image) = &mut state.image {
            let keyed = image.is_keyed();
            let followed = image.follow(&delta, &keys, &self.key_columns, &self.key_codec);
            match followed {
                Ok(true) => {}
                // A plain image met a retraction: the next one is keyed. A
                // keyed one met a key with two rows: no more images.
                Ok(false) => {
                    state.image = None;
                    state.image_kind = match keyed {
                        false => ImageKind::Keyed,
                        true => ImageKind::Never,
                    };
                }
                Err(e) => {
                    tracing::warn!(view = %self.def.name, error = %e, "rows kept for reads let go");
                    state.image = None;
                }
            }
        }
        Ok(())
    }

    fn fail(&self, reason: String) {
        tracing::error!(view = %self.def.name, %reason, "materialized view failed");
        let mut state = self.state.write().expect("view lock");
        state.failed = Some(reason);
        state.image = None;
    }

    /// Fails the view for going over the memory budget, and lets go of
    /// the rows it served.
    fn fail_out_of_memory(&self, reason: String) {
        tracing::error!(view = %self.def.name, %reason, "materialized view failed");
        let mut state = self.state.write().expect("view lock");
        state.failed = Some(reason);
        state.out_of_memory = true;
        state.version += 1;
        state.image = None;
        if let Ok(empty) = Arrangement::new(Arc::clone(&self.schema)) {
            state.output = empty;
        }
    }

    pub fn failure(&self) -> Option<String> {
        self.state.read().expect("view lock").failed.clone()
    }

    /// Why the view failed, as the error reading it gives.
    pub fn failed(&self) -> Result<()> {
        self.check(&self.state.read().expect("view lock"))
    }

    fn check(&self, state: &ViewState) -> Result<()> {
        match &state.failed {
            Some(reason) => Err(Error::ViewFailed {
                name: self.def.name.clone(),
                reason: reason.clone(),
                out_of_memory: state.out_of_memory,
            }),
            None => Ok(()),
        }
    }

    /// Every row of the view, as of the last published epoch. From the
    /// second read on, the decoded rows are kept (`image.rs`), so later
    /// reads neither decode them again nor hold back publications.
    pub fn scan(&self) -> Result<Vec<RecordBatch>> {
        let state = self.state.read().expect("view lock");
        self.check(&state)?;
        let earlier = self.scans.fetch_add(1, Ordering::Relaxed);
        if let Some(image) = &state.image {
            return image.rows();
        }
        let batches = state.output.scan()?;
        let (version, kind) = (state.version, state.image_kind);
        drop(state);
        if earlier == 0 || kind == ImageKind::Never {
            return Ok(batches);
        }
        let schema = Arc::clone(&self.schema);
        let image = match kind {
            // The rows are read either way: an image that cannot be built
            // is only not kept.
            ImageKind::Keyed => {
                match ScanImage::keyed(schema, batches.clone(), &self.key_columns, &self.key_codec)
                {
                    Ok(image) => image,
                    Err(e) => {
                        tracing::warn!(view = %self.def.name, error = %e, "rows not kept for reads");
                        return Ok(batches);
                    }
                }
            }
            _ => Some(ScanImage::new(schema, batches.clone())),
        };
        // Another read holding the lock: a later one keeps them.
        if let Ok(mut state) = self.state.try_write() {
            if state.version == version && state.image.is_none() && state.failed.is_none() {
                match image {
                    Some(image) => state.image = Some(image),
                    None => state.image_kind = ImageKind::Never,
                }
            }
        }
        Ok(batches)
    }

    /// The rows whose key columns equal `key` (one-element arrays).
    pub fn lookup(&self, key: &[ArrayRef]) -> Result<RecordBatch> {
        let encoded = self.key_codec.encode(key)?;
        let state = self.state.read().expect("view lock");
        self.check(&state)?;
        self.key_lookups.fetch_add(1, Ordering::Relaxed);
        state.output.lookup(encoded.row(0).data())
    }

    /// Reads of every row and reads by key served so far.
    pub fn reads(&self) -> (u64, u64) {
        (
            self.scans.load(Ordering::Relaxed),
            self.key_lookups.load(Ordering::Relaxed),
        )
    }

    pub fn row_count(&self) -> u64 {
        self.state.read().expect("view lock").output.row_count()
    }

    /// The output's memory, with the decoded rows kept for reads.
    pub fn output_bytes(&self) -> usize {
        let state = self.state.read().expect("view lock");
        state.output.state_bytes() + state.image.as_ref().map_or(0, ScanImage::bytes)
    }

    /// The output's memory without the decoded rows: its rows and the log
    /// of changes since the last checkpoint.
    fn arrangement_bytes(&self) -> usize {
        self.state.read().expect("view lock").output.state_bytes()
    }

    /// Lets go of the decoded rows kept for reads; whether there were any.
    fn drop_image(&self) -> bool {
        self.state
            .write()
            .expect("view lock")
            .image
            .take()
            .is_some()
    }

    /// The output for a checkpoint: whole (logging its changes from
    /// here), or with `changes` what changed since the last checkpoint;
    /// a flag first says which. Only taking the log of changes and starting
    /// to log them again need the view's write lock: queries read the view
    /// while it is written whole (the commit and publish locks keep the
    /// output as it is meanwhile).
    fn checkpoint_output(&self, state: &mut StatePieces, changes: bool) {
        let changed = match changes {
            true => self.state.write().expect("view lock").output.take_changes(),
            false => None,
        };
        state.writer().bool(changed.is_some());
        match changed {
            Some(log) => log.move_into(state),
            None => {
                self.state
                    .read()
                    .expect("view lock")
                    .output
                    .checkpoint(state.writer());
                self.state
                    .write()
                    .expect("view lock")
                    .output
                    .track_changes();
            }
        }
    }

    fn read_output(&self, chain: &[&[u8]]) -> Result<Arrangement> {
        read_output(&self.schema, chain)
    }

    fn set_output(&self, output: Arrangement) {
        let mut state = self.state.write().expect("view lock");
        state.output = output;
        state.version += 1;
        state.image = None;
    }

    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// The output a chain of checkpointed outputs of `schema` gives (each read
/// to the end): the last whole one with the changes after it applied.
fn read_output(schema: &SchemaRef, chain: &[&[u8]]) -> Result<Arrangement> {
    // As for operators (`runtime::read_states`): per state, whether it
    // holds changes only; the last whole one is loaded, then the changes
    // after it.
    let mut states = Vec::with_capacity(chain.len());
    for bytes in chain {
        let mut state = StateReader::new(bytes);
        states.push((state.bool()?, state));
    }
    let base = states
        .iter()
        .rposition(|(changes, _)| !changes)
        .ok_or_else(|| corrupt("a view's output has no whole state".into()))?;
    let mut output = Arrangement::new(Arc::clone(schema))?;
    for (i, (_, state)) in states.iter_mut().enumerate().skip(base) {
        match i == base {
            true => output.restore(state)?,
            false => output.restore_changes(state)?,
        }
        state.finish()?;
    }
    Ok(output)
}

/// A view's state as a checkpoint stores it: the count of workers, each
/// worker's operator states, then the output's (moved in, not copied).
fn assemble_view_state(parts: Vec<Vec<u8>>, output: StatePieces) -> StatePieces {
    let mut state = StatePieces::new();
    state.writer().len(parts.len());
    for part in parts {
        state.bytes(part);
    }
    state.nest(output);
    state
}

/// Each worker's operator states and the outputs of a chain of view
/// states (see [`assemble_view_state`]), in chain order.
type SplitChain<'a> = (Vec<Vec<&'a [u8]>>, Vec<&'a [u8]>);

fn split_view_states(chain: &[Vec<u8>], workers: usize) -> Result<SplitChain<'_>> {
    let mut parts = vec![Vec::with_capacity(chain.len()); workers];
    let mut outputs = Vec::with_capacity(chain.len());
    for bytes in chain {
        let mut state = StateReader::new(bytes);
        let written = state.count(8)?;
        if written != workers {
            return Err(Error::Internal(format!(
                "a checkpoint of {written} workers cannot be restored on {workers}"
            )));
        }
        for part in &mut parts {
            part.push(state.bytes()?);
        }
        outputs.push(state.bytes()?);
        state.finish()?;
    }
    Ok((parts, outputs))
}

/// The whole state of a view with dataflow `graph` and output `schema`
/// that a chain of its states gives: what a checkpoint taken at the
/// chain's last state would have written whole.
fn fold_view_states(
    graph: &Graph,
    schema: &SchemaRef,
    workers: usize,
    chain: &[Vec<u8>],
) -> Result<StatePieces> {
    let (parts, outputs) = split_view_states(chain, workers)?;
    let parts = parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            let shard = Shard {
                index,
                count: workers,
            };
            crate::dataflow::runtime::compact_states(graph, shard, part)
        })
        .collect::<Result<Vec<_>>>()?;
    let output = read_output(schema, &outputs)?;
    let mut state = StateWriter::with_capacity(output.state_bytes() + 64);
    state.bool(false);
    output.checkpoint(&mut state);
    let mut whole = StatePieces::new();
    whole.append(state.into_bytes());
    Ok(assemble_view_state(parts, whole))
}

/// Every node of `graph` with its place in it, as EXPLAIN describes it,
/// hashed.
fn graph_fingerprint(graph: &Graph) -> u64 {
    let text: Vec<String> = graph
        .explain_nodes()
        .into_iter()
        .map(|(depth, node, line)| format!("{depth} {node} {line}"))
        .collect();
    checksum(text.join("\n").as_bytes())
}

/// Rows of a change from which the table's own apply runs beside the
/// dataflow instead of after it.
const PARALLEL_APPLY_ROWS: usize = 65_536;

/// Views in creation order: a view is created after everything it reads,
/// so this order is a topological order of the dependency graph.
type ViewsById = BTreeMap<u64, Arc<MaterializedView>>;

/// What the commit lock guards: the views, and what checkpoints need to
/// know of them between epochs.
struct Dataflows {
    views: ViewsById,
    /// Views checkpoints keep: fed only by stream sources, directly or
    /// through other such views (views over tables are rebuilt from them).
    checkpointed: BTreeSet<u64>,
    /// Per checkpointed view and stream source, the next positions its
    /// reader has not committed, as of the last epoch.
    positions: BTreeMap<u64, BTreeMap<String, Offsets>>,
    /// Likewise, each partition's watermark there.
    watermarks: BTreeMap<u64, BTreeMap<String, Offsets>>,
    /// Per view reading streams, each source's event-time frontier as its
    /// reader last reported it (see `Operator::on_frontier`).
    source_frontiers: BTreeMap<u64, BTreeMap<String, i64>>,
    /// Per view, the frontier last handed to its dataflow: the least over
    /// every relation it reads, once each has one.
    view_frontiers: BTreeMap<u64, i64>,
    /// Views whose state changed since the last checkpoint.
    dirty: BTreeSet<u64>,
    /// Whether a checkpointed view's reader committed since then.
    moved: bool,
    /// Where each checkpointed view's latest stored state is.
    stored: BTreeMap<u64, Stored>,
    last_checkpoint: Instant,
    /// Per view, the operator state its workers held after its last step.
    held: BTreeMap<u64, usize>,
    /// The last epoch number taken: computed and published, or being
    /// published under the publish lock (or given up, when the commit
    /// that took it failed: numbers may be skipped, never reused).
    epoch: u64,
}

impl Dataflows {
    /// Numbers the epoch about to be computed.
    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }
}

/// Changes at most written after a whole state before the next whole one
/// (a restart reads them all).
const MAX_CHANGES: usize = 100;

/// A view's stored state: where a checkpoint finds it, and whether the
/// next one can store just what changed.
#[derive(Debug, Clone)]
struct Stored {
    state: StateRef,
    changes: Vec<StateRef>,
    /// Whether the view's operators keep track of their changes since its
    /// last part: so since this process stored it, not when recovered.
    tracked: bool,
    /// The bytes the view held (operator states and output) when `state`
    /// and then each of `changes` were taken; empty when not known (a
    /// recovered chain).
    held: Vec<u64>,
}

impl Stored {
    /// Whether the chain is `factor` times as long as it should grow: its
    /// changes add up to `factor` times the whole state (as stored, or as
    /// held now, `held` bytes, if the view grew since), or number `factor`
    /// times [`MAX_CHANGES`]. At 1 it is folded into one whole state beside
    /// the dataflow (see `Checkpoints::compact`), so that a restart reads
    /// at most about twice the state; at 2, when that fails to keep up,
    /// the next state is written whole.
    fn is_long(&self, held: u64, factor: u64) -> bool {
        let changes: u64 = self.changes.iter().map(|c| c.len).sum();
        self.changes.len() as u64 >= factor * MAX_CHANGES as u64
            || changes >= factor * self.state.len.max(held)
    }

    /// Whether the next state is changes only: a whole one is written
    /// under the commit lock, a pause of the dataflow, so only when the
    /// chain has grown past what a compaction beside the dataflow would
    /// have folded (or the view's changes are not tracked).
    ///
    /// Nor when the last changes were most of a whole state, as when nearly
    /// every group of an aggregate changes between two checkpoints: a whole
    /// state then costs about the same, and spares the compaction that a
    /// chain of such changes would soon need.
    fn next_is_changes(&self, held: u64) -> bool {
        self.tracked && !self.is_long(held, 2) && !self.changes_were_most(held)
    }

    /// Whether the last changes took at least 3/4 of the bytes a whole
    /// state would take now: the whole state's, scaled by how much more
    /// or less the view holds than when it was taken.
    ///
    /// A view checkpointed as it started holds next to nothing in its
    /// whole state, which then tells nothing of its size. When the view
    /// held more than four times as much at its first changes, and those are
    /// not the last, they stand for the whole state: they hold about all
    /// the view held then.
    fn changes_were_most(&self, held: u64) -> bool {
        let Some((last, earlier)) = self.changes.split_last() else {
            return false;
        };
        let (len, base) = match (self.held.first(), self.held.get(1), earlier.first()) {
            (Some(&at_state), Some(&at_first), Some(first))
                if at_state.saturating_mul(4) < at_first =>
            {
                (first.len, at_first)
            }
            (Some(&at_state), _, _) => (self.state.len, at_state),
            _ => return false,
        };
        if base == 0 {
            return false;
        }
        let whole_now = u128::from(len) * u128::from(held) / u128::from(base);
        4 * u128::from(last.len) >= 3 * whole_now
    }
}

pub struct Engine {
    runtime: Runtime,
    /// The commit lock: held while an epoch is computed.
    views: Mutex<Dataflows>,
    /// The publish lock: held while an epoch's changes are applied to the
    /// views' outputs. It is taken under the commit lock, so epochs are
    /// published in the order they were computed. A stream reader's
    /// commit lets go of the commit lock once it holds this one: the next
    /// epoch is computed while this one is published. Whatever needs the
    /// outputs as of the operators' states (a checkpoint, a backfill, a
    /// table's commit) holds both ([`Engine::lock_settled`]).
    publishing: Mutex<()>,
    gate: tokio::sync::RwLock<()>,
    /// The last epoch published.
    epoch: AtomicU64,
    checkpoints: Checkpoints,
    /// Budget in bytes for all views' state together.
    memory_limit: Option<u64>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("runtime", &self.runtime)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Where a view's inputs are read from when it is backfilled.
pub trait RelationReader {
    /// The current rows of a table or materialized view.
    fn read(&self, relation: &str) -> Result<Vec<RecordBatch>>;

    /// Whether `relation` is a stream source.
    fn is_stream(&self, relation: &str) -> bool;
}

impl Engine {
    /// An engine whose checkpoints live in `store`, taken every
    /// `checkpoint_interval` (never with `None`). Finds the checkpoint a
    /// restart recovers from; views are restored from it as they are
    /// created again.
    pub fn new(
        workers: usize,
        store: &Store,
        checkpoint_interval: Option<Duration>,
        memory_limit: Option<u64>,
    ) -> Result<Engine> {
        let runtime = Runtime::new(workers)?;
        let checkpoints = Checkpoints::open(store, checkpoint_interval, runtime.worker_count())?;
        let epoch = checkpoints
            .recovery
            .lock()
            .expect("checkpoint lock")
            .as_ref()
            .map_or(0, |r| r.manifest.epoch);
        Ok(Engine {
            runtime,
            views: Mutex::new(Dataflows {
                views: BTreeMap::new(),
                checkpointed: BTreeSet::new(),
                positions: BTreeMap::new(),
                watermarks: BTreeMap::new(),
                source_frontiers: BTreeMap::new(),
                view_frontiers: BTreeMap::new(),
                dirty: BTreeSet::new(),
                moved: false,
                stored: BTreeMap::new(),
                last_checkpoint: Instant::now(),
                held: BTreeMap::new(),
                epoch,
            }),
            publishing: Mutex::new(()),
            gate: tokio::sync::RwLock::new(()),
            epoch: AtomicU64::new(epoch),
            checkpoints,
            memory_limit,
        })
    }

    pub fn worker_count(&self) -> usize {
        self.runtime.worker_count()
    }

    /// The last published epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The commit lock, once every epoch computed is published: the views'
    /// outputs are as of their operators' states until it is let go.
    fn lock_settled(&self) -> (MutexGuard<'_, Dataflows>, MutexGuard<'_, ()>) {
        let df = self.views.lock().expect("commit lock");
        let published = self.publishing.lock().expect("publish lock");
        (df, published)
    }

    /// Held by a query while it takes its snapshots of tables and views.
    pub async fn read_gate(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Commits a table change and every view's change to it, as one epoch.
    /// Blocking: call it off the async runtime.
    pub fn commit(&self, table: &Table, change: Change) -> Result<u64> {
        self.commit_with_positions(table, change, None)
    }

    /// [`Engine::commit`] for a table fed by a source: `positions` (the
    /// source's encoded read positions after this change) are made durable
    /// atomically with the change.
    pub fn commit_with_positions(
        &self,
        table: &Table,
        change: Change,
        positions: Option<&[u8]>,
    ) -> Result<u64> {
        let (mut df, _published) = self.lock_settled();
        let df = &mut *df;
        let prepared = table.prepare(change, positions)?;
        let inserted = prepared.inserted_rows();
        let delta = table_delta(table, &prepared)?;
        let epoch = df.next_epoch();
        let rows: usize = delta.iter().map(ChangeBatch::len).sum();
        let relation = table.def().name.as_str();
        if rows < PARALLEL_APPLY_ROWS {
            let outputs = self.propagate(df, Changed::new(relation, delta), epoch);
            let _gate = self.gate.blocking_write();
            table.apply(prepared)?;
            self.publish(outputs, epoch);
            return Ok(inserted);
        }
        // A large change: the table indexes its rows while the dataflow
        // works, both behind the gate so neither shows before the other.
        let _gate = self.gate.blocking_write();
        let (applied, outputs) = std::thread::scope(|scope| {
            let apply = std::thread::Builder::new()
                .name("eddydb-apply".into())
                .spawn_scoped(scope, || table.apply(prepared));
            let outputs = self.propagate(df, Changed::new(relation, delta), epoch);
            let applied = match apply {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(Error::Internal("table apply panicked".into()))),
                Err(e) => Err(Error::Internal(format!("cannot start a thread: {e}"))),
            };
            (applied, outputs)
        });
        applied?;
        self.publish(outputs, epoch);
        Ok(inserted)
    }

    /// Commits rows a stream source produced for one view, as one epoch:
    /// they run through `view_id`'s dataflow only (every view reading a
    /// stream has a reader of its own), then through the views over that
    /// view. `positions` are the reader's next positions after these rows
    /// and `watermarks` its partitions' watermarks there: a checkpoint
    /// stores them with the state they led to. `frontier` is the source's
    /// event-time frontier after these rows, when it has one. Returns the
    /// epoch. Blocking.
    pub fn commit_stream(
        &self,
        view_id: u64,
        source: &str,
        rows: RecordBatch,
        positions: &Offsets,
        watermarks: &Offsets,
        frontier: Option<i64>,
    ) -> Result<u64> {
        // A view that is gone: UndefinedTable, which ends its reader.
        let mut computing = self.views.lock().expect("commit lock");
        let df = &mut *computing;
        let Some(view) = df.views.get(&view_id) else {
            return Err(Error::UndefinedTable(format!(
                "materialized view with id {view_id}"
            )));
        };
        // A failed view reads no more: its reader stops, saying why.
        view.failed()?;
        let epoch = df.next_epoch();
        let delta = if rows.num_rows() == 0 {
            Vec::new()
        } else {
            vec![ChangeBatch::inserts(rows)]
        };
        let mut changed = Changed::new(source, delta);
        changed.reader = Some(view_id);
        changed.frontier = frontier.and_then(|f| df.advance_frontier(view_id, source, f));
        let outputs = self.propagate(df, changed, epoch);
        // Once the epoch before is published, this one is next.
        let publishing = self.publishing.lock().expect("publish lock");
        // A reader that has caught up commits empty polls: those change
        // nothing a checkpoint would store.
        let held = df.positions.entry(view_id).or_default();
        if held.get(source) != Some(positions) {
            held.insert(source.to_string(), positions.clone());
            df.moved = true;
        }
        if !watermarks.is_empty() {
            let held = df.watermarks.entry(view_id).or_default();
            if held.get(source) != Some(watermarks) {
                held.insert(source.to_string(), watermarks.clone());
                df.moved = true;
            }
        }
        if self.checkpoint_due(df) {
            // The checkpoint is of this epoch: the outputs first.
            self.publish_gated(outputs, epoch);
            self.checkpoint(df);
            return Ok(epoch);
        }
        // The next epoch is computed while this one is published.
        drop(computing);
        self.publish_gated(outputs, epoch);
        drop(publishing);
        Ok(epoch)
    }

    /// Steps every view holding a trailing range with the clock alone, so
    /// that rows that aged out leave it, and the views over it see them go
    /// (each view is stepped once, with whatever else reaches it). Blocking.
    pub fn tick(&self) {
        let (mut df, _published) = self.lock_settled();
        let df = &mut *df;
        if !df.views.values().any(|v| v.graph.is_temporal()) {
            return;
        }
        let epoch = df.next_epoch();
        let changed = Changed {
            origin: String::new(),
            batches: HashMap::new(),
            reader: None,
            frontier: None,
            tick: true,
        };
        let outputs = self.propagate(df, changed, epoch);
        if outputs.is_empty() {
            // Nothing to show: no need to stop the readers for it (so the
            // published epoch may move outside the gate).
            self.epoch.store(epoch, Ordering::Release);
            return;
        }
        self.publish_gated(outputs, epoch);
    }

    /// Starts the thread that steps views holding a trailing range every
    /// [`CLOCK_TICK`]; it ends with the engine.
    pub fn start_clock(engine: &Arc<Engine>) {
        let engine = Arc::downgrade(engine);
        let spawned = std::thread::Builder::new()
            .name("eddydb-clock".into())
            .spawn(move || loop {
                std::thread::sleep(CLOCK_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.tick(),
                    None => return,
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the clock thread; trailing ranges will not age");
        }
    }

    /// Runs a change through every view that depends on it, directly or
    /// through other views. A view whose dataflow fails is marked failed;
    /// the others and the commit go on.
    fn propagate(
        &self,
        df: &mut Dataflows,
        changed: Changed,
        epoch: u64,
    ) -> Vec<(Arc<MaterializedView>, ChangeBatch)> {
        if changed.batches.values().all(Vec::is_empty)
            && changed.frontier.is_none()
            && !changed.tick
        {
            return Vec::new();
        }
        let Changed {
            mut batches,
            origin,
            reader,
            frontier,
            tick,
        } = changed;
        let mut outputs = Vec::new();
        // Views' frontiers by name, and those that moved in this epoch.
        let mut known = df.known_frontiers();
        let mut moved: HashSet<String> = HashSet::new();
        // A view over a failed view fails too: its input stopped changing.
        let mut failed: HashSet<String> = df
            .views
            .values()
            .filter(|v| v.failure().is_some())
            .map(|v| v.def.name.clone())
            .collect();
        for view in df.views.values() {
            if view.failure().is_some() {
                continue;
            }
            if let Some((_, input)) = view.graph.sources().find(|(_, r)| failed.contains(*r)) {
                view.fail(format!(
                    "it reads materialized view \"{input}\", which has failed"
                ));
                failed.insert(view.def.name.clone());
                continue;
            }
            // A stream's rows reach only the view whose reader read them.
            let hidden = match reader {
                Some(id) if id != view.def.id => Some(origin.as_str()),
                _ => None,
            };
            // The reading view's frontier is its sources'; a view reading
            // only views has the least of theirs, once one moved.
            let frontier = match reader == Some(view.def.id) {
                true => frontier,
                false => derived_frontier(&view.graph, &known, Some(&moved)).filter(|f| {
                    df.view_frontiers
                        .get(&view.def.id)
                        .is_none_or(|last| f > last)
                }),
            };
            // On a tick, a view holding a trailing range steps even alone.
            let clocked = tick && view.graph.is_temporal();
            let inputs = match source_inputs(&view.graph, &batches, hidden) {
                Ok(inputs) if inputs.is_empty() && frontier.is_none() && !clocked => continue,
                Ok(inputs) => inputs,
                Err(e) => {
                    view.fail(e.to_string());
                    failed.insert(view.def.name.clone());
                    continue;
                }
            };
            df.dirty.insert(view.def.id);
            match self
                .runtime
                .step(view.def.id, &view.graph, epoch, false, frontier, inputs)
            {
                Ok(stepped) => {
                    df.held.insert(view.def.id, stepped.state_bytes);
                    if let Some(reason) = self.over_budget(df, view.def.id, &stepped.changes) {
                        view.fail_out_of_memory(reason);
                        self.uninstall(&mut df.held, view.def.id);
                        failed.insert(view.def.name.clone());
                        continue;
                    }
                    // Only a frontier the view took moves the views over it.
                    if let Some(f) = frontier {
                        df.view_frontiers.insert(view.def.id, f);
                        known.insert(view.def.name.clone(), f);
                        moved.insert(view.def.name.clone());
                    }
                    let out = stepped.changes;
                    if !out.is_empty() {
                        batches.insert(view.def.name.clone(), vec![out.clone()]);
                        outputs.push((Arc::clone(view), out));
                    }
                }
                Err(e) => {
                    view.fail(e.to_string());
                    failed.insert(view.def.name.clone());
                }
            }
        }
        outputs
    }

    /// Removes view `id`'s dataflow from the workers, and its state from
    /// the budget (`held`, the engine's per-view operator state).
    fn uninstall(&self, held: &mut BTreeMap<u64, usize>, id: u64) {
        self.runtime.remove(id);
        held.remove(&id);
    }

    /// With a memory budget, why view `id` cannot take on `changes` (its
    /// operator state as `df.held` now says): the state of every view plus
    /// the changes' rows would go over it.
    fn over_budget(&self, df: &Dataflows, id: u64, changes: &ChangeBatch) -> Option<String> {
        let limit = self.memory_limit?;
        let operators: usize = df.held.values().sum();
        let mut outputs: usize = df.views.values().map(|v| v.output_bytes()).sum();
        // Retractions shrink the output: only insertions count.
        let inserted = changes.diffs.iter().filter(|d| **d > 0).count();
        let incoming = changes.data.get_array_memory_size() * inserted / changes.len().max(1);
        let mut total = (operators + outputs + incoming) as u64;
        // Rows kept decoded for reads go first: reads decode them again.
        if total > limit && df.views.values().fold(false, |any, v| v.drop_image() | any) {
            outputs = df.views.values().map(|v| v.output_bytes()).sum();
            total = (operators + outputs + incoming) as u64;
        }
        if total <= limit {
            return None;
        }
        let own = df.held.get(&id).copied().unwrap_or(0)
            + df.views.get(&id).map_or(0, |v| v.output_bytes())
            + incoming;
        let human = |b: u64| crate::types::human_bytes(b as usize);
        Some(format!(
            "the state of all materialized views would take {}, over the memory limit of {} \
             (this view's own state: {})",
            human(total),
            human(limit),
            human(own as u64)
        ))
    }

    /// [`Engine::publish`] behind the gate. The caller holds the publish
    /// lock.
    fn publish_gated(&self, outputs: Vec<(Arc<MaterializedView>, ChangeBatch)>, epoch: u64) {
        let _gate = self.gate.blocking_write();
        self.publish(outputs, epoch);
    }

    /// Applies each view's changes of an epoch to its output, then makes
    /// the epoch visible (the caller holds the publish lock and the gate).
    fn publish(&self, outputs: Vec<(Arc<MaterializedView>, ChangeBatch)>, epoch: u64) {
        for (view, delta) in outputs {
            if let Err(e) = view.apply(&delta) {
                view.fail(e.to_string());
            }
        }
        self.epoch.store(epoch, Ordering::Release);
    }

    /// Installs a view's dataflow and fills it from the current contents of
    /// what it reads, then starts maintaining it. At a restart, a view over
    /// streams that the recovered checkpoint holds is restored from it
    /// instead: the positions its readers resume from are returned. Blocking.
    pub fn create_view(
        &self,
        view: Arc<MaterializedView>,
        reader: &dyn RelationReader,
    ) -> Result<Option<Resume>> {
        // Settled: the views it is filled from are read as of their
        // operators, whose next changes reach it.
        let (mut df, _published) = self.lock_settled();
        let df = &mut *df;
        let by_name = |name: &str| {
            df.views
                .values()
                .find(|v| v.def.name == name)
                .map(|v| v.def.id)
        };
        let inputs_views: Vec<Option<u64>> =
            view.graph.sources().map(|(_, r)| by_name(r)).collect();
        let checkpointed =
            !inputs_views.is_empty()
                && view.graph.sources().zip(&inputs_views).all(
                    |((_, relation), input)| match input {
                        Some(id) => df.checkpointed.contains(id),
                        None => reader.is_stream(relation),
                    },
                );
        let id = view.def.id;
        if checkpointed {
            let inputs: Vec<u64> = inputs_views.into_iter().flatten().collect();
            if let Some(positions) = self.restore_view(df, &view, &inputs) {
                return Ok(Some(positions));
            }
        }
        let mut inputs: StepInput = Vec::new();
        for (node, relation) in view.graph.sources() {
            let schema = view.graph.schema_of(node);
            for batch in reader.read(relation)? {
                let batch = ChangeBatch::inserts(batch).with_schema(Arc::clone(&schema))?;
                inputs.push((node, batch));
            }
        }
        self.runtime.install(id, Arc::clone(&view.graph))?;
        let epoch = df.next_epoch();
        // A view over views starts at their frontier: the contents it is
        // filled from are as of it. Without this, a view made after its
        // inputs stopped moving would never close a window.
        let frontier = derived_frontier(&view.graph, &df.known_frontiers(), None);
        let initial = self
            .runtime
            .step(id, &view.graph, epoch, true, frontier, inputs)
            .inspect_err(|_| self.runtime.remove(id))?;
        df.held.insert(id, initial.state_bytes);
        if let Some(reason) = self.over_budget(df, id, &initial.changes) {
            self.uninstall(&mut df.held, id);
            return Err(Error::MemoryLimit(format!(
                "cannot create materialized view \"{}\": {reason}",
                view.def.name
            )));
        }
        let _gate = self.gate.blocking_write();
        if let Err(e) = view.apply(&initial.changes) {
            self.uninstall(&mut df.held, id);
            return Err(e);
        }
        df.views.insert(id, view);
        if let Some(f) = frontier {
            df.view_frontiers.insert(id, f);
        }
        if checkpointed {
            df.checkpointed.insert(id);
            df.dirty.insert(id);
        }
        self.epoch.store(epoch, Ordering::Release);
        Ok(None)
    }

    /// Restores a view from the recovered checkpoint, if it holds the view
    /// as planned now and every view it reads was restored too (a view
    /// over one rebuilt from scratch is backfilled from it instead).
    /// Returns its readers' positions; `None` when the view is not
    /// restored, with a log line if that is because of damage.
    fn restore_view(
        &self,
        df: &mut Dataflows,
        view: &Arc<MaterializedView>,
        inputs: &[u64],
    ) -> Option<Resume> {
        let mut recovery = self.checkpoints.recovery.lock().expect("checkpoint lock");
        let recovery = recovery.as_mut()?;
        let id = view.def.id;
        let entry = recovery.entry(id)?.clone();
        if entry.graph != view.fingerprint() {
            tracing::warn!(view = %view.def.name, "view plans differently than when checkpointed; rebuilding it");
            return None;
        }
        if !inputs.iter().all(|i| recovery.restored.contains(i)) {
            return None;
        }
        let store = self.checkpoints.store();
        let restored = entry
            .chain()
            .map(|state| store.read_state(id, state))
            .collect::<Result<Vec<_>>>()
            .and_then(|chain| self.load_view_state(view, &chain));
        if let Err(e) = restored {
            self.runtime.remove(id);
            tracing::error!(view = %view.def.name, error = %e, "cannot restore view from its checkpoint; rebuilding it");
            return None;
        }
        recovery.restored.insert(id);
        if let Ok(bytes) = self.runtime.state_bytes(id) {
            df.held.insert(id, bytes.iter().sum());
        }
        df.views.insert(id, Arc::clone(view));
        df.checkpointed.insert(id);
        df.positions.insert(id, entry.positions.clone());
        df.watermarks.insert(id, entry.watermarks.clone());
        df.stored.insert(
            id,
            Stored {
                state: entry.state,
                changes: entry.changes,
                tracked: false,
                held: Vec::new(),
            },
        );
        Some(Resume {
            positions: entry.positions,
            watermarks: entry.watermarks,
        })
    }

    /// Installs a view's dataflow with the operator states and output a
    /// checkpoint holds: a chain of states [`Engine::view_state`] wrote,
    /// the first whole.
    fn load_view_state(&self, view: &MaterializedView, chain: &[Vec<u8>]) -> Result<()> {
        let (parts, outputs) = split_view_states(chain, self.runtime.worker_count())?;
        let parts: Vec<Vec<Vec<u8>>> = parts
            .into_iter()
            .map(|part| part.into_iter().map(<[u8]>::to_vec).collect())
            .collect();
        self.runtime.install(view.def.id, Arc::clone(&view.graph))?;
        // The workers load the operators while this thread loads the output.
        std::thread::scope(|scope| {
            let operators = std::thread::Builder::new()
                .name("eddydb-restore".into())
                .spawn_scoped(scope, || self.runtime.restore(view.def.id, parts))
                .map_err(|e| Error::Internal(format!("cannot start a thread: {e}")))?;
            let output = view.read_output(&outputs);
            operators
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("restoring operators panicked".into())))?;
            // Only once everything read back: a failed restore leaves the
            // output empty for the rebuild.
            view.set_output(output?);
            Ok(())
        })
    }

    /// A view's checkpointed state: every worker's operator states, then
    /// the output arrangement; whole, or with `changes` what changed since
    /// the last checkpoint, where the operator or output tracks that.
    /// The workers write their operators while this thread writes the
    /// output (the pause lasts as long as the longer of the two).
    fn view_state(&self, view: &MaterializedView, changes: bool) -> Result<StatePieces> {
        let started = Instant::now();
        let (parts, output, output_ms, operators_ms) = std::thread::scope(|scope| {
            let parts = std::thread::Builder::new()
                .name("eddydb-snapshot".into())
                .spawn_scoped(scope, || {
                    let result = self.runtime.checkpoint(view.def.id, changes);
                    (result, started.elapsed())
                })
                .map_err(|e| Error::Internal(format!("cannot start a thread: {e}")))?;
            let mut output = StatePieces::new();
            view.checkpoint_output(&mut output, changes);
            let output_ms = started.elapsed();
            let (parts, operators_ms) = parts.join().unwrap_or_else(|_| {
                (
                    Err(Error::Internal("a snapshot panicked".into())),
                    started.elapsed(),
                )
            });
            Ok::<_, Error>((parts?, output, output_ms, operators_ms))
        })?;
        let state = assemble_view_state(parts, output);
        tracing::debug!(
            view = %view.def.name,
            changes,
            bytes = state.len(),
            operators_ms = operators_ms.as_secs_f64() * 1e3,
            output_ms = output_ms.as_secs_f64() * 1e3,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "view snapshot"
        );
        Ok(state)
    }

    /// Called once every stored view has been created again at start: logs
    /// what recovery did and lets go of the recovered checkpoint.
    pub fn finish_recovery(&self) {
        let Some(recovery) = self
            .checkpoints
            .recovery
            .lock()
            .expect("checkpoint lock")
            .take()
        else {
            return;
        };
        tracing::info!(
            checkpoint = recovery.manifest.id,
            epoch = recovery.manifest.epoch,
            views = recovery.restored.len(),
            ms = recovery.started.elapsed().as_millis() as u64,
            "recovered from checkpoint"
        );
    }

    fn checkpoint_due(&self, df: &Dataflows) -> bool {
        self.checkpoints
            .interval
            .is_some_and(|every| df.last_checkpoint.elapsed() >= every)
            && !df.checkpointed.is_empty()
            && !self.checkpoints.is_busy()
            && self.has_news(df)
    }

    /// Whether anything a checkpoint stores changed since the last one (or
    /// the last one failed).
    fn has_news(&self, df: &Dataflows) -> bool {
        df.moved
            || self.checkpoints.failed.load(Ordering::Acquire)
            || df.checkpointed.iter().any(|v| df.dirty.contains(v))
    }

    /// Takes a checkpoint of every checkpointed view as of the epoch just
    /// published, and hands it to the writer. Under the commit lock, so
    /// states and positions are of one epoch. A failure is logged: the
    /// views go on, and the next checkpoint tries again.
    fn checkpoint(&self, df: &mut Dataflows) {
        df.last_checkpoint = Instant::now();
        if let Err(e) = self.take_checkpoint(df) {
            tracing::error!(error = %e, "checkpoint not taken");
        }
    }

    fn take_checkpoint(&self, df: &mut Dataflows) -> Result<()> {
        let started = Instant::now();
        if self.checkpoints.failed.swap(false, Ordering::AcqRel) {
            df.stored.clear();
        }
        // Chains folded since: each whole state replaces the chain up to
        // the state it folds in, unless the chain started again since.
        for done in self.checkpoints.take_compacted() {
            if let Some(stored) = df.stored.get_mut(&done.view) {
                if let Some(at) = stored.changes.iter().position(|c| c.blob == done.upto) {
                    stored.state = done.state;
                    stored.changes.drain(..=at);
                    // The folded state is as of change `at`: its bytes held
                    // come first now.
                    stored.held.drain(..stored.held.len().min(at + 1));
                }
            }
            self.checkpoints.store().settle(done.view, &done.state);
        }
        let id = self.checkpoints.next_id();
        let mut entries = Vec::new();
        let mut states = Vec::new();
        let mut stored = Vec::new();
        let mut compact = Vec::new();
        for vid in &df.checkpointed {
            let Some(view) = df.views.get(vid) else {
                continue;
            };
            if view.failure().is_some() {
                continue;
            }
            let state = match df.stored.get(vid) {
                Some(state) if !df.dirty.contains(vid) => state.clone(),
                previous => {
                    let held =
                        (df.held.get(vid).copied().unwrap_or(0) + view.arrangement_bytes()) as u64;
                    let changes = previous.is_some_and(|p| p.next_is_changes(held));
                    // A view that cannot be snapshot is left out (and so
                    // are the views over it, at recovery).
                    let bytes = match self.view_state(view, changes) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            // Its operators may have forgotten changes:
                            // the next state is whole.
                            df.stored.remove(vid);
                            tracing::error!(view = %view.def.name, error = %e, "view left out of the checkpoint");
                            continue;
                        }
                    };
                    let part = StateRef {
                        blob: id,
                        len: bytes.len() as u64,
                        checksum: bytes.checksum(),
                        compacted: false,
                    };
                    let state = match previous {
                        Some(previous) if changes => {
                            let mut state = previous.clone();
                            state.changes.push(part);
                            state.held.push(held);
                            // Not when the next state is whole anyway.
                            if state.is_long(held, 1)
                                && !state.changes_were_most(held)
                                && !self.checkpoints.is_compacting(*vid)
                            {
                                compact.push((Arc::clone(view), state.clone()));
                            }
                            state
                        }
                        _ => Stored {
                            state: part,
                            changes: Vec::new(),
                            tracked: true,
                            held: vec![held],
                        },
                    };
                    states.push((*vid, bytes.into_pieces()));
                    stored.push((*vid, state.clone()));
                    state
                }
            };
            entries.push(ViewEntry {
                view: *vid,
                graph: view.fingerprint(),
                state: state.state,
                changes: state.changes,
                positions: df.positions.get(vid).cloned().unwrap_or_default(),
                watermarks: df.watermarks.get(vid).cloned().unwrap_or_default(),
            });
        }
        let manifest = Manifest {
            id,
            build: checkpoint::build_identity(),
            epoch: df.epoch,
            taken_at_ms: chrono::Utc::now().timestamp_millis(),
            snapshot_ms: started.elapsed().as_secs_f64() * 1e3,
            duration_ms: 0.0,
            bytes_written: 0,
            workers: self.runtime.worker_count(),
            views: entries,
        };
        if let Err(e) = self.checkpoints.submit(manifest, states, started) {
            // Compactions taken in may name states no manifest will: the
            // next checkpoint writes every view whole.
            self.checkpoints.failed.store(true, Ordering::Release);
            return Err(e);
        }
        df.stored.extend(stored);
        df.dirty.clear();
        df.moved = false;
        for (view, state) in compact {
            let chain: Vec<StateRef> = std::iter::once(state.state).chain(state.changes).collect();
            let workers = self.runtime.worker_count();
            let (graph, schema) = (Arc::clone(&view.graph), Arc::clone(&view.schema));
            self.checkpoints.compact(view.def.id, chain, move |states| {
                fold_view_states(&graph, &schema, workers, states)
            });
        }
        Ok(())
    }

    /// Takes a last checkpoint of what changed and waits until it is
    /// written (a clean shutdown, after the readers stopped), so the next
    /// start reads nothing again.
    pub fn checkpoint_and_wait(&self) {
        if self.checkpoints.interval.is_none() {
            return;
        }
        self.checkpoints.wait_idle();
        {
            let (mut df, _published) = self.lock_settled();
            let df = &mut *df;
            if self.has_news(df) && !df.checkpointed.is_empty() {
                self.checkpoint(df);
            }
        }
        self.checkpoints.wait_idle();
    }

    /// Recent checkpoints, oldest first.
    pub fn checkpoint_history(&self) -> Vec<CheckpointInfo> {
        self.checkpoints.history()
    }

    pub fn drop_view(&self, id: u64) {
        let (mut df, _published) = self.lock_settled();
        if df.views.remove(&id).is_some() {
            self.runtime.remove(id);
        }
        df.checkpointed.remove(&id);
        df.positions.remove(&id);
        df.watermarks.remove(&id);
        df.source_frontiers.remove(&id);
        df.view_frontiers.remove(&id);
        df.dirty.remove(&id);
        df.stored.remove(&id);
        df.held.remove(&id);
    }

    /// The memory budget for all views' state, in bytes.
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// State bytes per operator of a view, summed over workers.
    pub fn operator_state_bytes(&self, id: u64) -> Result<Vec<usize>> {
        self.runtime.state_bytes(id)
    }
}

/// The change batches a prepared table change feeds the dataflow: deleted
/// rows retracted, inserted rows added. Empty when nothing changed.
fn table_delta(table: &Table, prepared: &PreparedChange) -> Result<Vec<ChangeBatch>> {
    let schema = table.schema();
    let mut parts = Vec::new();
    if prepared.deleted().num_rows() > 0 {
        parts.push(ChangeBatch::retractions(prepared.deleted().clone()));
    }
    for batch in prepared.inserted() {
        if batch.num_rows() > 0 {
            parts.push(ChangeBatch::inserts(RecordBatch::try_new(
                Arc::clone(&schema),
                batch.columns().to_vec(),
            )?));
        }
    }
    Ok(parts)
}

/// The frontier of a view reading only materialized views: the least of
/// theirs, when every one has one and (with `moved`) one of them moved in
/// this epoch.
fn derived_frontier(
    graph: &Graph,
    known: &HashMap<String, i64>,
    moved: Option<&HashSet<String>>,
) -> Option<i64> {
    let mut relations = graph.sources().map(|(_, r)| r).peekable();
    relations.peek()?;
    let mut any_moved = moved.is_none();
    let mut least = i64::MAX;
    for relation in relations {
        any_moved |= moved.is_some_and(|m| m.contains(relation));
        least = least.min(*known.get(relation)?);
    }
    any_moved.then_some(least)
}

impl Dataflows {
    /// Every view's last frontier, by view name.
    fn known_frontiers(&self) -> HashMap<String, i64> {
        self.views
            .values()
            .filter_map(|v| Some((v.def.name.clone(), *self.view_frontiers.get(&v.def.id)?)))
            .collect()
    }

    /// Records `source`'s frontier `frontier` for view `view_id`; returns
    /// the view's frontier if that moved it: the least over the relations
    /// it reads, once every one has reported one (a table never does).
    fn advance_frontier(&mut self, view_id: u64, source: &str, frontier: i64) -> Option<i64> {
        let known = self.source_frontiers.entry(view_id).or_default();
        let at = known.entry(source.to_string()).or_insert(frontier);
        *at = (*at).max(frontier);
        let view = self.views.get(&view_id)?;
        let least = view
            .graph
            .sources()
            .map(|(_, relation)| known.get(relation).copied())
            .collect::<Option<Vec<i64>>>()?
            .into_iter()
            .min()?;
        match self.view_frontiers.get(&view_id) {
            Some(last) if *last >= least => None,
            _ => {
                self.view_frontiers.insert(view_id, least);
                Some(least)
            }
        }
    }
}

/// What changed in an epoch, by relation.
struct Changed {
    batches: HashMap<String, Vec<ChangeBatch>>,
    /// The relation the epoch started from.
    origin: String,
    /// For a stream: the one view whose reader produced the rows.
    reader: Option<u64>,
    /// That view's new event-time frontier, when it moved.
    frontier: Option<i64>,
    /// The clock alone moved: views holding a trailing range step.
    tick: bool,
}

impl Changed {
    fn new(relation: &str, delta: Vec<ChangeBatch>) -> Changed {
        Changed {
            batches: HashMap::from([(relation.to_string(), delta)]),
            origin: relation.to_string(),
            reader: None,
            frontier: None,
            tick: false,
        }
    }
}

/// The changes of `graph`'s source relations, in each source's schema;
/// `hidden` is a relation whose changes are not this graph's to see.
fn source_inputs(
    graph: &Graph,
    changed: &HashMap<String, Vec<ChangeBatch>>,
    hidden: Option<&str>,
) -> Result<StepInput> {
    let mut inputs = Vec::new();
    for (node, relation) in graph.sources() {
        if hidden == Some(relation) {
            continue;
        }
        for delta in changed.get(relation).into_iter().flatten() {
            let schema = graph.schema_of(node);
            inputs.push((node, delta.clone().with_schema(schema)?));
        }
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(blob: u64, len: u64) -> StateRef {
        StateRef {
            blob,
            len,
            checksum: 0,
            compacted: false,
        }
    }

    /// A chain of a whole state of `len` bytes taken while the view held
    /// `held_then`, then changes of `lens`, each while it held 2,000.
    fn chain_from(len: u64, held_then: u64, lens: &[u64]) -> Stored {
        Stored {
            state: part(1, len),
            changes: (2..)
                .zip(lens)
                .map(|(blob, len)| part(blob, *len))
                .collect(),
            tracked: true,
            held: std::iter::once(held_then)
                .chain(lens.iter().map(|_| 2_000))
                .collect(),
        }
    }

    /// [`chain_from`] a whole state of 1,000 bytes at 2,000 held.
    fn chain(lens: &[u64]) -> Stored {
        chain_from(1_000, 2_000, lens)
    }

    #[test]
    fn changes_of_most_of_the_state_are_followed_by_a_whole_state() {
        // Nothing but the whole state yet: changes follow.
        assert!(chain(&[]).next_is_changes(2_000));
        // Changes of a tenth of the state: more changes.
        assert!(chain(&[100]).next_is_changes(2_000));
        // Changes of 3/4 of what a whole state takes now: whole.
        assert!(!chain(&[750]).next_is_changes(2_000));
        assert!(chain(&[749]).next_is_changes(2_000));
        // The view doubled since its whole state: the same changes are
        // now less than half of a whole one.
        assert!(chain(&[750]).next_is_changes(4_000));
        // What the view held when its state was taken is not known (it was
        // recovered): the size of changes alone decides nothing.
        let mut recovered = chain(&[750]);
        recovered.held.clear();
        assert!(!recovered.changes_were_most(2_000));
        // Nor are a recovered view's changes tracked: whole.
        recovered.tracked = false;
        assert!(!recovered.next_is_changes(2_000));
    }

    #[test]
    fn a_view_checkpointed_as_it_started_is_sized_by_its_first_changes() {
        // Whole while empty (8 bytes held), then changes of about all of
        // it as it filled: 1,000 bytes at 2,000 held.
        let started = |lens: &[u64]| chain_from(20, 8, lens);
        // The first changes are the last: nothing to size them by.
        assert!(started(&[1_000]).next_is_changes(2_000));
        // Changes as large again: whole, before the chain needs folding.
        assert!(!started(&[1_000, 900]).next_is_changes(2_000));
        assert!(started(&[1_000, 700]).next_is_changes(2_000));
        // The view doubled since its first changes: 900 bytes are less than
        // half of a whole state now.
        assert!(started(&[1_000, 900]).next_is_changes(4_000));
        // A view that held a third of what it held at its first changes
        // keeps its whole state as the measure: 900 bytes are not most of
        // what 700 bytes at 700 held would take at 2,000.
        assert!(chain_from(700, 700, &[1_000, 900]).next_is_changes(2_000));
    }
}
