//! The source DDL: parsing `CREATE SOURCE`, connector-fed `CREATE TABLE`,
//! `DROP SOURCE` and `SHOW SOURCES` (RisingWave's dialect), and checking a
//! parsed `CREATE` into the [`SourceDef`] the catalog stores.
//!
//! The parser is layered on sqlparser the way DataFusion's `DFParser` is:
//! it recognises its own statements by their leading keywords, reuses
//! sqlparser for column definitions, constraints and expressions, and leaves
//! every other statement to the normal parser ([`parse_source_statement`]
//! returns `Ok(None)` for them). Column lists are turned into columns by the
//! same code as `CREATE TABLE` (`crate::sql::ddl::column_defs`).
//!
//! This file owns syntax and static checks only. Whether the broker is
//! reachable, whether a datagen generator or field option exists, and whether
//! a watermark expression plans are for the layers that run the source.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{ColumnDef as AstColumnDef, Expr, Ident, TableConstraint};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Span, Token};
use serde::{Deserialize, Serialize};

use crate::catalog::ColumnDef;
use crate::error::{Error, Result};
use crate::sql::{ddl, names};
use crate::types::SqlType;

/// One of the statements this module parses.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceStatement {
    /// `CREATE SOURCE …` or `CREATE TABLE … WITH (connector = …)`; check it
    /// with [`CreateSource::validate`].
    Create(CreateSource),
    /// `DROP SOURCE [IF EXISTS] name [, …] [CASCADE | RESTRICT]`.
    Drop {
        /// Relation names, folded as identifiers are.
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    },
    /// `SHOW SOURCES`.
    Show,
}

/// A `CREATE SOURCE` or connector-fed `CREATE TABLE` as written, before checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSource {
    pub kind: SourceKind,
    /// The relation name, folded as identifiers are.
    pub name: String,
    pub if_not_exists: bool,
    /// `None` when the statement has no column list at all.
    pub columns: Option<Vec<AstColumnDef>>,
    /// Table constraints of the column list (`PRIMARY KEY (…)`).
    pub constraints: Vec<TableConstraint>,
    /// `WATERMARK FOR column AS expr`, in order written.
    pub watermarks: Vec<(Ident, Expr)>,
    /// `INCLUDE kind [AS name]`, in order written.
    pub includes: Vec<(IncludeKind, Option<Ident>)>,
    /// The `WITH (…)` options: keys lower-cased, values as text, no key twice.
    pub options: Vec<(String, String)>,
    pub format: Option<FormatClause>,
}

/// `FORMAT … ENCODE … [(options)]` as written.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatClause {
    pub format: Format,
    pub encode: EncodeKind,
    /// Options after `ENCODE CSV`: keys lower-cased, no key twice.
    pub encode_options: Vec<(String, String)>,
}

/// The encodings `ENCODE` names, before their options are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeKind {
    Json,
    Csv,
}

/// Whether the relation is a stream (`CREATE SOURCE`) or stores its rows
/// (`CREATE TABLE … WITH (connector = …)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    Source,
    Table,
}

/// How messages map to rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// Every message is a new row.
    Plain,
    /// The message key is the primary key; the value replaces the row, and a
    /// null value deletes it. Tables only.
    Upsert,
}

/// How a message's bytes decode into a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encode {
    /// One JSON object per message; fields are matched to columns by name.
    Json,
    /// One CSV record per message.
    Csv {
        /// A single-byte delimiter, `,` by default.
        delimiter: u8,
        /// The first message is a header to skip (`without_header = 'false'`);
        /// off by default, since each message is one record.
        header: bool,
    },
}

/// `FORMAT … ENCODE …` checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFormat {
    pub format: Format,
    pub encode: Encode,
}

/// Message metadata a source can add as columns (`INCLUDE …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncludeKind {
    /// The Kafka partition (integer).
    Partition,
    /// The message's offset in its partition (bigint).
    Offset,
    /// The message timestamp (timestamptz; NULL when the broker has none).
    Timestamp,
    /// The message key as text (NULL when the message has none).
    Key,
}

/// An `INCLUDE` column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncludeDef {
    pub kind: IncludeKind,
    /// The column name: from `AS name`, else [`IncludeKind::default_column`].
    pub column: String,
}

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkDef {
    /// A timestamp or timestamptz column (declared or included).
    pub column: String,
    /// The watermark expression as SQL text, e.g. `ts - INTERVAL '5 seconds'`.
    pub expr: String,
}

/// Where the first Kafka offset to read comes from (`scan.startup.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartupMode {
    Earliest,
    Latest,
    /// The first message at or after this time, in milliseconds since the epoch.
    Timestamp(i64),
}

/// Where the rows come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Connector {
    Kafka {
        topic: String,
        /// `properties.bootstrap.server`, as librdkafka's `bootstrap.servers`.
        bootstrap_servers: String,
        startup: StartupMode,
        /// Every other `properties.<name>` option, without the prefix: passed
        /// to librdkafka as is.
        properties: BTreeMap<String, String>,
    },
    /// The built-in generator; its options (all but `connector`) are checked
    /// by the generator.
    Datagen { options: BTreeMap<String, String> },
}

/// A source or connector-fed table as the catalog stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceDef {
    pub name: String,
    pub kind: SourceKind,
    /// The declared columns; empty when no column list was given.
    pub columns: Vec<ColumnDef>,
    /// False when the column list was omitted (a datagen `generator` gives
    /// the schema).
    pub columns_declared: bool,
    /// Indexes into `columns`; empty when there is no key.
    pub primary_key: Vec<usize>,
    pub watermark: Option<WatermarkDef>,
    /// Metadata columns, after the declared ones.
    pub includes: Vec<IncludeDef>,
    pub connector: Connector,
    /// `None` only for datagen without `FORMAT`: the generator makes typed rows.
    pub format: Option<SourceFormat>,
    /// How the source runs, whatever its connector.
    #[serde(default)]
    pub run: RunOptions,
}

/// What a source does with bad records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BadRecordAction {
    /// Count it, keep it in `eddy_catalog.source_errors`, go on.
    #[default]
    Skip,
    /// Stop the source at the first bad record (its reader reports why).
    Stop,
}

/// Options every connector takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// `bad.record.action = 'skip' | 'stop'`.
    pub bad_records: BadRecordAction,
    /// `watermark.idle.timeout.ms`: a partition silent this long stops
    /// holding the source's watermark back.
    pub idle_timeout_ms: u64,
    /// `max.message.bytes`: larger payloads are bad records.
    pub max_message_bytes: usize,
    /// `watermark.allowed.lateness`, in microseconds: how far behind its
    /// partition's watermark an event may be and still be read. Later
    /// events go to `eddy_catalog.late_events`. Only with a WATERMARK.
    #[serde(default)]
    pub allowed_lateness_us: i64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            bad_records: BadRecordAction::Skip,
            idle_timeout_ms: 5_000,
            max_message_bytes: crate::source::decode::DEFAULT_MAX_MESSAGE_BYTES,
            allowed_lateness_us: 0,
        }
    }
}

/// The option keys [`RunOptions`] reads.
const RUN_OPTIONS: [&str; 4] = [
    "bad.record.action",
    "watermark.idle.timeout.ms",
    "watermark.allowed.lateness",
    "max.message.bytes",
];

impl RunOptions {
    fn parse(options: &BTreeMap<String, String>) -> Result<RunOptions> {
        let mut run = RunOptions::default();
        if let Some(v) = options.get("bad.record.action") {
            run.bad_records = match v.to_ascii_lowercase().as_str() {
                "skip" => BadRecordAction::Skip,
                "stop" => BadRecordAction::Stop,
                _ => {
                    return Err(Error::InvalidParameter(format!(
                        "invalid value for option \"bad.record.action\": \"{v}\" (expected skip or stop)"
                    )))
                }
            };
        }
        let positive = |key: &str, v: &str| -> Result<u64> {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "invalid value for option \"{key}\": \"{v}\" (expected a positive integer)"
                    ))
                })
        };
        if let Some(v) = options.get("watermark.idle.timeout.ms") {
            run.idle_timeout_ms = positive("watermark.idle.timeout.ms", v)?;
        }
        if let Some(v) = options.get("max.message.bytes") {
            run.max_message_bytes =
                usize::try_from(positive("max.message.bytes", v)?).unwrap_or(usize::MAX);
        }
        if let Some(v) = options.get("watermark.allowed.lateness") {
            run.allowed_lateness_us = crate::sql::windows::fixed_interval_micros(v)
                .filter(|us| *us >= 0)
                .ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "invalid value for option \"watermark.allowed.lateness\": \"{v}\" (expected an interval of days or less, e.g. '30 minutes')"
                    ))
                })?;
        }
        Ok(run)
    }
}

/// Options a Kafka source knows besides `properties.*`.
const KAFKA_OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "properties.bootstrap.server",
    "scan.startup.mode",
    "scan.startup.timestamp.millis",
];

const CONNECTORS_HINT: &str = "the connectors are kafka and datagen";

impl IncludeKind {
    /// The column name when `AS name` is not given.
    pub fn default_column(self) -> &'static str {
        match self {
            IncludeKind::Partition => "_partition",
            IncludeKind::Offset => "_offset",
            IncludeKind::Timestamp => "_timestamp",
            IncludeKind::Key => "_key",
        }
    }

    /// The column's SQL type.
    pub fn sql_type(self) -> SqlType {
        match self {
            IncludeKind::Partition => SqlType::Integer,
            IncludeKind::Offset => SqlType::BigInt,
            IncludeKind::Timestamp => SqlType::Timestamptz,
            IncludeKind::Key => SqlType::Text,
        }
    }

    /// Whether the column can be NULL.
    pub fn nullable(self) -> bool {
        matches!(self, IncludeKind::Timestamp | IncludeKind::Key)
    }
}

impl SourceKind {
    /// `source` or `table`, as messages name the relation.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Source => "source",
            SourceKind::Table => "table",
        }
    }
}

impl SourceDef {
    /// The full row: declared columns, then the `INCLUDE` columns.
    pub fn arrow_schema(&self) -> SchemaRef {
        let declared = self
            .columns
            .iter()
            .map(|c| c.sql_type.field(&c.name, !c.not_null));
        let included = self
            .includes
            .iter()
            .map(|i| i.kind.sql_type().field(&i.column, i.kind.nullable()));
        Arc::new(Schema::new(declared.chain(included).collect::<Vec<_>>()))
    }

    /// `FORMAT UPSERT`: rows are keyed by the primary key.
    pub fn is_upsert(&self) -> bool {
        matches!(&self.format, Some(f) if f.format == Format::Upsert)
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses `sql` if it is one of the source statements: `Ok(None)` when it
/// is not (the normal parser handles it, e.g. a `CREATE TABLE` without a
/// connector), an error (42601 with the position) when it is one but
/// malformed. One statement, optionally followed by semicolons.
pub fn parse_source_statement(sql: &str) -> Result<Option<SourceStatement>> {
    let dialect = PostgreSqlDialect {};
    // A text the tokenizer refuses is the normal parser's to report.
    let Ok(parser) = Parser::new(&dialect).try_with_sql(sql) else {
        return Ok(None);
    };
    let mut parser = SourceParser { parser };
    let statement = match parser.statement_kind() {
        Some(StatementKind::CreateSource) => parser.parse_create(SourceKind::Source),
        Some(StatementKind::CreateTable) if is_connector_table(sql) => {
            parser.parse_create(SourceKind::Table)
        }
        Some(StatementKind::DropSource) => parser.parse_drop(),
        Some(StatementKind::ShowSources) => parser.parse_show(),
        _ => return Ok(None),
    };
    statement
        .and_then(|s| parser.expect_end().map(|()| Some(s)))
        .map_err(|e| e.with_statement_text(sql))
}

enum StatementKind {
    CreateSource,
    CreateTable,
    DropSource,
    ShowSources,
}

struct SourceParser<'a> {
    parser: Parser<'a>,
}

/// Whether a token is the (unquoted) word `word`, keyword or not.
fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// A syntax error at a token, in the form [`Error::with_statement_text`] completes.
fn syntax_at(message: String, span: Span) -> Error {
    let line_col =
        (span.start.line > 0).then_some((span.start.line as usize, span.start.column as usize));
    Error::Syntax {
        message,
        line_col,
        position: None,
    }
}

/// `CREATE TABLE name [(…)]` followed by `INCLUDE`, by `FORMAT`, or by a
/// `WITH (…)` that holds a `connector` option or is followed by `FORMAT`: a
/// table fed by a connector. PostgreSQL's own `CREATE TABLE` has none of these.
fn is_connector_table(sql: &str) -> bool {
    let dialect = PostgreSqlDialect {};
    let Ok(mut p) = Parser::new(&dialect).try_with_sql(sql) else {
        return false;
    };
    if !p.parse_keywords(&[Keyword::CREATE, Keyword::TABLE]) {
        return false;
    }
    let _ = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    if p.parse_object_name(false).is_err() {
        return false;
    }
    if p.peek_token().token == Token::LParen && !skip_parenthesized(&mut p) {
        return false;
    }
    let next = p.next_token().token;
    if is_word(&next, "include") || is_word(&next, "format") {
        return true;
    }
    if !is_word(&next, "with") || !p.consume_token(&Token::LParen) {
        return false;
    }
    let mut depth = 1;
    while depth > 0 {
        match p.next_token().token {
            Token::EOF => return false,
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            token
                if depth == 1
                    && is_option_key(&token, "connector")
                    && p.peek_token().token == Token::Eq =>
            {
                return true
            }
            _ => {}
        }
    }
    is_word(&p.next_token().token, "format")
}

/// Whether a token is the option key `key`, as a word or a quoted string.
fn is_option_key(token: &Token, key: &str) -> bool {
    match token {
        Token::Word(w) => w.value.eq_ignore_ascii_case(key),
        Token::SingleQuotedString(s) => s.eq_ignore_ascii_case(key),
        _ => false,
    }
}

/// Consumes a balanced `( … )`; false if the input ends first.
fn skip_parenthesized(p: &mut Parser) -> bool {
    let mut depth = 0usize;
    loop {
        match p.next_token().token {
            Token::EOF => return false,
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
}

impl SourceParser<'_> {
    /// Which statement this is, consuming nothing.
    fn statement_kind(&self) -> Option<StatementKind> {
        let first = self.parser.peek_nth_token(0).token;
        let second = self.parser.peek_nth_token(1).token;
        if is_word(&first, "create") && is_word(&second, "source") {
            Some(StatementKind::CreateSource)
        } else if is_word(&first, "create") && is_word(&second, "table") {
            Some(StatementKind::CreateTable)
        } else if is_word(&first, "drop") && is_word(&second, "source") {
            Some(StatementKind::DropSource)
        } else if is_word(&first, "show") && is_word(&second, "sources") {
            Some(StatementKind::ShowSources)
        } else {
            None
        }
    }

    /// Consumes the next token if it is the unquoted word `word`.
    fn parse_word(&mut self, word: &str) -> bool {
        if is_word(&self.parser.peek_token().token, word) {
            self.parser.next_token();
            true
        } else {
            false
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<()> {
        if self.parse_word(word) {
            Ok(())
        } else {
            Err(self.parser.expected(word, self.parser.peek_token())?)
        }
    }

    /// Trailing semicolons, then the end of the text.
    fn expect_end(&mut self) -> Result<()> {
        while self.parser.consume_token(&Token::SemiColon) {}
        let next = self.parser.peek_token();
        if next.token == Token::EOF {
            Ok(())
        } else {
            Err(self.parser.expected("end of statement", next)?)
        }
    }

    fn parse_show(&mut self) -> Result<SourceStatement> {
        self.expect_word("show")?;
        self.expect_word("sources")?;
        Ok(SourceStatement::Show)
    }

    fn parse_drop(&mut self) -> Result<SourceStatement> {
        self.expect_word("drop")?;
        self.expect_word("source")?;
        let if_exists = self.parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let objects = self
            .parser
            .parse_comma_separated(|p| p.parse_object_name(false))?;
        let names = objects
            .iter()
            .map(names::relation_name)
            .collect::<Result<Vec<_>>>()?;
        let cascade = matches!(
            self.parser
                .parse_one_of_keywords(&[Keyword::CASCADE, Keyword::RESTRICT]),
            Some(Keyword::CASCADE)
        );
        Ok(SourceStatement::Drop {
            names,
            if_exists,
            cascade,
        })
    }

    fn parse_create(&mut self, kind: SourceKind) -> Result<SourceStatement> {
        self.expect_word("create")?;
        self.expect_word(kind.name())?;
        let if_not_exists =
            self.parser
                .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = names::relation_name(&self.parser.parse_object_name(false)?)?;
        let mut create = CreateSource {
            kind,
            name,
            if_not_exists,
            columns: None,
            constraints: Vec::new(),
            watermarks: Vec::new(),
            includes: Vec::new(),
            options: Vec::new(),
            format: None,
        };
        if self.parser.peek_token().token == Token::LParen {
            self.parse_column_list(&mut create)?;
        }
        while self.parse_word("include") {
            self.parse_include(&mut create.includes)?;
        }
        self.expect_word("with")?;
        create.options = self.parse_options()?;
        if self.parse_word("format") {
            create.format = Some(self.parse_format()?);
        }
        Ok(SourceStatement::Create(create))
    }

    /// `( element [, …] )`: columns, `WATERMARK FOR …` and table constraints.
    fn parse_column_list(&mut self, create: &mut CreateSource) -> Result<()> {
        self.parser.expect_token(&Token::LParen)?;
        let mut columns = Vec::new();
        if self.parser.consume_token(&Token::RParen) {
            create.columns = Some(columns);
            return Ok(());
        }
        loop {
            let next = self.parser.peek_token().token;
            let after = self.parser.peek_nth_token(1).token;
            if is_word(&next, "watermark") && is_word(&after, "for") {
                self.parser.next_token();
                self.parser.next_token();
                let column = self.parser.parse_identifier()?;
                self.parser.expect_keyword(Keyword::AS)?;
                let expr = self.parser.parse_expr()?;
                create.watermarks.push((column, expr));
            } else if let Some(constraint) = self.parser.parse_optional_table_constraint()? {
                create.constraints.push(constraint);
            } else if let Token::Word(_) = next {
                columns.push(self.parser.parse_column_def()?);
            } else {
                let found = self.parser.peek_token();
                return Err(self.parser.expected("column definition", found)?);
            }
            if self.parser.consume_token(&Token::Comma) {
                continue;
            }
            self.parser.expect_token(&Token::RParen)?;
            break;
        }
        create.columns = Some(columns);
        Ok(())
    }

    /// After `INCLUDE`: `kind [AS name]`.
    fn parse_include(&mut self, includes: &mut Vec<(IncludeKind, Option<Ident>)>) -> Result<()> {
        let token = self.parser.next_token();
        let word = match &token.token {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
            _ => return Err(self.parser.expected("INCLUDE kind", token)?),
        };
        let kind = match word.as_str() {
            "partition" => IncludeKind::Partition,
            "offset" => IncludeKind::Offset,
            "timestamp" => IncludeKind::Timestamp,
            "key" => IncludeKind::Key,
            other => {
                return Err(Error::unsupported(
                    format!("INCLUDE {other}"),
                    "INCLUDE takes partition, offset, timestamp or key.",
                ))
            }
        };
        if includes.iter().any(|(k, _)| *k == kind) {
            return Err(syntax_at(
                format!("INCLUDE {word} specified more than once"),
                token.span,
            ));
        }
        let alias = if self.parser.parse_keyword(Keyword::AS) {
            Some(self.parser.parse_identifier()?)
        } else {
            None
        };
        includes.push((kind, alias));
        Ok(())
    }

    /// `( key = value [, …] )`: keys lower-cased, each at most once.
    fn parse_options(&mut self) -> Result<Vec<(String, String)>> {
        self.parser.expect_token(&Token::LParen)?;
        let mut options: Vec<(String, String)> = Vec::new();
        loop {
            let at = self.parser.peek_token().span;
            let key = self.parse_option_key()?;
            if options.iter().any(|(k, _)| *k == key) {
                return Err(syntax_at(
                    format!("option \"{key}\" specified more than once"),
                    at,
                ));
            }
            self.parser.expect_token(&Token::Eq)?;
            let value = self.parse_option_value()?;
            options.push((key, value));
            if !self.parser.consume_token(&Token::Comma) {
                self.parser.expect_token(&Token::RParen)?;
                return Ok(options);
            }
        }
    }

    /// A dotted name (`properties.bootstrap.server`) or a quoted string.
    fn parse_option_key(&mut self) -> Result<String> {
        let token = self.parser.next_token();
        let mut key = match token.token {
            Token::Word(w) => w.value,
            Token::SingleQuotedString(s) => return Ok(s.to_lowercase()),
            _ => return Err(self.parser.expected("option name", token)?),
        };
        while self.parser.consume_token(&Token::Period) {
            let token = self.parser.next_token();
            match token.token {
                Token::Word(w) => {
                    key.push('.');
                    key.push_str(&w.value);
                }
                _ => return Err(self.parser.expected("option name", token)?),
            }
        }
        Ok(key.to_lowercase())
    }

    /// A string literal, a number or a word (`true`, `earliest`), as text.
    fn parse_option_value(&mut self) -> Result<String> {
        let token = self.parser.next_token();
        match token.token {
            Token::Word(w) => Ok(w.value),
            Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => Ok(s),
            Token::Number(n, _) => Ok(n),
            Token::Minus => {
                let token = self.parser.next_token();
                match token.token {
                    Token::Number(n, _) => Ok(format!("-{n}")),
                    _ => Err(self.parser.expected("number", token)?),
                }
            }
            _ => Err(self.parser.expected("option value", token)?),
        }
    }

    /// After `FORMAT`: `PLAIN | UPSERT ENCODE JSON | CSV [(options)]`.
    fn parse_format(&mut self) -> Result<FormatClause> {
        let token = self.parser.next_token();
        let format = match &token.token {
            t if is_word(t, "plain") => Format::Plain,
            t if is_word(t, "upsert") => Format::Upsert,
            Token::Word(w) => {
                return Err(Error::unsupported(
                    format!("FORMAT {}", w.value.to_uppercase()),
                    "Use FORMAT PLAIN or FORMAT UPSERT.",
                ))
            }
            _ => return Err(self.parser.expected("PLAIN or UPSERT", token)?),
        };
        self.expect_word("encode")?;
        let token = self.parser.next_token();
        let encode = match &token.token {
            t if is_word(t, "json") => EncodeKind::Json,
            t if is_word(t, "csv") => EncodeKind::Csv,
            Token::Word(w) => {
                return Err(Error::unsupported(
                    format!("ENCODE {}", w.value.to_uppercase()),
                    "Use ENCODE JSON or ENCODE CSV.",
                ))
            }
            _ => return Err(self.parser.expected("JSON or CSV", token)?),
        };
        let encode_options =
            if encode == EncodeKind::Csv && self.parser.peek_token().token == Token::LParen {
                self.parse_options()?
            } else {
                Vec::new()
            };
        Ok(FormatClause {
            format,
            encode,
            encode_options,
        })
    }
}

// ---------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------

impl CreateSource {
    /// Checks the statement and builds the definition to store.
    pub fn validate(&self) -> Result<SourceDef> {
        let (columns, primary_key) = match &self.columns {
            Some(columns) => ddl::column_defs(columns, &self.constraints)?,
            None => (Vec::new(), Vec::new()),
        };
        if let Some(c) = columns.iter().find(|c| c.default.is_some()) {
            return Err(Error::unsupported(
                format!("DEFAULT on {} column \"{}\"", self.kind.name(), c.name),
                "A field missing from a message reads as NULL.",
            ));
        }
        let mut options: BTreeMap<String, String> = self.options.iter().cloned().collect();
        let run = RunOptions::parse(&options)?;
        options.retain(|k, _| !RUN_OPTIONS.contains(&k.as_str()));
        let connector = connector(&options)?;
        self.check_column_list(&connector)?;
        let includes = self.includes(&connector, &columns)?;
        let watermark = self.watermark(&columns, &includes)?;
        if watermark.is_none()
            && self
                .options
                .iter()
                .any(|(k, _)| k == "watermark.allowed.lateness")
        {
            return Err(Error::InvalidDefinition(format!(
                "option \"watermark.allowed.lateness\" of {} {} needs a WATERMARK FOR clause: \
                 lateness is measured against the watermark",
                self.kind.name(),
                self.name
            )));
        }
        let format = self.format(&connector, &primary_key)?;
        Ok(SourceDef {
            name: self.name.clone(),
            kind: self.kind,
            columns,
            columns_declared: self.columns.is_some(),
            primary_key,
            watermark,
            includes,
            connector,
            format,
            run,
        })
    }

    /// Only a datagen `generator` may stand in for the column list.
    fn check_column_list(&self, connector: &Connector) -> Result<()> {
        let generated = matches!(connector, Connector::Datagen { options } if options.contains_key("generator"));
        if self.columns.is_none() && !generated {
            return Err(Error::Syntax {
                message: format!(
                    "CREATE {} {} needs a column list; only connector = 'datagen' with a \
                     generator option may leave it out",
                    self.kind.name().to_uppercase(),
                    self.name
                ),
                line_col: None,
                position: None,
            });
        }
        Ok(())
    }

    fn includes(&self, connector: &Connector, columns: &[ColumnDef]) -> Result<Vec<IncludeDef>> {
        if !self.includes.is_empty() && matches!(connector, Connector::Datagen { .. }) {
            return Err(Error::unsupported(
                "INCLUDE with connector datagen",
                "INCLUDE adds Kafka message metadata; datagen has none.",
            ));
        }
        let mut includes: Vec<IncludeDef> = Vec::with_capacity(self.includes.len());
        for (kind, alias) in &self.includes {
            let column = match alias {
                Some(ident) => names::normalize(ident),
                None => kind.default_column().to_string(),
            };
            let taken = columns.iter().any(|c| c.name == column)
                || includes.iter().any(|i| i.column == column);
            if taken {
                return Err(Error::DuplicateColumn(format!(
                    "column \"{column}\" specified more than once"
                )));
            }
            includes.push(IncludeDef {
                kind: *kind,
                column,
            });
        }
        Ok(includes)
    }

    /// At most one watermark, on a timestamp column (declared or included).
    fn watermark(
        &self,
        columns: &[ColumnDef],
        includes: &[IncludeDef],
    ) -> Result<Option<WatermarkDef>> {
        let (column, expr) = match self.watermarks.as_slice() {
            [] => return Ok(None),
            [one] => one,
            _ => {
                return Err(Error::unsupported(
                    "more than one WATERMARK",
                    "Declare one WATERMARK FOR the event-time column.",
                ))
            }
        };
        let name = names::normalize(column);
        let sql_type = columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.sql_type.clone())
            .or_else(|| {
                includes
                    .iter()
                    .find(|i| i.column == name)
                    .map(|i| i.kind.sql_type())
            })
            .ok_or_else(|| {
                Error::UndefinedColumn(format!(
                    "column \"{name}\" named in WATERMARK does not exist"
                ))
            })?;
        if !matches!(sql_type, SqlType::Timestamp | SqlType::Timestamptz) {
            return Err(Error::DatatypeMismatch(format!(
                "WATERMARK column \"{name}\" must be of type timestamp or timestamp with time \
                 zone, not {}",
                sql_type.sql_name()
            )));
        }
        Ok(Some(WatermarkDef {
            column: name,
            expr: expr.to_string(),
        }))
    }

    fn format(&self, connector: &Connector, primary_key: &[usize]) -> Result<Option<SourceFormat>> {
        let Some(clause) = &self.format else {
            if let Connector::Datagen { .. } = connector {
                return Ok(None);
            }
            return Err(Error::Syntax {
                message: "connector kafka needs a FORMAT … ENCODE … clause, e.g. FORMAT PLAIN \
                          ENCODE JSON"
                    .to_string(),
                line_col: None,
                position: None,
            });
        };
        let encode = encode(clause)?;
        match clause.format {
            Format::Plain if self.kind == SourceKind::Source && !primary_key.is_empty() => {
                return Err(Error::unsupported(
                    "PRIMARY KEY on a source",
                    "A source is an append-only stream. To keep one row per key, use \
                     CREATE TABLE … (…, PRIMARY KEY (…)) WITH (…) FORMAT UPSERT ENCODE JSON.",
                ))
            }
            Format::Plain => {}
            Format::Upsert => self.check_upsert(connector, &encode, primary_key)?,
        }
        Ok(Some(SourceFormat {
            format: clause.format,
            encode,
        }))
    }

    fn check_upsert(&self, connector: &Connector, encode: &Encode, pk: &[usize]) -> Result<()> {
        if self.kind == SourceKind::Source {
            return Err(Error::unsupported(
                "FORMAT UPSERT on a source",
                "Only a table keeps rows to update: CREATE TABLE … (…, PRIMARY KEY (…)) \
                 WITH (…) FORMAT UPSERT ENCODE JSON.",
            ));
        }
        if let Connector::Datagen { .. } = connector {
            return Err(Error::unsupported(
                "FORMAT UPSERT with connector datagen",
                "Use FORMAT PLAIN, or leave FORMAT out for typed rows.",
            ));
        }
        if *encode != Encode::Json {
            return Err(Error::unsupported(
                "FORMAT UPSERT ENCODE CSV",
                "Use FORMAT UPSERT ENCODE JSON.",
            ));
        }
        if pk.is_empty() {
            return Err(Error::InvalidDefinition(format!(
                "FORMAT UPSERT needs a PRIMARY KEY: table \"{}\" must declare the columns the \
                 Kafka message key holds",
                self.name
            )));
        }
        Ok(())
    }
}

/// The connector and its options.
fn connector(options: &BTreeMap<String, String>) -> Result<Connector> {
    let name = options.get("connector").ok_or_else(|| {
        Error::InvalidParameter(format!(
            "option \"connector\" is required; {CONNECTORS_HINT}"
        ))
    })?;
    match name.to_ascii_lowercase().as_str() {
        "kafka" => kafka(options),
        "datagen" => Ok(Connector::Datagen {
            options: options
                .iter()
                .filter(|(k, _)| *k != "connector")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        _ => Err(Error::InvalidParameter(format!(
            "unknown connector \"{name}\"; {CONNECTORS_HINT}"
        ))),
    }
}

fn kafka(options: &BTreeMap<String, String>) -> Result<Connector> {
    let mut properties = BTreeMap::new();
    for (key, value) in options {
        if KAFKA_OPTIONS.contains(&key.as_str()) {
            continue;
        }
        match key.strip_prefix("properties.") {
            Some(name) if !name.is_empty() => {
                properties.insert(name.to_string(), value.clone());
            }
            _ => {
                return Err(Error::InvalidParameter(format!(
                    "unknown option \"{key}\" for connector kafka; the options are {} and \
                     properties.<librdkafka setting>",
                    KAFKA_OPTIONS[1..].join(", ")
                )))
            }
        }
    }
    let required = |key: &str| {
        options.get(key).cloned().ok_or_else(|| {
            Error::InvalidParameter(format!("connector kafka needs option \"{key}\""))
        })
    };
    Ok(Connector::Kafka {
        topic: required("topic")?,
        bootstrap_servers: required("properties.bootstrap.server")?,
        startup: startup_mode(options)?,
        properties,
    })
}

/// `scan.startup.mode` and `scan.startup.timestamp.millis`; earliest by default.
fn startup_mode(options: &BTreeMap<String, String>) -> Result<StartupMode> {
    let mode = options
        .get("scan.startup.mode")
        .map(|m| m.to_ascii_lowercase());
    let millis = match options.get("scan.startup.timestamp.millis") {
        Some(text) => Some(
            text.trim()
                .parse::<i64>()
                .ok()
                .filter(|ms| *ms >= 0)
                .ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "invalid value for option \"scan.startup.timestamp.millis\": \"{text}\"; \
                     expected milliseconds since 1970-01-01 UTC"
                    ))
                })?,
        ),
        None => None,
    };
    match (mode.as_deref(), millis) {
        (None | Some("timestamp"), Some(ms)) => Ok(StartupMode::Timestamp(ms)),
        (Some("timestamp"), None) => Err(Error::InvalidParameter(
            "scan.startup.mode 'timestamp' needs option \"scan.startup.timestamp.millis\""
                .to_string(),
        )),
        (Some(m @ ("earliest" | "latest")), Some(_)) => Err(Error::InvalidParameter(format!(
            "option \"scan.startup.timestamp.millis\" conflicts with scan.startup.mode '{m}'"
        ))),
        (None | Some("earliest"), None) => Ok(StartupMode::Earliest),
        (Some("latest"), None) => Ok(StartupMode::Latest),
        (Some(other), _) => Err(Error::InvalidParameter(format!(
            "invalid value for option \"scan.startup.mode\": \"{other}\"; expected earliest, \
             latest or timestamp"
        ))),
    }
}

/// `ENCODE JSON` or `ENCODE CSV [(delimiter = 'c', without_header = 'true')]`.
fn encode(clause: &FormatClause) -> Result<Encode> {
    if clause.encode == EncodeKind::Json {
        return Ok(Encode::Json);
    }
    let mut delimiter = b',';
    let mut header = false;
    for (key, value) in &clause.encode_options {
        match key.as_str() {
            "delimiter" => match value.as_bytes() {
                [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' && *b != b'"' => delimiter = *b,
                _ => {
                    return Err(Error::InvalidParameter(format!(
                        "CSV delimiter must be a single one-byte character other than a quote \
                         or newline, not \"{value}\""
                    )))
                }
            },
            "without_header" => header = !parse_bool(key, value)?,
            _ => {
                return Err(Error::InvalidParameter(format!(
                    "unknown ENCODE CSV option \"{key}\"; the options are delimiter and \
                     without_header"
                )))
            }
        }
    }
    Ok(Encode::Csv { delimiter, header })
}

/// PostgreSQL's spellings of a boolean option.
fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(Error::InvalidParameter(format!(
            "option \"{key}\" requires a Boolean value, not \"{value}\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};

    use super::*;

    const KAFKA: &str = "connector = 'kafka', topic = 'logins', \
                         properties.bootstrap.server = '127.0.0.1:9092'";

    fn parse(sql: &str) -> SourceStatement {
        match parse_source_statement(sql) {
            Ok(Some(statement)) => statement,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn create(sql: &str) -> CreateSource {
        match parse(sql) {
            SourceStatement::Create(create) => create,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn def(sql: &str) -> SourceDef {
        create(sql)
            .validate()
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The error of a statement that parses but does not check.
    fn invalid(sql: &str) -> Error {
        match create(sql).validate() {
            Err(e) => e,
            Ok(def) => panic!("{sql}: accepted as {def:?}"),
        }
    }

    /// The error of a statement that does not parse.
    fn unparsable(sql: &str) -> Error {
        match parse_source_statement(sql) {
            Err(e) => e,
            Ok(other) => panic!("{sql}: parsed as {other:?}"),
        }
    }

    fn kafka_source(columns: &str, rest: &str) -> String {
        format!("CREATE SOURCE s ({columns}) WITH ({KAFKA}) FORMAT PLAIN ENCODE JSON {rest}")
    }

    fn assert_error(err: &Error, sqlstate: &str, text: &str) {
        assert_eq!(err.sqlstate(), sqlstate, "{err}");
        let all = format!("{err} {}", err.hint().unwrap_or_default());
        assert!(all.contains(text), "{all:?} lacks {text:?}");
    }

    #[test]
    fn design_example_source() {
        let def = def("CREATE SOURCE logins (
                user_id VARCHAR, city VARCHAR, ip VARCHAR, ts TIMESTAMPTZ,
                WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
            ) WITH (
                connector = 'kafka', topic = 'logins',
                properties.bootstrap.server = '127.0.0.1:9092',
                scan.startup.mode = 'earliest'
            ) FORMAT PLAIN ENCODE JSON;");
        assert_eq!(def.name, "logins");
        assert_eq!(def.kind, SourceKind::Source);
        assert!(def.columns_declared);
        let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["user_id", "city", "ip", "ts"]);
        assert_eq!(def.columns[3].sql_type, SqlType::Timestamptz);
        assert_eq!(
            def.watermark,
            Some(WatermarkDef {
                column: "ts".into(),
                expr: "ts - INTERVAL '5 seconds'".into()
            })
        );
        assert_eq!(
            def.connector,
            Connector::Kafka {
                topic: "logins".into(),
                bootstrap_servers: "127.0.0.1:9092".into(),
                startup: StartupMode::Earliest,
                properties: BTreeMap::new(),
            }
        );
        assert_eq!(
            def.format,
            Some(SourceFormat {
                format: Format::Plain,
                encode: Encode::Json
            })
        );
        assert!(def.primary_key.is_empty() && def.includes.is_empty());
        assert!(!def.is_upsert());
    }

    #[test]
    fn names_fold_and_if_not_exists() {
        let c = create(&format!(
            "create source if not exists public.\"Mixed\" (\"A\" int, B int) with ({KAFKA}) \
             format plain encode json"
        ));
        assert!(c.if_not_exists);
        assert_eq!(c.name, "Mixed");
        let def = c.validate().expect("valid");
        assert_eq!(def.columns[0].name, "A");
        assert_eq!(def.columns[1].name, "b");
        let c = create(&kafka_source("a int", ""));
        assert!(!c.if_not_exists);
    }

    #[test]
    fn includes_with_default_and_given_names() {
        let def = def(&format!(
            "CREATE SOURCE s (v text) INCLUDE partition INCLUDE offset AS off \
             INCLUDE timestamp INCLUDE key AS \"K\" WITH ({KAFKA}) FORMAT PLAIN ENCODE JSON"
        ));
        let got: Vec<(IncludeKind, &str)> = def
            .includes
            .iter()
            .map(|i| (i.kind, i.column.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (IncludeKind::Partition, "_partition"),
                (IncludeKind::Offset, "off"),
                (IncludeKind::Timestamp, "_timestamp"),
                (IncludeKind::Key, "K"),
            ]
        );
        let schema = def.arrow_schema();
        let fields: Vec<(&str, &DataType, bool)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type(), f.is_nullable()))
            .collect();
        let tz = DataType::Timestamp(TimeUnit::Microsecond, Some(crate::types::UTC.into()));
        assert_eq!(
            fields,
            [
                ("v", &DataType::Utf8, true),
                ("_partition", &DataType::Int32, false),
                ("off", &DataType::Int64, false),
                ("_timestamp", &tz, true),
                ("K", &DataType::Utf8, true),
            ]
        );
    }

    #[test]
    fn include_errors() {
        let err = unparsable(&format!(
            "CREATE SOURCE s (v text) INCLUDE header WITH ({KAFKA}) FORMAT PLAIN ENCODE JSON"
        ));
        assert_error(&err, "0A000", "partition, offset, timestamp or key");
        let err = unparsable(&format!(
            "CREATE SOURCE s (v text) INCLUDE offset INCLUDE offset AS o WITH ({KAFKA}) \
             FORMAT PLAIN ENCODE JSON"
        ));
        assert_error(&err, "42601", "INCLUDE offset specified more than once");
        assert!(
            matches!(
                err,
                Error::Syntax {
                    position: Some(49),
                    ..
                }
            ),
            "{err:?}"
        );
        let err = invalid(&format!(
            "CREATE SOURCE s (_offset bigint) INCLUDE offset WITH ({KAFKA}) \
             FORMAT PLAIN ENCODE JSON"
        ));
        assert_error(&err, "42701", "column \"_offset\" specified more than once");
        let err = invalid(&format!(
            "CREATE SOURCE s (v text) INCLUDE key AS k INCLUDE partition AS k WITH ({KAFKA}) \
             FORMAT PLAIN ENCODE JSON"
        ));
        assert_error(&err, "42701", "column \"k\"");
    }

    #[test]
    fn option_keys_and_values() {
        let c = create(
            "CREATE SOURCE s (a int) WITH (Connector = kafka, 'TOPIC' = 't', \
             properties.bootstrap.server = 'h:1', Properties.Queued.Min.Messages = 1000, \
             properties.enable.partition.eof = false, properties.x = -5, \
             properties.client.id = E'a\\tb') FORMAT PLAIN ENCODE JSON",
        );
        let keys: Vec<&str> = c.options.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "connector",
                "topic",
                "properties.bootstrap.server",
                "properties.queued.min.messages",
                "properties.enable.partition.eof",
                "properties.x",
                "properties.client.id",
            ]
        );
        let def = c.validate().expect("valid");
        let Connector::Kafka {
            topic,
            bootstrap_servers,
            properties,
            ..
        } = def.connector
        else {
            panic!("not kafka: {:?}", def.connector);
        };
        assert_eq!((topic.as_str(), bootstrap_servers.as_str()), ("t", "h:1"));
        let expected: BTreeMap<String, String> = [
            ("queued.min.messages", "1000"),
            ("enable.partition.eof", "false"),
            ("x", "-5"),
            ("client.id", "a\tb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(properties, expected);
    }

    #[test]
    fn option_syntax_errors_carry_a_position() {
        let sql = format!("CREATE SOURCE s (a int) WITH ({KAFKA}, TOPIC = 'again')");
        let err = unparsable(&sql);
        assert_error(&err, "42601", "option \"topic\" specified more than once");
        let at = sql.find("TOPIC").expect("in text") + 1;
        assert!(
            matches!(err, Error::Syntax { position: Some(p), .. } if p == at),
            "{err:?}"
        );

        let err = unparsable("CREATE SOURCE s (a int) WITH (topic 't')");
        assert_error(&err, "42601", "syntax error at or near \"'t'\"");
        assert!(
            matches!(
                err,
                Error::Syntax {
                    position: Some(37),
                    ..
                }
            ),
            "{err:?}"
        );

        let err = unparsable("CREATE SOURCE s (a int) WITH (topic = )");
        assert_error(&err, "42601", "syntax error at or near \")\"");
        let err = unparsable("CREATE SOURCE s (a int) WITH (topic = 't'");
        assert_error(&err, "42601", "syntax error at end of input");
        let err = unparsable("CREATE SOURCE s (a int) WITH (properties. = 'x')");
        assert_error(&err, "42601", "syntax error");
    }

    #[test]
    fn startup_modes() {
        let startup = |opts: &str| -> Result<StartupMode> {
            let sql =
                format!("CREATE SOURCE s (a int) WITH ({KAFKA}{opts}) FORMAT PLAIN ENCODE JSON");
            match create(&sql).validate()?.connector {
                Connector::Kafka { startup, .. } => Ok(startup),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(startup("").ok(), Some(StartupMode::Earliest));
        assert_eq!(
            startup(", scan.startup.mode = 'EARLIEST'").ok(),
            Some(StartupMode::Earliest)
        );
        assert_eq!(
            startup(", scan.startup.mode = latest").ok(),
            Some(StartupMode::Latest)
        );
        assert_eq!(
            startup(", scan.startup.timestamp.millis = '1700000000000'").ok(),
            Some(StartupMode::Timestamp(1_700_000_000_000))
        );
        assert_eq!(
            startup(", scan.startup.mode = 'timestamp', scan.startup.timestamp.millis = 5").ok(),
            Some(StartupMode::Timestamp(5))
        );
        let cases = [
            (
                ", scan.startup.mode = 'newest'",
                "\"scan.startup.mode\": \"newest\"",
            ),
            (", scan.startup.mode = 'timestamp'", "needs option"),
            (
                ", scan.startup.mode = 'latest', scan.startup.timestamp.millis = 5",
                "conflicts with scan.startup.mode 'latest'",
            ),
            (", scan.startup.timestamp.millis = 'soon'", "\"soon\""),
            (", scan.startup.timestamp.millis = -1", "\"-1\""),
        ];
        for (opts, text) in cases {
            let err = startup(opts).expect_err(opts);
            assert_error(&err, "22023", text);
        }
    }

    #[test]
    fn kafka_option_errors() {
        let sql =
            |opts: &str| format!("CREATE SOURCE s (a int) WITH ({opts}) FORMAT PLAIN ENCODE JSON");
        let err = invalid(&sql(
            "connector = 'kafka', properties.bootstrap.server = 'h:1'",
        ));
        assert_error(&err, "22023", "connector kafka needs option \"topic\"");
        let err = invalid(&sql("connector = 'kafka', topic = 't'"));
        assert_error(
            &err,
            "22023",
            "connector kafka needs option \"properties.bootstrap.server\"",
        );
        let err = invalid(&sql(&format!("{KAFKA}, group = 'g'")));
        assert_error(
            &err,
            "22023",
            "unknown option \"group\" for connector kafka",
        );
        assert_error(&err, "22023", "properties.<librdkafka setting>");
        let err = invalid(&sql(&format!("{KAFKA}, properties = 'x'")));
        assert_error(&err, "22023", "unknown option \"properties\"");
    }

    #[test]
    fn connector_errors() {
        let err = invalid("CREATE SOURCE s (a int) WITH (connector = 'pulsar', topic = 't')");
        assert_error(&err, "22023", "unknown connector \"pulsar\"");
        assert_error(&err, "22023", "kafka and datagen");
        let err = invalid("CREATE SOURCE s (a int) WITH (topic = 't') FORMAT PLAIN ENCODE JSON");
        assert_error(&err, "22023", "option \"connector\" is required");
        let err = invalid(&format!("CREATE SOURCE s (a int) WITH ({KAFKA})"));
        assert_error(&err, "42601", "FORMAT");
        let err = unparsable("CREATE SOURCE s (a int) FORMAT PLAIN ENCODE JSON");
        assert_error(&err, "42601", "syntax error at or near \"FORMAT\"");
    }

    #[test]
    fn csv_encoding() {
        let encode = |clause: &str| -> Result<Encode> {
            let sql = format!("CREATE SOURCE s (a int, b text) WITH ({KAFKA}) {clause}");
            let format = create(&sql).validate()?.format.expect("has format");
            assert_eq!(format.format, Format::Plain);
            Ok(format.encode)
        };
        assert_eq!(
            encode("FORMAT PLAIN ENCODE CSV").ok(),
            Some(Encode::Csv {
                delimiter: b',',
                header: false
            })
        );
        assert_eq!(
            encode("FORMAT PLAIN ENCODE CSV (delimiter = '|', without_header = 'false')").ok(),
            Some(Encode::Csv {
                delimiter: b'|',
                header: true
            })
        );
        assert_eq!(
            encode("format plain encode csv (delimiter = E'\\t', without_header = true)").ok(),
            Some(Encode::Csv {
                delimiter: b'\t',
                header: false
            })
        );
        let cases = [
            ("(delimiter = ';;')", "\";;\""),
            ("(delimiter = '\"')", "delimiter"),
            ("(delimiter = 'é')", "\"é\""),
            ("(without_header = 'maybe')", "requires a Boolean value"),
            ("(quote = '\"')", "unknown ENCODE CSV option \"quote\""),
        ];
        for (options, text) in cases {
            let err = encode(&format!("FORMAT PLAIN ENCODE CSV {options}")).expect_err(options);
            assert_error(&err, "22023", text);
        }
        let err = unparsable(&format!(
            "CREATE SOURCE s (a int) WITH ({KAFKA}) FORMAT PLAIN ENCODE JSON (x = 1)"
        ));
        assert_error(&err, "42601", "syntax error at or near \"(\"");
    }

    #[test]
    fn unknown_format_and_encode() {
        let err = unparsable(&format!(
            "CREATE SOURCE s (a int) WITH ({KAFKA}) FORMAT debezium ENCODE JSON"
        ));
        assert_error(&err, "0A000", "FORMAT PLAIN or FORMAT UPSERT");
        let err = unparsable(&format!(
            "CREATE SOURCE s (a int) WITH ({KAFKA}) FORMAT PLAIN ENCODE avro"
        ));
        assert_error(&err, "0A000", "ENCODE AVRO is not supported");
        let err = unparsable(&format!(
            "CREATE SOURCE s (a int) WITH ({KAFKA}) FORMAT PLAIN JSON"
        ));
        assert_error(&err, "42601", "syntax error at or near \"JSON\"");
    }

    #[test]
    fn upsert_tables() {
        let def = def(&format!(
            "CREATE TABLE campaigns (ad_id varchar, campaign_id varchar, PRIMARY KEY (ad_id)) \
             WITH ({KAFKA}) FORMAT UPSERT ENCODE JSON"
        ));
        assert_eq!(def.kind, SourceKind::Table);
        assert_eq!(def.primary_key, [0]);
        assert!(def.columns[0].not_null);
        assert!(def.is_upsert());
        let def = super::tests::def(&format!(
            "CREATE TABLE c (k int, v int PRIMARY KEY) WITH ({KAFKA}) FORMAT UPSERT ENCODE JSON"
        ));
        assert_eq!(def.primary_key, [1]);

        let err = invalid(&format!(
            "CREATE TABLE c (k int, v int) WITH ({KAFKA}) FORMAT UPSERT ENCODE JSON"
        ));
        assert_error(&err, "42P16", "FORMAT UPSERT needs a PRIMARY KEY");
        let err = invalid(&format!(
            "CREATE SOURCE c (k int PRIMARY KEY) WITH ({KAFKA}) FORMAT UPSERT ENCODE JSON"
        ));
        assert_error(&err, "0A000", "Only a table");
        let err = invalid(&format!(
            "CREATE TABLE c (k int PRIMARY KEY) WITH ({KAFKA}) FORMAT UPSERT ENCODE CSV"
        ));
        assert_error(&err, "0A000", "FORMAT UPSERT ENCODE CSV");
        let err = invalid(
            "CREATE TABLE c (k int PRIMARY KEY) WITH (connector = 'datagen') \
             FORMAT UPSERT ENCODE JSON",
        );
        assert_error(&err, "0A000", "FORMAT UPSERT with connector datagen");
        let err = invalid(&format!(
            "CREATE TABLE c (k int PRIMARY KEY, PRIMARY KEY (k)) WITH ({KAFKA}) \
             FORMAT UPSERT ENCODE JSON"
        ));
        assert_error(&err, "42P16", "multiple primary keys");
    }

    #[test]
    fn primary_key_only_on_tables() {
        let err = invalid(&kafka_source("k int, PRIMARY KEY (k)", ""));
        assert_error(&err, "0A000", "PRIMARY KEY on a source");
        let def = def(&format!(
            "CREATE TABLE t (k int PRIMARY KEY) WITH ({KAFKA}) FORMAT PLAIN ENCODE JSON"
        ));
        assert_eq!(
            (def.kind, def.primary_key.as_slice()),
            (SourceKind::Table, &[0][..])
        );
        let err = invalid(&kafka_source("k int, PRIMARY KEY (nope)", ""));
        assert_error(&err, "42703", "\"nope\"");
    }

    #[test]
    fn datagen() {
        let def = def("CREATE SOURCE g (id bigint, name text) \
                       WITH (connector = 'DataGen', rows.per.second = 1000, seed = 7, \
                       fields.id.kind = 'sequence')");
        assert_eq!(def.format, None);
        let expected: BTreeMap<String, String> = [
            ("fields.id.kind", "sequence"),
            ("rows.per.second", "1000"),
            ("seed", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(def.connector, Connector::Datagen { options: expected });

        let def = super::tests::def(
            "CREATE SOURCE logins WITH (connector = 'datagen', generator = 'logins')",
        );
        assert!(!def.columns_declared && def.columns.is_empty());
        assert_eq!(def.arrow_schema().fields().len(), 0);

        let def = super::tests::def(
            "CREATE TABLE clicks WITH (connector = 'datagen', generator = 'page_clicks') \
             FORMAT PLAIN ENCODE JSON",
        );
        assert_eq!(def.kind, SourceKind::Table);
        assert_eq!(def.format.map(|f| f.encode), Some(Encode::Json));

        let err = invalid("CREATE SOURCE g WITH (connector = 'datagen')");
        assert_error(&err, "42601", "needs a column list");
        let err = invalid(&format!(
            "CREATE SOURCE g WITH ({KAFKA}) FORMAT PLAIN ENCODE JSON"
        ));
        assert_error(&err, "42601", "needs a column list");
        let err = invalid(
            "CREATE SOURCE g (a int) INCLUDE offset WITH (connector = 'datagen', seed = 1)",
        );
        assert_error(&err, "0A000", "INCLUDE with connector datagen");
    }

    #[test]
    fn watermarks() {
        let def = def(&kafka_source(
            "ts timestamp, v int, watermark for TS as ts - interval '1 minute'",
            "",
        ));
        assert_eq!(
            def.watermark.map(|w| (w.column, w.expr)),
            Some(("ts".into(), "ts - INTERVAL '1 minute'".into()))
        );
        // A column named watermark is still a column.
        let def = super::tests::def(&kafka_source("watermark timestamptz", ""));
        assert_eq!(def.columns[0].name, "watermark");
        // The Kafka timestamp can carry the watermark.
        let def = super::tests::def(&format!(
            "CREATE SOURCE s (v int, WATERMARK FOR _timestamp AS _timestamp) \
             INCLUDE timestamp WITH ({KAFKA}) FORMAT PLAIN ENCODE JSON"
        ));
        assert_eq!(def.watermark.map(|w| w.column), Some("_timestamp".into()));

        let err = invalid(&kafka_source("v int, WATERMARK FOR v AS v - 1", ""));
        assert_error(&err, "42804", "not integer");
        let err = invalid(&kafka_source("v int, WATERMARK FOR ts AS ts", ""));
        assert_error(
            &err,
            "42703",
            "column \"ts\" named in WATERMARK does not exist",
        );
        let err = invalid(&kafka_source(
            "a timestamp, b timestamp, WATERMARK FOR a AS a, WATERMARK FOR b AS b",
            "",
        ));
        assert_error(&err, "0A000", "more than one WATERMARK");
        let err = unparsable(&kafka_source("ts timestamp, WATERMARK FOR ts ts", ""));
        assert_error(&err, "42601", "syntax error at or near \"ts\"");
    }

    #[test]
    fn column_errors_come_from_the_create_table_path() {
        let err = invalid(&kafka_source("a int, A text", ""));
        assert_error(&err, "42701", "column \"a\" specified more than once");
        let err = invalid(&kafka_source("a int[]", ""));
        assert_eq!(err.sqlstate(), "0A000", "{err}");
        let err = invalid(&kafka_source("a int UNIQUE", ""));
        assert_eq!(err.sqlstate(), "0A000", "{err}");
        let err = invalid(&kafka_source("a int DEFAULT 1", ""));
        assert_error(&err, "0A000", "DEFAULT on source column \"a\"");
        let def = def(&kafka_source(
            "a int NOT NULL, b numeric(10,2), c jsonb",
            "",
        ));
        assert!(def.columns[0].not_null);
        let schema = def.arrow_schema();
        assert!(!schema.field(0).is_nullable());
        assert_eq!(schema.field(1).data_type(), &DataType::Decimal128(10, 2));
        assert_eq!(
            schema.field(2).metadata().get(crate::types::SQL_TYPE_KEY),
            Some(&"jsonb".to_string())
        );
    }

    #[test]
    fn column_list_syntax() {
        let c = create(&kafka_source("", ""));
        assert_eq!(c.columns, Some(Vec::new()));
        for bad in ["a int,", "a", "a int b int", "1 int"] {
            let err = unparsable(&kafka_source(bad, ""));
            assert_eq!(err.sqlstate(), "42601", "{bad}: {err}");
            assert!(
                matches!(
                    err,
                    Error::Syntax {
                        position: Some(_),
                        ..
                    }
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn connector_tables_are_recognised() {
        let c = create(&format!(
            "CREATE TABLE IF NOT EXISTS t (a int, b int) WITH ({KAFKA}) FORMAT PLAIN ENCODE JSON"
        ));
        assert_eq!(
            (c.kind, c.if_not_exists, c.name.as_str()),
            (SourceKind::Table, true, "t")
        );
        let c = create(&format!(
            "CREATE TABLE t (a int) INCLUDE offset WITH ({KAFKA}) FORMAT PLAIN ENCODE JSON"
        ));
        assert_eq!(c.includes, [(IncludeKind::Offset, None)]);
        let c = create("CREATE TABLE t (a int) WITH ('connector' = 'datagen')");
        assert_eq!(c.kind, SourceKind::Table);
        // FORMAT names a connector table even when the connector is missing.
        let err = invalid("CREATE TABLE t (a int) WITH (topic = 't') FORMAT PLAIN ENCODE JSON");
        assert_error(&err, "22023", "option \"connector\" is required");
    }

    #[test]
    fn ordinary_sql_is_left_alone() {
        let statements = [
            "SELECT 1",
            "select * from logins where ts > now()",
            "CREATE TABLE t (a int)",
            "CREATE TABLE t (a int PRIMARY KEY, b text DEFAULT 'x')",
            "CREATE TABLE t (a int) WITH (fillfactor = 70)",
            "CREATE TABLE t (a int) WITH (comment = 'connector')",
            "CREATE TABLE t AS SELECT 1",
            "CREATE TABLE t (a int",
            "CREATE MATERIALIZED VIEW v AS SELECT count(*) FROM logins",
            "CREATE VIEW source AS SELECT 1",
            "INSERT INTO source VALUES (1)",
            "DROP TABLE t",
            "DROP MATERIALIZED VIEW v",
            "SHOW TABLES",
            "SHOW source_timeout",
            "SELEC 1",
            "SELECT 'unterminated",
            "",
            "   ",
        ];
        for sql in statements {
            assert!(
                matches!(parse_source_statement(sql), Ok(None)),
                "{sql}: {:?}",
                parse_source_statement(sql)
            );
        }
    }

    #[test]
    fn drop_and_show() {
        assert_eq!(
            parse("DROP SOURCE s"),
            SourceStatement::Drop {
                names: vec!["s".into()],
                if_exists: false,
                cascade: false
            }
        );
        assert_eq!(
            parse("drop source if exists A, public.b, \"C\" cascade;"),
            SourceStatement::Drop {
                names: vec!["a".into(), "b".into(), "C".into()],
                if_exists: true,
                cascade: true
            }
        );
        assert_eq!(
            parse("DROP SOURCE s RESTRICT"),
            SourceStatement::Drop {
                names: vec!["s".into()],
                if_exists: false,
                cascade: false
            }
        );
        assert_eq!(parse("SHOW SOURCES"), SourceStatement::Show);
        assert_eq!(parse("  show sources ;; "), SourceStatement::Show);

        let err = unparsable("DROP SOURCE");
        assert_error(&err, "42601", "syntax error at end of input");
        let err = unparsable("DROP SOURCE s t");
        assert_error(&err, "42601", "syntax error at or near \"t\"");
        let err = unparsable("SHOW SOURCES LIKE 'x'");
        assert_error(&err, "42601", "syntax error at or near \"LIKE\"");
        let err = unparsable("DROP SOURCE other.s");
        assert_eq!(err.sqlstate(), "42P01");
    }

    #[test]
    fn one_statement_only() {
        let err = unparsable(&format!("{}; SELECT 1", kafka_source("a int", "")));
        assert_error(&err, "42601", "syntax error at or near \"SELECT\"");
    }

    #[test]
    fn definitions_survive_serde() {
        let defs = [
            def(&format!(
                "CREATE SOURCE s (ts timestamptz, v text, WATERMARK FOR ts AS ts - INTERVAL '5 \
                 seconds') INCLUDE key INCLUDE partition AS p WITH ({KAFKA}, \
                 scan.startup.timestamp.millis = 42, properties.fetch.min.bytes = 1) \
                 FORMAT PLAIN ENCODE CSV (delimiter = ';')"
            )),
            def(&format!(
                "CREATE TABLE t (k text PRIMARY KEY, v int) WITH ({KAFKA}, \
                 scan.startup.mode = latest) FORMAT UPSERT ENCODE JSON"
            )),
            def("CREATE SOURCE g WITH (connector = 'datagen', generator = 'ad_events')"),
        ];
        for def in defs {
            let json = serde_json::to_string(&def).expect("serializes");
            let back: SourceDef = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, def);
            assert_eq!(back.arrow_schema(), def.arrow_schema());
        }
    }
}
