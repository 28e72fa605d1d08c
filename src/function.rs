//! User functions: `CREATE FUNCTION name(args) RETURNS type LANGUAGE sql |
//! python AS $$ … $$`.
//!
//! A SQL function is an expression over its arguments; every call is
//! replaced by that expression before a statement is planned
//! ([`inline`]), so views and queries see only built-in operations and
//! the dataflow needs nothing new. A Python function is a DataFusion
//! scalar function whose rows cross into worker processes
//! ([`python`], [`python_udf`]): user code never runs in the server's
//! process, so it cannot crash or block it, and a row it fails on is
//! NULL and kept in `eddy_catalog.function_errors`.

pub mod aggregate;
pub mod inline;
pub mod python;
mod python_udf;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::sql::sqlparser::ast;
use serde::{Deserialize, Serialize};

use aggregate::PythonAggregate;
pub use aggregate::{UserAggregate, UserAggregateUdf};
pub use python_udf::{ErrorSink, FunctionError, PythonScalar};

use crate::error::{Error, Result};
use crate::sql::names;
use crate::types::SqlType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Language {
    Sql,
    Python,
}

impl Language {
    pub fn name(self) -> &'static str {
        match self {
            Language::Sql => "sql",
            Language::Python => "python",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionArg {
    /// `None` for an unnamed argument (reached as `$1`, `$2`, …).
    pub name: Option<String>,
    pub sql_type: SqlType,
}

/// A function as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub id: u64,
    pub name: String,
    pub args: Vec<FunctionArg>,
    pub returns: SqlType,
    pub language: Language,
    /// The text between `AS $$` and `$$` (or after `RETURN`).
    pub body: String,
    /// `CREATE AGGREGATE`: the body defines create_state, accumulate,
    /// retract and finish.
    #[serde(default)]
    pub aggregate: bool,
}

impl FunctionDef {
    /// `name(type, type)`, as PostgreSQL names a function in messages.
    pub fn signature(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|a| a.sql_type.sql_name()).collect();
        format!("{}({})", self.name, args.join(", "))
    }

    pub fn oid(&self) -> u32 {
        // Above the relation oids' range of small ids, and even/odd apart
        // from them: relations take 16384 + 2·id (and +1 for keys).
        0x4000_0000 + self.id as u32
    }

    /// The definition of a `CREATE FUNCTION` statement.
    pub fn from_create(create: &ast::CreateFunction, id: u64) -> Result<FunctionDef> {
        let name = names::relation_name(&create.name)?;
        let language = match create.language.as_ref().map(names::normalize).as_deref() {
            Some("sql") | None => Language::Sql,
            Some("python") | Some("plpython3u") => Language::Python,
            Some(other) => {
                return Err(Error::UndefinedObject(format!(
                    "language \"{other}\" does not exist (functions are written in sql or python)"
                )))
            }
        };
        let mut args = Vec::new();
        for arg in create.args.iter().flatten() {
            if arg
                .mode
                .as_ref()
                .is_some_and(|m| !matches!(m, ast::ArgMode::In))
                || arg.default_expr.is_some()
            {
                return Err(Error::unsupported(
                    format!("argument {} of function {name}", arg),
                    "Arguments are input arguments without defaults: name type.",
                ));
            }
            args.push(FunctionArg {
                name: arg.name.as_ref().map(names::normalize),
                sql_type: SqlType::from_ast(&arg.data_type)?,
            });
        }
        let returns = match &create.return_type {
            Some(ast::FunctionReturnType::DataType(t)) => SqlType::from_ast(t)?,
            _ => {
                return Err(Error::InvalidFunction(format!(
                    "function {name} must declare its result type: RETURNS type"
                )))
            }
        };
        let body = match &create.function_body {
            Some(ast::CreateFunctionBody::AsBeforeOptions { body, .. })
            | Some(ast::CreateFunctionBody::AsAfterOptions(body)) => match body {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::DollarQuotedString(s) => s.value.clone(),
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                other => other.to_string(),
            },
            Some(ast::CreateFunctionBody::Return(expr)) if language == Language::Sql => {
                expr.to_string()
            }
            _ => {
                return Err(Error::InvalidFunction(format!(
                    "function {name} has no body: give it as AS $$ … $$"
                )))
            }
        };
        let aggregate = create.options.iter().flatten().any(
            |o| matches!(o, ast::SqlOption::KeyValue { key, .. } if key.value == AGGREGATE_OPTION),
        );
        if aggregate && language != Language::Python {
            return Err(Error::unsupported(
                format!("CREATE AGGREGATE {name} in LANGUAGE sql"),
                "Aggregates are written in Python: CREATE AGGREGATE … LANGUAGE python AS $$ \
                 def create_state(): … def accumulate(state, …): … def retract(state, …): … \
                 def finish(state): … $$.",
            ));
        }
        Ok(FunctionDef {
            id,
            name,
            args,
            returns,
            language,
            body,
            aggregate,
        })
    }
}

/// A function ready to be called.
#[derive(Debug)]
pub struct FunctionEntry {
    pub def: FunctionDef,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    /// The parsed expression calls are replaced by.
    Sql(Box<ast::Expr>),
    /// The DataFusion function calling into the worker processes.
    Python(Arc<ScalarUDF>),
    /// A Python aggregate, as DataFusion calls it (views find the
    /// [`aggregate::UserAggregate`] inside).
    Aggregate(Arc<AggregateUDF>),
}

impl FunctionEntry {
    /// Checks a definition and makes it callable. A Python function's
    /// workers start when it is first called; `check` starts one now, so
    /// that a body that does not define the function is refused at once.
    pub fn new(
        def: FunctionDef,
        python: &python::PythonConfig,
        errors: &Arc<FunctionErrorLog>,
        check: bool,
    ) -> Result<FunctionEntry> {
        let body = match def.language {
            Language::Sql => Body::Sql(Box::new(inline::parse_body(&def)?)),
            Language::Python => {
                let arg_types: Vec<_> = def.args.iter().map(|a| a.sql_type.arrow_type()).collect();
                for (t, sql) in arg_types
                    .iter()
                    .zip(def.args.iter().map(|a| &a.sql_type))
                    .chain(std::iter::once((&def.returns.arrow_type(), &def.returns)))
                {
                    if python::wire_type(t).is_none() {
                        return Err(Error::unsupported(
                            format!("type {} in a Python function", sql.sql_name()),
                            "Python functions take and return boolean, integers, real, double \
                             precision, numeric, text, date and timestamps.",
                        ));
                    }
                }
                let sink_log = Arc::clone(errors);
                let sink: ErrorSink = Arc::new(move |e| sink_log.push(e));
                let returns = def.returns.arrow_type();
                let (name, body) = (def.name.clone(), def.body.clone());
                if def.aggregate {
                    let pool = python::PythonAggregatePool::new(
                        python.clone(),
                        name.clone(),
                        body,
                        arg_types.clone(),
                        returns.clone(),
                    )
                    .map_err(|e| python_error(&def, e))?;
                    if check {
                        pool.check().map_err(|e| python_error(&def, e))?;
                    }
                    let aggregate = PythonAggregate::new(name, arg_types, returns, pool, sink);
                    Body::Aggregate(Arc::new(AggregateUDF::new_from_impl(
                        UserAggregateUdf::new(Arc::new(aggregate)),
                    )))
                } else {
                    let pool = python::PythonPool::new(
                        python.clone(),
                        name.clone(),
                        body,
                        arg_types.clone(),
                        returns.clone(),
                    )
                    .map_err(|e| python_error(&def, e))?;
                    if check {
                        pool.check().map_err(|e| python_error(&def, e))?;
                    }
                    Body::Python(Arc::new(ScalarUDF::new_from_impl(PythonScalar::new(
                        name,
                        arg_types,
                        returns,
                        Arc::new(pool),
                        sink,
                    ))))
                }
            }
        };
        Ok(FunctionEntry { def, body })
    }
}

/// Marks a `CREATE FUNCTION` parsed from `CREATE AGGREGATE`.
const AGGREGATE_OPTION: &str = "eddy_aggregate";

/// `CREATE [OR REPLACE] AGGREGATE name(args) RETURNS type LANGUAGE python AS
/// $$ … $$` (RisingWave's form) parsed as the `CREATE FUNCTION` it reads
/// like, marked as an aggregate. `None` when `sql` holds no such statement.
pub fn parse_create_aggregates(
    sql: &str,
    parse_one: &dyn Fn(&str) -> Result<Vec<ast::Statement>>,
) -> Result<Option<Vec<ast::Statement>>> {
    let pieces = crate::sql::split_statements(sql);
    let heads: Vec<Option<String>> = pieces.iter().map(|p| as_create_function(p)).collect();
    if heads.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut statements = Vec::new();
    for (piece, head) in pieces.iter().zip(heads) {
        match head {
            None => statements.extend(parse_one(piece)?),
            Some(rewritten) => {
                for mut stmt in parse_one(&rewritten)? {
                    // (A DROP needs no mark: one DROP FUNCTION drops either.)
                    if let ast::Statement::CreateFunction(create) = &mut stmt {
                        create.options.get_or_insert_with(Vec::new).push(
                            ast::SqlOption::KeyValue {
                                key: ast::Ident::new(AGGREGATE_OPTION),
                                value: ast::Expr::value(ast::Value::Boolean(true)),
                            },
                        );
                    }
                    statements.push(stmt);
                }
            }
        }
    }
    Ok(Some(statements))
}

/// The statement with `AGGREGATE` read as `FUNCTION`, if it is a `CREATE
/// [OR REPLACE] AGGREGATE` or a `DROP AGGREGATE`.
fn as_create_function(piece: &str) -> Option<String> {
    let text = piece.trim_start();
    let words: Vec<&str> = text.split_whitespace().take(4).collect();
    let is = |i: usize, w: &str| words.get(i).is_some_and(|x| x.eq_ignore_ascii_case(w));
    let at = match () {
        _ if (is(0, "create") || is(0, "drop")) && is(1, "aggregate") => 1,
        _ if is(0, "create") && is(1, "or") && is(2, "replace") && is(3, "aggregate") => 3,
        _ => return None,
    };
    // Replace the `at`-th word, keeping everything else as written.
    let mut rest = text;
    let mut out = String::new();
    for i in 0..=at {
        let start = rest.find(|c: char| !c.is_whitespace()).unwrap_or(0);
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push_str(if i == at { "FUNCTION" } else { &rest[..end] });
        rest = &rest[end..];
    }
    out.push_str(rest);
    Some(out)
}

fn python_error(def: &FunctionDef, error: python::PythonError) -> Error {
    match error {
        python::PythonError::Definition { message, traceback } if def.aggregate => {
            Error::InvalidArgument {
                message: format!("Python aggregate {} cannot be defined: {message}", def.name),
                hint: format!(
                    "The body must define create_state(), accumulate(state, …) and \
                     finish(state), and retract(state, …) to take rows back; accumulate and \
                     retract take {} argument(s) after the state.\n{traceback}",
                    def.args.len()
                ),
            }
        }
        python::PythonError::Definition { message, traceback } => Error::InvalidArgument {
            message: format!("Python function {} cannot be defined: {message}", def.name),
            hint: format!(
                "The body must define a function named {} taking {} argument(s).\n{traceback}",
                def.name,
                def.args.len()
            ),
        },
        python::PythonError::Spawn(e) => Error::InvalidArgument {
            message: format!("cannot start Python for function {}: {e}", def.name),
            hint: "Install Python 3 or point --python (EDDYDB_PYTHON) at its interpreter.".into(),
        },
        other => Error::InvalidArgument {
            message: format!("Python function {} cannot be defined: {other}", def.name),
            hint: "Check the body with the same Python the server runs (--python).".into(),
        },
    }
}

/// Functions a program embedding EddyDB adds, in Rust: DataFusion scalar
/// functions and [`UserAggregate`]s. They are known to every session from
/// the start, in views and ad-hoc queries alike, as built-in functions are
/// (users cannot drop or replace them); pass them to
/// [`crate::server::run_with`]. A scalar function used in a materialized
/// view must be `Volatility::Immutable`.
#[derive(Debug, Clone, Default)]
pub struct Extensions {
    scalars: Vec<ScalarUDF>,
    aggregates: Vec<Arc<dyn UserAggregate>>,
}

impl Extensions {
    pub fn new() -> Extensions {
        Extensions::default()
    }

    /// Adds a scalar function, e.g. one made with
    /// `datafusion::logical_expr::create_udf`.
    pub fn scalar(mut self, function: ScalarUDF) -> Extensions {
        self.scalars.push(function);
        self
    }

    /// Adds an aggregate.
    pub fn aggregate(mut self, aggregate: Arc<dyn UserAggregate>) -> Extensions {
        self.aggregates.push(aggregate);
        self
    }

    /// The scalar functions and the aggregates (as DataFusion calls them).
    pub fn functions(&self) -> (Vec<ScalarUDF>, Vec<AggregateUDF>) {
        let aggregates = self
            .aggregates
            .iter()
            .map(|a| AggregateUDF::new_from_impl(UserAggregateUdf::new(Arc::clone(a))))
            .collect();
        (self.scalars.clone(), aggregates)
    }
}

/// How many failed rows `eddy_catalog.function_errors` keeps: the most
/// recent ones.
pub const ERRORS_KEPT: usize = 10_000;

/// The rows user functions failed on since the server started, newest last.
#[derive(Debug, Default)]
pub struct FunctionErrorLog {
    entries: Mutex<VecDeque<(i64, FunctionError)>>,
}

impl FunctionErrorLog {
    pub fn push(&self, error: FunctionError) {
        tracing::warn!(
            function = %error.function,
            arguments = %error.arguments,
            "{}",
            error.message
        );
        let now = chrono::Utc::now().timestamp_micros();
        let mut entries = self.entries.lock().expect("function errors lock");
        if entries.len() == ERRORS_KEPT {
            entries.pop_front();
        }
        entries.push_back((now, error));
    }

    /// Every kept error with the time (µs since the epoch) it happened.
    pub fn entries(&self) -> Vec<(i64, FunctionError)> {
        let entries = self.entries.lock().expect("function errors lock");
        entries.iter().cloned().collect()
    }
}
