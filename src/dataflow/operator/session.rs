//! Session windows: per key, events closer than the gap in event time form
//! one session, `[first event, last event + gap)`. Each input row comes out
//! with its session's start and end appended (`SESSION(rel, ts, gap, key)`,
//! docs/windows.md).
//!
//! A session's bounds depend on all of its events, so an event can move
//! them after its rows were emitted: one arriving within the gap of a
//! session extends it, one bridging two sessions merges them, and a
//! retracted one can split a session. Per epoch, for each key touched, the
//! sessions a change can reach are worked out again from the held rows and
//! only rows whose window changed are emitted (retracted under the old
//! window, inserted under the new one). Downstream aggregates then see an
//! ordinary retraction stream.
//!
//! State is every row of every open session, by key and time. When the
//! view's event-time frontier passes a session's end (plus the slack of
//! the time column's trace, see `frontier.rs`), no event can reach it any
//! more, and its rows are let go of. An exchange on the key in front of the
//! operator brings every row of a key to one worker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, Int64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::HashMap as FastMap;
use datafusion::physical_plan::PhysicalExpr;

use super::{ChangeBatch, Operator, Shard, ENTRY_OVERHEAD_BYTES, OUTPUT_BATCH_ROWS};
use crate::dataflow::expr::{evaluate, evaluate_all, micros_as, timestamp_micros};
use crate::dataflow::row::{KeyBytes, RowCodec};
use crate::dataflow::state::{corrupt, StateReader, StateWriter};
use crate::error::{Error, Result};

/// A window column the operator appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionBound {
    /// The session's first event time.
    Start,
    /// The session's last event time plus the gap.
    End,
}

#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The session key, over the input; empty for one session stream.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The event time, over the input.
    pub time: Arc<dyn PhysicalExpr>,
    /// Events less than this far apart (microseconds) share a session.
    pub gap_us: i64,
    /// The columns appended to the input's, in order.
    pub bounds: Vec<SessionBound>,
    /// Input fields, then one per bound.
    pub schema: SchemaRef,
    /// Set when the time traces to a source's watermark column: a session
    /// is final once the frontier reaches its end plus this slack.
    pub close_slack_us: Option<i64>,
}

impl SessionSpec {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        let fields = self.schema.fields();
        let width = fields
            .len()
            .checked_sub(self.bounds.len())
            .ok_or_else(|| Error::Internal("session window without its output fields".into()))?;
        let types: Vec<DataType> = fields[..width]
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Box::new(SessionWindow {
            spec: self.clone(),
            rows: RowCodec::new(&types)?,
            width,
            keys: FastMap::default(),
            by_end: BTreeSet::new(),
            pending: FastMap::default(),
            key_codec: None,
            bytes: 0,
        }))
    }

    pub fn describe(&self) -> String {
        let mut text = format!(
            "Session window: gap {} on {}",
            crate::sql::windows::human_interval(self.gap_us),
            self.time
        );
        if !self.keys.is_empty() {
            let keys: Vec<String> = self.keys.iter().map(|e| e.to_string()).collect();
            text.push_str(&format!(" per [{}]", keys.join(", ")));
        }
        if self.close_slack_us.is_some() {
            text.push_str(", frees sessions behind the watermark");
        }
        text
    }
}

/// Sessions over event times in ascending order: `(first, last)` of each
/// run of times less than `gap` apart. Shared by the operator and by the
/// batch evaluation of `SESSION` in queries, so both split alike.
pub fn session_spans(times: impl IntoIterator<Item = i64>, gap: i64) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = Vec::new();
    for t in times {
        match spans.last_mut() {
            Some((_, last)) if t.saturating_sub(*last) < gap => *last = (*last).max(t),
            _ => spans.push((t, t)),
        }
    }
    spans
}

/// One key's rows and sessions.
#[derive(Default)]
struct KeySessions {
    /// Rows by event time, each (encoded) with its weight.
    rows: BTreeMap<i64, Vec<(KeyBytes, i64)>>,
    /// Sessions by first event time: the last event time.
    spans: BTreeMap<i64, i64>,
}

struct SessionWindow {
    spec: SessionSpec,
    rows: RowCodec,
    /// Input columns.
    width: usize,
    keys: FastMap<KeyBytes, KeySessions>,
    /// Every session as (end, key, start), to free the oldest first.
    by_end: BTreeSet<(i64, KeyBytes, i64)>,
    /// Changes since the barrier, by key: (time, row, weight).
    pending: FastMap<KeyBytes, Vec<(i64, KeyBytes, i64)>>,
    /// Made from the first batch's key types.
    key_codec: Option<RowCodec>,
    bytes: usize,
}

impl SessionWindow {
    /// Appends the window columns to rows of the input schema.
    fn with_windows(
        &self,
        columns: Vec<ArrayRef>,
        starts: Option<Int64Array>,
        ends: Option<Int64Array>,
        diffs: Vec<i64>,
    ) -> Result<ChangeBatch> {
        let rows = diffs.len();
        let mut columns = columns;
        for (bound, field) in self
            .spec
            .bounds
            .iter()
            .zip(self.spec.schema.fields()[self.width..].iter())
        {
            let values = match bound {
                SessionBound::Start => starts.clone(),
                SessionBound::End => ends.clone(),
            };
            columns.push(match values {
                Some(v) => micros_as(v, field.data_type())?,
                None => new_null_array(field.data_type(), rows),
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let data =
            RecordBatch::try_new_with_options(Arc::clone(&self.spec.schema), columns, &options)?;
        Ok(ChangeBatch::new(data, diffs))
    }

    /// Applies one key's changes of the epoch, adding to `emit` how the
    /// windows of its rows changed: a session whose bounds changed is
    /// retracted whole (old rows, old bounds) and inserted whole (new rows,
    /// new bounds); in a session whose bounds stayed, only the changed rows
    /// are.
    fn apply(&mut self, key: KeyBytes, mut changes: Vec<(i64, KeyBytes, i64)>, emit: &mut Emit) {
        let gap = self.spec.gap_us;
        changes.sort_by_key(|c| c.0);
        let sessions = self.keys.entry(key.clone()).or_default();
        // The sessions a changed time can touch: those it lies within the
        // gap of (it may join, bridge, end or split them).
        let mut affected: Vec<(i64, i64)> = Vec::new();
        let mut last_time = None;
        for &(t, _, _) in &changes {
            if last_time == Some(t) {
                continue;
            }
            last_time = Some(t);
            for (&start, &last) in sessions.spans.range(..t.saturating_add(gap)).rev() {
                if last.saturating_add(gap) <= t {
                    break;
                }
                affected.push((start, last));
            }
        }
        affected.sort_unstable();
        affected.dedup();
        // Stretches of time to split again: the affected sessions and the
        // changed times, joined where they lie within the gap. Rows of
        // untouched sessions lie at least a gap away from all of them.
        let mut stretches: Vec<(i64, i64)> = affected.clone();
        stretches.extend(changes.iter().map(|c| (c.0, c.0)));
        stretches.sort_unstable();
        let mut regions: Vec<(i64, i64)> = Vec::new();
        for (from, to) in stretches {
            match regions.last_mut() {
                Some(r) if from.saturating_sub(r.1) < gap => r.1 = r.1.max(to),
                _ => regions.push((from, to)),
            }
        }
        // The sessions after the changes, from the times that will hold
        // rows: held ones without changes, and changed ones whose rows do
        // not all cancel.
        let mut after: Vec<(i64, i64)> = Vec::new();
        for &(from, to) in &regions {
            let mut times: Vec<i64> = sessions.rows.range(from..=to).map(|(t, _)| *t).collect();
            times.extend(
                changes
                    .iter()
                    .map(|c| c.0)
                    .filter(|t| (from..=to).contains(t)),
            );
            times.sort_unstable();
            times.dedup();
            times.retain(|t| held_after(sessions.rows.get(t), &changes, *t));
            after.extend(session_spans(times, gap));
        }
        let kept = |span: &(i64, i64), of: &[(i64, i64)]| of.binary_search(span).is_ok();
        for span @ &(start, last) in &affected {
            if !kept(span, &after) {
                for (row, weight) in sessions.rows.range(start..=last).flat_map(|(_, r)| r) {
                    emit.push(row, start, last.saturating_add(gap), -weight);
                }
            }
            sessions.spans.remove(&start);
            self.by_end
                .remove(&(last.saturating_add(gap), key.clone(), start));
        }
        for (t, row, diff) in changes {
            // A change inside a session whose bounds stay is emitted alone.
            let at = after.partition_point(|(start, _)| *start <= t);
            if let Some(span @ &(start, last)) = at.checked_sub(1).map(|i| &after[i]) {
                if t <= last && kept(span, &affected) {
                    emit.push(&row, start, last.saturating_add(gap), diff);
                }
            }
            let rows = sessions.rows.entry(t).or_default();
            match rows.iter().position(|(r, _)| *r == row) {
                Some(i) => {
                    rows[i].1 += diff;
                    if rows[i].1 == 0 {
                        self.bytes -= rows[i].0.len() + ENTRY_OVERHEAD_BYTES;
                        rows.swap_remove(i);
                    }
                }
                None => {
                    self.bytes += row.len() + ENTRY_OVERHEAD_BYTES;
                    rows.push((row, diff));
                }
            }
            if rows.is_empty() {
                sessions.rows.remove(&t);
            }
        }
        for span @ &(start, last) in &after {
            let end = last.saturating_add(gap);
            sessions.spans.insert(start, last);
            self.by_end.insert((end, key.clone(), start));
            if !kept(span, &affected) {
                for (row, weight) in sessions.rows.range(start..=last).flat_map(|(_, r)| r) {
                    emit.push(row, start, end, *weight);
                }
            }
        }
        if sessions.rows.is_empty() {
            self.keys.remove(&key);
        }
    }

    /// The rows of `emit` with their windows, in batches.
    fn flush(&self, emit: &Emit, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let mut from = 0;
        while from < emit.diffs.len() {
            let to = (from + OUTPUT_BATCH_ROWS).min(emit.diffs.len());
            let rows = emit.spans[from..to].iter().map(|r| &emit.bytes[r.clone()]);
            let columns = self.rows.decode(rows)?;
            let starts = Int64Array::from(emit.starts[from..to].to_vec());
            let ends = Int64Array::from(emit.ends[from..to].to_vec());
            let diffs = emit.diffs[from..to].to_vec();
            out.push(self.with_windows(columns, Some(starts), Some(ends), diffs)?);
            from = to;
        }
        Ok(())
    }
}

/// Whether time `t` holds rows once `changes` (sorted by time) apply to
/// what it holds now.
fn held_after(
    now: Option<&Vec<(KeyBytes, i64)>>,
    changes: &[(i64, KeyBytes, i64)],
    t: i64,
) -> bool {
    let first = changes.partition_point(|c| c.0 < t);
    let at = changes[first..].iter().take_while(|c| c.0 == t);
    let mut weights: Vec<(&[u8], i64)> = now
        .map(|rows| rows.iter().map(|(r, w)| (r.as_slice(), *w)).collect())
        .unwrap_or_default();
    for (_, row, diff) in at {
        match weights.iter_mut().find(|(r, _)| *r == row.as_slice()) {
            Some((_, w)) => *w += diff,
            None => weights.push((row.as_slice(), *diff)),
        }
    }
    weights.iter().any(|(_, w)| *w != 0)
}

/// Rows to emit, their bytes back to back, with their windows and weights.
#[derive(Default)]
struct Emit {
    bytes: Vec<u8>,
    spans: Vec<std::ops::Range<usize>>,
    starts: Vec<i64>,
    ends: Vec<i64>,
    diffs: Vec<i64>,
}

impl Emit {
    fn push(&mut self, row: &[u8], start: i64, end: i64, diff: i64) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(row);
        self.spans.push(at..self.bytes.len());
        self.starts.push(start);
        self.ends.push(end);
        self.diffs.push(diff);
    }
}

impl Operator for SessionWindow {
    fn on_batch(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let data = &batch.data;
        let times = timestamp_micros(&evaluate(&self.spec.time, data)?)?;
        // No key: one session stream, under the empty key.
        let keys = match self.spec.keys.is_empty() {
            true => None,
            false => {
                let keys = evaluate_all(&self.spec.keys, data)?;
                if self.key_codec.is_none() {
                    self.key_codec = Some(RowCodec::new(keys.iter().map(|k| k.data_type()))?);
                }
                match &self.key_codec {
                    Some(codec) => Some(codec.encode(&keys)?),
                    None => None,
                }
            }
        };
        let rows = self.rows.encode(&data.columns()[..self.width])?;
        // A row without a time belongs to no session: it passes with NULL
        // bounds, as in a query.
        let mut untimed = Vec::new();
        for (i, diff) in batch.diffs.iter().enumerate() {
            if *diff == 0 {
                continue;
            }
            if times.is_null(i) {
                untimed.push(i as u32);
                continue;
            }
            let row = KeyBytes::new(rows.row(i).data());
            let key = keys.as_ref().map_or(&[][..], |k| k.row(i).data());
            self.pending
                .entry(KeyBytes::new(key))
                .or_default()
                .push((times.value(i), row, *diff));
        }
        if !untimed.is_empty() {
            let passing = batch.take(&untimed)?;
            let columns = passing.data.columns()[..self.width].to_vec();
            out.push(self.with_windows(columns, None, None, passing.diffs)?);
        }
        Ok(())
    }

    fn on_barrier(&mut self, _epoch: u64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let mut emit = Emit::default();
        for (key, changes) in pending {
            self.apply(key, changes, &mut emit);
        }
        self.flush(&emit, out)
    }

    /// Lets go of every session the frontier has passed: an event that
    /// could still reach it would be behind the frontier.
    fn on_frontier(&mut self, frontier_us: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        let Some(slack) = self.spec.close_slack_us else {
            return Ok(());
        };
        while let Some((end, _, _)) = self.by_end.first() {
            if end.saturating_add(slack) > frontier_us {
                break;
            }
            let Some((_, key, start)) = self.by_end.pop_first() else {
                break;
            };
            let Some(sessions) = self.keys.get_mut(&key) else {
                continue;
            };
            if let Some(last) = sessions.spans.remove(&start) {
                let times: Vec<i64> = sessions.rows.range(start..=last).map(|(t, _)| *t).collect();
                for t in times {
                    for (row, _) in sessions.rows.remove(&t).unwrap_or_default() {
                        self.bytes -= row.len() + ENTRY_OVERHEAD_BYTES;
                    }
                }
            }
            if sessions.rows.is_empty() {
                self.keys.remove(&key);
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.bytes
            + self
                .keys
                .keys()
                .map(|k| k.len() + ENTRY_OVERHEAD_BYTES)
                .sum::<usize>()
            + self.by_end.len() * ENTRY_OVERHEAD_BYTES
    }

    /// Every key with its rows: time, row, weight. Sessions are worked out
    /// again from the rows at restore. Pending changes are applied at the
    /// barrier, so none are left.
    fn checkpoint(&self, state: &mut StateWriter) -> Result<()> {
        if !self.pending.is_empty() {
            return Err(Error::Internal(
                "session window checkpointed with changes pending since the barrier".into(),
            ));
        }
        state.len(self.keys.len());
        for (key, sessions) in &self.keys {
            state.bytes(key);
            state.len(sessions.rows.values().map(Vec::len).sum());
            for (t, rows) in &sessions.rows {
                for (row, weight) in rows {
                    state.i64(*t);
                    state.bytes(row);
                    state.i64(*weight);
                }
            }
        }
        Ok(())
    }

    fn restore(
        &mut self,
        _shard: Shard,
        _inputs: &[SchemaRef],
        state: &mut StateReader<'_>,
    ) -> Result<()> {
        // A key's length and its row count.
        for _ in 0..state.count(16)? {
            let key = KeyBytes::new(state.bytes()?);
            let mut sessions = KeySessions::default();
            // A time, a row's length, a weight.
            for _ in 0..state.count(24)? {
                let t = state.i64()?;
                let row = KeyBytes::new(state.bytes()?);
                let weight = state.i64()?;
                self.bytes += row.len() + ENTRY_OVERHEAD_BYTES;
                sessions.rows.entry(t).or_default().push((row, weight));
            }
            let times = sessions.rows.keys().copied();
            for (start, last) in session_spans(times, self.spec.gap_us) {
                sessions.spans.insert(start, last);
                self.by_end
                    .insert((last.saturating_add(self.spec.gap_us), key.clone(), start));
            }
            if sessions.rows.is_empty() || self.keys.insert(key, sessions).is_some() {
                return Err(corrupt("a session key held twice or empty".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use datafusion::physical_expr::expressions::col;

    /// Rows (key, time, payload); gap 10; windows appended as integers.
    fn spec(close: Option<i64>) -> SessionSpec {
        let input = ChangeBatch::from_pretty(" T I I").unwrap().schema();
        let out = ChangeBatch::from_pretty(" T I I I I").unwrap().schema();
        SessionSpec {
            keys: vec![col("c0", &input).unwrap()],
            time: col("c1", &input).unwrap(),
            gap_us: 10,
            bounds: vec![SessionBound::Start, SessionBound::End],
            schema: out,
            close_slack_us: close,
        }
    }

    fn step(op: &mut dyn Operator, spec: &SessionSpec, rows: &str) -> Vec<String> {
        let mut out = Vec::new();
        let batch = ChangeBatch::from_pretty(&format!(" T I I\n{rows}")).unwrap();
        op.on_batch(0, batch, &mut out).unwrap();
        op.on_barrier(1, &mut out).unwrap();
        let mut lines = ChangeBatch::concat(&spec.schema, &out).unwrap().to_lines();
        lines.sort();
        lines
    }

    #[test]
    fn spans_split_at_the_gap() {
        assert_eq!(
            session_spans([1, 5, 14, 24, 40], 10),
            vec![(1, 14), (24, 24), (40, 40)]
        );
        assert_eq!(session_spans([3, 3, 12], 10), vec![(3, 12)]);
        assert!(session_spans([], 10).is_empty());
    }

    #[test]
    fn sessions_grow_merge_and_split() {
        let spec = spec(None);
        let mut op = spec.instantiate().unwrap();
        let op = op.as_mut();
        assert_eq!(
            step(op, &spec, "+ a 0 1\n+ a 25 2\n+ b 5 3"),
            vec![
                "+1 a, 0, 1, 0, 10",
                "+1 a, 25, 2, 25, 35",
                "+1 b, 5, 3, 5, 15"
            ]
        );
        // Extending a's first session moves its end; a's second and b's
        // sessions do not change, so nothing is said of them.
        assert_eq!(
            step(op, &spec, "+ a 8 4"),
            vec![
                "+1 a, 0, 1, 0, 18",
                "+1 a, 8, 4, 0, 18",
                "-1 a, 0, 1, 0, 10"
            ]
        );
        // A late event within the gap of both merges them.
        assert_eq!(
            step(op, &spec, "+ a 17 5"),
            vec![
                "+1 a, 0, 1, 0, 35",
                "+1 a, 17, 5, 0, 35",
                "+1 a, 25, 2, 0, 35",
                "+1 a, 8, 4, 0, 35",
                "-1 a, 0, 1, 0, 18",
                "-1 a, 25, 2, 25, 35",
                "-1 a, 8, 4, 0, 18"
            ]
        );
        // Retracting the bridge splits them again.
        assert_eq!(
            step(op, &spec, "- a 17 5"),
            vec![
                "+1 a, 0, 1, 0, 18",
                "+1 a, 25, 2, 25, 35",
                "+1 a, 8, 4, 0, 18",
                "-1 a, 0, 1, 0, 35",
                "-1 a, 17, 5, 0, 35",
                "-1 a, 25, 2, 0, 35",
                "-1 a, 8, 4, 0, 35"
            ]
        );
        // Exactly a gap apart is a new session; no time, no session.
        assert_eq!(
            step(op, &spec, "+ b 15 6\n+ b . 7"),
            vec!["+1 b, , 7, , ", "+1 b, 15, 6, 15, 25"]
        );
    }

    #[test]
    fn a_change_inside_a_session_that_keeps_its_bounds_is_emitted_alone() {
        let spec = spec(None);
        let mut op = spec.instantiate().unwrap();
        let op = op.as_mut();
        step(op, &spec, "+ a 0 1\n+ a 8 2");
        assert_eq!(step(op, &spec, "+ a 4 3"), vec!["+1 a, 4, 3, 0, 18"]);
        assert_eq!(step(op, &spec, "- a 4 3"), vec!["-1 a, 4, 3, 0, 18"]);
        // A copy of a row, and a change that cancels within the epoch.
        assert_eq!(
            step(op, &spec, "+ a 8 2\n+ a 5 9\n- a 5 9"),
            vec![
                "+1 a, 5, 9, 0, 18",
                "+1 a, 8, 2, 0, 18",
                "-1 a, 5, 9, 0, 18"
            ]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Epochs of random insertions and deletions: after each, the
        /// operator's output so far equals the sessions worked out from
        /// scratch over the rows held.
        #[test]
        fn output_always_equals_sessions_from_scratch(
            epochs in proptest::collection::vec(
                proptest::collection::vec((0u8..2, 0i64..80, 0i64..3, proptest::bool::ANY), 1..6),
                1..12,
            )
        ) {
            let spec = spec(None);
            let mut op = spec.instantiate().unwrap();
            let mut held: BTreeMap<(String, i64, i64), i64> = BTreeMap::new();
            let mut seen: BTreeMap<String, i64> = BTreeMap::new();
            for epoch in epochs {
                let mut text = String::new();
                for (k, t, v, delete) in epoch {
                    let key = (["a", "b"][k as usize].to_string(), t, v);
                    let n = held.get(&key).copied().unwrap_or(0);
                    let diff = if delete && n > 0 { -1 } else { 1 };
                    *held.entry(key.clone()).or_default() += diff;
                    text.push_str(&format!("{diff} {} {t} {v}\n", key.0));
                }
                held.retain(|_, n| *n != 0);
                let mut out = Vec::new();
                let batch = ChangeBatch::from_pretty(&format!(" T I I\n{text}")).unwrap();
                op.on_batch(0, batch, &mut out).unwrap();
                op.on_barrier(1, &mut out).unwrap();
                for line in ChangeBatch::concat(&spec.schema, &out).unwrap().to_lines() {
                    let (weight, row) = line.split_once(' ').unwrap();
                    *seen.entry(row.to_string()).or_default() += weight.parse::<i64>().unwrap();
                }
                seen.retain(|_, n| *n != 0);
                let mut expected: BTreeMap<String, i64> = BTreeMap::new();
                for key in ["a", "b"] {
                    let times: Vec<i64> = held
                        .keys()
                        .filter(|(k, _, _)| k == key)
                        .map(|(_, t, _)| *t)
                        .collect();
                    for (start, last) in session_spans(times, 10) {
                        for ((_, t, v), n) in held.range(
                            (key.to_string(), start, i64::MIN)..=(key.to_string(), last, i64::MAX),
                        ) {
                            let row = format!("{key}, {t}, {v}, {start}, {}", last + 10);
                            *expected.entry(row).or_default() += n;
                        }
                    }
                }
                proptest::prop_assert_eq!(&seen, &expected);
            }
        }
    }

    #[test]
    fn closed_sessions_are_let_go_and_the_rest_survive_a_checkpoint() {
        let spec = spec(Some(0));
        let mut op = spec.instantiate().unwrap();
        step(op.as_mut(), &spec, "+ a 0 1\n+ a 5 2\n+ b 12 3\n+ a 40 4");
        let full = op.state_bytes();
        let mut out = Vec::new();
        // a's first session ends at 15: the frontier at 14 keeps it.
        op.on_frontier(14, &mut out).unwrap();
        assert_eq!(op.state_bytes(), full);
        op.on_frontier(22, &mut out).unwrap();
        assert!(out.is_empty());
        assert!(op.state_bytes() < full);
        let (mut op, _) = crate::dataflow::operator::testing::round_trip(
            op.as_ref(),
            || spec.instantiate().unwrap(),
            Shard::SINGLE,
            &[ChangeBatch::from_pretty(" T I I").unwrap().schema()],
            "session window",
        );
        // b's session (12 .. 22) is gone too; a's at 40 is kept and grows.
        assert_eq!(
            step(op.as_mut(), &spec, "+ a 45 5\n+ b 30 6"),
            vec![
                "+1 a, 40, 4, 40, 55",
                "+1 a, 45, 5, 40, 55",
                "+1 b, 30, 6, 30, 40",
                "-1 a, 40, 4, 40, 50"
            ]
        );
    }
}
