//! Value functions DataFusion lacks: `array_upper`/`array_lower`,
//! `_pg_expandarray` (as a list the rewriter unnests), `pg_size_pretty`,
//! `quote_ident` and `quote_literal`.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, Int32Array, ListArray, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::error::Result;

use super::super::snapshot::quote_ident;
use super::{def, int_at, ints, str_at, strs, text_rows, Def, FnState, Ret};

/// Name of the list-returning function the rewriter turns
/// `information_schema._pg_expandarray(a)` into (wrapped in `unnest`).
pub(in super::super) const EXPAND_ARRAY_LIST: &str = "_pg_expandarray_list";

pub(super) fn defs() -> Vec<Def> {
    vec![
        def("array_upper", (2, 2), DataType::Int32, |_, a, n| {
            array_bound(a, n, true)
        }),
        def("array_lower", (2, 2), DataType::Int32, |_, a, n| {
            array_bound(a, n, false)
        }),
        Def {
            ret: Ret::Derived(expand_array_type),
            ..def(EXPAND_ARRAY_LIST, (1, 1), DataType::Null, expand_array)
        },
        def("pg_size_pretty", (1, 1), DataType::Utf8, size_pretty),
        def("quote_ident", (1, 1), DataType::Utf8, |_, a, n| {
            let names = strs(a, 0, n)?;
            Ok(text_rows(n, |row| str_at(&names, row).map(quote_ident)))
        }),
        def("quote_literal", (1, 1), DataType::Utf8, |_, a, n| {
            let texts = strs(a, 0, n)?;
            Ok(text_rows(n, |row| str_at(&texts, row).map(quote_literal)))
        }),
    ]
}

/// Bounds of dimension 1 of a (1-based) list; NULL for empty arrays and other
/// dimensions, as in Postgres.
fn array_bound(args: &[ArrayRef], rows: usize, upper: bool) -> Result<ArrayRef> {
    let dims = ints(args, 1, rows)?;
    let lists = args.first().and_then(|a| a.as_list_opt::<i32>());
    let out = (0..rows).map(|row| {
        let list = lists?;
        if list.is_null(row) || int_at(&dims, row) != Some(1) {
            return None;
        }
        let len = list.value_length(row);
        (len > 0).then_some(if upper { len } else { 1 })
    });
    Ok(Arc::new(out.collect::<Int32Array>()))
}

fn expand_fields(element: DataType) -> Fields {
    Fields::from(vec![
        Field::new("x", element, true),
        Field::new("n", DataType::Int32, true),
    ])
}

fn expand_array_type(args: &[DataType]) -> Result<DataType> {
    let element = match args.first() {
        Some(DataType::List(f)) => f.data_type().clone(),
        _ => DataType::Null,
    };
    let item = Field::new("item", DataType::Struct(expand_fields(element)), true);
    Ok(DataType::List(Arc::new(item)))
}

/// Pair every element with its 1-based position: `[a, b]` -> `[{x: a, n: 1}, {x: b, n: 2}]`.
fn expand_array(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let arg_types: Vec<DataType> = args.iter().map(|a| a.data_type().clone()).collect();
    let out_type = expand_array_type(&arg_types)?;
    let Some(list) = args.first().and_then(|a| a.as_list_opt::<i32>()) else {
        return Ok(new_null_array(&out_type, rows));
    };
    let values = Arc::clone(list.values());
    let mut positions = vec![None; values.len()];
    for window in list.offsets().windows(2) {
        let (start, end) = (window[0], window[1]);
        for (k, slot) in (start..end).enumerate() {
            if let (Ok(i), Ok(n)) = (usize::try_from(slot), i32::try_from(k + 1)) {
                positions[i] = Some(n);
            }
        }
    }
    let fields = expand_fields(values.data_type().clone());
    let positions: ArrayRef = Arc::new(Int32Array::from(positions));
    let structs = StructArray::try_new(fields.clone(), vec![values, positions], None)?;
    let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
    let out = ListArray::try_new(
        item,
        list.offsets().clone(),
        Arc::new(structs),
        list.nulls().cloned(),
    )?;
    Ok(Arc::new(out))
}

/// Units of `pg_size_pretty`: name, limit below which it is used, whether
/// the value is half-rounded, and its power of two.
const SIZE_UNITS: &[(&str, i64, bool, u32)] = &[
    ("bytes", 10 * 1024, false, 0),
    ("kB", 20 * 1024 - 1, true, 10),
    ("MB", 20 * 1024 - 1, true, 20),
    ("GB", 20 * 1024 - 1, true, 30),
    ("TB", 20 * 1024 - 1, true, 40),
    ("PB", 20 * 1024 - 1, true, 50),
];

/// Postgres' algorithm: divide down unit by unit, keeping one extra bit for
/// half-rounding where the next unit rounds.
pub(super) fn size_pretty_text(bytes: i64) -> String {
    let mut size = bytes;
    for (i, &(name, limit, round, bits)) in SIZE_UNITS.iter().enumerate() {
        let next = SIZE_UNITS.get(i + 1);
        if next.is_none() || size.unsigned_abs() < limit.unsigned_abs() {
            if round {
                size = (size + if size < 0 { -1 } else { 1 }) / 2;
            }
            return format!("{size} {name}");
        }
        if let Some(&(_, _, next_round, next_bits)) = next {
            let shift = next_bits - bits - u32::from(next_round) + u32::from(round);
            size /= 1i64 << shift;
        }
    }
    format!("{size} bytes")
}

fn size_pretty(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let sizes = ints(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        int_at(&sizes, row).map(size_pretty_text)
    }))
}

fn quote_literal(text: &str) -> String {
    let escaped = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", escaped.replace('\\', "\\\\"))
    } else {
        format!("'{escaped}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_postgres() {
        assert_eq!(size_pretty_text(8192), "8192 bytes");
        assert_eq!(size_pretty_text(10240), "10 kB");
        assert_eq!(size_pretty_text(1_000_000), "977 kB");
        assert_eq!(size_pretty_text(50_000_000), "48 MB");
        assert_eq!(size_pretty_text(-10240), "-10 kB");
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
    }
}
