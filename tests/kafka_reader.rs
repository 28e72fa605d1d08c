//! The Kafka reader (`eddydb::source::kafka`) against a real Kafka-protocol
//! broker: tansu started by tests/support/kafka.rs, records produced by
//! Python confluent-kafka. Covers plain JSON polls over several partitions
//! (every record once, partitions contiguous and in offset order, INCLUDE
//! columns, bad records beside good ones), resuming at returned offsets,
//! `scan.startup.*` resolution, `FORMAT UPSERT` keys and tombstones, an
//! unreachable broker, a missing topic, and a broker stopped and restarted
//! under a running reader.
//!
//! Nothing sleeps to synchronise: every wait is a poll loop with a deadline.

#[path = "support/kafka.rs"]
mod kafka;
#[path = "support/server.rs"]
mod server;

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use datafusion::arrow::array::{
    Array, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{ArrowPrimitiveType, DataType, Int32Type, Int64Type, TimeUnit};
use eddydb::error::Error;
use eddydb::source::def::{parse_source_statement, SourceDef, SourceStatement};
use eddydb::source::kafka::{KafkaOptions, KafkaReader};
use eddydb::source::reader::{BadMessage, Offsets, Polled, Reader};
use eddydb::types::UTC;
use kafka::{Broker, Record};

/// How long reading what was produced may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_TIMEOUT: Duration = Duration::from_millis(200);

fn source_def(sql: &str) -> anyhow::Result<SourceDef> {
    match parse_source_statement(sql)? {
        Some(SourceStatement::Create(create)) => Ok(create.validate()?),
        other => bail!("not a CREATE SOURCE: {other:?}"),
    }
}

fn kafka_with(broker: &str, topic: &str, extra: &str) -> String {
    format!(
        "connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{broker}'{extra}"
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Everything read by polls, checked poll by poll.
#[derive(Default)]
struct Reads {
    polls: Vec<Polled>,
    /// (partition, offset) of every message seen (rows and bad).
    seen: BTreeSet<(i32, i64)>,
    /// Next offsets as the polls reported them.
    next: Offsets,
}

impl Reads {
    fn messages(&self) -> usize {
        self.seen.len()
    }

    /// Adds one poll after checking its shape: each partition's rows are
    /// contiguous, in offset order, and start after what was read before;
    /// no message is seen twice.
    fn add(&mut self, polled: Polled, has_offsets: bool) -> anyhow::Result<()> {
        let mut covered = 0;
        for progress in &polled.partitions {
            let before = self.next.get(&progress.partition).copied();
            ensure!(
                before.is_none_or(|b| progress.next_offset > b),
                "partition {} went from {before:?} to {}",
                progress.partition,
                progress.next_offset
            );
            if has_offsets && polled.deletes.is_none() {
                let offsets = column_i64(&polled.rows, "_offset")?;
                let parts = column_i32(&polled.rows, "_partition")?;
                let range = progress.rows.clone();
                ensure!(range.start == covered, "ranges not contiguous: {range:?}");
                covered = range.end;
                for row in range {
                    ensure!(parts[row] == progress.partition, "row {row} partition");
                    ensure!(offsets[row] < progress.next_offset, "row {row} offset");
                    if row > progress.rows.start {
                        ensure!(offsets[row] > offsets[row - 1], "row {row} out of order");
                    }
                }
            }
            self.next.insert(progress.partition, progress.next_offset);
        }
        if has_offsets && polled.deletes.is_none() {
            ensure!(covered == polled.rows.num_rows(), "rows outside the ranges");
            let offsets = column_i64(&polled.rows, "_offset")?;
            let parts = column_i32(&polled.rows, "_partition")?;
            for (p, o) in parts.into_iter().zip(offsets) {
                ensure!(self.seen.insert((p, o)), "row ({p}, {o}) read twice");
            }
        }
        for b in &polled.bad {
            ensure!(
                self.seen.insert((b.partition, b.offset)),
                "bad message ({}, {}) read twice",
                b.partition,
                b.offset
            );
        }
        self.polls.push(polled);
        Ok(())
    }

    fn bad(&self) -> Vec<&BadMessage> {
        self.polls.iter().flat_map(|p| &p.bad).collect()
    }
}

/// Polls until `expected` messages (rows and bad) were read.
fn read_until(
    reader: &mut KafkaReader,
    reads: &mut Reads,
    expected: usize,
    max_rows: usize,
    has_offsets: bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READ_TIMEOUT;
    while reads.messages() < expected {
        if Instant::now() >= deadline {
            bail!(
                "read {} of {expected} messages within {READ_TIMEOUT:?}; status {:?}",
                reads.messages(),
                reader.status()
            );
        }
        let polled = reader.poll(max_rows, POLL_TIMEOUT)?;
        ensure!(
            polled.rows.num_rows() + polled.bad.len() <= max_rows,
            "poll returned more than {max_rows} messages"
        );
        if !polled.is_empty() {
            reads.add(polled, has_offsets)?;
        }
    }
    Ok(())
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> anyhow::Result<&'a dyn Array> {
    let index = batch.schema().index_of(name)?;
    Ok(batch.column(index).as_ref())
}

/// The values of a primitive column of Arrow type `T`.
fn column_values<T: ArrowPrimitiveType>(
    batch: &RecordBatch,
    name: &str,
) -> anyhow::Result<Vec<T::Native>> {
    let array = column(batch, name)?;
    let array = array
        .as_primitive_opt::<T>()
        .with_context(|| format!("column {name} is not {}", T::DATA_TYPE))?;
    Ok(array.values().to_vec())
}

fn column_i64(batch: &RecordBatch, name: &str) -> anyhow::Result<Vec<i64>> {
    column_values::<Int64Type>(batch, name)
}

fn column_i32(batch: &RecordBatch, name: &str) -> anyhow::Result<Vec<i32>> {
    column_values::<Int32Type>(batch, name)
}

fn column_text(batch: &RecordBatch, name: &str) -> anyhow::Result<Vec<Option<String>>> {
    let array = column(batch, name)?;
    let array = array
        .as_any()
        .downcast_ref::<StringArray>()
        .context("not text")?;
    Ok(array.iter().map(|v| v.map(str::to_string)).collect())
}

// ---------------------------------------------------------------------------
// Plain JSON: every record once, INCLUDE columns, bad records, resume
// ---------------------------------------------------------------------------

const PLAIN_PARTITIONS: i32 = 3;
const PLAIN_RECORDS: usize = 300;
const SMALL_LIMIT: usize = 200;

/// Record `i` of the plain topic, in partition `i % 3` (so at offset
/// `i / 3`), key `k{i}`; some are bad on purpose, with the reason expected.
fn plain_record(i: usize) -> (Record, Option<&'static str>) {
    let key = format!("k{i}");
    let (record, bad) = match i {
        10 => (
            Record::keyed(key, "{\"id\": 10, \"name\": "),
            Some("invalid JSON"),
        ),
        20 => (
            Record::keyed(key, "{\"name\": \"n20\"}"),
            Some("missing field \"id\""),
        ),
        30 => (
            Record::keyed(key, "{\"id\": \"thirty\", \"name\": \"n30\"}"),
            Some("field \"id\": expected integer"),
        ),
        40 => (
            Record::keyed(
                key,
                format!("{{\"id\": 40, \"name\": \"{}\"}}", "x".repeat(SMALL_LIMIT)),
            ),
            Some("exceeds the 200-byte limit"),
        ),
        50 => (Record::tombstone(key), Some("tombstone")),
        _ => (
            Record::keyed(key, format!("{{\"id\": {i}, \"name\": \"n{i}\"}}")),
            None,
        ),
    };
    (record.in_partition((i % 3) as i32), bad)
}

fn plain_def(broker: &Broker, topic: &str) -> anyhow::Result<SourceDef> {
    source_def(&format!(
        "CREATE SOURCE s (id bigint NOT NULL, name text) INCLUDE partition INCLUDE offset \
         INCLUDE timestamp INCLUDE key AS k WITH ({}) FORMAT PLAIN ENCODE JSON",
        kafka_with(&broker.bootstrap(), topic, "")
    ))
}

fn small_options() -> KafkaOptions {
    KafkaOptions {
        max_message_bytes: SMALL_LIMIT,
        ..KafkaOptions::default()
    }
}

/// The good rows of `reads` against the records they came from.
fn check_plain_rows(reads: &Reads, produced: (i64, i64)) -> anyhow::Result<usize> {
    let mut rows = 0;
    for polled in &reads.polls {
        let batch = &polled.rows;
        let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()));
        ensure!(column(batch, "_timestamp")?.data_type() == &ts_type);
        let ids = column_i64(batch, "id")?;
        let names = column_text(batch, "name")?;
        let parts = column_i32(batch, "_partition")?;
        let offsets = column_i64(batch, "_offset")?;
        let keys = column_text(batch, "k")?;
        let ts = column(batch, "_timestamp")?
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .context("timestamp")?
            .clone();
        for row in 0..batch.num_rows() {
            let i = ids[row] as usize;
            ensure!(plain_record(i).1.is_none(), "bad record {i} gave a row");
            ensure!(names[row] == Some(format!("n{i}")), "row {row} name");
            ensure!(keys[row] == Some(format!("k{i}")), "row {row} key");
            ensure!(
                (parts[row], offsets[row]) == ((i % 3) as i32, (i / 3) as i64),
                "record {i} at ({}, {})",
                parts[row],
                offsets[row]
            );
            let ms = ts.value(row) / 1000;
            ensure!(
                !ts.is_null(row) && ms >= produced.0 - 1000 && ms <= produced.1 + 1000,
                "record {i} timestamp {ms} outside {produced:?}"
            );
        }
        rows += batch.num_rows();
        ensure!(batch.schema() == polled.rows.schema());
    }
    Ok(rows)
}

fn check_plain_bad(reads: &Reads) -> anyhow::Result<()> {
    let mut bad: Vec<&BadMessage> = reads.bad();
    bad.sort_by_key(|b| (b.offset * 3 + i64::from(b.partition), b.partition));
    let expected: Vec<usize> = (0..PLAIN_RECORDS)
        .filter(|&i| plain_record(i).1.is_some())
        .collect();
    ensure!(bad.len() == expected.len(), "bad messages: {bad:?}");
    for (b, &i) in bad.iter().zip(&expected) {
        let (record, reason) = plain_record(i);
        ensure!(
            (b.partition, b.offset) == ((i % 3) as i32, (i / 3) as i64),
            "bad record {i} at ({}, {})",
            b.partition,
            b.offset
        );
        ensure!(
            b.reason.contains(reason.unwrap_or_default()),
            "record {i}: reason {:?}",
            b.reason
        );
        ensure!(b.payload == record.value, "record {i}: payload");
    }
    Ok(())
}

#[test]
fn plain_json_every_record_once_with_includes_and_bad_records() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("plain", PLAIN_PARTITIONS)?;
    let before = now_ms();
    let records: Vec<Record> = (0..PLAIN_RECORDS).map(|i| plain_record(i).0).collect();
    broker.produce("plain", &records)?;
    let produced = (before, now_ms());
    let def = plain_def(&broker, "plain")?;
    let start = KafkaReader::resolve_start(&def, &small_options())?;
    assert_eq!(start, Offsets::from([(0, 0), (1, 0), (2, 0)]));

    let mut reader = KafkaReader::open(&def, &start, small_options())?;
    let mut reads = Reads::default();
    read_until(&mut reader, &mut reads, PLAIN_RECORDS, 64, true)?;
    let rows = check_plain_rows(&reads, produced)?;
    check_plain_bad(&reads)?;
    assert_eq!(rows + reads.bad().len(), PLAIN_RECORDS);

    // Nothing more comes, and the positions reach the high watermarks.
    let extra = reader.poll(64, POLL_TIMEOUT)?;
    assert!(extra.is_empty(), "{extra:?}");
    let per_partition = (PLAIN_RECORDS / 3) as i64;
    assert_eq!(
        reads.next,
        Offsets::from([(0, per_partition), (1, per_partition), (2, per_partition)])
    );
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let infos = reader.partitions();
        let done = infos.len() == 3
            && infos.iter().all(|p| {
                p.next_offset == per_partition
                    && p.high_watermark == Some(per_partition)
                    && p.last_error.is_none()
            });
        if done {
            break;
        }
        ensure!(Instant::now() < deadline, "partitions: {infos:?}");
        reader.poll(64, POLL_TIMEOUT)?;
    }
    assert_eq!(reader.status(), None);
    Ok(())
}

#[test]
fn resume_at_returned_offsets_reads_exactly_the_rest() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("resume", PLAIN_PARTITIONS)?;
    let records: Vec<Record> = (0..PLAIN_RECORDS).map(|i| plain_record(i).0).collect();
    broker.produce("resume", &records)?;
    let def = plain_def(&broker, "resume")?;
    let start = KafkaReader::resolve_start(&def, &small_options())?;

    let mut first = Reads::default();
    let mut reader = KafkaReader::open(&def, &start, small_options())?;
    read_until(&mut reader, &mut first, PLAIN_RECORDS / 2, 25, true)?;
    let half = first.messages();
    ensure!(half < PLAIN_RECORDS, "the first reader read everything");
    // The positions the polls returned, completed with the start of
    // partitions not read yet, are what the runner would store.
    let mut resume_at = start.clone();
    resume_at.extend(first.next.clone());
    drop(reader);

    let mut rest = Reads {
        next: resume_at.clone(),
        ..Reads::default()
    };
    let mut reader = KafkaReader::open(&def, &resume_at, small_options())?;
    read_until(&mut reader, &mut rest, PLAIN_RECORDS - half, 64, true)?;
    let extra = reader.poll(64, POLL_TIMEOUT)?;
    assert!(extra.is_empty(), "{extra:?}");
    let overlap: Vec<_> = first.seen.intersection(&rest.seen).collect();
    assert!(overlap.is_empty(), "read twice: {overlap:?}");
    let all: BTreeSet<(i32, i64)> = first.seen.union(&rest.seen).copied().collect();
    let expected: BTreeSet<(i32, i64)> = (0..PLAIN_RECORDS)
        .map(|i| ((i % 3) as i32, (i / 3) as i64))
        .collect();
    assert_eq!(all, expected);
    let mut both = Reads::default();
    both.polls.extend(first.polls);
    both.polls.extend(rest.polls);
    check_plain_bad(&both)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Startup modes, partitions missing from the start, missing topic
// ---------------------------------------------------------------------------

fn startup_def(broker: &str, topic: &str, extra: &str) -> anyhow::Result<SourceDef> {
    source_def(&format!(
        "CREATE SOURCE s (n int) INCLUDE partition INCLUDE offset WITH ({}) \
         FORMAT PLAIN ENCODE JSON",
        kafka_with(broker, topic, extra)
    ))
}

fn numbered(range: std::ops::Range<usize>) -> Vec<Record> {
    range
        .map(|i| Record::value(format!("{{\"n\": {i}}}")).in_partition((i % 2) as i32))
        .collect()
}

#[test]
fn startup_modes_and_missing_topic() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let b = broker.bootstrap();
    broker.create_topic("modes", 2)?;
    broker.produce("modes", &numbered(0..20))?;
    // Every earlier record has a smaller timestamp, every later one a larger
    // (the producer is a new process: far more than a millisecond later).
    let split = now_ms() + 1;
    while now_ms() <= split {
        std::hint::spin_loop();
    }
    broker.produce("modes", &numbered(20..26))?;
    let options = KafkaOptions::default();
    let resolve = |extra: &str| {
        KafkaReader::resolve_start(&startup_def(&b, "modes", extra)?, &options)
            .map_err(anyhow::Error::from)
    };

    assert_eq!(resolve("")?, Offsets::from([(0, 0), (1, 0)]));
    assert_eq!(
        resolve(", scan.startup.mode = 'earliest'")?,
        Offsets::from([(0, 0), (1, 0)])
    );
    assert_eq!(
        resolve(", scan.startup.mode = 'latest'")?,
        Offsets::from([(0, 13), (1, 13)])
    );
    let at_split = resolve(&format!(", scan.startup.timestamp.millis = {split}"))?;
    assert_eq!(at_split, Offsets::from([(0, 10), (1, 10)]));
    assert_eq!(
        resolve(", scan.startup.timestamp.millis = 0")?,
        Offsets::from([(0, 0), (1, 0)])
    );
    // Past the last message: the high watermark (tansu answers 0 there).
    let future = now_ms() + 3_600_000;
    assert_eq!(
        resolve(&format!(
            ", scan.startup.mode = 'timestamp', scan.startup.timestamp.millis = {future}"
        ))?,
        Offsets::from([(0, 13), (1, 13)])
    );

    // Opened at the timestamp's offsets: exactly the later records.
    let def = startup_def(&b, "modes", "")?;
    let mut reader = KafkaReader::open(&def, &at_split, options.clone())?;
    let mut reads = Reads::default();
    read_until(&mut reader, &mut reads, 6, 100, true)?;
    let mut ns: Vec<i32> = reads
        .polls
        .iter()
        .flat_map(|p| column_i32(&p.rows, "n").unwrap_or_default())
        .collect();
    ns.sort();
    assert_eq!(ns, (20..26).collect::<Vec<i32>>());

    // A partition missing from the start (it appeared later) is read from
    // its low watermark; the others from their offset.
    let mut reader = KafkaReader::open(&def, &Offsets::from([(0, 10)]), options.clone())?;
    let mut reads = Reads::default();
    read_until(&mut reader, &mut reads, 3 + 13, 100, true)?;
    let expected: BTreeSet<(i32, i64)> = (10..13)
        .map(|o| (0, o))
        .chain((0..13).map(|o| (1, o)))
        .collect();
    assert_eq!(reads.seen, expected);
    let infos = reader.partitions();
    assert_eq!(
        infos
            .iter()
            .map(|p| (p.partition, p.next_offset))
            .collect::<Vec<_>>(),
        vec![(0, 13), (1, 13)]
    );

    let missing = startup_def(&b, "nope", "")?;
    for err in [
        KafkaReader::resolve_start(&missing, &options).expect_err("missing topic"),
        KafkaReader::open(&missing, &Offsets::new(), options.clone())
            .err()
            .context("open")?,
    ] {
        assert_eq!(err.sqlstate(), "08001", "{err}");
        assert!(
            err.to_string().contains("topic \"nope\" does not exist"),
            "{err}"
        );
        assert!(
            err.hint().is_some_and(|h| h.contains("create it")),
            "{err:?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// FORMAT UPSERT
// ---------------------------------------------------------------------------

#[test]
fn upsert_keys_and_tombstones_collapse() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("upserts", 1)?;
    let def = source_def(&format!(
        "CREATE TABLE u (id int, name text, score int, PRIMARY KEY (id)) INCLUDE offset \
         WITH ({}) FORMAT UPSERT ENCODE JSON",
        kafka_with(&broker.bootstrap(), "upserts", "")
    ))?;
    let records = vec![
        Record::keyed("{\"id\": 1}", "{\"name\": \"a\", \"score\": 1}"),
        Record::keyed("2", "{\"id\": 2, \"name\": \"b\", \"score\": 2}"),
        Record::keyed("{\"id\": 1}", "{\"name\": \"a2\", \"score\": 10}"),
        Record::keyed("3", "{\"name\": \"c\", \"score\": 3}"),
        Record::tombstone("3"),
        Record::tombstone("{\"id\": 4}"),
        // The message key wins over the value's copy of the key column.
        Record::keyed("{\"id\": 5}", "{\"id\": 99, \"name\": \"e\", \"score\": 5}"),
        Record::value("{\"id\": 7, \"name\": \"no key\", \"score\": 7}"),
        Record::keyed("x", "{\"name\": \"bad key\", \"score\": 0}"),
        Record::keyed("{\"id\": 6}", "{\"name\": "),
        Record::tombstone("2"),
        Record::keyed("2", "{\"name\": \"b2\", \"score\": 3}"),
    ];
    let records: Vec<Record> = records.into_iter().map(|r| r.in_partition(0)).collect();
    broker.produce("upserts", &records)?;
    let start = KafkaReader::resolve_start(&def, &KafkaOptions::default())?;
    let mut reader = KafkaReader::open(&def, &start, KafkaOptions::default())?;
    let mut reads = Reads::default();
    let deadline = Instant::now() + READ_TIMEOUT;
    // The table as the polls leave it, applied in order.
    let mut table: HashMap<i32, (Option<String>, Option<i32>, i64)> = HashMap::new();
    let mut deleted: BTreeSet<i32> = BTreeSet::new();
    let mut bad: Vec<(i64, String)> = Vec::new();
    while reads.next.get(&0) != Some(&(records.len() as i64)) {
        ensure!(
            Instant::now() < deadline,
            "upsert read stalled at {:?}",
            reads.next
        );
        let polled = reader.poll(100, POLL_TIMEOUT)?;
        if polled.is_empty() {
            continue;
        }
        assert_eq!(polled.rows.schema(), def.arrow_schema());
        assert!(polled.partitions.iter().all(|p| p.rows.is_empty()));
        let ids = column_i32(&polled.rows, "id")?;
        let names = column_text(&polled.rows, "name")?;
        let scores = polled
            .rows
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
            .clone();
        let offsets = column_i64(&polled.rows, "_offset")?;
        let deletes = polled
            .deletes
            .as_ref()
            .context("upsert polls carry deletes")?;
        assert_eq!(deletes.schema().fields().len(), 1);
        assert_eq!(deletes.schema().field(0).name(), "id");
        let gone = column_i32(deletes, "id")?;
        let unique: BTreeSet<i32> = ids.iter().chain(&gone).copied().collect();
        assert_eq!(
            unique.len(),
            ids.len() + gone.len(),
            "a key twice in one poll"
        );
        for row in 0..ids.len() {
            let score = (!scores.is_null(row)).then(|| scores.value(row));
            table.insert(ids[row], (names[row].clone(), score, offsets[row]));
            deleted.remove(&ids[row]);
        }
        for id in gone {
            table.remove(&id);
            deleted.insert(id);
        }
        bad.extend(polled.bad.iter().map(|b| (b.offset, b.reason.clone())));
        reads.add(polled, false)?;
    }
    let mut rows: Vec<(i32, Option<String>, Option<i32>, i64)> = table
        .into_iter()
        .map(|(id, (name, score, offset))| (id, name, score, offset))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            (1, Some("a2".into()), Some(10), 2),
            (2, Some("b2".into()), Some(3), 11),
            (5, Some("e".into()), Some(5), 6),
        ]
    );
    assert_eq!(deleted, BTreeSet::from([3, 4]));
    let bad_offsets: Vec<i64> = bad.iter().map(|b| b.0).collect();
    assert_eq!(bad_offsets, vec![7, 8, 9], "{bad:?}");
    assert!(bad[0].1.contains("no key"), "{bad:?}");
    assert!(
        bad[1].1.contains("key: ") && bad[1].1.contains("integer"),
        "{bad:?}"
    );
    assert!(bad[2].1.contains("invalid JSON"), "{bad:?}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Broker trouble
// ---------------------------------------------------------------------------

#[test]
fn unreachable_broker_fails_resolve_quickly_and_open_reports_status() -> anyhow::Result<()> {
    // A port nobody listens on.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}");
    let def = startup_def(&address, "t", "")?;
    let options = KafkaOptions {
        connect_timeout: Duration::from_secs(1),
        ..KafkaOptions::default()
    };
    let started = Instant::now();
    let err = KafkaReader::resolve_start(&def, &options).expect_err("no broker");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(matches!(err, Error::SourceUnavailable { .. }), "{err:?}");
    assert_eq!(err.sqlstate(), "08001");
    assert!(err.to_string().contains(&address), "{err}");
    assert!(
        err.hint().is_some_and(|h| h.contains("bootstrap.server")),
        "{err:?}"
    );

    // A reader opened anyway retries, and says why it reads nothing.
    let mut reader = KafkaReader::open(&def, &Offsets::from([(0, 0)]), options)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while reader.status().is_none() {
        ensure!(Instant::now() < deadline, "no status without a broker");
        let polled = reader.poll(10, POLL_TIMEOUT)?;
        assert!(polled.is_empty());
    }
    let status = reader.status().unwrap_or_default();
    assert!(
        status.contains(&address) && status.contains("retrying"),
        "{status}"
    );
    Ok(())
}

#[test]
fn broker_stopped_and_restarted_under_a_reader() -> anyhow::Result<()> {
    let mut broker = Broker::start()?;
    broker.create_topic("restart", 2)?;
    broker.produce("restart", &numbered(0..100))?;
    let def = startup_def(&broker.bootstrap(), "restart", "")?;
    let start = KafkaReader::resolve_start(&def, &KafkaOptions::default())?;
    let mut reader = KafkaReader::open(&def, &start, KafkaOptions::default())?;
    let mut reads = Reads::default();
    read_until(&mut reader, &mut reads, 100, 30, true)?;
    assert_eq!(reader.status(), None);

    broker.stop()?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while reader.status().is_none() {
        ensure!(
            Instant::now() < deadline,
            "no status after the broker stopped"
        );
        let polled = reader.poll(30, POLL_TIMEOUT)?;
        assert!(polled.is_empty(), "{polled:?}");
    }
    let status = reader.status().unwrap_or_default();
    assert!(status.contains(&broker.bootstrap()), "{status}");
    for _ in 0..3 {
        let polled = reader.poll(30, POLL_TIMEOUT)?;
        assert!(polled.is_empty(), "{polled:?}");
        assert!(reader.status().is_some());
    }
    assert!(reader.partitions().iter().all(|p| p.last_error.is_some()));

    broker.restart()?;
    broker.produce("restart", &numbered(100..160))?;
    read_until(&mut reader, &mut reads, 160, 30, true)?;
    let expected: BTreeSet<(i32, i64)> = (0..160_i64).map(|i| ((i % 2) as i32, i / 2)).collect();
    assert_eq!(reads.seen, expected);
    let mut ns: Vec<i32> = reads
        .polls
        .iter()
        .flat_map(|p| column_i32(&p.rows, "n").unwrap_or_default())
        .collect();
    ns.sort();
    assert_eq!(ns, (0..160).collect::<Vec<i32>>());
    let deadline = Instant::now() + READ_TIMEOUT;
    while reader.status().is_some() || reader.partitions().iter().any(|p| p.last_error.is_some()) {
        ensure!(
            Instant::now() < deadline,
            "still {:?} {:?}",
            reader.status(),
            reader.partitions()
        );
        assert!(reader.poll(30, POLL_TIMEOUT)?.is_empty());
    }
    Ok(())
}
