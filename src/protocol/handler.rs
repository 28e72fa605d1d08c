//! pgwire handlers: startup (database check, connection limit, session
//! creation), simple and extended queries, and COPY FROM STDIN.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{stream, Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    ServerParameterProvider, StartupHandler,
};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::Mutex;

use super::encode::{encode_batch, encode_copy, field_infos};
use super::timezone::parse_zone;
use super::types::{arrow_type_of_pg, decode_param, pg_type};
use crate::catalog::Catalog;
use crate::error::Error;
use crate::query::QueryContext;
use crate::sql::{self, CopyDecoder, CopyIn, Output, Prepared, Session};

/// Rows per batch decoded from COPY data.
const COPY_BATCH_ROWS: usize = 8192;

/// Threads a large COPY's data is decoded on: one per core.
fn copy_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Per-connection state kept in pgwire's session extensions.
pub struct SessionHandle {
    session: Mutex<Session>,
    copy: Mutex<Option<CopyState>>,
}

struct CopyState {
    copy: CopyIn,
    decoder: CopyDecoder,
    batches: Vec<datafusion::arrow::record_batch::RecordBatch>,
    error: Option<Error>,
}

/// Marks a connection accepted beyond `--max-connections`.
pub struct OverLimit;

#[derive(Debug)]
pub struct Handler {
    catalog: Arc<Catalog>,
    workers: usize,
    manager: Arc<ConnectionManager>,
    next_pid: AtomicI32,
}

impl Handler {
    pub fn new(catalog: Arc<Catalog>, workers: usize) -> Handler {
        Handler {
            catalog,
            workers,
            manager: Arc::new(ConnectionManager::new()),
            next_pid: AtomicI32::new(1000),
        }
    }

    pub fn connection_manager(&self) -> Arc<ConnectionManager> {
        Arc::clone(&self.manager)
    }
}

pub fn to_pg_error(err: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(err)))
}

fn error_info(err: Error) -> ErrorInfo {
    let severity = if err.is_fatal() { "FATAL" } else { "ERROR" };
    let mut info = ErrorInfo::new(
        severity.to_string(),
        err.sqlstate().to_string(),
        err.to_string(),
    );
    info.hint = err.hint();
    info.detail = err.detail();
    info.where_context = err.context();
    info.where_context = err.context();
    if let Error::Syntax {
        position: Some(p), ..
    } = &err
    {
        info.position = Some(p.to_string());
    }
    info
}

fn session_of<C: ClientInfo>(client: &C) -> PgWireResult<Arc<SessionHandle>> {
    client
        .session_extensions()
        .get::<SessionHandle>()
        .ok_or_else(|| to_pg_error(Error::Internal("no session for this connection".into())))
}

#[async_trait]
impl StartupHandler for Handler {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(ref startup) = message else {
            return Ok(());
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        if client.session_extensions().get::<OverLimit>().is_some() {
            return Err(to_pg_error(Error::TooManyConnections));
        }
        let user = client
            .metadata()
            .get("user")
            .cloned()
            .unwrap_or_else(|| "eddy".into());
        if let Some(db) = client.metadata().get("database") {
            if db != super::DATABASE {
                return Err(to_pg_error(Error::UndefinedDatabase(db.clone())));
            }
        }
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        let secret = SecretKey::I32(rand_secret(pid));
        client.set_pid_and_secret_key(pid, secret.clone());
        let (handle, guard) = self.manager.register(pid, secret);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert(guard);
        let session = self
            .new_session(client.metadata(), &user, pid)
            .map_err(to_pg_error)?;
        client.session_extensions().insert(SessionHandle {
            session: Mutex::new(session),
            copy: Mutex::new(None),
        });
        finish_authentication(client, self).await
    }
}

/// A secret the cancel key is checked against; unguessable enough for a
/// loopback-first server without making `rand` a dependency.
fn rand_secret(pid: i32) -> i32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i32(pid);
    h.finish() as i32
}

impl Handler {
    fn new_session(
        &self,
        metadata: &HashMap<String, String>,
        user: &str,
        pid: i32,
    ) -> crate::Result<Session> {
        let query = QueryContext::new(Arc::clone(&self.catalog), self.workers, user, pid)?;
        let mut session = Session::new(Arc::clone(&self.catalog), query, user);
        for (name, value) in metadata {
            if matches!(
                name.as_str(),
                "user" | "database" | "options" | "replication"
            ) {
                continue;
            }
            // Unknown startup parameters are ignored rather than refused: drivers send extras.
            if let Err(e) = session.settings.assign(name, value) {
                tracing::debug!(%name, %value, error = %e, "ignoring startup parameter");
            }
        }
        // Startup values reach the client in the startup ParameterStatus.
        session.settings.take_reports();
        Ok(session)
    }
}

impl ServerParameterProvider for Handler {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        let settings = client
            .session_extensions()
            .get::<SessionHandle>()
            .and_then(|h| h.session.try_lock().ok().map(|s| s.settings.clone()))?;
        let names = [
            "server_version",
            "server_encoding",
            "client_encoding",
            "DateStyle",
            "IntervalStyle",
            "TimeZone",
            "integer_datetimes",
            "standard_conforming_strings",
            "is_superuser",
            "application_name",
            "default_transaction_read_only",
            "search_path",
        ];
        let mut params: HashMap<String, String> = names
            .iter()
            .filter_map(|n| settings.get(n).map(|v| (n.to_string(), v.to_string())))
            .collect();
        params.insert("in_hot_standby".into(), "off".into());
        if let Some(user) = client.metadata().get("user") {
            params.insert("session_authorization".into(), user.clone());
        }
        Some(params)
    }
}

/// Turns an [`Output`] into a pgwire response.
async fn respond(
    handle: &SessionHandle,
    output: Output,
    format: Option<&Format>,
) -> PgWireResult<Response> {
    let zone = {
        let session = handle.session.lock().await;
        let setting = session.settings.get("TimeZone");
        setting.and_then(parse_zone).unwrap_or_default()
    };
    Ok(match output {
        Output::Rows(mut batches) => {
            let fields = Arc::new(field_infos(&batches.schema(), format));
            // Run the plan up to its first batch here, where a cancel request
            // can still interrupt it and an error can still be reported
            // before any row is sent.
            let first = match batches.next().await {
                Some(Err(e)) => return Ok(Response::Error(Box::new(error_info(Error::from(e))))),
                other => other,
            };
            let batches = stream::iter(first).chain(batches);
            let row_fields = Arc::clone(&fields);
            let rows = batches.flat_map(move |batch| {
                let encoded = match batch {
                    Ok(batch) => encode_batch(&batch, &row_fields, &zone),
                    Err(e) => Err(to_pg_error(Error::from(e))),
                };
                match encoded {
                    Ok(rows) => stream::iter(rows.into_iter().map(Ok)).left_stream(),
                    Err(e) => stream::iter(vec![Err(e)]).right_stream(),
                }
            });
            Response::Query(QueryResponse::new(fields, rows))
        }
        Output::Batches { schema, batches } => {
            let fields = Arc::new(field_infos(&schema, format));
            let mut rows = Vec::new();
            for batch in &batches {
                rows.extend(encode_batch(batch, &fields, &zone)?.into_iter().map(Ok));
            }
            Response::Query(QueryResponse::new(fields, stream::iter(rows)))
        }
        Output::Command(tag) => Response::Execution(to_tag(tag)),
        Output::TransactionStart(tag) => Response::TransactionStart(to_tag(tag)),
        Output::TransactionEnd(tag) => Response::TransactionEnd(to_tag(tag)),
        Output::CopyIn(copy) => {
            let columns = copy.columns.len();
            let decoder = CopyDecoder::with_threads(
                copy.schema(),
                copy.options.clone(),
                COPY_BATCH_ROWS,
                copy_threads(),
            );
            *handle.copy.lock().await = Some(CopyState {
                copy,
                decoder,
                batches: Vec::new(),
                error: None,
            });
            Response::CopyIn(CopyResponse::new(0, columns, stream::empty()))
        }
        Output::CopyOut {
            options,
            schema,
            batches,
        } => {
            let data = encode_copy(&batches, &schema, &options, &zone)?;
            Response::CopyOut(CopyResponse::new(
                0,
                schema.fields().len(),
                stream::iter(data.into_iter().map(Ok)),
            ))
        }
    })
}

fn to_tag(tag: sql::CommandTag) -> Tag {
    let mut out = Tag::new(&tag.command);
    if let Some(oid) = tag.oid {
        out = out.with_oid(oid);
    }
    if let Some(rows) = tag.rows {
        out = out.with_rows(rows);
    }
    out
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let handle = session_of(client)?;
        let statements = sql::parse_script(query).map_err(to_pg_error)?;
        let mut responses = Vec::with_capacity(statements.len());
        for parsed in statements {
            let stmt = match parsed {
                sql::Parsed::Sql(stmt) => stmt,
                sql::Parsed::Source(source) => {
                    let result = handle.session.lock().await.execute_source(source).await;
                    match result {
                        Ok(output) => responses.push(respond(&handle, output, None).await?),
                        Err(e) => {
                            responses.push(Response::Error(Box::new(error_info(
                                e.with_statement_text(query),
                            ))));
                            break;
                        }
                    }
                    continue;
                }
            };
            // Drivers free their protocol-level prepared statements with SQL.
            if let sql::Statement::Deallocate { name, .. } = &stmt {
                let tag = if name.value.eq_ignore_ascii_case("all") && name.quote_style.is_none() {
                    // Statements stay until the connection ends; a new Parse
                    // under the same name replaces them.
                    "DEALLOCATE ALL"
                } else {
                    client.portal_store().rm_statement(&name.value);
                    "DEALLOCATE"
                };
                responses.push(Response::Execution(Tag::new(tag)));
                continue;
            }
            let result = {
                let mut session = handle.session.lock().await;
                let result = session.execute(stmt, &[]).await;
                report_settings(client, &mut session).await?;
                result
            };
            match result {
                Ok(output) => {
                    let copy = matches!(output, Output::CopyIn(_));
                    responses.push(respond(&handle, output, None).await?);
                    if copy {
                        break;
                    }
                }
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(
                        e.with_statement_text(query),
                    ))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// ParameterStatus for reported settings a statement changed, as PostgreSQL does.
async fn report_settings<C>(client: &mut C, session: &mut Session) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for (name, value) in session.settings.take_reports() {
        client
            .feed(PgWireBackendMessage::ParameterStatus(
                pgwire::messages::startup::ParameterStatus::new(name, value),
            ))
            .await?;
    }
    Ok(())
}

/// Parses and describes statements for the extended protocol.
#[derive(Debug, Default)]
pub struct StatementParser;

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Arc<Prepared>>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let handle = session_of(client)?;
        let declared: Vec<_> = types
            .iter()
            .map(|t| t.as_ref().and_then(arrow_type_of_pg))
            .collect();
        let prepared = handle.session.lock().await.prepare(sql, &declared).await;
        match prepared {
            Ok(p) => Ok(p.map(Arc::new)),
            Err(e) => Err(to_pg_error(e.with_statement_text(sql))),
        }
    }

    fn get_parameter_types(&self, stmt: &Arc<Prepared>) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .param_types
            .iter()
            .enumerate()
            .map(
                |(i, t)| match (stmt.param_sql_types.get(i).and_then(Option::as_ref), t) {
                    (Some(sql_type), _) => super::types::pg_type_of_sql(sql_type),
                    (None, t) => match t {
                        Some(dt) => pg_type(&datafusion::arrow::datatypes::Field::new(
                            "p",
                            dt.clone(),
                            true,
                        )),
                        None => Type::TEXT,
                    },
                },
            )
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Arc<Prepared>,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(stmt
            .result_schema
            .as_ref()
            .map(|schema| field_infos(schema, format))
            .unwrap_or_default())
    }
}

fn decode_params(
    portal: &Portal<Arc<Prepared>>,
) -> PgWireResult<Vec<datafusion::scalar::ScalarValue>> {
    let stmt = &portal.statement.statement;
    (0..portal.parameter_len())
        .map(|i| {
            let declared = portal.statement.parameter_types.get(i).cloned().flatten();
            let inferred = stmt.param_types.get(i).cloned().flatten();
            let target = inferred
                .or_else(|| declared.as_ref().and_then(arrow_type_of_pg))
                .unwrap_or(datafusion::arrow::datatypes::DataType::Utf8);
            let hinted = stmt.param_sql_types.get(i).cloned().flatten();
            let pg = declared
                .or_else(|| hinted.as_ref().map(super::types::pg_type_of_sql))
                .unwrap_or_else(|| {
                    pg_type(&datafusion::arrow::datatypes::Field::new(
                        "p",
                        target.clone(),
                        true,
                    ))
                });
            let bytes = portal.parameters.get(i).and_then(|b| b.as_deref());
            decode_param(bytes, &pg, portal.parameter_format.is_binary(i), &target)
                .map_err(to_pg_error)
        })
        .collect()
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Arc<Prepared>;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        Arc::new(StatementParser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Arc<Prepared>>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let handle = session_of(client)?;
        let params = decode_params(portal)?;
        let stmt = &portal.statement.statement;
        let result = {
            let mut session = handle.session.lock().await;
            let result = session.execute_prepared(stmt, &params).await;
            report_settings(client, &mut session).await?;
            result
        };
        match result {
            Ok(output) => respond(&handle, output, Some(&portal.result_column_format)).await,
            Err(e) => Err(to_pg_error(e.with_statement_text(&stmt.sql))),
        }
    }
}

#[async_trait]
impl CopyHandler for Handler {
    async fn on_copy_data<C>(&self, client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let handle = session_of(client)?;
        let mut copy = handle.copy.lock().await;
        let Some(state) = copy.as_mut() else {
            return Err(to_pg_error(Error::ProtocolViolation(
                "COPY data without COPY".into(),
            )));
        };
        if state.error.is_none() {
            match state.decoder.push(&data.data) {
                Ok(batches) => state.batches.extend(batches),
                Err(e) => {
                    // Keep reading to CopyDone, then report; nothing is stored.
                    state.batches.clear();
                    state.error = Some(copy_error(&state.copy, e));
                }
            }
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let handle = session_of(client)?;
        let Some(mut state) = handle.copy.lock().await.take() else {
            return Err(to_pg_error(Error::ProtocolViolation(
                "COPY done without COPY".into(),
            )));
        };
        if let Some(err) = state.error.take() {
            return Err(to_pg_error(err));
        }
        match state.decoder.finish() {
            Ok(last) => state.batches.extend(last),
            Err(e) => return Err(to_pg_error(copy_error(&state.copy, e))),
        }
        let output = handle
            .session
            .lock()
            .await
            .finish_copy_in(&state.copy, std::mem::take(&mut state.batches))
            .await
            .map_err(to_pg_error)?;
        if let Output::Command(tag) = output {
            client
                .send(PgWireBackendMessage::CommandComplete(to_tag(tag).into()))
                .await?;
        }
        Ok(())
    }

    async fn on_copy_fail<C>(
        &self,
        client: &mut C,
        fail: pgwire::messages::copy::CopyFail,
    ) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Ok(handle) = session_of(client) {
            handle.copy.lock().await.take();
        }
        to_pg_error(Error::QueryCanceled)
            .tap_message(format!("COPY from stdin failed: {}", fail.message))
    }
}

fn copy_error(copy: &CopyIn, e: sql::copy_format::CopyError) -> Error {
    Error::BadCopyData {
        sqlstate: e.sqlstate,
        context: e.context(&copy.table.def().name),
        message: e.message,
    }
}

trait TapMessage {
    fn tap_message(self, message: String) -> PgWireError;
}

impl TapMessage for PgWireError {
    fn tap_message(self, message: String) -> PgWireError {
        match self {
            PgWireError::UserError(mut info) => {
                info.message = message;
                PgWireError::UserError(info)
            }
            other => other,
        }
    }
}
