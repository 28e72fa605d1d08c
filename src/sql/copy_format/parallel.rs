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

use super::{find_record_end, internal, CopyDecoder, CopyError, CopyOptions, RecordScan};

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
    /// Stream bytes not yet handed out: from `chunk_start`, whole records
    /// and then the start of the next one. Each chunk's bytes are copied
    /// out once, and the buffer is compacted once per `push`, so a message
    /// of any size costs time in proportion to its length.
    buffer: Vec<u8>,
    /// Where the records not cut yet start in `buffer`.
    chunk_start: usize,
    /// Where the record being framed starts in `buffer`.
    record_start: usize,
    scan: RecordScan,
    /// Ends in `buffer` of the records since the last cut.
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
    /// Saw the `\.` end marker: the rest is ignored.
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
            chunk_start: 0,
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
                self.cut(false);
                self.buffer = Vec::new();
                self.chunk_start = 0;
                self.record_start = 0;
                return self.ready(false);
            }
            self.ends.push(end);
            self.record_start = end + 1;
            if self.ends.len() == self.batch_rows {
                self.cut(true);
            }
        }
        self.compact();
        if self.buffer.len() - self.record_start > super::MAX_RECORD_BYTES {
            // Records before the long one are decoded first: an error in
            // them comes first, as on one thread.
            self.cut(false);
            self.ready(true)?;
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

    /// Drops the bytes already handed out from the front of the buffer.
    fn compact(&mut self) {
        if self.chunk_start == 0 {
            return;
        }
        self.buffer.drain(..self.chunk_start);
        self.record_start -= self.chunk_start;
        for end in &mut self.ends {
            *end -= self.chunk_start;
        }
        self.chunk_start = 0;
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
        self.cut(false);
        self.ended = true;
        self.ready(true)
    }

    /// The record is the `\.` end marker (in both formats, as on one
    /// thread).
    fn is_end_marker(&self, start: usize, end: usize) -> bool {
        super::strip_record_cr(&self.buffer[start..end], self.options.format) == b"\\."
    }

    /// Makes the records framed since the last cut a chunk, and has it
    /// decoded; `full` (a chunk of `batch_rows` records) may start a
    /// helper, so that a COPY of fewer rows stays on this thread.
    fn cut(&mut self, full: bool) {
        if self.ends.is_empty() {
            return;
        }
        let upto = self.record_start;
        // A spare buffer already has about a chunk's capacity.
        let mut bytes = self.shared.lock().spare.pop().unwrap_or_default();
        bytes.extend_from_slice(&self.buffer[self.chunk_start..upto]);
        let start = self.chunk_start;
        let mut ends = std::mem::replace(&mut self.ends, Vec::with_capacity(self.batch_rows));
        for end in &mut ends {
            *end -= start;
        }
        self.chunk_start = upto;
        let chunk = Chunk {
            seq: self.next_seq,
            first_line: self.first_line,
            bytes,
            ends,
        };
        self.next_seq += 1;
        self.first_line = self.line + 1;
        if full && self.helpers.len() + 1 < self.threads {
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
        // A panic must still answer for its chunk, or the connection would
        // wait for it forever.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decode_chunk(&mut decoder, chunk)
        }));
        let mut queue = shared.lock();
        match caught {
            Ok((decoded, bytes)) => {
                queue.done.insert(seq, decoded);
                queue.give_back(bytes);
            }
            Err(_) => {
                let message = format!("decoding COPY data panicked (chunk {seq}; a bug)");
                queue.done.insert(seq, Err(internal(message)));
                decoder = CopyDecoder::new(
                    Arc::clone(&decoder.schema),
                    decoder.options.clone(),
                    decoder.batch_rows,
                );
            }
        }
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
