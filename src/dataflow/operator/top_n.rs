//! Top-N per group. (Interface; implementation in progress.)

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use super::Operator;
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
}

impl TopNSpec {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        Err(Error::Internal("top-n: in progress".into()))
    }

    pub fn describe(&self) -> String {
        "TopN".into()
    }
}
