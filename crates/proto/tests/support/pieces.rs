//! Normalising streamed pieces (`ReceiveMode::Streaming`) for comparison. Shared by the
//! proptests and the fuzz harness (`fuzz/src/lib.rs` includes this file by path).

use fullduplex_proto::Event;

/// Streamed pieces in a form that does not depend on how the bytes were cut: adjacent pieces
/// of a message joined into one. After an error, a message's unfinished last piece is
/// dropped: how much of a failing frame was delivered before the failure depends on the cuts
/// (what was delivered is checked separately, for valid UTF-8 and order).
pub fn merge_pieces(events: Vec<Event>, failed: bool) -> Vec<Event> {
    let mut merged: Vec<Event> = Vec::new();
    for event in events {
        if let (Some(Event::Fragment(last)), Event::Fragment(next)) = (merged.last_mut(), &event) {
            if !last.is_last {
                let mut joined = last.payload.to_vec();
                joined.extend_from_slice(&next.payload);
                last.payload = joined.into();
                last.is_last = next.is_last;
                continue;
            }
        }
        merged.push(event);
    }
    if failed && matches!(merged.last(), Some(Event::Fragment(f)) if !f.is_last) {
        merged.pop();
    }
    merged
}
