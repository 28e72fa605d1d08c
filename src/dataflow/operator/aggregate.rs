//! Aggregate: the incremental `GROUP BY` (and `SELECT DISTINCT`, which is a
//! group-by without aggregate calls). It owns, per group, the weight of its
//! input rows and one accumulator per call, and outputs the view of the
//! aggregate: one row per group holding at least one input row (exactly one
//! row, always, for a global aggregate). Changes are buffered for the epoch;
//! at the barrier each touched group's previous row is retracted and its new
//! row inserted. Evaluating the grouping and argument expressions, and
//! partitioning rows by group (the exchange in front), are left to others.
//!
//! Accumulators are column-oriented (one vector per call, indexed by a
//! group's slot), so a batch updates them in typed loops. Min, max and the
//! distinct and ordered aggregates keep a multiset of values per group in
//! arrow's order-preserving row format, so retracting the current extreme
//! is exact.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array,
    Int64Array, ListArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{cast, concat, take, SortOptions};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Decimal128Type, Field, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, Schema, SchemaRef, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::Rows;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::value_set::ValueSet;
use super::{ChangeBatch, Operator, Shard, SortKey};
use crate::dataflow::expr::{evaluate, evaluate_all, timestamp_micros};
use crate::dataflow::row::{shard_of_empty_key, KeyBytes, KeyMap, RowCodec};
use crate::dataflow::state::{corrupt, StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::function::aggregate::{argument_columns, GroupUpdate, UserAggregate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    BoolAnd,
    BoolOr,
    StringAgg,
    ArrayAgg,
    /// The value of the group's first or last row in the call's ORDER BY.
    FirstValue,
    LastValue,
    /// A user-defined aggregate (`AggCall::user`).
    User,
}

#[derive(Debug, Clone)]
pub struct AggCall {
    pub func: AggFunc,
    /// Over the input batch; empty for `count(*)`. `string_agg` has two.
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub distinct: bool,
    /// `ORDER BY` inside the call (`array_agg(x ORDER BY t DESC)`,
    /// `last_value(x ORDER BY t)`): the values are kept in that order.
    /// Empty: in ascending order of the value itself.
    pub order: Vec<SortKey>,
    /// The aggregate of `AggFunc::User`.
    pub user: Option<Arc<dyn UserAggregate>>,
    /// `FILTER (WHERE …)`, over the input batch.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// An ordered `array_agg` of which the view reads only the first
    /// `keep` values (`(array_agg(x ORDER BY t DESC))[1:5]`): over an
    /// append-only input, only those are kept.
    pub keep: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// Over the input batch.
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub calls: Vec<AggCall>,
    /// The group columns, then one column per call.
    pub output_schema: SchemaRef,
    /// Set when a group key is a window of the sources' event time.
    pub close: Option<WindowClose>,
    /// The input only ever inserts (a stream, through row-by-row
    /// operators): min, max, first_value and last_value keep one value per
    /// group, and an ordered `array_agg` with `keep` only that many, since
    /// no retraction can ask for the values they let go.
    pub append_only: bool,
}

/// A group key that bounds the event time of the group's rows, so the
/// aggregate can let go of a group once the event-time frontier has passed
/// it (`Operator::on_frontier`): no row of it can come any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowClose {
    /// Which group expression (a timestamp).
    pub key: usize,
    /// Every input row of a group has an event time below its key plus
    /// this many microseconds: the group closes when the frontier reaches
    /// that.
    pub slack_us: i64,
    /// `EMIT ON WINDOW CLOSE`: a group's row is emitted once, final, when
    /// it closes, and never before.
    pub emit_on_close: bool,
}

impl AggregateSpec {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Aggregate::new(self.clone())?))
    }

    /// `Aggregate: group by [c@0], count(*), sum(v@1)`, or `Distinct: c@0`.
    pub fn describe(&self) -> String {
        let groups: Vec<String> = self.group_exprs.iter().map(|e| e.to_string()).collect();
        if self.calls.is_empty() && !groups.is_empty() {
            return format!("Distinct: {}", groups.join(", "));
        }
        let mut parts = Vec::with_capacity(self.calls.len() + 1);
        if !groups.is_empty() {
            parts.push(format!("group by [{}]", groups.join(", ")));
        }
        parts.extend(
            self.calls
                .iter()
                .map(|call| describe_call(call, self.append_only)),
        );
        let close = match self.close {
            Some(c) => format!(
                " (groups close when the frontier passes {} + {} us{})",
                groups[c.key],
                c.slack_us,
                if c.emit_on_close {
                    "; emit on window close"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        let append_only = match self.append_only {
            true => " (append-only input)",
            false => "",
        };
        format!("Aggregate: {}{close}{append_only}", parts.join(", "))
    }
}

fn describe_call(call: &AggCall, append_only: bool) -> String {
    let args = if call.args.is_empty() {
        "*".to_string()
    } else {
        let args: Vec<String> = call.args.iter().map(|a| a.to_string()).collect();
        args.join(", ")
    };
    let distinct = if call.distinct { "DISTINCT " } else { "" };
    let order = match call.order.is_empty() {
        true => String::new(),
        false => {
            let keys: Vec<String> = call
                .order
                .iter()
                .map(super::top_n::describe_sort_key)
                .collect();
            format!(" ORDER BY {}", keys.join(", "))
        }
    };
    let name = match &call.user {
        Some(user) => user.name(),
        None => func_name(call.func),
    };
    let mut text = format!("{name}({distinct}{args}{order})");
    if let Some(filter) = &call.filter {
        text.push_str(&format!(" FILTER (WHERE {filter})"));
    }
    if let (Some(keep), true) = (call.keep, append_only) {
        text.push_str(&format!(" keeping {keep}"));
    }
    text
}

fn func_name(func: AggFunc) -> &'static str {
    match func {
        AggFunc::Count => "count",
        AggFunc::Sum => "sum",
        AggFunc::Avg => "avg",
        AggFunc::Min => "min",
        AggFunc::Max => "max",
        AggFunc::BoolAnd => "bool_and",
        AggFunc::BoolOr => "bool_or",
        AggFunc::StringAgg => "string_agg",
        AggFunc::ArrayAgg => "array_agg",
        AggFunc::FirstValue => "first_value",
        AggFunc::LastValue => "last_value",
        AggFunc::User => "a user aggregate",
    }
}

impl Aggregate {
    fn new(spec: AggregateSpec) -> Result<Aggregate> {
        let groups = spec.group_exprs.len();
        let fields = spec.output_schema.fields();
        if fields.len() != groups + spec.calls.len() {
            return Err(Error::Internal(format!(
                "aggregate output schema has {} columns for {groups} groups and {} calls",
                fields.len(),
                spec.calls.len()
            )));
        }
        let out_types: Vec<DataType> = fields[groups..]
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let out_codec = if out_types.is_empty() {
            None
        } else {
            Some(RowCodec::new(&out_types)?)
        };
        let mut aggregate = Aggregate {
            spec,
            out_types,
            out_codec,
            key_codec: None,
            calls: Vec::new(),
            initialized: false,
            groups: Groups::default(),
            global_owner: false,
            slots: Vec::new(),
            close_at: Vec::new(),
            closing: BTreeMap::new(),
            restored_input: None,
        };
        if aggregate.is_global() {
            // The one group of a global aggregate lives for good, in slot 0.
            aggregate.groups.slot(&[]);
        }
        Ok(aggregate)
    }
}

struct Aggregate {
    spec: AggregateSpec,
    /// Types of the aggregate columns of the output.
    out_types: Vec<DataType>,
    /// Encodes the aggregate columns of an output row, so the row last
    /// emitted for a group can be retracted and compared; `None` without
    /// calls (DISTINCT).
    out_codec: Option<RowCodec>,
    /// `None` for a global aggregate, whose one key is empty.
    key_codec: Option<RowCodec>,
    /// Built from the first batch: the spec does not carry the input schema,
    /// and accumulators depend on the argument types.
    calls: Vec<CallState>,
    initialized: bool,
    groups: Groups,
    /// Whether this worker owns the empty key, so emits the global row.
    global_owner: bool,
    /// Each row's group slot, reused from batch to batch.
    slots: Vec<u32>,
    /// With a window key: per slot, when its group closes (`UNSET` for a
    /// free slot, `i64::MAX` for a NULL key, which never closes) ...
    close_at: Vec<i64>,
    /// ... and the slots by that time. Entries of slots since freed (and
    /// perhaps reused) are stale, told apart by `close_at`.
    closing: BTreeMap<i64, Vec<u32>>,
    /// The input schema a restore was given, for initialising the calls
    /// when changes applied after it are the first to have them.
    restored_input: Option<SchemaRef>,
}

/// `Aggregate::close_at` of a slot without a group.
const UNSET: i64 = i64::MIN;

impl Operator for Aggregate {
    fn on_batch(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        _out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if !self.initialized {
            self.init(&batch.data.schema())?;
        }
        self.assign_slots(&batch)?;
        let groups = self.groups.capacity();
        for call in &mut self.calls {
            call.update(&batch, &self.slots, groups)?;
        }
        Ok(())
    }

    fn on_start(&mut self, shard: Shard, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if !self.is_global() {
            return Ok(());
        }
        self.global_owner = self.owns_global_row(shard);
        if !self.global_owner || self.groups.emitted[0].is_some() {
            return Ok(());
        }
        let columns = self
            .spec
            .calls
            .iter()
            .zip(&self.out_types)
            .map(|(call, t)| empty_value(call.func, t))
            .collect::<Result<Vec<_>>>()?;
        let encoded = self.encode_outputs(&columns, 1)?;
        self.groups.set_emitted(0, encoded.into_iter().next());
        self.groups.mark_changed(0);
        out.push(self.build_output(&[], &[0], &columns, &[0])?);
        Ok(())
    }

    fn on_barrier(&mut self, _epoch: u64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let touched = self.groups.take_touched();
        if touched.is_empty() {
            return Ok(());
        }
        // Nothing is left pending past a barrier (a checkpoint may follow).
        for call in &mut self.calls {
            call.settle(&touched)?;
        }
        if self.spec.close.is_some_and(|c| c.emit_on_close) {
            // Nothing is emitted before a window closes; a group whose
            // rows all went is simply forgotten.
            for slot in touched {
                if !self.is_live(slot) {
                    self.release(slot);
                }
            }
            return Ok(());
        }
        let live: Vec<bool> = touched.iter().map(|s| self.is_live(*s)).collect();
        let live_slots: Vec<u32> = touched
            .iter()
            .zip(&live)
            .filter(|(_, l)| **l)
            .map(|(s, _)| *s)
            .collect();
        let columns = self
            .calls
            .iter_mut()
            .map(|c| c.finalize(&live_slots))
            .collect::<Result<Vec<_>>>()?;
        let mut encoded = self.encode_outputs(&columns, live_slots.len())?.into_iter();
        let mut retracted: Vec<(u32, KeyBytes)> = Vec::new();
        let mut inserted: Vec<u32> = Vec::new();
        // Each inserted slot's row in `columns`.
        let mut at: Vec<u32> = Vec::new();
        let mut next_live = 0u32;
        for (slot, is_live) in touched.iter().zip(&live) {
            let (new, row) = match is_live {
                true => {
                    next_live += 1;
                    (encoded.next(), next_live - 1)
                }
                false => (None, 0),
            };
            if self.groups.emitted[*slot as usize] == new {
                continue;
            }
            let inserts = new.is_some();
            if let Some(old) = self.groups.set_emitted(*slot, new) {
                retracted.push((*slot, old));
            }
            if inserts {
                inserted.push(*slot);
                at.push(row);
            }
        }
        if !retracted.is_empty() || !inserted.is_empty() {
            out.push(self.build_output(&retracted, &inserted, &columns, &at)?);
        }
        for (slot, is_live) in touched.iter().zip(&live) {
            if !is_live && !self.is_global() {
                self.release(*slot);
            }
        }
        Ok(())
    }

    fn on_frontier(&mut self, frontier_us: i64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let Some(close) = self.spec.close else {
            return Ok(());
        };
        let mut closed = Vec::new();
        while let Some(entry) = self.closing.first_entry() {
            if *entry.key() > frontier_us {
                break;
            }
            let (at, slots) = entry.remove_entry();
            for slot in slots {
                // A stale entry (the slot freed, perhaps reused) or a
                // second one for the same group is passed over.
                if self.close_at[slot as usize] == at {
                    self.close_at[slot as usize] = UNSET;
                    closed.push(slot);
                }
            }
        }
        if closed.is_empty() {
            return Ok(());
        }
        if close.emit_on_close {
            let live: Vec<u32> = closed
                .iter()
                .copied()
                .filter(|s| self.is_live(*s))
                .collect();
            let columns = self
                .calls
                .iter_mut()
                .map(|c| c.finalize(&live))
                .collect::<Result<Vec<_>>>()?;
            let encoded = self.encode_outputs(&columns, live.len())?;
            for (slot, row) in live.iter().zip(encoded) {
                self.groups.set_emitted(*slot, Some(row));
            }
            if !live.is_empty() {
                let at: Vec<u32> = (0..live.len() as u32).collect();
                out.push(self.build_output(&[], &live, &columns, &at)?);
            }
        }
        // The rows emitted stay in the output; only the state goes.
        for slot in closed {
            self.release(slot);
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.groups.bytes()
            + self.calls.iter().map(|c| c.acc.bytes()).sum::<usize>()
            + self.close_at.len() * 16
    }

    /// Whether the calls were initialised, the global row's owner, the
    /// groups, then per call its accumulator and separator. The calls'
    /// types are not written: restoring rebuilds them from the input schema.
    fn checkpoint(&self, state: &mut StateWriter) -> Result<()> {
        state.bool(self.initialized);
        state.bool(self.global_owner);
        self.groups.write(state)?;
        for call in &self.calls {
            call.acc.write(state);
            state.str(&call.separator);
        }
        Ok(())
    }

    fn restore(
        &mut self,
        shard: Shard,
        inputs: &[SchemaRef],
        state: &mut StateReader<'_>,
    ) -> Result<()> {
        let initialized = state.bool()?;
        // What `on_start` would have decided; a checkpoint saying otherwise
        // was taken on another shard.
        self.global_owner = self.owns_global_row(shard);
        if state.bool()? != self.global_owner {
            return Err(corrupt(format!(
                "aggregate state of another shard than {shard:?}"
            )));
        }
        self.groups = Groups::read(state)?;
        if self.is_global() && self.groups.index.get([].as_slice()) != Some(&0) {
            return Err(corrupt("global aggregate without its group".into()));
        }
        let input = inputs
            .first()
            .ok_or_else(|| Error::Internal("aggregate restored without its input".into()))?;
        self.restored_input = Some(Arc::clone(input));
        if !initialized {
            return Ok(());
        }
        self.init(input)?;
        let groups = self.groups.capacity();
        for call in &mut self.calls {
            call.acc.read(state, groups)?;
            call.separator = state.str()?.to_string();
        }
        self.rebuild_closing()
    }

    fn track_changes(&mut self) {
        self.groups.track_changes();
    }

    /// Whether the calls are initialised, then each group slot changed
    /// since the last checkpoint: its number, and either its key, weight,
    /// emitted row and accumulators, or that it is free; then per call its
    /// separator.
    fn checkpoint_changes(&mut self, state: &mut StateWriter) -> Result<bool> {
        let Some(slots) = self.groups.take_changed()? else {
            return Ok(false);
        };
        state.bool(self.initialized);
        state.len(self.groups.capacity());
        state.len(slots.len());
        for slot in slots {
            state.u64(u64::from(slot));
            let live = self.groups.is_live_slot(slot);
            state.bool(live);
            if live {
                self.groups.write_slot(state, slot);
                for call in &self.calls {
                    call.acc.write_slot(state, slot as usize);
                }
            }
        }
        for call in &self.calls {
            state.str(&call.separator);
        }
        Ok(true)
    }

    fn restore_changes(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        if state.bool()? && !self.initialized {
            let input = self.restored_input.clone().ok_or_else(|| {
                Error::Internal("aggregate changes applied before its state".into())
            })?;
            self.init(&input)?;
        }
        let capacity = state.count(0)?;
        if capacity < self.groups.capacity() {
            return Err(corrupt(format!(
                "{capacity} group slots in changes to {}",
                self.groups.capacity()
            )));
        }
        self.groups.grow(capacity);
        for call in &mut self.calls {
            call.acc.resize(capacity);
        }
        let mut free = vec![false; capacity];
        self.groups
            .free
            .iter()
            .for_each(|s| free[*s as usize] = true);
        // A slot number, a flag.
        let count = state.count(9)?;
        let mut changed = Vec::with_capacity(count);
        for _ in 0..count {
            let slot = state.u64()?;
            let s = usize::try_from(slot)
                .ok()
                .filter(|s| *s < capacity)
                .ok_or_else(|| corrupt(format!("group slot {slot} of {capacity}")))?;
            let live = state.bool()?;
            let old = self.groups.read_slot(state, s as u32, live)?;
            changed.push((s as u32, old, live));
            free[s] = !live;
            for call in &mut self.calls {
                match live {
                    true => call.acc.read_slot(state, s)?,
                    false => call.acc.reset(s),
                }
            }
        }
        for call in &mut self.calls {
            call.separator = state.str()?.to_string();
        }
        self.groups.reindex(&changed)?;
        self.groups.free = (0..capacity as u32).filter(|s| free[*s as usize]).collect();
        if self.is_global() && self.groups.index.get([].as_slice()) != Some(&0) {
            return Err(corrupt("global aggregate without its group".into()));
        }
        self.rebuild_closing()
    }
}

impl Aggregate {
    fn is_global(&self) -> bool {
        self.spec.group_exprs.is_empty()
    }

    /// Whether this worker owns the empty key, so emits the global row.
    fn owns_global_row(&self, shard: Shard) -> bool {
        self.is_global() && shard.index == shard_of_empty_key(shard.count)
    }

    /// Whether the group has a row in the output.
    fn is_live(&self, slot: u32) -> bool {
        if self.is_global() {
            self.global_owner
        } else {
            self.groups.weights[slot as usize] > 0
        }
    }

    fn init(&mut self, input: &Schema) -> Result<()> {
        if !self.is_global() {
            let key_types = self
                .spec
                .group_exprs
                .iter()
                .map(|e| e.data_type(input))
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            self.key_codec = Some(RowCodec::new(&key_types)?);
        }
        self.calls = self
            .spec
            .calls
            .iter()
            .zip(&self.out_types)
            .map(|(call, out)| CallState::new(call, input, out, self.spec.append_only))
            .collect::<Result<_>>()?;
        let groups = self.groups.capacity();
        self.calls.iter_mut().for_each(|c| c.acc.resize(groups));
        self.initialized = true;
        Ok(())
    }

    /// Finds (or creates) each row's group, adding the row's weight to it.
    fn assign_slots(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.slots.clear();
        let Some(codec) = &self.key_codec else {
            self.slots.resize(batch.len(), 0);
            self.groups.weights[0] += batch.diffs.iter().sum::<i64>();
            self.groups.touch(0);
            return Ok(());
        };
        let keys = evaluate_all(&self.spec.group_exprs, &batch.data)?;
        let rows = codec.encode(&keys)?;
        self.slots.reserve(batch.len());
        for (i, diff) in batch.diffs.iter().enumerate() {
            let slot = self.groups.slot(rows.row(i).data());
            self.groups.weights[slot as usize] += diff;
            self.groups.touch(slot);
            self.slots.push(slot);
        }
        if let Some(close) = self.spec.close {
            let times = timestamp_micros(&keys[close.key])?;
            self.close_at.resize(self.groups.capacity(), UNSET);
            for i in 0..self.slots.len() {
                let slot = self.slots[i];
                if self.close_at[slot as usize] == UNSET {
                    self.schedule_close(slot, &times, i, close.slack_us);
                }
            }
        }
        Ok(())
    }

    /// Notes when the group in `slot` closes: its key's time (row `row` of
    /// `times`) plus the slack.
    fn schedule_close(&mut self, slot: u32, times: &Int64Array, row: usize, slack_us: i64) {
        if times.is_null(row) {
            self.close_at[slot as usize] = i64::MAX;
            return;
        }
        let at = times.value(row).saturating_add(slack_us);
        self.close_at[slot as usize] = at;
        self.closing.entry(at).or_default().push(slot);
    }

    /// After a restore: when each group closes, from its key.
    fn rebuild_closing(&mut self) -> Result<()> {
        self.closing.clear();
        self.close_at.clear();
        let (Some(close), Some(codec)) = (self.spec.close, &self.key_codec) else {
            return Ok(());
        };
        let free: std::collections::HashSet<u32> = self.groups.free.iter().copied().collect();
        let slots: Vec<u32> = (0..self.groups.capacity() as u32)
            .filter(|s| !free.contains(s))
            .collect();
        self.close_at.resize(self.groups.capacity(), UNSET);
        if slots.is_empty() {
            return Ok(());
        }
        let keys = codec.decode(slots.iter().map(|s| self.groups.keys[*s as usize].as_ref()))?;
        let times = timestamp_micros(&keys[close.key])?;
        for (row, slot) in slots.iter().enumerate() {
            self.schedule_close(*slot, &times, row, close.slack_us);
        }
        Ok(())
    }

    fn release(&mut self, slot: u32) {
        if let Some(at) = self.close_at.get_mut(slot as usize) {
            *at = UNSET;
        }
        self.groups.release(slot);
        self.calls
            .iter_mut()
            .for_each(|c| c.acc.reset(slot as usize));
    }

    /// The aggregate columns of `rows` output rows, encoded row by row.
    fn encode_outputs(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<KeyBytes>> {
        let Some(codec) = &self.out_codec else {
            return Ok(vec![KeyBytes::default(); rows]);
        };
        let encoded = codec.encode(columns)?;
        Ok(encoded.iter().map(|r| r.data().into()).collect())
    }

    /// Retractions of the given previous rows, then insertions of the rows
    /// now emitted for `inserted`, whose aggregate values are row `at[i]`
    /// of the calls' `fresh` columns (those rows were just encoded into
    /// what the groups emitted: they are taken, not decoded again).
    fn build_output(
        &self,
        retracted: &[(u32, KeyBytes)],
        inserted: &[u32],
        fresh: &[ArrayRef],
        at: &[u32],
    ) -> Result<ChangeBatch> {
        debug_assert_eq!(at.len(), inserted.len(), "a fresh row per inserted group");
        let slots: Vec<u32> = retracted
            .iter()
            .map(|(s, _)| *s)
            .chain(inserted.iter().copied())
            .collect();
        let mut columns = match &self.key_codec {
            Some(codec) => {
                codec.decode(slots.iter().map(|s| self.groups.keys[*s as usize].as_ref()))?
            }
            None => Vec::new(),
        };
        let fields = self.spec.output_schema.fields();
        let keys = columns.len();
        if let Some(codec) = &self.out_codec {
            let old = match retracted.is_empty() {
                true => Vec::new(),
                false => codec.decode(retracted.iter().map(|(_, row)| row.as_ref()))?,
            };
            let rows = UInt32Array::from(at.to_vec());
            for (i, values) in fresh.iter().enumerate() {
                let field = fields.get(keys + i).ok_or_else(|| {
                    Error::Internal("aggregate output wider than its schema".into())
                })?;
                let new = cast_to(&take(values, &rows, None)?, field.data_type())?;
                let column = match old.get(i) {
                    Some(old) => {
                        concat(&[cast_to(old, field.data_type())?.as_ref(), new.as_ref()])?
                    }
                    None => new,
                };
                columns.push(column);
            }
        }
        let columns = columns
            .iter()
            .zip(fields)
            .map(|(c, f)| cast_to(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(slots.len()));
        let data = RecordBatch::try_new_with_options(
            Arc::clone(&self.spec.output_schema),
            columns,
            &options,
        )?;
        let mut diffs = vec![-1; retracted.len()];
        diffs.resize(slots.len(), 1);
        Ok(ChangeBatch::new(data, diffs))
    }
}

/// Groups by encoded key, each in a slot that indexes the accumulators.
/// Slots of emptied groups are reused.
#[derive(Default)]
struct Groups {
    index: KeyMap<u32>,
    keys: Vec<KeyBytes>,
    /// Sum of the weights of the group's input rows.
    weights: Vec<i64>,
    /// The aggregate columns of the row last emitted for the group,
    /// encoded; `None` while the group has no row in the output.
    emitted: Vec<Option<KeyBytes>>,
    touched: Vec<bool>,
    touched_slots: Vec<u32>,
    free: Vec<u32>,
    /// Whether slots changed since the last checkpoint are kept (once a
    /// checkpoint asked for them) ...
    tracking: bool,
    /// ... per slot, whether it did, and those that did.
    changed: Vec<bool>,
    changed_slots: Vec<u32>,
    /// What the keys and emitted rows hold, kept as they change: reading
    /// the state's size (every step) costs nothing per group.
    data_bytes: usize,
}

/// A key's share of [`Groups::bytes`] besides the per-slot constant: its
/// bytes, in the slot and in the index.
fn key_bytes(key: &KeyBytes) -> usize {
    2 * key.len()
}

impl Groups {
    fn slot(&mut self, key: &[u8]) -> u32 {
        if let Some(slot) = self.index.get(key) {
            return *slot;
        }
        let key: KeyBytes = key.into();
        self.data_bytes += key_bytes(&key);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.keys[slot as usize] = key;
                slot
            }
            None => {
                self.keys.push(key);
                self.weights.push(0);
                self.emitted.push(None);
                self.touched.push(false);
                self.changed.push(false);
                (self.keys.len() - 1) as u32
            }
        };
        self.index.insert(&self.keys[slot as usize], slot);
        self.mark_changed(slot);
        slot
    }

    /// Sets the row emitted for a slot's group; returns the one before.
    fn set_emitted(&mut self, slot: u32, row: Option<KeyBytes>) -> Option<KeyBytes> {
        self.data_bytes += row.as_ref().map_or(0, |r| r.len());
        let old = std::mem::replace(&mut self.emitted[slot as usize], row);
        self.data_bytes -= old.as_ref().map_or(0, |r| r.len());
        old
    }

    fn touch(&mut self, slot: u32) {
        let touched = &mut self.touched[slot as usize];
        if !*touched {
            *touched = true;
            self.touched_slots.push(slot);
            self.mark_changed(slot);
        }
    }

    fn mark_changed(&mut self, slot: u32) {
        if self.tracking {
            let changed = &mut self.changed[slot as usize];
            if !*changed {
                *changed = true;
                self.changed_slots.push(slot);
            }
        }
    }

    fn track_changes(&mut self) {
        self.tracking = true;
        self.changed_slots.clear();
        self.changed.clear();
        self.changed.resize(self.keys.len(), false);
    }

    /// The slots changed since the last checkpoint, in ascending order,
    /// forgotten from here on; `None` while changes are not tracked.
    fn take_changed(&mut self) -> Result<Option<Vec<u32>>> {
        if !self.touched_slots.is_empty() {
            return Err(Error::Internal(
                "aggregate checkpointed with groups touched since the barrier".into(),
            ));
        }
        if !self.tracking {
            return Ok(None);
        }
        let mut slots = std::mem::take(&mut self.changed_slots);
        slots.iter().for_each(|s| self.changed[*s as usize] = false);
        slots.sort_unstable();
        Ok(Some(slots))
    }

    /// Whether a group holds the slot (a free one is in no group).
    fn is_live_slot(&self, slot: u32) -> bool {
        self.index.get(&self.keys[slot as usize]) == Some(&slot)
    }

    /// Adds free slots up to `capacity`.
    fn grow(&mut self, capacity: usize) {
        self.keys.resize(capacity, KeyBytes::default());
        self.weights.resize(capacity, 0);
        self.emitted.resize(capacity, None);
        self.touched.resize(capacity, false);
        self.changed.resize(capacity, false);
    }

    /// One live slot's key, weight and emitted row.
    fn write_slot(&self, state: &mut StateWriter, slot: u32) {
        let s = slot as usize;
        state.bytes(&self.keys[s]);
        state.i64(self.weights[s]);
        state.bool(self.emitted[s].is_some());
        if let Some(row) = &self.emitted[s] {
            state.bytes(row);
        }
    }

    /// Sets a slot to what `write_slot` wrote (`live`), or frees it,
    /// returning the key it held. The index and the free list are the
    /// caller's: a key may move between slots within one set of changes.
    fn read_slot(
        &mut self,
        state: &mut StateReader<'_>,
        slot: u32,
        live: bool,
    ) -> Result<KeyBytes> {
        let s = slot as usize;
        let old = std::mem::take(&mut self.keys[s]);
        self.data_bytes -= key_bytes(&old);
        self.weights[s] = 0;
        self.set_emitted(slot, None);
        if live {
            self.keys[s] = state.bytes()?.into();
            self.data_bytes += key_bytes(&self.keys[s]);
            self.weights[s] = state.i64()?;
            let emitted = match state.bool()? {
                true => Some(state.bytes()?.into()),
                false => None,
            };
            self.set_emitted(slot, emitted);
        }
        Ok(old)
    }

    /// Indexes slots `read_slot` set: `changed` holds each with the key
    /// it held before and whether it is live now.
    fn reindex(&mut self, changed: &[(u32, KeyBytes, bool)]) -> Result<()> {
        for (slot, old, _) in changed {
            if self.index.get(old) == Some(slot) {
                self.index.remove(old);
            }
        }
        for (slot, _, live) in changed {
            if *live
                && self
                    .index
                    .insert(&self.keys[*slot as usize], *slot)
                    .is_some()
            {
                return Err(corrupt("aggregate group held twice".into()));
            }
        }
        Ok(())
    }

    fn take_touched(&mut self) -> Vec<u32> {
        let slots = std::mem::take(&mut self.touched_slots);
        slots.iter().for_each(|s| self.touched[*s as usize] = false);
        slots
    }

    fn release(&mut self, slot: u32) {
        self.mark_changed(slot);
        let s = slot as usize;
        self.index.remove(&self.keys[s]);
        self.data_bytes -= key_bytes(&self.keys[s]);
        self.keys[s] = KeyBytes::default();
        self.weights[s] = 0;
        self.set_emitted(slot, None);
        self.free.push(slot);
    }

    /// Slots allocated, used or free: the length accumulators must have.
    fn capacity(&self) -> usize {
        self.keys.len()
    }

    /// Every slot (key, weight, emitted row), then the free slots. Touched
    /// slots are per epoch, so none are left at a barrier.
    fn write(&self, state: &mut StateWriter) -> Result<()> {
        if !self.touched_slots.is_empty() {
            return Err(Error::Internal(
                "aggregate checkpointed with groups touched since the barrier".into(),
            ));
        }
        state.len(self.keys.len());
        for ((key, weight), emitted) in self.keys.iter().zip(&self.weights).zip(&self.emitted) {
            state.bytes(key);
            state.i64(*weight);
            state.bool(emitted.is_some());
            if let Some(row) = emitted {
                state.bytes(row);
            }
        }
        write_vec(state, &self.free, |state, slot| state.u64(u64::from(slot)));
        Ok(())
    }

    /// What `write` wrote; the index is rebuilt from the slots in use.
    fn read(state: &mut StateReader<'_>) -> Result<Groups> {
        // A key's length, a weight and a flag.
        let slots = state.count(17)?;
        let mut groups = Groups {
            keys: Vec::with_capacity(slots),
            weights: Vec::with_capacity(slots),
            emitted: Vec::with_capacity(slots),
            touched: vec![false; slots],
            changed: vec![false; slots],
            ..Groups::default()
        };
        for _ in 0..slots {
            groups.keys.push(state.bytes()?.into());
            groups.weights.push(state.i64()?);
            let emitted = match state.bool()? {
                true => Some(state.bytes()?.into()),
                false => None,
            };
            groups.emitted.push(emitted);
        }
        let mut free = vec![false; slots];
        for _ in 0..state.count(8)? {
            let slot = state.u64()?;
            match usize::try_from(slot).ok().and_then(|s| free.get_mut(s)) {
                Some(is_free) if !*is_free => *is_free = true,
                _ => return Err(corrupt(format!("free slot {slot} of {slots}"))),
            }
            groups.free.push(slot as u32);
        }
        groups.data_bytes = groups.count_bytes();
        groups.index.reserve(slots - groups.free.len());
        for (slot, key) in groups.keys.iter().enumerate() {
            if !free[slot] && groups.index.insert(key, slot as u32).is_some() {
                return Err(corrupt("aggregate group held twice".into()));
            }
        }
        Ok(groups)
    }

    fn bytes(&self) -> usize {
        debug_assert_eq!(self.data_bytes, self.count_bytes());
        self.data_bytes + 80 * self.keys.len() + 4 * self.free.len()
    }

    /// [`Groups::data_bytes`] counted group by group.
    fn count_bytes(&self) -> usize {
        let keys: usize = self.keys.iter().map(key_bytes).sum();
        keys + self
            .emitted
            .iter()
            .flatten()
            .map(|e| e.len())
            .sum::<usize>()
    }
}

/// One aggregate call: its expressions, its accumulator, what it outputs.
struct CallState {
    func: AggFunc,
    distinct: bool,
    /// The arguments feeding the accumulator (not `string_agg`'s separator).
    values: Vec<Arc<dyn PhysicalExpr>>,
    /// Types the accumulator takes its values in (arguments are cast).
    value_types: Vec<DataType>,
    separator_expr: Option<Arc<dyn PhysicalExpr>>,
    /// With an `ORDER BY` in the call, the values are its keys followed by
    /// the aggregated value.
    ordered: bool,
    /// `string_agg`'s separator, from the first row of the latest batch.
    separator: String,
    filter: Option<Arc<dyn PhysicalExpr>>,
    out_type: DataType,
    acc: Acc,
}

impl CallState {
    fn new(
        call: &AggCall,
        input: &Schema,
        out_type: &DataType,
        append_only: bool,
    ) -> Result<CallState> {
        let arg_types = call
            .args
            .iter()
            .map(|a| a.data_type(input))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let first = || {
            arg_types.first().cloned().ok_or_else(|| {
                Error::Internal(format!("{} without an argument", func_name(call.func)))
            })
        };
        if !call.order.is_empty() {
            return CallState::ordered(call, input, first()?, out_type, append_only);
        }
        let (acc, value_types) = match (call.func, call.distinct) {
            (AggFunc::User, _) => {
                let user = call.user.clone().ok_or_else(|| {
                    Error::Internal("a user aggregate call without its aggregate".into())
                })?;
                let types = user.args().to_vec();
                (Acc::User(UserAcc::new(user)), types)
            }
            (AggFunc::FirstValue | AggFunc::LastValue, _) => {
                return Err(Error::Internal(format!(
                    "{} without ORDER BY",
                    func_name(call.func)
                )))
            }
            (AggFunc::Count, _) if arg_types.is_empty() => (Acc::Count(Vec::new()), Vec::new()),
            (AggFunc::Count, false) => (Acc::Count(Vec::new()), arg_types.clone()),
            (AggFunc::Count, true) => (Acc::Values(Multiset::new(&arg_types)?), arg_types.clone()),
            (AggFunc::Sum | AggFunc::Avg, false) => numeric_acc(call.func, &first()?)?,
            (AggFunc::Sum | AggFunc::Avg, true) => {
                let (_, value_type) = numeric_acc(call.func, &first()?)?;
                let acc = Acc::Values(Multiset::new(&value_type)?);
                (acc, value_type)
            }
            (AggFunc::Min | AggFunc::Max, _) if append_only => {
                let value_type = vec![first()?];
                let greatest = call.func == AggFunc::Max;
                (
                    Acc::Extreme(Extreme::new(&value_type, greatest)?),
                    value_type,
                )
            }
            (AggFunc::Min | AggFunc::Max | AggFunc::ArrayAgg, _) => {
                let value_type = vec![first()?];
                (Acc::Values(Multiset::new(&value_type)?), value_type)
            }
            (AggFunc::BoolAnd | AggFunc::BoolOr, _) => {
                first()?;
                let acc = Acc::Bools {
                    trues: Vec::new(),
                    falses: Vec::new(),
                };
                (acc, vec![DataType::Boolean])
            }
            (AggFunc::StringAgg, _) => {
                first()?;
                let value_type = vec![DataType::Utf8];
                (Acc::Values(Multiset::new(&value_type)?), value_type)
            }
        };
        let values = call.args.iter().take(value_types.len()).cloned().collect();
        Ok(CallState {
            func: call.func,
            distinct: call.distinct,
            values,
            value_types,
            separator_expr: match call.func {
                AggFunc::StringAgg => call.args.get(1).cloned(),
                _ => None,
            },
            ordered: false,
            separator: String::new(),
            filter: call.filter.clone(),
            out_type: out_type.clone(),
            acc,
        })
    }

    /// A call with `ORDER BY`: its values are kept sorted by the order
    /// keys (then by the value), and the value is the last column.
    fn ordered(
        call: &AggCall,
        input: &Schema,
        value_type: DataType,
        out_type: &DataType,
        append_only: bool,
    ) -> Result<CallState> {
        let value_type = match call.func {
            AggFunc::StringAgg => DataType::Utf8,
            _ => value_type,
        };
        let mut fields = call
            .order
            .iter()
            .map(|k| {
                let options = SortOptions {
                    descending: k.descending,
                    nulls_first: k.nulls_first,
                };
                Ok((k.expr.data_type(input)?, options))
            })
            .collect::<Result<Vec<_>>>()?;
        fields.push((value_type, SortOptions::default()));
        let mut values: Vec<Arc<dyn PhysicalExpr>> =
            call.order.iter().map(|k| Arc::clone(&k.expr)).collect();
        values.push(Arc::clone(&call.args[0]));
        let value_types = fields.iter().map(|(t, _)| t.clone()).collect();
        let acc = match call.func {
            AggFunc::FirstValue | AggFunc::LastValue if append_only => {
                let greatest = call.func == AggFunc::LastValue;
                Acc::Extreme(Extreme::with_order(fields, greatest)?)
            }
            _ => {
                let mut set = Multiset::with_order(fields)?;
                if append_only && !call.distinct {
                    set.keep = call.keep;
                }
                Acc::Values(set)
            }
        };
        Ok(CallState {
            func: call.func,
            distinct: call.distinct,
            values,
            value_types,
            separator_expr: match call.func {
                AggFunc::StringAgg => call.args.get(1).cloned(),
                _ => None,
            },
            ordered: true,
            separator: String::new(),
            filter: call.filter.clone(),
            out_type: out_type.clone(),
            acc,
        })
    }

    /// Adds one batch's rows (whose groups are `slots`) to the accumulator.
    fn update(&mut self, batch: &ChangeBatch, slots: &[u32], groups: usize) -> Result<()> {
        self.acc.resize(groups);
        let mut mask = match &self.filter {
            Some(filter) => Some(true_mask(&evaluate(filter, &batch.data)?)?),
            None => None,
        };
        let values = evaluate_all(&self.values, &batch.data)?
            .iter()
            .zip(&self.value_types)
            .map(|(v, t)| cast_to(v, t))
            .collect::<Result<Vec<_>>>()?;
        // array_agg, first_value and last_value keep NULLs; every other
        // aggregate ignores rows whose arguments are NULL (NULL order keys
        // do not count).
        let arguments = match self.func {
            AggFunc::ArrayAgg | AggFunc::FirstValue | AggFunc::LastValue | AggFunc::User => {
                &values[..0]
            }
            _ if self.ordered => &values[values.len() - 1..],
            _ => &values[..],
        };
        for value in arguments {
            mask = and_valid(mask, value);
        }
        if let Some(expr) = &self.separator_expr {
            let separator = cast_to(&evaluate(expr, &batch.data)?, &DataType::Utf8)?;
            let separator = separator.as_string_opt::<i32>();
            self.separator = separator
                .filter(|s| s.is_valid(0))
                .map(|s| s.value(0).to_string())
                .unwrap_or_default();
        }
        self.acc.update(&values, mask.as_ref(), slots, &batch.diffs)
    }

    /// Applies what changed since the last barrier for the accumulators
    /// that wait for it (user aggregates), for the groups `touched`.
    fn settle(&mut self, touched: &[u32]) -> Result<()> {
        match &mut self.acc {
            Acc::User(user) => user.settle(touched),
            _ => Ok(()),
        }
    }

    /// The call's output for each group of `slots`, in the output type.
    fn finalize(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        let out = Finish {
            func: self.func,
            distinct: self.distinct,
            separator: &self.separator,
            out_type: &self.out_type,
        };
        cast_to(&self.acc.finalize(&out, slots)?, &self.out_type)
    }
}

/// What a finished accumulator is turned into.
struct Finish<'a> {
    func: AggFunc,
    distinct: bool,
    separator: &'a str,
    out_type: &'a DataType,
}

/// Per-group state of one call, one vector element per group slot.
enum Acc {
    /// Rows, or rows with non-null arguments, by weight.
    Count(Vec<i64>),
    /// Exact sums of integers, or of decimals at `scale`, with the count of
    /// values summed.
    Exact {
        sums: Vec<i128>,
        counts: Vec<i64>,
        scale: i8,
    },
    Float {
        sums: Vec<f64>,
        counts: Vec<i64>,
    },
    Bools {
        trues: Vec<i64>,
        falses: Vec<i64>,
    },
    Values(Multiset),
    /// Over an append-only input: min, max, first_value, last_value.
    Extreme(Extreme),
    User(UserAcc),
}

/// The accumulator of a non-distinct `sum`/`avg` over `input`, and the
/// type its values are cast to.
fn numeric_acc(func: AggFunc, input: &DataType) -> Result<(Acc, Vec<DataType>)> {
    use DataType::*;
    let exact = |scale: i8| Acc::Exact {
        sums: Vec::new(),
        counts: Vec::new(),
        scale,
    };
    Ok(match input {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => {
            (exact(0), vec![input.clone()])
        }
        Null => (exact(0), vec![Int64]),
        Decimal128(_, scale) => (exact(*scale), vec![input.clone()]),
        // Wider or narrower decimals are summed as Decimal128; a Decimal256
        // value beyond its range counts as NULL.
        Decimal32(_, scale) | Decimal64(_, scale) | Decimal256(_, scale) => {
            (exact(*scale), vec![Decimal128(38, *scale)])
        }
        Float16 | Float32 | Float64 => {
            let acc = Acc::Float {
                sums: Vec::new(),
                counts: Vec::new(),
            };
            (acc, vec![Float64])
        }
        other => {
            return Err(Error::FeatureNotSupported {
                feature: format!("{}({other}) in a materialized view", func_name(func)),
                hint: None,
            })
        }
    })
}

impl Acc {
    fn resize(&mut self, groups: usize) {
        match self {
            Acc::Count(counts) => counts.resize(groups, 0),
            Acc::Exact { sums, counts, .. } => {
                sums.resize(groups, 0);
                counts.resize(groups, 0);
            }
            Acc::Float { sums, counts } => {
                sums.resize(groups, 0.0);
                counts.resize(groups, 0);
            }
            Acc::Bools { trues, falses } => {
                trues.resize(groups, 0);
                falses.resize(groups, 0);
            }
            Acc::Values(set) => set.resize(groups),
            Acc::Extreme(extreme) => extreme.resize(groups),
            Acc::User(user) => user.resize(groups),
        }
    }

    fn reset(&mut self, slot: usize) {
        match self {
            Acc::Count(counts) => counts[slot] = 0,
            Acc::Exact { sums, counts, .. } => {
                sums[slot] = 0;
                counts[slot] = 0;
            }
            Acc::Float { sums, counts } => {
                sums[slot] = 0.0;
                counts[slot] = 0;
            }
            Acc::Bools { trues, falses } => {
                trues[slot] = 0;
                falses[slot] = 0;
            }
            Acc::Values(set) => set.reset(slot),
            Acc::Extreme(extreme) => extreme.reset(slot),
            Acc::User(user) => user.reset(slot),
        }
    }

    /// The per-group vectors (and an exact sum's scale); the kind is not
    /// written, it follows from the call and the input schema.
    fn write(&self, state: &mut StateWriter) {
        match self {
            Acc::Count(counts) => write_vec(state, counts, StateWriter::i64),
            Acc::Exact {
                sums,
                counts,
                scale,
            } => {
                state.i64(i64::from(*scale));
                write_vec(state, sums, StateWriter::i128);
                write_vec(state, counts, StateWriter::i64);
            }
            Acc::Float { sums, counts } => {
                write_vec(state, sums, StateWriter::f64);
                write_vec(state, counts, StateWriter::i64);
            }
            Acc::Bools { trues, falses } => {
                write_vec(state, trues, StateWriter::i64);
                write_vec(state, falses, StateWriter::i64);
            }
            Acc::Values(set) => set.write(state),
            Acc::Extreme(extreme) => extreme.write(state),
            Acc::User(user) => user.write(state),
        }
    }

    /// Fills an accumulator `init` made for `groups` slots with what
    /// `write` wrote.
    fn read(&mut self, state: &mut StateReader<'_>, groups: usize) -> Result<()> {
        match self {
            Acc::Count(counts) => *counts = read_vec(state, groups, StateReader::i64)?,
            Acc::Exact {
                sums,
                counts,
                scale,
            } => {
                let written = state.i64()?;
                if written != i64::from(*scale) {
                    return Err(corrupt(format!("a sum at scale {written}, not {scale}")));
                }
                *sums = read_vec(state, groups, StateReader::i128)?;
                *counts = read_vec(state, groups, StateReader::i64)?;
            }
            Acc::Float { sums, counts } => {
                *sums = read_vec(state, groups, StateReader::f64)?;
                *counts = read_vec(state, groups, StateReader::i64)?;
            }
            Acc::Bools { trues, falses } => {
                *trues = read_vec(state, groups, StateReader::i64)?;
                *falses = read_vec(state, groups, StateReader::i64)?;
            }
            Acc::Values(set) => set.read(state, groups)?,
            Acc::Extreme(extreme) => extreme.read(state, groups)?,
            Acc::User(user) => user.read(state, groups)?,
        }
        Ok(())
    }

    /// One group's values, for an incremental checkpoint.
    fn write_slot(&self, state: &mut StateWriter, slot: usize) {
        match self {
            Acc::Count(counts) => state.i64(counts[slot]),
            Acc::Exact { sums, counts, .. } => {
                state.i128(sums[slot]);
                state.i64(counts[slot]);
            }
            Acc::Float { sums, counts } => {
                state.f64(sums[slot]);
                state.i64(counts[slot]);
            }
            Acc::Bools { trues, falses } => {
                state.i64(trues[slot]);
                state.i64(falses[slot]);
            }
            Acc::Values(set) => set.write_slot(state, slot),
            Acc::Extreme(extreme) => extreme.write_slot(state, slot),
            Acc::User(user) => user.write_slot(state, slot),
        }
    }

    /// Sets one group to what `write_slot` wrote.
    fn read_slot(&mut self, state: &mut StateReader<'_>, slot: usize) -> Result<()> {
        match self {
            Acc::Count(counts) => counts[slot] = state.i64()?,
            Acc::Exact { sums, counts, .. } => {
                sums[slot] = state.i128()?;
                counts[slot] = state.i64()?;
            }
            Acc::Float { sums, counts } => {
                sums[slot] = state.f64()?;
                counts[slot] = state.i64()?;
            }
            Acc::Bools { trues, falses } => {
                trues[slot] = state.i64()?;
                falses[slot] = state.i64()?;
            }
            Acc::Values(set) => set.read_slot(state, slot)?,
            Acc::Extreme(extreme) => extreme.read_slot(state, slot)?,
            Acc::User(user) => user.read_slot(state, slot)?,
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        match self {
            Acc::Count(counts) => 8 * counts.len(),
            Acc::Exact { sums, .. } => 24 * sums.len(),
            Acc::Float { sums, .. } => 16 * sums.len(),
            Acc::Bools { trues, .. } => 16 * trues.len(),
            Acc::Values(set) => set.bytes(),
            Acc::Extreme(extreme) => extreme.bytes(),
            Acc::User(user) => user.bytes,
        }
    }

    /// Adds each row kept by `mask` (all rows without one), with weight
    /// `diffs[i]`, to the group `slots[i]`.
    fn update(
        &mut self,
        values: &[ArrayRef],
        mask: Option<&BooleanBuffer>,
        slots: &[u32],
        diffs: &[i64],
    ) -> Result<()> {
        let rows = slots.len();
        match self {
            Acc::Count(counts) => {
                for_each_kept(rows, mask, |i| counts[slots[i] as usize] += diffs[i])
            }
            Acc::Exact { sums, counts, .. } => {
                add_exact(first_value(values)?, mask, slots, diffs, sums, counts)?
            }
            Acc::Float { sums, counts } => {
                let floats = primitive::<Float64Type>(first_value(values)?)?.values();
                for_each_kept(rows, mask, |i| {
                    let s = slots[i] as usize;
                    counts[s] += diffs[i];
                    sums[s] += floats[i] * diffs[i] as f64;
                    // Retracting every value must give exactly no sum, not
                    // a rounding residue.
                    if counts[s] == 0 {
                        sums[s] = 0.0;
                    }
                });
            }
            Acc::Bools { trues, falses } => {
                let bools = first_value(values)?
                    .as_boolean_opt()
                    .ok_or_else(|| Error::Internal("bool aggregate over non-booleans".into()))?;
                for_each_kept(rows, mask, |i| {
                    let side = if bools.value(i) {
                        &mut *trues
                    } else {
                        &mut *falses
                    };
                    side[slots[i] as usize] += diffs[i];
                });
            }
            Acc::Values(set) => set.update(values, mask, slots, diffs)?,
            Acc::Extreme(extreme) => extreme.update(values, mask, slots, diffs)?,
            Acc::User(user) => user.update(values, mask, slots, diffs),
        }
        Ok(())
    }

    fn finalize(&mut self, out: &Finish<'_>, slots: &[u32]) -> Result<ArrayRef> {
        let at = |s: &u32| *s as usize;
        Ok(match self {
            Acc::Count(counts) => {
                Arc::new(slots.iter().map(|s| counts[at(s)]).collect::<Int64Array>())
            }
            Acc::Exact {
                sums,
                counts,
                scale,
            } => {
                let groups = slots.iter().map(|s| (sums[at(s)], counts[at(s)]));
                match out.func {
                    AggFunc::Avg => exact_avg(groups, *scale, out.out_type)?,
                    _ => exact_sum(groups, *scale)?,
                }
            }
            Acc::Float { sums, counts } => {
                let avg = out.func == AggFunc::Avg;
                let values = slots.iter().map(|s| {
                    let (sum, count) = (sums[at(s)], counts[at(s)]);
                    (count > 0).then(|| if avg { sum / count as f64 } else { sum })
                });
                Arc::new(values.collect::<Float64Array>())
            }
            Acc::Bools { trues, falses } => {
                let values = slots.iter().map(|s| {
                    let (t, f) = (trues[at(s)], falses[at(s)]);
                    (t + f > 0).then_some(match out.func {
                        AggFunc::BoolAnd => f == 0,
                        _ => t > 0,
                    })
                });
                Arc::new(values.collect::<BooleanArray>())
            }
            Acc::Values(set) => set.finalize(out, slots)?,
            Acc::Extreme(extreme) => extreme.finalize(slots)?,
            Acc::User(user) => user.finalize(slots)?,
        })
    }
}

/// A batch's argument columns, its row count, and its rows kept as
/// (group slot, row, weight).
type PendingRows = (Vec<ArrayRef>, usize, Vec<(u32, usize, i64)>);

/// A user aggregate's accumulator: per group the state bytes the
/// aggregate made, the rows since the barrier, and the finished values.
struct UserAcc {
    func: Arc<dyn UserAggregate>,
    states: Vec<Option<Vec<u8>>>,
    /// `None` where unknown (after a restore, or a state change not yet
    /// finished).
    finished: Vec<Option<ScalarValue>>,
    /// The batches since the barrier.
    pending: Vec<PendingRows>,
    bytes: usize,
}

impl UserAcc {
    fn new(func: Arc<dyn UserAggregate>) -> UserAcc {
        UserAcc {
            func,
            states: Vec::new(),
            finished: Vec::new(),
            pending: Vec::new(),
            bytes: 0,
        }
    }

    fn resize(&mut self, groups: usize) {
        self.states.resize(groups, None);
        self.finished.resize(groups, None);
    }

    fn reset(&mut self, slot: usize) {
        let freed = self.states[slot].take().map_or(0, |s| s.len());
        self.bytes = self.bytes.saturating_sub(freed);
        self.finished[slot] = None;
    }

    fn update(
        &mut self,
        values: &[ArrayRef],
        mask: Option<&BooleanBuffer>,
        slots: &[u32],
        diffs: &[i64],
    ) {
        let mut rows = Vec::new();
        for_each_kept(slots.len(), mask, |i| {
            if diffs[i] != 0 {
                rows.push((slots[i], i, diffs[i]));
            }
        });
        if !rows.is_empty() {
            self.pending.push((values.to_vec(), slots.len(), rows));
        }
    }

    /// Hands every group with rows since the barrier, and every group of
    /// `wanted` whose value is unknown, to the aggregate in one call.
    fn settle(&mut self, wanted: &[u32]) -> Result<()> {
        let mut groups: BTreeMap<u32, Vec<(usize, i64)>> = BTreeMap::new();
        let mut parts: Vec<Vec<ArrayRef>> = vec![Vec::new(); self.func.args().len()];
        let mut offset = 0;
        for (columns, len, rows) in std::mem::take(&mut self.pending) {
            for (slot, row, diff) in rows {
                groups.entry(slot).or_default().push((offset + row, diff));
            }
            for (part, column) in parts.iter_mut().zip(columns) {
                part.push(column);
            }
            offset += len;
        }
        for slot in wanted {
            if self.finished[*slot as usize].is_none() {
                groups.entry(*slot).or_default();
            }
        }
        if groups.is_empty() {
            return Ok(());
        }
        let columns = argument_columns(&parts, self.func.args())?;
        let updates: Vec<GroupUpdate> = groups
            .iter()
            .map(|(slot, rows)| GroupUpdate {
                state: self.states[*slot as usize].clone(),
                rows: rows.clone(),
            })
            .collect();
        let output = self.func.update(&columns, &updates)?;
        if output.states.len() != updates.len() || output.values.len() != updates.len() {
            return Err(Error::Internal(format!(
                "aggregate {} answered for {} groups of {}",
                self.func.name(),
                output.states.len(),
                updates.len()
            )));
        }
        for (i, (slot, state)) in groups.keys().zip(output.states).enumerate() {
            let slot = *slot as usize;
            if let Some(state) = state {
                let old = self.states[slot].as_ref().map_or(0, |s| s.len());
                self.bytes = self.bytes.saturating_sub(old) + state.len();
                self.states[slot] = Some(state);
            }
            self.finished[slot] = Some(ScalarValue::try_from_array(&output.values, i)?);
        }
        Ok(())
    }

    fn finalize(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        if slots.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(
                self.func.returns(),
            ));
        }
        self.settle(slots)?;
        let null = ScalarValue::try_from(self.func.returns())?;
        let values = slots.iter().map(|s| {
            self.finished[*s as usize]
                .clone()
                .unwrap_or_else(|| null.clone())
        });
        Ok(ScalarValue::iter_to_array(values)?)
    }

    /// Per group, its state (settled at the barrier: nothing pending).
    fn write(&self, state: &mut StateWriter) {
        state.len(self.states.len());
        for slot in 0..self.states.len() {
            self.write_slot(state, slot);
        }
    }

    fn write_slot(&self, state: &mut StateWriter, slot: usize) {
        let group = &self.states[slot];
        state.bool(group.is_some());
        if let Some(bytes) = group {
            state.bytes(bytes);
        }
    }

    fn read_slot(&mut self, state: &mut StateReader<'_>, slot: usize) -> Result<()> {
        self.reset(slot);
        if state.bool()? {
            let group = state.bytes()?.to_vec();
            self.bytes += group.len();
            self.states[slot] = Some(group);
        }
        Ok(())
    }

    fn read(&mut self, state: &mut StateReader<'_>, groups: usize) -> Result<()> {
        self.states = Vec::with_capacity(group_count(state, groups)?);
        self.bytes = 0;
        for _ in 0..groups {
            let group = match state.bool()? {
                true => Some(state.bytes()?.to_vec()),
                false => None,
            };
            self.bytes += group.as_ref().map_or(0, |g| g.len());
            self.states.push(group);
        }
        self.finished = vec![None; groups];
        Ok(())
    }
}

/// A vector of state, length first.
fn write_vec<T: Copy>(state: &mut StateWriter, values: &[T], write: impl Fn(&mut StateWriter, T)) {
    state.len(values.len());
    values.iter().for_each(|v| write(state, *v));
}

/// A vector `write_vec` wrote, which must hold one value per group slot.
fn read_vec<'a, T>(
    state: &mut StateReader<'a>,
    groups: usize,
    read: impl Fn(&mut StateReader<'a>) -> Result<T>,
) -> Result<Vec<T>> {
    (0..group_count(state, groups)?)
        .map(|_| read(state))
        .collect()
}

/// A count of per-group items, which must be one per group slot (each
/// takes at least 8 bytes).
fn group_count(state: &mut StateReader<'_>, groups: usize) -> Result<usize> {
    match state.count(8)? {
        n if n == groups => Ok(n),
        n => Err(corrupt(format!(
            "{n} accumulator slots for {groups} groups"
        ))),
    }
}

fn first_value(values: &[ArrayRef]) -> Result<&ArrayRef> {
    values
        .first()
        .ok_or_else(|| Error::Internal("aggregate without its argument".into()))
}

fn primitive<T: ArrowPrimitiveType>(
    array: &ArrayRef,
) -> Result<&datafusion::arrow::array::PrimitiveArray<T>> {
    array.as_primitive_opt::<T>().ok_or_else(|| {
        Error::Internal(format!(
            "aggregate expected {} values, got {}",
            T::DATA_TYPE,
            array.data_type()
        ))
    })
}

/// Calls `f` for each row index kept by `mask`, or for every row.
#[inline]
fn for_each_kept(rows: usize, mask: Option<&BooleanBuffer>, f: impl FnMut(usize)) {
    match mask {
        None => (0..rows).for_each(f),
        Some(mask) => mask.set_indices().for_each(f),
    }
}

fn add_exact(
    values: &ArrayRef,
    mask: Option<&BooleanBuffer>,
    slots: &[u32],
    diffs: &[i64],
    sums: &mut [i128],
    counts: &mut [i64],
) -> Result<()> {
    macro_rules! typed {
        ($t:ty) => {
            add_exact_typed::<$t>(primitive::<$t>(values)?, mask, slots, diffs, sums, counts)
        };
    }
    match values.data_type() {
        DataType::Int8 => typed!(Int8Type),
        DataType::Int16 => typed!(Int16Type),
        DataType::Int32 => typed!(Int32Type),
        DataType::Int64 => typed!(Int64Type),
        DataType::UInt8 => typed!(UInt8Type),
        DataType::UInt16 => typed!(UInt16Type),
        DataType::UInt32 => typed!(UInt32Type),
        DataType::UInt64 => typed!(UInt64Type),
        DataType::Decimal128(..) => typed!(Decimal128Type),
        other => return Err(Error::Internal(format!("exact sum over {other}"))),
    }
    Ok(())
}

fn add_exact_typed<T: ArrowPrimitiveType>(
    values: &datafusion::arrow::array::PrimitiveArray<T>,
    mask: Option<&BooleanBuffer>,
    slots: &[u32],
    diffs: &[i64],
    sums: &mut [i128],
    counts: &mut [i64],
) where
    T::Native: Into<i128>,
{
    let values = values.values();
    for_each_kept(slots.len(), mask, |i| {
        let s = slots[i] as usize;
        // Wrapping: only Decimal128 sums near 10^38 can overflow, and a
        // panic on data is worse than a wrong sum there.
        let term = values[i].into().wrapping_mul(i128::from(diffs[i]));
        sums[s] = sums[s].wrapping_add(term);
        counts[s] += diffs[i];
    });
}

/// Sums as Decimal128 at `scale` (0 for integers); NULL without values.
fn exact_sum(groups: impl Iterator<Item = (i128, i64)>, scale: i8) -> Result<ArrayRef> {
    let sums: Decimal128Array = groups.map(|(sum, n)| (n > 0).then_some(sum)).collect();
    Ok(Arc::new(sums.with_precision_and_scale(38, scale)?))
}

/// `sum / count`. Into a decimal output as DataFusion does it: the sum is
/// scaled up to the output scale, then divided, truncating; overflow gives
/// NULL (DataFusion fails the query). Otherwise as Float64.
fn exact_avg(
    groups: impl Iterator<Item = (i128, i64)>,
    scale: i8,
    out_type: &DataType,
) -> Result<ArrayRef> {
    let target = match out_type {
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => *s,
        _ => {
            let unit = 10f64.powi(i32::from(scale));
            let avg = groups.map(|(sum, n)| (n > 0).then(|| sum as f64 / unit / n as f64));
            return Ok(Arc::new(avg.collect::<Float64Array>()));
        }
    };
    let shift = i32::from(target) - i32::from(scale);
    let factor = 10i128.checked_pow(shift.unsigned_abs());
    let avg = groups.map(|(sum, n)| {
        if n <= 0 {
            return None;
        }
        let scaled = if shift >= 0 {
            sum.checked_mul(factor?)?
        } else {
            sum.checked_div(factor?)?
        };
        scaled.checked_div(i128::from(n))
    });
    let avg: Decimal128Array = avg.collect();
    Ok(Arc::new(avg.with_precision_and_scale(38, target.min(38))?))
}

/// Per group, a multiset of values (or of argument tuples) encoded in the
/// row format, so they iterate in ascending order.
struct Multiset {
    codec: RowCodec,
    value_types: Vec<DataType>,
    sets: Vec<ValueSet>,
    /// An encoded NULL, standing for "no value" when decoding min/max.
    null_row: Box<[u8]>,
    bytes: usize,
    /// Over an append-only input: keep at most this many values (by
    /// weight) per group, the first in order.
    keep: Option<usize>,
}

impl Multiset {
    fn new(value_types: &[DataType]) -> Result<Multiset> {
        // Ascending, NULLs last: PostgreSQL's default order.
        let order = SortOptions {
            descending: false,
            nulls_first: false,
        };
        Multiset::with_order(value_types.iter().map(|t| (t.clone(), order)).collect())
    }

    /// Values of several columns, sorted column by column in the orders given.
    fn with_order(fields: Vec<(DataType, SortOptions)>) -> Result<Multiset> {
        let value_types: Vec<DataType> = fields.iter().map(|(t, _)| t.clone()).collect();
        let codec = RowCodec::with_order(fields)?;
        let nulls: Vec<ArrayRef> = value_types.iter().map(|t| new_null_array(t, 1)).collect();
        let null_row = codec.encode(&nulls)?.row(0).data().into();
        Ok(Multiset {
            codec,
            value_types,
            sets: Vec::new(),
            null_row,
            bytes: 0,
            keep: None,
        })
    }

    fn resize(&mut self, groups: usize) {
        self.sets.resize_with(groups, ValueSet::default);
    }

    fn reset(&mut self, slot: usize) {
        let set = std::mem::take(&mut self.sets[slot]);
        self.bytes -= set.bytes();
    }

    fn bytes(&self) -> usize {
        self.bytes + std::mem::size_of::<ValueSet>() * self.sets.len()
    }

    /// Per group, its values with their weights.
    fn write(&self, state: &mut StateWriter) {
        state.len(self.sets.len());
        for slot in 0..self.sets.len() {
            self.write_slot(state, slot);
        }
    }

    fn write_slot(&self, state: &mut StateWriter, slot: usize) {
        let set = &self.sets[slot];
        state.len(set.len());
        for (value, n) in set.iter() {
            state.bytes(value);
            state.i64(n);
        }
    }

    /// Sets one group to what `write_slot` wrote.
    fn read_slot(&mut self, state: &mut StateReader<'_>, slot: usize) -> Result<()> {
        self.reset(slot);
        self.sets[slot] = self.read_set(state)?;
        Ok(())
    }

    /// One group's values, accounting their bytes as `update` does.
    fn read_set(&mut self, state: &mut StateReader<'_>) -> Result<ValueSet> {
        let mut set = ValueSet::default();
        // A value's length and its weight.
        for _ in 0..state.count(16)? {
            let value = state.bytes()?;
            let weight = state.i64()?;
            // Written ascending, each once, with a weight.
            if weight == 0 || set.last().is_some_and(|(last, _)| last >= value) {
                return Err(corrupt("a group's values out of order".into()));
            }
            self.bytes = self.bytes.saturating_add_signed(set.add(value, weight));
        }
        Ok(set)
    }

    /// What `write` wrote, accounting its bytes as `update` does.
    fn read(&mut self, state: &mut StateReader<'_>, groups: usize) -> Result<()> {
        self.sets = Vec::with_capacity(group_count(state, groups)?);
        self.bytes = 0;
        for _ in 0..groups {
            let set = self.read_set(state)?;
            self.sets.push(set);
        }
        Ok(())
    }

    fn update(
        &mut self,
        values: &[ArrayRef],
        mask: Option<&BooleanBuffer>,
        slots: &[u32],
        diffs: &[i64],
    ) -> Result<()> {
        let rows = self.codec.encode(values)?;
        if let Some(keep) = self.keep {
            let (sets, bytes) = (&mut self.sets, &mut self.bytes);
            return for_each_insertion(&rows, mask, slots, diffs, |slot, value, diff| {
                let grown = keep_first(&mut sets[slot], value, diff, keep);
                *bytes = bytes.saturating_add_signed(grown);
            });
        }
        let (sets, bytes) = (&mut self.sets, &mut self.bytes);
        for_each_kept(slots.len(), mask, |i| {
            let grown = sets[slots[i] as usize].add(rows.row(i).data(), diffs[i]);
            *bytes = bytes.saturating_add_signed(grown);
        });
        Ok(())
    }

    /// The values present (weight > 0) in a group, ascending.
    fn present(&self, slot: u32) -> impl DoubleEndedIterator<Item = (&[u8], i64)> + '_ {
        self.sets[slot as usize].iter().filter(|(_, n)| *n > 0)
    }

    fn finalize(&self, out: &Finish<'_>, slots: &[u32]) -> Result<ArrayRef> {
        match out.func {
            AggFunc::Count => {
                // The entries, counted: at a barrier every entry left has a
                // positive weight (retractions only follow their insertions).
                let counts = slots.iter().map(|s| self.sets[*s as usize].len() as i64);
                Ok(Arc::new(counts.collect::<Int64Array>()))
            }
            AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue => {
                let rows = slots.iter().map(|s| {
                    let extreme = match out.func {
                        AggFunc::Min | AggFunc::FirstValue => self.present(*s).next(),
                        _ => self.present(*s).next_back(),
                    };
                    extreme.map_or(self.null_row.as_ref(), |(v, _)| v)
                });
                self.decode_one(rows)
            }
            AggFunc::Sum | AggFunc::Avg => self.finalize_numeric(out, slots),
            AggFunc::StringAgg => {
                let (values, offsets) = self.gather(slots, !out.distinct)?;
                string_agg(&values, &offsets, out.separator)
            }
            AggFunc::ArrayAgg => {
                let (values, offsets) = self.gather(slots, !out.distinct)?;
                array_agg(values, &offsets, out.out_type)
            }
            AggFunc::BoolAnd | AggFunc::BoolOr | AggFunc::User => Err(Error::Internal(
                "bool and user aggregates do not keep their values in a multiset".into(),
            )),
        }
    }

    /// `sum`/`avg` over each group's distinct values: decodes them and feeds
    /// them, once each, to a fresh numeric accumulator.
    fn finalize_numeric(&self, out: &Finish<'_>, slots: &[u32]) -> Result<ArrayRef> {
        let (values, offsets) = self.gather(slots, false)?;
        let local: Vec<u32> = offsets
            .windows(2)
            .enumerate()
            .flat_map(|(g, w)| std::iter::repeat_n(g as u32, w[1] - w[0]))
            .collect();
        let value_type = self.value_types.first().cloned().unwrap_or(DataType::Null);
        let (mut acc, _) = numeric_acc(out.func, &value_type)?;
        acc.resize(slots.len());
        acc.update(&[values], None, &local, &vec![1; local.len()])?;
        let all: Vec<u32> = (0..slots.len() as u32).collect();
        acc.finalize(out, &all)
    }

    /// The values of each group, ascending (each repeated by its weight
    /// when `repeat`), and where each group's values start and end.
    fn gather(&self, slots: &[u32], repeat: bool) -> Result<(ArrayRef, Vec<usize>)> {
        let mut rows: Vec<&[u8]> = Vec::new();
        let mut offsets = Vec::with_capacity(slots.len() + 1);
        offsets.push(0);
        for slot in slots {
            for (value, n) in self.present(*slot) {
                let times = if repeat { n as usize } else { 1 };
                rows.extend(std::iter::repeat_n(value, times));
            }
            offsets.push(rows.len());
        }
        Ok((self.decode_one(rows.into_iter())?, offsets))
    }

    /// The values of `rows`: their last column (the others, if any, are
    /// the order keys of an ordered call).
    fn decode_one<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> Result<ArrayRef> {
        self.codec
            .decode(rows)?
            .into_iter()
            .next_back()
            .ok_or_else(|| Error::Internal("multiset of no columns".into()))
    }
}

/// Calls `f(slot, value, weight)` for each insertion kept by `mask`. An
/// append-only input sends no retraction: one fails the call rather than
/// giving wrong rows.
fn for_each_insertion(
    rows: &Rows,
    mask: Option<&BooleanBuffer>,
    slots: &[u32],
    diffs: &[i64],
    mut f: impl FnMut(usize, &[u8], i64),
) -> Result<()> {
    let mut retracted = false;
    for_each_kept(slots.len(), mask, |i| match diffs[i] {
        diff if diff < 0 => retracted = true,
        0 => {}
        diff => f(slots[i] as usize, rows.row(i).data(), diff),
    });
    match retracted {
        true => Err(Error::Internal(
            "a retraction reached an aggregate planned for an append-only input".into(),
        )),
        false => Ok(()),
    }
}

/// Adds an insertion to a group that keeps only its first `keep` values
/// (by weight): a value past them is let go at once. Returns by how much
/// the set's bytes changed.
fn keep_first(set: &mut ValueSet, value: &[u8], diff: i64, keep: usize) -> isize {
    let held: i64 = set.iter().map(|(_, n)| n).sum();
    let past_the_end = set.last().is_some_and(|(last, _)| value >= last);
    if held >= keep as i64 && past_the_end {
        return 0;
    }
    let mut grown = set.add(value, diff);
    let mut excess = held + diff - keep as i64;
    while excess > 0 {
        let Some((_, last)) = set.last() else {
            break;
        };
        let cut = excess.min(last);
        grown += set.cut_last(cut);
        excess -= cut;
    }
    grown
}

/// Per group, the one value an append-only input can never take back: the
/// least or greatest so far, encoded in the row format so that bytes
/// compare in the value's order (with an `ORDER BY`, the order keys come
/// first and the value last, as in [`Multiset`]).
struct Extreme {
    codec: RowCodec,
    /// Keep the greatest (max, last_value), not the least (min, first_value).
    greatest: bool,
    /// Empty: the group has no value yet (an encoded row is never empty).
    values: Vec<Vec<u8>>,
    /// An encoded NULL, the output of a group without a value.
    null_row: Box<[u8]>,
    bytes: usize,
}

impl Extreme {
    fn new(value_types: &[DataType], greatest: bool) -> Result<Extreme> {
        // Ascending, NULLs last, as a multiset orders min and max.
        let order = SortOptions {
            descending: false,
            nulls_first: false,
        };
        let fields = value_types.iter().map(|t| (t.clone(), order)).collect();
        Extreme::with_order(fields, greatest)
    }

    fn with_order(fields: Vec<(DataType, SortOptions)>, greatest: bool) -> Result<Extreme> {
        let nulls: Vec<ArrayRef> = fields.iter().map(|(t, _)| new_null_array(t, 1)).collect();
        let codec = RowCodec::with_order(fields)?;
        let null_row = codec.encode(&nulls)?.row(0).data().into();
        Ok(Extreme {
            codec,
            greatest,
            values: Vec::new(),
            null_row,
            bytes: 0,
        })
    }

    fn resize(&mut self, groups: usize) {
        self.values.resize_with(groups, Vec::new);
    }

    fn reset(&mut self, slot: usize) {
        let value = std::mem::take(&mut self.values[slot]);
        self.bytes -= value.len();
    }

    fn bytes(&self) -> usize {
        self.bytes + 24 * self.values.len()
    }

    fn update(
        &mut self,
        values: &[ArrayRef],
        mask: Option<&BooleanBuffer>,
        slots: &[u32],
        diffs: &[i64],
    ) -> Result<()> {
        let rows = self.codec.encode(values)?;
        let (held, bytes, greatest) = (&mut self.values, &mut self.bytes, self.greatest);
        for_each_insertion(&rows, mask, slots, diffs, |slot, value, _| {
            let current = &mut held[slot];
            let better = current.is_empty()
                || match greatest {
                    true => value > current.as_slice(),
                    false => value < current.as_slice(),
                };
            if better {
                *bytes -= current.len();
                current.clear();
                current.extend_from_slice(value);
                *bytes += current.len();
            }
        })
    }

    /// Each group's value: the last column of its encoded row.
    fn finalize(&self, slots: &[u32]) -> Result<ArrayRef> {
        let rows = slots.iter().map(|s| match &self.values[*s as usize] {
            value if value.is_empty() => self.null_row.as_ref(),
            value => value.as_slice(),
        });
        self.codec
            .decode(rows)?
            .into_iter()
            .next_back()
            .ok_or_else(|| Error::Internal("an extreme of no columns".into()))
    }

    fn write(&self, state: &mut StateWriter) {
        state.len(self.values.len());
        for value in &self.values {
            state.bytes(value);
        }
    }

    fn write_slot(&self, state: &mut StateWriter, slot: usize) {
        state.bytes(&self.values[slot]);
    }

    fn read_slot(&mut self, state: &mut StateReader<'_>, slot: usize) -> Result<()> {
        self.reset(slot);
        let value = state.bytes()?.to_vec();
        self.bytes += value.len();
        self.values[slot] = value;
        Ok(())
    }

    fn read(&mut self, state: &mut StateReader<'_>, groups: usize) -> Result<()> {
        self.values = Vec::with_capacity(group_count(state, groups)?);
        self.bytes = 0;
        for _ in 0..groups {
            let value = state.bytes()?.to_vec();
            self.bytes += value.len();
            self.values.push(value);
        }
        Ok(())
    }
}

/// Each group's strings joined by `separator`; NULL for a group without.
fn string_agg(values: &ArrayRef, offsets: &[usize], separator: &str) -> Result<ArrayRef> {
    let strings = values
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::Internal("string_agg over non-strings".into()))?;
    let mut out = StringBuilder::new();
    for w in offsets.windows(2) {
        if w[0] == w[1] {
            out.append_null();
            continue;
        }
        let mut joined = String::new();
        for i in w[0]..w[1] {
            if i > w[0] {
                joined.push_str(separator);
            }
            joined.push_str(strings.value(i));
        }
        out.append_value(joined);
    }
    Ok(Arc::new(out.finish()))
}

/// Each group's values as a list; NULL for a group without.
fn array_agg(values: ArrayRef, offsets: &[usize], out_type: &DataType) -> Result<ArrayRef> {
    let item = match out_type {
        DataType::List(f) | DataType::LargeList(f) => Arc::clone(f),
        _ => Arc::new(Field::new_list_field(values.data_type().clone(), true)),
    };
    let values = cast_to(&values, item.data_type())?;
    let ends = offsets
        .iter()
        .map(|o| i32::try_from(*o))
        .collect::<std::result::Result<Vec<i32>, _>>()
        .map_err(|_| Error::ResourcesExhausted("array_agg result over 2^31 values".into()))?;
    let valid: Vec<bool> = offsets.windows(2).map(|w| w[0] < w[1]).collect();
    let list = ListArray::try_new(
        item,
        OffsetBuffer::new(ends.into()),
        values,
        Some(NullBuffer::from(valid)),
    )?;
    Ok(Arc::new(list))
}

/// The output of a call over no rows: 0 for `count`, NULL otherwise.
fn empty_value(func: AggFunc, out_type: &DataType) -> Result<ArrayRef> {
    match func {
        AggFunc::Count => cast_to(&(Arc::new(Int64Array::from(vec![0])) as ArrayRef), out_type),
        _ => Ok(new_null_array(out_type, 1)),
    }
}

/// Rows where a boolean array is true (NULL counts as false).
fn true_mask(array: &ArrayRef) -> Result<BooleanBuffer> {
    if array.data_type() == &DataType::Null {
        return Ok(BooleanBuffer::new_unset(array.len()));
    }
    let bools = array
        .as_boolean_opt()
        .ok_or_else(|| Error::Internal(format!("FILTER of type {}", array.data_type())))?;
    Ok(match bools.nulls() {
        Some(nulls) => bools.values() & nulls.inner(),
        None => bools.values().clone(),
    })
}

/// `mask` narrowed to the rows where `array` is not NULL.
fn and_valid(mask: Option<BooleanBuffer>, array: &ArrayRef) -> Option<BooleanBuffer> {
    let Some(nulls) = array.logical_nulls() else {
        return mask;
    };
    Some(match mask {
        Some(mask) => &mask & nulls.inner(),
        None => nulls.inner().clone(),
    })
}

fn cast_to(array: &ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    if array.data_type() == data_type {
        return Ok(Arc::clone(array));
    }
    Ok(cast(array, data_type)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{binary, cast, col, lit};

    fn call(func: AggFunc, args: Vec<Arc<dyn PhysicalExpr>>) -> AggCall {
        AggCall {
            func,
            args,
            distinct: false,
            order: Vec::new(),
            user: None,
            filter: None,
            keep: None,
        }
    }

    fn distinct(mut call: AggCall) -> AggCall {
        call.distinct = true;
        call
    }

    fn c(name: &str, schema: &SchemaRef) -> Arc<dyn PhysicalExpr> {
        col(name, schema).unwrap()
    }

    /// Groups by the named input columns; outputs them as they come in,
    /// then one column per call of the given types.
    fn spec(
        input: &SchemaRef,
        groups: &[&str],
        calls: Vec<AggCall>,
        out: Vec<DataType>,
    ) -> AggregateSpec {
        let mut fields: Vec<Field> = groups
            .iter()
            .map(|g| {
                Field::new(
                    *g,
                    input.field_with_name(g).unwrap().data_type().clone(),
                    true,
                )
            })
            .collect();
        fields.extend(
            out.into_iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("a{i}"), t, true)),
        );
        AggregateSpec {
            group_exprs: groups.iter().map(|g| c(g, input)).collect(),
            calls,
            output_schema: Arc::new(Schema::new(fields)),
            close: None,
            append_only: false,
        }
    }

    /// An instantiated aggregate and all it has output so far.
    struct Harness {
        op: Box<dyn Operator>,
        schema: SchemaRef,
        outputs: Vec<ChangeBatch>,
        epoch: u64,
    }

    impl Harness {
        fn new(spec: &AggregateSpec) -> Harness {
            let mut op = spec.instantiate().unwrap();
            let mut outputs = Vec::new();
            op.on_start(Shard::SINGLE, &mut outputs).unwrap();
            Harness {
                op,
                schema: Arc::clone(&spec.output_schema),
                outputs,
                epoch: 0,
            }
        }

        /// Feeds the batches as one epoch; returns that epoch's changes.
        fn step_batches(&mut self, batches: Vec<ChangeBatch>) -> Vec<String> {
            let mut out = Vec::new();
            for batch in batches {
                self.op.on_batch(0, batch, &mut out).unwrap();
            }
            self.epoch += 1;
            self.op.on_barrier(self.epoch, &mut out).unwrap();
            self.outputs.extend(out.iter().cloned());
            ChangeBatch::concat(&self.schema, &out).unwrap().to_lines()
        }

        fn step(&mut self, text: &str) -> Vec<String> {
            self.step_batches(vec![ChangeBatch::from_pretty(text).unwrap()])
        }

        /// Moves the event-time frontier; returns what that emitted.
        fn frontier(&mut self, at: i64) -> Vec<String> {
            let mut out = Vec::new();
            self.op.on_frontier(at, &mut out).unwrap();
            self.outputs.extend(out.iter().cloned());
            ChangeBatch::concat(&self.schema, &out).unwrap().to_lines()
        }

        /// The view: everything output so far, consolidated.
        fn view(&self) -> Vec<String> {
            let all = ChangeBatch::concat(&self.schema, &self.outputs).unwrap();
            all.consolidate().unwrap().to_lines()
        }
    }

    fn input(header: &str) -> SchemaRef {
        ChangeBatch::from_pretty(header).unwrap().schema()
    }

    #[test]
    fn count_and_sum_per_group_follow_retractions() {
        let s = input(" I I");
        let spec = spec(
            &s,
            &["c0"],
            vec![
                call(AggFunc::Count, vec![]),
                call(AggFunc::Sum, vec![c("c1", &s)]),
            ],
            vec![DataType::Int64, DataType::Int64],
        );
        let mut h = Harness::new(&spec);
        assert_eq!(
            h.step(" I I\n + 1 10\n + 1 20\n + 2 5"),
            vec!["+1 1, 2, 30", "+1 2, 1, 5"]
        );
        assert_eq!(
            h.step(" I I\n - 1 10\n - 2 5"),
            vec!["+1 1, 1, 20", "-1 1, 2, 30", "-1 2, 1, 5"]
        );
        assert_eq!(h.step(" I I\n 3 2 4"), vec!["+1 2, 3, 12"]);
        assert_eq!(h.view(), vec!["+1 1, 1, 20", "+1 2, 3, 12"]);
    }

    #[test]
    fn min_and_max_survive_deleting_the_extreme() {
        let s = input(" I T");
        let v = c("c1", &s);
        let calls = vec![
            call(AggFunc::Min, vec![Arc::clone(&v)]),
            call(AggFunc::Max, vec![v]),
        ];
        let spec = spec(&s, &["c0"], calls, vec![DataType::Utf8, DataType::Utf8]);
        let mut h = Harness::new(&spec);
        h.step(" I T\n + 1 m\n + 1 z\n + 1 a\n + 1 .");
        assert_eq!(h.view(), vec!["+1 1, a, z"]);
        let full = h.op.state_bytes();
        assert_eq!(
            h.step(" I T\n - 1 z\n - 1 a"),
            vec!["+1 1, m, m", "-1 1, a, z"]
        );
        assert_eq!(h.step(" I T\n - 1 m"), vec!["+1 1, , ", "-1 1, m, m"]);
        assert_eq!(h.step(" I T\n - 1 ."), vec!["-1 1, , "]);
        assert!(h.view().is_empty());
        assert!(
            h.op.state_bytes() < full,
            "{} >= {full}",
            h.op.state_bytes()
        );
    }

    /// `SELECT c0, max(c1) … GROUP BY c0` over two integer columns.
    fn max_per_group() -> Harness {
        let s = input(" I I");
        let spec = spec(
            &s,
            &["c0"],
            vec![call(AggFunc::Max, vec![c("c1", &s)])],
            vec![DataType::Int64],
        );
        Harness::new(&spec)
    }

    #[test]
    fn an_unchanged_group_emits_nothing() {
        let mut h = max_per_group();
        assert_eq!(h.step(" I I\n + 1 3"), vec!["+1 1, 3"]);
        assert!(h.step(" I I\n + 1 1\n + 1 3").is_empty());
        // Inserted and retracted within one epoch: no change at all.
        assert!(h.step(" I I\n + 2 8\n - 2 8").is_empty());
    }

    #[test]
    fn inserted_rows_are_their_own_groups_after_unchanged_and_emptied_ones() {
        let mut h = max_per_group();
        h.step(" I I\n + 1 5\n + 2 7\n + 3 2\n + 4 1");
        // One epoch: group 1 unchanged, 2 emptied, 3 and 4 changed. The
        // new rows are taken from the live groups' values by position.
        assert_eq!(
            h.step(" I I\n + 1 4\n - 2 7\n + 3 9\n + 4 6"),
            vec!["+1 3, 9", "+1 4, 6", "-1 2, 7", "-1 3, 2", "-1 4, 1"]
        );
        assert_eq!(h.view(), vec!["+1 1, 5", "+1 3, 9", "+1 4, 6"]);
    }

    #[test]
    fn count_distinct_counts_values_not_rows() {
        let s = input(" I T");
        let calls = vec![distinct(call(AggFunc::Count, vec![c("c1", &s)]))];
        let spec = spec(&s, &["c0"], calls, vec![DataType::Int64]);
        let mut h = Harness::new(&spec);
        assert_eq!(
            h.step(" I T\n + 1 a\n + 1 a\n + 1 b\n + 1 ."),
            vec!["+1 1, 2"]
        );
        assert!(h.step(" I T\n - 1 a").is_empty());
        assert_eq!(h.step(" I T\n - 1 a"), vec!["+1 1, 1", "-1 1, 2"]);
    }

    #[test]
    fn global_aggregate_has_one_row_over_empty_input_and_after_deletes() {
        let s = input(" I I");
        let calls = vec![
            call(AggFunc::Count, vec![]),
            call(AggFunc::Sum, vec![c("c1", &s)]),
        ];
        let spec = spec(&s, &[], calls, vec![DataType::Int64, DataType::Int64]);
        let mut h = Harness::new(&spec);
        assert_eq!(h.view(), vec!["+1 0, "]);
        assert_eq!(h.step(" I I\n + 1 5\n + 2 6"), vec!["+1 2, 11", "-1 0, "]);
        assert_eq!(h.step(" I I\n - 1 5\n - 2 6"), vec!["+1 0, ", "-1 2, 11"]);
        assert_eq!(h.view(), vec!["+1 0, "]);

        // Only the worker owning the empty key emits the initial row.
        let mut other = spec.instantiate().unwrap();
        let mut out = Vec::new();
        other
            .on_start(Shard { index: 1, count: 2 }, &mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn distinct_without_calls_keeps_one_row_per_group() {
        let s = input(" I T");
        let spec = spec(&s, &["c1"], vec![], vec![]);
        assert_eq!(spec.describe(), "Distinct: c1@1");
        let mut h = Harness::new(&spec);
        assert_eq!(h.step(" I T\n + 1 a\n + 2 a\n 2 3 b"), vec!["+1 a", "+1 b"]);
        assert!(h.step(" I T\n - 1 a").is_empty());
        assert_eq!(h.step(" I T\n - 2 a\n + 4 c"), vec!["+1 c", "-1 a"]);
        assert_eq!(h.view(), vec!["+1 b", "+1 c"]);
    }

    #[test]
    fn filter_drops_rows_for_its_call_only() {
        let s = input(" I I");
        let big = binary(c("c1", &s), Op::Gt, lit(3i64), &s).unwrap();
        let mut filtered = call(AggFunc::Count, vec![]);
        filtered.filter = Some(Arc::clone(&big));
        let mut filtered_sum = call(AggFunc::Sum, vec![c("c1", &s)]);
        filtered_sum.filter = Some(big);
        let calls = vec![call(AggFunc::Count, vec![]), filtered, filtered_sum];
        let spec = spec(&s, &["c0"], calls, vec![DataType::Int64; 3]);
        let mut h = Harness::new(&spec);
        assert_eq!(
            h.step(" I I\n + 1 1\n + 1 5\n + 1 .\n + 2 2"),
            vec!["+1 1, 3, 1, 5", "+1 2, 1, 0, "]
        );
        assert_eq!(
            h.step(" I I\n - 1 5"),
            vec!["+1 1, 2, 0, ", "-1 1, 3, 1, 5"]
        );
    }

    #[test]
    fn avg_of_integers_and_floats_is_float() {
        let s = input(" I I F");
        let calls = vec![
            call(AggFunc::Avg, vec![c("c1", &s)]),
            call(AggFunc::Avg, vec![c("c2", &s)]),
        ];
        let spec = spec(
            &s,
            &["c0"],
            calls,
            vec![DataType::Float64, DataType::Float64],
        );
        let mut h = Harness::new(&spec);
        h.step(" I I F\n + 1 1 0.5\n + 1 2 .\n + 1 . 1.5");
        assert_eq!(h.view(), vec!["+1 1, 1.5, 1.0"]);
        h.step(" I I F\n - 1 1 0.5");
        assert_eq!(h.view(), vec!["+1 1, 2.0, 1.5"]);
    }

    fn decimal_batch(values: &[Option<i128>], diffs: Vec<i64>) -> ChangeBatch {
        let d = Decimal128Array::from(values.to_vec())
            .with_precision_and_scale(10, 2)
            .unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "d",
            d.data_type().clone(),
            true,
        )]));
        ChangeBatch::new(
            RecordBatch::try_new(schema, vec![Arc::new(d)]).unwrap(),
            diffs,
        )
    }

    #[test]
    fn decimal_sum_is_exact_and_avg_truncates_like_datafusion() {
        let s = decimal_batch(&[], vec![]).schema();
        let d = c("d", &s);
        let calls = vec![
            call(AggFunc::Sum, vec![Arc::clone(&d)]),
            call(AggFunc::Avg, vec![d]),
        ];
        let spec = spec(
            &s,
            &[],
            calls,
            vec![DataType::Decimal128(20, 2), DataType::Decimal128(14, 6)],
        );
        let mut h = Harness::new(&spec);
        let rows = [Some(100), Some(200), Some(200), None];
        h.step_batches(vec![decimal_batch(&rows, vec![1; 4])]);
        // 5.00 / 3 = 1.666666 (DataFusion truncates, it does not round).
        assert_eq!(h.view(), vec!["+1 5.00, 1.666666"]);
        h.step_batches(vec![decimal_batch(&[Some(-700)], vec![1])]);
        assert_eq!(h.view(), vec!["+1 -2.00, -0.500000"]);
        h.step_batches(vec![decimal_batch(&rows[..3], vec![-1; 3])]);
        assert_eq!(h.view(), vec!["+1 -7.00, -7.000000"]);
    }

    #[test]
    fn bool_and_and_bool_or_count_both_truth_values() {
        let s = input(" I B");
        let v = c("c1", &s);
        let calls = vec![
            call(AggFunc::BoolAnd, vec![Arc::clone(&v)]),
            call(AggFunc::BoolOr, vec![v]),
        ];
        let spec = spec(
            &s,
            &["c0"],
            calls,
            vec![DataType::Boolean, DataType::Boolean],
        );
        let mut h = Harness::new(&spec);
        h.step(" I B\n + 1 t\n + 1 f\n + 2 .");
        assert_eq!(h.view(), vec!["+1 1, false, true", "+1 2, , "]);
        h.step(" I B\n - 1 f\n + 2 f");
        assert_eq!(h.view(), vec!["+1 1, true, true", "+1 2, false, false"]);
    }

    #[test]
    fn string_agg_joins_in_value_order() {
        let s = input(" I T");
        let args = || vec![c("c1", &s), lit("-")];
        let calls = vec![
            call(AggFunc::StringAgg, args()),
            distinct(call(AggFunc::StringAgg, args())),
        ];
        let spec = spec(&s, &["c0"], calls, vec![DataType::Utf8, DataType::Utf8]);
        let mut h = Harness::new(&spec);
        h.step(" I T\n + 1 c\n + 1 a\n + 1 b\n + 1 a\n + 1 .\n + 2 .");
        assert_eq!(h.view(), vec!["+1 1, a-a-b-c, a-b-c", "+1 2, , "]);
        h.step(" I T\n - 1 a\n - 1 c");
        assert_eq!(h.view(), vec!["+1 1, a-b, a-b", "+1 2, , "]);
    }

    #[test]
    fn array_agg_keeps_nulls_last_and_distinct_sum_and_avg() {
        let s = input(" I I");
        let v = || c("c1", &s);
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)));
        let calls = vec![
            call(AggFunc::ArrayAgg, vec![v()]),
            distinct(call(AggFunc::ArrayAgg, vec![v()])),
            distinct(call(AggFunc::Sum, vec![v()])),
            distinct(call(AggFunc::Avg, vec![v()])),
        ];
        let spec = spec(
            &s,
            &["c0"],
            calls,
            vec![list.clone(), list, DataType::Int64, DataType::Float64],
        );
        let mut h = Harness::new(&spec);
        h.step(" I I\n + 1 2\n + 1 .\n + 1 1\n + 1 2");
        assert_eq!(h.view(), vec!["+1 1, [1, 2, 2, ], [1, 2, ], 3, 1.5"]);
        h.step(" I I\n - 1 1\n - 1 .");
        assert_eq!(h.view(), vec!["+1 1, [2, 2], [2], 2, 2.0"]);
    }

    #[test]
    fn float_sum_is_exactly_null_once_every_value_is_retracted() {
        let s = input(" F");
        let spec = spec(
            &s,
            &[],
            vec![call(AggFunc::Sum, vec![c("c0", &s)])],
            vec![DataType::Float64],
        );
        let mut h = Harness::new(&spec);
        h.step(" F\n + 0.1\n + 0.2");
        h.step(" F\n - 0.1\n - 0.2");
        assert_eq!(h.view(), vec!["+1 "]);
        h.step(" F\n + 0.3");
        assert_eq!(h.view(), vec!["+1 0.3"]);
    }

    #[test]
    fn describe_reads_like_sql() {
        let s = input(" I I");
        let mut counted = distinct(call(AggFunc::Count, vec![c("c1", &s)]));
        counted.filter = Some(binary(c("c1", &s), Op::Gt, lit(3i64), &s).unwrap());
        let calls = vec![
            call(AggFunc::Count, vec![]),
            call(AggFunc::Sum, vec![c("c1", &s)]),
            counted,
        ];
        let spec = spec(&s, &["c0"], calls, vec![DataType::Int64; 3]);
        assert_eq!(
            spec.describe(),
            "Aggregate: group by [c0@0], count(*), sum(c1@1), count(DISTINCT c1@1) FILTER (WHERE c1@1 > 3)"
        );
        let global = AggregateSpec {
            group_exprs: vec![],
            calls: vec![call(AggFunc::Count, vec![])],
            output_schema: Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)])),
            close: None,
            append_only: false,
        };
        assert_eq!(global.describe(), "Aggregate: count(*)");
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below
        }
    }

    type Rows = BTreeMap<(i64, Option<i64>), i64>;

    /// From scratch: count(*), count(v), sum(v), min(v), max(v),
    /// count(DISTINCT v), bool_or(v > 3), per key (or over everything).
    fn reference(rows: &Rows, grouped: bool) -> Vec<String> {
        let mut groups: BTreeMap<Option<i64>, Vec<(Option<i64>, i64)>> = BTreeMap::new();
        if !grouped {
            groups.insert(None, Vec::new());
        }
        for ((k, v), n) in rows {
            groups
                .entry(grouped.then_some(*k))
                .or_default()
                .push((*v, *n));
        }
        let show = |v: Option<String>| v.unwrap_or_default();
        let mut lines: Vec<String> = groups
            .into_iter()
            .map(|(k, rows)| {
                let all: i64 = rows.iter().map(|(_, n)| n).sum();
                let values: Vec<(i64, i64)> = rows
                    .iter()
                    .filter_map(|(v, n)| v.map(|v| (v, *n)))
                    .collect();
                let count: i64 = values.iter().map(|(_, n)| n).sum();
                let some = |x: String| (count > 0).then_some(x);
                let cells = [
                    all.to_string(),
                    count.to_string(),
                    show(some(
                        values.iter().map(|(v, n)| v * n).sum::<i64>().to_string(),
                    )),
                    show(values.iter().map(|(v, _)| *v).min().map(|v| v.to_string())),
                    show(values.iter().map(|(v, _)| *v).max().map(|v| v.to_string())),
                    values
                        .iter()
                        .map(|(v, _)| *v)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                        .to_string(),
                    show(some(values.iter().any(|(v, _)| *v > 3).to_string())),
                ];
                let key = k.map(|k| format!("{k}, ")).unwrap_or_default();
                format!("+1 {key}{}", cells.join(", "))
            })
            .collect();
        lines.sort();
        lines
    }

    /// A random batch of 1..=6 changes; deletes only rows that are there.
    fn random_batch(rng: &mut XorShift, rows: &mut Rows) -> ChangeBatch {
        let mut text = String::from(" I I\n");
        for _ in 0..=rng.next(6) {
            let (row, diff) = if !rows.is_empty() && rng.next(3) == 0 {
                let (row, n) = rows
                    .iter()
                    .nth(rng.next(rows.len() as u64) as usize)
                    .unwrap();
                (*row, -1 - rng.next(*n as u64) as i64)
            } else {
                let v = rng.next(14) as i64 - 3;
                (
                    (rng.next(5) as i64, (v < 10).then_some(v)),
                    1 + rng.next(2) as i64,
                )
            };
            let n = rows.entry(row).or_default();
            *n += diff;
            if *n == 0 {
                rows.remove(&row);
            }
            let v = row.1.map_or(".".to_string(), |v| v.to_string());
            text.push_str(&format!("{diff} {} {v}\n", row.0));
        }
        ChangeBatch::from_pretty(&text).unwrap()
    }

    fn oracle(seed: u64, grouped: bool) {
        let s = input(" I I");
        let v = || c("c1", &s);
        let calls = vec![
            call(AggFunc::Count, vec![]),
            call(AggFunc::Count, vec![v()]),
            call(AggFunc::Sum, vec![v()]),
            call(AggFunc::Min, vec![v()]),
            call(AggFunc::Max, vec![v()]),
            distinct(call(AggFunc::Count, vec![v()])),
            call(
                AggFunc::BoolOr,
                vec![binary(v(), Op::Gt, lit(3i64), &s).unwrap()],
            ),
        ];
        let mut types = vec![DataType::Int64; 6];
        types.push(DataType::Boolean);
        let groups: &[&str] = if grouped { &["c0"] } else { &[] };
        let mut h = Harness::new(&spec(&s, groups, calls, types));
        let mut rng = XorShift(seed);
        let mut rows = Rows::new();
        for step in 0..80 {
            let batches = (0..=rng.next(2))
                .map(|_| random_batch(&mut rng, &mut rows))
                .collect();
            h.step_batches(batches);
            assert_eq!(
                h.view(),
                reference(&rows, grouped),
                "seed {seed}, step {step}"
            );
        }
    }

    #[test]
    fn oracle_grouped_matches_recomputation() {
        for seed in [1, 7, 42, 1234, 99991] {
            oracle(seed, true);
        }
    }

    #[test]
    fn oracle_global_matches_recomputation() {
        for seed in [3, 8, 555] {
            oracle(seed, false);
        }
    }

    /// Every kind of accumulator over `(c0, c1)`: counts (filtered too),
    /// integer, decimal and float sums and averages, extremes, booleans,
    /// `string_agg` with a separator that changes from batch to batch,
    /// `array_agg`, and distinct counts, sums and `string_agg`.
    fn every_accumulator(grouped: bool) -> AggregateSpec {
        let s = input(" I I");
        let v = || c("c1", &s);
        let as_type = |t: DataType| cast(v(), &s, t).unwrap();
        let text = || as_type(DataType::Utf8);
        let separator = || cast(c("c0", &s), &s, DataType::Utf8).unwrap();
        let big = || binary(v(), Op::Gt, lit(3i64), &s).unwrap();
        let decimal = DataType::Decimal128(10, 2);
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)));
        let mut filtered = call(AggFunc::Count, vec![]);
        filtered.filter = Some(big());
        let (calls, types) = [
            (call(AggFunc::Count, vec![]), DataType::Int64),
            (call(AggFunc::Count, vec![v()]), DataType::Int64),
            (filtered, DataType::Int64),
            (call(AggFunc::Sum, vec![v()]), DataType::Int64),
            (
                call(AggFunc::Sum, vec![as_type(decimal.clone())]),
                DataType::Decimal128(20, 2),
            ),
            (
                call(AggFunc::Sum, vec![as_type(DataType::Float64)]),
                DataType::Float64,
            ),
            (call(AggFunc::Avg, vec![v()]), DataType::Float64),
            (
                call(AggFunc::Avg, vec![as_type(decimal)]),
                DataType::Decimal128(14, 6),
            ),
            (call(AggFunc::Min, vec![v()]), DataType::Int64),
            (call(AggFunc::Max, vec![text()]), DataType::Utf8),
            (call(AggFunc::BoolAnd, vec![big()]), DataType::Boolean),
            (call(AggFunc::BoolOr, vec![big()]), DataType::Boolean),
            (
                call(AggFunc::StringAgg, vec![text(), separator()]),
                DataType::Utf8,
            ),
            (
                distinct(call(AggFunc::StringAgg, vec![text(), lit("|")])),
                DataType::Utf8,
            ),
            (call(AggFunc::ArrayAgg, vec![v()]), list),
            (distinct(call(AggFunc::Count, vec![v()])), DataType::Int64),
            (distinct(call(AggFunc::Sum, vec![v()])), DataType::Int64),
        ]
        .into_iter()
        .unzip();
        let groups: &[&str] = if grouped { &["c0"] } else { &[] };
        spec(&s, groups, calls, types)
    }

    /// [`round_trip`](crate::dataflow::operator::testing::round_trip) of
    /// an aggregate, which must also checkpoint to the same bytes again.
    fn round_trip(spec: &AggregateSpec, op: &dyn Operator, shard: Shard) -> Box<dyn Operator> {
        let fresh = || spec.instantiate().unwrap();
        let inputs = [input(" I I")];
        let (restored, bytes) =
            crate::dataflow::operator::testing::round_trip(op, fresh, shard, &inputs, "aggregate");
        let mut again = StateWriter::new();
        restored.checkpoint(&mut again).unwrap();
        assert!(again.into_bytes() == bytes, "the restored state differs");
        restored
    }

    /// A count per window, the window key (`c0`, microseconds) closing 10 µs
    /// after its value.
    fn windowed(emit_on_close: bool) -> AggregateSpec {
        let s = input(" I I");
        let mut spec = spec(
            &s,
            &["c0"],
            vec![call(AggFunc::Count, vec![])],
            vec![DataType::Int64],
        );
        spec.close = Some(WindowClose {
            key: 0,
            slack_us: 10,
            emit_on_close,
        });
        spec
    }

    #[test]
    fn closed_windows_free_their_state_and_keep_their_rows() {
        let spec = windowed(false);
        let mut h = Harness::new(&spec);
        assert_eq!(
            h.step(" I I\n + 100 1\n + 100 2\n + 200 1"),
            vec!["+1 100, 2", "+1 200, 1"]
        );
        let held = h.op.state_bytes();
        assert!(h.frontier(109).is_empty());
        assert_eq!(h.op.state_bytes(), held, "window 100 is still open");
        // Window 100 closes: its row stays, its state goes.
        assert!(h.frontier(110).is_empty());
        assert!(h.op.state_bytes() < held, "window 100 was not freed");
        assert_eq!(h.step(" I I\n + 200 5"), vec!["+1 200, 2", "-1 200, 1"]);
        assert_eq!(h.view(), vec!["+1 100, 2", "+1 200, 2"]);
        assert!(h.frontier(1_000).is_empty());
        // Windows that come and go reuse what closed ones freed: flat.
        let settled = h.op.state_bytes();
        for w in 1..50 {
            let at = 1_000 + w * 100;
            h.step(&format!(" I I\n + {at} 1\n + {} 1", at + 50));
            h.frontier(at + 100);
        }
        assert_eq!(h.op.state_bytes(), settled);
        assert_eq!(h.view().len(), 2 + 98);
    }

    #[test]
    fn emit_on_window_close_emits_each_window_once_final() {
        let spec = windowed(true);
        let mut h = Harness::new(&spec);
        assert!(h.step(" I I\n + 100 1\n + 200 1\n + 300 1").is_empty());
        assert!(h.step(" I I\n + 100 2\n - 300 1\n + 400 1").is_empty());
        assert!(h.frontier(105).is_empty());
        assert_eq!(h.frontier(210), vec!["+1 100, 2", "+1 200, 1"]);
        // Window 300 lost its only row before it closed: no row at all.
        // Through a checkpoint, window 400 is still pending.
        let restored = round_trip(&spec, h.op.as_ref(), Shard::SINGLE);
        h.op = restored;
        assert!(h.frontier(310).is_empty());
        assert!(h.step(" I I\n + 400 7").is_empty());
        assert_eq!(h.frontier(410), vec!["+1 400, 2"]);
        assert_eq!(h.view(), vec!["+1 100, 2", "+1 200, 1", "+1 400, 2"]);
    }

    /// Retracts every row held.
    fn retract_all(rows: &mut Rows) -> ChangeBatch {
        let mut text = String::from(" I I\n");
        for ((k, v), n) in std::mem::take(rows) {
            let v = v.map_or(".".to_string(), |v| v.to_string());
            text.push_str(&format!("{} {k} {v}\n", -n));
        }
        ChangeBatch::from_pretty(&text).unwrap()
    }

    /// One epoch of one to three random batches.
    fn random_epoch(rng: &mut XorShift, rows: &mut Rows) -> Vec<ChangeBatch> {
        (0..=rng.next(2)).map(|_| random_batch(rng, rows)).collect()
    }

    /// An aggregate of every accumulator after `before` random epochs,
    /// with the generator and rows to go on from.
    fn random_start(
        seed: u64,
        grouped: bool,
        before: usize,
    ) -> (AggregateSpec, Harness, XorShift, Rows) {
        let spec = every_accumulator(grouped);
        let mut original = Harness::new(&spec);
        let mut rng = XorShift(seed);
        let mut rows = Rows::new();
        for _ in 0..before {
            original.step_batches(random_epoch(&mut rng, &mut rows));
        }
        (spec, original, rng, rows)
    }

    /// Random epochs, a checkpoint after `before` of them, then the same
    /// epochs (ending with every row retracted, then some inserted again)
    /// fed to the original and the restored instance: their outputs must
    /// agree at every epoch.
    fn restored_runs_alike(seed: u64, grouped: bool, before: usize) {
        let (spec, mut original, mut rng, mut rows) = random_start(seed, grouped, before);
        let epoch = random_epoch;
        // No `on_start`: the restored state already holds its output.
        let mut restored = Harness {
            op: round_trip(&spec, original.op.as_ref(), Shard { index: 0, count: 1 }),
            schema: Arc::clone(&original.schema),
            outputs: original.outputs.clone(),
            epoch: original.epoch,
        };
        let mut epochs: Vec<Vec<ChangeBatch>> = vec![vec![]];
        epochs.extend((0..30).map(|_| epoch(&mut rng, &mut rows)));
        epochs.push(vec![retract_all(&mut rows)]);
        epochs.extend((0..5).map(|_| epoch(&mut rng, &mut rows)));
        for (n, batches) in epochs.into_iter().enumerate() {
            let expected = original.step_batches(batches.clone());
            let context = format!("seed {seed}, grouped {grouped}, epoch {n} after {before}");
            assert_eq!(restored.step_batches(batches), expected, "{context}");
            assert_eq!(
                restored.op.state_bytes(),
                original.op.state_bytes(),
                "{context}"
            );
        }
        assert_eq!(restored.view(), original.view());
    }

    /// A whole state taken after `before` epochs, then changes after
    /// every few epochs (some with nothing changed), restored and applied
    /// in turn: the restored aggregate holds the same state and goes on
    /// alike.
    fn changes_restore_alike(seed: u64, grouped: bool, before: usize) {
        let (spec, mut original, mut rng, mut rows) = random_start(seed, grouped, before);
        let epoch = random_epoch;
        let mut whole = StateWriter::new();
        original.op.checkpoint(&mut whole).unwrap();
        original.op.track_changes();
        let whole = whole.into_bytes();
        let mut chain = Vec::new();
        for round in 0..8 {
            let epochs: Vec<Vec<ChangeBatch>> = match round {
                3 => vec![vec![retract_all(&mut rows)]],
                5 => vec![],
                _ => (0..=rng.next(4))
                    .map(|_| epoch(&mut rng, &mut rows))
                    .collect(),
            };
            for batches in epochs {
                original.step_batches(batches);
            }
            let mut changes = StateWriter::new();
            assert!(original.op.checkpoint_changes(&mut changes).unwrap());
            chain.push(changes.into_bytes());
        }
        let context = format!("seed {seed}, grouped {grouped}, {before} before");
        let mut op = spec.instantiate().unwrap();
        let inputs = [input(" I I")];
        let mut reader = StateReader::new(&whole);
        op.restore(Shard::SINGLE, &inputs, &mut reader).unwrap();
        reader.finish().unwrap();
        for changes in &chain {
            let mut reader = StateReader::new(changes);
            op.restore_changes(&mut reader).unwrap();
            reader.finish().unwrap();
            // Cut short, changes never apply.
            let mut cut = StateReader::new(&changes[..changes.len() - 1]);
            assert!(spec
                .instantiate()
                .unwrap()
                .restore_changes(&mut cut)
                .is_err());
        }
        let mut restored = Harness {
            op,
            schema: Arc::clone(&original.schema),
            outputs: original.outputs.clone(),
            epoch: original.epoch,
        };
        let state = |h: &Harness| {
            let mut state = StateWriter::new();
            h.op.checkpoint(&mut state).unwrap();
            state.into_bytes()
        };
        assert_eq!(
            restored.op.state_bytes(),
            original.op.state_bytes(),
            "{context}"
        );
        // The same state but for the order of the free slots, which
        // changes do not keep.
        assert_eq!(state(&restored).len(), state(&original).len(), "{context}");
        for n in 0..20 {
            let batches = epoch(&mut rng, &mut rows);
            let expected = original.step_batches(batches.clone());
            assert_eq!(
                restored.step_batches(batches),
                expected,
                "{context}, epoch {n}"
            );
        }
        assert_eq!(restored.view(), original.view(), "{context}");
    }

    #[test]
    fn changes_after_a_whole_state_restore_an_aggregate_that_continues_alike() {
        for (seed, grouped, before) in [
            (3, true, 0),
            (17, true, 10),
            (99, true, 40),
            (8, false, 0),
            (31, false, 12),
        ] {
            changes_restore_alike(seed, grouped, before);
        }
    }

    #[test]
    fn checkpoint_restores_a_grouped_aggregate_that_continues_alike() {
        for (seed, before) in [(5, 0), (11, 1), (42, 20), (2024, 40)] {
            restored_runs_alike(seed, true, before);
        }
    }

    #[test]
    fn checkpoint_restores_a_global_aggregate_without_its_initial_row_again() {
        for (seed, before) in [(6, 0), (13, 3), (77, 30)] {
            restored_runs_alike(seed, false, before);
        }
        // A worker not owning the global row restores as such, and a state
        // of one that does is not restored on it.
        let spec = every_accumulator(false);
        let other = Shard { index: 1, count: 2 };
        let mut op = spec.instantiate().unwrap();
        let mut out = Vec::new();
        op.on_start(other, &mut out).unwrap();
        op.on_batch(
            0,
            ChangeBatch::from_pretty(" I I\n + 1 2").unwrap(),
            &mut out,
        )
        .unwrap();
        op.on_barrier(1, &mut out).unwrap();
        assert!(out.is_empty());
        let mut restored = round_trip(&spec, op.as_ref(), other);
        restored
            .on_batch(
                0,
                ChangeBatch::from_pretty(" I I\n + 1 3").unwrap(),
                &mut out,
            )
            .unwrap();
        restored.on_barrier(2, &mut out).unwrap();
        assert!(out.is_empty());
        let mut state = StateWriter::new();
        op.checkpoint(&mut state).unwrap();
        let state = state.into_bytes();
        let mut owner = spec.instantiate().unwrap();
        let inputs = [input(" I I")];
        let restoring = owner.restore(Shard::SINGLE, &inputs, &mut StateReader::new(&state));
        assert!(restoring.is_err());
    }

    #[test]
    fn checkpoint_within_an_epoch_is_refused() {
        let spec = every_accumulator(true);
        let mut op = spec.instantiate().unwrap();
        let batch = ChangeBatch::from_pretty(" I I\n + 1 2").unwrap();
        op.on_batch(0, batch, &mut Vec::new()).unwrap();
        assert!(op.checkpoint(&mut StateWriter::new()).is_err());
    }

    /// Grouped by c0 over c1 (an int, NULL as `.`): min(c1), max(c1 as
    /// text), first_value(text ORDER BY c1 DESC), last_value(c1 ORDER BY
    /// text), and the first two of array_agg(c1 ORDER BY c1 DESC).
    fn profile(append_only: bool) -> AggregateSpec {
        let s = input(" I I");
        let v = || c("c1", &s);
        let text = || cast(v(), &s, DataType::Utf8).unwrap();
        let by = |expr, descending| SortKey {
            expr,
            descending,
            nulls_first: descending,
        };
        let mut first = call(AggFunc::FirstValue, vec![text()]);
        first.order = vec![by(v(), true)];
        let mut last = call(AggFunc::LastValue, vec![v()]);
        last.order = vec![by(text(), false)];
        let mut recent = call(AggFunc::ArrayAgg, vec![v()]);
        recent.order = vec![by(v(), true)];
        recent.keep = Some(2);
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)));
        let calls = vec![
            call(AggFunc::Min, vec![v()]),
            call(AggFunc::Max, vec![text()]),
            first,
            last,
            recent,
        ];
        let types = vec![
            DataType::Int64,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Int64,
            list,
        ];
        let mut spec = spec(&s, &["c0"], calls, types);
        spec.append_only = append_only;
        spec
    }

    /// What `profile(true)` must show for the rows inserted so far.
    fn profile_reference(rows: &Rows) -> Vec<String> {
        let mut groups: BTreeMap<i64, Vec<Option<i64>>> = BTreeMap::new();
        for ((k, v), n) in rows {
            groups
                .entry(*k)
                .or_default()
                .extend(std::iter::repeat_n(*v, *n as usize));
        }
        let show = |v: Option<String>| v.unwrap_or_default();
        groups
            .into_iter()
            .map(|(k, values)| {
                let present = || values.iter().flatten();
                let min = present().min().map(|v| v.to_string());
                let max = present().map(|v| v.to_string()).max();
                let has_null = values.iter().any(Option::is_none);
                // NULL sorts first descending, last ascending: either way a
                // NULL order key wins first_value and last_value here.
                let first = (!has_null).then(|| present().max().unwrap().to_string());
                let last = match has_null {
                    true => None,
                    false => present().max_by_key(|v| (v.to_string(), **v)).copied(),
                };
                let mut ordered = values.clone();
                ordered.sort_by(|a, b| match (a, b) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, _) => std::cmp::Ordering::Less,
                    (_, None) => std::cmp::Ordering::Greater,
                    (Some(a), Some(b)) => b.cmp(a),
                });
                let recent: Vec<String> = ordered
                    .iter()
                    .take(2)
                    .map(|v| show(v.map(|v| v.to_string())))
                    .collect();
                format!(
                    "+1 {k}, {}, {}, {}, {}, [{}]",
                    show(min),
                    show(max),
                    show(first),
                    show(last.map(|v| v.to_string())),
                    recent.join(", ")
                )
            })
            .collect()
    }

    fn random_inserts(rng: &mut XorShift, rows: &mut Rows) -> ChangeBatch {
        let mut text = String::from(" I I\n");
        for _ in 0..=rng.next(6) {
            let v = rng.next(14) as i64 - 3;
            let row = (rng.next(5) as i64, (v < 10).then_some(v));
            let diff = 1 + rng.next(2) as i64;
            *rows.entry(row).or_default() += diff;
            let v = row.1.map_or(".".to_string(), |v| v.to_string());
            text.push_str(&format!("{diff} {} {v}\n", row.0));
        }
        ChangeBatch::from_pretty(&text).unwrap()
    }

    /// Over insertions only, the one-value accumulators and the bounded
    /// list give what the rows call for, also after a whole checkpoint and
    /// after a chain of changes is restored.
    #[test]
    fn append_only_accumulators_keep_only_what_insertions_can_change() {
        for seed in 1..=20u64 {
            let spec = profile(true);
            let mut rng = XorShift(seed);
            let mut rows = Rows::new();
            let mut h = Harness::new(&spec);
            let epoch = |rng: &mut XorShift, rows: &mut Rows| {
                (0..=rng.next(3))
                    .map(|_| random_inserts(rng, rows))
                    .collect::<Vec<_>>()
            };
            for _ in 0..rng.next(6) {
                h.step_batches(epoch(&mut rng, &mut rows));
            }
            assert_eq!(h.view(), profile_reference(&rows), "seed {seed}");
            h.op = round_trip(&spec, h.op.as_ref(), Shard::SINGLE);
            let mut whole = StateWriter::new();
            h.op.checkpoint(&mut whole).unwrap();
            h.op.track_changes();
            let mut chain = Vec::new();
            for _ in 0..4 {
                h.step_batches(epoch(&mut rng, &mut rows));
                let mut changes = StateWriter::new();
                assert!(h.op.checkpoint_changes(&mut changes).unwrap());
                chain.push(changes.into_bytes());
            }
            assert_eq!(h.view(), profile_reference(&rows), "seed {seed}");
            let mut restored = spec.instantiate().unwrap();
            let whole = whole.into_bytes();
            let mut reader = StateReader::new(&whole);
            restored
                .restore(Shard::SINGLE, &[input(" I I")], &mut reader)
                .unwrap();
            for changes in &chain {
                restored
                    .restore_changes(&mut StateReader::new(changes))
                    .unwrap();
            }
            assert_eq!(restored.state_bytes(), h.op.state_bytes(), "seed {seed}");
            h.op = restored;
            for _ in 0..3 {
                h.step_batches(epoch(&mut rng, &mut rows));
            }
            assert_eq!(h.view(), profile_reference(&rows), "seed {seed}");
        }
    }

    /// The bounded list keeps two values per group however many arrive;
    /// without an append-only input it keeps them all.
    #[test]
    fn a_bounded_list_keeps_its_prefix_only_over_an_append_only_input() {
        let mut rng = XorShift(7);
        let mut rows = Rows::new();
        let batches: Vec<ChangeBatch> = (0..200)
            .map(|_| random_inserts(&mut rng, &mut rows))
            .collect();
        let bytes = |append_only: bool| {
            let mut h = Harness::new(&profile(append_only));
            h.step_batches(batches.clone());
            h.op.state_bytes()
        };
        let (bounded, general) = (bytes(true), bytes(false));
        assert!(bounded * 4 < general, "{bounded} against {general}");
        assert_eq!(
            profile(true).describe(),
            "Aggregate: group by [c0@0], min(c1@1), max(CAST(c1@1 AS Utf8)), \
             first_value(CAST(c1@1 AS Utf8) ORDER BY c1@1 DESC), last_value(c1@1 ORDER BY \
             CAST(c1@1 AS Utf8)), array_agg(c1@1 ORDER BY c1@1 DESC) keeping 2 (append-only input)"
        );
    }

    /// A retraction can only reach an append-only aggregate through a
    /// planning error: it fails loudly rather than giving wrong rows.
    #[test]
    fn a_retraction_fails_an_append_only_aggregate() {
        let mut op = profile(true).instantiate().unwrap();
        let mut out = Vec::new();
        op.on_start(Shard::SINGLE, &mut out).unwrap();
        let insert = ChangeBatch::from_pretty(" I I\n + 1 2").unwrap();
        op.on_batch(0, insert, &mut out).unwrap();
        let retract = ChangeBatch::from_pretty(" I I\n - 1 2").unwrap();
        let error = op.on_batch(0, retract, &mut out).unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }
}
