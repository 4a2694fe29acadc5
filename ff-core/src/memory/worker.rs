//! Submission and the worker's operations in memory: create, claim, and the fenced writes.

use std::time::Duration;

use crate::error::{EngineError, FenceReason};
use crate::execution::{
    ClaimRequest, ClaimedExecution, CompleteRequest, Completed, CreatedExecution, ExecutionSpec,
    FailOutcome, FailRequest, Failure, Fence, UpstreamInput,
};
use crate::id::{ExecutionId, LeaseId};
use crate::limits;
use crate::policy::check_lease_ttl;
use crate::snapshot::{AttemptRecord, LeaseInfo};
use crate::state::{AttemptOutcome, EndReason, ExecutionState};
use crate::time::Timestamp;

use super::cascade::new_exec;
use super::state::{Exec, State};

/// What the fence check found (see the trait docs, "The fence check, step by step").
enum Fenced {
    /// The lease is current, unexpired, and the execution is running.
    Live,
    /// The lease is the latest one but the attempt already ended: maybe a repeat.
    Ended,
}

impl State {
    pub(super) fn create_execution(
        &mut self,
        spec: &ExecutionSpec,
        now: Timestamp,
    ) -> Result<CreatedExecution, EngineError> {
        spec.validate("")?;
        let id = match &spec.idempotency_key {
            Some(key) => ExecutionId::for_idempotency_key(key, &self.config),
            None => ExecutionId::new_standalone(&self.config),
        };
        if self.executions.contains_key(&id) {
            return Ok(CreatedExecution { id, created: false });
        }
        self.insert_execution(new_exec(id, None, spec, now));
        self.make_eligible(&id, now);
        Ok(CreatedExecution { id, created: true })
    }

    pub(super) fn claim(
        &mut self,
        request: &ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedExecution>, EngineError> {
        request.validate("")?;
        let mut picked = Vec::new();
        let mut expired = Vec::new();
        if let Some(queue) = self.ready.get(&request.lane) {
            for &(_, _, id) in queue {
                if picked.len() >= request.max as usize {
                    break;
                }
                let exec = self.known(&id);
                if !request.offers_all(&exec.spec.required_capabilities) {
                    continue;
                }
                if exec.deadline_at.is_some_and(|at| at <= now) {
                    expired.push(id);
                } else {
                    picked.push(id);
                }
            }
        }
        for id in &expired {
            self.expire(id, now);
        }
        let claimed = picked
            .iter()
            .map(|id| self.start_attempt(id, request, now))
            .collect();
        Ok(claimed)
    }

    /// `ready → running`: a new attempt under a new lease and epoch.
    fn start_attempt(
        &mut self,
        id: &ExecutionId,
        request: &ClaimRequest,
        now: Timestamp,
    ) -> ClaimedExecution {
        self.leave_ready(id);
        let lease_id = LeaseId::new();
        let expires_at = now.saturating_add(request.lease_ttl);
        let exec = self.known_mut(id);
        exec.state = ExecutionState::Running;
        exec.epoch += 1;
        exec.progress = None;
        exec.lease = Some(LeaseInfo {
            lease_id,
            worker: request.worker.clone(),
            expires_at,
        });
        exec.attempt_deadline = exec.spec.attempt_timeout.map(|t| now.saturating_add(t));
        let number = exec.attempt_count() + 1;
        exec.attempts.push(AttemptRecord {
            number,
            worker: request.worker.clone(),
            lease_id,
            epoch: exec.epoch,
            started_at: now,
            ended_at: None,
            outcome: None,
            failure: None,
        });
        let fence = Fence {
            execution_id: *id,
            lease_id,
            epoch: exec.epoch,
        };
        let attempt_deadline = exec.attempt_deadline;
        let index = self.partition_mut(id.partition());
        index.leases.insert((expires_at, *id));
        if let Some(at) = attempt_deadline {
            index.timeouts.insert((at, *id));
        }
        let exec = self.known(id);
        ClaimedExecution {
            fence,
            attempt: number,
            lane: exec.spec.lane.clone(),
            priority: exec.spec.priority,
            payload: exec.spec.payload.clone(),
            inputs: self.inputs_of(exec),
            flow_id: exec.flow_id(),
            node_key: exec.member.as_ref().map(|(_, key)| key.clone()),
            lease_expires_at: expires_at,
            attempt_deadline,
            deadline: exec.deadline_at,
        }
    }

    fn leave_ready(&mut self, id: &ExecutionId) {
        let exec = self.known(id);
        let key = (-exec.spec.priority, exec.ready_seq, *id);
        let lane = exec.spec.lane.clone();
        if let Some(queue) = self.ready.get_mut(&lane) {
            queue.remove(&key);
            if queue.is_empty() {
                self.ready.remove(&lane);
            }
        }
    }

    /// Results of succeeded upstreams along `pass_result` edges, in edge order.
    fn inputs_of(&self, exec: &Exec) -> Vec<UpstreamInput> {
        let Some(flow) = exec.flow_id().and_then(|f| self.flows.get(&f)) else {
            return Vec::new();
        };
        let Some(incoming) = flow.incoming.get(&exec.id) else {
            return Vec::new();
        };
        incoming
            .iter()
            .map(|&e| &flow.edges[e])
            .filter(|edge| edge.pass_result)
            .filter_map(|edge| {
                let upstream = self.known(&edge.from);
                (upstream.state == ExecutionState::Succeeded).then(|| UpstreamInput {
                    node_key: upstream
                        .member
                        .as_ref()
                        .map(|(_, key)| key.clone())
                        .unwrap_or_else(|| {
                            panic!("memory backend invariant: {} is a member", edge.from)
                        }),
                    execution_id: edge.from,
                    result: upstream.result.clone(),
                })
            })
            .collect()
    }

    /// Steps 2–5 of the fence check.
    fn check_fence(&self, fence: &Fence, now: Timestamp) -> Result<Fenced, EngineError> {
        let exec = self.exec(&fence.execution_id)?;
        let fenced = |reason| EngineError::Fenced {
            execution_id: fence.execution_id,
            reason,
            current: exec.status(),
        };
        if exec.epoch != fence.epoch {
            return Err(fenced(FenceReason::StaleEpoch));
        }
        if exec.attempts.last().map(|a| a.lease_id) != Some(fence.lease_id) {
            return Err(fenced(FenceReason::LeaseMismatch));
        }
        if exec.state != ExecutionState::Running {
            return Ok(Fenced::Ended);
        }
        match &exec.lease {
            Some(lease) if now < lease.expires_at => Ok(Fenced::Live),
            _ => Err(fenced(FenceReason::LeaseExpired)),
        }
    }

    fn not_active(&self, id: &ExecutionId) -> EngineError {
        EngineError::NotActive {
            execution_id: *id,
            current: self.known(id).status(),
        }
    }

    pub(super) fn renew(
        &mut self,
        fence: &Fence,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Timestamp, EngineError> {
        check_lease_ttl("ttl", ttl)?;
        match self.check_fence(fence, now)? {
            Fenced::Ended => Err(self.not_active(&fence.execution_id)),
            Fenced::Live => {
                let id = fence.execution_id;
                let expires_at = now.saturating_add(ttl);
                let exec = self.known_mut(&id);
                let lease = exec.lease.as_mut().unwrap_or_else(|| {
                    panic!("memory backend invariant: running {id} has a lease")
                });
                let previous = std::mem::replace(&mut lease.expires_at, expires_at);
                let index = self.partition_mut(id.partition());
                index.leases.remove(&(previous, id));
                index.leases.insert((expires_at, id));
                Ok(expires_at)
            }
        }
    }

    pub(super) fn progress(
        &mut self,
        fence: &Fence,
        progress: &[u8],
        now: Timestamp,
    ) -> Result<(), EngineError> {
        limits::check_size("progress", progress.len(), limits::MAX_PROGRESS_BYTES)?;
        match self.check_fence(fence, now)? {
            Fenced::Ended => Err(self.not_active(&fence.execution_id)),
            Fenced::Live => {
                self.known_mut(&fence.execution_id).progress = Some(progress.to_vec());
                Ok(())
            }
        }
    }

    pub(super) fn complete(
        &mut self,
        request: &CompleteRequest,
        now: Timestamp,
    ) -> Result<Completed, EngineError> {
        request.validate()?;
        let id = request.fence.execution_id;
        match self.check_fence(&request.fence, now)? {
            Fenced::Ended => {
                if self.known(&id).end_reason != Some(EndReason::Completed) {
                    return Err(self.not_active(&id));
                }
            }
            Fenced::Live => {
                self.end_attempt(&id, AttemptOutcome::Succeeded, None, now);
                self.known_mut(&id).result = request.result.clone();
                self.terminate(&id, EndReason::Completed, now);
                self.drain_inline(now);
            }
        }
        let next = match &request.claim_next {
            Some(claim) => self.claim(claim, now)?,
            None => Vec::new(),
        };
        Ok(Completed { next })
    }

    pub(super) fn fail(
        &mut self,
        request: &FailRequest,
        now: Timestamp,
        random: f64,
    ) -> Result<FailOutcome, EngineError> {
        request.validate()?;
        let id = request.fence.execution_id;
        let disposition = match self.check_fence(&request.fence, now)? {
            Fenced::Ended => {
                let exec = self.known(&id);
                let failed_by_worker =
                    exec.attempts.last().and_then(|a| a.outcome) == Some(AttemptOutcome::Failed);
                match exec.last_fail {
                    Some(disposition) if failed_by_worker => disposition,
                    _ => return Err(self.not_active(&id)),
                }
            }
            Fenced::Live => {
                let failure = Failure {
                    message: request.failure.stored_message().to_string(),
                    retryable: request.failure.retryable,
                };
                self.end_attempt(&id, AttemptOutcome::Failed, Some(failure), now);
                let disposition =
                    self.after_failed_attempt(&id, request.failure.retryable, now, random);
                self.known_mut(&id).last_fail = Some(disposition);
                self.drain_inline(now);
                disposition
            }
        };
        let next = match &request.claim_next {
            Some(claim) => self.claim(claim, now)?,
            None => Vec::new(),
        };
        Ok(FailOutcome { disposition, next })
    }

    /// A retry that is due or a delayed start: `delayed → ready`.
    pub(super) fn promote(&mut self, id: &ExecutionId) {
        if self.known(id).state == ExecutionState::Delayed {
            self.make_ready(id);
        }
    }
}
