//! The tokio layer over real sockets: messages, close handshake, cancel safety, split halves,
//! backpressure, fragments, Stream and Sink.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{client_frame, duplex_pair, tcp_pair, upgrade_request};
use fullduplex::{CloseCode, CloseFrame, Config, DataKind, Event, Message, ReceiveMode, State};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn text_binary_and_16_mib_round_trip() {
    let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
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
        Err(fullduplex::Error::Closed)
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
    let (mut client, mut server) = tcp_pair(Config::default(), Config::default()).await;
    server.set_receive_mode(ReceiveMode::Fragments);
    let parts = ["Hel", "lo, ", "wor", "ld"];
    for (i, part) in parts.iter().enumerate() {
        client
            .send_fragment(DataKind::Text, Bytes::from_static(part.as_bytes()), i == 3)
            .await
            .unwrap();
    }
    client
        .send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    for (i, part) in parts.iter().enumerate() {
        match server.recv_event().await.unwrap().unwrap() {
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
        server.recv_event().await.unwrap().unwrap(),
        Event::Message(Message::Ping(Bytes::from_static(b"p")))
    );
    // recv (whole messages) refuses to hand out fragments.
    client.send(Message::text("x")).await.unwrap();
    assert!(matches!(
        server.recv().await,
        Some(Err(fullduplex::Error::FragmentMode))
    ));
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
