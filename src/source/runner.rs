//! Running a source: per reader, one thread polls its connector while
//! another commits the previous poll through the engine, as one epoch, in
//! poll order.
//!
//! A reader feeds one target. A materialized view over a stream source
//! has a reader of its own, started at the positions resolved when the view
//! was created (so two views over one source each see the whole stream, as
//! in RisingWave); its rows go through that view's dataflow only
//! ([`Engine::commit_stream`]). A connector-fed table has one reader; its
//! positions are written in the same sled batch as the rows they produced
//! ([`Engine::commit_with_positions`]), so a restart resumes exactly after
//! the last stored row: nothing lost, nothing twice.
//!
//! Per poll the runner also keeps the status relations current: positions,
//! rates and per-partition watermarks ([`ReaderStatus`]) and bad records
//! ([`ErrorLog`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use super::def::{BadRecordAction, SourceDef};
use super::reader::{Offsets, Polled, Reader};
use super::status::{ErrorLog, ErrorRow, ReaderStatus};
use crate::dataflow::expr::timestamp_micros;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::{Change, Table};

/// Messages per poll, at most: one epoch's worth. Large, because a backlog
/// is read in full polls, and the bigger the epoch the more of its changes
/// to a view's groups fold into one (the output applied per event falls).
const POLL_ROWS: usize = 262_144;
/// After a poll that was not full (the reader has caught up), the next one
/// waits until this long after it: a trickle of events is committed in
/// epochs of a few milliseconds' worth instead of one epoch per handful of
/// rows. It bounds the staleness this adds.
const MIN_EPOCH_GAP: Duration = Duration::from_millis(5);
/// How long a poll waits for a first message before the loop looks at its
/// stop flag again.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Where a reader's rows go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A materialized view reading the source (its id).
    View { id: u64 },
    /// A connector-fed table.
    Table(Arc<Table>),
}

/// A running reader; stopping it joins its thread.
#[derive(Debug)]
pub struct RunningReader {
    /// The view or table id: names the reader in the error log.
    pub id: u64,
    pub status: Arc<ReaderStatus>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RunningReader {
    /// Stops the reader and waits for its thread (at most a poll and a commit).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(source = %self.status.source, "source reader thread panicked");
            }
        }
    }
}

/// Everything a reader thread needs.
pub struct ReaderTask {
    pub id: u64,
    pub def: SourceDef,
    pub reader: Box<dyn Reader>,
    pub target: Target,
    pub engine: Arc<Engine>,
    pub errors: ErrorLog,
    /// Where events too late to read are kept (`eddy_catalog.late_events`).
    pub late: ErrorLog,
    pub status: Arc<ReaderStatus>,
    /// Where the reader was opened: the committed positions so far.
    pub start: Offsets,
    /// Each partition's watermark (microseconds) at `start`, as a
    /// checkpoint recorded it: late events are judged against it.
    pub start_watermarks: Offsets,
}

impl ReaderTask {
    /// Starts the reader's thread.
    pub fn spawn(self) -> Result<RunningReader> {
        let stop = Arc::new(AtomicBool::new(false));
        let (id, status) = (self.id, Arc::clone(&self.status));
        let flag = Arc::clone(&stop);
        let watermark = Watermark::of(&self.def)?;
        let thread = std::thread::Builder::new()
            .name(format!("src-{}", self.def.name))
            .spawn(move || self.run(&flag, watermark))
            .map_err(|e| Error::Internal(format!("cannot start a source thread: {e}")))?;
        Ok(RunningReader {
            id,
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// Polls on one thread and commits on this one, so decoding the next
    /// poll overlaps committing the last. Commits happen in poll order.
    fn run(self, stop: &AtomicBool, watermark: Option<Watermark>) {
        let ReaderTask {
            id,
            def,
            mut reader,
            target,
            engine,
            errors,
            late,
            status,
            start,
            start_watermarks,
        } = self;
        tracing::info!(source = %def.name, feeds = %status.feeds, "source reader started");
        // One poll in flight while one commits: memory stays bounded.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<Polled>>(1);
        let poller_status = Arc::clone(&status);
        let poll = move || {
            let mut caught_up_at: Option<Instant> = None;
            while !stop.load(Ordering::Acquire) {
                if let Some(at) = caught_up_at.take() {
                    // Batching, not synchronisation: let a trickle accumulate.
                    std::thread::sleep(MIN_EPOCH_GAP.saturating_sub(at.elapsed()));
                }
                let polled = reader.poll(POLL_ROWS, POLL_TIMEOUT);
                poller_status.observe(reader.partitions(), reader.status());
                if let Ok(p) = &polled {
                    if p.is_empty() {
                        // Partitions go idle as time passes: the watermark moves.
                        poller_status.watermark_us();
                        continue;
                    }
                    if p.rows.num_rows() + p.bad.len() < POLL_ROWS {
                        caught_up_at = Some(Instant::now());
                    }
                }
                let failed = polled.is_err();
                // The committer is gone (it stopped): so is the poller.
                if sender.send(polled).is_err() || failed {
                    return;
                }
            }
        };
        let mut committer = Committer {
            id,
            def,
            target,
            engine,
            errors,
            late,
            status,
            floor: watermark
                .as_ref()
                .and_then(|w| w.frontier_over(start.keys().copied(), &start_watermarks)),
            committed: start,
            watermarks: start_watermarks,
        };
        std::thread::scope(|scope| {
            let poller = std::thread::Builder::new()
                .name(format!("poll-{}", committer.def.name))
                .spawn_scoped(scope, poll);
            if let Err(e) = poller {
                committer
                    .status
                    .stop(format!("cannot start a polling thread: {e}"));
                return;
            }
            for polled in receiver.iter() {
                if let Err(e) = polled.and_then(|p| committer.commit(p, watermark.as_ref())) {
                    // A dropped view ends its reader quietly.
                    if !matches!(e, Error::UndefinedTable(_)) {
                        committer.status.stop(e.to_string());
                    }
                    break;
                }
                if committer.status.state() != super::status::ReaderState::Running {
                    break;
                }
            }
            // Dropping the receiver ends the poller at its next send.
            drop(receiver);
        });
    }
}

/// The committing side of a reader.
struct Committer {
    id: u64,
    def: SourceDef,
    target: Target,
    engine: Arc<Engine>,
    errors: ErrorLog,
    late: ErrorLog,
    status: Arc<ReaderStatus>,
    /// The positions up to which rows are committed (for a table: stored).
    committed: Offsets,
    /// Each partition's watermark after the committed rows, microseconds
    /// since the epoch: the largest value of the WATERMARK expression so far.
    watermarks: Offsets,
    /// The highest frontier handed on so far (at start, the one the
    /// restored marks give): windows before it may be closed, so no event
    /// before it is read, even from a partition that appeared since.
    floor: Option<i64>,
}

impl Committer {
    /// Commits one poll as one epoch.
    fn commit(&mut self, polled: Polled, watermark: Option<&Watermark>) -> Result<()> {
        if !polled.bad.is_empty() {
            self.errors.record(self.id, &self.status, &polled.bad)?;
            if self.def.run.bad_records == BadRecordAction::Stop {
                let first = &polled.bad[0];
                self.status.advance(
                    &Polled {
                        rows: RecordBatch::new_empty(polled.rows.schema()),
                        deletes: None,
                        partitions: Vec::new(),
                        bad: polled.bad.clone(),
                        offsets: None,
                    },
                    &BTreeMap::new(),
                );
                self.status.stop(format!(
                    "bad record at partition {} offset {}: {} (bad.record.action = 'stop')",
                    first.partition, first.offset, first.reason
                ));
                return Ok(());
            }
        }
        let mut watermarks = self.watermarks.clone();
        let (late, lateness_us) = match watermark {
            Some(w) => (
                w.advance(&polled, &mut watermarks, self.floor)?,
                w.lateness_us,
            ),
            None => (Vec::new(), 0),
        };
        let mut positions = self.committed.clone();
        for p in &polled.partitions {
            positions.insert(p.partition, p.next_offset);
        }
        match &self.target {
            Target::View { id } => {
                let rows = if late.is_empty() {
                    polled.rows.clone()
                } else {
                    self.late.keep(
                        self.id,
                        late_rows(&self.status, &polled, &late, lateness_us)?,
                    )?;
                    let mut keep = vec![true; polled.rows.num_rows()];
                    for l in &late {
                        keep[l.row] = false;
                    }
                    filter_record_batch(&polled.rows, &BooleanArray::from(keep))?
                };
                let frontier = watermark.and_then(|w| w.frontier(&self.status, &watermarks));
                self.floor = self.floor.max(frontier);
                self.engine.commit_stream(
                    *id,
                    &self.def.name,
                    rows,
                    &positions,
                    &watermarks,
                    frontier,
                )?;
            }
            Target::Table(table) => {
                let encoded = encode_positions(&positions)?;
                let _writer = table.write_lock_blocking();
                let change = table_change(table, &self.def, &polled)?;
                self.engine
                    .commit_with_positions(table, change, Some(&encoded))?;
            }
        }
        self.committed = positions;
        self.watermarks = watermarks;
        self.status.advance(&polled, &self.watermarks);
        self.status.watermark_us();
        Ok(())
    }
}

/// The table change of one poll: appended rows, or for `FORMAT UPSERT`
/// each key's previous row replaced (or deleted by a tombstone).
fn table_change(table: &Table, def: &SourceDef, polled: &Polled) -> Result<Change> {
    let rows = RecordBatch::try_new(table.schema(), polled.rows.columns().to_vec())?;
    if !def.is_upsert() {
        return Ok(Change {
            deletes: Vec::new(),
            inserts: vec![rows],
        });
    }
    let key_columns = |batch: &RecordBatch, positions: &[usize]| -> Vec<ArrayRef> {
        positions
            .iter()
            .map(|c| Arc::clone(batch.column(*c)))
            .collect()
    };
    let mut deletes: Vec<u64> = table
        .row_ids_by_key(&key_columns(&rows, &def.primary_key))?
        .into_iter()
        .flatten()
        .collect();
    if let Some(gone) = &polled.deletes {
        let all: Vec<usize> = (0..gone.num_columns()).collect();
        deletes.extend(
            table
                .row_ids_by_key(&key_columns(gone, &all))?
                .into_iter()
                .flatten(),
        );
    }
    Ok(Change {
        deletes,
        inserts: vec![rows],
    })
}

/// Positions as stored beside a table's rows.
pub fn encode_positions(positions: &Offsets) -> Result<Vec<u8>> {
    serde_json::to_vec(positions).map_err(|e| Error::Internal(e.to_string()))
}

pub fn decode_positions(bytes: &[u8]) -> Result<Offsets> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Storage(format!("corrupt source positions: {e}")))
}

/// A source's `WATERMARK FOR col AS expr`, evaluated on polled rows, and
/// its allowed lateness.
#[derive(Debug)]
pub struct Watermark {
    expr: Arc<dyn PhysicalExpr>,
    /// The event-time column (`col`).
    column: usize,
    /// When `expr` is `col - INTERVAL` of a fixed length, that length in
    /// microseconds: the watermark is then `col` less it, with no
    /// expression evaluated (see [`fixed_shift`]).
    shift_us: Option<i64>,
    lateness_us: i64,
}

/// A row too late to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    pub row: usize,
    pub event_time_us: i64,
    /// Its partition's watermark just before it.
    pub watermark_us: i64,
}

/// The length of `expr` in microseconds when it is `col - INTERVAL '…'`
/// over the microsecond event-time column `col` (number `column`) and the
/// interval has a fixed length: no months or days (whose length depends
/// on the date and time zone), whole microseconds.
fn fixed_shift(expr: &Arc<dyn PhysicalExpr>, column: usize, data_type: &DataType) -> Option<i64> {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    use datafusion::scalar::ScalarValue;
    if !matches!(data_type, DataType::Timestamp(TimeUnit::Microsecond, _)) {
        return None;
    }
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    let col = binary.left().downcast_ref::<Column>()?;
    let literal = binary.right().downcast_ref::<Literal>()?;
    if *binary.op() != Operator::Minus || col.index() != column {
        return None;
    }
    match literal.value() {
        ScalarValue::IntervalMonthDayNano(Some(v))
            if v.months == 0 && v.days == 0 && v.nanoseconds % 1000 == 0 =>
        {
            Some(v.nanoseconds / 1000)
        }
        _ => None,
    }
}

impl Watermark {
    /// Plans the watermark expression of `def`, if it has one; a bad
    /// expression is refused here (42P16), at CREATE.
    pub fn of(def: &SourceDef) -> Result<Option<Watermark>> {
        let Some(wm) = &def.watermark else {
            return Ok(None);
        };
        let arrow = def.arrow_schema();
        let schema = DFSchema::try_from(arrow.as_ref().clone())?;
        let ctx = SessionContext::new();
        let refuse = |e: String| {
            Error::InvalidDefinition(format!("invalid watermark expression \"{}\": {e}", wm.expr))
        };
        let logical = ctx
            .parse_sql_expr(&wm.expr, &schema)
            .map_err(|e| refuse(e.to_string()))?;
        let expr = ctx
            .create_physical_expr(logical, &schema)
            .map_err(|e| refuse(e.to_string()))?;
        let out = expr
            .data_type(arrow.as_ref())
            .map_err(|e| refuse(e.to_string()))?;
        if !matches!(out, DataType::Timestamp(_, _)) {
            return Err(refuse(format!("it gives {out}, not a timestamp")));
        }
        let column = arrow
            .index_of(&wm.column)
            .map_err(|e| refuse(e.to_string()))?;
        let shift_us = fixed_shift(&expr, column, arrow.field(column).data_type());
        Ok(Some(Watermark {
            expr,
            column,
            shift_us,
            lateness_us: def.run.allowed_lateness_us,
        }))
    }

    /// Moves each partition's watermark (`marks`) over a poll's rows, one
    /// row at a time in offset order, and returns the rows that are too
    /// late: event time behind their partition's watermark, as it stood
    /// just before them, by more than the allowed lateness. Judged per
    /// partition, so the same rows are late however the messages were cut
    /// into polls or the partitions interleaved: a replay agrees. `floor`
    /// (the reader's highest frontier so far) binds too; it only ever
    /// decides for a partition that appeared after the frontier was set,
    /// since every other partition's own bound is at least as high.
    pub fn advance(
        &self,
        polled: &Polled,
        marks: &mut Offsets,
        floor: Option<i64>,
    ) -> Result<Vec<Late>> {
        let n = polled.rows.num_rows();
        let mut late = Vec::new();
        if n == 0 {
            return Ok(late);
        }
        let times = timestamp_micros(polled.rows.column(self.column))?;
        let values = match self.shift_us {
            Some(_) => None,
            None => Some(timestamp_micros(
                &self.expr.evaluate(&polled.rows)?.into_array(n)?,
            )?),
        };
        // As evaluating the expression would, an event time whose
        // watermark is out of range fails the poll.
        let value = |row: usize| match (&values, self.shift_us) {
            (Some(values), _) => Ok((!values.is_null(row)).then(|| values.value(row))),
            (None, _) if times.is_null(row) => Ok(None),
            (None, shift) => {
                let t = times.value(row);
                t.checked_sub(shift.unwrap_or(0)).map(Some).ok_or_else(|| {
                    Error::NumericOutOfRange(format!(
                        "the watermark of event time {t} us is out of range"
                    ))
                })
            }
        };
        for p in &polled.partitions {
            if p.rows.is_empty() || p.rows.end > n {
                continue;
            }
            let mut mark = marks.get(&p.partition).copied();
            for row in p.rows.clone() {
                let own = mark.map(|w| w.saturating_sub(self.lateness_us));
                if let (Some(bound), false) = (own.max(floor), times.is_null(row)) {
                    let t = times.value(row);
                    if t < bound {
                        late.push(Late {
                            row,
                            event_time_us: t,
                            watermark_us: bound.saturating_add(self.lateness_us),
                        });
                    }
                }
                if let Some(v) = value(row)? {
                    mark = Some(mark.map_or(v, |m| m.max(v)));
                }
            }
            if let Some(m) = mark {
                marks.insert(p.partition, m);
            }
        }
        Ok(late)
    }
}

impl Watermark {
    /// The event-time frontier after a poll: no event read from now on is
    /// earlier. Each partition reads only events at most the allowed
    /// lateness behind its own watermark, so the frontier is the least
    /// partition watermark minus that lateness, over every partition the
    /// reader knows (idle ones too: one could still send an old event).
    /// `None` while any partition has no watermark yet.
    pub fn frontier(&self, status: &ReaderStatus, marks: &Offsets) -> Option<i64> {
        let partitions = status.partition_ids().into_iter();
        self.frontier_over(partitions.chain(marks.keys().copied()), marks)
    }

    /// [`Watermark::frontier`] over the given partitions.
    pub fn frontier_over(
        &self,
        partitions: impl Iterator<Item = i32>,
        marks: &Offsets,
    ) -> Option<i64> {
        partitions
            .map(|p| marks.get(&p).copied())
            .collect::<Option<Vec<i64>>>()?
            .into_iter()
            .min()
            .map(|w| w.saturating_sub(self.lateness_us))
    }
}

/// The late rows of a poll as `eddy_catalog.late_events` keeps them, each
/// row written as JSON.
fn late_rows(
    status: &ReaderStatus,
    polled: &Polled,
    late: &[Late],
    lateness_us: i64,
) -> Result<Vec<ErrorRow>> {
    let indices = UInt32Array::from_iter_values(late.iter().map(|l| l.row as u32));
    let taken = take_record_batch(&polled.rows, &indices)?;
    let mut text = Vec::new();
    {
        let mut writer = LineDelimitedWriter::new(&mut text);
        writer.write(&taken)?;
        writer.finish()?;
    }
    let lines = String::from_utf8_lossy(&text);
    let at_us = chrono::Utc::now().timestamp_micros();
    let partition_of = |row: usize| {
        polled
            .partitions
            .iter()
            .find(|p| p.rows.contains(&row))
            .expect("a late row belongs to a partition")
    };
    Ok(late
        .iter()
        .zip(lines.lines())
        .map(|(l, json)| {
            let progress = partition_of(l.row);
            ErrorRow {
                source: status.source.clone(),
                feeds: status.feeds.clone(),
                partition: progress.partition,
                offset: polled.offset_of(progress, l.row),
                reason: format!(
                    "event time is {} behind its partition's watermark; the allowed lateness is {}",
                    crate::sql::windows::human_interval(l.watermark_us - l.event_time_us),
                    crate::sql::windows::human_interval(lateness_us)
                ),
                payload: Some(json.to_string()),
                at_us,
                event_time_us: Some(l.event_time_us),
                watermark_us: Some(l.watermark_us),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::def::{parse_source_statement, SourceStatement};
    use crate::source::reader::PartitionProgress;
    use datafusion::arrow::array::TimestampMicrosecondArray;

    fn watermark(lateness: &str) -> Watermark {
        watermark_as("ts - INTERVAL '1 second'", lateness)
    }

    fn watermark_as(expr: &str, lateness: &str) -> Watermark {
        let sql = format!(
            "CREATE SOURCE s (ts timestamptz, WATERMARK FOR ts AS {expr}) \
             WITH (connector = 'datagen', watermark.allowed.lateness = '{lateness}')"
        );
        let Some(SourceStatement::Create(create)) = parse_source_statement(&sql).unwrap() else {
            panic!("not a CREATE SOURCE");
        };
        Watermark::of(&create.validate().unwrap()).unwrap().unwrap()
    }

    /// A poll of event times in seconds, per partition in turn.
    fn poll(partitions: &[(i32, &[i64])]) -> Polled {
        let mut times = Vec::new();
        let mut progress = Vec::new();
        for (partition, seconds) in partitions {
            let start = times.len();
            times.extend(seconds.iter().map(|s| s * 1_000_000));
            progress.push(PartitionProgress {
                partition: *partition,
                rows: start..times.len(),
                next_offset: times.len() as i64,
            });
        }
        let column = TimestampMicrosecondArray::from(times).with_timezone("UTC");
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("ts", column.data_type().clone(), true),
        ]));
        Polled {
            rows: RecordBatch::try_new(schema, vec![Arc::new(column)]).unwrap(),
            deletes: None,
            partitions: progress,
            bad: Vec::new(),
            offsets: None,
        }
    }

    fn late_rows_of(late: &[Late]) -> Vec<usize> {
        late.iter().map(|l| l.row).collect()
    }

    #[test]
    fn lateness_is_judged_per_partition_however_polls_are_cut() {
        let w = watermark("2 seconds");
        // Partition 0: the watermark reaches 9 s; 7 s is the bound, so 8 is
        // read, 6 and 5 are too late.
        let events: &[i64] = &[10, 9, 8, 6, 5, 11];
        let mut whole = Offsets::new();
        let late = w.advance(&poll(&[(0, events)]), &mut whole, None).unwrap();
        assert_eq!(late_rows_of(&late), vec![3, 4]);
        assert_eq!(late[0].watermark_us, 9_000_000);
        // Cut into two polls, with another partition in between: the same.
        let mut cut = Offsets::new();
        let first = w.advance(&poll(&[(0, &events[..3]), (1, &[0])]), &mut cut, None);
        assert!(first.unwrap().is_empty());
        let second = w
            .advance(&poll(&[(0, &events[3..])]), &mut cut, None)
            .unwrap();
        assert_eq!(late_rows_of(&second), vec![0, 1]);
        assert_eq!(cut[&0], whole[&0]);
        // Partition 1 is far behind, but judged only against itself.
        assert_eq!(cut[&1], -1_000_000);
    }

    #[test]
    fn a_fixed_interval_is_subtracted_without_evaluating_the_expression() {
        let shifts = [
            ("ts - INTERVAL '1 second'", Some(1_000_000)),
            (
                "ts - INTERVAL '90 minutes 0.5 seconds'",
                Some(5_400_500_000),
            ),
            // Days and months have no fixed length; other shapes are
            // evaluated as written.
            ("ts - INTERVAL '1 day'", None),
            ("ts - INTERVAL '1 month'", None),
            ("ts + INTERVAL '1 second'", None),
            ("ts - INTERVAL '1 second' - INTERVAL '2 seconds'", None),
        ];
        let events: &[i64] = &[10, 9, 8, 6, 5, 11];
        for (expr, shift) in shifts {
            let w = watermark_as(expr, "2 seconds");
            assert_eq!(w.shift_us, shift, "{expr}");
            // Either way the marks are the expression's.
            let evaluated = Watermark {
                shift_us: None,
                ..watermark_as(expr, "2 seconds")
            };
            let (mut fast, mut slow) = (Offsets::new(), Offsets::new());
            let late = w.advance(&poll(&[(0, events)]), &mut fast, None).unwrap();
            let expected = evaluated
                .advance(&poll(&[(0, events)]), &mut slow, None)
                .unwrap();
            assert_eq!((late, fast), (expected, slow), "{expr}");
        }
        // A watermark out of range is an error, not a clamped value.
        let w = watermark("2 seconds");
        let earliest = poll(&[(0, &[i64::MIN / 1_000_000])]);
        assert!(w.advance(&earliest, &mut Offsets::new(), None).is_err());
    }

    #[test]
    fn the_frontier_counts_every_partition_and_binds_new_ones() {
        let w = watermark("2 seconds");
        let marks = Offsets::from([(0, 9_000_000), (1, 4_000_000)]);
        assert_eq!(w.frontier_over([0, 1].into_iter(), &marks), Some(2_000_000));
        // A partition without a watermark yet holds the frontier back.
        assert_eq!(w.frontier_over([0, 1, 2].into_iter(), &marks), None);
        // A partition that appears after the frontier reached 2 s cannot
        // bring an event from before it.
        let mut marks = marks;
        let late = w
            .advance(&poll(&[(2, &[1, 3])]), &mut marks, Some(2_000_000))
            .unwrap();
        assert_eq!(late_rows_of(&late), vec![0]);
    }
}
