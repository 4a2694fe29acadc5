//! Backend calls as the engine makes them: traced, counted, and with panics contained.
//!
//! A backend is code the engine does not control. A call that panics for one item (a bug in a
//! backend, a corrupt record it cannot decode) must cost that item, not the scanner's progress
//! on every other item, nor the engine. [`call`] runs the call's future under
//! `catch_unwind`, so a panic becomes a [`CallError::Panicked`] the caller treats like any
//! other failure of that item.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use ff_core::EngineError;
use futures_util::FutureExt;
use tracing::Instrument;

use crate::telemetry;

/// Why a backend call did not succeed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The backend answered with an error.
    Failed(EngineError),
    /// The call panicked; the payload's message.
    Panicked(String),
}

impl CallError {
    /// Whether the same call may succeed if repeated at once.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            CallError::Failed(e) => e.is_retryable(),
            CallError::Panicked(_) => false,
        }
    }

    /// As an [`EngineError`], for callers that must return one: a panic becomes a
    /// non-retryable `Transport` error naming the operation.
    pub(crate) fn into_engine_error(self, op: &'static str) -> EngineError {
        match self {
            CallError::Failed(e) => e,
            CallError::Panicked(message) => EngineError::Transport {
                message: format!("backend call {op} panicked: {message}"),
                retryable: false,
                source: None,
            },
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Failed(e) => write!(f, "{e}"),
            CallError::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// Runs one backend call inside a `backend_call` span (field `op`), counts its errors and
/// panics, and turns a panic into [`CallError::Panicked`].
pub(crate) async fn call<T, F>(op: &'static str, fut: F) -> Result<T, CallError>
where
    F: Future<Output = Result<T, EngineError>>,
{
    let span = tracing::debug_span!("backend_call", op);
    match AssertUnwindSafe(fut).catch_unwind().instrument(span).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            metrics::counter!(telemetry::BACKEND_ERRORS, "op" => op).increment(1);
            Err(CallError::Failed(error))
        }
        Err(payload) => {
            metrics::counter!(telemetry::BACKEND_PANICS, "op" => op).increment(1);
            let message = panic_message(payload.as_ref());
            tracing::error!(op, panic = %message, "backend call panicked");
            Err(CallError::Panicked(message))
        }
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn panics_become_errors() {
        let ok: Result<u32, CallError> = call("ok", async { Ok(7) }).await;
        assert_eq!(ok.expect("no panic"), 7);
        let failed: Result<u32, CallError> = call("failed", async {
            Err(EngineError::Contention("busy".into()))
        })
        .await;
        assert!(matches!(failed, Err(CallError::Failed(_))));
        assert!(failed.expect_err("failed").is_retryable());
        let panicked: Result<u32, CallError> = call("panics", async {
            if true {
                panic!("boom for item 3");
            }
            Ok(1)
        })
        .await;
        match panicked {
            Err(CallError::Panicked(message)) => assert_eq!(message, "boom for item 3"),
            other => panic!("expected a contained panic, got {other:?}"),
        }
    }
}
