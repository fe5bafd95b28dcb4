//! The permessage-deflate receive path: fuzzed compressed frames into a server `Connection`
//! with deflate enabled, and fuzzed data straight into a `Decompressor` with a small limit.
//!
//! Input layout: byte 0 picks the parameters (bit 0: peer uses no context takeover; bits 1-3:
//! output limit 1 KiB << n; bit 4: that limit times 8, up to 1 MiB, past the connection's
//! inflate slice of 256 KiB), then frames: a control byte (bit 0 FIN, bit 1 RSV1, bits 2-3:
//! text / binary / continuation / ping), a length byte, and that many payload bytes.
//!
//! Invariants: nothing panics (nor loops: a paused inflate always makes progress); every
//! message respects the message limit; text is UTF-8; after
//! an error nothing more is delivered; the decompressor's output never exceeds its limit and
//! its buffer never grows past the limit plus one inflate step.
#![no_main]

use bytes::BytesMut;
use fullduplex_proto::deflate::{Decompressor, DeflateParams, DECOMPRESS_STEP};
use fullduplex_proto::{Config, Connection, Event, Message, Role};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 4] = [0x5a, 0x17, 0xc3, 0x81];

fuzz_target!(|data: &[u8]| {
    let Some((&params_byte, mut rest)) = data.split_first() else {
        return;
    };
    let no_takeover = params_byte & 1 != 0;
    let limit = (1024usize << ((params_byte >> 1) & 7)) << (3 * ((params_byte >> 4) & 1));
    let params = DeflateParams {
        client_no_context_takeover: no_takeover,
        ..DeflateParams::default()
    };

    let mut conn = Connection::new(Role::Server, Config::default().max_message_size(limit));
    conn.enable_deflate(params);
    let mut decompressor = Decompressor::new(&params, Role::Server);
    let mut direct_out = BytesMut::new();
    let mut failed = false;
    let mut direct_failed = false;

    while rest.len() >= 2 {
        let (control, len) = (rest[0], rest[1] as usize);
        let payload = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        let fin = control & 1 != 0;
        let rsv1 = control & 2 != 0;
        let opcode = match (control >> 2) & 3 {
            0 => 1,
            1 => 2,
            2 => 0,
            _ => 9,
        };

        // Straight into the decompressor.
        if !direct_failed && payload.len() <= 125 {
            match decompressor.decompress(payload, fin, &mut direct_out, limit) {
                Ok(()) => {
                    assert!(direct_out.len() <= limit, "inflated past the limit");
                    if fin {
                        direct_out.clear();
                    }
                }
                Err(_) => direct_failed = true,
            }
            assert!(
                direct_out.capacity() <= limit + DECOMPRESS_STEP,
                "buffer {} for a limit of {limit}",
                direct_out.capacity()
            );
        }

        // Through the connection, as a masked client frame.
        let mut frame = vec![
            (fin as u8) << 7 | (rsv1 as u8) << 6 | opcode,
            0x80 | payload.len() as u8,
        ];
        frame.extend_from_slice(&KEY);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        conn.recv_buf().extend_from_slice(&frame);
        loop {
            match conn.next_event() {
                Ok(Some(event)) => {
                    assert!(!failed, "event after an error");
                    match event {
                        Event::Message(Message::Text(text)) => {
                            assert!(text.len() <= limit);
                            assert!(std::str::from_utf8(text.as_bytes()).is_ok());
                        }
                        Event::Message(Message::Binary(data)) => assert!(data.len() <= limit),
                        _ => {}
                    }
                }
                // Inflating paused after a slice (never with nothing more to do).
                Ok(None) if conn.has_pending_work() => assert!(!failed, "paused after an error"),
                Ok(None) => break,
                Err(_) => {
                    assert!(!failed, "two errors");
                    failed = true;
                }
            }
        }
        let _ = conn.take_output();
    }
});
