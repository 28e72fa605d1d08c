//! Lowers a DataFusion `LogicalPlan` (analyzed and optimized) into a
//! dataflow [`Graph`]. Each plan node becomes one operator whose output
//! columns are exactly the plan node's schema; stateful operators get an
//! exchange in front, keyed the way they keep state.
//!
//! What cannot be maintained incrementally is refused here, at CREATE,
//! with 0A000 naming the construct: a plan that would need to be recomputed
//! from scratch is not a view EddyDB can keep fresh.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, JoinType, NullEquality};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{
    Expr, ExprSchemable, FetchType, LogicalPlan, Operator as BinOp, SkipType, SortExpr, Volatility,
};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::batch::nullable_schema;
use super::expr::fixed_interval_micros;
use super::graph::{Graph, NodeKind};
use super::operator::{
    AggCall, AggFunc, AggregateSpec, Direct, Filter, Frame, JoinKind, JoinSpec, OverSpec, Project,
    SessionBound, SessionSpec, SortKey, TemporalSpec, TopNSpec, Union, Values,
};
use crate::error::{Error, Result};

/// A planned view: its graph and the output columns forming a key.
#[derive(Debug)]
pub struct Planned {
    pub graph: Graph,
    /// Output columns that identify a row (the GROUP BY columns of an
    /// aggregate view); empty when none are known.
    pub key_columns: Vec<usize>,
    /// Relations read, in the order their source nodes appear.
    pub relations: Vec<String>,
}

/// Checks `plan` (as DataFusion's SQL planner produced it, before
/// optimization folds `now()` into a constant) for what a view cannot hold.
pub fn check_maintainable(plan: &LogicalPlan) -> Result<()> {
    let mut problem: Option<Error> = None;
    plan.apply(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Some(p) = expression_problem(e) {
                    problem = Some(p);
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if problem.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    match problem {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

fn expression_problem(expr: &Expr) -> Option<Error> {
    match expr {
        Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable => {
            Some(Error::unsupported(
                format!("function {}() in a materialized view", f.name()),
                format!(
                    "{}() can return a different result each time it is called, so a view \
                     using it could not be kept up to date incrementally. Compute the value \
                     when querying the view instead; to keep only recent rows, write \
                     WHERE t > now() - INTERVAL '5 minutes'.",
                    f.name()
                ),
            ))
        }
        Expr::Placeholder(p) => Some(Error::unsupported(
            format!("parameter {} in a materialized view", p.id),
            "A view is defined once; write the value into its query.",
        )),
        _ => None,
    }
}

/// Lowers an optimized plan into a graph.
pub fn plan_graph(plan: &LogicalPlan) -> Result<Planned> {
    let mut lowering = Lowering {
        graph: Graph::default(),
        relations: Vec::new(),
        trailing: 0,
    };
    let (_, key_columns) = lowering.lower(plan)?;
    // A trailing range anywhere but as a condition of its own was not
    // lowered: it would be evaluated once, at CREATE.
    if trailing_calls(plan)? != lowering.trailing {
        return Err(refuse(
            "now() outside a WHERE condition t > now() - INTERVAL '…'",
            "A view keeps rows of a trailing range only through a condition of its own, \
             ANDed with the others: WHERE t > now() - INTERVAL '5 minutes' AND ….",
        ));
    }
    Ok(Planned {
        graph: lowering.graph,
        key_columns: key_columns.unwrap_or_default(),
        relations: lowering.relations,
    })
}

struct Lowering {
    graph: Graph,
    relations: Vec<String>,
    /// Trailing-range conditions lowered to temporal filters.
    trailing: usize,
}

/// A lowered node and, when known, the output columns that form a key.
type Lowered = (usize, Option<Vec<usize>>);

fn schema_of(plan: &LogicalPlan) -> SchemaRef {
    nullable_schema(plan.schema().as_arrow())
}

fn physical(expr: &Expr, input: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(create_physical_expr(
        expr,
        input,
        &ExecutionProps::new(),
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )?)
}

fn physical_all(exprs: &[Expr], input: &DFSchema) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
    exprs.iter().map(|e| physical(e, input)).collect()
}

fn refuse(construct: &str, hint: &str) -> Error {
    Error::unsupported(format!("{construct} in a materialized view"), hint)
}

impl Lowering {
    fn lower(&mut self, plan: &LogicalPlan) -> Result<Lowered> {
        match plan {
            LogicalPlan::TableScan(scan) => self.lower_scan(scan),
            LogicalPlan::Projection(p) => {
                let (input, key) = self.lower(&p.input)?;
                self.bound_array_aggs(input, &p.expr, p.input.schema());
                let exprs = physical_all(&p.expr, p.input.schema())?;
                let key = key.and_then(|key| projected_key(&key, &p.expr, p.input.schema()));
                let schema = schema_of(plan);
                let project = Project::new(exprs, Arc::clone(&schema));
                Ok((
                    self.graph
                        .add(NodeKind::Project(project), vec![input], schema),
                    key,
                ))
            }
            LogicalPlan::Filter(f) => {
                if let Some(ranked) = self.lower_ranked_filter(f)? {
                    return Ok(ranked);
                }
                let (input, key) = self.lower(&f.input)?;
                let node =
                    self.filters(input, std::slice::from_ref(&f.predicate), f.input.schema())?;
                Ok((node, key))
            }
            LogicalPlan::SubqueryAlias(a) => self.lower(&a.input),
            LogicalPlan::Union(u) => {
                let inputs = u
                    .inputs
                    .iter()
                    .map(|i| self.lower(i).map(|(n, _)| n))
                    .collect::<Result<Vec<_>>>()?;
                let schema = schema_of(plan);
                let union = Union::new(Arc::clone(&schema));
                Ok((self.graph.add(NodeKind::Union(union), inputs, schema), None))
            }
            LogicalPlan::Aggregate(a) => self.lower_aggregate(a, plan),
            LogicalPlan::Join(j) => self.lower_join(j, plan),
            LogicalPlan::Sort(s) => match s.fetch {
                Some(fetch) => self.lower_top_n(&s.expr, &s.input, 0, Some(fetch), plan),
                None => Err(refuse(
                    "ORDER BY without LIMIT",
                    "A view's rows have no order; sort when you query it (SELECT … FROM view \
                     ORDER BY …), or keep the first rows with ORDER BY … LIMIT n.",
                )),
            },
            LogicalPlan::Limit(l) => self.lower_limit(l, plan),
            LogicalPlan::Window(w) => match session_window(w)? {
                Some(session) => Ok((self.lower_session(w, session)?, None)),
                None if only_row_numbers(w) => Ok((self.lower_ranked(w, (1, None))?, None)),
                None => Ok((self.lower_over(w)?, None)),
            },
            LogicalPlan::Values(v) => self.lower_values(&v.values, plan),
            LogicalPlan::EmptyRelation(e) => {
                let rows = usize::from(e.produce_one_row);
                let schema = schema_of(plan);
                let options = RecordBatchOptions::new().with_row_count(Some(rows));
                let columns: Vec<ArrayRef> = schema
                    .fields()
                    .iter()
                    .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), rows))
                    .collect();
                let batch =
                    RecordBatch::try_new_with_options(Arc::clone(&schema), columns, &options)?;
                Ok((
                    self.graph
                        .add(NodeKind::Values(Values::new(batch)), vec![], schema),
                    None,
                ))
            }
            LogicalPlan::Distinct(_) => Err(refuse(
                "DISTINCT ON",
                "Use ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) with a filter rn = 1.",
            )),
            other => Err(refuse(
                &format!("{} (query plan node)", plan_node_name(other)),
                "Materialized views support SELECT with WHERE, JOIN, GROUP BY, HAVING, \
                 DISTINCT, UNION ALL, ORDER BY … LIMIT and ROW_NUMBER() filters.",
            )),
        }
    }

    fn lower_scan(&mut self, scan: &datafusion::logical_expr::TableScan) -> Result<Lowered> {
        if scan.fetch.is_some() {
            return Err(refuse(
                "LIMIT on a table scan",
                "Add an ORDER BY to the LIMIT.",
            ));
        }
        let full_schema = scan.source.schema();
        // A plain view is inlined: its query becomes part of this dataflow.
        let (mut node, mut key) = match scan.source.get_logical_plan() {
            Some(view_plan) => self.lower(&view_plan)?,
            None => {
                let relation = scan.table_name.table().to_string();
                self.relations.push(relation.clone());
                let schema = nullable_schema(&full_schema);
                (
                    self.graph
                        .add(NodeKind::Source { relation }, vec![], schema),
                    None,
                )
            }
        };
        let qualified = DFSchema::try_from_qualified_schema(scan.table_name.clone(), &full_schema)?;
        node = self.filters(node, &scan.filters, &qualified)?;
        let identity = |p: &Vec<usize>| p.iter().copied().eq(0..full_schema.fields().len());
        if let Some(projection) = scan.projection.as_ref().filter(|p| !identity(p)) {
            let exprs = projection
                .iter()
                .map(|i| {
                    let (q, f) = qualified.qualified_field(*i);
                    physical(
                        &Expr::Column(datafusion::common::Column::new(q.cloned(), f.name())),
                        &qualified,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let schema = nullable_schema(scan.projected_schema.as_arrow());
            key = key.and_then(|k| {
                k.iter()
                    .map(|c| projection.iter().position(|p| p == c))
                    .collect()
            });
            node = self.graph.add(
                NodeKind::Project(Project::new(exprs, Arc::clone(&schema))),
                vec![node],
                schema,
            );
        }
        Ok((node, key))
    }

    /// The conditions `predicates` (ANDed) over `input`: one Filter for the
    /// plain ones, then a temporal filter per trailing range (see
    /// [`crate::sql::trailing`]), behind an exchange on the whole row so a
    /// row's retraction meets the worker holding it.
    fn filters(&mut self, input: usize, predicates: &[Expr], schema: &DFSchema) -> Result<usize> {
        let mut plain = Vec::new();
        let mut trailing = Vec::new();
        for conjunct in predicates
            .iter()
            .flat_map(datafusion::logical_expr::utils::split_conjunction)
        {
            match conjunct {
                Expr::ScalarFunction(f) if f.name() == crate::sql::trailing::TRAILING => {
                    trailing.push(f)
                }
                other => plain.push(other.clone()),
            }
        }
        let mut node = input;
        if let Some(predicate) = datafusion::logical_expr::utils::conjunction(plain) {
            let predicate = physical(&predicate, schema)?;
            let out = self.graph.schema_of(node);
            node = self
                .graph
                .add(NodeKind::Filter(Filter::new(predicate)), vec![node], out);
        }
        for call in trailing {
            let [time, range, inclusive] = call.args.as_slice() else {
                return Err(Error::Internal(
                    "eddy_trailing without its 3 arguments".into(),
                ));
            };
            let time_type = time.get_type(schema)?;
            if !matches!(time_type, DataType::Timestamp(_, _) | DataType::Date32) {
                return Err(Error::DatatypeMismatch(format!(
                    "a trailing range compares a time with now(), not {time_type}"
                )));
            }
            let range_us = match strip_alias(range) {
                Expr::Literal(value, _) => fixed_interval_micros(value),
                _ => None,
            };
            let Some(range_us) = range_us else {
                return Err(refuse(
                    "a trailing range that is not a fixed interval",
                    "Write WHERE t > now() - INTERVAL '5 minutes' with a constant of days \
                     or less.",
                ));
            };
            let inclusive = matches!(
                strip_alias(inclusive),
                Expr::Literal(ScalarValue::Boolean(Some(true)), _)
            );
            let out = self.graph.schema_of(node);
            let keys = (0..out.fields().len())
                .map(|i| {
                    Arc::new(datafusion::physical_expr::expressions::Column::new(
                        out.field(i).name(),
                        i,
                    )) as Arc<dyn PhysicalExpr>
                })
                .collect();
            let exchanged = self.exchange(node, keys);
            let spec = TemporalSpec {
                time: physical(time, schema)?,
                range_us,
                inclusive,
                schema: Arc::clone(&out),
            };
            node = self
                .graph
                .add(NodeKind::Temporal(spec), vec![exchanged], out);
            self.trailing += 1;
        }
        Ok(node)
    }

    /// When a projection reads an ordered `array_agg` of the aggregate
    /// `node` only through slices with constant positions
    /// (`(array_agg(x ORDER BY t DESC))[1:5]`), tells the call how
    /// many of its first values are read, so that over an append-only
    /// input it keeps no more.
    fn bound_array_aggs(&mut self, node: usize, exprs: &[Expr], input: &DFSchema) {
        let NodeKind::Aggregate(spec) = &mut self.graph.nodes[node].kind else {
            return;
        };
        let groups = spec.group_exprs.len();
        for (i, call) in spec.calls.iter_mut().enumerate() {
            if call.func != AggFunc::ArrayAgg || call.order.is_empty() || call.distinct {
                continue;
            }
            let column = Column::from(input.qualified_field(groups + i));
            call.keep = prefix_read(exprs, &column);
        }
    }

    fn exchange(&mut self, input: usize, keys: Vec<Arc<dyn PhysicalExpr>>) -> usize {
        let schema = self.graph.schema_of(input);
        self.graph
            .add(NodeKind::Exchange { keys }, vec![input], schema)
    }

    fn lower_aggregate(
        &mut self,
        a: &datafusion::logical_expr::Aggregate,
        plan: &LogicalPlan,
    ) -> Result<Lowered> {
        if a.group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Err(refuse(
                "GROUPING SETS, CUBE and ROLLUP",
                "Create one view per grouping and combine them with UNION ALL.",
            ));
        }
        let (input, _) = self.lower(&a.input)?;
        let group_exprs = physical_all(&a.group_expr, a.input.schema())?;
        let calls = a
            .aggr_expr
            .iter()
            .map(|e| agg_call(e, a.input.schema()))
            .collect::<Result<Vec<_>>>()?;
        let exchanged = self.exchange(input, group_exprs.clone());
        let schema = schema_of(plan);
        let spec = AggregateSpec {
            group_exprs,
            calls,
            output_schema: Arc::clone(&schema),
            close: None,
            append_only: false,
        };
        let node = self
            .graph
            .add(NodeKind::Aggregate(spec), vec![exchanged], schema);
        Ok((node, Some((0..a.group_expr.len()).collect())))
    }

    fn lower_join(
        &mut self,
        j: &datafusion::logical_expr::Join,
        plan: &LogicalPlan,
    ) -> Result<Lowered> {
        let kind = match j.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            other => {
                return Err(refuse(
                    &format!("{other} join (from IN, EXISTS or a subquery)"),
                    "Write the subquery as a JOIN, e.g. JOIN (SELECT DISTINCT k FROM t) s ON …",
                ))
            }
        };
        if [&j.left, &j.right]
            .iter()
            .any(|input| looks_up_plain_view(input))
        {
            return Err(refuse(
                "FOR SYSTEM_TIME AS OF PROCTIME() on a plain view",
                "Look up a table, or a materialized view: a plain view is a query, with no \
                 rows of its own to look up.",
            ));
        }
        if looks_up(&j.left) {
            return Err(refuse(
                "FOR SYSTEM_TIME AS OF PROCTIME() on the left input of a join",
                "The looked-up table goes on the right: FROM stream s [LEFT] JOIN t FOR \
                 SYSTEM_TIME AS OF PROCTIME() AS c ON s.k = c.k.",
            ));
        }
        let lookup = looks_up(&j.right);
        if lookup && !matches!(kind, JoinKind::Inner | JoinKind::Left) {
            return Err(refuse(
                &format!("a {} lookup join", kind.name()),
                "A lookup join (FOR SYSTEM_TIME AS OF PROCTIME()) is an inner or LEFT join: \
                 each event looks up the table once; use a regular join for the others.",
            ));
        }
        if lookup && j.on.is_empty() {
            return Err(refuse(
                "a lookup join without an equality on the looked-up table",
                "Join on the table's key: … JOIN t FOR SYSTEM_TIME AS OF PROCTIME() AS c \
                 ON s.k = c.k.",
            ));
        }
        let (left, _) = self.lower(&j.left)?;
        let (right, _) = self.lower(&j.right)?;
        let left_keys = physical_all(
            &j.on.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(),
            j.left.schema(),
        )?;
        let right_keys = physical_all(
            &j.on.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            j.right.schema(),
        )?;
        let filter = j
            .filter
            .as_ref()
            .map(|f| physical(f, j.schema.as_ref()))
            .transpose()?;
        let left_x = self.exchange(left, left_keys.clone());
        let right_x = self.exchange(right, right_keys.clone());
        let schema = schema_of(plan);
        let spec = JoinSpec {
            kind,
            left_keys,
            right_keys,
            filter,
            null_equals_null: j.null_equality == NullEquality::NullEqualsNull,
            left_schema: self.graph.schema_of(left),
            right_schema: self.graph.schema_of(right),
            output_schema: Arc::clone(&schema),
            close: None,
            expire: [None, None],
            lookup,
        };
        Ok((
            self.graph
                .add(NodeKind::Join(spec), vec![left_x, right_x], schema),
            None,
        ))
    }

    fn lower_limit(
        &mut self,
        l: &datafusion::logical_expr::Limit,
        plan: &LogicalPlan,
    ) -> Result<Lowered> {
        let skip = match l.get_skip_type()? {
            SkipType::Literal(n) => n,
            SkipType::UnsupportedExpr => {
                return Err(refuse("a computed OFFSET", "Use a constant."))
            }
        };
        let fetch = match l.get_fetch_type()? {
            FetchType::Literal(n) => n,
            FetchType::UnsupportedExpr => {
                return Err(refuse("a computed LIMIT", "Use a constant."))
            }
        };
        match l.input.as_ref() {
            LogicalPlan::Sort(s) => self.lower_top_n(&s.expr, &s.input, skip, fetch, plan),
            _ => Err(refuse(
                "LIMIT without ORDER BY",
                "Which rows a bare LIMIT keeps is arbitrary; add ORDER BY so the view \
                 keeps well-defined rows.",
            )),
        }
    }

    fn lower_top_n(
        &mut self,
        order: &[SortExpr],
        input_plan: &LogicalPlan,
        offset: usize,
        limit: Option<usize>,
        plan: &LogicalPlan,
    ) -> Result<Lowered> {
        let (input, key) = self.lower(input_plan)?;
        let order = sort_keys(order, input_plan.schema())?;
        let exchanged = self.exchange(input, Vec::new());
        let schema = schema_of(plan);
        let spec = TopNSpec {
            partition_exprs: Vec::new(),
            order,
            offset,
            limit,
            row_number: false,
            output_schema: Arc::clone(&schema),
            close: None,
        };
        Ok((
            self.graph
                .add(NodeKind::TopN(spec), vec![exchanged], schema),
            key,
        ))
    }

    /// A filter over a ROW_NUMBER() window, directly or through the
    /// projection and alias of a subquery (`SELECT … FROM (SELECT …,
    /// ROW_NUMBER() OVER (…) AS rn FROM t) r WHERE rn <= 3`): the bound on
    /// the row number becomes the top-N's limit. `None` if `f` is not one.
    fn lower_ranked_filter(
        &mut self,
        f: &datafusion::logical_expr::Filter,
    ) -> Result<Option<Lowered>> {
        let (projection, window) = match strip_aliases(&f.input) {
            LogicalPlan::Window(w) => (None, w),
            LogicalPlan::Projection(p) => match strip_aliases(&p.input) {
                LogicalPlan::Window(w) => (Some(p), w),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        if session_window(window)?.is_some() {
            return Ok(None);
        }
        let window_rn = window.schema.field(window.schema.fields().len() - 1).name();
        let rn = match projection {
            None => window_rn.clone(),
            Some(p) => match p.expr.iter().position(|e| is_column_named(e, window_rn)) {
                Some(j) => p.schema.field(j).name().clone(),
                None => return Ok(None),
            },
        };
        let (range, rest) = split_row_number_bounds(&f.predicate, &rn)?;
        let mut node = self.lower_ranked(window, range)?;
        if let Some(p) = projection {
            let exprs = physical_all(&p.expr, p.input.schema())?;
            let schema = nullable_schema(p.schema.as_arrow());
            let project = Project::new(exprs, Arc::clone(&schema));
            node = self
                .graph
                .add(NodeKind::Project(project), vec![node], schema);
        }
        node = self.filters(node, &rest, f.input.schema())?;
        Ok(Some((node, None)))
    }

    /// `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` keeping the rows at
    /// positions `range` of each partition.
    fn lower_ranked(
        &mut self,
        w: &datafusion::logical_expr::Window,
        range: RowRange,
    ) -> Result<usize> {
        let not_row_number = || {
            refuse(
                "window functions other than ROW_NUMBER()",
                "Use ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) with a filter such as rn <= 10 \
                 for top-N per group.",
            )
        };
        let [window_expr] = w.window_expr.as_slice() else {
            return Err(not_row_number());
        };
        let Expr::WindowFunction(wf) = strip_alias(window_expr) else {
            return Err(not_row_number());
        };
        let WindowFunction { fun, params } = wf.as_ref();
        if fun.name() != "row_number" {
            return Err(not_row_number());
        }
        let (input, _) = self.lower(&w.input)?;
        let partition_exprs = physical_all(&params.partition_by, w.input.schema())?;
        let order = sort_keys(&params.order_by, w.input.schema())?;
        let exchanged = self.exchange(input, partition_exprs.clone());
        let schema = nullable_schema(w.schema.as_arrow());
        let (first, last) = range;
        let spec = TopNSpec {
            partition_exprs,
            order,
            offset: (first - 1) as usize,
            limit: last.map(|l| (l + 1 - first).max(0) as usize),
            row_number: true,
            output_schema: Arc::clone(&schema),
            close: None,
        };
        Ok(self
            .graph
            .add(NodeKind::TopN(spec), vec![exchanged], schema))
    }

    /// Window functions over a bounded frame of preceding rows (see
    /// `operator/over.rs`), all of one PARTITION BY and one ORDER BY.
    fn lower_over(&mut self, w: &datafusion::logical_expr::Window) -> Result<usize> {
        let input_schema = w.input.schema();
        let mut shared: Option<(&[Expr], &[SortExpr])> = None;
        let mut rows_back = 0usize;
        let mut range_back: Option<i64> = None;
        let mut functions = Vec::new();
        let mut direct = Vec::new();
        for expr in &w.window_expr {
            let Expr::WindowFunction(wf) = strip_alias(expr) else {
                return Err(Error::Internal(format!(
                    "window expression expected, got {expr}"
                )));
            };
            let WindowFunction { fun, params } = wf.as_ref();
            let name = fun.name().to_ascii_lowercase();
            match shared {
                None => shared = Some((&params.partition_by, &params.order_by)),
                Some((partition, order))
                    if partition == params.partition_by.as_slice()
                        && order == params.order_by.as_slice() => {}
                Some(_) => {
                    return Err(refuse(
                        "window functions with different PARTITION BY or ORDER BY in one SELECT",
                        "Give every OVER clause of a SELECT the same PARTITION BY and ORDER BY \
                         (frames may differ), or compute the others in a view of their own.",
                    ))
                }
            }
            if params.null_treatment
                == Some(datafusion::logical_expr::expr::NullTreatment::IgnoreNulls)
            {
                return Err(refuse(
                    &format!("{name}() IGNORE NULLS"),
                    "It may look back past any number of rows; filter the NULL rows out \
                     before the window instead.",
                ));
            }
            match params.order_by.as_slice() {
                [order] if order.asc && !order.nulls_first => {}
                _ => {
                    return Err(refuse(
                        &format!("{name}() OVER without one ascending ORDER BY (NULLS LAST)"),
                        "Order each partition by one column ascending, usually the event \
                         time: OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 5 PRECEDING \
                         AND 1 PRECEDING).",
                    ))
                }
            }
            let (rows, range) = frame_reach(&name, params)?;
            rows_back = rows_back.max(rows);
            if let Some(range) = range {
                range_back = Some(range_back.map_or(range, |r: i64| r.max(range)));
            }
            let order_type = params.order_by[0].expr.get_type(input_schema)?;
            direct.push(direct_form(&name, params, input_schema, &order_type)?);
            functions.push(datafusion::physical_planner::create_window_expr(
                expr,
                input_schema,
                &ExecutionProps::new(),
                &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
            )?);
        }
        let Some((partition_by, order_by)) = shared else {
            return Err(Error::Internal("window node without functions".into()));
        };
        let order_type = order_by[0].expr.get_type(input_schema)?;
        let orderable = order_type.is_integer()
            || matches!(
                order_type,
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
            );
        if !orderable {
            return Err(refuse(
                &format!("OVER (ORDER BY a column of type {order_type})"),
                "Order the partition by a timestamp, date or integer column.",
            ));
        }
        let (input, _) = self.lower(&w.input)?;
        let partition_exprs = physical_all(partition_by, input_schema)?;
        let order = physical(&order_by[0].expr, input_schema)?;
        let exchanged = self.exchange(input, partition_exprs.clone());
        let schema = nullable_schema(w.schema.as_arrow());
        let spec = OverSpec {
            partition_exprs,
            order,
            functions,
            direct,
            rows_back,
            range_back,
            input_schema: nullable_schema(input_schema.as_arrow()),
            output_schema: Arc::clone(&schema),
            close_slack_us: None,
        };
        Ok(self
            .graph
            .add(NodeKind::Over(spec), vec![exchanged], schema))
    }

    /// A `SESSION(…)` window: its bounds appended to every row.
    fn lower_session(
        &mut self,
        w: &datafusion::logical_expr::Window,
        session: SessionCall<'_>,
    ) -> Result<usize> {
        let (input, _) = self.lower(&w.input)?;
        let input_schema = w.input.schema();
        let time = physical(session.time, input_schema)?;
        let keys = physical_all(session.keys, input_schema)?;
        let exchanged = self.exchange(input, keys.clone());
        let schema = nullable_schema(w.schema.as_arrow());
        let spec = SessionSpec {
            keys,
            time,
            gap_us: session.gap_us,
            bounds: session.bounds,
            schema: Arc::clone(&schema),
            close_slack_us: None,
        };
        Ok(self
            .graph
            .add(NodeKind::Session(spec), vec![exchanged], schema))
    }

    fn lower_values(&mut self, values: &[Vec<Expr>], plan: &LogicalPlan) -> Result<Lowered> {
        let schema = schema_of(plan);
        let empty = DFSchema::empty();
        let one_row = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )?;
        let mut columns: Vec<Vec<ArrayRef>> = vec![Vec::new(); schema.fields().len()];
        for row in values {
            for (c, expr) in row.iter().enumerate() {
                let value = physical(expr, &empty)?.evaluate(&one_row)?.into_array(1)?;
                let value = datafusion::arrow::compute::cast(&value, schema.field(c).data_type())?;
                columns[c].push(value);
            }
        }
        let columns = columns
            .iter()
            .map(|parts| {
                let refs: Vec<&dyn datafusion::arrow::array::Array> =
                    parts.iter().map(|a| a.as_ref()).collect();
                datafusion::arrow::compute::concat(&refs)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok((
            self.graph
                .add(NodeKind::Values(Values::new(batch)), vec![], schema),
            None,
        ))
    }
}

/// How many trailing-range calls `plan` holds, anywhere.
fn trailing_calls(plan: &LogicalPlan) -> Result<usize> {
    let mut calls = 0;
    plan.apply(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if matches!(e, Expr::ScalarFunction(f) if f.name() == crate::sql::trailing::TRAILING)
                {
                    calls += 1;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(calls)
}

/// Whether every function of `w` is `ROW_NUMBER()` (a ranking, lowered to
/// top-N).
fn only_row_numbers(w: &datafusion::logical_expr::Window) -> bool {
    w.window_expr.iter().all(
        |e| matches!(strip_alias(e), Expr::WindowFunction(wf) if wf.fun.name() == "row_number"),
    )
}

/// The direct form of a common window function (see `operator/over.rs`),
/// or `None` for DataFusion's window expression to compute it.
fn direct_form(
    name: &str,
    params: &datafusion::logical_expr::expr::WindowFunctionParams,
    input: &DFSchema,
    order_type: &DataType,
) -> Result<Option<Direct>> {
    use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
    if params.filter.is_some() || params.distinct || params.null_treatment.is_some() {
        return Ok(None);
    }
    let as_count = |v: &ScalarValue| match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(n))) if n >= 0 => Some(n),
        _ => None,
    };
    let timed = matches!(order_type, DataType::Timestamp(..));
    let units = |v: &ScalarValue| match timed {
        true => fixed_interval_micros(v),
        false if order_type.is_integer() => as_count(v),
        false => None,
    };
    let frame = || -> Option<Frame> {
        let f = &params.window_frame;
        let bound = |b: &WindowFrameBound| match b {
            WindowFrameBound::CurrentRow => Some(None),
            WindowFrameBound::Preceding(v) if !v.is_null() => Some(Some(v.clone())),
            _ => None,
        };
        let (start, end) = (bound(&f.start_bound)?, bound(&f.end_bound)?);
        match f.units {
            WindowFrameUnits::Rows => {
                let n = |v: Option<ScalarValue>| v.map_or(Some(0), |v| as_count(&v));
                Some(Frame::Rows {
                    start: usize::try_from(n(start)?).ok()?,
                    end: usize::try_from(n(end)?).ok()?,
                })
            }
            WindowFrameUnits::Range => Some(Frame::Range {
                start: start.map_or(Some(0), |v| units(&v))?,
                end: match end {
                    None => None,
                    Some(v) => Some(units(&v)?),
                },
            }),
            WindowFrameUnits::Groups => None,
        }
    };
    let arg = |i: usize| physical(&params.args[i], input);
    Ok(match (name, params.args.as_slice()) {
        ("lag", [_]) => Some(Direct::Lag {
            arg: arg(0)?,
            offset: 1,
        }),
        ("lag", [_, Expr::Literal(offset, _)])
        | ("lag", [_, Expr::Literal(offset, _), Expr::Literal(ScalarValue::Null, _)]) => {
            match as_count(offset) {
                Some(n) => Some(Direct::Lag {
                    arg: arg(0)?,
                    offset: n as usize,
                }),
                None => None,
            }
        }
        ("count", []) => frame().map(|frame| Direct::Count { arg: None, frame }),
        ("count", [Expr::Literal(v, _)]) if !v.is_null() => {
            frame().map(|frame| Direct::Count { arg: None, frame })
        }
        ("count", [_]) => match frame() {
            Some(frame) => Some(Direct::Count {
                arg: Some(arg(0)?),
                frame,
            }),
            None => None,
        },
        ("array_agg" | "first_value" | "last_value", [_]) => match frame() {
            Some(frame) => {
                let arg = arg(0)?;
                Some(match name {
                    "array_agg" => Direct::ArrayAgg { arg, frame },
                    "first_value" => Direct::FirstValue { arg, frame },
                    _ => Direct::LastValue { arg, frame },
                })
            }
            None => None,
        },
        _ => None,
    })
}

/// How far back a window function reaches: rows, and order units (µs for
/// times) of a RANGE frame. Frames reaching forward or to the partition's
/// start are refused: their results would change with every later row, or
/// need every earlier one.
fn frame_reach(
    name: &str,
    params: &datafusion::logical_expr::expr::WindowFunctionParams,
) -> Result<(usize, Option<i64>)> {
    use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
    let bounded_hint = "Give the frame explicitly and bounded: ROWS BETWEEN 5 PRECEDING AND 1 \
                        PRECEDING, or RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW; \
                        for totals over all of a key's rows, GROUP BY the key in a view.";
    match name {
        "lag" => {
            let offset = match params.args.get(1) {
                None => 1,
                Some(Expr::Literal(v, _)) => v
                    .clone()
                    .cast_to(&DataType::Int64)
                    .ok()
                    .and_then(|v| match v {
                        ScalarValue::Int64(Some(n)) if n >= 0 => Some(n as usize),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        refuse("lag() with a negative offset", "Use lag(x, n) with n >= 0.")
                    })?,
                Some(_) => {
                    return Err(refuse(
                        "lag() with a computed offset",
                        "Give the offset as a constant: lag(x, 2).",
                    ))
                }
            };
            return Ok((offset, None));
        }
        "lead" => {
            return Err(refuse(
                "lead()",
                "A row's output would change with every later row; use lag() on the later row.",
            ))
        }
        "count" | "sum" | "avg" | "mean" | "min" | "max" | "array_agg" | "first_value"
        | "last_value" | "nth_value" => {}
        "row_number" | "rank" | "dense_rank" | "percent_rank" | "cume_dist" | "ntile" => {
            return Err(refuse(
                &format!("{name}() OVER"),
                "Rank in a view of its own: ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) with \
                 a filter rn <= N; count earlier rows with count(*) over a bounded frame.",
            ))
        }
        other => {
            return Err(refuse(
                &format!("{other}() OVER"),
                "Window functions over preceding rows in a view are lag, count, sum, avg, min, \
                 max, array_agg, first_value, last_value and nth_value.",
            ))
        }
    }
    let frame = &params.window_frame;
    let reach = |bound: &WindowFrameBound| -> Result<Option<ScalarValue>> {
        match bound {
            WindowFrameBound::CurrentRow => Ok(None),
            WindowFrameBound::Preceding(v) if !v.is_null() => Ok(Some(v.clone())),
            WindowFrameBound::Preceding(_) => Err(refuse(
                &format!("{name}() over a frame from UNBOUNDED PRECEDING"),
                bounded_hint,
            )),
            WindowFrameBound::Following(_) => Err(refuse(
                &format!("{name}() over a frame reaching FOLLOWING rows"),
                bounded_hint,
            )),
        }
    };
    reach(&frame.end_bound)?;
    let start = reach(&frame.start_bound)?;
    match frame.units {
        WindowFrameUnits::Rows => {
            let n = match start {
                None => 0,
                Some(v) => match v.cast_to(&DataType::Int64)? {
                    ScalarValue::Int64(Some(n)) if n >= 0 => n as usize,
                    _ => return Err(refuse("a ROWS frame of a negative length", bounded_hint)),
                },
            };
            Ok((n, None))
        }
        WindowFrameUnits::Range => {
            let units = match start {
                None => 0,
                Some(v) => match fixed_interval_micros(&v) {
                    Some(us) => us,
                    None => match v.cast_to(&DataType::Int64) {
                        Ok(ScalarValue::Int64(Some(n))) if n >= 0 => n,
                        _ => {
                            return Err(refuse(
                                &format!("a RANGE frame of {v}"),
                                "Give the range as a fixed interval (no months) or, over an \
                                 integer order, a number.",
                            ))
                        }
                    },
                },
            };
            Ok((0, Some(units)))
        }
        WindowFrameUnits::Groups => Err(refuse("GROUPS frames", bounded_hint)),
    }
}

/// The session window functions of one `SESSION(…)` call.
struct SessionCall<'a> {
    bounds: Vec<SessionBound>,
    time: &'a Expr,
    gap_us: i64,
    keys: &'a [Expr],
}

/// `Some` when `w` computes session bounds: all its functions must then be
/// session functions of one call (same time, gap and keys, no ORDER BY).
fn session_window(w: &datafusion::logical_expr::Window) -> Result<Option<SessionCall<'_>>> {
    let mut call: Option<SessionCall<'_>> = None;
    let mut others = false;
    let mixed = || {
        refuse(
            "session window functions mixed with other window functions",
            "Compute the session bounds with SESSION(relation, time_column, gap, key_column) \
             in FROM, and rank its rows in a query of their own.",
        )
    };
    for expr in &w.window_expr {
        let Expr::WindowFunction(wf) = strip_alias(expr) else {
            others = true;
            continue;
        };
        let WindowFunction { fun, params } = wf.as_ref();
        let Some(bound) = crate::sql::sessions::bound_of(fun.name()) else {
            others = true;
            continue;
        };
        let (time, gap_us) = match params.args.as_slice() {
            [time, Expr::Literal(ScalarValue::Int64(Some(gap)), _)]
                if *gap > 0 && params.order_by.is_empty() =>
            {
                (time, *gap)
            }
            _ => {
                return Err(refuse(
                    &format!("{}() called directly", fun.name()),
                    "Write SESSION(relation, time_column, gap, key_column) in FROM.",
                ))
            }
        };
        match &mut call {
            None => {
                call = Some(SessionCall {
                    bounds: vec![bound],
                    time,
                    gap_us,
                    keys: &params.partition_by,
                })
            }
            Some(c) if c.time == time && c.gap_us == gap_us && c.keys == params.partition_by => {
                c.bounds.push(bound)
            }
            Some(_) => return Err(mixed()),
        }
    }
    match call {
        Some(_) if others => Err(mixed()),
        call => Ok(call),
    }
}

/// Whether `plan` reads a table named through `FOR SYSTEM_TIME AS OF
/// PROCTIME()` ([`crate::sql::lookup`]), with only projections, filters
/// and aliases on top.
fn looks_up(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => {
            scan.table_name.schema() == Some(crate::sql::lookup::SCHEMA)
        }
        LogicalPlan::Projection(p) => looks_up(&p.input),
        LogicalPlan::Filter(f) => looks_up(&f.input),
        LogicalPlan::SubqueryAlias(a) => looks_up(&a.input),
        _ => false,
    }
}

/// Whether `plan` is a plain view named through `FOR SYSTEM_TIME AS OF
/// PROCTIME()`: DataFusion inlines it under an alias in that schema.
fn looks_up_plain_view(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::SubqueryAlias(a) => {
            a.alias.schema() == Some(crate::sql::lookup::SCHEMA) || looks_up_plain_view(&a.input)
        }
        LogicalPlan::TableScan(scan) => {
            scan.table_name.schema() == Some(crate::sql::lookup::SCHEMA)
                && scan.source.get_logical_plan().is_some()
        }
        LogicalPlan::Projection(p) => looks_up_plain_view(&p.input),
        LogicalPlan::Filter(f) => looks_up_plain_view(&f.input),
        _ => false,
    }
}

fn strip_alias(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

fn strip_aliases(plan: &LogicalPlan) -> &LogicalPlan {
    match plan {
        LogicalPlan::SubqueryAlias(a) => strip_aliases(&a.input),
        other => other,
    }
}

/// `name`, or `name` under casts and aliases.
fn is_column_named(expr: &Expr, name: &str) -> bool {
    match strip_alias(expr) {
        Expr::Column(c) => c.name == name,
        Expr::Cast(c) => is_column_named(&c.expr, name),
        Expr::TryCast(c) => is_column_named(&c.expr, name),
        _ => false,
    }
}

fn plan_node_name(plan: &LogicalPlan) -> String {
    plan.display()
        .to_string()
        .split(':')
        .next()
        .unwrap_or("plan")
        .to_string()
}

/// The key columns of a projection's output, if every input key column
/// is passed through as a plain column.
fn projected_key(key: &[usize], exprs: &[Expr], input: &DFSchema) -> Option<Vec<usize>> {
    key.iter()
        .map(|k| {
            let (q, f) = input.qualified_field(*k);
            exprs.iter().position(|e| match strip_alias(e) {
                Expr::Column(c) => {
                    c.name == *f.name() && (c.relation.is_none() || c.relation.as_ref() == q)
                }
                _ => false,
            })
        })
        .collect()
}

fn sort_keys(order: &[SortExpr], input: &DFSchema) -> Result<Vec<SortKey>> {
    order
        .iter()
        .map(|s| {
            Ok(SortKey {
                expr: physical(&s.expr, input)?,
                descending: !s.asc,
                nulls_first: s.nulls_first,
            })
        })
        .collect()
}

fn agg_call(expr: &Expr, input: &DFSchema) -> Result<AggCall> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = strip_alias(expr) else {
        return Err(Error::Internal(format!(
            "aggregate expression expected, got {expr}"
        )));
    };
    let name = func.name().to_ascii_lowercase();
    if let Some(user) = crate::function::aggregate::user_aggregate_of(func) {
        if params.distinct || !params.order_by.is_empty() {
            return Err(refuse(
                &format!("DISTINCT or ORDER BY inside {name}()"),
                "A user aggregate sees each row once, in no order it can rely on.",
            ));
        }
        return Ok(AggCall {
            func: AggFunc::User,
            args: physical_all(&params.args, input)?,
            distinct: false,
            order: Vec::new(),
            user: Some(user),
            filter: params
                .filter
                .as_ref()
                .map(|f| physical(f, input))
                .transpose()?,
            keep: None,
        });
    }
    let mut distinct = params.distinct;
    let agg = match name.as_str() {
        "count" => AggFunc::Count,
        // Counted exactly: the distinct values are kept anyway, so that a
        // retraction can take one back.
        "approx_distinct" => {
            distinct = true;
            AggFunc::Count
        }
        "sum" => AggFunc::Sum,
        "avg" | "mean" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "bool_and" => AggFunc::BoolAnd,
        "bool_or" => AggFunc::BoolOr,
        "string_agg" => AggFunc::StringAgg,
        "array_agg" => AggFunc::ArrayAgg,
        "first_value" => AggFunc::FirstValue,
        "last_value" => AggFunc::LastValue,
        other => {
            return Err(refuse(
                &format!("aggregate function {other}()"),
                "Views support count, count(DISTINCT), approx_distinct, sum, avg, min, max, \
                 bool_and, bool_or, string_agg, array_agg, first_value and last_value (the \
                 last two with ORDER BY).",
            ))
        }
    };
    // Values are kept in ascending order of themselves unless the call
    // orders them by something else.
    let ascending_on_arg = params.order_by.len() == 1
        && params.order_by[0].asc
        && params.args.first() == Some(&params.order_by[0].expr);
    let order = if params.order_by.is_empty() || ascending_on_arg {
        Vec::new()
    } else {
        sort_keys(&params.order_by, input)?
    };
    let keeps_order = matches!(
        agg,
        AggFunc::ArrayAgg | AggFunc::StringAgg | AggFunc::FirstValue | AggFunc::LastValue
    );
    if !order.is_empty() && (!keeps_order || distinct) {
        return Err(refuse(
            &format!("ORDER BY inside {name}()"),
            "Only array_agg, string_agg, first_value and last_value keep an order (without \
             DISTINCT); other aggregates do not depend on one.",
        ));
    }
    if matches!(agg, AggFunc::FirstValue | AggFunc::LastValue) && params.order_by.is_empty() {
        return Err(refuse(
            &format!("{name}() without ORDER BY"),
            "Say which row is first or last: last_value(city ORDER BY ts).",
        ));
    }
    let args = match (agg, params.args.as_slice()) {
        // count(*) arrives as count(1): a constant is never NULL, so it counts rows.
        (AggFunc::Count, [Expr::Literal(v, _)]) if !v.is_null() => Vec::new(),
        _ => physical_all(&params.args, input)?,
    };
    Ok(AggCall {
        func: agg,
        args,
        distinct,
        order,
        user: None,
        filter: params
            .filter
            .as_ref()
            .map(|f| physical(f, input))
            .transpose()?,
        keep: None,
    })
}

/// How many first elements of the array `column` the expressions read,
/// when they read it only through `array_slice` with constant positive
/// positions; `None` when they read it any other way (or not at all).
/// (`array_agg(…)[n]` never gets here: DataFusion plans it as `nth_value`.)
fn prefix_read(exprs: &[Expr], column: &Column) -> Option<usize> {
    let mut read = 0usize;
    let mut whole = false;
    for expr in exprs {
        let _ = expr.apply(|e| {
            if let Expr::Column(c) = e {
                whole |= c == column;
                return Ok(TreeNodeRecursion::Continue);
            }
            let Expr::ScalarFunction(f) = e else {
                return Ok(TreeNodeRecursion::Continue);
            };
            let (name, args) = (f.func.name(), f.args.as_slice());
            let reads = |position: &Expr| match strip_alias(position) {
                Expr::Literal(v, _) => v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
                    ScalarValue::Int64(Some(n)) if n >= 1 => usize::try_from(n).ok(),
                    _ => None,
                }),
                _ => None,
            };
            let last = match (name, args) {
                ("array_slice", [array, from, to, rest @ ..]) if rest.len() <= 1 => {
                    let stride = rest.first().map_or(Some(1), reads);
                    matches!(strip_alias(array), Expr::Column(c) if c == column)
                        .then(|| reads(from).and(stride).and(reads(to)))
                        .flatten()
                }
                _ => None,
            };
            match last {
                Some(n) => {
                    read = read.max(n);
                    Ok(TreeNodeRecursion::Jump)
                }
                None => Ok(TreeNodeRecursion::Continue),
            }
        });
    }
    (!whole && read > 0).then_some(read)
}

/// Positions kept by a ROW_NUMBER filter: first (1-based) and last, inclusive.
type RowRange = (i64, Option<i64>);

/// Splits a filter over a ROW_NUMBER column into the position range it
/// keeps (1-based, inclusive; `None` = unbounded) and the other conjuncts.
fn split_row_number_bounds(filter: &Expr, rn: &str) -> Result<(RowRange, Vec<Expr>)> {
    let mut first = 1i64;
    let mut last: Option<i64> = None;
    let mut rest = Vec::new();
    for conjunct in datafusion::logical_expr::utils::split_conjunction(filter) {
        match row_number_bound(conjunct, rn) {
            Some((op, n)) => match op {
                BinOp::LtEq => last = Some(last.map_or(n, |l| l.min(n))),
                BinOp::Lt => last = Some(last.map_or(n - 1, |l| l.min(n - 1))),
                BinOp::GtEq => first = first.max(n),
                BinOp::Gt => first = first.max(n + 1),
                BinOp::Eq => {
                    first = first.max(n);
                    last = Some(last.map_or(n, |l| l.min(n)));
                }
                _ => rest.push(conjunct.clone()),
            },
            None => rest.push(conjunct.clone()),
        }
    }
    if last.is_none() {
        return Err(refuse(
            "ROW_NUMBER() without an upper bound",
            "Bound the row number, e.g. WHERE rn <= 10, so each group keeps a fixed number of rows.",
        ));
    }
    Ok(((first.max(1), last), rest))
}

/// `rn <op> n` (or `n <op> rn`, flipped) with `n` an integer literal.
fn row_number_bound(expr: &Expr, rn: &str) -> Option<(BinOp, i64)> {
    let Expr::BinaryExpr(b) = expr else {
        return None;
    };
    let literal = |e: &Expr| match strip_alias(e) {
        Expr::Literal(v, _) => v
            .cast_to(&datafusion::arrow::datatypes::DataType::Int64)
            .ok()
            .and_then(|v| match v {
                ScalarValue::Int64(Some(n)) => Some(n),
                _ => None,
            }),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(ScalarValue::Int64(Some(n)), _) => Some(*n),
            _ => None,
        },
        _ => None,
    };
    let is_rn = |e: &Expr| {
        matches!(strip_alias(e), Expr::Column(c) if c.name == rn)
            || matches!(strip_alias(e), Expr::Cast(c) if matches!(c.expr.as_ref(), Expr::Column(col) if col.name == rn))
    };
    if is_rn(&b.left) {
        return literal(&b.right).map(|n| (b.op, n));
    }
    if is_rn(&b.right) {
        let flipped = match b.op {
            BinOp::Lt => BinOp::Gt,
            BinOp::LtEq => BinOp::GtEq,
            BinOp::Gt => BinOp::Lt,
            BinOp::GtEq => BinOp::LtEq,
            op => op,
        };
        return literal(&b.left).map(|n| (flipped, n));
    }
    None
}
