//! Read and write halves of a [`WebSocket`] for two tasks.
//!
//! Both halves share the connection behind a short-lived lock that is held only while one
//! non-blocking poll runs, never across an await, so neither half waits for the other's I/O.
//! Both may write (the read half writes pongs and the close echo that reading causes), and a
//! transport keeps one waker per direction, so each half registers its waker in a shared
//! [`HalfWakers`] and polls the transport with a waker that wakes both: a wake-up meant for one
//! half is never lost to the other.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use fullduplex_proto::{
    CloseCode, CloseFrame, DataKind, Event, Message, MessageRef, Outbox, ReceiveMode,
};
use futures_core::Stream;
use futures_sink::Sink;
use std::future::poll_fn;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Error;
use crate::fragments::sealed::Receiver;
use crate::poll::PollSocket;
use crate::socket::WebSocket;

/// The wakers of the two halves; waking it wakes both.
#[derive(Debug, Default)]
struct HalfWakers {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl HalfWakers {
    fn register(slot: &Mutex<Option<Waker>>, waker: &Waker) {
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match slot.as_ref() {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

impl Wake for HalfWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        for slot in [&self.read, &self.write] {
            let waker = slot
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

#[derive(Debug)]
struct Shared<S> {
    socket: Mutex<WebSocket<S>>,
    wakers: Arc<HalfWakers>,
    waker: Waker,
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, WebSocket<S>> {
        self.socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The receiving half: a `Stream` of messages, `recv`, the borrowed `recv_many` and
/// `recv_with`, and piece-by-piece reception with [`into_fragments`](ReadHalf::into_fragments)
/// and [`into_streaming`](ReadHalf::into_streaming), as on a [`WebSocket`].
#[derive(Debug)]
pub struct ReadHalf<S> {
    shared: Arc<Shared<S>>,
}

/// The sending half: a `Sink` of messages, `send`, `feed`, `flush`, `close`, and the special
/// cases `feed_fragment`, `feed_encoded`, `feed_uncompressed`, as on a [`WebSocket`].
#[derive(Debug)]
pub struct WriteHalf<S> {
    shared: Arc<Shared<S>>,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Splits the connection into halves that two tasks can use at the same time.
    ///
    /// ```no_run
    /// # async fn demo(ws: fullduplex::WebSocket<tokio::net::TcpStream>) -> Result<(), fullduplex::Error> {
    /// let (mut reader, mut writer) = ws.split();
    /// tokio::spawn(async move {
    ///     while let Some(Ok(message)) = reader.recv().await {
    ///         println!("{message:?}");
    ///     }
    /// });
    /// writer.send("hello".into()).await?;
    /// # Ok(()) }
    /// ```
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        let wakers = Arc::new(HalfWakers::default());
        let shared = Arc::new(Shared {
            socket: Mutex::new(self),
            waker: Waker::from(wakers.clone()),
            wakers,
        });
        (
            ReadHalf {
                shared: shared.clone(),
            },
            WriteHalf { shared },
        )
    }
}

/// Runs `f` on the socket with a context whose waker wakes both halves.
fn with_socket<S, T>(
    shared: &Shared<S>,
    own_slot: &Mutex<Option<Waker>>,
    cx: &mut Context<'_>,
    f: impl FnOnce(&mut WebSocket<S>, &mut Context<'_>) -> T,
) -> T {
    HalfWakers::register(own_slot, cx.waker());
    let mut shared_cx = Context::from_waker(&shared.waker);
    let mut socket = shared.lock();
    f(&mut socket, &mut shared_cx)
}

impl<S> ReadHalf<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Receives the next message; `None` after a normal close.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::recv`]: `Some(Err(_))` with [`Error::Protocol`], [`Error::Io`] or
    /// [`Error::Timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`WebSocket::recv`].
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Lends every message that has arrived to `handler`, with an [`Outbox`] for replies
    /// (see [`WebSocket::recv_many`]). The replies are queued on the shared connection and
    /// leave with the next write of either half.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::recv_many`]: `Some(Err(_))` with the first error `handler` returned,
    /// or [`Error::Protocol`], [`Error::Io`] or [`Error::Timeout`] converted with `From`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`WebSocket::recv_many`].
    pub async fn recv_many<E, F>(&mut self, mut handler: F) -> Option<Result<usize, E>>
    where
        F: FnMut(MessageRef<'_>, &mut Outbox<'_>) -> Result<(), E>,
        E: From<Error>,
    {
        poll_fn(|cx| {
            with_socket(&self.shared, &self.shared.wakers.read, cx, |ws, cx| {
                ws.poll_recv_many(cx, &mut handler)
            })
        })
        .await
    }

    /// Lends the next message to `handler`, with an [`Outbox`] for replies: the one-message
    /// form of [`recv_many`](ReadHalf::recv_many) (see [`WebSocket::recv_with`]).
    ///
    /// # Errors
    ///
    /// As [`WebSocket::recv_with`]: `Some(Err(_))` with [`Error::Protocol`], [`Error::Io`] or
    /// [`Error::Timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`WebSocket::recv_with`].
    pub async fn recv_with<R>(
        &mut self,
        handler: impl FnOnce(MessageRef<'_>, &mut Outbox<'_>) -> R,
    ) -> Option<Result<R, Error>> {
        let mut handler = Some(handler);
        poll_fn(|cx| {
            with_socket(&self.shared, &self.shared.wakers.read, cx, |ws, cx| {
                ws.poll_recv_with(cx, &mut handler)
            })
        })
        .await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        with_socket(&self.shared, &self.shared.wakers.read, cx, |ws, cx| {
            ws.poll_recv(cx)
        })
    }

    /// The code of the peer's close frame once it has arrived (see
    /// [`WebSocket::peer_close_code`]).
    pub fn peer_close_code(&self) -> Option<CloseCode> {
        self.shared.lock().peer_close_code()
    }

    /// True if both halves come from the same `split`.
    pub fn is_pair_of(&self, other: &WriteHalf<S>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Joins the halves back into the connection. Fails (returning them) if they come from
    /// different `split`s.
    pub fn reunite(self, other: WriteHalf<S>) -> Result<WebSocket<S>, (ReadHalf<S>, WriteHalf<S>)> {
        if !self.is_pair_of(&other) {
            return Err((self, other));
        }
        drop(other);
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => Ok(shared
                .socket
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner())),
            // Unreachable: both halves were the only owners and one is dropped.
            Err(_) => unreachable!("the two halves are the only owners"),
        }
    }
}

impl<S> WriteHalf<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_with<T>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut WebSocket<S>, &mut Context<'_>) -> T,
    ) -> T {
        with_socket(&self.shared, &self.shared.wakers.write, cx, f)
    }

    /// Queues a message and flushes; waits while the write buffer is full.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send`]: [`Error::Usage`], [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::send`].
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message without flushing (waits while the write buffer is full).
    ///
    /// # Errors
    ///
    /// As [`WebSocket::feed`]: [`Error::Usage`], [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::feed`].
    pub async fn feed(&mut self, message: Message) -> Result<(), Error> {
        poll_fn(|cx| self.poll_with(cx, |ws, cx| ws.poll_ready_send(cx))).await?;
        self.shared.lock().start_send_message(message)
    }

    /// Queues one frame of a fragmented message (see [`WebSocket::feed_fragment`]).
    ///
    /// # Errors
    ///
    /// As [`WebSocket::feed_fragment`]: [`Error::Usage`], [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::feed_fragment`].
    pub async fn feed_fragment(
        &mut self,
        kind: DataKind,
        payload: Bytes,
        is_last: bool,
    ) -> Result<(), Error> {
        poll_fn(|cx| self.poll_with(cx, |ws, cx| ws.poll_ready_send(cx))).await?;
        self.shared
            .lock()
            .start_send_fragment(kind, payload, is_last)
    }

    /// Queues frames encoded once for many connections (see [`WebSocket::feed_encoded`]).
    ///
    /// # Errors
    ///
    /// As [`WebSocket::feed_encoded`]: [`Error::Usage`], [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::feed_encoded`].
    pub async fn feed_encoded(&mut self, frames: Bytes) -> Result<(), Error> {
        poll_fn(|cx| self.poll_with(cx, |ws, cx| ws.poll_ready_send(cx))).await?;
        self.shared.lock().start_send_encoded(frames)
    }

    /// Queues a message uncompressed (see [`WebSocket::feed_uncompressed`]).
    ///
    /// # Errors
    ///
    /// As [`WebSocket::feed_uncompressed`]: [`Error::Usage`], [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::feed_uncompressed`].
    pub async fn feed_uncompressed(&mut self, message: Message) -> Result<(), Error> {
        poll_fn(|cx| self.poll_with(cx, |ws, cx| ws.poll_ready_send(cx))).await?;
        self.shared.lock().start_send_uncompressed(message)
    }

    /// Writes everything queued.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::flush`]: [`Error::Io`], [`Error::Timeout`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::flush`].
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_with(cx, |ws, cx| ws.poll_write_out(cx))).await
    }

    /// Sends a close frame and flushes it. The read half sees the peer's answer and then the
    /// end of the stream.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for an invalid close frame or a second close, [`Error::Io`] when the
    /// transport failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe once the frame is queued (at the first poll): what is left is written by
    /// the next flush.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        self.shared
            .lock()
            .start_send_message(Message::Close(frame))?;
        self.flush().await
    }
}

impl<S> Receiver for ReadHalf<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Error>>> {
        with_socket(&self.shared, &self.shared.wakers.read, cx, |ws, cx| {
            ws.poll_next_event(cx)
        })
    }

    fn set_receive_mode(&mut self, mode: ReceiveMode) {
        self.shared.lock().set_receive_mode(mode);
    }

    fn frame_under_way(&self) -> bool {
        self.shared.lock().connection().read_hint() > 0
    }
}

impl<S> Stream for ReadHalf<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S> Sink<Message> for WriteHalf<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_with(cx, |ws, cx| ws.poll_ready_send(cx))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        self.shared.lock().start_send_message(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_with(cx, |ws, cx| ws.poll_write_out(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_with(cx, |ws, cx| Pin::new(ws).poll_close(cx))
    }
}
