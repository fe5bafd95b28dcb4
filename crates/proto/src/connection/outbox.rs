//! [`Outbox`]: the send side of a connection, lent to the handler of a borrowed message.

use bytes::Bytes;

use super::{Connection, Role, State};
use crate::borrowed::MessageRef;
use crate::close::CloseFrame;
use crate::error::SendError;
use crate::frame::OpCode;
use crate::message::{DataKind, Message};
use crate::out::COPY_THRESHOLD;

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
