//! WebSockets over HTTP/2 (RFC 8441) in the tool: `fdx echo` and `fdx exec` take HTTP/1.1
//! and h2c on one plain port and offer ALPN `h2` with TLS; `fdx connect --http2`, automatic
//! HTTP/2 for wss://, `--http1`, and `-v` showing the extended CONNECT and its answer.

mod common;

use common::{run, temp_dir, Background};

#[test]
fn echo_takes_http1_and_h2c_on_one_port() {
    let server = Background::start(&["echo", "127.0.0.1:0"]);
    let h2 = run(
        &[
            "connect",
            &format!("{}/chat", server.url),
            "--http2",
            "-v",
            "--wait-messages",
            "1",
        ],
        b"hello\n",
    );
    h2.assert_ok();
    assert_eq!(h2.stdout, "hello\n");
    for line in [
        "> :method: CONNECT",
        "> :protocol: websocket",
        "> :scheme: http",
        "> :path: /chat",
        "> sec-websocket-version: 13",
        "< :status: 200",
    ] {
        assert!(
            h2.stderr.contains(line),
            "{line:?} missing in\n{}",
            h2.stderr
        );
    }
    assert!(!h2.stderr.contains("Sec-WebSocket-Key"), "{}", h2.stderr);
    // The same port, HTTP/1.1: the default for ws:// and --http1.
    for flag in ["--http1", "--no-compress"] {
        let h1 = run(
            &["connect", &server.url, flag, "-v", "--wait-messages", "1"],
            b"again\n",
        );
        h1.assert_ok();
        assert_eq!(h1.stdout, "again\n");
        assert!(h1.stderr.contains("< HTTP/1.1 101"), "{}", h1.stderr);
    }
}

#[test]
fn wss_uses_http2_when_the_server_offers_it() {
    let dir = temp_dir("h2-wss");
    let (cert, key) = common::self_signed_cert(&dir);
    let server = Background::start(&[
        "echo",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let url = format!("wss://localhost:{}/", server.port());
    let auto = run(
        &[
            "connect",
            &url,
            "--cacert",
            &cert,
            "-v",
            "--wait-messages",
            "1",
        ],
        b"over h2\n",
    );
    auto.assert_ok();
    assert_eq!(auto.stdout, "over h2\n");
    assert!(
        auto.stderr.contains("the server chose HTTP/2"),
        "{}",
        auto.stderr
    );
    assert!(auto.stderr.contains("< :status: 200"), "{}", auto.stderr);
    let h1 = run(
        &[
            "connect",
            &url,
            "--cacert",
            &cert,
            "--http1",
            "-v",
            "--wait-messages",
            "1",
        ],
        b"over h1\n",
    );
    h1.assert_ok();
    assert_eq!(h1.stdout, "over h1\n");
    assert!(h1.stderr.contains("< HTTP/1.1 101"), "{}", h1.stderr);

    // --no-http2: no ALPN h2; automatic stays on HTTP/1.1, --http2 fails clearly.
    let server = Background::start(&[
        "echo",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--no-http2",
    ]);
    let url = format!("wss://localhost:{}/", server.port());
    let auto = run(
        &[
            "connect",
            &url,
            "--cacert",
            &cert,
            "-v",
            "--wait-messages",
            "1",
        ],
        b"x\n",
    );
    auto.assert_ok();
    assert!(auto.stderr.contains("< HTTP/1.1 101"), "{}", auto.stderr);
    let forced = run(&["connect", &url, "--cacert", &cert, "--http2"], b"x\n");
    assert_eq!(forced.code(), 1, "{forced:?}");
    assert!(forced.stderr.contains("HTTP/2"), "{}", forced.stderr);
}

#[test]
fn origin_policy_applies_over_http2() {
    let server = Background::start(&[
        "echo",
        "127.0.0.1:0",
        "--allowed-origin",
        "https://good.test",
    ]);
    let refused = run(
        &[
            "connect",
            &server.url,
            "--http2",
            "--origin",
            "https://evil.test",
        ],
        b"x\n",
    );
    assert_eq!(refused.code(), 1, "{refused:?}");
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);
    let allowed = run(
        &[
            "connect",
            &server.url,
            "--http2",
            "--origin",
            "https://good.test",
            "--wait-messages",
            "1",
        ],
        b"fine\n",
    );
    allowed.assert_ok();
    assert_eq!(allowed.stdout, "fine\n");
}

#[test]
fn exec_over_http2() {
    let server = Background::start(&["exec", "127.0.0.1:0", "--", "cat"]);
    let out = run(
        &["connect", &server.url, "--http2", "--wait-messages", "2"],
        b"first\nsecond\n",
    );
    out.assert_ok();
    assert_eq!(out.stdout, "first\nsecond\n");
}
