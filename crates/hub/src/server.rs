//! Serving: the accept loop, TLS, hyper HTTP/1.1 and HTTP/2 connections with upgrades and
//! RFC 8441 extended CONNECT, the background tasks (clock, history sweeper) and the graceful
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::{clock, http, Hub};

/// How long starting the engine (connecting to Redis) may take.
const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (hyper answers 431 past it), the library's own limit.
pub const MAX_HEAD_BYTES: usize = 16 << 10;

/// How long a client may take to send a request head (or finish the TLS handshake).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Hub {
    /// Serves HTTP and WebSocket connections on `listener` until [`Hub::shutdown`] is
    /// called; then stops accepting, lets every WebSocket flush its queue and close with
    /// 1001, finishes in-flight HTTP requests, and returns, waiting at most
    /// [`HubConfig::shutdown_timeout`](crate::HubConfig::shutdown_timeout) for all that.
    ///
    /// # Errors
    ///
    /// When the engine does not start within 10 s (Redis unreachable) or fails to start.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future stops accepting, but connections already
    /// accepted run on in their own tasks; call [`Hub::shutdown`] to end them.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        tokio::time::timeout(ENGINE_START_TIMEOUT, self.start_engine())
            .await
            .map_err(|_| std::io::Error::other("the engine did not start within 10 s"))?
            .map_err(std::io::Error::other)?;
        if self.config.clock {
            self.tasks()
                .spawn(clock::run(self.clone(), self.config.clock_interval));
        }
        self.tasks().spawn(sweep(self.clone()));
        if self.config.broker.return_memory {
            self.tasks().spawn(return_memory_after_drops(self.clone()));
        }
        let loopback = listener
            .local_addr()
            .is_ok_and(|addr| addr.ip().is_loopback());
        let _ = self
            .anonymous_publish
            .set(self.config.anonymous_publish.unwrap_or(loopback));
        let http_connections = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_http_connections.max(1),
        ));
        let tls = self.config.tls.clone().map(|config| {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let shutdown = self.shutdown_token().clone();
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: breathe and go on.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // An HTTP connection holds a permit until it ends or is upgraded (a WebSocket
            // then counts against `max_connections`); past the limit, new ones are closed.
            let Ok(permit) = http_connections.clone().try_acquire_owned() else {
                crate::metrics::inc(&self.metrics.http_refused);
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            if self.config.notsent_lowat > 0 {
                let _ =
                    socket2::SockRef::from(&tcp).set_tcp_notsent_lowat(self.config.notsent_lowat);
            }
            let hub = self.clone();
            let tls = tls.clone();
            // Boxed: the connection's state (about 6 KB) is a plain allocation, and the
            // task's cell (which tokio aligns to 128 bytes) stays small. A freed aligned
            // block is too small to be reused for the next aligned one of the same size, so
            // each connection would leave its 6 KB behind as free but resident memory.
            self.tasks().spawn(Box::pin(async move {
                let permit = HttpPermit::new(permit);
                match tls {
                    None => {
                        // hyper's head timeout starts at the first byte: a client that sends
                        // nothing at all would keep its place forever.
                        let mut first = [0u8; 1];
                        let peeked =
                            tokio::time::timeout(HEADER_READ_TIMEOUT, tcp.peek(&mut first));
                        match peeked.await {
                            // `PRI` (the HTTP/2 preface), `POST`, `PUT`, `PATCH`: hyper-util
                            // tells them apart. Anything else is HTTP/1.1, served by hyper's
                            // own connection so that a WebSocket upgrade (always a `GET`)
                            // keeps the plain socket.
                            Ok(Ok(1..)) if first[0] != b'P' => {
                                serve_http1(hub, tcp, permit, peer).await
                            }
                            Ok(Ok(1..)) => {
                                serve_connection(hub, TokioIo::new(tcp), permit, peer).await
                            }
                            _ => tracing::debug!(%peer, "nothing received: closed"),
                        }
                    }
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp));
                        match handshake.await {
                            Ok(Ok(stream)) => {
                                serve_connection(hub, TokioIo::new(stream), permit, peer).await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%error, %peer, "TLS handshake failed");
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            }));
        }
        drop(listener);
        self.tasks().close();
        if tokio::time::timeout(self.config.shutdown_timeout, self.tasks().wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout: some connections did not close in time");
        }
        Ok(())
    }
}

/// The service every HTTP connection runs: [`http::route`], with the connection's permit and
/// abort signal in each request's extensions.
fn service(
    hub: Arc<Hub>,
    permit: HttpPermit,
    abort: ConnectionAbort,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = http::HttpResponse,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::HttpResponse, std::convert::Infallible>> + Send,
> + Clone {
    service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(permit.clone());
        request.extensions_mut().insert(abort.clone());
        http::route(hub.clone(), request)
    })
}

/// Serves a cleartext HTTP/1.1 connection with hyper's own HTTP/1.1 connection, so that an
/// upgrade hands back the `TcpStream` itself
/// ([`UpgradedStream::Tcp`](fullduplex::hyper::UpgradedStream::Tcp)).
async fn serve_http1(
    hub: Arc<Hub>,
    tcp: tokio::net::TcpStream,
    permit: HttpPermit,
    peer: SocketAddr,
) {
    let abort = ConnectionAbort(Arc::new(Notify::new()));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(
            TokioIo::new(tcp),
            service(hub.clone(), permit, abort.clone()),
        )
        .with_upgrades();
    drive(&hub, connection, |c| c.graceful_shutdown(), &abort, peer).await;
}

/// Serves one HTTP/1.1 or HTTP/2 connection (cleartext h2 by its prior-knowledge preface,
/// over TLS as ALPN chose) until it ends or the hub shuts down.
async fn serve_connection<I>(hub: Arc<Hub>, io: TokioIo<I>, permit: HttpPermit, peer: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let abort = ConnectionAbort(Arc::new(Notify::new()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        // The library's flow control: WebSockets that do not read cannot take the window the
        // connection's other streams need.
        .max_concurrent_streams(fullduplex::http2::MAX_STREAMS)
        .initial_stream_window_size(fullduplex::http2::STREAM_WINDOW)
        .initial_connection_window_size(fullduplex::http2::CONNECTION_WINDOW);
    let connection =
        builder.serve_connection_with_upgrades(io, service(hub.clone(), permit, abort.clone()));
    drive(&hub, connection, |c| c.graceful_shutdown(), &abort, peer).await;
}

/// Runs `connection` until it ends, the hub shuts down (then `graceful_shutdown` asks it to
/// finish), or its `abort` is signalled (then it gets [`ABORT_GRACE`] to end by itself).
async fn drive<C, E>(
    hub: &Hub,
    connection: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    abort: &ConnectionAbort,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = hub.shutdown_token().cancelled() => {
            graceful_shutdown(connection.as_mut());
            connection.await
        }
        _ = abort.0.notified() => {
            // A response the client stopped reading: give it a moment to end by itself
            // (hyper writes its last bytes if the client reads again), then close.
            match tokio::time::timeout(ABORT_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(%peer, "HTTP connection closed: its client stopped reading");
                    return;
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "HTTP connection ended with an error");
    }
}

/// Asks the task serving an HTTP/1.1 connection to close it: the response being written is an
/// event stream whose client stopped reading (its queue overflowed), and hyper, which polls
/// the body only while the socket takes data, would otherwise keep the connection forever.
/// (On HTTP/2 a stream's flow control holds such a body and the connection serves others.)
#[derive(Debug, Clone)]
pub(crate) struct ConnectionAbort(pub(crate) Arc<Notify>);

/// How long an aborted connection may still finish by itself.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// An HTTP connection's place under [`HubConfig::max_http_connections`]: held while the
/// connection serves plain HTTP, given back once it carries a WebSocket (which then counts
/// against `max_connections`), since an HTTP/2 connection lives on with its WebSocket streams.
///
/// [`HubConfig::max_http_connections`]: crate::HubConfig::max_http_connections
#[derive(Debug, Clone)]
pub(crate) struct HttpPermit(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl HttpPermit {
    fn new(permit: OwnedSemaphorePermit) -> HttpPermit {
        HttpPermit(Arc::new(Mutex::new(Some(permit))))
    }

    /// Gives the place back (once; later calls do nothing).
    pub(crate) fn release(&self) {
        let permit = match self.0.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(permit);
    }
}

/// Every 5 s: once many connections have closed since the busiest moment
/// ([`crate::allocator::connections_dropped_enough`]) or a burst's queue rings were freed
/// ([`crate::allocator::burst_freed_enough`]), asks the allocator to give free memory back, so
/// the hub's resident size follows its connections and queues down after a burst.
async fn return_memory_after_drops(hub: Arc<Hub>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hub.shutdown_token().cancelled() => return,
            _ = ticks.tick() => {
                let now = hub.metrics.connections.load(std::sync::atomic::Ordering::Relaxed);
                let peak = hub.metrics.connections_peak.load(std::sync::atomic::Ordering::Relaxed);
                let as_count = |n: i64| usize::try_from(n).unwrap_or(0);
                let dropped =
                    crate::allocator::connections_dropped_enough(as_count(peak), as_count(now));
                if dropped {
                    hub.metrics.connections_peak.store(now, std::sync::atomic::Ordering::Relaxed);
                }
                if dropped | crate::allocator::burst_freed_enough() {
                    tokio::task::spawn_blocking(crate::allocator::return_free_memory);
                }
            }
        }
    }
}

/// Forgets expired history and idle topics every few seconds.
async fn sweep(hub: Arc<Hub>) {
    let every =
        (hub.config.broker.history_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = hub.shutdown_token().cancelled() => return,
            _ = ticks.tick() => {
                hub.engine.sweep();
                hub.local.sweep();
            }
        }
    }
}
