//! Tables as DataFusion sees them: a schema provider over the live catalog
//! and a table provider that scans a consistent copy of a table's chunks,
//! or answers an equality on the full primary key from the index without
//! scanning.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;

use datafusion::catalog::view::ViewTable;

use crate::catalog::{Catalog, ViewEntry};
use crate::engine::MaterializedView;
use crate::storage::Table;

/// `public` (or `__dml`): every table of the catalog, resolved at plan time.
#[derive(Debug)]
pub struct TablesSchema {
    catalog: Arc<Catalog>,
    with_row_id: bool,
}

impl TablesSchema {
    pub fn new(catalog: Arc<Catalog>, with_row_id: bool) -> TablesSchema {
        TablesSchema {
            catalog,
            with_row_id,
        }
    }
}

#[async_trait]
impl SchemaProvider for TablesSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.catalog.table_names();
        if !self.with_row_id {
            names.extend(self.catalog.views().iter().map(|v| v.def().name.clone()));
            names.extend(
                self.catalog
                    .sources()
                    .iter()
                    .filter(|s| self.catalog.stream_source(&s.def.name).is_some())
                    .map(|s| s.def.name.clone()),
            );
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.catalog.table(name) {
            return Ok(Some(Arc::new(TableScanProvider::new(
                table,
                self.with_row_id,
            ))));
        }
        if self.with_row_id {
            return Ok(None);
        }
        if let Some(source) = self.catalog.stream_source(name) {
            return Ok(Some(Arc::new(StreamProvider {
                name: name.to_string(),
                schema: crate::dataflow::batch::nullable_schema(&source.def.arrow_schema()),
            })));
        }
        Ok(self.catalog.view(name).map(|view| match view.as_ref() {
            ViewEntry::Materialized(view) => {
                Arc::new(ViewProvider(Arc::clone(view))) as Arc<dyn TableProvider>
            }
            ViewEntry::Plain { def, plan } => Arc::new(ViewTable::new(
                plan.as_ref().clone(),
                Some(def.query.clone()),
            )),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.table(name).is_some()
            || (!self.with_row_id
                && (self.catalog.view(name).is_some()
                    || self.catalog.stream_source(name).is_some()))
    }
}

#[derive(Debug)]
pub struct TableScanProvider {
    table: Arc<Table>,
    with_row_id: bool,
    schema: SchemaRef,
}

impl TableScanProvider {
    pub fn new(table: Arc<Table>, with_row_id: bool) -> TableScanProvider {
        let schema = if with_row_id {
            table.storage_schema()
        } else {
            table.schema()
        };
        TableScanProvider {
            table,
            with_row_id,
            schema,
        }
    }

    /// The primary key values if `filters` pin every key column to a literal.
    fn key_from_filters(&self, filters: &[Expr]) -> Option<Vec<ArrayRef>> {
        key_from_filters(&self.schema, &self.table.def().primary_key, filters)
    }

    fn visible(&self, batch: RecordBatch) -> DfResult<RecordBatch> {
        if self.with_row_id {
            return Ok(batch);
        }
        let keep: Vec<usize> = (0..batch.num_columns() - 1).collect();
        Ok(batch.project(&keep)?)
    }
}

/// The values of `key` columns if `filters` pin every one to a literal.
fn key_from_filters(schema: &SchemaRef, key: &[usize], filters: &[Expr]) -> Option<Vec<ArrayRef>> {
    if key.is_empty() {
        return None;
    }
    key.iter()
        .map(|i| {
            let field = schema.field(*i);
            filters.iter().find_map(|f| {
                let value = equality_literal(f, field.name())?;
                let value = value.cast_to(field.data_type()).ok()?;
                (!value.is_null()).then(|| value.to_array().ok()).flatten()
            })
        })
        .collect()
}

/// Whether each filter is an equality on one of `columns` (Inexact: the
/// index narrows the scan, DataFusion still applies the filter).
fn key_pushdown(
    schema: &SchemaRef,
    columns: &[usize],
    filters: &[&Expr],
) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| {
            let on_key = columns
                .iter()
                .any(|c| equality_literal(f, schema.field(*c).name()).is_some());
            if on_key {
                TableProviderFilterPushDown::Inexact
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect()
}

/// `column = literal` (either side) on the named column.
fn equality_literal(expr: &Expr, column: &str) -> Option<ScalarValue> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    if *op != Operator::Eq {
        return None;
    }
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c))
            if c.name == column =>
        {
            Some(v.clone())
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for TableScanProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(key_pushdown(
            &self.schema,
            &self.table.def().primary_key,
            filters,
        ))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = match self.key_from_filters(filters) {
            Some(key) => self
                .table
                .lookup(&key)
                .map_err(external)?
                .into_iter()
                .collect(),
            None => self.table.scan().map_err(external)?,
        };
        let batches = batches
            .into_iter()
            .map(|b| self.visible(b))
            .collect::<DfResult<Vec<_>>>()?;
        let partitions = spread(batches, state.config().target_partitions());
        let exec = MemorySourceConfig::try_new_exec(
            &partitions,
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

fn external(err: crate::Error) -> DataFusionError {
    DataFusionError::External(Box::new(err))
}

/// Round-robin batches over `n` partitions so scans use every worker.
fn spread(batches: Vec<RecordBatch>, n: usize) -> Vec<Vec<RecordBatch>> {
    let n = n.max(1).min(batches.len().max(1));
    let mut partitions = vec![Vec::new(); n];
    for (i, batch) in batches.into_iter().enumerate() {
        partitions[i % n].push(batch);
    }
    partitions
}

/// A materialized view as DataFusion sees it: a scan of its arrangement
/// (never a recomputation), or a probe of its index when the filters pin
/// every key column.
#[derive(Debug)]
pub struct ViewProvider(pub Arc<MaterializedView>);

#[async_trait]
impl TableProvider for ViewProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.0.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(key_pushdown(&self.0.schema, &self.0.key_columns, filters))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let view = &self.0;
        let batches = match key_from_filters(&view.schema, &view.key_columns, filters) {
            Some(key) => vec![view.lookup(&key).map_err(external)?],
            None => view.scan().map_err(external)?,
        };
        let partitions = spread(batches, state.config().target_partitions());
        Ok(MemorySourceConfig::try_new_exec(
            &partitions,
            Arc::clone(&view.schema),
            projection.cloned(),
        )?)
    }
}

/// A stream source as DataFusion sees it: a schema to plan views against.
/// It keeps no rows, so scanning it (a `SELECT` straight from it) is refused
/// with a hint.
#[derive(Debug)]
pub struct StreamProvider {
    name: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for StreamProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(external(crate::Error::SourceNotQueryable {
            message: format!(
                "source \"{}\" is a stream: it keeps no rows to select from",
                self.name
            ),
            hint: format!(
                "Create a materialized view over it (CREATE MATERIALIZED VIEW v AS SELECT ... FROM {}) \
                 and query the view, or create the source as a table (CREATE TABLE ... WITH \
                 (connector = ...)) to keep its rows.",
                self.name
            ),
        }))
    }
}
