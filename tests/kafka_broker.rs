//! The Kafka test infrastructure itself, end to end: a tansu broker started
//! by the harness (tests/support/kafka.rs), a topic created through the admin
//! API, keyed records produced by Python confluent-kafka, and every one read
//! back with an rdkafka `BaseConsumer` the way a source reads (assigned
//! partitions, no consumer group commits), before and after a broker restart
//! on the same port and sqlite data.
//!
//! Every Kafka source test depends on what this checks; when it fails, the
//! others cannot be trusted.

#[path = "support/kafka.rs"]
mod kafka;
#[path = "support/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kafka::{Broker, Record};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "smoke";
const PARTITIONS: i32 = 3;
const RECORDS: usize = 3000;
/// Records produced after the restart, with the partition left to the
/// producer's key hash.
const LATE_RECORDS: usize = 30;
/// How long reading back what was produced may take.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// What was read from one partition, in offset order.
#[derive(Debug, Default)]
struct PartitionRead {
    offsets: Vec<i64>,
    /// Each message as the record that would have produced it.
    records: Vec<Record>,
}

/// Record `i`: key `k{i}`, JSON value `{"i": i}`, every 500th a tombstone,
/// sent to partition `i % 3`.
fn record(i: usize) -> Record {
    let key = format!("k{i}");
    let record = if i % 500 == 499 {
        Record::tombstone(key)
    } else {
        Record::keyed(key, format!("{{\"i\": {i}}}"))
    };
    record.in_partition((i % PARTITIONS as usize) as i32)
}

/// A consumer as a source uses one: no group commits, every partition
/// assigned from the beginning.
fn assigned_consumer(broker: &Broker) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "eddydb-kafka-smoke")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .context("creating the rdkafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(TOPIC, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Polls until `expected` messages arrived in total, or fails at the deadline.
fn read_all(
    consumer: &BaseConsumer,
    expected: usize,
) -> anyhow::Result<BTreeMap<i32, PartitionRead>> {
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let mut read: BTreeMap<i32, PartitionRead> = BTreeMap::new();
    let mut total = 0;
    while total < expected {
        if Instant::now() >= deadline {
            bail!("read {total} of {expected} messages within {CONSUME_TIMEOUT:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("consumer error")?;
        ensure!(message.topic() == TOPIC, "message from {}", message.topic());
        let part = read.entry(message.partition()).or_default();
        part.offsets.push(message.offset());
        part.records.push(Record {
            partition: Some(message.partition()),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
        });
        total += 1;
    }
    Ok(read)
}

/// Each partition holds exactly its share of records `0..RECORDS`, in
/// production order, at offsets 0, 1, 2, …
fn check_first_records(read: &BTreeMap<i32, PartitionRead>) -> anyhow::Result<()> {
    for partition in 0..PARTITIONS {
        let part = read
            .get(&partition)
            .with_context(|| format!("nothing read from partition {partition}"))?;
        let expected: Vec<Record> = (0..RECORDS)
            .filter(|i| (i % PARTITIONS as usize) as i32 == partition)
            .map(record)
            .collect();
        ensure!(
            part.records.len() == expected.len(),
            "partition {partition}: {} messages, expected {}",
            part.records.len(),
            expected.len()
        );
        let offsets: Vec<i64> = (0..expected.len() as i64).collect();
        assert_eq!(
            &part.offsets[..expected.len()],
            &offsets[..],
            "partition {partition} offsets"
        );
        for (got, want) in part.records.iter().zip(&expected) {
            assert_eq!(got, want, "partition {partition}");
        }
    }
    Ok(())
}

fn watermarks(broker: &Broker, consumer: &BaseConsumer) -> anyhow::Result<Vec<(i64, i64)>> {
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(TOPIC, p, WATERMARK_TIMEOUT)
                .with_context(|| format!("watermarks of partition {p} on {}", broker.bootstrap()))
        })
        .collect()
}

#[test]
fn produce_consume_restart() -> anyhow::Result<()> {
    let mut broker = Broker::start()?;
    broker.create_topic(TOPIC, PARTITIONS)?;
    let records: Vec<Record> = (0..RECORDS).map(record).collect();
    broker.produce(TOPIC, &records)?;

    let per_partition = (RECORDS / PARTITIONS as usize) as i64;
    let consumer = assigned_consumer(&broker)?;
    let read = read_all(&consumer, RECORDS)?;
    check_first_records(&read)?;
    assert_eq!(watermarks(&broker, &consumer)?, vec![(0, per_partition); 3]);
    drop(consumer);

    // The sqlite engine keeps records and offsets across a restart on the
    // same port; a fresh consumer reads the same thing again.
    broker.stop()?;
    broker.restart()?;
    let consumer = assigned_consumer(&broker)?;
    let read = read_all(&consumer, RECORDS)?;
    check_first_records(&read)?;
    assert_eq!(watermarks(&broker, &consumer)?, vec![(0, per_partition); 3]);

    // The restarted broker takes writes at the next offsets; the consumer
    // assigned before them sees them arrive.
    let late: Vec<Record> = (0..LATE_RECORDS)
        .map(|i| Record::keyed(format!("late{i}"), format!("{{\"late\": {i}}}")))
        .collect();
    broker.produce(TOPIC, &late)?;
    let more = read_all(&consumer, LATE_RECORDS)?;
    let mut late_seen: Vec<Vec<u8>> = Vec::new();
    for (partition, part) in &more {
        let first = per_partition;
        let offsets: Vec<i64> = (first..first + part.offsets.len() as i64).collect();
        assert_eq!(
            part.offsets, offsets,
            "late offsets in partition {partition}"
        );
        late_seen.extend(part.records.iter().filter_map(|r| r.key.clone()));
    }
    late_seen.sort();
    let mut late_keys: Vec<Vec<u8>> = late.iter().filter_map(|r| r.key.clone()).collect();
    late_keys.sort();
    assert_eq!(late_seen, late_keys);
    let highs: i64 = watermarks(&broker, &consumer)?.iter().map(|w| w.1).sum();
    assert_eq!(highs, (RECORDS + LATE_RECORDS) as i64);
    Ok(())
}
