//! This node's subscribers: which connection gets which topic, and the encode-once fan-out
//! to them.
//!
//! The engine ([`Broker`](crate::engine::Broker)) numbers messages; the registry delivers
//! them here, in order. For each topic with subscribers on this node it keeps the
//! *position*, the epoch and offset of the last message it delivered, and checks every
//! message against it:
//! - the next offset is fanned out: the same `Bytes` frame is pushed into every
//!   subscriber's [`DeliveryQueue`] without waiting;
//! - an offset at or below the position, or an older epoch, is a duplicate and is dropped;
//! - a jump (messages this node never received) or a newer epoch asks the engine for a
//!   repair ([`Delivery::Repair`]): it reads the missing range from the history and hands it
//!   to [`Registry::apply`], which delivers it in order, or, where the history no longer has
//!   it, tells every subscriber with a `gap` event. Nothing is skipped silently.
//!
//! A subscription starts with [`Registry::join`] on a [`Snapshot`] read after the engine
//! started watching the topic: the reply, the replay and the subscriber's place among the
//! live messages are settled under the topic's lock, so replay and live messages form one
//! sequence without gap or duplicate.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::deflate::{FanOutFrame, SharedDeflate};
use crate::engine::{epoch_is_newer, BrokerError, ControlCommand, Epoch, NodeInfo, Snapshot};
use crate::metrics::{add, inc, Metrics};
use crate::queue::{Control, DeliveryQueue, Overflow};
use crate::topic::Topic;
use crate::wire::{self, GapReason};

/// Identifies a connection on this node.
pub type ConnId = u64;

/// What a subscription started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The topic's latest offset when the subscription started (0: nothing published yet).
    /// Live messages have higher offsets.
    pub offset: u64,
    /// The topic's epoch.
    pub epoch: Epoch,
    /// True when `since` was given and every message after it was replayed.
    pub recovered: bool,
    /// How many messages were replayed.
    pub replayed: usize,
}

/// What a subscription asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeRequest<'a> {
    /// The last offset the client saw (recovery).
    pub since: Option<u64>,
    /// The epoch of `since`.
    pub epoch: Option<&'a str>,
    /// Whether the subscriber gets `join` and `leave` events.
    pub presence: bool,
    /// The request's `id` (JSON text), which the `subscribed` reply carries.
    pub id: Option<&'a str>,
}

/// Why a subscription failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The connection already subscribes to the topic.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// This node holds [`max_topics`](crate::engine::BrokerConfig::max_topics) topics.
    #[error("too many topics")]
    TooManyTopics,
    /// The subscriber's queue overflowed while the replay was queued.
    #[error("{0}")]
    Overflow(#[from] Overflow),
    /// The engine failed.
    #[error("{0}")]
    Broker(#[from] BrokerError),
    /// The topic's position kept moving while the subscription was being set up.
    #[error("the topic is too busy to join now; try again")]
    Busy,
}

/// What [`Registry::deliver`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Fanned out to this many subscribers.
    Delivered(usize),
    /// Nobody on this node wants the topic.
    Unwatched,
    /// A duplicate, or a message of an older epoch: dropped.
    Skipped,
    /// Messages are missing before this one (or its epoch is newer): read the history
    /// after `after` in `epoch` ([`Broker::read`](crate::engine::Broker::read)) and hand it
    /// to [`Registry::apply`], which delivers this message too.
    Repair {
        /// The last offset delivered.
        after: u64,
        /// The epoch it belongs to.
        epoch: Epoch,
    },
}

/// What [`Registry::apply`] did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing was missing, or nobody on this node wants the topic.
    Current,
    /// Missing messages were delivered (and lost ones reported with a `gap` event).
    Repaired,
    /// The snapshot is older than what was delivered: ignored.
    Stale,
    /// The snapshot starts after the last delivered offset: read again from there.
    NotCovered,
}

/// One subscriber on this node.
#[derive(Debug)]
struct Subscriber {
    queue: Arc<DeliveryQueue>,
    presence: bool,
}

/// A topic with subscribers (or subscriptions being set up) on this node.
#[derive(Debug)]
struct Local {
    /// Epoch and offset of the last message delivered here.
    position: Option<(Epoch, u64)>,
    subscribers: HashMap<ConnId, Subscriber>,
    /// Subscriptions being set up.
    joining: usize,
    /// Set once the engine watches the topic for this node.
    watched: Arc<OnceCell<()>>,
    /// Message frames delivered while fan-outs were deferred (see [`Registry::defer_fan_out`]),
    /// not yet queued to the subscribers; the position counts them already.
    pending: Vec<Bytes>,
}

impl Local {
    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.joining == 0
    }
}

/// A subscription being set up: keeps the topic on this node until
/// [`Registry::release`].
#[derive(Debug)]
pub struct Reservation {
    watched: Arc<OnceCell<()>>,
}

impl Reservation {
    /// Set once the engine watches the topic: initialise it with
    /// [`Broker::watch`](crate::engine::Broker::watch).
    pub fn watched(&self) -> &OnceCell<()> {
        &self.watched
    }
}

/// This node's connections, as the server API finds them.
#[derive(Debug, Default)]
struct Sessions {
    /// Every connection's queue (one entry per connection, so no more than that).
    queues: HashMap<ConnId, Arc<DeliveryQueue>>,
    /// The connections of each user, for those with one.
    by_user: HashMap<Arc<str>, Vec<ConnId>>,
}

/// This node's topics, subscribers and connections.
#[derive(Debug)]
pub struct Registry {
    topics: Mutex<HashMap<Topic, Arc<Mutex<Local>>>>,
    sessions: Mutex<Sessions>,
    max_topics: usize,
    metrics: Arc<Metrics>,
    /// This node's id.
    node: String,
    /// Compressed fan-out, when the hub negotiates compression.
    deflate: Option<SharedDeflate>,
    /// Topics with pending frames (deferred fan-outs), to queue at the next flush.
    deferred: Mutex<Vec<Arc<Mutex<Local>>>>,
}

/// The most pending frames whose buffer a topic keeps after a flush.
const PENDING_KEPT: usize = 64;

thread_local! {
    /// The registry (its address) whose fan-outs this thread defers, while a connection
    /// driver's turn runs; 0 for none.
    static DEFERRING: Cell<usize> = const { Cell::new(0) };
}

/// Fan-outs deferred on this thread while it lives ([`Registry::defer_fan_out`]); dropping it
/// flushes them.
#[derive(Debug)]
pub(crate) struct Deferral<'a> {
    registry: &'a Registry,
    previous: usize,
}

impl Deferral<'_> {
    /// Queues every deferred frame to its subscribers now.
    pub(crate) fn flush(&self) {
        self.registry.flush_deferred();
    }
}

impl Drop for Deferral<'_> {
    fn drop(&mut self) {
        DEFERRING.with(|deferring| deferring.set(self.previous));
        self.registry.flush_deferred();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update below leaves the state consistent before anything that could panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// An empty registry holding at most `max_topics` topics.
    pub fn new(max_topics: usize, metrics: Arc<Metrics>) -> Registry {
        Registry {
            topics: Mutex::new(HashMap::new()),
            sessions: Mutex::new(Sessions::default()),
            max_topics,
            metrics,
            node: crate::engine::epoch_suffix(),
            deflate: None,
            deferred: Mutex::new(Vec::new()),
        }
    }

    /// Defers the fan-out of messages delivered on this thread until the returned guard
    /// flushes or is dropped: a driver's turn, in which a publisher may publish many messages
    /// to one topic, then queues them to each subscriber at once (one lock, one wake-up and
    /// one touch of the subscriber's queue for all of them). Replies, presence events, joins
    /// and leaves flush a topic's pending frames first, so every subscriber still gets each
    /// topic's messages in order, once, and none published before it left is lost.
    pub(crate) fn defer_fan_out(&self) -> Deferral<'_> {
        let previous = DEFERRING.with(|deferring| deferring.replace(self.address()));
        Deferral {
            registry: self,
            previous,
        }
    }

    /// This registry's identity for [`DEFERRING`].
    fn address(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    fn is_deferring(&self) -> bool {
        DEFERRING.with(Cell::get) == self.address()
    }

    /// Queues what this thread deferred so far, if it defers this registry's fan-outs: for an
    /// answer that must follow what the same connection published before.
    pub(crate) fn flush_deferred_here(&self) {
        if self.is_deferring() {
            self.flush_deferred();
        }
    }

    /// Queues the pending frames of every topic that has some.
    fn flush_deferred(&self) {
        let topics = std::mem::take(&mut *lock(&self.deferred));
        for local in topics {
            let mut local = lock(&local);
            self.flush_pending(&mut local);
        }
    }

    /// Queues `local`'s pending frames to its subscribers.
    fn flush_pending(&self, local: &mut Local) {
        if !local.pending.is_empty() {
            let mut pending = std::mem::take(&mut local.pending);
            self.queue_frames(local, &pending);
            // The topic keeps a small buffer for its next turn, not what a flood grew.
            if pending.capacity() <= PENDING_KEPT {
                pending.clear();
                local.pending = pending;
            }
        }
    }

    /// How message frames are compressed, when they are.
    pub fn deflate(&self) -> Option<&SharedDeflate> {
        self.deflate.as_ref()
    }

    /// The same registry compressing message frames once for the subscribers that negotiated
    /// compression (`None`: every subscriber gets the plain frames).
    pub fn with_deflate(mut self, deflate: Option<SharedDeflate>) -> Registry {
        self.deflate = deflate;
        self
    }

    /// This node's id: random, 8 hex digits, the first part of its clients' ids.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The cluster-wide id of this node's connection `id`: `NODE-ID`.
    pub fn client_id(&self, id: ConnId) -> Arc<str> {
        Arc::from(format!("{}-{id}", self.node))
    }

    /// Registers connection `id` (of `user`, with delivery queue `queue`) for the server API.
    pub fn add_session(&self, id: ConnId, user: Option<Arc<str>>, queue: Arc<DeliveryQueue>) {
        let mut sessions = lock(&self.sessions);
        sessions.queues.insert(id, queue);
        if let Some(user) = user {
            sessions.by_user.entry(user).or_default().push(id);
        }
    }

    /// Forgets connection `id` (of `user`, as it was added).
    pub fn remove_session(&self, id: ConnId, user: Option<&str>) {
        let mut sessions = lock(&self.sessions);
        sessions.queues.remove(&id);
        if let Some(user) = user {
            if let Some(ids) = sessions.by_user.get_mut(user) {
                ids.retain(|held| *held != id);
                if ids.is_empty() {
                    sessions.by_user.remove(user);
                }
            }
        }
    }

    /// Carries `command` out on this node's connections; returns how many it concerned.
    pub fn control(&self, command: &ControlCommand) -> usize {
        let sessions = lock(&self.sessions);
        let of_user = |user: &str| sessions.by_user.get(user).map_or(&[][..], Vec::as_slice);
        let mut count = 0;
        let mut tell = |id: &ConnId, control: Control| {
            if let Some(queue) = sessions.queues.get(id) {
                queue.control(control);
                count += 1;
            }
        };
        match command {
            ControlCommand::Disconnect {
                user,
                client,
                code,
                reason,
            } => {
                let disconnect = || Control::Disconnect {
                    code: *code,
                    reason: reason.clone(),
                };
                let by_user = user.as_deref().map_or(&[][..], of_user);
                for id in by_user {
                    tell(id, disconnect());
                }
                let conn = client.as_deref().and_then(|client| {
                    let (node, id) = client.rsplit_once('-')?;
                    (node == self.node).then(|| id.parse::<ConnId>().ok())?
                });
                if let Some(id) = conn.filter(|id| !by_user.contains(id)) {
                    tell(&id, disconnect());
                }
            }
            ControlCommand::Unsubscribe { user, topic } => {
                let Ok(topic) = Topic::new(topic) else {
                    return 0;
                };
                for id in of_user(user) {
                    tell(
                        id,
                        Control::Unsubscribe {
                            topic: topic.clone(),
                        },
                    );
                }
            }
        }
        count
    }

    /// This node's figures for the server API.
    pub fn node_info(&self) -> NodeInfo {
        let gauge = |g: &std::sync::atomic::AtomicI64| g.load(Ordering::Relaxed).max(0) as u64;
        NodeInfo {
            node: self.node.clone(),
            connections: lock(&self.sessions).queues.len() as u64,
            subscriptions: gauge(&self.metrics.subscriptions),
            topics: self.topic_count() as u64,
        }
    }

    fn get(&self, topic: &Topic) -> Option<Arc<Mutex<Local>>> {
        lock(&self.topics).get(topic).cloned()
    }

    /// Starts setting up a subscription to `topic`. Call [`Registry::release`] when done,
    /// whatever the outcome.
    ///
    /// # Errors
    /// [`SubscribeError::TooManyTopics`].
    pub fn reserve(&self, topic: &Topic) -> Result<Reservation, SubscribeError> {
        let mut topics = lock(&self.topics);
        if !topics.contains_key(topic) && topics.len() >= self.max_topics {
            return Err(SubscribeError::TooManyTopics);
        }
        let local = topics.entry(topic.clone()).or_insert_with(|| {
            Arc::new(Mutex::new(Local {
                position: None,
                subscribers: HashMap::new(),
                joining: 0,
                pending: Vec::new(),
                watched: Arc::new(OnceCell::new()),
            }))
        });
        let mut local = lock(local);
        local.joining += 1;
        Ok(Reservation {
            watched: local.watched.clone(),
        })
    }

    /// Ends what [`Registry::reserve`] started. When the topic has no subscribers left on
    /// this node, it is forgotten and `unwatch` is called (under the registry's lock, so that
    /// the engine sees watches and unwatches in order).
    pub fn release(&self, topic: &Topic, unwatch: impl FnOnce(&Topic)) {
        let mut topics = lock(&self.topics);
        let unused = topics.get(topic).is_some_and(|local| {
            let mut local = lock(local);
            local.joining = local.joining.saturating_sub(1);
            local.is_unused()
        });
        if unused {
            topics.remove(topic);
            unwatch(topic);
        }
    }

    /// Where a subscription's read should start: `(after, epoch)` for
    /// [`Broker::read`](crate::engine::Broker::read), from this node's position and the
    /// client's `since` and `epoch`.
    pub fn read_plan(
        &self,
        topic: &Topic,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> (u64, Option<Epoch>) {
        let position = self
            .get(topic)
            .and_then(|local| lock(&local).position.clone());
        match position {
            None => (since.unwrap_or(u64::MAX), epoch.map(Arc::from)),
            Some((current, last)) => {
                let same_epoch = epoch.is_none_or(|e| *e == *current);
                let from = match since {
                    Some(since) if same_epoch && since <= last => since,
                    // Another epoch, or beyond the position: everything held is replayed.
                    Some(_) => 0,
                    None => last,
                };
                (from, Some(current))
            }
        }
    }

    /// Adds connection `id` to `topic` from `snapshot` (read as [`Registry::read_plan`]
    /// said, after the engine watched the topic).
    ///
    /// Queues the `subscribed` reply, then, with `since`, the messages after `since` up to
    /// the position (all of them when `epoch` is not the topic's or `since` is beyond the
    /// position), and reports `recovered` when that covers every message after `since` of
    /// the current epoch. Live messages follow without gap or duplicate.
    ///
    /// # Errors
    /// [`JoinError::Retry`] when the snapshot does not fit the position any more (read
    /// again), [`JoinError::Failed`] otherwise.
    pub fn join(
        &self,
        topic: &Topic,
        id: ConnId,
        queue: &Arc<DeliveryQueue>,
        request: SubscribeRequest<'_>,
        snapshot: &Snapshot,
    ) -> Result<Subscribed, JoinError> {
        let local = self.get(topic).ok_or(JoinError::Retry)?;
        let mut local = lock(&local);
        self.flush_pending(&mut local);
        if local.subscribers.contains_key(&id) {
            return Err(SubscribeError::AlreadySubscribed.into());
        }
        match self.apply_locked(topic, &mut local, snapshot) {
            Applied::Stale | Applied::NotCovered => return Err(JoinError::Retry),
            Applied::Current | Applied::Repaired => {}
        }
        let Some((epoch, last)) = local.position.clone() else {
            return Err(JoinError::Retry);
        };
        if *snapshot.epoch != *epoch || snapshot.latest < last {
            // Messages arrived after the read: read again.
            return Err(JoinError::Retry);
        }
        let same_epoch = request.epoch.is_none_or(|e| *e == *epoch);
        let (recovered, replay_from) = match request.since {
            None => (false, None),
            // Offsets of another epoch mean nothing here: everything held is new to the
            // client, and what it missed of its own epoch is lost.
            Some(since) if !same_epoch || since > last => (false, Some(0)),
            Some(since) => (snapshot.covers_from(since), Some(since)),
        };
        if replay_from.is_some_and(|from| from < snapshot.after) {
            return Err(JoinError::Retry);
        }
        let reply = wire::subscribed_frame(topic, last, &epoch, recovered, request.id);
        queue.push_reply(reply).map_err(SubscribeError::from)?;
        let mut replayed = 0;
        if let Some(from) = replay_from {
            let mut bytes = 0;
            for stored in &snapshot.messages {
                if stored.offset <= from || stored.offset > last {
                    continue;
                }
                let mut frame = FanOutFrame::new(&stored.frame, self.deflate.as_ref());
                let frame = frame.for_queue(queue);
                bytes += frame.len();
                queue
                    .push_reply(frame.clone())
                    .map_err(SubscribeError::from)?;
                replayed += 1;
            }
            add(&self.metrics.messages_out, replayed as u64);
            add(&self.metrics.bytes_out, bytes as u64);
        }
        local.subscribers.insert(
            id,
            Subscriber {
                queue: queue.clone(),
                presence: request.presence,
            },
        );
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(Subscribed {
            offset: last,
            epoch,
            recovered,
            replayed,
        })
    }

    /// Removes connection `id` from `topic`; false if it was not subscribed. When the topic
    /// has no subscribers left on this node, it is forgotten and `unwatch` is called (under
    /// the registry's lock).
    pub fn leave(&self, topic: &Topic, id: ConnId, unwatch: impl FnOnce(&Topic)) -> bool {
        let mut topics = lock(&self.topics);
        let Some(local) = topics.get(topic) else {
            return false;
        };
        let (removed, unused) = {
            let mut local = lock(local);
            self.flush_pending(&mut local);
            let removed = local.subscribers.remove(&id).is_some();
            (removed, local.is_unused())
        };
        if removed {
            self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        if unused {
            topics.remove(topic);
            unwatch(topic);
        }
        removed
    }

    /// Delivers message `offset` of `epoch` (its encoded `frame`) to this node's
    /// subscribers of `topic`, if it is the next one. Engines call it in offset order per
    /// topic.
    pub fn deliver(&self, topic: &Topic, epoch: &str, offset: u64, frame: &Bytes) -> Delivery {
        let Some(local_arc) = self.get(topic) else {
            return Delivery::Unwatched;
        };
        let mut local = lock(&local_arc);
        let Some((current, last)) = &local.position else {
            // Nobody has joined yet: the first subscription's snapshot settles the rest.
            local.position = Some((Arc::from(epoch), offset));
            return Delivery::Delivered(0);
        };
        let last = *last;
        if **current == *epoch {
            if offset <= last {
                return Delivery::Skipped;
            }
            if offset == last + 1 {
                let delivered = if self.is_deferring() {
                    if local.pending.is_empty() {
                        lock(&self.deferred).push(local_arc.clone());
                    }
                    local.pending.push(frame.clone());
                    local.subscribers.len()
                } else {
                    self.fan_out(&mut local, frame)
                };
                if let Some(position) = &mut local.position {
                    position.1 = offset;
                }
                return Delivery::Delivered(delivered);
            }
        } else if !epoch_is_newer(epoch, current) {
            return Delivery::Skipped;
        }
        Delivery::Repair {
            after: last,
            epoch: current.clone(),
        }
    }

    /// Delivers what `snapshot` holds beyond this node's position of `topic`, in order.
    /// Messages the snapshot no longer has are reported to every subscriber with a `gap`
    /// event (reason `history`), a newer epoch with a `gap` event of reason `epoch`, before
    /// the messages that follow.
    pub fn apply(&self, topic: &Topic, snapshot: &Snapshot) -> Applied {
        let Some(local) = self.get(topic) else {
            return Applied::Current;
        };
        let mut local = lock(&local);
        self.apply_locked(topic, &mut local, snapshot)
    }

    fn apply_locked(&self, topic: &Topic, local: &mut Local, snapshot: &Snapshot) -> Applied {
        let Some((epoch, last)) = local.position.clone() else {
            local.position = Some((snapshot.epoch.clone(), snapshot.latest));
            return Applied::Current;
        };
        let new_epoch = *snapshot.epoch != *epoch;
        if new_epoch && !epoch_is_newer(&snapshot.epoch, &epoch) {
            return Applied::Stale;
        }
        let from = if new_epoch { 0 } else { last };
        if !new_epoch && snapshot.latest <= last {
            return Applied::Current;
        }
        if from < snapshot.after {
            return Applied::NotCovered;
        }
        let first_held = snapshot
            .messages
            .first()
            .map_or(snapshot.latest + 1, |m| m.offset);
        let lost_to = (first_held > from + 1).then(|| first_held - 1);
        let mut position = from;
        if new_epoch || lost_to.is_some() {
            position = lost_to.unwrap_or(0);
            let reason = if new_epoch {
                GapReason::Epoch
            } else {
                GapReason::History
            };
            let frame = wire::gap_frame(topic, &snapshot.epoch, position, reason);
            inc(&self.metrics.gaps);
            self.fan_out(local, &frame);
        }
        for stored in &snapshot.messages {
            if stored.offset > position {
                self.fan_out(local, &stored.frame);
                position = stored.offset;
            }
        }
        local.position = Some((snapshot.epoch.clone(), position));
        inc(&self.metrics.repairs);
        Applied::Repaired
    }

    /// Queues `frame` (a `join` or `leave` event) to the subscribers of `topic` that asked
    /// for presence events.
    pub fn presence_event(&self, topic: &Topic, frame: &Bytes) {
        let Some(local) = self.get(topic) else {
            return;
        };
        let mut local = lock(&local);
        self.flush_pending(&mut local);
        for subscriber in local.subscribers.values().filter(|s| s.presence) {
            // An overflow closes that connection; the others go on.
            let _ = subscriber.queue.push(frame.clone());
        }
    }

    /// Queues `frame` to every subscriber of `local`, after its pending frames; returns how
    /// many took it.
    fn fan_out(&self, local: &mut Local, frame: &Bytes) -> usize {
        self.flush_pending(local);
        self.queue_frames(local, std::slice::from_ref(frame))
    }

    /// Queues `frames` (in order) to every subscriber of `local`, each subscriber's at once;
    /// returns how many took them. Those whose queue overflows are dropped (their connection
    /// closes itself as a slow consumer).
    fn queue_frames(&self, local: &mut Local, frames: &[Bytes]) -> usize {
        let mut overflowed = Vec::new();
        // Compressed once per message, when the first subscriber that negotiated compression
        // is reached.
        let mut deflated: Option<(Vec<Bytes>, usize)> = None;
        let plain_bytes: usize = frames.iter().map(Bytes::len).sum();
        let mut bytes = 0;
        for (&id, subscriber) in &local.subscribers {
            let queue = &subscriber.queue;
            let frames = match self.deflate.as_ref() {
                Some(deflate) if queue.wants_deflate() => {
                    let (deflated, size) = deflated.get_or_insert_with(|| {
                        let compressed: Vec<Bytes> = frames
                            .iter()
                            .map(|frame| deflate.compress(frame).unwrap_or_else(|| frame.clone()))
                            .collect();
                        let size = compressed.iter().map(Bytes::len).sum();
                        (compressed, size)
                    });
                    bytes += *size;
                    deflated.as_slice()
                }
                _ => {
                    bytes += plain_bytes;
                    frames
                }
            };
            if let Err(overflow) = queue.push_all(frames) {
                add(&self.metrics.drops, overflow.dropped as u64);
                overflowed.push(id);
            }
        }
        for id in &overflowed {
            local.subscribers.remove(id);
        }
        self.metrics
            .subscriptions
            .fetch_sub(overflowed.len() as i64, Ordering::Relaxed);
        let delivered = local.subscribers.len();
        add(
            &self.metrics.messages_out,
            (delivered * frames.len()) as u64,
        );
        add(&self.metrics.bytes_out, bytes as u64);
        delivered
    }

    /// This node's position in `topic`: the epoch and offset of the last message delivered.
    pub fn position(&self, topic: &Topic) -> Option<(Epoch, u64)> {
        self.get(topic)
            .and_then(|local| lock(&local).position.clone())
    }

    /// How many subscribers `topic` has on this node.
    pub fn subscriber_count(&self, topic: &Topic) -> usize {
        self.get(topic)
            .map_or(0, |local| lock(&local).subscribers.len())
    }

    /// The registry's own copy of `topic`'s name, if it has the topic: a subscriber that
    /// keeps it instead of the name its request parsed shares one allocation with the others.
    pub fn shared_name(&self, topic: &Topic) -> Option<Topic> {
        lock(&self.topics)
            .get_key_value(topic)
            .map(|(name, _)| name.clone())
    }

    /// Whether `topic` has subscribers (or subscriptions being set up) on this node.
    pub fn has_topic(&self, topic: &Topic) -> bool {
        lock(&self.topics).contains_key(topic)
    }

    /// How many topics have subscribers (or subscriptions being set up) on this node.
    pub fn topic_count(&self) -> usize {
        lock(&self.topics).len()
    }
}

/// Why [`Registry::join`] did not add the subscriber.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JoinError {
    /// The snapshot no longer fits this node's position: read again.
    #[error("read the topic again")]
    Retry,
    /// The subscription failed.
    #[error("{0}")]
    Failed(#[from] SubscribeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Stored;
    use crate::queue::Drained;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn registry() -> Registry {
        Registry::new(3, Arc::new(Metrics::default()))
    }

    fn message(t: &Topic, offset: u64) -> Stored {
        Stored {
            offset,
            frame: wire::message_frame(t, offset, &offset.to_string()),
        }
    }

    fn snapshot(
        t: &Topic,
        epoch: &str,
        after: u64,
        held: std::ops::RangeInclusive<u64>,
    ) -> Snapshot {
        Snapshot {
            epoch: Arc::from(epoch),
            latest: *held.end(),
            after,
            messages: held.filter(|&o| o > after).map(|o| message(t, o)).collect(),
        }
    }

    /// The JSON messages queued in `queue`.
    fn received(queue: &DeliveryQueue) -> Vec<serde_json::Value> {
        let mut frames = Vec::new();
        assert_eq!(queue.drain(&mut frames), Drained::Frames);
        frames
            .iter()
            .map(|frame| {
                let start = if frame[1] == 126 { 4 } else { 2 };
                serde_json::from_slice(&frame[start..]).unwrap_or_default()
            })
            .collect()
    }

    fn kinds_and_offsets(messages: &[serde_json::Value]) -> Vec<(String, u64)> {
        messages
            .iter()
            .map(|m| {
                (
                    m["type"].as_str().unwrap_or_default().to_owned(),
                    m["offset"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    }

    fn join(
        registry: &Registry,
        t: &Topic,
        id: ConnId,
        queue: &Arc<DeliveryQueue>,
        since: Option<u64>,
        epoch: Option<&str>,
        snapshot: &Snapshot,
    ) -> Result<Subscribed, JoinError> {
        let reservation = registry.reserve(t).map_err(JoinError::Failed)?;
        let _ = reservation;
        let request = SubscribeRequest {
            since,
            epoch,
            presence: false,
            id: None,
        };
        let joined = registry.join(t, id, queue, request, snapshot);
        registry.release(t, |_| {});
        joined
    }

    /// [`join`] without recovery.
    fn subscribe(
        registry: &Registry,
        t: &Topic,
        id: ConnId,
        queue: &Arc<DeliveryQueue>,
        snapshot: &Snapshot,
    ) -> Result<Subscribed, JoinError> {
        join(registry, t, id, queue, None, None, snapshot)
    }

    #[test]
    fn subscribers_share_the_registry_s_copy_of_a_topic_name() {
        let registry = registry();
        let t = topic("t");
        assert_eq!(registry.shared_name(&t), None);
        let a = Arc::new(DeliveryQueue::new(1 << 20));
        subscribe(&registry, &t, 1, &a, &snapshot(&t, "e1", 0, 0..=0)).unwrap();
        let parsed = topic("t");
        let shared = registry.shared_name(&parsed).unwrap();
        assert_eq!(shared, parsed);
        let again = registry.shared_name(&topic("t")).unwrap();
        assert!(std::ptr::eq(shared.as_str(), again.as_str()));
    }

    /// A registry with one subscriber (`a`, id 1) on topic `t`, its `subscribed` drained.
    fn one_subscriber() -> (Registry, Topic, Arc<DeliveryQueue>) {
        let registry = registry();
        let t = topic("t");
        let a = Arc::new(DeliveryQueue::new(1 << 20));
        subscribe(&registry, &t, 1, &a, &snapshot(&t, "e1", 0, 0..=0)).unwrap();
        received(&a);
        (registry, t, a)
    }

    /// Delivers message `offset` of epoch `e1` to `t`.
    fn live(registry: &Registry, t: &Topic, offset: u64) -> Delivery {
        registry.deliver(t, "e1", offset, &message(t, offset).frame)
    }

    fn offsets(queue: &DeliveryQueue) -> Vec<(String, u64)> {
        kinds_and_offsets(&received(queue))
    }

    fn messages(range: std::ops::RangeInclusive<u64>) -> Vec<(String, u64)> {
        range.map(|o| ("message".to_owned(), o)).collect()
    }

    #[test]
    fn deferred_fan_outs_are_queued_at_the_flush_all_at_once_in_order() {
        let (registry, t, a) = one_subscriber();
        {
            let deferral = registry.defer_fan_out();
            for offset in 1..=3 {
                assert_eq!(live(&registry, &t, offset), Delivery::Delivered(1));
            }
            assert_eq!(a.queued_bytes(), 0, "nothing is queued before the flush");
            assert_eq!(registry.position(&t).map(|p| p.1), Some(3));
            deferral.flush();
            assert_eq!(offsets(&a), messages(1..=3));
            live(&registry, &t, 4);
        }
        // Dropping the deferral flushed; now deliveries are queued at once.
        assert_eq!(offsets(&a), messages(4..=4));
        live(&registry, &t, 5);
        assert_eq!(offsets(&a), messages(5..=5));
    }

    #[test]
    fn a_join_or_leave_in_a_deferred_turn_keeps_every_subscriber_s_messages_exact() {
        let (registry, t, a) = one_subscriber();
        let b = Arc::new(DeliveryQueue::new(1 << 20));
        let deferral = registry.defer_fan_out();
        live(&registry, &t, 1);
        live(&registry, &t, 2);
        // b joins at offset 2: 1 and 2 are a's, queued before b is added.
        subscribe(&registry, &t, 2, &b, &snapshot(&t, "e1", 0, 0..=2)).unwrap();
        assert_eq!(offsets(&a), messages(1..=2));
        assert_eq!(offsets(&b), [("subscribed".to_owned(), 2)]);
        // a leaves after 3 was published: it still gets 3 (so does b, at the same moment).
        live(&registry, &t, 3);
        assert!(registry.leave(&t, 1, |_| {}));
        assert_eq!(offsets(&a), messages(3..=3));
        assert_eq!(offsets(&b), messages(3..=3));
        live(&registry, &t, 4);
        deferral.flush();
        assert_eq!(offsets(&b), messages(4..=4));
        assert_eq!(a.queued_bytes(), 0);
    }

    #[test]
    fn a_topic_keeps_a_small_pending_buffer_not_a_flood_s() {
        let (registry, t, a) = one_subscriber();
        let capacity = || {
            registry
                .get(&t)
                .map(|local| lock(&local).pending.capacity())
        };
        let deferral = registry.defer_fan_out();
        live(&registry, &t, 1);
        deferral.flush();
        let small = capacity().unwrap_or(0);
        assert!((1..=PENDING_KEPT).contains(&small), "{small}");
        for offset in 2..=1000 {
            live(&registry, &t, offset);
        }
        deferral.flush();
        assert_eq!(capacity(), Some(0));
        received(&a);
    }

    #[test]
    fn a_delivery_from_a_thread_that_does_not_defer_comes_after_the_pending_ones() {
        let (registry, t, a) = one_subscriber();
        let _deferral = registry.defer_fan_out();
        live(&registry, &t, 1);
        std::thread::scope(|scope| {
            scope.spawn(|| live(&registry, &t, 2));
        });
        assert_eq!(offsets(&a), messages(1..=2));
    }

    #[test]
    fn live_messages_fan_out_once_in_order() {
        let registry = registry();
        let t = topic("t");
        let a = Arc::new(DeliveryQueue::new(1 << 20));
        let b = Arc::new(DeliveryQueue::new(1 << 20));
        subscribe(&registry, &t, 1, &a, &snapshot(&t, "e1", 0, 0..=0)).unwrap();
        subscribe(&registry, &t, 2, &b, &snapshot(&t, "e1", 0, 0..=0)).unwrap();
        received(&a);
        received(&b);
        let frame = message(&t, 1).frame;
        assert_eq!(
            registry.deliver(&t, "e1", 1, &frame),
            Delivery::Delivered(2)
        );
        assert_eq!(registry.deliver(&t, "e1", 1, &frame), Delivery::Skipped);
        let (mut fa, mut fb) = (Vec::new(), Vec::new());
        a.drain(&mut fa);
        b.drain(&mut fb);
        assert_eq!(fa[0].as_ptr(), fb[0].as_ptr(), "the same allocation");
        assert_eq!(
            registry.deliver(&t, "e1", 3, &message(&t, 3).frame),
            Delivery::Repair {
                after: 1,
                epoch: Arc::from("e1")
            }
        );
        assert_eq!(
            registry.deliver(&topic("other"), "e1", 1, &frame),
            Delivery::Unwatched
        );
    }

    #[test]
    fn a_repair_delivers_the_missing_range_in_order() {
        let registry = registry();
        let t = topic("t");
        let a = Arc::new(DeliveryQueue::new(1 << 20));
        subscribe(&registry, &t, 1, &a, &snapshot(&t, "e1", 0, 1..=2)).unwrap();
        received(&a);
        // 3 and 4 were missed, 5 arrives: the engine reads after 2.
        assert!(matches!(
            registry.deliver(&t, "e1", 5, &message(&t, 5).frame),
            Delivery::Repair { after: 2, .. }
        ));
        assert_eq!(
            registry.apply(&t, &snapshot(&t, "e1", 2, 1..=5)),
            Applied::Repaired
        );
        let got = kinds_and_offsets(&received(&a));
        assert_eq!(
            got,
            [
                ("message".into(), 3),
                ("message".into(), 4),
                ("message".into(), 5)
            ]
        );
        // A stale or covered snapshot changes nothing.
        assert_eq!(
            registry.apply(&t, &snapshot(&t, "e1", 2, 1..=5)),
            Applied::Current
        );
        assert_eq!(
            registry.apply(&t, &snapshot(&t, "e0", 0, 1..=9)),
            Applied::Stale
        );
        assert_eq!(
            registry.apply(&t, &snapshot(&t, "e1", 7, 1..=9)),
            Applied::NotCovered
        );
        assert!(received(&a).is_empty());
    }

    #[test]
    fn lost_history_and_new_epochs_are_told_not_skipped() {
        let registry = registry();
        let t = topic("t");
        let a = Arc::new(DeliveryQueue::new(1 << 20));
        subscribe(&registry, &t, 1, &a, &snapshot(&t, "e1", 0, 1..=2)).unwrap();
        received(&a);
        // The history lost 3..=5; 6..=7 are held.
        assert_eq!(
            registry.apply(&t, &snapshot(&t, "e1", 2, 6..=7)),
            Applied::Repaired
        );
        let got = received(&a);
        assert_eq!(got[0]["type"], "gap");
        assert_eq!(got[0]["reason"], "history");
        assert_eq!(got[0]["offset"], 5);
        assert_eq!(got[0]["epoch"], "e1");
        assert_eq!(
            kinds_and_offsets(&got[1..]),
            [("message".into(), 6), ("message".into(), 7)]
        );
        // A newer epoch (Redis lost its data): told, then its messages from 1.
        assert!(matches!(
            registry.deliver(&t, "e2", 2, &message(&t, 2).frame),
            Delivery::Repair { .. }
        ));
        assert_eq!(
            registry.apply(&t, &snapshot(&t, "e2", 0, 1..=2)),
            Applied::Repaired
        );
        let got = received(&a);
        assert_eq!(got[0]["type"], "gap");
        assert_eq!(got[0]["reason"], "epoch");
        assert_eq!(got[0]["epoch"], "e2");
        assert_eq!(got[0]["offset"], 0);
        assert_eq!(
            kinds_and_offsets(&got[1..]),
            [("message".into(), 1), ("message".into(), 2)]
        );
        assert_eq!(registry.position(&t), Some((Arc::from("e2"), 2)));
        // The older epoch is stale now.
        assert_eq!(
            registry.deliver(&t, "e1", 8, &message(&t, 8).frame),
            Delivery::Skipped
        );
    }

    #[test]
    fn join_replays_up_to_the_position_then_live() {
        let registry = registry();
        let t = topic("chat");
        let first = Arc::new(DeliveryQueue::new(1 << 20));
        subscribe(&registry, &t, 1, &first, &snapshot(&t, "e1", 0, 1..=5)).unwrap();
        // A second client recovers from 2: replay 3..=5, recovered.
        let second = Arc::new(DeliveryQueue::new(1 << 20));
        assert_eq!(
            registry.read_plan(&t, Some(2), Some("e1")),
            (2, Some(Arc::from("e1")))
        );
        let joined = join(
            &registry,
            &t,
            2,
            &second,
            Some(2),
            Some("e1"),
            &snapshot(&t, "e1", 2, 1..=5),
        )
        .unwrap();
        assert!(joined.recovered);
        assert_eq!((joined.offset, joined.replayed), (5, 3));
        registry.deliver(&t, "e1", 6, &message(&t, 6).frame);
        let got = received(&second);
        assert_eq!(got[0]["type"], "subscribed");
        assert_eq!(got[0]["recovered"], true);
        assert_eq!(
            kinds_and_offsets(&got[1..]),
            [
                ("message".into(), 3),
                ("message".into(), 4),
                ("message".into(), 5),
                ("message".into(), 6)
            ]
        );
        // A snapshot older than the position: read again.
        let third = Arc::new(DeliveryQueue::new(1 << 20));
        assert!(matches!(
            join(
                &registry,
                &t,
                3,
                &third,
                Some(2),
                Some("e1"),
                &snapshot(&t, "e1", 2, 1..=5)
            ),
            Err(JoinError::Retry)
        ));
        // Another epoch: everything held, not recovered.
        let joined = join(
            &registry,
            &t,
            3,
            &third,
            Some(9),
            Some("old"),
            &snapshot(&t, "e1", 0, 4..=6),
        )
        .unwrap();
        assert!(!joined.recovered);
        assert_eq!(joined.replayed, 3);
        // History that no longer reaches back: what is held, not recovered.
        let fourth = Arc::new(DeliveryQueue::new(1 << 20));
        let joined = join(
            &registry,
            &t,
            4,
            &fourth,
            Some(1),
            Some("e1"),
            &snapshot(&t, "e1", 1, 4..=6),
        )
        .unwrap();
        assert!(!joined.recovered);
        assert_eq!(joined.replayed, 3);
        assert!(matches!(
            join(
                &registry,
                &t,
                4,
                &fourth,
                None,
                None,
                &snapshot(&t, "e1", 6, 6..=6)
            ),
            Err(JoinError::Failed(SubscribeError::AlreadySubscribed))
        ));
    }

    #[test]
    fn topics_are_forgotten_with_their_last_subscriber() {
        let registry = registry();
        let queue = Arc::new(DeliveryQueue::new(1 << 20));
        let mut unwatched = Vec::new();
        for name in ["a", "b", "c"] {
            subscribe(
                &registry,
                &topic(name),
                1,
                &queue,
                &snapshot(&topic(name), "e", 0, 0..=0),
            )
            .unwrap();
        }
        assert!(matches!(
            registry.reserve(&topic("d")),
            Err(SubscribeError::TooManyTopics)
        ));
        assert!(registry.leave(&topic("a"), 1, |t| unwatched.push(t.clone())));
        assert!(!registry.leave(&topic("a"), 1, |t| unwatched.push(t.clone())));
        assert_eq!(unwatched, [topic("a")]);
        assert_eq!(registry.topic_count(), 2);
        assert!(registry.reserve(&topic("d")).is_ok());
    }

    #[test]
    fn a_slow_subscriber_is_dropped_alone() {
        let registry = registry();
        let t = topic("t");
        let slow = Arc::new(DeliveryQueue::new(200));
        let fast = Arc::new(DeliveryQueue::new(1 << 20));
        subscribe(&registry, &t, 1, &slow, &snapshot(&t, "e", 0, 0..=0)).unwrap();
        subscribe(&registry, &t, 2, &fast, &snapshot(&t, "e", 0, 0..=0)).unwrap();
        received(&fast);
        for offset in 1..=10 {
            let frame = wire::message_frame(&t, offset, &format!("\"{offset:040}\""));
            registry.deliver(&t, "e", offset, &frame);
        }
        assert!(slow.is_overflowed());
        assert_eq!(registry.subscriber_count(&t), 1);
        assert_eq!(received(&fast).len(), 10);
        assert_eq!(registry.metrics.subscriptions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_server_api_finds_connections_by_user_and_by_client_once_each() {
        let registry = registry();
        let queues: Vec<_> = (0..3)
            .map(|_| Arc::new(DeliveryQueue::new(1 << 20)))
            .collect();
        let ann: Arc<str> = Arc::from("ann");
        registry.add_session(1, Some(ann.clone()), queues[0].clone());
        registry.add_session(2, Some(ann.clone()), queues[1].clone());
        registry.add_session(3, None, queues[2].clone());
        let disconnect = |user: Option<&str>, client: Option<String>| {
            registry.control(&ControlCommand::Disconnect {
                user: user.map(str::to_owned),
                client,
                code: 4000,
                reason: String::new(),
            })
        };
        let client = |id: u64| Some(format!("{}-{id}", registry.node()));
        // Both of ann's connections; her first named again as the client counts once.
        assert_eq!(disconnect(Some("ann"), client(1)), 2);
        assert_eq!(disconnect(Some("ann"), client(3)), 3);
        assert_eq!(disconnect(None, client(3)), 1);
        assert_eq!(disconnect(Some("bob"), None), 0);
        assert_eq!(disconnect(None, Some("elsewhere-3".into())), 0);
        assert_eq!(queues[0].take_control().len(), 2);
        assert_eq!(queues[1].take_control().len(), 2);
        assert_eq!(queues[2].take_control().len(), 2);
        let unsubscribe = |user: &str| {
            registry.control(&ControlCommand::Unsubscribe {
                user: user.to_owned(),
                topic: "t".to_owned(),
            })
        };
        assert_eq!(unsubscribe("ann"), 2);
        // A connection that leaves is no longer found, and neither is a user without any.
        registry.remove_session(1, Some(&ann));
        assert_eq!(unsubscribe("ann"), 1);
        registry.remove_session(2, Some(&ann));
        assert_eq!(unsubscribe("ann"), 0);
        assert!(lock(&registry.sessions).by_user.is_empty());
        assert_eq!(registry.node_info().connections, 1);
    }
}
