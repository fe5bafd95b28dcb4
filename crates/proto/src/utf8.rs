//! Incremental UTF-8 validation (RFC 6455 section 8.1).
//!
//! A text message may arrive in many fragments, and a fragment in many reads; a code point may
//! be cut anywhere. [`Utf8Validator`] is fed the pieces in order and fails as soon as the bytes
//! seen so far can no longer begin a valid UTF-8 string: `ED A0` fails at once (a surrogate),
//! without waiting for the end of the frame or message. Complete runs are checked with
//! `simdutf8`; only the at most three bytes of a code point cut by a piece boundary are kept.
//!
//! [`Utf8Bytes`] carries text that was validated once, without copying it.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use thiserror::Error;

/// The bytes are not, and cannot become, valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("invalid UTF-8")]
pub struct Utf8Error;

/// Pieces shorter than this are first checked for ASCII (see [`Utf8Validator::feed`]).
const SHORT_ASCII: usize = 256;

/// Validates UTF-8 fed in pieces. Allocates nothing.
///
/// ```
/// use fullduplex_proto::utf8::Utf8Validator;
/// let mut v = Utf8Validator::new();
/// let euro = "€".as_bytes(); // E2 82 AC
/// assert!(v.feed(&euro[..1]).is_ok());
/// assert!(v.feed(&euro[1..]).is_ok());
/// assert!(v.finish().is_ok());
///
/// let mut v = Utf8Validator::new();
/// assert!(v.feed(&[0xce, 0xba, 0xe1, 0xbd]).is_ok()); // "κ" then the start of "ό"
/// assert!(v.feed(&[0xed, 0xa0]).is_err()); // ... but 0xED cannot continue it
/// ```
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a string.
    pub fn new() -> Utf8Validator {
        Utf8Validator::default()
    }

    /// Feeds the next piece. Fails if the input so far cannot be the prefix of valid UTF-8.
    #[inline]
    pub fn feed(&mut self, input: &[u8]) -> Result<(), Utf8Error> {
        // Short ASCII pieces at a code point boundary (most chat and JSON messages): one
        // word-at-a-time scan is cheaper than the validator, whose SIMD path starts at 64
        // bytes.
        if self.pending_len == 0 && input.len() < SHORT_ASCII && input.is_ascii() {
            return Ok(());
        }
        self.feed_any(input)
    }

    /// [`feed`](Self::feed) for any piece: the cut code point first, then `simdutf8`.
    fn feed_any(&mut self, mut input: &[u8]) -> Result<(), Utf8Error> {
        if self.pending_len > 0 {
            let need = sequence_len(self.pending[0]);
            while (self.pending_len as usize) < need {
                let Some((&byte, rest)) = input.split_first() else {
                    break;
                };
                self.pending[self.pending_len as usize] = byte;
                self.pending_len += 1;
                input = rest;
            }
            match std::str::from_utf8(&self.pending[..self.pending_len as usize]) {
                Ok(_) => self.pending_len = 0,
                // A valid but incomplete prefix: `input` is used up.
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(Utf8Error),
            }
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let rest = &input[e.valid_up_to()..];
                self.pending[..rest.len()].copy_from_slice(rest);
                self.pending_len = rest.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// True when no code point is cut open.
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Ends the string: fails if it stops inside a code point. Resets the validator.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.is_complete();
        self.pending_len = 0;
        if complete {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }
}

/// Validates a complete string in one go and returns it as `&str` (borrowed messages).
#[inline]
pub fn validate_str(input: &[u8]) -> Result<&str, Utf8Error> {
    if input.len() < SHORT_ASCII && input.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8, checked just above. `std::str::from_utf8`
        // would check them again at about 100 instructions more per 16-byte message (callgrind,
        // BENCHMARKS.md), a tenth of a borrowed echo's cost.
        return Ok(unsafe { std::str::from_utf8_unchecked(input) });
    }
    simdutf8::basic::from_utf8(input).map_err(|_| Utf8Error)
}

/// Validates a complete string in one go (the fast path for single-frame text messages).
#[inline]
pub fn validate(input: &[u8]) -> Result<(), Utf8Error> {
    if input.len() < SHORT_ASCII && input.is_ascii() {
        return Ok(());
    }
    simdutf8::basic::from_utf8(input)
        .map(|_| ())
        .map_err(|_| Utf8Error)
}

/// The length of the sequence a lead byte starts. Only called on bytes that began a valid
/// incomplete prefix, so they are lead bytes of 2, 3 or 4 byte sequences.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Immutable bytes that are known to be valid UTF-8: a cheap-to-clone `&str`.
///
/// Received text messages are slices of the receive buffer (joined from pieces when a frame is
/// longer than [`LARGE_FRAME`](crate::connection::LARGE_FRAME)), validated once while they arrived;
/// [`Utf8Bytes::as_str`] does not validate them again.
///
/// ```
/// use fullduplex_proto::Utf8Bytes;
/// let text = Utf8Bytes::from("héllo");
/// assert_eq!(text.as_str(), "héllo");
/// assert_eq!(&*text, "héllo"); // Deref<Target = str>
/// assert!(Utf8Bytes::try_from(bytes::Bytes::from_static(&[0xff])).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// A text from a static string, without copying.
    pub const fn from_static(text: &'static str) -> Utf8Bytes {
        Utf8Bytes(Bytes::from_static(text.as_bytes()))
    }

    /// Wraps bytes the caller has already validated (the core validates while receiving).
    pub(crate) fn from_validated(bytes: Bytes) -> Utf8Bytes {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Utf8Bytes(bytes)
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor validates the bytes (`TryFrom<Bytes>`, `From<String>`,
        // `From<&str>`) or receives bytes the core validated incrementally while they arrived
        // (`from_validated`, checked by a debug assertion and by the pair and fuzz tests), and
        // `Bytes` is immutable. Skipping the second validation is what the issue asks for: a
        // received text message exposes `&str` without validating twice.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes (cheap: a reference count).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the UTF-8 guarantee and returns the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Utf8Error;
    fn try_from(bytes: Bytes) -> Result<Utf8Bytes, Utf8Error> {
        validate(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl TryFrom<Vec<u8>> for Utf8Bytes {
    type Error = Utf8Error;
    fn try_from(bytes: Vec<u8>) -> Result<Utf8Bytes, Utf8Error> {
        Utf8Bytes::try_from(Bytes::from(bytes))
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Utf8Bytes {
        Utf8Bytes(Bytes::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Utf8Bytes {
        Utf8Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(text: &String) -> Utf8Bytes {
        Utf8Bytes::from(text.as_str())
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Bytes {
        text.0
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: a prefix is acceptable when std says it is valid or only incomplete.
    fn std_prefix_ok(bytes: &[u8]) -> bool {
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none(),
        }
    }

    fn feed_split(bytes: &[u8], split: usize) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        v.feed(&bytes[..split])?;
        v.feed(&bytes[split..])
    }

    #[test]
    fn agrees_with_std_on_all_short_sequences_at_every_split() {
        // Every 1-3 byte sequence over a set of interesting bytes, then some tails.
        let interesting: Vec<u8> = vec![
            0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0,
            0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff,
        ];
        let mut cases = Vec::new();
        for &a in &interesting {
            for &b in &interesting {
                for &c in &interesting {
                    cases.push(vec![a, b, c]);
                    cases.push(vec![a, b, c, 0x80]);
                    cases.push(vec![a, b]);
                }
            }
        }
        for bytes in cases {
            let expected = std_prefix_ok(&bytes);
            for split in 0..=bytes.len() {
                assert_eq!(
                    feed_split(&bytes, split).is_ok(),
                    expected,
                    "{bytes:x?} at {split}"
                );
            }
        }
    }

    #[test]
    fn fails_fast_inside_a_frame() {
        // Autobahn 6.4.x: the bad byte must be caught before the rest arrives.
        let mut v = Utf8Validator::new();
        assert!(v.feed("κόσμε".as_bytes()).is_ok());
        assert!(v.feed(&[0xf4, 0x90]).is_err());
    }

    #[test]
    fn byte_by_byte() {
        let text = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞 €";
        let mut v = Utf8Validator::new();
        for b in text.as_bytes() {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn finish_rejects_cut_code_point() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xe2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(Utf8Error));
        // reset after finish
        assert!(v.feed(b"ok").is_ok());
        assert!(v.finish().is_ok());
    }
}
