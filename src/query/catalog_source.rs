//! The live catalog as the `pg_catalog` emulation sees it.

use std::sync::Arc;

use super::pg_catalog::{CatalogSource, ColumnInfo, RelationInfo, RelationKind};
use crate::catalog::{Catalog, ViewEntry};
use crate::protocol::types::{pg_type, pg_type_of_sql, type_modifier};

#[derive(Debug)]
pub struct LiveCatalog(pub Arc<Catalog>);

impl CatalogSource for LiveCatalog {
    fn relations(&self) -> Vec<RelationInfo> {
        let mut relations = self.tables();
        relations.extend(self.views());
        relations.extend(self.sources());
        relations
    }
}

impl LiveCatalog {
    /// Stream sources (connector-fed tables are tables).
    fn sources(&self) -> Vec<RelationInfo> {
        self.0
            .sources()
            .iter()
            .filter(|s| s.def.kind == crate::source::def::SourceKind::Source)
            .map(|source| {
                let columns = columns_of(&source.def.arrow_schema(), |f| !f.is_nullable());
                RelationInfo {
                    oid: source.oid(),
                    schema: super::PUBLIC_SCHEMA.to_string(),
                    name: source.def.name.clone(),
                    kind: RelationKind::Source,
                    columns,
                    primary_key: Vec::new(),
                    pk_index_oid: 0,
                    view_sql: None,
                }
            })
            .collect()
    }

    fn views(&self) -> Vec<RelationInfo> {
        self.0
            .views()
            .iter()
            .map(|view| {
                let def = view.def();
                let schema = match view.as_ref() {
                    ViewEntry::Materialized(v) => Arc::clone(&v.schema),
                    ViewEntry::Plain { plan, .. } => Arc::new(plan.schema().as_arrow().clone()),
                };
                let columns = columns_of(&schema, |_| false);
                RelationInfo {
                    oid: def.oid(),
                    schema: super::PUBLIC_SCHEMA.to_string(),
                    name: def.name.clone(),
                    kind: if def.materialized {
                        RelationKind::MaterializedView
                    } else {
                        RelationKind::View
                    },
                    columns,
                    primary_key: Vec::new(),
                    pk_index_oid: 0,
                    view_sql: Some(def.query.clone()),
                }
            })
            .collect()
    }

    fn tables(&self) -> Vec<RelationInfo> {
        self.0
            .tables()
            .iter()
            .map(|table| {
                let def = table.def();
                let schema = def.schema();
                let columns = def
                    .columns
                    .iter()
                    .zip(schema.fields())
                    .map(|(c, field)| ColumnInfo {
                        name: c.name.clone(),
                        type_oid: pg_type_of_sql(&c.sql_type).oid(),
                        type_name: c.sql_type.sql_name(),
                        typmod: type_modifier(field),
                        not_null: c.not_null,
                        default_sql: c.default.clone(),
                    })
                    .collect();
                RelationInfo {
                    oid: def.oid(),
                    schema: super::PUBLIC_SCHEMA.to_string(),
                    name: def.name.clone(),
                    kind: RelationKind::Table,
                    columns,
                    primary_key: def.primary_key.clone(),
                    pk_index_oid: def.pk_index_oid(),
                    view_sql: None,
                }
            })
            .collect()
    }
}

/// The columns of a relation known by its Arrow schema.
fn columns_of(
    schema: &datafusion::arrow::datatypes::Schema,
    not_null: impl Fn(&datafusion::arrow::datatypes::Field) -> bool,
) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|field| {
            let pg = pg_type(field);
            ColumnInfo {
                name: field.name().clone(),
                type_oid: pg.oid(),
                type_name: pg.name().to_string(),
                typmod: type_modifier(field),
                not_null: not_null(field),
                default_sql: None,
            }
        })
        .collect()
}
