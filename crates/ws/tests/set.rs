//! `WebSocketSet`: many connections driven by one task. Echo over real sockets (messages taken
//! owned, lent one at a time and lent in batches), keys that outlive their connection, a close
//! started by the server, backpressure that pauses only the slow connection, timers that
//! still run on a paused one, and busy connections served in turn.

mod common;

use std::time::Duration;

use common::client_frame;
use fullduplex::set::Key;
use fullduplex::{Accept, CloseCode, CloseFrame, Config, Message, WebSocket, WebSocketSet};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A server connection over an in-memory pipe, and the client's end of it.
async fn duplex_server(
    capacity: usize,
    server_config: Config,
) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    common::duplex_pair(capacity, Config::default(), server_config).await
}

/// The server side of a raw peer: the handshake is answered, then the test speaks frames.
async fn raw_peer(
    capacity: usize,
    server_config: Config,
) -> (DuplexStream, WebSocket<DuplexStream>) {
    use tokio::io::AsyncReadExt;
    let (mut peer, transport) = tokio::io::duplex(capacity);
    let server = tokio::spawn(async move {
        fullduplex::accept_with(transport, server_config, |_| Ok(Accept::new()))
            .await
            .unwrap()
    });
    peer.write_all(common::upgrade_request("/", "").as_bytes())
        .await
        .unwrap();
    let server = server.await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        peer.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    (peer, server)
}

#[tokio::test]
async fn one_task_echoes_many_connections() {
    echo_many_connections(Receive::Owned).await;
}

#[tokio::test]
async fn one_task_echoes_many_connections_borrowing_each_message() {
    echo_many_connections(Receive::Borrowed).await;
}

#[tokio::test]
async fn one_task_echoes_many_connections_a_batch_at_a_time() {
    echo_many_connections(Receive::Batches).await;
}

/// How the set's echo takes its messages.
#[derive(Debug, Clone, Copy)]
enum Receive {
    /// `recv`, and `feed` for the echo.
    Owned,
    /// `recv_with`, one message per call, echoed through the handler's outbox.
    Borrowed,
    /// `recv_many`, every message one connection has, echoed through the outbox.
    Batches,
}

/// Echoes what one connection in `set` has next: returns its key and how many data messages
/// were echoed, or `None` when that connection has left the set.
async fn echo_next(
    set: &mut WebSocketSet<tokio::net::TcpStream>,
    receive: Receive,
) -> (Key, Option<usize>) {
    match receive {
        Receive::Owned => {
            let (key, message) = set.recv().await;
            let echoed = message.map(|message| match message {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                    set.feed(key, message).unwrap();
                    1
                }
                Ok(Message::Close(_)) => 0,
                other => panic!("{other:?}"),
            });
            (key, echoed)
        }
        Receive::Borrowed => {
            let (key, echoed) = set
                .recv_with(|key, message, out| {
                    if message.is_data() {
                        out.send_ref(message).unwrap();
                    }
                    (key, usize::from(message.is_data()))
                })
                .await;
            let echoed = echoed.map(|handled| {
                let (handled, echoed) = handled.unwrap();
                assert_eq!(handled, key);
                echoed
            });
            (key, echoed)
        }
        Receive::Batches => {
            let mut echoed = 0;
            let mut keys = Vec::new();
            let (key, handled) = set
                .recv_many(|key, message, out| {
                    keys.push(key);
                    if message.is_data() {
                        out.send_ref(message)?;
                        echoed += 1;
                    }
                    Ok::<_, fullduplex::Error>(())
                })
                .await;
            // One connection's messages per call, each counted.
            assert!(keys.iter().all(|&handled| handled == key));
            let handled = handled.map(|handled| {
                assert_eq!(handled.unwrap(), keys.len());
                echoed
            });
            (key, handled)
        }
    }
}

/// 200 clients with 10 messages in flight each, echoed by one set.
async fn echo_many_connections(receive: Receive) {
    const CLIENTS: usize = 200;
    const MESSAGES: usize = 10;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut set = WebSocketSet::new();
        let mut handshakes = JoinSet::new();
        let (mut echoed, mut ended, mut most) = (0usize, 0usize, 0usize);
        while ended < CLIENTS {
            tokio::select! {
                accepted = listener.accept() => {
                    handshakes.spawn(fullduplex::accept(accepted.unwrap().0));
                }
                Some(done) = handshakes.join_next() => {
                    set.insert(done.unwrap().unwrap());
                    most = most.max(set.len());
                }
                (key, echo) = echo_next(&mut set, receive) => match echo {
                    Some(count) => echoed += count,
                    None => {
                        assert!(!set.contains(key));
                        ended += 1;
                    }
                },
            }
        }
        (echoed, set.len(), most)
    });
    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        clients.spawn(async move {
            let (mut ws, _) = fullduplex::connect(format!("ws://{addr}/")).await.unwrap();
            // All messages first, then the echoes: several are in flight on every connection.
            for m in 0..MESSAGES {
                let message = if m % 2 == 0 {
                    Message::text(format!("client {c} message {m}"))
                } else {
                    Message::binary(vec![c as u8; m * 100])
                };
                ws.feed(message).await.unwrap();
            }
            ws.flush().await.unwrap();
            for m in 0..MESSAGES {
                match ws.recv().await.unwrap().unwrap() {
                    Message::Text(text) => {
                        assert_eq!(text.as_str(), format!("client {c} message {m}"))
                    }
                    Message::Binary(data) => assert_eq!(data, vec![c as u8; m * 100]),
                    other => panic!("{other:?}"),
                }
            }
            ws.close(None).await.unwrap();
        });
    }
    let run = async {
        while let Some(client) = clients.join_next().await {
            client.unwrap();
        }
        server.await.unwrap()
    };
    let (echoed, left, most) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the set stalled");
    assert_eq!(echoed, CLIENTS * MESSAGES);
    assert_eq!(left, 0, "ended connections stay in the set");
    assert!(most > 1, "the connections never overlapped");
}

/// `recv_many` on a set: one connection's messages in one call and under its key, a handler
/// error that stops the batch (the rest comes with the next call), and a protocol error after
/// good messages, returned by the call after them (with a 1007 close); then the connection
/// leaves the set.
#[tokio::test]
async fn a_batch_is_one_connections_messages_and_errors_come_after_it() {
    use fullduplex::proto::ProtocolError;
    use fullduplex::{Error, MessageRef, Outbox};

    #[derive(Debug)]
    enum Stop {
        At(u8),
        Ws(Error),
    }
    impl From<Error> for Stop {
        fn from(error: Error) -> Stop {
            Stop::Ws(error)
        }
    }

    let mut set = WebSocketSet::new();
    let (_quiet_peer, server) = raw_peer(4096, Config::default()).await;
    let quiet = set.insert(server);
    let (mut peer, server) = raw_peer(4096, Config::default()).await;
    let busy = set.insert(server);
    let mut read: Vec<u8> = (1..=4u8)
        .flat_map(|i| client_frame(true, 2, &[i; 3]))
        .collect();
    read.extend(client_frame(true, 1, &[0xce, 0xba, 0xff]));
    read.extend(client_frame(true, 1, b"never seen"));
    peer.write_all(&read).await.unwrap();

    let mut seen = Vec::new();
    let mut handler = |key: Key, message: MessageRef<'_>, out: &mut Outbox<'_>| {
        let first = message.payload()[0];
        seen.push((key, first));
        out.send_ref(message).map_err(Error::from)?;
        if first == 2 {
            return Err(Stop::At(first));
        }
        Ok(())
    };
    macro_rules! next {
        () => {
            tokio::time::timeout(
                Duration::from_secs(5),
                std::future::poll_fn(|cx| set.poll_recv_many(cx, &mut handler)),
            )
            .await
        };
    }
    assert!(matches!(next!(), Ok((key, Some(Err(Stop::At(2))))) if key == busy));
    assert!(matches!(next!(), Ok((key, Some(Ok(2)))) if key == busy));
    match next!() {
        Ok((key, Some(Err(Stop::Ws(Error::Protocol(ProtocolError::InvalidUtf8)))))) => {
            assert_eq!(key, busy)
        }
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
    assert!(matches!(next!(), Ok((key, None)) if key == busy));
    assert_eq!(seen, [(busy, 1), (busy, 2), (busy, 3), (busy, 4)]);
    assert!(!set.contains(busy) && set.contains(quiet));

    // The four echoes, then a close frame with 1007 (invalid payload data).
    let mut echoed = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut echoed)
        .await
        .unwrap();
    let expected: Vec<u8> = (1..=4u8).flat_map(|i| [0x82, 3, i, i, i]).collect();
    let (echoes, close) = echoed.split_at(expected.len().min(echoed.len()));
    assert_eq!(echoes, expected);
    assert_eq!(close[0], 0x88);
    assert_eq!(close[2..4], [0x03, 0xef], "close code 1007");
}

/// Every busy connection gets its turn: 300 clients ping-pong without pause, so that more
/// connections are ready at once than tokio's cooperative budget lets one poll serve. Each
/// must be served about as often as the others (a set that served the freshly woken before
/// those the budget turned away would starve some of them: the ones turned away kept being
/// turned away). Counted in deliveries, not timed.
#[tokio::test]
async fn busy_connections_are_served_in_turn() {
    const CLIENTS: usize = 300;
    const ROUNDS: usize = 20;
    let mut set = WebSocketSet::new();
    let mut clients = JoinSet::new();
    let mut keys = Vec::new();
    for c in 0..CLIENTS {
        let (mut client, server) = duplex_server(4096, Config::default()).await;
        keys.push(set.insert(server));
        clients.spawn(async move {
            let message = Message::text(format!("client {c}"));
            loop {
                if client.send(message.clone()).await.is_err() {
                    return;
                }
                match client.recv().await {
                    Some(Ok(echo)) => assert_eq!(echo, message),
                    _ => return,
                }
            }
        });
    }
    let mut served = vec![0usize; CLIENTS];
    let serve = async {
        for _ in 0..CLIENTS * ROUNDS {
            let (key, echoed) = set
                .recv_many(|_, message, out| {
                    out.send_ref(message)?;
                    Ok::<_, fullduplex::Error>(())
                })
                .await;
            echoed.unwrap().unwrap();
            served[key.index()] += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), serve)
        .await
        .expect("the set stalled");
    clients.abort_all();
    let least = served.iter().min().copied().unwrap_or(0);
    let most = served.iter().max().copied().unwrap_or(0);
    eprintln!("turns per connection: {least} to {most}");
    // Round robin gives every connection ROUNDS turns, give or take the rounds in progress.
    assert!(
        least >= ROUNDS / 2 && most <= ROUNDS * 2,
        "turns per connection from {least} to {most} (expected about {ROUNDS} each)"
    );
}

#[tokio::test]
async fn a_key_never_names_a_later_connection() {
    let mut set = WebSocketSet::new();
    let (_client1, server1) = duplex_server(1024, Config::default()).await;
    let (_client2, server2) = duplex_server(1024, Config::default()).await;
    let first = set.insert(server1);
    assert!(set.contains(first));
    assert!(set.remove(first).is_some());
    assert!(set.remove(first).is_none());
    assert!(!set.contains(first));
    assert!(set.is_empty());
    let second = set.insert(server2);
    assert_eq!(second.index(), first.index(), "the slot is reused");
    assert_ne!(second, first);
    assert!(set.get(first).is_none());
    assert!(matches!(
        set.feed(first, Message::text("lost")),
        Err(fullduplex::Error::Usage(fullduplex::UsageError::UnknownKey))
    ));
    assert_eq!(set.keys().collect::<Vec<Key>>(), vec![second]);
    assert_eq!(set.len(), 1);
}

#[tokio::test]
async fn the_server_closes_one_connection() {
    let mut set = WebSocketSet::new();
    let (mut client, server) = duplex_server(1024, Config::default()).await;
    let (mut other_client, other) = duplex_server(1024, Config::default()).await;
    let key = set.insert(server);
    let other_key = set.insert(other);
    set.close(key, Some(CloseFrame::new(CloseCode::from(4000), "bye")))
        .unwrap();
    assert!(
        set.feed(key, Message::text("after close")).is_err(),
        "a message was accepted after our close frame"
    );
    let client = tokio::spawn(async move {
        match client.recv().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4000);
                assert_eq!(frame.reason, "bye");
            }
            other => panic!("{other:?}"),
        }
        assert!(client.recv().await.is_none());
    });
    let (k, message) = set.recv().await;
    assert_eq!(k, key);
    assert!(matches!(message, Some(Ok(Message::Close(Some(_))))));
    let (k, message) = tokio::time::timeout(Duration::from_secs(10), set.recv())
        .await
        .expect("the close handshake did not end");
    assert_eq!(k, key);
    assert!(message.is_none());
    client.await.unwrap();
    // The other connection is untouched.
    assert_eq!(set.keys().collect::<Vec<_>>(), vec![other_key]);
    other_client
        .send(Message::text("still here"))
        .await
        .unwrap();
    let (k, message) = set.recv().await;
    assert_eq!(k, other_key);
    assert_eq!(message.unwrap().unwrap(), Message::text("still here"));
}

/// A peer that sends and never reads fills its write buffer; from then on its connection
/// delivers nothing (its echoes could not leave), while another connection is served as usual.
#[tokio::test]
async fn a_peer_that_does_not_read_pauses_only_itself() {
    const LIMIT: usize = 64 << 10;
    const FRAME: usize = 16 << 10;
    let config = Config::default().write_buffer_limit(LIMIT);
    let mut set = WebSocketSet::new();
    let (mut flooder, server) = raw_peer(FRAME, config.clone()).await;
    let slow = set.insert(server);
    let (mut client, server) = duplex_server(4096, config).await;
    set.insert(server);
    let flood = tokio::spawn(async move {
        let frame = client_frame(true, 2, &[7u8; FRAME]);
        for _ in 0..1000 {
            if flooder.write_all(&frame).await.is_err() {
                break;
            }
        }
        flooder
    });
    let talk = tokio::spawn(async move {
        for i in 0..100 {
            client.send(Message::text(i.to_string())).await.unwrap();
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text(i.to_string())
            );
        }
        client
    });
    let (mut from_slow, mut most) = (0usize, 0usize);
    let serve = async {
        while !talk.is_finished() {
            tokio::select! {
                (key, message) = set.recv() => {
                    let message = message.unwrap().unwrap();
                    if key == slow {
                        from_slow += 1;
                    }
                    set.feed(key, message).unwrap();
                    most = most.max(set.buffered_amount(slow));
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .expect("the reading connection was starved");
    let _client = talk.await.unwrap();
    assert!(
        most <= LIMIT + FRAME + 16,
        "{most} bytes queued for a peer that reads nothing"
    );
    // What the flooder could send: the pipe, plus what the set read before pausing.
    assert!(
        from_slow <= (LIMIT + 2 * FRAME) / FRAME + 2,
        "{from_slow} messages delivered from a paused connection"
    );
    assert!(!flood.is_finished(), "the flooder was never held back");
    flood.abort();
}

/// A connection paused by backpressure still runs its timers: a peer that takes nothing and
/// sends nothing more is dropped after the idle timeout.
#[tokio::test(start_paused = true)]
async fn a_paused_connection_still_times_out() {
    const LIMIT: usize = 4 << 10;
    let config = Config::default()
        .write_buffer_limit(LIMIT)
        .idle_timeout(Some(Duration::from_secs(5)));
    let mut set = WebSocketSet::new();
    let (mut peer, server) = raw_peer(1024, config).await;
    let key = set.insert(server);
    // Two messages whose echoes the peer never reads: the first one's echo alone is over
    // the limit, even once the pipe has taken what it can.
    let frame = client_frame(true, 2, &[1u8; 4 * LIMIT]);
    let send = tokio::spawn(async move {
        peer.write_all(&frame).await.unwrap();
        peer.write_all(&frame).await.ok();
        peer
    });
    let run = async {
        loop {
            match set.recv().await {
                (k, Some(Ok(message))) => {
                    assert_eq!(k, key);
                    set.feed(k, message).unwrap();
                }
                (k, Some(Err(error))) => {
                    assert_eq!(k, key);
                    assert!(
                        matches!(
                            error,
                            fullduplex::Error::Timeout(fullduplex::TimeoutKind::Idle)
                        ),
                        "{error:?}"
                    );
                }
                (k, None) => {
                    assert_eq!(k, key);
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("a paused connection never timed out");
    assert!(set.is_empty());
    send.abort();
}

#[tokio::test(start_paused = true)]
async fn an_empty_set_waits() {
    let mut set = WebSocketSet::<DuplexStream>::new();
    assert!(tokio::time::timeout(Duration::from_secs(1), set.recv())
        .await
        .is_err());
}

/// A broadcast: one frame encoded once, fed to every connection of the set.
#[tokio::test]
async fn a_frame_encoded_once_reaches_every_connection() {
    use fullduplex::proto::connection::encode_server_message;
    let mut set = WebSocketSet::new();
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (client, server) = duplex_server(1024, Config::default()).await;
        set.insert(server);
        clients.push(client);
    }
    let frame = encode_server_message(&Message::text("to everyone"));
    let keys: Vec<Key> = set.keys().collect();
    assert_eq!(keys.len(), 50);
    for key in keys {
        set.feed_encoded(key, frame.clone()).unwrap();
    }
    // Nothing is written until the set is polled: drive it while the clients read.
    let readers = tokio::spawn(async move {
        for client in &mut clients {
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text("to everyone")
            );
        }
        clients
    });
    let serve = async {
        let (_, message) = set.recv().await;
        panic!("unexpected {message:?}");
    };
    tokio::select! {
        clients = readers => assert_eq!(clients.unwrap().len(), 50),
        () = serve => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => panic!("the broadcast did not arrive"),
    }
}

/// The same echo with the set's connections woken from other threads (a multi-threaded
/// runtime: the I/O driver runs wherever a worker is free).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakers_from_other_threads() {
    const CLIENTS: usize = 50;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut set = WebSocketSet::new();
        let mut handshakes = JoinSet::new();
        let mut ended = 0;
        while ended < CLIENTS {
            tokio::select! {
                Ok((tcp, _)) = listener.accept() => {
                    handshakes.spawn(fullduplex::accept(tcp));
                }
                Some(done) = handshakes.join_next() => {
                    set.insert(done.unwrap().unwrap());
                }
                (key, message) = set.recv() => match message {
                    Some(Ok(message @ Message::Binary(_))) => set.feed(key, message).unwrap(),
                    Some(_) => {}
                    None => ended += 1,
                },
            }
        }
    });
    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        clients.spawn(async move {
            let (mut ws, _) = fullduplex::connect(format!("ws://{addr}/")).await.unwrap();
            for m in 0..20u8 {
                ws.send(Message::binary(vec![c as u8, m])).await.unwrap();
                assert_eq!(
                    ws.recv().await.unwrap().unwrap(),
                    Message::binary(vec![c as u8, m])
                );
            }
            ws.close(None).await.unwrap();
        });
    }
    let run = async {
        while let Some(client) = clients.join_next().await {
            client.unwrap();
        }
        server.await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the set stalled");
}

/// A small deterministic generator for the operation sequences below.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

type Event = (Key, Option<Result<Message, fullduplex::Error>>);

/// Runs `work` while polling the set, and returns what the set delivered meanwhile.
async fn while_driving<T>(
    set: &mut WebSocketSet<DuplexStream>,
    work: impl std::future::Future<Output = T>,
) -> (T, Vec<Event>) {
    tokio::pin!(work);
    let mut events = Vec::new();
    let drive = async {
        loop {
            tokio::select! {
                out = &mut work => return out,
                event = set.recv() => events.push(event),
            }
        }
    };
    let out = tokio::time::timeout(Duration::from_secs(10), drive)
        .await
        .expect("stalled");
    (out, events)
}

/// Random sequences of inserts, removals, messages both ways and closes from both sides,
/// checked against a model of which keys are live: every message reaches the right
/// connection in order, every end is reported once, and stale keys address nothing.
#[tokio::test]
async fn random_operations_keep_the_set_consistent() {
    for seed in 1..=20u64 {
        let mut rng = Xorshift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut set = WebSocketSet::new();
        let mut live: Vec<(Key, WebSocket<DuplexStream>)> = Vec::new();
        let mut gone: Vec<Key> = Vec::new();
        for step in 0..60 {
            let op = if live.is_empty() { 0 } else { rng.below(8) };
            match op {
                0 => {
                    let (client, server) = duplex_server(4096, Config::default()).await;
                    let key = set.insert(server);
                    assert!(
                        !gone.contains(&key),
                        "seed {seed} step {step}: a key came back"
                    );
                    live.push((key, client));
                }
                1 => {
                    let (key, _client) = live.swap_remove(rng.below(live.len()));
                    assert!(set.remove(key).is_some());
                    gone.push(key);
                }
                2 => {
                    let pick = rng.below(live.len());
                    let (key, client) = &mut live[pick];
                    let message = Message::text(format!("to {step}"));
                    set.feed(*key, message.clone()).unwrap();
                    let (received, events) = while_driving(&mut set, client.recv()).await;
                    assert_eq!(received.unwrap().unwrap(), message);
                    assert!(events.is_empty(), "seed {seed} step {step}: {events:?}");
                }
                3 => {
                    let pick = rng.below(live.len());
                    let (key, client) = &mut live[pick];
                    let message = Message::binary(vec![step as u8; step]);
                    client.send(message.clone()).await.unwrap();
                    let (from, received) =
                        tokio::time::timeout(Duration::from_secs(10), set.recv())
                            .await
                            .expect("stalled");
                    assert_eq!(from, *key, "seed {seed} step {step}");
                    assert_eq!(received.unwrap().unwrap(), message);
                }
                4 => {
                    // The client closes.
                    let (key, mut client) = live.swap_remove(rng.below(live.len()));
                    let (closed, mut events) = while_driving(&mut set, client.close(None)).await;
                    closed.unwrap();
                    if !events.iter().any(|(_, e)| e.is_none()) {
                        events.push(set.recv().await);
                    }
                    assert!(matches!(events[0], (k, Some(Ok(Message::Close(_)))) if k == key));
                    assert!(matches!(events[1], (k, None) if k == key), "{events:?}");
                    assert_eq!(events.len(), 2);
                    gone.push(key);
                }
                5 => {
                    // The server closes.
                    let (key, mut client) = live.swap_remove(rng.below(live.len()));
                    set.close(key, None).unwrap();
                    let work = async {
                        match client.recv().await {
                            Some(Ok(Message::Close(_))) => {}
                            other => panic!("{other:?}"),
                        }
                        assert!(client.recv().await.is_none());
                    };
                    let ((), mut events) = while_driving(&mut set, work).await;
                    while !events.iter().any(|(_, e)| e.is_none()) {
                        events.push(set.recv().await);
                    }
                    assert!(events.iter().all(|(k, _)| *k == key), "{events:?}");
                    gone.push(key);
                }
                6 => {
                    // A few messages at once, echoed by the set's `recv_many` (in one batch
                    // or in several), then received back in order.
                    let pick = rng.below(live.len());
                    let count = 1 + rng.below(4);
                    let (key, client) = &mut live[pick];
                    let messages: Vec<Message> = (0..count)
                        .map(|i| Message::text(format!("{step}.{i}")))
                        .collect();
                    for message in &messages {
                        client.feed(message.clone()).await.unwrap();
                    }
                    client.flush().await.unwrap();
                    let mut handled = 0;
                    while handled < count {
                        let echo = set.recv_many(|_, message, out| {
                            out.send_ref(message)?;
                            Ok::<_, fullduplex::Error>(())
                        });
                        let (from, batch) = tokio::time::timeout(Duration::from_secs(10), echo)
                            .await
                            .expect("stalled");
                        assert_eq!(from, *key, "seed {seed} step {step}");
                        handled += batch.unwrap().unwrap();
                    }
                    assert_eq!(handled, count, "seed {seed} step {step}");
                    for message in messages {
                        let (received, events) = while_driving(&mut set, client.recv()).await;
                        assert_eq!(received.unwrap().unwrap(), message);
                        assert!(events.is_empty(), "seed {seed} step {step}: {events:?}");
                    }
                }
                _ => {
                    // Stale keys address nothing.
                    if let Some(&key) = gone.last() {
                        assert!(!set.contains(key));
                        assert!(set.get(key).is_none());
                        assert!(set.feed(key, Message::text("x")).is_err());
                        assert!(set.remove(key).is_none());
                    }
                }
            }
            assert_eq!(set.len(), live.len(), "seed {seed} step {step}");
            let mut keys: Vec<Key> = set.keys().collect();
            let mut expected: Vec<Key> = live.iter().map(|(k, _)| *k).collect();
            keys.sort();
            expected.sort();
            assert_eq!(keys, expected, "seed {seed} step {step}");
        }
    }
}

/// `feed_uncompressed` on a compressed connection of a set: the message arrives as sent.
#[tokio::test]
async fn a_message_fed_uncompressed_arrives() {
    let config = Config::default().compression(true);
    let (mut client, server) = common::duplex_pair(1 << 16, config.clone(), config).await;
    assert!(server.is_compressed());
    let mut set = WebSocketSet::new();
    let key = set.insert(server);
    set.feed_uncompressed(key, Message::binary(vec![9u8; 2048]))
        .unwrap();
    // The reader keeps the client open until the end of the test: were it dropped on
    // return, the set could see the end of the stream before `select!` takes the message.
    let reader = tokio::spawn(async move {
        let message = client.recv().await.unwrap().unwrap();
        (message, client)
    });
    let serve = async {
        let (_, message) = set.recv().await;
        panic!("unexpected {message:?}");
    };
    tokio::select! {
        received = reader => assert_eq!(received.unwrap().0, Message::binary(vec![9u8; 2048])),
        () = serve => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => panic!("the message did not arrive"),
    }
}
