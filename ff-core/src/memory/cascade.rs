//! Flows in memory: creation, dynamic fan-out, and the cascade.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::cascade::CascadeProgress;
use crate::error::{Conflict, EngineError, EntityKind};
use crate::execution::ExecutionSpec;
use crate::flow::{
    CreatedFlow, DependencyGroup, EdgeSpec, FlowPatch, FlowSpec, GroupVerdict, NodeSpec,
    OnSatisfied,
};
use crate::id::{ExecutionId, FlowId, NodeKey};
use crate::snapshot::FlowCounts;
use crate::state::{CancelSource, EndReason, ExecutionState, FlowState};
use crate::time::Timestamp;

use super::state::{Edge, Exec, Flow, Group, State};

/// Edges one `cascade_completion` call applies at most: the bounded chunk of the contract.
pub(super) const CASCADE_CHUNK: usize = 1_024;

impl State {
    pub(super) fn create_flow(
        &mut self,
        spec: &FlowSpec,
        now: Timestamp,
    ) -> Result<CreatedFlow, EngineError> {
        let shape = spec.validate()?;
        if let Some(flow) = self.flows.get(&spec.id) {
            return Ok(CreatedFlow {
                flow_id: spec.id,
                created: false,
                nodes: flow.keys.iter().map(|(k, id)| (k.clone(), *id)).collect(),
            });
        }
        self.flows.insert(
            spec.id,
            Flow {
                id: spec.id,
                created_at: now,
                cancel_requested: false,
                state: FlowState::Running,
                counts: FlowCounts::default(),
                finished_at: None,
                members: Vec::new(),
                keys: HashMap::new(),
                edges: Vec::new(),
                outgoing: HashMap::new(),
                incoming: HashMap::new(),
                groups: HashMap::new(),
            },
        );
        let nodes = self.add_graph(spec.id, &spec.nodes, &spec.edges, &shape.incoming, now);
        Ok(CreatedFlow {
            flow_id: spec.id,
            created: true,
            nodes,
        })
    }

    pub(super) fn add_nodes(
        &mut self,
        flow_id: &FlowId,
        patch: &FlowPatch,
        now: Timestamp,
    ) -> Result<CreatedFlow, EngineError> {
        let shape = patch.validate()?;
        let flow = self.flow(flow_id)?;
        let existing: Vec<&NodeSpec> = patch
            .nodes
            .iter()
            .filter(|n| flow.keys.contains_key(&n.key))
            .collect();
        if existing.len() == patch.nodes.len() {
            return Ok(CreatedFlow {
                flow_id: *flow_id,
                created: false,
                nodes: patch
                    .nodes
                    .iter()
                    .map(|n| (n.key.clone(), flow.keys[&n.key]))
                    .collect(),
            });
        }
        if !flow.is_open() {
            return Err(EngineError::Conflict(Conflict::FlowNotOpen {
                flow_id: *flow_id,
                state: flow.state,
                cancel_requested: flow.cancel_requested,
            }));
        }
        if let Some(node) = existing.first() {
            return Err(EngineError::Conflict(Conflict::DuplicateNode {
                key: node.key.clone(),
            }));
        }
        if let Some(missing) = shape
            .external_upstreams
            .iter()
            .find(|key| !flow.keys.contains_key(*key))
        {
            return Err(EngineError::NotFound {
                kind: EntityKind::Node,
                id: missing.to_string(),
            });
        }
        let nodes = self.add_graph(*flow_id, &patch.nodes, &patch.edges, &shape.incoming, now);
        // Edges from upstreams that already finished take effect now. Their `applied` mark
        // keeps a still-pending completion of the same upstream from counting them twice.
        let new_members: HashSet<ExecutionId> = nodes.values().copied().collect();
        let flow = self.known_flow_mut(flow_id);
        let first_new_edge = flow.edges.len() - patch.edges.len();
        let external_edges: Vec<(usize, ExecutionId)> = (first_new_edge..flow.edges.len())
            .map(|e| (e, flow.edges[e].from))
            .filter(|(_, from)| !new_members.contains(from))
            .collect();
        for (edge, from) in external_edges {
            if self.known(&from).state.is_terminal() {
                self.apply_edge(flow_id, edge, now);
            }
        }
        Ok(CreatedFlow {
            flow_id: *flow_id,
            created: true,
            nodes,
        })
    }

    /// Adds validated nodes and edges to an existing flow: members are minted on the flow's
    /// partition, blocked when they have incoming edges and eligible otherwise.
    fn add_graph(
        &mut self,
        flow_id: FlowId,
        nodes: &[NodeSpec],
        edges: &[EdgeSpec],
        incoming: &[u32],
        now: Timestamp,
    ) -> BTreeMap<NodeKey, ExecutionId> {
        let config = self.config;
        let ids: Vec<ExecutionId> = nodes
            .iter()
            .map(|_| ExecutionId::new_member(&flow_id, &config))
            .collect();
        for ((node, id), &incoming) in nodes.iter().zip(&ids).zip(incoming) {
            self.insert_execution(new_exec(
                *id,
                Some((flow_id, node.key.clone())),
                &node.spec,
                now,
            ));
            let flow = self.known_flow_mut(&flow_id);
            flow.members.push(*id);
            flow.keys.insert(node.key.clone(), *id);
            flow.counts.total += 1;
            if incoming > 0 {
                flow.groups.insert(*id, new_group(node.group, incoming));
            }
        }
        let flow = self.known_flow_mut(&flow_id);
        for edge in edges {
            let from = flow.keys[&edge.from];
            let to = flow.keys[&edge.to];
            let index = flow.edges.len();
            flow.edges.push(Edge {
                from,
                to,
                kind: edge.kind,
                pass_result: edge.pass_result,
                applied: false,
            });
            flow.outgoing.entry(from).or_default().push(index);
            flow.incoming.entry(to).or_default().push(index);
        }
        for (id, &incoming) in ids.iter().zip(incoming) {
            if incoming == 0 {
                self.make_eligible(id, now);
            }
        }
        nodes.iter().map(|n| n.key.clone()).zip(ids).collect()
    }

    /// Counts one edge's upstream outcome in its downstream group and acts on the verdict the
    /// first time the group is decided. Idempotent: an applied edge is left alone.
    pub(super) fn apply_edge(&mut self, flow_id: &FlowId, edge: usize, now: Timestamp) {
        let flow = self.known_flow_mut(flow_id);
        let (from, to, kind) = {
            let e = &mut flow.edges[edge];
            if e.applied {
                return;
            }
            e.applied = true;
            (e.from, e.to, e.kind)
        };
        let Some(bucket) = self.known(&from).state.bucket() else {
            // Only terminal upstreams are applied; undo the mark rather than miscount.
            self.known_flow_mut(flow_id).edges[edge].applied = false;
            return;
        };
        let flow = self.known_flow_mut(flow_id);
        let group = flow
            .groups
            .get_mut(&to)
            .unwrap_or_else(|| panic!("memory backend invariant: {to} has a group"));
        if kind.satisfied_by(bucket) {
            group.satisfied += 1;
        } else {
            group.unsatisfied += 1;
        }
        if group.verdict != GroupVerdict::Pending {
            return;
        }
        group.verdict =
            group
                .group
                .policy
                .evaluate(group.incoming, group.satisfied, group.unsatisfied);
        let (verdict, on_satisfied) = (group.verdict, group.group.on_satisfied);
        let downstream_blocked = self.known(&to).state == ExecutionState::Blocked;
        match verdict {
            GroupVerdict::Pending => {}
            GroupVerdict::Satisfied => {
                if downstream_blocked {
                    self.make_eligible(&to, now);
                }
                if on_satisfied == OnSatisfied::CancelRemaining {
                    let flow = self.known_flow_mut(flow_id);
                    let upstreams: Vec<ExecutionId> = flow.incoming[&to]
                        .iter()
                        .map(|&e| flow.edges[e].from)
                        .collect();
                    for upstream in upstreams {
                        if !self.known(&upstream).state.is_terminal() {
                            self.cancel(&upstream, CancelSource::GroupSatisfied, now);
                        }
                    }
                }
            }
            GroupVerdict::Impossible => {
                if downstream_blocked {
                    self.terminate(&to, EndReason::DependencyImpossible, now);
                }
            }
        }
    }

    /// Applies up to `max_edges` unapplied outgoing edges of a pending completion and retires
    /// it once none is left.
    pub(super) fn cascade(
        &mut self,
        execution: &ExecutionId,
        max_edges: usize,
        now: Timestamp,
    ) -> CascadeProgress {
        let partition = execution.partition();
        let Some(&seq) = self.partition(partition).completion_seq.get(execution) else {
            return CascadeProgress {
                edges_applied: 0,
                finished: true,
            };
        };
        let Some(flow_id) = self.executions.get(execution).and_then(Exec::flow_id) else {
            // The member is gone (retention removed its flow): nothing left to apply.
            self.retire_completion(execution, seq);
            return CascadeProgress {
                edges_applied: 0,
                finished: true,
            };
        };
        let outgoing = self
            .flows
            .get(&flow_id)
            .and_then(|flow| flow.outgoing.get(execution))
            .cloned()
            .unwrap_or_default();
        let mut applied = 0u32;
        let mut finished = true;
        for edge in outgoing {
            if self.known_flow_mut(&flow_id).edges[edge].applied {
                continue;
            }
            if applied as usize >= max_edges {
                finished = false;
                break;
            }
            self.apply_edge(&flow_id, edge, now);
            applied += 1;
        }
        if finished {
            self.retire_completion(execution, seq);
        }
        CascadeProgress {
            edges_applied: applied,
            finished,
        }
    }

    fn retire_completion(&mut self, execution: &ExecutionId, seq: u64) {
        let index = self.partition_mut(execution.partition());
        index.completions.remove(&seq);
        index.completion_seq.remove(execution);
    }

    /// Cascades the completions recorded inline by this operation (and those they cause).
    pub(super) fn drain_inline(&mut self, now: Timestamp) {
        while let Some(execution) = self.inline_queue.pop_front() {
            self.cascade(&execution, usize::MAX, now);
        }
    }
}

/// A fresh, not yet eligible execution.
pub(super) fn new_exec(
    id: ExecutionId,
    member: Option<(FlowId, NodeKey)>,
    spec: &ExecutionSpec,
    now: Timestamp,
) -> Exec {
    Exec {
        id,
        member,
        spec: spec.clone(),
        state: ExecutionState::Blocked,
        epoch: 0,
        end_reason: None,
        created_at: now,
        available_at: None,
        deadline_at: spec.deadline.map(|d| now.saturating_add(d)),
        ready_seq: 0,
        lease: None,
        attempt_deadline: None,
        progress: None,
        result: None,
        finished_at: None,
        attempts: Vec::new(),
        last_fail: None,
    }
}

fn new_group(group: DependencyGroup, incoming: u32) -> Group {
    Group {
        group,
        incoming,
        satisfied: 0,
        unsatisfied: 0,
        verdict: GroupVerdict::Pending,
    }
}
