//! The incremental dataflow engine. Changes flow as [`batch::ChangeBatch`]es
//! (Arrow rows with weights) through a [`graph::Graph`] of operators, one
//! instance per worker thread ([`runtime::Runtime`]); stateful operators and
//! view outputs keep keyed state in [`arrangement::Arrangement`]s. The
//! [`planner`] lowers a DataFusion `LogicalPlan` into a graph.
//!
//! Map:
//! - `batch`       — change batches, consolidation, a literal syntax for tests.
//! - `row`         — row encoding of keys and rows; the key → worker hash.
//! - `arrangement` — weighted rows indexed by key.
//! - `expr`        — evaluating DataFusion physical expressions on batches.
//! - `operator`    — the `Operator` trait, and one file per operator.
//! - `graph`       — nodes, edges, EXPLAIN text.
//! - `runtime`     — worker threads, steps, exchanges.
//! - `planner`     — `LogicalPlan` → `Graph`, refusing what cannot be incremental.

pub mod arrangement;
pub mod batch;
pub mod expr;
pub mod frontier;
pub mod graph;
pub mod operator;
pub mod planner;
pub mod row;
pub mod runtime;
pub mod state;

pub use batch::ChangeBatch;
