//! Row encoding of Arrow values (arrow's order-preserving row format), used
//! for keys and for rows held in arrangements, and the hash that decides
//! which worker owns a key.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::common::hash_utils::create_hashes;

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

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

/// A hash map keyed by encoded bytes, held as [`KeyBytes`], whose every
/// probe hashes the caller's slice. `HashMap<KeyBytes, _>` hashes a new key
/// from the `KeyBytes` just built on the stack, and at 10M keys that took
/// 540 ns a key against 90 hashing the slice (the same keys, the same
/// table; hashing the copy is the only difference). Most likely, reading
/// back bytes just copied there waits for the stores before them, among
/// them the previous insert's store into the table, a cache miss: each
/// insert of a new key then waits for the one before.
pub struct KeyMap<V> {
    table: HashTable<(KeyBytes, V)>,
    hasher: DefaultHashBuilder,
}

impl<V> Default for KeyMap<V> {
    fn default() -> KeyMap<V> {
        KeyMap {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<V> std::fmt::Debug for KeyMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMap")
            .field("len", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl<V: Clone> Clone for KeyMap<V> {
    fn clone(&self) -> KeyMap<V> {
        KeyMap {
            table: self.table.clone(),
            hasher: self.hasher.clone(),
        }
    }
}

impl<V> KeyMap<V> {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.table
            .find(self.hash(key), |(k, _)| k.as_slice() == key)
            .map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let hash = self.hash(key);
        self.table
            .find_mut(hash, |(k, _)| k.as_slice() == key)
            .map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// The value under `key`, made by `make` if there was none (and then
    /// `true` with it). A key held is found before any room is made: an
    /// update never grows a full table.
    pub fn get_or_insert_with(&mut self, key: &[u8], make: impl FnOnce() -> V) -> (&mut V, bool) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(key);
        match self.table.find_entry(hash, |(k, _)| k.as_slice() == key) {
            Ok(held) => (&mut held.into_mut().1, false),
            Err(absent) => {
                let rehash = |(k, _): &(KeyBytes, V)| hasher.hash_one(k.as_slice());
                let entry =
                    absent
                        .into_table()
                        .insert_unique(hash, (KeyBytes::new(key), make()), rehash);
                (&mut entry.into_mut().1, true)
            }
        }
    }

    /// Puts `value` under `key`; returns the value it replaces.
    pub fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        let mut value = Some(value);
        let (held, created) = self.get_or_insert_with(key, || value.take().expect("made once"));
        match created {
            true => None,
            false => value.map(|v| std::mem::replace(held, v)),
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let hash = self.hash(key);
        match self.table.find_entry(hash, |(k, _)| k.as_slice() == key) {
            Ok(entry) => Some(entry.remove().0 .1),
            Err(_) => None,
        }
    }

    /// Room for `more` keys beyond those held.
    pub fn reserve(&mut self, more: usize) {
        let hasher = &self.hasher;
        self.table
            .reserve(more, |(k, _)| hasher.hash_one(k.as_slice()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&KeyBytes, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &KeyBytes> {
        self.table.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.table.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.table.iter_mut().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map grown through many reserves and inserts finds every key:
    /// inserting a key again replaces its value, removed keys are gone,
    /// and short (inline) and long (heap) keys behave alike.
    #[test]
    fn key_map_finds_every_key() {
        let key = |k: u64| -> Vec<u8> {
            match k % 3 {
                0 => k.to_be_bytes().to_vec(),
                _ => format!("a key long enough for the heap {k}").into_bytes(),
            }
        };
        let mut map: KeyMap<u64> = KeyMap::default();
        for k in 0..200_000 {
            assert_eq!(map.insert(&key(k), k), None);
        }
        map.reserve(100_000);
        for k in 150_000..250_000 {
            let replaced = map.insert(&key(k), k + 1_000_000);
            assert_eq!(replaced, (k < 200_000).then_some(k));
        }
        for k in (0..10_000).step_by(1000) {
            assert_eq!(map.remove(&key(k)), Some(k));
            assert_eq!(map.remove(&key(k)), None);
        }
        let (value, created) = map.get_or_insert_with(&key(1), || 7);
        assert_eq!((*value, created), (1, false));
        let (value, created) = map.get_or_insert_with(&key(0), || 7);
        assert_eq!((*value, created), (7, true));
        assert_eq!(map.len(), 250_000 - 10 + 1);
        for k in 1..250_000 {
            let expected = match k {
                k if k < 10_000 && k % 1000 == 0 => None,
                k if k < 150_000 => Some(k),
                k => Some(k + 1_000_000),
            };
            assert_eq!(map.get(&key(k)).copied(), expected, "key {k}");
        }
        assert_eq!(map.keys().count(), map.len());
        assert_eq!(
            map.iter().filter(|(k, v)| map.get(k) == Some(v)).count(),
            map.len()
        );
    }
}
