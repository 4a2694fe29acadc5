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
//! - **Keys per execution**: one hash `x:<uuid>` (state, lease, attempt, spec; fields at their
//!   default are not written, values up to 63 bytes stay inside it so it remains a compact
//!   listpack), plus `x:<uuid>:p` / `:r` / `:g` for a payload, result or progress larger than
//!   that, and `x:<uuid>:att` for attempts before the latest one (only after a retry). A
//!   finished execution with a 100 B payload takes about 0.7 KiB. Per partition: ready sets per
//!   lane (and per capability set), delayed (all, and per lane), leases, attempt timeouts,
//!   deadlines, terminal (retention), pending completions, cancel backlog, every flow
//!   (`flows`), the lanes with work (`lanes`), capability sets per lane and the FIFO sequence;
//!   per lane, the index of partitions with work — see [`ff_core::keys`]. There is no index of
//!   every execution: listing walks the index of the state asked for (blocked and finished
//!   flow members through their flows).
//! - **Time** is the server's `TIME` plus a per-backend-instance offset that
//!   [`ff_core::EngineBackend::advance_clock`] moves (0 unless a test moves it).
//! - **Cascade** (DESIGN §4): the terminal transition of a flow member cascades in the same
//!   FCALL when its out-degree is at most [`INLINE_CASCADE_LIMIT`] (and the call's edge budget
//!   allows); otherwise it is recorded in the partition's `completions` set and applied by
//!   `cascade_completion` in chunks of 256 edges, each edge exactly once (per-edge applied
//!   marks set with `HSETNX`), the record retired after the last chunk. A member's out-edges
//!   are kept in its own hash, so the inline cascade reads them with the fence check.
//! - **Hot path**: `create_execution` is one FCALL of 7 commands; `claim` leases up to `max`
//!   executions in one FCALL; `complete` / `fail` with `claim_next` claim the worker's next
//!   executions in the same FCALL — on the same partition first, after the inline cascade, and
//!   on a standalone server then on other partitions of the lane index. So a flat execution
//!   costs 2 FCALLs (create, complete-and-claim-next) and a chain node about 1.05 (its
//!   complete-and-claim-next; the rest is the occasional claim when a worker's partition runs
//!   dry). Scripts read hashes with `HMGET` of the fields they need and write each with one
//!   `HSET`; the lane index, the `lanes` set and the hints are touched only on transitions (a
//!   ready set going from empty to non-empty, a claim finding a lane empty), never in the
//!   steady state of a busy lane. See the `claim` module docs for the lane index.
//! - **Hints**: the library publishes wake-ups on each partition's channel on those
//!   transitions, when a flow finishes and when a completion is left pending;
//!   `subscribe_hints` opens one dedicated RESP3 subscriber connection per backend instance
//!   (see `hints`).
//!
//! # Where the time goes
//!
//! Measured with `benches/hot_path.rs`, which prints each hot operation's server time, server
//! CPU, commands and (with the server under callgrind) server instructions next to a bare
//! `RPUSH`/`BLMPOP` list queue on the same server. On Valkey 9 every command a function runs
//! passes through the scripting engine's module API (a string object per argument, the reply
//! parsed back into Lua values) and costs about as many server instructions as a whole
//! client round trip of a simple command; every string entering Lua is hashed in full (a 4 KiB
//! payload on the way in and on the way out). So the library keeps each hot operation near
//! its minimum of commands (create 7, complete 5, claim 7–8, a chain node's
//! complete-and-claim-next about 19 with its inline cascade), and the rest of the gap to a
//! bare list queue is the price of doing that work atomically in a script: a flat execution
//! costs the server roughly 20 times the instructions of a bare push and pop.

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
