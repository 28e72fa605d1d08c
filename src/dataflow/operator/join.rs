//! Equi-join. (Interface; implementation in progress.)

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use super::Operator;
use crate::error::{Error, Result};

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
}

impl JoinSpec {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        Err(Error::Internal("join: in progress".into()))
    }

    pub fn describe(&self) -> String {
        "Join".into()
    }
}
