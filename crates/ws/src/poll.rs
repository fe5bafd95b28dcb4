//! [`PollSocket`]: the poll-level interface of a [`WebSocket`](crate::WebSocket), for code
//! that drives connections itself instead of awaiting their `async` methods.

use std::task::{Context, Poll};

use bytes::Bytes;
use fullduplex_proto::{DataKind, Message, MessageRef, Outbox};

use crate::error::Error;

/// The non-blocking steps behind a connection's `async` methods, for runtimes and
/// schedulers that poll many connections from one task ([`WebSocketSet`](crate::WebSocketSet)
/// is one) or keep a connection inside a hand-written future.
///
/// Receiving: [`poll_recv`](PollSocket::poll_recv) (owned messages, as `recv`) and
/// [`poll_recv_many`](PollSocket::poll_recv_many) (borrowed, as `recv_many`). Sending follows
/// the shape of `Sink`: [`poll_ready_send`](PollSocket::poll_ready_send), then one of the
/// `start_send_*` methods, then [`poll_write_out`](PollSocket::poll_write_out).
///
/// Every method registers the waker of `cx` where it would wait, as a `Future` does. The
/// connection's timers (keepalive, idle, close) run while it is polled for receiving, and
/// while a send waits for the peer to take a full write buffer.
///
/// ```no_run
/// # fn demo(ws: &mut fullduplex::WebSocket<tokio::net::TcpStream>, cx: &mut std::task::Context<'_>) {
/// use fullduplex::PollSocket;
/// // Echo what has arrived, borrowed, without waiting.
/// let mut echo = |message: fullduplex::MessageRef<'_>, out: &mut fullduplex::Outbox<'_>| {
///     if message.is_data() {
///         out.send_ref(message)?;
///     }
///     Ok::<_, fullduplex::Error>(())
/// };
/// while let std::task::Poll::Ready(Some(Ok(_))) = ws.poll_recv_many(cx, &mut echo) {}
/// # }
/// ```
pub trait PollSocket {
    /// Polls for the next message: `Ready(None)` once the connection has ended (see
    /// [`WebSocket::recv`](crate::WebSocket::recv), which awaits this).
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>>;

    /// Polls for the messages that have arrived, lending each to `handler` with an
    /// [`Outbox`] for replies (see [`WebSocket::recv_many`](crate::WebSocket::recv_many)).
    fn poll_recv_many<E, F>(
        &mut self,
        cx: &mut Context<'_>,
        handler: &mut F,
    ) -> Poll<Option<Result<usize, E>>>
    where
        F: FnMut(MessageRef<'_>, &mut Outbox<'_>) -> Result<(), E>,
        E: From<Error>;

    /// Polls until another message can be queued: `Ready(Ok(()))` once the write buffer is
    /// below [`Config::write_buffer_limit`](crate::Config::write_buffer_limit).
    fn poll_ready_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;

    /// Queues a message (after [`poll_ready_send`](PollSocket::poll_ready_send));
    /// `Message::Close` starts the close handshake.
    fn start_send_message(&mut self, message: Message) -> Result<(), Error>;

    /// Queues one frame of a fragmented message (see
    /// [`WebSocket::feed_fragment`](crate::WebSocket::feed_fragment)).
    fn start_send_fragment(
        &mut self,
        kind: DataKind,
        payload: Bytes,
        is_last: bool,
    ) -> Result<(), Error>;

    /// Queues complete frames encoded once for many connections (see
    /// [`WebSocket::feed_encoded`](crate::WebSocket::feed_encoded)).
    fn start_send_encoded(&mut self, frames: Bytes) -> Result<(), Error>;

    /// Queues a message uncompressed even when permessage-deflate is on (see
    /// [`WebSocket::feed_uncompressed`](crate::WebSocket::feed_uncompressed)).
    fn start_send_uncompressed(&mut self, message: Message) -> Result<(), Error>;

    /// Writes everything queued and flushes the transport.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
}
