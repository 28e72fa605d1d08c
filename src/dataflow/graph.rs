//! A dataflow graph: nodes in topological order (inputs before the nodes
//! that read them), the last node being the view's output. The graph is a
//! description; the runtime instantiates its operators once per worker.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use super::operator::{
    AggregateSpec, Filter, JoinSpec, Operator, Project, TopNSpec, Union, Values,
};
use crate::error::Result;

#[derive(Debug, Clone)]
pub enum NodeKind {
    /// Changes of a table or of another materialized view.
    Source {
        relation: String,
    },
    /// Repartitions rows by the hash of `keys`, so each worker sees every
    /// row of the keys it owns.
    Exchange {
        keys: Vec<Arc<dyn PhysicalExpr>>,
    },
    Filter(Filter),
    Project(Project),
    Union(Union),
    Values(Values),
    Aggregate(AggregateSpec),
    Join(JoinSpec),
    TopN(TopNSpec),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// Upstream nodes, one per input port.
    pub inputs: Vec<usize>,
    pub schema: SchemaRef,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Adds a node and returns its index.
    pub fn add(&mut self, kind: NodeKind, inputs: Vec<usize>, schema: SchemaRef) -> usize {
        self.nodes.push(Node {
            kind,
            inputs,
            schema,
        });
        self.nodes.len() - 1
    }

    pub fn schema_of(&self, node: usize) -> SchemaRef {
        Arc::clone(&self.nodes[node].schema)
    }

    pub fn output(&self) -> usize {
        self.nodes.len() - 1
    }

    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.nodes[self.output()].schema)
    }

    /// `(node, relation)` for every source node.
    pub fn sources(&self) -> impl Iterator<Item = (usize, &str)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.kind {
                NodeKind::Source { relation } => Some((i, relation.as_str())),
                _ => None,
            })
    }

    /// The tree of operators, output first: `(depth, node, description)`.
    pub fn explain_nodes(&self) -> Vec<(usize, usize, String)> {
        let mut lines = Vec::new();
        if !self.nodes.is_empty() {
            self.explain_node(self.output(), 0, &mut lines);
        }
        lines
    }

    fn explain_node(&self, node: usize, depth: usize, lines: &mut Vec<(usize, usize, String)>) {
        let n = &self.nodes[node];
        lines.push((depth, node, describe(&n.kind)));
        for input in &n.inputs {
            self.explain_node(*input, depth + 1, lines);
        }
    }
}

pub fn describe(kind: &NodeKind) -> String {
    match kind {
        NodeKind::Source { relation } => format!("Source: {relation}"),
        NodeKind::Exchange { keys } if keys.is_empty() => "Exchange: single worker".into(),
        NodeKind::Exchange { keys } => format!(
            "Exchange: hash({})",
            keys.iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        NodeKind::Filter(op) => op.describe(),
        NodeKind::Project(op) => op.describe(),
        NodeKind::Union(op) => op.describe(),
        NodeKind::Values(op) => op.describe(),
        NodeKind::Aggregate(op) => op.describe(),
        NodeKind::Join(op) => op.describe(),
        NodeKind::TopN(op) => op.describe(),
    }
}

/// A fresh operator for one worker; `None` for nodes the runtime handles
/// itself (sources and exchanges).
pub fn instantiate(kind: &NodeKind) -> Result<Option<Box<dyn Operator>>> {
    Ok(Some(match kind {
        NodeKind::Source { .. } | NodeKind::Exchange { .. } => return Ok(None),
        NodeKind::Filter(op) => Box::new(op.clone()),
        NodeKind::Project(op) => Box::new(op.clone()),
        NodeKind::Union(op) => Box::new(op.clone()),
        NodeKind::Values(op) => Box::new(op.clone()),
        NodeKind::Aggregate(spec) => spec.instantiate()?,
        NodeKind::Join(spec) => spec.instantiate()?,
        NodeKind::TopN(spec) => spec.instantiate()?,
    }))
}
