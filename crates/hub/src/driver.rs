//! Connection drivers: the hub's WebSocket connections run in a few drivers (one per worker
//! thread) instead of a task each.
//!
//! A driver is one task that owns many [`Connection`]s in a slab. A connection's waker is its
//! [`DeliveryQueue`](crate::queue::DeliveryQueue) (no allocation of its own), which knows the
//! connection's slot: the socket, a request in progress and the queue itself (when frames are
//! pushed) all note the slot in the driver's list and wake the driver's task (once, however
//! many slots were woken). The driver then polls exactly the woken connections. A fan-out to
//! 10,000 subscribers thus costs 10,000 pushes to a list under one lock and one task wake-up
//! per driver, where a task per connection cost 10,000 task wake-ups and runs; and an idle
//! connection costs its socket and session in the slab, with no task header or future.
//!
//! Connections are handed to the drivers in turn as they are upgraded. A driver stops at
//! shutdown: each of its connections is then closed (1001) in a short-lived task of its own,
//! as is each connection that ends (the close handshake and leaving the topics wait, and
//! must not hold the driver).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::conn::{Admission, Connection, End, HubWebSocket, Turn};
use crate::queue::SlotWake;
use crate::{Hub, Slot};

/// How many connections a driver polls before it lets other tasks run (and looks at the
/// connections woken meanwhile).
const TURN: usize = 512;

/// Slots per page of the slab. The slab grows a page at a time and never moves a slot: a
/// single vector of 10,000 slots would be copied as it doubles, and leave the allocator
/// the old copies as free space that stays resident.
const PAGE: usize = 64;

/// An upgraded connection on its way to a driver.
struct Arrival {
    ws: HubWebSocket,
    admission: Admission,
    slot: Slot,
}

/// The hub's connection drivers.
#[derive(Debug)]
pub(crate) struct Drivers {
    inboxes: Vec<mpsc::UnboundedSender<Arrival>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrival").finish_non_exhaustive()
    }
}

impl Drivers {
    /// Starts `count` drivers (at least one) on the current runtime, in `hub`'s tasks.
    pub(crate) fn start(hub: &Arc<Hub>, count: usize) -> Drivers {
        let inboxes = (0..count.max(1))
            .map(|_| {
                let (sender, inbox) = mpsc::unbounded_channel();
                let driver = Driver::new(hub.clone(), inbox);
                // The driver keeps its own turns (`TURN`): tokio's per-task budget, meant for
                // one connection's future, would turn sockets away after a few dozen polls.
                hub.tasks().spawn(tokio::task::unconstrained(driver.run()));
                sender
            })
            .collect();
        Drivers {
            inboxes,
            next: AtomicUsize::new(0),
        }
    }

    /// Hands an upgraded connection to the next driver. Once the drivers have stopped
    /// (shutdown), the connection is closed with 1001 instead.
    pub(crate) fn insert(
        &self,
        hub: &Arc<Hub>,
        ws: HubWebSocket,
        admission: Admission,
        slot: Slot,
    ) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        if let Err(mpsc::error::SendError(arrival)) = self.inboxes[index].send(Arrival {
            ws,
            admission,
            slot,
        }) {
            let connection = Connection::open(
                hub.clone(),
                arrival.ws,
                arrival.admission,
                arrival.slot,
                None,
            );
            hub.tasks().spawn(connection.close(End::Shutdown));
        }
    }
}

/// One driver: a slab of connections and the list of those woken.
struct Driver {
    hub: Arc<Hub>,
    inbox: mpsc::UnboundedReceiver<Arrival>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    slots: Slab,
    /// Slots without a connection, reused first.
    free: Vec<u32>,
    /// Connections woken by their socket, a request or a timer, to poll first; each
    /// connection is in this or `writers` at most once (`Entry::queued`).
    ready: VecDeque<u32>,
    /// Connections woken only because their queue has frames to write: polled after
    /// `ready`, so that a publisher's input is read before the queues it fills are written
    /// (each subscriber's write then carries more of them).
    writers: VecDeque<u32>,
    woken: Arc<Woken>,
    /// Scratch space for a connection's frames while they are fed to its socket.
    frames: Vec<Bytes>,
}

/// The connections' slots, in pages of [`PAGE`].
#[derive(Default)]
struct Slab {
    pages: Vec<Vec<Entry>>,
    len: usize,
}

impl Slab {
    fn get_mut(&mut self, index: u32) -> Option<&mut Entry> {
        let index = index as usize;
        self.pages.get_mut(index / PAGE)?.get_mut(index % PAGE)
    }

    /// Adds a slot at index `len()`.
    fn push(&mut self, entry: Entry) {
        match self.pages.last_mut() {
            Some(page) if page.len() < PAGE => page.push(entry),
            _ => {
                let mut page = Vec::with_capacity(PAGE);
                page.push(entry);
                self.pages.push(page);
            }
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// One slot of the slab.
struct Entry {
    connection: Option<Box<Connection>>,
    queued: bool,
}

/// What the slots' wakers reach, from any thread.
#[derive(Debug, Default)]
struct Woken(Mutex<WokenList>);

#[derive(Debug, Default)]
struct WokenList {
    /// Slots woken since the driver last looked (duplicates possible).
    slots: Vec<u32>,
    /// Slots whose queue woke them.
    writes: Vec<u32>,
    /// The driver's task while it waits.
    driver: Option<Waker>,
}

impl Woken {
    fn lock(&self) -> std::sync::MutexGuard<'_, WokenList> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SlotWake for Woken {
    fn wake_slot(&self, index: u32, write: bool) {
        let driver = {
            let mut list = self.lock();
            if write {
                list.writes.push(index);
            } else {
                list.slots.push(index);
            }
            list.driver.take()
        };
        if let Some(driver) = driver {
            driver.wake();
        }
    }
}

impl Driver {
    fn new(hub: Arc<Hub>, inbox: mpsc::UnboundedReceiver<Arrival>) -> Driver {
        Driver {
            shutdown: Box::pin(hub.shutdown_token().clone().cancelled_owned()),
            hub,
            inbox,
            slots: Slab::default(),
            free: Vec::new(),
            ready: VecDeque::new(),
            writers: VecDeque::new(),
            woken: Arc::default(),
            frames: Vec::new(),
        }
    }

    /// Opens an arriving connection in a free slot and polls it soon.
    fn open(&mut self, arrival: Arrival) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Entry {
                    connection: None,
                    queued: false,
                });
                index
            }
        };
        let woken: Arc<dyn SlotWake> = self.woken.clone();
        let connection = Box::new(Connection::open(
            self.hub.clone(),
            arrival.ws,
            arrival.admission,
            arrival.slot,
            Some((woken, index)),
        ));
        let Some(entry) = self.slots.get_mut(index) else {
            self.hub.tasks().spawn(connection.close(End::Shutdown));
            return;
        };
        entry.connection = Some(connection);
        if !entry.queued {
            entry.queued = true;
            self.ready.push_back(index);
        }
    }

    /// Moves the slots woken meanwhile into `ready`; with none, leaves the task's waker for
    /// the next wake-up and returns false.
    fn collect(&mut self, cx: &Context<'_>) -> bool {
        let mut list = self.woken.lock();
        if list.slots.is_empty() && list.writes.is_empty() {
            match &list.driver {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => list.driver = Some(cx.waker().clone()),
            }
            return false;
        }
        let WokenList { slots, writes, .. } = &mut *list;
        for (woken, queue) in [(slots, &mut self.ready), (writes, &mut self.writers)] {
            for index in woken.drain(..) {
                if let Some(entry) = self.slots.get_mut(index) {
                    if !entry.queued && entry.connection.is_some() {
                        entry.queued = true;
                        queue.push_back(index);
                    }
                }
            }
        }
        true
    }

    /// Gives the connection in slot `index` its turn. One that has more requests goes back
    /// to the readers.
    fn poll_slot(&mut self, index: u32) {
        let Some(entry) = self.slots.get_mut(index) else {
            return;
        };
        let Some(connection) = entry.connection.as_mut() else {
            entry.queued = false;
            return;
        };
        // Made for each turn rather than kept in the slot (16 bytes a connection): a
        // reference count up and down on the queue, whose lock the turn takes anyway.
        let waker = connection.waker();
        let mut slot_cx = Context::from_waker(&waker);
        match connection.poll(&mut slot_cx, &mut self.frames) {
            Turn::Waiting => entry.queued = false,
            Turn::More => self.ready.push_back(index),
            Turn::Ended(end) => {
                entry.queued = false;
                self.end(index, end);
            }
        }
    }

    /// Closes an ended connection in a task of its own and frees its slot.
    fn end(&mut self, index: u32, end: End) {
        let Some(entry) = self.slots.get_mut(index) else {
            return;
        };
        if let Some(connection) = entry.connection.take() {
            self.free.push(index);
            self.hub.tasks().spawn(connection.close(end));
        }
    }
}

/// Why a driver's turn ended.
enum TurnEnd {
    /// It polled `TURN` connections and others may be waiting.
    Yield,
    /// The hub is shutting down: every connection is on its way to being closed.
    Stopped,
}

impl Driver {
    /// Runs turns until shutdown. Between full turns the driver yields to the scheduler in a
    /// way that lets it poll the sockets first (`yield_now`, not a wake-up of its own): a
    /// self-woken task would run again at once, and tokio would look at the sockets only
    /// every few dozen turns, so a publisher's socket would be read a few times a second in a
    /// long fan-out and each subscriber's write would carry one frame.
    async fn run(mut self) {
        loop {
            match std::future::poll_fn(|cx| self.poll_turn(cx)).await {
                TurnEnd::Yield => tokio::task::yield_now().await,
                TurnEnd::Stopped => return,
            }
        }
    }

    /// One turn: see [`Driver::run`].
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<TurnEnd> {
        if self.shutdown.as_mut().poll(cx).is_ready() {
            self.inbox.close();
            while let Ok(arrival) = self.inbox.try_recv() {
                self.open(arrival);
            }
            for index in 0..self.slots.len() as u32 {
                self.end(index, End::Shutdown);
            }
            return Poll::Ready(TurnEnd::Stopped);
        }
        while let Poll::Ready(Some(arrival)) = self.inbox.poll_recv(cx) {
            self.open(arrival);
        }
        // Each turn: the connections woken since the last one join the lines; up to `TURN`
        // connections that were ready get their turn (reading requests, a publisher's
        // included), then up to `TURN` writers are written. Readers beyond `TURN` (a
        // reconnect storm) wait for the next turn, so the writers do not wait for all of them.
        //
        // Messages published during the turn are queued to their subscribers after the
        // readers (and before the driver waits or yields), all of a topic's at once: a
        // publisher's 20 messages to a topic then cost each subscriber one queue touch and
        // one wake-up instead of 20 (see `Registry::defer_fan_out`).
        let hub = self.hub.clone();
        let deferral = hub.registry.defer_fan_out();
        self.collect(cx);
        let readers = self.ready.len().min(TURN);
        for _ in 0..readers {
            let Some(index) = self.ready.pop_front() else {
                break;
            };
            self.poll_slot(index);
        }
        deferral.flush();
        // Then the writers; a reader woken meanwhile waits until they are done or the next
        // turn.
        for _ in 0..TURN {
            let next = self.writers.pop_front().or_else(|| self.ready.pop_front());
            let Some(index) = next else {
                deferral.flush();
                if self.collect(cx) {
                    continue;
                }
                return Poll::Pending;
            };
            self.poll_slot(index);
        }
        Poll::Ready(TurnEnd::Yield)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_small() {
        // One per connection: the boxed connection and its flag, no waker.
        assert!(std::mem::size_of::<Entry>() <= 16);
    }
}
