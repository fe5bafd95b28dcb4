//! Shared pieces of HTTP/1.1 head parsing and encoding for both roles.

use bytes::{BufMut, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Version};

use super::HandshakeError;

/// Maps an `httparse` failure to our error.
pub(crate) fn from_httparse(error: httparse::Error) -> HandshakeError {
    match error {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders,
        httparse::Error::HeaderName => HandshakeError::MalformedHttp("invalid header name"),
        httparse::Error::HeaderValue => HandshakeError::MalformedHttp("invalid header value"),
        httparse::Error::NewLine => HandshakeError::MalformedHttp("invalid line ending"),
        httparse::Error::Status => HandshakeError::MalformedHttp("invalid status"),
        httparse::Error::Token => HandshakeError::MalformedHttp("invalid token"),
        httparse::Error::Version => HandshakeError::MalformedHttp("invalid HTTP version"),
    }
}

/// The part of `buf` worth parsing: a complete head longer than `max_head` is an error anyway,
/// so at most `max_head` bytes are looked at, which bounds the work per call.
pub(crate) fn window(buf: &[u8], max_head: usize) -> &[u8] {
    &buf[..buf.len().min(max_head)]
}

/// What to answer when `httparse` reports a partial head over `window`.
pub(crate) fn partial(buf: &[u8], max_head: usize) -> Result<Option<usize>, HandshakeError> {
    if buf.len() > max_head {
        Err(HandshakeError::HeadTooLarge)
    } else {
        Ok(None)
    }
}

/// The `http` version for an `httparse` minor version.
pub(crate) fn version(minor: Option<u8>) -> Result<Version, HandshakeError> {
    match minor {
        Some(0) => Ok(Version::HTTP_10),
        Some(1) => Ok(Version::HTTP_11),
        _ => Err(HandshakeError::MalformedHttp("invalid HTTP version")),
    }
}

/// Copies parsed header lines into a [`HeaderMap`], keeping repeated names.
pub(crate) fn headers(parsed: &[httparse::Header<'_>]) -> Result<HeaderMap, HandshakeError> {
    let mut map = HeaderMap::with_capacity(parsed.len());
    for header in parsed {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| HandshakeError::MalformedHttp("invalid header name"))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| HandshakeError::MalformedHttp("invalid header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Writes every header line (but not the empty line that ends the head).
pub(crate) fn write_header_lines(headers: &HeaderMap, out: &mut BytesMut) {
    for (name, value) in headers {
        write_name(name, out);
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// Writes a header name in its conventional spelling (`Sec-WebSocket-Accept`,
/// `Content-Type`): header names are case-insensitive, but some peers are not.
fn write_name(name: &HeaderName, out: &mut BytesMut) {
    let name = name.as_str();
    const SPECIAL: [&str; 5] = [
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Accept",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
    ];
    if let Some(special) = SPECIAL.iter().find(|s| s.eq_ignore_ascii_case(name)) {
        out.put_slice(special.as_bytes());
        return;
    }
    let mut upper = true;
    for &b in name.as_bytes() {
        out.put_u8(if upper { b.to_ascii_uppercase() } else { b });
        upper = b == b'-';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_written_in_conventional_case() {
        let mut headers = HeaderMap::new();
        headers.insert("sec-websocket-accept", HeaderValue::from_static("x"));
        headers.insert("content-type", HeaderValue::from_static("y"));
        headers.insert("x-a--b", HeaderValue::from_static("z"));
        let mut out = BytesMut::new();
        write_header_lines(&headers, &mut out);
        assert_eq!(
            &out[..],
            b"Sec-WebSocket-Accept: x\r\nContent-Type: y\r\nX-A--B: z\r\n"
        );
    }
}
