//! Echo mode without compression: after the upgrade, each connection drives its raw TCP stream
//! by hand. Frames are masked ahead of time ([`FrameSet`]); a batch of messages leaves in one
//! write; echoes are read into a reused buffer and checked as they pass ([`EchoParser`]).
//!
//! Reading and writing happen in one poll loop, so a connection never stops reading while a
//! large batch waits to be written (the server may be blocked writing echoes to us).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use fullduplex::proto::frame::OpCode;
use fullduplex_loadgen::echo::{EchoParser, ParseError};
use fullduplex_loadgen::frame::close_frame;
use fullduplex_loadgen::message::{Expected, FrameSet, Style, DISTINCT};
use fullduplex_loadgen::LoadReport;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::args::BenchArgs;
use super::connect::{open_all, open_failure, Target, Upgraded};
use super::finish::finish_echo;
use super::progress::{self, Progress};
use super::stats::{Counts, Samples, Shared, Window};
use crate::Failure;

/// How long the close handshake after the run may take per connection.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// The pause before trying to connect again after a failed attempt.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Smallest and largest read buffer per connection.
const MIN_READ_BUF: usize = 4 << 10;
const MAX_READ_BUF: usize = 64 << 10;

/// What every connection of the run shares.
struct Plan {
    frames: FrameSet,
    expected: Expected,
    pipeline: usize,
    size: u64,
    /// Open loop: the time between two messages of one connection.
    interval: Option<Duration>,
    connections: usize,
    window: Window,
}

/// Why a connection stopped before the end of the run.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server ended the stream without a close frame.
    #[error("the server closed the TCP connection")]
    Eof,
    /// The server's frames were not the expected echoes (or a close frame).
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The library's `WebSocket` failed (--compress).
    #[error("{0}")]
    Library(#[from] fullduplex::Error),
}

/// Runs echo mode on raw streams and reports.
pub async fn run(args: &BenchArgs, target: Arc<Target>) -> Result<LoadReport, Failure> {
    let opcode = if args.binary {
        OpCode::Binary
    } else {
        OpCode::Text
    };
    let connections = args.connections;
    let opened = {
        let shared_target = target.clone();
        open_all(connections, move |index| {
            let target = shared_target.clone();
            async move { target.open(index).await }
        })
        .await
        .map_err(|failed| open_failure(&target, connections, failed))?
    };
    let shared = Shared::new(progress::wanted(args.json));
    shared.open.store(connections as u64, Ordering::Relaxed);
    let window = Window::starting_now(args.warmup, args.duration);
    let plan = Arc::new(Plan {
        frames: FrameSet::new(opcode, args.size, args.pipeline, Style::Plain),
        expected: Expected::new(opcode, args.size, Style::Plain),
        pipeline: args.pipeline,
        size: args.size as u64,
        interval: args
            .rate
            .map(|rate| Duration::from_secs_f64(connections as f64 / rate)),
        connections,
        window,
    });
    let progress = shared
        .live
        .then(|| Progress::start(shared.clone(), window, "msg"));
    let mut tasks = Vec::with_capacity(connections);
    for (index, upgraded) in opened.into_iter().enumerate() {
        let plan = plan.clone();
        let target = target.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(connection(
            index, upgraded, plan, target, shared,
        )));
    }
    Ok(finish_echo(tasks, progress, &shared, args, connections, false).await)
}

/// One connection for the whole run, reconnecting after failures. Returns its counts and
/// whether it was open at the end.
async fn connection(
    index: usize,
    first: Upgraded,
    plan: Arc<Plan>,
    target: Arc<Target>,
    shared: Arc<Shared>,
) -> (Counts, bool) {
    let mut counts = Counts::default();
    let mut samples = Samples::new(shared.clone());
    let mut driver = Driver::new(&plan, index);
    let mut next = Some(first);
    let mut open_at_end = false;
    loop {
        let upgraded = match next.take() {
            Some(upgraded) => upgraded,
            None => match reconnect(index, &target, plan.window.end, &shared, &mut counts).await {
                Some(upgraded) => upgraded,
                None => break,
            },
        };
        match driver
            .drive(upgraded, &plan, &mut counts, &mut samples, &shared)
            .await
        {
            Ok(mut end) => {
                open_at_end = true;
                samples.flush();
                let rest = end.unfinished(&plan.frames);
                let _ = close(
                    &mut end.stream,
                    &mut end.parser,
                    &plan.expected,
                    rest,
                    false,
                )
                .await;
                break;
            }
            Err(error) => {
                counts.errors += 1;
                shared.open.fetch_sub(1, Ordering::Relaxed);
                shared.error(index, &error.to_string());
                if Instant::now() >= plan.window.end {
                    break;
                }
            }
        }
    }
    samples.flush();
    (counts, open_at_end)
}

/// Opens connection `index` again, retrying until the run ends; `None` if it ends first.
pub async fn reconnect(
    index: usize,
    target: &Target,
    end: Instant,
    shared: &Shared,
    counts: &mut Counts,
) -> Option<Upgraded> {
    loop {
        if Instant::now() >= end {
            return None;
        }
        match tokio::time::timeout_at(end.into(), target.open(index)).await {
            Ok(Ok(upgraded)) => {
                counts.reconnects += 1;
                shared.open.fetch_add(1, Ordering::Relaxed);
                return Some(upgraded);
            }
            Ok(Err(error)) => {
                counts.errors += 1;
                shared.error(index, &error.describe(&target.authority));
                let pause = (Instant::now() + RETRY_PAUSE).min(end);
                tokio::time::sleep_until(pause.into()).await;
            }
            Err(_) => return None,
        }
    }
}

/// Sends a close frame (after `rest`, the unwritten part of a frame already started) and
/// waits, at most [`CLOSE_WAIT`], for the server's close frame (and with `wait_eof`, for the
/// end of the stream). Data frames still arriving are skipped.
pub async fn close<S>(
    stream: &mut S,
    parser: &mut EchoParser,
    expected: &Expected,
    rest: &[u8],
    wait_eof: bool,
) -> Result<(), DriveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    parser.drain();
    let closing = async {
        if !rest.is_empty() {
            stream.write_all(rest).await?;
        }
        stream.write_all(&close_frame()).await?;
        let mut buf = [0u8; 2048];
        let mut closed = false;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return if closed { Ok(()) } else { Err(DriveError::Eof) };
            }
            if closed {
                continue;
            }
            match parser.feed(expected, &buf[..n]) {
                Ok(_) => {}
                Err(ParseError::Closed { .. }) if wait_eof => closed = true,
                Err(ParseError::Closed { .. }) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
    };
    match tokio::time::timeout(CLOSE_WAIT, closing).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// Where the batch being written stands.
#[derive(Debug, Clone, Copy, Default)]
struct Out {
    /// The frame (of `DISTINCT`) written next.
    next: usize,
    /// Bytes of that frame already written.
    partial: usize,
    /// Frames queued and not completely written.
    queued: usize,
}

impl Out {
    fn advance(&mut self, written: usize, frame_len: usize) {
        let total = self.partial + written;
        let done = total / frame_len;
        self.partial = total % frame_len;
        self.next = (self.next + done) % DISTINCT;
        self.queued -= done;
    }
}

/// A connection that reached the end of the run, ready to be closed.
struct Ended {
    stream: TcpStream,
    parser: EchoParser,
    out: Out,
}

impl Ended {
    /// The unwritten part of a frame that was being written when the run ended.
    fn unfinished<'a>(&self, frames: &'a FrameSet) -> &'a [u8] {
        if self.out.partial == 0 {
            &[]
        } else {
            frames.bytes(self.out.next, 1, self.out.partial)
        }
    }
}

/// The per-connection buffers, kept across reconnects.
struct Driver {
    buf: Vec<u8>,
    /// Send time (open loop: scheduled time) of each outstanding message, oldest first.
    sent: VecDeque<Instant>,
    /// Open loop: when the next message is due.
    next_due: Instant,
}

impl Driver {
    fn new(plan: &Plan, index: usize) -> Driver {
        let want = plan.pipeline * plan.frames.frame_len() + 512;
        let size = want.clamp(MIN_READ_BUF, MAX_READ_BUF);
        // Spread the connections' schedules evenly over one interval.
        let offset = plan
            .interval
            .map(|i| i.mul_f64(index as f64 / plan.connections as f64))
            .unwrap_or_default();
        Driver {
            buf: vec![0; size],
            sent: VecDeque::with_capacity(plan.pipeline),
            next_due: plan.window.start + offset,
        }
    }

    /// Queues what may be sent at `now`: up to the pipeline (closed loop), or the messages
    /// due by `now` (open loop). Returns how many.
    fn queue(&mut self, plan: &Plan, out: &mut Out, now: Instant) -> usize {
        let mut added = 0;
        match plan.interval {
            None => {
                while self.sent.len() < plan.pipeline {
                    self.sent.push_back(now);
                    added += 1;
                }
            }
            Some(interval) => {
                while self.sent.len() < plan.pipeline && self.next_due <= now {
                    self.sent.push_back(self.next_due);
                    self.next_due += interval;
                    added += 1;
                }
            }
        }
        out.queued += added;
        added
    }

    /// Runs one connection until the end of the run (`Ok`) or until it fails.
    async fn drive(
        &mut self,
        upgraded: Upgraded,
        plan: &Plan,
        counts: &mut Counts,
        samples: &mut Samples,
        shared: &Shared,
    ) -> Result<Ended, DriveError> {
        let Upgraded {
            mut stream,
            leftover,
        } = upgraded;
        let mut parser = EchoParser::new();
        self.sent.clear();
        if !leftover.is_empty() && parser.feed(&plan.expected, &leftover)? > 0 {
            return Err(ParseError::Unsolicited.into());
        }
        let now = Instant::now();
        // After a reconnect, an open-loop schedule resumes now rather than catching up.
        self.next_due = self.next_due.max(now);
        let mut out = Out::default();
        self.queue(plan, &mut out, now);
        let frame_len = plan.frames.frame_len();
        let end = plan.window.end;
        let deadline = tokio::time::sleep_until(end.into());
        tokio::pin!(deadline);
        let pacer = tokio::time::sleep_until(self.next_due.into());
        tokio::pin!(pacer);
        let mut pacer_at = self.next_due;

        poll_fn(|cx| loop {
            // Pongs go out between frames.
            if !parser.replies.is_empty() && out.partial == 0 {
                match Pin::new(&mut stream).poll_write(cx, &parser.replies) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                    Poll::Ready(Ok(n)) => {
                        parser.replies.drain(..n);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }
            if parser.replies.is_empty() {
                while out.queued > 0 {
                    let bytes = plan.frames.bytes(out.next, out.queued, out.partial);
                    match Pin::new(&mut stream).poll_write(cx, bytes) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                        Poll::Ready(Ok(n)) => out.advance(n, frame_len),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        Poll::Pending => break,
                    }
                }
            }
            let mut read = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(DriveError::Eof));
                    }
                    let now = Instant::now();
                    let echoes = parser.feed(&plan.expected, &self.buf[..n])?;
                    if echoes > 0 {
                        if echoes > self.sent.len() - out.queued {
                            return Poll::Ready(Err(ParseError::Unsolicited.into()));
                        }
                        let counting = plan.window.counts(now);
                        for sent in self.sent.drain(..echoes) {
                            if counting {
                                samples.record(sent, now);
                            }
                        }
                        if counting {
                            counts.messages += echoes as u64;
                            counts.bytes += echoes as u64 * plan.size;
                        }
                        shared.progress(echoes as u64);
                    }
                    if now >= end {
                        return Poll::Ready(Ok(()));
                    }
                    self.queue(plan, &mut out, now);
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            if plan.interval.is_some() && self.sent.len() < plan.pipeline {
                if self.queue(plan, &mut out, Instant::now()) > 0 {
                    continue;
                }
                if pacer_at != self.next_due {
                    pacer_at = self.next_due;
                    pacer.as_mut().reset(pacer_at.into());
                }
                if pacer.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            return Poll::Pending;
        })
        .await?;
        Ok(Ended {
            stream,
            parser,
            out,
        })
    }
}

fn write_zero() -> DriveError {
    DriveError::Io(std::io::Error::new(
        std::io::ErrorKind::WriteZero,
        "the connection accepts no more bytes",
    ))
}
