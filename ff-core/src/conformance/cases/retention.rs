//! Retention: only terminal work older than the horizon goes; a flow goes whole.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::conformance::check::{CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{FlowBuilder, spec};
use crate::conformance::worker::TestWorker;
use crate::error::{EngineError, EntityKind};
use crate::execution::CompleteRequest;
use crate::id::{ExecutionId, IdempotencyKey};
use crate::scan::ScanKind;
use crate::state::{ExecutionState, FlowState};

/// Runs one standalone execution of its own lane to success.
async fn run_to_success(ctx: &TestContext, key: Option<IdempotencyKey>) -> CaseResult<ExecutionId> {
    let lane = ctx.lane("retained");
    let mut s = spec(&lane, "x");
    if let Some(key) = key {
        s = s.with_idempotency_key(key);
    }
    let created = ctx.backend().create_execution(&s).await?;
    let claimed = ctx.claim_one(&lane).await?;
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence))
        .await?;
    Ok(created.id)
}

/// The retention scanner removes terminal standalone executions and finished flows (with all
/// their members) that ended before the horizon, and nothing else.
pub(crate) async fn retention_removes_only_old_terminal_work(ctx: TestContext) -> CaseResult {
    let horizon = Duration::from_millis(200);
    let key = IdempotencyKey::new(format!("retained-{}", uuid::Uuid::new_v4()))?;
    let old_done = run_to_success(&ctx, None).await?;
    let old_keyed = run_to_success(&ctx, Some(key.clone())).await?;
    let waiting_lane = ctx.lane("waiting");
    let waiting = ctx.create(&spec(&waiting_lane, "waiting")).await?;

    let lane = ctx.lane("flows");
    let finished = ctx
        .create_flow(&FlowBuilder::new(&lane).nodes(&["only"]).build())
        .await?;
    TestWorker::new(&ctx, &lane, &finished)
        .succeed("only")
        .await?;
    ctx.ensure_flow(&finished, FlowState::Succeeded, (1, 1, 0), "finished flow")
        .await?;
    let lane2 = ctx.lane("flows-running");
    let running = ctx
        .create_flow(&FlowBuilder::new(&lane2).nodes(&["m1", "m2"]).build())
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane2, &running);
    worker.claim_ready().await?;
    worker.succeed("m1").await?;

    ctx.advance(horizon + Duration::from_millis(100)).await?;
    let fresh_done = run_to_success(&ctx, None).await?;

    let partitions: BTreeSet<_> = [old_done, old_keyed, waiting, fresh_done]
        .iter()
        .map(|id| id.partition())
        .chain([finished.partition, running.partition])
        .collect();
    let mut removed = 0;
    for partition in partitions {
        removed += ctx
            .scan(
                partition,
                ScanKind::Retention {
                    older_than: horizon,
                },
            )
            .await?;
    }
    ensure!(
        removed >= 3,
        "at least two executions and one flow removed, got {removed}"
    );

    for (id, what) in [
        (old_done, "old standalone"),
        (old_keyed, "old keyed standalone"),
    ] {
        expect_err!(
            ctx.backend().describe_execution(&id).await,
            EngineError::NotFound {
                kind: EntityKind::Execution,
                ..
            },
            "{what} after retention"
        );
    }
    expect_err!(
        ctx.backend().describe_flow(&finished.id).await,
        EngineError::NotFound {
            kind: EntityKind::Flow,
            ..
        },
        "finished flow after retention"
    );
    expect_err!(
        ctx.backend()
            .describe_execution(&finished.id("only")?)
            .await,
        EngineError::NotFound { .. },
        "a finished flow's member goes with it"
    );
    ctx.ensure_state(&waiting, ExecutionState::Ready, "unfinished work stays")
        .await?;
    ctx.ensure_state(
        &fresh_done,
        ExecutionState::Succeeded,
        "recent terminal work stays",
    )
    .await?;
    ctx.ensure_members(
        &running,
        &[
            ("m1", ExecutionState::Succeeded),
            ("m2", ExecutionState::Running),
        ],
        "a running flow keeps its old terminal members",
    )
    .await?;
    ctx.ensure_state(&running.id("m1")?, ExecutionState::Succeeded, "m1 by id")
        .await?;

    let again = ctx
        .backend()
        .create_execution(&spec(&ctx.lane("again"), "again").with_idempotency_key(key))
        .await?;
    ensure!(
        again.created,
        "a removed execution's idempotency key is free again"
    );
    ensure_eq!(again.id, old_keyed, "the key maps to the same id");
    Ok(())
}
