//! Project: computes the output columns from each input row; weights pass
//! through unchanged.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::PhysicalExpr;

use super::{ChangeBatch, Operator};
use crate::dataflow::expr::evaluate;
use crate::error::Result;

impl Project {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Project {
        Project { exprs, schema }
    }

    /// The output columns' expressions, over the input.
    pub fn exprs(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.exprs
    }

    pub fn describe(&self) -> String {
        let exprs: Vec<String> = self
            .exprs
            .iter()
            .zip(self.schema.fields())
            .map(|(e, f)| {
                let text = e.to_string();
                if text.split('@').next() == Some(f.name().as_str()) {
                    f.name().clone()
                } else {
                    format!("{text} AS {}", f.name())
                }
            })
            .collect();
        format!("Project: {}", exprs.join(", "))
    }
}

#[derive(Debug, Clone)]
pub struct Project {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl Operator for Project {
    fn on_batch(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        out.push(project(&self.exprs, &self.schema, batch)?);
        Ok(())
    }

    crate::stateless_operator!();
}

pub fn project(
    exprs: &[Arc<dyn PhysicalExpr>],
    schema: &SchemaRef,
    batch: ChangeBatch,
) -> Result<ChangeBatch> {
    let columns = exprs
        .iter()
        .map(|e| evaluate(e, &batch.data))
        .collect::<Result<Vec<_>>>()?;
    let options = datafusion::arrow::record_batch::RecordBatchOptions::new()
        .with_row_count(Some(batch.len()));
    let data = RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?;
    Ok(ChangeBatch::new(data, batch.diffs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    #[test]
    fn computes_expressions_and_keeps_weights() {
        let batch = ChangeBatch::from_pretty(
            " I T
             + 1 a
             - 5 b",
        )
        .unwrap();
        let input = batch.schema();
        let expr = binary(col("c0", &input).unwrap(), Op::Multiply, lit(10i64), &input).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let mut out = Vec::new();
        Project::new(vec![expr], schema)
            .on_batch(0, batch, &mut out)
            .unwrap();
        assert_eq!(out[0].to_lines(), vec!["+1 10", "-1 50"]);
    }
}
