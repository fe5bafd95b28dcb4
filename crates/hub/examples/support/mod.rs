//! Measuring helpers shared by the hub's benchmark examples.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// User + system CPU time of `pid`.
pub fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The number after `"t":` in a message.
pub fn sent_at(text: &str) -> Option<u64> {
    let start = text.find("\"t\":")? + 4;
    let digits = text[start..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// A hub configuration for the benchmarks: no clock, no limits in the way.
pub fn bench_config() -> fullduplex_hub::HubConfig {
    let mut config = fullduplex_hub::HubConfig::default();
    config.clock = false;
    config.max_connections = 100_000;
    config.publish_rate = 0;
    config.ping_interval = None;
    config
}
