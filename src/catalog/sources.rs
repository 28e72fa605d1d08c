//! Sources in the catalog: creating and dropping them, and starting and
//! stopping their readers (see [`crate::source::runner`] for what a reader
//! does and why a view has one of its own).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Catalog, ColumnDef, TableDef};
use crate::error::{Error, Result};
use crate::source::connect;
use crate::source::def::{SourceDef, SourceKind};
use crate::source::reader::Offsets;
use crate::source::runner::{self, ReaderTask, RunningReader, Target};
use crate::source::status::ReaderStatus;
use crate::storage::Change;

/// A source (or the source side of a connector-fed table) in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceEntry {
    /// For a table, the table's id.
    pub id: u64,
    pub def: SourceDef,
}

impl SourceEntry {
    pub fn oid(&self) -> u32 {
        super::FIRST_OID + (self.id as u32) * 2
    }

    pub fn connector_name(&self) -> &'static str {
        match self.def.connector {
            crate::source::def::Connector::Kafka { .. } => "kafka",
            crate::source::def::Connector::Datagen { .. } => "datagen",
        }
    }
}

impl Catalog {
    pub fn source(&self, name: &str) -> Option<Arc<SourceEntry>> {
        self.sources
            .read()
            .expect("catalog lock")
            .get(name)
            .cloned()
    }

    /// Every source and connector-fed table, by name.
    pub fn sources(&self) -> Vec<Arc<SourceEntry>> {
        self.sources
            .read()
            .expect("catalog lock")
            .values()
            .cloned()
            .collect()
    }

    /// A stream source (not a connector-fed table) by name.
    pub fn stream_source(&self, name: &str) -> Option<Arc<SourceEntry>> {
        self.source(name)
            .filter(|s| s.def.kind == SourceKind::Source)
    }

    /// The status of every running (or stopped) reader.
    pub fn reader_statuses(&self) -> Vec<Arc<ReaderStatus>> {
        self.readers
            .lock()
            .expect("readers lock")
            .iter()
            .map(|r| Arc::clone(&r.status))
            .collect()
    }

    pub fn source_errors(&self) -> &crate::source::status::ErrorLog {
        &self.errors
    }

    /// The events readers found too late to read.
    pub fn late_events(&self) -> &crate::source::status::ErrorLog {
        &self.late
    }

    /// `CREATE SOURCE` or a connector-fed `CREATE TABLE`. Blocking (a Kafka
    /// source asks its broker where to start). `Ok(false)` when the name is
    /// taken and `if_not_exists` is set.
    pub fn create_source(&self, mut def: SourceDef, if_not_exists: bool) -> Result<bool> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        if self.relation_exists(&def.name) {
            return if if_not_exists {
                Ok(false)
            } else {
                Err(Error::DuplicateTable(def.name.clone()))
            };
        }
        connect::complete(&mut def, chrono::Utc::now())?;
        // Where reading starts; for Kafka this is also the reachability check.
        let start = connect::resolve_start(&def)?;
        let id = self.store.next_table_id()?;
        let entry = Arc::new(SourceEntry { id, def });
        if entry.def.kind == SourceKind::Table {
            let table = self.create_fed_table(&entry, &start)?;
            self.store.put_source_def(&entry.def.name, entry.as_ref())?;
            self.start_table_reader(&entry, table, start)?;
        } else {
            self.store.put_source_def(&entry.def.name, entry.as_ref())?;
        }
        self.sources
            .write()
            .expect("catalog lock")
            .insert(entry.def.name.clone(), entry);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// The table of a connector-fed `CREATE TABLE`, holding its start
    /// positions from the first moment.
    fn create_fed_table(
        &self,
        entry: &SourceEntry,
        start: &Offsets,
    ) -> Result<Arc<crate::storage::Table>> {
        let def = &entry.def;
        let mut columns = def.columns.clone();
        columns.extend(def.includes.iter().map(|i| ColumnDef {
            name: i.column.clone(),
            sql_type: i.kind.sql_type(),
            not_null: !i.kind.nullable(),
            default: None,
        }));
        let table_def = TableDef {
            id: entry.id,
            name: def.name.clone(),
            columns,
            primary_key: def.primary_key.clone(),
        };
        self.store.put_table_def(&table_def)?;
        let table = Arc::new(self.store.open_table(table_def)?);
        let positions = runner::encode_positions(start)?;
        table.prepare(Change::default(), Some(&positions))?;
        self.tables
            .write()
            .expect("catalog lock")
            .insert(def.name.clone(), Arc::clone(&table));
        Ok(table)
    }

    fn start_table_reader(
        &self,
        entry: &SourceEntry,
        table: Arc<crate::storage::Table>,
        start: Offsets,
    ) -> Result<()> {
        self.start_reader(
            entry,
            entry.id,
            &entry.def.name,
            Target::Table(table),
            start,
            Offsets::new(),
        )
    }

    fn start_reader(
        &self,
        entry: &SourceEntry,
        id: u64,
        feeds: &str,
        target: Target,
        start: Offsets,
        start_watermarks: Offsets,
    ) -> Result<()> {
        let def = entry.def.clone();
        let status = Arc::new(ReaderStatus::new(
            &def.name,
            feeds,
            &start,
            def.run.idle_timeout_ms,
        ));
        let reader = connect::open_reader(&def, &start, self.engine.worker_count())?;
        let running = ReaderTask {
            id,
            def,
            reader,
            target,
            engine: Arc::clone(&self.engine),
            errors: self.errors.clone(),
            late: self.late.clone(),
            status,
            start,
            start_watermarks,
        }
        .spawn()?;
        self.readers.lock().expect("readers lock").push(running);
        Ok(())
    }

    /// Starts the readers of a materialized view over stream sources: at
    /// the positions its restored checkpoint holds (`resume`), else at the
    /// positions stored with the view, else at positions resolved now (a
    /// new view). Returns the start positions per source, to store with a
    /// new view.
    pub(super) fn start_view_readers(
        &self,
        view: &crate::engine::ViewDef,
        resume: Option<&crate::source::reader::Resume>,
    ) -> Result<std::collections::BTreeMap<String, Offsets>> {
        let mut starts = std::collections::BTreeMap::new();
        for name in &view.depends_on {
            let Some(source) = self.stream_source(name) else {
                continue;
            };
            let start = match (
                resume.and_then(|r| r.positions.get(name)),
                view.stream_starts.get(name),
            ) {
                (Some(resumed), _) => resumed.clone(),
                (None, Some(stored)) => stored.clone(),
                (None, None) => connect::resolve_start(&source.def)?,
            };
            starts.insert(name.clone(), start.clone());
            if let Err(e) = self.start_reader(
                &source,
                view.id,
                &view.name,
                Target::View { id: view.id },
                start,
                resume
                    .and_then(|r| r.watermarks.get(name))
                    .cloned()
                    .unwrap_or_default(),
            ) {
                self.stop_readers_of(view.id);
                return Err(e);
            }
        }
        Ok(starts)
    }

    /// Stops the readers feeding view or table `id`.
    pub(super) fn stop_readers_of(&self, id: u64) {
        let stopping: Vec<RunningReader> = {
            let mut readers = self.readers.lock().expect("readers lock");
            let (gone, kept) = readers.drain(..).partition(|r| r.id == id);
            *readers = kept;
            gone
        };
        for reader in stopping {
            reader.stop();
        }
        if let Err(e) = self.errors.forget(id).and_then(|()| self.late.forget(id)) {
            tracing::warn!(error = %e, "cannot forget the bad records of a dropped reader");
        }
    }

    /// Starts the readers of connector-fed tables, at the positions stored
    /// with their rows. Called once at start, after views are restored.
    pub fn start_table_readers(&self) -> Result<()> {
        for entry in self.sources() {
            if entry.def.kind != SourceKind::Table {
                continue;
            }
            let Some(table) = self.table(&entry.def.name) else {
                tracing::error!(table = %entry.def.name, "connector table has no rows tree");
                continue;
            };
            let start = match table.source_positions()? {
                Some(bytes) => runner::decode_positions(&bytes)?,
                None => connect::resolve_start(&entry.def)?,
            };
            if let Err(e) = self.start_table_reader(&entry, table, start) {
                tracing::error!(table = %entry.def.name, error = %e, "cannot start the table's source");
            }
        }
        Ok(())
    }

    /// Stops every reader (shutdown).
    pub fn stop_all_readers(&self) {
        let all: Vec<RunningReader> = self
            .readers
            .lock()
            .expect("readers lock")
            .drain(..)
            .collect();
        for reader in all {
            reader.stop();
        }
    }

    /// `DROP SOURCE`: a stream source, after (with `cascade`) the views
    /// over it. A connector-fed table is dropped with DROP TABLE.
    pub fn drop_source(&self, name: &str, if_exists: bool, cascade: bool) -> Result<bool> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        let Some(entry) = self.source(name) else {
            if self.relation_exists(name) {
                return Err(Error::WrongObjectType(format!(
                    "\"{name}\" is not a source"
                )));
            }
            return if if_exists {
                Ok(false)
            } else {
                Err(Error::UndefinedTableToDrop(name.to_string()))
            };
        };
        if entry.def.kind == SourceKind::Table {
            return Err(Error::WrongObjectType(format!(
                "\"{name}\" is a table fed by a source; use DROP TABLE"
            )));
        }
        self.drop_dependents(name, "source", cascade)?;
        self.store.delete_source_def(name)?;
        self.sources.write().expect("catalog lock").remove(name);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// The source side of a connector-fed table that is being dropped.
    pub(super) fn forget_table_source(&self, table_id: u64, name: &str) -> Result<()> {
        if self.source(name).is_none() {
            return Ok(());
        }
        self.stop_readers_of(table_id);
        self.store.delete_source_def(name)?;
        self.sources.write().expect("catalog lock").remove(name);
        Ok(())
    }
}
