//! The connection's timers: keepalive ping and pong deadline, idle timeout, close timeout.
//!
//! One `Sleep` serves them all, armed for the earliest deadline and allocated only once a timer
//! is in use: a connection with every timer off carries none.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;

use tokio::time::{Instant, Sleep};

use fullduplex_proto::Timeout;

use crate::config::{Config, Keepalive};
use crate::error::{Error, TimeoutKind};

/// The core's name for a timer that ran out: the core decides what its expiry means
/// ([`fullduplex_proto::Connection::on_timeout`]). The handshake timeout ends a connection
/// that has no core yet; here it counts as the close timeout (no close frame, abort).
pub(crate) fn core_timeout(kind: TimeoutKind) -> Timeout {
    match kind {
        TimeoutKind::Keepalive => Timeout::Keepalive,
        TimeoutKind::Idle => Timeout::Idle,
        TimeoutKind::Close | TimeoutKind::Handshake => Timeout::CloseHandshake,
    }
}

/// What the timers ask the connection to do.
#[derive(Debug, Default)]
pub(crate) struct Fired {
    pub(crate) send_ping: bool,
}

/// The timers of one connection. With keepalive and idle timeout off it is a close timeout
/// and an empty slot: the deadlines and the sleep are allocated only once a timer is in use
/// (at the start for keepalive, on by default, or idle; at the close handshake otherwise).
#[derive(Debug)]
pub(crate) struct Timers {
    state: Option<Box<TimerState>>,
}

#[derive(Debug)]
struct TimerState {
    keepalive: Option<Keepalive>,
    idle: Option<Duration>,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    last_received: Option<Instant>,
    close_deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timers {
    pub(crate) fn new(config: &Config) -> Timers {
        let state = (config.keepalive.is_some() || config.idle_timeout.is_some()).then(|| {
            let now = Instant::now();
            Box::new(TimerState {
                keepalive: config.keepalive,
                idle: config.idle_timeout,
                next_ping: config.keepalive.map(|k| now + first_ping_delay(k.interval)),
                pong_deadline: None,
                last_received: config.idle_timeout.map(|_| now),
                close_deadline: None,
                sleep: None,
            })
        });
        Timers { state }
    }

    /// True when any deadline is set (the common case, all off, costs one branch).
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.state.as_ref().is_some_and(|s| {
            s.next_ping.is_some() || s.last_received.is_some() || s.close_deadline.is_some()
        })
    }

    /// Bytes arrived.
    #[inline]
    pub(crate) fn received(&mut self) {
        if let Some(state) = self.state.as_mut().filter(|s| s.idle.is_some()) {
            if state.last_received.is_some() {
                state.last_received = Some(Instant::now());
            }
        }
    }

    /// A pong arrived: the peer is alive.
    pub(crate) fn pong_received(&mut self) {
        if let Some(state) = self.state.as_mut() {
            state.pong_deadline = None;
        }
    }

    /// The close handshake started: it must end within `close_timeout`.
    pub(crate) fn start_close_timer(&mut self, close_timeout: Duration) {
        let state = self.state.get_or_insert_with(|| {
            Box::new(TimerState {
                keepalive: None,
                idle: None,
                next_ping: None,
                pong_deadline: None,
                last_received: None,
                close_deadline: None,
                sleep: None,
            })
        });
        if state.close_deadline.is_none() {
            state.close_deadline = Some(Instant::now() + close_timeout);
        }
        // No more pings or idle checks once closing.
        state.next_ping = None;
        state.pong_deadline = None;
        state.last_received = None;
    }

    /// True once the close deadline has passed; otherwise arms the timer to wake `cx` then.
    pub(crate) fn close_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(state) = self.state.as_mut() else {
            return false;
        };
        let Some(deadline) = state.close_deadline else {
            return false;
        };
        if Instant::now() >= deadline {
            return true;
        }
        state.arm(deadline, cx).is_ready()
    }

    /// Checks every deadline, fails on an expired one, and arms the sleep for the next.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Result<Fired, Error> {
        match self.state.as_mut() {
            Some(state) => state.poll(cx),
            None => Ok(Fired::default()),
        }
    }
}

/// The delay of a connection's first ping: the interval less a random part of up to a tenth of
/// it. Connections opened together (a reconnect wave, a load test) would otherwise ping, and
/// fail a silent peer, in the same instant forever; their phases now spread over 10% of the
/// interval, and a silent peer is still failed within `interval + timeout`.
fn first_ping_delay(interval: Duration) -> Duration {
    let tenth = u64::try_from((interval / 10).as_nanos()).unwrap_or(u64::MAX);
    if tenth == 0 {
        return interval;
    }
    interval.saturating_sub(Duration::from_nanos(jitter_random() % (tenth + 1)))
}

/// A per-thread xorshift64* sequence seeded from the standard library's per-process random
/// hasher keys: jitter needs spread, not unpredictability, and this costs no system call.
fn jitter_random() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

impl TimerState {
    fn poll(&mut self, cx: &mut Context<'_>) -> Result<Fired, Error> {
        let mut fired = Fired::default();
        loop {
            let now = Instant::now();
            if self.pong_deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout(TimeoutKind::Keepalive));
            }
            if let (Some(idle), Some(last)) = (self.idle, self.last_received) {
                if now >= last + idle {
                    return Err(Error::Timeout(TimeoutKind::Idle));
                }
            }
            if self.close_deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout(TimeoutKind::Close));
            }
            if let (Some(keepalive), Some(next)) = (self.keepalive, self.next_ping) {
                if now >= next {
                    fired.send_ping = true;
                    self.next_ping = Some(now + keepalive.interval);
                    if self.pong_deadline.is_none() {
                        self.pong_deadline = Some(now + keepalive.timeout);
                    }
                }
            }
            let next = [
                self.pong_deadline,
                self.idle.zip(self.last_received).map(|(i, l)| l + i),
                self.close_deadline,
                self.next_ping,
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(deadline) => {
                    if self.arm(deadline, cx).is_pending() {
                        return Ok(fired);
                    }
                    // Already due: check again.
                }
                None => return Ok(fired),
            }
        }
    }

    fn arm(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ping_comes_within_the_last_tenth_of_the_interval_and_spreads() {
        let interval = Duration::from_secs(20);
        let delays: Vec<Duration> = (0..1000).map(|_| first_ping_delay(interval)).collect();
        assert!(delays
            .iter()
            .all(|d| *d <= interval && *d >= Duration::from_secs(18)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 900, "{} distinct delays", distinct.len());
        let below_19 = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(19))
            .count();
        assert!(
            (350..650).contains(&below_19),
            "{below_19} of 1000 below 19 s"
        );
        assert_eq!(
            first_ping_delay(Duration::from_nanos(5)),
            Duration::from_nanos(5)
        );
        assert_eq!(first_ping_delay(Duration::ZERO), Duration::ZERO);
    }
}
