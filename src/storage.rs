//! Durable state. sled holds the catalog (one `meta` tree) and, per table, a
//! log of committed changes (`rows/<id>` trees); the rows themselves are
//! served from memory as Arrow chunks rebuilt from that log at start.
//!
//! **Architecture Invariant:** a change is in sled, flushed, before any reader
//! can see it and before the client is told it committed.

mod log;
mod table;

use std::path::Path;

pub use log::LogRecord;
pub use table::{Change, PreparedChange, Table};

use crate::catalog::TableDef;
use crate::error::{Error, Result};

const TABLE_DEF_PREFIX: &str = "table/";
const VIEW_DEF_PREFIX: &str = "view/";
const SOURCE_DEF_PREFIX: &str = "source/";
const FUNCTION_DEF_PREFIX: &str = "function/";
const NEXT_TABLE_ID: &str = "next_table_id";
const ROWS_TREE_PREFIX: &str = "rows/";

/// The sled database under the data directory.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    dir: std::path::PathBuf,
}

impl Store {
    pub fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let db = sled::Config::new()
            .path(data_dir.join("sled"))
            // Rows are served from memory; sled's cache only speeds up start.
            .cache_capacity(128 * 1024 * 1024)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| {
                Error::Storage(format!(
                    "cannot open data directory {}: {e} (is another eddydb using it?)",
                    data_dir.display()
                ))
            })?;
        let meta = db.open_tree("meta")?;
        Ok(Store {
            db,
            meta,
            dir: data_dir.to_path_buf(),
        })
    }

    pub fn table_defs(&self) -> Result<Vec<TableDef>> {
        let mut defs = Vec::new();
        for entry in self.meta.scan_prefix(TABLE_DEF_PREFIX) {
            let (_, value) = entry?;
            let def: TableDef = serde_json::from_slice(&value)
                .map_err(|e| Error::Storage(format!("corrupt table definition: {e}")))?;
            defs.push(def);
        }
        Ok(defs)
    }

    pub fn next_table_id(&self) -> Result<u64> {
        let next = self
            .meta
            .update_and_fetch(NEXT_TABLE_ID, |old| {
                let n = old.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
                Some((n + 1).to_be_bytes().to_vec())
            })?
            .ok_or_else(|| Error::Internal("table id counter vanished".into()))?;
        Ok(u64::from_be_bytes(
            next.as_ref().try_into().unwrap_or([0; 8]),
        ))
    }

    pub fn put_table_def(&self, def: &TableDef) -> Result<()> {
        let json = serde_json::to_vec(def).map_err(|e| Error::Internal(e.to_string()))?;
        self.meta
            .insert(format!("{TABLE_DEF_PREFIX}{}", def.name), json)?;
        self.flush()
    }

    pub fn delete_table_def(&self, def: &TableDef) -> Result<()> {
        self.meta
            .remove(format!("{TABLE_DEF_PREFIX}{}", def.name))?;
        self.flush()
    }

    pub fn view_defs(&self) -> Result<Vec<crate::engine::ViewDef>> {
        self.defs(VIEW_DEF_PREFIX, "view")
    }

    pub fn put_view_def(&self, def: &crate::engine::ViewDef) -> Result<()> {
        self.put_def(VIEW_DEF_PREFIX, &def.name, def)
    }

    pub fn delete_view_def(&self, def: &crate::engine::ViewDef) -> Result<()> {
        self.delete_def(VIEW_DEF_PREFIX, &def.name)
    }

    /// Stored source definitions (JSON values of the caller's type).
    pub fn source_defs<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>> {
        self.defs(SOURCE_DEF_PREFIX, "source")
    }

    pub fn put_source_def<T: serde::Serialize>(&self, name: &str, def: &T) -> Result<()> {
        self.put_def(SOURCE_DEF_PREFIX, name, def)
    }

    pub fn delete_source_def(&self, name: &str) -> Result<()> {
        self.delete_def(SOURCE_DEF_PREFIX, name)
    }

    pub fn function_defs(&self) -> Result<Vec<crate::function::FunctionDef>> {
        self.defs(FUNCTION_DEF_PREFIX, "function")
    }

    pub fn put_function_def(&self, def: &crate::function::FunctionDef) -> Result<()> {
        self.put_def(FUNCTION_DEF_PREFIX, &def.name, def)
    }

    pub fn delete_function_def(&self, name: &str) -> Result<()> {
        self.delete_def(FUNCTION_DEF_PREFIX, name)
    }

    /// The definitions stored under `prefix` (JSON), of a `kind` named in errors.
    fn defs<T: serde::de::DeserializeOwned>(&self, prefix: &str, kind: &str) -> Result<Vec<T>> {
        let mut defs = Vec::new();
        for entry in self.meta.scan_prefix(prefix) {
            let (_, value) = entry?;
            defs.push(
                serde_json::from_slice(&value)
                    .map_err(|e| Error::Storage(format!("corrupt {kind} definition: {e}")))?,
            );
        }
        Ok(defs)
    }

    /// Stores a definition durably (flushed before returning).
    fn put_def<T: serde::Serialize>(&self, prefix: &str, name: &str, def: &T) -> Result<()> {
        let json = serde_json::to_vec(def).map_err(|e| Error::Internal(e.to_string()))?;
        self.meta.insert(format!("{prefix}{name}"), json)?;
        self.flush()
    }

    fn delete_def(&self, prefix: &str, name: &str) -> Result<()> {
        self.meta.remove(format!("{prefix}{name}"))?;
        self.flush()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A tree of the database by name (created when missing).
    pub fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }

    pub fn open_table(&self, def: TableDef) -> Result<Table> {
        let tree = self.db.open_tree(rows_tree_name(def.id))?;
        let files = self.record_dir(def.id);
        Table::open(def, tree, self.db.clone(), Some(files))
    }

    /// Where a table's large log records are kept, one file each.
    fn record_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.join("tables").join(id.to_string())
    }

    pub fn drop_table_tree(&self, id: u64) -> Result<()> {
        self.db.drop_tree(rows_tree_name(id))?;
        self.flush()?;
        self.remove_record_dir(id)
    }

    fn remove_record_dir(&self, id: u64) -> Result<()> {
        let dir = self.record_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Storage(format!(
                "cannot remove {}: {e}",
                dir.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Removes row trees whose table definition is gone (a crash during DROP),
    /// and their record files.
    pub fn drop_orphan_trees(&self, live: impl Iterator<Item = u64>) -> Result<()> {
        let live: std::collections::HashSet<u64> = live.collect();
        let names: std::collections::HashSet<String> =
            live.iter().copied().map(rows_tree_name).collect();
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name).to_string();
            if name.starts_with(ROWS_TREE_PREFIX) && !names.contains(&name) {
                tracing::info!(tree = %name, "removing rows of a dropped table");
                self.db.drop_tree(name.as_bytes())?;
            }
        }
        let Ok(dirs) = std::fs::read_dir(self.dir.join("tables")) else {
            return Ok(());
        };
        for dir in dirs.flatten() {
            let id = dir.file_name().to_str().and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id.filter(|id| !live.contains(id)) {
                tracing::info!(table = id, "removing log record files of a dropped table");
                self.remove_record_dir(id)?;
            }
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

fn rows_tree_name(id: u64) -> String {
    format!("{ROWS_TREE_PREFIX}{id}")
}
