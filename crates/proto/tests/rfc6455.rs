//! The data framing and closing of RFC 6455, byte by byte, grouped by the section each test
//! checks. Every module quotes the sentences it holds the core to.
//!
//! Frames sent to a connection are built by hand (`support::frame`), so a bug in the crate's
//! own encoder or mask cannot cancel itself out; what a connection queues is decoded by the
//! independent `support::parse_frames`.

mod support;

use fullduplex_proto::connection::LARGE_FRAME;
use fullduplex_proto::{
    CloseCode, CloseFrame, Config, Connection, Event, Message, ProtocolError, Role, SendError,
    State,
};
use support::*;

/// Feeds `bytes` to a fresh connection of `role` and expects it to fail without delivering any
/// event. Returns the error and the code of the single close frame it queued (the last frame).
fn failure(role: Role, bytes: &[u8]) -> (ProtocolError, u16) {
    let (events, error, code) = failure_after(role, Config::default(), bytes);
    assert_eq!(events, vec![], "events before the error");
    (error, code)
}

/// Like [`failure`] with a configuration, returning the events delivered before the error.
fn failure_after(role: Role, config: Config, bytes: &[u8]) -> (Vec<Event>, ProtocolError, u16) {
    let mut conn = Connection::new(role, config);
    let outcome = feed(&mut conn, bytes);
    let error = outcome.err();
    let code = assert_failed(&mut conn);
    assert_eq!(
        error.close_code().0,
        code,
        "{error:?} and the code on the wire disagree"
    );
    (outcome.events, error, code)
}

/// Asserts the state after _Fail the WebSocket Connection_: exactly one close frame was queued,
/// it is the last frame, the state is Closed and no event ever comes out again. Returns the code.
fn assert_failed(conn: &mut Connection) -> u16 {
    let frames = take_frames(conn);
    let closes = close_frames(&frames);
    assert_eq!(closes.len(), 1, "close frames queued: {frames:?}");
    let last = frames.last().unwrap();
    assert_eq!(
        last.opcode,
        op::CLOSE,
        "the close frame is not the last frame"
    );
    let code = last
        .close_code()
        .expect("a failure close frame carries a code");
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.is_close_sent());
    for _ in 0..3 {
        assert_eq!(conn.next_event(), Ok(None));
    }
    code
}

/// A payload whose bytes all differ from their neighbours, so that offsets show up.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// 5.2 Base Framing Protocol.
mod base_framing {
    use super::*;

    /// "Payload length: 7 bits, 7+16 bits, or 7+64 bits. The length of the "Payload data", in
    /// bytes: if 0-125, that is the payload length. If 126, the following 2 bytes interpreted as
    /// a 16-bit unsigned integer are the payload length. If 127, the following 8 bytes
    /// interpreted as a 64-bit unsigned integer (the most significant bit MUST be 0) are the
    /// payload length. Multibyte length quantities are expressed in network byte order."
    #[test]
    fn all_three_length_forms_are_received() {
        for role in ROLES {
            for (len, indicator, ext) in [
                (0usize, 0u8, &[][..]),
                (125, 125, &[][..]),
                (126, 126, &[0x00, 0x7e][..]),
                (65535, 126, &[0xff, 0xff][..]),
                (65536, 127, &[0, 0, 0, 0, 0, 1, 0, 0][..]),
            ] {
                let payload = pattern(len);
                let bytes = frame_to(role, true, op::BINARY, &payload);
                // The hand-built header is what the RFC describes.
                assert_eq!(bytes[1] & 0x7f, indicator);
                assert_eq!(&bytes[2..2 + ext.len()], ext);
                let mut conn = conn(role);
                let outcome = feed(&mut conn, &bytes);
                assert_eq!(outcome.events, vec![binary(&payload)], "{role:?} {len}");
                assert_eq!(outcome.error, None);
                assert_eq!(conn.recv_buf().len(), 0, "bytes left over");
            }
        }
    }

    #[test]
    fn lengths_are_received_when_the_header_arrives_byte_by_byte() {
        for role in ROLES {
            for len in [125usize, 126, 65535, 65536] {
                let payload = pattern(len);
                let bytes = frame_to(role, true, op::BINARY, &payload);
                let mut conn = conn(role);
                // Every header byte alone must not produce anything.
                let header_len = bytes.len() - len;
                for i in 0..header_len {
                    assert_eq!(feed(&mut conn, &bytes[i..i + 1]), Outcome::default());
                }
                let outcome = feed_chunked(&mut conn, &bytes[header_len..], 4093);
                assert_eq!(outcome.events, vec![binary(&payload)]);
            }
        }
    }

    /// "Note that in all cases, the minimal number of bytes MUST be used to encode the length,
    /// for example, the length of a 124-byte-long string can't be encoded as the sequence 126,
    /// 0, 124." (Binds the sender: we check our own output uses the minimal form.)
    #[test]
    fn sent_lengths_use_the_minimal_form() {
        for role in ROLES {
            for (len, indicator, ext_len) in [
                (0usize, 0u8, 0usize),
                (125, 125, 0),
                (126, 126, 2),
                (65535, 126, 2),
                (65536, 127, 8),
            ] {
                let mut pair = Pair::new();
                let payload = pattern(len);
                pair.side(role)
                    .send(Message::binary(payload.clone()))
                    .unwrap();
                let frames = take_frames(pair.side(role));
                assert_eq!(frames.len(), 1);
                let f = &frames[0];
                assert_eq!(f.header[0], 0x82);
                assert_eq!(f.header[1] & 0x7f, indicator, "{role:?} {len}");
                let mask_len = if role == Role::Client { 4 } else { 0 };
                assert_eq!(f.header.len(), 2 + ext_len + mask_len);
                assert_eq!(f.payload, payload);
            }
        }
    }

    /// "... the following 8 bytes interpreted as a 64-bit unsigned integer (the most significant
    /// bit MUST be 0) ..."
    #[test]
    fn sixty_four_bit_length_with_the_top_bit_set_fails_with_1002() {
        for role in ROLES {
            let mut bytes = vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 5];
            if role == Role::Server {
                bytes[1] |= 0x80;
                bytes.extend_from_slice(&KEY);
            }
            bytes.extend_from_slice(b"hello");
            let (error, code) = failure(role, &bytes);
            assert_eq!(
                error,
                ProtocolError::Frame(fullduplex_proto::frame::FrameError::LengthTooLarge)
            );
            assert_eq!(code, 1002);
        }
    }

    /// "If an unknown opcode is received, the receiving endpoint MUST _Fail the WebSocket
    /// Connection_." "%x3-7 are reserved for further non-control frames" and "%xB-F are reserved
    /// for further control frames".
    #[test]
    fn reserved_opcodes_fail_with_1002() {
        for role in ROLES {
            for opcode in (0x3..=0x7).chain(0xb..=0xf) {
                let (error, code) = failure(role, &frame_to(role, true, opcode, b"x"));
                assert_eq!(
                    error,
                    ProtocolError::Frame(fullduplex_proto::frame::FrameError::ReservedOpcode(
                        opcode
                    )),
                    "{role:?} {opcode:#x}"
                );
                assert_eq!(code, 1002);
            }
        }
    }

    #[test]
    fn reserved_opcode_after_valid_frames_fails_after_delivering_them() {
        let bytes = concat(&[
            client_frame(op::TEXT, b"one"),
            client_frame(op::BINARY, b"two"),
            client_frame(0x3, b""),
            client_frame(op::TEXT, b"never"),
        ]);
        let (events, _, code) = failure_after(Role::Server, Config::default(), &bytes);
        assert_eq!(events, vec![text("one"), binary(b"two")]);
        assert_eq!(code, 1002);
    }

    /// "RSV1, RSV2, RSV3: 1 bit each. MUST be 0 unless an extension is negotiated that defines
    /// meanings for non-zero values. If a nonzero value is received and none of the negotiated
    /// extensions defines the meaning of such a nonzero value, the receiving endpoint MUST _Fail
    /// the WebSocket Connection_."
    #[test]
    fn reserved_bits_fail_with_1002() {
        for role in ROLES {
            let mask = (role == Role::Server).then_some(KEY);
            for rsv in 1..=0b111 {
                for opcode in [op::TEXT, op::BINARY, op::PING, op::CLOSE] {
                    let bytes = frame(true, rsv, opcode, mask, b"");
                    let (error, code) = failure(role, &bytes);
                    assert_eq!(error, ProtocolError::ReservedBits, "{role:?} rsv {rsv:03b}");
                    assert_eq!(code, 1002);
                }
            }
        }
    }

    #[test]
    fn reserved_bit_on_a_continuation_fails_too() {
        let bytes = concat(&[
            frame(false, 0, op::TEXT, Some(KEY), b"a"),
            frame(true, RSV1, op::CONT, Some(KEY), b"b"),
        ]);
        let (events, error, code) = failure_after(Role::Server, Config::default(), &bytes);
        assert_eq!(events, vec![]);
        assert_eq!((error, code), (ProtocolError::ReservedBits, 1002));
    }

    /// Sent frames carry no RSV bits.
    #[test]
    fn sent_frames_have_no_reserved_bits() {
        let mut pair = Pair::new();
        for role in ROLES {
            let c = pair.side(role);
            c.send(Message::text("t")).unwrap();
            c.send(Message::binary(vec![1u8; 300])).unwrap();
            c.send(Message::Ping("p".into())).unwrap();
            c.close(None).unwrap();
            for f in take_frames(c) {
                assert_eq!(f.rsv, 0, "{f:?}");
                assert!(f.fin);
            }
        }
    }
}

/// 5.1 Overview and 5.3 Client-to-Server Masking.
mod masking {
    use super::*;

    /// "The server MUST close the connection upon receiving a frame that is not masked. In this
    /// case, a server MAY send a Close frame with a status code of 1002 (protocol error)"
    #[test]
    fn server_rejects_an_unmasked_frame_with_1002() {
        for opcode in [op::TEXT, op::BINARY, op::PING, op::CLOSE] {
            let (error, code) = failure(Role::Server, &server_frame(opcode, b""));
            assert_eq!((error, code), (ProtocolError::UnmaskedFrame, 1002));
        }
    }

    /// "A client MUST close a connection if it detects a masked frame. In this case, it MAY use
    /// the status code 1002 (protocol error)"
    #[test]
    fn client_rejects_a_masked_frame_with_1002() {
        for opcode in [op::TEXT, op::BINARY, op::PONG, op::CLOSE] {
            let (error, code) = failure(Role::Client, &client_frame(opcode, b""));
            assert_eq!((error, code), (ProtocolError::MaskedFrame, 1002));
        }
    }

    /// "A server MUST NOT mask any frames that it sends to the client."
    /// "a client MUST mask all frames that it sends to the server"
    /// (`take_frames` checks both rules on every frame; here we make sure frames of every kind
    /// pass through it, including the automatic pong and the close echo.)
    #[test]
    fn each_side_masks_exactly_as_required() {
        let mut pair = Pair::new();
        for role in ROLES {
            let peer_ping = frame_to(role, true, op::PING, b"auto");
            let peer_close = frame_to(role, true, op::CLOSE, &close_payload(1000, b""));
            let c = pair.side(role);
            c.send(Message::text("t")).unwrap();
            c.send(Message::binary(vec![9u8; 70_000])).unwrap();
            c.send(Message::Pong("p".into())).unwrap();
            c.send_fragment(fullduplex_proto::DataKind::Binary, "f".into(), true)
                .unwrap();
            feed(c, &peer_ping);
            feed(c, &peer_close);
            let frames = take_frames(c);
            assert_eq!(frames.len(), 6);
            let masked = frames.iter().filter(|f| f.mask.is_some()).count();
            assert_eq!(masked, if role == Role::Client { 6 } else { 0 });
        }
    }

    /// "The masking key is a 32-bit value chosen at random by the client. When preparing a
    /// masked frame, the client MUST pick a fresh masking key from the set of allowed 32-bit
    /// values."
    #[test]
    fn client_picks_a_fresh_key_per_frame() {
        let mut client = conn(Role::Client);
        for i in 0..100u8 {
            client.send(Message::binary(vec![i; 8])).unwrap();
        }
        let frames = take_frames(&mut client);
        assert_eq!(frames.len(), 100);
        let keys: std::collections::HashSet<[u8; 4]> =
            frames.iter().map(|f| f.mask.unwrap()).collect();
        // 100 random 32-bit keys collide with probability ~1e-6; ten repeats would mean no
        // randomness at all.
        assert!(keys.len() >= 90, "only {} distinct keys", keys.len());
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.payload, vec![i as u8; 8]);
        }
    }

    #[test]
    fn two_clients_do_not_share_a_key_sequence() {
        let keys = || {
            let mut c = conn(Role::Client);
            for _ in 0..4 {
                c.send(Message::binary(vec![0u8; 4])).unwrap();
            }
            take_frames(&mut c)
                .iter()
                .map(|f| f.mask.unwrap())
                .collect::<Vec<_>>()
        };
        assert_ne!(keys(), keys());
    }

    /// `Config::mask_seed` makes a client deterministic for tests: two connections with the
    /// same seed send the same bytes (keys included), another seed gives other keys, and the
    /// default (no seed) stays random, as the test above checks.
    #[test]
    fn a_seeded_client_sends_the_same_bytes_every_time() {
        let run = |seed: u32| {
            let mut client = Connection::new(
                Role::Client,
                Config::default().mask_seed(std::num::NonZeroU32::new(seed)),
            );
            client.send(Message::text("hello")).unwrap();
            client.send(Message::binary(vec![7u8; 70_000])).unwrap();
            client.send(Message::Ping("p".into())).unwrap();
            client
                .close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")))
                .unwrap();
            take_bytes(&mut client)
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let mut server = Connection::new(
            Role::Server,
            Config::default().mask_seed(std::num::NonZeroU32::new(42)),
        );
        server.send(Message::text("hello")).unwrap();
        assert!(take_frames(&mut server).iter().all(|f| f.mask.is_none()));
    }

    /// "Octet i of the transformed data ("transformed-octet-i") is the XOR of octet i of the
    /// original data ("original-octet-i") with octet at index i modulo 4 of the masking key"
    /// (the client's output, unmasked by the definition, is what was sent; a masked payload of
    /// zeros shows the key itself).
    #[test]
    fn client_masking_follows_the_definition() {
        let mut client = conn(Role::Client);
        client.send(Message::binary(vec![0u8; 1000])).unwrap();
        let bytes = take_bytes(&mut client);
        let header_len = 2 + 2 + 4;
        let key = [bytes[4], bytes[5], bytes[6], bytes[7]];
        let raw = &bytes[header_len..];
        assert_eq!(raw.len(), 1000);
        for (i, byte) in raw.iter().enumerate() {
            assert_eq!(*byte, key[i % 4], "octet {i}");
        }
    }

    /// Masked frames from a peer are unmasked by the definition, whatever the key and length
    /// (the word-at-a-time unmasking must agree with the byte-wise definition at every offset).
    #[test]
    fn server_unmasks_every_length_and_key() {
        for key in [[0, 0, 0, 0], [0xff; 4], [1, 2, 3, 4], KEY] {
            for len in 0..70 {
                let payload = pattern(len);
                let mut server = conn(Role::Server);
                let bytes = frame(true, 0, op::BINARY, Some(key), &payload);
                let outcome = feed_chunked(&mut server, &bytes, 3);
                assert_eq!(outcome.events, vec![binary(&payload)], "{key:?} {len}");
            }
        }
    }
}

/// 5.7 Examples: the RFC's own bytes.
mod examples {
    use super::*;

    /// "A single-frame masked text message: 0x81 0x85 0x37 0xfa 0x21 0x3d 0x7f 0x9f 0x4d 0x51
    /// 0x58 (contains "Hello")"
    #[test]
    fn single_frame_masked_text() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(client_frame(op::TEXT, b"Hello"), bytes, "harness builder");
        let mut server = conn(Role::Server);
        assert_eq!(
            feed(&mut server, &bytes).ok_messages(),
            vec![Message::text("Hello")]
        );
        assert_eq!(server.output_len(), 0);
    }

    /// "A single-frame unmasked text message: 0x81 0x05 0x48 0x65 0x6c 0x6c 0x6f (contains
    /// "Hello")"
    #[test]
    fn single_frame_unmasked_text() {
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let mut client = conn(Role::Client);
        assert_eq!(
            feed(&mut client, &bytes).ok_messages(),
            vec![Message::text("Hello")]
        );
        // And a server sends exactly these bytes.
        let mut server = conn(Role::Server);
        server.send(Message::text("Hello")).unwrap();
        assert_eq!(take_bytes(&mut server), bytes);
    }

    /// "A fragmented unmasked text message: 0x01 0x03 0x48 0x65 0x6c (contains "Hel"),
    /// 0x80 0x02 0x6c 0x6f (contains "lo")"
    #[test]
    fn fragmented_unmasked_text() {
        let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        let mut client = conn(Role::Client);
        assert_eq!(feed(&mut client, &bytes[..5]), Outcome::default());
        assert_eq!(
            feed(&mut client, &bytes[5..]).ok_messages(),
            vec![Message::text("Hello")]
        );
        let mut server = conn(Role::Server);
        server
            .send_fragment(fullduplex_proto::DataKind::Text, "Hel".into(), false)
            .unwrap();
        server
            .send_fragment(fullduplex_proto::DataKind::Text, "lo".into(), true)
            .unwrap();
        assert_eq!(take_bytes(&mut server), bytes);
    }

    /// "Unmasked Ping request and masked Ping response: 0x89 0x05 0x48 0x65 0x6c 0x6c 0x6f
    /// (contains a body of "Hello", but the contents of the body are arbitrary) 0x8a 0x85 0x37
    /// 0xfa 0x21 0x3d 0x7f 0x9f 0x4d 0x51 0x58 (contains a body of "Hello", matching the body of
    /// the ping)"
    #[test]
    fn ping_at_a_client_is_answered_with_a_masked_pong() {
        let mut client = conn(Role::Client);
        let outcome = feed(&mut client, &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(outcome.ok_messages(), vec![Message::Ping("Hello".into())]);
        let bytes = take_bytes(&mut client);
        assert_eq!(bytes.len(), 11);
        assert_eq!(&bytes[..2], &[0x8a, 0x85]);
        let key = [bytes[2], bytes[3], bytes[4], bytes[5]];
        assert_eq!(mask_payload(&bytes[6..], key), b"Hello");
    }

    #[test]
    fn masked_pong_from_the_rfc_at_a_server() {
        let bytes = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let mut server = conn(Role::Server);
        assert_eq!(
            feed(&mut server, &bytes).ok_messages(),
            vec![Message::Pong("Hello".into())]
        );
        // "A response to an unsolicited Pong frame is not expected."
        assert_eq!(server.output_len(), 0);
    }

    #[test]
    fn masked_ping_at_a_server_is_answered_with_the_same_bytes_unmasked() {
        let mut server = conn(Role::Server);
        let bytes = [
            0x89, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let outcome = feed(&mut server, &bytes);
        assert_eq!(outcome.ok_messages(), vec![Message::Ping("Hello".into())]);
        assert_eq!(
            take_bytes(&mut server),
            [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
    }

    /// "256 bytes binary message in a single unmasked frame: 0x82 0x7E 0x0100 [256 bytes of
    /// binary data]"
    #[test]
    fn binary_256_bytes() {
        let payload = pattern(256);
        let mut server = conn(Role::Server);
        server.send(Message::binary(payload.clone())).unwrap();
        let bytes = take_bytes(&mut server);
        assert_eq!(&bytes[..4], &[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(&bytes[4..], &payload[..]);
        let mut client = conn(Role::Client);
        assert_eq!(feed(&mut client, &bytes).events, vec![binary(&payload)]);
    }

    /// "64KiB binary message in a single unmasked frame: 0x82 0x7F 0x0000000000010000 [65536
    /// bytes of binary data]"
    #[test]
    fn binary_64_kib() {
        let payload = pattern(65536);
        let mut server = conn(Role::Server);
        server.send(Message::binary(payload.clone())).unwrap();
        let bytes = take_bytes(&mut server);
        assert_eq!(
            &bytes[..10],
            &[0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(&bytes[10..], &payload[..]);
        let mut client = conn(Role::Client);
        assert_eq!(
            feed_chunked(&mut client, &bytes, 1000).events,
            vec![binary(&payload)]
        );
    }
}

/// 5.4 Fragmentation.
mod fragmentation {
    use super::*;
    use fullduplex_proto::{DataKind, Fragment, ReceiveMode};

    /// "A fragmented message consists of a single frame with the FIN bit clear and an opcode
    /// other than 0, followed by zero or more frames with the FIN bit clear and the opcode set to
    /// 0, and terminated by a single frame with the FIN bit set and an opcode of 0."
    #[test]
    fn continuation_without_a_start_fails_with_1002() {
        for role in ROLES {
            for fin in [true, false] {
                let (error, code) = failure(role, &frame_to(role, fin, op::CONT, b"x"));
                assert_eq!((error, code), (ProtocolError::UnexpectedContinuation, 1002));
            }
        }
    }

    #[test]
    fn continuation_after_a_finished_message_fails_with_1002() {
        let bytes = concat(&[
            frame(false, 0, op::TEXT, Some(KEY), b"a"),
            frame(true, 0, op::CONT, Some(KEY), b"b"),
            frame(true, 0, op::CONT, Some(KEY), b"c"),
        ]);
        let (events, error, code) = failure_after(Role::Server, Config::default(), &bytes);
        assert_eq!(events, vec![text("ab")]);
        assert_eq!((error, code), (ProtocolError::UnexpectedContinuation, 1002));
    }

    /// "The fragments of one message MUST NOT be interleaved between the fragments of another
    /// message unless an extension has been negotiated that can interpret the interleaving."
    #[test]
    fn new_data_frame_during_a_fragmented_message_fails_with_1002() {
        for role in ROLES {
            for second in [op::TEXT, op::BINARY] {
                for second_fin in [true, false] {
                    let bytes = concat(&[
                        frame_to(role, false, op::TEXT, b"Hel"),
                        frame_to(role, second_fin, second, b"lo"),
                    ]);
                    let (error, code) = failure(role, &bytes);
                    assert_eq!((error, code), (ProtocolError::ExpectedContinuation, 1002));
                }
            }
        }
    }

    /// "Control frames (see Section 5.5) MAY be injected in the middle of a fragmented
    /// message." "An endpoint MUST be capable of handling control frames in the middle of a
    /// fragmented message."
    #[test]
    fn control_frames_between_fragments_are_delivered_in_between() {
        for role in ROLES {
            let bytes = concat(&[
                frame_to(role, false, op::TEXT, b"He"),
                frame_to(role, true, op::PING, b"p1"),
                frame_to(role, false, op::CONT, b"l"),
                frame_to(role, true, op::PONG, b"p2"),
                frame_to(role, true, op::PING, b""),
                frame_to(role, true, op::CONT, b"lo"),
                frame_to(role, true, op::BINARY, b"next"),
            ]);
            for chunk in [1, 2, 5, bytes.len()] {
                let mut conn = conn(role);
                let outcome = feed_chunked(&mut conn, &bytes, chunk);
                assert_eq!(
                    outcome.events,
                    vec![
                        ping(b"p1"),
                        pong(b"p2"),
                        ping(b""),
                        text("Hello"),
                        binary(b"next")
                    ],
                    "{role:?} chunk {chunk}"
                );
                let pongs: Vec<Vec<u8>> = take_frames(&mut conn)
                    .into_iter()
                    .map(|f| {
                        assert_eq!(f.opcode, op::PONG);
                        f.payload
                    })
                    .collect();
                assert_eq!(pongs, vec![b"p1".to_vec(), vec![]]);
            }
        }
    }

    /// "Message fragments MUST be delivered to the recipient in the order sent by the sender."
    #[test]
    fn many_fragments_are_joined_in_order() {
        let mut frames = vec![frame(false, 0, op::BINARY, Some(KEY), &[0])];
        for i in 1..99u8 {
            frames.push(frame(false, 0, op::CONT, Some(KEY), &[i]));
        }
        frames.push(frame(true, 0, op::CONT, Some(KEY), &[99]));
        let mut server = conn(Role::Server);
        let outcome = feed(&mut server, &concat(&frames));
        let expected: Vec<u8> = (0..100).collect();
        assert_eq!(outcome.events, vec![binary(&expected)]);
    }

    #[test]
    fn empty_fragments_make_an_empty_message() {
        let bytes = concat(&[
            frame(false, 0, op::TEXT, Some(KEY), b""),
            frame(false, 0, op::CONT, Some(KEY), b""),
            frame(true, 0, op::CONT, Some(KEY), b""),
        ]);
        let mut server = conn(Role::Server);
        assert_eq!(feed(&mut server, &bytes).events, vec![text("")]);
    }

    /// `ReceiveMode::Fragments` delivers each data frame as it completes, with its position.
    #[test]
    fn fragments_mode_delivers_every_frame_with_its_flags() {
        let config = Config::default().receive_mode(ReceiveMode::Fragments);
        let bytes = concat(&[
            frame(false, 0, op::BINARY, Some(KEY), b"ab"),
            frame(false, 0, op::CONT, Some(KEY), b"cd"),
            frame(true, 0, op::PING, Some(KEY), b"p"),
            frame(true, 0, op::CONT, Some(KEY), b"ef"),
            frame(true, 0, op::TEXT, Some(KEY), "één".as_bytes()),
            frame(false, 0, op::TEXT, Some(KEY), &[0xe2, 0x82]),
            frame(true, 0, op::CONT, Some(KEY), &[0xac]),
        ]);
        let mut server = Connection::new(Role::Server, config);
        let outcome = feed_chunked(&mut server, &bytes, 3);
        let frag = |kind, payload: &[u8], is_first, is_last| {
            Event::Fragment(Fragment {
                kind,
                payload: bytes::Bytes::copy_from_slice(payload),
                is_first,
                is_last,
            })
        };
        assert_eq!(
            outcome.events,
            vec![
                frag(DataKind::Binary, b"ab", true, false),
                frag(DataKind::Binary, b"cd", false, false),
                ping(b"p"),
                frag(DataKind::Binary, b"ef", false, true),
                frag(DataKind::Text, "één".as_bytes(), true, true),
                frag(DataKind::Text, &[0xe2, 0x82], true, false),
                frag(DataKind::Text, &[0xac], false, true),
            ]
        );
        assert_eq!(outcome.error, None);
    }

    /// `ReceiveMode::Streaming` hands out what has arrived of a frame at once, unmasked with
    /// the key rotation continuing across pieces, and holds only the bytes not yet delivered.
    #[test]
    fn streaming_mode_delivers_a_frame_before_it_is_complete() {
        let config = Config::default().receive_mode(ReceiveMode::Streaming);
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let bytes = concat(&[
            frame(false, 0, op::BINARY, Some(KEY), &payload[..6_000]),
            frame(true, 0, op::PING, Some(KEY), b"p"),
            frame(true, 0, op::CONT, Some(KEY), &payload[6_000..]),
            frame(true, 0, op::TEXT, Some(KEY), b"small"),
        ]);
        let mut server = Connection::new(Role::Server, config);
        let mut joined = Vec::new();
        let mut pieces = 0;
        let mut rest = &bytes[..];
        // 1,001 bytes at a time (not a multiple of the mask key's length).
        while !rest.is_empty() {
            let (now, later) = rest.split_at(rest.len().min(1_001));
            rest = later;
            server.recv_buf().extend_from_slice(now);
            while let Some(event) = server.next_event().unwrap() {
                match event {
                    Event::Fragment(f) if f.kind == DataKind::Binary => {
                        assert_eq!(f.is_first, pieces == 0);
                        assert_eq!(f.is_last, joined.len() + f.payload.len() == payload.len());
                        assert!(!f.payload.is_empty());
                        joined.extend_from_slice(&f.payload);
                        pieces += 1;
                    }
                    Event::Fragment(f) => {
                        assert!(f.is_first && f.is_last && &f.payload[..] == b"small");
                    }
                    Event::Message(m) => assert_eq!(m, Message::Ping("p".into())),
                }
            }
            // Delivered bytes do not stay in the buffer: at most one read is held.
            assert!(
                server.recv_buf().len() <= 1_001,
                "{}",
                server.recv_buf().len()
            );
        }
        assert_eq!(joined, payload);
        assert!(pieces >= 10, "{pieces} pieces");
    }

    #[test]
    fn receive_mode_switch_applies_from_the_next_message() {
        let mut server = conn(Role::Server);
        let first = frame(false, 0, op::TEXT, Some(KEY), b"a");
        assert_eq!(feed(&mut server, &first), Outcome::default());
        server.set_receive_mode(ReceiveMode::Fragments);
        let rest = concat(&[
            frame(true, 0, op::CONT, Some(KEY), b"b"),
            frame(true, 0, op::BINARY, Some(KEY), b"c"),
        ]);
        let outcome = feed(&mut server, &rest);
        assert_eq!(outcome.events.len(), 2);
        assert_eq!(outcome.events[0], text("ab"));
        assert!(matches!(
            &outcome.events[1],
            Event::Fragment(f) if f.is_first && f.is_last && &f.payload[..] == b"c"
        ));
    }

    /// Sending: "a single frame with the FIN bit clear and an opcode other than 0, followed by
    /// zero or more frames with the FIN bit clear and the opcode set to 0, and terminated by a
    /// single frame with the FIN bit set and an opcode of 0."
    #[test]
    fn send_fragment_puts_the_opcode_first_and_fin_last() {
        for role in ROLES {
            for kind in [DataKind::Text, DataKind::Binary] {
                let mut pair = Pair::new();
                let c = pair.side(role);
                c.send_fragment(kind, "one".into(), false).unwrap();
                c.send(Message::Ping("between".into())).unwrap();
                c.send_fragment(kind, "two".into(), false).unwrap();
                c.send_fragment(kind, "three".into(), true).unwrap();
                let frames = take_frames(c);
                let shape: Vec<(bool, u8, &[u8])> = frames
                    .iter()
                    .map(|f| (f.fin, f.opcode, &f.payload[..]))
                    .collect();
                let first = match kind {
                    DataKind::Text => op::TEXT,
                    DataKind::Binary => op::BINARY,
                };
                assert_eq!(
                    shape,
                    vec![
                        (false, first, &b"one"[..]),
                        (true, op::PING, &b"between"[..]),
                        (false, op::CONT, &b"two"[..]),
                        (true, op::CONT, &b"three"[..]),
                    ]
                );
            }
        }
    }

    #[test]
    fn fragmented_send_is_received_whole_by_the_peer() {
        let mut pair = Pair::new();
        pair.client
            .send_fragment(DataKind::Text, "κό".into(), false)
            .unwrap();
        pair.client
            .send_fragment(DataKind::Text, "σμε".into(), true)
            .unwrap();
        pair.client.send(Message::text("after")).unwrap();
        let outcome = pair.client_to_server_chunked(1);
        assert_eq!(outcome.events, vec![text("κόσμε"), text("after")]);
    }

    #[test]
    fn whole_message_during_an_outgoing_fragmented_message_is_refused() {
        for role in ROLES {
            let mut pair = Pair::new();
            let c = pair.side(role);
            c.send_fragment(DataKind::Binary, "a".into(), false)
                .unwrap();
            let before = c.output_len();
            assert_eq!(
                c.send(Message::text("x")),
                Err(SendError::FragmentInProgress)
            );
            assert_eq!(
                c.send(Message::binary(vec![1])),
                Err(SendError::FragmentInProgress)
            );
            assert_eq!(
                c.send_fragment(DataKind::Text, "x".into(), true),
                Err(SendError::FragmentInProgress)
            );
            if role == Role::Server {
                assert_eq!(
                    c.send_encoded(fullduplex_proto::connection::encode_server_message(
                        &Message::text("x")
                    )),
                    Err(SendError::FragmentInProgress)
                );
            }
            assert_eq!(c.output_len(), before, "something was queued");
            // Control messages still go through, and the message can be finished.
            c.send(Message::Ping("p".into())).unwrap();
            c.send_fragment(DataKind::Binary, "b".into(), true).unwrap();
            c.send(Message::text("x")).unwrap();
        }
        let mut pair = Pair::new();
        pair.client
            .send_fragment(DataKind::Binary, "a".into(), false)
            .unwrap();
        let _ = pair.client.send(Message::text("refused"));
        pair.client
            .send_fragment(DataKind::Binary, "b".into(), true)
            .unwrap();
        assert_eq!(pair.client_to_server().events, vec![binary(b"ab")]);
    }

    /// Text fragments may cut a code point but must add up to valid UTF-8.
    #[test]
    fn invalid_utf8_in_text_fragments_is_refused() {
        for role in ROLES {
            let mut pair = Pair::new();
            let c = pair.side(role);
            // Invalid from the first byte: nothing is queued and no message is started.
            assert_eq!(
                c.send_fragment(DataKind::Text, vec![0xff].into(), false),
                Err(SendError::InvalidUtf8)
            );
            assert_eq!(c.output_len(), 0);
            c.send(Message::text("no message in progress")).unwrap();
            // A cut code point is fine in the middle ...
            c.send_fragment(DataKind::Text, vec![b'a', 0xe2].into(), false)
                .unwrap();
            // ... but a continuation that cannot continue it is refused ...
            let before = c.output_len();
            assert_eq!(
                c.send_fragment(DataKind::Text, vec![0x41].into(), false),
                Err(SendError::InvalidUtf8)
            );
            assert_eq!(c.output_len(), before);
            // ... and so is a last fragment that leaves it cut.
            let mut fresh = Pair::new();
            let c = fresh.side(role);
            c.send_fragment(DataKind::Text, vec![0xf0, 0x9f].into(), false)
                .unwrap();
            assert_eq!(
                c.send_fragment(DataKind::Text, vec![0x98].into(), true),
                Err(SendError::InvalidUtf8)
            );
            // A single-frame fragmented text that ends mid code point.
            let mut fresh = Pair::new();
            let c = fresh.side(role);
            assert_eq!(
                c.send_fragment(DataKind::Text, vec![0xe2, 0x82].into(), true),
                Err(SendError::InvalidUtf8)
            );
            assert_eq!(c.output_len(), 0);
        }
    }

    /// The code's own promise ("Keep the message open as it was: the caller may send a corrected
    /// fragment"): after a refused text continuation, a correct one must be accepted.
    #[test]
    fn corrected_text_fragment_after_a_refused_one_is_accepted() {
        let mut pair = Pair::new();
        let c = &mut pair.client;
        c.send_fragment(DataKind::Text, vec![b'a', 0xe2, 0x82].into(), false)
            .unwrap();
        assert_eq!(
            c.send_fragment(DataKind::Text, vec![0xff].into(), false),
            Err(SendError::InvalidUtf8)
        );
        // 0xAC completes "€" (E2 82 AC).
        assert_eq!(
            c.send_fragment(DataKind::Text, vec![0xac].into(), true),
            Ok(())
        );
        assert_eq!(pair.client_to_server().events, vec![text("a€")]);
    }
}

/// 5.5 Control Frames, 5.5.2 Ping, 5.5.3 Pong.
mod control_frames {
    use super::*;

    /// "All control frames MUST have a payload length of 125 bytes or less and MUST NOT be
    /// fragmented."
    #[test]
    fn control_payload_of_126_fails_with_1002() {
        for role in ROLES {
            for opcode in [op::PING, op::PONG, op::CLOSE] {
                let mut payload = close_payload(1000, b"");
                payload.resize(126, b'a');
                let (error, code) = failure(role, &frame_to(role, true, opcode, &payload));
                assert_eq!((error, code), (ProtocolError::ControlFrameTooLarge, 1002));
            }
        }
    }

    /// The limit is judged on the header: the payload never needs to arrive.
    #[test]
    fn oversized_control_frame_fails_at_its_header() {
        let mut server = conn(Role::Server);
        let head = header(true, 0, op::PING, Some(KEY), 0xffff);
        assert_eq!(
            feed(&mut server, &head).err(),
            ProtocolError::ControlFrameTooLarge
        );
        assert_eq!(assert_failed(&mut server), 1002);
    }

    #[test]
    fn control_payload_of_125_is_accepted() {
        for role in ROLES {
            let payload = pattern(125);
            let mut conn = conn(role);
            let outcome = feed(&mut conn, &frame_to(role, true, op::PING, &payload));
            assert_eq!(outcome.events, vec![ping(&payload)]);
        }
    }

    #[test]
    fn fragmented_control_frame_fails_with_1002() {
        for role in ROLES {
            for opcode in [op::PING, op::PONG, op::CLOSE] {
                let (error, code) = failure(role, &frame_to(role, false, opcode, b""));
                assert_eq!((error, code), (ProtocolError::FragmentedControlFrame, 1002));
            }
        }
    }

    /// "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in response" and "A
    /// Pong frame sent in response to a Ping frame must have identical "Application data" as
    /// found in the message body of the Ping frame being replied to."
    #[test]
    fn ping_is_answered_with_an_identical_pong() {
        for role in ROLES {
            for payload in [vec![], vec![0u8], pattern(125), vec![0xff; 100]] {
                let mut conn = conn(role);
                let outcome = feed(&mut conn, &frame_to(role, true, op::PING, &payload));
                assert_eq!(outcome.events, vec![ping(&payload)]);
                let frames = take_frames(&mut conn);
                assert_eq!(frames.len(), 1);
                assert_eq!(frames[0].opcode, op::PONG);
                assert!(frames[0].fin);
                assert_eq!(frames[0].payload, payload);
            }
        }
    }

    #[test]
    fn every_ping_of_a_burst_gets_its_own_pong_in_order() {
        let pings: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; i as usize]).collect();
        let bytes = concat(
            &pings
                .iter()
                .map(|p| client_frame(op::PING, p))
                .collect::<Vec<_>>(),
        );
        let mut server = conn(Role::Server);
        feed(&mut server, &bytes);
        let pongs: Vec<Vec<u8>> = take_frames(&mut server)
            .into_iter()
            .map(|f| f.payload)
            .collect();
        assert_eq!(pongs, pings);
    }

    /// A pong held back while the output is backed up (`PONG_BACKLOG`) counts in
    /// `output_len` as it will be written: a client's with its 4-byte masking key (the
    /// frame_stream_client fuzz target found a client's count 4 bytes short).
    #[test]
    fn output_len_counts_a_held_back_pong_as_written() {
        for role in ROLES {
            let mut conn = conn(role);
            conn.send(Message::binary(vec![0u8; 20 << 10])).unwrap();
            feed(&mut conn, &frame_to(role, true, op::PING, b"ping"));
            let announced = conn.output_len();
            let written = conn.take_output();
            assert_eq!(written.len(), announced, "{role:?}");
            assert_eq!(
                parse_frames(&written).last().map(|f| f.opcode),
                Some(op::PONG)
            );
        }
    }

    /// `Config::auto_pong(false)`: "The ping is delivered to the application either way."
    #[test]
    fn auto_pong_off_queues_nothing_but_delivers_the_ping() {
        for role in ROLES {
            let mut conn = Connection::new(role, Config::default().auto_pong(false));
            let outcome = feed(&mut conn, &frame_to(role, true, op::PING, b"hi"));
            assert_eq!(outcome.events, vec![ping(b"hi")]);
            assert_eq!(conn.output_len(), 0);
            // The application answers by itself.
            conn.send(Message::Pong("hi".into())).unwrap();
            let frames = take_frames(&mut conn);
            assert_eq!(
                (frames[0].opcode, &frames[0].payload[..]),
                (op::PONG, &b"hi"[..])
            );
        }
    }

    /// "A Pong frame MAY be sent unsolicited. This serves as a unidirectional heartbeat. A
    /// response to an unsolicited Pong frame is not expected."
    #[test]
    fn unsolicited_pong_is_delivered_and_not_answered() {
        for role in ROLES {
            let mut conn = conn(role);
            let outcome = feed(&mut conn, &frame_to(role, true, op::PONG, b"beat"));
            assert_eq!(outcome.events, vec![pong(b"beat")]);
            assert_eq!(conn.output_len(), 0);
        }
    }

    #[test]
    fn sending_a_control_frame_over_125_bytes_is_refused() {
        for role in ROLES {
            let mut conn = conn(role);
            assert_eq!(
                conn.send(Message::Ping(pattern(126).into())),
                Err(SendError::ControlFrameTooLarge)
            );
            assert_eq!(
                conn.send(Message::Pong(pattern(126).into())),
                Err(SendError::ControlFrameTooLarge)
            );
            assert_eq!(conn.output_len(), 0);
            conn.send(Message::Ping(pattern(125).into())).unwrap();
            let frames = take_frames(&mut conn);
            assert_eq!(frames[0].payload, pattern(125));
        }
    }

    /// "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in response, unless it
    /// already received a Close frame." We sent a close and did not yet receive one: the pong
    /// is still owed.
    #[test]
    fn ping_while_closing_is_still_answered() {
        let mut server = conn(Role::Server);
        server.close(None).unwrap();
        take_frames(&mut server);
        let outcome = feed(&mut server, &client_frame(op::PING, b"late"));
        assert_eq!(outcome.events, vec![ping(b"late")]);
        let frames = take_frames(&mut server);
        assert_eq!(frames.len(), 1, "no pong queued");
        assert_eq!(
            (frames[0].opcode, &frames[0].payload[..]),
            (op::PONG, &b"late"[..])
        );
    }
}

/// 5.5.1 Close and 7 Closing the Connection.
mod closing {
    use super::*;

    /// "The Close frame MAY contain a body (the "Application data" portion of the frame) that
    /// indicates a reason for closing" — and may not: an empty close has no status code.
    /// "If an endpoint receives a Close frame and did not previously send a Close frame, the
    /// endpoint MUST send a Close frame in response."
    #[test]
    fn empty_close_is_delivered_as_none_and_echoed_empty() {
        for role in ROLES {
            let mut conn = conn(role);
            let outcome = feed(&mut conn, &frame_to(role, true, op::CLOSE, b""));
            assert_eq!(outcome.ok_messages(), vec![Message::Close(None)]);
            let frames = take_frames(&mut conn);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].opcode, op::CLOSE);
            assert_eq!(frames[0].payload, b"");
            assert_eq!(conn.state(), State::Closed);
        }
        let mut server = conn(Role::Server);
        feed(&mut server, &client_frame(op::CLOSE, b""));
        assert_eq!(take_bytes(&mut server), [0x88, 0x00]);
    }

    /// "If there is a body, the first two bytes of the body MUST be a 2-byte unsigned integer
    /// (in network byte order) representing a status code ... Following the 2-byte integer, the
    /// body MAY contain UTF-8-encoded data with value /reason/" and "When sending a Close frame
    /// in response, the endpoint typically echos the status code it received."
    #[test]
    fn close_with_code_and_reason_is_delivered_and_its_code_echoed() {
        for role in ROLES {
            let mut conn = conn(role);
            let payload = close_payload(1000, b"bye");
            let outcome = feed(&mut conn, &frame_to(role, true, op::CLOSE, &payload));
            assert_eq!(outcome.events, vec![close(1000, "bye")]);
            let frames = take_frames(&mut conn);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].close_code(), Some(1000));
            assert_eq!(&frames[0].payload[..2], &[0x03, 0xe8]);
        }
    }

    #[test]
    fn close_with_a_one_byte_payload_fails_with_1002() {
        for role in ROLES {
            let (error, code) = failure(role, &frame_to(role, true, op::CLOSE, &[0x03]));
            assert_eq!((error, code), (ProtocolError::CloseLength, 1002));
        }
    }

    /// 7.4.1/7.4.2: 1004 is reserved, 1005, 1006 and 1015 "MUST NOT be set as a status code in
    /// a Close control frame by an endpoint", 0-999 "are not used", the rest of 1000-2999 is
    /// reserved for this protocol and its extensions, and nothing above 4999 is defined.
    #[test]
    fn close_codes_that_may_not_appear_on_the_wire_fail_with_1002() {
        for role in ROLES {
            for wire in [
                0u16, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
            ] {
                let bytes = frame_to(role, true, op::CLOSE, &close_payload(wire, b"r"));
                let (error, code) = failure(role, &bytes);
                assert_eq!(error, ProtocolError::InvalidCloseCode(wire), "{role:?}");
                assert_eq!(code, 1002, "{wire}");
            }
        }
    }

    #[test]
    fn close_codes_allowed_on_the_wire_are_accepted_and_echoed() {
        let valid = (1000..=1003)
            .chain(1007..=1014)
            .chain([3000, 3999, 4000, 4999]);
        for role in ROLES {
            for wire in valid.clone() {
                let mut conn = conn(role);
                let bytes = frame_to(role, true, op::CLOSE, &close_payload(wire, b""));
                let outcome = feed(&mut conn, &bytes);
                assert_eq!(outcome.events, vec![close(wire, "")], "{role:?}");
                let frames = take_frames(&mut conn);
                assert_eq!(frames.len(), 1);
                assert_eq!(frames[0].close_code(), Some(wire));
                assert_eq!(conn.state(), State::Closed);
            }
        }
    }

    /// 8.1 applies to the close reason too ("UTF-8-encoded data").
    #[test]
    fn close_reason_that_is_not_utf8_fails_with_1007() {
        for role in ROLES {
            for reason in [&[0xff][..], &[0xc0, 0x80], &[b'o', b'k', 0xed, 0xa0, 0x80]] {
                let bytes = frame_to(role, true, op::CLOSE, &close_payload(1000, reason));
                let (error, code) = failure(role, &bytes);
                assert_eq!((error, code), (ProtocolError::InvalidUtf8, 1007));
            }
        }
    }

    #[test]
    fn close_reason_of_123_bytes_is_accepted() {
        let reason = "r".repeat(123);
        let mut server = conn(Role::Server);
        let bytes = client_frame(op::CLOSE, &close_payload(4000, reason.as_bytes()));
        assert_eq!(feed(&mut server, &bytes).events, vec![close(4000, &reason)]);
    }

    /// "After sending a Close frame, the application MUST NOT send any more data frames."
    #[test]
    fn after_sending_close_no_data_may_be_sent() {
        for role in ROLES {
            let mut pair = Pair::new();
            let c = pair.side(role);
            assert_eq!(c.state(), State::Open);
            c.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "later")))
                .unwrap();
            assert_eq!(c.state(), State::Closing);
            assert!(c.is_close_sent());
            assert!(!c.is_close_received());
            let queued = c.output_len();
            assert_eq!(c.send(Message::text("x")), Err(SendError::Closed));
            assert_eq!(c.send(Message::binary(vec![1])), Err(SendError::Closed));
            assert_eq!(c.send(Message::Ping("p".into())), Err(SendError::Closed));
            assert_eq!(
                c.send_fragment(fullduplex_proto::DataKind::Text, "f".into(), true),
                Err(SendError::Closed)
            );
            if role == Role::Server {
                assert_eq!(
                    c.send_encoded(fullduplex_proto::connection::encode_server_message(
                        &Message::text("x")
                    )),
                    Err(SendError::Closed)
                );
            }
            // A second close is ignored, even with a code that could not be sent.
            assert_eq!(c.close(Some(CloseFrame::new(CloseCode(1005), ""))), Ok(()));
            assert_eq!(c.output_len(), queued);
            let frames = take_frames(c);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].close_code(), Some(1001));
            assert_eq!(frames[0].close_reason(), b"later");
        }
    }

    /// Open -> Closing -> Closed, started by either side; the initiator does not answer the
    /// answer.
    #[test]
    fn close_handshake_states_on_both_sides() {
        for initiator in ROLES {
            let mut pair = Pair::new();
            let responder = match initiator {
                Role::Client => Role::Server,
                Role::Server => Role::Client,
            };
            pair.side(initiator)
                .close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")))
                .unwrap();
            assert_eq!(pair.side(initiator).state(), State::Closing);
            assert_eq!(pair.side(responder).state(), State::Open);
            let got = match initiator {
                Role::Client => pair.client_to_server(),
                Role::Server => pair.server_to_client(),
            };
            assert_eq!(got.events, vec![close(1000, "bye")]);
            assert_eq!(pair.side(responder).state(), State::Closed);
            let echo = match initiator {
                Role::Client => pair.server_to_client(),
                Role::Server => pair.client_to_server(),
            };
            assert_eq!(echo.events, vec![close(1000, "")]);
            assert_eq!(pair.side(initiator).state(), State::Closed);
            assert!(pair.side(initiator).is_close_received());
            assert_eq!(pair.side(initiator).output_len(), 0, "answered the answer");
            assert_eq!(pair.side(responder).output_len(), 0);
        }
    }

    /// `State::Closing`: "We sent a close frame and wait for the peer's. Received messages are
    /// still delivered."
    #[test]
    fn messages_keep_arriving_while_closing() {
        let mut pair = Pair::new();
        pair.server.close(None).unwrap();
        pair.client.send(Message::text("in flight")).unwrap();
        pair.client.send(Message::binary(vec![1, 2])).unwrap();
        let outcome = pair.client_to_server();
        assert_eq!(outcome.events, vec![text("in flight"), binary(&[1, 2])]);
        assert_eq!(pair.server.state(), State::Closing);
        assert_eq!(
            pair.server_to_client().events,
            vec![Event::Message(Message::Close(None))]
        );
        assert_eq!(
            pair.client_to_server().events,
            vec![Event::Message(Message::Close(None))]
        );
        assert_eq!(pair.server.state(), State::Closed);
    }

    /// 7.1.1: after the close handshake only the transport is left: nothing after the close
    /// frame is processed.
    #[test]
    fn nothing_is_delivered_after_a_received_close() {
        for role in ROLES {
            let mut conn = conn(role);
            let bytes = concat(&[
                frame_to(role, true, op::TEXT, b"before"),
                frame_to(role, true, op::CLOSE, &close_payload(1000, b"")),
                frame_to(role, true, op::TEXT, b"after"),
                frame_to(role, true, op::PING, b"ignored"),
            ]);
            let outcome = feed(&mut conn, &bytes);
            assert_eq!(outcome.events, vec![text("before"), close(1000, "")]);
            assert_eq!(conn.state(), State::Closed);
            assert!(conn.is_close_received());
            assert_eq!(conn.next_event(), Ok(None));
            // Even garbage and a second close change nothing.
            let more = concat(&[
                vec![0xff, 0xff],
                frame_to(role, true, op::CLOSE, &close_payload(1002, b"")),
            ]);
            assert_eq!(feed(&mut conn, &more), Outcome::default());
            let frames = take_frames(&mut conn);
            assert_eq!(frames.len(), 1, "only the echo: no pong, no second close");
            assert_eq!(frames[0].close_code(), Some(1000));
            // The end of the stream after the close handshake is not an error.
            conn.recv_eof();
            assert_eq!(conn.next_event(), Ok(None));
        }
    }

    /// 7.1.7: "_Fail the WebSocket Connection_ ... the endpoint MUST NOT continue to attempt to
    /// process data (including a responding Close frame) from the remote endpoint".
    #[test]
    fn after_a_protocol_error_nothing_more_is_delivered_or_sent() {
        for role in ROLES {
            let mut conn = conn(role);
            let bytes = concat(&[
                frame_to(role, true, op::TEXT, b"ok"),
                frame_to(role, true, 0x7, b""),
                frame_to(role, true, op::TEXT, b"after"),
            ]);
            let outcome = feed(&mut conn, &bytes);
            assert_eq!(outcome.events, vec![text("ok")]);
            assert!(matches!(outcome.error, Some(ProtocolError::Frame(_))));
            for _ in 0..5 {
                assert_eq!(conn.next_event(), Ok(None));
            }
            let more = concat(&[
                frame_to(role, true, op::PING, b"p"),
                frame_to(role, true, op::CLOSE, &close_payload(1000, b"")),
                frame_to(role, true, op::TEXT, b"x"),
            ]);
            assert_eq!(feed(&mut conn, &more), Outcome::default());
            conn.recv_eof();
            assert_eq!(conn.next_event(), Ok(None));
            assert_eq!(assert_failed(&mut conn), 1002);
            assert_eq!(conn.send(Message::text("x")), Err(SendError::Closed));
        }
    }

    /// When we already sent a close, a failure queues no second close frame.
    #[test]
    fn failure_while_closing_queues_no_second_close() {
        let mut server = conn(Role::Server);
        server
            .close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
            .unwrap();
        let outcome = feed(&mut server, &server_frame(op::TEXT, b"unmasked"));
        assert_eq!(outcome.err(), ProtocolError::UnmaskedFrame);
        assert_eq!(server.state(), State::Closed);
        let frames = take_frames(&mut server);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].close_code(), Some(1000));
    }

    /// 7.1.5: "If _The WebSocket Connection is Closed_ and no Close control frame was received
    /// by the endpoint (such as could occur if the underlying transport connection is lost),
    /// _The WebSocket Connection Close Code_ is considered to be 1006." 1006 "MUST NOT be set as
    /// a status code in a Close control frame by an endpoint": nothing is queued.
    #[test]
    fn end_of_stream_without_close_is_an_unexpected_eof() {
        for role in ROLES {
            for buffered in [
                vec![],
                frame_to(role, true, op::TEXT, b"partial")[..5].to_vec(),
                frame_to(role, false, op::TEXT, b"unfinished message"),
            ] {
                let mut conn = conn(role);
                assert_eq!(feed(&mut conn, &buffered), Outcome::default());
                conn.recv_eof();
                assert_eq!(conn.next_event(), Err(ProtocolError::UnexpectedEof));
                assert_eq!(
                    ProtocolError::UnexpectedEof.close_code(),
                    CloseCode::ABNORMAL
                );
                assert_eq!(conn.output_len(), 0, "a close frame was queued");
                assert_eq!(conn.state(), State::Closed);
                assert_eq!(conn.next_event(), Ok(None));
                assert_eq!(conn.next_event(), Ok(None));
            }
        }
    }

    #[test]
    fn complete_frames_before_the_end_of_stream_are_delivered_first() {
        let mut server = conn(Role::Server);
        server.recv_buf().extend_from_slice(&concat(&[
            client_frame(op::TEXT, b"a"),
            client_frame(op::PING, b""),
        ]));
        server.recv_eof();
        assert_eq!(server.next_event(), Ok(Some(text("a"))));
        assert_eq!(server.next_event(), Ok(Some(ping(b""))));
        assert_eq!(server.next_event(), Err(ProtocolError::UnexpectedEof));
        assert_eq!(server.next_event(), Ok(None));
    }

    /// `SendError::Closed`: "A close frame was already sent (or the connection failed): no more
    /// data may be sent." An unexpected end of stream fails the connection.
    #[test]
    fn sending_after_an_unexpected_eof_is_refused() {
        let mut server = conn(Role::Server);
        server.recv_eof();
        assert_eq!(server.next_event(), Err(ProtocolError::UnexpectedEof));
        assert_eq!(server.state(), State::Closed);
        assert_eq!(server.send(Message::text("x")), Err(SendError::Closed));
        assert_eq!(server.output_len(), 0);
    }

    /// 7.4.1: 1005 and 1006 "MUST NOT be set as a status code in a Close control frame by an
    /// endpoint"; 1015 likewise.
    #[test]
    fn closing_with_a_code_that_may_not_be_sent_is_refused() {
        for role in ROLES {
            let mut conn = conn(role);
            for code in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
                assert_eq!(
                    conn.close(Some(CloseFrame::new(CloseCode(code), ""))),
                    Err(SendError::InvalidCloseCode(code))
                );
                assert_eq!(
                    conn.send(Message::Close(Some(CloseFrame::new(CloseCode(code), "")))),
                    Err(SendError::InvalidCloseCode(code))
                );
            }
            assert_eq!(conn.output_len(), 0);
            assert_eq!(conn.state(), State::Open);
            conn.send(Message::Close(Some(CloseFrame::new(CloseCode(4999), "ok"))))
                .unwrap();
            let frames = take_frames(&mut conn);
            assert_eq!(frames[0].close_code(), Some(4999));
        }
    }

    /// "All control frames MUST have a payload length of 125 bytes or less": a long reason is
    /// cut (at a character boundary, so it stays UTF-8).
    #[test]
    fn long_close_reason_is_cut_to_fit() {
        let reason = "é".repeat(100);
        let mut pair = Pair::new();
        pair.client
            .close(Some(CloseFrame::new(CloseCode::NORMAL, reason.as_str())))
            .unwrap();
        let outcome = pair.client_to_server();
        let Event::Message(Message::Close(Some(frame))) = &outcome.events[0] else {
            panic!("{outcome:?}");
        };
        assert!(frame.reason.len() <= 123);
        assert!(frame.reason.len() >= 122);
        assert!(reason.starts_with(frame.reason.as_str()));
    }
}

/// 5.6 Data Frames and 8.1 Handling Errors in UTF-8-Encoded Data.
mod utf8 {
    use super::*;
    use fullduplex_proto::{DataKind, ReceiveMode};

    /// "When an endpoint is to interpret a byte stream as UTF-8 but finds that the byte stream
    /// is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket
    /// Connection_." 1007: "non-UTF-8 [RFC3629] data within a text message".
    #[test]
    fn invalid_text_fails_with_1007() {
        let cases: &[&[u8]] = &[
            &[0xff],
            &[0xc0, 0x80],             // overlong NUL
            &[0xed, 0xa0, 0x80],       // surrogate U+D800
            &[0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
            &[0xf5, 0x80, 0x80, 0x80],
            b"Hello\x80world",
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
            ],
        ];
        for role in ROLES {
            for bytes in cases {
                let (error, code) = failure(role, &frame_to(role, true, op::TEXT, bytes));
                assert_eq!(
                    (error, code),
                    (ProtocolError::InvalidUtf8, 1007),
                    "{bytes:x?}"
                );
            }
        }
    }

    /// Fail fast (Autobahn 6.4.x): the bad bytes are judged as soon as they arrive, before the
    /// rest of the frame.
    #[test]
    fn invalid_prefix_fails_before_the_rest_of_the_frame_arrives() {
        for role in ROLES {
            let mut payload = vec![0xf4, 0x90, 0x80, 0x80];
            payload.resize(100, b'a');
            let bytes = frame_to(role, true, op::TEXT, &payload);
            let header_len = bytes.len() - 100;
            let mut conn = conn(role);
            assert_eq!(feed(&mut conn, &bytes[..header_len]), Outcome::default());
            conn.recv_buf()
                .extend_from_slice(&bytes[header_len..header_len + 3]);
            assert_eq!(conn.next_event(), Err(ProtocolError::InvalidUtf8));
            assert_eq!(assert_failed(&mut conn), 1007);
        }
    }

    #[test]
    fn invalid_bytes_in_a_later_fragment_fail_before_it_completes() {
        let mut server = conn(Role::Server);
        let first = frame(false, 0, op::TEXT, Some(KEY), "κόσμε".as_bytes());
        assert_eq!(feed(&mut server, &first), Outcome::default());
        let mut payload = b"ok".to_vec();
        payload.extend_from_slice(&[0xed, 0xa0, 0x80]);
        payload.resize(1000, b'z');
        let second = frame(true, 0, op::CONT, Some(KEY), &payload);
        // Header (4 + 4 bytes) + "ok" + ED: not yet decidable.
        assert_eq!(feed(&mut server, &second[..8 + 3]), Outcome::default());
        // + A0: ED A0 is a surrogate prefix, invalid.
        assert_eq!(
            feed(&mut server, &second[11..12]).err(),
            ProtocolError::InvalidUtf8
        );
        assert_eq!(assert_failed(&mut server), 1007);
    }

    /// 5.6: "a particular text frame might include a partial UTF-8 sequence; however, the whole
    /// message MUST contain valid UTF-8."
    #[test]
    fn code_point_split_across_fragments_is_valid() {
        let euro = "€".as_bytes(); // E2 82 AC
        let clef = "𝄞".as_bytes(); // F0 9D 84 9E
        for role in ROLES {
            let bytes = concat(&[
                frame_to(role, false, op::TEXT, &euro[..1]),
                frame_to(role, false, op::CONT, &euro[1..]),
                frame_to(role, true, op::PING, b""),
                frame_to(role, false, op::CONT, &clef[..1]),
                frame_to(role, false, op::CONT, &clef[1..2]),
                frame_to(role, false, op::CONT, &[]),
                frame_to(role, true, op::CONT, &clef[2..]),
            ]);
            for chunk in [1, bytes.len()] {
                let mut conn = conn(role);
                let outcome = feed_chunked(&mut conn, &bytes, chunk);
                assert_eq!(outcome.events, vec![ping(b""), text("€𝄞")]);
                assert_eq!(outcome.error, None);
            }
        }
    }

    #[test]
    fn message_ending_inside_a_code_point_fails_with_1007() {
        for role in ROLES {
            let single = frame_to(role, true, op::TEXT, &[b'a', 0xe2, 0x82]);
            assert_eq!(failure(role, &single), (ProtocolError::InvalidUtf8, 1007));
            let fragmented = concat(&[
                frame_to(role, false, op::TEXT, &[b'a', 0xf0]),
                frame_to(role, true, op::CONT, &[0x9d, 0x84]),
            ]);
            assert_eq!(
                failure(role, &fragmented),
                (ProtocolError::InvalidUtf8, 1007)
            );
        }
    }

    #[test]
    fn fragments_mode_still_validates_the_whole_message() {
        let config = Config::default().receive_mode(ReceiveMode::Fragments);
        let bytes = concat(&[
            frame(false, 0, op::TEXT, Some(KEY), &[b'a', 0xe2]),
            frame(true, 0, op::CONT, Some(KEY), &[0x82]),
        ]);
        let (events, error, code) = failure_after(Role::Server, config, &bytes);
        // The first fragment may legitimately end inside a code point ...
        assert_eq!(events.len(), 1);
        assert!(matches!(&events[0], Event::Fragment(f) if f.kind == DataKind::Text));
        // ... but the message as a whole may not.
        assert_eq!((error, code), (ProtocolError::InvalidUtf8, 1007));
    }

    /// Short ASCII pieces skip the validator, but only at a code point boundary: ASCII that
    /// follows a cut-open code point is invalid (a lead byte wants continuation bytes).
    #[test]
    fn ascii_after_a_cut_code_point_fails_in_every_split() {
        for role in ROLES {
            // E2 "ab" 82 AC: the ASCII must not be skipped, or E2 82 AC would pass as "€".
            let bytes = concat(&[
                frame_to(role, false, op::TEXT, &[b'o', b'k', 0xe2]),
                frame_to(role, false, op::CONT, b"ab"),
                frame_to(role, true, op::CONT, &[0x82, 0xac]),
            ]);
            for chunk in [1, 2, 5, bytes.len()] {
                let mut conn = conn(role);
                let outcome = feed_chunked(&mut conn, &bytes, chunk);
                assert_eq!(
                    outcome.error,
                    Some(ProtocolError::InvalidUtf8),
                    "chunk {chunk}"
                );
            }
            // The same ASCII after a complete code point is fine.
            let good = concat(&[
                frame_to(role, false, op::TEXT, "ok€".as_bytes()),
                frame_to(role, true, op::CONT, b"plain ascii"),
            ]);
            let mut conn = conn(role);
            assert_eq!(
                feed_chunked(&mut conn, &good, 3).events,
                vec![text("ok€plain ascii")]
            );
        }
    }

    /// Binary messages are not UTF-8 and are not checked.
    #[test]
    fn binary_is_not_validated() {
        for role in ROLES {
            let bytes = frame_to(role, true, op::BINARY, &[0xff, 0xed, 0xa0, 0x80]);
            let mut conn = conn(role);
            assert_eq!(
                feed(&mut conn, &bytes).events,
                vec![binary(&[0xff, 0xed, 0xa0, 0x80])]
            );
        }
    }

    /// A text message's `Utf8Bytes` is exactly what was sent.
    #[test]
    fn received_text_equals_the_sent_string() {
        let sent = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞 € \u{10FFFF} \u{0}";
        let mut pair = Pair::new();
        pair.client.send(Message::text(sent)).unwrap();
        pair.server.send(Message::text(sent.repeat(20))).unwrap();
        let at_server = pair.client_to_server_chunked(1);
        let at_client = pair.server_to_client_chunked(7);
        for (outcome, expected) in [(at_server, sent.to_string()), (at_client, sent.repeat(20))] {
            let Event::Message(Message::Text(text)) = &outcome.events[0] else {
                panic!("{outcome:?}");
            };
            assert_eq!(text.as_str(), expected);
            assert_eq!(&text.as_bytes()[..], expected.as_bytes());
        }
    }
}

/// 10.4: "Implementations that have implementation- and/or platform-specific limitations
/// regarding the frame size or total message size after reassembly from multiple frames MUST
/// protect themselves against exceeding those limits." 7.4.1, 1009: "a message that is too big
/// for it to process".
mod limits {
    use super::*;
    use fullduplex_proto::ReceiveMode;

    #[test]
    fn huge_announced_frame_fails_with_1009_without_buffering() {
        for role in ROLES {
            let mut conn = Connection::new(role, Config::default().max_frame_size(1024));
            let mask = (role == Role::Server).then_some(KEY);
            let head = header(true, 0, op::BINARY, mask, 1 << 62);
            conn.recv_buf().extend_from_slice(&head);
            let capacity = conn.recv_buf().capacity();
            assert!(capacity < 1024, "capacity {capacity}");
            assert_eq!(
                conn.next_event(),
                Err(ProtocolError::FrameTooLarge {
                    size: 1 << 62,
                    limit: 1024
                })
            );
            assert_eq!(conn.recv_buf().capacity(), capacity, "the buffer grew");
            assert!(conn.read_hint() <= 1024);
            assert_eq!(assert_failed(&mut conn), 1009);
            // More bytes of the "frame" arrive: they are not parsed.
            conn.recv_buf().extend_from_slice(&[0u8; 100]);
            assert_eq!(conn.next_event(), Ok(None));
        }
    }

    /// The default limit protects too: 2^62 bytes are never waited for.
    #[test]
    fn huge_announced_frame_fails_with_the_default_limits() {
        let head = header(true, 0, op::TEXT, Some(KEY), 1 << 62);
        let (error, code) = failure(Role::Server, &head);
        assert_eq!(
            error,
            ProtocolError::FrameTooLarge {
                size: 1 << 62,
                limit: 16 << 20
            }
        );
        assert_eq!(code, 1009);
    }

    /// The default message limit is 1 MiB (RELIABILITY.md): a message of exactly 1 MiB
    /// passes, one byte more fails with 1009 at its header, before any payload arrives.
    #[test]
    fn the_default_message_limit_is_1_mib() {
        assert_eq!(Config::default().max_message_size, 1 << 20);
        let payload = vec![7u8; 1 << 20];
        let mut server = conn(Role::Server);
        let outcome = feed(&mut server, &client_frame(op::BINARY, &payload));
        assert_eq!(outcome.events, vec![binary(&payload)]);
        let head = header(true, 0, op::BINARY, Some(KEY), (1 << 20) + 1);
        let (error, code) = failure(Role::Server, &head);
        assert_eq!(error, ProtocolError::MessageTooLarge { limit: 1 << 20 });
        assert_eq!(code, 1009);
    }

    #[test]
    fn frame_at_the_limit_passes_and_one_byte_more_fails_at_the_header() {
        let config = Config::default().max_frame_size(300);
        let mut server = Connection::new(Role::Server, config.clone());
        let payload = pattern(300);
        assert_eq!(
            feed(&mut server, &client_frame(op::BINARY, &payload)).events,
            vec![binary(&payload)]
        );
        let mut server = Connection::new(Role::Server, config);
        let head = header(true, 0, op::BINARY, Some(KEY), 301);
        let outcome = feed(&mut server, &head);
        assert_eq!(
            outcome.err(),
            ProtocolError::FrameTooLarge {
                size: 301,
                limit: 300
            }
        );
        assert_eq!(assert_failed(&mut server), 1009);
    }

    #[test]
    fn message_limit_is_enforced_across_fragments_at_the_offending_header() {
        for mode in [ReceiveMode::Messages, ReceiveMode::Fragments] {
            let config = Config::default().max_message_size(10).receive_mode(mode);
            let mut server = Connection::new(Role::Server, config);
            let first_two = concat(&[
                frame(false, 0, op::TEXT, Some(KEY), b"abcd"),
                frame(true, 0, op::PING, Some(KEY), &pattern(100)),
                frame(false, 0, op::CONT, Some(KEY), b"efgh"),
            ]);
            let delivered = feed(&mut server, &first_two);
            assert_eq!(delivered.error, None);
            assert_eq!(
                delivered.events.len(),
                if mode == ReceiveMode::Fragments { 3 } else { 1 }
            );
            // Only the header of the frame that would make 11 bytes.
            let head = header(true, 0, op::CONT, Some(KEY), 3);
            let outcome = feed(&mut server, &head);
            assert_eq!(outcome.err(), ProtocolError::MessageTooLarge { limit: 10 });
            assert_eq!(assert_failed(&mut server), 1009);
        }
    }

    #[test]
    fn message_exactly_at_the_limit_is_accepted() {
        let config = Config::default().max_message_size(10);
        let mut server = Connection::new(Role::Server, config.clone());
        let bytes = concat(&[
            frame(false, 0, op::TEXT, Some(KEY), b"abcd"),
            frame(false, 0, op::CONT, Some(KEY), b"efgh"),
            frame(true, 0, op::CONT, Some(KEY), b"ij"),
            // The count starts over with the next message.
            frame(true, 0, op::BINARY, Some(KEY), b"0123456789"),
        ]);
        let outcome = feed(&mut server, &bytes);
        assert_eq!(
            outcome.events,
            vec![text("abcdefghij"), binary(b"0123456789")]
        );
        assert_eq!(outcome.error, None);
        // A single frame over the message limit (but under the frame limit) fails.
        let mut server = Connection::new(Role::Server, config);
        let outcome = feed(&mut server, &client_frame(op::BINARY, b"0123456789a"));
        assert_eq!(outcome.err(), ProtocolError::MessageTooLarge { limit: 10 });
    }

    /// Control frames are bounded by 125 bytes, not by the data limits, and do not count
    /// towards the message they interrupt.
    #[test]
    fn control_frames_do_not_count_towards_the_message_limit() {
        let config = Config::default().max_message_size(4).max_frame_size(4);
        let mut server = Connection::new(Role::Server, config);
        let bytes = concat(&[
            frame(false, 0, op::BINARY, Some(KEY), b"ab"),
            frame(true, 0, op::PING, Some(KEY), &pattern(125)),
            frame(true, 0, op::CONT, Some(KEY), b"cd"),
        ]);
        let outcome = feed(&mut server, &bytes);
        assert_eq!(outcome.events, vec![ping(&pattern(125)), binary(b"abcd")]);
    }

    #[test]
    fn receive_buffer_holds_no_more_than_what_arrived() {
        let mut server = Connection::new(Role::Server, Config::default().max_frame_size(1 << 20));
        let head = header(true, 0, op::BINARY, Some(KEY), 1 << 20);
        assert_eq!(feed(&mut server, &head), Outcome::default());
        // A frame longer than LARGE_FRAME is read a LARGE_FRAME at a time.
        assert_eq!(server.read_hint(), LARGE_FRAME);
        assert!(server.recv_buf().capacity() < 4096);
        // A shorter one is read whole.
        let mut server = conn(Role::Server);
        let head = header(true, 0, op::BINARY, Some(KEY), LARGE_FRAME as u64);
        assert_eq!(feed(&mut server, &head), Outcome::default());
        assert_eq!(server.read_hint(), LARGE_FRAME);
    }
}

/// `LARGE_FRAME`: a data frame longer than it is joined into its message piece by piece as the
/// bytes arrive, so the receive buffer stays small; the events are the same as for any other
/// frame, checked (masking, UTF-8, limits) the same way.
mod large_frames {
    use super::*;

    /// Feeds `bytes` in reads of `step` bytes, the way a shell does, and checks after each
    /// that the receive buffer holds no more than one read plus an unfinished header (until
    /// the connection fails: then nothing is parsed any more).
    fn feed_in_reads(conn: &mut Connection, bytes: &[u8], step: usize) -> Outcome {
        let mut outcome = Outcome::default();
        for chunk in bytes.chunks(step) {
            conn.recv_buf().extend_from_slice(chunk);
            outcome.absorb(drain(conn));
            assert!(
                outcome.error.is_some() || conn.recv_buf().len() < step + 14,
                "the receive buffer kept {} bytes",
                conn.recv_buf().len()
            );
        }
        outcome
    }

    #[test]
    fn a_large_frame_arriving_in_reads_is_joined_and_leaves_the_buffer() {
        for len in [LARGE_FRAME + 1, 1 << 20, (3 << 20) + 7] {
            let payload = pattern(len);
            // Above the default message limit (1 MiB).
            let config = Config::default().max_message_size(4 << 20);
            let mut server = Connection::new(Role::Server, config.clone());
            let bytes = client_frame(op::BINARY, &payload);
            let outcome = feed_in_reads(&mut server, &bytes, 64 << 10);
            assert_eq!(outcome.events, vec![binary(&payload)], "{len} bytes");
            assert_eq!(outcome.error, None);
            // The client role (unmasked frames) too.
            let mut client = Connection::new(Role::Client, config);
            let bytes = server_frame(op::BINARY, &payload);
            assert_eq!(
                feed_in_reads(&mut client, &bytes, 100_000).events,
                vec![binary(&payload)]
            );
        }
    }

    #[test]
    fn large_text_is_validated_across_pieces() {
        // Three-byte code points cut at every read boundary (reads of 1000 bytes).
        let text = "€".repeat(LARGE_FRAME / 3 + 1000);
        let mut server = conn(Role::Server);
        let outcome = feed_in_reads(&mut server, &client_frame(op::TEXT, text.as_bytes()), 1000);
        assert_eq!(outcome.events, vec![super::text(&text)]);
        // An invalid byte far into the frame fails the connection with 1007 before the frame
        // has fully arrived.
        let mut bad = text.clone().into_bytes();
        let at = LARGE_FRAME + 10;
        bad[at] = 0xff;
        let bytes = client_frame(op::TEXT, &bad);
        let mut server = conn(Role::Server);
        let outcome = feed_in_reads(&mut server, &bytes[..at + 2000], 1000);
        assert_eq!(outcome.err(), ProtocolError::InvalidUtf8);
        assert_eq!(
            close_frames(&take_frames(&mut server))[0].close_code(),
            Some(1007)
        );
    }

    #[test]
    fn large_frames_in_a_fragmented_message_with_a_ping_between() {
        let payload = pattern(3 * LARGE_FRAME);
        let bytes = concat(&[
            frame(false, 0, op::BINARY, Some(KEY), &payload[..LARGE_FRAME + 5]),
            frame(true, 0, op::PING, Some(KEY), b"p"),
            frame(
                false,
                0,
                op::CONT,
                Some(KEY),
                &payload[LARGE_FRAME + 5..LARGE_FRAME + 9],
            ),
            frame(true, 0, op::CONT, Some(KEY), &payload[LARGE_FRAME + 9..]),
        ]);
        let mut server = conn(Role::Server);
        let outcome = feed_in_reads(&mut server, &bytes, 50_000);
        assert_eq!(outcome.events, vec![ping(b"p"), binary(&payload)]);
        // Any split gives the same events.
        for step in [1 << 20, 4096, 777] {
            let mut server = conn(Role::Server);
            assert_eq!(
                feed_chunked(&mut server, &bytes, step).events,
                vec![ping(b"p"), binary(&payload)]
            );
        }
    }

    #[test]
    fn a_large_frame_whole_in_the_buffer_is_not_copied() {
        let payload = pattern(LARGE_FRAME * 2);
        let bytes = client_frame(op::BINARY, &payload);
        let mut server = conn(Role::Server);
        server.recv_buf().extend_from_slice(&bytes);
        let base = server.recv_buf().as_ptr() as usize;
        let Some(Event::Message(Message::Binary(got))) = server.next_event().unwrap() else {
            panic!("no message");
        };
        assert_eq!(&got[..], &payload[..]);
        assert_eq!(got.as_ptr() as usize, base + bytes.len() - payload.len());
    }

    #[test]
    fn the_message_limit_holds_for_large_frames() {
        let config = Config::default()
            .max_frame_size(4 << 20)
            .max_message_size(LARGE_FRAME * 2);
        let mut server = Connection::new(Role::Server, config);
        let bytes = concat(&[
            frame(false, 0, op::BINARY, Some(KEY), &pattern(LARGE_FRAME + 1)),
            header(true, 0, op::CONT, Some(KEY), LARGE_FRAME as u64),
        ]);
        let outcome = feed_in_reads(&mut server, &bytes, 10_000);
        assert_eq!(
            outcome.err(),
            ProtocolError::MessageTooLarge {
                limit: LARGE_FRAME * 2
            }
        );
    }
}

/// "Receive is zero-copy: payloads are `split_to(len).freeze()` slices of the receive buffer,
/// unmasked in place. Send does not copy server payloads." (ARCHITECTURE.md)
mod zero_copy {
    use super::*;
    use bytes::{Buf, Bytes};
    use fullduplex_proto::out::COPY_THRESHOLD;

    /// Fills a fresh receive buffer with `bytes` without reallocating and returns its base
    /// address and capacity.
    fn fill(conn: &mut Connection, bytes: &[u8]) -> (usize, usize) {
        let buf = conn.recv_buf();
        assert!(buf.is_empty());
        buf.reserve(bytes.len());
        let base = buf.as_ptr() as usize;
        let capacity = buf.capacity();
        buf.extend_from_slice(bytes);
        assert_eq!(buf.as_ptr() as usize, base, "reallocated while filling");
        (base, capacity)
    }

    #[test]
    fn received_payload_is_a_slice_of_the_receive_buffer() {
        for role in ROLES {
            for (len, opcode) in [(65536usize, op::BINARY), (300, op::TEXT), (10, op::BINARY)] {
                let payload = vec![b'x'; len];
                let bytes = frame_to(role, true, opcode, &payload);
                let header_len = bytes.len() - len;
                let mut conn = conn(role);
                let (base, capacity) = fill(&mut conn, &bytes);
                let event = conn.next_event().unwrap().unwrap();
                let got: Bytes = match event {
                    Event::Message(Message::Binary(b)) => b,
                    Event::Message(Message::Text(t)) => t.into_bytes(),
                    other => panic!("{other:?}"),
                };
                assert_eq!(&got[..], &payload[..]);
                let ptr = got.as_ptr() as usize;
                assert!(
                    (base..base + capacity).contains(&ptr),
                    "{role:?} {len}: payload copied out of the receive buffer"
                );
                assert_eq!(
                    ptr,
                    base + header_len,
                    "payload does not start after the header"
                );
            }
        }
    }

    #[test]
    fn received_control_payload_is_a_slice_of_the_receive_buffer() {
        let mut server = conn(Role::Server);
        let bytes = client_frame(op::PING, b"ping data");
        let (base, _) = fill(&mut server, &bytes);
        let Some(Event::Message(Message::Ping(data))) = server.next_event().unwrap() else {
            panic!();
        };
        assert_eq!(data.as_ptr() as usize, base + 6);
    }

    fn queued_slices(conn: &mut Connection) -> Vec<(usize, usize)> {
        let mut slices = [std::io::IoSlice::new(&[]); 64];
        let out = conn.output();
        let n = out.chunks_vectored(&mut slices);
        slices[..n]
            .iter()
            .map(|s| (s.as_ptr() as usize, s.len()))
            .collect()
    }

    #[test]
    fn server_queues_large_payloads_without_copying() {
        let mut server = conn(Role::Server);
        let binary = Bytes::from(pattern(COPY_THRESHOLD));
        let text = Bytes::from("é".repeat(COPY_THRESHOLD / 2 + 50));
        server.send(Message::Binary(binary.clone())).unwrap();
        server
            .send(Message::Text(text.clone().try_into().unwrap()))
            .unwrap();
        let slices = queued_slices(&mut server);
        for payload in [&binary, &text] {
            assert!(
                slices.contains(&(payload.as_ptr() as usize, payload.len())),
                "payload of {} bytes was copied: {slices:?}",
                payload.len()
            );
        }
        // And the queue is still the right byte stream.
        let frames = take_frames(&mut server);
        assert_eq!(frames[0].payload, &binary[..]);
        assert_eq!(frames[1].payload, &text[..]);
    }

    /// A borrowed echo (`next_event_with` and the outbox) queues a large message, or a part of
    /// it, by reference to the received bytes, and copies a small one.
    #[test]
    fn borrowed_large_messages_are_echoed_without_copying() {
        use fullduplex_proto::{EventRef, MessageRef};
        let large = pattern(COPY_THRESHOLD);
        let text = "é".repeat(COPY_THRESHOLD / 2 + 50);
        let mut stream = client_frame(op::BINARY, &large);
        stream.extend(client_frame(op::TEXT, text.as_bytes()));
        let larger = pattern(COPY_THRESHOLD + 10);
        stream.extend(client_frame(op::BINARY, &larger));
        stream.extend(client_frame(op::BINARY, b"small"));
        let mut server = conn(Role::Server);
        fill(&mut server, &stream);
        let mut lent = Vec::new();
        for part in [false, false, true, false] {
            let echoed = server.next_event_with(|event, out| {
                let EventRef::Message(message) = event else {
                    panic!("{event:?}")
                };
                lent.push((message.payload().as_ptr() as usize, message.payload().len()));
                match message {
                    // A part of the message, from its second byte.
                    MessageRef::Binary(data) if part => out.send_binary(&data[1..]),
                    message => out.send_ref(message),
                }
            });
            assert_eq!(echoed, Ok(Some(Ok(()))));
        }
        let slices = queued_slices(&mut server);
        assert!(slices.contains(&lent[0]), "{lent:?} {slices:?}");
        assert!(slices.contains(&lent[1]), "{lent:?} {slices:?}");
        let (start, len) = lent[2];
        assert!(
            slices.contains(&(start + 1, len - 1)),
            "{lent:?} {slices:?}"
        );
        assert!(!slices.iter().any(|&(ptr, _)| ptr == lent[3].0));
        let frames = take_frames(&mut server);
        assert_eq!(frames[0].payload, &large[..]);
        assert_eq!(frames[1].payload, text.as_bytes());
        assert_eq!(frames[2].payload, &larger[1..]);
        assert_eq!(frames[3].payload, b"small");
    }

    /// `COPY_THRESHOLD`: "shorter ones are copied next to their header ... it lets many small
    /// frames leave in one contiguous write."
    #[test]
    fn small_frames_are_coalesced_into_one_slice() {
        let mut server = conn(Role::Server);
        for i in 0..10u8 {
            server.send(Message::binary(vec![i; 20])).unwrap();
        }
        assert_eq!(queued_slices(&mut server).len(), 1);
        assert_eq!(server.output().chunk().len(), 10 * 22);
    }

    #[test]
    fn pre_encoded_frames_are_queued_without_copying() {
        let encoded =
            fullduplex_proto::connection::encode_server_message(&Message::binary(pattern(1000)));
        let mut server = conn(Role::Server);
        server.send_encoded(encoded.clone()).unwrap();
        assert_eq!(
            queued_slices(&mut server),
            vec![(encoded.as_ptr() as usize, encoded.len())]
        );
    }

    /// Partial writes through the `Buf` interface keep the stream intact.
    #[test]
    fn output_survives_partial_writes() {
        let mut pair = Pair::new();
        pair.server.send(Message::binary(pattern(1000))).unwrap();
        pair.server.send(Message::text("small")).unwrap();
        pair.server.send(Message::binary(pattern(300))).unwrap();
        let outcome = pair.server_to_client_chunked(7);
        assert_eq!(
            outcome.events,
            vec![binary(&pattern(1000)), text("small"), binary(&pattern(300))]
        );
    }
}

/// Encode once, send to many: `encode_server_message` and `send_encoded`.
mod encoded {
    use super::*;
    use fullduplex_proto::connection::encode_server_message;

    #[test]
    fn client_decodes_what_the_server_encoded_once() {
        let messages = vec![
            Message::text("news"),
            Message::binary(pattern(70_000)),
            Message::text(""),
            Message::Ping("p".into()),
            Message::Pong("q".into()),
        ];
        let encoded: Vec<bytes::Bytes> = messages.iter().map(encode_server_message).collect();
        for _subscriber in 0..3 {
            let mut pair = Pair::new();
            for frame in &encoded {
                pair.server.send_encoded(frame.clone()).unwrap();
            }
            let outcome = pair.server_to_client_chunked(1000);
            let got = outcome.ok_messages();
            assert_eq!(got, messages);
        }
    }

    #[test]
    fn encoded_close_is_a_close_frame() {
        let close_msg = Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "restart")));
        let frame = encode_server_message(&close_msg);
        let mut client = conn(Role::Client);
        assert_eq!(
            feed(&mut client, &frame).events,
            vec![close(1001, "restart")]
        );
        // RFC bytes: 0x88, length 9, 0x03e9, "restart".
        assert_eq!(&frame[..4], &[0x88, 9, 0x03, 0xe9]);
    }

    #[test]
    fn encoded_bytes_are_one_unmasked_minimal_frame() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let frame = encode_server_message(&Message::binary(pattern(len)));
            let frames = parse_frames(&frame);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].mask, None);
            assert_eq!(frames[0].opcode, op::BINARY);
            assert!(frames[0].fin);
            assert_eq!(frames[0].payload, pattern(len));
        }
    }

    #[test]
    fn clients_cannot_send_encoded_frames() {
        let mut client = conn(Role::Client);
        let frame = encode_server_message(&Message::text("x"));
        assert_eq!(
            client.send_encoded(frame),
            Err(SendError::EncodedFrameFromClient)
        );
        assert_eq!(client.output_len(), 0);
    }

    #[test]
    fn encoded_frames_interleave_with_ordinary_sends() {
        let mut pair = Pair::new();
        pair.server.send(Message::text("one")).unwrap();
        pair.server
            .send_encoded(encode_server_message(&Message::text("two")))
            .unwrap();
        pair.server.send(Message::text("three")).unwrap();
        assert_eq!(
            pair.server_to_client().events,
            vec![text("one"), text("two"), text("three")]
        );
    }
}

/// The `Pair` itself: both directions at once, across partial reads.
mod pair {
    use super::*;

    #[test]
    fn conversation_in_both_directions_at_every_chunk_size() {
        for chunk in [1, 2, 3, 13, 1000, usize::MAX] {
            let mut pair = Pair::new();
            pair.client.send(Message::text("hello")).unwrap();
            pair.client
                .send(Message::Ping("are you there".into()))
                .unwrap();
            pair.client.send(Message::binary(pattern(5000))).unwrap();
            let at_server = pair.client_to_server_chunked(chunk);
            assert_eq!(
                at_server.events,
                vec![
                    text("hello"),
                    ping(b"are you there"),
                    binary(&pattern(5000))
                ]
            );
            pair.server.send(Message::text("hi")).unwrap();
            let at_client = pair.server_to_client_chunked(chunk);
            // The automatic pong went out before "hi".
            assert_eq!(at_client.events, vec![pong(b"are you there"), text("hi")]);
        }
    }
}
