//! Sources: streams that enter EddyDB from outside (Kafka topics, the
//! built-in `datagen` generator) and the tables such streams feed.
//!
//! - [`def`]       — the DDL (`CREATE SOURCE`, `CREATE TABLE … WITH
//!   (connector = …)`, `DROP SOURCE`, `SHOW SOURCES`) parsed and checked into
//!   a [`def::SourceDef`], the definition the catalog stores.
//! - [`decode`]    — message payloads (JSON, CSV) → Arrow rows of the declared
//!   schema, with bad records set aside and explained.
//! - [`datagen`]   — the built-in `datagen` connector: per-column sequence,
//!   random and choice generators, deterministic in (seed, column, row).
//! - [`reader`]    — the [`reader::Reader`] trait connectors implement: polls of
//!   decoded rows with per-partition positions and bad messages.
//! - [`kafka`]     — the Kafka connector's [`reader::Reader`]: startup offsets,
//!   a consumer with every partition assigned, payloads and keys into rows.
//! - [`generated`] — the datagen connector's [`reader::Reader`], paced in
//!   wall-clock time.
//! - [`scenarios`] — named generators (`generator = 'logins'`, ...) for the
//!   stories in `shared/SCENARIOS.md`.
//! - [`connect`]   — a stored definition → start positions and a reader.
//! - [`runner`]    — per reader, a polling and a committing thread: commit through the engine
//!   (rows into one view, or rows plus positions into a table), watermarks.
//! - [`status`]    — per-partition status and the durable bad-record log
//!   behind `eddy_catalog.source_partitions` / `source_errors`.

pub mod connect;
pub mod datagen;
pub mod decode;
pub mod def;
pub mod generated;
pub mod kafka;
pub mod reader;
pub mod runner;
pub mod scenarios;
pub mod status;
