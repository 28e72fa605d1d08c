//! Rows of the `pg_catalog` relations, derived from one `Snapshot`.
//! Catalogs that describe objects EddyDB does not have (triggers, policies,
//! rules, publications, ...) get no rows; `provider` serves those as empty.

use super::snapshot::{
    index_definition, index_name, namespace_oid, relkind, Snapshot, BTREE_AM, DATABASE_OID,
    DEFAULT_TABLESPACE, HEAP_AM, NAMESPACES, OWNER_OID, PG_CATALOG_NAMESPACE, SOURCE_FDW_OID,
    SOURCE_SERVER_OID,
};
use super::table::{row, RowSet, Value};
use super::types::{self, TypeRow};
use super::{ColumnInfo, RelationInfo, RelationKind, DATABASE_NAME, SERVER_VERSION};

/// First OID of the synthetic `pg_attrdef` rows; they only need to be unique
/// within `pg_attrdef`, as in Postgres.
const ATTRDEF_OID_BASE: u32 = 0x4000_0000;
/// `pg_database.encoding` for UTF8.
pub(super) const UTF8_ENCODING: i32 = 6;

/// Fill `rows` with the contents of the `pg_catalog` relation `name`.
pub(super) fn build(name: &str, snap: &Snapshot, rows: &mut RowSet) {
    match name {
        "pg_namespace" => namespaces(rows),
        "pg_class" => classes(snap, rows),
        "pg_attribute" => attributes(snap, rows),
        "pg_attrdef" => attrdefs(snap, rows),
        "pg_index" => indexes(snap, rows),
        "pg_constraint" => constraints(snap, rows),
        "pg_type" => type_rows(rows),
        "pg_database" => database(rows),
        "pg_am" => access_methods(rows),
        "pg_roles" | "pg_authid" | "pg_user" => roles(name, snap, rows),
        "pg_settings" => settings(rows),
        "pg_tablespace" | "pg_collation" | "pg_language" => fixed(name, rows),
        "pg_foreign_data_wrapper" | "pg_foreign_server" | "pg_foreign_table" => {
            foreign(name, snap, rows)
        }
        "pg_tables" | "pg_views" | "pg_matviews" | "pg_indexes" => relation_views(name, snap, rows),
        // Catalogs of objects EddyDB has none of.
        _ => {}
    }
}

fn namespaces(rows: &mut RowSet) {
    for (oid, name) in NAMESPACES {
        rows.push(row! { "oid" => *oid, "nspname" => *name, "nspowner" => OWNER_OID });
    }
}

/// Whether the relation has storage (and so an access method and file node).
fn has_storage(kind: RelationKind) -> bool {
    matches!(kind, RelationKind::Table | RelationKind::MaterializedView)
}

fn classes(snap: &Snapshot, rows: &mut RowSet) {
    for rel in &snap.relations {
        let stored = has_storage(rel.kind);
        let is_view = rel.kind == RelationKind::View;
        rows.push(row! {
            "oid" => rel.oid,
            "relname" => &rel.name,
            "relnamespace" => namespace_oid(&rel.schema),
            "relowner" => OWNER_OID,
            "relam" => if stored { HEAP_AM } else { 0 },
            "relfilenode" => if stored { rel.oid } else { 0 },
            "reltuples" => -1.0f32,
            "relhasindex" => !rel.primary_key.is_empty(),
            "relpersistence" => 'p',
            "relkind" => relkind(rel.kind),
            "relnatts" => i64::try_from(rel.columns.len()).unwrap_or(0),
            // A view is a relation with a `_RETURN` rule.
            "relhasrules" => is_view,
            "relispopulated" => true,
            // Catalog tables default to REPLICA IDENTITY NOTHING.
            "relreplident" => if stored && rel.schema == "public" { 'd' } else { 'n' },
        });
    }
    for rel in snap.keyed() {
        rows.push(row! {
            "oid" => rel.pk_index_oid,
            "relname" => index_name(rel),
            "relnamespace" => namespace_oid(&rel.schema),
            "relowner" => OWNER_OID,
            "relam" => BTREE_AM,
            "relfilenode" => rel.pk_index_oid,
            "relpersistence" => 'p',
            "relkind" => 'i',
            "relnatts" => i64::try_from(rel.primary_key.len()).unwrap_or(0),
            "relispopulated" => true,
            "relreplident" => 'n',
        });
    }
}

fn attribute_row(relid: u32, attnum: usize, col: &ColumnInfo) -> Vec<(&'static str, Value)> {
    let (storage, align, byval) = types::storage_align_byval(col.type_oid);
    let is_array = types::lookup(col.type_oid).is_some_and(|t| t.is_array);
    row! {
        "attrelid" => relid,
        "attname" => &col.name,
        "atttypid" => col.type_oid,
        "attstattarget" => -1i32,
        "attlen" => types::type_len(col.type_oid),
        "attnum" => i64::try_from(attnum).unwrap_or(0),
        "attndims" => i32::from(is_array),
        "attcacheoff" => -1i32,
        "atttypmod" => col.typmod,
        "attbyval" => byval,
        "attalign" => align,
        "attstorage" => storage,
        "attnotnull" => col.not_null,
        "atthasdef" => col.default_sql.is_some(),
        "attislocal" => true,
        "attcollation" => types::collation(col.type_oid),
    }
}

fn attributes(snap: &Snapshot, rows: &mut RowSet) {
    for rel in &snap.relations {
        for (i, col) in rel.columns.iter().enumerate() {
            rows.push(attribute_row(rel.oid, i + 1, col));
        }
    }
    for rel in snap.keyed() {
        let key = rel.primary_key.iter().filter_map(|&i| rel.columns.get(i));
        for (i, col) in key.enumerate() {
            let mut cells = attribute_row(rel.pk_index_oid, i + 1, col);
            cells.retain(|(name, _)| !matches!(*name, "attnotnull" | "atthasdef"));
            rows.push(cells);
        }
    }
}

fn attrdefs(snap: &Snapshot, rows: &mut RowSet) {
    let defaults = snap.relations.iter().flat_map(|rel| {
        rel.columns
            .iter()
            .enumerate()
            .filter_map(move |(i, c)| c.default_sql.as_ref().map(|sql| (rel.oid, i + 1, sql)))
    });
    for (n, (relid, attnum, sql)) in defaults.enumerate() {
        let oid = ATTRDEF_OID_BASE.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        rows.push(row! {
            "oid" => oid,
            "adrelid" => relid,
            "adnum" => i64::try_from(attnum).unwrap_or(0),
            // We keep the default's SQL text where Postgres keeps a node
            // tree; `pg_get_expr` returns it unchanged.
            "adbin" => sql,
        });
    }
}

/// 1-based attribute numbers of the primary key.
fn key_attnums(rel: &RelationInfo) -> Vec<i16> {
    rel.primary_key
        .iter()
        .map(|&i| i16::try_from(i + 1).unwrap_or(i16::MAX))
        .collect()
}

fn indexes(snap: &Snapshot, rows: &mut RowSet) {
    for rel in snap.keyed() {
        let attnums = key_attnums(rel);
        let collations: Vec<u32> = rel
            .primary_key
            .iter()
            .filter_map(|&i| rel.columns.get(i))
            .map(|c| types::collation(c.type_oid))
            .collect();
        let keys = i64::try_from(attnums.len()).unwrap_or(0);
        rows.push(row! {
            "indexrelid" => rel.pk_index_oid,
            "indrelid" => rel.oid,
            "indnatts" => keys,
            "indnkeyatts" => keys,
            "indisunique" => true,
            "indisprimary" => true,
            "indimmediate" => true,
            "indisvalid" => true,
            "indisready" => true,
            "indislive" => true,
            "indoption" => vec![0i16; attnums.len()],
            "indclass" => vec![0u32; attnums.len()],
            "indcollation" => collations,
            "indkey" => attnums,
        });
    }
}

fn constraints(snap: &Snapshot, rows: &mut RowSet) {
    for rel in snap.keyed() {
        rows.push(row! {
            // Constraint OIDs only need to be unique within pg_constraint;
            // reusing the index OID keeps them stable.
            "oid" => rel.pk_index_oid,
            "conname" => index_name(rel),
            "connamespace" => namespace_oid(&rel.schema),
            "contype" => 'p',
            "convalidated" => true,
            "conrelid" => rel.oid,
            "conindid" => rel.pk_index_oid,
            "confupdtype" => ' ',
            "confdeltype" => ' ',
            "confmatchtype" => ' ',
            "conislocal" => true,
            "connoinherit" => true,
            "conkey" => key_attnums(rel),
        });
    }
}

fn type_row(t: TypeRow) -> Vec<(&'static str, Value)> {
    let base = t.base;
    let io = |suffix: &str| {
        if t.is_array {
            format!("array_{suffix}")
        } else {
            format!("{}{suffix}", base.io_stem)
        }
    };
    let typmod_fn = |suffix: &str| {
        if base.has_typmod {
            format!("{}typmod{suffix}", base.name)
        } else {
            "-".to_string()
        }
    };
    let subscript = match (t.is_array, base.elem) {
        (true, _) => "array_subscript_handler",
        (false, types::CHAR) => "raw_array_subscript_handler",
        (false, 0) => "-",
        (false, _) => "array_subscript_handler",
    };
    row! {
        "oid" => t.oid(),
        "typname" => t.typname(),
        "typnamespace" => PG_CATALOG_NAMESPACE,
        "typowner" => OWNER_OID,
        "typlen" => if t.is_array { -1 } else { base.len },
        "typbyval" => base.byval && !t.is_array,
        "typtype" => base.typtype,
        "typcategory" => if t.is_array { 'A' } else { base.category },
        "typispreferred" => base.preferred && !t.is_array,
        "typisdefined" => true,
        "typdelim" => ',',
        "typsubscript" => subscript,
        "typelem" => if t.is_array { base.oid } else { base.elem },
        "typarray" => if t.is_array { 0 } else { base.array_oid },
        "typinput" => io("in"),
        "typoutput" => io("out"),
        "typreceive" => io("recv"),
        "typsend" => io("send"),
        "typmodin" => typmod_fn("in"),
        "typmodout" => typmod_fn("out"),
        "typanalyze" => if t.is_array { "array_typanalyze" } else { "-" },
        "typalign" => if t.is_array && base.align != 'd' { 'i' } else { base.align },
        "typstorage" => if t.is_array { 'x' } else { base.storage },
        "typtypmod" => -1i32,
        "typcollation" => base.collation,
    }
}

fn type_rows(rows: &mut RowSet) {
    for t in types::all_type_rows() {
        rows.push(type_row(t));
    }
}

fn database(rows: &mut RowSet) {
    rows.push(row! {
        "oid" => DATABASE_OID,
        "datname" => DATABASE_NAME,
        "datdba" => OWNER_OID,
        "encoding" => UTF8_ENCODING,
        "datlocprovider" => 'c',
        "datallowconn" => true,
        "datconnlimit" => -1i32,
        "datminmxid" => 1u32,
        "dattablespace" => DEFAULT_TABLESPACE,
        "datcollate" => "C.UTF-8",
        "datctype" => "C.UTF-8",
    });
}

fn access_methods(rows: &mut RowSet) {
    let methods = [
        (HEAP_AM, "heap", "heap_tableam_handler", 't'),
        (BTREE_AM, "btree", "bthandler", 'i'),
        (405u32, "hash", "hashhandler", 'i'),
    ];
    for (oid, name, handler, kind) in methods {
        rows.push(
            row! { "oid" => oid, "amname" => name, "amhandler" => handler, "amtype" => kind },
        );
    }
}

fn roles(table: &str, snap: &Snapshot, rows: &mut RowSet) {
    let owner = snap.owner.as_str();
    let cells = match table {
        "pg_user" => row! {
            "usename" => owner, "usesysid" => OWNER_OID, "usecreatedb" => true,
            "usesuper" => true, "userepl" => true, "usebypassrls" => true,
            "passwd" => "********",
        },
        _ => {
            let mut cells = row! {
                "oid" => OWNER_OID, "rolname" => owner, "rolsuper" => true,
                "rolinherit" => true, "rolcreaterole" => true, "rolcreatedb" => true,
                "rolcanlogin" => true, "rolreplication" => true, "rolbypassrls" => true,
                "rolconnlimit" => -1i32,
            };
            if table == "pg_roles" {
                cells.push(("rolpassword", Value::from("********")));
            }
            cells
        }
    };
    rows.push(cells);
}

/// A server setting as `pg_settings` and `current_setting` report it.
pub(super) struct Setting {
    pub name: &'static str,
    pub value: &'static str,
    category: &'static str,
    description: &'static str,
    context: &'static str,
    vartype: &'static str,
}

const fn setting(
    name: &'static str,
    value: &'static str,
    category: &'static str,
    description: &'static str,
    context: &'static str,
    vartype: &'static str,
) -> Setting {
    Setting {
        name,
        value,
        category,
        description,
        context,
        vartype,
    }
}

const PRESET: &str = "Preset Options";
const LOCALE: &str = "Client Connection Defaults / Locale and Formatting";
const STATEMENT: &str = "Client Connection Defaults / Statement Behavior";

/// The settings clients ask about, with this server's fixed values.
pub(super) const SETTINGS: &[Setting] = &[
    setting(
        "DateStyle",
        "ISO, MDY",
        LOCALE,
        "Sets the display format for date and time values.",
        "user",
        "string",
    ),
    setting(
        "IntervalStyle",
        "postgres",
        LOCALE,
        "Sets the display format for interval values.",
        "user",
        "enum",
    ),
    setting(
        "TimeZone",
        "UTC",
        LOCALE,
        "Sets the time zone for displaying and interpreting time stamps.",
        "user",
        "string",
    ),
    setting(
        "application_name",
        "",
        "Reporting and Logging / What to Log",
        "Sets the application name to be reported in statistics and logs.",
        "user",
        "string",
    ),
    setting(
        "block_size",
        "8192",
        PRESET,
        "Shows the size of a disk block.",
        "internal",
        "integer",
    ),
    setting(
        "client_encoding",
        "UTF8",
        LOCALE,
        "Sets the client's character set encoding.",
        "user",
        "string",
    ),
    setting(
        "default_transaction_isolation",
        "read committed",
        STATEMENT,
        "Sets the transaction isolation level of each new transaction.",
        "user",
        "enum",
    ),
    setting(
        "default_transaction_read_only",
        "off",
        STATEMENT,
        "Sets the default read-only status of new transactions.",
        "user",
        "bool",
    ),
    setting(
        "extra_float_digits",
        "1",
        LOCALE,
        "Sets the number of digits displayed for floating-point values.",
        "user",
        "integer",
    ),
    setting(
        "integer_datetimes",
        "on",
        PRESET,
        "Shows whether datetimes are integer based.",
        "internal",
        "bool",
    ),
    setting(
        "is_superuser",
        "on",
        PRESET,
        "Shows whether the current user is a superuser.",
        "internal",
        "bool",
    ),
    setting(
        "lc_collate",
        "C.UTF-8",
        PRESET,
        "Shows the collation order locale.",
        "internal",
        "string",
    ),
    setting(
        "lc_ctype",
        "C.UTF-8",
        PRESET,
        "Shows the character classification and case conversion locale.",
        "internal",
        "string",
    ),
    setting(
        "max_identifier_length",
        "63",
        PRESET,
        "Shows the maximum identifier length.",
        "internal",
        "integer",
    ),
    setting(
        "max_index_keys",
        "32",
        PRESET,
        "Shows the maximum number of index keys.",
        "internal",
        "integer",
    ),
    setting(
        "search_path",
        "\"$user\", public",
        STATEMENT,
        "Sets the schema search order for names that are not schema-qualified.",
        "user",
        "string",
    ),
    setting(
        "server_encoding",
        "UTF8",
        PRESET,
        "Shows the server (database) character set encoding.",
        "internal",
        "string",
    ),
    setting(
        "server_version",
        SERVER_VERSION,
        PRESET,
        "Shows the server version.",
        "internal",
        "string",
    ),
    setting(
        "server_version_num",
        "150000",
        PRESET,
        "Shows the server version as an integer.",
        "internal",
        "integer",
    ),
    setting(
        "standard_conforming_strings",
        "on",
        "Version and Platform Compatibility / Previous PostgreSQL Versions",
        "Causes '...' strings to treat backslashes literally.",
        "user",
        "bool",
    ),
    setting(
        "transaction_isolation",
        "read committed",
        STATEMENT,
        "Sets the current transaction's isolation level.",
        "user",
        "enum",
    ),
    setting(
        "transaction_read_only",
        "off",
        STATEMENT,
        "Sets the current transaction's read-only status.",
        "user",
        "bool",
    ),
];

fn settings(rows: &mut RowSet) {
    for s in SETTINGS {
        rows.push(row! {
            "name" => s.name,
            "setting" => s.value,
            "category" => s.category,
            "short_desc" => s.description,
            "context" => s.context,
            "vartype" => s.vartype,
            "source" => "default",
            "boot_val" => s.value,
            "reset_val" => s.value,
            "pending_restart" => false,
        });
    }
}

/// Collations as (oid, name, provider, locale).
pub(super) const COLLATIONS: &[(u32, &str, char, Option<&str>)] = &[
    (100, "default", 'd', None),
    (950, "C", 'c', Some("C")),
    (951, "POSIX", 'c', Some("POSIX")),
];

/// Catalog rows every Postgres database has, independent of user objects.
fn fixed(table: &str, rows: &mut RowSet) {
    match table {
        "pg_tablespace" => {
            for (oid, name) in [(DEFAULT_TABLESPACE, "pg_default"), (1664, "pg_global")] {
                rows.push(row! { "oid" => oid, "spcname" => name, "spcowner" => OWNER_OID });
            }
        }
        "pg_collation" => {
            for &(oid, name, provider, locale) in COLLATIONS {
                rows.push(row! {
                    "oid" => oid, "collname" => name, "collnamespace" => PG_CATALOG_NAMESPACE,
                    "collowner" => OWNER_OID, "collprovider" => provider,
                    "collisdeterministic" => true, "collencoding" => -1i32,
                    "collcollate" => locale, "collctype" => locale,
                });
            }
        }
        _ => {
            for (oid, name, trusted) in [
                (12u32, "internal", false),
                (13, "c", false),
                (14, "sql", true),
            ] {
                rows.push(row! {
                    "oid" => oid, "lanname" => name, "lanowner" => OWNER_OID,
                    "lanpltrusted" => trusted,
                });
            }
        }
    }
}

/// Sources are foreign tables of one foreign server.
fn foreign(table: &str, snap: &Snapshot, rows: &mut RowSet) {
    match table {
        "pg_foreign_data_wrapper" => rows.push(row! {
            "oid" => SOURCE_FDW_OID, "fdwname" => "eddy_source", "fdwowner" => OWNER_OID,
        }),
        "pg_foreign_server" => rows.push(row! {
            "oid" => SOURCE_SERVER_OID, "srvname" => "eddy_source", "srvowner" => OWNER_OID,
            "srvfdw" => SOURCE_FDW_OID,
        }),
        _ => {
            for rel in snap
                .relations
                .iter()
                .filter(|r| r.kind == RelationKind::Source)
            {
                rows.push(row! { "ftrelid" => rel.oid, "ftserver" => SOURCE_SERVER_OID });
            }
        }
    }
}

/// `pg_tables`, `pg_views`, `pg_matviews` and `pg_indexes`.
fn relation_views(table: &str, snap: &Snapshot, rows: &mut RowSet) {
    let owner = snap.owner.as_str();
    for rel in &snap.relations {
        let keyed = !rel.primary_key.is_empty();
        let cells = match (table, rel.kind) {
            ("pg_tables", RelationKind::Table) => row! {
                "schemaname" => &rel.schema, "tablename" => &rel.name, "tableowner" => owner,
                "hasindexes" => keyed,
            },
            ("pg_views", RelationKind::View) => row! {
                "schemaname" => &rel.schema, "viewname" => &rel.name, "viewowner" => owner,
                "definition" => rel.view_sql.clone(),
            },
            ("pg_matviews", RelationKind::MaterializedView) => row! {
                "schemaname" => &rel.schema, "matviewname" => &rel.name, "matviewowner" => owner,
                "hasindexes" => keyed, "ispopulated" => true, "definition" => rel.view_sql.clone(),
            },
            ("pg_indexes", _) if keyed => row! {
                "schemaname" => &rel.schema, "tablename" => &rel.name,
                "indexname" => index_name(rel), "indexdef" => index_definition(rel),
            },
            _ => continue,
        };
        rows.push(cells);
    }
}

/// Look a setting up by name, case-insensitively as Postgres does.
pub(super) fn find_setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_found_case_insensitively() {
        assert_eq!(find_setting("datestyle").map(|s| s.value), Some("ISO, MDY"));
        assert!(find_setting("no_such_setting").is_none());
        assert_eq!(
            super::super::snapshot::namespace_name(PG_CATALOG_NAMESPACE),
            Some("pg_catalog")
        );
    }
}
