//! The machine and the versions under test, for the report.

use std::process::Command;

use crate::servers::workspace_root;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Versions of the locked Rust crates named, from the workspace's `Cargo.lock`.
fn locked(names: &[&str]) -> Vec<String> {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap_or_default();
    let mut found = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            if names.contains(&n.as_str()) {
                found.push(format!("{n} {}", v.trim_matches('"')));
            }
        }
    }
    found
}

/// `(key, value)` lines describing the machine and the software.
pub fn describe() -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let lscpu = output("lscpu", &[]).unwrap_or_default();
    let field = |key: &str| {
        lscpu
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    lines.push((
        "CPU".into(),
        format!(
            "{} ({} CPUs, {}; hypervisor {})",
            field("Model name"),
            field("CPU(s)"),
            field("Architecture"),
            field("Hypervisor vendor")
        ),
    ));
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    lines.push(("memory".into(), memory));
    lines.push((
        "kernel".into(),
        output("uname", &["-sr"]).unwrap_or_else(|| "?".into()),
    ));
    lines.push((
        "rustc".into(),
        output("rustc", &["--version"]).unwrap_or_else(|| "?".into()),
    ));
    lines.push(("fullduplex".into(), fullduplex_build()));
    lines.push((
        "Rust peers".into(),
        locked(&[
            "fastwebsockets",
            "tokio-tungstenite",
            "tungstenite",
            "tokio",
            "hyper",
        ])
        .join(", "),
    ));
    let python = workspace_root().join(".venv/bin/python");
    if let Some(v) = output(
        &python.display().to_string(),
        &[
            "-c",
            "import sys, websockets, websockets.speedups; print('Python', sys.version.split()[0], 'websockets', websockets.__version__, '(C speedups)')",
        ],
    ) {
        lines.push(("Python peer".into(), v));
    }
    lines
}

/// The fullduplex build measured: the version and the checkout's commit (`-dirty` with
/// uncommitted changes).
pub fn fullduplex_build() -> String {
    let commit = output(
        "git",
        &[
            "-C",
            &workspace_root().display().to_string(),
            "describe",
            "--always",
            "--dirty",
        ],
    )
    .unwrap_or_else(|| "?".into());
    format!("0.1.0 at {commit}")
}
