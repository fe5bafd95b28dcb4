//! The Autobahn client testee: asks the fuzzing server how many cases there are, runs each
//! one echoing every message, then asks it to write its reports.
//!
//! permessage-deflate is offered on every case. The 13.* cases check the negotiation itself:
//! each expects a particular client offer, which the runCase URL does not say. The suite's case
//! numbers follow the sorted case ids and 13.* (7 groups of 18 cases) comes last, so the group
//! follows from the case number; the offers are those of the suite's case definitions
//! (`DEFLATE_PARAMS` in kosoku's `case12_x_x.py`).
//!
//! ```text
//! cargo run --release -p fullduplex --example autobahn_client -- ws://127.0.0.1:9001
//! ```

use fullduplex::proto::deflate::DeflateConfig;
use fullduplex::{ClientRequest, Config, Message};

const AGENT: &str = "fullduplex";
/// Cases 13.1.1 to 13.7.18.
const CASES_13: u32 = 7 * 18;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let count = case_count(&base).await?;
    println!("{count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        let group_13 = (case + CASES_13 > count).then(|| (case + CASES_13 - count - 1) / 18 + 1);
        if let Err(error) = run_case(&url, group_13).await {
            // A failing case is the suite's to judge; keep going.
            eprintln!("case {case}: {error}");
        }
    }
    // The runner answers with a bare 101 and drops the connection: ignore what happens.
    let _ = fullduplex::connect(format!("{base}/updateReports?agent={AGENT}")).await;
    println!("done");
    Ok(())
}

async fn case_count(base: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let (mut ws, _) = fullduplex::connect(format!("{base}/getCaseCount")).await?;
    while let Some(message) = ws.recv().await {
        if let Message::Text(text) = message? {
            return Ok(text.trim().parse()?);
        }
    }
    Err("no case count received".into())
}

/// The offer case 13.`group`.* expects. Autobahn's default offer carries
/// `client_no_context_takeover` and `client_max_window_bits`; the groups add
/// `server_no_context_takeover` and `server_max_window_bits`. Group 7 sends three offers; the
/// server's answer is checked against the first (the most demanding).
fn offer_for_group(group: Option<u32>) -> (DeflateConfig, Option<&'static str>) {
    // Threshold 0: see echo_server.rs for why the testees compress every message.
    let base = DeflateConfig::default()
        .with_client_no_context_takeover(true)
        .with_threshold(0);
    match group {
        Some(2) => (base.with_server_no_context_takeover(true), None),
        Some(3) => (base.with_server_max_window_bits(9), None),
        Some(4) => (base.with_server_max_window_bits(15), None),
        Some(5) | Some(7) => (
            base.with_server_no_context_takeover(true)
                .with_server_max_window_bits(9),
            (group == Some(7)).then_some(
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; \
                 client_no_context_takeover; client_max_window_bits, \
                 permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 client_max_window_bits, \
                 permessage-deflate; client_no_context_takeover; client_max_window_bits",
            ),
        ),
        Some(6) => (
            base.with_server_no_context_takeover(true)
                .with_server_max_window_bits(15),
            None,
        ),
        _ => (base, None),
    }
}

async fn run_case(url: &str, group_13: Option<u32>) -> Result<(), fullduplex::Error> {
    let (deflate, offers) = offer_for_group(group_13);
    let mut request = ClientRequest::new(url);
    if let Some(offers) = offers {
        request = request.header("Sec-WebSocket-Extensions", offers);
    }
    // Explicit limits and no keepalive, as in echo_server.rs: messages of up to 16 MiB, and
    // no pings the runner did not ask for.
    let config = Config::default()
        .deflate(deflate)
        .max_message_size(64 << 20)
        .no_keepalive();
    let (mut ws, _) = fullduplex::connect_with(request, config).await?;
    while let Some(message) = ws.recv().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.feed(message).await?;
        }
    }
    Ok(())
}
