//! Echo server on fullduplex in `ReceiveMode::Streaming`: every piece of a message goes back
//! as soon as it has arrived (as a frame of a fragmented echo), the way a relay or proxy is
//! written, instead of waiting for the whole message. Small messages that arrive whole go back
//! as one frame, exactly as in `echo-fullduplex`. Default configuration otherwise.

use fullduplex::{Event, ReceiveMode};

fn main() {
    fullduplex_bench::serve::run(|tcp| async move {
        let Ok(mut ws) = fullduplex::accept(tcp).await else {
            return;
        };
        ws.set_receive_mode(ReceiveMode::Streaming);
        while let Some(Ok(event)) = ws.recv_event().await {
            if let Event::Fragment(piece) = event {
                if ws
                    .feed_fragment(piece.kind, piece.payload, piece.is_last)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
}
