//! One table's rows: Arrow chunks in memory, each row tagged with a durable
//! row id, a primary-key index when the table has a key, and the sled log
//! every change is written to before it becomes visible. A large log record
//! (a COPY) is written to a file of its own beside sled, which the log entry
//! names: sled keeps every value it is given in memory, and the rows are in
//! memory already.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::{Arc, RwLock};

// hashbrown with a seeded fast hash: the key index is the hot path of COPY
// and point lookups.
use datafusion::common::HashSet as FastSet;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt64Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::arrow::util::display::array_value_to_string;

use super::log::LogRecord;
use crate::catalog::TableDef;
use crate::dataflow::row::KeyMap;
use crate::dataflow::state::{checksum, Checksum};
use crate::error::{Error, Result};

/// Rows per chunk: small inserts are merged into the last chunk up to this.
const CHUNK_ROWS: usize = 8192;
/// Rewrite the log once it holds this many deleted rows more than live ones.
const LOG_COMPACT_SLACK: u64 = 100_000;
/// The key, in a table's log tree, of the read positions of the source that
/// feeds the table (log records have 8-byte keys, so it cannot clash).
const SOURCE_POSITIONS_KEY: &[u8] = b"source_positions";
/// Log compaction writes the live rows in records of about this size.
const COMPACT_RECORD_BYTES: usize = 64 * 1024 * 1024;
/// Log records of this many bytes or more go to a file of their own.
const FILE_RECORD_BYTES: usize = 256 * 1024;
/// The first byte of a log entry that names a record file (a record's
/// own first byte is its format version, 1).
const IN_FILE: u8 = 0xF1;

/// A statement's effect on one table, committed atomically.
#[derive(Debug, Default)]
pub struct Change {
    pub deletes: Vec<u64>,
    /// Rows in the table's user schema.
    pub inserts: Vec<RecordBatch>,
}

/// A change made durable by `Table::prepare`, not yet visible.
#[derive(Debug)]
pub struct PreparedChange {
    record: LogRecord,
    /// With a primary key: the inserted rows' encoded keys to their row
    /// ids, built while checking them; `apply` adds it to the index (or
    /// makes it the index, when that is empty: a first load).
    keys: Option<KeyMap<u64>>,
    /// The deleted rows' values, in the user schema.
    deleted: RecordBatch,
    empty: bool,
}

impl PreparedChange {
    pub fn inserted_rows(&self) -> u64 {
        self.record
            .inserts
            .iter()
            .map(|b| b.num_rows() as u64)
            .sum()
    }

    /// The rows deleted (user schema).
    pub fn deleted(&self) -> &RecordBatch {
        &self.deleted
    }

    /// The rows inserted (user schema, without row ids).
    pub fn inserted(&self) -> impl Iterator<Item = RecordBatch> + '_ {
        self.record.inserts.iter().map(|b| {
            let user: Vec<usize> = (0..b.num_columns() - 1).collect();
            b.project(&user).expect("row id is the last column")
        })
    }
}

#[derive(Debug)]
pub struct Table {
    def: Arc<TableDef>,
    schema: SchemaRef,
    storage_schema: SchemaRef,
    tree: sled::Tree,
    db: sled::Db,
    /// Where large log records go; `None` keeps them all in sled.
    files: Option<PathBuf>,
    state: RwLock<TableState>,
    /// Held by a writing statement from matching its rows to committing, so
    /// concurrent UPDATEs of one row apply one after the other.
    writer: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct TableState {
    chunks: Vec<Chunk>,
    next_row_id: u64,
    live_rows: u64,
    pk: Option<PkIndex>,
    next_log_seq: u64,
    dead_rows_in_log: u64,
}

#[derive(Debug, Clone)]
struct Chunk {
    /// Storage schema: user columns then the row id, ids ascending.
    batch: RecordBatch,
    /// `None` while every row is live.
    live: Option<BooleanArray>,
    live_count: usize,
}

#[derive(Debug)]
struct PkIndex {
    columns: Vec<usize>,
    converter: RowConverter,
    /// Encoded keys to row ids.
    map: KeyMap<u64>,
}

impl Table {
    /// Opens a table and rebuilds its rows by replaying its log.
    pub fn open(
        def: TableDef,
        tree: sled::Tree,
        db: sled::Db,
        files: Option<PathBuf>,
    ) -> Result<Table> {
        let schema = def.schema();
        let storage_schema = def.storage_schema();
        let pk = PkIndex::new(&def, &schema)?;
        let table = Table {
            def: Arc::new(def),
            schema,
            storage_schema,
            tree,
            db,
            files,
            state: RwLock::new(TableState {
                pk,
                ..TableState::default()
            }),
            writer: tokio::sync::Mutex::new(()),
        };
        table.replay()?;
        Ok(table)
    }

    pub fn def(&self) -> &TableDef {
        &self.def
    }

    pub fn def_arc(&self) -> Arc<TableDef> {
        Arc::clone(&self.def)
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    pub fn storage_schema(&self) -> SchemaRef {
        Arc::clone(&self.storage_schema)
    }

    /// The read positions stored by the source feeding this table with its
    /// last change (see [`Table::prepare`]).
    pub fn source_positions(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(SOURCE_POSITIONS_KEY)?.map(|v| v.to_vec()))
    }

    /// [`Table::write_lock`] for a thread outside the async runtime.
    pub fn write_lock_blocking(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.blocking_lock()
    }

    /// Serialises writing statements on this table (see `writer`).
    pub async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.lock().await
    }

    pub fn row_count(&self) -> u64 {
        self.state.read().expect("table lock").live_rows
    }

    /// The live rows, in storage schema (row id last), as of now.
    pub fn scan(&self) -> Result<Vec<RecordBatch>> {
        let state = self.state.read().expect("table lock");
        state.chunks.iter().map(Chunk::live_rows).collect()
    }

    /// The row whose primary key equals `key` (one-element arrays, key column
    /// order), in storage schema; `None` if absent. Errors if no primary key.
    pub fn lookup(&self, key: &[ArrayRef]) -> Result<Option<RecordBatch>> {
        let state = self.state.read().expect("table lock");
        let pk = state
            .pk
            .as_ref()
            .ok_or_else(|| Error::Internal("lookup on a table without primary key".into()))?;
        let rows = pk.converter.convert_columns(key)?;
        let Some(id) = pk.map.get(rows.row(0).as_ref()) else {
            return Ok(None);
        };
        let (c, r) = state
            .locate(*id)
            .ok_or_else(|| Error::Internal(format!("index points at missing row {id}")))?;
        Ok(Some(state.chunks[c].batch.slice(r, 1)))
    }

    /// The row ids of the rows whose primary keys are `keys` (columns of
    /// the key, in key order), `None` where no row has that key.
    pub fn row_ids_by_key(&self, keys: &[ArrayRef]) -> Result<Vec<Option<u64>>> {
        let state = self.state.read().expect("table lock");
        let pk = state
            .pk
            .as_ref()
            .ok_or_else(|| Error::Internal("key lookup on a table without primary key".into()))?;
        let rows = pk.converter.convert_columns(keys)?;
        Ok(rows
            .iter()
            .map(|row| pk.map.get(row.as_ref()).copied())
            .collect())
    }

    /// Commits a change: checks keys, writes it to the log, flushes, then
    /// makes it visible. Returns the number of rows inserted.
    pub fn commit(&self, change: Change) -> Result<u64> {
        let prepared = self.prepare(change, None)?;
        let inserted = prepared.inserted_rows();
        self.apply(prepared)?;
        Ok(inserted)
    }

    /// First half of a commit: checks the change and makes it durable, but
    /// not yet visible. The caller must `apply` it before preparing another
    /// change of this table (the engine's commit lock sees to that), so the
    /// table cannot change in between.
    ///
    /// `positions`, for a table fed by a source, are the source's read
    /// positions after this change: written in the same atomic sled batch as
    /// the change, so a restart resumes exactly after the rows it kept.
    pub fn prepare(&self, change: Change, positions: Option<&[u8]>) -> Result<PreparedChange> {
        let state = self.state.read().expect("table lock");
        // Rows are matched before this lock is taken; a concurrent statement
        // may have deleted one since. Checked before logging, so the log
        // never holds a delete replay could not apply.
        let mut unique = HashSet::with_capacity(change.deletes.len());
        for id in &change.deletes {
            if state.locate(*id).is_none() || !unique.insert(*id) {
                return Err(Error::SerializationFailure(
                    "could not serialize access due to concurrent update".into(),
                ));
            }
        }
        let started = std::time::Instant::now();
        let inserts: Vec<&RecordBatch> =
            change.inserts.iter().filter(|b| b.num_rows() > 0).collect();
        // Keys are encoded and hashed once: checked here, indexed in `apply`.
        let keys = match &state.pk {
            Some(pk) => {
                Some(pk.check_unique(&self.def, &change.deletes, &inserts, state.next_row_id)?)
            }
            None => None,
        };
        let deleted = state.rows_by_id(&change.deletes, self.schema())?;
        let mut record = LogRecord {
            deletes: change.deletes,
            inserts: Vec::with_capacity(change.inserts.len()),
        };
        let mut inserted = 0u64;
        for batch in &inserts {
            let first = state.next_row_id + inserted;
            record.inserts.push(self.with_row_ids(batch, first)?);
            inserted += batch.num_rows() as u64;
        }
        let seq = state.next_log_seq;
        drop(state);
        let empty = record.deletes.is_empty() && inserted == 0;
        if !empty || positions.is_some() {
            let logged = (|| {
                let mut batch = sled::Batch::default();
                if !empty {
                    let entry = self.store_record(seq, &record)?;
                    batch.insert(&seq.to_be_bytes(), entry);
                }
                if let Some(positions) = positions {
                    batch.insert(SOURCE_POSITIONS_KEY, positions);
                }
                self.tree.apply_batch(batch)?;
                self.db.flush()?;
                Ok(())
            })();
            if let Err(e) = logged {
                // The entry may still reach disk with sled's next flush,
                // naming a record file: the number is not used again.
                let mut state = self.state.write().expect("table lock");
                state.next_log_seq = state.next_log_seq.max(seq + 1);
                return Err(e);
            }
        }
        tracing::debug!(
            table = %self.def.name,
            rows = inserted,
            durable_ms = started.elapsed().as_millis() as u64,
            "commit prepared"
        );
        Ok(PreparedChange {
            record,
            keys,
            deleted,
            empty,
        })
    }

    /// Second half of a commit: makes a prepared change visible.
    pub fn apply(&self, prepared: PreparedChange) -> Result<()> {
        if prepared.empty {
            return Ok(());
        }
        let mut state = self.state.write().expect("table lock");
        state.next_log_seq += 1;
        state.dead_rows_in_log += prepared.record.deletes.len() as u64;
        state.apply(prepared.record, prepared.keys)?;
        if state.dead_rows_in_log > state.live_rows + LOG_COMPACT_SLACK {
            self.compact_log(&mut state)?;
        }
        Ok(())
    }

    fn with_row_ids(&self, batch: &RecordBatch, first: u64) -> Result<RecordBatch> {
        let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(
            first..first + batch.num_rows() as u64,
        ));
        let mut columns = batch.columns().to_vec();
        columns.push(ids);
        Ok(RecordBatch::try_new(self.storage_schema(), columns)?)
    }

    fn replay(&self) -> Result<()> {
        let mut state = self.state.write().expect("table lock");
        let mut in_files = HashSet::new();
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            if key.as_ref() == SOURCE_POSITIONS_KEY {
                continue;
            }
            let seq = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                Error::Storage(format!(
                    "corrupt log key {:02x?} in table {}",
                    key.as_ref(),
                    self.def.name
                ))
            })?);
            if value.first() == Some(&IN_FILE) {
                in_files.insert(seq);
            }
            let record = self.load_record(seq, &value)?;
            state.dead_rows_in_log += record.deletes.len() as u64;
            state.apply(record, None)?;
            state.next_log_seq = seq + 1;
        }
        // Files of records whose commit did not complete.
        self.remove_files(|seq| !in_files.contains(&seq))?;
        if state.dead_rows_in_log > state.live_rows + LOG_COMPACT_SLACK {
            self.compact_log(&mut state)?;
        }
        Ok(())
    }

    /// What to put in the log for record `seq`: the record itself, or,
    /// when it is large, a reference to a file it is written to and synced
    /// (a crash before the log entry is committed leaves a file no entry
    /// names, removed at the next start).
    fn store_record(&self, seq: u64, record: &LogRecord) -> Result<Vec<u8>> {
        let mut sink = RecordSink {
            table: self,
            seq,
            buf: Vec::new(),
            sum: Checksum::default(),
            file: None,
        };
        let encoded = record.encode_into(&mut sink);
        sink.finish(encoded)
    }

    fn record_error(&self, e: impl std::fmt::Display) -> Error {
        let dir = self.files.as_deref().unwrap_or(Path::new(""));
        Error::Storage(format!(
            "cannot write a log record of table {} to {}: {e}",
            self.def.name,
            dir.display()
        ))
    }

    /// The record of log entry `seq`, read from its file if it names one.
    fn load_record(&self, seq: u64, entry: &[u8]) -> Result<LogRecord> {
        if entry.first() != Some(&IN_FILE) {
            return LogRecord::decode(entry);
        }
        let corrupt = |what: String| {
            Error::Storage(format!("table {}: log record {seq}: {what}", self.def.name))
        };
        let field = |at: usize| {
            entry
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| corrupt("a truncated log entry".into()))
        };
        let (len, sum) = (field(1)?, field(9)?);
        let dir = self
            .files
            .as_ref()
            .ok_or_else(|| corrupt("names a file, but the table has no file directory".into()))?;
        let path = record_path(dir, seq);
        let bytes =
            std::fs::read(&path).map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
        if bytes.len() as u64 != len || checksum(&bytes) != sum {
            return Err(corrupt(format!(
                "{} does not hold the record the log names ({} bytes, {len} expected)",
                path.display(),
                bytes.len()
            )));
        }
        LogRecord::decode(&bytes)
    }

    /// Removes the record files of the log entries `gone` picks.
    fn remove_files(&self, gone: impl Fn(u64) -> bool) -> Result<()> {
        let Some(dir) = &self.files else {
            return Ok(());
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::Storage(format!("{}: {e}", dir.display()))),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let seq = name
                .to_str()
                .and_then(|n| n.strip_suffix(".record"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(seq) = seq.filter(|s| gone(*s)) {
                std::fs::remove_file(entry.path())
                    .map_err(|e| Error::Storage(format!("{}: {e}", entry.path().display())))?;
                tracing::debug!(table = %self.def.name, seq, "removed a log record file");
            }
        }
        Ok(())
    }

    /// Replaces the log by records of the live rows (chunks gathered up to
    /// `COMPACT_RECORD_BYTES` each, so a large table is a few files, not a
    /// file per chunk), atomically.
    fn compact_log(&self, state: &mut TableState) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.tree.iter().keys() {
            let key = key?;
            if key.as_ref() != SOURCE_POSITIONS_KEY {
                batch.remove(key);
            }
        }
        let first_kept = state.next_log_seq;
        let mut record = LogRecord::default();
        let mut held = 0;
        for (i, chunk) in state.chunks.iter().enumerate() {
            let rows = chunk.live_rows()?;
            held += rows.get_array_memory_size();
            record.inserts.push(rows);
            if held >= COMPACT_RECORD_BYTES || i + 1 == state.chunks.len() {
                let seq = state.next_log_seq;
                state.next_log_seq += 1;
                let entry = self.store_record(seq, &std::mem::take(&mut record))?;
                batch.insert(&seq.to_be_bytes(), entry);
                held = 0;
            }
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        self.remove_files(|seq| seq < first_kept)?;
        state.dead_rows_in_log = 0;
        tracing::debug!(table = %self.def.name, "compacted table log");
        Ok(())
    }
}

/// Bytes per write of a record file.
const FILE_WRITE_BYTES: usize = 4 << 20;

/// Alignment of a write that bypasses the page cache (addresses, lengths
/// and file offsets): the largest logical block size in use.
const DIRECT_ALIGN: usize = 4096;
/// Bytes per write that bypasses the page cache.
const DIRECT_WRITE_BYTES: usize = 8 << 20;

/// Creates a record file, written past the page cache where the file system
/// allows it (`O_DIRECT`; `true` then). A record is read once, at the next
/// start, so caching it only costs: on a virtual machine, filling fresh
/// page-cache memory was most of the time of writing a large COPY's record.
fn create_record_file(path: &Path) -> std::io::Result<(std::fs::File, bool)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        // Refused by file systems without it (tmpfs): written through the
        // page cache instead.
        if let Ok(file) = direct {
            return Ok((file, true));
        }
    }
    Ok((std::fs::File::create(path)?, false))
}

/// The record file's writer thread, for a file opened with `O_DIRECT`:
/// pieces are gathered into aligned writes of [`DIRECT_WRITE_BYTES`]; the
/// last partial block goes through a second, ordinary handle, which is
/// returned (a sync of either handle syncs the file). A file system that
/// took the flag but refuses the writes (`EINVAL`) gets the rest through
/// the ordinary handle.
fn write_direct(
    file: std::fs::File,
    path: &Path,
    pieces: &std::sync::mpsc::Receiver<Vec<u8>>,
    give_back: &std::sync::mpsc::Sender<Vec<u8>>,
) -> std::io::Result<std::fs::File> {
    let mut out = DirectFile::new(file, path);
    for piece in pieces {
        out.write(&piece)?;
        let _ = give_back.send(piece);
    }
    out.finish()
}

/// See [`write_direct`].
struct DirectFile<'a> {
    file: std::fs::File,
    path: &'a Path,
    /// Holds an aligned run of [`DIRECT_WRITE_BYTES`] from `start`.
    staging: Vec<u8>,
    start: usize,
    held: usize,
    /// Bytes written to the file so far.
    offset: u64,
    /// Set once direct writes were refused: everything goes here.
    plain: Option<std::fs::File>,
}

impl<'a> DirectFile<'a> {
    fn new(file: std::fs::File, path: &'a Path) -> DirectFile<'a> {
        let staging = vec![0u8; DIRECT_WRITE_BYTES + DIRECT_ALIGN];
        let start = staging
            .as_ptr()
            .align_offset(DIRECT_ALIGN)
            .min(DIRECT_ALIGN);
        DirectFile {
            file,
            path,
            staging,
            start,
            held: 0,
            offset: 0,
            plain: None,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if let Some(plain) = &mut self.plain {
                return plain.write_all(data);
            }
            let take = (DIRECT_WRITE_BYTES - self.held).min(data.len());
            let at = self.start + self.held;
            self.staging[at..at + take].copy_from_slice(&data[..take]);
            self.held += take;
            data = &data[take..];
            if self.held == DIRECT_WRITE_BYTES {
                self.write_aligned()?;
            }
        }
        Ok(())
    }

    /// Writes the whole blocks held, keeping the partial one.
    fn write_aligned(&mut self) -> std::io::Result<()> {
        let aligned = self.held / DIRECT_ALIGN * DIRECT_ALIGN;
        let run = &self.staging[self.start..self.start + aligned];
        match self.file.write_all(run) {
            Ok(()) => {
                self.offset += aligned as u64;
                let (start, held) = (self.start, self.held);
                self.staging
                    .copy_within(start + aligned..start + held, start);
                self.held -= aligned;
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let mut plain = self.ordinary()?;
                plain.write_all(&self.staging[self.start..self.start + self.held])?;
                self.offset += self.held as u64;
                self.held = 0;
                self.plain = Some(plain);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// An ordinary handle on the file, at the end of what is written.
    fn ordinary(&self) -> std::io::Result<std::fs::File> {
        let mut file = std::fs::OpenOptions::new().write(true).open(self.path)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(self.offset))?;
        Ok(file)
    }

    fn finish(mut self) -> std::io::Result<std::fs::File> {
        if self.plain.is_none() {
            self.write_aligned()?;
        }
        if let Some(plain) = self.plain {
            return Ok(plain);
        }
        let mut tail = self.ordinary()?;
        tail.write_all(&self.staging[self.start..self.start + self.held])?;
        Ok(tail)
    }
}

/// Where a log record is encoded to: memory, until it reaches
/// [`FILE_RECORD_BYTES`] in a table with a file directory; from there a
/// file, written by a thread of its own in pieces of [`FILE_WRITE_BYTES`]
/// while the encoding goes on (a large COPY's record is written as fast
/// as it is made, and never held whole in memory).
struct RecordSink<'a> {
    table: &'a Table,
    seq: u64,
    buf: Vec<u8>,
    sum: Checksum,
    file: Option<FileWriter>,
}

struct FileWriter {
    dir: PathBuf,
    pieces: std::sync::mpsc::SyncSender<Vec<u8>>,
    /// Pieces written, back for reuse.
    spent: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: std::thread::JoinHandle<std::io::Result<std::fs::File>>,
    len: u64,
}

impl RecordSink<'_> {
    /// Starts the record's file with what is encoded so far.
    fn start_file(&mut self) -> std::io::Result<()> {
        let Some(dir) = self.table.files.clone() else {
            return Ok(());
        };
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            // The new directories' names must be durable too.
            for parent in dir.ancestors().skip(1).take(2) {
                std::fs::File::open(parent)?.sync_all()?;
            }
        }
        let path = record_path(&dir, self.seq);
        let (file, direct) = create_record_file(&path)?;
        let (pieces, to_write) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (give_back, spent) = std::sync::mpsc::channel();
        let written = path.clone();
        let thread = std::thread::Builder::new()
            .name("eddydb-record".into())
            .spawn(move || match direct {
                true => write_direct(file, &written, &to_write, &give_back),
                false => {
                    let mut file = file;
                    for piece in to_write {
                        file.write_all(&piece)?;
                        let _ = give_back.send(piece);
                    }
                    Ok(file)
                }
            })
            .inspect_err(|_| {
                // No log entry will name it.
                let _ = std::fs::remove_file(&path);
            })?;
        self.file = Some(FileWriter {
            dir,
            pieces,
            spent,
            thread,
            len: 0,
        });
        self.send()
    }

    /// Hands the bytes encoded since the last piece to the file's thread.
    fn send(&mut self) -> std::io::Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let mut next = file.spent.try_recv().unwrap_or_default();
        next.clear();
        next.reserve(FILE_WRITE_BYTES);
        let piece = std::mem::replace(&mut self.buf, next);
        file.len += piece.len() as u64;
        file.pieces
            .send(piece)
            .map_err(|_| std::io::Error::other("the record file's writer stopped"))
    }

    /// The log entry, once the record (`encoded` says whether its encoding
    /// went through) is durable.
    fn finish(mut self, encoded: Result<()>) -> Result<Vec<u8>> {
        let Some(_) = &self.file else {
            encoded?;
            return Ok(self.buf);
        };
        let sent = match encoded.is_ok() {
            true => self.send(),
            false => Ok(()),
        };
        let file = self.file.take().expect("checked above");
        drop(file.pieces);
        let durable = (|| {
            // The writer's own error says most: it is the first reported.
            let written = file
                .thread
                .join()
                .map_err(|_| self.table.record_error("the writer thread panicked"))?
                .map_err(|e| self.table.record_error(e))?;
            encoded?;
            sent.map_err(|e| self.table.record_error(e))?;
            written
                .sync_all()
                .and_then(|()| std::fs::File::open(&file.dir)?.sync_all())
                .map_err(|e| self.table.record_error(e))
        })();
        if let Err(e) = durable {
            // No log entry will name the partial file: it goes now rather
            // than at the next start.
            let _ = std::fs::remove_file(record_path(&file.dir, self.seq));
            return Err(e);
        }
        let mut entry = Vec::with_capacity(17);
        entry.push(IN_FILE);
        entry.extend_from_slice(&file.len.to_le_bytes());
        entry.extend_from_slice(&self.sum.finish().to_le_bytes());
        Ok(entry)
    }
}

impl Write for RecordSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.sum.update(data);
        self.buf.extend_from_slice(data);
        match &self.file {
            None if self.buf.len() >= FILE_RECORD_BYTES && self.table.files.is_some() => {
                self.start_file()?
            }
            Some(_) if self.buf.len() >= FILE_WRITE_BYTES => self.send()?,
            _ => {}
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TableState {
    /// Applies a logged change in memory (no checks: it is already durable).
    /// `keys`, when given, index `record.inserts` by primary key
    /// ([`PreparedChange`]); without them (at replay) the keys are encoded
    /// here.
    fn apply(&mut self, record: LogRecord, keys: Option<KeyMap<u64>>) -> Result<()> {
        self.delete(&record.deletes)?;
        let indexed = keys.is_some();
        if let Some(pk) = &mut self.pk {
            match keys {
                Some(keys) => pk.merge(keys),
                // Room for all the keys at once: growing batch by batch
                // would hold the old and the new table together.
                None => pk
                    .map
                    .reserve(record.inserts.iter().map(RecordBatch::num_rows).sum()),
            }
        }
        for batch in record.inserts {
            self.append(batch, indexed)?;
        }
        Ok(())
    }

    fn delete(&mut self, ids: &[u64]) -> Result<()> {
        let mut by_chunk: HashMap<usize, Vec<usize>> = HashMap::new();
        for id in ids {
            let (c, r) = self
                .locate(*id)
                .ok_or_else(|| Error::Storage(format!("delete of unknown row {id}")))?;
            by_chunk.entry(c).or_default().push(r);
        }
        for (c, rows) in &by_chunk {
            if let Some(pk) = &mut self.pk {
                pk.remove(&self.chunks[*c].batch, rows)?;
            }
            self.chunks[*c].mark_deleted(rows);
            self.live_rows -= rows.len() as u64;
        }
        let mut touched: Vec<usize> = by_chunk.into_keys().collect();
        touched.sort_unstable_by(|a, b| b.cmp(a));
        for c in touched {
            if self.chunks[c].live_count == 0 {
                self.chunks.remove(c);
            } else if self.chunks[c].live_count * 2 < self.chunks[c].batch.num_rows() {
                let rows = self.chunks[c].live_rows()?;
                self.chunks[c] = Chunk::new(rows);
            }
        }
        Ok(())
    }

    /// Adds a batch of rows (with their row ids); `indexed`: the primary
    /// key index has them already.
    fn append(&mut self, batch: RecordBatch, indexed: bool) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if let Some(pk) = self.pk.as_mut().filter(|_| !indexed) {
            let keys = pk.keys(&batch)?;
            pk.insert(&keys, &batch);
        }
        let ids = row_ids(&batch);
        self.next_row_id = self.next_row_id.max(ids.value(ids.len() - 1) + 1);
        self.live_rows += batch.num_rows() as u64;
        let merge = self.chunks.last().is_some_and(|last| {
            last.live.is_none() && last.batch.num_rows() + batch.num_rows() <= CHUNK_ROWS
        });
        if merge {
            let last = self.chunks.pop().expect("checked above");
            let merged = concat_batches(&batch.schema(), [&last.batch, &batch])?;
            self.chunks.push(Chunk::new(merged));
        } else {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = CHUNK_ROWS.min(batch.num_rows() - offset);
                self.chunks.push(Chunk::new(batch.slice(offset, len)));
                offset += len;
            }
        }
        Ok(())
    }

    /// The rows with these ids, in `schema` (the user columns).
    fn rows_by_id(&self, ids: &[u64], schema: SchemaRef) -> Result<RecordBatch> {
        if ids.is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        let mut by_chunk: std::collections::BTreeMap<usize, Vec<u32>> = Default::default();
        for id in ids {
            let (c, r) = self
                .locate(*id)
                .ok_or_else(|| Error::Internal(format!("row {id} vanished")))?;
            by_chunk.entry(c).or_default().push(r as u32);
        }
        let user: Vec<usize> = (0..schema.fields().len()).collect();
        let mut parts = Vec::with_capacity(by_chunk.len());
        for (c, rows) in by_chunk {
            let idx = datafusion::arrow::array::UInt32Array::from(rows);
            let taken = datafusion::arrow::compute::take_record_batch(&self.chunks[c].batch, &idx)?;
            parts.push(taken.project(&user)?);
        }
        Ok(concat_batches(&schema, &parts)?)
    }

    /// Chunk and row of a row id: chunks and the ids inside them ascend.
    fn locate(&self, id: u64) -> Option<(usize, usize)> {
        let c = self
            .chunks
            .partition_point(|chunk| row_ids(&chunk.batch).value(0) <= id)
            .checked_sub(1)?;
        let ids = row_ids(&self.chunks[c].batch);
        let r = ids.values().binary_search(&id).ok()?;
        self.chunks[c].is_live(r).then_some((c, r))
    }
}

/// The file of log record `seq` in a table's record directory.
pub fn record_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.record"))
}

fn row_ids(batch: &RecordBatch) -> &UInt64Array {
    batch
        .column(batch.num_columns() - 1)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("row id column is UInt64")
}

impl Chunk {
    fn new(batch: RecordBatch) -> Chunk {
        let live_count = batch.num_rows();
        Chunk {
            batch,
            live: None,
            live_count,
        }
    }

    fn is_live(&self, row: usize) -> bool {
        self.live.as_ref().is_none_or(|m| m.value(row))
    }

    fn mark_deleted(&mut self, rows: &[usize]) {
        let mut mask: Vec<bool> = match &self.live {
            Some(m) => m.values().iter().collect(),
            None => vec![true; self.batch.num_rows()],
        };
        for r in rows {
            if mask[*r] {
                mask[*r] = false;
                self.live_count -= 1;
            }
        }
        self.live = Some(BooleanArray::from(mask));
    }

    fn live_rows(&self) -> Result<RecordBatch> {
        Ok(match &self.live {
            None => self.batch.clone(),
            Some(mask) => filter_record_batch(&self.batch, mask)?,
        })
    }
}

impl PkIndex {
    fn new(def: &TableDef, schema: &SchemaRef) -> Result<Option<PkIndex>> {
        if def.primary_key.is_empty() {
            return Ok(None);
        }
        let fields = def
            .primary_key
            .iter()
            .map(|i| SortField::new(schema.field(*i).data_type().clone()))
            .collect();
        Ok(Some(PkIndex {
            columns: def.primary_key.clone(),
            converter: RowConverter::new(fields)?,
            map: KeyMap::default(),
        }))
    }

    fn keys(&self, batch: &RecordBatch) -> Result<Rows> {
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|i| Arc::clone(batch.column(*i)))
            .collect();
        Ok(self.converter.convert_columns(&columns)?)
    }

    fn insert(&mut self, keys: &Rows, batch: &RecordBatch) {
        // `TableState::apply` made room for every key of the change.
        let ids = row_ids(batch);
        for (i, key) in keys.iter().enumerate() {
            self.map.insert(key.data(), ids.value(i));
        }
    }

    /// Adds the keys of a prepared change (none of which is in the index:
    /// `check_unique` saw to it, and the change's deletes are applied).
    /// Into an empty index they move whole; otherwise the smaller map goes
    /// into the larger one.
    fn merge(&mut self, mut keys: KeyMap<u64>) {
        if keys.len() > self.map.len() {
            std::mem::swap(&mut self.map, &mut keys);
        }
        if keys.is_empty() {
            return;
        }
        self.map.reserve(keys.len());
        for (key, id) in keys.iter() {
            self.map.insert(key.as_slice(), *id);
        }
    }

    fn remove(&mut self, batch: &RecordBatch, rows: &[usize]) -> Result<()> {
        let keys = self.keys(batch)?;
        for r in rows {
            self.map.remove(keys.row(*r).as_ref());
        }
        Ok(())
    }

    /// A key may be inserted if it is new, or if its current row is deleted
    /// by the same change (UPDATE of the key, DELETE then INSERT); within
    /// one statement a key seen twice is a duplicate too. Returns the
    /// inserted keys with the row ids they will have (numbered from
    /// `first_id`, batch after batch).
    fn check_unique(
        &self,
        def: &TableDef,
        deletes: &[u64],
        inserts: &[&RecordBatch],
        first_id: u64,
    ) -> Result<KeyMap<u64>> {
        let deleted: FastSet<u64> = deletes.iter().copied().collect();
        let mut fresh = KeyMap::default();
        fresh.reserve(inserts.iter().map(|b| b.num_rows()).sum());
        let mut id = first_id;
        for batch in inserts {
            let keys = self.keys(batch)?;
            for (i, key) in keys.iter().enumerate() {
                let key = key.data();
                let taken = !self.map.is_empty()
                    && self.map.get(key).is_some_and(|id| !deleted.contains(id));
                if taken || !fresh.get_or_insert_with(key, || id).1 {
                    return Err(self.duplicate(def, batch, i));
                }
                id += 1;
            }
        }
        Ok(fresh)
    }

    fn duplicate(&self, def: &TableDef, batch: &RecordBatch, row: usize) -> Error {
        let names: Vec<&str> = self
            .columns
            .iter()
            .map(|i| def.columns[*i].name.as_str())
            .collect();
        let values: Vec<String> = self
            .columns
            .iter()
            .map(|i| array_value_to_string(batch.column(*i), row).unwrap_or_default())
            .collect();
        Error::UniqueViolation {
            constraint: def.pk_constraint_name(),
            detail: format!(
                "Key ({})=({}) already exists.",
                names.join(", "),
                values.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ColumnDef;
    use crate::types::SqlType;
    use datafusion::arrow::array::{Int32Array, StringArray};

    fn def() -> TableDef {
        let col = |name: &str, sql_type| ColumnDef {
            name: name.into(),
            sql_type,
            not_null: false,
            default: None,
        };
        TableDef {
            id: 1,
            name: "t".into(),
            columns: vec![col("k", SqlType::Integer), col("v", SqlType::Text)],
            primary_key: vec![0],
        }
    }

    fn rows(def: &TableDef, keys: &[i32]) -> RecordBatch {
        let values: Vec<String> = keys.iter().map(|k| format!("v{k}")).collect();
        RecordBatch::try_new(
            def.schema(),
            vec![
                Arc::new(Int32Array::from(keys.to_vec())),
                Arc::new(StringArray::from(values)),
            ],
        )
        .unwrap()
    }

    fn keys(table: &Table) -> Vec<i32> {
        let mut out: Vec<i32> = table
            .scan()
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        out.sort();
        out
    }

    fn id_of(table: &Table, key: i32) -> u64 {
        let row = table
            .lookup(&[Arc::new(Int32Array::from(vec![key]))])
            .unwrap()
            .unwrap();
        row_ids(&row).value(0)
    }

    #[test]
    fn replay_rebuilds_rows_keys_and_ids() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("rows/1").unwrap();
        let table = Table::open(def(), tree.clone(), db.clone(), None).unwrap();
        table
            .commit(Change {
                deletes: vec![],
                inserts: vec![rows(&def(), &[1, 2, 3])],
            })
            .unwrap();
        let two = id_of(&table, 2);
        // UPDATE of a key: delete and insert in one change.
        table
            .commit(Change {
                deletes: vec![two],
                inserts: vec![rows(&def(), &[20])],
            })
            .unwrap();
        let dup = table.commit(Change {
            deletes: vec![],
            inserts: vec![rows(&def(), &[1])],
        });
        assert!(matches!(dup, Err(Error::UniqueViolation { .. })));
        let stale = table.commit(Change {
            deletes: vec![two],
            inserts: vec![],
        });
        assert!(matches!(stale, Err(Error::SerializationFailure(_))));
        assert_eq!(keys(&table), vec![1, 3, 20]);
        let reopened = Table::open(def(), tree, db, None).unwrap();
        assert_eq!(keys(&reopened), vec![1, 3, 20]);
        assert_eq!(id_of(&reopened, 20), id_of(&table, 20));
        assert!(reopened
            .lookup(&[Arc::new(Int32Array::from(vec![2]))])
            .unwrap()
            .is_none());
    }

    /// The key index a change brings is merged either way round (into an
    /// empty index, larger or smaller than it), a key may be re-inserted by
    /// the change deleting it, and a key twice in one change is refused.
    #[test]
    fn prepared_keys_merge_into_the_index() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("rows/1").unwrap();
        let table = Table::open(def(), tree.clone(), db.clone(), None).unwrap();
        let insert = |keys: &[i32]| {
            table.commit(Change {
                deletes: vec![],
                inserts: vec![rows(&def(), keys)],
            })
        };
        insert(&[1, 2, 3]).unwrap();
        insert(&(10..20).collect::<Vec<_>>()).unwrap();
        insert(&[4]).unwrap();
        let twice = insert(&[5, 6, 5]);
        assert!(
            matches!(twice, Err(Error::UniqueViolation { .. })),
            "{twice:?}"
        );
        assert!(matches!(
            insert(&[7, 12]),
            Err(Error::UniqueViolation { .. })
        ));
        // The same key again, by the change that deletes its row.
        let three = id_of(&table, 3);
        table
            .commit(Change {
                deletes: vec![three],
                inserts: vec![rows(&def(), &[3])],
            })
            .unwrap();
        assert_ne!(id_of(&table, 3), three);
        let mut all: Vec<i32> = vec![1, 2, 3, 4];
        all.extend(10..20);
        assert_eq!(keys(&table), all);
        for key in &all {
            let row = table.lookup(&[Arc::new(Int32Array::from(vec![*key]))]);
            let row = row.unwrap().expect("every key is indexed");
            let found = row.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
            assert_eq!(found.value(0), *key);
        }
        let reopened = Table::open(def(), tree, db, None).unwrap();
        for key in &all {
            assert_eq!(id_of(&reopened, *key), id_of(&table, *key));
        }
    }

    /// A fresh directory for a test's record files.
    fn record_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("eddydb-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn log_compaction_keeps_contents() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("rows/1").unwrap();
        let dir = record_dir("compaction");
        let files = Some(dir.clone());
        let table = Table::open(def(), tree.clone(), db.clone(), files.clone()).unwrap();
        let all: Vec<i32> = (0..120_000).collect();
        table
            .commit(Change {
                deletes: vec![],
                inserts: vec![rows(&def(), &all)],
            })
            .unwrap();
        // The large record went to a file; its log entry only names it.
        assert_eq!(files_in(&dir), vec![format!("{:020}.record", 0)]);
        let entry = tree.get(0u64.to_be_bytes()).unwrap().unwrap();
        assert_eq!((entry.len(), entry[0]), (17, IN_FILE));
        let ids: Vec<u64> = table
            .scan()
            .unwrap()
            .iter()
            .flat_map(|b| row_ids(b).values().to_vec())
            .collect();
        // Deleting all but ten rows exceeds the slack and compacts the log.
        table
            .commit(Change {
                deletes: ids[10..].to_vec(),
                inserts: vec![],
            })
            .unwrap();
        assert_eq!(tree.len(), 1);
        // The ten rows left fit in the log: no file is needed any more.
        assert!(files_in(&dir).is_empty());
        let reopened = Table::open(def(), tree, db, files).unwrap();
        assert_eq!(keys(&reopened), (0..10).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A large record is read back from its file; a file no committed
    /// entry names (a crash between the two writes) is removed at open,
    /// and a damaged file fails the open rather than losing rows.
    #[test]
    fn large_records_live_in_files_the_log_names() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("rows/1").unwrap();
        let dir = record_dir("record-files");
        let files = Some(dir.clone());
        let table = Table::open(def(), tree.clone(), db.clone(), files.clone()).unwrap();
        let many: Vec<i32> = (0..50_000).collect();
        for batch in [&many[..25_000], &[-1, -2], &many[25_000..]] {
            table
                .commit(Change {
                    deletes: vec![],
                    inserts: vec![rows(&def(), batch)],
                })
                .unwrap();
        }
        let named = vec![format!("{:020}.record", 0), format!("{:020}.record", 2)];
        assert_eq!(files_in(&dir), named);
        std::fs::write(record_path(&dir, 3), b"an uncommitted record").unwrap();
        let reopened = Table::open(def(), tree.clone(), db.clone(), files.clone()).unwrap();
        assert_eq!(keys(&reopened), keys(&table));
        assert_eq!(reopened.row_count(), 50_002);
        assert_eq!(files_in(&dir), named);
        drop(reopened);

        let mut damaged = std::fs::read(record_path(&dir, 2)).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(record_path(&dir, 2), damaged).unwrap();
        let error = Table::open(def(), tree, db, files).unwrap_err().to_string();
        assert!(error.contains("does not hold the record"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Records written past the page cache hold exactly the bytes given,
    /// whatever the pieces' sizes: aligned writes, then an unaligned tail.
    #[test]
    fn direct_record_files_hold_exactly_what_was_written() {
        let dir = record_dir("direct");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, total) in [
            0,
            1,
            4095,
            4096,
            DIRECT_WRITE_BYTES + 12_345,
            3 * DIRECT_WRITE_BYTES,
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.join(format!("{i}.record"));
            let (file, direct) = create_record_file(&path).unwrap();
            let bytes: Vec<u8> = (0..total).map(|b| (b * 7 % 251) as u8).collect();
            let (pieces, to_write) = std::sync::mpsc::sync_channel(4);
            let (give_back, _spent) = std::sync::mpsc::channel();
            let writer = std::thread::spawn({
                let path = path.clone();
                move || match direct {
                    true => write_direct(file, &path, &to_write, &give_back),
                    false => Ok(file),
                }
            });
            // Odd piece sizes, so blocks straddle pieces.
            for piece in bytes.chunks(1_000_003) {
                pieces.send(piece.to_vec()).unwrap();
            }
            drop(pieces);
            let mut file = writer.join().unwrap().unwrap();
            if !direct {
                file.write_all(&bytes).unwrap();
            }
            file.sync_all().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{total} bytes");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A record whose file cannot be written fails its commit, changes
    /// nothing, and leaves no file behind; the next commit takes the next
    /// sequence number and everything reopens.
    #[cfg(unix)]
    #[test]
    fn a_record_file_that_cannot_be_written_fails_cleanly() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("rows/1").unwrap();
        let dir = record_dir("record-full");
        std::fs::create_dir_all(&dir).unwrap();
        let files = Some(dir.clone());
        let table = Table::open(def(), tree.clone(), db.clone(), files.clone()).unwrap();
        // Writes to the first record's file fail with ENOSPC. (Made after
        // the open, which removes files no log entry names.)
        std::os::unix::fs::symlink("/dev/full", record_path(&dir, 0)).unwrap();
        let many: Vec<i32> = (0..50_000).collect();
        let failed = table.commit(Change {
            deletes: vec![],
            inserts: vec![rows(&def(), &many)],
        });
        let error = failed.unwrap_err().to_string();
        assert!(error.contains("cannot write a log record"), "{error}");
        assert_eq!(table.row_count(), 0);
        assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
        assert!(tree.is_empty());
        table
            .commit(Change {
                deletes: vec![],
                inserts: vec![rows(&def(), &many)],
            })
            .unwrap();
        assert_eq!(files_in(&dir), vec![format!("{:020}.record", 1)]);
        let reopened = Table::open(def(), tree, db, files).unwrap();
        assert_eq!(reopened.row_count(), 50_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
