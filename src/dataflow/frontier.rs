//! Which aggregates can let go of windows. After lowering, each aggregate's
//! group keys are traced back to the sources: a key computed from a
//! source's event-time column (its `WATERMARK` column) by `date_bin` and
//! the adding or subtracting of constant intervals, through projections,
//! filters, unions and exchanges only, bounds the event time of every row
//! of its group from above. Once the view's event-time frontier passes that
//! bound, no row of the group can come any more (sources keep later events
//! apart), so the aggregate frees the group, or for `EMIT ON WINDOW CLOSE`
//! emits its final row and then frees it.
//!
//! The invariant traced is about changes, not rows: a column bounds what
//! follows with slack `d` when no change under a value `v` with `v + d` at
//! or behind the frontier arrives after the step that moved the frontier
//! there. (A change can arrive in that very step: an aggregate emitting a
//! window on close does. Each operator takes its batches before its
//! frontier, and views step in creation order, so such a change is taken
//! before anything after it lets the window go.)
//!
//! A join on other keys, or a top-N partitioned by other columns, could
//! re-emit old rows of a group already let go of, so the trace stops
//! there. These pass the bound on:
//! - an aggregate: a group changes only when a row of it arrives, so its
//!   group columns are bounded as their expressions are. This is what lets
//!   a rollup (a view over a windowed view, or a second aggregate in one
//!   view) close its windows too;
//! - a session window changes rows only under sessions that an event at or
//!   after the frontier can still reach, so its `window_end` bounds its
//!   changes like an event time (session operators whose time traces to a
//!   watermark column are marked too, to let go of closed sessions);
//! - a join whose key is a window on both sides changes a key's rows no
//!   more once the frontier passed it on both, and a top-N partitioned by
//!   a window changes a partition's ranking no more once the frontier
//!   passed it (both are marked, and let go of such keys).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::logical_expr::Operator as BinOp;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_plan::PhysicalExpr;

use super::expr::fixed_interval_micros;
use super::graph::{Graph, NodeKind};
use super::operator::{JoinSpec, KeyClose, SessionBound, WindowClose};

/// What a relation's column bounds, given the relation's name and the
/// column: `Some(d)` when, from any point on, no change to the relation
/// is under a value `v` of the column with `v + d` at or behind the
/// relation's frontier. For a source, its `WATERMARK` column with `d = 1`
/// (an event at time `t` is not behind a frontier at `t`); for a
/// materialized view, what its own dataflow's output column bounds
/// ([`output_bound`]).
pub type RelationBound<'a> = &'a dyn Fn(&str, usize) -> Option<i64>;

/// Marks every aggregate of `graph` with a window key (and every session
/// window over event time, windowed join and top-N per window). Returns how many
/// aggregates were marked.
pub fn mark_window_closes(
    graph: &mut Graph,
    relation_bound: RelationBound<'_>,
    emit_on_close: bool,
) -> usize {
    let mut marked = 0;
    for i in 0..graph.nodes.len() {
        let input = graph.nodes[i].inputs.first().copied();
        if let (NodeKind::TopN(spec), Some(input)) = (&graph.nodes[i].kind, input) {
            let close = spec
                .partition_exprs
                .iter()
                .enumerate()
                .filter_map(|(key, e)| {
                    let slack_us = expr_bound(graph, e, input, relation_bound)?;
                    Some(KeyClose { key, slack_us })
                })
                .min_by_key(|c| c.slack_us);
            if let NodeKind::TopN(spec) = &mut graph.nodes[i].kind {
                spec.close = close;
            }
            continue;
        }
        if let (NodeKind::Over(spec), Some(input)) = (&graph.nodes[i].kind, input) {
            let slack = expr_bound(graph, &spec.order, input, relation_bound);
            if let NodeKind::Over(spec) = &mut graph.nodes[i].kind {
                spec.close_slack_us = slack;
            }
            continue;
        }
        if let NodeKind::Join(spec) = &graph.nodes[i].kind {
            let close = join_close(graph, spec, &graph.nodes[i].inputs, relation_bound);
            let expire = join_expiry(graph, spec, &graph.nodes[i].inputs, relation_bound);
            if let NodeKind::Join(spec) = &mut graph.nodes[i].kind {
                spec.close = close;
                spec.expire = expire;
            }
            continue;
        }
        if let (NodeKind::Session(spec), Some(input)) = (&graph.nodes[i].kind, input) {
            let slack = session_slack(graph, &spec.time, input, relation_bound);
            if let NodeKind::Session(spec) = &mut graph.nodes[i].kind {
                spec.close_slack_us = slack;
            }
            continue;
        }
        let (NodeKind::Aggregate(spec), Some(input)) = (&graph.nodes[i].kind, input) else {
            continue;
        };
        // The key that closes soonest after its window: the least slack.
        let best = spec
            .group_exprs
            .iter()
            .enumerate()
            .filter_map(|(key, e)| Some((key, expr_bound(graph, e, input, relation_bound)?)))
            .min_by_key(|(_, slack)| *slack);
        if let Some((key, slack_us)) = best {
            if let NodeKind::Aggregate(spec) = &mut graph.nodes[i].kind {
                spec.close = Some(WindowClose {
                    key,
                    slack_us,
                    emit_on_close,
                });
                marked += 1;
            }
        }
    }
    marked
}

/// What column `column` of `graph`'s output bounds (see
/// [`RelationBound`]), for a view reading other views.
pub fn output_bound(
    graph: &Graph,
    column: usize,
    relation_bound: RelationBound<'_>,
) -> Option<i64> {
    bound(graph, graph.output(), column, relation_bound)
}

/// `Some(d)` when every row's event time is below the value of column
/// `column` of `node` plus `d` microseconds; more exactly, when no change
/// of such a row can come once the frontier is at that sum.
fn bound(
    graph: &Graph,
    node: usize,
    column: usize,
    relation_bound: RelationBound<'_>,
) -> Option<i64> {
    let n = &graph.nodes[node];
    match &n.kind {
        // The event time itself: t < t + 1 µs.
        NodeKind::Source { relation } => relation_bound(relation, column),
        // A group changes only when a row of it arrives, so each group
        // column is bounded as its expression is over the input.
        NodeKind::Aggregate(spec) => expr_bound(
            graph,
            spec.group_exprs.get(column)?,
            n.inputs[0],
            relation_bound,
        ),
        // A closed partition's ranking changes no more.
        NodeKind::TopN(spec) => {
            let close = spec.close?;
            let key = spec
                .partition_exprs
                .get(close.key)?
                .downcast_ref::<Column>()?;
            (key.index() == column).then_some(close.slack_us)
        }
        // A closed key's joined rows change no more; the key columns carry
        // the key's value on either side.
        NodeKind::Join(spec) => {
            let close = spec.close?;
            let left_width = spec.left_schema.fields().len();
            let (keys, at) = match column.checked_sub(left_width) {
                None => (&spec.left_keys, column),
                Some(right) => (&spec.right_keys, right),
            };
            let key = keys.get(close.key)?.downcast_ref::<Column>()?;
            (key.index() == at).then_some(close.slack_us)
        }
        NodeKind::Exchange { .. } | NodeKind::Filter(_) => {
            bound(graph, n.inputs[0], column, relation_bound)
        }
        NodeKind::Project(p) => {
            expr_bound(graph, p.exprs().get(column)?, n.inputs[0], relation_bound)
        }
        NodeKind::Session(spec) => {
            let width = n.schema.fields().len() - spec.bounds.len();
            match spec.bounds.get(column.checked_sub(width)?)? {
                SessionBound::End => session_slack(graph, &spec.time, n.inputs[0], relation_bound),
                SessionBound::Start => None,
            }
        }
        NodeKind::Union(_) => n
            .inputs
            .iter()
            .map(|i| bound(graph, *i, column, relation_bound))
            .collect::<Option<Vec<i64>>>()?
            .into_iter()
            .max(),
        _ => None,
    }
}

/// A join key that is a window of event time on both sides closes when
/// both have passed it: the key with the least such slack.
fn join_close(
    graph: &Graph,
    spec: &JoinSpec,
    inputs: &[usize],
    relation_bound: RelationBound<'_>,
) -> Option<KeyClose> {
    let [left, right] = inputs else {
        return None;
    };
    // A lookup join keeps only the table's rows, which do not close.
    if spec.lookup {
        return None;
    }
    spec.left_keys
        .iter()
        .zip(&spec.right_keys)
        .enumerate()
        .filter_map(|(key, (l, r))| {
            let l = expr_bound(graph, l, *left, relation_bound)?;
            let r = expr_bound(graph, r, *right, relation_bound)?;
            Some(KeyClose {
                key,
                slack_us: l.max(r),
            })
        })
        .min_by_key(|c| c.slack_us)
}

/// An interval join's rows expire: from a condition `x + a <= y + b` (or
/// `<`, or the mirror `>=`, `>`; `BETWEEN` comes as two of them) between
/// a time column `x` of one side and `y` of the other, a row of `y`'s side
/// at time `t` matches only rows of `x`'s side with `x <= t + (b - a)`.
/// Rows still to come on `x`'s side have `x + d > frontier` (`d` what `x`
/// bounds), so once the frontier reaches `t + (b - a) + d` the row can
/// match nothing new and is let go of (and not before `y`'s own bound has
/// passed it, so that it cannot be retracted any more). Per side, the
/// soonest such expiry.
fn join_expiry(
    graph: &Graph,
    spec: &JoinSpec,
    inputs: &[usize],
    relation_bound: RelationBound<'_>,
) -> [Option<KeyClose>; 2] {
    let mut expire = [None, None];
    let (Some(filter), [left, right], false) = (&spec.filter, inputs, spec.lookup) else {
        return expire;
    };
    let width = spec.left_schema.fields().len();
    // A column of the joined row as (side, column of that side, its input).
    let side_of = |column: usize| match column.checked_sub(width) {
        None => (0, column, *left),
        Some(c) => (1, c, *right),
    };
    let mut conjuncts = vec![filter];
    while let Some(expr) = conjuncts.pop() {
        let Some(b) = expr.downcast_ref::<BinaryExpr>() else {
            continue;
        };
        let (lower, upper) = match b.op() {
            BinOp::And => {
                conjuncts.extend([b.left(), b.right()]);
                continue;
            }
            BinOp::Lt | BinOp::LtEq => (b.left(), b.right()),
            BinOp::Gt | BinOp::GtEq => (b.right(), b.left()),
            _ => continue,
        };
        // lower: x + a, upper: y + b, so x <= y + (b - a).
        let (Some((x, a)), Some((y, b))) = (shifted_column(lower), shifted_column(upper)) else {
            continue;
        };
        let ((x_side, x_column, x_input), (y_side, y_column, y_input)) = (side_of(x), side_of(y));
        if x_side == y_side {
            continue;
        }
        // y's side must be bounded by time too: a row let go of must not
        // be retracted later (a table's rows could be).
        let (Some(d), Some(d_y)) = (
            bound(graph, x_input, x_column, relation_bound),
            bound(graph, y_input, y_column, relation_bound),
        ) else {
            continue;
        };
        let Some(slack_us) = b.checked_sub(a).and_then(|c| c.checked_add(d)) else {
            continue;
        };
        let slack_us = slack_us.max(d_y);
        let soonest = expire[y_side].is_none_or(|e: KeyClose| slack_us < e.slack_us);
        if soonest {
            expire[y_side] = Some(KeyClose {
                key: y_column,
                slack_us,
            });
        }
    }
    expire
}

/// `column`, `column + k` or `column - k` (a constant interval): the
/// column and the signed shift in microseconds.
fn shifted_column(expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, i64)> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some((c.index(), 0));
    }
    let b = expr.downcast_ref::<BinaryExpr>()?;
    let k = interval_micros(b.right())?;
    let (column, shift) = shifted_column(b.left())?;
    match b.op() {
        BinOp::Plus => Some((column, shift.checked_add(k)?)),
        BinOp::Minus => Some((column, shift.checked_sub(k)?)),
        _ => None,
    }
}

/// A session's end bounds what can still change it: an event at time `t`
/// reaches only sessions ending after `t`. When every event time is below
/// the session time plus `d`, a session ending at `e` is final once the
/// frontier reaches `e + d - 1`, and so is every row under it.
fn session_slack(
    graph: &Graph,
    time: &Arc<dyn PhysicalExpr>,
    input: usize,
    relation_bound: RelationBound<'_>,
) -> Option<i64> {
    expr_bound(graph, time, input, relation_bound)?.checked_sub(1)
}

/// [`bound`] for an expression over the rows of `input`.
fn expr_bound(
    graph: &Graph,
    expr: &Arc<dyn PhysicalExpr>,
    input: usize,
    relation_bound: RelationBound<'_>,
) -> Option<i64> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return bound(graph, input, c.index(), relation_bound);
    }
    if let Some(c) = expr.downcast_ref::<CastExpr>() {
        // Between zones, and to a unit at least as fine, the instant stays;
        // a coarser unit truncates, which the bound does not follow.
        let from = c.expr().data_type(&graph.schema_of(input)).ok()?;
        return match (from, c.cast_type()) {
            (DataType::Timestamp(from, _), DataType::Timestamp(to, _))
                if fineness(to) >= fineness(&from) =>
            {
                expr_bound(graph, c.expr(), input, relation_bound)
            }
            _ => None,
        };
    }
    if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
        // x + k or x - k: the bound moves the other way.
        let k = interval_micros(b.right())?;
        let inner = expr_bound(graph, b.left(), input, relation_bound)?;
        return match b.op() {
            BinOp::Plus => inner.checked_sub(k),
            BinOp::Minus => inner.checked_add(k),
            _ => None,
        };
    }
    if let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>() {
        // date_bin(stride, x [, origin]) <= x < date_bin(...) + stride.
        if f.name() == "date_bin" && f.args().len() >= 2 {
            let stride = interval_micros(&f.args()[0])?;
            let inner = expr_bound(graph, &f.args()[1], input, relation_bound)?;
            return inner.checked_add(stride);
        }
    }
    None
}

fn fineness(unit: &TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

/// A constant interval of fixed length, in microseconds.
fn interval_micros(expr: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    fixed_interval_micros(expr.downcast_ref::<Literal>()?.value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::{col, CastExpr};

    use crate::dataflow::operator::Project;

    /// `Source(ts µs) → Project(expr)`: the bound of the projected column.
    fn bound_through(cast_to: DataType) -> Option<i64> {
        let unit = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![Field::new("ts", unit, true)]));
        let mut graph = Graph::default();
        let source = graph.add(
            NodeKind::Source {
                relation: "s".into(),
            },
            vec![],
            Arc::clone(&schema),
        );
        let cast: Arc<dyn PhysicalExpr> = Arc::new(CastExpr::new(
            col("ts", &schema).unwrap(),
            cast_to.clone(),
            None,
        ));
        let out = Arc::new(Schema::new(vec![Field::new("t", cast_to, true)]));
        let project = graph.add(
            NodeKind::Project(Project::new(vec![cast], Arc::clone(&out))),
            vec![source],
            out,
        );
        bound(&graph, project, 0, &|r, c| {
            (r == "s" && c == 0).then_some(1)
        })
    }

    #[test]
    fn casts_are_followed_only_when_they_keep_the_instant() {
        let ns = DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()));
        assert_eq!(bound_through(ns), Some(1));
        let seconds = DataType::Timestamp(TimeUnit::Second, None);
        assert_eq!(bound_through(seconds), None);
        assert_eq!(bound_through(DataType::Int64), None);
    }
}
