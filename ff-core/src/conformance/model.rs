//! A pure model of one flow's life (DESIGN §3–4), for the model-based conformance test.
//!
//! It is deliberately small and independent of every backend: plain vectors indexed by node,
//! a clock in milliseconds that moves only when told, and the rules of the design written out
//! one by one. After each operation the model is *settled*: every completion has been
//! cascaded, which is what a backend looks like after the engine's dispatch loop drained it.
//!
//! Where the contract leaves the outcome open (the order in which one operation's several
//! terminal transitions cascade can decide who a `CancelRemaining` group cancels; a retry
//! scheduled in a flow whose cancel was requested; a group of an already-finished node firing
//! with `CancelRemaining`), the model records an *ambiguity* and the test stops comparing that
//! run: it only ever checks what the contract pins down.

use std::fmt;

use crate::execution::CancelOutcome;
use crate::flow::{
    CancelFlowMode, DependencyGroup, EdgeKind, GroupPolicy, GroupVerdict, OnSatisfied,
};
use crate::state::{CancelSource, EndReason, ExecutionState, FlowState};

/// The lease TTL of every claim in the model test, in ms. With advances that are multiples of
/// 10 ms and backoffs/delays of odd multiples of 5 ms, no deadline ever falls exactly on the
/// clock, so `<` versus `<=` at a boundary never matters.
pub const LEASE_TTL_MS: u64 = 1_005;

/// One node of a generated graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeParams {
    /// Its dependency group (ignored without incoming edges).
    pub group: DependencyGroup,
    /// Attempts allowed (1–3).
    pub max_attempts: u32,
    /// Fixed backoff between attempts, ms.
    pub backoff_ms: u64,
    /// Initial delay once eligible, ms.
    pub delay_ms: u64,
}

/// One edge of a generated graph (`from < to`, so graphs are acyclic by construction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeParams {
    /// Upstream node index.
    pub from: usize,
    /// Downstream node index.
    pub to: usize,
    /// Edge kind.
    pub kind: EdgeKind,
    /// Whether the upstream result is passed.
    pub pass_result: bool,
}

/// A generated flow graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    /// Nodes, keyed `n<index>`.
    pub nodes: Vec<NodeParams>,
    /// Edges, in creation order.
    pub edges: Vec<EdgeParams>,
}

impl Graph {
    /// The key of node `i`.
    pub fn key(i: usize) -> String {
        format!("n{i}")
    }

    /// Indices of the edges into `node`, in edge order.
    pub fn incoming(&self, node: usize) -> Vec<usize> {
        (0..self.edges.len())
            .filter(|&e| self.edges[e].to == node)
            .collect()
    }

    /// Indices of the edges out of `node`, in edge order.
    pub fn outgoing(&self, node: usize) -> Vec<usize> {
        (0..self.edges.len())
            .filter(|&e| self.edges[e].from == node)
            .collect()
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph of {} nodes:", self.nodes.len())?;
        for (i, n) in self.nodes.iter().enumerate() {
            let group = match n.group.policy {
                GroupPolicy::AllOf => "all_of".to_string(),
                GroupPolicy::AnyOf => "any_of".to_string(),
                GroupPolicy::Quorum(k) => format!("quorum({k})"),
            };
            let on = match n.group.on_satisfied {
                OnSatisfied::LetRun => "",
                OnSatisfied::CancelRemaining => "+cancel_remaining",
            };
            writeln!(
                f,
                "  {}: {group}{on}, attempts {}, backoff {} ms, delay {} ms",
                Graph::key(i),
                n.max_attempts,
                n.backoff_ms,
                n.delay_ms
            )?;
        }
        for e in &self.edges {
            writeln!(
                f,
                "  {} -> {}{}{}",
                Graph::key(e.from),
                Graph::key(e.to),
                if e.kind == EdgeKind::Always {
                    " [always]"
                } else {
                    ""
                },
                if e.pass_result { " [pass]" } else { "" }
            )?;
        }
        Ok(())
    }
}

/// The model's view of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its state.
    pub state: ExecutionState,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// Attempts started.
    pub attempts: u32,
    /// For `delayed`: when it becomes claimable.
    pub available_at: Option<u64>,
    /// For `running`: when its lease expires.
    pub lease_expires_at: Option<u64>,
    /// Its result, once succeeded.
    pub result: Option<Vec<u8>>,
}

/// The model's view of one dependency group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    /// Incoming edges.
    pub incoming: u32,
    /// Applied edges that were satisfied.
    pub satisfied: u32,
    /// Applied edges that were not.
    pub unsatisfied: u32,
    /// The verdict, decided once.
    pub verdict: GroupVerdict,
}

/// What a worker call should answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteExpectation {
    /// It succeeds; for `fail`, with a retry at this time (`Some`) or final (`None`).
    Accepted(Option<u64>),
    /// The lease has expired by the backend clock: `Fenced(LeaseExpired)`, nothing changes.
    LeaseExpired,
}

/// One flow in the model.
#[derive(Clone, Debug)]
pub struct FlowModel {
    graph: Graph,
    now: u64,
    members: Vec<Member>,
    applied: Vec<bool>,
    groups: Vec<Group>,
    cancel_requested: bool,
    /// Per node: a passing edge from a succeeded upstream was applied after the group was
    /// decided, so whether the claim's inputs include it is not pinned down.
    late_inputs: Vec<bool>,
    /// Completions not cascaded yet, oldest first.
    queue: Vec<usize>,
    /// Nodes transitioned directly by the current operation.
    batch: Vec<usize>,
    ambiguity: Option<String>,
}

impl FlowModel {
    /// The flow right after `create_flow` at time `now`.
    pub fn new(graph: Graph, now: u64) -> Self {
        let n = graph.nodes.len();
        let groups = (0..n)
            .map(|i| Group {
                incoming: u32::try_from(graph.incoming(i).len()).unwrap_or(u32::MAX),
                satisfied: 0,
                unsatisfied: 0,
                verdict: GroupVerdict::Pending,
            })
            .collect();
        let mut model = FlowModel {
            members: vec![
                Member {
                    state: ExecutionState::Blocked,
                    end_reason: None,
                    attempts: 0,
                    available_at: None,
                    lease_expires_at: None,
                    result: None,
                };
                n
            ],
            applied: vec![false; graph.edges.len()],
            groups,
            cancel_requested: false,
            late_inputs: vec![false; n],
            queue: Vec::new(),
            batch: Vec::new(),
            ambiguity: None,
            graph,
            now,
        };
        for i in 0..n {
            if model.groups[i].incoming == 0 {
                model.make_eligible(i);
            }
        }
        model
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The model clock, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Every member, by node index.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every group, by node index.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Whether edge `e` has been applied.
    pub fn applied(&self, e: usize) -> bool {
        self.applied[e]
    }

    /// Whether `cancel_flow` was called.
    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested
    }

    /// Why the run can no longer be compared, if it cannot.
    pub fn ambiguity(&self) -> Option<&str> {
        self.ambiguity.as_deref()
    }

    /// `(total, terminal, failing)`.
    pub fn counts(&self) -> (u32, u32, u32) {
        let count = |f: &dyn Fn(&Member) -> bool| {
            u32::try_from(self.members.iter().filter(|m| f(m)).count()).unwrap_or(u32::MAX)
        };
        (
            count(&|_| true),
            count(&|m| m.state.is_terminal()),
            count(&|m| m.end_reason.is_some_and(EndReason::fails_flow)),
        )
    }

    /// The flow state (DESIGN §4).
    pub fn flow_state(&self) -> FlowState {
        let (total, terminal, failing) = self.counts();
        if terminal < total {
            FlowState::Running
        } else {
            FlowState::finished(self.cancel_requested, failing > 0)
        }
    }

    /// Members in `state`, by index.
    pub fn in_state(&self, state: ExecutionState) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].state == state)
            .collect()
    }

    /// The inputs a claim of `node` must carry: `(upstream, result)` along passing edges from
    /// succeeded upstreams, in edge order; `None` when that is not pinned down.
    pub fn expected_inputs(&self, node: usize) -> Option<Vec<(usize, Option<Vec<u8>>)>> {
        if self.late_inputs[node] {
            return None;
        }
        Some(
            self.graph
                .incoming(node)
                .into_iter()
                .map(|e| &self.graph.edges[e])
                .filter(|e| {
                    e.pass_result && self.members[e.from].state == ExecutionState::Succeeded
                })
                .map(|e| (e.from, self.members[e.from].result.clone()))
                .collect(),
        )
    }

    // ------------------------------------------------------------ operations

    /// Claims everything ready; returns the claimed nodes.
    pub fn claim_all(&mut self) -> Vec<usize> {
        let ready = self.in_state(ExecutionState::Ready);
        for &i in &ready {
            let m = &mut self.members[i];
            m.state = ExecutionState::Running;
            m.attempts += 1;
            m.lease_expires_at = Some(self.now + LEASE_TTL_MS);
        }
        ready
    }

    fn lease_live(&self, node: usize) -> bool {
        self.members[node]
            .lease_expires_at
            .is_some_and(|t| self.now < t)
    }

    /// A worker completes running `node` with `result`.
    pub fn complete(&mut self, node: usize, result: Option<Vec<u8>>) -> WriteExpectation {
        if !self.lease_live(node) {
            return WriteExpectation::LeaseExpired;
        }
        self.members[node].result = result;
        self.end(node, EndReason::Completed);
        self.settle();
        WriteExpectation::Accepted(None)
    }

    /// A worker fails running `node`.
    pub fn fail(&mut self, node: usize, retryable: bool) -> WriteExpectation {
        if !self.lease_live(node) {
            return WriteExpectation::LeaseExpired;
        }
        let retry_at = self.failed_attempt(node, retryable, EndReason::NonRetryable);
        self.settle();
        WriteExpectation::Accepted(retry_at)
    }

    /// A failed attempt of running `node`: a retry (returns its time) or the end.
    fn failed_attempt(
        &mut self,
        node: usize,
        retryable: bool,
        final_reason: EndReason,
    ) -> Option<u64> {
        let params = self.graph.nodes[node].clone();
        let attempts_left = self.members[node].attempts < params.max_attempts;
        if retryable && attempts_left && self.cancel_requested {
            // A flow whose cancel was requested does not retry: the member is cancelled.
            self.end(node, EndReason::Cancelled(CancelSource::Flow));
            return None;
        }
        if retryable && attempts_left {
            let at = self.now + params.backoff_ms;
            let m = &mut self.members[node];
            m.state = ExecutionState::Delayed;
            m.available_at = Some(at);
            m.lease_expires_at = None;
            Some(at)
        } else {
            let reason = if retryable {
                EndReason::AttemptsExhausted
            } else {
                final_reason
            };
            self.end(node, reason);
            None
        }
    }

    /// `cancel_execution(node)`.
    pub fn cancel(&mut self, node: usize) -> CancelOutcomeModel {
        let m = &self.members[node];
        if m.state.is_terminal() {
            return CancelOutcomeModel::AlreadyTerminal(m.state, m.end_reason);
        }
        let previous = m.state;
        self.end(node, EndReason::Cancelled(CancelSource::User));
        self.settle();
        CancelOutcomeModel::Cancelled(previous)
    }

    /// `cancel_flow(mode)` on a running flow; returns how many members it cancelled.
    pub fn cancel_flow(&mut self, mode: CancelFlowMode) -> u32 {
        self.cancel_requested = true;
        let targets: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                let s = self.members[i].state;
                !s.is_terminal()
                    && (mode == CancelFlowMode::CancelAll || s != ExecutionState::Running)
            })
            .collect();
        self.batch = targets.clone();
        for &i in &targets {
            self.end(i, EndReason::Cancelled(CancelSource::Flow));
        }
        self.settle();
        u32::try_from(targets.len()).unwrap_or(u32::MAX)
    }

    /// Moves the clock.
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    /// The delayed-promotion scanner.
    pub fn promote(&mut self) {
        for m in &mut self.members {
            if m.state == ExecutionState::Delayed && m.available_at.is_some_and(|t| t <= self.now) {
                m.state = ExecutionState::Ready;
                m.available_at = None;
            }
        }
    }

    /// The lease-expiry scanner: every running member whose lease expired has a failed
    /// attempt.
    pub fn expire_leases(&mut self) {
        let expired: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].state == ExecutionState::Running && !self.lease_live(i))
            .collect();
        self.batch = expired.clone();
        for i in expired {
            self.failed_attempt(i, true, EndReason::AttemptsExhausted);
        }
        self.settle();
    }

    // ------------------------------------------------------------ transitions

    fn ambiguous(&mut self, why: String) {
        if self.ambiguity.is_none() {
            self.ambiguity = Some(why);
        }
    }

    fn make_eligible(&mut self, node: usize) {
        let delay = self.graph.nodes[node].delay_ms;
        let m = &mut self.members[node];
        if delay == 0 {
            m.state = ExecutionState::Ready;
            m.available_at = None;
        } else {
            m.state = ExecutionState::Delayed;
            m.available_at = Some(self.now + delay);
        }
    }

    /// A terminal transition: its completion is recorded (queued for the cascade).
    fn end(&mut self, node: usize, reason: EndReason) {
        let m = &mut self.members[node];
        m.state = reason.state();
        m.end_reason = Some(reason);
        m.lease_expires_at = None;
        m.available_at = None;
        self.queue.push(node);
    }

    /// Cascades every recorded completion (the dispatch loop running to quiescence).
    fn settle(&mut self) {
        while !self.queue.is_empty() {
            let node = self.queue.remove(0);
            for e in self.graph.outgoing(node) {
                self.apply_edge(e);
            }
        }
        self.batch.clear();
    }

    fn apply_edge(&mut self, e: usize) {
        if self.applied[e] {
            return;
        }
        self.applied[e] = true;
        let edge = self.graph.edges[e].clone();
        let Some(bucket) = self.members[edge.from].state.bucket() else {
            return;
        };
        let to = edge.to;
        let satisfied = edge.kind.satisfied_by(bucket);
        let group = &mut self.groups[to];
        if satisfied {
            group.satisfied += 1;
        } else {
            group.unsatisfied += 1;
        }
        if group.verdict != GroupVerdict::Pending {
            if satisfied
                && edge.pass_result
                && self.members[edge.from].state == ExecutionState::Succeeded
                && !self.members[to].state.is_terminal()
            {
                self.late_inputs[to] = true;
            }
            return;
        }
        let policy = self.graph.nodes[to].group.policy;
        let verdict = policy.evaluate(group.incoming, group.satisfied, group.unsatisfied);
        group.verdict = verdict;
        let blocked = self.members[to].state == ExecutionState::Blocked;
        match verdict {
            GroupVerdict::Pending => {}
            GroupVerdict::Impossible => {
                if blocked {
                    self.end(to, EndReason::DependencyImpossible);
                }
            }
            GroupVerdict::Satisfied => {
                if blocked {
                    self.make_eligible(to);
                }
                if self.graph.nodes[to].group.on_satisfied == OnSatisfied::CancelRemaining {
                    self.cancel_remaining(to, blocked);
                }
            }
        }
    }

    fn cancel_remaining(&mut self, node: usize, was_blocked: bool) {
        let unfinished: Vec<usize> = self
            .graph
            .incoming(node)
            .into_iter()
            .map(|e| self.graph.edges[e].from)
            .filter(|&u| !self.members[u].state.is_terminal())
            .collect();
        if unfinished.is_empty() {
            return;
        }
        if !was_blocked {
            self.ambiguous(format!(
                "the CancelRemaining group of {} (already {}) fired with unfinished upstreams",
                Graph::key(node),
                self.members[node].state
            ));
        }
        if self.batch.len() > 1 {
            self.ambiguous(format!(
                "the CancelRemaining group of {} fired while one call ended several members; \
                 who it cancels depends on the order they cascade",
                Graph::key(node)
            ));
        }
        for u in unfinished {
            if self.members[u].state == ExecutionState::Blocked {
                self.ambiguous(format!(
                    "the CancelRemaining group of {} cancels blocked {}, racing its own group",
                    Graph::key(node),
                    Graph::key(u)
                ));
            }
            self.end(u, EndReason::Cancelled(CancelSource::GroupSatisfied));
        }
    }
}

/// What `cancel_execution` should answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcomeModel {
    /// Cancelled now, from this state.
    Cancelled(ExecutionState),
    /// Already terminal in this state, for this reason.
    AlreadyTerminal(ExecutionState, Option<EndReason>),
}

impl CancelOutcomeModel {
    /// Whether a backend's answer matches.
    pub fn matches(&self, outcome: &CancelOutcome) -> bool {
        match (self, outcome) {
            (CancelOutcomeModel::Cancelled(a), CancelOutcome::Cancelled { previous }) => {
                a == previous
            }
            (CancelOutcomeModel::AlreadyTerminal(s, r), CancelOutcome::AlreadyTerminal(status)) => {
                *s == status.state && *r == status.end_reason
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(group: DependencyGroup, max_attempts: u32) -> NodeParams {
        NodeParams {
            group,
            max_attempts,
            backoff_ms: 15,
            delay_ms: 0,
        }
    }

    fn edge(from: usize, to: usize) -> EdgeParams {
        EdgeParams {
            from,
            to,
            kind: EdgeKind::Success,
            pass_result: true,
        }
    }

    #[test]
    fn a_diamond_runs_in_order_and_succeeds() {
        let graph = Graph {
            nodes: vec![node(DependencyGroup::all_of(), 1); 4],
            edges: vec![edge(0, 1), edge(0, 2), edge(1, 3), edge(2, 3)],
        };
        let mut model = FlowModel::new(graph, 0);
        assert_eq!(model.claim_all(), vec![0]);
        model.complete(0, Some(b"a".to_vec()));
        assert_eq!(model.claim_all(), vec![1, 2]);
        model.complete(1, None);
        assert_eq!(model.members()[3].state, ExecutionState::Blocked);
        model.complete(2, Some(b"c".to_vec()));
        assert_eq!(
            model.expected_inputs(3),
            Some(vec![(1, None), (2, Some(b"c".to_vec()))])
        );
        assert_eq!(model.claim_all(), vec![3]);
        model.complete(3, None);
        assert_eq!(model.flow_state(), FlowState::Succeeded);
        assert_eq!(model.counts(), (4, 4, 0));
    }

    #[test]
    fn retries_then_skips_the_downstream_cone() {
        let graph = Graph {
            nodes: vec![node(DependencyGroup::all_of(), 2); 3],
            edges: vec![edge(0, 1), edge(1, 2)],
        };
        let mut model = FlowModel::new(graph, 0);
        model.claim_all();
        assert_eq!(model.fail(0, true), WriteExpectation::Accepted(Some(15)));
        model.advance(20);
        model.promote();
        model.claim_all();
        assert_eq!(model.fail(0, true), WriteExpectation::Accepted(None));
        assert_eq!(model.in_state(ExecutionState::Skipped), vec![1, 2]);
        assert_eq!(model.flow_state(), FlowState::Failed);
        assert_eq!(model.counts(), (3, 3, 3));
    }

    #[test]
    fn cancel_remaining_cancels_running_roots_without_failing_the_flow() {
        let graph = Graph {
            nodes: vec![
                node(DependencyGroup::all_of(), 1),
                node(DependencyGroup::all_of(), 1),
                node(DependencyGroup::any_of(OnSatisfied::CancelRemaining), 1),
            ],
            edges: vec![edge(0, 2), edge(1, 2)],
        };
        let mut model = FlowModel::new(graph, 0);
        model.claim_all();
        model.complete(0, None);
        assert_eq!(
            model.members()[1].end_reason,
            Some(EndReason::Cancelled(CancelSource::GroupSatisfied))
        );
        assert_eq!(model.claim_all(), vec![2]);
        model.complete(2, None);
        assert_eq!(model.flow_state(), FlowState::Succeeded);
        assert_eq!(model.ambiguity(), None);
    }

    #[test]
    fn an_expired_lease_cannot_write() {
        let graph = Graph {
            nodes: vec![node(DependencyGroup::all_of(), 1)],
            edges: vec![],
        };
        let mut model = FlowModel::new(graph, 0);
        model.claim_all();
        model.advance(LEASE_TTL_MS + 1);
        assert_eq!(model.complete(0, None), WriteExpectation::LeaseExpired);
        model.expire_leases();
        assert_eq!(
            model.members()[0].end_reason,
            Some(EndReason::AttemptsExhausted)
        );
    }
}
