//! The Redis engine: several hub nodes as one (`--redis URL`).
//!
//! - **Numbering and history in Redis.** A publish is one Lua script on the topic's keys:
//!   it increments the offset, appends the message to the topic's stream (capped at the
//!   history size, expiring after the history TTL) and publishes it on the topic's channel.
//!   A subscription reads the stream, so recovery works on any node, including one started
//!   after the messages were published.
//! - **A channel per topic.** A node subscribes (sharded pub/sub, `SSUBSCRIBE`) to a
//!   topic's channel only while it has subscribers to the topic; it receives nothing of
//!   other topics.
//! - **No silent gaps.** Every message goes through the registry, which notices a jump in
//!   offsets or a new epoch; the shard then reads the missing range from the stream
//!   (`shard.rs`). After a broken connection, every watched topic is repaired that way.
//! - **Shards.** Several `--redis` URLs are independent instances: a topic lives on the
//!   one its name hashes to (CRC16 of the name, as Redis Cluster hashes it, modulo the
//!   number of instances). With `--redis-cluster`, the URL is any node of a Redis Cluster:
//!   the masters and their slots are discovered, and a topic lives on the master of its
//!   slot (its keys share the hash tag `{TOPIC}`).
//! - **Presence** lives in a hash per topic with an expiry per entry, refreshed by the
//!   client's node every third of the presence TTL; entries of a node that died expire
//!   and their `leave` events are sent by the nodes that still refresh the topic.

mod cluster;
pub(crate) mod scripts;
pub(crate) mod shard;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, IntoConnectionInfo, ProtocolVersion, Value};
use tokio_util::sync::CancellationToken;

use self::scripts::{Scripts, TopicKeys};
use self::shard::Shard;
use crate::engine::{
    epoch_suffix, BoxFuture, Broker, BrokerConfig, BrokerError, ClientInfo, ControlCommand,
    NodeInfo, Published, Snapshot, Stored,
};
use crate::metrics::{add, inc, Metrics};
use crate::registry::Registry;
use crate::topic::Topic;
use crate::wire;

/// Where the Redis engine connects.
#[derive(Debug, Clone, Default)]
pub struct RedisConfig {
    /// `redis://HOST:PORT/DB` of each shard (one or more); with `cluster`, any node of the
    /// cluster.
    pub urls: Vec<String>,
    /// The URL is a node of a Redis Cluster: discover its masters and their slots.
    pub cluster: bool,
}

/// A Redis failure, as the engine reports it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RedisFailure {
    /// The shard is not connected now (it is reconnecting).
    #[error("redis {0} is not connected")]
    NotConnected(String),
    /// A command failed.
    #[error("redis: {0}")]
    Command(#[source] Arc<redis::RedisError>),
    /// An answer did not have the expected shape.
    #[error("redis: unexpected answer: {0}")]
    Answer(String),
    /// The configuration cannot work (no URL, a bad URL, a cluster without masters).
    #[error("redis: {0}")]
    Config(String),
}

impl From<redis::RedisError> for RedisFailure {
    fn from(error: redis::RedisError) -> RedisFailure {
        RedisFailure::Command(Arc::new(error))
    }
}

/// What the engine's tasks share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    config: BrokerConfig,
    scripts: Scripts,
}

/// The Redis engine.
#[derive(Debug)]
pub struct RedisBroker {
    inner: Arc<Inner>,
    redis: RedisConfig,
    /// Set by [`Broker::start`].
    shards: std::sync::OnceLock<Routing>,
    /// This node's clients in each topic's presence, refreshed periodically.
    presence: Mutex<HashMap<Topic, BTreeSet<ClientInfo>>>,
    stop: CancellationToken,
}

/// The shards and how topics map to them.
#[derive(Debug)]
struct Routing {
    shards: Vec<Arc<Shard>>,
    /// Redis Cluster: the shard of each of the 16384 slots.
    slots: Option<Vec<u16>>,
}

impl Routing {
    /// The shard of a name's slot.
    fn index(&self, name: &str) -> usize {
        let slot = cluster::slot(name.as_bytes());
        let index = match &self.slots {
            Some(slots) => usize::from(slots[usize::from(slot)]),
            None => usize::from(slot) % self.shards.len(),
        };
        index.min(self.shards.len() - 1)
    }

    fn shard(&self, topic: &Topic) -> &Arc<Shard> {
        &self.shards[self.index(topic.as_str())]
    }

    /// The shard of the control channel and the node keys.
    fn control(&self) -> &Arc<Shard> {
        &self.shards[self.index(scripts::CONTROL_SLOT_NAME)]
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A client for `url` speaking RESP3.
fn resp3_client(url: &str) -> Result<Client, RedisFailure> {
    let mut info = url
        .into_connection_info()
        .map_err(|error| RedisFailure::Config(format!("{url}: {error}")))?;
    info.redis.protocol = ProtocolVersion::RESP3;
    Client::open(info).map_err(|error| RedisFailure::Config(format!("{url}: {error}")))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisBroker {
    /// An engine for `redis`, delivering to `registry`. Nothing connects before
    /// [`Broker::start`].
    pub fn new(
        redis: RedisConfig,
        config: BrokerConfig,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> RedisBroker {
        RedisBroker {
            inner: Arc::new(Inner {
                registry,
                metrics,
                config,
                scripts: Scripts::new(),
            }),
            redis,
            shards: std::sync::OnceLock::new(),
            presence: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
        }
    }

    /// Stops the engine's tasks.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn shard(&self, topic: &Topic) -> Result<&Arc<Shard>, RedisFailure> {
        self.shards
            .get()
            .map(|routing| routing.shard(topic))
            .ok_or_else(|| RedisFailure::NotConnected("(not started)".into()))
    }

    fn connection(&self, topic: &Topic) -> Result<MultiplexedConnection, RedisFailure> {
        self.shard(topic)?.connection()
    }

    async fn publish_now(&self, topic: &Topic, data: &str) -> Result<Published, RedisFailure> {
        let mut connection = self.connection(topic)?;
        let keys = TopicKeys::new(topic);
        let config = &self.inner.config;
        let (offset, epoch): (u64, String) = self
            .inner
            .scripts
            .publish
            .key(&keys.offset)
            .key(&keys.epoch)
            .key(&keys.history)
            .arg(&keys.channel)
            .arg(data)
            .arg(epoch_suffix())
            .arg(config.history_size)
            .arg(millis(config.history_ttl))
            .arg(millis(config.history_meta_ttl.max(config.history_ttl)))
            .invoke_async(&mut connection)
            .await?;
        inc(&self.inner.metrics.messages_in);
        add(&self.inner.metrics.bytes_in, data.len() as u64);
        Ok(Published {
            offset,
            epoch: Arc::from(epoch),
        })
    }

    /// Adds or refreshes this node's presence entries of `topic` (and expires those of dead
    /// nodes).
    async fn refresh_presence(
        &self,
        topic: &Topic,
        clients: &[ClientInfo],
    ) -> Result<(), RedisFailure> {
        let mut connection = self.connection(topic)?;
        let keys = TopicKeys::new(topic);
        let mut invocation = self.inner.scripts.refresh_presence.key(&keys.presence);
        invocation
            .key(&keys.presence_expiry)
            .arg(&keys.channel)
            .arg(millis(self.inner.config.presence_ttl));
        for client in clients {
            invocation.arg(&*client.client).arg(client.to_json());
        }
        let _: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(())
    }

    /// Every third of the presence TTL: refresh this node's entries.
    async fn refresh_loop(self: Arc<Self>) {
        let every = (self.inner.config.presence_ttl / 3).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let topics: Vec<(Topic, Vec<ClientInfo>)> = lock(&self.presence)
                .iter()
                .map(|(topic, clients)| (topic.clone(), clients.iter().cloned().collect()))
                .collect();
            for (topic, clients) in topics {
                if let Err(error) = self.refresh_presence(&topic, &clients).await {
                    tracing::debug!(%error, %topic, "redis: presence not refreshed");
                }
            }
        }
    }

    fn control_connection(&self) -> Result<MultiplexedConnection, RedisFailure> {
        self.shards
            .get()
            .ok_or_else(|| RedisFailure::NotConnected("(not started)".into()))?
            .control()
            .connection()
    }

    /// Every [`HEARTBEAT`]: this node's figures, for the server API's node list.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.heartbeat().await {
                tracing::debug!(%error, "redis: no heartbeat");
            }
        }
    }

    async fn heartbeat(&self) -> Result<(), RedisFailure> {
        let mut connection = self.control_connection()?;
        let info = self.inner.registry.node_info();
        let json = serde_json::to_string(&info).map_err(|e| RedisFailure::Answer(e.to_string()))?;
        let _: i64 = self
            .inner
            .scripts
            .node_beat
            .key(scripts::NODES_KEY)
            .key(scripts::NODES_SEEN_KEY)
            .arg(millis(HEARTBEAT * 3))
            .arg(&info.node)
            .arg(json)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn start_now(self: Arc<Self>) -> Result<(), BrokerError> {
        if self.shards.get().is_none() {
            let started = if self.redis.cluster {
                let seed = self
                    .redis
                    .urls
                    .first()
                    .ok_or_else(|| RedisFailure::Config("no cluster node given".into()))?;
                cluster::discover(seed).await?
            } else {
                if self.redis.urls.is_empty() {
                    return Err(RedisFailure::Config("no Redis URL given".into()).into());
                }
                let mut shards = Vec::new();
                for url in &self.redis.urls {
                    shards.push((url.clone(), resp3_client(url)?));
                }
                shards.into_routing(None)
            };
            let (routing, tasks) = started;
            let control = routing.index(scripts::CONTROL_SLOT_NAME);
            for (index, (shard, commands)) in tasks.into_iter().enumerate() {
                tokio::spawn(shard::run(
                    shard,
                    self.inner.clone(),
                    commands,
                    index == control,
                    self.stop.clone(),
                ));
            }
            let _ = self.shards.set(routing);
            tokio::spawn(self.clone().refresh_loop());
            tokio::spawn(self.clone().heartbeat_loop());
        }
        // Ready once every shard is connected.
        loop {
            if self.is_ready() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Shards made from `(name, client)` pairs, with their command receivers.
type Started = (
    Routing,
    Vec<(
        Arc<Shard>,
        tokio::sync::mpsc::UnboundedReceiver<shard::Command>,
    )>,
);

trait IntoRouting {
    fn into_routing(self, slots: Option<Vec<u16>>) -> Started;
}

impl IntoRouting for Vec<(String, Client)> {
    fn into_routing(self, slots: Option<Vec<u16>>) -> Started {
        let mut shards = Vec::new();
        let mut tasks = Vec::new();
        for (name, client) in self {
            let (shard, commands) = Shard::new(name, client);
            shards.push(shard.clone());
            tasks.push((shard, commands));
        }
        (Routing { shards, slots }, tasks)
    }
}

/// Reads `topic`'s position and the history after `after` (from 0 when `epoch` is not the
/// topic's).
pub(crate) async fn read(
    inner: &Inner,
    connection: &mut MultiplexedConnection,
    topic: &Topic,
    after: u64,
    epoch: Option<&str>,
) -> redis::RedisResult<Snapshot> {
    let keys = TopicKeys::new(topic);
    let config = &inner.config;
    let values: Vec<Value> = inner
        .scripts
        .read
        .key(&keys.offset)
        .key(&keys.epoch)
        .key(&keys.history)
        .arg(after)
        .arg(epoch.unwrap_or(""))
        .arg(epoch_suffix())
        .arg(millis(config.history_ttl))
        .arg(millis(config.history_meta_ttl.max(config.history_ttl)))
        .arg(config.history_size)
        .invoke_async(connection)
        .await?;
    parse_snapshot(topic, &values).ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::TypeError, "unexpected history answer"))
    })
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `{epoch, latest, after, OFFSET, DATA, ...}` as a snapshot with encoded frames.
fn parse_snapshot(topic: &Topic, values: &[Value]) -> Option<Snapshot> {
    let epoch = text(values.first()?)?;
    let latest = number(values.get(1)?)?;
    let after = number(values.get(2)?)?;
    let mut messages = Vec::new();
    for pair in values.get(3..)?.chunks(2) {
        let [offset, data] = pair else { return None };
        let offset = number(offset)?;
        let data = text(data)?;
        messages.push(Stored {
            offset,
            frame: wire::message_frame(topic, offset, data),
        });
    }
    Some(Snapshot {
        epoch: Arc::from(epoch),
        latest,
        after,
        messages,
    })
}

/// How often a node writes its figures; a node not heard of for three times this is gone.
const HEARTBEAT: Duration = Duration::from_secs(5);

impl Broker for RedisBroker {
    fn start(self: Arc<Self>) -> BoxFuture<'static, Result<(), BrokerError>> {
        Box::pin(self.start_now())
    }

    fn publish<'a>(
        &'a self,
        topic: &'a Topic,
        data: &'a str,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        Box::pin(async move { Ok(self.publish_now(topic, data).await?) })
    }

    fn read<'a>(
        &'a self,
        topic: &'a Topic,
        after: u64,
        epoch: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Snapshot, BrokerError>> {
        Box::pin(async move {
            let mut connection = self.connection(topic)?;
            read(&self.inner, &mut connection, topic, after, epoch)
                .await
                .map_err(|error| BrokerError::from(RedisFailure::from(error)))
        })
    }

    fn watch<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.shard(topic)?.watch(topic).await?;
            Ok(())
        })
    }

    fn unwatch(&self, topic: &Topic) {
        if let Ok(shard) = self.shard(topic) {
            shard.unwatch(topic);
        }
    }

    fn join<'a>(
        &'a self,
        topic: &'a Topic,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            lock(&self.presence)
                .entry(topic.clone())
                .or_default()
                .insert(client.clone());
            self.refresh_presence(topic, std::slice::from_ref(client))
                .await?;
            Ok(())
        })
    }

    fn leave<'a>(
        &'a self,
        topic: &'a Topic,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            {
                let mut presence = lock(&self.presence);
                if let Some(clients) = presence.get_mut(topic) {
                    clients.remove(client);
                    if clients.is_empty() {
                        presence.remove(topic);
                    }
                }
            }
            let mut connection = self.connection(topic)?;
            let keys = TopicKeys::new(topic);
            let _: i64 = self
                .inner
                .scripts
                .leave_presence
                .key(&keys.presence)
                .key(&keys.presence_expiry)
                .arg(&keys.channel)
                .arg(&*client.client)
                .invoke_async(&mut connection)
                .await
                .map_err(RedisFailure::from)?;
            Ok(())
        })
    }

    fn presence<'a>(
        &'a self,
        topic: &'a Topic,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, BrokerError>> {
        Box::pin(async move {
            let mut connection = self.connection(topic)?;
            let keys = TopicKeys::new(topic);
            let values: Vec<String> = self
                .inner
                .scripts
                .list_presence
                .key(&keys.presence)
                .key(&keys.presence_expiry)
                .arg(&keys.channel)
                .invoke_async(&mut connection)
                .await
                .map_err(RedisFailure::from)?;
            let mut clients: Vec<ClientInfo> = values
                .iter()
                .filter_map(|json| ClientInfo::from_json(json))
                .collect();
            clients.sort();
            Ok(clients)
        })
    }

    fn control<'a>(
        &'a self,
        command: &'a ControlCommand,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let mut connection = self.control_connection()?;
            let json =
                serde_json::to_string(command).map_err(|e| RedisFailure::Answer(e.to_string()))?;
            let nodes: usize = redis::cmd("SPUBLISH")
                .arg(scripts::CONTROL_CHANNEL)
                .arg(json)
                .query_async(&mut connection)
                .await
                .map_err(RedisFailure::from)?;
            Ok(nodes)
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BrokerError>> {
        Box::pin(async move {
            // This node's own figures are fresh; the others' are from their last heartbeat.
            self.heartbeat().await?;
            let mut connection = self.control_connection()?;
            let values: Vec<String> = self
                .inner
                .scripts
                .list_nodes
                .key(scripts::NODES_KEY)
                .key(scripts::NODES_SEEN_KEY)
                .arg(millis(HEARTBEAT * 3))
                .invoke_async(&mut connection)
                .await
                .map_err(RedisFailure::from)?;
            let mut nodes: Vec<NodeInfo> = values
                .iter()
                .filter_map(|json| serde_json::from_str(json).ok())
                .collect();
            nodes.sort_by(|a, b| a.node.cmp(&b.node));
            Ok(nodes)
        })
    }

    fn is_ready(&self) -> bool {
        self.shards
            .get()
            .is_some_and(|routing| routing.shards.iter().all(|shard| shard.is_ready()))
    }

    fn topic_count(&self) -> usize {
        self.inner.registry.topic_count()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_from_script_answers() {
        let topic = Topic::new("t").unwrap_or_else(|e| panic!("{e}"));
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let values = [
            bulk("e1"),
            Value::Int(5),
            Value::Int(3),
            bulk("4"),
            bulk("\"four\""),
            bulk("5"),
            bulk("5"),
        ];
        let snapshot = parse_snapshot(&topic, &values).unwrap_or_else(|| panic!("parsed"));
        assert_eq!(
            (&*snapshot.epoch, snapshot.latest, snapshot.after),
            ("e1", 5, 3)
        );
        let offsets: Vec<u64> = snapshot.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [4, 5]);
        assert_eq!(
            snapshot.messages[0].frame,
            wire::message_frame(&topic, 4, "\"four\"")
        );
        assert!(parse_snapshot(&topic, &values[..6]).is_none(), "odd pairs");
        assert!(parse_snapshot(&topic, &values[..2]).is_none());
    }

    #[test]
    fn topics_spread_over_shards_by_their_slot() {
        let shards: Vec<(String, Client)> = (0..2)
            .map(|i| {
                let url = format!("redis://127.0.0.1:{}/", 7000 + i);
                (
                    url.clone(),
                    resp3_client(&url).unwrap_or_else(|e| panic!("{e}")),
                )
            })
            .collect();
        let (routing, _) = shards.into_routing(None);
        let mut counts = [0; 2];
        for n in 0..100 {
            let topic = Topic::new(&format!("topic-{n}")).unwrap_or_else(|e| panic!("{e}"));
            let shard = routing.shard(&topic);
            let index = usize::from(shard.name.ends_with("7001/"));
            counts[index] += 1;
            // Stable: the same topic, the same shard.
            assert!(Arc::ptr_eq(shard, routing.shard(&topic)));
        }
        assert!(counts.iter().all(|&c| c > 25), "{counts:?}");
    }
}
