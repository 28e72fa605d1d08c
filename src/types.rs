//! The SQL column types EddyDB stores, and how each is laid out in Arrow.
//!
//! A column's Arrow field carries the exact SQL type in its metadata
//! (`eddy.sql_type`) where Arrow alone cannot tell it (json vs text,
//! varchar(n), numeric(p,s)), so later layers can describe it faithfully.

use std::collections::HashMap;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::ast;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Metadata key on Arrow fields holding the SQL type name.
pub const SQL_TYPE_KEY: &str = "eddy.sql_type";
/// The time zone label of `timestamptz` columns: values are UTC instants.
pub const UTC: &str = "+00:00";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Boolean,
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    Numeric { precision: u8, scale: i8 },
    Varchar(Option<u32>),
    Text,
    Date,
    Timestamp,
    Timestamptz,
    Interval,
    Json,
    Jsonb,
}

/// Precision and scale of a `numeric` declared without them.
pub const DEFAULT_NUMERIC: (u8, i8) = (38, 10);

impl SqlType {
    pub fn from_ast(dt: &ast::DataType) -> Result<SqlType> {
        use ast::DataType as D;
        Ok(match dt {
            D::Boolean | D::Bool => SqlType::Boolean,
            D::SmallInt(_) | D::Int2(_) => SqlType::SmallInt,
            D::Int(_) | D::Integer(_) | D::Int4(_) => SqlType::Integer,
            D::BigInt(_) | D::Int8(_) => SqlType::BigInt,
            D::Real | D::Float4 => SqlType::Real,
            D::Double(_) | D::DoublePrecision | D::Float8 => SqlType::Double,
            D::Float(info) => match float_bits(info) {
                Some(p) if p <= 24 => SqlType::Real,
                _ => SqlType::Double,
            },
            D::Numeric(info) | D::Decimal(info) | D::Dec(info) => numeric(info)?,
            D::Varchar(len) | D::CharacterVarying(len) | D::CharVarying(len) => {
                SqlType::Varchar(char_len(len.as_ref())?)
            }
            D::Text | D::String(_) => SqlType::Text,
            D::Date => SqlType::Date,
            D::Timestamp(_, tz) => match tz {
                ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz => SqlType::Timestamptz,
                _ => SqlType::Timestamp,
            },
            D::Interval { .. } => SqlType::Interval,
            D::JSON => SqlType::Json,
            D::JSONB => SqlType::Jsonb,
            D::Custom(name, args) if args.is_empty() => custom(&name.to_string())?,
            other => {
                return Err(Error::unsupported(
                    format!("column type {other}"),
                    "Supported types: boolean, smallint, integer, bigint, real, double precision, \
                     numeric, varchar, text, date, timestamp, timestamptz, interval, json, jsonb.",
                ))
            }
        })
    }

    pub fn arrow_type(&self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::SmallInt => DataType::Int16,
            SqlType::Integer => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Real => DataType::Float32,
            SqlType::Double => DataType::Float64,
            SqlType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            SqlType::Varchar(_) | SqlType::Text | SqlType::Json | SqlType::Jsonb => DataType::Utf8,
            SqlType::Date => DataType::Date32,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            SqlType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        }
    }

    /// The Arrow field of a column of this type.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        let field = Field::new(name, self.arrow_type(), nullable);
        match self {
            SqlType::Varchar(Some(_))
            | SqlType::Json
            | SqlType::Jsonb
            | SqlType::Numeric { .. } => {
                field.with_metadata(HashMap::from([(SQL_TYPE_KEY.to_string(), self.sql_name())]))
            }
            _ => field,
        }
    }

    /// The type as PostgreSQL's `format_type` prints it.
    pub fn sql_name(&self) -> String {
        match self {
            SqlType::Boolean => "boolean".into(),
            SqlType::SmallInt => "smallint".into(),
            SqlType::Integer => "integer".into(),
            SqlType::BigInt => "bigint".into(),
            SqlType::Real => "real".into(),
            SqlType::Double => "double precision".into(),
            SqlType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            SqlType::Varchar(Some(n)) => format!("character varying({n})"),
            SqlType::Varchar(None) => "character varying".into(),
            SqlType::Text => "text".into(),
            SqlType::Date => "date".into(),
            SqlType::Timestamp => "timestamp without time zone".into(),
            SqlType::Timestamptz => "timestamp with time zone".into(),
            SqlType::Interval => "interval".into(),
            SqlType::Json => "json".into(),
            SqlType::Jsonb => "jsonb".into(),
        }
    }

    /// The SQL type of an arbitrary Arrow field (query results), using the
    /// metadata when the field came from a stored column.
    pub fn of_field(field: &Field) -> Option<SqlType> {
        if let Some(name) = field.metadata().get(SQL_TYPE_KEY) {
            if name == "json" {
                return Some(SqlType::Json);
            }
            if name == "jsonb" {
                return Some(SqlType::Jsonb);
            }
            if let Some(n) = name
                .strip_prefix("character varying(")
                .and_then(|r| r.strip_suffix(')'))
            {
                return n.parse().ok().map(|n| SqlType::Varchar(Some(n)));
            }
        }
        Some(match field.data_type() {
            DataType::Boolean => SqlType::Boolean,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => SqlType::SmallInt,
            DataType::Int32 | DataType::UInt16 => SqlType::Integer,
            DataType::Int64 | DataType::UInt64 => SqlType::BigInt,
            DataType::Float16 | DataType::Float32 => SqlType::Real,
            DataType::Float64 => SqlType::Double,
            DataType::Decimal128(p, s) => SqlType::Numeric {
                precision: *p,
                scale: *s,
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::Text,
            DataType::Date32 | DataType::Date64 => SqlType::Date,
            DataType::Timestamp(_, None) => SqlType::Timestamp,
            DataType::Timestamp(_, Some(_)) => SqlType::Timestamptz,
            // `timestamp - timestamp`: PostgreSQL's result is an interval.
            DataType::Interval(_) | DataType::Duration(_) => SqlType::Interval,
            _ => return None,
        })
    }

    /// Families used to decide whether a value may be assigned to a column
    /// (PostgreSQL's assignment casts): a mismatch is 42804.
    pub fn accepts(&self, source: &DataType) -> bool {
        use DataType as D;
        let numeric_target = matches!(
            self,
            SqlType::SmallInt
                | SqlType::Integer
                | SqlType::BigInt
                | SqlType::Real
                | SqlType::Double
                | SqlType::Numeric { .. }
        );
        match source {
            D::Null | D::Utf8 | D::LargeUtf8 | D::Utf8View => true,
            D::Boolean => matches!(self, SqlType::Boolean) || self.is_text(),
            d if d.is_numeric() => numeric_target || self.is_text(),
            D::Date32 | D::Date64 | D::Timestamp(_, _) => {
                matches!(
                    self,
                    SqlType::Date | SqlType::Timestamp | SqlType::Timestamptz
                ) || self.is_text()
            }
            D::Interval(_) | D::Duration(_) => matches!(self, SqlType::Interval) || self.is_text(),
            _ => self.is_text(),
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(
            self,
            SqlType::Varchar(_) | SqlType::Text | SqlType::Json | SqlType::Jsonb
        )
    }
}

fn float_bits(info: &ast::ExactNumberInfo) -> Option<u64> {
    match info {
        ast::ExactNumberInfo::Precision(p) | ast::ExactNumberInfo::PrecisionAndScale(p, _) => {
            Some(*p)
        }
        ast::ExactNumberInfo::None => None,
    }
}

fn numeric(info: &ast::ExactNumberInfo) -> Result<SqlType> {
    let (precision, scale) = match info {
        ast::ExactNumberInfo::None => return Ok(numeric_type(DEFAULT_NUMERIC)),
        ast::ExactNumberInfo::Precision(p) => (*p, 0),
        ast::ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
    };
    if !(1..=38).contains(&precision) {
        return Err(Error::InvalidParameter(format!(
            "NUMERIC precision {precision} must be between 1 and 38"
        )));
    }
    if scale < 0 || scale as u64 > precision {
        return Err(Error::InvalidParameter(format!(
            "NUMERIC scale {scale} must be between 0 and precision {precision}"
        )));
    }
    Ok(numeric_type((precision as u8, scale as i8)))
}

fn numeric_type((precision, scale): (u8, i8)) -> SqlType {
    SqlType::Numeric { precision, scale }
}

fn char_len(len: Option<&ast::CharacterLength>) -> Result<Option<u32>> {
    match len {
        None | Some(ast::CharacterLength::Max) => Ok(None),
        Some(ast::CharacterLength::IntegerLength { length, .. }) => {
            if *length == 0 || *length > 10_485_760 {
                return Err(Error::InvalidParameter(format!(
                    "length for type varchar must be between 1 and 10485760, not {length}"
                )));
            }
            Ok(Some(*length as u32))
        }
    }
}

fn custom(name: &str) -> Result<SqlType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "timestamptz" => SqlType::Timestamptz,
        "int2" => SqlType::SmallInt,
        "int4" => SqlType::Integer,
        "int8" => SqlType::BigInt,
        "serial" | "bigserial" | "smallserial" => {
            return Err(Error::unsupported(
                format!("column type {name}"),
                "Declare the column as integer or bigint and supply its values.",
            ))
        }
        "float4" => SqlType::Real,
        "float8" => SqlType::Double,
        "bool" => SqlType::Boolean,
        "json" => SqlType::Json,
        "jsonb" => SqlType::Jsonb,
        "interval" => SqlType::Interval,
        other => {
            return Err(Error::UndefinedObject(format!(
                "type \"{other}\" does not exist"
            )))
        }
    })
}

/// A size for people: `512 B`, `3.4 MiB`.
pub fn human_bytes(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
