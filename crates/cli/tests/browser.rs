//! The push server's demo page in a real browser: `fdx serve`, headless Chromium driven by
//! `playwright-core` (interop/browser_demo.mjs). Two pages chat, an HTTP publish reaches both,
//! and a page whose connection drops reconnects and shows what it missed. Screenshots are kept
//! in `target/tmp/browser/`. The same page over HTTPS runs its WebSocket on an HTTP/2 stream
//! (RFC 8441) and recovers after the server disconnects it (interop/browser_h2.mjs).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Background;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{} is missing ({what}): run scripts/test once, it installs it",
        path.display()
    );
}

/// Runs `interop/SCRIPT` with Node against the hub at `hub` (plus `args`), checks that it
/// said `NAME: ok`, and that each of `screenshots` (in the output directory) was written.
fn run_browser_script(script: &str, hub: &str, args: &[&str], screenshots: &[&str]) {
    require(Path::new("/usr/bin/chromium"), "Debian's chromium package");
    require(
        &repo().join("interop/node_modules/playwright-core"),
        "npm ci in interop/",
    );
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let mut command = Command::new("node");
    command
        .arg(repo().join("interop").join(script))
        .args(["--hub", hub])
        .args(args)
        .arg("--out")
        .arg(&out)
        .current_dir(repo().join("interop"))
        .stdin(Stdio::null());
    let run = common::run_command(&mut command, Some(b""), Duration::from_secs(120));
    assert_eq!(
        run.code(),
        0,
        "browser test failed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    let name = script.trim_end_matches(".mjs");
    assert!(
        run.stdout.contains(&format!("{name}: ok")),
        "{}",
        run.stdout
    );
    for shot in screenshots {
        let shot = out.join(shot);
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "screenshot {} is missing or empty",
            shot.display()
        );
    }
    println!("screenshots: {}", out.display());
}

#[test]
#[ignore = "needs chromium and playwright-core (scripts/test installs them)"]
fn demo_page_in_headless_chromium() {
    let server = Background::start(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(server.url.starts_with("http://"), "{}", server.url);
    run_browser_script(
        "browser_demo.mjs",
        &server.url,
        &["--fdx", env!("CARGO_BIN_EXE_fdx")],
        &["demo-a.png", "demo-b.png"],
    );
}

#[test]
#[ignore = "needs chromium and playwright-core (scripts/test installs them)"]
fn demo_page_over_https_with_its_websocket_on_http2() {
    let dir = common::temp_dir("browser-h2");
    let (cert, key) = common::self_signed_cert(&dir);
    let server = Background::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    run_browser_script("browser_h2.mjs", &server.url, &[], &["demo-h2.png"]);
}
