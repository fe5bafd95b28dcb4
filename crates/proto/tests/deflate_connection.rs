//! permessage-deflate inside the connection (RFC 7692 sections 6 and 7.2): RSV1 rules, per-message
//! compression, limits on the inflated size, UTF-8 of inflated text.

use bytes::{Bytes, BytesMut};
use fullduplex_proto::connection::INFLATE_SLICE;
use fullduplex_proto::deflate::{Compressor, DeflateConfig, DeflateParams};
use fullduplex_proto::{
    CloseCode, Config, Connection, DataKind, Event, Message, ProtocolError, ReceiveMode, Role,
};

fn pair(params: DeflateParams, config: Config) -> (Connection, Connection) {
    let mut client = Connection::new(Role::Client, config.clone());
    let mut server = Connection::new(Role::Server, config);
    client.enable_deflate(params);
    server.enable_deflate(params);
    (client, server)
}

/// Moves everything `from` queued into `to` and collects `to`'s events.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<Vec<Event>, ProtocolError> {
    let bytes = from.take_output();
    to.recv_buf().extend_from_slice(&bytes);
    let mut events = Vec::new();
    loop {
        match to.next_event()? {
            Some(event) => events.push(event),
            // Inflating paused after a slice: go on, as a shell does after yielding.
            None if to.has_pending_work() => {}
            None => return Ok(events),
        }
    }
}

/// Splits a byte stream into (first byte, payload) per unmasked frame (server output).
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let b0 = bytes[0];
        let (len, start) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        frames.push((b0, bytes[start..start + len].to_vec()));
        bytes = &bytes[start + len..];
    }
    frames
}

fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut frame = vec![b0];
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

fn compress(params: &DeflateParams, role: Role, data: &[u8]) -> Vec<u8> {
    let mut compressor = Compressor::new(params, role, &DeflateConfig::default());
    let mut out = BytesMut::new();
    compressor.compress(data, &mut out).unwrap();
    out.to_vec()
}

// RFC 7692 section 6: "the sender sets the "Per-Message Compressed" bit [RSV1] ... of the first
// frame of the message".
#[test]
fn large_messages_go_out_compressed_with_rsv1_and_come_back_whole() {
    let (mut client, mut server) = pair(DeflateParams::default(), Config::default());
    let text = "{\"seq\":1,\"user\":\"alice\",\"text\":\"hello hello hello hello\"}".repeat(20);
    server.send(Message::text(text.as_str())).unwrap();
    let wire = server.take_output();
    let frames = server_frames(&wire);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, 0xc1, "FIN + RSV1 + text");
    assert!(
        frames[0].1.len() < text.len() / 4,
        "compressed: {} bytes",
        frames[0].1.len()
    );
    client.recv_buf().extend_from_slice(&wire);
    assert_eq!(
        client.next_event().unwrap(),
        Some(Event::Message(Message::text(text.as_str())))
    );
}

#[test]
fn small_messages_and_control_frames_are_not_compressed() {
    let (_, mut server) = pair(DeflateParams::default(), Config::default());
    server.send(Message::text("tiny")).unwrap();
    server
        .send(Message::Ping(Bytes::from_static(b"ping ping ping ping")))
        .unwrap();
    server
        .send_uncompressed(Message::binary(vec![0u8; 10_000]))
        .unwrap();
    let wire = server.take_output();
    let first_bytes: Vec<u8> = server_frames(&wire).iter().map(|f| f.0).collect();
    assert_eq!(first_bytes, vec![0x81, 0x89, 0x82]);
}

#[test]
fn a_thousand_messages_with_and_without_context_takeover() {
    for no_takeover in [false, true] {
        let params = DeflateParams {
            server_no_context_takeover: no_takeover,
            client_no_context_takeover: no_takeover,
            ..DeflateParams::default()
        };
        let (mut client, mut server) = pair(params, Config::default());
        let mut wire_bytes = 0;
        for i in 0..1000 {
            let text = format!(
                "{{\"seq\":{i},\"user\":\"bob\",\"text\":\"message number {i} of a thousand\"}}"
            );
            client.send(Message::text(text.as_str())).unwrap();
            wire_bytes += client.output_len();
            let events = transfer(&mut client, &mut server).unwrap();
            assert_eq!(events, vec![Event::Message(Message::text(text.as_str()))]);
            server
                .send(Message::binary(text.clone().into_bytes()))
                .unwrap();
            let events = transfer(&mut server, &mut client).unwrap();
            assert_eq!(
                events,
                vec![Event::Message(Message::binary(text.into_bytes()))]
            );
        }
        eprintln!(
            "no_context_takeover={no_takeover}: {wire_bytes} bytes on the wire for 1000 messages"
        );
        if !no_takeover {
            // With context takeover, repeated structure compresses to a few bytes each.
            assert!(wire_bytes < 1000 * 40, "{wire_bytes}");
        }
    }
}

#[test]
fn fragmented_compressed_send_and_fragment_mode_receive() {
    let (mut client, mut server) = pair(DeflateParams::default(), Config::default());
    server.set_receive_mode(ReceiveMode::Fragments);
    let parts = ["first part, ", "second part, ", "third and last part"];
    for (i, part) in parts.iter().enumerate() {
        client
            .send_fragment(DataKind::Text, Bytes::from_static(part.as_bytes()), i == 2)
            .unwrap();
    }
    let events = transfer(&mut client, &mut server).unwrap();
    let mut joined = Vec::new();
    for (i, event) in events.iter().enumerate() {
        match event {
            Event::Fragment(fragment) => {
                assert_eq!(fragment.is_first, i == 0);
                assert_eq!(fragment.is_last, i == events.len() - 1);
                joined.extend_from_slice(&fragment.payload);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(joined, parts.concat().as_bytes());
}

/// Streaming mode inflates each piece as it arrives: a compressed message read a few bytes at
/// a time is delivered in many pieces, which join back to the message, before its last frame
/// has even arrived; the inflated size still counts against the message limit.
#[test]
fn streaming_mode_inflates_compressed_messages_as_they_arrive() {
    let text: String = (0..4000)
        .map(|i| format!("{{\"seq\":{i},\"v\":\"é{}\"}}", i % 7))
        .collect();
    for takeover in [true, false] {
        let params = DeflateParams {
            client_no_context_takeover: !takeover,
            ..DeflateParams::default()
        };
        let config = Config::default().receive_mode(ReceiveMode::Streaming);
        let (mut client, mut server) = pair(params, config);
        for _ in 0..2 {
            client.send(Message::text(text.clone())).unwrap();
            let wire = client.take_output();
            assert!(wire.len() < text.len() / 4, "compressed: {}", wire.len());
            let mut pieces = Vec::new();
            for chunk in wire.chunks(97) {
                server.recv_buf().extend_from_slice(chunk);
                while let Some(event) = server.next_event().unwrap() {
                    match event {
                        Event::Fragment(piece) => pieces.push(piece),
                        other => panic!("{other:?}"),
                    }
                }
            }
            assert!(pieces.len() > 10, "{} pieces", pieces.len());
            assert!(pieces[0].is_first && pieces.iter().skip(1).all(|p| !p.is_first));
            assert!(pieces.last().unwrap().is_last);
            let joined: Vec<u8> = pieces.iter().flat_map(|p| p.payload.to_vec()).collect();
            assert_eq!(joined, text.as_bytes());
        }
    }
    // The inflated size is bounded in this mode too (the compressed message is below the
    // limit, the text above it).
    let config = Config::default()
        .receive_mode(ReceiveMode::Streaming)
        .max_message_size(text.len() / 2);
    let (mut client, mut server) = pair(DeflateParams::default(), config);
    client.send(Message::text(text.clone())).unwrap();
    let wire = client.take_output();
    let mut result = Ok(());
    let mut delivered = 0;
    for chunk in wire.chunks(50) {
        server.recv_buf().extend_from_slice(chunk);
        loop {
            match server.next_event() {
                Ok(Some(Event::Fragment(piece))) => delivered += piece.payload.len(),
                Ok(Some(other)) => panic!("{other:?}"),
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_err() {
            break;
        }
    }
    assert!(
        matches!(result, Err(ProtocolError::Deflate(_))),
        "{result:?}"
    );
    assert!(delivered <= text.len() / 2, "{delivered}");
    let frames = server_frames(&server.take_output());
    assert_eq!(u16::from_be_bytes([frames[0].1[0], frames[0].1[1]]), 1009);
}

// RFC 7692 section 6.1: RSV1 on a continuation frame or a control frame is an error.
#[test]
fn rsv1_only_on_the_first_frame_of_a_data_message() {
    let params = DeflateParams::default();
    let compressed = compress(&params, Role::Client, b"Hello");
    for bytes in [
        [
            masked(0x41, &compressed[..3]),
            masked(0xc0, &compressed[3..]),
        ]
        .concat(), // RSV1 on continuation
        masked(0xc9, b"ping"), // RSV1 on ping
    ] {
        let (_, mut server) = pair(params, Config::default());
        server.recv_buf().extend_from_slice(&bytes);
        assert_eq!(server.next_event(), Err(ProtocolError::ReservedBits));
        let frames = server_frames(&server.take_output());
        assert_eq!(u16::from_be_bytes([frames[0].1[0], frames[0].1[1]]), 1002);
    }
    // Without negotiation RSV1 is reserved.
    let mut plain = Connection::new(Role::Server, Config::default());
    plain
        .recv_buf()
        .extend_from_slice(&masked(0xc1, &compressed));
    assert_eq!(plain.next_event(), Err(ProtocolError::ReservedBits));
}

/// Feeds `bytes` and calls `next_event` until it fails, counting the calls that paused after an
/// inflate slice. Panics on anything else.
fn paused_slices_until_error(server: &mut Connection, bytes: &[u8]) -> (usize, ProtocolError) {
    server.recv_buf().extend_from_slice(bytes);
    let mut slices = 0;
    loop {
        match server.next_event() {
            Ok(None) if server.has_pending_work() => slices += 1,
            Err(error) => return (slices, error),
            other => panic!("expected inflate slices then an error, got {other:?}"),
        }
    }
}

/// RELIABILITY.md: a 16 MiB bomb of about 16 KB against the default limit. Inflating stops
/// once the limit (1 MiB) is crossed, after `limit / INFLATE_SLICE` calls that each inflated
/// at most `INFLATE_SLICE` bytes (256 KiB) and paused, and one call that finds no room left:
/// at most 1 MiB (plus one probe byte) of work, in slices, where the old 64 MiB default let
/// one call inflate 16 MiB.
#[test]
fn a_deflate_bomb_fails_with_1009_within_the_limit_in_bounded_slices() {
    let params = DeflateParams::default();
    let bomb = compress(&params, Role::Client, &vec![0u8; 16 << 20]); // 16 MiB of zeros
    assert!(bomb.len() < 100_000, "bomb is {} bytes", bomb.len());
    let config = Config::default();
    assert_eq!(
        config.max_message_size,
        1 << 20,
        "the default message limit"
    );
    let (_, mut server) = pair(params, config);
    let (slices, error) = paused_slices_until_error(&mut server, &masked(0xc2, &bomb));
    assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
    assert!(matches!(error, ProtocolError::Deflate(_)), "{error:?}");
    assert_eq!(slices, (1 << 20) / INFLATE_SLICE);
    assert!(!server.has_pending_work());
    let frames = server_frames(&server.take_output());
    assert_eq!(u16::from_be_bytes([frames[0].1[0], frames[0].1[1]]), 1009);

    // A smaller limit stops sooner: one call, no slice.
    let (_, mut server) = pair(params, Config::default().max_message_size(100_000));
    let (slices, error) = paused_slices_until_error(&mut server, &masked(0xc2, &bomb));
    assert_eq!(
        (slices, error.close_code()),
        (0, CloseCode::MESSAGE_TOO_BIG)
    );
}

/// A compressed message within the limit that inflates to more than one slice comes out
/// whole after as many paused calls as it has slices past the first, in every receive mode,
/// and a paused connection does not report the end of stream before its data.
#[test]
fn a_large_compressed_message_inflates_in_slices() {
    let params = DeflateParams::default();
    let text = "fullduplex ".repeat(90_000); // 990,000 bytes, inflates past 3 slices
    let wire = masked(0xc1, &compress(&params, Role::Client, text.as_bytes()));
    for mode in [
        ReceiveMode::Messages,
        ReceiveMode::Fragments,
        ReceiveMode::Streaming,
    ] {
        let (_, mut server) = pair(params, Config::default().receive_mode(mode));
        server.recv_buf().extend_from_slice(&wire);
        server.recv_eof();
        let (mut slices, mut got) = (0, Vec::new());
        let end = loop {
            match server.next_event() {
                Ok(None) if server.has_pending_work() => slices += 1,
                Ok(Some(Event::Message(Message::Text(t)))) => got.extend_from_slice(t.as_bytes()),
                Ok(Some(Event::Fragment(piece))) => got.extend_from_slice(&piece.payload),
                other => break other,
            }
        };
        assert_eq!(end, Err(ProtocolError::UnexpectedEof), "{mode:?}");
        assert_eq!(slices, text.len() / INFLATE_SLICE, "{mode:?}");
        assert_eq!(got, text.as_bytes(), "{mode:?}");
    }
}

#[test]
fn corrupt_compressed_data_fails_with_1007_and_invalid_inflated_utf8_too() {
    let params = DeflateParams::default();
    let (_, mut server) = pair(params, Config::default());
    server
        .recv_buf()
        .extend_from_slice(&masked(0xc1, &[0xff, 0xff, 0xff, 0xff]));
    assert_eq!(
        server.next_event().map_err(|e| e.close_code()),
        Err(CloseCode::INVALID_PAYLOAD)
    );

    let bad_text = compress(&params, Role::Client, &[b'o', b'k', 0xc3, 0x28]);
    let (_, mut server) = pair(params, Config::default());
    server
        .recv_buf()
        .extend_from_slice(&masked(0xc1, &bad_text));
    assert_eq!(server.next_event(), Err(ProtocolError::InvalidUtf8));
}
