//! permessage-deflate over sockets: negotiated by default, switchable on either side, parameters
//! honoured, and a deflate bomb from a hostile client fails with 1009.

mod common;

use common::{tcp_pair, upgrade_request};
use fullduplex::proto::deflate::{Compressor, DeflateConfig, DeflateParams};
use fullduplex::{Accept, Config, Message, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Room for the 3 MB message of [`echo_round_trips`] (the default limit is 1 MiB).
fn big() -> Config {
    Config::default().max_message_size(4 << 20)
}

async fn echo_round_trips(
    client: &mut fullduplex::WebSocket<fullduplex::MaybeTlsStream<TcpStream>>,
    server: fullduplex::WebSocket<TcpStream>,
    count: usize,
) {
    let mut server = server;
    let echo = tokio::spawn(async move {
        while let Some(Ok(message)) = server.recv().await {
            if message.is_text() || message.is_binary() {
                server.feed(message).await.unwrap();
            }
        }
    });
    for i in 0..count {
        let text = format!(
            "{{\"seq\":{i},\"user\":\"carol\",\"text\":\"{}\"}}",
            "la ".repeat(i % 50)
        );
        client.send(Message::text(text.as_str())).await.unwrap();
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::text(text.as_str())
        );
    }
    let big = Message::binary(
        (0..3_000_000u32)
            .map(|i| (i / 1000) as u8)
            .collect::<Vec<_>>(),
    );
    client.send(big.clone()).await.unwrap();
    assert_eq!(client.recv().await.unwrap().unwrap(), big);
    client.close(None).await.unwrap();
    echo.await.unwrap();
}

#[tokio::test]
async fn negotiated_by_default_and_messages_round_trip() {
    let (mut client, server) = tcp_pair(big(), big()).await;
    assert!(client.is_compressed());
    assert!(server.is_compressed());
    echo_round_trips(&mut client, server, 1000).await;
}

#[tokio::test]
async fn either_side_can_switch_it_off() {
    for (client_on, server_on) in [(false, true), (true, false)] {
        let (mut client, server) =
            tcp_pair(big().compression(client_on), big().compression(server_on)).await;
        assert!(!client.is_compressed());
        assert!(!server.is_compressed());
        echo_round_trips(&mut client, server, 10).await;
    }
}

#[tokio::test]
async fn no_context_takeover_and_window_bits_are_honoured() {
    let offer = DeflateConfig::default()
        .with_server_no_context_takeover(true)
        .with_client_no_context_takeover(true)
        .with_server_max_window_bits(10)
        .with_client_max_window_bits(11);
    let (mut client, server) = tcp_pair(big().deflate(offer), big()).await;
    assert!(client.is_compressed());
    echo_round_trips(&mut client, server, 200).await;
}

#[tokio::test]
async fn the_server_application_can_decline_compression() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        fullduplex::accept_with(tcp, Config::default(), |_| {
            Ok(Accept::new().compression(false))
        })
        .await
        .unwrap()
    });
    let (client, response) = fullduplex::connect(format!("ws://{addr}/")).await.unwrap();
    assert!(!client.is_compressed());
    assert!(response.headers().get("sec-websocket-extensions").is_none());
    assert!(!server.await.unwrap().is_compressed());
}

/// A few kilobytes that inflate to 16 MiB, against the default message limit (1 MiB): the
/// server fails the connection with 1009 instead of inflating it.
#[tokio::test]
async fn deflate_bomb_is_refused_with_1009() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut compressor = Compressor::new(
        &DeflateParams::default(),
        Role::Client,
        &DeflateConfig::default(),
    );
    let mut bomb = bytes::BytesMut::new();
    compressor
        .compress(&vec![b'A'; 16 << 20], &mut bomb)
        .unwrap();
    assert!(bomb.len() < 200_000);
    let peer = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = upgrade_request("/", "Sec-WebSocket-Extensions: permessage-deflate\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 4096];
        let n = tcp.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
        assert!(
            head.contains("sec-websocket-extensions: permessage-deflate"),
            "{head}"
        );
        // One masked binary frame, RSV1 set.
        let key = [9u8, 8, 7, 6];
        let mut frame = vec![0xc2, 0x80 | 127];
        frame.extend_from_slice(&(bomb.len() as u64).to_be_bytes());
        frame.extend_from_slice(&key);
        frame.extend(bomb.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        tcp.write_all(&frame).await.unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
        rest
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = fullduplex::accept(tcp).await.unwrap();
    assert!(ws.is_compressed());
    match ws.recv().await {
        Some(Err(fullduplex::Error::Protocol(error))) => {
            assert_eq!(error.close_code(), fullduplex::CloseCode::MESSAGE_TOO_BIG)
        }
        other => panic!("expected a 1009 failure, got {other:?}"),
    }
    let wire = peer.await.unwrap();
    assert_eq!(wire[0], 0x88);
    assert_eq!(u16::from_be_bytes([wire[2], wire[3]]), 1009);
}

/// The same bomb over an in-memory pipe that already holds all of it: the server inflates it
/// in slices of `INFLATE_SLICE` and yields to the runtime after each (its `recv` returns
/// `Pending` with nothing left to wait for), then fails with 1009 once the default 1 MiB is
/// crossed: 4 yields, never 16 MiB of work in one poll.
#[tokio::test]
async fn a_deflate_bomb_is_inflated_in_slices_that_yield_then_fails_with_1009() {
    use fullduplex::proto::connection::INFLATE_SLICE;
    use std::future::Future;
    use std::task::Poll;

    let (mut client, mut server) =
        common::duplex_pair(1 << 20, Config::default(), Config::default()).await;
    assert!(server.is_compressed());
    let mut bomb = bytes::BytesMut::new();
    Compressor::new(
        &DeflateParams::default(),
        Role::Client,
        &DeflateConfig::default(),
    )
    .compress(&vec![0u8; 16 << 20], &mut bomb)
    .unwrap();
    // One masked binary frame with RSV1, written raw under the client.
    let key = [9u8, 8, 7, 6];
    let mut frame = vec![0xc2, 0x80 | 127];
    frame.extend_from_slice(&(bomb.len() as u64).to_be_bytes());
    frame.extend_from_slice(&key);
    frame.extend(bomb.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    client.get_mut().write_all(&frame).await.unwrap();

    let mut recv = Box::pin(server.recv());
    let mut yields = 0;
    let outcome = std::future::poll_fn(|cx| match recv.as_mut().poll(cx) {
        Poll::Pending => {
            yields += 1;
            Poll::Pending
        }
        ready => ready,
    })
    .await;
    match outcome {
        Some(Err(fullduplex::Error::Protocol(error))) => {
            assert_eq!(error.close_code(), fullduplex::CloseCode::MESSAGE_TOO_BIG)
        }
        other => panic!("expected a 1009 failure, got {other:?}"),
    }
    assert_eq!(yields, (1 << 20) / INFLATE_SLICE);
}
