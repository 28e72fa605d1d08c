//! Row encoding of Arrow values (arrow's order-preserving row format), used
//! for keys and for rows held in arrangements, and the hash that decides
//! which worker owns a key.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::common::hash_utils::create_hashes;

use crate::error::Result;

/// Encodes columns of fixed types to comparable byte rows and back.
/// Encoded rows compare (as bytes) in the order the sort options give.
#[derive(Debug)]
pub struct RowCodec {
    converter: RowConverter,
}

impl RowCodec {
    /// Ascending, nulls first, for every column.
    pub fn new<'a>(types: impl IntoIterator<Item = &'a DataType>) -> Result<RowCodec> {
        Self::with_order(
            types
                .into_iter()
                .map(|t| (t.clone(), SortOptions::default())),
        )
    }

    pub fn with_order(
        fields: impl IntoIterator<Item = (DataType, SortOptions)>,
    ) -> Result<RowCodec> {
        let fields = fields
            .into_iter()
            .map(|(t, o)| SortField::new_with_options(t, o))
            .collect();
        Ok(RowCodec {
            converter: RowConverter::new(fields)?,
        })
    }

    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows> {
        Ok(self.converter.convert_columns(columns)?)
    }

    /// Decodes encoded rows back into columns.
    pub fn decode<'a>(&self, rows: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        let rows: Vec<Row<'_>> = rows.into_iter().map(|r| parser.parse(r)).collect();
        Ok(self.converter.convert_rows(rows)?)
    }
}

/// Seeds shared by every worker, so a key hashes to one shard everywhere.
fn hash_state() -> datafusion::common::hash_utils::RandomState {
    datafusion::common::hash_utils::RandomState::with_seed(0x5eed_eddb)
}

/// The shard (in `0..shards`) owning each row's key.
pub fn shard_of_rows(keys: &[ArrayRef], num_rows: usize, shards: usize) -> Result<Vec<usize>> {
    if shards == 1 {
        return Ok(vec![0; num_rows]);
    }
    if keys.is_empty() {
        return Ok(vec![shard_of_empty_key(shards); num_rows]);
    }
    let mut hashes = vec![0u64; num_rows];
    create_hashes(keys, &hash_state(), &mut hashes)?;
    Ok(hashes
        .iter()
        .map(|h| (*h % shards as u64) as usize)
        .collect())
}

/// The shard owning the empty key (a global aggregate or top-N).
/// The key hash of a fixed probe key: a checkpoint taken by a build that
/// hashes keys differently (so would put them on other workers) is not
/// restored.
pub fn shard_probe() -> u64 {
    let probe: ArrayRef = std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(vec![
        20_261_123_i64,
    ]));
    let mut hashes = vec![0u64; 1];
    match create_hashes(&[probe], &hash_state(), &mut hashes) {
        Ok(_) => hashes[0],
        Err(_) => 0,
    }
}

pub fn shard_of_empty_key(_shards: usize) -> usize {
    0
}

/// Encoded key or row bytes; short ones (integers, short text, small rows)
/// live inline, so a hash map holding them allocates nothing per entry and a
/// probe touches one place in memory instead of two.
#[derive(Debug, Clone, Default)]
pub struct KeyBytes(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Inline(u8, [u8; INLINE_BYTES]),
    Heap(Box<[u8]>),
}

/// Bytes held without an allocation.
const INLINE_BYTES: usize = 22;

impl Default for Repr {
    fn default() -> Repr {
        Repr::Inline(0, [0; INLINE_BYTES])
    }
}

impl KeyBytes {
    /// No bytes.
    pub const EMPTY: KeyBytes = KeyBytes(Repr::Inline(0, [0; INLINE_BYTES]));

    pub fn new(bytes: &[u8]) -> KeyBytes {
        KeyBytes(if bytes.len() <= INLINE_BYTES {
            let mut inline = [0u8; INLINE_BYTES];
            inline[..bytes.len()].copy_from_slice(bytes);
            Repr::Inline(bytes.len() as u8, inline)
        } else {
            Repr::Heap(bytes.into())
        })
    }

    /// Replaces the bytes, reusing the allocation when the length is the
    /// same.
    pub fn overwrite(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Repr::Heap(held) if held.len() == bytes.len() => held.copy_from_slice(bytes),
            _ => *self = KeyBytes::new(bytes),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline(len, bytes) => &bytes[..*len as usize],
            Repr::Heap(bytes) => bytes,
        }
    }
}

// Hash and equality are those of the byte slice, so the map can be probed
// with a borrowed `&[u8]`.
impl std::hash::Hash for KeyBytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &KeyBytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBytes {}

impl PartialOrd for KeyBytes {
    fn partial_cmp(&self, other: &KeyBytes) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyBytes {
    fn cmp(&self, other: &KeyBytes) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::borrow::Borrow<[u8]> for KeyBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::ops::Deref for KeyBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<&[u8]> for KeyBytes {
    fn from(bytes: &[u8]) -> KeyBytes {
        KeyBytes::new(bytes)
    }
}
