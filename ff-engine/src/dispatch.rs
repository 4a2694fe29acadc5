//! The completion dispatch loop (DESIGN §4 cascade contract, §6).
//!
//! Every terminal transition of a flow member leaves a durable completion record on its
//! partition; `cascade_completion` applies the record's edges and retires it. The dispatch
//! loop drains the records of the partitions this instance owns:
//!
//! - **What wakes it**: a backend hint (`CompletionPending` for a partition; `Lagged` wakes
//!   every owned partition), a partition gained from another instance, and the periodic
//!   pending-completion sweep (a scanner, see [`crate::scanner`]), which is the only wake-up
//!   when the backend has no hints and the safety net for lost hints when it does.
//! - **Concurrency**: the partition is the unit. At most
//!   [`crate::EngineConfig::dispatch_concurrency`] partitions are drained at once, each by one
//!   task, its events in order (oldest first). The sweep and the loop never drain the same
//!   partition at the same time.
//! - **Never marking undone work done**: an event counts as dispatched only once
//!   `cascade_completion` answered `finished: true`. A call that fails or panics leaves the
//!   event pending; the event is passed over for a backoff (so it cannot be retried hot) and
//!   the events behind it go on.
//! - **Lag**: for every retired event, backend `now()` (read once per batch) minus the event's
//!   `recorded_at` goes to the cascade-lag histogram.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ff_core::limits::MAX_SCAN_BATCH;
use ff_core::{CompletionEvent, EngineError, ExecutionId, Partition, Timestamp};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::backoff::ItemBackoff;
use crate::call::{CallError, call};
use crate::engine::Shared;
use crate::telemetry;

/// A call to `cascade_completion` that applies nothing and does not finish is retried this
/// often before the event is treated as failed (a backend that makes no progress).
const MAX_STALLED_CALLS: u32 = 3;
/// Retryable errors (contention, transient transport) are retried this often, right away,
/// before the event is put in backoff.
const MAX_RETRIES: u32 = 3;

/// The dispatch loop's shared state: which partitions need draining, which are being
/// drained, and which events are in backoff.
#[derive(Debug)]
pub(crate) struct DispatchState {
    dirty: Mutex<BTreeSet<Partition>>,
    notify: Notify,
    draining: Mutex<HashSet<Partition>>,
    events: Mutex<ItemBackoff<ExecutionId>>,
}

/// Marks a partition as being drained; unmarks it (and wakes the loop) when dropped.
pub(crate) struct DrainGuard<'a> {
    state: &'a DispatchState,
    partition: Partition,
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        lock(&self.state.draining).remove(&self.partition);
        self.state.notify.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single insert/remove/lookup: a panic cannot leave the
    // protected value half-updated, so a poisoned lock is used as is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DispatchState {
    pub(crate) fn new(events: ItemBackoff<ExecutionId>) -> Self {
        DispatchState {
            dirty: Mutex::default(),
            notify: Notify::new(),
            draining: Mutex::default(),
            events: Mutex::new(events),
        }
    }

    /// Asks for `partition` to be drained.
    pub(crate) fn wake(&self, partition: Partition) {
        lock(&self.dirty).insert(partition);
        self.notify.notify_one();
    }

    /// Asks for every one of `partitions` to be drained.
    pub(crate) fn wake_all(&self, partitions: impl IntoIterator<Item = Partition>) {
        let mut dirty = lock(&self.dirty);
        let before = dirty.len();
        dirty.extend(partitions);
        if dirty.len() != before {
            self.notify.notify_one();
        }
    }

    /// Marks `partition` as being drained, unless it already is.
    pub(crate) fn try_begin(&self, partition: Partition) -> Option<DrainGuard<'_>> {
        let inserted = lock(&self.draining).insert(partition);
        // Not `then_some`: it would build (and drop) a guard even when the partition is
        // already being drained, unmarking someone else's drain.
        if inserted {
            Some(DrainGuard {
                state: self,
                partition,
            })
        } else {
            None
        }
    }

    fn is_draining(&self, partition: Partition) -> bool {
        lock(&self.draining).contains(&partition)
    }
}

/// What one drain of a partition did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DrainReport {
    /// Events retired.
    pub(crate) retired: u64,
    /// Events whose cascade failed or panicked (they stay pending, in backoff).
    pub(crate) failed: u64,
    /// Events left pending that this drain saw but did not retire.
    pub(crate) backlog: u64,
    /// More events may be waiting: drain again soon.
    pub(crate) more: bool,
}

/// The answer of [`drain_partition`].
#[derive(Debug)]
pub(crate) enum Drain {
    /// Someone else is draining the partition right now.
    Busy,
    /// The drain ran.
    Done(DrainReport),
}

/// Drains the pending completions of one partition: up to
/// [`crate::EngineConfig::dispatch_max_batches`] batches, each event until its cascade
/// finished. Stops early on shutdown (after the event in hand) and when the partition is no
/// longer owned. Fails only when listing the partition's completions fails; a failing event
/// is counted and passed over.
pub(crate) async fn drain_partition(
    shared: &Shared,
    partition: Partition,
) -> Result<Drain, CallError> {
    let Some(_guard) = shared.dispatch.try_begin(partition) else {
        return Ok(Drain::Busy);
    };
    let span = tracing::debug_span!("drain_partition", partition = partition.index());
    drain_locked(shared, partition)
        .instrument(span)
        .await
        .map(Drain::Done)
}

async fn drain_locked(shared: &Shared, partition: Partition) -> Result<DrainReport, CallError> {
    let backend = &shared.backend;
    let batch = shared.config.dispatch_batch;
    let mut report = DrainReport::default();
    for _ in 0..shared.config.dispatch_max_batches {
        if shared.shutdown.is_set() || !shared.owns(partition) {
            return Ok(report);
        }
        // Events in backoff stay at the head of the partition's order; ask for that many more
        // so a head of poisoned events never hides the events behind it.
        let in_backoff = lock(&shared.dispatch.events)
            .waiting()
            .filter(|id| id.partition() == partition)
            .count();
        let limit = u32::try_from(in_backoff)
            .unwrap_or(u32::MAX)
            .saturating_add(batch)
            .min(MAX_SCAN_BATCH);
        let events = call(
            "pending_completions",
            backend.pending_completions(partition, limit),
        )
        .await?;
        if events.is_empty() {
            report.backlog = 0;
            return Ok(report);
        }
        let clock = call("now", backend.now())
            .await
            .ok()
            .map(|now| (now, Instant::now()));
        let mut progressed = false;
        let mut left = 0u64;
        for event in &events {
            if shared.shutdown.is_set() {
                report.backlog = left + remaining_after(&events, event);
                return Ok(report);
            }
            if lock(&shared.dispatch.events).is_waiting(&event.execution_id) {
                left += 1;
                continue;
            }
            match cascade_one(shared, event).await {
                Ok(()) => {
                    progressed = true;
                    report.retired += 1;
                    lock(&shared.dispatch.events).succeeded(&event.execution_id);
                    shared
                        .stats
                        .completions_dispatched
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(telemetry::COMPLETIONS_DISPATCHED).increment(1);
                    if let Some((now, read_at)) = clock {
                        record_lag(shared, event.recorded_at, now, read_at);
                    }
                }
                Err(error) => {
                    left += 1;
                    report.failed += 1;
                    shared.stats.dispatch_errors.fetch_add(1, Ordering::Relaxed);
                    let wait = lock(&shared.dispatch.events).failed(event.execution_id);
                    tracing::warn!(
                        execution_id = %event.execution_id,
                        flow_id = %event.flow_id,
                        %error,
                        retry_in = ?wait,
                        "cascade failed; the completion stays pending"
                    );
                }
            }
        }
        report.backlog = left;
        if events.len() < limit as usize {
            return Ok(report);
        }
        if !progressed {
            // A full batch of events in backoff or failing: wait for the sweep or a hint
            // rather than spinning on them.
            return Ok(report);
        }
    }
    report.more = true;
    Ok(report)
}

fn remaining_after(events: &[CompletionEvent], current: &CompletionEvent) -> u64 {
    let index = events
        .iter()
        .position(|e| e == current)
        .unwrap_or(events.len());
    (events.len() - index) as u64
}

fn record_lag(shared: &Shared, recorded_at: Timestamp, now: Timestamp, read_at: Instant) {
    let lag = now
        .saturating_add(read_at.elapsed())
        .duration_since(recorded_at);
    metrics::histogram!(telemetry::CASCADE_LAG).record(lag.as_secs_f64());
    let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
    let stats = &shared.stats;
    stats.lag_count.fetch_add(1, Ordering::Relaxed);
    stats.lag_total_micros.fetch_add(micros, Ordering::Relaxed);
    stats.lag_max_micros.fetch_max(micros, Ordering::Relaxed);
}

/// Calls `cascade_completion` until the event is finished.
async fn cascade_one(shared: &Shared, event: &CompletionEvent) -> Result<(), CallError> {
    let mut stalled = 0u32;
    let mut retries = 0u32;
    loop {
        match call(
            "cascade_completion",
            shared.backend.cascade_completion(event),
        )
        .await
        {
            Ok(progress) => {
                retries = 0;
                if progress.edges_applied > 0 {
                    shared
                        .stats
                        .edges_applied
                        .fetch_add(u64::from(progress.edges_applied), Ordering::Relaxed);
                    metrics::counter!(telemetry::EDGES_APPLIED)
                        .increment(u64::from(progress.edges_applied));
                }
                if progress.finished {
                    return Ok(());
                }
                if progress.edges_applied == 0 {
                    stalled += 1;
                    if stalled >= MAX_STALLED_CALLS {
                        return Err(CallError::Failed(EngineError::Corrupt(format!(
                            "cascade_completion of {} made no progress in {stalled} calls",
                            event.execution_id
                        ))));
                    }
                }
            }
            Err(error) if error.is_retryable() && retries < MAX_RETRIES => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(10 * u64::from(retries))).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The dispatch loop task: drains dirty owned partitions, at most
/// `dispatch_concurrency` at a time, until shutdown; then lets the drains in flight finish
/// their current event (they check the signal between events).
pub(crate) async fn run(shared: Arc<Shared>) -> Result<(), EngineError> {
    let concurrency = shared.config.dispatch_concurrency;
    let mut drains: JoinSet<Result<Drain, CallError>> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, Partition> = HashMap::new();
    let mut backoff: ItemBackoff<Partition> = ItemBackoff::new(shared.config.item_backoff);
    loop {
        if shared.shutdown.is_set() {
            while drains.join_next().await.is_some() {}
            return Ok(());
        }
        // Start drains for dirty partitions, as capacity allows.
        let mut next_retry: Option<Duration> = None;
        if drains.len() < concurrency {
            let owned = shared.owned();
            let mut dirty = lock(&shared.dispatch.dirty);
            dirty.retain(|p| owned.contains(p));
            let mut start = Vec::new();
            for &p in dirty.iter() {
                if drains.len() + start.len() >= concurrency {
                    break;
                }
                if shared.dispatch.is_draining(p) {
                    continue;
                }
                if backoff.is_waiting(&p) {
                    next_retry = backoff.next_retry_in();
                    continue;
                }
                start.push(p);
            }
            for p in &start {
                dirty.remove(p);
            }
            drop(dirty);
            for p in start {
                let task_shared = Arc::clone(&shared);
                let handle = drains.spawn(async move { drain_partition(&task_shared, p).await });
                running.insert(handle.id(), p);
            }
        }
        tokio::select! {
            () = shared.shutdown.wait() => {}
            () = shared.dispatch.notify.notified() => {}
            Some(joined) = drains.join_next_with_id(), if !drains.is_empty() => {
                let (id, outcome) = match joined {
                    Ok((id, result)) => (id, result),
                    Err(join) => {
                        let id = join.id();
                        let message = if join.is_panic() {
                            crate::call::panic_message(join.into_panic().as_ref())
                        } else {
                            "cancelled".to_string()
                        };
                        (id, Err(CallError::Panicked(message)))
                    }
                };
                let partition = running.remove(&id);
                handle_drain(&shared, &mut backoff, partition, outcome);
            }
            () = tokio::time::sleep(next_retry.unwrap_or(Duration::from_secs(3600))), if next_retry.is_some() => {}
        }
        backoff.prune(Duration::from_secs(600));
    }
}

fn handle_drain(
    shared: &Shared,
    backoff: &mut ItemBackoff<Partition>,
    partition: Option<Partition>,
    outcome: Result<Drain, CallError>,
) {
    let Some(partition) = partition else {
        return;
    };
    match outcome {
        Ok(Drain::Done(report)) => {
            backoff.succeeded(&partition);
            if report.more {
                shared.dispatch.wake(partition);
            }
        }
        Ok(Drain::Busy) => shared.dispatch.wake(partition),
        Err(error) => {
            shared.stats.dispatch_errors.fetch_add(1, Ordering::Relaxed);
            let wait = backoff.failed(partition);
            tracing::warn!(
                partition = partition.index(),
                %error,
                retry_in = ?wait,
                "draining a partition failed"
            );
            shared.dispatch.wake(partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;

    #[test]
    fn a_partition_is_drained_by_one_at_a_time() {
        let state = DispatchState::new(ItemBackoff::new(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(10),
        )));
        let first = state.try_begin(Partition(1)).expect("free");
        assert!(state.try_begin(Partition(1)).is_none());
        // The refused attempt must not have unmarked the running drain.
        assert!(state.is_draining(Partition(1)));
        assert!(state.try_begin(Partition(2)).is_some());
        drop(first);
        assert!(!state.is_draining(Partition(1)));
        assert!(state.try_begin(Partition(1)).is_some());
    }
}
