//! Per-thread pools of buffers, so that idle connections hold none and busy ones allocate
//! nothing per message.
//!
//! A thread serves one connection at a time, so a few pooled buffers cover its busiest
//! moments. Three pools share the one bounded pool type here: the output queue's buffers
//! ([`OutQueue`](crate::OutQueue)), the boxes of messages that arrive in pieces, and receive
//! buffers, which the core lends to its shell ([`lend_recv_buffer`], [`return_recv_buffer`]).
//! Each pool is bounded in count and in bytes; during thread teardown, when a pool may be gone,
//! a buffer is simply freed.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::BytesMut;

/// Something a [`Pool`] keeps: how many bytes it holds count against the pool's byte bound.
pub(crate) trait Pooled {
    /// The bytes this item keeps allocated while pooled.
    fn pooled_bytes(&self) -> usize;
}

impl Pooled for BytesMut {
    #[inline]
    fn pooled_bytes(&self) -> usize {
        self.capacity()
    }
}

/// Items kept for reuse, at most `max_items` of them holding at most `max_bytes` in all.
/// Declared per thread: `thread_local! { static POOL: RefCell<Pool<T>> = const { .. } }`.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    free: Vec<T>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl<T: Pooled> Pool<T> {
    /// An empty pool with these bounds.
    pub(crate) const fn new(max_items: usize, max_bytes: usize) -> Pool<T> {
        Pool {
            free: Vec::new(),
            bytes: 0,
            max_items,
            max_bytes,
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<T> {
        let item = self.free.pop()?;
        self.bytes -= item.pooled_bytes();
        Some(item)
    }

    #[inline]
    fn push(&mut self, item: T) {
        let bytes = item.pooled_bytes();
        if self.free.len() < self.max_items && self.bytes + bytes <= self.max_bytes {
            self.bytes += bytes;
            self.free.push(item);
        }
    }
}

/// An item from this thread's `pool`, if it has one.
#[inline]
pub(crate) fn take<T: Pooled + 'static>(pool: &'static LocalKey<RefCell<Pool<T>>>) -> Option<T> {
    pool.try_with(|pool| pool.borrow_mut().pop()).ok().flatten()
}

/// Keeps `item` in this thread's `pool`, or frees it when the pool is full (or gone).
#[inline]
pub(crate) fn give<T: Pooled + 'static>(pool: &'static LocalKey<RefCell<Pool<T>>>, item: T) {
    let _ = pool.try_with(|pool| pool.borrow_mut().push(item));
}

/// How many items this thread's `pool` holds (for tests).
#[cfg(test)]
pub(crate) fn pooled<T: Pooled + 'static>(pool: &'static LocalKey<RefCell<Pool<T>>>) -> usize {
    pool.with(|pool| pool.borrow().free.len())
}

/// Receive buffers pooled per thread.
const MAX_RECV_BUFFERS: usize = 16;
/// Receive-buffer bytes pooled per thread (large frames leave large buffers).
const MAX_RECV_BYTES: usize = 8 << 20;

thread_local! {
    static RECV_BUFFERS: RefCell<Pool<BytesMut>> =
        const { RefCell::new(Pool::new(MAX_RECV_BUFFERS, MAX_RECV_BYTES)) };
}

/// Moves a buffer from this thread's pool into `buf`, which holds nothing (capacity 0), if the
/// pool has one; otherwise `buf` allocates on its first reserve. For a shell that reads into
/// [`Connection::recv_buf`](crate::Connection::recv_buf) only while a read brings bytes.
///
/// ```
/// use bytes::BytesMut;
/// use fullduplex_proto::pool::{lend_recv_buffer, return_recv_buffer};
/// let mut buf = BytesMut::with_capacity(4096);
/// return_recv_buffer(&mut buf); // an empty buffer goes back to the thread's pool
/// assert_eq!(buf.capacity(), 0);
/// let mut next = BytesMut::new();
/// lend_recv_buffer(&mut next); // the next connection that reads gets it
/// assert!(next.capacity() >= 4096);
/// ```
#[inline]
pub fn lend_recv_buffer(buf: &mut BytesMut) {
    debug_assert_eq!(buf.capacity(), 0);
    if let Some(pooled) = take(&RECV_BUFFERS) {
        *buf = pooled;
    }
}

/// Moves the empty `buf` into this thread's pool (or frees it if the pool is full); `buf` is
/// left holding nothing, so an idle connection costs no buffer. A buffer that still holds
/// bytes (a partial frame) must stay with its connection.
#[inline]
pub fn return_recv_buffer(buf: &mut BytesMut) {
    debug_assert!(buf.is_empty());
    if buf.capacity() == 0 {
        return;
    }
    give(&RECV_BUFFERS, std::mem::take(buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_count_and_bytes() {
        thread_local! {
            static SMALL: RefCell<Pool<BytesMut>> = const { RefCell::new(Pool::new(2, 1000)) };
        }
        give(&SMALL, BytesMut::with_capacity(400));
        give(&SMALL, BytesMut::with_capacity(700)); // over the byte bound: freed
        assert_eq!(pooled(&SMALL), 1);
        give(&SMALL, BytesMut::with_capacity(500));
        give(&SMALL, BytesMut::with_capacity(10)); // over the count bound: freed
        assert_eq!(pooled(&SMALL), 2);
        assert!(take(&SMALL).is_some_and(|b| b.capacity() >= 500));
        give(&SMALL, BytesMut::with_capacity(500)); // room again: the bytes were given back
        assert_eq!(pooled(&SMALL), 2);
    }

    #[test]
    fn receive_buffers_are_lent_and_returned() {
        let mut buf = BytesMut::new();
        lend_recv_buffer(&mut buf);
        assert_eq!(buf.capacity(), 0, "this thread's pool starts empty");
        buf.reserve(1024);
        buf.extend_from_slice(b"frame");
        buf.clear();
        return_recv_buffer(&mut buf);
        assert_eq!(buf.capacity(), 0);
        assert_eq!(pooled(&RECV_BUFFERS), 1);
        let mut other = BytesMut::new();
        lend_recv_buffer(&mut other);
        assert!(other.capacity() >= 1024);
        assert_eq!(pooled(&RECV_BUFFERS), 0);
    }
}
