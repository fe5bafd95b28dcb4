//! The Autobahn client testee: asks the fuzzing server how many cases there are, runs each
//! one echoing every message, then asks it to write its reports.
//!
//! ```text
//! cargo run --release -p fullduplex --example autobahn_client -- ws://127.0.0.1:9001
//! ```

use fullduplex::{Config, Message};

const AGENT: &str = "fullduplex";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let count = case_count(&base).await?;
    println!("{count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        if let Err(error) = run_case(&url).await {
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

async fn run_case(url: &str) -> Result<(), fullduplex::Error> {
    let (mut ws, _) = fullduplex::connect_with(url, Config::default()).await?;
    while let Some(message) = ws.recv().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.feed(message).await?;
        }
    }
    Ok(())
}
