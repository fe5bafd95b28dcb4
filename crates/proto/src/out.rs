//! The outgoing byte queue: frames waiting to be written, ready for one vectored write.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Payloads at least this long are queued by reference; shorter ones are copied next to their
/// header. Copying a few dozen bytes is cheaper than a reference count and an extra `iovec`,
/// and it lets many small frames leave in one contiguous write.
pub const COPY_THRESHOLD: usize = 256;

/// The tail grows in steps of at least this much. Headers of many frames then share one
/// buffer: sealing the tail before a shared chunk does not allocate, and a new buffer is needed
/// only once per few hundred frames while earlier ones are still being written.
const TAIL_STEP: usize = 4096;

/// Bytes waiting to be written, in order: shared chunks (large payloads, pre-encoded frames)
/// followed by a contiguous tail where headers and small payloads are written.
///
/// It implements [`bytes::Buf`]; a shell writes it with
/// [`OutQueue::chunks_vectored`] and a vectored write, then calls [`Buf::advance`] with the
/// number of bytes written.
///
/// ```
/// use bytes::{Buf, Bytes};
/// use fullduplex_proto::OutQueue;
/// let mut out = OutQueue::new();
/// out.push_copy(b"head");
/// out.push_bytes(Bytes::from(vec![7u8; 1000]));
/// out.push_copy(b"tail");
/// assert_eq!(out.remaining(), 1008);
/// let mut slices = [std::io::IoSlice::new(&[]); 8];
/// assert_eq!(out.chunks_vectored(&mut slices), 3);
/// out.advance(1006);
/// assert_eq!(out.chunk(), b"il");
/// ```
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl OutQueue {
    /// An empty queue. Allocates nothing until bytes are queued.
    pub fn new() -> OutQueue {
        OutQueue::default()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `bytes`.
    pub fn push_copy(&mut self, bytes: &[u8]) {
        self.reserve_tail(bytes.len());
        self.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends `bytes` without copying it.
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.seal_tail();
        self.len += bytes.len();
        self.chunks.push_back(bytes);
    }

    /// Appends `len` bytes written by `fill` directly into the tail (used to mask in place).
    pub(crate) fn push_with(&mut self, len: usize, fill: impl FnOnce(&mut BytesMut)) {
        let before = self.tail.len();
        self.reserve_tail(len);
        fill(&mut self.tail);
        debug_assert_eq!(self.tail.len() - before, len);
        self.len += self.tail.len() - before;
    }

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

impl Buf for OutQueue {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(chunk) => chunk,
            None => &self.tail,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the queue");
        self.len -= cnt;
        while cnt > 0 {
            match self.chunks.front_mut() {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    self.chunks.pop_front();
                }
                Some(front) => {
                    front.advance(cnt);
                    return;
                }
                None => {
                    self.tail.advance(cnt);
                    return;
                }
            }
        }
        if self.len == 0 {
            // Keep the allocation, drop the consumed prefix: the next frame starts at offset 0.
            self.tail.clear();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for chunk in self.chunks.iter() {
            if n == dst.len() {
                return n;
            }
            dst[n] = IoSlice::new(chunk);
            n += 1;
        }
        if n < dst.len() && !self.tail.is_empty() {
            dst[n] = IoSlice::new(&self.tail);
            n += 1;
        }
        n
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
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(out.chunks_vectored(&mut slices), 2);
        let mut all = [IoSlice::new(&[]); 8];
        let n = out.chunks_vectored(&mut all);
        let joined: Vec<u8> = all[..n].iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(joined, b"abcdef");
    }
}
