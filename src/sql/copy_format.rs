//! `COPY ... FROM STDIN` decoding: turns the byte stream of CopyData messages,
//! in PostgreSQL's text or CSV format, into Arrow record batches of the target
//! columns, and parses single values written in PostgreSQL's text input syntax
//! (also used for text-format bind parameters).
//!
//! This module owns option validation, record framing across message
//! boundaries, escaping and quoting, and per-type value parsing with
//! PostgreSQL's SQLSTATEs and messages. The wire protocol, table lookup,
//! constraint checks beyond NOT NULL, and storage belong to its callers.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    new_empty_array, ArrayRef, BooleanBuilder, PrimitiveBuilder, StringBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption};

use crate::types::SqlType;

/// Field metadata key naming the PostgreSQL type behind an Arrow `Utf8`
/// column: `json`, `jsonb` or `varchar(N)`.
pub const PG_TYPE_METADATA_KEY: &str = "eddy.pg_type";

/// A record (one line, or several for CSV quoted newlines) may not grow past
/// this, so a client that never sends a newline cannot exhaust memory.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// The SQLSTATEs this module reports.
pub mod sqlstate {
    pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const INVALID_TIME_ZONE_DISPLACEMENT: &str = "22009";
    pub const INTERVAL_FIELD_OVERFLOW: &str = "22015";
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const BAD_COPY_FILE_FORMAT: &str = "22P04";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const INVALID_COLUMN_REFERENCE: &str = "42P10";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const INTERNAL_ERROR: &str = "XX000";
}

use sqlstate::*;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A COPY or value-input failure, carrying PostgreSQL's SQLSTATE and, for
/// COPY, the input line and column it happened at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", location_suffix(.line, .column))]
pub struct CopyError {
    pub sqlstate: &'static str,
    pub message: String,
    /// 1-based record number in the COPY input, the header included.
    pub line: Option<u64>,
    /// Name of the column whose value failed to parse.
    pub column: Option<String>,
    /// PostgreSQL's DETAIL line, where it gives one.
    pub detail: Option<String>,
}

fn location_suffix(line: &Option<u64>, column: &Option<String>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(", line {line}, column {column}"),
        (Some(line), None) => format!(", line {line}"),
        (None, Some(column)) => format!(", column {column}"),
        (None, None) => String::new(),
    }
}

impl CopyError {
    pub fn new(sqlstate: &'static str, message: impl Into<String>) -> Self {
        CopyError {
            sqlstate,
            message: message.into(),
            line: None,
            column: None,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// PostgreSQL's CONTEXT line, e.g. `COPY t, line 3, column b`.
    pub fn context(&self, table: &str) -> Option<String> {
        self.line
            .map(|_| format!("COPY {table}{}", location_suffix(&self.line, &self.column)))
    }

    fn with_column(mut self, column: &str) -> Self {
        if self.column.is_none() {
            self.column = Some(column.to_string());
        }
        self
    }

    fn at_line(mut self, line: u64) -> Self {
        self.line.get_or_insert(line);
        self
    }
}

fn syntax_error(type_name: &str, text: &str) -> CopyError {
    CopyError::new(
        INVALID_TEXT_REPRESENTATION,
        format!("invalid input syntax for type {type_name}: \"{text}\""),
    )
}

fn datetime_syntax_error(type_name: &str, text: &str) -> CopyError {
    CopyError::new(
        INVALID_DATETIME_FORMAT,
        format!("invalid input syntax for type {type_name}: \"{text}\""),
    )
}

fn datetime_field_overflow(text: &str) -> CopyError {
    CopyError::new(
        DATETIME_FIELD_OVERFLOW,
        format!("date/time field value out of range: \"{text}\""),
    )
}

fn bad_copy_format(message: &str) -> CopyError {
    CopyError::new(BAD_COPY_FILE_FORMAT, message)
}

fn unsupported(message: impl Into<String>) -> CopyError {
    CopyError::new(FEATURE_NOT_SUPPORTED, message)
}

fn invalid_option(message: impl Into<String>) -> CopyError {
    CopyError::new(INVALID_PARAMETER_VALUE, message)
}

fn internal(message: impl Into<String>) -> CopyError {
    CopyError::new(INTERNAL_ERROR, message)
}

/// PostgreSQL names the offending bytes: `invalid byte sequence for encoding
/// "UTF8": 0xc3 0x28`.
fn encoding_error(bytes: &[u8], error: std::str::Utf8Error) -> CopyError {
    let start = error.valid_up_to();
    let len = error.error_len().unwrap_or(bytes.len() - start).clamp(1, 4);
    let shown: Vec<String> = bytes[start..]
        .iter()
        .take(len)
        .map(|b| format!("0x{b:02x}"))
        .collect();
    CopyError::new(
        CHARACTER_NOT_IN_REPERTOIRE,
        format!(
            "invalid byte sequence for encoding \"UTF8\": {}",
            shown.join(" ")
        ),
    )
}

fn nul_byte_error() -> CopyError {
    CopyError::new(
        CHARACTER_NOT_IN_REPERTOIRE,
        "invalid byte sequence for encoding \"UTF8\": 0x00",
    )
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
}

/// The resolved COPY FROM options; `validate` holds PostgreSQL's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    pub delimiter: u8,
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
    /// CSV: an unquoted value in these columns is never taken as NULL.
    pub force_not_null: Vec<String>,
    /// CSV: these columns turn a quoted value equal to the NULL string into NULL.
    pub force_null: Vec<String>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions::text()
    }
}

impl CopyOptions {
    /// PostgreSQL's text-format defaults: tab delimiter, `\N` for NULL.
    pub fn text() -> CopyOptions {
        CopyOptions {
            format: CopyFormat::Text,
            delimiter: b'\t',
            null: "\\N".to_string(),
            header: false,
            quote: b'"',
            escape: b'"',
            force_not_null: Vec::new(),
            force_null: Vec::new(),
        }
    }

    /// PostgreSQL's CSV defaults: comma, unquoted empty string for NULL, `"`.
    pub fn csv() -> CopyOptions {
        CopyOptions {
            format: CopyFormat::Csv,
            delimiter: b',',
            null: String::new(),
            ..CopyOptions::text()
        }
    }

    /// Build from the parsed `COPY ... FROM STDIN` statement options, with
    /// PostgreSQL defaults: text: delimiter tab, null "\N"; csv: delimiter
    /// ',', null "" (unquoted empty), quote '"', escape = quote.
    pub fn from_statement(
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<CopyOptions, CopyError> {
        let mut raw = RawOptions::default();
        for option in options {
            raw.apply(option)?;
        }
        for option in legacy {
            raw.apply_legacy(option)?;
        }
        raw.resolve()
    }

    /// The combinations PostgreSQL refuses.
    pub fn validate(&self) -> Result<(), CopyError> {
        let csv = self.format == CopyFormat::Csv;
        let delimiter = self.delimiter;
        if !delimiter.is_ascii() || !self.quote.is_ascii() || !self.escape.is_ascii() {
            return Err(unsupported(
                "COPY delimiter, quote and escape must be single one-byte characters",
            ));
        }
        if delimiter == b'\r' || delimiter == b'\n' {
            return Err(invalid_option(
                "COPY delimiter cannot be newline or carriage return",
            ));
        }
        if self.null.contains(['\r', '\n']) {
            return Err(invalid_option(
                "COPY null representation cannot use newline or carriage return",
            ));
        }
        if !csv && b"\\.abcdefghijklmnopqrstuvwxyz0123456789".contains(&delimiter) {
            return Err(invalid_option(format!(
                "COPY delimiter cannot be \"{}\"",
                char::from(delimiter)
            )));
        }
        if csv && delimiter == self.quote {
            return Err(invalid_option("COPY delimiter and quote must be different"));
        }
        if self.null.as_bytes().contains(&delimiter) {
            return Err(invalid_option(
                "COPY delimiter character must not appear in the NULL specification",
            ));
        }
        if csv && self.null.as_bytes().contains(&self.quote) {
            return Err(invalid_option(
                "CSV quote character must not appear in the NULL specification",
            ));
        }
        Ok(())
    }
}

/// Options as written, so repeats can be refused and format-dependent
/// defaults applied once the format is known.
#[derive(Default)]
struct RawOptions {
    format: Option<CopyFormat>,
    delimiter: Option<char>,
    null: Option<String>,
    header: Option<bool>,
    quote: Option<char>,
    escape: Option<char>,
    force_not_null: Option<Vec<String>>,
    force_null: Option<Vec<String>>,
    encoding: Option<String>,
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), CopyError> {
    if slot.is_some() {
        return Err(CopyError::new(
            SYNTAX_ERROR,
            "conflicting or redundant options",
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn ident_names(idents: &[datafusion::sql::sqlparser::ast::Ident]) -> Vec<String> {
    idents.iter().map(|ident| ident.value.clone()).collect()
}

fn format_from_name(name: &str) -> Result<CopyFormat, CopyError> {
    match name.to_ascii_lowercase().as_str() {
        "text" => Ok(CopyFormat::Text),
        "csv" => Ok(CopyFormat::Csv),
        "binary" => Err(unsupported("COPY FORMAT binary is not supported")),
        _ => Err(invalid_option(format!(
            "COPY format \"{name}\" not recognized"
        ))),
    }
}

fn one_byte(c: char, what: &str) -> Result<u8, CopyError> {
    u8::try_from(c)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| unsupported(format!("COPY {what} must be a single one-byte character")))
}

impl RawOptions {
    fn apply(&mut self, option: &CopyOption) -> Result<(), CopyError> {
        match option {
            CopyOption::Format(name) => set_once(&mut self.format, format_from_name(&name.value)?),
            // Rows become visible when the COPY commits either way.
            CopyOption::Freeze(_) => Ok(()),
            CopyOption::Delimiter(c) => set_once(&mut self.delimiter, *c),
            CopyOption::Null(null) => set_once(&mut self.null, null.clone()),
            CopyOption::Header(header) => set_once(&mut self.header, *header),
            CopyOption::Quote(c) => set_once(&mut self.quote, *c),
            CopyOption::Escape(c) => set_once(&mut self.escape, *c),
            CopyOption::ForceQuote(_) => Err(unsupported(
                "COPY FORCE_QUOTE cannot be used with COPY FROM",
            )),
            CopyOption::ForceNotNull(cols) => set_once(&mut self.force_not_null, ident_names(cols)),
            CopyOption::ForceNull(cols) => set_once(&mut self.force_null, ident_names(cols)),
            CopyOption::Encoding(name) => set_once(&mut self.encoding, name.clone()),
        }
    }

    fn apply_legacy(&mut self, option: &CopyLegacyOption) -> Result<(), CopyError> {
        match option {
            CopyLegacyOption::Binary => Err(unsupported("COPY BINARY is not supported")),
            CopyLegacyOption::Csv(csv_options) => {
                set_once(&mut self.format, CopyFormat::Csv)?;
                csv_options
                    .iter()
                    .try_for_each(|o| self.apply_legacy_csv(o))
            }
            CopyLegacyOption::Delimiter(c) => set_once(&mut self.delimiter, *c),
            CopyLegacyOption::Null(null) => set_once(&mut self.null, null.clone()),
            CopyLegacyOption::Header => set_once(&mut self.header, true),
            other => Err(unsupported(format!("COPY option {other} is not supported"))),
        }
    }

    fn apply_legacy_csv(&mut self, option: &CopyLegacyCsvOption) -> Result<(), CopyError> {
        match option {
            CopyLegacyCsvOption::Header => set_once(&mut self.header, true),
            CopyLegacyCsvOption::Quote(c) => set_once(&mut self.quote, *c),
            CopyLegacyCsvOption::Escape(c) => set_once(&mut self.escape, *c),
            CopyLegacyCsvOption::ForceNotNull(cols) => {
                set_once(&mut self.force_not_null, ident_names(cols))
            }
            CopyLegacyCsvOption::ForceQuote(_) => Err(unsupported(
                "COPY FORCE QUOTE cannot be used with COPY FROM",
            )),
        }
    }

    fn resolve(self) -> Result<CopyOptions, CopyError> {
        let csv = self.format == Some(CopyFormat::Csv);
        let mut out = if csv {
            CopyOptions::csv()
        } else {
            CopyOptions::text()
        };
        if let Some(encoding) = &self.encoding {
            let normalized = encoding.to_ascii_lowercase().replace(['-', '_'], "");
            if normalized != "utf8" && normalized != "unicode" {
                return Err(unsupported(format!(
                    "COPY ENCODING \"{encoding}\" is not supported; use UTF8"
                )));
            }
        }
        if !csv {
            let csv_only = [
                (self.quote.is_some(), "QUOTE"),
                (self.escape.is_some(), "ESCAPE"),
                (self.force_not_null.is_some(), "FORCE_NOT_NULL"),
                (self.force_null.is_some(), "FORCE_NULL"),
            ];
            if let Some((_, name)) = csv_only.iter().find(|(given, _)| *given) {
                return Err(unsupported(format!("COPY {name} requires CSV mode")));
            }
        }
        if let Some(c) = self.delimiter {
            out.delimiter = one_byte(c, "delimiter")?;
        }
        if let Some(null) = self.null {
            out.null = null;
        }
        out.header = self.header.unwrap_or(false);
        if let Some(c) = self.quote {
            out.quote = one_byte(c, "quote")?;
        }
        out.escape = match self.escape {
            Some(c) => one_byte(c, "escape")?,
            None => out.quote,
        };
        out.force_not_null = self.force_not_null.unwrap_or_default();
        out.force_null = self.force_null.unwrap_or_default();
        out.validate()?;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecoderState {
    Running,
    /// Saw the `\.` end marker or `finish`: later data is ignored.
    Ended,
    /// A previous call failed; the builders may hold half a row.
    Failed,
}

/// How far the search for the current record's end got, so a record split
/// over many messages is scanned once.
#[derive(Debug, Clone, Copy, Default)]
struct RecordScan {
    /// Offset from the record start; may pass the buffer end by one when the
    /// last byte was a text-format backslash whose escaped byte is to come.
    offset: usize,
    in_quote: bool,
    last_was_escape: bool,
}

struct Column {
    name: String,
    nullable: bool,
    force_not_null: bool,
    force_null: bool,
    builder: ColumnBuilder,
}

impl Column {
    fn append_null(&mut self) -> Result<(), CopyError> {
        if !self.nullable {
            return Err(CopyError::new(
                NOT_NULL_VIOLATION,
                format!(
                    "null value in column \"{}\" violates not-null constraint",
                    self.name
                ),
            ));
        }
        self.builder.append_null()
    }
}

mod parallel;

/// Streaming decoder of one `COPY ... FROM STDIN` in text or CSV format.
pub struct CopyDecoder {
    schema: SchemaRef,
    options: CopyOptions,
    batch_rows: usize,
    columns: Vec<Column>,
    /// Bytes of the current, incomplete record.
    buffer: Vec<u8>,
    scan: RecordScan,
    line: u64,
    rows_in_batch: usize,
    rows_decoded: u64,
    state: DecoderState,
    /// Reported by the first call, as `new` cannot fail.
    setup_error: Option<CopyError>,
    /// De-escaped or de-quoted field bytes, reused across fields.
    scratch: Vec<u8>,
    /// Set by [`CopyDecoder::with_threads`]: records are decoded there.
    parallel: Option<Box<parallel::Parallel>>,
}

impl CopyDecoder {
    /// `schema` = the target columns in the order the COPY lists them.
    pub fn new(schema: SchemaRef, options: CopyOptions, batch_rows: usize) -> CopyDecoder {
        let batch_rows = batch_rows.max(1);
        let columns = schema
            .fields()
            .iter()
            .map(|field| Column {
                name: field.name().clone(),
                nullable: field.is_nullable(),
                force_not_null: false,
                force_null: false,
                builder: ColumnBuilder::new(field, batch_rows, batch_rows.saturating_mul(16)),
            })
            .collect();
        let mut decoder = CopyDecoder {
            schema,
            options,
            batch_rows,
            columns,
            buffer: Vec::new(),
            scan: RecordScan::default(),
            line: 0,
            rows_in_batch: 0,
            rows_decoded: 0,
            state: DecoderState::Running,
            setup_error: None,
            scratch: Vec::new(),
            parallel: None,
        };
        decoder.setup_error = decoder
            .options
            .validate()
            .and_then(|()| decoder.mark_forced_columns())
            .err();
        decoder
    }

    /// [`CopyDecoder::new`] that decodes on up to `threads` threads once a
    /// COPY reaches `batch_rows` rows (see `copy_format/parallel.rs`).
    pub fn with_threads(
        schema: SchemaRef,
        options: CopyOptions,
        batch_rows: usize,
        threads: usize,
    ) -> CopyDecoder {
        let mut decoder = CopyDecoder::new(Arc::clone(&schema), options.clone(), batch_rows);
        if threads > 1 && decoder.setup_error.is_none() {
            decoder.parallel = Some(Box::new(parallel::Parallel::new(
                schema,
                options,
                decoder.batch_rows,
                threads,
            )));
        }
        decoder
    }

    /// Feed the next CopyData payload; messages split rows (and even UTF-8
    /// chars / quoted CSV fields) at arbitrary byte positions. Returns the
    /// complete batches of `batch_rows` rows ready so far.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<RecordBatch>, CopyError> {
        self.check_usable()?;
        let mut batches = Vec::new();
        if self.state == DecoderState::Ended {
            return Ok(batches);
        }
        if let Some(parallel) = &mut self.parallel {
            let result = parallel.push(data);
            return self.counted(result);
        }
        self.buffer.extend_from_slice(data);
        let result = self.decode_buffered(&mut batches);
        self.fail_on_error(result)?;
        Ok(batches)
    }

    /// End of data: the remaining rows (the text-format end marker line `\.`
    /// is accepted and ignored).
    pub fn finish(&mut self) -> Result<Vec<RecordBatch>, CopyError> {
        self.check_usable()?;
        if let Some(parallel) = &mut self.parallel {
            let result = parallel.finish();
            self.state = DecoderState::Ended;
            return self.counted(result);
        }
        let result = self.finish_buffered();
        Ok(self.fail_on_error(result)?.into_iter().collect())
    }

    /// Counts the rows of batches decoded elsewhere, or fails the decoder.
    fn counted(
        &mut self,
        result: Result<Vec<RecordBatch>, CopyError>,
    ) -> Result<Vec<RecordBatch>, CopyError> {
        let batches = self.fail_on_error(result)?;
        self.rows_decoded += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        Ok(batches)
    }

    /// Decodes the records of a chunk (`ends`: each one's end offset in
    /// `bytes`; the first is line `first_line`) as one batch.
    fn decode_chunk(
        &mut self,
        bytes: &[u8],
        ends: &[usize],
        first_line: u64,
    ) -> Result<RecordBatch, CopyError> {
        self.line = first_line - 1;
        let mut start = 0;
        for &end in ends {
            self.decode_record(&bytes[start..end])?;
            start = end + 1;
        }
        self.flush()
    }

    /// Data rows decoded so far (the header line is not counted).
    pub fn rows_decoded(&self) -> u64 {
        self.rows_decoded
    }

    fn mark_forced_columns(&mut self) -> Result<(), CopyError> {
        let lists = [
            (&self.options.force_not_null, "FORCE_NOT_NULL", true),
            (&self.options.force_null, "FORCE_NULL", false),
        ];
        for (names, label, not_null) in lists {
            for name in names {
                let column = self
                    .columns
                    .iter_mut()
                    .find(|c| &c.name == name)
                    .ok_or_else(|| {
                        CopyError::new(
                            INVALID_COLUMN_REFERENCE,
                            format!("{label} column \"{name}\" not referenced by COPY"),
                        )
                    })?;
                if not_null {
                    column.force_not_null = true;
                } else {
                    column.force_null = true;
                }
            }
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<(), CopyError> {
        if let Some(error) = &self.setup_error {
            return Err(error.clone());
        }
        if self.state == DecoderState::Failed {
            return Err(internal("COPY decoder used after an error (a bug)"));
        }
        Ok(())
    }

    fn fail_on_error<T>(&mut self, result: Result<T, CopyError>) -> Result<T, CopyError> {
        if result.is_err() {
            self.state = DecoderState::Failed;
        }
        result
    }

    fn decode_buffered(&mut self, batches: &mut Vec<RecordBatch>) -> Result<(), CopyError> {
        let buffer = std::mem::take(&mut self.buffer);
        let mut consumed = 0;
        let result = self.decode_records(&buffer, &mut consumed, batches);
        self.buffer = buffer;
        if self.state == DecoderState::Ended {
            self.buffer.clear();
        } else {
            self.buffer.drain(..consumed);
        }
        result?;
        if self.buffer.len() > MAX_RECORD_BYTES {
            return Err(CopyError::new(
                PROGRAM_LIMIT_EXCEEDED,
                format!("COPY record exceeds the {MAX_RECORD_BYTES} byte limit"),
            )
            .at_line(self.line + 1));
        }
        Ok(())
    }

    /// Decodes every complete record in `buffer`, leaving in `consumed` how
    /// many bytes were used up.
    fn decode_records(
        &mut self,
        buffer: &[u8],
        consumed: &mut usize,
        batches: &mut Vec<RecordBatch>,
    ) -> Result<(), CopyError> {
        while let Some(end) = self.find_record_end(&buffer[*consumed..]) {
            let record = &buffer[*consumed..*consumed + end];
            *consumed += end + 1;
            self.scan = RecordScan::default();
            self.decode_record(record)?;
            if self.rows_in_batch == self.batch_rows {
                batches.push(self.flush()?);
            }
            if self.state == DecoderState::Ended {
                break;
            }
        }
        Ok(())
    }

    fn finish_buffered(&mut self) -> Result<Option<RecordBatch>, CopyError> {
        if self.state == DecoderState::Running && !self.buffer.is_empty() {
            // The last line may lack its newline, as PostgreSQL allows.
            let buffer = std::mem::take(&mut self.buffer);
            self.decode_record(&buffer)?;
        }
        self.state = DecoderState::Ended;
        if self.rows_in_batch == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }

    /// Offset of the newline ending the record at the start of `data`.
    fn find_record_end(&mut self, data: &[u8]) -> Option<usize> {
        find_record_end(&self.options, data, &mut self.scan)
    }

    fn decode_record(&mut self, raw: &[u8]) -> Result<(), CopyError> {
        self.line += 1;
        let line = self.line;
        let record = strip_record_cr(raw, self.options.format);
        if record == b"\\." {
            self.state = DecoderState::Ended;
            return Ok(());
        }
        if line == 1 && self.options.header {
            return Ok(());
        }
        let text =
            std::str::from_utf8(record).map_err(|e| encoding_error(record, e).at_line(line))?;
        let result = match self.options.format {
            CopyFormat::Text => self.decode_text_row(text),
            CopyFormat::Csv => self.decode_csv_row(text),
        };
        result.map_err(|e| e.at_line(line))?;
        self.rows_in_batch += 1;
        self.rows_decoded += 1;
        Ok(())
    }

    fn decode_text_row(&mut self, text: &str) -> Result<(), CopyError> {
        let bytes = text.as_bytes();
        if self.columns.is_empty() {
            return if bytes.is_empty() {
                Ok(())
            } else {
                Err(extra_data())
            };
        }
        let delimiter = self.options.delimiter;
        let null = self.options.null.as_bytes();
        let mut next = Some(0);
        for column in &mut self.columns {
            let Some(start) = next else {
                return Err(missing_data(&column.name));
            };
            let (end, escaped) = scan_text_field(bytes, start, delimiter)?;
            next = (end < bytes.len()).then_some(end + 1);
            let raw = &text[start..end];
            let result = if raw.as_bytes() == null {
                column.append_null()
            } else if !escaped {
                column.builder.append_text(raw)
            } else {
                decode_text_escapes(raw.as_bytes(), &mut self.scratch);
                match std::str::from_utf8(&self.scratch) {
                    Ok(value) => column.builder.append_text(value),
                    Err(e) => Err(encoding_error(&self.scratch, e)),
                }
            };
            result.map_err(|e| e.with_column(&column.name))?;
        }
        match next {
            Some(_) => Err(extra_data()),
            None => Ok(()),
        }
    }

    fn decode_csv_row(&mut self, text: &str) -> Result<(), CopyError> {
        let bytes = text.as_bytes();
        if self.columns.is_empty() {
            return if bytes.is_empty() {
                Ok(())
            } else {
                Err(extra_data())
            };
        }
        let syntax = CsvSyntax {
            delimiter: self.options.delimiter,
            quote: self.options.quote,
            escape: self.options.escape,
        };
        let null = self.options.null.as_bytes();
        let mut next = Some(0);
        for column in &mut self.columns {
            let Some(start) = next else {
                return Err(missing_data(&column.name));
            };
            let (end, quoted) = scan_csv_field(bytes, start, &syntax, &mut self.scratch)?;
            next = (end < bytes.len()).then_some(end + 1);
            let result = if quoted {
                if column.force_null && self.scratch == null {
                    column.append_null()
                } else {
                    match std::str::from_utf8(&self.scratch) {
                        Ok(value) => column.builder.append_text(value),
                        Err(e) => Err(encoding_error(&self.scratch, e)),
                    }
                }
            } else {
                let raw = &text[start..end];
                if raw.as_bytes() == null && !column.force_not_null {
                    column.append_null()
                } else {
                    column.builder.append_text(raw)
                }
            };
            result.map_err(|e| e.with_column(&column.name))?;
        }
        match next {
            Some(_) => Err(extra_data()),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<RecordBatch, CopyError> {
        // No batch follows the last one: its builders are left empty.
        let more = self.state != DecoderState::Ended;
        let rows = if more { self.batch_rows } else { 0 };
        let arrays = self
            .columns
            .iter_mut()
            .zip(self.schema.fields())
            .map(|(column, field)| {
                // The next batch's builder is sized by this one, so a batch
                // like it fills the builder without growing it: each growth
                // of an Arrow buffer is a copy into new memory.
                let text = column.builder.text_bytes();
                let text = if more { text + text / 8 + 64 } else { 0 };
                let next = ColumnBuilder::new(field, rows, text);
                let mut array = std::mem::replace(&mut column.builder, next).finish()?;
                // A table keeps these arrays: one that holds much more than
                // it filled (the first batch, the last) gives the rest back.
                let held = array.get_buffer_memory_size();
                let used = array.to_data().get_slice_memory_size().unwrap_or(held);
                if held - used.min(held) > used / 8 {
                    datafusion::arrow::array::Array::shrink_to_fit(&mut array);
                }
                Ok(array)
            })
            .collect::<Result<Vec<_>, CopyError>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows_in_batch));
        self.rows_in_batch = 0;
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), arrays, &options)
            .map_err(|e| internal(format!("COPY built an invalid batch (a bug): {e}")))
    }
}

fn missing_data(column: &str) -> CopyError {
    CopyError::new(
        BAD_COPY_FILE_FORMAT,
        format!("missing data for column \"{column}\""),
    )
}

fn extra_data() -> CopyError {
    bad_copy_format("extra data after last expected column")
}

/// Offset of the newline ending the record at the start of `data`, in
/// `options`' format; `scan` keeps how far an unfinished search got.
fn find_record_end(options: &CopyOptions, data: &[u8], scan: &mut RecordScan) -> Option<usize> {
    match options.format {
        CopyFormat::Text => find_text_record_end(data, scan),
        CopyFormat::Csv => {
            // An escape equal to the quote is just a doubled quote, which
            // toggling the quote state twice already handles.
            let escape = (options.escape != options.quote).then_some(options.escape);
            find_csv_record_end(data, scan, options.quote, escape)
        }
    }
}

/// In text format a backslash escapes the next byte, newline included.
fn find_text_record_end(data: &[u8], scan: &mut RecordScan) -> Option<usize> {
    let mut i = scan.offset;
    while i < data.len() {
        // Only newlines and backslashes matter: jump to the next one.
        let Some(k) = memchr::memchr2(b'\n', b'\\', &data[i..]) else {
            i = data.len();
            break;
        };
        i += k;
        match data[i] {
            b'\n' => return Some(i),
            _ => i += 2,
        }
    }
    scan.offset = i;
    None
}

/// PostgreSQL's CSV framing: newlines inside quotes belong to the record; an
/// escape (distinct from the quote) inside quotes protects the next quote.
fn find_csv_record_end(
    data: &[u8],
    scan: &mut RecordScan,
    quote: u8,
    escape: Option<u8>,
) -> Option<usize> {
    let mut i = scan.offset;
    while i < data.len() {
        // Bytes other than these change nothing: jump to the next one.
        // (Outside quotes no escape is pending; inside, a pending escape
        // applies to whatever byte comes next.)
        let next = match (scan.in_quote, scan.last_was_escape, escape) {
            (false, _, _) => memchr::memchr2(b'\n', quote, &data[i..]),
            (true, true, _) => Some(0),
            (true, false, Some(escape)) => memchr::memchr2(quote, escape, &data[i..]),
            (true, false, None) => memchr::memchr(quote, &data[i..]),
        };
        let Some(k) = next else {
            i = data.len();
            break;
        };
        i += k;
        let c = data[i];
        if c == b'\n' && !scan.in_quote {
            return Some(i);
        }
        if scan.in_quote && Some(c) == escape {
            scan.last_was_escape = !scan.last_was_escape;
        }
        if c == quote && !scan.last_was_escape {
            scan.in_quote = !scan.in_quote;
        }
        if Some(c) != escape {
            scan.last_was_escape = false;
        }
        i += 1;
    }
    scan.offset = i;
    None
}

/// Drops the `\r` of a `\r\n` line end, unless a text-format backslash
/// escapes it (then it is data).
fn strip_record_cr(raw: &[u8], format: CopyFormat) -> &[u8] {
    let Some((&b'\r', body)) = raw.split_last() else {
        return raw;
    };
    if format == CopyFormat::Text {
        let backslashes = body.iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            return raw;
        }
    }
    body
}

/// End offset of the text-format field starting at `start`, and whether it
/// holds backslash escapes.
fn scan_text_field(bytes: &[u8], start: usize, delimiter: u8) -> Result<(usize, bool), CopyError> {
    let mut i = start;
    let mut escaped = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b == delimiter {
            return Ok((i, escaped));
        }
        if b == b'\\' {
            escaped = true;
            i += 2;
            continue;
        }
        if b == b'\r' {
            return Err(bad_copy_format("literal carriage return found in data"));
        }
        i += 1;
    }
    Ok((bytes.len(), escaped))
}

/// PostgreSQL's text-format escapes: `\b \f \n \r \t \v`, octal `\NNN`,
/// hex `\xHH`, and any other byte standing for itself.
fn decode_text_escapes(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        // A trailing lone backslash is dropped, as PostgreSQL does.
        let Some(&c) = raw.get(i) else { break };
        i += 1;
        let decoded = match c {
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                (value & 0xff) as u8
            }
            b'x' => match raw.get(i).and_then(|&d| hex_value(d)) {
                Some(high) => {
                    i += 1;
                    match raw.get(i).and_then(|&d| hex_value(d)) {
                        Some(low) => {
                            i += 1;
                            high * 16 + low
                        }
                        None => high,
                    }
                }
                None => b'x',
            },
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            other => other,
        };
        out.push(decoded);
    }
}

fn hex_value(d: u8) -> Option<u8> {
    char::from(d).to_digit(16).map(|v| v as u8)
}

struct CsvSyntax {
    delimiter: u8,
    quote: u8,
    escape: u8,
}

/// End offset of the CSV field starting at `start`, and whether it contained
/// quotes; a quoted field's value is left in `scratch`.
fn scan_csv_field(
    bytes: &[u8],
    start: usize,
    syntax: &CsvSyntax,
    scratch: &mut Vec<u8>,
) -> Result<(usize, bool), CopyError> {
    let mut i = start;
    while i < bytes.len() {
        let b = bytes[i];
        if b == syntax.delimiter {
            return Ok((i, false));
        }
        if b == syntax.quote {
            break;
        }
        if b == b'\r' {
            return Err(bad_copy_format("unquoted carriage return found in data"));
        }
        i += 1;
    }
    if i == bytes.len() {
        return Ok((i, false));
    }
    scratch.clear();
    scratch.extend_from_slice(&bytes[start..i]);
    let end = unquote_csv_field(bytes, i, syntax, scratch)?;
    Ok((end, true))
}

fn unquote_csv_field(
    bytes: &[u8],
    mut i: usize,
    syntax: &CsvSyntax,
    out: &mut Vec<u8>,
) -> Result<usize, CopyError> {
    let mut in_quote = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quote {
            let next = bytes.get(i + 1).copied();
            if b == syntax.escape && (next == Some(syntax.quote) || next == Some(syntax.escape)) {
                out.extend(next);
                i += 2;
                continue;
            }
            if b == syntax.quote {
                in_quote = false;
            } else {
                out.push(b);
            }
        } else if b == syntax.delimiter {
            return Ok(i);
        } else if b == syntax.quote {
            in_quote = true;
        } else if b == b'\r' {
            return Err(bad_copy_format("unquoted carriage return found in data"));
        } else {
            out.push(b);
        }
        i += 1;
    }
    if in_quote {
        return Err(bad_copy_format("unterminated CSV quoted field"));
    }
    Ok(i)
}

// ---------------------------------------------------------------------------
// Column builders
// ---------------------------------------------------------------------------

/// What a `Utf8` column checks beyond UTF-8 validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    Plain,
    Json,
    Varchar(usize),
}

impl TextKind {
    fn of(field: &Field) -> TextKind {
        // A table's columns carry their SQL type (`eddy.sql_type`); other
        // callers may name a PostgreSQL type instead (`eddy.pg_type`).
        match SqlType::of_field(field) {
            Some(SqlType::Json | SqlType::Jsonb) => return TextKind::Json,
            Some(SqlType::Varchar(Some(n))) => return TextKind::Varchar(n as usize),
            _ => {}
        }
        let Some(pg_type) = field.metadata().get(PG_TYPE_METADATA_KEY) else {
            return TextKind::Plain;
        };
        let pg_type = pg_type.trim().to_ascii_lowercase();
        if pg_type == "json" || pg_type == "jsonb" {
            return TextKind::Json;
        }
        ["varchar(", "character varying("]
            .iter()
            .find_map(|prefix| pg_type.strip_prefix(prefix))
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|n| n.trim().parse().ok())
            .map_or(TextKind::Plain, TextKind::Varchar)
    }

    fn check(self, text: &str) -> Result<&str, CopyError> {
        if text.as_bytes().contains(&0) {
            return Err(nul_byte_error());
        }
        match self {
            TextKind::Plain => Ok(text),
            TextKind::Json => validate_json(text).map(|()| text),
            TextKind::Varchar(limit) => fit_varchar(text, limit),
        }
    }
}

/// Over-long input is an error unless only spaces overflow, which the SQL
/// standard says to drop.
fn fit_varchar(text: &str, limit: usize) -> Result<&str, CopyError> {
    if text.len() <= limit {
        return Ok(text);
    }
    match text.char_indices().nth(limit) {
        None => Ok(text),
        Some((cut, _)) if text[cut..].bytes().all(|b| b == b' ') => Ok(&text[..cut]),
        Some(_) => Err(CopyError::new(
            STRING_DATA_RIGHT_TRUNCATION,
            format!("value too long for type character varying({limit})"),
        )),
    }
}

/// One builder per target column, parsing straight from the input text.
enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int16(PrimitiveBuilder<Int16Type>),
    Int32(PrimitiveBuilder<Int32Type>),
    Int64(PrimitiveBuilder<Int64Type>),
    Float32(PrimitiveBuilder<Float32Type>),
    Float64(PrimitiveBuilder<Float64Type>),
    Decimal(PrimitiveBuilder<Decimal128Type>, u8, i8),
    Text(StringBuilder, TextKind),
    Date(PrimitiveBuilder<Date32Type>),
    Timestamp(PrimitiveBuilder<TimestampMicrosecondType>, bool),
    Interval(PrimitiveBuilder<IntervalMonthDayNanoType>),
    /// Any other type goes through `parse_text_value`, one scalar at a time.
    Other(Vec<ScalarValue>, Box<Field>),
}

impl ColumnBuilder {
    /// A builder for `capacity` rows (and `text_bytes` bytes of text).
    fn new(field: &Field, capacity: usize, text_bytes: usize) -> ColumnBuilder {
        let data_type = field.data_type().clone();
        match field.data_type() {
            DataType::Boolean => Self::Boolean(BooleanBuilder::with_capacity(capacity)),
            DataType::Int16 => Self::Int16(PrimitiveBuilder::with_capacity(capacity)),
            DataType::Int32 => Self::Int32(PrimitiveBuilder::with_capacity(capacity)),
            DataType::Int64 => Self::Int64(PrimitiveBuilder::with_capacity(capacity)),
            DataType::Float32 => Self::Float32(PrimitiveBuilder::with_capacity(capacity)),
            DataType::Float64 => Self::Float64(PrimitiveBuilder::with_capacity(capacity)),
            DataType::Decimal128(precision, scale) => Self::Decimal(
                PrimitiveBuilder::with_capacity(capacity).with_data_type(data_type),
                *precision,
                *scale,
            ),
            DataType::Utf8 => Self::Text(
                StringBuilder::with_capacity(capacity, text_bytes),
                TextKind::of(field),
            ),
            DataType::Date32 => Self::Date(PrimitiveBuilder::with_capacity(capacity)),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => Self::Timestamp(
                PrimitiveBuilder::with_capacity(capacity).with_data_type(data_type),
                tz.is_some(),
            ),
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                Self::Interval(PrimitiveBuilder::with_capacity(capacity))
            }
            _ => Self::Other(Vec::with_capacity(capacity), Box::new(field.clone())),
        }
    }

    /// Bytes of text appended so far (0 for other types).
    fn text_bytes(&self) -> usize {
        match self {
            Self::Text(b, _) => b.values_slice().len(),
            _ => 0,
        }
    }

    fn append_text(&mut self, text: &str) -> Result<(), CopyError> {
        match self {
            Self::Boolean(b) => b.append_value(parse_bool(text)?),
            Self::Int16(b) => b.append_value(parse_int(text, "smallint")?),
            Self::Int32(b) => b.append_value(parse_int(text, "integer")?),
            Self::Int64(b) => b.append_value(parse_int(text, "bigint")?),
            Self::Float32(b) => b.append_value(parse_f32(text)?),
            Self::Float64(b) => b.append_value(parse_f64(text)?),
            Self::Decimal(b, precision, scale) => {
                b.append_value(parse_decimal(text, *precision, *scale)?)
            }
            Self::Text(b, kind) => b.append_value(kind.check(text)?),
            Self::Date(b) => b.append_value(parse_date(text)?),
            Self::Timestamp(b, with_tz) => b.append_value(parse_timestamp_us(text, *with_tz)?),
            Self::Interval(b) => b.append_value(parse_interval(text)?),
            Self::Other(values, field) => {
                values.push(parse_text_value(text, field.data_type(), field)?)
            }
        }
        Ok(())
    }

    fn append_null(&mut self) -> Result<(), CopyError> {
        match self {
            Self::Boolean(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Decimal(b, _, _) => b.append_null(),
            Self::Text(b, _) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b, _) => b.append_null(),
            Self::Interval(b) => b.append_null(),
            Self::Other(values, field) => values.push(
                ScalarValue::try_from(field.data_type())
                    .map_err(|e| unsupported(format!("COPY cannot store NULL here: {e}")))?,
            ),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<ArrayRef, CopyError> {
        Ok(match self {
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Int16(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Decimal(b, _, _) => Arc::new(b.finish()),
            Self::Text(b, _) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b, _) => Arc::new(b.finish()),
            Self::Interval(b) => Arc::new(b.finish()),
            Self::Other(values, field) if values.is_empty() => new_empty_array(field.data_type()),
            Self::Other(values, field) => ScalarValue::iter_to_array(values.drain(..))
                .map_err(|e| internal(format!("COPY column \"{}\": {e}", field.name())))?,
        })
    }
}

// ---------------------------------------------------------------------------
// Value parsing
// ---------------------------------------------------------------------------

/// Parse one value in PostgreSQL text input syntax into the given type (also
/// used for text-format bind parameters). Errors: 22P02 invalid input syntax,
/// 22003 out of range, 22007 invalid datetime format, 22008 datetime field
/// overflow.
pub fn parse_text_value(
    text: &str,
    data_type: &DataType,
    field: &Field,
) -> Result<ScalarValue, CopyError> {
    Ok(match data_type {
        DataType::Boolean => ScalarValue::Boolean(Some(parse_bool(text)?)),
        DataType::Int16 => ScalarValue::Int16(Some(parse_int(text, "smallint")?)),
        DataType::Int32 => ScalarValue::Int32(Some(parse_int(text, "integer")?)),
        DataType::Int64 => ScalarValue::Int64(Some(parse_int(text, "bigint")?)),
        DataType::Float32 => ScalarValue::Float32(Some(parse_f32(text)?)),
        DataType::Float64 => ScalarValue::Float64(Some(parse_f64(text)?)),
        DataType::Decimal128(p, s) => {
            ScalarValue::Decimal128(Some(parse_decimal(text, *p, *s)?), *p, *s)
        }
        DataType::Utf8 => ScalarValue::Utf8(Some(TextKind::of(field).check(text)?.to_string())),
        DataType::LargeUtf8 => {
            ScalarValue::LargeUtf8(Some(TextKind::of(field).check(text)?.to_string()))
        }
        DataType::Utf8View => {
            ScalarValue::Utf8View(Some(TextKind::of(field).check(text)?.to_string()))
        }
        DataType::Date32 => ScalarValue::Date32(Some(parse_date(text)?)),
        DataType::Timestamp(unit, tz) => timestamp_scalar(text, *unit, tz.clone())?,
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            ScalarValue::IntervalMonthDayNano(Some(parse_interval(text)?))
        }
        other => ScalarValue::Utf8(Some(text.to_string()))
            .cast_to(other)
            .map_err(|_| syntax_error(&other.to_string(), text))?,
    })
}

fn timestamp_scalar(
    text: &str,
    unit: TimeUnit,
    tz: Option<Arc<str>>,
) -> Result<ScalarValue, CopyError> {
    let micros = parse_timestamp_us(text, tz.is_some())?;
    Ok(match unit {
        TimeUnit::Second => ScalarValue::TimestampSecond(Some(micros.div_euclid(1_000_000)), tz),
        TimeUnit::Millisecond => {
            ScalarValue::TimestampMillisecond(Some(micros.div_euclid(1_000)), tz)
        }
        TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(Some(micros), tz),
        TimeUnit::Nanosecond => {
            let nanos = micros
                .checked_mul(1_000)
                .ok_or_else(|| timestamp_out_of_range(text))?;
            ScalarValue::TimestampNanosecond(Some(nanos), tz)
        }
    })
}

/// PostgreSQL's `isspace`, which also counts vertical tab and form feed.
fn is_pg_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn trim_pg_space(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_ascii() && is_pg_space(c as u8))
}

fn parse_bool(text: &str) -> Result<bool, CopyError> {
    let t = trim_pg_space(text).as_bytes();
    // PostgreSQL accepts any unambiguous prefix of the words.
    let prefix_of = |word: &[u8]| t.len() <= word.len() && t.eq_ignore_ascii_case(&word[..t.len()]);
    let value = match t.first().map(u8::to_ascii_lowercase) {
        Some(b't') if prefix_of(b"true") => Some(true),
        Some(b'y') if prefix_of(b"yes") => Some(true),
        Some(b'f') if prefix_of(b"false") => Some(false),
        Some(b'n') if prefix_of(b"no") => Some(false),
        Some(b'o') if t.len() >= 2 && prefix_of(b"on") => Some(true),
        Some(b'o') if t.len() >= 2 && prefix_of(b"off") => Some(false),
        Some(b'1') if t.len() == 1 => Some(true),
        Some(b'0') if t.len() == 1 => Some(false),
        _ => None,
    };
    value.ok_or_else(|| syntax_error("boolean", text))
}

fn parse_int<T: TryFrom<i64>>(text: &str, type_name: &str) -> Result<T, CopyError> {
    let value = match parse_plain_i64(text.as_bytes()) {
        Some(value) => value,
        None => parse_int_general(text, type_name)?,
    };
    T::try_from(value).map_err(|_| int_out_of_range(text, type_name))
}

fn int_out_of_range(text: &str, type_name: &str) -> CopyError {
    CopyError::new(
        NUMERIC_VALUE_OUT_OF_RANGE,
        format!("value \"{text}\" is out of range for type {type_name}"),
    )
}

/// The common case: an optional minus and at most 18 digits, which cannot
/// overflow an i64.
fn parse_plain_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(d - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Everything PostgreSQL 16 accepts: surrounding spaces, `+`, `0x`/`0o`/`0b`
/// prefixes and `_` between digits.
fn parse_int_general(text: &str, type_name: &str) -> Result<i64, CopyError> {
    let t = trim_pg_space(text).as_bytes();
    let (negative, rest) = match t.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, t),
    };
    let (radix, digits, after_prefix) = match rest {
        [b'0', b'x' | b'X', tail @ ..] => (16, tail, true),
        [b'0', b'o' | b'O', tail @ ..] => (8, tail, true),
        [b'0', b'b' | b'B', tail @ ..] => (2, tail, true),
        _ => (10, rest, false),
    };
    let magnitude =
        digits_value(digits, radix, after_prefix).ok_or_else(|| syntax_error(type_name, text))?;
    let magnitude = magnitude.ok_or_else(|| int_out_of_range(text, type_name))?;
    let value = if negative {
        -i128::from(magnitude)
    } else {
        i128::from(magnitude)
    };
    i64::try_from(value).map_err(|_| int_out_of_range(text, type_name))
}

/// `None` on bad syntax, `Some(None)` when the digits overflow a u64.
fn digits_value(digits: &[u8], radix: u32, after_prefix: bool) -> Option<Option<u64>> {
    if digits.is_empty() {
        return None;
    }
    let mut value = Some(0u64);
    let mut may_separate = after_prefix;
    for (idx, &c) in digits.iter().enumerate() {
        if c == b'_' {
            if !may_separate || idx + 1 == digits.len() {
                return None;
            }
            may_separate = false;
            continue;
        }
        let digit = char::from(c).to_digit(radix)?;
        value = value
            .and_then(|v| v.checked_mul(u64::from(radix)))
            .and_then(|v| v.checked_add(u64::from(digit)));
        may_separate = true;
    }
    Some(value)
}

fn float_out_of_range(text: &str, type_name: &str) -> CopyError {
    CopyError::new(
        NUMERIC_VALUE_OUT_OF_RANGE,
        format!("\"{text}\" is out of range for type {type_name}"),
    )
}

/// Rust's float parser takes the same forms as `strtod` (NaN, Infinity,
/// exponents) but saturates where PostgreSQL reports out of range.
fn check_float_range(trimmed: &str, infinite: bool, zero: bool) -> bool {
    let overflow = infinite
        && !trimmed
            .trim_start_matches(['+', '-'])
            .starts_with(['i', 'I']);
    let underflow = zero
        && trimmed
            .bytes()
            .take_while(|c| !matches!(c, b'e' | b'E'))
            .any(|c| matches!(c, b'1'..=b'9'));
    !(overflow || underflow)
}

fn parse_f64(text: &str) -> Result<f64, CopyError> {
    let t = trim_pg_space(text);
    let value: f64 = t
        .parse()
        .map_err(|_| syntax_error("double precision", text))?;
    if !check_float_range(t, value.is_infinite(), value == 0.0) {
        return Err(float_out_of_range(text, "double precision"));
    }
    Ok(value)
}

fn parse_f32(text: &str) -> Result<f32, CopyError> {
    let t = trim_pg_space(text);
    let value: f32 = t.parse().map_err(|_| syntax_error("real", text))?;
    if !check_float_range(t, value.is_infinite(), value == 0.0) {
        return Err(float_out_of_range(text, "real"));
    }
    Ok(value)
}

/// A numeric literal split into its parts; digit groups may hold `_`.
struct NumericText<'a> {
    negative: bool,
    integer: &'a [u8],
    fraction: &'a [u8],
    exponent: i64,
}

impl<'a> NumericText<'a> {
    fn parse(t: &'a [u8]) -> Option<NumericText<'a>> {
        let (negative, rest) = match t.split_first() {
            Some((b'-', rest)) => (true, rest),
            Some((b'+', rest)) => (false, rest),
            _ => (false, t),
        };
        let mantissa_len = rest
            .iter()
            .position(|c| matches!(c, b'e' | b'E'))
            .unwrap_or(rest.len());
        let (mantissa, exponent_text) = rest.split_at(mantissa_len);
        let (integer, fraction) = match mantissa.iter().position(|&c| c == b'.') {
            Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
            None => (mantissa, &mantissa[mantissa.len()..]),
        };
        let has_digit = integer.iter().chain(fraction).any(u8::is_ascii_digit);
        if !has_digit || !valid_digit_group(integer) || !valid_digit_group(fraction) {
            return None;
        }
        let exponent = match exponent_text.split_first() {
            None => 0,
            Some((_, digits)) => parse_exponent(digits)?,
        };
        Some(NumericText {
            negative,
            integer,
            fraction,
            exponent,
        })
    }

    /// The value as an integer count of 10^-scale units, rounded half away
    /// from zero like PostgreSQL; `None` if it needs more than `precision`
    /// digits.
    fn scaled(&self, precision: u8, scale: i8) -> Option<i128> {
        let digit_count = |group: &[u8]| group.iter().filter(|c| c.is_ascii_digit()).count() as i64;
        let total = digit_count(self.integer) + digit_count(self.fraction);
        let keep = digit_count(self.integer) + self.exponent + i64::from(scale);
        let mut value: i128 = 0;
        let mut round_up = false;
        let digits = self
            .integer
            .iter()
            .chain(self.fraction)
            .filter(|c| c.is_ascii_digit());
        for (idx, &d) in (0i64..).zip(digits) {
            if idx >= keep {
                round_up = idx == keep && d >= b'5';
                break;
            }
            value = value.checked_mul(10)?.checked_add(i128::from(d - b'0'))?;
        }
        if keep > total && value != 0 {
            let shift = u32::try_from(keep - total).ok()?;
            value = value.checked_mul(10i128.checked_pow(shift)?)?;
        }
        if round_up {
            value += 1;
        }
        if value >= 10i128.checked_pow(u32::from(precision))? {
            return None;
        }
        Some(if self.negative { -value } else { value })
    }
}

/// Digits with single `_` separators strictly between digits.
fn valid_digit_group(group: &[u8]) -> bool {
    let mut prev_digit = false;
    for (idx, &c) in group.iter().enumerate() {
        match c {
            b'0'..=b'9' => prev_digit = true,
            b'_' if prev_digit && group.get(idx + 1).is_some_and(u8::is_ascii_digit) => {
                prev_digit = false
            }
            _ => return false,
        }
    }
    true
}

/// Exponents are clamped: anything this large overflows or rounds to zero.
fn parse_exponent(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits.iter().fold(0i64, |acc, &d| {
        (acc * 10 + i64::from(d - b'0')).min(1_000_000_000)
    });
    Some(if negative { -magnitude } else { magnitude })
}

pub(crate) fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, CopyError> {
    let t = trim_pg_space(text);
    let Some(number) = NumericText::parse(t.as_bytes()) else {
        let word = t.trim_start_matches(['+', '-']).to_ascii_lowercase();
        return Err(match word.as_str() {
            "nan" => unsupported("NaN cannot be stored in a numeric column"),
            "inf" | "infinity" => numeric_overflow().with_detail(format!(
                "A field with precision {precision}, scale {scale} cannot hold an infinite value."
            )),
            _ => syntax_error("numeric", text),
        });
    };
    number.scaled(precision, scale).ok_or_else(|| {
        let int_digits = i32::from(precision) - i32::from(scale);
        let bound = if int_digits > 0 { format!("10^{int_digits}") } else { "1".to_string() };
        numeric_overflow().with_detail(format!(
            "A field with precision {precision}, scale {scale} must round to an absolute value less than {bound}."
        ))
    })
}

fn numeric_overflow() -> CopyError {
    CopyError::new(NUMERIC_VALUE_OUT_OF_RANGE, "numeric field overflow")
}

// ---------------------------------------------------------------------------
// Dates and timestamps
// ---------------------------------------------------------------------------

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateTimeKind {
    Date,
    Timestamp,
    TimestampTz,
}

impl DateTimeKind {
    fn type_name(self) -> &'static str {
        match self {
            DateTimeKind::Date => "date",
            DateTimeKind::Timestamp => "timestamp",
            DateTimeKind::TimestampTz => "timestamp with time zone",
        }
    }
}

/// A parsed date/time: local calendar position plus the written UTC offset.
struct DateTimeValue {
    days: i64,
    time_us: i64,
    offset_secs: Option<i64>,
}

fn timestamp_out_of_range(text: &str) -> CopyError {
    CopyError::new(
        DATETIME_FIELD_OVERFLOW,
        format!("timestamp out of range: \"{text}\""),
    )
}

pub(crate) fn parse_date(text: &str) -> Result<i32, CopyError> {
    let value = parse_datetime(text, DateTimeKind::Date)?;
    i32::try_from(value.days).map_err(|_| {
        CopyError::new(
            DATETIME_FIELD_OVERFLOW,
            format!("date out of range: \"{text}\""),
        )
    })
}

/// Microseconds since the epoch. A `timestamp` ignores any written offset,
/// as PostgreSQL does; a `timestamptz` without one is taken as UTC.
pub(crate) fn parse_timestamp_us(text: &str, with_tz: bool) -> Result<i64, CopyError> {
    let kind = if with_tz {
        DateTimeKind::TimestampTz
    } else {
        DateTimeKind::Timestamp
    };
    let value = parse_datetime(text, kind)?;
    let offset_us = if with_tz {
        value.offset_secs.unwrap_or(0) * USECS_PER_SEC
    } else {
        0
    };
    value
        .days
        .checked_mul(USECS_PER_DAY)
        .and_then(|us| us.checked_add(value.time_us))
        .and_then(|us| us.checked_sub(offset_us))
        .ok_or_else(|| timestamp_out_of_range(text))
}

/// ISO 8601 dates and times (`YYYY-MM-DD[( |T)HH:MM[:SS[.f]]][zone][ BC]`,
/// `YYYYMMDD`) and the special words PostgreSQL accepts.
fn parse_datetime(text: &str, kind: DateTimeKind) -> Result<DateTimeValue, CopyError> {
    let t = trim_pg_space(text);
    if let Some(value) = special_datetime(t)? {
        return Ok(value);
    }
    let syntax = || datetime_syntax_error(kind.type_name(), text);
    let mut cursor = Cursor::new(t.as_bytes());
    let (year, month, day) = date_fields(&mut cursor).ok_or_else(syntax)?;
    let time = if cursor.at_time_start() {
        Some(time_fields(&mut cursor).ok_or_else(syntax)?)
    } else {
        None
    };
    let (offset_secs, bc) = datetime_suffixes(&mut cursor, kind, text)?;
    if year == 0 || !(1..=12).contains(&month) {
        return Err(datetime_field_overflow(text));
    }
    let year = if bc { 1 - year } else { year };
    if day < 1 || day > days_in_month(year, month) {
        return Err(datetime_field_overflow(text));
    }
    let time_us = match time {
        Some(fields) => fields
            .micros()
            .ok_or_else(|| datetime_field_overflow(text))?,
        None => 0,
    };
    Ok(DateTimeValue {
        days: days_from_civil(year, month, day),
        time_us,
        offset_secs,
    })
}

fn special_datetime(t: &str) -> Result<Option<DateTimeValue>, CopyError> {
    // Keeps the lowercasing allocation off the common, numeric path.
    if t.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(None);
    }
    let word = t.to_ascii_lowercase();
    let day_shift = match word.as_str() {
        "epoch" => {
            return Ok(Some(DateTimeValue {
                days: 0,
                time_us: 0,
                offset_secs: Some(0),
            }))
        }
        "infinity" | "+infinity" | "-infinity" => {
            return Err(unsupported(
                "infinite dates and timestamps are not supported",
            ))
        }
        "now" => None,
        "today" => Some(0),
        "tomorrow" => Some(1),
        "yesterday" => Some(-1),
        _ => return Ok(None),
    };
    // Sessions run in UTC, so "today" is the UTC date.
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let days = now_us.div_euclid(USECS_PER_DAY);
    Ok(Some(match day_shift {
        None => DateTimeValue {
            days,
            time_us: now_us.rem_euclid(USECS_PER_DAY),
            offset_secs: Some(0),
        },
        Some(shift) => DateTimeValue {
            days: days + shift,
            time_us: 0,
            offset_secs: Some(0),
        },
    }))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    /// Up to `max` digits (at least one) as a number, with how many were read.
    fn digits(&mut self, max: usize) -> Option<(i64, usize)> {
        let start = self.pos;
        let mut value: i64 = 0;
        while self.pos - start < max {
            match self.peek() {
                Some(d @ b'0'..=b'9') => value = value * 10 + i64::from(d - b'0'),
                _ => break,
            }
            self.pos += 1;
        }
        let count = self.pos - start;
        (count > 0).then_some((value, count))
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(is_pg_space) {
            self.pos += 1;
        }
    }

    /// A word, or a zone name such as `Europe/Paris`.
    fn word(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'/' || c == b'_')
        {
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }

    /// A time follows after `T` or spaces when a digit comes next.
    fn at_time_start(&mut self) -> bool {
        let mut probe = self.pos;
        match self.bytes.get(probe) {
            Some(b'T' | b't') => probe += 1,
            Some(&c) if is_pg_space(c) => {
                while self.bytes.get(probe).is_some_and(|&c| is_pg_space(c)) {
                    probe += 1;
                }
            }
            _ => return false,
        }
        let digit_next = self.bytes.get(probe).is_some_and(u8::is_ascii_digit);
        if digit_next {
            self.pos = probe;
        }
        digit_next
    }
}

fn date_fields(cursor: &mut Cursor) -> Option<(i64, u32, u32)> {
    let (first, count) = cursor.digits(9)?;
    if count == 8 && cursor.peek() != Some(b'-') {
        // YYYYMMDD
        return Some((
            first / 10_000,
            (first / 100 % 100) as u32,
            (first % 100) as u32,
        ));
    }
    if count < 4 || !cursor.eat(b'-') {
        return None;
    }
    let (month, _) = cursor.digits(2)?;
    if !cursor.eat(b'-') {
        return None;
    }
    let (day, _) = cursor.digits(2)?;
    Some((first, month as u32, day as u32))
}

struct TimeFields {
    hour: i64,
    minute: i64,
    second: i64,
    micros: i64,
}

impl TimeFields {
    /// Microseconds since midnight; `24:00:00` and leap second `:60` are
    /// allowed as PostgreSQL does.
    fn micros(&self) -> Option<i64> {
        let in_range = self.hour <= 24 && self.minute <= 59 && self.second <= 60;
        let past_midnight = self.hour == 24 && (self.minute, self.second, self.micros) != (0, 0, 0);
        if !in_range || past_midnight {
            return None;
        }
        Some(((self.hour * 60 + self.minute) * 60 + self.second) * USECS_PER_SEC + self.micros)
    }
}

fn time_fields(cursor: &mut Cursor) -> Option<TimeFields> {
    let (hour, _) = cursor.digits(2)?;
    if !cursor.eat(b':') {
        return None;
    }
    let (minute, _) = cursor.digits(2)?;
    let mut fields = TimeFields {
        hour,
        minute,
        second: 0,
        micros: 0,
    };
    if cursor.eat(b':') {
        fields.second = cursor.digits(2)?.0;
        if cursor.eat(b'.') {
            fields.micros = fraction_micros(cursor);
        }
    }
    Some(fields)
}

/// Fractional seconds to microseconds, rounding on the seventh digit.
fn fraction_micros(cursor: &mut Cursor) -> i64 {
    let mut micros = 0;
    let mut count = 0;
    let mut round_up = false;
    while let Some(d @ b'0'..=b'9') = cursor.peek() {
        if count < 6 {
            micros = micros * 10 + i64::from(d - b'0');
        } else if count == 6 {
            round_up = d >= b'5';
        }
        count += 1;
        cursor.pos += 1;
    }
    for _ in count..6 {
        micros *= 10;
    }
    micros + i64::from(round_up)
}

/// The optional zone (`Z`, `UTC`, `+02`, `+02:00`, `-0530`) and era (`BC`,
/// `AD`) after a date or time, in either order.
fn datetime_suffixes(
    cursor: &mut Cursor,
    kind: DateTimeKind,
    text: &str,
) -> Result<(Option<i64>, bool), CopyError> {
    let syntax = || datetime_syntax_error(kind.type_name(), text);
    let mut offset = None;
    let mut era: Option<bool> = None;
    loop {
        cursor.skip_spaces();
        match cursor.peek() {
            None => return Ok((offset, era.unwrap_or(false))),
            Some(sign @ (b'+' | b'-')) if offset.is_none() => {
                cursor.pos += 1;
                let secs = numeric_offset(cursor).ok_or_else(syntax)?;
                if secs > 15 * 3600 + 59 * 60 + 59 {
                    return Err(CopyError::new(
                        INVALID_TIME_ZONE_DISPLACEMENT,
                        format!("time zone displacement out of range: \"{text}\""),
                    ));
                }
                offset = Some(if sign == b'-' { -secs } else { secs });
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let word = cursor.word();
                let is = |name: &str| word.eq_ignore_ascii_case(name.as_bytes());
                if era.is_none() && (is("bc") || is("ad")) {
                    era = Some(is("bc"));
                } else if offset.is_none()
                    && ["z", "utc", "gmt", "ut", "zulu"].iter().any(|n| is(n))
                {
                    offset = Some(0);
                } else if offset.is_none() && word.contains(&b'/') {
                    // Only a zone-like name gets PostgreSQL's zone error.
                    let name = String::from_utf8_lossy(word).to_ascii_lowercase();
                    return Err(CopyError::new(
                        INVALID_PARAMETER_VALUE,
                        format!("time zone \"{name}\" not recognized"),
                    ));
                } else {
                    return Err(syntax());
                }
            }
            Some(_) => return Err(syntax()),
        }
    }
}

/// `HH`, `HH:MM`, `HH:MM:SS`, `HHMM` or `HHMMSS` after the sign, in seconds.
fn numeric_offset(cursor: &mut Cursor) -> Option<i64> {
    let (value, count) = cursor.digits(6)?;
    let (hours, mut minutes, mut seconds) = match count {
        1 | 2 => (value, 0, 0),
        4 => (value / 100, value % 100, 0),
        6 => (value / 10_000, value / 100 % 100, value % 100),
        _ => return None,
    };
    if count <= 2 && cursor.eat(b':') {
        minutes = cursor.digits(2)?.0;
        if cursor.eat(b':') {
            seconds = cursor.digits(2)?.0;
        }
    }
    (minutes < 60 && seconds < 60).then_some(hours * 3600 + minutes * 60 + seconds)
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year
/// numbering), after Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// ---------------------------------------------------------------------------
// Intervals
// ---------------------------------------------------------------------------

const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntervalError {
    Syntax,
    FieldRange,
    Overflow,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum IntervalUnitWord {
    /// A sub-day unit, in microseconds.
    Micros(i64),
    Day,
    Week,
    Month,
    /// Years times this many (decades, centuries, millennia).
    Years(i64),
}

/// A signed number with its integer and fractional parts kept apart, as
/// PostgreSQL does, so whole units stay exact.
#[derive(Debug, Clone, Copy)]
struct IntervalNumber {
    whole: i64,
    fraction: f64,
}

/// Wide enough that no realistic input overflows before the final check.
#[derive(Debug, Default)]
struct IntervalSum {
    months: i128,
    days: i128,
    micros: i128,
}

impl IntervalSum {
    fn add(&mut self, n: IntervalNumber, unit: IntervalUnitWord) {
        let whole = i128::from(n.whole);
        match unit {
            IntervalUnitWord::Micros(per) => {
                self.micros += whole * i128::from(per) + (n.fraction * per as f64).round() as i128;
            }
            IntervalUnitWord::Day => {
                self.days += whole;
                self.add_fraction_days(n.fraction);
            }
            IntervalUnitWord::Week => {
                self.days += whole * 7;
                self.add_fraction_days(n.fraction * 7.0);
            }
            IntervalUnitWord::Month => {
                self.months += whole;
                self.add_fraction_days(n.fraction * 30.0);
            }
            IntervalUnitWord::Years(per) => {
                let months_per = i128::from(per) * 12;
                self.months +=
                    whole * months_per + (n.fraction * months_per as f64).round() as i128;
            }
        }
    }

    fn add_fraction_days(&mut self, days: f64) {
        let whole = days.trunc();
        self.days += whole as i128;
        self.micros += ((days - whole) * USECS_PER_DAY as f64).round() as i128;
    }

    fn finish(self, negate: bool) -> Result<IntervalMonthDayNano, IntervalError> {
        let sign = if negate { -1 } else { 1 };
        let overflow = |_| IntervalError::Overflow;
        Ok(IntervalMonthDayNano {
            months: i32::try_from(self.months * sign).map_err(overflow)?,
            days: i32::try_from(self.days * sign).map_err(overflow)?,
            nanoseconds: i64::try_from(self.micros * sign * 1_000).map_err(overflow)?,
        })
    }
}

/// PostgreSQL's interval input: `1 day 02:03:04`, `5 minutes`, `1 year 2
/// mons`, `-3 hours`, `1-2`, `@ 3 days ago`, ISO 8601 `P1DT2H`, `00:05:00`.
pub(crate) fn parse_interval(text: &str) -> Result<IntervalMonthDayNano, CopyError> {
    let t = trim_pg_space(text);
    let result = match t.strip_prefix(['P', 'p']) {
        Some(iso) => iso_interval(iso).and_then(|sum| sum.finish(false)),
        None => verbose_interval(t),
    };
    result.map_err(|e| match e {
        IntervalError::Syntax => datetime_syntax_error("interval", text),
        IntervalError::FieldRange => datetime_field_overflow(text),
        IntervalError::Overflow => CopyError::new(
            INTERVAL_FIELD_OVERFLOW,
            format!("interval field value out of range: \"{text}\""),
        ),
    })
}

fn verbose_interval(t: &str) -> Result<IntervalMonthDayNano, IntervalError> {
    let mut sum = IntervalSum::default();
    let mut pending: Option<IntervalNumber> = None;
    let mut ago = false;
    let mut any = false;
    for token in t.split(|c: char| c.is_ascii() && is_pg_space(c as u8)) {
        if token.is_empty() || token == "@" {
            continue;
        }
        if ago {
            return Err(IntervalError::Syntax);
        }
        any = true;
        if token.eq_ignore_ascii_case("ago") {
            ago = true;
        } else if let Some(unit) = interval_unit(token) {
            sum.add(pending.take().ok_or(IntervalError::Syntax)?, unit);
        } else if token.contains(':') {
            // A bare number before a time counts days, as in `1 02:00:00`.
            if let Some(days) = pending.take() {
                sum.add(days, IntervalUnitWord::Day);
            }
            sum.micros += interval_time(token)?;
        } else if let Some(months) = year_month(token)? {
            sum.months += months;
        } else {
            let split = token
                .find(|c: char| c.is_ascii_alphabetic())
                .unwrap_or(token.len());
            let number = interval_number(&token[..split])?;
            if split < token.len() {
                sum.add(
                    number,
                    interval_unit(&token[split..]).ok_or(IntervalError::Syntax)?,
                );
            } else if pending.replace(number).is_some() {
                return Err(IntervalError::Syntax);
            }
        }
    }
    if !any {
        return Err(IntervalError::Syntax);
    }
    if let Some(seconds) = pending {
        sum.add(seconds, IntervalUnitWord::Micros(USECS_PER_SEC));
    }
    sum.finish(ago)
}

fn interval_unit(word: &str) -> Option<IntervalUnitWord> {
    use IntervalUnitWord::*;
    Some(match word.to_ascii_lowercase().as_str() {
        "us" | "usec" | "usecs" | "useconds" | "microsecond" | "microseconds" => Micros(1),
        "ms" | "msec" | "msecs" | "mseconds" | "millisecond" | "milliseconds" => Micros(1_000),
        "s" | "sec" | "secs" | "second" | "seconds" => Micros(USECS_PER_SEC),
        "m" | "min" | "mins" | "minute" | "minutes" => Micros(USECS_PER_MINUTE),
        "h" | "hr" | "hrs" | "hour" | "hours" => Micros(USECS_PER_HOUR),
        "d" | "day" | "days" => Day,
        "w" | "week" | "weeks" => Week,
        "mon" | "mons" | "month" | "months" => Month,
        "y" | "yr" | "yrs" | "year" | "years" => Years(1),
        "dec" | "decs" | "decade" | "decades" => Years(10),
        "c" | "cent" | "century" | "centuries" => Years(100),
        "mil" | "mils" | "millennium" | "millennia" | "millenniums" => Years(1_000),
        _ => return None,
    })
}

fn split_sign(token: &str) -> (bool, &str) {
    match token.as_bytes().first() {
        Some(b'-') => (true, &token[1..]),
        Some(b'+') => (false, &token[1..]),
        _ => (false, token),
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

/// `[+-]digits[.digits]` or `[+-].digits`.
fn interval_number(token: &str) -> Result<IntervalNumber, IntervalError> {
    let (negative, body) = split_sign(token);
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    let well_formed = (all_digits(whole) || whole.is_empty())
        && (all_digits(fraction) || fraction.is_empty())
        && !(whole.is_empty() && fraction.is_empty());
    if !well_formed {
        return Err(IntervalError::Syntax);
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| IntervalError::Overflow)?
    };
    let fraction = fraction_value(fraction);
    Ok(if negative {
        IntervalNumber {
            whole: -whole,
            fraction: -fraction,
        }
    } else {
        IntervalNumber { whole, fraction }
    })
}

/// `0.digits` as a float; digits past the 18th cannot matter.
fn fraction_value(digits: &str) -> f64 {
    let used = &digits[..digits.len().min(18)];
    let numerator = used
        .bytes()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    numerator as f64 / 10f64.powi(used.len() as i32)
}

/// `[+-]H:M[:S[.f]]`, or `M:S.f` when only two parts and a fraction.
fn interval_time(token: &str) -> Result<i128, IntervalError> {
    let (negative, body) = split_sign(token);
    let parts: Vec<&str> = body.split(':').collect();
    let (hours, minutes, seconds) = match parts.as_slice() {
        [m, s] if s.contains('.') => ("0", *m, *s),
        [h, m] => (*h, *m, "0"),
        [h, m, s] => (*h, *m, *s),
        _ => return Err(IntervalError::Syntax),
    };
    if !all_digits(hours) || !all_digits(minutes) {
        return Err(IntervalError::Syntax);
    }
    let hours: i128 = hours.parse().map_err(|_| IntervalError::Overflow)?;
    let minutes: i128 = minutes.parse().map_err(|_| IntervalError::Overflow)?;
    let seconds = interval_number(seconds)?;
    if seconds.whole < 0 || seconds.fraction < 0.0 {
        return Err(IntervalError::Syntax);
    }
    if minutes > 59 || seconds.whole > 59 {
        return Err(IntervalError::FieldRange);
    }
    let second_us = i128::from(seconds.whole) * i128::from(USECS_PER_SEC)
        + (seconds.fraction * USECS_PER_SEC as f64).round() as i128;
    let total = (hours * 60 + minutes) * i128::from(USECS_PER_MINUTE) + second_us;
    Ok(if negative { -total } else { total })
}

/// SQL-standard `[+-]Y-M` in months, or `None` if the token is not one.
fn year_month(token: &str) -> Result<Option<i128>, IntervalError> {
    let (negative, body) = split_sign(token);
    let Some((years, months)) = body.split_once('-') else {
        return Ok(None);
    };
    if !all_digits(years) || !all_digits(months) {
        return Ok(None);
    }
    let years: i128 = years.parse().map_err(|_| IntervalError::Overflow)?;
    let months: i128 = months.parse().map_err(|_| IntervalError::Overflow)?;
    if months > 11 {
        return Err(IntervalError::FieldRange);
    }
    let total = years * 12 + months;
    Ok(Some(if negative { -total } else { total }))
}

/// ISO 8601 designators after the `P`: `nYnMnWnD[TnHnMnS]`.
fn iso_interval(body: &str) -> Result<IntervalSum, IntervalError> {
    let mut sum = IntervalSum::default();
    let mut rest = body;
    let mut in_time = false;
    if rest.is_empty() {
        return Err(IntervalError::Syntax);
    }
    while !rest.is_empty() {
        if !in_time && rest.starts_with(['T', 't']) {
            in_time = true;
            rest = &rest[1..];
            continue;
        }
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
            .ok_or(IntervalError::Syntax)?;
        let number = interval_number(&rest[..number_len])?;
        let designator = rest.as_bytes()[number_len].to_ascii_uppercase();
        let unit = match (in_time, designator) {
            (false, b'Y') => IntervalUnitWord::Years(1),
            (false, b'M') => IntervalUnitWord::Month,
            (false, b'W') => IntervalUnitWord::Week,
            (false, b'D') => IntervalUnitWord::Day,
            (true, b'H') => IntervalUnitWord::Micros(USECS_PER_HOUR),
            (true, b'M') => IntervalUnitWord::Micros(USECS_PER_MINUTE),
            (true, b'S') => IntervalUnitWord::Micros(USECS_PER_SEC),
            _ => return Err(IntervalError::Syntax),
        };
        sum.add(number, unit);
        rest = &rest[number_len + 1..];
    }
    Ok(sum)
}

// ---------------------------------------------------------------------------
// JSON validation
// ---------------------------------------------------------------------------

/// Checks `text` is one JSON value (RFC 8259), without recursion so deep
/// nesting cannot overflow the stack.
fn validate_json(text: &str) -> Result<(), CopyError> {
    json_document(text.as_bytes()).ok_or_else(|| syntax_error("json", text))
}

fn json_document(b: &[u8]) -> Option<()> {
    let mut open: Vec<u8> = Vec::new();
    let mut i = 0;
    'value: loop {
        i = json_space(b, i);
        match *b.get(i)? {
            b'{' => {
                i = json_space(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    open.push(b'{');
                    i = json_key(b, i)?;
                    continue 'value;
                }
            }
            b'[' => {
                i = json_space(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    open.push(b'[');
                    continue 'value;
                }
            }
            b'"' => i = json_string(b, i)?,
            b't' => i = json_literal(b, i, b"true")?,
            b'f' => i = json_literal(b, i, b"false")?,
            b'n' => i = json_literal(b, i, b"null")?,
            _ => i = json_number(b, i)?,
        }
        // After a complete value: close containers or move to the next item.
        loop {
            i = json_space(b, i);
            match (open.last(), b.get(i)) {
                (None, None) => return Some(()),
                (Some(b'['), Some(b',')) => {
                    i += 1;
                    continue 'value;
                }
                (Some(b'{'), Some(b',')) => {
                    i = json_key(b, json_space(b, i + 1))?;
                    continue 'value;
                }
                (Some(b'['), Some(b']')) | (Some(b'{'), Some(b'}')) => {
                    open.pop();
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

fn json_space(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// An object key and its colon; returns the offset after the colon.
fn json_key(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = json_space(b, json_string(b, i)?);
    (b.get(i) == Some(&b':')).then_some(i + 1)
}

fn json_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                i += 1;
                match *b.get(i)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 1,
                    b'u' if b.get(i + 1..i + 5)?.iter().all(u8::is_ascii_hexdigit) => i += 5,
                    _ => return None,
                }
            }
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
}

fn json_literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b[i..].starts_with(word).then_some(i + word.len())
}

fn json_number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use std::collections::HashMap;

    fn utc() -> Option<Arc<str>> {
        Some(Arc::from("+00:00"))
    }

    fn schema(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    fn text_field(name: &str, pg_type: &str) -> Field {
        Field::new(name, DataType::Utf8, true).with_metadata(HashMap::from([(
            PG_TYPE_METADATA_KEY.to_string(),
            pg_type.to_string(),
        )]))
    }

    fn rows(batches: &[RecordBatch]) -> Vec<Vec<ScalarValue>> {
        let mut out = Vec::new();
        for batch in batches {
            for row in 0..batch.num_rows() {
                let values = batch
                    .columns()
                    .iter()
                    .map(|col| ScalarValue::try_from_array(col, row).expect("scalar"))
                    .collect();
                out.push(values);
            }
        }
        out
    }

    fn decode_chunks(
        schema: &SchemaRef,
        options: &CopyOptions,
        chunks: &[&[u8]],
    ) -> Result<Vec<Vec<ScalarValue>>, CopyError> {
        let mut decoder = CopyDecoder::new(Arc::clone(schema), options.clone(), 3);
        let mut batches = Vec::new();
        for chunk in chunks {
            batches.extend(decoder.push(chunk)?);
        }
        batches.extend(decoder.finish()?);
        Ok(rows(&batches))
    }

    /// The framing as it was, byte by byte: what the jumping one must match.
    fn reference_record_end(
        data: &[u8],
        scan: &mut RecordScan,
        csv: Option<(u8, Option<u8>)>,
    ) -> Option<usize> {
        let mut i = scan.offset;
        while i < data.len() {
            let c = data[i];
            let Some((quote, escape)) = csv else {
                match c {
                    b'\n' => return Some(i),
                    b'\\' => i += 2,
                    _ => i += 1,
                }
                continue;
            };
            if c == b'\n' && !scan.in_quote {
                return Some(i);
            }
            if scan.in_quote && Some(c) == escape {
                scan.last_was_escape = !scan.last_was_escape;
            }
            if c == quote && !scan.last_was_escape {
                scan.in_quote = !scan.in_quote;
            }
            if Some(c) != escape {
                scan.last_was_escape = false;
            }
            i += 1;
        }
        scan.offset = i;
        None
    }

    /// Record ends found by jumping between the bytes that matter equal
    /// those of a byte-by-byte scan, for text and CSV (with and without a
    /// distinct escape), however the data is split.
    #[test]
    fn framing_matches_a_byte_by_byte_scan() {
        let alphabet = b"ab,\"\\\n";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let len = (next() % 40) as usize;
            let data: Vec<u8> = (0..len).map(|_| alphabet[(next() % 6) as usize]).collect();
            let split = (next() % (len as u64 + 1)) as usize;
            for csv in [None, Some((b'"', None)), Some((b'"', Some(b'\\')))] {
                let frame = |reference: bool| {
                    let mut ends = Vec::new();
                    let (mut start, mut scan) = (0, RecordScan::default());
                    // Fed as two pieces: the scan resumes where it stopped.
                    for upto in [split, len] {
                        loop {
                            let piece = &data[start..upto];
                            let found = match (reference, csv) {
                                (true, _) => reference_record_end(piece, &mut scan, csv),
                                (false, None) => find_text_record_end(piece, &mut scan),
                                (false, Some((q, e))) => {
                                    find_csv_record_end(piece, &mut scan, q, e)
                                }
                            };
                            let Some(end) = found else { break };
                            ends.push(start + end);
                            start += end + 1;
                            scan = RecordScan::default();
                        }
                    }
                    (ends, scan.in_quote)
                };
                assert_eq!(
                    frame(false),
                    frame(true),
                    "{:?} {csv:?} split at {split}",
                    String::from_utf8_lossy(&data)
                );
            }
        }
    }

    /// Decodes `input` pushed in pieces of `piece` bytes, on `threads`
    /// threads, in batches of `batch_rows`: the rows in order, or the error.
    fn decode_threads(
        schema: &SchemaRef,
        options: &CopyOptions,
        input: &[u8],
        piece: usize,
        threads: usize,
    ) -> Result<Vec<Vec<ScalarValue>>, CopyError> {
        let mut decoder =
            CopyDecoder::with_threads(Arc::clone(schema), options.clone(), 5, threads);
        let mut batches = Vec::new();
        for chunk in input.chunks(piece) {
            batches.extend(decoder.push(chunk)?);
        }
        batches.extend(decoder.finish()?);
        assert_eq!(
            decoder.rows_decoded(),
            batches.iter().map(|b| b.num_rows() as u64).sum::<u64>()
        );
        Ok(rows(&batches))
    }

    /// Every way of cutting the stream and every thread count gives what one
    /// thread gives: rows in order, the header skipped, the end marker
    /// honoured, and the first error by line (with its message).
    #[test]
    fn parallel_decoding_matches_one_thread() {
        let schema = schema(vec![
            Field::new("i", DataType::Int64, true),
            text_field("t", "text"),
        ]);
        let mut csv = String::from("i,t\n");
        let mut text = String::new();
        for i in 0..203 {
            match i % 4 {
                0 => csv.push_str(&format!("{i},\"a,\"\"q\"\"\nline\"\n")),
                1 => csv.push_str(&format!("{i},\r\n")),
                _ => csv.push_str(&format!("{i},plain {i}\n")),
            }
            text.push_str(&format!("{i}\ttab\\tescaped {i}\n"));
        }
        let with_header = CopyOptions {
            header: true,
            ..CopyOptions::csv()
        };
        let marker = format!("{text}\\.\nnot read\n");
        let csv_marker = format!("{csv}\\.\r\n1,after the marker\n");
        let last_line = format!("{text}999\tno newline");
        let bad_late = format!("{text}x\ty\n");
        let bad_early = text.replacen("7\ttab", "seven\ttab", 1);
        let cases: [(&CopyOptions, &str); 7] = [
            (&with_header, &csv),
            (&with_header, &csv_marker),
            (&CopyOptions::text(), &text),
            (&CopyOptions::text(), &marker),
            (&CopyOptions::text(), &last_line),
            (&CopyOptions::text(), &bad_late),
            (&CopyOptions::text(), &bad_early),
        ];
        for (options, input) in cases {
            let one = decode_threads(&schema, options, input.as_bytes(), 1 << 20, 1);
            for threads in [2, 3] {
                for piece in [1, 7, 64, 1 << 20] {
                    let many = decode_threads(&schema, options, input.as_bytes(), piece, threads);
                    match (&one, &many) {
                        (Ok(a), Ok(b)) => assert_eq!(a, b, "{threads} threads, {piece}"),
                        (Err(a), Err(b)) => {
                            assert_eq!((a.line, &a.message), (b.line, &b.message));
                        }
                        _ => panic!("{one:?} against {many:?} ({threads}, {piece})"),
                    }
                }
            }
        }
        let rows = decode_threads(&schema, &with_header, csv.as_bytes(), 13, 3).expect("csv");
        assert_eq!(rows.len(), 203);
        assert_eq!(rows[0][1], utf8("a,\"q\"\nline"));
        assert_eq!(rows[1][1], ScalarValue::Utf8(None));
        assert_eq!(
            decode_threads(&schema, &CopyOptions::text(), marker.as_bytes(), 9, 3)
                .expect("marker")
                .len(),
            203
        );
        let error = decode_threads(&schema, &CopyOptions::text(), bad_early.as_bytes(), 9, 3);
        assert_eq!(error.expect_err("bad").line, Some(8));
        let rows = decode_threads(&schema, &with_header, csv_marker.as_bytes(), 64, 3);
        assert_eq!(rows.expect("csv marker").len(), 203);
    }

    fn decode(
        schema: &SchemaRef,
        options: &CopyOptions,
        input: &str,
    ) -> Result<Vec<Vec<ScalarValue>>, CopyError> {
        decode_chunks(schema, options, &[input.as_bytes()])
    }

    fn utf8(s: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(s.to_string()))
    }

    fn one_text_column(input: &str, options: &CopyOptions) -> Vec<ScalarValue> {
        let schema = schema(vec![Field::new("t", DataType::Utf8, true)]);
        decode(&schema, options, input)
            .expect("decode")
            .into_iter()
            .map(|mut row| row.remove(0))
            .collect()
    }

    fn value(text: &str, data_type: DataType) -> Result<ScalarValue, CopyError> {
        let field = Field::new("v", data_type.clone(), true);
        parse_text_value(text, &data_type, &field)
    }

    fn sqlstate_of(text: &str, data_type: DataType) -> &'static str {
        value(text, data_type).expect_err("should fail").sqlstate
    }

    fn interval(months: i32, days: i32, nanoseconds: i64) -> ScalarValue {
        ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano {
            months,
            days,
            nanoseconds,
        }))
    }

    fn ts(text: &str) -> i64 {
        parse_timestamp_us(text, false).expect("timestamp")
    }

    fn tstz(text: &str) -> i64 {
        parse_timestamp_us(text, true).expect("timestamptz")
    }

    fn options_of(sql: &str) -> Result<CopyOptions, CopyError> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parse")
            .remove(0);
        let Statement::Copy {
            options,
            legacy_options,
            ..
        } = statement
        else {
            panic!("not a COPY: {sql}");
        };
        CopyOptions::from_statement(&options, &legacy_options)
    }

    fn five_column_schema() -> SchemaRef {
        schema(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("b", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Float64, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ])
    }

    #[test]
    fn text_format_all_types() {
        let schema = schema(vec![
            Field::new("b", DataType::Boolean, true),
            Field::new("s", DataType::Int16, true),
            Field::new("i", DataType::Int32, true),
            Field::new("l", DataType::Int64, true),
            Field::new("r", DataType::Float32, true),
            Field::new("d", DataType::Float64, true),
            Field::new("n", DataType::Decimal128(10, 2), true),
            Field::new("t", DataType::Utf8, true),
            Field::new("dt", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Microsecond, utc()),
                true,
            ),
            Field::new("iv", DataType::Interval(IntervalUnit::MonthDayNano), true),
        ]);
        let input = "t\t-5\t42\t9000000000\t1.5\t-2.25\t3.14159\thé\t2024-02-29\t\
                     2024-01-02 03:04:05.5\t2024-01-02 03:04:05+02\t1 day 02:00:00\n\
                     \\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n";
        let got = decode(&schema, &CopyOptions::text(), input).expect("decode");
        assert_eq!(got.len(), 2);
        let day = 86_400_000_000i64;
        let jan2 = 19_724 * day;
        assert_eq!(
            got[0],
            vec![
                ScalarValue::Boolean(Some(true)),
                ScalarValue::Int16(Some(-5)),
                ScalarValue::Int32(Some(42)),
                ScalarValue::Int64(Some(9_000_000_000)),
                ScalarValue::Float32(Some(1.5)),
                ScalarValue::Float64(Some(-2.25)),
                ScalarValue::Decimal128(Some(314), 10, 2),
                utf8("hé"),
                ScalarValue::Date32(Some(19_782)),
                ScalarValue::TimestampMicrosecond(Some(jan2 + 11_045_500_000), None),
                ScalarValue::TimestampMicrosecond(Some(jan2 + 3_845_000_000), utc()),
                interval(0, 1, 7_200_000_000_000),
            ]
        );
        assert!(got[1].iter().all(ScalarValue::is_null));
    }

    #[test]
    fn text_escapes() {
        let input = "a\\tb\nc\\nd\\re\n\\\\\n\\b\\f\\v\n\\101\\x41\\x4g\\7\n\
                     a\\Nb\n\\N\nx\\\ty\nend\\\n\\\nz\ntrail\\";
        let got = one_text_column(input, &CopyOptions::text());
        assert_eq!(
            got,
            vec![
                utf8("a\tb"),
                utf8("c\nd\re"),
                utf8("\\"),
                utf8("\u{8}\u{c}\u{b}"),
                utf8("AA\u{4}g\u{7}"),
                utf8("aNb"),
                ScalarValue::Utf8(None),
                utf8("x\ty"),
                utf8("end\n\nz"),
                utf8("trail"),
            ]
        );
    }

    #[test]
    fn text_null_and_empty() {
        let schema = schema(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int32, true),
        ]);
        let got = decode(&schema, &CopyOptions::text(), "\t\\N\n").expect("decode");
        assert_eq!(got, vec![vec![utf8(""), ScalarValue::Int32(None)]]);
        let options = CopyOptions {
            null: "NULL".to_string(),
            ..CopyOptions::text()
        };
        let got = decode(&schema, &options, "NULL\tNULL\n\\N\t1\n").expect("decode");
        assert_eq!(
            got[0],
            vec![ScalarValue::Utf8(None), ScalarValue::Int32(None)]
        );
        assert_eq!(got[1], vec![utf8("N"), ScalarValue::Int32(Some(1))]);
    }

    #[test]
    fn csv_quoting() {
        let schema = schema(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let input = "plain,\"with, comma\"\n\"say \"\"hi\"\"\",\"multi\nline\"\n\
                     ,\"\"\nab\"c,d\"e,x\n";
        let got = decode(&schema, &CopyOptions::csv(), input).expect("decode");
        assert_eq!(
            got,
            vec![
                vec![utf8("plain"), utf8("with, comma")],
                vec![utf8("say \"hi\""), utf8("multi\nline")],
                vec![ScalarValue::Utf8(None), utf8("")],
                vec![utf8("abc,de"), utf8("x")],
            ]
        );
    }

    #[test]
    fn csv_distinct_escape() {
        let schema = schema(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let options = CopyOptions {
            escape: b'\\',
            ..CopyOptions::csv()
        };
        let input = "\"a\\\"b\",\"c\\\\d\\e\"\nun\\quoted,\"x\ny\"\n";
        let got = decode(&schema, &options, input).expect("decode");
        assert_eq!(
            got,
            vec![
                vec![utf8("a\"b"), utf8("c\\d\\e")],
                vec![utf8("un\\quoted"), utf8("x\ny")],
            ]
        );
    }

    #[test]
    fn csv_typed_values_and_custom_null() {
        let schema = schema(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let options = CopyOptions {
            null: "NA".to_string(),
            delimiter: b';',
            ..CopyOptions::csv()
        };
        let got = decode(&schema, &options, "\" 7 \";NA\nNA;\"NA\"\n").expect("decode");
        assert_eq!(
            got[0],
            vec![ScalarValue::Int32(Some(7)), ScalarValue::Utf8(None)]
        );
        assert_eq!(got[1], vec![ScalarValue::Int32(None), utf8("NA")]);
    }

    #[test]
    fn csv_force_null_and_not_null() {
        let schema = schema(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let options = CopyOptions {
            force_not_null: vec!["a".to_string()],
            force_null: vec!["b".to_string()],
            ..CopyOptions::csv()
        };
        let got = decode(&schema, &options, ",\"\"\n").expect("decode");
        assert_eq!(got, vec![vec![utf8(""), ScalarValue::Utf8(None)]]);
        let bad = CopyOptions {
            force_null: vec!["zz".to_string()],
            ..CopyOptions::csv()
        };
        let err = decode(&schema, &bad, "").expect_err("unknown column");
        assert_eq!(err.sqlstate, INVALID_COLUMN_REFERENCE);
    }

    #[test]
    fn every_split_position_gives_the_same_rows() {
        let schema = schema(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]);
        let text = "1\thé\\tllo\\\\\t2024-01-02 03:04:05\r\n2\t\\N\t\\N\n3\tx\\\ny€\t2024-01-03\n\\.\nignored";
        let csv = "i,s,t\n1,\"h\"\"é\nllo\",2024-01-02 03:04:05\r\n2,,\n3,\"€,\"\"\",2024-01-03";
        let csv_options = CopyOptions {
            header: true,
            ..CopyOptions::csv()
        };
        for (input, options) in [(text, CopyOptions::text()), (csv, csv_options)] {
            let bytes = input.as_bytes();
            let whole = decode_chunks(&schema, &options, &[bytes]).expect("whole");
            assert_eq!(whole.len(), 3);
            for cut in 0..=bytes.len() {
                let (left, right) = bytes.split_at(cut);
                let split = decode_chunks(&schema, &options, &[left, right]).expect("split");
                assert_eq!(split, whole, "cut at {cut} of {input:?}");
            }
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(
                decode_chunks(&schema, &options, &singles).expect("bytes"),
                whole
            );
        }
    }

    #[test]
    fn header_is_skipped_and_counted_in_line_numbers() {
        let schema = schema(vec![Field::new("i", DataType::Int32, true)]);
        let csv = CopyOptions {
            header: true,
            ..CopyOptions::csv()
        };
        let got = decode(&schema, &csv, "i\n1\n2\n").expect("decode");
        assert_eq!(got.len(), 2);
        let err = decode(&schema, &csv, "\"multi\nline header\"\n1\nx\n").expect_err("bad");
        assert_eq!(err.line, Some(3));
        let text = CopyOptions {
            header: true,
            ..CopyOptions::text()
        };
        assert_eq!(decode(&schema, &text, "i\n5\n").expect("decode").len(), 1);
    }

    #[test]
    fn column_count_errors() {
        let schema = schema(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Int32, true),
        ]);
        let err = decode(&schema, &CopyOptions::text(), "1\t2\n3\n").expect_err("missing");
        assert_eq!(err.sqlstate, BAD_COPY_FILE_FORMAT);
        assert_eq!(err.message, "missing data for column \"b\"");
        assert_eq!(err.line, Some(2));
        let err = decode(&schema, &CopyOptions::text(), "1\t2\t3\n").expect_err("extra");
        assert_eq!(err.message, "extra data after last expected column");
        assert_eq!(err.line, Some(1));
        let err = decode(&schema, &CopyOptions::csv(), "1,2,\n").expect_err("extra");
        assert_eq!(err.sqlstate, BAD_COPY_FILE_FORMAT);
        let err = decode(&schema, &CopyOptions::csv(), "\n").expect_err("missing");
        assert_eq!(err.message, "missing data for column \"b\"");
    }

    #[test]
    fn value_errors_carry_line_and_column() {
        let schema = five_column_schema();
        let input = "1\t2\ta\t1.5\t2024-01-01\n2\t3\tb\t2.5\t2024-01-01\n3\tx4\tc\t1\t2024-01-01\n";
        let err = decode(&schema, &CopyOptions::text(), input).expect_err("bad bigint");
        assert_eq!(err.sqlstate, INVALID_TEXT_REPRESENTATION);
        assert_eq!(err.line, Some(3));
        assert_eq!(err.column.as_deref(), Some("b"));
        assert_eq!(
            err.to_string(),
            "invalid input syntax for type bigint: \"x4\", line 3, column b"
        );
        assert_eq!(
            err.context("t").as_deref(),
            Some("COPY t, line 3, column b")
        );
    }

    #[test]
    fn decoder_refuses_use_after_error() {
        let schema = schema(vec![Field::new("i", DataType::Int32, true)]);
        let mut decoder = CopyDecoder::new(schema, CopyOptions::text(), 10);
        assert!(decoder.push(b"x\n").is_err());
        assert_eq!(
            decoder.push(b"1\n").expect_err("poisoned").sqlstate,
            INTERNAL_ERROR
        );
    }

    #[test]
    fn batches_are_cut_at_batch_rows() {
        let schema = schema(vec![Field::new("i", DataType::Int64, true)]);
        let mut decoder = CopyDecoder::new(schema, CopyOptions::text(), 2);
        let batches = decoder.push(b"1\n2\n3\n4\n5").expect("push");
        assert_eq!(
            batches
                .iter()
                .map(RecordBatch::num_rows)
                .collect::<Vec<_>>(),
            vec![2, 2]
        );
        assert_eq!(decoder.rows_decoded(), 4);
        let last = decoder.finish().expect("finish");
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].num_rows(), 1);
        assert_eq!(decoder.rows_decoded(), 5);
        assert!(decoder.finish().expect("again").is_empty());
    }

    #[test]
    fn end_marker_stops_decoding() {
        let schema = schema(vec![Field::new("i", DataType::Int32, true)]);
        let mut decoder = CopyDecoder::new(Arc::clone(&schema), CopyOptions::text(), 10);
        assert!(decoder.push(b"1\n\\.\r\n").expect("push").is_empty());
        assert!(decoder.push(b"garbage\n").expect("after end").is_empty());
        let last = decoder.finish().expect("finish");
        assert_eq!(last.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        let got = decode(&schema, &CopyOptions::csv(), "1\n\\.").expect("csv marker");
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn line_endings_and_carriage_returns() {
        let got = one_text_column("a\r\nb\r\n", &CopyOptions::text());
        assert_eq!(got, vec![utf8("a"), utf8("b")]);
        let got = one_text_column("a\\\r\n", &CopyOptions::text());
        assert_eq!(got, vec![utf8("a\r")]);
        let schema = schema(vec![Field::new("t", DataType::Utf8, true)]);
        let err = decode(&schema, &CopyOptions::text(), "a\rb\n").expect_err("cr");
        assert_eq!(err.message, "literal carriage return found in data");
        let err = decode(&schema, &CopyOptions::csv(), "a\rb\n").expect_err("cr");
        assert_eq!(err.message, "unquoted carriage return found in data");
        let got = one_text_column("\"a\rb\"\r\n", &CopyOptions::csv());
        assert_eq!(got, vec![utf8("a\rb")]);
        let err = decode(&schema, &CopyOptions::csv(), "\"open\n").expect_err("open");
        assert_eq!(err.message, "unterminated CSV quoted field");
    }

    #[test]
    fn encoding_errors() {
        let schema = schema(vec![Field::new("t", DataType::Utf8, true)]);
        let mut decoder = CopyDecoder::new(Arc::clone(&schema), CopyOptions::text(), 10);
        let err = decoder.push(b"ok\nbad\xff\n").expect_err("invalid utf8");
        assert_eq!(err.sqlstate, CHARACTER_NOT_IN_REPERTOIRE);
        assert_eq!(
            err.message,
            "invalid byte sequence for encoding \"UTF8\": 0xff"
        );
        assert_eq!(err.line, Some(2));
        let err = decode(&schema, &CopyOptions::text(), "\\xff\n").expect_err("escaped");
        assert_eq!(err.sqlstate, CHARACTER_NOT_IN_REPERTOIRE);
        let err = decode(&schema, &CopyOptions::text(), "a\\0b\n").expect_err("nul");
        assert_eq!(
            err.message,
            "invalid byte sequence for encoding \"UTF8\": 0x00"
        );
    }

    #[test]
    fn not_null_columns_refuse_null() {
        let schema = schema(vec![Field::new("id", DataType::Int32, false)]);
        let err = decode(&schema, &CopyOptions::text(), "1\n\\N\n").expect_err("null");
        assert_eq!(err.sqlstate, NOT_NULL_VIOLATION);
        assert_eq!(err.column.as_deref(), Some("id"));
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn zero_columns() {
        let schema = schema(vec![]);
        let got = decode(&schema, &CopyOptions::text(), "\n\n").expect("decode");
        assert_eq!(got.len(), 2);
        let err = decode(&schema, &CopyOptions::text(), "x\n").expect_err("extra");
        assert_eq!(err.message, "extra data after last expected column");
    }

    #[test]
    fn other_types_go_through_cast() {
        let schema = schema(vec![Field::new("u", DataType::UInt8, true)]);
        let got = decode(&schema, &CopyOptions::text(), "7\n\\N\n").expect("decode");
        assert_eq!(
            got,
            vec![
                vec![ScalarValue::UInt8(Some(7))],
                vec![ScalarValue::UInt8(None)]
            ]
        );
        assert_eq!(
            sqlstate_of("300", DataType::UInt8),
            INVALID_TEXT_REPRESENTATION
        );
    }

    #[test]
    fn booleans() {
        for yes in ["t", "TRUE", "tr", "y", "Yes", "on", "ON", "1", "  true  "] {
            assert_eq!(
                value(yes, DataType::Boolean).expect(yes),
                ScalarValue::Boolean(Some(true))
            );
        }
        for no in ["f", "False", "n", "NO", "off", "of", "0", "\tfalse\n"] {
            assert_eq!(
                value(no, DataType::Boolean).expect(no),
                ScalarValue::Boolean(Some(false))
            );
        }
        for bad in ["o", "", "2", "truee", "yess", "nope", "10"] {
            let err = value(bad, DataType::Boolean).expect_err(bad);
            assert_eq!(
                err.message,
                format!("invalid input syntax for type boolean: \"{bad}\"")
            );
        }
    }

    #[test]
    fn integers() {
        assert_eq!(
            value(" 42 ", DataType::Int32).expect("ws"),
            ScalarValue::Int32(Some(42))
        );
        assert_eq!(
            value("+7", DataType::Int16).expect("plus"),
            ScalarValue::Int16(Some(7))
        );
        assert_eq!(
            value("1_000", DataType::Int32).expect("_"),
            ScalarValue::Int32(Some(1000))
        );
        assert_eq!(
            value("0x1F", DataType::Int32).expect("hex"),
            ScalarValue::Int32(Some(31))
        );
        assert_eq!(
            value("-0b101", DataType::Int64).expect("bin"),
            ScalarValue::Int64(Some(-5))
        );
        assert_eq!(
            value("0o17", DataType::Int64).expect("oct"),
            ScalarValue::Int64(Some(15))
        );
        assert_eq!(
            value("-9223372036854775808", DataType::Int64).expect("min"),
            ScalarValue::Int64(Some(i64::MIN))
        );
        assert_eq!(
            value("-32768", DataType::Int16).expect("min"),
            ScalarValue::Int16(Some(i16::MIN))
        );
        let err = value("abc", DataType::Int32).expect_err("syntax");
        assert_eq!(
            err.message,
            "invalid input syntax for type integer: \"abc\""
        );
        assert_eq!(err.sqlstate, INVALID_TEXT_REPRESENTATION);
        let err = value("2147483648", DataType::Int32).expect_err("range");
        assert_eq!(
            err.message,
            "value \"2147483648\" is out of range for type integer"
        );
        assert_eq!(err.sqlstate, NUMERIC_VALUE_OUT_OF_RANGE);
        assert_eq!(
            sqlstate_of("32768", DataType::Int16),
            NUMERIC_VALUE_OUT_OF_RANGE
        );
        assert_eq!(
            sqlstate_of("9223372036854775808", DataType::Int64),
            NUMERIC_VALUE_OUT_OF_RANGE
        );
        assert_eq!(
            sqlstate_of("99999999999999999999999", DataType::Int64),
            NUMERIC_VALUE_OUT_OF_RANGE
        );
        for bad in [
            "", " ", "1.5", "1 2", "_1", "1_", "1__0", "--1", "0x", "1e3",
        ] {
            assert_eq!(
                sqlstate_of(bad, DataType::Int64),
                INVALID_TEXT_REPRESENTATION,
                "{bad}"
            );
        }
    }

    #[test]
    fn floats() {
        assert_eq!(
            value(" 1.5e3 ", DataType::Float64).expect("exp"),
            ScalarValue::Float64(Some(1500.0))
        );
        assert_eq!(
            value(".5", DataType::Float32).expect("dot"),
            ScalarValue::Float32(Some(0.5))
        );
        let nan = value("NaN", DataType::Float64).expect("nan");
        assert!(matches!(nan, ScalarValue::Float64(Some(v)) if v.is_nan()));
        assert_eq!(
            value("-Infinity", DataType::Float64).expect("inf"),
            ScalarValue::Float64(Some(f64::NEG_INFINITY))
        );
        assert_eq!(
            value("inf", DataType::Float32).expect("inf"),
            ScalarValue::Float32(Some(f32::INFINITY))
        );
        let err = value("1e400", DataType::Float64).expect_err("overflow");
        assert_eq!(
            err.message,
            "\"1e400\" is out of range for type double precision"
        );
        assert_eq!(
            sqlstate_of("1e-400", DataType::Float64),
            NUMERIC_VALUE_OUT_OF_RANGE
        );
        assert_eq!(
            sqlstate_of("1e39", DataType::Float32),
            NUMERIC_VALUE_OUT_OF_RANGE
        );
        assert_eq!(
            value("0e-400", DataType::Float64).expect("zero"),
            ScalarValue::Float64(Some(0.0))
        );
        let err = value("1.2.3", DataType::Float32).expect_err("syntax");
        assert_eq!(err.message, "invalid input syntax for type real: \"1.2.3\"");
    }

    #[test]
    fn numerics() {
        let dec = |text: &str| match value(text, DataType::Decimal128(5, 2)) {
            Ok(ScalarValue::Decimal128(Some(v), 5, 2)) => Ok(v),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(dec("123.45"), Ok(12345));
        assert_eq!(dec(" -1.005 "), Ok(-101));
        assert_eq!(dec("1.004"), Ok(100));
        assert_eq!(dec("0.005"), Ok(1));
        assert_eq!(dec("0.0049"), Ok(0));
        assert_eq!(dec("1e2"), Ok(10000));
        assert_eq!(dec("12345e-2"), Ok(12345));
        assert_eq!(dec(".5"), Ok(50));
        assert_eq!(dec("7."), Ok(700));
        assert_eq!(dec("1_0.5"), Ok(1050));
        assert_eq!(dec("0e999999999999"), Ok(0));
        assert_eq!(
            dec("000000000000000000000000000000000000000000012.5"),
            Ok(1250)
        );
        assert_eq!(dec("1e-999"), Ok(0));
        let err = dec("999.995").expect_err("rounds past precision");
        assert_eq!(err.sqlstate, NUMERIC_VALUE_OUT_OF_RANGE);
        assert_eq!(err.message, "numeric field overflow");
        assert_eq!(
            err.detail.as_deref(),
            Some(
                "A field with precision 5, scale 2 must round to an absolute value less than 10^3."
            )
        );
        assert_eq!(
            dec("1000").expect_err("big").sqlstate,
            NUMERIC_VALUE_OUT_OF_RANGE
        );
        assert_eq!(
            dec("1e99999").expect_err("huge").sqlstate,
            NUMERIC_VALUE_OUT_OF_RANGE
        );
        assert_eq!(
            dec("Infinity").expect_err("inf").sqlstate,
            NUMERIC_VALUE_OUT_OF_RANGE
        );
        assert_eq!(dec("NaN").expect_err("nan").sqlstate, FEATURE_NOT_SUPPORTED);
        for bad in ["", "abc", "1.2.3", "1e", "--1", "1 2", ".", "e5", "1_"] {
            let err = dec(bad).expect_err(bad);
            assert_eq!(
                err.message,
                format!("invalid input syntax for type numeric: \"{bad}\"")
            );
        }
        let wide = value(
            "12345678901234567890123456789012345678",
            DataType::Decimal128(38, 0),
        );
        assert_eq!(
            wide.expect("38 digits"),
            ScalarValue::Decimal128(
                Some(12_345_678_901_234_567_890_123_456_789_012_345_678),
                38,
                0
            )
        );
    }

    #[test]
    fn dates() {
        let date = |text: &str| value(text, DataType::Date32);
        assert_eq!(
            date("1970-01-01").expect("epoch"),
            ScalarValue::Date32(Some(0))
        );
        assert_eq!(
            date(" 2000-03-01 ").expect("2000"),
            ScalarValue::Date32(Some(11_017))
        );
        assert_eq!(
            date("1969-12-31").expect("neg"),
            ScalarValue::Date32(Some(-1))
        );
        assert_eq!(
            date("20240229").expect("compact"),
            ScalarValue::Date32(Some(19_782))
        );
        assert_eq!(
            date("2024-02-29 10:00:00+02").expect("time"),
            ScalarValue::Date32(Some(19_782))
        );
        assert_eq!(
            date("0001-01-01 BC").expect("bc"),
            ScalarValue::Date32(Some(-719_528))
        );
        assert_eq!(date("epoch").expect("word"), ScalarValue::Date32(Some(0)));
        assert!(date("today").is_ok());
        let err = date("2023-02-29").expect_err("not leap");
        assert_eq!(err.sqlstate, DATETIME_FIELD_OVERFLOW);
        assert_eq!(
            err.message,
            "date/time field value out of range: \"2023-02-29\""
        );
        assert_eq!(
            date("2024-13-01").expect_err("month").sqlstate,
            DATETIME_FIELD_OVERFLOW
        );
        assert_eq!(
            date("0000-01-01").expect_err("year 0").sqlstate,
            DATETIME_FIELD_OVERFLOW
        );
        let err = date("yesterday-ish").expect_err("syntax");
        assert_eq!(err.sqlstate, INVALID_DATETIME_FORMAT);
        assert_eq!(
            err.message,
            "invalid input syntax for type date: \"yesterday-ish\""
        );
        for bad in [
            "",
            "2024",
            "2024-01",
            "24-01-01",
            "2024-01-01x",
            "2024/01/01",
        ] {
            assert_eq!(
                date(bad).expect_err(bad).sqlstate,
                INVALID_DATETIME_FORMAT,
                "{bad}"
            );
        }
        assert_eq!(
            date("infinity").expect_err("inf").sqlstate,
            FEATURE_NOT_SUPPORTED
        );
    }

    #[test]
    fn timestamps() {
        let base = 19_724 * 86_400_000_000i64 + 11_045_000_000;
        assert_eq!(ts("2024-01-02 03:04:05"), base);
        assert_eq!(ts("2024-01-02T03:04:05"), base);
        assert_eq!(ts("2024-01-02 03:04:05.123456"), base + 123_456);
        assert_eq!(ts("2024-01-02 03:04:05.1"), base + 100_000);
        assert_eq!(ts("2024-01-02 03:04:05.0000005"), base + 1);
        assert_eq!(ts("2024-01-02 03:04:05+05"), base);
        assert_eq!(ts("2024-01-02 03:04"), base - 5_000_000);
        assert_eq!(ts("2024-01-02"), 19_724 * 86_400_000_000);
        assert_eq!(ts("2024-01-01 24:00:00"), 19_724 * 86_400_000_000);
        assert_eq!(ts("1969-12-31 23:59:59.5"), -500_000);
        assert_eq!(ts("1900-01-01 00:00:00"), -2_208_988_800_000_000);
        let err = parse_timestamp_us("2024-01-02 25:00:00", false).expect_err("hour");
        assert_eq!(err.sqlstate, DATETIME_FIELD_OVERFLOW);
        let err = parse_timestamp_us("2024-01-02 03:60:00", false).expect_err("minute");
        assert_eq!(err.sqlstate, DATETIME_FIELD_OVERFLOW);
        let err = parse_timestamp_us("2024-01-02 03", false).expect_err("no minutes");
        assert_eq!(
            err.message,
            "invalid input syntax for type timestamp: \"2024-01-02 03\""
        );
        let err = parse_timestamp_us("2024-01-02 03:04:05 Mars/Base", false).expect_err("zone");
        assert_eq!(err.sqlstate, INVALID_PARAMETER_VALUE);
    }

    #[test]
    fn timestamps_with_time_zone() {
        let base = 19_724 * 86_400_000_000i64 + 11_045_000_000;
        let hour = 3_600_000_000i64;
        assert_eq!(tstz("2024-01-02 03:04:05"), base);
        assert_eq!(tstz("2024-01-02 03:04:05Z"), base);
        assert_eq!(tstz("2024-01-02T03:04:05 UTC"), base);
        assert_eq!(tstz("2024-01-02 03:04:05+02"), base - 2 * hour);
        assert_eq!(tstz("2024-01-02 03:04:05+02:00"), base - 2 * hour);
        assert_eq!(
            tstz("2024-01-02 03:04:05 -0530"),
            base + 5 * hour + 30 * 60_000_000
        );
        assert_eq!(
            tstz("2024-01-02 03:04:05.25-01:30:15"),
            base + hour + 1_815_250_000
        );
        let err = parse_timestamp_us("2024-01-02 03:04:05+16", true).expect_err("displacement");
        assert_eq!(err.sqlstate, INVALID_TIME_ZONE_DISPLACEMENT);
        let err = parse_timestamp_us("garbage", true).expect_err("syntax");
        assert_eq!(
            err.message,
            "invalid input syntax for type timestamp with time zone: \"garbage\""
        );
        let scalar = value(
            "2024-01-02 03:04:05+02",
            DataType::Timestamp(TimeUnit::Microsecond, utc()),
        );
        assert_eq!(
            scalar.expect("scalar"),
            ScalarValue::TimestampMicrosecond(Some(base - 2 * hour), utc())
        );
        let seconds = value(
            "1970-01-01 00:00:01.9",
            DataType::Timestamp(TimeUnit::Second, None),
        );
        assert_eq!(
            seconds.expect("secs"),
            ScalarValue::TimestampSecond(Some(1), None)
        );
    }

    #[test]
    fn intervals() {
        let iv = |text: &str| value(text, DataType::Interval(IntervalUnit::MonthDayNano));
        let sec = 1_000_000_000i64;
        let cases = [
            (
                "1 day 02:03:04",
                interval(0, 1, (2 * 3600 + 3 * 60 + 4) * sec),
            ),
            ("5 minutes", interval(0, 0, 300 * sec)),
            ("1 year 2 mons", interval(14, 0, 0)),
            ("-3 hours", interval(0, 0, -3 * 3600 * sec)),
            ("P1DT2H", interval(0, 1, 2 * 3600 * sec)),
            (
                "P1Y2M3W4DT5H6M7.5S",
                interval(14, 25, (5 * 3600 + 6 * 60 + 7) * sec + sec / 2),
            ),
            ("00:05:00", interval(0, 0, 300 * sec)),
            ("-01:02:03.5", interval(0, 0, -(3723 * sec + sec / 2))),
            ("1 02:00:00", interval(0, 1, 7200 * sec)),
            ("@ 3 days ago", interval(0, -3, 0)),
            ("1.5 days", interval(0, 1, 12 * 3600 * sec)),
            ("1.5 years", interval(18, 0, 0)),
            ("1.5 months", interval(1, 15, 0)),
            ("2 weeks", interval(0, 14, 0)),
            ("10", interval(0, 0, 10 * sec)),
            ("1-2", interval(14, 0, 0)),
            ("-1 day +02:00", interval(0, -1, 7200 * sec)),
            ("3h 20min", interval(0, 0, (3 * 3600 + 20 * 60) * sec)),
            ("1 decade", interval(120, 0, 0)),
            ("1.000001 seconds", interval(0, 0, sec + 1000)),
            ("5:30.5", interval(0, 0, 330 * sec + sec / 2)),
        ];
        for (text, expected) in cases {
            assert_eq!(iv(text).expect(text), expected, "{text}");
        }
        for bad in [
            "",
            "day",
            "5 fortnights",
            "1 day 2 day ago ago",
            "P",
            "PT1Y",
            "1:2:3:4",
            "abc",
        ] {
            let err = iv(bad).expect_err(bad);
            assert_eq!(err.sqlstate, INVALID_DATETIME_FORMAT, "{bad}");
        }
        let err = iv("bogus").expect_err("syntax");
        assert_eq!(
            err.message,
            "invalid input syntax for type interval: \"bogus\""
        );
        assert_eq!(
            iv("00:61:00").expect_err("min").sqlstate,
            DATETIME_FIELD_OVERFLOW
        );
        assert_eq!(
            iv("3000000000 days").expect_err("days").sqlstate,
            INTERVAL_FIELD_OVERFLOW
        );
    }

    #[test]
    fn varchar_and_json_columns() {
        let varchar = text_field("v", "varchar(3)");
        let check = |text: &str| parse_text_value(text, &DataType::Utf8, &varchar);
        assert_eq!(check("abc").expect("fits"), utf8("abc"));
        assert_eq!(check("héé").expect("chars not bytes"), utf8("héé"));
        assert_eq!(check("ab    ").expect("spaces dropped"), utf8("ab "));
        let err = check("abcd").expect_err("too long");
        assert_eq!(err.sqlstate, STRING_DATA_RIGHT_TRUNCATION);
        assert_eq!(err.message, "value too long for type character varying(3)");

        let json = text_field("j", "jsonb");
        for good in [
            "{}",
            " [1, -2.5e3, true, false, null, \"a\\u00e9\\n\"] ",
            "{\"a\": {\"b\": [[], {}]}, \"c\": 0}",
            "\"str\"",
            "0",
        ] {
            assert!(
                parse_text_value(good, &DataType::Utf8, &json).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "tru",
            "[1] x",
            "{1: 2}",
            "\"\\x\"",
            "1.",
        ] {
            let err = parse_text_value(bad, &DataType::Utf8, &json).expect_err(bad);
            assert_eq!(err.sqlstate, INVALID_TEXT_REPRESENTATION, "{bad}");
        }
        let schema = schema(vec![text_field("v", "varchar(2)")]);
        let err = decode(&schema, &CopyOptions::csv(), "ok\ntoo long\n").expect_err("copy");
        assert_eq!((err.line, err.column.as_deref()), (Some(2), Some("v")));
    }

    #[test]
    fn options_defaults_and_forms() {
        assert_eq!(
            options_of("COPY t FROM STDIN").expect("text"),
            CopyOptions::text()
        );
        assert_eq!(
            options_of("COPY t FROM STDIN CSV").expect("legacy csv"),
            CopyOptions::csv()
        );
        let o = options_of("COPY t (a, b) FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';', NULL 'x', QUOTE '''', ESCAPE '\\')")
            .expect("with");
        assert_eq!(
            (
                o.format,
                o.header,
                o.delimiter,
                o.null.as_str(),
                o.quote,
                o.escape
            ),
            (CopyFormat::Csv, true, b';', "x", b'\'', b'\\')
        );
        let o = options_of("COPY t FROM STDIN WITH CSV HEADER QUOTE AS '|'").expect("legacy");
        assert_eq!(
            (o.format, o.header, o.quote, o.escape),
            (CopyFormat::Csv, true, b'|', b'|')
        );
        let o = options_of("COPY t FROM STDIN DELIMITER '|' NULL 'nil'").expect("legacy text");
        assert_eq!(
            (o.format, o.delimiter, o.null.as_str()),
            (CopyFormat::Text, b'|', "nil")
        );
        let o = options_of("COPY t FROM STDIN (FORMAT csv, FORCE_NOT_NULL (a), FORCE_NULL (b))")
            .expect("force");
        assert_eq!(
            (o.force_not_null, o.force_null),
            (vec!["a".to_string()], vec!["b".to_string()])
        );
        assert!(options_of("COPY t FROM STDIN (FREEZE, ENCODING 'UTF8')").is_ok());
    }

    #[test]
    fn options_errors() {
        let state = |sql: &str| options_of(sql).expect_err(sql).sqlstate;
        assert_eq!(
            state("COPY t FROM STDIN (FORMAT binary)"),
            FEATURE_NOT_SUPPORTED
        );
        assert_eq!(state("COPY t FROM STDIN BINARY"), FEATURE_NOT_SUPPORTED);
        assert_eq!(
            state("COPY t FROM STDIN (FORMAT xml)"),
            INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            state("COPY t FROM STDIN (QUOTE '\"')"),
            FEATURE_NOT_SUPPORTED
        );
        assert_eq!(
            state("COPY t FROM STDIN (DELIMITER ',', DELIMITER ';')"),
            SYNTAX_ERROR
        );
        assert_eq!(
            state("COPY t FROM STDIN (DELIMITER 'a')"),
            INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            state("COPY t FROM STDIN (FORMAT csv, DELIMITER '\"')"),
            INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            state("COPY t FROM STDIN (NULL 'a\tb')"),
            INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            state("COPY t FROM STDIN (ENCODING 'LATIN1')"),
            FEATURE_NOT_SUPPORTED
        );
        assert_eq!(
            state("COPY t FROM STDIN (FORMAT csv, FORCE_QUOTE (a))"),
            FEATURE_NOT_SUPPORTED
        );
        let multibyte = CopyOptions::from_statement(&[CopyOption::Delimiter('é')], &[]);
        assert_eq!(multibyte.expect_err("é").sqlstate, FEATURE_NOT_SUPPORTED);
        let schema = schema(vec![Field::new("a", DataType::Int32, true)]);
        let bad = CopyOptions {
            delimiter: b'\n',
            ..CopyOptions::text()
        };
        let mut decoder = CopyDecoder::new(schema, bad, 10);
        assert_eq!(
            decoder.push(b"1\n").expect_err("invalid").sqlstate,
            INVALID_PARAMETER_VALUE
        );
    }

    #[test]
    fn record_size_is_bounded() {
        let schema = schema(vec![Field::new("t", DataType::Utf8, true)]);
        for threads in [1, 2] {
            let mut decoder =
                CopyDecoder::with_threads(Arc::clone(&schema), CopyOptions::text(), 10, threads);
            assert!(decoder
                .push(b"one\ntwo\n")
                .expect("short records")
                .is_empty());
            let chunk = vec![b'a'; 1 << 20];
            let mut failed = None;
            for _ in 0..=(MAX_RECORD_BYTES >> 20) {
                if let Err(e) = decoder.push(&chunk) {
                    failed = Some(e);
                    break;
                }
            }
            let failed = failed.expect("limit");
            assert_eq!(failed.sqlstate, PROGRAM_LIMIT_EXCEEDED);
            assert_eq!(failed.line, Some(3), "{threads} threads");
            // A bad record before the long one is the error reported.
            let numbers = Arc::new(Schema::new(vec![Field::new("i", DataType::Int64, true)]));
            let mut decoder = CopyDecoder::with_threads(numbers, CopyOptions::text(), 10, threads);
            let mut failed = decoder.push(b"1\nx\n").err();
            for _ in 0..=(MAX_RECORD_BYTES >> 20) {
                if failed.is_some() {
                    break;
                }
                failed = decoder.push(&chunk).err();
            }
            let failed = failed.expect("an error");
            assert_eq!(
                (failed.line, failed.sqlstate),
                (Some(2), INVALID_TEXT_REPRESENTATION)
            );
        }
    }

    /// Run by hand: `cargo test --release -- --ignored throughput --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let rows = 2_000_000usize;
        let mut input = Vec::with_capacity(rows * 64);
        for i in 0..rows {
            let line = format!(
                "{}\t{}\tname-{}\t{}.{}\t2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}\n",
                i % 1_000_000,
                i * 7919,
                i % 9973,
                i % 1000,
                i % 97,
                i % 12 + 1,
                i % 28 + 1,
                i % 24,
                i % 60,
                (i / 7) % 60,
                i % 1_000_000
            );
            input.extend_from_slice(line.as_bytes());
        }
        for (label, data) in [
            ("text", input.clone()),
            (
                "csv",
                input
                    .iter()
                    .map(|&b| if b == b'\t' { b',' } else { b })
                    .collect(),
            ),
        ] {
            let options = if label == "text" {
                CopyOptions::text()
            } else {
                CopyOptions::csv()
            };
            let mut decoder = CopyDecoder::new(five_column_schema(), options, 8192);
            let start = std::time::Instant::now();
            let mut decoded = 0;
            for chunk in data.chunks(65_536) {
                decoded += decoder
                    .push(chunk)
                    .expect("push")
                    .iter()
                    .map(RecordBatch::num_rows)
                    .sum::<usize>();
            }
            decoded += decoder
                .finish()
                .expect("finish")
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>();
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(decoded, rows);
            println!(
                "{label}: {rows} rows, {:.1} MB in {secs:.3}s = {:.2} M rows/s, {:.0} MB/s",
                data.len() as f64 / 1e6,
                rows as f64 / secs / 1e6,
                data.len() as f64 / secs / 1e6
            );
        }
    }
}
