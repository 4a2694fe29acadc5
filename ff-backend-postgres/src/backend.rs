//! [`PostgresBackend`]: the [`EngineBackend`] implementation.
//!
//! Every worker and control call is one statement — usually one server-side function — so it
//! is one round trip and one transaction. Fenced writes are decided inside the transaction
//! that takes effect, with the database clock; errors are classified there too, on the failure
//! path only.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ff_core::time::duration_millis;
use ff_core::{
    CancelFlowMode, CancelFlowOutcome, CancelOutcome, Capabilities, CascadeProgress, ClaimRequest,
    ClaimedExecution, CompleteRequest, Completed, CompletionEvent, CreatedExecution, CreatedFlow,
    DueSummary, EngineBackend, EngineError, ExecutionId, ExecutionSnapshot, ExecutionSpec,
    ExecutionSummary, FailDisposition, FailOutcome, FailRequest, Fence, FlowId, FlowPatch,
    FlowSnapshot, FlowSpec, HealthReport, HintReceiver, InstanceId, InstanceInfo, ListQuery, Page,
    Partition, PartitionConfig, PartitionGrant, PartitionOwner, RetryPolicy, ScanReport,
    ScanRequest, Timestamp, limits,
};
use tokio_postgres::types::ToSql;

use crate::config::PostgresConfig;
use crate::db::Db;
use crate::hints::{Hints, Notifier};
use crate::hot_path;
use crate::migrate;
use crate::reply;

/// FlowFabric's storage over PostgreSQL. Cheap to clone (shared pool).
#[derive(Clone, Debug)]
pub struct PostgresBackend {
    pub(crate) inner: Arc<Inner>,
}

/// Shared state of one backend instance.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) config: PostgresConfig,
    /// Added to the database clock by every statement that reads it; moved only by
    /// `advance_clock` (tests). 0 in production.
    pub(crate) clock_offset: AtomicI64,
    /// With a frozen clock: its reading at connect (the clock is then base + offset).
    pub(crate) frozen_base: Option<i64>,
    pub(crate) hints: Hints,
    /// Hints sent after commit (FlowFinished of `complete`).
    pub(crate) notifier: Notifier,
}

/// The `state` of a leased execution, as the parameter fenced statements compare it with (a
/// parameter, not a literal: the generic plan then probes the primary key rather than the
/// partial lease-expiry index).
const RUNNING: &str = "running";

/// Milliseconds of a duration, as the database stores them.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(duration_millis(d)).unwrap_or(i64::MAX)
}

/// A partition as the `part` column stores it (config checked: partitions ≤ i16::MAX).
pub(crate) fn part(p: Partition) -> i16 {
    i16::try_from(p.index()).unwrap_or(i16::MAX)
}

/// Capability names as the `caps` column stores them.
fn caps(claim: &ClaimRequest) -> Vec<&str> {
    claim.capabilities.iter().map(|c| c.as_str()).collect()
}

impl PostgresBackend {
    /// Connects, brings the schema up to date (or refuses a newer one) and checks the
    /// partition count.
    ///
    /// Errors: `Config` (bad settings, schema newer than this code, partition mismatch),
    /// `Transport` (server unreachable).
    pub async fn connect(config: PostgresConfig) -> Result<Self, EngineError> {
        config.validate()?;
        let db = Db::new(&config)?;
        migrate::migrate(&db, config.schema_name(), config.partitions).await?;
        let hints = Hints::new(&config)?;
        let notifier = Notifier::new(&config, db.clone());
        let frozen_base = if config.frozen_clock {
            let row = db.query_one("SELECT ff_now(0)", &[]).await?;
            Some(reply::get::<i64>(&row, 0)?)
        } else {
            None
        };
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                db,
                config,
                clock_offset: AtomicI64::new(0),
                frozen_base,
                hints,
                notifier,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// Drops this backend's schema with everything in it (tests: one schema per case).
    pub async fn drop_schema(&self) -> Result<(), EngineError> {
        let schema = self.inner.config.schema_name();
        let client = self
            .inner
            .db
            .pool()
            .get()
            .await
            .map_err(crate::pg_error::from_pool)?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .map_err(crate::pg_error::from_pg)
    }

    /// Statements this instance has sent to the server, each one round trip (prepares of a
    /// statement on a new connection not counted). For benchmarks and diagnostics.
    pub fn round_trips(&self) -> u64 {
        self.inner.db.sent()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The clock parameter every statement passes to `ff_now`: the offset, or with a frozen
    /// clock the negated reading (see `ff_now`).
    pub(crate) fn offset(&self) -> i64 {
        let offset = self.inner.clock_offset.load(Ordering::Relaxed);
        match self.inner.frozen_base {
            Some(base) => -(base.saturating_add(offset)),
            None => offset,
        }
    }

    pub(crate) fn inline_limit(&self) -> i32 {
        i32::try_from(self.inner.config.inline_cascade_limit).unwrap_or(i32::MAX)
    }

    pub(crate) fn partitions(&self) -> PartitionConfig {
        self.inner.config.partitions
    }

    /// Checks an execution id against the partition config.
    pub(crate) fn check_id(&self, id: &ExecutionId) -> Result<(), EngineError> {
        id.check(&self.partitions())
    }

    /// The backend clock (database clock plus offset).
    pub(crate) async fn clock(&self) -> Result<i64, EngineError> {
        let row = self
            .db()
            .query_one("SELECT ff_now($1)", &[&self.offset()])
            .await?;
        reply::get(&row, 0)
    }

    async fn complete_call(
        &self,
        request: &CompleteRequest,
    ) -> Result<Vec<tokio_postgres::Row>, EngineError> {
        let fence = &request.fence;
        let claim = request.claim_next.as_ref();
        let (lane, caps, max, ttl, worker) = claim_params(claim);
        let params: [&(dyn ToSql + Sync); 12] = [
            &fence.execution_id.uuid(),
            &part(fence.execution_id.partition()),
            &fence.lease_id.uuid(),
            &epoch_param(fence)?,
            &request.result,
            &self.offset(),
            &self.inline_limit(),
            &lane,
            &caps,
            &max,
            &ttl,
            &worker,
        ];
        self.db()
            .query(
                "SELECT * FROM ff_complete($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &params,
            )
            .await
    }

    /// `complete` of a standalone execution as one plain statement ([`hot_path`]); `None`
    /// when the execution is not one, or its fence does not hold, and `ff_complete` decides.
    async fn complete_standalone(
        &self,
        request: &CompleteRequest,
    ) -> Result<Option<Vec<tokio_postgres::Row>>, EngineError> {
        let fence = &request.fence;
        let id = fence.execution_id;
        // Standalone ids live on the partition of their own UUID, a member's only by chance
        // (the statement then matches nothing: it requires `flow_id IS NULL`).
        if self.partitions().partition_of_uuid(&id.uuid()) != id.partition() {
            return Ok(None);
        }
        let (uuid, partition, lease, epoch) = (
            id.uuid(),
            part(id.partition()),
            fence.lease_id.uuid(),
            epoch_param(fence)?,
        );
        let offset = self.offset();
        let completion: [&(dyn ToSql + Sync); 7] = [
            &uuid,
            &partition,
            &lease,
            &epoch,
            &request.result,
            &offset,
            &RUNNING,
        ];
        let rows = match &request.claim_next {
            None => {
                self.db()
                    .query(&hot_path::COMPLETE_STANDALONE, &completion)
                    .await?
            }
            Some(claim) => {
                let (lane, caps, max, ttl, worker) = claim_params(Some(claim));
                let mut params = completion.to_vec();
                params.extend([&lane as &(dyn ToSql + Sync), &caps, &max, &ttl, &worker]);
                self.db()
                    .query(&hot_path::COMPLETE_STANDALONE_CLAIMING, &params)
                    .await?
            }
        };
        Ok((!rows.is_empty()).then_some(rows))
    }

    async fn fail_call(
        &self,
        request: &FailRequest,
        delay_ms: Option<i64>,
    ) -> Result<Vec<tokio_postgres::Row>, EngineError> {
        let fence = &request.fence;
        let claim = request.claim_next.as_ref();
        let (lane, caps, max, ttl, worker) = claim_params(claim);
        let message = request.failure.stored_message();
        let params: [&(dyn ToSql + Sync); 14] = [
            &fence.execution_id.uuid(),
            &part(fence.execution_id.partition()),
            &fence.lease_id.uuid(),
            &epoch_param(fence)?,
            &message,
            &request.failure.retryable,
            &delay_ms,
            &self.offset(),
            &self.inline_limit(),
            &lane,
            &caps,
            &max,
            &ttl,
            &worker,
        ];
        self.db()
            .query(
                "SELECT * FROM ff_fail($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &params,
            )
            .await
    }

    /// The first row of a worker call's reply, mapped to an error if it is one.
    fn head<'a>(
        rows: &'a [tokio_postgres::Row],
        id: &ExecutionId,
    ) -> Result<&'a tokio_postgres::Row, EngineError> {
        let head = rows
            .first()
            .ok_or_else(|| reply::corrupt("empty reply from a worker call"))?;
        match reply::error(head, id)? {
            Some(err) => Err(err),
            None => Ok(head),
        }
    }

    /// A fenced single-row update (renew, progress): the update decides; when it matches
    /// nothing, one more read classifies why. `$7` is `'running'`, passed as a parameter
    /// rather than written as a literal: the generic plan then cannot use the partial
    /// lease-expiry index (a range scan over the partition's running executions), and probes
    /// the primary key.
    async fn fenced_update(
        &self,
        sql: &str,
        fence: &Fence,
        value: &(dyn ToSql + Sync),
    ) -> Result<Option<i64>, EngineError> {
        self.check_id(&fence.execution_id)?;
        let id = fence.execution_id;
        let epoch = epoch_param(fence)?;
        let rows = self
            .db()
            .query(
                sql,
                &[
                    &id.uuid(),
                    &part(id.partition()),
                    &fence.lease_id.uuid(),
                    &epoch,
                    value,
                    &self.offset(),
                    &RUNNING,
                ],
            )
            .await?;
        if let Some(row) = rows.first() {
            return reply::get(row, 0);
        }
        let row = self
            .db()
            .query_one(
                "SELECT * FROM ff_classify($1, $2, $3, $4, $5)",
                &[
                    &id.uuid(),
                    &part(id.partition()),
                    &fence.lease_id.uuid(),
                    &epoch,
                    &self.offset(),
                ],
            )
            .await?;
        match reply::error(&row, &id)? {
            Some(err) => Err(err),
            // The row changed between the update and the read (it is live now): the fenced
            // update would match if repeated, so report contention and let the caller retry.
            None => Err(EngineError::Contention(format!(
                "execution {id} changed during a fenced write"
            ))),
        }
    }
}

/// The INSERT of `create_execution` (`ready` or `delayed`), after a `now` CTE: a macro so
/// that both statements below are built from one text at compile time.
macro_rules! insert_execution {
    () => {
        "INSERT INTO ff_execution (id, part, state, lane, priority, caps, payload, max_attempts,
             retry, delay_ms, attempt_timeout_ms, deadline_at, created_at, ready_seq,
             available_at)
         SELECT $2, $3, CASE WHEN $10::bigint > 0 THEN 'delayed' ELSE 'ready' END,
             $4, $5, $6, $7, $8, $9, $10, $11, now.t + $12, now.t,
             CASE WHEN $10::bigint > 0 THEN NULL ELSE nextval('ff_ready_seq') END,
             CASE WHEN $10::bigint > 0 THEN now.t + $10 END
         FROM now
         ON CONFLICT (id) DO NOTHING"
    };
}

/// `create_execution`: the INSERT alone.
const CREATE_EXECUTION: &str = concat!(
    "WITH now AS (SELECT ff_now($1) AS t) ",
    insert_execution!(),
    " RETURNING id"
);

/// `create_execution` with hints on: the same INSERT, then the WorkReady hint of a ready
/// execution (`ff_work_hint`: only when its lane had no ready work).
const CREATE_EXECUTION_HINTED: &str = concat!(
    "WITH now AS (SELECT ff_now($1) AS t), created AS (",
    insert_execution!(),
    " RETURNING id, part, lane, state)
     SELECT id, state = 'ready' AND ff_work_hint(part, lane, ARRAY[id]) FROM created"
);

/// A fresh standalone execution id: a time-ordered UUID (v7) on the partition of its own
/// UUID, as `ExecutionId::new_standalone` does with a random one. Time-ordered keys append to
/// the right edge of the primary-key and listing indexes instead of touching random pages,
/// which cuts index page writes (and full-page images in the WAL) per execution.
pub(crate) fn new_standalone_id(config: &PartitionConfig) -> ExecutionId {
    let uuid = uuid::Uuid::now_v7();
    ExecutionId::from_parts(config.partition_of_uuid(&uuid), uuid)
}

/// The epoch as the `epoch` column stores it.
fn epoch_param(fence: &Fence) -> Result<i64, EngineError> {
    i64::try_from(fence.epoch)
        .map_err(|_| EngineError::validation("fence.epoch", "larger than any stored epoch"))
}

type ClaimParams<'a> = (Option<&'a str>, Vec<&'a str>, i32, i64, Option<&'a str>);

/// Parameters of the optional claim-next part of complete / fail (max 0 = claim nothing).
fn claim_params(claim: Option<&ClaimRequest>) -> ClaimParams<'_> {
    match claim {
        Some(claim) => (
            Some(claim.lane.as_str()),
            caps(claim),
            i32::try_from(claim.max).unwrap_or(i32::MAX),
            ms(claim.lease_ttl),
            Some(claim.worker.as_str()),
        ),
        None => (None, Vec::new(), 0, 0, None),
    }
}

/// The `retry` column of a policy: its JSON, or NULL for the default ([`RetryPolicy::none`]),
/// which most executions have (a narrower row: every transition writes a new row version).
pub(crate) fn stored_retry(policy: &RetryPolicy) -> Result<Option<String>, EngineError> {
    if *policy == RetryPolicy::none() {
        return Ok(None);
    }
    serde_json::to_string(policy)
        .map(Some)
        .map_err(|e| EngineError::validation("retry", e.to_string()))
}

/// The policy a `retry` column holds (NULL: the default).
pub(crate) fn read_retry(stored: Option<&str>) -> Result<RetryPolicy, EngineError> {
    match stored {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| reply::corrupt(format!("stored retry policy: {e}"))),
        None => Ok(RetryPolicy::none()),
    }
}

/// The backoff of a retry, computed here with the one formula, `RetryPolicy::delay_after`.
pub(crate) fn retry_delay(stored: Option<&str>, failed_attempt: u32) -> Result<i64, EngineError> {
    let policy = read_retry(stored)?;
    Ok(ms(policy.delay_after(failed_attempt, rand::random::<f64>())))
}

#[async_trait]
impl EngineBackend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_clock_control(true)
            .with_hints(self.inner.config.hints)
            .with_claim_next(true)
            .with_inline_cascade_limit(self.inner.config.inline_cascade_limit)
    }

    fn partition_config(&self) -> PartitionConfig {
        self.partitions()
    }

    async fn now(&self) -> Result<Timestamp, EngineError> {
        Ok(reply::ts(self.clock().await?))
    }

    async fn advance_clock(&self, by: Duration) -> Result<Timestamp, EngineError> {
        self.inner.clock_offset.fetch_add(ms(by), Ordering::Relaxed);
        self.now().await
    }

    async fn health(&self) -> Result<HealthReport, EngineError> {
        let started = Instant::now();
        let row = self
            .db()
            .query_one(
                "SELECT ff_now($1), current_setting('server_version')",
                &[&self.offset()],
            )
            .await?;
        Ok(HealthReport {
            backend: self.name().to_string(),
            server_version: Some(reply::get(&row, 1)?),
            now: reply::ts(reply::get(&row, 0)?),
            latency: started.elapsed(),
        })
    }

    async fn subscribe_hints(&self) -> Result<HintReceiver, EngineError> {
        self.inner.hints.subscribe(self.name()).await
    }

    async fn create_execution(
        &self,
        spec: &ExecutionSpec,
    ) -> Result<CreatedExecution, EngineError> {
        spec.validate("")?;
        // The id is minted once, before the first attempt, and the insert is `ON CONFLICT (id)
        // DO NOTHING`: when a retry after a lost connection repeats an insert whose commit
        // landed, it finds its own row instead of creating a second execution.
        let config = self.partitions();
        let id = match &spec.idempotency_key {
            Some(key) => ExecutionId::for_idempotency_key(key, &config),
            None => new_standalone_id(&config),
        };
        let caps: Vec<&str> = spec
            .required_capabilities
            .iter()
            .map(|c| c.as_str())
            .collect();
        let retry = stored_retry(&spec.retry)?;
        let max_attempts = i32::try_from(spec.retry.max_attempts).unwrap_or(i32::MAX);
        let delay = ms(spec.delay);
        let timeout = spec.attempt_timeout.map(ms);
        let deadline = spec.deadline.map(ms);
        let sql = if self.inner.config.hints {
            CREATE_EXECUTION_HINTED
        } else {
            CREATE_EXECUTION
        };
        let rows = self
            .db()
            .query(
                sql,
                &[
                    &self.offset(),
                    &id.uuid(),
                    &part(id.partition()),
                    &spec.lane.as_str(),
                    &spec.priority,
                    &caps,
                    &spec.payload,
                    &max_attempts,
                    &retry,
                    &delay,
                    &timeout,
                    &deadline,
                ],
            )
            .await?;
        Ok(CreatedExecution {
            id,
            // Without a key the id was minted for this call alone (a v7 UUID, before the first
            // attempt), so a row that already holds it was inserted by an earlier attempt of
            // this same call whose reply was lost: it is this call's execution.
            created: !rows.is_empty() || spec.idempotency_key.is_none(),
        })
    }

    async fn create_flow(&self, spec: &FlowSpec) -> Result<CreatedFlow, EngineError> {
        crate::graph::create_flow(self, spec).await
    }

    async fn add_nodes(
        &self,
        flow: &FlowId,
        patch: &FlowPatch,
    ) -> Result<CreatedFlow, EngineError> {
        crate::graph::add_nodes(self, flow, patch).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>, EngineError> {
        request.validate("")?;
        let caps = caps(request);
        let rows = self
            .db()
            .query(
                &hot_path::CLAIM,
                &[
                    &request.lane.as_str(),
                    &caps,
                    &i32::try_from(request.max).unwrap_or(i32::MAX),
                    &ms(request.lease_ttl),
                    &request.worker.as_str(),
                    &self.offset(),
                ],
            )
            .await?;
        reply::claimed_rows(&rows)
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Timestamp, EngineError> {
        ff_core::policy::check_lease_ttl("ttl", ttl)?;
        let expires = self
            .fenced_update(
                "UPDATE ff_execution SET lease_expires_at = ff_now($6) + $5
                 WHERE id = $1 AND part = $2 AND lease_id = $3 AND epoch = $4
                   AND state = $7::text AND lease_expires_at > ff_now($6)
                 RETURNING lease_expires_at",
                fence,
                &ms(ttl),
            )
            .await?;
        expires
            .map(reply::ts)
            .ok_or_else(|| reply::corrupt("renew returned no expiry"))
    }

    async fn complete(&self, request: &CompleteRequest) -> Result<Completed, EngineError> {
        request.validate()?;
        self.check_id(&request.fence.execution_id)?;
        let rows = match self.complete_standalone(request).await? {
            Some(rows) => rows,
            None => self.complete_call(request).await?,
        };
        let head = Self::head(&rows, &request.fence.execution_id)?;
        if let Some(flow) = reply::finished_flow(head)? {
            self.inner.notifier.flow_finished(flow);
        }
        Ok(Completed {
            next: reply::claimed_rows(&rows[1..])?,
        })
    }

    async fn fail(&self, request: &FailRequest) -> Result<FailOutcome, EngineError> {
        request.validate()?;
        self.check_id(&request.fence.execution_id)?;
        let id = request.fence.execution_id;
        let mut rows = self.fail_call(request, None).await?;
        if reply::code(Self::head(&rows, &id)?)? == "need_delay" {
            let (attempt, retry) = reply::need_delay(&rows[0])?;
            let delay = retry_delay(retry.as_deref(), attempt)?;
            rows = self.fail_call(request, Some(delay)).await?;
        }
        let head = Self::head(&rows, &id)?;
        let disposition = match (reply::code(head)?, reply::raw_available_at(head)?) {
            ("retry", Some(at)) | ("repeat", Some(at)) if at >= 0 => {
                FailDisposition::RetryScheduled {
                    available_at: reply::ts(at),
                }
            }
            ("failed", _) | ("repeat", _) => FailDisposition::Failed,
            (other, _) => {
                return Err(reply::corrupt(format!("unexpected fail reply {other:?}")));
            }
        };
        Ok(FailOutcome {
            disposition,
            next: reply::claimed_rows(&rows[1..])?,
        })
    }

    async fn progress(&self, fence: &Fence, progress: &[u8]) -> Result<(), EngineError> {
        if progress.len() > limits::MAX_PROGRESS_BYTES {
            return Err(EngineError::validation(
                "progress",
                format!(
                    "{} bytes is larger than the limit of {}",
                    progress.len(),
                    limits::MAX_PROGRESS_BYTES
                ),
            ));
        }
        self.fenced_update(
            "UPDATE ff_execution SET progress = $5
             WHERE id = $1 AND part = $2 AND lease_id = $3 AND epoch = $4
               AND state = $7::text AND lease_expires_at > ff_now($6)
             RETURNING epoch",
            fence,
            &progress,
        )
        .await
        .map(|_| ())
    }

    async fn cancel_execution(&self, id: &ExecutionId) -> Result<CancelOutcome, EngineError> {
        self.check_id(id)?;
        let row = self
            .db()
            .query_one(
                "SELECT * FROM ff_cancel_execution($1, $2, $3, $4)",
                &[
                    &id.uuid(),
                    &part(id.partition()),
                    &self.offset(),
                    &self.inline_limit(),
                ],
            )
            .await?;
        match reply::code(&row)? {
            "not_found" => Err(EngineError::execution_not_found(id)),
            "terminal" => Ok(CancelOutcome::AlreadyTerminal(reply::status(&row)?)),
            "cancelled" => Ok(CancelOutcome::Cancelled {
                previous: reply::status(&row)?.state,
            }),
            other => Err(reply::corrupt(format!("unexpected cancel reply {other:?}"))),
        }
    }

    async fn cancel_flow(
        &self,
        flow: &FlowId,
        mode: CancelFlowMode,
    ) -> Result<CancelFlowOutcome, EngineError> {
        let rows = crate::control::cancel_flow_step(self, flow, mode).await?;
        let row = rows.ok_or_else(|| EngineError::flow_not_found(flow))?;
        Ok(CancelFlowOutcome {
            cancelled: row.0,
            deferred: row.1,
            state: row.2,
        })
    }

    async fn change_priority(&self, id: &ExecutionId, priority: i32) -> Result<(), EngineError> {
        ff_core::execution::check_priority("priority", priority)?;
        self.check_id(id)?;
        let rows = self
            .db()
            .query(
                "WITH target AS (
                     SELECT id, state FROM ff_execution WHERE id = $1 AND part = $2 FOR UPDATE
                 ), changed AS (
                     UPDATE ff_execution x SET priority = $3 FROM target
                     WHERE x.id = target.id
                       AND target.state IN ('blocked', 'delayed', 'ready', 'running')
                     RETURNING x.id
                 )
                 SELECT (ff_status(CASE WHEN EXISTS (SELECT 1 FROM changed) THEN 'ok'
                                        ELSE 'inactive' END,
                                   x.id, x.state, x.epoch, x.attempt, x.end_reason, NULL)).*
                 FROM ff_execution x WHERE x.id = $1 AND x.part = $2",
                &[&id.uuid(), &part(id.partition()), &priority],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Err(EngineError::execution_not_found(id));
        };
        match reply::error(row, id)? {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    async fn pending_completions(
        &self,
        partition: Partition,
        limit: u32,
    ) -> Result<Vec<CompletionEvent>, EngineError> {
        crate::dispatch::pending_completions(self, partition, limit).await
    }

    async fn cascade_completion(
        &self,
        event: &CompletionEvent,
    ) -> Result<CascadeProgress, EngineError> {
        crate::dispatch::cascade_completion(self, event).await
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanReport, EngineError> {
        crate::scanner::scan(self, request).await
    }

    async fn due_summary(&self, partitions: &[Partition]) -> Result<DueSummary, EngineError> {
        crate::due::due_summary(self, partitions).await
    }

    async fn heartbeat_instance(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<Vec<InstanceInfo>, EngineError> {
        crate::ownership::heartbeat_instance(self, instance, ttl).await
    }

    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), EngineError> {
        crate::ownership::remove_instance(self, instance).await
    }

    async fn acquire_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
        ttl: Duration,
    ) -> Result<Vec<PartitionGrant>, EngineError> {
        crate::ownership::acquire_partitions(self, instance, partitions, ttl).await
    }

    async fn release_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
    ) -> Result<(), EngineError> {
        crate::ownership::release_partitions(self, instance, partitions).await
    }

    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>, EngineError> {
        crate::ownership::partition_owners(self).await
    }

    async fn describe_execution(&self, id: &ExecutionId) -> Result<ExecutionSnapshot, EngineError> {
        crate::reads::describe_execution(self, id).await
    }

    async fn describe_flow(&self, id: &FlowId) -> Result<FlowSnapshot, EngineError> {
        crate::reads::describe_flow(self, id).await
    }

    async fn list_executions(
        &self,
        query: &ListQuery,
    ) -> Result<Page<ExecutionSummary>, EngineError> {
        crate::reads::list_executions(self, query).await
    }
}
