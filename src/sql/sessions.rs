//! The window functions a `SESSION(rel, ts, gap, key…)` call becomes
//! ([`crate::sql::windows`]): `eddy_session_start(ts, gap_us) OVER
//! (PARTITION BY key…)` and `eddy_session_end(…)`, the first event time of
//! a row's session and its last event time plus the gap. A query evaluates
//! them over each key's rows as DataFusion hands them over (the whole
//! partition at once); a materialized view's planner lowers the pair to the
//! incremental session operator
//! ([`crate::dataflow::operator::SessionSpec`]). Both split times into
//! sessions with [`session_spans`], so a view and the same query agree.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{exec_err, DataFusionError, Result as DfResult};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, TypeSignature, Volatility, WindowUDF, WindowUDFImpl,
};

use crate::dataflow::expr::{micros_as, timestamp_micros};
use crate::dataflow::operator::{session_spans, SessionBound};
use crate::error::Error;

pub const SESSION_START: &str = "eddy_session_start";
pub const SESSION_END: &str = "eddy_session_end";

/// Which bound a call of one of the two functions gives.
pub fn bound_of(name: &str) -> Option<SessionBound> {
    match name {
        SESSION_START => Some(SessionBound::Start),
        SESSION_END => Some(SessionBound::End),
        _ => None,
    }
}

/// The two functions, to register with a query context.
pub fn functions() -> [WindowUDF; 2] {
    [
        WindowUDF::from(SessionBoundFn::new(SessionBound::Start)),
        WindowUDF::from(SessionBoundFn::new(SessionBound::End)),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionBoundFn {
    end: bool,
    signature: Signature,
}

impl SessionBoundFn {
    fn new(bound: SessionBound) -> SessionBoundFn {
        SessionBoundFn {
            end: bound == SessionBound::End,
            signature: Signature::new(TypeSignature::Any(2), Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for SessionBoundFn {
    fn name(&self) -> &str {
        if self.end {
            SESSION_END
        } else {
            SESSION_START
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> DfResult<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(SessionEvaluator { end: self.end }))
    }

    /// The time column's type: a timestamp of any unit or zone.
    fn field(&self, args: WindowUDFFieldArgs) -> DfResult<FieldRef> {
        let time = args.get_input_field(0).map(|f| f.data_type().clone());
        match time {
            Some(t @ DataType::Timestamp(..)) => Ok(Arc::new(Field::new(args.name(), t, true))),
            other => {
                let name = other.as_ref().map_or("nothing".into(), |t| {
                    let field = Field::new("t", t.clone(), true);
                    crate::types::SqlType::of_field(&field).map_or(t.to_string(), |s| s.sql_name())
                });
                Err(DataFusionError::External(Box::new(
                    Error::DatatypeMismatch(format!(
                        "the time column of a SESSION window must be a timestamp, not {name}"
                    )),
                )))
            }
        }
    }
}

#[derive(Debug)]
struct SessionEvaluator {
    end: bool,
}

impl PartitionEvaluator for SessionEvaluator {
    /// One key's rows, in no particular order: each row's session bound.
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> DfResult<ArrayRef> {
        let [times, gap] = values else {
            return exec_err!("session window functions take a time and a gap");
        };
        let gap = match gap.as_primitive_opt::<Int64Type>() {
            Some(g) if !g.is_empty() && g.is_valid(0) => g.value(0),
            _ => return exec_err!("a session window's gap must be microseconds, as an integer"),
        };
        let micros = timestamp_micros(times).map_err(|e| DataFusionError::External(e.into()))?;
        let mut order: Vec<usize> = (0..num_rows).filter(|i| micros.is_valid(*i)).collect();
        order.sort_by_key(|i| micros.value(*i));
        let mut bounds: Vec<Option<i64>> = vec![None; num_rows];
        let mut rows = order.iter().peekable();
        for (start, last) in session_spans(order.iter().map(|i| micros.value(*i)), gap) {
            let bound = if self.end {
                last.saturating_add(gap)
            } else {
                start
            };
            while let Some(i) = rows.next_if(|i| micros.value(**i) <= last) {
                bounds[*i] = Some(bound);
            }
        }
        micros_as(Int64Array::from(bounds), times.data_type())
            .map_err(|e| DataFusionError::External(e.into()))
    }
}
