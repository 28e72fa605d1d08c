//! The one error enum of EddyDB and its SQLSTATE mapping.
//!
//! Every layer returns [`Error`]; only the protocol layer turns it into a
//! Postgres `ErrorResponse`. Messages follow PostgreSQL's wording where a
//! PostgreSQL user would recognise the situation, and carry a hint where the
//! fix is not obvious.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Syntax {
        message: String,
        /// 1-based line and column reported by the parser.
        line_col: Option<(usize, usize)>,
        /// 1-based character offset into the statement text, once known.
        position: Option<usize>,
    },
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    #[error("{0}")]
    UndefinedColumn(String),
    /// DROP TABLE of a table that is not there.
    #[error("table \"{0}\" does not exist")]
    UndefinedTableToDrop(String),
    /// DROP [MATERIALIZED] VIEW of a view that is not there.
    #[error("{kind} \"{name}\" does not exist")]
    UndefinedViewToDrop { kind: &'static str, name: String },
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    #[error("{0}")]
    DuplicateColumn(String),
    #[error("{0}")]
    AmbiguousColumn(String),
    #[error("{0}")]
    UndefinedFunction(String),
    #[error("{0}")]
    UndefinedObject(String),
    #[error("{0}")]
    DuplicateFunction(String),
    #[error("{0}")]
    InvalidFunction(String),
    #[error("{0}")]
    Grouping(String),
    #[error("{0}")]
    InvalidDefinition(String),
    #[error("{0}")]
    DatatypeMismatch(String),
    #[error("{0}")]
    InvalidText(String),
    #[error("{0}")]
    NumericOutOfRange(String),
    #[error("{0}")]
    StringTooLong(String),
    #[error("{0}")]
    InvalidDatetime(String),
    #[error("division by zero")]
    DivisionByZero,
    #[error("{0}")]
    DataException(String),
    #[error("{message}")]
    BadCopyData {
        sqlstate: &'static str,
        message: String,
        /// Where in the input, e.g. `COPY t, line 3, column b`.
        context: Option<String>,
    },
    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNull { table: String, column: String },
    #[error("duplicate key value violates unique constraint \"{constraint}\"")]
    UniqueViolation { constraint: String, detail: String },
    #[error("{feature} is not supported")]
    FeatureNotSupported {
        feature: String,
        hint: Option<String>,
    },
    #[error("{0}")]
    InvalidParameter(String),
    /// A function called with arguments it cannot use (22023), with what
    /// would work.
    #[error("{message}")]
    InvalidArgument { message: String, hint: String },
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownSetting(String),
    #[error("{0}")]
    Planning(String),
    #[error("database \"{0}\" does not exist")]
    UndefinedDatabase(String),
    #[error("sorry, too many clients already")]
    TooManyConnections,
    #[error("{0}")]
    ProtocolViolation(String),
    #[error("{0}")]
    MessageTooLarge(String),
    #[error("canceling statement due to user request")]
    QueryCanceled,
    #[error("{0}")]
    ResourcesExhausted(String),
    #[error("{0}")]
    SerializationFailure(String),
    #[error("cannot drop {object} because other objects depend on it")]
    DependentObjects {
        object: String,
        /// One line per dependant, e.g. `materialized view v depends on table t`.
        dependents: Vec<String>,
        cascade_hint: String,
    },
    #[error("{0}")]
    WrongObjectType(String),
    #[error("materialized view \"{name}\" has failed: {reason}")]
    ViewFailed {
        name: String,
        reason: String,
        /// It failed for needing more memory than `--memory-limit` allows.
        out_of_memory: bool,
    },
    /// Creating a view would take the state of all views over
    /// `--memory-limit`.
    #[error("{0}")]
    MemoryLimit(String),
    /// An external system a source reads from cannot be reached or used
    /// (broker down, topic missing).
    #[error("{message}")]
    SourceUnavailable { message: String, hint: String },
    /// A source cannot be read like a table.
    #[error("{message}")]
    SourceNotQueryable { message: String, hint: String },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}. This is a bug in EddyDB; please report it")]
    Internal(String),
}

impl Error {
    /// The SQLSTATE sent to the client. Exhaustive on purpose: a new variant
    /// must choose its code.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Syntax { .. } => "42601",
            Error::UndefinedTable(_)
            | Error::UndefinedTableToDrop(_)
            | Error::UndefinedViewToDrop { .. } => "42P01",
            Error::UndefinedColumn(_) => "42703",
            Error::DuplicateTable(_) => "42P07",
            Error::DuplicateColumn(_) => "42701",
            Error::AmbiguousColumn(_) => "42702",
            Error::UndefinedFunction(_) => "42883",
            Error::UndefinedObject(_) => "42704",
            Error::DuplicateFunction(_) => "42723",
            Error::InvalidFunction(_) => "42P13",
            Error::Grouping(_) => "42803",
            Error::InvalidDefinition(_) => "42P16",
            Error::DatatypeMismatch(_) => "42804",
            Error::InvalidText(_) => "22P02",
            Error::NumericOutOfRange(_) => "22003",
            Error::StringTooLong(_) => "22001",
            Error::InvalidDatetime(_) => "22007",
            Error::DivisionByZero => "22012",
            Error::DataException(_) => "22000",
            Error::BadCopyData { sqlstate, .. } => sqlstate,
            Error::NotNull { .. } => "23502",
            Error::UniqueViolation { .. } => "23505",
            Error::FeatureNotSupported { .. } => "0A000",
            Error::InvalidParameter(_) | Error::InvalidArgument { .. } => "22023",
            Error::UnknownSetting(_) => "42704",
            Error::Planning(_) => "42000",
            Error::UndefinedDatabase(_) => "3D000",
            Error::TooManyConnections => "53300",
            Error::ProtocolViolation(_) => "08P01",
            Error::MessageTooLarge(_) => "54000",
            Error::QueryCanceled => "57014",
            Error::ResourcesExhausted(_) => "53200",
            Error::SerializationFailure(_) => "40001",
            Error::DependentObjects { .. } => "2BP01",
            Error::WrongObjectType(_) => "42809",
            Error::ViewFailed {
                out_of_memory: true,
                ..
            }
            | Error::MemoryLimit(_) => "53200",
            Error::ViewFailed { .. } => "55000",
            Error::SourceUnavailable { .. } => "08001",
            Error::SourceNotQueryable { .. } => "42809",
            Error::Storage(_) => "58030",
            Error::Internal(_) => "XX000",
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Error::FeatureNotSupported { hint, .. } => hint.clone(),
            Error::UndefinedTable(_) => {
                Some("SHOW TABLES lists the relations that exist.".to_string())
            }
            Error::TooManyConnections => {
                Some("Close idle connections or raise --max-connections.".to_string())
            }
            Error::UnknownSetting(_) => Some("SHOW ALL lists the settings.".to_string()),
            Error::SerializationFailure(_) => {
                Some("Another statement changed these rows meanwhile; retry.".to_string())
            }
            Error::DependentObjects { cascade_hint, .. } => Some(cascade_hint.clone()),
            Error::SourceUnavailable { hint, .. }
            | Error::SourceNotQueryable { hint, .. }
            | Error::InvalidArgument { hint, .. } => Some(hint.clone()),
            Error::MemoryLimit(_) => Some(
                "Raise --memory-limit, or drop materialized views that are no longer needed \
                 (eddy_catalog.views shows what each one holds)."
                    .to_string(),
            ),
            Error::ViewFailed {
                name,
                out_of_memory: true,
                ..
            } => Some(format!(
                "Raise --memory-limit or drop views that are no longer needed \
                 (eddy_catalog.views shows what each one holds), then DROP MATERIALIZED VIEW \
                 {name} and create it again."
            )),
            Error::ViewFailed { name, .. } => Some(format!(
                "DROP MATERIALIZED VIEW {name} and create it again once the cause is fixed."
            )),
            _ => None,
        }
    }

    pub fn context(&self) -> Option<String> {
        match self {
            Error::BadCopyData { context, .. } => context.clone(),
            _ => None,
        }
    }

    pub fn detail(&self) -> Option<String> {
        match self {
            Error::UniqueViolation { detail, .. } => Some(detail.clone()),
            Error::DependentObjects { dependents, .. } => Some(dependents.join("\n")),
            _ => None,
        }
    }

    /// Errors that end the session (the protocol layer closes the socket).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::UndefinedDatabase(_) | Error::TooManyConnections | Error::MessageTooLarge(_)
        )
    }

    pub fn unsupported(feature: impl Into<String>, hint: impl Into<String>) -> Error {
        Error::FeatureNotSupported {
            feature: feature.into(),
            hint: Some(hint.into()),
        }
    }

    /// Fill in the character position of a syntax error from its line and column.
    pub fn with_statement_text(self, sql: &str) -> Error {
        match self {
            Error::Syntax {
                message,
                line_col: Some((line, col)),
                position: None,
            } => {
                let position = char_offset(sql, line, col);
                Error::Syntax {
                    message,
                    line_col: Some((line, col)),
                    position,
                }
            }
            other => other,
        }
    }
}

/// 1-based character offset of a 1-based (line, column) in `sql`.
fn char_offset(sql: &str, line: usize, col: usize) -> Option<usize> {
    let mut offset = 0;
    for (i, text) in sql.split('\n').enumerate() {
        if i + 1 == line {
            return Some(offset + col.min(text.chars().count() + 1));
        }
        offset += text.chars().count() + 1;
    }
    None
}

/// Line and column out of sqlparser's "... at Line: 3, Column: 14" suffix.
fn parse_line_col(message: &str) -> Option<(usize, usize)> {
    let at = message.rfind("Line: ")?;
    let rest = &message[at + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

impl From<ParserError> for Error {
    fn from(err: ParserError) -> Error {
        let text = match err {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => {
                return Error::Syntax {
                    message: "statement is nested too deeply".to_string(),
                    line_col: None,
                    position: None,
                }
            }
        };
        let line_col = parse_line_col(&text);
        let text = match text.find(" at Line: ") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        // sqlparser says "Expected: X, found: Y"; PostgreSQL users read
        // `syntax error at or near "Y"`.
        let message = match text.rsplit_once(", found: ") {
            Some((_, "EOF")) => "syntax error at end of input".to_string(),
            Some((_, token)) => format!("syntax error at or near \"{token}\""),
            None => format!("syntax error: {text}"),
        };
        Error::Syntax {
            message,
            line_col,
            position: None,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(err: sled::Error) -> Error {
        Error::Storage(err.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(err: datafusion::arrow::error::ArrowError) -> Error {
        from_arrow(err)
    }
}

fn from_arrow(err: datafusion::arrow::error::ArrowError) -> Error {
    use datafusion::arrow::error::ArrowError as A;
    match err {
        A::CastError(m) | A::ParseError(m) => Error::InvalidText(pg_cast_message(m)),
        A::DivideByZero => Error::DivisionByZero,
        A::ArithmeticOverflow(m) => Error::NumericOutOfRange(m),
        A::ComputeError(m) if m.contains("verflow") => Error::NumericOutOfRange(m),
        A::ExternalError(e) => match e.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::DataException(other.to_string()),
        },
        A::MemoryError(m) => Error::ResourcesExhausted(m),
        other => Error::DataException(other.to_string()),
    }
}

impl From<DataFusionError> for Error {
    fn from(err: DataFusionError) -> Error {
        from_datafusion(err)
    }
}

/// Arrow's "Cannot cast string 'abc' to value of Int32 type" in PostgreSQL's words.
fn pg_cast_message(m: String) -> String {
    let Some(rest) = m
        .split("Cannot cast string '")
        .nth(1)
        .or_else(|| m.split("Cannot cast value '").nth(1))
    else {
        return m;
    };
    let Some((value, rest)) = rest.split_once("' to value of ") else {
        return m;
    };
    let arrow = rest.trim_end_matches(" type").trim();
    let pg = match arrow {
        "Int16" => "smallint",
        "Int32" => "integer",
        "Int64" => "bigint",
        "Float32" => "real",
        "Float64" => "double precision",
        "Boolean" => "boolean",
        "Date32" => "date",
        a if a.starts_with("Decimal") => "numeric",
        a if a.starts_with("Timestamp") => "timestamp",
        a if a.starts_with("Interval") => "interval",
        _ => return m,
    };
    format!("invalid input syntax for type {pg}: \"{value}\"")
}

fn from_datafusion(err: DataFusionError) -> Error {
    use datafusion::common::SchemaError;
    match err {
        DataFusionError::SQL(e, _) => Error::from(*e),
        DataFusionError::ArrowError(e, _) => from_arrow(*e),
        DataFusionError::SchemaError(e, _) => match *e {
            SchemaError::FieldNotFound { field, .. } => {
                Error::UndefinedColumn(format!("column \"{}\" does not exist", field.name))
            }
            SchemaError::AmbiguousReference { field } => {
                Error::AmbiguousColumn(format!("column reference \"{}\" is ambiguous", field.name))
            }
            SchemaError::DuplicateQualifiedField { name, .. }
            | SchemaError::DuplicateUnqualifiedField { name } => {
                Error::DuplicateColumn(format!("column \"{name}\" specified more than once"))
            }
        },
        DataFusionError::NotImplemented(m) => Error::FeatureNotSupported {
            feature: m,
            hint: None,
        },
        DataFusionError::Plan(m) => from_plan_message(m),
        DataFusionError::Execution(m) => from_execution_message(m),
        DataFusionError::ResourcesExhausted(m) => Error::ResourcesExhausted(m),
        DataFusionError::External(e) => match e.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => match other.downcast::<DataFusionError>() {
                Ok(df) => from_datafusion(*df),
                Err(other) => Error::DataException(other.to_string()),
            },
        },
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            from_datafusion(*inner)
        }
        DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
            Ok(e) => from_datafusion(e),
            Err(shared) => from_plan_message(shared.to_string()),
        },
        DataFusionError::Collection(mut errs) if !errs.is_empty() => {
            from_datafusion(errs.remove(0))
        }
        DataFusionError::Internal(m) => Error::Internal(m),
        other => Error::DataException(other.to_string()),
    }
}

fn from_plan_message(m: String) -> Error {
    let m = match m.strip_prefix("Error during planning: ") {
        Some(rest) => rest.to_string(),
        None => m,
    };
    if let Some(rest) = m.strip_prefix("table '") {
        if let Some(name) = rest.strip_suffix("' not found") {
            let short = name.rsplit('.').next().unwrap_or(name);
            return Error::UndefinedTable(short.to_string());
        }
    }
    if let Some(rest) = m.strip_prefix("Invalid function '") {
        let name = rest.split('\'').next().unwrap_or(rest);
        return Error::UndefinedFunction(format!("function {name} does not exist"));
    }
    if m.contains("Invalid function")
        || m.contains("Unknown function")
        || m.contains("No function matches the given name and argument types")
    {
        return Error::UndefinedFunction(m);
    }
    if let Some((_, ty)) = m.split_once("non-boolean predicate") {
        let arrow = ty.rsplit(' ').next().unwrap_or_default();
        let field = datafusion::arrow::datatypes::Field::new("x", arrow_type_named(arrow), true);
        let pg =
            crate::types::SqlType::of_field(&field).map_or(arrow.to_string(), |t| t.sql_name());
        return Error::DatatypeMismatch(format!(
            "argument of WHERE must be type boolean, not type {pg}"
        ));
    }
    if m.contains("coerc") || m.contains("Cannot infer common") || m.contains("type mismatch") {
        return Error::DatatypeMismatch(m);
    }
    if m.contains("GROUP BY") || m.contains("aggregate") && m.contains("must appear") {
        return Error::Grouping(m);
    }
    Error::Planning(m)
}

fn arrow_type_named(name: &str) -> datafusion::arrow::datatypes::DataType {
    use datafusion::arrow::datatypes::DataType as D;
    match name {
        "Int16" => D::Int16,
        "Int32" => D::Int32,
        "Int64" => D::Int64,
        "Float32" => D::Float32,
        "Float64" => D::Float64,
        "Date32" => D::Date32,
        _ => D::Utf8,
    }
}

fn from_execution_message(m: String) -> Error {
    if m.contains("ivide by zero") || m.contains("ivision by zero") {
        return Error::DivisionByZero;
    }
    if m.contains("verflow") {
        return Error::NumericOutOfRange(m);
    }
    if m.contains("Cannot cast") || m.contains("Error parsing") {
        return Error::InvalidText(m);
    }
    Error::DataException(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_position_is_character_offset() {
        let err = Error::Syntax {
            message: "x".into(),
            line_col: Some((2, 3)),
            position: None,
        }
        .with_statement_text("SELECT 1\nFRM t");
        match err {
            Error::Syntax { position, .. } => assert_eq!(position, Some(12)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn line_col_from_parser_message() {
        assert_eq!(
            parse_line_col("Expected: an SQL statement, found: SELEC at Line: 1, Column: 1"),
            Some((1, 1))
        );
    }
}
