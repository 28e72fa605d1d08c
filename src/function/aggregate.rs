//! User-defined aggregates: `CREATE AGGREGATE … LANGUAGE python` with
//! `create_state` / `accumulate` / `retract` / `finish`, and native ones an
//! embedding program registers ([`crate::Extensions`]).
//!
//! Either kind keeps each group's state as bytes of its own making, which
//! EddyDB stores with the view's aggregate operator and checkpoints with
//! it: a Python state is a pickle, a native one whatever its `update`
//! writes. At each barrier the operator hands every group that changed to
//! [`UserAggregate::update`] at once, with the rows to add (positive
//! weight) or take back (negative weight).
//!
//! Ad-hoc queries call the same aggregate through [`UserAggregateUdf`]: its
//! DataFusion accumulator gathers the group's rows and makes one update of
//! a fresh state at the end.

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use datafusion::scalar::ScalarValue;

pub use super::python::{AggregateOutput, GroupUpdate};
use super::python::{PythonAggregatePool, PythonError};
use super::{ErrorSink, FunctionError};
use crate::error::{Error, Result};

/// An aggregate whose per-group state is bytes it defines.
pub trait UserAggregate: Send + Sync + fmt::Debug {
    fn name(&self) -> &str;
    /// The argument types (arguments of other types are cast to them).
    fn args(&self) -> &[DataType];
    fn returns(&self) -> &DataType;
    /// Whether it can take rows back; a view over rows that change (a
    /// table, a join) needs it.
    fn retracts(&self) -> bool;
    /// Applies each group's rows to its state, in one call for many
    /// groups: `columns` are the argument columns the rows index into.
    /// Returns, per group in order, the new state (`None`: keep the old
    /// one) and the finished value. A group the function fails on should
    /// get NULL and be reported by the function itself; an `Err` fails the
    /// view.
    fn update(&self, columns: &[ArrayRef], groups: &[GroupUpdate]) -> Result<AggregateOutput>;
}

/// A Python aggregate: its worker processes, and where failed groups go.
pub struct PythonAggregate {
    name: String,
    args: Vec<DataType>,
    returns: DataType,
    pool: PythonAggregatePool,
    sink: ErrorSink,
}

impl fmt::Debug for PythonAggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PythonAggregate")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PythonAggregate {
    pub fn new(
        name: String,
        args: Vec<DataType>,
        returns: DataType,
        pool: PythonAggregatePool,
        sink: ErrorSink,
    ) -> PythonAggregate {
        PythonAggregate {
            name,
            args,
            returns,
            pool,
            sink,
        }
    }

    fn report(&self, arguments: String, message: String, traceback: String) {
        (self.sink)(FunctionError {
            function: self.name.clone(),
            arguments,
            message,
            traceback,
        });
    }
}

impl UserAggregate for PythonAggregate {
    fn name(&self) -> &str {
        &self.name
    }

    fn args(&self) -> &[DataType] {
        &self.args
    }

    fn returns(&self) -> &DataType {
        &self.returns
    }

    fn retracts(&self) -> bool {
        self.pool.retracts().unwrap_or(false)
    }

    /// Whatever happens in Python ends as NULLs and reports: a group that
    /// failed keeps its state; a batch that failed as a whole (a dead or
    /// hung worker) keeps every state.
    fn update(&self, columns: &[ArrayRef], groups: &[GroupUpdate]) -> Result<AggregateOutput> {
        match self.pool.update(columns, groups) {
            Ok(output) => {
                for error in &output.errors {
                    self.report(
                        format!("group {}", error.row),
                        error.message.clone(),
                        error.traceback.clone(),
                    );
                }
                Ok(output)
            }
            Err(PythonError::Arguments(message)) => Err(Error::Internal(message)),
            Err(error) => {
                self.report(
                    format!("{} groups", groups.len()),
                    error.to_string(),
                    String::new(),
                );
                Ok(AggregateOutput {
                    states: vec![None; groups.len()],
                    values: new_null_array(&self.returns, groups.len()),
                    errors: Vec::new(),
                })
            }
        }
    }
}

/// A user aggregate as DataFusion calls it in ad-hoc queries.
#[derive(Debug)]
pub struct UserAggregateUdf {
    inner: Arc<dyn UserAggregate>,
    signature: Signature,
}

impl UserAggregateUdf {
    pub fn new(inner: Arc<dyn UserAggregate>) -> UserAggregateUdf {
        UserAggregateUdf {
            inner,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    pub fn aggregate(&self) -> &Arc<dyn UserAggregate> {
        &self.inner
    }
}

impl PartialEq for UserAggregateUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for UserAggregateUdf {}

impl Hash for UserAggregateUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
        std::ptr::hash(Arc::as_ptr(&self.inner) as *const u8, state);
    }
}

impl AggregateUDFImpl for UserAggregateUdf {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.inner.returns().clone())
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        let declared = self.inner.args();
        if arg_types.len() != declared.len() {
            return datafusion::common::plan_err!(
                "aggregate {} takes {} argument(s), not {}",
                self.inner.name(),
                declared.len(),
                arg_types.len()
            );
        }
        for (given, want) in arg_types.iter().zip(declared) {
            if !datafusion::arrow::compute::can_cast_types(given, want) {
                return datafusion::common::plan_err!(
                    "aggregate {}: an argument of type {given} cannot be cast to {want}",
                    self.inner.name()
                );
            }
        }
        Ok(declared.to_vec())
    }

    /// The partial state between phases: the rows so far, one list per
    /// argument.
    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(self
            .inner
            .args()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Arc::new(Field::new(
                    format!("{}[rows_{i}]", args.name),
                    DataType::List(Arc::new(Field::new_list_field(t.clone(), true))),
                    true,
                ))
            })
            .collect())
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(RowsAccumulator {
            inner: Arc::clone(&self.inner),
            parts: vec![Vec::new(); self.inner.args().len()],
        }))
    }
}

/// Gathers a group's rows; finishing makes one update of a fresh state.
#[derive(Debug)]
struct RowsAccumulator {
    inner: Arc<dyn UserAggregate>,
    /// Per argument, the arrays of rows seen.
    parts: Vec<Vec<ArrayRef>>,
}

impl RowsAccumulator {
    fn columns(&self) -> DfResult<Vec<ArrayRef>> {
        argument_columns(&self.parts, self.inner.args())
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }
}

impl Accumulator for RowsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        for (part, value) in self.parts.iter_mut().zip(values) {
            part.push(Arc::clone(value));
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let columns = self.columns()?;
        let rows = columns.first().map_or(0, |c| c.len());
        let group = GroupUpdate {
            state: None,
            rows: (0..rows).map(|i| (i, 1)).collect(),
        };
        let output = self
            .inner
            .update(&columns, &[group])
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        ScalarValue::try_from_array(&output.values, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .parts
                .iter()
                .flatten()
                .map(|a| a.get_array_memory_size())
                .sum::<usize>()
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let columns = self.columns()?;
        Ok(columns
            .into_iter()
            .map(|c| {
                let field = Arc::new(Field::new_list_field(c.data_type().clone(), true));
                let offsets = OffsetBuffer::from_lengths([c.len()]);
                ScalarValue::List(Arc::new(ListArray::new(field, offsets, c, None)))
            })
            .collect())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        for (part, state) in self.parts.iter_mut().zip(states) {
            let lists = state.as_any().downcast_ref::<ListArray>().ok_or_else(|| {
                datafusion::error::DataFusionError::Internal("rows state is not a list".into())
            })?;
            for i in 0..lists.len() {
                if lists.is_valid(i) {
                    part.push(lists.value(i));
                }
            }
        }
        Ok(())
    }
}

/// The argument columns of an update, from the pieces of each argument
/// gathered since the last one (an argument without pieces is an empty
/// column of its type).
pub fn argument_columns(parts: &[Vec<ArrayRef>], types: &[DataType]) -> Result<Vec<ArrayRef>> {
    parts
        .iter()
        .zip(types)
        .map(|(pieces, t)| match pieces.is_empty() {
            true => Ok(new_null_array(t, 0)),
            false => {
                let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
                Ok(concat(&refs)?)
            }
        })
        .collect()
}

/// `as_any` for the planner: whether an aggregate function of a plan is
/// one of ours.
pub fn user_aggregate_of(
    udf: &datafusion::logical_expr::AggregateUDF,
) -> Option<Arc<dyn UserAggregate>> {
    let inner: &dyn Any = udf.inner().as_ref();
    inner
        .downcast_ref::<UserAggregateUdf>()
        .map(|u| Arc::clone(&u.inner))
}
