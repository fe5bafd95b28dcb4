//! The permessage-deflate payload transformation (RFC 7692 section 7.2).
//!
//! [`Compressor`] turns a message payload into the payload of a compressed message (RSV1 set
//! on its first frame); [`Decompressor`] turns the payloads of a compressed message's frames
//! back into the message.
//!
//! # Memory
//!
//! Both hold their zlib-rs state only while they need it: it is allocated on first use and,
//! when the negotiated parameters say that side starts every message afresh
//! (`*_no_context_takeover`), dropped again after each message. With context takeover the
//! state lives as long as the codec, because the next message may refer to this one.
//!
//! Measured with zlib-rs 0.6 (memLevel 8, which flate2 does not let us change), bytes held
//! while allocated:
//!
//! | window bits | [`Compressor`] | [`Decompressor`] |
//! |-------------|----------------|------------------|
//! | 9           | 251,008        | 47,552           |
//! | 12          | 265,344        | 47,552           |
//! | 15          | 380,032        | 47,552           |
//!
//! A compressor holds 248,960 bytes plus 4 per window byte (`2^bits`): a hash table of 64 Ki
//! entries (128 KiB) and 112 KiB of block buffers whatever the window, then the window twice
//! over and its chain links. zlib's own formula, `2^(bits+2) + 2^(memLevel+9)`, undercounts
//! zlib-rs, whose hash table does not shrink with memLevel. A decompressor holds 47,552 bytes
//! whatever the window: zlib-rs always allocates a 32 KiB window (and this crate decompresses
//! with a 15-bit window anyway) plus its state and decoding tables. `tests/deflate.rs` checks
//! these figures.
//!
//! Decompressing also needs the output buffer, which [`Decompressor::decompress`] never grows
//! past the caller's limit.
//!
//! Starting afresh costs the same whether the state is reset or freed and allocated again:
//! zlib-rs zeroes the 128 KiB hash table either way (about 5 to 10 microseconds per message
//! with no context takeover, measured), so freeing it between messages costs nothing extra.

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::params::{DeflateConfig, DeflateParams};
use crate::close::CloseCode;
use crate::role::Role;

/// The four bytes a sync flush ends with (an empty stored block), removed from the end of every
/// compressed message and appended again before decompressing (RFC 7692 section 7.2.1).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The payload of an empty compressed message or final fragment: an empty stored block's
/// header once [`TAIL`] is appended (RFC 7692 section 7.2.3.6).
const EMPTY_BLOCK: u8 = 0x00;

/// The most output the decompressor produces per inflate call.
pub const DECOMPRESS_STEP: usize = 32 * 1024;

/// How far one call of [`Decompressor::decompress_some`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All of the input is inflated (and, after a final frame, the message is complete).
    Done,
    /// The call's output budget ran out first: call again with `input[consumed..]` (which may
    /// be empty: the inflater can hold output that still has to come out) and the same
    /// `is_final_frame`.
    Paused {
        /// Input bytes inflated by this call.
        consumed: usize,
    },
}

/// The smallest buffer growth when decompressing, so that tiny messages do not allocate a
/// whole step.
const MIN_GROWTH: usize = 256;

/// Why compressing or decompressing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeflateError {
    /// The decompressed message would exceed the limit.
    #[error("decompressed message exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The peer's data is not a valid DEFLATE stream.
    #[error("invalid compressed data: {0}")]
    Corrupt(String),
    /// The compressor failed; not the peer's fault.
    #[error("compression failed: {0}")]
    Compress(String),
}

impl DeflateError {
    /// The close code to fail the connection with.
    ///
    /// * [`DeflateError::TooLarge`]: 1009 (message too big), like any oversized message.
    /// * [`DeflateError::Corrupt`]: 1007 (invalid payload data). RFC 7692 section 7.2.2 only
    ///   says the connection must be failed. The frames themselves were well-formed, and it is
    ///   their payload that cannot be read, the same kind of fault as invalid UTF-8 in a text
    ///   message; Node's `ws`, Jetty and others send 1007 here too. 1002 would blame the
    ///   framing, which was fine.
    /// * [`DeflateError::Compress`]: 1011 (internal error): our side failed.
    ///
    /// ```
    /// use fullduplex_proto::deflate::DeflateError;
    /// use fullduplex_proto::CloseCode;
    ///
    /// assert_eq!(DeflateError::TooLarge { limit: 10 }.close_code(), CloseCode::MESSAGE_TOO_BIG);
    /// assert_eq!(DeflateError::Corrupt(String::new()).close_code(), CloseCode::INVALID_PAYLOAD);
    /// ```
    pub fn close_code(&self) -> CloseCode {
        match self {
            DeflateError::TooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            DeflateError::Corrupt(_) => CloseCode::INVALID_PAYLOAD,
            DeflateError::Compress(_) => CloseCode::INTERNAL_ERROR,
        }
    }
}

/// Compresses outgoing messages for one connection.
///
/// ```
/// use bytes::BytesMut;
/// use fullduplex_proto::deflate::{Compressor, DeflateConfig, DeflateParams};
/// use fullduplex_proto::Role;
///
/// let mut compressor =
///     Compressor::new(&DeflateParams::default(), Role::Server, &DeflateConfig::default());
/// let mut out = BytesMut::new();
/// compressor.compress(b"Hello", &mut out)?;
/// assert_eq!(&out[..], [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]); // RFC 7692 7.2.3.1
/// # Ok::<(), fullduplex_proto::deflate::DeflateError>(())
/// ```
#[derive(Debug)]
pub struct Compressor {
    /// Allocated on first use; dropped after each message with no context takeover.
    state: Option<Compress>,
    level: u32,
    window_bits: u8,
    no_context_takeover: bool,
    threshold: usize,
}

impl Compressor {
    /// A compressor for `role`'s side of a connection with `params`, using the level and
    /// threshold of `config`. Allocates nothing until the first message.
    pub fn new(params: &DeflateParams, role: Role, config: &DeflateConfig) -> Self {
        Self {
            state: None,
            level: config.compression_level.min(9),
            window_bits: params.compressor_window_bits(role),
            no_context_takeover: params.compressor_no_context_takeover(role),
            threshold: config.threshold,
        }
    }

    /// The LZ77 window size in use, 9..=15.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Whether the compressor starts every message afresh.
    pub fn no_context_takeover(&self) -> bool {
        self.no_context_takeover
    }

    /// Messages with fewer payload bytes than this should be sent uncompressed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Whether a message of `payload_len` bytes should be compressed (it reaches the
    /// threshold).
    pub fn should_compress(&self, payload_len: usize) -> bool {
        payload_len >= self.threshold
    }

    /// Whether the zlib state is currently allocated.
    pub fn is_allocated(&self) -> bool {
        self.state.is_some()
    }

    /// Appends to `out` the payload of a compressed message carrying `payload` (RFC 7692
    /// section 7.2.1): the data compressed and sync-flushed, with the final `00 00 ff ff`
    /// removed. An empty message becomes the single byte `00`.
    ///
    /// Send it with RSV1 set on the first frame; it may be split into frames anywhere.
    pub fn compress(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), DeflateError> {
        self.compress_fragment(payload, true, out)
    }

    /// Appends to `out` the compressed form of one part of a message that is sent as it is
    /// produced; `is_final` marks the last part. Each part's output is complete on its own
    /// (sync-flushed), so it can go out as a frame right away. Non-final parts keep their
    /// `00 00 ff ff` (an empty part may produce nothing: send an empty frame); the final part
    /// loses it, and is the byte `00` when it would otherwise be empty (RFC 7692 section
    /// 7.2.3.6).
    pub fn compress_fragment(
        &mut self,
        payload: &[u8],
        is_final: bool,
        out: &mut BytesMut,
    ) -> Result<(), DeflateError> {
        let start = out.len();
        let result = self.deflate_into(payload, out);
        if let Err(error) = result {
            // A failed stream cannot continue; drop it so the next use starts clean.
            out.truncate(start);
            self.state = None;
            return Err(error);
        }
        if is_final {
            if out[start..].ends_with(&TAIL) {
                out.truncate(out.len() - TAIL.len());
            }
            if out.len() == start {
                // Either the whole message was empty or the previous part already flushed
                // everything: an empty final payload would leave the peer inside a stored
                // block header, so send one empty block's first byte.
                out.extend_from_slice(&[EMPTY_BLOCK]);
            }
            self.end_message();
        }
        Ok(())
    }

    /// Resets or frees the state after a message, as the parameters require.
    fn end_message(&mut self) {
        if self.no_context_takeover {
            self.state = None;
        }
    }

    /// Compresses `input` with a sync flush, appending everything to `out`.
    fn deflate_into(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), DeflateError> {
        let (level, window_bits) = (self.level, self.window_bits);
        let state = self.state.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(level), false, window_bits)
        });
        // A first guess at the output size; the loop grows the buffer as needed.
        out.reserve(input.len() / 4 + 64);
        let mut consumed = 0;
        loop {
            let left = input.len() - consumed;
            if out.capacity() - out.len() < 64 {
                out.reserve(left / 2 + 64);
            }
            let len = out.len();
            // Offer the spare capacity, but do not zero-fill a huge caller buffer for a small
            // message: the loop comes back for more when the output fills up.
            let room = (out.capacity() - len).min(left.saturating_add(1024));
            out.resize(len + room, 0);
            let before_in = state.total_in();
            let before_out = state.total_out();
            let status = state
                .compress(&input[consumed..], &mut out[len..], FlushCompress::Sync)
                .map_err(|e| DeflateError::Compress(e.to_string()))?;
            let read = delta(before_in, state.total_in());
            let written = delta(before_out, state.total_out());
            consumed += read;
            out.truncate(len + written);
            let done = consumed == input.len() && written < room;
            if done || (status == Status::BufError && read == 0 && written == 0) {
                return Ok(());
            }
        }
    }
}

/// Decompresses incoming compressed messages for one connection.
///
/// ```
/// use bytes::BytesMut;
/// use fullduplex_proto::deflate::{DeflateParams, Decompressor};
/// use fullduplex_proto::Role;
///
/// let mut decompressor = Decompressor::new(&DeflateParams::default(), Role::Client);
/// let mut out = BytesMut::new();
/// // RFC 7692 section 7.2.3.1, sent as two frames.
/// decompressor.decompress(&[0xf2, 0x48, 0xcd], false, &mut out, 1024)?;
/// decompressor.decompress(&[0xc9, 0xc9, 0x07, 0x00], true, &mut out, 1024)?;
/// assert_eq!(&out[..], b"Hello");
/// # Ok::<(), fullduplex_proto::deflate::DeflateError>(())
/// ```
#[derive(Debug)]
pub struct Decompressor {
    /// Allocated on first use; dropped after each message when the peer uses no context
    /// takeover.
    state: Option<Decompress>,
    window_bits: u8,
    no_context_takeover: bool,
    /// Compressed bytes received so far for the message in progress.
    message_in: u64,
    /// A DEFLATE stream ended (BFINAL) and nothing of the message has been read since.
    stream_ended: bool,
    /// The last call paused on its output budget: the next one resumes that input.
    paused: bool,
}

impl Decompressor {
    /// A decompressor for `role`'s side of a connection with `params`. Allocates nothing
    /// until the first message.
    pub fn new(params: &DeflateParams, role: Role) -> Self {
        Self {
            state: None,
            window_bits: params.decompressor_window_bits(role),
            no_context_takeover: params.decompressor_no_context_takeover(role),
            message_in: 0,
            stream_ended: false,
            paused: false,
        }
    }

    /// Whether the state is reset after every message (the peer uses no context takeover).
    pub fn no_context_takeover(&self) -> bool {
        self.no_context_takeover
    }

    /// Whether the zlib state is currently allocated.
    pub fn is_allocated(&self) -> bool {
        self.state.is_some()
    }

    /// Inflates one frame's payload of a compressed message and appends the result to `out`;
    /// `is_final_frame` is the frame's FIN bit, after which the `00 00 ff ff` tail is
    /// inflated too and the message is complete (RFC 7692 section 7.2.2).
    ///
    /// `max_output` bounds `out.len()` (including what it held before the call, so a message
    /// assembled across frames in one buffer is bounded as a whole): inflating goes in steps
    /// of at most [`DECOMPRESS_STEP`] bytes and stops with [`DeflateError::TooLarge`] as soon
    /// as the bound would be crossed. The buffer grows to at most `max_output` bytes of
    /// capacity (unless it was larger already), however much the input would inflate to. It
    /// grows by doubling, with `realloc`.
    ///
    /// A DEFLATE block with BFINAL set ends the DEFLATE stream; the data after it, if any, is
    /// read as a new stream (RFC 7692 section 7.2.3.4), which cannot refer to earlier data.
    /// A message without any payload at all is read as an empty message.
    ///
    /// This inflates all of `input` in one call; [`decompress_some`](Self::decompress_some)
    /// does it in slices of bounded work.
    ///
    /// # Errors
    ///
    /// [`DeflateError::TooLarge`] past `max_output`, [`DeflateError::Corrupt`] for data that
    /// is not DEFLATE. After an error the connection must be failed; the state is dropped, so
    /// the decompressor starts afresh if it is used anyway.
    pub fn decompress(
        &mut self,
        input: &[u8],
        is_final_frame: bool,
        out: &mut BytesMut,
        max_output: usize,
    ) -> Result<(), DeflateError> {
        match self.decompress_some(input, is_final_frame, out, max_output, usize::MAX)? {
            Progress::Done => Ok(()),
            // An unbounded budget never pauses; should it, finish rather than lose data.
            Progress::Paused { consumed } => {
                self.decompress(&input[consumed..], is_final_frame, out, max_output)
            }
        }
    }

    /// [`decompress`](Self::decompress), producing at most `budget` bytes of output per call
    /// (at least one byte is produced or the call is done): a sans-I/O way to bound the CPU
    /// one call spends, whatever the input inflates to. [`Progress::Paused`] says the budget
    /// ran out: call again with the rest of the input (`input[consumed..]`, possibly empty)
    /// and the same `is_final_frame`, after letting other work run.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use fullduplex_proto::deflate::{Compressor, DeflateConfig, DeflateParams, Decompressor, Progress};
    /// use fullduplex_proto::Role;
    ///
    /// let params = DeflateParams::default();
    /// let mut compressed = BytesMut::new();
    /// Compressor::new(&params, Role::Client, &DeflateConfig::default())
    ///     .compress(&vec![0u8; 100_000], &mut compressed)?;
    /// let mut decompressor = Decompressor::new(&params, Role::Server);
    /// let (mut out, mut input, mut calls) = (BytesMut::new(), &compressed[..], 0);
    /// while let Progress::Paused { consumed } =
    ///     decompressor.decompress_some(input, true, &mut out, 1 << 20, 16 << 10)?
    /// {
    ///     input = &input[consumed..];
    ///     calls += 1;
    /// }
    /// assert_eq!(out.len(), 100_000);
    /// assert_eq!(calls, 100_000 / (16 << 10)); // 16 KiB of output per call
    /// # Ok::<(), fullduplex_proto::deflate::DeflateError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`decompress`](Self::decompress).
    pub fn decompress_some(
        &mut self,
        input: &[u8],
        is_final_frame: bool,
        out: &mut BytesMut,
        max_output: usize,
        budget: usize,
    ) -> Result<Progress, DeflateError> {
        let result = self.decompress_inner(input, is_final_frame, out, max_output, budget);
        if result.is_err() {
            self.state = None;
            self.message_in = 0;
            self.stream_ended = false;
            self.paused = false;
        }
        result
    }

    /// True when the last [`decompress_some`](Self::decompress_some) paused on its budget.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn decompress_inner(
        &mut self,
        input: &[u8],
        is_final_frame: bool,
        out: &mut BytesMut,
        max_output: usize,
        budget: usize,
    ) -> Result<Progress, DeflateError> {
        if !self.paused {
            // A resumed call passes the rest of input already counted.
            self.message_in += input.len() as u64;
        }
        if !input.is_empty() || self.paused {
            self.paused = false;
            let stop_at = out.len().saturating_add(budget.max(1));
            if let Some(consumed) = self.inflate(input, false, out, max_output, stop_at)? {
                self.paused = true;
                return Ok(Progress::Paused { consumed });
            }
        }
        if is_final_frame {
            // A message with no payload at all carries no DEFLATE data, and a message whose
            // data ended with a BFINAL block has a complete stream: feeding the tail alone
            // would leave the inflater inside a stored block header. The tail is an empty
            // stored block: it inflates to nothing, so it needs no budget.
            if self.message_in > 0 && !self.stream_ended {
                self.inflate(&TAIL, true, out, max_output, usize::MAX)?;
            }
            self.message_in = 0;
            self.stream_ended = false;
            if self.no_context_takeover {
                self.state = None;
            }
        }
        Ok(Progress::Done)
    }

    /// Inflates all of `input` into `out`, bounded by `max_output`. `is_tail` says `input` is
    /// the appended [`TAIL`]: a DEFLATE stream that ends inside it needs none of the rest.
    /// Pauses once `out` reaches `stop_at` bytes with work left: `Ok(Some(consumed))`.
    fn inflate(
        &mut self,
        input: &[u8],
        is_tail: bool,
        out: &mut BytesMut,
        max_output: usize,
        stop_at: usize,
    ) -> Result<Option<usize>, DeflateError> {
        let window_bits = self.window_bits;
        let state = self
            .state
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, window_bits));
        let mut consumed = 0;
        loop {
            let len = out.len();
            if len > max_output {
                return Err(DeflateError::TooLarge { limit: max_output });
            }
            if len >= stop_at {
                return Ok(Some(consumed));
            }
            let before_in = state.total_in();
            let before_out = state.total_out();
            let (chunk, result) = if len == max_output {
                // The buffer is full: inflate into a scratch byte to learn whether more output
                // follows (TooLarge) or only the end of a block.
                let mut probe = [0u8; 1];
                let result =
                    state.decompress(&input[consumed..], &mut probe, FlushDecompress::None);
                (1, result)
            } else {
                let chunk = grow(out, input.len() - consumed, max_output).min(stop_at - len);
                out.resize(len + chunk, 0);
                let result =
                    state.decompress(&input[consumed..], &mut out[len..], FlushDecompress::None);
                (chunk, result)
            };
            let read = delta(before_in, state.total_in());
            let written = delta(before_out, state.total_out());
            if len == max_output && written > 0 {
                return Err(DeflateError::TooLarge { limit: max_output });
            }
            out.truncate(len + written);
            consumed += read;
            if read > 0 {
                self.stream_ended = false;
            }
            let status = result.map_err(|e| DeflateError::Corrupt(e.to_string()))?;
            if status == Status::StreamEnd {
                // BFINAL: the stream is over; whatever follows starts a new one.
                state.reset(false);
                self.stream_ended = true;
                if is_tail || consumed == input.len() {
                    return Ok(None);
                }
                continue;
            }
            if read == 0 && written == 0 {
                if consumed == input.len() {
                    return Ok(None);
                }
                // No progress with input left and room to write: a sound inflater does not
                // do this; refuse rather than spin.
                return Err(DeflateError::Corrupt("inflate made no progress".into()));
            }
            if consumed == input.len() && written < chunk {
                return Ok(None);
            }
        }
    }
}

/// Makes room in `out` for the next inflate call and returns how many bytes to offer it:
/// at most [`DECOMPRESS_STEP`], at least 1, never past `cap` bytes in total (the caller
/// ensures `out.len() < cap`). Growth doubles the buffer but never beyond `cap`.
fn grow(out: &mut BytesMut, input_left: usize, cap: usize) -> usize {
    let len = out.len();
    let room = cap.saturating_sub(len).max(1);
    let spare = out.capacity() - len;
    if spare > 0 {
        return spare.min(room).min(DECOMPRESS_STEP);
    }
    // Guess from the input (text often inflates 3-4x), within [MIN_GROWTH, STEP].
    let want = input_left
        .saturating_mul(4)
        .clamp(MIN_GROWTH, DECOMPRESS_STEP)
        .min(room);
    let target = len
        .saturating_add(want)
        .max(out.capacity().saturating_mul(2).min(cap));
    // `BytesMut::reserve` may round up to double the current capacity, which could overshoot
    // the limit; a `Vec` (the same allocation, no copy) can be grown to exactly `target`, and
    // `realloc` lets the allocator grow in place or remap rather than copy.
    let mut vec = Vec::from(std::mem::take(out));
    vec.reserve_exact(target - len);
    *out = BytesMut::from(Bytes::from(vec));
    want
}

/// The difference of two zlib byte counters, which only grow.
fn delta(before: u64, after: u64) -> usize {
    usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
}
