//! The durable half of the cascade: completions left pending are finished by a later
//! `cascade_completion`, exactly once in effect.

use crate::cascade::CompletionEvent;
use crate::conformance::check::{CaseError, CaseResult, ensure, ensure_eq};
use crate::conformance::context::{FlowHandle, TestContext};
use crate::conformance::fixtures::{FlowBuilder, key, spec};
use crate::execution::{ClaimedExecution, CompleteRequest};
use crate::flow::{EdgeSpec, FlowPatch, NodeSpec};
use crate::id::Lane;
use crate::limits;
use crate::state::{ExecutionState, FlowState};

/// Largest fan-out these cases build to get past the backend's inline cascade limit.
const MAX_FORCED_FAN_OUT: u32 = 5_000;

/// A root with more children than the backend cascades inline (plus an independent `keep`
/// node so the flow stays open), its root claimed.
async fn wide_flow(
    ctx: &TestContext,
    lane: &Lane,
) -> CaseResult<(FlowHandle, u32, ClaimedExecution)> {
    let limit = ctx.capabilities().inline_cascade_limit;
    if limit >= MAX_FORCED_FAN_OUT {
        return Err(CaseError::skip(format!(
            "inline_cascade_limit {limit} is too large to force a pending completion"
        )));
    }
    let fan_out = limit + 1;
    let children: Vec<String> = (0..fan_out).map(|i| format!("child-{i}")).collect();
    let mut builder = FlowBuilder::new(lane).nodes(&["root", "keep"]);
    for child in &children {
        builder = builder
            .nodes(&[child.as_str()])
            .edges(&[("root", child.as_str())]);
    }
    let flow = ctx.create_flow(&builder.build()).await?;
    let root = loop {
        let claimed = ctx.claim_one(lane).await?;
        if claimed.id() == flow.id("root")? {
            break claimed;
        }
    };
    Ok((flow, fan_out, root))
}

/// The pending completion of `id`, failing the case if there is none.
async fn pending_event(
    ctx: &TestContext,
    flow: &FlowHandle,
    key: &str,
) -> CaseResult<CompletionEvent> {
    let id = flow.id(key)?;
    let pending = ctx
        .backend()
        .pending_completions(flow.partition, limits::MAX_SCAN_BATCH)
        .await?;
    pending
        .into_iter()
        .find(|e| e.execution_id == id)
        .ok_or_else(|| {
            CaseError::new(format!(
                "{key}'s completion should be pending (out-degree above the inline limit)"
            ))
        })
}

/// A completion nobody cascaded stays pending until a later `cascade_completion` finishes it;
/// applying it again changes nothing.
pub(crate) async fn pending_completion_is_finished_later(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("pending");
    let (flow, fan_out, root) = wide_flow(&ctx, &lane).await?;
    ctx.backend()
        .complete(&CompleteRequest::new(root.fence).with_result(b"r".to_vec()))
        .await?;
    let event = pending_event(&ctx, &flow, "root").await?;
    ensure_eq!(event.flow_id, flow.id, "the event names the flow");
    ensure_eq!(
        event.outcome,
        ExecutionState::Succeeded,
        "the event carries the outcome"
    );
    ensure_eq!(
        ctx.state(&flow.id("root")?).await?,
        ExecutionState::Succeeded,
        "root"
    );

    let mut applied = 0;
    let mut finished = false;
    for _ in 0..=fan_out {
        let progress = ctx.backend().cascade_completion(&event).await?;
        applied += progress.edges_applied;
        if progress.finished {
            finished = true;
            break;
        }
    }
    ensure!(finished, "cascade_completion finishes in bounded calls");
    ensure_eq!(applied, fan_out, "every edge applied exactly once");
    let snapshot = ctx.flow(&flow).await?;
    let not_ready: Vec<_> = snapshot
        .members
        .iter()
        .filter(|m| m.key.as_str().starts_with("child-") && m.state != ExecutionState::Ready)
        .map(|m| (m.key.to_string(), m.state))
        .collect();
    ensure!(
        not_ready.is_empty(),
        "every child is ready after the cascade: {not_ready:?}"
    );
    ensure!(
        !ctx.backend()
            .pending_completions(flow.partition, limits::MAX_SCAN_BATCH)
            .await?
            .iter()
            .any(|e| e.execution_id == event.execution_id),
        "the event is retired"
    );

    let again = ctx.backend().cascade_completion(&event).await?;
    ensure_eq!(
        (again.edges_applied, again.finished),
        (0, true),
        "a retired event is a no-op"
    );
    ensure_eq!(
        ctx.flow(&flow).await?,
        snapshot,
        "applying it twice changes nothing"
    );
    ctx.ensure_flow(&flow, FlowState::Running, (fan_out + 2, 1, 0), "counts")
        .await?;
    Ok(())
}

/// An event that was never recorded (a standalone execution, or a member still running) is a
/// no-op.
pub(crate) async fn unknown_completion_is_a_no_op(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("no-op");
    let standalone = ctx.create(&spec(&lane, "x")).await?;
    let flow = ctx
        .create_flow(&FlowBuilder::new(&lane).chain(&["a", "b"]).build())
        .await?;
    let before = ctx.flow(&flow).await?;
    let now = ctx.now().await?;
    for (execution_id, flow_id) in [(standalone, flow.id), (flow.id("a")?, flow.id)] {
        let event = CompletionEvent {
            execution_id,
            flow_id,
            outcome: ExecutionState::Succeeded,
            recorded_at: now,
        };
        let progress = ctx.backend().cascade_completion(&event).await?;
        ensure_eq!(
            (progress.edges_applied, progress.finished),
            (0, true),
            "never recorded: {event:?}"
        );
    }
    ensure_eq!(ctx.flow(&flow).await?, before, "nothing changed");
    ctx.ensure_state(&standalone, ExecutionState::Ready, "standalone unchanged")
        .await
}

/// An edge added by `add_nodes` from an upstream whose completion is still pending is applied
/// within the call, and not again when the pending completion is cascaded.
pub(crate) async fn add_nodes_from_pending_upstream(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("pending-patch");
    let (mut flow, fan_out, root) = wide_flow(&ctx, &lane).await?;
    ctx.backend()
        .complete(&CompleteRequest::new(root.fence))
        .await?;
    pending_event(&ctx, &flow, "root").await?;
    let added = ctx
        .backend()
        .add_nodes(
            &flow.id,
            &FlowPatch::new()
                .node(NodeSpec::new(key("late"), spec(&lane, "late")))
                .edge(EdgeSpec::new(key("root"), key("late"))),
        )
        .await?;
    flow.extend(added.nodes);
    ctx.ensure_members(
        &flow,
        &[("late", ExecutionState::Ready)],
        "applied within add_nodes",
    )
    .await?;
    ctx.settle(&flow.id).await?;
    let snapshot = ctx.flow(&flow).await?;
    let group = snapshot.groups.iter().find(|g| g.node == key("late"));
    ensure!(
        group.is_some_and(|g| g.incoming == 1 && g.satisfied == 1 && g.unsatisfied == 0),
        "the late edge counts once: {group:?}"
    );
    ctx.ensure_members(
        &flow,
        &[
            ("late", ExecutionState::Ready),
            ("child-0", ExecutionState::Ready),
        ],
        "after the cascade",
    )
    .await?;
    ctx.ensure_flow(&flow, FlowState::Running, (fan_out + 3, 1, 0), "counts")
        .await?;
    Ok(())
}
