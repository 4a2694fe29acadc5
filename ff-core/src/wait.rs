//! Waiting for a flow to finish: the observable flow completion (DESIGN §4).
//!
//! Uses the backend's hints when it has them, and polls `describe_flow` otherwise (and after
//! every hint gap), so a lost hint costs at most one poll interval.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::EngineBackend;
use crate::error::EngineError;
use crate::hint::Hint;
use crate::id::FlowId;
use crate::snapshot::FlowSnapshot;

/// Waits until `flow` is terminal and returns its final snapshot, or `Ok(None)` when
/// `timeout` passes first. Polls every `poll` (and on every hint about the flow).
pub async fn wait_for_flow(
    backend: &Arc<dyn EngineBackend>,
    flow: &FlowId,
    timeout: Duration,
    poll: Duration,
) -> Result<Option<FlowSnapshot>, EngineError> {
    let mut hints = if backend.capabilities().hints {
        Some(backend.subscribe_hints().await?)
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let snapshot = backend.describe_flow(flow).await?;
        if snapshot.state.is_terminal() {
            return Ok(Some(snapshot));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let nap = poll.min(deadline - now);
        match hints.as_mut() {
            Some(rx) => {
                let _ = tokio::time::timeout(nap, async {
                    loop {
                        match rx.recv().await {
                            Some(Hint::FlowFinished { flow_id }) if flow_id == *flow => break,
                            Some(Hint::Lagged) => break,
                            Some(_) => continue,
                            None => {
                                tokio::time::sleep(nap).await;
                                break;
                            }
                        }
                    }
                })
                .await;
            }
            None => tokio::time::sleep(nap).await,
        }
    }
}
