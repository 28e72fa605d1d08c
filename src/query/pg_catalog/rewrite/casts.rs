//! Casts to Postgres types DataFusion does not know.
//!
//! The `reg*` types are OIDs that print as names, so a cast to one becomes an
//! OID where it is compared (`c.oid = 'orders'::regclass` -> `to_regclass('orders')`)
//! and a name where it is shown (`c.oid::regclass` -> `regclassout(c.oid)`).
//! `regproc` columns hold procedure names in our catalog, so regproc literals
//! become plain names. Other catalog types map to their Arrow-backed
//! equivalents (`oid` -> `INT UNSIGNED`, `name` -> `TEXT`, `int2vector` -> `SMALLINT[]`).

use datafusion::sql::sqlparser::ast::{ArrayElemTypeDef, CastKind, DataType, Expr, Value};

use super::ast::{as_string_literal, cast, func, name_parts, string_literal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegKind {
    Class,
    Type,
    Proc,
    Namespace,
    Role,
    /// reg types we only treat as OIDs (regoper, regconfig, ...).
    Other,
}

fn reg_kind(data_type: &DataType) -> Option<RegKind> {
    if matches!(data_type, DataType::Regclass) {
        return Some(RegKind::Class);
    }
    let DataType::Custom(name, _) = data_type else {
        return None;
    };
    let parts = name_parts(name);
    Some(match parts.last().map(String::as_str)? {
        "regclass" => RegKind::Class,
        "regtype" => RegKind::Type,
        "regproc" | "regprocedure" => RegKind::Proc,
        "regnamespace" => RegKind::Namespace,
        "regrole" => RegKind::Role,
        "regoper" | "regoperator" | "regconfig" | "regdictionary" | "regcollation" => {
            RegKind::Other
        }
        _ => return None,
    })
}

/// `expr::regX` as an OID (`want_name == false`) or as its printed name.
fn reg_value(expr: Expr, kind: RegKind, want_name: bool) -> Expr {
    let literal = as_string_literal(&expr).map(str::to_string);
    if kind == RegKind::Proc {
        return match literal {
            Some(name) => string_literal(name.rsplit('.').next().unwrap_or(&name)),
            None => func("regprocout", vec![expr]),
        };
    }
    let resolver = match kind {
        RegKind::Class => "to_regclass",
        RegKind::Type => "to_regtype",
        RegKind::Namespace => "to_regnamespace",
        RegKind::Role => "to_regrole",
        RegKind::Proc | RegKind::Other => "",
    };
    let oid = match literal {
        Some(name) if !resolver.is_empty() => func(resolver, vec![string_literal(&name)]),
        _ => cast(expr, oid_type(), CastKind::Cast),
    };
    let printer = match kind {
        RegKind::Class => "regclassout",
        RegKind::Type => "regtypeout",
        RegKind::Namespace => "regnamespaceout",
        RegKind::Role => "regroleout",
        RegKind::Proc | RegKind::Other => return oid,
    };
    if want_name {
        func(printer, vec![oid])
    } else {
        oid
    }
}

fn oid_type() -> DataType {
    DataType::IntUnsigned(None)
}

/// The DataFusion type standing in for a Postgres catalog type, if it differs.
fn standard_type(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::JSON | DataType::JSONB => Some(DataType::Text),
        DataType::Array(ArrayElemTypeDef::SquareBracket(inner, size)) => standard_type(inner)
            .map(|t| DataType::Array(ArrayElemTypeDef::SquareBracket(Box::new(t), *size))),
        DataType::Array(ArrayElemTypeDef::AngleBracket(inner)) => standard_type(inner)
            .map(|t| DataType::Array(ArrayElemTypeDef::SquareBracket(Box::new(t), None))),
        DataType::Custom(name, _) => {
            let parts = name_parts(name);
            let array =
                |t: DataType| DataType::Array(ArrayElemTypeDef::SquareBracket(Box::new(t), None));
            Some(match parts.last().map(String::as_str)? {
                "text" | "name" | "char" | "bpchar" | "varchar" | "json" | "jsonb" | "unknown" => {
                    DataType::Text
                }
                "oid" | "xid" | "cid" => oid_type(),
                "int2" => DataType::SmallInt(None),
                "int4" => DataType::Int(None),
                "int8" => DataType::BigInt(None),
                "float4" => DataType::Real,
                "float8" => DataType::DoublePrecision,
                "bool" => DataType::Boolean,
                "numeric" => {
                    DataType::Numeric(datafusion::sql::sqlparser::ast::ExactNumberInfo::None)
                }
                "int2vector" => array(DataType::SmallInt(None)),
                "oidvector" => array(oid_type()),
                "timestamptz" => DataType::Timestamp(
                    None,
                    datafusion::sql::sqlparser::ast::TimezoneInfo::WithTimeZone,
                ),
                _ => return None,
            })
        }
        _ => None,
    }
}

fn is_oid_like(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::IntUnsigned(_) | DataType::Int(_) | DataType::BigInt(_) | DataType::Integer(_)
    ) || matches!(standard_type(data_type), Some(DataType::IntUnsigned(_)))
}

/// Rewrite a cast node: reg types print as names, other catalog types map to
/// standard ones; `x::regclass::oid` keeps the OID.
pub(super) fn rewrite_cast(expr: &mut Expr) {
    if replace_reg_cast(expr, true) {
        return;
    }
    let Expr::Cast {
        expr: inner,
        data_type,
        ..
    } = expr
    else {
        return;
    };
    if is_oid_like(data_type) {
        to_oid_context(inner);
    }
    if let Some(standard) = standard_type(data_type) {
        *data_type = standard;
    }
}

/// Where an operand is compared, a reg cast stands for its OID.
pub(super) fn to_oid_context(expr: &mut Expr) {
    if let Expr::Nested(inner) = expr {
        return to_oid_context(inner);
    }
    replace_reg_cast(expr, false);
}

/// Replaces a cast to a reg type by its value, as a name or as an OID;
/// false if `expr` is no such cast.
fn replace_reg_cast(expr: &mut Expr, as_name: bool) -> bool {
    let Expr::Cast {
        expr: inner,
        data_type,
        ..
    } = expr
    else {
        return false;
    };
    let Some(kind) = reg_kind(data_type) else {
        return false;
    };
    let value = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
    *expr = reg_value(value, kind, as_name);
    true
}

/// Catalog columns holding arrays; a `'{...}'` literal compared with one of
/// them is an array literal. Limited to these names so that user queries
/// comparing text with `'{}'` keep their meaning.
const ARRAY_COLUMNS: &[&str] = &[
    "polroles",
    "indkey",
    "indclass",
    "indcollation",
    "indoption",
    "conkey",
    "confkey",
    "relacl",
    "reloptions",
    "datacl",
    "nspacl",
    "proargtypes",
    "proallargtypes",
    "proargnames",
    "stxkind",
    "stxkeys",
    "prattrs",
    "attacl",
    "attoptions",
    "rolconfig",
    "extconfig",
];

/// `col = '{0}'` with `col` an array column -> `col = make_array(0)`.
pub(super) fn array_literal_comparison(left: &mut Expr, right: &mut Expr) {
    if is_array_column(left) {
        if let Some(array) = array_literal(right) {
            *right = array;
        }
    } else if is_array_column(right) {
        if let Some(array) = array_literal(left) {
            *left = array;
        }
    }
}

fn is_array_column(expr: &Expr) -> bool {
    let name = match expr {
        Expr::Identifier(id) => id,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(id) => id,
            None => return false,
        },
        _ => return false,
    };
    ARRAY_COLUMNS.contains(&name.value.to_lowercase().as_str())
}

/// `'{a,b}'` as `make_array('a', 'b')` (numbers stay numbers).
fn array_literal(expr: &Expr) -> Option<Expr> {
    let text = as_string_literal(expr)?;
    let body = text.strip_prefix('{')?.strip_suffix('}')?;
    let items: Vec<&str> = body
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .filter(|s| !s.is_empty())
        .collect();
    let numeric = items.iter().all(|s| s.parse::<i64>().is_ok());
    let elements = items
        .iter()
        .map(|s| {
            if numeric {
                Expr::value(Value::Number((*s).to_string(), false))
            } else {
                string_literal(s)
            }
        })
        .collect();
    Some(func("make_array", elements))
}

/// How Postgres names a column that is only a cast (`'x'::text` -> "text").
pub(super) fn type_display_name(data_type: &DataType) -> String {
    if let Some(kind) = reg_kind(data_type) {
        return match kind {
            RegKind::Class => "regclass",
            RegKind::Type => "regtype",
            RegKind::Proc => "regproc",
            RegKind::Namespace => "regnamespace",
            RegKind::Role => "regrole",
            RegKind::Other => "oid",
        }
        .to_string();
    }
    let text = match data_type {
        DataType::Custom(name, _) => name_parts(name).pop().unwrap_or_default(),
        DataType::Text => "text".to_string(),
        DataType::Int(_) | DataType::Integer(_) => "int4".to_string(),
        DataType::BigInt(_) => "int8".to_string(),
        DataType::SmallInt(_) => "int2".to_string(),
        DataType::Boolean | DataType::Bool => "bool".to_string(),
        other => other.to_string().to_lowercase(),
    };
    text.split('(').next().unwrap_or(&text).trim().to_string()
}
