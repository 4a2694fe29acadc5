//! The supervisor: keeps the engine's long-running tasks alive.
//!
//! Each task (dispatch loop, hint listener, each scanner, the ownership loop) runs inside its
//! own tokio task. A task that panics or returns an error is logged, counted, and started
//! again after an exponential backoff; the other tasks keep running and the engine never goes
//! down because one of them failed. A task that returns `Ok(())` is done (it only does so on
//! shutdown). A task that keeps state worth keeping across restarts (a scanner's cursors and
//! backoffs) holds it outside the task, in state its factory clones in.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ff_core::EngineError;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::call::panic_message;
use crate::shutdown::Shutdown;
use crate::telemetry;

/// A task that ran this long without failing starts its backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// How one supervised task has fared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskStatus {
    /// The task's name (`dispatch`, `hints`, `ownership`, `scanner:<name>`).
    pub name: String,
    /// How often it was restarted after a panic or an error.
    pub restarts: u64,
    /// The last panic or error, if any.
    pub last_failure: Option<String>,
}

/// Statuses of every task, shared with the engine handle.
pub(crate) type TaskStatuses = Arc<Mutex<BTreeMap<String, TaskStatus>>>;

/// Starts tasks and restarts them when they fail.
#[derive(Debug)]
pub(crate) struct Supervisor {
    tasks: JoinSet<()>,
    statuses: TaskStatuses,
    shutdown: Shutdown,
    backoff: Backoff,
}

/// Aborts the running incarnation of a task when the supervising loop itself is dropped or
/// aborted, so no incarnation outlives its supervisor.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Supervisor {
    /// A supervisor whose tasks stop on `shutdown` and restart after `backoff`.
    pub(crate) fn new(shutdown: Shutdown, backoff: Backoff) -> Self {
        Supervisor {
            tasks: JoinSet::new(),
            statuses: Arc::default(),
            shutdown,
            backoff,
        }
    }

    /// The statuses of every task started so far.
    pub(crate) fn statuses(&self) -> TaskStatuses {
        Arc::clone(&self.statuses)
    }

    /// Starts `factory()` as task `name`, and starts it again whenever it panics or returns an
    /// error, until shutdown.
    pub(crate) fn spawn<F, Fut>(&mut self, name: impl Into<String>, factory: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), EngineError>> + Send + 'static,
    {
        let name = name.into();
        let statuses = Arc::clone(&self.statuses);
        let shutdown = self.shutdown.clone();
        let backoff = self.backoff;
        lock(&statuses).insert(
            name.clone(),
            TaskStatus {
                name: name.clone(),
                ..TaskStatus::default()
            },
        );
        self.tasks.spawn(async move {
            let mut failures = 0u32;
            loop {
                let started = Instant::now();
                let incarnation = tokio::spawn(factory());
                let _guard = AbortOnDrop(incarnation.abort_handle());
                let failure = match incarnation.await {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) => format!("error: {error}"),
                    Err(join) if join.is_panic() => {
                        format!("panic: {}", panic_message(join.into_panic().as_ref()))
                    }
                    // Aborted from outside: the engine is stopping.
                    Err(_) => return,
                };
                if shutdown.is_set() {
                    tracing::warn!(task = %name, %failure, "task failed during shutdown");
                    return;
                }
                if started.elapsed() >= STABLE_AFTER {
                    failures = 0;
                }
                failures = failures.saturating_add(1);
                let wait = backoff.delay(failures);
                tracing::error!(task = %name, %failure, restart_in = ?wait, "task failed; restarting");
                metrics::counter!(telemetry::TASK_RESTARTS, "task" => name.clone()).increment(1);
                if let Some(status) = lock(&statuses).get_mut(&name) {
                    status.restarts += 1;
                    status.last_failure = Some(failure);
                }
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// Waits until every task has returned (after shutdown was signalled), at most `timeout`.
    /// Returns whether they all did; the ones still running are aborted.
    pub(crate) async fn join(&mut self, timeout: Duration) -> bool {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        let finished = tokio::time::timeout(timeout, all).await.is_ok();
        if !finished {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        finished
    }

    /// Aborts every task at once (a crash, as far as the backend can tell).
    pub(crate) fn abort(&mut self) {
        self.tasks.abort_all();
    }
}

/// Locks the statuses; a panic while holding this lock cannot leave them inconsistent (each
/// update is one field), so a poisoned lock is used as is.
pub(crate) fn lock(
    statuses: &TaskStatuses,
) -> std::sync::MutexGuard<'_, BTreeMap<String, TaskStatus>> {
    statuses.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::shutdown;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn failing_tasks_restart_until_they_settle() {
        let (trigger, signal) = shutdown::channel();
        let mut supervisor = Supervisor::new(
            signal.clone(),
            Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
        );
        let runs = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&runs);
        supervisor.spawn("flaky", move || {
            let counter = Arc::clone(&counter);
            let signal = signal.clone();
            async move {
                match counter.fetch_add(1, Ordering::SeqCst) {
                    0 => panic!("first run panics"),
                    1 => Err(EngineError::Contention("second run fails".into())),
                    _ => {
                        signal.wait().await;
                        Ok(())
                    }
                }
            }
        });
        let statuses = supervisor.statuses();
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "task was not restarted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = lock(&statuses).get("flaky").cloned().expect("registered");
        assert_eq!(status.restarts, 2);
        assert!(
            status
                .last_failure
                .as_deref()
                .is_some_and(|f| f.contains("second run fails")),
            "{status:?}"
        );
        trigger.trigger();
        assert!(supervisor.join(Duration::from_secs(1)).await);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn join_aborts_tasks_that_do_not_stop() {
        let (trigger, signal) = shutdown::channel();
        let mut supervisor = Supervisor::new(
            signal,
            Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
        );
        supervisor.spawn("stubborn", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        trigger.trigger();
        assert!(!supervisor.join(Duration::from_millis(50)).await);
    }
}
