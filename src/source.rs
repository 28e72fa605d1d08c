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
//! - [`scenarios`] — named generators (`generator = 'logins'`, ...) for the
//!   stories in `shared/SCENARIOS.md`.
//!
//! Not wired into the server yet: the statements are parsed and checked, and
//! the decoders and generators are tested on their own. Running sources
//! (Kafka consumers, offsets, watermarks, feeding views) comes next.

pub mod datagen;
pub mod decode;
pub mod def;
pub mod reader;
pub mod scenarios;
