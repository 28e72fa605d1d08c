//! What a running source reader shows of itself: per-partition progress
//! (`eddy_catalog.source_partitions`) and the bad records it set apart
//! (`eddy_catalog.source_errors`, durable in sled).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::reader::{BadMessage, Offsets, PartitionInfo, Polled};
use crate::error::{Error, Result};

/// The rate of a partition is measured over windows of this length.
const RATE_WINDOW_SECS: f64 = 1.0;

/// How a reader stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderState {
    Running,
    /// Stopped for good: the reason (a bad record with `bad.record.action =
    /// 'stop'`, an unrecoverable connector error, a failed view).
    Stopped(String),
}

/// One reader's live status: one reader feeds one view or one table.
#[derive(Debug)]
pub struct ReaderStatus {
    pub source: String,
    /// The view or table the reader feeds.
    pub feeds: String,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: ReaderState,
    /// The connector's own complaint (e.g. a broker unreachable, retrying).
    connection: Option<String>,
    partitions: BTreeMap<i32, PartitionStats>,
    idle_timeout_ms: u64,
    /// The source's watermark as last computed (see `watermark_us`).
    source_watermark_us: Option<i64>,
}

#[derive(Debug, Default)]
struct PartitionStats {
    next_offset: i64,
    high_watermark: Option<i64>,
    rows: u64,
    bad: u64,
    /// The connector's last error reading the partition, until it recovers.
    last_error: Option<String>,
    /// The latest bad record (`bad record at offset N: reason`), shown as
    /// the last error until connection trouble overrides it.
    bad_error: Option<String>,
    /// Microseconds since the epoch; never goes back.
    watermark_us: Option<i64>,
    last_message: Option<Instant>,
    /// When the reader learnt of the partition: until a message comes, the
    /// idle timeout runs from here.
    known_since: Option<Instant>,
    window_start: Option<Instant>,
    window_rows: u64,
    rate: f64,
}

/// One row of `eddy_catalog.source_partitions`.
#[derive(Debug, Clone)]
pub struct PartitionRow {
    pub source: String,
    pub feeds: String,
    pub partition: i32,
    pub offset: i64,
    pub high_watermark: Option<i64>,
    pub lag: Option<i64>,
    pub rows: u64,
    pub events_per_second: f64,
    pub bad_records: u64,
    pub watermark_us: Option<i64>,
    pub idle: bool,
    pub last_error: Option<String>,
    /// `running`, or `stopped: <reason>`.
    pub status: String,
}

impl ReaderStatus {
    pub fn new(source: &str, feeds: &str, start: &Offsets, idle_timeout_ms: u64) -> ReaderStatus {
        let now = Instant::now();
        let partitions = start
            .iter()
            .map(|(p, o)| (*p, PartitionStats::known(*o, now)))
            .collect();
        ReaderStatus {
            source: source.to_string(),
            feeds: feeds.to_string(),
            inner: Mutex::new(Inner {
                state: ReaderState::Running,
                connection: None,
                partitions,
                idle_timeout_ms,
                source_watermark_us: None,
            }),
        }
    }

    pub fn state(&self) -> ReaderState {
        self.inner.lock().expect("status lock").state.clone()
    }

    pub fn stop(&self, reason: String) {
        tracing::error!(source = %self.source, feeds = %self.feeds, %reason, "source reader stopped");
        self.inner.lock().expect("status lock").state = ReaderState::Stopped(reason);
    }

    /// Takes in what the connector says of its partitions and connection.
    pub fn observe(&self, partitions: Vec<PartitionInfo>, connection: Option<String>) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("status lock");
        inner.connection = connection;
        for info in partitions {
            // A partition found later shows from where it will be read;
            // otherwise `next_offset` is what is committed (see `advance`).
            let stats = inner
                .partitions
                .entry(info.partition)
                .or_insert_with(|| PartitionStats::known(info.next_offset, now));
            stats.high_watermark = info.high_watermark;
            if info.last_error.is_some() {
                stats.bad_error = None;
            }
            stats.last_error = info.last_error;
        }
    }

    /// Records a committed poll: positions, counts, rates and per-partition
    /// watermarks (`watermarks`: the poll's largest watermark value per
    /// partition).
    pub fn advance(&self, polled: &Polled, watermarks: &BTreeMap<i32, i64>) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("status lock");
        for progress in &polled.partitions {
            let stats = inner
                .partitions
                .entry(progress.partition)
                .or_insert_with(|| PartitionStats::known(progress.next_offset, now));
            stats.next_offset = progress.next_offset;
            let rows = progress.rows.len() as u64;
            stats.rows += rows;
            stats.last_message = Some(now);
            stats.window_rows += rows;
            let start = *stats.window_start.get_or_insert(now);
            let secs = now.duration_since(start).as_secs_f64();
            if secs >= RATE_WINDOW_SECS {
                stats.rate = stats.window_rows as f64 / secs;
                stats.window_rows = 0;
                stats.window_start = Some(now);
            }
            if let Some(w) = watermarks.get(&progress.partition) {
                stats.watermark_us = Some(stats.watermark_us.map_or(*w, |old| old.max(*w)));
            }
        }
        for bad in &polled.bad {
            let stats = inner
                .partitions
                .entry(bad.partition)
                .or_insert_with(|| PartitionStats::known(bad.offset + 1, now));
            stats.bad += 1;
            stats.bad_error = Some(format!(
                "bad record at offset {}: {}",
                bad.offset, bad.reason
            ));
        }
    }

    /// Every partition the reader knows of.
    pub fn partition_ids(&self) -> Vec<i32> {
        let inner = self.inner.lock().expect("status lock");
        inner.partitions.keys().copied().collect()
    }

    /// The source's watermark: the least partition watermark among the
    /// partitions that are not idle. A partition not idle yet that nothing
    /// was read from since the reader learnt of it holds the source's
    /// watermark where it is. It never goes back: while every
    /// partition is idle it stays where it was. `None` before any watermark.
    pub fn watermark_us(&self) -> Option<i64> {
        let mut inner = self.inner.lock().expect("status lock");
        let now = Instant::now();
        let active: Vec<&PartitionStats> = inner
            .partitions
            .values()
            .filter(|s| !is_idle(s, now, inner.idle_timeout_ms))
            .collect();
        // One not heard from yet holds it; one whose messages carry no
        // event time (NULLs) does not.
        let active = match active.iter().any(|s| s.last_message.is_none()) {
            true => None,
            false => active.iter().filter_map(|s| s.watermark_us).min(),
        };
        inner.source_watermark_us = match (inner.source_watermark_us, active) {
            (Some(old), Some(new)) => Some(old.max(new)),
            (old, new) => old.or(new),
        };
        inner.source_watermark_us
    }

    pub fn rows(&self) -> Vec<PartitionRow> {
        let inner = self.inner.lock().expect("status lock");
        let now = Instant::now();
        let status = match (&inner.state, &inner.connection) {
            (ReaderState::Stopped(reason), _) => format!("stopped: {reason}"),
            (ReaderState::Running, Some(problem)) => format!("retrying: {problem}"),
            (ReaderState::Running, None) => "running".to_string(),
        };
        inner
            .partitions
            .iter()
            .map(|(p, s)| {
                // The rate decays to zero once messages stop.
                let quiet = s
                    .last_message
                    .is_none_or(|t| now.duration_since(t).as_secs_f64() > 2.0 * RATE_WINDOW_SECS);
                PartitionRow {
                    source: self.source.clone(),
                    feeds: self.feeds.clone(),
                    partition: *p,
                    offset: s.next_offset,
                    high_watermark: s.high_watermark,
                    lag: s.high_watermark.map(|h| (h - s.next_offset).max(0)),
                    rows: s.rows,
                    events_per_second: if quiet { 0.0 } else { s.rate },
                    bad_records: s.bad,
                    watermark_us: s.watermark_us,
                    idle: is_idle(s, now, inner.idle_timeout_ms),
                    last_error: s.last_error.clone().or_else(|| s.bad_error.clone()),
                    status: status.clone(),
                }
            })
            .collect()
    }
}

impl PartitionStats {
    fn known(next_offset: i64, now: Instant) -> PartitionStats {
        PartitionStats {
            next_offset,
            known_since: Some(now),
            ..PartitionStats::default()
        }
    }
}

/// No message for longer than the idle timeout, counted from when the
/// reader learnt of the partition until the first one.
fn is_idle(stats: &PartitionStats, now: Instant, idle_timeout_ms: u64) -> bool {
    stats
        .last_message
        .or(stats.known_since)
        .is_none_or(|t| now.duration_since(t).as_millis() > u128::from(idle_timeout_ms))
}

/// One bad record, as `eddy_catalog.source_errors` shows it, or one late
/// event, as `eddy_catalog.late_events` does (its payload is the row as
/// JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRow {
    pub source: String,
    pub feeds: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    /// The payload as text (invalid UTF-8 replaced); `None` for a tombstone.
    pub payload: Option<String>,
    /// When it was set apart, microseconds since the epoch.
    pub at_us: i64,
    /// A late event: its event time and its partition's watermark then.
    #[serde(default)]
    pub event_time_us: Option<i64>,
    #[serde(default)]
    pub watermark_us: Option<i64>,
}

/// The bad records of every reader, in sled: key = reader id, a hash of
/// the source name, the partition and the offset (big-endian, sign bits
/// flipped so they sort). A record read again after a restart (a view
/// resuming from its checkpoint) lands on its own key: kept once.
#[derive(Debug, Clone)]
pub struct ErrorLog {
    tree: sled::Tree,
}

impl ErrorLog {
    pub fn new(tree: sled::Tree) -> ErrorLog {
        ErrorLog { tree }
    }

    /// Keeps `bad`, set apart by reader `reader` of `status`.
    pub fn record(&self, reader: u64, status: &ReaderStatus, bad: &[BadMessage]) -> Result<()> {
        let at_us = chrono::Utc::now().timestamp_micros();
        let rows = bad.iter().map(|message| ErrorRow {
            source: status.source.clone(),
            feeds: status.feeds.clone(),
            partition: message.partition,
            offset: message.offset,
            reason: message.reason.clone(),
            payload: message
                .payload
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            at_us,
            event_time_us: None,
            watermark_us: None,
        });
        self.keep(reader, rows)
    }

    /// Keeps `rows`, set apart by reader `reader`, each under its source,
    /// partition and offset.
    pub fn keep(&self, reader: u64, rows: impl IntoIterator<Item = ErrorRow>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for row in rows {
            let source = crate::dataflow::state::checksum(row.source.as_bytes());
            let mut key = reader.to_be_bytes().to_vec();
            key.extend_from_slice(&source.to_be_bytes());
            key.extend_from_slice(&((row.partition as u32) ^ (1 << 31)).to_be_bytes());
            key.extend_from_slice(&((row.offset as u64) ^ (1 << 63)).to_be_bytes());
            let value = serde_json::to_vec(&row).map_err(|e| Error::Internal(e.to_string()))?;
            batch.insert(key, value);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Every bad record kept, by reader, source, partition and offset.
    pub fn rows(&self) -> Result<Vec<ErrorRow>> {
        self.tree
            .iter()
            .values()
            .map(|v| {
                serde_json::from_slice(&v?)
                    .map_err(|e| Error::Storage(format!("corrupt source error record: {e}")))
            })
            .collect()
    }

    /// Forgets the bad records of a reader that is gone.
    pub fn forget(&self, reader: u64) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.tree.scan_prefix(reader.to_be_bytes()).keys() {
            batch.remove(key?);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::record_batch::RecordBatch;

    use super::*;
    use crate::source::reader::PartitionProgress;

    /// A poll that read one message from each partition given.
    fn poll(partitions: impl IntoIterator<Item = i32>) -> Polled {
        Polled {
            rows: RecordBatch::new_empty(Arc::new(Schema::empty())),
            deletes: None,
            partitions: partitions
                .into_iter()
                .map(|partition| PartitionProgress {
                    partition,
                    rows: 0..0,
                    next_offset: 1,
                })
                .collect(),
            bad: Vec::new(),
            offsets: None,
        }
    }

    /// [`poll`] of the partitions given, each with its largest watermark
    /// value.
    fn advance(status: &ReaderStatus, marks: &[(i32, i64)]) {
        let polled = poll(marks.iter().map(|(p, _)| *p));
        status.advance(&polled, &marks.iter().copied().collect());
    }

    /// Makes a partition silent for a minute: no message, and known for
    /// that long.
    fn silence(status: &ReaderStatus, partition: i32) {
        let mut inner = status.inner.lock().unwrap();
        let stats = inner.partitions.get_mut(&partition).unwrap();
        let then = Instant::now() - Duration::from_secs(60);
        stats.last_message = stats.last_message.map(|_| then);
        stats.known_since = Some(then);
    }

    #[test]
    fn a_partition_not_heard_from_yet_holds_the_watermark_until_idle() {
        let start: Offsets = [(0, 0), (1, 0)].into_iter().collect();
        let status = ReaderStatus::new("s", "v", &start, 5_000);
        // Partition 0 is read first: partition 1, known and not idle yet,
        // has no watermark, so the source has none either.
        advance(&status, &[(0, 100)]);
        assert_eq!(status.watermark_us(), None);
        advance(&status, &[(1, 40)]);
        assert_eq!(status.watermark_us(), Some(40));
        advance(&status, &[(0, 150)]);
        assert_eq!(status.watermark_us(), Some(40));
        // Partition 1 falls silent: it no longer holds the watermark back.
        silence(&status, 1);
        assert_eq!(status.watermark_us(), Some(150));
        let rows = status.rows();
        assert_eq!(
            rows.iter().map(|r| r.idle).collect::<Vec<_>>(),
            vec![false, true]
        );
        // Every partition idle: the watermark stays where it was.
        silence(&status, 0);
        assert_eq!(status.watermark_us(), Some(150));
    }

    /// Messages whose event time is NULL give no watermark: their
    /// partition does not hold the source's back.
    #[test]
    fn a_partition_without_event_times_does_not_hold_the_watermark() {
        let start: Offsets = [(0, 0), (1, 0)].into_iter().collect();
        let status = ReaderStatus::new("s", "v", &start, 5_000);
        let polled = poll([0, 1]);
        status.advance(&polled, &[(0, 100)].into_iter().collect());
        assert_eq!(status.watermark_us(), Some(100));
    }

    #[test]
    fn a_partition_never_heard_from_stops_holding_back_once_idle() {
        let start: Offsets = [(0, 0), (1, 0)].into_iter().collect();
        let status = ReaderStatus::new("s", "v", &start, 5_000);
        advance(&status, &[(0, 100)]);
        assert_eq!(status.watermark_us(), None);
        silence(&status, 1);
        assert_eq!(status.watermark_us(), Some(100));
        assert!(status.rows()[1].idle);
    }
}
