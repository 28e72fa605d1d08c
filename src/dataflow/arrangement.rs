//! Arrangements: weighted rows indexed by a key. Joins keep each input in
//! one, and every materialized view keeps its output in one, which queries
//! scan and point lookups probe by key.
//!
//! Keys and rows are held in arrow's row format: compact, hashable, and
//! decoded back into Arrow columns only when read.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::Rows;
use datafusion::common::HashMap as FastMap;

use super::batch::ChangeBatch;
use super::row::{KeyBytes, KeyMap, RowCodec};
use super::state::{ChangeLog, StateReader, StateWriter};
use crate::error::{Error, Result};

/// Rows per batch when an arrangement is read out.
const SCAN_BATCH_ROWS: usize = 8192;

/// Rows with multiplicities, grouped by key. A row's weight never stays at
/// zero: it is removed.
#[derive(Debug)]
pub struct Arrangement {
    schema: SchemaRef,
    codec: RowCodec,
    map: KeyMap<Bucket>,
    distinct_rows: usize,
    bytes: usize,
    /// Vacant slots (see [`Arrangement::update`]) filled, ever.
    vacancies_filled: u64,
    /// Every change since the last checkpoint, logged once a checkpoint
    /// asked for them (see [`Arrangement::track_changes`]).
    changed: Option<ChangeLog>,
}

impl Arrangement {
    pub fn new(schema: SchemaRef) -> Result<Arrangement> {
        let codec = RowCodec::new(schema.fields().iter().map(|f| f.data_type()))?;
        Ok(Arrangement {
            schema,
            codec,
            map: KeyMap::default(),
            distinct_rows: 0,
            bytes: 0,
            vacancies_filled: 0,
            changed: None,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Encodes a batch's rows as this arrangement stores them.
    pub fn encode_rows(&self, batch: &RecordBatch) -> Result<Rows> {
        self.codec.encode(batch.columns())
    }

    /// Adds `batch`'s weights; `key(i)` is the encoded key of row `i`.
    pub fn update<'k>(
        &mut self,
        batch: &ChangeBatch,
        key: impl Fn(usize) -> &'k [u8],
    ) -> Result<()> {
        let rows = self.encode_rows(&batch.data)?;
        // Retractions before additions: when a change replaces the one row
        // under a key (an aggregate's group moving on), the retraction
        // leaves the key's slot vacant and the addition fills it, reusing
        // the map entry and the row's bytes. Slots left vacant are removed
        // after.
        let mut vacated = Vec::new();
        let filled_before = self.vacancies_filled;
        for additions in [false, true] {
            for (i, diff) in batch.diffs.iter().enumerate() {
                if (*diff > 0) == additions && self.add_row(key(i), rows.row(i).data(), *diff) {
                    vacated.push(i);
                }
            }
        }
        // Each fill takes one vacant slot: when every slot vacated was
        // filled again, none is left to look for.
        if self.vacancies_filled - filled_before == vacated.len() as u64 {
            return Ok(());
        }
        for i in vacated {
            self.remove_if_vacant(key(i));
        }
        Ok(())
    }

    /// Adds `diff` to one encoded row under `key`.
    pub fn update_row(&mut self, key: &[u8], row: &[u8], diff: i64) {
        if self.add_row(key, row, diff) {
            self.remove_if_vacant(key);
        }
    }

    /// Removes `key` if its bucket holds nothing (or only a vacant slot).
    fn remove_if_vacant(&mut self, key: &[u8]) {
        if self.map.get(key).is_some_and(Bucket::is_empty) {
            self.map.remove(key);
            self.bytes -= key.len() + 48;
        }
    }

    /// [`Arrangement::update_row`], except that a bucket whose one row
    /// goes to zero stays in the map as a vacant slot (returning `true`),
    /// for the caller to fill or remove.
    fn add_row(&mut self, key: &[u8], row: &[u8], diff: i64) -> bool {
        if diff == 0 {
            return false;
        }
        if let Some(log) = &mut self.changed {
            let entry = log.entry();
            entry.bytes(key);
            entry.bytes(row);
            entry.i64(diff);
            if log.outgrew(self.bytes) {
                self.changed = None;
            }
        }
        let (bucket, created) = self.map.get_or_insert_with(key, Bucket::default);
        if created {
            self.bytes += key.len() + 48;
        }
        match bucket.add(row, diff) {
            Added::Refilled => {
                self.bytes += row.len() + 24;
                self.distinct_rows += 1;
                self.vacancies_filled += 1;
            }
            Added::New => {
                self.bytes += row.len() + 24;
                self.distinct_rows += 1;
            }
            Added::Removed => {
                self.bytes -= row.len() + 24;
                self.distinct_rows -= 1;
            }
            Added::Changed => {}
        }
        if matches!(bucket, Bucket::One(_, 0)) {
            return true;
        }
        if bucket.is_empty() {
            self.map.remove(key);
            self.bytes -= key.len() + 48;
        }
        false
    }

    /// The rows under `key` with their multiplicities.
    pub fn get(&self, key: &[u8]) -> impl Iterator<Item = (&[u8], i64)> + '_ {
        self.map.get(key).into_iter().flat_map(Bucket::iter)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.map.keys().map(KeyBytes::as_slice)
    }

    /// Decodes encoded rows into a batch of this arrangement's schema.
    pub fn decode<'a>(&self, rows: impl IntoIterator<Item = &'a [u8]>) -> Result<RecordBatch> {
        let columns = self.codec.decode(rows)?;
        if columns.is_empty() || columns[0].is_empty() {
            return Ok(RecordBatch::new_empty(self.schema()));
        }
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }

    /// The rows under `key`, each repeated by its multiplicity.
    pub fn lookup(&self, key: &[u8]) -> Result<RecordBatch> {
        self.decode(expand(self.get(key)))
    }

    /// Every row, each repeated by its multiplicity.
    pub fn scan(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        let mut pending: Vec<&[u8]> = Vec::with_capacity(SCAN_BATCH_ROWS);
        for bucket in self.map.values() {
            for row in expand(bucket.iter()) {
                pending.push(row);
                if pending.len() == SCAN_BATCH_ROWS {
                    batches.push(self.decode(pending.drain(..))?);
                }
            }
        }
        if !pending.is_empty() {
            batches.push(self.decode(pending)?);
        }
        Ok(batches)
    }

    /// Rows counted with multiplicity.
    pub fn row_count(&self) -> u64 {
        self.map
            .values()
            .flat_map(|b| b.iter().map(|(_, n)| n.max(0) as u64))
            .sum()
    }

    pub fn distinct_rows(&self) -> usize {
        self.distinct_rows
    }

    /// Bytes held: keys, rows and the log of changes.
    pub fn state_bytes(&self) -> usize {
        self.bytes + self.changed.as_ref().map_or(0, ChangeLog::bytes)
    }

    /// Writes every key with its rows and weights, for a checkpoint.
    pub fn checkpoint(&self, state: &mut StateWriter) {
        state.reserve(self.bytes);
        state.len(self.map.len());
        for (key, bucket) in self.map.iter() {
            write_bucket(state, key, bucket);
        }
    }

    /// From now on, logs every change, for [`Arrangement::take_changes`].
    pub fn track_changes(&mut self) {
        self.changed = Some(ChangeLog::default());
    }

    /// The changes since the last checkpoint, in the order they were made
    /// (each key, row and difference), taken from here to be written
    /// (with [`ChangeLog::write_to`]) anywhere: `None` when changes are not
    /// logged, or when the log outgrew the arrangement (writing it whole is
    /// then smaller; see [`ChangeLog::outgrew`]).
    pub fn take_changes(&mut self) -> Option<ChangeLog> {
        let log = self.changed.as_mut()?;
        if log.outgrew(self.bytes) {
            return None;
        }
        Some(std::mem::take(log))
    }

    /// Applies the changes a log taken by [`Arrangement::take_changes`]
    /// wrote, in order.
    pub fn restore_changes(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        // A key's length, a row's length and a difference.
        for _ in 0..state.count(24)? {
            let key = state.bytes()?;
            let row = state.bytes()?;
            let diff = state.i64()?;
            self.update_row(key, row, diff);
        }
        Ok(())
    }

    /// Adds what [`Arrangement::checkpoint`] wrote (into an empty one).
    pub fn restore(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        // A key takes at least its length and its row count.
        let keys = state.count(16)?;
        self.map.reserve(keys);
        for _ in 0..keys {
            let key = state.bytes()?;
            for _ in 0..state.count(16)? {
                let row = state.bytes()?;
                let weight = state.i64()?;
                self.update_row(key, row, weight);
            }
        }
        Ok(())
    }

    /// Fails if a row's multiplicity went negative: a retraction of a row
    /// that was never there means the dataflow lost track (a bug).
    pub fn check_non_negative(&self) -> Result<()> {
        if self.map.values().any(|b| b.iter().any(|(_, n)| n < 0)) {
            return Err(Error::Internal(
                "an arrangement holds a row with negative multiplicity".into(),
            ));
        }
        Ok(())
    }
}

/// A key with its rows and their weights (matched out rather than
/// through `Bucket::iter`, which boxes: this runs once per key of a
/// checkpoint, under the commit lock).
fn write_bucket(state: &mut StateWriter, key: &[u8], bucket: &Bucket) {
    state.bytes(key);
    let mut write = |rows: usize, entries: &mut dyn Iterator<Item = (&KeyBytes, &i64)>| {
        state.len(rows);
        for (row, weight) in entries {
            state.bytes(row);
            state.i64(*weight);
        }
    };
    match bucket {
        Bucket::Empty => write(0, &mut std::iter::empty()),
        Bucket::One(row, weight) => write(1, &mut std::iter::once((row, weight))),
        Bucket::Few(entries) => write(entries.len(), &mut entries.iter().map(|(r, n)| (r, n))),
        Bucket::Many(map) => write(map.len(), &mut map.iter()),
    }
}

/// Each row as many times as its (positive) multiplicity.
pub fn expand<'a>(
    entries: impl Iterator<Item = (&'a [u8], i64)>,
) -> impl Iterator<Item = &'a [u8]> {
    entries.flat_map(|(row, n)| std::iter::repeat_n(row, n.max(0) as usize))
}

/// Rows under one key: the one row most keys hold (inline, no allocation),
/// a short list, or a map once the key holds many rows (a stream joined on a
/// key with a large fan-in).
#[derive(Debug, Default)]
enum Bucket {
    #[default]
    Empty,
    /// One row; weight 0 only for a slot just vacated within an update.
    One(KeyBytes, i64),
    Few(Vec<(KeyBytes, i64)>),
    Many(FastMap<KeyBytes, i64>),
}

/// Rows a key holds before its bucket becomes a map.
const FEW_ROWS: usize = 16;

enum Added {
    New,
    /// New, in a slot vacated within the same update.
    Refilled,
    Removed,
    Changed,
}

impl Bucket {
    fn add(&mut self, row: &[u8], diff: i64) -> Added {
        match self {
            Bucket::Empty => {
                *self = Bucket::One(KeyBytes::new(row), diff);
                Added::New
            }
            Bucket::One(r, n) if *n == 0 => {
                r.overwrite(row);
                *n = diff;
                Added::Refilled
            }
            Bucket::One(r, n) if r.as_slice() == row => {
                *n += diff;
                if *n == 0 {
                    return Added::Removed;
                }
                Added::Changed
            }
            Bucket::One(..) => {
                let Bucket::One(r, n) = std::mem::take(self) else {
                    unreachable!("matched above")
                };
                *self = Bucket::Few(vec![(r, n), (KeyBytes::new(row), diff)]);
                Added::New
            }
            Bucket::Few(entries) => match entries.iter().position(|(r, _)| r.as_slice() == row) {
                Some(pos) => {
                    entries[pos].1 += diff;
                    if entries[pos].1 == 0 {
                        entries.swap_remove(pos);
                        return Added::Removed;
                    }
                    Added::Changed
                }
                None => {
                    entries.push((KeyBytes::new(row), diff));
                    if entries.len() > FEW_ROWS {
                        *self = Bucket::Many(std::mem::take(entries).into_iter().collect());
                    }
                    Added::New
                }
            },
            Bucket::Many(map) => match map.get_mut(row) {
                Some(n) => {
                    *n += diff;
                    if *n == 0 {
                        map.remove(row);
                        return Added::Removed;
                    }
                    Added::Changed
                }
                None => {
                    map.insert(KeyBytes::new(row), diff);
                    Added::New
                }
            },
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Bucket::Empty => true,
            Bucket::One(_, n) => *n == 0,
            Bucket::Few(entries) => entries.is_empty(),
            Bucket::Many(map) => map.is_empty(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], i64)> + '_> {
        match self {
            Bucket::Empty => Box::new(std::iter::empty()),
            Bucket::One(r, n) => Box::new(std::iter::once((r.as_slice(), *n))),
            Bucket::Few(entries) => Box::new(entries.iter().map(|(r, n)| (r.as_slice(), *n))),
            Bucket::Many(map) => Box::new(map.iter().map(|(r, n)| (r.as_slice(), *n))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoded first (Int64) column of each row: the test key.
    fn first_column_keys(batch: &ChangeBatch) -> Rows {
        RowCodec::new([&datafusion::arrow::datatypes::DataType::Int64])
            .unwrap()
            .encode(&batch.data.columns()[..1])
            .unwrap()
    }

    #[test]
    fn retraction_removes_and_lookup_decodes() {
        let batch = ChangeBatch::from_pretty(
            " I T
             + 1 a
             + 1 b
             2 2 c",
        )
        .unwrap();
        let mut arr = Arrangement::new(batch.schema()).unwrap();
        let keys = first_column_keys(&batch);
        arr.update(&batch, |i| keys.row(i).data()).unwrap();
        assert_eq!(arr.row_count(), 4);
        let retract = ChangeBatch::from_pretty(" I T\n - 1 a").unwrap();
        let rkeys = first_column_keys(&retract);
        arr.update(&retract, |i| rkeys.row(i).data()).unwrap();
        let one = arr.lookup(keys.row(0).data()).unwrap();
        assert_eq!(ChangeBatch::inserts(one).to_lines(), vec!["+1 1, b"]);
        assert_eq!(arr.row_count(), 3);
    }

    #[test]
    fn a_replaced_row_reuses_its_slot_and_a_vacated_key_goes() {
        let update = |arr: &mut Arrangement, text: &str| {
            let batch = ChangeBatch::from_pretty(text).unwrap();
            let keys = first_column_keys(&batch);
            arr.update(&batch, |i| keys.row(i).data()).unwrap();
        };
        let first =
            ChangeBatch::from_pretty(" I T\n + 1 a\n + 2 long-enough-to-live-on-the-heap-1")
                .unwrap();
        let mut arr = Arrangement::new(first.schema()).unwrap();
        let bytes_empty = arr.state_bytes();
        update(
            &mut arr,
            " I T\n + 1 a\n + 2 long-enough-to-live-on-the-heap-1",
        );
        let bytes = arr.state_bytes();
        // An aggregate's group moving on: the old row out, the new one in.
        update(&mut arr, " I T\n + 2 long-enough-to-live-on-the-heap-2\n - 2 long-enough-to-live-on-the-heap-1\n - 1 a");
        assert_eq!(
            arr.state_bytes(),
            bytes - arr_bytes_of_key_and_row(&arr, 1, "a")
        );
        let mut lines = ChangeBatch::concat(
            &arr.schema(),
            &arr.scan()
                .unwrap()
                .into_iter()
                .map(ChangeBatch::inserts)
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .to_lines();
        lines.sort();
        assert_eq!(lines, vec!["+1 2, long-enough-to-live-on-the-heap-2"]);
        assert_eq!(arr.row_count(), 1);
        let key1 = first_column_keys(&ChangeBatch::from_pretty(" I T\n + 1 a").unwrap());
        assert!(!arr.contains_key(key1.row(0).data()));
        update(&mut arr, " I T\n - 2 long-enough-to-live-on-the-heap-2");
        assert_eq!((arr.row_count(), arr.state_bytes()), (0, bytes_empty));
    }

    /// What key `k` with the one row `(k, text)` costs.
    fn arr_bytes_of_key_and_row(arr: &Arrangement, k: i64, text: &str) -> usize {
        let batch = ChangeBatch::from_pretty(&format!(" I T\n + {k} {text}")).unwrap();
        let key = first_column_keys(&batch);
        let row = arr.encode_rows(&batch.data).unwrap();
        key.row(0).data().len() + 48 + row.row(0).data().len() + 24
    }

    #[test]
    fn checkpoint_restores_keys_rows_weights_and_accounting() {
        let batch = ChangeBatch::from_pretty(
            " I T
             + 1 a
             + 1 b
             3 2 c
             + 4 d",
        )
        .unwrap();
        let mut arr = Arrangement::new(batch.schema()).unwrap();
        let keys = first_column_keys(&batch);
        arr.update(&batch, |i| keys.row(i).data()).unwrap();
        let mut state = StateWriter::new();
        arr.checkpoint(&mut state);
        let bytes = state.into_bytes();
        let mut restored = Arrangement::new(batch.schema()).unwrap();
        let mut reader = StateReader::new(&bytes);
        restored.restore(&mut reader).unwrap();
        reader.finish().unwrap();
        assert_eq!(restored.row_count(), 6);
        assert_eq!(restored.distinct_rows(), arr.distinct_rows());
        assert_eq!(restored.state_bytes(), arr.state_bytes());
        let two = restored.lookup(keys.row(2).data()).unwrap();
        assert_eq!(
            ChangeBatch::inserts(two).to_lines(),
            vec!["+1 2, c", "+1 2, c", "+1 2, c"]
        );
        let mut cut = Arrangement::new(batch.schema()).unwrap();
        assert!(cut
            .restore(&mut StateReader::new(&bytes[..bytes.len() - 3]))
            .is_err());
    }

    /// A whole state and the changes after it, applied in turn, give the
    /// arrangement as it ended: keys added, changed, emptied and removed.
    #[test]
    fn changes_applied_to_a_whole_state_give_the_arrangement_as_it_ended() {
        let schema = ChangeBatch::from_pretty(" I T\n + 1 a").unwrap().schema();
        let mut arr = Arrangement::new(Arc::clone(&schema)).unwrap();
        let mut restored = Arrangement::new(schema).unwrap();
        let write = |arr: &mut Arrangement, whole: bool| {
            let mut state = StateWriter::new();
            if whole {
                arr.checkpoint(&mut state);
                arr.track_changes();
            } else {
                arr.take_changes().unwrap().write_to(&mut state);
            }
            state.into_bytes()
        };
        // Untracked: nothing to write as changes.
        assert!(arr.take_changes().is_none());
        // Keys that do not change: few enough change for changes to pay.
        for i in 0..40u8 {
            arr.update_row(&[b'f', i], b"filler", 1);
        }
        arr.update_row(b"k1", b"r1", 1);
        arr.update_row(b"k2", b"r2", 2);
        arr.update_row(b"k3", b"r3", 1);
        let whole = write(&mut arr, true);
        restored.restore(&mut StateReader::new(&whole)).unwrap();
        let mut chain = Vec::new();
        // Changed, gone, new, a second row, then gone and back.
        arr.update_row(b"k1", b"r1", 2);
        arr.update_row(b"k2", b"r2", -2);
        arr.update_row(b"k4", b"r4", 1);
        chain.push(write(&mut arr, false));
        arr.update_row(b"k4", b"r5", 3);
        arr.update_row(b"k3", b"r3", -1);
        arr.update_row(b"k3", b"r3", 1);
        chain.push(write(&mut arr, false));
        // Nothing changed: an empty list of keys.
        chain.push(write(&mut arr, false));
        for changes in &chain {
            let mut reader = StateReader::new(changes);
            restored.restore_changes(&mut reader).unwrap();
            reader.finish().unwrap();
        }
        let contents = |a: &Arrangement| {
            type Rows = Vec<(Vec<u8>, i64)>;
            let mut keys: Vec<(Vec<u8>, Rows)> = a
                .keys()
                .map(|k| {
                    let mut rows: Vec<_> = a.get(k).map(|(r, n)| (r.to_vec(), n)).collect();
                    rows.sort();
                    (k.to_vec(), rows)
                })
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(contents(&restored), contents(&arr));
        assert_eq!(restored.state_bytes(), arr.state_bytes());
        assert_eq!(restored.distinct_rows(), arr.distinct_rows());
        assert_eq!(chain[2].len(), 8);
        // Changes that outgrow the arrangement: it is written whole instead.
        for _ in 0..4 {
            for i in 0..40u8 {
                arr.update_row(&[b'f', i], b"filler", 1);
            }
        }
        assert!(arr.take_changes().is_none());
    }

    /// A key holding many rows: a change writes the row that changed, not
    /// every row of its key.
    #[test]
    fn changes_under_a_crowded_key_write_only_the_rows_changed() {
        let schema = ChangeBatch::from_pretty(" I T\n + 1 a").unwrap().schema();
        let mut arr = Arrangement::new(Arc::clone(&schema)).unwrap();
        for i in 0..100u8 {
            arr.update_row(b"crowded", &[b'r', i], 1);
        }
        let mut whole = StateWriter::new();
        arr.checkpoint(&mut whole);
        arr.track_changes();
        arr.update_row(b"crowded", b"new", 1);
        arr.update_row(b"crowded", &[b'r', 7], -1);
        let mut changes = StateWriter::new();
        arr.take_changes().unwrap().write_to(&mut changes);
        let changes = changes.into_bytes();
        let mut reader = StateReader::new(&changes);
        assert_eq!(reader.count(1).unwrap(), 2);
        let mut restored = Arrangement::new(schema).unwrap();
        restored
            .restore(&mut StateReader::new(&whole.into_bytes()))
            .unwrap();
        restored
            .restore_changes(&mut StateReader::new(&changes))
            .unwrap();
        let rows = |a: &Arrangement| {
            let mut rows: Vec<(Vec<u8>, i64)> =
                a.get(b"crowded").map(|(r, n)| (r.to_vec(), n)).collect();
            rows.sort();
            rows
        };
        assert_eq!(rows(&restored), rows(&arr));
        assert_eq!(rows(&arr).len(), 100);
        assert_eq!(restored.state_bytes(), arr.state_bytes());
    }

    /// One key taken from one row through a list and a map of rows and back
    /// to none, with a long row (held on the heap) among them.
    #[test]
    fn a_key_grows_and_shrinks_through_every_bucket_shape() {
        let schema = ChangeBatch::from_pretty(" I T\n + 1 a").unwrap().schema();
        let mut arr = Arrangement::new(schema).unwrap();
        let key = b"k".as_slice();
        let long = vec![7u8; 40];
        let rows: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 3]).chain([long]).collect();
        for (i, row) in rows.iter().enumerate() {
            arr.update_row(key, row, 2);
            assert_eq!(arr.get(key).count(), i + 1);
        }
        assert_eq!(arr.distinct_rows(), rows.len());
        let mut held: Vec<(Vec<u8>, i64)> = arr.get(key).map(|(r, n)| (r.to_vec(), n)).collect();
        held.sort();
        let mut expected: Vec<(Vec<u8>, i64)> = rows.iter().map(|r| (r.clone(), 2)).collect();
        expected.sort();
        assert_eq!(held, expected);
        for row in rows.iter().rev() {
            arr.update_row(key, row, -1);
            arr.update_row(key, row, -1);
        }
        assert!(!arr.contains_key(key));
        assert_eq!(arr.distinct_rows(), 0);
        assert_eq!(arr.state_bytes(), 0);
        arr.update_row(key, &rows[0], 1);
        arr.update_row(key, &rows[1], 1);
        arr.update_row(key, &rows[0], -1);
        assert_eq!(
            arr.get(key).collect::<Vec<_>>(),
            vec![(rows[1].as_slice(), 1)]
        );
    }
}
