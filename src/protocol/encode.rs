//! Arrow batches to Postgres rows: RowDescription fields, DataRows in text
//! or binary format, and COPY TO output.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{self as dt, DataType, IntervalUnit, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::portal::Format;
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyTextOptions, DataRowEncoder, FieldFormat, FieldInfo,
};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::copy::CopyData;
use pgwire::messages::data::DataRow;

use super::timezone::{format_instant, format_naive, Zone};
use super::types::{date_of, datetime_of, pg_type, type_modifier};
use crate::sql::copy_format::CopyFormat;
use crate::sql::CopyOptions;

/// RowDescription fields for a schema, in the requested formats.
pub fn field_infos(schema: &Schema, format: Option<&Format>) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let format = format.map_or(FieldFormat::Text, |f| f.format_for(i));
            FieldInfo::new(field.name().clone(), None, None, pg_type(field), format)
                .with_type_modifier(type_modifier(field))
        })
        .collect()
}

/// Encodes a batch into DataRows.
pub fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    zone: &Zone,
) -> PgWireResult<Vec<DataRow>> {
    let mut encoder = DataRowEncoder::new(Arc::clone(fields));
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (col, array) in batch.columns().iter().enumerate() {
            encode_value(
                &mut Sink::Row(&mut encoder),
                array.as_ref(),
                zone,
                row,
                &fields[col],
            )?;
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

/// Encodes batches as COPY TO STDOUT data messages.
pub fn encode_copy(
    batches: &[RecordBatch],
    schema: &Schema,
    options: &CopyOptions,
    zone: &Zone,
) -> PgWireResult<Vec<CopyData>> {
    let fields = Arc::new(field_infos(schema, None));
    let mut encoder = match options.format {
        CopyFormat::Text => CopyEncoder::new_text(
            Arc::clone(&fields),
            CopyTextOptions {
                delimiter: (options.delimiter as char).to_string().into(),
                null_string: options.null.clone().into(),
            },
        ),
        CopyFormat::Csv => CopyEncoder::new_csv(
            Arc::clone(&fields),
            CopyCsvOptions {
                delimiter: (options.delimiter as char).to_string().into(),
                quote: (options.quote as char).to_string().into(),
                escape: (options.escape as char).to_string().into(),
                null_string: options.null.clone().into(),
                ..CopyCsvOptions::default()
            },
        ),
    };
    let mut out = Vec::new();
    // The header travels with the first row: the protocol layer counts
    // data messages for the `COPY n` tag, and the header is no row.
    let mut header = options.header.then(|| {
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        format!("{}\n", names.join(&(options.delimiter as char).to_string()))
    });
    for batch in batches {
        for row in 0..batch.num_rows() {
            for (col, array) in batch.columns().iter().enumerate() {
                encode_value(
                    &mut Sink::Copy(&mut encoder),
                    array.as_ref(),
                    zone,
                    row,
                    &fields[col],
                )?;
            }
            let row = encoder.take_copy();
            match header.take() {
                Some(h) => {
                    let mut data = h.into_bytes();
                    data.extend_from_slice(&row.data);
                    out.push(CopyData::new(data.into()));
                }
                None => out.push(row),
            }
        }
    }
    if let Some(h) = header {
        out.push(CopyData::new(h.into_bytes().into()));
    }
    Ok(out)
}

enum Sink<'a> {
    Row(&'a mut DataRowEncoder),
    Copy(&'a mut CopyEncoder),
}

impl Sink<'_> {
    fn put<T>(&mut self, value: &T, ty: &Type, format: FieldFormat) -> PgWireResult<()>
    where
        T: postgres_types::ToSql + pgwire::types::ToSqlText + Sized,
    {
        match self {
            Sink::Row(e) => {
                e.encode_field_with_type_and_format(value, ty, format, &Default::default())
            }
            Sink::Copy(e) => e.encode_field(value),
        }
    }
}

fn encode_value(
    sink: &mut Sink,
    array: &dyn Array,
    zone: &Zone,
    row: usize,
    info: &FieldInfo,
) -> PgWireResult<()> {
    let ty = info.datatype().clone();
    let format = info.format();
    if array.is_null(row) {
        return sink.put(&None::<i32>, &ty, format);
    }
    match array.data_type() {
        DataType::Boolean => sink.put(&array.as_boolean().value(row), &ty, format),
        DataType::Int8 => sink.put(
            &(array.as_primitive::<dt::Int8Type>().value(row) as i16),
            &ty,
            format,
        ),
        DataType::Int16 => sink.put(
            &array.as_primitive::<dt::Int16Type>().value(row),
            &ty,
            format,
        ),
        DataType::Int32 => sink.put(
            &array.as_primitive::<dt::Int32Type>().value(row),
            &ty,
            format,
        ),
        DataType::Int64 => sink.put(
            &array.as_primitive::<dt::Int64Type>().value(row),
            &ty,
            format,
        ),
        DataType::UInt8 => sink.put(
            &(array.as_primitive::<dt::UInt8Type>().value(row) as i16),
            &ty,
            format,
        ),
        DataType::UInt16 => sink.put(
            &(array.as_primitive::<dt::UInt16Type>().value(row) as i32),
            &ty,
            format,
        ),
        DataType::UInt32 => sink.put(
            &array.as_primitive::<dt::UInt32Type>().value(row),
            &ty,
            format,
        ),
        DataType::UInt64 => sink.put(
            &(array.as_primitive::<dt::UInt64Type>().value(row) as i64),
            &ty,
            format,
        ),
        DataType::Float32 if format == FieldFormat::Text => {
            let v = array.as_primitive::<dt::Float32Type>().value(row);
            sink.put(&float_text(v as f64, 6, &v.to_string()), &ty, format)
        }
        DataType::Float64 if format == FieldFormat::Text => {
            let v = array.as_primitive::<dt::Float64Type>().value(row);
            sink.put(&float_text(v, 15, &v.to_string()), &ty, format)
        }
        DataType::Float32 => sink.put(
            &array.as_primitive::<dt::Float32Type>().value(row),
            &ty,
            format,
        ),
        DataType::Float64 => sink.put(
            &array.as_primitive::<dt::Float64Type>().value(row),
            &ty,
            format,
        ),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            if ty == Type::JSONB && format == FieldFormat::Binary =>
        {
            let text = match array.data_type() {
                DataType::Utf8 => array.as_string::<i32>().value(row),
                DataType::LargeUtf8 => array.as_string::<i64>().value(row),
                _ => array.as_string_view().value(row),
            };
            let json: serde_json::Value =
                serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.to_string()));
            sink.put(&json, &ty, format)
        }
        DataType::Utf8 => sink.put(&array.as_string::<i32>().value(row), &ty, format),
        DataType::LargeUtf8 => sink.put(&array.as_string::<i64>().value(row), &ty, format),
        DataType::Utf8View => sink.put(&array.as_string_view().value(row), &ty, format),
        DataType::Date32 => match date_of(array.as_primitive::<dt::Date32Type>().value(row)) {
            Some(d) => sink.put(&d, &ty, format),
            None => encode_display(sink, array, row, &ty),
        },
        DataType::Timestamp(unit, tz) => {
            let zone = tz.as_ref().map(|_| zone);
            encode_timestamp(sink, array, row, unit, zone, &ty, format)
        }
        DataType::Decimal128(_, scale) => {
            let v = array.as_primitive::<dt::Decimal128Type>().value(row);
            match rust_decimal::Decimal::try_from_i128_with_scale(v, *scale as u32) {
                Ok(d) if format == FieldFormat::Binary => sink.put(&d, &ty, format),
                _ => encode_display(sink, array, row, &ty),
            }
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array
                .as_primitive::<dt::IntervalMonthDayNanoType>()
                .value(row);
            put_interval(sink, v.months, v.days, v.nanoseconds / 1000, &ty, format)
        }
        DataType::Duration(unit) => {
            let v = match unit {
                dt::TimeUnit::Second => {
                    array.as_primitive::<dt::DurationSecondType>().value(row) * 1_000_000
                }
                dt::TimeUnit::Millisecond => {
                    array
                        .as_primitive::<dt::DurationMillisecondType>()
                        .value(row)
                        * 1_000
                }
                dt::TimeUnit::Microsecond => array
                    .as_primitive::<dt::DurationMicrosecondType>()
                    .value(row),
                dt::TimeUnit::Nanosecond => {
                    array
                        .as_primitive::<dt::DurationNanosecondType>()
                        .value(row)
                        / 1_000
                }
            };
            // As PostgreSQL subtracts timestamps: whole days, then the time.
            const DAY: i64 = 86_400_000_000;
            put_interval(sink, 0, (v / DAY) as i32, v % DAY, &ty, format)
        }
        DataType::List(_) | DataType::LargeList(_) => encode_list(sink, array, row, &ty),
        _ => encode_display(sink, array, row, &ty),
    }
}

/// An interval: in text, as PostgreSQL writes it with its default
/// IntervalStyle (`postgres`); in binary, its wire form.
fn put_interval(
    sink: &mut Sink,
    months: i32,
    days: i32,
    micros: i64,
    ty: &Type,
    format: FieldFormat,
) -> PgWireResult<()> {
    match format {
        FieldFormat::Text => sink.put(&interval_text(months, days, micros), ty, format),
        _ => sink.put(
            &pg_interval::Interval::new(months, days, micros),
            ty,
            format,
        ),
    }
}

/// PostgreSQL's `postgres` IntervalStyle: `1 year 2 mons -3 days
/// +04:05:06.5`. A part after a negative one carries its sign; the
/// seconds' fraction has no trailing zeros.
fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::new();
    let mut before_negative = false;
    for (value, unit) in [(months / 12, "year"), (months % 12, "mon"), (days, "day")] {
        if value == 0 {
            continue;
        }
        let space = if out.is_empty() { "" } else { " " };
        let plus = if before_negative && value > 0 {
            "+"
        } else {
            ""
        };
        let plural = if value != 1 { "s" } else { "" };
        out.push_str(&format!("{space}{plus}{value} {unit}{plural}"));
        before_negative = value < 0;
    }
    if out.is_empty() || micros != 0 {
        let sign = if micros < 0 {
            "-"
        } else if before_negative {
            "+"
        } else {
            ""
        };
        let us = micros.unsigned_abs();
        let (hours, minutes) = (us / 3_600_000_000, us / 60_000_000 % 60);
        let (seconds, fraction) = (us / 1_000_000 % 60, us % 1_000_000);
        let space = if out.is_empty() { "" } else { " " };
        out.push_str(&format!(
            "{space}{sign}{hours:02}:{minutes:02}:{seconds:02}"
        ));
        if fraction != 0 {
            let digits = format!("{fraction:06}");
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
    }
    out
}

fn encode_timestamp(
    sink: &mut Sink,
    array: &dyn Array,
    row: usize,
    unit: &dt::TimeUnit,
    zone: Option<&Zone>,
    ty: &Type,
    format: FieldFormat,
) -> PgWireResult<()> {
    let raw = match unit {
        dt::TimeUnit::Second => array.as_primitive::<dt::TimestampSecondType>().value(row),
        dt::TimeUnit::Millisecond => array
            .as_primitive::<dt::TimestampMillisecondType>()
            .value(row),
        dt::TimeUnit::Microsecond => array
            .as_primitive::<dt::TimestampMicrosecondType>()
            .value(row),
        dt::TimeUnit::Nanosecond => array
            .as_primitive::<dt::TimestampNanosecondType>()
            .value(row),
    };
    match datetime_of(raw, unit) {
        Some(naive) if format == FieldFormat::Text => {
            let text = match zone {
                Some(zone) => format_instant(naive, zone),
                None => format_naive(naive),
            };
            sink.put(&text, ty, format)
        }
        Some(naive) if zone.is_some() => sink.put(
            &DateTime::<Utc>::from_naive_utc_and_offset(naive, Utc),
            ty,
            format,
        ),
        Some(naive) => sink.put(&naive, ty, format),
        None => encode_display(sink, array, row, ty),
    }
}

/// A float as PostgreSQL prints it: shortest round-trip digits, in
/// exponent form when the exponent is below -4 or at least `max_exp`.
/// `shortest` is Rust's shortest round-trip rendering of the value.
fn float_text(v: f64, max_exp: i32, shortest: &str) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let exp = v.abs().log10().floor() as i32;
    if (-4..max_exp).contains(&exp) {
        return shortest.trim_end_matches(".0").to_string();
    }
    // Mantissa digits from the shortest rendering, without point or sign.
    let digits: String = shortest
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect::<String>()
        .trim_start_matches('0')
        .trim_end_matches('0')
        .to_string();
    let digits = if digits.is_empty() {
        "0".to_string()
    } else {
        digits
    };
    let sign = if v < 0.0 { "-" } else { "" };
    let mantissa = if digits.len() > 1 {
        format!("{}.{}", &digits[..1], &digits[1..])
    } else {
        digits
    };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}e{esign}{:02}", exp.abs())
}

/// Arrays as Postgres array literals (`{a,b}`), in text.
fn encode_list(sink: &mut Sink, array: &dyn Array, row: usize, ty: &Type) -> PgWireResult<()> {
    let values = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value(row),
        _ => array.as_list::<i64>().value(row),
    };
    let options = FormatOptions::default().with_null("NULL");
    let formatter = ArrayFormatter::try_new(values.as_ref(), &options)
        .map_err(|e| pgwire::error::PgWireError::ApiError(Box::new(e)))?;
    let items: Vec<String> = (0..values.len())
        .map(|i| quote_array_item(&formatter.value(i).to_string(), values.is_null(i)))
        .collect();
    sink.put(&format!("{{{}}}", items.join(",")), ty, FieldFormat::Text)
}

fn quote_array_item(item: &str, is_null: bool) -> String {
    if is_null {
        return "NULL".to_string();
    }
    if item.is_empty()
        || item.contains([',', '{', '}', '"', '\\', ' '])
        || item.eq_ignore_ascii_case("null")
    {
        format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        item.to_string()
    }
}

/// Any other value in Arrow's display form, sent as text.
fn encode_display(sink: &mut Sink, array: &dyn Array, row: usize, ty: &Type) -> PgWireResult<()> {
    let options = FormatOptions::default();
    let formatter = ArrayFormatter::try_new(array, &options)
        .map_err(|e| pgwire::error::PgWireError::ApiError(Box::new(e)))?;
    sink.put(&formatter.value(row).to_string(), ty, FieldFormat::Text)
}

#[cfg(test)]
mod interval_tests {
    use super::interval_text;

    #[test]
    fn intervals_read_as_postgresql_writes_them() {
        const H: i64 = 3_600_000_000;
        for (months, days, micros, text) in [
            (0, 0, 0, "00:00:00"),
            (0, 0, 1_500_000, "00:00:01.5"),
            (0, 0, 1, "00:00:00.000001"),
            (14, 3, 4 * H + 300_000_000, "1 year 2 mons 3 days 04:05:00"),
            (1, 0, 0, "1 mon"),
            (-24, 0, 0, "-2 years"),
            (0, -1, 2 * H, "-1 days +02:00:00"),
            (0, 1, -2 * H, "1 day -02:00:00"),
            (0, 0, -90_000_000, "-00:01:30"),
            (0, 2, 30 * H, "2 days 30:00:00"),
        ] {
            assert_eq!(interval_text(months, days, micros), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::float_text;

    fn f8(v: f64) -> String {
        float_text(v, 15, &v.to_string())
    }

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(f8(2.0), "2");
        assert_eq!(f8(21.5), "21.5");
        assert_eq!(f8(-0.25), "-0.25");
        assert_eq!(f8(1e20), "1e+20");
        assert_eq!(f8(1.5e-7), "1.5e-07");
        assert_eq!(f8(123456789012345.0), "123456789012345");
        assert_eq!(f8(f64::NAN), "NaN");
        assert_eq!(
            float_text(1234567.0, 6, &1234567f32.to_string()),
            "1.234567e+06"
        );
    }
}
