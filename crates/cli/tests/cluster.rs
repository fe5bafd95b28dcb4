//! Fault tests of `fdx serve` as a cluster engine: nodes sharing topics through Redis (a
//! single server, independent shards, a Redis Cluster) while Redis restarts, its pub/sub
//! connections are killed, and nodes die. Each test checks that every message whose publish
//! was acknowledged (HTTP 200) reaches every subscriber that stayed connected, or that
//! recovered within the history, exactly once and in offset order, or, only where Redis lost
//! its data, is covered by a `gap` event.
//!
//! They start `redis-server` and `fdx serve` processes of their own on free loopback ports
//! and kill them by PID.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{
    client_ids, http_get, http_presence, http_publish, last_target, poll, publish_ok, Acked,
    HubClient, Loss, Node, RedisCluster, RedisServer,
};
use serde_json::{json, Value};

/// The bound on a whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(85);

/// The bound on a client catching up with the last acknowledged publish.
const CATCH_UP: Duration = Duration::from_secs(20);

/// Runs blocking harness calls (process starts and stops, `redis-cli`) off the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("the test finishes within its bound");
}

/// One HTTP publish of a stream: when, its data, the status and the answer.
#[derive(Debug)]
struct Attempt {
    at: Instant,
    done: Instant,
    data: Value,
    status: u16,
    answer: Value,
}

/// Publishes `{"n":N}` over HTTP to `addr` every 20 ms (about 50/s) until `stop` is set.
async fn publish_stream(addr: String, topic: String, stop: Arc<AtomicBool>) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let data = json!({ "n": n });
        let at = Instant::now();
        let (status, answer) = http_publish(&addr, &topic, &data.to_string()).await;
        attempts.push(Attempt {
            at,
            done: Instant::now(),
            data,
            status,
            answer,
        });
    }
    attempts
}

/// The acknowledged publishes of a stream; asserts every answer is 200 or 503 and that the
/// acknowledged offsets only grow within an epoch.
fn acknowledged(attempts: &[Attempt]) -> Vec<Acked> {
    let mut acked: Vec<Acked> = Vec::new();
    for attempt in attempts {
        match attempt.status {
            200 => {
                let a = common::cluster::acked(&attempt.answer, attempt.data.clone());
                if let Some(last) = acked.last() {
                    assert!(
                        last.epoch != a.epoch || last.offset < a.offset,
                        "acknowledged offsets go backwards: {last:?} then {a:?}"
                    );
                }
                acked.push(a);
            }
            503 => assert!(
                attempt.answer["error"].is_string(),
                "503 without an error: {attempt:?}"
            ),
            _ => panic!("a publish answered neither 200 nor 503: {attempt:?}"),
        }
    }
    acked
}

/// Publishes until one is acknowledged (within `within`), then `more` further ones, which
/// must be acknowledged: the acknowledgements.
async fn publish_after_recovery(
    addr: &str,
    topic: &str,
    first_n: u64,
    more: u64,
    within: Duration,
) -> Vec<Acked> {
    let deadline = Instant::now() + within;
    let mut n = first_n;
    let first = loop {
        let data = json!({ "n": n, "after": true });
        let (status, answer) = http_publish(addr, topic, &data.to_string()).await;
        n += 1;
        match status {
            200 => break common::cluster::acked(&answer, data),
            503 => {}
            other => panic!("publish after recovery: {other} {answer}"),
        }
        assert!(
            Instant::now() < deadline,
            "publishing on {addr} did not recover within {within:?}: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut acked = vec![first];
    for _ in 0..more {
        acked.push(publish_ok(addr, topic, json!({ "n": n, "after": true })).await);
        n += 1;
    }
    acked
}

/// Polls `GET /readyz` every 50 ms until `stop`: when, and the status.
async fn watch_readiness(addr: String, stop: Arc<AtomicBool>) -> Vec<(Instant, u16)> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let (status, _) = http_get(&addr, "/readyz").await;
        seen.push((Instant::now(), status));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// Waits for `GET path` to answer `status` (at most `within`).
async fn wait_status(addr: &str, path: &str, status: u16, within: Duration) {
    poll(
        &format!("GET {path} on {addr} = {status}"),
        within,
        || async { (http_get(addr, path).await.0 == status).then_some(()) },
    )
    .await;
}

/// The offsets a client received on `topic`, in order.
fn offsets(client: &HubClient, topic: &str) -> Vec<u64> {
    client
        .tracker
        .topics
        .get(topic)
        .map(|log| log.received.iter().map(|(_, o, _)| *o).collect())
        .unwrap_or_default()
}

/// The last line of a `redis-cli` answer as a number.
fn last_number(answer: &str) -> i64 {
    answer
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number in redis-cli's answer {answer:?}"))
}

/// Redis restarts in the middle of a stream (SIGTERM, same port, append-only file): the
/// publishes during the outage are refused with 503, every acknowledged one arrives once, in
/// order, in the one epoch; `/readyz` says 503 during the outage and 200 after.
async fn redis_restart(persistent: bool) {
    let mut redis = blocking(if persistent {
        RedisServer::start_persistent
    } else {
        RedisServer::start
    });
    let url = redis.url();
    let a = blocking(|| Node::start(&["--redis", &url]));
    let b = blocking(|| Node::start(&["--redis", &url]));
    let topic = if persistent {
        "restart-aof"
    } else {
        "restart-empty"
    };

    let mut subscriber = HubClient::connect("subscriber on A", &a.addr).await;
    subscriber.subscribe(topic, None, false).await;
    let subscriber = subscriber.pump();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn(publish_stream(
        b.addr.clone(),
        topic.to_owned(),
        stop.clone(),
    ));
    let readiness = tokio::spawn(watch_readiness(a.addr.clone(), stop.clone()));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let down = Instant::now();
    blocking(|| redis.stop());
    tokio::time::sleep(Duration::from_secs(2)).await;
    blocking(|| redis.restart());
    let up = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let attempts = publisher.await.expect("publisher");
    let readiness = readiness.await.expect("readiness watcher");
    let mut acked = acknowledged(&attempts);
    let last_n = attempts.len() as u64 + 1;
    acked.extend(publish_after_recovery(&b.addr, topic, last_n, 5, Duration::from_secs(20)).await);

    let refused = attempts.iter().filter(|a| a.status == 503).count();
    assert!(
        refused > 0,
        "no publish was refused during a 2 s outage: {attempts:?}"
    );
    let during: Vec<_> = attempts
        .iter()
        .filter(|a| a.at > down + Duration::from_millis(300) && a.done < up)
        .map(|a| (a.status, a.answer.clone()))
        .collect();
    assert!(
        during.iter().all(|(status, _)| *status == 503),
        "a publish while Redis was down was not refused: {during:?}"
    );
    let unready = readiness
        .iter()
        .filter(|(at, status)| *at > down && *status == 503)
        .count();
    assert!(
        unready > 0,
        "/readyz on A never said 503 during the outage: {readiness:?}"
    );
    wait_status(&a.addr, "/readyz", 200, Duration::from_secs(15)).await;

    let subscriber = subscriber
        .finish(last_target(topic, &acked), CATCH_UP)
        .await;
    let epochs: Vec<&str> = {
        let mut epochs: Vec<&str> = acked.iter().map(|a| a.epoch.as_str()).collect();
        epochs.dedup();
        epochs
    };
    if persistent {
        assert_eq!(
            epochs.len(),
            1,
            "the epoch changed although Redis kept its data"
        );
        subscriber
            .tracker
            .assert_delivered("subscriber on A", topic, &acked, Loss::None);
        let stored = blocking(|| redis.cli(&["GET", &format!("fdx:{{{topic}}}:offset")]));
        assert_eq!(
            stored,
            acked.last().expect("acknowledged").offset.to_string(),
            "fdx:{{{topic}}}:offset"
        );
    } else {
        assert_eq!(
            epochs.len(),
            2,
            "Redis lost its data: one new epoch, acknowledged {acked:?}"
        );
        subscriber
            .tracker
            .assert_delivered("subscriber on A", topic, &acked, Loss::EpochChange);
        let (_, epoch) = subscriber.tracker.position(topic).expect("position");
        assert_eq!(epoch, epochs[1], "the subscriber follows the new epoch");
    }
    eprintln!(
        "{} acknowledged, {refused} refused, {} reconnects, gaps {:?}; A: {}",
        acked.len(),
        subscriber.reconnects,
        subscriber.tracker.topics.get(topic).map(|log| &log.gaps),
        a.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn redis_restart_with_persistence_loses_nothing() {
    bounded(redis_restart(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn redis_restart_without_persistence_reports_an_epoch_gap() {
    bounded(redis_restart(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn killed_pubsub_connections_lose_nothing() {
    bounded(async {
        let redis = blocking(RedisServer::start);
        let url = redis.url();
        let a = blocking(|| Node::start(&["--redis", &url]));
        let b = blocking(|| Node::start(&["--redis", &url]));
        let topic = "client-kill";

        let mut on_a = HubClient::connect("subscriber on A", &a.addr).await;
        on_a.subscribe(topic, None, false).await;
        let mut on_b = HubClient::connect("subscriber on B", &b.addr).await;
        on_b.subscribe(topic, None, false).await;
        let (on_a, on_b) = (on_a.pump(), on_b.pump());
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = tokio::spawn(publish_stream(
            b.addr.clone(),
            topic.to_owned(),
            stop.clone(),
        ));

        for round in 0..3 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            // Both nodes hold a pub/sub connection again before each kill.
            poll(
                &format!("two pub/sub clients before kill {round}"),
                Duration::from_secs(15),
                || async {
                    let list = blocking(|| redis.cli(&["CLIENT", "LIST", "TYPE", "pubsub"]));
                    (list.lines().filter(|l| !l.is_empty()).count() >= 2).then_some(())
                },
            )
            .await;
            let killed = blocking(|| redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]));
            assert!(
                last_number(&killed) >= 2,
                "CLIENT KILL TYPE pubsub killed {killed}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        let attempts = publisher.await.expect("publisher");
        let mut acked = acknowledged(&attempts);
        let last_n = attempts.len() as u64 + 1;
        acked.extend(
            publish_after_recovery(&b.addr, topic, last_n, 3, Duration::from_secs(15)).await,
        );
        let target = last_target(topic, &acked);
        let on_a = on_a.finish(target.clone(), CATCH_UP).await;
        let on_b = on_b.finish(target, CATCH_UP).await;
        for client in [&on_a, &on_b] {
            client
                .tracker
                .assert_delivered(&client.name, topic, &acked, Loss::None);
        }
        eprintln!(
            "{} acknowledged of {}; reconnects A {} B {}",
            acked.len(),
            attempts.len(),
            on_a.reconnects,
            on_b.reconnects
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_client_of_a_killed_node_recovers_on_another() {
    bounded(async {
        let redis = blocking(RedisServer::start);
        let url = redis.url();
        let mut a = blocking(|| Node::start(&["--redis", &url]));
        let b = blocking(|| Node::start(&["--redis", &url]));
        let topic = "failover";

        let mut client = HubClient::connect("client", &a.addr).await;
        client.subscribe(topic, None, false).await;
        let mut acked = Vec::new();
        for n in 0..5 {
            acked.push(publish_ok(&b.addr, topic, json!({ "n": n })).await);
        }
        client
            .read_until(&last_target(topic, &acked), CATCH_UP, false)
            .await;
        let (since, epoch) = client.tracker.position(topic).expect("position");

        blocking(|| a.kill9());
        for n in 5..15 {
            acked.push(publish_ok(&b.addr, topic, json!({ "n": n })).await);
        }
        let replies = client.reconnect(&b.addr, Duration::from_secs(10)).await;
        let reply = &replies[0];
        assert_eq!(reply["recovered"], true, "{reply}");
        assert_eq!(reply["epoch"], epoch.as_str(), "{reply}");
        assert_eq!(reply["offset"], acked[14].offset, "{reply}");
        client
            .read_until(&last_target(topic, &acked), CATCH_UP, false)
            .await;
        acked.push(publish_ok(&b.addr, topic, json!({ "n": 15 })).await);
        client
            .read_until(&last_target(topic, &acked), CATCH_UP, false)
            .await;
        client
            .tracker
            .assert_delivered("client", topic, &acked, Loss::None);
        let expected: Vec<u64> = acked.iter().map(|a| a.offset).collect();
        assert_eq!(
            offsets(&client, topic),
            expected,
            "exactly the acknowledged messages (recovered after {since})"
        );
        // Nothing more arrives.
        let extra = client.read_within(Duration::from_millis(500)).await;
        assert!(matches!(extra, Ok(None)), "{extra:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_node_started_later_recovers_from_the_shared_history() {
    bounded(async {
        let redis = blocking(RedisServer::start);
        let url = redis.url();
        let args = ["--redis", url.as_str(), "--history-size", "10"];
        let a = blocking(|| Node::start(&args));
        let topic = "late-node";

        let mut client = HubClient::connect("client", &a.addr).await;
        client.subscribe(topic, None, false).await;
        let mut acked = Vec::new();
        for n in 0..22 {
            acked.push(publish_ok(&a.addr, topic, json!({ "n": n })).await);
        }
        client
            .read_until(&last_target(topic, &acked), CATCH_UP, false)
            .await;
        client.disconnect();
        for n in 22..30 {
            acked.push(publish_ok(&a.addr, topic, json!({ "n": n })).await);
        }
        let epoch = acked[0].epoch.clone();

        // Within the history (the last 10 of 30): everything missed, exactly.
        let late = blocking(|| Node::start(&args));
        let replies = client.reconnect(&late.addr, Duration::from_secs(10)).await;
        assert_eq!(replies[0]["recovered"], true, "{}", replies[0]);
        assert_eq!(replies[0]["offset"], 30, "{}", replies[0]);
        assert_eq!(replies[0]["epoch"], epoch.as_str(), "{}", replies[0]);
        client
            .read_until(&last_target(topic, &acked), CATCH_UP, false)
            .await;
        client
            .tracker
            .assert_delivered("client", topic, &acked, Loss::None);
        assert_eq!(
            offsets(&client, topic),
            (1..=30).collect::<Vec<u64>>(),
            "exactly the missed messages"
        );

        // Older than the history: recovered:false, what the history holds, nothing twice.
        let mut old = HubClient::connect("old client", &late.addr).await;
        let reply = old.subscribe(topic, Some((3, &epoch)), false).await;
        assert_eq!(reply["recovered"], false, "{reply}");
        old.read_until(&last_target(topic, &acked), CATCH_UP, false)
            .await;
        let after: Vec<Acked> = acked.iter().filter(|a| a.offset > 3).cloned().collect();
        old.tracker
            .assert_delivered("old client", topic, &after, Loss::Gaps);
        let got = offsets(&old, topic);
        assert!(
            got.iter().all(|o| *o > 3) && (21..=30).all(|o| got.contains(&o)),
            "the history after 3 (the last 10): {got:?}"
        );
    })
    .await;
}

/// A client of node A subscribed to many topics, and every acknowledged publish per topic.
struct Shared {
    on_a: HubClient,
    acked: BTreeMap<String, Vec<Acked>>,
}

fn targets(acked: &BTreeMap<String, Vec<Acked>>) -> Vec<(String, String, u64)> {
    acked
        .iter()
        .flat_map(|(topic, acked)| last_target(topic, acked))
        .collect()
}

/// Subscribes a client of `a` and one of `b` to every topic, publishes three rounds through
/// both nodes (HTTP), and checks that both clients got every acknowledged message once, in
/// order.
async fn share_topics(a: &Node, b: &Node, topics: &[String]) -> Shared {
    let mut on_a = HubClient::connect("client on A", &a.addr).await;
    let mut on_b = HubClient::connect("client on B", &b.addr).await;
    for topic in topics {
        on_a.subscribe(topic, None, false).await;
        on_b.subscribe(topic, None, false).await;
    }
    let mut acked: BTreeMap<String, Vec<Acked>> = BTreeMap::new();
    for round in 0..3 {
        for (i, topic) in topics.iter().enumerate() {
            let node = if (i + round) % 2 == 0 { a } else { b };
            let ack = publish_ok(&node.addr, topic, json!({ "round": round })).await;
            acked.entry(topic.clone()).or_default().push(ack);
        }
    }
    on_a.read_until(&targets(&acked), CATCH_UP, false).await;
    on_b.read_until(&targets(&acked), CATCH_UP, false).await;
    for (topic, acked) in &acked {
        on_a.tracker
            .assert_delivered("client on A", topic, acked, Loss::None);
        on_b.tracker
            .assert_delivered("client on B", topic, acked, Loss::None);
    }
    Shared { on_a, acked }
}

/// The client of A disconnects, one more round is published through `publisher`, and the
/// client recovers every topic on `b`: `recovered:true` and every message once, in order.
async fn recover_all_on(shared: &mut Shared, publisher: &Node, b: &Node, topics: &[String]) {
    shared.on_a.disconnect();
    for topic in topics {
        let ack = publish_ok(&publisher.addr, topic, json!({ "round": 3 })).await;
        shared.acked.entry(topic.clone()).or_default().push(ack);
    }
    let replies = shared
        .on_a
        .reconnect(&b.addr, Duration::from_secs(10))
        .await;
    assert_eq!(replies.len(), topics.len());
    for reply in &replies {
        assert_eq!(reply["recovered"], true, "{reply}");
    }
    shared
        .on_a
        .read_until(&targets(&shared.acked), CATCH_UP, false)
        .await;
    for (topic, acked) in &shared.acked {
        shared
            .on_a
            .tracker
            .assert_delivered("client of A on B", topic, acked, Loss::None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn topics_spread_over_two_shards() {
    bounded(async {
        let r1 = blocking(RedisServer::start);
        let r2 = blocking(RedisServer::start);
        let (u1, u2) = (r1.url(), r2.url());
        let args = ["--redis", u1.as_str(), "--redis", u2.as_str()];
        let a = blocking(|| Node::start(&args));
        let b = blocking(|| Node::start(&args));
        let topics: Vec<String> = (0..20).map(|i| format!("shard-{i}")).collect();

        let mut shared = share_topics(&a, &b, &topics).await;

        // Each topic lives on exactly one of the two, and both hold some.
        let mut per_shard = [0, 0];
        for topic in &topics {
            let key = format!("fdx:{{{topic}}}:offset");
            let on = [
                blocking(|| r1.cli(&["EXISTS", &key])),
                blocking(|| r2.cli(&["EXISTS", &key])),
            ];
            let on: Vec<i64> = on.iter().map(|a| last_number(a)).collect();
            assert_eq!(on[0] + on[1], 1, "{key} on exactly one shard: {on:?}");
            per_shard[if on[0] == 1 { 0 } else { 1 }] += 1;
        }
        assert!(
            per_shard[0] > 0 && per_shard[1] > 0,
            "the topics are spread over both shards: {per_shard:?}"
        );

        // A client of A recovers every topic on B.
        recover_all_on(&mut shared, &b, &b, &topics).await;
        eprintln!("topics per shard: {per_shard:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn nodes_share_topics_through_a_redis_cluster() {
    bounded(async {
        let cluster = blocking(RedisCluster::start);
        let seed = cluster.seed_url();
        let args = ["--redis", seed.as_str(), "--redis-cluster"];
        let a = blocking(|| Node::start(&args));
        let b = blocking(|| Node::start(&args));
        let topics: Vec<String> = (0..9).map(|i| format!("cluster-{i}")).collect();

        let mut shared = share_topics(&a, &b, &topics).await;

        // The topics' keys landed on every master (slots of cluster-0..8: 15938 11875 7680
        // 3617 16070 12007 7812 3749 16202; `--cluster create` gives each master a third).
        let keys_per_master: Vec<usize> = (0..3)
            .map(|i| {
                blocking(|| cluster.cli_on(i, &["KEYS", "fdx:*"]))
                    .lines()
                    .filter(|l| !l.is_empty())
                    .count()
            })
            .collect();
        assert!(
            keys_per_master.iter().all(|n| *n > 0),
            "the topics' keys are on every master: {keys_per_master:?}"
        );

        // A client of A recovers every topic on B.
        recover_all_on(&mut shared, &a, &b, &topics).await;
        eprintln!("keys per master: {keys_per_master:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn presence_spans_nodes_and_forgets_a_dead_one() {
    bounded(async {
        let redis = blocking(RedisServer::start);
        let url = redis.url();
        let args = ["--redis", url.as_str(), "--presence-ttl", "3s"];
        let mut a = blocking(|| Node::start(&args));
        let b = blocking(|| Node::start(&args));
        let topic = "room";
        let listed = |addr: String, n: usize| async move {
            poll(
                &format!("{n} clients in the presence on {addr}"),
                Duration::from_secs(5),
                || {
                    let addr = addr.clone();
                    async move {
                        let ids = http_presence(&addr, topic).await;
                        (ids.len() == n).then_some(ids)
                    }
                },
            )
            .await
        };
        let new_id = |before: &[String], after: &[String]| -> String {
            let new: Vec<&String> = after.iter().filter(|id| !before.contains(id)).collect();
            assert_eq!(new.len(), 1, "one new client: {before:?} -> {after:?}");
            new[0].clone()
        };

        let mut a1 = HubClient::connect("a1", &a.addr).await;
        a1.subscribe(topic, None, true).await;
        let ids = listed(a.addr.clone(), 1).await;
        let id_a1 = ids[0].clone();
        let mut b1 = HubClient::connect("b1", &b.addr).await;
        b1.subscribe(topic, None, true).await;
        let before = ids;
        let ids = listed(b.addr.clone(), 2).await;
        let id_b1 = new_id(&before, &ids);
        let mut a2 = HubClient::connect("a2", &a.addr).await;
        a2.subscribe(topic, None, true).await;
        let before = ids;
        let all = listed(a.addr.clone(), 3).await;
        let id_a2 = new_id(&before, &all);

        // Everyone, from either node, over HTTP and over the WebSocket.
        assert_eq!(http_presence(&a.addr, topic).await, all);
        assert_eq!(http_presence(&b.addr, topic).await, all);
        let reply = b1.presence(topic).await;
        assert_eq!(reply["type"], "presence", "{reply}");
        assert_eq!(client_ids(&reply), all, "{reply}");
        let reply = a1.presence(topic).await;
        assert_eq!(client_ids(&reply), all, "{reply}");

        let event = |kind: &'static str, id: String| {
            move |m: &Value| m["type"] == kind && m["topic"] == topic && m["client"] == id.as_str()
        };
        let within = Duration::from_secs(5);
        a1.wait_for(within, event("join", id_b1.clone())).await;
        a1.wait_for(within, event("join", id_a2.clone())).await;
        b1.wait_for(within, event("join", id_a2.clone())).await;

        // A client that goes away leaves.
        a2.disconnect();
        a1.wait_for(within, event("leave", id_a2.clone())).await;
        b1.wait_for(within, event("leave", id_a2.clone())).await;
        let mut two = vec![id_a1.clone(), id_b1.clone()];
        two.sort();
        assert_eq!(listed(b.addr.clone(), 2).await, two);

        // A node that dies: its clients leave within the presence TTL (3 s, plus slack).
        let killed = Instant::now();
        blocking(|| a.kill9());
        let bound = Duration::from_secs(10);
        let left = b1.wait_for(bound, event("leave", id_a1.clone())).await;
        poll("only b1 listed on B", bound, || async {
            (http_presence(&b.addr, topic).await == vec![id_b1.clone()]).then_some(())
        })
        .await;
        let reply = b1.presence(topic).await;
        assert_eq!(client_ids(&reply), vec![id_b1.clone()], "{reply}");
        eprintln!("{left} after {:?}", killed.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn only_nodes_with_subscribers_subscribe_to_a_topic() {
    bounded(async {
        let redis = blocking(RedisServer::start);
        let url = redis.url();
        let a = blocking(|| Node::start(&["--redis", &url]));
        let b = blocking(|| Node::start(&["--redis", &url]));
        let c = blocking(|| Node::start(&["--redis", &url]));
        let topic = "numsub";
        let channel = format!("fdx:{{{topic}}}");
        let shard_subscribers = |redis: &RedisServer| {
            last_number(&blocking(|| {
                redis.cli(&["PUBSUB", "SHARDNUMSUB", &channel])
            }))
        };

        let mut on_a = HubClient::connect("client on A", &a.addr).await;
        on_a.subscribe(topic, None, false).await;
        let mut on_c = HubClient::connect("client on C", &c.addr).await;
        on_c.subscribe("numsub-other", None, false).await;
        // B publishes to the topic without subscribing to it.
        let ack = publish_ok(&b.addr, topic, json!("hello")).await;
        on_a.read_until(&last_target(topic, &[ack]), CATCH_UP, false)
            .await;

        poll(
            "one node subscribed to the topic's channel",
            Duration::from_secs(5),
            || async { (shard_subscribers(&redis) == 1).then_some(()) },
        )
        .await;
        let numpat = last_number(&blocking(|| redis.cli(&["PUBSUB", "NUMPAT"])));
        assert_eq!(numpat, 0, "no pattern subscriptions");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(shard_subscribers(&redis), 1, "still one");

        on_a.unsubscribe(topic).await;
        poll(
            "nobody subscribed to the topic's channel",
            Duration::from_secs(15),
            || async { (shard_subscribers(&redis) == 0).then_some(()) },
        )
        .await;
        let numpat = last_number(&blocking(|| redis.cli(&["PUBSUB", "NUMPAT"])));
        assert_eq!(numpat, 0, "no pattern subscriptions");
        drop((a, b, c));
    })
    .await;
}

/// The harness itself: a restart keeps the data with the append-only file and loses it
/// without; a cluster forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn harness_redis_restarts_and_cluster_forms() {
    bounded(async {
        blocking(|| {
            let mut redis = RedisServer::start_persistent();
            assert_eq!(redis.cli(&["SET", "k", "v"]), "OK");
            redis.restart();
            assert_eq!(redis.cli(&["GET", "k"]), "v", "{}", redis.log());
            redis.kill();
            redis.restart();
            assert_eq!(redis.cli(&["GET", "k"]), "v", "{}", redis.log());

            let mut plain = RedisServer::start();
            assert_eq!(plain.cli(&["SET", "k", "v"]), "OK");
            plain.restart();
            assert_eq!(plain.cli(&["GET", "k"]), "");

            let cluster = RedisCluster::start();
            let slots: Vec<String> = (0..3)
                .map(|i| cluster.cli_on(i, &["CLUSTER", "MYID"]))
                .collect();
            assert_eq!(slots.len(), 3);
            assert!(cluster
                .cli_on(1, &["CLUSTER", "INFO"])
                .contains("cluster_slots_ok:16384"));
        });
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn the_server_api_acts_across_nodes() {
    use common::cluster::http_request;
    use fullduplex::Message;
    bounded(async {
        let redis = blocking(RedisServer::start);
        let url = redis.url();
        let a = blocking(|| Node::start(&["--redis", url.as_str()]));
        let b = blocking(|| Node::start(&["--redis", url.as_str()]));
        // A client of A, in the presence of `api`.
        let (mut ws, _) = fullduplex::connect(a.ws_url()).await.expect("connect to A");
        let request = json!({"type":"subscribe","topic":"api","presence":true,"id":1});
        ws.send(Message::text(request.to_string()))
            .await
            .expect("subscribe");
        let ids = poll(
            "the client in the presence",
            Duration::from_secs(5),
            || async {
                let ids = http_presence(&b.addr, "api").await;
                (ids.len() == 1).then_some(ids)
            },
        )
        .await;
        // Both nodes, as seen from B, once A's periodic report counts the client (a node's
        // entry can be listed from a report made before the client connected).
        let nodes = poll(
            "both nodes listed, one connection",
            Duration::from_secs(12),
            || async {
                let (status, body) = http_request(&b.addr, "GET", "/api/info", "").await;
                let info: Value = serde_json::from_str(&body).unwrap_or_default();
                let nodes = info["nodes"].as_array().cloned().unwrap_or_default();
                let connections: u64 = nodes.iter().filter_map(|n| n["connections"].as_u64()).sum();
                (status == 200 && nodes.len() == 2 && connections == 1).then_some(nodes)
            },
        )
        .await;
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        // Published through B's API, in A's history, read through B's API.
        for n in 1..=3 {
            let body = json!({"topic":"api","data":{"n":n}}).to_string();
            let (status, answer) = http_request(&b.addr, "POST", "/api/publish", &body).await;
            assert_eq!(status, 200, "{answer}");
        }
        let body = json!({"topic":"api","since":1}).to_string();
        let (status, history) = http_request(&a.addr, "POST", "/api/history", &body).await;
        assert_eq!(status, 200, "{history}");
        let history: Value = serde_json::from_str(&history).expect("JSON");
        assert_eq!(history["offset"], 3);
        assert_eq!(
            history["messages"],
            json!([{"offset":2,"data":{"n":2}},{"offset":3,"data":{"n":3}}])
        );
        // Disconnected from B: the client of A gets the code and reason asked for.
        let body = json!({"client": ids[0], "code": 4100, "reason": "bye"}).to_string();
        let (status, answer) = http_request(&b.addr, "POST", "/api/disconnect", &body).await;
        assert_eq!(status, 200, "{answer}");
        let answer: Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!(answer["nodes"], 2, "both nodes received the command");
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame,
                Ok(Some(Ok(_))) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        };
        let close = close.expect("a close frame with a code");
        assert_eq!((close.code.0, close.reason.as_str()), (4100, "bye"));
        poll(
            "the client gone from the presence",
            Duration::from_secs(5),
            || async { http_presence(&b.addr, "api").await.is_empty().then_some(()) },
        )
        .await;
    })
    .await;
}
