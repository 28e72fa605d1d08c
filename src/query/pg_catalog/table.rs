//! Column specs of catalog relations and a row builder that turns named cells
//! into an Arrow `RecordBatch`. Owns the mapping from Postgres catalog column
//! types to Arrow types (oid -> UInt32, name -> Utf8, int2vector -> List(Int16) ...).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Int16Array, Int16Builder, Int32Array, Int64Array,
    ListBuilder, StringArray, StringBuilder, TimestampMicrosecondArray, UInt32Array, UInt32Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;

use super::types;

/// Arrow representation of a catalog column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Oid,
    Name,
    Char,
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Text,
    OidList,
    Int2List,
    TextList,
    TimestampTz,
}

impl Kind {
    pub fn data_type(self) -> DataType {
        let list = |inner: DataType| DataType::List(Arc::new(Field::new("item", inner, true)));
        match self {
            Kind::Oid => DataType::UInt32,
            Kind::Name | Kind::Char | Kind::Text => DataType::Utf8,
            Kind::Bool => DataType::Boolean,
            Kind::Int2 => DataType::Int16,
            Kind::Int4 => DataType::Int32,
            Kind::Int8 => DataType::Int64,
            Kind::Float4 => DataType::Float32,
            Kind::OidList => list(DataType::UInt32),
            Kind::Int2List => list(DataType::Int16),
            Kind::TextList => list(DataType::Utf8),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// Value of a cell a row builder left unset: Postgres catalogs keep
    /// fixed-width columns NOT NULL, so those default to zero / false / "".
    fn default_value(self) -> Value {
        match self {
            Kind::Oid => Value::U32(0),
            Kind::Name | Kind::Char => Value::Str(String::new()),
            Kind::Bool => Value::Bool(false),
            Kind::Int2 | Kind::Int4 | Kind::Int8 => Value::I64(0),
            Kind::Float4 => Value::F32(0.0),
            Kind::Text | Kind::OidList | Kind::Int2List | Kind::TextList | Kind::TimestampTz => {
                Value::Null
            }
        }
    }
}

/// One column of a catalog relation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// The Postgres type OID `pg_attribute` reports for it.
    pub type_oid: u32,
}

/// Parse "relname:name,relnatts:smallint,..." (the form `format_type` prints).
pub(super) fn parse_columns(spec: &'static str) -> Vec<Column> {
    spec.split(',')
        .filter_map(|item| {
            let (name, ty) = item.split_once(':')?;
            let (kind, type_oid) = kind_of(ty.trim());
            Some(Column {
                name: name.trim(),
                kind,
                type_oid,
            })
        })
        .collect()
}

fn kind_of(ty: &str) -> (Kind, u32) {
    let domain = ty.strip_prefix("information_schema.").unwrap_or(ty);
    match domain {
        "oid" => (Kind::Oid, types::OID),
        "xid" => (Kind::Oid, types::XID),
        "regtype" => (Kind::Oid, 2206),
        "name" | "sql_identifier" => (Kind::Name, types::NAME),
        "\"char\"" => (Kind::Char, types::CHAR),
        "boolean" => (Kind::Bool, types::BOOL),
        "smallint" => (Kind::Int2, types::INT2),
        "integer" | "cardinal_number" => (Kind::Int4, types::INT4),
        "bigint" => (Kind::Int8, types::INT8),
        "real" => (Kind::Float4, types::FLOAT4),
        "regproc" => (Kind::Text, types::REGPROC),
        "pg_node_tree" => (Kind::Text, types::PG_NODE_TREE),
        "anyarray" => (Kind::Text, types::ANYARRAY),
        "yes_or_no" => (Kind::Text, types::VARCHAR),
        "oid[]" => (Kind::OidList, 1028),
        "oidvector" => (Kind::OidList, types::OIDVECTOR),
        "regtype[]" => (Kind::OidList, 2211),
        "smallint[]" => (Kind::Int2List, 1005),
        "int2vector" => (Kind::Int2List, types::INT2VECTOR),
        "text[]" => (Kind::TextList, 1009),
        "aclitem[]" => (Kind::TextList, 1034),
        "\"char\"[]" => (Kind::TextList, 1002),
        "timestamp with time zone" | "time_stamp" => (Kind::TimestampTz, types::TIMESTAMPTZ),
        // text, character_data, and the rarely read inet / bytea / interval
        // columns are served as text.
        _ => (Kind::Text, types::TEXT),
    }
}

pub(super) fn schema_of(columns: &[Column]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(c.name, c.kind.data_type(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// A cell value; converted to the column's Arrow type when the batch is built.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    U32(u32),
    I64(i64),
    F32(f32),
    Bool(bool),
    Str(String),
    U32s(Vec<u32>),
    I16s(Vec<i16>),
    Strs(Vec<String>),
}

macro_rules! value_from {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from($v: $t) -> Self {
                $e
            }
        })*
    };
}

value_from! {
    u32 => |v| Value::U32(v),
    i16 => |v| Value::I64(i64::from(v)),
    i32 => |v| Value::I64(i64::from(v)),
    i64 => |v| Value::I64(v),
    f32 => |v| Value::F32(v),
    bool => |v| Value::Bool(v),
    char => |v| Value::Str(v.to_string()),
    String => |v| Value::Str(v),
    &str => |v| Value::Str(v.to_string()),
    &String => |v| Value::Str(v.clone()),
    Vec<u32> => |v| Value::U32s(v),
    Vec<i16> => |v| Value::I16s(v),
    Vec<String> => |v| Value::Strs(v),
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Build a row as `[("column", Value), ...]`.
macro_rules! row {
    ($($name:literal => $value:expr),* $(,)?) => {
        vec![$(($name, Value::from($value))),*]
    };
}
pub(super) use row;

/// Rows of one catalog relation, filled by column name.
pub(super) struct RowSet {
    columns: Vec<Column>,
    cells: Vec<Vec<Value>>,
}

impl RowSet {
    pub fn new(columns: Vec<Column>) -> Self {
        Self {
            columns,
            cells: Vec::new(),
        }
    }

    /// Add a row; columns not named take their kind's default.
    pub fn push(&mut self, named: Vec<(&str, Value)>) {
        let mut row: Vec<Value> = self
            .columns
            .iter()
            .map(|c| c.kind.default_value())
            .collect();
        for (name, value) in named {
            match self.columns.iter().position(|c| c.name == name) {
                Some(i) => row[i] = value,
                None => debug_assert!(false, "catalog row names unknown column {name}"),
            }
        }
        self.cells.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn into_batch(self) -> Result<RecordBatch> {
        let schema = schema_of(&self.columns);
        let arrays = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| build_array(c.kind, self.cells.iter().map(|r| &r[i])))
            .collect::<Vec<_>>();
        Ok(RecordBatch::try_new(schema, arrays)?)
    }
}

fn build_array<'a>(kind: Kind, values: impl Iterator<Item = &'a Value>) -> ArrayRef {
    match kind {
        Kind::Oid => Arc::new(values.map(as_u32).collect::<UInt32Array>()),
        Kind::Name | Kind::Char | Kind::Text => {
            Arc::new(values.map(as_str).collect::<StringArray>())
        }
        Kind::Bool => Arc::new(values.map(as_bool).collect::<BooleanArray>()),
        Kind::Int2 => Arc::new(
            values
                .map(|v| as_i64(v).and_then(|n| i16::try_from(n).ok()))
                .collect::<Int16Array>(),
        ),
        Kind::Int4 => Arc::new(
            values
                .map(|v| as_i64(v).and_then(|n| i32::try_from(n).ok()))
                .collect::<Int32Array>(),
        ),
        Kind::Int8 => Arc::new(values.map(as_i64).collect::<Int64Array>()),
        Kind::Float4 => Arc::new(values.map(as_f32).collect::<Float32Array>()),
        // Catalog timestamps (password expiry, ...) are never set here.
        Kind::TimestampTz => Arc::new(
            values
                .map(|_| None::<i64>)
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        Kind::OidList => oid_list(values),
        Kind::Int2List => int2_list(values),
        Kind::TextList => text_list(values),
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    match v {
        Value::U32(n) => Some(*n),
        Value::I64(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::I64(n) => Some(*n),
        Value::U32(n) => Some(i64::from(*n)),
        _ => None,
    }
}

fn as_f32(v: &Value) -> Option<f32> {
    match v {
        Value::F32(n) => Some(*n),
        // Catalog counts such as reltuples fit f32 closely enough.
        Value::I64(n) => Some(*n as f32),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn as_str(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn oid_list<'a>(values: impl Iterator<Item = &'a Value>) -> ArrayRef {
    let mut builder = ListBuilder::new(UInt32Builder::new());
    for v in values {
        match v {
            Value::U32s(items) => {
                builder.values().append_slice(items);
                builder.append(true);
            }
            _ => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

fn int2_list<'a>(values: impl Iterator<Item = &'a Value>) -> ArrayRef {
    let mut builder = ListBuilder::new(Int16Builder::new());
    for v in values {
        match v {
            Value::I16s(items) => {
                builder.values().append_slice(items);
                builder.append(true);
            }
            _ => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

fn text_list<'a>(values: impl Iterator<Item = &'a Value>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for v in values {
        match v {
            Value::Strs(items) => {
                for item in items {
                    builder.values().append_value(item);
                }
                builder.append(true);
            }
            _ => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_typed_columns_with_defaults() {
        let columns = parse_columns(
            "oid:oid,relname:name,relnatts:smallint,indkey:int2vector,relacl:aclitem[]",
        );
        assert_eq!(columns[3].type_oid, types::INT2VECTOR);
        let mut rows = RowSet::new(columns);
        rows.push(row! { "oid" => 7u32, "relname" => "t", "indkey" => vec![1i16, 2] });
        let batch = rows.into_batch().expect("batch");
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema().field(0).data_type(), &DataType::UInt32);
        assert_eq!(batch.column(2).null_count(), 0, "smallint defaults to 0");
        assert_eq!(batch.column(4).null_count(), 1, "arrays default to NULL");
    }
}
