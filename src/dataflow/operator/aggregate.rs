//! Group-by aggregate. (Interface; implementation in progress.)

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use super::Operator;
use crate::error::{Error, Result};

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
}

#[derive(Debug, Clone)]
pub struct AggCall {
    pub func: AggFunc,
    /// Over the input batch; empty for `count(*)`. `string_agg` has two.
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub distinct: bool,
    /// `FILTER (WHERE …)`, over the input batch.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// Over the input batch.
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub calls: Vec<AggCall>,
    /// The group columns, then one column per call.
    pub output_schema: SchemaRef,
}

impl AggregateSpec {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        Err(Error::Internal("aggregate: in progress".into()))
    }

    pub fn describe(&self) -> String {
        "Aggregate".into()
    }
}
