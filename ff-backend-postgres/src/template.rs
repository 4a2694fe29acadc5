//! Building ff-core's `#[non_exhaustive]` answer types from another crate.
//!
//! `ClaimedExecution`, `ExecutionSnapshot` and `FlowSnapshot` are `#[non_exhaustive]` with
//! public fields but no constructor, so this crate cannot write them as struct literals. It
//! deserializes one blank value of each (once, from JSON), clones it and assigns every field.
//! A field added to ff-core later keeps the blank's value until this crate learns about it.

use std::sync::LazyLock;

use ff_core::{ClaimedExecution, ExecutionSnapshot, FlowSnapshot};
use serde_json::json;

const BLANK_ID: &str = "{fp:0}:00000000-0000-0000-0000-000000000000";
const BLANK_UUID: &str = "00000000-0000-0000-0000-000000000000";

static CLAIMED: LazyLock<ClaimedExecution> = LazyLock::new(|| {
    serde_json::from_value(json!({
        "fence": { "execution_id": BLANK_ID, "lease_id": BLANK_UUID, "epoch": 0 },
        "attempt": 0,
        "lane": "blank",
        "priority": 0,
        "payload": [],
        "inputs": [],
        "flow_id": null,
        "node_key": null,
        "lease_expires_at": 0,
        "attempt_deadline": null,
        "deadline": null,
    }))
    .expect("invariant: the blank ClaimedExecution matches ff-core's serde shape")
});

static SNAPSHOT: LazyLock<ExecutionSnapshot> = LazyLock::new(|| {
    serde_json::from_value(json!({
        "id": BLANK_ID,
        "flow": null,
        "status": { "state": "ready", "epoch": 0, "attempt": 0, "end_reason": null },
        "lane": "blank",
        "priority": 0,
        "required_capabilities": [],
        "payload": [],
        "retry": { "max_attempts": 1, "backoff": { "fixed": { "secs": 0, "nanos": 0 } } },
        "created_at": 0,
        "available_at": null,
        "deadline": null,
        "lease": null,
        "progress": null,
        "result": null,
        "finished_at": null,
        "attempts": [],
    }))
    .expect("invariant: the blank ExecutionSnapshot matches ff-core's serde shape")
});

static FLOW: LazyLock<FlowSnapshot> = LazyLock::new(|| {
    serde_json::from_value(json!({
        "id": BLANK_UUID,
        "state": "running",
        "cancel_requested": false,
        "counts": { "total": 0, "terminal": 0, "failing": 0 },
        "created_at": 0,
        "finished_at": null,
        "members": [],
        "edges": [],
        "groups": [],
    }))
    .expect("invariant: the blank FlowSnapshot matches ff-core's serde shape")
});

/// A blank claimed execution, every field to be assigned.
pub(crate) fn claimed() -> ClaimedExecution {
    CLAIMED.clone()
}

/// A blank execution snapshot, every field to be assigned.
pub(crate) fn snapshot() -> ExecutionSnapshot {
    SNAPSHOT.clone()
}

/// A blank flow snapshot, every field to be assigned.
pub(crate) fn flow() -> FlowSnapshot {
    FLOW.clone()
}

#[cfg(test)]
mod tests {
    #[test]
    fn blanks_deserialize() {
        assert_eq!(super::claimed().attempt, 0);
        assert!(super::snapshot().attempts.is_empty());
        assert!(super::flow().members.is_empty());
    }
}
