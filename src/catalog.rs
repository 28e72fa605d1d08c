//! Relations and their definitions: what tables exist, their columns, keys
//! and defaults. The catalog is durable (a sled tree) and is the only owner
//! of the name → relation map; storage of each relation's rows is
//! [`crate::storage`]'s business.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Store, Table};
use crate::types::SqlType;

/// Name of the hidden row-id column every stored batch ends with.
pub const ROW_ID: &str = "__eddy_row_id";
/// Object ids of user relations start here, as in PostgreSQL.
const FIRST_OID: u32 = 16384;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub sql_type: SqlType,
    pub not_null: bool,
    /// The DEFAULT expression as SQL text, evaluated at each INSERT.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub id: u64,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Indexes into `columns`; empty for a multiset table.
    pub primary_key: Vec<usize>,
}

impl TableDef {
    pub fn oid(&self) -> u32 {
        FIRST_OID + (self.id as u32) * 2
    }

    pub fn pk_index_oid(&self) -> u32 {
        self.oid() + 1
    }

    pub fn pk_constraint_name(&self) -> String {
        format!("{}_pkey", self.name)
    }

    /// The schema users see.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.fields()))
    }

    /// The stored schema: the user columns plus the row id.
    pub fn storage_schema(&self) -> SchemaRef {
        let mut fields = self.fields();
        fields.push(Field::new(ROW_ID, DataType::UInt64, false));
        Arc::new(Schema::new(fields))
    }

    fn fields(&self) -> Vec<Field> {
        self.columns
            .iter()
            .map(|c| c.sql_type.field(&c.name, !c.not_null))
            .collect()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// Every relation of the database, durable.
#[derive(Debug)]
pub struct Catalog {
    store: Store,
    tables: RwLock<BTreeMap<String, Arc<Table>>>,
    /// Serialises DDL so ids and names are decided one at a time.
    ddl: Mutex<()>,
    /// Bumped by every DDL statement; prepared plans older than it are re-planned.
    version: AtomicU64,
}

impl Catalog {
    pub fn open(data_dir: &std::path::Path) -> Result<Catalog> {
        let store = Store::open(data_dir)?;
        let mut tables = BTreeMap::new();
        for def in store.table_defs()? {
            let table = store.open_table(def)?;
            tables.insert(table.def().name.clone(), Arc::new(table));
        }
        store.drop_orphan_trees(tables.values().map(|t| t.def().id))?;
        Ok(Catalog {
            store,
            tables: RwLock::new(tables),
            ddl: Mutex::new(()),
            version: AtomicU64::new(1),
        })
    }

    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.tables.read().expect("catalog lock").get(name).cloned()
    }

    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.tables
            .read()
            .expect("catalog lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn table_names(&self) -> Vec<String> {
        self.tables
            .read()
            .expect("catalog lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Creates a table; `Ok(None)` when it exists and `if_not_exists` is set.
    pub fn create_table(
        &self,
        name: &str,
        columns: Vec<ColumnDef>,
        primary_key: Vec<usize>,
        if_not_exists: bool,
    ) -> Result<Option<Arc<Table>>> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        if self.table(name).is_some() {
            return if if_not_exists {
                Ok(None)
            } else {
                Err(Error::DuplicateTable(name.to_string()))
            };
        }
        let def = TableDef {
            id: self.store.next_table_id()?,
            name: name.to_string(),
            columns,
            primary_key,
        };
        self.store.put_table_def(&def)?;
        let table = Arc::new(self.store.open_table(def)?);
        self.tables
            .write()
            .expect("catalog lock")
            .insert(name.to_string(), Arc::clone(&table));
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(Some(table))
    }

    /// Drops a table; `Ok(false)` when it did not exist and `if_exists` is set.
    pub fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        let Some(table) = self.table(name) else {
            return if if_exists {
                Ok(false)
            } else {
                Err(Error::UndefinedTableToDrop(name.to_string()))
            };
        };
        // The definition goes first: a crash after it leaves an orphan tree,
        // which the next start removes.
        self.store.delete_table_def(table.def())?;
        self.tables.write().expect("catalog lock").remove(name);
        self.store.drop_table_tree(table.def().id)?;
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }
}
