//! Serving: the accept loop, hyper HTTP/1.1 connections with upgrades, the background tasks
//! (clock, history sweeper) and the graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{clock, http, Hub};

/// How long starting the engine (connecting to Redis) may take.
const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (hyper answers 431 past it), the library's own limit.
pub const MAX_HEAD_BYTES: usize = 16 << 10;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Hub {
    /// Serves HTTP and WebSocket connections on `listener` until [`Hub::shutdown`] is
    /// called; then stops accepting, lets every WebSocket flush its queue and close with
    /// 1001, finishes in-flight HTTP requests, and returns, waiting at most
    /// [`HubConfig::shutdown_timeout`](crate::HubConfig::shutdown_timeout) for all that.
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
        let loopback = listener
            .local_addr()
            .is_ok_and(|addr| addr.ip().is_loopback());
        let _ = self
            .anonymous_publish
            .set(self.config.anonymous_publish.unwrap_or(loopback));
        let http_connections = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_http_connections.max(1),
        ));
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
            let hub = self.clone();
            self.tasks().spawn(async move {
                let _permit = permit;
                let service = service_fn(|request| http::route(hub.clone(), request));
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades();
                tokio::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    _ = hub.shutdown_token().cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "HTTP connection ended with an error");
                }
            });
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
