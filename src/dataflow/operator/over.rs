//! Streaming OVER windows: each row with window functions of its
//! partition's neighbouring rows — `lag(x) OVER (PARTITION BY user ORDER BY
//! ts)`, `avg(x) OVER (… ROWS BETWEEN 5 PRECEDING AND 1 PRECEDING)`,
//! `count(*) OVER (… RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT
//! ROW)`.
//!
//! Frames only look back (the planner refuses FOLLOWING and UNBOUNDED
//! PRECEDING), by at most `rows_back` rows or `range_back` order units. So
//! a change at order value `t` alters the output of rows from `t` on, for
//! `rows_back` rows or `range_back` units past the last change — for rows
//! appended in order, of the new rows only. At the barrier, for each
//! partition that changed, the operator evaluates the window functions
//! (DataFusion's own window expressions, so results are those of a batch
//! query; `lag`, `count`, `array_agg`, `first_value` and `last_value` as
//! direct gathers of their frames) over those affected rows and the
//! context before them, once before and once after applying the changes,
//! and emits the difference. Context rows only a `count(*)` frame reaches
//! are counted by their order values, not copied or decoded.
//!
//! Rows are ordered by the order value, then by the whole row's encoding,
//! so ties resolve the same way whatever the worker count or arrival
//! order. When the order column is the event time of a source with a
//! watermark, rows no frame can reach any more (older than the frontier by
//! more than `range_back`, beyond the last `rows_back`) are let go of: state
//! is bounded by the frames.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, UInt32Array};
use datafusion::arrow::compute::{concat, take, SortOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::HashMap as FastMap;
use datafusion::physical_expr::window::WindowExpr;
use datafusion::physical_plan::PhysicalExpr;

use super::top_n::{conform, key_at, Codec};
use super::{ChangeBatch, CloseSchedule, Operator, Shard, ENTRY_OVERHEAD_BYTES, OUTPUT_BATCH_ROWS};
use crate::dataflow::expr::{evaluate, evaluate_all, timestamp_micros, MICROS_PER_DAY};
use crate::dataflow::state::{corrupt, ChangeLog, StateReader, StateWriter};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct OverSpec {
    /// Over the input batch; empty for one partition of all rows.
    pub partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The one ORDER BY expression, ascending: integers, dates or
    /// timestamps (as microseconds).
    pub order: Arc<dyn PhysicalExpr>,
    /// The window functions, over the input schema.
    pub functions: Vec<Arc<dyn WindowExpr>>,
    /// Per function, how to compute it directly when it is one of the
    /// common ones (`None`: DataFusion's window expression does).
    pub direct: Vec<Option<Direct>>,
    /// How many rows back the furthest frame (or `lag`) reaches.
    pub rows_back: usize,
    /// How far back in order units (µs for times) the furthest RANGE
    /// frame reaches; `None` without RANGE frames.
    pub range_back: Option<i64>,
    pub input_schema: SchemaRef,
    /// Input fields, then one per function.
    pub output_schema: SchemaRef,
    /// Set when the order column is bounded by the event-time frontier
    /// (its slack, see `frontier.rs`): rows no frame can reach are freed.
    pub close_slack_us: Option<i64>,
}

/// A window function computed without DataFusion's window machinery: a
/// gather of the rows its frame reaches, for all affected rows at once.
#[derive(Debug, Clone)]
pub enum Direct {
    /// `lag(x, offset)` with no default.
    Lag {
        arg: Arc<dyn PhysicalExpr>,
        offset: usize,
    },
    /// `count(*)` (no argument) or `count(x)` over the frame.
    Count {
        arg: Option<Arc<dyn PhysicalExpr>>,
        frame: Frame,
    },
    ArrayAgg {
        arg: Arc<dyn PhysicalExpr>,
        frame: Frame,
    },
    FirstValue {
        arg: Arc<dyn PhysicalExpr>,
        frame: Frame,
    },
    LastValue {
        arg: Arc<dyn PhysicalExpr>,
        frame: Frame,
    },
}

/// A frame reaching back: `ROWS BETWEEN start PRECEDING AND end PRECEDING`
/// (0 = CURRENT ROW), or `RANGE BETWEEN start PRECEDING AND end PRECEDING`
/// in order units (`None` = CURRENT ROW, with its peers).
#[derive(Debug, Clone, Copy)]
pub enum Frame {
    Rows { start: usize, end: usize },
    Range { start: i64, end: Option<i64> },
}

impl OverSpec {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Over::new(self)?))
    }

    pub fn describe(&self) -> String {
        let mut text = String::from("Over:");
        if !self.partition_exprs.is_empty() {
            let exprs: Vec<String> = self.partition_exprs.iter().map(|e| e.to_string()).collect();
            text.push_str(&format!(" partition by [{}]", exprs.join(", ")));
        }
        text.push_str(&format!(" order by {}", self.order));
        let functions: Vec<String> = self
            .functions
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        text.push_str(&format!(" [{}]", functions.join(", ")));
        let mut reach = Vec::new();
        if self.rows_back > 0 {
            reach.push(format!("{} rows", self.rows_back));
        }
        if let Some(range) = self.range_back {
            reach.push(format!("{range} order units"));
        }
        if !reach.is_empty() {
            text.push_str(&format!(" (reaches back {})", reach.join(" and ")));
        }
        if let Some(slack) = self.close_slack_us {
            text.push_str(&format!(
                " (rows beyond reach of the frontier - {slack} us are freed)"
            ));
        }
        text
    }
}

/// A row's place in its partition: order value, then the row's encoding.
type Place = (i64, Box<[u8]>);

/// One worker's instance.
#[derive(Debug)]
struct Over {
    spec: OverSpec,
    row: Codec,
    partition: Codec,
    /// Every row of every partition still within reach, with multiplicities.
    partitions: FastMap<Box<[u8]>, BTreeMap<Place, i64>>,
    /// This epoch's changes, applied at the barrier.
    pending: FastMap<Box<[u8]>, BTreeMap<Place, i64>>,
    /// With a frontier: partitions by when to look for rows out of reach.
    pruning: CloseSchedule,
    bytes: usize,
    pending_bytes: usize,
    /// From [`Operator::track_changes`]: every change to a row's count
    /// since the last checkpoint (added, taken back or pruned), as its
    /// partition, place and difference.
    changed: Option<ChangeLog>,
    /// The last barrier's buffers, to reuse.
    work: Work,
    /// How far back the window functions read rows' values (see
    /// [`ValueReach`]).
    reach: ValueReach,
}

/// How far before the first affected row the window functions read the
/// values of rows: rows further back (a `count(*)` RANGE frame reaches
/// them only by their order values) are neither copied nor decoded.
#[derive(Debug, Clone, Copy, Default)]
struct ValueReach {
    /// Every row (a function DataFusion evaluates reads its whole segment).
    all: bool,
    /// Rows back from the first affected row (each copy of a row held
    /// several times counting once).
    rows: usize,
    /// Order units back from the first affected row's order value.
    range: Option<i64>,
}

impl ValueReach {
    fn of(spec: &OverSpec) -> ValueReach {
        let mut reach = ValueReach::default();
        for direct in &spec.direct {
            let frame = match direct {
                None => {
                    reach.all = true;
                    continue;
                }
                Some(Direct::Lag { offset, .. }) => {
                    reach.rows = reach.rows.max(*offset);
                    continue;
                }
                Some(Direct::Count { arg: None, .. }) => continue,
                Some(
                    Direct::Count {
                        arg: Some(_),
                        frame,
                    }
                    | Direct::ArrayAgg { frame, .. }
                    | Direct::FirstValue { frame, .. }
                    | Direct::LastValue { frame, .. },
                ) => frame,
            };
            match *frame {
                Frame::Rows { start, .. } => reach.rows = reach.rows.max(start),
                Frame::Range { start, .. } => {
                    reach.range = Some(reach.range.map_or(start, |r| r.max(start)));
                }
            }
        }
        reach
    }
}

/// How many bytes of rows, or rows, a barrier evaluates at a time (whole
/// partitions; buffers that one large partition grew past twice this are
/// freed, not kept).
const WORK_CHUNK_BYTES: usize = 4 << 20;
const WORK_CHUNK_ROWS: usize = 1 << 16;

impl Over {
    fn new(spec: &OverSpec) -> Result<Over> {
        let input = &spec.input_schema;
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
                .map(|e| Ok((e.data_type(input)?, SortOptions::default())))
                .collect::<Result<Vec<_>>>()?,
        )?;
        Ok(Over {
            spec: spec.clone(),
            row,
            partition,
            partitions: FastMap::default(),
            pending: FastMap::default(),
            pruning: CloseSchedule::default(),
            bytes: 0,
            pending_bytes: 0,
            changed: None,
            work: Work::default(),
            reach: ValueReach::of(spec),
        })
    }
}

/// Order values as i64: integers as they are, dates and timestamps in
/// microseconds; NULL sorts last.
pub fn order_values(values: &ArrayRef) -> Result<Vec<i64>> {
    let micros = match values.data_type() {
        DataType::Timestamp(..) => timestamp_micros(values)?,
        DataType::Date32 | DataType::Date64 => {
            let days = datafusion::arrow::compute::cast(values, &DataType::Date32)?;
            let days = datafusion::arrow::compute::cast(&days, &DataType::Int32)?;
            let days = datafusion::arrow::compute::cast(&days, &DataType::Int64)?;
            let days = days
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .ok_or_else(|| Error::Internal("date cast to int64 failed".into()))?;
            days.unary(|d| d.saturating_mul(MICROS_PER_DAY))
        }
        _ => {
            let ints = datafusion::arrow::compute::cast(values, &DataType::Int64)?;
            ints.as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .ok_or_else(|| Error::Internal("order cast to int64 failed".into()))?
                .clone()
        }
    };
    Ok((0..micros.len())
        .map(|i| {
            if micros.is_valid(i) {
                micros.value(i)
            } else {
                i64::MAX
            }
        })
        .collect())
}

impl Operator for Over {
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
        let rows = self.row.encode(data.columns().to_vec())?;
        let partitions = self
            .partition
            .encode(evaluate_all(&self.spec.partition_exprs, data)?)?;
        let order = order_values(&evaluate(&self.spec.order, data)?)?;
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
            match changes.entry((order[i], key_at(&rows, i).into())) {
                Entry::Occupied(mut entry) => *entry.get_mut() += diff,
                Entry::Vacant(entry) => {
                    self.pending_bytes += entry.key().1.len() + 8 + ENTRY_OVERHEAD_BYTES;
                    entry.insert(*diff);
                }
            }
        }
        Ok(())
    }

    fn on_barrier(&mut self, _epoch: u64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut work = std::mem::take(&mut self.work);
        let mut touched = Vec::new();
        for (partition, mut changes) in pending {
            changes.retain(|_, diff| *diff != 0);
            let (Some(first), Some(last)) = (changes.keys().next(), changes.keys().next_back())
            else {
                continue;
            };
            let (first, last) = (first.clone(), last.clone());
            let rows = match self.partitions.get_mut(&partition) {
                Some(rows) => {
                    work.add(rows, &first, &last, -1, &self.spec, self.reach);
                    rows
                }
                None => {
                    self.bytes += partition.len() + ENTRY_OVERHEAD_BYTES;
                    self.partitions.entry(partition.clone()).or_default()
                }
            };
            for (place, diff) in changes {
                if let Some(log) = &mut self.changed {
                    log_change(log, &partition, &place, diff);
                }
                add_count(rows, place, diff, &mut self.bytes);
            }
            work.add(rows, &first, &last, 1, &self.spec, self.reach);
            if rows.is_empty() {
                self.partitions.remove(&partition);
                self.bytes = self
                    .bytes
                    .saturating_sub(partition.len() + ENTRY_OVERHEAD_BYTES);
            } else {
                touched.push((partition, first.0));
            }
            // Evaluated a few MiB at a time, so that the buffers stay in
            // the cache and are reused.
            if work.is_full() {
                work.emit(self, out)?;
                work.clear();
            }
        }
        self.schedule_pruning(touched);
        self.drop_outgrown_log();
        work.emit(self, out)?;
        work.clear();
        if !work.outgrew_chunks() {
            self.work = work;
        }
        Ok(())
    }

    fn on_frontier(&mut self, frontier_us: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        let Some(slack) = self.spec.close_slack_us else {
            return Ok(());
        };
        // Every later change is at or after this order value.
        let horizon = frontier_us.saturating_sub(slack);
        let mut again = Vec::new();
        for partition in self.pruning.due(frontier_us) {
            let Some(rows) = self.partitions.get_mut(partition.as_slice()) else {
                continue;
            };
            let dropped = prune(rows, horizon, &self.spec);
            let freed: usize = dropped
                .keys()
                .map(|(_, row)| row.len() + 8 + ENTRY_OVERHEAD_BYTES)
                .sum();
            self.bytes = self.bytes.saturating_sub(freed);
            if let Some(log) = &mut self.changed {
                for (place, n) in &dropped {
                    log_change(log, partition.as_slice(), place, -n);
                }
            }
            if rows.is_empty() {
                self.partitions.remove(partition.as_slice());
                self.bytes = self
                    .bytes
                    .saturating_sub(partition.len() + ENTRY_OVERHEAD_BYTES);
            } else if let Some(range) = self.spec.range_back {
                // Rows kept for a RANGE frame go once the frontier leaves them behind.
                if let Some(((t, _), _)) = rows
                    .range((
                        Bound::Included((horizon.saturating_sub(range), Box::default())),
                        Bound::Unbounded,
                    ))
                    .next()
                {
                    again.push((partition.as_slice().into(), *t));
                }
            } else if rows.values().map(|n| (*n).max(0) as usize).sum::<usize>()
                > self.spec.rows_back
            {
                // More rows than a ROWS frame needs: all but the last go once
                // the frontier passes the newest.
                if let Some(((t, _), _)) = rows.iter().next_back() {
                    again.push((partition.as_slice().into(), *t));
                }
            }
        }
        self.schedule_pruning(again);
        self.drop_outgrown_log();
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.bytes
            + self.pending_bytes
            + self.pruning.bytes()
            + self.changed.as_ref().map_or(0, ChangeLog::bytes)
    }

    fn checkpoint(&self, state: &mut StateWriter) -> Result<()> {
        if !self.pending.is_empty() {
            return Err(Error::Internal(
                "over window checkpointed with changes pending since the barrier".into(),
            ));
        }
        state.len(self.partitions.len());
        for (partition, rows) in &self.partitions {
            state.bytes(partition);
            write_rows(state, rows);
        }
        Ok(())
    }

    fn restore(
        &mut self,
        _shard: Shard,
        _inputs: &[SchemaRef],
        state: &mut StateReader<'_>,
    ) -> Result<()> {
        let mut touched = Vec::new();
        // A partition key's length and its row count.
        for _ in 0..state.count(16)? {
            let partition: Box<[u8]> = state.bytes()?.into();
            self.bytes += partition.len() + ENTRY_OVERHEAD_BYTES;
            let (rows, bytes) = read_rows(state)?;
            self.bytes += bytes;
            if let Some(((t, _), _)) = rows.iter().next() {
                touched.push((partition.clone(), *t));
            }
            if self.partitions.insert(partition, rows).is_some() {
                return Err(corrupt("an over-window partition held twice".into()));
            }
        }
        self.schedule_pruning(touched);
        Ok(())
    }

    fn track_changes(&mut self) {
        self.changed = Some(ChangeLog::default());
    }

    /// Every change to a row's count since the last checkpoint, in the
    /// order made: its partition, order value, row and difference. When the
    /// log outgrew the state, the whole state is written instead: it is
    /// smaller.
    fn checkpoint_changes(&mut self, state: &mut StateWriter) -> Result<bool> {
        if !self.pending.is_empty() {
            return Err(Error::Internal(
                "over window checkpointed with changes pending since the barrier".into(),
            ));
        }
        let Some(log) = &mut self.changed else {
            return Ok(false);
        };
        if log.outgrew(self.bytes) {
            return Ok(false);
        }
        std::mem::take(log).write_to(state);
        Ok(true)
    }

    fn restore_changes(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        let mut touched: HashSet<Box<[u8]>> = HashSet::new();
        // A partition key's length, an order value, a row's length and a
        // difference.
        for _ in 0..state.count(32)? {
            let partition = state.bytes()?;
            let t = state.i64()?;
            let row: Box<[u8]> = state.bytes()?.into();
            let diff = state.i64()?;
            let rows = match self.partitions.get_mut(partition) {
                Some(rows) => rows,
                None => {
                    self.bytes += partition.len() + ENTRY_OVERHEAD_BYTES;
                    self.partitions.entry(partition.into()).or_default()
                }
            };
            if !touched.contains(partition) {
                touched.insert(partition.into());
            }
            add_count(rows, (t, row), diff, &mut self.bytes);
        }
        let mut schedule = Vec::new();
        for partition in touched {
            // Every partition touched is held: only this loop removes them.
            let first = self
                .partitions
                .get(&partition)
                .and_then(|rows| rows.keys().next());
            match first {
                Some((t, _)) => {
                    let t = *t;
                    schedule.push((partition, t));
                }
                None => {
                    self.partitions.remove(&partition);
                    self.bytes = self
                        .bytes
                        .saturating_sub(partition.len() + ENTRY_OVERHEAD_BYTES);
                }
            }
        }
        self.schedule_pruning(schedule);
        Ok(())
    }
}

/// Adds `diff` to the count of the row at `place`, which goes at zero;
/// `bytes` (what the state holds) follows.
fn add_count(rows: &mut BTreeMap<Place, i64>, place: Place, diff: i64, bytes: &mut usize) {
    let size = place.1.len() + 8 + ENTRY_OVERHEAD_BYTES;
    match rows.entry(place) {
        Entry::Occupied(mut entry) => {
            *entry.get_mut() += diff;
            if *entry.get() == 0 {
                entry.remove();
                *bytes = bytes.saturating_sub(size);
            }
        }
        Entry::Vacant(entry) => {
            entry.insert(diff);
            *bytes += size;
        }
    }
}

/// Logs a change of `diff` to the count of the row at `place` in
/// `partition`, as [`Operator::restore_changes`] reads it back.
fn log_change(log: &mut ChangeLog, partition: &[u8], place: &Place, diff: i64) {
    let entry = log.entry();
    entry.bytes(partition);
    entry.i64(place.0);
    entry.bytes(&place.1);
    entry.i64(diff);
}

/// One partition's rows: each order value, encoded row and count.
fn write_rows(state: &mut StateWriter, rows: &BTreeMap<Place, i64>) {
    state.len(rows.len());
    for ((t, row), n) in rows {
        state.i64(*t);
        state.bytes(row);
        state.i64(*n);
    }
}

/// What `write_rows` wrote, with the bytes it holds.
fn read_rows(state: &mut StateReader<'_>) -> Result<(BTreeMap<Place, i64>, usize)> {
    let mut rows = BTreeMap::new();
    let mut bytes = 0;
    // An order value, a row's length and a count.
    for _ in 0..state.count(24)? {
        let t = state.i64()?;
        let row: Box<[u8]> = state.bytes()?.into();
        bytes += row.len() + 8 + ENTRY_OVERHEAD_BYTES;
        if rows.insert((t, row), state.i64()?).is_some() {
            return Err(corrupt("an over-window row held twice".into()));
        }
    }
    Ok((rows, bytes))
}

impl Over {
    /// Stops logging changes once the log outgrew the state (see
    /// [`ChangeLog::outgrew`]).
    fn drop_outgrown_log(&mut self) {
        if self
            .changed
            .as_ref()
            .is_some_and(|log| log.outgrew(self.bytes))
        {
            self.changed = None;
        }
    }

    /// Notes when to look at each partition for rows out of reach: once the
    /// frontier passes the given order value (plus the reach of RANGE
    /// frames and the slack).
    fn schedule_pruning(&mut self, partitions: Vec<(Box<[u8]>, i64)>) {
        let Some(slack) = self.spec.close_slack_us else {
            return;
        };
        let reach = self.spec.range_back.unwrap_or(0);
        for (partition, t) in partitions {
            if t == i64::MAX {
                continue;
            }
            // Once the horizon is past `t + reach`, the row at `t` is out of reach.
            let at = t
                .saturating_add(reach)
                .saturating_add(slack)
                .saturating_add(1);
            self.pruning.push(at, &partition);
        }
    }
}

/// Where row `i` of a [`Work`] is in its decoded batch.
fn decoded_at(at: &[u32], i: usize) -> Result<u32> {
    match at.get(i) {
        Some(&at) if at != u32::MAX => Ok(at),
        _ => Err(Error::Internal(format!(
            "over window read row {i}, which its reach left undecoded"
        ))),
    }
}

/// Drops the rows of one partition no later change can reach: every later
/// change is at or after `horizon`, and reaches back `rows_back` rows and
/// `range_back` units. Returns the rows dropped.
fn prune(rows: &mut BTreeMap<Place, i64>, horizon: i64, spec: &OverSpec) -> BTreeMap<Place, i64> {
    let cut = match spec.range_back {
        Some(range) => horizon.saturating_sub(range),
        None => horizon,
    };
    // Keep the last `rows_back` rows before the cut, counting multiplicities.
    let mut kept = 0usize;
    let mut first_kept: Option<Place> = None;
    for (place, n) in rows.range(..(cut, Box::default())).rev() {
        if kept >= spec.rows_back {
            break;
        }
        kept += usize::try_from(*n).unwrap_or(0);
        first_kept = Some(place.clone());
    }
    let boundary = first_kept.unwrap_or((cut, Box::default()));
    let kept_rows = rows.split_off(&boundary);
    std::mem::replace(rows, kept_rows)
}

/// Rows to evaluate the window functions over. Each affected row is
/// evaluated on a segment of its own: from a start that depends only on the
/// rows before it (`rows_back` rows, and all rows within `range_back`) to
/// its last peer. So a row's values are computed from the same rows, in the
/// same way, each time — also float sums, whose sliding evaluation would
/// otherwise depend on where a segment starts — and what a retraction
/// recomputes is exactly what was emitted.
#[derive(Debug, Default)]
struct Work {
    /// Copies of the rows whose values a function reads, one after the
    /// other: the decoding reads them column by column, which is several
    /// times faster from one buffer than from rows all over the state.
    bytes: Vec<u8>,
    /// Each row the segments index: its copy in `bytes`, or `None` when
    /// no function reads its values.
    spans: Vec<Option<std::ops::Range<usize>>>,
    /// The order value of each row of `spans`.
    times: Vec<i64>,
    segments: Vec<Segment>,
    /// Per row of `spans`, its place in the decoded batch (`u32::MAX`:
    /// not decoded); filled by `emit`.
    decoded: Vec<u32>,
}

#[derive(Debug)]
struct Segment {
    /// Index of the segment's first row in `spans`.
    start: usize,
    len: usize,
    /// The affected row, within the segment.
    target: usize,
    sign: i64,
}

impl Work {
    /// Empties the work, keeping its buffers for the next barrier (fresh
    /// ones cost a page fault per page).
    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
        self.times.clear();
        self.segments.clear();
        self.decoded.clear();
    }

    /// Whether to evaluate what was added before adding more.
    fn is_full(&self) -> bool {
        self.bytes.len() >= WORK_CHUNK_BYTES || self.spans.len() >= WORK_CHUNK_ROWS
    }

    /// Whether one large partition grew the buffers well past a chunk.
    fn outgrew_chunks(&self) -> bool {
        self.bytes.capacity() > 2 * WORK_CHUNK_BYTES
            || self.spans.capacity().max(self.segments.capacity()) > 2 * WORK_CHUNK_ROWS
    }

    /// Adds the segments of the rows of `rows` (one partition) that changes
    /// in `first ..= last` affect.
    fn add(
        &mut self,
        rows: &BTreeMap<Place, i64>,
        first: &Place,
        last: &Place,
        sign: i64,
        spec: &OverSpec,
        reach: ValueReach,
    ) {
        // RANGE frames end at the current row's peers: rows equal in order
        // value to the first change are affected too.
        let from: Place = match spec.range_back {
            Some(_) => (first.0, Box::default()),
            None => first.clone(),
        };
        // Affected: from the first change to the last, then `rows_back`
        // rows and `range_back` units further, never stopping inside a run
        // of peers (a RANGE frame ends at the current row's last peer).
        let mut affected: Vec<(&Place, i64)> = Vec::new();
        let mut after = 0usize;
        for (place, n) in rows.range((Bound::Included(&from), Bound::Unbounded)) {
            if place > last {
                let in_range = spec
                    .range_back
                    .is_some_and(|r| place.0 <= last.0.saturating_add(r));
                let peer = spec.range_back.is_some()
                    && affected.last().is_some_and(|(p, _)| p.0 == place.0);
                if after >= spec.rows_back && !in_range && !peer {
                    break;
                }
                after += usize::try_from(*n).unwrap_or(0);
            }
            affected.push((place, *n));
        }
        // Nothing to evaluate (the retraction pass of rows appended after
        // every row held): the context would be decoded for nothing.
        if affected.iter().all(|(_, n)| *n <= 0) {
            return;
        }
        // Context: `rows_back` rows before, and rows within `range_back`.
        let mut context: Vec<(&Place, i64)> = Vec::new();
        let mut counted = 0usize;
        for (place, n) in rows.range((Bound::Unbounded, Bound::Excluded(&from))).rev() {
            let in_range = spec
                .range_back
                .is_some_and(|r| place.0 >= from.0.saturating_sub(r));
            if counted >= spec.rows_back && !in_range {
                break;
            }
            counted += usize::try_from(*n).unwrap_or(0);
            context.push((place, *n));
        }
        context.reverse();
        // Expanded rows (one per copy held) with their order values; a
        // row whose values no function reads is not copied.
        let base = self.spans.len();
        let context_rows: usize = context.iter().map(|(_, n)| (*n).max(0) as usize).sum();
        let mut to_first = context_rows;
        for (place, n) in context.iter().chain(&affected) {
            for _ in 0..(*n).max(0) {
                let read = reach.all
                    || to_first <= reach.rows
                    || reach
                        .range
                        .is_some_and(|r| place.0 >= from.0.saturating_sub(r));
                let span = read.then(|| {
                    let at = self.bytes.len();
                    self.bytes.extend_from_slice(&place.1);
                    at..self.bytes.len()
                });
                self.spans.push(span);
                self.times.push(place.0);
                to_first = to_first.saturating_sub(1);
            }
        }
        let times = &self.times[base..];
        let first_affected = context_rows;
        let affected_rows: usize = affected.iter().map(|(_, n)| (*n).max(0) as usize).sum();
        let mut segments = Vec::with_capacity(affected_rows);
        for k in first_affected..first_affected + affected_rows {
            let mut start = k.saturating_sub(spec.rows_back);
            if let Some(range) = spec.range_back {
                let reach = times[k].saturating_sub(range);
                start = start.min(times.partition_point(|t| *t < reach));
            }
            let end = match spec.range_back {
                Some(_) => times.partition_point(|t| *t <= times[k]),
                None => k + 1,
            };
            segments.push(Segment {
                start: base + start,
                len: end - start,
                target: k - start,
                sign,
            });
        }
        self.segments.extend(segments);
    }

    /// The frame of each segment's affected row, as `start..end` indexes
    /// of the input rows.
    fn frames(&self, frame: Frame) -> Vec<std::ops::Range<usize>> {
        self.segments
            .iter()
            .map(|s| {
                let (first, at, last) = (s.start, s.start + s.target, s.start + s.len);
                let times = &self.times[first..last];
                let t = self.times[at];
                let (lo, hi) = match frame {
                    Frame::Rows { start, end } => {
                        let lo = at.saturating_sub(start).max(first);
                        let hi = (at + 1).saturating_sub(end).max(lo);
                        (lo, hi)
                    }
                    Frame::Range { start, end } => {
                        let from = t.saturating_sub(start);
                        let to = end.map_or(t, |e| t.saturating_sub(e));
                        let lo = first + times.partition_point(|x| *x < from);
                        let hi = first + times.partition_point(|x| *x <= to);
                        (lo, hi.max(lo))
                    }
                };
                lo..hi
            })
            .collect()
    }

    /// A directly computed function's value for every segment's affected
    /// row, in segment order; `at` places rows in the decoded `input`.
    fn direct(&self, direct: &Direct, input: &RecordBatch, at: &[u32]) -> Result<ArrayRef> {
        let gather = |arg: &Arc<dyn PhysicalExpr>, rows: Vec<Option<usize>>| -> Result<ArrayRef> {
            let values = evaluate(arg, input)?;
            let rows = rows
                .into_iter()
                .map(|row| row.map(|i| decoded_at(at, i)).transpose())
                .collect::<Result<Vec<_>>>()?;
            Ok(take(&values, &UInt32Array::from(rows), None)?)
        };
        Ok(match direct {
            Direct::Lag { arg, offset } => {
                let rows = self
                    .segments
                    .iter()
                    .map(|s| {
                        let row = s.start + s.target;
                        (row >= s.start + offset).then(|| row - offset)
                    })
                    .collect();
                gather(arg, rows)?
            }
            Direct::FirstValue { arg, frame } | Direct::LastValue { arg, frame } => {
                let last = matches!(direct, Direct::LastValue { .. });
                let rows = self
                    .frames(*frame)
                    .into_iter()
                    .map(|r| match (r.is_empty(), last) {
                        (true, _) => None,
                        (false, false) => Some(r.start),
                        (false, true) => Some(r.end - 1),
                    })
                    .collect();
                gather(arg, rows)?
            }
            Direct::Count { arg, frame } => {
                let frames = self.frames(*frame);
                let counts: Vec<i64> = match arg {
                    None => frames.iter().map(|r| r.len() as i64).collect(),
                    Some(arg) => {
                        let values = evaluate(arg, input)?;
                        let mut counts = Vec::with_capacity(frames.len());
                        for frame in &frames {
                            let mut n = 0;
                            for i in frame.clone() {
                                n += i64::from(values.is_valid(decoded_at(at, i)? as usize));
                            }
                            counts.push(n);
                        }
                        counts
                    }
                };
                Arc::new(datafusion::arrow::array::Int64Array::from(counts))
            }
            Direct::ArrayAgg { arg, frame } => {
                let frames = self.frames(*frame);
                let values = evaluate(arg, input)?;
                let rows = frames
                    .iter()
                    .flat_map(|r| r.clone().map(|i| decoded_at(at, i)))
                    .collect::<Result<Vec<u32>>>()?;
                let items = take(&values, &UInt32Array::from(rows), None)?;
                let offsets = datafusion::arrow::buffer::OffsetBuffer::from_lengths(
                    frames.iter().map(|r| r.len()),
                );
                let valid: Vec<bool> = frames.iter().map(|r| !r.is_empty()).collect();
                let field = Arc::new(datafusion::arrow::datatypes::Field::new_list_field(
                    values.data_type().clone(),
                    true,
                ));
                Arc::new(datafusion::arrow::array::ListArray::try_new(
                    field,
                    offsets,
                    items,
                    Some(datafusion::arrow::buffer::NullBuffer::from(valid)),
                )?)
            }
        })
    }

    /// Evaluates every segment and emits its affected row with its function
    /// values; equal retractions and insertions cancel out.
    fn emit(&mut self, op: &Over, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if self.segments.is_empty() {
            return Ok(());
        }
        let spec = &op.spec;
        // Where each row is in the decoded batch (rows no function reads
        // are not in it).
        let mut decoded = 0u32;
        self.decoded.clear();
        for span in &self.spans {
            self.decoded.push(match span {
                Some(_) => {
                    decoded += 1;
                    decoded - 1
                }
                None => u32::MAX,
            });
        }
        let at = &self.decoded;
        let columns = op
            .row
            .decode(self.spans.iter().flatten().map(|r| &self.bytes[r.clone()]))?;
        let columns = columns
            .into_iter()
            .zip(spec.input_schema.fields())
            .map(|(c, f)| conform(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(decoded as usize));
        let input =
            RecordBatch::try_new_with_options(Arc::clone(&spec.input_schema), columns, &options)?;
        let mut indices: Vec<u32> = Vec::new();
        let mut diffs: Vec<i64> = Vec::new();
        let mut values: Vec<Vec<ArrayRef>> = vec![Vec::new(); spec.functions.len()];
        let computed = spec
            .direct
            .iter()
            .map(|d| d.as_ref().map(|d| self.direct(d, &input, at)).transpose())
            .collect::<Result<Vec<_>>>()?;
        let evaluated = computed.iter().any(Option::is_none);
        for segment in &self.segments {
            // With a function DataFusion evaluates every row is decoded,
            // so a segment's rows are where they were.
            if evaluated {
                let rows = input.slice(segment.start, segment.len);
                for (f, function) in spec.functions.iter().enumerate() {
                    if computed[f].is_none() {
                        let result = function.evaluate(&rows)?;
                        values[f].push(result.slice(segment.target, 1));
                    }
                }
            }
            indices.push(decoded_at(at, segment.start + segment.target)?);
            diffs.push(segment.sign);
        }
        for (f, direct) in computed.into_iter().enumerate() {
            if let Some(array) = direct {
                values[f] = vec![array];
            }
        }
        let indices = UInt32Array::from(indices);
        let width = spec.input_schema.fields().len();
        let mut output: Vec<ArrayRef> = input
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<std::result::Result<_, _>>()?;
        for (f, parts) in values.iter().enumerate() {
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            let joined = concat(&refs)?;
            output.push(conform(
                joined,
                spec.output_schema.field(width + f).data_type(),
            )?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(diffs.len()));
        let data =
            RecordBatch::try_new_with_options(Arc::clone(&spec.output_schema), output, &options)?;
        // Only a retraction can cancel a row: rows arriving in order only
        // add, and consolidating them (encoding every row) would net nothing.
        let change = ChangeBatch::new(data, diffs);
        let change = match change.diffs.iter().any(|d| *d < 0) {
            true => change.consolidate()?,
            false => change,
        };
        let mut start = 0;
        while start < change.len() {
            let end = (start + OUTPUT_BATCH_ROWS).min(change.len());
            out.push(ChangeBatch::new(
                change.data.slice(start, end - start),
                change.diffs[start..end].to_vec(),
            ));
            start = end;
        }
        Ok(())
    }
}
