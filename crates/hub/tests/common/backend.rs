//! Helpers for the tests of tokens, hooks and the server API: a tiny HTTP/1.1 backend (a
//! JWKS and the hook answers, recording every request), an HTTP client for `/api/...`,
//! token makers, and WebSocket shorthands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fullduplex::CloseFrame;
use fullduplex::{MaybeTlsStream, Message, WebSocket};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A WebSocket client of the hub.
pub type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// How long `/slow` takes to answer.
pub const SLOW: Duration = Duration::from_secs(3);

/// How long a test waits for one message.
pub const MESSAGE_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The backend.

/// One request the backend received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`...
    pub method: String,
    /// The request target.
    pub path: String,
    /// The header lines, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the hub sent a JSON body")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 answering by path:
///
/// - `/jwks`: the JWKS it was started with;
/// - `/allow`: `{"allow":true,"user":"from-hook"}`;
/// - `/allow-plain`: `{"allow":true}`;
/// - `/restrict`: `{"allow":true,"subscribe":["public.*"],"publish":[]}`;
/// - `/deny`: `{"allow":false,"reason":"no"}`;
/// - `/topics`: denies topics starting with `secret` (reason `no secrets for you`), allows
///   the others;
/// - `/slow`: allows, after [`SLOW`];
/// - `/fail`: `500` (with a body that would allow);
/// - anything else: `404`.
///
/// Every request is recorded. Stopped when dropped.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Starts a backend that serves `jwks` at `/jwks`.
    pub async fn start(jwks: String) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the backend");
        let addr = listener.local_addr().expect("the backend's address");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let jwks = Arc::new(jwks);
        let task = tokio::spawn({
            let recorded = recorded.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, recorded.clone(), jwks.clone()));
                }
            }
        });
        Backend {
            addr,
            recorded,
            task,
        }
    }

    /// `http://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests received for `path` so far, in order.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.recorded
            .lock()
            .expect("the record lock")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads an HTTP/1.1 head and a `Content-Length` body: `(method, path, headers, body)`.
async fn read_request(
    stream: &mut TcpStream,
) -> Option<(String, String, Vec<(String, String)>, Vec<u8>)> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > 64 << 10 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some((method, path, headers, body))
}

async fn serve(mut stream: TcpStream, recorded: Arc<Mutex<Vec<Recorded>>>, jwks: Arc<String>) {
    let read = tokio::time::timeout(Duration::from_secs(10), read_request(&mut stream)).await;
    let Ok(Some((method, path, headers, body))) = read else {
        return;
    };
    let topic = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["topic"].as_str().map(str::to_owned));
    recorded.lock().expect("the record lock").push(Recorded {
        method,
        path: path.clone(),
        headers,
        body,
    });
    let (status, answer) = match path.as_str() {
        "/jwks" => ("200 OK", jwks.as_str().to_owned()),
        "/allow" => ("200 OK", r#"{"allow":true,"user":"from-hook"}"#.to_owned()),
        "/allow-plain" => ("200 OK", r#"{"allow":true}"#.to_owned()),
        "/restrict" => (
            "200 OK",
            r#"{"allow":true,"subscribe":["public.*"],"publish":[]}"#.to_owned(),
        ),
        "/deny" => ("200 OK", r#"{"allow":false,"reason":"no"}"#.to_owned()),
        "/topics" => match topic {
            Some(topic) if topic.starts_with("secret") => (
                "200 OK",
                r#"{"allow":false,"reason":"no secrets for you"}"#.to_owned(),
            ),
            _ => ("200 OK", r#"{"allow":true}"#.to_owned()),
        },
        "/slow" => {
            tokio::time::sleep(SLOW).await;
            ("200 OK", r#"{"allow":true}"#.to_owned())
        }
        "/fail" => ("500 Internal Server Error", r#"{"allow":true}"#.to_owned()),
        _ => ("404 Not Found", r#"{"error":"not found"}"#.to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A loopback URL where nothing listens (a port just freed).
pub async fn unreachable_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("its address");
    drop(listener);
    format!("http://{addr}/hook")
}

// ---------------------------------------------------------------------------------------
// The server API.

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

impl HttpAnswer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` with `body` (JSON text) to the hub at `addr`, with `Authorization:
/// Bearer KEY` when `key` is given; one connection per request.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> HttpAnswer {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect to the hub");
        let auth = key
            .map(|key| format!("authorization: Bearer {key}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n{auth}\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut response = Vec::new();
        tcp.read_to_end(&mut response)
            .await
            .expect("read the answer");
        response
    };
    let response = tokio::time::timeout(MESSAGE_WAIT, exchange)
        .await
        .expect("the hub answers within 10 s");
    let text = String::from_utf8(response).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    HttpAnswer {
        status,
        body: body.to_owned(),
    }
}

/// `POST path` with `body`, without an API key.
pub async fn post(addr: SocketAddr, path: &str, body: &str) -> HttpAnswer {
    http(addr, "POST", path, None, body).await
}

// ---------------------------------------------------------------------------------------
// Tokens.

fn key_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The RSA public key (PEM) the hub is given.
pub fn rsa_public_pem() -> String {
    key_file("rsa-public.pem")
}

/// The EC P-256 public key (PEM) the hub is given.
pub fn ec_public_pem() -> String {
    key_file("ec-public.pem")
}

/// The signing key of `rsa-private.pem`.
pub fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(key_file("rsa-private.pem").as_bytes()).expect("the RSA test key")
}

/// The signing key of `ec-private.pem`.
pub fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(key_file("ec-private.pem").as_bytes()).expect("the EC test key")
}

/// Another RSA 2048 key (PKCS#8), which the hub never knows: for forged tokens.
pub const OTHER_RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDCbht+XsGyGztq
GB+wmMMPxBJVolkIeMZpJGB8riOv1TAQXFTjDlZYEymcTOtDhzfoeV/xZYk+95m+
B9GcWC/saCj5U0H+pGWLzy1UP3hczRJvTqev0V5w0c6P+nwpSp/EIkgOsdsE5ldz
GNJjDiIwSUN+rJ3p9On6VBT/QfmsTHlejyRq4uYYguxiWqMZM+HglRJecRHKq7m4
gETNL9KXKGXjVL3dqeAoPchaGOHjj/7lAFLkxDc3tVxqJK4bUGFaN+uInwBLX1GX
RxtDna0rzYuYGl5xiB74KOry+Sb3kHW/pZXc5c4cHM/kDYGpC4FjhsyEre9PpbmT
aaosl46NAgMBAAECggEAKtUB1ol+Z0Orh5hP5uIIWsFJfrb4oS6mGwSKAv2D3Bj9
cSU+CBUg/V8fVBD35RT1Qo/2jGHfZdE6+8uSKDyfNhfOKvrl93h07GNUK5Kd6+e7
b2zm8QsRII5/0GUQlDId1yHsONyCkOZDjpYBxxOWgYeqSE4zrZYoM17xjzgUDhoZ
46YgBERpzN++1gA5MtNlKo1+wM7Z390bgan8SXPMmdMFV5YboO2Xy92QKE8SIvJz
NjBDvtxt9ufziQBPwQdCQYlgIzMoilyS229mu/QVC82JO77LsIu7dWoRUPkgKW+R
cpqJDlOuHnxhT38SGMzH00Rfb+v0tUE9ldzM1C5OywKBgQD4uEmJWU2WB4fpj7+5
+Ifekd6c6JQWU392NG2WYu5WRaEWpYSPWMUNner0JIoQUxAcs41bJrRJSZocNoQ/
XoZb4HhR4qIaa8tIxJoaemd8Rf5yYIEMSucCmPROpHH5Ol5y6dyj7iONbPj8CCpr
oDL1dW3Cz24zbcpa8LiynmkrJwKBgQDIHwPWFxlZlUZyR3bVCW7ZEBc5P1PsMd6H
24jECjPCqpnhZGy2ZU9XTnJIzj2b3S2mg9bi8OeMfS8qF1j1+GlTb6pqrREAVmDC
eQCj2S6ns5Lqs8ORTgfEkj7WbiK6DFGMfciGiOd/tUr2/w0Jkk/y8OMTuJxqKZUH
/0CUqqWZKwKBgGou6x4bJRd3EZwyBY1UwFTR+7MLTCWX8iO50EtS4yOryFENyuET
6dSdZbBjZRoBDDDkquWOSYu8Q3HmCGGxbjUNSPDUi5YyDPB9FrlVJpcUnsOf1Zg0
5hjiyfJFHG9lbusqUkseIMmBC2814T5ff0HxpzFzMz37klduy7teC9IjAoGAclQN
vATMTbqTWXxsbj8KXeXsbp84UcsXx+Pq2Zy+f2s5qGPYG8f7MPS3I9L3rZEJoITX
giWBE2j9Rf26rCN0AN/dqz4eZWPzuYapj/HmzpYvy/hRNTUwCORIE/ctzb515F6D
7iBOqU4oer2xdBNrq25lPIIOkjQZWU1BVu2616sCgYEAig6D0Km51am2VfgXmZpb
HtzvCoobxtrDHk5R8Zizt9Ih35ce8MGx/cTReAa2ZEZ/S5mZdTaO45cOJVzuBW0h
nglywCfKo6OoHLpcj6f3ZxbHc9JDupccwNMLA39zYSfv+j1pssp+kE3XEpnOfdVj
EloO9/OZ3JIv26sk1ahvDlY=
-----END PRIVATE KEY-----
";

/// Another P-256 key (PKCS#8), which the hub never knows: for forged tokens.
pub const OTHER_EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg9Y7m6hyT9h38w89d
jbRhwkRu5QRxSBJUUxhLHhGeR2uhRANCAATIGgYwCOJd2QPGZ/iSCZvqxNpLLp3y
UZVLFkeLHsfw8M9bsMKRURo2MWtPYcSCiQ/Ip3j7azQHj9FRBR6iDciB
-----END PRIVATE KEY-----
";

/// The signing key of [`OTHER_RSA_PRIVATE`].
pub fn other_rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(OTHER_RSA_PRIVATE.as_bytes()).expect("the other RSA key")
}

/// The signing key of [`OTHER_EC_PRIVATE`].
pub fn other_ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(OTHER_EC_PRIVATE.as_bytes()).expect("the other EC key")
}

/// Seconds since 1970.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Seconds since 1970, with fractions.
pub fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// Claims for `sub` that allow every topic and expire at `exp`.
pub fn claims(sub: &str, exp: u64) -> Value {
    json!({"sub": sub, "exp": exp, "subscribe": ["*"], "publish": ["*"]})
}

/// A JWT of `claims` signed with `key` by `alg`, naming `kid` when given.
pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let header = Header {
        alg,
        kid: kid.map(str::to_owned),
        ..Header::default()
    };
    jsonwebtoken::encode(&header, claims, key).expect("sign the token")
}

/// An HS256 JWT of `claims` with `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(secret),
        claims,
    )
}

/// An unsigned JWT (`"alg":"none"`) of `claims`, with `signature` as its third part.
pub fn alg_none(claims: &Value, signature: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.{signature}")
}

/// `token` with its claims replaced by `claims` and its signature kept.
pub fn tampered(token: &str, claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut parts = token.split('.');
    let header = parts.next().expect("a header");
    let _payload = parts.next().expect("a payload");
    let signature = parts.next().expect("a signature");
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.{signature}")
}

/// A JWKS with the public halves of `keys` (key, algorithm, kid).
pub fn jwks(keys: &[(&EncodingKey, Algorithm, &str)]) -> String {
    let keys = keys
        .iter()
        .map(|(key, alg, kid)| {
            let mut jwk = Jwk::from_encoding_key(key, *alg).expect("a JWK of the key");
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).expect("the JWKS as JSON")
}

// ---------------------------------------------------------------------------------------
// WebSocket shorthands.

/// Connects to `url` (a URL or a `fullduplex::ClientRequest`).
pub async fn connect(url: impl fullduplex::IntoClientRequest) -> Client {
    fullduplex::connect(url)
        .await
        .expect("the hub accepts the WebSocket")
        .0
}

/// Connects with `token` in the query.
pub async fn connect_with_token(ws_url: &str, token: &str) -> Client {
    connect(format!("{ws_url}?token={token}")).await
}

/// The status (and body) of an upgrade the hub refuses.
pub async fn refused(url: impl fullduplex::IntoClientRequest) -> (u16, String) {
    let error = match fullduplex::connect(url).await {
        Ok(_) => panic!("the hub accepted a WebSocket it should refuse"),
        Err(error) => error,
    };
    let response = error
        .http_response()
        .unwrap_or_else(|| panic!("not an HTTP refusal: {error}"));
    (
        response.status().as_u16(),
        String::from_utf8_lossy(response.body()).into_owned(),
    )
}

/// Sends a text message.
pub async fn send(ws: &mut Client, text: &str) {
    ws.send(Message::text(text.to_owned()))
        .await
        .expect("send a request");
}

/// The next message, which must be text, as text.
pub async fn recv_text(ws: &mut Client) -> String {
    let message = tokio::time::timeout(MESSAGE_WAIT, ws.recv())
        .await
        .expect("a message within 10 s")
        .expect("the connection is open")
        .expect("no connection error");
    match message.as_text() {
        Some(text) => text.to_owned(),
        None => panic!("expected a text message, got {message:?}"),
    }
}

/// The next message, which must be JSON text.
pub async fn recv_json(ws: &mut Client) -> Value {
    let text = recv_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Sends `request` and returns the next message.
pub async fn ask(ws: &mut Client, request: &str) -> Value {
    send(ws, request).await;
    recv_json(ws).await
}

/// Reads until the close frame (text messages before it are returned too), within `limit`.
pub async fn recv_close(ws: &mut Client, limit: Duration) -> (Option<CloseFrame>, Vec<Value>) {
    let mut texts = Vec::new();
    let reading = async {
        loop {
            match ws.recv().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Text(text))) => texts.push(
                    serde_json::from_str(text.as_str()).expect("a JSON message before the close"),
                ),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    };
    let frame = tokio::time::timeout(limit, reading)
        .await
        .expect("a close frame in time");
    (frame, texts)
}

/// Subscribes to `topic` (with presence when asked) and returns the `subscribed` answer.
pub async fn subscribe(ws: &mut Client, topic: &str, presence: bool) -> Value {
    let answer = ask(
        ws,
        &json!({"type": "subscribe", "topic": topic, "presence": presence}).to_string(),
    )
    .await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(answer["topic"], topic, "{answer}");
    answer
}
