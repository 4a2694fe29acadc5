//! Flows: dependencies, dependency groups, edge kinds, skips, data passing, flow state.

use crate::conformance::check::{CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{FlowBuilder, key};
use crate::conformance::worker::TestWorker;
use crate::error::{EngineError, FenceReason};
use crate::execution::{CompleteRequest, UpstreamInput};
use crate::flow::{DependencyGroup, EdgeSpec, FlowSpec, OnSatisfied};
use crate::state::{CancelSource, EndReason, ExecutionState, FlowState};

use ExecutionState::{Blocked, Cancelled, Failed, Ready, Running, Skipped};

/// No member is claimable before its dependencies are satisfied; a diamond runs in order and
/// the flow succeeds with exact counts.
pub(crate) async fn nodes_wait_for_dependencies(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("diamond");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .nodes(&["a", "b", "c", "d"])
                .edges(&[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
                .build(),
        )
        .await?;
    ctx.ensure_members(
        &flow,
        &[("a", Ready), ("b", Blocked), ("c", Blocked), ("d", Blocked)],
        "created",
    )
    .await?;
    ctx.ensure_flow(&flow, FlowState::Running, (4, 0, 0), "created")
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    ensure_eq!(
        worker.claim_ready().await?,
        ["a".to_string()].into(),
        "only the root is claimable"
    );
    worker.succeed("a").await?;
    ensure_eq!(
        worker.claim_ready().await?,
        ["b".to_string(), "c".to_string()].into(),
        "after a: b and c"
    );
    worker.succeed("b").await?;
    ctx.ensure_members(&flow, &[("d", Blocked)], "d waits for c too")
        .await?;
    ensure!(
        worker.claim_ready().await?.is_empty(),
        "d is not claimable before c"
    );
    worker.succeed("c").await?;
    ensure_eq!(
        worker.claim_ready().await?,
        ["d".to_string()].into(),
        "after b and c: d"
    );
    worker.succeed("d").await?;
    let snapshot = ctx
        .ensure_flow(&flow, FlowState::Succeeded, (4, 4, 0), "all done")
        .await?;
    ensure!(
        snapshot
            .finished_at
            .is_some_and(|t| t >= snapshot.created_at),
        "finished_at after created_at"
    );
    ensure!(
        snapshot.edges.iter().all(|e| e.applied),
        "every edge applied: {:?}",
        snapshot.edges
    );
    ensure!(!snapshot.cancel_requested, "not cancelled");
    Ok(())
}

/// `create_flow` with an existing id returns the existing nodes and changes nothing.
pub(crate) async fn create_flow_is_idempotent(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("idem-flow");
    let spec = FlowBuilder::new(&lane).chain(&["a", "b"]).build();
    let first = ctx.backend().create_flow(&spec).await?;
    ensure!(first.created, "first call creates");
    let before = ctx.backend().describe_flow(&spec.id).await?;
    let again = ctx.backend().create_flow(&spec).await?;
    ensure!(!again.created, "a repeat does not create");
    ensure_eq!(again.nodes, first.nodes, "the same nodes");
    // Even with another graph under the same id.
    let mut other = FlowBuilder::new(&lane).nodes(&["x", "y", "z"]).build();
    other.id = spec.id;
    let third = ctx.backend().create_flow(&other).await?;
    ensure!(!third.created, "same id, other graph: not created");
    ensure_eq!(third.nodes, first.nodes, "the existing nodes are returned");
    ensure_eq!(
        ctx.backend().describe_flow(&spec.id).await?,
        before,
        "nothing changed"
    );
    let claimed = ctx.claim(&lane, 10).await?;
    ensure_eq!(claimed.len(), 1, "still one claimable root");
    Ok(())
}

/// AllOf: satisfied when every upstream succeeded; impossible at the first one that did not,
/// even while others still run.
pub(crate) async fn all_of_satisfied_and_impossible(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("all-of");
    let graph = || {
        FlowBuilder::new(&lane)
            .nodes(&["a", "b", "x"])
            .edges(&[("a", "x"), ("b", "x")])
            .build()
    };
    let flow = ctx.create_flow(&graph()).await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.succeed("a").await?;
    ctx.ensure_members(&flow, &[("x", Blocked)], "one of two")
        .await?;
    worker.succeed("b").await?;
    ctx.ensure_members(&flow, &[("x", Ready)], "both succeeded")
        .await?;
    worker.succeed("x").await?;
    ctx.ensure_flow(&flow, FlowState::Succeeded, (3, 3, 0), "satisfied path")
        .await?;

    let lane2 = ctx.lane("all-of-impossible");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane2)
                .nodes(&["a", "b", "x"])
                .edges(&[("a", "x"), ("b", "x")])
                .build(),
        )
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane2, &flow);
    worker.claim_ready().await?;
    worker.fail("a").await?;
    ctx.ensure_members(
        &flow,
        &[("a", Failed), ("b", Running), ("x", Skipped)],
        "first failure",
    )
    .await?;
    let snapshot = ctx.flow(&flow).await?;
    let x = snapshot.member(&key("x")).map(|m| m.end_reason);
    ensure_eq!(
        x,
        Some(Some(EndReason::DependencyImpossible)),
        "x end reason"
    );
    worker.succeed("b").await?;
    ctx.ensure_members(&flow, &[("x", Skipped)], "a late success does not revive x")
        .await?;
    ctx.ensure_flow(&flow, FlowState::Failed, (3, 3, 2), "impossible path")
        .await?;
    Ok(())
}

/// AnyOf: satisfied at the first success (LetRun leaves the others running); impossible when
/// every upstream finished without one.
pub(crate) async fn any_of_satisfied_and_impossible(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("any-of");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .nodes(&["a", "b", "c", "x"])
                .group("x", DependencyGroup::any_of(OnSatisfied::LetRun))
                .edges(&[("a", "x"), ("b", "x"), ("c", "x")])
                .build(),
        )
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.claim_ready().await?;
    worker.fail("a").await?;
    ctx.ensure_members(&flow, &[("x", Blocked)], "a failure alone decides nothing")
        .await?;
    worker.succeed("b").await?;
    ctx.ensure_members(
        &flow,
        &[("x", Ready), ("c", Running)],
        "first success; LetRun",
    )
    .await?;
    worker.succeed("c").await?;
    worker.succeed("x").await?;
    ctx.ensure_flow(
        &flow,
        FlowState::Failed,
        (4, 4, 1),
        "a's failure still fails the flow",
    )
    .await?;

    let lane2 = ctx.lane("any-of-impossible");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane2)
                .nodes(&["a", "b", "x"])
                .group("x", DependencyGroup::any_of(OnSatisfied::LetRun))
                .edges(&[("a", "x"), ("b", "x")])
                .build(),
        )
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane2, &flow);
    worker.fail("a").await?;
    ctx.ensure_members(&flow, &[("x", Blocked)], "one left")
        .await?;
    worker.fail("b").await?;
    ctx.ensure_members(&flow, &[("x", Skipped)], "none succeeded")
        .await?;
    ctx.ensure_flow(&flow, FlowState::Failed, (3, 3, 3), "impossible path")
        .await?;
    Ok(())
}

/// Quorum(k): satisfied at k successes; impossible once fewer than k can still succeed.
pub(crate) async fn quorum_satisfied_and_impossible(ctx: TestContext) -> CaseResult {
    for (name, outcomes, expected) in [
        ("quorum", [true, false, true], Ready),
        ("quorum-impossible", [false, false, true], Skipped),
    ] {
        let lane = ctx.lane(name);
        let flow = ctx
            .create_flow(
                &FlowBuilder::new(&lane)
                    .nodes(&["a", "b", "c", "q"])
                    .group("q", DependencyGroup::quorum(2, OnSatisfied::LetRun))
                    .edges(&[("a", "q"), ("b", "q"), ("c", "q")])
                    .build(),
            )
            .await?;
        let mut worker = TestWorker::new(&ctx, &lane, &flow);
        worker.claim_ready().await?;
        for (i, (member, success)) in ["a", "b"].iter().zip(outcomes).enumerate() {
            if success {
                worker.succeed(member).await?;
            } else {
                worker.fail(member).await?;
            }
            let want = if i == 1 && expected == Skipped {
                Skipped
            } else {
                Blocked
            };
            ctx.ensure_members(&flow, &[("q", want)], &format!("{name}: after {member}"))
                .await?;
        }
        worker.succeed("c").await?;
        ctx.ensure_members(&flow, &[("q", expected)], &format!("{name}: after c"))
            .await?;
    }
    Ok(())
}

/// Once an AnyOf/Quorum group fires, CancelRemaining cancels the unfinished upstreams (the
/// running one is fenced out) without failing the flow; LetRun leaves them be.
pub(crate) async fn cancel_remaining_vs_let_run(ctx: TestContext) -> CaseResult {
    for on_satisfied in [OnSatisfied::CancelRemaining, OnSatisfied::LetRun] {
        let lane = ctx.lane("group");
        let side = ctx.lane("side");
        let flow = ctx
            .create_flow(
                &FlowBuilder::new(&lane)
                    .nodes(&["a", "b", "x"])
                    // c runs in another lane so it is still ready (not claimed) when x fires.
                    .node_with("c", |mut s| {
                        s.lane = side.clone();
                        s
                    })
                    .group("x", DependencyGroup::any_of(on_satisfied))
                    .edges(&[("a", "x"), ("b", "x"), ("c", "x")])
                    .build(),
            )
            .await?;
        let mut worker = TestWorker::new(&ctx, &lane, &flow);
        ensure_eq!(
            worker.claim_ready().await?,
            ["a".to_string(), "b".to_string()].into(),
            "a and b run"
        );
        let b = worker.held("b").cloned();
        worker.succeed("a").await?;
        match on_satisfied {
            OnSatisfied::CancelRemaining => {
                ctx.ensure_members(
                    &flow,
                    &[("x", Ready), ("b", Cancelled), ("c", Cancelled)],
                    "CancelRemaining",
                )
                .await?;
                let snapshot = ctx.flow(&flow).await?;
                for k in ["b", "c"] {
                    ensure_eq!(
                        snapshot.member(&key(k)).and_then(|m| m.end_reason),
                        Some(EndReason::Cancelled(CancelSource::GroupSatisfied)),
                        "{k} end reason"
                    );
                }
                if let Some(b) = b {
                    expect_err!(
                        ctx.backend().complete(&CompleteRequest::new(b.fence)).await,
                        EngineError::Fenced { reason: FenceReason::StaleEpoch, current, .. } if current.state == Cancelled,
                        "b's worker is fenced out"
                    );
                }
                ctx.ensure_nothing_claimable(&side, "c was cancelled")
                    .await?;
                worker.succeed("x").await?;
                ctx.ensure_flow(
                    &flow,
                    FlowState::Succeeded,
                    (4, 4, 0),
                    "CancelRemaining does not fail the flow",
                )
                .await?;
            }
            OnSatisfied::LetRun => {
                ctx.ensure_members(
                    &flow,
                    &[("x", Ready), ("b", Running), ("c", Ready)],
                    "LetRun",
                )
                .await?;
                worker.succeed("b").await?;
                let c = ctx.claim_one(&side).await?;
                ctx.backend()
                    .fail(&crate::execution::FailRequest::new(
                        c.fence,
                        crate::execution::Failure::permanent("c failed"),
                    ))
                    .await?;
                ctx.settle(&flow.id).await?;
                worker.succeed("x").await?;
                ctx.ensure_flow(
                    &flow,
                    FlowState::Failed,
                    (4, 4, 1),
                    "a LetRun sibling's failure counts",
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// An `always` edge is satisfied by any terminal outcome of its upstream, a skip included.
pub(crate) async fn always_edges(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("always");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .nodes(&["z", "a", "cleanup", "f", "ok", "x"])
                .edges(&[("z", "a"), ("ok", "x")])
                .edge(EdgeSpec::new(key("a"), key("cleanup")).always())
                .edge(EdgeSpec::new(key("f"), key("x")).always())
                .build(),
        )
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.fail("z").await?;
    ctx.ensure_members(
        &flow,
        &[("a", Skipped), ("cleanup", Ready)],
        "always after a skip",
    )
    .await?;
    worker.fail("f").await?;
    ctx.ensure_members(&flow, &[("x", Blocked)], "x waits for its success edge")
        .await?;
    worker.succeed("ok").await?;
    ctx.ensure_members(
        &flow,
        &[("x", Ready)],
        "always (failed) + success (succeeded)",
    )
    .await?;
    worker.succeed("cleanup").await?;
    worker.succeed("x").await?;
    ctx.ensure_flow(&flow, FlowState::Failed, (6, 6, 3), "z, a, f fail the flow")
        .await?;
    Ok(())
}

/// A failure skips its whole downstream cone, through chains and diamonds.
pub(crate) async fn skip_propagates(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("chain");
    let flow = ctx
        .create_flow(&FlowBuilder::new(&lane).chain(&["a", "b", "c", "d"]).build())
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.fail("a").await?;
    ctx.ensure_members(
        &flow,
        &[("b", Skipped), ("c", Skipped), ("d", Skipped)],
        "chain",
    )
    .await?;
    ctx.ensure_flow(&flow, FlowState::Failed, (4, 4, 4), "chain")
        .await?;

    let lane = ctx.lane("diamond");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .nodes(&["a", "b", "c", "d", "e"])
                .edges(&[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e")])
                .build(),
        )
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.succeed("a").await?;
    worker.claim_ready().await?;
    worker.fail("b").await?;
    ctx.ensure_members(
        &flow,
        &[("c", Running), ("d", Skipped), ("e", Skipped)],
        "diamond",
    )
    .await?;
    worker.succeed("c").await?;
    ctx.ensure_flow(&flow, FlowState::Failed, (5, 5, 3), "diamond")
        .await?;
    Ok(())
}

/// Inputs: the results of succeeded upstreams along `pass_result` edges, in edge order.
pub(crate) async fn data_passing(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("data");
    let sink = ctx.lane("data-sink");
    let in_sink = |mut s: crate::execution::ExecutionSpec| {
        s.lane = sink.clone();
        s
    };
    let mut spec: FlowSpec = FlowBuilder::new(&lane)
        .nodes(&["u1", "u2", "u3", "none", "v1", "v2", "f"])
        .node_with("d", in_sink)
        .node_with("w", in_sink)
        .node_with("g", in_sink)
        .group("w", DependencyGroup::any_of(OnSatisfied::LetRun))
        .build();
    for (from, to, pass) in [
        ("u3", "d", true),
        ("u1", "d", true),
        ("u2", "d", false),
        ("none", "d", true),
        ("v1", "w", true),
        ("v2", "w", true),
    ] {
        let edge = EdgeSpec::new(key(from), key(to));
        spec = spec.edge(if pass { edge.passing_result() } else { edge });
    }
    spec = spec.edge(EdgeSpec::new(key("f"), key("g")).always().passing_result());
    let flow = ctx.create_flow(&spec).await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.claim_ready().await?;
    for k in ["u1", "u2", "u3"] {
        worker
            .succeed_with(k, Some(format!("r-{k}").into_bytes()))
            .await?;
    }
    worker.succeed_with("none", None).await?;
    worker.fail("v1").await?;
    worker.succeed_with("v2", Some(b"r-v2".to_vec())).await?;
    worker.fail("f").await?;

    let claimed = ctx.claim(&sink, 10).await?;
    ensure_eq!(claimed.len(), 3, "d, w and g are ready");
    let input = |k: &str, result: Option<&[u8]>| -> CaseResult<UpstreamInput> {
        Ok(UpstreamInput {
            node_key: key(k),
            execution_id: flow.id(k)?,
            result: result.map(<[u8]>::to_vec),
        })
    };
    for c in &claimed {
        let expected = match flow.key_of(&c.id()) {
            Some("d") => vec![
                input("u3", Some(b"r-u3"))?,
                input("u1", Some(b"r-u1"))?,
                input("none", None)?,
            ],
            Some("w") => vec![input("v2", Some(b"r-v2"))?],
            Some("g") => vec![],
            other => {
                return Err(crate::conformance::check::CaseError::new(format!(
                    "unexpected claim {other:?}"
                )));
            }
        };
        ensure_eq!(c.inputs, expected, "inputs of {:?}", flow.key_of(&c.id()));
    }
    Ok(())
}

/// The flow's counters and state follow every member transition exactly.
pub(crate) async fn flow_state_and_counters(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("counters");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .nodes(&["a", "b", "c", "d"])
                .edges(&[("a", "d"), ("b", "d"), ("c", "d")])
                .build(),
        )
        .await?;
    ctx.ensure_flow(&flow, FlowState::Running, (4, 0, 0), "created")
        .await?;
    let mut worker = TestWorker::new(&ctx, &lane, &flow);
    worker.claim_ready().await?;
    ctx.ensure_flow(
        &flow,
        FlowState::Running,
        (4, 0, 0),
        "running members are not terminal",
    )
    .await?;
    worker.succeed("a").await?;
    ctx.ensure_flow(&flow, FlowState::Running, (4, 1, 0), "a succeeded")
        .await?;
    worker.fail("b").await?;
    ctx.ensure_flow(&flow, FlowState::Running, (4, 3, 2), "b failed, d skipped")
        .await?;
    worker.succeed("c").await?;
    let snapshot = ctx
        .ensure_flow(&flow, FlowState::Failed, (4, 4, 2), "all terminal")
        .await?;
    let reasons: Vec<_> = snapshot
        .members
        .iter()
        .map(|m| (m.key.to_string(), m.end_reason))
        .collect();
    ensure_eq!(
        reasons,
        vec![
            ("a".to_string(), Some(EndReason::Completed)),
            ("b".to_string(), Some(EndReason::NonRetryable)),
            ("c".to_string(), Some(EndReason::Completed)),
            ("d".to_string(), Some(EndReason::DependencyImpossible)),
        ],
        "members in creation order with their end reasons"
    );
    ensure!(
        snapshot.edges.iter().all(|e| e.applied),
        "every edge applied"
    );
    let group = snapshot.groups.iter().find(|g| g.node == key("d"));
    ensure!(
        group
            .is_some_and(|g| g.incoming == 3 && g.verdict == crate::flow::GroupVerdict::Impossible),
        "d's group: {group:?}"
    );
    Ok(())
}
