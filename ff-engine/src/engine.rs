//! The engine: one instance of the background machinery over a backend (DESIGN §6).
//!
//! [`Engine::builder`] → [`EngineBuilder::start`] registers the instance, takes its share of
//! the partitions and starts, each under the [supervisor](crate::supervisor):
//!
//! - `ownership`: membership heartbeat and partition ownership ([`crate::ownership`]);
//! - `dispatch`: the completion dispatch loop ([`crate::dispatch`]);
//! - `hints`: turns backend hints into dispatch wake-ups (when the backend has hints);
//! - `scanner:<name>`: one task per scanner ([`crate::scanner`]).
//!
//! [`EngineHandle::shutdown`] stops gracefully: the tasks stop taking new work, finish the
//! item in hand (bounded by [`EngineConfig::shutdown_timeout`]), and the instance deregisters,
//! releasing its partitions so other instances take them at once. Dropping the handle (or
//! [`EngineHandle::abort`]) stops the tasks at once without deregistering — to the other
//! instances that looks like a crash, and they take over once the leases lapse.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ff_core::{Capabilities, EngineBackend, EngineError, Hint, InstanceId, Partition};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::ItemBackoff;
use crate::call::call;
use crate::config::EngineConfig;
use crate::dispatch::{self, DispatchState};
use crate::due::DueCache;
use crate::ownership;
use crate::router::PartitionRouter;
use crate::scanner::{self, ScannerStats};
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::supervisor::{self, Supervisor, TaskStatus, TaskStatuses};

/// Entry point: `Engine::builder(backend)`.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// A builder for an engine instance over `backend`.
    pub fn builder(backend: Arc<dyn EngineBackend>) -> EngineBuilder {
        EngineBuilder {
            backend,
            config: EngineConfig::default(),
            instance: None,
        }
    }
}

/// Configures and starts an engine instance.
#[derive(Debug)]
#[must_use = "an engine does nothing until `start` is called"]
pub struct EngineBuilder {
    backend: Arc<dyn EngineBackend>,
    config: EngineConfig,
    instance: Option<InstanceId>,
}

impl EngineBuilder {
    /// Replaces the configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the instance id (default: a fresh `engine-<uuid>`). Two live instances must never
    /// share an id: they would share ownership.
    pub fn instance_id(mut self, id: InstanceId) -> Self {
        self.instance = Some(id);
        self
    }

    /// Validates the config, registers the instance, acquires its first partitions and
    /// starts every task. Returns once the instance owns its initial share.
    ///
    /// Errors: `Validation` for a bad config; whatever the backend answers to the first
    /// heartbeat and acquisition (e.g. `Transport` when it cannot be reached).
    pub async fn start(self) -> Result<EngineHandle, EngineError> {
        self.config.validate()?;
        let backend = self.backend;
        let capabilities = backend.capabilities();
        let router = PartitionRouter::new(backend.partition_config());
        let instance = self.instance.unwrap_or_else(InstanceId::random);
        let (trigger, signal) = shutdown::channel();
        let (owned, _) = watch::channel(Arc::new(BTreeSet::new()));
        let shared = Arc::new(Shared {
            dispatch: DispatchState::new(ItemBackoff::new(self.config.item_backoff)),
            due: DueCache::default(),
            backend,
            capabilities,
            router,
            instance,
            owned,
            stats: Counters::default(),
            shutdown: signal.clone(),
            config: self.config,
        });

        let mut valid_until = Instant::now();
        ownership::round(&shared, &mut valid_until).await?;
        tracing::info!(
            instance = %shared.instance,
            backend = shared.backend.name(),
            owned = shared.owned().len(),
            partitions = shared.router.config().partitions,
            "engine started"
        );

        let mut supervisor = Supervisor::new(signal, shared.config.restart_backoff);
        let s = Arc::clone(&shared);
        supervisor.spawn("ownership", move || ownership::run(Arc::clone(&s)));
        let s = Arc::clone(&shared);
        supervisor.spawn("dispatch", move || dispatch::run(Arc::clone(&s)));
        if shared.capabilities.hints {
            let s = Arc::clone(&shared);
            supervisor.spawn("hints", move || listen_hints(Arc::clone(&s)));
        }
        for scanner in scanner::scanners(&shared) {
            let s = Arc::clone(&shared);
            supervisor.spawn(format!("scanner:{}", scanner.name), move || {
                scanner::run(Arc::clone(&s), scanner.clone())
            });
        }
        // Whatever the previous owners left pending.
        shared.dispatch.wake_all(shared.owned().iter().copied());

        Ok(EngineHandle {
            statuses: supervisor.statuses(),
            shared,
            supervisor: Some(supervisor),
            trigger,
        })
    }
}

/// Counters behind [`EngineStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) completions_dispatched: AtomicU64,
    pub(crate) edges_applied: AtomicU64,
    pub(crate) dispatch_errors: AtomicU64,
    pub(crate) lag_count: AtomicU64,
    pub(crate) lag_total_micros: AtomicU64,
    pub(crate) lag_max_micros: AtomicU64,
    pub(crate) scanners: Mutex<BTreeMap<&'static str, ScannerStats>>,
}

/// Locks engine-internal bookkeeping. Each critical section is a plain read or update that a
/// panic cannot leave half done, so a poisoned lock is used as is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every task of one engine instance shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn EngineBackend>,
    pub(crate) capabilities: Capabilities,
    pub(crate) config: EngineConfig,
    pub(crate) router: PartitionRouter,
    pub(crate) instance: InstanceId,
    owned: watch::Sender<Arc<BTreeSet<Partition>>>,
    pub(crate) dispatch: DispatchState,
    pub(crate) due: DueCache,
    pub(crate) stats: Counters,
    pub(crate) shutdown: Shutdown,
}

impl Shared {
    /// The partitions this instance owns now.
    pub(crate) fn owned(&self) -> Arc<BTreeSet<Partition>> {
        Arc::clone(&self.owned.borrow())
    }

    /// Whether this instance owns `partition` now.
    pub(crate) fn owns(&self, partition: Partition) -> bool {
        self.owned.borrow().contains(&partition)
    }

    /// Replaces the owned set.
    pub(crate) fn publish_owned(&self, owned: BTreeSet<Partition>) {
        self.owned.send_replace(Arc::new(owned));
    }
}

/// The hints task: wakes the dispatch loop for partitions with new completions.
async fn listen_hints(shared: Arc<Shared>) -> Result<(), EngineError> {
    let mut hints = call("subscribe_hints", shared.backend.subscribe_hints())
        .await
        .map_err(|e| e.into_engine_error("subscribe_hints"))?;
    // Anything may have happened before this subscription.
    shared.dispatch.wake_all(shared.owned().iter().copied());
    loop {
        let hint = tokio::select! {
            () = shared.shutdown.wait() => return Ok(()),
            hint = hints.recv() => hint,
        };
        match hint {
            Some(Hint::CompletionPending { partition }) => {
                if shared.owns(partition) {
                    shared.dispatch.wake(partition);
                }
            }
            Some(Hint::Lagged) => shared.dispatch.wake_all(shared.owned().iter().copied()),
            Some(_) => {}
            None => {
                return Err(EngineError::Transport {
                    message: "the backend closed its hint stream".into(),
                    retryable: true,
                    source: None,
                });
            }
        }
    }
}

/// A running engine instance. Call [`EngineHandle::shutdown`] to stop it gracefully; dropping
/// it stops every task at once (as a crash would).
#[derive(Debug)]
pub struct EngineHandle {
    shared: Arc<Shared>,
    supervisor: Option<Supervisor>,
    statuses: TaskStatuses,
    trigger: ShutdownTrigger,
}

/// How a graceful shutdown went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every task finished its work in hand within the shutdown timeout (otherwise the rest
    /// was aborted; nothing is lost, since every step is atomic and idempotent).
    pub clean: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

/// What an engine instance has done so far.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// This instance.
    pub instance: InstanceId,
    /// The partitions it owns now.
    pub owned_partitions: Vec<Partition>,
    /// Completion events it retired.
    pub completions_dispatched: u64,
    /// Edges its `cascade_completion` calls applied.
    pub edges_applied: u64,
    /// Failed or panicked dispatch calls (events and partition listings).
    pub dispatch_errors: u64,
    /// Completions retired with a known lag.
    pub cascade_lag_count: u64,
    /// Mean cascade lag (recorded → retired, backend clock) of those.
    pub cascade_lag_mean: Duration,
    /// Largest cascade lag seen.
    pub cascade_lag_max: Duration,
    /// Every scanner's numbers.
    pub scanners: Vec<ScannerStats>,
    /// Every supervised task's restarts.
    pub tasks: Vec<TaskStatus>,
}

impl EngineStats {
    /// Restarts over every task.
    pub fn task_restarts(&self) -> u64 {
        self.tasks.iter().map(|t| t.restarts).sum()
    }

    /// The numbers of scanner `name`.
    pub fn scanner(&self, name: &str) -> Option<&ScannerStats> {
        self.scanners.iter().find(|s| s.name == name)
    }
}

impl EngineHandle {
    /// This instance's id.
    pub fn instance_id(&self) -> &InstanceId {
        &self.shared.instance
    }

    /// The partition router of the backend's deployment.
    pub fn router(&self) -> &PartitionRouter {
        &self.shared.router
    }

    /// The partitions this instance owns now.
    pub fn owned_partitions(&self) -> Vec<Partition> {
        self.shared.owned().iter().copied().collect()
    }

    /// Asks the dispatch loop to drain `partition` now (if this instance owns it). Useful to
    /// a caller that knows it just recorded completions and has no hints.
    pub fn wake(&self, partition: Partition) {
        self.shared.dispatch.wake(partition);
    }

    /// What the instance has done so far.
    pub fn stats(&self) -> EngineStats {
        let counters = &self.shared.stats;
        let lag_count = counters.lag_count.load(Ordering::Relaxed);
        let lag_total = counters.lag_total_micros.load(Ordering::Relaxed);
        EngineStats {
            instance: self.shared.instance.clone(),
            owned_partitions: self.owned_partitions(),
            completions_dispatched: counters.completions_dispatched.load(Ordering::Relaxed),
            edges_applied: counters.edges_applied.load(Ordering::Relaxed),
            dispatch_errors: counters.dispatch_errors.load(Ordering::Relaxed),
            cascade_lag_count: lag_count,
            cascade_lag_mean: Duration::from_micros(lag_total.checked_div(lag_count).unwrap_or(0)),
            cascade_lag_max: Duration::from_micros(counters.lag_max_micros.load(Ordering::Relaxed)),
            scanners: scanner::snapshot(&lock(&counters.scanners)),
            tasks: supervisor::lock(&self.statuses).values().cloned().collect(),
        }
    }

    /// Stops gracefully: no new scanner or dispatch work is taken, work in hand finishes
    /// (bounded by [`EngineConfig::shutdown_timeout`], then aborted), and the instance
    /// deregisters, releasing its partitions to the other instances.
    ///
    /// Errors: whatever the backend answers to `remove_instance` (the registration and the
    /// ownership leases then lapse on their own within one TTL).
    pub async fn shutdown(mut self) -> Result<ShutdownReport, EngineError> {
        let started = Instant::now();
        self.trigger.trigger();
        let clean = match self.supervisor.as_mut() {
            Some(supervisor) => supervisor.join(self.shared.config.shutdown_timeout).await,
            None => true,
        };
        self.supervisor = None;
        self.shared.publish_owned(BTreeSet::new());
        call(
            "remove_instance",
            self.shared.backend.remove_instance(&self.shared.instance),
        )
        .await
        .map_err(|e| e.into_engine_error("remove_instance"))?;
        let report = ShutdownReport {
            clean,
            elapsed: started.elapsed(),
        };
        tracing::info!(instance = %self.shared.instance, ?report, "engine stopped");
        Ok(report)
    }

    /// Stops every task at once, without finishing work in hand or deregistering: what a
    /// crash looks like to the backend and to the other instances (which take the partitions
    /// over once the leases lapse). Nothing is lost; for failover tests and emergencies.
    pub fn abort(mut self) {
        self.abort_tasks();
    }

    fn abort_tasks(&mut self) {
        if let Some(mut supervisor) = self.supervisor.take() {
            self.trigger.trigger();
            supervisor.abort();
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.abort_tasks();
    }
}
