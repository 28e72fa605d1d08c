//! Rows of the `information_schema` views, derived from one `Snapshot`.
//! Unlike Postgres, materialized views are listed (as `VIEW`): they are the
//! main objects of a streaming database and BI tools browse this schema.

use super::snapshot::{index_name, namespace_oid, Snapshot};
use super::table::{row, RowSet, Value};
use super::types;
use super::{RelationInfo, RelationKind, DATABASE_NAME};

/// Fill `rows` with the contents of the `information_schema` view `name`.
pub(super) fn build(name: &str, snap: &Snapshot, rows: &mut RowSet) {
    match name {
        "schemata" => schemata(snap, rows),
        "tables" => tables(snap, rows),
        "columns" => columns(snap, rows),
        "views" => views(snap, rows),
        "table_constraints" => table_constraints(snap, rows),
        "check_constraints" => check_constraints(snap, rows),
        "key_column_usage" | "constraint_column_usage" => key_columns(name, snap, rows),
        "character_sets" => rows.push(row! {
            "character_set_name" => "UTF8",
            "character_repertoire" => "UCS",
            "form_of_use" => "UTF8",
            "default_collate_catalog" => DATABASE_NAME,
            "default_collate_schema" => "pg_catalog",
            "default_collate_name" => "default",
        }),
        // Routines, sequences, triggers, foreign keys: EddyDB has none.
        _ => {}
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "YES"
    } else {
        "NO"
    }
}

fn schemata(snap: &Snapshot, rows: &mut RowSet) {
    for (_, name) in super::snapshot::NAMESPACES {
        rows.push(row! {
            "catalog_name" => DATABASE_NAME,
            "schema_name" => *name,
            "schema_owner" => &snap.owner,
        });
    }
}

fn table_type(kind: RelationKind) -> &'static str {
    match kind {
        RelationKind::Table => "BASE TABLE",
        RelationKind::View | RelationKind::MaterializedView => "VIEW",
        RelationKind::Source => "FOREIGN",
    }
}

fn tables(snap: &Snapshot, rows: &mut RowSet) {
    for rel in &snap.relations {
        rows.push(row! {
            "table_catalog" => DATABASE_NAME,
            "table_schema" => &rel.schema,
            "table_name" => &rel.name,
            "table_type" => table_type(rel.kind),
            "is_insertable_into" => yes_no(rel.kind == RelationKind::Table),
            "is_typed" => "NO",
        });
    }
}

fn columns(snap: &Snapshot, rows: &mut RowSet) {
    for rel in &snap.relations {
        let updatable = yes_no(rel.kind == RelationKind::Table);
        for (i, col) in rel.columns.iter().enumerate() {
            let t = types::info_schema_type(col.type_oid, col.typmod);
            let position = i64::try_from(i + 1).unwrap_or(0);
            let collatable = types::collation(col.type_oid) != 0;
            rows.push(row! {
                "table_catalog" => DATABASE_NAME,
                "table_schema" => &rel.schema,
                "table_name" => &rel.name,
                "column_name" => &col.name,
                "ordinal_position" => position,
                "column_default" => col.default_sql.clone(),
                "is_nullable" => yes_no(!col.not_null),
                "data_type" => t.data_type,
                "character_maximum_length" => t.character_maximum_length,
                "character_octet_length" => t.character_octet_length,
                "numeric_precision" => t.numeric_precision,
                "numeric_precision_radix" => t.numeric_precision_radix,
                "numeric_scale" => t.numeric_scale,
                "datetime_precision" => t.datetime_precision,
                "collation_catalog" => collatable.then_some(DATABASE_NAME),
                "collation_schema" => collatable.then_some("pg_catalog"),
                "collation_name" => collatable.then_some("default"),
                "udt_catalog" => DATABASE_NAME,
                "udt_schema" => "pg_catalog",
                "udt_name" => t.udt_name,
                "dtd_identifier" => position.to_string(),
                "is_self_referencing" => "NO",
                "is_identity" => "NO",
                "identity_cycle" => "NO",
                "is_generated" => "NEVER",
                "is_updatable" => updatable,
            });
        }
    }
}

fn views(snap: &Snapshot, rows: &mut RowSet) {
    let viewlike = snap
        .relations
        .iter()
        .filter(|r| matches!(r.kind, RelationKind::View | RelationKind::MaterializedView));
    for rel in viewlike {
        rows.push(row! {
            "table_catalog" => DATABASE_NAME,
            "table_schema" => &rel.schema,
            "table_name" => &rel.name,
            "view_definition" => rel.view_sql.clone(),
            "check_option" => "NONE",
            "is_updatable" => "NO",
            "is_insertable_into" => "NO",
            "is_trigger_updatable" => "NO",
            "is_trigger_deletable" => "NO",
            "is_trigger_insertable_into" => "NO",
        });
    }
}

/// Name Postgres gives the implicit NOT NULL check of a column.
fn not_null_name(rel: &RelationInfo, attnum: usize) -> String {
    format!(
        "{}_{}_{}_not_null",
        namespace_oid(&rel.schema),
        rel.oid,
        attnum
    )
}

fn constraint_row(rel: &RelationInfo, name: String, kind: &str) -> Vec<(&'static str, Value)> {
    row! {
        "constraint_catalog" => DATABASE_NAME,
        "constraint_schema" => &rel.schema,
        "constraint_name" => name,
        "table_catalog" => DATABASE_NAME,
        "table_schema" => &rel.schema,
        "table_name" => &rel.name,
        "constraint_type" => kind,
        "is_deferrable" => "NO",
        "initially_deferred" => "NO",
        "enforced" => "YES",
    }
}

/// Postgres lists NOT NULL columns of tables as CHECK constraints too.
fn not_null_columns(rel: &RelationInfo) -> impl Iterator<Item = (usize, &super::ColumnInfo)> {
    let is_table = matches!(rel.kind, RelationKind::Table | RelationKind::Source);
    rel.columns
        .iter()
        .enumerate()
        .filter(move |(_, c)| is_table && c.not_null)
        .map(|(i, c)| (i + 1, c))
}

fn table_constraints(snap: &Snapshot, rows: &mut RowSet) {
    for rel in &snap.relations {
        if !rel.primary_key.is_empty() {
            rows.push(constraint_row(rel, index_name(rel), "PRIMARY KEY"));
        }
        for (attnum, _) in not_null_columns(rel) {
            rows.push(constraint_row(rel, not_null_name(rel, attnum), "CHECK"));
        }
    }
}

fn check_constraints(snap: &Snapshot, rows: &mut RowSet) {
    for rel in &snap.relations {
        for (attnum, col) in not_null_columns(rel) {
            rows.push(row! {
                "constraint_catalog" => DATABASE_NAME,
                "constraint_schema" => &rel.schema,
                "constraint_name" => not_null_name(rel, attnum),
                "check_clause" => format!("{} IS NOT NULL", col.name),
            });
        }
    }
}

fn key_columns(view: &str, snap: &Snapshot, rows: &mut RowSet) {
    for rel in snap.keyed() {
        let key = rel.primary_key.iter().filter_map(|&i| rel.columns.get(i));
        for (position, col) in key.enumerate() {
            let mut cells = row! {
                "constraint_catalog" => DATABASE_NAME,
                "constraint_schema" => &rel.schema,
                "constraint_name" => index_name(rel),
                "table_catalog" => DATABASE_NAME,
                "table_schema" => &rel.schema,
                "table_name" => &rel.name,
                "column_name" => &col.name,
            };
            if view == "key_column_usage" {
                let position = i64::try_from(position + 1).unwrap_or(0);
                cells.push(("ordinal_position", Value::from(position)));
            }
            rows.push(cells);
        }
    }
}
