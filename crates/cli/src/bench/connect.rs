//! Where the load goes: the resolved target, TCP connects spread over source addresses, and the
//! opening handshake done with the protocol core on the raw stream.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use fullduplex::proto::handshake::{self, HandshakeError};
use fullduplex::ClientRequest;
use http::{Request, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::args::BenchArgs;
use crate::{Failure, EXIT_USAGE};

/// Connections per source address before the next one (127.0.0.2, ...) is used: well below
/// the ~28,000 ephemeral ports one address has.
pub const PER_SOURCE_ADDRESS: usize = 20_000;

/// The largest response head accepted.
const MAX_HEAD: usize = 16 << 10;

/// Why one connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect (or reading the answer) failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Connect plus upgrade took longer than --connect-timeout.
    #[error("no connection within {0:?} (TCP and upgrade)")]
    Timeout(Duration),
    /// The server answered with something other than 101.
    #[error("server answered {} {}", .0.as_u16(), .0.canonical_reason().unwrap_or(""))]
    Status(StatusCode),
    /// The answer was not a valid upgrade.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The library's handshake failed (--compress).
    #[error("{0}")]
    Library(#[from] fullduplex::Error),
    /// The server closed the connection before answering.
    #[error("the server closed the connection during the handshake")]
    Eof,
    /// The --idle-echo exchange failed.
    #[error("the first echo failed: {0}")]
    Echo(String),
    /// --compress, but the server did not accept permessage-deflate.
    #[error("the server did not accept permessage-deflate (--compress)")]
    NoCompression,
}

impl ConnectError {
    /// One line for the user, naming the target.
    pub fn describe(&self, authority: &str) -> String {
        match self {
            ConnectError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                format!("connection refused by {authority}")
            }
            ConnectError::Io(io) => format!("cannot connect to {authority}: {io}"),
            other => format!("{authority}: {other}"),
        }
    }
}

/// A raw stream after a successful upgrade, with whatever arrived after the response head.
pub struct Upgraded {
    /// The TCP stream, positioned at the first WebSocket byte.
    pub stream: TcpStream,
    /// Bytes received after the `101` head (the first frames, if the server sent any).
    pub leftover: BytesMut,
}

/// The resolved target of a run.
#[derive(Debug)]
pub struct Target {
    /// `host:port`, for messages.
    pub authority: String,
    /// The address every connection goes to (resolved once).
    pub addr: SocketAddr,
    /// The upgrade request (the key is filled in per connection).
    request: Request<()>,
    /// Whether connections are spread over 127.0.0.x source addresses.
    spread: bool,
    /// Bound on connect plus upgrade.
    pub timeout: Duration,
    /// Run the WebSocket handshake (not with --tcp).
    upgrade: bool,
}

impl Target {
    /// Parses the URL and resolves its host once.
    pub async fn resolve(args: &BenchArgs) -> Result<Target, Failure> {
        let usage = |reason: String| Failure::with_code(EXIT_USAGE, reason);
        let uri: Uri = args
            .url
            .parse()
            .map_err(|e| usage(format!("{:?}: {e}", args.url)))?;
        let host = uri
            .host()
            .ok_or_else(|| usage(format!("{:?}: no host", args.url)))?;
        let port = uri.port_u16().unwrap_or(80);
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let authority = format!("{host}:{port}");
        let request = ClientRequest::new(args.url.as_str())
            .build()
            .map_err(|e| usage(e.to_string()))?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare_host, port))
            .await
            .map_err(|e| Failure::new(format!("cannot resolve {bare_host}: {e}")))?
            .collect();
        // Prefer IPv4 (localhost resolves to both; servers often listen on 127.0.0.1 only).
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| Failure::new(format!("{bare_host} resolves to no address")))?;
        let spread = matches!(addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        Ok(Target {
            authority,
            addr,
            request,
            spread,
            timeout: args.connect_timeout,
            upgrade: !args.tcp,
        })
    }

    /// The source address of connection `index`: 127.0.0.(1 + index / 20000) for a loopback
    /// target, `None` (the kernel's choice) for the first 20,000 and for other targets.
    pub fn source(&self, index: usize) -> Option<SocketAddr> {
        if !self.spread {
            return None;
        }
        let group = index / PER_SOURCE_ADDRESS;
        if group == 0 {
            return None;
        }
        let last = u8::try_from(1 + group).ok().filter(|&last| last < 255)?;
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))
    }

    /// A TCP connection for connection `index` (not bounded in time: see [`Target::open`]).
    pub async fn tcp(&self, index: usize) -> Result<TcpStream, ConnectError> {
        let stream = match self.source(index) {
            None => TcpStream::connect(self.addr).await?,
            Some(source) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(source)?;
                socket.connect(self.addr).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// The upgrade request, ready for `prepare_request` (or the library's handshake).
    pub fn request(&self) -> Request<()> {
        self.request.clone()
    }

    /// Connects and upgrades on the raw stream, no extension offered (with --tcp: connects
    /// only); bounded by the connect timeout.
    pub async fn open(&self, index: usize) -> Result<Upgraded, ConnectError> {
        let attempt = async {
            let mut stream = self.tcp(index).await?;
            let leftover = if self.upgrade {
                upgrade(&mut stream, self.request()).await?
            } else {
                BytesMut::new()
            };
            Ok(Upgraded { stream, leftover })
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout(self.timeout)),
        }
    }
}

/// Runs the client handshake on `stream` with the core's functions; returns the bytes that
/// followed the response head.
async fn upgrade(stream: &mut TcpStream, request: Request<()>) -> Result<BytesMut, ConnectError> {
    let (request, key) = handshake::prepare_request(request)?;
    let mut out = BytesMut::with_capacity(256);
    handshake::encode_request(&request, &mut out);
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if let Some((response, len)) = handshake::parse_response(&buf, MAX_HEAD)? {
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                return Err(ConnectError::Status(response.status()));
            }
            handshake::validate_response(&response, &key, &[], &[])?;
            return Ok(buf.split_off(len));
        }
        if buf.capacity() == buf.len() {
            buf.reserve(512);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ConnectError::Eof);
        }
    }
}

/// How many connections are being opened at once at the start of a run.
pub const OPEN_CONCURRENCY: usize = 128;

/// The first connection that could not be opened: its index, how many were open by then, and
/// why.
pub type OpenFailed = (usize, usize, ConnectError);

/// Opens `count` connections with `open(index)`, [`OPEN_CONCURRENCY`] at a time, and gives
/// them in index order. The first failure stops the run.
pub async fn open_all<T, F, Fut>(count: usize, open: F) -> Result<Vec<T>, OpenFailed>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, ConnectError>> + Send + 'static,
{
    let mut opened: Vec<Option<T>> = (0..count).map(|_| None).collect();
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut done = 0;
    loop {
        while next < count && pending.len() < OPEN_CONCURRENCY {
            let attempt = open(next);
            let index = next;
            pending.spawn(async move { (index, attempt.await) });
            next += 1;
        }
        let Some(joined) = pending.join_next().await else {
            break;
        };
        match joined {
            Ok((index, Ok(value))) => {
                opened[index] = Some(value);
                done += 1;
            }
            Ok((index, Err(error))) => return Err((index, done, error)),
            Err(join) => {
                let error = ConnectError::Io(std::io::Error::other(join.to_string()));
                return Err((next, done, error));
            }
        }
    }
    Ok(opened.into_iter().flatten().collect())
}

/// The one-line failure for a connection that could not be opened at the start: just the
/// reason when none could be opened, with which one and how many were open otherwise.
pub fn open_failure(target: &Target, count: usize, (index, open, error): OpenFailed) -> Failure {
    let what = error.describe(&target.authority);
    if open == 0 {
        Failure::new(what)
    } else {
        Failure::new(format!(
            "connection {} of {count} (with {open} open): {what}",
            index + 1
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(addr: &str) -> Target {
        Target {
            authority: addr.to_owned(),
            addr: addr.parse().unwrap(),
            request: Request::new(()),
            spread: matches!(addr.parse::<SocketAddr>().unwrap().ip(), IpAddr::V4(ip) if ip.is_loopback()),
            timeout: Duration::from_secs(1),
            upgrade: true,
        }
    }

    #[test]
    fn loopback_connections_spread_over_source_addresses() {
        let local = target("127.0.0.1:9001");
        assert_eq!(local.source(0), None);
        assert_eq!(local.source(19_999), None);
        assert_eq!(local.source(20_000), Some("127.0.0.2:0".parse().unwrap()));
        assert_eq!(local.source(39_999), Some("127.0.0.2:0".parse().unwrap()));
        assert_eq!(local.source(40_000), Some("127.0.0.3:0".parse().unwrap()));
        // Past 127.0.0.254 the kernel chooses again rather than binding a broadcast address.
        assert_eq!(
            local.source(253 * 20_000),
            Some("127.0.0.254:0".parse().unwrap())
        );
        assert_eq!(local.source(254 * 20_000), None);
        let remote = target("192.0.2.1:80");
        assert_eq!(remote.source(50_000), None);
        let v6 = target("[::1]:80");
        assert_eq!(v6.source(50_000), None);
    }
}
