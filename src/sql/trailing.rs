//! Trailing-range conditions in materialized views: a `WHERE` condition
//! `t > now() - INTERVAL '5 minutes'` (or `>=`, or written the other way
//! round) keeps only the rows of the last five minutes, and rows leave the
//! view as they age out. In a view's query the condition is rewritten,
//! before planning, into `eddy_trailing(t, INTERVAL '5 minutes', inclusive)`,
//! which the dataflow planner lowers to a temporal filter
//! ([`crate::dataflow::operator::TemporalSpec`]). Any other use of `now()`
//! in a view is still refused. Ad-hoc queries keep `now()` as it is.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Statement, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Error, Result};

/// The function a trailing-range condition becomes.
pub const TRAILING: &str = "eddy_trailing";

/// Rewrites the trailing-range conditions of a view's query.
pub fn rewrite(stmt: &mut Statement) -> Result<()> {
    match stmt.visit(&mut Conditions) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct Conditions;

impl VisitorMut for Conditions {
    type Break = Error;

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Error> {
        let Expr::BinaryOp { left, op, right } = expr else {
            return ControlFlow::Continue(());
        };
        // `t > now() - i`, or `now() - i < t`.
        let (time, range, inclusive) = match (op, range_of(unnest(right)), range_of(unnest(left))) {
            (BinaryOperator::Gt, Some(range), _) => (left, range, false),
            (BinaryOperator::GtEq, Some(range), _) => (left, range, true),
            (BinaryOperator::Lt, _, Some(range)) => (right, range, false),
            (BinaryOperator::LtEq, _, Some(range)) => (right, range, true),
            _ => return ControlFlow::Continue(()),
        };
        let text = format!("{TRAILING}({time}, {range}, {inclusive})");
        match Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
        {
            Ok(call) => {
                *expr = call;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(Error::Internal(format!(
                "trailing range rewrite produced {text}: {e}"
            ))),
        }
    }
}

/// `expr` without the parentheses around it.
fn unnest(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(inner) => unnest(inner),
        other => other,
    }
}

/// `now() - <interval>` (or `current_timestamp - …`): the interval.
fn range_of(expr: &Expr) -> Option<&Expr> {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Minus,
        right,
    } = expr
    else {
        return None;
    };
    let Expr::Function(f) = unnest(left) else {
        return None;
    };
    let name = f.name.to_string().to_ascii_lowercase();
    matches!(name.as_str(), "now" | "current_timestamp").then_some(right.as_ref())
}

/// `eddy_trailing(t, range, inclusive)`: whether `t` lies within `range`
/// of now, as a materialized view's planner reads it (it becomes a temporal
/// filter). Declared immutable so that `check_maintainable` lets it through.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Trailing {
    signature: Signature,
}

impl Trailing {
    pub fn new() -> Trailing {
        Trailing {
            signature: Signature::new(TypeSignature::Any(3), Volatility::Immutable),
        }
    }
}

impl Default for Trailing {
    fn default() -> Trailing {
        Trailing::new()
    }
}

impl ScalarUDFImpl for Trailing {
    fn name(&self) -> &str {
        TRAILING
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    /// Never evaluated: a materialized view's planner lowers it, and an
    /// error here keeps constant folding from freezing it at CREATE.
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        exec_err!("{TRAILING} is kept by materialized views only; use now() in queries")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut stmt).unwrap();
        stmt.to_string()
    }

    #[test]
    fn trailing_conditions_become_calls() {
        assert_eq!(
            rewritten("SELECT * FROM t WHERE k = 1 AND ts > now() - INTERVAL '5 minutes'"),
            "SELECT * FROM t WHERE k = 1 AND eddy_trailing(ts, INTERVAL '5 minutes', false)"
        );
        assert_eq!(
            rewritten("SELECT * FROM t WHERE current_timestamp - INTERVAL '1' HOUR <= t.ts"),
            "SELECT * FROM t WHERE eddy_trailing(t.ts, INTERVAL '1' HOUR, true)"
        );
        assert_eq!(
            rewritten("SELECT * FROM t WHERE ts > (now() - INTERVAL '5 minutes')"),
            "SELECT * FROM t WHERE eddy_trailing(ts, INTERVAL '5 minutes', false)"
        );
        // Anything else is left for the planner to refuse.
        assert_eq!(
            rewritten("SELECT * FROM t WHERE ts < now() - INTERVAL '5 minutes'"),
            "SELECT * FROM t WHERE ts < now() - INTERVAL '5 minutes'"
        );
    }
}
