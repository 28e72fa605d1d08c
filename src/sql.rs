//! Statement execution. A [`Session`] belongs to one client connection: it
//! owns the connection's settings and DataFusion context and turns each
//! parsed statement into an [`Output`]. DDL, DML, COPY and session commands
//! are handled here; queries are planned and run by DataFusion.

mod colnames;
pub mod copy_format;
pub(crate) mod ddl;
mod dml;
mod functions;
pub mod lookup;
pub(crate) mod names;
mod point_lookup;
pub(crate) mod sessions;
mod settings;
mod sources;
pub(crate) mod trailing;
mod views;
pub(crate) mod windows;

pub use views::restore_views;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast;
pub use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

pub use copy_format::{CopyDecoder, CopyOptions};
pub use settings::Settings;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::query::QueryContext;
use crate::source::def::SourceStatement;
use crate::storage::Table;

/// What a statement gives back to the client.
pub enum Output {
    /// A query's rows, streamed.
    Rows(SendableRecordBatchStream),
    /// Rows already computed (SHOW, RETURNING, point lookups).
    Batches {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A command tag such as `INSERT 0 3` or `CREATE TABLE`.
    Command(CommandTag),
    /// `COPY … FROM STDIN`: the protocol layer collects the data, then calls
    /// [`Session::finish_copy_in`].
    CopyIn(CopyIn),
    /// `COPY … TO STDOUT`.
    CopyOut {
        options: CopyOptions,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    TransactionStart(CommandTag),
    TransactionEnd(CommandTag),
}

#[derive(Debug, Clone)]
pub struct CommandTag {
    pub command: String,
    pub oid: Option<u32>,
    pub rows: Option<usize>,
}

impl CommandTag {
    pub fn new(command: &str) -> CommandTag {
        CommandTag {
            command: command.to_string(),
            oid: None,
            rows: None,
        }
    }

    pub fn with_rows(mut self, rows: usize) -> CommandTag {
        self.rows = Some(rows);
        self
    }

    fn with_oid(mut self, oid: u32) -> CommandTag {
        self.oid = Some(oid);
        self
    }
}

/// A `COPY FROM STDIN` in progress.
#[derive(Debug)]
pub struct CopyIn {
    pub table: Arc<Table>,
    /// Indexes of the table columns the data supplies, in data order.
    pub columns: Vec<usize>,
    pub options: CopyOptions,
}

impl CopyIn {
    /// The schema of the incoming data.
    pub fn schema(&self) -> SchemaRef {
        let full = self.table.schema();
        Arc::new(full.project(&self.columns).expect("copy columns are valid"))
    }
}

/// A parsed statement: sqlparser's, or one of the source statements
/// sqlparser does not know (`CREATE SOURCE`, `SHOW SOURCES`, ...).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // sqlparser's Statement, as everywhere
pub enum Parsed {
    Sql(Statement),
    Source(SourceStatement),
}

/// Parses `sql` if it is a source statement (see
/// [`crate::source::def::parse_source_statement`]).
pub fn parse_source(sql: &str) -> Result<Option<SourceStatement>> {
    crate::source::def::parse_source_statement(sql)
}

/// Parses a simple-query string of one or more statements. Source
/// statements are recognised statement by statement; a script without any
/// is parsed by sqlparser as a whole, as before.
pub fn parse_script(sql: &str) -> Result<Vec<Parsed>> {
    let pieces = split_statements(sql);
    let mut any_source = false;
    let mut sources = Vec::with_capacity(pieces.len());
    for piece in &pieces {
        let source = parse_source(piece)?;
        any_source |= source.is_some();
        sources.push(source);
    }
    if !any_source {
        return Ok(parse(sql)?.into_iter().map(Parsed::Sql).collect());
    }
    let mut out = Vec::new();
    for (piece, source) in pieces.iter().zip(sources) {
        match source {
            Some(source) => out.push(Parsed::Source(source)),
            None => out.extend(parse(piece)?.into_iter().map(Parsed::Sql)),
        }
    }
    Ok(out)
}

/// Cuts a script at its top-level semicolons (not those inside quotes,
/// dollar quotes or comments). Pieces keep their text; empty ones are left
/// out.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut pieces = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                let quote = bytes[i];
                // In an `E'…'` string a backslash escapes the next byte.
                let escapes = quote == b'\''
                    && i > 0
                    && bytes[i - 1].eq_ignore_ascii_case(&b'e')
                    && (i < 2 || !(bytes[i - 2].is_ascii_alphanumeric() || bytes[i - 2] == b'_'));
                i += 1;
                while i < bytes.len() {
                    if escapes && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == quote {
                        // A doubled quote is a quote inside the string.
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = block_comment_end(bytes, i).unwrap_or(bytes.len()) - 1;
            }
            b'$' => {
                // `$tag$ ... $tag$` (a `$1` parameter has no closing `$`).
                let tag_end = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map(|n| i + 1 + n);
                if let Some(end) = tag_end.filter(|e| bytes[*e] == b'$') {
                    let tag = &sql[i..=end];
                    match sql[end + 1..].find(tag) {
                        Some(close) => i = end + 1 + close + tag.len() - 1,
                        None => i = bytes.len(),
                    }
                }
            }
            b';' => {
                let piece = sql[start..i].trim();
                if !piece.is_empty() {
                    pieces.push(piece);
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let piece = sql.get(start..).unwrap_or("").trim();
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// A statement parsed once and executed many times (extended protocol).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    pub statement: Parsed,
    /// Types of `$1..$n`; `None` where neither the client nor inference says.
    pub param_types: Vec<Option<DataType>>,
    /// The SQL types of parameters where the statement says them (a cast
    /// `$1::jsonb`, an INSERT column), to describe them exactly.
    pub param_sql_types: Vec<Option<crate::types::SqlType>>,
    /// Columns of the rows it returns, if it returns rows.
    pub result_schema: Option<SchemaRef>,
    plan: Option<(u64, LogicalPlan)>,
    lookup: Option<point_lookup::PointLookup>,
}

/// One client's session.
pub struct Session {
    catalog: Arc<Catalog>,
    query: QueryContext,
    pub settings: Settings,
    pub user: String,
    transaction: Option<TransactionState>,
}

#[derive(Debug, Default)]
struct TransactionState {
    writes: usize,
}

/// Where the block comment opening at `start` (`/*`) ends, past its `*/`:
/// block comments nest, as in PostgreSQL. `None` if it never closes.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether a statement is `FLUSH` alone: the word, with only whitespace,
/// comments and semicolons around it.
fn is_bare_flush(piece: &str) -> bool {
    let bytes = piece.as_bytes();
    let mut words = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"--") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let Some(end) = block_comment_end(bytes, i) else {
                return false;
            };
            words.push(' ');
            i = end;
        } else {
            match bytes[i].is_ascii_whitespace() || bytes[i] == b';' {
                true => words.push(' '),
                false => words.push(bytes[i] as char),
            }
            i += 1;
        }
    }
    let mut words = words.split_whitespace();
    words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("flush"))
        && words.next().is_none()
}

/// `FLUSH`: every write acknowledged is already in the views that depend
/// on it, so there is nothing to wait for.
fn flush_statement() -> Statement {
    Statement::Flush {
        object_type: ast::FlushType::Tables,
        location: None,
        channel: None,
        read_lock: false,
        export: false,
        tables: Vec::new(),
    }
}

pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    // `EXPLAIN MATERIALIZED VIEW v` (Materialize's form) is `EXPLAIN v`.
    let trimmed = sql.trim_start();
    let sql = match trimmed.get(..26) {
        Some(head) if head.eq_ignore_ascii_case("explain materialized view ") => {
            format!("EXPLAIN {}", &trimmed[26..])
        }
        _ => sql.to_string(),
    };
    let sql = windows::strip_table_arguments(&sql);
    let sql = lookup::rewrite(sql.as_ref())?;
    let sql = sql.as_ref();
    let parse_one = |sql: &str| {
        let parse_sql = |sql: &str| {
            Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .map_err(|e| Error::from(e).with_statement_text(sql))
        };
        // A bare `FLUSH` (RisingWave's), which sqlparser takes for MySQL's
        // and refuses without an option: only a script sqlparser refuses
        // is cut into statements to find it, so every script it parsed
        // before parses as it did.
        let refused = match parse_sql(sql) {
            Ok(statements) => return Ok(statements),
            Err(e) => e,
        };
        let pieces = split_statements(sql);
        if !pieces.iter().any(|p| is_bare_flush(p)) {
            return Err(refused);
        }
        let mut statements = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match is_bare_flush(piece) {
                true => statements.push(flush_statement()),
                false => statements.extend(parse_sql(piece)?),
            }
        }
        Ok(statements)
    };
    if sql.to_ascii_lowercase().contains("aggregate") {
        if let Some(statements) = crate::function::parse_create_aggregates(sql, &parse_one)? {
            return Ok(statements);
        }
    }
    if !sql.to_ascii_lowercase().contains("emit") {
        return parse_one(sql);
    }
    // `… EMIT ON WINDOW CLOSE` is cut off its statement and kept as an option.
    let pieces = split_statements(sql);
    if pieces
        .iter()
        .all(|p| windows::strip_emit_clause(p).is_none())
    {
        return parse_one(sql);
    }
    let mut statements = Vec::new();
    for piece in pieces {
        match windows::strip_emit_clause(piece) {
            None => statements.extend(parse_one(piece)?),
            Some(head) => {
                for mut stmt in parse_one(head)? {
                    windows::set_emit_on_close(&mut stmt)?;
                    statements.push(stmt);
                }
            }
        }
    }
    Ok(statements)
}

impl Session {
    pub fn new(catalog: Arc<Catalog>, query: QueryContext, user: &str) -> Session {
        Session {
            catalog,
            query,
            settings: Settings::default(),
            user: user.to_string(),
            transaction: None,
        }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn query_context(&self) -> &QueryContext {
        &self.query
    }

    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Runs one parsed statement.
    pub async fn execute(&mut self, stmt: Statement, params: &[ScalarValue]) -> Result<Output> {
        let output = self.dispatch(stmt, params).await?;
        if let (Some(txn), Output::Command(tag)) = (&mut self.transaction, &output) {
            if matches!(
                tag.command.as_str(),
                "INSERT" | "UPDATE" | "DELETE" | "COPY"
            ) {
                txn.writes += 1;
            }
        }
        Ok(output)
    }

    async fn dispatch(&mut self, stmt: Statement, params: &[ScalarValue]) -> Result<Output> {
        match stmt {
            Statement::Explain { statement, .. }
                if matches!(statement.as_ref(), Statement::CreateView(_)) =>
            {
                let Statement::CreateView(create) = *statement else {
                    unreachable!("matched above")
                };
                views::explain_create(&self.catalog, &self.query, create).await
            }
            Statement::ExplainTable { table_name, .. } => {
                views::explain_existing(&self.catalog, &names::relation_name(&table_name)?)
            }
            Statement::Query(_) | Statement::Explain { .. } => self.run_query(stmt, params).await,
            Statement::CreateView(create) => {
                views::create_view(&self.catalog, &self.query, create).await
            }
            Statement::CreateTable(create) => {
                ddl::create_table(&self.catalog, &self.query, create).await
            }
            Statement::CreateFunction(create) => {
                functions::create(&self.catalog, &self.query, create).await
            }
            Statement::DropFunction(drop) => functions::drop(&self.catalog, drop),
            Statement::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => ddl::drop(&self.catalog, object_type, if_exists, &names, cascade),
            Statement::Insert(insert) => dml::insert(self, insert, params).await,
            Statement::Update(update) => dml::update(self, update, params).await,
            Statement::Delete(delete) => dml::delete(self, delete, params).await,
            Statement::Truncate(truncate) => dml::truncate(self, truncate).await,
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                self.copy(source, to, target, &options, &legacy_options, params)
                    .await
            }
            Statement::StartTransaction { .. } => Ok(self.begin()),
            Statement::Commit { .. } => Ok(self.end_transaction("COMMIT")),
            Statement::Rollback {
                savepoint: None, ..
            } => Ok(self.end_transaction("ROLLBACK")),
            other => self.dispatch_session_command(other),
        }
    }

    fn dispatch_session_command(&mut self, stmt: Statement) -> Result<Output> {
        match stmt {
            Statement::Set(set) => self.settings.set(set),
            Statement::Reset(reset) => self.settings.reset(reset),
            Statement::ShowVariable { variable } => self.settings.show(&variable),
            Statement::ShowViews { materialized, .. } => {
                Ok(views::show_views(&self.catalog, materialized))
            }
            Statement::ShowTables { .. } => Ok(show_tables(&self.catalog)),
            Statement::Discard { .. } => {
                self.settings = Settings::default();
                Ok(Output::Command(CommandTag::new("DISCARD ALL")))
            }
            Statement::Flush { .. } => Ok(Output::Command(CommandTag::new("FLUSH"))),
            // Each statement commits on its own, so savepoints mark nothing;
            // psycopg wraps catalog lookups in them.
            Statement::Savepoint { .. } => Ok(Output::Command(CommandTag::new("SAVEPOINT"))),
            Statement::ReleaseSavepoint { .. } => Ok(Output::Command(CommandTag::new("RELEASE"))),
            Statement::Rollback {
                savepoint: Some(_), ..
            } => Ok(Output::Command(CommandTag::new("ROLLBACK"))),
            other => Err(unsupported_statement(&other)),
        }
    }

    async fn run_query(&mut self, stmt: Statement, params: &[ScalarValue]) -> Result<Output> {
        check_query(&stmt)?;
        let mut rewritten = stmt.clone();
        self.query.rewrite(&mut rewritten)?;
        let plan = self.query.plan(rewritten).await?;
        let schema = colnames::pg_schema(&stmt, &Arc::new(plan.schema().as_arrow().clone()));
        let stream = self.query.execute(plan, params).await?;
        Ok(Output::Rows(colnames::rename_stream(stream, schema)))
    }

    fn begin(&mut self) -> Output {
        if self.transaction.is_none() {
            self.transaction = Some(TransactionState::default());
        }
        Output::TransactionStart(CommandTag::new("BEGIN"))
    }

    fn end_transaction(&mut self, command: &str) -> Output {
        if let Some(txn) = self.transaction.take() {
            if command == "ROLLBACK" && txn.writes > 0 {
                tracing::warn!(
                    writes = txn.writes,
                    "ROLLBACK after writes: EddyDB commits every statement on its own"
                );
            }
        }
        Output::TransactionEnd(CommandTag::new(command))
    }

    /// Writes made inside the current transaction block (they are already
    /// committed: EddyDB commits each statement on its own).
    pub fn writes_in_transaction(&self) -> usize {
        self.transaction.as_ref().map_or(0, |t| t.writes)
    }

    /// Parses and describes a statement for the extended protocol.
    pub async fn prepare(
        &mut self,
        sql: &str,
        declared: &[Option<DataType>],
    ) -> Result<Option<Prepared>> {
        if let Some(source) = parse_source(sql)? {
            return Ok(Some(Prepared {
                sql: sql.to_string(),
                result_schema: sources::result_schema(&source),
                statement: Parsed::Source(source),
                param_types: declared.to_vec(),
                param_sql_types: Vec::new(),
                plan: None,
                lookup: None,
            }));
        }
        let mut statements = parse(sql)?;
        if statements.len() > 1 {
            return Err(Error::Syntax {
                message: "cannot insert multiple commands into a prepared statement".into(),
                line_col: None,
                position: None,
            });
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        let mut prepared = Prepared {
            sql: sql.to_string(),
            statement: Parsed::Sql(statement),
            param_types: declared.to_vec(),
            param_sql_types: Vec::new(),
            result_schema: None,
            plan: None,
            lookup: None,
        };
        self.describe(&mut prepared).await?;
        Ok(Some(prepared))
    }

    async fn describe(&mut self, prepared: &mut Prepared) -> Result<()> {
        let Parsed::Sql(statement) = prepared.statement.clone() else {
            return Ok(());
        };
        let inferred = match &statement {
            Statement::Explain { statement, .. }
                if matches!(statement.as_ref(), Statement::CreateView(_)) =>
            {
                prepared.result_schema = Some(views::text_schema("QUERY PLAN"));
                Vec::new()
            }
            Statement::ExplainTable { .. } => {
                prepared.result_schema = Some(views::text_schema("QUERY PLAN"));
                Vec::new()
            }
            Statement::ShowViews { .. } => {
                prepared.result_schema = Some(views::text_schema("Name"));
                Vec::new()
            }
            Statement::Query(_) | Statement::Explain { .. } => {
                check_query(&statement)?;
                let mut rewritten = statement.clone();
                self.query.rewrite(&mut rewritten)?;
                let plan = self.query.plan(rewritten).await?;
                let schema = Arc::new(plan.schema().as_arrow().clone());
                prepared.result_schema = Some(colnames::pg_schema(&statement, &schema));
                let types = placeholder_types(&plan)?;
                prepared.plan = Some((self.catalog.version(), plan));
                prepared.lookup = point_lookup::PointLookup::recognise(&self.catalog, &statement);
                types
            }
            Statement::Insert(insert) => dml::describe_insert(self, insert, prepared).await?,
            Statement::Update(_) | Statement::Delete(_) => {
                dml::describe_update_delete(self, prepared).await?
            }
            Statement::ShowVariable { variable } => {
                prepared.result_schema = Some(self.settings.show_schema(variable));
                Vec::new()
            }
            Statement::ShowTables { .. } => {
                prepared.result_schema = Some(show_tables_schema());
                Vec::new()
            }
            _ => Vec::new(),
        };
        merge_param_types(&mut prepared.param_types, inferred);
        let hints = cast_hints(&statement);
        if prepared.param_sql_types.len() < hints.len() {
            prepared.param_sql_types.resize(hints.len(), None);
        }
        for (slot, hint) in prepared.param_sql_types.iter_mut().zip(hints) {
            if slot.is_none() {
                *slot = hint;
            }
        }
        let arrow_hints = prepared
            .param_sql_types
            .iter()
            .map(|t| t.as_ref().map(crate::types::SqlType::arrow_type))
            .collect();
        merge_param_types(&mut prepared.param_types, arrow_hints);
        Ok(())
    }

    /// Runs a prepared statement with bound parameters.
    pub async fn execute_prepared(
        &mut self,
        prepared: &Prepared,
        params: &[ScalarValue],
    ) -> Result<Output> {
        if let Some((version, plan)) = &prepared.plan {
            if *version == self.catalog.version() {
                if let (Some(lookup), Some(schema)) = (&prepared.lookup, &prepared.result_schema) {
                    if let Some(batch) = lookup.execute(&self.catalog, params)? {
                        return Ok(Output::Batches {
                            schema: Arc::clone(schema),
                            batches: vec![batch],
                        });
                    }
                }
                let stream = self.query.execute(plan.clone(), params).await?;
                let schema = prepared
                    .result_schema
                    .clone()
                    .unwrap_or_else(|| stream.schema());
                return Ok(Output::Rows(colnames::rename_stream(stream, schema)));
            }
        }
        match &prepared.statement {
            Parsed::Sql(statement) => self.execute(statement.clone(), params).await,
            Parsed::Source(statement) => self.execute_source(statement.clone()).await,
        }
    }

    /// Runs a source statement.
    pub async fn execute_source(&mut self, statement: SourceStatement) -> Result<Output> {
        sources::execute(&self.catalog, statement).await
    }

    async fn copy(
        &mut self,
        source: ast::CopySource,
        to: bool,
        target: ast::CopyTarget,
        options: &[ast::CopyOption],
        legacy: &[ast::CopyLegacyOption],
        params: &[ScalarValue],
    ) -> Result<Output> {
        let options =
            CopyOptions::from_statement(options, legacy).map_err(|e| Error::BadCopyData {
                sqlstate: e.sqlstate,
                message: e.message,
                context: None,
            })?;
        match (to, target) {
            (false, ast::CopyTarget::Stdin) => {
                let ast::CopySource::Table { table_name, columns } = source else {
                    return Err(Error::Syntax {
                        message: "COPY FROM needs a table, not a query".into(),
                        line_col: None,
                        position: None,
                    });
                };
                let table = names::resolve_table(&self.catalog, &table_name)?;
                let columns = names::column_indexes(table.def(), &columns)?;
                Ok(Output::CopyIn(CopyIn { table, columns, options }))
            }
            (true, ast::CopyTarget::Stdout) => {
                let query = match source {
                    ast::CopySource::Query(query) => Statement::Query(query),
                    ast::CopySource::Table { table_name, columns } => {
                        names::select_all(&self.catalog, &table_name, &columns)?
                    }
                };
                let mut query = query;
                self.query.rewrite(&mut query)?;
                let plan = self.query.plan(query).await?;
                let (schema, batches) = self.query.collect(plan, params).await?;
                Ok(Output::CopyOut { options, schema, batches })
            }
            _ => Err(Error::unsupported(
                "COPY to or from a file or program",
                "Use COPY ... FROM STDIN or COPY ... TO STDOUT (psql's \\copy does this for a local file).",
            )),
        }
    }

    /// Commits the rows of a finished `COPY FROM STDIN`.
    pub async fn finish_copy_in(
        &mut self,
        copy: &CopyIn,
        batches: Vec<RecordBatch>,
    ) -> Result<Output> {
        let rows = dml::insert_batches(self, &copy.table, &copy.columns, batches).await?;
        if let Some(txn) = &mut self.transaction {
            txn.writes += 1;
        }
        Ok(Output::Command(
            CommandTag::new("COPY").with_rows(rows as usize),
        ))
    }
}

/// `$n::type` anywhere in a statement tells the parameter's type, as in
/// PostgreSQL.
fn cast_hints(stmt: &Statement) -> Vec<Option<crate::types::SqlType>> {
    let mut hints: Vec<Option<crate::types::SqlType>> = Vec::new();
    let _ = ast::visit_expressions(stmt, |expr| {
        if let ast::Expr::Cast {
            expr, data_type, ..
        } = expr
        {
            if let ast::Expr::Value(v) = expr.as_ref() {
                if let ast::Value::Placeholder(p) = &v.value {
                    let n = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
                    if let (Some(n), Ok(t)) = (
                        n.filter(|n| *n > 0),
                        crate::types::SqlType::from_ast(data_type),
                    ) {
                        if hints.len() < n {
                            hints.resize(n, None);
                        }
                        hints[n - 1].get_or_insert(t);
                    }
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    hints
}

/// Client-declared types win; inference fills the rest.
fn merge_param_types(declared: &mut Vec<Option<DataType>>, inferred: Vec<Option<DataType>>) {
    if declared.len() < inferred.len() {
        declared.resize(inferred.len(), None);
    }
    for (slot, ty) in declared.iter_mut().zip(inferred) {
        if slot.is_none() {
            *slot = ty;
        }
    }
}

/// `$1..$n` types DataFusion inferred for a plan, in order.
pub(crate) fn placeholder_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let found = plan.get_parameter_types()?;
    let mut types: Vec<Option<DataType>> = Vec::new();
    for (name, ty) in found {
        let Some(n) = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        if n == 0 {
            continue;
        }
        if types.len() < n {
            types.resize(n, None);
        }
        types[n - 1] = ty;
    }
    Ok(types)
}

/// What PostgreSQL refuses in a query but the parser and planner let by.
fn check_query(stmt: &Statement) -> Result<()> {
    check_locking_clause(stmt)?;
    check_reserved_relation_names(stmt)
}

/// `FOR UPDATE` and friends lock nothing (each statement commits on its
/// own) and are accepted, except where PostgreSQL refuses them too.
fn check_locking_clause(stmt: &Statement) -> Result<()> {
    let Statement::Query(query) = stmt else {
        return Ok(());
    };
    let (Some(lock), ast::SetExpr::Select(select)) = (query.locks.first(), query.body.as_ref())
    else {
        return Ok(());
    };
    let grouped = !matches!(&select.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    let aggregate = select.projection.iter().any(|item| {
        let expr = match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return false,
        };
        matches!(expr, ast::Expr::Function(f) if matches!(
            f.name.to_string().to_lowercase().as_str(),
            "count" | "sum" | "avg" | "min" | "max" | "bool_and" | "bool_or" | "string_agg" | "array_agg"
        ))
    });
    if grouped || aggregate || select.distinct.is_some() {
        return Err(Error::unsupported(
            format!(
                "FOR {} with aggregate functions, GROUP BY or DISTINCT",
                lock.lock_type
            ),
            "Remove the locking clause: rows are not locked, each statement commits on its own.",
        ));
    }
    Ok(())
}

/// sqlparser takes `SELECT * FROM FROM t` for a table named "from";
/// PostgreSQL reserves these words, so an unquoted one is a syntax error.
fn check_reserved_relation_names(stmt: &Statement) -> Result<()> {
    const RESERVED: &[&str] = &[
        "ALL", "AND", "AS", "CASE", "FROM", "GROUP", "HAVING", "LIMIT", "OFFSET", "OR", "ORDER",
        "SELECT", "TABLE", "THEN", "UNION", "WHERE", "WITH",
    ];
    let found = ast::visit_relations(stmt, |name| match name.0.as_slice() {
        [part] => match part.as_ident() {
            Some(id)
                if id.quote_style.is_none()
                    && RESERVED.contains(&id.value.to_uppercase().as_str()) =>
            {
                std::ops::ControlFlow::Break((id.value.clone(), id.span.start))
            }
            _ => std::ops::ControlFlow::Continue(()),
        },
        _ => std::ops::ControlFlow::Continue(()),
    });
    match found {
        std::ops::ControlFlow::Break((word, at)) => Err(Error::Syntax {
            message: format!("syntax error at or near \"{}\"", word.to_uppercase()),
            line_col: (at.line > 0).then_some((at.line as usize, at.column as usize)),
            position: None,
        }),
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}

fn show_tables_schema() -> SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]))
}

fn show_tables(catalog: &Catalog) -> Output {
    use datafusion::arrow::array::StringArray;
    let names = StringArray::from(catalog.table_names());
    let schema = show_tables_schema();
    let batch =
        RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(names)]).expect("one utf8 column");
    Output::Batches {
        schema,
        batches: vec![batch],
    }
}

fn unsupported_statement(stmt: &Statement) -> Error {
    let text = stmt.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    Error::unsupported(
        format!("statement {}", words.join(" ")),
        "See docs/sql.md for the statements EddyDB supports.",
    )
}

#[cfg(test)]
mod split_tests {
    use super::{parse, split_statements, Statement};

    #[test]
    fn cuts_at_top_level_semicolons_only() {
        assert_eq!(
            split_statements("SELECT 'a;b'; SELECT \"x;\" -- c;\n; /* ; */ SELECT $q$;$q$, $1;"),
            vec![
                "SELECT 'a;b'",
                "SELECT \"x;\" -- c;",
                "/* ; */ SELECT $q$;$q$, $1"
            ]
        );
        assert_eq!(split_statements(" ; ;"), Vec::<&str>::new());
        assert_eq!(split_statements("SELECT 'it''s;'"), vec!["SELECT 'it''s;'"]);
        assert_eq!(
            split_statements("SELECT E'a\\';b'; SELECT 1 /* x /* ; */ ; */; SELECT e'\\\\'"),
            vec![
                "SELECT E'a\\';b'",
                "SELECT 1 /* x /* ; */ ; */",
                "SELECT e'\\\\'"
            ]
        );
        // Without `E` a backslash is an ordinary byte.
        assert_eq!(
            split_statements("SELECT 'a\\'; SELECT 1"),
            vec!["SELECT 'a\\'", "SELECT 1"]
        );
    }

    /// A bare FLUSH, with comments or among other statements, is ours; a
    /// script sqlparser parses is never cut up to look for one.
    #[test]
    fn bare_flush_is_found_without_changing_other_scripts() {
        let kinds = |sql: &str| -> Vec<bool> {
            parse(sql)
                .unwrap()
                .iter()
                .map(|s| matches!(s, Statement::Flush { .. }))
                .collect()
        };
        assert_eq!(kinds("FLUSH"), [true]);
        assert_eq!(kinds("flush ;"), [true]);
        assert_eq!(kinds("-- wait\nFLUSH -- now"), [true]);
        assert_eq!(
            kinds("/* a /* nested */ one */ FLUSH; SELECT 1"),
            [true, false]
        );
        assert_eq!(kinds("SELECT 1; Flush; SELECT 2"), [false, true, false]);
        // One statement whose text holds `; flush;` inside an escape string.
        assert_eq!(kinds("SELECT E'it\\'s; flush; done'"), [false]);
        assert!(parse("FLUSH now").is_err());
        assert!(parse("F LUSH").is_err());
        assert!(parse("fl/**/ush").is_err());
        assert!(parse("FLUSH /* never closed").is_err());
        // Block comments nest: the DELETE is inside one.
        assert_eq!(kinds("FLUSH /* /* */; DELETE FROM t; -- */"), [true]);
    }
}
