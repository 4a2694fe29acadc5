//! The scanner framework and the engine's scanners (DESIGN §6).
//!
//! A scanner is a name, a job and an interval. One supervised task per scanner runs *cycles*:
//! sleep the interval (jittered), then visit every partition this instance owns that has
//! something due for it, as the shared `due_summary` says (see [`crate::due`]). A cycle never
//! overlaps the previous one (one task, one cycle at a time), stops taking new partitions on
//! shutdown, and reports per cycle: items processed, errors, backlog left, duration.
//!
//! On each partition a backend scanner ([`ScanKind`]) calls `scan` up to
//! [`crate::EngineConfig::scan_max_batches`] times, following the partition's cursor
//! (`ScanReport::next` → `ScanRequest::after`) and wrapping to the start when the backend
//! says it reached the end. An item the backend reports as failed is put in backoff and
//! passed in `ScanRequest::skip` until the backoff ends, so a poisoned item is neither retried
//! hot nor able to block the items behind it. A call that fails or panics for a whole
//! partition puts the partition in backoff; the cycle goes on with the other partitions.
//!
//! The pending-completion sweep uses the same framework with the dispatch loop's drain as its
//! per-partition step (see [`crate::dispatch`]).
//!
//! Cursors and backoffs live outside the task, so a task restarted by the supervisor picks up
//! where the failed one stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ff_core::{EngineError, Partition, ScanCursor, ScanKind, ScanRequest};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use crate::backoff::{ItemBackoff, jittered};
use crate::call::call;
use crate::dispatch::{Drain, drain_partition};
use crate::engine::Shared;
use crate::telemetry;

/// Backoff entries untouched this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What a scanner does on each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanJob {
    /// A backend `scan` of this kind.
    Backend(ScanKind),
    /// Drain pending completions (the dispatch loop's safety net and, without hints, its
    /// only wake-up).
    CompletionSweep,
}

/// Per-cycle numbers of one scanner, as [`crate::EngineStats`] shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScannerStats {
    /// The scanner's name (`lease_expiry`, ..., `completion_sweep`).
    pub name: String,
    /// Cycles completed.
    pub cycles: u64,
    /// Items processed, over every cycle.
    pub processed: u64,
    /// Items and partitions failed on, over every cycle.
    pub errors: u64,
    /// Due items left after the last cycle (summed over its partitions; may be an estimate).
    pub backlog: u64,
    /// Duration of the last cycle.
    pub last_cycle: Duration,
}

/// Cursors and backoffs of one scanner, kept across task restarts.
#[derive(Debug)]
pub(crate) struct ScannerState {
    cursors: HashMap<Partition, ScanCursor>,
    items: HashMap<Partition, ItemBackoff<String>>,
    partitions: ItemBackoff<Partition>,
}

/// One scanner: what it does, how often, and its persistent state.
#[derive(Clone, Debug)]
pub(crate) struct Scanner {
    pub(crate) name: &'static str,
    job: ScanJob,
    interval: Duration,
    state: Arc<Mutex<ScannerState>>,
}

impl Scanner {
    pub(crate) fn new(
        name: &'static str,
        job: ScanJob,
        interval: Duration,
        shared: &Shared,
    ) -> Self {
        Scanner {
            name,
            job,
            interval,
            state: Arc::new(Mutex::new(ScannerState {
                cursors: HashMap::new(),
                items: HashMap::new(),
                partitions: ItemBackoff::new(shared.config.item_backoff),
            })),
        }
    }
}

/// The scanners an engine with `shared`'s config runs, by name.
pub(crate) fn scanners(shared: &Shared) -> Vec<Scanner> {
    let schedule = &shared.config.scanners;
    let sweep = if shared.capabilities.hints {
        schedule.completion_sweep
    } else {
        schedule.completion_poll
    };
    let mut list = vec![
        (
            ScanJob::Backend(ScanKind::LeaseExpiry),
            schedule.lease_expiry,
        ),
        (
            ScanJob::Backend(ScanKind::DelayedPromotion),
            schedule.delayed_promotion,
        ),
        (
            ScanJob::Backend(ScanKind::AttemptTimeout),
            schedule.attempt_timeout,
        ),
        (
            ScanJob::Backend(ScanKind::ExecutionDeadline),
            schedule.execution_deadline,
        ),
        (
            ScanJob::Backend(ScanKind::CancelBacklog),
            schedule.cancel_backlog,
        ),
        (ScanJob::CompletionSweep, sweep),
    ];
    if let Some(older_than) = shared.config.retention {
        list.push((
            ScanJob::Backend(ScanKind::Retention { older_than }),
            schedule.retention,
        ));
    }
    list.into_iter()
        .filter(|(_, config)| config.enabled)
        .map(|(job, config)| {
            let name = match job {
                ScanJob::Backend(kind) => kind.name(),
                ScanJob::CompletionSweep => "completion_sweep",
            };
            Scanner::new(name, job, config.interval, shared)
        })
        .collect()
}

/// The scanner task: a cycle every interval until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, scanner: Scanner) -> Result<(), EngineError> {
    loop {
        tokio::select! {
            () = shared.shutdown.wait() => return Ok(()),
            () = tokio::time::sleep(jittered(scanner.interval, shared.config.jitter)) => {}
        }
        let span = tracing::debug_span!("scanner_cycle", scanner = scanner.name);
        cycle(&shared, &scanner).instrument(span).await;
    }
}

#[derive(Default)]
struct CycleTotals {
    processed: u64,
    errors: u64,
    backlog: u64,
}

/// One cycle over every owned partition.
pub(crate) async fn cycle(shared: &Shared, scanner: &Scanner) {
    let started = Instant::now();
    let mut state = scanner.state.lock().await;
    let mut totals = CycleTotals::default();
    let owned = shared.owned();
    let due = shared.due.view(shared).await;
    for &partition in owned.iter() {
        if shared.shutdown.is_set() {
            break;
        }
        if state.partitions.is_waiting(&partition) {
            continue;
        }
        if due
            .as_ref()
            .is_some_and(|view| !view.is_due(partition, scanner.job))
        {
            continue;
        }
        match scanner.job {
            ScanJob::Backend(kind) => {
                scan_partition(
                    shared,
                    scanner.name,
                    kind,
                    partition,
                    &mut state,
                    &mut totals,
                )
                .await;
            }
            ScanJob::CompletionSweep => match drain_partition(shared, partition).await {
                Ok(Drain::Done(report)) => {
                    state.partitions.succeeded(&partition);
                    totals.processed += report.retired;
                    totals.errors += report.failed;
                    totals.backlog += report.backlog;
                    if report.more {
                        shared.dispatch.wake(partition);
                    }
                }
                // The dispatch loop is on it.
                Ok(Drain::Busy) => {}
                Err(error) => {
                    totals.errors += 1;
                    let wait = state.partitions.failed(partition);
                    tracing::warn!(
                        scanner = scanner.name,
                        partition = partition.index(),
                        %error,
                        retry_in = ?wait,
                        "draining a partition failed"
                    );
                }
            },
        }
    }
    state.partitions.prune(FORGET_AFTER);
    for backoff in state.items.values_mut() {
        backoff.prune(FORGET_AFTER);
    }
    state.items.retain(|_, b| !b.is_empty());
    drop(state);

    let elapsed = started.elapsed();
    let name = scanner.name;
    metrics::counter!(telemetry::SCANNER_PROCESSED, "scanner" => name).increment(totals.processed);
    metrics::counter!(telemetry::SCANNER_ERRORS, "scanner" => name).increment(totals.errors);
    metrics::gauge!(telemetry::SCANNER_BACKLOG, "scanner" => name).set(totals.backlog as f64);
    metrics::histogram!(telemetry::SCANNER_CYCLE, "scanner" => name).record(elapsed.as_secs_f64());
    if totals.processed > 0 || totals.errors > 0 {
        tracing::debug!(
            scanner = name,
            processed = totals.processed,
            errors = totals.errors,
            backlog = totals.backlog,
            ?elapsed,
            "scanner cycle"
        );
    }
    let mut all = crate::engine::lock(&shared.stats.scanners);
    let stats = all.entry(name).or_insert_with(|| ScannerStats {
        name: name.to_string(),
        ..ScannerStats::default()
    });
    stats.cycles += 1;
    stats.processed += totals.processed;
    stats.errors += totals.errors;
    stats.backlog = totals.backlog;
    stats.last_cycle = elapsed;
}

async fn scan_partition(
    shared: &Shared,
    name: &'static str,
    kind: ScanKind,
    partition: Partition,
    state: &mut ScannerState,
    totals: &mut CycleTotals,
) {
    let mut backlog = 0;
    for _ in 0..shared.config.scan_max_batches {
        if shared.shutdown.is_set() {
            break;
        }
        let skip: Vec<String> = state
            .items
            .get(&partition)
            .map(|b| b.waiting().cloned().collect())
            .unwrap_or_default();
        let request = ScanRequest::new(partition, kind, shared.config.scan_batch)
            .after(state.cursors.remove(&partition))
            .skipping(skip);
        match call(kind.name(), shared.backend.scan(&request)).await {
            Ok(report) => {
                state.partitions.succeeded(&partition);
                totals.processed += u64::from(report.processed);
                backlog = report.backlog;
                if !report.failures.is_empty() {
                    let items = state
                        .items
                        .entry(partition)
                        .or_insert_with(|| ItemBackoff::new(shared.config.item_backoff));
                    for failure in report.failures {
                        totals.errors += 1;
                        let wait = items.failed(failure.item.clone());
                        tracing::warn!(
                            scanner = name,
                            partition = partition.index(),
                            item = %failure.item,
                            error = %failure.error,
                            retry_in = ?wait,
                            "scanner item failed; passing over it"
                        );
                    }
                }
                match report.next {
                    Some(cursor) => {
                        state.cursors.insert(partition, cursor);
                    }
                    // Reached the end of the due items: the next call starts over.
                    None => break,
                }
            }
            Err(error) => {
                // Start over next time: the cursor may be what the backend chokes on.
                totals.errors += 1;
                let wait = state.partitions.failed(partition);
                tracing::warn!(
                    scanner = name,
                    partition = partition.index(),
                    %error,
                    retry_in = ?wait,
                    "scanner call failed; passing over the partition"
                );
                break;
            }
        }
    }
    totals.backlog += backlog;
}

/// The per-scanner statistics, sorted by name.
pub(crate) fn snapshot(stats: &BTreeMap<&'static str, ScannerStats>) -> Vec<ScannerStats> {
    stats.values().cloned().collect()
}
