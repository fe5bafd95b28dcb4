//! `fdx serve`: the push server (fullduplex-hub) on one port: the demo page, `/healthz`,
//! `/metrics`, `POST /publish/TOPIC` and the WebSocket at `/ws`. See PROTOCOL.md.

use std::time::Duration;

use fullduplex_hub::{BrokerConfig, HookConfig, Hub, HubConfig, RedisConfig, TokenConfig};

use crate::Failure;

/// Options of `fdx serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// Also allow WebSockets from this browser Origin (repeatable; `*` allows all). Pages
    /// served by the hub itself (same host) are always allowed; others get 403.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// Require `Authorization: Bearer KEY` on POST /publish, /api/ and /presence/. Without
    /// it, those work only on a loopback address unless `--anonymous-publish` is given.
    #[arg(long, env = "FDX_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Require a JWT on /ws (query `token=`, cookie `token` or `Authorization: Bearer`);
    /// HS256 tokens are signed with this secret. Its `subscribe` and `publish` claims list
    /// topic patterns, `sub` names the user, `exp` is enforced during the connection.
    #[arg(
        long,
        env = "FDX_TOKEN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub token_secret: Option<String>,
    /// Also accept RS256 or ES256 tokens signed for this public key (PEM file; repeatable).
    #[arg(long = "token-public-key", value_name = "PEM")]
    pub token_public_keys: Vec<std::path::PathBuf>,
    /// Also accept RS256 or ES256 tokens whose `kid` names a key of this JWKS (fetched,
    /// cached, fetched again for an unknown `kid` at most every 10 s).
    #[arg(long, value_name = "URL")]
    pub token_jwks_url: Option<String>,
    /// Ask this backend (HTTP POST, JSON) before accepting a WebSocket; see PROTOCOL.md.
    #[arg(long, value_name = "URL")]
    pub connect_hook: Option<String>,
    /// Ask this backend (HTTP POST, JSON) before every subscription; see PROTOCOL.md.
    #[arg(long, value_name = "URL")]
    pub subscribe_hook: Option<String>,
    /// How long a hook may take; past it (or on any failure) the request is denied.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "TIME")]
    pub hook_timeout: Duration,
    /// Allow HTTP publishing and the server API without `--api-key` on any address.
    #[arg(long)]
    pub anonymous_publish: bool,
    /// Most HTTP connections at once that are not (yet) WebSockets; more are closed at once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_http_connections: usize,
    /// Unsent bytes a connection may queue in its kernel send buffer (TCP_NOTSENT_LOWAT):
    /// beyond it, messages wait in the connection's queue (--max-queued-bytes), so a
    /// subscriber that does not read is found sooner and holds less kernel memory. Data in
    /// flight is not limited. 0: the kernel's default (no limit).
    #[arg(long, default_value_t = 131072, value_name = "BYTES")]
    pub notsent_lowat: u32,
    /// PEM certificate chain: serve HTTPS and wss:// (ALPN h2 and http/1.1; needs
    /// --tls-key). Without it the port speaks cleartext HTTP/1.1 and h2c with prior
    /// knowledge.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Messages kept per topic for recovery.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub history_size: usize,
    /// How long messages are kept for recovery (`300`, `90s`, `5m`, `1h`).
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "TIME")]
    pub history_ttl: Duration,
    /// Most bytes of messages kept in all topics' histories together (in-process engine);
    /// past it the oldest messages of any topic are forgotten.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    pub history_memory: usize,
    /// With Redis: how long a topic's offset and epoch outlive its last publish.
    #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "TIME")]
    pub history_meta_ttl: Duration,
    /// How long a presence entry lives unless its node refreshes it (every third of this):
    /// the clients of a node that died leave presence within this time.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "TIME")]
    pub presence_ttl: Duration,
    /// Most WebSocket connections at once (more get 503).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_connections: usize,
    /// Most subscriptions per connection.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_subscriptions: usize,
    /// Most topics at once. A topic counts while it has subscribers, history or presence;
    /// one that holds none of these is forgotten at once.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_topics: usize,
    /// Most topics one connection may create (subscribe to while nobody on this node does)
    /// per --new-topics-window; more get the error `topic_rate_limited` (0: no limit).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub new_topics_per_connection: u32,
    /// The window of --new-topics-per-connection (a token bucket refilled over it).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "TIME")]
    pub new_topics_window: Duration,
    /// Largest WebSocket message (larger: close 1009) and POST /publish body (larger: 413).
    #[arg(long, default_value_t = 65_536, value_name = "BYTES")]
    pub max_message_size: usize,
    /// Publishes per second per WebSocket connection, also the burst (0: unlimited).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub publish_rate: u32,
    /// Outgoing queue limit per connection; a client that lets more pile up is closed with
    /// 1013 (slow consumer).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_queued_bytes: usize,
    /// Keepalive ping interval (`0`: no pings).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "TIME")]
    pub ping_interval: Duration,
    /// Do not publish the time to the `clock` topic every second.
    #[arg(long)]
    pub no_clock: bool,
    /// Do not negotiate permessage-deflate: every subscriber gets plain frames.
    #[arg(long)]
    pub no_compression: bool,
    /// Messages whose JSON is shorter than this go out plain to compressing subscribers too.
    #[arg(long, default_value_t = fullduplex_hub::deflate::DEFAULT_THRESHOLD, value_name = "BYTES")]
    pub compression_threshold: usize,
    /// Run as one node of several through Redis (`redis://HOST:PORT/DB`): numbering,
    /// history and presence live in Redis. Repeat it for independent shards (topics are
    /// spread by a hash of their name).
    #[arg(long, value_name = "URL")]
    pub redis: Vec<String>,
    /// The `--redis` URL is any node of a Redis Cluster: its masters are discovered and
    /// each topic lives on the master of its slot.
    #[arg(long, requires = "redis")]
    pub redis_cluster: bool,
    /// How long shutdown (SIGINT, SIGTERM) waits for queues to flush and closes to finish.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "TIME")]
    pub shutdown_timeout: Duration,
}

/// Parses `300`, `300s`, `500ms`, `5m`, `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms, 5m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(number.saturating_mul(3600))),
        _ => Err(format!(
            "unknown unit {unit:?} in {text:?}: use ms, s, m or h"
        )),
    }
}

impl ServeArgs {
    fn config(&self) -> Result<HubConfig, Failure> {
        let mut config = HubConfig::default();
        config.broker = BrokerConfig {
            history_size: self.history_size,
            history_ttl: self.history_ttl,
            history_meta_ttl: self.history_meta_ttl,
            max_topics: self.max_topics,
            new_topics_per_connection: self.new_topics_per_connection,
            new_topics_window: self.new_topics_window,
            presence_ttl: self.presence_ttl,
            history_memory: self.history_memory,
            ..BrokerConfig::default()
        };
        config.allowed_origins = self.allowed_origins.clone();
        config.api_key = self.api_key.clone().filter(|k| !k.is_empty());
        let mut public_keys = Vec::new();
        for path in &self.token_public_keys {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                Failure::with_code(
                    crate::EXIT_USAGE,
                    format!("--token-public-key {}: {e}", path.display()),
                )
            })?;
            public_keys.push(pem);
        }
        config.tokens = TokenConfig {
            secret: self.token_secret.clone().filter(|s| !s.is_empty()),
            public_keys,
            jwks_url: self.token_jwks_url.clone(),
        };
        config.anonymous_publish = self.anonymous_publish.then_some(true);
        config.max_http_connections = self.max_http_connections;
        config.notsent_lowat = self.notsent_lowat;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let tls = crate::tls::server_config(cert, key)
                .map_err(|e| Failure::with_code(crate::EXIT_USAGE, e))?;
            config.tls = Some(tls);
        }
        config.hooks = HookConfig {
            connect: self.connect_hook.clone(),
            subscribe: self.subscribe_hook.clone(),
            timeout: self.hook_timeout,
        };
        config.max_connections = self.max_connections;
        config.max_subscriptions = self.max_subscriptions;
        config.max_message_size = self.max_message_size;
        config.publish_rate = self.publish_rate;
        config.max_queued_bytes = self.max_queued_bytes;
        config.clock = !self.no_clock;
        config.compression = !self.no_compression;
        config.compression_threshold = self.compression_threshold;
        config.shutdown_timeout = self.shutdown_timeout;
        config.ping_interval = (!self.ping_interval.is_zero()).then_some(self.ping_interval);
        config.redis = (!self.redis.is_empty()).then(|| RedisConfig {
            urls: self.redis.clone(),
            cluster: self.redis_cluster,
        });
        Ok(config)
    }
}

/// Runs the hub until SIGINT or SIGTERM, then shuts it down gracefully (exit status 0).
pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Failure::new(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(format!("cannot read the bound address: {e}")))?;
    let hub = Hub::try_new(args.config()?)
        .map_err(|e| Failure::with_code(crate::EXIT_USAGE, e.to_string()))?;
    // Announce the node only once its engine serves (with Redis: connected to every
    // shard).
    tokio::time::timeout(Duration::from_secs(10), hub.start_engine())
        .await
        .map_err(|_| Failure::new("the engine did not start within 10 s (is Redis up?)"))?
        .map_err(|e| Failure::new(e.to_string()))?;
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("listening on {scheme}://{addr}");
    let serving = tokio::spawn(hub.clone().serve(listener));
    let signal = wait_for_signal().await?;
    eprintln!("fdx: {signal}: shutting down");
    hub.shutdown();
    match serving.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Failure::new(format!("server failed: {error}"))),
        Err(error) => Err(Failure::new(format!("server task failed: {error}"))),
    }
}

/// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere) and names it.
async fn wait_for_signal() -> Result<&'static str, Failure> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| Failure::new(format!("cannot watch SIGTERM: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| Failure::new(format!("cannot watch SIGINT: {e}")))?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| Failure::new(format!("cannot watch Ctrl-C: {e}")))?;
        Ok("Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 m").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
