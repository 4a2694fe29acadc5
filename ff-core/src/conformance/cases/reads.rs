//! Reads and small controls: describe, list, progress, priority changes, scanner cursors.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::conformance::check::{CaseResult, ensure, ensure_eq, expect_err};
use crate::conformance::context::TestContext;
use crate::conformance::fixtures::{FlowBuilder, retrying, spec};
use crate::error::EngineError;
use crate::execution::{ClaimRequest, CompleteRequest, FailRequest, Failure};
use crate::id::ExecutionId;
use crate::limits;
use crate::scan::{ScanKind, ScanRequest};
use crate::snapshot::ListQuery;
use crate::state::{AttemptOutcome, EndReason, ExecutionState};

/// `change_priority` re-queues ready work at its new priority, keeping its place in time.
pub(crate) async fn change_priority_reorders(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("reprioritize");
    let (_, keys) = ctx.keys_on_one_partition(4);
    let mut ids = Vec::new();
    for key in keys {
        ids.push(
            ctx.backend()
                .create_execution(&spec(&lane, "x").with_idempotency_key(key))
                .await?
                .id,
        );
    }
    let [a, b, c, d] = [ids[0], ids[1], ids[2], ids[3]];
    ctx.backend().change_priority(&c, 10).await?;
    ctx.backend().change_priority(&a, 5).await?;
    ctx.backend().change_priority(&a, 0).await?;
    ensure_eq!(
        ctx.describe(&c).await?.priority,
        10,
        "the new priority is visible"
    );
    for (i, want) in [c, a, b, d].iter().enumerate() {
        let claimed = ctx.claim_one(&lane).await?;
        ensure_eq!(
            claimed.id(),
            *want,
            "claim #{i} after reprioritizing (c up; a up and back)"
        );
    }
    ctx.backend().change_priority(&a, 7).await?;
    ensure_eq!(
        ctx.describe(&a).await?.priority,
        7,
        "a running execution's priority changes"
    );
    let claimed_b = ctx.describe(&b).await?;
    ensure_eq!(claimed_b.state(), ExecutionState::Running, "b running");
    let done = ctx.create(&spec(&lane, "done")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    ctx.backend()
        .complete(&CompleteRequest::new(claimed.fence))
        .await?;
    let before = ctx.describe(&done).await?;
    expect_err!(
        ctx.backend().change_priority(&done, 3).await,
        EngineError::NotActive { current, .. } if current.state == ExecutionState::Succeeded,
        "change_priority of a terminal execution"
    );
    ensure_eq!(ctx.describe(&done).await?, before, "nothing changed");
    Ok(())
}

/// Progress is visible in `describe_execution` and does not extend the lease.
pub(crate) async fn progress_is_visible(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("progress");
    let id = ctx.create(&spec(&lane, "x")).await?;
    let claimed = ctx.claim_one(&lane).await?;
    ensure_eq!(ctx.describe(&id).await?.progress, None, "no progress yet");
    ctx.backend().progress(&claimed.fence, b"50%").await?;
    let snapshot = ctx.describe(&id).await?;
    ensure_eq!(snapshot.progress, Some(b"50%".to_vec()), "progress");
    ensure_eq!(
        snapshot.lease.map(|l| l.expires_at),
        Some(claimed.lease_expires_at),
        "progress does not extend the lease"
    );
    ctx.backend().progress(&claimed.fence, b"75%").await?;
    ensure_eq!(
        ctx.describe(&id).await?.progress,
        Some(b"75%".to_vec()),
        "the latest progress"
    );
    Ok(())
}

/// `describe_execution` keeps every attempt: worker, lease, epoch, times, outcome, failure.
pub(crate) async fn describe_attempt_history(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("history");
    let before = ctx.now().await?;
    let id = ctx
        .create(&retrying(&lane, 3, Duration::from_millis(10)).with_priority(4))
        .await?;
    let w1 = ctx.worker();
    let first = ctx
        .claim_one_with(ClaimRequest::new(w1.clone(), lane.clone()))
        .await?;
    let long = "é".repeat(limits::MAX_ERROR_MESSAGE_BYTES);
    ctx.backend()
        .fail(&FailRequest::new(
            first.fence,
            Failure::retryable(long.clone()),
        ))
        .await?;
    ctx.advance(Duration::from_millis(20)).await?;
    ctx.promote(id.partition()).await?;
    let w2 = ctx.worker();
    let second = ctx
        .claim_one_with(ClaimRequest::new(w2.clone(), lane.clone()))
        .await?;
    ctx.backend()
        .complete(&CompleteRequest::new(second.fence).with_result(b"done".to_vec()))
        .await?;
    let s = ctx.describe(&id).await?;
    ensure_eq!(s.id, id, "id");
    ensure_eq!(s.flow, None, "standalone");
    ensure_eq!(s.state(), ExecutionState::Succeeded, "state");
    ensure_eq!(s.status.attempt, 2, "attempts started");
    ensure_eq!(
        s.status.end_reason,
        Some(EndReason::Completed),
        "end reason"
    );
    ensure_eq!(
        s.status.epoch,
        second.fence.epoch,
        "epoch of the last claim"
    );
    ensure_eq!(s.lane, lane, "lane");
    ensure_eq!(s.priority, 4, "priority");
    ensure_eq!(s.payload, b"retrying".to_vec(), "payload");
    ensure_eq!(
        s.retry,
        crate::policy::RetryPolicy::fixed(3, Duration::from_millis(10)),
        "retry policy"
    );
    ensure!(s.created_at >= before, "created_at on the backend clock");
    ensure_eq!(s.result, Some(b"done".to_vec()), "result");
    ensure!(
        s.lease.is_none() && s.available_at.is_none(),
        "no lease, not delayed"
    );
    ensure!(s.finished_at.is_some(), "finished_at");
    ensure_eq!(s.attempts.len(), 2, "two attempts");
    let (a1, a2) = (&s.attempts[0], &s.attempts[1]);
    ensure!(
        a1.number == 1
            && a1.worker == w1
            && a1.lease_id == first.fence.lease_id
            && a1.epoch == first.fence.epoch
            && a1.outcome == Some(AttemptOutcome::Failed)
            && a1.ended_at.is_some_and(|t| t >= a1.started_at),
        "first attempt: {a1:?}"
    );
    let failure = a1.failure.as_ref();
    ensure!(
        failure.is_some_and(|f| f.retryable && f.message == limits::truncate_error_message(&long)),
        "the failure is kept, its message truncated to {} bytes: {:?}",
        limits::MAX_ERROR_MESSAGE_BYTES,
        failure.map(|f| f.message.len())
    );
    ensure!(
        a2.number == 2
            && a2.worker == w2
            && a2.lease_id == second.fence.lease_id
            && a2.outcome == Some(AttemptOutcome::Succeeded)
            && a2.failure.is_none()
            && a2.started_at >= a1.started_at,
        "second attempt: {a2:?}"
    );
    Ok(())
}

/// `list_executions` pages through one partition's executions in a state with a cursor,
/// filtered by lane.
pub(crate) async fn list_pages_with_cursor(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("listed");
    let other = ctx.lane("other");
    let mut builder = FlowBuilder::new(&lane);
    let keys: Vec<String> = (0..7).map(|i| format!("n{i}")).collect();
    for k in &keys {
        builder = builder.nodes(&[k.as_str()]);
    }
    for k in ["o1", "o2"] {
        builder = builder.node_with(k, |mut s| {
            s.lane = other.clone();
            s
        });
    }
    let flow = ctx.create_flow(&builder.build()).await?;
    let expected: BTreeSet<ExecutionId> =
        keys.iter().map(|k| flow.id(k)).collect::<Result<_, _>>()?;

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = ctx
            .backend()
            .list_executions(
                &ListQuery::new(flow.partition, ExecutionState::Ready)
                    .with_lane(lane.clone())
                    .with_limit(3)
                    .after(cursor.clone()),
            )
            .await?;
        pages += 1;
        ensure!(page.items.len() <= 3, "a page holds at most `limit` items");
        for item in &page.items {
            ensure!(
                item.state == ExecutionState::Ready
                    && item.lane == lane
                    && item.flow_id == Some(flow.id),
                "a listed item matches the query: {item:?}"
            );
        }
        seen.extend(page.items.iter().map(|i| i.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        ensure!(pages <= 10, "paging does not end");
    }
    ensure!(
        pages >= 3,
        "7 items in pages of 3 take at least 3 pages, took {pages}"
    );
    let distinct: BTreeSet<ExecutionId> = seen.iter().copied().collect();
    ensure_eq!(distinct.len(), seen.len(), "no item is listed twice");
    ensure_eq!(
        distinct,
        expected,
        "every ready execution of the lane is listed"
    );

    let first = ctx
        .backend()
        .list_executions(
            &ListQuery::new(flow.partition, ExecutionState::Ready)
                .with_lane(lane.clone())
                .with_limit(3),
        )
        .await?;
    let again = ctx
        .backend()
        .list_executions(
            &ListQuery::new(flow.partition, ExecutionState::Ready)
                .with_lane(lane.clone())
                .with_limit(3),
        )
        .await?;
    ensure_eq!(first, again, "a stable order");
    let all = ctx
        .backend()
        .list_executions(&ListQuery::new(flow.partition, ExecutionState::Ready))
        .await?;
    ensure_eq!(all.items.len(), 9, "without a lane filter");
    ensure!(all.next.is_none(), "everything fits one page");

    ctx.claim(&lane, 2).await?;
    let running = ctx
        .backend()
        .list_executions(
            &ListQuery::new(flow.partition, ExecutionState::Running).with_lane(lane.clone()),
        )
        .await?;
    ensure_eq!(running.items.len(), 2, "the running ones");
    Ok(())
}

/// A scan with limit 1 stops early with a cursor and the next call continues after it;
/// `skip` passes over the listed items.
pub(crate) async fn scan_cursor_continues(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("scan");
    let delay = Duration::from_millis(100);
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .node_with("a", |s| s.with_delay(delay))
                .node_with("b", |s| s.with_delay(delay))
                .node_with("c", |s| s.with_delay(delay))
                .build(),
        )
        .await?;
    ctx.advance(delay + Duration::from_millis(50)).await?;
    let first = ctx
        .backend()
        .scan(&ScanRequest::new(
            flow.partition,
            ScanKind::DelayedPromotion,
            1,
        ))
        .await?;
    ensure_eq!(first.processed, 1, "limit 1 processes one item");
    ensure!(first.next.is_some(), "more are due: a cursor is returned");
    let rest = ctx
        .backend()
        .scan(&ScanRequest::new(flow.partition, ScanKind::DelayedPromotion, 10).after(first.next))
        .await?;
    ensure_eq!(
        rest.processed,
        2,
        "the next call continues after the cursor"
    );
    ensure!(rest.next.is_none(), "the end of the due items");
    ctx.ensure_members(
        &flow,
        &[
            ("a", ExecutionState::Ready),
            ("b", ExecutionState::Ready),
            ("c", ExecutionState::Ready),
        ],
        "all promoted",
    )
    .await?;

    let lane = ctx.lane("scan-skip");
    let flow = ctx
        .create_flow(
            &FlowBuilder::new(&lane)
                .node_with("a", |s| s.with_delay(delay))
                .node_with("b", |s| s.with_delay(delay))
                .build(),
        )
        .await?;
    ctx.advance(delay + Duration::from_millis(50)).await?;
    let skipped = flow.id("a")?;
    let report = ctx
        .backend()
        .scan(
            &ScanRequest::new(flow.partition, ScanKind::DelayedPromotion, 10)
                .skipping(vec![skipped.to_string()]),
        )
        .await?;
    ensure_eq!(report.processed, 1, "the skipped item is passed over");
    ctx.ensure_members(
        &flow,
        &[("a", ExecutionState::Delayed), ("b", ExecutionState::Ready)],
        "after a skipping scan",
    )
    .await?;
    ensure_eq!(
        ctx.promote(flow.partition).await?,
        1,
        "a later scan picks it up"
    );
    Ok(())
}

/// `due_summary` never reports an index's work later than it falls due, names the partitions
/// in request order, and rejects partitions outside the config.
pub(crate) async fn due_summary_bounds(ctx: TestContext) -> CaseResult {
    let lane = ctx.lane("due");
    let delayed = ctx
        .create(&spec(&lane, "later").with_delay(Duration::from_secs(3600)))
        .await?;
    let running_id = ctx
        .create(&spec(&lane, "now").with_deadline(Duration::from_secs(7200)))
        .await?;
    let running = ctx
        .claim_one_with(
            ClaimRequest::new(ctx.worker(), lane.clone()).with_lease_ttl(Duration::from_secs(600)),
        )
        .await?;
    ensure_eq!(running.id(), running_id, "the ready execution is claimed");
    let available_at = ctx.describe(&delayed).await?.available_at;
    let partitions = [delayed.partition(), running_id.partition()];
    let summary = ctx.backend().due_summary(&partitions).await?;
    ensure_eq!(
        summary
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        partitions.to_vec(),
        "one entry per requested partition, in request order"
    );
    let first = summary.partitions[0];
    ensure!(
        first.delayed.is_some() && first.delayed <= available_at,
        "delayed work is reported no later than its available_at: {first:?} vs {available_at:?}"
    );
    let second = summary.partitions[1];
    ensure!(
        second
            .lease_expiry
            .is_some_and(|at| at <= running.lease_expires_at),
        "a lease is reported no later than it expires: {second:?} vs {}",
        running.lease_expires_at
    );
    ensure!(
        second.deadline.is_some() && second.deadline <= running.deadline,
        "a deadline is reported no later than it passes: {second:?} vs {:?}",
        running.deadline
    );
    let outside = crate::partition::Partition(ctx.config().partitions);
    let error = ctx.backend().due_summary(&[outside]).await;
    expect_err!(
        error,
        EngineError::Validation { .. },
        "a partition outside the config"
    );
    Ok(())
}
