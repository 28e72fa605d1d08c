//! CREATE [MATERIALIZED] VIEW, EXPLAIN of a view's dataflow, SHOW
//! MATERIALIZED VIEWS, and restoring views at start. A materialized view's
//! query is planned by DataFusion, lowered to a dataflow by
//! [`crate::dataflow::planner`], and handed to the catalog, which backfills
//! it and keeps it current.

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::sqlparser::ast::{CreateView, Query, Statement};

use super::{colnames, names, CommandTag, Output};
use crate::catalog::{Catalog, ViewEntry};
use crate::dataflow::frontier::mark_window_closes;
use crate::dataflow::planner::{check_maintainable, plan_graph};
use crate::engine::{MaterializedView, ViewDef};
use crate::error::{Error, Result};
use crate::query::QueryContext;

/// What a view is built from: its name, query and options.
struct ViewSpec {
    id: u64,
    name: String,
    query: Query,
    column_names: Vec<String>,
    materialized: bool,
    /// `EMIT ON WINDOW CLOSE`.
    emit_on_close: bool,
    /// Stored start positions of the view's stream readers (at restore).
    stream_starts: std::collections::BTreeMap<String, crate::source::reader::Offsets>,
}

impl ViewSpec {
    fn of(id: u64, name: String, create: CreateView) -> Result<ViewSpec> {
        let emit_on_close = emit_on_close(&create)?;
        if emit_on_close && !create.materialized {
            return Err(Error::unsupported(
                "EMIT ON WINDOW CLOSE on a plain view",
                "Only a materialized view keeps windows to close: CREATE MATERIALIZED VIEW … \
                 EMIT ON WINDOW CLOSE.",
            ));
        }
        Ok(ViewSpec {
            id,
            name,
            query: *create.query,
            column_names: create
                .columns
                .iter()
                .map(|c| names::normalize(&c.name))
                .collect(),
            materialized: create.materialized,
            emit_on_close,
            stream_starts: Default::default(),
        })
    }
}

/// The `WITH` option `EMIT ON WINDOW CLOSE` is read as (see
/// [`crate::sql::windows::strip_emit_clause`]); it may be written too.
pub(crate) const EMIT_OPTION: &str = "emit";

/// Whether a view asks for `EMIT ON WINDOW CLOSE`; other options are refused.
fn emit_on_close(create: &CreateView) -> Result<bool> {
    use datafusion::sql::sqlparser::ast::{CreateTableOptions, SqlOption};
    let options = match &create.options {
        CreateTableOptions::None => return Ok(false),
        CreateTableOptions::With(options) => options,
        other => {
            return Err(Error::unsupported(
                format!("view options {other}"),
                "A view takes no options; EMIT ON WINDOW CLOSE may follow its query.",
            ))
        }
    };
    let mut emit = false;
    for option in options {
        let value = match option {
            SqlOption::KeyValue { key, value } if key.value.eq_ignore_ascii_case(EMIT_OPTION) => {
                value.to_string().trim_matches('\'').to_ascii_lowercase()
            }
            other => {
                return Err(Error::InvalidParameter(format!(
                    "unrecognized view option \"{other}\" (a view knows only emit = 'on_window_close' or 'on_update')"
                )))
            }
        };
        emit = match value.as_str() {
            "on_window_close" => true,
            "on_update" => false,
            _ => {
                return Err(Error::InvalidParameter(format!(
                    "invalid value for view option \"emit\": {value} (expected on_window_close or on_update)"
                )))
            }
        };
    }
    Ok(emit)
}

pub async fn create_view(
    catalog: &Arc<Catalog>,
    query: &QueryContext,
    create: CreateView,
) -> Result<Output> {
    if create.or_replace || create.or_alter {
        return Err(Error::unsupported(
            "CREATE OR REPLACE VIEW",
            "DROP the view, then CREATE it again.",
        ));
    }
    let name = names::relation_name(&create.name)?;
    if create.if_not_exists && catalog.relation_exists(&name) {
        tracing::info!(relation = %name, "relation already exists, skipping");
        return Ok(Output::Command(CommandTag::new(create_tag(
            create.materialized,
        ))));
    }
    if catalog.relation_exists(&name) {
        return Err(Error::DuplicateTable(name));
    }
    let (if_not_exists, materialized) = (create.if_not_exists, create.materialized);
    let spec = ViewSpec::of(catalog.next_relation_id()?, name, create)?;
    let entry = build_view(query, spec).await?;
    let catalog = Arc::clone(catalog);
    // A backfill reads whole tables: off the async runtime.
    tokio::task::spawn_blocking(move || catalog.add_view(entry, if_not_exists, true))
        .await
        .map_err(|e| Error::Internal(format!("view creation task failed: {e}")))??;
    Ok(Output::Command(CommandTag::new(create_tag(materialized))))
}

fn create_tag(materialized: bool) -> &'static str {
    if materialized {
        "CREATE MATERIALIZED VIEW"
    } else {
        "CREATE VIEW"
    }
}

/// Plans a view. For a materialized view this is where a query that cannot
/// be maintained is refused.
async fn build_view(ctx: &QueryContext, spec: ViewSpec) -> Result<ViewEntry> {
    let stmt = Statement::Query(Box::new(spec.query.clone()));
    let mut rewritten = stmt.clone();
    ctx.rewrite(&mut rewritten)?;
    if spec.materialized {
        crate::sql::trailing::rewrite(&mut rewritten)?;
    }
    let plan = ctx.plan(rewritten).await?;
    let mut depends_on = relations_read(&plan)?;
    // Plain views are inlined while planning, so only the query text still
    // names them.
    let _ = datafusion::sql::sqlparser::ast::visit_relations(&stmt, |name| {
        if let Ok(name) = names::relation_name(name) {
            if ctx.catalog().view(&name).is_some() && !depends_on.contains(&name) {
                depends_on.push(name);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    let plan = with_column_names(&stmt, plan, &spec.column_names)?;
    let catalog = ctx.catalog();
    let functions = crate::function::inline::functions_used(&stmt, &|name| catalog.function(name));
    let def = ViewDef {
        id: spec.id,
        name: spec.name,
        query: spec.query.to_string(),
        column_names: spec.column_names,
        materialized: spec.materialized,
        depends_on,
        stream_starts: spec.stream_starts,
        emit_on_window_close: spec.emit_on_close,
        functions,
    };
    if !def.materialized {
        return Ok(ViewEntry::Plain {
            def,
            plan: Box::new(plan),
        });
    }
    check_maintainable(&plan)?;
    let schema = crate::dataflow::batch::nullable_schema(plan.schema().as_arrow());
    let optimized = ctx.session().state().optimize(&plan)?;
    let mut planned = plan_graph(&optimized)?;
    check_lookups(&planned.graph, catalog)?;
    planned
        .graph
        .mark_append_only(|r| catalog.stream_source(r).is_some());
    let bound = |relation: &str, column: usize| relation_bound(catalog, relation, column);
    let closing = mark_window_closes(&mut planned.graph, &bound, def.emit_on_window_close);
    // A view's frontier is the least over everything it reads: one input
    // without event time and no window would ever close.
    let all_timed = planned.relations.iter().all(|r| timed(catalog, r));
    if def.emit_on_window_close && (closing == 0 || !all_timed) {
        return Err(Error::unsupported(
            "EMIT ON WINDOW CLOSE without a window to close",
            "Group by window_start or window_end of TUMBLE or HOP, or window_end of SESSION, \
             over a source with a WATERMARK (or by a window column of a view that closes \
             windows), with no join or top-N in between, in a view that reads only such \
             sources and views.",
        ));
    }
    let view = MaterializedView::new(def, planned.graph, schema, planned.key_columns)?;
    Ok(ViewEntry::Materialized(Arc::new(view)))
}

/// A lookup join forgets its stream's rows, so it could not retract what
/// one joined: its left input must be append-only (a source, through
/// row-by-row operators), and what it looks up must be a table or view.
fn check_lookups(graph: &crate::dataflow::graph::Graph, catalog: &Catalog) -> Result<()> {
    for (_, left, right) in graph.lookup_joins() {
        let streams = graph.row_by_row_sources(left);
        let append_only = streams
            .as_ref()
            .is_some_and(|s| s.iter().all(|r| catalog.stream_source(r).is_some()));
        if !append_only {
            return Err(Error::unsupported(
                "a lookup join (FOR SYSTEM_TIME AS OF PROCTIME()) whose left input is not a \
                 stream",
                "Each event looks up the table once and is not kept, so the left input must \
                 be a source, through WHERE and projections only. To join a table or an \
                 aggregate with a table, use a regular join (without FOR SYSTEM_TIME AS OF).",
            ));
        }
        let looked_up = graph.row_by_row_sources(right).unwrap_or_default();
        if let Some(stream) = looked_up
            .iter()
            .find(|r| catalog.stream_source(r).is_some())
        {
            return Err(Error::unsupported(
                format!("looking up the source \"{stream}\" with FOR SYSTEM_TIME AS OF PROCTIME()"),
                "A source keeps no rows to look up. Look up a table (loaded with COPY or \
                 INSERT, or kept by CREATE TABLE … FORMAT UPSERT), or join two streams with \
                 a regular or interval join.",
            ));
        }
    }
    Ok(())
}

/// The tables and views a plan reads (plain views count as themselves:
/// dropping one must not leave a view that reads it).
fn relations_read(plan: &LogicalPlan) -> Result<Vec<String>> {
    let mut relations: Vec<String> = Vec::new();
    let mut system: Option<String> = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match scan.table_name.schema() {
                Some(s) if s != crate::query::PUBLIC_SCHEMA && s != crate::sql::lookup::SCHEMA => {
                    system = Some(scan.table_name.to_string())
                }
                _ => {
                    let name = scan.table_name.table().to_string();
                    if !relations.contains(&name) {
                        relations.push(name);
                    }
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(table) = system {
        return Err(Error::unsupported(
            format!("a view over the system relation {table}"),
            "Views read user tables and views; query system relations directly.",
        ));
    }
    Ok(relations)
}

/// Renames the plan's output columns to PostgreSQL's names, or to the
/// names listed in `CREATE VIEW v (a, b)`.
fn with_column_names(stmt: &Statement, plan: LogicalPlan, given: &[String]) -> Result<LogicalPlan> {
    let arrow = Arc::new(plan.schema().as_arrow().clone());
    let pg = colnames::pg_schema(stmt, &arrow);
    if given.len() > pg.fields().len() {
        return Err(Error::Syntax {
            message: "too many column names were specified".into(),
            line_col: None,
            position: None,
        });
    }
    let wanted: Vec<String> = pg
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| given.get(i).cloned().unwrap_or_else(|| f.name().clone()))
        .collect();
    for (i, name) in wanted.iter().enumerate() {
        if wanted[..i].contains(name) {
            return Err(Error::DuplicateColumn(format!(
                "column \"{name}\" specified more than once"
            )));
        }
    }
    let unchanged = plan
        .schema()
        .fields()
        .iter()
        .zip(&wanted)
        .all(|(f, w)| f.name() == w);
    if unchanged {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .zip(&wanted)
        .map(|(c, name)| Expr::Column(c).alias(name))
        .collect();
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

/// `EXPLAIN CREATE MATERIALIZED VIEW …`: the dataflow the view would run.
pub async fn explain_create(
    catalog: &Catalog,
    ctx: &QueryContext,
    create: CreateView,
) -> Result<Output> {
    if !create.materialized {
        return Err(Error::unsupported(
            "EXPLAIN CREATE VIEW",
            "A plain view runs no dataflow; EXPLAIN a query that reads it instead.",
        ));
    }
    let spec = ViewSpec::of(0, names::relation_name(&create.name)?, create)?;
    match build_view(ctx, spec).await? {
        ViewEntry::Materialized(view) => Ok(plan_rows(explain_lines(
            &view,
            catalog.engine().worker_count(),
            None,
        ))),
        ViewEntry::Plain { .. } => {
            Err(Error::Internal("materialized view planned as plain".into()))
        }
    }
}

/// `EXPLAIN v` (or `EXPLAIN MATERIALIZED VIEW v`): a view's dataflow, with
/// the state each operator holds.
pub fn explain_existing(catalog: &Catalog, name: &str) -> Result<Output> {
    match catalog.view(name).as_deref() {
        Some(ViewEntry::Materialized(view)) => {
            let bytes = catalog.engine().operator_state_bytes(view.def.id).ok();
            Ok(plan_rows(explain_lines(
                view,
                catalog.engine().worker_count(),
                bytes.as_deref(),
            )))
        }
        Some(ViewEntry::Plain { plan, .. }) => Ok(plan_rows(
            plan.display_indent()
                .to_string()
                .lines()
                .map(str::to_string)
                .collect(),
        )),
        None if catalog.table(name).is_some() => Err(Error::WrongObjectType(format!(
            "\"{name}\" is a table; EXPLAIN shows the dataflow of a materialized view"
        ))),
        None => Err(Error::UndefinedTable(name.to_string())),
    }
}

fn explain_lines(
    view: &MaterializedView,
    workers: usize,
    state_bytes: Option<&[usize]>,
) -> Vec<String> {
    let key: Vec<&str> = view
        .key_columns
        .iter()
        .map(|c| view.schema.field(*c).name().as_str())
        .collect();
    let mut lines = vec![format!(
        "Materialized view {} (indexed by {}; {} worker{})",
        view.def.name,
        key.join(", "),
        workers,
        if workers == 1 { "" } else { "s" }
    )];
    for (depth, node, text) in view.graph.explain_nodes() {
        let state = state_bytes
            .and_then(|b| b.get(node))
            .filter(|b| **b > 0)
            .map(|b| format!("  [state {}]", crate::types::human_bytes(*b)))
            .unwrap_or_default();
        lines.push(format!("{}└─ {text}{state}", "   ".repeat(depth)));
    }
    lines
}

fn plan_rows(lines: Vec<String>) -> Output {
    text_rows("QUERY PLAN", lines)
}

/// The result of EXPLAIN (`QUERY PLAN`) and SHOW … VIEWS (`Name`).
pub fn text_schema(column: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]))
}

fn text_rows(column: &str, values: Vec<String>) -> Output {
    let schema = text_schema(column);
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(StringArray::from(values))],
    )
    .expect("one utf8 column");
    Output::Batches {
        schema,
        batches: vec![batch],
    }
}

/// `SHOW MATERIALIZED VIEWS` / `SHOW VIEWS`.
pub fn show_views(catalog: &Catalog, materialized: bool) -> Output {
    let names: Vec<String> = catalog
        .views()
        .iter()
        .filter(|v| v.def().materialized == materialized)
        .map(|v| v.def().name.clone())
        .collect();
    text_rows("Name", names)
}

/// Plans and backfills every stored view again, oldest first, at start.
/// A view that no longer plans is reported and left out; its definition
/// stays stored.
pub async fn restore_views(catalog: &Arc<Catalog>, ctx: &QueryContext) -> Result<()> {
    for def in catalog.stored_view_defs()? {
        let started = std::time::Instant::now();
        let query = match super::parse(&def.query)?.pop() {
            Some(Statement::Query(q)) => *q,
            _ => {
                return Err(Error::Storage(format!(
                    "stored query of view {} is not a query",
                    def.name
                )))
            }
        };
        let spec = ViewSpec {
            id: def.id,
            name: def.name.clone(),
            query,
            column_names: def.column_names.clone(),
            materialized: def.materialized,
            emit_on_close: def.emit_on_window_close,
            stream_starts: def.stream_starts.clone(),
        };
        let restored = match build_view(ctx, spec).await {
            Ok(entry) => {
                let catalog = Arc::clone(catalog);
                tokio::task::spawn_blocking(move || catalog.add_view(entry, false, false))
                    .await
                    .map_err(|e| Error::Internal(format!("view restore task failed: {e}")))?
            }
            Err(e) => Err(e),
        };
        match restored {
            Ok(_) => tracing::info!(
                view = %def.name,
                ms = started.elapsed().as_millis() as u64,
                "view restored"
            ),
            Err(e) => tracing::error!(view = %def.name, error = %e, "cannot restore view"),
        }
    }
    Ok(())
}

/// What column `column` of `relation` bounds, for closing windows (see
/// [`crate::dataflow::frontier::RelationBound`]): a source's `WATERMARK`
/// column, or a materialized view's output column traced through its
/// dataflow to such columns.
fn relation_bound(catalog: &Catalog, relation: &str, column: usize) -> Option<i64> {
    if let Some(source) = catalog.stream_source(relation) {
        let watermark = &source.def.watermark.as_ref()?.column;
        let at = source.def.arrow_schema().index_of(watermark).ok()?;
        return (at == column).then_some(1);
    }
    let view = catalog.materialized_view(relation)?;
    if !timed(catalog, relation) {
        return None;
    }
    crate::dataflow::frontier::output_bound(&view.graph, column, &|r: &str, c: usize| {
        relation_bound(catalog, r, c)
    })
}

/// Whether `relation` has an event-time frontier: a source with a
/// `WATERMARK`, or a materialized view reading only such relations.
fn timed(catalog: &Catalog, relation: &str) -> bool {
    if let Some(source) = catalog.stream_source(relation) {
        return source.def.watermark.is_some();
    }
    catalog.materialized_view(relation).is_some_and(|view| {
        let mut relations = view.graph.sources().map(|(_, r)| r).peekable();
        relations.peek().is_some() && relations.all(|r| timed(catalog, r))
    })
}
