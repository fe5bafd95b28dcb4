//! What the core delivers to the application: whole messages, or pieces of them.

use bytes::Bytes;

use crate::message::{DataKind, Message};

/// A piece of a data message: one frame of it in [`ReceiveMode::Fragments`](crate::ReceiveMode::Fragments), what has arrived
/// of it since the last piece in [`ReceiveMode::Streaming`](crate::ReceiveMode::Streaming).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Text or binary: the kind of the whole message.
    pub kind: DataKind,
    /// This piece's payload (unmasked, inflated). For text, a piece may end inside a code
    /// point; everything delivered so far is valid UTF-8 up to such an unfinished code point,
    /// and the message as a whole has been validated once the last piece is delivered.
    pub payload: Bytes,
    /// The first frame of its message.
    pub is_first: bool,
    /// The last frame of its message.
    pub is_last: bool,
}

/// What the core delivers to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message, or a control message (ping, pong, close).
    Message(Message),
    /// A piece of a data message, in [`ReceiveMode::Fragments`](crate::ReceiveMode::Fragments) and
    /// [`ReceiveMode::Streaming`](crate::ReceiveMode::Streaming).
    Fragment(Fragment),
}
