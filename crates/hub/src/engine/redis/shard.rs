//! One Redis instance (a shard, or a Redis Cluster master): its connection and the task
//! that keeps it.
//!
//! The connection speaks RESP3, so one multiplexed connection carries the commands and the
//! sharded subscriptions (their messages come as pushes). The shard's task owns the set of
//! watched topics: it subscribes and unsubscribes in the order asked (batched into one
//! pipeline), delivers every message to the registry, and repairs gaps by reading the
//! history. When the connection breaks it reconnects with a growing pause (at most 5 s),
//! subscribes again to every watched topic and repairs each from the history, so that no
//! message published meanwhile is skipped silently.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::scripts::{channel, topic_of_channel, CONTROL_CHANNEL};
use super::{Inner, RedisFailure};
use crate::engine::{ClientInfo, ControlCommand};
use crate::metrics::add;
use crate::registry::{Applied, Delivery};
use crate::topic::Topic;
use crate::wire;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between reconnection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// What the shard's task is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Subscribe to the topic's channel; answer once subscribed.
    Watch(Topic, oneshot::Sender<Result<(), RedisFailure>>),
    /// Unsubscribe from it.
    Unwatch(Topic),
}

/// One Redis instance.
#[derive(Debug)]
pub(crate) struct Shard {
    /// `HOST:PORT`, for messages.
    pub name: String,
    client: Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    commands: mpsc::UnboundedSender<Command>,
    ready: AtomicBool,
}

impl Shard {
    /// A shard for `client` (RESP3) and the receiving end of its commands, for
    /// [`run`].
    pub(crate) fn new(
        name: String,
        client: Client,
    ) -> (Arc<Shard>, mpsc::UnboundedReceiver<Command>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let shard = Arc::new(Shard {
            name,
            client,
            connection: Mutex::new(None),
            commands,
            ready: AtomicBool::new(false),
        });
        (shard, receiver)
    }

    /// The connection, when there is one.
    pub(crate) fn connection(&self) -> Result<MultiplexedConnection, RedisFailure> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| RedisFailure::NotConnected(self.name.clone()))
    }

    fn set_connection(&self, connection: Option<MultiplexedConnection>) {
        self.ready.store(connection.is_some(), Ordering::Release);
        *self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = connection;
    }

    /// Whether the shard is connected and subscribed.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Asks the task to subscribe to `topic`; resolves once subscribed.
    pub(crate) async fn watch(&self, topic: &Topic) -> Result<(), RedisFailure> {
        let (answer, answered) = oneshot::channel();
        self.commands
            .send(Command::Watch(topic.clone(), answer))
            .map_err(|_| RedisFailure::NotConnected(self.name.clone()))?;
        answered
            .await
            .map_err(|_| RedisFailure::NotConnected(self.name.clone()))?
    }

    /// Asks the task to unsubscribe from `topic`.
    pub(crate) fn unwatch(&self, topic: &Topic) {
        let _ = self.commands.send(Command::Unwatch(topic.clone()));
    }
}

/// Keeps the shard connected until `stop`: subscriptions, delivery, repairs, reconnects.
pub(crate) async fn run(
    shard: Arc<Shard>,
    inner: Arc<Inner>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    control: bool,
    stop: CancellationToken,
) {
    let mut watched: HashSet<Topic> = HashSet::new();
    let mut pause = Duration::from_millis(100);
    loop {
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_push_sender(push_tx);
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            connected = shard.client.get_multiplexed_async_connection_with_config(&config) => connected,
        };
        let session = async {
            let mut connection = connected?;
            // Every topic watched before the break, in one pipeline (and the server API's
            // channel on its shard).
            subscribe_all(&mut connection, watched.iter(), control).await?;
            shard.set_connection(Some(connection.clone()));
            tracing::info!(shard = %shard.name, topics = watched.len(), "redis: connected");
            // Whatever was published while this node was not subscribed.
            for topic in &watched {
                repair(&inner, &mut connection, topic).await?;
            }
            Ok::<_, redis::RedisError>(connection)
        };
        let mut connection = match session.await {
            Ok(connection) => connection,
            Err(error) => {
                shard.set_connection(None);
                tracing::warn!(shard = %shard.name, %error, "redis: cannot connect");
                if !wait_refusing(&mut commands, &mut watched, &shard, &stop, pause).await {
                    return;
                }
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        };
        pause = Duration::from_millis(100);
        let ended = loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                push = pushes.recv() => match push {
                    None => break "the connection ended".to_owned(),
                    Some(push) if push.kind == PushKind::Disconnection => {
                        break "the connection broke".to_owned()
                    }
                    Some(push) => {
                        if let Err(error) = on_push(&inner, &mut connection, push).await {
                            break error.to_string();
                        }
                    }
                },
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let mut batch = vec![command];
                    while let Ok(command) = commands.try_recv() {
                        batch.push(command);
                    }
                    if let Err(error) = apply_commands(&mut connection, &mut watched, batch).await {
                        break error.to_string();
                    }
                }
            }
        };
        shard.set_connection(None);
        tracing::warn!(shard = %shard.name, reason = %ended, "redis: reconnecting");
    }
}

/// While disconnected: answers watches with an error (nothing is subscribed), takes note of
/// unwatches, for `pause`. False when the engine stops.
async fn wait_refusing(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    watched: &mut HashSet<Topic>,
    shard: &Shard,
    stop: &CancellationToken,
    pause: Duration,
) -> bool {
    let sleep = tokio::time::sleep(pause);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = &mut sleep => return true,
            command = commands.recv() => match command {
                None => return false,
                Some(Command::Watch(_, answer)) => {
                    let _ = answer.send(Err(RedisFailure::NotConnected(shard.name.clone())));
                }
                Some(Command::Unwatch(topic)) => {
                    watched.remove(&topic);
                }
            },
        }
    }
}

/// Subscribes to the channels of `topics`, one `SSUBSCRIBE` each, in one pipeline.
async fn subscribe_all<'a>(
    connection: &mut MultiplexedConnection,
    topics: impl Iterator<Item = &'a Topic>,
    control: bool,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    if control {
        pipe.cmd("SSUBSCRIBE").arg(CONTROL_CHANNEL);
    }
    for topic in topics {
        pipe.cmd("SSUBSCRIBE").arg(channel(topic));
    }
    if pipe.is_empty() {
        return Ok(());
    }
    pipe.exec_async(connection).await
}

/// Carries out a batch of watches and unwatches in order, in one pipeline, then answers the
/// watches.
async fn apply_commands(
    connection: &mut MultiplexedConnection,
    watched: &mut HashSet<Topic>,
    batch: Vec<Command>,
) -> Result<(), RedisFailure> {
    let mut pipe = redis::pipe();
    let mut answers = Vec::new();
    for command in batch {
        match command {
            Command::Watch(topic, answer) => {
                pipe.cmd("SSUBSCRIBE").arg(channel(&topic));
                watched.insert(topic);
                answers.push(answer);
            }
            Command::Unwatch(topic) => {
                pipe.cmd("SUNSUBSCRIBE").arg(channel(&topic));
                watched.remove(&topic);
            }
        }
    }
    let result = pipe
        .exec_async(connection)
        .await
        .map_err(|error| RedisFailure::Command(Arc::new(error)));
    for answer in answers {
        let _ = answer.send(result.clone());
    }
    result
}

/// Handles one push: a message or a presence event of a watched topic.
async fn on_push(
    inner: &Inner,
    connection: &mut MultiplexedConnection,
    push: PushInfo,
) -> redis::RedisResult<()> {
    if push.kind != PushKind::SMessage && push.kind != PushKind::Message {
        return Ok(());
    }
    let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
        (push.data.first(), push.data.get(1))
    else {
        return Ok(());
    };
    if name.as_slice() == CONTROL_CHANNEL.as_bytes() {
        match serde_json::from_slice::<ControlCommand>(payload) {
            Ok(command) => {
                inner.registry.control(&command);
            }
            Err(error) => tracing::warn!(%error, "redis: malformed control command"),
        }
        return Ok(());
    }
    let Some(topic) = topic_of_channel(name) else {
        tracing::warn!("redis: message on an unknown channel");
        return Ok(());
    };
    add(&inner.metrics.engine_bytes_in, payload.len() as u64);
    let Ok(payload) = std::str::from_utf8(payload) else {
        tracing::warn!(%topic, "redis: message that is not UTF-8");
        return Ok(());
    };
    match parse_payload(payload) {
        Some(Payload::Message {
            offset,
            epoch,
            data,
        }) => {
            let frame = wire::message_frame(&topic, offset, data);
            match inner.registry.deliver(&topic, epoch, offset, &frame) {
                Delivery::Repair { .. } => repair(inner, connection, &topic).await?,
                Delivery::Unwatched => {
                    add(&inner.metrics.engine_unwanted_bytes, payload.len() as u64);
                }
                Delivery::Delivered(_) | Delivery::Skipped => {}
            }
        }
        Some(Payload::Presence { join, client }) => {
            let frame = wire::presence_event_frame(&topic, &client, join);
            inner.registry.presence_event(&topic, &frame);
        }
        None => tracing::warn!(%topic, "redis: malformed channel message"),
    }
    Ok(())
}

/// Reads the topic's history after this node's position and hands it to the registry,
/// which delivers what is missing (or reports it lost).
async fn repair(
    inner: &Inner,
    connection: &mut MultiplexedConnection,
    topic: &Topic,
) -> redis::RedisResult<()> {
    for _ in 0..3 {
        let (after, epoch) = match inner.registry.position(topic) {
            Some((epoch, last)) => (last, Some(epoch)),
            None => return Ok(()),
        };
        let snapshot = super::read(inner, connection, topic, after, epoch.as_deref()).await?;
        match inner.registry.apply(topic, &snapshot) {
            Applied::NotCovered => continue,
            Applied::Current | Applied::Repaired | Applied::Stale => return Ok(()),
        }
    }
    Ok(())
}

/// A channel message.
#[derive(Debug, PartialEq, Eq)]
enum Payload<'a> {
    /// `OFFSET EPOCH DATA`.
    Message {
        offset: u64,
        epoch: &'a str,
        data: &'a str,
    },
    /// `J JSON` or `L JSON`.
    Presence { join: bool, client: ClientInfo },
}

fn parse_payload(payload: &str) -> Option<Payload<'_>> {
    if let Some(json) = payload.strip_prefix("J ") {
        return Some(Payload::Presence {
            join: true,
            client: ClientInfo::from_json(json)?,
        });
    }
    if let Some(json) = payload.strip_prefix("L ") {
        return Some(Payload::Presence {
            join: false,
            client: ClientInfo::from_json(json)?,
        });
    }
    let mut parts = payload.splitn(3, ' ');
    let offset = parts.next()?.parse().ok()?;
    let epoch = parts.next()?;
    let data = parts.next()?;
    Some(Payload::Message {
        offset,
        epoch,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_payloads() {
        assert_eq!(
            parse_payload(r#"12 e1 {"a": "b c"}"#),
            Some(Payload::Message {
                offset: 12,
                epoch: "e1",
                data: r#"{"a": "b c"}"#
            })
        );
        assert!(matches!(
            parse_payload(r#"J {"client":"n-1","user":null}"#),
            Some(Payload::Presence { join: true, .. })
        ));
        assert!(matches!(
            parse_payload(r#"L {"client":"n-1","user":"ann"}"#),
            Some(Payload::Presence { join: false, .. })
        ));
        assert_eq!(parse_payload("x e 1"), None);
        assert_eq!(parse_payload("1 e"), None);
        assert_eq!(parse_payload("J nope"), None);
    }
}
