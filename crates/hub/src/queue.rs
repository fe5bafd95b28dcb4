//! A connection's outgoing queue: encoded frames waiting to be written, bounded in bytes.
//!
//! The broker pushes into it without ever waiting (a lock held for a `VecDeque::push_back`),
//! so a stalled client cannot slow a publisher down. When a push would take the queue over
//! its byte limit, the queue is emptied and marked overflowed: the connection's driver then
//! closes that connection (1013, `slow consumer`). The driver drains everything queued at
//! once and writes it in one batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Wake;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::topic::Topic;

/// What the server (its API) asks of a connection, through its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close the connection with this code and reason.
    Disconnect {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Leave this topic (and say `unsubscribed`).
    Unsubscribe {
        /// The topic.
        topic: Topic,
    },
}

/// The queue overflowed; the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outgoing queue overflowed")]
pub struct Overflow {
    /// How many queued frames were discarded.
    pub dropped: usize,
}

/// A connection's delivery queue: encoded frames waiting to be written, bounded in bytes.
///
/// Every subscriber has one, so it is kept small (120 bytes with its `Arc`): what only some
/// queues need (a task's wake-up, control requests) is boxed.
#[derive(Debug)]
pub struct DeliveryQueue {
    state: Mutex<State>,
    limit: usize,
    /// Who writes the queue, and how they are woken.
    writer: Writer,
    /// Set while `State::control` holds something (read without the lock).
    has_control: AtomicBool,
    /// The connection negotiated permessage-deflate: it takes compressed message frames.
    deflate: bool,
}

/// Who writes a queue.
#[derive(Debug)]
enum Writer {
    /// A task that waits in [`DeliveryQueue::wait`] or [`DeliveryQueue::overflowed`].
    Task(Box<TaskWake>),
    /// A connection driver, which is told the connection's slot.
    Driver(DriverLink),
}

/// How a queue wakes a task that writes it.
#[derive(Debug, Default)]
struct TaskWake {
    ready: Notify,
    /// Told when the queue overflows, besides `ready`.
    overflow_signal: Option<Arc<Notify>>,
}

/// Where a driven connection's wake-ups go: its driver's lists of woken slots.
pub(crate) trait SlotWake: Send + Sync + std::fmt::Debug {
    /// Notes slot `index` as woken (`write`: by its queue, which has frames to write) and
    /// wakes the driver's task.
    fn wake_slot(&self, index: u32, write: bool);
}

/// A driven connection's place: its driver and slot.
#[derive(Debug)]
struct DriverLink {
    driver: Arc<dyn SlotWake>,
    index: u32,
}

/// The largest ring a drained queue keeps: enough for a few messages at a steady rate
/// without allocating again. A larger one (a burst's) is freed when drained.
const IDLE_SLOTS: usize = 4;

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// What the server asked of the connection. Rare: a thin pointer (8 bytes where a `Vec`
    /// takes 24) keeps every queue in a smaller allocation class.
    #[allow(clippy::box_collection)]
    control: Option<Box<Vec<Control>>>,
    overflowed: bool,
}

impl State {
    /// Appends `frame`. The ring's first allocation is one slot (a `VecDeque` would take four):
    /// most subscribers hold one frame at a time, and an idle one keeps that slot.
    fn enqueue(&mut self, frame: Bytes) {
        if self.frames.capacity() == 0 {
            self.frames.reserve_exact(1);
        }
        self.frames.push_back(frame);
    }
}

/// What [`DeliveryQueue::drain`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Frames to write (possibly none), in order.
    Frames,
    /// The queue overflowed: close the connection as a slow consumer.
    Overflowed,
}

impl DeliveryQueue {
    /// An empty queue that holds at most `limit` bytes.
    pub fn new(limit: usize) -> DeliveryQueue {
        DeliveryQueue {
            state: Mutex::new(State::default()),
            limit: limit.max(1),
            writer: Writer::Task(Box::default()),
            has_control: AtomicBool::new(false),
            deflate: false,
        }
    }

    /// The same queue for the connection in slot `index` of `driver`, which is woken (to
    /// write) where [`wait`](DeliveryQueue::wait) and [`overflowed`](DeliveryQueue::overflowed)
    /// would be (a push to an empty queue, an overflow, a control request). The queue is then
    /// also the connection's [`Waker`](std::task::Waker) (to read: see its `Wake`
    /// implementation), so that a driven connection needs no waker allocation of its own.
    /// [`wait`](DeliveryQueue::wait) and [`overflowed`](DeliveryQueue::overflowed) then never
    /// return, and an overflow signal is dropped.
    pub(crate) fn with_driver(mut self, driver: Arc<dyn SlotWake>, index: u32) -> DeliveryQueue {
        self.writer = Writer::Driver(DriverLink { driver, index });
        self
    }

    /// The same queue, which also notifies `signal` when it overflows: for a consumer that
    /// is not always listening, such as an HTTP response body that hyper polls only while the
    /// client reads. A driven queue ignores it.
    pub fn with_overflow_signal(mut self, signal: Arc<Notify>) -> DeliveryQueue {
        if let Writer::Task(task) = &mut self.writer {
            task.overflow_signal = Some(signal);
        }
        self
    }

    /// The same queue for a connection that takes compressed message frames (`true`: it
    /// negotiated permessage-deflate with the hub's terms, see [`crate::deflate`]).
    pub fn with_deflate(mut self, deflate: bool) -> DeliveryQueue {
        self.deflate = deflate;
        self
    }

    /// Whether the connection takes compressed message frames.
    pub fn wants_deflate(&self) -> bool {
        self.deflate
    }

    /// Asks the connection to do `control`, and wakes it.
    pub fn control(&self, control: Control) {
        self.lock()
            .control
            .get_or_insert_with(Box::default)
            .push(control);
        self.has_control.store(true, Ordering::Release);
        self.wake();
    }

    /// What the server asked of the connection since the last call, in order.
    pub fn take_control(&self) -> Vec<Control> {
        // A plain load first: this runs on every turn of the connection, and a swap would
        // take the cache line for writing each time.
        if !self.has_control.load(Ordering::Acquire)
            || !self.has_control.swap(false, Ordering::AcqRel)
        {
            return Vec::new();
        }
        self.lock()
            .control
            .take()
            .map(|control| *control)
            .unwrap_or_default()
    }

    /// Wakes whoever writes this queue.
    fn wake(&self) {
        match &self.writer {
            Writer::Driver(link) => link.driver.wake_slot(link.index, true),
            Writer::Task(task) => task.ready.notify_one(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `frame` without waiting. If the queue would exceed its limit, it is emptied and
    /// marked overflowed (and stays so): this and every later push fail.
    pub fn push(&self, frame: Bytes) -> Result<(), Overflow> {
        self.push_counted(frame.len(), 1, |state| state.enqueue(frame))
    }

    /// Queues `frames` in order, like as many [`push`](DeliveryQueue::push)es under one lock
    /// and with at most one wake-up. If they would take the queue over its limit, none is
    /// queued and the queue overflows.
    pub fn push_all(&self, frames: &[Bytes]) -> Result<(), Overflow> {
        let bytes = frames.iter().map(Bytes::len).sum();
        self.push_counted(bytes, frames.len(), |state| match frames {
            [frame] => state.enqueue(frame.clone()),
            _ => state.frames.extend(frames.iter().cloned()),
        })
    }

    /// Counts `count` frames of `bytes` against the limit and, if they fit, queues them with
    /// `enqueue`; otherwise the queue overflows.
    fn push_counted(
        &self,
        bytes: usize,
        count: usize,
        enqueue: impl FnOnce(&mut State),
    ) -> Result<(), Overflow> {
        let mut state = self.lock();
        if state.overflowed {
            return Err(Overflow { dropped: count });
        }
        if state.bytes + bytes > self.limit {
            state.overflowed = true;
            let dropped = state.frames.len() + count;
            state.frames = VecDeque::new();
            state.bytes = 0;
            drop(state);
            self.wake();
            if let Writer::Task(task) = &self.writer {
                if let Some(signal) = &task.overflow_signal {
                    signal.notify_one();
                }
            }
            return Err(Overflow { dropped });
        }
        let was_empty = state.frames.is_empty();
        state.bytes += bytes;
        enqueue(&mut state);
        drop(state);
        if was_empty && count > 0 {
            self.wake();
        }
        Ok(())
    }

    /// Queues a reply to the client's own request (an answer, an error, a subscription's
    /// replay) without counting it against the limit: such bursts are bounded (by the
    /// history size), and the connection reads no further request while its queue is
    /// being written. Fails only once the queue has overflowed.
    pub fn push_reply(&self, frame: Bytes) -> Result<(), Overflow> {
        let mut state = self.lock();
        if state.overflowed {
            return Err(Overflow { dropped: 1 });
        }
        let was_empty = state.frames.is_empty();
        state.enqueue(frame);
        drop(state);
        if was_empty {
            self.wake();
        }
        Ok(())
    }

    /// Moves every queued frame into `into` (appending), or reports the overflow.
    pub fn drain(&self, into: &mut Vec<Bytes>) -> Drained {
        let mut state = self.lock();
        if state.overflowed {
            return Drained::Overflowed;
        }
        into.extend(state.frames.drain(..));
        state.bytes = 0;
        // A burst grows the ring (to 32 slots for 20 messages): once drained, it is freed
        // whole (the next push takes one slot), so that 10,000 subscribers do not keep a
        // burst's 1 KiB each. Shrinking it in place would leave a hole beside each small
        // ring that the allocator can neither reuse for large blocks nor give back; freed
        // whole, the rings of a burst (allocated one after the other) join into free space
        // that [`crate::allocator`] returns to the system.
        if state.frames.capacity() > IDLE_SLOTS {
            crate::allocator::note_burst_freed(
                state.frames.capacity() * std::mem::size_of::<Bytes>(),
            );
            state.frames = VecDeque::new();
        }
        Drained::Frames
    }

    /// Whether the queue overflowed.
    pub fn is_overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Waits until something was pushed to an empty queue, or it overflowed, since the last
    /// wait (a push that happened before this call counts).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a push that happens meanwhile is seen by the next call.
    pub async fn wait(&self) {
        match &self.writer {
            Writer::Task(task) => task.ready.notified().await,
            Writer::Driver(_) => std::future::pending().await,
        }
    }

    /// Waits until the queue has overflowed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn overflowed(&self) {
        let Writer::Task(task) = &self.writer else {
            return std::future::pending().await;
        };
        loop {
            // Register before checking, so that an overflow in between is not missed.
            let notified = task.ready.notified();
            if self.is_overflowed() {
                return;
            }
            notified.await;
        }
    }
}

/// A driven connection's waker (for its socket, timers and requests) is its queue: waking it
/// notes the connection's slot for a read turn of its driver. A queue without a driver
/// ignores it.
impl Wake for DeliveryQueue {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Writer::Driver(link) = &self.writer {
            link.driver.wake_slot(link.index, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_drain_and_overflow() {
        let queue = DeliveryQueue::new(10);
        assert_eq!(queue.push(Bytes::from_static(b"abcd")), Ok(()));
        assert_eq!(queue.push(Bytes::from_static(b"efgh")), Ok(()));
        assert_eq!(queue.queued_bytes(), 8);
        // The first push left a wake-up behind.
        tokio::time::timeout(std::time::Duration::from_secs(1), queue.wait())
            .await
            .expect("woken");
        let mut frames = Vec::new();
        assert_eq!(queue.drain(&mut frames), Drained::Frames);
        assert_eq!(frames, [&b"abcd"[..], &b"efgh"[..]]);
        assert_eq!(queue.queued_bytes(), 0);

        assert_eq!(queue.push_reply(Bytes::from(vec![b'r'; 100])), Ok(()));
        assert_eq!(queue.push(Bytes::from_static(b"0123456789")), Ok(()));
        assert_eq!(
            queue.push(Bytes::from_static(b"x")),
            Err(Overflow { dropped: 3 })
        );
        assert!(queue.is_overflowed());
        assert_eq!(
            queue.push(Bytes::from_static(b"y")),
            Err(Overflow { dropped: 1 })
        );
        assert_eq!(queue.drain(&mut frames), Drained::Overflowed);
        tokio::time::timeout(std::time::Duration::from_secs(1), queue.overflowed())
            .await
            .expect("overflow seen");
    }

    #[test]
    fn a_drained_queue_gives_back_what_a_burst_grew() {
        let queue = DeliveryQueue::new(1 << 20);
        let mut frames = Vec::new();
        queue.push(Bytes::from_static(b"one")).unwrap();
        queue.drain(&mut frames);
        // One frame at a time takes one slot.
        assert_eq!(queue.lock().frames.capacity(), 1);
        queue.push_reply(Bytes::from_static(b"two")).unwrap();
        assert_eq!(queue.lock().frames.capacity(), 1);
        queue.drain(&mut frames);
        // A few frames at a time keep their ring: a steady rate allocates nothing.
        for _ in 0..2 {
            for _ in 0..IDLE_SLOTS {
                queue.push(Bytes::from_static(b"few")).unwrap();
            }
            queue.drain(&mut frames);
            assert_eq!(queue.lock().frames.capacity(), IDLE_SLOTS);
        }
        for _ in 0..20 {
            queue.push(Bytes::from_static(b"burst")).unwrap();
        }
        assert!(queue.lock().frames.capacity() >= 20);
        frames.clear();
        assert_eq!(queue.drain(&mut frames), Drained::Frames);
        assert_eq!(frames.len(), 20);
        // A burst's ring is freed whole; the next frame takes one slot again.
        assert_eq!(queue.lock().frames.capacity(), 0);
        queue.push(Bytes::from_static(b"next")).unwrap();
        assert_eq!(queue.lock().frames.capacity(), 1);
    }

    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<(u32, bool)>>);

    impl SlotWake for Recorder {
        fn wake_slot(&self, index: u32, write: bool) {
            self.0.lock().unwrap().push((index, write));
        }
    }

    #[test]
    fn a_driven_queue_wakes_its_slot_to_write_and_as_a_waker_to_read() {
        let recorder = Arc::new(Recorder::default());
        let queue = Arc::new(DeliveryQueue::new(1 << 20).with_driver(recorder.clone(), 7));
        // A push to an empty queue wakes the slot to write; a second push does not.
        queue.push(Bytes::from_static(b"a")).unwrap();
        queue.push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(*recorder.0.lock().unwrap(), [(7, true)]);
        // The queue as the connection's waker wakes the slot to read.
        let waker = std::task::Waker::from(queue.clone());
        waker.wake_by_ref();
        waker.wake();
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [(7, true), (7, false), (7, false)]
        );
        // A control request wakes it to write.
        queue.control(Control::Disconnect {
            code: 4000,
            reason: String::new(),
        });
        assert_eq!(recorder.0.lock().unwrap().last(), Some(&(7, true)));
        // A queue without a driver ignores its waker.
        std::task::Waker::from(Arc::new(DeliveryQueue::new(16))).wake();
    }

    #[test]
    fn a_queue_is_small() {
        // One per subscriber: 104 bytes, 120 with its `Arc` (a 128-byte allocation).
        assert!(std::mem::size_of::<DeliveryQueue>() <= 104);
    }

    #[tokio::test]
    async fn overflow_wakes_a_waiting_writer() {
        let queue = std::sync::Arc::new(DeliveryQueue::new(4));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.overflowed().await }
        });
        tokio::task::yield_now().await;
        let _ = queue.push(Bytes::from_static(b"12345"));
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
