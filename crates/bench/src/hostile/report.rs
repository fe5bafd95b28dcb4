//! The hostile run's report: honest latency quiet against attack, delivery accounting, how each
//! class was answered, the RSS series and the server's CPU per phase, as markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::child::{RssSample, RssSampler, Target};
use super::classes::{Class, ClassStats};
use super::honest::{HonestReport, Phase, Plan};
use super::wire::{Answer, HttpClient};
use crate::procfs::{self, CpuTimes};

const MIB: f64 = 1048576.0;

/// The moment each phase began, with the server's and the harness's CPU time then.
#[derive(Debug)]
pub struct Marks {
    pid: u32,
    /// (phase, when, server CPU, harness CPU).
    pub marks: Vec<(Phase, Instant, Option<CpuTimes>, Option<CpuTimes>)>,
    /// Busy time of CPU 0 and CPU 1 at each mark.
    pub busy: Vec<(Option<Duration>, Option<Duration>)>,
}

impl Marks {
    /// Marks for server `pid`.
    pub fn new(pid: u32) -> Marks {
        Marks {
            pid,
            marks: Vec::new(),
            busy: Vec::new(),
        }
    }

    /// Records that `phase` begins now.
    pub fn mark(&mut self, phase: Phase, _sampler: &RssSampler) {
        self.marks.push((
            phase,
            Instant::now(),
            procfs::process_cpu(self.pid),
            procfs::process_cpu(std::process::id()),
        ));
        self.busy.push((procfs::cpu_busy(0), procfs::cpu_busy(1)));
    }

    /// Of `phase`: the share of CPU 0 busy with anything but the server, of CPU 1 with
    /// anything but the harness, and of both CPUs with anything but the two (for unpinned
    /// runs; up to 200%): other engineers' work on the shared machine.
    pub fn other_load(&self, phase: Phase) -> Option<(f64, f64, f64)> {
        let i = self.marks.iter().position(|m| m.0 == phase)?;
        let (_, t0, s0, h0) = self.marks.get(i)?;
        let (_, t1, s1, h1) = self.marks.get(i + 1)?;
        let (b0, b1) = (self.busy.get(i)?, self.busy.get(i + 1)?);
        let wall = t1.duration_since(*t0).as_secs_f64().max(1e-9);
        let used = |a: &Option<CpuTimes>, b: &Option<CpuTimes>| match (a, b) {
            (Some(a), Some(b)) => b.total().saturating_sub(a.total()).as_secs_f64(),
            _ => 0.0,
        };
        let busy = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
            _ => f64::NAN,
        };
        let (server, harness) = (used(s0, s1), used(h0, h1));
        let (c0, c1) = (busy(b0.0, b1.0), busy(b0.1, b1.1));
        let pct = |x: f64| (x / wall * 100.0).max(0.0);
        Some((
            pct(c0 - server),
            pct(c1 - harness),
            pct(c0 + c1 - server - harness),
        ))
    }

    /// The server's RSS at the end of the quiet run (the last sample before the attack).
    pub fn rss_before_attack(&self, samples: &[RssSample]) -> u64 {
        samples
            .iter()
            .rev()
            .find(|s| s.phase <= Phase::Quiet as u8)
            .or(samples.first())
            .map_or(0, |s| s.rss)
    }

    /// Wall seconds, server CPU % and harness CPU % of `phase`.
    pub fn cpu(&self, phase: Phase) -> Option<(f64, f64, f64)> {
        let i = self.marks.iter().position(|m| m.0 == phase)?;
        let (_, t0, s0, h0) = self.marks.get(i)?;
        let (_, t1, s1, h1) = self.marks.get(i + 1)?;
        let wall = t1.duration_since(*t0).as_secs_f64();
        let pct = |a: &Option<CpuTimes>, b: &Option<CpuTimes>| match (a, b) {
            (Some(a), Some(b)) => {
                (b.total().saturating_sub(a.total())).as_secs_f64() / wall.max(1e-9) * 100.0
            }
            _ => f64::NAN,
        };
        Some((wall, pct(s0, s1), pct(h0, h1)))
    }
}

/// "Near" the RSS before the attack: within 10% or 8 MiB of it, whichever is more.
pub fn near(before: u64) -> u64 {
    before + (before / 10).max(8 << 20)
}

/// The hub's `/metrics` values that tell how it coped (label-less names and a few others).
pub fn scrape_metrics(addr: &str) -> BTreeMap<String, f64> {
    let wanted = [
        "fdx_hub_connections",
        "fdx_hub_topics",
        "fdx_hub_slow_consumer_disconnects_total",
        "fdx_hub_history_bytes",
        "fdx_hub_history_evictions_total",
        "fdx_hub_http_refused_total",
        "fdx_hub_handshake_failures_total",
        "fdx_hub_client_errors_total",
        "fdx_hub_drops_total",
        "fdx_hub_messages_in_total",
    ];
    let mut values = BTreeMap::new();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return values;
    };
    let body = runtime.block_on(async {
        HttpClient::new(addr)
            .get("/metrics", Duration::from_secs(5))
            .await
    });
    if let Ok((200, body)) = body {
        for line in String::from_utf8_lossy(&body).lines() {
            let mut parts = line.split_whitespace();
            if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                if wanted.contains(&name) {
                    if let Ok(v) = value.parse::<f64>() {
                        values.insert(name.to_owned(), v);
                    }
                }
            }
        }
    }
    values
}

/// Everything one hostile run produced.
pub struct Run {
    /// How the harness was started.
    pub command_line: String,
    /// How the server was started.
    pub server_command: String,
    /// The target.
    pub target: Target,
    /// The honest load.
    pub plan: Plan,
    /// Hostile slots per class.
    pub slots: Vec<(Class, usize)>,
    /// The server's CPU, if pinned.
    pub server_cpu: Option<usize>,
    /// The harness's CPU, if pinned.
    pub harness_cpu: Option<usize>,
    /// Load average before.
    pub load_before: Option<f64>,
    /// Load average after.
    pub load_after: Option<f64>,
    /// What the honest load saw.
    pub honest: HonestReport,
    /// What each class got.
    pub classes: BTreeMap<Class, ClassStats>,
    /// RSS samples.
    pub samples: Vec<RssSample>,
    /// Phase boundaries.
    pub marks: Marks,
    /// Hub metrics at points of the run.
    pub metrics: Vec<(&'static str, BTreeMap<String, f64>)>,
    /// Set if the server died.
    pub server_exited: Option<String>,
    /// Lines the server wrote to stderr.
    pub stderr_lines: usize,
    /// `--recovery-seconds`.
    pub recovery_bound: f64,
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn median_max(times: &[f64]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    let max = sorted.last().copied().unwrap_or(f64::NAN);
    (median, max)
}

/// A duration in ms, printed with a sensible unit.
pub fn human_ms(ms: f64) -> String {
    if ms.is_nan() {
        "-".into()
    } else if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

impl Run {
    fn honest_line(&self) -> String {
        match &self.plan {
            Plan::Echo {
                connections,
                rate,
                size,
            } => format!(
                "{connections} echo clients, {rate:.0} text messages/s in all ({size} B), \
                 round-trip latency from the scheduled send time"
            ),
            Plan::Hub {
                subscribers,
                topics,
                rate,
                size,
            } => format!(
                "{subscribers} subscribers of {} topic(s), four keep-alive HTTP publishers sharing {rate:.0} \
                 publishes/s ({size} B JSON; {:.0} deliveries/s), publish-to-delivery latency \
                 from the scheduled publish time",
                topics.len(),
                rate * *subscribers as f64 / topics.len().max(1) as f64
            ),
        }
    }

    /// The p99 ratio attack/quiet.
    pub fn p99_ratio(&self) -> f64 {
        let h = &self.honest.latency;
        match (h.get(Phase::Quiet as usize), h.get(Phase::Attack as usize)) {
            (Some(q), Some(a)) => pct(a, 0.99) / pct(q, 0.99),
            _ => f64::NAN,
        }
    }

    /// Honest failures during the measured phases.
    pub fn honest_failures(&self) -> u64 {
        self.honest.failures.iter().sum()
    }

    /// The report.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let hostile: usize = self.slots.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            out,
            "### hostile --target {}: {hostile} hostile connections\n",
            self.target.name()
        );
        let _ = writeln!(out, "- Command: `{}`", self.command_line);
        let _ = writeln!(out, "- Server: `{}`", self.server_command);
        let _ = writeln!(out, "- Honest load: {}", self.honest_line());
        let _ = writeln!(
            out,
            "- Hostile slots: {}",
            self.slots
                .iter()
                .map(|(c, n)| format!("{n} {}", c.name()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            out,
            "- Machine: {} CPUs; server on CPU {}, harness on CPU {}; load average {} before, {} after",
            super::child::cpus(),
            self.server_cpu.map_or("any".into(), |c| c.to_string()),
            self.harness_cpu.map_or("any".into(), |c| c.to_string()),
            self.load_before.map_or("?".into(), |l| format!("{l:.2}")),
            self.load_after.map_or("?".into(), |l| format!("{l:.2}")),
        );
        if let Some(status) = &self.server_exited {
            let _ = writeln!(out, "- **The server exited during the run: {status}**");
        }
        let _ = writeln!(out, "- Server stderr: {} lines", self.stderr_lines);

        // Honest latency.
        let _ = writeln!(out, "\n**Honest latency (ms)**\n");
        let _ = writeln!(
            out,
            "| phase | seconds | messages | p50 | p99 | p99.9 | max | failures | server CPU | harness CPU |"
        );
        let _ = writeln!(
            out,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for phase in [Phase::Quiet, Phase::Attack, Phase::Recovery] {
            let Some(h) = self.honest.latency.get(phase as usize) else {
                continue;
            };
            let (wall, server, harness) =
                self.marks
                    .cpu(phase)
                    .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            let others = self
                .marks
                .other_load(phase)
                .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            let others = if self.server_cpu.is_some() {
                format!("{:.0}% / {:.0}%", others.0, others.1)
            } else {
                format!("{:.0}% of 200% (unpinned)", others.2)
            };
            let _ = writeln!(
                out,
                "| {} | {wall:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {server:.0}% | {harness:.0}% | {others} |",
                phase.name(),
                h.len(),
                pct(h, 0.5),
                pct(h, 0.99),
                pct(h, 0.999),
                if h.is_empty() { f64::NAN } else { h.max() as f64 / 1000.0 },
                self.honest.failures[phase as usize],
            );
        }
        let q = self.honest.latency.get(Phase::Quiet as usize);
        let a = self.honest.latency.get(Phase::Attack as usize);
        if let (Some(q), Some(a)) = (q, a) {
            let _ = writeln!(
                out,
                "\nAttack / quiet: p50 ×{:.2}, p99 ×{:.2}, max ×{:.2}.",
                pct(a, 0.5) / pct(q, 0.5),
                pct(a, 0.99) / pct(q, 0.99),
                a.max() as f64 / q.max().max(1) as f64
            );
        }
        let other = self.honest.failures[Phase::Warmup as usize]
            + self.honest.failures[Phase::Drain as usize]
            + self.honest.failures[Phase::Done as usize];
        if other > 0 {
            let _ = writeln!(
                out,
                "Failures outside the measured phases (warm-up, drain): {other}."
            );
        }

        // Latency over time.
        if !self.honest.per_second_max.is_empty() {
            let _ = writeln!(
                out,
                "\nHighest honest latency (ms) in each 5 s, by arrival:\n\n```text"
            );
            let mut line = String::new();
            let mut phase = u8::MAX;
            for chunk in self.honest.per_second_max.chunks(5) {
                let max = chunk.iter().map(|c| c.0).max().unwrap_or(0);
                let p = chunk.last().map_or(0, |c| c.1);
                if p != phase {
                    if !line.is_empty() {
                        let _ = writeln!(out, "{line}");
                    }
                    phase = p;
                    line = format!("{:<9}", format!("{}:", Phase::from_u8(p).name()));
                }
                let _ = write!(line, " {:.0}", max as f64 / 1000.0);
            }
            let _ = writeln!(out, "{line}\n```");
        }

        // Accounting.
        let h = &self.honest;
        let _ = writeln!(out, "\n**Honest delivery**\n");
        match self.plan {
            Plan::Echo { .. } => {
                let _ = writeln!(
                    out,
                    "Sent {}, echoed {}, never echoed {}, out of order {}; connections up {}, \
                     connection failures {}.",
                    h.expected,
                    h.delivered,
                    h.missing,
                    h.out_of_order,
                    h.connected,
                    h.connections_failed
                );
            }
            Plan::Hub { .. } => {
                let _ = writeln!(
                    out,
                    "Expected deliveries {} (each subscriber × every publish acknowledged with 200 \
                     after it subscribed), delivered {}, missing {}, duplicates {}, out of order {}, \
                     unknown sequence numbers {}; subscribers up {}, failed {}. Publish answers: {}.",
                    h.expected,
                    h.delivered,
                    h.missing,
                    h.duplicates,
                    h.out_of_order,
                    h.bogus,
                    h.connected,
                    h.connections_failed,
                    h.publish_answers
                        .iter()
                        .map(|(k, v)| format!("{k} ×{v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        if !h.failure_samples.is_empty() {
            let _ = writeln!(out, "\nFirst honest failures:\n");
            for s in &h.failure_samples {
                let _ = writeln!(out, "- {s}");
            }
        }

        // Classes.
        let _ = writeln!(out, "\n**How each class was answered** (time from the hostile act: the request head's first byte, the bad frame, the connect for `abandoned`, the upgrade for `silent` and `never-reading`, each request for the floods)\n");
        let _ = writeln!(
            out,
            "| class | conns | attempts | expected | answers: count (median / max time) | notes |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | --- | --- | --- |");
        for (class, n) in &self.slots {
            let stats = self.classes.get(class).cloned().unwrap_or_default();
            let answers: Vec<String> = stats
                .answers
                .iter()
                .map(|(answer, times)| {
                    let (median, max) = median_max(times);
                    match answer {
                        Answer::CutOff => format!(
                            "{answer}: {} (open {} / {})",
                            times.len(),
                            human_ms(median),
                            human_ms(max)
                        ),
                        _ => format!(
                            "{answer}: {} ({} / {})",
                            times.len(),
                            human_ms(median),
                            human_ms(max)
                        ),
                    }
                })
                .collect();
            let notes: Vec<String> = stats
                .notes
                .iter()
                .map(|(k, v)| {
                    if k.starts_with("bytes") {
                        format!("{k}: {:.0} MiB", *v as f64 / MIB)
                    } else {
                        format!("{k}: {v}")
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {n} | {} | {} | {} | {} |",
                class.name(),
                stats.attempts,
                class.expected(self.target),
                answers.join("; "),
                notes.join("; ")
            );
        }

        // RSS.
        let before = self.marks.rss_before_attack(&self.samples);
        let _ = writeln!(out, "\n**Server RSS (MiB)**\n");
        if let Some(first) = self.samples.first() {
            let in_phase = |p: Phase| self.samples.iter().filter(move |s| s.phase == p as u8);
            let peak = self.samples.iter().max_by_key(|s| s.rss);
            let end_attack = in_phase(Phase::Attack).next_back();
            let after = self
                .samples
                .iter()
                .rev()
                .find(|s| s.phase == Phase::Recovery as u8 || s.phase == Phase::Drain as u8);
            let recovered_at = in_phase(Phase::Recovery).find(|s| s.rss <= near(before));
            let attack_start = in_phase(Phase::Attack).next().map_or(0.0, |s| s.t);
            let recovery_start = in_phase(Phase::Recovery).next().map_or(0.0, |s| s.t);
            let _ = writeln!(
                out,
                "Idle at start {:.1}; before the attack {:.1}; peak {:.1} (at {:.0} s into the attack); \
                 end of the attack {:.1}; after recovery {:.1}; {}.",
                first.rss as f64 / MIB,
                before as f64 / MIB,
                peak.map_or(0.0, |s| s.rss as f64 / MIB),
                peak.map_or(0.0, |s| s.t - attack_start),
                end_attack.map_or(f64::NAN, |s| s.rss as f64 / MIB),
                after.map_or(f64::NAN, |s| s.rss as f64 / MIB),
                match recovered_at {
                    Some(s) => format!(
                        "back within {:.1} MiB of the pre-attack RSS {:.1} s after the attack",
                        (near(before) - before) as f64 / MIB,
                        s.t - recovery_start
                    ),
                    None => format!(
                        "**not** back within {:.1} MiB of the pre-attack RSS after {:.0} s",
                        (near(before) - before) as f64 / MIB,
                        self.recovery_bound
                    ),
                }
            );
            let _ = writeln!(
                out,
                "\nEvery 5 s (the highest sample of each 5 s):\n\n```text"
            );
            let mut line = String::new();
            let mut phase = u8::MAX;
            let mut bucket_end = first.t + 5.0;
            let mut bucket_max = 0u64;
            for s in &self.samples {
                if s.phase != phase {
                    if bucket_max > 0 {
                        let _ = write!(line, " {:.0}", bucket_max as f64 / MIB);
                        bucket_max = 0;
                    }
                    if !line.is_empty() {
                        let _ = writeln!(out, "{line}");
                    }
                    phase = s.phase;
                    line = format!("{:<9}", format!("{}:", Phase::from_u8(phase).name()));
                    bucket_end = s.t + 5.0;
                }
                if s.t >= bucket_end {
                    let _ = write!(line, " {:.0}", bucket_max as f64 / MIB);
                    bucket_max = 0;
                    bucket_end += 5.0;
                }
                bucket_max = bucket_max.max(s.rss);
            }
            if bucket_max > 0 {
                let _ = write!(line, " {:.0}", bucket_max as f64 / MIB);
            }
            let _ = writeln!(out, "{line}\n```");
        }

        if !self.metrics.is_empty() {
            let _ = writeln!(out, "\n**Hub metrics**\n");
            let names: Vec<&String> = self
                .metrics
                .iter()
                .flat_map(|(_, m)| m.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let _ = writeln!(
                out,
                "| metric | {} |",
                self.metrics
                    .iter()
                    .map(|(w, _)| *w)
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(out, "| --- |{}", " ---: |".repeat(self.metrics.len()));
            for name in names {
                let _ = writeln!(
                    out,
                    "| {name} | {} |",
                    self.metrics
                        .iter()
                        .map(|(_, m)| m.get(name).map_or("-".into(), |v| format!("{v:.0}")))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
        }

        // Verdicts.
        let ratio = self.p99_ratio();
        let failures = self.honest_failures();
        let _ = writeln!(out, "\n**Against the goal**\n");
        let _ = writeln!(
            out,
            "- Honest p99 under attack within 2× of quiet: {} (×{ratio:.2}).",
            if ratio <= 2.0 {
                "holds"
            } else {
                "**does not hold**"
            }
        );
        let lost = match self.plan {
            Plan::Echo { .. } => self.honest.missing,
            Plan::Hub { .. } => {
                self.honest.missing + self.honest.duplicates + self.honest.out_of_order
            }
        };
        let _ = writeln!(
            out,
            "- No honest connection fails: {} ({failures} failures, {} connection failures, {lost} messages lost, doubled or reordered).",
            if failures == 0 && lost == 0 { "holds" } else { "**does not hold**" },
            self.honest.connections_failed,
        );
        out
    }

    /// For `--smoke`: the harness ran (honest messages went through, every class attempted,
    /// the server lived); the goals are not judged on a few seconds.
    pub fn smoke_check(&self) -> Result<(), String> {
        if let Some(status) = &self.server_exited {
            return Err(format!("smoke: the server exited: {status}"));
        }
        let received: u64 = self.honest.received.iter().sum();
        if received == 0 {
            return Err("smoke: no honest message went through".into());
        }
        if self.honest.connections_failed > 0 {
            return Err(format!(
                "smoke: {} honest connections failed",
                self.honest.connections_failed
            ));
        }
        for (class, _) in &self.slots {
            let attempts = self.classes.get(class).map_or(0, |s| s.attempts);
            if attempts == 0 {
                return Err(format!("smoke: class {} made no attempt", class.name()));
            }
            if let Some(stats) = self.classes.get(class) {
                for answer in stats.answers.keys() {
                    if let Answer::Failed(why) = answer {
                        return Err(format!("smoke: class {}: {why}", class.name()));
                    }
                }
            }
        }
        eprintln!(
            "smoke: the hostile harness ran against {}",
            self.target.name()
        );
        Ok(())
    }
}
