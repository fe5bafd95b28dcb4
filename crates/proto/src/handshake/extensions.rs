//! The `Sec-WebSocket-Extensions` header (RFC 6455 section 9.1).
//!
//! ```text
//! Sec-WebSocket-Extensions = extension-list
//! extension-list = 1#extension
//! extension = extension-token *( ";" extension-param )
//! extension-token = registered-token
//! registered-token = token
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//!
//! A quoted value must still be a token once unquoted. Both the client's offers and the server's
//! answer use this grammar, so both are [`ExtensionOffer`]s.

use std::fmt::Write as _;

use http::header::SEC_WEBSOCKET_EXTENSIONS;
use http::HeaderMap;

use super::{is_tchar, is_token, HandshakeError};
pub use crate::extension::{ExtensionOffer, ExtensionParam};

/// Parses every `Sec-WebSocket-Extensions` line of `headers`, in order.
///
/// Empty list elements are skipped; anything else that does not follow the grammar is
/// [`HandshakeError::InvalidExtensions`].
///
/// ```
/// use fullduplex_proto::handshake::parse_extensions;
/// use http::{HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.append(
///     "sec-websocket-extensions",
///     HeaderValue::from_static("permessage-deflate; client_max_window_bits=\"15\", x-foo"),
/// );
/// let offers = parse_extensions(&headers)?;
/// assert_eq!(offers.len(), 2);
/// assert_eq!(offers[0].param("client_max_window_bits"), Some(Some("15")));
/// assert_eq!(offers[1].name, "x-foo");
/// # Ok::<(), fullduplex_proto::handshake::HandshakeError>(())
/// ```
pub fn parse_extensions(headers: &HeaderMap) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    let mut offers = Vec::new();
    for line in headers.get_all(SEC_WEBSOCKET_EXTENSIONS) {
        Parser {
            input: line.as_bytes(),
            pos: 0,
        }
        .list(&mut offers)?;
    }
    Ok(offers)
}

/// Formats extensions as a `Sec-WebSocket-Extensions` value, the inverse of
/// [`parse_extensions`]. Values that are not tokens are written as quoted strings.
///
/// ```
/// use fullduplex_proto::handshake::{format_extensions, ExtensionOffer, ExtensionParam};
///
/// let offers = [
///     ExtensionOffer::new("permessage-deflate")
///         .with_param(ExtensionParam::new("client_max_window_bits", None))
///         .with_param(ExtensionParam::new("server_max_window_bits", Some("10"))),
///     ExtensionOffer::new("permessage-deflate"),
/// ];
/// assert_eq!(
///     format_extensions(&offers),
///     "permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate"
/// );
/// ```
pub fn format_extensions(offers: &[ExtensionOffer]) -> String {
    let mut out = String::new();
    for (i, offer) in offers.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&offer.name);
        for param in &offer.params {
            out.push_str("; ");
            out.push_str(&param.name);
            if let Some(value) = &param.value {
                out.push('=');
                if is_token(value) {
                    out.push_str(value);
                } else {
                    let _ = write!(
                        out,
                        "\"{}\"",
                        value.replace('\\', "\\\\").replace('"', "\\\"")
                    );
                }
            }
        }
    }
    out
}

/// A cursor over one header line.
struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// `#extension`: comma-separated, empty elements allowed.
    fn list(&mut self, offers: &mut Vec<ExtensionOffer>) -> Result<(), HandshakeError> {
        loop {
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => self.pos += 1,
                Some(_) => {
                    offers.push(self.extension()?);
                    self.skip_ows();
                    match self.peek() {
                        None => return Ok(()),
                        Some(b',') => self.pos += 1,
                        Some(_) => return Err(HandshakeError::InvalidExtensions),
                    }
                }
            }
        }
    }

    /// `extension-token *( ";" extension-param )`, leaving the cursor after the last parameter.
    fn extension(&mut self) -> Result<ExtensionOffer, HandshakeError> {
        let mut offer = ExtensionOffer::new(self.token()?);
        loop {
            self.skip_ows();
            if self.peek() != Some(b';') {
                return Ok(offer);
            }
            self.pos += 1;
            self.skip_ows();
            let name = self.token()?;
            self.skip_ows();
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.skip_ows();
                let value = if self.peek() == Some(b'"') {
                    self.quoted()?
                } else {
                    self.token()?
                };
                if !is_token(&value) {
                    return Err(HandshakeError::InvalidExtensions);
                }
                Some(value)
            } else {
                None
            };
            offer.params.push(ExtensionParam { name, value });
        }
    }

    /// A non-empty token.
    fn token(&mut self) -> Result<String, HandshakeError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        let token = &self.input[start..self.pos];
        if token.is_empty() {
            return Err(HandshakeError::InvalidExtensions);
        }
        String::from_utf8(token.to_vec()).map_err(|_| HandshakeError::InvalidExtensions)
    }

    /// A quoted-string starting at the cursor's `"`, unescaped.
    fn quoted(&mut self) -> Result<String, HandshakeError> {
        self.pos += 1;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(HandshakeError::InvalidExtensions),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let escaped = self
                        .input
                        .get(self.pos + 1)
                        .copied()
                        .ok_or(HandshakeError::InvalidExtensions)?;
                    value.push(escaped);
                    self.pos += 2;
                }
                Some(b) => {
                    value.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(value).map_err(|_| HandshakeError::InvalidExtensions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(lines: &[&'static str]) -> Result<Vec<ExtensionOffer>, HandshakeError> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(line));
        }
        parse_extensions(&headers)
    }

    #[test]
    fn escapes_inside_quotes() {
        let offers = parse(&[r#"x; a="1\0""#]).map(|o| o[0].params[0].value.clone());
        assert_eq!(offers, Ok(Some("10".to_owned())));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "x;",
            "x; =1",
            "x; a=",
            "x; a=\"\"",
            "x; a=\"1 2\"",
            "x; a=\"1",
            "x; a=\"1\\",
            "x y",
            "x; a b",
            "x, ;a",
            "x; a=1=2",
            "\"x\"",
        ] {
            assert_eq!(
                parse(&[bad]),
                Err(HandshakeError::InvalidExtensions),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_elements_skipped() {
        let offers = parse(&[" , a ,, b;c , ", ""]).unwrap_or_default();
        let names: Vec<_> = offers.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
