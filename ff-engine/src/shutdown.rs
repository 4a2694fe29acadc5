//! The shutdown signal shared by an engine's tasks.
//!
//! Set once; every task checks it between items (to stop taking new work) and waits on it
//! while idle (to stop at once instead of finishing a sleep).

use tokio::sync::watch;

/// The sending side, held by the engine handle.
#[derive(Debug)]
pub(crate) struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// The receiving side, cloned into every task.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new, unset signal.
pub(crate) fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Sets the signal (idempotent).
    pub(crate) fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// Whether shutdown was requested.
    pub(crate) fn is_set(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is requested (at once if it already was, or if the trigger is
    /// gone, which means the engine is gone).
    pub(crate) async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|set| *set).await;
    }
}
