//! The in-process engine: one node, nothing to install (the embedded default).
//!
//! Each topic has its own lock; the offset is assigned, the message stored in the history
//! and handed to the registry under it, so every subscriber sees the topic's messages in
//! offset order and a subscription's snapshot fits the live messages exactly.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::engine::{
    new_epoch, BoxFuture, Broker, BrokerConfig, BrokerError, ClientInfo, ControlCommand, Epoch,
    NodeInfo, Published, Snapshot, Stored,
};
use crate::history::{Freed, History};
use crate::metrics::{add, inc, Metrics};
use crate::registry::Registry;
use crate::topic::Topic;
use crate::wire;

/// One topic.
#[derive(Debug)]
struct TopicState {
    epoch: Epoch,
    last_offset: u64,
    history: History,
    presence: BTreeSet<ClientInfo>,
    /// Swept from the map: whoever still holds it must look the topic up again.
    removed: bool,
}

/// The bytes of history held by all topics together, and the order messages entered it in,
/// to evict the oldest when [`BrokerConfig::history_memory`] is exceeded.
#[derive(Debug, Default)]
struct Budget {
    /// Bytes of frames held in histories.
    bytes: AtomicUsize,
    /// Messages held in histories.
    messages: AtomicUsize,
    /// `(topic, offset, bytes)` of held messages, oldest first. Messages a history dropped
    /// itself (count, age) stay here until they are skipped or compacted away.
    order: Mutex<VecDeque<(Topic, u64, usize)>>,
}

impl Budget {
    fn freed(&self, freed: Freed) {
        self.bytes.fetch_sub(freed.bytes, Ordering::Relaxed);
        self.messages.fetch_sub(freed.messages, Ordering::Relaxed);
    }
}

/// Topics, their numbering, history and presence, in this process.
#[derive(Debug)]
pub struct MemoryBroker {
    topics: Mutex<HashMap<Topic, Arc<Mutex<TopicState>>>>,
    config: BrokerConfig,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    budget: Budget,
    /// Topics whose last subscriber on this node left, to be removed if they hold nothing
    /// either ([`MemoryBroker::reclaim`]). [`Broker::unwatch`] runs under the registry's
    /// lock, which is taken inside a topic's lock elsewhere, so it only queues here.
    unwatched: Mutex<Vec<Topic>>,
}

/// How much history a sweep must forget before it asks the allocator to give memory back.
const RETURN_MEMORY_AFTER: usize = 1 << 20;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path leaves the state half-updated across a panic that matters here.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryBroker {
    /// An empty engine delivering to `registry`.
    pub fn new(
        config: BrokerConfig,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> MemoryBroker {
        MemoryBroker {
            topics: Mutex::new(HashMap::new()),
            config,
            registry,
            metrics,
            budget: Budget::default(),
            unwatched: Mutex::new(Vec::new()),
        }
    }

    /// Whether a topic costs nothing to forget: no history (once expired), no presence, and
    /// no subscriber on this node (nor one being set up). Its numbering then restarts under
    /// a new epoch if it comes back, which subscribers that recover from it are told.
    fn is_reclaimable(&self, topic: &Topic, state: &mut TopicState, now: Instant) -> bool {
        self.budget.freed(state.history.expire(now));
        state.history.is_empty() && state.presence.is_empty() && !self.registry.has_topic(topic)
    }

    /// Removes the topics queued by `unwatch` that hold nothing. Runs with the topic map
    /// locked (`topics`), taking each topic's lock inside it, as the sweep does.
    fn reclaim(&self, topics: &mut HashMap<Topic, Arc<Mutex<TopicState>>>) {
        let unwatched = std::mem::take(&mut *lock(&self.unwatched));
        let now = Instant::now();
        for topic in unwatched {
            let Some(state) = topics.get(&topic) else {
                continue;
            };
            let mut state = lock(state);
            if self.is_reclaimable(&topic, &mut state, now) {
                state.removed = true;
                drop(state);
                topics.remove(&topic);
            }
        }
    }

    /// Removes at once the topics whose last subscriber left and that hold nothing (the
    /// sweep does it too, every few seconds; and so does creating a topic).
    pub fn reclaim_now(&self) {
        self.reclaim(&mut lock(&self.topics));
    }

    /// Bytes of message frames held in all topics' histories.
    pub fn history_bytes(&self) -> usize {
        self.budget.bytes.load(Ordering::Relaxed)
    }

    /// Takes a message a history kept into the budget; true when the order of entry holds
    /// so many messages that histories already dropped that it is time to compact it.
    fn enter(&self, topic: &Topic, offset: u64, bytes: usize) -> bool {
        self.budget.bytes.fetch_add(bytes, Ordering::Relaxed);
        let held = self.budget.messages.fetch_add(1, Ordering::Relaxed) + 1;
        let mut order = lock(&self.budget.order);
        order.push_back((topic.clone(), offset, bytes));
        order.len() > 2 * held + 1024
    }

    /// Evicts the oldest messages of all topics while the histories hold more than
    /// [`BrokerConfig::history_memory`].
    fn enforce_budget(&self) {
        let limit = self.config.history_memory;
        while self.budget.bytes.load(Ordering::Relaxed) > limit {
            let Some((topic, offset, _)) = lock(&self.budget.order).pop_front() else {
                break;
            };
            let state = lock(&self.topics).get(&topic).cloned();
            if let Some(state) = state {
                if let Some(bytes) = lock(&state).history.evict_oldest(offset) {
                    self.budget.freed(Freed { messages: 1, bytes });
                    inc(&self.metrics.history_evictions);
                }
            }
        }
        let bytes = self.budget.bytes.load(Ordering::Relaxed);
        self.metrics
            .history_bytes
            .store(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Drops from the order of entry the messages no history holds any more. The order is
    /// taken out and put back, so no topic is locked under the order's lock.
    fn compact_order(&self) {
        let old = std::mem::take(&mut *lock(&self.budget.order));
        let kept: VecDeque<(Topic, u64, usize)> = old
            .into_iter()
            .filter(|(topic, offset, _)| {
                let state = lock(&self.topics).get(topic).cloned();
                state.is_some_and(|state| lock(&state).history.holds(*offset))
            })
            .collect();
        let mut order = lock(&self.budget.order);
        let newer = std::mem::replace(&mut *order, kept);
        order.extend(newer);
    }

    /// Runs `f` on the topic's state, creating the topic.
    fn with_topic<R>(
        &self,
        topic: &Topic,
        f: impl FnOnce(&mut TopicState) -> R,
    ) -> Result<R, BrokerError> {
        loop {
            let state = {
                let mut topics = lock(&self.topics);
                match topics.get(topic) {
                    Some(state) => state.clone(),
                    None => {
                        // Topics left by their last subscriber go first: a topic that holds
                        // nothing does not count against the limit.
                        if !lock(&self.unwatched).is_empty() {
                            self.reclaim(&mut topics);
                        }
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
                            presence: BTreeSet::new(),
                            removed: false,
                        }));
                        topics.insert(topic.clone(), state.clone());
                        state
                    }
                }
            };
            let mut guard = lock(&state);
            if guard.removed {
                continue;
            }
            return Ok(f(&mut guard));
        }
    }

    /// Publishes now (the future of [`Broker::publish`] only wraps this).
    ///
    /// # Errors
    /// [`BrokerError::TooManyTopics`].
    pub fn publish_now(&self, topic: &Topic, data: &str) -> Result<Published, BrokerError> {
        inc(&self.metrics.messages_in);
        add(&self.metrics.bytes_in, data.len() as u64);
        self.with_topic(topic, |state| {
            let now = Instant::now();
            state.last_offset += 1;
            let offset = state.last_offset;
            let frame = wire::message_frame(topic, offset, data);
            // The registry's own lock is taken inside this one, never the other way round.
            self.registry.deliver(topic, &state.epoch, offset, &frame);
            let bytes = frame.len();
            let (kept, freed) = state.history.push(offset, frame, now);
            self.budget.freed(freed);
            let compact = kept && self.enter(topic, offset, bytes);
            let published = Published {
                offset,
                epoch: state.epoch.clone(),
            };
            (published, compact)
        })
        .map(|(published, compact)| {
            // Outside the topic's lock: eviction and compaction lock other topics.
            self.enforce_budget();
            if compact {
                self.compact_order();
            }
            published
        })
    }

    fn read_now(
        &self,
        topic: &Topic,
        after: u64,
        epoch: Option<&str>,
    ) -> Result<Snapshot, BrokerError> {
        self.with_topic(topic, |state| {
            self.budget.freed(state.history.expire(Instant::now()));
            let after = if epoch.is_some_and(|e| *e != *state.epoch) {
                0
            } else {
                after.min(state.last_offset)
            };
            Snapshot {
                epoch: state.epoch.clone(),
                latest: state.last_offset,
                after,
                messages: state
                    .history
                    .after(after)
                    .map(|(offset, frame)| Stored {
                        offset,
                        frame: frame.clone(),
                    })
                    .collect(),
            }
        })
    }

    fn presence_change(
        &self,
        topic: &Topic,
        client: &ClientInfo,
        join: bool,
    ) -> Result<(), BrokerError> {
        let changed = self.with_topic(topic, |state| {
            if join {
                state.presence.insert(client.clone())
            } else {
                state.presence.remove(client)
            }
        })?;
        if changed {
            let frame = wire::presence_event_frame(topic, client, join);
            self.registry.presence_event(topic, &frame);
        }
        Ok(())
    }
}

impl Broker for MemoryBroker {
    fn start(self: Arc<Self>) -> BoxFuture<'static, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a Topic,
        data: &'a str,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        let published = self.publish_now(topic, data);
        Box::pin(async move { published })
    }

    fn read<'a>(
        &'a self,
        topic: &'a Topic,
        after: u64,
        epoch: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Snapshot, BrokerError>> {
        let snapshot = self.read_now(topic, after, epoch);
        Box::pin(async move { snapshot })
    }

    fn watch<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>> {
        // Publishing always hands messages to the registry: watching only makes sure the
        // topic exists (within `max_topics`).
        let watched = self.with_topic(topic, |_| ());
        Box::pin(async move { watched })
    }

    /// Queues the topic for removal if it holds nothing (no history, no presence): it is
    /// removed when the next topic is created or at the next sweep, whichever comes first,
    /// and never counts against `max_topics` meanwhile.
    fn unwatch(&self, topic: &Topic) {
        let mut unwatched = lock(&self.unwatched);
        // Bounded: past the topic limit the sweep, which looks at every topic, is enough.
        if unwatched.len() < self.config.max_topics {
            unwatched.push(topic.clone());
        }
    }

    fn join<'a>(
        &'a self,
        topic: &'a Topic,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let joined = self.presence_change(topic, client, true);
        Box::pin(async move { joined })
    }

    fn leave<'a>(
        &'a self,
        topic: &'a Topic,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let left = self.presence_change(topic, client, false);
        Box::pin(async move { left })
    }

    fn presence<'a>(
        &'a self,
        topic: &'a Topic,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, BrokerError>> {
        let clients = lock(&self.topics)
            .get(topic)
            .map(|state| lock(state).presence.iter().cloned().collect())
            .unwrap_or_default();
        Box::pin(async move { Ok(clients) })
    }

    fn control<'a>(
        &'a self,
        command: &'a ControlCommand,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        self.registry.control(command);
        Box::pin(async { Ok(1) })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BrokerError>> {
        let nodes = vec![self.registry.node_info()];
        Box::pin(async move { Ok(nodes) })
    }

    fn is_ready(&self) -> bool {
        true
    }

    /// Forgets expired history and removes topics that nobody on this node watches, with
    /// no history and no presence (their offsets restart under a new epoch if they come
    /// back).
    fn sweep(&self) {
        let now = Instant::now();
        let held = self.history_bytes();
        {
            let mut topics = lock(&self.topics);
            lock(&self.unwatched).clear();
            topics.retain(|topic, state| {
                let mut state = lock(state);
                let idle = self.is_reclaimable(topic, &mut state, now);
                if idle {
                    state.removed = true;
                }
                !idle
            });
        }
        let freed = held.saturating_sub(self.history_bytes());
        if self.config.return_memory && freed >= RETURN_MEMORY_AFTER {
            crate::allocator::return_free_memory();
        }
    }

    fn topic_count(&self) -> usize {
        lock(&self.topics).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{DeliveryQueue, Drained};
    use crate::registry::SubscribeRequest;
    use std::time::Duration;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn engine(
        history_size: usize,
        max_topics: usize,
        ttl: Duration,
    ) -> (MemoryBroker, Arc<Registry>) {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(max_topics, metrics.clone()));
        let config = BrokerConfig {
            history_size,
            history_ttl: ttl,
            max_topics,
            ..BrokerConfig::default()
        };
        (
            MemoryBroker::new(config, registry.clone(), metrics),
            registry,
        )
    }

    fn offsets(queue: &DeliveryQueue) -> Vec<u64> {
        let mut frames = Vec::new();
        assert_eq!(queue.drain(&mut frames), Drained::Frames);
        frames
            .iter()
            .filter_map(|frame| {
                let start = if frame[1] == 126 { 4 } else { 2 };
                let value: serde_json::Value = serde_json::from_slice(&frame[start..]).ok()?;
                (value["type"] == "message").then(|| value["offset"].as_u64())?
            })
            .collect()
    }

    /// Subscribes the way the hub does: watch, read as planned, join.
    fn subscribe(
        engine: &MemoryBroker,
        registry: &Registry,
        t: &Topic,
        id: u64,
        queue: &Arc<DeliveryQueue>,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> crate::registry::Subscribed {
        registry.reserve(t).unwrap_or_else(|e| panic!("{e}"));
        engine
            .with_topic(t, |_| ())
            .unwrap_or_else(|e| panic!("{e}"));
        let request = SubscribeRequest {
            since,
            epoch,
            presence: false,
            id: None,
        };
        // As the hub does: read again while the snapshot does not fit the position.
        let mut joined = Err(crate::registry::JoinError::Retry);
        for _ in 0..3 {
            let (after, hint) = registry.read_plan(t, since, epoch);
            let snapshot = engine
                .read_now(t, after, hint.as_deref())
                .unwrap_or_else(|e| panic!("{e}"));
            joined = registry.join(t, id, queue, request, &snapshot);
            if joined.is_ok() {
                break;
            }
        }
        registry.release(t, |t| engine.unwatch(t));
        joined.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn recovery_replays_the_gap_then_live() {
        let (engine, registry) = engine(10, 10, Duration::from_secs(60));
        let chat = topic("chat");
        let first = Arc::new(DeliveryQueue::new(1 << 20));
        let sub = subscribe(&engine, &registry, &chat, 1, &first, None, None);
        assert_eq!((sub.offset, sub.recovered), (0, false));
        for n in 1..=3 {
            engine.publish_now(&chat, &n.to_string()).unwrap();
        }
        assert_eq!(offsets(&first), [1, 2, 3]);
        assert!(registry.leave(&chat, 1, |t| engine.unwatch(t)));
        for n in 4..=5 {
            engine.publish_now(&chat, &n.to_string()).unwrap();
        }
        let again = Arc::new(DeliveryQueue::new(1 << 20));
        let sub = subscribe(
            &engine,
            &registry,
            &chat,
            2,
            &again,
            Some(2),
            Some(&sub.epoch),
        );
        assert!(sub.recovered);
        assert_eq!((sub.offset, sub.replayed), (5, 3));
        engine.publish_now(&chat, "6").unwrap();
        assert_eq!(offsets(&again), [3, 4, 5, 6]);
    }

    #[test]
    fn lost_history_and_other_epochs_are_not_recovered() {
        let (engine, registry) = engine(2, 10, Duration::from_secs(60));
        let chat = topic("chat");
        for n in 1..=5 {
            engine.publish_now(&chat, &n.to_string()).unwrap();
        }
        let queue = Arc::new(DeliveryQueue::new(1 << 20));
        // Since 1: 2 and 3 are gone; 4 and 5 are replayed, recovered is false.
        let sub = subscribe(&engine, &registry, &chat, 1, &queue, Some(1), None);
        assert!(!sub.recovered);
        assert_eq!(offsets(&queue), [4, 5]);
        registry.leave(&chat, 1, |t| engine.unwatch(t));
        // Up to date: nothing missed.
        let sub = subscribe(&engine, &registry, &chat, 1, &queue, Some(5), None);
        assert!(sub.recovered);
        assert_eq!(sub.replayed, 0);
        registry.leave(&chat, 1, |t| engine.unwatch(t));
        received_nothing(&queue);
        // Another epoch: everything held is replayed, not recovered.
        let sub = subscribe(
            &engine,
            &registry,
            &chat,
            1,
            &queue,
            Some(3),
            Some("old-epoch"),
        );
        assert!(!sub.recovered);
        assert_eq!(offsets(&queue), [4, 5]);
        registry.leave(&chat, 1, |t| engine.unwatch(t));
        // Beyond the latest offset: treated like another epoch.
        let sub = subscribe(&engine, &registry, &chat, 1, &queue, Some(99), None);
        assert!(!sub.recovered);
        assert_eq!(offsets(&queue), [4, 5]);
    }

    fn received_nothing(queue: &DeliveryQueue) {
        let mut frames = Vec::new();
        queue.drain(&mut frames);
    }

    #[test]
    fn the_history_budget_forgets_the_oldest_messages_of_any_topic() {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(10, metrics.clone()));
        let frame_len = wire::message_frame(&topic("a"), 1, "\"0123456789\"").len();
        let config = BrokerConfig {
            history_size: 100,
            history_memory: 5 * frame_len,
            ..BrokerConfig::default()
        };
        let engine = MemoryBroker::new(config, registry, metrics.clone());
        for n in 1..=4 {
            engine.publish_now(&topic("a"), "\"0123456789\"").unwrap();
            engine.publish_now(&topic("b"), "\"0123456789\"").unwrap();
            assert!(engine.history_bytes() <= 5 * frame_len, "after round {n}");
        }
        // 8 messages published, 5 fit: a1 b1 a2 were the oldest.
        assert_eq!(engine.history_bytes(), 5 * frame_len);
        let held = |name: &str| -> Vec<u64> {
            let snapshot = engine.read_now(&topic(name), 0, None).unwrap();
            snapshot.messages.iter().map(|m| m.offset).collect()
        };
        assert_eq!(held("a"), [3, 4]);
        assert_eq!(held("b"), [2, 3, 4]);
        assert_eq!(metrics.history_evictions.load(Ordering::Relaxed), 3);
        assert_eq!(
            metrics.history_bytes.load(Ordering::Relaxed),
            5 * frame_len as i64
        );
    }

    #[test]
    fn messages_a_history_dropped_itself_leave_the_budget_and_its_order() {
        let (engine, _registry) = engine(2, 10, Duration::from_secs(60));
        for n in 0..5_000 {
            engine.publish_now(&topic("t"), &n.to_string()).unwrap();
        }
        let frame = wire::message_frame(&topic("t"), 4_999, "4998");
        assert!(engine.history_bytes() <= 2 * frame.len());
        assert_eq!(engine.budget.messages.load(Ordering::Relaxed), 2);
        assert!(lock(&engine.budget.order).len() <= 2 * 2 + 1024 + 1);
    }

    #[test]
    fn limits_and_sweep() {
        let (engine, registry) = engine(10, 3, Duration::ZERO);
        let queue = Arc::new(DeliveryQueue::new(1 << 20));
        subscribe(&engine, &registry, &topic("kept"), 1, &queue, None, None);
        engine.publish_now(&topic("b"), "1").unwrap();
        engine.publish_now(&topic("c"), "1").unwrap();
        assert!(matches!(
            engine.publish_now(&topic("d"), "1"),
            Err(BrokerError::TooManyTopics)
        ));
        engine.sweep();
        assert_eq!(engine.topic_count(), 1, "only the watched topic stays");
        assert_eq!(registry.subscriber_count(&topic("kept")), 1);
    }

    /// The topic table attack of RELIABILITY.md, in small: subscribers fill the table with
    /// topics that hold nothing, then leave. Their topics are forgotten at once (in the
    /// registry at the leave, in the engine before the next topic is created or at the next
    /// sweep): a new topic is accepted right away, not after the history TTL (5 minutes).
    /// Topics with history or presence stay.
    #[test]
    fn topics_that_hold_nothing_are_reclaimed_when_their_last_subscriber_leaves() {
        let (engine, registry) = engine(10, 3, Duration::from_secs(300));
        let queue = Arc::new(DeliveryQueue::new(1 << 20));
        let names = ["a", "b", "c"].map(topic);
        for t in &names {
            subscribe(&engine, &registry, t, 1, &queue, None, None);
        }
        assert_eq!((engine.topic_count(), registry.topic_count()), (3, 3));
        assert!(matches!(
            engine.publish_now(&topic("new"), "1"),
            Err(BrokerError::TooManyTopics)
        ));
        // "c" gets a message (history) before everybody leaves.
        engine.publish_now(&names[2], "kept").unwrap();
        for t in &names {
            assert!(registry.leave(t, 1, |t| engine.unwatch(t)));
        }
        assert_eq!(registry.topic_count(), 0, "the registry forgets at once");
        // Creating a topic reclaims the queued ones first: "a" and "b" go, "c" stays.
        engine.publish_now(&topic("new"), "1").unwrap();
        assert_eq!(engine.topic_count(), 2);
        let kept = engine.read_now(&names[2], 0, None).unwrap();
        assert_eq!(kept.messages.len(), 1);
        // Without a new topic, `reclaim_now` (and the sweep) do the same.
        subscribe(&engine, &registry, &topic("d"), 2, &queue, None, None);
        assert_eq!(engine.topic_count(), 3);
        assert!(registry.leave(&topic("d"), 2, |t| engine.unwatch(t)));
        engine.reclaim_now();
        assert_eq!(engine.topic_count(), 2);
        // A topic somebody still subscribes to is not reclaimed, whatever was queued.
        subscribe(&engine, &registry, &topic("e"), 3, &queue, None, None);
        engine.unwatch(&topic("e"));
        engine.reclaim_now();
        engine.sweep();
        assert_eq!(engine.topic_count(), 3);
    }

    #[test]
    fn presence_lists_clients_and_tells_presence_subscribers() {
        let (engine, registry) = engine(10, 10, Duration::from_secs(60));
        let room = topic("room");
        let watcher = Arc::new(DeliveryQueue::new(1 << 20));
        registry.reserve(&room).unwrap_or_else(|e| panic!("{e}"));
        engine.with_topic(&room, |_| ()).unwrap();
        let snapshot = engine.read_now(&room, 0, None).unwrap();
        let request = SubscribeRequest {
            presence: true,
            ..SubscribeRequest::default()
        };
        registry
            .join(&room, 1, &watcher, request, &snapshot)
            .unwrap();
        registry.release(&room, |_| {});
        let ann = ClientInfo {
            client: Arc::from("n-1"),
            user: Some(Arc::from("ann")),
        };
        engine.presence_change(&room, &ann, true).unwrap();
        engine.presence_change(&room, &ann, true).unwrap();
        let listed = futures_util::FutureExt::now_or_never(engine.presence(&room));
        assert!(matches!(listed, Some(Ok(ref clients)) if clients == std::slice::from_ref(&ann)));
        engine.presence_change(&room, &ann, false).unwrap();
        let mut frames = Vec::new();
        watcher.drain(&mut frames);
        let events: Vec<serde_json::Value> = frames
            .iter()
            .map(|f| serde_json::from_slice(&f[2..]).unwrap_or_default())
            .collect();
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds,
            ["subscribed", "join", "leave"],
            "one join for two calls"
        );
        assert_eq!(events[1]["user"], "ann");
        assert_eq!(events[1]["client"], "n-1");
    }
}
