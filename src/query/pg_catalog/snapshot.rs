//! One consistent view of every relation a catalog query can see: the user
//! relations of the `CatalogSource` plus the catalog relations themselves, with
//! the fixed OIDs (namespaces, owner, database, access methods) and naming
//! rules (`<table>_pkey`, identifier quoting) that the row builders and
//! functions share.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::defs::{self, TableDef};
use super::types;
use super::{CatalogSource, ColumnInfo, RelationInfo, RelationKind};

pub(super) const PG_CATALOG_NAMESPACE: u32 = 11;
pub(super) const PUBLIC_NAMESPACE: u32 = 2200;
pub(super) const INFORMATION_SCHEMA_NAMESPACE: u32 = 13000;
/// The bootstrap superuser, owner of every object.
pub(super) const OWNER_OID: u32 = 10;
/// Below FirstNormalObjectId (16384), so it never meets a relation OID.
pub(super) const DATABASE_OID: u32 = 5;
pub(super) const HEAP_AM: u32 = 2;
pub(super) const BTREE_AM: u32 = 403;
pub(super) const DEFAULT_TABLESPACE: u32 = 1663;
/// The foreign server every source belongs to.
pub(super) const SOURCE_SERVER_OID: u32 = 13500;
pub(super) const SOURCE_FDW_OID: u32 = 13501;

/// Namespaces as (oid, name), in OID order.
pub(super) const NAMESPACES: &[(u32, &str)] = &[
    (PG_CATALOG_NAMESPACE, "pg_catalog"),
    (PUBLIC_NAMESPACE, "public"),
    (INFORMATION_SCHEMA_NAMESPACE, "information_schema"),
];

pub(super) fn namespace_oid(schema: &str) -> u32 {
    NAMESPACES
        .iter()
        .find(|(_, name)| *name == schema)
        .map_or(PUBLIC_NAMESPACE, |(oid, _)| *oid)
}

pub(super) fn namespace_name(oid: u32) -> Option<&'static str> {
    NAMESPACES
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, name)| *name)
}

/// Schemas searched for unqualified names, in order (Postgres searches
/// `pg_catalog` implicitly before the `search_path`).
pub(super) const SEARCH_PATH: &[&str] = &["pg_catalog", "public"];

pub(super) fn relkind(kind: RelationKind) -> char {
    match kind {
        RelationKind::Table => 'r',
        RelationKind::View => 'v',
        RelationKind::MaterializedView => 'm',
        RelationKind::Source => 'f',
    }
}

/// Name Postgres gives a primary key's index and constraint.
pub(super) fn index_name(rel: &RelationInfo) -> String {
    format!("{}_pkey", rel.name)
}

/// Column names of the primary key, quoted, e.g. `id, "Key"`.
fn key_columns(rel: &RelationInfo) -> String {
    rel.primary_key
        .iter()
        .filter_map(|&i| rel.columns.get(i))
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pg_get_indexdef` of a primary key's index.
pub(super) fn index_definition(rel: &RelationInfo) -> String {
    format!(
        "CREATE UNIQUE INDEX {} ON {}.{} USING btree ({})",
        quote_ident(&index_name(rel)),
        quote_ident(&rel.schema),
        quote_ident(&rel.name),
        key_columns(rel)
    )
}

/// `pg_get_constraintdef` of a primary key constraint.
pub(super) fn constraint_definition(rel: &RelationInfo) -> String {
    format!("PRIMARY KEY ({})", key_columns(rel))
}

/// All relations visible to one catalog query.
pub(super) struct Snapshot {
    pub relations: Vec<RelationInfo>,
    pub owner: String,
    by_oid: HashMap<u32, usize>,
    by_index_oid: HashMap<u32, usize>,
}

impl Snapshot {
    pub fn take(source: &dyn CatalogSource) -> Self {
        let mut relations = source.relations();
        relations.sort_by_key(|r| r.oid);
        relations.extend(system_relations().iter().cloned());
        let by_oid = relations
            .iter()
            .enumerate()
            .map(|(i, r)| (r.oid, i))
            .collect();
        let by_index_oid = relations
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.primary_key.is_empty())
            .map(|(i, r)| (r.pk_index_oid, i))
            .collect();
        Self {
            relations,
            owner: source.owner_name(),
            by_oid,
            by_index_oid,
        }
    }

    pub fn relation(&self, oid: u32) -> Option<&RelationInfo> {
        self.by_oid.get(&oid).map(|&i| &self.relations[i])
    }

    /// The table whose primary-key index has this OID.
    pub fn indexed_table(&self, index_oid: u32) -> Option<&RelationInfo> {
        self.by_index_oid
            .get(&index_oid)
            .map(|&i| &self.relations[i])
    }

    /// Relations with a primary key (each has one index and one constraint).
    pub fn keyed(&self) -> impl Iterator<Item = &RelationInfo> {
        self.relations.iter().filter(|r| !r.primary_key.is_empty())
    }

    /// Resolve a (possibly qualified, possibly quoted) relation name the way
    /// `'name'::regclass` does, including primary-key index names.
    pub fn resolve(&self, text: &str) -> Option<u32> {
        if let Ok(oid) = text.trim().parse::<u32>() {
            return Some(oid);
        }
        let parts = split_qualified_name(text)?;
        let (schema, name) = match parts.as_slice() {
            [name] => (None, name.as_str()),
            [schema, name] => (Some(schema.as_str()), name.as_str()),
            [_database, schema, name] => (Some(schema.as_str()), name.as_str()),
            _ => return None,
        };
        let schemas: Vec<&str> = schema.map_or_else(|| SEARCH_PATH.to_vec(), |s| vec![s]);
        schemas.iter().find_map(|schema| {
            self.relations
                .iter()
                .filter(|r| r.schema == *schema)
                .find_map(|r| {
                    if r.name == name {
                        Some(r.oid)
                    } else if !r.primary_key.is_empty() && index_name(r) == name {
                        Some(r.pk_index_oid)
                    } else {
                        None
                    }
                })
        })
    }

    /// How `oid::regclass` prints: quoted, and qualified when not on the search path.
    pub fn regclass_name(&self, oid: u32) -> String {
        let found = self
            .relation(oid)
            .map(|r| (r.schema.as_str(), r.name.clone()))
            .or_else(|| {
                self.indexed_table(oid)
                    .map(|r| (r.schema.as_str(), index_name(r)))
            });
        match found {
            Some((schema, name)) if SEARCH_PATH.contains(&schema) => quote_ident(&name),
            Some((schema, name)) => format!("{}.{}", quote_ident(schema), quote_ident(&name)),
            None => oid.to_string(),
        }
    }
}

/// Split `a.b."C"` into identifiers, folding unquoted parts to lower case.
pub(super) fn split_qualified_name(text: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('.', false) => parts.push(std::mem::take(&mut current)),
            (c, true) => current.push(c),
            (c, false) => current.extend(c.to_lowercase()),
        }
    }
    parts.push(current);
    if quoted || parts.iter().any(String::is_empty) {
        return None;
    }
    Some(parts)
}

/// Keywords `quote_ident` must quote (every category but "unreserved").
const KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// `quote_ident`: quote unless the name is a plain lower-case identifier.
pub(super) fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && !KEYWORDS.contains(&name);
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The catalog relations themselves, so clients can describe them too.
fn system_relations() -> &'static [RelationInfo] {
    static SYSTEM: OnceLock<Vec<RelationInfo>> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let pg = defs::PG_CATALOG
            .iter()
            .map(|d| system_relation(d, "pg_catalog"));
        let info = defs::INFORMATION_SCHEMA
            .iter()
            .map(|d| system_relation(d, "information_schema"));
        pg.chain(info).collect()
    })
}

fn system_relation(def: &TableDef, schema: &str) -> RelationInfo {
    let columns = def
        .columns()
        .into_iter()
        .map(|c| ColumnInfo {
            name: c.name.to_string(),
            type_oid: c.type_oid,
            type_name: types::format_type(c.type_oid, Some(-1)),
            typmod: -1,
            not_null: false,
            default_sql: None,
        })
        .collect();
    RelationInfo {
        oid: def.oid,
        schema: schema.to_string(),
        name: def.name.to_string(),
        kind: if def.is_view {
            RelationKind::View
        } else {
            RelationKind::Table
        },
        columns,
        primary_key: Vec::new(),
        pk_index_oid: 0,
        view_sql: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_postgres() {
        assert_eq!(quote_ident("orders"), "orders");
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("1a"), "\"1a\"");
    }

    #[test]
    fn qualified_names_split_and_fold() {
        assert_eq!(
            split_qualified_name("Public.\"My\"\"T\""),
            Some(vec!["public".to_string(), "My\"T".to_string()])
        );
        assert_eq!(split_qualified_name("a..b"), None);
    }
}
