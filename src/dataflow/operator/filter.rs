//! Filter: keeps the rows (and their weights) whose predicate is true.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::physical_plan::PhysicalExpr;

use super::{ChangeBatch, Operator};
use crate::dataflow::expr::evaluate;
use crate::error::{Error, Result};

impl Filter {
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Filter {
        Filter { predicate }
    }

    pub fn describe(&self) -> String {
        format!("Filter: {}", self.predicate)
    }
}

#[derive(Debug, Clone)]
pub struct Filter {
    predicate: Arc<dyn PhysicalExpr>,
}

impl Operator for Filter {
    fn on_batch(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        let kept = filter(&self.predicate, &batch)?;
        if !kept.is_empty() {
            out.push(kept);
        }
        Ok(())
    }

    crate::stateless_operator!();
}

/// The rows of `batch` for which `predicate` is true. A row whose predicate
/// cannot be evaluated counts as NULL, so it is dropped.
pub fn filter(predicate: &Arc<dyn PhysicalExpr>, batch: &ChangeBatch) -> Result<ChangeBatch> {
    let mask = evaluate(predicate, &batch.data)?;
    let mask = match mask.data_type() {
        DataType::Boolean => mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .ok_or_else(|| Error::Internal("boolean array of another kind".into()))?,
        DataType::Null => BooleanArray::new_null(mask.len()),
        other => {
            return Err(Error::Internal(format!(
                "filter predicate has type {other}, not boolean"
            )))
        }
    };
    batch.filter(&mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    #[test]
    fn keeps_matching_rows_with_their_weights() {
        let batch = ChangeBatch::from_pretty(
            " I T
             + 1 a
             - 5 b
             + 7 c",
        )
        .unwrap();
        let schema = batch.schema();
        let pred = binary(col("c0", &schema).unwrap(), Op::Gt, lit(2i64), &schema).unwrap();
        let mut out = Vec::new();
        Filter::new(pred).on_batch(0, batch, &mut out).unwrap();
        assert_eq!(out[0].to_lines(), vec!["+1 7, c", "-1 5, b"]);
    }
}
