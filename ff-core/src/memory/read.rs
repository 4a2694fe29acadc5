//! Reads in memory: describe and list.

use std::ops::Bound;

use crate::error::EngineError;
use crate::id::{ExecutionId, FlowId};
use crate::snapshot::{
    ExecutionSnapshot, ExecutionSummary, FlowEdge, FlowMember, FlowSnapshot, GroupSnapshot,
    ListCursor, ListQuery, Page,
};

use super::state::{Exec, State};

impl State {
    pub(super) fn describe_execution(
        &self,
        id: &ExecutionId,
    ) -> Result<ExecutionSnapshot, EngineError> {
        let exec = self.exec(id)?;
        Ok(ExecutionSnapshot {
            id: exec.id,
            flow: exec.member.clone(),
            status: exec.status(),
            lane: exec.spec.lane.clone(),
            priority: exec.spec.priority,
            required_capabilities: exec.spec.required_capabilities.clone(),
            payload: exec.spec.payload.clone(),
            retry: exec.spec.retry.clone(),
            created_at: exec.created_at,
            available_at: exec.available_at,
            deadline: exec.deadline_at,
            lease: exec.lease.clone(),
            progress: exec.progress.clone(),
            result: exec.result.clone(),
            finished_at: exec.finished_at,
            attempts: exec.attempts.clone(),
        })
    }

    pub(super) fn describe_flow(&self, id: &FlowId) -> Result<FlowSnapshot, EngineError> {
        let flow = self.flow(id)?;
        let key_of = |id: &ExecutionId| -> crate::id::NodeKey {
            self.known(id)
                .member
                .as_ref()
                .map(|(_, key)| key.clone())
                .unwrap_or_else(|| panic!("memory backend invariant: {id} is a member"))
        };
        let members = flow
            .members
            .iter()
            .map(|id| {
                let exec = self.known(id);
                FlowMember {
                    key: key_of(id),
                    execution_id: *id,
                    state: exec.state,
                    end_reason: exec.end_reason,
                }
            })
            .collect();
        let edges = flow
            .edges
            .iter()
            .map(|edge| FlowEdge {
                from: key_of(&edge.from),
                to: key_of(&edge.to),
                kind: edge.kind,
                pass_result: edge.pass_result,
                applied: edge.applied,
            })
            .collect();
        let groups = flow
            .members
            .iter()
            .filter_map(|id| {
                flow.groups.get(id).map(|group| GroupSnapshot {
                    node: key_of(id),
                    group: group.group,
                    incoming: group.incoming,
                    satisfied: group.satisfied,
                    unsatisfied: group.unsatisfied,
                    verdict: group.verdict,
                })
            })
            .collect();
        Ok(FlowSnapshot {
            id: flow.id,
            state: flow.state,
            cancel_requested: flow.cancel_requested,
            counts: flow.counts,
            created_at: flow.created_at,
            finished_at: flow.finished_at,
            members,
            edges,
            groups,
        })
    }

    pub(super) fn list_executions(
        &self,
        query: &ListQuery,
    ) -> Result<Page<ExecutionSummary>, EngineError> {
        query.validate()?;
        self.config.check(query.partition)?;
        let start = match &query.after {
            Some(cursor) => Bound::Excluded(cursor.0.parse::<ExecutionId>().map_err(|_| {
                EngineError::validation("after", format!("malformed list cursor {:?}", cursor.0))
            })?),
            None => Bound::Unbounded,
        };
        let limit = query.limit as usize;
        let mut items: Vec<ExecutionSummary> = self
            .partition(query.partition)
            .executions
            .range((start, Bound::Unbounded))
            .map(|id| self.known(id))
            .filter(|exec| exec.state == query.state)
            .filter(|exec| {
                query
                    .lane
                    .as_ref()
                    .is_none_or(|lane| &exec.spec.lane == lane)
            })
            .take(limit + 1)
            .map(summary)
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| ListCursor(last.id.to_string()))
        } else {
            None
        };
        Ok(Page { items, next })
    }
}

fn summary(exec: &Exec) -> ExecutionSummary {
    ExecutionSummary {
        id: exec.id,
        state: exec.state,
        lane: exec.spec.lane.clone(),
        priority: exec.spec.priority,
        flow_id: exec.flow_id(),
        created_at: exec.created_at,
    }
}
