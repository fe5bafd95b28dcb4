//! `WebSocket<S>`: a [`Connection`] driven over an `AsyncRead + AsyncWrite` transport.

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fullduplex_proto::pool;
use fullduplex_proto::{
    CloseCode, CloseFrame, Connection, DataKind, Event, EventRef, Message, MessageRef, Outbox,
    ProtocolError, ReceiveMode, Role, State, Timeout, TransportAction,
};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::config::Config;
use crate::error::{Error, UsageError};
use crate::poll::PollSocket;
use crate::timers::{self, Timers};

/// How many buffers one vectored write may carry.
const MAX_IOVECS: usize = 64;
/// Queues of at most this many pieces are written from a short array.
const FEW_IOVECS: usize = 8;
/// The largest single read reservation when a big frame is being received.
const MAX_READ_STEP: usize = 1 << 20;
/// The same in [`ReceiveMode::Streaming`], where a frame is handed out piece by piece and need
/// not be read in large steps.
const STREAM_READ_STEP: usize = 256 << 10;

/// A WebSocket connection over a transport `S` (a `TcpStream`, a TLS stream, anything
/// `AsyncRead + AsyncWrite + Unpin`).
///
/// Receive with [`recv`](WebSocket::recv) or as a [`Stream`] of messages, or borrowed with
/// [`recv_many`](WebSocket::recv_many), the fast path; [`into_fragments`](WebSocket::into_fragments)
/// and [`into_streaming`](WebSocket::into_streaming) receive large messages in pieces. Send
/// with [`send`](WebSocket::send) (queue and flush), [`feed`](WebSocket::feed) (queue only;
/// what is queued leaves in one write at the next [`flush`](WebSocket::flush) or when the
/// connection next waits to read), [`close`](WebSocket::close), or as a [`Sink`]; three
/// `feed_*` methods queue what a [`Message`] cannot say (a fragment, frames encoded once for
/// many connections, a message exempt from compression). A normal close ends the stream
/// (`None`); it is not an error, and [`peer_close_code`](WebSocket::peer_close_code) tells
/// the peer's code. [`PollSocket`] is the same at the poll level.
///
/// Everything the connection needs lives in this struct, not in futures: dropping a `recv()`
/// future (in `tokio::select!`, say) loses no data.
///
/// An idle connection holds no buffers: the receive buffer is lent by a small per-thread pool
/// while bytes are being read and parsed and goes back to it when the connection waits for
/// its peer with no partial frame; the send queue does the same once drained. Busy
/// connections reuse pooled buffers, so echoing a message allocates nothing.
///
/// ```no_run
/// # async fn demo() -> Result<(), fullduplex::Error> {
/// let (mut ws, _response) = fullduplex::connect("ws://127.0.0.1:9001/").await?;
/// ws.send("hello".into()).await?;
/// while let Some(message) = ws.recv().await {
///     println!("{:?}", message?);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    timers: Timers,
    read_size: u32,
    write_limit: u32,
    /// The close timeout in milliseconds (kept here, not in the timers, which exist only
    /// while one runs).
    close_timeout_ms: u32,
    /// The stream of events has ended; nothing more is read.
    done: bool,
    /// The code of the peer's close frame once it arrived (1005 when it had none), 0 before.
    /// A bare `u16`: it fits in the padding after the flags, so a connection is no larger.
    peer_close_code: u16,
    /// Boxed, and only once there is one: a subprotocol, an error.
    extras: Option<Box<Extras>>,
}

/// What few connections carry.
#[derive(Debug, Default)]
struct Extras {
    /// The subprotocol agreed in the handshake.
    protocol: Option<Box<str>>,
    /// The error that failed the connection, reported once the close frame is out.
    pending_error: Option<Error>,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a transport on which the opening handshake is already done. `leftover` holds bytes
    /// that arrived after the HTTP head (they are the first WebSocket bytes).
    ///
    /// Most code gets a `WebSocket` from [`crate::accept`] or [`crate::connect`] instead.
    pub fn from_raw(stream: S, role: Role, config: Config, leftover: BytesMut) -> Self {
        // The leftover usually shares the handshake's buffer: keep neither when it is empty,
        // and only the bytes themselves otherwise.
        let leftover = if leftover.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&leftover[..])
        };
        let mut conn = Connection::with_leftover(role, config.protocol.clone(), leftover);
        // Whole messages: pieces are received through `into_fragments`, which sets the mode.
        conn.set_receive_mode(ReceiveMode::Messages);
        WebSocket {
            stream,
            conn,
            timers: Timers::new(&config),
            read_size: clamp_u32(config.read_size.max(512)),
            write_limit: clamp_u32(config.write_buffer_limit.max(1)),
            // Rounded up: a sub-millisecond timeout is not zero.
            close_timeout_ms: u32::try_from(config.close_timeout.as_micros().div_ceil(1000))
                .unwrap_or(u32::MAX),
            done: false,
            peer_close_code: 0,
            extras: None,
        }
    }

    pub(crate) fn set_protocol(&mut self, protocol: Option<String>) {
        if let Some(protocol) = protocol {
            self.extras_mut().protocol = Some(protocol.into());
        } else if let Some(extras) = &mut self.extras {
            extras.protocol = None;
        }
    }

    /// The rarely needed state, boxed on first use.
    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Keeps `error` (unless one is kept already) to report once the close frame is out.
    fn defer_error(&mut self, error: Error) {
        self.extras_mut().pending_error.get_or_insert(error);
    }

    /// The error kept by [`defer_error`](Self::defer_error), once.
    fn take_deferred_error(&mut self) -> Option<Error> {
        self.extras.as_mut()?.pending_error.take()
    }

    pub(crate) fn enable_deflate(&mut self, params: fullduplex_proto::deflate::DeflateParams) {
        self.conn.enable_deflate(params);
    }

    /// True when permessage-deflate was negotiated.
    pub fn is_compressed(&self) -> bool {
        self.conn.is_deflate_enabled()
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.extras.as_ref()?.protocol.as_deref()
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The transport, mutably. Reading or writing it directly corrupts the connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The protocol state machine (state, role, configuration).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Where the close handshake stands.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// The code of the close frame the peer sent, once it has arrived: after
    /// [`recv`](WebSocket::recv) returned `None`, this tells a normal close
    /// ([`CloseCode::NORMAL`]) from a peer's failure ([`CloseCode::INTERNAL_ERROR`], say).
    /// [`CloseCode::NO_STATUS`] when the frame carried no code; `None` when no close frame
    /// arrived (the connection is open, or it ended without one: an error was returned then).
    /// The frame itself, with its reason, was delivered as `Message::Close`.
    pub fn peer_close_code(&self) -> Option<CloseCode> {
        (self.peer_close_code != 0).then_some(CloseCode(self.peer_close_code))
    }

    /// Switches the core's receive mode (for [`Fragments`](crate::Fragments)).
    pub(crate) fn set_receive_mode(&mut self, mode: ReceiveMode) {
        self.conn.set_receive_mode(mode);
    }

    /// Bytes queued and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.conn.output_len()
    }

    // ----- receiving -----

    /// Receives the next message: `None` once the connection has closed normally.
    ///
    /// Pings are answered automatically (unless turned off) and still delivered; the close
    /// frame is delivered as `Message::Close`, then the stream ends
    /// ([`peer_close_code`](WebSocket::peer_close_code) tells its code afterwards). To receive
    /// large messages piece by piece, see [`into_fragments`](WebSocket::into_fragments).
    ///
    /// # Errors
    ///
    /// `Some(Err(_))`: [`Error::Protocol`] when the peer broke the protocol (the connection
    /// then sends the matching close code and ends), [`Error::Io`] when the transport
    /// failed, [`Error::Timeout`] when keepalive, the idle timeout or the close timeout
    /// expired. After an error the next call returns `None`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes loses nothing; bytes read so far
    /// stay in the connection and the next call continues from them.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.poll_next_message(cx)).await
    }

    /// Receives the next event: a message, or a piece of one in the fragment receive modes
    /// (for [`Fragments`](crate::Fragments) and [`close`](WebSocket::close)).
    pub(crate) async fn recv_event(&mut self) -> Option<Result<Event, Error>> {
        poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// The one-message form of [`recv_many`](WebSocket::recv_many): lends the next message
    /// to `handler` together with an [`Outbox`] for replies, and returns what `handler`
    /// returned (any type, not only a `Result`), or `None` once the connection has closed
    /// normally. For a handler that produces a value per message, or a loop that must look
    /// at something else between two messages; `recv_many` costs one call per batch instead.
    ///
    /// The message is lent as `recv_many` lends it (a view into the receive buffer; replies
    /// leave as [`feed`](WebSocket::feed)'s do). Pings are answered automatically (unless
    /// turned off) and still handed out, as with `recv`.
    ///
    /// ```no_run
    /// # async fn demo(mut ws: fullduplex::WebSocket<tokio::net::TcpStream>) -> Result<(), fullduplex::Error> {
    /// // An echo server's loop.
    /// while let Some(echoed) = ws
    ///     .recv_with(|message, out| {
    ///         if message.is_data() {
    ///             out.send_ref(message)?;
    ///         }
    ///         Ok::<_, fullduplex::Error>(())
    ///     })
    ///     .await
    /// {
    ///     echoed??;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Some(Err(_))`: [`Error::Protocol`] when the peer broke the protocol (the connection
    /// then sends the matching close code and ends), [`Error::Io`] when the transport
    /// failed, [`Error::Timeout`] when keepalive, the idle timeout or the close timeout
    /// expired. After an error the next call returns `None`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes loses nothing; bytes read so far
    /// stay in the connection and the next call continues from them; `handler` is called
    /// only when a message is there, never for a cancelled call.
    pub async fn recv_with<R>(
        &mut self,
        handler: impl FnOnce(MessageRef<'_>, &mut Outbox<'_>) -> R,
    ) -> Option<Result<R, Error>> {
        let mut handler = Some(handler);
        poll_fn(move |cx| self.poll_recv_with(cx, &mut handler)).await
    }

    /// Polls for the next message, borrowed (see [`recv_with`](WebSocket::recv_with)).
    /// `handler` is taken out of its `Option` and called once a message is there.
    pub(crate) fn poll_recv_with<R, F>(
        &mut self,
        cx: &mut Context<'_>,
        handler: &mut Option<F>,
    ) -> Poll<Option<Result<R, Error>>>
    where
        F: FnOnce(MessageRef<'_>, &mut Outbox<'_>) -> R,
    {
        if let Err(error) = ready!(self.poll_ready_to_lend(cx)) {
            return Poll::Ready(Some(Err(error)));
        }
        let delivered = self.poll_event_with(cx, |conn| {
            conn.next_event_with(|event, out| match event {
                EventRef::Message(message) => {
                    let seen = Seen::of(&message);
                    let result = handler.take().map(|handler| handler(message, out));
                    Delivered { result, seen }
                }
                // Not in `ReceiveMode::Messages`, the only mode of a `WebSocket`.
                EventRef::Fragment(_) => Delivered {
                    result: None,
                    seen: Seen::Other,
                },
            })
        });
        let result = match delivered {
            Poll::Ready(Some(Ok(Some(result)))) => result,
            Poll::Ready(Some(Ok(None))) => {
                // A piece of a message, which this mode never delivers: look again.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        // The handler may have closed through its outbox.
        self.start_close_timer_if_closing();
        Poll::Ready(Some(Ok(result)))
    }

    /// The borrowed fast path: lends every message that has arrived to `handler` with an
    /// [`Outbox`] for replies. Waits for the first message, then goes on through the messages
    /// already in the receive buffer without reading again. Returns how many messages were
    /// handled, the first error `handler` returned (the messages after it stay for the next
    /// call), and `None` once the connection has closed normally.
    ///
    /// A message is a view into the receive buffer, where it was unmasked and validated:
    /// nothing is allocated or reference-counted for it, and replies are copied from it into
    /// the write buffer (a message of 2 KiB or more is lent from a shared slice instead, and
    /// what is sent from it is queued by reference). Replies leave as
    /// [`feed`](WebSocket::feed)'s do: in one write when the connection next waits for its
    /// peer (or at the next flush). Use [`recv`](WebSocket::recv) to keep a message beyond
    /// the handler without copying it, and [`recv_with`](WebSocket::recv_with) for one
    /// message per call.
    ///
    /// The batch ends when the write buffer reaches its limit (a new batch starts only once
    /// it is below), when a close has been sent, and before a protocol error, which the next
    /// call returns. Pings are answered automatically (unless turned off) and still handed
    /// out.
    ///
    /// ```no_run
    /// # async fn demo(mut ws: fullduplex::WebSocket<tokio::net::TcpStream>) -> Result<(), fullduplex::Error> {
    /// // An echo server's loop.
    /// while let Some(echoed) = ws
    ///     .recv_many(|message, out| {
    ///         if message.is_data() {
    ///             out.send_ref(message)?;
    ///         }
    ///         Ok::<_, fullduplex::Error>(())
    ///     })
    ///     .await
    /// {
    ///     echoed?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Some(Err(e))`: the first error `handler` returned (the messages before it were
    /// handled), or a connection error converted with `From<Error>`: [`Error::Protocol`],
    /// [`Error::Io`], [`Error::Timeout`] as for [`recv`](WebSocket::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes loses nothing; bytes read so far
    /// stay in the connection and the next call continues from them.
    pub async fn recv_many<E, F>(&mut self, mut handler: F) -> Option<Result<usize, E>>
    where
        F: FnMut(MessageRef<'_>, &mut Outbox<'_>) -> Result<(), E>,
        E: From<Error>,
    {
        poll_fn(move |cx| self.poll_lend_many(cx, &mut handler)).await
    }

    /// Polls for the messages that have arrived, borrowed (see
    /// [`recv_many`](WebSocket::recv_many)).
    #[inline]
    fn poll_lend_many<E, F>(
        &mut self,
        cx: &mut Context<'_>,
        handler: &mut F,
    ) -> Poll<Option<Result<usize, E>>>
    where
        F: FnMut(MessageRef<'_>, &mut Outbox<'_>) -> Result<(), E>,
        E: From<Error>,
    {
        if let Err(error) = ready!(self.poll_ready_to_lend(cx)) {
            return Poll::Ready(Some(Err(error.into())));
        }
        let limit = self.write_limit as usize;
        let mut deferred = None;
        let delivered = self.poll_event_with(cx, |conn| {
            let (mut handled, mut seen) = (0, Seen::Other);
            loop {
                let next = conn.next_event_with(|event, out| match event {
                    EventRef::Message(message) => {
                        // A close ends the batch (it is sent back, or ours was sent before),
                        // so it is the last one seen; a pong before it is noted at once.
                        match Seen::of(&message) {
                            Seen::Other => {}
                            other => seen = seen.and(other),
                        }
                        handler(message, out)
                    }
                    // Not in `ReceiveMode::Messages`, the only mode of a `WebSocket`.
                    EventRef::Fragment(_) => Ok(()),
                });
                match next {
                    Ok(Some(Ok(()))) => handled += 1,
                    Ok(Some(Err(error))) => {
                        return Ok(Some(Delivered {
                            result: Err(error),
                            seen,
                        }))
                    }
                    Ok(None) => break,
                    Err(error) if handled == 0 => return Err(error),
                    // Returned by the next call, after the messages before it (the
                    // connection has failed: that call finishes the close and ends with it).
                    Err(error) => {
                        deferred = Some(error);
                        break;
                    }
                }
                // An empty buffer ends the batch without asking the core again (the common
                // case of one message per read).
                if conn.recv_buf().is_empty() || conn.is_close_sent() || conn.output_len() >= limit
                {
                    break;
                }
            }
            Ok((handled > 0).then_some(Delivered {
                result: Ok(handled),
                seen,
            }))
        });
        if let Some(error) = deferred {
            self.defer_error(error.into());
        }
        // The handler may have closed through its outbox.
        self.start_close_timer_if_closing();
        delivered.map(|result| {
            result.map(|handled| match handled {
                Ok(handled) => handled,
                Err(error) => Err(E::from(error)),
            })
        })
    }

    /// Before messages are lent: once the write buffer is below its limit (the handler's
    /// replies wait here, as `feed`'s would).
    #[inline]
    fn poll_ready_to_lend(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !self.done && self.conn.output_len() >= self.write_limit as usize {
            if let Err(error) = ready!(self.poll_write_out_or_time_out(cx)) {
                return Poll::Ready(Err(self.abort(cx, error)));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes what is queued; while the peer takes nothing, the timers (keepalive, idle) run,
    /// so that a peer that never reads cannot hold the connection forever: with nothing
    /// received, keepalive fails it as it fails a silent one.
    fn poll_write_out_or_time_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self.poll_write_out(cx) {
            Poll::Pending => match self.poll_timers(cx) {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Err(error)),
            },
            ready => ready,
        }
    }

    /// Starts the close timer once a handler has closed through its outbox.
    fn start_close_timer_if_closing(&mut self) {
        if self.conn.is_close_sent() {
            self.timers.start_close_timer(self.close_timeout());
        }
    }

    /// Polls for the next message: the engine of [`poll_next_event`](WebSocket::poll_next_event)
    /// taking messages from the core directly, for the mode of a `WebSocket`.
    #[inline]
    fn poll_next_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        // A `WebSocket` receives in `ReceiveMode::Messages` only (`Fragments` restores it
        // before handing the socket back), so the core yields no `Event::Fragment` here; one
        // would be skipped.
        self.poll_event_with(cx, |conn| loop {
            match conn.next_event()? {
                Some(Event::Message(message)) => {
                    let seen = Seen::of_message(&message);
                    return Ok(Some(Delivered {
                        result: message,
                        seen,
                    }));
                }
                Some(Event::Fragment(_)) => continue,
                None => return Ok(None),
            }
        })
    }

    /// Polls for the next event. The engine of the connection: it delivers what the core has
    /// parsed, writes what the core has queued (pongs, close echoes, and anything fed), runs
    /// the timers, and reads from the transport only when the core needs more bytes.
    #[inline]
    pub(crate) fn poll_next_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, Error>>> {
        self.poll_event_with(cx, |conn| {
            conn.next_event().map(|event| {
                event.map(|event| {
                    let seen = match &event {
                        Event::Message(message) => Seen::of_message(message),
                        Event::Fragment(_) => Seen::Other,
                    };
                    Delivered {
                        result: event,
                        seen,
                    }
                })
            })
        })
    }

    /// The engine behind [`poll_next_event`](WebSocket::poll_next_event) and
    /// [`poll_recv_with`](WebSocket::poll_recv_with): `next` takes the next event from the
    /// core, owned or lent to a handler.
    #[inline]
    fn poll_event_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut next: impl FnMut(&mut Connection) -> Result<Option<Delivered<T>>, ProtocolError>,
    ) -> Poll<Option<Result<T, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match next(&mut self.conn) {
                Ok(Some(delivered)) => {
                    match delivered.seen {
                        Seen::Other => {}
                        seen => self.note(seen),
                    }
                    return Poll::Ready(Some(Ok(delivered.result)));
                }
                Ok(None) => {}
                Err(ProtocolError::UnexpectedEof) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(Error::Protocol(ProtocolError::UnexpectedEof))));
                }
                Err(error) => self.extras_mut().pending_error = Some(error.into()),
            }
            if self.conn.state() == State::Closed {
                self.timers.start_close_timer(self.close_timeout());
                ready!(self.poll_finish(cx));
                self.done = true;
                return Poll::Ready(self.take_deferred_error().map(Err));
            }
            if let Err(error) = self.poll_timers(cx) {
                return Poll::Ready(Some(Err(self.abort(cx, error))));
            }
            if !self.conn.output().is_empty() {
                match self.poll_write_out(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => {
                        return Poll::Ready(Some(Err(self.abort(cx, error))))
                    }
                    // Keep reading while the peer is slow: a peer that sends while it reads
                    // (a streaming relay, a split reader next to a busy writer) must not wait
                    // for us to finish writing. Reading alone cannot grow the output without
                    // bound: pongs are coalesced once it is backed up (`PONG_BACKLOG`), and
                    // the application's own sends wait in `poll_ready_send`.
                    Poll::Pending => {}
                }
            }
            if self.conn.has_pending_work() {
                // The core paused inflating a compressed message after one slice: let the
                // other tasks run, then go on (the rest may be here already, so reading
                // first could wait forever). One slice per turn bounds how long one peer's
                // message holds this worker, whatever it inflates to.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match ready!(self.poll_read(cx)) {
                Ok(()) => {}
                Err(error) => return Poll::Ready(Some(Err(self.abort(cx, error)))),
            }
        }
    }

    /// Reads once from the transport into the core's buffer, borrowing a pooled buffer when
    /// the connection holds none, and handing it back if the transport has nothing to read
    /// and no partial frame is waiting in it.
    #[inline]
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let read_size = self.read_size as usize;
        let streaming = self.conn.config().receive_mode == ReceiveMode::Streaming;
        let step = if streaming {
            STREAM_READ_STEP
        } else {
            MAX_READ_STEP
        };
        let hint = self.conn.read_hint().min(step);
        let buf = self.conn.recv_buf();
        if buf.capacity() == 0 {
            pool::lend_recv_buffer(buf);
        }
        // Reserve (usually: reclaim the consumed front of the buffer) only when the room left
        // is short of what the frame being received still needs or, between frames, below half
        // a read: not before every small read, and never just to read past the end of a large
        // frame (growing a buffer that holds most of a 1 MiB frame would copy it).
        let spare = buf.capacity() - buf.len();
        let needed = if hint > 0 { hint } else { read_size / 2 };
        if spare < needed {
            buf.reserve(hint.max(read_size));
        }
        // In Streaming mode a read is also a piece handed out: at most one step of it, however
        // large a buffer the pool lent.
        let polled = if streaming {
            poll_read_buf(Pin::new(&mut self.stream), cx, &mut (&mut *buf).limit(step))
        } else {
            poll_read_buf(Pin::new(&mut self.stream), cx, buf)
        };
        match polled {
            Poll::Pending => {
                let buf = self.conn.recv_buf();
                if buf.is_empty() {
                    pool::return_recv_buffer(buf);
                }
                return Poll::Pending;
            }
            Poll::Ready(Ok(0)) => self.conn.recv_eof(),
            Poll::Ready(Ok(_)) => self.timers.received(),
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
        }
        Poll::Ready(Ok(()))
    }

    /// The close handshake is over (or the connection failed): close the transport as the core
    /// says ([`Connection::transport`]: a server closes TCP first, a client waits for the
    /// server to do it, RFC 6455 section 7.1.1), within the close timeout, whose expiry is
    /// reported to the core.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let action = self.conn.transport();
            if action == TransportAction::Abort {
                self.abort_transport(cx);
                return Poll::Ready(());
            }
            // Errors here change nothing: the connection is over either way.
            if !self.conn.output().is_empty() {
                match self.poll_write_out(cx) {
                    Poll::Ready(_) => {}
                    Poll::Pending if self.timers.close_expired(cx) => {
                        self.conn.on_timeout(Timeout::CloseHandshake);
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if action == TransportAction::AwaitClose {
                self.conn.recv_buf().clear();
                match poll_read_buf(Pin::new(&mut self.stream), cx, self.conn.recv_buf()) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.conn.recv_eof(),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending if self.timers.close_expired(cx) => {
                        self.conn.on_timeout(Timeout::CloseHandshake);
                    }
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            return match Pin::new(&mut self.stream).poll_shutdown(cx) {
                Poll::Pending if !self.timers.close_expired(cx) => Poll::Pending,
                _ => Poll::Ready(()),
            };
        }
    }

    /// Closes the transport without waiting ([`TransportAction::Abort`]): one attempt to
    /// write what is queued (a failed connection's close frame) and one to shut it down.
    fn abort_transport(&mut self, cx: &mut Context<'_>) {
        if !self.conn.output().is_empty() {
            let _ = self.poll_write_out(cx);
        }
        let _ = Pin::new(&mut self.stream).poll_shutdown(cx);
    }

    /// Notes a pong or the peer's close code.
    fn note(&mut self, seen: Seen) {
        match seen {
            Seen::Other => {}
            Seen::Pong => self.timers.pong_received(),
            Seen::Close(code) => self.peer_close_code = code,
            Seen::PongThenClose(code) => {
                self.timers.pong_received();
                self.peer_close_code = code;
            }
        }
    }

    #[inline]
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        if !self.timers.is_active() {
            return Ok(());
        }
        let fired = self.timers.poll(cx)?;
        if fired.send_ping {
            // A ping carries nothing the peer needs; its payload only identifies it in traces.
            self.conn
                .send(Message::Ping(Bytes::from_static(b"fullduplex-keepalive")))
                .ok();
        }
        Ok(())
    }

    /// Ends the connection after a local failure (I/O error, timeout): the stream is over. A
    /// timeout is reported to the core, which fails the connection with the close code the
    /// timeout calls for and has the transport aborted.
    fn abort(&mut self, cx: &mut Context<'_>, error: Error) -> Error {
        self.done = true;
        if let Error::Timeout(kind) = &error {
            self.conn.on_timeout(timers::core_timeout(*kind));
            self.abort_transport(cx);
        }
        error
    }

    // ----- sending -----

    /// Queues a message and writes everything queued. Waits while the write buffer is full.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`]: [`UsageError::Closed`] after a close frame was sent or the
    /// connection ended, [`UsageError::Send`] for what the protocol does not allow (see
    /// [`fullduplex_proto::SendError`]); [`Error::Io`] when the transport failed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once the message is queued, cancelling stops only the write; what
    /// is queued leaves with the next write (`flush`, `send` or `recv`), possibly in part
    /// already. Cancelled before it was queued (while the write buffer was full), nothing was
    /// queued.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message without flushing, waiting first if the write buffer is full. What is
    /// queued is written by the next [`flush`](WebSocket::flush), or by
    /// [`recv`](WebSocket::recv) as soon as it has to wait for the peer: an echo loop of
    /// `recv` and `feed` writes all replies to one batch of reads in a single write.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`]: [`UsageError::Closed`] after a close frame was sent or the
    /// connection ended, [`UsageError::Send`] for what the protocol does not allow (see
    /// [`fullduplex_proto::SendError`]); [`Error::Io`] when the transport failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that matters: cancelled while it waits for room, nothing was
    /// queued; once it completes, the message is queued whole.
    pub fn feed(&mut self, message: Message) -> impl Future<Output = Result<(), Error>> + '_ {
        // A hand-written future rather than an `async fn`: it holds the message once, not
        // twice, which keeps the task of an echo loop (and so every connection) smaller.
        let mut message = Some(message);
        poll_fn(move |cx| {
            ready!(self.poll_ready_send(cx))?;
            match message.take() {
                Some(message) => Poll::Ready(self.start_send_message(message)),
                None => Poll::Ready(Ok(())),
            }
        })
    }

    /// Writes everything queued.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the transport failed, [`Error::Timeout`] when a timer expired
    /// meanwhile.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelling leaves the rest queued, written by the next write.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| match ready!(self.poll_write_out_or_time_out(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(self.abort(cx, error))),
        })
        .await
    }

    // ----- sending what `feed` cannot express -----
    //
    // Each queues like `feed` (waiting first while the write buffer is full) and leaves the
    // writing to `flush` or to the next receive that waits for the peer.

    /// Queues one frame of a fragmented message (see
    /// [`Connection::send_fragment`](fullduplex_proto::Connection::send_fragment)): for a
    /// message whose length is not known when it starts (a relay passing on the pieces a
    /// [`Fragments`](crate::Fragments) receiver hands out, a producer of a large upload).
    /// The first call starts a message of `kind`; the one with `is_last` ends it; other
    /// messages may not be sent in between (control messages may).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`]: [`UsageError::Closed`] after a close frame was sent or the
    /// connection ended, [`UsageError::Send`] for what the protocol does not allow (see
    /// [`fullduplex_proto::SendError`]); [`Error::Io`] when the transport failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that matters: cancelled while it waits for room, nothing was
    /// queued; once it completes, the frame is queued whole.
    pub fn feed_fragment(
        &mut self,
        kind: DataKind,
        payload: Bytes,
        is_last: bool,
    ) -> impl Future<Output = Result<(), Error>> + '_ {
        // Hand-written for the same reason as `feed`: the payload is held once.
        let mut payload = Some(payload);
        poll_fn(move |cx| {
            ready!(self.poll_ready_send(cx))?;
            match payload.take() {
                Some(payload) => Poll::Ready(self.start_send_fragment(kind, payload, is_last)),
                None => Poll::Ready(Ok(())),
            }
        })
    }

    /// Queues complete server frames encoded once for many connections (see
    /// [`fullduplex_proto::connection::encode_server_message`]): a broadcast encodes a
    /// message once and queues the same bytes on every connection, by reference.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`]: [`UsageError::Closed`] after a close frame was sent or the
    /// connection ended, [`UsageError::Send`] for what the protocol does not allow (see
    /// [`fullduplex_proto::SendError`]); [`Error::Io`] when the transport failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that matters: cancelled while it waits for room, nothing was
    /// queued; once it completes, the frames are queued whole.
    pub fn feed_encoded(&mut self, frames: Bytes) -> impl Future<Output = Result<(), Error>> + '_ {
        let mut frames = Some(frames);
        poll_fn(move |cx| {
            ready!(self.poll_ready_send(cx))?;
            match frames.take() {
                Some(frames) => Poll::Ready(self.start_send_encoded(frames)),
                None => Poll::Ready(Ok(())),
            }
        })
    }

    /// Queues a message uncompressed even when permessage-deflate is on: for payloads that
    /// do not compress (already compressed images or archives), where deflating only costs
    /// time.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`]: [`UsageError::Closed`] after a close frame was sent or the
    /// connection ended, [`UsageError::Send`] for what the protocol does not allow (see
    /// [`fullduplex_proto::SendError`]); [`Error::Io`] when the transport failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that matters: cancelled while it waits for room, nothing was
    /// queued; once it completes, the message is queued whole.
    pub fn feed_uncompressed(
        &mut self,
        message: Message,
    ) -> impl Future<Output = Result<(), Error>> + '_ {
        let mut message = Some(message);
        poll_fn(move |cx| {
            ready!(self.poll_ready_send(cx))?;
            match message.take() {
                Some(message) => Poll::Ready(self.start_send_uncompressed(message)),
                None => Poll::Ready(Ok(())),
            }
        })
    }

    /// Queues a message uncompressed (after `poll_ready_send`).
    pub(crate) fn start_send_uncompressed(&mut self, message: Message) -> Result<(), Error> {
        self.ensure_open()?;
        match message {
            Message::Close(frame) => self.start_close(frame),
            message => Ok(self.conn.send_uncompressed(message)?),
        }
    }

    /// Queues frames encoded once for many connections (after `poll_ready_send`).
    pub(crate) fn start_send_encoded(&mut self, frames: Bytes) -> Result<(), Error> {
        self.ensure_open()?;
        Ok(self.conn.send_encoded(frames)?)
    }

    /// Closes the connection: sends a close frame (if none was sent yet), then reads until the
    /// peer's close frame arrives and the transport is closed, discarding data that arrives in
    /// between. Bounded by the close timeout.
    ///
    /// # Errors
    ///
    /// [`UsageError::Send`] when the close frame is invalid (a reserved code, a reason over
    /// 123 bytes), [`Error::Timeout`] when the peer does not finish the handshake within the
    /// close timeout, [`Error::Io`] or [`Error::Protocol`] as for [`recv`](WebSocket::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the close frame, once queued, stays queued; calling `close` again (or
    /// `recv` until `None`) finishes the handshake.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if !self.done {
            self.start_close(frame)?;
        }
        while let Some(event) = self.recv_event().await {
            event?;
        }
        Ok(())
    }

    /// Waits until another message can be queued (the write buffer is below its limit).
    pub(crate) fn poll_ready_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.conn.output().len() < self.write_limit as usize {
            return Poll::Ready(Ok(()));
        }
        match ready!(self.poll_write_out_or_time_out(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(self.abort(cx, error))),
        }
    }

    /// For [`WebSocketSet`](crate::WebSocketSet): `Pending` while the write buffer is at its
    /// limit and the peer takes nothing, when the connection delivers no more events (as an
    /// echo loop waiting in `feed` would not read). The timers run meanwhile, so a peer that
    /// takes nothing still times out; a timer that fails the connection makes this `Ready`,
    /// and `poll_next_event` then reports the failure.
    #[inline]
    pub(crate) fn poll_write_backlog(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done || self.conn.output_len() < self.write_limit as usize {
            return Poll::Ready(());
        }
        self.poll_write_backlog_full(cx)
    }

    #[cold]
    fn poll_write_backlog_full(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.poll_write_out(cx).is_ready() {
            return Poll::Ready(());
        }
        match self.poll_timers(cx) {
            Ok(()) => Poll::Pending,
            Err(_) => Poll::Ready(()),
        }
    }

    /// Queues a message (after `poll_ready_send`).
    pub(crate) fn start_send_message(&mut self, message: Message) -> Result<(), Error> {
        self.ensure_open()?;
        match message {
            Message::Close(frame) => self.start_close(frame),
            message => Ok(self.conn.send(message)?),
        }
    }

    /// Queues one frame of a fragmented message (after `poll_ready_send`).
    pub(crate) fn start_send_fragment(
        &mut self,
        kind: DataKind,
        payload: Bytes,
        is_last: bool,
    ) -> Result<(), Error> {
        self.ensure_open()?;
        Ok(self.conn.send_fragment(kind, payload, is_last)?)
    }

    fn start_close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if !self.conn.is_close_sent() {
            self.conn.close(frame)?;
            self.timers.start_close_timer(self.close_timeout());
        }
        Ok(())
    }

    fn close_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.close_timeout_ms.into())
    }

    fn ensure_open(&self) -> Result<(), Error> {
        if self.done {
            Err(UsageError::Closed.into())
        } else {
            Ok(())
        }
    }

    /// Writes all queued bytes with vectored writes, then flushes the transport.
    pub(crate) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let vectored = self.stream.is_write_vectored();
        loop {
            let out = self.conn.output();
            if out.is_empty() {
                break;
            }
            let written = if vectored && out.chunk().len() < out.len() {
                // A frame or two (header and shared payload) is the common case: a short
                // array is cheaper to set up than the full one.
                if out.chunk_count() <= FEW_IOVECS {
                    let mut slices = [IoSlice::new(&[]); FEW_IOVECS];
                    let n = out.chunks_vectored(&mut slices);
                    ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..n]))?
                } else {
                    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                    let n = out.chunks_vectored(&mut slices);
                    ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..n]))?
                }
            } else {
                // One contiguous piece (small frames share the queue's tail): a plain write.
                ready!(Pin::new(&mut self.stream).poll_write(cx, out.chunk()))?
            };
            if written == 0 {
                return Poll::Ready(Err(
                    std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                ));
            }
            self.conn.output().advance(written);
        }
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }
}

/// What the core delivered, and what the shell notes of it.
struct Delivered<T> {
    result: T,
    seen: Seen,
}

/// What the shell notes of delivered messages: pongs (for the keepalive timer) and the peer's
/// close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing to note.
    Other,
    Pong,
    /// The peer's close frame, with its code.
    Close(u16),
    /// A pong, then the peer's close frame (in one batch).
    PongThenClose(u16),
}

impl Seen {
    /// What an owned message tells the shell.
    #[inline]
    fn of_message(message: &Message) -> Seen {
        match message {
            Message::Pong(_) => Seen::Pong,
            Message::Close(frame) => Seen::Close(
                frame
                    .as_ref()
                    .map_or(CloseCode::NO_STATUS.0, |frame| frame.code.0),
            ),
            _ => Seen::Other,
        }
    }

    #[inline]
    fn of(message: &MessageRef<'_>) -> Seen {
        match message {
            MessageRef::Pong(_) => Seen::Pong,
            MessageRef::Close(frame) => {
                Seen::Close(frame.map_or(CloseCode::NO_STATUS.0, |frame| frame.code.0))
            }
            _ => Seen::Other,
        }
    }

    /// Both of a batch's notes.
    fn and(self, later: Seen) -> Seen {
        match (self, later) {
            (Seen::Pong | Seen::PongThenClose(_), Seen::Close(code)) => Seen::PongThenClose(code),
            (Seen::Other, later) => later,
            (earlier, _) => earlier,
        }
    }
}

impl<S> PollSocket for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    #[inline]
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        self.poll_next_message(cx)
    }

    #[inline]
    fn poll_recv_many<E, F>(
        &mut self,
        cx: &mut Context<'_>,
        handler: &mut F,
    ) -> Poll<Option<Result<usize, E>>>
    where
        F: FnMut(MessageRef<'_>, &mut Outbox<'_>) -> Result<(), E>,
        E: From<Error>,
    {
        self.poll_lend_many(cx, handler)
    }

    #[inline]
    fn poll_ready_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        WebSocket::poll_ready_send(self, cx)
    }

    #[inline]
    fn start_send_message(&mut self, message: Message) -> Result<(), Error> {
        WebSocket::start_send_message(self, message)
    }

    fn start_send_fragment(
        &mut self,
        kind: DataKind,
        payload: Bytes,
        is_last: bool,
    ) -> Result<(), Error> {
        WebSocket::start_send_fragment(self, kind, payload, is_last)
    }

    #[inline]
    fn start_send_encoded(&mut self, frames: Bytes) -> Result<(), Error> {
        WebSocket::start_send_encoded(self, frames)
    }

    fn start_send_uncompressed(&mut self, message: Message) -> Result<(), Error> {
        WebSocket::start_send_uncompressed(self, message)
    }

    #[inline]
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        WebSocket::poll_write_out(self, cx)
    }
}

impl<S> Stream for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_message(cx)
    }
}

impl<S> Sink<Message> for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_ready_send(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        self.get_mut().start_send_message(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_write_out(cx)
    }

    /// Sends a close frame (if none was sent) and flushes it. Keep reading the stream to see
    /// the peer's answer and let the transport close.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if !this.done {
            this.start_close(None)?;
        }
        this.poll_write_out(cx)
    }
}

fn clamp_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
