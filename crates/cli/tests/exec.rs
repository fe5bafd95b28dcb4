//! `fdx exec`: a process per connection.

mod common;

use common::{run, Background, Client};

#[test]
fn messages_go_through_cat() {
    let server = Background::start(&["exec", "127.0.0.1:0", "--", "cat"]);
    let out = run(
        &["connect", &server.url, "--wait-messages", "2"],
        b"first\nsecond\n",
    );
    out.assert_ok();
    assert_eq!(out.stdout, "first\nsecond\n");
}

#[test]
fn exit_status_is_the_close_reason() {
    let server = Background::start(&[
        "exec",
        "127.0.0.1:0",
        "--",
        "sh",
        "-c",
        "read x; echo got $x; exit 3",
    ]);
    let out = run(&["connect", &server.url], b"hello\n");
    assert_eq!(out.stdout, "got hello\n");
    assert_eq!(out.code(), 3, "{out:?}");
    assert_eq!(
        out.stderr,
        "fdx: server closed the connection with code 1011: exit status 3\n"
    );
}

#[test]
fn successful_exit_closes_with_1000() {
    let server = Background::start(&["exec", "127.0.0.1:0", "--", "sh", "-c", "echo hi"]);
    let out = common::run_with(
        &["connect", &server.url, "--json"],
        None,
        common::RUN_TIMEOUT,
    );
    out.assert_ok();
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(events[0]["text"], "hi", "{}", out.stdout);
    let close = events
        .iter()
        .find(|e| e["dir"] == "in" && e["type"] == "close")
        .expect("a close from the server");
    assert_eq!(close["code"], 1000);
    assert_eq!(close["reason"], "exit status 0");
}

#[test]
fn max_processes_refuses_with_503() {
    let server = Background::start(&["exec", "--max-processes", "1", "127.0.0.1:0", "--", "cat"]);
    let mut first = Client::start(&["connect", &server.url]);
    first.send_line("one");
    assert_eq!(first.next_line(), "one");
    let second = run(&["connect", &server.url], b"");
    assert_eq!(second.code(), 1, "{second:?}");
    assert!(second.stderr.contains("503"), "{second:?}");
    // The first connection ends; its process goes with it, and the slot is free again.
    assert!(first.finish().success());
    let mut third = None;
    for _ in 0..50 {
        let out = run(
            &["connect", &server.url, "--wait-messages", "1"],
            b"three\n",
        );
        if out.code() == 0 {
            third = Some(out);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(third.expect("a slot frees up").stdout, "three\n");
}
