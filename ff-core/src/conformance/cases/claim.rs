//! Claiming: order, lanes, capabilities, batches, and what a claim hands out.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::conformance::check::{CaseResult, ensure, ensure_eq};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{FlowBuilder, spec};
use crate::execution::ClaimRequest;
use crate::id::{Capability, ExecutionId};
use crate::state::ExecutionState;

fn capability(name: &str) -> Capability {
    Capability::new(name).expect("capability names written in the cases are valid")
}

/// Within a partition: higher priority first, then the one that became ready first.
pub(crate) async fn priority_then_age(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("order");
    let priorities = [0, 5, 0, 5, -1, 7];
    let (_, keys) = ctx.keys_on_one_partition(priorities.len());
    let mut ids = Vec::new();
    for (priority, key) in priorities.iter().zip(keys) {
        let created = ctx
            .backend()
            .create_execution(
                &spec(&lane, &format!("p{priority}"))
                    .with_priority(*priority)
                    .with_idempotency_key(key),
            )
            .await?;
        ensure!(created.created, "a new idempotency key creates");
        ids.push(created.id);
    }
    // Expected: 7, 5 (first), 5 (second), 0 (first), 0 (second), -1.
    let expected = [ids[5], ids[1], ids[3], ids[0], ids[2], ids[4]];
    for (i, want) in expected.iter().enumerate() {
        let claimed = ctx.claim_one(&lane).await?;
        ensure_eq!(
            claimed.id(),
            *want,
            "claim #{i} (priorities {priorities:?})"
        );
    }
    ctx.ensure_nothing_claimable(&lane, "after claiming all")
        .await
}

/// Members of one flow share a partition, so their claim order is strict as well.
pub(crate) async fn priority_order_within_a_flow(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("flow-order");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .node_with("low", |s| s.with_priority(-3))
                .node_with("high", |s| s.with_priority(9))
                .node_with("mid", |s| s.with_priority(2))
                .build(),
        )
        .await?;
    for key in ["high", "mid", "low"] {
        let claimed = ctx.claim_one(&lane).await?;
        ensure_eq!(claimed.id(), flow.id(key)?, "claim order by priority");
        ensure_eq!(
            claimed.node_key.as_ref().map(|k| k.as_str()),
            Some(key),
            "node_key of the claim"
        );
        ensure_eq!(claimed.flow_id, Some(flow.id), "flow_id of the claim");
    }
    Ok(())
}

/// Work of one lane is never handed to a worker of another.
pub(crate) async fn lanes_do_not_mix(ctx: TestContext) -> CaseResult {
    let a = ctx.lane("a");
    let b = ctx.lane("b");
    let mut in_a = BTreeSet::new();
    for i in 0..3 {
        in_a.insert(ctx.create(&spec(&a, &format!("a{i}"))).await?);
    }
    let in_b = ctx.create(&spec(&b, "b0")).await?;
    let claimed = ctx.claim(&a, 10).await?;
    let got: BTreeSet<ExecutionId> = claimed.iter().map(|c| c.id()).collect();
    ensure_eq!(got, in_a, "a claim of lane a returns exactly lane a's work");
    ensure!(
        claimed.iter().all(|c| c.lane == a),
        "claimed executions carry their lane"
    );
    ctx.ensure_nothing_claimable(&a, "lane a is drained")
        .await?;
    let claimed = ctx.claim(&b, 10).await?;
    ensure_eq!(
        claimed.iter().map(|c| c.id()).collect::<Vec<_>>(),
        vec![in_b],
        "lane b"
    );
    Ok(())
}

/// A worker gets an execution only if it offers every capability the execution requires,
/// even when ineligible work sits ahead of eligible work.
pub(crate) async fn capability_subset_matching(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("caps");
    let gpu = capability("gpu");
    let cuda = capability("cuda");
    // Ineligible work first and at a higher priority: a claim must look past it.
    let needs_both = ctx
        .create(
            &spec(&lane, "gpu+cuda")
                .with_priority(10)
                .with_capability(gpu.clone())
                .with_capability(cuda.clone()),
        )
        .await?;
    let needs_gpu = ctx
        .create(
            &spec(&lane, "gpu")
                .with_priority(5)
                .with_capability(gpu.clone()),
        )
        .await?;
    let needs_nothing = ctx.create(&spec(&lane, "plain")).await?;

    let request = |caps: Vec<Capability>| {
        ClaimRequest::new(ctx.worker(), lane.clone())
            .with_capabilities(caps)
            .with_max(10)
    };
    let claimed = ctx.backend().claim(&request(vec![cuda.clone()])).await?;
    let got: Vec<_> = claimed.iter().map(|c| c.id()).collect();
    ensure_eq!(got, vec![needs_nothing], "a worker offering only cuda");
    let claimed = ctx.backend().claim(&request(vec![gpu.clone()])).await?;
    let got: Vec<_> = claimed.iter().map(|c| c.id()).collect();
    ensure_eq!(got, vec![needs_gpu], "a worker offering gpu");
    let claimed = ctx.backend().claim(&request(vec![])).await?;
    ensure!(
        claimed.is_empty(),
        "a worker offering nothing gets nothing left: {claimed:?}"
    );
    let claimed = ctx
        .backend()
        .claim(&request(vec![cuda, gpu, capability("extra")]))
        .await?;
    let got: Vec<_> = claimed.iter().map(|c| c.id()).collect();
    ensure_eq!(got, vec![needs_both], "a worker offering a superset");
    Ok(())
}

/// A batch claim leases up to `max`, and fewer when less is ready; never one twice.
pub(crate) async fn batch_claim(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("batch");
    let (_, keys) = ctx.keys_on_one_partition(5);
    let mut created = BTreeSet::new();
    for key in keys {
        let c = ctx
            .backend()
            .create_execution(&spec(&lane, "x").with_idempotency_key(key))
            .await?;
        created.insert(c.id);
    }
    let first = ctx.claim(&lane, 3).await?;
    ensure_eq!(first.len(), 3, "a claim of 3 with 5 ready (one partition)");
    let second = ctx.claim(&lane, 10).await?;
    ensure_eq!(second.len(), 2, "a claim of 10 with 2 left");
    let all: Vec<ExecutionId> = first.iter().chain(&second).map(|c| c.id()).collect();
    let distinct: BTreeSet<ExecutionId> = all.iter().copied().collect();
    ensure_eq!(
        distinct.len(),
        all.len(),
        "no execution is claimed twice: {all:?}"
    );
    ensure_eq!(
        distinct,
        created,
        "the claims return exactly the created executions"
    );
    for claimed in first.iter().chain(&second) {
        ensure_eq!(claimed.attempt, 1, "first claim is attempt 1");
        ctx.ensure_state(&claimed.id(), ExecutionState::Running, "claimed")
            .await?;
    }
    ctx.ensure_nothing_claimable(&lane, "all claimed").await
}

/// What a claim hands out: payload, lease, attempt, deadlines, and the running snapshot.
pub(crate) async fn claim_describes_the_lease(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("lease");
    let id = ctx
        .create(
            &spec(&lane, "payload")
                .with_priority(3)
                .with_attempt_timeout(Duration::from_secs(600))
                .with_deadline(Duration::from_secs(3600)),
        )
        .await?;
    let worker = ctx.worker();
    let ttl = Duration::from_secs(30);
    let before = ctx.now().await?;
    let claimed = ctx
        .claim_one_with(ClaimRequest::new(worker.clone(), lane.clone()).with_lease_ttl(ttl))
        .await?;
    let after = ctx.now().await?;
    ensure_eq!(claimed.id(), id, "claimed id");
    ensure_eq!(claimed.payload, b"payload".to_vec(), "payload");
    ensure_eq!(claimed.priority, 3, "priority");
    ensure_eq!(claimed.lane, lane, "lane");
    ensure_eq!(claimed.attempt, 1, "attempt");
    ensure!(
        claimed.inputs.is_empty(),
        "a standalone execution has no inputs"
    );
    ensure!(
        claimed.flow_id.is_none() && claimed.node_key.is_none(),
        "standalone"
    );
    ensure!(
        claimed.lease_expires_at >= before.saturating_add(ttl)
            && claimed.lease_expires_at <= after.saturating_add(ttl),
        "lease expires ttl after the claim (backend clock): {} not in [{}, {}]",
        claimed.lease_expires_at,
        before.saturating_add(ttl),
        after.saturating_add(ttl)
    );
    let attempt_deadline = claimed.attempt_deadline;
    ensure!(
        attempt_deadline.is_some_and(|d| d >= before.saturating_add(Duration::from_secs(600))
            && d <= after.saturating_add(Duration::from_secs(600))),
        "attempt deadline = claim time + attempt timeout, got {attempt_deadline:?}"
    );
    ensure!(
        claimed.deadline.is_some(),
        "the execution deadline is handed out"
    );

    let snapshot = ctx.describe(&id).await?;
    ensure_eq!(snapshot.state(), ExecutionState::Running, "state");
    ensure_eq!(
        snapshot.status.epoch,
        claimed.fence.epoch,
        "epoch of the snapshot"
    );
    ensure_eq!(snapshot.status.attempt, 1, "attempts started");
    let lease = snapshot.lease.clone();
    ensure!(
        lease
            .as_ref()
            .is_some_and(|l| l.lease_id == claimed.fence.lease_id
                && l.worker == worker
                && l.expires_at == claimed.lease_expires_at),
        "the snapshot shows the lease: {lease:?}"
    );
    ensure_eq!(snapshot.attempts.len(), 1, "one attempt record");
    let attempt = &snapshot.attempts[0];
    ensure!(
        attempt.number == 1
            && attempt.worker == worker
            && attempt.lease_id == claimed.fence.lease_id
            && attempt.epoch == claimed.fence.epoch
            && attempt.ended_at.is_none()
            && attempt.outcome.is_none(),
        "the running attempt record: {attempt:?}"
    );
    Ok(())
}

/// Every claim moves the execution to a new epoch.
pub(crate) async fn claims_bump_the_epoch(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("epoch");
    let id = ctx
        .create(&crate::conformance::fixtures::retrying(
            &lane,
            3,
            Duration::from_millis(10),
        ))
        .await?;
    let before = ctx.describe(&id).await?.status.epoch;
    let first = ctx.claim_one(&lane).await?;
    ensure!(
        first.fence.epoch > before,
        "claim bumps the epoch ({before} → {})",
        first.fence.epoch
    );
    ctx.backend()
        .fail(&crate::execution::FailRequest::new(
            first.fence,
            crate::execution::Failure::retryable("again"),
        ))
        .await?;
    ctx.advance(Duration::from_millis(20)).await?;
    ctx.promote(id.partition()).await?;
    let second = ctx.claim_one(&lane).await?;
    ensure!(
        second.fence.epoch > first.fence.epoch,
        "the next claim bumps again ({} → {})",
        first.fence.epoch,
        second.fence.epoch
    );
    ensure!(
        second.fence.lease_id != first.fence.lease_id,
        "a new lease id per claim"
    );
    ensure_eq!(second.attempt, 2, "second attempt");
    Ok(())
}

/// Checks that a next execution handed back by `complete`/`fail` is a real lease of `lane`.
async fn ensure_valid_next(
    ctx: &TestContext,
    next: &[crate::execution::ClaimedExecution],
    lane: &crate::id::Lane,
) -> CaseResult {
    for claimed in next {
        ensure_eq!(
            &claimed.lane,
            lane,
            "claim_next stays in the requested lane"
        );
        let snapshot = ctx.describe(&claimed.id()).await?;
        ensure_eq!(
            snapshot.state(),
            ExecutionState::Running,
            "a next execution is running"
        );
        ensure_eq!(
            snapshot.status.epoch,
            claimed.fence.epoch,
            "its fence is current"
        );
        ensure_eq!(
            snapshot.lease.map(|l| l.lease_id),
            Some(claimed.fence.lease_id),
            "its lease is the one handed out"
        );
    }
    Ok(())
}

/// With `claim_next`, completing node i of a chain hands back node i+1 when the backend
/// cascades inline; whatever it hands back is a valid lease, and the flow runs to the end.
pub(crate) async fn claim_next_hands_back_next_work(ctx: TestContext) -> CaseResult {
    use crate::execution::{CompleteRequest, FailDisposition, FailRequest, Failure};
    let lane = ctx.lane("chain");
    let keys = ["n0", "n1", "n2", "n3"];
    let flow = ctx
        .create_flow(&FlowBuilder::new(&lane).chain(&keys).build())
        .await?;
    let inline = ctx.capabilities().inline_cascade_limit >= 1;
    let mut current = ctx.claim_one(&lane).await?;
    for (i, key) in keys.iter().enumerate() {
        ensure_eq!(current.id(), flow.id(key)?, "the chain runs in order");
        let next = ClaimRequest::new(ctx.worker(), lane.clone());
        let done = ctx
            .backend()
            .complete(&CompleteRequest::new(current.fence).with_claim_next(next))
            .await?;
        ensure_valid_next(&ctx, &done.next, &lane).await?;
        ensure!(
            done.next.len() <= 1,
            "claim_next with max 1 returned {}",
            done.next.len()
        );
        let Some(following) = keys.get(i + 1) else {
            ensure!(
                done.next.is_empty(),
                "nothing follows the last node: {:?}",
                done.next
            );
            break;
        };
        if inline {
            ensure_eq!(
                done.next.iter().map(|c| c.id()).collect::<Vec<_>>(),
                vec![flow.id(following)?],
                "with an inline cascade, completing {key} hands back {following}"
            );
        }
        current = match done.next.into_iter().next() {
            Some(claimed) => claimed,
            None => {
                ctx.settle(&flow.id).await?;
                ctx.claim_one(&lane).await?
            }
        };
    }
    ctx.settle(&flow.id).await?;
    ctx.ensure_flow(
        &flow,
        crate::state::FlowState::Succeeded,
        (4, 4, 0),
        "chain done",
    )
    .await?;

    // fail with claim_next.
    let lane = ctx.lane("fail-next");
    let a = ctx.create(&spec(&lane, "a")).await?;
    let b = ctx.create(&spec(&lane, "b")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    let outcome = ctx
        .backend()
        .fail(
            &FailRequest::new(claimed.fence, Failure::permanent("no"))
                .with_claim_next(ClaimRequest::new(ctx.worker(), lane.clone())),
        )
        .await?;
    ensure_eq!(
        outcome.disposition,
        FailDisposition::Failed,
        "the failure lands"
    );
    ensure_valid_next(&ctx, &outcome.next, &lane).await?;
    let other = if claimed.id() == a { b } else { a };
    ensure!(
        outcome.next.iter().all(|c| c.id() == other),
        "only the other execution can be next: {:?}",
        outcome.next
    );
    Ok(())
}
