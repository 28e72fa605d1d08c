//! The Kafka connector's reading side: a [`KafkaReader`] that consumes one
//! topic with librdkafka (rdkafka's `BaseConsumer`) and hands the runner
//! decoded polls, per-partition positions and bad messages ([`Reader`]).
//!
//! This file owns the consumer: resolving `scan.startup.*` into offsets
//! ([`KafkaReader::resolve_start`]), manual assignment of every partition
//! (no consumer group, nothing committed to the broker: the positions the
//! runner stores with the rows are the only ones), noticing partitions added
//! later, watermarks, and telling transient trouble (a lost broker, retried by
//! librdkafka) from a source that cannot go on (its topic is gone). It turns
//! messages into rows of [`SourceDef::arrow_schema`]: payloads through
//! [`Decoder`], `INCLUDE` columns from message metadata, and for
//! `FORMAT UPSERT` the message key into the primary key, collapsed per key.
//! Pacing, watermarks of event time, storing rows and bad records are the
//! runner's.
//!
//! Consumer settings: `properties.*` of the source are passed to librdkafka
//! as given, except `enable.auto.commit` and `enable.auto.offset.store`,
//! which are always `false` (ours win), and `bootstrap.servers`, which comes
//! from `properties.bootstrap.server`. `group.id` defaults to
//! `eddydb-<source>` (librdkafka wants one to assign partitions; nothing is
//! committed under it); a `properties.group.id` replaces it. Two librdkafka
//! defaults are changed unless `properties.*` set them: `fetch.wait.max.ms`
//! 100 (watermark requests queue behind an idle fetch) and
//! `reconnect.backoff.max.ms` 1000 (resume soon after a broker restart).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::ScalarValue;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::metadata::Metadata;
use rdkafka::{Offset, TopicPartitionList};

use super::decode::{self, Decoder, DecoderOptions, DEFAULT_MAX_MESSAGE_BYTES};
use super::def::{Connector, Encode, IncludeDef, IncludeKind, SourceDef, StartupMode};
use super::reader::{BadMessage, Offsets, PartitionInfo, PartitionProgress, Polled, Reader};
use crate::error::{Error, Result};
use crate::sql::copy_format::parse_text_value;

/// High watermarks are refreshed at most this often, from `poll`.
const WATERMARK_REFRESH: Duration = Duration::from_secs(1);
/// Timeout of one watermark request made from `poll`, which waits for it.
/// The request queues behind the consumer's own fetch on the broker
/// connection, so it must exceed `fetch.wait.max.ms`.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed watermark refresh (broker lost), the next one waits this
/// long, so a down broker does not make every `poll` wait out a timeout.
const WATERMARK_RETRY: Duration = Duration::from_secs(3);
/// Our `fetch.wait.max.ms` (librdkafka's default is 500): how long the
/// broker may hold a fetch with no data, and so how long a watermark or
/// metadata request can queue behind it. `properties.*` may override.
const FETCH_WAIT_MAX_MS: &str = "100";
/// Timeout of the metadata request made from `poll` every `metadata_refresh`.
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);
/// This many metadata answers in a row without the topic make it gone for
/// good (one may come from a broker that has not caught up yet).
const MISSING_TOPIC_REFRESHES: u32 = 2;
/// librdkafka's reconnect back-off grows up to this (its default is 10 s,
/// which delays resuming after a broker restart); `properties.*` may override.
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

const UNREACHABLE_HINT: &str = "Check properties.bootstrap.server and that the Kafka broker \
                                is running and reachable from the EddyDB server.";

/// Limits of a [`KafkaReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    /// Larger payloads are bad records, never decoded.
    pub max_message_bytes: usize,
    /// How long [`KafkaReader::resolve_start`] (and the first metadata
    /// request of [`KafkaReader::open`]) may wait for the broker.
    pub connect_timeout: Duration,
    /// How often the topic's partitions are listed again, to read new ones.
    pub metadata_refresh: Duration,
    /// Threads a large poll's messages are decoded on.
    pub decode_threads: usize,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            connect_timeout: Duration::from_secs(5),
            metadata_refresh: Duration::from_secs(10),
            decode_threads: 1,
        }
    }
}

/// Reads one Kafka topic: every partition assigned, from given offsets.
pub struct KafkaReader {
    consumer: BaseConsumer,
    topic: String,
    bootstrap: String,
    options: KafkaOptions,
    shape: Shape,
    includes: Vec<IncludeDef>,
    schema: SchemaRef,
    parts: BTreeMap<i32, PartState>,
    status: Option<String>,
    next_watermarks: Instant,
    next_metadata: Instant,
    /// Metadata answers in a row that did not list the topic.
    missing_topic: u32,
}

/// One assigned partition.
#[derive(Debug, Clone)]
struct PartState {
    next_offset: i64,
    high_watermark: Option<i64>,
    last_error: Option<String>,
}

/// How payloads (and keys) become rows.
enum Shape {
    Plain {
        decoder: Decoder,
        /// `ENCODE CSV (without_header = false)`: the message at offset 0 of
        /// each partition is a header, skipped.
        skip_header: bool,
    },
    Upsert(Box<Upsert>),
}

/// `FORMAT UPSERT ENCODE JSON`: the key gives the primary key columns, the
/// value the others.
struct Upsert {
    /// Decodes JSON-object keys into the primary-key columns.
    keys: Decoder,
    /// Decodes values into the declared columns that are not in the key.
    values: Decoder,
    /// Declared column indexes of the key, in key order.
    key_columns: Vec<usize>,
    /// Declared column indexes of the value columns, in declared order.
    value_columns: Vec<usize>,
    /// The key columns' fields, the schema of [`Polled::deletes`].
    key_schema: SchemaRef,
}

/// A message copied out of the consumer.
#[derive(Debug)]
struct Msg {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

impl Msg {
    fn of(message: &BorrowedMessage<'_>) -> Msg {
        Msg {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
        }
    }

    fn bad(&self, reason: String) -> BadMessage {
        BadMessage {
            partition: self.partition,
            offset: self.offset,
            reason,
            payload: self.payload.clone(),
        }
    }
}

/// The Kafka options of a source.
struct KafkaConn<'a> {
    topic: &'a str,
    bootstrap: &'a str,
    startup: StartupMode,
    properties: &'a BTreeMap<String, String>,
}

impl<'a> KafkaConn<'a> {
    fn of(def: &'a SourceDef) -> Result<KafkaConn<'a>> {
        match &def.connector {
            Connector::Kafka {
                topic,
                bootstrap_servers,
                startup,
                properties,
            } => Ok(KafkaConn {
                topic,
                bootstrap: bootstrap_servers,
                startup: *startup,
                properties,
            }),
            Connector::Datagen { .. } => Err(Error::Internal(format!(
                "source \"{}\" is a datagen source, opened as a Kafka one",
                def.name
            ))),
        }
    }

    /// A consumer as described in the module documentation.
    fn consumer(&self, source: &str) -> Result<BaseConsumer> {
        let mut config = ClientConfig::new();
        config
            .set("group.id", format!("eddydb-{source}"))
            .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
        for (key, value) in self.properties {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", self.bootstrap)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        config.create().map_err(|e| {
            Error::InvalidParameter(format!(
                "cannot create a Kafka consumer for source \"{source}\": {e}"
            ))
        })
    }

    fn unreachable(&self, timeout: Duration, err: &KafkaError) -> Error {
        Error::SourceUnavailable {
            message: format!(
                "cannot reach the Kafka broker at {} within {} ms: {}",
                self.bootstrap,
                timeout.as_millis(),
                describe(err)
            ),
            hint: UNREACHABLE_HINT.to_string(),
        }
    }

    fn missing_topic(&self) -> Error {
        Error::SourceUnavailable {
            message: format!(
                "Kafka topic \"{}\" does not exist on {}",
                self.topic, self.bootstrap
            ),
            hint: "Check the topic option; topics are not created by EddyDB, create it on the \
                   broker first."
                .to_string(),
        }
    }
}

/// What a metadata answer says about the topic.
enum TopicState {
    Missing,
    Partitions(Vec<i32>),
}

fn topic_state(metadata: &Metadata, topic: &str) -> TopicState {
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            TopicState::Partitions(t.partitions().iter().map(|p| p.id()).collect())
        }
        _ => TopicState::Missing,
    }
}

/// An rdkafka error without rdkafka's "KafkaError (...)" wrapping.
fn describe(err: &KafkaError) -> String {
    match err.rdkafka_error_code() {
        Some(code) => code.to_string(),
        None => err.to_string(),
    }
}

/// Whether an error code means "the broker cannot be reached".
fn is_connection_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NetworkException
    )
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl KafkaReader {
    /// Resolves the source's `scan.startup.*` into the next offset of every
    /// partition the topic has now: `earliest` is the low watermark,
    /// `latest` the high watermark, and a timestamp the first message at or
    /// after it (the high watermark when there is none). Fails with
    /// [`Error::SourceUnavailable`] (08001) when the broker does not answer
    /// within `connect_timeout` or the topic does not exist.
    pub fn resolve_start(def: &SourceDef, options: &KafkaOptions) -> Result<Offsets> {
        let conn = KafkaConn::of(def)?;
        let timeout = options.connect_timeout;
        let deadline = Instant::now() + timeout;
        let consumer = conn.consumer(&def.name)?;
        let metadata = consumer
            .fetch_metadata(Some(conn.topic), remaining(deadline))
            .map_err(|e| conn.unreachable(timeout, &e))?;
        let TopicState::Partitions(partitions) = topic_state(&metadata, conn.topic) else {
            return Err(conn.missing_topic());
        };
        let mut marks = BTreeMap::new();
        for p in partitions {
            let wm = consumer
                .fetch_watermarks(conn.topic, p, remaining(deadline))
                .map_err(|e| conn.unreachable(timeout, &e))?;
            marks.insert(p, wm);
        }
        match conn.startup {
            StartupMode::Earliest => Ok(marks.iter().map(|(p, (low, _))| (*p, *low)).collect()),
            StartupMode::Latest => Ok(marks.iter().map(|(p, (_, high))| (*p, *high)).collect()),
            StartupMode::Timestamp(ms) => {
                offsets_at_time(&consumer, &conn, ms, &marks, deadline, timeout)
            }
        }
    }

    /// Opens a consumer of the source's topic with every partition assigned:
    /// those in `start` at their offset, the others (they appeared since
    /// `start` was taken) at their low watermark. A broker that does not
    /// answer is not an error here (the reader retries, see
    /// [`Reader::status`]); a topic the broker says does not exist is
    /// [`Error::SourceUnavailable`].
    pub fn open(def: &SourceDef, start: &Offsets, options: KafkaOptions) -> Result<KafkaReader> {
        let conn = KafkaConn::of(def)?;
        let shape = Shape::new(def, &options)?;
        let consumer = conn.consumer(&def.name)?;
        let mut assignment = TopicPartitionList::new();
        for (&p, &offset) in start {
            assignment
                .add_partition_offset(conn.topic, p, Offset::Offset(offset))
                .map_err(|e| Error::Internal(format!("partition list: {e}")))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| Error::Internal(format!("assigning partitions of {}: {e}", conn.topic)))?;
        let now = Instant::now();
        let mut reader = KafkaReader {
            consumer,
            topic: conn.topic.to_string(),
            bootstrap: conn.bootstrap.to_string(),
            shape,
            includes: def.includes.clone(),
            schema: def.arrow_schema(),
            parts: start
                .iter()
                .map(|(&p, &next_offset)| {
                    let state = PartState {
                        next_offset,
                        high_watermark: None,
                        last_error: None,
                    };
                    (p, state)
                })
                .collect(),
            status: None,
            next_watermarks: now,
            next_metadata: now + options.metadata_refresh,
            missing_topic: 0,
            options,
        };
        match reader
            .consumer
            .fetch_metadata(Some(&reader.topic), reader.options.connect_timeout)
        {
            Ok(metadata) => match topic_state(&metadata, &reader.topic) {
                TopicState::Missing => return Err(conn.missing_topic()),
                TopicState::Partitions(partitions) => reader.assign_new(&partitions)?,
            },
            Err(e) => reader.trouble(&e),
        }
        Ok(reader)
    }

    /// Assigns the partitions not assigned yet, each from its low watermark
    /// (incrementally: the others keep their positions). A partition whose
    /// watermark cannot be fetched now is left for the next refresh.
    fn assign_new(&mut self, partitions: &[i32]) -> Result<()> {
        let mut added = TopicPartitionList::new();
        let mut states = Vec::new();
        for &p in partitions {
            if self.parts.contains_key(&p) {
                continue;
            }
            match self
                .consumer
                .fetch_watermarks(&self.topic, p, self.options.connect_timeout)
            {
                Ok((low, high)) => {
                    added
                        .add_partition_offset(&self.topic, p, Offset::Offset(low))
                        .map_err(|e| Error::Internal(format!("partition list: {e}")))?;
                    let state = PartState {
                        next_offset: low,
                        high_watermark: Some(high),
                        last_error: None,
                    };
                    states.push((p, state));
                }
                Err(e) => {
                    self.trouble(&e);
                    break;
                }
            }
        }
        if states.is_empty() {
            return Ok(());
        }
        self.consumer.incremental_assign(&added).map_err(|e| {
            Error::Internal(format!("assigning new partitions of {}: {e}", self.topic))
        })?;
        self.parts.extend(states);
        Ok(())
    }

    /// Lists the topic's partitions again when it is time: assigns new ones,
    /// and fails once the topic has been missing from enough answers.
    fn refresh_metadata(&mut self) -> Result<()> {
        if Instant::now() < self.next_metadata {
            return Ok(());
        }
        self.next_metadata = Instant::now() + self.options.metadata_refresh;
        match self
            .consumer
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
        {
            Err(e) => self.trouble(&e),
            Ok(metadata) => match topic_state(&metadata, &self.topic) {
                TopicState::Partitions(partitions) => {
                    self.missing_topic = 0;
                    self.assign_new(&partitions)?;
                }
                TopicState::Missing => {
                    self.missing_topic += 1;
                    if self.missing_topic >= MISSING_TOPIC_REFRESHES {
                        return Err(Error::SourceUnavailable {
                            message: format!(
                                "Kafka topic \"{}\" no longer exists on {}",
                                self.topic, self.bootstrap
                            ),
                            hint: "The topic was deleted; recreate it and the source, or drop \
                                   the source."
                                .to_string(),
                        });
                    }
                    self.status = Some(format!(
                        "topic \"{}\" not found on {} (rechecking)",
                        self.topic, self.bootstrap
                    ));
                }
            },
        }
        Ok(())
    }

    /// Refreshes high watermarks when it is time; a success also shows the
    /// broker is reachable again.
    fn refresh_watermarks(&mut self) {
        if Instant::now() < self.next_watermarks {
            return;
        }
        self.next_watermarks = Instant::now() + WATERMARK_REFRESH;
        let partitions: Vec<i32> = self.parts.keys().copied().collect();
        for p in partitions {
            match self
                .consumer
                .fetch_watermarks(&self.topic, p, WATERMARK_TIMEOUT)
            {
                Ok((_, high)) => {
                    if let Some(state) = self.parts.get_mut(&p) {
                        // Never below what was read (a broker answering
                        // less is wrong, or behind).
                        state.high_watermark = Some(high.max(state.next_offset));
                        state.last_error = None;
                    }
                }
                Err(e) => {
                    // The others would most likely wait out their timeout too.
                    self.trouble(&e);
                    self.next_watermarks = Instant::now() + WATERMARK_RETRY;
                    return;
                }
            }
        }
        if self.missing_topic == 0 {
            self.status = None;
        }
    }

    /// Records a transient error: the status, and every partition's last
    /// error (a partition cannot be told apart when the broker is lost).
    fn trouble(&mut self, err: &KafkaError) {
        let text = match err.rdkafka_error_code() {
            Some(code) if is_connection_error(code) => {
                format!("broker {} unreachable: {code} (retrying)", self.bootstrap)
            }
            _ => format!("{}: {} (retrying)", self.bootstrap, describe(err)),
        };
        for state in self.parts.values_mut() {
            state.last_error = Some(text.clone());
        }
        self.status = Some(text);
    }

    /// A consumer error from `poll`: recorded, or the end of the source.
    fn consumer_error(&mut self, err: &KafkaError) -> Result<()> {
        match err {
            KafkaError::PartitionEOF(_) => {}
            KafkaError::MessageConsumptionFatal(code) => {
                return Err(Error::SourceUnavailable {
                    message: format!(
                        "the Kafka consumer of topic \"{}\" failed: {code}",
                        self.topic
                    ),
                    hint: UNREACHABLE_HINT.to_string(),
                })
            }
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition,
            ) => {
                // Whether the topic is gone is for the metadata to say.
                self.trouble(err);
                self.next_metadata = Instant::now();
            }
            _ => self.trouble(err),
        }
        Ok(())
    }

    /// Waits up to `timeout` for the first message, then takes what is
    /// already there, up to `max_rows` messages. Messages below a partition's
    /// position (already read) are dropped.
    fn fetch(&mut self, max_rows: usize, timeout: Duration) -> Result<Vec<Msg>> {
        let deadline = Instant::now() + timeout;
        let mut messages = Vec::new();
        while messages.len() < max_rows {
            let wait = if messages.is_empty() {
                remaining(deadline)
            } else {
                Duration::ZERO
            };
            let event = match self.consumer.poll(wait) {
                None => None,
                Some(Ok(message)) => Some(Ok(Msg::of(&message))),
                Some(Err(err)) => Some(Err(err)),
            };
            match event {
                Some(Ok(msg)) => {
                    let Some(state) = self.parts.get_mut(&msg.partition) else {
                        continue;
                    };
                    if msg.offset < state.next_offset {
                        continue;
                    }
                    state.last_error = None;
                    self.status = None;
                    messages.push(msg);
                }
                Some(Err(err)) => self.consumer_error(&err)?,
                None if messages.is_empty() && Instant::now() < deadline => {}
                None => break,
            }
        }
        Ok(messages)
    }

    /// Advances positions past `messages` and lists every partition read.
    fn advance(&mut self, messages: &[Msg]) -> Vec<PartitionProgress> {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for m in messages {
            let n = next.entry(m.partition).or_insert(m.offset + 1);
            *n = (*n).max(m.offset + 1);
        }
        next.into_iter()
            .map(|(partition, next_offset)| {
                if let Some(state) = self.parts.get_mut(&partition) {
                    state.next_offset = next_offset;
                    // A message read proves the partition reaches this far,
                    // whatever the last (periodic) watermark fetch said.
                    state.high_watermark = state.high_watermark.map(|h| h.max(next_offset));
                }
                PartitionProgress {
                    partition,
                    rows: 0..0,
                    next_offset,
                }
            })
            .collect()
    }
}

impl Reader for KafkaReader {
    fn poll(&mut self, max_rows: usize, timeout: Duration) -> Result<Polled> {
        self.refresh_metadata()?;
        let mut messages = self.fetch(max_rows, timeout)?;
        self.refresh_watermarks();
        // Stable: each partition's messages stay in offset order.
        messages.sort_by_key(|m| m.partition);
        let mut partitions = self.advance(&messages);
        match &self.shape {
            Shape::Plain {
                decoder,
                skip_header,
            } => {
                let plain = decode_plain(decoder, *skip_header, &messages)?;
                let rows = self.with_includes(plain.declared, &messages, &plain.row_messages)?;
                for progress in &mut partitions {
                    if let Some(range) = plain.ranges.get(&progress.partition) {
                        progress.rows = range.clone();
                    }
                }
                let offsets = plain.row_messages.iter().map(|&i| messages[i].offset);
                Ok(Polled {
                    rows,
                    deletes: None,
                    partitions,
                    bad: plain.bad,
                    offsets: Some(offsets.collect()),
                })
            }
            Shape::Upsert(upsert) => {
                let collapsed = upsert.decode(&messages)?;
                let declared = upsert.declared_columns(&collapsed)?;
                let rows = self.with_includes(declared, &messages, &collapsed.upserted)?;
                let offsets = collapsed.upserted.iter().map(|&i| messages[i].offset);
                Ok(Polled {
                    rows,
                    deletes: Some(collapsed.deletes),
                    partitions,
                    bad: collapsed.bad,
                    offsets: Some(offsets.collect()),
                })
            }
        }
    }

    fn partitions(&self) -> Vec<PartitionInfo> {
        self.parts
            .iter()
            .map(|(&partition, state)| PartitionInfo {
                partition,
                next_offset: state.next_offset,
                high_watermark: state.high_watermark,
                last_error: state.last_error.clone(),
            })
            .collect()
    }

    fn status(&self) -> Option<String> {
        self.status.clone()
    }
}

// ---------------------------------------------------------------------------
// Start offsets by time
// ---------------------------------------------------------------------------

/// The first offset at or after `ms` in every partition (the high watermark
/// when no message is that late). tansu 0.6 answers offset 0 instead of
/// "none" (-1), so an answer at or below the low watermark is checked by
/// reading that message's timestamp.
fn offsets_at_time(
    consumer: &BaseConsumer,
    conn: &KafkaConn<'_>,
    ms: i64,
    marks: &BTreeMap<i32, (i64, i64)>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Offsets> {
    let mut query = TopicPartitionList::new();
    for &p in marks.keys() {
        query
            .add_partition_offset(conn.topic, p, Offset::Offset(ms))
            .map_err(|e| Error::Internal(format!("partition list: {e}")))?;
    }
    let answer = consumer
        .offsets_for_times(query, remaining(deadline))
        .map_err(|e| conn.unreachable(timeout, &e))?;
    let mut offsets = Offsets::new();
    let mut to_check = Offsets::new();
    for (&p, &(low, high)) in marks {
        let found = answer
            .find_partition(conn.topic, p)
            .map(|e| e.offset())
            .unwrap_or(Offset::End);
        let offset = match found {
            Offset::Offset(o) if o > high => high,
            Offset::Offset(o) if o <= low && low < high => {
                to_check.insert(p, low);
                low
            }
            Offset::Offset(o) => o,
            _ => high,
        };
        offsets.insert(p, offset);
    }
    for (p, ts) in first_timestamps(consumer, conn, &to_check, deadline, timeout)? {
        if ts.is_some_and(|ts| ts < ms) {
            offsets.insert(p, marks[&p].1);
        }
    }
    Ok(offsets)
}

/// The timestamps of the messages at `offsets`, read with `consumer`.
fn first_timestamps(
    consumer: &BaseConsumer,
    conn: &KafkaConn<'_>,
    offsets: &Offsets,
    deadline: Instant,
    timeout: Duration,
) -> Result<BTreeMap<i32, Option<i64>>> {
    let mut found = BTreeMap::new();
    if offsets.is_empty() {
        return Ok(found);
    }
    let mut assignment = TopicPartitionList::new();
    for (&p, &offset) in offsets {
        assignment
            .add_partition_offset(conn.topic, p, Offset::Offset(offset))
            .map_err(|e| Error::Internal(format!("partition list: {e}")))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| conn.unreachable(timeout, &e))?;
    while found.len() < offsets.len() {
        let wait = remaining(deadline);
        if wait.is_zero() {
            return Err(Error::SourceUnavailable {
                message: format!(
                    "reading topic \"{}\" on {} to resolve scan.startup.timestamp.millis did \
                     not finish within {} ms",
                    conn.topic,
                    conn.bootstrap,
                    timeout.as_millis()
                ),
                hint: UNREACHABLE_HINT.to_string(),
            });
        }
        match consumer.poll(wait) {
            Some(Ok(m)) if offsets.get(&m.partition()) == Some(&m.offset()) => {
                found.insert(m.partition(), m.timestamp().to_millis());
            }
            // Other messages, and transient errors: wait on.
            Some(_) | None => {}
        }
    }
    consumer
        .unassign()
        .map_err(|e| Error::Internal(format!("unassigning: {e}")))?;
    Ok(found)
}

// ---------------------------------------------------------------------------
// Messages to rows
// ---------------------------------------------------------------------------

impl Shape {
    fn new(def: &SourceDef, options: &KafkaOptions) -> Result<Shape> {
        let format = def.format.as_ref().ok_or_else(|| {
            Error::InvalidParameter(format!(
                "Kafka source \"{}\" needs FORMAT … ENCODE …",
                def.name
            ))
        })?;
        let (encode, skip_header) = match format.encode {
            Encode::Json => (decode::Encode::Json, false),
            Encode::Csv { delimiter, header } => (decode::Encode::Csv { delimiter }, header),
        };
        let decoder_options = DecoderOptions {
            max_message_bytes: options.max_message_bytes,
            threads: options.decode_threads,
            ..DecoderOptions::default()
        };
        let schema = def.arrow_schema();
        let declared: Vec<Field> = schema.fields()[..def.columns.len()]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if !def.is_upsert() {
            let decoder = Decoder::new(Arc::new(Schema::new(declared)), encode, decoder_options)?;
            return Ok(Shape::Plain {
                decoder,
                skip_header,
            });
        }
        if def.primary_key.is_empty() || encode != decode::Encode::Json {
            return Err(Error::Internal(format!(
                "FORMAT UPSERT source \"{}\" without a primary key or with ENCODE CSV",
                def.name
            )));
        }
        let key_columns = def.primary_key.clone();
        let value_columns: Vec<usize> = (0..declared.len())
            .filter(|i| !key_columns.contains(i))
            .collect();
        let pick = |columns: &[usize]| -> SchemaRef {
            Arc::new(Schema::new(
                columns
                    .iter()
                    .map(|&i| declared[i].clone())
                    .collect::<Vec<_>>(),
            ))
        };
        let key_schema = pick(&key_columns);
        Ok(Shape::Upsert(Box::new(Upsert {
            keys: Decoder::new(Arc::clone(&key_schema), encode, decoder_options)?,
            values: Decoder::new(pick(&value_columns), encode, decoder_options)?,
            key_columns,
            value_columns,
            key_schema,
        })))
    }
}

/// A plain poll decoded: the declared columns of the good rows.
struct PlainRows {
    declared: Vec<ArrayRef>,
    /// For each row, the index of its message.
    row_messages: Vec<usize>,
    /// Each partition's rows.
    ranges: BTreeMap<i32, std::ops::Range<usize>>,
    bad: Vec<BadMessage>,
}

/// Decodes the payloads of `messages` (sorted by partition) in one call.
fn decode_plain(decoder: &Decoder, skip_header: bool, messages: &[Msg]) -> Result<PlainRows> {
    let inputs: Vec<usize> = (0..messages.len())
        .filter(|&i| !(skip_header && messages[i].offset == 0))
        .collect();
    let payloads: Vec<Option<&[u8]>> = inputs
        .iter()
        .map(|&i| messages[i].payload.as_deref())
        .collect();
    let decoded = decoder.decode(&payloads)?;
    let row_messages: Vec<usize> = decoded.rows.iter().map(|&r| inputs[r as usize]).collect();
    let mut ranges: BTreeMap<i32, std::ops::Range<usize>> = BTreeMap::new();
    for (row, &i) in row_messages.iter().enumerate() {
        ranges.entry(messages[i].partition).or_insert(row..row).end = row + 1;
    }
    let bad = decoded
        .bad
        .into_iter()
        .map(|b| messages[inputs[b.index as usize]].bad(b.reason))
        .collect();
    Ok(PlainRows {
        declared: decoded.batch.columns().to_vec(),
        row_messages,
        ranges,
        bad,
    })
}

impl KafkaReader {
    /// The full row: `declared` columns, then the `INCLUDE` columns of the
    /// messages `rows` names.
    fn with_includes(
        &self,
        mut columns: Vec<ArrayRef>,
        messages: &[Msg],
        rows: &[usize],
    ) -> Result<RecordBatch> {
        let first_include = self.schema.fields().len() - self.includes.len();
        for (i, include) in self.includes.iter().enumerate() {
            let field = self.schema.field(first_include + i);
            columns.push(include_column(include.kind, field, messages, rows));
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)
            .map_err(|e| Error::Internal(format!("Kafka reader built an invalid batch: {e}")))
    }
}

/// One `INCLUDE` column's values for the messages `rows` names.
fn include_column(kind: IncludeKind, field: &Field, messages: &[Msg], rows: &[usize]) -> ArrayRef {
    let each = || rows.iter().map(|&i| &messages[i]);
    match kind {
        IncludeKind::Partition => {
            Arc::new(Int32Array::from_iter_values(each().map(|m| m.partition)))
        }
        IncludeKind::Offset => Arc::new(Int64Array::from_iter_values(each().map(|m| m.offset))),
        IncludeKind::Timestamp => {
            let timezone = match field.data_type() {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            };
            let values = each().map(|m| m.timestamp_ms.and_then(|ms| ms.checked_mul(1_000)));
            Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone_opt(timezone))
        }
        IncludeKind::Key => Arc::new(StringArray::from_iter(
            each().map(|m| m.key.as_deref().map(String::from_utf8_lossy)),
        )),
    }
}

/// An upsert poll collapsed per key.
struct Collapsed {
    /// The winning upserts' messages, in poll order.
    upserted: Vec<usize>,
    /// Their key values, one row per upsert, in key-column order.
    upserted_keys: Vec<Vec<ScalarValue>>,
    /// Their rows in the value decoder's batch.
    value_rows: Vec<u32>,
    values: RecordBatch,
    deletes: RecordBatch,
    bad: Vec<BadMessage>,
}

/// What the last message of a key did.
enum Last {
    Upsert { message: usize, value_row: u32 },
    Delete { message: usize },
}

impl Upsert {
    /// Keys and values of `messages` decoded, collapsed per key, last wins.
    fn decode(&self, messages: &[Msg]) -> Result<Collapsed> {
        let mut bad = Vec::new();
        let keys = self.decode_keys(messages)?;
        // Values of the messages with a good key and a payload, in one call.
        let with_value: Vec<usize> = (0..messages.len())
            .filter(|&i| keys[i].is_ok() && messages[i].payload.is_some())
            .collect();
        let payloads: Vec<Option<&[u8]>> = with_value
            .iter()
            .map(|&i| messages[i].payload.as_deref())
            .collect();
        let decoded = self.values.decode(&payloads)?;
        let mut value_row: HashMap<usize, Result<u32, String>> = HashMap::new();
        for (row, &input) in decoded.rows.iter().enumerate() {
            let row = u32::try_from(row)
                .map_err(|_| Error::Internal("more than u32::MAX rows in one poll".into()))?;
            value_row.insert(with_value[input as usize], Ok(row));
        }
        for b in decoded.bad {
            value_row.insert(with_value[b.index as usize], Err(b.reason));
        }
        let mut last: HashMap<&[ScalarValue], Last> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            let key = match key {
                Ok(key) => key.as_slice(),
                Err(reason) => {
                    bad.push(messages[i].bad(reason.clone()));
                    continue;
                }
            };
            let action = match value_row.remove(&i) {
                None => Last::Delete { message: i },
                Some(Ok(row)) => Last::Upsert {
                    message: i,
                    value_row: row,
                },
                Some(Err(reason)) => {
                    bad.push(messages[i].bad(reason));
                    continue;
                }
            };
            last.insert(key, action);
        }
        self.collapse(last, decoded.batch, bad)
    }

    /// The winners of `last` in poll order: upserts and the delete batch.
    fn collapse(
        &self,
        last: HashMap<&[ScalarValue], Last>,
        values: RecordBatch,
        bad: Vec<BadMessage>,
    ) -> Result<Collapsed> {
        let mut winners: Vec<(usize, &[ScalarValue], Option<u32>)> = last
            .into_iter()
            .map(|(key, action)| match action {
                Last::Upsert { message, value_row } => (message, key, Some(value_row)),
                Last::Delete { message } => (message, key, None),
            })
            .collect();
        winners.sort_by_key(|w| w.0);
        let mut collapsed = Collapsed {
            upserted: Vec::new(),
            upserted_keys: Vec::new(),
            value_rows: Vec::new(),
            values,
            deletes: RecordBatch::new_empty(Arc::clone(&self.key_schema)),
            bad,
        };
        let mut deleted: Vec<Vec<ScalarValue>> = Vec::new();
        for (message, key, value_row) in winners {
            match value_row {
                Some(row) => {
                    collapsed.upserted.push(message);
                    collapsed.upserted_keys.push(key.to_vec());
                    collapsed.value_rows.push(row);
                }
                None => deleted.push(key.to_vec()),
            }
        }
        let columns = self.key_arrays(&deleted)?;
        let options = RecordBatchOptions::new().with_row_count(Some(deleted.len()));
        collapsed.deletes =
            RecordBatch::try_new_with_options(Arc::clone(&self.key_schema), columns, &options)
                .map_err(|e| Error::Internal(format!("upsert delete batch: {e}")))?;
        Ok(collapsed)
    }

    /// One array per key column from rows of key values.
    fn key_arrays(&self, keys: &[Vec<ScalarValue>]) -> Result<Vec<ArrayRef>> {
        self.key_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, field)| {
                if keys.is_empty() {
                    return Ok(datafusion::arrow::array::new_empty_array(field.data_type()));
                }
                ScalarValue::iter_to_array(keys.iter().map(|k| k[c].clone()))
                    .map_err(|e| Error::Internal(format!("upsert key column: {e}")))
            })
            .collect()
    }

    /// The declared columns of the upserted rows: key columns from the key,
    /// the others from the value.
    fn declared_columns(&self, collapsed: &Collapsed) -> Result<Vec<ArrayRef>> {
        let keys = self.key_arrays(&collapsed.upserted_keys)?;
        let indices = UInt32Array::from(collapsed.value_rows.clone());
        let total = self.key_columns.len() + self.value_columns.len();
        let mut columns: Vec<Option<ArrayRef>> = vec![None; total];
        for (k, &c) in self.key_columns.iter().enumerate() {
            columns[c] = Some(Arc::clone(&keys[k]));
        }
        for (v, &c) in self.value_columns.iter().enumerate() {
            let taken = take(collapsed.values.column(v).as_ref(), &indices, None)
                .map_err(|e| Error::Internal(format!("upsert value column: {e}")))?;
            columns[c] = Some(taken);
        }
        columns
            .into_iter()
            .map(|c| c.ok_or_else(|| Error::Internal("upsert column not filled".into())))
            .collect()
    }

    /// Every message's key as primary-key values, or why it is bad. Keys that
    /// look like JSON objects are decoded in one call; a one-column key may
    /// also be the value's text.
    fn decode_keys(&self, messages: &[Msg]) -> Result<Vec<Result<Vec<ScalarValue>, String>>> {
        let is_object = |key: &[u8]| key.trim_ascii_start().first() == Some(&b'{');
        let objects: Vec<usize> = (0..messages.len())
            .filter(|&i| messages[i].key.as_deref().is_some_and(is_object))
            .collect();
        let payloads: Vec<Option<&[u8]>> = objects
            .iter()
            .map(|&i| messages[i].key.as_deref())
            .collect();
        let decoded = self.keys.decode(&payloads)?;
        let mut keys: Vec<Result<Vec<ScalarValue>, String>> = messages
            .iter()
            .map(|m| match m.key.as_deref() {
                None => Err("message has no key; FORMAT UPSERT needs the primary key there".into()),
                Some(key) if !is_object(key) => self.text_key(key),
                // Filled in below.
                Some(_) => Err(String::new()),
            })
            .collect();
        for (row, &input) in decoded.rows.iter().enumerate() {
            let values = (0..self.key_columns.len())
                .map(|c| ScalarValue::try_from_array(decoded.batch.column(c).as_ref(), row))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(format!("upsert key value: {e}")))?;
            keys[objects[input as usize]] = Ok(values);
        }
        for b in decoded.bad {
            keys[objects[b.index as usize]] = Err(format!("key: {}", b.reason));
        }
        Ok(keys)
    }

    /// A key that is not a JSON object: the text of a one-column key.
    fn text_key(&self, key: &[u8]) -> Result<Vec<ScalarValue>, String> {
        let [field] = self.key_schema.fields().as_ref() else {
            return Err(format!(
                "key is not a JSON object; a key of {} columns must be one naming them",
                self.key_columns.len()
            ));
        };
        let text = std::str::from_utf8(key).map_err(|e| format!("key: invalid UTF-8: {e}"))?;
        let value = parse_text_value(text, field.data_type(), field)
            .map_err(|e| format!("key: {}", e.message))?;
        let value = value
            .cast_to(field.data_type())
            .map_err(|e| format!("key: {e}"))?;
        if value.is_null() {
            return Err(format!(
                "key: null value for key column \"{}\"",
                field.name()
            ));
        }
        Ok(vec![value])
    }
}

#[cfg(test)]
mod tests {
    //! Against librdkafka's in-process mock broker: what tansu cannot do
    //! (a topic deleted under a reader). The rest is tested against a real
    //! broker in tests/kafka_reader.rs.

    use rdkafka::mocking::MockCluster;
    use rdkafka::types::RDKafkaRespErr;

    use super::*;
    use crate::source::def::{parse_source_statement, SourceStatement};

    fn def(bootstrap: &str, topic: &str) -> SourceDef {
        let sql = format!(
            "CREATE SOURCE s (n int) WITH (connector = 'kafka', topic = '{topic}', \
             properties.bootstrap.server = '{bootstrap}') FORMAT PLAIN ENCODE JSON"
        );
        match parse_source_statement(&sql) {
            Ok(Some(SourceStatement::Create(create))) => create.validate().expect("valid"),
            other => panic!("not a CREATE SOURCE: {other:?}"),
        }
    }

    #[test]
    fn a_deleted_topic_ends_the_reader() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 2, 1).expect("topic");
        let def = def(&cluster.bootstrap_servers(), "t");
        let options = KafkaOptions {
            metadata_refresh: Duration::from_millis(100),
            ..KafkaOptions::default()
        };
        let start = KafkaReader::resolve_start(&def, &options).expect("start");
        assert_eq!(start, Offsets::from([(0, 0), (1, 0)]));
        let mut reader = KafkaReader::open(&def, &start, options).expect("open");
        let polled = reader.poll(10, Duration::from_millis(50)).expect("poll");
        assert!(polled.is_empty());
        assert_eq!(reader.partitions().len(), 2);

        cluster
            .topic_error("t", RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            .expect("topic error");
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = loop {
            assert!(Instant::now() < deadline, "the reader did not notice");
            match reader.poll(10, Duration::from_millis(50)) {
                Ok(polled) => assert!(polled.is_empty()),
                Err(err) => break err,
            }
        };
        assert_eq!(err.sqlstate(), "08001", "{err}");
        assert!(err.to_string().contains("no longer exists"), "{err}");
    }
}
