//! One WebSocket client: its requests, its subscriptions, and the task that writes its
//! queue.
//!
//! Everything the server sends a client (replies, replays, fan-out) goes through the
//! client's [`Outbox`] as encoded frames, so the order is the order of queuing. The task
//! drains the whole queue at once and writes it as one batch (small frames are copied into
//! one buffer, large ones are queued as they are) with one flush.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::ready;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fullduplex::hyper::HyperWebSocket;
use fullduplex::{CloseCode, CloseFrame, Message};

use crate::auth::Grants;
use crate::engine::{BrokerError, ClientInfo};
use crate::metrics::inc;
use crate::outbox::{Drained, Outbox};
use crate::registry::{SubscribeError, SubscribeRequest};
use crate::topic::Topic;
use crate::wire::{self, ClientRequest};
use crate::{Hub, Slot};

/// Frames at least this long are queued without copying.
const LARGE_FRAME: usize = 16 << 10;
/// Copy small frames into buffers of about this size.
const BATCH_BYTES: usize = 64 << 10;

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client closed, or the transport ended.
    Closed,
    /// The connection failed.
    Failed(fullduplex::Error),
    /// The outgoing queue overflowed.
    SlowConsumer,
    /// The hub is shutting down.
    Shutdown,
}

/// A token bucket: `rate` tokens per second, at most `rate` saved up.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> RateLimit {
        RateLimit {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            updated: Instant::now(),
        }
    }

    /// Takes a token if one is there (always, when the rate is 0: unlimited).
    fn allow(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A connected client.
struct Session {
    hub: Arc<Hub>,
    id: u64,
    outbox: Arc<Outbox>,
    /// Subscribed topics, and whether the subscription is in the topic's presence.
    topics: HashMap<Topic, bool>,
    grants: Grants,
    rate: RateLimit,
    /// Counts against the connection limit while the session lives.
    _slot: Slot,
}

/// Runs a client connection until it ends, then leaves its topics.
///
/// Not an `async fn`: the session is built here and the returned future owns it and the
/// socket in place (an `async fn` keeps its arguments twice, which every idle connection's
/// task would carry).
pub(crate) fn run(
    hub: Arc<Hub>,
    mut ws: HyperWebSocket,
    grants: Grants,
    slot: Slot,
) -> impl Future<Output = ()> + Send {
    hub.metrics.connections.fetch_add(1, Ordering::Relaxed);
    inc(&hub.metrics.connections_total);
    let mut session = Session {
        id: hub.next_conn_id(),
        outbox: Arc::new(Outbox::new(hub.config.max_queued_bytes)),
        topics: HashMap::new(),
        grants,
        rate: RateLimit::new(hub.config.publish_rate),
        hub,
        _slot: slot,
    };
    async move {
        let end = session.drive(&mut ws).await;
        Box::pin(session.leave_all()).await;
        // Boxed, like `handle`: the closing steps run once, and their state need not be
        // part of every idle connection's task.
        Box::pin(session.finish(&mut ws, end)).await;
    }
}

impl Drop for Session {
    /// The connection is over (or its task was dropped): it no longer counts, and its slot
    /// (a field) is given back right after.
    fn drop(&mut self) {
        self.hub.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Session {
    /// Reads requests and writes the queue until the connection ends.
    async fn drive(&mut self, ws: &mut HyperWebSocket) -> End {
        let mut frames = Vec::new();
        loop {
            if self.outbox.drain(&mut frames) == Drained::Overflowed {
                return End::SlowConsumer;
            }
            if !frames.is_empty() {
                tokio::select! {
                    biased;
                    _ = self.outbox.overflowed() => return End::SlowConsumer,
                    result = write_batch(ws, &mut frames) => {
                        if let Err(error) = result {
                            return End::Failed(error);
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = self.hub.shutdown_token().cancelled() => return End::Shutdown,
                _ = self.outbox.wait() => {}
                message = ws.recv() => match message {
                    None => return End::Closed,
                    Some(Err(error)) => return End::Failed(error),
                    // Boxed: a request's state (a subscription's history sync, a publish
                    // through Redis) lives only while it is handled, not in every idle
                    // connection's task, whose future it would otherwise triple.
                    Some(Ok(Message::Text(text))) => Box::pin(self.handle(text.as_str())).await,
                    Some(Ok(Message::Binary(_))) => self.error(
                        "bad_json",
                        "binary messages are not supported: send JSON text",
                        None,
                    ),
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Closes the connection the way `end` calls for.
    async fn finish(&mut self, ws: &mut HyperWebSocket, end: End) {
        let hub = self.hub.clone();
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
            End::Shutdown => {
                // Flush what is queued first, within the shutdown timeout.
                let mut frames = Vec::new();
                if self.outbox.drain(&mut frames) == Drained::Frames && !frames.is_empty() {
                    let flushed =
                        tokio::time::timeout(close_within, write_batch(ws, &mut frames)).await;
                    if !matches!(flushed, Ok(Ok(()))) {
                        return;
                    }
                }
                CloseFrame::new(CloseCode(1001), "server shutting down")
            }
        };
        // The close handshake is bounded by the socket's close timeout; this bounds the rest
        // (a peer that does not read).
        let _ = tokio::time::timeout(close_within, ws.close(Some(frame))).await;
    }

    /// Handles one text message.
    async fn handle(&mut self, text: &str) {
        let request = match wire::parse_request(text) {
            Ok(request) => request,
            Err(error) => return self.error(error.code(), &error.to_string(), None),
        };
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
                match self.hub.presence(&topic).await {
                    Ok(clients) => self.send(wire::presence_frame(&topic, &clients)),
                    Err(error) => self.error("unavailable", &error.to_string(), Some(&topic)),
                }
            }
            ClientRequest::Unsubscribe { topic } => {
                if let Some(presence) = self.topics.remove(&topic) {
                    self.hub.unsubscribe(&topic, self.id);
                    if presence {
                        self.leave_presence(&topic).await;
                    }
                    self.send(wire::unsubscribed_frame(&topic));
                } else {
                    self.error(
                        "not_subscribed",
                        "not subscribed to this topic",
                        Some(&topic),
                    );
                }
            }
            ClientRequest::Publish { topic, data } => {
                if !self.grants.may_publish(topic.as_str()) || self.hub.is_reserved(topic.as_str())
                {
                    return self.error(
                        "forbidden",
                        "publishing to this topic is not allowed",
                        Some(&topic),
                    );
                }
                if !self.rate.allow(Instant::now()) {
                    inc(&self.hub.metrics.drops);
                    return self.error(
                        "rate_limited",
                        "too many publishes: the message was dropped",
                        Some(&topic),
                    );
                }
                match self.hub.publish(&topic, data.get()).await {
                    Ok(_) => {}
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
        if self.topics.contains_key(&topic) {
            return self.error(
                "already_subscribed",
                "already subscribed to this topic",
                Some(&topic),
            );
        }
        if self.topics.len() >= self.hub.config.max_subscriptions {
            let message = format!(
                "at most {} subscriptions per connection",
                self.hub.config.max_subscriptions
            );
            return self.error("too_many_subscriptions", &message, Some(&topic));
        }
        let subscribed = self
            .hub
            .subscribe(&topic, self.id, &self.outbox, request)
            .await;
        match subscribed {
            Ok(_) => {
                self.topics.insert(topic.clone(), request.presence);
                if request.presence {
                    if let Err(error) = self.hub.join(&topic, &self.client_info()).await {
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

    /// This connection as presence lists it.
    fn client_info(&self) -> ClientInfo {
        ClientInfo {
            client: self.hub.client_id(self.id),
            user: self.grants.user().cloned(),
        }
    }

    /// Leaves the topic's presence; a failure leaves the entry to expire.
    async fn leave_presence(&self, topic: &Topic) {
        if let Err(error) = self.hub.leave(topic, &self.client_info()).await {
            tracing::debug!(%error, %topic, "presence entry left to expire");
        }
    }

    /// Leaves every topic (the connection is over).
    async fn leave_all(&mut self) {
        let topics: Vec<(Topic, bool)> = self.topics.drain().collect();
        for (topic, presence) in topics {
            self.hub.unsubscribe(&topic, self.id);
            if presence {
                self.leave_presence(&topic).await;
            }
        }
    }

    /// Queues a reply; an overflow is noticed by the write loop.
    fn send(&self, frame: Bytes) {
        let _ = self.outbox.push_reply(frame);
    }

    fn error(&self, code: &str, message: &str, topic: Option<&Topic>) {
        inc(&self.hub.metrics.client_errors);
        self.send(wire::error_frame(code, message, topic.map(Topic::as_str)));
    }
}

/// Writes `frames` (emptying it): small frames are copied into buffers of about
/// `BATCH_BYTES`, large ones are queued as they are, and everything leaves with one flush
/// (waiting on the way only while the socket's write buffer is full).
///
/// One `poll_fn` over the socket's own queue rather than `send_encoded` futures: its state is
/// part of every connection's task, and this way it is a position in `frames`.
async fn write_batch(
    ws: &mut HyperWebSocket,
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
        let mut limit = RateLimit::new(2);
        assert!(limit.allow(start));
        assert!(limit.allow(start));
        assert!(!limit.allow(start));
        assert!(limit.allow(start + Duration::from_millis(600)));
        assert!(!limit.allow(start + Duration::from_millis(700)));
        let mut unlimited = RateLimit::new(0);
        assert!((0..1000).all(|_| unlimited.allow(start)));
    }
}
