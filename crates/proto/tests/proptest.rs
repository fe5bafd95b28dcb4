//! Properties of the connection core:
//!
//! * (a) whatever one end sends, the other receives identically, in both directions;
//! * (b) the same byte stream gives the same events (and the same output) however it is split;
//! * (c) arbitrary and corrupted input never panics, and after an error nothing more comes out;
//! * (d) frame headers round-trip through encode and parse;
//! * (e) borrowing events ([`Connection::next_event_with`]) gives the same events, errors and
//!   output as taking them, and an echo through the outbox the same bytes as one of owned
//!   messages;
//! * (f) the [`FrameReader`] reads the same frames however the stream is split;
//! * (g) `Connection::transport` follows the state and the role for any stream;
//! * plus text validity as the receiver sees it agrees with `std::str::from_utf8`, and masking
//!   agrees with the RFC's definition.

mod support;

use fullduplex_proto::frame::{
    FrameError, FrameHeader, FrameItem, FrameReader, OpCode, MAX_HEADER_LEN,
};
use fullduplex_proto::mask::apply_mask;
use fullduplex_proto::{
    Config, Connection, DataKind, Event, Message, ProtocolError, ReceiveMode, Role,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use support::*;

// ----- (a) round trip -----

/// One thing an application sends.
#[derive(Debug, Clone)]
enum Op {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A message sent with `send_fragment`, piece by piece, with an optional ping sent after
    /// the first piece.
    Fragmented(DataKind, Vec<Vec<u8>>, Option<Vec<u8>>),
}

fn unicode(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(|chars| chars.into_iter().collect())
}

/// Cuts `bytes` at the given points (anywhere, code points included).
fn cut(bytes: &[u8], cuts: &[Index]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for point in points {
        pieces.push(bytes[start..point].to_vec());
        start = point;
    }
    pieces.push(bytes[start..].to_vec());
    pieces
}

fn control_payload() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=125)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => unicode(80).prop_map(Op::Text),
        3 => prop_oneof![vec(any::<u8>(), 0..200), vec(any::<u8>(), 200..2000)]
            .prop_map(Op::Binary),
        1 => control_payload().prop_map(Op::Ping),
        1 => control_payload().prop_map(Op::Pong),
        2 => (unicode(80), vec(any::<Index>(), 0..5), proptest::option::of(control_payload()))
            .prop_map(|(s, cuts, ping)| Op::Fragmented(DataKind::Text, cut(s.as_bytes(), &cuts), ping)),
        2 => (vec(any::<u8>(), 0..600), vec(any::<Index>(), 0..5), proptest::option::of(control_payload()))
            .prop_map(|(b, cuts, ping)| Op::Fragmented(DataKind::Binary, cut(&b, &cuts), ping)),
    ]
}

fn send(conn: &mut Connection, op: &Op) {
    match op {
        Op::Text(s) => conn.send(Message::text(s.as_str())).unwrap(),
        Op::Binary(b) => conn.send(Message::binary(b.clone())).unwrap(),
        Op::Ping(p) => conn.send(Message::Ping(p.clone().into())).unwrap(),
        Op::Pong(p) => conn.send(Message::Pong(p.clone().into())).unwrap(),
        Op::Fragmented(kind, pieces, ping) => {
            let last = pieces.len() - 1;
            for (i, piece) in pieces.iter().enumerate() {
                conn.send_fragment(*kind, piece.clone().into(), i == last)
                    .unwrap();
                if i == 0 && i != last {
                    if let Some(p) = ping {
                        conn.send(Message::Ping(p.clone().into())).unwrap();
                    }
                }
            }
        }
    }
}

/// What the receiving application should see for `ops`.
fn expected(ops: &[Op]) -> Vec<Message> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Text(s) => out.push(Message::text(s.as_str())),
            Op::Binary(b) => out.push(Message::binary(b.clone())),
            Op::Ping(p) => out.push(Message::Ping(p.clone().into())),
            Op::Pong(p) => out.push(Message::Pong(p.clone().into())),
            Op::Fragmented(kind, pieces, ping) => {
                if let (Some(p), true) = (ping, pieces.len() > 1) {
                    out.push(Message::Ping(p.clone().into()));
                }
                let whole = pieces.concat();
                out.push(match kind {
                    DataKind::Text => Message::text(String::from_utf8(whole).unwrap()),
                    DataKind::Binary => Message::binary(whole),
                });
            }
        }
    }
    out
}

/// The pongs an automatic responder owes for the pings among `ops`.
fn pongs_for(ops: &[Op]) -> Vec<Message> {
    expected(ops)
        .into_iter()
        .filter_map(|m| match m {
            Message::Ping(p) => Some(Message::Pong(p)),
            _ => None,
        })
        .collect()
}

/// Joins `ReceiveMode::Fragments` events back into messages, checking their flags.
fn reassemble(events: &[Event]) -> Result<Vec<Message>, TestCaseError> {
    let mut out = Vec::new();
    let mut current: Option<(DataKind, Vec<u8>)> = None;
    for event in events {
        match event {
            Event::Message(m) => {
                if !m.is_control() {
                    prop_assert!(current.is_none(), "whole message inside fragments");
                }
                out.push(m.clone());
            }
            Event::Fragment(f) => {
                prop_assert_eq!(f.is_first, current.is_none(), "is_first wrong: {:?}", f);
                let (kind, mut data) = current.take().unwrap_or((f.kind, Vec::new()));
                prop_assert_eq!(kind, f.kind);
                data.extend_from_slice(&f.payload);
                if f.is_last {
                    out.push(match kind {
                        DataKind::Text => Message::text(String::from_utf8(data).unwrap()),
                        DataKind::Binary => Message::binary(data),
                    });
                } else {
                    current = Some((kind, data));
                }
            }
        }
    }
    prop_assert!(current.is_none(), "message left unfinished");
    Ok(out)
}

fn mode_strategy() -> impl Strategy<Value = ReceiveMode> {
    prop_oneof![
        Just(ReceiveMode::Messages),
        Just(ReceiveMode::Fragments),
        Just(ReceiveMode::Streaming),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) Any sequence of messages, in both directions at once, arrives identically, at any
    /// chunk size and in either receive mode; pings are answered with identical pongs.
    #[test]
    fn round_trip(
        client_ops in vec(op_strategy(), 0..10),
        server_ops in vec(op_strategy(), 0..10),
        chunk in prop_oneof![1usize..8, 8usize..300, Just(usize::MAX)],
        client_mode in mode_strategy(),
        server_mode in mode_strategy(),
    ) {
        let mut pair = Pair::with_configs(
            Config::default().receive_mode(client_mode),
            Config::default().receive_mode(server_mode),
        );
        for op in &client_ops {
            send(&mut pair.client, op);
        }
        for op in &server_ops {
            send(&mut pair.server, op);
        }
        let at_server = pair.client_to_server_chunked(chunk);
        prop_assert_eq!(&at_server.error, &None);
        prop_assert_eq!(reassemble(&at_server.events)?, expected(&client_ops));

        // The server's own messages went first, then its pongs for the client's pings.
        let at_client = pair.server_to_client_chunked(chunk);
        prop_assert_eq!(&at_client.error, &None);
        let mut want = expected(&server_ops);
        want.extend(pongs_for(&client_ops));
        prop_assert_eq!(reassemble(&at_client.events)?, want);

        let back = pair.client_to_server_chunked(chunk);
        prop_assert_eq!(reassemble(&back.events)?, pongs_for(&server_ops));
        prop_assert_eq!(pair.client.output_len() + pair.server.output_len(), 0);
        prop_assert_eq!(pair.client.recv_buf().len() + pair.server.recv_buf().len(), 0);
    }

    /// (a) The close handshake after any traffic leaves both ends Closed with the code echoed.
    #[test]
    fn round_trip_then_close(
        ops in vec(op_strategy(), 0..6),
        code in prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999],
        reason in unicode(20),
        chunk in 1usize..50,
    ) {
        let mut pair = Pair::new();
        for op in &ops {
            send(&mut pair.client, op);
        }
        let frame = fullduplex_proto::CloseFrame::new(fullduplex_proto::CloseCode(code), reason.as_str());
        pair.client.close(Some(frame.clone())).unwrap();
        let at_server = pair.client_to_server_chunked(chunk);
        let mut want = expected(&ops);
        want.push(Message::Close(Some(frame)));
        prop_assert_eq!(at_server.ok_messages(), want);
        let at_client = pair.server_to_client_chunked(chunk);
        let mut want = pongs_for(&ops);
        want.push(Message::Close(Some(fullduplex_proto::CloseFrame::new(
            fullduplex_proto::CloseCode(code),
            "",
        ))));
        prop_assert_eq!(at_client.ok_messages(), want);
        prop_assert_eq!(pair.client.state(), fullduplex_proto::State::Closed);
        prop_assert_eq!(pair.server.state(), fullduplex_proto::State::Closed);
        prop_assert_eq!(pair.client.output_len(), 0);
    }
}

// ----- streams built by hand, for (b) and (c) -----

/// A frame as a (possibly hostile) peer sends it.
#[derive(Debug, Clone)]
struct Spec {
    fin: bool,
    rsv: u8,
    opcode: u8,
    key: [u8; 4],
    /// Mask when the role forbids it, or not when it requires it.
    wrong_mask: bool,
    payload: Vec<u8>,
}

fn spec(fin: bool, opcode: u8, payload: Vec<u8>, key: [u8; 4]) -> Spec {
    Spec {
        fin,
        rsv: 0,
        opcode,
        key,
        wrong_mask: false,
        payload,
    }
}

fn encode_specs(role: Role, specs: &[Spec]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in specs {
        let masked = (role == Role::Server) != s.wrong_mask;
        let mask = masked.then_some(s.key);
        out.extend_from_slice(&frame(s.fin, s.rsv, s.opcode, mask, &s.payload));
    }
    out
}

/// A legal close body: empty, or a code that may appear on the wire and a UTF-8 reason.
fn valid_close_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        (
            prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999],
            unicode(10)
        )
            .prop_map(|(code, reason)| close_payload(code, reason.as_bytes())),
    ]
}

/// Any close body: also any code, any reason bytes, or a single byte.
fn close_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        valid_close_body(),
        (any::<u16>(), vec(any::<u8>(), 0..6))
            .prop_map(|(code, reason)| close_payload(code, &reason)),
        vec(any::<u8>(), 1..2),
    ]
}

/// Frames of a legal conversation: whole and fragmented messages, controls in between, maybe a
/// close, maybe something after it.
fn valid_specs() -> impl Strategy<Value = Vec<Spec>> {
    let key = any::<[u8; 4]>();
    let message = (
        any::<bool>(),
        unicode(40),
        vec(any::<u8>(), 0..60),
        vec(any::<Index>(), 0..3),
        key,
    )
        .prop_map(|(is_text, text, data, cuts, key)| {
            let (first, payload) = if is_text {
                (op::TEXT, text.into_bytes())
            } else {
                (op::BINARY, data)
            };
            let pieces = cut(&payload, &cuts);
            let last = pieces.len() - 1;
            pieces
                .into_iter()
                .enumerate()
                .map(|(i, p)| spec(i == last, if i == 0 { first } else { op::CONT }, p, key))
                .collect::<Vec<_>>()
        });
    let control = (
        prop_oneof![Just(op::PING), Just(op::PONG)],
        vec(any::<u8>(), 0..20),
        key,
    )
        .prop_map(|(opcode, p, key)| vec![spec(true, opcode, p, key)]);
    let close = (valid_close_body(), key).prop_map(|(p, key)| vec![spec(true, op::CLOSE, p, key)]);
    vec(prop_oneof![6 => message, 3 => control, 1 => close], 0..12)
        .prop_map(|groups| groups.concat())
}

/// Frames with every field drawn at random: most streams break a rule somewhere.
fn noisy_specs() -> impl Strategy<Value = Vec<Spec>> {
    let opcode = prop_oneof![
        3 => Just(op::TEXT),
        2 => Just(op::BINARY),
        3 => Just(op::CONT),
        1 => Just(op::PING),
        1 => Just(op::PONG),
        1 => Just(op::CLOSE),
        1 => 0u8..16,
    ];
    let payload = prop_oneof![
        3 => unicode(20).prop_map(String::into_bytes),
        3 => vec(any::<u8>(), 0..40),
        1 => vec(any::<u8>(), 120..300),
        1 => close_body(),
    ];
    let one = (
        prop::bool::weighted(0.7),
        prop_oneof![10 => Just(0u8), 1 => 0u8..8],
        opcode,
        any::<[u8; 4]>(),
        prop::bool::weighted(0.05),
        payload,
    )
        .prop_map(|(fin, rsv, opcode, key, wrong_mask, payload)| Spec {
            fin,
            rsv,
            opcode,
            key,
            wrong_mask,
            payload,
        });
    vec(one, 0..10)
}

/// A byte stream towards `role`: legal or noisy frames, maybe cut short, maybe with junk after.
fn stream_strategy() -> impl Strategy<Value = (Role, Vec<u8>)> {
    let role = prop_oneof![Just(Role::Server), Just(Role::Client)];
    let specs = prop_oneof![2 => valid_specs(), 1 => noisy_specs()];
    let tail = prop_oneof![
        4 => Just(Vec::new()),
        1 => vec(any::<u8>(), 1..20),
    ];
    (role, specs, tail, any::<Index>(), prop::bool::weighted(0.2)).prop_map(
        |(role, specs, tail, truncate_at, truncate)| {
            let mut bytes = encode_specs(role, &specs);
            if truncate && !bytes.is_empty() {
                bytes.truncate(truncate_at.index(bytes.len()));
            }
            bytes.extend_from_slice(&tail);
            (role, bytes)
        },
    )
}

fn config_strategy() -> impl Strategy<Value = Config> {
    prop_oneof![
        3 => Just(Config::default()),
        1 => Just(Config::default().receive_mode(ReceiveMode::Fragments)),
        1 => Just(Config::default().receive_mode(ReceiveMode::Streaming)),
        1 => Just(Config::default().auto_pong(false)),
        1 => (1usize..100, 1usize..200).prop_map(|(frame, message)| {
            Config::default().max_frame_size(frame).max_message_size(message)
        }),
        1 => (1usize..100, mode_strategy()).prop_map(|(limit, mode)| {
            Config::default()
                .max_message_size(limit)
                .receive_mode(mode)
        }),
    ]
}

/// A queued frame with its masking key removed (client keys are random).
type Sent = (bool, u8, u8, Vec<u8>);

fn sent(conn: &mut Connection) -> Vec<Sent> {
    take_frames(conn)
        .into_iter()
        .map(|f| (f.fin, f.rsv, f.opcode, f.payload))
        .collect()
}

/// Feeds `bytes` cut at `cuts`, then the end of the stream; returns what came out.
/// In [`ReceiveMode::Streaming`], where the pieces depend on the cuts, see [`merge_pieces`].
fn run(role: Role, config: &Config, bytes: &[u8], cuts: &[usize]) -> (Outcome, Vec<Sent>) {
    let mut conn = Connection::new(role, config.clone());
    let mut outcome = feed_split(&mut conn, bytes, cuts);
    conn.recv_eof();
    outcome.absorb(drain(&mut conn));
    let out = sent(&mut conn);
    if config.receive_mode == ReceiveMode::Streaming {
        outcome.events = merge_pieces(outcome.events, outcome.error.is_some());
    }
    (outcome, out)
}

/// Like [`run`], with each data message echoed, and the events taken owned or borrowed.
fn run_echo(
    role: Role,
    config: &Config,
    bytes: &[u8],
    cuts: &[usize],
    borrowed: bool,
) -> (Outcome, Vec<Sent>, fullduplex_proto::State) {
    let mut conn = Connection::new(role, config.clone());
    let drain_echo = |conn: &mut Connection| {
        if borrowed {
            return drain_borrowed(conn, true);
        }
        let mut outcome = Outcome::default();
        loop {
            match conn.next_event() {
                Ok(Some(event)) => {
                    if let Event::Message(message @ (Message::Text(_) | Message::Binary(_))) =
                        &event
                    {
                        conn.send(message.clone())
                            .expect("an open connection takes the echo");
                    }
                    outcome.record(Ok(event));
                }
                Ok(None) => return outcome,
                Err(error) => {
                    outcome.record(Err(error));
                    return outcome;
                }
            }
        }
    };
    let mut outcome = Outcome::default();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let cut = cut.clamp(start, bytes.len());
        conn.recv_buf().extend_from_slice(&bytes[start..cut]);
        outcome.absorb(drain_echo(&mut conn));
        start = cut;
    }
    conn.recv_eof();
    outcome.absorb(drain_echo(&mut conn));
    let out = sent(&mut conn);
    (outcome, out, conn.state())
}

/// Checks the state a connection must be in once it has failed or closed, and the shape of its
/// output.
fn check_end_state(conn: &mut Connection, outcome: &Outcome) -> Result<(), TestCaseError> {
    let frames = take_frames(conn);
    let closes = close_frames(&frames);
    prop_assert!(closes.len() <= 1, "more than one close frame: {:?}", frames);
    let received_close = outcome
        .events
        .iter()
        .any(|e| matches!(e, Event::Message(Message::Close(_))));
    match &outcome.error {
        Some(ProtocolError::UnexpectedEof) => {
            prop_assert!(closes.is_empty(), "close queued on a bare end of stream");
        }
        Some(error) => {
            prop_assert_eq!(closes.len(), 1);
            prop_assert_eq!(frames.last().unwrap().opcode, op::CLOSE);
            prop_assert_eq!(closes[0].close_code(), Some(error.close_code().0));
            prop_assert!(!received_close, "error after a close was received");
        }
        None => {
            prop_assert_eq!(closes.len(), usize::from(received_close));
        }
    }
    if outcome.error.is_some() || received_close {
        prop_assert_eq!(conn.state(), fullduplex_proto::State::Closed);
        for _ in 0..3 {
            prop_assert_eq!(conn.next_event(), Ok(None));
        }
        // A perfectly good frame afterwards changes nothing.
        let more = frame_to(conn.role(), true, op::PING, b"more");
        prop_assert_eq!(feed(conn, &more), Outcome::default());
        prop_assert_eq!(conn.output_len(), 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (b) Split at every offset (at random offsets for longer streams), byte by byte, and at
    /// several random points: the same events, the same error, the same output.
    #[test]
    fn any_split_gives_the_same_events(
        (role, bytes) in stream_strategy(),
        config in config_strategy(),
        random_cuts in vec(any::<Index>(), 1..12),
    ) {
        let whole = run(role, &config, &bytes, &[]);
        let single_cuts: Vec<usize> = if bytes.len() <= 400 {
            (0..=bytes.len()).collect()
        } else {
            random_cuts.iter().map(|i| i.index(bytes.len() + 1)).collect()
        };
        for cut in single_cuts {
            let split = run(role, &config, &bytes, &[cut]);
            prop_assert_eq!(&split, &whole, "split at {}", cut);
        }
        let byte_by_byte: Vec<usize> = (1..bytes.len()).collect();
        prop_assert_eq!(&run(role, &config, &bytes, &byte_by_byte), &whole, "byte by byte");
        let mut cuts: Vec<usize> = random_cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(&run(role, &config, &bytes, &cuts), &whole, "cuts {:?}", cuts);
    }

    /// (e) Borrowed and owned receiving agree on every stream and every split, with an echo
    /// of each data message queued meanwhile (copied from the receive buffer, or queued from
    /// the owned message).
    #[test]
    fn borrowed_events_agree_with_owned_ones(
        (role, bytes) in stream_strategy(),
        config in config_strategy(),
        random_cuts in vec(any::<Index>(), 0..6),
    ) {
        let mut cuts: Vec<usize> = random_cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let owned = run_echo(role, &config, &bytes, &cuts, false);
        let borrowed = run_echo(role, &config, &bytes, &cuts, true);
        prop_assert_eq!(borrowed, owned, "cuts {:?}", cuts);
    }

    /// (c) Arbitrary bytes, to either role, in arbitrary pieces: no panic, nothing after an
    /// error, one close frame with the error's code.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..2048),
        server in any::<bool>(),
        config in config_strategy(),
        chunk in 1usize..100,
        eof in any::<bool>(),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut conn = Connection::new(role, config);
        let mut outcome = feed_chunked(&mut conn, &bytes, chunk);
        if eof {
            conn.recv_eof();
            outcome.absorb(drain(&mut conn));
        }
        check_end_state(&mut conn, &outcome)?;
    }

    /// (c) Streams that are nearly right, with a few bytes changed: the parser is reached in
    /// depth and still never panics or misbehaves after an error.
    #[test]
    fn corrupted_streams_never_panic(
        (role, mut bytes) in stream_strategy(),
        flips in vec((any::<Index>(), any::<u8>()), 0..6),
        config in config_strategy(),
        chunk in 1usize..64,
        eof in any::<bool>(),
    ) {
        if !bytes.is_empty() {
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
        }
        let mut conn = Connection::new(role, config);
        let mut outcome = feed_chunked(&mut conn, &bytes, chunk);
        if eof {
            conn.recv_eof();
            outcome.absorb(drain(&mut conn));
        }
        check_end_state(&mut conn, &outcome)?;
    }

    /// Text validity as seen through the connection is exactly `std::str::from_utf8` of the
    /// whole message, however it is fragmented and however the fragments are read.
    #[test]
    fn text_is_accepted_exactly_when_it_is_utf8(
        bytes in maybe_utf8_strategy(),
        cuts in vec(any::<Index>(), 0..4),
        chunk in 1usize..10,
        role in prop_oneof![Just(Role::Server), Just(Role::Client)],
    ) {
        let stream = text_frames(role, &bytes, &cuts);
        let mut conn = Connection::new(role, Config::default());
        let outcome = feed_chunked(&mut conn, &stream, chunk);
        match std::str::from_utf8(&bytes) {
            Ok(text) => {
                prop_assert_eq!(outcome.ok_messages(), vec![Message::text(text)]);
            }
            Err(_) => {
                prop_assert_eq!(outcome.err(), ProtocolError::InvalidUtf8);
                prop_assert!(outcome.events.is_empty());
            }
        }
    }
}

/// Text that is valid UTF-8, arbitrary bytes, or valid text with one byte inserted.
fn maybe_utf8_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        unicode(30).prop_map(String::into_bytes),
        vec(any::<u8>(), 0..30),
        (unicode(20), any::<Index>(), any::<u8>()).prop_map(|(s, at, b)| {
            let mut v = s.into_bytes();
            let i = at.index(v.len() + 1);
            v.insert(i, b);
            v
        }),
    ]
}

/// `bytes` as one text message cut into frames at `cuts`, as `role`'s peer sends it.
fn text_frames(role: Role, bytes: &[u8], cuts: &[Index]) -> Vec<u8> {
    let pieces = cut(bytes, cuts);
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| frame_to(role, i == last, if i == 0 { op::TEXT } else { op::CONT }, p))
        .collect::<Vec<_>>()
        .concat()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// In [`ReceiveMode::Streaming`] valid text arrives whole and in order, in pieces; invalid
    /// text fails with 1007, and what was delivered before the failure is valid UTF-8 up to
    /// at most one unfinished code point at its end (nothing invalid is ever handed out).
    #[test]
    fn streamed_text_is_valid_up_to_where_it_fails(
        bytes in maybe_utf8_strategy(),
        cuts in vec(any::<Index>(), 0..4),
        chunk in 1usize..10,
        role in prop_oneof![Just(Role::Server), Just(Role::Client)],
    ) {
        let stream = text_frames(role, &bytes, &cuts);
        let config = Config::default().receive_mode(ReceiveMode::Streaming);
        let mut conn = Connection::new(role, config);
        let outcome = feed_chunked(&mut conn, &stream, chunk);
        let mut delivered = Vec::new();
        for (i, event) in outcome.events.iter().enumerate() {
            let Event::Fragment(piece) = event else {
                return Err(TestCaseError::fail(format!("not a piece: {event:?}")));
            };
            prop_assert_eq!(piece.kind, DataKind::Text);
            prop_assert_eq!(piece.is_first, i == 0);
            prop_assert!(!piece.payload.is_empty() || piece.is_last, "empty piece in the middle");
            delivered.extend_from_slice(&piece.payload);
        }
        match std::str::from_utf8(&bytes) {
            Ok(_) => {
                prop_assert_eq!(&outcome.error, &None);
                prop_assert_eq!(&delivered, &bytes);
                prop_assert!(matches!(outcome.events.last(), Some(Event::Fragment(f)) if f.is_last));
            }
            Err(_) => {
                prop_assert_eq!(outcome.err(), ProtocolError::InvalidUtf8);
                prop_assert!(bytes.starts_with(&delivered));
                if let Err(e) = std::str::from_utf8(&delivered) {
                    prop_assert!(e.error_len().is_none(), "invalid bytes delivered: {:?}", delivered);
                }
            }
        }
    }
}

// ----- (d) frame headers -----

fn opcode_strategy() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

fn length_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=125,
        126u64..=0xffff,
        0x1_0000u64..(1 << 63),
        prop::sample::select(vec![0u64, 125, 126, 127, 0xffff, 0x1_0000, (1 << 63) - 1]),
    ]
}

fn header_strategy() -> impl Strategy<Value = FrameHeader> {
    (
        any::<[bool; 4]>(),
        opcode_strategy(),
        proptest::option::of(any::<[u8; 4]>()),
        length_strategy(),
    )
        .prop_map(
            |([fin, rsv1, rsv2, rsv3], opcode, mask, payload_len)| FrameHeader {
                fin,
                rsv1,
                rsv2,
                rsv3,
                opcode,
                mask,
                payload_len,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// (d) encode then parse gives the header back, in the minimal form the RFC describes;
    /// every proper prefix asks for more bytes.
    #[test]
    fn frame_header_round_trip(h in header_strategy()) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut buf);
        prop_assert_eq!(n, h.len());
        let rsv = u8::from(h.rsv1) << 2 | u8::from(h.rsv2) << 1 | u8::from(h.rsv3);
        prop_assert_eq!(
            &buf[..n],
            &header(h.fin, rsv, h.opcode.as_u8(), h.mask, h.payload_len)[..],
            "differs from the independent encoder"
        );
        prop_assert_eq!(FrameHeader::parse(&buf[..n]), Ok(Some((h, n))));
        // Trailing payload bytes do not change the parse.
        let mut longer = buf[..n].to_vec();
        longer.extend_from_slice(&[0xaa; 20]);
        prop_assert_eq!(FrameHeader::parse(&longer), Ok(Some((h, n))));
        for cut in 0..n {
            prop_assert_eq!(FrameHeader::parse(&buf[..cut]), Ok(None), "prefix of {}", cut);
        }
    }

    /// (d) Parsing any bytes never panics; what it accepts is what the bits say, and it
    /// re-encodes to the same header.
    #[test]
    fn frame_header_parse_of_arbitrary_bytes(bytes in vec(any::<u8>(), 0..16)) {
        match FrameHeader::parse(&bytes) {
            Ok(Some((h, n))) => {
                prop_assert!(n <= bytes.len() && (2..=MAX_HEADER_LEN).contains(&n));
                prop_assert_eq!(h.fin, bytes[0] & 0x80 != 0);
                prop_assert_eq!((h.rsv1, h.rsv2, h.rsv3), (bytes[0] & 0x40 != 0, bytes[0] & 0x20 != 0, bytes[0] & 0x10 != 0));
                prop_assert_eq!(h.opcode.as_u8(), bytes[0] & 0x0f);
                prop_assert_eq!(h.mask.is_some(), bytes[1] & 0x80 != 0);
                prop_assert!(h.payload_len < 1 << 63);
                let mut buf = [0u8; MAX_HEADER_LEN];
                let m = h.encode(&mut buf);
                prop_assert_eq!(FrameHeader::parse(&buf[..m]), Ok(Some((h, m))));
                // Only a non-minimal length form can make the encoding shorter.
                prop_assert!(m <= n);
            }
            Ok(None) => {
                let need = match bytes.get(1).map(|b| b & 0x7f) {
                    None => 2,
                    Some(126) => 4,
                    Some(127) => 10,
                    Some(_) => 2,
                } + if bytes.get(1).is_some_and(|b| b & 0x80 != 0) { 4 } else { 0 };
                prop_assert!(bytes.len() < need, "more bytes asked for than a header needs");
            }
            Err(_) => {
                let reserved = OpCode::from_u8(bytes[0] & 0x0f).is_none();
                let top_bit = bytes[1] & 0x7f == 127 && bytes.len() >= 10 && bytes[2] & 0x80 != 0;
                prop_assert!(reserved || top_bit);
            }
        }
    }

    /// Masking in pieces at any offset agrees with the RFC 5.3 definition.
    #[test]
    fn mask_agrees_with_the_definition(
        data in vec(any::<u8>(), 0..300),
        key in any::<[u8; 4]>(),
        split in any::<Index>(),
        start in 0usize..8,
    ) {
        // `start` shifts the data in memory, so the word-aligned middle moves.
        let mut buf = vec![0u8; start];
        buf.extend_from_slice(&data);
        let split = split.index(data.len() + 1);
        let (a, b) = buf[start..].split_at_mut(split);
        apply_mask(a, key, 0);
        apply_mask(b, key, split);
        prop_assert_eq!(&buf[start..], &mask_payload(&data, key)[..]);
    }
}

/// A fixed stream exercising every kind of frame, split at every offset: a deterministic
/// instance of (b) that runs even when proptest finds nothing.
#[test]
fn fixed_stream_at_every_split() {
    let bytes = concat(&[
        client_frame(op::TEXT, "héllo".as_bytes()),
        frame(false, 0, op::BINARY, Some(KEY), b"ab"),
        client_frame(op::PING, b"p"),
        frame(true, 0, op::CONT, Some(KEY), b"cd"),
        frame(false, 0, op::TEXT, Some(KEY), &[0xe2]),
        frame(true, 0, op::CONT, Some(KEY), &[0x82, 0xac]),
        client_frame(op::CLOSE, &close_payload(1000, b"done")),
        client_frame(op::TEXT, b"ignored"),
    ]);
    let whole = run(Role::Server, &Config::default(), &bytes, &[]);
    assert_eq!(
        whole.0.events,
        vec![
            text("héllo"),
            ping(b"p"),
            binary(b"abcd"),
            text("€"),
            close(1000, "done"),
        ]
    );
    assert_eq!(whole.0.error, None);
    for a in 0..=bytes.len() {
        assert_eq!(
            run(Role::Server, &Config::default(), &bytes, &[a]),
            whole,
            "{a}"
        );
    }
}

// ----- (f) the frame reader -----

/// Headers and unmasked payloads that a [`FrameReader`] reads out of `pieces`, and the error
/// that stopped it, if any.
fn read_frames(pieces: &[Vec<u8>]) -> (Vec<(FrameHeader, Vec<u8>)>, Option<FrameError>) {
    let mut reader = FrameReader::new();
    let mut frames: Vec<(FrameHeader, Vec<u8>)> = Vec::new();
    for piece in pieces {
        for item in reader.feed(piece) {
            match item {
                Ok(FrameItem::Header(header)) => frames.push((header, Vec::new())),
                Ok(FrameItem::Payload(chunk)) => {
                    let (_, payload) = frames.last_mut().expect("a chunk before any header");
                    assert_eq!(chunk.offset, payload.len() as u64, "chunk offset");
                    chunk.unmask_into(payload);
                }
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, reader.error())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (f) Any stream (legal, noisy, truncated, with junk after) split at any points gives the
    /// same headers, the same unmasked payloads and the same error as read whole.
    #[test]
    fn frame_reader_gives_the_same_frames_however_split(
        (_role, bytes) in stream_strategy(),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let whole = read_frames(std::slice::from_ref(&bytes));
        let split = read_frames(&cut(&bytes, &cuts));
        prop_assert_eq!(&split, &whole);
    }

    /// (f) Frames encoded from specs (masked towards a server, unmasked towards a client),
    /// split anywhere, come back as those specs, unmasked.
    #[test]
    fn frame_reader_reads_back_encoded_frames(
        specs in valid_specs(),
        towards_server in any::<bool>(),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let role = if towards_server { Role::Server } else { Role::Client };
        let bytes = encode_specs(role, &specs);
        let (frames, error) = read_frames(&cut(&bytes, &cuts));
        prop_assert_eq!(error, None);
        prop_assert_eq!(frames.len(), specs.len());
        for (spec, (header, payload)) in specs.iter().zip(&frames) {
            prop_assert_eq!(header.opcode.as_u8(), spec.opcode);
            prop_assert_eq!(header.fin, spec.fin);
            prop_assert_eq!(header.mask, towards_server.then_some(spec.key));
            prop_assert_eq!(payload, &spec.payload);
        }
    }
}

// ----- (g) the transport's end -----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (g) For any stream towards either role, `transport()` follows the state: open while
    /// the connection is, then (RFC 6455 7.1.1) the server closes and the client waits for the
    /// server's close until the end of the stream; an end of stream without a close frame
    /// aborts.
    #[test]
    fn transport_follows_the_state_for_any_stream(
        (role, bytes) in stream_strategy(),
        config in config_strategy(),
    ) {
        use fullduplex_proto::{State, TransportAction};
        let mut conn = Connection::new(role, config);
        let outcome = feed(&mut conn, &bytes);
        let expected = match (conn.state(), role) {
            (State::Open | State::Closing, _) => TransportAction::Open,
            (State::Closed, Role::Server) => TransportAction::Close,
            (State::Closed, Role::Client) => TransportAction::AwaitClose,
        };
        prop_assert_eq!(conn.transport(), expected, "before EOF, after {:?}", outcome.error);
        let was_closed = conn.state() == State::Closed;
        conn.recv_eof();
        let end = drain(&mut conn);
        prop_assert_eq!(conn.state(), State::Closed);
        if was_closed {
            prop_assert_eq!(end, Outcome::default(), "nothing after the close");
            prop_assert_eq!(conn.transport(), TransportAction::Close);
        } else {
            prop_assert_eq!(end.error, Some(ProtocolError::UnexpectedEof));
            prop_assert_eq!(conn.transport(), TransportAction::Abort);
        }
    }
}
