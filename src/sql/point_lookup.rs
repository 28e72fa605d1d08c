//! The fast path for prepared key lookups (`SELECT cols FROM t WHERE pk =
//! $1` on a table's primary key, or on a materialized view's key):
//! recognised once at prepare time, answered from the relation's index on
//! every execution without planning. Anything else goes through DataFusion.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Query, Select, SelectItem, SetExpr, Statement, TableFactor,
    Value,
};

use super::names;
use crate::catalog::Catalog;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct PointLookup {
    table: String,
    /// For each primary-key column, where its value comes from.
    key: Vec<KeyValue>,
    /// Table column indexes, in output order.
    projection: Vec<usize>,
}

#[derive(Debug, Clone)]
enum KeyValue {
    /// `$n`, zero-based.
    Param(usize),
    Literal(Box<Expr>),
}

/// A relation with a key index, as the lookup sees it.
struct Keyed {
    name: String,
    schema: SchemaRef,
    key: Vec<usize>,
}

impl Keyed {
    fn find(catalog: &Catalog, name: &str) -> Option<Keyed> {
        if let Some(table) = catalog.table(name) {
            let def = table.def();
            return Some(Keyed {
                name: def.name.clone(),
                schema: table.schema(),
                key: def.primary_key.clone(),
            });
        }
        let view = catalog.materialized_view(name)?;
        Some(Keyed {
            name: view.def.name.clone(),
            schema: Arc::clone(&view.schema),
            key: view.key_columns.clone(),
        })
    }

    fn column(&self, i: usize) -> &str {
        self.schema.field(i).name()
    }

    fn column_index(&self, name: &str) -> Option<usize> {
        self.schema.fields().iter().position(|f| f.name() == name)
    }
}

impl PointLookup {
    /// Recognises the pattern; `None` for anything else.
    pub fn recognise(catalog: &Catalog, stmt: &Statement) -> Option<PointLookup> {
        let Statement::Query(query) = stmt else {
            return None;
        };
        let select = simple_select(query)?;
        let [from] = select.from.as_slice() else {
            return None;
        };
        if !from.joins.is_empty() {
            return None;
        }
        let TableFactor::Table {
            name,
            args: None,
            alias,
            ..
        } = &from.relation
        else {
            return None;
        };
        let relation = Keyed::find(catalog, &names::relation_name(name).ok()?)?;
        if relation.key.is_empty() {
            return None;
        }
        let qualifier = alias
            .as_ref()
            .map(|a| names::normalize(&a.name))
            .unwrap_or_else(|| relation.name.clone());
        let mut equalities = Vec::new();
        conjuncts(select.selection.as_ref()?, &mut equalities)?;
        let mut key = Vec::with_capacity(relation.key.len());
        for k in &relation.key {
            let column = relation.column(*k);
            let matches: Vec<&KeyValue> = equalities
                .iter()
                .filter(|(c, q, _)| c == column && q.as_ref().is_none_or(|q| *q == qualifier))
                .map(|(_, _, v)| v)
                .collect();
            let [value] = matches.as_slice() else {
                return None;
            };
            key.push((*value).clone());
        }
        if equalities.len() != relation.key.len() {
            return None;
        }
        let projection = projection(&relation, &qualifier, &select.projection)?;
        Some(PointLookup {
            table: relation.name,
            key,
            projection,
        })
    }

    /// Answers the lookup; `Ok(None)` if the relation is gone (re-plan).
    pub fn execute(
        &self,
        catalog: &Catalog,
        params: &[ScalarValue],
    ) -> Result<Option<RecordBatch>> {
        let Some(relation) = Keyed::find(catalog, &self.table) else {
            return Ok(None);
        };
        let schema = Arc::new(relation.schema.project(&self.projection)?);
        let mut key: Vec<ArrayRef> = Vec::with_capacity(self.key.len());
        for (value, k) in self.key.iter().zip(&relation.key) {
            let dt = relation.schema.field(*k).data_type();
            let scalar = match value {
                KeyValue::Param(i) => params.get(*i).cloned().ok_or_else(|| {
                    Error::ProtocolViolation(format!("parameter ${} is missing", i + 1))
                })?,
                KeyValue::Literal(expr) => literal(expr)?,
            };
            if scalar.is_null() {
                return Ok(Some(RecordBatch::new_empty(schema)));
            }
            key.push(scalar.cast_to(dt)?.to_array()?);
        }
        let rows = match catalog.table(&self.table) {
            Some(table) => table.lookup(&key)?,
            None => match catalog.materialized_view(&self.table) {
                Some(view) => Some(view.lookup(&key)?),
                None => return Ok(None),
            },
        };
        let batch = match rows {
            Some(rows) => RecordBatch::try_new(
                Arc::clone(&schema),
                rows.project(&self.projection)?.columns().to_vec(),
            )?,
            None => RecordBatch::new_empty(schema),
        };
        Ok(Some(batch))
    }
}

fn simple_select(query: &Query) -> Option<&Select> {
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
    {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let no_grouping =
        matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    (select.distinct.is_none()
        && select.having.is_none()
        && no_grouping
        && select.qualify.is_none())
    .then_some(select.as_ref())
}

/// `a = x AND b = y ...` into (column, qualifier, value); `None` for anything else.
fn conjuncts(expr: &Expr, out: &mut Vec<(String, Option<String>, KeyValue)>) -> Option<()> {
    match expr {
        Expr::Nested(inner) => conjuncts(inner, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out)?;
            conjuncts(right, out)
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let (column, value) = match (column_ref(left), column_ref(right)) {
                (Some(c), None) => (c, key_value(right)?),
                (None, Some(c)) => (c, key_value(left)?),
                _ => return None,
            };
            out.push((column.0, column.1, value));
            Some(())
        }
        _ => None,
    }
}

fn column_ref(expr: &Expr) -> Option<(String, Option<String>)> {
    match expr {
        Expr::Identifier(i) => Some((names::normalize(i), None)),
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => Some((
            names::normalize(&parts[1]),
            Some(names::normalize(&parts[0])),
        )),
        _ => None,
    }
}

fn key_value(expr: &Expr) -> Option<KeyValue> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => {
                let n: usize = p.strip_prefix('$')?.parse().ok()?;
                (n > 0).then_some(KeyValue::Param(n - 1))
            }
            Value::Number(_, _) | Value::SingleQuotedString(_) => {
                Some(KeyValue::Literal(Box::new(expr.clone())))
            }
            _ => None,
        },
        _ => None,
    }
}

fn literal(expr: &Expr) -> Result<ScalarValue> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Ok(n
                .parse::<i64>()
                .map(|i| ScalarValue::Int64(Some(i)))
                .or_else(|_| n.parse::<f64>().map(|f| ScalarValue::Float64(Some(f))))
                .map_err(|_| Error::InvalidText(format!("invalid number {n}")))?),
            Value::SingleQuotedString(s) => Ok(ScalarValue::Utf8(Some(s.clone()))),
            _ => Err(Error::Internal("unexpected key literal".into())),
        },
        _ => Err(Error::Internal("unexpected key expression".into())),
    }
}

fn projection(relation: &Keyed, qualifier: &str, items: &[SelectItem]) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for item in items {
        match item {
            SelectItem::Wildcard(_) => out.extend(0..relation.schema.fields().len()),
            SelectItem::UnnamedExpr(expr) => {
                let (column, q) = column_ref(expr)?;
                if q.is_some_and(|q| q != qualifier) {
                    return None;
                }
                out.push(relation.column_index(&column)?);
            }
            _ => return None,
        }
    }
    Some(out)
}
