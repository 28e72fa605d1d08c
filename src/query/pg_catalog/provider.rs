//! The DataFusion `SchemaProvider`s of `pg_catalog` and `information_schema`.
//! Each table lookup builds the relation's rows from a fresh `Snapshot`, so a
//! query sees the catalog as of its planning.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::common::DFSchema;
use datafusion::error::Result;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};

use super::defs::{self, TableDef};
use super::snapshot::Snapshot;
use super::table::RowSet;
use super::{info_rows, rows, CatalogSource};

type RowBuilder = fn(&str, &Snapshot, &mut RowSet);

/// One catalog schema: a fixed set of relations whose rows come from `source`.
#[derive(Debug)]
pub(super) struct CatalogSchema {
    source: Arc<dyn CatalogSource>,
    defs: &'static [TableDef],
    build: RowBuilder,
}

impl CatalogSchema {
    pub fn pg_catalog(source: Arc<dyn CatalogSource>) -> Self {
        Self {
            source,
            defs: defs::PG_CATALOG,
            build: rows::build,
        }
    }

    pub fn information_schema(source: Arc<dyn CatalogSource>) -> Self {
        Self {
            source,
            defs: defs::INFORMATION_SCHEMA,
            build: info_rows::build,
        }
    }
}

#[async_trait]
impl SchemaProvider for CatalogSchema {
    fn table_names(&self) -> Vec<String> {
        self.defs.iter().map(|d| d.name.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(def) = defs::find(self.defs, name) else {
            return Ok(None);
        };
        let snapshot = Snapshot::take(self.source.as_ref());
        let mut rows = RowSet::new(def.columns());
        (self.build)(def.name, &snapshot, &mut rows);
        table_provider(rows).map(Some)
    }

    fn table_exist(&self, name: &str) -> bool {
        defs::find(self.defs, name).is_some()
    }
}

/// An empty relation is served as a view over `EmptyRelation` rather than a
/// scan: the planner inlines it, so the optimizer can prune joins and
/// correlated subqueries over catalogs EddyDB has no objects in (policies,
/// publications, ...), which DataFusion could not otherwise execute.
fn table_provider(rows: RowSet) -> Result<Arc<dyn TableProvider>> {
    let empty = rows.is_empty();
    let batch = rows.into_batch()?;
    let schema = batch.schema();
    if empty {
        let plan = LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(DFSchema::try_from(Arc::clone(&schema))?),
        });
        return Ok(Arc::new(ViewTable::new(plan, None)));
    }
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}
