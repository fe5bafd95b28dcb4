//! The connection's timers: keepalive ping and pong deadline, idle timeout, close timeout.
//!
//! One `Sleep` serves them all, armed for the earliest deadline and allocated only once a timer
//! is in use: a connection with every timer off carries none.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;

use tokio::time::{Instant, Sleep};

use crate::config::{Config, Keepalive};
use crate::error::{Error, TimeoutKind};

/// What the timers ask the connection to do.
#[derive(Debug, Default)]
pub(crate) struct Fired {
    pub(crate) send_ping: bool,
}

#[derive(Debug)]
pub(crate) struct Timers {
    keepalive: Option<Keepalive>,
    idle: Option<Duration>,
    close_timeout: Duration,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    last_received: Option<Instant>,
    close_deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timers {
    pub(crate) fn new(config: &Config) -> Timers {
        let now = (config.keepalive.is_some() || config.idle_timeout.is_some()).then(Instant::now);
        Timers {
            keepalive: config.keepalive,
            idle: config.idle_timeout,
            close_timeout: config.close_timeout,
            next_ping: config.keepalive.and_then(|k| Some(now? + k.interval)),
            pong_deadline: None,
            last_received: now.filter(|_| config.idle_timeout.is_some()),
            close_deadline: None,
            sleep: None,
        }
    }

    /// True when any deadline is set (the common case, all off, costs one branch).
    pub(crate) fn is_active(&self) -> bool {
        self.next_ping.is_some() || self.last_received.is_some() || self.close_deadline.is_some()
    }

    /// Bytes arrived.
    pub(crate) fn received(&mut self) {
        if self.idle.is_some() {
            self.last_received = Some(Instant::now());
        }
    }

    /// A pong arrived: the peer is alive.
    pub(crate) fn pong_received(&mut self) {
        self.pong_deadline = None;
    }

    /// The close handshake started: it must end within the close timeout.
    pub(crate) fn start_close_timer(&mut self) {
        if self.close_deadline.is_none() {
            self.close_deadline = Some(Instant::now() + self.close_timeout);
        }
        // No more pings or idle checks once closing.
        self.next_ping = None;
        self.pong_deadline = None;
        self.last_received = None;
    }

    /// True once the close deadline has passed; otherwise arms the timer to wake `cx` then.
    pub(crate) fn close_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.close_deadline else {
            return false;
        };
        if Instant::now() >= deadline {
            return true;
        }
        self.arm(deadline, cx).is_ready()
    }

    /// Checks every deadline, fails on an expired one, and arms the sleep for the next.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Result<Fired, Error> {
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
