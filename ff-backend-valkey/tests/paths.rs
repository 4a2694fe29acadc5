//! The main paths against real servers (standalone and cluster, whichever are configured).

mod common;

use std::time::Duration;

use ff_core::{
    ClaimRequest, CompleteRequest, EdgeSpec, EngineBackend, ExecutionSpec, ExecutionState,
    FailDisposition, FailRequest, Failure, FlowSpec, FlowState, Lane, NodeKey, NodeSpec,
    RetryPolicy, WorkerId,
};

fn key(k: &str) -> NodeKey {
    NodeKey::new(k).expect("valid node key")
}

#[tokio::test]
async fn submit_claim_complete_fail_retry() {
    if common::none_configured("submit_claim_complete_fail_retry") {
        return;
    }
    for (label, config) in common::configs("paths", 16) {
        let backend = common::connect(config).await.expect("connect");
        let lane = Lane::new("emails").expect("lane");
        let created = backend
            .create_execution(&ExecutionSpec::new(lane.clone(), b"hello".to_vec()))
            .await
            .expect("create");
        let worker = WorkerId::random();
        let claimed = backend
            .claim(&ClaimRequest::new(worker.clone(), lane.clone()))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1, "{label}");
        assert_eq!(claimed[0].id(), created.id, "{label}");
        assert_eq!(claimed[0].payload, b"hello", "{label}");
        backend
            .complete(&CompleteRequest::new(claimed[0].fence).with_result(vec![7; 100]))
            .await
            .expect("complete");
        // Repeat is idempotent.
        backend
            .complete(&CompleteRequest::new(claimed[0].fence))
            .await
            .expect("repeat complete");
        let snap = backend
            .describe_execution(&created.id)
            .await
            .expect("describe");
        assert_eq!(snap.state(), ExecutionState::Succeeded, "{label}");
        assert_eq!(snap.result.as_deref(), Some(&[7u8; 100][..]), "{label}");
        assert_eq!(snap.attempts.len(), 1, "{label}");

        // Retry path.
        let spec = ExecutionSpec::new(lane.clone(), vec![1; 200])
            .with_retry(RetryPolicy::fixed(2, Duration::from_secs(5)));
        let created = backend.create_execution(&spec).await.expect("create");
        let claimed = backend
            .claim(&ClaimRequest::new(worker.clone(), lane.clone()))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1, "{label}");
        let out = backend
            .fail(&FailRequest::new(
                claimed[0].fence,
                Failure::retryable("boom"),
            ))
            .await
            .expect("fail");
        assert!(
            matches!(out.disposition, FailDisposition::RetryScheduled { .. }),
            "{label}"
        );
        assert!(
            backend
                .claim(&ClaimRequest::new(worker.clone(), lane.clone()))
                .await
                .expect("claim")
                .is_empty(),
            "{label}: delayed must not be claimable"
        );
        backend
            .advance_clock(Duration::from_secs(5))
            .await
            .expect("advance");
        let again = backend
            .claim(&ClaimRequest::new(worker.clone(), lane.clone()))
            .await
            .expect("claim");
        assert_eq!(again.len(), 1, "{label}");
        assert_eq!(again[0].id(), created.id, "{label}");
        assert_eq!(again[0].attempt, 2, "{label}");
        let out = backend
            .fail(&FailRequest::new(
                again[0].fence,
                Failure::retryable("boom"),
            ))
            .await
            .expect("fail");
        assert_eq!(out.disposition, FailDisposition::Failed, "{label}");
        let snap = backend
            .describe_execution(&created.id)
            .await
            .expect("describe");
        assert_eq!(snap.state(), ExecutionState::Failed, "{label}");
        assert_eq!(snap.attempts.len(), 2, "{label}");
        assert_eq!(snap.payload, vec![1; 200], "{label}");
    }
}

#[tokio::test]
async fn chain_cascades_inline_with_claim_next() {
    if common::none_configured("chain_cascades_inline_with_claim_next") {
        return;
    }
    for (label, config) in common::configs("chain", 16) {
        let backend = common::connect(config).await.expect("connect");
        let lane = Lane::new("chain").expect("lane");
        let mut spec = FlowSpec::new();
        for i in 0..10 {
            spec = spec.node(NodeSpec::new(
                key(&format!("n{i}")),
                ExecutionSpec::new(lane.clone(), vec![i]),
            ));
            if i > 0 {
                spec = spec.edge(
                    EdgeSpec::new(key(&format!("n{}", i - 1)), key(&format!("n{i}")))
                        .passing_result(),
                );
            }
        }
        let flow = backend.create_flow(&spec).await.expect("create flow");
        let worker = WorkerId::random();
        let claim = ClaimRequest::new(worker.clone(), lane.clone());
        let mut current = backend.claim(&claim).await.expect("claim");
        let before = backend.call_counts();
        let mut executed = 0;
        while let Some(c) = current.pop() {
            executed += 1;
            let done = backend
                .complete(
                    &CompleteRequest::new(c.fence)
                        .with_result(vec![executed])
                        .with_claim_next(claim.clone()),
                )
                .await
                .expect("complete");
            current = done.next;
            if let Some(n) = current.first() {
                assert_eq!(n.inputs.len(), 1, "{label}");
                assert_eq!(
                    n.inputs[0].result.as_deref(),
                    Some(&[executed][..]),
                    "{label}"
                );
            }
        }
        let after = backend.call_counts();
        assert_eq!(executed, 10, "{label}");
        eprintln!(
            "{label}: chain of 10: {} FCALLs, {} round trips after the first claim",
            after.fcalls - before.fcalls,
            after.round_trips - before.round_trips
        );
        let snap = backend
            .describe_flow(&flow.flow_id)
            .await
            .expect("describe");
        assert_eq!(snap.state, FlowState::Succeeded, "{label}");
        assert_eq!(snap.counts.terminal, 10, "{label}");
    }
}

/// complete + claim_next whose cascade readies members of the claimed lane (which the library
/// may hand to the claim directly instead of adding them to the ready set) takes what a claim
/// of the ready set would: the only new member, the higher priority first, an older ready
/// execution before a new member; and a member with a deadline the ordinary way.
#[tokio::test]
async fn claim_next_after_a_cascade_keeps_the_ready_order() {
    if common::none_configured("claim_next_after_a_cascade_keeps_the_ready_order") {
        return;
    }
    // One partition: the flows and the standalone execution share the ready sets.
    for (label, config) in common::configs("handoff", 1) {
        let backend = common::connect(config).await.expect("connect");
        let lane = Lane::new("handoff").expect("lane");
        let spec = |payload: u8| ExecutionSpec::new(lane.clone(), vec![payload; 3]);
        let claim = ClaimRequest::new(WorkerId::random(), lane.clone());
        let complete_next = |c: &ff_core::ClaimedExecution| {
            CompleteRequest::new(c.fence).with_claim_next(claim.clone())
        };

        // root -> a (priority 0), root -> b (priority 5), root -> d (deadline).
        let flow = FlowSpec::new()
            .node(NodeSpec::new(key("root"), spec(0)))
            .node(NodeSpec::new(key("a"), spec(1)))
            .node(NodeSpec::new(key("b"), spec(2).with_priority(5)))
            .node(NodeSpec::new(
                key("d"),
                spec(3).with_deadline(Duration::from_secs(3600)),
            ))
            .edge(EdgeSpec::new(key("root"), key("a")))
            .edge(EdgeSpec::new(key("root"), key("b")))
            .edge(EdgeSpec::new(key("root"), key("d")));
        let created = backend.create_flow(&flow).await.expect("create flow");
        let root = backend.claim(&claim).await.expect("claim");
        assert_eq!(root.len(), 1, "{label}");
        let done = backend
            .complete(&complete_next(&root[0]))
            .await
            .expect("complete root");
        assert_eq!(done.next.len(), 1, "{label}");
        assert_eq!(
            done.next[0].node_key,
            Some(key("b")),
            "{label}: priority first"
        );
        assert_eq!(done.next[0].payload, vec![2; 3], "{label}");
        assert_eq!(done.next[0].priority, 5, "{label}");
        let mut order = vec![key("b")];
        let mut current = done.next;
        while let Some(c) = current.pop() {
            current = backend
                .complete(&complete_next(&c))
                .await
                .expect("complete")
                .next;
            if let Some(n) = current.first() {
                assert!(
                    n.deadline.is_some() == (n.node_key == Some(key("d"))),
                    "{label}"
                );
                order.push(n.node_key.clone().expect("a member"));
            }
        }
        assert_eq!(order, vec![key("b"), key("a"), key("d")], "{label}");
        let snap = backend
            .describe_flow(&created.flow_id)
            .await
            .expect("describe flow");
        assert_eq!(snap.state, FlowState::Succeeded, "{label}");

        // An older ready execution of the lane goes before the member the cascade readies.
        let flow = FlowSpec::new()
            .node(NodeSpec::new(key("up"), spec(4)))
            .node(NodeSpec::new(key("down"), spec(5)))
            .edge(EdgeSpec::new(key("up"), key("down")));
        backend.create_flow(&flow).await.expect("create flow");
        let up = backend.claim(&claim).await.expect("claim");
        assert_eq!(up.len(), 1, "{label}");
        let older = backend.create_execution(&spec(6)).await.expect("create");
        let next = backend
            .complete(&complete_next(&up[0]))
            .await
            .expect("complete up")
            .next;
        assert_eq!(next.len(), 1, "{label}");
        assert_eq!(
            next[0].id(),
            older.id,
            "{label}: the older ready execution first"
        );
        let down = backend
            .complete(&complete_next(&next[0]))
            .await
            .expect("complete older")
            .next;
        assert_eq!(down.len(), 1, "{label}");
        assert_eq!(down[0].node_key, Some(key("down")), "{label}");
        let snap = backend
            .describe_execution(&down[0].id())
            .await
            .expect("describe");
        assert_eq!(snap.state(), ExecutionState::Running, "{label}");
        assert_eq!(snap.attempts.len(), 1, "{label}");
    }
}
