//! The encoding of one committed change in a table's sled log: the row ids
//! it deleted and the rows it inserted (an Arrow IPC stream, row ids
//! included), so replay reproduces exactly the same rows and ids.

use std::io::{Cursor, Write};

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

const FORMAT_VERSION: u8 = 1;

#[derive(Debug, Default)]
pub struct LogRecord {
    pub deletes: Vec<u64>,
    /// Rows in the table's storage schema (row id last).
    pub inserts: Vec<RecordBatch>,
}

impl LogRecord {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(16 + self.deletes.len() * 8);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Writes the encoding to `out` as it is made (a large record goes
    /// to a file without a copy of it in memory).
    pub fn encode_into(&self, mut out: impl Write) -> Result<()> {
        let io =
            |e: std::io::Error| Error::Storage(format!("cannot write a table log record: {e}"));
        out.write_all(&[FORMAT_VERSION]).map_err(io)?;
        out.write_all(&(self.deletes.len() as u64).to_le_bytes())
            .map_err(io)?;
        // The ids go out in blocks, not a write each.
        let mut block = Vec::with_capacity(8 * 1024);
        for ids in self.deletes.chunks(1024) {
            block.clear();
            block.extend(ids.iter().flat_map(|id| id.to_le_bytes()));
            out.write_all(&block).map_err(io)?;
        }
        if let Some(first) = self.inserts.first() {
            let mut writer = StreamWriter::try_new(out, &first.schema())?;
            for batch in &self.inserts {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        Ok(())
    }

    pub fn decode(bytes: &[u8]) -> Result<LogRecord> {
        let corrupt = |what: &str| Error::Storage(format!("corrupt table log record: {what}"));
        if bytes.first() != Some(&FORMAT_VERSION) {
            return Err(corrupt("unknown format version"));
        }
        let count_bytes = bytes.get(1..9).ok_or_else(|| corrupt("truncated"))?;
        let count = u64::from_le_bytes(count_bytes.try_into().map_err(|_| corrupt("truncated"))?);
        let ids_end = 9 + (count as usize) * 8;
        let ids = bytes
            .get(9..ids_end)
            .ok_or_else(|| corrupt("truncated ids"))?;
        let deletes = ids
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let mut inserts = Vec::new();
        if bytes.len() > ids_end {
            let reader = StreamReader::try_new(Cursor::new(&bytes[ids_end..]), None)?;
            for batch in reader {
                inserts.push(batch?);
            }
        }
        Ok(LogRecord { deletes, inserts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, UInt64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("id", DataType::UInt64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(UInt64Array::from(vec![7, 8])),
            ],
        )
        .unwrap();
        let rec = LogRecord {
            deletes: vec![1, 5],
            inserts: vec![batch.clone()],
        };
        let back = LogRecord::decode(&rec.encode().unwrap()).unwrap();
        assert_eq!(back.deletes, vec![1, 5]);
        assert_eq!(back.inserts, vec![batch]);
        assert!(LogRecord::decode(&[9, 0]).is_err());
    }
}
