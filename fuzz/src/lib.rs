//! Shared harness of the fuzz targets: a frame stream fed to a [`Connection`] in fuzzed chunks,
//! with invariants checked after every step.
//!
//! Input layout of `frame_stream_*`:
//!
//! ```text
//! byte 0   flags: bit 0 ReceiveMode::Fragments, bit 1 auto_pong off, bit 2 echo data back,
//!          bit 3 send a ping after every chunk, bit 4 close(None) instead of close(Some(..)),
//!          bit 5 recv_eof after the last chunk, bit 6 ReceiveMode::Streaming (wins over
//!          bit 0), bit 7 the small limits (so that short inputs reach them)
//! byte 1   low 3 bits: how many chunk-size bytes follow (0: one chunk with everything);
//!          high 4 bits: after which chunk we start the close handshake ourselves (15: never)
//! bytes    chunk sizes, used in turn; 0 means "everything that is left"
//! rest     the byte stream from the peer
//! ```

use bytes::Bytes;

/// The inspecting relay's frame tap (`fdx inspect`), compiled here from its source file: the
/// `fdx` crate is a binary only, and the tap needs nothing of it but `fullduplex`.
#[path = "../../crates/cli/src/inspect/tap.rs"]
pub mod tap;

// The proptests' normalisation of streamed pieces, shared rather than copied.
#[path = "../../crates/proto/tests/support/pieces.rs"]
mod pieces;
use fullduplex_proto::close::{CloseCode, CloseFrame, MAX_REASON_LEN};
use fullduplex_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use fullduplex_proto::mask::apply_mask;
use fullduplex_proto::utf8::Utf8Validator;
use fullduplex_proto::{
    Config, Connection, DataKind, Event, Message, ProtocolError, ReceiveMode, Role, SendError,
    State,
};
use pieces::merge_pieces;

/// The frame limit of the fuzzed connections.
pub const MAX_FRAME: usize = 64 << 10;
/// The message limit of the fuzzed connections.
pub const MAX_MESSAGE: usize = 128 << 10;
/// The frame limit with flag bit 7: a few hundred bytes of input reach it, where the default
/// limits need inputs of 64-128 KiB, which the fuzzer runs a hundred times more slowly.
pub const SMALL_MAX_FRAME: usize = 200;
/// The message limit with flag bit 7 (a few frames of [`SMALL_MAX_FRAME`]).
pub const SMALL_MAX_MESSAGE: usize = 500;

/// The limits a fuzzed connection runs with.
#[derive(Clone, Copy)]
struct Limits {
    frame: usize,
    message: usize,
}
/// The most that `bytes` ever allocates for a `BytesMut` without being asked for it: a shared
/// buffer that must grow is replaced by one of at least its "original capacity", which `bytes`
/// caps at 64 KiB.
const BYTES_ORIGINAL_CAPACITY_CAP: usize = 64 << 10;

/// The decoded fuzz input.
struct Input<'a> {
    fragments: bool,
    streaming: bool,
    auto_pong: bool,
    echo: bool,
    ping_each_chunk: bool,
    close_without_frame: bool,
    eof_at_end: bool,
    close_after_chunk: Option<usize>,
    limits: Limits,
    sizes: &'a [u8],
    stream: &'a [u8],
}

impl<'a> Input<'a> {
    fn decode(data: &'a [u8]) -> Option<Input<'a>> {
        let (&flags, rest) = data.split_first()?;
        let (&layout, rest) = rest.split_first()?;
        let n_sizes = ((layout & 7) as usize).min(rest.len());
        let (sizes, stream) = rest.split_at(n_sizes);
        let close_at = (layout >> 4) as usize;
        Some(Input {
            fragments: flags & 1 != 0,
            streaming: flags & 64 != 0,
            auto_pong: flags & 2 == 0,
            echo: flags & 4 != 0,
            ping_each_chunk: flags & 8 != 0,
            close_without_frame: flags & 16 != 0,
            eof_at_end: flags & 32 != 0,
            close_after_chunk: (close_at != 15).then_some(close_at),
            limits: if flags & 128 != 0 {
                Limits {
                    frame: SMALL_MAX_FRAME,
                    message: SMALL_MAX_MESSAGE,
                }
            } else {
                Limits {
                    frame: MAX_FRAME,
                    message: MAX_MESSAGE,
                }
            },
            sizes,
            stream,
        })
    }

    fn config(&self) -> Config {
        Config::default()
            .max_frame_size(self.limits.frame)
            .max_message_size(self.limits.message)
            .auto_pong(self.auto_pong)
            .receive_mode(if self.streaming {
                ReceiveMode::Streaming
            } else if self.fragments {
                ReceiveMode::Fragments
            } else {
                ReceiveMode::Messages
            })
    }

    /// The stream cut into chunks whose sizes come from the input.
    fn chunks(&self) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = self.stream;
        let mut i = 0;
        while !rest.is_empty() {
            let size = match self.sizes.get(i % self.sizes.len().max(1)) {
                Some(&0) | None => rest.len(),
                Some(&s) => (s as usize).min(rest.len()),
            };
            let (chunk, tail) = rest.split_at(size);
            chunks.push(chunk);
            rest = tail;
            i += 1;
        }
        chunks
    }
}

/// Checks everything a connection writes: well-formed frames for its role, control frames
/// within limits, valid close payloads, a coherent fragment sequence, and nothing but pongs
/// after the close frame.
struct OutputChecker {
    role: Role,
    pending: Vec<u8>,
    close_code: Option<Option<u16>>,
    /// The kind of the fragmented message being written, and its UTF-8 state.
    sending: Option<(DataKind, Utf8Validator)>,
}

impl OutputChecker {
    fn new(role: Role) -> OutputChecker {
        OutputChecker {
            role,
            pending: Vec::new(),
            close_code: None,
            sending: None,
        }
    }

    /// Takes the connection's output and checks it. Returns the number of bytes taken.
    fn drain(&mut self, conn: &mut Connection) -> usize {
        let bytes = conn.take_output();
        assert_eq!(conn.output_len(), 0);
        self.pending.extend_from_slice(&bytes);
        self.check_frames();
        assert!(
            self.pending.is_empty(),
            "output ends inside a frame: {:x?}",
            self.pending
        );
        bytes.len()
    }

    fn check_frames(&mut self) {
        loop {
            let (header, header_len) = match FrameHeader::parse(&self.pending) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return,
                Err(e) => panic!("connection wrote a bad frame header: {e}"),
            };
            let payload_len = usize::try_from(header.payload_len).expect("payload length");
            if self.pending.len() < header_len + payload_len {
                return;
            }
            let mut payload = self.pending[header_len..header_len + payload_len].to_vec();
            self.pending.drain(..header_len + payload_len);

            // Section 5.5.1: no data frame and no second close after the close frame; a pong
            // still answers a ping that arrived before the peer's close (section 5.5.2).
            assert!(
                self.close_code.is_none() || header.opcode == OpCode::Pong,
                "frame {header:?} written after the close frame"
            );
            assert!(!header.rsv1 && !header.rsv2 && !header.rsv3, "RSV bit set");
            match (self.role, header.mask) {
                (Role::Server, None) => {}
                (Role::Client, Some(key)) => apply_mask(&mut payload, key, 0),
                _ => panic!("{:?} wrote a frame with mask {:?}", self.role, header.mask),
            }
            let mut minimal = [0u8; MAX_HEADER_LEN];
            assert_eq!(
                header.encode(&mut minimal),
                header_len,
                "non-minimal length"
            );

            if header.opcode.is_control() {
                assert!(header.fin, "fragmented control frame written");
                assert!(payload_len <= 125, "control frame of {payload_len} bytes");
                if header.opcode == OpCode::Close {
                    let frame = CloseFrame::parse(Bytes::from(payload))
                        .unwrap_or_else(|e| panic!("connection wrote a bad close frame: {e}"));
                    self.close_code = Some(frame.map(|f| f.code.0));
                }
                continue;
            }
            let kind = match (header.opcode, &self.sending) {
                (OpCode::Continuation, Some((kind, _))) => *kind,
                (OpCode::Continuation, None) => panic!("continuation written without a message"),
                (_, Some(_)) => panic!("new message written inside a fragmented one"),
                (OpCode::Text, None) => DataKind::Text,
                _ => DataKind::Binary,
            };
            let mut utf8 = match self.sending.take() {
                Some((_, utf8)) => utf8,
                None => Utf8Validator::new(),
            };
            if kind == DataKind::Text {
                utf8.feed(&payload).expect("text written is not UTF-8");
                if header.fin {
                    utf8.finish()
                        .expect("text message written ends in a code point");
                }
            }
            if !header.fin {
                self.sending = Some((kind, utf8));
            }
        }
    }
}

/// A send command may only fail because the close handshake has begun or the connection failed.
fn expect_sent(result: Result<(), SendError>, conn: &Connection, failed: bool, what: &str) {
    match result {
        Ok(()) => {}
        Err(SendError::Closed) if conn.is_close_sent() || failed => {}
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

/// Checks what a received event may look like, whatever the input.
struct EventChecker {
    fragments: bool,
    limits: Limits,
    /// The fragmented message being received: kind and bytes so far.
    message: Option<(DataKind, Vec<u8>)>,
}

impl EventChecker {
    fn check(&mut self, event: &Event) {
        match event {
            Event::Message(message) => {
                match message {
                    Message::Text(text) => {
                        assert!(!self.fragments, "whole message in fragments mode");
                        assert!(text.len() <= self.limits.message);
                        // `Utf8Bytes::as_str` trusts the core's validation: check it.
                        assert!(std::str::from_utf8(text.as_bytes()).is_ok(), "bad UTF-8");
                    }
                    Message::Binary(data) => {
                        assert!(!self.fragments, "whole message in fragments mode");
                        assert!(data.len() <= self.limits.message);
                    }
                    Message::Ping(data) | Message::Pong(data) => assert!(data.len() <= 125),
                    Message::Close(Some(frame)) => {
                        assert!(frame.code.is_valid_on_wire(), "close code {:?}", frame.code);
                        assert!(frame.reason.len() <= MAX_REASON_LEN);
                        assert!(std::str::from_utf8(frame.reason.as_bytes()).is_ok());
                    }
                    Message::Close(None) => {}
                }
            }
            Event::Fragment(fragment) => {
                assert!(self.fragments, "fragment in messages mode");
                assert!(fragment.payload.len() <= self.limits.frame);
                assert_eq!(fragment.is_first, self.message.is_none(), "{fragment:?}");
                let (kind, bytes) = self
                    .message
                    .get_or_insert_with(|| (fragment.kind, Vec::new()));
                assert_eq!(*kind, fragment.kind, "kind changed inside a message");
                bytes.extend_from_slice(&fragment.payload);
                assert!(bytes.len() <= self.limits.message, "message over the limit");
                if *kind == DataKind::Text && !fragment.is_last {
                    // Valid so far, up to at most an unfinished code point at the end.
                    if let Err(error) = std::str::from_utf8(bytes) {
                        assert!(error.error_len().is_none(), "invalid UTF-8 handed out");
                    }
                }
                if fragment.is_last {
                    if *kind == DataKind::Text {
                        assert!(std::str::from_utf8(bytes).is_ok(), "fragments not UTF-8");
                    }
                    self.message = None;
                }
            }
        }
    }
}

/// Hands all of `input`'s stream to a fresh connection at once (with the end of input if the
/// stream has one) and takes events with `next` until it needs more: the events, and the
/// error that ended them.
fn all_at_once(
    role: Role,
    config: Config,
    input: &Input<'_>,
    mut next: impl FnMut(&mut Connection) -> Result<Option<Event>, ProtocolError>,
) -> (Vec<Event>, Option<ProtocolError>) {
    let mut conn = Connection::new(role, config);
    conn.recv_buf().extend_from_slice(input.stream);
    if input.eof_at_end {
        conn.recv_eof();
    }
    let (mut events, mut error) = (Vec::new(), None);
    loop {
        match next(&mut conn) {
            Ok(Some(event)) => events.push(event),
            // Inflating paused after a slice: go on.
            Ok(None) if conn.has_pending_work() => {}
            Ok(None) => return (events, error),
            Err(e) => {
                assert!(error.is_none());
                error = Some(e);
            }
        }
    }
}

/// Runs a connection of `role` over `data` (see the module docs for the layout).
pub fn frame_stream(role: Role, data: &[u8]) {
    let Some(input) = Input::decode(data) else {
        return;
    };
    let config = input.config();
    let chunks = input.chunks();

    let mut conn = Connection::new(role, config.clone());
    let mut output = OutputChecker::new(role);
    let mut checker = EventChecker {
        limits: input.limits,
        fragments: input.fragments || input.streaming,
        message: None,
    };
    let mut events = Vec::new();
    let mut error: Option<ProtocolError> = None;
    // The largest `len + additional` the receive buffer was ever asked to hold.
    let mut max_requested = 0usize;

    let n_chunks = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let recv = conn.recv_buf();
        max_requested = max_requested.max(recv.len() + chunk.len());
        recv.extend_from_slice(chunk);
        if input.eof_at_end && i + 1 == n_chunks {
            conn.recv_eof();
        }
        drain_events(
            &mut conn,
            &input,
            &mut checker,
            &mut output,
            &mut events,
            &mut error,
        );
        // Every event was answered; nothing is left unchecked.
        output.drain(&mut conn);

        if input.ping_each_chunk {
            let payload = Bytes::from(vec![i as u8; i % 126]);
            let result = conn.send(Message::Ping(payload));
            expect_sent(result, &conn, error.is_some(), "ping");
        }
        if input.close_after_chunk == Some(i) {
            let frame =
                (!input.close_without_frame).then(|| CloseFrame::new(CloseCode::NORMAL, "fuzz"));
            conn.close(frame).expect("close with a valid code");
            // A failed connection sends nothing more, not even a close frame.
            assert!(conn.is_close_sent() || error.is_some());
            assert_ne!(conn.state(), State::Open);
        }
        output.drain(&mut conn);

        check_buffer_bounds(&mut conn, input.limits, max_requested, data.len());
    }
    if n_chunks == 0 && input.eof_at_end {
        conn.recv_eof();
        drain_events(
            &mut conn,
            &input,
            &mut checker,
            &mut output,
            &mut events,
            &mut error,
        );
        output.drain(&mut conn);
    }

    // A stopped connection stays stopped, whatever arrives later.
    if error.is_some() || conn.is_close_received() {
        assert_eq!(conn.state(), State::Closed);
        conn.recv_buf()
            .extend_from_slice(b"\x81\x80\x00\x00\x00\x00\x82\x00");
        for _ in 0..3 {
            assert_eq!(
                conn.next_event(),
                Ok(None),
                "event after the connection stopped"
            );
        }
    }

    // Split points must not matter: the same bytes at once give the same events and error.
    let (ref_events, ref_error) = all_at_once(role, config.clone(), &input, Connection::next_event);
    // Borrowing the events (`next_event_with`) gives the same events and the same error.
    let (lent_events, lent_error) = all_at_once(role, config, &input, |conn| {
        conn.next_event_with(|event, _| event.into_owned())
    });
    assert_eq!(lent_events, ref_events, "borrowed events differ");
    assert_eq!(lent_error, ref_error, "borrowed error differs");
    let (events, ref_events) = if input.streaming {
        // Streamed pieces follow the reads: compare them joined (see `merge_pieces`).
        (
            merge_pieces(events, error.is_some()),
            merge_pieces(ref_events, ref_error.is_some()),
        )
    } else {
        (events, ref_events)
    };
    assert_eq!(events, ref_events, "events depend on split points");
    assert_eq!(error, ref_error, "error depends on split points");
}

fn drain_events(
    conn: &mut Connection,
    input: &Input<'_>,
    checker: &mut EventChecker,
    output: &mut OutputChecker,
    events: &mut Vec<Event>,
    error: &mut Option<ProtocolError>,
) {
    loop {
        let close_sent_before = conn.is_close_sent();
        let out_before = conn.output_len();
        match conn.next_event() {
            Ok(Some(event)) => {
                assert!(error.is_none(), "event {event:?} after error {error:?}");
                checker.check(&event);
                if matches!(event, Event::Message(Message::Close(_))) {
                    assert!(conn.is_close_received());
                    assert_eq!(conn.state(), State::Closed);
                    assert!(conn.is_close_sent(), "close not echoed");
                }
                respond(conn, input, &event);
                events.push(event);
            }
            Ok(None) if conn.has_pending_work() => {}
            Ok(None) => return,
            Err(e) => {
                assert!(error.is_none(), "second error {e:?} after {error:?}");
                assert_eq!(conn.state(), State::Closed);
                // The failing call queued exactly one close frame, with the error's code,
                // unless one was sent before (or the stream just ended).
                let added = conn.output_len() - out_before;
                if close_sent_before || e == ProtocolError::UnexpectedEof {
                    assert_eq!(added, 0, "{e:?} queued {added} bytes");
                } else {
                    let mask = if conn.role() == Role::Client { 4 } else { 0 };
                    assert!(
                        added >= 2 + mask + 2 && added <= 2 + mask + 125,
                        "{added} bytes"
                    );
                    output.drain(conn);
                    assert_eq!(
                        output.close_code,
                        Some(Some(e.close_code().0)),
                        "close frame for {e:?}"
                    );
                }
                *error = Some(e);
            }
        }
    }
}

/// Answers an event the way an echo server would, to exercise the send path.
fn respond(conn: &mut Connection, input: &Input<'_>, event: &Event) {
    match event {
        Event::Message(Message::Ping(data)) if !input.auto_pong => {
            let result = conn.send(Message::Pong(data.clone()));
            expect_sent(result, conn, false, "pong");
        }
        Event::Message(message @ (Message::Text(_) | Message::Binary(_))) if input.echo => {
            let result = conn.send(message.clone());
            expect_sent(result, conn, false, "echo");
        }
        Event::Fragment(fragment) if input.echo => {
            let result =
                conn.send_fragment(fragment.kind, fragment.payload.clone(), fragment.is_last);
            expect_sent(result, conn, false, "fragment echo");
        }
        _ => {}
    }
}

/// Receive buffer bounds. While the connection reads, what stays in the buffer after
/// `next_event` returned `None` is at most one incomplete frame, so it is below a header plus
/// the frame limit. The capacity follows from how `bytes` grows a `BytesMut`: it allocates
/// less than four times the largest `len + additional` asked for (a doubling of an allocation
/// that was itself less than twice what was asked for), or its 64 KiB "original capacity".
fn check_buffer_bounds(
    conn: &mut Connection,
    limits: Limits,
    max_requested: usize,
    input_len: usize,
) {
    let reading = conn.state() != State::Closed;
    let hint = conn.read_hint();
    let recv = conn.recv_buf();
    if reading {
        assert!(
            recv.len() < MAX_HEADER_LEN + limits.frame,
            "{} bytes buffered while reading",
            recv.len()
        );
        assert!(hint <= MAX_HEADER_LEN + limits.frame, "read hint {hint}");
    }
    let capacity = recv.capacity();
    assert!(
        capacity <= (4 * max_requested).max(BYTES_ORIGINAL_CAPACITY_CAP),
        "capacity {capacity} for at most {max_requested} bytes requested"
    );
    assert!(
        capacity <= 4 * (MAX_HEADER_LEN + limits.frame + input_len) + BYTES_ORIGINAL_CAPACITY_CAP,
        "capacity {capacity} beyond the limits"
    );
}
