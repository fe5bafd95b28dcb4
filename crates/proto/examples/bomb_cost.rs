//! What a deflate bomb costs a server (RELIABILITY.md): one frame of about 64 KB that
//! inflates to just over 64 MiB of zeros, against the former default message limit (64 MiB) and the
//! current one (1 MiB). Prints, per limit, the CPU time until the 1009 (median of 7) and the
//! longest single `next_event` call (one inflate slice).
//!
//! ```text
//! cargo run --release -p fullduplex-proto --example bomb_cost
//! ```

use std::time::{Duration, Instant};

use bytes::BytesMut;
use fullduplex_proto::deflate::{Compressor, DeflateConfig, DeflateParams};
use fullduplex_proto::{Config, Connection, Role};

fn main() {
    let params = DeflateParams::default();
    let mut bomb = BytesMut::new();
    Compressor::new(&params, Role::Client, &DeflateConfig::default())
        .compress(&vec![0u8; (64 << 20) + 4096], &mut bomb)
        .expect("compress");
    let key = [1u8, 2, 3, 4];
    let mut frame = vec![0xc2, 0x80 | 127];
    frame.extend_from_slice(&(bomb.len() as u64).to_be_bytes());
    frame.extend_from_slice(&key);
    frame.extend(bomb.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    println!(
        "bomb: {} bytes on the wire, inflating to 64 MiB + 4 KiB",
        frame.len()
    );
    for limit in [64usize << 20, 1 << 20] {
        let mut totals = Vec::new();
        let mut longest = Duration::ZERO;
        let mut calls = 0;
        for _ in 0..7 {
            let mut server =
                Connection::new(Role::Server, Config::default().max_message_size(limit));
            server.enable_deflate(params);
            server.recv_buf().extend_from_slice(&frame);
            let start = Instant::now();
            calls = 0;
            loop {
                let call = Instant::now();
                let result = server.next_event();
                longest = longest.max(call.elapsed());
                calls += 1;
                match result {
                    Ok(None) if server.has_pending_work() => continue,
                    Err(error) => {
                        assert_eq!(error.close_code().0, 1009);
                        break;
                    }
                    other => panic!("expected 1009, got {:?}", other.map(|e| e.is_some())),
                }
            }
            totals.push(start.elapsed());
        }
        totals.sort();
        println!(
            "limit {:>2} MiB: {:.2} ms until 1009 (median of 7), {calls} calls, longest call {:.2} ms",
            limit >> 20,
            totals[3].as_secs_f64() * 1e3,
            longest.as_secs_f64() * 1e3
        );
    }
}
