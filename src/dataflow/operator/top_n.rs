//! Top-N per group: for each partition, the rows at positions
//! `offset .. offset + limit` of the partition in sort order, optionally
//! numbered by their 1-based position (`ROW_NUMBER() OVER (PARTITION BY …
//! ORDER BY …) … WHERE rn <= N`, or `ORDER BY … LIMIT n OFFSET m` in a view).
//! Per epoch it emits only how those windows changed.
//!
//! This file owns the ordered rows of each partition. Routing rows to the
//! worker owning their partition is the exchange's job (the runtime's).
//!
//! Rows are ordered by the sort keys, then by the whole row's encoding
//! (ascending), so ties resolve the same way whatever the worker count or
//! arrival order. A row held n times occupies n consecutive positions.
//!
//! State keeps every row of every partition, so that when a top row is
//! retracted the next one moves up. Bounding it (keeping the first K rows
//! and refilling from the input's arrangement when the window underflows)
//! is a later optimisation.

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::compute::{cast, SortOptions};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::Rows;
use datafusion::common::HashMap as FastMap;
use datafusion::physical_plan::PhysicalExpr;

use super::{
    ChangeBatch, CloseSchedule, KeyClose, Operator, Shard, ENTRY_OVERHEAD_BYTES, OUTPUT_BATCH_ROWS,
};
use crate::dataflow::expr::evaluate_all;
use crate::dataflow::row::RowCodec;
use crate::dataflow::state::{corrupt, StateReader, StateWriter};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct SortKey {
    pub expr: Arc<dyn PhysicalExpr>,
    pub descending: bool,
    pub nulls_first: bool,
}

#[derive(Debug, Clone)]
pub struct TopNSpec {
    /// Over the input batch; empty for one global ranking.
    pub partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub order: Vec<SortKey>,
    /// Rows skipped at the head of each partition.
    pub offset: usize,
    /// Rows kept after the offset; `None` keeps all.
    pub limit: Option<usize>,
    /// Append the row's 1-based position in its partition (Int64).
    pub row_number: bool,
    /// Input fields, then the row number when asked.
    pub output_schema: SchemaRef,
    /// Set when a partition expression is a window of event time: a
    /// partition is final once the frontier passes it, and is let go of.
    pub close: Option<KeyClose>,
}

impl TopNSpec {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(TopN::new(self)?))
    }

    pub fn describe(&self) -> String {
        let mut text = String::from("TopN:");
        if !self.partition_exprs.is_empty() {
            let exprs: Vec<String> = self.partition_exprs.iter().map(|e| e.to_string()).collect();
            text.push_str(&format!(" partition by [{}]", exprs.join(", ")));
        }
        let keys: Vec<String> = self.order.iter().map(describe_sort_key).collect();
        text.push_str(&format!(" order by [{}]", keys.join(", ")));
        if let Some(limit) = self.limit {
            text.push_str(&format!(" limit {limit}"));
        }
        if self.offset > 0 {
            text.push_str(&format!(" offset {}", self.offset));
        }
        if self.row_number {
            text.push_str(" (row_number)");
        }
        if let Some(close) = self.close {
            text.push_str(&format!(
                " (partitions close when the frontier passes {} + {} us)",
                self.partition_exprs[close.key], close.slack_us
            ));
        }
        text
    }
}

pub(super) fn describe_sort_key(key: &SortKey) -> String {
    let mut text = key.expr.to_string();
    if key.descending {
        text.push_str(" DESC");
    }
    // PostgreSQL's default puts NULLs last ascending and first descending:
    // say so only when the key departs from it.
    if key.nulls_first != key.descending {
        text.push_str(if key.nulls_first {
            " NULLS FIRST"
        } else {
            " NULLS LAST"
        });
    }
    text
}

impl TopN {
    fn new(spec: &TopNSpec) -> Result<TopN> {
        let fields = spec.output_schema.fields();
        let width = fields
            .len()
            .checked_sub(usize::from(spec.row_number))
            .ok_or_else(|| Error::Internal("top-n: row number without its output field".into()))?;
        let input = Schema::new(fields[..width].to_vec());
        let row = Codec::new(
            input
                .fields()
                .iter()
                .map(|f| (f.data_type().clone(), SortOptions::default()))
                .collect(),
        )?;
        let partition = Codec::new(
            spec.partition_exprs
                .iter()
                .map(|e| Ok((e.data_type(&input)?, SortOptions::default())))
                .collect::<Result<Vec<_>>>()?,
        )?;
        let order = Codec::new(
            spec.order
                .iter()
                .map(|k| {
                    let options = SortOptions {
                        descending: k.descending,
                        nulls_first: k.nulls_first,
                    };
                    Ok((k.expr.data_type(&input)?, options))
                })
                .collect::<Result<Vec<_>>>()?,
        )?;
        let end = match spec.limit {
            Some(limit) => spec.offset.saturating_add(limit) as u64,
            None => u64::MAX,
        };
        Ok(TopN {
            spec: spec.clone(),
            order_exprs: spec.order.iter().map(|k| Arc::clone(&k.expr)).collect(),
            bounds: spec.offset as u64..end,
            row,
            partition,
            order,
            partitions: FastMap::default(),
            pending: FastMap::default(),
            bytes: 0,
            pending_bytes: 0,
            created: Vec::new(),
            closing: CloseSchedule::default(),
        })
    }
}

/// One worker's instance of a top-N.
#[derive(Debug)]
struct TopN {
    spec: TopNSpec,
    order_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Positions (0-based, within a partition) that are output.
    bounds: Range<u64>,
    row: Codec,
    partition: Codec,
    order: Codec,
    /// Every row of every partition, in rank order, with multiplicities.
    partitions: FastMap<Box<[u8]>, BTreeMap<RankKey, i64>>,
    /// This epoch's changes, applied at the barrier.
    pending: FastMap<Box<[u8]>, BTreeMap<RankKey, i64>>,
    /// With a closing partition key: partitions made at this barrier ...
    created: Vec<Box<[u8]>>,
    /// ... and every partition by when it closes.
    closing: CloseSchedule,
    bytes: usize,
    pending_bytes: usize,
}

impl Operator for TopN {
    fn on_batch(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        _out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let data = &batch.data;
        if data.num_columns() != self.row.types.len() {
            return Err(Error::Internal(format!(
                "top-n: input has {} columns, expected {}",
                data.num_columns(),
                self.row.types.len()
            )));
        }
        let rows = self.row.encode(data.columns().to_vec())?;
        let partitions = self
            .partition
            .encode(evaluate_all(&self.spec.partition_exprs, data)?)?;
        let sort_keys = self.order.encode(evaluate_all(&self.order_exprs, data)?)?;
        for (i, diff) in batch.diffs.iter().enumerate() {
            if *diff == 0 {
                continue;
            }
            let partition = key_at(&partitions, i);
            let changes = match self.pending.get_mut(partition) {
                Some(changes) => changes,
                None => {
                    self.pending_bytes += partition.len() + ENTRY_OVERHEAD_BYTES;
                    self.pending.entry(partition.into()).or_default()
                }
            };
            let key = RankKey::new(key_at(&sort_keys, i), key_at(&rows, i));
            match changes.entry(key) {
                Entry::Occupied(mut entry) => *entry.get_mut() += diff,
                Entry::Vacant(entry) => {
                    self.pending_bytes += entry.key().bytes.len() + ENTRY_OVERHEAD_BYTES;
                    entry.insert(*diff);
                }
            }
        }
        Ok(())
    }

    fn on_barrier(&mut self, _epoch: u64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut emit = Emit::default();
        for (partition, changes) in pending {
            self.apply(partition, changes, &mut emit);
        }
        let created = std::mem::take(&mut self.created);
        self.schedule_closes(created)?;
        self.flush(&emit, out)
    }

    /// Lets go of the partitions the frontier has passed: their rows, and
    /// so their ranking, are final.
    fn on_frontier(&mut self, frontier_us: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        for partition in self.closing.due(frontier_us) {
            if let Some(rows) = self.partitions.remove(partition.as_slice()) {
                let held: usize = rows
                    .keys()
                    .map(|k| k.bytes.len() + ENTRY_OVERHEAD_BYTES)
                    .sum();
                let size = partition.len() + ENTRY_OVERHEAD_BYTES;
                self.bytes = self.bytes.saturating_sub(held + size);
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.bytes + self.pending_bytes
    }

    /// Every partition with its ranked rows and their multiplicities.
    /// Pending changes are applied at the barrier, so none are left.
    fn checkpoint(&self, state: &mut StateWriter) -> Result<()> {
        if !self.pending.is_empty() {
            return Err(Error::Internal(
                "top-n checkpointed with changes pending since the barrier".into(),
            ));
        }
        state.len(self.partitions.len());
        for (partition, rows) in &self.partitions {
            state.bytes(partition);
            state.len(rows.len());
            for (key, n) in rows {
                state.bytes(&key.bytes);
                state.len(key.sort_len);
                state.i64(*n);
            }
        }
        Ok(())
    }

    /// Byte counts are rebuilt as `apply` keeps them.
    fn restore(
        &mut self,
        _shard: Shard,
        _inputs: &[SchemaRef],
        state: &mut StateReader<'_>,
    ) -> Result<()> {
        // A partition key's length and its row count.
        for _ in 0..state.count(16)? {
            let partition = state.bytes()?;
            self.bytes += partition.len() + ENTRY_OVERHEAD_BYTES;
            let mut rows = BTreeMap::new();
            // A rank key's length, its sort key's length and a count.
            for _ in 0..state.count(24)? {
                let bytes = state.bytes()?;
                let sort_len = state.u64()?;
                let sort_len = usize::try_from(sort_len)
                    .ok()
                    .filter(|n| *n <= bytes.len())
                    .ok_or_else(|| {
                        corrupt(format!(
                            "a sort key of {sort_len} bytes in a rank key of {}",
                            bytes.len()
                        ))
                    })?;
                self.bytes += bytes.len() + ENTRY_OVERHEAD_BYTES;
                let key = RankKey {
                    bytes: bytes.into(),
                    sort_len,
                };
                if rows.insert(key, state.i64()?).is_some() {
                    return Err(corrupt("a top-n row held twice".into()));
                }
            }
            if self.partitions.insert(partition.into(), rows).is_some() {
                return Err(corrupt("a top-n partition held twice".into()));
            }
        }
        let held: Vec<Box<[u8]>> = self.partitions.keys().cloned().collect();
        self.schedule_closes(held)
    }
}

impl TopN {
    /// Applies one partition's changes of the epoch and records how its
    /// window moved. Rows ranked before the first changed row keep their
    /// positions, so both windows are read from that row on only; reading
    /// stops at the window's end, so the cost follows the window, not the
    /// partition.
    fn apply(
        &mut self,
        partition: Box<[u8]>,
        mut changes: BTreeMap<RankKey, i64>,
        emit: &mut Emit,
    ) {
        changes.retain(|_, diff| *diff != 0);
        let Some(from) = changes.keys().next() else {
            return;
        };
        let empty = BTreeMap::new();
        let rows = self.partitions.get(&partition).unwrap_or(&empty);
        let old = window(rows.iter().map(|(k, n)| (k, *n)), from, &self.bounds);
        let new = window(merge(rows, &changes), from, &self.bounds);
        diff_windows(&old, &new, self.spec.row_number, emit);

        let partition_size = partition.len() + ENTRY_OVERHEAD_BYTES;
        let rows = match self.partitions.get_mut(&partition) {
            Some(rows) => rows,
            None => {
                self.bytes += partition_size;
                if self.spec.close.is_some() {
                    self.created.push(partition.clone());
                }
                self.partitions.entry(partition.clone()).or_default()
            }
        };
        for (key, diff) in changes {
            let size = key.bytes.len() + ENTRY_OVERHEAD_BYTES;
            match rows.entry(key) {
                Entry::Occupied(mut entry) => {
                    *entry.get_mut() += diff;
                    if *entry.get() == 0 {
                        entry.remove();
                        self.bytes = self.bytes.saturating_sub(size);
                    }
                }
                Entry::Vacant(entry) => {
                    entry.insert(diff);
                    self.bytes += size;
                }
            }
        }
        if rows.is_empty() {
            self.partitions.remove(&partition);
            self.bytes = self.bytes.saturating_sub(partition_size);
        }
    }

    /// Notes when each of `partitions` closes: its closing key's time plus
    /// the slack. A NULL key never closes.
    fn schedule_closes(&mut self, partitions: Vec<Box<[u8]>>) -> Result<()> {
        let Some(close) = self.spec.close else {
            return Ok(());
        };
        if partitions.is_empty() {
            return Ok(());
        }
        let keys: Vec<&[u8]> = partitions.iter().map(|p| p.as_ref()).collect();
        let columns = self.partition.decode(keys.iter().copied())?;
        self.closing
            .schedule(&keys, &columns[close.key], close.slack_us)
    }

    /// Turns the recorded changes into output batches.
    fn flush(&self, emit: &Emit, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let schema = &self.spec.output_schema;
        let mut start = 0;
        while start < emit.diffs.len() {
            let end = (start + OUTPUT_BATCH_ROWS).min(emit.diffs.len());
            let rows = emit.spans[start..end]
                .iter()
                .map(|r| &emit.bytes[r.clone()]);
            let mut columns = self.row.decode(rows)?;
            if self.spec.row_number {
                columns.push(Arc::new(Int64Array::from(
                    emit.numbers[start..end].to_vec(),
                )));
            }
            let columns = columns
                .into_iter()
                .zip(schema.fields())
                .map(|(c, f)| conform(c, f.data_type()))
                .collect::<Result<Vec<_>>>()?;
            let options = RecordBatchOptions::new().with_row_count(Some(end - start));
            let data = RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?;
            out.push(ChangeBatch::new(data, emit.diffs[start..end].to_vec()));
            start = end;
        }
        Ok(())
    }
}

/// A row's rank: its sort-key encoding, then its whole-row encoding, in one
/// allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RankKey {
    bytes: Box<[u8]>,
    sort_len: usize,
}

impl RankKey {
    fn new(sort_key: &[u8], row: &[u8]) -> RankKey {
        let mut bytes = Vec::with_capacity(sort_key.len() + row.len());
        bytes.extend_from_slice(sort_key);
        bytes.extend_from_slice(row);
        RankKey {
            bytes: bytes.into_boxed_slice(),
            sort_len: sort_key.len(),
        }
    }

    fn sort_key(&self) -> &[u8] {
        &self.bytes[..self.sort_len]
    }

    fn row(&self) -> &[u8] {
        &self.bytes[self.sort_len..]
    }
}

impl Ord for RankKey {
    /// The sort keys first: comparing the concatenations would let a longer
    /// sort key's bytes compare against the other row's bytes.
    fn cmp(&self, other: &RankKey) -> Ordering {
        self.sort_key()
            .cmp(other.sort_key())
            .then_with(|| self.row().cmp(other.row()))
    }
}

impl PartialOrd for RankKey {
    fn partial_cmp(&self, other: &RankKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Encodes columns of fixed types; no columns encode as the empty key.
#[derive(Debug)]
pub(super) struct Codec {
    types: Vec<DataType>,
    codec: Option<RowCodec>,
}

impl Codec {
    pub(super) fn new(fields: Vec<(DataType, SortOptions)>) -> Result<Codec> {
        let types = fields.iter().map(|(t, _)| t.clone()).collect();
        let codec = match fields.is_empty() {
            true => None,
            false => Some(RowCodec::with_order(fields)?),
        };
        Ok(Codec { types, codec })
    }

    pub(super) fn encode(&self, columns: Vec<ArrayRef>) -> Result<Option<Rows>> {
        let Some(codec) = &self.codec else {
            return Ok(None);
        };
        let columns = columns
            .into_iter()
            .zip(&self.types)
            .map(|(c, t)| conform(c, t))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(codec.encode(&columns)?))
    }

    pub(super) fn decode<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<ArrayRef>> {
        match &self.codec {
            Some(codec) => codec.decode(rows),
            None => Ok(Vec::new()),
        }
    }
}

pub(super) fn key_at(rows: &Option<Rows>, i: usize) -> &[u8] {
    rows.as_ref().map_or(&[], |r| r.row(i).data())
}

/// `array` as `data_type`, cast only when it differs.
pub(super) fn conform(array: ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    if array.data_type() == data_type {
        return Ok(array);
    }
    Ok(cast(&array, data_type)?)
}

/// A run of equal rows inside a window: positions `first .. first + count`.
#[derive(Debug)]
struct Slot<'a> {
    key: &'a RankKey,
    first: u64,
    count: u64,
}

/// The window's slots among `entries` (in rank order) from `from` on; rows
/// before `from` are only counted.
fn window<'a>(
    entries: impl Iterator<Item = (&'a RankKey, i64)>,
    from: &RankKey,
    bounds: &Range<u64>,
) -> Vec<Slot<'a>> {
    let mut slots = Vec::new();
    let mut position = 0u64;
    for (key, count) in entries {
        if position >= bounds.end {
            break;
        }
        // A row retracted more often than inserted (an upstream bug) holds
        // no position until its inserts catch up.
        let Ok(count) = u64::try_from(count) else {
            continue;
        };
        let next = position.saturating_add(count);
        if key >= from {
            let first = position.max(bounds.start);
            let last = next.min(bounds.end);
            if first < last {
                slots.push(Slot {
                    key,
                    first,
                    count: last - first,
                });
            }
        }
        position = next;
    }
    slots
}

/// The rows of `rows` with `changes` added, in rank order.
fn merge<'a>(
    rows: &'a BTreeMap<RankKey, i64>,
    changes: &'a BTreeMap<RankKey, i64>,
) -> impl Iterator<Item = (&'a RankKey, i64)> + 'a {
    let mut rows = rows.iter().peekable();
    let mut changes = changes.iter().peekable();
    std::iter::from_fn(move || {
        let order = match (rows.peek(), changes.peek()) {
            (Some((a, _)), Some((b, _))) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => return None,
        };
        match order {
            Ordering::Less => rows.next().map(|(k, n)| (k, *n)),
            Ordering::Greater => changes.next().map(|(k, d)| (k, *d)),
            Ordering::Equal => rows
                .next()
                .zip(changes.next())
                .map(|((k, n), (_, d))| (k, n.saturating_add(*d))),
        }
    })
}

/// Records the rows leaving (`old` only) and entering (`new` only) a
/// window; a row in both changes only by its count or, numbered, by the
/// positions it no longer or newly holds.
fn diff_windows(old: &[Slot<'_>], new: &[Slot<'_>], numbered: bool, emit: &mut Emit) {
    let (mut i, mut j) = (0, 0);
    loop {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.key.cmp(b.key),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => return,
        };
        match order {
            Ordering::Less => {
                emit.positions(
                    &old[i],
                    old[i].first..old[i].first + old[i].count,
                    -1,
                    numbered,
                );
                i += 1;
            }
            Ordering::Greater => {
                emit.positions(
                    &new[j],
                    new[j].first..new[j].first + new[j].count,
                    1,
                    numbered,
                );
                j += 1;
            }
            Ordering::Equal => {
                emit.moved(&old[i], &new[j], numbered);
                i += 1;
                j += 1;
            }
        }
    }
}

/// Output rows gathered over all partitions of an epoch, decoded at once.
#[derive(Debug, Default)]
struct Emit {
    bytes: Vec<u8>,
    spans: Vec<Range<usize>>,
    numbers: Vec<i64>,
    diffs: Vec<i64>,
}

impl Emit {
    fn copy_row(&mut self, row: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(row);
        start..self.bytes.len()
    }

    fn push(&mut self, span: Range<usize>, position: u64, diff: i64) {
        self.spans.push(span);
        self.numbers.push(
            i64::try_from(position)
                .unwrap_or(i64::MAX)
                .saturating_add(1),
        );
        self.diffs.push(diff);
    }

    /// `slot`'s row at `positions`: one numbered row each, or, unnumbered,
    /// one row weighted by their count.
    fn positions(&mut self, slot: &Slot<'_>, positions: Range<u64>, sign: i64, numbered: bool) {
        if positions.is_empty() {
            return;
        }
        let span = self.copy_row(slot.key.row());
        if numbered {
            for position in positions {
                self.push(span.clone(), position, sign);
            }
        } else {
            let count = i64::try_from(positions.end - positions.start).unwrap_or(i64::MAX);
            self.push(span, positions.start, sign * count);
        }
    }

    /// A row in both windows.
    fn moved(&mut self, old: &Slot<'_>, new: &Slot<'_>, numbered: bool) {
        if !numbered {
            // Counts come from positive i64 weights, so they fit.
            let diff = new.count as i64 - old.count as i64;
            if diff != 0 {
                let span = self.copy_row(new.key.row());
                self.push(span, new.first, diff);
            }
            return;
        }
        let old_range = old.first..old.first + old.count;
        let new_range = new.first..new.first + new.count;
        let kept = old_range.start.max(new_range.start)..old_range.end.min(new_range.end);
        if kept.is_empty() {
            self.positions(old, old_range, -1, true);
            self.positions(new, new_range, 1, true);
            return;
        }
        // Positions are runs, so what is not kept lies before or after it.
        self.positions(old, old_range.start..kept.start, -1, true);
        self.positions(old, kept.end..old_range.end, -1, true);
        self.positions(new, new_range.start..kept.start, 1, true);
        self.positions(new, kept.end..new_range.end, 1, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::row::shard_of_rows;
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::col;

    /// Columns `c0` (partition), `c1` (order), `c2` (id), all Int64.
    fn input_schema() -> SchemaRef {
        ChangeBatch::from_pretty(" I I I").unwrap().schema()
    }

    #[derive(Debug, Clone, Copy)]
    struct Setting {
        partitioned: bool,
        offset: usize,
        limit: Option<usize>,
        row_number: bool,
        descending: bool,
        nulls_first: bool,
    }

    const ROW_NUMBER_TOP_2: Setting = Setting {
        partitioned: true,
        offset: 0,
        limit: Some(2),
        row_number: true,
        descending: false,
        nulls_first: false,
    };

    const LIMIT_2: Setting = Setting {
        partitioned: false,
        offset: 0,
        limit: Some(2),
        row_number: false,
        descending: false,
        nulls_first: false,
    };

    fn spec(s: Setting) -> TopNSpec {
        let input = input_schema();
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        if s.row_number {
            fields.push(Field::new("rn", DataType::Int64, true));
        }
        TopNSpec {
            partition_exprs: match s.partitioned {
                true => vec![col("c0", &input).unwrap()],
                false => vec![],
            },
            order: vec![SortKey {
                expr: col("c1", &input).unwrap(),
                descending: s.descending,
                nulls_first: s.nulls_first,
            }],
            offset: s.offset,
            limit: s.limit,
            row_number: s.row_number,
            output_schema: Arc::new(Schema::new(fields)),
            close: None,
        }
    }

    /// Drives one operator an epoch at a time.
    struct Harness {
        op: Box<dyn Operator>,
        schema: SchemaRef,
        view: ChangeBatch,
    }

    impl Harness {
        fn new(s: Setting) -> Harness {
            let spec = spec(s);
            Harness {
                op: spec.instantiate().unwrap(),
                view: ChangeBatch::empty(Arc::clone(&spec.output_schema)),
                schema: spec.output_schema,
            }
        }

        /// Feeds each literal batch (rows `p o id`), closes the epoch and
        /// returns its consolidated output.
        fn step(&mut self, batches: &[&str]) -> Vec<String> {
            let mut out = Vec::new();
            for text in batches {
                let batch = ChangeBatch::from_pretty(&format!(" I I I\n{text}")).unwrap();
                self.op.on_batch(0, batch, &mut out).unwrap();
            }
            assert!(out.is_empty(), "output before the barrier");
            self.op.on_barrier(1, &mut out).unwrap();
            let step = ChangeBatch::concat(&self.schema, &out).unwrap();
            let parts = [self.view.clone(), step.clone()];
            self.view = ChangeBatch::concat(&self.schema, &parts)
                .unwrap()
                .consolidate()
                .unwrap();
            step.consolidate().unwrap().to_lines()
        }
    }

    #[test]
    fn partitions_the_frontier_passed_are_let_go_of() {
        // Partition keys are times: partition p closes at frontier p + 5.
        let spec = TopNSpec {
            close: Some(KeyClose {
                key: 0,
                slack_us: 5,
            }),
            ..spec(ROW_NUMBER_TOP_2)
        };
        let mut h = Harness::new(ROW_NUMBER_TOP_2);
        h.op = spec.instantiate().unwrap();
        h.step(&["+ 10 1 0\n + 10 2 0\n + 20 3 0"]);
        let held = h.op.state_bytes();
        let mut out = Vec::new();
        h.op.on_frontier(14, &mut out).unwrap();
        assert_eq!(h.op.state_bytes(), held);
        h.op.on_frontier(15, &mut out).unwrap();
        assert!(out.is_empty(), "closing emits nothing");
        assert!(h.op.state_bytes() < held);
        let (op, _) = crate::dataflow::operator::testing::round_trip(
            h.op.as_ref(),
            || spec.instantiate().unwrap(),
            Shard::SINGLE,
            &[input_schema()],
            "closing top-n",
        );
        h.op = op;
        // Partition 20 is still ranked; then it closes too.
        assert_eq!(
            h.step(&["+ 20 1 0"]),
            ["+1 20, 1, 0, 1", "+1 20, 3, 0, 2", "-1 20, 3, 0, 1"]
        );
        h.op.on_frontier(25, &mut out).unwrap();
        assert_eq!(h.op.state_bytes(), 0);
    }

    #[test]
    fn keeps_the_first_n_and_ignores_rows_beyond_it() {
        let mut h = Harness::new(LIMIT_2);
        assert_eq!(
            h.step(&["+ 0 5 1\n + 0 3 1\n + 0 9 1\n + 0 4 1"]),
            ["+1 0, 3, 1", "+1 0, 4, 1"]
        );
        assert!(h.step(&["+ 0 7 1"]).is_empty());
        assert!(h.step(&["- 0 9 1"]).is_empty());
        assert_eq!(h.step(&["+ 0 1 1"]), ["+1 0, 1, 1", "-1 0, 4, 1"]);
    }

    #[test]
    fn retracting_the_top_row_moves_the_next_one_up() {
        let mut h = Harness::new(ROW_NUMBER_TOP_2);
        h.step(&["+ 1 1 0\n + 1 2 0\n + 1 3 0\n + 2 5 0"]);
        assert_eq!(
            h.step(&["- 1 1 0"]),
            [
                "+1 1, 2, 0, 1",
                "+1 1, 3, 0, 2",
                "-1 1, 1, 0, 1",
                "-1 1, 2, 0, 2"
            ]
        );
        assert_eq!(
            h.view.to_lines(),
            ["+1 1, 2, 0, 1", "+1 1, 3, 0, 2", "+1 2, 5, 0, 1"]
        );
    }

    #[test]
    fn a_new_top_row_renumbers_the_rows_below_it() {
        let mut h = Harness::new(Setting {
            limit: Some(3),
            ..ROW_NUMBER_TOP_2
        });
        h.step(&["+ 1 5 0\n + 1 6 0\n + 1 7 0"]);
        assert_eq!(
            h.step(&["+ 1 0 0"]),
            [
                "+1 1, 0, 0, 1",
                "+1 1, 5, 0, 2",
                "+1 1, 6, 0, 3",
                "-1 1, 5, 0, 1",
                "-1 1, 6, 0, 2",
                "-1 1, 7, 0, 3"
            ]
        );
    }

    #[test]
    fn ties_are_broken_by_the_whole_row_whatever_the_arrival_order() {
        let mut a = Harness::new(LIMIT_2);
        let mut b = Harness::new(LIMIT_2);
        a.step(&["+ 0 1 9", "+ 0 1 3\n + 0 1 5"]);
        b.step(&["+ 0 1 5"]);
        b.step(&["+ 0 1 9\n + 0 1 3"]);
        assert_eq!(a.view.to_lines(), ["+1 0, 1, 3", "+1 0, 1, 5"]);
        assert_eq!(b.view.to_lines(), a.view.to_lines());
    }

    #[test]
    fn a_duplicated_row_fills_consecutive_positions() {
        let mut h = Harness::new(Setting {
            limit: Some(3),
            ..ROW_NUMBER_TOP_2
        });
        assert_eq!(
            h.step(&["3 1 4 0\n + 1 2 0"]),
            ["+1 1, 2, 0, 1", "+1 1, 4, 0, 2", "+1 1, 4, 0, 3"]
        );
        // Still three copies reach position 3: nothing changes.
        assert!(h.step(&["- 1 4 0"]).is_empty());
        assert_eq!(
            h.step(&["- 1 2 0"]),
            ["+1 1, 4, 0, 1", "-1 1, 2, 0, 1", "-1 1, 4, 0, 3"]
        );

        let mut plain = Harness::new(LIMIT_2);
        assert_eq!(plain.step(&["3 0 4 0\n + 0 5 0"]), ["+2 0, 4, 0"]);
        assert_eq!(plain.step(&["-2 0 4 0"]), ["+1 0, 5, 0", "-1 0, 4, 0"]);
    }

    #[test]
    fn offset_skips_the_head_and_numbers_count_it() {
        let mut h = Harness::new(Setting {
            offset: 2,
            ..ROW_NUMBER_TOP_2
        });
        assert_eq!(
            h.step(&["+ 1 1 0\n + 1 2 0\n + 1 3 0\n + 1 4 0\n + 1 5 0"]),
            ["+1 1, 3, 0, 3", "+1 1, 4, 0, 4"]
        );
        assert_eq!(
            h.step(&["- 1 1 0"]),
            [
                "+1 1, 4, 0, 3",
                "+1 1, 5, 0, 4",
                "-1 1, 3, 0, 3",
                "-1 1, 4, 0, 4"
            ]
        );
        // A change past the window leaves it alone.
        assert!(h.step(&["+ 1 9 0"]).is_empty());
    }

    #[test]
    fn descending_with_nulls_first_or_last() {
        let rows = "+ 0 1 0\n + 0 . 0\n + 0 3 0\n + 0 2 0";
        let mut first = Harness::new(Setting {
            descending: true,
            nulls_first: true,
            ..LIMIT_2
        });
        assert_eq!(first.step(&[rows]), ["+1 0, , 0", "+1 0, 3, 0"]);
        let mut last = Harness::new(Setting {
            descending: true,
            nulls_first: false,
            ..LIMIT_2
        });
        assert_eq!(last.step(&[rows]), ["+1 0, 2, 0", "+1 0, 3, 0"]);
        assert_eq!(last.step(&["- 0 3 0"]), ["+1 0, 1, 0", "-1 0, 3, 0"]);
        let mut ascending_nulls_last = Harness::new(Setting {
            limit: Some(4),
            ..LIMIT_2
        });
        ascending_nulls_last.step(&[rows]);
        assert_eq!(
            ascending_nulls_last.step(&["+ 0 0 0"]),
            ["+1 0, 0, 0", "-1 0, , 0"]
        );
    }

    #[test]
    fn changes_that_cancel_within_an_epoch_emit_nothing() {
        let mut h = Harness::new(ROW_NUMBER_TOP_2);
        h.step(&["+ 1 5 0"]);
        assert!(h.step(&["+ 1 1 0", "- 1 1 0"]).is_empty());
        assert!(h.step(&[]).is_empty());
    }

    #[test]
    fn describe_reads_like_the_query() {
        let text = spec(Setting {
            limit: Some(3),
            descending: true,
            nulls_first: true,
            ..ROW_NUMBER_TOP_2
        })
        .describe();
        assert_eq!(
            text,
            "TopN: partition by [c0@0] order by [c1@1 DESC] limit 3 (row_number)"
        );
        let text = spec(Setting {
            offset: 5,
            nulls_first: true,
            ..LIMIT_2
        })
        .describe();
        assert_eq!(text, "TopN: order by [c1@1 NULLS FIRST] limit 2 offset 5");
    }

    #[test]
    fn state_is_freed_when_rows_are_retracted() {
        let mut h = Harness::new(ROW_NUMBER_TOP_2);
        h.step(&["+ 1 1 0\n + 2 2 0"]);
        assert!(h.op.state_bytes() > 0);
        h.step(&["- 1 1 0\n - 2 2 0"]);
        assert_eq!(h.op.state_bytes(), 0);
        assert!(h.view.is_empty());
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    type Row = (Option<i64>, Option<i64>, i64);

    fn cell(v: Option<i64>) -> String {
        v.map_or(String::new(), |v| v.to_string())
    }

    /// From scratch: sort each partition's rows (sort key, then the whole
    /// row ascending with NULLs first, as the row encoding orders it) and
    /// cut the window.
    fn reference(input: &BTreeMap<Row, i64>, s: Setting) -> Vec<String> {
        let mut partitions: BTreeMap<Option<i64>, Vec<Row>> = BTreeMap::new();
        for (row, n) in input {
            let p = if s.partitioned { row.0 } else { None };
            let rows = partitions.entry(p).or_default();
            rows.extend(std::iter::repeat_n(*row, usize::try_from(*n).unwrap()));
        }
        let mut out: BTreeMap<String, i64> = BTreeMap::new();
        for rows in partitions.values_mut() {
            rows.sort_by(|a, b| order_key(a.1, b.1, s).then(a.cmp(b)));
            let end = s.limit.map_or(rows.len(), |l| s.offset + l);
            for (pos, row) in rows.iter().enumerate().take(end).skip(s.offset) {
                let mut line = format!("{}, {}, {}", cell(row.0), cell(row.1), row.2);
                if s.row_number {
                    line.push_str(&format!(", {}", pos + 1));
                }
                *out.entry(line).or_default() += 1;
            }
        }
        let mut lines: Vec<String> = out.into_iter().map(|(l, n)| format!("{n:+} {l}")).collect();
        lines.sort();
        lines
    }

    fn order_key(a: Option<i64>, b: Option<i64>, s: Setting) -> Ordering {
        match (a, b) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if s.nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if s.nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) if s.descending => y.cmp(&x),
            (Some(x), Some(y)) => x.cmp(&y),
        }
    }

    /// One random batch, keeping `input` (the accumulated input) free of
    /// negative counts.
    fn random_batch(rng: &mut XorShift, input: &mut BTreeMap<Row, i64>) -> ChangeBatch {
        let value = |rng: &mut XorShift, n: u64, nulls: bool| match nulls && rng.below(6) == 0 {
            true => None,
            false => Some(rng.below(n) as i64),
        };
        let mut text = String::from(" I I I\n");
        for _ in 0..1 + rng.below(6) {
            let (row, diff) = if input.is_empty() || rng.below(5) < 3 {
                let row = (
                    value(rng, 3, true),
                    value(rng, 6, true),
                    rng.below(3) as i64,
                );
                (row, 1 + (rng.below(4) == 0) as i64)
            } else {
                let k = rng.below(input.len() as u64) as usize;
                let (row, n) = input.iter().nth(k).unwrap();
                (*row, -(1 + (*n > 1 && rng.below(3) == 0) as i64))
            };
            *input.entry(row).or_default() += diff;
            input.retain(|_, n| *n != 0);
            let p = row.0.map_or(".".to_string(), |v| v.to_string());
            let o = row.1.map_or(".".to_string(), |v| v.to_string());
            text.push_str(&format!("{diff} {p} {o} {}\n", row.2));
        }
        ChangeBatch::from_pretty(&text).unwrap()
    }

    /// Random epochs over `workers` instances, routed as the exchange
    /// would; after each the accumulated output must match `reference`.
    fn oracle(seed: u64, s: Setting, workers: usize) {
        let spec = spec(s);
        let schema = Arc::clone(&spec.output_schema);
        let mut ops: Vec<_> = (0..workers).map(|_| spec.instantiate().unwrap()).collect();
        let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut input = BTreeMap::new();
        let mut view = ChangeBatch::empty(Arc::clone(&schema));
        for step in 0..60 {
            let mut out = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let batch = random_batch(&mut rng, &mut input);
                let keys = evaluate_all(&spec.partition_exprs, &batch.data).unwrap();
                let shards = shard_of_rows(&keys, batch.len(), workers).unwrap();
                for (w, op) in ops.iter_mut().enumerate() {
                    let mine: Vec<u32> = (0..batch.len())
                        .filter(|i| shards[*i] == w)
                        .map(|i| i as u32)
                        .collect();
                    op.on_batch(0, batch.take(&mine).unwrap(), &mut out)
                        .unwrap();
                }
            }
            for op in &mut ops {
                op.on_barrier(step, &mut out).unwrap();
            }
            out.push(view);
            view = ChangeBatch::concat(&schema, &out)
                .unwrap()
                .consolidate()
                .unwrap();
            assert_eq!(
                view.to_lines(),
                reference(&input, s),
                "seed {seed}, step {step}, {workers} workers, {s:?}"
            );
        }
    }

    #[test]
    fn oracle_matches_a_from_scratch_ranking() {
        let settings = [
            ROW_NUMBER_TOP_2,
            Setting {
                limit: Some(3),
                descending: true,
                nulls_first: true,
                ..ROW_NUMBER_TOP_2
            },
            Setting {
                offset: 2,
                limit: None,
                ..ROW_NUMBER_TOP_2
            },
            Setting {
                offset: 1,
                limit: Some(2),
                row_number: false,
                nulls_first: true,
                ..ROW_NUMBER_TOP_2
            },
            Setting {
                offset: 1,
                limit: Some(3),
                ..LIMIT_2
            },
            Setting {
                limit: Some(1),
                descending: true,
                ..LIMIT_2
            },
            Setting {
                limit: None,
                descending: true,
                nulls_first: true,
                ..LIMIT_2
            },
        ];
        for s in settings {
            for seed in 1..=6 {
                oracle(seed, s, 1);
                oracle(seed, s, 2);
            }
        }
    }

    fn round_trip(s: Setting, op: &dyn Operator) -> Box<dyn Operator> {
        let fresh = || spec(s).instantiate().unwrap();
        let inputs = [input_schema()];
        let what = format!("{s:?}");
        crate::dataflow::operator::testing::round_trip(op, fresh, Shard::SINGLE, &inputs, &what).0
    }

    /// One epoch of `batches`; its output as it came, unconsolidated.
    fn epoch(op: &mut dyn Operator, batches: &[ChangeBatch], schema: &SchemaRef) -> ChangeBatch {
        let mut out = Vec::new();
        for batch in batches {
            op.on_batch(0, batch.clone(), &mut out).unwrap();
        }
        op.on_barrier(1, &mut out).unwrap();
        ChangeBatch::concat(schema, &out).unwrap()
    }

    /// A batch retracting every row of `input`, which it empties.
    fn retract_all(input: &mut BTreeMap<Row, i64>) -> ChangeBatch {
        let cell = |v: Option<i64>| v.map_or(".".to_string(), |v| v.to_string());
        let mut text = String::from(" I I I\n");
        for ((p, o, id), n) in std::mem::take(input) {
            text.push_str(&format!("{} {} {} {id}\n", -n, cell(p), cell(o)));
        }
        ChangeBatch::from_pretty(&text).unwrap()
    }

    /// Random epochs, a checkpoint, then the same epochs (ending with
    /// every row retracted, then some inserted again) fed to the original
    /// and the restored instance: they must output alike at every epoch,
    /// and the view the restored one continues must match the reference.
    #[test]
    fn checkpoint_restores_a_top_n_that_continues_alike() {
        let settings = [
            ROW_NUMBER_TOP_2,
            Setting {
                offset: 1,
                limit: Some(3),
                descending: true,
                ..ROW_NUMBER_TOP_2
            },
            LIMIT_2,
            Setting {
                partitioned: true,
                offset: 1,
                limit: None,
                nulls_first: true,
                ..LIMIT_2
            },
        ];
        for s in settings {
            for (seed, before) in [(4u64, 0), (19, 5), (271, 30)] {
                let schema = spec(s).output_schema;
                let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let mut input = BTreeMap::new();
                let mut original = spec(s).instantiate().unwrap();
                let mut view = ChangeBatch::empty(Arc::clone(&schema));
                let random_epoch = |rng: &mut XorShift, input: &mut BTreeMap<Row, i64>| {
                    (0..1 + rng.below(3))
                        .map(|_| random_batch(rng, input))
                        .collect::<Vec<_>>()
                };
                for _ in 0..before {
                    let out = epoch(
                        original.as_mut(),
                        &random_epoch(&mut rng, &mut input),
                        &schema,
                    );
                    view = ChangeBatch::concat(&schema, &[view, out]).unwrap();
                }
                let mut restored = round_trip(s, original.as_ref());
                for n in 0..30 {
                    let batches = match n {
                        25 => vec![retract_all(&mut input)],
                        _ => random_epoch(&mut rng, &mut input),
                    };
                    let context = format!("{s:?}, seed {seed}, epoch {n} after {before}");
                    let expected = epoch(original.as_mut(), &batches, &schema);
                    let out = epoch(restored.as_mut(), &batches, &schema);
                    assert_eq!(out.to_lines(), expected.to_lines(), "{context}");
                    view = ChangeBatch::concat(&schema, &[view, out]).unwrap();
                    let lines = view.clone().consolidate().unwrap().to_lines();
                    assert_eq!(lines, reference(&input, s), "{context}");
                    let bytes = original.state_bytes();
                    assert_eq!(restored.state_bytes(), bytes, "{context}");
                    assert!(n != 25 || bytes == 0, "{context}: state left");
                }
            }
        }
    }

    #[test]
    fn checkpoint_within_an_epoch_is_refused() {
        let mut op = spec(LIMIT_2).instantiate().unwrap();
        let batch = ChangeBatch::from_pretty(" I I I\n + 1 2 3").unwrap();
        op.on_batch(0, batch, &mut Vec::new()).unwrap();
        assert!(op.checkpoint(&mut StateWriter::new()).is_err());
    }
}
