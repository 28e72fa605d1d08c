//! Checkpoints of the views that streams feed.
//!
//! A view over tables is rebuilt at start from the tables' durable rows. A
//! view over a stream source cannot be: its input lives in Kafka (or a
//! generator), and reading it all again costs as much as the stream is
//! long. So every `--checkpoint-interval`, between two epochs, the engine
//! snapshots such views (every worker's operator state and the output
//! arrangement) together with the positions their readers had reached at
//! that same epoch, and a writer thread stores the snapshot in sled while
//! the dataflow goes on. After a crash the newest complete checkpoint is
//! loaded, the readers resume at its positions, and each view ends up as if
//! nothing had happened: every event after the positions is read again,
//! every event before them is in the state exactly once.
//!
//! Layout:
//! - in sled's `checkpoints` tree, `m` + checkpoint id (big-endian): the
//!   manifest, JSON after its checksum. It is written last, once every
//!   state it names is on disk, so a manifest means a complete checkpoint;
//! - in `<data dir>/checkpoints/`, one file per view state,
//!   `<checkpoint id>-<view id>.state` (hex), written and fsynced before
//!   the manifest. States live beside sled rather than in it because sled
//!   reads its whole log when it opens: gigabytes of state there would
//!   slow every start. A view that did not change since the previous
//!   checkpoint is not written again: its manifest entry names the older
//!   checkpoint holding its state.
//! - A view's state is a chain: a whole state, then states holding only
//!   what changed since the one before (see `Operator::checkpoint_changes`),
//!   each in the file of the checkpoint that wrote it. Once the changes
//!   add up to the whole state, a compaction thread folds the chain into a
//!   whole state, `<checkpoint id>-<view id>-whole.state` (named after the
//!   last state it folds in), which later manifests name in its place.
//!
//! The newest [`KEEP`] manifests are kept, and the states they name. A
//! manifest or state that fails its checksum makes recovery use the
//! checkpoint before it, saying so in the log. A state that did not change
//! is shared by consecutive checkpoints, so damage to it rules them all
//! out (and so does damage to the whole state a chain starts from): views
//! over streams are then rebuilt from their sources.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dataflow::state::{checksum, corrupt, StatePieces};
use crate::error::{Error, Result};
use crate::source::reader::Offsets;

/// Manifests kept: the newest is used, the older ones stand in if it (or
/// a state only it names) is damaged.
const KEEP: usize = 3;

/// Checkpoints listed by `eddy_catalog.checkpoints`.
const HISTORY: usize = 100;

/// Set to `checkpoint-before-manifest:N` to abort the process once
/// checkpoint N's states are written and before its manifest is: the crash
/// a test needs to show that a half-written checkpoint is never used.
const FAILPOINT_VAR: &str = "EDDYDB_FAILPOINT";

/// The checkpoint id `EDDYDB_FAILPOINT` aborts in, if set.
fn failpoint() -> Option<u64> {
    let value = std::env::var(FAILPOINT_VAR).ok()?;
    value
        .strip_prefix("checkpoint-before-manifest:")?
        .parse()
        .ok()
}

/// Where a view's state is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StateRef {
    /// The checkpoint that wrote it (for a compacted state, the checkpoint
    /// of the last state it folds in).
    pub blob: u64,
    pub len: u64,
    pub checksum: u64,
    /// Whether it is a whole state folded from a chain beside the
    /// dataflow (see `Engine::compact`), kept in a file of its own.
    #[serde(default)]
    pub compacted: bool,
}

/// One view in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ViewEntry {
    pub view: u64,
    /// Checksum of the view's dataflow as EXPLAIN describes it: a view that
    /// plans differently now is not restored from it.
    pub graph: u64,
    /// The view's whole state ...
    pub state: StateRef,
    /// ... and the changes written after it, oldest first.
    #[serde(default)]
    pub changes: Vec<StateRef>,
    /// Per stream source: the next offsets its reader had not yet
    /// committed. A source missing here had committed nothing.
    pub positions: BTreeMap<String, Offsets>,
    /// Per stream source, each partition's watermark at those positions.
    #[serde(default)]
    pub watermarks: BTreeMap<String, Offsets>,
}

impl ViewEntry {
    /// The states to read, in order: the whole one, then the changes.
    pub fn chain(&self) -> impl Iterator<Item = &StateRef> {
        std::iter::once(&self.state).chain(&self.changes)
    }
}

/// What must match for a checkpoint's states to be read by this build:
/// the version of the state layout and of EddyDB, and where keys go among
/// workers (a probe of the key hash).
pub(super) fn build_identity() -> String {
    format!(
        "state-v5 eddydb-{} shard-probe-{}",
        env!("CARGO_PKG_VERSION"),
        crate::dataflow::row::shard_probe()
    )
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub id: u64,
    /// [`build_identity`] of the build that wrote it.
    #[serde(default)]
    pub build: String,
    pub epoch: u64,
    /// Unix milliseconds when the snapshot was taken.
    pub taken_at_ms: i64,
    /// How long the dataflow paused for the snapshot.
    pub snapshot_ms: f64,
    /// From the snapshot until its states were flushed (the manifest, a
    /// few hundred bytes, follows).
    pub duration_ms: f64,
    pub bytes_written: u64,
    pub workers: usize,
    pub views: Vec<ViewEntry>,
}

/// A checkpoint as `eddy_catalog.checkpoints` shows it.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub id: u64,
    pub epoch: u64,
    pub taken_at_ms: i64,
    pub snapshot_ms: f64,
    pub duration_ms: f64,
    pub bytes_written: u64,
    /// Bytes of state of every view it covers, written now or before.
    pub state_bytes: u64,
    pub views: usize,
    /// Views whose state it wrote ...
    pub views_written: usize,
    /// ... of which as changes since the previous checkpoint only.
    pub views_changes_only: usize,
    /// Views whose chain starts from a state compacted beside the dataflow.
    pub views_compacted: usize,
}

impl CheckpointInfo {
    fn of(m: &Manifest) -> CheckpointInfo {
        CheckpointInfo {
            id: m.id,
            epoch: m.epoch,
            taken_at_ms: m.taken_at_ms,
            snapshot_ms: m.snapshot_ms,
            duration_ms: m.duration_ms,
            bytes_written: m.bytes_written,
            state_bytes: m.views.iter().flat_map(|v| v.chain().map(|s| s.len)).sum(),
            views: m.views.len(),
            views_written: m
                .views
                .iter()
                .filter(|v| v.chain().any(|s| s.blob == m.id))
                .count(),
            views_changes_only: m
                .views
                .iter()
                .filter(|v| v.changes.last().is_some_and(|s| s.blob == m.id))
                .count(),
            views_compacted: m.views.iter().filter(|v| v.state.compacted).count(),
        }
    }
}

/// The manifests' tree and the states' folder.
#[derive(Debug, Clone)]
pub(super) struct CheckpointStore {
    tree: sled::Tree,
    db: crate::storage::Store,
    states: std::path::PathBuf,
    /// Compacted states written that no manifest names yet: garbage
    /// collection leaves them be.
    pending: Arc<Mutex<BTreeSet<StateFile>>>,
}

fn manifest_key(id: u64) -> Vec<u8> {
    let mut key = vec![b'm'];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// A state file: the checkpoint that wrote it (or whose state it folds
/// in), the view, and whether it is compacted.
type StateFile = (u64, u64, bool);

fn state_name((blob, view, compacted): StateFile) -> String {
    let kind = if compacted { "-whole" } else { "" };
    format!("{blob:016x}-{view:016x}{kind}.state")
}

/// The [`StateFile`] of a state file's name.
fn parse_state_name(name: &str) -> Option<StateFile> {
    let name = name.strip_suffix(".state")?;
    let (name, compacted) = match name.strip_suffix("-whole") {
        Some(name) => (name, true),
        None => (name, false),
    };
    let (blob, view) = name.split_once('-')?;
    Some((
        u64::from_str_radix(blob, 16).ok()?,
        u64::from_str_radix(view, 16).ok()?,
        compacted,
    ))
}

impl StateRef {
    fn file(&self, view: u64) -> StateFile {
        (self.blob, view, self.compacted)
    }
}

fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    Error::Storage(format!("cannot {what} {}: {e}", path.display()))
}

impl CheckpointStore {
    pub fn open(db: &crate::storage::Store) -> Result<CheckpointStore> {
        let states = db.dir().join("checkpoints");
        std::fs::create_dir_all(&states).map_err(|e| io_error("create", &states, e))?;
        Ok(CheckpointStore {
            tree: db.tree("checkpoints")?,
            db: db.clone(),
            states,
            pending: Arc::default(),
        })
    }

    fn state_path(&self, file: StateFile) -> std::path::PathBuf {
        self.states.join(state_name(file))
    }

    /// Writes and fsyncs one view's state, given in pieces (see
    /// `StatePieces`).
    fn write_state(&self, file: StateFile, pieces: &[Vec<u8>]) -> Result<()> {
        use std::io::Write;
        let path = self.state_path(file);
        let mut file = std::fs::File::create(&path).map_err(|e| io_error("create", &path, e))?;
        pieces
            .iter()
            .try_for_each(|piece| file.write_all(piece))
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("write", &path, e))
    }

    /// Makes the states' folder entries durable.
    fn sync_folder(&self) -> Result<()> {
        std::fs::File::open(&self.states)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error("sync", &self.states, e))
    }

    /// A view's state, checked against its length and checksum.
    pub fn read_state(&self, view: u64, state: &StateRef) -> Result<Vec<u8>> {
        let path = self.state_path(state.file(view));
        let bytes = std::fs::read(&path).map_err(|e| {
            corrupt(format!(
                "view {view}'s state in checkpoint {} cannot be read: {e}",
                state.blob
            ))
        })?;
        if bytes.len() as u64 != state.len || checksum(&bytes) != state.checksum {
            return Err(corrupt(format!(
                "view {view}'s state in checkpoint {} fails its checksum",
                state.blob
            )));
        }
        Ok(bytes)
    }

    /// Writes a compacted state of `view` folding in the states up to
    /// checkpoint `blob`'s, kept from garbage collection until
    /// [`CheckpointStore::named`] says a manifest names it.
    pub fn write_compacted(&self, view: u64, blob: u64, state: StatePieces) -> Result<StateRef> {
        let file = (blob, view, true);
        self.pending.lock().expect("checkpoint lock").insert(file);
        let (len, checksum) = (state.len() as u64, state.checksum());
        self.write_state(file, &state.into_pieces())?;
        self.sync_folder()?;
        Ok(StateRef {
            blob,
            len,
            checksum,
            compacted: true,
        })
    }

    /// A compacted state is named by the manifest about to be written, or
    /// dropped: from now on it lives as long as a kept manifest names it
    /// (if none does, the next garbage collection removes it).
    pub fn settle(&self, view: u64, state: &StateRef) {
        self.pending
            .lock()
            .expect("checkpoint lock")
            .remove(&state.file(view));
    }

    fn remove_state(&self, file: StateFile) -> Result<()> {
        let path = self.state_path(file);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let json = serde_json::to_vec(manifest).map_err(|e| Error::Internal(e.to_string()))?;
        let mut value = checksum(&json).to_le_bytes().to_vec();
        value.extend_from_slice(&json);
        self.tree.insert(manifest_key(manifest.id), value)?;
        self.db.flush()
    }

    /// Every stored manifest, newest first; a damaged one as an error.
    fn manifests(&self) -> Result<Vec<(u64, Result<Manifest>)>> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(b"m").rev() {
            let (key, value) = entry?;
            let id = key
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt("a manifest key is malformed".into()))?;
            out.push((id, parse_manifest(&value)));
        }
        Ok(out)
    }

    /// Removes manifests beyond the newest [`KEEP`], and every state file
    /// no kept manifest names (those of expired checkpoints, and those of
    /// a checkpoint whose manifest never followed: a crash in between).
    fn collect_garbage(&self) -> Result<()> {
        let manifests = self.manifests()?;
        let mut live: BTreeSet<StateFile> = manifests
            .iter()
            .take(KEEP)
            .filter_map(|(_, m)| m.as_ref().ok())
            .flat_map(|m| {
                m.views
                    .iter()
                    .flat_map(|v| v.chain().map(|s| s.file(v.view)))
            })
            .collect();
        // Held through the sweep: a compacted state is added to `pending`
        // before its file is created, so it is either kept or not there yet.
        let pending = self.pending.lock().expect("checkpoint lock");
        live.extend(pending.iter());
        for (id, _) in manifests.iter().skip(KEEP) {
            self.tree.remove(manifest_key(*id))?;
        }
        let entries =
            std::fs::read_dir(&self.states).map_err(|e| io_error("list", &self.states, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &self.states, e))?;
            let name = entry.file_name();
            if let Some(file) = parse_state_name(&name.to_string_lossy()) {
                if !live.contains(&file) {
                    self.remove_state(file)?;
                }
            }
        }
        Ok(())
    }
}

fn parse_manifest(value: &[u8]) -> Result<Manifest> {
    if value.len() < 8 {
        return Err(corrupt("a manifest is truncated".into()));
    }
    let (sum, json) = value.split_at(8);
    if sum != checksum(json).to_le_bytes() {
        return Err(corrupt("the manifest fails its checksum".into()));
    }
    serde_json::from_slice(json).map_err(|e| corrupt(format!("the manifest does not parse: {e}")))
}

/// What a restart restores from: the newest complete checkpoint.
#[derive(Debug)]
pub(super) struct Recovery {
    pub manifest: Manifest,
    pub started: Instant,
    /// Views restored from it so far.
    pub restored: BTreeSet<u64>,
}

impl Recovery {
    pub fn entry(&self, view: u64) -> Option<&ViewEntry> {
        self.manifest.views.iter().find(|v| v.view == view)
    }
}

/// Finds the newest checkpoint whose manifest and states all check out,
/// logging each damaged one passed over.
fn recover(store: &CheckpointStore, workers: usize) -> Result<(Option<Recovery>, Vec<Manifest>)> {
    let started = Instant::now();
    let mut chosen = None;
    let mut valid = Vec::new();
    for (id, manifest) in store.manifests()? {
        // Only the checkpoint to be used has its states read; older ones
        // are listed from their manifests.
        let checked = match chosen {
            Some(_) => manifest,
            None => manifest.and_then(|m| {
                for v in &m.views {
                    for state in v.chain() {
                        store.read_state(v.view, state)?;
                    }
                }
                Ok(m)
            }),
        };
        match checked {
            Ok(m) => {
                if chosen.is_none() {
                    chosen = Some(m.clone());
                }
                valid.push(m);
            }
            Err(e) if chosen.is_none() => tracing::warn!(
                checkpoint = id,
                error = %e,
                "checkpoint is damaged; using the one before it"
            ),
            Err(_) => {}
        }
    }
    let recovery = match chosen {
        Some(m) if m.build != build_identity() => {
            tracing::warn!(
                checkpoint = m.id,
                written_by = %m.build,
                this_build = %build_identity(),
                "checkpoint was written by another build; views over streams are rebuilt by reading their sources again"
            );
            None
        }
        Some(m) if m.workers != workers => {
            tracing::warn!(
                checkpoint = m.id,
                checkpoint_workers = m.workers,
                workers,
                "checkpoint was taken with another worker count; views over streams are rebuilt by reading their sources again"
            );
            None
        }
        Some(manifest) => Some(Recovery {
            manifest,
            started,
            restored: BTreeSet::new(),
        }),
        None => None,
    };
    Ok((recovery, valid))
}

/// A snapshot on its way to sled.
struct Job {
    manifest: Manifest,
    /// Each view's state, in pieces.
    states: Vec<(u64, Vec<Vec<u8>>)>,
    started: Instant,
}

/// The checkpoint side of the engine: settings, the writer thread, the
/// history, and the checkpoint a restart recovers from.
#[derive(Debug)]
pub(super) struct Checkpoints {
    pub interval: Option<Duration>,
    store: CheckpointStore,
    writer: Mutex<Option<Sender<Job>>>,
    /// Whether a checkpoint is being written; a new one waits its turn by
    /// being skipped, so snapshots never queue up.
    busy: Arc<(Mutex<bool>, Condvar)>,
    /// Set when a write failed: the next checkpoint writes every view's
    /// state again instead of naming states that may not be there.
    pub failed: Arc<std::sync::atomic::AtomicBool>,
    history: Arc<Mutex<VecDeque<CheckpointInfo>>>,
    next_id: std::sync::atomic::AtomicU64,
    pub recovery: Mutex<Option<Recovery>>,
    /// The view whose chain is being compacted, if any (one at a time) ...
    compacting: Arc<Mutex<Option<u64>>>,
    /// ... and the compactions done, for the next checkpoint to take in.
    compacted: Arc<Mutex<Vec<Compacted>>>,
}

/// A chain folded into one whole state beside the dataflow.
#[derive(Debug)]
pub(super) struct Compacted {
    pub view: u64,
    /// The checkpoint of the chain's last state: the whole state replaces
    /// the chain up to it.
    pub upto: u64,
    pub state: StateRef,
}

impl Checkpoints {
    pub fn open(
        db: &crate::storage::Store,
        interval: Option<Duration>,
        workers: usize,
    ) -> Result<Checkpoints> {
        let store = CheckpointStore::open(db)?;
        // Trouble reading checkpoints is not a reason not to start: views
        // over streams are then rebuilt from their sources.
        let newest = match store.manifests() {
            Ok(manifests) => manifests.first().map_or(0, |(id, _)| *id),
            Err(e) => {
                tracing::error!(error = %e, "cannot list checkpoints; none will be used");
                0
            }
        };
        if let Err(e) = store.collect_garbage() {
            tracing::error!(error = %e, "cannot remove old checkpoints");
        }
        let (recovery, valid) = recover(&store, workers).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read checkpoints; none will be used");
            (None, Vec::new())
        });
        let history = valid.iter().rev().map(CheckpointInfo::of).collect();
        Ok(Checkpoints {
            interval,
            store,
            writer: Mutex::new(None),
            busy: Arc::new((Mutex::new(false), Condvar::new())),
            failed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            history: Arc::new(Mutex::new(history)),
            next_id: std::sync::atomic::AtomicU64::new(newest + 1),
            recovery: Mutex::new(recovery),
            compacting: Arc::default(),
            compacted: Arc::default(),
        })
    }

    /// Whether `view`'s chain is being compacted.
    pub fn is_compacting(&self, view: u64) -> bool {
        *self.compacting.lock().expect("checkpoint lock") == Some(view)
    }

    /// Starts folding `view`'s `chain` into one whole state on a thread of
    /// its own, once the checkpoint writing its last state is written;
    /// `fold` makes the whole state of the chain's states. Returns `false`
    /// (doing nothing) while another compaction runs.
    pub fn compact(
        &self,
        view: u64,
        chain: Vec<StateRef>,
        fold: impl FnOnce(&[Vec<u8>]) -> Result<StatePieces> + Send + 'static,
    ) -> bool {
        let Some(upto) = chain.last().map(|s| s.blob) else {
            return false;
        };
        {
            let mut compacting = self.compacting.lock().expect("checkpoint lock");
            if compacting.is_some() {
                return false;
            }
            *compacting = Some(view);
        }
        let store = self.store.clone();
        let busy = Arc::clone(&self.busy);
        let compacting = Arc::clone(&self.compacting);
        let compacted = Arc::clone(&self.compacted);
        let spawned = std::thread::Builder::new()
            .name("eddydb-compact".into())
            .spawn(move || {
                wait_idle(&busy);
                let started = Instant::now();
                let folded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let states = chain
                        .iter()
                        .map(|s| store.read_state(view, s))
                        .collect::<Result<Vec<_>>>()?;
                    store.write_compacted(view, upto, fold(&states)?)
                }))
                .unwrap_or_else(|_| Err(Error::Internal("compaction panicked".into())));
                match folded {
                    Ok(state) => {
                        tracing::debug!(
                            view,
                            upto,
                            states = chain.len(),
                            bytes = state.len,
                            ms = started.elapsed().as_millis() as u64,
                            "checkpoint chain compacted"
                        );
                        compacted.lock().expect("checkpoint lock").push(Compacted {
                            view,
                            upto,
                            state,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(view, error = %e, "checkpoint chain not compacted");
                    }
                }
                *compacting.lock().expect("checkpoint lock") = None;
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a compaction");
            *self.compacting.lock().expect("checkpoint lock") = None;
            return false;
        }
        true
    }

    /// The compactions done since the last call.
    pub fn take_compacted(&self) -> Vec<Compacted> {
        std::mem::take(&mut *self.compacted.lock().expect("checkpoint lock"))
    }

    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
    }

    pub fn is_busy(&self) -> bool {
        *self.busy.0.lock().expect("checkpoint lock")
    }

    /// Waits until no checkpoint is being written.
    pub fn wait_idle(&self) {
        wait_idle(&self.busy);
    }

    pub fn history(&self) -> Vec<CheckpointInfo> {
        self.history
            .lock()
            .expect("checkpoint lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Hands a snapshot to the writer thread (started on first use).
    pub fn submit(
        &self,
        manifest: Manifest,
        states: Vec<(u64, Vec<Vec<u8>>)>,
        started: Instant,
    ) -> Result<()> {
        let mut writer = self.writer.lock().expect("checkpoint lock");
        if writer.is_none() {
            *writer = Some(self.spawn_writer()?);
        }
        *self.busy.0.lock().expect("checkpoint lock") = true;
        let job = Job {
            manifest,
            states,
            started,
        };
        if let Some(sender) = writer.as_ref() {
            if sender.send(job).is_err() {
                *self.busy.0.lock().expect("checkpoint lock") = false;
                return Err(Error::Internal("the checkpoint writer has stopped".into()));
            }
        }
        Ok(())
    }

    fn spawn_writer(&self) -> Result<Sender<Job>> {
        let (sender, jobs) = channel::<Job>();
        let store = self.store.clone();
        let busy = Arc::clone(&self.busy);
        let failed = Arc::clone(&self.failed);
        let history = Arc::clone(&self.history);
        let failpoint = failpoint();
        std::thread::Builder::new()
            .name("eddydb-checkpoint".into())
            .spawn(move || {
                for job in jobs {
                    let id = job.manifest.id;
                    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        write(&store, job, failpoint)
                    }))
                    .unwrap_or_else(|_| {
                        Err(Error::Internal("the checkpoint writer panicked".into()))
                    });
                    match written {
                        Ok(manifest) => {
                            let mut history = history.lock().expect("checkpoint lock");
                            history.push_back(CheckpointInfo::of(&manifest));
                            while history.len() > HISTORY {
                                history.pop_front();
                            }
                        }
                        Err(e) => {
                            failed.store(true, std::sync::atomic::Ordering::Release);
                            tracing::error!(checkpoint = id, error = %e, "checkpoint not written");
                        }
                    }
                    let (lock, idle) = &*busy;
                    *lock.lock().expect("checkpoint lock") = false;
                    idle.notify_all();
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the checkpoint writer: {e}")))?;
        Ok(sender)
    }
}

/// Waits until the writer is not `busy`.
fn wait_idle(busy: &(Mutex<bool>, Condvar)) {
    let (lock, idle) = busy;
    let mut busy = lock.lock().expect("checkpoint lock");
    while *busy {
        busy = idle.wait(busy).expect("checkpoint lock");
    }
}

/// Writes a checkpoint's states, flushes them, then writes its manifest.
fn write(store: &CheckpointStore, job: Job, failpoint: Option<u64>) -> Result<Manifest> {
    let Job {
        mut manifest,
        states,
        started,
    } = job;
    let mut written = 0u64;
    for (view, state) in &states {
        store.write_state((manifest.id, *view, false), state)?;
        written += state.iter().map(|p| p.len() as u64).sum::<u64>();
    }
    store.sync_folder()?;
    if failpoint == Some(manifest.id) {
        tracing::error!(
            checkpoint = manifest.id,
            "failpoint checkpoint-before-manifest: aborting"
        );
        std::process::abort();
    }
    manifest.bytes_written = written;
    manifest.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    store.write_manifest(&manifest)?;
    store.collect_garbage()?;
    tracing::debug!(
        checkpoint = manifest.id,
        epoch = manifest.epoch,
        bytes = written,
        ms = manifest.duration_ms,
        "checkpoint written"
    );
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(view: u64, blob: u64, bytes: &[u8]) -> ViewEntry {
        ViewEntry {
            view,
            graph: 0,
            state: StateRef {
                blob,
                len: bytes.len() as u64,
                checksum: checksum(bytes),
                compacted: false,
            },
            changes: Vec::new(),
            positions: BTreeMap::new(),
            watermarks: BTreeMap::new(),
        }
    }

    fn manifest(id: u64, views: Vec<ViewEntry>) -> Manifest {
        Manifest {
            id,
            build: build_identity(),
            epoch: id,
            taken_at_ms: 0,
            snapshot_ms: 0.0,
            duration_ms: 0.0,
            bytes_written: 0,
            workers: 1,
            views,
        }
    }

    /// View 1 changes at checkpoints 1 and 5 only, view 2 at every one:
    /// view 1's first state lives while a kept manifest names it, and goes
    /// with the last of them; a state without a manifest goes at once.
    #[test]
    fn a_shared_state_goes_with_the_last_manifest_naming_it() {
        let dir = std::env::temp_dir().join(format!("eddydb-checkpoint-gc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = crate::storage::Store::open(&dir).unwrap();
        let store = CheckpointStore::open(&db).unwrap();
        let quiet = |blob: u64| format!("view 1 as of {blob}").into_bytes();
        let busy = |blob: u64| format!("view 2 as of {blob}").into_bytes();
        let mut quiet_blob = 0;
        for id in 1..=7 {
            if id == 1 || id == 5 {
                quiet_blob = id;
                store.write_state((id, 1, false), &[quiet(id)]).unwrap();
            }
            store.write_state((id, 2, false), &[busy(id)]).unwrap();
            let views = vec![
                entry(1, quiet_blob, &quiet(quiet_blob)),
                entry(2, id, &busy(id)),
            ];
            store.write_manifest(&manifest(id, views)).unwrap();
            store.collect_garbage().unwrap();
            let first = store.read_state(1, &entry(1, 1, &quiet(1)).state);
            // Checkpoints 1..=4 name the first state; it goes when 4 does.
            assert_eq!(first.is_ok(), id < 7, "after checkpoint {id}");
        }
        let ids: Vec<u64> = store
            .manifests()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, vec![7, 6, 5]);
        assert!(store.read_state(2, &entry(2, 4, &busy(4)).state).is_err());
        assert!(store.read_state(1, &entry(1, 5, &quiet(5)).state).is_ok());
        // A crash between states and manifest: the states are swept.
        store.write_state((8, 2, false), &[busy(8)]).unwrap();
        store.collect_garbage().unwrap();
        assert!(store.read_state(2, &entry(2, 8, &busy(8)).state).is_err());
        drop(store);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
