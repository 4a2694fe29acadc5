//! `LISTEN/NOTIFY` wake-ups (DESIGN §4, contract item 4: hints only, never the source of
//! truth).
//!
//! With `hints: true`, hints go out on the channel `flowfabric_<schema>`:
//!
//! - `w:<partition>:<lane>` (WorkReady): from the transaction that makes work ready, and only
//!   when its lane had no ready work before (`ff_work_hint`). A lane with ready work has
//!   workers claiming from it; an idle lane's workers are woken at once. So under load no
//!   transaction sends one.
//! - `c:<partition>` (CompletionPending): from the transaction that writes a completion to
//!   the outbox (fan-outs above the inline limit).
//! - `f:<flow id>` (FlowFinished): after `complete` finishes a flow, from this client once the
//!   transaction committed, batched by the [`Notifier`]; other paths that finish a flow
//!   (failures, cancels, scanners) send it from their transaction.
//!
//! Why the care: a `NOTIFY` takes a server-wide lock that its transaction holds until it
//! commits, so notifying transactions commit one at a time. Measured on this backend's bench,
//! single-node flows ran at about half the throughput when every flow finish sent its own.
//!
//! The first `subscribe_hints` starts one listener task on a dedicated connection (not from
//! the pool: a pooled connection is shared); it reconnects with backoff after a lost
//! connection and sends [`Hint::Lagged`] so consumers sweep.

use std::sync::Mutex;
use std::time::Duration;

use ff_core::{EngineError, FlowId, Hint, HintReceiver, Lane, Partition};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::config::PostgresConfig;
use crate::db::Db;

/// Most hints one NOTIFY statement of the [`Notifier`] sends.
const NOTIFY_BATCH: usize = 1024;

/// Sends hints from this client after the transactions they announce committed: one
/// statement for all the hints queued meanwhile, on a pooled connection, from a task started
/// on first use. Best effort: a hint that cannot be sent is dropped (consumers sweep).
#[derive(Debug)]
pub(crate) struct Notifier {
    enabled: bool,
    db: Db,
    channel: String,
    sender: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl Notifier {
    pub(crate) fn new(config: &PostgresConfig, db: Db) -> Self {
        Notifier {
            enabled: config.hints,
            db,
            channel: format!("flowfabric_{}", config.schema_name()),
            sender: Mutex::new(None),
        }
    }

    /// Queues a FlowFinished hint (nothing with hints off).
    pub(crate) fn flow_finished(&self, flow: FlowId) {
        self.send(format!("f:{flow}"));
    }

    fn send(&self, payload: String) {
        if !self.enabled {
            return;
        }
        let Ok(mut sender) = self.sender.lock() else {
            return;
        };
        if let Some(tx) = sender.as_ref()
            && tx.send(payload.clone()).is_ok()
        {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(payload);
        tokio::spawn(notify_loop(self.db.clone(), self.channel.clone(), rx));
        *sender = Some(tx);
    }
}

/// Sends what is queued, a batch per statement, until the notifier is dropped.
async fn notify_loop(db: Db, channel: String, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < NOTIFY_BATCH {
            match rx.try_recv() {
                Ok(payload) => batch.push(payload),
                Err(_) => break,
            }
        }
        let sent = db
            .query(
                "SELECT count(*) FROM (SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p) n",
                &[&channel, &batch],
            )
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, dropped = batch.len(), "could not send hints");
        }
        batch.clear();
    }
}

/// The hint listener of one backend instance, started on first subscription.
#[derive(Debug)]
pub(crate) struct Hints {
    enabled: bool,
    pg: tokio_postgres::Config,
    channel: String,
    state: Mutex<Option<(broadcast::Sender<Hint>, JoinHandle<()>)>>,
}

impl Hints {
    pub(crate) fn new(config: &PostgresConfig) -> Result<Self, EngineError> {
        Ok(Hints {
            enabled: config.hints,
            pg: crate::db::pg_config(config)?,
            channel: format!("flowfabric_{}", config.schema_name()),
            state: Mutex::new(None),
        })
    }

    /// A new receiver; starts the listener on first use and returns once it is listening (or
    /// after a few seconds, when the server cannot be reached: the listener keeps trying).
    pub(crate) async fn subscribe(
        &self,
        backend: &'static str,
    ) -> Result<HintReceiver, EngineError> {
        let (receiver, ready) = self.start(backend)?;
        if let Some(ready) = ready {
            let _ = tokio::time::timeout(Duration::from_secs(5), ready).await;
        }
        Ok(receiver)
    }

    #[allow(clippy::type_complexity)]
    fn start(
        &self,
        backend: &'static str,
    ) -> Result<(HintReceiver, Option<oneshot::Receiver<()>>), EngineError> {
        if !self.enabled {
            return Err(EngineError::Unavailable {
                operation: "subscribe_hints",
                backend,
            });
        }
        let mut state = self
            .state
            .lock()
            .map_err(|_| EngineError::Corrupt("hint listener lock poisoned".into()))?;
        if let Some((sender, task)) = state.as_ref()
            && !task.is_finished()
        {
            return Ok((HintReceiver::new(sender.subscribe()), None));
        }
        let (sender, receiver) = broadcast::channel(1024);
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(listen(
            self.pg.clone(),
            self.channel.clone(),
            sender.clone(),
            ready_tx,
        ));
        *state = Some((sender, task));
        Ok((HintReceiver::new(receiver), Some(ready_rx)))
    }
}

impl Drop for Hints {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock()
            && let Some((_, task)) = state.take()
        {
            task.abort();
        }
    }
}

/// Listens until every receiver is gone, reconnecting after failures.
async fn listen(
    pg: tokio_postgres::Config,
    channel: String,
    sender: broadcast::Sender<Hint>,
    ready: oneshot::Sender<()>,
) {
    let mut failures = 0u32;
    let mut ready = Some(ready);
    while sender.receiver_count() > 0 {
        match listen_once(&pg, &channel, &sender, &mut ready).await {
            Ok(()) => failures = 0,
            Err(err) => {
                failures += 1;
                tracing::warn!(error = %err, "hint listener lost its connection");
            }
        }
        let _ = sender.send(Hint::Lagged);
        tokio::time::sleep(Duration::from_millis(50 * u64::from(failures.min(40)))).await;
    }
}

async fn listen_once(
    pg: &tokio_postgres::Config,
    channel: &str,
    sender: &broadcast::Sender<Hint>,
    ready: &mut Option<oneshot::Sender<()>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = pg.connect(NoTls).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    if tx.send(note.payload().to_string()).is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await?;
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    // After (re)connecting anything may have been missed.
    let _ = sender.send(Hint::Lagged);
    while let Some(payload) = rx.recv().await {
        if sender.receiver_count() == 0 {
            break;
        }
        if let Some(hint) = parse(&payload) {
            let _ = sender.send(hint);
        }
    }
    driver.abort();
    Ok(())
}

/// Parses a notification payload.
fn parse(payload: &str) -> Option<Hint> {
    let (kind, rest) = payload.split_once(':')?;
    match kind {
        "c" => Some(Hint::CompletionPending {
            partition: Partition(rest.parse().ok()?),
        }),
        "f" => Some(Hint::FlowFinished {
            flow_id: rest.parse::<FlowId>().ok()?,
        }),
        "w" => {
            let (partition, lane) = rest.split_once(':')?;
            Some(Hint::WorkReady {
                partition: Partition(partition.parse().ok()?),
                lane: Lane::new(lane).ok()?,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(
            parse("c:12"),
            Some(Hint::CompletionPending {
                partition: Partition(12)
            })
        );
        let flow = FlowId::new();
        assert_eq!(
            parse(&format!("f:{flow}")),
            Some(Hint::FlowFinished { flow_id: flow })
        );
        assert_eq!(parse("zzz"), None);
    }
}
