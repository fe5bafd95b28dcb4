//! Echo server on fullduplex that borrows each message instead of taking it: `recv_with` lends
//! the message where it lies in the receive buffer, and the handler copies the echo into the
//! write buffer through its outbox (replies leave in one write per batch of reads, as with
//! `feed`). Default configuration: permessage-deflate is accepted when the client offers it.

fn main() {
    fullduplex_bench::serve::run(|tcp| async move {
        let Ok(mut ws) = fullduplex::accept(tcp).await else {
            return;
        };
        while let Some(Ok(Ok(()))) = ws
            .recv_with(|message, out| {
                if message.is_data() {
                    out.send_ref(message)
                } else {
                    Ok(())
                }
            })
            .await
        {}
    });
}
