//! Wake-up hints (DESIGN §4, contract item 4).
//!
//! A backend that can push notifications (Valkey pub/sub, Postgres `LISTEN/NOTIFY`, an
//! in-process channel) offers a stream of hints so the engine and workers react without
//! polling. Hints may be lost, duplicated or late: they only ever cost latency, never
//! correctness, because every consumer also sweeps the durable state periodically.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::id::{FlowId, Lane};
use crate::partition::Partition;

/// Something may have changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Hint {
    /// A partition has pending completions to cascade.
    CompletionPending {
        /// The partition.
        partition: Partition,
    },
    /// A lane has new ready work on a partition.
    WorkReady {
        /// The partition.
        partition: Partition,
        /// The lane.
        lane: Lane,
    },
    /// A flow reached a terminal state.
    FlowFinished {
        /// The flow.
        flow_id: FlowId,
    },
    /// Hints were dropped because the receiver fell behind: anything may have changed.
    Lagged,
}

/// A subscription to a backend's hints.
#[derive(Debug)]
pub struct HintReceiver {
    inner: broadcast::Receiver<Hint>,
}

impl HintReceiver {
    /// Wraps a broadcast receiver (for backend implementations).
    pub fn new(inner: broadcast::Receiver<Hint>) -> Self {
        HintReceiver { inner }
    }

    /// The next hint; [`Hint::Lagged`] after a gap; `None` once the backend is gone.
    pub async fn recv(&mut self) -> Option<Hint> {
        match self.inner.recv().await {
            Ok(hint) => Some(hint),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Hint::Lagged),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
