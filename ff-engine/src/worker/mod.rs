//! The `Worker`: the claim loop users would otherwise hand-write (DESIGN §6).
//!
//! ```no_run
//! # async fn example(backend: std::sync::Arc<dyn ff_core::EngineBackend>) -> Result<(), ff_core::EngineError> {
//! use std::time::Duration;
//! use ff_core::Lane;
//! use ff_engine::{Job, Worker};
//!
//! let worker = Worker::builder(backend)
//!     .lane(Lane::new("emails")?)
//!     .concurrency(16)
//!     .lease_ttl(Duration::from_secs(30))
//!     .handler(|job: Job| async move { Ok(Some(job.payload().to_vec())) })
//!     .build()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop);
//! // Runs until `stop` is sent (or dropped), then drains.
//! let report = worker.run(async { let _ = stopped.await; }).await?;
//! println!("{} succeeded", report.succeeded);
//! # Ok(()) }
//! ```
//!
//! How it works:
//!
//! - **Slots**: at most `concurrency` executions run at once. The loop claims in batches up
//!   to the free slots (`claim` with `max = free`).
//! - **One round trip per node**: when the backend supports `claim_next`, finishing an
//!   execution (`complete` / `fail`) also claims the next ones for the slot it frees (plus any
//!   other free slots), so a busy worker pays one round trip per executed node.
//! - **Leases**: each running execution's lease is renewed at `renew_fraction` of the TTL.
//!   A renewal answered `Fenced` / `NotActive` / `NotFound` means the lease is lost (cancel,
//!   expiry, timeout): the handler's future is dropped.
//! - **Outcomes**: `Ok(result)` completes; `Err(HandlerError)` fails the attempt, retryable or
//!   not; a panic fails it as retryable. Terminal calls are idempotent, so transient errors are
//!   retried while the lease lasts. A result the backend rejects (e.g. too large) fails the
//!   attempt permanently with the reason instead of leaving it to expire.
//! - **Idle**: when the lane is empty the loop backs off (`idle_backoff`) and wakes early on
//!   a `WorkReady` hint for its lane when the backend has hints.
//! - **Shutdown**: once the `shutdown` future resolves, no new work is claimed; executions in
//!   flight finish. If they do not within `drain_timeout`, their handlers are dropped and
//!   their attempts failed as retryable, so they are retried elsewhere at once instead of
//!   waiting for their leases to expire.

mod handler;

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ff_core::limits::MAX_CLAIM_BATCH;
use ff_core::policy::check_lease_ttl;
use ff_core::{
    Capability, ClaimRequest, ClaimedExecution, CompleteRequest, EngineBackend, EngineError,
    FailDisposition, FailRequest, Failure, Fence, Hint, HintReceiver, Lane, WorkerId,
};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use handler::{ErasedHandler, HandlerFuture};
pub use handler::{Handler, HandlerError, HandlerResult, Job};

use crate::backoff::Backoff;
use crate::call::{CallError, call, panic_message};
use crate::telemetry;

/// Transient errors on a terminal call are retried this often (while the lease lasts).
const TERMINAL_RETRIES: u32 = 5;

/// Configures a [`Worker`].
#[must_use = "call `build` to get a worker"]
pub struct WorkerBuilder {
    backend: Arc<dyn EngineBackend>,
    id: Option<WorkerId>,
    lane: Option<Lane>,
    capabilities: BTreeSet<Capability>,
    concurrency: usize,
    claim_batch: Option<u32>,
    lease_ttl: Duration,
    renew_fraction: f64,
    idle_backoff: Backoff,
    drain_timeout: Duration,
    handler: Option<Arc<dyn ErasedHandler>>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("id", &self.id)
            .field("lane", &self.lane)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// The worker's id, recorded on its leases and attempts (default: a fresh
    /// `worker-<uuid>`).
    pub fn id(mut self, id: WorkerId) -> Self {
        self.id = Some(id);
        self
    }

    /// The lane to claim from (required).
    pub fn lane(mut self, lane: Lane) -> Self {
        self.lane = Some(lane);
        self
    }

    /// Adds a capability the worker offers.
    pub fn capability(mut self, capability: Capability) -> Self {
        self.capabilities.insert(capability);
        self
    }

    /// Replaces the capabilities the worker offers: it claims only executions requiring a
    /// subset of them.
    pub fn capabilities(mut self, capabilities: impl IntoIterator<Item = Capability>) -> Self {
        self.capabilities = capabilities.into_iter().collect();
        self
    }

    /// Executions run at once (default 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Most executions one claim round trip leases (default: the concurrency, at most
    /// 1000).
    pub fn claim_batch(mut self, n: u32) -> Self {
        self.claim_batch = Some(n);
        self
    }

    /// Lease TTL (default 30 s). Renewed at `renew_fraction` of it while the handler runs.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// When to renew, as a fraction of the TTL (default 1/3, within 0.05..=0.5): two renewals
    /// may fail before the lease lapses.
    pub fn renew_fraction(mut self, fraction: f64) -> Self {
        self.renew_fraction = fraction;
        self
    }

    /// Backoff while the lane is empty (default 5 ms doubling to 500 ms).
    pub fn idle_backoff(mut self, backoff: Backoff) -> Self {
        self.idle_backoff = backoff;
        self
    }

    /// How long shutdown waits for executions in flight before failing them as retryable
    /// (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The code to run for each execution (required).
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Checks the settings.
    ///
    /// Errors: `Validation` naming the setting (`lane`, `handler`, `concurrency`,
    /// `claim_batch`, `lease_ttl`, `renew_fraction`).
    pub fn build(self) -> Result<Worker, EngineError> {
        let lane = self
            .lane
            .ok_or_else(|| EngineError::validation("lane", "a worker needs a lane"))?;
        let handler = self
            .handler
            .ok_or_else(|| EngineError::validation("handler", "a worker needs a handler"))?;
        if self.concurrency == 0 {
            return Err(EngineError::validation("concurrency", "must be at least 1"));
        }
        let default_batch = u32::try_from(self.concurrency)
            .unwrap_or(MAX_CLAIM_BATCH)
            .min(MAX_CLAIM_BATCH);
        let claim_batch = self.claim_batch.unwrap_or(default_batch);
        if claim_batch == 0 || claim_batch > MAX_CLAIM_BATCH {
            return Err(EngineError::validation(
                "claim_batch",
                format!("{claim_batch} is outside 1..={MAX_CLAIM_BATCH}"),
            ));
        }
        check_lease_ttl("lease_ttl", self.lease_ttl)?;
        if !(0.05..=0.5).contains(&self.renew_fraction) {
            return Err(EngineError::validation(
                "renew_fraction",
                "must be within 0.05..=0.5",
            ));
        }
        let id = self.id.unwrap_or_else(WorkerId::random);
        let claim = ClaimRequest::new(id.clone(), lane.clone())
            .with_capabilities(self.capabilities)
            .with_lease_ttl(self.lease_ttl);
        Ok(Worker {
            ctx: Arc::new(Context {
                claim_next: self.backend.capabilities().claim_next,
                hints: self.backend.capabilities().hints,
                backend: self.backend,
                id,
                lane,
                claim,
                concurrency: self.concurrency,
                claim_batch: claim_batch as usize,
                lease_ttl: self.lease_ttl,
                renew_fraction: self.renew_fraction,
                handler,
                slots: Arc::new(Semaphore::new(self.concurrency)),
                draining: AtomicBool::new(false),
                counters: Arc::default(),
            }),
            idle_backoff: self.idle_backoff,
            drain_timeout: self.drain_timeout,
        })
    }
}

/// A configured worker; [`Worker::run`] runs it.
pub struct Worker {
    ctx: Arc<Context>,
    idle_backoff: Backoff,
    drain_timeout: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.ctx.id)
            .field("lane", &self.ctx.lane)
            .field("concurrency", &self.ctx.concurrency)
            .finish_non_exhaustive()
    }
}

struct Context {
    backend: Arc<dyn EngineBackend>,
    id: WorkerId,
    lane: Lane,
    claim: ClaimRequest,
    claim_next: bool,
    hints: bool,
    concurrency: usize,
    claim_batch: usize,
    lease_ttl: Duration,
    renew_fraction: f64,
    handler: Arc<dyn ErasedHandler>,
    /// One permit per slot; a running execution holds one.
    slots: Arc<Semaphore>,
    draining: AtomicBool,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    claimed: AtomicU64,
    succeeded: AtomicU64,
    retry_scheduled: AtomicU64,
    failed: AtomicU64,
    lease_lost: AtomicU64,
    claim_calls: AtomicU64,
    empty_claims: AtomicU64,
    terminal_calls: AtomicU64,
}

/// What a worker has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Executions leased (by `claim` or by `claim_next`).
    pub claimed: u64,
    /// Attempts completed.
    pub succeeded: u64,
    /// Attempts failed with a retry scheduled.
    pub retry_scheduled: u64,
    /// Attempts failed for good (permanent error or attempts exhausted).
    pub failed: u64,
    /// Attempts whose lease was lost before they could be recorded (cancelled, expired,
    /// timed out, or failed on shutdown after the drain timeout).
    pub lease_lost: u64,
    /// `claim` calls made.
    pub claim_calls: u64,
    /// `claim` calls that found nothing (the lane was empty).
    pub empty_claims: u64,
    /// `complete` / `fail` calls made (each possibly claiming the next executions).
    pub terminal_calls: u64,
}

impl WorkerReport {
    /// Attempts finished, however they ended.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.retry_scheduled + self.failed + self.lease_lost
    }

    /// Claim and terminal round trips per finished attempt: 1.0 when every node costs one
    /// round trip (`claim_next` at work), about 2.0 without it.
    pub fn round_trips_per_attempt(&self) -> f64 {
        let finished = self.finished();
        if finished == 0 {
            return 0.0;
        }
        (self.claim_calls + self.terminal_calls) as f64 / finished as f64
    }
}

/// A live view of a worker's counters, usable while [`Worker::run`] runs.
#[derive(Clone, Debug)]
pub struct WorkerStats(Arc<Counters>);

impl WorkerStats {
    /// The counters now.
    pub fn snapshot(&self) -> WorkerReport {
        let c = &self.0;
        WorkerReport {
            claimed: c.claimed.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            retry_scheduled: c.retry_scheduled.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            lease_lost: c.lease_lost.load(Ordering::Relaxed),
            claim_calls: c.claim_calls.load(Ordering::Relaxed),
            empty_claims: c.empty_claims.load(Ordering::Relaxed),
            terminal_calls: c.terminal_calls.load(Ordering::Relaxed),
        }
    }
}

/// How one execution ended, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Succeeded,
    RetryScheduled,
    Failed,
    LeaseLost,
}

impl Ended {
    fn label(self) -> &'static str {
        match self {
            Ended::Succeeded => "succeeded",
            Ended::RetryScheduled => "retry_scheduled",
            Ended::Failed => "failed",
            Ended::LeaseLost => "lease_lost",
        }
    }
}

/// Executions claimed next, each with the slot it runs in.
type Next = Vec<(ClaimedExecution, OwnedSemaphorePermit)>;

/// What a finished job hands back to the loop: executions it claimed next, each with its
/// slot.
struct JobEnd {
    next: Next,
}

impl Worker {
    /// A builder for a worker over `backend`.
    pub fn builder(backend: Arc<dyn EngineBackend>) -> WorkerBuilder {
        WorkerBuilder {
            backend,
            id: None,
            lane: None,
            capabilities: BTreeSet::new(),
            concurrency: 1,
            claim_batch: None,
            lease_ttl: Duration::from_secs(30),
            renew_fraction: 1.0 / 3.0,
            idle_backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(500)),
            drain_timeout: Duration::from_secs(30),
            handler: None,
        }
    }

    /// The worker's id.
    pub fn id(&self) -> &WorkerId {
        &self.ctx.id
    }

    /// A live view of the counters.
    pub fn stats(&self) -> WorkerStats {
        WorkerStats(Arc::clone(&self.ctx.counters))
    }

    /// Claims and runs executions until `shutdown` resolves, then drains the work in flight
    /// and returns what the worker did.
    ///
    /// Errors: `Validation` if the backend rejects the claim request itself (it will not get
    /// better by retrying). Transient backend errors are retried with backoff.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport, EngineError> {
        let ctx = self.ctx;
        let slots = Arc::clone(&ctx.slots);
        let (abort_tx, abort_rx) = watch::channel(false);
        let mut jobs: JoinSet<JobEnd> = JoinSet::new();
        let mut hints = subscribe(&ctx).await;
        let shutdown = shutdown.fuse();
        tokio::pin!(shutdown);
        let mut draining = false;
        let mut drain_deadline = Instant::now();
        let mut empty_claims = 0u32;
        let mut claim_errors = 0u32;
        let mut next_claim_at = Instant::now();
        let mut last_claim_at = Instant::now();

        loop {
            if draining && jobs.is_empty() {
                break;
            }
            let free = slots.available_permits().min(ctx.claim_batch);
            if !draining && free > 0 && Instant::now() >= next_claim_at {
                let Ok(permits) = Arc::clone(&slots).try_acquire_many_owned(free as u32) else {
                    // A finishing job took free slots for its `claim_next` meanwhile.
                    tokio::task::yield_now().await;
                    continue;
                };
                let claimed_at = Instant::now();
                last_claim_at = claimed_at;
                let request = ctx.claim.clone().with_max(free as u32);
                ctx.counters.claim_calls.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(telemetry::WORKER_CLAIM_CALLS, "lane" => ctx.lane.to_string())
                    .increment(1);
                match call("claim", ctx.backend.claim(&request)).await {
                    Ok(claimed) => {
                        claim_errors = 0;
                        let got = claimed.len();
                        spawn_jobs(&ctx, &mut jobs, claimed, permits, claimed_at, &abort_rx);
                        if got == 0 {
                            ctx.counters.empty_claims.fetch_add(1, Ordering::Relaxed);
                            empty_claims = empty_claims.saturating_add(1);
                            next_claim_at = Instant::now() + self.idle_backoff.delay(empty_claims);
                        } else {
                            empty_claims = 0;
                            if got < free {
                                // The lane is drained for now; look again shortly.
                                next_claim_at = Instant::now() + self.idle_backoff.initial;
                            }
                        }
                    }
                    Err(CallError::Failed(error @ EngineError::Validation { .. })) => {
                        return Err(error);
                    }
                    Err(error) => {
                        claim_errors = claim_errors.saturating_add(1);
                        let wait = self.idle_backoff.delay(claim_errors.saturating_add(3));
                        tracing::warn!(worker = %ctx.id, lane = %ctx.lane, %error, retry_in = ?wait, "claim failed");
                        next_claim_at = Instant::now() + wait;
                    }
                }
                continue;
            }

            let idle = !draining && free > 0;
            tokio::select! {
                () = &mut shutdown, if !draining => {
                    draining = true;
                    ctx.draining.store(true, Ordering::SeqCst);
                    drain_deadline = Instant::now() + self.drain_timeout;
                    tracing::info!(worker = %ctx.id, in_flight = jobs.len(), "worker draining");
                }
                Some(joined) = jobs.join_next(), if !jobs.is_empty() => {
                    match joined {
                        Ok(end) => {
                            for (execution, permit) in end.next {
                                spawn_job(&ctx, &mut jobs, execution, permit, Instant::now(), &abort_rx);
                            }
                        }
                        Err(error) => tracing::error!(worker = %ctx.id, %error, "job task ended abnormally"),
                    }
                }
                hint = recv_hint(&mut hints), if idle && hints.is_some() => {
                    match hint {
                        // Look at once, but not more often than the shortest idle backoff:
                        // every ready transition raises a hint, and a burst of them must
                        // not turn into a burst of claims (executions finishing in flight
                        // claim their successors themselves with `claim_next`). The backoff
                        // itself is not reset: only finding work does that.
                        Some(Hint::WorkReady { lane, .. }) if lane == ctx.lane => {
                            next_claim_at = next_claim_at.min(last_claim_at + self.idle_backoff.initial);
                        }
                        Some(Hint::Lagged) => {
                            next_claim_at = next_claim_at.min(last_claim_at + self.idle_backoff.initial);
                        }
                        Some(_) => {}
                        None => hints = None,
                    }
                }
                () = tokio::time::sleep_until(next_claim_at), if idle => {}
                () = tokio::time::sleep_until(drain_deadline), if draining && !*abort_rx.borrow() => {
                    tracing::warn!(worker = %ctx.id, in_flight = jobs.len(), "drain timeout; failing the executions in flight");
                    abort_tx.send_replace(true);
                }
            }
        }
        Ok(WorkerStats(Arc::clone(&ctx.counters)).snapshot())
    }
}

async fn subscribe(ctx: &Context) -> Option<HintReceiver> {
    if !ctx.hints {
        return None;
    }
    match call("subscribe_hints", ctx.backend.subscribe_hints()).await {
        Ok(rx) => Some(rx),
        Err(error) => {
            tracing::warn!(worker = %ctx.id, %error, "no hints; polling the lane");
            None
        }
    }
}

async fn recv_hint(hints: &mut Option<HintReceiver>) -> Option<Hint> {
    match hints {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn spawn_jobs(
    ctx: &Arc<Context>,
    jobs: &mut JoinSet<JobEnd>,
    claimed: Vec<ClaimedExecution>,
    mut permits: OwnedSemaphorePermit,
    claimed_at: Instant,
    abort: &watch::Receiver<bool>,
) {
    for execution in claimed {
        let Some(permit) = permits.split(1) else {
            // More executions than asked for: a backend bug. Run it anyway rather than
            // leaving it leased; the slot count is only exceeded briefly.
            tracing::error!(worker = %ctx.id, "backend returned more executions than asked for");
            let extra = Arc::new(Semaphore::new(1));
            match extra.try_acquire_owned() {
                Ok(permit) => spawn_job(ctx, jobs, execution, permit, claimed_at, abort),
                Err(_) => unreachable!("a fresh semaphore with one permit has one permit"),
            }
            continue;
        };
        spawn_job(ctx, jobs, execution, permit, claimed_at, abort);
    }
}

fn spawn_job(
    ctx: &Arc<Context>,
    jobs: &mut JoinSet<JobEnd>,
    execution: ClaimedExecution,
    permit: OwnedSemaphorePermit,
    claimed_at: Instant,
    abort: &watch::Receiver<bool>,
) {
    ctx.counters.claimed.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(telemetry::WORKER_CLAIMS, "lane" => ctx.lane.to_string()).increment(1);
    let span = tracing::debug_span!(
        "job",
        execution_id = %execution.fence.execution_id,
        attempt = execution.attempt
    );
    let ctx = Arc::clone(ctx);
    let abort = abort.clone();
    jobs.spawn(run_job(ctx, execution, permit, claimed_at, abort).instrument(span));
}

/// What the handler phase ended with.
enum Outcome {
    Finished(HandlerResult),
    Panicked(String),
    LeaseLost(String),
    Aborted,
}

async fn run_job(
    ctx: Arc<Context>,
    execution: ClaimedExecution,
    permit: OwnedSemaphorePermit,
    claimed_at: Instant,
    mut abort: watch::Receiver<bool>,
) -> JobEnd {
    let fence = execution.fence;
    let started = Instant::now();
    let job = Job::new(execution, Arc::clone(&ctx.backend));
    // Calling the handler may itself panic (a closure's synchronous part), not only polling
    // its future: both fail the attempt instead of leaving it leased.
    let handler: HandlerFuture =
        match std::panic::catch_unwind(AssertUnwindSafe(|| Arc::clone(&ctx.handler).start(job))) {
            Ok(future) => future,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                Box::pin(async move { std::panic::panic_any(message) })
            }
        };
    let mut handler = AssertUnwindSafe(handler).catch_unwind();
    let renew_every = ctx.lease_ttl.mul_f64(ctx.renew_fraction);
    let mut lease_deadline = claimed_at + ctx.lease_ttl;
    let mut renew_at = claimed_at + renew_every;

    let outcome = loop {
        tokio::select! {
            result = &mut handler => break match result {
                Ok(result) => Outcome::Finished(result),
                Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
            },
            () = tokio::time::sleep_until(renew_at) => {
                let sent = Instant::now();
                match call("renew", ctx.backend.renew(&fence, ctx.lease_ttl)).await {
                    Ok(_) => {
                        lease_deadline = sent + ctx.lease_ttl;
                        renew_at = sent + renew_every;
                    }
                    Err(CallError::Failed(
                        error @ (EngineError::Fenced { .. } | EngineError::NotActive { .. } | EngineError::NotFound { .. }),
                    )) => break Outcome::LeaseLost(error.to_string()),
                    Err(error) => {
                        if Instant::now() >= lease_deadline {
                            break Outcome::LeaseLost(format!("could not renew before expiry: {error}"));
                        }
                        tracing::warn!(execution_id = %fence.execution_id, %error, "lease renewal failed; retrying");
                        renew_at = Instant::now() + (renew_every / 4).max(Duration::from_millis(1));
                    }
                }
            }
            () = aborted(&mut abort) => break Outcome::Aborted,
        }
    };
    drop(handler);
    metrics::histogram!(telemetry::WORKER_HANDLER_DURATION, "lane" => ctx.lane.to_string())
        .record(started.elapsed().as_secs_f64());

    let (ended, next) = match outcome {
        Outcome::Finished(Ok(result)) => finish_complete(&ctx, fence, result, permit).await,
        Outcome::Finished(Err(error)) => {
            let failure = Failure {
                message: error.message().to_string(),
                retryable: error.is_retryable(),
            };
            finish_fail(&ctx, fence, failure, permit).await
        }
        Outcome::Panicked(message) => {
            tracing::error!(execution_id = %fence.execution_id, panic = %message, "handler panicked");
            let failure = Failure::retryable(format!("handler panicked: {message}"));
            finish_fail(&ctx, fence, failure, permit).await
        }
        Outcome::LeaseLost(reason) => {
            tracing::warn!(execution_id = %fence.execution_id, %reason, "lease lost; handler dropped");
            (Ended::LeaseLost, Vec::new())
        }
        Outcome::Aborted => {
            // Draining: `finish_fail` claims nothing next.
            let failure = Failure::retryable("the worker shut down before the handler finished");
            finish_fail(&ctx, fence, failure, permit).await
        }
    };
    count(&ctx, ended);
    JobEnd { next }
}

/// Resolves once the drain timeout passed (never, if the worker loop is gone).
async fn aborted(abort: &mut watch::Receiver<bool>) {
    let set = abort.wait_for(|a| *a).await.is_ok();
    if !set {
        std::future::pending::<()>().await;
    }
}

fn count(ctx: &Context, ended: Ended) {
    let counter = match ended {
        Ended::Succeeded => &ctx.counters.succeeded,
        Ended::RetryScheduled => &ctx.counters.retry_scheduled,
        Ended::Failed => &ctx.counters.failed,
        Ended::LeaseLost => &ctx.counters.lease_lost,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(
        telemetry::WORKER_COMPLETIONS,
        "lane" => ctx.lane.to_string(),
        "outcome" => ended.label()
    )
    .increment(1);
}

/// The `claim_next` request for a job that frees its slot: its own slot plus any other free
/// ones (up to the batch size), unless the worker is draining or the backend cannot.
fn next_claim(ctx: &Context, permit: &mut OwnedSemaphorePermit) -> Option<ClaimRequest> {
    if !ctx.claim_next || ctx.draining.load(Ordering::SeqCst) {
        return None;
    }
    // Grow the job's own slot by the free ones, up to the claim batch.
    let want = ctx
        .claim_batch
        .saturating_sub(1)
        .min(ctx.slots.available_permits());
    if want > 0
        && let Ok(extra) = Arc::clone(&ctx.slots).try_acquire_many_owned(want as u32)
    {
        permit.merge(extra);
    }
    Some(ctx.claim.clone().with_max(permit.num_permits() as u32))
}

fn hand_out(next: Vec<ClaimedExecution>, mut permits: OwnedSemaphorePermit) -> Next {
    let mut out = Vec::with_capacity(next.len());
    let mut extra: Vec<ClaimedExecution> = Vec::new();
    for execution in next {
        match permits.split(1) {
            Some(permit) => out.push((execution, permit)),
            None => extra.push(execution),
        }
    }
    for execution in extra {
        tracing::error!(execution_id = %execution.id(), "backend returned more executions than asked for");
        let spare = Arc::new(Semaphore::new(1));
        if let Ok(permit) = spare.try_acquire_owned() {
            out.push((execution, permit));
        }
    }
    out
}

async fn finish_complete(
    ctx: &Context,
    fence: Fence,
    result: Option<Vec<u8>>,
    mut permit: OwnedSemaphorePermit,
) -> (Ended, Next) {
    let mut request = CompleteRequest::new(fence);
    request.result = result;
    if let Some(claim) = next_claim(ctx, &mut permit) {
        request = request.with_claim_next(claim);
    }
    let mut attempt = 0;
    loop {
        ctx.counters.terminal_calls.fetch_add(1, Ordering::Relaxed);
        if request.claim_next.is_some() {
            metrics::counter!(telemetry::WORKER_CLAIM_CALLS, "lane" => ctx.lane.to_string())
                .increment(1);
        }
        match call("complete", ctx.backend.complete(&request)).await {
            Ok(completed) => return (Ended::Succeeded, hand_out(completed.next, permit)),
            Err(error) if error.is_retryable() && attempt < TERMINAL_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            Err(CallError::Failed(error @ EngineError::Validation { .. })) => {
                // The backend will never take this result: fail the attempt with the reason
                // rather than leaving it to expire.
                tracing::error!(execution_id = %fence.execution_id, %error, "result rejected");
                let failure = Failure::permanent(format!("result rejected: {error}"));
                return finish_fail(ctx, fence, failure, permit).await;
            }
            Err(error) => {
                tracing::warn!(execution_id = %fence.execution_id, %error, "complete failed");
                return (Ended::LeaseLost, Vec::new());
            }
        }
    }
}

async fn finish_fail(
    ctx: &Context,
    fence: Fence,
    failure: Failure,
    mut permit: OwnedSemaphorePermit,
) -> (Ended, Next) {
    let mut request = FailRequest::new(fence, failure);
    if let Some(claim) = next_claim(ctx, &mut permit) {
        request = request.with_claim_next(claim);
    }
    let mut attempt = 0;
    loop {
        ctx.counters.terminal_calls.fetch_add(1, Ordering::Relaxed);
        match call("fail", ctx.backend.fail(&request)).await {
            Ok(outcome) => {
                let ended = match outcome.disposition {
                    FailDisposition::RetryScheduled { .. } => Ended::RetryScheduled,
                    FailDisposition::Failed => Ended::Failed,
                };
                return (ended, hand_out(outcome.next, permit));
            }
            Err(error) if error.is_retryable() && attempt < TERMINAL_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            Err(error) => {
                tracing::warn!(execution_id = %fence.execution_id, %error, "fail failed");
                return (Ended::LeaseLost, Vec::new());
            }
        }
    }
}
