//! Received messages borrowed from the receive buffer, and the send side of a connection
//! while one is being handled ([`Connection::next_event_with`](crate::Connection::next_event_with)).
//!
//! An owned [`Message`] is a reference-counted slice of the receive buffer: cheap, but each one
//! costs a split of the buffer, a shared count and its release. A handler that only looks at a
//! message (parses it, answers it, copies what it keeps) needs none of that: it can borrow the
//! bytes where they were unmasked and validated, and queue its replies through an [`Outbox`](crate::Outbox)
//! meanwhile.

use bytes::Bytes;

use crate::close::CloseFrame;
use crate::event::{Event, Fragment};
use crate::message::{DataKind, Message};

/// A received message, borrowed: valid while the handler given to
/// [`Connection::next_event_with`](crate::Connection::next_event_with) runs.
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
