//! Criterion benchmarks of the sans-I/O core: masking, frame headers, receive and send paths,
//! UTF-8 validation.
//!
//! ```text
//! cargo bench -p fullduplex-proto --bench core               # everything, about 1.5 minutes
//! cargo bench -p fullduplex-proto --bench core -- mask/      # one group (a regex filter)
//! ```
//!
//! Every group reports bytes per second. `mask/*` compares [`apply_mask`] (`fast`) with the
//! bytewise definition [`apply_mask_bytewise`] and with the word loop as the baseline target
//! compiles it ([`apply_mask_words`], SSE2 on x86_64): those ratios are what justify the
//! `unsafe` in `mask.rs` (the word view of the buffer, and the call into the AVX2 build).

use std::hint::black_box;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use fullduplex_proto::connection::encode_server_message;
use fullduplex_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use fullduplex_proto::mask::{apply_mask, apply_mask_bytewise, apply_mask_words};
use fullduplex_proto::utf8::Utf8Validator;
use fullduplex_proto::{Config, Connection, Message, Role};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const SIZES: [(usize, &str); 4] = [
    (16, "16B"),
    (1 << 10, "1KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
];

/// Short runs: the whole file finishes in well under two minutes.
fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20);
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    configure(&mut group);
    for (size, label) in SIZES {
        let mut buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("fast/{label}"), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), 0))
        });
        // The word loop as the baseline target compiles it (SSE2 on x86_64): `fast` against
        // `words` is what the AVX2 build buys where the CPU has it.
        group.bench_function(format!("words/{label}"), |b| {
            b.iter(|| apply_mask_words(black_box(&mut buf), black_box(KEY)))
        });
        group.bench_function(format!("bytewise/{label}"), |b| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), black_box(KEY), 0))
        });
    }
    group.finish();
}

/// A masked (client-to-server) frame as it arrives on the wire.
fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut header = FrameHeader::new(opcode, payload.len() as u64);
    header.mask = Some(KEY);
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut frame = head[..n].to_vec();
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], KEY, 0);
    frame
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    configure(&mut group);

    // Header parse and encode, one per length form (masked, as a server receives them).
    for (payload_len, label) in [(100u64, "7bit"), (1000, "16bit"), (100_000, "64bit")] {
        let mut header = FrameHeader::new(OpCode::Binary, payload_len);
        header.mask = Some(KEY);
        let mut wire = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut wire);
        group.throughput(Throughput::Bytes(n as u64));
        group.bench_function(format!("parse/{label}"), |b| {
            b.iter(|| FrameHeader::parse(black_box(&wire[..n])))
        });
        group.bench_function(format!("encode/{label}"), |b| {
            let mut dst = [0u8; MAX_HEADER_LEN];
            b.iter(|| black_box(&header).encode(black_box(&mut dst)))
        });
    }

    // A server receiving 1,000 masked 16-byte binary messages from one buffer: parse, check,
    // unmask in place, split off each payload.
    let mut wire = BytesMut::new();
    for i in 0..1000u32 {
        let payload = [i as u8; 16];
        wire.extend_from_slice(&masked_frame(OpCode::Binary, &payload));
    }
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("recv/1000x16B", |b| {
        b.iter_batched(
            || Connection::with_leftover(Role::Server, Config::default(), wire.clone()),
            |mut conn| {
                let mut n = 0;
                while let Some(event) = conn.next_event().expect("valid frames") {
                    black_box(&event);
                    n += 1;
                }
                assert_eq!(n, 1000);
                conn
            },
            BatchSize::SmallInput,
        )
    });

    // Sending: a server queues the header and the payload (copied below 256 bytes, shared
    // above); a client copies once to mask. The output is consumed as a shell would.
    for (size, label) in [(16usize, "16B"), (64 << 10, "64KiB")] {
        let payload = Bytes::from(vec![b'x'; size]);
        group.throughput(Throughput::Bytes(size as u64));
        let mut server = Connection::new(Role::Server, Config::default());
        group.bench_function(format!("send_server/{label}"), |b| {
            b.iter(|| {
                server
                    .send(Message::Binary(black_box(payload.clone())))
                    .expect("open");
                let n = server.output_len();
                server.output().advance(n);
            })
        });
        let message = Message::Binary(payload.clone());
        group.bench_function(format!("encode_server_message/{label}"), |b| {
            b.iter(|| encode_server_message(black_box(&message)))
        });
        let encoded = encode_server_message(&message);
        group.bench_function(format!("send_encoded/{label}"), |b| {
            b.iter(|| {
                server
                    .send_encoded(black_box(encoded.clone()))
                    .expect("open");
                let n = server.output_len();
                server.output().advance(n);
            })
        });
        let mut client = Connection::new(Role::Client, Config::default());
        group.bench_function(format!("send_client/{label}"), |b| {
            b.iter(|| {
                client
                    .send(Message::Binary(black_box(payload.clone())))
                    .expect("open");
                let n = client.output_len();
                client.output().advance(n);
            })
        });
    }
    group.finish();
}

/// `size` bytes of text (or a little less, to end on a character boundary).
fn text(size: usize, multilingual: bool) -> Vec<u8> {
    let sample = if multilingual {
        "Hello, κόσμε! こんにちは世界 🦀 Привет, мир. مرحبا بالعالم. "
    } else {
        "The quick brown fox jumps over the lazy dog. 0123456789 "
    };
    let mut out = String::with_capacity(size + sample.len());
    while out.len() < size {
        out.push_str(sample);
    }
    let mut end = size;
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out.into_bytes()
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    configure(&mut group);
    for (kind, multilingual) in [("ascii", false), ("multilingual", true)] {
        for (size, label) in &SIZES[1..] {
            let data = text(*size, multilingual);
            group.throughput(Throughput::Bytes(data.len() as u64));
            group.bench_function(format!("feed/{kind}/{label}"), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(&data)).expect("valid");
                    v.finish().expect("complete")
                })
            });
            group.bench_function(format!("feed_1500B_pieces/{kind}/{label}"), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    for piece in black_box(&data).chunks(1500) {
                        v.feed(piece).expect("valid");
                    }
                    v.finish().expect("complete")
                })
            });
            group.bench_function(format!("std/{kind}/{label}"), |b| {
                b.iter(|| std::str::from_utf8(black_box(&data)).is_ok())
            });
            group.bench_function(format!("simdutf8/{kind}/{label}"), |b| {
                b.iter(|| simdutf8::basic::from_utf8(black_box(&data)).is_ok())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, mask, frame, utf8);
criterion_main!(benches);
