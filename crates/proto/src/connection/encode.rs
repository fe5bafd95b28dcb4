//! Frames encoded once for many connections (a server's fan-out).

use bytes::{BufMut, Bytes, BytesMut};

#[cfg(doc)]
use super::Connection;
use crate::deflate::Compressor;
use crate::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::message::Message;

/// Encodes one unmasked (server-to-client) frame holding a whole message, for
/// [`Connection::send_encoded`]: encode once, queue the same `Bytes` on many connections.
///
/// ```
/// use fullduplex_proto::connection::encode_server_message;
/// use fullduplex_proto::{Config, Connection, Event, Message, Role};
/// let frame = encode_server_message(&Message::text("news"));
/// let mut server = Connection::new(Role::Server, Config::default());
/// let mut client = Connection::new(Role::Client, Config::default());
/// server.send_encoded(frame).unwrap();
/// client.recv_buf().extend_from_slice(&server.take_output());
/// assert_eq!(client.next_event().unwrap(), Some(Event::Message(Message::text("news"))));
/// ```
pub fn encode_server_message(message: &Message) -> Bytes {
    let (opcode, payload) = match message {
        Message::Text(text) => (OpCode::Text, text.as_bytes().clone()),
        Message::Binary(data) => (OpCode::Binary, data.clone()),
        Message::Ping(data) => (OpCode::Ping, data.clone()),
        Message::Pong(data) => (OpCode::Pong, data.clone()),
        Message::Close(_) => (OpCode::Close, message.clone().into_payload()),
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = FrameHeader::new(opcode, payload.len() as u64).encode(&mut head);
    let mut out = BytesMut::with_capacity(n + payload.len());
    out.put_slice(&head[..n]);
    out.put_slice(&payload);
    out.freeze()
}

/// `frame` (one final, unmasked, uncompressed text or binary frame, as
/// [`encode_server_message`] makes it) with its payload compressed as a permessage-deflate
/// message by `compressor`: RSV1 set, the same opcode. `None` when `frame` is not such a
/// frame, when its payload is under the compressor's threshold, or when compressing does not
/// make it smaller.
///
/// With a compressor that starts every message afresh (no context takeover) the bytes suit
/// every connection that negotiated `server_no_context_takeover` and a server window of at
/// least the compressor's: a server compresses a broadcast once for all such subscribers and
/// queues the result with [`Connection::send_encoded`].
///
/// ```
/// use fullduplex_proto::connection::{deflate_server_frame, encode_server_message};
/// use fullduplex_proto::deflate::{Compressor, DeflateConfig, DeflateParams};
/// use fullduplex_proto::{Config, Connection, Event, Message, Role};
///
/// let params = DeflateParams {
///     server_no_context_takeover: true,
///     ..DeflateParams::default()
/// };
/// let mut compressor = Compressor::new(&params, Role::Server, &DeflateConfig::default());
/// let text = r#"{"type":"message","topic":"news","data":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
/// let plain = encode_server_message(&Message::text(text));
/// let deflated = deflate_server_frame(&plain, &mut compressor).unwrap();
/// assert!(deflated.len() < plain.len());
///
/// let mut client = Connection::new(Role::Client, Config::default());
/// client.enable_deflate(params);
/// client.recv_buf().extend_from_slice(&deflated);
/// assert_eq!(client.next_event().unwrap(), Some(Event::Message(Message::text(text))));
/// ```
pub fn deflate_server_frame(frame: &[u8], compressor: &mut Compressor) -> Option<Bytes> {
    let (header, head_len) = FrameHeader::parse(frame).ok()??;
    let data = matches!(header.opcode, OpCode::Text | OpCode::Binary);
    let plain = header.fin && !header.rsv1 && !header.rsv2 && !header.rsv3;
    let payload = frame.get(head_len..)?;
    if !data || !plain || header.mask.is_some() || payload.len() as u64 != header.payload_len {
        return None;
    }
    if !compressor.should_compress(payload.len()) {
        return None;
    }
    let mut compressed = BytesMut::with_capacity(payload.len() / 2 + 16);
    compressor.compress(payload, &mut compressed).ok()?;
    let mut head = FrameHeader::new(header.opcode, compressed.len() as u64);
    head.rsv1 = true;
    let mut bytes = [0u8; MAX_HEADER_LEN];
    let n = head.encode(&mut bytes);
    if n + compressed.len() >= frame.len() {
        return None;
    }
    let mut out = BytesMut::with_capacity(n + compressed.len());
    out.put_slice(&bytes[..n]);
    out.put_slice(&compressed);
    Some(out.freeze())
}
