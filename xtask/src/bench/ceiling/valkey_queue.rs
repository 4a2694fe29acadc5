//! The Valkey ceilings: the bare list queue, and the Lua floor — each on one multiplexed
//! connection (a `ConnectionManager` with the timeouts of `ValkeyBackend`: its connection
//! model) shared by every producer and worker.
//!
//! - [`Ceiling::Bare`] (`valkey-bare`, `valkey-bare-1`): `RPUSH` to submit, `LMPOP … COUNT n`
//!   to take a batch, `INCR` of a done counter to ack. `LMPOP`, not the blocking `BLMPOP`: a
//!   blocking pop would stall every other request on the shared multiplexed connection, and
//!   the queue is filled before the drain starts, so an empty pop means the worker is done.
//!   A worker's last ack and next pop go in one explicit pipeline.
//! - [`Ceiling::LuaFloor`] (`valkey-lua`): the same drain through the function library
//!   `valkey_floor.lua` — tasks leased and fenced on the server's clock, as executions are,
//!   and nothing more (see the library's header). A worker's last ack claims its next tasks
//!   in the same call, as `complete` with `claim_next` does. It is not a bar's ceiling: it
//!   measures how much of the distance between the engine and the list queue any
//!   function-based design with leases must cover.
//!
//! Concurrent requests on the connection are pipelined by the client.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ff_backend_valkey::ValkeyConfig;
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::JoinSet;

use crate::bench::ceiling::Ceiling;
use crate::bench::resources::{
    Meter, command_stats, reset_command_stats, usage, valkey_forks, valkey_quiesce,
};
use crate::bench::stats::Latency;
use crate::bench::target::{delete_matching, fresh_name, valkey_admin};
use crate::bench::workload::{Figures, PAYLOAD_BYTES, SETTLE_LIMIT, Shape, payload, produce, rate};

/// The function library of the Lua floor.
const FLOOR_LIBRARY: &str = include_str!("valkey_floor.lua");
/// Its name (the `#!lua name=` of its first line).
const FLOOR_LIBRARY_NAME: &str = "ffbench_floor";
/// The lease the floor's claims take, in ms: far longer than any drain.
const FLOOR_LEASE_MS: u64 = 600_000;

/// An `LMPOP` reply: the list and the popped payloads, if any.
type Popped = Option<(String, Vec<Vec<u8>>)>;

/// Which queue a Valkey ceiling runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// The bare list queue: `RPUSH` / `LMPOP` / `INCR`.
    List,
    /// The Lua floor: leased, fenced tasks through `valkey_floor.lua`.
    Functions,
}

/// A task in a worker's hands.
enum Task {
    /// A list queue's task (its payload was read and dropped: the work is a no-op).
    Listed,
    /// A leased task of the floor: its id and epoch (the fence of its ack).
    Leased { id: Vec<u8>, epoch: i64 },
}

/// The commands of one flavor, on one queue.
struct Queue {
    flavor: Flavor,
    /// Key prefix of everything this run writes.
    prefix: String,
    /// The list queue's list.
    list: String,
    /// The list queue's done counter.
    done: String,
    worker: String,
    batch: u32,
}

impl Queue {
    fn new(flavor: Flavor, prefix: String, batch: u32) -> Queue {
        Queue {
            flavor,
            list: format!("{prefix}queue"),
            done: format!("{prefix}done"),
            worker: format!("{prefix}worker"),
            prefix,
            batch,
        }
    }

    /// Submits task number `n` (unique within the run).
    fn push(&self, n: u64, payload: &[u8]) -> redis::Cmd {
        match self.flavor {
            Flavor::List => {
                let mut cmd = redis::cmd("RPUSH");
                cmd.arg(&self.list).arg(payload);
                cmd
            }
            Flavor::Functions => {
                let mut cmd = redis::cmd("FCALL");
                cmd.arg("ffbench_push")
                    .arg(1)
                    .arg(&self.prefix)
                    .arg(n)
                    .arg(payload);
                cmd
            }
        }
    }

    /// Takes up to `batch` tasks.
    async fn pop(&self, con: &mut ConnectionManager) -> anyhow::Result<Vec<Task>> {
        match self.flavor {
            Flavor::List => {
                let popped: Popped = self.lmpop().query_async(con).await.context("LMPOP")?;
                Ok(list_tasks(popped))
            }
            Flavor::Functions => {
                let mut cmd = redis::cmd("FCALL");
                cmd.arg("ffbench_claim")
                    .arg(1)
                    .arg(&self.prefix)
                    .arg(&self.worker)
                    .arg(self.batch)
                    .arg(FLOOR_LEASE_MS);
                let reply: Vec<Value> = cmd.query_async(con).await.context("FCALL claim")?;
                leased_tasks(reply)
            }
        }
    }

    /// Acks `task`; with `then_pop`, takes the next batch in the same round trip.
    async fn ack(
        &self,
        con: &mut ConnectionManager,
        task: Task,
        then_pop: bool,
    ) -> anyhow::Result<Vec<Task>> {
        match task {
            Task::Listed if then_pop => {
                let (_, popped): (u64, Popped) = redis::pipe()
                    .cmd("INCR")
                    .arg(&self.done)
                    .add_command(self.lmpop())
                    .query_async(con)
                    .await
                    .context("INCR + LMPOP")?;
                Ok(list_tasks(popped))
            }
            Task::Listed => {
                let _: u64 = redis::cmd("INCR")
                    .arg(&self.done)
                    .query_async(con)
                    .await
                    .context("INCR")?;
                Ok(Vec::new())
            }
            Task::Leased { id, epoch } => {
                let mut cmd = redis::cmd("FCALL");
                cmd.arg("ffbench_ack")
                    .arg(1)
                    .arg(&self.prefix)
                    .arg(id)
                    .arg(epoch)
                    .arg(if then_pop { self.batch } else { 0 })
                    .arg(&self.worker)
                    .arg(FLOOR_LEASE_MS);
                let reply: Vec<Value> = cmd.query_async(con).await.context("FCALL ack")?;
                leased_tasks(reply)
            }
        }
    }

    fn lmpop(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("LMPOP");
        cmd.arg(1)
            .arg(&self.list)
            .arg("LEFT")
            .arg("COUNT")
            .arg(self.batch);
        cmd
    }

    /// How many tasks were acked.
    async fn acked(&self, con: &mut ConnectionManager) -> anyhow::Result<u64> {
        Ok(match self.flavor {
            Flavor::List => redis::cmd("GET")
                .arg(&self.done)
                .query_async::<Option<u64>>(con)
                .await
                .context("GET the done counter")?
                .unwrap_or(0),
            Flavor::Functions => redis::cmd("ZCARD")
                .arg(format!("{}done", self.prefix))
                .query_async(con)
                .await
                .context("ZCARD of the done set")?,
        })
    }
}

fn list_tasks(popped: Popped) -> Vec<Task> {
    popped
        .into_iter()
        .flat_map(|(_, items)| items)
        .map(|_payload| Task::Listed)
        .collect()
}

/// Parses a floor reply: a status, then id, epoch, payload per claimed task.
fn leased_tasks(reply: Vec<Value>) -> anyhow::Result<Vec<Task>> {
    let mut values = reply.into_iter();
    match values.next() {
        Some(Value::BulkString(status)) if status == b"ok" => {}
        other => bail!("the Lua floor answered {other:?}, not ok"),
    }
    let mut tasks = Vec::new();
    while let Some(id) = values.next() {
        let (Value::BulkString(id), Some(Value::Int(epoch)), Some(Value::BulkString(_payload))) =
            (id, values.next(), values.next())
        else {
            bail!("the Lua floor answered a malformed claim");
        };
        tasks.push(Task::Leased { id, epoch });
    }
    Ok(tasks)
}

/// Runs `ceiling` with `n` tasks on the Valkey at `url`.
pub async fn run(url: &str, shape: Shape, n: u64, ceiling: Ceiling) -> anyhow::Result<Figures> {
    let (flavor, batch) = match ceiling {
        Ceiling::Bare(batch) => (Flavor::List, batch),
        Ceiling::LuaFloor(batch) => (Flavor::Functions, batch),
    };
    let client = redis::Client::open(url).with_context(|| format!("invalid Valkey URL {url}"))?;
    // The connection settings of `ValkeyBackend` (ValkeyConfig's defaults).
    let defaults = ValkeyConfig::standalone(url);
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(defaults.connection_timeout))
        .set_response_timeout(Some(defaults.response_timeout));
    let con = ConnectionManager::new_with_config(client, config)
        .await
        .with_context(|| format!("connecting to Valkey at {url}"))?;
    let mut admin = valkey_admin(url).await?;
    if flavor == Flavor::Functions {
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(FLOOR_LIBRARY)
            .query_async(&mut admin)
            .await
            .context("FUNCTION LOAD of the Lua floor")?;
    }
    let prefix = format!("{}:", fresh_name('-'));
    let queue = Arc::new(Queue::new(flavor, prefix.clone(), batch));
    let outcome = measure(url, con, &mut admin, &queue, shape, n).await;
    delete_matching(&mut admin, &format!("{prefix}*")).await?;
    if flavor == Flavor::Functions {
        let _: () = redis::cmd("FUNCTION")
            .arg("DELETE")
            .arg(FLOOR_LIBRARY_NAME)
            .query_async(&mut admin)
            .await
            .context("FUNCTION DELETE of the Lua floor")?;
    }
    outcome
}

/// Submits `n` tasks, then drains them with `shape.workers` workers.
async fn measure(
    url: &str,
    con: ConnectionManager,
    admin: &mut redis::aio::MultiplexedConnection,
    queue: &Arc<Queue>,
    shape: Shape,
    n: u64,
) -> anyhow::Result<Figures> {
    let payload = Arc::new(payload(PAYLOAD_BYTES));
    let mut meter = Meter::valkey(url).await?;
    let mut figures = Figures::default();

    // Submit: producers push one task per call.
    let before = meter.read().await?;
    let started = Instant::now();
    produce(n, shape.producers, |p, share| {
        let (mut con, queue, payload) = (con.clone(), queue.clone(), payload.clone());
        async move {
            for i in 0..share {
                let _: u64 = queue
                    .push(p * n + i, &payload)
                    .query_async(&mut con)
                    .await
                    .context("submitting a task")?;
            }
            Ok(())
        }
    })
    .await?;
    figures.put("ceiling.submit_per_s", rate(n, started.elapsed()));
    let after = meter.read().await?;
    figures.put_opt(
        "ceiling.submit_server_cpu_us",
        usage(&before, &after, n).server_cpu_us,
    );

    // Drain, once the server is done with what the submissions made it do (as `settle`).
    valkey_quiesce(admin, SETTLE_LIMIT).await?;
    reset_command_stats(admin).await?;
    let forks_before = valkey_forks(admin).await?;
    let before = meter.read().await?;
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..shape.workers {
        workers.spawn(worker(con.clone(), queue.clone()));
    }
    let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut last = started;
    while let Some(joined) = workers.join_next().await {
        let (samples, finished) = joined.context("a worker panicked")??;
        latencies.extend(samples);
        last = last.max(finished);
    }
    let after = meter.read().await?;
    let elapsed = last.saturating_duration_since(started);

    let done = queue.acked(&mut con.clone()).await?;
    ensure!(done == n, "the queue acked {done} of {n} tasks");
    figures.put("ceiling.exec_per_s", rate(n, elapsed));
    if let Some(latency) = Latency::of(&mut latencies) {
        figures.put("ceiling.latency_p50_ms", latency.p50_ms);
        figures.put("ceiling.latency_p99_ms", latency.p99_ms);
    }
    let drain_usage = usage(&before, &after, n);
    figures.put_opt("ceiling.server_cpu_us", drain_usage.server_cpu_us);
    figures.put_opt("ceiling.client_cpu_us", drain_usage.client_cpu_us);

    figures.notes.push(format!(
        "Valkey server time per task (drain): {}; forks (AOF rewrites) during the drain: {}",
        command_stats(admin, n).await?,
        valkey_forks(admin).await? - forks_before
    ));
    Ok(figures)
}

/// Pops batches and acks each task; returns the pop → ack latencies and when the last ack
/// returned.
async fn worker(
    mut con: ConnectionManager,
    queue: Arc<Queue>,
) -> anyhow::Result<(Vec<Duration>, Instant)> {
    let mut hands: VecDeque<(Task, Instant)> = VecDeque::new();
    let mut latencies = Vec::new();
    let mut last = Instant::now();
    let now = Instant::now();
    hands.extend(queue.pop(&mut con).await?.into_iter().map(|t| (t, now)));
    while let Some((task, popped_at)) = hands.pop_front() {
        let then_pop = hands.is_empty();
        let popped = queue.ack(&mut con, task, then_pop).await?;
        let now = Instant::now();
        latencies.push(now.saturating_duration_since(popped_at));
        last = now;
        hands.extend(popped.into_iter().map(|t| (t, now)));
    }
    Ok((latencies, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_reply_lists_its_leased_tasks() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let tasks = leased_tasks(vec![bulk("ok"), bulk("7"), Value::Int(2), bulk("payload")])
            .expect("a well-formed reply");
        assert!(matches!(
            tasks.as_slice(),
            [Task::Leased { id, epoch: 2 }] if id == b"7"
        ));
        assert!(leased_tasks(vec![bulk("fenced")]).is_err());
        assert!(leased_tasks(vec![bulk("ok"), bulk("7"), Value::Int(2)]).is_err());
    }
}
