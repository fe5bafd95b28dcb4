//! Echo server on fullduplex that borrows the messages instead of taking them: `recv_many`
//! lends every message that has arrived, where it lies in the receive buffer, to the handler,
//! which copies the echo into the write buffer through its outbox (replies leave in one write
//! per batch of reads, as with `feed`). Default configuration but keepalive (see `serve::accept`): permessage-deflate is accepted
//! when the client offers it.

fn main() {
    fullduplex_bench::serve::run(|tcp| async move {
        let Ok(mut ws) = fullduplex_bench::serve::accept(tcp).await else {
            return;
        };
        while let Some(Ok(_)) = ws
            .recv_many(|message, out| {
                if message.is_data() {
                    out.send_ref(message)?;
                }
                Ok::<_, fullduplex::Error>(())
            })
            .await
        {}
    });
}
