//! Executions: what is submitted, what a worker claims, and the worker's fenced writes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::id::{
    Capability, ExecutionId, FlowId, IdempotencyKey, Lane, LeaseId, NodeKey, WorkerId,
};
use crate::limits;
use crate::policy::{RetryPolicy, check_duration, check_lease_ttl};
use crate::state::{ExecutionState, ExecutionStatus};
use crate::time::Timestamp;

/// Everything needed to create one execution (standalone, or as a node of a flow).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecutionSpec {
    /// The lane (named queue) it is claimed from.
    pub lane: Lane,
    /// Opaque input for the worker, at most [`limits::MAX_PAYLOAD_BYTES`].
    pub payload: Vec<u8>,
    /// Higher first; within [`limits::MIN_PRIORITY`]`..=`[`limits::MAX_PRIORITY`].
    pub priority: i32,
    /// Only a worker offering all of these may claim it.
    pub required_capabilities: BTreeSet<Capability>,
    /// Not claimable before this much time has passed since it became eligible (creation for
    /// a standalone execution or a flow root, the satisfaction of its dependencies for a flow
    /// member).
    pub delay: Duration,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// Per-attempt timeout: an attempt running longer counts as failed (`attempt_timeout`),
    /// whatever its lease renewals.
    pub attempt_timeout: Option<Duration>,
    /// Absolute deadline, relative to creation: past it the execution becomes `expired`
    /// whatever its state.
    pub deadline: Option<Duration>,
    /// Makes `create_execution` idempotent: a second submission with the same key returns
    /// the first execution (as long as retention has not removed it). Standalone executions
    /// only.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl ExecutionSpec {
    /// A spec with defaults: priority 0, no capabilities, no delay, one attempt, no timeout,
    /// no deadline, no idempotency key.
    pub fn new(lane: Lane, payload: impl Into<Vec<u8>>) -> Self {
        ExecutionSpec {
            lane,
            payload: payload.into(),
            priority: 0,
            required_capabilities: BTreeSet::new(),
            delay: Duration::ZERO,
            retry: RetryPolicy::none(),
            attempt_timeout: None,
            deadline: None,
            idempotency_key: None,
        }
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Adds a required capability.
    pub fn with_capability(mut self, capability: Capability) -> Self {
        self.required_capabilities.insert(capability);
        self
    }

    /// Sets the initial delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Sets the absolute deadline, relative to creation.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    /// Checks the spec against the documented limits. `field` prefixes the field names in
    /// errors (`""` for a standalone execution, `nodes[3].spec.` for a flow node).
    pub fn validate(&self, field: &str) -> Result<(), EngineError> {
        limits::check_size(
            &format!("{field}payload"),
            self.payload.len(),
            limits::MAX_PAYLOAD_BYTES,
        )?;
        check_priority(&format!("{field}priority"), self.priority)?;
        check_capability_count(
            &format!("{field}required_capabilities"),
            self.required_capabilities.len(),
        )?;
        check_duration(&format!("{field}delay"), self.delay)?;
        self.retry.validate(&format!("{field}retry"))?;
        if let Some(timeout) = self.attempt_timeout {
            check_positive(&format!("{field}attempt_timeout"), timeout)?;
        }
        if let Some(deadline) = self.deadline {
            check_positive(&format!("{field}deadline"), deadline)?;
        }
        Ok(())
    }
}

/// Checks a priority against the documented range.
pub fn check_priority(field: &str, priority: i32) -> Result<(), EngineError> {
    if !(limits::MIN_PRIORITY..=limits::MAX_PRIORITY).contains(&priority) {
        return Err(EngineError::validation(
            field,
            format!(
                "{priority} is outside {}..={}",
                limits::MIN_PRIORITY,
                limits::MAX_PRIORITY
            ),
        ));
    }
    Ok(())
}

fn check_capability_count(field: &str, count: usize) -> Result<(), EngineError> {
    if count > limits::MAX_CAPABILITIES {
        return Err(EngineError::validation(
            field,
            format!(
                "{count} capabilities is more than the limit of {}",
                limits::MAX_CAPABILITIES
            ),
        ));
    }
    Ok(())
}

fn check_positive(field: &str, d: Duration) -> Result<(), EngineError> {
    if d.is_zero() {
        return Err(EngineError::validation(field, "must be longer than zero"));
    }
    check_duration(field, d)
}

/// The answer to `create_execution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedExecution {
    /// The execution's id.
    pub id: ExecutionId,
    /// False when an idempotency key matched an existing execution, which is returned
    /// unchanged.
    pub created: bool,
}

/// The proof that a worker holds an execution's current lease. Every worker write carries it,
/// and succeeds only if the lease is current (same id, same epoch) and not expired by the
/// backend's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The lease minted by the claim.
    pub lease_id: LeaseId,
    /// The epoch the claim moved the execution to.
    pub epoch: u64,
}

/// A request to lease up to `max` ready executions of one lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// Who claims (recorded on the lease and the attempt).
    pub worker: WorkerId,
    /// The lane to claim from.
    pub lane: Lane,
    /// What the worker offers; an execution is eligible if it requires a subset of these.
    pub capabilities: BTreeSet<Capability>,
    /// Most executions to lease, `1..=`[`limits::MAX_CLAIM_BATCH`].
    pub max: u32,
    /// Lease time to live, renewed with `renew`.
    pub lease_ttl: Duration,
}

impl ClaimRequest {
    /// A claim of one execution with a 30 s lease and no capabilities.
    pub fn new(worker: WorkerId, lane: Lane) -> Self {
        ClaimRequest {
            worker,
            lane,
            capabilities: BTreeSet::new(),
            max: 1,
            lease_ttl: Duration::from_secs(30),
        }
    }

    /// Sets the batch size.
    pub fn with_max(mut self, max: u32) -> Self {
        self.max = max;
        self
    }

    /// Sets the lease TTL.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Adds an offered capability.
    pub fn with_capability(mut self, capability: Capability) -> Self {
        self.capabilities.insert(capability);
        self
    }

    /// Replaces the offered capabilities.
    pub fn with_capabilities(mut self, capabilities: impl IntoIterator<Item = Capability>) -> Self {
        self.capabilities = capabilities.into_iter().collect();
        self
    }

    /// Checks the request against the documented limits.
    pub fn validate(&self, field: &str) -> Result<(), EngineError> {
        limits::check_count(&format!("{field}max"), self.max, limits::MAX_CLAIM_BATCH)?;
        check_lease_ttl(&format!("{field}lease_ttl"), self.lease_ttl)?;
        check_capability_count(&format!("{field}capabilities"), self.capabilities.len())
    }

    /// Whether a worker making this request may run an execution requiring `required`.
    pub fn offers_all(&self, required: &BTreeSet<Capability>) -> bool {
        required.is_subset(&self.capabilities)
    }
}

/// The result of an upstream node, passed along an edge with `pass_result` set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamInput {
    /// The upstream node's key.
    pub node_key: NodeKey,
    /// The upstream execution.
    pub execution_id: ExecutionId,
    /// What it completed with (`None` if it completed without a result).
    pub result: Option<Vec<u8>>,
}

/// One execution leased to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedExecution {
    /// The lease; carry it on every write.
    pub fence: Fence,
    /// Which attempt this is (1-based).
    pub attempt: u32,
    /// The lane.
    pub lane: Lane,
    /// The priority.
    pub priority: i32,
    /// The submitted payload.
    pub payload: Vec<u8>,
    /// Results of upstream nodes that succeeded, along edges with `pass_result`, in edge
    /// order.
    pub inputs: Vec<UpstreamInput>,
    /// The flow, for flow members.
    pub flow_id: Option<FlowId>,
    /// The node key, for flow members.
    pub node_key: Option<NodeKey>,
    /// When the lease expires unless renewed (backend clock).
    pub lease_expires_at: Timestamp,
    /// When this attempt times out, if the spec has an attempt timeout.
    pub attempt_deadline: Option<Timestamp>,
    /// When the execution expires, if the spec has a deadline.
    pub deadline: Option<Timestamp>,
}

impl ClaimedExecution {
    /// The execution's id.
    pub fn id(&self) -> ExecutionId {
        self.fence.execution_id
    }
}

/// Completes an execution (`running → succeeded`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CompleteRequest {
    /// The worker's lease.
    pub fence: Fence,
    /// The result, at most [`limits::MAX_RESULT_BYTES`].
    pub result: Option<Vec<u8>>,
    /// Claim the worker's next executions in the same call.
    pub claim_next: Option<ClaimRequest>,
}

impl CompleteRequest {
    /// Completes with no result and claims nothing.
    pub fn new(fence: Fence) -> Self {
        CompleteRequest {
            fence,
            result: None,
            claim_next: None,
        }
    }

    /// Sets the result.
    pub fn with_result(mut self, result: impl Into<Vec<u8>>) -> Self {
        self.result = Some(result.into());
        self
    }

    /// Claims the worker's next executions in the same call.
    pub fn with_claim_next(mut self, claim: ClaimRequest) -> Self {
        self.claim_next = Some(claim);
        self
    }

    /// Checks the request against the documented limits.
    pub fn validate(&self) -> Result<(), EngineError> {
        if let Some(result) = &self.result {
            limits::check_size("result", result.len(), limits::MAX_RESULT_BYTES)?;
        }
        if let Some(claim) = &self.claim_next {
            claim.validate("claim_next.")?;
        }
        Ok(())
    }
}

/// The answer to `complete`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    /// Executions claimed by `claim_next` (possibly fewer than asked, possibly none).
    pub next: Vec<ClaimedExecution>,
}

/// What went wrong in an attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// A description for humans; truncated to [`limits::MAX_ERROR_MESSAGE_BYTES`].
    pub message: String,
    /// Whether another attempt may succeed. A non-retryable failure is final whatever the
    /// retry policy says.
    pub retryable: bool,
}

impl Failure {
    /// A failure that may be retried.
    pub fn retryable(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that must not be retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: false,
        }
    }

    /// The message as stored: truncated to the documented limit.
    pub fn stored_message(&self) -> &str {
        limits::truncate_error_message(&self.message)
    }
}

/// Fails the current attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FailRequest {
    /// The worker's lease.
    pub fence: Fence,
    /// What went wrong.
    pub failure: Failure,
    /// Claim the worker's next executions in the same call.
    pub claim_next: Option<ClaimRequest>,
}

impl FailRequest {
    /// Fails with `failure` and claims nothing.
    pub fn new(fence: Fence, failure: Failure) -> Self {
        FailRequest {
            fence,
            failure,
            claim_next: None,
        }
    }

    /// Claims the worker's next executions in the same call.
    pub fn with_claim_next(mut self, claim: ClaimRequest) -> Self {
        self.claim_next = Some(claim);
        self
    }

    /// Checks the request against the documented limits.
    pub fn validate(&self) -> Result<(), EngineError> {
        if let Some(claim) = &self.claim_next {
            claim.validate("claim_next.")?;
        }
        Ok(())
    }
}

/// What a failed attempt led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailDisposition {
    /// Attempts are left: the execution is `delayed` until `available_at`.
    RetryScheduled {
        /// When the next attempt may be claimed (backend clock).
        available_at: Timestamp,
    },
    /// No attempts left, or the failure was not retryable: the execution is `failed`.
    Failed,
}

/// The answer to `fail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailOutcome {
    /// What happened to the execution.
    pub disposition: FailDisposition,
    /// Executions claimed by `claim_next`.
    pub next: Vec<ClaimedExecution>,
}

/// The answer to `cancel_execution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The execution was cancelled now; it was in `previous`.
    Cancelled {
        /// The state it was cancelled from.
        previous: ExecutionState,
    },
    /// It had already ended; nothing changed.
    AlreadyTerminal(ExecutionStatus),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane() -> Lane {
        Lane::new("default").unwrap()
    }

    #[test]
    fn spec_validation_names_fields() {
        let big = ExecutionSpec::new(lane(), vec![0; limits::MAX_PAYLOAD_BYTES + 1]);
        assert_eq!(
            big.validate("").unwrap_err().validation_field(),
            Some("payload")
        );
        let prio = ExecutionSpec::new(lane(), vec![]).with_priority(limits::MAX_PRIORITY + 1);
        assert_eq!(
            prio.validate("nodes[2].spec.")
                .unwrap_err()
                .validation_field(),
            Some("nodes[2].spec.priority")
        );
        let zero_timeout = ExecutionSpec::new(lane(), vec![]).with_attempt_timeout(Duration::ZERO);
        assert_eq!(
            zero_timeout.validate("").unwrap_err().validation_field(),
            Some("attempt_timeout")
        );
        let absurd =
            ExecutionSpec::new(lane(), vec![]).with_delay(Duration::from_secs(u64::MAX / 4));
        assert_eq!(
            absurd.validate("").unwrap_err().validation_field(),
            Some("delay")
        );
        assert!(
            ExecutionSpec::new(lane(), vec![1, 2, 3])
                .validate("")
                .is_ok()
        );
    }

    #[test]
    fn claim_validation() {
        let claim = ClaimRequest::new(WorkerId::random(), lane());
        assert!(claim.validate("").is_ok());
        assert_eq!(
            claim
                .clone()
                .with_max(0)
                .validate("")
                .unwrap_err()
                .validation_field(),
            Some("max")
        );
        assert_eq!(
            claim
                .clone()
                .with_lease_ttl(Duration::ZERO)
                .validate("")
                .unwrap_err()
                .validation_field(),
            Some("lease_ttl")
        );
    }

    #[test]
    fn capability_subset_matching() {
        let gpu = Capability::new("gpu").unwrap();
        let cuda = Capability::new("cuda").unwrap();
        let claim = ClaimRequest::new(WorkerId::random(), lane()).with_capability(gpu.clone());
        assert!(claim.offers_all(&BTreeSet::new()));
        assert!(claim.offers_all(&[gpu.clone()].into()));
        assert!(!claim.offers_all(&[gpu, cuda].into()));
    }
}
