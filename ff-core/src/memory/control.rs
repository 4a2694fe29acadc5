//! Control operations in memory: cancel an execution, cancel a flow, change priority.

use crate::error::EngineError;
use crate::execution::{CancelOutcome, check_priority};
use crate::flow::{CancelFlowMode, CancelFlowOutcome};
use crate::id::{ExecutionId, FlowId};
use crate::state::{CancelSource, ExecutionState};
use crate::time::Timestamp;

use super::state::State;

impl State {
    pub(super) fn cancel_execution(
        &mut self,
        id: &ExecutionId,
        now: Timestamp,
    ) -> Result<CancelOutcome, EngineError> {
        let exec = self.exec(id)?;
        if exec.state.is_terminal() {
            return Ok(CancelOutcome::AlreadyTerminal(exec.status()));
        }
        let previous = exec.state;
        self.cancel(id, CancelSource::User, now);
        self.drain_inline(now);
        Ok(CancelOutcome::Cancelled { previous })
    }

    pub(super) fn cancel_flow(
        &mut self,
        flow_id: &FlowId,
        mode: CancelFlowMode,
        now: Timestamp,
    ) -> Result<CancelFlowOutcome, EngineError> {
        let flow = self.flow(flow_id)?;
        if flow.state.is_terminal() {
            return Ok(CancelFlowOutcome {
                cancelled: 0,
                deferred: 0,
                state: flow.state,
            });
        }
        let targets: Vec<ExecutionId> = flow
            .members
            .iter()
            .copied()
            .filter(|id| {
                let state = self.known(id).state;
                match mode {
                    CancelFlowMode::CancelAll => !state.is_terminal(),
                    CancelFlowMode::CancelPending => matches!(
                        state,
                        ExecutionState::Blocked | ExecutionState::Delayed | ExecutionState::Ready
                    ),
                }
            })
            .collect();
        self.known_flow_mut(flow_id).cancel_requested = true;
        // Every target is cancelled before any completion cascades, so each ends as
        // `Cancelled(Flow)` rather than as a skip caused by its cancelled upstream.
        for id in &targets {
            self.cancel(id, CancelSource::Flow, now);
        }
        self.drain_inline(now);
        let flow = self.known_flow_mut(flow_id);
        Ok(CancelFlowOutcome {
            cancelled: u32::try_from(targets.len()).unwrap_or(u32::MAX),
            deferred: 0,
            state: flow.state,
        })
    }

    pub(super) fn change_priority(
        &mut self,
        id: &ExecutionId,
        priority: i32,
    ) -> Result<(), EngineError> {
        check_priority("priority", priority)?;
        let exec = self.exec(id)?;
        if exec.state.is_terminal() {
            return Err(EngineError::NotActive {
                execution_id: *id,
                current: exec.status(),
            });
        }
        let (state, old, seq, lane) = (
            exec.state,
            exec.spec.priority,
            exec.ready_seq,
            exec.spec.lane.clone(),
        );
        self.known_mut(id).spec.priority = priority;
        if state == ExecutionState::Ready
            && let Some(queue) = self.ready.get_mut(&lane)
        {
            queue.remove(&(-old, seq, *id));
            queue.insert((-priority, seq, *id));
        }
        Ok(())
    }
}
