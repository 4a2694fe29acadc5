//! Shared setup of the backend-specific tests: real servers from the environment.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::{EngineError, PartitionConfig};

/// `FF_VALKEY_URL` (standalone server), if set.
pub fn standalone_url() -> Option<String> {
    std::env::var("FF_VALKEY_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// `FF_VALKEY_CLUSTER_URLS` (comma-separated seeds), if set.
pub fn cluster_urls() -> Option<Vec<String>> {
    std::env::var("FF_VALKEY_CLUSTER_URLS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(|u| u.trim().to_string()).collect())
}

/// A fresh namespace for one test.
pub fn namespace(test: &str) -> String {
    format!("t-{test}-{}", uuid::Uuid::new_v4().simple())
}

/// Every configured server kind: (label, config) with a fresh namespace.
pub fn configs(test: &str, partitions: u16) -> Vec<(&'static str, ValkeyConfig)> {
    let partitions = PartitionConfig::new(partitions).expect("a positive partition count");
    let mut out = Vec::new();
    if let Some(url) = standalone_url() {
        out.push((
            "standalone",
            ValkeyConfig::standalone(url)
                .with_namespace(namespace(test))
                .with_partitions(partitions),
        ));
    }
    if let Some(urls) = cluster_urls() {
        out.push((
            "cluster",
            ValkeyConfig::cluster(urls)
                .with_namespace(namespace(test))
                .with_partitions(partitions),
        ));
    }
    out
}

/// Fails loudly when no server is configured and `FF_REQUIRE_SERVERS` is set; otherwise
/// reports that the test did nothing.
pub fn none_configured(test: &str) -> bool {
    if standalone_url().is_none() && cluster_urls().is_none() {
        assert!(
            std::env::var("FF_REQUIRE_SERVERS").is_err(),
            "{test}: FF_REQUIRE_SERVERS is set but neither FF_VALKEY_URL nor FF_VALKEY_CLUSTER_URLS is"
        );
        eprintln!("{test}: skipped: set FF_VALKEY_URL and/or FF_VALKEY_CLUSTER_URLS");
        return true;
    }
    false
}

/// Connects a backend.
pub async fn connect(config: ValkeyConfig) -> Result<Arc<ValkeyBackend>, EngineError> {
    Ok(Arc::new(ValkeyBackend::connect(config).await?))
}
