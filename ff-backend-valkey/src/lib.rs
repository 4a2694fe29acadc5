//! FlowFabric's [`ff_core::EngineBackend`] over Valkey (DESIGN §7), standalone or cluster.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ff_core::EngineError> {
//! use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
//! let backend = ValkeyBackend::connect(
//!     ValkeyConfig::standalone("redis://127.0.0.1:6379").with_namespace("prod"),
//! )
//! .await?;
//! # let _ = backend; Ok(()) }
//! ```
//!
//! # How it works
//!
//! - **One function library** (`#!lua name=flowfabric`, `src/lua/flowfabric.lua`), versioned
//!   (`<major>.<source digest>`), loaded on every master at connect (replacing an older one,
//!   refusing a newer major), and reloaded when a call finds it missing after a failover or
//!   `FUNCTION FLUSH`. Every operation is **one FCALL** whose keys all carry one partition's
//!   `{fp:N}` tag: the caller passes the partition prefix as the only key and the function
//!   derives the rest (Valkey permits undeclared keys of the same slot, also on a cluster).
//! - **Keys per execution**: one hash `x:<uuid>` (state, lease, attempt, spec; values up to 63
//!   bytes stay inside it, so it remains a compact listpack), plus `x:<uuid>:p` / `:r` / `:g`
//!   for a payload, result or progress larger than that, and `x:<uuid>:att` for attempts
//!   before the latest one (only after a retry). Per partition: ready sets per lane (and per
//!   capability set), delayed, leases, attempt timeouts, deadlines, terminal (retention),
//!   pending completions, cancel backlog, the creation index `all` (listing) and the FIFO
//!   sequence — see [`ff_core::keys`].
//! - **Time** is the server's `TIME` plus a per-backend-instance offset that
//!   [`ff_core::EngineBackend::advance_clock`] moves (0 unless a test moves it).
//! - **Cascade** (DESIGN §4): the terminal transition of a flow member cascades in the same
//!   FCALL when its out-degree is at most [`INLINE_CASCADE_LIMIT`] (and the call's edge budget
//!   allows); otherwise it is recorded in the partition's `completions` set and applied by
//!   `cascade_completion` in chunks of 256 edges, each edge exactly once (per-edge applied
//!   marks set with `HSETNX`), the record retired after the last chunk.
//! - **Hot path**: `claim` leases up to `max` executions in one FCALL; `complete` / `fail`
//!   with `claim_next` claim the worker's next executions on the same partition in the same
//!   FCALL — after the inline cascade, so a chain costs one round trip per node. Claims across
//!   partitions use a per-lane index of partitions with work (see the `claim` module docs).
//! - **Hints**: the library publishes wake-ups on each partition's channel; `subscribe_hints`
//!   opens one dedicated RESP3 subscriber connection per backend instance (see `hints`).

mod backend;
mod claim;
mod config;
mod connection;
mod decode;
mod encode;
mod hints;
pub mod library;
mod reply;

pub use backend::{CallCounts, INLINE_CASCADE_LIMIT, ValkeyBackend};
pub use config::ValkeyConfig;
