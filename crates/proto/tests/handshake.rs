//! The opening handshake, byte-level, grouped by the RFC 6455 section each test checks.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::BytesMut;
use fullduplex_proto::handshake::{
    accept_key, accept_response, encode_request, encode_response, encode_response_head,
    format_extensions, generate_key, header_has_token, offered_extensions, offered_protocols,
    parse_extensions, parse_request, parse_response, prepare_request, rejection, request_target,
    validate_request, validate_response, Accepted, ExtensionOffer, ExtensionParam, HandshakeError,
    UpgradeRequest, GUID, MAX_HEADERS,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use proptest::prelude::*;

const MAX_HEAD: usize = 8192;

/// What Chromium sends, give or take the user agent.
const BROWSER_REQUEST: &str = "GET /chat?room=lobby HTTP/1.1\r\n\
    Host: example.com:8080\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: http://example.com:8080\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-US,en;q=0.9\r\n\
    Cookie: session=abc123; theme=dark\r\n\
    Sec-WebSocket-Key: sN9cRrP/n9NdMgdcy2VJFQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    \r\n";

/// A minimal valid request head with `extra` header lines inserted before the end.
fn request_with(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Parses and validates a complete head.
fn upgrade(head: &str) -> Result<UpgradeRequest, HandshakeError> {
    let (request, len) = parse_request(head.as_bytes(), MAX_HEAD)?.expect("complete head");
    assert_eq!(len, head.len());
    validate_request(request)
}

/// Takes a valid head and removes the first line that starts with `drop` (case-insensitive),
/// then adds `add`.
fn mutate(drop: &str, add: &str) -> String {
    let base = request_with("");
    let mut out = String::new();
    let mut dropped = false;
    for line in base.split_inclusive("\r\n") {
        if !dropped && !drop.is_empty() && line.to_ascii_lowercase().starts_with(drop) {
            dropped = true;
            continue;
        }
        if line == "\r\n" {
            out.push_str(add);
        }
        out.push_str(line);
    }
    assert!(drop.is_empty() || dropped, "{drop} not found");
    out
}

fn encode<B: AsRef<[u8]>>(response: &Response<B>) -> String {
    let mut out = BytesMut::new();
    encode_response(response, &mut out);
    String::from_utf8(out.to_vec()).expect("ASCII")
}

fn encode_head(response: &Response<()>) -> String {
    let mut out = BytesMut::new();
    encode_response_head(response, &mut out);
    String::from_utf8(out.to_vec()).expect("ASCII")
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 section 1.3 / 4.2.2: "the server has to take the value [of Sec-WebSocket-Key] and
// concatenate this with the GUID ... A SHA-1 hash (160 bits), base64-encoded"
// ---------------------------------------------------------------------------------------------

#[test]
fn accept_key_vectors() {
    assert_eq!(GUID, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(
        accept_key(b"sN9cRrP/n9NdMgdcy2VJFQ=="),
        "fFBooB7FAkLlXgRSz0BT3v4hq5s="
    );
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 section 4.1: "a nonce consisting of a randomly selected 16-byte value that has been
// base64-encoded"
// ---------------------------------------------------------------------------------------------

#[test]
fn generated_keys_are_fresh_16_byte_nonces() {
    let keys: Vec<String> = (0..32).map(|_| generate_key()).collect();
    for key in &keys {
        assert_eq!(key.len(), 24);
        assert_eq!(STANDARD.decode(key).expect("base64").len(), 16);
    }
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len());
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 section 4.2.1: reading the client's opening handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn browser_request_is_parsed_and_validated() {
    let upgrade = upgrade(BROWSER_REQUEST).expect("valid");
    assert_eq!(upgrade.path(), "/chat");
    assert_eq!(upgrade.query(), Some("room=lobby"));
    assert_eq!(upgrade.origin(), Some("http://example.com:8080"));
    assert_eq!(upgrade.key(), "sN9cRrP/n9NdMgdcy2VJFQ==");
    assert_eq!(upgrade.accept_key(), "fFBooB7FAkLlXgRSz0BT3v4hq5s=");
    assert_eq!(upgrade.protocols(), ["chat", "superchat"]);
    assert_eq!(
        upgrade.extensions(),
        [ExtensionOffer::new("permessage-deflate")
            .with_param(ExtensionParam::new("client_max_window_bits", None))]
    );
    assert_eq!(upgrade.header("Accept-Language"), Some("en-US,en;q=0.9"));
    assert_eq!(upgrade.header("x-missing"), None);
    let cookies: Vec<_> = upgrade.cookies().collect();
    assert_eq!(cookies, [("session", "abc123"), ("theme", "dark")]);

    let request = upgrade.request();
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(request.version(), http::Version::HTTP_11);
    assert_eq!(request.uri(), "/chat?room=lobby");
    assert_eq!(request.headers().len(), 14);
    assert_eq!(upgrade.into_request().headers()["host"], "example.com:8080");
}

#[test]
fn parse_keeps_every_header_line_in_order() {
    let head = request_with("X-Multi: 1\r\nX-Multi: 2\r\nX-Empty:\r\n");
    let (request, _) = parse_request(head.as_bytes(), MAX_HEAD)
        .expect("ok")
        .expect("complete");
    let values: Vec<_> = request.headers().get_all("x-multi").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(request.headers()["x-empty"], "");
}

#[test]
fn head_split_at_every_offset_is_incomplete_until_the_end() {
    let bytes = BROWSER_REQUEST.as_bytes();
    for end in 0..bytes.len() {
        assert!(
            parse_request(&bytes[..end], MAX_HEAD)
                .expect("ok")
                .is_none(),
            "complete after {end} bytes"
        );
    }
    let (_, len) = parse_request(bytes, MAX_HEAD)
        .expect("ok")
        .expect("complete");
    assert_eq!(len, bytes.len());
}

#[test]
fn bytes_after_the_head_are_left_to_the_caller() {
    // A masked text frame "Hi" arrived in the same read as the head.
    let frame = [0x81, 0x82, 1, 2, 3, 4, b'H' ^ 1, b'i' ^ 2];
    let mut bytes = BROWSER_REQUEST.as_bytes().to_vec();
    bytes.extend_from_slice(&frame);
    let (_, len) = parse_request(&bytes, MAX_HEAD)
        .expect("ok")
        .expect("complete");
    assert_eq!(len, BROWSER_REQUEST.len());
    assert_eq!(&bytes[len..], frame);
}

#[test]
fn token_lists_in_any_case_and_several_lines_are_accepted() {
    let head = mutate("connection", "Connection: keep-alive, Upgrade\r\n");
    assert!(upgrade(&head).is_ok());
    let head = mutate("upgrade", "upgrade: WebSocket\r\n");
    assert!(upgrade(&head).is_ok());
    let head = mutate(
        "connection",
        "Connection: keep-alive\r\nconnection: UPGRADE\r\n",
    );
    assert!(upgrade(&head).is_ok());
    let head = mutate("upgrade", "Upgrade: h2c, websocket\r\n");
    assert!(upgrade(&head).is_ok());
}

#[test]
fn header_has_token_splits_and_trims() {
    let mut headers = HeaderMap::new();
    headers.append(
        "connection",
        HeaderValue::from_static("keep-alive, Upgrade"),
    );
    assert!(header_has_token(&headers, "connection", "upgrade"));
    assert!(header_has_token(
        &headers,
        http::header::CONNECTION,
        "KEEP-ALIVE"
    ));
    assert!(!header_has_token(&headers, "connection", "upgrad"));
    assert!(!header_has_token(&headers, "upgrade", "websocket"));
}

#[test]
fn several_protocol_lines_are_joined_in_order() {
    let head = request_with("Sec-WebSocket-Protocol: a, b\r\nSec-WebSocket-Protocol: ,c\r\n");
    assert_eq!(upgrade(&head).expect("valid").protocols(), ["a", "b", "c"]);
    assert!(upgrade(&request_with(""))
        .expect("valid")
        .protocols()
        .is_empty());
}

#[test]
fn cookies_from_every_cookie_line() {
    let head = request_with("Cookie: a=1;b=x=y; ; flag\r\nCookie:  c = 3 \r\n");
    let upgrade = upgrade(&head).expect("valid");
    let cookies: Vec<_> = upgrade.cookies().collect();
    assert_eq!(cookies, [("a", "1"), ("b", "x=y"), ("c", "3")]);
}

/// Every way a request can fail validation, with the status the server answers.
#[test]
fn every_rejection_has_its_status() {
    use HandshakeError as E;
    let cases: Vec<(String, HandshakeError, u16)> = vec![
        (
            request_with("").replacen("GET", "POST", 1),
            E::MethodNotGet,
            400,
        ),
        (
            request_with("").replacen("HTTP/1.1", "HTTP/1.0", 1),
            E::HttpVersionTooOld,
            400,
        ),
        (mutate("host", ""), E::MissingHost, 400),
        (mutate("upgrade", ""), E::NoUpgradeWebSocket, 426),
        (
            mutate("upgrade", "Upgrade: h2c\r\n"),
            E::NoUpgradeWebSocket,
            426,
        ),
        (mutate("connection", ""), E::NoConnectionUpgrade, 426),
        (
            mutate("connection", "Connection: keep-alive\r\n"),
            E::NoConnectionUpgrade,
            426,
        ),
        (
            mutate("sec-websocket-version", ""),
            E::UnsupportedVersion,
            426,
        ),
        (
            mutate("sec-websocket-version", "Sec-WebSocket-Version: 8\r\n"),
            E::UnsupportedVersion,
            426,
        ),
        (
            mutate("sec-websocket-version", "Sec-WebSocket-Version: 13, 8\r\n"),
            E::UnsupportedVersion,
            426,
        ),
        (
            request_with("Sec-WebSocket-Version: 13\r\n"),
            E::UnsupportedVersion,
            426,
        ),
        (mutate("sec-websocket-key", ""), E::MissingKey, 400),
        (
            mutate("sec-websocket-key", "Sec-WebSocket-Key: not base64!\r\n"),
            E::InvalidKey,
            400,
        ),
        (
            // 15 bytes
            mutate(
                "sec-websocket-key",
                "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n",
            ),
            E::InvalidKey,
            400,
        ),
        (
            // 17 bytes
            mutate(
                "sec-websocket-key",
                "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n",
            ),
            E::InvalidKey,
            400,
        ),
        (
            request_with("Sec-WebSocket-Key: sN9cRrP/n9NdMgdcy2VJFQ==\r\n"),
            E::InvalidKey,
            400,
        ),
        (
            request_with("Sec-WebSocket-Extensions: permessage-deflate; x=\"a b\"\r\n"),
            E::InvalidExtensions,
            400,
        ),
        (
            request_with("Sec-WebSocket-Protocol: chat, sup er\r\n"),
            E::InvalidProtocols,
            400,
        ),
    ];
    for (head, expected, status) in cases {
        let error = upgrade(&head).expect_err(&head);
        assert_eq!(error, expected, "{head}");
        assert_eq!(error.status().as_u16(), status, "{head}");
    }
}

#[test]
fn malformed_http_is_400() {
    for head in [
        "GET / HTTP/1.1\r\nHo st: h\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",
    ] {
        let error = parse_request(head.as_bytes(), MAX_HEAD).expect_err(head);
        assert!(matches!(error, HandshakeError::MalformedHttp(_)), "{head}");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }
}

#[test]
fn oversized_head_is_431() {
    let head = request_with("");
    let exact = head.len();
    assert!(parse_request(head.as_bytes(), exact)
        .expect("fits")
        .is_some());
    let error = parse_request(head.as_bytes(), exact - 1).expect_err("too large");
    assert_eq!(error, HandshakeError::HeadTooLarge);
    assert_eq!(error.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // Incomplete: wait while within the limit, fail as soon as it is exceeded.
    let partial = &head.as_bytes()[..100];
    assert!(parse_request(partial, 100).expect("within").is_none());
    assert_eq!(
        parse_request(partial, 99).expect_err("over"),
        HandshakeError::HeadTooLarge
    );
    // A hostile peer streaming an endless header.
    let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
    assert_eq!(
        parse_request(endless.as_bytes(), MAX_HEAD).expect_err("endless"),
        HandshakeError::HeadTooLarge
    );
}

#[test]
fn too_many_headers_is_431() {
    let lines = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    // The five required lines plus filler up to the limit are fine.
    let fits = request_with(&lines(MAX_HEADERS - 5));
    assert!(upgrade(&fits).is_ok());
    const { assert!(MAX_HEADERS >= 64) };
    let head = request_with(&lines(MAX_HEADERS - 4));
    let error = parse_request(head.as_bytes(), 1 << 20).expect_err("too many");
    assert_eq!(error, HandshakeError::TooManyHeaders);
    assert_eq!(error.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 section 4.2.2: sending the server's opening handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn accept_response_for_rfc_example() {
    let head = request_with("Sec-WebSocket-Protocol: chat, superchat\r\n");
    let upgrade = upgrade(&head).expect("valid");
    let response = accept_response(&upgrade, Some("chat"), Some("permessage-deflate")).expect("ok");
    let wire = encode_head(&response);
    assert_eq!(encode(&response.map(|()| "ignored")), wire);
    assert_eq!(
        wire,
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
         Sec-WebSocket-Protocol: chat\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\n\
         \r\n"
    );
    let plain = accept_response(&upgrade, None, None).expect("ok");
    assert!(!plain.headers().contains_key("sec-websocket-protocol"));
    assert!(!plain.headers().contains_key("sec-websocket-extensions"));
}

#[test]
fn accept_response_refuses_a_protocol_the_client_did_not_offer() {
    let upgrade = upgrade(&request_with("Sec-WebSocket-Protocol: chat\r\n")).expect("valid");
    let error = accept_response(&upgrade, Some("superchat"), None).expect_err("not offered");
    assert_eq!(
        error,
        HandshakeError::ProtocolNotOffered("superchat".into())
    );
    let error = accept_response(&upgrade, None, Some("bad\nvalue")).expect_err("bad value");
    assert_eq!(error, HandshakeError::InvalidHeaderValue);
}

#[test]
fn rejection_426_advertises_version_13() {
    for error in [
        HandshakeError::NoUpgradeWebSocket,
        HandshakeError::NoConnectionUpgrade,
        HandshakeError::UnsupportedVersion,
    ] {
        let response = rejection(&error);
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()["sec-websocket-version"], "13");
        assert_eq!(response.headers()["connection"], "close");
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.body(), format!("{error}\n").as_bytes());
    }
    let response = rejection(&HandshakeError::MissingKey);
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(!response.headers().contains_key("sec-websocket-version"));
}

#[test]
fn rejection_is_encoded_with_length_and_body() {
    assert_eq!(
        encode(&rejection(&HandshakeError::UnsupportedVersion)),
        "HTTP/1.1 426 Upgrade Required\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Connection: close\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Content-Length: 52\r\n\
         \r\n\
         unsupported WebSocket version, only 13 is supported\n"
    );
    assert!(encode(&rejection(&HandshakeError::HeadTooLarge))
        .starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
}

#[test]
fn encode_keeps_a_given_content_length_and_drops_a_101_body() {
    let mut response = Response::new("hello");
    *response.status_mut() = StatusCode::FORBIDDEN;
    response
        .headers_mut()
        .insert("content-length", HeaderValue::from_static("5"));
    assert_eq!(
        encode(&response),
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nhello"
    );
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().clear();
    assert_eq!(
        encode(&response),
        "HTTP/1.1 101 Switching Protocols\r\n\r\n"
    );
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 section 4.1: the client's opening handshake
// ---------------------------------------------------------------------------------------------

fn prepare(url: &str) -> (Request<()>, String) {
    prepare_request(Request::get(url).body(()).expect("request")).expect("prepared")
}

fn encoded_request(request: &Request<()>) -> String {
    let mut out = BytesMut::new();
    encode_request(request, &mut out);
    String::from_utf8(out.to_vec()).expect("ASCII")
}

#[test]
fn client_request_for_ipv6_url_with_port_and_query() {
    let (request, key) = prepare("ws://[::1]:9001/chat?x=1");
    assert_eq!(request_target(request.uri()), "/chat?x=1");
    assert_eq!(
        encoded_request(&request),
        format!(
            "GET /chat?x=1 HTTP/1.1\r\n\
             Host: [::1]:9001\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: {key}\r\n\
             \r\n"
        )
    );
}

#[test]
fn client_host_omits_default_ports() {
    let host = |url: &str| {
        let (request, _) = prepare(url);
        request.headers()["host"]
            .to_str()
            .expect("ASCII")
            .to_owned()
    };
    assert_eq!(host("wss://example.com/"), "example.com");
    assert_eq!(host("wss://example.com:443/"), "example.com");
    assert_eq!(host("wss://example.com:80/"), "example.com:80");
    assert_eq!(host("ws://h:80"), "h");
    assert_eq!(host("ws://h:443"), "h:443");
    assert_eq!(host("ws://user:secret@h:8080/"), "h:8080");
    assert_eq!(host("WS://Example.COM/"), "Example.COM");
}

#[test]
fn client_request_target_is_never_empty() {
    let (request, _) = prepare("ws://h:80");
    assert!(encoded_request(&request).starts_with("GET / HTTP/1.1\r\n"));
    let (request, _) = prepare("ws://h?x=1");
    assert!(encoded_request(&request).starts_with("GET /?x=1 HTTP/1.1\r\n"));
    assert_eq!(request_target(&Uri::from_static("/")), "/");
}

#[test]
fn client_keeps_user_headers_and_replaces_the_key() {
    let request = Request::get("wss://example.com/feed")
        .header("Origin", "https://example.com")
        .header("Cookie", "session=1")
        .header("Authorization", "Bearer t0ken")
        .header("Sec-WebSocket-Protocol", "v2.feed")
        .header("Sec-WebSocket-Protocol", "v1.feed")
        .header("Sec-WebSocket-Extensions", "permessage-deflate")
        .header("X-Trace", "abc")
        .header("Host", "front.example.com")
        .header("Connection", "keep-alive, Upgrade")
        .header("Sec-WebSocket-Key", "sN9cRrP/n9NdMgdcy2VJFQ==")
        .header("Sec-WebSocket-Version", "8")
        .body(())
        .expect("request");
    let (request, key) = prepare_request(request).expect("prepared");
    let headers = request.headers();
    assert_eq!(headers["origin"], "https://example.com");
    assert_eq!(headers["cookie"], "session=1");
    assert_eq!(headers["authorization"], "Bearer t0ken");
    assert_eq!(headers["x-trace"], "abc");
    assert_eq!(headers["host"], "front.example.com");
    assert_eq!(headers["connection"], "keep-alive, Upgrade");
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["sec-websocket-version"], "13");
    assert_ne!(key, "sN9cRrP/n9NdMgdcy2VJFQ==");
    assert_eq!(headers.get_all("sec-websocket-key").iter().count(), 1);
    assert_eq!(headers["sec-websocket-key"], key.as_str());
    assert_eq!(offered_protocols(&request), ["v2.feed", "v1.feed"]);
    assert_eq!(
        offered_extensions(&request).expect("valid"),
        [ExtensionOffer::new("permessage-deflate")]
    );
}

#[test]
fn client_rejects_bad_urls() {
    let prepare = |url: &str| prepare_request(Request::get(url).body(()).expect("request"));
    assert_eq!(
        prepare("http://example.com/").expect_err("http"),
        HandshakeError::UnsupportedScheme
    );
    assert!(matches!(
        prepare("/chat").expect_err("relative"),
        HandshakeError::InvalidUrl(_)
    ));
    let post = Request::post("ws://h/").body(()).expect("request");
    assert_eq!(
        prepare_request(post).expect_err("post"),
        HandshakeError::MethodNotGet
    );
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 section 4.1: "the client MUST validate the server's response as follows"
// ---------------------------------------------------------------------------------------------

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn response(extra: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
    )
}

fn check(head: &str, protocols: &[&str], extensions: &[&str]) -> Result<Accepted, HandshakeError> {
    let (response, len) = parse_response(head.as_bytes(), MAX_HEAD)?.expect("complete");
    assert_eq!(len, head.len());
    let protocols: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
    let extensions: Vec<_> = extensions.iter().map(|e| ExtensionOffer::new(*e)).collect();
    validate_response(&response, KEY, &protocols, &extensions)
}

#[test]
fn valid_response_reports_protocol_and_extensions() {
    let accepted = check(&response(""), &["chat"], &[]).expect("valid");
    assert_eq!(accepted, Accepted::default());
    let head = response(
        "Sec-WebSocket-Protocol: chat\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n",
    );
    let accepted = check(&head, &["superchat", "chat"], &["permessage-deflate"]).expect("valid");
    assert_eq!(accepted.protocol.as_deref(), Some("chat"));
    assert_eq!(
        accepted.extensions,
        [ExtensionOffer::new("permessage-deflate")
            .with_param(ExtensionParam::new("server_max_window_bits", Some("10")))]
    );
}

#[test]
fn response_head_split_at_every_offset() {
    let head = response("");
    let mut bytes = head.as_bytes().to_vec();
    for end in 0..bytes.len() {
        assert!(parse_response(&bytes[..end], MAX_HEAD)
            .expect("ok")
            .is_none());
    }
    bytes.extend_from_slice(&[0x81, 0x00]);
    let (_, len) = parse_response(&bytes, MAX_HEAD)
        .expect("ok")
        .expect("complete");
    assert_eq!(&bytes[len..], [0x81, 0x00]);
    assert_eq!(
        parse_response(&bytes, 20).expect_err("too large"),
        HandshakeError::HeadTooLarge
    );
}

#[test]
fn invalid_responses_are_refused() {
    use HandshakeError as E;
    let without = |drop: &str| {
        response("")
            .split_inclusive("\r\n")
            .filter(|line| !line.to_ascii_lowercase().starts_with(drop))
            .collect::<String>()
    };
    let cases: Vec<(String, HandshakeError)> = vec![
        (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
            E::UnexpectedStatus(StatusCode::NOT_FOUND),
        ),
        (
            response("").replacen("101 Switching Protocols", "200 OK", 1),
            E::UnexpectedStatus(StatusCode::OK),
        ),
        (without("upgrade"), E::ResponseNoUpgradeWebSocket),
        (
            response("").replacen("Upgrade: websocket", "Upgrade: h2c", 1),
            E::ResponseNoUpgradeWebSocket,
        ),
        (without("connection"), E::ResponseNoConnectionUpgrade),
        (without("sec-websocket-accept"), E::WrongAccept),
        (
            response("").replacen(
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                "fFBooB7FAkLlXgRSz0BT3v4hq5s=",
                1,
            ),
            E::WrongAccept,
        ),
        (
            response("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            E::WrongAccept,
        ),
        (
            response("Sec-WebSocket-Protocol: superchat\r\n"),
            E::UnexpectedProtocol("superchat".into()),
        ),
        (
            response("Sec-WebSocket-Protocol: chat, chat2\r\n"),
            E::UnexpectedProtocol("chat, chat2".into()),
        ),
        (
            response("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n"),
            E::UnexpectedProtocol("chat".into()),
        ),
        (
            response("Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"),
            E::UnexpectedExtension("x-webkit-deflate-frame".into()),
        ),
        (
            response("Sec-WebSocket-Extensions: permessage-deflate;\r\n"),
            E::InvalidExtensions,
        ),
    ];
    for (head, expected) in cases {
        let error = check(&head, &["chat"], &["permessage-deflate"]).expect_err(&head);
        assert_eq!(error, expected, "{head}");
    }
    // No protocol offered at all, but one selected.
    assert_eq!(
        check(&response("Sec-WebSocket-Protocol: chat\r\n"), &[], &[]).expect_err("none"),
        E::UnexpectedProtocol("chat".into())
    );
    assert_eq!(
        E::UnexpectedStatus(StatusCode::NOT_FOUND).to_string(),
        "unexpected response status 404 Not Found"
    );
}

#[test]
fn client_and_server_agree_end_to_end() {
    let request = Request::get("ws://localhost:9001/echo")
        .header("Sec-WebSocket-Protocol", "chat, superchat")
        .header(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )
        .body(())
        .expect("request");
    let (request, key) = prepare_request(request).expect("prepared");
    let wire = encoded_request(&request);

    let upgrade = upgrade(&wire).expect("server accepts the client's request");
    assert_eq!(upgrade.key(), key);
    assert_eq!(upgrade.header("host"), Some("localhost:9001"));
    let response =
        accept_response(&upgrade, Some("superchat"), Some("permessage-deflate")).expect("accepted");
    let wire = encode_head(&response);

    let accepted = check_with(&wire, &key, &request).expect("client accepts the answer");
    assert_eq!(accepted.protocol.as_deref(), Some("superchat"));
    assert_eq!(
        accepted.extensions,
        [ExtensionOffer::new("permessage-deflate")]
    );
}

fn check_with(head: &str, key: &str, request: &Request<()>) -> Result<Accepted, HandshakeError> {
    let (response, _) = parse_response(head.as_bytes(), MAX_HEAD)?.expect("complete");
    validate_response(
        &response,
        key,
        &offered_protocols(request),
        &offered_extensions(request)?,
    )
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 section 9.1: negotiating extensions
// ---------------------------------------------------------------------------------------------

fn extensions(lines: &[&'static str]) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    let mut headers = HeaderMap::new();
    for line in lines {
        headers.append("sec-websocket-extensions", HeaderValue::from_static(line));
    }
    parse_extensions(&headers)
}

#[test]
fn extension_offers_with_params_and_quoted_values() {
    let offers = extensions(&[
        "permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\"",
        " permessage-deflate ;client_max_window_bits = 12 , x-foo; a=\"b\\c\"",
    ])
    .expect("valid");
    assert_eq!(
        offers,
        [
            ExtensionOffer::new("permessage-deflate")
                .with_param(ExtensionParam::new("client_max_window_bits", None))
                .with_param(ExtensionParam::new("server_max_window_bits", Some("10"))),
            ExtensionOffer::new("permessage-deflate")
                .with_param(ExtensionParam::new("client_max_window_bits", Some("12"))),
            ExtensionOffer::new("x-foo").with_param(ExtensionParam::new("a", Some("bc"))),
        ]
    );
    assert_eq!(offers[0].param("SERVER_MAX_WINDOW_BITS"), Some(Some("10")));
    assert_eq!(extensions(&[]).expect("none"), []);
    assert_eq!(extensions(&[" , ,"]).expect("empty elements"), []);
}

#[test]
fn malformed_extensions_are_refused() {
    for bad in [
        "permessage-deflate;",
        "permessage-deflate; ; a",
        "permessage-deflate; a=",
        "permessage-deflate; a=\"1 0\"",
        "permessage-deflate; a=\"10",
        "permessage-deflate x",
        "perm{essage",
        "; a=1",
        "a=1",
    ] {
        assert_eq!(
            extensions(&[bad]),
            Err(HandshakeError::InvalidExtensions),
            "{bad}"
        );
    }
    assert_eq!(
        HandshakeError::InvalidExtensions.status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn format_extensions_matches_the_usual_spelling() {
    let offers = [
        ExtensionOffer::new("permessage-deflate")
            .with_param(ExtensionParam::new("client_max_window_bits", None))
            .with_param(ExtensionParam::new("server_max_window_bits", Some("10"))),
        ExtensionOffer::new("permessage-deflate"),
    ];
    let text = format_extensions(&offers);
    assert_eq!(
        text,
        "permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate"
    );
    assert_eq!(format_extensions(&[]), "");
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn token() -> impl Strategy<Value = String> {
    "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}"
}

fn offer() -> impl Strategy<Value = ExtensionOffer> {
    (
        token(),
        prop::collection::vec((token(), prop::option::of(token())), 0..4),
    )
        .prop_map(|(name, params)| ExtensionOffer {
            name,
            params: params
                .into_iter()
                .map(|(name, value)| ExtensionParam { name, value })
                .collect(),
        })
}

proptest! {
    /// RFC 6455 section 9.1: what we format, we parse back unchanged.
    #[test]
    fn extensions_round_trip(offers in prop::collection::vec(offer(), 0..5)) {
        let text = format_extensions(&offers);
        let mut headers = HeaderMap::new();
        headers.insert("sec-websocket-extensions", HeaderValue::from_str(&text).expect("value"));
        prop_assert_eq!(parse_extensions(&headers).expect("parses"), offers);
    }

    /// Hostile bytes never panic the request parser or the validator.
    #[test]
    fn parse_request_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), max in 0usize..600) {
        if let Ok(Some((request, len))) = parse_request(&bytes, max) {
            prop_assert!(len <= bytes.len() && len <= max);
            let _ = validate_request(request);
        }
    }

    /// Hostile bytes shaped like a request head never panic either.
    #[test]
    fn parse_request_never_panics_on_head_like_input(
        lines in prop::collection::vec("[ -~\t]{0,40}", 0..12),
    ) {
        let head = format!("GET / HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"));
        if let Ok(Some((request, _))) = parse_request(head.as_bytes(), MAX_HEAD) {
            if let Ok(upgrade) = validate_request(request) {
                let _ = upgrade.cookies().count();
                let _ = accept_response(&upgrade, None, None);
            }
        }
    }

    /// The response parser and validator never panic.
    #[test]
    fn parse_response_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Some((response, _))) = parse_response(&bytes, MAX_HEAD) {
            let _ = validate_response(&response, KEY, &["chat".to_owned()], &[]);
        }
    }

    /// A valid head split anywhere gives the same request once complete.
    #[test]
    fn split_anywhere_same_request(split in 0usize..BROWSER_REQUEST.len()) {
        let bytes = BROWSER_REQUEST.as_bytes();
        prop_assert!(parse_request(&bytes[..split], MAX_HEAD).expect("ok").is_none());
        let (request, len) = parse_request(bytes, MAX_HEAD).expect("ok").expect("complete");
        prop_assert_eq!(len, bytes.len());
        prop_assert_eq!(request.headers().len(), 14);
    }
}
