//! The outgoing byte queue: frames waiting to be written, ready for one vectored write.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::MAX_HEADER_LEN;
use crate::mask::apply_mask;

/// Payloads of [`crate::Connection::send`] at least this long are queued by reference; shorter
/// ones are copied next to their header. Copying up to a couple of KiB costs less than a
/// reference count, an extra `iovec` and a vectored write (a 1 KiB echo runs about 150
/// instructions shorter under callgrind), lets many small frames leave in one contiguous
/// write, and hands the receive buffer back sooner.
pub const COPY_THRESHOLD: usize = 2048;

/// Pre-encoded frames ([`crate::Connection::send_encoded`]) at least this long are queued by
/// reference: one frame fanned out to many connections should be shared, not copied into
/// every queue.
pub const ENCODED_COPY_THRESHOLD: usize = 256;

/// The tail grows in steps of at least this much. Headers of many frames then share one
/// buffer: sealing the tail before a shared chunk does not allocate, and a new buffer is needed
/// only once per few hundred frames while earlier ones are still being written.
const TAIL_STEP: usize = 4096;

/// Bytes waiting to be written, in order: shared chunks (large payloads, pre-encoded frames)
/// followed by a contiguous tail where headers and small payloads are written.
///
/// A drained queue holds no memory: once everything has been written its buffers go back to a
/// small per-thread pool, and the next frame queued on any connection of that thread takes
/// them from there. An idle connection costs nothing here, and a busy one allocates nothing
/// per message.
///
/// A shell sees it through [`Connection::output`](crate::Connection::output), as a read-only
/// view: only the connection queues bytes (so nothing is queued past its state machine); the
/// shell reads them through [`bytes::Buf`] (with [`OutQueue::chunks_vectored`] for a vectored
/// write) and marks what it wrote with [`Buf::advance`].
///
/// ```
/// use bytes::{Buf, Bytes};
/// use fullduplex_proto::{Config, Connection, Message, Role};
/// let mut server = Connection::new(Role::Server, Config::default());
/// server.send(Message::binary(Bytes::from(vec![7u8; 4000]))).unwrap(); // queued by reference
/// server.send(Message::text("tail")).unwrap();
/// let out = server.output();
/// assert_eq!(out.remaining(), 4 + 4000 + 2 + 4);
/// let mut slices = [std::io::IoSlice::new(&[]); 8];
/// assert_eq!(out.chunks_vectored(&mut slices), 3); // header, payload, tail
/// out.advance(4 + 4000 + 2); // what the socket took
/// assert_eq!(out.chunk(), b"tail");
/// ```
#[derive(Debug)]
pub struct OutQueue {
    len: usize,
    /// The buffers, only while something is queued: a drained queue hands them back to the
    /// pool, so an idle connection's queue is two words.
    bufs: Option<Box<Buffers>>,
}

/// What a queue holds while it is not empty.
#[derive(Debug, Default)]
struct Buffers {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
}

impl Buffers {
    fn reserve_tail(&mut self, len: usize) {
        if self.tail.capacity() - self.tail.len() < len {
            self.tail.reserve(len.max(TAIL_STEP));
        }
    }

    /// Moves what the tail holds into the chunk list so that later chunks follow it.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }
}

impl OutQueue {
    /// An empty queue. Allocates nothing until bytes are queued.
    pub(crate) fn new() -> OutQueue {
        OutQueue { len: 0, bufs: None }
    }

    /// Bytes waiting to be written.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// How many separate pieces the queue holds (the `iovec`s a vectored write of all of it
    /// needs).
    #[inline]
    pub fn chunk_count(&self) -> usize {
        self.bufs
            .as_ref()
            .map_or(0, |b| b.chunks.len() + usize::from(!b.tail.is_empty()))
    }

    /// True when nothing waits to be written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `bytes`.
    pub(crate) fn push_copy(&mut self, bytes: &[u8]) {
        let bufs = self.bufs();
        bufs.reserve_tail(bytes.len());
        bufs.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends `bytes` without copying it.
    pub(crate) fn push_bytes(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let len = bytes.len();
        let bufs = self.bufs();
        bufs.seal_tail();
        bufs.chunks.push_back(bytes);
        self.len += len;
    }

    /// Appends one frame to the tail: the first `head_len` bytes of `head`, then `payload`,
    /// masked with `mask` (a client's frame).
    #[inline]
    pub(crate) fn push_frame(
        &mut self,
        head: &[u8; MAX_HEADER_LEN],
        head_len: usize,
        payload: &[u8],
        mask: Option<[u8; 4]>,
    ) {
        let bufs = self.bufs();
        bufs.reserve_tail(MAX_HEADER_LEN + payload.len());
        let start = bufs.tail.len();
        // The whole array is copied, a fixed-size copy the compiler inlines, and its unused
        // end cut off again: cheaper than a call to copy `head_len` bytes.
        bufs.tail.extend_from_slice(head);
        bufs.tail.truncate(start + head_len);
        bufs.tail.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut bufs.tail[start + head_len..], key, 0);
        }
        self.len += head_len + payload.len();
    }

    /// The buffers, taken from the pool when the queue holds none.
    fn bufs(&mut self) -> &mut Buffers {
        self.bufs.get_or_insert_with(pool::take)
    }

    /// Hands the buffers of a drained queue back to the pool.
    fn release(&mut self) {
        debug_assert!(self.len == 0);
        if let Some(bufs) = self.bufs.take() {
            pool::give(bufs);
        }
    }
}

impl Buf for OutQueue {
    #[inline]
    fn remaining(&self) -> usize {
        self.len
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        match &self.bufs {
            Some(bufs) => match bufs.chunks.front() {
                Some(chunk) => chunk,
                None => &bufs.tail,
            },
            None => &[],
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the queue");
        if cnt == 0 {
            return;
        }
        self.len -= cnt;
        if self.len == 0 {
            self.release();
            return;
        }
        let Some(bufs) = self.bufs.as_mut() else {
            return;
        };
        while cnt > 0 {
            match bufs.chunks.front_mut() {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    bufs.chunks.pop_front();
                }
                Some(front) => {
                    front.advance(cnt);
                    break;
                }
                None => {
                    bufs.tail.advance(cnt);
                    break;
                }
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let Some(bufs) = &self.bufs else {
            return 0;
        };
        let mut n = 0;
        for chunk in bufs.chunks.iter() {
            if n == dst.len() {
                return n;
            }
            dst[n] = IoSlice::new(chunk);
            n += 1;
        }
        if n < dst.len() && !bufs.tail.is_empty() {
            dst[n] = IoSlice::new(&bufs.tail);
            n += 1;
        }
        n
    }
}

/// Buffers of drained queues, per thread, in a pool of [`crate::pool`].
mod pool {
    use super::*;
    use crate::pool::{Pool, Pooled};

    /// Pooled queues per thread. A thread serves one connection at a time, so a few cover the
    /// busiest moments; the rest of the connections stay idle without buffers.
    const MAX_POOLED: usize = 16;
    /// Pooled tail bytes per thread (a client's masked 1 MiB frame may leave a large tail).
    const MAX_POOLED_BYTES: usize = 4 << 20;

    impl Pooled for Box<Buffers> {
        #[inline]
        fn pooled_bytes(&self) -> usize {
            self.tail.capacity()
        }
    }

    thread_local! {
        // The boxes themselves are what is reused, so they are pooled boxed.
        static POOL: RefCell<Pool<Box<Buffers>>> =
            const { RefCell::new(Pool::new(MAX_POOLED, MAX_POOLED_BYTES)) };
    }

    /// Pooled buffers if the pool has any, new (empty, unallocated) ones otherwise.
    pub(super) fn take() -> Box<Buffers> {
        crate::pool::take(&POOL).unwrap_or_default()
    }

    /// Empties `bufs` and keeps them for the next queue, unless the pool is full.
    pub(super) fn give(mut bufs: Box<Buffers>) {
        // The chunks go first: pieces split off the tail share its allocation, and once they
        // are gone the tail can take back its whole buffer without allocating.
        bufs.chunks.clear();
        bufs.tail.clear();
        if bufs.tail.capacity() < TAIL_STEP {
            bufs.tail.reserve(TAIL_STEP);
        }
        crate::pool::give(&POOL, bufs);
    }

    #[cfg(test)]
    pub(super) fn pooled() -> usize {
        crate::pool::pooled(&POOL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(out: &mut OutQueue, step: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while out.has_remaining() {
            let chunk = out.chunk();
            let n = chunk.len().min(step);
            got.extend_from_slice(&chunk[..n]);
            out.advance(n);
        }
        got
    }

    #[test]
    fn order_is_kept_across_copies_and_shared_chunks() {
        for step in [1, 3, 7, 100, 10_000] {
            let mut out = OutQueue::new();
            let mut expected = Vec::new();
            for i in 0..20u8 {
                if i % 3 == 0 {
                    let big = vec![i; 300];
                    expected.extend_from_slice(&big);
                    out.push_bytes(Bytes::from(big));
                } else {
                    expected.extend_from_slice(&[i, i]);
                    out.push_copy(&[i, i]);
                }
            }
            assert_eq!(out.len(), expected.len());
            assert_eq!(drain(&mut out, step), expected, "step {step}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn vectored_view_covers_everything_in_order() {
        let mut out = OutQueue::new();
        out.push_copy(b"ab");
        out.push_bytes(Bytes::from_static(b"cd"));
        out.push_copy(b"ef");
        assert_eq!(out.chunk_count(), 3);
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(out.chunks_vectored(&mut slices), 2);
        let mut all = [IoSlice::new(&[]); 8];
        let n = out.chunks_vectored(&mut all);
        let joined: Vec<u8> = all[..n].iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(joined, b"abcdef");
    }

    #[test]
    fn a_drained_queue_holds_no_buffer_and_reuses_the_pooled_one() {
        // Tests run on their own threads: this thread's pool starts empty.
        let mut out = OutQueue::new();
        out.push_copy(b"header");
        out.push_bytes(Bytes::from(vec![1u8; 1000]));
        out.push_copy(b"next");
        let n = out.remaining();
        out.advance(n);
        assert!(out.is_empty());
        assert!(out.bufs.is_none(), "the buffers went back to the pool");
        assert_eq!(pool::pooled(), 1);
        let mut other = OutQueue::new();
        other.push_copy(b"again");
        assert_eq!(pool::pooled(), 0, "the next queue took the pooled buffers");
        assert!(other.bufs.as_ref().unwrap().tail.capacity() >= TAIL_STEP);
        assert_eq!(other.chunk(), b"again");
    }

    #[test]
    fn a_partly_written_queue_keeps_its_buffers() {
        let mut out = OutQueue::new();
        out.push_copy(b"abcdef");
        out.advance(3);
        assert_eq!(out.chunk(), b"def");
        out.push_copy(b"gh");
        assert_eq!(drain(&mut out, 100), b"defgh");
    }
}
