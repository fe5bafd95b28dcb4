//! Close codes and close frames (RFC 6455 sections 5.5.1 and 7.4).

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::utf8::Utf8Bytes;

/// A close status code (RFC 6455 section 7.4).
///
/// Any `u16` can be represented; [`CloseCode::is_valid_on_wire`] tells which may appear in a
/// close frame. The named constants are the codes registered with IANA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: reserved, never on the wire: the close frame had no code.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: reserved, never on the wire: the connection closed without a close frame.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with its type (invalid UTF-8 in a text message).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message that violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (also used for slow consumers).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway got an invalid response from upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: reserved, never on the wire: the TLS handshake failed.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether the code may appear in a close frame: 1000-1003, 1007-1014 (the codes IANA has
    /// assigned), and 3000-4999 (libraries, frameworks and applications). Everything else,
    /// including the reserved 1004, 1005, 1006 and 1015, fails the connection with 1002.
    ///
    /// ```
    /// use fullduplex_proto::CloseCode;
    /// assert!(CloseCode(1000).is_valid_on_wire());
    /// assert!(CloseCode(4999).is_valid_on_wire());
    /// assert!(!CloseCode(1005).is_valid_on_wire());
    /// assert!(!CloseCode(2999).is_valid_on_wire());
    /// ```
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> CloseCode {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The body of a close frame: a code and a UTF-8 reason (at most 123 bytes on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, possibly empty.
    pub reason: Utf8Bytes,
}

/// The largest close reason that fits in a control frame (125 - 2 bytes of code).
pub const MAX_REASON_LEN: usize = 123;

impl CloseFrame {
    /// A close frame with a code and a reason.
    ///
    /// ```
    /// use fullduplex_proto::{CloseCode, CloseFrame};
    /// let frame = CloseFrame::new(CloseCode::NORMAL, "bye");
    /// assert_eq!(frame.reason.as_str(), "bye");
    /// ```
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> CloseFrame {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }

    /// Appends the payload (code then reason) to `out`. The reason is cut to
    /// [`MAX_REASON_LEN`] bytes, at a character boundary, so the frame stays legal.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.code.0);
        out.extend_from_slice(truncate_reason(self.reason.as_str()).as_bytes());
    }

    /// The payload length once encoded.
    pub fn encoded_len(&self) -> usize {
        2 + truncate_reason(self.reason.as_str()).len()
    }
}

fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {:?}", self.code, self.reason.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_matches_autobahn_lists() {
        // Autobahn 7.7.x (valid) and 7.9.x (invalid).
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn long_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let frame = CloseFrame::new(CloseCode::NORMAL, reason.as_str());
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        assert!(out.len() <= 125);
        assert_eq!(out.len(), frame.encoded_len());
        assert!(std::str::from_utf8(&out[2..]).is_ok());
    }
}
