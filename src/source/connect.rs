//! From a stored [`SourceDef`] to a running connector: completing a new
//! definition (defaults that must not change across restarts), resolving
//! where reading starts, and opening the [`Reader`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::datagen::Datagen;
use super::def::{Connector, SourceDef};
use super::generated::DatagenReader;
use super::reader::{Offsets, Reader};
use super::runner::Watermark;
use crate::catalog::ColumnDef;
use crate::error::Result;

/// Completes a new source's definition and checks that it can run:
/// a datagen source gets its start time fixed (so a restart generates the
/// same rows) and, with a named generator and no column list, the
/// generator's columns; the generator options and the watermark expression
/// are checked.
pub fn complete(def: &mut SourceDef, now: DateTime<Utc>) -> Result<()> {
    if let Connector::Datagen { options } = &mut def.connector {
        options
            .entry("datagen.start.time".to_string())
            .or_insert_with(|| now.to_rfc3339());
        if let (false, Some(name)) = (def.columns_declared, options.get("generator")) {
            let scenario = super::scenarios::Scenario::named(name)?;
            def.columns = scenario
                .columns()
                .iter()
                .map(|(name, sql_type)| ColumnDef {
                    name: (*name).to_string(),
                    sql_type: sql_type.clone(),
                    not_null: false,
                    default: None,
                })
                .collect();
        }
    }
    if let Connector::Datagen { options } = &def.connector {
        generator(def, options)?;
    }
    Watermark::of(def)?;
    Ok(())
}

fn generator(def: &SourceDef, options: &BTreeMap<String, String>) -> Result<Datagen> {
    let declared = if def.columns_declared {
        def.arrow_schema()
    } else {
        std::sync::Arc::new(datafusion::arrow::datatypes::Schema::empty())
    };
    Datagen::open(declared, options, Utc::now())
}

/// Where a new reader of `def` starts: concrete positions, resolved once
/// and stored, so a restart reads from the same place.
pub fn resolve_start(def: &SourceDef) -> Result<Offsets> {
    match &def.connector {
        Connector::Datagen { .. } => Ok(Offsets::from([(0, 0)])),
        Connector::Kafka { .. } => super::kafka::KafkaReader::resolve_start(
            def,
            &super::kafka::KafkaOptions {
                max_message_bytes: def.run.max_message_bytes,
                ..super::kafka::KafkaOptions::default()
            },
        ),
    }
}

/// Opens a reader of `def` at `start`, decoding large polls on
/// `decode_threads` threads.
pub fn open_reader(
    def: &SourceDef,
    start: &Offsets,
    decode_threads: usize,
) -> Result<Box<dyn Reader>> {
    match &def.connector {
        Connector::Datagen { options } => Ok(Box::new(DatagenReader::open(
            def,
            generator(def, options)?,
            start,
            decode_threads,
        )?)),
        Connector::Kafka { .. } => Ok(Box::new(super::kafka::KafkaReader::open(
            def,
            start,
            super::kafka::KafkaOptions {
                max_message_bytes: def.run.max_message_bytes,
                decode_threads,
                ..super::kafka::KafkaOptions::default()
            },
        )?)),
    }
}
