//! EddyDB: a streaming SQL database server.
//!
//! Layout (one line per module; each file's own `//!` says more):
//!
//! - [`config`]   — the server's settings, parsed from flags and `EDDYDB_*` variables.
//! - [`server`]   — accept loop, connection limit, clean shutdown.
//! - [`protocol`] — the Postgres wire protocol (pgwire): sessions, statements,
//!   portals, COPY, and the only place that knows type OIDs.
//! - [`sql`]      — statement execution: DDL, DML, COPY, SET/SHOW, transactions.
//! - [`query`]    — DataFusion integration: session contexts, table providers,
//!   the `pg_catalog` / `information_schema` compatibility layer.
//! - [`dataflow`] — the incremental engine: change batches, operators,
//!   arrangements, worker threads, and the planner from DataFusion plans.
//! - [`engine`]   — materialized views and the commit path that publishes a
//!   table change and every view's change to it as one epoch.
//! - [`source`]   — streams from outside: the source DDL, payload decoders and
//!   the built-in generator (not yet run by the server).
//! - [`catalog`]  — relations and their definitions.
//! - [`storage`]  — durable table state: in-memory Arrow chunks backed by a sled log.
//! - [`types`]    — the SQL types EddyDB stores and their Arrow representation.
//! - [`error`]    — the one error enum and its SQLSTATE mapping.

pub mod catalog;
pub mod config;
pub mod dataflow;
pub mod engine;
pub mod error;
pub mod function;
pub mod protocol;
pub mod query;
pub mod server;
pub mod source;
pub mod sql;
pub mod storage;
pub mod types;

pub use config::Config;
pub use error::{Error, Result};
