//! A view's rows kept decoded, for reads of every row.
//!
//! A view's output is an arrangement of encoded rows: a read of every row
//! decodes all of them, under the view's read lock and the engine's read
//! gate, which holds back the next publication for as long. A view read
//! whole more than once keeps the batches such a read decoded, and adds
//! the rows each publication inserts (already Arrow: nothing to decode); a
//! read then only clones the batches' handles.
//!
//! An image comes in two kinds. A plain one holds no index: a publication
//! taking rows back drops it, since finding them would cost as much as
//! decoding. That suits views only ever added to (a stream scored row by
//! row, a log). A keyed one, for views whose key holds one row at most (an
//! aggregate by its groups), knows each key's row: a retraction marks the
//! row dead, the replacement is added at the end, and reads leave the dead
//! rows out. Once dead rows outnumber the living, the image is rewritten
//! without them.

use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use datafusion::arrow::row::Rows;

use crate::dataflow::row::{KeyMap, RowCodec};
use crate::dataflow::ChangeBatch;
use crate::error::Result;

/// Rows of the publications since the last compaction are joined into one
/// batch once they reach this many; a rewrite cuts batches of this size.
const COMPACT_ROWS: usize = 8192;

/// A keyed image is rewritten once it holds at least this many dead rows
/// and more dead rows than living ones.
const REWRITE_DEAD_ROWS: u64 = 4096;

/// Memory of one entry of a keyed image's index besides its key bytes
/// (the position, the map slot, its share of empty slots).
const INDEX_ENTRY_BYTES: usize = 48;

#[derive(Debug)]
pub(super) struct ScanImage {
    schema: SchemaRef,
    /// Compacted batches (owned arrays, not slices of larger ones), the
    /// first holding positions `starts[0]..`, and so on.
    batches: Vec<RecordBatch>,
    starts: Vec<u64>,
    /// Rows added since the last compaction, as published; they hold the
    /// positions just before `added`.
    tail: Vec<RecordBatch>,
    tail_rows: usize,
    /// Positions handed out: the next row added takes position `added`.
    added: u64,
    /// Keyed images: each key's row position, and one bit per position
    /// set once its row is taken back.
    index: Option<KeyMap<u64>>,
    dead: Vec<u64>,
    dead_rows: u64,
    batch_bytes: usize,
    index_bytes: usize,
}

impl ScanImage {
    /// A plain image of the rows a read decoded.
    pub(super) fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> ScanImage {
        let mut image = ScanImage {
            schema,
            batches: Vec::new(),
            starts: Vec::new(),
            tail: Vec::new(),
            tail_rows: 0,
            added: 0,
            index: None,
            dead: Vec::new(),
            dead_rows: 0,
            batch_bytes: 0,
            index_bytes: 0,
        };
        for batch in batches {
            image.push_new(batch);
        }
        image
    }

    /// A keyed image of the rows a read decoded, `key_columns` encoded by
    /// `codec` being the key; `None` when a key holds more than one row.
    pub(super) fn keyed(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        key_columns: &[usize],
        codec: &RowCodec,
    ) -> Result<Option<ScanImage>> {
        let mut index = KeyMap::default();
        let mut index_bytes = 0;
        let mut position = 0u64;
        for batch in &batches {
            let keys: Vec<ArrayRef> = key_columns
                .iter()
                .map(|c| std::sync::Arc::clone(batch.column(*c)))
                .collect();
            let keys = codec.encode(&keys)?;
            for row in keys.iter() {
                if index.insert(row.data(), position).is_some() {
                    return Ok(None);
                }
                index_bytes += row.data().len() + INDEX_ENTRY_BYTES;
                position += 1;
            }
        }
        let mut image = ScanImage::new(schema, batches);
        image.index = Some(index);
        image.index_bytes = index_bytes;
        Ok(Some(image))
    }

    pub(super) fn is_keyed(&self) -> bool {
        self.index.is_some()
    }

    /// Every living row, each repeated by its multiplicity.
    pub(super) fn rows(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::with_capacity(self.batches.len() + self.tail.len());
        let tail_start = self.added - self.tail_rows as u64;
        let tail_starts = self.tail.iter().scan(tail_start, |at, batch| {
            let start = *at;
            *at += batch.num_rows() as u64;
            Some(start)
        });
        let all = self.batches.iter().zip(self.starts.iter().copied());
        for (batch, start) in all.chain(self.tail.iter().zip(tail_starts)) {
            match self.dead_rows == 0 {
                true => out.push(batch.clone()),
                false => {
                    let alive: BooleanBuffer = (0..batch.num_rows() as u64)
                        .map(|i| !self.is_dead(start + i))
                        .collect();
                    match alive.count_set_bits() {
                        0 => {}
                        n if n == batch.num_rows() => out.push(batch.clone()),
                        _ => out.push(filter_record_batch(batch, &BooleanArray::new(alive, None))?),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Memory the image takes (rows being compacted are counted once
    /// compacted).
    pub(super) fn bytes(&self) -> usize {
        self.batch_bytes + self.index_bytes + self.dead.len() * 8
    }

    /// [`ScanImage::apply`] for a view's publication: `keys` are the
    /// change's rows' keys, `key_columns` encoded by `codec`. A keyed image
    /// takes the change consolidated when it both adds and takes back rows:
    /// the workers' outputs are joined, not netted, so a row added on one
    /// and taken back on another must cancel first.
    pub(super) fn follow(
        &mut self,
        delta: &ChangeBatch,
        keys: &Rows,
        key_columns: &[usize],
        codec: &RowCodec,
    ) -> Result<bool> {
        let mixed = delta.diffs.iter().any(|d| *d < 0) && delta.diffs.iter().any(|d| *d > 0);
        if !(self.is_keyed() && mixed) {
            return self.apply(delta, |i| keys.row(i).data());
        }
        let net = delta.clone().consolidate()?;
        let columns: Vec<ArrayRef> = key_columns
            .iter()
            .map(|c| std::sync::Arc::clone(net.data.column(*c)))
            .collect();
        let net_keys = codec.encode(&columns)?;
        self.apply(&net, |i| net_keys.row(i).data())
    }

    /// Takes in a publication's change (rows in the view's schema; `key`
    /// gives row `i`'s encoded key); a keyed image needs it consolidated
    /// (see [`ScanImage::follow`]): a retraction stands for the key's one
    /// row. `false` when the image can no longer
    /// follow: a plain image and a change taking rows back, or a keyed one
    /// and a key that would hold two rows. The caller drops it then.
    pub(super) fn apply<'k>(
        &mut self,
        delta: &ChangeBatch,
        key: impl Fn(usize) -> &'k [u8],
    ) -> Result<bool> {
        if delta.is_empty() {
            return Ok(true);
        }
        let rows = match self.index.as_mut() {
            None => {
                if delta.diffs.iter().any(|d| *d <= 0) {
                    return Ok(false);
                }
                match delta.diffs.iter().all(|d| *d == 1) {
                    true => delta.data.clone(),
                    false => {
                        // A row inserted n times is there n times.
                        let repeated: UInt32Array = delta
                            .diffs
                            .iter()
                            .enumerate()
                            .flat_map(|(i, d)| std::iter::repeat_n(i as u32, *d as usize))
                            .collect();
                        take_record_batch(&delta.data, &repeated)?
                    }
                }
            }
            Some(index) => {
                // Retractions first: a key's row replaced within one change
                // leaves room for its successor.
                let mut dead = Vec::new();
                for (i, diff) in delta.diffs.iter().enumerate() {
                    if *diff < 0 {
                        match (*diff, index.remove(key(i))) {
                            (-1, Some(position)) => {
                                self.index_bytes -= key(i).len() + INDEX_ENTRY_BYTES;
                                dead.push(position);
                            }
                            _ => return Ok(false),
                        }
                    }
                }
                let mut taken = Vec::new();
                let mut position = self.added;
                for (i, diff) in delta.diffs.iter().enumerate() {
                    if *diff > 0 {
                        if *diff != 1 || index.insert(key(i), position).is_some() {
                            return Ok(false);
                        }
                        self.index_bytes += key(i).len() + INDEX_ENTRY_BYTES;
                        taken.push(i as u32);
                        position += 1;
                    }
                }
                for position in dead {
                    self.mark_dead(position);
                }
                match taken.len() == delta.len() {
                    true => delta.data.clone(),
                    false => take_record_batch(&delta.data, &UInt32Array::from(taken))?,
                }
            }
        };
        if rows.num_rows() > 0 {
            self.added += rows.num_rows() as u64;
            self.tail_rows += rows.num_rows();
            self.tail.push(rows);
        }
        if self.tail_rows >= COMPACT_ROWS {
            self.compact_tail()?;
        }
        if self.dead_rows >= REWRITE_DEAD_ROWS && self.dead_rows * 2 > self.added {
            self.rewrite()?;
        }
        Ok(true)
    }

    /// Appends a batch of new rows (a read's or a rewrite's), which take
    /// the next positions.
    fn push_new(&mut self, batch: RecordBatch) {
        debug_assert!(self.tail.is_empty());
        let start = self.added;
        self.added += batch.num_rows() as u64;
        self.push_batch(start, batch);
    }

    fn push_batch(&mut self, start: u64, batch: RecordBatch) {
        self.batch_bytes += batch.get_array_memory_size();
        self.starts.push(start);
        self.batches.push(batch);
    }

    /// Joins the tail into one owned batch; its rows keep their positions.
    fn compact_tail(&mut self) -> Result<()> {
        let batch = concat_batches(&self.schema, &self.tail)?;
        let start = self.added - self.tail_rows as u64;
        self.tail.clear();
        self.tail_rows = 0;
        self.push_batch(start, batch);
        Ok(())
    }

    fn is_dead(&self, position: u64) -> bool {
        let word = (position / 64) as usize;
        self.dead
            .get(word)
            .is_some_and(|w| w & (1 << (position % 64)) != 0)
    }

    fn mark_dead(&mut self, position: u64) {
        let word = (position / 64) as usize;
        if self.dead.len() <= word {
            self.dead.resize(word + 1, 0);
        }
        self.dead[word] |= 1 << (position % 64);
        self.dead_rows += 1;
    }

    /// Rewrites the image without its dead rows: living rows keep their
    /// order, and positions close up.
    fn rewrite(&mut self) -> Result<()> {
        let living = self.rows()?;
        // Dead positions before each word, to close the index's positions up.
        let mut before = Vec::with_capacity(self.dead.len());
        let mut count = 0u64;
        for word in &self.dead {
            before.push(count);
            count += u64::from(word.count_ones());
        }
        let dead = std::mem::take(&mut self.dead);
        if let Some(index) = self.index.as_mut() {
            for position in index.values_mut() {
                let word = (*position / 64) as usize;
                let below = match dead.get(word) {
                    Some(w) => {
                        before[word]
                            + u64::from((w & ((1u64 << (*position % 64)) - 1)).count_ones())
                    }
                    None => count,
                };
                *position -= below;
            }
        }
        let all = concat_batches(&self.schema, &living)?;
        self.batches.clear();
        self.starts.clear();
        self.tail.clear();
        self.tail_rows = 0;
        self.added = 0;
        self.dead_rows = 0;
        self.batch_bytes = 0;
        let mut offset = 0;
        while offset < all.num_rows() {
            let len = COMPACT_ROWS.min(all.num_rows() - offset);
            // Owned arrays for each batch, not slices of one large one.
            let batch = concat_batches(&self.schema, [&all.slice(offset, len)])?;
            self.push_new(batch);
            offset += len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    fn batch(rows: &[(i64, i64)]) -> RecordBatch {
        let column = |f: fn(&(i64, i64)) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        RecordBatch::try_new(schema(), vec![column(|r| r.0), column(|r| r.1)]).unwrap()
    }

    fn codec() -> RowCodec {
        RowCodec::new([&DataType::Int64]).unwrap()
    }

    /// Applies a change of (k, v, diff) rows, keyed by `k`.
    fn apply(image: &mut ScanImage, rows: &[(i64, i64, i64)]) -> bool {
        let data = batch(&rows.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>());
        let keys = codec().encode(&[Arc::clone(data.column(0))]).unwrap();
        let change = ChangeBatch::new(data, rows.iter().map(|r| r.2).collect());
        image.apply(&change, |i| keys.row(i).data()).unwrap()
    }

    fn contents(image: &ScanImage) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = image
            .rows()
            .unwrap()
            .iter()
            .flat_map(|b| {
                let col = |c: usize| {
                    b.column(c)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .clone()
                };
                let (k, v) = (col(0), col(1));
                (0..k.len()).map(move |i| (k.value(i), v.value(i)))
            })
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn a_plain_image_adds_insertions_with_their_multiplicity() {
        let mut image = ScanImage::new(schema(), vec![batch(&[(1, 10), (2, 20)])]);
        assert!(apply(&mut image, &[(3, 30, 1), (4, 40, 2)]));
        assert!(apply(&mut image, &[]));
        assert_eq!(
            contents(&image),
            [(1, 10), (2, 20), (3, 30), (4, 40), (4, 40)]
        );
        // A retraction: the plain image cannot follow.
        assert!(!apply(&mut image, &[(5, 50, 1), (1, 10, -1)]));
    }

    #[test]
    fn the_tail_is_compacted_into_owned_batches() {
        let mut image = ScanImage::new(schema(), Vec::new());
        let rows: Vec<(i64, i64)> = (0..COMPACT_ROWS as i64 * 2).map(|i| (i, i)).collect();
        let whole = batch(&rows);
        // Publications of 100 rows each, sliced from one large batch.
        let mut expected = Vec::new();
        for start in (0..COMPACT_ROWS + 300).step_by(100) {
            let slice = ChangeBatch::new(whole.slice(start, 100), vec![1; 100]);
            assert!(image.apply(&slice, |_| &[]).unwrap());
            expected.extend(&rows[start..start + 100]);
        }
        assert_eq!(image.batches.len(), 1);
        assert!(image.batches[0].num_rows() >= COMPACT_ROWS);
        assert_eq!(
            image.batches[0].num_rows() + image.tail_rows,
            expected.len()
        );
        assert!(image.bytes() < whole.get_array_memory_size());
        assert_eq!(contents(&image), expected);
    }

    #[test]
    fn a_keyed_image_replaces_rows_by_key() {
        let rows = batch(&[(1, 10), (2, 20), (3, 30)]);
        let repeated = batch(&[(1, 10), (1, 11)]);
        assert!(ScanImage::keyed(schema(), vec![repeated], &[0], &codec())
            .unwrap()
            .is_none());
        let mut image = ScanImage::keyed(schema(), vec![rows], &[0], &codec())
            .unwrap()
            .unwrap();
        // Key 1 moves on, key 2 goes, key 4 comes.
        assert!(apply(
            &mut image,
            &[(1, 11, 1), (1, 10, -1), (2, 20, -1), (4, 40, 1)]
        ));
        assert_eq!(contents(&image), [(1, 11), (3, 30), (4, 40)]);
        assert!(apply(&mut image, &[(2, 21, 1)]));
        assert_eq!(contents(&image), [(1, 11), (2, 21), (3, 30), (4, 40)]);
        // A second row under a key, or a retraction of a key not held:
        // the image cannot follow.
        assert!(!apply(&mut image, &[(3, 31, 1)]));
        let mut image = ScanImage::keyed(schema(), vec![batch(&[(1, 10)])], &[0], &codec())
            .unwrap()
            .unwrap();
        assert!(!apply(&mut image, &[(9, 90, -1)]));
    }

    /// A row added on one worker and taken back on another, in one
    /// publication: the key's row held stays.
    #[test]
    fn a_keyed_image_follows_a_change_joined_from_several_workers() {
        let mut image =
            ScanImage::keyed(schema(), vec![batch(&[(1, 10), (2, 20)])], &[0], &codec())
                .unwrap()
                .unwrap();
        let data = batch(&[(1, 11), (2, 21), (1, 11), (2, 20)]);
        let keys = codec().encode(&[Arc::clone(data.column(0))]).unwrap();
        let change = ChangeBatch::new(data, vec![1, 1, -1, -1]);
        assert!(image.follow(&change, &keys, &[0], &codec()).unwrap());
        assert_eq!(contents(&image), [(1, 10), (2, 21)]);
        // Replacing rows leaves the index's size as it was.
        let data = batch(&[(1, 12), (1, 10)]);
        let keys = codec().encode(&[Arc::clone(data.column(0))]).unwrap();
        let change = ChangeBatch::new(data, vec![1, -1]);
        assert!(image.follow(&change, &keys, &[0], &codec()).unwrap());
        assert_eq!(contents(&image), [(1, 12), (2, 21)]);
        assert_eq!(image.index_bytes, {
            let fresh =
                ScanImage::keyed(schema(), vec![batch(&[(1, 12), (2, 21)])], &[0], &codec())
                    .unwrap()
                    .unwrap();
            fresh.index_bytes
        });
    }

    /// Many updates: the image is rewritten without its dead rows, and the
    /// keys' positions still find their rows afterwards.
    #[test]
    fn a_keyed_image_is_rewritten_without_its_dead_rows() {
        let keys = 3000i64;
        let initial: Vec<(i64, i64)> = (0..keys).map(|k| (k, 0)).collect();
        let mut image = ScanImage::keyed(schema(), vec![batch(&initial)], &[0], &codec())
            .unwrap()
            .unwrap();
        let mut expected: BTreeMap<i64, i64> = initial.into_iter().collect();
        let mut rewrites = 0;
        for round in 1..=12i64 {
            // Every other key moves on, in changes of 500 keys.
            for chunk in (0..keys)
                .filter(|k| (k + round) % 2 == 0)
                .collect::<Vec<_>>()
                .chunks(500)
            {
                let change: Vec<(i64, i64, i64)> = chunk
                    .iter()
                    .flat_map(|k| [(*k, expected[k], -1), (*k, round, 1)])
                    .collect();
                let before = image.dead_rows;
                assert!(apply(&mut image, &change));
                if image.dead_rows < before {
                    rewrites += 1;
                }
                for k in chunk {
                    expected.insert(*k, round);
                }
            }
            assert_eq!(
                contents(&image),
                expected.clone().into_iter().collect::<Vec<_>>()
            );
        }
        assert!(rewrites >= 2, "{rewrites} rewrites");
        assert!(image.added < 3 * keys as u64);
    }
}
