//! The end of a run: one JSON object (`--json`) or a short aligned table, on stdout.

use std::io::Write;

use super::stats::LatencySummary;
use crate::Failure;

/// Which kind of run a report describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Messages and their echoes.
    Echo,
    /// Connections held open.
    Idle,
    /// New connections per second.
    Handshakes,
}

/// The report. The field names are read by the benchmark crate: keep them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The kind of run.
    pub mode: Mode,
    /// The target.
    pub url: String,
    /// Connections (echo, idle) or workers (handshakes).
    pub connections: u64,
    /// Message size (echo), or --idle-echo bytes (idle).
    pub size: u64,
    /// Messages in flight per connection (echo).
    pub pipeline: u64,
    /// Binary messages (echo).
    pub binary: bool,
    /// permessage-deflate negotiated (echo).
    pub compress: bool,
    /// The measured time (echo, handshakes) or the time the connections were held (idle).
    pub duration_s: f64,
    /// Echoes received during the measured time (idle: --idle-echo echoes).
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// `messages / duration_s`.
    pub messages_per_s: f64,
    /// `bytes / duration_s / 10^6`.
    pub mb_per_s: f64,
    /// Echo round trip (echo, idle with --idle-echo) or TCP connect to 101 (handshakes).
    pub latency_us: LatencySummary,
    /// Failed connects and broken connections.
    pub errors: u64,
    /// Connections opened again after a failure.
    pub reconnects: u64,
    /// Handshakes completed (handshakes: measured time; idle: all).
    pub handshakes: u64,
    /// Handshakes per second (handshakes: measured time; idle: while opening).
    pub handshakes_per_s: f64,
    /// Connections open at the end (before closing them).
    pub connections_open: u64,
    /// The first connection error, shown in the table (the JSON has the counts only).
    #[serde(skip)]
    pub first_error: Option<String>,
}

impl Report {
    /// An all-zero report of `mode` for `url`.
    pub fn new(mode: Mode, url: &str) -> Report {
        Report {
            mode,
            url: url.to_owned(),
            connections: 0,
            size: 0,
            pipeline: 0,
            binary: false,
            compress: false,
            duration_s: 0.0,
            messages: 0,
            bytes: 0,
            messages_per_s: 0.0,
            mb_per_s: 0.0,
            latency_us: LatencySummary::default(),
            errors: 0,
            reconnects: 0,
            handshakes: 0,
            handshakes_per_s: 0.0,
            connections_open: 0,
            first_error: None,
        }
    }

    /// Fills the rates from the totals and `duration_s`.
    pub fn compute_rates(&mut self) {
        if self.duration_s > 0.0 {
            self.messages_per_s = self.messages as f64 / self.duration_s;
            self.mb_per_s = self.bytes as f64 / self.duration_s / 1e6;
        }
    }

    /// Prints the report on stdout: JSON or the table.
    pub fn print(&self, json: bool) -> Result<(), Failure> {
        let text = if json {
            let mut line = serde_json::to_string(self)
                .map_err(|e| Failure::new(format!("cannot encode the report: {e}")))?;
            line.push('\n');
            line
        } else {
            self.table()
        };
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`| head`) is not worth an error after the run.
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
        Ok(())
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![("url", self.url.clone())];
        match self.mode {
            Mode::Echo => {
                let kind = if self.binary { "binary" } else { "text" };
                let compress = if self.compress { ", compressed" } else { "" };
                rows.push(("connections", self.connections.to_string()));
                rows.push((
                    "messages",
                    format!(
                        "{} B {kind}{compress}, {} in flight per connection",
                        self.size, self.pipeline
                    ),
                ));
                rows.push(("duration", format!("{:.2} s", self.duration_s)));
                rows.push((
                    "echoes",
                    format!("{} ({:.0} msg/s)", self.messages, self.messages_per_s),
                ));
                rows.push(("throughput", format!("{:.2} MB/s", self.mb_per_s)));
                rows.push(("latency (µs)", latency_row(&self.latency_us)));
            }
            Mode::Idle => {
                rows.push((
                    "connections",
                    format!("{} open of {}", self.connections_open, self.connections),
                ));
                rows.push((
                    "opening",
                    format!(
                        "{} handshakes ({:.0}/s)",
                        self.handshakes, self.handshakes_per_s
                    ),
                ));
                if self.size > 0 {
                    rows.push((
                        "idle echo",
                        format!("{} B, {} echoes", self.size, self.messages),
                    ));
                    rows.push(("latency (µs)", latency_row(&self.latency_us)));
                }
                rows.push(("held", format!("{:.2} s", self.duration_s)));
            }
            Mode::Handshakes => {
                rows.push(("workers", self.connections.to_string()));
                rows.push(("duration", format!("{:.2} s", self.duration_s)));
                rows.push((
                    "handshakes",
                    format!("{} ({:.0}/s)", self.handshakes, self.handshakes_per_s),
                ));
                rows.push(("latency (µs)", latency_row(&self.latency_us)));
            }
        }
        rows.push(("errors", self.errors.to_string()));
        rows.push(("reconnects", self.reconnects.to_string()));
        if let Some(first) = &self.first_error {
            rows.push(("first error", first.clone()));
        }
        let width = rows
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (name, value) in rows {
            let pad = width - name.chars().count();
            out.push_str(name);
            out.extend(std::iter::repeat_n(' ', pad + 2));
            out.push_str(&value);
            out.push('\n');
        }
        out
    }
}

fn latency_row(l: &LatencySummary) -> String {
    format!(
        "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_agreed_fields_in_order() {
        let mut report = Report::new(Mode::Echo, "ws://127.0.0.1:1/");
        report.first_error = Some("not in the JSON".into());
        let json = serde_json::to_value(&report).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "mode",
            "url",
            "connections",
            "size",
            "pipeline",
            "binary",
            "compress",
            "duration_s",
            "messages",
            "bytes",
            "messages_per_s",
            "mb_per_s",
            "latency_us",
            "errors",
            "reconnects",
            "handshakes",
            "handshakes_per_s",
            "connections_open",
        ];
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        expected.sort();
        assert_eq!(keys_sorted, expected);
        assert_eq!(json["mode"], "echo");
        let latency: Vec<&str> = json["latency_us"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(latency.len(), 6);
        for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(json["latency_us"][key].is_f64(), "{key}");
        }
        assert_eq!(
            serde_json::to_value(Mode::Handshakes).unwrap(),
            "handshakes"
        );
    }

    #[test]
    fn table_is_aligned() {
        let mut report = Report::new(Mode::Handshakes, "ws://127.0.0.1:1/");
        report.first_error = Some("connection 0: refused".into());
        let table = report.table();
        let columns: Vec<usize> = table
            .lines()
            .map(|line| {
                let name_end = line.find("  ").unwrap();
                let value_start = name_end + line[name_end..].find(|c: char| c != ' ').unwrap();
                line[..value_start].chars().count()
            })
            .collect();
        assert!(columns.windows(2).all(|w| w[0] == w[1]), "{table}");
    }
}
