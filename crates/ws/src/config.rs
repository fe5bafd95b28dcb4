//! Configuration of the tokio layer: protocol limits plus timers and buffers.

use std::time::Duration;

use crate::tunnel::{Tunnel, TunnelSetting};

/// Keepalive: ping every `interval`, fail the connection if no pong arrives within `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between pings.
    pub interval: Duration,
    /// How long to wait for the pong.
    pub timeout: Duration,
}

impl Keepalive {
    /// The default: a ping every 20 s, and the connection fails (close 1011) when its pong
    /// has not come 20 s later, as in Python `websockets` (`ping_interval=20`,
    /// `ping_timeout=20`). A peer that went silent (a dead NAT mapping, a vanished phone, a
    /// client that stopped reading) is then closed within 40 s. A connection's first ping
    /// comes up to a tenth of the interval early (at random), so that connections opened
    /// together do not ping, or fail, in the same instant.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fullduplex::{Config, Keepalive};
    /// assert_eq!(Config::default().keepalive, Some(Keepalive::DEFAULT));
    /// assert_eq!(Keepalive::DEFAULT.interval, Duration::from_secs(20));
    /// assert_eq!(Keepalive::DEFAULT.timeout, Duration::from_secs(20));
    /// ```
    pub const DEFAULT: Keepalive = Keepalive {
        interval: Duration::from_secs(20),
        timeout: Duration::from_secs(20),
    };
}

/// Configuration for [`crate::WebSocket`], [`crate::accept_with`] and [`crate::connect_with`].
///
/// ```
/// use std::time::Duration;
/// use fullduplex::Config;
/// let config = Config::default()
///     .keepalive(Duration::from_secs(30), Duration::from_secs(10))
///     .idle_timeout(Some(Duration::from_secs(300)))
///     .max_message_size(16 << 20);
/// assert!(config.keepalive.is_some());
/// // The defaults: 1 MiB messages, keepalive on.
/// assert_eq!(Config::default().protocol.max_message_size, 1 << 20);
/// assert_eq!(Config::default().keepalive, Some(fullduplex::Keepalive::DEFAULT));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The core's limits and switches (frame, message and handshake sizes, auto-pong, receive
    /// mode).
    pub protocol: fullduplex_proto::Config,
    /// Keepalive pings. Default: on, [`Keepalive::DEFAULT`] (a ping every 20 s, fail after
    /// 20 s without its pong), for clients and servers alike, so that a peer that goes
    /// silent is closed even when the application never sends. Pings are sent, and their
    /// deadlines checked, while the connection is being read (`recv`, a split reader, a
    /// [`crate::WebSocketSet`]). `None` ([`Config::no_keepalive`]) turns it off: test peers
    /// such as Autobahn's runner treat unsolicited pings as protocol events. Its timer
    /// needs tokio's time driver (`enable_time`, as every timeout here does): a `WebSocket`
    /// polled by hand outside a runtime needs `no_keepalive()`.
    pub keepalive: Option<Keepalive>,
    /// Fail the connection when nothing has been received for this long. Default: off.
    pub idle_timeout: Option<Duration>,
    /// How long the close handshake may take: waiting for the peer's close frame after ours,
    /// and (for a client) for the server to close TCP. Default 5 s.
    pub close_timeout: Duration,
    /// Bound on TCP connect + TLS + HTTP upgrade (client), or on reading the request and
    /// answering it (server). Default 10 s.
    pub handshake_timeout: Duration,
    /// Sends wait (backpressure) while this many bytes are queued and not yet written.
    /// Reading does not wait for writes; automatic pongs are coalesced once 16 KiB of output
    /// is waiting (`fullduplex_proto::connection::PONG_BACKLOG`). Default 1 MiB.
    pub write_buffer_limit: usize,
    /// Bytes to reserve for each socket read when the frame being read needs no more. Default
    /// 8 KiB; reads of large frames grow up to the frame's size, in steps of at most 1 MiB.
    pub read_size: usize,
    /// Whether clients connect directly (the default), through a given proxy, or through
    /// the proxy the environment names (`https_proxy`, `http_proxy`, `all_proxy`,
    /// `no_proxy`, read at each connect). See [`TunnelSetting`] for why the default ignores
    /// the environment.
    pub tunnel: TunnelSetting,
    /// TLS client configuration for `wss://` URLs. Default: webpki roots, ring provider.
    #[cfg(feature = "rustls")]
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// When clients use WebSockets over HTTP/2 (RFC 8441). Default
    /// [`Http2Policy::Auto`](crate::http2::Http2Policy::Auto): for `wss://` when the server
    /// agrees, HTTP/1.1 otherwise.
    #[cfg(feature = "http2")]
    pub http2: crate::http2::Http2Policy,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            protocol: fullduplex_proto::Config::default(),
            keepalive: Some(Keepalive::DEFAULT),
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            write_buffer_limit: 1 << 20,
            read_size: 8 << 10,
            tunnel: TunnelSetting::Direct,
            #[cfg(feature = "rustls")]
            tls: None,
            #[cfg(feature = "http2")]
            http2: crate::http2::Http2Policy::Auto,
        }
    }
}

impl Config {
    /// Sets keepalive: a ping every `interval`, failing after `timeout` without its pong.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Config {
        self.keepalive = Some(Keepalive { interval, timeout });
        self
    }

    /// Turns keepalive off (it is on by default: [`Keepalive::DEFAULT`]).
    ///
    /// ```
    /// assert_eq!(fullduplex::Config::default().no_keepalive().keepalive, None);
    /// ```
    pub fn no_keepalive(mut self) -> Config {
        self.keepalive = None;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Config {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`Config::close_timeout`].
    pub fn close_timeout(mut self, timeout: Duration) -> Config {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Config {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`Config::write_buffer_limit`].
    pub fn write_buffer_limit(mut self, bytes: usize) -> Config {
        self.write_buffer_limit = bytes;
        self
    }

    /// Sets the core's maximum message size.
    pub fn max_message_size(mut self, bytes: usize) -> Config {
        self.protocol.max_message_size = bytes;
        self
    }

    /// Sets the core's maximum frame size.
    pub fn max_frame_size(mut self, bytes: usize) -> Config {
        self.protocol.max_frame_size = bytes;
        self
    }

    /// Turns permessage-deflate on (with default parameters) or off. On by default: a client
    /// offers it and a server accepts an offer.
    pub fn compression(mut self, on: bool) -> Config {
        self.protocol.deflate = on.then(fullduplex_proto::deflate::DeflateConfig::default);
        self
    }

    /// Sets the permessage-deflate parameters (offer, acceptance, level, threshold).
    pub fn deflate(mut self, deflate: fullduplex_proto::deflate::DeflateConfig) -> Config {
        self.protocol.deflate = Some(deflate);
        self
    }

    /// Replaces the core's configuration.
    pub fn protocol(mut self, protocol: fullduplex_proto::Config) -> Config {
        self.protocol = protocol;
        self
    }

    /// Connects through a tunnel via this proxy ([`TunnelSetting::Tunnel`]).
    ///
    /// ```
    /// use fullduplex::tunnel::{Tunnel, TunnelSetting};
    /// use fullduplex::Config;
    /// let proxy = Tunnel::parse("socks5://127.0.0.1:1080").unwrap();
    /// let config = Config::default().tunnel(proxy.clone());
    /// assert_eq!(config.tunnel, TunnelSetting::Tunnel(proxy));
    /// ```
    pub fn tunnel(mut self, tunnel: Tunnel) -> Config {
        self.tunnel = TunnelSetting::Tunnel(tunnel);
        self
    }

    /// Connects through the proxy the environment names, like curl
    /// ([`TunnelSetting::FromEnv`], rules in [`Tunnel::from_env`]).
    pub fn tunnel_from_env(mut self) -> Config {
        self.tunnel = TunnelSetting::FromEnv;
        self
    }

    /// Sets [`Config::tunnel`] (for example back to [`TunnelSetting::Direct`]).
    pub fn tunnel_setting(mut self, setting: TunnelSetting) -> Config {
        self.tunnel = setting;
        self
    }

    /// Sets [`Config::http2`]: whether clients open WebSockets over HTTP/2.
    #[cfg(feature = "http2")]
    pub fn http2(mut self, policy: crate::http2::Http2Policy) -> Config {
        self.http2 = policy;
        self
    }

    /// Uses this TLS client configuration for `wss://` (custom roots, client certificates).
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, tls: std::sync::Arc<rustls::ClientConfig>) -> Config {
        self.tls = Some(tls);
        self
    }
}
