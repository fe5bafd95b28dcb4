//! The fan-out tables: medians over rounds, medians of paired ratios against µWebSockets.

use std::fmt::Write;

use super::{FanoutResults, FanoutRun, Scenario};
use crate::report::median;

fn runs<'a>(results: &'a FanoutResults, scenario: &Scenario, server: &str) -> Vec<&'a FanoutRun> {
    results
        .runs
        .iter()
        .filter(|r| &r.scenario == scenario && r.server == server)
        .collect()
}

fn med(runs: &[&FanoutRun], f: impl Fn(&FanoutRun) -> f64) -> f64 {
    median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>())
}

/// Median over rounds of `f(server) / f(reference)` of the same round.
fn paired(
    results: &FanoutResults,
    scenario: &Scenario,
    server: &str,
    reference: &str,
    f: impl Fn(&FanoutRun) -> f64,
) -> f64 {
    let ours = runs(results, scenario, server);
    let theirs = runs(results, scenario, reference);
    let ratios: Vec<f64> = ours
        .iter()
        .filter_map(|a| {
            theirs
                .iter()
                .find(|b| b.round == a.round)
                .map(|b| f(a) / f(b))
        })
        .filter(|r| r.is_finite())
        .collect();
    median(&ratios)
}

fn wire(r: &FanoutRun) -> f64 {
    r.steady.bytes as f64 / r.steady.deliveries.max(1) as f64
}

fn ms(us: f64) -> String {
    if us.is_nan() {
        "-".into()
    } else if us >= 10_000.0 {
        format!("{:.0} ms", us / 1e3)
    } else {
        format!("{:.1} ms", us / 1e3)
    }
}

/// A share as a whole percentage, or `-` when it could not be measured (a burst whose CPU
/// time is below the clock's resolution).
pub(crate) fn share(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.0}%", x * 100.0)
    }
}

fn ratio(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.2}×")
    }
}

fn uws_of(server: &str) -> &'static str {
    if server.ends_with("-deflate") {
        "uwebsockets-deflate"
    } else {
        "uwebsockets"
    }
}

/// Scenarios in the order they ran.
fn scenarios(results: &FanoutResults) -> Vec<Scenario> {
    let mut list: Vec<Scenario> = Vec::new();
    for run in &results.runs {
        if !list.contains(&run.scenario) {
            list.push(run.scenario.clone());
        }
    }
    list
}

/// The generated block of BENCHMARKS.md.
pub fn markdown(results: &FanoutResults) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "```sh\n{}\n```\n", results.command);
    let _ = writeln!(
        out,
        "Up to {} rounds, servers interleaved in each scenario; medians over rounds; ratios are \
         medians of the paired per-round ratios against µWebSockets with the same compression \
         setting. Burst: {} deliveries back to back (messages = that / subscribers per topic). \
         Steady: {} deliveries/s for {} s. Load average (1/5/15 min) {} at the start, {} at the \
         end.\n",
        results.rounds,
        results.burst_deliveries,
        rates(results)
            .iter()
            .map(|rate| rate.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        results.seconds,
        results.load_before,
        results.load_after
    );
    for (key, value) in &results.machine {
        let _ = writeln!(out, "- {key}: {value}");
    }
    for note in &results.notes {
        let _ = writeln!(out, "- {note}");
    }
    out.push('\n');
    for scenario in scenarios(results) {
        let per_topic = scenario.subscribers / scenario.topics.max(1);
        let mut rounds: Vec<usize> = results
            .runs
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(|r| r.round)
            .collect();
        rounds.sort_unstable();
        rounds.dedup();
        let _ = writeln!(
            out,
            "**{} subscribers on {} topic{} ({} each), {} B JSON `data`, steady {} deliveries/s** \
             ({} rounds)\n",
            scenario.subscribers,
            scenario.topics,
            if scenario.topics == 1 { "" } else { "s" },
            per_topic,
            scenario.size,
            scenario.rate,
            rounds.len()
        );
        out.push_str(
            "| server | CPU µs/delivery, burst (user) | CPU µs/delivery, steady (user) | \
             p50 | p99 | to last subscriber, steady | burst, to last | memory/idle subscriber | \
             wire B/delivery (compressed) | vs µWS: burst CPU | steady CPU | to last (steady) | burst time |\n",
        );
        out.push_str("| --- |");
        out.push_str(&" ---: |".repeat(12));
        out.push('\n');
        for server in &results.servers {
            let rs = runs(results, &scenario, server);
            if rs.is_empty() {
                continue;
            }
            let uws = uws_of(server);
            let compressed = med(&rs, |r| {
                r.steady.compressed as f64 / r.steady.deliveries.max(1) as f64
            });
            let _ = writeln!(
                out,
                "| {server} | {:.2} ({}) | {:.2} ({}) | {} | {} | {} | {} | {:.0} B | {:.1} ({:.0}%) | {} | {} | {} | {} |",
                med(&rs, |r| r.burst_cpu_us),
                share(med(&rs, |r| r.burst_user_share)),
                med(&rs, |r| r.steady_cpu_us),
                share(med(&rs, |r| r.steady_user_share)),
                ms(med(&rs, |r| r.steady.p50_us)),
                ms(med(&rs, |r| r.steady.p99_us)),
                ms(med(&rs, |r| r.steady.last_p50_us)),
                ms(med(&rs, |r| r.burst.seconds * 1e6)),
                med(&rs, |r| r.memory_per_subscriber),
                med(&rs, wire),
                compressed * 100.0,
                ratio(paired(results, &scenario, server, uws, |r| r.burst_cpu_us)),
                ratio(paired(results, &scenario, server, uws, |r| r.steady_cpu_us)),
                ratio(paired(results, &scenario, server, uws, |r| r.steady.last_p50_us)),
                ratio(paired(results, &scenario, server, uws, |r| r.burst.seconds)),
            );
        }
        // The generator's side, to tell a slow server from a saturated generator.
        let gens: Vec<String> = results
            .servers
            .iter()
            .filter_map(|s| {
                let rs = runs(results, &scenario, s);
                (!rs.is_empty()).then(|| {
                    format!(
                        "{s} {:.2} µs ({:.0}%/{:.0}%)",
                        med(&rs, |r| r.burst_load_cpu_us),
                        med(&rs, |r| r.cpu0_other) * 100.0,
                        med(&rs, |r| r.cpu1_other) * 100.0
                    )
                })
            })
            .collect();
        let _ = writeln!(
            out,
            "\nGenerator CPU per delivery in the burst (other load on CPU 0/CPU 1 during it): {}.\n",
            gens.join(", ")
        );
    }
    out.push_str(&throughput(results));
    out.push_str(&targets(results));
    if !results.failures.is_empty() {
        let _ = writeln!(out, "\nFailed runs:\n");
        for failure in &results.failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

/// The steady rates of the scenarios, in order.
fn rates(results: &FanoutResults) -> Vec<f64> {
    let mut list: Vec<f64> = Vec::new();
    for scenario in scenarios(results) {
        if !list.contains(&scenario.rate) {
            list.push(scenario.rate);
        }
    }
    list
}

/// With more than one steady rate: latency and CPU against throughput, a row per rate and
/// a table per subscribers, topics and size.
fn throughput(results: &FanoutResults) -> String {
    let mut out = String::new();
    if rates(results).len() < 2 {
        return out;
    }
    let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
    for s in scenarios(results) {
        if !shapes.contains(&(s.subscribers, s.topics, s.size)) {
            shapes.push((s.subscribers, s.topics, s.size));
        }
    }
    for (subscribers, topics, size) in shapes {
        let _ = writeln!(
            out,
            "**Latency against throughput: {subscribers} subscribers on {topics} topic{}, {size} B** \
             (steady phase; medians over rounds; p50 / p99 / to the last subscriber, then server \
             CPU µs per delivery)\n",
            if topics == 1 { "" } else { "s" },
        );
        let servers: Vec<&String> = results
            .servers
            .iter()
            .filter(|server| {
                results.runs.iter().any(|r| {
                    &r.server == *server
                        && (r.scenario.subscribers, r.scenario.topics, r.scenario.size)
                            == (subscribers, topics, size)
                })
            })
            .collect();
        out.push_str("| deliveries/s |");
        for server in &servers {
            let _ = write!(out, " {server}: p50 / p99 / last | CPU |");
        }
        out.push_str("\n| ---: |");
        out.push_str(&" ---: | ---: |".repeat(servers.len()));
        out.push('\n');
        for scenario in scenarios(results)
            .into_iter()
            .filter(|s| (s.subscribers, s.topics, s.size) == (subscribers, topics, size))
        {
            let _ = write!(out, "| {} |", scenario.rate);
            for server in &servers {
                let rs = runs(results, &scenario, server);
                if rs.is_empty() {
                    out.push_str(" | |");
                    continue;
                }
                let _ = write!(
                    out,
                    " {} / {} / {} | {:.2} |",
                    ms(med(&rs, |r| r.steady.p50_us)),
                    ms(med(&rs, |r| r.steady.p99_us)),
                    ms(med(&rs, |r| r.steady.last_p50_us)),
                    med(&rs, |r| r.steady_cpu_us),
                );
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// The issue's targets at 10,000 subscribers on one topic, one line per size.
fn targets(results: &FanoutResults) -> String {
    let mut out = String::from(
        "**Targets** (10,000 subscribers on one topic; ratios are medians of paired ratios)\n\n\
         | target | size | figure | holds |\n| --- | --- | --- | --- |\n",
    );
    let mut any = false;
    for scenario in scenarios(results)
        .into_iter()
        .filter(|s| s.topics == 1 && s.subscribers >= 10_000)
    {
        let size = if rates(results).len() > 1 {
            format!("{} B, {}/s", scenario.size, scenario.rate)
        } else {
            format!("{} B", scenario.size)
        };
        let fdx = runs(results, &scenario, "fdx");
        if fdx.is_empty() {
            continue;
        }
        any = true;
        let mut line = |target: &str, figure: String, holds: bool| {
            let _ = writeln!(
                out,
                "| {target} | {size} | {figure} | {} |",
                if holds { "yes" } else { "**no**" }
            );
        };
        let memory = med(&fdx, |r| r.memory_per_subscriber);
        line(
            "memory per idle subscriber ≤ 1 KiB",
            format!("{memory:.0} B"),
            memory <= 1024.0,
        );
        type Metric = fn(&FanoutRun) -> f64;
        let metrics: [(&str, Metric); 4] = [
            ("CPU per delivery, burst", |r| r.burst_cpu_us),
            ("CPU per delivery, steady", |r| r.steady_cpu_us),
            ("time to the last subscriber, steady", |r| {
                r.steady.last_p50_us
            }),
            ("time to the last subscriber, burst", |r| r.burst.seconds),
        ];
        for (name, f) in metrics {
            for peer in ["uwebsockets", "node-ws", "python-websockets"] {
                if runs(results, &scenario, peer).is_empty() {
                    continue;
                }
                let x = paired(results, &scenario, "fdx", peer, f);
                let want = if peer == "uwebsockets" {
                    "≤ µWebSockets"
                } else {
                    "ahead of"
                };
                line(
                    &format!("{name} {want} {peer}"),
                    format!("{x:.2}×"),
                    if peer == "uwebsockets" {
                        x <= 1.0
                    } else {
                        x < 1.0
                    },
                );
            }
        }
        if !runs(results, &scenario, "fdx-deflate").is_empty() {
            for (name, f) in [
                (
                    "compressed CPU/delivery ≤ 1.2× uncompressed, burst",
                    (|r: &FanoutRun| r.burst_cpu_us) as Metric,
                ),
                (
                    "compressed CPU/delivery ≤ 1.2× uncompressed, steady",
                    |r: &FanoutRun| r.steady_cpu_us,
                ),
            ] {
                let x = paired(results, &scenario, "fdx-deflate", "fdx", f);
                line(name, format!("{x:.2}×"), x <= 1.2);
            }
        }
    }
    if any {
        out
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::load::PhaseReport;

    fn run(server: &str, rate: f64, round: usize, p99_ms: f64) -> FanoutRun {
        FanoutRun {
            scenario: Scenario {
                subscribers: 10_000,
                topics: 1,
                size: 64,
                rate,
            },
            server: server.into(),
            base: server.into(),
            compression: false,
            round,
            subscribe_seconds: 1.0,
            rss_base: 0,
            rss_idle: 0,
            memory_per_subscriber: 1000.0,
            burst: PhaseReport::default(),
            steady: PhaseReport {
                p50_us: p99_ms * 500.0,
                p99_us: p99_ms * 1000.0,
                last_p50_us: p99_ms * 900.0,
                deliveries: 1,
                ..PhaseReport::default()
            },
            burst_cpu_us: 1.0,
            burst_user_share: 0.5,
            steady_cpu_us: 10.0,
            steady_user_share: 0.2,
            burst_load_cpu_us: 1.0,
            cpu0_other: 0.0,
            cpu1_other: 0.0,
        }
    }

    fn results(runs: Vec<FanoutRun>) -> FanoutResults {
        FanoutResults {
            rounds: 2,
            rate: 20_000.0,
            servers: vec!["fdx".into(), "uwebsockets".into()],
            runs,
            ..FanoutResults::default()
        }
    }

    #[test]
    fn several_rates_give_a_row_per_rate_with_the_median_p99() {
        let results = results(vec![
            run("fdx", 20_000.0, 1, 100.0),
            run("fdx", 20_000.0, 2, 140.0),
            run("uwebsockets", 20_000.0, 1, 90.0),
            run("fdx", 200_000.0, 1, 130.0),
            run("uwebsockets", 200_000.0, 1, 160.0),
        ]);
        let text = markdown(&results);
        assert!(text.contains("**Latency against throughput: 10000 subscribers on 1 topic, 64 B**"));
        let rows: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("| 20000 |") || line.starts_with("| 200000 |"))
            .collect();
        assert_eq!(rows.len(), 2, "{text}");
        // The median of 100 and 140 ms.
        assert!(rows[0].contains("120 ms"), "{}", rows[0]);
        assert!(
            rows[1].contains("130 ms") && rows[1].contains("160 ms"),
            "{}",
            rows[1]
        );
        assert!(
            text.contains("Steady: 20000, 200000 deliveries/s"),
            "{text}"
        );
    }

    #[test]
    fn one_rate_gives_no_throughput_table() {
        let results = results(vec![
            run("fdx", 20_000.0, 1, 100.0),
            run("uwebsockets", 20_000.0, 1, 90.0),
        ]);
        assert!(!markdown(&results).contains("Latency against throughput"));
    }
}
