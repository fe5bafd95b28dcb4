//! The in-process broker: topics, their subscribers, offsets, epochs and history.
//!
//! Publishing a message encodes it once (JSON and WebSocket frame) and pushes the same
//! `Bytes` into every subscriber's [`Outbox`] without waiting. Each topic has its own lock, so
//! topics fan out in parallel; the offset is assigned, the frame queued and the history
//! extended under that lock, which is what makes a subscription's replay and its live
//! messages one gap-free, duplicate-free sequence.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::history::History;
use crate::metrics::{add, inc, Metrics};
use crate::outbox::{Outbox, Overflow};
use crate::topic::Topic;
use crate::wire;

/// Identifies a connection among a topic's subscribers.
pub type ConnId = u64;

/// Limits of the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Messages kept per topic for recovery.
    pub history_size: usize,
    /// How long a message is kept for recovery; also how long a topic without subscribers
    /// or history keeps its epoch and offsets.
    pub history_ttl: Duration,
    /// Most topics that may exist at once.
    pub max_topics: usize,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            max_topics: 100_000,
        }
    }
}

/// What a subscription started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The topic's latest offset when the subscription started (0: nothing published yet).
    /// Live messages have higher offsets.
    pub offset: u64,
    /// The topic's epoch.
    pub epoch: Arc<str>,
    /// True when `since` was given and every message after it was replayed.
    pub recovered: bool,
    /// How many messages were replayed.
    pub replayed: usize,
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's offset in its topic.
    pub offset: u64,
    /// The topic's epoch.
    pub epoch: Arc<str>,
    /// How many subscribers it was queued to.
    pub delivered: usize,
}

/// Why the broker refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The topic does not exist and [`BrokerConfig::max_topics`] are in use.
    #[error("too many topics")]
    TooManyTopics,
    /// The connection already subscribes to the topic.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// The subscriber's queue overflowed while the replay was queued.
    #[error("{0}")]
    Overflow(#[from] Overflow),
}

/// One topic.
#[derive(Debug)]
struct TopicState {
    epoch: Arc<str>,
    last_offset: u64,
    history: History,
    subscribers: HashMap<ConnId, Arc<Outbox>>,
    /// Publish or last unsubscribe.
    last_active: Instant,
    /// Swept from the map: whoever still holds it must look the topic up again.
    removed: bool,
}

/// Topics and their subscribers.
#[derive(Debug)]
pub struct Broker {
    topics: Mutex<HashMap<Topic, Arc<Mutex<TopicState>>>>,
    config: BrokerConfig,
    metrics: Arc<Metrics>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path leaves the state half-updated across a panic that matters here.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh epoch: 16 hex digits, random.
pub fn new_epoch() -> Arc<str> {
    let random = getrandom::u64().unwrap_or_else(|_| {
        // No OS randomness: the clock still makes a restart's epoch differ.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ 0x9e37_79b9_7f4a_7c15
    });
    Arc::from(format!("{random:016x}"))
}

impl Broker {
    /// An empty broker.
    pub fn new(config: BrokerConfig, metrics: Arc<Metrics>) -> Broker {
        Broker {
            topics: Mutex::new(HashMap::new()),
            config,
            metrics,
        }
    }

    /// The broker's limits.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Runs `f` on the topic's state, creating the topic if needed.
    fn with_topic<R>(
        &self,
        topic: &Topic,
        create: bool,
        f: impl FnOnce(&mut TopicState) -> R,
    ) -> Result<Option<R>, BrokerError> {
        loop {
            let state = {
                let mut topics = lock(&self.topics);
                match topics.get(topic) {
                    Some(state) => state.clone(),
                    None if !create => return Ok(None),
                    None => {
                        if topics.len() >= self.config.max_topics {
                            return Err(BrokerError::TooManyTopics);
                        }
                        let state = Arc::new(Mutex::new(TopicState {
                            epoch: new_epoch(),
                            last_offset: 0,
                            history: History::new(
                                self.config.history_size,
                                self.config.history_ttl,
                            ),
                            subscribers: HashMap::new(),
                            last_active: Instant::now(),
                            removed: false,
                        }));
                        topics.insert(topic.clone(), state.clone());
                        self.metrics.topics.fetch_add(1, Ordering::Relaxed);
                        state
                    }
                }
            };
            let mut guard = lock(&state);
            if guard.removed {
                continue;
            }
            return Ok(Some(f(&mut guard)));
        }
    }

    /// Publishes `data` (one JSON value, as text) to `topic`: assigns the next offset,
    /// encodes the message frame once, queues it to every subscriber and keeps it in the
    /// history. Subscribers whose queue overflows are dropped from the topic (their
    /// connection closes itself as a slow consumer).
    pub fn publish(&self, topic: &Topic, data: &str) -> Result<Published, BrokerError> {
        inc(&self.metrics.messages_in);
        add(&self.metrics.bytes_in, data.len() as u64);
        let result = self.with_topic(topic, true, |state| {
            let now = Instant::now();
            state.last_offset += 1;
            state.last_active = now;
            let offset = state.last_offset;
            let frame = wire::message_frame(topic, offset, data);
            let delivered = self.fan_out(state, &frame);
            state.history.push(offset, frame, now);
            Published {
                offset,
                epoch: state.epoch.clone(),
                delivered,
            }
        })?;
        // `with_topic` with `create` always runs the closure.
        result.ok_or(BrokerError::TooManyTopics)
    }

    /// Delivers a message numbered elsewhere (by Redis, for every node): `offset` in
    /// `epoch`. A new epoch replaces the topic's numbering and history; an offset at or
    /// below the latest one is a duplicate and is ignored (`None`); a gap (messages this node
    /// never received) empties the history, so that recovery across it reports
    /// `recovered: false`.
    pub fn deliver(
        &self,
        topic: &Topic,
        offset: u64,
        epoch: &str,
        data: &str,
    ) -> Result<Option<Published>, BrokerError> {
        inc(&self.metrics.messages_in);
        add(&self.metrics.bytes_in, data.len() as u64);
        let result = self.with_topic(topic, true, |state| {
            let now = Instant::now();
            if *state.epoch != *epoch {
                state.epoch = Arc::from(epoch);
                state.last_offset = 0;
                state.history.clear();
            }
            if offset <= state.last_offset {
                return None;
            }
            if offset != state.last_offset + 1 {
                state.history.clear();
            }
            state.last_offset = offset;
            state.last_active = now;
            let frame = wire::message_frame(topic, offset, data);
            let delivered = self.fan_out(state, &frame);
            state.history.push(offset, frame, now);
            Some(Published {
                offset,
                epoch: state.epoch.clone(),
                delivered,
            })
        })?;
        Ok(result.flatten())
    }

    /// Takes on a numbering learnt elsewhere (Redis) for a topic: its `epoch` and latest
    /// `offset`. Nothing changes when the topic already has that epoch and a later offset.
    pub fn adopt(&self, topic: &Topic, offset: u64, epoch: &str) -> Result<(), BrokerError> {
        self.with_topic(topic, true, |state| {
            if *state.epoch != *epoch {
                state.epoch = Arc::from(epoch);
                state.last_offset = offset;
                state.history.clear();
            } else if offset > state.last_offset {
                // Messages this node never saw: the history no longer reaches back.
                state.last_offset = offset;
                state.history.clear();
            }
        })?;
        Ok(())
    }

    /// Whether `topic` exists on this node.
    pub fn knows(&self, topic: &Topic) -> bool {
        lock(&self.topics).contains_key(topic)
    }

    /// Queues `frame` to every subscriber of `state`; returns how many took it.
    fn fan_out(&self, state: &mut TopicState, frame: &Bytes) -> usize {
        let mut overflowed = Vec::new();
        for (&id, outbox) in &state.subscribers {
            if let Err(overflow) = outbox.push(frame.clone()) {
                add(&self.metrics.drops, overflow.dropped as u64);
                overflowed.push(id);
            }
        }
        for id in &overflowed {
            state.subscribers.remove(id);
        }
        self.metrics
            .subscriptions
            .fetch_sub(overflowed.len() as i64, Ordering::Relaxed);
        let delivered = state.subscribers.len();
        add(&self.metrics.messages_out, delivered as u64);
        add(&self.metrics.bytes_out, (delivered * frame.len()) as u64);
        delivered
    }

    /// Subscribes connection `id` (whose queue is `outbox`) to `topic`.
    ///
    /// Queues the `subscribed` reply first. With `since`, then queues the messages after
    /// `since` that the history holds (all of it when `epoch` is not the topic's, or `since`
    /// is beyond the latest offset), and reports `recovered` when that covers every message
    /// after `since` of the current epoch. Live messages follow, with no gap and no
    /// duplicate, because all of this happens under the topic's lock.
    pub fn subscribe(
        &self,
        topic: &Topic,
        id: ConnId,
        outbox: &Arc<Outbox>,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Subscribed, BrokerError> {
        let result = self.with_topic(topic, true, |state| {
            if state.subscribers.contains_key(&id) {
                return Err(BrokerError::AlreadySubscribed);
            }
            let now = Instant::now();
            state.history.expire(now);
            let (recovered, replay_from) = match since {
                None => (false, None),
                Some(since) => {
                    let same_epoch = epoch.is_none_or(|e| *e == *state.epoch);
                    if !same_epoch || since > state.last_offset {
                        // Offsets of another epoch mean nothing here: everything held is new
                        // to the client, and what it missed of its own epoch is lost.
                        (false, Some(0))
                    } else {
                        let first = state.history.first_offset();
                        let complete = since == state.last_offset
                            || first.is_some_and(|first| first <= since + 1);
                        (complete, Some(since))
                    }
                }
            };
            let reply = wire::subscribed_frame(topic, state.last_offset, &state.epoch, recovered);
            outbox.push_reply(reply)?;
            let mut replayed = 0;
            if let Some(from) = replay_from {
                let mut bytes = 0;
                for frame in state.history.after(from) {
                    outbox.push_reply(frame.clone())?;
                    bytes += frame.len();
                    replayed += 1;
                }
                add(&self.metrics.messages_out, replayed as u64);
                add(&self.metrics.bytes_out, bytes as u64);
            }
            state.subscribers.insert(id, outbox.clone());
            self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
            Ok(Subscribed {
                offset: state.last_offset,
                epoch: state.epoch.clone(),
                recovered,
                replayed,
            })
        })?;
        result.ok_or(BrokerError::TooManyTopics)?
    }

    /// Removes connection `id` from `topic`; false if it was not subscribed.
    pub fn unsubscribe(&self, topic: &Topic, id: ConnId) -> bool {
        let removed = self.with_topic(topic, false, |state| {
            let removed = state.subscribers.remove(&id).is_some();
            if removed {
                state.last_active = Instant::now();
            }
            removed
        });
        let removed = matches!(removed, Ok(Some(true)));
        if removed {
            self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Forgets expired history and removes topics that have no subscribers, no history and
    /// no activity for the history TTL (their offsets restart under a new epoch if they come
    /// back). Run it now and then.
    pub fn sweep(&self) {
        let now = Instant::now();
        let ttl = self.config.history_ttl;
        let mut topics = lock(&self.topics);
        topics.retain(|_, state| {
            let mut state = lock(state);
            state.history.expire(now);
            let idle = state.subscribers.is_empty()
                && state.history.is_empty()
                && now.saturating_duration_since(state.last_active) >= ttl;
            if idle {
                state.removed = true;
                self.metrics.topics.fetch_sub(1, Ordering::Relaxed);
            }
            !idle
        });
    }

    /// How many subscribers `topic` has.
    pub fn subscriber_count(&self, topic: &Topic) -> usize {
        self.with_topic(topic, false, |state| state.subscribers.len())
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// How many topics exist.
    pub fn topic_count(&self) -> usize {
        lock(&self.topics).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Drained;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn broker(history_size: usize) -> Broker {
        Broker::new(
            BrokerConfig {
                history_size,
                history_ttl: Duration::from_secs(60),
                max_topics: 3,
            },
            Arc::new(Metrics::default()),
        )
    }

    /// The JSON messages queued in `outbox`.
    fn received(outbox: &Outbox) -> Vec<serde_json::Value> {
        let mut frames = Vec::new();
        assert_eq!(outbox.drain(&mut frames), Drained::Frames);
        frames
            .iter()
            .map(|frame| {
                // Small unmasked text frames: a 2- or 4-byte header.
                let start = if frame[1] == 126 { 4 } else { 2 };
                serde_json::from_slice(&frame[start..]).unwrap_or_default()
            })
            .collect()
    }

    fn offsets(messages: &[serde_json::Value]) -> Vec<u64> {
        messages
            .iter()
            .filter(|m| m["type"] == "message")
            .filter_map(|m| m["offset"].as_u64())
            .collect()
    }

    #[test]
    fn fan_out_shares_one_frame() {
        let broker = broker(10);
        let news = topic("news");
        let a = Arc::new(Outbox::new(1 << 20));
        let b = Arc::new(Outbox::new(1 << 20));
        broker.subscribe(&news, 1, &a, None, None).unwrap();
        broker.subscribe(&news, 2, &b, None, None).unwrap();
        received(&a);
        received(&b);
        let published = broker.publish(&news, r#"{"n":1}"#).unwrap();
        assert_eq!(published.offset, 1);
        assert_eq!(published.delivered, 2);
        let (mut fa, mut fb) = (Vec::new(), Vec::new());
        a.drain(&mut fa);
        b.drain(&mut fb);
        // The same allocation: encoded once.
        assert_eq!(fa[0].as_ptr(), fb[0].as_ptr());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&fa[0][2..]).unwrap(),
            serde_json::json!({"type":"message","topic":"news","offset":1,"data":{"n":1}})
        );
    }

    #[test]
    fn recovery_replays_the_gap_then_live() {
        let broker = broker(10);
        let chat = topic("chat");
        let first = Arc::new(Outbox::new(1 << 20));
        let sub = broker.subscribe(&chat, 1, &first, None, None).unwrap();
        assert_eq!((sub.offset, sub.recovered), (0, false));
        for n in 1..=3 {
            broker.publish(&chat, &n.to_string()).unwrap();
        }
        assert_eq!(offsets(&received(&first)), [1, 2, 3]);
        // Disconnect after offset 2 was seen; 4 and 5 are published meanwhile.
        assert!(broker.unsubscribe(&chat, 1));
        assert!(!broker.unsubscribe(&chat, 1));
        for n in 4..=5 {
            broker.publish(&chat, &n.to_string()).unwrap();
        }
        let again = Arc::new(Outbox::new(1 << 20));
        let sub = broker
            .subscribe(&chat, 2, &again, Some(2), Some(&sub.epoch))
            .unwrap();
        assert!(sub.recovered);
        assert_eq!((sub.offset, sub.replayed), (5, 3));
        broker.publish(&chat, "6").unwrap();
        let messages = received(&again);
        assert_eq!(messages[0]["type"], "subscribed");
        assert_eq!(messages[0]["recovered"], true);
        assert_eq!(messages[0]["offset"], 5);
        assert_eq!(offsets(&messages), [3, 4, 5, 6]);
    }

    #[test]
    fn lost_history_is_reported() {
        let broker = broker(2);
        let chat = topic("chat");
        for n in 1..=5 {
            broker.publish(&chat, &n.to_string()).unwrap();
        }
        let outbox = Arc::new(Outbox::new(1 << 20));
        // Since 1: 2 and 3 are gone; 4 and 5 are replayed, recovered is false.
        let sub = broker.subscribe(&chat, 1, &outbox, Some(1), None).unwrap();
        assert!(!sub.recovered);
        assert_eq!(offsets(&received(&outbox)), [4, 5]);
        // Up to date: nothing missed.
        broker.unsubscribe(&chat, 1);
        let sub = broker.subscribe(&chat, 1, &outbox, Some(5), None).unwrap();
        assert!(sub.recovered);
        assert_eq!(sub.replayed, 0);
        // Another epoch (a restart): everything held is replayed, not recovered.
        broker.unsubscribe(&chat, 1);
        received(&outbox);
        let sub = broker
            .subscribe(&chat, 1, &outbox, Some(3), Some("old-epoch"))
            .unwrap();
        assert!(!sub.recovered);
        assert_eq!(offsets(&received(&outbox)), [4, 5]);
        // Beyond the latest offset: treated like another epoch.
        broker.unsubscribe(&chat, 1);
        let sub = broker.subscribe(&chat, 1, &outbox, Some(99), None).unwrap();
        assert!(!sub.recovered);
        assert_eq!(offsets(&received(&outbox)), [4, 5]);
    }

    #[test]
    fn other_epoch_replays_everything_unrecovered() {
        let broker = broker(10);
        let chat = topic("chat");
        broker.publish(&chat, "1").unwrap();
        let outbox = Arc::new(Outbox::new(1 << 20));
        let sub = broker
            .subscribe(&chat, 1, &outbox, Some(7), Some("before-restart"))
            .unwrap();
        assert!(
            !sub.recovered,
            "what was lost with the old epoch cannot be known"
        );
        assert_eq!(offsets(&received(&outbox)), [1]);
    }

    #[test]
    fn slow_subscriber_is_dropped_alone() {
        let broker = broker(0);
        let t = topic("t");
        let slow = Arc::new(Outbox::new(200));
        let fast = Arc::new(Outbox::new(1 << 20));
        broker.subscribe(&t, 1, &slow, None, None).unwrap();
        broker.subscribe(&t, 2, &fast, None, None).unwrap();
        for n in 0..10 {
            broker.publish(&t, &format!("\"{n:040}\"")).unwrap();
        }
        assert!(slow.is_overflowed());
        assert_eq!(broker.subscriber_count(&t), 1);
        assert_eq!(offsets(&received(&fast)).len(), 10);
        assert!(broker.metrics.drops.load(Ordering::Relaxed) > 0);
        assert_eq!(broker.metrics.subscriptions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn numbered_elsewhere() {
        let broker = broker(10);
        let t = topic("remote");
        let outbox = Arc::new(Outbox::new(1 << 20));
        broker.adopt(&t, 4, "E1").unwrap();
        let sub = broker
            .subscribe(&t, 1, &outbox, Some(4), Some("E1"))
            .unwrap();
        assert!(sub.recovered);
        assert_eq!((sub.offset, &*sub.epoch), (4, "E1"));
        assert!(broker.deliver(&t, 5, "E1", "5").unwrap().is_some());
        assert!(
            broker.deliver(&t, 5, "E1", "5").unwrap().is_none(),
            "duplicate"
        );
        assert!(broker.deliver(&t, 3, "E1", "3").unwrap().is_none(), "old");
        assert!(broker.deliver(&t, 6, "E1", "6").unwrap().is_some());
        assert_eq!(offsets(&received(&outbox)), [5, 6]);
        // A gap: the history restarts after it.
        broker.deliver(&t, 9, "E1", "9").unwrap();
        assert_eq!(offsets(&received(&outbox)), [9]);
        broker.unsubscribe(&t, 1);
        let sub = broker
            .subscribe(&t, 1, &outbox, Some(6), Some("E1"))
            .unwrap();
        assert!(!sub.recovered);
        assert_eq!(offsets(&received(&outbox)), [9]);
        // A new epoch (Redis lost its data): numbering restarts.
        broker.deliver(&t, 1, "E2", "1").unwrap();
        assert_eq!(offsets(&received(&outbox)), [1]);
        broker.unsubscribe(&t, 1);
        let sub = broker
            .subscribe(&t, 1, &outbox, Some(0), Some("E2"))
            .unwrap();
        assert!(sub.recovered);
        assert_eq!((sub.offset, &*sub.epoch), (1, "E2"));
        assert!(broker.knows(&t));
        assert!(!broker.knows(&topic("unknown")));
    }

    #[test]
    fn limits() {
        let broker = broker(10);
        let outbox = Arc::new(Outbox::new(1 << 20));
        broker
            .subscribe(&topic("a"), 1, &outbox, None, None)
            .unwrap();
        assert_eq!(
            broker.subscribe(&topic("a"), 1, &outbox, None, None),
            Err(BrokerError::AlreadySubscribed)
        );
        broker.publish(&topic("b"), "1").unwrap();
        broker.publish(&topic("c"), "1").unwrap();
        assert_eq!(
            broker.publish(&topic("d"), "1"),
            Err(BrokerError::TooManyTopics)
        );
        assert_eq!(broker.topic_count(), 3);
    }

    #[test]
    fn sweep_keeps_active_topics() {
        let broker = Broker::new(
            BrokerConfig {
                history_size: 10,
                history_ttl: Duration::ZERO,
                max_topics: 10,
            },
            Arc::new(Metrics::default()),
        );
        let outbox = Arc::new(Outbox::new(1 << 20));
        broker
            .subscribe(&topic("kept"), 1, &outbox, None, None)
            .unwrap();
        broker.publish(&topic("gone"), "1").unwrap();
        broker.sweep();
        assert_eq!(broker.topic_count(), 1);
        assert_eq!(broker.subscriber_count(&topic("kept")), 1);
    }
}
