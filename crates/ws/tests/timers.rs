//! Keepalive, idle, close and handshake timeouts, on tokio's paused clock (no real waiting).
//! Keepalive is on by default; the tests of other timers turn it off.

mod common;

use std::time::Duration;

use common::duplex_pair;
use fullduplex::{ClientRequest, Config, Error, Message, TimeoutKind};
use tokio::io::AsyncReadExt;

#[tokio::test(start_paused = true)]
async fn keepalive_pings_and_a_live_peer_keeps_the_connection() {
    let client_config =
        Config::default().keepalive(Duration::from_secs(10), Duration::from_secs(5));
    let (mut client, mut server) =
        duplex_pair(64 << 10, client_config, Config::default().no_keepalive()).await;
    // The server reads (and so answers pings automatically), counting them.
    let server_task = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(message)) = server.recv().await {
            if let Message::Ping(_) = message {
                pings += 1;
            }
        }
        pings
    });
    // The client reads for 65 s of (paused) time: pings at 9-10 s (the first is jittered),
    // then every 10 s, each answered by a pong that the application also sees.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(65);
    let mut pongs = 0;
    while let Ok(message) = tokio::time::timeout_at(deadline, client.recv()).await {
        match message {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(payload.as_ref(), b"fullduplex-keepalive");
                pongs += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pongs, 6);
    client.close(None).await.unwrap();
    assert_eq!(server_task.await.unwrap(), 6);
}

#[tokio::test(start_paused = true)]
async fn keepalive_fails_when_no_pong_arrives() {
    let client_config =
        Config::default().keepalive(Duration::from_secs(10), Duration::from_secs(5));
    // The server never reads, so it never answers.
    let (mut client, _server) =
        duplex_pair(64 << 10, client_config, Config::default().no_keepalive()).await;
    let start = tokio::time::Instant::now();
    match client.recv().await {
        Some(Err(Error::Timeout(TimeoutKind::Keepalive))) => {}
        other => panic!("expected a keepalive timeout, got {other:?}"),
    }
    // The first ping comes 9-10 s in (jittered), its pong deadline 5 s later.
    let elapsed = start.elapsed();
    assert!(
        (Duration::from_secs(14)..=Duration::from_secs(15)).contains(&elapsed),
        "{elapsed:?}"
    );
    assert!(client.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_fires_only_without_traffic() {
    let server_config = Config::default()
        .no_keepalive()
        .idle_timeout(Some(Duration::from_secs(30)));
    let (mut client, mut server) =
        duplex_pair(64 << 10, Config::default().no_keepalive(), server_config).await;
    let start = tokio::time::Instant::now();
    let client_task = tokio::spawn(async move {
        // Traffic every 20 s keeps the connection alive, then silence.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            client.send(Message::text("tick")).await.unwrap();
        }
        // Wait for the server's close frame (1001) and the end.
        let mut saw_close = None;
        while let Some(Ok(message)) = client.recv().await {
            if let Message::Close(frame) = message {
                saw_close = frame.map(|f| f.code.0);
            }
        }
        saw_close
    });
    for _ in 0..3 {
        assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("tick"));
    }
    match server.recv().await {
        Some(Err(Error::Timeout(TimeoutKind::Idle))) => {}
        other => panic!("expected an idle timeout, got {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::from_secs(90));
    drop(server);
    assert_eq!(client_task.await.unwrap(), Some(1001));
}

#[tokio::test(start_paused = true)]
async fn close_is_bounded_by_the_close_timeout() {
    let client_config = Config::default()
        .no_keepalive()
        .close_timeout(Duration::from_secs(3));
    // The server never reads: our close frame is never answered.
    let (mut client, _server) =
        duplex_pair(64 << 10, client_config, Config::default().no_keepalive()).await;
    let start = tokio::time::Instant::now();
    match client.close(None).await {
        Err(Error::Timeout(TimeoutKind::Close)) => {}
        other => panic!("expected a close timeout, got {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn client_waits_for_server_tcp_close_at_most_the_close_timeout() {
    // A raw "server" that answers the close frame but never closes TCP.
    let (client_io, mut server_io) = tokio::io::duplex(64 << 10);
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let n = server_io.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        let key = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key"))
            })
            .map(|(_, v)| v.trim().to_owned())
            .unwrap();
        let accept = fullduplex::proto::handshake::accept_key(key.as_bytes());
        use tokio::io::AsyncWriteExt;
        server_io
            .write_all(format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // Read the client's close frame and answer with an empty close, then hang.
        let _ = server_io.read(&mut buf).await.unwrap();
        server_io.write_all(&[0x88, 0x00]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(server_io);
    });
    let config = Config::default()
        .no_keepalive()
        .close_timeout(Duration::from_secs(2));
    let request = ClientRequest::new("ws://localhost/").build().unwrap();
    let (mut client, _) = fullduplex::client_handshake(client_io, request, config)
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    client.close(None).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn handshake_timeout_bounds_a_silent_client() {
    let (_client_io, server_io) = tokio::io::duplex(1024);
    let config = Config::default()
        .no_keepalive()
        .handshake_timeout(Duration::from_secs(7));
    let start = tokio::time::Instant::now();
    let result =
        fullduplex::accept_with(server_io, config, |_| Ok(fullduplex::Accept::new())).await;
    assert!(matches!(
        result,
        Err(Error::Timeout(TimeoutKind::Handshake))
    ));
    assert_eq!(start.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn handshake_timeout_bounds_a_silent_server() {
    let (client_io, _server_io) = tokio::io::duplex(1024);
    let request = ClientRequest::new("ws://localhost/").build().unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        fullduplex::client_handshake(client_io, request, Config::default().no_keepalive()),
    )
    .await;
    assert!(
        result.is_err(),
        "client_handshake itself has no timer; connect_with wraps it"
    );
}

/// The default keepalive (on, 20 s + 20 s) closes a connection whose peer went silent: the
/// server pings at 18-20 s (jittered) and, with no pong 20 s later, fails the connection with 1011, though
/// the application only waits in `recv` and never sends.
#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_closed_by_the_default_keepalive() {
    assert_eq!(
        Config::default().keepalive,
        Some(fullduplex::Keepalive::DEFAULT)
    );
    // The client is never polled until the end: it answers nothing.
    let (mut client, mut server) = duplex_pair(
        64 << 10,
        Config::default().no_keepalive(),
        Config::default(),
    )
    .await;
    let start = tokio::time::Instant::now();
    match server.recv().await {
        Some(Err(Error::Timeout(TimeoutKind::Keepalive))) => {}
        other => panic!("expected a keepalive timeout, got {other:?}"),
    }
    let elapsed = start.elapsed();
    assert!(
        (Duration::from_secs(38)..=Duration::from_secs(40)).contains(&elapsed),
        "{elapsed:?}"
    );
    assert!(server.recv().await.is_none());
    // What the silent peer would have seen: the ping, then the close with 1011.
    assert!(matches!(client.recv().await, Some(Ok(Message::Ping(_)))));
    match client.recv().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code.0, 1011),
        other => panic!("expected a 1011 close, got {other:?}"),
    }
}

/// A peer that sends and never reads: the server's echo blocks on a full write buffer, and
/// the default keepalive still fails the connection (it runs while the server waits to
/// write), for an echo loop of `recv` and `send` and for one of `recv_many`.
#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_is_closed_by_the_default_keepalive() {
    for lending in [false, true] {
        let (client, mut server) = duplex_pair(
            16 << 10,
            Config::default().no_keepalive(),
            Config::default().write_buffer_limit(64 << 10),
        )
        .await;
        let (_reader, mut writer) = client.split();
        // The client writes echo requests as fast as the server takes them, never reading.
        let flood = tokio::spawn(async move {
            let payload = vec![b'x'; 16 << 10];
            while writer.send(Message::binary(payload.clone())).await.is_ok() {}
        });
        let start = tokio::time::Instant::now();
        // Bounded (on the paused clock): without keepalive running while the server waits
        // to write, nothing would end this.
        let echo = async {
            if lending {
                loop {
                    let echoed = server
                        .recv_many(|message, out| {
                            if message.is_data() {
                                out.send_ref(message)?;
                            }
                            Ok::<_, Error>(())
                        })
                        .await;
                    match echoed {
                        Some(Ok(_)) => {}
                        other => break other.map(|r| r.map(|_| ())),
                    }
                }
            } else {
                loop {
                    match server.recv().await {
                        Some(Ok(message)) if message.is_text() || message.is_binary() => {
                            if let Err(error) = server.send(message).await {
                                break Some(Err(error));
                            }
                        }
                        Some(Ok(_)) => {}
                        other => break other.map(|r| r.map(|_| ())),
                    }
                }
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(120), echo)
            .await
            .expect("the connection ended within 120 s");
        assert!(
            matches!(ended, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))),
            "lending {lending}: {ended:?}"
        );
        // Pinged at 18-20 s (the ping waits behind the echoes), failed 20 s later.
        let elapsed = start.elapsed();
        assert!(
            (Duration::from_secs(38)..=Duration::from_secs(40)).contains(&elapsed),
            "lending {lending}: {elapsed:?}"
        );
        flood.abort();
    }
}

/// A peer that answers pings keeps a connection on the default keepalive open however long
/// it stays otherwise silent.
#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_pings_stays_connected_on_the_defaults() {
    let (mut client, mut server) = duplex_pair(
        64 << 10,
        Config::default().no_keepalive(),
        Config::default(),
    )
    .await;
    // The client reads (and so answers pings) for 10 minutes of paused time (and a bit).
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(message)) = client.recv().await {
            if let Message::Ping(_) = message {
                pings += 1;
            }
        }
        pings
    });
    // Pings at 20, 40, ..., 600 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(610);
    let mut pongs = 0;
    while let Ok(event) = tokio::time::timeout_at(deadline, server.recv()).await {
        match event {
            Some(Ok(Message::Pong(_))) => pongs += 1,
            other => panic!("expected only pongs for 10 minutes, got {other:?}"),
        }
    }
    server.close(None).await.unwrap();
    assert_eq!((pongs, reader.await.unwrap()), (30, 30));
}

/// Keepalive and idle timeouts are decided by the core (`Connection::on_timeout`): the
/// connection fails with 1011 "Keepalive timeout" or 1001 "Idle timeout", and the transport is
/// aborted at once (`TransportAction::Abort`): the silent peer reads the close frame and then
/// the end of the stream while the failed `WebSocket` is still alive, not only once the
/// application drops it.
#[tokio::test(start_paused = true)]
async fn a_timeout_sends_the_cores_close_and_ends_the_stream_at_once() {
    let keepalive = Config::default().keepalive(Duration::from_secs(10), Duration::from_secs(5));
    let idle = Config::default()
        .no_keepalive()
        .idle_timeout(Some(Duration::from_secs(30)));
    for (server_config, kind, code, reason) in [
        (
            keepalive,
            TimeoutKind::Keepalive,
            1011u16,
            &b"Keepalive timeout"[..],
        ),
        (idle, TimeoutKind::Idle, 1001, &b"Idle timeout"[..]),
    ] {
        let (mut client, mut server) =
            duplex_pair(64 << 10, Config::default().no_keepalive(), server_config).await;
        match server.recv().await {
            Some(Err(Error::Timeout(timeout))) => assert_eq!(timeout, kind),
            other => panic!("expected a {kind:?} timeout, got {other:?}"),
        }
        assert_eq!(server.state(), fullduplex::proto::State::Closed);
        // The silent peer's raw view: what was sent (a ping for keepalive), the close, then
        // the end of the stream, with the failed server still held.
        let mut wire = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(1),
            client.get_mut().read_to_end(&mut wire),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: no end of stream after the abort"))
        .unwrap();
        let close_at = wire.iter().position(|&b| b == 0x88).expect("a close frame");
        let len = usize::from(wire[close_at + 1]);
        let payload = &wire[close_at + 2..close_at + 2 + len];
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
        assert_eq!(&payload[2..], reason);
        assert_eq!(
            close_at + 2 + len,
            wire.len(),
            "nothing after the close frame"
        );
        drop(server);
    }
}
