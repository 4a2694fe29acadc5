//! Key builders for the Valkey layout (DESIGN §7).
//!
//! Every key of a partition starts with the partition prefix `ff:<ns>:{fp:N}:` — the `{fp:N}`
//! hash tag puts all of them in one Valkey Cluster slot, so one script can touch any of them
//! atomically. Scripts receive the prefix and compute the keys they need from it; the helpers
//! here are the one definition of the layout shared by the Rust side and by tests.
//!
//! The namespace (`ns`) separates deployments — and conformance cases — sharing one server.
//! It sits outside the hash tag, so a namespace never changes which slot a partition is on.
//!
//! Layout under `ff:<ns>:{fp:N}:`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `x:<uuid>` | hash | one execution (spec, state, lease, result, ...) |
//! | `x:<uuid>:p` / `:r` / `:g` | string | its payload / result / progress, when too large to stay in the hash |
//! | `x:<uuid>:att` | list | its attempt records |
//! | `f:<uuid>` | hash | one flow (state, counters, node key → execution) |
//! | `f:<uuid>:edges` | list / hash | its edges and dependency groups |
//! | `ready:<lane>` | zset | ready executions of a lane, score = priority then sequence |
//! | `ready:<lane>#<capset>` | zset | the same, for executions requiring capability set `<capset>` (Valkey) |
//! | `caps:<lane>` | hash | capability sets of a lane: `<capset>` → capabilities (Valkey) |
//! | `delayed` | zset | delayed executions by `available_at` |
//! | `delayed:<lane>` | zset | delayed executions of a lane by `available_at` (Valkey) |
//! | `leases` | zset | running executions by lease expiry |
//! | `timeouts` | zset | running executions by attempt timeout |
//! | `deadlines` | zset | unfinished executions by deadline |
//! | `terminal` | zset | finished standalone executions and flows, by finish time |
//! | `completions` | zset | pending completions by record time |
//! | `cancels` | zset | flows with a deferred cancel |
//! | `flows` | zset | every flow by creation time (listing of blocked and finished members; Valkey) |
//! | `lanes` | set | lanes with ready or delayed work here (index repair, listing; Valkey) |
//! | `seq` | string | the partition's FIFO sequence |
//! | `hints` | channel | wake-up hints of the partition ([`KeySpace::hint_channel`]) |
//!
//! The Valkey backend also keeps, per lane and outside any partition, the index of partitions
//! with claimable work: `ff:<ns>:{lane:<lane>}:parts` (zset, member = partition, score = when
//! its work becomes claimable), under its own hash tag.
//!
//! Deployment-wide keys (`ff:<ns>:meta`, and ownership keys under the `{coord}` tag:
//! `ff:<ns>:{coord}:instances`, `ff:<ns>:{coord}:owners`) live outside any partition.

use crate::id::{ExecutionId, FlowId, Lane};
use crate::partition::{Partition, PartitionConfig};

/// The keys of one deployment (or one conformance case) on one server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeySpace {
    root: String,
}

impl KeySpace {
    /// Keys under `ff:` (no namespace), or `ff:<namespace>:`.
    ///
    /// The namespace must not contain `{` or `}` (it would break the hash tag); callers pass
    /// a validated name such as a [`crate::Lane`]-like symbol.
    pub fn new(namespace: Option<&str>) -> Self {
        let root = match namespace {
            Some(ns) if !ns.is_empty() => format!("ff:{ns}:"),
            _ => "ff:".to_string(),
        };
        KeySpace { root }
    }

    /// The root every key starts with (`ff:` or `ff:<ns>:`).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The keys of one partition.
    pub fn partition(&self, partition: Partition) -> PartitionKeys {
        PartitionKeys {
            prefix: format!("{}{{fp:{}}}:", self.root, partition.index()),
        }
    }

    /// The deployment's metadata hash (partition count, library version).
    pub fn meta(&self) -> String {
        format!("{}meta", self.root)
    }

    /// The hash tag shared by the coordination keys (instances, partition owners), so one
    /// script can update them together.
    pub fn coordination_prefix(&self) -> String {
        format!("{}{{coord}}:", self.root)
    }

    /// The live engine instances (zset by expiry).
    pub fn instances(&self) -> String {
        format!("{}instances", self.coordination_prefix())
    }

    /// Partition owners (hash partition → owner and expiry).
    pub fn owners(&self) -> String {
        format!("{}owners", self.coordination_prefix())
    }

    /// Shard channel for hints about `partition` (`SPUBLISH`, same slot as the partition).
    pub fn hint_channel(&self, partition: Partition) -> String {
        format!("{}hints", self.partition(partition).prefix())
    }

    /// The hash of an execution.
    pub fn execution(&self, id: &ExecutionId) -> String {
        self.partition(id.partition()).execution(id)
    }

    /// The hash of a flow.
    pub fn flow(&self, id: &FlowId, config: &PartitionConfig) -> String {
        self.partition(id.partition(config)).flow(id)
    }
}

/// The keys of one partition: everything starts with `ff:<ns>:{fp:N}:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKeys {
    prefix: String,
}

impl PartitionKeys {
    /// The prefix every key of the partition starts with, ending in `:`. Scripts compute their
    /// keys from it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hash of an execution of this partition.
    pub fn execution(&self, id: &ExecutionId) -> String {
        format!("{}x:{}", self.prefix, id.uuid())
    }

    /// The attempt records of an execution.
    pub fn attempts(&self, id: &ExecutionId) -> String {
        format!("{}x:{}:att", self.prefix, id.uuid())
    }

    /// The hash of a flow of this partition.
    pub fn flow(&self, id: &FlowId) -> String {
        format!("{}f:{}", self.prefix, id.uuid())
    }

    /// The edges and groups of a flow.
    pub fn flow_edges(&self, id: &FlowId) -> String {
        format!("{}f:{}:edges", self.prefix, id.uuid())
    }

    /// Ready executions of a lane.
    pub fn ready(&self, lane: &Lane) -> String {
        format!("{}ready:{}", self.prefix, lane.as_str())
    }

    /// Delayed executions by `available_at`.
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// Running executions by lease expiry.
    pub fn leases(&self) -> String {
        format!("{}leases", self.prefix)
    }

    /// Running executions by attempt timeout.
    pub fn attempt_timeouts(&self) -> String {
        format!("{}timeouts", self.prefix)
    }

    /// Unfinished executions by deadline.
    pub fn deadlines(&self) -> String {
        format!("{}deadlines", self.prefix)
    }

    /// Finished standalone executions and flows by finish time (retention).
    pub fn terminal(&self) -> String {
        format!("{}terminal", self.prefix)
    }

    /// Pending completions by record time.
    pub fn completions(&self) -> String {
        format!("{}completions", self.prefix)
    }

    /// Flows with a deferred cancel.
    pub fn cancel_backlog(&self) -> String {
        format!("{}cancels", self.prefix)
    }

    /// The partition's FIFO sequence counter.
    pub fn sequence(&self) -> String {
        format!("{}seq", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::cluster_slot;

    #[test]
    fn every_partition_key_shares_the_partition_slot() {
        let config = PartitionConfig::default();
        let keys = KeySpace::new(Some("case-7"));
        let flow = FlowId::new();
        let member = ExecutionId::new_member(&flow, &config);
        let p = keys.partition(member.partition());
        let lane = Lane::new("emails").unwrap();
        let all = [
            p.execution(&member),
            p.attempts(&member),
            p.flow(&flow),
            p.flow_edges(&flow),
            p.ready(&lane),
            p.delayed(),
            p.leases(),
            p.attempt_timeouts(),
            p.deadlines(),
            p.terminal(),
            p.completions(),
            p.cancel_backlog(),
            p.sequence(),
            keys.hint_channel(member.partition()),
            keys.flow(&flow, &config),
        ];
        let slot = cluster_slot(member.partition().hash_tag().as_bytes());
        for key in &all {
            assert!(key.starts_with("ff:case-7:{fp:"), "{key}");
            assert_eq!(cluster_slot(key.as_bytes()), slot, "{key}");
        }
        assert_eq!(
            cluster_slot(keys.instances().as_bytes()),
            cluster_slot(keys.owners().as_bytes())
        );
    }

    #[test]
    fn no_namespace() {
        let keys = KeySpace::new(None);
        assert_eq!(keys.partition(Partition(3)).delayed(), "ff:{fp:3}:delayed");
        assert_eq!(keys.meta(), "ff:meta");
    }
}
