//! Engine instances and partition ownership in memory.

use std::time::Duration;

use crate::error::EngineError;
use crate::id::InstanceId;
use crate::ownership::{InstanceInfo, PartitionGrant, PartitionOwner};
use crate::partition::Partition;
use crate::policy::check_lease_ttl;
use crate::time::Timestamp;

use super::state::State;

impl State {
    pub(super) fn heartbeat_instance(
        &mut self,
        instance: &InstanceId,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Vec<InstanceInfo>, EngineError> {
        check_lease_ttl("ttl", ttl)?;
        self.instances.retain(|_, expires_at| *expires_at > now);
        self.instances
            .insert(instance.clone(), now.saturating_add(ttl));
        Ok(self
            .instances
            .iter()
            .map(|(id, expires_at)| InstanceInfo {
                id: id.clone(),
                expires_at: *expires_at,
            })
            .collect())
    }

    pub(super) fn remove_instance(&mut self, instance: &InstanceId) {
        self.instances.remove(instance);
        self.owners.retain(|_, (owner, _)| owner != instance);
    }

    pub(super) fn acquire_partitions(
        &mut self,
        instance: &InstanceId,
        partitions: &[Partition],
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Vec<PartitionGrant>, EngineError> {
        check_lease_ttl("ttl", ttl)?;
        for partition in partitions {
            self.config.check(*partition)?;
        }
        let expires_at = now.saturating_add(ttl);
        Ok(partitions
            .iter()
            .map(|&partition| match self.owners.get(&partition) {
                Some((owner, until)) if owner != instance && *until > now => PartitionGrant::Held {
                    partition,
                    owner: owner.clone(),
                    expires_at: *until,
                },
                _ => {
                    self.owners
                        .insert(partition, (instance.clone(), expires_at));
                    PartitionGrant::Granted {
                        partition,
                        expires_at,
                    }
                }
            })
            .collect())
    }

    pub(super) fn release_partitions(
        &mut self,
        instance: &InstanceId,
        partitions: &[Partition],
    ) -> Result<(), EngineError> {
        for partition in partitions {
            self.config.check(*partition)?;
        }
        for partition in partitions {
            if self
                .owners
                .get(partition)
                .is_some_and(|(owner, _)| owner == instance)
            {
                self.owners.remove(partition);
            }
        }
        Ok(())
    }

    pub(super) fn partition_owners(&self, now: Timestamp) -> Vec<PartitionOwner> {
        self.owners
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(partition, (owner, until))| PartitionOwner {
                partition: *partition,
                owner: owner.clone(),
                expires_at: *until,
            })
            .collect()
    }
}
