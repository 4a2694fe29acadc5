//! Optional capabilities: each works when offered and answers `Unavailable` (or its
//! documented fallback) when not.

use std::time::Duration;

use crate::conformance::check::{CaseError, CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{FlowBuilder, spec};
use crate::conformance::worker::TestWorker;
use crate::error::EngineError;
use crate::execution::{ClaimRequest, CompleteRequest};
use crate::hint::{Hint, HintReceiver};

/// How long a hint may take to arrive.
const HINT_WAIT: Duration = Duration::from_secs(5);

/// `health` answers with the backend's name and clock.
pub(crate) async fn health(ctx: TestContext) -> CaseResult {
    let before = ctx.now().await?;
    let report = ctx.backend().health().await?;
    ensure_eq!(
        report.backend,
        ctx.backend().name(),
        "the report names the backend"
    );
    ensure!(
        report.now >= before,
        "the report's clock does not go back: {} < {before}",
        report.now
    );
    let config = ctx.config();
    ensure!(
        config.partitions >= 1,
        "a partition config with partitions: {config:?}"
    );
    Ok(())
}

/// Without clock control, `advance_clock` is `Unavailable` and the backend keeps working.
pub(crate) async fn advance_clock_unavailable(ctx: TestContext) -> CaseResult {
    let error = expect_err!(
        ctx.backend().advance_clock(Duration::from_secs(3600)).await,
        EngineError::Unavailable { .. },
        "advance_clock without clock_control"
    );
    ensure!(
        matches!(error, EngineError::Unavailable { operation: "advance_clock", backend } if backend == ctx.backend().name()),
        "Unavailable names the operation and backend: {error:?}"
    );
    ensure!(!error.is_retryable(), "Unavailable is not retryable");
    ctx.backend().health().await?;
    Ok(())
}

/// With clock control, `advance_clock` moves the backend clock and returns the new time.
pub(crate) async fn advance_clock_moves_the_clock(ctx: TestContext) -> CaseResult {
    let before = ctx.now().await?;
    let by = Duration::from_secs(3600);
    let moved = ctx.backend().advance_clock(by).await?;
    ensure!(
        moved >= before.saturating_add(by),
        "advance_clock returns the new time: {moved} < {before} + 1h"
    );
    let now = ctx.now().await?;
    ensure!(now >= moved, "now() follows: {now} < {moved}");
    Ok(())
}

/// Without hints, `subscribe_hints` is `Unavailable`.
pub(crate) async fn subscribe_hints_unavailable(ctx: TestContext) -> CaseResult {
    let error = expect_err!(
        ctx.backend().subscribe_hints().await,
        EngineError::Unavailable { .. },
        "subscribe_hints without hints"
    );
    ensure!(
        matches!(
            error,
            EngineError::Unavailable {
                operation: "subscribe_hints",
                ..
            }
        ),
        "Unavailable names the operation: {error:?}"
    );
    ctx.backend().health().await?;
    Ok(())
}

/// Waits for a hint matching `wanted`, passing over others.
async fn wait_for(
    hints: &mut HintReceiver,
    what: &str,
    wanted: impl Fn(&Hint) -> bool,
) -> CaseResult {
    let found = tokio::time::timeout(HINT_WAIT, async {
        while let Some(hint) = hints.recv().await {
            if wanted(&hint) {
                return true;
            }
        }
        false
    })
    .await;
    match found {
        Ok(true) => Ok(()),
        Ok(false) => Err(CaseError::new(format!(
            "the hint stream closed before {what}"
        ))),
        Err(_) => Err(CaseError::new(format!(
            "no {what} hint within {HINT_WAIT:?}"
        ))),
    }
}

/// With hints, new work, pending completions and finished flows are announced.
pub(crate) async fn hints_arrive(ctx: TestContext) -> CaseResult {
    let mut hints = ctx.backend().subscribe_hints().await?;
    let lane = ctx.lane("hinted");
    let id = ctx.create(&spec(&lane, "x")).await?;
    wait_for(&mut hints, "WorkReady for the new execution", |h| {
        matches!(h, Hint::WorkReady { partition, lane: l } if *partition == id.partition() && *l == lane)
    })
    .await?;

    let flow_lane = ctx.lane("hinted-flow");
    let flow = ctx
        .create_flow(&FlowBuilder::new(&flow_lane).nodes(&["only"]).build())
        .await?;
    let mut hints = ctx.backend().subscribe_hints().await?;
    TestWorker::new(&ctx, &flow_lane, &flow)
        .succeed("only")
        .await?;
    wait_for(
        &mut hints,
        "FlowFinished",
        |h| matches!(h, Hint::FlowFinished { flow_id } if *flow_id == flow.id),
    )
    .await?;

    let limit = ctx.capabilities().inline_cascade_limit;
    if limit < 5_000 {
        let wide_lane = ctx.lane("hinted-wide");
        let mut builder = FlowBuilder::new(&wide_lane).nodes(&["root", "keep"]);
        let children: Vec<String> = (0..=limit).map(|i| format!("child-{i}")).collect();
        for child in &children {
            builder = builder
                .nodes(&[child.as_str()])
                .edges(&[("root", child.as_str())]);
        }
        let flow = ctx.create_flow(&builder.build()).await?;
        let claimed = ctx
            .claim_one_with(ClaimRequest::new(ctx.worker(), wide_lane.clone()).with_max(1))
            .await?;
        let root = if claimed.id() == flow.id("root")? {
            claimed
        } else {
            ctx.claim_one(&wide_lane).await?
        };
        let mut hints = ctx.backend().subscribe_hints().await?;
        ctx.backend()
            .complete(&CompleteRequest::new(root.fence))
            .await?;
        wait_for(
            &mut hints,
            "CompletionPending for a wide fan-out",
            |h| matches!(h, Hint::CompletionPending { partition } if *partition == flow.partition),
        )
        .await?;
    }
    Ok(())
}

/// Without `claim_next`, `complete` and `fail` still work and return no next executions.
pub(crate) async fn claim_next_unsupported_returns_nothing(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("no-claim-next");
    let first = ctx.create(&spec(&lane, "first")).await?;
    let second = ctx.create(&spec(&lane, "second")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    let next = ClaimRequest::new(ctx.worker(), lane.clone()).with_max(5);
    let done = ctx
        .backend()
        .complete(&CompleteRequest::new(claimed.fence).with_claim_next(next))
        .await?;
    ensure!(
        done.next.is_empty(),
        "no next executions without claim_next: {:?}",
        done.next
    );
    ctx.ensure_state(
        &claimed.id(),
        crate::state::ExecutionState::Succeeded,
        "completed",
    )
    .await?;
    let other = if claimed.id() == first { second } else { first };
    ctx.ensure_state(&other, crate::state::ExecutionState::Ready, "still ready")
        .await
}
