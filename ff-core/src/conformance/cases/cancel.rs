//! Cancellation of executions and flows: terminal transitions that fence the worker and feed
//! the cascade.

use std::time::Duration;

use crate::conformance::check::{CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{FlowBuilder, spec};
use crate::conformance::worker::TestWorker;
use crate::error::{EngineError, FenceReason};
use crate::execution::{CancelOutcome, CompleteRequest};
use crate::flow::CancelFlowMode;
use crate::state::{AttemptOutcome, CancelSource, EndReason, ExecutionState, FlowState};

use ExecutionState::{Blocked, Cancelled, Ready, Running, Skipped, Succeeded};

/// Cancelling a ready, delayed or running execution: `Cancelled(User)`, nothing claimable, a
/// running worker fenced out; cancelling again reports the terminal status.
pub(crate) async fn cancel_execution(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("cancel");
    let running = ctx.create(&spec(&lane, "running")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    ensure_eq!(claimed.id(), running, "claimed");
    let ready = ctx.create(&spec(&lane, "ready")).await?;
    let delayed = ctx
        .create(&spec(&lane, "delayed").with_delay(Duration::from_secs(3600)))
        .await?;
    for (id, previous) in [
        (ready, Ready),
        (delayed, ExecutionState::Delayed),
        (running, Running),
    ] {
        let outcome = ctx.backend().cancel_execution(&id).await?;
        ensure_eq!(
            outcome,
            CancelOutcome::Cancelled { previous },
            "cancel of a {previous} execution"
        );
        let snapshot = ctx.describe(&id).await?;
        ensure_eq!(snapshot.state(), Cancelled, "{previous}: state");
        ensure_eq!(
            snapshot.status.end_reason,
            Some(EndReason::Cancelled(CancelSource::User)),
            "{previous}: end reason"
        );
        ensure!(snapshot.finished_at.is_some(), "{previous}: finished_at");
        let again = ctx.backend().cancel_execution(&id).await?;
        ensure_eq!(
            again,
            CancelOutcome::AlreadyTerminal(snapshot.status),
            "{previous}: cancel again"
        );
        ensure_eq!(
            ctx.describe(&id).await?,
            snapshot,
            "{previous}: cancel again changes nothing"
        );
    }
    let snapshot = ctx.describe(&running).await?;
    ensure!(
        snapshot.status.epoch > claimed.fence.epoch,
        "cancelling a running execution bumps the epoch"
    );
    ensure_eq!(
        snapshot.attempts.last().and_then(|a| a.outcome),
        Some(AttemptOutcome::Cancelled),
        "the running attempt ends cancelled"
    );
    expect_err!(
        ctx.backend().complete(&CompleteRequest::new(claimed.fence)).await,
        EngineError::Fenced { reason: FenceReason::StaleEpoch, current, .. } if current.state == Cancelled,
        "the cancelled execution's worker"
    );
    ctx.advance(Duration::from_millis(10)).await?;
    ctx.promote(delayed.partition()).await?;
    ctx.ensure_nothing_claimable(&lane, "everything was cancelled")
        .await?;

    // A finished execution is left alone.
    let done = ctx.create(&spec(&lane, "done")).await?;
    let c = ctx.claim_one(&lane).await?;
    ctx.backend()
        .complete(&CompleteRequest::new(c.fence))
        .await?;
    let status = ctx.describe(&done).await?.status;
    ensure_eq!(
        ctx.backend().cancel_execution(&done).await?,
        CancelOutcome::AlreadyTerminal(status),
        "cancel of a succeeded execution"
    );
    ctx.ensure_state(&done, Succeeded, "still succeeded").await
}

/// Cancelling a blocked member is a terminal transition like any other: its downstream is
/// skipped, its late upstream changes nothing, and a user cancel fails the flow.
pub(crate) async fn cancel_blocked_member_cascades(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("cancel-member");
    let flow = ctx
        .create_flow(&FlowBuilder::new(&lane).chain(&["a", "b", "c"]).build())
        .await?;
    let outcome = ctx.backend().cancel_execution(&flow.id("b")?).await?;
    ensure_eq!(
        outcome,
        CancelOutcome::Cancelled { previous: Blocked },
        "cancel of a blocked member"
    );
    ctx.settle(&flow.id).await?;
    ctx.ensure_members(
        &flow,
        &[("a", Ready), ("b", Cancelled), ("c", Skipped)],
        "after the cancel",
    )
    .await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.succeed("a").await?;
    ctx.ensure_members(
        &flow,
        &[("b", Cancelled), ("c", Skipped)],
        "a's success changes nothing",
    )
    .await?;
    ctx.ensure_flow(
        &flow,
        FlowState::Failed,
        (3, 3, 2),
        "a user cancel fails the flow",
    )
    .await?;
    Ok(())
}

/// `cancel_flow(CancelAll)` cancels every unfinished member, running ones included (fenced
/// out), and the flow ends `cancelled`.
pub(crate) async fn cancel_flow_cancel_all(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("cancel-all");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .nodes(&["a", "b", "c", "done"])
                .edges(&[("a", "b")])
                .build(),
        )
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.claim_ready().await?;
    worker.succeed("done").await?;
    let a = worker.held("a").cloned();
    let outcome = ctx
        .backend()
        .cancel_flow(&flow.id, CancelFlowMode::CancelAll)
        .await?;
    ensure_eq!(
        outcome.cancelled + outcome.deferred,
        3,
        "a, b and c are cancelled: {outcome:?}"
    );
    ctx.ensure_nothing_claimable(&lane, "right after cancel_flow")
        .await?;
    ctx.settle(&flow.id).await?;
    ctx.ensure_members(
        &flow,
        &[
            ("a", Cancelled),
            ("b", Cancelled),
            ("c", Cancelled),
            ("done", Succeeded),
        ],
        "CancelAll",
    )
    .await?;
    let snapshot = ctx
        .ensure_flow(&flow, FlowState::Cancelled, (4, 4, 0), "cancelled")
        .await?;
    ensure!(snapshot.cancel_requested, "cancel_requested");
    for m in snapshot.members.iter().filter(|m| m.state == Cancelled) {
        ensure_eq!(
            m.end_reason,
            Some(EndReason::Cancelled(CancelSource::Flow)),
            "{} end reason",
            m.key
        );
    }
    if let Some(a) = a {
        expect_err!(
            ctx.backend().complete(&CompleteRequest::new(a.fence)).await,
            EngineError::Fenced {
                reason: FenceReason::StaleEpoch,
                ..
            },
            "the running member's worker"
        );
    }
    let again = ctx
        .backend()
        .cancel_flow(&flow.id, CancelFlowMode::CancelAll)
        .await?;
    ensure_eq!(
        again.state,
        FlowState::Cancelled,
        "repeating cancel_flow is harmless"
    );
    ctx.ensure_flow(&flow, FlowState::Cancelled, (4, 4, 0), "after a repeat")
        .await?;
    Ok(())
}

/// `cancel_flow(CancelPending)` cancels what has not started; running members finish, then
/// the flow ends `cancelled`.
pub(crate) async fn cancel_flow_cancel_pending(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("cancel-pending");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .nodes(&["a", "b", "c"])
                .node_with("later", |s| s.with_delay(Duration::from_secs(3600)))
                .edges(&[("a", "b")])
                .build(),
        )
        .await?;
    let first = ctx.claim_one(&lane).await?;
    let second = ctx.claim_one(&lane).await?;
    let (a, c) = if flow.key_of(&first.id()) == Some("a") {
        (first, second)
    } else {
        (second, first)
    };
    ensure_eq!(flow.key_of(&a.id()), Some("a"), "claimed a");
    ensure_eq!(flow.key_of(&c.id()), Some("c"), "claimed c");
    let outcome = ctx
        .backend()
        .cancel_flow(&flow.id, CancelFlowMode::CancelPending)
        .await?;
    ensure_eq!(
        outcome.cancelled + outcome.deferred,
        2,
        "b and later are cancelled: {outcome:?}"
    );
    ensure_eq!(
        outcome.state,
        FlowState::Running,
        "running members keep the flow running"
    );
    ctx.settle(&flow.id).await?;
    ctx.ensure_members(
        &flow,
        &[
            ("a", Running),
            ("b", Cancelled),
            ("c", Running),
            ("later", Cancelled),
        ],
        "CancelPending",
    )
    .await?;
    let snapshot = ctx
        .ensure_flow(
            &flow,
            FlowState::Running,
            (4, 2, 0),
            "running members finish",
        )
        .await?;
    ensure!(snapshot.cancel_requested, "cancel_requested");
    ctx.backend()
        .complete(&CompleteRequest::new(a.fence))
        .await?;
    ctx.settle(&flow.id).await?;
    ctx.ensure_members(
        &flow,
        &[("a", Succeeded), ("b", Cancelled)],
        "a finished; b stays cancelled",
    )
    .await?;
    ctx.backend()
        .fail(&crate::execution::FailRequest::new(
            c.fence,
            crate::execution::Failure::permanent("c failed"),
        ))
        .await?;
    ctx.settle(&flow.id).await?;
    ctx.ensure_flow(
        &flow,
        FlowState::Cancelled,
        (4, 4, 1),
        "a cancelled flow ends cancelled",
    )
    .await?;
    Ok(())
}
