//! The worker pool every workload drains its executions with.
//!
//! `workers` tasks share one backend. A worker whose hands are empty claims a batch of up to
//! `claim_batch`; it completes what it holds one execution at a time, and the completion that
//! empties its hands also leases its next executions (up to `claim_next`) in the same call
//! (`CompleteRequest::with_claim_next`), so a busy worker pays one backend call per
//! execution. The workloads pick `claim_next` (see [`super::Shape`]): a batch for independent
//! work, as the bare queues pop theirs; one for flows, where holding more would hoard scarce
//! ready work other workers could run. A claim that finds nothing is retried after
//! [`IDLE_POLL`]. The pool stops when
//! `expected` executions have been completed, and fails if no execution completes for
//! [`STALL_TIMEOUT`] (a lost cascade must show up as an error, not as a hang).
//!
//! Every completion is recorded with when its execution was claimed (the return of the call
//! that leased it) and when its completion returned, from which the workloads compute their
//! latencies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ff_core::{
    ClaimRequest, ClaimedExecution, CompleteRequest, EngineBackend, ExecutionId, FlowId, Lane,
    NodeKey, WorkerId,
};
use tokio::task::JoinSet;

/// How long a worker waits after a claim that found nothing.
pub const IDLE_POLL: Duration = Duration::from_millis(1);
/// How long the pool waits without any completion before it gives up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How to drain.
#[derive(Clone, Debug)]
pub struct DrainSpec {
    /// Concurrent workers.
    pub workers: usize,
    /// Most executions one claim by an empty-handed worker leases.
    pub claim_batch: u32,
    /// Most executions a completion leases with `claim_next`.
    pub claim_next: u32,
    /// The lane to claim from.
    pub lane: Lane,
    /// Executions to complete before the pool stops.
    pub expected: u64,
}

/// One completed execution.
#[derive(Clone, Debug)]
pub struct Done {
    /// The execution.
    pub id: ExecutionId,
    /// Its flow, for flow members.
    pub flow: Option<FlowId>,
    /// Its node key, for flow members.
    pub node: Option<NodeKey>,
    /// When the call that leased it returned.
    pub claimed_at: Instant,
    /// When its `complete` returned.
    pub completed_at: Instant,
}

/// What a drain did.
#[derive(Debug)]
pub struct Drained {
    /// From the start of the drain until the last completion returned.
    pub elapsed: Duration,
    /// Every completion, in no particular order.
    pub done: Vec<Done>,
    /// Claims (not claim-nexts) that found nothing.
    pub empty_claims: u64,
}

/// Drains `spec.expected` executions of `spec.lane` with `spec.workers` workers.
pub async fn drain(backend: &Arc<dyn EngineBackend>, spec: &DrainSpec) -> anyhow::Result<Drained> {
    let completed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..spec.workers {
        workers.spawn(worker(backend.clone(), spec.clone(), completed.clone()));
    }

    let mut done = Vec::with_capacity(usize::try_from(spec.expected).unwrap_or(0));
    let mut empty_claims = 0;
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    let mut watchdog = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            joined = workers.join_next() => {
                let Some(joined) = joined else { break };
                let outcome = joined.context("a bench worker panicked")?;
                let (records, empty) = outcome?;
                done.extend(records);
                empty_claims += empty;
            }
            _ = watchdog.tick() => {
                let now = completed.load(Ordering::Relaxed);
                if now != last_count {
                    last_count = now;
                    last_progress = Instant::now();
                } else if last_progress.elapsed() > STALL_TIMEOUT {
                    workers.abort_all();
                    anyhow::bail!(
                        "no execution completed for {STALL_TIMEOUT:?}: {now} of {} done",
                        spec.expected
                    );
                }
            }
        }
    }
    let last = done.iter().map(|d| d.completed_at).max().unwrap_or(started);
    Ok(Drained {
        elapsed: last.saturating_duration_since(started),
        done,
        empty_claims,
    })
}

/// One worker: claim when empty-handed, complete one at a time, claim the next batch with
/// the completion that empties the hands.
async fn worker(
    backend: Arc<dyn EngineBackend>,
    spec: DrainSpec,
    completed: Arc<AtomicU64>,
) -> anyhow::Result<(Vec<Done>, u64)> {
    let worker = WorkerId::random();
    let claim = ClaimRequest::new(worker.clone(), spec.lane.clone()).with_max(spec.claim_batch);
    let claim_next = ClaimRequest::new(worker, spec.lane.clone()).with_max(spec.claim_next);
    let mut hands: std::collections::VecDeque<(ClaimedExecution, Instant)> = Default::default();
    let mut records = Vec::new();
    let mut empty_claims = 0;
    while completed.load(Ordering::Relaxed) < spec.expected {
        let Some((execution, claimed_at)) = hands.pop_front() else {
            let claimed = backend.claim(&claim).await.context("claim")?;
            let now = Instant::now();
            if claimed.is_empty() {
                empty_claims += 1;
                tokio::time::sleep(IDLE_POLL).await;
            }
            hands.extend(claimed.into_iter().map(|c| (c, now)));
            continue;
        };
        let mut request = CompleteRequest::new(execution.fence);
        if hands.is_empty() {
            request = request.with_claim_next(claim_next.clone());
        }
        let reply = backend
            .complete(&request)
            .await
            .with_context(|| format!("complete {}", execution.id()))?;
        let now = Instant::now();
        completed.fetch_add(1, Ordering::Relaxed);
        records.push(Done {
            id: execution.id(),
            flow: execution.flow_id,
            node: execution.node_key.clone(),
            claimed_at,
            completed_at: now,
        });
        hands.extend(reply.next.into_iter().map(|c| (c, now)));
    }
    Ok((records, empty_claims))
}
