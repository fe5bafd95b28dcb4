//! Helpers shared by the integration tests: connected pairs over loopback TCP or in memory.
#![allow(dead_code)]

use fullduplex::{Accept, ClientRequest, Config, MaybeTlsStream, WebSocket};
use tokio::io::DuplexStream;
use tokio::net::{TcpListener, TcpStream};

/// A client and a server connected over loopback TCP.
pub async fn tcp_pair(
    client_config: Config,
    server_config: Config,
) -> (WebSocket<MaybeTlsStream<TcpStream>>, WebSocket<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        fullduplex::accept_with(tcp, server_config, |_| Ok(Accept::new()))
            .await
            .unwrap()
    });
    let (client, _) = fullduplex::connect_with(format!("ws://{addr}/"), client_config)
        .await
        .unwrap();
    (client, server.await.unwrap())
}

/// A client and a server connected through an in-memory pipe with `capacity` bytes of buffer
/// each way (works with tokio's paused clock).
pub async fn duplex_pair(
    capacity: usize,
    client_config: Config,
    server_config: Config,
) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (client_io, server_io) = tokio::io::duplex(capacity);
    let server = tokio::spawn(async move {
        fullduplex::accept_with(server_io, server_config, |_| Ok(Accept::new()))
            .await
            .unwrap()
    });
    let request = ClientRequest::new("ws://localhost/").build().unwrap();
    let (client, _) = fullduplex::client_handshake(client_io, request, client_config)
        .await
        .unwrap();
    (client, server.await.unwrap())
}

/// A masked client frame built by hand (RFC 6455 section 5.2), for raw peers.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![(fin as u8) << 7 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// A valid upgrade request head.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}
