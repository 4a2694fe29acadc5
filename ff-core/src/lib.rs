//! FlowFabric core: the contract every backend implements and every other crate builds on.
//!
//! - [`partition`] and [`id`]: partition math (CRC16-XMODEM of the raw UUID bytes, hash tag
//!   `{fp:N}`) and validated ids — an [`ExecutionId`] embeds its partition.
//! - [`state`], [`execution`], [`flow`], [`policy`]: the execution and flow model, retry
//!   policy, and the pure validators every backend runs before writing.
//! - [`backend`]: the [`EngineBackend`] trait, with each method's contract (atomicity,
//!   idempotency, fencing, errors), and [`Capabilities`].
//! - [`cascade`], [`scan`], [`ownership`], [`hint`]: what the engine's dispatch loop,
//!   scanners and partition coordination call.
//! - [`keys`]: the Valkey key layout.
//! - [`memory`] (feature `memory`, on by default): the in-memory reference backend.
//! - `conformance` (feature `conformance`): the behaviour suite every backend passes.
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ff_core::EngineError> {
//! use std::sync::Arc;
//! use ff_core::{ClaimRequest, CompleteRequest, EngineBackend, ExecutionSpec, Lane, WorkerId};
//! use ff_core::memory::MemoryBackend;
//!
//! let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
//! let lane = Lane::new("emails")?;
//! let created = backend.create_execution(&ExecutionSpec::new(lane.clone(), b"hi".to_vec())).await?;
//!
//! let claimed = backend.claim(&ClaimRequest::new(WorkerId::random(), lane)).await?;
//! assert_eq!(claimed[0].id(), created.id);
//! backend.complete(&CompleteRequest::new(claimed[0].fence).with_result(b"sent".to_vec())).await?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```

pub mod backend;
pub mod cascade;
pub mod error;
pub mod execution;
pub mod flow;
pub mod hint;
pub mod id;
pub mod keys;
pub mod limits;
pub mod ownership;
pub mod partition;
pub mod policy;
pub mod scan;
pub mod snapshot;
pub mod state;
pub mod time;
pub mod wait;

#[cfg(feature = "memory")]
pub mod memory;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backend::{Capabilities, EngineBackend, HealthReport};
pub use cascade::{CascadeProgress, CompletionEvent};
pub use error::{Conflict, EngineError, EntityKind, FenceReason};
pub use execution::{
    CancelOutcome, ClaimRequest, ClaimedExecution, CompleteRequest, Completed, CreatedExecution,
    ExecutionSpec, FailDisposition, FailOutcome, FailRequest, Failure, Fence, UpstreamInput,
};
pub use flow::{
    CancelFlowMode, CancelFlowOutcome, CreatedFlow, DependencyGroup, EdgeKind, EdgeSpec, FlowPatch,
    FlowSpec, GroupPolicy, GroupVerdict, NodeSpec, OnSatisfied,
};
pub use hint::{Hint, HintReceiver};
pub use id::{
    Capability, ExecutionId, FlowId, IdempotencyKey, InstanceId, Lane, LeaseId, NodeKey, WorkerId,
};
pub use ownership::{InstanceInfo, PartitionGrant, PartitionOwner};
pub use partition::{Partition, PartitionConfig};
pub use policy::{Backoff, RetryPolicy};
pub use scan::{
    DueSummary, PartitionDue, ScanCursor, ScanFailure, ScanKind, ScanReport, ScanRequest,
};
pub use snapshot::{
    AttemptRecord, ExecutionSnapshot, ExecutionSummary, FlowCounts, FlowEdge, FlowMember,
    FlowSnapshot, GroupSnapshot, LeaseInfo, ListCursor, ListQuery, Page,
};
pub use state::{
    AttemptOutcome, CancelSource, EndReason, ExecutionState, ExecutionStatus, FlowState,
    OutcomeBucket,
};
pub use time::Timestamp;
