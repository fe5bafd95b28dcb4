//! The hub against real clients: Python `websockets` and urllib (the repository's .venv).

mod common;

use std::time::Duration;

use common::{config, run_python, TestHub};

const LIMIT: Duration = Duration::from_secs(90);

#[test]
#[ignore = "needs Python websockets in .venv (scripts/test makes it)"]
fn subscribe_publish_unsubscribe_and_routes() {
    let hub = TestHub::start(config());
    run_python("basic.py", &[&hub.addr.to_string()], LIMIT);
}

#[test]
#[ignore = "needs Python websockets in .venv (scripts/test makes it)"]
fn every_error_path_keeps_the_connection_open() {
    let mut config = config();
    config.clock = true;
    config.max_subscriptions = 3;
    config.publish_rate = 5;
    config.max_message_size = 1024;
    let hub = TestHub::start(config);
    run_python("errors.py", &[&hub.addr.to_string()], LIMIT);
}

#[test]
#[ignore = "needs Python websockets in .venv (scripts/test makes it)"]
fn recovery_after_reconnect() {
    let mut config = config();
    config.broker.history_size = 5;
    config.publish_rate = 0;
    let hub = TestHub::start(config);
    run_python("recovery.py", &[&hub.addr.to_string()], LIMIT);
}

#[test]
#[ignore = "needs Python websockets in .venv (scripts/test makes it)"]
fn origin_tokens_and_api_key() {
    let mut config = config();
    config.tokens.secret = Some("s3cret".into());
    config.api_key = Some("k3y".into());
    config.allowed_origins = vec!["https://app.example".into()];
    let hub = TestHub::start(config);
    run_python("auth.py", &[&hub.addr.to_string()], LIMIT);
}

#[test]
#[ignore = "needs Python websockets in .venv (scripts/test makes it)"]
fn a_stalled_client_is_closed_alone_and_recovers() {
    let mut config = config();
    config.max_queued_bytes = 256 << 10;
    config.publish_rate = 0;
    config.broker.history_size = 40_000;
    let hub = TestHub::start(config);
    let out = run_python("slow.py", &[&hub.addr.to_string()], LIMIT);
    eprintln!("{out}");
}

#[test]
#[ignore = "needs Python websockets in .venv (scripts/test makes it)"]
fn compressed_and_plain_subscribers_get_the_same_data() {
    let mut config = config();
    config.publish_rate = 0;
    let hub = TestHub::start(config);
    let out = run_python("compression.py", &[&hub.addr.to_string()], LIMIT);
    eprintln!("{out}");
}
