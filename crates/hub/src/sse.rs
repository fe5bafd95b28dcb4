//! Server-Sent Events: `GET /sse?topic=A&topic=B` streams the topics' messages as
//! `text/event-stream`, for clients that cannot open a WebSocket (see PROTOCOL.md, "SSE").
//!
//! A stream is a subscriber of the [`registry`](crate::registry) like a WebSocket
//! connection: the same grants, hooks and limits, the same join with recovery, the same
//! bounded [`DeliveryQueue`] and slow-consumer policy. The registry queues the same encoded frames
//! it queues to WebSockets; the stream takes the JSON text out of each frame (a slice of the
//! same `Bytes`, no copy, no second serialisation) and writes it as one event:
//!
//! ```text
//! id: 6b165f757cd148abd9b77:46,6b16600a1c43e2f0a4b01:12
//! data: {"type":"message","topic":"chat","offset":46,"data":{"text":"hi"}}
//!
//! ```
//!
//! The `id` is the stream's position in every topic, in the order of the `topic`
//! parameters: `EPOCH:OFFSET` per topic, separated by commas ([`EventId`]). A browser's
//! `EventSource` sends it back as `Last-Event-ID` when it reconnects, and the stream resumes
//! every topic from there, as a WebSocket `subscribe` with `since` and `epoch` does; what the
//! history no longer holds is told with a `gap` event.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ORIGIN, VARY};
use http::{Request, Response, StatusCode};
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use crate::auth::Grants;
use crate::engine::BrokerError;
use crate::metrics::{inc, Transport};
use crate::queue::{Control, DeliveryQueue, Drained};
use crate::registry::{ConnId, SubscribeError, SubscribeRequest};
use crate::topic::{Topic, TopicError};
use crate::wire::{self, GapReason};
use crate::{hooks, Hub, Slot};

/// The path of the event stream.
pub const SSE_PATH: &str = "/sse";

/// How often an idle stream sends a comment (`: ping`), so that proxies keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The reconnection delay sent in `retry:` is this plus up to as much again at random, so
/// that clients dropped together (a restart) do not all come back at the same moment.
pub const RETRY_BASE: Duration = Duration::from_millis(1000);

/// Payloads at least this long are written as their own chunk, without copying.
const LARGE_EVENT: usize = 16 << 10;

/// A batch of small events is cut into chunks of about this size.
const CHUNK_BYTES: usize = 64 << 10;

/// The longest epoch an event id may carry (epochs of this crate have 21 characters).
const MAX_EPOCH_LEN: usize = 64;

/// Why a `GET /sse` request is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No `topic` parameter.
    #[error("name at least one topic: /sse?topic=NAME")]
    NoTopic,
    /// A `topic` parameter that is not a valid topic name.
    #[error("invalid topic {name:?}: {error}")]
    InvalidTopic {
        /// The name as given (percent-decoded).
        name: String,
        /// What is wrong with it.
        error: TopicError,
    },
    /// The same topic twice.
    #[error("topic {0} is listed twice")]
    DuplicateTopic(String),
    /// More topics than a connection may subscribe to.
    #[error("at most {0} topics per stream")]
    TooManyTopics(usize),
    /// A parameter whose percent-encoding is broken or is not UTF-8.
    #[error("the {0} parameter is not valid percent-encoded UTF-8")]
    BadEncoding(&'static str),
    /// `since` or `Last-Event-ID` is not an event id of this stream's topics.
    #[error("{source_name} is not an event id of these topics: {reason}")]
    BadEventId {
        /// `since` or `Last-Event-ID`.
        source_name: &'static str,
        /// Why.
        reason: EventIdError,
    },
}

/// Why an event id does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventIdError {
    /// It has another number of entries than the stream has topics.
    #[error("{entries} entries for {topics} topics")]
    Entries {
        /// Entries in the id.
        entries: usize,
        /// Topics of the stream.
        topics: usize,
    },
    /// An offset that is not a non-negative integer.
    #[error("bad offset {0:?}")]
    Offset(String),
    /// An epoch that is empty, too long or not alphanumeric.
    #[error("bad epoch {0:?}")]
    Epoch(String),
}

/// A stream's position in one topic: the last offset it delivered, in `epoch` (`None`:
/// the topic's current epoch, as a WebSocket `since` without `epoch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The epoch of `offset`.
    pub epoch: Option<Box<str>>,
    /// The offset.
    pub offset: u64,
}

/// An event id: a [`Position`] per topic of the stream, in the order of its `topic`
/// parameters (`None`: nothing to resume, as a `subscribe` without `since`).
///
/// Its text is the entries separated by `,`, each `EPOCH:OFFSET`, `OFFSET` (the current
/// epoch) or empty:
///
/// ```
/// use fullduplex_hub::sse::EventId;
/// let id = EventId::parse("6b165f757cd148abd9b77:46,,12", 3).unwrap();
/// assert_eq!(id.to_string(), "6b165f757cd148abd9b77:46,,12");
/// assert_eq!(id.positions()[2].as_ref().map(|p| p.offset), Some(12));
/// assert!(EventId::parse("1,2", 3).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId(Vec<Option<Position>>);

impl EventId {
    /// Parses the id of a stream of `topics` topics.
    ///
    /// # Errors
    /// [`EventIdError`] when the text is not such an id.
    pub fn parse(text: &str, topics: usize) -> Result<EventId, EventIdError> {
        let entries = text.split(',').count();
        if entries != topics {
            return Err(EventIdError::Entries { entries, topics });
        }
        let mut positions = Vec::with_capacity(topics);
        for entry in text.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                positions.push(None);
                continue;
            }
            let (epoch, offset) = match entry.rsplit_once(':') {
                Some((epoch, offset)) => (Some(epoch), offset),
                None => (None, entry),
            };
            let valid_offset = !offset.is_empty() && offset.bytes().all(|b| b.is_ascii_digit());
            let offset = valid_offset
                .then(|| offset.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| EventIdError::Offset(offset.to_owned()))?;
            if let Some(epoch) = epoch {
                let valid = !epoch.is_empty()
                    && epoch.len() <= MAX_EPOCH_LEN
                    && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
                if !valid {
                    return Err(EventIdError::Epoch(epoch.to_owned()));
                }
            }
            positions.push(Some(Position {
                epoch: epoch.map(Box::from),
                offset,
            }));
        }
        Ok(EventId(positions))
    }

    /// The position in each topic.
    pub fn positions(&self) -> &[Option<Position>] {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, position) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write_position(f, position.as_ref())?;
        }
        Ok(())
    }
}

fn write_position(out: &mut impl std::fmt::Write, position: Option<&Position>) -> std::fmt::Result {
    match position {
        None => Ok(()),
        Some(Position {
            epoch: Some(epoch),
            offset,
        }) => write!(out, "{epoch}:{offset}"),
        Some(Position {
            epoch: None,
            offset,
        }) => write!(out, "{offset}"),
    }
}

/// What a `GET /sse` query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseQuery {
    /// The topics, in order.
    pub topics: Vec<Topic>,
    /// Where to resume (`since`, or the `Last-Event-ID` header, which wins).
    pub resume: Option<EventId>,
}

/// Parses the query of `GET /sse` and the `Last-Event-ID` header: `topic` (repeated, at
/// least one, at most `max_topics`, no duplicates) and `since` (an event id of those
/// topics). `token` and unknown parameters are ignored.
///
/// # Errors
/// [`QueryError`]: the answer is 400 with its text.
///
/// ```
/// use fullduplex_hub::sse::parse_query;
/// let query = parse_query(Some("topic=a&topic=b&since=e1%3A4%2C"), None, 10).unwrap();
/// assert_eq!(query.topics.len(), 2);
/// assert_eq!(query.resume.unwrap().to_string(), "e1:4,");
/// assert!(parse_query(Some("topic=a&topic=a"), None, 10).is_err());
/// assert!(parse_query(Some("x=1"), None, 10).is_err());
/// ```
pub fn parse_query(
    query: Option<&str>,
    last_event_id: Option<&str>,
    max_topics: usize,
) -> Result<SseQuery, QueryError> {
    let mut topics: Vec<Topic> = Vec::new();
    let mut since = None;
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "topic" => {
                let name = percent_decode(value).ok_or(QueryError::BadEncoding("topic"))?;
                let topic = Topic::new(&name).map_err(|error| QueryError::InvalidTopic {
                    name: name.clone().into_owned(),
                    error,
                })?;
                if topics.contains(&topic) {
                    return Err(QueryError::DuplicateTopic(name.into_owned()));
                }
                if topics.len() >= max_topics {
                    return Err(QueryError::TooManyTopics(max_topics));
                }
                topics.push(topic);
            }
            "since" => {
                since = Some(percent_decode(value).ok_or(QueryError::BadEncoding("since"))?);
            }
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(QueryError::NoTopic);
    }
    let header = last_event_id.map(str::trim).filter(|id| !id.is_empty());
    let resume = match (header, since.as_deref().filter(|s| !s.is_empty())) {
        (Some(id), _) => Some(("Last-Event-ID", id)),
        (None, Some(since)) => Some(("since", since)),
        (None, None) => None,
    };
    let resume = resume
        .map(|(source_name, text)| {
            EventId::parse(text, topics.len()).map_err(|reason| QueryError::BadEventId {
                source_name,
                reason,
            })
        })
        .transpose()?;
    Ok(SseQuery { topics, resume })
}

/// Decodes `%XX` escapes and `+` (a space); `None` for a broken escape or text that is not
/// UTF-8.
fn percent_decode(text: &str) -> Option<Cow<'_, str>> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The body of an event stream: chunks of events until the stream ends. Dropping it (the
/// client went away) leaves the stream's topics.
pub struct SseBody {
    chunks: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
}

impl std::fmt::Debug for SseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseBody").finish_non_exhaustive()
    }
}

impl SseBody {
    /// The next chunk of the stream (`None`: it ended).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.chunks.poll_next_unpin(cx)
    }
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|chunk| Ok(hyper::body::Frame::data(chunk))))
    }
}

/// A refused request: its status and the text of its body.
type Refusal = (StatusCode, String);

/// `GET /sse`: the Origin, query, token, connect hook, grant, connection limit and
/// subscribe hook checks, the subscriptions (with recovery), then the stream. Every refusal
/// comes before the first byte of the stream, as an HTTP status: 400 (query), 401 (token),
/// 403 (Origin, grants, hooks), 503 (limits, shutdown, engine).
pub(crate) async fn handle<B>(hub: Arc<Hub>, request: Request<B>) -> Response<SseBody> {
    // Over HTTP/1.1 the connection ends with its stream: it gave its HTTP permit back.
    let http1 = request.version() < http::Version::HTTP_2;
    let origin = request
        .headers()
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match open(hub, request).await {
        Ok(body) => {
            let mut response = Response::new(body);
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            if http1 {
                headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            // The Origin passed the hub's policy: a page of that origin may read the stream.
            if let Some(value) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
                headers.insert("access-control-allow-origin", value);
                headers.insert(
                    "access-control-allow-credentials",
                    HeaderValue::from_static("true"),
                );
                headers.insert(VARY, HeaderValue::from_static("origin"));
            }
            response
        }
        Err((status, text)) => {
            let mut response = Response::new(SseBody {
                chunks: Box::pin(futures_util::stream::once(std::future::ready(Bytes::from(
                    text + "\n",
                )))),
            });
            *response.status_mut() = status;
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
    }
}

/// The checks and subscriptions of a new stream; its body, or why not.
async fn open<B>(hub: Arc<Hub>, request: Request<B>) -> Result<SseBody, Refusal> {
    let query = parse_query(
        request.uri().query(),
        request
            .headers()
            .get("last-event-id")
            .and_then(|v: &HeaderValue| v.to_str().ok()),
        hub.config.max_subscriptions,
    )
    .map_err(|error| (StatusCode::BAD_REQUEST, error.to_string()))?;
    let crate::http::Admitted {
        grants, headers, ..
    } = crate::http::admit(&hub, &request).await?;
    if let Some(topic) = query
        .topics
        .iter()
        .find(|t| !grants.may_subscribe(t.as_str()))
    {
        return Err((
            StatusCode::FORBIDDEN,
            format!("subscribing to topic {topic} is not allowed"),
        ));
    }
    let slot = hub.reserve_slot(Transport::Sse).ok_or_else(|| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections".to_owned(),
        )
    })?;
    let id = hub.next_conn_id();
    if hub.hooks.has_subscribe_hook() {
        let client = hub.client_id(id);
        for topic in &query.topics {
            let hook = hooks::SubscribeRequest {
                event: "subscribe",
                client: &client,
                user: grants.user().map(|u| &**u),
                topic: topic.as_str(),
                headers: &headers,
            };
            hub.hooks
                .subscribe(&hook)
                .await
                .map_err(|denied| (StatusCode::FORBIDDEN, denied.to_string()))?;
        }
    }
    // From here the stream exists: dropping it (a refusal below, or the client leaving
    // while the subscriptions are made) leaves what it joined.
    // On HTTP/1.1 an overflow also closes the connection (see `ConnectionAbort`).
    let abort = (request.version() != http::Version::HTTP_2)
        .then(|| request.extensions().get::<crate::server::ConnectionAbort>())
        .flatten()
        .map(|abort| abort.0.clone());
    let mut stream = SseStream::new(hub.clone(), id, slot, &grants, query.topics, abort);
    let resume = query.resume.map(|id| id.0);
    for index in 0..stream.topics.len() {
        let wanted = resume
            .as_ref()
            .and_then(|positions| positions.get(index).cloned().flatten());
        stream.subscribe(index, wanted).await?;
    }
    // A permit of `max_http_connections` is for short requests: the stream now counts
    // against `max_connections`.
    if let Some(permit) = request.extensions().get::<crate::server::HttpPermit>() {
        permit.release();
    }
    let chunks = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((chunk, stream))
    });
    Ok(SseBody {
        chunks: Box::pin(chunks),
    })
}

/// One topic of a stream.
#[derive(Debug)]
struct TopicState {
    topic: Topic,
    /// What the client has: the last offset delivered (or the position it resumes from).
    position: Option<Position>,
    /// Still in the registry (not unsubscribed by the server API).
    subscribed: bool,
    /// Set by the subscription until its `subscribed` event is written: the position it
    /// starts from, and the `gap` event to send after it when the recovery was incomplete.
    start: Option<(Position, Option<GapReason>)>,
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing written yet: `retry:` comes first.
    Start,
    /// Events flow.
    Open,
    /// The last chunks are queued in `pending`.
    Done,
}

/// An open event stream: a registry subscriber with its queue, and the events being
/// written.
struct SseStream {
    hub: Arc<Hub>,
    id: ConnId,
    queue: Arc<DeliveryQueue>,
    topics: Vec<TopicState>,
    /// The token's expiry: the stream ends then (an event stream cannot be refreshed).
    expiry: Option<Pin<Box<Sleep>>>,
    heartbeat: Interval,
    phase: Phase,
    /// Frames drained from the queue.
    frames: Vec<Bytes>,
    /// Events being written.
    buf: BytesMut,
    /// Chunks ready to go out, in order.
    pending: VecDeque<Bytes>,
    /// The user the stream was registered under.
    user: Option<Arc<str>>,
    _slot: Slot,
}

impl Drop for SseStream {
    /// The stream ended or its client went away: it leaves its topics and no longer counts.
    fn drop(&mut self) {
        for state in &self.topics {
            if state.subscribed {
                self.hub.unsubscribe(&state.topic, self.id);
            }
        }
        self.hub
            .registry
            .remove_session(self.id, self.user.as_deref());
    }
}

impl SseStream {
    fn new(
        hub: Arc<Hub>,
        id: ConnId,
        slot: Slot,
        grants: &Grants,
        topics: Vec<Topic>,
        abort: Option<Arc<tokio::sync::Notify>>,
    ) -> Self {
        let mut queue = DeliveryQueue::new(hub.config.max_queued_bytes);
        if let Some(abort) = abort {
            queue = queue.with_overflow_signal(abort);
        }
        let queue = Arc::new(queue);
        let user = grants.user().cloned();
        hub.registry.add_session(id, user.clone(), queue.clone());
        let period = hub.config.sse_heartbeat.max(Duration::from_millis(10));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        SseStream {
            expiry: grants.expires().map(|expires| {
                Box::pin(tokio::time::sleep_until(crate::conn::instant_of(expires)))
            }),
            topics: topics
                .into_iter()
                .map(|topic| TopicState {
                    topic,
                    position: None,
                    subscribed: false,
                    start: None,
                })
                .collect(),
            queue,
            heartbeat,
            phase: Phase::Start,
            frames: Vec::new(),
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            user,
            id,
            hub,
            _slot: slot,
        }
    }

    /// Subscribes to topic `index`, resuming from `wanted` when given.
    async fn subscribe(&mut self, index: usize, wanted: Option<Position>) -> Result<(), Refusal> {
        let topic = self.topics[index].topic.clone();
        let request = SubscribeRequest {
            since: wanted.as_ref().map(|p| p.offset),
            epoch: wanted.as_ref().and_then(|p| p.epoch.as_deref()),
            presence: false,
            id: None,
        };
        let subscribed = self
            .hub
            .subscribe(&topic, self.id, &self.queue, request)
            .await
            .map_err(|error| match error {
                SubscribeError::TooManyTopics
                | SubscribeError::Broker(BrokerError::TooManyTopics) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server holds too many topics".to_owned(),
                ),
                error => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot subscribe to {topic}: {error}"),
                ),
            })?;
        let state = &mut self.topics[index];
        state.subscribed = true;
        let epoch = Some(Box::from(&*subscribed.epoch));
        // The replay is the `replayed` messages up to `offset`, consecutive.
        let start = match (&wanted, subscribed.recovered) {
            (None, _) => (
                Position {
                    epoch,
                    offset: subscribed.offset,
                },
                None,
            ),
            (Some(wanted), true) => (
                Position {
                    epoch,
                    offset: wanted.offset,
                },
                None,
            ),
            (Some(wanted), false) => {
                let other_epoch = wanted
                    .epoch
                    .as_deref()
                    .is_some_and(|e| *e != *subscribed.epoch);
                let reason = if other_epoch {
                    GapReason::Epoch
                } else {
                    GapReason::History
                };
                let lost_to = subscribed.offset.saturating_sub(subscribed.replayed as u64);
                (
                    Position {
                        epoch,
                        offset: lost_to,
                    },
                    Some(reason),
                )
            }
        };
        state.position = wanted;
        state.start = Some(start);
        Ok(())
    }

    /// The next chunk to write; `None` once the stream has ended.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Start => {
                    let jitter = u64::from(getrandom::u32().unwrap_or(0) % 1000);
                    let retry = RETRY_BASE.as_millis() as u64 * (1000 + jitter) / 1000;
                    let _ = write!(self.buf, "retry: {retry}\n\n");
                    self.flush_buf();
                    self.phase = Phase::Open;
                    continue;
                }
                Phase::Open => {}
            }
            for control in self.queue.take_control() {
                match control {
                    Control::Disconnect { code, reason } => self.end(code, &reason),
                    Control::Unsubscribe { topic } => self.unsubscribe(&topic),
                }
            }
            if self.phase == Phase::Done {
                continue;
            }
            if self.queue.drain(&mut self.frames) == Drained::Overflowed {
                inc(&self.hub.metrics.slow_consumer_disconnects);
                self.end(1013, "slow consumer");
                continue;
            }
            if !self.frames.is_empty() {
                self.write_frames();
                self.heartbeat.reset();
                continue;
            }
            let SseStream {
                hub,
                queue,
                expiry,
                heartbeat,
                ..
            } = self;
            let expiry = expiry.as_mut();
            tokio::select! {
                biased;
                _ = hub.shutdown_token().cancelled() => self.end(1001, "server shutting down"),
                _ = async {
                    match expiry {
                        Some(sleep) => sleep.await,
                        None => std::future::pending().await,
                    }
                } => self.end(4001, "token expired"),
                _ = queue.wait() => {}
                _ = heartbeat.tick() => {
                    self.pending.push_back(Bytes::from_static(b": ping\n\n"));
                }
            }
        }
    }

    /// Ends the stream: what is queued, then a `close` event with `code` and `reason` (the
    /// WebSocket close code the same cause has).
    fn end(&mut self, code: u16, reason: &str) {
        if self.phase == Phase::Done {
            return;
        }
        // After an overflow nothing is left to write (the queue was discarded).
        if self.queue.drain(&mut self.frames) == Drained::Frames {
            self.write_frames();
        }
        let data = serde_json::json!({ "code": code, "reason": reason });
        let _ = write!(self.buf, "event: close\ndata: {data}\n\n");
        self.flush_buf();
        self.phase = Phase::Done;
    }

    /// The server API took the stream out of `topic`.
    fn unsubscribe(&mut self, topic: &Topic) {
        let Some(state) = self
            .topics
            .iter_mut()
            .find(|s| s.topic == *topic && s.subscribed)
        else {
            return;
        };
        state.subscribed = false;
        self.hub.unsubscribe(topic, self.id);
        let _ = self.queue.push_reply(wire::unsubscribed_frame(topic, None));
    }

    /// Writes the drained frames as events.
    fn write_frames(&mut self) {
        let mut frames = std::mem::take(&mut self.frames);
        for frame in frames.drain(..) {
            self.write_frame(&frame);
        }
        // The (empty) vector goes back, keeping its capacity.
        self.frames = frames;
        self.flush_buf();
    }

    /// Writes one frame of the registry as an event, updating the stream's position first.
    fn write_frame(&mut self, frame: &Bytes) {
        let Some(payload) = ws_payload(frame) else {
            return;
        };
        let Some(head) = Head::scan(&payload) else {
            return self.write_event(&payload);
        };
        let Some(index) = self
            .topics
            .iter()
            .position(|s| s.topic.as_str() == head.topic)
        else {
            return self.write_event(&payload);
        };
        let state = &mut self.topics[index];
        match head.kind {
            Kind::Message => {
                if let (Some(offset), Some(position)) = (head.offset, &mut state.position) {
                    position.offset = offset;
                }
            }
            Kind::Gap => {
                if let (Some(offset), Some(epoch)) = (head.offset, head.epoch) {
                    state.position = Some(Position {
                        epoch: Some(Box::from(epoch)),
                        offset,
                    });
                }
            }
            Kind::Subscribed => {
                if let Some((start, gap)) = state.start.take() {
                    match gap {
                        None => state.position = Some(start),
                        Some(reason) => {
                            // The `subscribed` event keeps the old position; the gap moves it.
                            self.write_event(&payload);
                            let epoch = start.epoch.as_deref().unwrap_or_default();
                            let gap = wire::gap_frame(
                                &self.topics[index].topic,
                                epoch,
                                start.offset,
                                reason,
                            );
                            inc(&self.hub.metrics.gaps);
                            self.topics[index].position = Some(start);
                            if let Some(gap) = ws_payload(&gap) {
                                self.write_event(&gap);
                            }
                            return;
                        }
                    }
                }
            }
            Kind::Other => {}
        }
        self.write_event(&payload);
    }

    /// Writes `id:` (the position in every topic) and `payload` as `data:` lines.
    fn write_event(&mut self, payload: &Bytes) {
        let buf = &mut self.buf;
        buf.put_slice(b"id: ");
        for (i, state) in self.topics.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            let _ = write_position(buf, state.position.as_ref());
        }
        buf.put_slice(b"\n");
        if payload.iter().any(|&b| b == b'\n' || b == b'\r') {
            // Line breaks are whitespace in the JSON (inside strings they are escaped): one
            // `data:` line per line, which the client joins with `\n`.
            let mut rest = &payload[..];
            while !rest.is_empty() {
                let end = rest
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                    .unwrap_or(rest.len());
                buf.put_slice(b"data: ");
                buf.put_slice(&rest[..end]);
                buf.put_u8(b'\n');
                let skip = match rest.get(end..end + 2) {
                    Some(b"\r\n") => 2,
                    _ => 1,
                };
                rest = rest.get(end + skip..).unwrap_or_default();
            }
            buf.put_u8(b'\n');
        } else if payload.len() >= LARGE_EVENT {
            buf.put_slice(b"data: ");
            let head = buf.split().freeze();
            self.pending.push_back(head);
            self.pending.push_back(payload.clone());
            self.buf.put_slice(b"\n\n");
        } else {
            buf.put_slice(b"data: ");
            buf.put_slice(payload);
            buf.put_slice(b"\n\n");
        }
        inc(&self.hub.metrics.sse_events);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush_buf();
        }
    }

    /// Queues what `buf` holds as one chunk.
    fn flush_buf(&mut self) {
        if !self.buf.is_empty() {
            self.pending.push_back(self.buf.split().freeze());
        }
    }
}

/// The payload of an unmasked, unfragmented WebSocket text frame (as [`wire`] encodes
/// them): a slice of the same bytes.
fn ws_payload(frame: &Bytes) -> Option<Bytes> {
    let (&first, rest) = frame.split_first()?;
    let &second = rest.first()?;
    if first != 0x81 || second & 0x80 != 0 {
        return None;
    }
    let (start, len): (usize, u64) = match second {
        126 => (
            4,
            u64::from(u16::from_be_bytes(frame.get(2..4)?.try_into().ok()?)),
        ),
        127 => (10, u64::from_be_bytes(frame.get(2..10)?.try_into().ok()?)),
        len => (2, u64::from(len)),
    };
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end == frame.len()).then(|| frame.slice(start..end))
}

/// The kinds of server messages a stream follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Gap,
    Subscribed,
    Other,
}

/// The leading fields of a server message, read from the fixed layout [`wire`] writes
/// (`{"type":T,"topic":N,...`): enough to follow the stream's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head<'a> {
    kind: Kind,
    topic: &'a str,
    offset: Option<u64>,
    epoch: Option<&'a str>,
}

impl<'a> Head<'a> {
    fn scan(json: &'a [u8]) -> Option<Head<'a>> {
        // The leading fields are ASCII, within the first bytes.
        let prefix = &json[..json.len().min(512)];
        let json = match std::str::from_utf8(prefix) {
            Ok(text) => text,
            Err(error) => std::str::from_utf8(&prefix[..error.valid_up_to()]).ok()?,
        };
        let rest = json.strip_prefix(r#"{"type":""#)?;
        let (kind, rest) = rest.split_once('"')?;
        let rest = rest.strip_prefix(r#","topic":""#)?;
        let (topic, rest) = rest.split_once('"')?;
        let kind = match kind {
            "message" => Kind::Message,
            "gap" => Kind::Gap,
            "subscribed" => Kind::Subscribed,
            _ => Kind::Other,
        };
        let mut head = Head {
            kind,
            topic,
            offset: None,
            epoch: None,
        };
        match kind {
            Kind::Message => head.offset = number(rest.strip_prefix(r#","offset":"#)?),
            Kind::Gap => {
                let rest = rest.strip_prefix(r#","epoch":""#)?;
                let (epoch, rest) = rest.split_once('"')?;
                head.epoch = Some(epoch);
                head.offset = number(rest.strip_prefix(r#","offset":"#)?);
            }
            Kind::Subscribed | Kind::Other => {}
        }
        Some(head)
    }
}

/// The decimal number `text` starts with.
fn number(text: &str) -> Option<u64> {
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn event_ids_round_trip_and_are_checked() {
        let id = EventId::parse("abc123:7,9,", 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            id.positions(),
            [
                Some(Position {
                    epoch: Some("abc123".into()),
                    offset: 7
                }),
                Some(Position {
                    epoch: None,
                    offset: 9
                }),
                None
            ]
        );
        assert_eq!(id.to_string(), "abc123:7,9,");
        for bad in [
            "x",
            "-1",
            "e:",
            ":5",
            "e-1:5",
            "1:2:3",
            "99999999999999999999999",
        ] {
            assert!(EventId::parse(bad, 1).is_err(), "{bad}");
        }
        let long = format!("{}:1", "a".repeat(MAX_EPOCH_LEN + 1));
        assert!(EventId::parse(&long, 1).is_err());
        assert_eq!(
            EventId::parse("1,2", 1),
            Err(EventIdError::Entries {
                entries: 2,
                topics: 1
            })
        );
    }

    #[test]
    fn queries() {
        let q = parse_query(Some("topic=a&token=x&topic=b%2Ec&since=1%2C2"), None, 5)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.topics, [topic("a"), topic("b.c")]);
        assert_eq!(q.resume.map(|id| id.to_string()).as_deref(), Some("1,2"));
        // The header wins over `since`.
        let q =
            parse_query(Some("topic=a&since=1"), Some("e:4"), 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.resume.map(|id| id.to_string()).as_deref(), Some("e:4"));
        let err = |query: &str| parse_query(Some(query), None, 2).unwrap_err();
        assert_eq!(err(""), QueryError::NoTopic);
        assert!(matches!(err("topic="), QueryError::InvalidTopic { .. }));
        assert!(matches!(
            err("topic=a%20b"),
            QueryError::InvalidTopic { .. }
        ));
        assert_eq!(
            err("topic=a&topic=a"),
            QueryError::DuplicateTopic("a".into())
        );
        assert_eq!(err("topic=a&topic=b&topic=c"), QueryError::TooManyTopics(2));
        assert_eq!(err("topic=%zz"), QueryError::BadEncoding("topic"));
        assert_eq!(err("topic=%ff"), QueryError::BadEncoding("topic"));
        assert!(matches!(
            err("topic=a&since=1,2"),
            QueryError::BadEventId { .. }
        ));
        assert!(parse_query(None, None, 2).is_err());
        assert!(parse_query(Some("topic=a"), Some("x:y"), 2).is_err());
    }

    #[test]
    fn payloads_and_heads() {
        let t = topic("chat");
        let frame = wire::message_frame(&t, 46, r#"{"offset":1}"#);
        let payload = ws_payload(&frame).unwrap_or_default();
        assert_eq!(
            &payload[..],
            br#"{"type":"message","topic":"chat","offset":46,"data":{"offset":1}}"#
        );
        assert_eq!(payload.as_ptr(), frame[2..].as_ptr(), "a slice, not a copy");
        let head = Head::scan(&payload);
        assert_eq!(
            head,
            Some(Head {
                kind: Kind::Message,
                topic: "chat",
                offset: Some(46),
                epoch: None
            })
        );
        let big = wire::message_frame(&t, 1, &format!("\"{}\"", "x".repeat(70_000)));
        assert_eq!(ws_payload(&big).map(|p| p.len()), Some(big.len() - 10));
        let gap = wire::gap_frame(&t, "e1", 9, GapReason::History);
        let gap = ws_payload(&gap).unwrap_or_default();
        let head = Head::scan(&gap).unwrap_or_else(|| panic!("gap"));
        assert_eq!(
            (head.kind, head.epoch, head.offset),
            (Kind::Gap, Some("e1"), Some(9))
        );
        let subscribed = wire::subscribed_frame(&t, 3, "e1", true, None);
        let subscribed = ws_payload(&subscribed).unwrap_or_default();
        assert_eq!(
            Head::scan(&subscribed).map(|h| h.kind),
            Some(Kind::Subscribed)
        );
        assert_eq!(ws_payload(&Bytes::from_static(b"\x82\x00")), None);
        assert_eq!(ws_payload(&Bytes::from_static(b"\x81\x05ab")), None);
        assert_eq!(Head::scan(b"[1]"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
    }
}
