//! Counters and gauges of the hub, rendered as Prometheus text for `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The hub's counters (monotonic) and gauges (current values). All updates are relaxed
/// atomic adds: the numbers are for monitoring, not for synchronisation.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicI64,
    /// The most WebSocket connections open at once since memory was last given back to the
    /// system (not exported; see [`crate::allocator::connections_dropped_enough`]).
    pub connections_peak: AtomicI64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Subscriptions held by open connections.
    pub subscriptions: AtomicI64,
    /// Topics that exist (with subscribers or history).
    pub topics: AtomicI64,
    /// Messages published by clients (WebSocket and HTTP) and by the server (clock).
    pub messages_in: AtomicU64,
    /// Messages queued to subscribers (one per subscriber per message, replays included).
    pub messages_out: AtomicU64,
    /// Bytes of published message data received.
    pub bytes_in: AtomicU64,
    /// Bytes of frames queued to connections.
    pub bytes_out: AtomicU64,
    /// Messages dropped: publishes refused by the rate limit, frames discarded when a slow
    /// consumer was disconnected.
    pub drops: AtomicU64,
    /// Connections closed because their outgoing queue overflowed.
    pub slow_consumer_disconnects: AtomicU64,
    /// WebSocket upgrade requests refused (invalid, Origin, token, connection limit).
    pub handshake_failures: AtomicU64,
    /// Error replies sent to clients.
    pub client_errors: AtomicU64,
    /// HTTP requests served (any route).
    pub http_requests: AtomicU64,
    /// `gap` events sent: messages lost to subscribers (history gone, or a new epoch).
    pub gaps: AtomicU64,
    /// Gaps repaired from the engine's history (a jump in offsets, a reconnect).
    pub repairs: AtomicU64,
    /// Bytes received from the engine (Redis) for this node.
    pub engine_bytes_in: AtomicU64,
    /// Of those, bytes of topics without subscribers on this node (0 with per-topic
    /// subscriptions).
    pub engine_unwanted_bytes: AtomicU64,
    /// 1 while the engine can serve (`/readyz`), else 0.
    pub engine_ready: AtomicI64,
    /// TCP connections closed at once: `max_http_connections` were open.
    pub http_refused: AtomicU64,
    /// Bytes of messages held in the in-process engine's histories.
    pub history_bytes: AtomicI64,
    /// Messages forgotten early because the histories held `history_memory` bytes.
    pub history_evictions: AtomicU64,
    /// Events written to Server-Sent Events streams (`GET /sse`).
    pub sse_events: AtomicU64,
    /// Open client connections per [`Transport`], indexed by [`Transport::index`].
    pub transports: [AtomicI64; Transport::ALL.len()],
}

/// What carries a client connection: a WebSocket over HTTP/1.1 (Upgrade) or over HTTP/2
/// (RFC 8441 extended CONNECT), or a Server-Sent Events stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket upgraded from HTTP/1.1.
    Http1,
    /// A WebSocket on an HTTP/2 stream.
    Http2,
    /// A `GET /sse` event stream (over HTTP/1.1 or HTTP/2).
    Sse,
}

impl Transport {
    /// Every transport, in [`Transport::index`] order.
    pub const ALL: [Transport; 3] = [Transport::Http1, Transport::Http2, Transport::Sse];

    /// The WebSocket transport of a request of this HTTP version.
    pub fn of_websocket(version: http::Version) -> Transport {
        if version == http::Version::HTTP_2 {
            Transport::Http2
        } else {
            Transport::Http1
        }
    }

    /// The name in `/metrics` and in the `info` reply: `http1`, `h2` or `sse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http1 => "http1",
            Transport::Http2 => "h2",
            Transport::Sse => "sse",
        }
    }

    /// The position in [`Metrics::transports`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Metrics {
    /// Counts a connection of `transport` as open, until [`Metrics::transport_closed`].
    pub fn transport_opened(&self, transport: Transport) {
        self.transports[transport.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection of `transport` as closed.
    pub fn transport_closed(&self, transport: Transport) {
        self.transports[transport.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let gauge = |out: &mut String, name: &str, help: &str, value: &AtomicI64| {
            let value = value.load(Ordering::Relaxed).max(0);
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let value = value.load(Ordering::Relaxed);
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        };
        gauge(
            &mut out,
            "fdx_hub_connections",
            "Open WebSocket connections.",
            &self.connections,
        );
        counter(
            &mut out,
            "fdx_hub_connections_total",
            "WebSocket connections accepted.",
            &self.connections_total,
        );
        gauge(
            &mut out,
            "fdx_hub_subscriptions",
            "Subscriptions of open connections.",
            &self.subscriptions,
        );
        gauge(&mut out, "fdx_hub_topics", "Topics held.", &self.topics);
        counter(
            &mut out,
            "fdx_hub_messages_in_total",
            "Messages published.",
            &self.messages_in,
        );
        counter(
            &mut out,
            "fdx_hub_messages_out_total",
            "Messages queued to subscribers.",
            &self.messages_out,
        );
        counter(
            &mut out,
            "fdx_hub_bytes_in_total",
            "Bytes of published data received.",
            &self.bytes_in,
        );
        counter(
            &mut out,
            "fdx_hub_bytes_out_total",
            "Bytes of frames queued to connections.",
            &self.bytes_out,
        );
        counter(
            &mut out,
            "fdx_hub_drops_total",
            "Messages dropped (rate limit, slow-consumer queues).",
            &self.drops,
        );
        counter(
            &mut out,
            "fdx_hub_slow_consumer_disconnects_total",
            "Connections closed with 1013 because their queue overflowed.",
            &self.slow_consumer_disconnects,
        );
        counter(
            &mut out,
            "fdx_hub_handshake_failures_total",
            "WebSocket upgrades refused.",
            &self.handshake_failures,
        );
        counter(
            &mut out,
            "fdx_hub_client_errors_total",
            "Error replies sent to WebSocket clients.",
            &self.client_errors,
        );
        counter(
            &mut out,
            "fdx_hub_http_requests_total",
            "HTTP requests served.",
            &self.http_requests,
        );
        counter(
            &mut out,
            "fdx_hub_gaps_total",
            "Gap events sent (messages lost to subscribers).",
            &self.gaps,
        );
        counter(
            &mut out,
            "fdx_hub_repairs_total",
            "Missing ranges delivered from the engine's history.",
            &self.repairs,
        );
        counter(
            &mut out,
            "fdx_hub_engine_bytes_in_total",
            "Bytes received from the engine for this node.",
            &self.engine_bytes_in,
        );
        counter(
            &mut out,
            "fdx_hub_engine_unwanted_bytes_total",
            "Bytes received from the engine for topics without subscribers here.",
            &self.engine_unwanted_bytes,
        );
        counter(
            &mut out,
            "fdx_hub_http_refused_total",
            "TCP connections closed at once because max_http_connections were open.",
            &self.http_refused,
        );
        gauge(
            &mut out,
            "fdx_hub_history_bytes",
            "Bytes of messages held in the in-process engine's histories.",
            &self.history_bytes,
        );
        counter(
            &mut out,
            "fdx_hub_history_evictions_total",
            "Messages forgotten early to keep the histories within --history-memory.",
            &self.history_evictions,
        );
        counter(
            &mut out,
            "fdx_hub_sse_events_total",
            "Events written to Server-Sent Events streams.",
            &self.sse_events,
        );
        let _ = write!(
            out,
            "# HELP fdx_hub_transport_connections Open client connections by transport.\n\
             # TYPE fdx_hub_transport_connections gauge\n"
        );
        for transport in Transport::ALL {
            let value = self.transports[transport.index()]
                .load(Ordering::Relaxed)
                .max(0);
            let _ = writeln!(
                out,
                "fdx_hub_transport_connections{{transport=\"{}\"}} {value}",
                transport.as_str()
            );
        }
        gauge(
            &mut out,
            "fdx_hub_engine_ready",
            "1 while the engine can serve.",
            &self.engine_ready,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_once() {
        let metrics = Metrics::default();
        inc(&metrics.messages_in);
        add(&metrics.bytes_out, 42);
        metrics.connections.fetch_add(2, Ordering::Relaxed);
        let text = metrics.render();
        assert!(text.contains("\nfdx_hub_messages_in_total 1\n"), "{text}");
        assert!(text.contains("\nfdx_hub_bytes_out_total 42\n"), "{text}");
        assert!(text.contains("# TYPE fdx_hub_connections gauge\nfdx_hub_connections 2\n"));
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, 22 + Transport::ALL.len());
        metrics.transport_opened(Transport::Http2);
        metrics.transport_opened(Transport::Sse);
        metrics.transport_closed(Transport::Sse);
        let text = metrics.render();
        assert!(
            text.contains("\nfdx_hub_transport_connections{transport=\"h2\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\nfdx_hub_transport_connections{transport=\"sse\"} 0\n"));
    }
}
