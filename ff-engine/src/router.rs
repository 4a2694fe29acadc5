//! Routing ids to partitions and to their keys (DESIGN §2).
//!
//! Everything FlowFabric stores lives in one of a fixed number of partitions. An
//! [`ExecutionId`] carries its partition (`{fp:N}:<uuid>`), a [`FlowId`] hashes to one, and
//! every member of a flow lives on its flow's partition. The router answers "which partition,
//! which keys" for any id without a lookup, and refuses ids that name a partition this
//! deployment does not have — an id from another deployment must never be routed to the wrong
//! partition.
//!
//! The router is pure: no I/O, no clock, cheap to clone.

use ff_core::keys::{KeySpace, PartitionKeys};
use ff_core::{EngineError, ExecutionId, FlowId, Partition, PartitionConfig};

/// Where an execution lives: its partition and that partition's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The partition.
    pub partition: Partition,
    /// Every key of that partition (execution hash, indexes, completion records, ...).
    pub keys: PartitionKeys,
}

/// Maps ids to partitions and partitions to their keys, for one deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRouter {
    config: PartitionConfig,
    keys: KeySpace,
}

impl PartitionRouter {
    /// A router for `config` with keys under the default root (`ff:`).
    pub fn new(config: PartitionConfig) -> Self {
        PartitionRouter::with_namespace(config, None)
    }

    /// A router for `config` whose keys live under `ff:<namespace>:` (several deployments, or
    /// test cases, sharing one server). See [`KeySpace::new`] for what a namespace may hold.
    pub fn with_namespace(config: PartitionConfig, namespace: Option<&str>) -> Self {
        PartitionRouter {
            config,
            keys: KeySpace::new(namespace),
        }
    }

    /// The deployment's partition config.
    pub fn config(&self) -> PartitionConfig {
        self.config
    }

    /// The key space (deployment-wide keys: metadata, coordination).
    pub fn key_space(&self) -> &KeySpace {
        &self.keys
    }

    /// Every partition, in index order.
    pub fn partitions(&self) -> impl ExactSizeIterator<Item = Partition> + use<> {
        self.config.all()
    }

    /// The partition of an execution, after checking that it exists in this deployment.
    ///
    /// Errors: `Validation` on field `execution_id` when the id names a partition beyond the
    /// deployment's count.
    pub fn partition_of_execution(&self, id: &ExecutionId) -> Result<Partition, EngineError> {
        id.check(&self.config)?;
        Ok(id.partition())
    }

    /// The partition of a flow (and of every one of its members).
    pub fn partition_of_flow(&self, id: &FlowId) -> Partition {
        id.partition(&self.config)
    }

    /// The partition and keys of an execution. Errors as for
    /// [`PartitionRouter::partition_of_execution`].
    pub fn route_execution(&self, id: &ExecutionId) -> Result<Route, EngineError> {
        let partition = self.partition_of_execution(id)?;
        Ok(Route {
            partition,
            keys: self.keys.partition(partition),
        })
    }

    /// The partition and keys of a flow.
    pub fn route_flow(&self, id: &FlowId) -> Route {
        let partition = self.partition_of_flow(id);
        Route {
            partition,
            keys: self.keys.partition(partition),
        }
    }

    /// The keys of one partition: its indexes (ready per lane, delayed, leases, timeouts,
    /// deadlines, terminal, completions, cancel backlog). Errors: `Validation` on field
    /// `partition` when it is out of range.
    pub fn partition_keys(&self, partition: Partition) -> Result<PartitionKeys, EngineError> {
        self.config.check(partition)?;
        Ok(self.keys.partition(partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::partition::cluster_slot;

    #[test]
    fn routes_members_to_their_flows_partition() {
        let router = PartitionRouter::with_namespace(
            PartitionConfig::new(64).expect("64 partitions"),
            Some("t"),
        );
        let flow = FlowId::new();
        let member = ExecutionId::new_member(&flow, &router.config());
        let route = router.route_execution(&member).expect("member routes");
        assert_eq!(route, router.route_flow(&flow));
        assert_eq!(route.partition, router.partition_of_flow(&flow));
        let slot = cluster_slot(route.partition.hash_tag().as_bytes());
        assert_eq!(cluster_slot(route.keys.execution(&member).as_bytes()), slot);
        assert!(route.keys.prefix().starts_with("ff:t:{fp:"));
    }

    #[test]
    fn rejects_ids_from_a_bigger_deployment() {
        let big = PartitionConfig::new(1024).expect("1024 partitions");
        let small = PartitionRouter::new(PartitionConfig::new(4).expect("4 partitions"));
        let id = (0..)
            .map(|_| ExecutionId::new_standalone(&big))
            .find(|id| id.partition().index() >= 4)
            .expect("some id lands beyond partition 3");
        let err = small.route_execution(&id).expect_err("out of range");
        assert_eq!(err.validation_field(), Some("execution_id"));
        assert!(small.partition_keys(Partition(4)).is_err());
        assert_eq!(small.partitions().len(), 4);
    }
}
