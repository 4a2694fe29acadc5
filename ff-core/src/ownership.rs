//! Partition ownership between engine instances (DESIGN §6).
//!
//! Correctness never depends on ownership: every backend step is atomic and idempotent, so two
//! instances working one partition only waste effort. Efficiency does: instances register
//! themselves with a heartbeat, see each other, split the partitions with expiring ownership
//! leases, and take over the partitions of an instance whose leases lapse.

use serde::{Deserialize, Serialize};

use crate::id::InstanceId;
use crate::partition::Partition;
use crate::time::Timestamp;

/// The answer for one partition of `acquire_partitions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionGrant {
    /// The caller owns the partition until `expires_at` (acquired, or renewed if it already
    /// owned it).
    Granted {
        /// The partition.
        partition: Partition,
        /// Backend-clock expiry of the ownership lease.
        expires_at: Timestamp,
    },
    /// Another live instance owns it.
    Held {
        /// The partition.
        partition: Partition,
        /// Its owner.
        owner: InstanceId,
        /// When the owner's lease expires unless renewed.
        expires_at: Timestamp,
    },
}

impl PartitionGrant {
    /// The partition this answer is about.
    pub fn partition(&self) -> Partition {
        match self {
            PartitionGrant::Granted { partition, .. } | PartitionGrant::Held { partition, .. } => {
                *partition
            }
        }
    }

    /// Whether the caller got it.
    pub fn is_granted(&self) -> bool {
        matches!(self, PartitionGrant::Granted { .. })
    }
}

/// The owner of a partition, as `partition_owners` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOwner {
    /// The partition.
    pub partition: Partition,
    /// Its owner.
    pub owner: InstanceId,
    /// When the owner's lease expires unless renewed.
    pub expires_at: Timestamp,
}

/// A live engine instance, as `heartbeat_instance` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance.
    pub id: InstanceId,
    /// When its registration expires unless it heartbeats again.
    pub expires_at: Timestamp,
}
