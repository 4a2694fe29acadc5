//! Picking a backend by URL.
//!
//! | scheme | backend | feature |
//! |---|---|---|
//! | `memory://` | the embedded in-memory backend (one per call; state lives in the process) | `memory` (default) |
//! | `valkey://`, `valkeys://`, `redis://`, `rediss://` | Valkey | `valkey` |
//! | `postgres://`, `postgresql://` | Postgres | `postgres` |
//!
//! `memory://` takes two optional query parameters: `partitions` (default 256) and
//! `inline_cascade_limit` (default [`ff_core::memory::DEFAULT_INLINE_CASCADE_LIMIT`]; 0 sends
//! every completion through the engine's dispatch loop): `memory://?partitions=16&inline_cascade_limit=0`.

use std::sync::Arc;

use ff_core::{EngineBackend, EngineError};

/// The backend a URL names, connected and ready.
///
/// Errors: `Validation` on field `url` for a malformed URL or an unknown scheme; `Config`
/// when the scheme's backend is not compiled into this build (its feature is off); whatever
/// the backend answers when connecting.
pub async fn connect(url: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        EngineError::validation(
            "url",
            format!("{url:?} has no scheme; expected e.g. memory://, valkey://host:6379, postgres://host/db"),
        )
    })?;
    match scheme.to_ascii_lowercase().as_str() {
        "memory" => memory(rest),
        // The Valkey backend plugs in here (feature `valkey`).
        "valkey" | "valkeys" | "redis" | "rediss" => Err(not_compiled(scheme, "valkey")),
        // The Postgres backend plugs in here (feature `postgres`).
        "postgres" | "postgresql" => Err(not_compiled(scheme, "postgres")),
        other => Err(EngineError::validation(
            "url",
            format!(
                "unknown backend scheme {other:?} in {url:?}; known: memory, valkey, valkeys, redis, rediss, postgres, postgresql"
            ),
        )),
    }
}

fn not_compiled(scheme: &str, feature: &str) -> EngineError {
    EngineError::Config(format!(
        "the {feature} backend ({scheme}://) is not compiled into this build; enable feature `{feature}` of ff-engine"
    ))
}

#[cfg(feature = "memory")]
fn memory(rest: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
    use ff_core::PartitionConfig;
    use ff_core::memory::MemoryBackend;

    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !host.trim_end_matches('/').is_empty() {
        return Err(EngineError::validation(
            "url",
            format!("memory:// takes no host or path, got {host:?}"),
        ));
    }
    let mut partitions = PartitionConfig::default();
    let mut builder = MemoryBackend::builder();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("partitions", value)) => {
                let count: u16 = value.parse().map_err(|_| {
                    EngineError::validation(
                        "url",
                        format!("partitions={value:?} is not a number in 1..=65535"),
                    )
                })?;
                partitions = PartitionConfig::new(count)?;
            }
            Some(("inline_cascade_limit", value)) => {
                let limit: u32 = value.parse().map_err(|_| {
                    EngineError::validation(
                        "url",
                        format!("inline_cascade_limit={value:?} is not a non-negative number"),
                    )
                })?;
                builder = builder.inline_cascade_limit(limit);
            }
            _ => {
                return Err(EngineError::validation(
                    "url",
                    format!(
                        "unknown memory:// parameter {pair:?}; known: partitions, inline_cascade_limit"
                    ),
                ));
            }
        }
    }
    Ok(Arc::new(builder.partitions(partitions).build()))
}

#[cfg(not(feature = "memory"))]
fn memory(_rest: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
    Err(not_compiled("memory", "memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn schemes() {
        let err = connect("mysql://db").await.expect_err("unknown scheme");
        assert_eq!(err.validation_field(), Some("url"));
        let err = connect("localhost:6379").await.expect_err("no scheme");
        assert_eq!(err.validation_field(), Some("url"));
        for url in ["valkey://127.0.0.1:6379", "postgres://localhost/ff"] {
            assert!(
                matches!(connect(url).await, Err(EngineError::Config(_))),
                "{url}"
            );
        }
    }

    #[cfg(feature = "memory")]
    #[tokio::test(flavor = "current_thread")]
    async fn memory_urls() {
        let backend = connect("memory://").await.expect("memory backend");
        assert_eq!(backend.name(), "memory");
        let small = connect("memory://?partitions=16")
            .await
            .expect("16 partitions");
        assert_eq!(small.partition_config().partitions, 16);
        let deferred = connect("memory://?inline_cascade_limit=0&partitions=8")
            .await
            .expect("deferred cascades");
        assert_eq!(deferred.capabilities().inline_cascade_limit, 0);
        assert_eq!(deferred.partition_config().partitions, 8);
        for bad in [
            "memory://?partitions=0",
            "memory://?partitions=x",
            "memory://?colour=red",
            "memory://host",
        ] {
            let err = connect(bad).await.expect_err(bad);
            assert!(err.validation_field().is_some(), "{bad}: {err}");
        }
    }
}
