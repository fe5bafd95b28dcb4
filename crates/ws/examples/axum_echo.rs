//! An axum app with an HTTP route and a WebSocket echo on the same port, through
//! `fullduplex::hyper::upgrade`.
//!
//! ```text
//! cargo run -p fullduplex --features hyper --example axum_echo -- 127.0.0.1:3000
//! curl http://127.0.0.1:3000/            # plain HTTP
//! fdx ws://127.0.0.1:3000/ws             # WebSocket echo
//! ```
//!
//! Prints `listening on ADDR` once bound (port 0 picks a free one).

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fullduplex::{Accept, Config, Message};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let app = Router::new()
        .route(
            "/",
            get(|| async { "hello over HTTP; the echo is at /ws\n" }),
        )
        .route("/ws", get(websocket));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}

/// `GET /ws`: upgrade and echo every text and binary message.
async fn websocket(mut request: Request) -> Response {
    // axum's `Request<Body>` keeps hyper's upgrade handle in its extensions.
    let config = Config::default();
    let upgrade =
        fullduplex::hyper::upgrade_with::<_, Body, _>(&mut request, config, |_| Ok(Accept::new()));
    let (response, on_upgrade) = match upgrade {
        Ok(accepted) => accepted,
        Err(error) => return error.into_response::<Body>(),
    };
    tokio::spawn(async move {
        let mut ws = match on_upgrade.await {
            Ok(ws) => ws,
            Err(error) => {
                eprintln!("upgrade failed: {error}");
                return;
            }
        };
        while let Some(Ok(message)) = ws.recv().await {
            if let Message::Text(_) | Message::Binary(_) = message {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        }
    });
    response.into_response()
}
