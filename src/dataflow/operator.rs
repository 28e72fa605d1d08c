//! The operator trait: one required method, `on_batch`, and defaulted hooks.
//! Operators own their state (arrangements), do no I/O, and run on one
//! worker thread each: a view's dataflow has one instance of every operator
//! per worker, each seeing the shard of keys its worker owns.

mod aggregate;
mod filter;
mod join;
mod over;
mod project;
mod session;
mod temporal;
mod top_n;
mod union;
mod value_set;
mod values;

pub use aggregate::{AggCall, AggFunc, AggregateSpec, WindowClose};
pub use filter::Filter;
pub use join::{JoinKind, JoinSpec};
pub use over::{Direct, Frame, OverSpec};
pub use project::Project;
pub use session::{session_spans, SessionBound, SessionSpec};
pub use temporal::TemporalSpec;
pub use top_n::{SortKey, TopNSpec};
pub use union::Union;
pub use values::Values;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::SchemaRef;

use super::batch::ChangeBatch;
use super::expr::timestamp_micros;
use super::row::KeyBytes;
use super::state::{StateReader, StateWriter};
use crate::error::Result;

/// A key of a join or a top-N partition that is a window of event time:
/// which one (an index into the key or partition expressions), and how long
/// after its value the frontier must be for the key to be final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyClose {
    pub key: usize,
    pub slack_us: i64,
}

/// Rows per output batch of an operator that builds its output row by row,
/// so a large change does not make one giant batch.
pub(crate) const OUTPUT_BATCH_ROWS: usize = 8192;

/// Estimated bytes a map or B-tree entry of operator state costs beyond
/// its key bytes.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 48;

/// Keys (encoded) of a join or top-N by the instant they close: their
/// closing column's time plus the slack.
#[derive(Debug, Default)]
pub(crate) struct CloseSchedule {
    at: std::collections::BTreeMap<i64, Vec<KeyBytes>>,
    /// Keys scheduled, for the state estimate.
    keys: usize,
}

impl CloseSchedule {
    /// Schedules `keys`, whose closing column (decoded from them) is
    /// `times`. A NULL time never closes.
    pub(crate) fn schedule(
        &mut self,
        keys: &[&[u8]],
        times: &ArrayRef,
        slack_us: i64,
    ) -> Result<()> {
        let times = timestamp_micros(times)?;
        for (i, key) in keys.iter().enumerate() {
            if times.is_valid(i) {
                self.push(times.value(i).saturating_add(slack_us), key);
            }
        }
        Ok(())
    }

    /// Schedules `key` to come out once the frontier reaches `at`.
    pub(crate) fn push(&mut self, at: i64, key: &[u8]) {
        self.at.entry(at).or_default().push(KeyBytes::new(key));
        self.keys += 1;
    }

    /// Takes out every key the frontier has reached. A key scheduled twice
    /// comes out twice.
    pub(crate) fn due(&mut self, frontier_us: i64) -> Vec<KeyBytes> {
        let later = match frontier_us.checked_add(1) {
            Some(next) => self.at.split_off(&next),
            None => std::collections::BTreeMap::new(),
        };
        let due: Vec<KeyBytes> = std::mem::replace(&mut self.at, later)
            .into_values()
            .flatten()
            .collect();
        self.keys -= due.len();
        due
    }

    /// Estimated bytes the schedule holds (a key and its share of a map
    /// entry each).
    pub(crate) fn bytes(&self) -> usize {
        self.keys * std::mem::size_of::<KeyBytes>() + self.at.len() * ENTRY_OVERHEAD_BYTES
    }
}

/// Which worker an operator instance runs on, out of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const SINGLE: Shard = Shard { index: 0, count: 1 };
}

pub trait Operator: Send {
    /// Processes a batch arriving on input `port`, pushing what changes
    /// downstream to `out`.
    fn on_batch(
        &mut self,
        port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()>;

    /// Called once, before the first batch (after a restart too): an
    /// operator whose output is not empty over empty inputs (a global
    /// aggregate, a VALUES list) emits it here.
    fn on_start(&mut self, _shard: Shard, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        Ok(())
    }

    /// Called when epoch `epoch` closes, after its last batch.
    fn on_barrier(&mut self, _epoch: u64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        Ok(())
    }

    /// Called first in every step with the wall clock (microseconds since
    /// the epoch), read once per step for all workers. Only an operator
    /// keeping rows within a trailing range of it uses it.
    fn on_clock(&mut self, _now_us: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        Ok(())
    }

    /// Called after `on_barrier` when the epoch moved the view's event-time
    /// frontier: no row read from now on has an event time below
    /// `frontier_us` (microseconds since the epoch), because the sources
    /// keep later events apart (docs/windows.md). An operator keeping
    /// windows frees those that can no longer change.
    fn on_frontier(&mut self, _frontier_us: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        Ok(())
    }

    /// Approximate bytes of state held.
    fn state_bytes(&self) -> usize {
        0
    }

    /// Writes the operator's state as of the barrier just passed, for a
    /// checkpoint. Required of every operator, so none can be added that a
    /// checkpoint silently leaves out; a stateless one writes nothing.
    fn checkpoint(&self, state: &mut StateWriter) -> Result<()>;

    /// Loads what [`Operator::checkpoint`] wrote into a fresh instance on
    /// the same shard, in place of `on_start` (whose output the checkpoint
    /// already reflects). `inputs` are the schemas of the input ports.
    fn restore(
        &mut self,
        shard: Shard,
        inputs: &[SchemaRef],
        state: &mut StateReader<'_>,
    ) -> Result<()>;

    /// Called once [`Operator::checkpoint`]'s state is stored as the base
    /// of an incremental chain: an operator whose state can be large starts
    /// keeping track of what changes from here on.
    fn track_changes(&mut self) {}

    /// For an incremental checkpoint: writes what changed since the last
    /// checkpoint (see [`Operator::track_changes`]) and returns `true`, or
    /// writes nothing and returns `false` when the operator only writes
    /// whole states (the caller then calls [`Operator::checkpoint`]).
    fn checkpoint_changes(&mut self, _state: &mut StateWriter) -> Result<bool> {
        Ok(false)
    }

    /// Applies what [`Operator::checkpoint_changes`] wrote to a state
    /// [`Operator::restore`] loaded (and to the changes applied after it).
    fn restore_changes(&mut self, _state: &mut StateReader<'_>) -> Result<()> {
        Err(crate::error::Error::Internal(
            "this operator keeps no incremental checkpoints".into(),
        ))
    }
}

/// `checkpoint` and `restore` of an operator that holds no state.
#[macro_export]
macro_rules! stateless_operator {
    () => {
        fn checkpoint(&self, _state: &mut $crate::dataflow::state::StateWriter) -> Result<()> {
            Ok(())
        }

        fn restore(
            &mut self,
            _shard: $crate::dataflow::operator::Shard,
            _inputs: &[datafusion::arrow::datatypes::SchemaRef],
            _state: &mut $crate::dataflow::state::StateReader<'_>,
        ) -> Result<()> {
            Ok(())
        }
    };
}

/// What every operator's checkpoint tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Checkpoints `op` and restores the instance `fresh` makes from it on
    /// `shard` with input schemas `inputs`, checking that it holds as many
    /// bytes and that no cut-short checkpoint restores. Returns the
    /// restored instance and the checkpoint; `what` names the case.
    pub fn round_trip(
        op: &dyn Operator,
        fresh: impl Fn() -> Box<dyn Operator>,
        shard: Shard,
        inputs: &[SchemaRef],
        what: &str,
    ) -> (Box<dyn Operator>, Vec<u8>) {
        let mut state = StateWriter::new();
        op.checkpoint(&mut state).unwrap();
        let bytes = state.into_bytes();
        let restore = |bytes: &[u8]| {
            let mut restored = fresh();
            let mut reader = StateReader::new(bytes);
            let restoring = restored.restore(shard, inputs, &mut reader);
            restoring.and_then(|()| reader.finish()).map(|()| restored)
        };
        let restored = restore(&bytes).unwrap();
        assert_eq!(restored.state_bytes(), op.state_bytes(), "{what}");
        for cut in 0..bytes.len() {
            assert!(restore(&bytes[..cut]).is_err(), "{what} cut at {cut}");
        }
        (restored, bytes)
    }
}
