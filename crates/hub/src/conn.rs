//! One WebSocket client: its requests, its subscriptions, and the task that writes its
//! queue.
//!
//! Everything the server sends a client (replies, replays, fan-out) goes through the
//! client's [`Outbox`] as encoded frames, so the order is the order of queuing. The task
//! drains the whole queue at once and writes it as one batch (small frames are copied into
//! one buffer, large ones are queued as they are) with one flush.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fullduplex::hyper::HyperWebSocket;
use fullduplex::{CloseCode, CloseFrame, Message};

use crate::auth::Grants;
use crate::broker::BrokerError;
use crate::metrics::inc;
use crate::outbox::{Drained, Outbox};
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
    topics: HashSet<Topic>,
    grants: Grants,
    rate: RateLimit,
}

/// Runs a client connection until it ends, then leaves its topics.
pub(crate) async fn run(hub: Arc<Hub>, mut ws: HyperWebSocket, grants: Grants, slot: Slot) {
    let metrics = hub.metrics.clone();
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    inc(&metrics.connections_total);
    let mut session = Session {
        id: hub.next_conn_id(),
        outbox: Arc::new(Outbox::new(hub.config.max_queued_bytes)),
        topics: HashSet::new(),
        grants,
        rate: RateLimit::new(hub.config.publish_rate),
        hub,
    };
    let end = session.drive(&mut ws).await;
    session.leave_all();
    session.finish(&mut ws, end).await;
    metrics.connections.fetch_sub(1, Ordering::Relaxed);
    drop(slot);
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
                    Some(Ok(Message::Text(text))) => self.handle(text.as_str()).await,
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
            } => self.subscribe(topic, since, epoch).await,
            ClientRequest::Unsubscribe { topic } => {
                if self.topics.remove(&topic) {
                    self.hub.broker.unsubscribe(&topic, self.id);
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
                if let Err(error) = self.hub.publish(&topic, data.get()).await {
                    self.error("unavailable", &error.to_string(), Some(&topic));
                }
            }
        }
    }

    async fn subscribe(&mut self, topic: Topic, since: Option<u64>, epoch: Option<&str>) {
        if !self.grants.may_subscribe(topic.as_str()) {
            return self.error(
                "forbidden",
                "subscribing to this topic is not allowed",
                Some(&topic),
            );
        }
        if self.topics.contains(&topic) {
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
        if let Err(error) = self.hub.sync_topic(&topic).await {
            return self.error("unavailable", &error.to_string(), Some(&topic));
        }
        match self
            .hub
            .broker
            .subscribe(&topic, self.id, &self.outbox, since, epoch)
        {
            Ok(_) => {
                self.topics.insert(topic);
            }
            Err(BrokerError::AlreadySubscribed) => self.error(
                "already_subscribed",
                "already subscribed to this topic",
                Some(&topic),
            ),
            Err(BrokerError::TooManyTopics) => {
                self.error("too_many_topics", "the server holds too many topics", None)
            }
            // The connection closes as a slow consumer on the next turn of its loop.
            Err(BrokerError::Overflow(_)) => {}
        }
    }

    /// Leaves every topic (the connection is over).
    fn leave_all(&mut self) {
        for topic in self.topics.drain() {
            self.hub.broker.unsubscribe(&topic, self.id);
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

/// Writes `frames` (emptying it) with one flush per buffer of copied small frames and per
/// large frame.
async fn write_batch(
    ws: &mut HyperWebSocket,
    frames: &mut Vec<Bytes>,
) -> Result<(), fullduplex::Error> {
    if frames.len() == 1 {
        if let Some(frame) = frames.pop() {
            return ws.send_encoded(frame).await;
        }
    }
    let mut batch = BytesMut::new();
    for frame in frames.drain(..) {
        if frame.len() >= LARGE_FRAME {
            if !batch.is_empty() {
                ws.send_encoded(batch.split().freeze()).await?;
            }
            ws.send_encoded(frame).await?;
            continue;
        }
        if batch.is_empty() {
            batch.reserve(BATCH_BYTES.min(frame.len() * 16).max(frame.len()));
        }
        batch.extend_from_slice(&frame);
        if batch.len() >= BATCH_BYTES {
            ws.send_encoded(batch.split().freeze()).await?;
        }
    }
    if !batch.is_empty() {
        ws.send_encoded(batch.freeze()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
