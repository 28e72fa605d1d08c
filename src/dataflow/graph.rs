//! A dataflow graph: nodes in topological order (inputs before the nodes
//! that read them), the last node being the view's output. The graph is a
//! description; the runtime instantiates its operators once per worker.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use super::operator::{
    AggregateSpec, Filter, JoinSpec, Operator, OverSpec, Project, SessionSpec, TemporalSpec,
    TopNSpec, Union, Values,
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
    /// Rows within a trailing range of the wall clock.
    Temporal(TemporalSpec),
    /// Rows with the bounds of their session appended.
    Session(SessionSpec),
    Project(Project),
    Union(Union),
    Values(Values),
    Aggregate(AggregateSpec),
    Join(JoinSpec),
    TopN(TopNSpec),
    Over(OverSpec),
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

    /// Whether any node keeps rows within a trailing range of the clock:
    /// such a graph must be stepped as time passes.
    pub fn is_temporal(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| matches!(n.kind, NodeKind::Temporal(_)))
    }

    /// Whether any node lets go of closed windows: only such a graph needs
    /// the event-time frontier.
    pub fn closes_windows(&self) -> bool {
        self.nodes.iter().any(|n| match &n.kind {
            NodeKind::Aggregate(spec) => spec.close.is_some(),
            NodeKind::Join(spec) => spec.close.is_some() || spec.expire.iter().any(Option::is_some),
            NodeKind::TopN(spec) => spec.close.is_some(),
            NodeKind::Over(spec) => spec.close_slack_us.is_some(),
            NodeKind::Session(spec) => spec.close_slack_us.is_some(),
            _ => false,
        })
    }

    /// Marks each aggregate whose input only ever grows (`is_stream` says
    /// which relations are append-only streams): such an aggregate keeps
    /// one value per group for min, max, first_value and last_value, and
    /// only the prefix a view reads of an ordered array_agg.
    pub fn mark_append_only(&mut self, is_stream: impl Fn(&str) -> bool) {
        for node in 0..self.nodes.len() {
            if !matches!(self.nodes[node].kind, NodeKind::Aggregate(_)) {
                continue;
            }
            let input = self.nodes[node].inputs[0];
            let append_only = self.appends_only(input, &is_stream);
            if let NodeKind::Aggregate(spec) = &mut self.nodes[node].kind {
                spec.append_only = append_only;
            }
        }
    }

    /// Whether `node` emits insertions only: a stream, through row-by-row
    /// operators and the stream side of lookup joins (which never revise
    /// what they joined).
    fn appends_only(&self, node: usize, is_stream: &impl Fn(&str) -> bool) -> bool {
        let n = &self.nodes[node];
        match &n.kind {
            NodeKind::Source { relation } => is_stream(relation),
            NodeKind::Exchange { .. }
            | NodeKind::Filter(_)
            | NodeKind::Project(_)
            | NodeKind::Union(_) => n.inputs.iter().all(|i| self.appends_only(*i, is_stream)),
            NodeKind::Join(spec) if spec.lookup => self.appends_only(n.inputs[0], is_stream),
            _ => false,
        }
    }

    /// The relations `node` reads when only row-by-row operators (filters,
    /// projections, unions, exchanges) lie in between, so that it changes
    /// only as they do: `None` when anything holding state does.
    pub fn row_by_row_sources(&self, node: usize) -> Option<Vec<&str>> {
        let n = &self.nodes[node];
        match &n.kind {
            NodeKind::Source { relation } => Some(vec![relation.as_str()]),
            NodeKind::Exchange { .. }
            | NodeKind::Filter(_)
            | NodeKind::Project(_)
            | NodeKind::Union(_) => {
                let mut relations = Vec::new();
                for input in &n.inputs {
                    relations.extend(self.row_by_row_sources(*input)?);
                }
                Some(relations)
            }
            _ => None,
        }
    }

    /// The lookup joins: `(node, left input, right input)`.
    pub fn lookup_joins(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match (&n.kind, n.inputs.as_slice()) {
                (NodeKind::Join(spec), [left, right]) if spec.lookup => Some((i, *left, *right)),
                _ => None,
            })
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

/// One node's EXPLAIN line, with DataFusion's internal column names made
/// readable: `count(Int64(1))` is `count(*)`, and a window column named
/// after its whole `OVER (…)` clause is `row_number()`.
pub fn describe(kind: &NodeKind) -> String {
    readable(&describe_raw(kind))
}

fn readable(text: &str) -> String {
    let text = text.replace("count(Int64(1))", "count(*)");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("row_number() ") {
        let (head, tail) = rest.split_at(at + "row_number()".len());
        out.push_str(head);
        let frame_end = ["CURRENT ROW", "UNBOUNDED FOLLOWING"]
            .iter()
            .filter_map(|end| tail.find(end).map(|i| i + end.len()))
            .min();
        match frame_end {
            Some(end) if tail.starts_with(" PARTITION BY") || tail.starts_with(" ORDER BY") => {
                rest = &tail[end..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

fn describe_raw(kind: &NodeKind) -> String {
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
        NodeKind::Temporal(spec) => spec.describe(),
        NodeKind::Session(spec) => spec.describe(),
        NodeKind::Project(op) => op.describe(),
        NodeKind::Union(op) => op.describe(),
        NodeKind::Values(op) => op.describe(),
        NodeKind::Aggregate(op) => op.describe(),
        NodeKind::Join(op) => op.describe(),
        NodeKind::TopN(op) => op.describe(),
        NodeKind::Over(op) => op.describe(),
    }
}

/// A fresh operator for one worker; `None` for nodes the runtime handles
/// itself (sources and exchanges).
pub fn instantiate(kind: &NodeKind) -> Result<Option<Box<dyn Operator>>> {
    Ok(Some(match kind {
        NodeKind::Source { .. } | NodeKind::Exchange { .. } => return Ok(None),
        NodeKind::Filter(op) => Box::new(op.clone()),
        NodeKind::Temporal(spec) => spec.instantiate()?,
        NodeKind::Session(spec) => spec.instantiate()?,
        NodeKind::Project(op) => Box::new(op.clone()),
        NodeKind::Union(op) => Box::new(op.clone()),
        NodeKind::Values(op) => Box::new(op.clone()),
        NodeKind::Aggregate(spec) => spec.instantiate()?,
        NodeKind::Join(spec) => spec.instantiate()?,
        NodeKind::TopN(spec) => spec.instantiate()?,
        NodeKind::Over(spec) => spec.instantiate()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn internal_names_read_as_sql() {
        assert_eq!(
            readable("Project: count(Int64(1))@1 AS n, CAST(row_number() PARTITION BY [t.k] ORDER BY [t.v ASC NULLS LAST] RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW@3 AS Int64) AS rn"),
            "Project: count(*)@1 AS n, CAST(row_number()@3 AS Int64) AS rn"
        );
        assert_eq!(readable("Filter: x@0 > 1"), "Filter: x@0 > 1");
    }
}
