//! Identifiers (DESIGN §2).
//!
//! An [`ExecutionId`] embeds its partition (`{fp:N}:<uuid>`), so any holder of an id can route
//! to the right partition without a lookup. Flow members are minted on their flow's partition
//! (a flow, its members, edges and results share one Valkey Cluster slot, so each cascade step
//! is one atomic script); standalone executions on the partition of their own UUID, which
//! spreads a lane's work over every partition.
//!
//! Every name-like id ([`Lane`], [`NodeKey`], [`WorkerId`], ...) is validated when it is built
//! and when it is deserialized, so a value of these types is always well-formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EngineError;
use crate::limits;
use crate::partition::{Partition, PartitionConfig};

/// The UUID namespace of idempotency keys: an execution submitted with an idempotency key gets
/// the UUIDv5 of the key in this namespace, so every submission of one key lands on one
/// partition and finds the execution the first one created.
pub const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6a0b_5f3c_2e1d_4c8b_9f70_3d1e_52a4_b7c9);

/// The id of one execution: `{fp:N}:<uuid>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExecutionId {
    partition: Partition,
    uuid: Uuid,
}

impl ExecutionId {
    /// An id from its parts. The caller is responsible for the partition being the right one
    /// for the kind of execution (see the constructors below).
    pub const fn from_parts(partition: Partition, uuid: Uuid) -> Self {
        ExecutionId { partition, uuid }
    }

    /// A fresh id for a standalone execution: a random UUID on its own partition.
    pub fn new_standalone(config: &PartitionConfig) -> Self {
        let uuid = Uuid::new_v4();
        ExecutionId::from_parts(config.partition_of_uuid(&uuid), uuid)
    }

    /// The id of the standalone execution submitted with `key`: the same for every submission
    /// of the key, so the backend finds the execution a first submission created.
    pub fn for_idempotency_key(key: &IdempotencyKey, config: &PartitionConfig) -> Self {
        let uuid = Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_str().as_bytes());
        ExecutionId::from_parts(config.partition_of_uuid(&uuid), uuid)
    }

    /// A fresh id for a member of `flow`: a random UUID on the flow's partition.
    pub fn new_member(flow: &FlowId, config: &PartitionConfig) -> Self {
        ExecutionId::from_parts(flow.partition(config), Uuid::new_v4())
    }

    /// The partition the execution lives on.
    pub const fn partition(&self) -> Partition {
        self.partition
    }

    /// The UUID part.
    pub const fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// Parses `{fp:N}:<uuid>` and checks that `N` exists in `config`.
    pub fn parse_in(s: &str, config: &PartitionConfig) -> Result<Self, EngineError> {
        let id: ExecutionId = s.parse()?;
        id.check(config)?;
        Ok(id)
    }

    /// Checks that the id's partition exists in `config`: the check every backend makes on
    /// every id it is given, since an id may come from another deployment.
    pub fn check(&self, config: &PartitionConfig) -> Result<(), EngineError> {
        config.check(self.partition).map_err(|_| {
            EngineError::validation(
                "execution_id",
                format!(
                    "{self} names partition {} but this deployment has {} partitions",
                    self.partition.index(),
                    config.partitions
                ),
            )
        })
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{fp:{}}}:{}", self.partition.index(), self.uuid)
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutionId({self})")
    }
}

impl FromStr for ExecutionId {
    type Err = EngineError;

    /// Parses `{fp:N}:<uuid>`. The partition range is not checked here (it depends on the
    /// deployment); see [`ExecutionId::parse_in`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| EngineError::validation("execution_id", format!("{s:?}: {why}"));
        let rest = s
            .strip_prefix("{fp:")
            .ok_or_else(|| bad("must start with the partition tag {fp:N}"))?;
        let (index, uuid) = rest
            .split_once("}:")
            .ok_or_else(|| bad("must have the form {fp:N}:<uuid>"))?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || index.len() > 5 {
            return Err(bad("the partition index must be a decimal number"));
        }
        let index: u16 = index
            .parse()
            .map_err(|_| bad("the partition index does not fit in 16 bits"))?;
        let uuid = Uuid::try_parse(uuid).map_err(|e| bad(&format!("invalid UUID: {e}")))?;
        Ok(ExecutionId::from_parts(Partition(index), uuid))
    }
}

impl TryFrom<String> for ExecutionId {
    type Error = EngineError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ExecutionId> for String {
    fn from(id: ExecutionId) -> Self {
        id.to_string()
    }
}

/// The id of a flow. Its partition is the hash of its UUID; every member lives there.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FlowId(Uuid);

impl FlowId {
    /// A fresh random flow id.
    pub fn new() -> Self {
        FlowId(Uuid::new_v4())
    }

    /// A flow id from a UUID (e.g. one the caller derived from its own request id, to make
    /// `create_flow` idempotent across its own retries).
    pub const fn from_uuid(uuid: Uuid) -> Self {
        FlowId(uuid)
    }

    /// The UUID.
    pub const fn uuid(&self) -> Uuid {
        self.0
    }

    /// The partition of the flow and all of its members.
    pub fn partition(&self, config: &PartitionConfig) -> Partition {
        config.partition_of_uuid(&self.0)
    }
}

impl Default for FlowId {
    fn default() -> Self {
        FlowId::new()
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowId({})", self.0)
    }
}

impl FromStr for FlowId {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(FlowId)
            .map_err(|e| EngineError::validation("flow_id", format!("{s:?}: invalid UUID: {e}")))
    }
}

/// The id of one lease: minted by every claim, part of every fence.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(Uuid);

impl LeaseId {
    /// A fresh random lease id.
    pub fn new() -> Self {
        LeaseId(Uuid::new_v4())
    }

    /// A lease id from a UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        LeaseId(uuid)
    }

    /// The UUID.
    pub const fn uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for LeaseId {
    fn default() -> Self {
        LeaseId::new()
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0)
    }
}

impl FromStr for LeaseId {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(LeaseId)
            .map_err(|e| EngineError::validation("lease_id", format!("{s:?}: invalid UUID: {e}")))
    }
}

/// Checks a name-like id: non-empty, at most `max` bytes, made of `allowed` characters.
fn check_name(
    field: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    allowed_desc: &str,
) -> Result<(), EngineError> {
    if value.is_empty() {
        return Err(EngineError::validation(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(EngineError::validation(
            field,
            format!("{} bytes is longer than the limit of {max}", value.len()),
        ));
    }
    if let Some(bad) = value.chars().find(|&c| !allowed(c)) {
        return Err(EngineError::validation(
            field,
            format!("{value:?} contains {bad:?}; allowed: {allowed_desc}"),
        ));
    }
    Ok(())
}

/// Characters of lanes and capabilities: safe inside storage keys, SQL and metric labels.
fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')
}
const SYMBOL_CHARS: &str = "ASCII letters, digits and _ - . : /";

/// Printable characters without whitespace.
fn is_printable(c: char) -> bool {
    !c.is_control() && !c.is_whitespace()
}
const PRINTABLE_CHARS: &str = "printable characters without whitespace";

macro_rules! name_type {
    (
        $(#[$meta:meta])*
        $name:ident, field = $field:literal, max = $max:expr, allowed = $allowed:expr, desc = $desc:expr
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, EngineError> {
                let value = value.into();
                check_name($field, &value, $max, $allowed, $desc)?;
                Ok($name(value))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = EngineError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = EngineError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = EngineError;

            fn try_from(value: &str) -> Result<Self, Self::Error> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A named queue. Workers claim from one lane; work of different lanes never mixes.
    Lane, field = "lane", max = limits::MAX_LANE_BYTES, allowed = is_symbol_char, desc = SYMBOL_CHARS
);

name_type!(
    /// A capability a worker offers and an execution may require (required ⊆ offered).
    Capability, field = "capability", max = limits::MAX_CAPABILITY_BYTES, allowed = is_symbol_char, desc = SYMBOL_CHARS
);

name_type!(
    /// The caller's name for a node of a flow, unique within the flow; edges refer to nodes by
    /// key.
    NodeKey, field = "node_key", max = limits::MAX_NODE_KEY_BYTES, allowed = is_printable, desc = PRINTABLE_CHARS
);

name_type!(
    /// A caller-chosen key that makes `create_execution` idempotent.
    IdempotencyKey, field = "idempotency_key", max = limits::MAX_IDEMPOTENCY_KEY_BYTES, allowed = is_printable, desc = PRINTABLE_CHARS
);

name_type!(
    /// The id of a worker, recorded on its leases and attempts.
    WorkerId, field = "worker_id", max = limits::MAX_WORKER_ID_BYTES, allowed = is_printable, desc = PRINTABLE_CHARS
);

name_type!(
    /// The id of an engine instance, used for partition ownership.
    InstanceId, field = "instance_id", max = limits::MAX_WORKER_ID_BYTES, allowed = is_printable, desc = PRINTABLE_CHARS
);

impl WorkerId {
    /// A fresh, unique worker id (`worker-<uuid>`).
    pub fn random() -> Self {
        WorkerId(format!("worker-{}", Uuid::new_v4()))
    }
}

impl InstanceId {
    /// A fresh, unique instance id (`engine-<uuid>`).
    pub fn random() -> Self {
        InstanceId(format!("engine-{}", Uuid::new_v4()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_id_round_trips() {
        let config = PartitionConfig::default();
        let id = ExecutionId::new_standalone(&config);
        let text = id.to_string();
        assert!(text.starts_with("{fp:"));
        assert_eq!(ExecutionId::parse_in(&text, &config).unwrap(), id);
        assert_eq!(id.partition(), config.partition_of_uuid(&id.uuid()));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ExecutionId>(&json).unwrap(), id);
    }

    #[test]
    fn members_share_their_flows_partition() {
        let config = PartitionConfig::default();
        let flow = FlowId::new();
        for _ in 0..20 {
            assert_eq!(
                ExecutionId::new_member(&flow, &config).partition(),
                flow.partition(&config)
            );
        }
    }

    #[test]
    fn idempotency_keys_map_to_one_id() {
        let config = PartitionConfig::default();
        let key = IdempotencyKey::new("order-42").unwrap();
        assert_eq!(
            ExecutionId::for_idempotency_key(&key, &config),
            ExecutionId::for_idempotency_key(&key, &config)
        );
    }

    #[test]
    fn malformed_execution_ids_are_validation_errors() {
        let config = PartitionConfig::new(8).unwrap();
        let uuid = Uuid::new_v4();
        for bad in [
            String::new(),
            "nonsense".to_string(),
            format!("fp:1:{uuid}"),
            format!("{{fp:}}:{uuid}"),
            format!("{{fp:-1}}:{uuid}"),
            format!("{{fp:99999999}}:{uuid}"),
            format!("{{fp:1}}{uuid}"),
            "{fp:1}:not-a-uuid".to_string(),
        ] {
            let err = ExecutionId::parse_in(&bad, &config).unwrap_err();
            assert_eq!(err.validation_field(), Some("execution_id"), "{bad}");
        }
        let out_of_range = format!("{{fp:8}}:{uuid}");
        assert!(out_of_range.parse::<ExecutionId>().is_ok());
        assert_eq!(
            ExecutionId::parse_in(&out_of_range, &config)
                .unwrap_err()
                .validation_field(),
            Some("execution_id")
        );
    }

    #[test]
    fn names_are_validated() {
        assert!(Lane::new("emails.high-priority/v2").is_ok());
        assert_eq!(Lane::new("").unwrap_err().validation_field(), Some("lane"));
        assert!(Lane::new("has space").is_err());
        assert!(Lane::new("{fp:1}").is_err());
        assert!(Lane::new("x".repeat(limits::MAX_LANE_BYTES + 1)).is_err());
        assert!(NodeKey::new("step-1 ✓").is_err());
        assert!(NodeKey::new("step-1✓").is_ok());
        assert!(serde_json::from_str::<Lane>("\"\"").is_err());
    }
}
