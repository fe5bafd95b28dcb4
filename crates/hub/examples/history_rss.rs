//! Resident memory after a flood of history expires (RELIABILITY.md): 30,000 messages of
//! 60 KB published to 300 topics of the in-process engine (default history budget, 256 MiB),
//! then, once their history TTL (2 s here) has passed, one sweep. Prints VmRSS at the start,
//! after the flood, and after the sweep.
//!
//! ```text
//! cargo run --release -p fullduplex-hub --example history_rss            # sweep returns memory
//! cargo run --release -p fullduplex-hub --example history_rss -- --keep  # return_memory off
//! ```

use std::time::Duration;

use fullduplex_hub::{Hub, HubConfig, Topic};

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep = std::env::args().any(|a| a == "--keep");
    let mut config = HubConfig::default();
    config.broker.history_ttl = Duration::from_secs(2);
    config.broker.return_memory = !keep;
    let hub = Hub::new(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = rss_mb();
    let data = format!("\"{}\"", "x".repeat(60_000));
    let topics: Vec<Topic> = (0..300)
        .map(|i| Topic::new(&format!("flood-{i}")))
        .collect::<Result<_, _>>()?;
    runtime.block_on(async {
        for n in 0..30_000 {
            hub.engine().publish(&topics[n % 300], &data).await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let flooded = rss_mb();
    std::thread::sleep(Duration::from_millis(2100));
    hub.engine().sweep();
    let swept = rss_mb();
    println!(
        "return_memory={}: start {start:.0} MB, after the flood {flooded:.0} MB, after the sweep {swept:.0} MB (topics left: {})",
        !keep,
        hub.engine().topic_count()
    );
    Ok(())
}
