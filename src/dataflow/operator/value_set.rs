//! A group's multiset of encoded values with their weights, as the
//! aggregate keeps them for `count(DISTINCT …)`, `array_agg`, `min`/`max`
//! over retractions and the like.
//!
//! Most groups hold a handful of values (a user's few cities, the last five
//! logins), so a set starts **packed**: its entries in one buffer, sorted,
//! each `[length][value][length][weight]`. Finding a value reads one run of
//! memory instead of a tree node and a separate allocation per value
//! compared, which is what an update of a group costs. The length is
//! written on both sides so the buffer can be walked from either end. A
//! set whose buffer outgrows [`PACKED_BYTES`] (or that gets a value longer
//! than a length byte says) turns into a `BTreeMap` for good.

use std::collections::{btree_map, BTreeMap};

/// Bytes a packed set's entries may take before it becomes a tree.
const PACKED_BYTES: usize = 512;

/// Bytes an entry takes besides its value: packed (two lengths and the
/// weight), and as memory accounts for it in a tree (node share and the
/// value's allocation).
const PACKED_OVERHEAD: usize = 10;
const TREE_OVERHEAD: usize = 48;

#[derive(Debug)]
pub(super) enum ValueSet {
    Packed(Vec<u8>),
    Tree(BTreeMap<Box<[u8]>, i64>),
}

impl Default for ValueSet {
    fn default() -> ValueSet {
        ValueSet::Packed(Vec::new())
    }
}

/// Where a value is in a packed buffer, or where it would go.
enum Found {
    /// The entry's start and its weight's.
    At(usize, usize),
    Before(usize),
}

impl ValueSet {
    /// The number of distinct values held.
    pub fn len(&self) -> usize {
        match self {
            ValueSet::Packed(_) => self.iter().count(),
            ValueSet::Tree(tree) => tree.len(),
        }
    }

    /// Memory the entries take, as [`ValueSet::add`] accounts it.
    pub fn bytes(&self) -> usize {
        match self {
            ValueSet::Packed(buf) => buf.len(),
            ValueSet::Tree(tree) => tree.keys().map(|k| k.len() + TREE_OVERHEAD).sum(),
        }
    }

    /// The values with their weights, ascending.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            ValueSet::Packed(buf) => Iter::Packed(buf),
            ValueSet::Tree(tree) => Iter::Tree(tree.iter()),
        }
    }

    /// The greatest value and its weight.
    pub fn last(&self) -> Option<(&[u8], i64)> {
        self.iter().next_back()
    }

    /// Adds `diff` to `value`'s weight (a value reaching 0 is removed);
    /// returns by how much [`ValueSet::bytes`] changed.
    pub fn add(&mut self, value: &[u8], diff: i64) -> isize {
        if diff == 0 {
            return 0;
        }
        let buf = match self {
            ValueSet::Tree(tree) => return tree_add(tree, value, diff),
            ValueSet::Packed(buf) => buf,
        };
        let entry_bytes = value.len() + PACKED_OVERHEAD;
        match find(buf, value) {
            Found::At(start, weight_at) => {
                let weight = read_weight(buf, weight_at) + diff;
                if weight != 0 {
                    buf[weight_at..weight_at + 8].copy_from_slice(&weight.to_le_bytes());
                    return 0;
                }
                buf.drain(start..weight_at + 8);
                -(entry_bytes as isize)
            }
            Found::Before(at)
                if value.len() <= usize::from(u8::MAX)
                    && buf.len() + entry_bytes <= PACKED_BYTES =>
            {
                let len = value.len() as u8;
                let entry = std::iter::once(len)
                    .chain(value.iter().copied())
                    .chain(std::iter::once(len))
                    .chain(diff.to_le_bytes());
                buf.splice(at..at, entry);
                entry_bytes as isize
            }
            Found::Before(_) => {
                let packed = buf.len() as isize;
                let mut tree: BTreeMap<Box<[u8]>, i64> =
                    Iter::Packed(buf).map(|(v, w)| (v.into(), w)).collect();
                tree_add(&mut tree, value, diff);
                *self = ValueSet::Tree(tree);
                self.bytes() as isize - packed
            }
        }
    }

    /// Takes `cut` (at most its weight) off the greatest value's weight;
    /// returns by how much [`ValueSet::bytes`] changed.
    pub fn cut_last(&mut self, cut: i64) -> isize {
        match self {
            ValueSet::Packed(buf) => {
                let Some((start, weight_at)) = last_entry(buf) else {
                    return 0;
                };
                let weight = read_weight(buf, weight_at) - cut;
                if weight <= 0 {
                    let len = buf.len() - start;
                    buf.truncate(start);
                    -(len as isize)
                } else {
                    buf[weight_at..].copy_from_slice(&weight.to_le_bytes());
                    0
                }
            }
            ValueSet::Tree(tree) => {
                let Some(mut last) = tree.last_entry() else {
                    return 0;
                };
                *last.get_mut() -= cut;
                if *last.get() > 0 {
                    return 0;
                }
                let (value, _) = last.remove_entry();
                -((value.len() + TREE_OVERHEAD) as isize)
            }
        }
    }
}

fn tree_add(tree: &mut BTreeMap<Box<[u8]>, i64>, value: &[u8], diff: i64) -> isize {
    match tree.get_mut(value) {
        Some(n) => {
            *n += diff;
            if *n != 0 {
                return 0;
            }
            tree.remove(value);
            -((value.len() + TREE_OVERHEAD) as isize)
        }
        None => {
            tree.insert(value.into(), diff);
            (value.len() + TREE_OVERHEAD) as isize
        }
    }
}

fn read_weight(buf: &[u8], at: usize) -> i64 {
    let mut weight = [0u8; 8];
    weight.copy_from_slice(&buf[at..at + 8]);
    i64::from_le_bytes(weight)
}

/// The entry holding `value` in a packed buffer, or where it belongs.
fn find(buf: &[u8], value: &[u8]) -> Found {
    let mut at = 0;
    while at < buf.len() {
        let len = usize::from(buf[at]);
        let held = &buf[at + 1..at + 1 + len];
        match held.cmp(value) {
            std::cmp::Ordering::Less => at += len + PACKED_OVERHEAD,
            std::cmp::Ordering::Equal => return Found::At(at, at + len + 2),
            std::cmp::Ordering::Greater => return Found::Before(at),
        }
    }
    Found::Before(at)
}

/// The last entry's start and its weight's, walking back from the end.
fn last_entry(buf: &[u8]) -> Option<(usize, usize)> {
    let weight_at = buf.len().checked_sub(8)?;
    let len = usize::from(buf[weight_at - 1]);
    Some((weight_at - 2 - len, weight_at))
}

/// The entries of a [`ValueSet`], ascending, from either end.
pub(super) enum Iter<'a> {
    /// The entries not yet given out.
    Packed(&'a [u8]),
    Tree(btree_map::Iter<'a, Box<[u8]>, i64>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], i64);

    fn next(&mut self) -> Option<(&'a [u8], i64)> {
        match self {
            Iter::Packed(buf) => {
                let len = usize::from(*buf.first()?);
                let value = &buf[1..1 + len];
                let weight = read_weight(buf, len + 2);
                *buf = &buf[len + PACKED_OVERHEAD..];
                Some((value, weight))
            }
            Iter::Tree(iter) => iter.next().map(|(v, w)| (v.as_ref(), *w)),
        }
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Packed(buf) => {
                let (start, weight_at) = last_entry(buf)?;
                let item = (&buf[start + 1..weight_at - 1], read_weight(buf, weight_at));
                *buf = &buf[..start];
                Some(item)
            }
            Iter::Tree(iter) => iter.next_back().map(|(v, w)| (v.as_ref(), *w)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `changes` to a set and to a plain map, checking after each
    /// that both hold the same values in the same order, from both ends,
    /// and that the bytes accounted add up.
    fn check(changes: &[(Vec<u8>, i64)]) -> ValueSet {
        let mut set = ValueSet::default();
        let mut model: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut bytes = 0isize;
        for (value, diff) in changes {
            bytes += set.add(value, *diff);
            let n = model.entry(value.clone()).or_insert(0);
            *n += diff;
            if *n == 0 {
                model.remove(value);
            }
            let expected: Vec<(&[u8], i64)> =
                model.iter().map(|(v, w)| (v.as_slice(), *w)).collect();
            assert_eq!(set.iter().collect::<Vec<_>>(), expected);
            let mut backwards: Vec<_> = set.iter().rev().collect();
            backwards.reverse();
            assert_eq!(backwards, expected);
            assert_eq!(set.len(), model.len());
            assert_eq!(bytes, set.bytes() as isize);
        }
        set
    }

    #[test]
    fn a_few_values_stay_packed_and_ordered() {
        let changes: Vec<(Vec<u8>, i64)> = [
            (&b"m"[..], 1),
            (b"c", 2),
            (b"x", 1),
            (b"", 1),
            (b"c", -2),
            (b"m", 3),
            (b"mm", -1),
            (b"x", -1),
            (b"mm", 1),
        ]
        .iter()
        .map(|(v, w)| (v.to_vec(), *w))
        .collect();
        let set = check(&changes);
        assert!(matches!(set, ValueSet::Packed(_)));
        assert_eq!(set.last(), Some((&b"m"[..], 4)));
    }

    #[test]
    fn many_or_long_values_turn_it_into_a_tree() {
        // 100 values of 12 bytes outgrow a packed buffer part way.
        let mut changes: Vec<(Vec<u8>, i64)> = (0..100u32)
            .map(|i| (format!("value-{:06}", (i * 37) % 100).into_bytes(), 1))
            .collect();
        changes.extend((0..50u32).map(|i| (format!("value-{:06}", i * 2).into_bytes(), -1)));
        assert!(matches!(check(&changes), ValueSet::Tree(_)));
        // One value longer than a length byte holds.
        let long = vec![(b"a".to_vec(), 1), (vec![7u8; 300], 2), (b"b".to_vec(), 1)];
        assert!(matches!(check(&long), ValueSet::Tree(_)));
    }

    #[test]
    fn cutting_the_last_value_lowers_its_weight_then_removes_it() {
        for tree in [false, true] {
            let mut set = ValueSet::default();
            if tree {
                set.add(&[9u8; 300], 1);
                set.cut_last(1);
            }
            let mut bytes = set.bytes() as isize;
            bytes += set.add(b"a", 1);
            bytes += set.add(b"b", 3);
            bytes += set.cut_last(2);
            assert_eq!(set.last(), Some((&b"b"[..], 1)));
            bytes += set.cut_last(1);
            assert_eq!(set.last(), Some((&b"a"[..], 1)));
            bytes += set.cut_last(5);
            assert_eq!(set.last(), None);
            assert_eq!(bytes, set.bytes() as isize);
            assert_eq!(set.cut_last(1), 0);
        }
    }
}
