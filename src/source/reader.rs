//! What a running source reads from: the [`Reader`] trait every connector
//! implements (Kafka, datagen), and the records it hands to the runner.
//!
//! A reader owns the outside world (a consumer, a generator) and its read
//! positions; the runner ([`super::runner`]) owns pacing, watermarks, the
//! status relations and committing rows through the engine. Positions are
//! "the next offset to read" per partition, so a reader opened again at the
//! positions stored with the rows they produced resumes without a gap or a
//! duplicate.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;

/// The next offset to read, per partition.
pub type Offsets = BTreeMap<i32, i64>;

/// Where a restored view's readers go on from, per stream source: the next
/// offsets, and each partition's watermark then (microseconds since the
/// epoch), as of one checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    pub positions: BTreeMap<String, Offsets>,
    pub watermarks: BTreeMap<String, Offsets>,
}

/// What one [`Reader::poll`] returned.
#[derive(Debug)]
pub struct Polled {
    /// Decoded rows in the source's full schema (declared columns, then the
    /// `INCLUDE` columns), in partition order: the rows of each partition are
    /// contiguous (see [`PartitionProgress::rows`]).
    pub rows: RecordBatch,
    /// `FORMAT UPSERT` only: the keys (primary-key columns, in key order)
    /// whose last message in this poll was a tombstone. The poll is collapsed
    /// per key, last message wins: a key is in `rows` at most once, and never
    /// in both `rows` and `deletes`.
    pub deletes: Option<RecordBatch>,
    /// Every partition this poll read from (good or bad records).
    pub partitions: Vec<PartitionProgress>,
    /// Messages that did not decode.
    pub bad: Vec<BadMessage>,
    /// The offset of each row, when the rows of a partition are not simply
    /// the messages just before its `next_offset` (bad records, a skipped
    /// header, or collapsed upserts in between).
    pub offsets: Option<Vec<i64>>,
}

impl Polled {
    /// The offset of row `row`, which partition `progress` produced.
    pub fn offset_of(&self, progress: &PartitionProgress, row: usize) -> i64 {
        match &self.offsets {
            Some(offsets) => offsets[row],
            None => progress.next_offset - (progress.rows.end - row) as i64,
        }
    }

    /// Whether the poll read nothing at all.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty() && self.bad.is_empty()
    }
}

/// How far one partition got in one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: i32,
    /// The rows of [`Polled::rows`] this partition produced (empty for an
    /// upsert poll, whose rows are collapsed across partitions).
    pub rows: Range<usize>,
    /// The next offset to read: one past the last message polled.
    pub next_offset: i64,
}

/// A message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMessage {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    /// The raw payload (`None` for a tombstone).
    pub payload: Option<Vec<u8>>,
}

/// A partition as `eddy_catalog.source_partitions` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// The next offset to read.
    pub next_offset: i64,
    /// The broker's high watermark (next offset to be written), when known.
    pub high_watermark: Option<i64>,
    /// The last error reading this partition, if it has not recovered since.
    pub last_error: Option<String>,
}

/// A connector's reading side. Called from one thread; `poll` may block up
/// to `timeout`.
pub trait Reader: Send {
    /// Reads up to `max_rows` messages, waiting at most `timeout` for the
    /// first. An error means the source cannot go on (e.g. its topic was
    /// deleted); transient trouble (a lost broker) is retried inside and
    /// shows in [`Reader::status`] and [`Reader::partitions`].
    fn poll(&mut self, max_rows: usize, timeout: Duration) -> Result<Polled>;

    /// Every assigned partition.
    fn partitions(&self) -> Vec<PartitionInfo>;

    /// What is wrong with the connection as a whole, if anything
    /// (`None` when it is healthy).
    fn status(&self) -> Option<String>;
}
