//! Ctrl-C / SIGTERM / SIGHUP handling.
//!
//! The task runner starts servers that must not outlive it. Dying on the first Ctrl-C would
//! leave them running, so the handler only raises a flag; every wait in this crate polls
//! [`check`] and returns an [`Interrupted`] error, and the unwinding drops the service
//! handles, which stop their servers. Servers are spawned in their own process groups, so a
//! Ctrl-C typed in the terminal reaches only the task runner and the cargo/test processes,
//! never the servers themselves.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The error returned by a wait that noticed an interrupt request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted (Ctrl-C or termination signal)")
    }
}

impl std::error::Error for Interrupted {}

/// Installs the process-wide handler for SIGINT, SIGTERM and SIGHUP.
///
/// Must be called at most once per process (the underlying `ctrlc` crate refuses a second
/// handler).
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if !REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("xtask: interrupt received, stopping what was started...");
        }
    })
    .map_err(|err| anyhow::anyhow!("installing the Ctrl-C handler: {err}"))
}

/// Whether an interrupt was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Returns [`Interrupted`] once an interrupt was requested, so loops can `?` it.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Whether `err` (or anything in its chain) is an [`Interrupted`].
pub fn caused(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<Interrupted>())
}
