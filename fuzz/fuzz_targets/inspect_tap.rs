//! The inspecting relay's frame tap (`crates/cli/src/inspect/tap.rs`, used by `fdx inspect`): a
//! fuzzed byte stream observed in fuzzed chunks, in either direction, with and without
//! permessage-deflate.
//!
//! Input layout: byte 0: bit 0 direction (server to client when set), bit 1 deflate on, bit
//! 2 the sender uses no context takeover, bits 3-4 the logged payload limit (0, 16, 256 or
//! 4,096 bytes); byte 1: how many chunk-size bytes follow (low 3 bits); the chunk sizes,
//! used in turn (0: everything left); the rest is the stream.
//!
//! Invariants: nothing panics; a record's payload is at most the limit (for a close frame:
//! at most 125 bytes, or the limit if higher) and at most its
//! `payload_len`, and `truncated()` says whether it was cut; once the stream is lost (an
//! unparsable header), no more records (after a close frame the tap goes on logging what
//! passes: a proxy shows a peer that sends after its close); and split points do not
//! matter: the same stream observed in one piece gives the same records and the same state
//! (but for how much of a corrupt compressed payload inflated before the error, and how
//! zlib-rs words that error).
#![no_main]

use fullduplex_fuzz::tap::{Direction, FrameRecord, FrameTap};
use fullduplex_proto::deflate::DeflateParams;
use fullduplex_proto::frame::OpCode;
use libfuzzer_sys::fuzz_target;

fn tap(flags: u8) -> FrameTap {
    let direction = if flags & 1 != 0 {
        Direction::ServerToClient
    } else {
        Direction::ClientToServer
    };
    let limit = [0, 16, 256, 4096][usize::from((flags >> 3) & 3)];
    let params = DeflateParams {
        client_no_context_takeover: flags & 4 != 0,
        server_no_context_takeover: flags & 4 != 0,
        ..DeflateParams::default()
    };
    FrameTap::new(direction, limit, (flags & 2 != 0).then_some(&params))
}

/// A record as compared across split points. When inflating failed, how much came out
/// before the error depends on how the input was cut (zlib-rs decodes whole input faster
/// and further than pieces of it), and so does the error's wording: that there was an
/// error is compared, not the payload or the message.
fn comparable(record: &FrameRecord) -> FrameRecord {
    let mut record = record.clone();
    if record.inflate_error.is_some() {
        record.payload.clear();
        record.payload_len = 0;
        // zlib-rs words the same fault differently when it meets it on a later call.
        record.inflate_error = Some(String::new());
    }
    record
}

fn check(record: &FrameRecord, limit: usize) {
    // A close frame's payload is kept up to 125 bytes, for its code and reason.
    let limit = match record.header.opcode {
        OpCode::Close => limit.max(125),
        _ => limit,
    };
    assert!(record.payload.len() <= limit, "payload past the limit");
    assert!(record.payload.len() as u64 <= record.payload_len);
    assert_eq!(
        record.truncated(),
        (record.payload.len() as u64) < record.payload_len
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&layout, rest)) = rest.split_first() else {
        return;
    };
    let limit = [0, 16, 256, 4096][usize::from((flags >> 3) & 3)];
    let n_sizes = usize::from(layout & 7).min(rest.len());
    let (sizes, stream) = rest.split_at(n_sizes);

    let mut chunked = tap(flags);
    let mut records = Vec::new();
    let mut left = stream;
    let mut turn = 0;
    while !left.is_empty() {
        let size = match sizes.get(turn % sizes.len().max(1)) {
            Some(&0) | None => left.len(),
            Some(&n) => usize::from(n).min(left.len()),
        };
        turn += 1;
        let lost = chunked.lost_reason().is_some();
        let before = records.len();
        chunked.observe(&left[..size], &mut records);
        if lost {
            assert_eq!(records.len(), before, "records after the stream was lost");
        }
        left = &left[size..];
    }
    for record in &records {
        check(record, limit);
    }

    let mut whole = tap(flags);
    let mut at_once = Vec::new();
    whole.observe(stream, &mut at_once);
    assert_eq!(
        records.iter().map(comparable).collect::<Vec<_>>(),
        at_once.iter().map(comparable).collect::<Vec<_>>(),
        "records depend on split points"
    );
    assert_eq!(whole.close_seen(), chunked.close_seen());
    assert_eq!(whole.lost_reason(), chunked.lost_reason());
    assert_eq!(whole.at_frame_boundary(), chunked.at_frame_boundary());
});
