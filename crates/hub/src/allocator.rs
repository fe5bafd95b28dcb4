//! Giving free memory back to the system. glibc keeps what was freed in its arenas, so a
//! server's resident size would otherwise stay at its peak after a flood of large messages or
//! a burst of connections (RELIABILITY.md has the figures). Used by the hub's history sweep,
//! connection count and delivery queues, and by `fdx echo`/`fdx exec`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Fewest connections that must have closed since the busiest moment before a trim.
const MIN_CLOSED: usize = 64;

/// Bytes of burst buffers (delivery queues' rings) freed since the last trim that make one
/// worth its heap walk.
const MIN_BURST_FREED: usize = 4 << 20;

/// Bytes of burst buffers freed since the last [`take_burst_freed`].
static BURST_FREED: AtomicUsize = AtomicUsize::new(0);

/// Counts `bytes` of a burst's buffers as freed: once 4 MiB have been, the hub's next check
/// trims (see [`burst_freed_enough`]).
pub fn note_burst_freed(bytes: usize) {
    BURST_FREED.fetch_add(bytes, Ordering::Relaxed);
}

/// Whether enough burst buffers were freed since the last call that returned true for a
/// trim to be worth its heap walk; resets the count when it does.
pub fn burst_freed_enough() -> bool {
    BURST_FREED.load(Ordering::Relaxed) >= MIN_BURST_FREED
        && BURST_FREED.swap(0, Ordering::Relaxed) >= MIN_BURST_FREED
}

/// Asks the allocator to return free memory to the system (glibc's `malloc_trim(0)`; nothing
/// with other allocators). It walks the heap once (milliseconds for hundreds of MiB): call it
/// after large frees, off the async workers.
#[cfg(target_env = "gnu")]
pub fn return_free_memory() {
    // SAFETY: malloc_trim takes no pointers and only releases memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks the allocator to return free memory to the system (a no-op: this allocator returns
/// memory by itself or offers no such call).
#[cfg(not(target_env = "gnu"))]
pub fn return_free_memory() {}

/// Whether enough connections closed since the busiest moment (`peak` open, `now` open) for a
/// trim to be worth its heap walk: at least a quarter of the peak and at least 64, so that
/// ordinary churn never triggers one and a burst that ended always does.
pub fn connections_dropped_enough(peak: usize, now: usize) -> bool {
    let closed = peak.saturating_sub(now);
    closed >= MIN_CLOSED && closed * 4 >= peak
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_large_drop_is_enough() {
        assert!(!connections_dropped_enough(0, 0));
        assert!(
            !connections_dropped_enough(100, 50),
            "50 closed is under the minimum"
        );
        assert!(connections_dropped_enough(1000, 700));
        assert!(
            !connections_dropped_enough(1000, 800),
            "200 of 1,000 is under a quarter"
        );
        assert!(connections_dropped_enough(64, 0));
    }

    #[test]
    fn a_burst_s_buffers_are_enough_once_they_add_up() {
        // Other tests in this binary may free rings too: only what this one adds is known.
        let _ = burst_freed_enough();
        note_burst_freed(MIN_BURST_FREED);
        assert!(burst_freed_enough());
    }
}
