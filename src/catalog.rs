//! Relations and their definitions: what tables exist, their columns, keys
//! and defaults. The catalog is durable (a sled tree) and is the only owner
//! of the name → relation map; storage of each relation's rows is
//! [`crate::storage`]'s business.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, MaterializedView, RelationReader, ViewDef};
use crate::error::{Error, Result};
use crate::function::python::PythonConfig;
use crate::function::{FunctionDef, FunctionEntry, FunctionErrorLog};
use crate::storage::{Change, Store, Table};
use crate::types::SqlType;

mod sources;
pub use sources::SourceEntry;

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
    views: RwLock<BTreeMap<String, Arc<ViewEntry>>>,
    /// Stream sources and the source side of connector-fed tables.
    sources: RwLock<BTreeMap<String, Arc<SourceEntry>>>,
    /// Every running source reader.
    readers: Mutex<Vec<crate::source::runner::RunningReader>>,
    /// Views restored at start whose readers wait until every view is
    /// back: a reader started early would move its view past the epoch
    /// the views over it are restored at. With where each resumes.
    deferred_readers: Mutex<Vec<(ViewDef, Option<crate::source::reader::Resume>)>>,
    /// Bad records the readers set apart.
    errors: crate::source::status::ErrorLog,
    /// Events too late to read, which the readers set apart.
    late: crate::source::status::ErrorLog,
    engine: Arc<Engine>,
    /// Serialises DDL so ids and names are decided one at a time.
    ddl: Mutex<()>,
    /// User functions by name.
    functions: RwLock<BTreeMap<String, Arc<FunctionEntry>>>,
    /// Bumped when a function is created or dropped: sessions register
    /// the current Python functions with their planner again.
    functions_version: AtomicU64,
    /// Rows user functions failed on.
    function_errors: Arc<FunctionErrorLog>,
    /// How Python functions run.
    python: PythonConfig,
    /// Functions the embedding program added.
    extensions: crate::function::Extensions,
    /// Bumped by every DDL statement; prepared plans older than it are re-planned.
    version: AtomicU64,
}

impl Catalog {
    /// Opens the database under the configured data directory; views over
    /// streams are checkpointed every checkpoint interval, and all views'
    /// state is held within the memory limit.
    pub fn open(
        config: &crate::config::Config,
        extensions: crate::function::Extensions,
    ) -> Result<Catalog> {
        let store = Store::open(&config.data_dir)?;
        let mut tables = BTreeMap::new();
        for def in store.table_defs()? {
            let table = store.open_table(def)?;
            tables.insert(table.def().name.clone(), Arc::new(table));
        }
        store.drop_orphan_trees(tables.values().map(|t| t.def().id))?;
        let sources = store
            .source_defs::<SourceEntry>()?
            .into_iter()
            .map(|s| (s.def.name.clone(), Arc::new(s)))
            .collect();
        let errors = crate::source::status::ErrorLog::new(store.tree("source_errors")?);
        let late = crate::source::status::ErrorLog::new(store.tree("late_events")?);
        let engine = Arc::new(Engine::new(
            config.worker_count(),
            &store,
            config.checkpoint_interval(),
            config.memory_limit(),
        )?);
        let python = config.python();
        let function_errors = Arc::new(FunctionErrorLog::default());
        let mut functions = BTreeMap::new();
        for def in store.function_defs()? {
            let name = def.name.clone();
            // Workers start at the first call, so a missing interpreter
            // shows there, not here.
            match FunctionEntry::new(def, &python, &function_errors, false) {
                Ok(entry) => {
                    functions.insert(name, Arc::new(entry));
                }
                Err(e) => tracing::error!(function = %name, error = %e, "cannot restore function"),
            }
        }
        Ok(Catalog {
            store,
            tables: RwLock::new(tables),
            views: RwLock::new(BTreeMap::new()),
            sources: RwLock::new(sources),
            readers: Mutex::new(Vec::new()),
            deferred_readers: Mutex::new(Vec::new()),
            errors,
            late,
            engine,
            ddl: Mutex::new(()),
            functions: RwLock::new(functions),
            functions_version: AtomicU64::new(1),
            function_errors,
            python,
            extensions,
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
        if self.view(name).is_some() {
            return Err(Error::DuplicateTable(name.to_string()));
        }
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
    pub fn drop_table(&self, name: &str, if_exists: bool, cascade: bool) -> Result<bool> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        let Some(table) = self.table(name) else {
            return if if_exists {
                Ok(false)
            } else {
                Err(Error::UndefinedTableToDrop(name.to_string()))
            };
        };
        self.drop_dependents(name, "table", cascade)?;
        self.forget_table_source(table.def().id, name)?;
        // The definition goes first: a crash after it leaves an orphan tree,
        // which the next start removes.
        self.store.delete_table_def(table.def())?;
        self.tables.write().expect("catalog lock").remove(name);
        self.store.drop_table_tree(table.def().id)?;
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Starts the engine's clock (see [`Engine::start_clock`]).
    pub fn start_clock(&self) {
        Engine::start_clock(&self.engine);
    }

    /// Commits a table change and its effect on every view, as one epoch
    /// (see [`Engine::commit`]); runs off the async runtime.
    pub async fn commit(self: &Arc<Self>, table: &Arc<Table>, change: Change) -> Result<u64> {
        let (catalog, table) = (Arc::clone(self), Arc::clone(table));
        // Off the async runtime: the commit waits on fsync and on the
        // dataflow workers. Once started it completes even if the client
        // goes away, so a statement is never half-published.
        tokio::task::spawn_blocking(move || catalog.engine.commit(&table, change))
            .await
            .map_err(|e| Error::Internal(format!("commit task failed: {e}")))?
    }

    pub fn view(&self, name: &str) -> Option<Arc<ViewEntry>> {
        self.views.read().expect("catalog lock").get(name).cloned()
    }

    pub fn views(&self) -> Vec<Arc<ViewEntry>> {
        self.views
            .read()
            .expect("catalog lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn materialized_view(&self, name: &str) -> Option<Arc<MaterializedView>> {
        self.view(name)?.materialized().cloned()
    }

    /// Every materialized view, by name.
    pub fn materialized_views(&self) -> Vec<Arc<MaterializedView>> {
        let views = self.views.read().expect("catalog lock");
        views
            .values()
            .filter_map(|v| v.materialized().cloned())
            .collect()
    }

    pub fn relation_exists(&self, name: &str) -> bool {
        self.table(name).is_some() || self.view(name).is_some() || self.source(name).is_some()
    }

    /// Stored view definitions, oldest first (the order to create them in).
    pub fn stored_view_defs(&self) -> Result<Vec<ViewDef>> {
        let mut defs = self.store.view_defs()?;
        defs.sort_by_key(|d| d.id);
        Ok(defs)
    }

    pub fn next_relation_id(&self) -> Result<u64> {
        self.store.next_table_id()
    }

    /// Registers a view; `persist` is false when it is being restored at
    /// start. A materialized view is backfilled before it is visible.
    /// Blocking. `Ok(false)` when it exists and `if_not_exists` is set.
    pub fn add_view(&self, entry: ViewEntry, if_not_exists: bool, persist: bool) -> Result<bool> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        let name = entry.def().name.clone();
        if self.relation_exists(&name) {
            return if if_not_exists {
                Ok(false)
            } else {
                Err(Error::DuplicateTable(name))
            };
        }
        for dependency in &entry.def().depends_on {
            if !self.relation_exists(dependency) {
                return Err(Error::UndefinedTable(dependency.clone()));
            }
        }
        // A function dropped while the view was being planned.
        for function in &entry.def().functions {
            if self.function(function).is_none() {
                return Err(Error::UndefinedFunction(format!(
                    "function {function} does not exist"
                )));
            }
        }
        let mut stored = entry.def().clone();
        if let ViewEntry::Materialized(view) = &entry {
            let resume = self
                .engine
                .create_view(Arc::clone(view), &CatalogReader(self))?;
            if !persist {
                // Restoring at start: readers start once all views are back.
                self.deferred_readers
                    .lock()
                    .expect("readers lock")
                    .push((view.def.clone(), resume));
            } else {
                match self.start_view_readers(&view.def, resume.as_ref()) {
                    Ok(starts) => stored.stream_starts = starts,
                    Err(e) => {
                        self.engine.drop_view(view.def.id);
                        return Err(e);
                    }
                }
            }
        }
        if persist {
            if let Err(e) = self.store.put_view_def(&stored) {
                if let ViewEntry::Materialized(view) = &entry {
                    self.stop_readers_of(view.def.id);
                    self.engine.drop_view(view.def.id);
                }
                return Err(e);
            }
        }
        self.views
            .write()
            .expect("catalog lock")
            .insert(name, Arc::new(entry));
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Starts the readers of the views restored at start (see
    /// `deferred_readers`). A view whose reader cannot start is marked in
    /// the log; the others go on.
    pub fn start_restored_view_readers(&self) {
        let deferred = std::mem::take(&mut *self.deferred_readers.lock().expect("readers lock"));
        for (def, resume) in deferred {
            if let Err(e) = self.start_view_readers(&def, resume.as_ref()) {
                tracing::error!(view = %def.name, error = %e, "cannot start the view's source readers");
            }
        }
    }

    /// Drops a view. `materialized` says which statement asked: DROP VIEW
    /// on a materialized view (or the reverse) is refused, as in PostgreSQL.
    pub fn drop_view(
        &self,
        name: &str,
        materialized: bool,
        if_exists: bool,
        cascade: bool,
    ) -> Result<bool> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        let not_a = || {
            let kind = if materialized {
                "materialized view"
            } else {
                "view"
            };
            Error::WrongObjectType(format!("\"{name}\" is not a {kind}"))
        };
        let Some(entry) = self.view(name) else {
            if self.table(name).is_some() {
                return Err(not_a());
            }
            if if_exists {
                return Ok(false);
            }
            return Err(Error::UndefinedViewToDrop {
                kind: if materialized {
                    "materialized view"
                } else {
                    "view"
                },
                name: name.to_string(),
            });
        };
        if entry.def().materialized != materialized {
            return Err(not_a());
        }
        self.drop_dependents(name, entry.def().kind_name(), cascade)?;
        self.remove_view(&entry)?;
        Ok(true)
    }

    pub fn function(&self, name: &str) -> Option<Arc<FunctionEntry>> {
        self.functions
            .read()
            .expect("catalog lock")
            .get(name)
            .cloned()
    }

    /// Every user function, by name.
    pub fn functions(&self) -> Vec<Arc<FunctionEntry>> {
        let functions = self.functions.read().expect("catalog lock");
        functions.values().cloned().collect()
    }

    pub fn functions_version(&self) -> u64 {
        self.functions_version.load(Ordering::Acquire)
    }

    pub fn extensions(&self) -> &crate::function::Extensions {
        &self.extensions
    }

    pub fn function_errors(&self) -> &FunctionErrorLog {
        &self.function_errors
    }

    /// Creates a function (checking its definition: a Python body must
    /// define it). `or_replace` replaces one no view uses. `Ok(false)`
    /// when it exists and `if_not_exists` is set.
    pub fn create_function(
        &self,
        mut def: FunctionDef,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<bool> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        if let Some(existing) = self.function(&def.name) {
            if if_not_exists {
                return Ok(false);
            }
            if !or_replace {
                return Err(Error::DuplicateFunction(format!(
                    "function {} already exists",
                    existing.def.signature()
                )));
            }
            let users = self.function_users(&def.name);
            if let Some(user) = users.first() {
                return Err(Error::DependentObjects {
                    object: format!("function {}", existing.def.signature()),
                    dependents: vec![format!(
                        "{} {} depends on function {}",
                        user.def().kind_name(),
                        user.def().name,
                        def.name
                    )],
                    cascade_hint: "Views keep the function they were created with: drop them \
                                   (DROP FUNCTION … CASCADE), replace the function, and create \
                                   them again."
                        .into(),
                });
            }
            def.id = existing.def.id;
        }
        let entry = FunctionEntry::new(def, &self.python, &self.function_errors, true)?;
        self.store.put_function_def(&entry.def)?;
        self.functions
            .write()
            .expect("catalog lock")
            .insert(entry.def.name.clone(), Arc::new(entry));
        self.functions_version.fetch_add(1, Ordering::AcqRel);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Drops a function; with `cascade`, the views calling it too.
    pub fn drop_function(&self, name: &str, if_exists: bool, cascade: bool) -> Result<bool> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        let Some(entry) = self.function(name) else {
            if if_exists {
                return Ok(false);
            }
            return Err(Error::UndefinedFunction(format!(
                "function {name} does not exist"
            )));
        };
        let users = self.function_users(name);
        if !users.is_empty() && !cascade {
            return Err(Error::DependentObjects {
                object: format!("function {}", entry.def.signature()),
                dependents: users
                    .iter()
                    .map(|v| {
                        format!(
                            "{} {} depends on function {name}",
                            v.def().kind_name(),
                            v.def().name
                        )
                    })
                    .collect(),
                cascade_hint: "Use DROP ... CASCADE to drop the dependent objects too.".into(),
            });
        }
        // The views calling it and the views over those, newest first.
        let mut doomed: Vec<Arc<ViewEntry>> = Vec::new();
        for user in users {
            doomed.extend(self.dependents(&user.def().name));
            doomed.push(user);
        }
        doomed.sort_by_key(|v| std::cmp::Reverse(v.def().id));
        doomed.dedup_by_key(|v| v.def().id);
        for view in doomed {
            tracing::info!(view = %view.def().name, "dropping dependent view (CASCADE)");
            self.remove_view(&view)?;
        }
        self.store.delete_function_def(name)?;
        self.functions.write().expect("catalog lock").remove(name);
        self.functions_version.fetch_add(1, Ordering::AcqRel);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Views calling function `name`, newest first.
    fn function_users(&self, name: &str) -> Vec<Arc<ViewEntry>> {
        let mut users: Vec<Arc<ViewEntry>> = self
            .views()
            .into_iter()
            .filter(|v| v.def().functions.iter().any(|f| f == name))
            .collect();
        users.sort_by_key(|v| std::cmp::Reverse(v.def().id));
        users
    }

    fn remove_view(&self, entry: &ViewEntry) -> Result<()> {
        let def = entry.def();
        self.store.delete_view_def(def)?;
        self.views.write().expect("catalog lock").remove(&def.name);
        if let ViewEntry::Materialized(view) = entry {
            self.stop_readers_of(view.def.id);
            self.engine.drop_view(view.def.id);
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Views reading `name`, newest first (the order to drop them in),
    /// including views over those views.
    fn dependents(&self, name: &str) -> Vec<Arc<ViewEntry>> {
        let mut found: Vec<Arc<ViewEntry>> = Vec::new();
        let mut frontier = vec![name.to_string()];
        while let Some(current) = frontier.pop() {
            for view in self.views() {
                let def = view.def();
                if def.depends_on.contains(&current) && !found.iter().any(|f| f.def().id == def.id)
                {
                    frontier.push(def.name.clone());
                    found.push(view);
                }
            }
        }
        found.sort_by_key(|v| std::cmp::Reverse(v.def().id));
        found
    }

    /// With `cascade`, drops every view depending on `name`; without, fails
    /// with 2BP01 if there is one.
    fn drop_dependents(&self, name: &str, kind: &str, cascade: bool) -> Result<()> {
        let dependents = self.dependents(name);
        if dependents.is_empty() {
            return Ok(());
        }
        if !cascade {
            return Err(Error::DependentObjects {
                object: format!("{kind} {name}"),
                dependents: dependents
                    .iter()
                    .map(|d| {
                        let def = d.def();
                        // What it reads: the object itself, or a
                        // dependent that reads it; named as PostgreSQL
                        // does (`… depends on source events`).
                        let through = def.depends_on.iter().find_map(|n| {
                            dependents
                                .iter()
                                .find(|o| n != name && o.def().name == *n)
                                .map(|o| format!("{} {n}", o.def().kind_name()))
                        });
                        let on = match def.depends_on.iter().any(|n| n == name) {
                            true => format!("{kind} {name}"),
                            false => through.unwrap_or_else(|| format!("{kind} {name}")),
                        };
                        format!("{} {} depends on {on}", def.kind_name(), def.name)
                    })
                    .collect(),
                cascade_hint: "Use DROP ... CASCADE to drop the dependent objects too.".into(),
            });
        }
        for dependent in dependents {
            tracing::info!(view = %dependent.def().name, "dropping dependent view (CASCADE)");
            self.remove_view(&dependent)?;
        }
        Ok(())
    }
}

/// A view in the catalog.
#[derive(Debug)]
pub enum ViewEntry {
    Materialized(Arc<MaterializedView>),
    /// A plain view: its plan is inlined wherever it is read.
    Plain {
        def: ViewDef,
        plan: Box<datafusion::logical_expr::LogicalPlan>,
    },
}

impl ViewEntry {
    pub fn def(&self) -> &ViewDef {
        match self {
            ViewEntry::Materialized(view) => &view.def,
            ViewEntry::Plain { def, .. } => def,
        }
    }

    pub fn materialized(&self) -> Option<&Arc<MaterializedView>> {
        match self {
            ViewEntry::Materialized(view) => Some(view),
            ViewEntry::Plain { .. } => None,
        }
    }
}

/// Reads relations for a view's backfill.
struct CatalogReader<'a>(&'a Catalog);

impl RelationReader for CatalogReader<'_> {
    fn read(&self, relation: &str) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
        if let Some(table) = self.0.table(relation) {
            let user: Vec<usize> = (0..table.schema().fields().len()).collect();
            return table
                .scan()?
                .iter()
                .map(|b| Ok(b.project(&user)?))
                .collect();
        }
        if self.0.stream_source(relation).is_some() {
            // A stream keeps no rows: a new view reads it from its start.
            return Ok(Vec::new());
        }
        match self.0.materialized_view(relation) {
            Some(view) => view.scan(),
            None => Err(Error::UndefinedTable(relation.to_string())),
        }
    }

    fn is_stream(&self, relation: &str) -> bool {
        self.0.stream_source(relation).is_some()
    }
}
