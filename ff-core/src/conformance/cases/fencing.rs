//! Fencing: every worker write carries the lease, and only the current, live lease counts.

use std::time::Duration;

use crate::conformance::check::{CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{retrying, spec};
use crate::error::{EngineError, FenceReason};
use crate::execution::{
    ClaimRequest, CompleteRequest, FailDisposition, FailRequest, Failure, Fence,
};
use crate::id::LeaseId;
use crate::scan::ScanKind;
use crate::state::{EndReason, ExecutionState, ExecutionStatus};

/// Tries all four worker writes with `fence` and checks each is `Fenced` for `reason` with the
/// current status `current`, and that the snapshot is unchanged afterwards.
async fn ensure_all_writes_fenced(
    ctx: &TestContext,
    fence: Fence,
    reason: FenceReason,
    current: ExecutionStatus,
) -> CaseResult {
    let id = fence.execution_id;
    let before = ctx.describe(&id).await?;
    let fenced = |e: &EngineError| {
        matches!(e, EngineError::Fenced { execution_id, reason: r, current: c }
            if *execution_id == id && *r == reason && *c == current)
    };
    let error = ctx
        .backend()
        .complete(&CompleteRequest::new(fence).with_result(b"late".to_vec()))
        .await;
    ensure!(
        error.as_ref().err().is_some_and(fenced),
        "complete with a {reason} fence: expected Fenced({reason}, {current}), got {error:?}"
    );
    let error = ctx
        .backend()
        .fail(&FailRequest::new(fence, Failure::retryable("late")))
        .await;
    ensure!(
        error.as_ref().err().is_some_and(fenced),
        "fail with a {reason} fence: expected Fenced({reason}, {current}), got {error:?}"
    );
    let error = ctx.backend().renew(&fence, Duration::from_secs(60)).await;
    ensure!(
        error.as_ref().err().is_some_and(fenced),
        "renew with a {reason} fence: expected Fenced({reason}, {current}), got {error:?}"
    );
    let error = ctx.backend().progress(&fence, b"late").await;
    ensure!(
        error.as_ref().err().is_some_and(fenced),
        "progress with a {reason} fence: expected Fenced({reason}, {current}), got {error:?}"
    );
    let after = ctx.describe(&id).await?;
    ensure_eq!(after, before, "a fenced write changes nothing");
    Ok(())
}

/// A write with an older epoch is rejected with the current status and changes nothing.
pub(crate) async fn stale_epoch_is_rejected(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("stale");
    let id = ctx
        .create(&retrying(&lane, 3, Duration::from_millis(10)))
        .await?;
    let old = ctx.claim_one(&lane).await?;
    ctx.backend()
        .fail(&FailRequest::new(
            old.fence,
            Failure::retryable("first attempt"),
        ))
        .await?;
    ctx.advance(Duration::from_millis(20)).await?;
    ctx.promote(id.partition()).await?;
    let current = ctx.claim_one(&lane).await?;
    ensure!(
        current.fence.epoch != old.fence.epoch,
        "a new claim moves the epoch"
    );
    let status = ctx.describe(&id).await?.status;
    ensure_eq!(
        status.state,
        ExecutionState::Running,
        "second attempt running"
    );
    ensure_all_writes_fenced(&ctx, old.fence, FenceReason::StaleEpoch, status).await?;
    // The current holder is unaffected.
    ctx.backend()
        .complete(&CompleteRequest::new(current.fence))
        .await?;
    ctx.ensure_state(
        &id,
        ExecutionState::Succeeded,
        "the current lease completes",
    )
    .await
}

/// The right epoch with another lease id is a `LeaseMismatch`.
pub(crate) async fn wrong_lease_id_is_mismatch(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("mismatch");
    let id = ctx.create(&spec(&lane, "x")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    let forged = Fence {
        lease_id: LeaseId::new(),
        ..claimed.fence
    };
    let status = ctx.describe(&id).await?.status;
    ensure_all_writes_fenced(&ctx, forged, FenceReason::LeaseMismatch, status).await?;
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence))
        .await?;
    ctx.ensure_state(&id, ExecutionState::Succeeded, "the real lease completes")
        .await
}

/// A lease past its expiry (backend clock) cannot write, even before the lease-expiry
/// scanner has run; after the scanner, the old holder is fenced by epoch.
pub(crate) async fn expired_lease_cannot_complete(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("expired");
    let id = ctx.create(&spec(&lane, "x")).await?;
    let claimed = ctx
        .claim_one_with(
            ClaimRequest::new(ctx.worker(), lane.clone())
                .with_lease_ttl(Duration::from_millis(100)),
        )
        .await?;
    ctx.advance(Duration::from_millis(150)).await?;
    let status = ctx.describe(&id).await?.status;
    ensure_eq!(
        status.state,
        ExecutionState::Running,
        "still running until the scanner runs"
    );
    ensure_all_writes_fenced(&ctx, claimed.fence, FenceReason::LeaseExpired, status).await?;

    let processed = ctx.scan(id.partition(), ScanKind::LeaseExpiry).await?;
    ensure!(
        processed >= 1,
        "the lease-expiry scanner processes the expired lease"
    );
    let after = ctx.describe(&id).await?;
    ensure_eq!(
        after.state(),
        ExecutionState::Failed,
        "one attempt only: failed"
    );
    ensure_eq!(
        after.status.end_reason,
        Some(EndReason::AttemptsExhausted),
        "end reason"
    );
    ensure!(
        after.status.epoch > claimed.fence.epoch,
        "expiry bumps the epoch"
    );
    expect_err!(
        ctx.backend()
            .complete(&CompleteRequest::new(claimed.fence))
            .await,
        EngineError::Fenced {
            reason: FenceReason::StaleEpoch,
            ..
        },
        "complete after the lease-expiry scanner"
    );
    Ok(())
}

/// `renew` extends the lease from now by the new TTL.
pub(crate) async fn renew_extends_the_lease(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("renew");
    let id = ctx.create(&spec(&lane, "x")).await?;
    let claimed = ctx
        .claim_one_with(
            ClaimRequest::new(ctx.worker(), lane.clone()).with_lease_ttl(Duration::from_secs(30)),
        )
        .await?;
    let before = ctx.now().await?;
    let expires = ctx
        .backend()
        .renew(&claimed.fence, Duration::from_secs(60))
        .await?;
    ensure!(
        expires >= before.saturating_add(Duration::from_secs(60)),
        "renew(60 s) expires at least 60 s after the call: {expires} < {}",
        before.saturating_add(Duration::from_secs(60))
    );
    ensure!(
        expires > claimed.lease_expires_at,
        "the new expiry is later than the claim's"
    );
    let lease = ctx.describe(&id).await?.lease;
    ensure_eq!(
        lease.map(|l| l.expires_at),
        Some(expires),
        "describe shows the renewed expiry"
    );
    if ctx.has_clock_control() {
        // Past the original 30 s lease, within the renewed one.
        ctx.advance(Duration::from_secs(45)).await?;
        ctx.scan(id.partition(), ScanKind::LeaseExpiry).await?;
        ctx.ensure_state(
            &id,
            ExecutionState::Running,
            "renewed lease outlives the original",
        )
        .await?;
    }
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence))
        .await?;
    ctx.ensure_state(
        &id,
        ExecutionState::Succeeded,
        "completed under the renewed lease",
    )
    .await
}

/// Repeating `complete` with the fence that completed succeeds and changes nothing.
pub(crate) async fn complete_is_idempotent(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("complete-twice");
    let id = ctx.create(&spec(&lane, "x")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence).with_result(b"first".to_vec()))
        .await?;
    let done = ctx.describe(&id).await?;
    ensure_eq!(done.result, Some(b"first".to_vec()), "result stored");
    ensure_eq!(
        done.status.end_reason,
        Some(EndReason::Completed),
        "end reason"
    );
    ensure!(
        done.finished_at.is_some() && done.lease.is_none(),
        "finished, no lease"
    );
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence).with_result(b"first".to_vec()))
        .await?;
    ensure_eq!(
        ctx.describe(&id).await?,
        done,
        "a repeated complete changes nothing"
    );
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence).with_result(b"other".to_vec()))
        .await?;
    ensure_eq!(
        ctx.describe(&id).await?,
        done,
        "a repeated complete with another result changes nothing"
    );
    Ok(())
}

/// Repeating `fail` with the fence that failed succeeds with the same disposition, also after
/// the execution was promoted from delayed to ready.
pub(crate) async fn fail_is_idempotent(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("fail-twice");
    // Final failure.
    let id = ctx.create(&spec(&lane, "final")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    let first = ctx
        .backend()
        .fail(&FailRequest::new(
            claimed.fence,
            Failure::permanent("bad input"),
        ))
        .await?;
    ensure_eq!(first.disposition, FailDisposition::Failed, "non-retryable");
    let done = ctx.describe(&id).await?;
    let again = ctx
        .backend()
        .fail(&FailRequest::new(
            claimed.fence,
            Failure::permanent("bad input"),
        ))
        .await?;
    ensure_eq!(
        again.disposition,
        FailDisposition::Failed,
        "same disposition"
    );
    ensure_eq!(
        ctx.describe(&id).await?,
        done,
        "a repeated fail changes nothing"
    );

    // A retry.
    let id = ctx
        .create(&retrying(&lane, 3, Duration::from_millis(50)))
        .await?;
    let claimed = ctx.claim_one(&lane).await?;
    let first = ctx
        .backend()
        .fail(&FailRequest::new(
            claimed.fence,
            Failure::retryable("flaky"),
        ))
        .await?;
    ensure!(
        matches!(first.disposition, FailDisposition::RetryScheduled { .. }),
        "retry scheduled: {first:?}"
    );
    let delayed = ctx.describe(&id).await?;
    let again = ctx
        .backend()
        .fail(&FailRequest::new(
            claimed.fence,
            Failure::retryable("flaky"),
        ))
        .await?;
    ensure_eq!(again.disposition, first.disposition, "same disposition");
    ensure_eq!(
        ctx.describe(&id).await?,
        delayed,
        "a repeated fail changes nothing"
    );
    ctx.advance(Duration::from_millis(60)).await?;
    ctx.promote(id.partition()).await?;
    ctx.ensure_state(&id, ExecutionState::Ready, "promoted")
        .await?;
    let promoted = ctx.describe(&id).await?;
    let again = ctx
        .backend()
        .fail(&FailRequest::new(
            claimed.fence,
            Failure::retryable("flaky"),
        ))
        .await?;
    ensure_eq!(
        again.disposition,
        first.disposition,
        "same disposition after promotion"
    );
    ensure_eq!(
        ctx.describe(&id).await?,
        promoted,
        "a repeated fail after promotion changes nothing"
    );
    Ok(())
}

/// Ending an attempt the other way with the same fence is `NotActive`; so are `renew` and
/// `progress` once the attempt ended.
pub(crate) async fn other_terminal_call_is_not_active(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("not-active");
    // complete after fail.
    let failed = ctx.create(&spec(&lane, "failed")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    ctx.backend()
        .fail(&FailRequest::new(claimed.fence, Failure::permanent("no")))
        .await?;
    let status = ctx.describe(&failed).await?.status;
    let error = expect_err!(
        ctx.backend()
            .complete(&CompleteRequest::new(claimed.fence))
            .await,
        EngineError::NotActive { .. },
        "complete after fail with the same fence"
    );
    ensure!(
        matches!(error, EngineError::NotActive { execution_id, current } if execution_id == failed && current == status),
        "NotActive carries the current status {status}: {error:?}"
    );
    ensure_eq!(
        ctx.describe(&failed).await?.status,
        status,
        "nothing changed"
    );

    // fail, renew, progress after complete.
    let succeeded = ctx.create(&spec(&lane, "succeeded")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence))
        .await?;
    let before = ctx.describe(&succeeded).await?;
    let not_active = |e: &EngineError| matches!(e, EngineError::NotActive { current, .. } if *current == before.status);
    let r = ctx
        .backend()
        .fail(&FailRequest::new(claimed.fence, Failure::retryable("late")))
        .await;
    ensure!(
        r.as_ref().err().is_some_and(not_active),
        "fail after complete: {r:?}"
    );
    let r = ctx
        .backend()
        .renew(&claimed.fence, Duration::from_secs(10))
        .await;
    ensure!(
        r.as_ref().err().is_some_and(not_active),
        "renew after complete: {r:?}"
    );
    let r = ctx.backend().progress(&claimed.fence, b"50%").await;
    ensure!(
        r.as_ref().err().is_some_and(not_active),
        "progress after complete: {r:?}"
    );
    ensure_eq!(ctx.describe(&succeeded).await?, before, "nothing changed");

    // complete after a retryable fail (the execution waits in delayed).
    let retried = ctx
        .create(&retrying(&lane, 2, Duration::from_secs(60)))
        .await?;
    let claimed = ctx.claim_one(&lane).await?;
    ctx.backend()
        .fail(&FailRequest::new(
            claimed.fence,
            Failure::retryable("again"),
        ))
        .await?;
    let before = ctx.describe(&retried).await?;
    expect_err!(
        ctx.backend().complete(&CompleteRequest::new(claimed.fence)).await,
        EngineError::NotActive { current, .. } if current.state == ExecutionState::Delayed,
        "complete after a retryable fail"
    );
    ensure_eq!(ctx.describe(&retried).await?, before, "nothing changed");
    Ok(())
}
