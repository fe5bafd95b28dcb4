//! A topic's recent messages, bounded by count and age, for recovery after a reconnect.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One retained message: its offset, its encoded frame (the one that was fanned out) and when
/// it was published.
#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    frame: Bytes,
    at: Instant,
}

/// What leaving the history gave back: how many messages and how many bytes of frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    /// Messages forgotten.
    pub messages: usize,
    /// Bytes of their frames.
    pub bytes: usize,
}

impl Freed {
    fn add(&mut self, entry: &Entry) {
        self.messages += 1;
        self.bytes += entry.frame.len();
    }
}

/// The last `capacity` messages of a topic that are younger than `ttl`, in offset order.
#[derive(Debug)]
pub struct History {
    entries: VecDeque<Entry>,
    capacity: usize,
    ttl: Duration,
}

impl History {
    /// An empty history keeping at most `capacity` messages for at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> History {
        History {
            entries: VecDeque::new(),
            capacity,
            ttl,
        }
    }

    /// Appends a message (offsets must increase) and forgets what falls out of the bounds;
    /// returns what was forgotten. With a capacity of 0 nothing is kept: the message itself
    /// is reported as not kept (`false`).
    pub fn push(&mut self, offset: u64, frame: Bytes, now: Instant) -> (bool, Freed) {
        let mut freed = Freed::default();
        if self.capacity == 0 {
            return (false, freed);
        }
        debug_assert!(self.entries.back().is_none_or(|e| e.offset < offset));
        if self.entries.len() == self.capacity {
            if let Some(entry) = self.entries.pop_front() {
                freed.add(&entry);
            }
        }
        let len = frame.len();
        self.entries.push_back(Entry {
            offset,
            frame,
            at: now,
        });
        let expired = self.expire(now);
        freed.messages += expired.messages;
        freed.bytes += expired.bytes;
        if self.entries.back().is_some_and(|e| e.offset == offset) {
            return (true, freed);
        }
        // Expired at once (a TTL of zero): the new message was never kept.
        freed.messages -= 1;
        freed.bytes -= len;
        (false, freed)
    }

    /// Forgets messages older than the TTL; returns what was forgotten.
    pub fn expire(&mut self, now: Instant) -> Freed {
        let mut freed = Freed::default();
        while let Some(front) = self.entries.front() {
            if now.saturating_duration_since(front.at) < self.ttl {
                break;
            }
            freed.add(front);
            self.entries.pop_front();
        }
        freed
    }

    /// Forgets the oldest message if its offset is `offset`; returns its frame's size.
    pub fn evict_oldest(&mut self, offset: u64) -> Option<usize> {
        if self.entries.front()?.offset != offset {
            return None;
        }
        self.entries.pop_front().map(|entry| entry.frame.len())
    }

    /// Whether the message `offset` is held.
    pub fn holds(&self, offset: u64) -> bool {
        let index = self.entries.partition_point(|e| e.offset < offset);
        self.entries.get(index).is_some_and(|e| e.offset == offset)
    }

    /// The oldest offset still held, if any.
    pub fn first_offset(&self) -> Option<u64> {
        self.entries.front().map(|e| e.offset)
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The offsets and frames of the messages with an offset above `since`, in order.
    pub fn after(&self, since: u64) -> impl Iterator<Item = (u64, &Bytes)> + '_ {
        // Offsets increase along the deque: skip to the first one above `since`.
        let start = self.entries.partition_point(|e| e.offset <= since);
        self.entries.range(start..).map(|e| (e.offset, &e.frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Bytes {
        Bytes::from(n.to_string())
    }

    #[test]
    fn bounded_by_count() {
        let now = Instant::now();
        let mut history = History::new(3, Duration::from_secs(60));
        for offset in 1..=5 {
            history.push(offset, frame(offset), now);
        }
        assert_eq!(history.len(), 3);
        assert_eq!(history.first_offset(), Some(3));
        let after: Vec<_> = history.after(3).map(|(o, f)| (o, f.clone())).collect();
        assert_eq!(after, [(4, frame(4)), (5, frame(5))]);
        assert_eq!(history.after(0).count(), 3);
        assert_eq!(history.after(5).count(), 0);
        assert_eq!(history.after(99).count(), 0);
    }

    #[test]
    fn bounded_by_age() {
        let start = Instant::now();
        let mut history = History::new(10, Duration::from_secs(5));
        history.push(1, frame(1), start);
        history.push(2, frame(2), start + Duration::from_secs(3));
        history.expire(start + Duration::from_secs(4));
        assert_eq!(history.first_offset(), Some(1));
        history.expire(start + Duration::from_secs(5));
        assert_eq!(history.first_offset(), Some(2));
        history.push(3, frame(3), start + Duration::from_secs(9));
        assert_eq!(history.first_offset(), Some(3));
    }

    #[test]
    fn what_is_forgotten_is_reported() {
        let now = Instant::now();
        let mut history = History::new(2, Duration::from_secs(60));
        assert_eq!(history.push(1, frame(1), now), (true, Freed::default()));
        history.push(2, frame(2), now);
        let (kept, freed) = history.push(3, frame(3), now);
        assert!(kept);
        assert_eq!(
            freed,
            Freed {
                messages: 1,
                bytes: 1
            }
        );
        assert!(history.holds(2) && history.holds(3) && !history.holds(1));
        assert_eq!(history.evict_oldest(3), None, "not the oldest");
        assert_eq!(history.evict_oldest(2), Some(1));
        // A TTL of zero keeps nothing, and the new message is not counted as forgotten.
        let mut instant = History::new(2, Duration::ZERO);
        assert_eq!(instant.push(1, frame(1), now), (false, Freed::default()));
        assert!(instant.is_empty());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut history = History::new(0, Duration::from_secs(5));
        history.push(1, frame(1), Instant::now());
        assert!(history.is_empty());
        assert_eq!(history.first_offset(), None);
    }
}
