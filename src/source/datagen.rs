//! The built-in `datagen` connector: rows made up from the WITH options,
//! every value a pure function of (seed, column, row index).
//!
//! Options (keys lowercase; values as SQL strings):
//!
//! - `datagen.seed` (default 0), `datagen.rows.per.second` (default 1000),
//!   `datagen.start.time` (RFC 3339 or PostgreSQL timestamptz input; default:
//!   the time given to [`Generator::new`]), `datagen.rows` (a total; default
//!   unbounded). `connector` is accepted and ignored.
//! - `fields.<col>.kind`:
//!   - `sequence` (integer columns): `start` (default 1) + row; `.end`
//!     (default the type's maximum) bounds it.
//!   - `random`: integers and floats uniform in `.min`..=`.max` (default
//!     0..=32767, as RisingWave), numerics likewise at the column's scale,
//!     booleans fair, text `.length` (default 10) ASCII letters, timestamps and
//!     dates the event clock minus a uniform lag in 0..=`.max_past` (an
//!     interval, default `1 day`): late and out-of-order events.
//!   - `choice`: `.values` (comma-separated, in the column type's input
//!     syntax), `.weights` (optional, comma-separated, non-negative).
//!   - Without `kind`: timestamps and dates follow the event clock (row `i`
//!     at `start.time + i / rows.per.second`), other types are `random`;
//!     json and interval columns need `choice`.
//! - `fields.<col>.seed` replaces `datagen.seed` for that column;
//!   `fields.<col>.null_rate` (0..=1) makes that share of its values NULL.
//!
//! **End of data.** The generator ends at the first exhausted bounded
//! thing: `datagen.rows`, or any sequence's `end` (an unbounded sequence is
//! bounded by its type). [`Generator::end`] says where; rows past it are never
//! produced, so every sequence stays in range on every row.
//!
//! **Randomness** is splitmix64 evaluated at a position instead of stepped:
//! [`row_hash`]`(key, i)` is the `i+1`-th output of splitmix64 seeded with
//! `key`, where a column's key is `mix64(seed ^ fnv1a64(column name))`. No
//! state is carried from row to row, so batches can be cut anywhere, split
//! across workers, and resumed at any row.
//!
//! Pacing rows in wall-clock time, offsets and feeding views belong to the
//! source runner; named scenario generators to [`super::scenarios`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::ScalarValue;

use super::scenarios::{Scenario, ScenarioGenerator};
use crate::error::{Error, Result};
use crate::sql::copy_format::parse_text_value;
use crate::types::{SqlType, UTC};

/// Rows per second of event time when `datagen.rows.per.second` is absent.
pub const DEFAULT_ROWS_PER_SECOND: u64 = 1000;

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
/// Distinguishes the NULL decisions of a column from its values.
const NULL_SALT: u64 = 0x6e75_6c6c_6e75_6c6c;
const LETTERS: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

// ---------------------------------------------------------------------------
// Mixing
// ---------------------------------------------------------------------------

/// splitmix64's output function (Steele, Lea and Flood, 2014).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `row+1`-th output of splitmix64 seeded with `key`, computed directly.
pub fn row_hash(key: u64, row: u64) -> u64 {
    mix64(key.wrapping_add(row.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// A further independent 64-bit value derived from a row's hash.
pub fn lane(hash: u64, n: u64) -> u64 {
    mix64(hash.wrapping_add(n.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// FNV-1a, to turn names into keys.
pub fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The key of one stream of values: `mix64(seed ^ fnv1a64(name))`.
pub fn stream_key(seed: u64, name: &str) -> u64 {
    mix64(seed ^ fnv1a64(name))
}

/// Uniform in `0..n` (`n > 0`), by multiply-high rather than modulo.
pub fn below(hash: u64, n: u64) -> u64 {
    ((u128::from(hash) * u128::from(n)) >> 64) as u64
}

/// Uniform in `[0, 1)` with 53 bits.
pub fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in `min..=max`.
fn between(hash: u64, min: i128, max: i128) -> i128 {
    let span = (max - min + 1) as u128;
    if span > u128::from(u64::MAX) {
        return min + i128::from(hash);
    }
    min + i128::from(below(hash, span as u64))
}

// ---------------------------------------------------------------------------
// Options shared with the scenarios
// ---------------------------------------------------------------------------

/// Event time of generated rows: row `i` at `start + i / rows_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventClock {
    pub start_us: i64,
    pub rows_per_second: u64,
}

impl EventClock {
    /// Microseconds since the epoch of row `row` (saturating).
    pub fn time_us(&self, row: u64) -> i64 {
        let offset = u128::from(row) * USECS_PER_SEC as u128 / u128::from(self.rows_per_second);
        self.start_us
            .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
    }
}

/// The `datagen.*` options every generator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Common {
    pub seed: u64,
    pub clock: EventClock,
    /// `datagen.rows`, when given.
    pub rows: Option<u64>,
}

/// The option keys [`Common::parse`] reads, plus `connector`.
pub const COMMON_OPTIONS: [&str; 5] = [
    "connector",
    "datagen.seed",
    "datagen.rows.per.second",
    "datagen.start.time",
    "datagen.rows",
];

impl Common {
    /// Reads the `datagen.*` options; other keys are left to the caller.
    pub fn parse(options: &BTreeMap<String, String>, now: DateTime<Utc>) -> Result<Common> {
        let get = |key: &str| options.get(key).map(String::as_str);
        let seed = get("datagen.seed").map_or(Ok(0), |v| parse_u64("datagen.seed", v))?;
        let rows_per_second = get("datagen.rows.per.second")
            .map_or(Ok(DEFAULT_ROWS_PER_SECOND), |v| {
                parse_u64("datagen.rows.per.second", v)
            })?;
        if rows_per_second == 0 {
            return Err(invalid(
                "datagen.rows.per.second",
                "0",
                "a positive integer",
            ));
        }
        let start_us = match get("datagen.start.time") {
            Some(v) => parse_timestamptz_us("datagen.start.time", v)?,
            None => now.timestamp_micros(),
        };
        let rows = get("datagen.rows")
            .map(|v| parse_u64("datagen.rows", v))
            .transpose()?;
        Ok(Common {
            seed,
            clock: EventClock {
                start_us,
                rows_per_second,
            },
            rows,
        })
    }
}

/// `invalid value for option "x": "v" (expected ...)`, SQLSTATE 22023.
pub fn invalid(option: &str, value: &str, expected: &str) -> Error {
    Error::InvalidParameter(format!(
        "invalid value for option \"{option}\": \"{value}\" (expected {expected})"
    ))
}

pub fn parse_u64(option: &str, value: &str) -> Result<u64> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(option, value, "a non-negative integer"))
}

fn parse_i64(option: &str, value: &str) -> Result<i64> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(option, value, "an integer"))
}

fn parse_f64(option: &str, value: &str) -> Result<f64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| invalid(option, value, "a number"))
}

/// A number in `0..=1`.
pub fn parse_fraction(option: &str, value: &str) -> Result<f64> {
    parse_f64(option, value)
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .ok_or_else(|| invalid(option, value, "a number between 0 and 1"))
}

/// A non-negative interval without months ('10s', '5 minutes', '1 day'),
/// in microseconds.
pub fn parse_duration_us(option: &str, value: &str) -> Result<i64> {
    let expected = "an interval of days, hours, minutes or seconds, like '10s' or '5 minutes'";
    let parsed = parse_text_value(
        value,
        &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
        &Field::new(option, DataType::Utf8, true),
    );
    let Ok(ScalarValue::IntervalMonthDayNano(Some(iv))) = parsed else {
        return Err(invalid(option, value, expected));
    };
    let us = i64::from(iv.days)
        .checked_mul(USECS_PER_DAY)
        .and_then(|d| d.checked_add(iv.nanoseconds / 1_000));
    match us {
        Some(us) if iv.months == 0 && us >= 0 => Ok(us),
        _ => Err(invalid(option, value, expected)),
    }
}

fn parse_timestamptz_us(option: &str, value: &str) -> Result<i64> {
    let data_type = DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()));
    match parse_text_value(
        value,
        &data_type,
        &Field::new(option, data_type.clone(), true),
    ) {
        Ok(ScalarValue::TimestampMicrosecond(Some(us), _)) => Ok(us),
        _ => Err(invalid(
            option,
            value,
            "a timestamp like 2024-01-01T00:00:00Z",
        )),
    }
}

/// Refuses any key outside `known` (and `COMMON_OPTIONS`).
pub fn check_known(options: &BTreeMap<String, String>, known: &[&str], what: &str) -> Result<()> {
    for key in options.keys() {
        if !COMMON_OPTIONS.contains(&key.as_str()) && !known.contains(&key.as_str()) {
            let mut all: Vec<&str> = COMMON_OPTIONS[1..].to_vec();
            all.extend_from_slice(known);
            return Err(Error::InvalidParameter(format!(
                "unknown option \"{key}\" for {what}; known options: {}",
                all.join(", ")
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Per-column generators
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KindName {
    Sequence,
    Random,
    Choice,
    /// The default of time columns: the event clock.
    Clock,
}

#[derive(Debug)]
enum Gen {
    Sequence {
        start: i64,
    },
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
    },
    Decimal {
        min: i128,
        max: i128,
    },
    Bool,
    Text {
        length: usize,
    },
    /// Event clock minus a lag uniform in `0..=max_past_us`.
    Clock {
        max_past_us: i64,
    },
    Choice {
        values: ArrayRef,
        /// Cumulative weights scaled to `u64`, when weighted.
        cumulative: Option<Vec<u64>>,
    },
}

#[derive(Debug)]
struct ColumnGen {
    field: Field,
    key: u64,
    /// NULL when the row's NULL hash is below this (`2^64` = always).
    null_below: u128,
    gen: Gen,
    /// Rows before the column runs out (bounded sequences).
    rows: Option<u64>,
}

/// A column's `fields.<col>.*` options, with the ones read so far marked.
struct ColumnOptions<'a> {
    column: &'a str,
    given: BTreeMap<&'a str, &'a str>,
    used: Vec<&'static str>,
}

impl<'a> ColumnOptions<'a> {
    fn get(&mut self, name: &'static str) -> Option<&'a str> {
        self.used.push(name);
        self.given.get(name).copied()
    }

    fn key(&self, name: &str) -> String {
        format!("fields.{}.{name}", self.column)
    }

    /// Refuses options the chosen kind does not read.
    fn check_all_used(&self, kind: &str) -> Result<()> {
        match self.given.keys().find(|k| !self.used.contains(k)) {
            Some(unused) => Err(Error::InvalidParameter(format!(
                "option \"{}\" does not apply to column \"{}\" of kind {kind}",
                self.key(unused),
                self.column
            ))),
            None => Ok(()),
        }
    }
}

impl ColumnGen {
    fn new(field: &Field, mut opts: ColumnOptions, seed: u64) -> Result<ColumnGen> {
        let kind_text = opts.get("kind");
        let kind = match kind_text.map(|k| k.trim().to_ascii_lowercase()).as_deref() {
            Some("sequence") => KindName::Sequence,
            Some("random") => KindName::Random,
            Some("choice") => KindName::Choice,
            Some(other) => {
                return Err(invalid(
                    &opts.key("kind"),
                    other,
                    "sequence, random or choice",
                ))
            }
            None if is_time(field.data_type()) => KindName::Clock,
            None => KindName::Random,
        };
        let seed = match opts.get("seed") {
            Some(v) => parse_u64(&opts.key("seed"), v)?,
            None => seed,
        };
        let null_below = match opts.get("null_rate") {
            Some(v) => {
                let rate = parse_fraction(&opts.key("null_rate"), v)?;
                if rate > 0.0 && !field.is_nullable() {
                    return Err(Error::InvalidParameter(format!(
                        "option \"{}\" needs a nullable column",
                        opts.key("null_rate")
                    )));
                }
                (rate * 2f64.powi(64)) as u128
            }
            None => 0,
        };
        let (gen, rows) = match kind {
            KindName::Sequence => sequence(field, &mut opts)?,
            KindName::Random => (random(field, &mut opts)?, None),
            KindName::Choice => (choice(field, &mut opts)?, None),
            KindName::Clock => (Gen::Clock { max_past_us: 0 }, None),
        };
        opts.check_all_used(kind_text.unwrap_or(match kind {
            KindName::Clock => "clock (the default of time columns)",
            _ => "random (the default)",
        }))?;
        Ok(ColumnGen {
            field: field.clone(),
            key: stream_key(seed, field.name()),
            null_below,
            gen,
            rows,
        })
    }
}

fn is_time(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(TimeUnit::Microsecond, _) | DataType::Date32
    )
}

/// The inclusive range of an integer type.
fn int_range(data_type: &DataType) -> Option<(i64, i64)> {
    match data_type {
        DataType::Int16 => Some((i16::MIN.into(), i16::MAX.into())),
        DataType::Int32 => Some((i32::MIN.into(), i32::MAX.into())),
        DataType::Int64 => Some((i64::MIN, i64::MAX)),
        _ => None,
    }
}

fn type_name(field: &Field) -> String {
    SqlType::of_field(field).map_or_else(|| field.data_type().to_string(), |t| t.sql_name())
}

fn wrong_type(field: &Field, kind: &str, supported: &str) -> Error {
    Error::InvalidParameter(format!(
        "kind {kind} does not apply to column \"{}\" of type {}; it generates {supported}",
        field.name(),
        type_name(field)
    ))
}

fn sequence(field: &Field, opts: &mut ColumnOptions) -> Result<(Gen, Option<u64>)> {
    let (type_min, type_max) =
        int_range(field.data_type()).ok_or_else(|| wrong_type(field, "sequence", "integers"))?;
    let start = opts
        .get("start")
        .map_or(Ok(1), |v| parse_i64(&opts.key("start"), v))?;
    let end = opts
        .get("end")
        .map_or(Ok(type_max), |v| parse_i64(&opts.key("end"), v))?;
    if start < type_min || start > type_max || end > type_max || end < start {
        return Err(Error::InvalidParameter(format!(
            "sequence of column \"{}\" must satisfy {type_min} <= start ({start}) <= end ({end}) <= {type_max}",
            field.name()
        )));
    }
    let rows = u64::try_from(i128::from(end) - i128::from(start) + 1).unwrap_or(u64::MAX);
    Ok((Gen::Sequence { start }, Some(rows)))
}

fn random(field: &Field, opts: &mut ColumnOptions) -> Result<Gen> {
    let data_type = field.data_type();
    if let Some((type_min, type_max)) = int_range(data_type) {
        let min = opts
            .get("min")
            .map_or(Ok(0), |v| parse_i64(&opts.key("min"), v))?;
        let max = opts
            .get("max")
            .map_or(Ok(32767.min(type_max)), |v| parse_i64(&opts.key("max"), v))?;
        if min < type_min || max > type_max || min > max {
            return Err(Error::InvalidParameter(format!(
                "random column \"{}\" must satisfy {type_min} <= min ({min}) <= max ({max}) <= {type_max}",
                field.name()
            )));
        }
        return Ok(Gen::Int { min, max });
    }
    match data_type {
        DataType::Float32 | DataType::Float64 => {
            let min = opts
                .get("min")
                .map_or(Ok(0.0), |v| parse_f64(&opts.key("min"), v))?;
            let max = opts
                .get("max")
                .map_or(Ok(32767.0), |v| parse_f64(&opts.key("max"), v))?;
            check_order(field, min, max)?;
            Ok(Gen::Float { min, max })
        }
        DataType::Decimal128(_, _) => {
            let min = opts
                .get("min")
                .map_or(Ok(0), |v| decimal(field, &opts.key("min"), v))?;
            let max = match opts.get("max") {
                Some(v) => decimal(field, &opts.key("max"), v)?,
                None => decimal(field, &opts.key("max"), "32767")?,
            };
            check_order(field, min, max)?;
            Ok(Gen::Decimal { min, max })
        }
        DataType::Boolean => Ok(Gen::Bool),
        DataType::Utf8
            if SqlType::of_field(field)
                .is_some_and(|t| !matches!(t, SqlType::Json | SqlType::Jsonb)) =>
        {
            random_text(field, opts)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) | DataType::Date32 => {
            let max_past_us = match opts.get("max_past") {
                Some(v) => parse_duration_us(&opts.key("max_past"), v)?,
                None => USECS_PER_DAY,
            };
            Ok(Gen::Clock { max_past_us })
        }
        _ => Err(wrong_type(
            field,
            "random",
            "integers, floats, numerics, booleans, text, timestamps and dates",
        )),
    }
}

fn check_order<T: PartialOrd + std::fmt::Display>(field: &Field, min: T, max: T) -> Result<()> {
    if min > max {
        return Err(Error::InvalidParameter(format!(
            "random column \"{}\" has min ({min}) above max ({max})",
            field.name()
        )));
    }
    Ok(())
}

fn decimal(field: &Field, option: &str, value: &str) -> Result<i128> {
    match parse_text_value(value, field.data_type(), field) {
        Ok(ScalarValue::Decimal128(Some(v), _, _)) => Ok(v),
        _ => Err(invalid(option, value, &format!("a {}", type_name(field)))),
    }
}

fn random_text(field: &Field, opts: &mut ColumnOptions) -> Result<Gen> {
    let key = opts.key("length");
    let length = opts.get("length").map_or(Ok(10), |v| parse_u64(&key, v))?;
    let limit = match SqlType::of_field(field) {
        Some(SqlType::Varchar(Some(n))) => u64::from(n),
        _ => 10_485_760,
    };
    if length > limit {
        return Err(invalid(
            &key,
            &length.to_string(),
            &format!("at most {limit}"),
        ));
    }
    Ok(Gen::Text {
        length: length as usize,
    })
}

fn choice(field: &Field, opts: &mut ColumnOptions) -> Result<Gen> {
    let values_key = opts.key("values");
    let text = opts.get("values").ok_or_else(|| {
        Error::InvalidParameter(format!("kind choice needs option \"{values_key}\""))
    })?;
    let scalars = text
        .split(',')
        .map(|v| {
            parse_text_value(v.trim(), field.data_type(), field).map_err(|e| {
                Error::InvalidParameter(format!(
                    "invalid value for option \"{values_key}\": {}",
                    e.message
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let values = ScalarValue::iter_to_array(scalars)?;
    let cumulative = match opts.get("weights") {
        Some(w) => Some(cumulative_weights(&opts.key("weights"), w, values.len())?),
        None => None,
    };
    Ok(Gen::Choice { values, cumulative })
}

/// Thresholds on a uniform `u64`: value `i` is chosen when the hash is below
/// `cumulative[i]` and not below `cumulative[i-1]`.
fn cumulative_weights(option: &str, text: &str, count: usize) -> Result<Vec<u64>> {
    let weights = text
        .split(',')
        .map(|w| {
            parse_f64(option, w)
                .ok()
                .filter(|w| *w >= 0.0)
                .ok_or_else(|| invalid(option, text, "non-negative numbers"))
        })
        .collect::<Result<Vec<f64>>>()?;
    let total: f64 = weights.iter().sum();
    if weights.len() != count || total <= 0.0 {
        return Err(invalid(
            option,
            text,
            &format!("{count} non-negative weights, one per value, not all zero"),
        ));
    }
    let mut sum = 0.0;
    let mut cumulative: Vec<u64> = weights
        .iter()
        .map(|w| {
            sum += w;
            (sum / total * u64::MAX as f64) as u64
        })
        .collect();
    if let Some(last) = cumulative.last_mut() {
        *last = u64::MAX;
    }
    Ok(cumulative)
}

// ---------------------------------------------------------------------------
// Arrays
// ---------------------------------------------------------------------------

impl ColumnGen {
    fn array(&self, rows: Range<u64>, clock: &EventClock) -> Result<ArrayRef> {
        let nulls = self.nulls(rows.clone());
        let key = self.key;
        let hash = |row: u64| row_hash(key, row);
        let data_type = self.field.data_type();
        Ok(match &self.gen {
            Gen::Sequence { start } => ints(data_type, rows, nulls, |r| start + r as i64),
            Gen::Int { min, max } => ints(data_type, rows, nulls, |r| {
                between(hash(r), (*min).into(), (*max).into()) as i64
            }),
            Gen::Float { min, max } => {
                let value = |r: u64| min + unit(hash(r)) * (max - min);
                match data_type {
                    DataType::Float32 => Arc::new(Float32Array::new(
                        rows.map(|r| value(r) as f32).collect(),
                        nulls,
                    )),
                    _ => Arc::new(Float64Array::new(rows.map(value).collect(), nulls)),
                }
            }
            Gen::Decimal { min, max } => {
                let values = rows.map(|r| between(hash(r), *min, *max)).collect();
                Arc::new(Decimal128Array::new(values, nulls).with_data_type(data_type.clone()))
            }
            Gen::Bool => {
                let bits = BooleanBuffer::from_iter(rows.map(|r| hash(r) >> 63 == 1));
                Arc::new(BooleanArray::new(bits, nulls))
            }
            Gen::Text { length } => letters(rows, *length, key, nulls)?,
            Gen::Clock { max_past_us } => {
                let time = |r: u64| {
                    let lag = if *max_past_us > 0 {
                        between(hash(r), 0, (*max_past_us).into()) as i64
                    } else {
                        0
                    };
                    clock.time_us(r).saturating_sub(lag)
                };
                times(data_type, rows, nulls, time)
            }
            Gen::Choice { values, cumulative } => {
                let pick = |r: u64| match cumulative {
                    Some(c) => c.partition_point(|&t| t < hash(r)) as u32,
                    None => below(hash(r), values.len() as u64) as u32,
                };
                let indices = UInt32Array::new(rows.map(pick).collect(), nulls);
                take(values.as_ref(), &indices, None)?
            }
        })
    }

    fn nulls(&self, rows: Range<u64>) -> Option<NullBuffer> {
        if self.null_below == 0 {
            return None;
        }
        let key = self.key ^ NULL_SALT;
        let valid = rows.map(|r| u128::from(row_hash(key, r)) >= self.null_below);
        Some(NullBuffer::new(BooleanBuffer::from_iter(valid)))
    }
}

/// An integer column; `value` stays within the type's range by
/// construction (options are checked against it), so narrowing is exact.
fn ints(
    data_type: &DataType,
    rows: Range<u64>,
    nulls: Option<NullBuffer>,
    value: impl Fn(u64) -> i64,
) -> ArrayRef {
    match data_type {
        DataType::Int16 => Arc::new(Int16Array::new(
            rows.map(|r| value(r) as i16).collect(),
            nulls,
        )),
        DataType::Int32 => Arc::new(Int32Array::new(
            rows.map(|r| value(r) as i32).collect(),
            nulls,
        )),
        _ => Arc::new(Int64Array::new(rows.map(value).collect(), nulls)),
    }
}

fn times(
    data_type: &DataType,
    rows: Range<u64>,
    nulls: Option<NullBuffer>,
    time_us: impl Fn(u64) -> i64,
) -> ArrayRef {
    match data_type {
        DataType::Date32 => {
            let day = |r: u64| time_us(r).div_euclid(USECS_PER_DAY) as i32;
            Arc::new(Date32Array::new(rows.map(day).collect(), nulls))
        }
        _ => Arc::new(
            TimestampMicrosecondArray::new(rows.map(time_us).collect(), nulls)
                .with_data_type(data_type.clone()),
        ),
    }
}

/// Random ASCII letters, eleven from each 64-bit lane (52^11 < 2^64).
fn letters(
    rows: Range<u64>,
    length: usize,
    key: u64,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef> {
    let count = (rows.end - rows.start) as usize;
    let total = count
        .checked_mul(length)
        .filter(|&t| i32::try_from(t).is_ok())
        .ok_or_else(|| {
            Error::InvalidParameter(format!(
                "a batch of {count} strings of {length} letters is too large; ask for fewer rows"
            ))
        })?;
    let mut bytes = Vec::with_capacity(total);
    let mut offsets = Vec::with_capacity(count + 1);
    offsets.push(0i32);
    for row in rows {
        let hash = row_hash(key, row);
        let mut bits = hash;
        for i in 0..length {
            if i % 11 == 0 {
                bits = lane(hash, (i / 11) as u64);
            }
            bytes.push(LETTERS[(bits % 52) as usize]);
            bits /= 52;
        }
        offsets.push(bytes.len() as i32);
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    Ok(Arc::new(StringArray::try_new(
        offsets,
        bytes.into(),
        nulls,
    )?))
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

/// The `datagen` connector's rows for a declared schema. Cheap to clone;
/// every method is a pure function of the options and the row range.
#[derive(Debug, Clone)]
pub struct Generator {
    schema: SchemaRef,
    columns: Arc<[ColumnGen]>,
    clock: EventClock,
    end: Option<u64>,
}

impl Generator {
    /// Checks every option (22023 naming the option when unknown or
    /// invalid); `now` is the default `datagen.start.time`.
    pub fn new(
        schema: SchemaRef,
        options: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<Generator> {
        let common = Common::parse(options, now)?;
        let mut per_column: Vec<BTreeMap<&str, &str>> =
            vec![BTreeMap::new(); schema.fields().len()];
        for (key, value) in options {
            if COMMON_OPTIONS.contains(&key.as_str()) {
                continue;
            }
            let (column, option) = field_option(&schema, key)?;
            per_column[column].insert(option, value.as_str());
        }
        let columns = schema
            .fields()
            .iter()
            .zip(per_column)
            .map(|(field, given)| {
                let opts = ColumnOptions {
                    column: field.name(),
                    given,
                    used: Vec::new(),
                };
                ColumnGen::new(field, opts, common.seed)
            })
            .collect::<Result<Vec<_>>>()?;
        let end = columns
            .iter()
            .filter_map(|c| c.rows)
            .chain(common.rows)
            .min();
        Ok(Generator {
            schema,
            columns: columns.into(),
            clock: common.clock,
            end,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Rows `rows` by global index, cut at [`Generator::end`] (so possibly
    /// fewer, or none).
    pub fn batch(&self, rows: Range<u64>) -> Result<RecordBatch> {
        let rows = clamp(rows, self.end);
        let arrays = self
            .columns
            .iter()
            .map(|c| c.array(rows.clone(), &self.clock))
            .collect::<Result<Vec<_>>>()?;
        let options =
            RecordBatchOptions::new().with_row_count(Some((rows.end - rows.start) as usize));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &options,
        )?)
    }

    pub fn rows_per_second(&self) -> u64 {
        self.clock.rows_per_second
    }

    /// The number of rows when bounded (`datagen.rows` or a sequence's end).
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    /// The event clock: row `i`'s time before any lag.
    pub fn clock(&self) -> EventClock {
        self.clock
    }
}

/// `rows` cut at `end`, never reversed.
pub fn clamp(rows: Range<u64>, end: Option<u64>) -> Range<u64> {
    let stop = end.map_or(rows.end, |e| rows.end.min(e));
    rows.start.min(stop)..stop
}

/// `fields.<col>.<option>` → (column index, option).
fn field_option<'k>(schema: &SchemaRef, key: &'k str) -> Result<(usize, &'k str)> {
    let unknown = || {
        Error::InvalidParameter(format!(
            "unknown option \"{key}\" for connector datagen; it takes {} and fields.<column>.<option>",
            COMMON_OPTIONS[1..].join(", ")
        ))
    };
    let (column, option) = key
        .strip_prefix("fields.")
        .and_then(|rest| rest.rsplit_once('.'))
        .ok_or_else(unknown)?;
    const OPTIONS: [&str; 11] = [
        "kind",
        "seed",
        "null_rate",
        "start",
        "end",
        "min",
        "max",
        "length",
        "values",
        "weights",
        "max_past",
    ];
    if !OPTIONS.contains(&option) {
        return Err(Error::InvalidParameter(format!(
            "unknown option \"{key}\"; a column takes {}",
            OPTIONS.join(", ")
        )));
    }
    let fields = schema.fields();
    let index = fields
        .iter()
        .position(|f| f.name() == column)
        .or_else(|| {
            fields
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(column))
        })
        .ok_or_else(|| {
            Error::InvalidParameter(format!(
                "option \"{key}\" names column \"{column}\", which the source does not have"
            ))
        })?;
    Ok((index, option))
}

// ---------------------------------------------------------------------------
// Either kind of datagen source
// ---------------------------------------------------------------------------

/// A `connector = 'datagen'` source: per-column options, or a named
/// scenario when the options say `generator = '<name>'`.
#[derive(Debug, Clone)]
pub enum Datagen {
    Fields(Generator),
    Scenario(ScenarioGenerator),
}

impl Datagen {
    /// Opens the generator the options describe. With `generator`, the
    /// declared columns must be the scenario's (or none, to take them).
    pub fn open(
        declared: SchemaRef,
        options: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<Datagen> {
        let Some(name) = options.get("generator") else {
            if declared.fields().is_empty() {
                return Err(Error::InvalidParameter(
                    "connector datagen needs declared columns, or a generator option naming \
                     one of: logins, ad_events, ads, page_clicks"
                        .into(),
                ));
            }
            return Generator::new(declared, options, now).map(Datagen::Fields);
        };
        let scenario = Scenario::named(name)?;
        if !declared.fields().is_empty() {
            scenario.check_columns(&declared)?;
        }
        scenario.generator(options, now).map(Datagen::Scenario)
    }

    pub fn schema(&self) -> SchemaRef {
        match self {
            Datagen::Fields(g) => g.schema(),
            Datagen::Scenario(g) => g.schema(),
        }
    }

    pub fn batch(&self, rows: Range<u64>) -> Result<RecordBatch> {
        match self {
            Datagen::Fields(g) => g.batch(rows),
            Datagen::Scenario(g) => g.batch(rows),
        }
    }

    pub fn rows_per_second(&self) -> u64 {
        match self {
            Datagen::Fields(g) => g.rows_per_second(),
            Datagen::Scenario(g) => g.rows_per_second(),
        }
    }

    pub fn end(&self) -> Option<u64> {
        match self {
            Datagen::Fields(g) => g.end(),
            Datagen::Scenario(g) => g.end(),
        }
    }

    pub fn clock(&self) -> EventClock {
        match self {
            Datagen::Fields(g) => g.clock(),
            Datagen::Scenario(g) => g.clock(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::{Int32Type, Int64Type, Schema, TimestampMicrosecondType};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    const START_US: i64 = 19_723 * USECS_PER_DAY;

    fn schema(columns: &[(&str, SqlType)]) -> SchemaRef {
        Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, t)| t.field(n, true))
                .collect::<Vec<_>>(),
        ))
    }

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn generator(columns: &[(&str, SqlType)], pairs: &[(&str, &str)]) -> Generator {
        Generator::new(schema(columns), &options(pairs), now()).expect("generator")
    }

    fn error(columns: &[(&str, SqlType)], pairs: &[(&str, &str)]) -> String {
        let err = Generator::new(schema(columns), &options(pairs), now()).expect_err("invalid");
        assert_eq!(err.sqlstate(), "22023", "{err}");
        err.to_string()
    }

    #[test]
    fn splitmix_matches_the_stepped_generator() {
        // Stepping splitmix64 from a seed gives the same as evaluating it.
        let mut state = 42u64;
        for row in 0..5 {
            state = state.wrapping_add(GAMMA);
            assert_eq!(mix64(state), row_hash(42, row));
        }
        // Published first output of splitmix64 seeded with 0.
        assert_eq!(row_hash(0, 0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn sequences_and_end() {
        let g = generator(
            &[("id", SqlType::BigInt), ("small", SqlType::SmallInt)],
            &[
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "10"),
                ("fields.id.end", "19"),
                ("fields.small.kind", "sequence"),
                ("fields.small.start", "-5"),
            ],
        );
        assert_eq!(g.end(), Some(10));
        let batch = g.batch(0..100).expect("batch");
        assert_eq!(batch.num_rows(), 10);
        let id = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(id.values().to_vec(), (10..20).collect::<Vec<i64>>());
        assert_eq!(g.batch(8..12).expect("tail").num_rows(), 2);
        assert_eq!(g.batch(20..30).expect("past").num_rows(), 0);
        // An unbounded smallint sequence ends at the type's maximum.
        let g = generator(
            &[("s", SqlType::SmallInt)],
            &[("fields.s.kind", "sequence")],
        );
        assert_eq!(g.end(), Some(32767));
        let g = generator(&[("s", SqlType::Integer)], &[("datagen.rows", "5")]);
        assert_eq!(g.end(), Some(5));
    }

    #[test]
    fn random_values_respect_bounds_and_are_deterministic() {
        let cols = [
            ("i", SqlType::Integer),
            ("f", SqlType::Double),
            (
                "n",
                SqlType::Numeric {
                    precision: 6,
                    scale: 2,
                },
            ),
            ("b", SqlType::Boolean),
            ("t", SqlType::Varchar(Some(8))),
        ];
        let opts = [
            ("fields.i.min", "-3"),
            ("fields.i.max", "3"),
            ("fields.f.min", "1.5"),
            ("fields.f.max", "2.5"),
            ("fields.n.min", "-1.25"),
            ("fields.n.max", "1.25"),
            ("fields.t.length", "8"),
            ("datagen.seed", "7"),
        ];
        let g = generator(&cols, &opts);
        let batch = g.batch(0..2000).expect("batch");
        let i = batch.column(0).as_primitive::<Int32Type>();
        assert!(i.values().iter().all(|v| (-3..=3).contains(v)));
        for v in -3..=3 {
            assert!(i.values().contains(&v), "{v} never drawn");
        }
        let f = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert!(f.values().iter().all(|v| (1.5..=2.5).contains(v)));
        let n = batch
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        assert!(n.values().iter().all(|v| (-125..=125).contains(v)));
        assert_eq!(n.data_type(), &DataType::Decimal128(6, 2));
        let b = batch.column(3).as_boolean();
        let trues = b.true_count();
        assert!((800..1200).contains(&trues), "{trues}");
        let t = batch.column(4).as_string::<i32>();
        assert!(
            t.iter()
                .all(|s| s
                    .is_some_and(|s| s.len() == 8 && s.bytes().all(|c| c.is_ascii_alphabetic())))
        );
        // Same options, same rows; another seed, other rows.
        assert_eq!(g.batch(0..2000).expect("again"), batch);
        let mut reseeded = opts.to_vec();
        reseeded.retain(|(k, _)| *k != "datagen.seed");
        let other = generator(&cols, &reseeded).batch(0..2000).expect("other");
        assert_ne!(other.column(0), batch.column(0));
    }

    #[test]
    fn batches_split_anywhere() {
        let g = generator(
            &[
                ("id", SqlType::Integer),
                ("name", SqlType::Text),
                ("c", SqlType::Text),
                ("ts", SqlType::Timestamptz),
            ],
            &[
                ("fields.id.kind", "sequence"),
                ("fields.name.null_rate", "0.3"),
                ("fields.c.kind", "choice"),
                ("fields.c.values", "a, b, c"),
                ("fields.ts.kind", "random"),
                ("fields.ts.max_past", "10s"),
            ],
        );
        let whole = g.batch(0..100).expect("whole");
        let parts = [
            g.batch(0..37).expect("a"),
            g.batch(37..50).expect("b"),
            g.batch(50..100).expect("c"),
        ];
        assert_eq!(concat_batches(&g.schema(), &parts).expect("concat"), whole);
        let nulls = whole.column(1).null_count();
        assert!((15..=45).contains(&nulls), "{nulls}");
    }

    #[test]
    fn event_clock_and_lag() {
        let g = generator(
            &[
                ("ts", SqlType::Timestamptz),
                ("late", SqlType::Timestamp),
                ("d", SqlType::Date),
            ],
            &[
                ("datagen.rows.per.second", "4"),
                ("fields.late.kind", "random"),
                ("fields.late.max_past", "5 minutes"),
            ],
        );
        assert_eq!(g.rows_per_second(), 4);
        let batch = g.batch(0..1000).expect("batch");
        let ts = batch.column(0).as_primitive::<TimestampMicrosecondType>();
        for (row, value) in ts.values().iter().enumerate() {
            assert_eq!(*value, START_US + row as i64 * 250_000);
        }
        assert_eq!(
            batch.schema().field(0).data_type(),
            &SqlType::Timestamptz.arrow_type()
        );
        let late = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let lags: Vec<i64> = ts
            .values()
            .iter()
            .zip(late.values().iter())
            .map(|(t, l)| t - l)
            .collect();
        assert!(lags
            .iter()
            .all(|lag| (0..=300 * USECS_PER_SEC).contains(lag)));
        assert!(lags.iter().any(|lag| *lag > 150 * USECS_PER_SEC));
        let d = batch
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        assert!(d.values().iter().all(|d| *d == 19_723));
        let started = generator(
            &[("ts", SqlType::Timestamptz)],
            &[("datagen.start.time", "2024-06-01T12:00:00+02:00")],
        );
        let ts = started.batch(0..1).expect("batch");
        assert_eq!(
            ts.column(0)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            START_US + 152 * USECS_PER_DAY + 10 * 3600 * USECS_PER_SEC
        );
    }

    #[test]
    fn weighted_choice_and_per_column_seed() {
        let g = generator(
            &[
                ("a", SqlType::Text),
                ("b", SqlType::Text),
                ("n", SqlType::Integer),
            ],
            &[
                ("fields.a.kind", "choice"),
                ("fields.a.values", "x,y,z"),
                ("fields.a.weights", "1, 0, 3"),
                ("fields.b.kind", "choice"),
                ("fields.b.values", "x,y,z"),
                ("fields.b.weights", "1,0,3"),
                ("fields.b.seed", "99"),
                ("fields.n.kind", "choice"),
                ("fields.n.values", "5, 6"),
            ],
        );
        let batch = g.batch(0..4000).expect("batch");
        let a = batch.column(0).as_string::<i32>();
        let count = |v: &str| a.iter().filter(|s| *s == Some(v)).count();
        assert_eq!(count("y"), 0);
        assert!((800..1200).contains(&count("x")), "{}", count("x"));
        assert_ne!(batch.column(0), batch.column(1));
        let n = batch.column(2).as_primitive::<Int32Type>();
        assert!(n.values().iter().all(|v| *v == 5 || *v == 6));
    }

    #[test]
    fn option_errors_name_the_option() {
        let one = [("a", SqlType::Integer)];
        let cases: Vec<(&[(&str, &str)], &str)> = vec![
            (&[("fields.a.kind", "zigzag")], "fields.a.kind"),
            (&[("fields.b.kind", "random")], "column \"b\""),
            (&[("fields.a.colour", "red")], "fields.a.colour"),
            (&[("bogus", "1")], "bogus"),
            (&[("datagen.seed", "-1")], "datagen.seed"),
            (
                &[("datagen.rows.per.second", "0")],
                "datagen.rows.per.second",
            ),
            (
                &[("datagen.start.time", "yesterday-ish")],
                "datagen.start.time",
            ),
            (&[("fields.a.min", "5"), ("fields.a.max", "1")], "min (5)"),
            (
                &[("fields.a.kind", "sequence"), ("fields.a.min", "1")],
                "fields.a.min",
            ),
            (
                &[("fields.a.kind", "sequence"), ("fields.a.end", "0")],
                "end (0)",
            ),
            (&[("fields.a.kind", "choice")], "fields.a.values"),
            (
                &[("fields.a.kind", "choice"), ("fields.a.values", "1,x")],
                "fields.a.values",
            ),
            (
                &[
                    ("fields.a.kind", "choice"),
                    ("fields.a.values", "1,2"),
                    ("fields.a.weights", "1"),
                ],
                "fields.a.weights",
            ),
            (&[("fields.a.null_rate", "2")], "fields.a.null_rate"),
            (&[("fields.a.max", "3000000000")], "max (3000000000)"),
        ];
        for (pairs, needle) in cases {
            let message = error(&one, pairs);
            assert!(message.contains(needle), "{pairs:?}: {message}");
        }
        let message = error(&[("t", SqlType::Text)], &[("fields.t.kind", "sequence")]);
        assert!(
            message.contains("kind sequence does not apply to column \"t\" of type text"),
            "{message}"
        );
        let message = error(
            &[("ts", SqlType::Timestamptz)],
            &[
                ("fields.ts.kind", "random"),
                ("fields.ts.max_past", "1 month"),
            ],
        );
        assert!(message.contains("fields.ts.max_past"), "{message}");
        let message = error(&[("j", SqlType::Jsonb)], &[]);
        assert!(
            message.contains("kind random does not apply to column \"j\""),
            "{message}"
        );
        let not_null = Arc::new(Schema::new(vec![SqlType::Integer.field("a", false)]));
        let err = Generator::new(not_null, &options(&[("fields.a.null_rate", "0.5")]), now())
            .expect_err("not null");
        assert!(err.to_string().contains("nullable"), "{err}");
        let message = error(
            &[("v", SqlType::Varchar(Some(3)))],
            &[("fields.v.length", "4")],
        );
        assert!(message.contains("fields.v.length"), "{message}");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration_us("x", "10s").expect("10s"),
            10 * USECS_PER_SEC
        );
        assert_eq!(
            parse_duration_us("x", "5 minutes").expect("5m"),
            300 * USECS_PER_SEC
        );
        assert_eq!(parse_duration_us("x", "1 day").expect("day"), USECS_PER_DAY);
        assert!(parse_duration_us("x", "-1s").is_err());
        assert!(parse_duration_us("x", "soon").is_err());
    }

    #[test]
    fn open_dispatches_on_generator() {
        let declared = schema(&[("a", SqlType::Integer)]);
        let fields = Datagen::open(
            Arc::clone(&declared),
            &options(&[("connector", "datagen")]),
            now(),
        )
        .expect("fields");
        assert!(matches!(fields, Datagen::Fields(_)));
        assert_eq!(fields.batch(0..3).expect("batch").num_rows(), 3);
        let empty = Arc::new(Schema::empty());
        let logins = Datagen::open(
            Arc::clone(&empty),
            &options(&[("generator", "logins")]),
            now(),
        )
        .expect("scenario");
        assert_eq!(logins.schema().field(0).name(), "user_id");
        assert_eq!(logins.rows_per_second(), DEFAULT_ROWS_PER_SECOND);
        assert!(Datagen::open(declared, &options(&[("generator", "logins")]), now()).is_err());
        assert!(Datagen::open(empty, &options(&[]), now()).is_err());
    }
}
