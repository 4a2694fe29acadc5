//! How to reach a Valkey deployment and which FlowFabric deployment on it to use.

use std::time::Duration;

use ff_core::{EngineError, PartitionConfig};

/// Connection and deployment settings for [`crate::ValkeyBackend::connect`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValkeyConfig {
    /// Server URLs (`redis://host:port`, `valkey://host:port`): one for a standalone server,
    /// one or more seed nodes for a cluster.
    pub urls: Vec<String>,
    /// Whether `urls` are seeds of a Valkey Cluster.
    pub cluster: bool,
    /// Separates deployments (and conformance cases) sharing one server: every key starts with
    /// `ff:<namespace>:`. Must not contain `{`, `}` or whitespace.
    pub namespace: Option<String>,
    /// The partition count. Stored on first start; a later start with another count is a
    /// [`EngineError::Config`] error.
    pub partitions: PartitionConfig,
    /// How long to wait for a connection.
    pub connection_timeout: Duration,
    /// How long to wait for any one reply.
    pub response_timeout: Duration,
    /// For tests: the backend clock starts at the server's time and then moves only through
    /// `advance_clock` (production keeps the default, the server's `TIME` plus the offset
    /// `advance_clock` adds).
    pub frozen_clock: bool,
}

impl ValkeyConfig {
    /// A standalone server at `url`, no namespace, the default partition count.
    pub fn standalone(url: impl Into<String>) -> Self {
        ValkeyConfig {
            urls: vec![url.into()],
            cluster: false,
            namespace: None,
            partitions: PartitionConfig::default(),
            connection_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            frozen_clock: false,
        }
    }

    /// A cluster reached through `seeds`.
    pub fn cluster<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Self {
        ValkeyConfig {
            urls: seeds.into_iter().map(Into::into).collect(),
            cluster: true,
            ..ValkeyConfig::standalone("")
        }
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the partition count.
    pub fn with_partitions(mut self, partitions: PartitionConfig) -> Self {
        self.partitions = partitions;
        self
    }

    /// Freezes the backend clock (see [`ValkeyConfig::frozen_clock`]).
    pub fn with_frozen_clock(mut self, frozen: bool) -> Self {
        self.frozen_clock = frozen;
        self
    }

    /// Sets the reply timeout.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Checks the settings and returns the URLs in the form the client library takes
    /// (`valkey://` becomes `redis://`).
    pub(crate) fn validated_urls(&self) -> Result<Vec<String>, EngineError> {
        if self.urls.is_empty() || self.urls.iter().any(|u| u.trim().is_empty()) {
            return Err(EngineError::Config("no Valkey URL given".into()));
        }
        if !self.cluster && self.urls.len() > 1 {
            return Err(EngineError::Config(
                "several URLs given for a standalone server; set `cluster` for cluster seeds"
                    .into(),
            ));
        }
        if self.partitions.partitions == 0 {
            return Err(EngineError::Config(
                "partition count must be at least 1".into(),
            ));
        }
        if let Some(ns) = &self.namespace
            && (ns.is_empty()
                || ns
                    .chars()
                    .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control()))
        {
            return Err(EngineError::Config(format!(
                "namespace {ns:?} must be non-empty, without braces or whitespace"
            )));
        }
        self.urls
            .iter()
            .map(|url| {
                let url = url.trim();
                if let Some(rest) = url.strip_prefix("valkey://") {
                    Ok(format!("redis://{rest}"))
                } else if let Some(rest) = url.strip_prefix("valkeys://") {
                    Ok(format!("rediss://{rest}"))
                } else if url.starts_with("redis://") || url.starts_with("rediss://") {
                    Ok(url.to_string())
                } else {
                    Err(EngineError::Config(format!(
                        "{url:?} is not a valkey:// or redis:// URL"
                    )))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_and_checked() {
        let config = ValkeyConfig::standalone("valkey://127.0.0.1:6379");
        assert_eq!(
            config.validated_urls().ok(),
            Some(vec!["redis://127.0.0.1:6379".to_string()])
        );
        assert!(
            ValkeyConfig::standalone("http://x")
                .validated_urls()
                .is_err()
        );
        assert!(
            ValkeyConfig::standalone("redis://x")
                .with_namespace("a{b}")
                .validated_urls()
                .is_err()
        );
        let cluster = ValkeyConfig::cluster(["redis://a:1", "redis://b:2"]);
        assert_eq!(cluster.validated_urls().map(|u| u.len()).ok(), Some(2));
    }
}
