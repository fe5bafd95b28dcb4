//! # fullduplex-hub
//!
//! A pub/sub push server on [`fullduplex`]: WebSocket clients subscribe to topics and publish
//! to them; backends publish with `POST /publish/TOPIC`. Served by `fdx serve`; the wire
//! protocol is in the repository's `PROTOCOL.md`.
//!
//! * Encode once: a published message is serialised and framed once, and every subscriber's
//!   queue gets the same `Bytes` ([`broker`]).
//! * Offsets, epochs and a bounded history per topic: a client that reconnects with `since`
//!   gets what it missed, in order, without duplicates ([`history`]).
//! * Each connection has a bounded outgoing queue; a client that cannot keep up is closed
//!   with 1013 and never slows anyone else down ([`outbox`]).
//! * Origin checks, HS256 tokens listing topics, an API key for HTTP publishing, limits on
//!   connections, subscriptions, message size and publish rate ([`auth`]).
//! * hyper 1.x on one port for the page, `/healthz`, `/metrics`, `/publish` and `/ws`
//!   ([`http`]), graceful shutdown ([`server`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fullduplex_hub::{Hub, HubConfig};
//! let hub = Hub::new(HubConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let serving = tokio::spawn(hub.clone().serve(listener));
//! // ... later, on SIGTERM:
//! hub.shutdown();
//! serving.await??;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod auth;
pub mod broker;
pub mod clock;
mod conn;
pub mod history;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod redis;
pub mod server;
pub mod topic;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{Grants, OriginPolicy, TokenVerifier};
pub use broker::{Broker, BrokerConfig, BrokerError, Published, Subscribed};
pub use metrics::Metrics;
pub use topic::{Topic, TopicError};

/// Everything `fdx serve` can set. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// History and topic limits.
    pub broker: BrokerConfig,
    /// Browser origins allowed besides the hub's own host (`*`: all).
    pub allowed_origins: Vec<String>,
    /// When set, `POST /publish` requires `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// When set, WebSocket clients need an HS256 token signed with it, whose claims list the
    /// topics they may subscribe and publish to.
    pub token_secret: Option<String>,
    /// Most WebSocket connections at once (more get 503).
    pub max_connections: usize,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Largest WebSocket message and `POST /publish` body, in bytes.
    pub max_message_size: usize,
    /// Publishes per second per WebSocket connection (also the burst); 0: unlimited.
    pub publish_rate: u32,
    /// A connection's outgoing queue limit in bytes; over it, the connection is closed with
    /// 1013 (slow consumer).
    pub max_queued_bytes: usize,
    /// Publish the time to the `clock` topic every `clock_interval`.
    pub clock: bool,
    /// How often the clock publishes.
    pub clock_interval: Duration,
    /// How long shutdown waits for queued messages to be flushed and close handshakes to end.
    pub shutdown_timeout: Duration,
    /// Keepalive ping interval for WebSocket connections (a missing pong within the same
    /// time closes the connection); `None`: no pings.
    pub ping_interval: Option<Duration>,
    /// `redis://...`: exchange published messages with other nodes through Redis, which
    /// numbers them (see [`redis`]).
    pub redis: Option<String>,
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            broker: BrokerConfig::default(),
            allowed_origins: Vec::new(),
            api_key: None,
            token_secret: None,
            max_connections: 10_000,
            max_subscriptions: 100,
            max_message_size: 64 << 10,
            publish_rate: 100,
            max_queued_bytes: 1 << 20,
            clock: true,
            clock_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(5),
            ping_interval: Some(Duration::from_secs(30)),
            redis: None,
        }
    }
}

/// Why publishing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker refused (too many topics).
    #[error("{0}")]
    Broker(#[from] BrokerError),
    /// Redis failed.
    #[error("{0}")]
    Redis(String),
}

/// The hub: configuration, broker, metrics, and the tasks it runs.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    broker: Broker,
    metrics: Arc<Metrics>,
    origins: OriginPolicy,
    tokens: Option<TokenVerifier>,
    next_id: AtomicU64,
    /// WebSocket connections holding a slot (upgrading or open).
    slots: AtomicUsize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    bus: OnceLock<redis::RedisBus>,
    redis_subscribed: AtomicBool,
    redis_ready: Notify,
}

impl Hub {
    /// A hub with `config`. Start it with [`Hub::serve`].
    pub fn new(config: HubConfig) -> Arc<Hub> {
        let metrics = Arc::new(Metrics::default());
        Arc::new(Hub {
            broker: Broker::new(config.broker.clone(), metrics.clone()),
            origins: OriginPolicy::new(&config.allowed_origins),
            tokens: config
                .token_secret
                .as_deref()
                .map(|secret| TokenVerifier::new(secret.as_bytes())),
            metrics,
            next_id: AtomicU64::new(1),
            slots: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            bus: OnceLock::new(),
            redis_subscribed: AtomicBool::new(false),
            redis_ready: Notify::new(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The broker.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Publishes `data` (one JSON value, as text) to `topic`, as `POST /publish` does.
    ///
    /// With Redis the message goes to every node, this one included, and is delivered when
    /// it comes back: `delivered` is then 0. The clock topic stays on this node.
    pub async fn publish(&self, topic: &Topic, data: &str) -> Result<Published, PublishError> {
        match self.bus.get() {
            Some(bus) if !self.is_reserved(topic.as_str()) => {
                let (offset, epoch) = bus
                    .publish(topic, data)
                    .await
                    .map_err(|e| PublishError::Redis(e.to_string()))?;
                Ok(Published {
                    offset,
                    epoch: Arc::from(epoch),
                    delivered: 0,
                })
            }
            _ => Ok(self.broker.publish(topic, data)?),
        }
    }

    /// With Redis, makes sure this node numbers `topic` like Redis does before a client
    /// subscribes to it (only needed for topics this node has not seen yet).
    pub(crate) async fn sync_topic(&self, topic: &Topic) -> Result<(), PublishError> {
        let Some(bus) = self.bus.get() else {
            return Ok(());
        };
        if self.is_reserved(topic.as_str()) || self.broker.knows(topic) {
            return Ok(());
        }
        let (offset, epoch) = bus
            .position(topic)
            .await
            .map_err(|e| PublishError::Redis(e.to_string()))?;
        Ok(self.broker.adopt(topic, offset, &epoch)?)
    }

    /// Connects to Redis (if configured and not done yet) and waits until this node receives
    /// the other nodes' messages. [`Hub::serve`] calls it; call it first to know that the
    /// node is part of the cluster before announcing it.
    pub async fn start_redis(self: &Arc<Self>) -> Result<(), redis::RedisError> {
        let Some(url) = &self.config.redis else {
            return Ok(());
        };
        if self.bus.get().is_none() {
            let bus = redis::RedisBus::connect(url).await?;
            if self.bus.set(bus.clone()).is_ok() {
                self.tasks.spawn(redis::run_subscriber(self.clone(), bus));
            }
        }
        loop {
            let ready = self.redis_ready.notified();
            if self.redis_subscribed.load(Ordering::Acquire) {
                return Ok(());
            }
            ready.await;
        }
    }

    /// The Redis subscription is in place.
    pub(crate) fn redis_ready(&self) {
        self.redis_subscribed.store(true, Ordering::Release);
        self.redis_ready.notify_waiters();
    }

    /// Starts the shutdown: stop accepting, close every connection with 1001 after flushing
    /// what is queued. [`Hub::serve`] returns when that is done (or timed out).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `topic` is written by the server only (the clock, when it runs).
    pub fn is_reserved(&self, topic: &str) -> bool {
        self.config.clock && topic == clock::CLOCK_TOPIC
    }

    /// Takes a connection slot, or `None` at [`HubConfig::max_connections`].
    pub(crate) fn reserve_slot(self: &Arc<Self>) -> Option<Slot> {
        let max = self.config.max_connections;
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot { hub: self.clone() })
    }
}

/// A connection slot; dropping it frees it.
#[derive(Debug)]
pub(crate) struct Slot {
    hub: Arc<Hub>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.slots.fetch_sub(1, Ordering::AcqRel);
    }
}
