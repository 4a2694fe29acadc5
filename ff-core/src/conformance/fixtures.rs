//! Builders for the specs cases submit: short to write, obviously valid.

use std::time::Duration;

use crate::execution::ExecutionSpec;
use crate::flow::{DependencyGroup, EdgeSpec, FlowPatch, FlowSpec, NodeSpec};
use crate::id::{Lane, NodeKey};
use crate::policy::RetryPolicy;

/// A node key from a literal of the case.
pub(crate) fn key(key: &str) -> NodeKey {
    NodeKey::new(key).expect("node keys written in the cases are valid")
}

/// A spec in `lane` whose payload is its own name (handy in failure messages).
pub(crate) fn spec(lane: &Lane, payload: &str) -> ExecutionSpec {
    ExecutionSpec::new(lane.clone(), payload.as_bytes().to_vec())
}

/// A retryable spec: `attempts` attempts, `backoff` between them.
pub(crate) fn retrying(lane: &Lane, attempts: u32, backoff: Duration) -> ExecutionSpec {
    spec(lane, "retrying").with_retry(RetryPolicy::fixed(attempts, backoff))
}

/// A flow graph under construction; every node runs in one lane.
#[derive(Clone, Debug)]
pub(crate) struct FlowBuilder {
    lane: Lane,
    spec: FlowSpec,
}

impl FlowBuilder {
    /// An empty flow whose nodes run in `lane`.
    pub(crate) fn new(lane: &Lane) -> Self {
        FlowBuilder {
            lane: lane.clone(),
            spec: FlowSpec::new(),
        }
    }

    /// Adds nodes with default specs (payload = key).
    pub(crate) fn nodes(mut self, keys: &[&str]) -> Self {
        for k in keys {
            self.spec = self.spec.node(NodeSpec::new(key(k), spec(&self.lane, k)));
        }
        self
    }

    /// Adds one node with a spec built by `build` from the default one.
    pub(crate) fn node_with(
        mut self,
        k: &str,
        build: impl FnOnce(ExecutionSpec) -> ExecutionSpec,
    ) -> Self {
        self.spec = self
            .spec
            .node(NodeSpec::new(key(k), build(spec(&self.lane, k))));
        self
    }

    /// Sets the dependency group of node `k` (added before).
    pub(crate) fn group(mut self, k: &str, group: DependencyGroup) -> Self {
        for node in &mut self.spec.nodes {
            if node.key.as_str() == k {
                node.group = group;
            }
        }
        self
    }

    /// Adds success edges `from → to`.
    pub(crate) fn edges(mut self, edges: &[(&str, &str)]) -> Self {
        for (from, to) in edges {
            self.spec = self.spec.edge(EdgeSpec::new(key(from), key(to)));
        }
        self
    }

    /// Adds one edge as given.
    pub(crate) fn edge(mut self, edge: EdgeSpec) -> Self {
        self.spec = self.spec.edge(edge);
        self
    }

    /// Adds a chain of nodes `keys[0] → keys[1] → …`.
    pub(crate) fn chain(self, keys: &[&str]) -> Self {
        let pairs: Vec<(&str, &str)> = keys.windows(2).map(|w| (w[0], w[1])).collect();
        self.nodes(keys).edges(&pairs)
    }

    /// The spec.
    pub(crate) fn build(self) -> FlowSpec {
        self.spec
    }
}

/// A patch of nodes (default specs in `lane`) and success edges.
pub(crate) fn patch(lane: &Lane, nodes: &[&str], edges: &[(&str, &str)]) -> FlowPatch {
    let mut patch = FlowPatch::new();
    for k in nodes {
        patch = patch.node(NodeSpec::new(key(k), spec(lane, k)));
    }
    for (from, to) in edges {
        patch = patch.edge(EdgeSpec::new(key(from), key(to)));
    }
    patch
}
