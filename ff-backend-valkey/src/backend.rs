//! [`ValkeyBackend`]: the [`EngineBackend`] implementation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ff_core::keys::KeySpace;
use ff_core::limits;
use ff_core::time::duration_millis;
use ff_core::{
    CancelFlowMode, CancelFlowOutcome, CancelOutcome, Capabilities, CascadeProgress, ClaimRequest,
    ClaimedExecution, CompleteRequest, Completed, CompletionEvent, CreatedExecution, CreatedFlow,
    DueSummary, EngineBackend, EngineError, ExecutionId, ExecutionSnapshot, ExecutionSummary,
    FailDisposition, FailOutcome, FailRequest, Fence, FlowId, FlowPatch, FlowSnapshot, FlowSpec,
    FlowState, GroupPolicy, HealthReport, InstanceId, InstanceInfo, Lane, ListCursor, ListQuery,
    NodeKey, NodeSpec, OnSatisfied, Page, Partition, PartitionConfig, PartitionDue, PartitionGrant,
    PartitionOwner, ScanCursor, ScanFailure, ScanKind, ScanReport, ScanRequest, Timestamp,
    WorkerId,
};
use redis::Value;

use crate::config::ValkeyConfig;
use crate::connection::{Connection, Idempotent, map_error};
use crate::decode;
use crate::encode::{self, Args};
use crate::hints::{self, HintFeed};
use crate::reply::{Effects, Fields, parse_state};

/// The oldest server this backend runs on (functions, `ZADD LT/GT`, shard channels).
const MIN_SERVER_VERSION: (u32, u32) = (7, 2);

/// Terminal transitions with at most this many outgoing edges cascade inside the call
/// (`INLINE_LIMIT` in the library).
pub const INLINE_CASCADE_LIMIT: u32 = 32;

/// An [`EngineBackend`] over Valkey (standalone or cluster): one function library, one FCALL
/// per operation, every key of an operation under one partition's hash tag.
pub struct ValkeyBackend {
    pub(crate) conn: Arc<Connection>,
    keys: KeySpace,
    pub(crate) partitions: PartitionConfig,
    prefixes: Vec<String>,
    coord: String,
    /// Milliseconds added to the server's `TIME` (moved by `advance_clock`), or with a frozen
    /// clock the backend time itself.
    clock: AtomicU64,
    frozen_clock: bool,
    sticky: Mutex<HashMap<(WorkerId, Lane), Partition>>,
    server_version: String,
    config: ValkeyConfig,
    hints: tokio::sync::Mutex<Option<HintFeed>>,
}

impl std::fmt::Debug for ValkeyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyBackend")
            .field("root", &self.keys.root())
            .field("partitions", &self.partitions.partitions)
            .field("cluster", &self.conn.is_cluster())
            .field("server_version", &self.server_version)
            .finish()
    }
}

/// Counts of what a backend instance sent, for measuring round trips per operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// FCALLs sent (each one round trip).
    pub fcalls: u64,
    /// Round trips of any kind (FCALLs included).
    pub round_trips: u64,
}

impl ValkeyBackend {
    /// Connects, checks the server version (at least Valkey 7.2), loads or upgrades the
    /// function library, and stores or checks the partition count.
    ///
    /// Errors: `Config` (bad URL or namespace, server too old, library newer than this code,
    /// partition count differing from the stored one), `Transport`.
    pub async fn connect(config: ValkeyConfig) -> Result<ValkeyBackend, EngineError> {
        let conn = Connection::open(&config).await?;
        let server_version = check_server_version(&conn).await?;
        conn.ensure_library().await?;
        let keys = KeySpace::new(config.namespace.as_deref());
        check_partition_config(&conn, &keys, config.partitions).await?;
        let frozen_start = if config.frozen_clock {
            server_time_ms(&conn).await?
        } else {
            0
        };
        let prefixes = config
            .partitions
            .all()
            .map(|p| keys.partition(p).prefix().to_string())
            .collect();
        Ok(ValkeyBackend {
            conn,
            coord: keys.coordination_prefix(),
            keys,
            partitions: config.partitions,
            prefixes,
            clock: AtomicU64::new(frozen_start),
            frozen_clock: config.frozen_clock,
            sticky: Mutex::new(HashMap::new()),
            server_version,
            config,
            hints: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys of this deployment.
    pub fn key_space(&self) -> &KeySpace {
        &self.keys
    }

    /// What this instance has sent so far.
    pub fn call_counts(&self) -> CallCounts {
        CallCounts {
            fcalls: self.conn.counters.fcalls.load(Ordering::Relaxed),
            round_trips: self.conn.counters.round_trips.load(Ordering::Relaxed),
        }
    }

    /// Reloads the function library on every master (what a call does by itself when it finds
    /// the library missing).
    pub async fn reload_library(&self) -> Result<(), EngineError> {
        self.conn.load_library().await
    }

    /// Sends a raw command (for tests and tools: memory measurements, fault injection).
    pub async fn raw_command(&self, cmd: &redis::Cmd) -> Result<Value, EngineError> {
        self.conn
            .raw(cmd)
            .await
            .map_err(|e| map_error("raw command", e, Idempotent::No))
    }

    /// Whether this backend talks to a cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    pub(crate) fn prefix(&self, partition: Partition) -> &str {
        &self.prefixes[usize::from(partition.index())]
    }

    /// The clock argument every clock-reading function takes: the offset in ms, or `@<ms>`
    /// for a frozen clock.
    ///
    /// On a standalone server it carries `|<key root>` too: the functions then keep the lane
    /// indexes in step themselves, in the same call (no slot rules forbid it there).
    pub(crate) fn offset(&self) -> String {
        let value = self.clock.load(Ordering::Relaxed);
        let clock = if self.frozen_clock {
            format!("@{value}")
        } else {
            value.to_string()
        };
        if self.conn.is_cluster() {
            clock
        } else {
            format!("{clock}|{}", self.keys.root())
        }
    }

    /// The index of partitions with work for `lane` (its own hash tag).
    pub fn lane_index_key(&self, lane: &str) -> String {
        format!("{}{{lane:{lane}}}:parts", self.keys.root())
    }

    pub(crate) fn sticky_get(&self, key: &(WorkerId, Lane)) -> Option<Partition> {
        self.sticky.lock().ok().and_then(|m| m.get(key).copied())
    }

    pub(crate) fn sticky_set(&self, key: (WorkerId, Lane), partition: Partition) {
        if let Ok(mut m) = self.sticky.lock() {
            if m.len() > 100_000 {
                m.clear();
            }
            m.insert(key, partition);
        }
    }

    pub(crate) fn sticky_clear(&self, key: &(WorkerId, Lane)) {
        if let Ok(mut m) = self.sticky.lock() {
            m.remove(key);
        }
    }

    fn check_partition(&self, partition: Partition) -> Result<(), EngineError> {
        self.partitions.check(partition)
    }

    /// One FCALL on a partition; returns the reply fields after an `ok` status.
    async fn call_partition(
        &self,
        function: &'static str,
        partition: Partition,
        args: Args,
        idempotent: Idempotent,
    ) -> Result<Fields, EngineError> {
        let reply = self
            .conn
            .fcall(function, &[self.prefix(partition)], &args.0, idempotent)
            .await?;
        Fields::new(reply, function)
    }

    async fn finish_effects(
        &self,
        partition: Partition,
        f: &mut Fields,
    ) -> Result<Effects, EngineError> {
        let effects = Effects::parse(f)?;
        self.apply_effects(partition, &effects).await?;
        Ok(effects)
    }

    /// Writes validated nodes and edges of `flow` in one FCALL (`ff_create_flow` or
    /// `ff_add_nodes`), with member ids minted here on the flow's partition. A repeat of a
    /// call that already landed answers the existing nodes.
    async fn write_graph(
        &self,
        function: &'static str,
        flow: &FlowId,
        nodes: &[NodeSpec],
        edges: &[ff_core::EdgeSpec],
        incoming: &[u32],
    ) -> Result<CreatedFlow, EngineError> {
        let p = flow.partition(&self.partitions);
        let ids: Vec<ExecutionId> = nodes
            .iter()
            .map(|_| ExecutionId::new_member(flow, &self.partitions))
            .collect();
        let mut args = self.offset_args(3 + nodes.len() * 15 + edges.len() * 4);
        args.str(&flow.to_string())
            .num(nodes.len())
            .num(edges.len());
        Self::graph_args(&mut args, &ids, nodes, edges, incoming);
        let mut f = self
            .call_partition(function, p, args, Idempotent::Yes)
            .await?;
        f.flow_status(flow)?;
        let created = f.int()? == 1;
        let existing = Self::node_pairs(p, f.array()?)?;
        self.finish_effects(p, &mut f).await?;
        let nodes = if created {
            nodes.iter().map(|n| n.key.clone()).zip(ids).collect()
        } else {
            existing
        };
        Ok(created_flow(*flow, created, nodes))
    }

    fn offset_args(&self, capacity: usize) -> Args {
        let mut args = Args::with_capacity(capacity + 1);
        args.str(&self.offset());
        args
    }

    async fn coord_call(
        &self,
        function: &'static str,
        args: Args,
        idempotent: Idempotent,
    ) -> Result<Fields, EngineError> {
        let reply = self
            .conn
            .fcall(function, &[&self.coord], &args.0, idempotent)
            .await?;
        let mut f = Fields::new(reply, function)?;
        f.status("")?;
        Ok(f)
    }

    /// Encodes the nodes and edges of a flow or patch. `from` of an edge is `n<i>` for a
    /// node of the call or `k<key>` for an existing node.
    fn graph_args(
        args: &mut Args,
        ids: &[ExecutionId],
        nodes: &[NodeSpec],
        edges: &[ff_core::EdgeSpec],
        incoming: &[u32],
    ) {
        let index: HashMap<&NodeKey, usize> =
            nodes.iter().enumerate().map(|(i, n)| (&n.key, i)).collect();
        let mut passes = vec![false; nodes.len()];
        for edge in edges {
            if edge.pass_result
                && let Some(&to) = index.get(&edge.to)
            {
                passes[to] = true;
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            encode::spec(
                args,
                &ids[i].uuid().to_string(),
                &node.spec,
                node.key.as_str(),
            );
            let (gp, gk) = match node.group.policy {
                GroupPolicy::AllOf => ("a", 0),
                GroupPolicy::AnyOf => ("y", 0),
                GroupPolicy::Quorum(k) => ("q", k),
            };
            let gs = match node.group.on_satisfied {
                OnSatisfied::CancelRemaining => "c",
                OnSatisfied::LetRun => "l",
            };
            args.str(gp)
                .num(gk)
                .str(gs)
                .num(incoming.get(i).copied().unwrap_or(0))
                .flag(passes[i]);
        }
        for edge in edges {
            match index.get(&edge.from) {
                Some(i) => args.str(&format!("n{i}")),
                None => args.str(&format!("k{}", edge.from.as_str())),
            };
            args.num(index.get(&edge.to).copied().unwrap_or(0))
                .str(match edge.kind {
                    ff_core::EdgeKind::Success => "s",
                    ff_core::EdgeKind::Always => "a",
                })
                .flag(edge.pass_result);
        }
    }

    fn node_pairs(
        partition: Partition,
        mut pairs: Fields,
    ) -> Result<BTreeMap<NodeKey, ExecutionId>, EngineError> {
        let mut out = BTreeMap::new();
        while pairs.remaining() > 0 {
            let key = NodeKey::new(pairs.string()?)?;
            out.insert(key, ExecutionId::from_parts(partition, pairs.uuid()?));
        }
        Ok(out)
    }

    fn scan_member(kind: &ScanKind, item: &str, config: &PartitionConfig) -> Option<String> {
        match kind {
            ScanKind::Retention { .. } => {
                if let Ok(id) = ExecutionId::parse_in(item, config) {
                    Some(format!("x:{}", id.uuid()))
                } else {
                    item.parse::<FlowId>().ok().map(|f| format!("f:{f}"))
                }
            }
            ScanKind::CancelBacklog => item.parse::<FlowId>().ok().map(|f| f.to_string()),
            _ => ExecutionId::parse_in(item, config)
                .ok()
                .map(|id| id.uuid().to_string()),
        }
    }

    fn scan_item(kind: &ScanKind, partition: Partition, member: &str) -> String {
        let exec = |u: &str| match uuid::Uuid::try_parse(u) {
            Ok(uuid) => ExecutionId::from_parts(partition, uuid).to_string(),
            Err(_) => u.to_string(),
        };
        match kind {
            ScanKind::Retention { .. } => match member.split_once(':') {
                Some(("x", u)) => exec(u),
                Some((_, f)) => f.to_string(),
                None => member.to_string(),
            },
            ScanKind::CancelBacklog => member.to_string(),
            _ => exec(member),
        }
    }
}

/// The server's `TIME` in milliseconds.
async fn server_time_ms(conn: &Connection) -> Result<u64, EngineError> {
    let reply = conn
        .raw(&redis::cmd("TIME"))
        .await
        .map_err(|e| map_error("TIME", e, Idempotent::Yes))?;
    let mut f = Fields::new(reply, "TIME")?;
    let secs = f.u64()?;
    let micros = f.u64()?;
    Ok(secs * 1000 + micros / 1000)
}

async fn check_server_version(conn: &Connection) -> Result<String, EngineError> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("server");
    let answers = conn
        .on_every_master(cmd)
        .await
        .map_err(|e| map_error("reading the server version", e, Idempotent::Yes))?;
    let mut version = String::new();
    for answer in answers {
        let text = match answer {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::VerbatimString { text, .. } => text,
            Value::SimpleString(s) => s,
            other => {
                return Err(EngineError::Corrupt(format!(
                    "unexpected INFO answer {other:?}"
                )));
            }
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let v = field("valkey_version:")
            .or_else(|| field("redis_version:"))
            .ok_or_else(|| EngineError::Config("the server did not report its version".into()))?;
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let major = parts.next().unwrap_or(0);
        let minor = parts.next().unwrap_or(0);
        if (major, minor) < MIN_SERVER_VERSION {
            return Err(EngineError::Config(format!(
                "server version {v} is too old: FlowFabric needs Valkey {}.{} or newer",
                MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
            )));
        }
        version = v;
    }
    Ok(version)
}

async fn check_partition_config(
    conn: &Connection,
    keys: &KeySpace,
    config: PartitionConfig,
) -> Result<(), EngineError> {
    let meta = keys.meta();
    let mut set = redis::cmd("HSETNX");
    set.arg(&meta).arg("partitions").arg(config.partitions);
    conn.raw(&set)
        .await
        .map_err(|e| map_error("storing the partition config", e, Idempotent::Yes))?;
    let mut get = redis::cmd("HGET");
    get.arg(&meta).arg("partitions");
    let stored = conn
        .raw(&get)
        .await
        .map_err(|e| map_error("reading the partition config", e, Idempotent::Yes))?;
    let stored = match stored {
        Value::BulkString(b) => String::from_utf8_lossy(&b).parse::<u16>().ok(),
        Value::Int(i) => u16::try_from(i).ok(),
        _ => None,
    };
    match stored {
        Some(n) if n == config.partitions => Ok(()),
        Some(n) => Err(EngineError::Config(format!(
            "this deployment ({meta}) has {n} partitions, the configuration says {}",
            config.partitions
        ))),
        None => Err(EngineError::Corrupt(format!(
            "{meta} holds no readable partition count"
        ))),
    }
}

fn created_flow(
    flow_id: FlowId,
    created: bool,
    nodes: BTreeMap<NodeKey, ExecutionId>,
) -> CreatedFlow {
    CreatedFlow {
        flow_id,
        created,
        nodes,
    }
}

#[async_trait]
impl EngineBackend for ValkeyBackend {
    fn name(&self) -> &'static str {
        "valkey"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_clock_control(true)
            .with_hints(true)
            .with_claim_next(true)
            .with_inline_cascade_limit(INLINE_CASCADE_LIMIT)
    }

    fn partition_config(&self) -> PartitionConfig {
        self.partitions
    }

    async fn now(&self) -> Result<Timestamp, EngineError> {
        let value = self.clock.load(Ordering::Relaxed);
        if self.frozen_clock {
            return Ok(Timestamp::from_millis(value));
        }
        Ok(Timestamp::from_millis(
            server_time_ms(&self.conn).await? + value,
        ))
    }

    async fn advance_clock(&self, by: Duration) -> Result<Timestamp, EngineError> {
        self.clock.fetch_add(duration_millis(by), Ordering::Relaxed);
        self.now().await
    }

    async fn subscribe_hints(&self) -> Result<ff_core::HintReceiver, EngineError> {
        let mut feed = self.hints.lock().await;
        if feed.is_none() {
            let channels = self
                .partitions
                .all()
                .map(|p| self.keys.hint_channel(p))
                .collect();
            *feed = Some(hints::start(&self.config, channels).await?);
        }
        let feed = feed.as_ref().expect("the hint feed was started just above");
        Ok(ff_core::HintReceiver::new(feed.sender.subscribe()))
    }

    async fn health(&self) -> Result<HealthReport, EngineError> {
        let started = Instant::now();
        let now = self.now().await?;
        Ok(HealthReport {
            backend: "valkey".to_string(),
            server_version: Some(self.server_version.clone()),
            now,
            latency: started.elapsed(),
        })
    }

    // ---------------------------------------------------------------- submission

    async fn create_execution(
        &self,
        spec: &ff_core::ExecutionSpec,
    ) -> Result<CreatedExecution, EngineError> {
        spec.validate("")?;
        let id = match &spec.idempotency_key {
            Some(key) => ExecutionId::for_idempotency_key(key, &self.partitions),
            None => ExecutionId::new_standalone(&self.partitions),
        };
        let mut args = self.offset_args(10);
        encode::spec(&mut args, &id.uuid().to_string(), spec, "");
        let p = id.partition();
        // Idempotent at the call level: the id is fixed before the call.
        let mut f = self
            .call_partition("ff_create", p, args, Idempotent::Yes)
            .await?;
        f.status(&p.hash_tag())?;
        let created = f.int()? == 1;
        self.finish_effects(p, &mut f).await?;
        Ok(CreatedExecution { id, created })
    }

    async fn create_flow(&self, spec: &FlowSpec) -> Result<CreatedFlow, EngineError> {
        let shape = spec.validate()?;
        self.write_graph(
            "ff_create_flow",
            &spec.id,
            &spec.nodes,
            &spec.edges,
            &shape.incoming,
        )
        .await
    }

    async fn add_nodes(
        &self,
        flow: &FlowId,
        patch: &FlowPatch,
    ) -> Result<CreatedFlow, EngineError> {
        let shape = patch.validate()?;
        self.write_graph(
            "ff_add_nodes",
            flow,
            &patch.nodes,
            &patch.edges,
            &shape.incoming,
        )
        .await
    }

    // ---------------------------------------------------------------- worker

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>, EngineError> {
        request.validate("")?;
        self.claim_any(request).await
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Timestamp, EngineError> {
        ff_core::policy::check_lease_ttl("ttl", ttl)?;
        let id = fence.execution_id;
        id.check(&self.partitions)?;
        let mut args = self.offset_args(4);
        args.str(&id.uuid().to_string())
            .str(&fence.lease_id.to_string())
            .num(fence.epoch)
            .num(duration_millis(ttl));
        let mut f = self
            .call_partition("ff_renew", id.partition(), args, Idempotent::Yes)
            .await?;
        f.status_for(&id)?;
        Ok(Timestamp::from_millis(f.u64()?))
    }

    async fn complete(&self, request: &CompleteRequest) -> Result<Completed, EngineError> {
        request.validate()?;
        let id = request.fence.execution_id;
        id.check(&self.partitions)?;
        let mut args = self.offset_args(14);
        args.str(&id.uuid().to_string())
            .str(&request.fence.lease_id.to_string())
            .num(request.fence.epoch)
            .flag(request.result.is_some())
            .bytes(request.result.as_deref().unwrap_or_default());
        let p = id.partition();
        let base = Self::claim_args(&mut args, request.claim_next.as_ref(), p);
        let idempotent = if request.claim_next.is_some() {
            Idempotent::No
        } else {
            Idempotent::Yes
        };
        let mut f = self
            .call_partition("ff_complete", p, args, idempotent)
            .await?;
        f.status_for(&id)?;
        let next = self.claimed_next(p, request.claim_next.as_ref(), base, &mut f)?;
        self.finish_effects(p, &mut f).await?;
        Ok(Completed { next })
    }

    async fn fail(&self, request: &FailRequest) -> Result<FailOutcome, EngineError> {
        request.validate()?;
        let id = request.fence.execution_id;
        id.check(&self.partitions)?;
        let mut args = self.offset_args(15);
        args.str(&id.uuid().to_string())
            .str(&request.fence.lease_id.to_string())
            .num(request.fence.epoch)
            .str(request.failure.stored_message())
            .flag(request.failure.retryable)
            .num(rand::random::<f64>());
        let p = id.partition();
        let base = Self::claim_args(&mut args, request.claim_next.as_ref(), p);
        let idempotent = if request.claim_next.is_some() {
            Idempotent::No
        } else {
            Idempotent::Yes
        };
        let mut f = self.call_partition("ff_fail", p, args, idempotent).await?;
        f.status_for(&id)?;
        let disposition = match f.int()? {
            at if at >= 0 => FailDisposition::RetryScheduled {
                available_at: Timestamp::from_millis(at.unsigned_abs()),
            },
            _ => FailDisposition::Failed,
        };
        let next = self.claimed_next(p, request.claim_next.as_ref(), base, &mut f)?;
        self.finish_effects(p, &mut f).await?;
        Ok(FailOutcome { disposition, next })
    }

    async fn progress(&self, fence: &Fence, progress: &[u8]) -> Result<(), EngineError> {
        limits::check_size("progress", progress.len(), limits::MAX_PROGRESS_BYTES)?;
        let id = fence.execution_id;
        id.check(&self.partitions)?;
        let mut args = self.offset_args(4);
        args.str(&id.uuid().to_string())
            .str(&fence.lease_id.to_string())
            .num(fence.epoch)
            .bytes(progress);
        let mut f = self
            .call_partition("ff_progress", id.partition(), args, Idempotent::Yes)
            .await?;
        f.status_for(&id)?;
        Ok(())
    }

    // ---------------------------------------------------------------- control

    async fn cancel_execution(&self, id: &ExecutionId) -> Result<CancelOutcome, EngineError> {
        id.check(&self.partitions)?;
        let mut args = self.offset_args(1);
        args.str(&id.uuid().to_string());
        let p = id.partition();
        let mut f = self
            .call_partition("ff_cancel", p, args, Idempotent::Yes)
            .await?;
        f.status_for(id)?;
        let outcome = if f.int()? == 1 {
            CancelOutcome::Cancelled {
                previous: parse_state(&f.string()?)?,
            }
        } else {
            CancelOutcome::AlreadyTerminal(f.array()?.execution_status()?)
        };
        self.finish_effects(p, &mut f).await?;
        Ok(outcome)
    }

    async fn cancel_flow(
        &self,
        flow: &FlowId,
        mode: CancelFlowMode,
    ) -> Result<CancelFlowOutcome, EngineError> {
        let p = flow.partition(&self.partitions);
        let mut args = self.offset_args(2);
        args.str(&flow.to_string()).str(match mode {
            CancelFlowMode::CancelAll => "all",
            CancelFlowMode::CancelPending => "pending",
        });
        let mut f = self
            .call_partition("ff_cancel_flow", p, args, Idempotent::Yes)
            .await?;
        f.status("")?;
        let cancelled = u32::try_from(f.u64()?).unwrap_or(u32::MAX);
        let deferred = u32::try_from(f.u64()?).unwrap_or(u32::MAX);
        let state: FlowState = f
            .string()?
            .parse()
            .map_err(|_| EngineError::Corrupt("unknown flow state".into()))?;
        self.finish_effects(p, &mut f).await?;
        Ok(CancelFlowOutcome {
            cancelled,
            deferred,
            state,
        })
    }

    async fn change_priority(&self, id: &ExecutionId, priority: i32) -> Result<(), EngineError> {
        ff_core::execution::check_priority("priority", priority)?;
        id.check(&self.partitions)?;
        let mut args = self.offset_args(2);
        args.str(&id.uuid().to_string()).num(priority);
        let mut f = self
            .call_partition("ff_priority", id.partition(), args, Idempotent::Yes)
            .await?;
        f.status_for(id)?;
        Ok(())
    }

    // ---------------------------------------------------------------- dispatch

    async fn pending_completions(
        &self,
        partition: Partition,
        limit: u32,
    ) -> Result<Vec<CompletionEvent>, EngineError> {
        self.check_partition(partition)?;
        limits::check_count("limit", limit, limits::MAX_SCAN_BATCH)?;
        let mut args = Args::new();
        args.num(limit);
        let mut f = self
            .call_partition("ff_pending", partition, args, Idempotent::Yes)
            .await?;
        f.status(&partition.hash_tag())?;
        let mut list = f.array()?;
        let mut out = Vec::with_capacity(list.remaining());
        while list.remaining() > 0 {
            let mut e = list.array()?;
            let u = e.uuid()?;
            let flow: FlowId = e
                .string()?
                .parse()
                .map_err(|_| EngineError::Corrupt("completion flow id is not a UUID".into()))?;
            let outcome = parse_state(&e.string()?)?;
            let recorded_at = Timestamp::from_millis(e.u64()?);
            out.push(CompletionEvent {
                execution_id: ExecutionId::from_parts(partition, u),
                flow_id: flow,
                outcome,
                recorded_at,
            });
        }
        Ok(out)
    }

    async fn cascade_completion(
        &self,
        event: &CompletionEvent,
    ) -> Result<CascadeProgress, EngineError> {
        let id = event.execution_id;
        id.check(&self.partitions)?;
        let mut args = self.offset_args(1);
        args.str(&id.uuid().to_string());
        let p = id.partition();
        let mut f = self
            .call_partition("ff_cascade", p, args, Idempotent::Yes)
            .await?;
        f.status_for(&id)?;
        let edges_applied = u32::try_from(f.u64()?).unwrap_or(u32::MAX);
        let finished = f.int()? == 1;
        self.finish_effects(p, &mut f).await?;
        Ok(CascadeProgress {
            edges_applied,
            finished,
        })
    }

    // ---------------------------------------------------------------- scanners

    async fn scan(&self, request: &ScanRequest) -> Result<ScanReport, EngineError> {
        request.validate()?;
        let p = request.partition;
        self.check_partition(p)?;
        let (kind, older) = match request.kind {
            ScanKind::LeaseExpiry => ("lease_expiry", 0),
            ScanKind::DelayedPromotion => ("delayed_promotion", 0),
            ScanKind::AttemptTimeout => ("attempt_timeout", 0),
            ScanKind::ExecutionDeadline => ("execution_deadline", 0),
            ScanKind::CancelBacklog => ("cancel_backlog", 0),
            ScanKind::Retention { older_than } => ("retention", duration_millis(older_than)),
        };
        let (after_score, after_member) = match &request.after {
            None => (String::new(), String::new()),
            Some(ScanCursor(c)) => {
                let (score, member) = c
                    .split_once(':')
                    .filter(|(s, _)| s.parse::<i64>().is_ok())
                    .ok_or_else(|| {
                        EngineError::validation("after", format!("{c:?} is not a scan cursor"))
                    })?;
                (score.to_string(), member.to_string())
            }
        };
        let mut args = self.offset_args(6 + request.skip.len());
        args.str(kind)
            .num(request.limit)
            .str(&after_score)
            .str(&after_member)
            .num(older)
            .num(rand::random::<f64>());
        for item in &request.skip {
            if let Some(member) = Self::scan_member(&request.kind, item, &self.partitions) {
                args.str(&member);
            }
        }
        let mut f = self
            .call_partition("ff_scan", p, args, Idempotent::Yes)
            .await?;
        f.status(&p.hash_tag())?;
        let processed = u32::try_from(f.u64()?).unwrap_or(u32::MAX);
        let mut raw = f.array()?;
        let mut failures = Vec::new();
        while raw.remaining() > 0 {
            let mut one = raw.array()?;
            let member = one.string()?;
            let error = one.string()?;
            failures.push(ScanFailure {
                item: Self::scan_item(&request.kind, p, &member),
                error,
            });
        }
        let mut next = f.array()?;
        let next = if next.remaining() == 2 {
            let score = next.string()?;
            let member = next.string()?;
            Some(ScanCursor(format!("{score}:{member}")))
        } else {
            None
        };
        let backlog = f.u64()?;
        self.finish_effects(p, &mut f).await?;
        Ok(ScanReport {
            processed,
            failures,
            next,
            backlog,
        })
    }

    // ---------------------------------------------------------------- coordination

    async fn due_summary(&self, partitions: &[Partition]) -> Result<DueSummary, EngineError> {
        for &partition in partitions {
            self.check_partition(partition)?;
        }
        let now = self.now().await?;
        // One read-only FCALL per partition, all in flight at once: the multiplexed
        // connection pipelines them (one round trip per shard).
        let heads = futures_util::future::try_join_all(partitions.iter().map(|&partition| {
            let keys = [self.prefix(partition)];
            async move { self.conn.fcall("ff_due", &keys, &[], Idempotent::Yes).await }
        }))
        .await?;
        let at = |f: &mut Fields| -> Result<Option<Timestamp>, EngineError> {
            let score = f.int()?;
            Ok(u64::try_from(score).ok().map(Timestamp::from_millis))
        };
        let mut summary = DueSummary {
            now,
            partitions: Vec::with_capacity(partitions.len()),
        };
        for (&partition, reply) in partitions.iter().zip(heads) {
            let mut f = Fields::new(reply, "ff_due")?;
            summary.partitions.push(PartitionDue {
                partition,
                lease_expiry: at(&mut f)?,
                delayed: at(&mut f)?,
                attempt_timeout: at(&mut f)?,
                deadline: at(&mut f)?,
                cancel_backlog: at(&mut f)?,
                finished: at(&mut f)?,
                completions: at(&mut f)?,
            });
        }
        Ok(summary)
    }

    async fn heartbeat_instance(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<Vec<InstanceInfo>, EngineError> {
        ff_core::policy::check_lease_ttl("ttl", ttl)?;
        let mut args = self.offset_args(2);
        args.str(instance.as_str()).num(duration_millis(ttl));
        let mut f = self
            .coord_call("ff_heartbeat", args, Idempotent::Yes)
            .await?;
        let mut list = f.array()?;
        let mut out = Vec::new();
        while list.remaining() > 0 {
            let id = InstanceId::new(list.string()?)?;
            let expires_at = Timestamp::from_millis(list.u64()?);
            out.push(InstanceInfo { id, expires_at });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), EngineError> {
        let mut args = self.offset_args(1);
        args.str(instance.as_str());
        self.coord_call("ff_remove_instance", args, Idempotent::Yes)
            .await?;
        Ok(())
    }

    async fn acquire_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
        ttl: Duration,
    ) -> Result<Vec<PartitionGrant>, EngineError> {
        ff_core::policy::check_lease_ttl("ttl", ttl)?;
        for p in partitions {
            self.check_partition(*p)?;
        }
        let mut args = self.offset_args(2 + partitions.len());
        args.str(instance.as_str()).num(duration_millis(ttl));
        for p in partitions {
            args.num(p.index());
        }
        let mut f = self.coord_call("ff_acquire", args, Idempotent::Yes).await?;
        let mut list = f.array()?;
        let mut out = Vec::with_capacity(partitions.len());
        while list.remaining() > 0 {
            let mut g = list.array()?;
            let partition = Partition(
                g.string()?
                    .parse()
                    .map_err(|_| EngineError::Corrupt("partition index".into()))?,
            );
            let granted = g.int()? == 1;
            let owner = g.string()?;
            let expires_at = Timestamp::from_millis(g.u64()?);
            out.push(if granted {
                PartitionGrant::Granted {
                    partition,
                    expires_at,
                }
            } else {
                PartitionGrant::Held {
                    partition,
                    owner: InstanceId::new(owner)?,
                    expires_at,
                }
            });
        }
        Ok(out)
    }

    async fn release_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
    ) -> Result<(), EngineError> {
        for p in partitions {
            self.check_partition(*p)?;
        }
        let mut args = Args::with_capacity(1 + partitions.len());
        args.str(instance.as_str());
        for p in partitions {
            args.num(p.index());
        }
        self.coord_call("ff_release", args, Idempotent::Yes).await?;
        Ok(())
    }

    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>, EngineError> {
        let args = self.offset_args(0);
        let mut f = self.coord_call("ff_owners", args, Idempotent::Yes).await?;
        let mut list = f.array()?;
        let mut out = Vec::new();
        while list.remaining() > 0 {
            let mut o = list.array()?;
            let partition = Partition(
                o.string()?
                    .parse()
                    .map_err(|_| EngineError::Corrupt("partition index".into()))?,
            );
            let owner = InstanceId::new(o.string()?)?;
            let expires_at = Timestamp::from_millis(o.u64()?);
            out.push(PartitionOwner {
                partition,
                owner,
                expires_at,
            });
        }
        out.sort_by_key(|o| o.partition);
        Ok(out)
    }

    // ---------------------------------------------------------------- reads

    async fn describe_execution(&self, id: &ExecutionId) -> Result<ExecutionSnapshot, EngineError> {
        id.check(&self.partitions)?;
        let mut args = Args::new();
        args.str(&id.uuid().to_string());
        let mut f = self
            .call_partition("ff_describe", id.partition(), args, Idempotent::Yes)
            .await?;
        f.status_for(id)?;
        decode::snapshot(*id, f)
    }

    async fn describe_flow(&self, id: &FlowId) -> Result<FlowSnapshot, EngineError> {
        let p = id.partition(&self.partitions);
        let mut args = Args::new();
        args.str(&id.to_string());
        let mut f = self
            .call_partition("ff_describe_flow", p, args, Idempotent::Yes)
            .await?;
        f.status("")?;
        decode::flow_snapshot(*id, p, f)
    }

    async fn list_executions(
        &self,
        query: &ListQuery,
    ) -> Result<Page<ExecutionSummary>, EngineError> {
        query.validate()?;
        let p = query.partition;
        self.check_partition(p)?;
        // The cursor is the library's position '<source>|<score>|<member>|<index>'; the
        // library checks its form.
        let after = match &query.after {
            None => String::new(),
            Some(ListCursor(c)) if c.is_empty() => {
                return Err(EngineError::validation("after", "an empty list cursor"));
            }
            Some(ListCursor(c)) => c.clone(),
        };
        let mut args = Args::with_capacity(4);
        args.str(query.state.as_str())
            .str(query.lane.as_ref().map(Lane::as_str).unwrap_or_default())
            .str(&after)
            .num(query.limit);
        let mut f = self
            .call_partition("ff_list", p, args, Idempotent::Yes)
            .await?;
        f.status(&p.hash_tag())?;
        let mut list = f.array()?;
        let mut items = Vec::with_capacity(list.remaining());
        while list.remaining() > 0 {
            let mut s = list.array()?;
            let u = s.uuid()?;
            let state = parse_state(&s.string()?)?;
            let lane = Lane::new(s.string()?)?;
            let priority = i32::try_from(s.int()?)
                .map_err(|_| EngineError::Corrupt("priority overflow".into()))?;
            let flow = s.string()?;
            let created_at = Timestamp::from_millis(s.u64()?);
            items.push(ExecutionSummary {
                id: ExecutionId::from_parts(p, u),
                state,
                lane,
                priority,
                flow_id: if flow.is_empty() {
                    None
                } else {
                    Some(
                        flow.parse().map_err(|_| {
                            EngineError::Corrupt("listed flow id is not a UUID".into())
                        })?,
                    )
                },
                created_at,
            });
        }
        let next = f.string()?;
        Ok(Page {
            items,
            next: if next.is_empty() {
                None
            } else {
                Some(ListCursor(next))
            },
        })
    }
}
