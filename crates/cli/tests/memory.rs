//! `fdx echo` gives memory back to the system once many connections have closed.

mod common;

use std::time::{Duration, Instant};

use common::Background;
use fullduplex::Message;

/// The server's resident set size in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line")
}

/// 200 connections each echo a 512 KiB message at once (the server's RSS rises by 80-100 MiB),
/// then all close: within 20 s the server has given at least three quarters of that back,
/// instead of keeping it in the allocator's free lists.
#[cfg(target_os = "linux")]
#[test]
fn echo_returns_memory_after_many_connections_close() {
    let server = Background::start(&["echo", "127.0.0.1:0"]);
    let pid = server.pid();
    let start = rss_kib(pid);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let url = server.url.clone();
    let peak = runtime.block_on(async move {
        let mut sockets = Vec::new();
        for _ in 0..200 {
            let (ws, _) = fullduplex::connect(url.as_str()).await.expect("connect");
            sockets.push(ws);
        }
        let payload = bytes::Bytes::from(vec![7u8; 512 << 10]);
        let echoes = sockets.into_iter().map(|mut ws| {
            let payload = payload.clone();
            tokio::spawn(async move {
                ws.send(Message::Binary(payload.clone()))
                    .await
                    .expect("send");
                match ws.recv().await {
                    Some(Ok(Message::Binary(echoed))) => assert_eq!(echoed.len(), payload.len()),
                    other => panic!("expected the echo, got {other:?}"),
                }
                ws
            })
        });
        let mut open = Vec::new();
        for echo in echoes {
            open.push(echo.await.expect("echo task"));
        }
        let peak = rss_kib(pid);
        for mut ws in open {
            let _ = ws.close(None).await;
        }
        peak
    });
    assert!(
        peak > start + 60 * 1024,
        "the load did not raise RSS: {start} KiB -> {peak} KiB"
    );
    let allowed = start + (peak - start) / 4;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = rss_kib(pid);
    while now > allowed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        now = rss_kib(pid);
    }
    assert!(
        now <= allowed,
        "RSS {start} KiB at start, {peak} KiB at the peak, still {now} KiB 20 s after the close"
    );
}
