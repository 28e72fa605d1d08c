//! Temporal filter: keeps the rows whose time lies within a trailing range
//! of the wall clock (`WHERE ts > now() - INTERVAL '5 minutes'`), and
//! retracts each one when the clock moves past it. The clock is read by the
//! runtime once per step (`Operator::on_clock`); the engine steps views with
//! a temporal filter on a timer, so rows leave even when nothing arrives.
//!
//! It holds every row in range with its weight and the instant it leaves,
//! so memory is bounded by the range, not by the stream. An exchange on the
//! whole row in front of it brings a row's retraction to the worker that
//! holds it.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::HashMap as FastMap;
use datafusion::physical_plan::PhysicalExpr;

use super::{ChangeBatch, Operator, Shard};
use crate::dataflow::expr::{evaluate, timestamp_micros};
use crate::dataflow::row::{KeyBytes, RowCodec};
use crate::dataflow::state::{StateReader, StateWriter};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct TemporalSpec {
    /// The row's time, over the input.
    pub time: Arc<dyn PhysicalExpr>,
    /// How far back from now a row stays, in microseconds.
    pub range_us: i64,
    /// `>=` rather than `>`: a row exactly `range` old is still in.
    pub inclusive: bool,
    /// Input and output schema.
    pub schema: SchemaRef,
}

impl TemporalSpec {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        let types: Vec<DataType> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Box::new(TemporalFilter {
            spec: self.clone(),
            codec: RowCodec::new(&types)?,
            now: i64::MIN,
            held: FastMap::default(),
            leaving: BTreeMap::new(),
        }))
    }

    pub fn describe(&self) -> String {
        format!(
            "Temporal filter: {} {} now() - {}",
            self.time,
            if self.inclusive { ">=" } else { ">" },
            crate::sql::windows::human_interval(self.range_us)
        )
    }
}

struct TemporalFilter {
    spec: TemporalSpec,
    codec: RowCodec,
    /// The clock as of this step, microseconds since the epoch.
    now: i64,
    /// Rows in range: when each leaves, and its weight.
    held: FastMap<KeyBytes, (i64, i64)>,
    /// Rows by the instant they leave (entries of rows since retracted are
    /// stale, told apart by `held`).
    leaving: BTreeMap<i64, Vec<KeyBytes>>,
}

impl TemporalFilter {
    /// Whether a row leaving at `until` is out of range at `now`.
    fn gone(inclusive: bool, until: i64, now: i64) -> bool {
        if inclusive {
            now > until
        } else {
            now >= until
        }
    }

    /// Rows (encoded) with their weights, as a change batch.
    fn batch_of(&self, rows: &[(KeyBytes, i64)]) -> Result<ChangeBatch> {
        let columns = self.codec.decode(rows.iter().map(|(r, _)| r.as_ref()))?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let data =
            RecordBatch::try_new_with_options(Arc::clone(&self.spec.schema), columns, &options)?;
        Ok(ChangeBatch::new(
            data,
            rows.iter().map(|(_, w)| *w).collect(),
        ))
    }
}

impl Operator for TemporalFilter {
    fn on_clock(&mut self, now_us: i64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        self.now = self.now.max(now_us);
        let mut leaving = Vec::new();
        while let Some(entry) = self.leaving.first_entry() {
            if !Self::gone(self.spec.inclusive, *entry.key(), self.now) {
                break;
            }
            let (until, rows) = entry.remove_entry();
            for row in rows {
                if self.held.get(&row).is_some_and(|(u, _)| *u == until) {
                    if let Some((_, weight)) = self.held.remove(&row) {
                        leaving.push((row, -weight));
                    }
                }
            }
        }
        if !leaving.is_empty() {
            out.push(self.batch_of(&leaving)?);
        }
        Ok(())
    }

    fn on_batch(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        let times = timestamp_micros(&evaluate(&self.spec.time, &batch.data)?)?;
        let rows = self.codec.encode(batch.data.columns())?;
        let mut keep = Vec::with_capacity(batch.len());
        for (i, diff) in batch.diffs.iter().enumerate() {
            // NULL > x is not true: such a row is never in range.
            let until = (!times.is_null(i))
                .then(|| times.value(i).saturating_add(self.spec.range_us))
                .filter(|until| !Self::gone(self.spec.inclusive, *until, self.now));
            let Some(until) = until else {
                keep.push(false);
                continue;
            };
            keep.push(true);
            let row = KeyBytes::from(rows.row(i).data());
            let entry = self.held.entry(row.clone()).or_insert((until, 0));
            if entry.1 == 0 {
                self.leaving.entry(until).or_default().push(row.clone());
            }
            entry.1 += diff;
            if entry.1 == 0 {
                self.held.remove(&row);
            }
        }
        let kept = batch.filter(&BooleanArray::from(keep))?;
        if !kept.is_empty() {
            out.push(kept);
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.held.keys().map(|k| k.len() + 48).sum::<usize>()
    }

    /// The clock, then every row held with when it leaves and its weight.
    fn checkpoint(&self, state: &mut StateWriter) -> Result<()> {
        state.i64(self.now);
        state.len(self.held.len());
        for (row, (until, weight)) in &self.held {
            state.bytes(row);
            state.i64(*until);
            state.i64(*weight);
        }
        Ok(())
    }

    fn restore(
        &mut self,
        _shard: Shard,
        _inputs: &[SchemaRef],
        state: &mut StateReader<'_>,
    ) -> Result<()> {
        self.now = state.i64()?;
        let rows = state.count(24)?;
        self.held.clear();
        self.leaving.clear();
        for _ in 0..rows {
            let row = KeyBytes::from(state.bytes()?);
            let (until, weight) = (state.i64()?, state.i64()?);
            self.leaving.entry(until).or_default().push(row.clone());
            self.held.insert(row, (until, weight));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_expr::expressions::col;

    fn spec() -> TemporalSpec {
        let schema = ChangeBatch::from_pretty(" I I").unwrap().schema();
        TemporalSpec {
            time: col("c0", &schema).unwrap(),
            range_us: 10,
            inclusive: false,
            schema,
        }
    }

    fn lines(out: &[ChangeBatch], schema: &SchemaRef) -> Vec<String> {
        ChangeBatch::concat(schema, out).unwrap().to_lines()
    }

    #[test]
    fn rows_leave_when_the_clock_passes_them() {
        let spec = spec();
        let mut op = spec.instantiate().unwrap();
        let mut out = Vec::new();
        op.on_clock(100, &mut out).unwrap();
        let batch = ChangeBatch::from_pretty(" I I\n + 85 1\n + 95 2\n + 100 3\n 2 105 4").unwrap();
        op.on_batch(0, batch, &mut out).unwrap();
        // 85 left at 95, before now: never in.
        assert_eq!(
            lines(&out, &spec.schema),
            vec!["+1 100, 3", "+1 95, 2", "+2 105, 4"]
        );
        out.clear();
        op.on_clock(105, &mut out).unwrap();
        assert_eq!(lines(&out, &spec.schema), vec!["-1 95, 2"]);
        // A retraction of a row in range passes; of one gone, not again.
        out.clear();
        let batch = ChangeBatch::from_pretty(" I I\n - 95 2\n - 105 4").unwrap();
        op.on_batch(0, batch, &mut out).unwrap();
        assert_eq!(lines(&out, &spec.schema), vec!["-1 105, 4"]);
        // Through a checkpoint, the rest leaves on time.
        let (mut op, _) = crate::dataflow::operator::testing::round_trip(
            op.as_ref(),
            || spec.instantiate().unwrap(),
            Shard::SINGLE,
            &[Arc::clone(&spec.schema)],
            "temporal filter",
        );
        out.clear();
        op.on_clock(200, &mut out).unwrap();
        assert_eq!(lines(&out, &spec.schema), vec!["-1 100, 3", "-1 105, 4"]);
    }
}
