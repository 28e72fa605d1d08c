//! Operator state as checkpoints store it: a plain little-endian byte
//! layout each stateful operator writes with [`StateWriter`] and reads back
//! with [`StateReader`], and the checksum that tells a whole checkpoint
//! from a torn or corrupted one.
//!
//! The layout carries no field names or versions: state is written and
//! read by the same build (a checkpoint records the graph it came from, and
//! one whose graph differs is not restored). A reader never trusts a
//! length: every count is checked against the bytes left, so a corrupt
//! state is an error, never a giant allocation or a panic.

use crate::error::{Error, Result};

/// Appends state values to a byte buffer.
#[derive(Debug, Default)]
pub struct StateWriter {
    buf: Vec<u8>,
}

impl StateWriter {
    pub fn new() -> StateWriter {
        StateWriter::default()
    }

    /// A writer with room for about `bytes`: large states are written
    /// without the buffer being copied as it grows.
    pub fn with_capacity(bytes: usize) -> StateWriter {
        StateWriter {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// Starts a length-prefixed section written in place (read back with
    /// [`StateReader::bytes`]); [`StateWriter::end_section`] fills in its
    /// length.
    pub fn begin_section(&mut self) -> usize {
        let at = self.buf.len();
        self.u64(0);
        at
    }

    pub fn end_section(&mut self, at: usize) {
        let len = (self.buf.len() - at - 8) as u64;
        self.buf[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i128(&mut self, v: i128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// Overwrites the flag written at `at` (see [`StateWriter::written`]).
    pub fn set_bool(&mut self, at: usize, v: bool) {
        self.buf[at] = u8::from(v);
    }

    /// A count or a length.
    pub fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    /// A byte string, length first.
    pub fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.buf.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.buf.len()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Makes room for `bytes` more.
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }
}

/// The changes an operator made since its last checkpoint, written as they
/// are made: a checkpoint copies these bytes, with no pass over the state
/// and no lookup in it. Read back as a count of entries
/// followed by the entries, each in the layout its operator chose.
#[derive(Debug, Default)]
pub struct ChangeLog {
    entries: StateWriter,
    count: usize,
}

impl ChangeLog {
    /// The writer for one more entry.
    pub fn entry(&mut self) -> &mut StateWriter {
        self.count += 1;
        &mut self.entries
    }

    /// Bytes the entries take.
    pub fn bytes(&self) -> usize {
        self.entries.written()
    }

    /// Whether the log outgrew the `state_bytes` of what it logs: the
    /// state whole is then smaller to write, so the log is not written but
    /// dropped (which also bounds the memory logs take when checkpoints
    /// stall).
    pub fn outgrew(&self, state_bytes: usize) -> bool {
        self.bytes() > state_bytes
    }

    /// Writes the count of entries and the entries.
    pub fn write_to(&self, state: &mut StateWriter) {
        state.reserve(self.bytes() + 8);
        state.len(self.count);
        state.buf.extend_from_slice(&self.entries.buf);
    }

    /// Writes what [`ChangeLog::write_to`] writes, moving the entries in
    /// rather than copying them.
    pub fn move_into(self, state: &mut StatePieces) {
        state.writer().len(self.count);
        state.append(self.entries.buf);
    }
}

/// State bytes held in pieces, stored one after another as if one
/// [`StateWriter`] had written them all: large parts (each worker's
/// operator states, a taken [`ChangeLog`]) are moved in, not copied.
#[derive(Debug, Default)]
pub struct StatePieces {
    pieces: Vec<Vec<u8>>,
    /// Values written after the last piece appended.
    tail: StateWriter,
}

impl StatePieces {
    pub fn new() -> StatePieces {
        StatePieces::default()
    }

    /// The writer for values following the pieces so far.
    pub fn writer(&mut self) -> &mut StateWriter {
        &mut self.tail
    }

    /// Appends `piece`'s bytes as they are.
    pub fn append(&mut self, piece: Vec<u8>) {
        let tail = std::mem::take(&mut self.tail.buf);
        self.pieces
            .extend([tail, piece].into_iter().filter(|p| !p.is_empty()));
    }

    /// As [`StateWriter::bytes`]: the length, then the bytes.
    pub fn bytes(&mut self, piece: Vec<u8>) {
        self.tail.len(piece.len());
        self.append(piece);
    }

    /// As [`StateWriter::bytes`] of all of `other`'s bytes.
    pub fn nest(&mut self, other: StatePieces) {
        self.tail.len(other.len());
        for piece in other.into_pieces() {
            self.append(piece);
        }
    }

    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Vec::len).sum::<usize>() + self.tail.written()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The [`checksum`] of all the bytes.
    pub fn checksum(&self) -> u64 {
        let mut sum = Checksum::default();
        for piece in self.pieces.iter().chain([&self.tail.buf]) {
            sum.update(piece);
        }
        sum.finish()
    }

    /// The pieces, in order.
    pub fn into_pieces(mut self) -> Vec<Vec<u8>> {
        self.append(Vec::new());
        self.pieces
    }
}

/// Reads state values back, in the order they were written.
#[derive(Debug)]
pub struct StateReader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> StateReader<'a> {
    pub fn new(data: &'a [u8]) -> StateReader<'a> {
        StateReader { data, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() - self.at < n {
            return Err(corrupt(format!(
                "state ends after {} bytes, {n} more expected",
                self.data.len()
            )));
        }
        let taken = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn i128(&mut self) -> Result<i128> {
        Ok(i128::from_le_bytes(self.array()?))
    }

    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(u64::from_le_bytes(self.array()?)))
    }

    pub fn bool(&mut self) -> Result<bool> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format!("{other} is not a boolean"))),
        }
    }

    /// A count of items that each take at least `min_item_bytes` bytes:
    /// more than the bytes left can hold is corruption.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.data.len() - self.at) as u64;
        if n.saturating_mul(min_item_bytes.max(1) as u64) > left {
            return Err(corrupt(format!(
                "a count of {n} does not fit in the {left} bytes left"
            )));
        }
        Ok(n as usize)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.count(1)?;
        self.take(n)
    }

    pub fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|e| corrupt(e.to_string()))
    }

    /// Checks that everything was read.
    pub fn finish(&self) -> Result<()> {
        match self.data.len() - self.at {
            0 => Ok(()),
            left => Err(corrupt(format!("{left} bytes of state left unread"))),
        }
    }
}

/// The error for state that does not read back.
pub fn corrupt(detail: String) -> Error {
    Error::Storage(format!("corrupt checkpoint state: {detail}"))
}

/// A 64-bit checksum of `data`. Each 8-byte word goes through a step that
/// is a bijection of the running value for a fixed word and injective in
/// the word for a fixed running value, so changing any one word always
/// changes the result. Words are taken in four interleaved lanes (so the
/// steps of one lane overlap those of the others: several GB/s), which
/// are folded together by the same step; the rest and the length are mixed
/// in last.
pub fn checksum(data: &[u8]) -> u64 {
    let mut sum = Checksum::default();
    sum.update(data);
    sum.finish()
}

/// [`checksum`] of bytes given in pieces (a record streamed to a file).
#[derive(Debug, Clone)]
pub struct Checksum {
    lanes: [u64; 4],
    /// Bytes of a block not yet complete.
    pending: [u8; 32],
    pending_len: usize,
    len: u64,
}

const CHECKSUM_PRIME: u64 = 0x0000_0100_0000_01b3;
const CHECKSUM_SEED: u64 = 0xcbf2_9ce4_8422_2325;

fn checksum_step(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(CHECKSUM_PRIME).rotate_left(23)
}

fn checksum_word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
}

impl Default for Checksum {
    fn default() -> Checksum {
        let seed = CHECKSUM_SEED;
        Checksum {
            lanes: [seed, seed ^ 1, seed ^ 2, seed ^ 3],
            pending: [0; 32],
            pending_len: 0,
            len: 0,
        }
    }
}

impl Checksum {
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.pending_len > 0 {
            let take = (32 - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < 32 {
                return;
            }
            let block = self.pending;
            self.block(&block);
            self.pending_len = 0;
        }
        let mut blocks = data.chunks_exact(32);
        for block in &mut blocks {
            self.block(block);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    fn block(&mut self, block: &[u8]) {
        for (lane, w) in self.lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = checksum_step(*lane, checksum_word(w));
        }
    }

    pub fn finish(&self) -> u64 {
        let mut h = self
            .lanes
            .iter()
            .fold(CHECKSUM_SEED, |h, lane| checksum_step(h, *lane));
        let rest = &self.pending[..self.pending_len];
        let mut words = rest.chunks_exact(8);
        for w in &mut words {
            h = checksum_step(h, checksum_word(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            h = checksum_step(h, u64::from_le_bytes(last));
        }
        checksum_step(h, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces moved in, nested and empty give the bytes one writer would
    /// have written, with their length and checksum.
    #[test]
    fn pieces_hold_the_bytes_one_writer_would_write() {
        let mut log = ChangeLog::default();
        log.entry().bytes(b"key");
        log.entry().i64(-1);
        let mut inner = StatePieces::new();
        inner.writer().bool(true);
        log.move_into(&mut inner);
        inner.append(Vec::new());
        let mut pieces = StatePieces::new();
        pieces.writer().len(2);
        pieces.bytes(b"first worker".to_vec());
        pieces.bytes(Vec::new());
        pieces.nest(inner);
        pieces.writer().u64(9);

        let mut log = ChangeLog::default();
        log.entry().bytes(b"key");
        log.entry().i64(-1);
        let mut inner = StateWriter::new();
        inner.bool(true);
        log.write_to(&mut inner);
        let mut one = StateWriter::new();
        one.len(2);
        one.bytes(b"first worker");
        one.bytes(b"");
        one.bytes(&inner.into_bytes());
        one.u64(9);
        let one = one.into_bytes();

        assert_eq!(pieces.len(), one.len());
        assert_eq!(pieces.checksum(), checksum(&one));
        let pieces = pieces.into_pieces();
        assert!(pieces.iter().all(|p| !p.is_empty()));
        assert_eq!(pieces.concat(), one);
    }

    #[test]
    fn values_read_back_in_order() {
        let mut w = StateWriter::new();
        w.u64(7);
        w.i64(-3);
        w.i128(i128::MIN + 5);
        w.f64(-0.25);
        w.bool(true);
        w.bytes(b"abc");
        w.str("zé");
        let section = w.begin_section();
        w.u64(9);
        w.bool(false);
        w.end_section(section);
        let bytes = w.into_bytes();
        let mut r = StateReader::new(&bytes);
        assert_eq!(r.u64().unwrap(), 7);
        assert_eq!(r.i64().unwrap(), -3);
        assert_eq!(r.i128().unwrap(), i128::MIN + 5);
        assert_eq!(r.f64().unwrap(), -0.25);
        assert!(r.bool().unwrap());
        assert_eq!(r.bytes().unwrap(), b"abc");
        assert_eq!(r.str().unwrap(), "zé");
        let mut section = StateReader::new(r.bytes().unwrap());
        assert_eq!(section.u64().unwrap(), 9);
        assert!(!section.bool().unwrap());
        section.finish().unwrap();
        r.finish().unwrap();
    }

    #[test]
    fn truncated_or_oversized_state_is_an_error_not_a_panic() {
        let mut w = StateWriter::new();
        w.bytes(b"abcdef");
        let bytes = w.into_bytes();
        for cut in 0..bytes.len() {
            assert!(
                StateReader::new(&bytes[..cut]).bytes().is_err(),
                "cut {cut}"
            );
        }
        let mut huge = StateWriter::new();
        huge.u64(u64::MAX);
        let huge = huge.into_bytes();
        assert!(StateReader::new(&huge).count(8).is_err());
        let mut r = StateReader::new(&bytes);
        r.u64().unwrap();
        assert!(r.finish().is_err());
    }

    /// Bytes given in pieces of any size sum as the whole does, to the
    /// value files written by earlier builds hold.
    #[test]
    fn checksum_in_pieces_equals_the_whole() {
        let data: Vec<u8> = (0..1000u32).map(|i| ((i * 7 + 3) % 251) as u8).collect();
        assert_eq!(checksum(&data), 0xf666_d171_32c9_4fb1);
        assert_eq!(checksum(&data[..45]), 0x93d0_a1ce_6d18_13eb);
        for piece in [1, 5, 8, 31, 32, 33, 100, 999] {
            let mut sum = Checksum::default();
            for chunk in data.chunks(piece) {
                sum.update(chunk);
            }
            assert_eq!(sum.finish(), checksum(&data), "pieces of {piece}");
        }
    }

    #[test]
    fn checksum_changes_with_any_flipped_bit_or_length() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        let sum = checksum(&data);
        for i in (0..data.len()).step_by(7) {
            for bit in 0..8 {
                let mut changed = data.clone();
                changed[i] ^= 1 << bit;
                assert_ne!(checksum(&changed), sum, "byte {i} bit {bit}");
            }
        }
        assert_ne!(checksum(&data[..999]), sum);
        let mut longer = data.clone();
        longer.push(0);
        assert_ne!(checksum(&longer), sum);
    }
}
