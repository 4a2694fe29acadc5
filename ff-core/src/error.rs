//! The one error type every backend returns (DESIGN §5).
//!
//! Callers ask one question of an error: [`EngineError::is_retryable`]. Everything else is
//! there to say precisely what was wrong: which field of the input, which nodes form a cycle,
//! what the current state and epoch of a fenced execution are.

use std::fmt;
use std::sync::Arc;

use crate::id::{ExecutionId, FlowId, NodeKey};
use crate::state::{ExecutionStatus, FlowState};

/// What kind of thing was not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// An execution.
    Execution,
    /// A flow.
    Flow,
    /// A node of a flow, by key.
    Node,
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntityKind::Execution => "execution",
            EntityKind::Flow => "flow",
            EntityKind::Node => "node",
        })
    }
}

/// Why a fenced write was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FenceReason {
    /// The execution has been claimed (or expired, or cancelled) since: the fence's epoch is
    /// not the current one.
    StaleEpoch,
    /// The epoch matches but the lease id does not: the fence was never issued for this lease.
    LeaseMismatch,
    /// The lease is current but its expiry has passed by the backend's clock (the lease-expiry
    /// scanner may not have run yet).
    LeaseExpired,
}

impl fmt::Display for FenceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FenceReason::StaleEpoch => "stale epoch",
            FenceReason::LeaseMismatch => "lease id mismatch",
            FenceReason::LeaseExpired => "lease expired",
        })
    }
}

/// A structural conflict with existing state or within a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// The edges form a cycle; `nodes` lists the nodes of one cycle in order.
    Cycle {
        /// The nodes on the cycle, starting anywhere, each followed by its downstream.
        nodes: Vec<NodeKey>,
    },
    /// The same `from → to` edge was given twice.
    DuplicateEdge {
        /// Upstream node.
        from: NodeKey,
        /// Downstream node.
        to: NodeKey,
    },
    /// A node key was used twice, or is already used in the flow.
    DuplicateNode {
        /// The repeated key.
        key: NodeKey,
    },
    /// The flow no longer accepts new nodes: it finished or was cancelled.
    FlowNotOpen {
        /// The flow.
        flow_id: FlowId,
        /// Its state.
        state: FlowState,
        /// Whether a cancel was requested.
        cancel_requested: bool,
    },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::Cycle { nodes } => {
                f.write_str("the edges form a cycle: ")?;
                for node in nodes {
                    write!(f, "{node} → ")?;
                }
                match nodes.first() {
                    Some(first) => write!(f, "{first}"),
                    None => Ok(()),
                }
            }
            Conflict::DuplicateEdge { from, to } => write!(f, "duplicate edge {from} → {to}"),
            Conflict::DuplicateNode { key } => write!(f, "duplicate node key {key}"),
            Conflict::FlowNotOpen {
                flow_id,
                state,
                cancel_requested,
            } => {
                write!(f, "flow {flow_id} is not open (state {state}")?;
                if *cancel_requested {
                    f.write_str(", cancel requested")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Every error a backend returns.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The execution, flow or node does not exist (or was removed by retention).
    #[error("{kind} not found: {id}")]
    NotFound {
        /// What was looked up.
        kind: EntityKind,
        /// The id or key that was not found.
        id: String,
    },
    /// Bad input; `field` names the offending part of the request.
    #[error("invalid {field}: {reason}")]
    Validation {
        /// The offending field, e.g. `lane`, `nodes[3].key`, `execution_id`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request conflicts with the graph it builds or with existing state.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// A worker write carried a fence that is not the execution's current, live lease.
    #[error("execution {execution_id} fenced ({reason}); current {current}")]
    Fenced {
        /// The execution.
        execution_id: ExecutionId,
        /// Why the fence was rejected.
        reason: FenceReason,
        /// Its current status.
        current: ExecutionStatus,
    },
    /// The operation needs an execution in another state (e.g. `fail` after the same lease
    /// already completed it, `change_priority` on a terminal execution).
    #[error("execution {execution_id} is not active: {current}")]
    NotActive {
        /// The execution.
        execution_id: ExecutionId,
        /// Its current status.
        current: ExecutionStatus,
    },
    /// Transient contention (serialization failure, deadlock, lock timeout); retry the call.
    #[error("contention: {0}")]
    Contention(String),
    /// The backend could not be reached or answered with a protocol error.
    #[error("transport error: {message}")]
    Transport {
        /// What happened.
        message: String,
        /// Whether retrying the same call may succeed (connection reset, failover, timeout).
        retryable: bool,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend does not support this operation (see [`crate::Capabilities`]).
    #[error("{operation} is not supported by the {backend} backend")]
    Unavailable {
        /// The operation that was called.
        operation: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
    /// The backend's configuration or stored state does not match this code: partition count
    /// mismatch, schema or library newer than the code, server too old.
    #[error("configuration error: {0}")]
    Config(String),
    /// Stored data could not be decoded: a bug or outside interference, never bad input.
    #[error("corrupt backend state: {0}")]
    Corrupt(String),
}

impl EngineError {
    /// The one question callers ask: may retrying the same call succeed?
    ///
    /// True for [`EngineError::Contention`] and for [`EngineError::Transport`] errors marked
    /// retryable; false for everything that will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Contention(_) => true,
            EngineError::Transport { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// A [`EngineError::Validation`] error.
    pub fn validation(field: impl Into<String>, reason: impl Into<String>) -> Self {
        EngineError::Validation {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A [`EngineError::NotFound`] error for an execution.
    pub fn execution_not_found(id: &ExecutionId) -> Self {
        EngineError::NotFound {
            kind: EntityKind::Execution,
            id: id.to_string(),
        }
    }

    /// A [`EngineError::NotFound`] error for a flow.
    pub fn flow_not_found(id: &FlowId) -> Self {
        EngineError::NotFound {
            kind: EntityKind::Flow,
            id: id.to_string(),
        }
    }

    /// A [`EngineError::Transport`] error with a source.
    pub fn transport(
        message: impl Into<String>,
        retryable: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        EngineError::Transport {
            message: message.into(),
            retryable,
            source: Some(Arc::new(source)),
        }
    }

    /// The field of a [`EngineError::Validation`] error, for tests and diagnostics.
    pub fn validation_field(&self) -> Option<&str> {
        match self {
            EngineError::Validation { field, .. } => Some(field),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability() {
        assert!(EngineError::Contention("deadlock".into()).is_retryable());
        assert!(
            EngineError::Transport {
                message: "reset".into(),
                retryable: true,
                source: None
            }
            .is_retryable()
        );
        assert!(!EngineError::validation("lane", "empty").is_retryable());
        assert!(
            !EngineError::Unavailable {
                operation: "advance_clock",
                backend: "x"
            }
            .is_retryable()
        );
    }

    #[test]
    fn cycle_message_names_the_nodes() {
        let err = EngineError::Conflict(Conflict::Cycle {
            nodes: vec![NodeKey::new("a").unwrap(), NodeKey::new("b").unwrap()],
        });
        assert_eq!(
            err.to_string(),
            "conflict: the edges form a cycle: a → b → a"
        );
    }
}
