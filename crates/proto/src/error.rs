//! Errors of the core: [`ProtocolError`] is the peer's fault, [`SendError`] the caller's.

use bytes::Bytes;
use thiserror::Error;

use crate::close::{CloseCode, CloseFrame};
use crate::deflate::DeflateError;
use crate::frame::FrameError;
use crate::utf8::Utf8Bytes;

/// The peer broke the protocol (or hung up). The connection is failed: the core has queued a
/// close frame with [`ProtocolError::close_code`] (except for [`ProtocolError::UnexpectedEof`])
/// and delivers no more events.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A malformed frame header (reserved opcode, oversized 64-bit length).
    #[error("bad frame header: {0}")]
    Frame(#[from] FrameError),
    /// RSV1, RSV2 or RSV3 set without an extension that defines it.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A server received a frame without a mask.
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A client received a masked frame.
    #[error("server frame is masked")]
    MaskedFrame,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLarge,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A close frame with a 1-byte payload.
    #[error("close frame payload of 1 byte")]
    CloseLength,
    /// A close code that may not appear on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// Text (or a close reason) that is not valid UTF-8.
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    /// A frame larger than [`crate::Config::max_frame_size`].
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// The announced payload length.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// A message larger than [`crate::Config::max_message_size`].
    #[error("message exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A compressed message could not be inflated (1007), or inflates past the message limit
    /// (1009).
    #[error("permessage-deflate: {0}")]
    Deflate(DeflateError),
    /// The stream ended without a close handshake (code 1006, never sent).
    #[error("connection closed without a close frame")]
    UnexpectedEof,
}

impl ProtocolError {
    /// The close code this error fails the connection with.
    ///
    /// ```
    /// use fullduplex_proto::{CloseCode, ProtocolError};
    /// assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode::INVALID_PAYLOAD);
    /// assert_eq!(ProtocolError::ReservedBits.close_code(), CloseCode::PROTOCOL_ERROR);
    /// ```
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                CloseCode::MESSAGE_TOO_BIG
            }
            ProtocolError::UnexpectedEof => CloseCode::ABNORMAL,
            ProtocolError::Deflate(error) => error.close_code(),
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Parsing a close frame, here with the errors it fails with (the close frame itself is a
/// lower-level type that knows no protocol errors).
impl CloseFrame {
    /// Parses a received close payload (already unmasked, at most 125 bytes).
    ///
    /// An empty payload is `Ok(None)` (no status code). A 1-byte payload or a code that may not
    /// appear on the wire fails with 1002, a reason that is not UTF-8 with 1007.
    pub fn parse(payload: Bytes) -> Result<Option<CloseFrame>, ProtocolError> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(ProtocolError::CloseLength),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_valid_on_wire() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = Utf8Bytes::try_from(payload.slice(2..))
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Some(CloseFrame { code, reason }))
            }
        }
    }
}

/// The caller asked for something the protocol does not allow now. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent (or the connection failed): no more data may be sent.
    #[error("the connection is closing or closed")]
    Closed,
    /// A ping or pong payload over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLarge,
    /// A close code that may not be sent (such as 1005 or 1006).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A whole message (or a fragment of another kind) while a fragmented message is being sent.
    #[error("a fragmented message is being sent; finish it first")]
    FragmentInProgress,
    /// Text fragments that are not valid UTF-8.
    #[error("text fragments are not valid UTF-8")]
    InvalidUtf8,
    /// Compressing the message failed (an internal error of the compressor).
    #[error("compression failed: {0}")]
    Compression(DeflateError),
    /// Pre-encoded frames can only be sent by a server (clients mask every frame).
    #[error("pre-encoded frames can only be sent by a server")]
    EncodedFrameFromClient,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::CloseCode;

    #[test]
    fn parse_cases() {
        assert_eq!(CloseFrame::parse(Bytes::new()), Ok(None));
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[3])),
            Err(ProtocolError::CloseLength)
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xed])), // 1005
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xe8, 0xff])),
            Err(ProtocolError::InvalidUtf8)
        );
        let frame = CloseFrame::parse(Bytes::from_static(b"\x0f\xa0bye"))
            .unwrap()
            .unwrap();
        assert_eq!(frame, CloseFrame::new(CloseCode(4000), "bye"));
    }
}
