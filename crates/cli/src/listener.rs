//! What `fdx echo` and `fdx exec` share: the listener, TLS, the Origin policy and limits, and
//! HTTP/2: with TLS, ALPN offers `h2` and `http/1.1`; without, the same port takes HTTP/1.1
//! and h2c with prior knowledge (told apart by peeking at the first bytes). Over HTTP/2 every
//! extended CONNECT (RFC 8441) of a connection becomes a WebSocket of its own; the handler
//! sees the same `WebSocket` API either way.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fullduplex::{Accept, Config, Reject, UpgradeRequest, WebSocket};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::Failure;

/// The address servers listen on when none is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9001";

/// Server options common to `echo` and `exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// PEM certificate chain: serve wss:// (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept only this Origin (repeatable). Other Origins get 403; requests without an
    /// Origin header (non-browser clients) are accepted.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// Largest message accepted, in bytes (also after inflating); larger ones close the
    /// connection with 1009. Default: the library's, 1 MiB.
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Keepalive: ping every SECS seconds and close the connection (1011) when the pong has
    /// not come SECS seconds later; 0 turns it off. A peer that went silent is closed
    /// within twice this.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = parse_ping_interval)]
    pub ping_interval: std::time::Duration,
    /// Do not accept WebSockets over HTTP/2 (RFC 8441): no ALPN `h2` with TLS, no h2c
    /// without. By default both are accepted next to HTTP/1.1, on the same port.
    #[arg(long)]
    pub no_http2: bool,
    /// Fix each connection's kernel send and receive buffers at BYTES (SO_SNDBUF and
    /// SO_RCVBUF; the kernel doubles the value) instead of letting them grow up to the
    /// system's maximum (4-32 MiB on Linux): bounds what a peer that never reads can make
    /// the server copy, at the cost of throughput on long, fast paths. Default: the kernel's.
    #[arg(long, value_name = "BYTES")]
    pub socket_buffer: Option<usize>,
    /// Unsent bytes each connection may queue in its kernel send buffer (TCP_NOTSENT_LOWAT):
    /// a write waits once this much is queued and not yet sent. Bounds what a peer that
    /// never reads can make the server copy, without limiting the data in flight (long,
    /// fast paths keep their throughput); 0 leaves the kernel's default (no limit).
    #[arg(long, value_name = "BYTES", default_value = "131072")]
    pub notsent_lowat: u32,
}

/// `--ping-interval`: seconds (fractions allowed), 0 for none.
fn parse_ping_interval(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs >= 0.0 && *secs <= 86_400.0)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("{text}: expected seconds from 0 to 86400"))
}

/// Any transport a connection runs over: TCP, or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// What a server does with its WebSockets, whichever HTTP version carried them.
pub trait Handler: Send + Sync + 'static {
    /// Decides on an upgrade request that passed the Origin policy: accept (subprotocol,
    /// headers) or refuse with any status.
    fn admit(&self, request: &UpgradeRequest) -> Result<Accept, Reject>;

    /// Serves one accepted WebSocket (over TCP, TLS or an HTTP/2 stream) to its end.
    fn serve<S: Transport + 'static>(
        self: Arc<Self>,
        ws: WebSocket<S>,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send;
}

/// A bound listener with its TLS acceptor and policy.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    policy: Arc<Policy>,
    /// `--socket-buffer`.
    socket_buffer: Option<usize>,
    /// `--notsent-lowat`.
    notsent_lowat: u32,
}

/// What every connection is checked against before the handler sees it.
#[derive(Debug)]
struct Policy {
    allowed_origins: Vec<String>,
    config: Config,
    /// Accept HTTP/2 (ALPN `h2`, h2c prior knowledge).
    http2: bool,
}

impl Server {
    /// Loads the TLS files (if any) and binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: &str, options: &ServeOptions) -> Result<Server, Failure> {
        let tls = match (&options.tls_cert, &options.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(crate::tls::server_config_alpn(
                cert,
                key,
                !options.no_http2,
            )?)),
            _ => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::new(format!("cannot listen on {addr}: {e}")))?;
        let mut config = Config::default();
        config = match options.ping_interval.is_zero() {
            true => config.no_keepalive(),
            false => config.keepalive(options.ping_interval, options.ping_interval),
        };
        if let Some(max) = options.max_message_size {
            config = config.max_message_size(max);
        }
        Ok(Server {
            listener,
            tls,
            socket_buffer: options.socket_buffer,
            notsent_lowat: options.notsent_lowat,
            policy: Arc::new(Policy {
                allowed_origins: options.allowed_origins.clone(),
                config,
                http2: !options.no_http2,
            }),
        })
    }

    /// `ws://ADDR` or `wss://ADDR` with the port actually bound.
    pub fn url(&self) -> Result<String, Failure> {
        let addr = self
            .listener
            .local_addr()
            .map_err(|e| Failure::new(format!("cannot read the bound address: {e}")))?;
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        Ok(format!("{scheme}://{addr}"))
    }

    /// Prints `listening on URL` on stdout, then accepts connections forever, each in its own
    /// task: TLS (bounded by the handshake timeout), then HTTP/2 (ALPN `h2`, or the h2c
    /// preface on plain TCP) with every WebSocket of the connection handed to `handler`, or
    /// the HTTP/1.1 upgrade (`accept_with`) as before.
    pub async fn run<H: Handler>(self, handler: H) -> Result<(), Failure> {
        println!("listening on {}", self.url()?);
        let handler = Arc::new(handler);
        let open = crate::memory::OpenConnections::default();
        tokio::spawn(open.clone().trim_after_drops());
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: report, breathe, go on.
                    eprintln!("fdx: accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let socket = socket2::SockRef::from(&tcp);
            if let Some(bytes) = self.socket_buffer {
                let _ = socket.set_send_buffer_size(bytes);
                let _ = socket.set_recv_buffer_size(bytes);
            }
            if self.notsent_lowat > 0 {
                let _ = socket.set_tcp_notsent_lowat(self.notsent_lowat);
            }
            let tls = self.tls.clone();
            let policy = self.policy.clone();
            let handler = handler.clone();
            let counted = open.open();
            tokio::spawn(async move {
                let _counted = counted;
                // One deadline from accept to the end of the HTTP/1.1 handshake, whatever
                // comes before it (the h2c peek, TLS).
                let deadline = tokio::time::Instant::now() + policy.config.handshake_timeout;
                let Some(acceptor) = tls else {
                    let h2c = if policy.http2 {
                        match h2c_preface(&tcp, peer, deadline).await {
                            Some(h2c) => h2c,
                            None => return,
                        }
                    } else {
                        false
                    };
                    if h2c {
                        // Boxed: the HTTP/2 connection's future is large, and inline it would
                        // size every connection's task, HTTP/1.1 ones included.
                        Box::pin(serve_h2(tcp, peer, policy, handler)).await;
                    } else {
                        serve_http1(tcp, peer, deadline, policy, handler).await;
                    }
                    return;
                };
                let stream = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        eprintln!("fdx: {peer}: TLS handshake failed: {error}");
                        return;
                    }
                    Err(_) => {
                        eprintln!("fdx: {peer}: TLS handshake timed out");
                        return;
                    }
                };
                if stream.get_ref().1.alpn_protocol() == Some(fullduplex::http2::ALPN_H2) {
                    Box::pin(serve_h2(stream, peer, policy, handler)).await;
                } else {
                    let stream: Box<dyn Transport> = Box::new(stream);
                    serve_http1(stream, peer, deadline, policy, handler).await;
                }
            });
        }
    }
}

/// Whether a plain TCP client opened with the HTTP/2 preface (h2c with prior knowledge); the
/// bytes stay in the socket for whichever handshake follows. `None` when the client sent too
/// little to tell by `deadline` (the connection is then dropped: the handshake's time is up)
/// or the socket failed.
async fn h2c_preface(
    tcp: &TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<bool> {
    match tokio::time::timeout_at(deadline, fullduplex::http2::is_h2c_preface(tcp)).await {
        Ok(Ok(h2c)) => Some(h2c),
        Ok(Err(error)) => {
            eprintln!("fdx: {peer}: {error}");
            None
        }
        Err(_) => {
            eprintln!("fdx: {peer}: handshake timed out");
            None
        }
    }
}

/// The HTTP/1.1 upgrade, to be done by `deadline`: the Origin policy first, then the handler's
/// decision. Failures and refusals are logged to stderr.
async fn serve_http1<S, H>(
    stream: S,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    policy: Arc<Policy>,
    handler: Arc<H>,
) where
    S: Transport + 'static,
    H: Handler,
{
    let mut config = policy.config.clone();
    config.handshake_timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
    let result = fullduplex::accept_with(stream, config, |request| {
        check_origin(&policy.allowed_origins, request.origin())?;
        handler.admit(request)
    })
    .await;
    match result {
        Ok(ws) => handler.serve(ws, peer).await,
        Err(fullduplex::Error::Rejected(status)) => {
            eprintln!("fdx: {peer}: refused with {status}");
        }
        Err(error) => eprintln!("fdx: {peer}: handshake failed: {error}"),
    }
}

/// An HTTP/2 connection: each extended CONNECT passes the same Origin policy and handler
/// decision as an HTTP/1.1 upgrade, and each accepted WebSocket is served in a task of its
/// own. Refusals are logged to stderr.
async fn serve_h2<S, H>(stream: S, peer: SocketAddr, policy: Arc<Policy>, handler: Arc<H>)
where
    S: Transport + 'static,
    H: Handler,
{
    let admit = {
        let policy = policy.clone();
        let handler = handler.clone();
        move |request: &UpgradeRequest| {
            let decision = check_origin(&policy.allowed_origins, request.origin())
                .and_then(|()| handler.admit(request));
            if let Err(reject) = &decision {
                let status = fullduplex::hyper::UpgradeError::Rejected(reject.clone()).status();
                eprintln!("fdx: {peer}: refused with {status} (HTTP/2)");
            }
            decision
        }
    };
    let serve = move |ws| handler.clone().serve(ws, peer);
    if let Err(error) =
        fullduplex::http2::serve_connection(stream, policy.config.clone(), admit, serve).await
    {
        eprintln!("fdx: {peer}: {error}");
    }
}

/// The Origin policy: with no allowed origins, anything goes; otherwise a request without
/// Origin passes (browsers always send one, so this only admits non-browser clients) and a
/// request with an Origin must match one of the list, ignoring ASCII case.
fn check_origin(allowed: &[String], origin: Option<&str>) -> Result<(), Reject> {
    match origin {
        Some(origin) if !allowed.is_empty() => {
            if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
                Ok(())
            } else {
                Err(Reject::new(StatusCode::FORBIDDEN)
                    .body(format!("origin {origin} is not allowed\n")))
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_policy() {
        let allowed = vec!["https://example.com".to_owned()];
        assert!(check_origin(&[], Some("https://evil.test")).is_ok());
        assert!(check_origin(&allowed, None).is_ok());
        assert!(check_origin(&allowed, Some("https://EXAMPLE.com")).is_ok());
        assert!(check_origin(&allowed, Some("https://evil.test")).is_err());
    }
}
