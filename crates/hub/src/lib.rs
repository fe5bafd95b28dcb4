//! # fullduplex-hub
//!
//! A pub/sub push server on [`fullduplex`]: WebSocket clients subscribe to topics and publish
//! to them; backends publish with `POST /publish/TOPIC`. Served by `fdx serve`; the wire
//! protocol is in the repository's `PROTOCOL.md`.
//!
//! * One engine behind one trait ([`engine::Broker`]): numbering (offsets, epochs), history,
//!   delivery between nodes and presence, in this process ([`engine::MemoryBroker`]) or
//!   through Redis for several nodes ([`engine::RedisBroker`]).
//! * Encode once: a published message is serialised and framed once, and every subscriber's
//!   queue on the node gets the same `Bytes` ([`registry`]).
//! * Offsets, epochs and a bounded history per topic: a client that reconnects with `since`
//!   gets what it missed, in order, without duplicates, on any node; what is lost is told
//!   with a `gap` event, never skipped silently.
//! * Each connection has a bounded outgoing queue; a client that cannot keep up is closed
//!   with 1013 and never slows anyone else down ([`queue`]).
//! * No task per WebSocket connection: one driver per worker thread polls the connections
//!   that their sockets or queues woke, so an idle subscriber costs its socket and session
//!   and a fan-out wakes each driver once.
//! * Origin checks, tokens (HS256, RS256, ES256, JWKS) listing topics and refreshed before
//!   they expire, backend hooks, an API key for HTTP publishing and the server API, limits on
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

pub mod allocator;
pub mod api;
pub mod auth;
pub mod clock;
mod conn;
pub mod deflate;
mod driver;
pub mod engine;
pub mod fetch;
pub mod history;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod registry;
pub mod server;
pub mod sse;
pub mod tokens;
pub mod topic;
pub mod wire;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{Grants, OriginPolicy};
pub use engine::{
    Broker, BrokerConfig, BrokerError, ClientInfo, ControlCommand, MemoryBroker, NodeInfo,
    Published, RedisBroker, RedisConfig,
};
pub use hooks::HookConfig;
pub use metrics::{Metrics, Transport};
pub use registry::{ConnId, Registry, SubscribeError, SubscribeRequest, Subscribed};
pub use tokens::{TokenConfig, TokenError, TokenVerifier};
pub use topic::{Topic, TopicError};

use queue::DeliveryQueue;

/// Everything `fdx serve` can set. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// History, topic and presence limits.
    pub broker: BrokerConfig,
    /// Browser origins allowed besides the hub's own host (`*`: all).
    pub allowed_origins: Vec<String>,
    /// When set, `POST /publish` and `GET /presence` require `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// The keys of the tokens WebSocket clients need (none: no tokens), whose claims list the
    /// topics they may subscribe and publish to.
    pub tokens: TokenConfig,
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
    /// The Redis engine (several nodes as one); `None`: the in-process engine.
    pub redis: Option<RedisConfig>,
    /// Backend hooks for connections and subscriptions.
    pub hooks: hooks::HookConfig,
    /// Whether HTTP publishing and the server API work without `api_key`. `None`: only when
    /// the hub listens on a loopback address.
    pub anonymous_publish: Option<bool>,
    /// Most HTTP connections at once that are not (yet) WebSockets; more are closed at once.
    pub max_http_connections: usize,
    /// Unsent bytes a connection may queue in its kernel send buffer (`TCP_NOTSENT_LOWAT`,
    /// 128 KiB by default; 0: the kernel's default, no limit): beyond it, frames wait in the
    /// connection's queue, where `max_queued_bytes` bounds them. Data in flight is not
    /// limited.
    pub notsent_lowat: u32,
    /// How often an idle Server-Sent Events stream sends a `: ping` comment
    /// ([`sse::HEARTBEAT`] by default).
    pub sse_heartbeat: Duration,
    /// Negotiate permessage-deflate with WebSocket clients and send them each message
    /// compressed once for all of them ([`deflate`]); `false`: plain frames only.
    pub compression: bool,
    /// Messages shorter than this (bytes of their frame's JSON) go out plain.
    pub compression_threshold: usize,
    /// Serve HTTPS and `wss://` with this TLS configuration (ALPN `h2` and `http/1.1` are set
    /// by [`Hub::serve`]); `None`: cleartext HTTP/1.1 and h2c with prior knowledge.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            broker: BrokerConfig::default(),
            allowed_origins: Vec::new(),
            api_key: None,
            tokens: TokenConfig::default(),
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
            hooks: hooks::HookConfig::default(),
            anonymous_publish: None,
            max_http_connections: 1024,
            notsent_lowat: 128 << 10,
            sse_heartbeat: sse::HEARTBEAT,
            compression: true,
            compression_threshold: deflate::DEFAULT_THRESHOLD,
            tls: None,
        }
    }
}

/// The zlib level of compressed fan-out: paid once per message, not per subscriber, so the
/// smallest output is worth it.
const DEFLATE_LEVEL: u32 = 6;

/// How often a subscription reads the topic again when messages keep arriving between its
/// read and its join.
const JOIN_ATTEMPTS: usize = 16;

/// The hub: configuration, registry, engine, metrics, and the tasks it runs.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    registry: Arc<Registry>,
    /// The engine: in-process or Redis.
    engine: Arc<dyn Broker>,
    /// Topics written by this node only (the clock), whatever the engine.
    local: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
    origins: OriginPolicy,
    tokens: Option<TokenVerifier>,
    hooks: hooks::Hooks,
    /// Whether HTTP publishing needs no key: set by [`Hub::serve`] from
    /// [`HubConfig::anonymous_publish`] and the address it listens on.
    anonymous_publish: std::sync::OnceLock<bool>,
    next_id: AtomicU64,
    /// WebSocket connections holding a slot (upgrading or open).
    slots: AtomicUsize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The WebSocket connection drivers, started with the first connection.
    drivers: std::sync::OnceLock<driver::Drivers>,
}

impl Hub {
    /// A hub with `config`. Start it with [`Hub::serve`].
    ///
    /// # Panics
    /// When a configured token key cannot be read; [`Hub::try_new`] reports it instead.
    pub fn new(config: HubConfig) -> Arc<Hub> {
        Hub::try_new(config).unwrap_or_else(|error| panic!("{error}"))
    }

    /// A hub with `config`.
    ///
    /// # Errors
    /// [`tokens::KeyError`] when a configured token key cannot be read.
    pub fn try_new(config: HubConfig) -> Result<Arc<Hub>, tokens::KeyError> {
        let metrics = Arc::new(Metrics::default());
        let deflate = config
            .compression
            .then(|| deflate::SharedDeflate::new(config.compression_threshold, DEFLATE_LEVEL));
        let registry = Arc::new(
            Registry::new(config.broker.max_topics, metrics.clone()).with_deflate(deflate),
        );
        let local = Arc::new(MemoryBroker::new(
            config.broker.clone(),
            registry.clone(),
            metrics.clone(),
        ));
        let engine: Arc<dyn Broker> = match &config.redis {
            Some(redis) => Arc::new(RedisBroker::new(
                redis.clone(),
                config.broker.clone(),
                registry.clone(),
                metrics.clone(),
            )),
            None => local.clone(),
        };
        Ok(Arc::new(Hub {
            registry,
            engine,
            local,
            origins: OriginPolicy::new(&config.allowed_origins),
            tokens: match config.tokens.is_enabled() {
                true => Some(TokenVerifier::new(&config.tokens)?),
                false => None,
            },
            metrics,
            hooks: hooks::Hooks::new(config.hooks.clone()),
            anonymous_publish: std::sync::OnceLock::new(),
            next_id: AtomicU64::new(1),
            slots: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            drivers: std::sync::OnceLock::new(),
            config,
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// This node's subscribers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The engine.
    pub fn engine(&self) -> &dyn Broker {
        &*self.engine
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The engine that numbers `topic`: this node's own for the clock, else the hub's.
    fn engine_for(&self, topic: &Topic) -> &dyn Broker {
        if self.is_reserved(topic.as_str()) {
            &*self.local
        } else {
            &*self.engine
        }
    }

    /// Starts the engine (connects to Redis); resolves once it can serve. [`Hub::serve`]
    /// calls it; call it first to know that the node is part of the cluster before
    /// announcing it.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the engine cannot reach its backend.
    ///
    /// # Cancel safety
    /// Cancel-safe: the engine keeps connecting in its own tasks, and a later call waits
    /// for the same start.
    pub async fn start_engine(&self) -> Result<(), BrokerError> {
        self.engine.clone().start().await
    }

    /// Whether the engine can serve now (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.engine.is_ready()
    }

    /// The metrics in Prometheus text, with the engine's gauges read now.
    pub fn render_metrics(&self) -> String {
        let metrics = &self.metrics;
        let ready = i64::from(self.engine.is_ready());
        metrics.engine_ready.store(ready, Ordering::Relaxed);
        let topics = i64::try_from(self.engine.topic_count()).unwrap_or(i64::MAX);
        metrics.topics.store(topics, Ordering::Relaxed);
        metrics.render()
    }

    /// Publishes `data` (one JSON value, as text) to `topic`, as `POST /publish` does.
    /// Resolves once the engine has stored it; the registry delivers it to this node's
    /// subscribers as the engine hands it over.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] (nothing was stored), [`BrokerError::TooManyTopics`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the engine took the message, it is published all the
    /// same without an answer.
    pub async fn publish(&self, topic: &Topic, data: &str) -> Result<Published, BrokerError> {
        self.engine_for(topic).publish(topic, data).await
    }

    /// Subscribes connection `id` (whose delivery queue is `queue`) to `topic`: the `subscribed`
    /// reply, the replay of `since` and live messages are queued to `queue` in order.
    ///
    /// # Errors
    /// [`SubscribeError`]: already subscribed, too many topics, the engine unavailable, the
    /// queue overflowed during the replay.
    ///
    /// # Cancel safety
    /// Cancel-safe: a subscription dropped before it joined leaves nothing behind.
    pub async fn subscribe(
        &self,
        topic: &Topic,
        id: ConnId,
        queue: &Arc<DeliveryQueue>,
        request: SubscribeRequest<'_>,
    ) -> Result<Subscribed, SubscribeError> {
        let engine = self.engine_for(topic);
        let reservation = Reservation {
            hub: self,
            topic,
            engine,
            inner: self.registry.reserve(topic)?,
        };
        reservation
            .inner
            .watched()
            .get_or_try_init(|| engine.watch(topic))
            .await?;
        for _ in 0..JOIN_ATTEMPTS {
            let (after, epoch) = self.registry.read_plan(topic, request.since, request.epoch);
            let snapshot = engine.read(topic, after, epoch.as_deref()).await?;
            match self.registry.join(topic, id, queue, request, &snapshot) {
                Ok(subscribed) => return Ok(subscribed),
                Err(registry::JoinError::Retry) => tokio::task::yield_now().await,
                Err(registry::JoinError::Failed(error)) => return Err(error),
            }
        }
        Err(SubscribeError::Busy)
    }

    /// Removes connection `id` from `topic`; false if it was not subscribed.
    pub fn unsubscribe(&self, topic: &Topic, id: ConnId) -> bool {
        let engine = self.engine_for(topic);
        self.registry.leave(topic, id, |t| engine.unwatch(t))
    }

    /// Enters `client` into the topic's presence.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: the entry may be made without an answer.
    pub async fn join(&self, topic: &Topic, client: &ClientInfo) -> Result<(), BrokerError> {
        self.engine_for(topic).join(topic, client).await
    }

    /// Removes `client` from the topic's presence.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] (the entry then expires within the presence TTL).
    ///
    /// # Cancel safety
    /// Not cancel-safe: the entry may be removed without an answer.
    pub async fn leave(&self, topic: &Topic, client: &ClientInfo) -> Result<(), BrokerError> {
        self.engine_for(topic).leave(topic, client).await
    }

    /// Every client in the topic's presence, on every node.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn presence(&self, topic: &Topic) -> Result<Vec<ClientInfo>, BrokerError> {
        self.engine_for(topic).presence(topic).await
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

    /// The WebSocket connection drivers: one per worker thread of the runtime that serves
    /// the first connection.
    pub(crate) fn drivers(self: &Arc<Self>) -> &driver::Drivers {
        self.drivers.get_or_init(|| {
            let workers = tokio::runtime::Handle::current().metrics().num_workers();
            driver::Drivers::start(self, workers)
        })
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The cluster-wide id of this node's connection `id`: `NODE-ID`.
    pub fn client_id(&self, id: ConnId) -> Arc<str> {
        self.registry.client_id(id)
    }

    /// Carries a server API command out on every node; resolves with how many nodes
    /// received it.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: the command may be sent without an answer.
    pub async fn control(&self, command: &ControlCommand) -> Result<usize, BrokerError> {
        self.engine.control(command).await
    }

    /// The nodes of the cluster and their figures.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        self.engine.nodes().await
    }

    /// The topic's position and the messages after `since` that its history holds.
    ///
    /// # Errors
    /// [`BrokerError`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn history(
        &self,
        topic: &Topic,
        since: u64,
    ) -> Result<engine::Snapshot, BrokerError> {
        self.engine_for(topic).read(topic, since, None).await
    }

    /// Whether `topic` is written by the server only (the clock, when it runs).
    pub fn is_reserved(&self, topic: &str) -> bool {
        self.config.clock && topic == clock::CLOCK_TOPIC
    }

    /// Takes a connection slot for a connection of `transport` (counted under it in the
    /// metrics while the slot lives), or `None` at [`HubConfig::max_connections`].
    pub(crate) fn reserve_slot(self: &Arc<Self>, transport: Transport) -> Option<Slot> {
        let max = self.config.max_connections;
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| {
                self.metrics.transport_opened(transport);
                Slot {
                    hub: self.clone(),
                    transport,
                }
            })
    }
}

/// A subscription being set up; dropping it releases the topic (and unwatches it when
/// nobody on this node subscribes any more), also when the subscription is cancelled.
struct Reservation<'a> {
    hub: &'a Hub,
    topic: &'a Topic,
    engine: &'a dyn Broker,
    inner: registry::Reservation,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let engine = self.engine;
        self.hub.registry.release(self.topic, |t| engine.unwatch(t));
    }
}

/// A connection slot; dropping it frees it. It also holds the hub for the connection that
/// took it, and counts it under its transport.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) hub: Arc<Hub>,
    transport: Transport,
}

impl Slot {
    /// The transport the connection is counted under.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.slots.fetch_sub(1, Ordering::AcqRel);
        self.hub.metrics.transport_closed(self.transport);
    }
}
