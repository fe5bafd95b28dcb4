//! Test harness shared by `rfc6455.rs` and `proptest.rs`.
//!
//! * [`Pair`]: a client and a server [`Connection`] wired together in memory (after
//!   `quinn-proto`'s test pair). Bytes move through each side's [`OutQueue`] with `chunk` and
//!   `advance`, the way a shell would write them, optionally a few bytes at a time.
//! * [`frame`] and friends build frames by hand, from the RFC's definitions and nothing in the
//!   crate (masking included), so that a bug in `frame` or `mask` cannot hide itself.
//! * [`parse_frames`] is the matching independent decoder for what a connection queued.
//!
//! [`OutQueue`]: fullduplex_proto::OutQueue
#![allow(dead_code)]

mod pieces;
// Only the proptests use it; `rfc6455.rs` shares this module too.
#[allow(unused_imports)]
pub use pieces::merge_pieces;

use bytes::{Buf, Bytes};
use fullduplex_proto::{
    CloseCode, Config, Connection, Event, EventRef, Fragment, Message, ProtocolError, Role,
};

/// The masking key of the RFC 6455 section 5.7 examples.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Opcodes as raw wire values (section 5.2), spelled out here rather than taken from the crate.
pub mod op {
    /// Continuation frame.
    pub const CONT: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// RSV bit values for the `rsv` argument of [`frame`].
pub const RSV1: u8 = 0b100;
/// RSV2.
pub const RSV2: u8 = 0b010;
/// RSV3.
pub const RSV3: u8 = 0b001;

// ----- building frames by hand -----

/// RFC 6455 section 5.3: "Octet i of the transformed data ("transformed-octet-i") is the XOR of
/// octet i of the original data ("original-octet-i") with octet at index i modulo 4 of the
/// masking key ("masking-key-octet-j")".
pub fn mask_payload(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, byte)| byte ^ key[i % 4])
        .collect()
}

/// A frame header in the minimal length form, announcing `len` bytes of payload.
/// `rsv` holds RSV1..RSV3 as its three low bits ([`RSV1`], [`RSV2`], [`RSV3`]).
pub fn header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 0b111) << 4) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len <= 125 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A whole frame: header, then the payload masked with `mask` if there is one.
pub fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = header(fin, rsv, opcode, mask, payload.len() as u64);
    match mask {
        Some(key) => out.extend_from_slice(&mask_payload(payload, key)),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A final frame as a client sends it (masked with [`KEY`]).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, Some(KEY), payload)
}

/// A final frame as a server sends it (unmasked).
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, None, payload)
}

/// A frame as the peer of `role` would send it: masked towards a server, unmasked towards a
/// client.
pub fn frame_to(role: Role, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = match role {
        Role::Server => Some(KEY),
        Role::Client => None,
    };
    frame(fin, 0, opcode, mask, payload)
}

/// The payload of a close frame: the code in network byte order, then the reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// Concatenates frames into one byte stream.
pub fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

// ----- decoding what a connection queued, independently of the crate -----

/// A frame decoded by [`parse_frames`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1..RSV3 as the three low bits.
    pub rsv: u8,
    /// The 4-bit opcode.
    pub opcode: u8,
    /// The masking key, if the mask bit was set.
    pub mask: Option<[u8; 4]>,
    /// The header bytes as they were on the wire.
    pub header: Vec<u8>,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The status code of a close frame, `None` when its payload is empty.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, op::CLOSE, "not a close frame: {self:?}");
        match self.payload.len() {
            0 => None,
            1 => panic!("close frame with a 1-byte payload"),
            _ => Some(u16::from_be_bytes([self.payload[0], self.payload[1]])),
        }
    }

    /// The reason of a close frame (the bytes after the code).
    pub fn close_reason(&self) -> &[u8] {
        self.payload.get(2..).unwrap_or(&[])
    }
}

/// Decodes a stream of frames. Panics on a truncated frame, a non-minimal length, or a control
/// frame breaking section 5.5: everything a connection queues must be a well-formed frame.
pub fn parse_frames(mut bytes: &[u8]) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "truncated header: {bytes:x?}");
        let (b0, b1) = (bytes[0], bytes[1]);
        let mut pos = 2;
        let len = match b1 & 0x7f {
            126 => {
                let len = u16::from_be_bytes([bytes[2], bytes[3]]) as u64;
                assert!(len >= 126, "16-bit length form used for {len} bytes");
                pos = 4;
                len
            }
            127 => {
                let mut ext = [0u8; 8];
                ext.copy_from_slice(&bytes[2..10]);
                let len = u64::from_be_bytes(ext);
                assert!(len > 0xffff, "64-bit length form used for {len} bytes");
                assert_eq!(len >> 63, 0, "most significant bit of a 64-bit length set");
                pos = 10;
                len
            }
            len => len as u64,
        };
        let mask = if b1 & 0x80 != 0 {
            let key = [bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]];
            pos += 4;
            Some(key)
        } else {
            None
        };
        let len = len as usize;
        assert!(bytes.len() >= pos + len, "truncated payload");
        let raw = &bytes[pos..pos + len];
        let payload = match mask {
            Some(key) => mask_payload(raw, key),
            None => raw.to_vec(),
        };
        let frame = RawFrame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0b111,
            opcode: b0 & 0x0f,
            mask,
            header: bytes[..pos].to_vec(),
            payload,
        };
        if frame.opcode & 0x8 != 0 {
            assert!(frame.fin, "fragmented control frame queued: {frame:?}");
            assert!(frame.payload.len() <= 125, "control frame over 125 bytes");
        }
        frames.push(frame);
        bytes = &bytes[pos + len..];
    }
    frames
}

/// Takes everything `conn` queued (through the `Buf` interface, as a shell would) and decodes
/// it. Also checks section 5.1's masking rule for the sender's role.
pub fn take_frames(conn: &mut Connection) -> Vec<RawFrame> {
    let bytes = take_bytes(conn);
    let frames = parse_frames(&bytes);
    for frame in &frames {
        match conn.role() {
            Role::Client => assert!(frame.mask.is_some(), "client sent an unmasked frame"),
            Role::Server => assert!(frame.mask.is_none(), "server sent a masked frame"),
        }
    }
    frames
}

/// Takes all queued output as bytes, reading it chunk by chunk.
pub fn take_bytes(conn: &mut Connection) -> Vec<u8> {
    let out = conn.output();
    let mut bytes = Vec::with_capacity(out.remaining());
    while out.has_remaining() {
        let chunk = out.chunk();
        assert!(
            !chunk.is_empty(),
            "OutQueue::chunk empty while bytes remain"
        );
        let n = chunk.len();
        bytes.extend_from_slice(chunk);
        out.advance(n);
    }
    assert_eq!(conn.output_len(), 0);
    bytes
}

/// The close frames among `frames`.
pub fn close_frames(frames: &[RawFrame]) -> Vec<&RawFrame> {
    frames.iter().filter(|f| f.opcode == op::CLOSE).collect()
}

// ----- events -----

/// What a connection yielded: its events in order, then the error that failed it, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Events delivered.
    pub events: Vec<Event>,
    /// The protocol error, if the connection failed.
    pub error: Option<ProtocolError>,
}

impl Outcome {
    /// Records one result of `next_event` (not `Ok(None)`). Panics if anything is delivered after
    /// an error: "the connection delivers nothing more".
    pub fn record(&mut self, result: Result<Event, ProtocolError>) {
        assert!(
            self.error.is_none(),
            "{result:?} delivered after {:?}",
            self.error
        );
        match result {
            Ok(event) => self.events.push(event),
            Err(error) => self.error = Some(error),
        }
    }

    /// Appends what a later drain produced.
    pub fn absorb(&mut self, later: Outcome) {
        for event in later.events {
            self.record(Ok(event));
        }
        if let Some(error) = later.error {
            self.record(Err(error));
        }
    }

    /// The events as messages; panics on a fragment.
    pub fn messages(&self) -> Vec<Message> {
        self.events
            .iter()
            .map(|event| match event {
                Event::Message(message) => message.clone(),
                Event::Fragment(fragment) => panic!("unexpected fragment {fragment:?}"),
            })
            .collect()
    }

    /// The events as fragments; panics on a message.
    pub fn fragments(&self) -> Vec<Fragment> {
        self.events
            .iter()
            .map(|event| match event {
                Event::Fragment(fragment) => fragment.clone(),
                Event::Message(message) => panic!("unexpected message {message:?}"),
            })
            .collect()
    }

    /// Asserts that nothing failed and returns the messages.
    pub fn ok_messages(&self) -> Vec<Message> {
        assert_eq!(self.error, None, "events so far: {:?}", self.events);
        self.messages()
    }

    /// Asserts that the connection failed and returns the error.
    pub fn err(&self) -> ProtocolError {
        match &self.error {
            Some(error) => error.clone(),
            None => panic!("expected a protocol error, got {:?}", self.events),
        }
    }
}

/// Calls `next_event` until it needs more bytes or fails (through inflate slices).
pub fn drain(conn: &mut Connection) -> Outcome {
    let mut outcome = Outcome::default();
    loop {
        match conn.next_event() {
            Ok(Some(event)) => outcome.record(Ok(event)),
            // Inflating paused after a slice: go on, as a shell does after yielding.
            Ok(None) if conn.has_pending_work() => {}
            Ok(None) => return outcome,
            Err(error) => {
                outcome.record(Err(error));
                return outcome;
            }
        }
    }
}

/// [`drain`] through [`Connection::next_event_with`]: each event is borrowed and copied out.
/// Data messages are echoed through the outbox when `echo` is set.
pub fn drain_borrowed(conn: &mut Connection, echo: bool) -> Outcome {
    let mut outcome = Outcome::default();
    loop {
        let next = conn.next_event_with(|event, out| {
            if let EventRef::Message(message) = event {
                if echo && message.is_data() {
                    out.send_ref(message)
                        .expect("an open connection takes the echo");
                }
            }
            event.into_owned()
        });
        match next {
            Ok(Some(event)) => outcome.record(Ok(event)),
            // Inflating paused after a slice: go on, as a shell does after yielding.
            Ok(None) if conn.has_pending_work() => {}
            Ok(None) => return outcome,
            Err(error) => {
                outcome.record(Err(error));
                return outcome;
            }
        }
    }
}

/// Appends `bytes` to the receive buffer and drains.
pub fn feed(conn: &mut Connection, bytes: &[u8]) -> Outcome {
    conn.recv_buf().extend_from_slice(bytes);
    drain(conn)
}

/// Appends `bytes` `n` at a time, draining after each piece (and going on after an error, to
/// check that nothing more comes out).
pub fn feed_chunked(conn: &mut Connection, bytes: &[u8], n: usize) -> Outcome {
    assert!(n > 0);
    let mut outcome = Outcome::default();
    for piece in bytes.chunks(n) {
        outcome.absorb(feed(conn, piece));
    }
    outcome
}

/// Appends `bytes` cut at the given offsets (sorted, within bounds), draining after each piece.
pub fn feed_split(conn: &mut Connection, bytes: &[u8], cuts: &[usize]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let cut = cut.clamp(start, bytes.len());
        outcome.absorb(feed(conn, &bytes[start..cut]));
        start = cut;
    }
    outcome
}

/// A text message event.
pub fn text(s: &str) -> Event {
    Event::Message(Message::text(s))
}

/// A binary message event.
pub fn binary(data: &[u8]) -> Event {
    Event::Message(Message::Binary(Bytes::copy_from_slice(data)))
}

/// A ping event.
pub fn ping(data: &[u8]) -> Event {
    Event::Message(Message::Ping(Bytes::copy_from_slice(data)))
}

/// A pong event.
pub fn pong(data: &[u8]) -> Event {
    Event::Message(Message::Pong(Bytes::copy_from_slice(data)))
}

/// A close event with a code and reason.
pub fn close(code: u16, reason: &str) -> Event {
    Event::Message(Message::Close(Some(fullduplex_proto::CloseFrame::new(
        CloseCode(code),
        reason,
    ))))
}

// ----- the pair -----

/// A client and a server wired together in memory.
#[derive(Debug)]
pub struct Pair {
    /// The end that sent the upgrade request.
    pub client: Connection,
    /// The end that accepted it.
    pub server: Connection,
}

impl Default for Pair {
    fn default() -> Pair {
        Pair::new()
    }
}

/// Moves at most `n` bytes of `from`'s output into `to`'s receive buffer (one partial write).
/// Returns how many moved.
fn transmit(from: &mut Connection, to: &mut Connection, n: usize) -> usize {
    let out = from.output();
    let chunk = out.chunk();
    let len = chunk.len().min(n);
    to.recv_buf().extend_from_slice(&chunk[..len]);
    out.advance(len);
    len
}

/// Moves all of `from`'s output to `to`, `n` bytes at a time, draining `to` after each move.
fn deliver(from: &mut Connection, to: &mut Connection, n: usize) -> Outcome {
    let mut outcome = Outcome::default();
    while from.output_len() > 0 {
        assert!(transmit(from, to, n) > 0, "no progress moving output");
        outcome.absorb(drain(to));
    }
    outcome.absorb(drain(to));
    outcome
}

impl Pair {
    /// Both ends with the default configuration.
    pub fn new() -> Pair {
        Pair::with_configs(Config::default(), Config::default())
    }

    /// Each end with its own configuration.
    pub fn with_configs(client: Config, server: Config) -> Pair {
        Pair {
            client: Connection::new(Role::Client, client),
            server: Connection::new(Role::Server, server),
        }
    }

    /// Moves everything the client queued to the server and collects the server's events.
    pub fn client_to_server(&mut self) -> Outcome {
        deliver(&mut self.client, &mut self.server, usize::MAX)
    }

    /// Like [`Pair::client_to_server`], `n` bytes at a time.
    pub fn client_to_server_chunked(&mut self, n: usize) -> Outcome {
        deliver(&mut self.client, &mut self.server, n)
    }

    /// Moves everything the server queued to the client and collects the client's events.
    pub fn server_to_client(&mut self) -> Outcome {
        deliver(&mut self.server, &mut self.client, usize::MAX)
    }

    /// Like [`Pair::server_to_client`], `n` bytes at a time.
    pub fn server_to_client_chunked(&mut self, n: usize) -> Outcome {
        deliver(&mut self.server, &mut self.client, n)
    }

    /// The server's pending events.
    pub fn server_events(&mut self) -> Outcome {
        drain(&mut self.server)
    }

    /// The client's pending events.
    pub fn client_events(&mut self) -> Outcome {
        drain(&mut self.client)
    }

    /// A hostile client: raw bytes straight into the server.
    pub fn raw_to_server(&mut self, bytes: &[u8]) -> Outcome {
        feed(&mut self.server, bytes)
    }

    /// A hostile server: raw bytes straight into the client.
    pub fn raw_to_client(&mut self, bytes: &[u8]) -> Outcome {
        feed(&mut self.client, bytes)
    }

    /// The frames the server queued (taken).
    pub fn server_output(&mut self) -> Vec<RawFrame> {
        take_frames(&mut self.server)
    }

    /// The frames the client queued (taken).
    pub fn client_output(&mut self) -> Vec<RawFrame> {
        take_frames(&mut self.client)
    }

    /// The connection of `role`.
    pub fn side(&mut self, role: Role) -> &mut Connection {
        match role {
            Role::Client => &mut self.client,
            Role::Server => &mut self.server,
        }
    }
}

/// A lone connection of `role` with the default configuration.
pub fn conn(role: Role) -> Connection {
    Connection::new(role, Config::default())
}

/// Both roles, for tests that hold for either end.
pub const ROLES: [Role; 2] = [Role::Client, Role::Server];
