//! One WebSocket client: its requests, its subscriptions, and writing its queue.
//!
//! Everything the server sends a client (replies, replays, fan-out) goes through the
//! client's [`DeliveryQueue`] as encoded frames, so the order is the order of queuing. A
//! [`Connection`] has no task of its own: a driver ([`crate::driver`]) polls it when its socket
//! or its queue wakes it. Each poll drains the whole queue and writes it as one batch (small
//! frames are copied into one buffer, large ones are queued as they are) with one flush,
//! together with the replies to the requests read in the same turn.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::Sleep;

use bytes::{Bytes, BytesMut};
use fullduplex::hyper::UpgradedStream;
use fullduplex::{CloseCode, CloseFrame, Message, PollSocket};

use crate::auth::Grants;
use crate::engine::{BrokerError, ClientInfo};
use crate::metrics::inc;
use crate::queue::{Control, DeliveryQueue, Drained, SlotWake};
use crate::registry::{SubscribeError, SubscribeRequest};
use crate::topic::Topic;
use crate::wire::{self, ClientRequest};
use crate::{Hub, Slot};

/// A hub connection's WebSocket: over the TCP socket itself for cleartext HTTP/1.1, over
/// hyper's upgraded stream for TLS and HTTP/2.
pub(crate) type HubWebSocket = fullduplex::WebSocket<UpgradedStream>;

/// Frames at least this long are queued without copying.
const LARGE_FRAME: usize = 16 << 10;
/// Copy small frames into buffers of about this size.
const BATCH_BYTES: usize = 64 << 10;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client closed, or the transport ended.
    Closed,
    /// The connection failed.
    Failed(fullduplex::Error),
    /// The outgoing queue overflowed.
    SlowConsumer,
    /// The hub is shutting down.
    Shutdown,
    /// The token expired and was not refreshed.
    Expired,
    /// The server API disconnected the client.
    Disconnected(u16, String),
}

/// How long before a token expires the server asks for a new one.
const REFRESH_LEAD: Duration = Duration::from_secs(10);

/// The close code for an expired token.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// The close code the server API uses unless told another.
pub const CLOSE_DISCONNECTED: u16 = 4002;

/// What the upgrade admitted a connection with.
#[derive(Debug)]
pub(crate) struct Admission {
    /// What the connection may do (from its token, or the connect hook).
    pub grants: Grants,
    /// The token's `sub`.
    pub token_user: Option<Arc<str>>,
    /// Whether the connect hook was asked (its answer may have set the user and grants).
    pub hooked: bool,
    /// The upgrade request's headers, for the subscribe hook.
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A token bucket's terms: `per_second` tokens a second, at most `capacity` saved up (and at
/// first). Every connection has the same terms, from the hub's configuration; a connection
/// keeps only its [`Bucket`].
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    capacity: f64,
}

impl Rate {
    /// `count` per `window`, also the burst (0: unlimited).
    fn per_window(count: u32, window: Duration) -> Rate {
        let count = f64::from(count);
        Rate {
            per_second: count / window.as_secs_f64().max(1e-3),
            capacity: count,
        }
    }

    /// `count` per second, also the burst (0: unlimited).
    fn per_second(count: u32) -> Rate {
        Rate::per_window(count, Duration::from_secs(1))
    }
}

/// The milliseconds since the first call, wrapping after 49 days: a [`Bucket`]'s clock, 4
/// bytes instead of an `Instant`'s 16 (an elapsed time past 49 days would be read short, and
/// only refill the bucket less).
fn millis(now: Instant) -> u32 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // Truncated on purpose: the clock wraps.
    now.saturating_duration_since(epoch).as_millis() as u32
}

/// A connection's token bucket under a [`Rate`]: 8 bytes.
#[derive(Debug)]
struct Bucket {
    tokens: f32,
    updated: u32,
}

impl Bucket {
    /// A full bucket.
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.capacity as f32,
            updated: millis(now),
        }
    }

    /// Takes a token if one is there (always, when the rate is 0: unlimited).
    fn allow(&mut self, rate: Rate, now: Instant) -> bool {
        if rate.per_second == 0.0 {
            return true;
        }
        let now = millis(now);
        let elapsed = f64::from(now.wrapping_sub(self.updated)) / 1000.0;
        self.updated = now;
        let tokens = (f64::from(self.tokens) + elapsed * rate.per_second).min(rate.capacity);
        if tokens >= 1.0 {
            self.tokens = (tokens - 1.0) as f32;
            true
        } else {
            self.tokens = tokens as f32;
            false
        }
    }
}

/// The terms of a connection's publishes.
fn publish_rate(hub: &Hub) -> Rate {
    Rate::per_second(hub.config.publish_rate)
}

/// The terms of a connection's topic creation.
fn new_topic_rate(hub: &Hub) -> Rate {
    let broker = &hub.config.broker;
    Rate::per_window(broker.new_topics_per_connection, broker.new_topics_window)
}

/// A connected client. One per connection, so kept small (104 bytes): what only some
/// connections need is in [`Extras`].
pub(crate) struct Session {
    /// The connection's slot, which holds the hub and counts the connection under its
    /// transport.
    slot: Slot,
    id: u64,
    queue: Arc<DeliveryQueue>,
    /// Subscribed topics, and whether the subscription is in the topic's presence: a list
    /// searched in order, as it holds at most `max_subscriptions` (100 by default) and most
    /// connections few; smaller than a map, which every idle connection would carry.
    topics: Vec<(Topic, bool)>,
    grants: Arc<Grants>,
    /// Publishes under [`HubConfig::publish_rate`](crate::HubConfig::publish_rate).
    publishes: Bucket,
    /// Topics this connection may still create ([`crate::BrokerConfig::new_topics_per_connection`]).
    new_topics: Bucket,
    /// The `id` of the request being handled (JSON text), for its answers.
    reply_id: Option<Box<str>>,
    /// Boxed, and only for connections with a token or a subscribe hook.
    extras: Option<Box<Extras>>,
}

/// What only connections with a token or a subscribe hook carry.
#[derive(Default)]
struct Extras {
    /// When the token expires: first the time to ask for a refresh, then the expiry.
    expiry: Option<Pin<Box<Sleep>>>,
    /// `{"type":"refresh"}` was sent for the current token.
    refresh_asked: bool,
    /// The upgrade request's headers, kept for the subscribe hook when there is one.
    headers: Option<serde_json::Map<String, serde_json::Value>>,
    /// The `sub` of the connection's token, which a refreshed token must name too.
    token_user: Option<Arc<str>>,
    /// The connect hook decided the user or the grants: a refresh then only moves the
    /// expiry.
    hooked: bool,
}

/// How many requests one connection may have handled in one turn of its driver before the
/// others get theirs. Large, because a publisher's turn is what lets its subscribers'
/// queues fill: they are written after it, each with everything the turn gave it.
pub(crate) const REQUESTS_PER_TURN: usize = 1024;

/// How a connection's turn ended.
#[derive(Debug)]
pub(crate) enum Turn {
    /// It waits to be woken (by its socket, its queue, a request or a timer).
    Waiting,
    /// It handled [`REQUESTS_PER_TURN`] requests and may have more: poll it again after the
    /// others.
    More,
    /// It is over; [`Connection::close`] ends it.
    Ended(End),
}

/// A request being handled: it owns the session while it runs, and hands it back.
type Request = Pin<Box<dyn Future<Output = Session> + Send>>;

/// What a connection is doing.
// Idle is what almost every connection is, almost always: the session stays in place rather
// than in an allocation of its own.
#[allow(clippy::large_enum_variant)]
enum Activity {
    /// Waiting for requests and writing its queue.
    Idle(Session),
    /// Handling a request that waits (a subscription's history read, a hook, Redis); its
    /// queue is still written meanwhile, and nothing more is read.
    Busy(Request),
    /// The session is being moved between the two.
    Moving,
}

/// A client connection as a [driver](crate::driver) holds it: the socket and the session,
/// polled with the driver's waker for this connection instead of running in a task of its
/// own. Its [`DeliveryQueue`] wakes the same waker.
pub(crate) struct Connection {
    ws: HubWebSocket,
    queue: Arc<DeliveryQueue>,
    activity: Activity,
    /// The last turn stopped at [`REQUESTS_PER_TURN`].
    more: bool,
}

impl Connection {
    /// Opens the session of an upgraded connection, for slot `index` of `driver` (which its
    /// queue and [`waker`](Connection::waker) wake), or for no driver (a connection only to
    /// be closed).
    pub(crate) fn open(
        hub: Arc<Hub>,
        ws: HubWebSocket,
        admission: Admission,
        slot: Slot,
        driver: Option<(Arc<dyn SlotWake>, u32)>,
    ) -> Connection {
        let Admission {
            grants,
            token_user,
            hooked,
            headers,
        } = admission;
        let open = hub.metrics.connections.fetch_add(1, Ordering::Relaxed) + 1;
        hub.metrics
            .connections_peak
            .fetch_max(open, Ordering::Relaxed);
        inc(&hub.metrics.connections_total);
        let now = Instant::now();
        let mut queue =
            DeliveryQueue::new(hub.config.max_queued_bytes).with_deflate(ws.is_compressed());
        if let Some((driver, index)) = driver {
            queue = queue.with_driver(driver, index);
        }
        let queue = Arc::new(queue);
        // A token's expiry gets its box from `schedule_expiry` below.
        let extras = (headers.is_some() || token_user.is_some() || hooked).then(|| {
            Box::new(Extras {
                headers,
                token_user,
                hooked,
                ..Extras::default()
            })
        });
        let mut session = Session {
            id: hub.next_conn_id(),
            queue: queue.clone(),
            topics: Vec::new(),
            grants: grants.into_shared(),
            publishes: Bucket::full(publish_rate(&hub), now),
            new_topics: Bucket::full(new_topic_rate(&hub), now),
            reply_id: None,
            extras,
            slot,
        };
        session.schedule_expiry();
        session.slot.hub.registry.add_session(
            session.id,
            session.grants.user().cloned(),
            session.queue.clone(),
        );
        Connection {
            ws,
            queue,
            activity: Activity::Idle(session),
            more: false,
        }
    }

    /// The waker to poll this connection with: its queue, which notes the connection's slot
    /// for a read turn of its driver.
    pub(crate) fn waker(&self) -> Waker {
        Waker::from(self.queue.clone())
    }

    /// Does what the connection can do now: the server's control requests, writing its
    /// queue (`frames` is the driver's scratch space, left empty), its token timer, and up to
    /// [`REQUESTS_PER_TURN`] requests.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, frames: &mut Vec<Bytes>) -> Turn {
        match self.poll_turn(cx, frames) {
            Poll::Ready(end) => Turn::Ended(end),
            Poll::Pending if self.more => Turn::More,
            Poll::Pending => Turn::Waiting,
        }
    }

    fn poll_turn(&mut self, cx: &mut Context<'_>, frames: &mut Vec<Bytes>) -> Poll<End> {
        self.more = false;
        let mut requests = 0;
        let mut fed = false;
        loop {
            if let Activity::Busy(request) = &mut self.activity {
                if let Poll::Ready(session) = request.as_mut().poll(cx) {
                    self.activity = Activity::Idle(session);
                }
            }
            // Before writing: a disconnect leaves what is queued to `close`, which writes it
            // before the close frame.
            if let Err(end) = self.control(cx) {
                return Poll::Ready(end);
            }
            match self.feed(cx, frames) {
                Ok(more) => fed |= more,
                Err(end) => return Poll::Ready(end),
            }
            let Activity::Idle(session) = &mut self.activity else {
                break;
            };
            if let Some(expiry) = session.extras.as_mut().and_then(|e| e.expiry.as_mut()) {
                if expiry.as_mut().poll(cx).is_ready() {
                    if session.on_expiry() {
                        return Poll::Ready(End::Expired);
                    }
                    continue;
                }
            }
            if requests == REQUESTS_PER_TURN {
                // More may have arrived: the driver comes back after the others.
                self.more = true;
                break;
            }
            match self.ws.poll_recv(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => return Poll::Ready(End::Closed),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(End::Failed(error)),
                Poll::Ready(Some(Ok(Message::Text(text)))) => {
                    requests += 1;
                    self.start(cx, move |mut session| {
                        Box::pin(async move {
                            session.handle(text.as_str()).await;
                            session
                        })
                    });
                }
                Poll::Ready(Some(Ok(Message::Binary(_)))) => {
                    requests += 1;
                    session.error(
                        "bad_json",
                        "binary messages are not supported: send JSON text",
                        None,
                    );
                }
                Poll::Ready(Some(Ok(_))) => {}
            }
        }
        // One write for everything this turn queued (replies included).
        if fed || self.ws.buffered_amount() > 0 {
            if let Poll::Ready(Err(error)) = self.ws.poll_write_out(cx) {
                return Poll::Ready(End::Failed(error));
            }
        }
        Poll::Pending
    }

    /// Carries out what the server asked of the connection: a disconnect ends it, the
    /// topics it is to leave are left by a request of their own.
    fn control(&mut self, cx: &mut Context<'_>) -> Result<(), End> {
        if !matches!(self.activity, Activity::Idle(_)) {
            return Ok(());
        }
        let mut leave = Vec::new();
        for control in self.queue.take_control() {
            match control {
                Control::Disconnect { code, reason } => {
                    return Err(End::Disconnected(code, reason))
                }
                Control::Unsubscribe { topic } => leave.push(topic),
            }
        }
        if !leave.is_empty() {
            self.start(cx, move |mut session| {
                Box::pin(async move {
                    for topic in leave {
                        session.unsubscribe(topic, true).await;
                    }
                    session
                })
            });
        }
        Ok(())
    }

    /// Moves what is queued onto the socket (not yet written out) when the socket takes
    /// more: true if anything was. A full socket leaves the frames in the queue, where an
    /// overflow still ends the connection.
    fn feed(&mut self, cx: &mut Context<'_>, frames: &mut Vec<Bytes>) -> Result<bool, End> {
        match self.ws.poll_ready_send(cx) {
            Poll::Pending if self.queue.is_overflowed() => return Err(End::SlowConsumer),
            Poll::Pending => return Ok(false),
            Poll::Ready(Err(error)) => return Err(End::Failed(error)),
            Poll::Ready(Ok(())) => {}
        }
        if self.queue.drain(frames) == Drained::Overflowed {
            return Err(End::SlowConsumer);
        }
        if frames.is_empty() {
            return Ok(false);
        }
        coalesce(frames);
        let fed = frames
            .drain(..)
            .try_for_each(|frame| self.ws.start_send_encoded(frame));
        frames.clear();
        fed.map(|()| true).map_err(End::Failed)
    }

    /// Hands the session to a request and polls it once: most requests finish at once.
    fn start(&mut self, cx: &mut Context<'_>, request: impl FnOnce(Session) -> Request) {
        let Activity::Idle(session) = std::mem::replace(&mut self.activity, Activity::Moving)
        else {
            return;
        };
        let mut request = request(session);
        self.activity = match request.as_mut().poll(cx) {
            Poll::Ready(session) => Activity::Idle(session),
            Poll::Pending => Activity::Busy(request),
        };
    }

    /// Ends the connection the way `end` calls for (after the request being handled, if
    /// any): leaves its topics, writes what is queued and closes.
    pub(crate) async fn close(self, end: End) {
        let Connection {
            mut ws, activity, ..
        } = self;
        let mut session = match activity {
            Activity::Idle(session) => session,
            Activity::Busy(request) => request.await,
            Activity::Moving => return,
        };
        Box::pin(session.leave_all()).await;
        // Boxed: the closing steps' state lives only while a connection closes.
        Box::pin(session.finish(&mut ws, end)).await;
    }
}

impl Drop for Session {
    /// The connection is over (or its task was dropped): it no longer counts, and its slot
    /// (a field) is given back right after.
    fn drop(&mut self) {
        let user = self.grants.user().map(|user| &**user);
        self.slot.hub.registry.remove_session(self.id, user);
        self.slot
            .hub
            .metrics
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Session {
    /// Closes the connection the way `end` calls for.
    async fn finish(&mut self, ws: &mut HubWebSocket, end: End) {
        let hub = self.slot.hub.clone();
        let close_within = hub.config.shutdown_timeout;
        let frame = match end {
            End::Closed => return,
            End::Failed(error) => {
                tracing::debug!(%error, id = self.id, "connection failed");
                return;
            }
            End::SlowConsumer => {
                inc(&hub.metrics.slow_consumer_disconnects);
                CloseFrame::new(CloseCode(1013), "slow consumer")
            }
            End::Expired => CloseFrame::new(CloseCode(CLOSE_TOKEN_EXPIRED), "token expired"),
            End::Disconnected(code, reason) => CloseFrame::new(CloseCode(code), reason),
            End::Shutdown => CloseFrame::new(CloseCode(1001), "server shutting down"),
        };
        // Flush what is queued first, within the shutdown timeout.
        let mut frames = Vec::new();
        if self.queue.drain(&mut frames) == Drained::Frames && !frames.is_empty() {
            let flushed = tokio::time::timeout(close_within, write_batch(ws, &mut frames)).await;
            if !matches!(flushed, Ok(Ok(()))) {
                return;
            }
        }
        // The close handshake is bounded by the socket's close timeout; this bounds the rest
        // (a peer that does not read).
        let _ = tokio::time::timeout(close_within, ws.close(Some(frame))).await;
    }

    /// Handles one text message.
    async fn handle(&mut self, text: &str) {
        let parsed = wire::parse(text);
        // Publishes without an id (no answer) may have their fan-out deferred to the end of
        // the driver's turn; anything else is answered, and what the connection's earlier
        // requests published is queued first, so that a client subscribed to its own topic
        // gets its message before the answers to its later requests.
        if parsed.id.is_some() || !matches!(parsed.request, Ok(ClientRequest::Publish { .. })) {
            self.slot.hub.registry.flush_deferred_here();
        }
        self.reply_id = parsed.id.map(Box::from);
        match parsed.request {
            Ok(request) => self.handle_request(request).await,
            Err(error) => self.error(error.code(), &error.to_string(), None),
        }
        self.reply_id = None;
    }

    /// Handles one parsed request.
    async fn handle_request(&mut self, request: ClientRequest<'_>) {
        let id = self.reply_id.clone();
        let id = id.as_deref();
        match request {
            ClientRequest::Subscribe {
                topic,
                since,
                epoch,
                presence,
            } => {
                let request = SubscribeRequest {
                    since,
                    epoch,
                    presence,
                    id,
                };
                self.subscribe(topic, request).await
            }
            ClientRequest::Presence { topic } => {
                if !self.grants.may_subscribe(topic.as_str()) {
                    return self.error(
                        "forbidden",
                        "subscribing to this topic is not allowed",
                        Some(&topic),
                    );
                }
                match self.slot.hub.presence(&topic).await {
                    Ok(clients) => self.send(wire::presence_frame(&topic, &clients, id)),
                    Err(error) => self.error("unavailable", &error.to_string(), Some(&topic)),
                }
            }
            ClientRequest::Unsubscribe { topic } => {
                if !self.unsubscribe(topic.clone(), false).await {
                    self.error(
                        "not_subscribed",
                        "not subscribed to this topic",
                        Some(&topic),
                    );
                }
            }
            ClientRequest::Refresh { token } => self.refresh(&token).await,
            ClientRequest::Info => self.send(wire::info_frame(
                &self.client_info(),
                self.slot.transport().as_str(),
                id,
            )),
            ClientRequest::Publish { topic, data } => {
                if !self.grants.may_publish(topic.as_str())
                    || self.slot.hub.is_reserved(topic.as_str())
                {
                    return self.error(
                        "forbidden",
                        "publishing to this topic is not allowed",
                        Some(&topic),
                    );
                }
                if !self
                    .publishes
                    .allow(publish_rate(&self.slot.hub), Instant::now())
                {
                    inc(&self.slot.hub.metrics.drops);
                    return self.error(
                        "rate_limited",
                        "too many publishes: the message was dropped",
                        Some(&topic),
                    );
                }
                match self.slot.hub.publish(&topic, data.get()).await {
                    Ok(published) => {
                        if let Some(id) = id {
                            self.send(wire::published_frame(
                                &topic,
                                published.offset,
                                &published.epoch,
                                id,
                            ));
                        }
                    }
                    Err(BrokerError::TooManyTopics) => {
                        self.error("too_many_topics", "the server holds too many topics", None)
                    }
                    Err(error) => self.error("unavailable", &error.to_string(), Some(&topic)),
                }
            }
        }
    }

    async fn subscribe(&mut self, topic: Topic, request: SubscribeRequest<'_>) {
        if !self.grants.may_subscribe(topic.as_str()) {
            return self.error(
                "forbidden",
                "subscribing to this topic is not allowed",
                Some(&topic),
            );
        }
        if self.topics.iter().any(|(held, _)| *held == topic) {
            return self.error(
                "already_subscribed",
                "already subscribed to this topic",
                Some(&topic),
            );
        }
        if self.topics.len() >= self.slot.hub.config.max_subscriptions {
            let message = format!(
                "at most {} subscriptions per connection",
                self.slot.hub.config.max_subscriptions
            );
            return self.error("too_many_subscriptions", &message, Some(&topic));
        }
        if let Some(headers) = self.extras.as_ref().and_then(|e| e.headers.as_ref()) {
            let client = self.slot.hub.client_id(self.id);
            let hook = crate::hooks::SubscribeRequest {
                event: "subscribe",
                client: &client,
                user: self.grants.user().map(|u| &**u),
                topic: topic.as_str(),
                headers,
            };
            // Boxed: an HTTP call's state (about 5 KB) would otherwise be part of every
            // request's future.
            if let Err(denied) = Box::pin(self.slot.hub.hooks.subscribe(&hook)).await {
                return self.error("forbidden", &denied.to_string(), Some(&topic));
            }
        }
        // A topic nobody on this node subscribes to is created by this subscription: at most
        // so many per connection and window, so that a few connections cannot fill the
        // topic table.
        if !self.slot.hub.registry.has_topic(&topic)
            && !self
                .new_topics
                .allow(new_topic_rate(&self.slot.hub), Instant::now())
        {
            let broker = &self.slot.hub.config.broker;
            let message = format!(
                "at most {} new topics per connection every {} s",
                broker.new_topics_per_connection,
                broker.new_topics_window.as_secs_f64()
            );
            return self.error("topic_rate_limited", &message, Some(&topic));
        }
        let subscribed = self
            .slot
            .hub
            .subscribe(&topic, self.id, &self.queue, request)
            .await;
        match subscribed {
            Ok(_) => {
                // Grown one place at a time: a connection with one topic keeps one entry.
                self.topics.reserve_exact(1);
                let name = self.slot.hub.registry.shared_name(&topic);
                self.topics
                    .push((name.unwrap_or_else(|| topic.clone()), request.presence));
                if request.presence {
                    if let Err(error) = self.slot.hub.join(&topic, &self.client_info()).await {
                        self.error("unavailable", &error.to_string(), Some(&topic));
                    }
                }
            }
            Err(SubscribeError::AlreadySubscribed) => self.error(
                "already_subscribed",
                "already subscribed to this topic",
                Some(&topic),
            ),
            Err(
                SubscribeError::TooManyTopics | SubscribeError::Broker(BrokerError::TooManyTopics),
            ) => self.error("too_many_topics", "the server holds too many topics", None),
            // The connection closes as a slow consumer on the next turn of its loop.
            Err(SubscribeError::Overflow(_)) => {}
            Err(error) => self.error("unavailable", &error.to_string(), Some(&topic)),
        }
    }

    /// Leaves `topic` and answers `unsubscribed` (with the request's id, or, when the server
    /// API asked, none); false if the connection did not subscribe to it.
    async fn unsubscribe(&mut self, topic: Topic, by_server: bool) -> bool {
        let Some(index) = self.topics.iter().position(|(held, _)| *held == topic) else {
            return false;
        };
        let (_, presence) = self.topics.swap_remove(index);
        self.slot.hub.unsubscribe(&topic, self.id);
        if presence {
            self.leave_presence(&topic).await;
        }
        let id = if by_server {
            None
        } else {
            self.reply_id.as_deref()
        };
        self.send(wire::unsubscribed_frame(&topic, id));
        true
    }

    /// `{"type":"refresh","token":T}`: takes the new token's grants and expiry when it is
    /// valid and names the same user.
    async fn refresh(&mut self, token: &str) {
        let Some(verifier) = &self.slot.hub.tokens else {
            return self.error("bad_token", "this server does not use tokens", None);
        };
        // Boxed, like the subscribe hook: a key fetch is rare and large.
        match Box::pin(verifier.verify(token)).await {
            Ok(grants)
                if grants.user() == self.extras.as_ref().and_then(|e| e.token_user.as_ref()) =>
            {
                self.grants = if self.extras.as_ref().is_some_and(|e| e.hooked) {
                    // The hook's user and grants stay; only the token's expiry moves.
                    Grants::clone(&self.grants).with_expiry(grants.expires())
                } else {
                    grants
                }
                .into_shared();
                self.schedule_expiry();
                let id = self.reply_id.as_deref();
                self.send(wire::refreshed_frame(self.grants.expires(), id));
            }
            Ok(_) => self.error("bad_token", "the token names another user", None),
            Err(error) => self.error("bad_token", &error.to_string(), None),
        }
    }

    /// Sets the timer for the current token: the refresh request some seconds before it
    /// expires, then the expiry.
    fn schedule_expiry(&mut self) {
        let expiry = self.grants.expires().map(|expires| {
            let at = instant_of(expires).checked_sub(REFRESH_LEAD);
            Box::pin(tokio::time::sleep_until(
                at.unwrap_or_else(tokio::time::Instant::now),
            ))
        });
        if expiry.is_none() && self.extras.is_none() {
            return;
        }
        let extras = self.extras.get_or_insert_with(Box::default);
        extras.refresh_asked = false;
        extras.expiry = expiry;
    }

    /// The token timer fired: asks for a refresh, or reports the expiry (true).
    fn on_expiry(&mut self) -> bool {
        let expires = self.grants.expires();
        let Some(extras) = self.extras.as_mut() else {
            return false;
        };
        let Some(expires) = expires else {
            extras.expiry = None;
            return false;
        };
        if extras.refresh_asked {
            return true;
        }
        extras.refresh_asked = true;
        if let Some(sleep) = &mut extras.expiry {
            sleep.as_mut().reset(instant_of(expires));
        }
        self.send(wire::refresh_frame(expires));
        false
    }

    /// This connection as presence lists it.
    fn client_info(&self) -> ClientInfo {
        ClientInfo {
            client: self.slot.hub.client_id(self.id),
            user: self.grants.user().cloned(),
        }
    }

    /// Leaves the topic's presence; a failure leaves the entry to expire.
    async fn leave_presence(&self, topic: &Topic) {
        if let Err(error) = self.slot.hub.leave(topic, &self.client_info()).await {
            tracing::debug!(%error, %topic, "presence entry left to expire");
        }
    }

    /// Leaves every topic (the connection is over).
    async fn leave_all(&mut self) {
        for (topic, presence) in std::mem::take(&mut self.topics) {
            self.slot.hub.unsubscribe(&topic, self.id);
            if presence {
                self.leave_presence(&topic).await;
            }
        }
    }

    /// Queues a reply; an overflow is noticed by the write loop.
    fn send(&self, frame: Bytes) {
        let _ = self.queue.push_reply(frame);
    }

    fn error(&self, code: &str, message: &str, topic: Option<&Topic>) {
        inc(&self.slot.hub.metrics.client_errors);
        self.send(wire::error_frame(
            code,
            message,
            topic.map(Topic::as_str),
            self.reply_id.as_deref(),
        ));
    }
}

/// The monotonic instant of `unix` seconds since 1970 (now when that has passed).
pub(crate) fn instant_of(unix: u64) -> tokio::time::Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // A far-off expiry (a token valid for centuries) is capped rather than overflowing.
    let left = Duration::from_secs(unix)
        .saturating_sub(now)
        .min(FAR_FUTURE);
    let now = tokio::time::Instant::now();
    now.checked_add(left).unwrap_or(now + FAR_FUTURE_FALLBACK)
}

/// The farthest a token timer is set: about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
/// Where even that does not fit the clock's range: about a year.
const FAR_FUTURE_FALLBACK: Duration = Duration::from_secs(365 * 24 * 3600);

/// Writes `frames` (emptying it) when a connection closes: small frames are copied into
/// buffers of about `BATCH_BYTES`, large ones are queued as they are, and everything leaves
/// with one flush (waiting on the way only while the socket's write buffer is full).
async fn write_batch(
    ws: &mut HubWebSocket,
    frames: &mut Vec<Bytes>,
) -> Result<(), fullduplex::Error> {
    coalesce(frames);
    let mut next = 0;
    let written = poll_fn(|cx| {
        while let Some(frame) = frames.get_mut(next) {
            ready!(ws.poll_ready_send(cx))?;
            ws.start_send_encoded(std::mem::take(frame))?;
            next += 1;
        }
        ws.poll_write_out(cx)
    })
    .await;
    frames.clear();
    written
}

/// Copies runs of small frames into buffers of about `BATCH_BYTES`, in place and in order;
/// frames of `LARGE_FRAME` or more stay as they are.
fn coalesce(frames: &mut Vec<Bytes>) {
    if frames.len() < 2 {
        return;
    }
    let mut batch = BytesMut::new();
    // Frames before `kept` are final. A frame is read before anything is written to its
    // index, so `kept` never passes the frame being read.
    let mut kept = 0;
    for read in 0..frames.len() {
        let frame = std::mem::take(&mut frames[read]);
        if frame.len() >= LARGE_FRAME {
            if !batch.is_empty() {
                frames[kept] = batch.split().freeze();
                kept += 1;
            }
            frames[kept] = frame;
            kept += 1;
            continue;
        }
        if batch.is_empty() {
            batch.reserve(BATCH_BYTES.min(frame.len() * 16).max(frame.len()));
        }
        batch.extend_from_slice(&frame);
        if batch.len() >= BATCH_BYTES {
            frames[kept] = batch.split().freeze();
            kept += 1;
        }
    }
    if !batch.is_empty() {
        frames[kept] = batch.freeze();
        kept += 1;
    }
    frames.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn coalesce_keeps_order_and_batches_small_frames() {
        let small = |b: u8| Bytes::from(vec![b; 100]);
        let large = |b: u8| Bytes::from(vec![b; LARGE_FRAME]);
        let input = vec![
            small(1),
            small(2),
            large(3),
            small(4),
            large(5),
            large(6),
            small(7),
        ];
        let joined: Vec<u8> = input.iter().flat_map(|f| f.iter().copied()).collect();
        let mut frames = input;
        coalesce(&mut frames);
        let lens: Vec<usize> = frames.iter().map(Bytes::len).collect();
        assert_eq!(lens, [200, LARGE_FRAME, 100, LARGE_FRAME, LARGE_FRAME, 100]);
        let rejoined: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(rejoined, joined);
        // Many small frames: buffers of about BATCH_BYTES.
        let mut frames: Vec<Bytes> = (0..2000).map(|i| small(i as u8)).collect();
        coalesce(&mut frames);
        assert!(
            frames.len() < 2000 * 100 / BATCH_BYTES + 2,
            "{} buffers",
            frames.len()
        );
        assert!(frames[..frames.len() - 1]
            .iter()
            .all(|f| f.len() >= BATCH_BYTES));
        assert_eq!(frames.iter().map(Bytes::len).sum::<usize>(), 200_000);
    }

    #[test]
    fn rate_limit() {
        let start = Instant::now();
        let two = Rate::per_second(2);
        let mut limit = Bucket::full(two, start);
        assert!(limit.allow(two, start));
        assert!(limit.allow(two, start));
        assert!(!limit.allow(two, start));
        assert!(limit.allow(two, start + Duration::from_millis(600)));
        assert!(!limit.allow(two, start + Duration::from_millis(700)));
        let unlimited = Rate::per_second(0);
        let mut bucket = Bucket::full(unlimited, start);
        assert!((0..1000).all(|_| bucket.allow(unlimited, start)));
    }

    #[test]
    fn a_bucket_refills_over_a_window_and_not_past_its_capacity() {
        let start = Instant::now();
        let rate = Rate::per_window(10, Duration::from_secs(60));
        let mut bucket = Bucket::full(rate, start);
        assert_eq!((0..20).filter(|_| bucket.allow(rate, start)).count(), 10);
        // 7 s give one token back (not two); an hour gives back no more than the capacity.
        assert!(bucket.allow(rate, start + Duration::from_secs(7)));
        assert!(!bucket.allow(rate, start + Duration::from_secs(7)));
        let later = start + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| bucket.allow(rate, later)).count(), 10);
    }

    #[test]
    fn an_idle_connection_stays_small() {
        // What every idle subscriber keeps in its driver's slot (BENCHMARKS.md, "Memory per
        // idle subscriber"): the WebSocket over the plain socket and the session, 360 bytes
        // in a release build (a 368-byte block), where the socket is 32 (40 in a debug build).
        let connection = std::mem::size_of::<Connection>();
        let session = std::mem::size_of::<Session>();
        let socket = std::mem::size_of::<tokio::net::TcpStream>();
        assert!(
            connection - socket <= 328,
            "Connection is {connection} bytes"
        );
        assert!(session <= 104, "Session is {session} bytes");
        assert!(
            std::mem::size_of::<UpgradedStream>() <= std::mem::size_of::<tokio::net::TcpStream>()
        );
    }
}
