//! Tunnels through a proxy: HTTP `CONNECT` and SOCKS5, configured explicitly or read from
//! the environment the way curl reads it.
//!
//! [`connect_with`](crate::connect_with) consults [`Config::tunnel`](crate::Config::tunnel):
//! it opens TCP to the proxy, asks the proxy for a tunnel to the target's host and port, and
//! then runs TLS (for `wss://`) and the WebSocket handshake through the tunnel, end to end.
//! All of it is bounded by [`Config::handshake_timeout`](crate::Config::handshake_timeout).
//!
//! The jobs, one file each: [`Tunnel`] (this file: the proxy, the target, opening a tunnel),
//! `url` (proxy URLs), `http` (`CONNECT`), `socks5` (RFC 1928/1929), `env` (curl's variables
//! and `no_proxy`), `error` ([`TunnelError`], wrapped by [`Error::Tunnel`](crate::Error::Tunnel)).
//!
//! ```
//! use fullduplex::tunnel::Tunnel;
//! use fullduplex::Config;
//! # fn demo() -> Result<(), fullduplex::tunnel::TunnelError> {
//! // An explicit proxy, as `--proxy URL` would give it:
//! let explicit = Config::default().tunnel(Tunnel::parse("http://user:secret@proxy.example:3128")?);
//! // Or whatever `https_proxy` / `http_proxy` / `all_proxy` / `no_proxy` say at connect time:
//! let from_env = Config::default().tunnel_from_env();
//! # let _ = (explicit, from_env);
//! # Ok(()) }
//! # demo().unwrap();
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

mod env;
mod error;
mod http;
mod socks5;
mod url;

pub use env::{no_proxy_matches, TunnelEnv};
pub use error::TunnelError;
pub use http::MAX_CONNECT_RESPONSE;
pub use socks5::Socks5Reply;
pub use url::DEFAULT_PORT;

/// Which protocol the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelKind {
    /// An HTTP proxy that opens tunnels with `CONNECT host:port` (RFC 9110, section 9.3.6).
    Http,
    /// A SOCKS5 proxy (RFC 1928), with username/password authentication (RFC 1929) when
    /// credentials are given. The proxy resolves host names.
    Socks5,
}

/// A tunnel to WebSocket servers through an HTTP `CONNECT` or SOCKS5 proxy: the proxy's
/// address, protocol and credentials.
///
/// Parsed from a URL ([`Tunnel::parse`]), built directly ([`Tunnel::http`], [`Tunnel::socks5`]),
/// or taken from the environment ([`Tunnel::from_env`]). `Debug` and `Display` never show the
/// password.
///
/// ```
/// use fullduplex::tunnel::{Tunnel, TunnelKind};
/// let proxy = Tunnel::parse("socks5h://alice:p%40ss@[::1]:9050").unwrap();
/// assert_eq!(proxy.kind(), TunnelKind::Socks5);
/// assert_eq!(proxy.host(), "::1");
/// assert_eq!(proxy.port(), 9050);
/// assert_eq!(proxy.credentials(), Some(("alice", "p@ss")));
/// assert_eq!(proxy.to_string(), "socks5://alice:***@[::1]:9050");
///
/// let same = Tunnel::socks5("::1", 9050).with_credentials("alice", "p@ss");
/// assert_eq!(proxy, same);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Tunnel {
    kind: TunnelKind,
    /// Host name or IP literal, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl Tunnel {
    /// An HTTP `CONNECT` proxy at `host:port` (an IPv6 literal may keep or drop its brackets).
    pub fn http(host: impl Into<String>, port: u16) -> Tunnel {
        Tunnel::new(TunnelKind::Http, host.into(), port)
    }

    /// A SOCKS5 proxy at `host:port` (an IPv6 literal may keep or drop its brackets).
    pub fn socks5(host: impl Into<String>, port: u16) -> Tunnel {
        Tunnel::new(TunnelKind::Socks5, host.into(), port)
    }

    fn new(kind: TunnelKind, host: String, port: u16) -> Tunnel {
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(bare) => bare.to_owned(),
            None => host,
        };
        Tunnel {
            kind,
            host,
            port,
            credentials: None,
        }
    }

    /// Authenticates to the proxy with this username and password: `Proxy-Authorization:
    /// Basic` for HTTP, RFC 1929 for SOCKS5.
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Tunnel {
        self.credentials = Some((username.into(), password.into()));
        self
    }

    /// Parses a proxy URL, the way curl's `--proxy` and `*_proxy` variables spell them:
    ///
    /// * `http://[user:password@]host[:port]`: HTTP `CONNECT`. A URL without a scheme
    ///   (`proxy.example:3128`) is taken as `http://`.
    /// * `socks5://[user:password@]host[:port]` and `socks5h://...`: SOCKS5. Both let the proxy
    ///   resolve the target's host name (curl resolves locally for `socks5://`; handing the
    ///   name over works everywhere the local lookup would and leaks no DNS query).
    ///
    /// The port defaults to 1080 ([`DEFAULT_PORT`]). User and password are
    /// percent-decoded (`p%40ss` is `p@ss`). A trailing `/` is allowed; any other path is
    /// an error. `https://` proxies (TLS to the proxy itself) and SOCKS4 are not supported.
    ///
    /// All failures are [`TunnelError::InvalidUrl`] or [`TunnelError::UnsupportedScheme`].
    ///
    /// ```
    /// use fullduplex::tunnel::{Tunnel, TunnelKind};
    /// let proxy = Tunnel::parse("http://proxy.example:3128/").unwrap();
    /// assert_eq!((proxy.kind(), proxy.host(), proxy.port()), (TunnelKind::Http, "proxy.example", 3128));
    /// assert_eq!(Tunnel::parse("10.0.0.1").unwrap().port(), 1080);
    /// assert!(Tunnel::parse("https://proxy.example").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<Tunnel, TunnelError> {
        url::parse(url)
    }

    /// The proxy the environment names for a target, like curl: for `wss://` targets
    /// (`target_is_tls`) `https_proxy` or `HTTPS_PROXY`, for `ws://` targets `http_proxy` only
    /// (curl ignores upper-case `HTTP_PROXY`, which CGI programs may find set from a request's
    /// `Proxy:` header), then `all_proxy` or `ALL_PROXY`; `None` when none is set or when
    /// `no_proxy` / `NO_PROXY` covers `target_host`.
    ///
    /// Lower case wins over upper case. Empty variables count as unset. A value that does not
    /// parse is an error rather than a silent direct connection. See [`TunnelEnv`] for the
    /// rules, testable without touching the process environment.
    pub fn from_env(target_host: &str, target_is_tls: bool) -> Result<Option<Tunnel>, TunnelError> {
        TunnelEnv::from_env().proxy_for(target_host, target_is_tls)
    }

    /// Which protocol the proxy speaks.
    pub fn kind(&self) -> TunnelKind {
        self.kind
    }

    /// The proxy's host name or IP address (an IPv6 literal without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Username and password, if the proxy is to be authenticated to.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// `host:port` of the proxy, with brackets around an IPv6 literal.
    fn address(&self) -> String {
        authority(&self.host, self.port)
    }

    /// Opens TCP to the proxy and a tunnel through it to `host:port` (a name or an IP
    /// literal, with or without the brackets of IPv6). The returned stream is the tunnel: what
    /// is written goes to the target, what is read comes from it.
    ///
    /// Not bounded by a timeout: wrap it in one ([`crate::connect_with`] does).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), fullduplex::tunnel::TunnelError> {
    /// let proxy = fullduplex::tunnel::Tunnel::parse("socks5://127.0.0.1:1080")?;
    /// let tunnel = proxy.connect("example.com", 443).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`TunnelError::Connect`] when TCP to the proxy fails, [`TunnelError::Io`] when the
    /// connection to it fails later; other [`TunnelError`]s when the proxy refuses the
    /// tunnel, asks for credentials it was not given, or answers what is not HTTP or SOCKS5.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the connection to the proxy; nothing is left open.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, TunnelError> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| TunnelError::Connect {
                proxy: self.address(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        self.open(&mut tcp, host, port).await?;
        Ok(tcp)
    }

    /// Asks the proxy, already connected through `stream`, for a tunnel to `host:port`.
    ///
    /// On success the next byte read from `stream` is the target's. Nothing is read past the
    /// proxy's answer for SOCKS5 (its replies have a known length); an HTTP proxy's `2xx`
    /// head is read in pieces, and if bytes follow it in the same read this is
    /// [`TunnelError::UnexpectedData`] rather than losing them: both TLS and the WebSocket
    /// handshake have the client speak first, so an honest tunnel carries nothing yet.
    ///
    /// # Errors
    ///
    /// [`TunnelError::Io`] when `stream` fails, the others as for [`connect`](Tunnel::connect).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: `stream` is left in the middle of the proxy's exchange; drop it.
    pub async fn open<S>(&self, stream: &mut S, host: &str, port: u16) -> Result<(), TunnelError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let target = Target::parse(host)?;
        tracing::debug!(proxy = %self, target = %authority(host, port), "opening proxy tunnel");
        match self.kind {
            TunnelKind::Http => http::open(stream, &target, port, self.credentials()).await,
            TunnelKind::Socks5 => socks5::open(stream, &target, port, self.credentials()).await,
        }
    }
}

impl FromStr for Tunnel {
    type Err = TunnelError;

    fn from_str(url: &str) -> Result<Tunnel, TunnelError> {
        Tunnel::parse(url)
    }
}

impl fmt::Display for Tunnel {
    /// The proxy as a URL, with the password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            TunnelKind::Http => "http",
            TunnelKind::Socks5 => "socks5",
        };
        write!(f, "{scheme}://")?;
        if let Some((user, _)) = &self.credentials {
            write!(f, "{user}:***@")?;
        }
        f.write_str(&self.address())
    }
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("password", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Whether and how [`crate::connect_with`] goes through a proxy ([`Config::tunnel`](
/// crate::Config::tunnel)).
///
/// The default is [`TunnelSetting::Direct`]: a library should not change where it connects
/// because of a variable inherited from whoever started the process (curl is a user's tool and
/// reads the environment; tungstenite and most libraries do not). Applications that want
/// curl's behaviour (the `fdx` CLI does) opt in with [`TunnelSetting::FromEnv`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelSetting {
    /// Connect to the target directly.
    #[default]
    Direct,
    /// Always go through this proxy (`no_proxy` is not consulted).
    Tunnel(Tunnel),
    /// Read the environment at each connect, like curl: see [`Tunnel::from_env`].
    FromEnv,
}

impl TunnelSetting {
    /// The proxy to use for a target, or `None` for a direct connection.
    pub fn resolve(
        &self,
        target_host: &str,
        target_is_tls: bool,
    ) -> Result<Option<Tunnel>, TunnelError> {
        match self {
            TunnelSetting::Direct => Ok(None),
            TunnelSetting::Tunnel(proxy) => Ok(Some(proxy.clone())),
            TunnelSetting::FromEnv => Tunnel::from_env(target_host, target_is_tls),
        }
    }
}

impl From<Tunnel> for TunnelSetting {
    fn from(proxy: Tunnel) -> TunnelSetting {
        TunnelSetting::Tunnel(proxy)
    }
}

/// The target of a tunnel: an IP address or a name for the proxy to resolve.
pub(crate) enum Target<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

impl<'a> Target<'a> {
    fn parse(host: &'a str) -> Result<Target<'a>, TunnelError> {
        let bare = strip_brackets(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Target::Ip(ip));
        }
        if bare.is_empty() || !bare.bytes().all(is_reg_name_byte) {
            return Err(TunnelError::InvalidTarget(host.to_owned()));
        }
        Ok(Target::Name(bare))
    }

    /// `host:port` for a `CONNECT` line, brackets around IPv6.
    fn authority(&self, port: u16) -> String {
        match self {
            Target::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            Target::Ip(IpAddr::V4(ip)) => format!("{ip}:{port}"),
            Target::Name(name) => format!("{name}:{port}"),
        }
    }
}

/// Bytes allowed in a host name (RFC 3986 `reg-name`: unreserved, sub-delims, `%`).
pub(crate) fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
}

pub(crate) fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `host:port`, brackets around an IPv6 literal.
pub(crate) fn authority(host: &str, port: u16) -> String {
    let host = strip_brackets(host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_authorities() {
        let cases = [
            ("::1", "[::1]:9001"),
            ("[::1]", "[::1]:9001"),
            ("127.0.0.1", "127.0.0.1:9001"),
            ("example.com", "example.com:9001"),
        ];
        for (host, expected) in cases {
            let target = Target::parse(host).map_err(|_| host).unwrap();
            assert_eq!(target.authority(9001), expected);
        }
        assert!(Target::parse("evil.com\r\nX: y").is_err());
        assert!(Target::parse("").is_err());
    }
}
