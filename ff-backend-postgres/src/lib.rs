//! FlowFabric's [`EngineBackend`](ff_core::EngineBackend) over PostgreSQL (DESIGN §7).
//!
//! ```no_run
//! # async fn run() -> Result<(), ff_core::EngineError> {
//! use ff_backend_postgres::{PostgresBackend, PostgresConfig};
//! let backend = PostgresBackend::connect(
//!     PostgresConfig::new("postgres://postgres@127.0.0.1:5432/postgres").with_schema("flowfabric"),
//! )
//! .await?;
//! # let _ = backend; Ok(()) }
//! ```
//!
//! # Design
//!
//! - **Schema and migrations** ([`migrate`]): SQL files under `migrations/`, compiled in,
//!   applied in order under an advisory lock, recorded in `ff_schema_version`; a schema newer
//!   than the code, or a different partition count, is refused with `EngineError::Config`.
//!   Each deployment (or conformance case) lives in its own schema: every pooled connection
//!   starts with `search_path` set to it, so statements and server-side functions are written
//!   unqualified and prepared once per connection.
//! - **Tables**: `ff_execution` (one row per execution: one `state` column whose domain
//!   checks its value, the partition number, the current attempt, the dependency group of
//!   flow members and the finished attempts as a JSON history), `ff_flow` (exact counters),
//!   the flow membership (node key → execution, written once per member), `ff_edge` (with
//!   the `applied` mark of chunked cascades), `ff_completion` (the outbox),
//!   `ff_cancel_backlog`, `ff_instance`, `ff_partition_owner`, `ff_meta`. Migration 3 says
//!   why the value checks are domains rather than table CHECKs (a table's CHECKs are rebuilt
//!   for every write statement; a domain's are cached). Partial indexes serve the claim path
//!   (ready, by lane, priority, FIFO sequence) and each deadline (lease expiry, delayed,
//!   attempt timeout, execution deadline, retention).
//! - **One round trip per call**: worker and control calls are single statements, most of
//!   them server-side plpgsql functions (`ff_complete`, `ff_fail`, ...) that do the fence
//!   check, the transition, the flow counters, the completion record or inline cascade, and
//!   the claim of the next executions in one transaction. The hottest calls — `claim`, and
//!   `complete` of a standalone execution — are plain statements instead (`hot_path.rs`): a
//!   function call's interpreter and nested executors cost a fifth of such a `complete`. The
//!   backoff of a retry is computed here with `RetryPolicy::delay_after` and passed in (a
//!   worker `fail` with a retry due therefore takes a second round trip: the first answers
//!   the attempt and policy).
//! - **Claim** is one `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING`, with
//!   the capability subset test in SQL (`caps <@ $worker_caps`); it bumps the epoch and starts
//!   the attempt.
//! - **Fencing** compares the epoch, the lease id and the lease expiry against
//!   `clock_timestamp()` inside the transaction that takes effect.
//! - **Cascade**: every terminal transition of a flow member counts it in its flow and, in the
//!   same transaction, either applies its outgoing edges inline (out-degree ≤
//!   `inline_cascade_limit`, breadth first; a downstream this makes ready in the worker's
//!   lane is leased first by the same call's `claim_next`) or writes its completion to the
//!   outbox, which `cascade_completion` drains in chunks with per-edge `applied` marks.
//! - **Wake-up hints** (`LISTEN/NOTIFY`, on by default): WorkReady only when a lane goes from
//!   no ready work to some, FlowFinished of `complete` sent after the commit — a `NOTIFY`
//!   serializes commits server-wide, so the busy paths send none (see `PostgresConfig::hints`).
//! - **Contention**: serialization failures and deadlocks are retried with jittered backoff,
//!   then reported as `EngineError::Contention`; lost connections are retried on a fresh
//!   pooled connection, then reported as a retryable `Transport` error.
//! - **Clock**: every statement reads `clock_timestamp()` plus a per-instance offset that only
//!   `advance_clock` moves (tests).

mod backend;
mod config;
mod control;
mod db;
mod dispatch;
mod due;
mod graph;
mod hints;
mod hot_path;
pub mod migrate;
mod ownership;
mod pg_error;
mod reads;
mod reply;
mod scanner;

pub use backend::PostgresBackend;
pub use config::{DEFAULT_SCHEMA, PostgresConfig, check_schema_name};
