//! The live catalog as the `pg_catalog` emulation sees it.

use std::sync::Arc;

use super::pg_catalog::{CatalogSource, ColumnInfo, RelationInfo, RelationKind};
use crate::catalog::Catalog;
use crate::protocol::types::{pg_type_of_sql, type_modifier};

#[derive(Debug)]
pub struct LiveCatalog(pub Arc<Catalog>);

impl CatalogSource for LiveCatalog {
    fn relations(&self) -> Vec<RelationInfo> {
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
