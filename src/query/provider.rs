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

use crate::catalog::Catalog;
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
        self.catalog.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.catalog.table(name).map(|table| {
            Arc::new(TableScanProvider::new(table, self.with_row_id)) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.table(name).is_some()
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
        let def = self.table.def();
        if def.primary_key.is_empty() {
            return None;
        }
        def.primary_key
            .iter()
            .map(|i| {
                let field = self.schema.field(*i);
                filters.iter().find_map(|f| {
                    let value = equality_literal(f, field.name())?;
                    let value = value.cast_to(field.data_type()).ok()?;
                    (!value.is_null()).then(|| value.to_array().ok()).flatten()
                })
            })
            .collect()
    }

    fn visible(&self, batch: RecordBatch) -> DfResult<RecordBatch> {
        if self.with_row_id {
            return Ok(batch);
        }
        let keep: Vec<usize> = (0..batch.num_columns() - 1).collect();
        Ok(batch.project(&keep)?)
    }
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
        // Inexact: DataFusion still applies every filter after our scan, so
        // the index only narrows what is read.
        let pk_columns: Vec<&str> = self
            .table
            .def()
            .primary_key
            .iter()
            .map(|i| self.schema.field(*i).name().as_str())
            .collect();
        Ok(filters
            .iter()
            .map(|f| {
                if pk_columns.iter().any(|c| equality_literal(f, c).is_some()) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
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
