//! Giving free memory back to the system. glibc keeps what was freed in its arenas, so a
//! server's resident size would otherwise stay at its peak after a flood of large messages or
//! a burst of connections (RELIABILITY.md has the figures). Used by the hub's history sweep
//! and connection count, and by `fdx echo`/`fdx exec`.

/// Fewest connections that must have closed since the busiest moment before a trim.
const MIN_CLOSED: usize = 64;

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
}
