//! Message payloads → Arrow rows of a source's declared schema.
//!
//! This file owns the JSON and CSV encodings of source messages: matching
//! JSON keys to columns, converting each JSON value to its column's type, and
//! setting every message that does not decode aside as a [`BadRecord`] with
//! a short reason. Decoding never fails on bad data: a fetch's worth of
//! messages gives the good rows as one `RecordBatch` plus the bad ones with
//! their input positions.
//!
//! PostgreSQL's input syntax for strings (timestamps, dates, numerics,
//! intervals, `varchar(n)` limits, JSON validity) and the CSV field rules come
//! from [`crate::sql::copy_format`], so a value a source accepts is a value
//! `COPY` accepts. Fetching messages, offsets, and keeping bad records in
//! `eddy_catalog.source_errors` belong to the source runner.

use std::fmt::{self, Write as _};
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{
    DataType, Field, IntervalMonthDayNano, IntervalUnit, Schema, SchemaRef, TimeUnit,
};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::ScalarValue;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as _;

use crate::error::{Error, Result};
use crate::sql::copy_format::{
    self, parse_text_value, CopyDecoder, CopyError, CopyOptions, PG_TYPE_METADATA_KEY,
};
use crate::types::SqlType;

/// Default limit on one message's payload: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// CSV messages are decoded this many at a time, which bounds the work
/// repeated after a bad record (see [`Decoder::decode`]).
const CSV_CHUNK_MESSAGES: usize = 1024;

/// Found strings are quoted in reasons up to this many characters.
const SHOWN_STRING_CHARS: usize = 40;

/// The encoding of a source's message payloads (`ENCODE JSON | CSV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encode {
    /// One JSON object per message; keys name columns.
    Json,
    /// One CSV record per message, fields in the declared column order, in
    /// PostgreSQL's CSV forms (quote `"`, an unquoted empty field is NULL).
    Csv { delimiter: u8 },
}

/// What a JSON object without a key for some column means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingFields {
    /// The message is a bad record (`missing field "x"`).
    #[default]
    Error,
    /// The column is NULL.
    Null,
}

/// Limits and leniency of a [`Decoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderOptions {
    /// Larger payloads are bad records, never parsed.
    pub max_message_bytes: usize,
    pub missing_fields: MissingFields,
    /// Threads a large call to [`Decoder::decode`] is spread over (the
    /// server gives its dataflow worker count).
    pub threads: usize,
}

impl Default for DecoderOptions {
    fn default() -> Self {
        DecoderOptions {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            missing_fields: MissingFields::Error,
            threads: 1,
        }
    }
}

/// Messages each thread of a parallel [`Decoder::decode`] gets at least:
/// below this, a call is decoded on the caller's thread alone.
const PARALLEL_MESSAGES: usize = 4_096;

/// The result of decoding a slice of messages.
#[derive(Debug)]
pub struct Decoded {
    /// The good rows, in input order, with the decoder's schema.
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of its message in the input.
    pub rows: Vec<u32>,
    /// The messages that did not decode, in input order.
    pub bad: Vec<BadRecord>,
}

/// A message that did not decode, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Index of the message in the input slice.
    pub index: u32,
    /// A short, specific reason, e.g. `field "n": expected integer, found string "x"`.
    pub reason: String,
}

/// Decodes messages of one encoding into rows of one schema. Immutable and
/// shareable: every call to [`Decoder::decode`] uses its own buffers.
#[derive(Debug)]
pub struct Decoder {
    schema: SchemaRef,
    encode: Encode,
    options: DecoderOptions,
    columns: Vec<Column>,
    /// The schema as `copy_format` reads it (PG type names in its metadata).
    copy_schema: SchemaRef,
    csv: CopyOptions,
}

impl Decoder {
    /// A decoder of `encode` messages into rows of `schema`. Refuses (0A000)
    /// a column type it cannot decode, naming the column and the type, and
    /// (22023) an unusable CSV delimiter.
    pub fn new(schema: SchemaRef, encode: Encode, options: DecoderOptions) -> Result<Decoder> {
        let columns = schema
            .fields()
            .iter()
            .map(|field| Column::new(field))
            .collect::<Result<Vec<_>>>()?;
        let copy_fields: Vec<Field> = columns.iter().map(|c| c.field.clone()).collect();
        let copy_schema = Arc::new(Schema::new(copy_fields));
        let csv = CopyOptions {
            delimiter: match encode {
                Encode::Csv { delimiter } => delimiter,
                Encode::Json => b',',
            },
            ..CopyOptions::csv()
        };
        csv.validate()
            .map_err(|e| Error::InvalidParameter(format!("ENCODE CSV: {}", e.message)))?;
        Ok(Decoder {
            schema,
            encode,
            options,
            columns,
            copy_schema,
            csv,
        })
    }

    /// The schema of the rows it produces.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Decodes many messages at once (a fetch's worth); `None` is a message
    /// without a payload (a Kafka tombstone). Never fails on bad data: an
    /// error is a bug or a slice of more than `u32::MAX` messages.
    ///
    /// CSV messages are decoded by `copy_format`'s COPY decoder, many per
    /// call, which stops at the first bad record; the good messages before it
    /// are then decoded again, so each message is decoded at most twice.
    pub fn decode(&self, payloads: &[Option<&[u8]>]) -> Result<Decoded> {
        if u32::try_from(payloads.len()).is_err() {
            return Err(Error::Internal(format!(
                "{} messages in one decode call, more than an index can number",
                payloads.len()
            )));
        }
        let threads = self
            .options
            .threads
            .min(payloads.len() / PARALLEL_MESSAGES)
            .max(1);
        if threads == 1 {
            return self.decode_serial(payloads);
        }
        // Contiguous slices, one per thread, the first on this one; their
        // results are joined in input order.
        let size = payloads.len().div_ceil(threads);
        let mut slices = payloads.chunks(size);
        let first = slices.next().unwrap_or_default();
        let parts = std::thread::scope(|scope| {
            // A slice whose thread cannot start is decoded here.
            let others: Vec<_> = slices
                .map(|slice| {
                    std::thread::Builder::new()
                        .spawn_scoped(scope, move || self.decode_serial(slice))
                        .map_err(|_| slice)
                })
                .collect();
            let mut parts = vec![self.decode_serial(first)];
            for other in others {
                parts.push(match other {
                    Ok(handle) => handle.join().unwrap_or_else(|_| {
                        Err(Error::Internal("a decoding thread panicked".into()))
                    }),
                    Err(slice) => self.decode_serial(slice),
                });
            }
            parts
        });
        let mut batches = Vec::with_capacity(parts.len());
        let mut rows = Vec::with_capacity(payloads.len());
        let mut bad = Vec::new();
        for (part, start) in parts.into_iter().zip((0u32..).step_by(size)) {
            let part = part?;
            batches.push(part.batch);
            rows.extend(part.rows.into_iter().map(|r| r + start));
            bad.extend(part.bad.into_iter().map(|b| BadRecord {
                index: b.index + start,
                ..b
            }));
        }
        let batch = concat_batches(&self.schema, &batches)
            .map_err(|e| Error::Internal(format!("joining decoded slices: {e}")))?;
        Ok(Decoded { batch, rows, bad })
    }

    /// [`Decoder::decode`] on this thread.
    fn decode_serial(&self, payloads: &[Option<&[u8]>]) -> Result<Decoded> {
        match self.encode {
            Encode::Json => self.decode_json(payloads),
            Encode::Csv { .. } => self.decode_csv(payloads),
        }
    }

    /// The payload if it may be parsed at all.
    fn screen<'a>(&self, payload: Option<&'a [u8]>) -> Result<&'a [u8], String> {
        let bytes = payload.ok_or_else(|| "message has no payload (a tombstone)".to_string())?;
        if bytes.len() > self.options.max_message_bytes {
            return Err(format!(
                "message of {} bytes exceeds the {}-byte limit",
                bytes.len(),
                self.options.max_message_bytes
            ));
        }
        Ok(bytes)
    }

    fn finish_batch(&self, builders: Vec<Builder>, rows: usize) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), arrays, &options)
            .map_err(|e| Error::Internal(format!("decoder built an invalid batch: {e}")))
    }
}

// ---------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------

/// How a column's values are decoded and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// `text`, `varchar`, `varchar(n)` (the limit in characters).
    Text(Option<usize>),
    /// `json` / `jsonb`: any JSON value, stored as its compact JSON text.
    Json,
    Date,
    Timestamp,
    Interval,
}

#[derive(Debug)]
struct Column {
    name: String,
    kind: Kind,
    nullable: bool,
    /// The SQL type name, for reasons.
    type_name: String,
    /// The field as `copy_format` reads it: `eddy.pg_type` metadata added
    /// for `varchar(n)`, `json` and `jsonb`.
    field: Field,
}

impl Column {
    fn new(field: &Field) -> Result<Column> {
        let sql_type = SqlType::of_field(field);
        let type_name = sql_type
            .as_ref()
            .map_or_else(|| field.data_type().to_string(), SqlType::sql_name);
        let kind = kind_of(field, sql_type.as_ref()).ok_or_else(|| {
            Error::unsupported(
                format!("decoding column \"{}\" of type {type_name}", field.name()),
                "Sources decode boolean, smallint, integer, bigint, real, double precision, \
                 numeric, text, varchar, date, timestamp, timestamptz, interval, json and jsonb.",
            )
        })?;
        let mut copy_field = field.clone();
        if matches!(kind, Kind::Json | Kind::Text(Some(_))) {
            let mut metadata = field.metadata().clone();
            metadata.insert(PG_TYPE_METADATA_KEY.to_string(), type_name.clone());
            copy_field = copy_field.with_metadata(metadata);
        }
        Ok(Column {
            name: field.name().clone(),
            kind,
            nullable: field.is_nullable(),
            type_name,
            field: copy_field,
        })
    }

    fn mismatch(&self, found: Found) -> Staged {
        let expected = match self.kind {
            Kind::Bool => "boolean",
            Kind::Int16 | Kind::Int32 | Kind::Int64 => "integer",
            Kind::Float32 | Kind::Float64 => "number",
            Kind::Decimal { .. } => "number or numeric string",
            Kind::Text(_) => "string",
            Kind::Json => "JSON value",
            Kind::Date => "date string",
            Kind::Timestamp => "timestamp string or epoch milliseconds",
            Kind::Interval => "interval string",
        };
        Staged::Bad(format!(
            "field \"{}\": expected {expected}, found {found}",
            self.name
        ))
    }

    fn out_of_range(&self, value: impl fmt::Display) -> Staged {
        Staged::Bad(format!(
            "field \"{}\": value {value} is out of range for type {}",
            self.name, self.type_name
        ))
    }

    fn stage_bool(&self, value: bool) -> Staged {
        match self.kind {
            Kind::Bool => Staged::Bool(value),
            _ => self.mismatch(Found::Bool(value)),
        }
    }

    fn stage_i64(&self, value: i64, scratch: &mut String) -> Staged {
        let fits = match self.kind {
            Kind::Int16 => i16::try_from(value).is_ok(),
            Kind::Int32 => i32::try_from(value).is_ok(),
            Kind::Int64 => true,
            Kind::Float32 | Kind::Float64 => return Staged::Float(value as f64),
            Kind::Decimal { precision, scale } => {
                return match exact_decimal(value as f64, precision, scale) {
                    Some(v) if value.unsigned_abs() < 1 << 53 => Staged::Decimal(v),
                    _ => self.stage_number_text(format_args!("{value}"), scratch),
                }
            }
            // Integers are epoch milliseconds.
            Kind::Timestamp => {
                return match value.checked_mul(1_000) {
                    Some(us) => Staged::Int(us),
                    None => self.out_of_range(value),
                }
            }
            _ => return self.mismatch(Found::Int(i128::from(value))),
        };
        if fits {
            Staged::Int(value)
        } else {
            self.out_of_range(value)
        }
    }

    fn stage_u64(&self, value: u64, scratch: &mut String) -> Staged {
        match i64::try_from(value) {
            Ok(value) => self.stage_i64(value, scratch),
            Err(_) => match self.kind {
                Kind::Int16 | Kind::Int32 | Kind::Int64 | Kind::Timestamp => {
                    self.out_of_range(value)
                }
                Kind::Float32 | Kind::Float64 => Staged::Float(value as f64),
                Kind::Decimal { .. } => self.stage_number_text(format_args!("{value}"), scratch),
                _ => self.mismatch(Found::Int(i128::from(value))),
            },
        }
    }

    fn stage_f64(&self, value: f64, scratch: &mut String) -> Staged {
        match self.kind {
            Kind::Float64 => Staged::Float(value),
            Kind::Float32 if (value as f32).is_finite() => Staged::Float(value),
            Kind::Float32 => self.out_of_range(value),
            Kind::Decimal { precision, scale } => match exact_decimal(value, precision, scale) {
                Some(v) => Staged::Decimal(v),
                None => self.stage_number_text(format_args!("{value}"), scratch),
            },
            // serde_json gives integers beyond u64 as floats.
            Kind::Int16 | Kind::Int32 | Kind::Int64 if value.fract() == 0.0 => {
                self.out_of_range(value)
            }
            _ => self.mismatch(Found::Float(value)),
        }
    }

    /// A JSON number for a numeric column, through PostgreSQL's numeric input.
    fn stage_number_text(&self, number: fmt::Arguments, scratch: &mut String) -> Staged {
        scratch.clear();
        // Writing to a String cannot fail.
        let _ = scratch.write_fmt(number);
        self.parse(scratch)
    }

    fn stage_str(&self, value: &str, text: &mut String) -> Staged {
        match self.kind {
            Kind::Text(limit) => {
                // The common case needs no check: no NUL, and no more bytes
                // than the limit has characters.
                let plain = !value.as_bytes().contains(&0)
                    && limit.is_none_or(|limit| value.len() <= limit);
                if plain {
                    return stage_text(text, value);
                }
                match parse_text_value(value, &DataType::Utf8, &self.field) {
                    Ok(ScalarValue::Utf8(Some(checked))) => stage_text(text, &checked),
                    Ok(other) => self.unexpected(&other),
                    Err(e) => self.invalid(&e),
                }
            }
            Kind::Decimal { .. } | Kind::Date | Kind::Timestamp | Kind::Interval => {
                self.parse(value)
            }
            _ => self.mismatch(Found::Str(value)),
        }
    }

    /// Text in PostgreSQL's input syntax for this column's type (one of
    /// the kinds [`Column::stage_str`] sends here).
    fn parse(&self, value: &str) -> Staged {
        let staged = match self.kind {
            Kind::Decimal { precision, scale } => {
                copy_format::parse_decimal(value, precision, scale).map(Staged::Decimal)
            }
            Kind::Date => copy_format::parse_date(value).map(|d| Staged::Int(i64::from(d))),
            Kind::Timestamp => {
                let with_tz = matches!(self.field.data_type(), DataType::Timestamp(_, Some(_)));
                copy_format::parse_timestamp_us(value, with_tz).map(Staged::Int)
            }
            Kind::Interval => copy_format::parse_interval(value).map(Staged::Interval),
            _ => return self.mismatch(Found::Str(value)),
        };
        staged.unwrap_or_else(|e| self.invalid(&e))
    }

    fn invalid(&self, error: &CopyError) -> Staged {
        Staged::Bad(format!("field \"{}\": {}", self.name, error.message))
    }

    /// `parse_text_value` answered with another type than asked: a bug, but
    /// one bad record is a gentler outcome than a panic.
    fn unexpected(&self, value: &ScalarValue) -> Staged {
        Staged::Bad(format!(
            "field \"{}\": internal error: parsing gave {value:?} for type {} (a bug)",
            self.name, self.type_name
        ))
    }
}

/// A JSON number as a `numeric(precision, scale)` value, straight from its
/// f64 when that is exact: the value times 10^scale lies within 10^-3 of an
/// integer and below 10^12 (where the f64's own error is under 10^-3), so
/// reading the number's text would round to the same integer. Anything else
/// (more digits than the scale, half-way cases, huge values, overflow of the
/// precision) is `None` and goes through PostgreSQL's numeric input, which
/// rounds and reports the same way COPY does.
fn exact_decimal(value: f64, precision: u8, scale: i8) -> Option<i128> {
    if !(0..=12).contains(&scale) {
        return None;
    }
    let scaled = value * 10f64.powi(i32::from(scale));
    if !scaled.is_finite() || scaled.abs() >= 1e12 {
        return None;
    }
    let rounded = scaled.round();
    if (scaled - rounded).abs() >= 1e-3 {
        return None;
    }
    let v = rounded as i128;
    (v.unsigned_abs() < 10u128.pow(u32::from(precision))).then_some(v)
}

fn kind_of(field: &Field, sql_type: Option<&SqlType>) -> Option<Kind> {
    Some(match field.data_type() {
        DataType::Boolean => Kind::Bool,
        DataType::Int16 => Kind::Int16,
        DataType::Int32 => Kind::Int32,
        DataType::Int64 => Kind::Int64,
        DataType::Float32 => Kind::Float32,
        DataType::Float64 => Kind::Float64,
        DataType::Decimal128(precision, scale) => Kind::Decimal {
            precision: *precision,
            scale: *scale,
        },
        DataType::Utf8 => match sql_type {
            Some(SqlType::Json | SqlType::Jsonb) => Kind::Json,
            Some(SqlType::Varchar(Some(n))) => Kind::Text(Some(*n as usize)),
            _ => Kind::Text(None),
        },
        DataType::Date32 => Kind::Date,
        DataType::Timestamp(TimeUnit::Microsecond, _) => Kind::Timestamp,
        DataType::Interval(IntervalUnit::MonthDayNano) => Kind::Interval,
        _ => return None,
    })
}

/// A JSON value as a reason names it.
enum Found<'a> {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Array,
    Object,
}

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Bool(b) => write!(f, "boolean {b}"),
            Found::Int(i) => write!(f, "number {i}"),
            Found::Float(x) => write!(f, "number {x}"),
            Found::Str(s) => match s.char_indices().nth(SHOWN_STRING_CHARS) {
                Some((cut, _)) => write!(f, "string {:?}...", &s[..cut]),
                None => write!(f, "string {s:?}"),
            },
            Found::Array => f.write_str("array"),
            Found::Object => f.write_str("object"),
        }
    }
}

// ---------------------------------------------------------------------------
// One row being decoded
// ---------------------------------------------------------------------------

/// A column's value in the row being decoded, already converted to what its
/// builder stores; nothing reaches a builder before the whole row is good.
#[derive(Debug, Clone, PartialEq)]
enum Staged {
    Missing,
    Null,
    Bool(bool),
    /// Integers, dates (days) and timestamps (microseconds).
    Int(i64),
    Float(f64),
    Decimal(i128),
    /// A range of the row's text buffer.
    Text(Range<usize>),
    Interval(IntervalMonthDayNano),
    Bad(String),
}

fn stage_text(text: &mut String, value: &str) -> Staged {
    let start = text.len();
    text.push_str(value);
    Staged::Text(start..text.len())
}

/// Buffers reused from row to row.
struct Row {
    slots: Vec<Staged>,
    /// Whether a slot was set by a key equal to the column name, which a
    /// case-insensitive match may not overwrite.
    exact: Vec<bool>,
    /// Text values of the row, back to back.
    text: String,
    /// Numbers formatted for numeric input.
    scratch: String,
}

impl Row {
    fn new(columns: usize) -> Row {
        Row {
            slots: vec![Staged::Missing; columns],
            exact: vec![false; columns],
            text: String::new(),
            scratch: String::new(),
        }
    }

    fn reset(&mut self) {
        self.slots.fill(Staged::Missing);
        self.exact.fill(false);
        self.text.clear();
    }
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

impl Decoder {
    fn decode_json(&self, payloads: &[Option<&[u8]>]) -> Result<Decoded> {
        let mut builders = self.builders(payloads.len());
        let mut row = Row::new(self.columns.len());
        let mut rows = Vec::with_capacity(payloads.len());
        let mut bad = Vec::new();
        for (index, payload) in (0u32..).zip(payloads) {
            let decoded = self
                .screen(*payload)
                .and_then(|bytes| self.json_row(bytes, &mut row));
            match decoded {
                Ok(()) => {
                    self.append_row(&row, &mut builders)?;
                    rows.push(index);
                }
                Err(reason) => bad.push(BadRecord { index, reason }),
            }
        }
        let batch = self.finish_batch(builders, rows.len())?;
        Ok(Decoded { batch, rows, bad })
    }

    /// Parses one message into `row`, or says why it is a bad record.
    fn json_row(&self, bytes: &[u8], row: &mut Row) -> Result<(), String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
        let start = text.trim_start_matches([' ', '\t', '\n', '\r']);
        if !start.starts_with('{') {
            return Err(not_an_object(text, start));
        }
        row.reset();
        let mut de = serde_json::Deserializer::from_str(text);
        ObjectSeed {
            columns: &self.columns,
            row: &mut *row,
        }
        .deserialize(&mut de)
        .map_err(json_reason)?;
        de.end().map_err(json_reason)?;
        self.check_row(row)
    }

    /// The first problem in column order: a bad value, a missing field, a
    /// NULL for a NOT NULL column.
    fn check_row(&self, row: &Row) -> Result<(), String> {
        for (column, slot) in self.columns.iter().zip(&row.slots) {
            let null = match slot {
                Staged::Bad(reason) => return Err(reason.clone()),
                Staged::Missing if self.options.missing_fields == MissingFields::Error => {
                    return Err(format!("missing field \"{}\"", column.name))
                }
                Staged::Missing | Staged::Null => true,
                _ => false,
            };
            if null && !column.nullable {
                return Err(format!(
                    "field \"{}\": null value in a NOT NULL column",
                    column.name
                ));
            }
        }
        Ok(())
    }

    fn builders(&self, capacity: usize) -> Vec<Builder> {
        self.columns
            .iter()
            .map(|c| Builder::new(c, capacity))
            .collect()
    }

    fn append_row(&self, row: &Row, builders: &mut [Builder]) -> Result<()> {
        for ((builder, slot), column) in builders.iter_mut().zip(&row.slots).zip(&self.columns) {
            builder
                .append(slot, &row.text)
                .map_err(|what| Error::Internal(format!("column \"{}\": {what}", column.name)))?;
        }
        Ok(())
    }
}

/// `invalid JSON at line 1 column 7: expected value`.
fn json_reason(error: serde_json::Error) -> String {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = message.strip_suffix(&suffix).unwrap_or(&message);
    format!(
        "invalid JSON at line {} column {}: {message}",
        error.line(),
        error.column()
    )
}

/// The reason for a message that does not start with `{`.
fn not_an_object(text: &str, start: &str) -> String {
    if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
        return json_reason(e);
    }
    let found = match start.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    format!("expected a JSON object, found {found}")
}

/// Reads the top-level object, staging each known key's value.
struct ObjectSeed<'r> {
    columns: &'r [Column],
    row: &'r mut Row,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let columns = self.columns;
        while let Some(key) = map.next_key_seed(KeySeed(columns))? {
            let Some((index, exact)) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if !exact && self.row.exact[index] {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            self.row.exact[index] |= exact;
            let Row {
                slots,
                text,
                scratch,
                ..
            } = &mut *self.row;
            map.next_value_seed(ValueSeed {
                column: &columns[index],
                slot: &mut slots[index],
                text,
                scratch,
            })?;
        }
        Ok(())
    }
}

/// A key → the column it names (exact match first, then ignoring case) and
/// whether the match was exact; `None` for a key no column has.
struct KeySeed<'r>(&'r [Column]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<(usize, bool)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<(usize, bool)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if let Some(i) = self.0.iter().position(|c| c.name == key) {
            return Ok(Some((i, true)));
        }
        let matches = |c: &&Column| {
            c.name.eq_ignore_ascii_case(key)
                || (!key.is_ascii() && c.name.to_lowercase() == key.to_lowercase())
        };
        Ok(self.0.iter().position(|c| matches(&c)).map(|i| (i, false)))
    }
}

/// One value, converted for its column into `slot`. Type errors are staged
/// as [`Staged::Bad`], not returned, so the JSON is still read to its end
/// and a syntax error later in the message wins.
struct ValueSeed<'r> {
    column: &'r Column,
    slot: &'r mut Staged,
    text: &'r mut String,
    scratch: &'r mut String,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.column.kind != Kind::Json {
            return deserializer.deserialize_any(self);
        }
        let value = serde_json::Value::deserialize(deserializer)?;
        *self.slot = if value.is_null() {
            Staged::Null
        } else {
            let start = self.text.len();
            // Writing to a String cannot fail.
            let _ = write!(self.text, "{value}");
            Staged::Text(start..self.text.len())
        };
        Ok(())
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        *self.slot = Staged::Null;
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        *self.slot = self.column.stage_bool(v);
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        *self.slot = self.column.stage_i64(v, self.scratch);
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        *self.slot = self.column.stage_u64(v, self.scratch);
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        *self.slot = self.column.stage_f64(v, self.scratch);
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        *self.slot = self.column.stage_str(v, self.text);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        *self.slot = self.column.mismatch(Found::Array);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        *self.slot = self.column.mismatch(Found::Object);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Column builders
// ---------------------------------------------------------------------------

enum Builder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder),
    Text(StringBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
}

impl Builder {
    fn new(column: &Column, capacity: usize) -> Builder {
        let data_type = column.field.data_type().clone();
        match column.kind {
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            Kind::Int16 => Builder::Int16(Int16Builder::with_capacity(capacity)),
            Kind::Int32 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            Kind::Int64 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            Kind::Float32 => Builder::Float32(Float32Builder::with_capacity(capacity)),
            Kind::Float64 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            Kind::Decimal { .. } => Builder::Decimal(
                Decimal128Builder::with_capacity(capacity).with_data_type(data_type),
            ),
            Kind::Text(_) | Kind::Json => Builder::Text(StringBuilder::with_capacity(
                capacity,
                capacity.saturating_mul(16),
            )),
            Kind::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
            Kind::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_data_type(data_type),
            ),
            Kind::Interval => {
                Builder::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
        }
    }

    /// Appends a checked value; an error means the staging and the builder
    /// disagree, which is a bug.
    fn append(&mut self, slot: &Staged, text: &str) -> Result<(), String> {
        let misfit = || format!("staged value {slot:?} does not fit its builder (a bug)");
        if matches!(slot, Staged::Null | Staged::Missing) {
            self.append_null();
            return Ok(());
        }
        match (self, slot) {
            (Builder::Bool(b), Staged::Bool(v)) => b.append_value(*v),
            (Builder::Int16(b), Staged::Int(v)) => b.append_value(narrow(*v).ok_or_else(misfit)?),
            (Builder::Int32(b), Staged::Int(v)) => b.append_value(narrow(*v).ok_or_else(misfit)?),
            (Builder::Date(b), Staged::Int(v)) => b.append_value(narrow(*v).ok_or_else(misfit)?),
            (Builder::Int64(b), Staged::Int(v)) => b.append_value(*v),
            (Builder::Timestamp(b), Staged::Int(v)) => b.append_value(*v),
            (Builder::Float32(b), Staged::Float(v)) => b.append_value(*v as f32),
            (Builder::Float64(b), Staged::Float(v)) => b.append_value(*v),
            (Builder::Decimal(b), Staged::Decimal(v)) => b.append_value(*v),
            (Builder::Interval(b), Staged::Interval(v)) => b.append_value(*v),
            (Builder::Text(b), Staged::Text(range)) => {
                b.append_value(text.get(range.clone()).ok_or_else(misfit)?)
            }
            _ => return Err(misfit()),
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int16(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Interval(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Int16(mut b) => Arc::new(b.finish()),
            Builder::Int32(mut b) => Arc::new(b.finish()),
            Builder::Int64(mut b) => Arc::new(b.finish()),
            Builder::Float32(mut b) => Arc::new(b.finish()),
            Builder::Float64(mut b) => Arc::new(b.finish()),
            Builder::Decimal(mut b) => Arc::new(b.finish()),
            Builder::Text(mut b) => Arc::new(b.finish()),
            Builder::Date(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish()),
            Builder::Interval(mut b) => Arc::new(b.finish()),
        }
    }
}

fn narrow<T: TryFrom<i64>>(value: i64) -> Option<T> {
    T::try_from(value).ok()
}

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

/// How a CSV message can be decoded.
enum CsvLine<'a> {
    /// One line with balanced quotes: it frames as exactly one record when
    /// joined to others with newlines.
    Simple(&'a [u8]),
    /// Newlines (in quotes, or not) or an open quote: decoded alone.
    Alone(&'a [u8]),
}

fn csv_line(bytes: &[u8]) -> Result<CsvLine<'_>, String> {
    let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if line == b"\\." || line == b"\\.\r" {
        return Err("\\. is the end-of-data marker of PostgreSQL's CSV, not a record".into());
    }
    let quotes = line.iter().filter(|&&b| b == b'"').count();
    if line.contains(&b'\n') || quotes % 2 == 1 {
        return Ok(CsvLine::Alone(line));
    }
    Ok(CsvLine::Simple(line))
}

/// Good rows in parts, in input order, and the bad records.
#[derive(Default)]
struct CsvOut {
    parts: Vec<RecordBatch>,
    rows: Vec<u32>,
    bad: Vec<BadRecord>,
}

impl Decoder {
    fn decode_csv(&self, payloads: &[Option<&[u8]>]) -> Result<Decoded> {
        let mut out = CsvOut::default();
        let mut run: Vec<(u32, &[u8])> = Vec::new();
        for (index, payload) in (0u32..).zip(payloads) {
            match self.screen(*payload).and_then(csv_line) {
                Ok(CsvLine::Simple(line)) => run.push((index, line)),
                Ok(CsvLine::Alone(message)) => {
                    for chunk in run.chunks(CSV_CHUNK_MESSAGES) {
                        self.decode_csv_run(chunk, &mut out)?;
                    }
                    run.clear();
                    self.decode_csv_alone(index, message, &mut out)?;
                }
                Err(reason) => out.bad.push(BadRecord { index, reason }),
            }
        }
        for chunk in run.chunks(CSV_CHUNK_MESSAGES) {
            self.decode_csv_run(chunk, &mut out)?;
        }
        out.bad.sort_by_key(|b| b.index);
        let batch = concat_batches(&self.schema, &out.parts)?;
        Ok(Decoded {
            batch,
            rows: out.rows,
            bad: out.bad,
        })
    }

    /// Decodes one-line messages together; at a bad one, decodes the good
    /// ones before it again (the failed COPY decoder lost them) and goes on
    /// after it.
    fn decode_csv_run(&self, run: &[(u32, &[u8])], out: &mut CsvOut) -> Result<()> {
        let mut start = 0;
        while start < run.len() {
            let rest = &run[start..];
            let error = match self.copy_csv(rest.iter().map(|(_, line)| *line), rest.len()) {
                Ok(batch) if batch.num_rows() == rest.len() => {
                    out.parts.push(batch);
                    out.rows.extend(rest.iter().map(|(index, _)| *index));
                    return Ok(());
                }
                Ok(batch) => {
                    return Err(Error::Internal(format!(
                        "{} CSV lines decoded into {} rows",
                        rest.len(),
                        batch.num_rows()
                    )))
                }
                Err(error) => error,
            };
            let failed = error
                .line
                .and_then(|line| usize::try_from(line).ok())
                .filter(|line| (1..=rest.len()).contains(line))
                .ok_or_else(|| Error::Internal(format!("CSV error outside any record: {error}")))?
                - 1;
            self.decode_csv_run(&rest[..failed], out)?;
            out.bad.push(BadRecord {
                index: rest[failed].0,
                reason: csv_reason(&error),
            });
            start += failed + 1;
        }
        Ok(())
    }

    /// A message that may span lines must still be one record.
    fn decode_csv_alone(&self, index: u32, message: &[u8], out: &mut CsvOut) -> Result<()> {
        match self.copy_csv(std::iter::once(message), 1) {
            Ok(batch) if batch.num_rows() == 1 => {
                out.parts.push(batch);
                out.rows.push(index);
            }
            Ok(batch) => out.bad.push(BadRecord {
                index,
                reason: format!(
                    "message holds {} CSV records; a message must hold one",
                    batch.num_rows()
                ),
            }),
            Err(error) => out.bad.push(BadRecord {
                index,
                reason: csv_reason(&error),
            }),
        }
        Ok(())
    }

    /// Runs `copy_format`'s CSV decoder over the lines, each ended by a newline.
    fn copy_csv<'a>(
        &self,
        lines: impl Iterator<Item = &'a [u8]> + Clone,
        count: usize,
    ) -> Result<RecordBatch, CopyError> {
        let bytes: usize = lines.clone().map(|line| line.len() + 1).sum();
        let mut data = Vec::with_capacity(bytes);
        for line in lines {
            data.extend_from_slice(line);
            data.push(b'\n');
        }
        let mut decoder = CopyDecoder::new(Arc::clone(&self.copy_schema), self.csv.clone(), count);
        let mut batches = decoder.push(&data)?;
        batches.extend(decoder.finish()?);
        let internal =
            |e: datafusion::arrow::error::ArrowError| CopyError::new("XX000", e.to_string());
        let batch = concat_batches(&self.copy_schema, &batches).map_err(internal)?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            batch.columns().to_vec(),
            &options,
        )
        .map_err(internal)
    }
}

/// `field "n": invalid input syntax for type integer: "x"`, or COPY's own
/// words for record-level problems (`missing data for column "c"`).
fn csv_reason(error: &CopyError) -> String {
    match &error.column {
        Some(column) => format!("field \"{column}\": {}", error.message),
        None => error.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Array, AsArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
        Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray, StringArray,
        TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::Schema;

    const US_2024_01_01: i64 = 19_723 * 86_400_000_000;
    const HOUR_US: i64 = 3_600_000_000;

    fn schema(columns: &[(&str, SqlType)]) -> SchemaRef {
        Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, ty)| ty.field(name, true))
                .collect::<Vec<_>>(),
        ))
    }

    fn decoder(columns: &[(&str, SqlType)]) -> Decoder {
        Decoder::new(schema(columns), Encode::Json, DecoderOptions::default()).expect("decoder")
    }

    fn run(decoder: &Decoder, messages: &[&str]) -> Decoded {
        let payloads: Vec<Option<&[u8]>> = messages.iter().map(|m| Some(m.as_bytes())).collect();
        decoder.decode(&payloads).expect("decode")
    }

    /// The reason of the one message, which must be bad.
    fn reason(decoder: &Decoder, message: &str) -> String {
        let decoded = run(decoder, &[message]);
        assert_eq!(decoded.batch.num_rows(), 0, "{message} decoded");
        assert_eq!(decoded.bad.len(), 1);
        decoded.bad[0].reason.clone()
    }

    fn strings(batch: &RecordBatch, column: usize) -> Vec<Option<String>> {
        batch
            .column(column)
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }

    #[test]
    fn json_scalar_types() {
        let d = decoder(&[
            ("b", SqlType::Boolean),
            ("s", SqlType::SmallInt),
            ("i", SqlType::Integer),
            ("l", SqlType::BigInt),
            ("r", SqlType::Real),
            ("f", SqlType::Double),
            ("t", SqlType::Text),
        ]);
        let out = run(
            &d,
            &[
                r#"{"b": true, "s": -32768, "i": 2147483647, "l": 9223372036854775807, "r": 1.5, "f": -2.25e3, "t": "h\u00e9"}"#,
                r#"{"b": null, "s": 0, "i": -1, "l": -9223372036854775808, "r": 3, "f": 18446744073709551615, "t": ""}"#,
            ],
        );
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        assert_eq!(out.rows, vec![0, 1]);
        let b = &out.batch;
        let bools: &BooleanArray = b.column(0).as_boolean();
        assert_eq!(bools.iter().collect::<Vec<_>>(), vec![Some(true), None]);
        let col = |i: usize| Arc::clone(b.column(i));
        let s = col(1);
        let s = s.as_any().downcast_ref::<Int16Array>().expect("i16");
        assert_eq!(s.values().to_vec(), vec![-32768, 0]);
        let i = col(2);
        let i = i.as_any().downcast_ref::<Int32Array>().expect("i32");
        assert_eq!(i.values().to_vec(), vec![i32::MAX, -1]);
        let l = col(3);
        let l = l.as_any().downcast_ref::<Int64Array>().expect("i64");
        assert_eq!(l.values().to_vec(), vec![i64::MAX, i64::MIN]);
        let r = col(4);
        let r = r.as_any().downcast_ref::<Float32Array>().expect("f32");
        assert_eq!(r.values().to_vec(), vec![1.5, 3.0]);
        let f = col(5);
        let f = f.as_any().downcast_ref::<Float64Array>().expect("f64");
        assert_eq!(f.values().to_vec(), vec![-2250.0, u64::MAX as f64]);
        assert_eq!(
            strings(b, 6),
            vec![Some("hé".to_string()), Some(String::new())]
        );
        assert_eq!(b.schema(), d.schema());
    }

    /// JSON numbers read straight from their f64 give what the number's
    /// text gives through PostgreSQL's numeric input, including rounding to
    /// the scale and overflow of the precision.
    #[test]
    fn json_numbers_as_numeric_match_their_text() {
        let d = decoder(&[(
            "n",
            SqlType::Numeric {
                precision: 8,
                scale: 2,
            },
        )]);
        let texts: Vec<String> = [
            "0",
            "-0",
            "12",
            "-7",
            "0.1",
            "83.81",
            "-83.81",
            "999999.99",
            "1000000",
            "-999999.99",
            "0.005",
            "-0.005",
            "1.005",
            "2.675",
            "0.015",
            "83.8100049",
            "83.81499999",
            "123456.784999",
            "0.0001",
            "1e3",
            "1.5e-3",
            "1e300",
            "99999999",
        ]
        .iter()
        .map(|t| t.to_string())
        .chain((0..2000).map(|i| format!("{}.{:02}", (i * 7919) % 1_000_000, (i * 31) % 100)))
        .chain((0..500).map(|i| format!("-{}.{:03}", i * 13, (i * 37) % 1000)))
        .collect();
        let numbers: Vec<String> = texts.iter().map(|t| format!(r#"{{"n": {t}}}"#)).collect();
        let strings: Vec<String> = texts.iter().map(|t| format!(r#"{{"n": "{t}"}}"#)).collect();
        let from_numbers = run(&d, &numbers.iter().map(String::as_str).collect::<Vec<_>>());
        let from_strings = run(&d, &strings.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(from_numbers.rows, from_strings.rows);
        assert_eq!(from_numbers.batch, from_strings.batch);
        let bad = |o: &Decoded| o.bad.iter().map(|b| b.index).collect::<Vec<_>>();
        assert_eq!(bad(&from_numbers), bad(&from_strings));
        assert!(
            !from_numbers.bad.is_empty(),
            "the overflowing values are bad"
        );
    }

    #[test]
    fn json_numeric_from_numbers_and_strings() {
        let d = decoder(&[(
            "n",
            SqlType::Numeric {
                precision: 10,
                scale: 2,
            },
        )]);
        let out = run(
            &d,
            &[
                r#"{"n": 12}"#,
                r#"{"n": 0.1}"#,
                r#"{"n": "-3.456"}"#,
                r#"{"n": 18446744073709551615}"#,
                r#"{"n": "abc"}"#,
                r#"{"n": true}"#,
            ],
        );
        let n = out.batch.column(0);
        let n = n.as_any().downcast_ref::<Decimal128Array>().expect("dec");
        assert_eq!(n.values().to_vec(), vec![1200, 10, -346]);
        assert_eq!(out.rows, vec![0, 1, 2]);
        let reasons: Vec<_> = out
            .bad
            .iter()
            .map(|b| (b.index, b.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (3, "field \"n\": numeric field overflow"),
                (
                    4,
                    "field \"n\": invalid input syntax for type numeric: \"abc\""
                ),
                (
                    5,
                    "field \"n\": expected number or numeric string, found boolean true"
                ),
            ]
        );
    }

    #[test]
    fn json_timestamps_dates_intervals() {
        let d = decoder(&[
            ("tz", SqlType::Timestamptz),
            ("ts", SqlType::Timestamp),
            ("d", SqlType::Date),
            ("iv", SqlType::Interval),
        ]);
        let out = run(
            &d,
            &[
                r#"{"tz": "2024-01-01T10:00:00Z", "ts": "2024-01-01 10:00:00.5", "d": "2024-01-01", "iv": "5 minutes"}"#,
                r#"{"tz": "2024-01-01 10:00:00+02", "ts": "2024-01-01T10:00:00+02:00", "d": "2024-01-02", "iv": "1 day 01:00:00"}"#,
                r#"{"tz": 1704103200000, "ts": 1704103200123, "d": null, "iv": null}"#,
            ],
        );
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        let tz = out.batch.column(0);
        let tz = tz
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("tz");
        let ten = US_2024_01_01 + 10 * HOUR_US;
        assert_eq!(tz.values().to_vec(), vec![ten, ten - 2 * HOUR_US, ten]);
        assert_eq!(
            out.batch.schema().field(0).data_type(),
            &SqlType::Timestamptz.arrow_type()
        );
        let ts = out.batch.column(1);
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("ts");
        // A timestamp ignores a written offset, as PostgreSQL does.
        assert_eq!(
            ts.values().to_vec(),
            vec![ten + 500_000, ten, ten + 123_000]
        );
        let d_col = out.batch.column(2);
        let dates = d_col.as_any().downcast_ref::<Date32Array>().expect("date");
        assert_eq!(
            dates.iter().collect::<Vec<_>>(),
            vec![Some(19_723), Some(19_724), None]
        );
        let iv = out.batch.column(3);
        let iv = iv
            .as_any()
            .downcast_ref::<IntervalMonthDayNanoArray>()
            .expect("interval");
        assert_eq!(
            iv.value(0),
            IntervalMonthDayNano::new(0, 0, 300_000_000_000)
        );
        assert_eq!(
            iv.value(1),
            IntervalMonthDayNano::new(0, 1, 3_600_000_000_000)
        );
        assert!(iv.is_null(2));

        assert_eq!(
            reason(
                &d,
                r#"{"tz": "garbage", "ts": null, "d": null, "iv": null}"#
            ),
            "field \"tz\": invalid input syntax for type timestamp with time zone: \"garbage\""
        );
        assert_eq!(
            reason(&d, r#"{"tz": 1.5, "ts": null, "d": null, "iv": null}"#),
            "field \"tz\": expected timestamp string or epoch milliseconds, found number 1.5"
        );
        assert_eq!(
            reason(&d, r#"{"tz": 9223372036854775807, "ts": null, "d": null, "iv": null}"#),
            "field \"tz\": value 9223372036854775807 is out of range for type timestamp with time zone"
        );
        assert_eq!(
            reason(&d, r#"{"tz": null, "ts": null, "d": 20240101, "iv": null}"#),
            "field \"d\": expected date string, found number 20240101"
        );
        assert_eq!(
            reason(
                &d,
                r#"{"tz": null, "ts": null, "d": "2023-02-29", "iv": null}"#
            ),
            "field \"d\": date/time field value out of range: \"2023-02-29\""
        );
    }

    #[test]
    fn json_varchar_limit_and_nul() {
        let d = decoder(&[("v", SqlType::Varchar(Some(3)))]);
        let out = run(
            &d,
            &[
                r#"{"v": "abc"}"#,
                r#"{"v": "héé"}"#,
                r#"{"v": "ab    "}"#,
                r#"{"v": "abcd"}"#,
                r#"{"v": "a\u0000"}"#,
            ],
        );
        assert_eq!(
            strings(&out.batch, 0),
            vec![Some("abc".into()), Some("héé".into()), Some("ab ".into())]
        );
        assert_eq!(
            out.bad[0].reason,
            "field \"v\": value too long for type character varying(3)"
        );
        assert_eq!(out.bad[1].index, 4);
        assert!(out.bad[1].reason.contains("0x00"), "{}", out.bad[1].reason);
    }

    #[test]
    fn json_columns_take_any_value() {
        let d = decoder(&[("j", SqlType::Jsonb), ("k", SqlType::Json)]);
        let out = run(
            &d,
            &[
                r#"{"j": {"b": [1, 2.5, "x"], "a": null}, "k": "s"}"#,
                r#"{"j": 7, "k": [true]}"#,
                r#"{"j": null, "k": {}}"#,
            ],
        );
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        assert_eq!(
            strings(&out.batch, 0),
            vec![
                Some(r#"{"a":null,"b":[1,2.5,"x"]}"#.into()),
                Some("7".into()),
                None
            ]
        );
        assert_eq!(
            strings(&out.batch, 1),
            vec![
                Some("\"s\"".into()),
                Some("[true]".into()),
                Some("{}".into())
            ]
        );
    }

    #[test]
    fn json_type_mismatches() {
        let d = decoder(&[("amount", SqlType::Integer), ("name", SqlType::Text)]);
        let cases = [
            (
                r#"{"amount": "x", "name": "a"}"#,
                r#"field "amount": expected integer, found string "x""#,
            ),
            (
                r#"{"amount": 1.5, "name": "a"}"#,
                r#"field "amount": expected integer, found number 1.5"#,
            ),
            (
                r#"{"amount": 3000000000, "name": "a"}"#,
                r#"field "amount": value 3000000000 is out of range for type integer"#,
            ),
            (
                r#"{"amount": 1e30, "name": "a"}"#,
                r#"field "amount": value 1000000000000000000000000000000 is out of range for type integer"#,
            ),
            (
                r#"{"amount": 1, "name": 5}"#,
                r#"field "name": expected string, found number 5"#,
            ),
            (
                r#"{"amount": [1], "name": "a"}"#,
                r#"field "amount": expected integer, found array"#,
            ),
            (
                r#"{"amount": 1, "name": {"x": 1}}"#,
                r#"field "name": expected string, found object"#,
            ),
            (
                r#"{"amount": true, "name": "a"}"#,
                r#"field "amount": expected integer, found boolean true"#,
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(reason(&d, message), expected, "{message}");
        }
        let long = format!(r#"{{"amount": "{}", "name": "a"}}"#, "y".repeat(100));
        assert_eq!(
            reason(&d, &long),
            format!(
                r#"field "amount": expected integer, found string "{}"..."#,
                "y".repeat(40)
            )
        );
        let small = decoder(&[("s", SqlType::SmallInt), ("r", SqlType::Real)]);
        assert_eq!(
            reason(&small, r#"{"s": 40000, "r": 1}"#),
            r#"field "s": value 40000 is out of range for type smallint"#
        );
        assert_eq!(
            reason(&small, r#"{"s": 1, "r": 1e300}"#),
            format!(
                r#"field "r": value {} is out of range for type real"#,
                1e300f64
            )
        );
    }

    #[test]
    fn json_record_level_bad_records() {
        let d = decoder(&[("a", SqlType::Integer)]);
        assert_eq!(
            reason(&d, r#"{"a": }"#),
            "invalid JSON at line 1 column 7: expected value"
        );
        assert_eq!(
            reason(&d, r#"{"a": 1"#),
            "invalid JSON at line 1 column 7: EOF while parsing an object"
        );
        assert_eq!(
            reason(&d, r#"{"a": 1} x"#),
            "invalid JSON at line 1 column 10: trailing characters"
        );
        assert_eq!(
            reason(&d, ""),
            "invalid JSON at line 1 column 0: EOF while parsing a value"
        );
        assert_eq!(
            reason(&d, "[1, 2]"),
            "expected a JSON object, found an array"
        );
        assert_eq!(reason(&d, " 5"), "expected a JSON object, found a number");
        assert_eq!(
            reason(&d, "\"a\""),
            "expected a JSON object, found a string"
        );
        assert_eq!(reason(&d, "null"), "expected a JSON object, found null");
        assert_eq!(
            reason(&d, "true"),
            "expected a JSON object, found a boolean"
        );
        assert_eq!(reason(&d, "{}"), r#"missing field "a""#);
        // A syntax error after a mistyped field is the reason given.
        assert!(reason(&d, r#"{"a": "x", }"#).starts_with("invalid JSON"));

        let payloads: [Option<&[u8]>; 2] = [None, Some(b"{\"a\": \"\xff\"}")];
        let out = d.decode(&payloads).expect("decode");
        assert_eq!(
            out.bad,
            vec![
                BadRecord {
                    index: 0,
                    reason: "message has no payload (a tombstone)".into()
                },
                BadRecord {
                    index: 1,
                    reason: "invalid UTF-8 at byte 7".into()
                },
            ]
        );
        let small = Decoder::new(
            schema(&[("a", SqlType::Integer)]),
            Encode::Json,
            DecoderOptions {
                max_message_bytes: 8,
                ..DecoderOptions::default()
            },
        )
        .expect("decoder");
        assert_eq!(
            reason(&small, r#"{"a": 100}"#),
            "message of 10 bytes exceeds the 8-byte limit"
        );
        assert_eq!(run(&small, &[r#"{"a":1}"#]).rows, vec![0]);
    }

    #[test]
    fn json_keys_missing_null_and_not_null() {
        let fields = vec![
            SqlType::Integer.field("userId", true),
            SqlType::Text.field("city", true),
            SqlType::Integer.field("n", false),
        ];
        let schema = Arc::new(Schema::new(fields));
        let d = Decoder::new(Arc::clone(&schema), Encode::Json, DecoderOptions::default())
            .expect("decoder");
        let out = run(
            &d,
            &[
                // Exact, then case-insensitive; unknown keys ignored.
                r#"{"USERID": 1, "City": "Oslo", "n": 1, "extra": {"deep": [1]}}"#,
                // An exact match wins over a case-insensitive one, in any order.
                r#"{"userId": 2, "USERID": 99, "city": "a", "CITY": "b", "n": 2}"#,
                // Duplicate exact keys: the last wins.
                r#"{"userId": 3, "userId": 4, "city": null, "n": 3}"#,
            ],
        );
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        let ids = out.batch.column(0);
        let ids = ids.as_any().downcast_ref::<Int32Array>().expect("i32");
        assert_eq!(ids.values().to_vec(), vec![1, 2, 4]);
        assert_eq!(
            strings(&out.batch, 1),
            vec![Some("Oslo".into()), Some("a".into()), None]
        );
        assert_eq!(
            reason(&d, r#"{"userId": 1, "city": "x", "n": null}"#),
            r#"field "n": null value in a NOT NULL column"#
        );

        let lenient = Decoder::new(
            schema,
            Encode::Json,
            DecoderOptions {
                missing_fields: MissingFields::Null,
                ..DecoderOptions::default()
            },
        )
        .expect("decoder");
        let out = run(&lenient, &[r#"{"n": 5}"#, "{}"]);
        assert_eq!(out.rows, vec![0]);
        assert!(out.batch.column(0).is_null(0) && out.batch.column(1).is_null(0));
        assert_eq!(
            out.bad[0].reason,
            r#"field "n": null value in a NOT NULL column"#
        );
    }

    #[test]
    fn mixed_batch_keeps_order_and_indices() {
        let d = decoder(&[("k", SqlType::Text), ("v", SqlType::BigInt)]);
        let messages: Vec<String> = (0..50)
            .map(|i| match i % 5 {
                0 => format!(r#"{{"k": "k{i}", "v": "bad"}}"#),
                3 => "{not json".to_string(),
                _ => format!(r#"{{"k": "k{i}", "v": {i}}}"#),
            })
            .collect();
        let refs: Vec<&str> = messages.iter().map(String::as_str).collect();
        let out = run(&d, &refs);
        let good: Vec<u32> = (0..50).filter(|i| i % 5 != 0 && i % 5 != 3).collect();
        assert_eq!(out.rows, good);
        let bad: Vec<u32> = out.bad.iter().map(|b| b.index).collect();
        assert_eq!(
            bad,
            (0..50)
                .filter(|i| i % 5 == 0 || i % 5 == 3)
                .collect::<Vec<_>>()
        );
        let v = out.batch.column(1);
        let v = v.as_any().downcast_ref::<Int64Array>().expect("i64");
        let expected: Vec<i64> = good.iter().map(|&i| i64::from(i)).collect();
        assert_eq!(v.values().to_vec(), expected);
        let keys: Vec<Option<String>> = good.iter().map(|i| Some(format!("k{i}"))).collect();
        assert_eq!(strings(&out.batch, 0), keys);
    }

    #[test]
    fn parallel_decoding_matches_one_thread() {
        // Enough messages for three threads, bad ones in every slice and on
        // the slices' edges.
        let count = PARALLEL_MESSAGES * 3 + 17;
        let size = count.div_ceil(3);
        let bad = |i: usize| i % 997 == 0 || i == size - 1 || i == size || i == count - 1;
        for encode in [Encode::Json, Encode::Csv { delimiter: b',' }] {
            let messages: Vec<String> = (0..count)
                .map(|i| match (encode, bad(i)) {
                    (Encode::Json, true) => format!(r#"{{"k": "k{i}", "v": "x{i}"}}"#),
                    (Encode::Json, false) => format!(r#"{{"k": "k{i}", "v": {i}}}"#),
                    (Encode::Csv { .. }, true) => format!("k{i},x{i}"),
                    (Encode::Csv { .. }, false) => format!("k{i},{i}"),
                })
                .collect();
            let payloads: Vec<Option<&[u8]>> =
                messages.iter().map(|m| Some(m.as_bytes())).collect();
            let columns = schema(&[("k", SqlType::Text), ("v", SqlType::BigInt)]);
            let decode = |threads| {
                let options = DecoderOptions {
                    threads,
                    ..DecoderOptions::default()
                };
                Decoder::new(Arc::clone(&columns), encode, options)
                    .expect("decoder")
                    .decode(&payloads)
                    .expect("decode")
            };
            let (one, three) = (decode(1), decode(3));
            assert_eq!(three.batch, one.batch, "{encode:?}");
            assert_eq!(three.rows, one.rows, "{encode:?}");
            assert_eq!(three.bad, one.bad, "{encode:?}");
            let expected: Vec<u32> = (0..count).filter(|&i| bad(i)).map(|i| i as u32).collect();
            let found: Vec<u32> = three.bad.iter().map(|b| b.index).collect();
            assert_eq!(found, expected, "{encode:?}");
            assert_eq!(three.rows.len(), count - expected.len(), "{encode:?}");
        }
    }

    #[test]
    fn refuses_types_it_cannot_decode() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ok", DataType::Int32, true),
            Field::new("blob", DataType::Binary, true),
        ]));
        let err =
            Decoder::new(schema, Encode::Json, DecoderOptions::default()).expect_err("binary");
        assert_eq!(err.sqlstate(), "0A000");
        assert!(
            err.to_string().contains("column \"blob\" of type Binary"),
            "{err}"
        );
        let err = Decoder::new(
            schema_of_one(),
            Encode::Csv { delimiter: b'"' },
            DecoderOptions::default(),
        )
        .expect_err("quote delimiter");
        assert_eq!(err.sqlstate(), "22023");
    }

    fn schema_of_one() -> SchemaRef {
        schema(&[("a", SqlType::Integer)])
    }

    fn csv(columns: &[(&str, SqlType)]) -> Decoder {
        Decoder::new(
            schema(columns),
            Encode::Csv { delimiter: b',' },
            DecoderOptions::default(),
        )
        .expect("csv decoder")
    }

    #[test]
    fn csv_types_nulls_and_quotes() {
        let d = csv(&[
            ("i", SqlType::Integer),
            ("t", SqlType::Text),
            ("ts", SqlType::Timestamptz),
            ("b", SqlType::Boolean),
            ("j", SqlType::Jsonb),
        ]);
        let out = run(
            &d,
            &[
                "1,plain,2024-01-01 10:00:00+00,true,{}\n",
                r#"2,"quoted, with ""quotes""",2024-01-01T10:00:00Z,f,"{""a"": 1}""#,
                ",,,,",
                r#"4,"",,t,"#,
                "5,\"two\nlines\",,t,\r\n",
            ],
        );
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        assert_eq!(out.rows, vec![0, 1, 2, 3, 4]);
        let i = out.batch.column(0);
        let i = i.as_any().downcast_ref::<Int32Array>().expect("i32");
        assert_eq!(
            i.iter().collect::<Vec<_>>(),
            vec![Some(1), Some(2), None, Some(4), Some(5)]
        );
        assert_eq!(
            strings(&out.batch, 1),
            vec![
                Some("plain".into()),
                Some(r#"quoted, with "quotes""#.into()),
                None,
                Some(String::new()),
                Some("two\nlines".into())
            ]
        );
        let ts = out.batch.column(2);
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("ts");
        assert_eq!(ts.value(0), US_2024_01_01 + 10 * HOUR_US);
        assert_eq!(ts.value(1), US_2024_01_01 + 10 * HOUR_US);
        assert_eq!(
            strings(&out.batch, 4),
            vec![
                Some("{}".into()),
                Some(r#"{"a": 1}"#.into()),
                None,
                None,
                None
            ]
        );
        assert_eq!(out.batch.schema(), d.schema());
    }

    #[test]
    fn csv_bad_records() {
        let d = csv(&[
            ("a", SqlType::Integer),
            ("v", SqlType::Varchar(Some(2))),
            ("j", SqlType::Jsonb),
        ]);
        let messages = [
            "1,ok,1",
            "x,ok,1",
            "2,ok",
            "3,ok,1,extra",
            "4,\"open,1",
            "5,long,1",
            "6,ok,{bad",
            "\\.",
            "7,ok,1\n7,ok,2",
            "8,ok,2",
        ];
        let mut payloads: Vec<Option<&[u8]>> =
            messages.iter().map(|m| Some(m.as_bytes())).collect();
        payloads.push(None);
        payloads.push(Some(b"9,\xff,1"));
        let out = d.decode(&payloads).expect("decode");
        assert_eq!(out.rows, vec![0, 9]);
        let reasons: Vec<(u32, &str)> = out
            .bad
            .iter()
            .map(|b| (b.index, b.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (
                    1,
                    r#"field "a": invalid input syntax for type integer: "x""#
                ),
                (2, r#"missing data for column "j""#),
                (3, "extra data after last expected column"),
                (4, "unterminated CSV quoted field"),
                (
                    5,
                    r#"field "v": value too long for type character varying(2)"#
                ),
                (
                    6,
                    r#"field "j": invalid input syntax for type json: "{bad""#
                ),
                (
                    7,
                    "\\. is the end-of-data marker of PostgreSQL's CSV, not a record"
                ),
                (8, "message holds 2 CSV records; a message must hold one"),
                (10, "message has no payload (a tombstone)"),
                (11, "invalid byte sequence for encoding \"UTF8\": 0xff"),
            ]
        );
        let a = out.batch.column(0);
        let a = a.as_any().downcast_ref::<Int32Array>().expect("i32");
        assert_eq!(a.values().to_vec(), vec![1, 8]);
    }

    #[test]
    fn csv_many_bad_records_across_chunks() {
        let d = Decoder::new(
            schema(&[("a", SqlType::BigInt), ("b", SqlType::Text)]),
            Encode::Csv { delimiter: b';' },
            DecoderOptions::default(),
        )
        .expect("decoder");
        let total = CSV_CHUNK_MESSAGES * 2 + 17;
        let messages: Vec<String> = (0..total)
            .map(|i| {
                if i % 7 == 3 {
                    format!("bad{i};x")
                } else {
                    format!("{i};v{i}")
                }
            })
            .collect();
        let refs: Vec<&str> = messages.iter().map(String::as_str).collect();
        let out = run(&d, &refs);
        let good: Vec<u32> = (0..total as u32).filter(|i| i % 7 != 3).collect();
        assert_eq!(out.rows, good);
        assert_eq!(out.bad.len(), total - good.len());
        assert!(out.bad.iter().all(|b| b.index % 7 == 3));
        let a = out.batch.column(0);
        let a = a.as_any().downcast_ref::<Int64Array>().expect("i64");
        assert_eq!(
            a.values().to_vec(),
            good.iter().map(|&i| i64::from(i)).collect::<Vec<_>>()
        );
        let b: &StringArray = out.batch.column(1).as_string();
        assert_eq!(b.value(1), "v1");
    }

    #[test]
    fn empty_input_and_empty_schema() {
        let d = decoder(&[("a", SqlType::Integer)]);
        let out = run(&d, &[]);
        assert_eq!(
            (out.batch.num_rows(), out.rows.len(), out.bad.len()),
            (0, 0, 0)
        );
        let none = Decoder::new(
            Arc::new(Schema::empty()),
            Encode::Json,
            DecoderOptions::default(),
        )
        .expect("decoder");
        let out = run(&none, &["{}", r#"{"x": 1}"#, "[]"]);
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.rows, vec![0, 1]);
        let none_csv = Decoder::new(
            Arc::new(Schema::empty()),
            Encode::Csv { delimiter: b',' },
            DecoderOptions::default(),
        )
        .expect("decoder");
        let out = run(&none_csv, &["", "x"]);
        assert_eq!(out.rows, vec![0]);
        assert_eq!(out.bad[0].index, 1);
    }
}
