//! Compressed fan-out: a message is compressed once (permessage-deflate, RFC 7692) and the
//! same bytes go to every subscriber that negotiated compression; the others get the plain
//! frame.
//!
//! That works because the hub answers every compression offer with
//! `server_no_context_takeover` (a server may add it, RFC 7692 section 7.1.1.1): each message
//! is then compressed on its own, so its bytes do not depend on the connection. The shared
//! compressor uses a 512-byte window (9 bits), the smallest any peer may ask for
//! (`server_max_window_bits=9`), so one compressed frame suits every compressing subscriber
//! whatever window it negotiated. JSON messages gain little from a larger window: see the
//! test below. The hub also answers `client_no_context_takeover`, so that a connection keeps
//! no inflate state between the messages its client sends.

use bytes::Bytes;
use fullduplex::proto::connection::deflate_server_frame;
use fullduplex::proto::deflate::{Compressor, DeflateConfig, DeflateParams};
use fullduplex::proto::Role;

use crate::queue::DeliveryQueue;

/// The window of the shared compressor, in bits: the smallest a peer may negotiate.
pub const SHARED_WINDOW_BITS: u8 = 9;

/// The default size under which messages go out plain: compressing a short message saves a
/// few bytes at best.
pub const DEFAULT_THRESHOLD: usize = 128;

/// How the hub compresses what it fans out.
#[derive(Debug, Clone)]
pub struct SharedDeflate {
    params: DeflateParams,
    config: DeflateConfig,
}

impl SharedDeflate {
    /// Compression of messages of at least `threshold` bytes at zlib `level` (0-9).
    pub fn new(threshold: usize, level: u32) -> SharedDeflate {
        SharedDeflate {
            params: DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: SHARED_WINDOW_BITS,
                ..DeflateParams::default()
            },
            config: DeflateConfig::default()
                .with_compression_level(level)
                .with_threshold(threshold),
        }
    }

    /// What the hub's connections negotiate: both sides without context takeover.
    pub fn negotiation(&self) -> DeflateConfig {
        DeflateConfig::default()
            .with_server_no_context_takeover(true)
            .with_client_no_context_takeover(true)
    }

    /// `frame` (a plain message frame) compressed, or `None` when it is under the threshold
    /// or would not shrink.
    pub fn compress(&self, frame: &[u8]) -> Option<Bytes> {
        let mut compressor = Compressor::new(&self.params, Role::Server, &self.config);
        deflate_server_frame(frame, &mut compressor)
    }
}

/// One message on its way to many subscribers: the plain frame, and its compressed form,
/// made when the first subscriber that wants it is reached.
#[derive(Debug)]
pub struct FanOutFrame<'a> {
    plain: &'a Bytes,
    deflate: Option<&'a SharedDeflate>,
    deflated: Option<Option<Bytes>>,
}

impl<'a> FanOutFrame<'a> {
    /// The frames of `plain`, compressed with `deflate` when it is on.
    pub fn new(plain: &'a Bytes, deflate: Option<&'a SharedDeflate>) -> FanOutFrame<'a> {
        FanOutFrame {
            plain,
            deflate,
            deflated: None,
        }
    }

    /// The frame for `queue`'s connection: compressed if it negotiated compression and the
    /// message is worth compressing, else the plain one.
    pub fn for_queue(&mut self, queue: &DeliveryQueue) -> &Bytes {
        match self.deflate {
            Some(deflate) if queue.wants_deflate() => {
                let plain = self.plain;
                self.deflated
                    .get_or_insert_with(|| deflate.compress(plain))
                    .as_ref()
                    .unwrap_or(plain)
            }
            _ => self.plain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Topic;
    use fullduplex::proto::{Config, Connection, Event, Message};

    fn message_frame(data: &str) -> Bytes {
        let topic = Topic::new("news").expect("topic");
        crate::wire::message_frame(&topic, 7, data)
    }

    /// A JSON message of about `size` bytes, like a feed item.
    fn json(size: usize) -> String {
        let mut items = Vec::new();
        let mut i = 0;
        while items.iter().map(|s: &String| s.len() + 1).sum::<usize>() < size {
            items.push(format!(
                r#"{{"id":{i},"user":"user{}","price":{}.{:02},"side":"{}"}}"#,
                i % 7,
                100 + i * 13 % 50,
                i * 37 % 100,
                if i % 3 == 0 { "buy" } else { "sell" }
            ));
            i += 1;
        }
        format!("[{}]", items.join(","))
    }

    /// Decodes `frame` as a client that negotiated `params` would.
    fn receive(frame: &[u8], params: DeflateParams) -> Message {
        let mut client = Connection::new(Role::Client, Config::default());
        client.enable_deflate(params);
        client.recv_buf().extend_from_slice(frame);
        match client.next_event() {
            Ok(Some(Event::Message(message))) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_compressed_frame_suits_every_window_a_client_negotiates() {
        let deflate = SharedDeflate::new(DEFAULT_THRESHOLD, 6);
        let plain = message_frame(&json(1024));
        let compressed = deflate.compress(&plain).expect("compressed");
        assert!(
            compressed.len() * 2 < plain.len(),
            "{} of {}",
            compressed.len(),
            plain.len()
        );
        let expected = receive(&plain, DeflateParams::default());
        for bits in 9..=15 {
            let params = DeflateParams {
                server_no_context_takeover: true,
                server_max_window_bits: bits,
                ..DeflateParams::default()
            };
            assert_eq!(receive(&compressed, params), expected, "window {bits}");
        }
    }

    #[test]
    fn small_messages_stay_plain() {
        let deflate = SharedDeflate::new(DEFAULT_THRESHOLD, 6);
        assert_eq!(deflate.compress(&message_frame(r#"{"x":1}"#)), None);
        // Not a data frame: left alone.
        let ping = fullduplex::proto::connection::encode_server_message(&Message::Ping(
            Bytes::from(vec![b'a'; 100]),
        ));
        assert_eq!(deflate.compress(&ping), None);
    }

    #[test]
    fn a_small_window_costs_json_little() {
        // The window the hub uses against the largest: on 1 KiB and 16 KiB of JSON.
        for size in [1024, 16 << 10] {
            let plain = message_frame(&json(size));
            let shared = SharedDeflate::new(0, 6)
                .compress(&plain)
                .expect("compressed");
            let mut wide = SharedDeflate::new(0, 6);
            wide.params.server_max_window_bits = 15;
            let wide = wide.compress(&plain).expect("compressed");
            // Within 20% of the widest window's output.
            assert!(
                shared.len() * 10 <= wide.len() * 12,
                "{size}: 9 bits {} bytes, 15 bits {} bytes",
                shared.len(),
                wide.len()
            );
        }
    }

    #[test]
    fn subscribers_get_the_frame_they_negotiated() {
        let deflate = SharedDeflate::new(DEFAULT_THRESHOLD, 6);
        let plain = message_frame(&json(512));
        let compressing = DeliveryQueue::new(1 << 20).with_deflate(true);
        let plain_only = DeliveryQueue::new(1 << 20);
        let mut frame = FanOutFrame::new(&plain, Some(&deflate));
        assert_eq!(frame.for_queue(&plain_only), &plain);
        let compressed = frame.for_queue(&compressing).clone();
        assert!(compressed.len() < plain.len());
        // Made once: the same bytes (the same allocation) for the next subscriber.
        assert_eq!(frame.for_queue(&compressing).as_ptr(), compressed.as_ptr());
        let mut off = FanOutFrame::new(&plain, None);
        assert_eq!(off.for_queue(&compressing), &plain);
    }
}
