//! Received messages borrowed from the receive buffer, and the send side of a connection
//! while one is being handled ([`Connection::next_event_with`]).
//!
//! An owned [`Message`] is a reference-counted slice of the receive buffer: cheap, but each one
//! costs a split of the buffer, a shared count and its release. A handler that only looks at a
//! message (parses it, answers it, copies what it keeps) needs none of that: it can borrow the
//! bytes where they were unmasked and validated, and queue its replies through an [`Outbox`]
//! meanwhile.

use bytes::Bytes;

use crate::close::CloseFrame;
use crate::connection::{Connection, Event, Fragment, Role, State};
use crate::error::SendError;
use crate::frame::OpCode;
use crate::message::{DataKind, Message};
use crate::out::COPY_THRESHOLD;

/// A received message, borrowed: valid while the handler given to
/// [`Connection::next_event_with`] runs.
///
/// ```
/// use fullduplex_proto::{Message, MessageRef};
/// let owned = Message::text("hi");
/// let borrowed = owned.borrowed();
/// assert_eq!(borrowed, MessageRef::Text("hi"));
/// assert_eq!(borrowed.to_message(), owned);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRef<'a> {
    /// A text message (valid UTF-8, checked once while it arrived).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping (already answered, unless automatic pongs are off).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame; `None` when it carried no status code.
    Close(Option<&'a CloseFrame>),
}

impl<'a> MessageRef<'a> {
    /// An owned copy.
    pub fn to_message(&self) -> Message {
        match *self {
            MessageRef::Text(text) => Message::text(text),
            MessageRef::Binary(data) => Message::Binary(Bytes::copy_from_slice(data)),
            MessageRef::Ping(data) => Message::Ping(Bytes::copy_from_slice(data)),
            MessageRef::Pong(data) => Message::Pong(Bytes::copy_from_slice(data)),
            MessageRef::Close(frame) => Message::Close(frame.cloned()),
        }
    }

    /// True for text and binary messages.
    #[inline]
    pub fn is_data(&self) -> bool {
        matches!(self, MessageRef::Text(_) | MessageRef::Binary(_))
    }

    /// The text of a text message.
    #[inline]
    pub fn as_text(&self) -> Option<&'a str> {
        match *self {
            MessageRef::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The payload of a text, binary, ping or pong message (empty for close).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        match *self {
            MessageRef::Text(text) => text.as_bytes(),
            MessageRef::Binary(data) | MessageRef::Ping(data) | MessageRef::Pong(data) => data,
            MessageRef::Close(_) => &[],
        }
    }
}

impl Message {
    /// This message, borrowed.
    pub fn borrowed(&self) -> MessageRef<'_> {
        match self {
            Message::Text(text) => MessageRef::Text(text.as_str()),
            Message::Binary(data) => MessageRef::Binary(data),
            Message::Ping(data) => MessageRef::Ping(data),
            Message::Pong(data) => MessageRef::Pong(data),
            Message::Close(frame) => MessageRef::Close(frame.as_ref()),
        }
    }
}

/// A piece of a data message, borrowed (see [`Fragment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentRef<'a> {
    /// Text or binary: the kind of the whole message.
    pub kind: DataKind,
    /// This piece's payload; for text it may end inside a code point (see [`Fragment`]).
    pub payload: &'a [u8],
    /// The first piece of its message.
    pub is_first: bool,
    /// The last piece of its message.
    pub is_last: bool,
}

/// What the core delivers, borrowed (see [`Event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRef<'a> {
    /// A whole message, or a control message.
    Message(MessageRef<'a>),
    /// A piece of a data message, in [`ReceiveMode::Fragments`](crate::ReceiveMode::Fragments)
    /// and [`ReceiveMode::Streaming`](crate::ReceiveMode::Streaming).
    Fragment(FragmentRef<'a>),
}

impl Event {
    /// This event, borrowed.
    pub fn borrowed(&self) -> EventRef<'_> {
        match self {
            Event::Message(message) => EventRef::Message(message.borrowed()),
            Event::Fragment(fragment) => EventRef::Fragment(FragmentRef {
                kind: fragment.kind,
                payload: &fragment.payload,
                is_first: fragment.is_first,
                is_last: fragment.is_last,
            }),
        }
    }
}

/// The send side of a [`Connection`] while a borrowed event is being handled: replies are
/// queued as with the connection's own commands, and leave with its output.
///
/// ```
/// use fullduplex_proto::{Config, Connection, EventRef, Message, MessageRef, Role};
/// let mut client = Connection::new(Role::Client, Config::default());
/// let mut server = Connection::new(Role::Server, Config::default());
/// client.send(Message::text("ping me")).unwrap();
/// server.recv_buf().extend_from_slice(&client.take_output());
/// // An echo: the reply is copied from the receive buffer into the output, nothing else.
/// let echoed = server.next_event_with(|event, out| match event {
///     EventRef::Message(message) if message.is_data() => out.send_ref(message),
///     _ => Ok(()),
/// });
/// assert_eq!(echoed, Ok(Some(Ok(()))));
/// client.recv_buf().extend_from_slice(&server.take_output());
/// let reply = client.next_event_with(|event, _| event.into_owned());
/// assert_eq!(reply, Ok(Some(fullduplex_proto::Event::Message(Message::text("ping me")))));
/// ```
#[derive(Debug)]
pub struct Outbox<'a> {
    conn: &'a mut Connection,
    /// The lent message's payload when it was split off the receive buffer: what is sent
    /// from it is queued by reference.
    shared: Option<&'a Bytes>,
}

impl<'a> Outbox<'a> {
    pub(crate) fn new(conn: &'a mut Connection) -> Outbox<'a> {
        Outbox { conn, shared: None }
    }

    /// An outbox while a message held in `shared` is lent.
    pub(crate) fn lending(conn: &'a mut Connection, shared: Option<&'a Bytes>) -> Outbox<'a> {
        Outbox { conn, shared }
    }

    /// `payload` as a slice of the lent message's bytes, when it lies in them and is large
    /// enough to be queued by reference rather than copied.
    #[inline]
    fn share(&self, payload: &[u8]) -> Option<Bytes> {
        let shared = self.shared.filter(|_| payload.len() >= COPY_THRESHOLD)?;
        let start = payload.as_ptr() as usize;
        let within = start >= shared.as_ptr() as usize
            && start + payload.len() <= shared.as_ptr() as usize + shared.len();
        within.then(|| shared.slice_ref(payload))
    }

    /// Queues a data message from a slice: by reference when it lies in the lent message.
    #[inline]
    fn send_slice(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        match self.share(payload) {
            Some(shared) => self.send_shared(opcode, shared),
            None => self.conn.send_data_slice(opcode, payload),
        }
    }

    /// Kept out of line: inlined, it made the compiler move the copying path (the one small
    /// messages take) into a function of its own, about 40 instructions more per message.
    #[inline(never)]
    fn send_shared(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        self.conn.send_data(opcode, payload, true)
    }

    /// Queues an owned message ([`Connection::send`]).
    #[inline]
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.conn.send(message)
    }

    /// Queues a borrowed message ([`Connection::send_ref`]): copied, unless it is (a part
    /// of) a lent message of [`COPY_THRESHOLD`] bytes or more that was split off the receive
    /// buffer, which a server queues by reference.
    #[inline]
    pub fn send_ref(&mut self, message: MessageRef<'_>) -> Result<(), SendError> {
        match message {
            MessageRef::Text(text) => self.send_text(text),
            MessageRef::Binary(data) => self.send_binary(data),
            control => self.conn.send_ref(control),
        }
    }

    /// Queues a text message (copied, or shared as [`send_ref`](Outbox::send_ref) says).
    #[inline]
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_slice(OpCode::Text, text.as_bytes())
    }

    /// Queues a binary message (copied, or shared as [`send_ref`](Outbox::send_ref) says).
    #[inline]
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_slice(OpCode::Binary, data)
    }

    /// Queues one frame of a fragmented message ([`Connection::send_fragment`]).
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: Bytes,
        is_last: bool,
    ) -> Result<(), SendError> {
        self.conn.send_fragment(kind, payload, is_last)
    }

    /// Starts (or answers) the close handshake ([`Connection::close`]).
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        self.conn.close(frame)
    }

    /// Bytes queued and not yet written ([`Connection::output_len`]).
    #[inline]
    pub fn output_len(&self) -> usize {
        self.conn.output_len()
    }

    /// Where the close handshake stands.
    #[inline]
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// This end's role.
    #[inline]
    pub fn role(&self) -> Role {
        self.conn.role()
    }
}

impl EventRef<'_> {
    /// An owned copy.
    pub fn into_owned(self) -> Event {
        match self {
            EventRef::Message(message) => Event::Message(message.to_message()),
            EventRef::Fragment(fragment) => Event::Fragment(Fragment {
                kind: fragment.kind,
                payload: Bytes::copy_from_slice(fragment.payload),
                is_first: fragment.is_first,
                is_last: fragment.is_last,
            }),
        }
    }
}
