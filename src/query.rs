//! DataFusion integration: one `SessionContext` per client session, whose
//! catalog `eddy` resolves `public` to the live tables, `pg_catalog` and
//! `information_schema` to the compatibility layer, and `__dml` to the same
//! tables with their row ids exposed (used by UPDATE and DELETE).

mod catalog_source;
mod eddy_catalog;
pub mod pg_catalog;
mod provider;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::CatalogProvider;
use datafusion::catalog::{MemoryCatalogProvider, SchemaProvider};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::Statement;

pub use provider::{TableScanProvider, TablesSchema, ViewProvider};

use crate::catalog::Catalog;
use crate::error::Result;

pub const CATALOG_NAME: &str = "eddy";
pub const PUBLIC_SCHEMA: &str = "public";
/// Schema under which UPDATE/DELETE see tables with their row ids.
pub const DML_SCHEMA: &str = "__dml";

/// A session's view of the database through DataFusion.
pub struct QueryContext {
    ctx: SessionContext,
    catalog: Arc<Catalog>,
    /// The catalog's functions version the registered Python functions
    /// are of, and their names.
    functions: std::sync::Mutex<(u64, Vec<String>)>,
}

/// Interval literals in PostgreSQL's own output form (`1 year 2 mons
/// 04:05:06`) are read with EddyDB's PostgreSQL parser and handed to
/// DataFusion in unit words it understands.
fn normalize_interval_literals(stmt: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{DataType as SqlDataType, Expr, Value};
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(stmt, |expr| {
        let text = match expr {
            Expr::Cast {
                expr: inner,
                data_type: SqlDataType::Interval { .. },
                ..
            } => match inner.as_mut() {
                Expr::Value(v) => match &mut v.value {
                    Value::SingleQuotedString(s) => Some(s),
                    _ => None,
                },
                _ => None,
            },
            Expr::Interval(interval)
                if interval.leading_field.is_none() && interval.last_field.is_none() =>
            {
                match interval.value.as_mut() {
                    Expr::Value(v) => match &mut v.value {
                        Value::SingleQuotedString(s) => Some(s),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(text) = text {
            let dt = datafusion::arrow::datatypes::DataType::Interval(
                datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
            );
            let field = datafusion::arrow::datatypes::Field::new("i", dt.clone(), true);
            if let Ok(ScalarValue::IntervalMonthDayNano(Some(v))) =
                crate::sql::copy_format::parse_text_value(text, &dt, &field)
            {
                *text = format!(
                    "{} months {} days {} nanoseconds",
                    v.months, v.days, v.nanoseconds
                );
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

impl std::fmt::Debug for QueryContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryContext").finish_non_exhaustive()
    }
}

impl QueryContext {
    pub fn new(
        catalog: Arc<Catalog>,
        workers: usize,
        user: &str,
        backend_pid: i32,
    ) -> Result<QueryContext> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG_NAME, PUBLIC_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(false)
            .with_target_partitions(workers);
        // `1.005` is numeric in PostgreSQL, not a float.
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        // Instants are computed in UTC; the protocol layer shows them in the
        // session's TimeZone.
        config.options_mut().execution.time_zone = Some(crate::types::UTC.to_string());
        let ctx = SessionContext::new_with_config(config);
        let schemas = MemoryCatalogProvider::new();
        let public: Arc<dyn SchemaProvider> =
            Arc::new(TablesSchema::new(Arc::clone(&catalog), false));
        let dml: Arc<dyn SchemaProvider> = Arc::new(TablesSchema::new(Arc::clone(&catalog), true));
        let source: Arc<dyn pg_catalog::CatalogSource> =
            Arc::new(catalog_source::LiveCatalog(Arc::clone(&catalog)));
        schemas.register_schema(PUBLIC_SCHEMA, public)?;
        schemas.register_schema(DML_SCHEMA, dml)?;
        // `t FOR SYSTEM_TIME AS OF PROCTIME()` names `t` here (see
        // `sql::lookup`): the same relations as `public`.
        schemas.register_schema(
            crate::sql::lookup::SCHEMA,
            Arc::new(TablesSchema::new(Arc::clone(&catalog), false)),
        )?;
        schemas.register_schema(
            "pg_catalog",
            pg_catalog::pg_catalog_schema(Arc::clone(&source)),
        )?;
        schemas.register_schema(
            "information_schema",
            pg_catalog::information_schema(Arc::clone(&source)),
        )?;
        schemas.register_schema(
            eddy_catalog::SCHEMA,
            Arc::new(eddy_catalog::EddyCatalog(Arc::clone(&catalog))),
        )?;
        ctx.register_catalog(CATALOG_NAME, Arc::new(schemas));
        pg_catalog::register_functions(&ctx, source, user, backend_pid);
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(
            crate::sql::trailing::Trailing::new(),
        ));
        for session_bound in crate::sql::sessions::functions() {
            ctx.register_udwf(session_bound);
        }
        let (scalars, aggregates) = catalog.extensions().functions();
        for scalar in scalars {
            ctx.register_udf(scalar);
        }
        for aggregate in aggregates {
            ctx.register_udaf(aggregate);
        }
        Ok(QueryContext {
            ctx,
            catalog,
            functions: std::sync::Mutex::new((0, Vec::new())),
        })
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn register_schema(&self, name: &str, schema: Arc<dyn SchemaProvider>) -> Result<()> {
        if let Some(catalog) = self.ctx.catalog(CATALOG_NAME) {
            catalog.register_schema(name, schema)?;
        }
        Ok(())
    }

    /// Rewrites a client's query so Postgres-only syntax (catalog casts,
    /// `OPERATOR(pg_catalog.~)`, implicit `pg_catalog` names) plans, and
    /// window table functions become derived tables
    /// ([`crate::sql::windows`]).
    pub fn rewrite(&self, stmt: &mut Statement) -> Result<()> {
        let catalog = &self.catalog;
        crate::sql::windows::rewrite(stmt)?;
        pg_catalog::rewrite_statement(stmt, &|name| catalog.relation_exists(name));
        normalize_interval_literals(stmt);
        Ok(())
    }

    /// Plans a statement DataFusion understands (queries, VALUES, EXPLAIN).
    pub async fn plan(&self, mut stmt: Statement) -> Result<LogicalPlan> {
        self.register_functions();
        // SQL functions are inlined into every statement planned, EddyDB's
        // own included (UPDATE and DELETE find their rows with generated
        // queries that carry the user's conditions).
        let catalog = &self.catalog;
        crate::function::inline::inline_calls(&mut stmt, &|name| catalog.function(name))?;
        let stmt = datafusion::sql::parser::Statement::Statement(Box::new(stmt));
        Ok(self.ctx.state().statement_to_plan(stmt).await?)
    }

    /// Registers the catalog's Python functions with the planner, if they
    /// changed since the last statement (SQL functions are inlined by
    /// [`QueryContext::rewrite`] instead).
    fn register_functions(&self) {
        let version = self.catalog.functions_version();
        let mut registered = self.functions.lock().expect("functions lock");
        if registered.0 == version {
            return;
        }
        for name in registered.1.drain(..) {
            self.ctx.deregister_udf(&name);
            self.ctx.deregister_udaf(&name);
        }
        for entry in self.catalog.functions() {
            match &entry.body {
                crate::function::Body::Python(udf) => {
                    self.ctx.register_udf(udf.as_ref().clone());
                }
                crate::function::Body::Aggregate(udaf) => {
                    self.ctx.register_udaf(udaf.as_ref().clone());
                }
                crate::function::Body::Sql(_) => continue,
            }
            registered.1.push(entry.def.name.clone());
        }
        registered.0 = version;
    }

    /// Whether `name` is one of the planner's own functions (not a user's).
    pub fn is_builtin_function(&self, name: &str) -> bool {
        let state = self.ctx.state();
        let registered = self.functions.lock().expect("functions lock");
        !registered.1.iter().any(|n| n == name)
            && (state.scalar_functions().contains_key(name)
                || state.aggregate_functions().contains_key(name)
                || state.window_functions().contains_key(name))
    }

    /// Runs a plan with its `$n` parameters bound, streaming the result.
    pub async fn execute(
        &self,
        plan: LogicalPlan,
        params: &[ScalarValue],
    ) -> Result<SendableRecordBatchStream> {
        let plan = if params.is_empty() {
            plan
        } else {
            // Values arrive in the client's declared types; the plan may
            // expect others (an int8 bound where int4 is compared).
            let expected = crate::sql::placeholder_types(&plan)?;
            let values = params
                .iter()
                .enumerate()
                .map(|(i, v)| match expected.get(i).cloned().flatten() {
                    Some(t) if t != v.data_type() && !v.is_null() => v.cast_to(&t),
                    Some(t) if t != v.data_type() => ScalarValue::try_from(&t),
                    _ => Ok(v.clone()),
                })
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            plan.with_param_values(ParamValues::List(
                values.into_iter().map(Into::into).collect(),
            ))?
        };
        let df = self.ctx.execute_logical_plan(plan).await?;
        // Scans take their snapshots while the plan is built: under the
        // gate, they all see the same closed epoch.
        let _epoch = self.catalog.engine().read_gate().await;
        Ok(df.execute_stream().await?)
    }

    /// Runs a plan to completion.
    pub async fn collect(
        &self,
        plan: LogicalPlan,
        params: &[ScalarValue],
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        use futures::TryStreamExt;
        let stream = self.execute(plan, params).await?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok((schema, batches))
    }
}
