//! Wake-up hints (DESIGN §4, contract item 4): the library publishes on each partition's hint
//! channel (`ff:<ns>:{fp:N}:hints`, in the partition's slot) when a lane's ready set becomes
//! non-empty (`w|<lane>`), a flow finishes (`f|<flow>`) or a completion is left pending (`c`).
//! On a cluster these are shard channels (`SPUBLISH` / `SSUBSCRIBE`), on a standalone server
//! plain ones. One dedicated RESP3 connection per backend instance subscribes to every
//! partition's channel (on first `subscribe_hints`) and fans the messages out to every
//! receiver. Hints are lossy: a dropped connection or a lagging receiver costs latency only.

use std::str::FromStr;

use ff_core::{EngineError, FlowId, Hint, Lane, Partition};
use redis::aio::ConnectionManagerConfig;
use redis::cluster::ClusterClient;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::config::ValkeyConfig;
use crate::connection::{Idempotent, map_error};

/// A running subscription: the fan-out sender and the task that feeds it.
#[derive(Debug)]
pub(crate) struct HintFeed {
    pub(crate) sender: broadcast::Sender<Hint>,
    task: JoinHandle<()>,
}

impl Drop for HintFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects the dedicated subscriber connection, subscribes to `channels` and starts the
/// fan-out task. Returns once the subscriptions are in place, so every hint published after
/// it reaches the receivers (unless the connection drops).
pub(crate) async fn start(
    config: &ValkeyConfig,
    channels: Vec<String>,
) -> Result<HintFeed, EngineError> {
    let urls = config.validated_urls()?;
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<PushInfo>();
    let (sender, _) = broadcast::channel(4096);
    let keep_alive: Box<dyn std::any::Any + Send> = if config.cluster {
        let client = ClusterClient::builder(urls)
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(push_tx)
            .connection_timeout(config.connection_timeout)
            .build()
            .map_err(|e| EngineError::Config(format!("invalid cluster configuration: {e}")))?;
        let mut conn = client
            .get_async_connection()
            .await
            .map_err(|e| map_error("connecting the hint subscriber", e, Idempotent::Yes))?;
        for channel in &channels {
            conn.ssubscribe(channel)
                .await
                .map_err(|e| map_error("subscribing to hints", e, Idempotent::Yes))?;
        }
        Box::new(conn)
    } else {
        let url = &urls[0];
        let url = if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}?protocol=resp3")
        };
        let client = redis::Client::open(url.as_str())
            .map_err(|e| EngineError::Config(format!("invalid Valkey URL: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_push_sender(push_tx)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(config.connection_timeout));
        let mut conn = client
            .get_connection_manager_with_config(manager_config)
            .await
            .map_err(|e| map_error("connecting the hint subscriber", e, Idempotent::Yes))?;
        conn.subscribe(&channels)
            .await
            .map_err(|e| map_error("subscribing to hints", e, Idempotent::Yes))?;
        Box::new(conn)
    };
    let fan_out = sender.clone();
    let task = tokio::spawn(async move {
        let _keep_alive = keep_alive;
        while let Some(push) = push_rx.recv().await {
            if let Some(hint) = parse(&push) {
                // No receiver right now is fine: hints are wake-ups.
                let _ = fan_out.send(hint);
            }
        }
    });
    Ok(HintFeed { sender, task })
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `(channel, message)` of a pub/sub push → a hint.
fn parse(push: &PushInfo) -> Option<Hint> {
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return None;
    }
    let channel = text(push.data.first())?;
    let message = text(push.data.get(1))?;
    let index = channel.split("{fp:").nth(1)?.split('}').next()?;
    let partition = Partition(index.parse().ok()?);
    match message.split_once('|') {
        Some(("w", lane)) => Some(Hint::WorkReady {
            partition,
            lane: Lane::new(lane).ok()?,
        }),
        Some(("f", flow)) => Some(Hint::FlowFinished {
            flow_id: FlowId::from_str(flow).ok()?,
        }),
        None if message == "c" => Some(Hint::CompletionPending { partition }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: PushKind, channel: &str, message: &str) -> PushInfo {
        PushInfo {
            kind,
            data: vec![
                Value::BulkString(channel.as_bytes().to_vec()),
                Value::BulkString(message.as_bytes().to_vec()),
            ],
        }
    }

    #[test]
    fn messages_become_hints() {
        let ch = "ff:ns:{fp:7}:hints";
        assert_eq!(
            parse(&push(PushKind::SMessage, ch, "w|emails")),
            Some(Hint::WorkReady {
                partition: Partition(7),
                lane: Lane::new("emails").expect("lane"),
            })
        );
        assert_eq!(
            parse(&push(PushKind::Message, ch, "c")),
            Some(Hint::CompletionPending {
                partition: Partition(7)
            })
        );
        let flow = FlowId::new();
        assert_eq!(
            parse(&push(PushKind::Message, ch, &format!("f|{flow}"))),
            Some(Hint::FlowFinished { flow_id: flow })
        );
        assert_eq!(parse(&push(PushKind::Subscribe, ch, "c")), None);
        assert_eq!(parse(&push(PushKind::Message, ch, "bogus")), None);
    }
}
