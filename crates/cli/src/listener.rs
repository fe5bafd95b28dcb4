//! What `fdx echo` and `fdx exec` share: the listener, TLS, the Origin policy and limits.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fullduplex::{Accept, Config, Reject, UpgradeRequest, WebSocket};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
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
    /// Largest message accepted, in bytes; larger ones close the connection with 1009.
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
}

/// Any transport a connection runs over: TCP, or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// The connection type servers hand to their handlers.
pub type ServerSocket = WebSocket<Box<dyn Transport>>;

/// A bound listener with its TLS acceptor and policy.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    policy: Arc<Policy>,
}

/// What every connection is checked against before the handler sees it.
#[derive(Debug)]
struct Policy {
    allowed_origins: Vec<String>,
    config: Config,
}

/// An accepted TCP (or TLS) connection whose WebSocket handshake has not run yet.
pub struct Incoming {
    stream: Box<dyn Transport>,
    /// The client's address.
    pub peer: SocketAddr,
    policy: Arc<Policy>,
}

impl Server {
    /// Loads the TLS files (if any) and binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: &str, options: &ServeOptions) -> Result<Server, Failure> {
        let tls = match (&options.tls_cert, &options.tls_key) {
            (Some(cert), Some(key)) => {
                Some(TlsAcceptor::from(crate::tls::server_config(cert, key)?))
            }
            _ => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::new(format!("cannot listen on {addr}: {e}")))?;
        let mut config = Config::default();
        if let Some(max) = options.max_message_size {
            config = config.max_message_size(max);
        }
        Ok(Server {
            listener,
            tls,
            policy: Arc::new(Policy {
                allowed_origins: options.allowed_origins.clone(),
                config,
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

    /// Prints `listening on URL` on stdout, then accepts connections forever, running
    /// `handler` on each in its own task after TLS (bounded by the handshake timeout).
    pub async fn run<F, Fut>(self, handler: F) -> Result<(), Failure>
    where
        F: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        println!("listening on {}", self.url()?);
        let handler = Arc::new(handler);
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
            let tls = self.tls.clone();
            let policy = self.policy.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let stream: Box<dyn Transport> = match tls {
                    None => Box::new(tcp),
                    Some(acceptor) => {
                        let timeout = policy.config.handshake_timeout;
                        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => Box::new(tls),
                            Ok(Err(error)) => {
                                eprintln!("fdx: {peer}: TLS handshake failed: {error}");
                                return;
                            }
                            Err(_) => {
                                eprintln!("fdx: {peer}: TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                handler(Incoming {
                    stream,
                    peer,
                    policy,
                })
                .await;
            });
        }
    }
}

impl Incoming {
    /// Runs the WebSocket handshake: the Origin policy first, then `admit` (which may refuse
    /// with any status). Failures and refusals are logged to stderr and give `None`.
    pub async fn accept(
        self,
        admit: impl FnOnce(&UpgradeRequest) -> Result<Accept, Reject>,
    ) -> Option<ServerSocket> {
        let peer = self.peer;
        let policy = self.policy.clone();
        let result = fullduplex::accept_with(self.stream, policy.config.clone(), |request| {
            check_origin(&policy.allowed_origins, request.origin())?;
            admit(request)
        })
        .await;
        match result {
            Ok(ws) => Some(ws),
            Err(fullduplex::Error::Rejected(status)) => {
                eprintln!("fdx: {peer}: refused with {status}");
                None
            }
            Err(error) => {
                eprintln!("fdx: {peer}: handshake failed: {error}");
                None
            }
        }
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
