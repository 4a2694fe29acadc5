//! Time-driven behaviour: deadlines, initial delays, and idempotent submission.

use std::time::Duration;

use crate::conformance::check::{CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{FlowBuilder, spec};
use crate::error::{EngineError, FenceReason};
use crate::execution::CompleteRequest;
use crate::id::IdempotencyKey;
use crate::scan::ScanKind;
use crate::state::{EndReason, ExecutionState, FlowState};

/// Past its deadline, unfinished work becomes `expired` — ready (never handed out by a claim
/// even before the scanner runs), delayed, and running (the worker is fenced out).
pub(crate) async fn deadline_expires_unfinished_work(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("deadline");
    let running = ctx
        .create(&spec(&lane, "running").with_deadline(Duration::from_secs(1)))
        .await?;
    let claimed = ctx.claim_one(&lane).await?;
    ensure_eq!(claimed.id(), running, "claimed before its deadline");
    ensure!(claimed.deadline.is_some(), "the claim carries the deadline");
    let ready = ctx
        .create(&spec(&lane, "ready").with_deadline(Duration::from_millis(200)))
        .await?;
    let delayed = ctx
        .create(
            &spec(&lane, "delayed")
                .with_delay(Duration::from_secs(3600))
                .with_deadline(Duration::from_millis(200)),
        )
        .await?;
    ctx.advance(Duration::from_millis(1100)).await?;
    ctx.ensure_nothing_claimable(&lane, "past their deadlines")
        .await?;
    for id in [running, ready, delayed] {
        ctx.scan(id.partition(), ScanKind::ExecutionDeadline)
            .await?;
    }
    for (id, what) in [(running, "running"), (ready, "ready"), (delayed, "delayed")] {
        let snapshot = ctx.describe(&id).await?;
        ensure_eq!(
            snapshot.state(),
            ExecutionState::Expired,
            "{what} past its deadline"
        );
        ensure_eq!(
            snapshot.status.end_reason,
            Some(EndReason::DeadlineExceeded),
            "{what}: end reason"
        );
        ensure!(snapshot.finished_at.is_some(), "{what}: finished_at");
    }
    let snapshot = ctx.describe(&running).await?;
    ensure!(
        snapshot.status.epoch > claimed.fence.epoch,
        "expiry of a running execution bumps the epoch"
    );
    expect_err!(
        ctx.backend().complete(&CompleteRequest::new(claimed.fence)).await,
        EngineError::Fenced { reason: FenceReason::StaleEpoch, current, .. } if current.state == ExecutionState::Expired,
        "the worker of an expired execution"
    );
    Ok(())
}

/// A blocked flow member expires at its deadline too, and its expiry cascades (its
/// downstream is skipped); the flow fails.
pub(crate) async fn deadline_expires_blocked_member(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("blocked-deadline");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .nodes(&["a"])
                .node_with("b", |s| s.with_deadline(Duration::from_millis(200)))
                .nodes(&["c"])
                .edges(&[("a", "b"), ("b", "c")])
                .build(),
        )
        .await?;
    ctx.advance(Duration::from_millis(300)).await?;
    ctx.scan(flow.partition, ScanKind::ExecutionDeadline)
        .await?;
    ctx.settle(&flow.id).await?;
    ctx.ensure_members(
        &flow,
        &[
            ("a", ExecutionState::Ready),
            ("b", ExecutionState::Expired),
            ("c", ExecutionState::Skipped),
        ],
        "after b's deadline",
    )
    .await?;
    ctx.ensure_flow(&flow, FlowState::Running, (3, 2, 2), "a still to run")
        .await?;
    let claimed = ctx.claim_one(&lane).await?;
    ensure_eq!(
        claimed.id(),
        flow.id("a")?,
        "a is the only claimable member"
    );
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence))
        .await?;
    ctx.settle(&flow.id).await?;
    ctx.ensure_members(
        &flow,
        &[("b", ExecutionState::Expired)],
        "a's success does not revive b",
    )
    .await?;
    ctx.ensure_flow(
        &flow,
        FlowState::Failed,
        (3, 3, 2),
        "expired + skipped fail the flow",
    )
    .await?;
    Ok(())
}

/// An initial delay keeps work unclaimable until it has passed; a flow member's delay counts
/// from the satisfaction of its dependencies.
pub(crate) async fn delayed_not_claimable_before_its_time(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("delay");
    let delay = Duration::from_millis(500);
    let before = ctx.now().await?;
    let id = ctx.create(&spec(&lane, "later").with_delay(delay)).await?;
    let snapshot = ctx.describe(&id).await?;
    ensure_eq!(snapshot.state(), ExecutionState::Delayed, "created delayed");
    ensure!(
        snapshot
            .available_at
            .is_some_and(|t| t >= before.saturating_add(delay)),
        "available_at is creation + delay: {:?}",
        snapshot.available_at
    );
    ctx.ensure_nothing_claimable(&lane, "before its delay")
        .await?;
    ensure_eq!(ctx.promote(id.partition()).await?, 0, "nothing due yet");
    ctx.advance(delay + Duration::from_millis(100)).await?;
    ctx.promote(id.partition()).await?;
    let claimed = ctx.claim_one(&lane).await?;
    ensure_eq!(claimed.id(), id, "claimable after its delay");

    // A member's delay starts when its group is satisfied.
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .nodes(&["up"])
                .node_with("down", |s| s.with_delay(delay))
                .edges(&[("up", "down")])
                .build(),
        )
        .await?;
    let up = ctx.claim_one(&lane).await?;
    ensure_eq!(up.id(), flow.id("up")?, "the root");
    let satisfied_at = ctx.now().await?;
    ctx.backend()
        .complete(&CompleteRequest::new(up.fence))
        .await?;
    ctx.settle(&flow.id).await?;
    let down = ctx.describe(&flow.id("down")?).await?;
    ensure_eq!(
        down.state(),
        ExecutionState::Delayed,
        "delayed after its upstream"
    );
    ensure!(
        down.available_at
            .is_some_and(|t| t >= satisfied_at.saturating_add(delay)),
        "the delay counts from satisfaction ({satisfied_at}), not creation: {:?}",
        down.available_at
    );
    ctx.ensure_nothing_claimable(&lane, "member before its delay")
        .await?;
    ctx.advance(delay + Duration::from_millis(100)).await?;
    ctx.promote(flow.partition).await?;
    let claimed = ctx.claim_one(&lane).await?;
    ensure_eq!(claimed.id(), flow.id("down")?, "the member after its delay");
    Ok(())
}

/// A second submission with the same idempotency key returns the first execution unchanged.
pub(crate) async fn idempotency_key_returns_same_execution(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("idem");
    let key = IdempotencyKey::new(format!("order-{}", uuid::Uuid::new_v4()))?;
    let first = ctx
        .backend()
        .create_execution(&spec(&lane, "first").with_idempotency_key(key.clone()))
        .await?;
    ensure!(first.created, "the first submission creates");
    let before = ctx.describe(&first.id).await?;
    let second = ctx
        .backend()
        .create_execution(
            &spec(&lane, "second")
                .with_priority(9)
                .with_idempotency_key(key.clone()),
        )
        .await?;
    ensure!(!second.created, "the second submission does not create");
    ensure_eq!(second.id, first.id, "same execution");
    ensure_eq!(
        ctx.describe(&first.id).await?,
        before,
        "the first execution is unchanged"
    );
    // Also once it ran.
    let claimed = ctx.claim_one(&lane).await?;
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence))
        .await?;
    let third = ctx
        .backend()
        .create_execution(&spec(&lane, "third").with_idempotency_key(key))
        .await?;
    ensure!(
        !third.created && third.id == first.id,
        "a finished execution still answers: {third:?}"
    );
    ctx.ensure_nothing_claimable(&lane, "no duplicate work")
        .await?;
    let other = ctx
        .backend()
        .create_execution(
            &spec(&lane, "other").with_idempotency_key(IdempotencyKey::new(format!(
                "order-{}",
                uuid::Uuid::new_v4()
            ))?),
        )
        .await?;
    ensure!(
        other.created && other.id != first.id,
        "another key is another execution"
    );
    Ok(())
}
