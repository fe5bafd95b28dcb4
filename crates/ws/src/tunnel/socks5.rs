//! SOCKS5 tunnels (RFC 1928), with username/password authentication (RFC 1929).

use std::fmt;
use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Target, TunnelError};

/// Asks a SOCKS5 proxy for a tunnel (RFC 1928), authenticating with username and password
/// (RFC 1929) when there are credentials. The proxy resolves host names.
pub(super) async fn open<S>(
    stream: &mut S,
    target: &Target<'_>,
    port: u16,
    credentials: Option<(&str, &str)>,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    const VERSION: u8 = 5;
    const NO_AUTH: u8 = 0x00;
    const USER_PASSWORD: u8 = 0x02;
    const NO_ACCEPTABLE: u8 = 0xff;

    // Method selection (RFC 1928, section 3).
    let greeting: &[u8] = match credentials {
        Some(_) => &[VERSION, 2, NO_AUTH, USER_PASSWORD],
        None => &[VERSION, 1, NO_AUTH],
    };
    stream.write_all(greeting).await?;
    stream.flush().await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice[0] != VERSION {
        return Err(TunnelError::InvalidResponse(format!(
            "SOCKS version {} in the method selection",
            choice[0]
        )));
    }
    match (choice[1], credentials) {
        (NO_AUTH, _) => {}
        (USER_PASSWORD, Some((user, password))) => authenticate(stream, user, password).await?,
        (NO_ACCEPTABLE, _) => return Err(TunnelError::Socks5NoAcceptableAuth),
        (method, _) => {
            return Err(TunnelError::InvalidResponse(format!(
                "SOCKS5 method {method:#04x}, which we did not offer"
            )))
        }
    }

    // The CONNECT request (RFC 1928, section 4).
    let mut request = vec![VERSION, 0x01, 0x00];
    match target {
        Target::Ip(IpAddr::V4(ip)) => {
            request.push(0x01);
            request.extend_from_slice(&ip.octets());
        }
        Target::Ip(IpAddr::V6(ip)) => {
            request.push(0x04);
            request.extend_from_slice(&ip.octets());
        }
        Target::Name(name) => {
            let len = u8::try_from(name.len()).map_err(|_| TunnelError::HostTooLong)?;
            request.push(0x03);
            request.push(len);
            request.extend_from_slice(name.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    stream.flush().await?;

    // The reply (RFC 1928, section 6): VER REP RSV ATYP BND.ADDR BND.PORT.
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?;
    if reply[0] != VERSION {
        return Err(TunnelError::InvalidResponse(format!(
            "SOCKS version {} in the reply",
            reply[0]
        )));
    }
    if reply[1] != 0 {
        return Err(TunnelError::Socks5(Socks5Reply::from_code(reply[1])));
    }
    let address_len = match reply[3] {
        0x01 => 4,
        0x04 => 16,
        0x03 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            usize::from(len[0])
        }
        other => {
            return Err(TunnelError::InvalidResponse(format!(
                "SOCKS5 address type {other:#04x} in the reply"
            )))
        }
    };
    // The bound address and port are of no use to us; read them to reach the tunnel.
    let mut bound = [0u8; 255 + 2];
    stream.read_exact(&mut bound[..address_len + 2]).await?;
    Ok(())
}

/// Username/password authentication (RFC 1929).
async fn authenticate<S>(stream: &mut S, user: &str, password: &str) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let user_len = u8::try_from(user.len()).map_err(|_| TunnelError::CredentialsTooLong)?;
    let password_len = u8::try_from(password.len()).map_err(|_| TunnelError::CredentialsTooLong)?;
    let mut request = Vec::with_capacity(3 + user.len() + password.len());
    request.push(0x01);
    request.push(user_len);
    request.extend_from_slice(user.as_bytes());
    request.push(password_len);
    request.extend_from_slice(password.as_bytes());
    stream.write_all(&request).await?;
    stream.flush().await?;
    let mut status = [0u8; 2];
    stream.read_exact(&mut status).await?;
    // status[0] is the sub-negotiation version (1); some proxies send 5. Only STATUS matters.
    if status[1] != 0 {
        return Err(TunnelError::Socks5AuthFailed);
    }
    Ok(())
}

/// A SOCKS5 failure reply (RFC 1928, section 6, field `REP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Socks5Reply {
    /// `0x01`: general SOCKS server failure.
    GeneralFailure,
    /// `0x02`: connection not allowed by ruleset.
    NotAllowed,
    /// `0x03`: network unreachable.
    NetworkUnreachable,
    /// `0x04`: host unreachable.
    HostUnreachable,
    /// `0x05`: connection refused.
    ConnectionRefused,
    /// `0x06`: TTL expired.
    TtlExpired,
    /// `0x07`: command not supported.
    CommandNotSupported,
    /// `0x08`: address type not supported.
    AddressTypeNotSupported,
    /// Any other (unassigned) code.
    Other(u8),
}

impl Socks5Reply {
    /// The reply for a `REP` code (other than `0x00`, success).
    pub fn from_code(code: u8) -> Socks5Reply {
        match code {
            0x01 => Socks5Reply::GeneralFailure,
            0x02 => Socks5Reply::NotAllowed,
            0x03 => Socks5Reply::NetworkUnreachable,
            0x04 => Socks5Reply::HostUnreachable,
            0x05 => Socks5Reply::ConnectionRefused,
            0x06 => Socks5Reply::TtlExpired,
            0x07 => Socks5Reply::CommandNotSupported,
            0x08 => Socks5Reply::AddressTypeNotSupported,
            other => Socks5Reply::Other(other),
        }
    }

    /// The `REP` code.
    pub fn code(self) -> u8 {
        match self {
            Socks5Reply::GeneralFailure => 0x01,
            Socks5Reply::NotAllowed => 0x02,
            Socks5Reply::NetworkUnreachable => 0x03,
            Socks5Reply::HostUnreachable => 0x04,
            Socks5Reply::ConnectionRefused => 0x05,
            Socks5Reply::TtlExpired => 0x06,
            Socks5Reply::CommandNotSupported => 0x07,
            Socks5Reply::AddressTypeNotSupported => 0x08,
            Socks5Reply::Other(code) => code,
        }
    }
}

impl fmt::Display for Socks5Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Socks5Reply::GeneralFailure => "general server failure",
            Socks5Reply::NotAllowed => "connection not allowed by ruleset",
            Socks5Reply::NetworkUnreachable => "network unreachable",
            Socks5Reply::HostUnreachable => "host unreachable",
            Socks5Reply::ConnectionRefused => "connection refused",
            Socks5Reply::TtlExpired => "TTL expired",
            Socks5Reply::CommandNotSupported => "command not supported",
            Socks5Reply::AddressTypeNotSupported => "address type not supported",
            Socks5Reply::Other(code) => return write!(f, "failure code {code:#04x}"),
        };
        write!(f, "{text} ({:#04x})", self.code())
    }
}
