//! Functions that look objects up in the catalog: `format_type`,
//! `pg_get_indexdef`, `pg_get_viewdef`, `pg_table_is_visible`, the
//! `to_reg*` resolvers and `reg*out` printers behind `::regclass` casts, ...

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result;

use super::super::snapshot::{
    self, constraint_definition, index_definition, quote_ident, Snapshot, OWNER_OID, SEARCH_PATH,
};
use super::super::types;
use super::{bool_rows, def, int_at, ints, oid_at, str_at, strs, text_rows, Def, FnState};

pub(super) fn defs() -> Vec<Def> {
    let utf8 = DataType::Utf8;
    let mut defs = vec![
        def("format_type", (2, 2), utf8.clone(), format_type),
        def("pg_get_expr", (2, 3), utf8.clone(), get_expr),
        def("pg_get_indexdef", (1, 3), utf8.clone(), get_indexdef),
        def(
            "pg_get_constraintdef",
            (1, 2),
            utf8.clone(),
            get_constraintdef,
        ),
        def("pg_get_viewdef", (1, 2), utf8.clone(), get_viewdef),
        def("pg_get_userbyid", (1, 1), utf8.clone(), get_userbyid),
        def(
            "pg_table_is_visible",
            (1, 1),
            DataType::Boolean,
            table_is_visible,
        ),
        def(
            "pg_type_is_visible",
            (1, 1),
            DataType::Boolean,
            type_is_visible,
        ),
        def(
            "pg_collation_is_visible",
            (1, 1),
            DataType::Boolean,
            collation_is_visible,
        ),
        // Tablespaces other than the defaults (which report "") do not exist.
        def("pg_tablespace_location", (1, 1), utf8.clone(), |_, _, n| {
            Ok(text_rows(n, |_| Some(String::new())))
        }),
        def("to_regclass", (1, 1), DataType::UInt32, to_regclass),
        def("to_regtype", (1, 1), DataType::UInt32, to_regtype),
        def("to_regnamespace", (1, 1), DataType::UInt32, to_regnamespace),
        def("to_regrole", (1, 1), DataType::UInt32, to_regrole),
        def("regclassout", (1, 1), utf8.clone(), regclassout),
        def("regtypeout", (1, 1), utf8.clone(), regtypeout),
        def("regnamespaceout", (1, 1), utf8.clone(), regnamespaceout),
        def("regroleout", (1, 1), utf8.clone(), regroleout),
        def("regprocout", (1, 1), utf8.clone(), regprocout),
        def(
            "pg_relation_is_publishable",
            (1, 1),
            DataType::Boolean,
            |_, _, n| Ok(bool_rows(n, |_| Some(false))),
        ),
    ];
    defs.extend(fixed_answer_defs());
    defs
}

/// Functions whose answer follows from what EddyDB lacks (privileges,
/// comments, rules, functions, size accounting), not from the catalog.
fn fixed_answer_defs() -> Vec<Def> {
    let utf8 = DataType::Utf8;
    let mut defs = Vec::new();
    // EddyDB has no privilege system: every role may do everything.
    for name in [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_column_privilege",
        "has_any_column_privilege",
        "has_function_privilege",
        "has_sequence_privilege",
        "pg_has_role",
    ] {
        defs.push(def(name, (2, 4), DataType::Boolean, |_, _, n| {
            Ok(bool_rows(n, |_| Some(true)))
        }));
    }
    // These catalogs are empty, so no OID names such an object: NULL, as
    // Postgres answers for an unknown OID.
    for name in [
        "pg_function_is_visible",
        "pg_operator_is_visible",
        "pg_opclass_is_visible",
        "pg_opfamily_is_visible",
        "pg_conversion_is_visible",
        "pg_ts_config_is_visible",
    ] {
        defs.push(def(name, (1, 1), DataType::Boolean, |_, _, n| {
            Ok(bool_rows(n, |_| None))
        }));
    }
    // Objects these describe (comments, rules, triggers, functions, statistics,
    // partitions, sequences) do not exist in EddyDB, so the answer is NULL.
    for (name, max_args) in [
        ("obj_description", 2),
        ("col_description", 2),
        ("shobj_description", 2),
        ("pg_get_ruledef", 2),
        ("pg_get_triggerdef", 2),
        ("pg_get_functiondef", 1),
        ("pg_get_function_result", 1),
        ("pg_get_function_arguments", 1),
        ("pg_get_function_identity_arguments", 1),
        ("pg_get_statisticsobjdef_columns", 1),
        ("pg_get_partkeydef", 1),
        ("pg_get_serial_sequence", 2),
    ] {
        defs.push(def(name, (1, max_args), utf8.clone(), |_, _, n| {
            Ok(text_rows(n, |_| None))
        }));
    }
    // Storage sizes are not tracked by the catalog source; NULL means unknown.
    for name in [
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
    ] {
        defs.push(def(name, (1, 2), DataType::Int64, |_, _, n| {
            Ok(Arc::new(Int64Array::new_null(n)))
        }));
    }
    defs
}

/// Built-in types are printed from their OID; a type we do not know is
/// printed as the catalog source named it for a column of that type.
fn format_type(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let oids = ints(args, 0, rows)?;
    let typmods = ints(args, 1, rows)?;
    let mut snapshot = None;
    Ok(text_rows(rows, |row| {
        let oid = oid_at(&oids, row)?;
        let typmod = int_at(&typmods, row).and_then(|t| i32::try_from(t).ok());
        if oid == 0 || types::lookup(oid).is_some() {
            return Some(types::format_type(oid, typmod));
        }
        let snap = snapshot.get_or_insert_with(|| Snapshot::take(state.source.as_ref()));
        let named = snap
            .relations
            .iter()
            .flat_map(|r| &r.columns)
            .find(|c| c.type_oid == oid && typmod.is_none_or(|t| t == c.typmod))
            .map(|c| c.type_name.clone());
        Some(named.unwrap_or_else(|| types::format_type(oid, typmod)))
    }))
}

/// `adbin` and friends hold SQL text already, so this is the identity.
fn get_expr(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let exprs = strs(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        str_at(&exprs, row).map(str::to_string)
    }))
}

fn get_indexdef(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let snap = Snapshot::take(state.source.as_ref());
    let oids = ints(args, 0, rows)?;
    let columns = ints(args, 1, rows)?;
    Ok(text_rows(rows, |row| {
        let rel = snap.indexed_table(oid_at(&oids, row)?)?;
        match int_at(&columns, row).unwrap_or(0) {
            0 => Some(index_definition(rel)),
            n => {
                let position = usize::try_from(n - 1).ok()?;
                let column = rel.columns.get(*rel.primary_key.get(position)?)?;
                Some(quote_ident(&column.name))
            }
        }
    }))
}

fn get_constraintdef(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let snap = Snapshot::take(state.source.as_ref());
    let oids = ints(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        snap.indexed_table(oid_at(&oids, row)?)
            .map(constraint_definition)
    }))
}

/// Accepts an OID or (the text variant) a relation name.
fn get_viewdef(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let snap = Snapshot::take(state.source.as_ref());
    let names = strs(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        let oid = snap.resolve(str_at(&names, row)?)?;
        snap.relation(oid)?.view_sql.clone()
    }))
}

fn get_userbyid(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let owner = state.source.owner_name();
    let oids = ints(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        let oid = oid_at(&oids, row)?;
        Some(if oid == OWNER_OID {
            owner.clone()
        } else {
            format!("unknown (OID={oid})")
        })
    }))
}

fn table_is_visible(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let snap = Snapshot::take(state.source.as_ref());
    let oids = ints(args, 0, rows)?;
    Ok(bool_rows(rows, |row| {
        let oid = oid_at(&oids, row)?;
        let rel = snap.relation(oid).or_else(|| snap.indexed_table(oid))?;
        Some(SEARCH_PATH.contains(&rel.schema.as_str()))
    }))
}

fn type_is_visible(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let oids = ints(args, 0, rows)?;
    Ok(bool_rows(rows, |row| {
        types::lookup(oid_at(&oids, row)?).map(|_| true)
    }))
}

/// The collations of `pg_collation` all live in `pg_catalog`.
fn collation_is_visible(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let oids = ints(args, 0, rows)?;
    Ok(bool_rows(rows, |row| {
        let oid = oid_at(&oids, row)?;
        super::super::rows::COLLATIONS
            .iter()
            .any(|(c, ..)| *c == oid)
            .then_some(true)
    }))
}

fn oid_rows(rows: usize, f: impl FnMut(usize) -> Option<u32>) -> ArrayRef {
    Arc::new((0..rows).map(f).collect::<UInt32Array>())
}

fn to_regclass(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let snap = Snapshot::take(state.source.as_ref());
    let names = strs(args, 0, rows)?;
    Ok(oid_rows(rows, |row| snap.resolve(str_at(&names, row)?)))
}

fn to_regtype(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let names = strs(args, 0, rows)?;
    Ok(oid_rows(rows, |row| {
        let name = str_at(&names, row)?;
        name.trim()
            .parse::<u32>()
            .ok()
            .or_else(|| types::lookup_name(name).map(|t| t.oid()))
    }))
}

fn to_regnamespace(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let names = strs(args, 0, rows)?;
    Ok(oid_rows(rows, |row| {
        let parts = snapshot::split_qualified_name(str_at(&names, row)?)?;
        let [name] = parts.as_slice() else {
            return None;
        };
        snapshot::NAMESPACES
            .iter()
            .find(|(_, n)| n == name)
            .map(|(oid, _)| *oid)
    }))
}

fn to_regrole(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let owner = state.source.owner_name();
    let names = strs(args, 0, rows)?;
    Ok(oid_rows(rows, |row| {
        let parts = snapshot::split_qualified_name(str_at(&names, row)?)?;
        (parts.as_slice() == [owner.clone()]).then_some(OWNER_OID)
    }))
}

fn regclassout(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let snap = Snapshot::take(state.source.as_ref());
    let oids = ints(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        oid_at(&oids, row).map(|oid| snap.regclass_name(oid))
    }))
}

fn regtypeout(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let oids = ints(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        oid_at(&oids, row).map(types::regtype_name)
    }))
}

fn regnamespaceout(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let oids = ints(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        let oid = oid_at(&oids, row)?;
        Some(snapshot::namespace_name(oid).map_or_else(|| oid.to_string(), quote_ident))
    }))
}

fn regroleout(state: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let owner = state.source.owner_name();
    let oids = ints(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        let oid = oid_at(&oids, row)?;
        Some(if oid == OWNER_OID {
            quote_ident(&owner)
        } else {
            oid.to_string()
        })
    }))
}

/// Procedures are kept by name in our catalogs (there is no `pg_proc` row to
/// point at), so a name prints as itself and OID 0 as "-".
fn regprocout(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let values = strs(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        let v = str_at(&values, row)?;
        Some(if v == "0" {
            "-".to_string()
        } else {
            v.to_string()
        })
    }))
}
