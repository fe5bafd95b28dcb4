//! HTTP `CONNECT` tunnels.

use bytes::BytesMut;
use fullduplex_proto::handshake::{self, HandshakeError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{Target, TunnelError};
use crate::head::read_head_piece;

/// The largest response head accepted from an HTTP proxy (status line and headers).
pub const MAX_CONNECT_RESPONSE: usize = 16 << 10;

/// Asks an HTTP proxy for a tunnel with `CONNECT host:port` (RFC 9110, section 9.3.6), with
/// `Proxy-Authorization: Basic` when there are credentials; a `2xx` answer opens it.
pub(super) async fn open<S>(
    stream: &mut S,
    target: &Target<'_>,
    port: u16,
    credentials: Option<(&str, &str)>,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let authority = target.authority(port);
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, password)) = credentials {
        let token = base64_encode(format!("{user}:{password}").as_bytes());
        head.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;

    let mut buf = BytesMut::with_capacity(1024);
    let (response, head_len) = loop {
        match handshake::parse_response(&buf, MAX_CONNECT_RESPONSE) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(HandshakeError::HeadTooLarge) => {
                return Err(TunnelError::ResponseTooLarge(MAX_CONNECT_RESPONSE))
            }
            Err(error) => return Err(TunnelError::InvalidResponse(error.to_string())),
        }
        read_head_piece(stream, &mut buf, MAX_CONNECT_RESPONSE, "the proxy").await?;
    };
    if !response.status().is_success() {
        return Err(TunnelError::Status(response.status()));
    }
    if buf.len() > head_len {
        return Err(TunnelError::UnexpectedData(buf.len() - head_len));
    }
    Ok(())
}

/// Standard base64 with padding (RFC 4648, section 4), for `Proxy-Authorization: Basic`.
fn base64_encode(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), expected, "{input:?}");
        }
        // RFC 7617's example.
        assert_eq!(
            base64_encode(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
