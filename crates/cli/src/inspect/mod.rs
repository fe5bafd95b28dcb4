//! `fdx inspect`: an inspecting WebSocket relay (`fdx proxy` is an alias for one release).
//!
//! It sits between a client (a browser, usually) and an upstream server. The client's opening
//! handshake is forwarded with only `Host` (and the request target, when the upstream URL has
//! a path) rewritten; the upstream's response goes back unchanged; then every byte is
//! forwarded as it arrives, in both directions, while a [`tap::FrameTap`] per direction logs
//! each frame (inflating permessage-deflate payloads with inflate contexts of its own).
//!
//! When one side breaks off without a close frame, the relay closes the other side with a
//! close frame of its own, if it can do so between frames: `1001` to the upstream when the
//! client went away, `1014` (bad gateway) to the client when the upstream did.

mod log;
mod tap;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fullduplex::proto::deflate::{self, DeflateConfig, DeflateParams};
use fullduplex::proto::frame::OpCode;
use fullduplex::proto::handshake::{self, HandshakeError};
use fullduplex::{CloseCode, Config};
use fullduplex_loadgen::frame;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::listener::Transport;
use crate::Failure;
use log::Logger;
use tap::{Direction, FrameRecord, FrameTap};

/// The largest request or response head accepted during the handshake.
const MAX_HEAD: usize = 16 * 1024;
/// How long the client and the upstream get for their handshake heads.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After one direction has ended, how long the other gets to finish its close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Bytes read (and forwarded) at a time.
const READ_SIZE: usize = 64 * 1024;

const HELP: &str = "\
Examples:
  fdx inspect --listen 127.0.0.1:9002 --upstream ws://127.0.0.1:9001
      point the browser at ws://127.0.0.1:9002/...; frames are logged on stderr
  fdx inspect -l 127.0.0.1:9002 -u wss://example.com --log frames.jsonl --max-payload 256
      JSON lines to a file, payloads cut at 256 bytes

The request path and query are forwarded (after the upstream URL's own path, if it has one);
cookies, Origin, Authorization, subprotocols and extension offers pass unchanged; Host is
rewritten for the upstream. Frames are forwarded byte for byte, without waiting for whole
messages; compressed payloads are logged inflated.";

/// Options of `fdx inspect`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub struct InspectArgs {
    /// The address to listen on (port 0 picks a free port; the actual address is printed).
    #[arg(short, long, value_name = "ADDR", default_value = "127.0.0.1:9002")]
    pub listen: String,
    /// The server to forward to: `ws://HOST[:PORT][/PATH]` or wss://...
    #[arg(short, long, value_name = "URL")]
    pub upstream: String,
    /// Write the log as JSON lines to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Log at most this many payload bytes per frame (after inflating).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub max_payload: usize,
    /// No human-readable log on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Trust only the certificates in this PEM file for a wss:// upstream.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,
    /// Do not check the wss:// upstream's certificate (dangerous).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// PEM certificate chain: clients connect with wss:// (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// What every connection needs.
struct Shared {
    upstream: Uri,
    config: Config,
    logger: Logger,
    max_payload: usize,
    next_id: AtomicU64,
}

/// Runs the relay until the process is stopped.
pub async fn run(args: InspectArgs) -> Result<(), Failure> {
    let upstream: Uri = args
        .upstream
        .parse()
        .map_err(|e| Failure::with_code(crate::EXIT_USAGE, format!("--upstream: {e}")))?;
    match upstream.scheme_str() {
        Some("ws") | Some("wss") if upstream.host().is_some() => {}
        _ => {
            return Err(Failure::with_code(
                crate::EXIT_USAGE,
                format!("--upstream {upstream}: expected ws://HOST[:PORT][/PATH] or wss://..."),
            ))
        }
    }
    let mut config = Config::default().handshake_timeout(HANDSHAKE_TIMEOUT);
    if args.insecure {
        eprintln!(
            "fdx: WARNING: --insecure: the upstream's certificate is NOT verified; \
             anyone on the path can read and change the traffic"
        );
        config = config.tls(crate::tls::client_insecure()?);
    } else if let Some(path) = &args.cacert {
        config = config.tls(crate::tls::client_with_roots(path)?);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(crate::tls::server_config(cert, key)?)),
        _ => None,
    };
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Failure::new(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::new(format!("cannot read the bound address: {e}")))?;
    let shared = Arc::new(Shared {
        upstream,
        config,
        logger: Logger::new(args.quiet, args.log.as_deref())?,
        max_payload: args.max_payload,
        next_id: AtomicU64::new(1),
    });
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    // The first stdout line, as for `fdx echo`: scripts and tests read the port from it.
    println!("listening on {scheme}://{local}");
    eprintln!("fdx: forwarding to {}", shared.upstream);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("fdx: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let conn = shared.next_id.fetch_add(1, Ordering::Relaxed);
            shared.logger.open(conn, peer);
            let client: Box<dyn Transport> = match tls {
                None => Box::new(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(error)) => {
                            shared.logger.close(
                                conn,
                                &format!("TLS handshake failed: {error}"),
                                0,
                                0,
                            );
                            return;
                        }
                        Err(_) => {
                            shared.logger.close(conn, "TLS handshake timed out", 0, 0);
                            return;
                        }
                    }
                }
            };
            proxy_connection(&shared, conn, client).await;
        });
    }
}

/// One client connection, from its first byte to the end.
async fn proxy_connection(shared: &Shared, conn: u64, mut client: Box<dyn Transport>) {
    let logger = &shared.logger;
    // The client's request.
    let mut buf = BytesMut::with_capacity(1024);
    let head = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            if let Some(parsed) = handshake::parse_request(&buf, MAX_HEAD)? {
                return Ok::<_, HeadError>(parsed);
            }
            read_more(&mut client, &mut buf, "the client").await?;
        }
    })
    .await;
    let (request, head_len) = match head {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(HeadError::Http(error))) => {
            refuse(&mut client, error.status(), &error.to_string()).await;
            logger.close(conn, &format!("bad request: {error}"), 0, 0);
            return;
        }
        Ok(Err(HeadError::Io(error))) => {
            logger.close(conn, &format!("before the handshake: {error}"), 0, 0);
            return;
        }
        Err(_) => {
            refuse(
                &mut client,
                StatusCode::REQUEST_TIMEOUT,
                "no request in time",
            )
            .await;
            logger.close(conn, "no request in time", 0, 0);
            return;
        }
    };
    let client_early = buf.split_off(head_len);
    if let Err(error) = handshake::validate_request(request.clone()) {
        refuse(
            &mut client,
            error.status(),
            &format!("not a WebSocket upgrade: {error}"),
        )
        .await;
        logger.close(
            conn,
            &format!("refused: not a WebSocket upgrade: {error}"),
            0,
            0,
        );
        return;
    }
    let upstream_request = match upstream_request(&shared.upstream, &request) {
        Ok(upstream_request) => upstream_request,
        Err(reason) => {
            refuse(&mut client, StatusCode::BAD_REQUEST, &reason).await;
            logger.close(conn, &format!("refused: {reason}"), 0, 0);
            return;
        }
    };

    // The upstream connection and its answer.
    let mut upstream =
        match fullduplex::connect_stream(upstream_request.uri(), &shared.config).await {
            Ok(stream) => stream,
            Err(error) => {
                let status = match error {
                    fullduplex::Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                let reason = format!("cannot reach the upstream {}: {error}", shared.upstream);
                refuse(&mut client, status, &reason).await;
                logger.close(conn, &reason, 0, 0);
                return;
            }
        };
    let mut out = BytesMut::with_capacity(1024);
    handshake::encode_request(&upstream_request, &mut out);
    let mut buf = BytesMut::with_capacity(1024);
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        upstream.write_all(&out).await?;
        upstream.flush().await?;
        loop {
            if let Some(parsed) = handshake::parse_response(&buf, MAX_HEAD)? {
                return Ok::<_, HeadError>(parsed);
            }
            read_more(&mut upstream, &mut buf, "the upstream").await?;
        }
    })
    .await;
    let (response, head_len) = match answer {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(error)) => {
            let reason = format!("bad answer from the upstream: {error}");
            refuse(&mut client, StatusCode::BAD_GATEWAY, &reason).await;
            logger.close(conn, &reason, 0, 0);
            return;
        }
        Err(_) => {
            let reason = "the upstream did not answer in time";
            refuse(&mut client, StatusCode::GATEWAY_TIMEOUT, reason).await;
            logger.close(conn, reason, 0, 0);
            return;
        }
    };
    let upstream_early = buf.split_off(head_len);
    let deflate = negotiated_deflate(&response);
    let deflate_text = match &deflate {
        Ok(Some((text, _))) => Some(text.clone()),
        Ok(None) => None,
        Err(error) => Some(format!("not understood ({error}): payloads logged as sent")),
    };
    logger.handshake(
        conn,
        &shared.upstream.to_string(),
        &request,
        &upstream_request,
        &response,
        deflate_text.as_deref(),
    );
    let mut head = BytesMut::with_capacity(512);
    handshake::encode_response_head(&response, &mut head);
    if let Err(error) = client.write_all(&head).await {
        logger.close(conn, &format!("the client went away: {error}"), 0, 0);
        return;
    }
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // A refusal: pass its body on, then end.
        let mut sent = upstream_early.len() as u64;
        let _ = client.write_all(&upstream_early).await;
        sent += tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio::io::copy(&mut upstream, &mut client),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
        let _ = client.shutdown().await;
        logger.close(
            conn,
            &format!("the upstream refused: {}", response.status()),
            0,
            sent,
        );
        return;
    }
    let params = deflate.ok().flatten().map(|(_, params)| params);
    relay(
        shared,
        conn,
        client,
        upstream,
        client_early,
        upstream_early,
        params.as_ref(),
    )
    .await;
}

/// Forwards both directions until both have ended (or the second one's grace ran out).
async fn relay<C, U>(
    shared: &Shared,
    conn: u64,
    client: C,
    upstream: U,
    client_early: BytesMut,
    upstream_early: BytesMut,
    deflate: Option<&DeflateParams>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let up = Pump {
        shared,
        conn,
        tap: FrameTap::new(Direction::ClientToServer, shared.max_payload, deflate),
        bytes: 0,
    };
    let down = Pump {
        shared,
        conn,
        tap: FrameTap::new(Direction::ServerToClient, shared.max_payload, deflate),
        bytes: 0,
    };
    let up = up.run(client_read, upstream_write, client_early);
    let down = down.run(upstream_read, client_write, upstream_early);
    tokio::pin!(up, down);
    let (first, second) = tokio::select! {
        end = &mut up => {
            let other = tokio::time::timeout(CLOSE_GRACE, &mut down).await;
            (end, other)
        }
        end = &mut down => {
            let other = tokio::time::timeout(CLOSE_GRACE, &mut up).await;
            (end, other)
        }
    };
    let (up_bytes, down_bytes, reason) = match (first.direction, second) {
        (Direction::ClientToServer, Ok(second)) => (first.bytes, second.bytes, first.reason),
        (Direction::ServerToClient, Ok(second)) => (second.bytes, first.bytes, first.reason),
        (direction, Err(_)) => {
            let (up_bytes, down_bytes) = match direction {
                Direction::ClientToServer => (first.bytes, 0),
                Direction::ServerToClient => (0, first.bytes),
            };
            let reason = format!("{}; the other side did not finish in time", first.reason);
            (up_bytes, down_bytes, reason)
        }
    };
    shared.logger.close(conn, &reason, up_bytes, down_bytes);
}

/// How one direction ended.
struct PumpEnd {
    direction: Direction,
    bytes: u64,
    reason: String,
}

/// One direction of a connection: read, log, forward.
struct Pump<'a> {
    shared: &'a Shared,
    conn: u64,
    tap: FrameTap,
    bytes: u64,
}

impl Pump<'_> {
    async fn run<R, W>(mut self, mut src: R, mut dst: W, early: BytesMut) -> PumpEnd
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let direction = self.tap.direction();
        let (from, to) = match direction {
            Direction::ClientToServer => ("the client", "the upstream"),
            Direction::ServerToClient => ("the upstream", "the client"),
        };
        let mut records = Vec::new();
        if !early.is_empty() {
            if let Err(error) = self.forward(&early, &mut dst, &mut records).await {
                return self.end(format!("cannot write to {to}: {error}"));
            }
        }
        let mut buf = vec![0u8; READ_SIZE];
        let ended = loop {
            match src.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => {
                    if let Err(error) = self.forward(&buf[..n], &mut dst, &mut records).await {
                        return self.end(format!("cannot write to {to}: {error}"));
                    }
                }
                Err(error) => break Some(error),
            }
        };
        if self.tap.close_seen() {
            let _ = dst.shutdown().await;
            let reason = match ended {
                None => format!("{from} closed after the close handshake"),
                Some(error) => format!("{from} broke off after its close frame: {error}"),
            };
            return self.end(reason);
        }
        let what = match &ended {
            None => format!("{from} closed the connection without a close frame"),
            Some(error) => format!("{from} connection broke: {error}"),
        };
        // Tell the other side, in the protocol's words, if the stream is between frames.
        let (code, reason) = match direction {
            Direction::ClientToServer => {
                (CloseCode::GOING_AWAY, "fdx inspect: the client went away")
            }
            Direction::ServerToClient => (
                CloseCode::BAD_GATEWAY,
                "fdx inspect: the upstream connection was lost",
            ),
        };
        let injected = if self.tap.at_frame_boundary() && self.tap.lost_reason().is_none() {
            let frame = close_frame(code, reason, direction == Direction::ClientToServer);
            let sent = dst.write_all(&frame).await.is_ok() && dst.flush().await.is_ok();
            sent.then(|| format!("; sent close {} to {to}", u16::from(code)))
        } else {
            None
        };
        let _ = dst.shutdown().await;
        let message = format!("{what}{}", injected.unwrap_or_default());
        self.shared.logger.note(self.conn, &message);
        self.end(message)
    }

    /// Logs the frames in `bytes`, then writes `bytes` unchanged.
    async fn forward<W: AsyncWrite + Unpin>(
        &mut self,
        bytes: &[u8],
        dst: &mut W,
        records: &mut Vec<FrameRecord>,
    ) -> std::io::Result<()> {
        let was_lost = self.tap.lost_reason().is_some();
        self.tap.observe(bytes, records);
        for record in records.drain(..) {
            self.shared
                .logger
                .frame(self.conn, self.tap.direction(), &record);
        }
        if !was_lost {
            if let Some(reason) = self.tap.lost_reason() {
                let message = format!(
                    "{}: {reason}; forwarding the rest without logging frames",
                    self.tap.direction().as_str()
                );
                self.shared.logger.note(self.conn, &message);
            }
        }
        self.bytes += bytes.len() as u64;
        dst.write_all(bytes).await?;
        dst.flush().await
    }

    fn end(self, reason: String) -> PumpEnd {
        PumpEnd {
            direction: self.tap.direction(),
            bytes: self.bytes,
            reason,
        }
    }
}

/// A close frame with `code` and `reason`, masked with a fresh key when `masked` (frames to
/// the upstream come from its client, so they must be masked).
fn close_frame(code: CloseCode, reason: &str, masked: bool) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&u16::from(code).to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    // Without randomness the key is zeros: this is one frame on a dying connection.
    let mask = masked.then(frame::random_key);
    frame::encode_frame(OpCode::Close, false, &payload, mask)
}

/// Why a handshake head could not be read.
enum HeadError {
    Http(HandshakeError),
    Io(std::io::Error),
}

impl From<HandshakeError> for HeadError {
    fn from(error: HandshakeError) -> HeadError {
        HeadError::Http(error)
    }
}

impl From<std::io::Error> for HeadError {
    fn from(error: std::io::Error) -> HeadError {
        HeadError::Io(error)
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Http(error) => error.fmt(f),
            HeadError::Io(error) => error.fmt(f),
        }
    }
}

/// Reads more of a handshake head, never past [`MAX_HEAD`] + 1 bytes in all.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    who: &str,
) -> Result<(), HeadError> {
    let room = (MAX_HEAD + 1).saturating_sub(buf.len()).clamp(1, 4096);
    buf.reserve(room);
    let n = stream.take(room as u64).read_buf(buf).await?;
    if n == 0 {
        return Err(HeadError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{who} closed the connection during the opening handshake"),
        )));
    }
    Ok(())
}

/// Answers the client with an HTTP error and a one-line reason, then closes.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, status: StatusCode, reason: &str) {
    let body = format!("{reason}\n");
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::UPGRADE_REQUIRED {
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let mut out = BytesMut::with_capacity(256 + body.len());
    handshake::encode_response_head(&response, &mut out);
    out.put_slice(body.as_bytes());
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The request to send upstream: the client's, with the upstream's scheme, authority and path
/// prefix, and `Host` rewritten. Everything else (cookies, Origin, Authorization, the key,
/// subprotocols, extension offers) passes unchanged.
fn upstream_request(upstream: &Uri, request: &Request<()>) -> Result<Request<()>, String> {
    let prefix = upstream.path().trim_end_matches('/');
    let path = request.uri().path();
    let mut target = format!("{prefix}{path}");
    if target.is_empty() {
        target.push('/');
    }
    let query = [upstream.query(), request.uri().query()]
        .into_iter()
        .flatten()
        .filter(|q| !q.is_empty())
        .collect::<Vec<_>>()
        .join("&");
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query);
    }
    let authority = upstream
        .authority()
        .ok_or_else(|| format!("{upstream}: no host"))?;
    let uri = Uri::builder()
        .scheme(upstream.scheme_str().unwrap_or("ws"))
        .authority(authority.clone())
        .path_and_query(target.as_str())
        .build()
        .map_err(|e| format!("cannot build the upstream URL from {target:?}: {e}"))?;
    let mut forwarded = Request::new(());
    *forwarded.method_mut() = request.method().clone();
    *forwarded.version_mut() = http::Version::HTTP_11;
    *forwarded.headers_mut() = request.headers().clone();
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|_| format!("{authority}: not usable as a Host header"))?;
    forwarded.headers_mut().insert(header::HOST, host);
    *forwarded.uri_mut() = uri;
    Ok(forwarded)
}

/// The permessage-deflate parameters the upstream's answer sets, if any, with the header text.
fn negotiated_deflate(response: &Response<()>) -> Result<Option<(String, DeflateParams)>, String> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(None);
    }
    let answers = handshake::parse_extensions(response.headers()).map_err(|e| e.to_string())?;
    let Some(answer) = answers
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(deflate::EXTENSION_NAME))
    else {
        return Ok(None);
    };
    // Our own offer's limits do not apply: whatever the two ends agreed on is decoded.
    let params =
        deflate::client_accept(answer, &DeflateConfig::default()).map_err(|e| e.to_string())?;
    let text = handshake::format_extensions(std::slice::from_ref(answer));
    Ok(Some((text, params)))
}

#[cfg(test)]
mod tests;
