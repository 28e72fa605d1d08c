//! Result column names as PostgreSQL chooses them: `count(*)` is called
//! `count`, `t.v` is `v`, `1::int` is `int4`, anything nameless
//! `?column?`. DataFusion names columns after the whole expression;
//! clients (and the tests written against PostgreSQL) expect these.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{Expr, Query, SelectItem, SetExpr, Statement};
use futures::StreamExt;

/// The schema with PostgreSQL's names for a query's unnamed columns.
pub fn pg_schema(stmt: &Statement, schema: &SchemaRef) -> SchemaRef {
    let Statement::Query(query) = stmt else {
        return Arc::clone(schema);
    };
    let Some(items) = select_items(query) else {
        return Arc::clone(schema);
    };
    let has_wildcard = items.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(_, _)
        )
    });
    if has_wildcard || items.len() != schema.fields().len() {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = items
        .iter()
        .zip(schema.fields())
        .map(|(item, field)| match item {
            SelectItem::UnnamedExpr(expr) => {
                let name = crate::query::pg_catalog::figure_column_name(expr);
                cast_type(expr, field.as_ref().clone().with_name(name))
            }
            SelectItem::ExprWithAlias { expr, .. } => cast_type(expr, field.as_ref().clone()),
            _ => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A column that is a cast (`$1::jsonb`, `x::varchar(5)`) has the cast's
/// exact SQL type, which Arrow alone may not tell.
fn cast_type(expr: &Expr, field: Field) -> Field {
    let Expr::Cast { data_type, .. } = expr else {
        return field;
    };
    match crate::types::SqlType::from_ast(data_type) {
        Ok(t)
            if &t.arrow_type() == field.data_type()
                || (t.is_text() && is_string(field.data_type())) =>
        {
            let typed = t.field(field.name(), field.is_nullable());
            field.with_metadata(typed.metadata().clone())
        }
        _ => field,
    }
}

fn is_string(dt: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType as D;
    matches!(dt, D::Utf8 | D::LargeUtf8 | D::Utf8View)
}

fn select_items(query: &Query) -> Option<&Vec<SelectItem>> {
    let mut body = query.body.as_ref();
    loop {
        match body {
            SetExpr::Select(select) => return Some(&select.projection),
            SetExpr::SetOperation { left, .. } => body = left.as_ref(),
            SetExpr::Query(q) => body = q.body.as_ref(),
            _ => return None,
        }
    }
}

/// Relabels a stream's batches with `schema` (same types, other names).
pub fn rename_stream(
    stream: SendableRecordBatchStream,
    schema: SchemaRef,
) -> SendableRecordBatchStream {
    let current = stream.schema();
    let same = |a: &Field, b: &Field| a.name() == b.name() && a.metadata() == b.metadata();
    if current.fields().len() != schema.fields().len()
        || current
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| same(a, b))
    {
        return stream;
    }
    // Names and metadata from `schema`, types and nullability from the data.
    let fields: Vec<Field> = current
        .fields()
        .iter()
        .zip(schema.fields())
        .map(|(actual, wanted)| {
            actual
                .as_ref()
                .clone()
                .with_name(wanted.name())
                .with_metadata(wanted.metadata().clone())
        })
        .collect();
    let target = Arc::new(Schema::new(fields));
    let batch_schema = Arc::clone(&target);
    let renamed = stream.map(move |batch| {
        let batch = batch?;
        Ok(RecordBatch::try_new(
            Arc::clone(&batch_schema),
            batch.columns().to_vec(),
        )?)
    });
    Box::pin(RecordBatchStreamAdapter::new(target, renamed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn names_and_cast_types() {
        let stmt = crate::sql::parse("SELECT count(*), 1::int, '{}'::jsonb, x AS y FROM t")
            .unwrap()
            .pop()
            .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("count(*)", DataType::Int64, false),
            Field::new("Int64(1)", DataType::Int32, false),
            Field::new("Utf8(\"{}\")", DataType::Utf8View, false),
            Field::new("y", DataType::Int32, true),
        ]));
        let named = pg_schema(&stmt, &schema);
        let names: Vec<&str> = named.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["count", "int4", "jsonb", "y"]);
        let jsonb = crate::types::SqlType::of_field(named.field(2));
        assert_eq!(jsonb, Some(crate::types::SqlType::Jsonb));
    }
}
