//! The bare ceilings: the simplest queue an expert would build on the same server, doing
//! the same logical work as the flat workload, measured in the same run.
//!
//! Both follow one rule, so the ratio is honest: the same payloads (4 KiB, incompressible),
//! the same number of tasks, the same 16 producers submitting one task per call, the same 16
//! workers. A worker pops up to `claim_batch` (8) tasks at a time and acks each task as soon
//! as it is done; the ack of the last task in its hands travels in the same round trip as its
//! next pop of up to 8 (a pipeline on Valkey, one statement on Postgres). That is what
//! `complete` with `claim_next` does for our workers, only more aggressively batched (our
//! workers lease one execution with each `complete`, so as not to hoard ready work): if
//! anything, the ceiling is tuned harder than the backend. Nothing a durable queue must do is
//! skipped, and nothing more is done: no leases, no attempts, no indexes beyond the one the
//! pop needs.
//!
//! Each runs twice per run: popping up to 8 tasks per call (`valkey-bare`, `postgres-bare`:
//! the ceilings of the DESIGN §9 bars), and popping one task per call (`valkey-bare-1`,
//! `postgres-bare-1`: every task then costs one round trip that acks it and pops the next,
//! exactly the steady state of our workers). The second is the like-for-like comparison of
//! the per-execution cost; the first is what the server can do as a queue at best.
//!
//! On Valkey a third one runs: the Lua floor (`valkey-lua`), the same drain through a minimal
//! function library whose tasks are leased and fenced like executions (see
//! [`valkey_queue`]). It judges no bar; it shows how much of the distance between the engine
//! and the list queue comes from doing leases in Valkey functions at all, which the Valkey
//! backend's design (one FCALL per operation) cannot avoid.
//!
//! Figures (keys `ceiling.*`): submissions/s, tasks/s of the drain, pop → ack latency
//! p50/p99, CPU per task of the bench process and of the server, WAL bytes per task
//! (Postgres).

pub mod pg_queue;
pub mod valkey_queue;

/// Which ceiling a bench step measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ceiling {
    /// The server's bare queue, popping up to this many tasks per call.
    Bare(u32),
    /// The Valkey Lua floor (`valkey-lua`, see [`valkey_queue`]), popping up to this many.
    LuaFloor(u32),
}
