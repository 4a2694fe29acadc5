//! What a worker runs: the [`Handler`], the [`Job`] it gets and the [`HandlerError`] it may
//! return.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ff_core::{
    ClaimedExecution, EngineBackend, EngineError, ExecutionId, FlowId, NodeKey, UpstreamInput,
};

use crate::call::call;

/// What a handler returns: the execution's result (at most
/// [`ff_core::limits::MAX_RESULT_BYTES`], `None` for no result) or why the attempt failed.
pub type HandlerResult = Result<Option<Vec<u8>>, HandlerError>;

/// Why a handler's attempt failed, and whether another attempt may succeed.
///
/// `?` on any error type converts it into a *retryable* failure carrying its message (and its
/// sources'): most errors (timeouts, unavailable services) are worth retrying, and the
/// execution's retry policy bounds how often. Use [`HandlerError::permanent`] for an error
/// that will not go away (bad input): the execution fails at once, whatever attempts are left.
pub struct HandlerError {
    message: String,
    retryable: bool,
}

impl HandlerError {
    /// A failure another attempt may get past.
    pub fn retryable(message: impl fmt::Display) -> Self {
        HandlerError {
            message: message.to_string(),
            retryable: true,
        }
    }

    /// A failure no attempt will get past: the execution fails now.
    pub fn permanent(message: impl fmt::Display) -> Self {
        HandlerError {
            message: message.to_string(),
            retryable: false,
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message recorded on the attempt.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.retryable {
            "retryable"
        } else {
            "permanent"
        };
        write!(f, "{kind} failure: {}", self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message)
            .field("retryable", &self.retryable)
            .finish()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        HandlerError {
            message,
            retryable: true,
        }
    }
}

/// One claimed execution, as a handler sees it.
#[derive(Debug)]
pub struct Job {
    execution: ClaimedExecution,
    backend: Arc<dyn EngineBackend>,
}

impl Job {
    pub(crate) fn new(execution: ClaimedExecution, backend: Arc<dyn EngineBackend>) -> Self {
        Job { execution, backend }
    }

    /// Everything the claim returned (fence, lane, deadlines, ...).
    pub fn execution(&self) -> &ClaimedExecution {
        &self.execution
    }

    /// The execution's id.
    pub fn id(&self) -> ExecutionId {
        self.execution.id()
    }

    /// The submitted payload.
    pub fn payload(&self) -> &[u8] {
        &self.execution.payload
    }

    /// Results of upstream nodes passed along edges with `pass_result`, in edge order.
    pub fn inputs(&self) -> &[UpstreamInput] {
        &self.execution.inputs
    }

    /// Which attempt this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.execution.attempt
    }

    /// The flow and node key, for flow members.
    pub fn flow(&self) -> Option<(FlowId, &NodeKey)> {
        self.execution.flow_id.zip(self.execution.node_key.as_ref())
    }

    /// Records progress (at most [`ff_core::limits::MAX_PROGRESS_BYTES`]), visible in
    /// `describe_execution`. Does not extend the lease (the worker renews it).
    ///
    /// Errors: `Fenced` or `NotActive` once the lease is lost — the handler should stop, its
    /// result can no longer be recorded.
    pub async fn progress(&self, progress: &[u8]) -> Result<(), EngineError> {
        call(
            "progress",
            self.backend.progress(&self.execution.fence, progress),
        )
        .await
        .map_err(|e| e.into_engine_error("progress"))
    }

    /// The claimed execution, by value.
    pub fn into_execution(self) -> ClaimedExecution {
        self.execution
    }
}

/// The code a worker runs for each claimed execution.
///
/// Implemented for every `Fn(Job) -> impl Future<Output = HandlerResult>`, so an async
/// function or an async closure is a handler:
///
/// ```
/// use ff_engine::{HandlerError, HandlerResult, Job};
///
/// async fn shout(job: Job) -> HandlerResult {
///     let text = std::str::from_utf8(job.payload()).map_err(HandlerError::permanent)?;
///     Ok(Some(text.to_uppercase().into_bytes()))
/// }
/// # fn assert_handler(_: impl ff_engine::Handler) {}
/// # assert_handler(shout);
/// ```
///
/// A handler that panics fails its attempt (retryable). When the lease is lost (cancelled,
/// expired, timed out) the handler's future is dropped: its result could no longer be
/// recorded, and another worker may already be running the execution.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt.
    fn handle(&self, job: Job) -> impl Future<Output = HandlerResult> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn handle(&self, job: Job) -> impl Future<Output = HandlerResult> + Send {
        self(job)
    }
}

/// A boxed handler future.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A type-erased handler, so that `Worker` is not generic.
pub(crate) trait ErasedHandler: Send + Sync {
    fn start(self: Arc<Self>, job: Job) -> HandlerFuture;
}

impl<H: Handler> ErasedHandler for H {
    fn start(self: Arc<Self>, job: Job) -> HandlerFuture {
        Box::pin(async move { self.handle(job).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_convert_as_retryable_with_their_sources() {
        fn parse(text: &str) -> Result<u32, HandlerError> {
            Ok(text.parse::<u32>()?)
        }
        let err = parse("x").expect_err("not a number");
        assert!(err.is_retryable());
        assert!(err.message().contains("invalid digit"));
        let permanent = HandlerError::permanent("bad input");
        assert!(!permanent.is_retryable());
        assert_eq!(permanent.to_string(), "permanent failure: bad input");
    }
}
