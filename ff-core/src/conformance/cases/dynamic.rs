//! Dynamic fan-out: `add_nodes` on an open flow.

use crate::conformance::check::{CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{FlowBuilder, key, patch};
use crate::conformance::worker::TestWorker;
use crate::error::{Conflict, EngineError, EntityKind};
use crate::execution::UpstreamInput;
use crate::flow::{EdgeSpec, FlowPatch, NodeSpec};
use crate::state::{ExecutionState, FlowState};

use ExecutionState::{Blocked, Ready};

/// Nodes added to an open flow: an edge from a finished upstream is applied within the call
/// (passing its result), one from an unfinished upstream waits for it, a repeat of the same
/// patch changes nothing, and a finished flow accepts no more nodes.
pub(crate) async fn add_nodes_fan_out(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("fan-out");
    let flow = ctx
        .create_flow(&FlowBuilder::new(&lane).nodes(&["parent", "keep"]).build())
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.claim_ready().await?;
    worker
        .succeed_with("parent", Some(b"split".to_vec()))
        .await?;

    let children = FlowPatch::new()
        .node(NodeSpec::new(
            key("c1"),
            crate::conformance::fixtures::spec(&lane, "c1"),
        ))
        .node(NodeSpec::new(
            key("c2"),
            crate::conformance::fixtures::spec(&lane, "c2"),
        ))
        .node(NodeSpec::new(
            key("after-keep"),
            crate::conformance::fixtures::spec(&lane, "after-keep"),
        ))
        .edge(EdgeSpec::new(key("parent"), key("c1")).passing_result())
        .edge(EdgeSpec::new(key("parent"), key("c2")))
        .edge(EdgeSpec::new(key("keep"), key("after-keep")));
    let added = ctx.backend().add_nodes(&flow.id, &children).await?;
    ensure!(added.created, "the patch creates");
    ensure_eq!(added.flow_id, flow.id, "flow id");
    ensure_eq!(added.nodes.len(), 3, "three new nodes");
    for id in added.nodes.values() {
        ensure_eq!(
            id.partition(),
            flow.partition,
            "members live on the flow's partition"
        );
    }
    worker.flow_mut().extend(added.nodes.clone());
    let flow = worker.flow().clone();
    // Applied within the call: no settle before this check.
    ctx.ensure_members(
        &flow,
        &[("c1", Ready), ("c2", Ready), ("after-keep", Blocked)],
        "right after add_nodes",
    )
    .await?;
    ctx.ensure_flow(
        &flow,
        FlowState::Running,
        (5, 1, 0),
        "counts include the new nodes",
    )
    .await?;

    let before = ctx.flow(&flow).await?;
    let again = ctx.backend().add_nodes(&flow.id, &children).await?;
    ensure!(!again.created, "a repeated patch does not create");
    ensure_eq!(
        again.nodes,
        added.nodes,
        "a repeated patch returns the same nodes"
    );
    ensure_eq!(
        ctx.flow(&flow).await?,
        before,
        "a repeated patch changes nothing"
    );

    let claimed = worker.claim_ready().await?;
    ensure_eq!(
        claimed,
        ["c1".to_string(), "c2".to_string()].into(),
        "children are claimable"
    );
    let c1 = worker.held("c1").map(|c| c.inputs.clone());
    ensure_eq!(
        c1,
        Some(vec![UpstreamInput {
            node_key: key("parent"),
            execution_id: flow.id("parent")?,
            result: Some(b"split".to_vec()),
        }]),
        "c1 receives the parent's result"
    );
    worker.succeed("keep").await?;
    ctx.ensure_members(&flow, &[("after-keep", Ready)], "after its upstream")
        .await?;
    for k in ["c1", "c2", "after-keep"] {
        worker.succeed(k).await?;
    }
    ctx.ensure_flow(&flow, FlowState::Succeeded, (5, 5, 0), "all done")
        .await?;

    let late = patch(&lane, &["late"], &[]);
    let error = expect_err!(
        ctx.backend().add_nodes(&flow.id, &late).await,
        EngineError::Conflict(Conflict::FlowNotOpen { .. }),
        "add_nodes on a finished flow"
    );
    ensure!(
        matches!(error, EngineError::Conflict(Conflict::FlowNotOpen { flow_id, state: FlowState::Succeeded, cancel_requested: false }) if flow_id == flow.id),
        "FlowNotOpen names the flow and its state: {error:?}"
    );
    ctx.ensure_flow(&flow, FlowState::Succeeded, (5, 5, 0), "unchanged")
        .await?;
    Ok(())
}

/// A patch is checked against the flow before anything is written.
pub(crate) async fn add_nodes_rejects_bad_patches(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("bad-patch");
    let flow = ctx
        .create_flow(&FlowBuilder::new(&lane).chain(&["a", "b"]).build())
        .await?;
    ctx.backend()
        .add_nodes(&flow.id, &patch(&lane, &["c"], &[("a", "c")]))
        .await?;
    let before = ctx.flow(&flow).await?;

    let error = expect_err!(
        ctx.backend()
            .add_nodes(&flow.id, &patch(&lane, &["d"], &[("ghost", "d")]))
            .await,
        EngineError::NotFound {
            kind: EntityKind::Node,
            ..
        },
        "an edge from an unknown node"
    );
    ensure!(
        matches!(&error, EngineError::NotFound { id, .. } if id.contains("ghost")),
        "NotFound names the node: {error:?}"
    );
    let error = expect_err!(
        ctx.backend()
            .add_nodes(&flow.id, &patch(&lane, &["e"], &[("e", "b")]))
            .await,
        EngineError::Validation { .. },
        "an edge into an existing node"
    );
    ensure_eq!(
        error.validation_field(),
        Some("edges[0].to"),
        "the offending field"
    );
    let error = expect_err!(
        ctx.backend()
            .add_nodes(&flow.id, &patch(&lane, &["c", "f"], &[]))
            .await,
        EngineError::Conflict(Conflict::DuplicateNode { .. }),
        "a patch whose keys partly exist"
    );
    ensure!(
        matches!(&error, EngineError::Conflict(Conflict::DuplicateNode { key: k }) if *k == key("c")),
        "DuplicateNode names the key: {error:?}"
    );
    expect_err!(
        ctx.backend()
            .add_nodes(
                &flow.id,
                &patch(&lane, &["g", "h"], &[("g", "h"), ("g", "h")])
            )
            .await,
        EngineError::Conflict(Conflict::DuplicateEdge { .. }),
        "a duplicate edge in a patch"
    );
    expect_err!(
        ctx.backend().add_nodes(&flow.id, &FlowPatch::new()).await,
        EngineError::Validation { .. },
        "an empty patch"
    );
    let unknown = crate::id::FlowId::new();
    expect_err!(
        ctx.backend()
            .add_nodes(&unknown, &patch(&lane, &["x"], &[]))
            .await,
        EngineError::NotFound {
            kind: EntityKind::Flow,
            ..
        },
        "add_nodes to an unknown flow"
    );
    ensure_eq!(
        ctx.flow(&flow).await?,
        before,
        "rejected patches change nothing"
    );

    ctx.backend()
        .cancel_flow(&flow.id, crate::flow::CancelFlowMode::CancelPending)
        .await?;
    expect_err!(
        ctx.backend()
            .add_nodes(&flow.id, &patch(&lane, &["after-cancel"], &[]))
            .await,
        EngineError::Conflict(Conflict::FlowNotOpen {
            cancel_requested: true,
            ..
        }),
        "add_nodes after cancel_flow"
    );
    Ok(())
}
