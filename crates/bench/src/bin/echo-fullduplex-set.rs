//! Echo server on fullduplex with every connection in one [`WebSocketSet`] instead of a task
//! each: handshakes run as short-lived tasks, and the open connections are driven by the
//! server's one task. Same replies, same batching (`feed`, written when the set next polls
//! the connection); the point is the memory an idle connection costs.
//!
//! The loop is written with `poll_fn` rather than `tokio::select!`: it takes every message the
//! set has before it looks at the listener, and moves each message once.

use std::future::poll_fn;
use std::task::Poll;

use fullduplex::{Message, WebSocketSet};
use tokio::task::JoinSet;

fn main() {
    fullduplex_bench::serve::run_with_listener(|listener| async move {
        let mut set = WebSocketSet::new();
        let mut handshakes = JoinSet::new();
        poll_fn(|cx| loop {
            while let Poll::Ready((key, message)) = set.poll_recv(cx) {
                if let Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) = message {
                    set.feed(key, message).ok();
                }
            }
            let mut progress = false;
            // An accept error (out of file descriptors, say) ends this round of accepting; the
            // runner sees its clients fail.
            while let Poll::Ready(Ok((tcp, _))) = listener.poll_accept(cx) {
                tcp.set_nodelay(true).ok();
                handshakes.spawn(fullduplex::accept(tcp));
            }
            while let Poll::Ready(Some(done)) = handshakes.poll_join_next(cx) {
                if let Ok(Ok(ws)) = done {
                    set.insert(ws);
                    progress = true;
                }
            }
            if !progress {
                return Poll::<()>::Pending;
            }
        })
        .await;
    });
}
