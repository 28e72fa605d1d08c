//! Postgres scalar functions that clients call in catalog queries, registered
//! per session as DataFusion UDFs. This file holds the UDF wrapper, argument
//! helpers and the registration table; the functions live in `session`,
//! `catalog` and `values`.

mod catalog;
mod session;
mod values;

pub(super) use values::EXPAND_ARRAY_LIST;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use super::CatalogSource;

/// What the functions of one session may consult.
#[derive(Debug)]
pub(super) struct FnState {
    pub source: Arc<dyn CatalogSource>,
    pub user: String,
    pub backend_pid: i32,
}

/// Computes a function over argument arrays of `rows` rows each.
type Eval = fn(&FnState, &[ArrayRef], usize) -> Result<ArrayRef>;

/// Return type: fixed, or derived from the argument types.
#[derive(Debug, Clone)]
enum Ret {
    Fixed(DataType),
    Derived(fn(&[DataType]) -> Result<DataType>),
}

#[derive(Debug)]
struct PgFunction {
    name: &'static str,
    signature: Signature,
    ret: Ret,
    eval: Eval,
    state: Arc<FnState>,
}

impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Eq for PgFunction {}

impl Hash for PgFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match &self.ret {
            Ret::Fixed(t) => Ok(t.clone()),
            Ret::Derived(f) => f(arg_types),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let out = (self.eval)(&self.state, &arrays, rows)?;
        Ok(ColumnarValue::Array(out))
    }
}

/// Signature accepting `min..=max` arguments of any type; each function
/// casts what it needs, as Postgres' implicit casts from unknown literals would.
fn arity(min: usize, max: usize, volatility: Volatility) -> Signature {
    let variants = (min..=max)
        .map(|n| {
            if n == 0 {
                TypeSignature::Nullary
            } else {
                TypeSignature::Any(n)
            }
        })
        .collect::<Vec<_>>();
    match variants.as_slice() {
        [single] => Signature::new(single.clone(), volatility),
        _ => Signature::one_of(variants, volatility),
    }
}

/// One registration: name, argument count range, return type, implementation.
struct Def {
    name: &'static str,
    args: (usize, usize),
    ret: Ret,
    eval: Eval,
    volatility: Volatility,
}

fn def(name: &'static str, args: (usize, usize), ret: DataType, eval: Eval) -> Def {
    Def {
        name,
        args,
        ret: Ret::Fixed(ret),
        eval,
        volatility: Volatility::Stable,
    }
}

pub(super) fn register(
    ctx: &SessionContext,
    source: Arc<dyn CatalogSource>,
    user: &str,
    backend_pid: i32,
) {
    session::note_start_time();
    let state = Arc::new(FnState {
        source,
        user: user.to_string(),
        backend_pid,
    });
    let defs = session::defs()
        .into_iter()
        .chain(catalog::defs())
        .chain(values::defs());
    for d in defs {
        let udf = PgFunction {
            name: d.name,
            signature: arity(d.args.0, d.args.1, d.volatility),
            ret: d.ret,
            eval: d.eval,
            state: Arc::clone(&state),
        };
        ctx.register_udf(ScalarUDF::new_from_impl(udf));
    }
}

/// Argument `i` as Int64 (unparseable values become NULL, as the default
/// cast options are "safe"); all NULL if absent.
fn ints(args: &[ArrayRef], i: usize, rows: usize) -> Result<Int64Array> {
    let array = match args.get(i) {
        Some(a) => cast_with_options(a, &DataType::Int64, &CastOptions::default())?,
        None => return Ok(Int64Array::new_null(rows)),
    };
    downcast::<Int64Array>(&array)
}

/// Argument `i` as Utf8; all NULL if absent.
fn strs(args: &[ArrayRef], i: usize, rows: usize) -> Result<StringArray> {
    let array = match args.get(i) {
        Some(a) => cast_with_options(a, &DataType::Utf8, &CastOptions::default())?,
        None => return Ok(StringArray::new_null(rows)),
    };
    downcast::<StringArray>(&array)
}

fn downcast<T: Array + Clone + 'static>(array: &ArrayRef) -> Result<T> {
    array
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("pg_catalog: unexpected cast result".into()))
}

fn value<T: Array>(array: &T, row: usize) -> Option<usize> {
    array.is_valid(row).then_some(row)
}

/// Row `row` of an Int64 argument, if not NULL.
fn int_at(array: &Int64Array, row: usize) -> Option<i64> {
    value(array, row).map(|r| array.value(r))
}

/// Row `row` of a Utf8 argument, if not NULL.
fn str_at(array: &StringArray, row: usize) -> Option<&str> {
    value(array, row).map(|r| array.value(r))
}

/// Row `row` of an OID argument (any integer or numeric string).
fn oid_at(array: &Int64Array, row: usize) -> Option<u32> {
    int_at(array, row).and_then(|n| u32::try_from(n).ok())
}

fn text_rows(rows: usize, f: impl FnMut(usize) -> Option<String>) -> ArrayRef {
    Arc::new((0..rows).map(f).collect::<StringArray>())
}

fn bool_rows(rows: usize, f: impl FnMut(usize) -> Option<bool>) -> ArrayRef {
    Arc::new((0..rows).map(f).collect::<BooleanArray>())
}
