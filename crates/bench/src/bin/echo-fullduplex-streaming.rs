//! Echo server on fullduplex receiving in pieces (`WebSocket::into_streaming`): every piece of
//! a message goes back as soon as it has arrived (as a frame of a fragmented echo), the way a
//! relay or proxy is written, instead of waiting for the whole message. Small messages that
//! arrive whole go back as one frame, exactly as in `echo-fullduplex`. Default configuration
//! otherwise.

use fullduplex::Event;

fn main() {
    fullduplex_bench::serve::run(|tcp| async move {
        let Ok(ws) = fullduplex_bench::serve::accept(tcp).await else {
            return;
        };
        let mut ws = ws.into_streaming();
        loop {
            let piece = match ws.recv().await {
                Some(Ok(Event::Fragment(piece))) => piece,
                // Pings (answered by the library), pongs, the close frame.
                Some(Ok(Event::Message(_))) => continue,
                Some(Err(_)) | None => return,
            };
            if ws
                .feed_fragment(piece.kind, piece.payload, piece.is_last)
                .await
                .is_err()
            {
                return;
            }
        }
    });
}
