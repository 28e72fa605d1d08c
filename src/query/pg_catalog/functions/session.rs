//! Functions about the session and the server: `current_database`,
//! `current_user`, `version`, `pg_backend_pid`, `current_setting`, ...

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, ListBuilder, StringBuilder, TimestampMicrosecondArray,
    UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Volatility;

use super::super::rows::{find_setting, UTF8_ENCODING};
use super::super::snapshot::SEARCH_PATH;
use super::super::{DATABASE_NAME, SERVER_VERSION};
use super::{bool_rows, def, int_at, ints, str_at, strs, text_rows, Def, FnState};

/// When the server started, as `pg_postmaster_start_time` reports it; taken
/// when the first session registers its functions.
static START_MICROS: OnceLock<i64> = OnceLock::new();

pub(super) fn note_start_time() {
    START_MICROS.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    });
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

pub(super) fn defs() -> Vec<Def> {
    let utf8 = DataType::Utf8;
    let mut defs = vec![
        def("current_database", (0, 0), utf8.clone(), |_, _, n| {
            constant(n, DATABASE_NAME)
        }),
        def("current_catalog", (0, 0), utf8.clone(), |_, _, n| {
            constant(n, DATABASE_NAME)
        }),
        def("current_schema", (0, 0), utf8.clone(), |_, _, n| {
            constant(n, "public")
        }),
        def("current_schemas", (1, 1), text_list(), current_schemas),
        def("version", (0, 0), utf8.clone(), |_, _, n| {
            constant(n, &version())
        }),
        def("pg_backend_pid", (0, 0), DataType::Int32, |s, _, n| {
            Ok(Arc::new(Int32Array::from(vec![s.backend_pid; n])))
        }),
        def("pg_is_in_recovery", (0, 0), DataType::Boolean, |_, _, n| {
            Ok(bool_rows(n, |_| Some(false)))
        }),
        def(
            "pg_postmaster_start_time",
            (0, 0),
            timestamptz(),
            start_time,
        ),
        def("pg_encoding_to_char", (1, 1), utf8.clone(), encoding_name),
        def("getdatabaseencoding", (0, 0), utf8.clone(), |_, _, n| {
            constant(n, "UTF8")
        }),
        def("current_setting", (1, 2), utf8.clone(), current_setting),
        def("pg_my_temp_schema", (0, 0), DataType::UInt32, |_, _, n| {
            Ok(Arc::new(UInt32Array::from(vec![0u32; n])))
        }),
        def(
            "pg_is_other_temp_schema",
            (1, 1),
            DataType::Boolean,
            |_, _, n| Ok(bool_rows(n, |_| Some(false))),
        ),
        // The wire layer does not tell us the socket addresses; NULL is what
        // Postgres reports for a Unix-socket connection.
        def("inet_server_addr", (0, 0), utf8.clone(), |_, _, n| {
            null_text(n)
        }),
        def("inet_client_addr", (0, 0), utf8.clone(), |_, _, n| {
            null_text(n)
        }),
        def("inet_server_port", (0, 0), DataType::Int32, |_, _, n| {
            Ok(Arc::new(Int32Array::new_null(n)))
        }),
    ];
    for name in ["current_user", "session_user", "user", "current_role"] {
        defs.push(def(name, (0, 0), utf8.clone(), |s, _, n| {
            constant(n, &s.user)
        }));
    }
    defs.push(Def {
        volatility: Volatility::Volatile,
        ..def("txid_current", (0, 0), DataType::Int64, txid_current)
    });
    defs
}

fn timestamptz() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn constant(rows: usize, text: &str) -> Result<ArrayRef> {
    Ok(text_rows(rows, |_| Some(text.to_string())))
}

fn null_text(rows: usize) -> Result<ArrayRef> {
    Ok(text_rows(rows, |_| None))
}

/// Clients parse "PostgreSQL X.Y" from this, so it leads with that.
fn version() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (EddyDB {}) on {}-{}, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

fn current_schemas(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let implicit = ints(args, 0, rows)?;
    let mut builder = ListBuilder::new(StringBuilder::new());
    for row in 0..rows {
        // The flag asks for the implicitly searched pg_catalog as well.
        let with_implicit = int_at(&implicit, row).unwrap_or(0) != 0;
        for schema in SEARCH_PATH {
            if with_implicit || *schema != "pg_catalog" {
                builder.values().append_value(schema);
            }
        }
        builder.append(true);
    }
    Ok(Arc::new(builder.finish()))
}

fn start_time(_: &FnState, _: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let micros = START_MICROS.get().copied();
    let array = TimestampMicrosecondArray::from(vec![micros; rows]).with_timezone("UTC");
    Ok(Arc::new(array))
}

fn encoding_name(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let codes = ints(args, 0, rows)?;
    Ok(text_rows(rows, |row| {
        int_at(&codes, row).map(|code| match code {
            0 => "SQL_ASCII".to_string(),
            c if c == i64::from(UTF8_ENCODING) => "UTF8".to_string(),
            _ => String::new(),
        })
    }))
}

fn current_setting(_: &FnState, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let names = strs(args, 0, rows)?;
    let missing_ok = ints(args, 1, rows)?;
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        let Some(name) = str_at(&names, row) else {
            out.push(None);
            continue;
        };
        match find_setting(name) {
            Some(setting) => out.push(Some(setting.value.to_string())),
            None if int_at(&missing_ok, row).unwrap_or(0) != 0 => out.push(None),
            None => {
                return Err(DataFusionError::Plan(format!(
                    "unrecognized configuration parameter \"{name}\""
                )))
            }
        }
    }
    Ok(Arc::new(datafusion::arrow::array::StringArray::from(out)))
}

/// Each call is its own transaction here, so each gets a fresh id.
fn txid_current(_: &FnState, _: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    static NEXT_TXID: AtomicI64 = AtomicI64::new(1000);
    let ids = (0..rows)
        .map(|_| NEXT_TXID.fetch_add(1, Ordering::Relaxed))
        .collect::<Int64Array>();
    Ok(Arc::new(ids))
}
