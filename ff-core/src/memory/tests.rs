//! Smoke tests of the reference backend's own mechanics. The behaviour contract itself is
//! proven by the conformance suite (`tests/conformance.rs`), in both cascade modes.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::EngineBackend;
use crate::error::{EngineError, FenceReason};
use crate::execution::{ClaimRequest, CompleteRequest, ExecutionSpec, FailRequest, Failure};
use crate::flow::{DependencyGroup, EdgeSpec, FlowSpec, NodeSpec, OnSatisfied};
use crate::id::{Lane, NodeKey, WorkerId};
use crate::policy::RetryPolicy;
use crate::scan::{ScanKind, ScanRequest};
use crate::state::{CancelSource, EndReason, ExecutionState, FlowState};
use crate::time::Timestamp;

use super::MemoryBackend;

fn backend(inline: u32) -> Arc<dyn EngineBackend> {
    Arc::new(
        MemoryBackend::builder()
            .inline_cascade_limit(inline)
            .frozen_clock(Timestamp::from_millis(1_000_000))
            .build(),
    )
}

fn lane() -> Lane {
    Lane::new("smoke").unwrap()
}

fn key(k: &str) -> NodeKey {
    NodeKey::new(k).unwrap()
}

fn node(k: &str) -> NodeSpec {
    NodeSpec::new(key(k), ExecutionSpec::new(lane(), k.as_bytes().to_vec()))
}

fn claim(max: u32) -> ClaimRequest {
    ClaimRequest::new(WorkerId::new("w").unwrap(), lane()).with_max(max)
}

async fn settle(backend: &Arc<dyn EngineBackend>) {
    loop {
        let mut any = false;
        for partition in backend.partition_config().all() {
            for event in backend.pending_completions(partition, 100).await.unwrap() {
                any = true;
                while !backend.cascade_completion(&event).await.unwrap().finished {}
            }
        }
        if !any {
            return;
        }
    }
}

#[tokio::test]
async fn chain_cascades_with_claim_next_in_both_modes() {
    for inline in [64, 0] {
        let backend = backend(inline);
        let spec = FlowSpec::new()
            .node(node("a"))
            .node(node("b"))
            .node(node("c"))
            .edge(EdgeSpec::new(key("a"), key("b")).passing_result())
            .edge(EdgeSpec::new(key("b"), key("c")));
        let created = backend.create_flow(&spec).await.unwrap();
        let mut current = backend.claim(&claim(10)).await.unwrap();
        assert_eq!(current.len(), 1, "only the root is claimable");
        let mut order = Vec::new();
        while let Some(next) = current.pop() {
            order.push(next.node_key.clone().unwrap());
            if next.node_key == Some(key("b")) {
                assert_eq!(next.inputs.len(), 1);
                assert_eq!(next.inputs[0].result.as_deref(), Some(&b"out-a"[..]));
            }
            let request = CompleteRequest::new(next.fence)
                .with_result(b"out-a".to_vec())
                .with_claim_next(claim(1));
            current = backend.complete(&request).await.unwrap().next;
            if current.is_empty() {
                settle(&backend).await;
                current = backend.claim(&claim(1)).await.unwrap();
            }
        }
        assert_eq!(order, vec![key("a"), key("b"), key("c")]);
        settle(&backend).await;
        let flow = backend.describe_flow(&created.flow_id).await.unwrap();
        assert_eq!(flow.state, FlowState::Succeeded, "inline={inline}");
        assert!(flow.edges.iter().all(|e| e.applied));
    }
}

#[tokio::test]
async fn any_of_with_cancel_remaining_does_not_fail_the_flow() {
    let backend = backend(64);
    let spec = FlowSpec::new()
        .node(node("fast"))
        .node(node("slow"))
        .node(node("join").with_group(DependencyGroup::any_of(OnSatisfied::CancelRemaining)))
        .edge(EdgeSpec::new(key("fast"), key("join")))
        .edge(EdgeSpec::new(key("slow"), key("join")));
    let created = backend.create_flow(&spec).await.unwrap();
    let claimed = backend.claim(&claim(2)).await.unwrap();
    let fast = claimed
        .iter()
        .find(|c| c.node_key == Some(key("fast")))
        .unwrap();
    let slow = claimed
        .iter()
        .find(|c| c.node_key == Some(key("slow")))
        .unwrap();
    backend
        .complete(&CompleteRequest::new(fast.fence))
        .await
        .unwrap();
    let err = backend
        .complete(&CompleteRequest::new(slow.fence))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Fenced {
                reason: FenceReason::StaleEpoch,
                ..
            }
        ),
        "{err}"
    );
    let join = backend.claim(&claim(1)).await.unwrap().remove(0);
    backend
        .complete(&CompleteRequest::new(join.fence))
        .await
        .unwrap();
    let flow = backend.describe_flow(&created.flow_id).await.unwrap();
    assert_eq!(flow.state, FlowState::Succeeded);
    let slow = flow.member(&key("slow")).unwrap();
    assert_eq!(
        slow.end_reason,
        Some(EndReason::Cancelled(CancelSource::GroupSatisfied))
    );
}

#[tokio::test]
async fn failure_skips_the_downstream_cone_and_fails_the_flow() {
    let backend = backend(64);
    let spec = FlowSpec::new()
        .node(node("a"))
        .node(node("b"))
        .node(node("c"))
        .node(node("cleanup"))
        .edge(EdgeSpec::new(key("a"), key("b")))
        .edge(EdgeSpec::new(key("b"), key("c")))
        .edge(EdgeSpec::new(key("a"), key("cleanup")).always());
    let created = backend.create_flow(&spec).await.unwrap();
    let a = backend.claim(&claim(1)).await.unwrap().remove(0);
    let outcome = backend
        .fail(&FailRequest::new(a.fence, Failure::permanent("boom")))
        .await
        .unwrap();
    assert_eq!(
        outcome.disposition,
        crate::execution::FailDisposition::Failed
    );
    let flow = backend.describe_flow(&created.flow_id).await.unwrap();
    assert_eq!(
        flow.member(&key("b")).unwrap().state,
        ExecutionState::Skipped
    );
    assert_eq!(
        flow.member(&key("c")).unwrap().state,
        ExecutionState::Skipped
    );
    let cleanup = backend.claim(&claim(1)).await.unwrap().remove(0);
    assert_eq!(cleanup.node_key, Some(key("cleanup")));
    backend
        .complete(&CompleteRequest::new(cleanup.fence))
        .await
        .unwrap();
    let flow = backend.describe_flow(&created.flow_id).await.unwrap();
    assert_eq!(flow.state, FlowState::Failed);
    assert_eq!(flow.counts.terminal, 4);
}

#[tokio::test]
async fn lease_expiry_retries_then_fails() {
    let backend = backend(64);
    let spec = ExecutionSpec::new(lane(), vec![])
        .with_retry(RetryPolicy::fixed(2, Duration::from_millis(100)));
    let id = backend.create_execution(&spec).await.unwrap().id;
    let ttl = Duration::from_millis(50);
    for attempt in 1..=2 {
        let claimed = backend.claim(&claim(1).with_lease_ttl(ttl)).await.unwrap();
        assert_eq!(claimed[0].attempt, attempt);
        backend
            .advance_clock(Duration::from_millis(60))
            .await
            .unwrap();
        let err = backend
            .complete(&CompleteRequest::new(claimed[0].fence))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            EngineError::Fenced {
                reason: FenceReason::LeaseExpired,
                ..
            }
        ));
        let partition = id.partition();
        let report = backend
            .scan(&ScanRequest::new(partition, ScanKind::LeaseExpiry, 10))
            .await
            .unwrap();
        assert_eq!(report.processed, 1);
        backend
            .advance_clock(Duration::from_millis(100))
            .await
            .unwrap();
        backend
            .scan(&ScanRequest::new(partition, ScanKind::DelayedPromotion, 10))
            .await
            .unwrap();
    }
    let snapshot = backend.describe_execution(&id).await.unwrap();
    assert_eq!(snapshot.state(), ExecutionState::Failed);
    assert_eq!(
        snapshot.status.end_reason,
        Some(EndReason::AttemptsExhausted)
    );
    assert_eq!(snapshot.attempts.len(), 2);
    assert_eq!(snapshot.status.epoch, 4, "two claims and two expiries");
}
