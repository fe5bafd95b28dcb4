//! Instructions per echoed message under `valgrind --tool=callgrind`: the same binary and
//! input give the same count whatever else the machine does. Each server runs twice, echoing
//! `n1` and then `n2` messages per connection; the difference of the two totals divided by the
//! difference in messages cancels start-up and handshakes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bench::{human_size, LOAD_CPU, SERVER_CPU};
use crate::generator::{Generator, Line};
use crate::servers::{self, ServerSpec};

/// One profiled workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    /// Connections.
    pub connections: usize,
    /// Payload bytes.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Binary messages.
    pub binary: bool,
    /// Compressed JSON-like text.
    pub compress: bool,
    /// Messages per connection in the short run.
    pub n1: u64,
    /// Messages per connection in the long run.
    pub n2: u64,
}

impl Workload {
    /// For the table.
    pub fn describe(&self) -> String {
        let kind = match (self.binary, self.compress) {
            (_, true) => "JSON text, deflate",
            (true, _) => "binary",
            _ => "text",
        };
        let depth = if self.pipeline > 1 {
            format!(", {} in flight", self.pipeline)
        } else {
            String::new()
        };
        format!(
            "{} {kind}, {} conns{depth}",
            human_size(self.size),
            self.connections
        )
    }

    fn file_id(&self) -> String {
        format!(
            "{}b-{}c-x{}{}{}",
            self.size,
            self.connections,
            self.pipeline,
            if self.binary { "-bin" } else { "" },
            if self.compress { "-deflate" } else { "" }
        )
    }
}

/// The default workloads.
pub fn workloads(smoke: bool) -> Vec<Workload> {
    let w = |connections, size, pipeline, binary, compress, n1, n2| Workload {
        connections,
        size,
        pipeline,
        binary,
        compress,
        n1,
        n2,
    };
    if smoke {
        return vec![w(2, 16, 1, false, false, 10, 60)];
    }
    vec![
        w(10, 16, 1, false, false, 100, 1100),
        w(10, 16, 8, false, false, 96, 1096),
        w(10, 1024, 1, true, false, 100, 1100),
        w(2, 64 << 10, 1, true, false, 20, 220),
        w(1, 1 << 20, 1, true, false, 5, 45),
        w(10, 1024, 1, false, true, 100, 600),
    ]
}

/// One server's count for one workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    /// Server name.
    pub server: String,
    /// Workload description.
    pub workload: String,
    /// Instructions per message.
    pub per_message: f64,
}

/// Total instructions recorded in a callgrind output file.
pub fn total_instructions(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("summary:"))
        .or_else(|| text.lines().find(|l| l.starts_with("totals:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn profile(
    spec: &ServerSpec,
    workload: &Workload,
    messages: u64,
    out: &Path,
) -> Result<u64, String> {
    let prefix = vec![
        "taskset".to_owned(),
        "-c".to_owned(),
        SERVER_CPU.to_string(),
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "-q".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let server = servers::start(spec, &prefix, Duration::from_secs(120))?;
    let mut args = vec![
        server.addr.clone(),
        "--connections".into(),
        workload.connections.to_string(),
        "--size".into(),
        workload.size.to_string(),
        "--pipeline".into(),
        workload.pipeline.to_string(),
        "--messages".into(),
        messages.to_string(),
    ];
    if workload.binary {
        args.push("--binary".into());
    }
    if workload.compress {
        args.push("--compress".into());
    }
    if spec.raw {
        args.push("--raw".into());
    }
    let mut generator = Generator::start(LOAD_CPU, &args)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let report = loop {
        if let Line::Report(report) = generator.next(deadline)? {
            break report;
        }
    };
    drop(generator);
    let expected = messages * workload.connections as u64;
    if report.errors > 0 || report.messages != expected {
        return Err(format!(
            "{}: {} of {expected} messages, {} errors",
            spec.name, report.messages, report.errors
        ));
    }
    if !server.stop(Duration::from_secs(120)) {
        return Err(format!("{}: did not exit under valgrind", spec.name));
    }
    total_instructions(out).ok_or_else(|| format!("{}: no total in {}", out.display(), spec.name))
}

/// Profiles every server (that speaks the workload) on every workload.
pub fn run(
    servers: &[ServerSpec],
    workloads: &[Workload],
    dir: &Path,
) -> (Vec<Count>, Vec<String>) {
    std::fs::create_dir_all(dir).ok();
    let mut counts = Vec::new();
    let mut failures = Vec::new();
    for workload in workloads {
        for spec in servers {
            if workload.compress && !spec.compression {
                continue;
            }
            let file = |n: u64| -> PathBuf {
                dir.join(format!("{}-{}-{n}.out", spec.name, workload.file_id()))
            };
            let result = profile(spec, workload, workload.n1, &file(workload.n1)).and_then(|i1| {
                let i2 = profile(spec, workload, workload.n2, &file(workload.n2))?;
                let messages = (workload.n2 - workload.n1) * workload.connections as u64;
                Ok(i2.saturating_sub(i1) as f64 / messages as f64)
            });
            match result {
                Ok(per_message) => {
                    eprintln!(
                        "callgrind {} {}: {per_message:.0} instructions/message",
                        spec.name,
                        workload.describe()
                    );
                    counts.push(Count {
                        server: spec.name.clone(),
                        workload: workload.describe(),
                        per_message,
                    })
                }
                Err(error) => {
                    eprintln!("callgrind: {error}");
                    failures.push(error);
                }
            }
        }
    }
    (counts, failures)
}

/// The table: one row per workload, one column per server.
pub fn markdown(counts: &[Count], servers: &[String], command: &str, build: &str) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "Server instructions per echoed message under callgrind: the difference between a \
         run of `n2` and one of `n1` messages per connection, divided by the extra messages \
         (start-up and handshakes cancel out). Counts repeat to about 1% (how many messages \
         one read brings depends on scheduling), whatever else the machine does. \
         fullduplex {build}. Command: `{command}`.\n"
    )
    .ok();
    let present: Vec<&String> = servers
        .iter()
        .filter(|s| counts.iter().any(|c| &c.server == *s))
        .collect();
    out.push_str("| workload |");
    for s in &present {
        write!(out, " {s} |").ok();
    }
    out.push_str(" fullduplex × fastwebsockets |\n|---|");
    for _ in &present {
        out.push_str("---:|");
    }
    out.push_str("---:|\n");
    let mut workloads: Vec<&String> = Vec::new();
    for c in counts {
        if !workloads.contains(&&c.workload) {
            workloads.push(&c.workload);
        }
    }
    for w in workloads {
        write!(out, "| {w} |").ok();
        let get = |s: &str| {
            counts
                .iter()
                .find(|c| &c.workload == w && c.server == s)
                .map(|c| c.per_message)
        };
        for s in &present {
            match get(s) {
                Some(v) => write!(out, " {v:.0} |").ok(),
                None => write!(out, " - |").ok(),
            };
        }
        match (get("fullduplex"), get("fastwebsockets")) {
            (Some(a), Some(b)) => writeln!(out, " {:.2}× |", a / b).ok(),
            _ => writeln!(out, " - |").ok(),
        };
    }
    out
}
