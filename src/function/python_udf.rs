//! A Python function as a DataFusion scalar function.
//!
//! [`PythonScalar`] hands each batch to its function's
//! [`PythonPool`](super::python::PythonPool) and returns the result column.
//! Failures never fail the query, so a materialized view over a Python
//! function keeps running whatever the user code does: a row that raised is
//! NULL, and a batch whose worker died, hung or could not start is NULL as a
//! whole. Every failed row goes to an [`ErrorSink`] as a [`FunctionError`];
//! keeping those (`eddy_catalog.function_errors`) is left to the caller.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::python::{row_json, PythonError, PythonPool, RowError};

/// A failed batch is reported row by row up to this many rows; the rest of
/// it as one record, so that a dead worker does not flood the error log.
const MAX_REPORTED_ROWS: usize = 100;

/// A row that failed inside a user function, reported to whoever keeps the error log.
#[derive(Debug, Clone)]
pub struct FunctionError {
    pub function: String,
    /// The row's argument values as JSON text, e.g. `[1,"a"]`.
    pub arguments: String,
    pub message: String,
    /// The Python traceback, or the worker's last stderr lines when the
    /// whole batch failed; may be empty.
    pub traceback: String,
}

/// Where failed rows go.
pub type ErrorSink = Arc<dyn Fn(FunctionError) + Send + Sync>;

/// The sink, printable so that the function can derive `Debug`.
struct Sink(ErrorSink);

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErrorSink")
    }
}

impl PythonScalar {
    pub fn new(
        name: String,
        args: Vec<DataType>,
        returns: DataType,
        pool: Arc<PythonPool>,
        sink: ErrorSink,
    ) -> Self {
        PythonScalar {
            name,
            // Arguments of other types are cast to the declared ones, as
            // PostgreSQL does for a function call (`f(1)` for a bigint).
            signature: match args.is_empty() {
                true => Signature::exact(vec![], Volatility::Immutable),
                false => Signature::user_defined(Volatility::Immutable),
            },
            args,
            returns,
            pool,
            sink: Sink(sink),
        }
    }
}

/// Equal to another only when it calls the same worker pool, so that
/// DataFusion never merges calls of two definitions with the same name.
#[derive(Debug)]
pub struct PythonScalar {
    name: String,
    signature: Signature,
    /// The declared argument types.
    args: Vec<DataType>,
    returns: DataType,
    pool: Arc<PythonPool>,
    sink: Sink,
}

impl PartialEq for PythonScalar {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.signature == other.signature
            && self.returns == other.returns
            && Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for PythonScalar {}

impl Hash for PythonScalar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.signature.hash(state);
        self.returns.hash(state);
        std::ptr::hash(Arc::as_ptr(&self.pool), state);
    }
}

impl ScalarUDFImpl for PythonScalar {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.returns.clone())
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if arg_types.len() != self.args.len() {
            return datafusion::common::plan_err!(
                "function {} takes {} argument(s), not {}",
                self.name,
                self.args.len(),
                arg_types.len()
            );
        }
        for (given, declared) in arg_types.iter().zip(&self.args) {
            if !datafusion::arrow::compute::can_cast_types(given, declared) {
                return datafusion::common::plan_err!(
                    "function {}: an argument of type {given} cannot be cast to {declared}",
                    self.name
                );
            }
        }
        Ok(self.args.clone())
    }

    /// Runs the batch in Python. Only turning the arguments into arrays can
    /// fail the query; whatever happens in Python ends as NULLs and reports.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let columns = args
            .args
            .into_iter()
            .map(|arg| arg.into_array(n))
            .collect::<DfResult<Vec<_>>>()?;
        let result = match self.pool.call(&columns, n) {
            Ok((result, errors)) => {
                self.report_rows(&columns, errors);
                result
            }
            Err(error) => {
                self.report_batch(&columns, n, &error);
                new_null_array(&self.returns, n)
            }
        };
        Ok(ColumnarValue::Array(result))
    }
}

impl PythonScalar {
    fn report_rows(&self, columns: &[ArrayRef], errors: Vec<RowError>) {
        for error in errors {
            self.report(FunctionError {
                function: self.name.clone(),
                arguments: row_json(columns, error.row),
                message: error.message,
                traceback: error.traceback,
            });
        }
    }

    fn report_batch(&self, columns: &[ArrayRef], n: usize, error: &PythonError) {
        tracing::warn!(function = %self.name, rows = n, "a batch failed in Python: {error}");
        let (message, traceback) = batch_failure(error);
        for row in 0..n.min(MAX_REPORTED_ROWS) {
            self.report(FunctionError {
                function: self.name.clone(),
                arguments: row_json(columns, row),
                message: message.clone(),
                traceback: traceback.clone(),
            });
        }
        if n > MAX_REPORTED_ROWS {
            self.report(FunctionError {
                function: self.name.clone(),
                arguments: "null".into(),
                message: format!(
                    "{} more rows of the same batch failed: {message}",
                    n - MAX_REPORTED_ROWS
                ),
                traceback,
            });
        }
    }

    fn report(&self, error: FunctionError) {
        (self.sink.0)(error)
    }
}

/// The message and traceback every row of a failed batch is reported with:
/// a dead worker's last stderr lines (its traceback, usually) go where a
/// row's traceback would.
fn batch_failure(error: &PythonError) -> (String, String) {
    match error {
        PythonError::Died {
            status,
            stderr_tail,
        } => (
            format!("the Python worker process exited ({status})"),
            stderr_tail.clone(),
        ),
        PythonError::Definition { message, traceback } => (message.clone(), traceback.clone()),
        other => (other.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use datafusion::arrow::array::{Array, AsArray, Int64Array};
    use datafusion::arrow::datatypes::{Field, Int64Type};
    use datafusion::config::ConfigOptions;

    use super::super::python::PythonConfig;
    use super::*;

    type Log = Arc<Mutex<Vec<FunctionError>>>;

    fn scalar(body: &str) -> (PythonScalar, Log) {
        let config = PythonConfig {
            program: "python3".into(),
            timeout: Duration::from_secs(10),
            memory_limit: None,
        };
        let pool = PythonPool::new(
            config,
            "f".into(),
            body.into(),
            vec![DataType::Int64],
            DataType::Int64,
        )
        .expect("pool");
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        let sink: ErrorSink = Arc::new(move |e| kept.lock().expect("log").push(e));
        let f = PythonScalar::new(
            "f".into(),
            vec![DataType::Int64],
            DataType::Int64,
            Arc::new(pool),
            sink,
        );
        (f, log)
    }

    fn invoke(f: &PythonScalar, input: Vec<Option<i64>>) -> ArrayRef {
        let n = input.len();
        let args = ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::new(Int64Array::from(input)))],
            arg_fields: vec![Arc::new(Field::new("x", DataType::Int64, true))],
            number_rows: n,
            return_field: Arc::new(Field::new("f", DataType::Int64, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        match f.invoke_with_args(args).expect("invoke") {
            ColumnarValue::Array(array) => array,
            ColumnarValue::Scalar(scalar) => panic!("expected an array, got {scalar}"),
        }
    }

    #[test]
    fn failed_rows_are_null_and_reported() {
        let (f, log) = scalar("def f(x):\n    return 10 // x\n");
        let result = invoke(&f, vec![Some(2), Some(0), None]);
        assert_eq!(result.as_primitive::<Int64Type>().value(0), 5);
        assert!(result.is_null(1));
        let log = log.lock().expect("log");
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0].arguments, "[0]");
        assert!(log[0].message.starts_with("ZeroDivisionError"), "{log:?}");
        assert!(log[0].traceback.contains("10 // x"), "{log:?}");
        assert_eq!(log[1].arguments, "[null]");
    }

    #[test]
    fn a_failed_batch_is_null_and_reported_up_to_a_limit() {
        let (f, log) = scalar("import os\ndef f(x):\n    os._exit(1)\n");
        let result = invoke(&f, (0..150).map(Some).collect());
        assert_eq!(result.len(), 150);
        assert_eq!(result.null_count(), 150);
        let log = log.lock().expect("log");
        assert_eq!(log.len(), MAX_REPORTED_ROWS + 1);
        assert_eq!(log[1].arguments, "[1]");
        assert!(log[0].message.contains("exit status: 1"), "{:?}", log[0]);
        assert!(
            log[MAX_REPORTED_ROWS].message.starts_with("50 more rows"),
            "{:?}",
            log[MAX_REPORTED_ROWS]
        );
    }

    #[test]
    fn equal_only_with_the_same_pool() {
        let (f, _) = scalar("def f(x):\n    return x\n");
        let (g, _) = scalar("def f(x):\n    return x\n");
        assert_ne!(f, g);
        let same = PythonScalar::new(
            "f".into(),
            vec![DataType::Int64],
            DataType::Int64,
            Arc::clone(&f.pool),
            Arc::new(|_| {}),
        );
        assert_eq!(f, same);
    }
}
