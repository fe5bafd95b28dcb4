//! `SetThreads` with a `reuseport_listener` per thread: connections spread over the threads,
//! each thread's set echoes its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fullduplex::{Message, SetThreads, WebSocketSet};
use tokio::sync::{oneshot, watch};

#[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
#[tokio::test]
async fn sets_on_threads_of_their_own_share_a_port_and_echo() {
    const CONNECTIONS: usize = 32;
    let (port_sender, port) = watch::channel(0u16);
    let mut chosen = port.clone();
    let accepted: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let (stop_sender, stop) = watch::channel(false);
    let counts = accepted.clone();
    let threads = SetThreads::spawn(2, move |index| {
        let port_sender = port_sender.clone();
        let mut port = port.clone();
        let mut stop = stop.clone();
        let counts = counts.clone();
        async move {
            // Thread 0 picks the port; thread 1 binds the same one.
            let listener = if index == 0 {
                let listener = fullduplex::reuseport_listener("127.0.0.1:0".parse().unwrap())
                    .expect("bind");
                port_sender.send_replace(listener.local_addr().unwrap().port());
                listener
            } else {
                let port = *port.wait_for(|&port| port != 0).await.expect("port");
                fullduplex::reuseport_listener(([127, 0, 0, 1], port).into()).expect("bind")
            };
            let mut set = WebSocketSet::new();
            let mut handshakes = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop.wait_for(|&stop| stop) => return,
                    Ok((tcp, _)) = listener.accept() => {
                        counts[index].fetch_add(1, Ordering::Relaxed);
                        handshakes.spawn_local(fullduplex::accept(tcp));
                    }
                    Some(Ok(Ok(ws))) = handshakes.join_next() => {
                        set.insert(ws);
                    }
                    // Every outcome is matched: a pattern that fails disables the branch,
                    // and the set would not run again until another branch fires.
                    (key, message) = set.recv() => {
                        if let Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) = message {
                            set.feed(key, message).expect("feed");
                        }
                    }
                }
            }
        }
    })
    .expect("spawn");

    let port = *tokio::time::timeout(Duration::from_secs(10), chosen.wait_for(|&p| p != 0))
        .await
        .expect("a port within 10 s")
        .expect("port");
    // Both listeners are bound once a connection reaches thread 1; give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let work = async {
        for n in 0..CONNECTIONS {
            let (mut ws, _) = fullduplex::connect(format!("ws://127.0.0.1:{port}/"))
                .await
                .expect("connect");
            let text = format!("message {n}");
            ws.send(Message::text(text.clone())).await.expect("send");
            match ws.recv().await {
                Some(Ok(Message::Text(echo))) => assert_eq!(echo.as_str(), text),
                other => panic!("connection {n}: {other:?}"),
            }
            ws.close(None).await.ok();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("every echo within 20 s");
    let counts = [
        accepted[0].load(Ordering::Relaxed),
        accepted[1].load(Ordering::Relaxed),
    ];
    assert_eq!(counts[0] + counts[1], CONNECTIONS);
    // The kernel hashes each connection's addresses: all 32 on one listener would be a
    // 1-in-2^31 event.
    assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
    stop_sender.send_replace(true);
    let (done, joined) = oneshot::channel();
    std::thread::spawn(move || done.send(threads.join().is_ok()));
    assert!(tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .expect("threads end within 10 s")
        .expect("joined"));
}
