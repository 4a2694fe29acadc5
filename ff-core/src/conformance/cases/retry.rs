//! Failed attempts: retry with backoff, final failure, and the automatic failures (lease
//! expiry, attempt timeout).

use std::time::Duration;

use crate::conformance::check::{CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{retrying, spec};
use crate::error::{EngineError, FenceReason};
use crate::execution::{ClaimRequest, CompleteRequest, FailDisposition, FailRequest, Failure};
use crate::policy::RetryPolicy;
use crate::scan::ScanKind;
use crate::state::{AttemptOutcome, EndReason, ExecutionState};

/// A retryable failure with attempts left waits its backoff in `delayed` (not claimable),
/// becomes claimable after promotion, and the last attempt's failure is final.
pub(crate) async fn retry_with_backoff_then_fail(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("retry");
    let backoff = Duration::from_millis(500);
    let id = ctx.create(&retrying(&lane, 3, backoff)).await?;
    for attempt in 1..=3u32 {
        let claimed = ctx.claim_one(&lane).await?;
        ensure_eq!(claimed.id(), id, "the retried execution");
        ensure_eq!(claimed.attempt, attempt, "attempt number");
        let before = ctx.now().await?;
        let outcome = ctx
            .backend()
            .fail(&FailRequest::new(
                claimed.fence,
                Failure::retryable(format!("attempt {attempt} failed")),
            ))
            .await?;
        let after = ctx.now().await?;
        if attempt < 3 {
            let FailDisposition::RetryScheduled { available_at } = outcome.disposition else {
                return Err(crate::conformance::check::CaseError::new(format!(
                    "attempt {attempt} of 3 failed retryably: expected a retry, got {outcome:?}"
                )));
            };
            ensure!(
                available_at >= before.saturating_add(backoff)
                    && available_at <= after.saturating_add(backoff),
                "retry after the fixed backoff: {available_at} not in [{}, {}]",
                before.saturating_add(backoff),
                after.saturating_add(backoff)
            );
            let snapshot = ctx.describe(&id).await?;
            ensure_eq!(
                snapshot.state(),
                ExecutionState::Delayed,
                "waiting for the retry"
            );
            ensure_eq!(snapshot.available_at, Some(available_at), "available_at");
            ctx.ensure_nothing_claimable(&lane, "before the backoff passed")
                .await?;
            ensure_eq!(
                ctx.promote(id.partition()).await?,
                0,
                "nothing is due before the backoff"
            );
            ctx.advance(backoff + Duration::from_millis(100)).await?;
            ctx.promote(id.partition()).await?;
            ctx.ensure_state(&id, ExecutionState::Ready, "promoted after the backoff")
                .await?;
        } else {
            ensure_eq!(
                outcome.disposition,
                FailDisposition::Failed,
                "the last attempt"
            );
        }
    }
    let snapshot = ctx.describe(&id).await?;
    ensure_eq!(snapshot.state(), ExecutionState::Failed, "final state");
    ensure_eq!(
        snapshot.status.end_reason,
        Some(EndReason::AttemptsExhausted),
        "end reason"
    );
    ensure_eq!(snapshot.status.attempt, 3, "attempts started");
    ensure_eq!(snapshot.attempts.len(), 3, "attempt records");
    for (i, record) in snapshot.attempts.iter().enumerate() {
        ensure_eq!(
            record.outcome,
            Some(AttemptOutcome::Failed),
            "attempt {} outcome",
            i + 1
        );
        ensure_eq!(
            record.failure.as_ref().map(|f| f.message.clone()),
            Some(format!("attempt {} failed", i + 1)),
            "attempt {} failure",
            i + 1
        );
    }
    ctx.ensure_nothing_claimable(&lane, "failed for good").await
}

/// Exponential backoff grows per retry, within its jitter.
pub(crate) async fn exponential_backoff_grows(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("exp");
    let initial = Duration::from_millis(200);
    let id = ctx
        .create(&spec(&lane, "x").with_retry(RetryPolicy::exponential(
            3,
            initial,
            Duration::from_secs(10),
        )))
        .await?;
    for (attempt, nominal) in [(1u32, initial), (2, initial * 2)] {
        let claimed = ctx.claim_one(&lane).await?;
        let before = ctx.now().await?;
        let outcome = ctx
            .backend()
            .fail(&FailRequest::new(claimed.fence, Failure::retryable("x")))
            .await?;
        let after = ctx.now().await?;
        let FailDisposition::RetryScheduled { available_at } = outcome.disposition else {
            return Err(crate::conformance::check::CaseError::new(format!(
                "attempt {attempt}: expected a retry, got {outcome:?}"
            )));
        };
        // jitter 0.2: between 80 % and 100 % of the nominal delay (ms rounding allowed).
        let low = before
            .saturating_add(nominal.mul_f64(0.8))
            .saturating_sub(Duration::from_millis(1));
        let high = after
            .saturating_add(nominal)
            .saturating_add(Duration::from_millis(1));
        ensure!(
            available_at >= low && available_at <= high,
            "retry {attempt}: available_at {available_at} not in [{low}, {high}]"
        );
        ctx.advance(nominal + Duration::from_millis(50)).await?;
        ctx.promote(id.partition()).await?;
    }
    Ok(())
}

/// A non-retryable failure is final whatever the retry policy allows.
pub(crate) async fn non_retryable_failure_is_final(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("permanent");
    let id = ctx
        .create(&retrying(&lane, 5, Duration::from_millis(10)))
        .await?;
    let claimed = ctx.claim_one(&lane).await?;
    let outcome = ctx
        .backend()
        .fail(&FailRequest::new(
            claimed.fence,
            Failure::permanent("invalid input"),
        ))
        .await?;
    ensure_eq!(outcome.disposition, FailDisposition::Failed, "disposition");
    let snapshot = ctx.describe(&id).await?;
    ensure_eq!(snapshot.state(), ExecutionState::Failed, "state");
    ensure_eq!(
        snapshot.status.end_reason,
        Some(EndReason::NonRetryable),
        "end reason"
    );
    ensure_eq!(snapshot.status.attempt, 1, "one attempt");
    ensure!(snapshot.finished_at.is_some(), "finished_at");
    ctx.advance(Duration::from_millis(20)).await?;
    ctx.promote(id.partition()).await?;
    ctx.ensure_nothing_claimable(&lane, "a permanent failure is not retried")
        .await
}

/// Lease expiry is a failed attempt: it retries (bumping the epoch, fencing the old holder)
/// and fails for good after the last attempt.
pub(crate) async fn lease_expiry_retries_then_fails(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("lease-expiry");
    let id = ctx
        .create(&retrying(&lane, 2, Duration::from_millis(10)))
        .await?;
    let short =
        || ClaimRequest::new(ctx.worker(), lane.clone()).with_lease_ttl(Duration::from_millis(100));
    let first = ctx.claim_one_with(short()).await?;
    ctx.advance(Duration::from_millis(150)).await?;
    let processed = ctx.scan(id.partition(), ScanKind::LeaseExpiry).await?;
    ensure!(processed >= 1, "the scanner processes the expired lease");
    let snapshot = ctx.describe(&id).await?;
    ensure_eq!(
        snapshot.state(),
        ExecutionState::Delayed,
        "one attempt left: retry"
    );
    ensure!(
        snapshot.status.epoch > first.fence.epoch,
        "expiry bumps the epoch"
    );
    ensure_eq!(
        snapshot.attempts.first().and_then(|a| a.outcome),
        Some(AttemptOutcome::LeaseExpired),
        "the attempt ended by lease expiry"
    );
    expect_err!(
        ctx.backend().complete(&CompleteRequest::new(first.fence)).await,
        EngineError::Fenced { reason: FenceReason::StaleEpoch, current, .. } if current.state == ExecutionState::Delayed,
        "the old holder is fenced out"
    );
    ctx.advance(Duration::from_millis(20)).await?;
    ctx.promote(id.partition()).await?;
    let second = ctx.claim_one_with(short()).await?;
    ensure_eq!(second.attempt, 2, "second attempt");
    ctx.advance(Duration::from_millis(150)).await?;
    ctx.scan(id.partition(), ScanKind::LeaseExpiry).await?;
    let snapshot = ctx.describe(&id).await?;
    ensure_eq!(snapshot.state(), ExecutionState::Failed, "no attempts left");
    ensure_eq!(
        snapshot.status.end_reason,
        Some(EndReason::AttemptsExhausted),
        "end reason"
    );
    ensure_eq!(
        snapshot
            .attempts
            .iter()
            .map(|a| a.outcome)
            .collect::<Vec<_>>(),
        vec![Some(AttemptOutcome::LeaseExpired); 2],
        "attempt outcomes"
    );
    Ok(())
}

/// An attempt running past its timeout is a failed attempt, whatever its lease says.
pub(crate) async fn attempt_timeout(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("timeout");
    let id = ctx
        .create(
            &retrying(&lane, 2, Duration::from_millis(10))
                .with_attempt_timeout(Duration::from_millis(100)),
        )
        .await?;
    let first = ctx.claim_one(&lane).await?;
    ensure!(
        first.attempt_deadline.is_some(),
        "the claim tells the attempt deadline"
    );
    ctx.advance(Duration::from_millis(150)).await?;
    let processed = ctx.scan(id.partition(), ScanKind::AttemptTimeout).await?;
    ensure!(
        processed >= 1,
        "the attempt-timeout scanner processes the attempt"
    );
    let snapshot = ctx.describe(&id).await?;
    ensure_eq!(
        snapshot.state(),
        ExecutionState::Delayed,
        "retry after a timeout"
    );
    ensure!(
        snapshot.status.epoch > first.fence.epoch,
        "a timeout bumps the epoch"
    );
    ensure_eq!(
        snapshot.attempts.first().and_then(|a| a.outcome),
        Some(AttemptOutcome::TimedOut),
        "attempt outcome"
    );
    expect_err!(
        ctx.backend()
            .complete(&CompleteRequest::new(first.fence))
            .await,
        EngineError::Fenced {
            reason: FenceReason::StaleEpoch,
            ..
        },
        "the timed-out worker is fenced out"
    );
    ctx.advance(Duration::from_millis(20)).await?;
    ctx.promote(id.partition()).await?;
    let second = ctx.claim_one(&lane).await?;
    // Renewing does not extend the attempt timeout.
    ctx.backend()
        .renew(&second.fence, Duration::from_secs(60))
        .await?;
    ctx.advance(Duration::from_millis(150)).await?;
    ctx.scan(id.partition(), ScanKind::AttemptTimeout).await?;
    let snapshot = ctx.describe(&id).await?;
    ensure_eq!(snapshot.state(), ExecutionState::Failed, "no attempts left");
    ensure_eq!(
        snapshot.status.end_reason,
        Some(EndReason::AttemptsExhausted),
        "end reason"
    );
    Ok(())
}
