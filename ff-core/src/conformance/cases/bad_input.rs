//! The bad-input catalogue: every malformed request gets a typed error naming what was wrong,
//! and changes nothing.

use std::time::Duration;

use crate::conformance::check::{CaseError, CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{FlowBuilder, key, spec};
use crate::error::{Conflict, EngineError, EntityKind};
use crate::execution::{ClaimRequest, CompleteRequest, ExecutionSpec, FailRequest, Failure, Fence};
use crate::flow::{CancelFlowMode, DependencyGroup, FlowSpec, OnSatisfied};
use crate::id::{ExecutionId, FlowId, IdempotencyKey, Lane, LeaseId};
use crate::limits;
use crate::partition::Partition;
use crate::policy::RetryPolicy;
use crate::scan::{ScanKind, ScanRequest};
use crate::snapshot::ListQuery;
use crate::state::ExecutionState;

/// Unparseable execution ids are `Validation` errors on `execution_id`, never panics.
pub(crate) async fn malformed_execution_ids(ctx: TestContext) -> CaseResult {
    let uuid = uuid::Uuid::new_v4();
    for bad in [
        String::new(),
        "not-an-id".to_string(),
        format!("{uuid}"),
        format!("{{fp:}}:{uuid}"),
        format!("{{fp:x}}:{uuid}"),
        format!("{{fp:-1}}:{uuid}"),
        format!("{{fp:99999999}}:{uuid}"),
        format!("{{fp:70000}}:{uuid}"),
        "{fp:1}:not-a-uuid".to_string(),
        format!("fp:1:{uuid}"),
        format!("{{fp:1}}{uuid}"),
    ] {
        let error = expect_err!(
            bad.parse::<ExecutionId>(),
            EngineError::Validation { .. },
            "parse {bad:?}"
        );
        ensure_eq!(
            error.validation_field(),
            Some("execution_id"),
            "field for {bad:?}"
        );
        let error = expect_err!(
            ExecutionId::parse_in(&bad, &ctx.config()),
            EngineError::Validation { .. },
            "parse_in {bad:?}"
        );
        ensure_eq!(
            error.validation_field(),
            Some("execution_id"),
            "field for {bad:?}"
        );
    }
    Ok(())
}

/// An id naming a partition the deployment does not have is a `Validation` error on
/// `execution_id` for every call that takes one; an unknown id in range is `NotFound`.
pub(crate) async fn foreign_and_unknown_execution_ids(ctx: TestContext) -> CaseResult {
    let config = ctx.config();
    let lane = ctx.lane("foreign");
    let live = ctx.create(&spec(&lane, "live")).await?;
    let before = ctx.describe(&live).await?;
    let unknown = ExecutionId::new_standalone(&config);
    let mut ids = vec![(unknown, false)];
    if config.partitions < u16::MAX {
        let foreign = ExecutionId::from_parts(Partition(config.partitions), uuid::Uuid::new_v4());
        ensure!(
            ExecutionId::parse_in(&foreign.to_string(), &config).is_err(),
            "parse_in rejects {foreign}"
        );
        ids.push((foreign, true));
    }
    for (id, out_of_range) in ids {
        let fence = Fence {
            execution_id: id,
            lease_id: LeaseId::new(),
            epoch: 1,
        };
        let results: Vec<(&str, Result<(), EngineError>)> = vec![
            (
                "describe_execution",
                ctx.backend().describe_execution(&id).await.map(drop),
            ),
            (
                "cancel_execution",
                ctx.backend().cancel_execution(&id).await.map(drop),
            ),
            (
                "change_priority",
                ctx.backend().change_priority(&id, 1).await,
            ),
            (
                "renew",
                ctx.backend()
                    .renew(&fence, Duration::from_secs(10))
                    .await
                    .map(drop),
            ),
            ("progress", ctx.backend().progress(&fence, b"x").await),
            (
                "complete",
                ctx.backend()
                    .complete(&CompleteRequest::new(fence))
                    .await
                    .map(drop),
            ),
            (
                "fail",
                ctx.backend()
                    .fail(&FailRequest::new(fence, Failure::permanent("x")))
                    .await
                    .map(drop),
            ),
        ];
        for (call, result) in results {
            if out_of_range {
                let error = expect_err!(
                    result,
                    EngineError::Validation { .. },
                    "{call} with {id} (partition out of range)"
                );
                ensure_eq!(
                    error.validation_field(),
                    Some("execution_id"),
                    "{call}: field"
                );
            } else {
                expect_err!(
                    result,
                    EngineError::NotFound {
                        kind: EntityKind::Execution,
                        ..
                    },
                    "{call} with an unknown id {id}"
                );
            }
        }
        if out_of_range {
            let error = expect_err!(
                ctx.backend().pending_completions(id.partition(), 10).await,
                EngineError::Validation { .. },
                "pending_completions of a partition out of range"
            );
            ensure!(error.validation_field().is_some(), "names a field");
            expect_err!(
                ctx.backend()
                    .scan(&ScanRequest::new(id.partition(), ScanKind::LeaseExpiry, 10))
                    .await,
                EngineError::Validation { .. },
                "scan of a partition out of range"
            );
            expect_err!(
                ctx.backend()
                    .list_executions(&ListQuery::new(id.partition(), ExecutionState::Ready))
                    .await,
                EngineError::Validation { .. },
                "list of a partition out of range"
            );
        }
    }
    ensure_eq!(ctx.describe(&live).await?, before, "nothing changed");
    Ok(())
}

/// Unknown flows are `NotFound` of kind `Flow`.
pub(crate) async fn unknown_flow(ctx: TestContext) -> CaseResult {
    let flow = FlowId::new();
    expect_err!(
        ctx.backend().describe_flow(&flow).await,
        EngineError::NotFound {
            kind: EntityKind::Flow,
            ..
        },
        "describe_flow"
    );
    expect_err!(
        ctx.backend()
            .cancel_flow(&flow, CancelFlowMode::CancelAll)
            .await,
        EngineError::NotFound {
            kind: EntityKind::Flow,
            ..
        },
        "cancel_flow"
    );
    expect_err!(
        ctx.backend().describe_flow(&flow).await,
        EngineError::NotFound {
            kind: EntityKind::Flow,
            ..
        },
        "cancel_flow did not create it"
    );
    Ok(())
}

/// A graph that fails validation creates nothing.
async fn ensure_flow_rejected(
    ctx: &TestContext,
    lane: &Lane,
    spec: &FlowSpec,
    check: impl Fn(&EngineError) -> bool,
    what: &str,
) -> CaseResult {
    match ctx.backend().create_flow(spec).await {
        Err(error) if check(&error) => {}
        other => {
            return Err(CaseError::new(format!(
                "{what}: unexpected answer {other:?}"
            )));
        }
    }
    expect_err!(
        ctx.backend().describe_flow(&spec.id).await,
        EngineError::NotFound { .. },
        "{what}: the flow must not exist"
    );
    ctx.ensure_nothing_claimable(lane, what).await
}

/// Cycles (naming their nodes), self-edges, duplicates, unknown endpoints, empty flows and
/// quorums out of range are rejected before anything is written.
pub(crate) async fn invalid_graphs(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("graphs");
    let base = || FlowBuilder::new(&lane).nodes(&["root", "a", "b", "c"]);

    let cycle = base()
        .edges(&[("root", "a"), ("a", "b"), ("b", "c"), ("c", "a")])
        .build();
    ensure_flow_rejected(
        &ctx,
        &lane,
        &cycle,
        |e| {
            let EngineError::Conflict(Conflict::Cycle { nodes }) = e else {
                return false;
            };
            let mut names: Vec<&str> = nodes.iter().map(|n| n.as_str()).collect();
            names.sort_unstable();
            names == ["a", "b", "c"]
        },
        "a cycle a → b → c → a (named)",
    )
    .await?;
    ensure_flow_rejected(
        &ctx,
        &lane,
        &base().edges(&[("a", "a")]).build(),
        |e| e.validation_field() == Some("edges[0]"),
        "a self-edge",
    )
    .await?;
    ensure_flow_rejected(
        &ctx,
        &lane,
        &base().edges(&[("a", "b"), ("a", "b")]).build(),
        |e| matches!(e, EngineError::Conflict(Conflict::DuplicateEdge { from, to }) if *from == key("a") && *to == key("b")),
        "a duplicate edge",
    )
    .await?;
    ensure_flow_rejected(
        &ctx,
        &lane,
        &base().nodes(&["a"]).build(),
        |e| matches!(e, EngineError::Conflict(Conflict::DuplicateNode { key: k }) if *k == key("a")),
        "a duplicate node key",
    )
    .await?;
    ensure_flow_rejected(
        &ctx,
        &lane,
        &base().edges(&[("ghost", "a")]).build(),
        |e| e.validation_field() == Some("edges[0].from"),
        "an edge from an unknown node",
    )
    .await?;
    ensure_flow_rejected(
        &ctx,
        &lane,
        &base().edges(&[("a", "ghost")]).build(),
        |e| e.validation_field() == Some("edges[0].to"),
        "an edge to an unknown node",
    )
    .await?;
    ensure_flow_rejected(
        &ctx,
        &lane,
        &FlowSpec::new(),
        |e| e.validation_field() == Some("nodes"),
        "an empty flow",
    )
    .await?;
    for k in [0, 3] {
        ensure_flow_rejected(
            &ctx,
            &lane,
            &base()
                .edges(&[("a", "c"), ("b", "c")])
                .group("c", DependencyGroup::quorum(k, OnSatisfied::LetRun))
                .build(),
            |e| e.validation_field() == Some("nodes[3].group"),
            &format!("quorum({k}) over 2 edges"),
        )
        .await?;
    }
    let keyed = FlowBuilder::new(&lane)
        .node_with("a", |s| {
            s.with_idempotency_key(IdempotencyKey::new("member-key").expect("a valid key"))
        })
        .build();
    ensure_flow_rejected(
        &ctx,
        &lane,
        &keyed,
        |e| e.validation_field() == Some("nodes[0].spec.idempotency_key"),
        "a member with an idempotency key",
    )
    .await?;
    let big = FlowBuilder::new(&lane)
        .node_with("a", |mut s| {
            s.payload = vec![0; limits::MAX_PAYLOAD_BYTES + 1];
            s
        })
        .build();
    ensure_flow_rejected(
        &ctx,
        &lane,
        &big,
        |e| e.validation_field() == Some("nodes[0].spec.payload"),
        "a member payload above the limit",
    )
    .await
}

/// Specs outside the limits are rejected and store nothing: the idempotency key they carry
/// is still free afterwards.
pub(crate) async fn invalid_specs(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("specs");
    let absurd = limits::MAX_DURATION + Duration::from_secs(1);
    let cases: Vec<(&str, ExecutionSpec)> = vec![
        ("payload", {
            let mut s = spec(&lane, "x");
            s.payload = vec![0; limits::MAX_PAYLOAD_BYTES + 1];
            s
        }),
        ("delay", spec(&lane, "x").with_delay(absurd)),
        (
            "attempt_timeout",
            spec(&lane, "x").with_attempt_timeout(absurd),
        ),
        (
            "attempt_timeout",
            spec(&lane, "x").with_attempt_timeout(Duration::ZERO),
        ),
        ("deadline", spec(&lane, "x").with_deadline(absurd)),
        ("deadline", spec(&lane, "x").with_deadline(Duration::ZERO)),
        (
            "retry.max_attempts",
            spec(&lane, "x").with_retry(RetryPolicy::fixed(0, Duration::ZERO)),
        ),
        (
            "retry.max_attempts",
            spec(&lane, "x")
                .with_retry(RetryPolicy::fixed(limits::MAX_ATTEMPTS + 1, Duration::ZERO)),
        ),
        (
            "retry.backoff",
            spec(&lane, "x").with_retry(RetryPolicy::fixed(2, absurd)),
        ),
        (
            "priority",
            spec(&lane, "x").with_priority(limits::MAX_PRIORITY + 1),
        ),
        (
            "priority",
            spec(&lane, "x").with_priority(limits::MIN_PRIORITY - 1),
        ),
    ];
    for (i, (field, bad)) in cases.into_iter().enumerate() {
        let key = IdempotencyKey::new(format!("bad-spec-{i}-{}", uuid::Uuid::new_v4()))?;
        let error = expect_err!(
            ctx.backend()
                .create_execution(&bad.with_idempotency_key(key.clone()))
                .await,
            EngineError::Validation { .. },
            "spec #{i} with a bad {field}"
        );
        ensure_eq!(error.validation_field(), Some(field), "spec #{i}: field");
        let good = ctx
            .backend()
            .create_execution(&spec(&ctx.lane("good"), "good").with_idempotency_key(key))
            .await?;
        ensure!(
            good.created,
            "spec #{i} ({field}) stored nothing: its key is still free"
        );
    }
    ctx.ensure_nothing_claimable(&lane, "rejected specs")
        .await?;
    let error = expect_err!(
        Lane::new(""),
        EngineError::Validation { .. },
        "an empty lane name"
    );
    ensure_eq!(error.validation_field(), Some("lane"), "field");
    Ok(())
}

/// Worker calls outside the limits are rejected and change nothing.
pub(crate) async fn invalid_worker_calls(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("worker-calls");
    let id = ctx.create(&spec(&lane, "x")).await?;
    let absurd = limits::MAX_DURATION + Duration::from_secs(1);
    let base = ClaimRequest::new(ctx.worker(), lane.clone());
    for (what, request, field) in [
        ("batch size 0", base.clone().with_max(0), "max"),
        (
            "batch size above the limit",
            base.clone().with_max(limits::MAX_CLAIM_BATCH + 1),
            "max",
        ),
        (
            "zero lease TTL",
            base.clone().with_lease_ttl(Duration::ZERO),
            "lease_ttl",
        ),
        (
            "absurd lease TTL",
            base.clone().with_lease_ttl(absurd),
            "lease_ttl",
        ),
    ] {
        let error = expect_err!(
            ctx.backend().claim(&request).await,
            EngineError::Validation { .. },
            "claim with {what}"
        );
        ensure!(
            error.validation_field().is_some_and(|f| f.ends_with(field)),
            "claim with {what}: field {field}, got {error:?}"
        );
    }
    ctx.ensure_state(&id, ExecutionState::Ready, "rejected claims claim nothing")
        .await?;

    let claimed = ctx.claim_one(&lane).await?;
    let before = ctx.describe(&id).await?;
    for ttl in [Duration::ZERO, absurd] {
        expect_err!(
            ctx.backend().renew(&claimed.fence, ttl).await,
            EngineError::Validation { .. },
            "renew with a TTL of {ttl:?}"
        );
    }
    let error = expect_err!(
        ctx.backend()
            .complete(&CompleteRequest::new(claimed.fence).with_result(vec![
                0;
                limits::MAX_RESULT_BYTES
                    + 1
            ]))
            .await,
        EngineError::Validation { .. },
        "a result above the limit"
    );
    ensure_eq!(error.validation_field(), Some("result"), "field");
    expect_err!(
        ctx.backend()
            .progress(&claimed.fence, &vec![0; limits::MAX_PROGRESS_BYTES + 1])
            .await,
        EngineError::Validation { .. },
        "progress above the limit"
    );
    expect_err!(
        ctx.backend()
            .complete(
                &CompleteRequest::new(claimed.fence).with_claim_next(base.clone().with_max(0))
            )
            .await,
        EngineError::Validation { .. },
        "complete with an invalid claim_next"
    );
    ensure_eq!(
        ctx.describe(&id).await?,
        before,
        "rejected writes change nothing"
    );
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence))
        .await?;

    // complete / fail on an execution that is not running.
    let ready = ctx.create(&spec(&lane, "ready")).await?;
    let before = ctx.describe(&ready).await?;
    let fence = Fence {
        execution_id: ready,
        lease_id: LeaseId::new(),
        epoch: before.status.epoch,
    };
    let rejected = |e: &EngineError| {
        matches!(e, EngineError::Fenced { current, .. } | EngineError::NotActive { current, .. }
            if current.state == ExecutionState::Ready)
    };
    let r = ctx.backend().complete(&CompleteRequest::new(fence)).await;
    ensure!(
        r.as_ref().err().is_some_and(rejected),
        "complete of a ready execution: {r:?}"
    );
    let r = ctx
        .backend()
        .fail(&FailRequest::new(fence, Failure::permanent("x")))
        .await;
    ensure!(
        r.as_ref().err().is_some_and(rejected),
        "fail of a ready execution: {r:?}"
    );
    ensure_eq!(ctx.describe(&ready).await?, before, "nothing changed");
    Ok(())
}

/// Reads, scans, listings and controls outside the limits.
pub(crate) async fn invalid_reads_and_controls(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("controls");
    let id = ctx.create(&spec(&lane, "x")).await?;
    let before = ctx.describe(&id).await?;
    for priority in [limits::MAX_PRIORITY + 1, limits::MIN_PRIORITY - 1] {
        let error = expect_err!(
            ctx.backend().change_priority(&id, priority).await,
            EngineError::Validation { .. },
            "change_priority to {priority}"
        );
        ensure!(
            error
                .validation_field()
                .is_some_and(|f| f.ends_with("priority")),
            "field: {error:?}"
        );
    }
    ensure_eq!(ctx.describe(&id).await?, before, "nothing changed");
    let p = id.partition();
    expect_err!(
        ctx.backend()
            .list_executions(&ListQuery::new(p, ExecutionState::Ready).with_limit(0))
            .await,
        EngineError::Validation { .. },
        "list with limit 0"
    );
    expect_err!(
        ctx.backend()
            .scan(&ScanRequest::new(p, ScanKind::DelayedPromotion, 0))
            .await,
        EngineError::Validation { .. },
        "scan with limit 0"
    );
    expect_err!(
        ctx.backend()
            .scan(&ScanRequest::new(
                p,
                ScanKind::Retention {
                    older_than: limits::MAX_DURATION + Duration::from_secs(1)
                },
                10
            ))
            .await,
        EngineError::Validation { .. },
        "retention with an absurd horizon"
    );
    expect_err!(
        ctx.backend().pending_completions(p, 0).await,
        EngineError::Validation { .. },
        "pending_completions with limit 0"
    );
    ctx.ensure_state(&id, ExecutionState::Ready, "unchanged")
        .await
}
