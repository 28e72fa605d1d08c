//! Built-in Postgres types: their real OIDs and `pg_type` attributes, how
//! `format_type()` prints them, and the `information_schema` type facts
//! (data_type, lengths, precisions) derived from a type OID and typmod.

/// A base type; its array type (if any) is derived from it.
#[derive(Debug, Clone, Copy)]
pub(super) struct BaseType {
    pub oid: u32,
    pub name: &'static str,
    /// `format_type()` name, without typmod decoration.
    pub sql_name: &'static str,
    pub array_oid: u32,
    pub len: i16,
    pub byval: bool,
    /// `typtype`: 'b' base, 'p' pseudo.
    pub typtype: char,
    pub category: char,
    pub preferred: bool,
    pub align: char,
    pub storage: char,
    pub collation: u32,
    /// Element type for fixed-length "vector" types (`name`, `int2vector`).
    pub elem: u32,
    /// Prefix of the I/O function names: "int4" gives int4in, int4out, ...
    pub io_stem: &'static str,
    pub has_typmod: bool,
}

/// `shape` is (typlen, typcategory, typalign).
const fn base(
    oid: u32,
    name: &'static str,
    sql_name: &'static str,
    array_oid: u32,
    io_stem: &'static str,
    shape: (i16, char, char),
) -> BaseType {
    let (len, category, align) = shape;
    BaseType {
        oid,
        name,
        sql_name,
        array_oid,
        len,
        byval: len > 0 && len <= 8,
        typtype: 'b',
        category,
        preferred: false,
        align,
        storage: if len > 0 { 'p' } else { 'x' },
        collation: 0,
        elem: 0,
        io_stem,
        has_typmod: false,
    }
}

const fn preferred(t: BaseType) -> BaseType {
    BaseType {
        preferred: true,
        ..t
    }
}

const fn collatable(t: BaseType) -> BaseType {
    BaseType {
        collation: 100,
        ..t
    }
}

const fn with_typmod(t: BaseType) -> BaseType {
    BaseType {
        has_typmod: true,
        ..t
    }
}

const fn pseudo(t: BaseType) -> BaseType {
    BaseType {
        typtype: 'p',
        category: 'P',
        ..t
    }
}

pub(super) const BOOL: u32 = 16;
pub(super) const BYTEA: u32 = 17;
pub(super) const CHAR: u32 = 18;
pub(super) const NAME: u32 = 19;
pub(super) const INT8: u32 = 20;
pub(super) const INT2: u32 = 21;
pub(super) const INT2VECTOR: u32 = 22;
pub(super) const INT4: u32 = 23;
pub(super) const REGPROC: u32 = 24;
pub(super) const TEXT: u32 = 25;
pub(super) const OID: u32 = 26;
pub(super) const XID: u32 = 28;
pub(super) const OIDVECTOR: u32 = 30;
pub(super) const PG_NODE_TREE: u32 = 194;
pub(super) const FLOAT4: u32 = 700;
pub(super) const FLOAT8: u32 = 701;
pub(super) const ACLITEM: u32 = 1033;
pub(super) const BPCHAR: u32 = 1042;
pub(super) const VARCHAR: u32 = 1043;
pub(super) const DATE: u32 = 1082;
pub(super) const TIME: u32 = 1083;
pub(super) const TIMESTAMP: u32 = 1114;
pub(super) const TIMESTAMPTZ: u32 = 1184;
pub(super) const INTERVAL: u32 = 1186;
pub(super) const NUMERIC: u32 = 1700;
pub(super) const ANYARRAY: u32 = 2277;

/// Every base type we describe, with the attributes of a PostgreSQL 15 server.
pub(super) const BASE_TYPES: &[BaseType] = &[
    preferred(base(BOOL, "bool", "boolean", 1000, "bool", (1, 'B', 'c'))),
    base(BYTEA, "bytea", "bytea", 1001, "bytea", (-1, 'U', 'i')),
    base(CHAR, "char", "\"char\"", 1002, "char", (1, 'Z', 'c')),
    BaseType {
        elem: CHAR,
        storage: 'p',
        ..collatable(base(NAME, "name", "name", 1003, "name", (64, 'S', 'c')))
    },
    base(INT8, "int8", "bigint", 1016, "int8", (8, 'N', 'd')),
    base(INT2, "int2", "smallint", 1005, "int2", (2, 'N', 's')),
    BaseType {
        elem: INT2,
        storage: 'p',
        ..base(
            INT2VECTOR,
            "int2vector",
            "int2vector",
            1006,
            "int2vector",
            (-1, 'A', 'i'),
        )
    },
    base(INT4, "int4", "integer", 1007, "int4", (4, 'N', 'i')),
    base(
        REGPROC,
        "regproc",
        "regproc",
        1008,
        "regproc",
        (4, 'N', 'i'),
    ),
    preferred(collatable(base(
        TEXT,
        "text",
        "text",
        1009,
        "text",
        (-1, 'S', 'i'),
    ))),
    preferred(base(OID, "oid", "oid", 1028, "oid", (4, 'N', 'i'))),
    base(XID, "xid", "xid", 1011, "xid", (4, 'U', 'i')),
    BaseType {
        elem: OID,
        storage: 'p',
        ..base(
            OIDVECTOR,
            "oidvector",
            "oidvector",
            1013,
            "oidvector",
            (-1, 'A', 'i'),
        )
    },
    base(114, "json", "json", 199, "json_", (-1, 'U', 'i')),
    collatable(base(
        PG_NODE_TREE,
        "pg_node_tree",
        "pg_node_tree",
        0,
        "pg_node_tree_",
        (-1, 'Z', 'i'),
    )),
    base(FLOAT4, "float4", "real", 1021, "float4", (4, 'N', 'i')),
    preferred(base(
        FLOAT8,
        "float8",
        "double precision",
        1022,
        "float8",
        (8, 'N', 'd'),
    )),
    BaseType {
        typtype: 'p',
        ..base(705, "unknown", "unknown", 0, "unknown", (-2, 'X', 'c'))
    },
    base(
        ACLITEM,
        "aclitem",
        "aclitem",
        1034,
        "aclitem",
        (12, 'U', 'i'),
    ),
    with_typmod(collatable(base(
        BPCHAR,
        "bpchar",
        "character",
        1014,
        "bpchar",
        (-1, 'S', 'i'),
    ))),
    with_typmod(collatable(base(
        VARCHAR,
        "varchar",
        "character varying",
        1015,
        "varchar",
        (-1, 'S', 'i'),
    ))),
    base(DATE, "date", "date", 1182, "date_", (4, 'D', 'i')),
    with_typmod(base(
        TIME,
        "time",
        "time without time zone",
        1183,
        "time_",
        (8, 'D', 'd'),
    )),
    with_typmod(base(
        TIMESTAMP,
        "timestamp",
        "timestamp without time zone",
        1115,
        "timestamp_",
        (8, 'D', 'd'),
    )),
    preferred(with_typmod(base(
        TIMESTAMPTZ,
        "timestamptz",
        "timestamp with time zone",
        1185,
        "timestamptz_",
        (8, 'D', 'd'),
    ))),
    preferred(with_typmod(base(
        INTERVAL,
        "interval",
        "interval",
        1187,
        "interval_",
        (16, 'T', 'd'),
    ))),
    BaseType {
        storage: 'm',
        ..with_typmod(base(
            NUMERIC,
            "numeric",
            "numeric",
            1231,
            "numeric_",
            (-1, 'N', 'i'),
        ))
    },
    base(
        2205,
        "regclass",
        "regclass",
        2210,
        "regclass",
        (4, 'N', 'i'),
    ),
    base(2206, "regtype", "regtype", 2211, "regtype", (4, 'N', 'i')),
    base(
        4089,
        "regnamespace",
        "regnamespace",
        4090,
        "regnamespace",
        (4, 'N', 'i'),
    ),
    base(2950, "uuid", "uuid", 2951, "uuid_", (16, 'U', 'c')),
    base(3802, "jsonb", "jsonb", 3807, "jsonb_", (-1, 'U', 'i')),
    pseudo(base(
        2249,
        "record",
        "record",
        2287,
        "record_",
        (-1, 'P', 'd'),
    )),
    pseudo(base(
        ANYARRAY,
        "anyarray",
        "anyarray",
        0,
        "anyarray_",
        (-1, 'P', 'd'),
    )),
    pseudo(base(2278, "void", "void", 0, "void_", (4, 'P', 'i'))),
];

/// A row of `pg_type`: either a base type or the array type of one.
#[derive(Debug, Clone, Copy)]
pub(super) struct TypeRow {
    pub base: &'static BaseType,
    pub is_array: bool,
}

impl TypeRow {
    pub fn oid(&self) -> u32 {
        if self.is_array {
            self.base.array_oid
        } else {
            self.base.oid
        }
    }

    pub fn typname(&self) -> String {
        if self.is_array {
            format!("_{}", self.base.name)
        } else {
            self.base.name.to_string()
        }
    }
}

/// All `pg_type` rows, base types first, then their arrays.
pub(super) fn all_type_rows() -> impl Iterator<Item = TypeRow> {
    let bases = BASE_TYPES.iter().map(|base| TypeRow {
        base,
        is_array: false,
    });
    let arrays = BASE_TYPES
        .iter()
        .filter(|b| b.array_oid != 0)
        .map(|base| TypeRow {
            base,
            is_array: true,
        });
    bases.chain(arrays)
}

pub(super) fn lookup(oid: u32) -> Option<TypeRow> {
    BASE_TYPES.iter().find_map(|base| {
        if base.oid == oid {
            Some(TypeRow {
                base,
                is_array: false,
            })
        } else if base.array_oid == oid && oid != 0 {
            Some(TypeRow {
                base,
                is_array: true,
            })
        } else {
            None
        }
    })
}

/// Resolve a type name as `to_regtype` / `::regtype` accept it: internal
/// names (`int4`, `_int4`), SQL names (`integer`, `character varying`) and
/// `name[]`, optionally schema-qualified and with a typmod.
pub(super) fn lookup_name(name: &str) -> Option<TypeRow> {
    let trimmed = name.trim().to_ascii_lowercase();
    let unqualified = trimmed.strip_prefix("pg_catalog.").unwrap_or(&trimmed);
    let (stem, is_array) = match unqualified.strip_suffix("[]") {
        Some(s) => (s.trim_end(), true),
        None => (unqualified, false),
    };
    // A typmod such as "varchar(20)" names the same type.
    let stem = stem.split('(').next().unwrap_or(stem).trim();
    let stem = stem.trim_matches('"');
    let aliases: &[(&str, &str)] = &[
        ("int", "int4"),
        ("integer", "int4"),
        ("smallint", "int2"),
        ("bigint", "int8"),
        ("real", "float4"),
        ("double precision", "float8"),
        ("boolean", "bool"),
        ("decimal", "numeric"),
        ("character varying", "varchar"),
        ("character", "bpchar"),
        ("timestamp without time zone", "timestamp"),
        ("timestamp with time zone", "timestamptz"),
        ("time without time zone", "time"),
    ];
    let canonical = aliases
        .iter()
        .find(|(alias, _)| *alias == stem)
        .map_or(stem, |(_, canonical)| *canonical);
    if let Some(elem) = canonical.strip_prefix('_') {
        return find_base(elem).map(|base| TypeRow {
            base,
            is_array: true,
        });
    }
    let base = find_base(canonical)?;
    if is_array && base.array_oid == 0 {
        return None;
    }
    Some(TypeRow { base, is_array })
}

fn find_base(name: &str) -> Option<&'static BaseType> {
    BASE_TYPES.iter().find(|b| b.name == name)
}

/// `format_type(oid, typmod)` as PostgreSQL prints it. `None` typmod means
/// SQL NULL, which differs from -1 only for `bpchar`.
pub(super) fn format_type(oid: u32, typmod: Option<i32>) -> String {
    if oid == 0 {
        return "-".to_string();
    }
    let Some(row) = lookup(oid) else {
        return "???".to_string();
    };
    let base = row.base;
    // Postgres prints "bpchar" for typmod -1 but "character" for a NULL typmod.
    let null_typmod = typmod.is_none();
    let typmod = typmod.filter(|t| *t >= 0 && base.has_typmod);
    let mut name = match (base.oid, typmod) {
        (BPCHAR, None) if !null_typmod => "bpchar".to_string(),
        (BPCHAR | VARCHAR, Some(t)) => format!("{}({})", base.sql_name, t - 4),
        (NUMERIC, Some(t)) => {
            let t = t - 4;
            format!("numeric({},{})", (t >> 16) & 0xffff, t & 0xffff)
        }
        (TIMESTAMP, Some(p)) => format!("timestamp({p}) without time zone"),
        (TIMESTAMPTZ, Some(p)) => format!("timestamp({p}) with time zone"),
        (TIME, Some(p)) => format!("time({p}) without time zone"),
        _ => base.sql_name.to_string(),
    };
    if row.is_array {
        name.push_str("[]");
    }
    name
}

/// How `::regtype` prints a type: `format_type` with a NULL typmod.
pub(super) fn regtype_name(oid: u32) -> String {
    match lookup(oid) {
        Some(_) => format_type(oid, None),
        None => oid.to_string(),
    }
}

/// `information_schema.columns` facts about one column type.
#[derive(Debug, Default, Clone)]
pub(super) struct InfoSchemaType {
    pub data_type: String,
    pub udt_name: String,
    pub character_maximum_length: Option<i32>,
    pub character_octet_length: Option<i32>,
    pub numeric_precision: Option<i32>,
    pub numeric_precision_radix: Option<i32>,
    pub numeric_scale: Option<i32>,
    pub datetime_precision: Option<i32>,
}

/// Longest string Postgres stores, in bytes (1 GB), reported for unbounded text.
const MAX_OCTETS: i32 = 1_073_741_824;
/// Bytes per character in UTF8, the only encoding we serve.
const MAX_UTF8_BYTES: i32 = 4;

pub(super) fn info_schema_type(oid: u32, typmod: i32) -> InfoSchemaType {
    let Some(row) = lookup(oid) else {
        return InfoSchemaType {
            data_type: "USER-DEFINED".to_string(),
            udt_name: oid.to_string(),
            ..Default::default()
        };
    };
    let mut info = InfoSchemaType {
        data_type: row.base.sql_name.to_string(),
        udt_name: row.typname(),
        ..Default::default()
    };
    if row.is_array {
        info.data_type = "ARRAY".to_string();
        return info;
    }
    let typmod = (typmod >= 0).then_some(typmod);
    match row.base.oid {
        BPCHAR | VARCHAR => {
            info.character_maximum_length = typmod.map(|t| t - 4);
            info.character_octet_length =
                Some(typmod.map_or(MAX_OCTETS, |t| (t - 4).saturating_mul(MAX_UTF8_BYTES)));
        }
        TEXT => info.character_octet_length = Some(MAX_OCTETS),
        INT2 | INT4 | INT8 | FLOAT4 | FLOAT8 => {
            let bits = match row.base.oid {
                INT2 => 16,
                INT4 => 32,
                INT8 => 64,
                FLOAT4 => 24,
                _ => 53,
            };
            info.numeric_precision = Some(bits);
            info.numeric_precision_radix = Some(2);
            if !matches!(row.base.oid, FLOAT4 | FLOAT8) {
                info.numeric_scale = Some(0);
            }
        }
        NUMERIC => {
            info.numeric_precision_radix = Some(10);
            if let Some(t) = typmod {
                info.numeric_precision = Some(((t - 4) >> 16) & 0xffff);
                info.numeric_scale = Some((t - 4) & 0xffff);
            }
        }
        DATE => info.datetime_precision = Some(0),
        TIME | TIMESTAMP | TIMESTAMPTZ | INTERVAL => {
            info.datetime_precision = Some(typmod.unwrap_or(6));
        }
        _ => {}
    }
    info
}

/// Column length as `pg_attribute.attlen` reports it.
pub(super) fn type_len(oid: u32) -> i16 {
    match lookup(oid) {
        Some(row) if !row.is_array => row.base.len,
        _ => -1,
    }
}

/// `pg_attribute.attstorage` / `attalign` / `attbyval` for a column type.
pub(super) fn storage_align_byval(oid: u32) -> (char, char, bool) {
    match lookup(oid) {
        Some(row) if !row.is_array => (row.base.storage, row.base.align, row.base.byval),
        Some(row) => ('x', if row.base.align == 'd' { 'd' } else { 'i' }, false),
        None => ('x', 'i', false),
    }
}

/// Collation of a column of this type (100 = "default" for text types).
pub(super) fn collation(oid: u32) -> u32 {
    lookup(oid).map_or(0, |row| row.base.collation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_type_matches_postgres() {
        assert_eq!(format_type(VARCHAR, Some(24)), "character varying(20)");
        assert_eq!(format_type(NUMERIC, Some(655_366)), "numeric(10,2)");
        assert_eq!(format_type(NUMERIC, Some(-1)), "numeric");
        assert_eq!(
            format_type(TIMESTAMPTZ, Some(-1)),
            "timestamp with time zone"
        );
        assert_eq!(
            format_type(TIMESTAMP, Some(3)),
            "timestamp(3) without time zone"
        );
        assert_eq!(format_type(1015, Some(24)), "character varying(20)[]");
        assert_eq!(format_type(BPCHAR, Some(14)), "character(10)");
        assert_eq!(format_type(BPCHAR, Some(-1)), "bpchar");
        assert_eq!(format_type(BPCHAR, None), "character");
        assert_eq!(format_type(INT4, None), "integer");
        assert_eq!(format_type(CHAR, None), "\"char\"");
        assert_eq!(format_type(99_999, None), "???");
        assert_eq!(format_type(0, None), "-");
    }

    #[test]
    fn names_resolve_to_oids() {
        assert_eq!(lookup_name("integer").map(|t| t.oid()), Some(INT4));
        assert_eq!(lookup_name("pg_catalog.int4").map(|t| t.oid()), Some(INT4));
        assert_eq!(lookup_name("_text").map(|t| t.oid()), Some(1009));
        assert_eq!(lookup_name("text[]").map(|t| t.oid()), Some(1009));
        assert_eq!(lookup_name("jsonb").map(|t| t.oid()), Some(3802));
        assert_eq!(lookup_name("varchar(20)").map(|t| t.oid()), Some(VARCHAR));
        assert!(lookup_name("orders").is_none());
    }

    #[test]
    fn info_schema_facts() {
        let v = info_schema_type(VARCHAR, 24);
        assert_eq!(v.data_type, "character varying");
        assert_eq!(v.character_maximum_length, Some(20));
        let n = info_schema_type(NUMERIC, 655_366);
        assert_eq!((n.numeric_precision, n.numeric_scale), (Some(10), Some(2)));
        assert_eq!(info_schema_type(1009, -1).data_type, "ARRAY");
        assert_eq!(info_schema_type(INT4, -1).numeric_precision, Some(32));
    }
}
