//! The HTTP routes, one hyper service: `GET /` (the demo page), `GET /healthz`,
//! `GET /readyz`, `GET /metrics`, `GET /ws` (the WebSocket), `GET /sse` (Server-Sent Events,
//! [`crate::sse`]), `POST /publish/TOPIC` and `GET /presence/TOPIC`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use fullduplex::hyper::UpgradedStream;
use fullduplex::{Accept, Config, Reject};
use http::header::{HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, ORIGIN};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;

use crate::auth::{bearer, constant_time_eq, find_token, Grants};
use crate::hooks;
use crate::metrics::{inc, Transport};
use crate::server::HttpPermit;
use crate::tokens::TokenError;
use crate::topic::Topic;
use crate::{api, conn, wire, Hub};

/// The demo page, embedded in the binary.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");

/// The client SDK (`clients/js`, compiled), embedded in the binary.
pub const SDK_JS: &str = include_str!("../../../clients/js/dist/index.js");

/// The SDK's type declarations.
pub const SDK_TYPES: &str = include_str!("../../../clients/js/dist/index.d.ts");

/// What a server API request body may hold besides the message data.
const API_BODY_OVERHEAD: usize = 64 << 10;

/// Bytes reserved per socket read (the library's default is 8 KiB): it is what an idle
/// subscriber's read buffer keeps.
const READ_SIZE: usize = 1024;

/// How long a `POST /publish` body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The response type of every route.
pub type HttpResponse = Response<HubBody>;

/// The body of every route: a whole body, or the event stream of `GET /sse`.
#[derive(Debug)]
pub enum HubBody {
    /// A body known in full (every route but `/sse`).
    Full(Full<Bytes>),
    /// A Server-Sent Events stream.
    Sse(crate::sse::SseBody),
}

impl From<Bytes> for HubBody {
    fn from(bytes: Bytes) -> HubBody {
        HubBody::Full(Full::new(bytes))
    }
}

impl Body for HubBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            HubBody::Full(full) => std::pin::Pin::new(full).poll_frame(cx),
            HubBody::Sse(sse) => std::pin::Pin::new(sse).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            HubBody::Full(full) => full.is_end_stream(),
            HubBody::Sse(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            HubBody::Full(full) => full.size_hint(),
            HubBody::Sse(_) => hyper::body::SizeHint::default(),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(HubBody::from(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json_error(status: StatusCode, reason: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": reason }).to_string();
    respond(status, "application/json", body)
}

/// Routes one request.
///
/// # Errors
///
/// Never: every failure is an HTTP status in the response.
///
/// # Cancel safety
///
/// Cancelling abandons the request (hyper does it when the client goes away); a WebSocket
/// upgrade already answered runs on in its own task.
pub async fn route<B>(hub: Arc<Hub>, request: Request<B>) -> Result<HttpResponse, Infallible>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    inc(&hub.metrics.http_requests);
    let path = request.uri().path();
    let method = request.method().clone();
    let response = match (path, &method) {
        ("/", &Method::GET | &Method::HEAD) => {
            let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML);
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        ("/healthz", &Method::GET | &Method::HEAD) => text(StatusCode::OK, "ok\n"),
        ("/readyz", &Method::GET | &Method::HEAD) => {
            if hub.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the engine is unavailable\n",
                )
            }
        }
        ("/metrics", &Method::GET) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            hub.render_metrics(),
        ),
        // HTTP/2 carries a WebSocket in an extended CONNECT (RFC 8441).
        ("/ws", &Method::GET | &Method::CONNECT) => websocket(hub, request).await,
        (crate::sse::SSE_PATH, &Method::GET) => {
            crate::sse::handle(hub, request).await.map(HubBody::Sse)
        }
        (crate::sse::SSE_PATH, &Method::OPTIONS) => sse_preflight(&hub, &request),
        (crate::sse::SSE_PATH, _) => method_not_allowed("GET, OPTIONS"),
        ("/", _) | ("/healthz", _) | ("/readyz", _) | ("/metrics", _) | ("/ws", _) => {
            method_not_allowed("GET")
        }
        ("/sdk/index.js", &Method::GET | &Method::HEAD) => {
            respond(StatusCode::OK, "text/javascript; charset=utf-8", SDK_JS)
        }
        ("/sdk/index.d.ts", &Method::GET | &Method::HEAD) => {
            respond(StatusCode::OK, "text/plain; charset=utf-8", SDK_TYPES)
        }
        (path, _) if path.starts_with("/api/") => server_api(hub, request).await,
        (path, method) if path.starts_with("/presence/") => {
            if method == Method::GET {
                presence(hub, request).await
            } else {
                method_not_allowed("GET")
            }
        }
        (path, method) if path.starts_with("/publish/") => {
            if method == Method::POST {
                publish(hub, request).await
            } else {
                method_not_allowed("POST")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// `OPTIONS /sse`: the CORS preflight a browser sends before a cross-origin `EventSource`
/// reconnects with `Last-Event-ID` (or a `fetch` stream with `Authorization`): allowed for
/// the origins the hub allows, 403 for the others.
fn sse_preflight<B>(hub: &Hub, request: &Request<B>) -> HttpResponse {
    if let Err(refused) = check_origin(hub, request) {
        return text(StatusCode::FORBIDDEN, format!("{refused}\n"));
    }
    let mut response = respond(StatusCode::NO_CONTENT, "text/plain; charset=utf-8", "");
    let headers = response.headers_mut();
    if let Some(origin) = request.headers().get(ORIGIN) {
        headers.insert("access-control-allow-origin", origin.clone());
        headers.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        headers.insert(http::header::VARY, HeaderValue::from_static("origin"));
    }
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("last-event-id, authorization, cache-control"),
    );
    headers.insert("access-control-max-age", HeaderValue::from_static("600"));
    response
}

/// The WebSocket configuration of hub connections: no compression (fan-out frames are
/// encoded once for everybody), the message size limit, keepalive.
pub fn websocket_config(hub: &Hub) -> Config {
    let mut config = match hub.registry.deflate() {
        Some(deflate) => Config::default().deflate(deflate.negotiation()),
        None => Config::default().compression(false),
    };
    config = config
        .max_message_size(hub.config.max_message_size)
        .close_timeout(
            hub.config
                .shutdown_timeout
                .min(std::time::Duration::from_secs(5)),
        );
    config = match hub.config.ping_interval {
        Some(interval) => config.keepalive(interval, interval),
        // The library pings by default: `None` means no pings at all.
        None => config.no_keepalive(),
    };
    // Clients mostly send short requests; reads of larger messages grow to their size.
    config.read_size = READ_SIZE;
    config
}

/// The Origin policy applied to a request's `Origin` and `Host`.
pub(crate) fn check_origin<B>(
    hub: &Hub,
    request: &Request<B>,
) -> Result<(), crate::auth::OriginRefused> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    // HTTP/2 carries the host in `:authority` (the URI), not in a `Host` header.
    let authority = request.uri().authority().map(|a| a.as_str());
    hub.origins
        .check(header(ORIGIN), header(HOST).or(authority))
}

/// The `name=value` pairs of a request's `Cookie` headers.
pub(crate) fn cookies(headers: &http::HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim(), value.trim()))
        })
}

/// Who a client is, once its request passed the checks of every client connection (a
/// WebSocket or an event stream).
pub(crate) struct Admitted {
    /// What it may do: from its token, then the connect hook.
    pub grants: Grants,
    /// The token's `sub`.
    pub token_user: Option<std::sync::Arc<str>>,
    /// The request's headers as the hooks see them.
    pub headers: serde_json::Map<String, serde_json::Value>,
}

/// The checks of a new client connection: the hub is not shutting down (503), the Origin
/// (403), the token from the query, the cookie or `Authorization` (401), the connect hook
/// (403). Refusals are a status and a reason.
pub(crate) async fn admit<B>(
    hub: &Hub,
    request: &Request<B>,
) -> Result<Admitted, (StatusCode, String)> {
    if hub.is_shutting_down() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()));
    }
    check_origin(hub, request).map_err(|refused| (StatusCode::FORBIDDEN, refused.to_string()))?;
    let grants = match &hub.tokens {
        None => Grants::all(),
        Some(verifier) => {
            let authorization = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v: &HeaderValue| v.to_str().ok());
            let token = find_token(
                request.uri().query(),
                cookies(request.headers()),
                authorization,
            );
            let checked = match token {
                None => Err(TokenError::Missing),
                Some(token) => verifier.verify(token).await,
            };
            checked.map_err(|error| (StatusCode::UNAUTHORIZED, error.to_string()))?
        }
    };
    let token_user = grants.user().cloned();
    let headers = hooks::headers_json(request.headers());
    let connect = hooks::ConnectRequest {
        event: "connect",
        user: grants.user().map(|u| &**u),
        path: request.uri().path(),
        query: request.uri().query(),
        headers: &headers,
    };
    let grants = hub
        .hooks
        .connect(&connect, grants.clone())
        .await
        .map_err(|denied| (StatusCode::FORBIDDEN, denied.to_string()))?;
    Ok(Admitted {
        grants,
        token_user,
        headers,
    })
}

/// `GET /ws`: the checks of [`admit`] and the connection limit, then the upgrade.
async fn websocket<B>(hub: Arc<Hub>, mut request: Request<B>) -> HttpResponse {
    let Admitted {
        grants,
        token_user,
        headers,
    } = match admit(&hub, &request).await {
        Ok(admitted) => admitted,
        Err((status, reason)) => {
            inc(&hub.metrics.handshake_failures);
            return text(status, format!("{reason}\n"));
        }
    };
    let headers = hub.hooks.has_subscribe_hook().then_some(headers);
    let transport = Transport::of_websocket(request.version());
    let permit = request.extensions().get::<HttpPermit>().cloned();
    let mut admitted = None;
    let result = fullduplex::hyper::upgrade_with(&mut request, websocket_config(&hub), |_| {
        let slot = hub.reserve_slot(transport).ok_or_else(|| {
            Reject::new(StatusCode::SERVICE_UNAVAILABLE).body("too many connections\n")
        })?;
        let admission = conn::Admission {
            grants,
            token_user,
            hooked: hub.hooks.has_connect_hook(),
            headers,
        };
        admitted = Some((admission, slot));
        Ok(Accept::new().compression(hub.config.compression))
    });
    match (result, admitted) {
        (Ok((response, upgrade)), Some((admission, slot))) => {
            // The connection now carries a WebSocket, which counts against `max_connections`.
            if let Some(permit) = permit {
                permit.release();
            }
            let task_hub = hub.clone();
            hub.tasks().spawn(async move {
                match upgrade.with_stream::<UpgradedStream>().await {
                    // To a driver: this task, with the upgrade's state, ends here.
                    Ok(ws) => task_hub.drivers().insert(&task_hub, ws, admission, slot),
                    Err(error) => {
                        inc(&task_hub.metrics.handshake_failures);
                        tracing::debug!(%error, "upgrade failed");
                    }
                }
            });
            response
        }
        (Ok(_), None) => text(StatusCode::INTERNAL_SERVER_ERROR, "upgrade state lost\n"),
        (Err(error), _) => {
            inc(&hub.metrics.handshake_failures);
            error.into_response()
        }
    }
}

/// `POST /publish/TOPIC`: the body is one JSON value, delivered as `data`.
async fn publish<B>(hub: Arc<Hub>, request: Request<B>) -> HttpResponse
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Err(refused) = check_api_key(&hub, &request) {
        return *refused;
    }
    if let Err(refused) = check_origin(&hub, &request) {
        return json_error(StatusCode::FORBIDDEN, &refused.to_string());
    }
    let name = request.uri().path().trim_start_matches("/publish/");
    let topic = match Topic::new(name) {
        Ok(topic) => topic,
        Err(error) => {
            return json_error(StatusCode::BAD_REQUEST, &format!("invalid topic: {error}"))
        }
    };
    if hub.is_reserved(topic.as_str()) {
        return json_error(
            StatusCode::FORBIDDEN,
            "this topic is written by the server only",
        );
    }
    let body = match read_body(request.into_body(), hub.config.max_message_size).await {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let data = match wire::parse_json_value(&body) {
        Ok(data) => data,
        Err(reason) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be one JSON value: {reason}"),
            )
        }
    };
    match hub.publish(&topic, data.get()).await {
        Ok(published) => {
            let body = serde_json::json!({
                "offset": published.offset,
                "epoch": &*published.epoch,
            });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
        Err(error) => json_error(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    }
}

/// Reads a request body of at most `limit` bytes within [`BODY_TIMEOUT`], or the answer
/// that says why not (408, 413, 400).
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Box<HttpResponse>>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let reading = Limited::new(body, limit).collect();
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, reading).await else {
        return Err(Box::new(json_error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )));
    };
    match read {
        Ok(body) => Ok(body.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(Box::new(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {limit} bytes"),
        ))),
        Err(error) => Err(Box::new(json_error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the body: {error}"),
        ))),
    }
}

/// `/api/...`: the server API (see [`api`]).
async fn server_api<B>(hub: Arc<Hub>, request: Request<B>) -> HttpResponse
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Err(refused) = check_api_key(&hub, &request) {
        return *refused;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // A broadcast carries its topics besides the data.
    let limit = hub.config.max_message_size + API_BODY_OVERHEAD;
    let body = match read_body(request.into_body(), limit).await {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let (status, json) = api::handle(&hub, &method, &path, &body).await;
    respond(status, "application/json", json)
}

/// With `--api-key`: the request's `Authorization: Bearer KEY`, or the 401 answer.
fn check_api_key<B>(hub: &Hub, request: &Request<B>) -> Result<(), Box<HttpResponse>> {
    let Some(key) = &hub.config.api_key else {
        if hub.anonymous_publish.get().copied().unwrap_or(false) {
            return Ok(());
        }
        return Err(Box::new(json_error(
            StatusCode::FORBIDDEN,
            "publishing without an API key is off on a public address: set --api-key, \
             or --anonymous-publish to allow it",
        )));
    };
    let given = bearer(
        request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    if given.is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes())) {
        return Ok(());
    }
    let mut response = json_error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API key (Authorization: Bearer KEY)",
    );
    response
        .headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    Err(Box::new(response))
}

/// `GET /presence/TOPIC`: `{"topic":T,"clients":[{"client":ID,"user":U}, ...]}`.
async fn presence<B>(hub: Arc<Hub>, request: Request<B>) -> HttpResponse {
    if let Err(refused) = check_api_key(&hub, &request) {
        return *refused;
    }
    let name = request.uri().path().trim_start_matches("/presence/");
    let topic = match Topic::new(name) {
        Ok(topic) => topic,
        Err(error) => {
            return json_error(StatusCode::BAD_REQUEST, &format!("invalid topic: {error}"))
        }
    };
    match hub.presence(&topic).await {
        Ok(clients) => respond(
            StatusCode::OK,
            "application/json",
            format!(
                r#"{{"topic":"{topic}","clients":{}}}"#,
                wire::clients_json(&clients)
            ),
        ),
        Err(error) => json_error(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HubConfig;

    #[test]
    fn websocket_keepalive_follows_ping_interval() {
        let hub = Hub::new(HubConfig {
            ping_interval: None,
            ..HubConfig::default()
        });
        // The library pings by default; the hub's `None` turns that off.
        assert_eq!(websocket_config(&hub).keepalive, None);
        let hub = Hub::new(HubConfig {
            ping_interval: Some(std::time::Duration::from_secs(7)),
            ..HubConfig::default()
        });
        let keepalive = websocket_config(&hub).keepalive.expect("keepalive");
        assert_eq!(keepalive.interval, std::time::Duration::from_secs(7));
        assert_eq!(keepalive.timeout, std::time::Duration::from_secs(7));
    }

    #[test]
    fn websocket_compression_follows_the_config() {
        let hub = Hub::new(HubConfig::default());
        let deflate = websocket_config(&hub).protocol.deflate.expect("deflate");
        assert!(deflate.server_no_context_takeover && deflate.client_no_context_takeover);
        let hub = Hub::new(HubConfig {
            compression: false,
            ..HubConfig::default()
        });
        assert_eq!(websocket_config(&hub).protocol.deflate, None);
    }
}
