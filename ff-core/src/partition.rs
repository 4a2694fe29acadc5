//! Partition math.
//!
//! All state lives in a fixed number of partitions (`PartitionConfig::partitions`, default
//! 256, fixed for the life of a deployment). Every key of one partition carries the hash tag
//! `{fp:N}`, so on a Valkey Cluster a partition is exactly one slot on one shard and every
//! operation on it can be one atomic script. Ids map to partitions with CRC16-XMODEM — the
//! function Valkey Cluster itself uses for slots — over the 16 raw bytes of a UUID, modulo
//! the partition count.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EngineError;

const CRC16_XMODEM: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// CRC16-XMODEM, the checksum Valkey Cluster uses to map a key to one of its 16384 slots.
pub fn crc16_xmodem(bytes: &[u8]) -> u16 {
    CRC16_XMODEM.checksum(bytes)
}

/// The Valkey Cluster slot of `key` (honouring a `{hash tag}`), as `CLUSTER KEYSLOT` answers.
///
/// Used to check that the keys of one operation share a slot, and by tests that compare the
/// partition math against a real server.
pub fn cluster_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(hashed) % 16384
}

/// How many partitions a deployment has. Stored by a backend on first start; a backend refuses
/// to start against state written with a different count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionConfig {
    /// Number of partitions, at least 1.
    pub partitions: u16,
}

impl PartitionConfig {
    /// The default partition count.
    pub const DEFAULT_PARTITIONS: u16 = 256;

    /// A config with `partitions` partitions; zero is a [`EngineError::Validation`] error.
    pub fn new(partitions: u16) -> Result<Self, EngineError> {
        if partitions == 0 {
            return Err(EngineError::validation("partitions", "must be at least 1"));
        }
        Ok(PartitionConfig { partitions })
    }

    /// The partition a UUID hashes to.
    pub fn partition_of_uuid(&self, uuid: &Uuid) -> Partition {
        Partition(crc16_xmodem(uuid.as_bytes()) % self.partitions.max(1))
    }

    /// Every partition of this config, in index order.
    pub fn all(&self) -> impl ExactSizeIterator<Item = Partition> + use<> {
        (0..self.partitions).map(Partition)
    }

    /// Checks that `partition` exists in this config.
    pub fn check(&self, partition: Partition) -> Result<(), EngineError> {
        if partition.0 < self.partitions {
            Ok(())
        } else {
            Err(EngineError::validation(
                "partition",
                format!(
                    "partition {} is out of range: this deployment has {} partitions",
                    partition.0, self.partitions
                ),
            ))
        }
    }
}

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig {
            partitions: Self::DEFAULT_PARTITIONS,
        }
    }
}

/// One partition: an index below [`PartitionConfig::partitions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Partition(pub u16);

impl Partition {
    /// The partition's index.
    pub const fn index(self) -> u16 {
        self.0
    }

    /// The hash tag every key of this partition carries: `{fp:N}`.
    pub fn hash_tag(self) -> String {
        format!("{{fp:{}}}", self.0)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{fp:{}}}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots as printed by `CLUSTER KEYSLOT` on a real Valkey server.
    #[test]
    fn slots_match_valkey_cluster_keyslot() {
        assert_eq!(cluster_slot(b"foo"), 12182);
        assert_eq!(cluster_slot(b"bar"), 5061);
        assert_eq!(cluster_slot(b"hello"), 866);
        assert_eq!(cluster_slot(b"{user1000}.following"), 3443);
        assert_eq!(cluster_slot(b"{user1000}.followers"), 3443);
        assert_eq!(cluster_slot(b"foo{}{bar}"), 8363);
        assert_eq!(cluster_slot(b"{fp:0}"), 14926);
        assert_eq!(cluster_slot(b"fp:0"), 14926);
        // The standard CRC16-XMODEM check value.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn partition_of_uuid_is_crc_of_raw_bytes() {
        let uuid = Uuid::from_bytes([7; 16]);
        let config = PartitionConfig::default();
        assert_eq!(
            config.partition_of_uuid(&uuid),
            Partition(crc16_xmodem(&[7; 16]) % 256)
        );
        let one = PartitionConfig::new(1).expect("1 is a valid partition count");
        assert_eq!(one.partition_of_uuid(&uuid), Partition(0));
    }

    #[test]
    fn zero_partitions_is_rejected() {
        assert!(matches!(
            PartitionConfig::new(0),
            Err(EngineError::Validation { .. })
        ));
    }

    #[test]
    fn check_rejects_out_of_range() {
        let config = PartitionConfig::new(4).expect("4 partitions");
        assert!(config.check(Partition(3)).is_ok());
        assert!(config.check(Partition(4)).is_err());
    }
}
