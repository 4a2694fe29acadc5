//! Mapping database and pool errors to [`EngineError`].
//!
//! - serialization failures (40001), deadlocks (40P01) and lock timeouts (55P03) are
//!   [`EngineError::Contention`]: the transaction was rolled back and may simply be retried;
//!   they are never mistaken for fencing (fencing is decided by the functions' replies);
//! - lost connections, server shutdown (57P01..57P03), connection failures (class 08), too many
//!   connections and pool timeouts are retryable [`EngineError::Transport`];
//! - anything else the server says is a non-retryable `Transport` error naming the SQLSTATE.

use deadpool_postgres::PoolError;
use ff_core::EngineError;
use tokio_postgres::error::SqlState;

/// Maps a driver error.
pub(crate) fn from_pg(err: tokio_postgres::Error) -> EngineError {
    if let Some(code) = err.code() {
        if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            return EngineError::Contention(format!("postgres {}: {err}", code.code()));
        }
        let class = &code.code()[..2];
        let retryable = class == "08"
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::QUERY_CANCELED;
        let message = match err.as_db_error() {
            Some(db) => format!("postgres {}: {}", code.code(), db.message()),
            None => format!("postgres {}: {err}", code.code()),
        };
        return EngineError::transport(message, retryable, err);
    }
    // No SQLSTATE: an I/O error, a closed connection or a protocol error. The server never
    // saw a commit for the statement that failed this way, except when the connection broke
    // after the commit and before its reply, which a caller cannot tell apart: retryable.
    let message = if err.is_closed() {
        "postgres connection closed".to_string()
    } else {
        format!("postgres: {err}")
    };
    EngineError::transport(message, true, err)
}

/// Maps a pool error (no connection could be had).
pub(crate) fn from_pool(err: PoolError) -> EngineError {
    match err {
        PoolError::Backend(e) => from_pg(e),
        PoolError::Timeout(kind) => EngineError::Transport {
            message: format!("postgres pool timed out ({kind:?})"),
            retryable: true,
            source: None,
        },
        other => EngineError::Transport {
            message: format!("postgres pool: {other}"),
            retryable: false,
            source: None,
        },
    }
}
