//! Change batches: the unit of data in the dataflow. An Arrow `RecordBatch`
//! plus one weight (`diff`) per row, +1 for an insert and -1 for a
//! retraction (a Z-set, as in DBSP and Differential Dataflow).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::HashMap as FastMap;

use super::row::RowCodec;
use crate::error::{Error, Result};

/// Rows with weights. Rows may repeat; `consolidate` sums their weights.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    pub data: RecordBatch,
    pub diffs: Vec<i64>,
}

impl ChangeBatch {
    pub fn new(data: RecordBatch, diffs: Vec<i64>) -> ChangeBatch {
        debug_assert_eq!(data.num_rows(), diffs.len());
        ChangeBatch { data, diffs }
    }

    /// Every row inserted once.
    pub fn inserts(data: RecordBatch) -> ChangeBatch {
        let diffs = vec![1; data.num_rows()];
        ChangeBatch { data, diffs }
    }

    /// Every row retracted once.
    pub fn retractions(data: RecordBatch) -> ChangeBatch {
        let diffs = vec![-1; data.num_rows()];
        ChangeBatch { data, diffs }
    }

    pub fn empty(schema: SchemaRef) -> ChangeBatch {
        ChangeBatch {
            data: RecordBatch::new_empty(schema),
            diffs: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.diffs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.diffs.is_empty()
    }

    pub fn schema(&self) -> SchemaRef {
        self.data.schema()
    }

    pub fn negate(mut self) -> ChangeBatch {
        self.diffs.iter_mut().for_each(|d| *d = -*d);
        self
    }

    /// Keeps the rows where `mask` is true (nulls drop the row).
    pub fn filter(&self, mask: &BooleanArray) -> Result<ChangeBatch> {
        let data = filter_record_batch(&self.data, mask)?;
        let diffs = self
            .diffs
            .iter()
            .zip(mask.iter())
            .filter(|(_, keep)| keep.unwrap_or(false))
            .map(|(d, _)| *d)
            .collect();
        Ok(ChangeBatch { data, diffs })
    }

    /// The rows at `indices`, in that order.
    pub fn take(&self, indices: &[u32]) -> Result<ChangeBatch> {
        let idx = UInt32Array::from(indices.to_vec());
        let data = take_record_batch(&self.data, &idx)?;
        let diffs = indices.iter().map(|i| self.diffs[*i as usize]).collect();
        Ok(ChangeBatch { data, diffs })
    }

    /// Same rows and weights under another schema (names, nullability).
    pub fn with_schema(self, schema: SchemaRef) -> Result<ChangeBatch> {
        let data = RecordBatch::try_new(schema, self.data.columns().to_vec())?;
        Ok(ChangeBatch {
            data,
            diffs: self.diffs,
        })
    }

    /// One batch holding all of `batches` (which share `schema`).
    pub fn concat(schema: &SchemaRef, batches: &[ChangeBatch]) -> Result<ChangeBatch> {
        match batches {
            [] => return Ok(ChangeBatch::empty(Arc::clone(schema))),
            [one] => return Ok(one.clone()),
            _ => {}
        }
        let data = concat_batches(schema, batches.iter().map(|b| &b.data))?;
        let diffs = batches
            .iter()
            .flat_map(|b| b.diffs.iter().copied())
            .collect();
        Ok(ChangeBatch { data, diffs })
    }

    /// Sums the weights of equal rows and drops rows whose weight is zero.
    pub fn consolidate(self) -> Result<ChangeBatch> {
        if self.is_empty() {
            return Ok(self);
        }
        let codec = RowCodec::new(self.data.schema().fields().iter().map(|f| f.data_type()))?;
        let rows = codec.encode(self.data.columns())?;
        let mut first: FastMap<&[u8], usize> = FastMap::with_capacity(self.len());
        let mut order: Vec<u32> = Vec::new();
        let mut weights: Vec<i64> = Vec::new();
        for (i, diff) in self.diffs.iter().enumerate() {
            let slot = *first.entry(rows.row(i).data()).or_insert_with(|| {
                order.push(i as u32);
                weights.push(0);
                weights.len() - 1
            });
            weights[slot] += diff;
        }
        let keep: Vec<u32> = order
            .iter()
            .zip(&weights)
            .filter(|(_, w)| **w != 0)
            .map(|(i, _)| *i)
            .collect();
        if keep.len() == self.len() && weights.iter().all(|w| *w == 1) {
            return Ok(self);
        }
        let diffs = weights.into_iter().filter(|w| *w != 0).collect();
        let idx = UInt32Array::from(keep);
        let data = take_record_batch(&self.data, &idx)?;
        Ok(ChangeBatch { data, diffs })
    }

    /// Test and EXPLAIN form: one `"+1 a, b"` line per row, sorted.
    pub fn to_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = (0..self.len())
            .map(|r| {
                let cells: Vec<String> = self
                    .data
                    .columns()
                    .iter()
                    .map(|c| array_value_to_string(c, r).unwrap_or_else(|e| e.to_string()))
                    .collect();
                format!("{:+} {}", self.diffs[r], cells.join(", "))
            })
            .collect();
        lines.sort();
        lines
    }

    /// Builds a batch from a literal, for tests:
    ///
    /// ```text
    /// " I   T
    ///  + 1  a
    ///  - 5  b"
    /// ```
    ///
    /// The first line names column types (`I` int8, `F` float8, `T` text,
    /// `B` bool); each further line is a sign (`+`, `-` or a signed number)
    /// and the cells; `.` is NULL.
    pub fn from_pretty(text: &str) -> Result<ChangeBatch> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let header = lines
            .next()
            .ok_or_else(|| Error::Internal("empty batch literal".into()))?;
        let types: Vec<DataType> = header
            .split_whitespace()
            .map(|t| match t {
                "I" => Ok(DataType::Int64),
                "F" => Ok(DataType::Float64),
                "T" => Ok(DataType::Utf8),
                "B" => Ok(DataType::Boolean),
                other => Err(Error::Internal(format!("unknown column type {other}"))),
            })
            .collect::<Result<_>>()?;
        let mut cells: Vec<Vec<String>> = vec![Vec::new(); types.len()];
        let mut diffs = Vec::new();
        for line in lines {
            let mut parts = line.split_whitespace();
            let sign = parts.next().unwrap_or("+");
            diffs.push(match sign {
                "+" => 1,
                "-" => -1,
                n => n
                    .parse()
                    .map_err(|_| Error::Internal(format!("bad weight {n}")))?,
            });
            for (c, cell) in cells.iter_mut().enumerate() {
                let value = parts
                    .next()
                    .ok_or_else(|| Error::Internal(format!("row {line:?} lacks column {c}")))?;
                cell.push(value.to_string());
            }
        }
        let fields: Vec<Field> = types
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("c{i}"), t.clone(), true))
            .collect();
        let columns: Vec<ArrayRef> = types
            .iter()
            .zip(&cells)
            .map(|(t, values)| pretty_column(t, values))
            .collect::<Result<_>>()?;
        let data = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok(ChangeBatch { data, diffs })
    }
}

fn pretty_column(data_type: &DataType, values: &[String]) -> Result<ArrayRef> {
    use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    let cell = |v: &String| (v != ".").then(|| v.clone());
    let parse_err = |v: &String| Error::Internal(format!("bad cell {v}"));
    Ok(match data_type {
        DataType::Int64 => Arc::new(
            values
                .iter()
                .map(|v| {
                    cell(v)
                        .map(|s| s.parse::<i64>().map_err(|_| parse_err(v)))
                        .transpose()
                })
                .collect::<Result<Int64Array>>()?,
        ),
        DataType::Float64 => Arc::new(
            values
                .iter()
                .map(|v| {
                    cell(v)
                        .map(|s| s.parse::<f64>().map_err(|_| parse_err(v)))
                        .transpose()
                })
                .collect::<Result<Float64Array>>()?,
        ),
        DataType::Boolean => Arc::new(
            values
                .iter()
                .map(|v| cell(v).map(|s| s == "t" || s == "true"))
                .collect::<BooleanArray>(),
        ),
        _ => Arc::new(values.iter().map(cell).collect::<StringArray>()),
    })
}

/// A schema whose fields all accept NULL: outer joins and aggregates can
/// produce NULL where the planner's schema says a column never is.
pub fn nullable_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidate_sums_equal_rows_and_drops_zeros() {
        let batch = ChangeBatch::from_pretty(
            " I T
             + 1 a
             + 2 b
             - 1 a
             + 2 b
             + 3 .",
        )
        .unwrap();
        let out = batch.consolidate().unwrap();
        assert_eq!(out.to_lines(), vec!["+1 3, ", "+2 2, b"]);
    }
}
