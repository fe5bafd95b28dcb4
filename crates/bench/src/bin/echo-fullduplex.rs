//! Echo server on fullduplex, written the way a user would: `accept`, then `recv` and `feed`
//! (replies leave in one write per batch of reads, when `recv` would wait for the peer).
//! Default configuration but keepalive (see `serve::accept`): permessage-deflate is accepted when the client offers it.

use fullduplex::Message;

fn main() {
    fullduplex_bench::serve::run(|tcp| async move {
        let Ok(mut ws) = fullduplex_bench::serve::accept(tcp).await else {
            return;
        };
        while let Some(Ok(message)) = ws.recv().await {
            if let Message::Text(_) | Message::Binary(_) = message {
                if ws.feed(message).await.is_err() {
                    return;
                }
            }
        }
    });
}
