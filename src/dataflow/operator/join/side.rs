//! One input of a join: its rows with their multiplicities (and, with a
//! filter, their match counts), indexed by encoded join key.
//!
//! A key holding one row (a table joined on its primary key: every key of
//! a context table) keeps it in the map slot itself, inline when short, so
//! such a key costs no allocation. A key with more rows gets a bucket: its
//! rows back to back in one byte arena with a small entry per row, so
//! storing a row costs no allocation of its own (a streamed side holds
//! millions). Each entry keeps its row's hash: finding a row compares
//! hashes first, and once a key holds more than a few rows a hash table of
//! entry positions takes over from the linear search.

use std::hash::BuildHasher;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::HashMap as FastMap;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::{take_columns, Encoded};
use crate::dataflow::row::{KeyBytes, KeyMap, RowCodec};
use crate::dataflow::state::{corrupt, StateReader, StateWriter};
use crate::error::Result;

/// Rows a key holds before its rows get a hash index.
const FEW_ROWS: usize = 16;

/// Estimated bytes a key costs beyond its encoding: its map slot (key and
/// value, 64 bytes), at a table load between a half and seven eighths.
const KEY_OVERHEAD_BYTES: usize = 96;

/// Estimated bytes a stored row costs beyond its encoding (entry, index).
const ROW_OVERHEAD_BYTES: usize = 48;

/// Garbage bytes a bucket tolerates before it compacts, beyond half its
/// arena.
const COMPACT_SLACK_BYTES: usize = 256;

/// The rows of one input, with multiplicities, indexed by encoded key.
#[derive(Debug)]
pub(super) struct Side {
    pub(super) schema: SchemaRef,
    /// `None` for an input without columns.
    codec: Option<RowCodec>,
    buckets: KeyMap<Slot>,
    hasher: DefaultHashBuilder,
    pub(super) bytes: usize,
}

/// How an update changed whether its key is held.
pub(super) enum Presence {
    Created,
    Removed,
    Same,
}

/// A stored row's multiplicity and, with a filter, the weighted count of
/// other-side rows it matches.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counts {
    pub(super) weight: i64,
    pub(super) matches: i64,
}

impl Side {
    pub(super) fn new(schema: SchemaRef) -> Result<Side> {
        let codec = match schema.fields().is_empty() {
            true => None,
            false => Some(RowCodec::new(
                schema.fields().iter().map(|f| f.data_type()),
            )?),
        };
        Ok(Side {
            schema,
            codec,
            buckets: KeyMap::default(),
            hasher: DefaultHashBuilder::default(),
            bytes: 0,
        })
    }

    pub(super) fn encode(&self, data: &RecordBatch) -> Result<Encoded> {
        Ok(match &self.codec {
            Some(codec) => Encoded::Rows(codec.encode(data.columns())?),
            None => Encoded::Empty,
        })
    }

    /// Decodes stored rows into columns. A row repeated in `rows` (one
    /// stored row joined with many probe rows) is decoded once.
    pub(super) fn decode(&self, rows: &[&[u8]]) -> Result<Vec<ArrayRef>> {
        let Some(codec) = &self.codec else {
            return Ok(Vec::new());
        };
        let mut slots: FastMap<usize, u32> = FastMap::default();
        let mut unique: Vec<&[u8]> = Vec::new();
        let indices: Vec<u32> = rows
            .iter()
            .map(|row| {
                *slots.entry(row.as_ptr() as usize).or_insert_with(|| {
                    unique.push(row);
                    (unique.len() - 1) as u32
                })
            })
            .collect();
        let columns = codec.decode(unique.iter().copied())?;
        if unique.len() == rows.len() {
            return Ok(columns);
        }
        take_columns(&columns, &UInt32Array::from(indices))
    }

    /// Every key held, encoded.
    pub(super) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.buckets.keys().map(KeyBytes::as_slice)
    }

    /// Drops `key` and every row under it.
    pub(super) fn remove_key(&mut self, key: &[u8]) {
        let Some(slot) = self.buckets.remove(key) else {
            return;
        };
        self.bytes -= key.len() + KEY_OVERHEAD_BYTES;
        let _ = slot.try_for_each(|row, _| {
            self.bytes -= row.len() + ROW_OVERHEAD_BYTES;
            Ok(())
        });
    }

    pub(super) fn holds(&self, key: &[u8]) -> bool {
        self.buckets.contains_key(key)
    }

    /// Calls `f` with every row under `key` and its counts. A row's slice
    /// is distinct from every other stored row's, so its address names it
    /// until the side changes.
    pub(super) fn for_each<'a>(
        &'a self,
        key: &[u8],
        f: impl FnMut(&'a [u8], Counts) -> Result<()>,
    ) -> Result<bool> {
        match self.buckets.get(key) {
            Some(bucket) => bucket.try_for_each(f).map(|()| true),
            None => Ok(false),
        }
    }

    /// The counts of `row` under `key`, if it is held.
    pub(super) fn counts_mut(&mut self, key: &[u8], row: &[u8]) -> Option<&mut Counts> {
        let hash = self.hasher.hash_one(row);
        self.buckets.get_mut(key)?.counts_mut(hash, row)
    }

    /// Adds `diff` to `row` under `key`; `matches` is the row's match count
    /// if it is new.
    pub(super) fn update(&mut self, key: &[u8], row: &[u8], diff: i64, matches: i64) -> Presence {
        if diff == 0 {
            return Presence::Same;
        }
        let hash = self.hasher.hash_one(row);
        let mut presence = Presence::Same;
        let (bucket, created) = self.buckets.get_or_insert_with(key, || Slot::EMPTY);
        if created {
            presence = Presence::Created;
            self.bytes += key.len() + KEY_OVERHEAD_BYTES;
        }
        match bucket.add(&self.hasher, hash, row, diff, matches) {
            Change::New => self.bytes += row.len() + ROW_OVERHEAD_BYTES,
            Change::Removed => self.bytes -= row.len() + ROW_OVERHEAD_BYTES,
            Change::Kept => {}
        }
        if bucket.is_empty() {
            self.buckets.remove(key);
            self.bytes -= key.len() + KEY_OVERHEAD_BYTES;
            presence = Presence::Removed;
        }
        presence
    }

    /// Every key with its rows (row, weight, match count).
    pub(super) fn write(&self, state: &mut StateWriter) {
        state.len(self.buckets.len());
        for (key, slot) in self.buckets.iter() {
            state.bytes(key);
            state.len(slot.len());
            let _ = slot.try_for_each(|row, counts| {
                state.bytes(row);
                state.i64(counts.weight);
                state.i64(counts.matches);
                Ok(())
            });
        }
    }

    /// Adds what `write` wrote to an empty side, row by row as updates do,
    /// so arenas, indexes and byte counts are rebuilt alike.
    pub(super) fn read(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        // A key's length and its row count.
        for _ in 0..state.count(16)? {
            let key = state.bytes()?;
            // A row's length, its weight and its match count.
            for _ in 0..state.count(24)? {
                let row = state.bytes()?;
                let (weight, matches) = (state.i64()?, state.i64()?);
                let before = self.bytes;
                self.update(key, row, weight, matches);
                // A new row always adds to the bytes; a zero weight or a row
                // held twice would not.
                if self.bytes <= before {
                    return Err(corrupt("a join row of no weight or held twice".into()));
                }
            }
        }
        Ok(())
    }
}

/// The rows under one key: one row in place, or a bucket of them.
#[derive(Debug)]
enum Slot {
    /// A weight of zero is no row (a slot just made, before its first row).
    One {
        row: KeyBytes,
        counts: Counts,
    },
    Many(Box<Bucket>),
}

impl Slot {
    const EMPTY: Slot = Slot::One {
        row: KeyBytes::EMPTY,
        counts: Counts {
            weight: 0,
            matches: 0,
        },
    };

    /// Adds `diff` to `row` (whose hash is `hash`); a second distinct row
    /// turns the slot into a bucket.
    fn add(
        &mut self,
        hasher: &DefaultHashBuilder,
        hash: u64,
        row: &[u8],
        diff: i64,
        matches: i64,
    ) -> Change {
        match self {
            Slot::One { row: held, counts } if counts.weight == 0 => {
                held.overwrite(row);
                *counts = Counts {
                    weight: diff,
                    matches,
                };
                Change::New
            }
            Slot::One { row: held, counts } if held.as_slice() == row => {
                counts.weight += diff;
                match counts.weight {
                    0 => Change::Removed,
                    _ => Change::Kept,
                }
            }
            Slot::One { row: held, counts } => {
                let mut bucket = Box::<Bucket>::default();
                let first = held.as_slice();
                bucket.add(hasher.hash_one(first), first, counts.weight, counts.matches);
                let change = bucket.add(hash, row, diff, matches);
                *self = Slot::Many(bucket);
                change
            }
            Slot::Many(bucket) => bucket.add(hash, row, diff, matches),
        }
    }

    fn counts_mut(&mut self, hash: u64, row: &[u8]) -> Option<&mut Counts> {
        match self {
            Slot::One { row: held, counts } if counts.weight != 0 && held.as_slice() == row => {
                Some(counts)
            }
            Slot::One { .. } => None,
            Slot::Many(bucket) => {
                let position = bucket.find(hash, row)?;
                Some(&mut bucket.entries[position].counts)
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Slot::One { counts, .. } => counts.weight == 0,
            Slot::Many(bucket) => bucket.is_empty(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Slot::One { counts, .. } => usize::from(counts.weight != 0),
            Slot::Many(bucket) => bucket.entries.len(),
        }
    }

    fn try_for_each<'a>(&'a self, mut f: impl FnMut(&'a [u8], Counts) -> Result<()>) -> Result<()> {
        match self {
            Slot::One { row, counts } if counts.weight != 0 => f(row.as_slice(), *counts),
            Slot::One { .. } => Ok(()),
            Slot::Many(bucket) => bucket.try_for_each(f),
        }
    }
}

/// Rows under one key, back to back in `data`.
#[derive(Debug, Default)]
struct Bucket {
    data: Vec<u8>,
    entries: Vec<Entry>,
    /// Positions in `entries` by row hash, once there are more than
    /// `FEW_ROWS` of them.
    index: Option<HashTable<usize>>,
    /// Bytes of `data` no entry refers to any more.
    garbage: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    start: usize,
    len: usize,
    counts: Counts,
}

enum Change {
    New,
    Removed,
    Kept,
}

impl Bucket {
    fn row(&self, entry: &Entry) -> &[u8] {
        &self.data[entry.start..entry.start + entry.len]
    }

    fn find(&self, hash: u64, row: &[u8]) -> Option<usize> {
        let same = |entry: &Entry| entry.hash == hash && self.row(entry) == row;
        match &self.index {
            Some(index) => index.find(hash, |p| same(&self.entries[*p])).copied(),
            None => self.entries.iter().position(same),
        }
    }

    fn add(&mut self, hash: u64, row: &[u8], diff: i64, matches: i64) -> Change {
        if let Some(position) = self.find(hash, row) {
            let counts = &mut self.entries[position].counts;
            counts.weight += diff;
            if counts.weight != 0 {
                return Change::Kept;
            }
            self.remove(position);
            return Change::Removed;
        }
        let position = self.entries.len();
        self.entries.push(Entry {
            hash,
            start: self.data.len(),
            len: row.len(),
            counts: Counts {
                weight: diff,
                matches,
            },
        });
        self.data.extend_from_slice(row);
        let entries = &self.entries;
        match &mut self.index {
            Some(index) => {
                index.insert_unique(hash, position, |p| entries[*p].hash);
            }
            None if entries.len() > FEW_ROWS => {
                let mut index = HashTable::with_capacity(entries.len() * 2);
                for (p, entry) in entries.iter().enumerate() {
                    index.insert_unique(entry.hash, p, |q| entries[*q].hash);
                }
                self.index = Some(index);
            }
            None => {}
        }
        Change::New
    }

    /// Removes the entry at `position`; the last entry takes its place.
    fn remove(&mut self, position: usize) {
        let last = self.entries.len() - 1;
        let removed = self.entries[position];
        if let Some(index) = &mut self.index {
            if let Ok(slot) = index.find_entry(removed.hash, |p| *p == position) {
                slot.remove();
            }
            if last != position {
                let moved = self.entries[last].hash;
                if let Some(p) = index.find_mut(moved, |p| *p == last) {
                    *p = position;
                }
            }
        }
        self.entries.swap_remove(position);
        self.garbage += removed.len;
        if self.entries.is_empty() {
            self.data = Vec::new();
            self.index = None;
            self.garbage = 0;
        } else if self.garbage > COMPACT_SLACK_BYTES && self.garbage * 2 > self.data.len() {
            self.compact();
        }
    }

    /// Rewrites `data` with the live rows only.
    fn compact(&mut self) {
        let mut data = Vec::with_capacity(self.data.len() - self.garbage);
        for entry in &mut self.entries {
            let start = data.len();
            data.extend_from_slice(&self.data[entry.start..entry.start + entry.len]);
            entry.start = start;
        }
        self.data = data;
        self.garbage = 0;
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn try_for_each<'a>(&'a self, mut f: impl FnMut(&'a [u8], Counts) -> Result<()>) -> Result<()> {
        self.entries
            .iter()
            .try_for_each(|entry| f(self.row(entry), entry.counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(bucket: &Bucket) -> Vec<(Vec<u8>, i64)> {
        let mut out = Vec::new();
        bucket
            .try_for_each(|row, counts| {
                out.push((row.to_vec(), counts.weight));
                Ok(())
            })
            .unwrap();
        out.sort();
        out
    }

    /// Many rows under one key, removed in an order that moves entries
    /// around, with compaction: every lookup still finds its row.
    #[test]
    fn bucket_keeps_rows_through_index_and_compaction() {
        let hasher = DefaultHashBuilder::default();
        let mut bucket = Bucket::default();
        let row = |i: u32| format!("row-{i:04}").into_bytes();
        for i in 0..200 {
            let r = row(i);
            assert!(matches!(
                bucket.add(hasher.hash_one(&r), &r, 1, 0),
                Change::New
            ));
        }
        assert!(bucket.index.is_some());
        let r = row(7);
        assert!(matches!(
            bucket.add(hasher.hash_one(&r), &r, 2, 0),
            Change::Kept
        ));
        for i in (0..200).filter(|i| i % 3 != 0) {
            let r = row(i);
            let weight = if i == 7 { -3 } else { -1 };
            assert!(matches!(
                bucket.add(hasher.hash_one(&r), &r, weight, 0),
                Change::Removed
            ));
        }
        assert!(bucket.garbage * 2 <= bucket.data.len() + COMPACT_SLACK_BYTES);
        let expected: Vec<(Vec<u8>, i64)> = (0..200)
            .filter(|i| i % 3 == 0)
            .map(|i| (row(i), 1))
            .collect();
        assert_eq!(rows(&bucket), expected);
        for i in (0..200).filter(|i| i % 3 == 0) {
            let r = row(i);
            assert!(bucket.find(hasher.hash_one(&r), &r).is_some(), "row {i}");
        }
        assert!(bucket.find(hasher.hash_one(row(1)), &row(1)).is_none());
    }
}
