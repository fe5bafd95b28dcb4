//! Unit tests of the relay's pieces: the frame tap, the upstream request, the injected close.

use bytes::Bytes;
use fullduplex::proto::deflate::DeflateParams;
use fullduplex::proto::frame::OpCode;
use fullduplex::proto::{Config as ProtoConfig, Connection, Event};
use fullduplex::{CloseCode, CloseFrame, DataKind, Message, Role};
use http::{Request, Uri};
use proptest::prelude::*;

use super::tap::{Direction, FrameRecord, FrameTap};
use super::{close_frame, upstream_request};

/// Bytes a client `Connection` (with `deflate`, if any) writes for `build`.
fn client_bytes(deflate: Option<DeflateParams>, build: impl FnOnce(&mut Connection)) -> Bytes {
    let mut client = Connection::new(Role::Client, ProtoConfig::default());
    if let Some(params) = deflate {
        client.enable_deflate(params);
    }
    build(&mut client);
    client.take_output()
}

/// Bytes a server `Connection` writes for `build`.
fn server_bytes(deflate: Option<DeflateParams>, build: impl FnOnce(&mut Connection)) -> Bytes {
    let mut server = Connection::new(Role::Server, ProtoConfig::default());
    if let Some(params) = deflate {
        server.enable_deflate(params);
    }
    build(&mut server);
    server.take_output()
}

fn observe_all(tap: &mut FrameTap, bytes: &[u8]) -> Vec<FrameRecord> {
    let mut records = Vec::new();
    tap.observe(bytes, &mut records);
    records
}

fn json_text(i: usize) -> String {
    format!(
        r#"{{"type":"message","topic":"prices","offset":{i},"data":{{"symbol":"ACME","bid":101.25,"ask":101.5,"note":"the same words again and again"}}}}"#
    )
}

#[test]
fn logs_a_masked_text_frame_unmasked() {
    let bytes = client_bytes(None, |c| c.send(Message::text("Hello")).unwrap());
    let mut tap = FrameTap::new(Direction::ClientToServer, 4096, None);
    let records = observe_all(&mut tap, &bytes);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.header.opcode, OpCode::Text);
    assert!(record.header.fin);
    assert!(record.header.mask.is_some());
    assert!(!record.compressed);
    assert_eq!(record.payload, b"Hello");
    assert_eq!(record.payload_len, 5);
    assert!(tap.at_frame_boundary());
}

#[test]
fn inflates_compressed_messages_with_context_takeover() {
    let params = DeflateParams::default();
    let texts: Vec<String> = (0..5).map(json_text).collect();
    let bytes = client_bytes(Some(params), |c| {
        for text in &texts {
            c.send(Message::text(text.clone())).unwrap();
        }
    });
    // Compressed for real: far smaller than the texts.
    let plain: usize = texts.iter().map(String::len).sum();
    assert!(bytes.len() < plain / 2, "{} vs {plain}", bytes.len());
    let mut tap = FrameTap::new(Direction::ClientToServer, 4096, Some(&params));
    let records = observe_all(&mut tap, &bytes);
    assert_eq!(records.len(), texts.len());
    for (record, text) in records.iter().zip(&texts) {
        assert!(record.header.rsv1);
        assert!(record.compressed);
        assert_eq!(record.inflate_error, None);
        assert_eq!(String::from_utf8_lossy(&record.payload), *text);
        assert_eq!(record.payload_len, text.len() as u64);
        assert!(record.header.payload_len < text.len() as u64);
    }
}

#[test]
fn inflates_server_frames_without_context_takeover() {
    let params = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 10,
        client_max_window_bits: 12,
    };
    let texts: Vec<String> = (0..4).map(json_text).collect();
    let bytes = server_bytes(Some(params), |s| {
        for text in &texts {
            s.send(Message::text(text.clone())).unwrap();
        }
    });
    let mut tap = FrameTap::new(Direction::ServerToClient, 4096, Some(&params));
    let records = observe_all(&mut tap, &bytes);
    let got: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    assert_eq!(got, texts);
    assert!(records.iter().all(|r| r.header.mask.is_none()));
}

#[test]
fn fragmented_compressed_message_is_logged_per_frame() {
    let params = DeflateParams::default();
    let parts = [json_text(1), json_text(2), json_text(3)];
    let bytes = client_bytes(Some(params), |c| {
        for (i, part) in parts.iter().enumerate() {
            c.send_fragment(DataKind::Text, Bytes::from(part.clone()), i == 2)
                .unwrap();
        }
        // A control frame between messages, and one more message after.
        c.send(Message::Ping(Bytes::from_static(b"p"))).unwrap();
        c.send(Message::binary(vec![7u8; 300])).unwrap();
    });
    let mut tap = FrameTap::new(Direction::ClientToServer, 1 << 20, Some(&params));
    let records = observe_all(&mut tap, &bytes);
    assert_eq!(records.len(), 5);
    let opcodes: Vec<OpCode> = records.iter().map(|r| r.header.opcode).collect();
    assert_eq!(
        opcodes,
        [
            OpCode::Text,
            OpCode::Continuation,
            OpCode::Continuation,
            OpCode::Ping,
            OpCode::Binary
        ]
    );
    let message: Vec<u8> = records[..3]
        .iter()
        .flat_map(|r| r.payload.clone())
        .collect();
    assert_eq!(String::from_utf8_lossy(&message), parts.concat());
    assert!(records[..3]
        .iter()
        .all(|r| r.compressed && r.message_kind == OpCode::Text));
    assert!(records[0].header.rsv1 && !records[1].header.rsv1);
    assert_eq!(records[3].payload, b"p");
    assert!(!records[3].compressed);
    assert_eq!(records[4].payload, vec![7u8; 300]);
    assert!(records[4].compressed);
}

#[test]
fn long_payloads_are_cut_but_counted() {
    let text = "x".repeat(10_000);
    let bytes = client_bytes(None, |c| c.send(Message::text(text.clone())).unwrap());
    let mut tap = FrameTap::new(Direction::ClientToServer, 100, None);
    let records = observe_all(&mut tap, &bytes);
    assert_eq!(records[0].payload, "x".repeat(100).as_bytes());
    assert_eq!(records[0].payload_len, 10_000);
    assert!(records[0].truncated());

    let params = DeflateParams::default();
    let bytes = client_bytes(Some(params), |c| {
        c.send(Message::text(text.clone())).unwrap()
    });
    let mut tap = FrameTap::new(Direction::ClientToServer, 100, Some(&params));
    let records = observe_all(&mut tap, &bytes);
    assert_eq!(records[0].payload, "x".repeat(100).as_bytes());
    assert_eq!(records[0].payload_len, 10_000);
    assert!(records[0].header.payload_len < 200);
}

#[test]
fn close_frames_give_code_and_reason() {
    let bytes = server_bytes(None, |s| {
        s.close(Some(CloseFrame::new(CloseCode::from(4000), "bye")))
            .unwrap()
    });
    let mut tap = FrameTap::new(Direction::ServerToClient, 1, None);
    assert!(!tap.close_seen());
    let records = observe_all(&mut tap, &bytes);
    assert_eq!(records[0].close, Some((4000, "bye".to_owned())));
    assert!(tap.close_seen());
}

#[test]
fn frame_boundaries_are_tracked_and_garbage_stops_parsing() {
    let bytes = client_bytes(None, |c| c.send(Message::binary(vec![1u8; 200])).unwrap());
    let mut tap = FrameTap::new(Direction::ClientToServer, 16, None);
    assert!(tap.at_frame_boundary());
    assert!(observe_all(&mut tap, &bytes[..1]).is_empty());
    assert!(!tap.at_frame_boundary(), "inside a header");
    assert!(observe_all(&mut tap, &bytes[1..20]).is_empty());
    assert!(!tap.at_frame_boundary(), "inside a payload");
    assert_eq!(observe_all(&mut tap, &bytes[20..]).len(), 1);
    assert!(tap.at_frame_boundary());

    // Opcode 3 is reserved: the tap gives up (the bytes are still forwarded by the caller).
    assert!(observe_all(&mut tap, &[0x83, 0x00, 0x81, 0x00]).is_empty());
    assert!(tap.lost_reason().is_some());
    assert!(observe_all(&mut tap, &bytes).is_empty());
}

#[test]
fn garbage_in_a_compressed_message_is_reported_not_fatal() {
    let params = DeflateParams::default();
    // A text frame with RSV1 whose payload is not DEFLATE data (0xff: reserved block type).
    let frame = [0xc1, 0x03, 0xff, 0xff, 0xff];
    let mut tap = FrameTap::new(Direction::ServerToClient, 64, Some(&params));
    let records = observe_all(&mut tap, &frame);
    assert_eq!(records.len(), 1);
    assert!(records[0].inflate_error.is_some());
    assert!(tap.at_frame_boundary());
}

/// Found by the `inspect_tap` fuzz target: a close frame announcing more than 125 bytes (which
/// is invalid) was kept whole, however long, for its code and reason. Now at most 125 bytes of
/// a close frame are kept (or the logging limit, if higher), and the rest is counted.
#[test]
fn an_oversized_close_frame_is_cut_like_any_payload() {
    let mut frame = vec![0x88, 126, 0x27, 0x10]; // close, 10,000 bytes
    frame.extend_from_slice(&1000u16.to_be_bytes());
    frame.extend(std::iter::repeat_n(b'x', 9_998));
    let mut tap = FrameTap::new(Direction::ServerToClient, 16, None);
    let records = observe_all(&mut tap, &frame);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload.len(), 125);
    assert_eq!(records[0].payload_len, 10_000);
    assert_eq!(records[0].close.as_ref().map(|c| c.0), Some(1000));
}

#[test]
fn upstream_request_rewrites_host_and_joins_paths() {
    let request = Request::builder()
        .uri("/chat?room=1")
        .header("host", "127.0.0.1:9002")
        .header("origin", "http://localhost:9002")
        .header("cookie", "session=abc")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    let upstream: Uri = "ws://example.com:8080".parse().unwrap();
    let forwarded = upstream_request(&upstream, &request).unwrap();
    assert_eq!(forwarded.uri(), "ws://example.com:8080/chat?room=1");
    assert_eq!(forwarded.headers()["host"], "example.com:8080");
    assert_eq!(forwarded.headers()["origin"], "http://localhost:9002");
    assert_eq!(forwarded.headers()["cookie"], "session=abc");
    assert_eq!(
        forwarded.headers()["sec-websocket-key"],
        "dGhlIHNhbXBsZSBub25jZQ=="
    );

    let upstream: Uri = "wss://example.com/base/?token=t".parse().unwrap();
    let forwarded = upstream_request(&upstream, &request).unwrap();
    assert_eq!(
        forwarded.uri(),
        "wss://example.com/base/chat?token=t&room=1"
    );
    assert_eq!(forwarded.headers()["host"], "example.com");
}

#[test]
fn injected_close_frames_parse_on_both_sides() {
    // To the upstream: masked, as a client's frames must be.
    let frame = close_frame(CloseCode::GOING_AWAY, "gone", true);
    let mut server = Connection::new(Role::Server, ProtoConfig::default());
    server.recv_buf().extend_from_slice(&frame);
    match server.next_event().unwrap() {
        Some(Event::Message(Message::Close(Some(close)))) => {
            assert_eq!(close.code, CloseCode::GOING_AWAY);
            assert_eq!(close.reason.as_str(), "gone");
        }
        other => panic!("unexpected {other:?}"),
    }
    // To the client: unmasked.
    let frame = close_frame(CloseCode::BAD_GATEWAY, "lost", false);
    let mut client = Connection::new(Role::Client, ProtoConfig::default());
    client.recv_buf().extend_from_slice(&frame);
    match client.next_event().unwrap() {
        Some(Event::Message(Message::Close(Some(close)))) => {
            assert_eq!(close.code, CloseCode::BAD_GATEWAY)
        }
        other => panic!("unexpected {other:?}"),
    }
}

proptest! {
    /// However the stream is cut into reads, the tap logs the same frames.
    #[test]
    fn any_split_gives_the_same_records(
        cuts in proptest::collection::vec(0usize..4000, 0..12),
        compressed in any::<bool>(),
        no_takeover in any::<bool>(),
    ) {
        let params = DeflateParams {
            client_no_context_takeover: no_takeover,
            ..DeflateParams::default()
        };
        let deflate = compressed.then_some(params);
        let bytes = client_bytes(deflate, |c| {
            for i in 0..6 {
                c.send(Message::text(json_text(i))).unwrap();
            }
            c.send_fragment(DataKind::Binary, Bytes::from(vec![3u8; 500]), false).unwrap();
            c.send(Message::Ping(Bytes::from_static(b"ping"))).unwrap();
            c.send_fragment(DataKind::Binary, Bytes::from(vec![4u8; 700]), true).unwrap();
            c.close(Some(CloseFrame::new(CloseCode::NORMAL, "done"))).unwrap();
        });
        let mut whole = FrameTap::new(Direction::ClientToServer, 256, deflate.as_ref());
        let expected = observe_all(&mut whole, &bytes);
        prop_assert_eq!(expected.len(), 10);

        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut tap = FrameTap::new(Direction::ClientToServer, 256, deflate.as_ref());
        let mut records = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            tap.observe(&bytes[start..cut], &mut records);
            start = cut;
        }
        prop_assert_eq!(records, expected);
        prop_assert!(tap.close_seen());
    }
}
