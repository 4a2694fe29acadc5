//! The backend conformance suite on real Valkey servers: a standalone server
//! (`FF_VALKEY_URL`) and a cluster (`FF_VALKEY_CLUSTER_URLS`, comma-separated seeds). A server
//! kind whose variable is missing has every case reported ignored (or failed with
//! `FF_REQUIRE_SERVERS=1`). Each case runs in its own namespace.

use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::conformance::{self, BackendFactory};
use ff_core::{EngineBackend, EngineError, PartitionConfig};

/// Partitions per case: few, so scanners and claims see the work of a case quickly, and
/// several, so cross-partition paths are exercised.
const PARTITIONS: u16 = 8;

struct Valkey {
    label: &'static str,
    urls: Vec<String>,
    cluster: bool,
    frozen_clock: bool,
}

#[async_trait]
impl BackendFactory for Valkey {
    fn label(&self) -> String {
        self.label.to_string()
    }

    async fn create(&self, case: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
        let namespace = format!(
            "{}-{}",
            case.replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
            uuid::Uuid::new_v4().simple()
        );
        let config = if self.cluster {
            ValkeyConfig::cluster(self.urls.clone())
        } else {
            ValkeyConfig::standalone(self.urls[0].clone())
        }
        .with_namespace(namespace)
        .with_frozen_clock(self.frozen_clock)
        .with_partitions(PartitionConfig::new(PARTITIONS)?);
        Ok(Arc::new(ValkeyBackend::connect(config).await?))
    }
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
}

fn main() -> ExitCode {
    let standalone = env_list("FF_VALKEY_URL");
    let cluster = env_list("FF_VALKEY_CLUSTER_URLS");
    let mut factories: Vec<Arc<dyn BackendFactory>> = Vec::new();
    // Each server kind runs the suite twice: with the production clock (server TIME plus the
    // advance_clock offset) and with a frozen clock, which the model test needs.
    for (urls, cluster, labels) in [
        (standalone.clone(), false, ["valkey", "valkey-frozen-clock"]),
        (
            cluster.clone(),
            true,
            ["valkey-cluster", "valkey-cluster-frozen-clock"],
        ),
    ] {
        let Some(urls) = urls else { continue };
        for (label, frozen_clock) in labels.into_iter().zip([false, true]) {
            factories.push(Arc::new(Valkey {
                label,
                urls: urls.clone(),
                cluster,
                frozen_clock,
            }));
        }
    }
    let mut failed = false;
    if !factories.is_empty() && conformance::main(factories) != ExitCode::SUCCESS {
        failed = true;
    }
    if standalone.is_none()
        && conformance::main_unconfigured("valkey", "FF_VALKEY_URL is not set") != ExitCode::SUCCESS
    {
        failed = true;
    }
    if cluster.is_none()
        && conformance::main_unconfigured("valkey-cluster", "FF_VALKEY_CLUSTER_URLS is not set")
            != ExitCode::SUCCESS
    {
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
