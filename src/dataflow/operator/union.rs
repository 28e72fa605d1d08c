//! Union all: every input's batches go out unchanged (bag union; weights add).

use datafusion::arrow::datatypes::SchemaRef;

use super::{ChangeBatch, Operator};
use crate::error::Result;

impl Union {
    pub fn new(schema: SchemaRef) -> Union {
        Union { schema }
    }

    pub fn describe(&self) -> String {
        "Union all".to_string()
    }
}

#[derive(Debug, Clone)]
pub struct Union {
    schema: SchemaRef,
}

impl Operator for Union {
    fn on_batch(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        // Inputs agree on types; names and nullability follow the first.
        out.push(batch.with_schema(std::sync::Arc::clone(&self.schema))?);
        Ok(())
    }

    crate::stateless_operator!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_both_inputs_through() {
        let a = ChangeBatch::from_pretty(" I\n + 1").unwrap();
        let b = ChangeBatch::from_pretty(" I\n - 1\n + 2").unwrap();
        let mut union = Union::new(a.schema());
        let mut out = Vec::new();
        union.on_batch(0, a, &mut out).unwrap();
        union.on_batch(1, b, &mut out).unwrap();
        let all = ChangeBatch::concat(&out[0].schema(), &out).unwrap();
        assert_eq!(all.consolidate().unwrap().to_lines(), vec!["+1 2"]);
    }
}
