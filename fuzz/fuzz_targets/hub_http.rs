//! The push server's HTTP routes, called in memory: `http::route(hub, request)` on a `Hub`
//! with the default configuration (no sockets, no `serve`), with a fuzzed method, URI,
//! headers and body: the pages, health, publish, history, presence, the server API, SSE and
//! the WebSocket upgrade (which, without a hyper connection, cannot complete).
//!
//! Input layout: byte 0 picks the method (GET, POST, HEAD, PUT, DELETE, OPTIONS, PATCH,
//! CONNECT, or, from 8 on, a method named by the next line); then lines up to an empty line:
//! the request target, then `name: value` headers; the rest is the body.
//!
//! Invariants: nothing panics; `route` answers within 5 s of (real) time, whatever the
//! request; the answer's status is never a 5xx other than 503 (an internal error would be
//! our fault: the in-process engine is always ready).
//!
//! One hub (and runtime) serves many inputs, as a server does; both are replaced every 4,096
//! inputs so that state (topics, histories, open SSE streams) stays bounded.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fullduplex_hub::{Hub, HubConfig};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 8] = [
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT",
];
const RENEW_EVERY: u32 = 4096;

struct Server {
    runtime: tokio::runtime::Runtime,
    hub: Arc<Hub>,
    served: u32,
}

impl Server {
    fn new() -> Server {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        // Hub::new needs no runtime; its tasks start with `serve`, which is not called.
        let hub = Hub::new(HubConfig::default());
        Server {
            runtime,
            hub,
            served: 0,
        }
    }
}

thread_local! {
    static SERVER: RefCell<Option<Server>> = const { RefCell::new(None) };
}

/// The request `data` describes, or `None` when `http` itself refuses it (hyper would not
/// have parsed it either).
fn request(data: &[u8]) -> Option<http::Request<Full<Bytes>>> {
    let (&selector, rest) = data.split_first()?;
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (rest, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let method = match METHODS.get(usize::from(selector)) {
        Some(name) => http::Method::from_bytes(name.as_bytes()).ok()?,
        None => http::Method::from_bytes(lines.next()?).ok()?,
    };
    let uri = http::Uri::try_from(lines.next()?).ok()?;
    let mut builder = http::Request::builder().method(method).uri(uri);
    for line in lines {
        let at = line.iter().position(|&b| b == b':')?;
        let name = http::HeaderName::from_bytes(&line[..at]).ok()?;
        let value = http::HeaderValue::from_bytes(line[at + 1..].trim_ascii()).ok()?;
        builder = builder.header(name, value);
    }
    builder.body(Full::new(Bytes::copy_from_slice(body))).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else {
        return;
    };
    SERVER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|s| s.served >= RENEW_EVERY) {
            *cell = None; // the old runtime (and its tasks) go first
            *cell = Some(Server::new());
        }
        let Some(server) = cell.as_mut() else {
            return;
        };
        server.served += 1;
        let hub = server.hub.clone();
        let answered = server.runtime.block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                fullduplex_hub::http::route(hub, request),
            )
            .await
        });
        let response = match answered {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => panic!("route did not answer within 5 s"),
        };
        let status = response.status();
        assert!(
            !status.is_server_error() || status == http::StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
    });
});
