//! Connecting through a proxy: HTTP `CONNECT` tunnels and SOCKS5, configured explicitly or
//! read from the environment the way curl reads it.
//!
//! [`connect_with`](crate::connect_with) consults [`Config::proxy`](crate::Config::proxy):
//! it opens TCP to the proxy, asks the proxy for a tunnel to the target's host and port, and
//! then runs TLS (for `wss://`) and the WebSocket handshake through the tunnel, end to end.
//! All of it is bounded by [`Config::handshake_timeout`](crate::Config::handshake_timeout).
//!
//! ```
//! use fullduplex::{Config, Proxy};
//! # fn demo() -> Result<(), fullduplex::Error> {
//! // An explicit proxy, as `--proxy URL` would give it:
//! let explicit = Config::default().proxy(Proxy::parse("http://user:secret@proxy.example:3128")?);
//! // Or whatever `https_proxy` / `http_proxy` / `all_proxy` / `no_proxy` say at connect time:
//! let from_env = Config::default().proxy_from_env();
//! # let _ = (explicit, from_env);
//! # Ok(()) }
//! # demo().unwrap();
//! ```

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;

use bytes::BytesMut;
use fullduplex_proto::handshake::{self, HandshakeError};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::head::read_head_piece;

/// The largest `CONNECT` response head accepted from an HTTP proxy (16 KiB).
pub const MAX_CONNECT_RESPONSE: usize = 16 << 10;

/// The port used when a proxy URL names none (curl's default, for every proxy scheme).
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// Which protocol the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyKind {
    /// An HTTP proxy that opens tunnels with `CONNECT host:port` (RFC 9110, section 9.3.6).
    Http,
    /// A SOCKS5 proxy (RFC 1928), with username/password authentication (RFC 1929) when
    /// credentials are given. The proxy resolves host names.
    Socks5,
}

/// A proxy to reach WebSocket servers through.
///
/// Parsed from a URL ([`Proxy::parse`]), built directly ([`Proxy::http`], [`Proxy::socks5`]),
/// or taken from the environment ([`Proxy::from_env`]). `Debug` and `Display` never show the
/// password.
///
/// ```
/// use fullduplex::{Proxy, ProxyKind};
/// let proxy = Proxy::parse("socks5h://alice:p%40ss@[::1]:9050").unwrap();
/// assert_eq!(proxy.kind(), ProxyKind::Socks5);
/// assert_eq!(proxy.host(), "::1");
/// assert_eq!(proxy.port(), 9050);
/// assert_eq!(proxy.credentials(), Some(("alice", "p@ss")));
/// assert_eq!(proxy.to_string(), "socks5://alice:***@[::1]:9050");
///
/// let same = Proxy::socks5("::1", 9050).with_credentials("alice", "p@ss");
/// assert_eq!(proxy, same);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    kind: ProxyKind,
    /// Host name or IP literal, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl Proxy {
    /// An HTTP `CONNECT` proxy at `host:port` (an IPv6 literal may keep or drop its brackets).
    pub fn http(host: impl Into<String>, port: u16) -> Proxy {
        Proxy::new(ProxyKind::Http, host.into(), port)
    }

    /// A SOCKS5 proxy at `host:port` (an IPv6 literal may keep or drop its brackets).
    pub fn socks5(host: impl Into<String>, port: u16) -> Proxy {
        Proxy::new(ProxyKind::Socks5, host.into(), port)
    }

    fn new(kind: ProxyKind, host: String, port: u16) -> Proxy {
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(bare) => bare.to_owned(),
            None => host,
        };
        Proxy {
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
    ) -> Proxy {
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
    /// The port defaults to 1080 ([`DEFAULT_PROXY_PORT`]). User and password are
    /// percent-decoded (`p%40ss` is `p@ss`). A trailing `/` is allowed; any other path is
    /// an error. `https://` proxies (TLS to the proxy itself) and SOCKS4 are not supported.
    ///
    /// All failures are [`Error::Proxy`] with [`ProxyError::InvalidUrl`] or
    /// [`ProxyError::UnsupportedScheme`].
    ///
    /// ```
    /// use fullduplex::{Proxy, ProxyKind};
    /// let proxy = Proxy::parse("http://proxy.example:3128/").unwrap();
    /// assert_eq!((proxy.kind(), proxy.host(), proxy.port()), (ProxyKind::Http, "proxy.example", 3128));
    /// assert_eq!(Proxy::parse("10.0.0.1").unwrap().port(), 1080);
    /// assert!(Proxy::parse("https://proxy.example").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<Proxy, Error> {
        parse_url(url).map_err(Error::Proxy)
    }

    /// The proxy the environment names for a target, like curl: for `wss://` targets
    /// (`target_is_tls`) `https_proxy` or `HTTPS_PROXY`, for `ws://` targets `http_proxy` only
    /// (curl ignores upper-case `HTTP_PROXY`, which CGI programs may find set from a request's
    /// `Proxy:` header), then `all_proxy` or `ALL_PROXY`; `None` when none is set or when
    /// `no_proxy` / `NO_PROXY` covers `target_host`.
    ///
    /// Lower case wins over upper case. Empty variables count as unset. A value that does not
    /// parse is an error rather than a silent direct connection. See [`ProxyEnv`] for the
    /// rules, testable without touching the process environment.
    pub fn from_env(target_host: &str, target_is_tls: bool) -> Result<Option<Proxy>, Error> {
        ProxyEnv::from_env().proxy_for(target_host, target_is_tls)
    }

    /// Which protocol the proxy speaks.
    pub fn kind(&self) -> ProxyKind {
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
    /// # async fn demo() -> Result<(), fullduplex::Error> {
    /// let proxy = fullduplex::Proxy::parse("socks5://127.0.0.1:1080")?;
    /// let tunnel = proxy.connect("example.com", 443).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when TCP to the proxy fails, [`Error::Proxy`] when the proxy refuses the
    /// tunnel, asks for credentials it was not given, or answers what is not HTTP or SOCKS5.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the connection to the proxy; nothing is left open.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, Error> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ProxyError::Connect {
                proxy: self.address(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        self.tunnel(&mut tcp, host, port).await?;
        Ok(tcp)
    }

    /// Asks the proxy, already connected through `stream`, for a tunnel to `host:port`.
    ///
    /// On success the next byte read from `stream` is the target's. Nothing is read past the
    /// proxy's answer for SOCKS5 (its replies have a known length); an HTTP proxy's `2xx`
    /// head is read in pieces, and if bytes follow it in the same read this is
    /// [`ProxyError::UnexpectedData`] rather than losing them: both TLS and the WebSocket
    /// handshake have the client speak first, so an honest tunnel carries nothing yet.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `stream` fails, [`Error::Proxy`] as for [`connect`](Proxy::connect).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: `stream` is left in the middle of the proxy's exchange; drop it.
    pub async fn tunnel<S>(&self, stream: &mut S, host: &str, port: u16) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let target = Target::parse(host)?;
        tracing::debug!(proxy = %self, target = %authority(host, port), "opening proxy tunnel");
        match self.kind {
            ProxyKind::Http => self.http_connect(stream, &target, port).await,
            ProxyKind::Socks5 => self.socks5_connect(stream, &target, port).await,
        }
    }

    async fn http_connect<S>(
        &self,
        stream: &mut S,
        target: &Target<'_>,
        port: u16,
    ) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let authority = target.authority(port);
        let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some((user, password)) = self.credentials() {
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
                    return Err(ProxyError::ResponseTooLarge(MAX_CONNECT_RESPONSE).into())
                }
                Err(error) => return Err(ProxyError::InvalidResponse(error.to_string()).into()),
            }
            read_head_piece(stream, &mut buf, MAX_CONNECT_RESPONSE, "the proxy").await?;
        };
        if !response.status().is_success() {
            return Err(ProxyError::Status(response.status()).into());
        }
        if buf.len() > head_len {
            return Err(ProxyError::UnexpectedData(buf.len() - head_len).into());
        }
        Ok(())
    }

    async fn socks5_connect<S>(
        &self,
        stream: &mut S,
        target: &Target<'_>,
        port: u16,
    ) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        const VERSION: u8 = 5;
        const NO_AUTH: u8 = 0x00;
        const USER_PASSWORD: u8 = 0x02;
        const NO_ACCEPTABLE: u8 = 0xff;

        // Method selection (RFC 1928, section 3).
        let greeting: &[u8] = match self.credentials {
            Some(_) => &[VERSION, 2, NO_AUTH, USER_PASSWORD],
            None => &[VERSION, 1, NO_AUTH],
        };
        stream.write_all(greeting).await?;
        stream.flush().await?;
        let mut choice = [0u8; 2];
        stream.read_exact(&mut choice).await?;
        if choice[0] != VERSION {
            return Err(ProxyError::InvalidResponse(format!(
                "SOCKS version {} in the method selection",
                choice[0]
            ))
            .into());
        }
        match (choice[1], &self.credentials) {
            (NO_AUTH, _) => {}
            (USER_PASSWORD, Some((user, password))) => {
                socks5_authenticate(stream, user, password).await?
            }
            (NO_ACCEPTABLE, _) => return Err(ProxyError::Socks5NoAcceptableAuth.into()),
            (method, _) => {
                return Err(ProxyError::InvalidResponse(format!(
                    "SOCKS5 method {method:#04x}, which we did not offer"
                ))
                .into())
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
                let len = u8::try_from(name.len()).map_err(|_| ProxyError::HostTooLong)?;
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
            return Err(ProxyError::InvalidResponse(format!(
                "SOCKS version {} in the reply",
                reply[0]
            ))
            .into());
        }
        if reply[1] != 0 {
            return Err(ProxyError::Socks5(Socks5Reply::from_code(reply[1])).into());
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
                return Err(ProxyError::InvalidResponse(format!(
                    "SOCKS5 address type {other:#04x} in the reply"
                ))
                .into())
            }
        };
        // The bound address and port are of no use to us; read them to reach the tunnel.
        let mut bound = [0u8; 255 + 2];
        stream.read_exact(&mut bound[..address_len + 2]).await?;
        Ok(())
    }
}

/// Username/password authentication (RFC 1929).
async fn socks5_authenticate<S>(stream: &mut S, user: &str, password: &str) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let user_len = u8::try_from(user.len()).map_err(|_| ProxyError::CredentialsTooLong)?;
    let password_len = u8::try_from(password.len()).map_err(|_| ProxyError::CredentialsTooLong)?;
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
        return Err(ProxyError::Socks5AuthFailed.into());
    }
    Ok(())
}

impl FromStr for Proxy {
    type Err = Error;

    fn from_str(url: &str) -> Result<Proxy, Error> {
        Proxy::parse(url)
    }
}

impl fmt::Display for Proxy {
    /// The proxy as a URL, with the password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5",
        };
        write!(f, "{scheme}://")?;
        if let Some((user, _)) = &self.credentials {
            write!(f, "{user}:***@")?;
        }
        f.write_str(&self.address())
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("password", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Whether and how [`crate::connect_with`] goes through a proxy ([`Config::proxy`](
/// crate::Config::proxy)).
///
/// The default is [`ProxySetting::Direct`]: a library should not change where it connects
/// because of a variable inherited from whoever started the process (curl is a user's tool and
/// reads the environment; tungstenite and most libraries do not). Applications that want
/// curl's behaviour (the `fdx` CLI does) opt in with [`ProxySetting::FromEnv`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxySetting {
    /// Connect to the target directly.
    #[default]
    Direct,
    /// Always go through this proxy (`no_proxy` is not consulted).
    Proxy(Proxy),
    /// Read the environment at each connect, like curl: see [`Proxy::from_env`].
    FromEnv,
}

impl ProxySetting {
    /// The proxy to use for a target, or `None` for a direct connection.
    pub fn resolve(&self, target_host: &str, target_is_tls: bool) -> Result<Option<Proxy>, Error> {
        match self {
            ProxySetting::Direct => Ok(None),
            ProxySetting::Proxy(proxy) => Ok(Some(proxy.clone())),
            ProxySetting::FromEnv => Proxy::from_env(target_host, target_is_tls),
        }
    }
}

impl From<Proxy> for ProxySetting {
    fn from(proxy: Proxy) -> ProxySetting {
        ProxySetting::Proxy(proxy)
    }
}

/// The proxy variables of an environment, and curl's rules for choosing among them.
///
/// [`ProxyEnv::from_lookup`] takes the variables from any function, so the decision can be
/// tested without changing the process environment:
///
/// ```
/// use std::collections::HashMap;
/// use fullduplex::{ProxyEnv, ProxyKind};
/// let vars = HashMap::from([
///     ("HTTPS_PROXY", "http://proxy.corp:3128"),
///     ("HTTP_PROXY", "http://ignored:1"), // only lower-case http_proxy counts
///     ("ALL_PROXY", "socks5://socks.corp"),
///     ("NO_PROXY", "localhost, .internal.corp"),
/// ]);
/// let env = ProxyEnv::from_lookup(|name| vars.get(name).map(|v| v.to_string()));
/// let for_wss = env.proxy_for("example.com", true).unwrap().unwrap();
/// assert_eq!(for_wss.host(), "proxy.corp");
/// let for_ws = env.proxy_for("example.com", false).unwrap().unwrap();
/// assert_eq!(for_ws.kind(), ProxyKind::Socks5);
/// assert_eq!(env.proxy_for("chat.internal.corp", true).unwrap(), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// `https_proxy`, else `HTTPS_PROXY`: the proxy for `wss://` targets.
    pub https_proxy: Option<String>,
    /// `http_proxy` (never `HTTP_PROXY`): the proxy for `ws://` targets.
    pub http_proxy: Option<String>,
    /// `all_proxy`, else `ALL_PROXY`: the proxy when the scheme's own variable is unset.
    pub all_proxy: Option<String>,
    /// `no_proxy`, else `NO_PROXY`: hosts to reach directly; see [`no_proxy_matches`].
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads the process environment. Values that are not UTF-8 count as unset.
    pub fn from_env() -> ProxyEnv {
        ProxyEnv::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (name to value). Lower-case names are asked first;
    /// empty (or blank) values count as unset.
    pub fn from_lookup(mut lookup: impl FnMut(&str) -> Option<String>) -> ProxyEnv {
        let mut first = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| lookup(name).filter(|value| !value.trim().is_empty()))
        };
        ProxyEnv {
            https_proxy: first(&["https_proxy", "HTTPS_PROXY"]),
            http_proxy: first(&["http_proxy"]),
            all_proxy: first(&["all_proxy", "ALL_PROXY"]),
            no_proxy: first(&["no_proxy", "NO_PROXY"]),
        }
    }

    /// The proxy for a target (host name or IP literal, IPv6 with or without brackets), or
    /// `None` for a direct connection: the scheme's variable, else `all_proxy`, unless
    /// `no_proxy` matches the host. A proxy value that does not parse is an error (unless
    /// `no_proxy` exempts the host anyway).
    pub fn proxy_for(
        &self,
        target_host: &str,
        target_is_tls: bool,
    ) -> Result<Option<Proxy>, Error> {
        let scheme_proxy = match target_is_tls {
            true => self.https_proxy.as_deref(),
            false => self.http_proxy.as_deref(),
        };
        let Some(value) = scheme_proxy.or(self.all_proxy.as_deref()) else {
            return Ok(None);
        };
        if let Some(list) = &self.no_proxy {
            if no_proxy_matches(list, target_host) {
                return Ok(None);
            }
        }
        Proxy::parse(value).map(Some)
    }
}

/// Whether a `no_proxy` list exempts `host` from the proxy, by curl's rules.
///
/// Entries are separated by commas (and/or white space). `*` alone exempts every host. An
/// IP literal entry matches that address exactly (IPv6 with or without brackets; CIDR ranges
/// are not supported). Any other entry, with an optional leading `.` (or `*.`), matches the
/// host name itself and every name below it, ignoring case: `example.com` and `.example.com`
/// both match `example.com` and `ws.example.com`, never `badexample.com`. Ports in entries
/// are not supported.
///
/// ```
/// use fullduplex::no_proxy_matches;
/// assert!(no_proxy_matches("localhost,.example.com", "WS.Example.COM"));
/// assert!(no_proxy_matches("example.com", "example.com"));
/// assert!(!no_proxy_matches("example.com", "badexample.com"));
/// assert!(no_proxy_matches("10.0.0.1, [::1]", "::1"));
/// assert!(!no_proxy_matches("10.0.0.1", "10.0.0.10"));
/// assert!(no_proxy_matches("*", "anything"));
/// ```
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = strip_brackets(host.trim()).trim_end_matches('.');
    if host.is_empty() {
        return false;
    }
    let host_ip = host.parse::<IpAddr>().ok();
    let host = host.as_bytes();
    for entry in no_proxy.split(|c: char| c == ',' || c.is_whitespace()) {
        let entry = entry.trim();
        if entry == "*" {
            return true;
        }
        let entry = strip_brackets(entry);
        if let Some(ip) = host_ip {
            if entry.parse::<IpAddr>() == Ok(ip) {
                return true;
            }
            continue;
        }
        let entry = entry
            .strip_prefix("*.")
            .or_else(|| entry.strip_prefix('.'))
            .unwrap_or(entry)
            .trim_end_matches('.')
            .as_bytes();
        if entry.is_empty() {
            continue;
        }
        if host.eq_ignore_ascii_case(entry) {
            return true;
        }
        if host.len() > entry.len() {
            let (head, tail) = host.split_at(host.len() - entry.len());
            if head.ends_with(b".") && tail.eq_ignore_ascii_case(entry) {
                return true;
            }
        }
    }
    false
}

/// What can go wrong with a proxy, in [`Error::Proxy`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL could not be parsed.
    #[error("invalid proxy URL: {0}")]
    InvalidUrl(String),
    /// The proxy URL's scheme is not `http`, `socks5` or `socks5h`.
    #[error("unsupported proxy scheme {0:?} (supported: http, socks5, socks5h)")]
    UnsupportedScheme(String),
    /// The target host cannot be sent to a proxy (empty, or characters a host cannot have).
    #[error("invalid target host {0:?}")]
    InvalidTarget(String),
    /// TCP to the proxy failed.
    #[error("cannot connect to proxy {proxy}: {source}")]
    Connect {
        /// The proxy's `host:port`.
        proxy: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The HTTP proxy answered `CONNECT` with a status other than `2xx` (`407`: it wants
    /// credentials, or other ones).
    #[error("CONNECT answered with {0}")]
    Status(http::StatusCode),
    /// The proxy's answer did not follow its protocol.
    #[error("malformed answer: {0}")]
    InvalidResponse(String),
    /// The HTTP proxy's response head exceeded [`MAX_CONNECT_RESPONSE`] bytes.
    #[error("CONNECT response head larger than {0} bytes")]
    ResponseTooLarge(usize),
    /// The HTTP proxy sent this many bytes after its `2xx` head, before we sent anything
    /// through the tunnel. Neither TLS nor WebSocket servers speak first, so the tunnel is not
    /// trusted.
    #[error("{0} unexpected bytes after the CONNECT response")]
    UnexpectedData(usize),
    /// The SOCKS5 proxy accepts none of the authentication methods offered (no
    /// authentication, and username/password when credentials are given).
    #[error("SOCKS5 proxy accepts none of the offered authentication methods")]
    Socks5NoAcceptableAuth,
    /// The SOCKS5 proxy rejected the username and password.
    #[error("SOCKS5 proxy rejected the username or password")]
    Socks5AuthFailed,
    /// The SOCKS5 proxy could not open the connection to the target.
    #[error("SOCKS5 proxy: {0}")]
    Socks5(Socks5Reply),
    /// A username or password longer than SOCKS5 allows (255 bytes).
    #[error("SOCKS5 username and password are limited to 255 bytes each")]
    CredentialsTooLong,
    /// A target host name longer than SOCKS5 allows (255 bytes).
    #[error("SOCKS5 host names are limited to 255 bytes")]
    HostTooLong,
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

/// The target of a tunnel: an IP address or a name for the proxy to resolve.
enum Target<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

impl<'a> Target<'a> {
    fn parse(host: &'a str) -> Result<Target<'a>, ProxyError> {
        let bare = strip_brackets(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Target::Ip(ip));
        }
        if bare.is_empty() || !bare.bytes().all(is_reg_name_byte) {
            return Err(ProxyError::InvalidTarget(host.to_owned()));
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
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
}

fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `host:port`, brackets around an IPv6 literal.
fn authority(host: &str, port: u16) -> String {
    let host = strip_brackets(host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn parse_url(url: &str) -> Result<Proxy, ProxyError> {
    let url = url.trim();
    let invalid = |why: &str| ProxyError::InvalidUrl(format!("{why} in {:?}", redact(url)));
    let (kind, rest) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let kind = match scheme.to_ascii_lowercase().as_str() {
                "http" => ProxyKind::Http,
                "socks5" | "socks5h" => ProxyKind::Socks5,
                _ => return Err(ProxyError::UnsupportedScheme(scheme.to_owned())),
            };
            (kind, rest)
        }
        None => (ProxyKind::Http, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if !(path.is_empty() || path == "/") {
        return Err(invalid("a path"));
    }
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let credentials = match userinfo {
        None => None,
        Some(userinfo) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let user = percent_decode(user).ok_or_else(|| invalid("bad percent-encoding"))?;
            let password =
                percent_decode(password).ok_or_else(|| invalid("bad percent-encoding"))?;
            Some((user, password))
        }
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid("an unclosed '['"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("a bad IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid("junk after ']'"))?,
            ),
        };
        (ip, port)
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    if !host.contains(':') && !host.bytes().all(is_reg_name_byte) {
        return Err(invalid("a bad host"));
    }
    let port = match port {
        None => DEFAULT_PROXY_PORT,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(invalid("a bad port")),
        },
    };
    Ok(Proxy {
        kind,
        host: host.to_owned(),
        port,
        credentials,
    })
}

/// The URL with anything between `://` and `@` (the credentials) replaced, for error messages.
fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("p%40ss%3Aw%25rd").as_deref(),
            Some("p@ss:w%rd")
        );
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn redaction_hides_credentials() {
        assert_eq!(redact("http://u:secret@h:1/x"), "http://***@h:1/x");
        assert_eq!(redact("u:secret@h"), "***@h");
        assert_eq!(redact("http://h:1"), "http://h:1");
    }

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
