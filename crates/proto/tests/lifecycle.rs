//! What the core decides for its shell, in memory and without a runtime: failing the
//! connection on the application's or the shell's behalf ([`Connection::fail`]), what a
//! shell's expired timer means ([`Connection::on_timeout`]), and when the shell closes the
//! transport ([`Connection::transport`]).
//!
//! RFC 6455 section 7.1.7: "_Fail the WebSocket Connection_ ... the endpoint MUST NOT continue
//! to attempt to process data (including a responding Close frame) from the remote endpoint".

mod support;

use fullduplex_proto::{
    CloseCode, Config, Connection, DataKind, Message, ProtocolError, Role, SendError, State,
    Timeout, TransportAction,
};
use support::*;

mod fail {
    use super::*;

    /// `fail` queues one close frame with the code and reason, moves the state to Closed and
    /// refuses further sends, for either role.
    #[test]
    fn queues_the_close_frame_and_closes() {
        for role in ROLES {
            let mut conn = conn(role);
            conn.send(Message::text("before")).unwrap();
            conn.fail(CloseCode::POLICY_VIOLATION, "not allowed")
                .unwrap();
            assert_eq!(conn.state(), State::Closed);
            assert!(conn.is_close_sent());
            assert_eq!(conn.send(Message::text("after")), Err(SendError::Closed));
            let frames = take_frames(&mut conn);
            assert_eq!(frames.len(), 2, "the message queued before, then the close");
            assert_eq!(frames[0].payload, b"before");
            assert_eq!(frames[1].close_code(), Some(1008));
            assert_eq!(frames[1].close_reason(), b"not allowed");
        }
    }

    /// "MUST NOT continue to attempt to process data (including a responding Close frame)":
    /// after `fail`, input yields nothing, queues no pong and no close echo.
    #[test]
    fn stops_processing_input() {
        for role in ROLES {
            let mut conn = conn(role);
            // Half a message in progress, and its rest with a ping and a close after.
            let buffered = frame_to(role, false, op::TEXT, b"half");
            assert_eq!(feed(&mut conn, &buffered), Outcome::default());
            conn.fail(CloseCode::INTERNAL_ERROR, "").unwrap();
            let more = concat(&[
                frame_to(role, true, op::CONT, b" done"),
                frame_to(role, true, op::PING, b"p"),
                frame_to(role, true, op::CLOSE, &close_payload(1000, b"")),
                vec![0xff, 0xff],
            ]);
            assert_eq!(feed(&mut conn, &more), Outcome::default());
            conn.recv_eof();
            assert_eq!(conn.next_event(), Ok(None), "not even an unexpected EOF");
            assert_eq!(conn.next_event_with(|_, _| ()), Ok(None));
            let frames = take_frames(&mut conn);
            assert_eq!(frames.len(), 1, "only our close: no pong, no echo");
            assert_eq!(frames[0].close_code(), Some(1011));
            assert!(!conn.is_close_received());
        }
    }

    /// While our own close is in flight (Closing) `fail` sends no second close frame, and
    /// after a finished close handshake or an earlier failure it changes nothing.
    #[test]
    fn sends_at_most_one_close_frame() {
        let mut closing = conn(Role::Server);
        closing.close(None).unwrap();
        assert_eq!(closing.state(), State::Closing);
        closing.fail(CloseCode::GOING_AWAY, "bye").unwrap();
        assert_eq!(closing.state(), State::Closed);
        let frames = take_frames(&mut closing);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].close_code(), None);

        let mut pair = Pair::new();
        pair.client.close(None).unwrap();
        pair.client_to_server().ok_messages();
        pair.server_to_client().ok_messages();
        assert_eq!(pair.server.state(), State::Closed);
        pair.server.fail(CloseCode::GOING_AWAY, "late").unwrap();
        assert_eq!(pair.server.output_len(), 0);

        let mut failed = conn(Role::Server);
        let outcome = feed(&mut failed, &server_frame(op::TEXT, b"unmasked"));
        assert_eq!(outcome.err(), ProtocolError::UnmaskedFrame);
        take_frames(&mut failed);
        failed.fail(CloseCode::GOING_AWAY, "again").unwrap();
        assert_eq!(failed.output_len(), 0);
    }

    /// A code that may not appear on the wire is refused and changes nothing.
    #[test]
    fn refuses_codes_that_may_not_be_sent() {
        let mut conn = conn(Role::Client);
        for code in [1005, 1006, 1015, 999, 5000] {
            assert_eq!(
                conn.fail(CloseCode(code), ""),
                Err(SendError::InvalidCloseCode(code))
            );
        }
        assert_eq!(conn.state(), State::Open);
        assert_eq!(conn.output_len(), 0);
        conn.send(Message::text("still open")).unwrap();
    }

    /// A fragmented message being sent is abandoned: the close frame follows its first part,
    /// and the peer sees the close (and then the end of the stream).
    #[test]
    fn the_peer_sees_the_close_after_what_was_queued() {
        let mut pair = Pair::new();
        pair.server
            .send_fragment(DataKind::Text, "part".into(), false)
            .unwrap();
        pair.server
            .fail(CloseCode::TRY_AGAIN_LATER, "slow consumer")
            .unwrap();
        let outcome = pair.server_to_client();
        // The client sees a continuation expected, gets the close instead: legal (control
        // frames may interleave), and the close is delivered.
        assert_eq!(outcome.events, vec![close(1013, "slow consumer")]);
        // The client's echo reaches a server that no longer processes input.
        assert_eq!(pair.client_to_server(), Outcome::default());
        assert_eq!(pair.client.state(), State::Closed);
    }

    /// A long reason is cut to fit a control frame, at a character boundary.
    #[test]
    fn a_long_reason_is_cut_to_fit() {
        let mut conn = conn(Role::Server);
        conn.fail(CloseCode::INTERNAL_ERROR, &"é".repeat(100))
            .unwrap();
        let frames = take_frames(&mut conn);
        assert!(frames[0].payload.len() <= 125);
        assert!(std::str::from_utf8(frames[0].close_reason()).is_ok());
    }

    /// Failing is deterministic with a seeded client: the same bytes every time.
    #[test]
    fn a_seeded_client_fails_with_the_same_bytes() {
        let run = || {
            let mut client = Connection::new(
                Role::Client,
                Config::default().mask_seed(std::num::NonZeroU32::new(7)),
            );
            client.fail(CloseCode::INTERNAL_ERROR, "x").unwrap();
            take_bytes(&mut client)
        };
        assert_eq!(run(), run());
    }
}

mod timeouts {
    use super::*;

    /// Keepalive: 1011 "Keepalive timeout"; idle: 1001 "Idle timeout"; either role; the
    /// connection is failed (no more input) and the transport aborted.
    #[test]
    fn each_timeout_fails_with_its_code() {
        for (timeout, code, reason) in [
            (Timeout::Keepalive, 1011, &b"Keepalive timeout"[..]),
            (Timeout::Idle, 1001, &b"Idle timeout"[..]),
        ] {
            for role in ROLES {
                let mut conn = conn(role);
                conn.on_timeout(timeout);
                assert_eq!(conn.state(), State::Closed, "{timeout:?} {role:?}");
                assert_eq!(conn.transport(), TransportAction::Abort);
                assert_eq!(conn.send(Message::text("x")), Err(SendError::Closed));
                let more = frame_to(role, true, op::PING, b"p");
                assert_eq!(feed(&mut conn, &more), Outcome::default());
                let frames = take_frames(&mut conn);
                assert_eq!(frames.len(), 1, "the close only, no pong");
                assert_eq!(frames[0].close_code(), Some(code));
                assert_eq!(frames[0].close_reason(), reason);
            }
        }
    }

    /// The close timeout sends nothing (a close frame is already out, or the handshake is
    /// over) and drops what is still queued: the transport is aborted and will not take it.
    #[test]
    fn the_close_timeout_drops_the_output_and_aborts() {
        for role in ROLES {
            let mut conn = conn(role);
            conn.send(Message::binary(vec![1u8; 10_000])).unwrap();
            conn.close(None).unwrap();
            assert_eq!(conn.transport(), TransportAction::Open);
            conn.on_timeout(Timeout::CloseHandshake);
            assert_eq!(conn.state(), State::Closed);
            assert_eq!(conn.transport(), TransportAction::Abort);
            assert_eq!(conn.output_len(), 0);
            assert_eq!(
                feed(&mut conn, &frame_to(role, true, op::CLOSE, b"")),
                Outcome::default()
            );
            assert!(!conn.is_close_received());
        }
    }

    /// A held-back pong (output backed up) is dropped with the rest by the close timeout.
    #[test]
    fn the_close_timeout_drops_a_held_back_pong() {
        let mut server = conn(Role::Server);
        server.send(Message::binary(vec![0u8; 20 << 10])).unwrap();
        feed(&mut server, &client_frame(op::PING, b"p"));
        assert!(server.output_len() > 20 << 10);
        server.on_timeout(Timeout::CloseHandshake);
        assert_eq!(server.output_len(), 0);
        assert_eq!(take_bytes(&mut server), b"");
    }

    /// A keepalive or idle timeout while our close is in flight, or after the close handshake,
    /// queues no second close frame; the transport is aborted either way.
    #[test]
    fn no_second_close_frame() {
        for timeout in [Timeout::Keepalive, Timeout::Idle] {
            let mut closing = conn(Role::Client);
            closing.close(None).unwrap();
            closing.on_timeout(timeout);
            let frames = take_frames(&mut closing);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].close_code(), None);
            assert_eq!(closing.transport(), TransportAction::Abort);

            let mut pair = Pair::new();
            pair.server.close(None).unwrap();
            pair.server_to_client().ok_messages();
            assert_eq!(pair.client.state(), State::Closed);
            take_frames(&mut pair.client);
            pair.client.on_timeout(timeout);
            assert_eq!(pair.client.output_len(), 0);
            assert_eq!(pair.client.transport(), TransportAction::Abort);
        }
    }
}

/// 7.1.1: "The underlying TCP connection, in most normal cases, SHOULD be closed first by the
/// server, so that it holds the TIME_WAIT state and not the client". 7.1.1 also: "the client
/// SHOULD wait for the server to close the connection but MAY close the connection at any time
/// after sending and receiving a Close message, e.g., if it has not received a TCP Close from
/// the server in a reasonable time period" (that period is the shell's close timeout,
/// reported as `Timeout::CloseHandshake`).
mod transport {
    use super::*;

    fn actions(pair: &Pair) -> (TransportAction, TransportAction) {
        (pair.client.transport(), pair.server.transport())
    }

    use TransportAction::{Abort, AwaitClose, Close, Open};

    /// The client closes first: both stay open until the server has the client's close; the
    /// server then closes the transport at once, and the client waits for that.
    #[test]
    fn client_closes_first() {
        let mut pair = Pair::new();
        assert_eq!(actions(&pair), (Open, Open));
        pair.client.close(None).unwrap();
        assert_eq!(actions(&pair), (Open, Open));
        pair.client_to_server().ok_messages();
        assert_eq!(pair.server.state(), State::Closed);
        assert_eq!(actions(&pair), (Open, Close), "the server closes TCP first");
        pair.server_to_client().ok_messages();
        assert_eq!(
            actions(&pair),
            (AwaitClose, Close),
            "the client waits for it"
        );
        pair.client.recv_eof();
        assert_eq!(
            pair.client.next_event(),
            Ok(None),
            "not an error after the handshake"
        );
        assert_eq!(actions(&pair), (Close, Close));
    }

    /// The server closes first: it keeps the transport open until the client's echo; the
    /// client, closed as soon as it has the server's close, still waits for the server's TCP
    /// close.
    #[test]
    fn server_closes_first() {
        let mut pair = Pair::new();
        pair.server.close(None).unwrap();
        pair.server_to_client().ok_messages();
        assert_eq!(pair.client.state(), State::Closed);
        assert_eq!(actions(&pair), (AwaitClose, Open));
        pair.client_to_server().ok_messages();
        assert_eq!(actions(&pair), (AwaitClose, Close));
        pair.client.recv_eof();
        assert_eq!(actions(&pair), (Close, Close));
    }

    /// Both close at the same time: each receives the other's close; the same rule.
    #[test]
    fn both_close_at_once() {
        let mut pair = Pair::new();
        pair.client.close(None).unwrap();
        pair.server.close(None).unwrap();
        pair.client_to_server().ok_messages();
        pair.server_to_client().ok_messages();
        assert_eq!(actions(&pair), (AwaitClose, Close));
    }

    /// A client that closes the transport first (against the RFC's advice) after the
    /// handshake: the server's end of stream is no error, and the server closes its end.
    #[test]
    fn the_client_hangs_up_first_after_the_handshake() {
        let mut pair = Pair::new();
        pair.client.close(None).unwrap();
        pair.client_to_server().ok_messages();
        pair.server.recv_eof();
        assert_eq!(pair.server.next_event(), Ok(None));
        assert_eq!(pair.server.transport(), Close);
    }

    /// A failure (the peer's protocol error, or `fail`): the server closes the transport after
    /// writing its close frame, a client writes it and waits for the server.
    #[test]
    fn after_a_failure_the_server_closes_and_the_client_waits() {
        for role in ROLES {
            let mut conn = conn(role);
            let junk = frame_to(role, true, 0x3, b"");
            assert!(matches!(
                feed(&mut conn, &junk).err(),
                ProtocolError::Frame(_)
            ));
            let expected = if role == Role::Server {
                Close
            } else {
                AwaitClose
            };
            assert_eq!(conn.transport(), expected, "{role:?}");
            assert_eq!(take_frames(&mut conn)[0].close_code(), Some(1002));

            let mut conn = conn_of(role);
            conn.fail(CloseCode::POLICY_VIOLATION, "").unwrap();
            assert_eq!(conn.transport(), expected, "{role:?} after fail");
            conn.recv_eof();
            assert_eq!(conn.transport(), Close);
        }
    }

    /// The peer hangs up without a close frame (1006, 7.1.5): abort, nothing more to write.
    #[test]
    fn an_unexpected_end_of_stream_aborts() {
        for role in ROLES {
            let mut conn = conn(role);
            conn.recv_eof();
            assert_eq!(
                conn.transport(),
                Open,
                "{role:?}: the event is not read yet"
            );
            assert_eq!(conn.next_event(), Err(ProtocolError::UnexpectedEof));
            assert_eq!(conn.transport(), Abort);
            // While our close is in flight too.
            let mut closing = conn_of(role);
            closing.close(None).unwrap();
            closing.recv_eof();
            assert_eq!(closing.next_event(), Err(ProtocolError::UnexpectedEof));
            assert_eq!(closing.transport(), Abort);
        }
    }

    /// A client waiting for the server's TCP close gives up after the close timeout.
    #[test]
    fn a_client_stops_waiting_at_the_close_timeout() {
        let mut pair = Pair::new();
        pair.server.close(None).unwrap();
        pair.server_to_client().ok_messages();
        assert_eq!(pair.client.transport(), AwaitClose);
        pair.client.on_timeout(Timeout::CloseHandshake);
        assert_eq!(pair.client.transport(), Abort);
        assert_eq!(
            pair.client.output_len(),
            0,
            "the echo is dropped with the transport"
        );
    }

    fn conn_of(role: Role) -> Connection {
        Connection::new(role, Config::default())
    }
}
