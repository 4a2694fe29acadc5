//! Picking a backend by URL.
//!
//! | scheme | backend | feature |
//! |---|---|---|
//! | `memory://` | the embedded in-memory backend (one per call; state lives in the process) | `memory` (default) |
//! | `valkey://`, `valkeys://`, `redis://`, `rediss://` | Valkey, standalone or cluster | `valkey` |
//! | `postgres://`, `postgresql://` | Postgres | `postgres` |
//!
//! FlowFabric's own settings travel as query parameters, which are removed before the rest of
//! the URL reaches the backend's client library:
//!
//! - every backend: `partitions` (default 256; stored by a server backend on first start and
//!   checked on every start);
//! - `memory://`: `inline_cascade_limit` (default
//!   [`ff_core::memory::DEFAULT_INLINE_CASCADE_LIMIT`]; 0 sends every completion through the
//!   engine's dispatch loop) — `memory://?partitions=16&inline_cascade_limit=0`;
//! - Valkey: `namespace` (separates deployments sharing a server), `cluster=true` (the host is
//!   a cluster seed) and `seeds=host:port,host:port` (more seeds) —
//!   `valkey://10.0.0.1:6379?cluster=true&seeds=10.0.0.2:6379&namespace=billing`;
//! - Postgres: `schema` (default `flowfabric`), `pool_size`, `hints` (`LISTEN/NOTIFY`
//!   wake-ups, see `ff_backend_postgres::PostgresConfig::hints`) —
//!   `postgres://app@db.internal/app?schema=jobs&pool_size=32&hints=true`.

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
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "memory" => memory(rest),
        "valkey" | "valkeys" | "redis" | "rediss" => valkey(&scheme, rest).await,
        "postgres" | "postgresql" => postgres(&scheme, rest).await,
        other => Err(EngineError::validation(
            "url",
            format!(
                "unknown backend scheme {other:?} in {url:?}; known: memory, valkey, valkeys, redis, rediss, postgres, postgresql"
            ),
        )),
    }
}

#[cfg_attr(
    all(feature = "memory", feature = "valkey", feature = "postgres"),
    allow(dead_code)
)]
fn not_compiled(scheme: &str, feature: &str) -> EngineError {
    EngineError::Config(format!(
        "the {feature} backend ({scheme}://) is not compiled into this build; enable feature `{feature}` of ff-engine"
    ))
}

/// A URL's query split into FlowFabric's own parameters (taken out one by one) and the rest,
/// which goes to the backend's client library untouched.
struct UrlParams<'a> {
    base: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

// Which items are used depends on the backends compiled in.
#[cfg_attr(
    not(any(feature = "memory", feature = "valkey", feature = "postgres")),
    allow(dead_code)
)]
impl<'a> UrlParams<'a> {
    fn parse(rest: &'a str) -> Self {
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        UrlParams { base, pairs }
    }

    /// Removes and returns parameter `name`.
    fn take(&mut self, name: &str) -> Option<&'a str> {
        let index = self.pairs.iter().position(|(k, _)| *k == name)?;
        Some(self.pairs.remove(index).1)
    }

    /// Removes `name` and parses it, naming it in the error.
    fn take_parsed<T: std::str::FromStr>(
        &mut self,
        name: &str,
        what: &str,
    ) -> Result<Option<T>, EngineError> {
        self.take(name)
            .map(|value| {
                value.parse().map_err(|_| {
                    EngineError::validation("url", format!("{name}={value:?} is not {what}"))
                })
            })
            .transpose()
    }

    fn partitions(&mut self) -> Result<ff_core::PartitionConfig, EngineError> {
        match self.take_parsed::<u16>("partitions", "a number in 1..=65535")? {
            Some(count) => ff_core::PartitionConfig::new(count),
            None => Ok(ff_core::PartitionConfig::default()),
        }
    }

    /// The URL for the client library: the base plus every parameter not taken.
    #[cfg_attr(not(any(feature = "valkey", feature = "postgres")), allow(dead_code))]
    fn passthrough(&self, scheme: &str) -> String {
        let mut url = format!("{scheme}://{}", self.base);
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            if !v.is_empty() {
                url.push('=');
                url.push_str(v);
            }
        }
        url
    }
}

#[cfg(feature = "memory")]
fn memory(rest: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
    use ff_core::memory::MemoryBackend;

    let mut params = UrlParams::parse(rest);
    if !params.base.trim_end_matches('/').is_empty() {
        return Err(EngineError::validation(
            "url",
            format!("memory:// takes no host or path, got {:?}", params.base),
        ));
    }
    let mut builder = MemoryBackend::builder().partitions(params.partitions()?);
    if let Some(limit) =
        params.take_parsed::<u32>("inline_cascade_limit", "a non-negative number")?
    {
        builder = builder.inline_cascade_limit(limit);
    }
    if let Some((name, _)) = params.pairs.first() {
        return Err(EngineError::validation(
            "url",
            format!(
                "unknown memory:// parameter {name:?}; known: partitions, inline_cascade_limit"
            ),
        ));
    }
    Ok(Arc::new(builder.build()))
}

#[cfg(feature = "valkey")]
async fn valkey(scheme: &str, rest: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
    use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};

    let mut params = UrlParams::parse(rest);
    let partitions = params.partitions()?;
    let namespace = params.take("namespace");
    let cluster = params.take_parsed::<bool>("cluster", "true or false")?;
    let seeds = params.take("seeds");
    let main = params.passthrough(scheme);
    let mut config = match (cluster.unwrap_or(false), seeds) {
        (true, seeds) => ValkeyConfig::cluster(
            std::iter::once(main).chain(
                seeds
                    .into_iter()
                    .flat_map(|s| s.split(','))
                    .filter(|s| !s.is_empty())
                    .map(|seed| format!("{scheme}://{seed}")),
            ),
        ),
        (false, None) => ValkeyConfig::standalone(main),
        (false, Some(_)) => {
            return Err(EngineError::validation(
                "url",
                "seeds=... is only meaningful with cluster=true",
            ));
        }
    }
    .with_partitions(partitions);
    if let Some(namespace) = namespace {
        config = config.with_namespace(namespace);
    }
    Ok(Arc::new(ValkeyBackend::connect(config).await?))
}

#[cfg(not(feature = "valkey"))]
async fn valkey(scheme: &str, _rest: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
    Err(not_compiled(scheme, "valkey"))
}

#[cfg(feature = "postgres")]
async fn postgres(scheme: &str, rest: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
    use ff_backend_postgres::{PostgresBackend, PostgresConfig};

    let mut params = UrlParams::parse(rest);
    let partitions = params.partitions()?;
    let schema = params.take("schema");
    let pool_size = params.take_parsed::<usize>("pool_size", "a number of connections")?;
    let hints = params.take_parsed::<bool>("hints", "true or false")?;
    let mut config = PostgresConfig::new(params.passthrough(scheme)).with_partitions(partitions);
    if let Some(schema) = schema {
        config = config.with_schema(schema);
    }
    if let Some(size) = pool_size {
        config = config.with_pool_size(size);
    }
    if let Some(on) = hints {
        config = config.with_hints(on);
    }
    Ok(Arc::new(PostgresBackend::connect(config).await?))
}

#[cfg(not(feature = "postgres"))]
async fn postgres(scheme: &str, _rest: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
    Err(not_compiled(scheme, "postgres"))
}

#[cfg(not(feature = "memory"))]
fn memory(_rest: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
    Err(not_compiled("memory", "memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_parameters_are_taken_out_of_the_url() {
        let mut params =
            UrlParams::parse("app@db:5432/app?schema=jobs&sslmode=disable&partitions=16");
        assert_eq!(params.take("schema"), Some("jobs"));
        assert_eq!(params.partitions().ok().map(|p| p.partitions), Some(16));
        assert_eq!(
            params.passthrough("postgres"),
            "postgres://app@db:5432/app?sslmode=disable"
        );
        let mut bad = UrlParams::parse("h?partitions=0");
        assert!(bad.partitions().is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn schemes() {
        let err = connect("mysql://db").await.expect_err("unknown scheme");
        assert_eq!(err.validation_field(), Some("url"));
        let err = connect("localhost:6379").await.expect_err("no scheme");
        assert_eq!(err.validation_field(), Some("url"));
        #[cfg(not(feature = "valkey"))]
        assert!(matches!(
            connect("valkey://127.0.0.1:6379").await,
            Err(EngineError::Config(_))
        ));
        #[cfg(not(feature = "postgres"))]
        assert!(matches!(
            connect("postgres://localhost/ff").await,
            Err(EngineError::Config(_))
        ));
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
