//! Join: the incremental equi-join of two inputs (inner, left, right and
//! full outer), with an optional extra condition over the joined row.
//!
//! It owns each side's rows, with their multiplicities, indexed by the
//! encoded join key, and for outer joins the bookkeeping that decides which
//! rows are NULL-padded. The exchange in front of it (placed by the planner)
//! hash-partitions both inputs by the join key; this file assumes it.
//!
//! A batch on one port is joined with the current state of the other side,
//! then added to its own side (ΔL⋈R, then L'⋈ΔR), so the output of a step
//! is right even when both ports receive batches in it.
//!
//! Padding is a function of the state, so emitting its change at every
//! update telescopes to the right result at the end of a step, even when a
//! retraction arrives before its insertion within a step:
//! - without a filter, a row is padded when the other side holds nothing
//!   under its key: a key's bucket appearing or vanishing flips the padding
//!   of the other side's rows under that key, every other update is
//!   O(changed rows);
//! - with a filter, each stored row keeps the weighted count of other-side
//!   rows it matches (key equal and filter true), updated from the pairs a
//!   batch evaluates anyway; a row is padded while its count is zero.
//!
//! Padding changes are held until the epoch's barrier: a key arriving on
//! both sides in one epoch (every key, in the first load of two tables)
//! would otherwise emit its padded rows and their retraction.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, UInt32Array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{can_cast_types, cast, prep_null_mask_filter, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::Rows;
use datafusion::common::HashMap as FastMap;
use datafusion::physical_plan::PhysicalExpr;

use super::{ChangeBatch, CloseSchedule, KeyClose, Operator, Shard, OUTPUT_BATCH_ROWS};
use crate::dataflow::expr::{evaluate, evaluate_all, timestamp_micros};
use crate::dataflow::row::{KeyBytes, RowCodec};
use crate::dataflow::state::{StateReader, StateWriter};
use crate::error::{Error, Result};

mod side;

use side::{Presence, Side};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

#[derive(Debug, Clone)]
pub struct JoinSpec {
    pub kind: JoinKind,
    /// Over the left input (port 0).
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Over the right input (port 1).
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Extra condition over the joined row (left columns, then right).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// `IS NOT DISTINCT FROM` keys: NULL matches NULL.
    pub null_equals_null: bool,
    pub left_schema: SchemaRef,
    pub right_schema: SchemaRef,
    /// Left fields then right fields.
    pub output_schema: SchemaRef,
    /// Set when a key column is a window of event time on both sides: a
    /// key is final once the frontier passes it, and is let go of.
    pub close: Option<KeyClose>,
    /// Per side, a time column of its rows (`key` is the column's index in
    /// the side's rows) such that a row can match nothing still to come on
    /// the other side once the frontier reaches its time plus the slack:
    /// an interval join's condition over two streams. Such rows are let go
    /// of one by one.
    pub expire: [Option<KeyClose>; 2],
    /// A lookup join (`FOR SYSTEM_TIME AS OF PROCTIME()` on the right
    /// input): a left row is joined with the right side as it is when the
    /// row arrives and is not kept; right changes update the side and emit
    /// nothing. The planner allows it over an append-only left input only.
    pub lookup: bool,
}

impl JoinKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            JoinKind::Inner => "inner",
            JoinKind::Left => "left outer",
            JoinKind::Right => "right outer",
            JoinKind::Full => "full outer",
        }
    }

    /// Whether the unmatched rows of `side` (0 left, 1 right) appear,
    /// NULL-padded, in the output.
    fn pads(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinKind::Full, _) | (JoinKind::Left, 0) | (JoinKind::Right, 1)
        )
    }
}

impl JoinSpec {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Join::new(self)?))
    }

    /// E.g. `Join (left outer): k@0 = k@0 [filter: v@1 < v@3]`: left key
    /// expressions are over the left input, right ones over the right
    /// input, the filter over the joined row (left columns, then right).
    pub fn describe(&self) -> String {
        let eq = if self.null_equals_null {
            "IS NOT DISTINCT FROM"
        } else {
            "="
        };
        let on = if self.left_keys.is_empty() {
            "cross product".to_string()
        } else {
            let pairs: Vec<String> = self
                .left_keys
                .iter()
                .zip(&self.right_keys)
                .map(|(l, r)| format!("{l} {eq} {r}"))
                .collect();
            pairs.join(" AND ")
        };
        let filter = match &self.filter {
            Some(f) => format!(" [filter: {f}]"),
            None => String::new(),
        };
        let mut close = match self.close {
            Some(c) => format!(
                " (keys close when the frontier passes {} + {} us)",
                self.left_keys[c.key], c.slack_us
            ),
            None => String::new(),
        };
        let sides = [("left", &self.left_schema), ("right", &self.right_schema)];
        for ((side, schema), expire) in sides.iter().zip(&self.expire) {
            if let Some(e) = expire {
                close.push_str(&format!(
                    " ({side} rows expire when the frontier passes {} + {} us)",
                    schema.field(e.key).name(),
                    e.slack_us
                ));
            }
        }
        let lookup = if self.lookup { ", lookup" } else { "" };
        format!("Join ({}{lookup}): {on}{filter}{close}", self.kind.name())
    }
}

impl Join {
    fn new(spec: &JoinSpec) -> Result<Join> {
        if spec.left_keys.len() != spec.right_keys.len() {
            return Err(Error::Internal(format!(
                "join has {} left keys but {} right keys",
                spec.left_keys.len(),
                spec.right_keys.len()
            )));
        }
        let sides_width = spec.left_schema.fields().len() + spec.right_schema.fields().len();
        if spec.output_schema.fields().len() != sides_width {
            return Err(Error::Internal(format!(
                "join output has {} columns, its inputs {sides_width}",
                spec.output_schema.fields().len()
            )));
        }
        let mut key_types = Vec::with_capacity(spec.left_keys.len());
        for (l, r) in spec.left_keys.iter().zip(&spec.right_keys) {
            let left = l.data_type(&spec.left_schema)?;
            let right = r.data_type(&spec.right_schema)?;
            if left != right && !can_cast_types(&right, &left) {
                return Err(Error::Internal(format!(
                    "join keys {l} ({left}) and {r} ({right}) have types that do not cast"
                )));
            }
            key_types.push(left);
        }
        let key_codec = match key_types.is_empty() {
            true => None,
            false => Some(RowCodec::new(&key_types)?),
        };
        Ok(Join {
            kind: spec.kind,
            keys: [spec.left_keys.clone(), spec.right_keys.clone()],
            key_types,
            key_codec,
            filter: spec.filter.clone(),
            null_equals_null: spec.null_equals_null,
            output_schema: Arc::clone(&spec.output_schema),
            sides: [
                Side::new(Arc::clone(&spec.left_schema))?,
                Side::new(Arc::clone(&spec.right_schema))?,
            ],
            padding: Padding::default(),
            close: spec.close,
            closing: CloseSchedule::default(),
            expire: spec.expire,
            expiring: [CloseSchedule::default(), CloseSchedule::default()],
            lookup: spec.lookup,
        })
    }
}

/// One worker's instance of a join: both sides' rows and the match counts.
#[derive(Debug)]
struct Join {
    kind: JoinKind,
    /// Key expressions per port.
    keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// The left keys' types; right keys are cast to them so that equal
    /// values encode to equal bytes on both sides.
    key_types: Vec<DataType>,
    /// `None` for a cross join: every row has the empty key.
    key_codec: Option<RowCodec>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    null_equals_null: bool,
    output_schema: SchemaRef,
    sides: [Side; 2],
    padding: Padding,
    close: Option<KeyClose>,
    /// With a closing key: keys by when they close (a key held on both
    /// sides is listed twice; letting go of it twice is harmless).
    closing: CloseSchedule,
    expire: [Option<KeyClose>; 2],
    /// Per side with expiring rows: the keys of its rows by when they
    /// expire (a key once per row).
    expiring: [CloseSchedule; 2],
    lookup: bool,
}

impl Operator for Join {
    fn on_batch(
        &mut self,
        port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if port > 1 {
            return Err(Error::Internal(format!(
                "a join has ports 0 and 1, not {port}"
            )));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let (keys, matchable) = self.encode_keys(port, &batch.data)?;
        if self.lookup {
            return self.look_up(port, &batch, &keys, &matchable, out);
        }
        let probed = self.probe(port, &batch, &keys, &matchable, out)?;
        if self.kind.pads(port) {
            self.pad_probe_rows(port, &batch, &matchable, &probed.unmatched)?;
        }
        if !probed.touched.is_empty() {
            self.apply_touched(port, &keys, probed.touched)?;
        }
        self.store(port, &batch, &keys, &matchable, &probed.sums)
    }

    fn on_barrier(&mut self, _epoch: u64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        self.padding.flush(&self.output_schema, out)
    }

    /// Lets go of the keys the frontier has passed: no row under them can
    /// come on either side, so their joined rows and padding are final.
    fn on_frontier(&mut self, frontier_us: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        for key in self.closing.due(frontier_us) {
            self.sides.iter_mut().for_each(|side| side.remove_key(&key));
        }
        for port in 0..2 {
            let Some(expire) = self.expire[port] else {
                continue;
            };
            let mut due = self.expiring[port].due(frontier_us);
            due.sort_unstable();
            due.dedup();
            for key in due {
                let (rows, times) = self.timed_rows(port, expire.key, &key)?;
                for ((row, weight), time) in rows.iter().zip(times.iter()) {
                    if time.is_some_and(|t| t.saturating_add(expire.slack_us) <= frontier_us) {
                        self.sides[port].update(&key, row, -weight, 0);
                    }
                }
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.sides.iter().map(|s| s.bytes).sum::<usize>()
            + self.padding.bytes()
            + self.closing.bytes()
            + self
                .expiring
                .iter()
                .map(CloseSchedule::bytes)
                .sum::<usize>()
    }

    /// Both sides' rows. Padding is per epoch, flushed at the barrier.
    fn checkpoint(&self, state: &mut StateWriter) -> Result<()> {
        if !self.padding.batches.is_empty() {
            return Err(Error::Internal(
                "join checkpointed with padding held since the barrier".into(),
            ));
        }
        self.sides.iter().for_each(|side| side.write(state));
        Ok(())
    }

    /// The sides' schemas come from the spec, not from `inputs`.
    fn restore(
        &mut self,
        _shard: Shard,
        _inputs: &[SchemaRef],
        state: &mut StateReader<'_>,
    ) -> Result<()> {
        self.sides
            .iter_mut()
            .try_for_each(|side| side.read(state))?;
        for port in 0..2 {
            let keys: Vec<KeyBytes> = self.sides[port].keys().map(KeyBytes::new).collect();
            self.schedule_closes(keys.iter().map(|k| k.as_slice()))?;
            if let Some(expire) = self.expire[port] {
                for key in &keys {
                    let (rows, times) = self.timed_rows(port, expire.key, key)?;
                    let keys = vec![key.as_slice(); rows.len()];
                    let times: ArrayRef = Arc::new(times);
                    self.expiring[port].schedule(&keys, &times, expire.slack_us)?;
                }
            }
        }
        Ok(())
    }
}

impl Join {
    /// A lookup join's batch: left rows are joined with the right side as
    /// it is now (a LEFT join pads the unmatched, for good) and forgotten;
    /// right rows only update the side.
    fn look_up(
        &mut self,
        port: usize,
        batch: &ChangeBatch,
        keys: &Encoded,
        matchable: &Matchable,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if port == 1 {
            return self.store(1, batch, keys, matchable, &[]);
        }
        let probed = self.probe(0, batch, keys, matchable, out)?;
        if self.kind.pads(0) {
            self.pad_probe_rows(0, batch, matchable, &probed.unmatched)?;
        }
        Ok(())
    }
}

/// Stored rows copied out of a side, with their weights.
type CopiedRows = Vec<(Box<[u8]>, i64)>;

/// What probing a batch against the other side found out.
struct Probed {
    /// Matchable probe rows that match nothing on the other side.
    unmatched: Vec<u32>,
    /// With a filter: per probe row, the weighted count of other-side rows
    /// it matches. Empty without a filter.
    sums: Vec<i64>,
    /// With a filter, when the other side pads: its rows whose match count
    /// this batch changes, by the address of the stored row (stored rows
    /// are never empty, so addresses are distinct).
    touched: FastMap<usize, Touched>,
}

/// A stored row of the other side whose match count changes.
struct Touched {
    /// A probe row with the same key, to find the bucket again.
    probe_row: u32,
    row: Box<[u8]>,
    delta: i64,
}

/// Candidate pairs of a probe: probe row, stored row, stored weight.
#[derive(Default)]
struct Pairs<'a> {
    probe: Vec<u32>,
    stored: Vec<&'a [u8]>,
    weights: Vec<i64>,
}

impl Pairs<'_> {
    fn clear(&mut self) {
        self.probe.clear();
        self.stored.clear();
        self.weights.clear();
    }
}

impl Join {
    /// The batch's encoded keys, and which rows can match at all (a NULL in
    /// a key matches nothing, unless NULL equals NULL).
    fn encode_keys(&self, port: usize, data: &RecordBatch) -> Result<(Encoded, Matchable)> {
        let Some(codec) = &self.key_codec else {
            return Ok((Encoded::Empty, Matchable(None)));
        };
        let mut columns = evaluate_all(&self.keys[port], data)?;
        for (column, data_type) in columns.iter_mut().zip(&self.key_types) {
            if column.data_type() != data_type {
                *column = cast(column, data_type)?;
            }
        }
        let nulls = match self.null_equals_null {
            true => None,
            false => {
                let per_column: Vec<Option<NullBuffer>> =
                    columns.iter().map(|c| c.logical_nulls()).collect();
                NullBuffer::union_many(per_column.iter().map(Option::as_ref))
            }
        };
        Ok((Encoded::Rows(codec.encode(&columns)?), Matchable(nulls)))
    }

    /// Emits the batch joined with the other side's current rows, and finds
    /// which probe rows match nothing.
    fn probe(
        &self,
        port: usize,
        batch: &ChangeBatch,
        keys: &Encoded,
        matchable: &Matchable,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<Probed> {
        let filtered = self.filter.is_some();
        let mut probed = Probed {
            unmatched: Vec::new(),
            sums: if filtered {
                vec![0; batch.len()]
            } else {
                Vec::new()
            },
            touched: FastMap::default(),
        };
        let mut pairs = Pairs::default();
        for i in 0..batch.len() {
            if !matchable.at(i) {
                continue;
            }
            let held = self.sides[1 - port].for_each(keys.get(i), |row, counts| {
                pairs.probe.push(i as u32);
                pairs.stored.push(row);
                pairs.weights.push(counts.weight);
                if pairs.probe.len() >= OUTPUT_BATCH_ROWS {
                    self.flush(port, batch, &mut pairs, &mut probed, out)?;
                }
                Ok(())
            })?;
            if !held && !filtered {
                probed.unmatched.push(i as u32);
            }
        }
        self.flush(port, batch, &mut pairs, &mut probed, out)?;
        if filtered {
            probed.unmatched = (0..batch.len())
                .filter(|i| matchable.at(*i) && probed.sums[*i] == 0)
                .map(|i| i as u32)
                .collect();
        }
        Ok(probed)
    }
}

impl Join {
    /// Emits the joined rows of `pairs` (those passing the filter) and
    /// counts, with a filter, the matches they make.
    fn flush(
        &self,
        port: usize,
        batch: &ChangeBatch,
        pairs: &mut Pairs<'_>,
        probed: &mut Probed,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if pairs.probe.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(std::mem::take(&mut pairs.probe));
        let probe_columns = take_columns(batch.data.columns(), &indices)?;
        let stored_columns = self.sides[1 - port].decode(&pairs.stored)?;
        let diffs: Vec<i64> = indices
            .values()
            .iter()
            .zip(&pairs.weights)
            .map(|(i, w)| batch.diffs[*i as usize].saturating_mul(*w))
            .collect();
        let (left, right) = by_side(port, Some(probe_columns), Some(stored_columns));
        let joined = self.assemble(left, right, diffs)?;
        let kept = match &self.filter {
            None => joined,
            Some(filter) => {
                let mask = predicate_mask(filter, &joined.data)?;
                self.count_matches(port, batch, indices.values(), pairs, &mask, probed);
                joined.filter(&mask)?
            }
        };
        if !kept.is_empty() {
            out.push(kept);
        }
        pairs.clear();
        Ok(())
    }

    /// Adds the pairs passing the filter to the match counts of their probe
    /// rows and, when the other side pads, of their stored rows.
    fn count_matches(
        &self,
        port: usize,
        batch: &ChangeBatch,
        probe: &[u32],
        pairs: &Pairs<'_>,
        mask: &BooleanArray,
        probed: &mut Probed,
    ) {
        let pads_other = self.kind.pads(1 - port);
        for (k, i) in probe.iter().enumerate() {
            if !mask.value(k) {
                continue;
            }
            probed.sums[*i as usize] += pairs.weights[k];
            if pads_other {
                let row = pairs.stored[k];
                probed
                    .touched
                    .entry(row.as_ptr() as usize)
                    .or_insert_with(|| Touched {
                        probe_row: *i,
                        row: row.into(),
                        delta: 0,
                    })
                    .delta += batch.diffs[*i as usize];
            }
        }
    }

    /// Pads the probe rows that match nothing: those with a NULL key and
    /// those `probe` found no partner for.
    fn pad_probe_rows(
        &mut self,
        port: usize,
        batch: &ChangeBatch,
        matchable: &Matchable,
        unmatched: &[u32],
    ) -> Result<()> {
        let mut rows = unmatched.to_vec();
        if matchable.0.as_ref().is_some_and(|n| n.null_count() > 0) {
            rows.extend(
                (0..batch.len())
                    .filter(|i| !matchable.at(*i))
                    .map(|i| i as u32),
            );
        }
        if rows.is_empty() {
            return Ok(());
        }
        let padded = batch.take(&rows)?;
        let (left, right) = by_side(port, Some(padded.data.columns().to_vec()), None);
        let padded = self.assemble(left, right, padded.diffs)?;
        self.padding.push(padded);
        Ok(())
    }

    /// Applies the match-count changes of the other side's rows, and pads
    /// (or unpads) those whose count went to (or from) zero.
    fn apply_touched(
        &mut self,
        port: usize,
        keys: &Encoded,
        touched: FastMap<usize, Touched>,
    ) -> Result<()> {
        let other = 1 - port;
        let mut rows: Vec<Box<[u8]>> = Vec::new();
        let mut diffs = Vec::new();
        for t in touched.into_values() {
            let counts = self.sides[other]
                .counts_mut(keys.get(t.probe_row as usize), &t.row)
                .ok_or_else(|| Error::Internal("join: a matched row left its side".into()))?;
            let was_padded = counts.matches == 0;
            counts.matches += t.delta;
            match (was_padded, counts.matches == 0) {
                (true, false) => diffs.push(-counts.weight),
                (false, true) => diffs.push(counts.weight),
                _ => continue,
            }
            rows.push(t.row);
        }
        let rows: Vec<&[u8]> = rows.iter().map(|r| r.as_ref()).collect();
        let padded = self.padded_stored(other, &rows, &diffs)?;
        self.padding.extend(padded);
        Ok(())
    }

    /// Adds the batch's matchable rows to its side. Without a filter, a key
    /// appearing on (vanishing from) this side retracts (restores) the
    /// padding of the other side's rows under it.
    fn store(
        &mut self,
        port: usize,
        batch: &ChangeBatch,
        keys: &Encoded,
        matchable: &Matchable,
        sums: &[i64],
    ) -> Result<()> {
        let rows = self.sides[port].encode(&batch.data)?;
        let watch = self.filter.is_none() && self.kind.pads(1 - port) && !self.lookup;
        // Key → whether this side held it before the batch.
        let mut flipped: FastMap<&[u8], bool> = FastMap::default();
        let mut created: Vec<&[u8]> = Vec::new();
        for i in 0..batch.len() {
            if !matchable.at(i) {
                continue;
            }
            let key = keys.get(i);
            let matches = sums.get(i).copied().unwrap_or(0);
            match self.sides[port].update(key, rows.get(i), batch.diffs[i], matches) {
                Presence::Created => {
                    if self.close.is_some() {
                        created.push(key);
                    }
                    if watch {
                        flipped.entry(key).or_insert(false);
                    }
                }
                Presence::Removed if watch => {
                    flipped.entry(key).or_insert(true);
                }
                _ => {}
            };
        }
        self.schedule_closes(created.into_iter())?;
        self.schedule_expiry(port, batch, keys, matchable)?;
        let mut stored: Vec<&[u8]> = Vec::new();
        let mut diffs = Vec::new();
        for (key, was_present) in flipped {
            if self.sides[port].holds(key) == was_present {
                continue;
            }
            let sign = if was_present { 1 } else { -1 };
            self.sides[1 - port].for_each(key, |row, counts| {
                stored.push(row);
                diffs.push(sign * counts.weight);
                Ok(())
            })?;
        }
        let padded = self.padded_stored(1 - port, &stored, &diffs)?;
        self.padding.extend(padded);
        Ok(())
    }

    /// The rows of `port` under `key` with their weights, and the times
    /// in their column `column`, in microseconds.
    fn timed_rows(
        &self,
        port: usize,
        column: usize,
        key: &[u8],
    ) -> Result<(CopiedRows, datafusion::arrow::array::Int64Array)> {
        let mut rows: CopiedRows = Vec::new();
        self.sides[port].for_each(key, |row, counts| {
            rows.push((row.into(), counts.weight));
            Ok(())
        })?;
        let slices: Vec<&[u8]> = rows.iter().map(|(r, _)| r.as_ref()).collect();
        let columns = self.sides[port].decode(&slices)?;
        let times = match columns.get(column) {
            Some(c) => timestamp_micros(c)?,
            None => datafusion::arrow::array::Int64Array::new_null(rows.len()),
        };
        Ok((rows, times))
    }

    /// Notes when each row of `batch` (stored on `port` under `keys`)
    /// expires, for a side whose rows do.
    fn schedule_expiry(
        &mut self,
        port: usize,
        batch: &ChangeBatch,
        keys: &Encoded,
        matchable: &Matchable,
    ) -> Result<()> {
        let Some(expire) = self.expire[port] else {
            return Ok(());
        };
        let rows: Vec<u32> = (0..batch.len())
            .filter(|i| matchable.at(*i) && batch.diffs[*i] > 0)
            .map(|i| i as u32)
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let row_keys: Vec<&[u8]> = rows.iter().map(|i| keys.get(*i as usize)).collect();
        let times = take(
            batch.data.column(expire.key).as_ref(),
            &UInt32Array::from(rows),
            None,
        )?;
        self.expiring[port].schedule(&row_keys, &times, expire.slack_us)
    }

    /// Notes when each of `keys` (encoded, newly held on a side) closes:
    /// its closing key's time plus the slack.
    fn schedule_closes<'k>(&mut self, keys: impl Iterator<Item = &'k [u8]>) -> Result<()> {
        let (Some(close), Some(codec)) = (self.close, &self.key_codec) else {
            return Ok(());
        };
        let keys: Vec<&[u8]> = keys.collect();
        if keys.is_empty() {
            return Ok(());
        }
        let columns = codec.decode(keys.iter().copied())?;
        self.closing
            .schedule(&keys, &columns[close.key], close.slack_us)
    }

    /// Stored rows of `side`, NULL-padded, with `diffs`.
    fn padded_stored(
        &self,
        side: usize,
        rows: &[&[u8]],
        diffs: &[i64],
    ) -> Result<Vec<ChangeBatch>> {
        let mut batches = Vec::new();
        for (rows, diffs) in rows
            .chunks(OUTPUT_BATCH_ROWS)
            .zip(diffs.chunks(OUTPUT_BATCH_ROWS))
        {
            let columns = self.sides[side].decode(rows)?;
            let (left, right) = by_side(side, Some(columns), None);
            batches.push(self.assemble(left, right, diffs.to_vec())?);
        }
        Ok(batches)
    }

    /// An output batch from left and right columns; `None` is a side of
    /// NULLs. Columns are cast to the output types where they differ.
    fn assemble(
        &self,
        left: Option<Vec<ArrayRef>>,
        right: Option<Vec<ArrayRef>>,
        diffs: Vec<i64>,
    ) -> Result<ChangeBatch> {
        let rows = diffs.len();
        let fields = self.output_schema.fields();
        let (left_fields, right_fields) = fields.split_at(self.sides[0].schema.fields().len());
        let nulls = |fields: &[datafusion::arrow::datatypes::FieldRef]| -> Vec<ArrayRef> {
            fields
                .iter()
                .map(|f| new_null_array(f.data_type(), rows))
                .collect()
        };
        let mut columns = left.unwrap_or_else(|| nulls(left_fields));
        columns.extend(right.unwrap_or_else(|| nulls(right_fields)));
        for (column, field) in columns.iter_mut().zip(fields.iter()) {
            if column.data_type() != field.data_type() {
                *column = cast(column, field.data_type())?;
            }
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let data =
            RecordBatch::try_new_with_options(Arc::clone(&self.output_schema), columns, &options)?;
        Ok(ChangeBatch::new(data, diffs))
    }
}

/// (left, right) from the columns of the side on `port` and of the other.
/// Padding changes of the current epoch. They are consolidated at the
/// barrier only when they hold both insertions and retractions, the one
/// case where some may cancel.
#[derive(Debug, Default)]
struct Padding {
    batches: Vec<ChangeBatch>,
    inserts: bool,
    retractions: bool,
}

impl Padding {
    fn push(&mut self, batch: ChangeBatch) {
        self.inserts |= batch.diffs.iter().any(|d| *d > 0);
        self.retractions |= batch.diffs.iter().any(|d| *d < 0);
        self.batches.push(batch);
    }

    fn extend(&mut self, batches: Vec<ChangeBatch>) {
        batches.into_iter().for_each(|b| self.push(b));
    }

    fn flush(&mut self, schema: &SchemaRef, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let batches = std::mem::take(&mut self.batches);
        let mixed = std::mem::take(&mut self.inserts) & std::mem::take(&mut self.retractions);
        if !mixed {
            out.extend(batches);
            return Ok(());
        }
        let net = ChangeBatch::concat(schema, &batches)?.consolidate()?;
        for from in (0..net.len()).step_by(OUTPUT_BATCH_ROWS) {
            let len = OUTPUT_BATCH_ROWS.min(net.len() - from);
            let diffs = net.diffs[from..from + len].to_vec();
            out.push(ChangeBatch::new(net.data.slice(from, len), diffs));
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.batches
            .iter()
            .map(|b| b.data.get_array_memory_size() + 8 * b.len())
            .sum()
    }
}

fn by_side<T>(port: usize, this: T, other: T) -> (T, T) {
    match port {
        0 => (this, other),
        _ => (other, this),
    }
}

/// The filter's value per row, NULL (and failed evaluation) being false.
fn predicate_mask(filter: &Arc<dyn PhysicalExpr>, data: &RecordBatch) -> Result<BooleanArray> {
    let value = evaluate(filter, data)?;
    match value.data_type() {
        DataType::Boolean => {
            let mask = value
                .as_boolean_opt()
                .ok_or_else(|| Error::Internal("boolean array of another kind".into()))?;
            Ok(match mask.null_count() {
                0 => mask.clone(),
                _ => prep_null_mask_filter(mask),
            })
        }
        DataType::Null => Ok(BooleanArray::from(vec![false; value.len()])),
        other => Err(Error::Internal(format!(
            "join filter has type {other}, not boolean"
        ))),
    }
}

fn take_columns(columns: &[ArrayRef], indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|c| Ok(take(c.as_ref(), indices, None)?))
        .collect()
}

/// Which rows of a batch have keys that can match (no NULL in them, or
/// NULL equals NULL): `None` for all of them.
struct Matchable(Option<NullBuffer>);

impl Matchable {
    fn at(&self, row: usize) -> bool {
        self.0.as_ref().is_none_or(|n| n.is_valid(row))
    }
}

/// A batch's keys or rows, encoded. `Empty` when there are no columns (a
/// cross join's key, an input without columns): every row encodes alike,
/// to one byte, so that stored rows are never empty.
enum Encoded {
    Rows(Rows),
    Empty,
}

impl Encoded {
    fn get(&self, row: usize) -> &[u8] {
        match self {
            Encoded::Rows(rows) => rows.row(row).data(),
            Encoded::Empty => &[0],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{binary, col};

    /// Both inputs are `(k, v)` pairs of int8, as `from_pretty(" I I")` makes.
    fn side_schema() -> SchemaRef {
        ChangeBatch::from_pretty(" I I").unwrap().schema()
    }

    fn output_schema() -> SchemaRef {
        let fields = ["lk", "lv", "rk", "rv"].map(|n| Field::new(n, DataType::Int64, true));
        Arc::new(Schema::new(fields.to_vec()))
    }

    #[derive(Debug, Clone, Copy)]
    struct Config {
        kind: JoinKind,
        /// `l.k = r.k`; a cross join otherwise.
        equi: bool,
        /// `l.v < r.v`.
        filter: bool,
        null_equals_null: bool,
    }

    fn equi(kind: JoinKind) -> Config {
        Config {
            kind,
            equi: true,
            filter: false,
            null_equals_null: false,
        }
    }

    fn filtered(kind: JoinKind) -> Config {
        Config {
            filter: true,
            ..equi(kind)
        }
    }

    fn spec(c: Config) -> JoinSpec {
        let side = side_schema();
        let output = output_schema();
        let keys = || match c.equi {
            true => vec![col("c0", &side).unwrap()],
            false => vec![],
        };
        let filter = c.filter.then(|| {
            let lv = col("lv", &output).unwrap();
            binary(lv, Op::Lt, col("rv", &output).unwrap(), &output).unwrap()
        });
        JoinSpec {
            kind: c.kind,
            left_keys: keys(),
            right_keys: keys(),
            filter,
            null_equals_null: c.null_equals_null,
            left_schema: Arc::clone(&side),
            right_schema: side,
            output_schema: output,
            close: None,
            expire: [None, None],
            lookup: false,
        }
    }

    /// Feeds one step's literal batches, `(port, batch)`, and returns the
    /// step's output, consolidated.
    fn step(op: &mut dyn Operator, inputs: &[(usize, &str)]) -> Vec<String> {
        let mut out = Vec::new();
        for (port, text) in inputs {
            let batch = ChangeBatch::from_pretty(text).unwrap();
            op.on_batch(*port, batch, &mut out).unwrap();
        }
        op.on_barrier(0, &mut out).unwrap();
        let all = ChangeBatch::concat(&output_schema(), &out).unwrap();
        all.consolidate().unwrap().to_lines()
    }

    fn lines(expected: &[&str]) -> Vec<String> {
        let mut lines: Vec<String> = expected.iter().map(|l| l.to_string()).collect();
        lines.sort();
        lines
    }

    #[test]
    fn inner_join_follows_inserts_and_retractions_on_either_side() {
        let mut op = spec(equi(JoinKind::Inner)).instantiate().unwrap();
        let op = op.as_mut();
        assert!(step(op, &[(0, " I I\n + 1 10\n + 2 20")]).is_empty());
        let out = step(op, &[(1, " I I\n + 1 100\n + 3 300")]);
        assert_eq!(out, lines(&["+1 1, 10, 1, 100"]));
        assert_eq!(
            step(op, &[(0, " I I\n - 1 10")]),
            lines(&["-1 1, 10, 1, 100"])
        );
        // An insertion on one side and a retraction on the other in one step.
        assert!(step(op, &[(0, " I I\n + 1 11"), (1, " I I\n - 1 100")]).is_empty());
        let out = step(op, &[(1, " I I\n + 2 200")]);
        assert_eq!(out, lines(&["+1 2, 20, 2, 200"]));
        assert_eq!(
            step(op, &[(0, " I I\n - 2 20")]),
            lines(&["-1 2, 20, 2, 200"])
        );
        assert!(op.state_bytes() > 0);
    }

    #[test]
    fn keys_the_frontier_passed_are_let_go_of_and_restored_ones_close_too() {
        // Keys are times here: key k closes once the frontier reaches k + 5.
        let spec = JoinSpec {
            close: Some(KeyClose {
                key: 0,
                slack_us: 5,
            }),
            ..spec(equi(JoinKind::Full))
        };
        let mut op = spec.instantiate().unwrap();
        step(
            op.as_mut(),
            &[(0, " I I\n + 10 1\n + 20 2"), (1, " I I\n + 10 3\n + 30 4")],
        );
        let held = op.state_bytes();
        let mut out = Vec::new();
        op.on_frontier(14, &mut out).unwrap();
        assert_eq!(op.state_bytes(), held);
        op.on_frontier(25, &mut out).unwrap();
        assert!(out.is_empty(), "closing emits nothing");
        let after = op.state_bytes();
        assert!(after < held);
        let (mut op, _) = crate::dataflow::operator::testing::round_trip(
            op.as_ref(),
            || spec.instantiate().unwrap(),
            Shard::SINGLE,
            &[side_schema(), side_schema()],
            "closing join",
        );
        // Key 30 is still held: its padding is retracted by a match.
        assert_eq!(
            step(op.as_mut(), &[(0, " I I\n + 30 5")]),
            lines(&["+1 30, 5, 30, 4", "-1 , , 30, 4"])
        );
        op.on_frontier(40, &mut out).unwrap();
        assert_eq!(op.state_bytes(), 0);
    }

    #[test]
    fn a_lookup_join_joins_left_rows_with_the_right_side_as_it_is_then() {
        let spec = JoinSpec {
            lookup: true,
            ..spec(equi(JoinKind::Left))
        };
        let mut op = spec.instantiate().unwrap();
        let op = op.as_mut();
        assert!(step(op, &[(1, " I I\n + 1 100")]).is_empty());
        assert_eq!(
            step(op, &[(0, " I I\n + 1 10\n + 2 20\n + . 30")]),
            lines(&["+1 1, 10, 1, 100", "+1 2, 20, , ", "+1 , 30, , "])
        );
        let right_only = op.state_bytes();
        // Right changes rewrite nothing emitted; later left rows see them.
        assert!(step(op, &[(1, " I I\n - 1 100\n + 1 101\n + 2 200")]).is_empty());
        assert_eq!(
            step(op, &[(0, " I I\n + 1 11\n + 2 21")]),
            lines(&["+1 1, 11, 1, 101", "+1 2, 21, 2, 200"])
        );
        // Left rows are not kept: the state grew by one right row only.
        let one_right_row = op.state_bytes() - right_only;
        assert!(step(op, &[(0, " I I\n + 3 1\n + 3 2\n + 3 3")]).len() == 3);
        assert_eq!(op.state_bytes() - right_only, one_right_row);
    }

    #[test]
    fn rows_expire_once_the_frontier_passes_their_time_plus_the_slack() {
        // Values are times: left rows expire at lv + 5, right rows at rv + 3.
        let spec = JoinSpec {
            expire: [
                Some(KeyClose {
                    key: 1,
                    slack_us: 5,
                }),
                Some(KeyClose {
                    key: 1,
                    slack_us: 3,
                }),
            ],
            ..spec(equi(JoinKind::Inner))
        };
        let mut op = spec.instantiate().unwrap();
        assert_eq!(
            step(
                op.as_mut(),
                &[(0, " I I\n + 1 10\n + 1 20"), (1, " I I\n + 1 10")]
            ),
            lines(&["+1 1, 10, 1, 10", "+1 1, 20, 1, 10"])
        );
        let mut out = Vec::new();
        // The right row (10 + 3) expires, the left ones (15, 25) stay.
        op.on_frontier(14, &mut out).unwrap();
        assert!(step(op.as_mut(), &[(0, " I I\n + 1 30")]).is_empty());
        assert_eq!(
            step(op.as_mut(), &[(1, " I I\n + 1 12")]),
            lines(&["+1 1, 10, 1, 12", "+1 1, 20, 1, 12", "+1 1, 30, 1, 12"])
        );
        op.on_frontier(25, &mut out).unwrap();
        assert!(out.is_empty(), "expiring emits nothing");
        let (mut op, _) = crate::dataflow::operator::testing::round_trip(
            op.as_ref(),
            || spec.instantiate().unwrap(),
            Shard::SINGLE,
            &[side_schema(), side_schema()],
            "expiring join",
        );
        // Left 10 and 20 are gone; 30 stays until 35, on the restored
        // instance too.
        assert_eq!(
            step(op.as_mut(), &[(1, " I I\n + 1 40")]),
            lines(&["+1 1, 30, 1, 40"])
        );
        op.on_frontier(50, &mut out).unwrap();
        assert_eq!(op.state_bytes(), 0);
    }

    #[test]
    fn duplicate_rows_join_once_per_copy() {
        let mut op = spec(equi(JoinKind::Inner)).instantiate().unwrap();
        let op = op.as_mut();
        step(op, &[(0, " I I\n 2 1 10")]);
        let out = step(op, &[(1, " I I\n + 1 100\n + 1 100\n + 1 100")]);
        assert_eq!(out, lines(&["+6 1, 10, 1, 100"]));
        assert_eq!(
            step(op, &[(1, " I I\n - 1 100")]),
            lines(&["-2 1, 10, 1, 100"])
        );
        assert_eq!(
            step(op, &[(0, " I I\n - 1 10")]),
            lines(&["-2 1, 10, 1, 100"])
        );
    }

    #[test]
    fn left_join_pads_until_a_match_arrives_and_after_it_leaves() {
        let mut op = spec(equi(JoinKind::Left)).instantiate().unwrap();
        let op = op.as_mut();
        let out = step(op, &[(0, " I I\n + 1 10\n + . 5\n + 2 20")]);
        assert_eq!(out, lines(&["+1 , 5, , ", "+1 1, 10, , ", "+1 2, 20, , "]));
        let out = step(op, &[(1, " I I\n + 1 100")]);
        assert_eq!(out, lines(&["+1 1, 10, 1, 100", "-1 1, 10, , "]));
        let out = step(op, &[(1, " I I\n + 1 101")]);
        assert_eq!(out, lines(&["+1 1, 10, 1, 101"]));
        let out = step(op, &[(1, " I I\n - 1 100\n - 1 101")]);
        let expected = ["+1 1, 10, , ", "-1 1, 10, 1, 100", "-1 1, 10, 1, 101"];
        assert_eq!(out, lines(&expected));
        // A NULL key on the right matches nothing and is not padded.
        assert!(step(op, &[(1, " I I\n + . 7")]).is_empty());
        assert_eq!(step(op, &[(0, " I I\n - . 5")]), lines(&["-1 , 5, , "]));
    }

    #[test]
    fn right_join_pads_right_rows_until_a_left_row_matches() {
        let mut op = spec(equi(JoinKind::Right)).instantiate().unwrap();
        let op = op.as_mut();
        assert_eq!(
            step(op, &[(1, " I I\n + 1 100")]),
            lines(&["+1 , , 1, 100"])
        );
        let out = step(op, &[(0, " I I\n 2 1 10\n + 2 20")]);
        assert_eq!(out, lines(&["+2 1, 10, 1, 100", "-1 , , 1, 100"]));
        assert_eq!(
            step(op, &[(0, " I I\n - 1 10")]),
            lines(&["-1 1, 10, 1, 100"])
        );
        let out = step(op, &[(0, " I I\n - 1 10")]);
        assert_eq!(out, lines(&["+1 , , 1, 100", "-1 1, 10, 1, 100"]));
        assert_eq!(
            step(op, &[(1, " I I\n - 1 100")]),
            lines(&["-1 , , 1, 100"])
        );
        assert!(op.state_bytes() > 0, "the row (2, 20) stays");
        step(op, &[(0, " I I\n - 2 20")]);
        assert_eq!(op.state_bytes(), 0);
    }

    #[test]
    fn full_join_null_keys_match_nothing_unless_null_equals_null() {
        let both = [(0, " I I\n + . 1\n + 1 10"), (1, " I I\n + . 2\n + 1 100")];
        let mut op = spec(equi(JoinKind::Full)).instantiate().unwrap();
        let out = step(op.as_mut(), &both);
        let expected = ["+1 , , , 2", "+1 , 1, , ", "+1 1, 10, 1, 100"];
        assert_eq!(out, lines(&expected));
        let config = Config {
            null_equals_null: true,
            ..equi(JoinKind::Full)
        };
        let mut op = spec(config).instantiate().unwrap();
        let out = step(op.as_mut(), &both);
        assert_eq!(out, lines(&["+1 , 1, , 2", "+1 1, 10, 1, 100"]));
    }

    #[test]
    fn self_join_with_both_ports_in_one_step_counts_each_pair_once() {
        let mut op = spec(equi(JoinKind::Inner)).instantiate().unwrap();
        let op = op.as_mut();
        let rows = " I I\n + 1 1\n + 1 2";
        let out = step(op, &[(0, rows), (1, rows)]);
        let expected = [
            "+1 1, 1, 1, 1",
            "+1 1, 1, 1, 2",
            "+1 1, 2, 1, 1",
            "+1 1, 2, 1, 2",
        ];
        assert_eq!(out, lines(&expected));
        let gone = " I I\n - 1 1";
        let out = step(op, &[(0, gone), (1, gone)]);
        let expected = ["-1 1, 1, 1, 1", "-1 1, 1, 1, 2", "-1 1, 2, 1, 1"];
        assert_eq!(out, lines(&expected));
    }

    #[test]
    fn filter_decides_which_pairs_match_in_an_inner_join() {
        let mut op = spec(filtered(JoinKind::Inner)).instantiate().unwrap();
        let op = op.as_mut();
        step(op, &[(0, " I I\n + 1 5\n + 2 5")]);
        let out = step(op, &[(1, " I I\n + 1 3\n + 1 7\n + 2 .")]);
        assert_eq!(out, lines(&["+1 1, 5, 1, 7"]));
        assert_eq!(step(op, &[(0, " I I\n - 1 5")]), lines(&["-1 1, 5, 1, 7"]));
    }

    #[test]
    fn filter_decides_which_left_rows_are_padded() {
        let mut op = spec(filtered(JoinKind::Left)).instantiate().unwrap();
        let op = op.as_mut();
        assert_eq!(step(op, &[(0, " I I\n + 1 5")]), lines(&["+1 1, 5, , "]));
        assert!(step(op, &[(1, " I I\n + 1 3")]).is_empty());
        let out = step(op, &[(1, " I I\n + 1 7")]);
        assert_eq!(out, lines(&["+1 1, 5, 1, 7", "-1 1, 5, , "]));
        assert_eq!(step(op, &[(1, " I I\n + 1 8")]), lines(&["+1 1, 5, 1, 8"]));
        assert_eq!(step(op, &[(1, " I I\n - 1 7")]), lines(&["-1 1, 5, 1, 7"]));
        let out = step(op, &[(1, " I I\n - 1 8")]);
        assert_eq!(out, lines(&["+1 1, 5, , ", "-1 1, 5, 1, 8"]));
        assert_eq!(step(op, &[(0, " I I\n - 1 5")]), lines(&["-1 1, 5, , "]));
    }

    #[test]
    fn filter_decides_which_right_rows_are_padded_in_a_full_join() {
        let mut op = spec(filtered(JoinKind::Full)).instantiate().unwrap();
        let op = op.as_mut();
        let out = step(op, &[(0, " I I\n + 1 5"), (1, " I I\n + 1 3")]);
        assert_eq!(out, lines(&["+1 , , 1, 3", "+1 1, 5, , "]));
        let out = step(op, &[(0, " I I\n + 1 1")]);
        assert_eq!(out, lines(&["+1 1, 1, 1, 3", "-1 , , 1, 3"]));
        let out = step(op, &[(0, " I I\n - 1 1")]);
        assert_eq!(out, lines(&["+1 , , 1, 3", "-1 1, 1, 1, 3"]));
    }

    #[test]
    fn empty_keys_make_a_cross_join() {
        let config = Config {
            equi: false,
            ..equi(JoinKind::Left)
        };
        let mut op = spec(config).instantiate().unwrap();
        let op = op.as_mut();
        let out = step(op, &[(0, " I I\n + 1 10\n + . 20")]);
        assert_eq!(out, lines(&["+1 , 20, , ", "+1 1, 10, , "]));
        let out = step(op, &[(1, " I I\n + 3 30")]);
        let expected = [
            "+1 , 20, 3, 30",
            "+1 1, 10, 3, 30",
            "-1 , 20, , ",
            "-1 1, 10, , ",
        ];
        assert_eq!(out, lines(&expected));
    }

    #[test]
    fn right_keys_of_another_type_are_cast_to_the_left_key_type() {
        let right_schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let mut spec = spec(equi(JoinKind::Inner));
        spec.right_keys = vec![col("k", &right_schema).unwrap()];
        spec.right_schema = Arc::clone(&right_schema);
        let mut op = spec.instantiate().unwrap();
        let mut out = Vec::new();
        let left = ChangeBatch::from_pretty(" I I\n + 1 10\n + 2 20").unwrap();
        op.on_batch(0, left, &mut out).unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![2])),
            Arc::new(Int64Array::from(vec![200])),
        ];
        let right = RecordBatch::try_new(right_schema, columns).unwrap();
        op.on_batch(1, ChangeBatch::inserts(right), &mut out)
            .unwrap();
        op.on_barrier(0, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].schema(), output_schema());
        assert_eq!(out[0].to_lines(), lines(&["+1 2, 20, 2, 200"]));
    }

    #[test]
    fn describe_names_the_kind_keys_and_filter() {
        let text = spec(filtered(JoinKind::Left)).describe();
        assert_eq!(text, "Join (left outer): c0@0 = c0@0 [filter: lv@1 < rv@3]");
        let cross = Config {
            equi: false,
            ..equi(JoinKind::Inner)
        };
        assert_eq!(spec(cross).describe(), "Join (inner): cross product");
    }

    /// An input row `(k, v)`.
    type Row = [Option<i64>; 2];

    /// The join computed from scratch by nested loops, as `to_lines` prints it.
    fn reference(c: Config, inputs: &[BTreeMap<Row, i64>; 2]) -> Vec<String> {
        let keys_match =
            |l: &Row, r: &Row| !c.equi || (l[0] == r[0] && (l[0].is_some() || c.null_equals_null));
        let passes =
            |l: &Row, r: &Row| !c.filter || matches!((l[1], r[1]), (Some(a), Some(b)) if a < b);
        let matching = |l: &Row, r: &Row| keys_match(l, r) && passes(l, r);
        let mut out: BTreeMap<[Option<i64>; 4], i64> = BTreeMap::new();
        let [left, right] = inputs;
        for (l, ln) in left {
            for (r, rn) in right.iter().filter(|(r, _)| matching(l, r)) {
                *out.entry([l[0], l[1], r[0], r[1]]).or_default() += ln * rn;
            }
            if c.kind.pads(0) && !right.keys().any(|r| matching(l, r)) {
                *out.entry([l[0], l[1], None, None]).or_default() += ln;
            }
        }
        for (r, rn) in right {
            if c.kind.pads(1) && !left.keys().any(|l| matching(l, r)) {
                *out.entry([None, None, r[0], r[1]]).or_default() += rn;
            }
        }
        let cell = |v: &Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
        let mut lines: Vec<String> = out
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(row, n)| {
                let cells: Vec<String> = row.iter().map(cell).collect();
                format!("{n:+} {}", cells.join(", "))
            })
            .collect();
        lines.sort();
        lines
    }

    fn batch_of(changes: &[(Row, i64)]) -> ChangeBatch {
        let column = |c: usize| -> ArrayRef {
            Arc::new(
                changes
                    .iter()
                    .map(|(row, _)| row[c])
                    .collect::<Int64Array>(),
            )
        };
        let data = RecordBatch::try_new(side_schema(), vec![column(0), column(1)]).unwrap();
        ChangeBatch::new(data, changes.iter().map(|(_, d)| *d).collect())
    }

    /// The operator beside its accumulated inputs and output.
    struct Harness {
        config: Config,
        op: Box<dyn Operator>,
        inputs: [BTreeMap<Row, i64>; 2],
        output: ChangeBatch,
    }

    impl Harness {
        fn new(config: Config) -> Harness {
            Harness {
                config,
                op: spec(config).instantiate().unwrap(),
                inputs: [BTreeMap::new(), BTreeMap::new()],
                output: ChangeBatch::empty(output_schema()),
            }
        }

        /// Runs one step and checks the accumulated output against the
        /// reference over the accumulated inputs; returns the step's output
        /// as it came, unconsolidated.
        fn step(&mut self, batches: &[(usize, Vec<(Row, i64)>)], context: &str) -> Vec<String> {
            let mut out = vec![self.output.clone()];
            for (port, changes) in batches {
                self.op
                    .on_batch(*port, batch_of(changes), &mut out)
                    .unwrap();
                for (row, diff) in changes {
                    *self.inputs[*port].entry(*row).or_default() += diff;
                }
            }
            self.op.on_barrier(0, &mut out).unwrap();
            let raw = ChangeBatch::concat(&output_schema(), &out[1..]).unwrap();
            for input in &mut self.inputs {
                input.retain(|_, n| *n != 0);
                assert!(input.values().all(|n| *n > 0), "{context}: bad test input");
            }
            let all = ChangeBatch::concat(&output_schema(), &out).unwrap();
            self.output = all.consolidate().unwrap();
            let expected = reference(self.config, &self.inputs);
            assert_eq!(
                self.output.to_lines(),
                expected,
                "{context}: {:?}",
                self.config
            );
            raw.to_lines()
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                items.swap(i, self.below(i as u64 + 1) as usize);
            }
        }
    }

    /// Keys 0..4 or NULL, values 0..3 or NULL.
    fn random_row(rng: &mut XorShift) -> Row {
        let k = match rng.below(6) {
            5 => None,
            k => Some(k as i64),
        };
        let v = match rng.below(9) {
            8 => None,
            v => Some((v % 4) as i64),
        };
        [k, v]
    }

    /// One step: inserts and deletes of present rows on both sides, split
    /// into batches delivered in random order. A row inserted in the step
    /// may be deleted by an earlier batch of it, so a multiplicity can be
    /// negative for a while.
    fn random_step(
        rng: &mut XorShift,
        inputs: &[BTreeMap<Row, i64>; 2],
    ) -> Vec<(usize, Vec<(Row, i64)>)> {
        let mut batches = Vec::new();
        for (port, input) in inputs.iter().enumerate() {
            let mut present: Vec<Row> = input
                .iter()
                .flat_map(|(row, n)| std::iter::repeat_n(*row, *n as usize))
                .collect();
            let mut changes = Vec::new();
            for _ in 0..rng.below(5) {
                let row = random_row(rng);
                let copies = if rng.below(5) == 0 { 2 } else { 1 };
                changes.push((row, copies));
                present.extend(std::iter::repeat_n(row, copies as usize));
            }
            for _ in 0..rng.below(5) {
                if present.is_empty() {
                    break;
                }
                let row = present.swap_remove(rng.below(present.len() as u64) as usize);
                changes.push((row, -1));
            }
            rng.shuffle(&mut changes);
            let split = rng.below(changes.len() as u64 + 1) as usize;
            let rest = changes.split_off(split);
            batches.extend([(port, changes), (port, rest)]);
        }
        rng.shuffle(&mut batches);
        batches
    }

    fn configs() -> Vec<Config> {
        let mut configs = Vec::new();
        for kind in [
            JoinKind::Inner,
            JoinKind::Left,
            JoinKind::Right,
            JoinKind::Full,
        ] {
            for filter in [false, true] {
                for (equi, null_equals_null) in [(true, false), (true, true), (false, false)] {
                    configs.push(Config {
                        kind,
                        equi,
                        filter,
                        null_equals_null,
                    });
                }
            }
        }
        configs
    }

    #[test]
    fn oracle_random_changes_on_both_sides_match_a_nested_loop_join() {
        for config in configs() {
            for seed in [0x9e37_79b9_7f4a_7c15u64, 42, 7_777_777, 123_456_789_987] {
                let mut rng = XorShift(seed);
                let mut harness = Harness::new(config);
                for n in 0..40 {
                    let batches = random_step(&mut rng, &harness.inputs);
                    harness.step(&batches, &format!("seed {seed} step {n}"));
                }
            }
        }
    }

    #[test]
    fn oracle_large_buckets_and_outputs_over_one_batch() {
        let rows = |range: std::ops::Range<i64>, diff: i64| -> Vec<(Row, i64)> {
            range.map(|v| ([Some(1), Some(v)], diff)).collect()
        };
        for config in [equi(JoinKind::Inner), filtered(JoinKind::Full)] {
            let mut harness = Harness::new(config);
            harness.step(&[(0, rows(0..100, 1))], "left rows");
            harness.step(&[(1, rows(0..100, 1))], "right rows");
            harness.step(&[(0, rows(50..100, -1)), (1, rows(0..60, -1))], "retract");
            harness.step(&[(1, rows(0..60, 1)), (0, rows(0..20, -1))], "again");
        }
    }

    #[test]
    fn padding_that_an_epoch_retracts_is_never_emitted() {
        let mut op = spec(equi(JoinKind::Full)).instantiate().unwrap();
        let mut out = Vec::new();
        let left = ChangeBatch::from_pretty(" I I\n + 1 10\n + 2 20").unwrap();
        op.on_batch(0, left, &mut out).unwrap();
        let right = ChangeBatch::from_pretty(" I I\n + 1 100").unwrap();
        op.on_batch(1, right, &mut out).unwrap();
        op.on_barrier(0, &mut out).unwrap();
        let raw: Vec<String> = out.iter().flat_map(|b| b.to_lines()).collect();
        assert_eq!(raw, lines(&["+1 1, 10, 1, 100", "+1 2, 20, , "]));
    }

    #[test]
    fn oracle_through_the_runtime_with_two_workers() {
        use crate::dataflow::graph::{Graph, NodeKind};
        use crate::dataflow::runtime::Runtime;
        let runtime = Runtime::new(2).unwrap();
        let cross = Config {
            equi: false,
            ..filtered(JoinKind::Full)
        };
        let configs = [equi(JoinKind::Full), filtered(JoinKind::Left), cross];
        for (id, config) in configs.into_iter().enumerate() {
            let spec = spec(config);
            let mut graph = Graph::default();
            let mut inputs = Vec::new();
            for (side, keys) in [&spec.left_keys, &spec.right_keys].into_iter().enumerate() {
                let relation = format!("side{side}");
                let source = graph.add(NodeKind::Source { relation }, vec![], side_schema());
                let keys = keys.clone();
                inputs.push(graph.add(NodeKind::Exchange { keys }, vec![source], side_schema()));
            }
            let output = Arc::clone(&spec.output_schema);
            graph.add(NodeKind::Join(spec), inputs, output);
            let graph = Arc::new(graph);
            runtime.install(id as u64, Arc::clone(&graph)).unwrap();
            let mut state: [BTreeMap<Row, i64>; 2] = [BTreeMap::new(), BTreeMap::new()];
            let mut accumulated = ChangeBatch::empty(output_schema());
            let mut rng = XorShift(0x5eed + id as u64);
            for epoch in 0..25u64 {
                let batches = random_step(&mut rng, &state);
                for (port, changes) in &batches {
                    for (row, diff) in changes {
                        *state[*port].entry(*row).or_default() += diff;
                    }
                }
                state.iter_mut().for_each(|s| s.retain(|_, n| *n != 0));
                // Sources are nodes 0 and 2.
                let step_inputs = batches.iter().map(|(p, c)| (2 * p, batch_of(c))).collect();
                let out = runtime
                    .step(id as u64, &graph, epoch, epoch == 0, None, step_inputs)
                    .unwrap()
                    .changes;
                let all = ChangeBatch::concat(&output_schema(), &[accumulated, out]).unwrap();
                accumulated = all.consolidate().unwrap();
                let expected = reference(config, &state);
                assert_eq!(accumulated.to_lines(), expected, "{config:?} epoch {epoch}");
            }
        }
    }

    fn round_trip(config: Config, op: &dyn Operator) -> Box<dyn Operator> {
        let fresh = || spec(config).instantiate().unwrap();
        let inputs = [side_schema(), side_schema()];
        let what = format!("{config:?}");
        crate::dataflow::operator::testing::round_trip(op, fresh, Shard::SINGLE, &inputs, &what).0
    }

    /// Random steps, a checkpoint, then the same steps (ending with every
    /// row retracted, then some inserted again) fed to the original and the
    /// restored join: both match the reference and output alike each step.
    #[test]
    fn checkpoint_restores_a_join_that_continues_alike() {
        for config in configs() {
            for (seed, before) in [(0x2545_f491_4f6c_dd1d, 0), (99, 6), (31_337, 25)] {
                let mut rng = XorShift(seed);
                let mut original = Harness::new(config);
                for n in 0..before {
                    let batches = random_step(&mut rng, &original.inputs);
                    original.step(&batches, &format!("seed {seed} step {n}"));
                }
                let mut restored = Harness {
                    config,
                    op: round_trip(config, original.op.as_ref()),
                    inputs: original.inputs.clone(),
                    output: original.output.clone(),
                };
                for n in 0..25 {
                    let batches = match n {
                        20 => original
                            .inputs
                            .iter()
                            .enumerate()
                            .map(|(port, rows)| {
                                (port, rows.iter().map(|(r, n)| (*r, -n)).collect())
                            })
                            .collect(),
                        _ => random_step(&mut rng, &original.inputs),
                    };
                    let context = format!("seed {seed}, step {n} after {before}");
                    let expected = original.step(&batches, &context);
                    assert_eq!(restored.step(&batches, &context), expected, "{context}");
                    let bytes = original.op.state_bytes();
                    assert_eq!(restored.op.state_bytes(), bytes, "{context}");
                    assert!(n != 20 || bytes == 0, "{context}: state left");
                }
            }
        }
    }

    #[test]
    fn checkpoint_within_an_epoch_is_refused() {
        let mut op = spec(equi(JoinKind::Left)).instantiate().unwrap();
        let batch = ChangeBatch::from_pretty(" I I\n + 1 10").unwrap();
        op.on_batch(0, batch, &mut Vec::new()).unwrap();
        assert!(op.checkpoint(&mut StateWriter::new()).is_err());
    }
}
