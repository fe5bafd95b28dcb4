//! Echo server on tokio-tungstenite 0.30, as its own `echo-server` example does it:
//! `accept_async`, then the text and binary messages of the read half `forward`ed to the write
//! half (which flushes when the read half has nothing ready, so replies to one batch of reads
//! share a write).

use futures_util::{future, StreamExt, TryStreamExt};

fn main() {
    fullduplex_bench::serve::run(|tcp| async move {
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let (write, read) = ws.split();
        let _ = read
            .try_filter(|message| future::ready(message.is_text() || message.is_binary()))
            .forward(write)
            .await;
    });
}
