//! [`WebSocketSet`]: many connections driven by one task, for servers that hold very many.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use fullduplex_proto::{CloseFrame, DataKind, Message, MessageRef, Outbox};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::coop;

use crate::error::{Error, UsageError};
use crate::poll::PollSocket;
use crate::socket::WebSocket;

/// How many events in a row one connection may deliver before the others get their turn.
const STREAK: u32 = 32;

/// Names one connection in a [`WebSocketSet`]. A key is never reused: once its connection
/// has left the set, the key addresses nothing, even when a new connection takes the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    /// The slot this key points at: small, dense numbers (for per-connection tables beside
    /// the set). Slots are reused; keys are not.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// Many WebSocket connections driven by the one task that owns the set, instead of one task
/// each.
///
/// A tokio task costs every connection its header and a future rounded up to 128-byte steps
/// (cache-line aligned); a connection in a set costs its [`WebSocket`] and a 16-byte waker.
/// For a server that keeps tens of thousands of mostly idle connections (push, chat,
/// notifications) this is the smallest way to hold them: about 750 bytes per idle TCP
/// connection including tokio's I/O registration, against about 1,200 with a task each.
///
/// [`recv`](WebSocketSet::recv) yields the next message of any connection with the key it
/// came from; [`feed`](WebSocketSet::feed) queues a message on one connection, and what is
/// queued is written when the set next polls that connection (a connection's replies to one
/// batch of reads leave in one write, as with [`WebSocket::feed`]);
/// [`recv_many`](WebSocketSet::recv_many) lends one connection's messages at a time to a
/// handler that answers through an outbox, the fastest way to reply. Everything a
/// `WebSocket` does by itself (automatic pongs, the close handshake, keepalive and idle
/// timers) goes on inside the set.
///
/// Backpressure works as in an echo loop over one `WebSocket`: a connection whose write
/// buffer is at [`Config::write_buffer_limit`](crate::Config::write_buffer_limit) delivers no
/// further events until the peer has taken enough of it. `feed` itself never refuses a
/// message for a full buffer; a server that pushes without being asked checks
/// [`buffered_amount`](WebSocketSet::buffered_amount) and applies its own slow-consumer
/// policy.
///
/// The set does its work while [`recv`](WebSocketSet::recv) is polled: that is when it
/// writes what was fed, reads, answers pings and runs the timers. A server that only pushes
/// still keeps a `recv` going (in a `tokio::select!` beside whatever produces its pushes).
///
/// All connections of a set run on the task that polls it, so one set uses one core; a
/// multi-threaded server keeps one set per thread. Poll a set in a task on a runtime whose
/// thread also polls the sockets, not from the `block_on` of a multi-thread runtime (the
/// body of `#[tokio::main]`), where every readiness event would wake the main thread from a
/// worker: [`SetThreads`](crate::SetThreads) starts threads with a runtime each for sets. Connections are served in the order they
/// were woken, and a busy connection goes to the back after 32 deliveries in a row. When
/// tokio's cooperative budget for the task is spent, the set stops where it is (the waiting
/// connections keep their places) and yields to the runtime.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use fullduplex::{Message, WebSocketSet};
/// use tokio::task::JoinSet;
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let mut set = WebSocketSet::new();
/// let mut handshakes = JoinSet::new();
/// loop {
///     tokio::select! {
///         accepted = listener.accept() => {
///             let (tcp, _) = accepted?;
///             handshakes.spawn(fullduplex::accept(tcp));
///         }
///         Some(Ok(Ok(ws))) = handshakes.join_next() => {
///             set.insert(ws);
///         }
///         (key, message) = set.recv() => match message {
///             Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
///                 set.feed(key, message).ok();
///             }
///             Some(_) => {}  // pings, pongs, the peer's close, errors
///             None => {}     // the connection is over and has left the set
///         },
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct WebSocketSet<S> {
    slots: Vec<Slot<S>>,
    /// Slots without a connection, reused before the vector grows.
    free: Vec<u32>,
    /// Connections to poll, in order; a slot is in here at most once (`Slot::queued`).
    ready: VecDeque<u32>,
    /// Where the connections' wakers report.
    shared: Arc<Shared>,
    len: usize,
    /// Events delivered in a row by the connection at the front of `ready`.
    streak: u32,
}

#[derive(Debug)]
struct Slot<S> {
    generation: u32,
    queued: bool,
    entry: Option<Entry<S>>,
}

#[derive(Debug)]
struct Entry<S> {
    ws: WebSocket<S>,
    /// Wakes the set and names this slot.
    waker: Waker,
}

/// The part of the set that wakers reach, from any thread.
#[derive(Debug, Default)]
struct Shared {
    woken: Mutex<Woken>,
}

#[derive(Debug, Default)]
struct Woken {
    /// Slots woken since the set last looked (duplicates possible; the set skips them).
    slots: Vec<u32>,
    /// The task polling the set, while it waits.
    waker: Option<Waker>,
}

/// One connection's waker: it queues its slot and wakes the set's task.
#[derive(Debug)]
struct SlotWaker {
    index: u32,
    shared: Arc<Shared>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let task = {
            let mut woken = self
                .shared
                .woken
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            woken.slots.push(self.index);
            woken.waker.take()
        };
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl<S> Default for WebSocketSet<S> {
    fn default() -> Self {
        WebSocketSet {
            slots: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            shared: Arc::default(),
            len: 0,
            streak: 0,
        }
    }
}

impl<S> WebSocketSet<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a connection (after its handshake: from [`crate::accept`], say) and returns its
    /// key. Bytes that arrived with the handshake are processed at the next poll.
    pub fn insert(&mut self, ws: WebSocket<S>) -> Key {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 connections");
                self.slots.push(Slot {
                    generation: 0,
                    queued: false,
                    entry: None,
                });
                index
            }
        };
        let waker = Waker::from(Arc::new(SlotWaker {
            index,
            shared: Arc::clone(&self.shared),
        }));
        let slot = &mut self.slots[index as usize];
        slot.entry = Some(Entry { ws, waker });
        self.len += 1;
        let key = Key {
            index,
            generation: slot.generation,
        };
        self.schedule(index);
        key
    }

    /// Takes a connection out of the set, as it is (open or not).
    pub fn remove(&mut self, key: Key) -> Option<WebSocket<S>> {
        let slot = self.slot_mut(key)?;
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        self.len -= 1;
        Some(entry.ws)
    }

    /// How many connections the set holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `key` still names a connection in the set.
    pub fn contains(&self, key: Key) -> bool {
        self.get(key).is_some()
    }

    /// The keys of all connections in the set (for a broadcast, say).
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            slot.entry.as_ref().map(|_| Key {
                index: index as u32,
                generation: slot.generation,
            })
        })
    }

    /// The connection behind `key`: its state, subprotocol, buffered amount.
    pub fn get(&self, key: Key) -> Option<&WebSocket<S>> {
        let slot = self.slots.get(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.entry.as_ref().map(|entry| &entry.ws)
    }

    /// The connection behind `key`, mutably. The set polls it again afterwards. Do not await
    /// its I/O methods here: the set drives its I/O.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut WebSocket<S>> {
        self.slot_mut(key)?.entry.as_ref()?;
        self.schedule(key.index);
        self.slots[key.index as usize]
            .entry
            .as_mut()
            .map(|entry| &mut entry.ws)
    }

    /// Bytes queued on the connection and not yet written (0 for an unknown key).
    pub fn buffered_amount(&self, key: Key) -> usize {
        self.get(key).map_or(0, WebSocket::buffered_amount)
    }

    /// Queues a message on one connection; it is written when the set next polls the
    /// connection, together with everything else queued there. `Message::Close` starts the
    /// close handshake (see [`close`](WebSocketSet::close)).
    ///
    /// Fails with [`UsageError::UnknownKey`] when the key names no connection (any more),
    /// [`UsageError::Closed`] when the connection has ended, and [`UsageError::Send`] when
    /// the protocol does not allow the
    /// message now (after our close frame, say).
    pub fn feed(&mut self, key: Key, message: Message) -> Result<(), Error> {
        self.entry_mut(key)?.ws.start_send_message(message)?;
        self.schedule(key.index);
        Ok(())
    }

    /// Queues one frame of a fragmented message on one connection (see
    /// [`WebSocket::feed_fragment`]).
    pub fn feed_fragment(
        &mut self,
        key: Key,
        kind: DataKind,
        payload: Bytes,
        is_last: bool,
    ) -> Result<(), Error> {
        self.entry_mut(key)?
            .ws
            .start_send_fragment(kind, payload, is_last)?;
        self.schedule(key.index);
        Ok(())
    }

    /// Queues a message uncompressed on one connection, even when permessage-deflate is on
    /// (see [`WebSocket::feed_uncompressed`]).
    ///
    /// Fails as [`feed`](WebSocketSet::feed) does.
    pub fn feed_uncompressed(&mut self, key: Key, message: Message) -> Result<(), Error> {
        self.entry_mut(key)?.ws.start_send_uncompressed(message)?;
        self.schedule(key.index);
        Ok(())
    }

    /// Queues frames encoded once for many connections (see
    /// [`fullduplex_proto::connection::encode_server_message`]) on one connection: a
    /// broadcast encodes a message once and feeds the same bytes to every key.
    ///
    /// ```no_run
    /// # fn demo(set: &mut fullduplex::WebSocketSet<tokio::net::TcpStream>) {
    /// use fullduplex::proto::connection::encode_server_message;
    /// let frame = encode_server_message(&fullduplex::Message::text("news"));
    /// let keys: Vec<_> = set.keys().collect();
    /// for key in keys {
    ///     // A peer that is this far behind is dropped (a slow-consumer policy).
    ///     if set.buffered_amount(key) > 1 << 20 {
    ///         set.remove(key);
    ///     } else {
    ///         set.feed_encoded(key, frame.clone()).ok();
    ///     }
    /// }
    /// # }
    /// ```
    pub fn feed_encoded(&mut self, key: Key, frames: Bytes) -> Result<(), Error> {
        self.entry_mut(key)?.ws.start_send_encoded(frames)?;
        self.schedule(key.index);
        Ok(())
    }

    /// Starts the close handshake on one connection. The set goes on driving it: the peer's
    /// close frame arrives as `Message::Close`, then [`recv`](WebSocketSet::recv) reports the
    /// connection's end (`None`) and it leaves the set, within the close timeout.
    pub fn close(&mut self, key: Key, frame: Option<CloseFrame>) -> Result<(), Error> {
        self.feed(key, Message::Close(frame))
    }

    /// Receives the next message of any connection, with its key.
    ///
    /// `(key, None)` says that the connection has ended (normally after the close
    /// handshake, or after the error reported just before) and has left the set. Waits while
    /// the set is empty, so it fits a `tokio::select!` beside an accept loop.
    ///
    /// # Errors
    ///
    /// `(key, Some(Err(_)))` for that connection: [`Error::Protocol`], [`Error::Io`] or [`Error::Timeout`] as for
    /// [`WebSocket::recv`]; the next
    /// result for that key is `(key, None)`, when it has left the set.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is lost; every connection keeps what it has read.
    pub async fn recv(&mut self) -> (Key, Option<Result<Message, Error>>) {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message of any connection (see [`recv`](WebSocketSet::recv)), for
    /// a loop that polls the set by hand.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<(Key, Option<Result<Message, Error>>)> {
        self.poll_with(cx, |_, ws, cx| ws.poll_recv(cx))
    }

    /// The one-message form of [`recv_many`](WebSocketSet::recv_many): lends the next
    /// message of any connection to `handler` with the connection's key and an [`Outbox`]
    /// for its replies (see [`WebSocket::recv_with`]), and returns the key and what `handler`
    /// returned, or `(key, None)` when the connection has ended and left the set.
    ///
    /// ```no_run
    /// # async fn demo(mut set: fullduplex::WebSocketSet<tokio::net::TcpStream>) {
    /// // An echo of every connection in the set.
    /// loop {
    ///     let (key, echoed) = set
    ///         .recv_with(|_key, message, out| {
    ///             if message.is_data() {
    ///                 out.send_ref(message)?;
    ///             }
    ///             Ok::<_, fullduplex::Error>(())
    ///         })
    ///         .await;
    ///     if let Some(Err(error) | Ok(Err(error))) = echoed {
    ///         eprintln!("{key:?}: {error}");
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `(key, Some(Err(_)))` for that connection: [`Error::Protocol`], [`Error::Io`] or [`Error::Timeout`] as for
    /// [`WebSocket::recv`]; the next
    /// result for that key is `(key, None)`, when it has left the set.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is lost; every connection keeps what it has read, and
    /// `handler` is called only when a message is there.
    pub async fn recv_with<R>(
        &mut self,
        handler: impl FnOnce(Key, MessageRef<'_>, &mut Outbox<'_>) -> R,
    ) -> (Key, Option<Result<R, Error>>) {
        let mut handler = Some(handler);
        poll_fn(move |cx| self.poll_recv_with(cx, &mut handler)).await
    }

    /// Polls for the next message of any connection, borrowed (see
    /// [`recv_with`](WebSocketSet::recv_with)). `handler` is taken out of its `Option` and
    /// called once a message is there.
    fn poll_recv_with<R, F>(
        &mut self,
        cx: &mut Context<'_>,
        handler: &mut Option<F>,
    ) -> Poll<(Key, Option<Result<R, Error>>)>
    where
        F: FnOnce(Key, MessageRef<'_>, &mut Outbox<'_>) -> R,
    {
        self.poll_with(cx, |key, ws, cx| {
            // Lends the handler to this connection only when it is called, so that a
            // connection with nothing to deliver leaves it for the next one.
            let mut lent = Some(|message: MessageRef<'_>, out: &mut Outbox<'_>| {
                handler.take().map(|handler| handler(key, message, out))
            });
            ws.poll_recv_with(cx, &mut lent).map(|delivered| {
                delivered.map(|result| {
                    result.and_then(|returned| returned.ok_or(Error::Usage(UsageError::Closed)))
                })
            })
        })
    }

    /// Receives every message that has arrived on one connection, borrowed, and hands each
    /// to `handler` with the connection's key and an [`Outbox`] for its replies (see
    /// [`WebSocket::recv_many`]): returns the key and how many messages were handled (or the
    /// first error `handler` returned; the messages after it come with the next call), or
    /// `(key, None)` when the connection has ended and left the set. One call per batch of a
    /// busy connection instead of one per message: the cheapest way for a set to answer many
    /// small messages. Cancel-safe.
    ///
    /// ```no_run
    /// # async fn demo(mut set: fullduplex::WebSocketSet<tokio::net::TcpStream>) {
    /// // An echo of every connection in the set.
    /// loop {
    ///     let (key, echoed) = set
    ///         .recv_many(|_key, message, out| {
    ///             if message.is_data() {
    ///                 out.send_ref(message)?;
    ///             }
    ///             Ok::<_, fullduplex::Error>(())
    ///         })
    ///         .await;
    ///     if let Some(Err(error)) = echoed {
    ///         eprintln!("{key:?}: {error}");
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `(key, Some(Err(_)))` for that connection: the first error `handler` returned, or a
    /// connection error converted with `From<Error>` (as for [`WebSocket::recv`]); the next
    /// result for that key is `(key, None)`, when it has left the set.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is lost; every connection keeps what it has read.
    pub async fn recv_many<E, F>(&mut self, mut handler: F) -> (Key, Option<Result<usize, E>>)
    where
        F: FnMut(Key, MessageRef<'_>, &mut Outbox<'_>) -> Result<(), E>,
        E: From<Error>,
    {
        poll_fn(move |cx| self.poll_recv_many(cx, &mut handler)).await
    }

    /// Polls for the messages that have arrived on one connection, borrowed (see
    /// [`recv_many`](WebSocketSet::recv_many)), for a loop that polls the set by hand.
    pub fn poll_recv_many<E, F>(
        &mut self,
        cx: &mut Context<'_>,
        handler: &mut F,
    ) -> Poll<(Key, Option<Result<usize, E>>)>
    where
        F: FnMut(Key, MessageRef<'_>, &mut Outbox<'_>) -> Result<(), E>,
        E: From<Error>,
    {
        self.poll_with(cx, |key, ws, cx| {
            ws.poll_recv_many(cx, &mut |message: MessageRef<'_>, out: &mut Outbox<'_>| {
                handler(key, message, out)
            })
        })
    }

    /// The scheduler behind [`poll_recv`](WebSocketSet::poll_recv),
    /// [`poll_recv_with`](WebSocketSet::poll_recv_with) and
    /// [`poll_recv_many`](WebSocketSet::poll_recv_many): `poll_one` polls one ready
    /// connection for what it delivers (a message, or a batch of them).
    fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut poll_one: impl FnMut(Key, &mut WebSocket<S>, &mut Context<'_>) -> Poll<Option<T>>,
    ) -> Poll<(Key, Option<T>)> {
        // Connections are served in the order they were woken: slots woken while we poll join
        // the back of the queue, once the queue is empty (or in the next call, after the
        // runtime has had its turn).
        let mut collected = false;
        loop {
            let Some(&index) = self.ready.front() else {
                if collected {
                    if self.park(cx) {
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                }
                collected = true;
                self.collect();
                continue;
            };
            // Once tokio's cooperative budget for this poll is spent, every connection would be
            // turned away and woken again later, behind those woken meanwhile: the same ones
            // would be served over and over and the others starve. Stop with the queue as it is
            // and come back after the runtime has had its turn.
            if !coop::has_budget_remaining() {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let slot = &mut self.slots[index as usize];
            let Some(entry) = slot.entry.as_mut() else {
                slot.queued = false;
                self.ready.pop_front();
                continue;
            };
            let key = Key {
                index,
                generation: slot.generation,
            };
            let mut slot_cx = Context::from_waker(&entry.waker);
            // A connection whose peer does not take our writes delivers nothing more until it
            // does (its writer wakes it), as an echo loop awaiting `feed` would.
            let polled = match entry.ws.poll_write_backlog(&mut slot_cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => poll_one(key, &mut entry.ws, &mut slot_cx),
            };
            match polled {
                // The budget ran out during this poll: the connection may have been turned
                // away, so it keeps its place (a spare poll if it was not).
                Poll::Pending if !coop::has_budget_remaining() => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => {
                    slot.queued = false;
                    self.ready.pop_front();
                    self.streak = 0;
                }
                Poll::Ready(Some(event)) => {
                    // It may have more: it stays in front for a while (its replies then
                    // leave in one write), then goes to the back.
                    self.streak += 1;
                    if self.streak >= STREAK {
                        self.streak = 0;
                        self.ready.pop_front();
                        self.ready.push_back(index);
                    }
                    return Poll::Ready((key, Some(event)));
                }
                Poll::Ready(None) => {
                    slot.queued = false;
                    self.ready.pop_front();
                    self.streak = 0;
                    self.remove(key);
                    return Poll::Ready((key, None));
                }
            }
        }
    }

    /// Moves the slots woken since the last look into `ready`.
    fn collect(&mut self) {
        let mut woken = self
            .shared
            .woken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for index in woken.slots.drain(..) {
            let Some(slot) = self.slots.get_mut(index as usize) else {
                continue;
            };
            if !slot.queued && slot.entry.is_some() {
                slot.queued = true;
                self.ready.push_back(index);
            }
        }
    }

    /// Before waiting: returns true if slots were woken meanwhile (the caller yields and comes
    /// back), otherwise leaves the task's waker for the slots' wakers to wake.
    fn park(&mut self, cx: &Context<'_>) -> bool {
        let mut woken = self
            .shared
            .woken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !woken.slots.is_empty() {
            return true;
        }
        match &woken.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => woken.waker = Some(cx.waker().clone()),
        }
        false
    }

    /// Queues a slot for polling (once).
    fn schedule(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if !slot.queued {
            slot.queued = true;
            self.ready.push_back(index);
        }
    }

    fn slot_mut(&mut self, key: Key) -> Option<&mut Slot<S>> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|slot| slot.generation == key.generation)
    }

    fn entry_mut(&mut self, key: Key) -> Result<&mut Entry<S>, Error> {
        self.slot_mut(key)
            .and_then(|slot| slot.entry.as_mut())
            .ok_or(Error::Usage(UsageError::UnknownKey))
    }
}
