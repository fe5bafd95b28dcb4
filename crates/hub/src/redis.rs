//! Several hub nodes as one, through Redis (`--redis URL`).
//!
//! Redis numbers the messages: a node publishes with one Lua script that increments the
//! topic's offset (`fdx:offset:TOPIC`), reads or creates its epoch (`fdx:epoch:TOPIC`) and
//! publishes `OFFSET EPOCH DATA` on the channel `fdx:t:TOPIC`, all atomically, so the order
//! of offsets is the order in which every node receives the messages. Every node
//! pattern-subscribes to `fdx:t:*` and delivers what arrives to its own subscribers
//! ([`Broker::deliver`](crate::Broker::deliver)), its own publications included. Offsets and
//! epochs are therefore the same on every node, and a client may recover on any node. If
//! Redis loses its data, the epoch key is gone and the next publish starts a new epoch.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{Client, Script};

use crate::broker::new_epoch;
use crate::topic::Topic;
use crate::Hub;

/// The channel pattern every node subscribes to.
const CHANNEL_PATTERN: &str = "fdx:t:*";
const CHANNEL_PREFIX: &str = "fdx:t:";

/// KEYS: offset, epoch, channel. ARGV: data, a fresh epoch in case the topic has none.
const PUBLISH_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[1], 0)
end
local offset = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', KEYS[3], offset .. ' ' .. epoch .. ' ' .. ARGV[1])
return {offset, epoch}
";

/// KEYS: offset, epoch. ARGV: a fresh epoch in case the topic has none.
const POSITION_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[1], 0)
end
local offset = tonumber(redis.call('GET', KEYS[1]) or '0')
return {offset, epoch}
";

/// A Redis failure.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(#[from] redis::RedisError);

/// The node's connection to Redis for publishing and reading topic positions.
#[derive(Clone)]
pub struct RedisBus {
    client: Client,
    connection: MultiplexedConnection,
    publish: Script,
    position: Script,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisBus")
    }
}

fn keys(topic: &Topic) -> (String, String, String) {
    (
        format!("fdx:offset:{topic}"),
        format!("fdx:epoch:{topic}"),
        format!("{CHANNEL_PREFIX}{topic}"),
    )
}

impl RedisBus {
    /// Connects to `url` (`redis://host:port/db`).
    pub async fn connect(url: &str) -> Result<RedisBus, RedisError> {
        let client = Client::open(url)?;
        let connection = client.get_multiplexed_async_connection().await?;
        Ok(RedisBus {
            client,
            connection,
            publish: Script::new(PUBLISH_SCRIPT),
            position: Script::new(POSITION_SCRIPT),
        })
    }

    /// Publishes `data` to `topic` for every node; returns its offset and epoch.
    pub async fn publish(&self, topic: &Topic, data: &str) -> Result<(u64, String), RedisError> {
        let (offset_key, epoch_key, channel) = keys(topic);
        let mut connection = self.connection.clone();
        let (offset, epoch): (u64, String) = self
            .publish
            .key(offset_key)
            .key(epoch_key)
            .key(channel)
            .arg(data)
            .arg(&*new_epoch())
            .invoke_async(&mut connection)
            .await?;
        Ok((offset, epoch))
    }

    /// The topic's latest offset and epoch.
    pub async fn position(&self, topic: &Topic) -> Result<(u64, String), RedisError> {
        let (offset_key, epoch_key, _) = keys(topic);
        let mut connection = self.connection.clone();
        let (offset, epoch): (u64, String) = self
            .position
            .key(offset_key)
            .key(epoch_key)
            .arg(&*new_epoch())
            .invoke_async(&mut connection)
            .await?;
        Ok((offset, epoch))
    }
}

/// Splits a channel message into topic, offset, epoch and data.
fn parse(channel: &str, payload: &str) -> Option<(Topic, u64, String, String)> {
    let topic = Topic::new(channel.strip_prefix(CHANNEL_PREFIX)?).ok()?;
    let mut parts = payload.splitn(3, ' ');
    let offset = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.to_owned();
    let data = parts.next()?.to_owned();
    Some((topic, offset, epoch, data))
}

/// Receives every node's messages from Redis and delivers them here, reconnecting (with a
/// growing pause, at most 5 s) when the connection breaks, until the hub shuts down.
pub async fn run_subscriber(hub: Arc<Hub>, bus: RedisBus) {
    let mut pause = Duration::from_millis(100);
    let shutdown = hub.shutdown_token().clone();
    loop {
        let session = async {
            let mut pubsub = bus.client.get_async_pubsub().await?;
            pubsub.psubscribe(CHANNEL_PATTERN).await?;
            hub.redis_ready();
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let channel = message.get_channel_name().to_owned();
                let payload: String = match message.get_payload() {
                    Ok(payload) => payload,
                    Err(_) => continue,
                };
                match parse(&channel, &payload) {
                    Some((topic, _, _, _)) if hub.is_reserved(topic.as_str()) => {}
                    Some((topic, offset, epoch, data)) => {
                        if let Err(error) = hub.broker().deliver(&topic, offset, &epoch, &data) {
                            tracing::warn!(%error, %topic, "redis: cannot deliver");
                        }
                    }
                    None => tracing::warn!(channel, "redis: malformed message"),
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = session => match result {
                Ok(()) => tracing::warn!("redis: subscription ended, reconnecting"),
                Err(error) => tracing::warn!(%error, "redis: subscription failed, reconnecting"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages() {
        let parsed = parse("fdx:t:chat", r#"12 e1 {"a": "b c"}"#);
        let (topic, offset, epoch, data) = parsed.unwrap_or_else(|| panic!("parsed"));
        assert_eq!(
            (topic.as_str(), offset, epoch.as_str(), data.as_str()),
            ("chat", 12, "e1", r#"{"a": "b c"}"#)
        );
        assert!(parse("other:chat", "1 e 1").is_none());
        assert!(parse("fdx:t:bad topic", "1 e 1").is_none());
        assert!(parse("fdx:t:chat", "x e 1").is_none());
        assert!(parse("fdx:t:chat", "1 e").is_none());
    }
}
