//! Echo server on fastwebsockets 0.10, as its own `echo_server` example does it: hyper upgrade,
//! `FragmentCollector`, automatic close and pong, one `write_frame` per message, and the
//! connection task run `unconstrained`.

use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};

async fn echo(upgrade: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(upgrade.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn upgrade(mut request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgrade) = upgrade::upgrade(&mut request)?;
    tokio::spawn(async move {
        let _ = tokio::task::unconstrained(echo(upgrade)).await;
    });
    Ok(response)
}

fn main() {
    fullduplex_bench::serve::run(|tcp| async move {
        let io = hyper_util::rt::TokioIo::new(tcp);
        let _ = http1::Builder::new()
            .serve_connection(io, service_fn(upgrade))
            .with_upgrades()
            .await;
    });
}
