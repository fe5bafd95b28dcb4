//! `fdx echo`: a WebSocket echo server.

use std::net::SocketAddr;
use std::sync::Arc;

use fullduplex::{Accept, Reject, UpgradeRequest, WebSocket};

use crate::listener::{Handler, ServeOptions, Server, Transport, DEFAULT_ADDR};
use crate::Failure;

const HELP: &str = "\
Every text and binary message comes back unchanged; pings are answered. Prints
`listening on ws://ADDR` (or wss://) on stdout once bound; port 0 picks a free port.
WebSockets over HTTP/2 (RFC 8441) are accepted too: with TLS by ALPN `h2`, without TLS as
h2c with prior knowledge on the same port (--no-http2: HTTP/1.1 only).

Examples:
  fdx echo                                     ws://127.0.0.1:9001
  fdx echo 0.0.0.0:8080 --allowed-origin https://app.example.com
  fdx echo 127.0.0.1:9443 --tls-cert cert.pem --tls-key key.pem";

/// Arguments of `fdx echo`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(default_value = DEFAULT_ADDR)]
    pub addr: String,
    #[command(flatten)]
    pub serve: ServeOptions,
}

/// Serves until killed.
pub async fn run(args: EchoArgs) -> Result<(), Failure> {
    let server = Server::bind(&args.addr, &args.serve).await?;
    server.run(Echo).await
}

/// The echo server's [`Handler`]: accepts every request that passed the Origin policy.
struct Echo;

impl Handler for Echo {
    fn admit(&self, _request: &UpgradeRequest) -> Result<Accept, Reject> {
        Ok(Accept::new())
    }

    async fn serve<S: Transport + 'static>(self: Arc<Self>, ws: WebSocket<S>, peer: SocketAddr) {
        if let Err(error) = echo(ws).await {
            eprintln!("fdx: {peer}: {error}");
        }
    }
}

/// Echoes until the peer closes. The messages are borrowed (`recv_many`: every message that
/// has arrived, in one call) and the replies queued through the outbox: they leave in one
/// write per batch of reads, when the connection would wait for the peer.
async fn echo<S: Transport>(mut ws: WebSocket<S>) -> Result<(), fullduplex::Error> {
    while let Some(handled) = ws
        .recv_many(|message, out| {
            if message.is_data() {
                out.send_ref(message)?;
            }
            Ok::<_, fullduplex::Error>(())
        })
        .await
    {
        handled?;
    }
    Ok(())
}
