//! The hub's backend features, with fullduplex's own client and a tiny HTTP backend
//! (tests/common/backend.rs): request ids and acknowledgements, the server API (`/api/...`),
//! RS256/ES256/JWKS tokens, token refresh and expiry (4001), connect and subscribe hooks.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::backend::{
    alg_none, ask, claims, connect, connect_with_token, ec_key, ec_public_pem, hs256, http, jwks,
    now, now_f64, other_ec_key, other_rsa_key, post, recv_close, recv_json, recv_text, refused,
    rsa_key, rsa_public_pem, send, sign, subscribe, tampered, unreachable_url, Backend, Client,
    SLOW,
};
use common::{config, TestHub};
use fullduplex::{ClientRequest, CloseCode};
use fullduplex_hub::{HookConfig, HubConfig, TokenConfig};
use jsonwebtoken::Algorithm;
use serde_json::value::RawValue;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `test` within [`LIMIT`].
async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test finishes within its time limit");
}

/// A test configuration with HS256 tokens signed by `secret`.
fn config_with_secret(secret: &str) -> HubConfig {
    let mut config = config();
    config.tokens = TokenConfig {
        secret: Some(secret.to_owned()),
        ..TokenConfig::default()
    };
    config
}

/// An HS256 token for `sub`, valid for 5 minutes, allowing every topic.
fn token(secret: &str, sub: &str) -> String {
    hs256(secret.as_bytes(), &claims(sub, now() + 300))
}

/// Asserts that nothing arrives on `ws` for `quiet`.
async fn assert_silent(ws: &mut Client, quiet: Duration) {
    if let Ok(message) = tokio::time::timeout(quiet, ws.recv()).await {
        panic!("expected nothing, got {message:?}");
    }
}

/// The client id of the only presence entry of `topic`, checking its user.
async fn only_client(hub: &TestHub, topic: &str, user: Value) -> String {
    let answer = post(
        hub.addr,
        "/api/presence",
        &json!({ "topic": topic }).to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let presence = answer.json();
    let clients = presence["clients"].as_array().expect("a client list");
    assert_eq!(clients.len(), 1, "{presence}");
    assert_eq!(clients[0]["user"], user, "{presence}");
    clients[0]["client"]
        .as_str()
        .expect("a client id")
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// 1. Request ids.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_come_back_on_every_answer() {
    bounded(async {
        let hub = TestHub::start(config());
        let mut ws = connect(hub.ws_url()).await;

        // subscribe, with a number id.
        let subscribed = ask(&mut ws, r#"{"type":"subscribe","topic":"ids","id":1}"#).await;
        let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
        assert_eq!(
            subscribed,
            json!({"type":"subscribed","topic":"ids","offset":0,"epoch":epoch,"recovered":false,"id":1})
        );

        // subscribe with presence, with a string id: the answer has it, the join event not.
        let subscribed = ask(
            &mut ws,
            r#"{"type":"subscribe","topic":"room","presence":true,"id":"sub-2"}"#,
        )
        .await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        assert_eq!(subscribed["id"], "sub-2", "{subscribed}");
        let join = recv_json(&mut ws).await;
        assert_eq!(join["type"], "join", "{join}");
        assert!(join.get("id").is_none(), "an event carries no id: {join}");
        let client = join["client"].as_str().expect("a client id").to_owned();

        // presence.
        let presence = ask(&mut ws, r#"{"type":"presence","topic":"room","id":3}"#).await;
        assert_eq!(
            presence,
            json!({"type":"presence","topic":"room","clients":[{"client":client,"user":null}],"id":3})
        );

        // publish with an id: the message (no id) and the acknowledgement, in either order.
        send(
            &mut ws,
            r#"{"type":"publish","topic":"ids","data":{"n":1},"id":"pub-4"}"#,
        )
        .await;
        let mut two = vec![recv_json(&mut ws).await, recv_json(&mut ws).await];
        two.sort_by_key(|m| m["type"].as_str().unwrap_or_default().to_owned());
        assert_eq!(
            two,
            [
                json!({"type":"message","topic":"ids","offset":1,"data":{"n":1}}),
                json!({"type":"published","topic":"ids","offset":1,"epoch":epoch,"id":"pub-4"}),
            ]
        );

        // publish without an id: only the message; the next answer is the marker's.
        send(&mut ws, r#"{"type":"publish","topic":"ids","data":{"n":2}}"#).await;
        send(&mut ws, r#"{"type":"presence","topic":"room","id":"marker"}"#).await;
        let message = recv_json(&mut ws).await;
        assert_eq!(
            message,
            json!({"type":"message","topic":"ids","offset":2,"data":{"n":2}})
        );
        let marker = recv_json(&mut ws).await;
        assert_eq!(
            (&marker["type"], &marker["id"]),
            (&json!("presence"), &json!("marker")),
            "no `published` for a publish without id: {marker}"
        );

        // publish with id 0 to a topic the client does not subscribe to.
        let published = ask(
            &mut ws,
            r#"{"type":"publish","topic":"elsewhere","data":null,"id":0}"#,
        )
        .await;
        assert_eq!(published["type"], "published", "{published}");
        assert_eq!(published["topic"], "elsewhere", "{published}");
        assert_eq!(published["offset"], 1, "{published}");
        assert_eq!(published["id"], 0, "{published}");

        // unsubscribe.
        let unsubscribed = ask(&mut ws, r#"{"type":"unsubscribe","topic":"ids","id":5}"#).await;
        assert_eq!(
            unsubscribed,
            json!({"type":"unsubscribed","topic":"ids","id":5})
        );

        // errors carry the id.
        let error = ask(&mut ws, r#"{"type":"unsubscribe","topic":"ids","id":6}"#).await;
        assert_eq!(
            (&error["type"], &error["code"], &error["topic"], &error["id"]),
            (
                &json!("error"),
                &json!("not_subscribed"),
                &json!("ids"),
                &json!(6)
            ),
            "{error}"
        );
        let error = ask(&mut ws, r#"{"type":"subscribe","topic":"a b","id":7}"#).await;
        assert_eq!(
            (&error["code"], &error["id"]),
            (&json!("invalid_topic"), &json!(7)),
            "{error}"
        );
        let error = ask(&mut ws, r#"{"type":"dance","id":"d-8"}"#).await;
        assert_eq!(
            (&error["code"], &error["id"]),
            (&json!("unknown_type"), &json!("d-8")),
            "{error}"
        );
        let error = ask(&mut ws, r#"{"type":"publish","topic":"ids","id":-9.5}"#).await;
        assert_eq!(
            (&error["code"], &error["id"]),
            (&json!("bad_request"), &json!(-9.5)),
            "{error}"
        );

        // An array is not a request, whatever it holds.
        let error = ask(&mut ws, r#"["subscribe","arr"]"#).await;
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["code"], "bad_json", "{error}");
        assert!(error.get("id").is_none(), "{error}");

        // An id that is an object: bad_request without id, and nothing subscribed.
        let error = ask(&mut ws, r#"{"type":"subscribe","topic":"obj","id":{"a":1}}"#).await;
        assert_eq!(error["code"], "bad_request", "{error}");
        assert!(error.get("id").is_none(), "{error}");
        let subscribed = ask(&mut ws, r#"{"type":"subscribe","topic":"obj","id":10}"#).await;
        assert_eq!(
            (&subscribed["type"], &subscribed["id"]),
            (&json!("subscribed"), &json!(10)),
            "the refused request did not subscribe: {subscribed}"
        );
        // An id that is an array or true: refused the same way.
        for bad in ["[1]", "true"] {
            let error = ask(
                &mut ws,
                &format!(r#"{{"type":"presence","topic":"room","id":{bad}}}"#),
            )
            .await;
            assert_eq!(error["code"], "bad_request", "{bad}: {error}");
            assert!(error.get("id").is_none(), "{bad}: {error}");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 2. The server API.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_publish_and_broadcast_reach_subscribers() {
    bounded(async {
        let hub = TestHub::start(config());
        let mut ws = connect(hub.ws_url()).await;
        let news = subscribe(&mut ws, "news", false).await;

        let answer = post(
            hub.addr,
            "/api/publish",
            r#"{"topic":"news","data":{"headline":"up"}}"#,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json(), json!({"offset":1,"epoch":news["epoch"]}));
        assert_eq!(
            recv_json(&mut ws).await,
            json!({"type":"message","topic":"news","offset":1,"data":{"headline":"up"}})
        );

        let b1 = subscribe(&mut ws, "b1", false).await;
        let b2 = subscribe(&mut ws, "b2", false).await;
        let answer = post(
            hub.addr,
            "/api/broadcast",
            r#"{"topics":["b1","b2","not valid!"],"data":[1,2,3]}"#,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let results = answer.json()["results"].clone();
        let results = results.as_array().expect("a result list");
        assert_eq!(results.len(), 3, "{results:?}");
        assert_eq!(
            results[0],
            json!({"topic":"b1","offset":1,"epoch":b1["epoch"]})
        );
        assert_eq!(
            results[1],
            json!({"topic":"b2","offset":1,"epoch":b2["epoch"]})
        );
        assert_eq!(results[2]["topic"], "not valid!");
        assert!(results[2].get("offset").is_none(), "{}", results[2]);
        let reason = results[2]["error"].as_str().expect("an error message");
        assert!(reason.contains("invalid topic"), "{reason}");
        let mut got = vec![recv_json(&mut ws).await, recv_json(&mut ws).await];
        got.sort_by_key(|m| m["topic"].as_str().unwrap_or_default().to_owned());
        assert_eq!(
            got,
            [
                json!({"type":"message","topic":"b1","offset":1,"data":[1,2,3]}),
                json!({"type":"message","topic":"b2","offset":1,"data":[1,2,3]}),
            ]
        );
        assert_silent(&mut ws, Duration::from_millis(200)).await;
    })
    .await;
}

#[derive(serde::Deserialize)]
struct History {
    topic: String,
    epoch: String,
    offset: u64,
    messages: Vec<HistoryMessage>,
}

#[derive(serde::Deserialize)]
struct HistoryMessage {
    offset: u64,
    data: Box<RawValue>,
}

async fn history(hub: &TestHub, body: Value) -> History {
    let answer = post(hub.addr, "/api/history", &body.to_string()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("a history answer ({e}): {}", answer.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_history_returns_the_data_exactly_as_published() {
    bounded(async {
        let hub = TestHub::start(config());
        let mut ws = connect(hub.ws_url()).await;
        subscribe(&mut ws, "hist", false).await;
        // Whitespace, escapes, a number too large for u64 and f64: kept byte for byte.
        let raws = [
            r#"{"n": 1,  "text": "caf\u00e9 \"quoted\""}"#,
            r#"[1, 2.50, null, true]"#,
            r#""plain""#,
            r#"123456789012345678901234567890"#,
            r#"{"nested": {"deep": [{}, []]}}"#,
        ];
        let mut epoch = String::new();
        for (n, raw) in raws.iter().enumerate() {
            let body = format!(r#"{{"topic":"hist","data":{raw}}}"#);
            let answer = post(hub.addr, "/api/publish", &body).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let published = answer.json();
            assert_eq!(published["offset"], n + 1, "{published}");
            epoch = published["epoch"].as_str().expect("an epoch").to_owned();
            // The subscriber gets it exactly as written, too.
            assert_eq!(
                recv_text(&mut ws).await,
                format!(
                    r#"{{"type":"message","topic":"hist","offset":{},"data":{raw}}}"#,
                    n + 1
                )
            );
        }

        let all = history(&hub, json!({"topic":"hist"})).await;
        assert_eq!(
            (all.topic.as_str(), all.epoch.as_str(), all.offset),
            ("hist", epoch.as_str(), 5)
        );
        let offsets: Vec<u64> = all.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [1, 2, 3, 4, 5]);
        for (message, raw) in all.messages.iter().zip(raws) {
            assert_eq!(message.data.get(), raw, "offset {}", message.offset);
        }

        // since 2, limit 2: the two oldest after 2.
        let page = history(&hub, json!({"topic":"hist","since":2,"limit":2})).await;
        assert_eq!(page.offset, 5);
        let got: Vec<(u64, &str)> = page
            .messages
            .iter()
            .map(|m| (m.offset, m.data.get()))
            .collect();
        assert_eq!(got, [(3, raws[2]), (4, raws[3])]);

        let none = history(&hub, json!({"topic":"hist","since":5})).await;
        assert!(none.messages.is_empty());
        let empty = history(&hub, json!({"topic":"never-used"})).await;
        assert_eq!((empty.offset, empty.messages.len()), (0, 0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_presence_and_disconnect_by_client_and_by_user() {
    bounded(async {
        let secret = "api-secret";
        let hub = TestHub::start(config_with_secret(secret));
        let mut ann = connect_with_token(&hub.ws_url(), &token(secret, "ann")).await;
        let mut bob1 = connect_with_token(&hub.ws_url(), &token(secret, "bob")).await;
        let mut bob2 = connect_with_token(&hub.ws_url(), &token(secret, "bob")).await;
        let mut cy = connect_with_token(&hub.ws_url(), &token(secret, "cy")).await;
        subscribe(&mut ann, "room", true).await;
        for ws in [&mut bob1, &mut bob2, &mut cy] {
            subscribe(ws, "lobby", false).await;
        }

        // /api/presence lists the presence subscriber with its user.
        let ann_id = only_client(&hub, "room", json!("ann")).await;

        // Disconnect by client id, with a code and a reason of our own.
        let answer = post(
            hub.addr,
            "/api/disconnect",
            &json!({"client": ann_id, "code": 4100, "reason": "bye ann"}).to_string(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json(), json!({"nodes":1}));
        let (frame, _) = recv_close(&mut ann, Duration::from_secs(10)).await;
        let frame = frame.expect("a close frame with a code");
        assert_eq!(frame.code, CloseCode(4100));
        assert_eq!(frame.reason.as_str(), "bye ann");
        // It left the presence.
        let started = Instant::now();
        loop {
            let answer = post(hub.addr, "/api/presence", r#"{"topic":"room"}"#).await;
            if answer.json()["clients"] == json!([]) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "still present: {}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Disconnect by user: both of bob's connections, not cy's.
        let answer = post(
            hub.addr,
            "/api/disconnect",
            r#"{"user":"bob","code":4100,"reason":"bye bob"}"#,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        for bob in [&mut bob1, &mut bob2] {
            let (frame, _) = recv_close(bob, Duration::from_secs(10)).await;
            let frame = frame.expect("a close frame with a code");
            assert_eq!(
                (frame.code, frame.reason.as_str()),
                (CloseCode(4100), "bye bob")
            );
        }
        let answer = post(
            hub.addr,
            "/api/publish",
            r#"{"topic":"lobby","data":"still"}"#,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            recv_json(&mut cy).await,
            json!({"type":"message","topic":"lobby","offset":1,"data":"still"})
        );

        // Without a code: 4002 and the default reason.
        let answer = post(hub.addr, "/api/disconnect", r#"{"user":"cy"}"#).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let (frame, _) = recv_close(&mut cy, Duration::from_secs(10)).await;
        let frame = frame.expect("a close frame with a code");
        assert_eq!(
            (frame.code, frame.reason.as_str()),
            (CloseCode(4002), "disconnected by the server")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_unsubscribe_removes_a_user_from_a_topic() {
    bounded(async {
        let secret = "api-secret";
        let hub = TestHub::start(config_with_secret(secret));
        let mut ann = connect_with_token(&hub.ws_url(), &token(secret, "ann")).await;
        let mut bob = connect_with_token(&hub.ws_url(), &token(secret, "bob")).await;
        subscribe(&mut ann, "feed", false).await;
        subscribe(&mut ann, "other", false).await;
        subscribe(&mut bob, "feed", false).await;

        let answer = post(
            hub.addr,
            "/api/unsubscribe",
            r#"{"user":"ann","topic":"feed"}"#,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json(), json!({"nodes":1}));
        assert_eq!(
            recv_json(&mut ann).await,
            json!({"type":"unsubscribed","topic":"feed"})
        );

        // ann gets nothing more of feed; bob still does.
        let answer = post(hub.addr, "/api/publish", r#"{"topic":"feed","data":1}"#).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let answer = post(hub.addr, "/api/publish", r#"{"topic":"other","data":2}"#).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            recv_json(&mut ann).await,
            json!({"type":"message","topic":"other","offset":1,"data":2}),
            "the feed message must not reach ann"
        );
        assert_eq!(
            recv_json(&mut bob).await,
            json!({"type":"message","topic":"feed","offset":1,"data":1})
        );

        // ann may subscribe again.
        let subscribed = ask(&mut ann, r#"{"type":"subscribe","topic":"feed","id":1}"#).await;
        assert_eq!(
            (
                &subscribed["type"],
                &subscribed["offset"],
                &subscribed["id"]
            ),
            (&json!("subscribed"), &json!(1), &json!(1)),
            "{subscribed}"
        );
        let answer = post(hub.addr, "/api/publish", r#"{"topic":"feed","data":3}"#).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            recv_json(&mut ann).await,
            json!({"type":"message","topic":"feed","offset":2,"data":3})
        );
        assert_silent(&mut ann, Duration::from_millis(200)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_info_and_the_api_key() {
    bounded(async {
        let key = "s3cret-api-key";
        let mut config = config();
        config.api_key = Some(key.to_owned());
        let hub = TestHub::start(config);
        let mut first = connect(hub.ws_url()).await;
        let mut second = connect(hub.ws_url()).await;
        subscribe(&mut first, "a", false).await;
        subscribe(&mut second, "b", false).await;

        for (given, status) in [(None, 401), (Some("wrong"), 401), (Some(key), 200)] {
            for method in ["GET", "POST"] {
                let answer = http(hub.addr, method, "/api/info", given, "").await;
                assert_eq!(
                    answer.status, status,
                    "{method} with {given:?}: {}",
                    answer.body
                );
            }
        }
        let info = http(hub.addr, "GET", "/api/info", Some(key), "")
            .await
            .json();
        let node = hub.hub.registry().node().to_owned();
        assert_eq!(info["node"], node.as_str(), "{info}");
        let nodes = info["nodes"].as_array().expect("a node list");
        assert_eq!(nodes.len(), 1, "{info}");
        assert_eq!(nodes[0]["node"], node.as_str(), "{info}");
        assert_eq!(nodes[0]["connections"], 2, "{info}");
        assert_eq!(nodes[0]["subscriptions"], 2, "{info}");

        // A wrong key publishes nothing; the right one does.
        let body = r#"{"topic":"a","data":"x"}"#;
        assert_eq!(
            http(hub.addr, "POST", "/api/publish", None, body)
                .await
                .status,
            401
        );
        assert_eq!(
            http(hub.addr, "POST", "/api/publish", Some("wrong"), body)
                .await
                .status,
            401
        );
        let answer = http(hub.addr, "POST", "/api/publish", Some(key), body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["offset"], 1, "only the keyed publish counted");
        assert_eq!(
            recv_json(&mut first).await,
            json!({"type":"message","topic":"a","offset":1,"data":"x"})
        );

        // The connection count follows.
        drop(second);
        let started = Instant::now();
        loop {
            let info = http(hub.addr, "GET", "/api/info", Some(key), "")
                .await
                .json();
            if info["nodes"][0]["connections"] == 1 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{info}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_bad_bodies_are_400_and_unknown_routes_404() {
    bounded(async {
        let hub = TestHub::start(config());
        let bad = [
            ("/api/publish", "not json"),
            ("/api/publish", r#"{"topic":"x"}"#),
            ("/api/publish", r#"{"topic":"a b","data":1}"#),
            ("/api/publish", r#"{"topic":7,"data":1}"#),
            ("/api/broadcast", r#"{"data":1}"#),
            ("/api/broadcast", r#"{"topics":"x","data":1}"#),
            ("/api/history", r#"{"topic":7}"#),
            ("/api/history", r#"{"topic":"x","since":-1}"#),
            ("/api/presence", "{}"),
            ("/api/presence", r#"{"topic":"a b"}"#),
            ("/api/disconnect", "{}"),
            ("/api/disconnect", r#"{"user":"a","code":1005}"#),
            ("/api/disconnect", r#"{"user":"a","code":5000}"#),
            ("/api/unsubscribe", r#"{"user":"a"}"#),
            ("/api/unsubscribe", r#"{"user":"a","topic":"a b"}"#),
            ("/api/publish", ""),
        ];
        for (path, body) in bad {
            let answer = post(hub.addr, path, body).await;
            assert_eq!(answer.status, 400, "{path} {body}: {}", answer.body);
            assert!(
                answer.json()["error"].is_string(),
                "{path} {body}: {}",
                answer.body
            );
        }
        let long_reason = json!({"user":"a","reason":"r".repeat(124)}).to_string();
        let answer = post(hub.addr, "/api/disconnect", &long_reason).await;
        assert_eq!(answer.status, 400, "{}", answer.body);

        for method in ["GET", "POST", "PUT"] {
            let answer = http(hub.addr, method, "/api/nope", None, "{}").await;
            assert_eq!(answer.status, 404, "{method}: {}", answer.body);
        }
        let answer = http(hub.addr, "GET", "/api/publish", None, "").await;
        assert_eq!(answer.status, 405, "{}", answer.body);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 3. Tokens.

/// Connects with `token`, subscribes to `room` with presence and checks that the presence
/// lists `sub` as the user.
async fn assert_accepted_as(hub: &TestHub, token: &str, sub: &str) {
    let room = format!("room-{sub}");
    let mut ws = connect_with_token(&hub.ws_url(), token).await;
    subscribe(&mut ws, &room, true).await;
    let join = recv_json(&mut ws).await;
    assert_eq!(join["type"], "join", "{join}");
    assert_eq!(join["user"], sub, "{join}");
    let presence = ask(
        &mut ws,
        &json!({"type": "presence", "topic": room}).to_string(),
    )
    .await;
    let users: Vec<&Value> = presence["clients"]
        .as_array()
        .expect("a client list")
        .iter()
        .map(|c| &c["user"])
        .collect();
    assert_eq!(users, [&json!(sub)], "{presence}");
}

/// Asserts that `token` is refused with 401 (and a body containing `reason`).
async fn assert_refused(hub: &TestHub, token: &str, reason: &str, what: &str) {
    let (status, body) = refused(format!("{}?token={token}", hub.ws_url())).await;
    assert_eq!(status, 401, "{what}: {body}");
    assert!(body.contains(reason), "{what}: {body:?} lacks {reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_hs256_rs256_es256_and_what_is_refused() {
    bounded(async {
        let secret = "hs-secret";
        let mut config = config_with_secret(secret);
        config.tokens.public_keys = vec![rsa_public_pem(), ec_public_pem()];
        let hub = TestHub::start(config);
        let later = now() + 300;

        assert_accepted_as(
            &hub,
            &hs256(secret.as_bytes(), &claims("hana", later)),
            "hana",
        )
        .await;
        let rs = sign(Algorithm::RS256, None, &rsa_key(), &claims("rita", later));
        assert_accepted_as(&hub, &rs, "rita").await;
        let es = sign(Algorithm::ES256, None, &ec_key(), &claims("elle", later));
        assert_accepted_as(&hub, &es, "elle").await;

        // Expired.
        let past = now() - 5;
        let expired = hs256(secret.as_bytes(), &claims("old", past));
        assert_refused(&hub, &expired, "token expired", "expired HS256").await;
        let expired = sign(Algorithm::RS256, None, &rsa_key(), &claims("old", past));
        assert_refused(&hub, &expired, "token expired", "expired RS256").await;
        let expired = sign(Algorithm::ES256, None, &ec_key(), &claims("old", past));
        assert_refused(&hub, &expired, "token expired", "expired ES256").await;

        // Not valid yet.
        let mut early = claims("early", later);
        early["nbf"] = json!(now() + 60);
        let early = sign(Algorithm::RS256, None, &rsa_key(), &early);
        assert_refused(&hub, &early, "not valid yet", "nbf in the future").await;

        // Signed by another key.
        let forged = hs256(b"not-the-secret", &claims("eve", later));
        assert_refused(&hub, &forged, "signature", "HS256, another secret").await;
        let forged = sign(
            Algorithm::RS256,
            None,
            &other_rsa_key(),
            &claims("eve", later),
        );
        assert_refused(&hub, &forged, "signature", "RS256, another key").await;
        let forged = sign(
            Algorithm::ES256,
            None,
            &other_ec_key(),
            &claims("eve", later),
        );
        assert_refused(&hub, &forged, "", "ES256, another key").await;
        let forged = tampered(&rs, &claims("eve", later));
        assert_refused(&hub, &forged, "", "RS256, claims changed").await;

        // alg none, with and without a signature part.
        for signature in ["", "x"] {
            let none = alg_none(&claims("eve", later), signature);
            assert_refused(&hub, &none, "", "alg none").await;
        }

        // HS256 whose secret is a public key's PEM text (algorithm confusion).
        for pem in [rsa_public_pem(), ec_public_pem()] {
            let confused = hs256(pem.as_bytes(), &claims("eve", later));
            assert_refused(&hub, &confused, "", "HS256 with a public key as the secret").await;
        }
        // An ES256 signature under an RS256 header, and the reverse.
        let es = sign(Algorithm::ES256, None, &ec_key(), &claims("eve", later));
        let rs = sign(Algorithm::RS256, None, &rsa_key(), &claims("eve", later));
        let header = |token: &str| token.split('.').next().expect("a header").to_owned();
        let rs_header_es_signature = es.replacen(&header(&es), &header(&rs), 1);
        assert_refused(
            &hub,
            &rs_header_es_signature,
            "",
            "RS256 header, ES256 signature",
        )
        .await;
        let es_header_rs_signature = rs.replacen(&header(&rs), &header(&es), 1);
        assert_refused(
            &hub,
            &es_header_rs_signature,
            "",
            "ES256 header, RS256 signature",
        )
        .await;
        // Missing.
        let (status, _) = refused(hub.ws_url()).await;
        assert_eq!(status, 401, "no token");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_hs256_made_with_the_public_key_are_refused() {
    bounded(async {
        let later = now() + 300;
        let confused = hs256(rsa_public_pem().as_bytes(), &claims("eve", later));
        // A hub with that public key and another HS secret.
        let mut config = config_with_secret("a-different-secret");
        config.tokens.public_keys = vec![rsa_public_pem()];
        let hub = TestHub::start(config);
        assert_refused(&hub, &confused, "", "HS256 with the RSA PEM as secret").await;
        let rs = sign(Algorithm::RS256, None, &rsa_key(), &claims("rita", later));
        assert_accepted_as(&hub, &rs, "rita").await;
        drop(hub);

        // A hub with only that public key: no HS256 at all.
        let mut config = common::config();
        config.tokens.public_keys = vec![rsa_public_pem()];
        let hub = TestHub::start(config);
        assert_refused(&hub, &confused, "", "HS256 without a secret").await;
        assert_accepted_as(&hub, &rs, "rita").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_jwks_by_kid() {
    bounded(async {
        let rsa = rsa_key();
        let ec = ec_key();
        let backend = Backend::start(jwks(&[
            (&rsa, Algorithm::RS256, "rsa-1"),
            (&ec, Algorithm::ES256, "ec-1"),
        ]))
        .await;
        let mut config = config();
        config.tokens.jwks_url = Some(backend.url("/jwks"));
        let hub = TestHub::start(config);
        let later = now() + 300;

        let rs = sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &rsa,
            &claims("rita", later),
        );
        assert_accepted_as(&hub, &rs, "rita").await;
        let es = sign(Algorithm::ES256, Some("ec-1"), &ec, &claims("elle", later));
        assert_accepted_as(&hub, &es, "elle").await;

        let unknown = sign(Algorithm::RS256, Some("nope"), &rsa, &claims("eve", later));
        assert_refused(&hub, &unknown, "no key", "unknown kid").await;
        let wrong_alg = sign(Algorithm::RS256, Some("ec-1"), &rsa, &claims("eve", later));
        assert_refused(&hub, &wrong_alg, "", "RS256 naming the EC key").await;
        let no_kid = sign(Algorithm::RS256, None, &rsa, &claims("eve", later));
        assert_refused(&hub, &no_kid, "", "RS256 without kid and no PEM key").await;
        let forged = sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &other_rsa_key(),
            &claims("eve", later),
        );
        assert_refused(&hub, &forged, "signature", "RS256 by another key").await;
        let forged = sign(
            Algorithm::ES256,
            Some("ec-1"),
            &other_ec_key(),
            &claims("eve", later),
        );
        assert_refused(&hub, &forged, "", "ES256 by another key").await;
        let expired = sign(
            Algorithm::ES256,
            Some("ec-1"),
            &ec,
            &claims("old", now() - 5),
        );
        assert_refused(&hub, &expired, "token expired", "expired ES256").await;
        let hs = hs256(b"anything", &claims("eve", later));
        assert_refused(&hub, &hs, "", "HS256 without a secret").await;

        // Fetched once: the unknown kid came within the refetch pause.
        let fetches = backend.requests("/jwks");
        assert_eq!(fetches.len(), 1, "{fetches:?}");
        assert_eq!(fetches[0].method, "GET");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 4. Token refresh and expiry.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_expiry_and_expired_ones_closed_with_4001() {
    bounded(async {
        let secret = "refresh-secret";
        let hub = TestHub::start(config_with_secret(secret));

        // A refresh naming another user is refused; the connection stays.
        let mut carl = connect_with_token(&hub.ws_url(), &token(secret, "carl")).await;
        let other = token(secret, "mallory");
        let error = ask(
            &mut carl,
            &format!(r#"{{"type":"refresh","token":"{other}","id":"r1"}}"#),
        )
        .await;
        assert_eq!(
            (&error["type"], &error["code"], &error["id"]),
            (&json!("error"), &json!("bad_token"), &json!("r1")),
            "{error}"
        );
        let error = ask(&mut carl, r#"{"type":"refresh","token":"garbage","id":2}"#).await;
        assert_eq!(
            (&error["code"], &error["id"]),
            (&json!("bad_token"), &json!(2)),
            "{error}"
        );
        subscribe(&mut carl, "still-here", false).await;

        let exp = now() + 12;
        let mut ann = connect_with_token(
            &hub.ws_url(),
            &hs256(secret.as_bytes(), &claims("ann", exp)),
        )
        .await;
        let mut bob = connect_with_token(
            &hub.ws_url(),
            &hs256(secret.as_bytes(), &claims("bob", exp)),
        )
        .await;
        subscribe(&mut ann, "t", false).await;
        subscribe(&mut bob, "t", false).await;

        let refreshing = async {
            // The server asks about 10 s before exp.
            let ask_for = tokio::time::timeout(Duration::from_secs(14), recv_json(&mut ann))
                .await
                .expect("a refresh request");
            let asked_at = now_f64();
            assert_eq!(ask_for, json!({"type":"refresh","expires":exp}));
            assert!(
                asked_at >= (exp - 11) as f64 && asked_at <= (exp - 8) as f64,
                "asked at {asked_at}, exp {exp}"
            );
            let new_exp = now() + 120;
            let new_token = hs256(secret.as_bytes(), &claims("ann", new_exp));
            let refreshed = ask(
                &mut ann,
                &format!(r#"{{"type":"refresh","token":"{new_token}","id":1}}"#),
            )
            .await;
            assert_eq!(
                refreshed,
                json!({"type":"refreshed","expires":new_exp,"id":1})
            );
        };
        let expiring = async {
            let (frame, before) = recv_close(&mut bob, Duration::from_secs(30)).await;
            let closed_at = now_f64();
            let frame = frame.expect("a close frame with a code");
            assert_eq!(frame.code, CloseCode(4001), "{frame:?}");
            assert_eq!(frame.reason.as_str(), "token expired");
            assert!(
                closed_at >= (exp - 1) as f64 && closed_at <= (exp + 10) as f64,
                "closed at {closed_at}, exp {exp}"
            );
            assert_eq!(
                before,
                [json!({"type":"refresh","expires":exp})],
                "asked to refresh first"
            );
        };
        tokio::join!(refreshing, expiring);

        // Past the first token's expiry, ann is still connected and receives.
        while now() <= exp + 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let topic = fullduplex_hub::Topic::new("t").expect("topic");
        hub.hub.publish(&topic, "\"after\"").await.expect("publish");
        assert_eq!(
            recv_json(&mut ann).await,
            json!({"type":"message","topic":"t","offset":1,"data":"after"})
        );
        // carl, refused twice, is still there too.
        let still = fullduplex_hub::Topic::new("still-here").expect("topic");
        hub.hub.publish(&still, "1").await.expect("publish");
        assert_eq!(recv_json(&mut carl).await["topic"], "still-here");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 5. Hooks.

fn hooks(connect: Option<String>, subscribe: Option<String>, timeout: Duration) -> HookConfig {
    HookConfig {
        connect,
        subscribe,
        timeout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_hook_allows_and_names_the_user() {
    bounded(async {
        let backend = Backend::start(String::new()).await;
        let mut config = config();
        config.hooks = hooks(Some(backend.url("/allow")), None, Duration::from_secs(2));
        let hub = TestHub::start(config);

        let request = ClientRequest::new(format!("{}?room=5", hub.ws_url()))
            .header("Cookie", "session=abc; theme=dark")
            .header("X-Custom", "42");
        let mut ws = connect(request).await;
        subscribe(&mut ws, "room", true).await;
        let join = recv_json(&mut ws).await;
        assert_eq!(join["user"], "from-hook", "{join}");
        only_client(&hub, "room", json!("from-hook")).await;

        let asked = backend.requests("/allow");
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(asked[0].method, "POST");
        assert_eq!(asked[0].header("content-type"), Some("application/json"));
        let body = asked[0].json();
        assert_eq!(body["event"], "connect", "{body}");
        assert_eq!(body["user"], Value::Null, "{body}");
        assert_eq!(body["path"], "/ws", "{body}");
        assert_eq!(body["query"], "room=5", "{body}");
        assert_eq!(
            body["headers"]["cookie"], "session=abc; theme=dark",
            "{body}"
        );
        assert_eq!(body["headers"]["x-custom"], "42", "{body}");
        assert_eq!(body["headers"]["upgrade"], "websocket", "{body}");
        drop(ws);
        drop(hub);

        // With tokens: the hook is told the token's user; without a user in the answer, the
        // token's stays.
        let secret = "hook-secret";
        let mut config = config_with_secret(secret);
        config.hooks = hooks(
            Some(backend.url("/allow-plain")),
            None,
            Duration::from_secs(2),
        );
        let hub = TestHub::start(config);
        let request = ClientRequest::new(hub.ws_url()).header(
            "Cookie",
            &format!("session=xyz; token={}", token(secret, "ann")),
        );
        let mut ws = connect(request).await;
        subscribe(&mut ws, "room", true).await;
        only_client(&hub, "room", json!("ann")).await;
        let asked = backend.requests("/allow-plain");
        assert_eq!(asked.len(), 1, "{asked:?}");
        let body = asked[0].json();
        assert_eq!(body["user"], "ann", "{body}");
        let cookie = body["headers"]["cookie"].as_str().expect("the cookie");
        assert!(cookie.starts_with("session=xyz; token="), "{cookie}");
        drop(ws);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_hook_denies_by_default() {
    bounded(async {
        let backend = Backend::start(String::new()).await;
        let timeout = Duration::from_millis(300);
        let cases = [
            ("/deny", backend.url("/deny"), "no"),
            ("/slow", backend.url("/slow"), ""),
            ("/fail", backend.url("/fail"), ""),
            ("/missing", backend.url("/missing"), ""),
            ("unreachable", unreachable_url().await, ""),
        ];
        for (what, url, reason) in cases {
            let mut config = config();
            config.hooks = hooks(Some(url), None, timeout);
            let hub = TestHub::start(config);
            let started = Instant::now();
            let (status, body) = refused(hub.ws_url()).await;
            assert_eq!(status, 403, "{what}: {body}");
            assert!(body.contains(reason), "{what}: {body:?}");
            assert!(
                started.elapsed() < SLOW,
                "{what}: answered after {:?}, past the hook timeout",
                started.elapsed()
            );
        }
        for path in ["/deny", "/slow", "/fail", "/missing"] {
            assert_eq!(backend.requests(path).len(), 1, "{path} was asked once");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_hook_allows_and_denies_with_the_reason() {
    bounded(async {
        let backend = Backend::start(String::new()).await;
        let secret = "hook-secret";
        let mut config = config_with_secret(secret);
        config.hooks = hooks(None, Some(backend.url("/topics")), Duration::from_secs(2));
        let hub = TestHub::start(config);
        let request =
            ClientRequest::new(format!("{}?token={}", hub.ws_url(), token(secret, "ann")))
                .header("Cookie", "session=xyz");
        let mut ws = connect(request).await;

        let subscribed = ask(
            &mut ws,
            r#"{"type":"subscribe","topic":"open","presence":true,"id":1}"#,
        )
        .await;
        assert_eq!(
            (&subscribed["type"], &subscribed["id"]),
            (&json!("subscribed"), &json!(1)),
            "{subscribed}"
        );
        assert_eq!(recv_json(&mut ws).await["type"], "join");
        let client = only_client(&hub, "open", json!("ann")).await;

        let error = ask(
            &mut ws,
            r#"{"type":"subscribe","topic":"secret.plans","id":2}"#,
        )
        .await;
        assert_eq!(
            (
                &error["type"],
                &error["code"],
                &error["topic"],
                &error["id"]
            ),
            (
                &json!("error"),
                &json!("forbidden"),
                &json!("secret.plans"),
                &json!(2)
            ),
            "{error}"
        );
        let message = error["message"].as_str().expect("a message");
        assert!(message.contains("no secrets for you"), "{message}");
        // Not subscribed: a publish to it does not arrive, a new subscribe is asked again.
        let topic = fullduplex_hub::Topic::new("secret.plans").expect("topic");
        hub.hub.publish(&topic, "1").await.expect("publish");
        assert_silent(&mut ws, Duration::from_millis(200)).await;

        let asked = backend.requests("/topics");
        assert_eq!(asked.len(), 2, "{asked:?}");
        let open = asked[0].json();
        assert_eq!(open["topic"], "open", "{open}");
        let denied = asked[1].json();
        assert_eq!(denied["event"], "subscribe", "{denied}");
        assert_eq!(denied["topic"], "secret.plans", "{denied}");
        assert_eq!(denied["client"], client.as_str(), "{denied}");
        assert_eq!(denied["user"], "ann", "{denied}");
        assert_eq!(denied["headers"]["cookie"], "session=xyz", "{denied}");
        drop(ws);
        drop(hub);

        // A failing or slow subscribe hook denies too.
        for path in ["/fail", "/slow"] {
            let mut config = common::config();
            config.hooks = hooks(None, Some(backend.url(path)), Duration::from_millis(300));
            let hub = TestHub::start(config);
            let mut ws = connect(hub.ws_url()).await;
            let error = ask(&mut ws, r#"{"type":"subscribe","topic":"x","id":3}"#).await;
            assert_eq!(
                (&error["code"], &error["topic"], &error["id"]),
                (&json!("forbidden"), &json!("x"), &json!(3)),
                "{path}: {error}"
            );
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Combinations that fail today (see the report).

/// A token whose `exp` is far beyond any real date is accepted by the verifier, and the
/// connection must then work (not die when its expiry timer is set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_huge_exp_gives_a_working_connection() {
    bounded(async {
        let secret = "far-future";
        let hub = TestHub::start(config_with_secret(secret));
        let forever = hs256(secret.as_bytes(), &claims("ann", u64::MAX));
        let mut ws = connect_with_token(&hub.ws_url(), &forever).await;
        send(&mut ws, r#"{"type":"subscribe","topic":"x","id":1}"#).await;
        let answer = tokio::time::timeout(Duration::from_secs(5), ws.recv())
            .await
            .expect("an answer within 5 s");
        match answer {
            Some(Ok(message)) => {
                let text = message.as_text().expect("a text answer").to_owned();
                let subscribed: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
            }
            other => panic!("the connection died instead of answering: {other:?}"),
        }
    })
    .await;
}

/// A connect hook that names the user (`"user":"from-hook"`): the client's refresh with a
/// new token of its own `sub` must be accepted, else such a client is always closed with
/// 4001 at its first token's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_works_when_the_connect_hook_named_the_user() {
    bounded(async {
        let backend = Backend::start(String::new()).await;
        let secret = "hook-refresh";
        let mut config = config_with_secret(secret);
        config.hooks = hooks(Some(backend.url("/allow")), None, Duration::from_secs(2));
        let hub = TestHub::start(config);
        let mut ws = connect_with_token(&hub.ws_url(), &token(secret, "ann")).await;
        subscribe(&mut ws, "room", true).await;
        assert_eq!(recv_json(&mut ws).await["user"], "from-hook");
        let new_exp = now() + 600;
        let new_token = hs256(secret.as_bytes(), &claims("ann", new_exp));
        let answer = ask(
            &mut ws,
            &format!(r#"{{"type":"refresh","token":"{new_token}","id":1}}"#),
        )
        .await;
        assert_eq!(
            answer,
            json!({"type":"refreshed","expires":new_exp,"id":1}),
            "a refresh with the same token subject"
        );
        only_client(&hub, "room", json!("from-hook")).await;
    })
    .await;
}

/// A connect hook that restricts the grants (`"subscribe":["public.*"]`): a refresh must not
/// give the connection the token's wider grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_the_grants_the_connect_hook_gave() {
    bounded(async {
        let backend = Backend::start(String::new()).await;
        let secret = "hook-grants";
        let mut config = config_with_secret(secret);
        config.hooks = hooks(Some(backend.url("/restrict")), None, Duration::from_secs(2));
        let hub = TestHub::start(config);
        let mut ws = connect_with_token(&hub.ws_url(), &token(secret, "ann")).await;
        subscribe(&mut ws, "public.news", false).await;
        let error = ask(&mut ws, r#"{"type":"subscribe","topic":"private"}"#).await;
        assert_eq!(
            error["code"], "forbidden",
            "the hook's grants apply: {error}"
        );

        let new_token = hs256(secret.as_bytes(), &claims("ann", now() + 600));
        let answer = ask(
            &mut ws,
            &format!(r#"{{"type":"refresh","token":"{new_token}"}}"#),
        )
        .await;
        assert_eq!(answer["type"], "refreshed", "{answer}");
        let after = ask(&mut ws, r#"{"type":"subscribe","topic":"private"}"#).await;
        assert_eq!(
            (&after["type"], &after["code"]),
            (&json!("error"), &json!("forbidden")),
            "after a refresh the hook's restriction must still hold: {after}"
        );
    })
    .await;
}
