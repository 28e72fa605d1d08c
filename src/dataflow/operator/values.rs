//! Values: a constant relation (`VALUES (…)`, a `SELECT` without `FROM`),
//! emitted once when the dataflow starts.

use datafusion::arrow::record_batch::RecordBatch;

use super::{ChangeBatch, Operator, Shard};
use crate::error::Result;

impl Values {
    pub fn new(rows: RecordBatch) -> Values {
        Values { rows }
    }

    pub fn describe(&self) -> String {
        format!("Values: {} rows", self.rows.num_rows())
    }
}

#[derive(Debug, Clone)]
pub struct Values {
    rows: RecordBatch,
}

impl Operator for Values {
    fn on_batch(
        &mut self,
        _port: usize,
        _b: ChangeBatch,
        _out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        Ok(())
    }

    fn on_start(&mut self, shard: Shard, out: &mut Vec<ChangeBatch>) -> Result<()> {
        // One worker emits the rows, so they count once.
        if shard.index == 0 && self.rows.num_rows() > 0 {
            out.push(ChangeBatch::inserts(self.rows.clone()));
        }
        Ok(())
    }

    crate::stateless_operator!();
}
