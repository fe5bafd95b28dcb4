//! The load report: what `fdx bench` and `fullduplex-bench load` print at the end of a run,
//! as one JSON object or as a short aligned table.
//!
//! The JSON field names and their order are read by scripts, by the benchmark crate (which
//! runs `fdx bench --json` as one of its generators) and by the tables in BENCHMARKS.md: keep
//! them. A test pins the exact bytes of both forms.

use serde::{Deserialize, Serialize};

/// Which kind of run a report describes (`"echo"`, `"idle"` or `"handshakes"` in JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Messages and their echoes.
    #[default]
    Echo,
    /// Connections held open.
    Idle,
    /// New connections per second.
    Handshakes,
}

/// Percentiles of the recorded latencies, in microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest.
    pub max: f64,
    /// The mean.
    pub mean: f64,
}

/// The report of one load run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The kind of run.
    pub mode: LoadMode,
    /// The target.
    pub url: String,
    /// Connections (echo, idle) or concurrent handshakes (handshakes).
    pub connections: u64,
    /// Message size (echo), or the idle echo's size (idle).
    pub size: u64,
    /// Messages in flight per connection (echo).
    pub pipeline: u64,
    /// Binary messages (echo).
    pub binary: bool,
    /// Compressed messages: permessage-deflate negotiated (echo).
    pub compress: bool,
    /// The measured time (echo, handshakes) or the time the connections were held (idle).
    pub duration_s: f64,
    /// Echoes received during the measured time (idle: idle echoes).
    pub messages: u64,
    /// Their payload bytes (one way).
    pub bytes: u64,
    /// `messages / duration_s`.
    pub messages_per_s: f64,
    /// `bytes / duration_s / 10^6`.
    pub mb_per_s: f64,
    /// Echo round trip, from the write of its batch (echo, idle with idle echoes), or TCP
    /// connect to 101 (handshakes).
    pub latency_us: LatencySummary,
    /// Failed connects, broken connections and bad echoes.
    pub errors: u64,
    /// Connections opened again after a failure (0 for a generator that does not reconnect).
    pub reconnects: u64,
    /// Handshakes completed (handshakes: in the measured time; idle: all).
    pub handshakes: u64,
    /// Handshakes per second (handshakes: in the measured time; idle: while opening).
    pub handshakes_per_s: f64,
    /// Connections open at the end (before closing them).
    pub connections_open: u64,
    /// The first connection error, shown in the table (the JSON has the counts only).
    #[serde(skip)]
    pub first_error: Option<String>,
}

impl LoadReport {
    /// An all-zero report of `mode` for `url`.
    pub fn new(mode: LoadMode, url: &str) -> LoadReport {
        LoadReport {
            mode,
            url: url.to_owned(),
            ..LoadReport::default()
        }
    }

    /// Fills the rates from the totals and `duration_s` (left as they are when it is 0).
    pub fn compute_rates(&mut self) {
        if self.duration_s > 0.0 {
            self.messages_per_s = self.messages as f64 / self.duration_s;
            self.mb_per_s = self.bytes as f64 / self.duration_s / 1e6;
        }
    }

    /// The report as one line of JSON, with its newline.
    ///
    /// # Errors
    ///
    /// Only if `serde_json` cannot encode it (it always can: no maps with non-string keys).
    pub fn json_line(&self) -> Result<String, serde_json::Error> {
        let mut line = serde_json::to_string(self)?;
        line.push('\n');
        Ok(line)
    }

    /// The human-readable table: one `name  value` line per row, values aligned.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![("url", self.url.clone())];
        match self.mode {
            LoadMode::Echo => {
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
            LoadMode::Idle => {
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
            LoadMode::Handshakes => {
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

    /// A report with every field set to a distinct value.
    fn sample(mode: LoadMode) -> LoadReport {
        LoadReport {
            mode,
            url: "ws://127.0.0.1:9001/".into(),
            connections: 100,
            size: 16,
            pipeline: 8,
            binary: true,
            compress: true,
            duration_s: 3.0,
            messages: 1_234_567,
            bytes: 19_753_072,
            messages_per_s: 411_522.333_333_333_3,
            mb_per_s: 6.584_357_333_333_333,
            latency_us: LatencySummary {
                p50: 120.5,
                p90: 250.25,
                p99: 1_000.0,
                p999: 2_047.875,
                max: 15_000.125,
                mean: 140.062_5,
            },
            errors: 2,
            reconnects: 1,
            handshakes: 103,
            handshakes_per_s: 34.333_333_333_333_336,
            connections_open: 99,
            first_error: Some("connection 7: refused".into()),
        }
    }

    /// The exact bytes of `fdx bench --json` (which scripts and BENCHMARKS.md read): field
    /// names, order, number formatting; `first_error` stays out.
    #[test]
    fn json_line_is_pinned() {
        let expected = concat!(
            r#"{"mode":"echo","url":"ws://127.0.0.1:9001/","connections":100,"size":16,"#,
            r#""pipeline":8,"binary":true,"compress":true,"duration_s":3.0,"messages":1234567,"#,
            r#""bytes":19753072,"messages_per_s":411522.3333333333,"mb_per_s":6.584357333333333,"#,
            r#""latency_us":{"p50":120.5,"p90":250.25,"p99":1000.0,"p999":2047.875,"#,
            r#""max":15000.125,"mean":140.0625},"errors":2,"reconnects":1,"handshakes":103,"#,
            r#""handshakes_per_s":34.333333333333336,"connections_open":99}"#,
            "\n"
        );
        assert_eq!(sample(LoadMode::Echo).json_line().unwrap(), expected);
        let zero = LoadReport::new(LoadMode::Handshakes, "ws://h:1/");
        assert_eq!(
            zero.json_line().unwrap(),
            concat!(
                r#"{"mode":"handshakes","url":"ws://h:1/","connections":0,"size":0,"pipeline":0,"#,
                r#""binary":false,"compress":false,"duration_s":0.0,"messages":0,"bytes":0,"#,
                r#""messages_per_s":0.0,"mb_per_s":0.0,"latency_us":{"p50":0.0,"p90":0.0,"#,
                r#""p99":0.0,"p999":0.0,"max":0.0,"mean":0.0},"errors":0,"reconnects":0,"#,
                r#""handshakes":0,"handshakes_per_s":0.0,"connections_open":0}"#,
                "\n"
            )
        );
        let idle = LoadReport::new(LoadMode::Idle, "u").json_line().unwrap();
        assert!(idle.starts_with(r#"{"mode":"idle","#), "{idle}");
    }

    /// The benchmark crate prints the report through `serde_json::Value` and reads it back
    /// (its own generator's and `fdx bench`'s): the same object either way.
    #[test]
    fn json_reads_back_and_value_keeps_the_fields() {
        let report = sample(LoadMode::Idle);
        let line = report.json_line().unwrap();
        let back: LoadReport = serde_json::from_str(&line).unwrap();
        assert_eq!(
            back,
            LoadReport {
                first_error: None,
                ..report.clone()
            }
        );
        let value = serde_json::to_value(&report).unwrap();
        let from_value: LoadReport = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(from_value, back);
        assert_eq!(value.as_object().unwrap().len(), 18);
    }

    /// The exact table of each mode.
    #[test]
    fn tables_are_pinned() {
        assert_eq!(
            sample(LoadMode::Echo).table(),
            "url           ws://127.0.0.1:9001/\n\
             connections   100\n\
             messages      16 B binary, compressed, 8 in flight per connection\n\
             duration      3.00 s\n\
             echoes        1234567 (411522 msg/s)\n\
             throughput    6.58 MB/s\n\
             latency (µs)  p50 120.5  p90 250.2  p99 1000.0  p99.9 2047.9  max 15000.1  mean 140.1\n\
             errors        2\n\
             reconnects    1\n\
             first error   connection 7: refused\n"
        );
        assert_eq!(
            sample(LoadMode::Idle).table(),
            "url           ws://127.0.0.1:9001/\n\
             connections   99 open of 100\n\
             opening       103 handshakes (34/s)\n\
             idle echo     16 B, 1234567 echoes\n\
             latency (µs)  p50 120.5  p90 250.2  p99 1000.0  p99.9 2047.9  max 15000.1  mean 140.1\n\
             held          3.00 s\n\
             errors        2\n\
             reconnects    1\n\
             first error   connection 7: refused\n"
        );
        assert_eq!(
            LoadReport::new(LoadMode::Idle, "u").table(),
            "url          u\n\
             connections  0 open of 0\n\
             opening      0 handshakes (0/s)\n\
             held         0.00 s\n\
             errors       0\n\
             reconnects   0\n"
        );
        let mut handshakes = sample(LoadMode::Handshakes);
        handshakes.first_error = None;
        assert_eq!(
            handshakes.table(),
            "url           ws://127.0.0.1:9001/\n\
             workers       100\n\
             duration      3.00 s\n\
             handshakes    103 (34/s)\n\
             latency (µs)  p50 120.5  p90 250.2  p99 1000.0  p99.9 2047.9  max 15000.1  mean 140.1\n\
             errors        2\n\
             reconnects    1\n"
        );
    }

    #[test]
    fn rates_come_from_the_totals() {
        let mut report = LoadReport::new(LoadMode::Echo, "u");
        report.compute_rates();
        assert_eq!(report.messages_per_s, 0.0);
        report.duration_s = 2.0;
        report.messages = 10;
        report.bytes = 3_000_000;
        report.compute_rates();
        assert_eq!(report.messages_per_s, 5.0);
        assert_eq!(report.mb_per_s, 1.5);
    }
}
