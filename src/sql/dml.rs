//! INSERT, UPDATE, DELETE, TRUNCATE and the commit of COPY data.
//!
//! DataFusion computes the rows (VALUES, SELECT, the new values of an
//! UPDATE, the rows a DELETE matches); this module conforms them to the
//! table's column types and constraints and commits each statement's change
//! to the table as one atomic [`Change`].

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, StringArray, UInt64Array,
};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    self, AssignmentTarget, Delete, FromTable, Insert, SelectItem, Statement, TableFactor,
    TableObject, Update, UpdateTableFromKind,
};

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::copy_format::parse_text_value;
use super::{names, CommandTag, Output, Prepared, Session};
use crate::catalog::{TableDef, ROW_ID};
use crate::error::{Error, Result};
use crate::query::DML_SCHEMA;
use crate::storage::{Change, Table};
use crate::types::SqlType;

pub async fn insert(
    session: &mut Session,
    insert: Insert,
    params: &[ScalarValue],
) -> Result<Output> {
    let table = insert_table(session, &insert)?;
    let (columns, explicit) = insert_columns(table.def(), &insert)?;
    let batches = match &insert.source {
        None => vec![empty_rows(1)?],
        Some(query) => match parameter_rows(query, params) {
            Some(rows) => vec![rows],
            None => {
                let mut query = query.clone();
                replace_default_items(&mut query, table.def(), &columns)?;
                type_string_literals(&mut query, table.def(), &columns);
                let stmt = with_param_types(Statement::Query(query), params)?;
                let plan = session.query.plan(stmt).await?;
                session.query.collect(plan, params).await?.1
            }
        },
    };
    let supplied = batches.first().map_or(columns.len(), |b| b.num_columns());
    let columns = match supplied.cmp(&columns.len()) {
        std::cmp::Ordering::Greater => {
            return Err(syntax("INSERT has more expressions than target columns"))
        }
        std::cmp::Ordering::Less if explicit => {
            return Err(syntax("INSERT has more target columns than expressions"))
        }
        _ => columns[..supplied].to_vec(),
    };
    let rows = conform_all(session, &table, &columns, batches).await?;
    let count: usize = rows.iter().map(RecordBatch::num_rows).sum();
    commit(
        session,
        &table,
        Change {
            deletes: Vec::new(),
            inserts: rows.clone(),
        },
    )
    .await?;
    match &insert.returning {
        Some(items) => returning(table.def(), &table.def().name, rows, items).await,
        None => Ok(Output::Command(
            CommandTag::new("INSERT").with_oid(0).with_rows(count),
        )),
    }
}

/// Commits a statement's change and every view's change to it, as one epoch.
async fn commit(session: &Session, table: &Arc<Table>, change: Change) -> Result<u64> {
    Arc::clone(session.catalog()).commit(table, change).await
}

/// Conforms and commits rows supplied for `columns` (COPY).
pub async fn insert_batches(
    session: &mut Session,
    table: &Arc<Table>,
    columns: &[usize],
    batches: Vec<RecordBatch>,
) -> Result<u64> {
    let rows = conform_all(session, table, columns, batches).await?;
    commit(
        session,
        table,
        Change {
            deletes: Vec::new(),
            inserts: rows,
        },
    )
    .await
}

pub async fn describe_insert(
    session: &mut Session,
    insert: &Insert,
    prepared: &mut Prepared,
) -> Result<Vec<Option<DataType>>> {
    let table = insert_table(session, insert)?;
    let (columns, _) = insert_columns(table.def(), insert)?;
    if let Some(items) = &insert.returning {
        let empty = RecordBatch::new_empty(table.schema());
        if let Output::Batches { schema, .. } =
            returning(table.def(), &table.def().name, vec![empty], items).await?
        {
            prepared.result_schema = Some(schema);
        }
    }
    let mut types: Vec<Option<DataType>> = Vec::new();
    if let Some(query) = &insert.source {
        if let ast::SetExpr::Values(values) = query.body.as_ref() {
            for row in &values.rows {
                for (i, expr) in row.iter().enumerate() {
                    let (Some(n), Some(col)) = (placeholder_index(expr), columns.get(i)) else {
                        continue;
                    };
                    if types.len() < n {
                        types.resize(n, None);
                    }
                    let sql_type = &table.def().columns[*col].sql_type;
                    types[n - 1] = Some(sql_type.arrow_type());
                    if prepared.param_sql_types.len() < n {
                        prepared.param_sql_types.resize(n, None);
                    }
                    prepared.param_sql_types[n - 1] = Some(sql_type.clone());
                }
            }
        }
    }
    Ok(types)
}

/// In `VALUES`, a string literal bound for a non-text column is read as
/// that column's type, as PostgreSQL types its unknown literals, so rows
/// mixing literals and expressions have one type per column.
fn type_string_literals(query: &mut ast::Query, def: &TableDef, columns: &[usize]) {
    let ast::SetExpr::Values(values) = query.body.as_mut() else {
        return;
    };
    // Number literals for float and numeric columns are read exactly from
    // their text, as PostgreSQL's numeric literals are.
    for row in &mut values.rows {
        for (expr, col) in row.iter_mut().zip(columns) {
            let target = &def.columns[*col].sql_type;
            let exact = matches!(
                target,
                SqlType::Real | SqlType::Double | SqlType::Numeric { .. }
            );
            if let (true, Some(text)) = (exact, number_text(expr)) {
                *expr = ast::Expr::value(ast::Value::SingleQuotedString(text));
            }
        }
    }
    let is_string = |expr: &ast::Expr| matches!(expr, ast::Expr::Value(v) if matches!(v.value, ast::Value::SingleQuotedString(_)));
    let is_null = |expr: &ast::Expr| matches!(expr, ast::Expr::Value(v) if matches!(v.value, ast::Value::Null));
    // A column of only strings (and NULLs) stays text and is parsed with
    // PostgreSQL's input syntax on assignment; only a column that mixes
    // strings with other expressions needs DataFusion to cast them.
    let mixed: Vec<bool> = (0..columns.len())
        .map(|i| {
            let cells = || values.rows.iter().filter_map(|r| r.get(i));
            cells().any(&is_string) && cells().any(|e| !is_string(e) && !is_null(e))
        })
        .collect();
    for row in &mut values.rows {
        for ((expr, col), mixed) in row.iter_mut().zip(columns).zip(&mixed) {
            let sql_type = &def.columns[*col].sql_type;
            if *mixed && is_string(expr) && !sql_type.is_text() {
                let cast = format!("CAST({expr} AS {})", sql_type_name(&sql_type.arrow_type()));
                if let Ok(parsed) = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(&cast)
                    .and_then(|mut p| p.parse_expr())
                {
                    *expr = parsed;
                }
            }
        }
    }
}

/// `VALUES (1, DEFAULT)`: each DEFAULT item becomes its column's default
/// expression (or NULL).
fn replace_default_items(query: &mut ast::Query, def: &TableDef, columns: &[usize]) -> Result<()> {
    let ast::SetExpr::Values(values) = query.body.as_mut() else {
        return Ok(());
    };
    for row in &mut values.rows {
        for (expr, col) in row.iter_mut().zip(columns) {
            let is_default = matches!(expr, ast::Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"));
            if is_default {
                let sql = def.columns[*col].default.as_deref().unwrap_or("NULL");
                *expr = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(sql)?
                    .parse_expr()?;
            }
        }
    }
    Ok(())
}

/// The text of a number literal, sign included.
fn number_text(expr: &ast::Expr) -> Option<String> {
    match expr {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => Some(n.to_string()),
            _ => None,
        },
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Minus,
            expr,
        } => number_text(expr).map(|n| format!("-{n}")),
        _ => None,
    }
}

/// The rows of `VALUES ($1, $2), ($3, $4)` straight from the bound
/// parameters, without planning: a prepared INSERT's usual form. `None`
/// when the query is anything else (then it is planned), including
/// parameters of one column with different types.
fn parameter_rows(query: &ast::Query, params: &[ScalarValue]) -> Option<RecordBatch> {
    let plain = query.with.is_none()
        && query.order_by.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none();
    let ast::SetExpr::Values(values) = query.body.as_ref() else {
        return None;
    };
    let width = values.rows.first()?.len();
    if !plain || width == 0 {
        return None;
    }
    let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(values.rows.len()); width];
    for row in &values.rows {
        if row.len() != width {
            return None;
        }
        for (column, expr) in columns.iter_mut().zip(row.iter()) {
            column.push(params.get(placeholder_index(expr)? - 1)?.clone());
        }
    }
    let mut fields = Vec::with_capacity(width);
    let mut arrays = Vec::with_capacity(width);
    for (i, column) in columns.into_iter().enumerate() {
        let array = ScalarValue::iter_to_array(column).ok()?;
        fields.push(Field::new(
            format!("column{}", i + 1),
            array.data_type().clone(),
            true,
        ));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).ok()
}

fn placeholder_index(expr: &ast::Expr) -> Option<usize> {
    match expr {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(p) => p.strip_prefix('$')?.parse().ok().filter(|n| *n > 0),
            _ => None,
        },
        _ => None,
    }
}

fn insert_table(session: &Session, insert: &Insert) -> Result<Arc<Table>> {
    if insert.on.is_some() {
        return Err(Error::unsupported(
            "INSERT ... ON CONFLICT",
            "Delete the conflicting rows first, or UPDATE them.",
        ));
    }
    match &insert.table {
        TableObject::TableName(name) => names::resolve_table(&session.catalog, name),
        other => Err(Error::unsupported(
            format!("INSERT INTO {other}"),
            "INSERT INTO a table.",
        )),
    }
}

/// Target columns, and whether the statement listed them.
fn insert_columns(def: &TableDef, insert: &Insert) -> Result<(Vec<usize>, bool)> {
    let idents: Vec<ast::Ident> = insert
        .columns
        .iter()
        .filter_map(|name| name.0.last().and_then(|p| p.as_ident()).cloned())
        .collect();
    Ok((names::column_indexes(def, &idents)?, !idents.is_empty()))
}

/// Wraps a statement with `$n` parameters in PREPARE so DataFusion knows
/// their types even where it cannot infer them (VALUES lists).
fn with_param_types(stmt: Statement, params: &[ScalarValue]) -> Result<Statement> {
    if params.is_empty() {
        return Ok(stmt);
    }
    let types: Vec<String> = params
        .iter()
        .map(|p| sql_type_name(&p.data_type()))
        .collect();
    let sql = format!("PREPARE __eddy_stmt({}) AS {stmt}", types.join(", "));
    super::parse(&sql)?
        .pop()
        .ok_or_else(|| Error::Internal("PREPARE wrapper did not parse".into()))
}

fn sql_type_name(dt: &DataType) -> String {
    let field = datafusion::arrow::datatypes::Field::new("p", dt.clone(), true);
    match SqlType::of_field(&field) {
        Some(SqlType::Timestamptz) => "TIMESTAMPTZ".into(),
        Some(SqlType::Timestamp) => "TIMESTAMP".into(),
        Some(t) => t.sql_name(),
        None => "TEXT".into(),
    }
}

fn empty_rows(n: usize) -> Result<RecordBatch> {
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
    Ok(RecordBatch::try_new_with_options(
        schema,
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

fn syntax(message: &str) -> Error {
    Error::Syntax {
        message: message.to_string(),
        line_col: None,
        position: None,
    }
}

/// Builds full rows of `table` from batches supplying `columns`: defaults
/// for the rest, assignment casts, NOT NULL and length checks.
async fn conform_all(
    session: &Session,
    table: &Table,
    columns: &[usize],
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let def = table.def();
    let mut defaults: Vec<Option<ScalarValue>> = vec![None; def.columns.len()];
    for (i, column) in def.columns.iter().enumerate() {
        if let (false, Some(sql)) = (columns.contains(&i), &column.default) {
            defaults[i] = Some(eval_default(session, column, sql).await?);
        }
    }
    batches
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|batch| conform(table, columns, &batch, &defaults))
        .collect()
}

fn conform(
    table: &Table,
    columns: &[usize],
    batch: &RecordBatch,
    defaults: &[Option<ScalarValue>],
) -> Result<RecordBatch> {
    let def = table.def();
    let n = batch.num_rows();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(def.columns.len());
    for (i, column) in def.columns.iter().enumerate() {
        let target = column.sql_type.arrow_type();
        let array = match columns.iter().position(|c| *c == i) {
            Some(j) => assign(column.name.as_str(), &column.sql_type, batch.column(j))?,
            None => match &defaults[i] {
                Some(value) => value.to_array_of_size(n)?,
                None => new_null_array(&target, n),
            },
        };
        if column.not_null && array.null_count() > 0 {
            return Err(Error::NotNull {
                table: def.name.clone(),
                column: column.name.clone(),
            });
        }
        if let SqlType::Varchar(Some(limit)) = column.sql_type {
            check_length(&array, limit)?;
        }
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(table.schema(), arrays)?)
}

/// PostgreSQL's assignment cast of a value to a column's type.
fn assign(column: &str, sql_type: &SqlType, array: &ArrayRef) -> Result<ArrayRef> {
    let target = sql_type.arrow_type();
    if array.data_type() == &target {
        return Ok(Arc::clone(array));
    }
    if !sql_type.accepts(array.data_type()) {
        return Err(Error::DatatypeMismatch(format!(
            "column \"{column}\" is of type {} but expression is of type {}",
            sql_type.sql_name(),
            pg_name(array.data_type())
        )));
    }
    if let Some(strings) = array.as_string_opt::<i32>() {
        if !sql_type.is_text() {
            return parse_strings(strings, sql_type);
        }
    }
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    cast_with_options(array, &target, &options).map_err(|e| match Error::from(e) {
        Error::InvalidText(m) | Error::DataException(m) if array.data_type().is_numeric() => {
            Error::NumericOutOfRange(format!("{} out of range: {m}", sql_type.sql_name()))
        }
        other => other,
    })
}

/// Text to a column type with PostgreSQL's input syntax (and its errors).
fn parse_strings(strings: &StringArray, sql_type: &SqlType) -> Result<ArrayRef> {
    let field = sql_type.field("value", true);
    let values = strings
        .iter()
        .map(|s| match s {
            None => ScalarValue::try_from(field.data_type()).map_err(Error::from),
            Some(text) => {
                parse_text_value(text, field.data_type(), &field).map_err(|e| Error::BadCopyData {
                    sqlstate: e.sqlstate,
                    message: e.message,
                    context: None,
                })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    if values.is_empty() {
        return Ok(new_null_array(field.data_type(), 0));
    }
    Ok(ScalarValue::iter_to_array(values)?)
}

fn pg_name(dt: &DataType) -> String {
    let field = datafusion::arrow::datatypes::Field::new("v", dt.clone(), true);
    SqlType::of_field(&field).map_or(dt.to_string(), |t| t.sql_name())
}

fn check_length(array: &ArrayRef, limit: u32) -> Result<()> {
    let Some(strings) = array.as_string_opt::<i32>() else {
        return Ok(());
    };
    for s in strings.iter().flatten() {
        if s.len() > limit as usize && s.chars().count() > limit as usize {
            return Err(Error::StringTooLong(format!(
                "value too long for type character varying({limit})"
            )));
        }
    }
    Ok(())
}

async fn eval_default(
    session: &Session,
    column: &crate::catalog::ColumnDef,
    sql: &str,
) -> Result<ScalarValue> {
    let stmt = super::parse(&format!("SELECT {sql}"))?
        .pop()
        .ok_or_else(|| Error::Internal("default did not parse".into()))?;
    let plan = session.query.plan(stmt).await?;
    let (_, batches) = session.query.collect(plan, &[]).await?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| Error::Internal("default produced no row".into()))?;
    let value = assign(&column.name, &column.sql_type, batch.column(0))?;
    Ok(ScalarValue::try_from_array(&value, 0)?)
}

/// The rows UPDATE or DELETE touches: the target table, how the statement
/// names it, and the generated query returning row ids (and new values).
struct Targeted {
    table: Arc<Table>,
    alias: String,
}

fn target_of(session: &Session, factor: &TableFactor) -> Result<Targeted> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return Err(Error::unsupported(
            "UPDATE/DELETE of a subquery",
            "Name a table.",
        ));
    };
    let table = names::resolve_table(&session.catalog, name)?;
    let alias = match alias {
        Some(a) => a.name.to_string(),
        None => names::quote(&table.def().name),
    };
    Ok(Targeted { table, alias })
}

fn from_items(items: &[ast::TableWithJoins]) -> String {
    items.iter().map(|t| format!(", {t}")).collect()
}

fn where_clause(selection: &Option<ast::Expr>) -> String {
    selection
        .as_ref()
        .map(|e| format!(" WHERE {e}"))
        .unwrap_or_default()
}

fn update_query(session: &Session, update: &Update) -> Result<(Targeted, String)> {
    if !update.table.joins.is_empty() {
        return Err(Error::unsupported(
            "UPDATE with JOIN",
            "Use UPDATE ... FROM.",
        ));
    }
    let target = target_of(session, &update.table.relation)?;
    let def = target.table.def();
    let mut values: Vec<String> = def
        .columns
        .iter()
        .map(|c| format!("{}.{}", target.alias, names::quote(&c.name)))
        .collect();
    for assignment in &update.assignments {
        let AssignmentTarget::ColumnName(name) = &assignment.target else {
            return Err(Error::unsupported(
                "UPDATE SET (a, b) = ...",
                "Assign columns one by one.",
            ));
        };
        let ident = name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .cloned()
            .ok_or_else(|| Error::UndefinedColumn(format!("column \"{name}\" does not exist")))?;
        let i = names::column_indexes(def, std::slice::from_ref(&ident))?[0];
        values[i] = format!(
            "{} AS {}",
            assignment.value,
            names::quote(&def.columns[i].name)
        );
    }
    let from = match &update.from {
        Some(UpdateTableFromKind::BeforeSet(items) | UpdateTableFromKind::AfterSet(items)) => {
            from_items(items)
        }
        None => String::new(),
    };
    let sql = format!(
        "SELECT {alias}.{rid}, {values} FROM {dml}.{table} AS {alias}{from}{filter}",
        alias = target.alias,
        rid = names::quote(ROW_ID),
        values = values.join(", "),
        dml = names::quote(DML_SCHEMA),
        table = names::quote(&def.name),
        filter = where_clause(&update.selection),
    );
    Ok((target, sql))
}

fn delete_query(session: &Session, delete: &Delete) -> Result<(Targeted, String)> {
    let tables = match &delete.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [first] = tables.as_slice() else {
        return Err(Error::unsupported(
            "DELETE from several tables",
            "Delete from one table; join others with USING.",
        ));
    };
    let target = target_of(session, &first.relation)?;
    let using = delete.using.as_deref().map(from_items).unwrap_or_default();
    let sql = format!(
        "SELECT {alias}.{rid}, {columns} FROM {dml}.{table} AS {alias}{using}{filter}",
        alias = target.alias,
        rid = names::quote(ROW_ID),
        columns = target
            .table
            .def()
            .columns
            .iter()
            .map(|c| format!("{}.{}", target.alias, names::quote(&c.name)))
            .collect::<Vec<_>>()
            .join(", "),
        dml = names::quote(DML_SCHEMA),
        table = names::quote(&target.table.def().name),
        filter = where_clause(&delete.selection),
    );
    Ok((target, sql))
}

/// Runs a generated row-id query: the ids (first match of each) and the
/// rest of the columns.
async fn matched_rows(
    session: &Session,
    sql: &str,
    params: &[ScalarValue],
) -> Result<(Vec<u64>, Vec<RecordBatch>)> {
    let stmt = super::parse(sql)?
        .pop()
        .ok_or_else(|| Error::Internal("generated query did not parse".into()))?;
    let plan = session.query.plan(stmt).await?;
    let (_, batches) = session.query.collect(plan, params).await?;
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    let mut rows = Vec::new();
    for batch in batches {
        let batch_ids = batch.column(0).as_primitive::<UInt64Type>();
        let keep: Vec<bool> = batch_ids
            .values()
            .iter()
            .map(|id| seen.insert(*id))
            .collect();
        let keep = datafusion::arrow::array::BooleanArray::from(keep);
        let batch = datafusion::arrow::compute::filter_record_batch(&batch, &keep)?;
        ids.extend(
            batch
                .column(0)
                .as_primitive::<UInt64Type>()
                .values()
                .iter()
                .copied(),
        );
        let rest: Vec<usize> = (1..batch.num_columns()).collect();
        rows.push(batch.project(&rest)?);
    }
    Ok((ids, rows))
}

pub async fn update(
    session: &mut Session,
    update: Update,
    params: &[ScalarValue],
) -> Result<Output> {
    let (target, sql) = update_query(session, &update)?;
    let _writer = target.table.write_lock().await;
    let (ids, new_values) = matched_rows(session, &sql, params).await?;
    let all: Vec<usize> = (0..target.table.def().columns.len()).collect();
    let no_defaults = vec![None; all.len()];
    let rows = new_values
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| conform(&target.table, &all, b, &no_defaults))
        .collect::<Result<Vec<_>>>()?;
    let count = ids.len();
    commit(
        session,
        &target.table,
        Change {
            deletes: ids,
            inserts: rows.clone(),
        },
    )
    .await?;
    match &update.returning {
        Some(items) => returning(target.table.def(), &target.alias, rows, items).await,
        None => Ok(Output::Command(CommandTag::new("UPDATE").with_rows(count))),
    }
}

pub async fn delete(
    session: &mut Session,
    delete: Delete,
    params: &[ScalarValue],
) -> Result<Output> {
    let (target, sql) = delete_query(session, &delete)?;
    let _writer = target.table.write_lock().await;
    let (ids, old_rows) = matched_rows(session, &sql, params).await?;
    let count = ids.len();
    commit(
        session,
        &target.table,
        Change {
            deletes: ids,
            inserts: Vec::new(),
        },
    )
    .await?;
    match &delete.returning {
        Some(items) => {
            let schema = target.table.schema();
            let rows = old_rows
                .into_iter()
                .map(|b| RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            returning(target.table.def(), &target.alias, rows, items).await
        }
        None => Ok(Output::Command(CommandTag::new("DELETE").with_rows(count))),
    }
}

pub async fn describe_update_delete(
    session: &mut Session,
    prepared: &mut Prepared,
) -> Result<Vec<Option<DataType>>> {
    let (sql, returning_items, target) = match &prepared.statement {
        super::Parsed::Sql(Statement::Update(u)) => {
            let (t, sql) = update_query(session, u)?;
            (sql, u.returning.clone(), t)
        }
        super::Parsed::Sql(Statement::Delete(d)) => {
            let (t, sql) = delete_query(session, d)?;
            (sql, d.returning.clone(), t)
        }
        _ => return Ok(Vec::new()),
    };
    if let Some(items) = returning_items {
        let empty = RecordBatch::new_empty(target.table.schema());
        if let Output::Batches { schema, .. } =
            returning(target.table.def(), &target.alias, vec![empty], &items).await?
        {
            prepared.result_schema = Some(schema);
        }
    }
    let stmt = super::parse(&sql)?
        .pop()
        .ok_or_else(|| Error::Internal("generated query did not parse".into()))?;
    let plan = session.query.plan(stmt).await?;
    super::placeholder_types(&plan)
}

pub async fn truncate(session: &mut Session, truncate: ast::Truncate) -> Result<Output> {
    for target in &truncate.table_names {
        let table = names::resolve_table(&session.catalog, &target.name)?;
        let _writer = table.write_lock().await;
        let mut ids = Vec::new();
        for batch in table.scan()? {
            let col = batch.column(batch.num_columns() - 1);
            let col = col
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| Error::Internal("row id column type".into()))?;
            ids.extend(col.values().iter().copied());
        }
        commit(
            session,
            &table,
            Change {
                deletes: ids,
                inserts: Vec::new(),
            },
        )
        .await?;
    }
    Ok(Output::Command(CommandTag::new("TRUNCATE TABLE")))
}

/// Evaluates a RETURNING list over the rows a statement wrote.
async fn returning(
    def: &TableDef,
    alias: &str,
    rows: Vec<RecordBatch>,
    items: &[SelectItem],
) -> Result<Output> {
    let ctx = SessionContext::new();
    let schema = def.schema();
    let table = MemTable::try_new(Arc::clone(&schema), vec![rows])?;
    let name = alias.trim_matches('"').to_string();
    ctx.register_table(name.as_str(), Arc::new(table))?;
    let list: Vec<String> = items.iter().map(ToString::to_string).collect();
    let sql = format!("SELECT {} FROM {}", list.join(", "), names::quote(&name));
    let df = ctx.sql(&sql).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok(Output::Batches { schema, batches })
}
