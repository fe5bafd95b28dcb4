//! `WebSocket::recv_with`: messages lent to a handler, replies through its outbox. The same
//! protocol behaviour as `recv` and `feed`: batched writes, automatic pongs, closing, protocol
//! errors, backpressure.

mod common;

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use common::{client_frame, tcp_pair, upgrade_request};
use fullduplex::proto::ProtocolError;
use fullduplex::{
    CloseCode, CloseFrame, Config, Error, Message, MessageRef, PollSocket, Role, WebSocket,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A transport that hands out scripted reads (then waits forever) and counts writes; writes
/// are taken whole, or refused (`Pending`) when `stall_writes` is set.
#[derive(Default)]
struct Scripted {
    reads: VecDeque<Vec<u8>>,
    stall_writes: bool,
    writes: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(mut chunk) = self.reads.pop_front() else {
            return Poll::Pending;
        };
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        if n < chunk.len() {
            self.reads.push_front(chunk.split_off(n));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.stall_writes {
            return Poll::Pending;
        }
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Ok(n))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Polls `recv_with` once with an echo handler: `Pending` when it would wait for the peer.
fn poll_echo(ws: &mut WebSocket<Scripted>) -> Poll<Option<Result<usize, Error>>> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let recv = ws.recv_with(
        |message: MessageRef<'_>, out: &mut fullduplex::Outbox<'_>| {
            if message.is_data() {
                out.send_ref(message).unwrap();
            }
            message.payload().len()
        },
    );
    std::pin::pin!(recv).poll(&mut cx)
}

#[test]
fn replies_to_a_batch_of_reads_leave_in_one_write() {
    let batch: Vec<u8> = (0..8u8)
        .flat_map(|i| client_frame(true, 2, &[i; 16]))
        .collect();
    let transport = Scripted {
        reads: VecDeque::from([batch]),
        ..Scripted::default()
    };
    let (writes, bytes) = (transport.writes.clone(), transport.bytes.clone());
    let mut ws = WebSocket::from_raw(
        transport,
        Role::Server,
        Config::default().no_keepalive(),
        Default::default(),
    );
    for _ in 0..8 {
        assert!(matches!(poll_echo(&mut ws), Poll::Ready(Some(Ok(16)))));
        assert_eq!(
            writes.load(Ordering::SeqCst),
            0,
            "no write while messages are buffered"
        );
    }
    // Nothing more to read: the eight echoes leave together, then it waits.
    assert!(poll_echo(&mut ws).is_pending());
    assert_eq!(writes.load(Ordering::SeqCst), 1);
    assert_eq!(bytes.load(Ordering::SeqCst), 8 * (2 + 16));
    assert_eq!(ws.buffered_amount(), 0);
}

#[test]
fn a_peer_that_does_not_read_stops_the_handler_at_the_write_limit() {
    let payload = vec![7u8; 10_000];
    let frames: Vec<Vec<u8>> = (0..100).map(|_| client_frame(true, 2, &payload)).collect();
    let transport = Scripted {
        reads: frames.into(),
        stall_writes: true,
        ..Scripted::default()
    };
    let config = Config::default()
        .write_buffer_limit(64 << 10)
        .no_keepalive();
    let mut ws = WebSocket::from_raw(transport, Role::Server, config, Default::default());
    let mut delivered = 0;
    while let Poll::Ready(Some(Ok(_))) = poll_echo(&mut ws) {
        delivered += 1;
        assert!(delivered < 100, "the handler ran for every message");
    }
    // Messages are handed out while the queue is below the limit: at most one more.
    assert_eq!(delivered, 7);
    assert!(ws.buffered_amount() < (64 << 10) + 10_010);
}

#[tokio::test]
async fn echo_over_tcp_with_pings_and_a_client_close() {
    let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    let echo = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(result) = server
            .recv_with(|message, out| {
                if message.is_data() {
                    out.send_ref(message)?;
                }
                Ok::<_, fullduplex::proto::SendError>(message.to_message())
            })
            .await
        {
            seen.push(result.unwrap().unwrap());
        }
        seen
    });
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let messages = [
        Message::text("héllo ✓"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(""),
        Message::binary(big),
    ];
    for message in &messages {
        client.send(message.clone()).await.unwrap();
        assert_eq!(&client.recv().await.unwrap().unwrap(), message);
    }
    client
        .send(Message::Ping("are you there".into()))
        .await
        .unwrap();
    assert_eq!(
        client.recv().await.unwrap().unwrap(),
        Message::Pong("are you there".into())
    );
    client.close(None).await.unwrap();
    let seen = echo.await.unwrap();
    assert_eq!(&seen[..4], &messages);
    assert_eq!(seen[4], Message::Ping("are you there".into()));
    assert_eq!(seen[5], Message::Close(None));
    assert_eq!(seen.len(), 6);
}

#[tokio::test]
async fn the_handler_can_close_through_its_outbox() {
    let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    let closer = tokio::spawn(async move {
        let mut handled = 0;
        while let Some(result) = server
            .recv_with(|message, out| {
                if message.is_data() {
                    out.close(Some(CloseFrame::new(CloseCode(4000), "enough")))
                        .unwrap();
                }
            })
            .await
        {
            result.unwrap();
            handled += 1;
        }
        handled
    });
    client.send(Message::text("one")).await.unwrap();
    match client.recv().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode(4000));
            assert_eq!(frame.reason, "enough");
        }
        other => panic!("expected the server's close, got {other:?}"),
    }
    assert!(client.recv().await.is_none());
    // The text message, then the client's close echo.
    assert_eq!(closer.await.unwrap(), 2);
}

/// Lending works again on a `WebSocket` taken back from a fragment receiver.
#[tokio::test]
async fn lends_whole_messages_after_fragments_into_inner() {
    let (mut client, server) = tcp_pair(Config::default(), Config::default()).await;
    let mut server = server.into_streaming().into_inner().unwrap();
    client.send(Message::text("whole")).await.unwrap();
    let text = server
        .recv_with(|message, _| message.as_text().map(str::to_owned))
        .await;
    assert_eq!(text.unwrap().unwrap().as_deref(), Some("whole"));
}

#[tokio::test]
async fn invalid_utf8_fails_with_1007() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(upgrade_request("/", "").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
        let mut frames = client_frame(true, 1, b"fine");
        frames.extend(client_frame(true, 1, &[0xce, 0xba, 0xff]));
        tcp.write_all(&frames).await.unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        rest
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = fullduplex::accept(tcp).await.unwrap();
    let first = ws.recv_with(|message, _| message.as_text().map(str::to_owned));
    assert_eq!(first.await.unwrap().unwrap().as_deref(), Some("fine"));
    match ws
        .recv_with(|_, _| panic!("an invalid message reached the handler"))
        .await
    {
        Some(Err(Error::Protocol(ProtocolError::InvalidUtf8))) => {}
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
    assert!(ws.recv_with(|_, _| ()).await.is_none());
    let wire = peer.await.unwrap();
    assert_eq!(wire[0], 0x88);
    assert_eq!(u16::from_be_bytes([wire[2], wire[3]]), 1007);
}

/// Polls `recv_many` once with an echo handler.
fn poll_echo_many(ws: &mut WebSocket<Scripted>) -> Poll<Option<Result<usize, Error>>> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut handler = |message: MessageRef<'_>, out: &mut fullduplex::Outbox<'_>| {
        if message.is_data() {
            out.send_ref(message)?;
        }
        Ok::<_, Error>(())
    };
    ws.poll_recv_many(&mut cx, &mut handler)
}

fn scripted_server(reads: Vec<Vec<u8>>, stall_writes: bool, config: Config) -> WebSocket<Scripted> {
    let transport = Scripted {
        reads: reads.into(),
        stall_writes,
        ..Scripted::default()
    };
    // Polled by hand, outside any runtime: no timers (keepalive is on by default).
    WebSocket::from_raw(
        transport,
        Role::Server,
        config.no_keepalive(),
        Default::default(),
    )
}

#[test]
fn recv_many_handles_a_batch_in_one_call_and_its_replies_leave_in_one_write() {
    let batch: Vec<u8> = (0..8u8)
        .flat_map(|i| client_frame(true, 2, &[i; 16]))
        .collect();
    let mut ws = scripted_server(vec![batch], false, Config::default());
    let (writes, bytes) = (ws.get_ref().writes.clone(), ws.get_ref().bytes.clone());
    assert!(matches!(poll_echo_many(&mut ws), Poll::Ready(Some(Ok(8)))));
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    assert!(poll_echo_many(&mut ws).is_pending());
    assert_eq!(writes.load(Ordering::SeqCst), 1);
    assert_eq!(bytes.load(Ordering::SeqCst), 8 * (2 + 16));
}

#[test]
fn recv_many_stops_at_the_write_limit() {
    let payload = vec![7u8; 1000];
    let frames: Vec<Vec<u8>> = (0..100).map(|_| client_frame(true, 2, &payload)).collect();
    // One frame per read, or all of them in one stream (several whole frames per read).
    for reads in [frames.clone(), vec![frames.concat()]] {
        let one_stream = reads.len() == 1;
        let config = Config::default().write_buffer_limit(8 << 10);
        let mut ws = scripted_server(reads, true, config);
        let (mut delivered, mut most) = (0, 0);
        while let Poll::Ready(Some(Ok(handled))) = poll_echo_many(&mut ws) {
            delivered += handled;
            most = most.max(handled);
            assert!(delivered < 100, "the handler ran for every message");
        }
        // A call handles what the buffer holds and does not read again for more.
        assert_eq!(most > 1, one_stream, "at most {most} per call");
        // As with `recv_with`: messages are handed out while the queue is below the limit
        // (nine echoes of 1,004 bytes reach 8 KiB).
        assert_eq!(delivered, 9);
        assert_eq!(ws.buffered_amount(), 9 * 1004);
        assert!(poll_echo_many(&mut ws).is_pending());
    }
}

#[test]
fn recv_many_returns_a_protocol_error_after_the_messages_before_it() {
    let mut read = client_frame(true, 1, b"fine");
    read.extend(client_frame(true, 1, b"also fine"));
    read.extend(client_frame(true, 1, &[0xce, 0xba, 0xff]));
    read.extend(client_frame(true, 1, b"never seen"));
    let mut ws = scripted_server(vec![read], false, Config::default());
    let bytes = ws.get_ref().bytes.clone();
    assert!(matches!(poll_echo_many(&mut ws), Poll::Ready(Some(Ok(2)))));
    match poll_echo_many(&mut ws) {
        Poll::Ready(Some(Err(Error::Protocol(ProtocolError::InvalidUtf8)))) => {}
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
    // The two echoes and the close frame went out; then the stream ends.
    assert!(bytes.load(Ordering::SeqCst) > (2 + 4) + (2 + 9) + 4);
    assert!(matches!(poll_echo_many(&mut ws), Poll::Ready(None)));
}

/// The error type of a handler that can stop on its own.
#[derive(Debug)]
#[allow(dead_code)] // `Ws` is read through `Debug` only.
enum Stop {
    Here(usize),
    Ws(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Stop {
        Stop::Ws(error)
    }
}

#[test]
fn a_handler_error_stops_the_batch_and_the_rest_comes_next() {
    let read: Vec<u8> = (1..=3u8)
        .flat_map(|i| client_frame(true, 2, &[i; 3]))
        .collect();
    let mut ws = scripted_server(vec![read], false, Config::default());
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut seen = Vec::new();
    let mut handler = |message: MessageRef<'_>, _: &mut fullduplex::Outbox<'_>| {
        let first = message.payload()[0] as usize;
        seen.push(first);
        if first == 2 {
            return Err(Stop::Here(first));
        }
        Ok(())
    };
    assert!(matches!(
        ws.poll_recv_many(&mut cx, &mut handler),
        Poll::Ready(Some(Err(Stop::Here(2))))
    ));
    assert!(matches!(
        ws.poll_recv_many(&mut cx, &mut handler),
        Poll::Ready(Some(Ok(1)))
    ));
    assert_eq!(seen, [1, 2, 3]);
}

#[tokio::test]
async fn recv_many_echoes_over_tcp_and_ends_with_the_close() {
    let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    let echo = tokio::spawn(async move {
        let mut handled = 0;
        while let Some(result) = server
            .recv_many(|message, out| {
                if message.is_data() {
                    out.send_ref(message)?;
                }
                Ok::<_, Error>(())
            })
            .await
        {
            handled += result.unwrap();
        }
        handled
    });
    for i in 0..50u32 {
        client
            .feed(Message::text(format!("message {i}")))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    for i in 0..50u32 {
        let echoed = client.recv().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("message {i}")));
    }
    client.close(None).await.unwrap();
    // 50 messages and the close.
    assert_eq!(echo.await.unwrap(), 51);
}
