//! Echo server on fullduplex in `ReceiveMode::Streaming`: every piece of a message goes back
//! as soon as it has arrived (as a frame of a fragmented echo), the way a relay or proxy is
//! written, instead of waiting for the whole message. Small messages that arrive whole go back
//! as one frame, exactly as in `echo-fullduplex`. Default configuration otherwise.

use fullduplex::{Event, ReceiveMode};

fn main() {
    fullduplex_bench::serve::run(|tcp| async move {
        let Ok(mut ws) = fullduplex_bench::serve::accept(tcp).await else {
            return;
        };
        ws.set_receive_mode(ReceiveMode::Streaming);
        loop {
            let piece = match ws.recv_event().await {
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
