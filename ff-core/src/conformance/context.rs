//! What each case gets: its own backend, and helpers that hide the differences the contract
//! allows between backends (inline or deferred cascade, controllable or real clock, cancels
//! done inline or through the backlog).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::backend::{Capabilities, EngineBackend};
use crate::execution::{ClaimRequest, ClaimedExecution, ExecutionSpec};
use crate::flow::FlowSpec;
use crate::id::{ExecutionId, FlowId, IdempotencyKey, Lane, NodeKey, WorkerId};
use crate::limits;
use crate::partition::{Partition, PartitionConfig};
use crate::scan::{ScanKind, ScanRequest};
use crate::snapshot::{ExecutionSnapshot, FlowSnapshot};
use crate::state::{ExecutionState, FlowState};
use crate::time::Timestamp;

use super::check::{CaseError, CaseResult, ensure, ensure_eq};
use super::harness::BackendFactory;

/// Most scanner calls one [`TestContext::scan`] makes before it calls the backend stuck.
const MAX_SCAN_CALLS: usize = 10_000;
/// Most rounds of [`TestContext::settle_partition`] before it calls the backend stuck.
const MAX_SETTLE_ROUNDS: usize = 10_000;
/// Most `cascade_completion` calls for one event before it calls the backend stuck.
const MAX_CASCADE_CALLS: usize = 100_000;
/// Page size for draining pending completions.
const PENDING_PAGE: u32 = 1_000;

/// A case's view of its backend.
pub struct TestContext {
    backend: Arc<dyn EngineBackend>,
    factory: Arc<dyn BackendFactory>,
    case: String,
    sequence: AtomicU64,
}

impl std::fmt::Debug for TestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestContext")
            .field("case", &self.case)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// `[a-z0-9_]` only, so a factory may use it in a key prefix or a schema name as it is.
fn namespace_of(case: &str) -> String {
    case.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl TestContext {
    /// A context on a fresh backend from `factory` for the case `case`.
    pub async fn new(factory: Arc<dyn BackendFactory>, case: &str) -> CaseResult<TestContext> {
        let namespace = namespace_of(case);
        let backend = factory.create(&namespace).await.map_err(|error| {
            CaseError::new(format!(
                "the {} factory could not create a backend: {error}",
                factory.label()
            ))
        })?;
        Ok(TestContext {
            backend,
            factory,
            case: namespace,
            sequence: AtomicU64::new(0),
        })
    }

    /// Another context on another fresh backend from the same factory (the model test uses
    /// one per generated case).
    pub async fn fresh(&self) -> CaseResult<TestContext> {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        TestContext::new(self.factory.clone(), &format!("{}_{n}", self.case)).await
    }

    /// The backend under test.
    pub fn backend(&self) -> &Arc<dyn EngineBackend> {
        &self.backend
    }

    /// Its capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    /// Whether its clock can be moved ([`TestContext::advance`] is instant).
    pub fn has_clock_control(&self) -> bool {
        self.capabilities().clock_control
    }

    /// Its partition config.
    pub fn config(&self) -> PartitionConfig {
        self.backend.partition_config()
    }

    /// A lane unique within this context: `<name>-<n>`.
    pub fn lane(&self, name: &str) -> Lane {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        Lane::new(format!("{name}-{n}"))
            .expect("lane names built from a symbol and a number are valid")
    }

    /// A fresh worker id.
    pub fn worker(&self) -> WorkerId {
        WorkerId::random()
    }

    /// The backend clock.
    pub async fn now(&self) -> CaseResult<Timestamp> {
        Ok(self.backend.now().await?)
    }

    /// Lets at least `by` pass on the backend clock: `advance_clock` when the backend has
    /// clock control, a sleep otherwise. Cases only rely on a *lower* bound of elapsed time,
    /// so they hold on server backends with real clocks too.
    pub async fn advance(&self, by: Duration) -> CaseResult<()> {
        if self.has_clock_control() {
            self.backend.advance_clock(by).await?;
        } else {
            tokio::time::sleep(by).await;
        }
        Ok(())
    }

    /// Runs scanner `kind` on `partition` until it reports the end of the due items, following
    /// its cursor; returns the number of items processed. Scanner failures fail the case.
    pub async fn scan(&self, partition: Partition, kind: ScanKind) -> CaseResult<u32> {
        let mut processed = 0;
        let mut cursor = None;
        for _ in 0..MAX_SCAN_CALLS {
            let report = self
                .backend
                .scan(&ScanRequest::new(partition, kind, 1_000).after(cursor))
                .await?;
            ensure!(
                report.failures.is_empty(),
                "{kind} scan of {partition} reported failures: {:?}",
                report.failures
            );
            processed += report.processed;
            match report.next {
                Some(next) => cursor = Some(next),
                None => return Ok(processed),
            }
        }
        Err(CaseError::new(format!(
            "{kind} scan of {partition} did not reach the end after {MAX_SCAN_CALLS} calls"
        )))
    }

    /// Promotes the due delayed executions of `partition` (the delayed-promotion scanner).
    pub async fn promote(&self, partition: Partition) -> CaseResult<u32> {
        self.scan(partition, ScanKind::DelayedPromotion).await
    }

    /// Finishes every pending completion and deferred cancel of `flow`'s partition, the way
    /// the engine's dispatch loop would; after it, a flow's observable state no longer depends
    /// on whether the backend cascades inline.
    pub async fn settle(&self, flow: &FlowId) -> CaseResult<()> {
        self.settle_partition(flow.partition(&self.config())).await
    }

    /// [`TestContext::settle`] for one partition.
    pub async fn settle_partition(&self, partition: Partition) -> CaseResult<()> {
        for _ in 0..MAX_SETTLE_ROUNDS {
            let cancelled = self.scan(partition, ScanKind::CancelBacklog).await?;
            let events = self
                .backend
                .pending_completions(partition, PENDING_PAGE)
                .await?;
            if events.is_empty() && cancelled == 0 {
                return Ok(());
            }
            for event in &events {
                let mut finished = false;
                for _ in 0..MAX_CASCADE_CALLS {
                    if self.backend.cascade_completion(event).await?.finished {
                        finished = true;
                        break;
                    }
                }
                ensure!(
                    finished,
                    "cascade_completion of {event:?} did not finish after {MAX_CASCADE_CALLS} calls"
                );
            }
        }
        Err(CaseError::new(format!(
            "{partition} still had pending completions after {MAX_SETTLE_ROUNDS} rounds"
        )))
    }

    /// Creates a standalone execution and returns its id.
    pub async fn create(&self, spec: &ExecutionSpec) -> CaseResult<ExecutionId> {
        let created = self.backend.create_execution(spec).await?;
        ensure!(
            created.created,
            "create_execution without a key must create ({created:?})"
        );
        Ok(created.id)
    }

    /// Claims up to `max` executions of `lane` with a fresh worker, no capabilities and a 30 s
    /// lease.
    pub async fn claim(&self, lane: &Lane, max: u32) -> CaseResult<Vec<ClaimedExecution>> {
        let request = ClaimRequest::new(self.worker(), lane.clone()).with_max(max);
        Ok(self.backend.claim(&request).await?)
    }

    /// Claims exactly one execution of `lane` (failing the case if none is ready).
    pub async fn claim_one(&self, lane: &Lane) -> CaseResult<ClaimedExecution> {
        self.claim_one_with(ClaimRequest::new(self.worker(), lane.clone()))
            .await
    }

    /// Claims exactly one execution with `request` (failing the case if none is ready).
    pub async fn claim_one_with(&self, request: ClaimRequest) -> CaseResult<ClaimedExecution> {
        let lane = request.lane.clone();
        let mut claimed = self.backend.claim(&request.with_max(1)).await?;
        ensure!(
            claimed.len() == 1,
            "expected one claimable execution in lane {lane}, got {}",
            claimed.len()
        );
        Ok(claimed.remove(0))
    }

    /// Fails the case if anything of `lane` is claimable (claims with a short lease, so it
    /// changes state only when the check fails).
    pub async fn ensure_nothing_claimable(&self, lane: &Lane, why: &str) -> CaseResult<()> {
        let claimed = self.claim(lane, limits::MAX_CLAIM_BATCH).await?;
        ensure!(
            claimed.is_empty(),
            "{why}: nothing of lane {lane} should be claimable, but claim returned {:?}",
            claimed
                .iter()
                .map(|c| (c.id(), c.node_key.clone()))
                .collect::<Vec<_>>()
        );
        Ok(())
    }

    /// Describes an execution.
    pub async fn describe(&self, id: &ExecutionId) -> CaseResult<ExecutionSnapshot> {
        Ok(self.backend.describe_execution(id).await?)
    }

    /// The state of an execution.
    pub async fn state(&self, id: &ExecutionId) -> CaseResult<ExecutionState> {
        Ok(self.describe(id).await?.state())
    }

    /// Fails the case unless `id` is in `expected`.
    pub async fn ensure_state(
        &self,
        id: &ExecutionId,
        expected: ExecutionState,
        why: &str,
    ) -> CaseResult<()> {
        let state = self.state(id).await?;
        ensure_eq!(state, expected, "{why}: state of {id}");
        Ok(())
    }

    /// Creates a flow and returns a handle to its members.
    pub async fn create_flow(&self, spec: &FlowSpec) -> CaseResult<FlowHandle> {
        let created = self.backend.create_flow(spec).await?;
        ensure!(created.created, "create_flow of a new id must create");
        ensure_eq!(
            created.flow_id,
            spec.id,
            "create_flow returned another flow id"
        );
        ensure_eq!(
            created.nodes.len(),
            spec.nodes.len(),
            "create_flow node count"
        );
        Ok(FlowHandle {
            id: created.flow_id,
            partition: created.flow_id.partition(&self.config()),
            nodes: created.nodes.into_iter().collect(),
        })
    }

    /// Describes a flow.
    pub async fn flow(&self, flow: &FlowHandle) -> CaseResult<FlowSnapshot> {
        Ok(self.backend.describe_flow(&flow.id).await?)
    }

    /// Fails the case unless every listed member of `flow` is in the listed state.
    pub async fn ensure_members(
        &self,
        flow: &FlowHandle,
        expected: &[(&str, ExecutionState)],
        why: &str,
    ) -> CaseResult<()> {
        let snapshot = self.flow(flow).await?;
        let mut wrong = Vec::new();
        for (key, state) in expected {
            let member = snapshot.members.iter().find(|m| m.key.as_str() == *key);
            match member {
                Some(member) if member.state == *state => {}
                Some(member) => {
                    wrong.push(format!("{key}: expected {state}, got {}", member.state))
                }
                None => wrong.push(format!("{key}: not a member")),
            }
        }
        ensure!(wrong.is_empty(), "{why}: {}", wrong.join("; "));
        Ok(())
    }

    /// Fails the case unless the flow is in `state` with these `(total, terminal, failing)`
    /// counts, and has `finished_at` exactly when it is terminal.
    pub async fn ensure_flow(
        &self,
        flow: &FlowHandle,
        state: FlowState,
        counts: (u32, u32, u32),
        why: &str,
    ) -> CaseResult<FlowSnapshot> {
        let snapshot = self.flow(flow).await?;
        ensure_eq!(snapshot.state, state, "{why}: flow state");
        let actual = (
            snapshot.counts.total,
            snapshot.counts.terminal,
            snapshot.counts.failing,
        );
        ensure_eq!(
            actual,
            counts,
            "{why}: flow counts (total, terminal, failing)"
        );
        ensure_eq!(
            snapshot.finished_at.is_some(),
            state.is_terminal(),
            "{why}: finished_at set exactly when the flow is finished"
        );
        Ok(snapshot)
    }

    /// `n` idempotency keys whose executions all land on one partition (found by trying
    /// keys), so a case can observe strict claim order, which only holds within a partition.
    pub fn keys_on_one_partition(&self, n: usize) -> (Partition, Vec<IdempotencyKey>) {
        let config = self.config();
        let prefix = format!(
            "{}-{}",
            self.case,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let key = |i: usize| {
            IdempotencyKey::new(format!("{prefix}-{i}"))
                .expect("keys built from a symbol and numbers are valid")
        };
        let first = key(0);
        let partition = ExecutionId::for_idempotency_key(&first, &config).partition();
        let mut keys = vec![first];
        let mut i = 1;
        while keys.len() < n {
            let candidate = key(i);
            if ExecutionId::for_idempotency_key(&candidate, &config).partition() == partition {
                keys.push(candidate);
            }
            i += 1;
        }
        (partition, keys)
    }
}

/// The members of a flow a case created.
#[derive(Clone, Debug)]
pub struct FlowHandle {
    /// The flow.
    pub id: FlowId,
    /// Its partition (every member lives there).
    pub partition: Partition,
    /// Member ids by key.
    pub nodes: Vec<(NodeKey, ExecutionId)>,
}

impl FlowHandle {
    /// The execution id of member `key`.
    pub fn id(&self, key: &str) -> CaseResult<ExecutionId> {
        self.nodes
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, id)| *id)
            .ok_or_else(|| CaseError::new(format!("{key} is not a member of flow {}", self.id)))
    }

    /// The key of member `id`.
    pub fn key_of(&self, id: &ExecutionId) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(_, x)| x == id)
            .map(|(k, _)| k.as_str())
    }

    /// Records members added by `add_nodes`.
    pub fn extend(&mut self, nodes: impl IntoIterator<Item = (NodeKey, ExecutionId)>) {
        for (key, id) in nodes {
            if !self.nodes.iter().any(|(k, _)| *k == key) {
                self.nodes.push((key, id));
            }
        }
    }
}
