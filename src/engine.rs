//! The engine: materialized views kept current by the dataflow, and the
//! commit path that makes a table change and every view's change to it
//! visible at once.
//!
//! A commit is one epoch. Under the engine's commit lock it (1) makes the
//! table change durable, (2) runs the change through every dependent view's
//! dataflow, in creation order so a view over a view sees its input's
//! change, and (3) behind the read gate, publishes the table change and all
//! view changes together. Queries plan under the gate's read side, so a
//! query sees one closed epoch for every table and view it reads; and the
//! writing statement returns only after (3), so it reads its own writes.
//!
//! **Architecture Invariant:** nothing becomes visible to a reader between
//! two epochs' publications: table rows and view rows of an epoch are
//! published together, behind the gate.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::dataflow::arrangement::Arrangement;
use crate::dataflow::graph::Graph;
use crate::dataflow::row::RowCodec;
use crate::dataflow::runtime::{Runtime, StepInput};
use crate::dataflow::ChangeBatch;
use crate::error::{Error, Result};
use crate::storage::{Change, PreparedChange, Table};

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
    state: RwLock<ViewState>,
}

#[derive(Debug)]
struct ViewState {
    output: Arrangement,
    failed: Option<String>,
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
            graph: Arc::new(graph),
            state: RwLock::new(ViewState {
                output: Arrangement::new(Arc::clone(&schema))?,
                failed: None,
            }),
            schema,
            key_columns,
            key_codec,
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
        state.output.update(&delta, |i| keys.row(i).data())
    }

    fn fail(&self, reason: String) {
        tracing::error!(view = %self.def.name, %reason, "materialized view failed");
        self.state.write().expect("view lock").failed = Some(reason);
    }

    pub fn failure(&self) -> Option<String> {
        self.state.read().expect("view lock").failed.clone()
    }

    fn check(&self, state: &ViewState) -> Result<()> {
        match &state.failed {
            Some(reason) => Err(Error::ViewFailed {
                name: self.def.name.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Every row of the view, as of the last published epoch.
    pub fn scan(&self) -> Result<Vec<RecordBatch>> {
        let state = self.state.read().expect("view lock");
        self.check(&state)?;
        state.output.scan()
    }

    /// The rows whose key columns equal `key` (one-element arrays).
    pub fn lookup(&self, key: &[ArrayRef]) -> Result<RecordBatch> {
        let encoded = self.key_codec.encode(key)?;
        let state = self.state.read().expect("view lock");
        self.check(&state)?;
        state.output.lookup(encoded.row(0).data())
    }

    pub fn row_count(&self) -> u64 {
        self.state.read().expect("view lock").output.row_count()
    }

    pub fn output_bytes(&self) -> usize {
        self.state.read().expect("view lock").output.state_bytes()
    }
}

/// Rows of a change from which the table's own apply runs beside the
/// dataflow instead of after it.
const PARALLEL_APPLY_ROWS: usize = 65_536;

/// Views in creation order: a view is created after everything it reads,
/// so this order is a topological order of the dependency graph.
type ViewsById = BTreeMap<u64, Arc<MaterializedView>>;

pub struct Engine {
    runtime: Runtime,
    /// The commit lock: held while an epoch is computed and published.
    views: Mutex<ViewsById>,
    gate: tokio::sync::RwLock<()>,
    epoch: AtomicU64,
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
}

impl Engine {
    pub fn new(workers: usize) -> Result<Engine> {
        Ok(Engine {
            runtime: Runtime::new(workers)?,
            views: Mutex::new(BTreeMap::new()),
            gate: tokio::sync::RwLock::new(()),
            epoch: AtomicU64::new(0),
        })
    }

    pub fn worker_count(&self) -> usize {
        self.runtime.worker_count()
    }

    /// The last published epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
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
        let views = self.views.lock().expect("commit lock");
        let prepared = table.prepare(change, positions)?;
        let inserted = prepared.inserted_rows();
        let epoch = self.epoch() + 1;
        let delta = table_delta(table, &prepared)?;
        let rows: usize = delta.iter().map(ChangeBatch::len).sum();
        let relation = table.def().name.as_str();
        if rows < PARALLEL_APPLY_ROWS {
            let outputs = self.propagate(&views, Changed::new(relation, delta), epoch);
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
            let outputs = self.propagate(&views, Changed::new(relation, delta), epoch);
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
    /// view. Returns the epoch. Blocking.
    pub fn commit_stream(&self, view_id: u64, source: &str, rows: RecordBatch) -> Result<u64> {
        // A view that is gone: UndefinedTable, which ends its reader.
        let views = self.views.lock().expect("commit lock");
        let Some(view) = views.get(&view_id) else {
            return Err(Error::UndefinedTable(format!(
                "materialized view with id {view_id}"
            )));
        };
        // A failed view reads no more: its reader stops, saying why.
        if let Some(reason) = view.failure() {
            return Err(Error::ViewFailed {
                name: view.def.name.clone(),
                reason,
            });
        }
        let epoch = self.epoch() + 1;
        let delta = if rows.num_rows() == 0 {
            Vec::new()
        } else {
            vec![ChangeBatch::inserts(rows)]
        };
        let mut changed = Changed::new(source, delta);
        changed.reader = Some(view_id);
        let outputs = self.propagate(&views, changed, epoch);
        let _gate = self.gate.blocking_write();
        self.publish(outputs, epoch);
        Ok(epoch)
    }

    /// Runs a change through every view that depends on it, directly or
    /// through other views. A view whose dataflow fails is marked failed;
    /// the others and the commit go on.
    fn propagate(
        &self,
        views: &ViewsById,
        changed: Changed,
        epoch: u64,
    ) -> Vec<(Arc<MaterializedView>, ChangeBatch)> {
        if changed.batches.values().all(Vec::is_empty) {
            return Vec::new();
        }
        let Changed {
            mut batches,
            origin,
            reader,
        } = changed;
        let mut outputs = Vec::new();
        for view in views.values() {
            if view.failure().is_some() {
                continue;
            }
            // A stream's rows reach only the view whose reader read them.
            let hidden = match reader {
                Some(id) if id != view.def.id => Some(origin.as_str()),
                _ => None,
            };
            let inputs = match source_inputs(&view.graph, &batches, hidden) {
                Ok(inputs) if inputs.is_empty() => continue,
                Ok(inputs) => inputs,
                Err(e) => {
                    view.fail(e.to_string());
                    continue;
                }
            };
            match self
                .runtime
                .step(view.def.id, &view.graph, epoch, false, inputs)
            {
                Ok(out) if out.is_empty() => {}
                Ok(out) => {
                    batches.insert(view.def.name.clone(), vec![out.clone()]);
                    outputs.push((Arc::clone(view), out));
                }
                Err(e) => view.fail(e.to_string()),
            }
        }
        outputs
    }

    /// Applies view changes and closes the epoch; the caller holds the gate.
    fn publish(&self, outputs: Vec<(Arc<MaterializedView>, ChangeBatch)>, epoch: u64) {
        for (view, delta) in outputs {
            if let Err(e) = view.apply(&delta) {
                view.fail(e.to_string());
            }
        }
        self.epoch.store(epoch, Ordering::Release);
    }

    /// Installs a view's dataflow and fills it from the current contents of
    /// what it reads, then starts maintaining it. Blocking.
    pub fn create_view(
        &self,
        view: Arc<MaterializedView>,
        reader: &dyn RelationReader,
    ) -> Result<()> {
        let mut views = self.views.lock().expect("commit lock");
        let mut inputs: StepInput = Vec::new();
        for (node, relation) in view.graph.sources() {
            let schema = view.graph.schema_of(node);
            for batch in reader.read(relation)? {
                let batch = ChangeBatch::inserts(batch).with_schema(Arc::clone(&schema))?;
                inputs.push((node, batch));
            }
        }
        self.runtime.install(view.def.id, Arc::clone(&view.graph))?;
        let epoch = self.epoch() + 1;
        let initial = self
            .runtime
            .step(view.def.id, &view.graph, epoch, true, inputs)
            .inspect_err(|_| self.runtime.remove(view.def.id))?;
        let _gate = self.gate.blocking_write();
        view.apply(&initial)?;
        views.insert(view.def.id, view);
        self.epoch.store(epoch, Ordering::Release);
        Ok(())
    }

    pub fn drop_view(&self, id: u64) {
        let mut views = self.views.lock().expect("commit lock");
        if views.remove(&id).is_some() {
            self.runtime.remove(id);
        }
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

/// What changed in an epoch, by relation.
struct Changed {
    batches: HashMap<String, Vec<ChangeBatch>>,
    /// The relation the epoch started from.
    origin: String,
    /// For a stream: the one view whose reader produced the rows.
    reader: Option<u64>,
}

impl Changed {
    fn new(relation: &str, delta: Vec<ChangeBatch>) -> Changed {
        Changed {
            batches: HashMap::from([(relation.to_string(), delta)]),
            origin: relation.to_string(),
            reader: None,
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
