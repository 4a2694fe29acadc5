//! Flows: DAGs of executions (DESIGN §4).
//!
//! A flow is created with its whole graph in one atomic call ([`FlowSpec`]), so no node is
//! ever claimable before its edges exist. Nodes may be added to an open flow later
//! ([`FlowPatch`], dynamic fan-out) with the same atomicity; edges added that way must end at
//! a node added by the same call, so a patch can never create a cycle through existing nodes
//! nor change the dependencies of a node that may already have started.
//!
//! The structural checks (duplicate keys, unknown nodes, self-edges, duplicate edges, cycles,
//! quorum bounds, limits) are pure functions here, shared by every backend, so every backend
//! rejects the same inputs with the same errors before writing anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Conflict, EngineError};
use crate::execution::ExecutionSpec;
use crate::id::{ExecutionId, FlowId, NodeKey};
use crate::limits;
use crate::state::{FlowState, OutcomeBucket};

/// How an edge counts an upstream outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// Satisfied only when the upstream succeeded (the default).
    #[default]
    Success,
    /// A "finally" edge: satisfied by any terminal outcome of the upstream.
    Always,
}

impl EdgeKind {
    /// Whether an upstream that ended in `bucket` satisfies this edge.
    pub const fn satisfied_by(self, bucket: OutcomeBucket) -> bool {
        match self {
            EdgeKind::Success => matches!(bucket, OutcomeBucket::Success),
            EdgeKind::Always => true,
        }
    }

    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Success => "success",
            EdgeKind::Always => "always",
        }
    }
}

/// When a node's dependency group is satisfied, given its `n` incoming edges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy", content = "k")]
pub enum GroupPolicy {
    /// Every edge satisfied; impossible at the first edge that is not (the default).
    #[default]
    AllOf,
    /// One edge satisfied; impossible when every edge resolved without one.
    AnyOf,
    /// `k` edges satisfied; impossible once fewer than `k` can still be.
    Quorum(u32),
}

impl GroupPolicy {
    /// How many satisfied edges out of `incoming` satisfy the group: `n` for AllOf, 1 for
    /// AnyOf, `k` for Quorum(k).
    pub const fn required(self, incoming: u32) -> u32 {
        match self {
            GroupPolicy::AllOf => incoming,
            GroupPolicy::AnyOf => 1,
            GroupPolicy::Quorum(k) => k,
        }
    }

    /// The verdict of a group with `incoming` edges of which `satisfied` were satisfied and
    /// `unsatisfied` resolved without being satisfied.
    pub const fn evaluate(self, incoming: u32, satisfied: u32, unsatisfied: u32) -> GroupVerdict {
        let required = self.required(incoming);
        if satisfied >= required {
            GroupVerdict::Satisfied
        } else if unsatisfied > incoming.saturating_sub(required) {
            GroupVerdict::Impossible
        } else {
            GroupVerdict::Pending
        }
    }
}

/// Where a dependency group stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupVerdict {
    /// Not decided yet.
    Pending,
    /// Enough edges satisfied: the node becomes ready (or delayed).
    Satisfied,
    /// Can no longer be satisfied: the node is skipped.
    Impossible,
}

impl GroupVerdict {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            GroupVerdict::Pending => "pending",
            GroupVerdict::Satisfied => "satisfied",
            GroupVerdict::Impossible => "impossible",
        }
    }
}

/// What happens to still-unfinished upstreams once an AnyOf or Quorum group is satisfied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSatisfied {
    /// They keep running (the default).
    #[default]
    LetRun,
    /// They are cancelled (`Cancelled(GroupSatisfied)`), which does not fail the flow.
    CancelRemaining,
}

/// A node's dependency group over its incoming edges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DependencyGroup {
    /// When the group is satisfied.
    pub policy: GroupPolicy,
    /// What happens to unfinished upstreams once it is.
    pub on_satisfied: OnSatisfied,
}

impl DependencyGroup {
    /// All upstreams must succeed.
    pub const fn all_of() -> Self {
        DependencyGroup {
            policy: GroupPolicy::AllOf,
            on_satisfied: OnSatisfied::LetRun,
        }
    }

    /// One upstream must succeed.
    pub const fn any_of(on_satisfied: OnSatisfied) -> Self {
        DependencyGroup {
            policy: GroupPolicy::AnyOf,
            on_satisfied,
        }
    }

    /// `k` upstreams must succeed.
    pub const fn quorum(k: u32, on_satisfied: OnSatisfied) -> Self {
        DependencyGroup {
            policy: GroupPolicy::Quorum(k),
            on_satisfied,
        }
    }
}

/// One node of a flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeSpec {
    /// Unique within the flow.
    pub key: NodeKey,
    /// The execution it becomes.
    pub spec: ExecutionSpec,
    /// Its dependency group over its incoming edges (ignored for a node without any).
    pub group: DependencyGroup,
}

impl NodeSpec {
    /// A node with the default (AllOf) group.
    pub fn new(key: NodeKey, spec: ExecutionSpec) -> Self {
        NodeSpec {
            key,
            spec,
            group: DependencyGroup::default(),
        }
    }

    /// Sets the dependency group.
    pub fn with_group(mut self, group: DependencyGroup) -> Self {
        self.group = group;
        self
    }
}

/// One edge `from → to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EdgeSpec {
    /// Upstream node.
    pub from: NodeKey,
    /// Downstream node.
    pub to: NodeKey,
    /// How the upstream outcome counts.
    pub kind: EdgeKind,
    /// Whether the upstream's result is handed to the downstream's worker
    /// ([`crate::UpstreamInput`]).
    pub pass_result: bool,
}

impl EdgeSpec {
    /// A success edge that passes no data.
    pub fn new(from: NodeKey, to: NodeKey) -> Self {
        EdgeSpec {
            from,
            to,
            kind: EdgeKind::Success,
            pass_result: false,
        }
    }

    /// Makes it an `always` ("finally") edge.
    pub fn always(mut self) -> Self {
        self.kind = EdgeKind::Always;
        self
    }

    /// Passes the upstream's result to the downstream.
    pub fn passing_result(mut self) -> Self {
        self.pass_result = true;
        self
    }
}

/// A whole flow graph, created atomically by `create_flow`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FlowSpec {
    /// The flow's id. `create_flow` is idempotent on it: creating an id that exists returns
    /// the existing flow's nodes.
    pub id: FlowId,
    /// The nodes, at least one.
    pub nodes: Vec<NodeSpec>,
    /// The edges between them.
    pub edges: Vec<EdgeSpec>,
}

impl FlowSpec {
    /// An empty flow with a fresh id.
    pub fn new() -> Self {
        FlowSpec::with_id(FlowId::new())
    }

    /// An empty flow with the given id.
    pub fn with_id(id: FlowId) -> Self {
        FlowSpec {
            id,
            nodes: Vec::new(),
            edges: Vec::new(),
        }
    }

    /// Adds a node.
    pub fn node(mut self, node: NodeSpec) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds an edge.
    pub fn edge(mut self, edge: EdgeSpec) -> Self {
        self.edges.push(edge);
        self
    }

    /// Validates the whole graph (see the module docs). Every backend calls this before
    /// writing anything.
    pub fn validate(&self) -> Result<GraphShape, EngineError> {
        if self.nodes.is_empty() {
            return Err(EngineError::validation(
                "nodes",
                "a flow needs at least one node",
            ));
        }
        validate_graph(&self.nodes, &self.edges, &|_| false)
    }
}

impl Default for FlowSpec {
    fn default() -> Self {
        FlowSpec::new()
    }
}

/// Nodes and edges added atomically to an open flow by `add_nodes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FlowPatch {
    /// The new nodes, at least one.
    pub nodes: Vec<NodeSpec>,
    /// New edges. Each must end at a node of this patch; it may start at an existing node
    /// of the flow or at a new one. An edge from an existing node that has already finished
    /// is applied as soon as the patch lands.
    pub edges: Vec<EdgeSpec>,
}

impl FlowPatch {
    /// An empty patch.
    pub fn new() -> Self {
        FlowPatch::default()
    }

    /// Adds a node.
    pub fn node(mut self, node: NodeSpec) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds an edge.
    pub fn edge(mut self, edge: EdgeSpec) -> Self {
        self.edges.push(edge);
        self
    }

    /// Validates the patch's shape. Edges may start at keys outside the patch; those are
    /// returned in [`GraphShape::external_upstreams`] and the backend must check that each
    /// exists in the flow ([`EngineError::NotFound`] of kind `Node` otherwise), and that none
    /// of the patch's keys already exists ([`Conflict::DuplicateNode`]).
    pub fn validate(&self) -> Result<GraphShape, EngineError> {
        if self.nodes.is_empty() {
            return Err(EngineError::validation(
                "nodes",
                "a patch needs at least one node",
            ));
        }
        validate_graph(&self.nodes, &self.edges, &|_| true)
    }
}

/// What validation learned about a graph, for backends to build from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphShape {
    /// Incoming edge count per node, in node order.
    pub incoming: Vec<u32>,
    /// Upstream keys that are not nodes of the graph itself (patches only), sorted.
    pub external_upstreams: BTreeSet<NodeKey>,
    /// Node indices in a topological order (upstreams first).
    pub topological_order: Vec<usize>,
}

/// The structural checks shared by [`FlowSpec::validate`] and [`FlowPatch::validate`].
/// `external_ok(key)` says whether an upstream key outside `nodes` is allowed.
fn validate_graph(
    nodes: &[NodeSpec],
    edges: &[EdgeSpec],
    external_ok: &dyn Fn(&NodeKey) -> bool,
) -> Result<GraphShape, EngineError> {
    if nodes.len() > limits::MAX_NODES_PER_CALL {
        return Err(EngineError::validation(
            "nodes",
            format!(
                "{} nodes is more than the limit of {} per call",
                nodes.len(),
                limits::MAX_NODES_PER_CALL
            ),
        ));
    }
    if edges.len() > limits::MAX_EDGES_PER_CALL {
        return Err(EngineError::validation(
            "edges",
            format!(
                "{} edges is more than the limit of {} per call",
                edges.len(),
                limits::MAX_EDGES_PER_CALL
            ),
        ));
    }

    let mut index: HashMap<&NodeKey, usize> = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        if index.insert(&node.key, i).is_some() {
            return Err(EngineError::Conflict(Conflict::DuplicateNode {
                key: node.key.clone(),
            }));
        }
        node.spec.validate(&format!("nodes[{i}].spec."))?;
        if node.spec.idempotency_key.is_some() {
            return Err(EngineError::validation(
                format!("nodes[{i}].spec.idempotency_key"),
                "flow members cannot carry an idempotency key; create_flow is idempotent on the flow id",
            ));
        }
    }

    let mut incoming = vec![0u32; nodes.len()];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut seen: HashSet<(&NodeKey, &NodeKey)> = HashSet::with_capacity(edges.len());
    let mut external_upstreams = BTreeSet::new();
    for (i, edge) in edges.iter().enumerate() {
        let Some(&to) = index.get(&edge.to) else {
            return Err(EngineError::validation(
                format!("edges[{i}].to"),
                format!("node {} is not a node of this call", edge.to),
            ));
        };
        if edge.from == edge.to {
            return Err(EngineError::validation(
                format!("edges[{i}]"),
                format!("self-edge on node {}", edge.from),
            ));
        }
        if !seen.insert((&edge.from, &edge.to)) {
            return Err(EngineError::Conflict(Conflict::DuplicateEdge {
                from: edge.from.clone(),
                to: edge.to.clone(),
            }));
        }
        match index.get(&edge.from) {
            Some(&from) => downstream[from].push(to),
            None if external_ok(&edge.from) => {
                external_upstreams.insert(edge.from.clone());
            }
            None => {
                return Err(EngineError::validation(
                    format!("edges[{i}].from"),
                    format!("node {} is not a node of this flow", edge.from),
                ));
            }
        }
        incoming[to] += 1;
    }

    for (i, node) in nodes.iter().enumerate() {
        if let GroupPolicy::Quorum(k) = node.group.policy
            && (k == 0 || k > incoming[i])
        {
            return Err(EngineError::validation(
                format!("nodes[{i}].group"),
                format!(
                    "quorum {k} on node {} must be between 1 and its {} incoming edges",
                    node.key, incoming[i]
                ),
            ));
        }
    }

    let topological_order = topological_order(nodes, &downstream)?;
    Ok(GraphShape {
        incoming,
        external_upstreams,
        topological_order,
    })
}

/// Kahn's algorithm; on a cycle, reports one cycle's nodes in order.
fn topological_order(
    nodes: &[NodeSpec],
    downstream: &[Vec<usize>],
) -> Result<Vec<usize>, EngineError> {
    // Only edges between nodes of this graph count here (external upstreams cannot be part of
    // a cycle, since no edge of the graph ends outside it).
    let mut remaining: Vec<u32> = vec![0; nodes.len()];
    for targets in downstream {
        for &to in targets {
            remaining[to] += 1;
        }
    }
    let mut queue: Vec<usize> = (0..nodes.len()).filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(node) = queue.pop() {
        order.push(node);
        for &to in &downstream[node] {
            remaining[to] -= 1;
            if remaining[to] == 0 {
                queue.push(to);
            }
        }
    }
    if order.len() == nodes.len() {
        return Ok(order);
    }
    // Every node left has an incoming edge from another node left: walk backwards along
    // such edges until a node repeats, which closes a cycle.
    let mut upstream_left: Vec<Option<usize>> = vec![None; nodes.len()];
    for (from, targets) in downstream.iter().enumerate() {
        if remaining[from] == 0 {
            continue;
        }
        for &to in targets {
            if remaining[to] > 0 {
                upstream_left[to] = Some(from);
            }
        }
    }
    let start = (0..nodes.len()).find(|&i| remaining[i] > 0).unwrap_or(0);
    let mut position: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut current = start;
    loop {
        if let Some(&cycle_start) = position.get(&current) {
            let mut cycle: Vec<NodeKey> = path[cycle_start..]
                .iter()
                .map(|&i: &usize| nodes[i].key.clone())
                .collect();
            // The walk went upstream; report the cycle in edge direction.
            cycle.reverse();
            return Err(EngineError::Conflict(Conflict::Cycle { nodes: cycle }));
        }
        position.insert(current, path.len());
        path.push(current);
        match upstream_left[current] {
            Some(upstream) => current = upstream,
            // Cannot happen (every node left has an upstream left); report what is left.
            None => {
                let nodes = (0..nodes.len())
                    .filter(|&i| remaining[i] > 0)
                    .map(|i| nodes[i].key.clone())
                    .collect();
                return Err(EngineError::Conflict(Conflict::Cycle { nodes }));
            }
        }
    }
}

/// The answer to `create_flow` and `add_nodes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedFlow {
    /// The flow.
    pub flow_id: FlowId,
    /// False when the call was a repeat of one that already landed; `nodes` are then the
    /// existing ones.
    pub created: bool,
    /// The execution id of every node of the call, by key.
    pub nodes: BTreeMap<NodeKey, ExecutionId>,
}

impl CreatedFlow {
    /// The execution id of `key`, if it was part of the call.
    pub fn id(&self, key: &NodeKey) -> Option<ExecutionId> {
        self.nodes.get(key).copied()
    }
}

/// Which members `cancel_flow` cancels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelFlowMode {
    /// Every unfinished member, running ones included (their workers are fenced out).
    #[default]
    CancelAll,
    /// Members that have not started (blocked, delayed, ready); running ones finish.
    CancelPending,
}

/// The answer to `cancel_flow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelFlowOutcome {
    /// Members this call cancelled.
    pub cancelled: u32,
    /// Members the backend will cancel shortly through its cancel backlog (large flows);
    /// none of them can be claimed meanwhile.
    pub deferred: u32,
    /// The flow's state after the call.
    pub state: FlowState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Lane;

    fn key(k: &str) -> NodeKey {
        NodeKey::new(k).unwrap()
    }

    fn node(k: &str) -> NodeSpec {
        NodeSpec::new(key(k), ExecutionSpec::new(Lane::new("l").unwrap(), vec![]))
    }

    fn edge(a: &str, b: &str) -> EdgeSpec {
        EdgeSpec::new(key(a), key(b))
    }

    #[test]
    fn group_policies_follow_the_design() {
        use GroupVerdict::*;
        assert_eq!(GroupPolicy::AllOf.evaluate(3, 3, 0), Satisfied);
        assert_eq!(GroupPolicy::AllOf.evaluate(3, 2, 0), Pending);
        assert_eq!(GroupPolicy::AllOf.evaluate(3, 0, 1), Impossible);
        assert_eq!(GroupPolicy::AnyOf.evaluate(3, 1, 0), Satisfied);
        assert_eq!(GroupPolicy::AnyOf.evaluate(3, 0, 2), Pending);
        assert_eq!(GroupPolicy::AnyOf.evaluate(3, 0, 3), Impossible);
        assert_eq!(GroupPolicy::Quorum(2).evaluate(4, 2, 2), Satisfied);
        assert_eq!(GroupPolicy::Quorum(2).evaluate(4, 1, 2), Pending);
        assert_eq!(GroupPolicy::Quorum(2).evaluate(4, 1, 3), Impossible);
        assert!(EdgeKind::Always.satisfied_by(OutcomeBucket::Failure));
        assert!(!EdgeKind::Success.satisfied_by(OutcomeBucket::Skip));
    }

    #[test]
    fn valid_diamond() {
        let spec = FlowSpec::new()
            .node(node("a"))
            .node(node("b"))
            .node(node("c"))
            .node(node("d"))
            .edge(edge("a", "b"))
            .edge(edge("a", "c"))
            .edge(edge("b", "d"))
            .edge(edge("c", "d"));
        let shape = spec.validate().unwrap();
        assert_eq!(shape.incoming, vec![0, 1, 1, 2]);
        let pos = |i: usize| {
            shape
                .topological_order
                .iter()
                .position(|&n| n == i)
                .unwrap()
        };
        assert!(pos(0) < pos(1) && pos(1) < pos(3) && pos(2) < pos(3));
    }

    #[test]
    fn cycles_are_reported_with_their_nodes() {
        let spec = FlowSpec::new()
            .node(node("root"))
            .node(node("a"))
            .node(node("b"))
            .node(node("c"))
            .edge(edge("root", "a"))
            .edge(edge("a", "b"))
            .edge(edge("b", "c"))
            .edge(edge("c", "a"));
        match spec.validate() {
            Err(EngineError::Conflict(Conflict::Cycle { nodes })) => {
                let names: Vec<&str> = nodes.iter().map(NodeKey::as_str).collect();
                assert_eq!(names.len(), 3);
                // In edge direction, starting anywhere on the cycle.
                let rotations = [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]];
                assert!(rotations.iter().any(|r| r[..] == names[..]), "{names:?}");
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
    }

    #[test]
    fn structural_errors() {
        let dup_node = FlowSpec::new().node(node("a")).node(node("a"));
        assert!(matches!(
            dup_node.validate(),
            Err(EngineError::Conflict(Conflict::DuplicateNode { .. }))
        ));
        let self_edge = FlowSpec::new().node(node("a")).edge(edge("a", "a"));
        assert_eq!(
            self_edge.validate().unwrap_err().validation_field(),
            Some("edges[0]")
        );
        let unknown = FlowSpec::new().node(node("a")).edge(edge("x", "a"));
        assert_eq!(
            unknown.validate().unwrap_err().validation_field(),
            Some("edges[0].from")
        );
        let unknown_to = FlowSpec::new().node(node("a")).edge(edge("a", "x"));
        assert_eq!(
            unknown_to.validate().unwrap_err().validation_field(),
            Some("edges[0].to")
        );
        let dup_edge = FlowSpec::new()
            .node(node("a"))
            .node(node("b"))
            .edge(edge("a", "b"))
            .edge(edge("a", "b"));
        assert!(matches!(
            dup_edge.validate(),
            Err(EngineError::Conflict(Conflict::DuplicateEdge { .. }))
        ));
        let quorum = FlowSpec::new()
            .node(node("a"))
            .node(node("b").with_group(DependencyGroup::quorum(2, OnSatisfied::LetRun)))
            .edge(edge("a", "b"));
        assert_eq!(
            quorum.validate().unwrap_err().validation_field(),
            Some("nodes[1].group")
        );
        let quorum_zero = FlowSpec::new()
            .node(node("a"))
            .node(node("b").with_group(DependencyGroup::quorum(0, OnSatisfied::LetRun)))
            .edge(edge("a", "b"));
        assert_eq!(
            quorum_zero.validate().unwrap_err().validation_field(),
            Some("nodes[1].group")
        );
        assert_eq!(
            FlowSpec::new().validate().unwrap_err().validation_field(),
            Some("nodes")
        );
    }

    #[test]
    fn patches_may_start_at_existing_nodes_only() {
        let patch = FlowPatch::new()
            .node(node("child-1"))
            .node(node("child-2"))
            .edge(edge("parent", "child-1"))
            .edge(edge("child-1", "child-2"));
        let shape = patch.validate().unwrap();
        assert_eq!(shape.external_upstreams, [key("parent")].into());
        let into_existing = FlowPatch::new().node(node("n")).edge(edge("n", "parent"));
        assert_eq!(
            into_existing.validate().unwrap_err().validation_field(),
            Some("edges[0].to")
        );
    }
}
