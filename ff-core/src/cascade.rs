//! Completion records: the durable half of the cascade contract (DESIGN §4).
//!
//! 1. Every terminal transition of a flow member records a [`CompletionEvent`] in the same
//!    atomic unit as the transition.
//! 2. `cascade_completion(event)` applies each outgoing edge of the member exactly once in
//!    effect and retires the event only after all of them are applied.
//! 3. A backend may apply the cascade inline, inside the terminal transition, when the
//!    out-degree is small (see [`crate::Capabilities::inline_cascade_limit`]); large fan-outs
//!    are finished by the dispatch loop in bounded chunks. The observable effect is the same.
//! 4. Wake-ups are hints; correctness comes from draining these records.
//! 5. A crash at any point loses nothing: whoever next drains the partition finishes the work.

use serde::{Deserialize, Serialize};

use crate::id::{ExecutionId, FlowId};
use crate::state::ExecutionState;
use crate::time::Timestamp;

/// A flow member's terminal transition whose outgoing edges may not all be applied yet.
///
/// Identified by the execution: a member ends exactly once, so it has at most one completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompletionEvent {
    /// The member that ended.
    pub execution_id: ExecutionId,
    /// Its flow.
    pub flow_id: FlowId,
    /// Its terminal state.
    pub outcome: ExecutionState,
    /// When it ended (backend clock); the cascade lag is measured from here.
    pub recorded_at: Timestamp,
}

/// The answer to `cascade_completion`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CascadeProgress {
    /// Edges this call applied (0 when the event had already been retired).
    pub edges_applied: u32,
    /// Whether the event is retired: every edge applied. When false, call again.
    pub finished: bool,
}
