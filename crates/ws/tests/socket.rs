//! The tokio layer over real sockets: messages, close handshake, cancel safety, split halves,
//! backpressure, fragments, Stream and Sink.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{client_frame, duplex_pair, tcp_pair, upgrade_request};
use fullduplex::{CloseCode, CloseFrame, Config, DataKind, Event, Message, State};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn text_binary_and_16_mib_round_trip() {
    // Above the default 1 MiB message limit.
    let config = Config::default().max_message_size(16 << 20);
    let (mut client, mut server) = tcp_pair(config.clone(), config).await;
    let echo = tokio::spawn(async move {
        while let Some(message) = server.recv().await {
            let message = message.unwrap();
            if message.is_text() || message.is_binary() {
                server.send(message).await.unwrap();
            }
        }
    });
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    for message in [
        Message::text("héllo ✓"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(""),
        Message::binary(big),
    ] {
        client.send(message.clone()).await.unwrap();
        assert_eq!(client.recv().await.unwrap().unwrap(), message);
    }
    client.close(None).await.unwrap();
    echo.await.unwrap();
}

#[tokio::test]
async fn normal_close_ends_both_streams_without_error() {
    let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    let server_task = tokio::spawn(async move {
        server
            .send(Message::Close(Some(CloseFrame::new(
                CloseCode::NORMAL,
                "done",
            ))))
            .await
            .unwrap();
        assert_eq!(server.state(), State::Closing);
        // The client's echo completes the handshake; then the stream ends cleanly.
        let echo = server.recv().await.unwrap().unwrap();
        assert_eq!(
            echo,
            Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
        );
        assert!(server.recv().await.is_none());
        assert_eq!(server.state(), State::Closed);
    });
    let close = client.recv().await.unwrap().unwrap();
    assert_eq!(
        close,
        Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "done")))
    );
    // The client waits for the server to close TCP, then ends.
    assert!(client.recv().await.is_none());
    assert!(client.recv().await.is_none());
    assert!(matches!(
        client.send(Message::text("late")).await,
        Err(fullduplex::Error::Usage(fullduplex::UsageError::Closed))
    ));
    server_task.await.unwrap();
}

#[tokio::test]
async fn server_closes_tcp_first_after_client_initiated_close() {
    let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    let server_task = tokio::spawn(async move {
        let close = server.recv().await.unwrap().unwrap();
        assert_eq!(
            close,
            Message::Close(Some(CloseFrame::new(CloseCode(4000), "bye")))
        );
        assert!(server.recv().await.is_none());
    });
    client
        .close(Some(CloseFrame::new(CloseCode(4000), "bye")))
        .await
        .unwrap();
    assert_eq!(client.state(), State::Closed);
    server_task.await.unwrap();
}

#[tokio::test]
async fn eof_without_close_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(upgrade_request("/", "").as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await.unwrap();
        // Drop without a close frame.
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = fullduplex::accept(tcp).await.unwrap();
    peer.await.unwrap();
    match ws.recv().await {
        Some(Err(fullduplex::Error::Protocol(fullduplex::proto::ProtocolError::UnexpectedEof))) => {
        }
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
    assert!(ws.recv().await.is_none());
}

/// RFC 6455 section 5.5.2: pongs caused by reading reach the wire when the application only
/// reads, including through the read half of a split connection.
#[tokio::test]
async fn read_half_answers_pings() {
    let (mut client, server) = tcp_pair(Config::default(), Config::default()).await;
    let (mut reader, _writer) = server.split();
    let reading = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(message) = reader.recv().await {
            if let Message::Ping(_) = message.unwrap() {
                pings += 1;
            }
        }
        pings
    });
    for i in 0..10u8 {
        client
            .send(Message::Ping(Bytes::from(vec![i; 3])))
            .await
            .unwrap();
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::from(vec![i; 3]))
        );
    }
    client.close(None).await.unwrap();
    assert_eq!(reading.await.unwrap(), 10);
}

#[tokio::test]
async fn split_halves_work_concurrently() {
    let (client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    let echo = tokio::spawn(async move {
        while let Some(message) = server.recv().await {
            let message = message.unwrap();
            if message.is_text() {
                server.feed(message).await.unwrap();
            }
        }
    });
    let (mut reader, mut writer) = client.split();
    const N: usize = 2_000;
    let write = tokio::spawn(async move {
        for i in 0..N {
            writer
                .send(Message::text(format!("message {i}")))
                .await
                .unwrap();
        }
        writer
    });
    for i in 0..N {
        let message = reader.recv().await.unwrap().unwrap();
        assert_eq!(message.as_text(), Some(format!("message {i}").as_str()));
    }
    let mut writer = write.await.unwrap();
    writer.close(None).await.unwrap();
    assert!(matches!(reader.recv().await, Some(Ok(Message::Close(_)))));
    assert!(reader.recv().await.is_none());
    let ws = reader.reunite(writer).unwrap();
    assert_eq!(ws.state(), State::Closed);
    echo.await.unwrap();
}

/// Dropping `recv()` inside `select!` loses nothing: messages trickle in byte by byte while a
/// timer keeps cancelling the receive.
#[tokio::test]
async fn recv_is_cancel_safe() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    const N: usize = 50;
    let peer = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(upgrade_request("/", "").as_bytes())
            .await
            .unwrap();
        let mut head = [0u8; 1024];
        let _ = tcp.read(&mut head).await.unwrap();
        let mut stream = Vec::new();
        for i in 0..N {
            stream.extend(client_frame(true, 1, format!("msg-{i}").as_bytes()));
        }
        for chunk in stream.chunks(3) {
            tcp.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tcp.write_all(&client_frame(true, 8, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = fullduplex::accept(tcp).await.unwrap();
    let mut received = Vec::new();
    let mut cancelled = 0;
    loop {
        tokio::select! {
            message = ws.recv() => match message {
                Some(Ok(Message::Text(text))) => received.push(text.to_string()),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{e}"),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_micros(100)) => cancelled += 1,
        }
    }
    let expected: Vec<String> = (0..N).map(|i| format!("msg-{i}")).collect();
    assert_eq!(received, expected);
    assert!(cancelled > 0, "the test must actually cancel receives");
    peer.await.unwrap();
}

/// A peer that sends pings and never reads: the application keeps receiving (reading does not
/// wait for our writes), the pongs are coalesced once the output is backed up so it stays
/// bounded, and when the peer finally reads it gets pongs in order, ending with the pong for its
/// last ping (RFC 6455 section 5.5.3).
#[tokio::test]
async fn pongs_to_a_peer_that_does_not_read_stay_bounded() {
    use fullduplex::proto::connection::PONG_BACKLOG;
    const PINGS: usize = 20_000;
    let (mut peer, transport) = tokio::io::duplex(4 << 10);
    let mut server = fullduplex::WebSocket::from_raw(
        transport,
        fullduplex::Role::Server,
        Config::default(),
        bytes::BytesMut::new(),
    );
    let writer = tokio::spawn(async move {
        for i in 0..PINGS {
            peer.write_all(&client_frame(true, 9, i.to_string().as_bytes()))
                .await
                .unwrap();
        }
        peer
    });
    let receive = async {
        let (mut pings, mut most) = (0, 0);
        while pings < PINGS {
            match server.recv().await.unwrap().unwrap() {
                Message::Ping(_) => pings += 1,
                other => panic!("{other:?}"),
            }
            most = most.max(server.buffered_amount());
        }
        most
    };
    let most = tokio::time::timeout(Duration::from_secs(60), receive)
        .await
        .expect("reading stalled behind the unread pongs");
    assert!(most < PONG_BACKLOG + 256, "{most} bytes queued");
    let mut peer = writer.await.unwrap();
    let flush = tokio::spawn(async move {
        server.flush().await.unwrap();
        server
    });
    // Read the server's unmasked pong frames until the one for the last ping.
    let mut bytes = Vec::new();
    let mut pongs: Vec<usize> = Vec::new();
    let mut buf = [0u8; 8192];
    while pongs.last() != Some(&(PINGS - 1)) {
        let n = tokio::time::timeout(Duration::from_secs(10), peer.read(&mut buf))
            .await
            .expect("the last pong never came")
            .unwrap();
        assert!(n > 0, "the server closed the stream");
        bytes.extend_from_slice(&buf[..n]);
        while bytes.len() >= 2 && bytes.len() >= 2 + usize::from(bytes[1]) {
            assert_eq!(bytes[0], 0x8a, "not a pong");
            let len = usize::from(bytes[1]);
            let payload = std::str::from_utf8(&bytes[2..2 + len]).unwrap();
            pongs.push(payload.parse().unwrap());
            bytes.drain(..2 + len);
        }
    }
    assert!(pongs.windows(2).all(|w| w[0] < w[1]), "pongs out of order");
    assert!(pongs.len() < PINGS, "nothing was coalesced");
    flush.await.unwrap();
}

/// Sends wait when the peer does not read: the write buffer stays bounded.
#[tokio::test]
async fn send_applies_backpressure() {
    let limit = 64 << 10;
    let (mut client, server) = duplex_pair(
        16 << 10,
        Config::default().write_buffer_limit(limit),
        Config::default(),
    )
    .await;
    let message = Message::binary(vec![7u8; 1024]);
    let mut queued = 0usize;
    let blocked = loop {
        match tokio::time::timeout(Duration::from_millis(200), client.feed(message.clone())).await {
            Ok(result) => {
                result.unwrap();
                queued += 1;
                assert!(client.buffered_amount() <= limit + 2048);
                if queued > 10_000 {
                    break false;
                }
            }
            Err(_) => break true,
        }
    };
    assert!(blocked, "feed never waited although the peer reads nothing");
    assert!(
        queued * 1024 >= limit,
        "only {queued} messages queued before waiting"
    );
    drop(server);
}

#[tokio::test]
async fn fragments_stream_a_large_message() {
    let (mut client, server) = tcp_pair(Config::default(), Config::default()).await;
    let mut server = server.into_fragments();
    let parts = ["Hel", "lo, ", "wor", "ld"];
    for (i, part) in parts.iter().enumerate() {
        client
            .feed_fragment(DataKind::Text, Bytes::from_static(part.as_bytes()), i == 3)
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    client
        .send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    for (i, part) in parts.iter().enumerate() {
        match server.recv().await.unwrap().unwrap() {
            Event::Fragment(fragment) => {
                assert_eq!(fragment.kind, DataKind::Text);
                assert_eq!(fragment.payload, part.as_bytes());
                assert_eq!(fragment.is_first, i == 0);
                assert_eq!(fragment.is_last, i == 3);
            }
            other => panic!("expected a fragment, got {other:?}"),
        }
    }
    assert_eq!(
        server.recv().await.unwrap().unwrap(),
        Event::Message(Message::Ping(Bytes::from_static(b"p")))
    );
    // Back to whole messages between two messages.
    let mut server = server.into_inner().unwrap();
    client.send(Message::text("x")).await.unwrap();
    assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("x"));
}

/// `into_fragments`: a 3 MiB binary message sent in 48 frames of 64 KiB arrives frame by
/// frame (never whole, so above the 1 MiB message limit it would still be one piece per
/// frame), `into_inner` is refused in the middle of it, and after its last piece the
/// `WebSocket` receives the next (fragmented) message whole.
#[tokio::test]
async fn fragments_wrapper_then_whole_messages_after_into_inner() {
    const FRAME: usize = 64 << 10;
    const FRAMES: usize = 48;
    let config = Config::default().max_message_size(4 << 20);
    let (client, server) = tcp_pair(config.clone(), config).await;
    let mut fragments = server.into_fragments();
    let sender = tokio::spawn(async move {
        let mut client = client;
        for i in 0..FRAMES {
            let payload = Bytes::from(vec![(i % 251) as u8; FRAME]);
            client
                .feed_fragment(DataKind::Binary, payload, i == FRAMES - 1)
                .await
                .unwrap();
        }
        let parts = ["whole ", "after ", "into_inner"];
        for (i, part) in parts.iter().enumerate() {
            client
                .feed_fragment(DataKind::Text, Bytes::from_static(part.as_bytes()), i == 2)
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
        client
    });
    for i in 0..FRAMES {
        match fragments.recv().await.unwrap().unwrap() {
            Event::Fragment(piece) => {
                assert_eq!(piece.kind, DataKind::Binary);
                assert_eq!(piece.payload.len(), FRAME);
                assert!(piece.payload.iter().all(|&b| b == (i % 251) as u8));
                assert_eq!((piece.is_first, piece.is_last), (i == 0, i == FRAMES - 1));
            }
            other => panic!("expected a fragment, got {other:?}"),
        }
        if i == 0 {
            // In the middle of a message: refused, and nothing is lost.
            fragments = fragments.into_inner().unwrap_err();
        }
    }
    let mut server = fragments.into_inner().unwrap();
    assert_eq!(
        server.recv().await.unwrap().unwrap(),
        Message::text("whole after into_inner")
    );
    let mut client = sender.await.unwrap();
    let closing = tokio::spawn(async move { client.close(None).await.unwrap() });
    assert!(matches!(
        server.recv().await.unwrap().unwrap(),
        Message::Close(_)
    ));
    assert!(server.recv().await.is_none());
    closing.await.unwrap();
}

/// After `recv` returned `None`, `peer_close_code` tells a peer's 1011 from a normal close.
#[tokio::test]
async fn peer_close_code_after_the_stream_ended() {
    for code in [CloseCode::INTERNAL_ERROR, CloseCode::NORMAL] {
        let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
        assert_eq!(client.peer_close_code(), None);
        let closing = tokio::spawn(async move {
            server
                .close(Some(CloseFrame::new(code, "server side failure")))
                .await
                .unwrap();
            server
        });
        while let Some(message) = client.recv().await {
            message.unwrap();
        }
        assert_eq!(client.peer_close_code(), Some(code));
        // The server got the client's echo (same code).
        let server = closing.await.unwrap();
        assert_eq!(server.peer_close_code(), Some(code));
    }
    // A close frame without a code reads as 1005 (no status).
    let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    let closing = tokio::spawn(async move {
        server.close(None).await.unwrap();
    });
    while let Some(message) = client.recv().await {
        message.unwrap();
    }
    assert_eq!(client.peer_close_code(), Some(CloseCode::NO_STATUS));
    closing.await.unwrap();
}

/// The same through `recv_many` and a split reader.
#[tokio::test]
async fn peer_close_code_through_recv_many_and_split_reader() {
    let (client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    let (mut reader, _writer) = client.split();
    let closing = tokio::spawn(async move {
        server.send(Message::text("last")).await.unwrap();
        server
            .close(Some(CloseFrame::new(CloseCode::INTERNAL_ERROR, "")))
            .await
            .unwrap();
    });
    let mut seen = Vec::new();
    while let Some(handled) = reader
        .recv_many(|message, _| {
            seen.push(message.to_message());
            Ok::<_, fullduplex::Error>(())
        })
        .await
    {
        handled.unwrap();
    }
    assert_eq!(seen[0], Message::text("last"));
    assert!(matches!(seen[1], Message::Close(_)));
    assert_eq!(reader.peer_close_code(), Some(CloseCode::INTERNAL_ERROR));
    closing.await.unwrap();
}

/// A split reader receives frame by frame too: a 3 MiB binary message in 48 frames of
/// 64 KiB arrives as 48 pieces through `ReadHalf::into_fragments` while the writer half
/// sends 200 messages from another task; `into_inner` is refused in the middle of the
/// message, and after its last piece the `ReadHalf` receives the next (fragmented) message
/// whole, and `reunite` gives the `WebSocket` back.
#[tokio::test]
async fn split_reader_fragments_beside_the_writer_then_whole_messages() {
    const FRAME: usize = 64 << 10;
    const FRAMES: usize = 48;
    const SENT: usize = 200;
    let config = Config::default().max_message_size(4 << 20);
    let (client, server) = tcp_pair(config.clone(), config).await;
    let (reader, mut writer) = server.split();
    let mut fragments = reader.into_fragments();
    let (mut client_reader, mut client_writer) = client.split();
    let sender = tokio::spawn(async move {
        for i in 0..FRAMES {
            let payload = Bytes::from(vec![(i % 251) as u8; FRAME]);
            client_writer
                .feed_fragment(DataKind::Binary, payload, i == FRAMES - 1)
                .await
                .unwrap();
        }
        let parts = ["whole ", "after ", "into_inner"];
        for (i, part) in parts.iter().enumerate() {
            client_writer
                .feed_fragment(DataKind::Text, Bytes::from_static(part.as_bytes()), i == 2)
                .await
                .unwrap();
        }
        client_writer.flush().await.unwrap();
        client_writer
    });
    let receiving = tokio::spawn(async move {
        for i in 0..SENT {
            assert_eq!(
                client_reader.recv().await.unwrap().unwrap(),
                Message::text(format!("w{i}"))
            );
        }
        client_reader
    });
    let writing = tokio::spawn(async move {
        for i in 0..SENT {
            writer.send(Message::text(format!("w{i}"))).await.unwrap();
        }
        writer
    });
    for i in 0..FRAMES {
        match fragments.recv().await.unwrap().unwrap() {
            Event::Fragment(piece) => {
                assert_eq!(piece.kind, DataKind::Binary);
                assert_eq!(piece.payload.len(), FRAME);
                assert!(piece.payload.iter().all(|&b| b == (i % 251) as u8));
                assert_eq!((piece.is_first, piece.is_last), (i == 0, i == FRAMES - 1));
            }
            other => panic!("expected a fragment, got {other:?}"),
        }
        if i == 0 {
            // In the middle of a message: refused, and nothing is lost.
            fragments = fragments.into_inner().unwrap_err();
        }
    }
    let mut reader = fragments.into_inner().unwrap();
    assert_eq!(
        reader.recv().await.unwrap().unwrap(),
        Message::text("whole after into_inner")
    );
    let writer = writing.await.unwrap();
    let client_reader = receiving.await.unwrap();
    let client_writer = sender.await.unwrap();
    let mut server = reader.reunite(writer).unwrap();
    let mut client = client_reader.reunite(client_writer).unwrap();
    // The reunited socket receives whole messages and closes normally.
    client.send(Message::text("reunited")).await.unwrap();
    assert_eq!(
        server.recv().await.unwrap().unwrap(),
        Message::text("reunited")
    );
    let closing = tokio::spawn(async move { client.close(None).await.unwrap() });
    assert!(matches!(
        server.recv().await.unwrap().unwrap(),
        Message::Close(_)
    ));
    assert!(server.recv().await.is_none());
    assert_eq!(server.state(), State::Closed);
    closing.await.unwrap();
}

/// A split reader lends messages with `recv_many` and answers through the outbox while the
/// writer half sends from another task.
#[tokio::test]
async fn split_reader_recv_many_echoes_beside_the_writer() {
    let (client, server) = tcp_pair(Config::default(), Config::default()).await;
    let (mut reader, mut writer) = server.split();
    let echo = tokio::spawn(async move {
        let mut echoed = 0;
        while let Some(handled) = reader
            .recv_many(|message, out| {
                if message.is_data() {
                    out.send_ref(message)?;
                }
                Ok::<_, fullduplex::Error>(())
            })
            .await
        {
            echoed += handled.unwrap();
        }
        echoed
    });
    writer.send(Message::text("from the writer")).await.unwrap();
    let (mut client_reader, mut client_writer) = client.split();
    for i in 0..100 {
        client_writer
            .feed(Message::text(format!("m{i}")))
            .await
            .unwrap();
    }
    client_writer.flush().await.unwrap();
    assert_eq!(
        client_reader.recv().await.unwrap().unwrap(),
        Message::text("from the writer")
    );
    for i in 0..100 {
        assert_eq!(
            client_reader.recv().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
    client_writer.close(None).await.unwrap();
    while let Some(message) = client_reader.recv().await {
        message.unwrap();
    }
    // The 100 messages and the client's close frame.
    assert_eq!(echo.await.unwrap(), 101);
}

/// A streaming relay: the server echoes a 16 MiB message piece by piece while it is still
/// arriving, never holding more than a read of it (uncompressed), and the client (which reassembles) gets the
/// message back whole: text (validated across pieces that cut code points) and binary, with and
/// without compression.
#[tokio::test]
async fn streaming_relay_echoes_a_large_message_while_it_arrives() {
    for compress in [false, true] {
        // The close waits for the echoes still in flight: on a loaded machine that took
        // longer than the default close timeout (5 s).
        let config = Config::default()
            .compression(compress)
            .max_message_size(16 << 20)
            .close_timeout(Duration::from_secs(60));
        let (client, server) = tcp_pair(config.clone(), config).await;
        assert_eq!(client.is_compressed(), compress);
        let mut server = server.into_streaming();
        let relay = tokio::spawn(async move {
            let (mut pieces, mut largest) = (0usize, 0usize);
            while let Some(event) = server.recv().await {
                if let Event::Fragment(piece) = event.unwrap() {
                    pieces += 1;
                    largest = largest.max(piece.payload.len());
                    server
                        .feed_fragment(piece.kind, piece.payload, piece.is_last)
                        .await
                        .unwrap();
                }
            }
            (pieces, largest)
        });
        let text: String = (0..16u32 << 20)
            .map(|i| ['a', 'é', '✓', '𝄞'][(i % 7 % 4) as usize])
            .take(6 << 20)
            .collect();
        let binary: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        // The relay answers while the message is still arriving, so the client must read
        // while it writes (as with a TCP echo): the halves run side by side.
        let (mut reader, mut writer) = client.split();
        let messages = [
            Message::text(text),
            Message::binary(binary),
            Message::text(""),
        ];
        let expected = messages.clone();
        let sending = async move {
            for message in messages {
                writer.send(message).await.unwrap();
            }
            writer.close(None).await.unwrap();
        };
        let receiving = async move {
            for message in expected {
                assert_eq!(reader.recv().await.unwrap().unwrap(), message);
            }
            // Then the close handshake ends the stream.
            while let Some(event) = reader.recv().await {
                assert!(matches!(event.unwrap(), Message::Close(_)));
            }
        };
        tokio::time::timeout(Duration::from_secs(120), async {
            tokio::join!(sending, receiving)
        })
        .await
        .expect("the relay stalled");
        let (pieces, largest) = relay.await.unwrap();
        if !compress {
            // About 120 reads of at most 256 KiB each.
            assert!(pieces > 20, "{pieces} pieces for three messages");
            assert!(largest <= 1 << 20, "a piece of {largest} bytes");
        } else {
            // This text compresses about 500:1: a piece is what one read inflates to.
            assert!(pieces >= 3, "{pieces} pieces for three messages");
        }
    }
}

#[tokio::test]
async fn stream_and_sink() {
    let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    let echo = tokio::spawn(async move {
        while let Some(Ok(message)) = server.next().await {
            if message.is_text() {
                server.feed(message).await.unwrap();
            }
        }
    });
    let mut outgoing =
        futures_util::stream::iter((0..100).map(|i| Ok(Message::text(i.to_string()))));
    client.send_all(&mut outgoing).await.unwrap();
    let got: Vec<Message> = client
        .by_ref()
        .take(100)
        .map(|m| m.unwrap())
        .collect()
        .await;
    assert_eq!(got.len(), 100);
    assert_eq!(got[99], Message::text("99"));
    SinkExt::close(&mut client).await.unwrap();
    assert!(matches!(
        client.next().await,
        Some(Ok(Message::Close(None)))
    ));
    assert!(client.next().await.is_none());
    echo.await.unwrap();
}

/// A protocol violation fails the connection with the right close code on the wire.
#[tokio::test]
async fn protocol_error_sends_close_code_then_closes() {
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
        // Invalid UTF-8 in a text frame.
        tcp.write_all(&client_frame(true, 1, &[0xce, 0xba, 0xff]))
            .await
            .unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        rest
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = fullduplex::accept(tcp).await.unwrap();
    match ws.recv().await {
        Some(Err(fullduplex::Error::Protocol(fullduplex::proto::ProtocolError::InvalidUtf8))) => {}
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
    assert!(ws.recv().await.is_none());
    let wire = peer.await.unwrap();
    // An unmasked close frame with code 1007, then EOF (the server closed TCP).
    assert_eq!(wire[0], 0x88);
    assert_eq!(u16::from_be_bytes([wire[2], wire[3]]), 1007);
}

/// What every connection carries even when idle: 240 bytes (release build, 32 of them the
/// `TcpStream`). A tokio task holding an echo loop over it is allocated in 128-byte steps
/// (see BENCHMARKS.md), and the push server keeps one per subscriber: growing the struct
/// moves every connection up a step. Keep new state boxed or pooled unless every connection
/// needs it.
#[test]
fn a_websocket_stays_small() {
    let size = std::mem::size_of::<fullduplex::WebSocket<TcpStream>>();
    let tcp = std::mem::size_of::<TcpStream>();
    eprintln!("WebSocket<TcpStream> {size} bytes, TcpStream {tcp} bytes");
    assert!(size - tcp <= 208, "WebSocket<TcpStream> is {size} bytes");
    let size = std::mem::size_of::<fullduplex::proto::Connection>();
    assert!(size <= 176, "Connection is {size} bytes");
}

/// The `feed_*` special cases: frames encoded once (as for a broadcast) and a message exempt
/// from compression arrive as ordinary messages, from a `WebSocket` and from a write half.
#[tokio::test]
async fn feed_encoded_and_feed_uncompressed_arrive_whole() {
    use fullduplex::proto::connection::encode_server_message;
    let config = Config::default().compression(true);
    let (mut client, mut server) = tcp_pair(config.clone(), config).await;
    assert!(server.is_compressed());
    let frame = encode_server_message(&Message::text("encoded once"));
    server.feed_encoded(frame.clone()).await.unwrap();
    server
        .feed_uncompressed(Message::binary(vec![7u8; 4096]))
        .await
        .unwrap();
    server.flush().await.unwrap();
    assert_eq!(
        client.recv().await.unwrap().unwrap(),
        Message::text("encoded once")
    );
    assert_eq!(
        client.recv().await.unwrap().unwrap(),
        Message::binary(vec![7u8; 4096])
    );
    let (_reader, mut writer) = server.split();
    writer.feed_encoded(frame).await.unwrap();
    writer
        .feed_uncompressed(Message::text("as is"))
        .await
        .unwrap();
    writer.flush().await.unwrap();
    assert_eq!(
        client.recv().await.unwrap().unwrap(),
        Message::text("encoded once")
    );
    assert_eq!(
        client.recv().await.unwrap().unwrap(),
        Message::text("as is")
    );
}
