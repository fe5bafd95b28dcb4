//! permessage-deflate throughput: compress and decompress JSON-like text and random bytes of
//! 1 KiB, 64 KiB and 1 MiB, with context takeover (the default) and without.
//!
//! ```text
//! cargo bench -p fullduplex-proto --bench deflate
//! ```

use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fullduplex_proto::deflate::{Compressor, Decompressor, DeflateConfig, DeflateParams};
use fullduplex_proto::Role;

/// JSON-like text: records with repeated keys and varying values, like a feed of events.
fn json_like(len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + 200);
    let mut i = 0u64;
    while out.len() < len {
        out.push_str(&format!(
            "{{\"seq\":{i},\"user\":\"user{}\",\"price\":{}.{:02},\"tags\":[\"a\",\"b{}\"],\"text\":\"event number {i}\"}},",
            i % 97,
            (i * 7919) % 1000,
            i % 100,
            i % 13
        ));
        i += 1;
    }
    out.truncate(len);
    out.into_bytes()
}

/// Incompressible bytes (xorshift).
fn random(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let sizes = [
        (1usize << 10, "1KiB"),
        (64 << 10, "64KiB"),
        (1 << 20, "1MiB"),
    ];
    for (params, mode) in [
        (DeflateParams::default(), "takeover"),
        (
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..DeflateParams::default()
            },
            "no_takeover",
        ),
    ] {
        let mut group = c.benchmark_group(format!("deflate_{mode}"));
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10);
        for (len, size_name) in sizes {
            for (data, kind) in [(json_like(len), "json"), (random(len), "random")] {
                group.throughput(Throughput::Bytes(len as u64));
                let config = DeflateConfig::default();
                let mut compressor = Compressor::new(&params, Role::Server, &config);
                let mut out = BytesMut::with_capacity(len + 1024);
                group.bench_with_input(
                    BenchmarkId::new(format!("compress_{kind}"), size_name),
                    &data,
                    |b, data| {
                        b.iter(|| {
                            out.clear();
                            compressor.compress(data, &mut out).unwrap();
                            out.len()
                        })
                    },
                );
                // Decompress a stream of messages compressed the same way, in order (context
                // takeover makes each depend on the previous ones), cycling when exhausted.
                let mut producer = Compressor::new(&params, Role::Server, &config);
                let messages: Vec<Vec<u8>> = (0..64)
                    .map(|_| {
                        let mut out = BytesMut::new();
                        producer.compress(&data, &mut out).unwrap();
                        out.to_vec()
                    })
                    .collect();
                let ratio = messages[1].len() as f64 / len as f64;
                eprintln!(
                    "deflate_{mode}/{kind}/{size_name}: compressed to {:.1}%",
                    ratio * 100.0
                );
                let mut decompressor = Decompressor::new(&params, Role::Client);
                let mut index = 0;
                let mut inflated = BytesMut::with_capacity(len + 1024);
                group.bench_with_input(
                    BenchmarkId::new(format!("decompress_{kind}"), size_name),
                    &messages,
                    |b, messages| {
                        b.iter(|| {
                            if index == messages.len() {
                                index = 0;
                                decompressor = Decompressor::new(&params, Role::Client);
                            }
                            inflated.clear();
                            decompressor
                                .decompress(&messages[index], true, &mut inflated, usize::MAX)
                                .unwrap();
                            index += 1;
                            inflated.len()
                        })
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
