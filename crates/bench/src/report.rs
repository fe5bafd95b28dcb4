//! Aggregating runs (medians, paired ratios) and writing the markdown tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bench::{CellSpec, EchoRun, HandshakeRun, IdleRun, Timing};

/// Everything one full run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Machine, kernel, versions.
    pub machine: Vec<(String, String)>,
    /// The command line.
    pub command: String,
    /// The load generator used.
    #[serde(default)]
    pub generator: String,
    /// Rounds.
    pub rounds: usize,
    /// Timing per echo run.
    pub timing: Option<Timing>,
    /// Cells in order.
    pub cells: Vec<CellSpec>,
    /// Servers in order.
    pub servers: Vec<String>,
    /// Echo runs.
    pub echo: Vec<EchoRun>,
    /// Idle memory runs.
    pub idle: Vec<IdleRun>,
    /// Connections in the idle runs.
    pub idle_connections: usize,
    /// Handshake runs.
    pub handshakes: Vec<HandshakeRun>,
    /// Runs that failed, with why.
    pub failures: Vec<String>,
    /// When several runs were merged ([`Results::merge`]): each one's command line and the
    /// fullduplex build it measured, in order.
    #[serde(default)]
    pub merged: Vec<String>,
}

impl Results {
    /// Joins several runs into one, as if their rounds had been rounds of one run: the rounds
    /// of each later run are numbered after those before it, so every per-round pairing stays
    /// within one run and the medians are taken over all rounds. Cells and servers keep the
    /// first run's order (those only a later run has come after); the machine and timing are
    /// the first run's.
    ///
    /// On a machine whose rates move by ±20% from one run to the next, a verdict judged over
    /// the rounds of several runs does not flip with the run.
    pub fn merge(runs: Vec<Results>) -> Option<Results> {
        let mut runs = runs.into_iter();
        let mut merged = runs.next()?;
        merged.merged = vec![Self::run_line(&merged)];
        for run in runs {
            merged.merged.push(Self::run_line(&run));
            let offset = merged.rounds;
            merged.rounds += run.rounds;
            for cell in run.cells {
                if !merged.cells.iter().any(|c| c.id == cell.id) {
                    merged.cells.push(cell);
                }
            }
            for server in run.servers {
                if !merged.servers.contains(&server) {
                    merged.servers.push(server);
                }
            }
            merged.echo.extend(run.echo.into_iter().map(|mut r| {
                r.round += offset;
                r
            }));
            merged.idle.extend(run.idle.into_iter().map(|mut r| {
                r.round += offset;
                r
            }));
            merged
                .handshakes
                .extend(run.handshakes.into_iter().map(|mut r| {
                    r.round += offset;
                    r
                }));
            merged.failures.extend(run.failures);
        }
        Some(merged)
    }

    /// A merged run's line: its command and the build it measured.
    fn run_line(run: &Results) -> String {
        let build = run
            .machine
            .iter()
            .find(|(key, _)| key == "fullduplex")
            .map_or("", |(_, value)| value.as_str());
        format!("`{}` (fullduplex {build})", run.command)
    }
}

/// The median (of a non-empty slice; NaN for an empty one).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The server the targets are about.
const FULLDUPLEX: &str = "fullduplex";
/// The same library echoing messages borrowed (`recv_many` and its outbox).
const FULLDUPLEX_BORROWED: &str = "fullduplex-borrowed";
/// The same library echoing pieces as they arrive (`WebSocket::into_streaming`).
const FULLDUPLEX_STREAMING: &str = "fullduplex-streaming";
/// The echo server with all connections in one `WebSocketSet`.
const FULLDUPLEX_SET: &str = "fullduplex-set";
/// µWebSockets (`peers/uws_echo.c`), when `peers/build_uws.sh` has built it.
const UWEBSOCKETS: &str = "uwebsockets";

/// Our own servers are set in bold in the tables (not the `fullduplex-before` baseline).
fn is_ours(server: &str) -> bool {
    server == FULLDUPLEX
        || server == FULLDUPLEX_BORROWED
        || server == FULLDUPLEX_STREAMING
        || server == FULLDUPLEX_SET
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Runs of one cell by server, then by round.
type ByServer<'a> = BTreeMap<&'a str, BTreeMap<usize, &'a EchoRun>>;

impl Results {
    fn cell_runs(&self, cell: &str) -> ByServer<'_> {
        let mut map: ByServer<'_> = BTreeMap::new();
        for run in self.echo.iter().filter(|r| r.cell == cell) {
            map.entry(run.server.as_str())
                .or_default()
                .insert(run.round, run);
        }
        map
    }

    /// Median over rounds of `value(server) / reference(round)`, pairing runs of one round.
    fn paired(
        runs: &ByServer<'_>,
        server: &str,
        reference: impl Fn(usize) -> Option<f64>,
        value: impl Fn(&EchoRun) -> f64,
    ) -> f64 {
        median(&Self::paired_ratios(runs, server, reference, value))
    }

    /// `value(server) / reference(round)` for every round in which both ran.
    fn paired_ratios(
        runs: &ByServer<'_>,
        server: &str,
        reference: impl Fn(usize) -> Option<f64>,
        value: impl Fn(&EchoRun) -> f64,
    ) -> Vec<f64> {
        let Some(own) = runs.get(server) else {
            return Vec::new();
        };
        own.iter()
            .filter_map(|(round, run)| Some(value(run) / reference(*round)?))
            .collect()
    }

    fn rate(runs: &ByServer<'_>, server: &str, round: usize) -> Option<f64> {
        Some(runs.get(server)?.get(&round)?.report.messages_per_s)
    }

    fn cpu(runs: &ByServer<'_>, server: &str, round: usize) -> Option<f64> {
        Some(runs.get(server)?.get(&round)?.cpu_us_per_msg)
    }

    fn user_cpu(runs: &ByServer<'_>, server: &str, round: usize) -> Option<f64> {
        runs.get(server)?.get(&round)?.user_us_per_msg
    }

    /// In one cell: `server`'s messages/s against `reference`'s, one ratio per round in which
    /// both ran (their median is the paired ratio).
    fn rate_ratios(&self, server: &str, reference: &str, cell: &str) -> Vec<f64> {
        let runs = self.cell_runs(cell);
        Self::paired_ratios(
            &runs,
            server,
            |r| Self::rate(&runs, reference, r),
            |r| r.report.messages_per_s,
        )
    }

    /// In one cell: `server`'s CPU per message against fastwebsockets', in all and in user
    /// space alone (paired medians; NaN where not measured).
    fn cpu_split_vs_fastwebsockets(&self, server: &str, cell: &str) -> (f64, f64) {
        let runs = self.cell_runs(cell);
        let all = Self::paired(
            &runs,
            server,
            |r| Self::cpu(&runs, "fastwebsockets", r),
            |r| r.cpu_us_per_msg,
        );
        let user = Self::paired(
            &runs,
            server,
            |r| Self::user_cpu(&runs, "fastwebsockets", r),
            |r| r.user_us_per_msg.unwrap_or(f64::NAN),
        );
        (all, user)
    }

    /// fullduplex's paired ratios in one cell: (msg/s vs best Rust peer, CPU vs
    /// fastwebsockets, msg/s vs fastwebsockets, msg/s vs TCP, CPU vs python).
    fn ours(&self, cell: &str) -> [f64; 5] {
        self.ratios_of(FULLDUPLEX, cell)
    }

    /// [`ours`](Self::ours) for another server (the streaming variant of the echo).
    fn ratios_of(&self, server: &str, cell: &str) -> [f64; 5] {
        let runs = self.cell_runs(cell);
        let best_peer = |round| {
            let a = Self::rate(&runs, "fastwebsockets", round);
            let b = Self::rate(&runs, "tokio-tungstenite", round);
            match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        };
        let rate = |r: &EchoRun| r.report.messages_per_s;
        let cpu = |r: &EchoRun| r.cpu_us_per_msg;
        [
            Self::paired(&runs, server, best_peer, rate),
            Self::paired(
                &runs,
                server,
                |r| Self::cpu(&runs, "fastwebsockets", r),
                cpu,
            ),
            Self::paired(
                &runs,
                server,
                |r| Self::rate(&runs, "fastwebsockets", r),
                rate,
            ),
            Self::paired(&runs, server, |r| Self::rate(&runs, "tcp-echo", r), rate),
            Self::paired(
                &runs,
                server,
                |r| Self::cpu(&runs, "python-websockets", r),
                cpu,
            ),
        ]
    }

    /// The echo table.
    pub fn echo_table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| cell | server | msg/s median (min-max) | × fastwebsockets | × TCP echo | \
             × µWebSockets | p50 / p99 / max µs | server CPU µs/msg (user) | CPU × fastwebsockets | \
             other load CPU 0 / 1 |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for cell in &self.cells {
            let runs = self.cell_runs(&cell.id);
            for server in &self.servers {
                let Some(own) = runs.get(server.as_str()) else {
                    continue;
                };
                let list: Vec<&EchoRun> = own.values().copied().collect();
                let rates: Vec<f64> = list.iter().map(|r| r.report.messages_per_s).collect();
                let p50: Vec<f64> = list.iter().map(|r| r.report.latency_us.p50).collect();
                let p99: Vec<f64> = list.iter().map(|r| r.report.latency_us.p99).collect();
                let worst: Vec<f64> = list.iter().map(|r| r.report.latency_us.max).collect();
                let cpu: Vec<f64> = list.iter().map(|r| r.cpu_us_per_msg).collect();
                let user: Vec<f64> = list.iter().filter_map(|r| r.user_us_per_msg).collect();
                let cpu_shown = if user.is_empty() {
                    format!("{:.2}", median(&cpu))
                } else {
                    format!("{:.2} ({:.2})", median(&cpu), median(&user))
                };
                let other: Vec<f64> = list.iter().map(|r| r.cpu0_other).collect();
                let other1: Vec<f64> = list.iter().map(|r| r.cpu1_other).collect();
                let rate = |r: &EchoRun| r.report.messages_per_s;
                let rate_vs = |reference: &str| {
                    Self::paired(&runs, server, |r| Self::rate(&runs, reference, r), rate)
                };
                let vs_fw = rate_vs("fastwebsockets");
                let vs_tcp = rate_vs("tcp-echo");
                let vs_uws = rate_vs(UWEBSOCKETS);
                let cpu_fw = Self::paired(
                    &runs,
                    server,
                    |r| Self::cpu(&runs, "fastwebsockets", r),
                    |r| r.cpu_us_per_msg,
                );
                let name = if is_ours(server) {
                    format!("**{server}**")
                } else {
                    server.clone()
                };
                writeln!(
                    out,
                    "| {} `{}` | {name} | {} ({}-{}) | {} | {} | {} | {:.0} / {:.0} / {:.0} | {} | {} | {:.0}% / {:.0}% |",
                    cell.describe(),
                    cell.id,
                    rate_fmt(median(&rates)),
                    rate_fmt(min(&rates)),
                    rate_fmt(max(&rates)),
                    ratio_fmt(vs_fw),
                    ratio_fmt(vs_tcp),
                    ratio_fmt(vs_uws),
                    median(&p50),
                    median(&p99),
                    max(&worst),
                    cpu_shown,
                    ratio_fmt(cpu_fw),
                    median(&other) * 100.0,
                    median(&other1) * 100.0,
                )
                .ok();
            }
        }
        out
    }

    /// Idle memory and handshake tables.
    pub fn idle_table(&self) -> String {
        let mut out = String::new();
        writeln!(
            out,
            "| server | bytes/conn, handshake only | bytes/conn, after one 1 KiB echo | handshakes/s | server CPU µs/handshake |\n|---|---:|---:|---:|---:|"
        )
        .ok();
        for server in &self.servers {
            let idle: Vec<&IdleRun> = self.idle.iter().filter(|r| &r.server == server).collect();
            let hs: Vec<&HandshakeRun> = self
                .handshakes
                .iter()
                .filter(|r| &r.server == server)
                .collect();
            if idle.is_empty() && hs.is_empty() {
                continue;
            }
            let a: Vec<f64> = idle.iter().map(|r| r.per_conn_idle).collect();
            let b: Vec<f64> = idle.iter().map(|r| r.per_conn_echo).collect();
            let h: Vec<f64> = hs.iter().map(|r| r.per_s).collect();
            let c: Vec<f64> = hs.iter().map(|r| r.cpu_us).collect();
            let name = if is_ours(server) {
                format!("**{server}**")
            } else {
                server.clone()
            };
            writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                bytes_fmt(median(&a)),
                bytes_fmt(median(&b)),
                if h.is_empty() {
                    "n/a".into()
                } else {
                    rate_fmt(median(&h))
                },
                if c.is_empty() {
                    "n/a".into()
                } else {
                    format!("{:.1}", median(&c))
                },
            )
            .ok();
        }
        out
    }

    fn idle_of(&self, server: &str) -> (f64, f64) {
        let runs: Vec<&IdleRun> = self.idle.iter().filter(|r| r.server == server).collect();
        let a: Vec<f64> = runs.iter().map(|r| r.per_conn_idle).collect();
        let b: Vec<f64> = runs.iter().map(|r| r.per_conn_echo).collect();
        (median(&a), median(&b))
    }

    /// The targets, each with the measured figure and met / missed.
    pub fn targets_table(&self) -> String {
        let mut out = String::from("| target | cell | measured | |\n|---|---|---:|---|\n");
        let mut row = |target: &str, cell: &str, value: f64, shown: String, met: bool| {
            let verdict = if value.is_nan() {
                "not measured"
            } else if met {
                "met"
            } else {
                "**missed**"
            };
            writeln!(out, "| {target} | {cell} | {shown} | {verdict} |").ok();
        };
        for cell in self.cells.iter().filter(|c| !c.compress) {
            // The echo of owned messages (`recv` and `feed`) is the one the targets are about;
            // the borrowed echo (`recv_many`) is shown beside it where it ran.
            let variants = [
                (FULLDUPLEX, ""),
                (FULLDUPLEX_BORROWED, ", borrowed echo (`recv_many`)"),
            ];
            for (server, variant) in variants {
                if server != FULLDUPLEX && !self.cell_runs(&cell.id).contains_key(server) {
                    continue;
                }
                self.server_target_rows(cell, server, variant, &mut row);
            }
            let [_, _, _, vs_tcp, _] = self.ours(&cell.id);
            if cell.size >= 1 << 20 {
                row(
                    "1 MiB: ≥ 0.9× the TCP echo's rate",
                    &cell.describe(),
                    vs_tcp,
                    ratio_fmt(vs_tcp),
                    vs_tcp >= 0.9,
                );
                let streaming = self.ratios_of(FULLDUPLEX_STREAMING, &cell.id)[3];
                if !streaming.is_nan() {
                    row(
                        "1 MiB: ≥ 0.9× the TCP echo's rate (streaming echo)",
                        &cell.describe(),
                        streaming,
                        ratio_fmt(streaming),
                        streaming >= 0.9,
                    );
                }
            }
        }
        for cell in self.cells.iter().filter(|c| c.compress) {
            let [_, _, _, _, cpu_py] = self.ours(&cell.id);
            row(
                "compression: CPU/msg ≤ Python websockets (C speedups)",
                &cell.describe(),
                cpu_py,
                ratio_fmt(cpu_py),
                cpu_py <= 1.0,
            );
        }
        let (idle, echo) = self.idle_of("fullduplex");
        let cell = format!("{} connections", self.idle_connections);
        row(
            "idle memory ≤ 1 KiB/conn (aim 512 B), handshake only",
            &cell,
            idle,
            bytes_fmt(idle),
            idle <= 1024.0,
        );
        row(
            "idle memory ≤ 1 KiB/conn (aim 512 B), after one 1 KiB echo",
            &cell,
            echo,
            bytes_fmt(echo),
            echo <= 1024.0,
        );
        if self.idle.iter().any(|r| r.server == FULLDUPLEX_SET) {
            let (idle, echo) = self.idle_of(FULLDUPLEX_SET);
            row(
                "idle memory ≤ 1 KiB/conn, handshake only (`WebSocketSet` echo)",
                &cell,
                idle,
                bytes_fmt(idle),
                idle <= 1024.0,
            );
            row(
                "idle memory ≤ 1 KiB/conn, after one 1 KiB echo (`WebSocketSet` echo)",
                &cell,
                echo,
                bytes_fmt(echo),
                echo <= 1024.0,
            );
        }
        out
    }

    /// The whole generated section.
    /// The CPU, rate and pipelined target rows of one echo cell for one of our servers;
    /// `variant` is appended to the cell's description.
    fn server_target_rows(
        &self,
        cell: &CellSpec,
        server: &str,
        variant: &str,
        row: &mut impl FnMut(&str, &str, f64, String, bool),
    ) {
        let [vs_best, cpu_fw, vs_fw, vs_tcp, _] = self.ratios_of(server, &cell.id);
        // What no WebSocket code can go below: the plain TCP echo's CPU, and how our own
        // user-space part compares.
        let (_, user_fw) = self.cpu_split_vs_fastwebsockets(server, &cell.id);
        let (tcp_fw, _) = self.cpu_split_vs_fastwebsockets("tcp-echo", &cell.id);
        let (uws_fw, _) = self.cpu_split_vs_fastwebsockets(UWEBSOCKETS, &cell.id);
        let mut shown = ratio_fmt(cpu_fw);
        if !tcp_fw.is_nan() {
            shown += &format!(" (TCP echo {}", ratio_fmt(tcp_fw));
            if !uws_fw.is_nan() {
                shown += &format!("; µWebSockets {}", ratio_fmt(uws_fw));
            }
            if !user_fw.is_nan() {
                shown += &format!("; user space {}", ratio_fmt(user_fw));
            }
            shown += ")";
        }
        row(
            "server CPU/msg ≤ 0.85× fastwebsockets",
            &format!("{}{variant}", cell.describe()),
            cpu_fw,
            shown,
            cpu_fw <= 0.85,
        );
        row(
            "msg/s ≥ 1.1× best Rust peer",
            &format!("{}{variant}", cell.describe()),
            vs_best,
            ratio_fmt(vs_best),
            vs_best >= 1.1,
        );
        let uws_rounds = self.rate_ratios(server, UWEBSOCKETS, &cell.id);
        let vs_uws = median(&uws_rounds);
        if cell.pipeline > 1 && !vs_uws.is_nan() {
            // The rounds' spread says whether a gap is larger than the run-to-run noise.
            let spread = if uws_rounds.len() > 1 {
                format!(
                    ", rounds {:.2}-{}",
                    min(&uws_rounds),
                    ratio_fmt(max(&uws_rounds))
                )
            } else {
                String::new()
            };
            row(
                "pipelined: ≥ µWebSockets' rate",
                &format!("{}{variant}", cell.describe()),
                vs_uws,
                format!(
                    "{} µWebSockets{spread} ({} fastwebsockets, {} TCP)",
                    ratio_fmt(vs_uws),
                    ratio_fmt(vs_fw),
                    ratio_fmt(vs_tcp)
                ),
                vs_uws >= 1.0,
            );
        } else if cell.pipeline > 1 {
            row(
                "pipelined: ≈ 8× fastwebsockets (µWebSockets' rate ≈ the TCP echo's)",
                &format!("{}{variant}", cell.describe()),
                vs_fw,
                format!(
                    "{} fastwebsockets, {} TCP",
                    ratio_fmt(vs_fw),
                    ratio_fmt(vs_tcp)
                ),
                vs_fw >= 8.0 || vs_tcp >= 1.0,
            );
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("### Machine and versions\n\n");
        for (key, value) in &self.machine {
            // A merged report names each run's build below.
            if key == "fullduplex" && self.merged.len() > 1 {
                continue;
            }
            writeln!(out, "- {key}: {value}").ok();
        }
        if let Some(t) = &self.timing {
            writeln!(
                out,
                "- {} rounds, interleaved (every server once per cell per round); each run: a fresh \
                 server on CPU 0, the load generator on CPU 1, {} s warm-up, {} s measured",
                self.rounds, t.warmup, t.duration
            )
            .ok();
        }
        if !self.generator.is_empty() {
            writeln!(out, "- load generator: {}", self.generator).ok();
        }
        if self.merged.len() > 1 {
            writeln!(
                out,
                "- {} runs merged (`fullduplex-bench report` with their results files): their \
                 rounds are taken together, each pairing within its own run; commands:",
                self.merged.len()
            )
            .ok();
            for run in &self.merged {
                writeln!(out, "  - {run}").ok();
            }
            out.push('\n');
        } else {
            writeln!(out, "- command: `{}`\n", self.command).ok();
        }
        out.push_str("### Targets\n\n");
        out.push_str(&self.targets_table());
        out.push_str("\n### Echo\n\n");
        out.push_str(
            "Ratios are medians of per-round ratios (runs of one round are paired). CPU is the \
             server's user + system time over the measured window (`/proc/PID/stat`) divided by \
             the messages echoed in it; in brackets its user-space part (the rest is the \
             kernel's: system calls and, on loopback, much of the peer's TCP work). Latency is per message, from the write of its batch to \
             its echo, with both CPUs busy: medians over the rounds of p50 and p99, and the \
             largest in any round (a connection that waits while others are served shows \
             there). \"Other load\" is the share of the window that CPU 0 \
             spent on anything but the server (such as softirq work) and CPU 1 on anything but \
             the generator (medians over the rounds); a run where either exceeds 25% is \
             repeated once.\n\n",
        );
        out.push_str(&self.echo_table());
        writeln!(
            out,
            "\n### Idle memory and handshakes\n\nServer RSS growth (`VmRSS`) over {} idle \
             connections, divided by their number (user space only: kernel socket buffers are \
             not in it). Handshakes: 32 concurrent connect-upgrade-close loops.\n",
            self.idle_connections
        )
        .ok();
        out.push_str(&self.idle_table());
        if !self.failures.is_empty() {
            out.push_str("\n### Failed runs\n\n");
            for failure in &self.failures {
                writeln!(out, "- {failure}").ok();
            }
        }
        out
    }
}

fn rate_fmt(value: f64) -> String {
    if !value.is_finite() {
        "-".into()
    } else if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn ratio_fmt(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.2}×")
    } else {
        "-".into()
    }
}

fn bytes_fmt(value: f64) -> String {
    if !value.is_finite() {
        "-".into()
    } else if value >= 10_240.0 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{value:.0} B")
    }
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in `path`, keeping
/// everything else. Missing markers are added before a `## Fan-out` section (the push server's,
/// written by hand) or else at the end.
pub fn write_section(path: &Path, name: &str, body: &str) -> std::io::Result<()> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let block = format!("{begin}\n{body}\n{end}");
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{block}{}", &current[..a], &current[b + end.len()..])
        }
        _ => match current.find("\n## Fan-out") {
            Some(at) => format!(
                "{}\n\n{block}\n{}",
                current[..at].trim_end(),
                &current[at..]
            ),
            None => format!("{}\n\n{block}\n", current.trim_end()),
        },
    };
    std::fs::write(path, updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    fn run(server: &str, rate: f64, cpu: f64, user: Option<f64>) -> EchoRun {
        EchoRun {
            cell: "16B-100".into(),
            server: server.into(),
            round: 1,
            report: fullduplex_loadgen::LoadReport {
                messages_per_s: rate,
                messages: rate as u64,
                ..Default::default()
            },
            server_cpu_s: cpu,
            cpu_us_per_msg: cpu,
            user_us_per_msg: user,
            cpu0_other: 0.0,
            cpu1_other: 0.0,
        }
    }

    fn one_cell(echo: Vec<EchoRun>) -> Results {
        Results {
            rounds: 1,
            cells: vec![CellSpec {
                id: "16B-100".into(),
                connections: 100,
                size: 16,
                pipeline: 1,
                binary: false,
                compress: false,
            }],
            servers: echo.iter().map(|r| r.server.clone()).collect(),
            echo,
            ..Default::default()
        }
    }

    #[test]
    fn cpu_target_shows_the_tcp_floor_and_the_user_space_part() {
        let results = one_cell(vec![
            run(FULLDUPLEX, 100.0, 9.0, Some(1.0)),
            run("fastwebsockets", 100.0, 10.0, Some(2.0)),
            run("tcp-echo", 100.0, 8.8, Some(0.5)),
        ]);
        let targets = results.targets_table();
        assert!(
            targets.contains("| 0.90× (TCP echo 0.88×; user space 0.50×) | **missed** |"),
            "{targets}"
        );
        let table = results.echo_table();
        assert!(table.contains("| 9.00 (1.00) |"), "{table}");
        assert!(table.contains("| 8.80 (0.50) |"), "{table}");
        // Runs saved before the split was measured show the total alone.
        let old = one_cell(vec![
            run(FULLDUPLEX, 100.0, 8.0, None),
            run("fastwebsockets", 100.0, 10.0, None),
            run("tcp-echo", 100.0, 8.8, None),
        ]);
        assert!(old
            .targets_table()
            .contains("| 0.80× (TCP echo 0.88×) | met |"));
        assert!(old.echo_table().contains("| 8.00 |"));
    }

    #[test]
    fn the_echo_table_shows_the_worst_latency_of_any_round() {
        let latency = |p50: f64, p99: f64, max: f64| fullduplex_loadgen::LatencySummary {
            p50,
            p99,
            max,
            ..Default::default()
        };
        let mut rounds = vec![
            run(FULLDUPLEX, 100.0, 9.0, None),
            run(FULLDUPLEX, 100.0, 9.0, None),
            run(FULLDUPLEX, 100.0, 9.0, None),
        ];
        for (round, (run, latency)) in rounds
            .iter_mut()
            .zip([
                latency(5.0, 9.0, 12.0),
                latency(6.0, 10.0, 1900.0),
                latency(7.0, 11.0, 14.0),
            ])
            .enumerate()
        {
            run.round = round + 1;
            run.report.latency_us = latency;
        }
        let mut results = one_cell(rounds);
        results.rounds = 3;
        results.servers = vec![FULLDUPLEX.into()];
        let table = results.echo_table();
        assert_eq!(table.lines().count(), 3, "{table}");
        // Medians of p50 and p99; the largest of the maxima (one round's 1.9 ms tail shows).
        assert!(table.contains("| 6 / 10 / 1900 |"), "{table}");
    }

    #[test]
    fn uwebsockets_is_a_reference_when_it_ran() {
        let mut results = one_cell(vec![
            run(FULLDUPLEX, 120.0, 9.0, Some(1.0)),
            run("fastwebsockets", 100.0, 10.0, Some(2.0)),
            run("tcp-echo", 100.0, 8.8, Some(0.5)),
            run(UWEBSOCKETS, 150.0, 9.5, Some(0.6)),
        ]);
        results.cells[0].pipeline = 8;
        let targets = results.targets_table();
        assert!(
            targets.contains("| 0.90× (TCP echo 0.88×; µWebSockets 0.95×; user space 0.50×) |"),
            "{targets}"
        );
        assert!(
            targets.contains(
                "| pipelined: ≥ µWebSockets' rate | 16 B text, 100 conns, 8 in flight | \
                 0.80× µWebSockets (1.20× fastwebsockets, 1.20× TCP) | **missed** |"
            ),
            "{targets}"
        );
        // The echo table's µWebSockets column: fullduplex at 0.80×, µWebSockets itself 1.00×.
        let table = results.echo_table();
        assert!(table.contains("| 1.20× | 1.20× | 0.80× |"), "{table}");
        assert!(table.contains("| 1.50× | 1.50× | 1.00× |"), "{table}");
    }

    #[test]
    fn pipelined_target_shows_the_rounds_spread() {
        let mut echo = Vec::new();
        for (round, ours, uws) in [(1, 90.0, 100.0), (2, 105.0, 100.0), (3, 95.0, 100.0)] {
            for (server, rate) in [(FULLDUPLEX, ours), (UWEBSOCKETS, uws)] {
                let mut r = run(server, rate, 1.0, None);
                r.round = round;
                echo.push(r);
            }
        }
        let mut results = one_cell(echo);
        results.rounds = 3;
        results.cells[0].pipeline = 8;
        let targets = results.targets_table();
        assert!(
            targets.contains("| 0.95× µWebSockets, rounds 0.90-1.05× (- fastwebsockets, - TCP) |"),
            "{targets}"
        );
    }

    #[test]
    fn merged_runs_are_judged_over_all_their_rounds_each_paired_within_its_run() {
        // Two runs of two rounds; µWebSockets is twice as fast in the second run, as a
        // machine's rates can move between runs. Each round pairs within its own run.
        let pipelined = |rounds: [(f64, f64); 2], command: &str| {
            let mut echo = Vec::new();
            for (round, (ours, uws)) in rounds.into_iter().enumerate() {
                for (server, rate) in [(FULLDUPLEX, ours), (UWEBSOCKETS, uws)] {
                    let mut r = run(server, rate, 1.0, None);
                    r.round = round + 1;
                    echo.push(r);
                }
            }
            let mut results = one_cell(echo);
            results.rounds = 2;
            results.cells[0].pipeline = 8;
            results.command = command.into();
            results.machine = vec![("fullduplex".into(), format!("0.1.0 at {command}"))];
            results
        };
        let first = pipelined([(90.0, 100.0), (100.0, 100.0)], "run one");
        let second = pipelined([(220.0, 200.0), (240.0, 200.0)], "run two");
        let merged = Results::merge(vec![first, second]).expect("two runs");
        assert_eq!(merged.rounds, 4);
        assert_eq!(merged.echo.len(), 8);
        let targets = merged.targets_table();
        assert!(
            targets.contains("| 1.05× µWebSockets, rounds 0.90-1.20× (- fastwebsockets, - TCP) |"),
            "{targets}"
        );
        let markdown = merged.markdown();
        assert!(markdown.contains("2 runs merged"), "{markdown}");
        assert!(!markdown.contains("- fullduplex: "), "{markdown}");
        assert!(markdown.contains("`run one` (fullduplex 0.1.0 at run one)"));
        assert!(markdown.contains("`run two` (fullduplex 0.1.0 at run two)"));
        assert!(Results::merge(Vec::new()).is_none());
    }

    #[test]
    fn the_borrowed_echo_gets_its_own_target_rows() {
        let mut echo = Vec::new();
        for (server, rate) in [
            (FULLDUPLEX, 90.0),
            (FULLDUPLEX_BORROWED, 110.0),
            (UWEBSOCKETS, 100.0),
        ] {
            echo.push(run(server, rate, 1.0, None));
        }
        let mut results = one_cell(echo);
        results.cells[0].pipeline = 8;
        let targets = results.targets_table();
        let pipelined: Vec<&str> = targets
            .lines()
            .filter(|l| l.starts_with("| pipelined"))
            .collect();
        assert_eq!(pipelined.len(), 2, "{targets}");
        assert!(pipelined[0].contains("| 0.90× µWebSockets"), "{targets}");
        assert!(pipelined[0].ends_with("| **missed** |"), "{targets}");
        assert!(
            pipelined[1].contains(", borrowed echo (`recv_many`) |"),
            "{targets}"
        );
        assert!(pipelined[1].contains("| 1.10× µWebSockets"), "{targets}");
        assert!(pipelined[1].ends_with("| met |"), "{targets}");
        // Without borrowed runs, no borrowed rows.
        let plain = one_cell(vec![run(FULLDUPLEX, 90.0, 1.0, None)]).targets_table();
        assert!(!plain.contains("borrowed"), "{plain}");
    }

    #[test]
    fn section_is_replaced_and_the_rest_kept() {
        let dir = std::env::temp_dir().join(format!("fdx-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("B.md");
        std::fs::write(&path, "# B\n\nintro\n\n## Fan-out\n\nkept\n").unwrap();
        write_section(&path, "gen", "one").unwrap();
        write_section(&path, "gen", "two").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("## Fan-out\n\nkept"));
        assert!(text.contains("<!-- gen:begin -->\ntwo\n<!-- gen:end -->"));
        assert!(text.find("gen:end").unwrap() < text.find("## Fan-out").unwrap());
        assert!(!text.contains("one"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
