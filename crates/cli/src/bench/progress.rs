//! The live progress bar on stderr (only when stderr is a terminal and without --json).

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use super::stats::{Shared, Window};

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(250);

/// Whether a run shows progress.
pub fn wanted(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A running progress bar; [`Progress::finish`] clears it.
pub struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts a bar over `window`; `unit` names what is counted ("msg", "handshakes").
    pub fn start(shared: Arc<Shared>, window: Window, unit: &'static str) -> Progress {
        let total = window.end.saturating_duration_since(window.start);
        let bar = ProgressBar::new(total.as_millis() as u64).with_style(
            ProgressStyle::with_template("{bar:30} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut last_count = 0u64;
            let mut last_time = Instant::now();
            loop {
                tokio::time::sleep(TICK).await;
                let now = Instant::now();
                let count = shared.live_count.load(Ordering::Relaxed);
                let rate =
                    (count - last_count) as f64 / now.duration_since(last_time).as_secs_f64();
                last_count = count;
                last_time = now;
                let phase = if now < window.measure {
                    "warm-up"
                } else {
                    "measuring"
                };
                let elapsed = now.saturating_duration_since(window.start);
                shown.set_position(elapsed.as_millis() as u64);
                shown.set_message(format!(
                    "{phase} {:.1}/{:.1} s  {rate:.0} {unit}/s  open {}  errors {}",
                    elapsed.as_secs_f64(),
                    total.as_secs_f64(),
                    shared.open.load(Ordering::Relaxed),
                    shared.live_errors.load(Ordering::Relaxed),
                ));
            }
        });
        Progress { bar, task }
    }

    /// Stops and clears the bar.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
