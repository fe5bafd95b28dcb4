//! [`Fragments`]: a [`WebSocket`] or a [`ReadHalf`] that receives data messages piece by
//! piece.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use fullduplex_proto::{CloseFrame, DataKind, Event, Message, ReceiveMode};
use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Error;
use crate::socket::WebSocket;
use crate::split::ReadHalf;

/// What [`Fragments`] wraps: a [`WebSocket`] or a [`ReadHalf`]. Sealed: the trait is public
/// only so that it can bound `Fragments`' methods, and nothing outside this crate can name it.
pub(crate) mod sealed {
    use std::task::{Context, Poll};

    use fullduplex_proto::{Event, ReceiveMode};

    use crate::error::Error;

    /// A receiver whose core can be switched between whole messages and pieces.
    pub trait Receiver: Unpin {
        /// Polls for the next event in the core's current receive mode.
        fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Error>>>;
        /// Switches the core's receive mode.
        fn set_receive_mode(&mut self, mode: ReceiveMode);
        /// True while part of a frame is buffered in the core (a message is under way).
        fn frame_under_way(&self) -> bool;
    }
}

use sealed::Receiver;

/// A [`WebSocket`] or a [`ReadHalf`] that hands out data messages in pieces
/// ([`Event::Fragment`]) instead of whole: for a relay that passes large messages on while
/// they arrive, or an application that writes them to disk, holding at most one piece of
/// each. Control messages (ping, pong, close) still come whole, as [`Event::Message`]. Limits
/// and UTF-8 validation apply as for whole messages.
///
/// Made by [`WebSocket::into_fragments`] or [`ReadHalf::into_fragments`] (one piece per
/// frame), or by [`WebSocket::into_streaming`] or [`ReadHalf::into_streaming`] (one piece
/// per read: what has arrived of the message); [`into_inner`](Fragments::into_inner) gives
/// the `WebSocket` or the `ReadHalf` back between two messages (a read half can then be
/// [`reunite`](ReadHalf::reunite)d with its writer). A `Fragments<WebSocket<S>>` also sends
/// as a `WebSocket` does, and passes a message on piece by piece with
/// [`feed_fragment`](Fragments::feed_fragment); a `Fragments<ReadHalf<S>>` only receives,
/// while its [`WriteHalf`](crate::WriteHalf) sends from another task.
///
/// Like a TCP echo, an echo written this way needs a peer that reads while it sends:
/// `feed_fragment` waits while the write buffer is full, and meanwhile nothing is read. For
/// peers that read only once they have sent a whole message, raise
/// [`Config::write_buffer_limit`](crate::Config::write_buffer_limit) above the largest
/// message.
///
/// ```no_run
/// # async fn demo(ws: fullduplex::WebSocket<tokio::net::TcpStream>) -> Result<(), fullduplex::Error> {
/// use fullduplex::Event;
/// let mut ws = ws.into_streaming();
/// while let Some(event) = ws.recv().await {
///     if let Event::Fragment(piece) = event? {
///         ws.feed_fragment(piece.kind, piece.payload, piece.is_last).await?;
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Fragments<R> {
    inner: R,
    /// A data message has been handed out in part: its first piece, not its last.
    in_message: bool,
}

impl<R: Receiver> Fragments<R> {
    fn new(mut inner: R, mode: ReceiveMode) -> Self {
        inner.set_receive_mode(mode);
        Fragments {
            inner,
            in_message: false,
        }
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Receives data messages frame by frame from the next message on: each frame of a
    /// fragmented message is one [`Event::Fragment`] (a message sent in one frame is one
    /// piece, first and last).
    pub fn into_fragments(self) -> Fragments<WebSocket<S>> {
        Fragments::new(self, ReceiveMode::Fragments)
    }

    /// Receives data messages as they arrive from the next message on: every read that
    /// brings payload bytes of a data message yields them at once as an [`Event::Fragment`],
    /// without waiting for frames to complete, so the connection never holds more of a
    /// message than one read (of a compressed message: what one read inflates to). A text
    /// piece may end inside a code point.
    pub fn into_streaming(self) -> Fragments<WebSocket<S>> {
        Fragments::new(self, ReceiveMode::Streaming)
    }
}

impl<S> ReadHalf<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Receives data messages frame by frame from the next message on, as
    /// [`WebSocket::into_fragments`] does; the [`WriteHalf`](crate::WriteHalf) keeps sending.
    pub fn into_fragments(self) -> Fragments<ReadHalf<S>> {
        Fragments::new(self, ReceiveMode::Fragments)
    }

    /// Receives data messages as they arrive from the next message on, as
    /// [`WebSocket::into_streaming`] does; the [`WriteHalf`](crate::WriteHalf) keeps sending.
    pub fn into_streaming(self) -> Fragments<ReadHalf<S>> {
        Fragments::new(self, ReceiveMode::Streaming)
    }
}

impl<S> Receiver for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Error>>> {
        self.poll_next_event(cx)
    }

    fn set_receive_mode(&mut self, mode: ReceiveMode) {
        WebSocket::set_receive_mode(self, mode);
    }

    fn frame_under_way(&self) -> bool {
        self.connection().read_hint() > 0
    }
}

impl<R: Receiver> Fragments<R> {
    /// Receives the next event: a piece of a data message, or a whole control message.
    /// `None` once the connection has closed normally (see [`WebSocket::recv`]).
    ///
    /// # Errors
    ///
    /// As [`WebSocket::recv`]: `Some(Err(_))` with [`Error::Protocol`], [`Error::Io`] or
    /// [`Error::Timeout`]; after an error the next call returns `None`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes loses nothing; bytes read so far
    /// stay in the connection and the next call continues from them.
    pub async fn recv(&mut self) -> Option<Result<Event, Error>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Error>>> {
        let polled = self.inner.poll_event(cx);
        if let Poll::Ready(Some(Ok(Event::Fragment(piece)))) = &polled {
            self.in_message = !piece.is_last;
        }
        polled
    }

    /// The `WebSocket` or `ReadHalf` back, receiving whole messages again; `Err(self)` while
    /// a data message is being received (a piece of it was handed out or a frame of it is
    /// partly here): receive its last piece first.
    // Both variants hold the same connection; boxing the error would allocate for nothing.
    #[allow(clippy::result_large_err)]
    pub fn into_inner(mut self) -> Result<R, Fragments<R>> {
        if self.in_message || self.inner.frame_under_way() {
            return Err(self);
        }
        self.inner.set_receive_mode(ReceiveMode::Messages);
        Ok(self.inner)
    }

    /// The `WebSocket` (state, subprotocol, peer's close code, buffered amount) or the
    /// `ReadHalf` (peer's close code).
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<S> Fragments<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Queues a message and writes everything queued (see [`WebSocket::send`]).
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::send`].
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.inner.send(message).await
    }

    /// Queues a message without flushing (see [`WebSocket::feed`]); what is queued leaves
    /// when [`recv`](Fragments::recv) next waits for the peer, or at the next flush.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::feed`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::feed`].
    pub fn feed(&mut self, message: Message) -> impl Future<Output = Result<(), Error>> + '_ {
        self.inner.feed(message)
    }

    /// Queues one frame of a fragmented message without flushing (see
    /// [`WebSocket::feed_fragment`]): a relay feeds every piece it receives.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::feed_fragment`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::feed_fragment`].
    pub fn feed_fragment(
        &mut self,
        kind: DataKind,
        payload: Bytes,
        is_last: bool,
    ) -> impl Future<Output = Result<(), Error>> + '_ {
        self.inner.feed_fragment(kind, payload, is_last)
    }

    /// Writes everything queued (see [`WebSocket::flush`]).
    ///
    /// # Errors
    ///
    /// As [`WebSocket::flush`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::flush`].
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.inner.flush().await
    }

    /// Closes the connection (see [`WebSocket::close`]); pieces that arrive meanwhile are
    /// discarded.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::close`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::close`].
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        self.inner.close(frame).await
    }
}

impl<R: Receiver> Stream for Fragments<R> {
    type Item = Result<Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}
