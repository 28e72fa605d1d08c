//! The datagen connector's [`Reader`]: rows of a [`Datagen`] generator,
//! paced in wall-clock time.
//!
//! Row `i` is due at `datagen.start.time + i / rows.per.second`, the same
//! instant as its event time; rows already due are produced as fast as the
//! engine takes them, so a start time in the past is a backlog replayed at
//! full speed. The generator is one partition (0) whose offset is the row
//! index. With `FORMAT PLAIN ENCODE JSON` every row is written as a JSON
//! message and decoded again, so the generator drives the same decode path
//! as a Kafka topic.

use std::time::{Duration, Instant};

use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;

use super::datagen::Datagen;
use super::decode::{Decoder, DecoderOptions, Encode};
use super::def::SourceDef;
use super::reader::{BadMessage, Offsets, PartitionInfo, PartitionProgress, Polled, Reader};
use crate::error::{Error, Result};

/// The reading side of a datagen source.
#[derive(Debug)]
pub struct DatagenReader {
    generator: Datagen,
    /// Set with `ENCODE JSON`: rows go through JSON messages.
    json: Option<Decoder>,
    next: u64,
    /// Bytes per JSON message in the last poll, to size the next poll's
    /// text so that it is written without growing.
    json_row_bytes: std::cell::Cell<usize>,
}

impl DatagenReader {
    /// A reader of `def` (a datagen source) from the stored position.
    /// `decode_threads`: threads a large poll's JSON is decoded on.
    pub fn open(
        def: &SourceDef,
        generator: Datagen,
        start: &Offsets,
        decode_threads: usize,
    ) -> Result<DatagenReader> {
        let json = match def.format.as_ref().map(|f| &f.encode) {
            None => None,
            Some(super::def::Encode::Json) => Some(Decoder::new(
                generator.schema(),
                Encode::Json,
                DecoderOptions {
                    max_message_bytes: def.run.max_message_bytes,
                    threads: decode_threads,
                    ..DecoderOptions::default()
                },
            )?),
            Some(super::def::Encode::Csv { .. }) => {
                return Err(Error::unsupported(
                    "ENCODE CSV with connector datagen",
                    "Use FORMAT PLAIN ENCODE JSON, or leave FORMAT out for typed rows.",
                ))
            }
        };
        let next = u64::try_from(start.get(&0).copied().unwrap_or(0)).unwrap_or(0);
        Ok(DatagenReader {
            generator,
            json,
            next,
            json_row_bytes: std::cell::Cell::new(128),
        })
    }

    /// Rows due by now (capped at the generator's end).
    fn due(&self) -> u64 {
        let clock = self.generator.clock();
        let now = chrono::Utc::now().timestamp_micros();
        let elapsed = u128::try_from(now.saturating_sub(clock.start_us)).unwrap_or(0);
        let due = elapsed * u128::from(clock.rows_per_second) / 1_000_000;
        let due = u64::try_from(due).unwrap_or(u64::MAX);
        self.generator.end().map_or(due, |end| due.min(end))
    }

    /// How long until row `self.next` is due.
    fn wait_for_next(&self) -> Duration {
        let clock = self.generator.clock();
        let at = clock.time_us(self.next);
        let now = chrono::Utc::now().timestamp_micros();
        Duration::from_micros(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
    }

    /// Rows through JSON messages and the decoder.
    fn through_json(&self, decoder: &Decoder, batch: &RecordBatch) -> Result<Polled> {
        let per_row = self.json_row_bytes.get();
        let mut text = Vec::with_capacity(batch.num_rows() * (per_row + per_row / 8));
        let mut writer = LineDelimitedWriter::new(&mut text);
        writer.write(batch)?;
        writer.finish()?;
        if batch.num_rows() > 0 {
            self.json_row_bytes
                .set(text.len().div_ceil(batch.num_rows()));
        }
        let payloads: Vec<Option<&[u8]>> = text
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(Some)
            .collect();
        let decoded = decoder.decode(&payloads)?;
        let first = self.next as i64;
        let bad = decoded
            .bad
            .iter()
            .map(|b| BadMessage {
                partition: 0,
                offset: first + i64::from(b.index),
                reason: b.reason.clone(),
                payload: payloads[b.index as usize].map(<[u8]>::to_vec),
            })
            .collect();
        Ok(Polled {
            partitions: vec![PartitionProgress {
                partition: 0,
                rows: 0..decoded.batch.num_rows(),
                next_offset: first + batch.num_rows() as i64,
            }],
            offsets: Some(decoded.rows.iter().map(|&r| first + i64::from(r)).collect()),
            rows: decoded.batch,
            deletes: None,
            bad,
        })
    }
}

impl Reader for DatagenReader {
    fn poll(&mut self, max_rows: usize, timeout: Duration) -> Result<Polled> {
        let deadline = Instant::now() + timeout;
        let mut due = self.due();
        while due <= self.next {
            let ended = self.generator.end().is_some_and(|end| self.next >= end);
            let left = deadline.saturating_duration_since(Instant::now());
            if ended {
                // Nothing will ever come: wait out the poll instead of spinning.
                std::thread::sleep(left);
            }
            if ended || left.is_zero() {
                return Ok(Polled {
                    rows: RecordBatch::new_empty(self.generator.schema()),
                    deletes: None,
                    partitions: Vec::new(),
                    bad: Vec::new(),
                    offsets: None,
                });
            }
            // Pacing: nothing is due yet.
            std::thread::sleep(
                self.wait_for_next()
                    .min(left)
                    .max(Duration::from_micros(100)),
            );
            due = self.due();
        }
        let end = due.min(self.next.saturating_add(max_rows as u64));
        let batch = self.generator.batch(self.next..end)?;
        let polled = match &self.json {
            Some(decoder) => self.through_json(decoder, &batch)?,
            None => Polled {
                partitions: vec![PartitionProgress {
                    partition: 0,
                    rows: 0..batch.num_rows(),
                    next_offset: end as i64,
                }],
                rows: batch,
                deletes: None,
                bad: Vec::new(),
                offsets: None,
            },
        };
        self.next = end;
        Ok(polled)
    }

    fn partitions(&self) -> Vec<PartitionInfo> {
        vec![PartitionInfo {
            partition: 0,
            next_offset: self.next as i64,
            high_watermark: Some(self.due().max(self.next) as i64),
            last_error: None,
        }]
    }

    fn status(&self) -> Option<String> {
        None
    }
}
