//! A small HTTP/1.1 client for the hub's own requests to backends (a JWKS, the connect and
//! subscribe hooks): one request per connection, `http://` and `https://` (rustls with
//! Mozilla's roots), bounded in time and in the size of the answer.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not `http://HOST[:PORT]/...` or `https://...`.
    #[error("bad URL {0}")]
    Url(String),
    /// No answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, TLS or HTTP failed.
    #[error("{0}")]
    Transport(String),
    /// The answer is larger than allowed.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// An answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
            Arc::new(
                config.unwrap_or_else(|_| {
                    unreachable!("ring supports the default protocol versions")
                }),
            )
        })
        .clone()
}

/// Sends `method` to `url` with `headers` and `body`, and reads the answer: all of it within
/// `timeout`, at most `limit` bytes of body.
///
/// # Errors
/// [`FetchError`].
///
/// # Cancel safety
/// Cancel-safe: the connection is dropped with the future.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    limit: usize,
    timeout: Duration,
) -> Result<Answer, FetchError> {
    tokio::time::timeout(timeout, request_now(method, url, headers, body, limit))
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

async fn request_now(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    limit: usize,
) -> Result<Answer, FetchError> {
    let uri: Uri = url.parse().map_err(|_| FetchError::Url(url.to_owned()))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(FetchError::Url(url.to_owned())),
    };
    let host = uri
        .host()
        .ok_or_else(|| FetchError::Url(url.to_owned()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host.clone());
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| FetchError::Transport(format!("connect {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| FetchError::Transport(e.to_string()))?;
    let response = if tls {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|_| FetchError::Url(url.to_owned()))?;
        let stream = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| FetchError::Transport(format!("TLS with {host}: {e}")))?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    let status = response.status();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge(limit)
            } else {
                FetchError::Transport(error.to_string())
            }
        })?
        .to_bytes();
    Ok(Answer { status, body })
}

async fn send<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| FetchError::Transport(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| FetchError::Transport(e.to_string()))
}
