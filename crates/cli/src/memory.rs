//! Giving memory back to the system once many connections have closed: glibc keeps freed
//! memory in its arenas, so a server that held a burst of connections (an attack, a reconnect
//! wave) would otherwise keep its peak resident size forever (RELIABILITY.md has the figures).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fullduplex_hub::allocator::{connections_dropped_enough, return_free_memory};

/// How often the trimmer looks at the connection count.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The number of open connections and its highest value since the last trim, shared by the
/// accept loop and the trimmer.
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts one connection while it lives.
#[derive(Debug)]
pub struct Counted(Arc<Counts>);

impl OpenConnections {
    /// Counts a new connection until the returned guard is dropped.
    pub fn open(&self) -> Counted {
        let open = self.0.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.0.peak.fetch_max(open, Ordering::Relaxed);
        Counted(self.0.clone())
    }

    /// Connections open now.
    pub fn get(&self) -> usize {
        self.0.open.load(Ordering::Relaxed)
    }

    /// Runs forever: every 5 s, asks the allocator to return free memory when
    /// [`connections_dropped_enough`] since the busiest moment after the last trim.
    pub async fn trim_after_drops(self) {
        let mut interval = tokio::time::interval(CHECK_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = self.get();
            if connections_dropped_enough(self.0.peak.load(Ordering::Relaxed), now) {
                self.0.peak.store(now, Ordering::Relaxed);
                tokio::task::spawn_blocking(return_free_memory);
            }
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_follows_the_guards() {
        let open = OpenConnections::default();
        let a = open.open();
        let b = open.open();
        assert_eq!(open.get(), 2);
        drop(a);
        assert_eq!(open.0.peak.load(Ordering::Relaxed), 2);
        assert_eq!(open.get(), 1);
        drop(b);
        assert_eq!(open.get(), 0);
    }
}
