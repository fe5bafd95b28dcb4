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
//!          bit 3: lifecycle commands follow (see below);
//!          high 4 bits: after which chunk we start the close handshake ourselves (15: never)
//! [cmds]   if byte 1 has bit 3: 1 to 4 commands of 5 bytes each, W K C0 C1 R:
//!          W  bits 0-3: during which chunk's step (past the last chunk: after all of them);
//!             bits 4-5: when in the step: 0 before its bytes are added, 1 after event number
//!             `W >> 6` of the step (or after its events if fewer), 2 after its events with
//!             their answers still queued, 3 at the end of the step
//!          K  bits 0-1: 0 and 3 `fail(CODES[K >> 2 & 31], reason)`, 1 `fail(C0 C1 as a
//!             big-endian code, reason)`, 2 `on_timeout` (Keepalive, Idle, CloseHandshake by
//!             `K >> 2 & 3`, 3 is CloseHandshake); bit 7: another command follows
//!          R  the reason's length in characters (1 to 4 bytes each, see `reason`)
//! bytes    chunk sizes, used in turn; 0 means "everything that is left"
//! rest     the byte stream from the peer
//! ```
//!
//! Inputs whose byte 1 has bit 3 clear read as they did before the commands existed.

use std::num::NonZeroU32;

use bytes::Bytes;

/// The inspecting relay's frame tap (`fdx inspect`), compiled here from its source file: the
/// `fdx` crate is a binary only, and the tap needs nothing of it but `fullduplex`.
#[path = "../../crates/cli/src/inspect/tap.rs"]
pub mod tap;

pub mod frame_reader;

// The proptests' normalisation of streamed pieces, shared rather than copied.
#[path = "../../crates/proto/tests/support/pieces.rs"]
mod pieces;
use fullduplex_proto::close::{CloseCode, CloseFrame, MAX_REASON_LEN};
use fullduplex_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use fullduplex_proto::mask::apply_mask;
use fullduplex_proto::utf8::Utf8Validator;
use fullduplex_proto::{
    Config, Connection, DataKind, Event, Message, ProtocolError, ReceiveMode, Role, SendError,
    State, Timeout, TransportAction,
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

/// The masking seed of the fuzzed clients: their output is the same on every run.
pub const MASK_SEED: u32 = 0x5eed_f022;

/// Close codes for `fail`: those RFC 6455 section 7.4 and the IANA registry allow in a close
/// frame first, then some that may not appear in one.
const CODES: [u16; 32] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
    4999, // valid
    0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 1999, 2000, 2999, 5000, 6000, 32768, 65535,
];

/// May `code` appear in a close frame? RFC 6455 section 7.4.1 (1000-1003, 1007-1011; 1004,
/// 1005, 1006 and 1015 are reserved or never sent), the IANA registry (1012-1014), and
/// 3000-4999 for libraries, frameworks and applications. Written out here rather than taken
/// from the core.
fn valid_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 1012..=1014 | 3000..=4999)
}

/// The longest prefix of `reason` that fits in a close frame (123 bytes) at a character
/// boundary: what the core sends.
fn cut_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A reason of `chars` characters of 1, 2, 3 and 4 bytes in turn (from `shift`), so that the
/// 123-byte cut falls inside characters.
fn reason(chars: u8, shift: u8) -> String {
    const ALPHABET: [char; 4] = ['a', '\u{e9}', '\u{20ac}', '\u{1f600}'];
    (0..usize::from(chars))
        .map(|i| ALPHABET[(i + usize::from(shift)) % 4])
        .collect()
}

/// When in a chunk's step a command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the chunk's bytes are added to the receive buffer.
    BeforeFeed,
    /// After the step's event with this number was answered (or after its events).
    AfterEvent(usize),
    /// After the step's events, their answers still queued.
    BeforeDrain,
    /// After the step's pings, close and output.
    AfterStep,
}

/// A lifecycle command of the shell or the application.
#[derive(Clone, Debug)]
enum Command {
    Fail(CloseCode, String),
    Timeout(Timeout),
}

/// A command at a fuzzed point.
#[derive(Clone, Debug)]
struct Action {
    chunk: usize,
    phase: Phase,
    command: Command,
}

impl Action {
    fn decode(bytes: &[u8; 5]) -> Action {
        let [when, kind, c0, c1, chars] = *bytes;
        let phase = match (when >> 4) & 3 {
            0 => Phase::BeforeFeed,
            1 => Phase::AfterEvent(usize::from(when >> 6)),
            2 => Phase::BeforeDrain,
            _ => Phase::AfterStep,
        };
        let command = match kind & 3 {
            1 => Command::Fail(CloseCode(u16::from_be_bytes([c0, c1])), reason(chars, c1)),
            2 => Command::Timeout(match (kind >> 2) & 3 {
                0 => Timeout::Keepalive,
                1 => Timeout::Idle,
                _ => Timeout::CloseHandshake,
            }),
            _ => Command::Fail(
                CloseCode(CODES[usize::from(kind >> 2) & 31]),
                reason(chars, c0),
            ),
        };
        Action {
            chunk: usize::from(when & 15),
            phase,
            command,
        }
    }
}

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
    actions: Vec<Action>,
    sizes: &'a [u8],
    stream: &'a [u8],
}

impl<'a> Input<'a> {
    fn decode(data: &'a [u8]) -> Option<Input<'a>> {
        let (&flags, rest) = data.split_first()?;
        let (&layout, mut rest) = rest.split_first()?;
        let mut actions = Vec::new();
        if layout & 8 != 0 {
            while let Some((command, tail)) = rest.split_first_chunk::<5>() {
                actions.push(Action::decode(command));
                rest = tail;
                if command[1] & 128 == 0 || actions.len() == 4 {
                    break;
                }
            }
        }
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
            actions,
            sizes,
            stream,
        })
    }

    fn config(&self) -> Config {
        Config::default()
            .max_frame_size(self.limits.frame)
            .max_message_size(self.limits.message)
            .auto_pong(self.auto_pong)
            .mask_seed(NonZeroU32::new(MASK_SEED))
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
    /// Everything written, for comparing runs.
    written: Vec<u8>,
    /// The close frame written, if one was.
    close: Option<Option<CloseFrame>>,
    /// The kind of the fragmented message being written, and its UTF-8 state.
    sending: Option<(DataKind, Utf8Validator)>,
}

impl OutputChecker {
    fn new(role: Role) -> OutputChecker {
        OutputChecker {
            role,
            pending: Vec::new(),
            written: Vec::new(),
            close: None,
            sending: None,
        }
    }

    /// Takes the connection's output and checks it. Returns the opcodes of the frames taken.
    fn drain(&mut self, conn: &mut Connection) -> Vec<OpCode> {
        let announced = conn.output_len();
        let bytes = conn.take_output();
        assert_eq!(bytes.len(), announced, "output_len() before take_output()");
        assert_eq!(conn.output_len(), 0);
        self.pending.extend_from_slice(&bytes);
        self.written.extend_from_slice(&bytes);
        let frames = self.check_frames();
        assert!(
            self.pending.is_empty(),
            "output ends inside a frame: {:x?}",
            self.pending
        );
        frames
    }

    fn check_frames(&mut self) -> Vec<OpCode> {
        let mut frames = Vec::new();
        loop {
            let (header, header_len) = match FrameHeader::parse(&self.pending) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return frames,
                Err(e) => panic!("connection wrote a bad frame header: {e}"),
            };
            let payload_len = usize::try_from(header.payload_len).expect("payload length");
            if self.pending.len() < header_len + payload_len {
                return frames;
            }
            frames.push(header.opcode);
            let mut payload = self.pending[header_len..header_len + payload_len].to_vec();
            self.pending.drain(..header_len + payload_len);

            // Section 5.5.1: no data frame and no second close after the close frame; a pong
            // still answers a ping that arrived before the peer's close (section 5.5.2).
            assert!(
                self.close.is_none() || header.opcode == OpCode::Pong,
                "frame {header:?} written after the close frame {:?}",
                self.close
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
                    self.close = Some(frame);
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

/// Rank of a transport action: [`Connection::transport`] never goes back to a lower one.
fn transport_rank(action: TransportAction) -> u8 {
    match action {
        TransportAction::Open => 0,
        TransportAction::AwaitClose => 1,
        TransportAction::Close => 2,
        TransportAction::Abort => 3,
        other => panic!("unknown transport action {other:?}"),
    }
}

/// One run of a connection over the input's chunks, with the input's commands.
struct Run<'a> {
    input: &'a Input<'a>,
    conn: Connection,
    output: OutputChecker,
    checker: EventChecker,
    events: Vec<Event>,
    error: Option<ProtocolError>,
    /// The peer's close frame was delivered.
    close_received: bool,
    /// `recv_eof` was called.
    eof: bool,
    /// A `fail` with a valid code or a timeout was handled: nothing more is delivered.
    stopped: bool,
    /// ... while the connection was still reading (not closed): the events are a prefix of
    /// those of the whole stream.
    cut: bool,
    /// `on_timeout` was called.
    timed_out: bool,
    /// The connection is closed and its output was taken since: nothing more may be written.
    sealed: bool,
    /// The last transport action seen.
    transport: TransportAction,
    /// Which of the input's commands ran.
    done: Vec<bool>,
    /// The largest `len + additional` the receive buffer was ever asked to hold.
    max_requested: usize,
}

/// Runs a connection of `role` over `data` (see the module docs for the layout).
pub fn frame_stream(role: Role, data: &[u8]) {
    let Some(input) = Input::decode(data) else {
        return;
    };
    let config = input.config();
    let run = Run::new(role, &input, config.clone()).go(data.len());
    if role == Role::Client {
        // With `Config::mask_seed` the masking keys, and so every byte, are the same.
        let again = Run::new(role, &input, config.clone()).go(data.len());
        assert!(
            run.output.written == again.output.written,
            "a client's output differs between two runs with the same mask seed"
        );
    }
    let Run {
        events, error, cut, ..
    } = run;

    // Split points must not matter: the same bytes at once give the same events and error.
    let (ref_events, ref_error) = all_at_once(role, config.clone(), &input, Connection::next_event);
    // Borrowing the events (`next_event_with`) gives the same events and the same error.
    let (lent_events, lent_error) = all_at_once(role, config, &input, |conn| {
        conn.next_event_with(|event, _| event.into_owned())
    });
    assert_eq!(lent_events, ref_events, "borrowed events differ");
    assert_eq!(lent_error, ref_error, "borrowed error differs");
    let (events, ref_events) = if input.streaming {
        // Streamed pieces follow the reads: compare them joined (see `merge_pieces`). A run
        // cut by a command drops its unfinished last piece, as one cut by an error does.
        (
            merge_pieces(events, error.is_some() || cut),
            merge_pieces(ref_events, ref_error.is_some()),
        )
    } else {
        (events, ref_events)
    };
    if cut {
        // A fail or timeout stopped the connection while it was reading: what it delivered
        // until then is what the whole stream starts with, and no error came.
        assert_eq!(error, None, "error after a fail or timeout");
        assert!(
            events.len() <= ref_events.len() && events[..] == ref_events[..events.len()],
            "events before a fail or timeout are not a prefix of the stream's: {events:?} \
             against {ref_events:?}"
        );
    } else {
        assert_eq!(events, ref_events, "events depend on split points");
        assert_eq!(error, ref_error, "error depends on split points");
    }
}

impl<'a> Run<'a> {
    fn new(role: Role, input: &'a Input<'a>, config: Config) -> Run<'a> {
        let conn = Connection::new(role, config);
        let transport = conn.transport();
        assert_eq!(transport, TransportAction::Open, "a new connection");
        Run {
            input,
            conn,
            output: OutputChecker::new(role),
            checker: EventChecker {
                limits: input.limits,
                fragments: input.fragments || input.streaming,
                message: None,
            },
            events: Vec::new(),
            error: None,
            close_received: false,
            eof: false,
            stopped: false,
            cut: false,
            timed_out: false,
            sealed: false,
            transport,
            done: vec![false; input.actions.len()],
            max_requested: 0,
        }
    }

    /// Feeds the chunks, answers the events, runs the commands; checks after every step.
    fn go(mut self, input_len: usize) -> Run<'a> {
        let input = self.input;
        let chunks = input.chunks();
        let n_chunks = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.act(|a| a.chunk == i && a.phase == Phase::BeforeFeed);
            let recv = self.conn.recv_buf();
            self.max_requested = self.max_requested.max(recv.len() + chunk.len());
            recv.extend_from_slice(chunk);
            if input.eof_at_end && i + 1 == n_chunks {
                self.conn.recv_eof();
                self.eof = true;
            }
            self.drain_events(Some(i));
            self.act(|a| a.chunk == i && a.phase == Phase::BeforeDrain);
            // Every event was answered; nothing is left unchecked.
            self.drain_output();

            let failed = self.error.is_some() || self.stopped;
            if input.ping_each_chunk {
                let payload = Bytes::from(vec![i as u8; i % 126]);
                let result = self.conn.send(Message::Ping(payload));
                expect_sent(result, &self.conn, failed, "ping");
            }
            if input.close_after_chunk == Some(i) {
                let frame = (!input.close_without_frame)
                    .then(|| CloseFrame::new(CloseCode::NORMAL, "fuzz"));
                self.conn.close(frame).expect("close with a valid code");
                // A failed connection sends nothing more, not even a close frame.
                assert!(self.conn.is_close_sent() || failed);
                assert_ne!(self.conn.state(), State::Open);
            }
            self.drain_output();
            self.act(|a| a.chunk == i && a.phase == Phase::AfterStep);

            check_buffer_bounds(&mut self.conn, input.limits, self.max_requested, input_len);
        }
        if n_chunks == 0 && input.eof_at_end {
            self.conn.recv_eof();
            self.eof = true;
            self.drain_events(None);
            self.drain_output();
        }
        // Commands for steps past the last one run now.
        self.act(|_| true);

        // A stopped connection stays stopped, whatever arrives later.
        if self.error.is_some() || self.close_received || self.stopped {
            assert_eq!(self.conn.state(), State::Closed);
            self.conn
                .recv_buf()
                .extend_from_slice(b"\x81\x80\x00\x00\x00\x00\x82\x00");
            for _ in 0..3 {
                assert_eq!(
                    self.conn.next_event(),
                    Ok(None),
                    "event after the connection stopped"
                );
            }
            self.drain_output();
        }
        // A client waits for the server to close the transport, then closes its end.
        if self.conn.transport() == TransportAction::AwaitClose {
            self.conn.recv_eof();
            self.eof = true;
            self.drain_events(None);
            self.drain_output();
            assert_eq!(self.conn.transport(), TransportAction::Close);
        }
        self
    }

    /// Runs the commands not run yet that `when` picks, in input order.
    fn act(&mut self, when: impl Fn(&Action) -> bool) {
        let input = self.input;
        for (k, action) in input.actions.iter().enumerate() {
            if !self.done[k] && when(action) {
                self.done[k] = true;
                self.command(&action.command);
            }
        }
    }

    /// Runs one command and checks what it did.
    fn command(&mut self, command: &Command) {
        let reading = self.conn.state() != State::Closed;
        if !matches!(command, Command::Timeout(Timeout::CloseHandshake)) {
            // What was queued before is checked apart from what the command queues.
            self.drain_output();
        }
        let close_sent_before = self.conn.is_close_sent();
        let expected_close = match command {
            Command::Fail(code, reason) => {
                let before = (
                    self.conn.state(),
                    self.conn.transport(),
                    self.conn.output_len(),
                    close_sent_before,
                    self.conn.is_close_received(),
                );
                let result = self.conn.fail(*code, reason);
                if !valid_on_wire(code.0) {
                    // Refused, and nothing changed.
                    assert_eq!(result, Err(SendError::InvalidCloseCode(code.0)));
                    let after = (
                        self.conn.state(),
                        self.conn.transport(),
                        self.conn.output_len(),
                        self.conn.is_close_sent(),
                        self.conn.is_close_received(),
                    );
                    assert_eq!(after, before, "fail({code:?}) changed the connection");
                    self.check_transport();
                    return;
                }
                assert_eq!(result, Ok(()), "fail({code:?})");
                (code.0, cut_reason(reason).to_owned())
            }
            Command::Timeout(timeout) => {
                self.conn.on_timeout(*timeout);
                self.timed_out = true;
                match timeout {
                    Timeout::Keepalive => (1011, "Keepalive timeout".to_owned()),
                    Timeout::Idle => (1001, "Idle timeout".to_owned()),
                    _ => {
                        // No close frame, and what was queued is dropped.
                        assert_eq!(self.conn.output_len(), 0, "output kept after {timeout:?}");
                        (0, String::new())
                    }
                }
            }
        };
        // A close frame unless one was sent, or the connection was closed already.
        let close_expected = reading && !close_sent_before && expected_close.0 != 0;
        if reading {
            self.cut = true;
        }
        self.stopped = true;
        assert_eq!(self.conn.state(), State::Closed, "after {command:?}");
        let frames = self.drain_output();
        let closes = frames.iter().filter(|&&op| op == OpCode::Close).count();
        assert_eq!(
            closes,
            usize::from(close_expected),
            "{command:?} wrote {frames:?}"
        );
        // Besides the close frame (last), only a pong held back for a ping received earlier.
        assert!(
            frames
                .iter()
                .all(|&op| op == OpCode::Pong || op == OpCode::Close),
            "{command:?} wrote {frames:?}"
        );
        if close_expected {
            assert_eq!(frames.last(), Some(&OpCode::Close));
            let written = self
                .output
                .close
                .clone()
                .flatten()
                .map(|f| (f.code.0, f.reason));
            assert_eq!(
                written
                    .as_ref()
                    .map(|(code, reason)| (*code, reason.as_str())),
                Some((expected_close.0, expected_close.1.as_str())),
                "close frame of {command:?}"
            );
        }
        self.check_transport();
    }

    /// Takes the output and checks it; once the connection is closed and its output was
    /// taken, nothing more may come.
    fn drain_output(&mut self) -> Vec<OpCode> {
        let frames = self.output.drain(&mut self.conn);
        assert!(
            !self.sealed || frames.is_empty(),
            "{frames:?} written after the connection closed"
        );
        self.sealed = self.conn.state() == State::Closed;
        self.check_transport();
        frames
    }

    /// The state and transport action follow from what happened, by the role; the transport
    /// action never goes back.
    fn check_transport(&mut self) {
        let conn = &self.conn;
        assert_eq!(conn.is_close_received(), self.close_received);
        let closed = self.error.is_some() || self.close_received || self.stopped;
        let state = if closed {
            State::Closed
        } else if conn.is_close_sent() {
            State::Closing
        } else {
            State::Open
        };
        assert_eq!(conn.state(), state);
        // Abort after a timeout, or an end of stream while reading (no close frame came).
        let aborted = self.timed_out || self.error == Some(ProtocolError::UnexpectedEof);
        let expected = if aborted {
            TransportAction::Abort
        } else if !closed {
            TransportAction::Open
        } else if conn.role() == Role::Server || self.eof {
            // RFC 6455 section 7.1.1: the server closes the TCP connection first; a client
            // once the server did.
            TransportAction::Close
        } else {
            TransportAction::AwaitClose
        };
        let now = conn.transport();
        assert_eq!(
            now,
            expected,
            "transport in {state:?} ({:?}, eof {}, {:?})",
            conn.role(),
            self.eof,
            self.error
        );
        assert!(
            transport_rank(now) >= transport_rank(self.transport),
            "transport went back from {:?} to {now:?}",
            self.transport
        );
        self.transport = now;
    }

    /// Takes events until the connection needs more bytes, answering each; `step` is the
    /// chunk's number, for the commands that run after an event.
    fn drain_events(&mut self, step: Option<usize>) {
        let mut n_events = 0;
        loop {
            let close_sent_before = self.conn.is_close_sent();
            let out_before = self.conn.output_len();
            match self.conn.next_event() {
                Ok(Some(event)) => {
                    assert!(
                        self.error.is_none(),
                        "event {event:?} after {:?}",
                        self.error
                    );
                    assert!(!self.stopped, "event {event:?} after a fail or timeout");
                    self.checker.check(&event);
                    if matches!(event, Event::Message(Message::Close(_))) {
                        self.close_received = true;
                        assert_eq!(self.conn.state(), State::Closed);
                        assert!(self.conn.is_close_sent(), "close not echoed");
                    }
                    respond(&mut self.conn, self.input, &event);
                    self.events.push(event);
                    self.check_transport();
                    if let Some(i) = step {
                        self.act(|a| a.chunk == i && a.phase == Phase::AfterEvent(n_events));
                    }
                    n_events += 1;
                }
                Ok(None) if self.conn.has_pending_work() => {}
                Ok(None) => break,
                Err(e) => {
                    assert!(
                        self.error.is_none(),
                        "second error {e:?} after {:?}",
                        self.error
                    );
                    assert!(!self.stopped, "error {e:?} after a fail or timeout");
                    assert_eq!(self.conn.state(), State::Closed);
                    // The failing call queued exactly one close frame, with the error's code,
                    // unless one was sent before (or the stream just ended).
                    let added = self.conn.output_len() - out_before;
                    let unexpected_eof = e == ProtocolError::UnexpectedEof;
                    self.error = Some(e.clone());
                    if close_sent_before || unexpected_eof {
                        assert_eq!(added, 0, "{e:?} queued {added} bytes");
                    } else {
                        let mask = if self.conn.role() == Role::Client {
                            4
                        } else {
                            0
                        };
                        assert!(
                            added >= 2 + mask + 2 && added <= 2 + mask + 125,
                            "{added} bytes"
                        );
                        self.drain_output();
                        assert_eq!(
                            self.output
                                .close
                                .as_ref()
                                .map(|f| f.as_ref().map(|f| f.code.0)),
                            Some(Some(e.close_code().0)),
                            "close frame for {e:?}"
                        );
                    }
                    self.check_transport();
                }
            }
        }
        if let Some(i) = step {
            // Commands after an event the step did not have.
            self.act(|a| a.chunk == i && matches!(a.phase, Phase::AfterEvent(_)));
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
