//! Scalar expressions in operators: DataFusion physical expressions
//! evaluated on a batch's columns.
//!
//! A view must keep running when one input row cannot be evaluated (a
//! division by zero, a failed cast): as in RisingWave, such a row's value
//! becomes NULL and a warning is logged, instead of the whole batch failing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use crate::error::Result;

/// Microseconds in a day: an interval's days are 24 hours in UTC.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Timestamps (any unit or zone) as microseconds since the epoch.
pub fn timestamp_micros(values: &ArrayRef) -> Result<Int64Array> {
    let us = cast(values, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    Ok(cast(&us, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// Microseconds since the epoch as values of `target`: a timestamp of any
/// unit or zone, or (for tests over integer times) an integer.
pub fn micros_as(values: Int64Array, target: &DataType) -> Result<ArrayRef> {
    let values: ArrayRef = match target {
        DataType::Timestamp(_, zone) => Arc::new(
            values
                .reinterpret_cast::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                .with_timezone_opt(zone.clone()),
        ),
        _ => Arc::new(values),
    };
    Ok(cast(&values, target)?)
}

/// A constant interval of fixed length (no months), or a duration, in whole
/// microseconds.
pub fn fixed_interval_micros(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => i64::from(v.days)
            .checked_mul(MICROS_PER_DAY)?
            .checked_add(v.nanoseconds.div_euclid(1000)),
        ScalarValue::IntervalDayTime(Some(v)) => i64::from(v.days)
            .checked_mul(MICROS_PER_DAY)?
            .checked_add(i64::from(v.milliseconds) * 1000),
        ScalarValue::DurationSecond(Some(s)) => s.checked_mul(1_000_000),
        ScalarValue::DurationMillisecond(Some(ms)) => ms.checked_mul(1000),
        ScalarValue::DurationMicrosecond(Some(us)) => Some(*us),
        ScalarValue::DurationNanosecond(Some(ns)) => Some(ns.div_euclid(1000)),
        _ => None,
    }
}

/// Rows whose expression failed and became NULL, since the server started.
pub static ROWS_NULLED_BY_ERRORS: AtomicU64 = AtomicU64::new(0);

/// `expr` over `batch`, one value per row.
pub fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    match expr
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
    {
        Ok(array) => Ok(array),
        Err(e) if batch.num_rows() > 0 => {
            tracing::warn!(expr = %expr, error = %e, "expression failed; failing rows become NULL");
            evaluate_row_by_row(expr, batch)
        }
        Err(e) => Err(e.into()),
    }
}

fn evaluate_row_by_row(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    let data_type = expr.data_type(&batch.schema())?;
    let mut parts: Vec<ArrayRef> = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let one = batch.slice(row, 1);
        match expr.evaluate(&one).and_then(|v| v.into_array(1)) {
            Ok(value) if value.data_type() == &data_type => parts.push(value),
            _ => {
                ROWS_NULLED_BY_ERRORS.fetch_add(1, Ordering::Relaxed);
                parts.push(new_null_array(&data_type, 1));
            }
        }
    }
    let refs: Vec<&dyn datafusion::arrow::array::Array> =
        parts.iter().map(|a| a.as_ref()).collect();
    Ok(concat(&refs)?)
}

/// Every expression of `exprs` over `batch`.
pub fn evaluate_all(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs.iter().map(|e| evaluate(e, batch)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::batch::ChangeBatch;
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    #[test]
    fn a_failing_row_becomes_null_and_the_others_are_computed() {
        let batch = ChangeBatch::from_pretty(" I\n + 2\n + 0\n + 5").unwrap();
        let schema = batch.schema();
        let expr = binary(lit(10i64), Op::Divide, col("c0", &schema).unwrap(), &schema).unwrap();
        let out = evaluate(&expr, &batch.data).unwrap();
        let out = datafusion::arrow::util::pretty::pretty_format_columns("x", &[out]).unwrap();
        assert!(out.to_string().contains("| 5 |"), "{out}");
        assert_eq!(out.to_string().matches("|   |").count(), 1, "{out}");
    }
}
