//! A large COPY decoded on several threads.
//!
//! The connection's thread only frames records (finds where each ends,
//! which for CSV means following quotes) and cuts the stream into chunks
//! of `batch_rows` records. Helper threads decode chunks into Arrow
//! batches, each with a [`CopyDecoder`] of its own; when they are all
//! busy the connection's thread decodes the chunk itself rather than
//! queue more. Batches are handed back in input order, and the first
//! error in input order is the one reported, with its line, as one thread
//! would have.
//!
//! Helpers start with the first full chunk: a COPY of fewer rows is
//! decoded on the connection's thread alone.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::{find_record_end, CopyDecoder, CopyError, CopyFormat, CopyOptions, RecordScan};

/// A run of whole records, cut from the stream.
struct Chunk {
    seq: u64,
    /// Line number of its first record.
    first_line: u64,
    bytes: Vec<u8>,
    /// End offset (exclusive, newline not included) of each record.
    ends: Vec<usize>,
}

/// What the threads share.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// Decoded chunks by sequence number.
    done: BTreeMap<u64, Result<RecordBatch, CopyError>>,
    /// Chunk buffers decoded, for the next chunks: a buffer grown anew
    /// for each chunk was most of the connection thread's time, in
    /// reallocations and frees.
    spare: Vec<Vec<u8>>,
    closing: bool,
}

/// Spare chunk buffers kept, at most.
const SPARE_BUFFERS: usize = 4;

impl Queue {
    /// Keeps a decoded chunk's buffer for another chunk.
    fn give_back(&mut self, mut bytes: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            bytes.clear();
            self.spare.push(bytes);
        }
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// A chunk was queued, or the decoder is closing.
    queued: Condvar,
    /// A chunk was decoded.
    decoded: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A helper that panicked holding the lock left the queue as it
        // was between two steps: still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The framing side of a parallel decode, owned by the [`CopyDecoder`] of
/// the connection.
pub(super) struct Parallel {
    schema: SchemaRef,
    options: CopyOptions,
    batch_rows: usize,
    threads: usize,
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    /// Stream bytes not yet cut into a chunk: whole records, then the
    /// start of the next one.
    buffer: Vec<u8>,
    /// Where the record being framed starts in `buffer`.
    record_start: usize,
    scan: RecordScan,
    /// Record ends in `buffer` since the last cut.
    ends: Vec<usize>,
    /// Records framed so far (header and end marker included): the line
    /// of the last one.
    line: u64,
    first_line: u64,
    next_seq: u64,
    /// The next chunk to hand back.
    next_out: u64,
    /// Chunks decoded on this thread.
    own: Box<CopyDecoder>,
    /// Saw the text format's `\.` end marker: the rest is ignored.
    ended: bool,
}

impl Parallel {
    pub(super) fn new(
        schema: SchemaRef,
        options: CopyOptions,
        batch_rows: usize,
        threads: usize,
    ) -> Parallel {
        Parallel {
            own: Box::new(CopyDecoder::new(
                Arc::clone(&schema),
                options.clone(),
                batch_rows,
            )),
            schema,
            options,
            batch_rows,
            threads,
            shared: Arc::default(),
            helpers: Vec::new(),
            buffer: Vec::new(),
            record_start: 0,
            scan: RecordScan::default(),
            ends: Vec::with_capacity(batch_rows),
            line: 0,
            first_line: 1,
            next_seq: 0,
            next_out: 0,
            ended: false,
        }
    }

    /// Frames `data`, hands out every full chunk, and returns the batches
    /// decoded so far, in order.
    pub(super) fn push(&mut self, data: &[u8]) -> Result<Vec<RecordBatch>, CopyError> {
        if self.ended {
            return self.ready(false);
        }
        self.buffer.extend_from_slice(data);
        while let Some(end) = find_record_end(
            &self.options,
            &self.buffer[self.record_start..],
            &mut self.scan,
        ) {
            let end = self.record_start + end;
            self.scan = RecordScan::default();
            self.line += 1;
            if self.is_end_marker(self.record_start, end) {
                self.ended = true;
                self.cut(self.record_start);
                self.buffer.clear();
                self.record_start = 0;
                return self.ready(false);
            }
            self.ends.push(end);
            self.record_start = end + 1;
            if self.ends.len() == self.batch_rows {
                self.cut(self.record_start);
            }
        }
        if self.buffer.len() - self.record_start > super::MAX_RECORD_BYTES {
            return Err(CopyError::new(
                super::sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "COPY record exceeds the {} byte limit",
                    super::MAX_RECORD_BYTES
                ),
            )
            .at_line(self.line + 1));
        }
        self.ready(false)
    }

    /// End of data: the last record may lack its newline. Waits for every
    /// chunk and returns the batches not handed back yet.
    pub(super) fn finish(&mut self) -> Result<Vec<RecordBatch>, CopyError> {
        if !self.ended && self.record_start < self.buffer.len() {
            self.line += 1;
            let end = self.buffer.len();
            if self.is_end_marker(self.record_start, end) {
                self.ended = true;
            } else {
                self.ends.push(end);
                self.record_start = end;
            }
        }
        self.cut(self.record_start);
        self.ended = true;
        self.ready(true)
    }

    fn is_end_marker(&self, start: usize, end: usize) -> bool {
        self.options.format == CopyFormat::Text
            && super::strip_record_cr(&self.buffer[start..end], CopyFormat::Text) == b"\\."
    }

    /// Makes the records framed since the last cut a chunk (the bytes
    /// before `upto`), and has it decoded.
    fn cut(&mut self, upto: usize) {
        if self.ends.is_empty() {
            return;
        }
        // The start of the next record moves to a spare buffer, which the
        // stream then fills without growing.
        let mut rest = self.shared.lock().spare.pop().unwrap_or_default();
        rest.extend_from_slice(&self.buffer[upto..]);
        let bytes = std::mem::replace(&mut self.buffer, rest);
        self.record_start -= upto;
        let chunk = Chunk {
            seq: self.next_seq,
            first_line: self.first_line,
            bytes,
            ends: std::mem::replace(&mut self.ends, Vec::with_capacity(self.batch_rows)),
        };
        self.next_seq += 1;
        self.first_line = self.line + 1;
        if self.helpers.len() + 1 < self.threads {
            self.start_helper();
        }
        let mut queue = self.shared.lock();
        // Helpers busy with a chunk each: decode this one here, which also
        // keeps the stream from running far ahead of them.
        if self.helpers.is_empty() || queue.chunks.len() >= self.helpers.len() {
            drop(queue);
            let seq = chunk.seq;
            let (decoded, bytes) = decode_chunk(&mut self.own, chunk);
            let mut queue = self.shared.lock();
            queue.done.insert(seq, decoded);
            queue.give_back(bytes);
            return;
        }
        queue.chunks.push_back(chunk);
        drop(queue);
        self.shared.queued.notify_one();
    }

    fn start_helper(&mut self) {
        let shared = Arc::clone(&self.shared);
        let decoder = CopyDecoder::new(
            Arc::clone(&self.schema),
            self.options.clone(),
            self.batch_rows,
        );
        let started = std::thread::Builder::new()
            .name("eddydb-copy".into())
            .spawn(move || helper(&shared, decoder));
        // Without a helper the connection's thread decodes everything.
        if let Ok(handle) = started {
            self.helpers.push(handle);
        }
    }

    /// The decoded batches that follow the last one handed back, stopping
    /// at the first chunk not decoded yet (with `wait`, waiting for every
    /// chunk). An error is returned once every chunk before it decoded.
    fn ready(&mut self, wait: bool) -> Result<Vec<RecordBatch>, CopyError> {
        let mut batches = Vec::new();
        let mut queue = self.shared.lock();
        while self.next_out < self.next_seq {
            match queue.done.remove(&self.next_out) {
                Some(Ok(batch)) => {
                    self.next_out += 1;
                    if batch.num_rows() > 0 {
                        batches.push(batch);
                    }
                }
                Some(Err(e)) => {
                    self.next_out = self.next_seq;
                    return Err(e);
                }
                None if wait => {
                    queue = self
                        .shared
                        .decoded
                        .wait(queue)
                        .unwrap_or_else(|e| e.into_inner());
                }
                None => break,
            }
        }
        Ok(batches)
    }
}

impl Drop for Parallel {
    fn drop(&mut self) {
        {
            let mut queue = self.shared.lock();
            queue.closing = true;
            // A COPY that failed or ended: what is queued is not needed.
            queue.chunks.clear();
        }
        self.shared.queued.notify_all();
        for helper in self.helpers.drain(..) {
            let _ = helper.join();
        }
    }
}

/// A helper thread: decodes queued chunks until the decoder closes.
fn helper(shared: &Shared, mut decoder: CopyDecoder) {
    loop {
        let chunk = {
            let mut queue = shared.lock();
            loop {
                if let Some(chunk) = queue.chunks.pop_front() {
                    break chunk;
                }
                if queue.closing {
                    return;
                }
                queue = shared.queued.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        let seq = chunk.seq;
        let (decoded, bytes) = decode_chunk(&mut decoder, chunk);
        let mut queue = shared.lock();
        queue.done.insert(seq, decoded);
        queue.give_back(bytes);
        drop(queue);
        shared.decoded.notify_all();
    }
}

/// One chunk's records as one batch, and the chunk's buffer back. After an
/// error the decoder starts afresh: its builders may hold half a row.
fn decode_chunk(
    decoder: &mut CopyDecoder,
    chunk: Chunk,
) -> (Result<RecordBatch, CopyError>, Vec<u8>) {
    let result = decoder.decode_chunk(&chunk.bytes, &chunk.ends, chunk.first_line);
    if result.is_err() {
        *decoder = CopyDecoder::new(
            Arc::clone(&decoder.schema),
            decoder.options.clone(),
            decoder.batch_rows,
        );
    }
    (result, chunk.bytes)
}
