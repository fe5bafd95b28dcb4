//! What the core decides for its shell, in memory and without a runtime: failing the
//! connection on the application's or the shell's behalf ([`Connection::fail`]).
//!
//! RFC 6455 section 7.1.7: "_Fail the WebSocket Connection_ ... the endpoint MUST NOT continue
//! to attempt to process data (including a responding Close frame) from the remote endpoint".

mod support;

use fullduplex_proto::{
    CloseCode, Config, Connection, DataKind, Message, ProtocolError, Role, SendError, State,
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
            let mut client = Connection::new(Role::Client, Config::default().mask_seed(Some(7)));
            client.fail(CloseCode::INTERNAL_ERROR, "x").unwrap();
            take_bytes(&mut client)
        };
        assert_eq!(run(), run());
    }
}
