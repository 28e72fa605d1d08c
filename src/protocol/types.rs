//! Postgres type OIDs and value formats. **Architecture Invariant:** this
//! module (with the `pg_catalog` emulation) is the only place that knows
//! type OIDs; everything else speaks Arrow types and [`SqlType`].

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, IntervalUnit, TimeUnit};
use datafusion::scalar::ScalarValue;
use pgwire::api::Type;

use crate::error::{Error, Result};
use crate::sql::copy_format::parse_text_value;
use crate::types::{SqlType, UTC};

/// The Postgres type a result column is described with.
pub fn pg_type(field: &Field) -> Type {
    match field.data_type() {
        DataType::UInt32 => return Type::OID,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => return Type::BYTEA,
        DataType::Int8 => return Type::INT2,
        _ => {}
    }
    match SqlType::of_field(field) {
        Some(t) => pg_type_of_sql(&t),
        None => Type::TEXT,
    }
}

pub fn pg_type_of_sql(t: &SqlType) -> Type {
    match t {
        SqlType::Boolean => Type::BOOL,
        SqlType::SmallInt => Type::INT2,
        SqlType::Integer => Type::INT4,
        SqlType::BigInt => Type::INT8,
        SqlType::Real => Type::FLOAT4,
        SqlType::Double => Type::FLOAT8,
        SqlType::Numeric { .. } => Type::NUMERIC,
        SqlType::Varchar(_) => Type::VARCHAR,
        SqlType::Text => Type::TEXT,
        SqlType::Date => Type::DATE,
        SqlType::Timestamp => Type::TIMESTAMP,
        SqlType::Timestamptz => Type::TIMESTAMPTZ,
        SqlType::Interval => Type::INTERVAL,
        SqlType::Json => Type::JSON,
        SqlType::Jsonb => Type::JSONB,
    }
}

/// The type modifier Postgres reports for a column (varchar length, numeric precision).
pub fn type_modifier(field: &Field) -> i32 {
    match SqlType::of_field(field) {
        Some(SqlType::Varchar(Some(n))) => n as i32 + 4,
        Some(SqlType::Numeric { precision, scale })
            if field.metadata().contains_key(crate::types::SQL_TYPE_KEY) =>
        {
            ((precision as i32) << 16 | scale as i32) + 4
        }
        _ => -1,
    }
}

/// The Arrow type a client-declared parameter type maps to.
pub fn arrow_type_of_pg(t: &Type) -> Option<DataType> {
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::OID => DataType::UInt32,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::NUMERIC => {
            let (p, s) = crate::types::DEFAULT_NUMERIC;
            DataType::Decimal128(p, s)
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::JSONB => {
            DataType::Utf8
        }
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        Type::INTERVAL => DataType::Interval(IntervalUnit::MonthDayNano),
        _ => return None,
    })
}

/// Decodes one bound parameter into a value of `target`.
pub fn decode_param(
    bytes: Option<&[u8]>,
    pg: &Type,
    binary: bool,
    target: &DataType,
) -> Result<ScalarValue> {
    let Some(bytes) = bytes else {
        return Ok(ScalarValue::try_from(target)?);
    };
    let field = Field::new("param", target.clone(), true);
    if !binary {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::InvalidText("parameter is not valid UTF-8".into()))?;
        return parse_text_value(text, target, &field).map_err(|e| Error::BadCopyData {
            sqlstate: e.sqlstate,
            message: e.message,
            context: None,
        });
    }
    let value = decode_binary(bytes, pg)?;
    if &value.data_type() == target {
        return Ok(value);
    }
    Ok(value.cast_to(target)?)
}

const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn decode_binary(bytes: &[u8], pg: &Type) -> Result<ScalarValue> {
    let bad = || {
        Error::ProtocolViolation(format!(
            "incorrect binary data format for type {}",
            pg.name()
        ))
    };
    let int = |n: usize| -> Result<i64> {
        let b = bytes
            .get(..n)
            .filter(|_| bytes.len() == n)
            .ok_or_else(bad)?;
        Ok(match n {
            2 => i16::from_be_bytes([b[0], b[1]]) as i64,
            4 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => i64::from_be_bytes(b.try_into().map_err(|_| bad())?),
        })
    };
    Ok(match *pg {
        Type::BOOL => ScalarValue::Boolean(Some(bytes.first().ok_or_else(bad)? != &0)),
        Type::INT2 => ScalarValue::Int16(Some(int(2)? as i16)),
        Type::INT4 => ScalarValue::Int32(Some(int(4)? as i32)),
        Type::INT8 => ScalarValue::Int64(Some(int(8)?)),
        Type::OID => ScalarValue::UInt32(Some(int(4)? as u32)),
        Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_bits(int(4)? as u32))),
        Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_bits(int(8)? as u64))),
        Type::DATE => ScalarValue::Date32(Some(int(4)? as i32 + PG_EPOCH_DAYS)),
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(Some(int(8)? + PG_EPOCH_MICROS), None),
        Type::TIMESTAMPTZ => {
            ScalarValue::TimestampMicrosecond(Some(int(8)? + PG_EPOCH_MICROS), Some(UTC.into()))
        }
        Type::INTERVAL => {
            let b = bytes
                .get(..16)
                .filter(|_| bytes.len() == 16)
                .ok_or_else(bad)?;
            let micros = i64::from_be_bytes(b[..8].try_into().map_err(|_| bad())?);
            let days = i32::from_be_bytes(b[8..12].try_into().map_err(|_| bad())?);
            let months = i32::from_be_bytes(b[12..16].try_into().map_err(|_| bad())?);
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
                months,
                days,
                micros * 1000,
            )))
        }
        Type::NUMERIC => {
            let text = numeric_binary_to_text(bytes).ok_or_else(bad)?;
            let (p, s) = crate::types::DEFAULT_NUMERIC;
            let dt = DataType::Decimal128(p, s);
            parse_text_value(&text, &dt, &Field::new("p", dt.clone(), true)).map_err(|e| {
                Error::BadCopyData {
                    sqlstate: e.sqlstate,
                    message: e.message,
                    context: None,
                }
            })?
        }
        Type::JSONB => {
            let rest = bytes.strip_prefix(&[1u8]).ok_or_else(bad)?;
            ScalarValue::Utf8(Some(String::from_utf8(rest.to_vec()).map_err(|_| bad())?))
        }
        _ => ScalarValue::Utf8(Some(String::from_utf8(bytes.to_vec()).map_err(|_| bad())?)),
    })
}

/// Postgres' binary NUMERIC (base-10000 digits) as decimal text.
fn numeric_binary_to_text(bytes: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> {
        Some(i16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]))
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i32;
    let sign = word(4)? as u16;
    let dscale = word(6)? as usize;
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let digits: Vec<i16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    let mut int_part = String::new();
    for k in 0..=weight.max(-1) {
        let d = digits.get(k as usize).copied().unwrap_or(0);
        if int_part.is_empty() {
            int_part = d.to_string();
        } else {
            int_part.push_str(&format!("{d:04}"));
        }
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let mut frac = String::new();
    let mut k = weight + 1;
    while frac.len() < dscale {
        let d = if k >= 0 {
            digits.get(k as usize).copied().unwrap_or(0)
        } else {
            0
        };
        frac.push_str(&format!("{d:04}"));
        k += 1;
    }
    frac.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int_part}")
    } else {
        format!("{sign}{int_part}.{frac}")
    })
}

pub fn date_of(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days + 719_163)
}

pub fn datetime_of(value: i64, unit: &TimeUnit) -> Option<NaiveDateTime> {
    let micros = match unit {
        TimeUnit::Second => value.checked_mul(1_000_000)?,
        TimeUnit::Millisecond => value.checked_mul(1_000)?,
        TimeUnit::Microsecond => value,
        TimeUnit::Nanosecond => value.div_euclid(1_000),
    };
    DateTime::<Utc>::from_timestamp_micros(micros).map(|d| d.naive_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_binary() {
        // 12345.678: weight 1, digits [1, 2345, 6780], dscale 3
        let mut b = Vec::new();
        for w in [3i16, 1, 0, 3, 1, 2345, 6780] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric_binary_to_text(&b).as_deref(), Some("12345.678"));
        let mut z = Vec::new();
        for w in [1i16, -1, 0x4000u16 as i16, 2, 5000] {
            z.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric_binary_to_text(&z).as_deref(), Some("-0.50"));
    }

    #[test]
    fn dates() {
        assert_eq!(date_of(0), NaiveDate::from_ymd_opt(1970, 1, 1));
    }
}
