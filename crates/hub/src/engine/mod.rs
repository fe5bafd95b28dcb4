//! The engine behind the hub: numbering (offsets, epochs), history, delivery between nodes
//! and presence, behind one trait, [`Broker`].
//!
//! Two engines implement it: [`MemoryBroker`] (one process, the embedded default) and
//! [`RedisBroker`] (several nodes through Redis: history in Redis streams, a channel per
//! topic, gap repair, shards, Redis Cluster). An engine hands what it numbers to the node's
//! [`Registry`](crate::registry::Registry), which fans it out to this node's subscribers;
//! nothing above the trait knows which engine runs.

pub mod memory;
pub mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::topic::Topic;

pub use memory::MemoryBroker;
pub use redis::{RedisBroker, RedisConfig, RedisFailure};

/// A boxed future, so that [`Broker`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A topic's epoch: changes whenever its numbering restarts (and its history is lost).
///
/// Epochs made by this crate are 8 hex digits of seconds and 5 of microseconds since 1970,
/// then 8 random ones, so that a later epoch of a topic compares greater
/// ([`epoch_is_newer`]).
pub type Epoch = Arc<str>;

/// Limits and retention of the engine, the same for every engine.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Messages kept per topic for recovery.
    pub history_size: usize,
    /// How long a message is kept for recovery.
    pub history_ttl: Duration,
    /// How long Redis keeps a topic's offset and epoch after its last publish.
    pub history_meta_ttl: Duration,
    /// Most topics that may exist at once (in-process engine), and most topics with
    /// subscribers on one node. A topic counts while it has subscribers, history or
    /// presence: one that holds none of these is forgotten at once (when its last
    /// subscriber leaves) or at the next sweep (when its history expires).
    pub max_topics: usize,
    /// Most topics one connection may create (subscribe to while nobody on this node does)
    /// in a burst; it may create `new_topics_per_connection` more every `new_topics_window`
    /// (a token bucket). More are refused with the error `topic_rate_limited`. 0: no limit.
    /// Default 20 per 10 s: at most 20 topics at once and 2 a second after that, so that
    /// 1,000 connections no longer fill 100,000 topics in seconds.
    pub new_topics_per_connection: u32,
    /// See [`BrokerConfig::new_topics_per_connection`]. Default 10 s.
    pub new_topics_window: Duration,
    /// After a sweep of the in-process engine forgot at least 1 MiB of history, ask the
    /// allocator to give free memory back to the system (glibc's `malloc_trim(0)`; nothing
    /// elsewhere). Default on: glibc otherwise keeps what a flood of large messages took
    /// long after the history expired (RELIABILITY.md).
    pub return_memory: bool,
    /// How long a presence entry lives unless its node refreshes it (every third of this):
    /// the bound within which the clients of a node that died leave presence.
    pub presence_ttl: Duration,
    /// Most bytes of messages the in-process engine keeps in all topics' histories
    /// together; past it the oldest messages (of any topic) are forgotten. With Redis the
    /// history is in Redis, bounded by its own `maxmemory`.
    pub history_memory: usize,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            history_meta_ttl: Duration::from_secs(24 * 3600),
            max_topics: 100_000,
            new_topics_per_connection: 20,
            new_topics_window: Duration::from_secs(10),
            return_memory: true,
            presence_ttl: Duration::from_secs(30),
            history_memory: 256 << 20,
        }
    }
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's offset in its topic.
    pub offset: u64,
    /// The topic's epoch.
    pub epoch: Epoch,
}

/// One stored message: its offset and its encoded `message` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The offset.
    pub offset: u64,
    /// The `{"type":"message",...}` frame, unmasked, ready to queue.
    pub frame: Bytes,
}

/// A topic's position and the history after some offset, read from the engine at one
/// moment ([`Broker::read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The topic's epoch.
    pub epoch: Epoch,
    /// Its latest offset (0: nothing published in this epoch).
    pub latest: u64,
    /// The offset the messages follow: the one asked for, or 0 when the epoch asked for
    /// was not the topic's.
    pub after: u64,
    /// The messages held with offsets above `after`, in order, consecutive, ending at
    /// `latest` (the history may have lost the first ones).
    pub messages: Vec<Stored>,
}

impl Snapshot {
    /// Whether the messages hold every offset in `from + 1 ..= latest`.
    pub fn covers_from(&self, from: u64) -> bool {
        if from < self.after {
            return false;
        }
        if from >= self.latest {
            return true;
        }
        self.messages.first().is_some_and(|m| m.offset <= from + 1)
    }
}

/// A client in a topic's presence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientInfo {
    /// The connection's id, unique in the cluster (`NODE-N`).
    pub client: Arc<str>,
    /// The user (the token's `sub`), if known.
    pub user: Option<Arc<str>>,
}

impl ClientInfo {
    /// `{"client":ID,"user":U}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({"client": &*self.client, "user": self.user.as_deref()}).to_string()
    }

    /// Parses [`ClientInfo::to_json`]'s output.
    pub fn from_json(text: &str) -> Option<ClientInfo> {
        #[derive(serde::Deserialize)]
        struct Raw {
            client: String,
            user: Option<String>,
        }
        let raw: Raw = serde_json::from_str(text).ok()?;
        Some(ClientInfo {
            client: Arc::from(raw.client),
            user: raw.user.map(Arc::from),
        })
    }
}

/// A command of the server API for connections on every node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ControlCommand {
    /// Close the connections of `user`, or the connection `client`, with `code` and
    /// `reason`.
    Disconnect {
        /// Every connection of this user (the token's `sub`).
        #[serde(default)]
        user: Option<String>,
        /// The connection with this id.
        #[serde(default)]
        client: Option<String>,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Unsubscribe every connection of `user` from `topic`.
    Unsubscribe {
        /// The user.
        user: String,
        /// The topic.
        topic: String,
    },
}

/// A node of the cluster, as the server API reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// The node's id (the first part of its clients' ids).
    pub node: String,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Subscriptions of those connections.
    pub subscriptions: u64,
    /// Topics with subscribers on the node.
    pub topics: u64,
}

/// Why the engine refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The topic does not exist and [`BrokerConfig::max_topics`] are in use.
    #[error("too many topics")]
    TooManyTopics,
    /// The engine cannot be reached (Redis is down): nothing was stored.
    #[error("the engine is unavailable: {0}")]
    Unavailable(#[from] RedisFailure),
}

/// The engine: numbering, history, delivery between nodes, presence.
///
/// Delivery to this node's subscribers goes through the [`Registry`](crate::registry::Registry)
/// the engine was built with: an engine calls its `deliver` for every message of a topic it
/// watches, in offset order per topic, and `apply` with a [`Snapshot`] to repair a gap.
pub trait Broker: Send + Sync + fmt::Debug {
    /// Starts the engine (connects, spawns its tasks); resolves once it can serve.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when it cannot reach its backend.
    fn start(self: Arc<Self>) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// Numbers `data` (one JSON value, as text), stores it in the topic's history and
    /// delivers it to every node watching the topic. Resolves once it is stored.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] (nothing stored), [`BrokerError::TooManyTopics`].
    fn publish<'a>(
        &'a self,
        topic: &'a Topic,
        data: &'a str,
    ) -> BoxFuture<'a, Result<Published, BrokerError>>;

    /// Reads the topic's position and the history after `after`. When `epoch` is given and
    /// is not the topic's, the history is read from the start (`after` 0).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`], [`BrokerError::TooManyTopics`].
    fn read<'a>(
        &'a self,
        topic: &'a Topic,
        after: u64,
        epoch: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Snapshot, BrokerError>>;

    /// This node wants the topic's messages (its first subscriber): resolves once every
    /// message published after it will be delivered.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`], [`BrokerError::TooManyTopics`].
    fn watch<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// This node no longer wants the topic's messages (its last subscriber left). Calls of
    /// `watch` and `unwatch` take effect in the order they were made.
    fn unwatch(&self, topic: &Topic);

    /// Adds `client` to the topic's presence and tells its presence subscribers.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    fn join<'a>(
        &'a self,
        topic: &'a Topic,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Removes `client` from the topic's presence and tells its presence subscribers.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] (the entry then expires by itself).
    fn leave<'a>(
        &'a self,
        topic: &'a Topic,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Every client in the topic's presence, on every node.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    fn presence<'a>(
        &'a self,
        topic: &'a Topic,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, BrokerError>>;

    /// Carries `command` out on every node (this one included); resolves with how many
    /// nodes received it.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    fn control<'a>(
        &'a self,
        command: &'a ControlCommand,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;

    /// The nodes of the cluster (this one included) and their figures.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BrokerError>>;

    /// Whether the engine can serve now (`/readyz`).
    fn is_ready(&self) -> bool;

    /// Forgets what has expired. The hub calls it now and then.
    fn sweep(&self) {}

    /// How many topics the engine holds on this node (in-process: all of them).
    fn topic_count(&self) -> usize;
}

/// A fresh epoch: seconds and microseconds since 1970 in hex (8 and 5 digits), then 8
/// random hex digits; a later one compares greater.
pub fn new_epoch() -> Epoch {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Arc::from(format!(
        "{:08x}{:05x}{}",
        now.as_secs() as u32,
        now.subsec_micros(),
        epoch_suffix()
    ))
}

/// 8 random hex digits.
pub(crate) fn epoch_suffix() -> String {
    let random = getrandom::u32().unwrap_or_else(|_| {
        // No OS randomness: the clock's nanoseconds still tell nodes apart.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ 0x9e37_79b9
    });
    format!("{random:08x}")
}

/// Whether epoch `a` was made after epoch `b` (both made by [`new_epoch`] or the Redis
/// engine; other strings compare by length, then as text).
pub fn epoch_is_newer(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_order_by_time() {
        let a = new_epoch();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_epoch();
        assert_eq!(a.len(), 21);
        assert!(epoch_is_newer(&b, &a));
        assert!(!epoch_is_newer(&a, &b));
        assert!(!epoch_is_newer(&a, &a));
    }

    #[test]
    fn snapshot_coverage() {
        let stored = |offset| Stored {
            offset,
            frame: Bytes::new(),
        };
        let snapshot = Snapshot {
            epoch: Arc::from("e"),
            latest: 10,
            after: 3,
            messages: (6..=10).map(stored).collect(),
        };
        assert!(!snapshot.covers_from(2), "before `after`");
        assert!(!snapshot.covers_from(3), "4 and 5 are gone");
        assert!(snapshot.covers_from(5));
        assert!(snapshot.covers_from(9));
        assert!(snapshot.covers_from(10));
        assert!(snapshot.covers_from(12));
        let empty = Snapshot {
            messages: Vec::new(),
            ..snapshot
        };
        assert!(!empty.covers_from(5));
        assert!(empty.covers_from(10));
    }

    #[test]
    fn client_info_json() {
        let info = ClientInfo {
            client: Arc::from("n1-7"),
            user: Some(Arc::from("ann")),
        };
        assert_eq!(info.to_json(), r#"{"client":"n1-7","user":"ann"}"#);
        assert_eq!(ClientInfo::from_json(&info.to_json()), Some(info));
        let anonymous = ClientInfo::from_json(r#"{"client":"x","user":null}"#);
        assert_eq!(anonymous.and_then(|c| c.user), None);
    }
}
