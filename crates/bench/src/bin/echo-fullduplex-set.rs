//! Echo server on fullduplex with every connection in one [`WebSocketSet`] instead of a task
//! each: handshakes run as short-lived tasks, and the open connections are driven by the
//! server's one task. The messages are lent to a handler a connection's batch at a time
//! (`WebSocketSet::recv_many`), which copies each echo into the write buffer through its
//! outbox, as the `fullduplex-borrowed` server does with a task per connection; the replies
//! are written when the set next polls the connection. The point is the memory an idle
//! connection costs.
//!
//! The loop is written with `poll_fn` rather than `tokio::select!`: it takes every message the
//! set has before it looks at the listener.

use std::future::poll_fn;
use std::task::Poll;

use fullduplex::{MessageRef, Outbox, WebSocketSet};
use tokio::task::JoinSet;

fn main() {
    fullduplex_bench::serve::run_with_listener(|listener| async move {
        let mut set = WebSocketSet::new();
        let mut handshakes = JoinSet::new();
        let mut echo = |_, message: MessageRef<'_>, out: &mut Outbox<'_>| {
            if message.is_data() {
                out.send_ref(message)?;
            }
            Ok::<_, fullduplex::Error>(())
        };
        poll_fn(|cx| loop {
            while set.poll_recv_many(cx, &mut echo).is_ready() {}
            let mut progress = false;
            // An accept error (out of file descriptors, say) ends this round of accepting; the
            // runner sees its clients fail.
            while let Poll::Ready(Ok((tcp, _))) = listener.poll_accept(cx) {
                tcp.set_nodelay(true).ok();
                handshakes.spawn(fullduplex_bench::serve::accept(tcp));
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
