//! Protocol limits and behaviour switches.

use std::num::NonZeroU32;

use crate::deflate::DeflateConfig;

/// How the core delivers data messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiveMode {
    /// Reassemble fragmented messages and deliver each whole ([`crate::Event::Message`]).
    #[default]
    Messages,
    /// Deliver every data frame as it completes ([`crate::Event::Fragment`]), so a large
    /// message can be processed piece by piece without holding all of it. The message size
    /// limit still applies to the sum of the fragments, and text is still validated across them.
    Fragments,
    /// Deliver data as it arrives, without waiting for frames to complete
    /// ([`crate::Event::Fragment`]): every read that brings payload bytes of a data message
    /// yields them at once (unmasked, and inflated when compressed), so a large message can be
    /// relayed or written to disk while it is still arriving, and the connection never holds
    /// more of it than one read (of a compressed message: what one read inflates to). Limits and UTF-8 validation apply as in the other modes; a
    /// text piece may end inside a code point. Whole frames already in the buffer are
    /// delivered as one piece.
    Streaming,
}

/// Limits and switches of a [`crate::Connection`]. Every size a peer controls is bounded here.
///
/// ```
/// use fullduplex_proto::Config;
/// let config = Config::default().max_message_size(16 << 20).auto_pong(false);
/// assert_eq!(config.max_message_size, 16 << 20);
/// assert_eq!(Config::default().max_message_size, 1 << 20);
/// assert_eq!(Config::default().max_frame_size, 16 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted, in bytes. Default 16 MiB. A larger announced length fails
    /// the connection with 1009 before any of it is buffered. A data frame is also bounded by
    /// [`max_message_size`](Config::max_message_size), so with the defaults the effective
    /// frame limit is 1 MiB; this one matters once the message limit is raised above it (a
    /// relay in [`ReceiveMode::Fragments`] that takes large messages frame by frame, say).
    pub max_frame_size: usize,
    /// Largest message accepted, in bytes. Default 1 MiB, the default of Python `websockets`
    /// (`max_size`); raise it for applications that exchange larger messages.
    ///
    /// It bounds the message as delivered: the sum of its fragments and, for a compressed
    /// message (permessage-deflate), its **inflated** size. An announced frame that would
    /// cross it fails the connection with 1009 before any of it is buffered; a compressed
    /// message fails with 1009 as soon as inflating crosses it, so a peer can make us inflate
    /// at most this many bytes per message, whatever the compression ratio (a 64 KB frame of
    /// zeros inflates to 64 MiB). Inflating also goes in slices of
    /// [`INFLATE_SLICE`](crate::connection::INFLATE_SLICE) per call, between which the shell
    /// lets other work run.
    ///
    /// Why 1 MiB and not more: with the former 64 MiB default one such frame cost 35-65 ms of
    /// CPU before the 1009 (RELIABILITY.md); at 1 MiB it costs about 1/64 of that. Servers
    /// with small messages should go lower (the push server uses 64 KiB).
    pub max_message_size: usize,
    /// Largest HTTP head (request or response line plus headers) the shells accept during the
    /// opening handshake, in bytes. Default 16 KiB; a server answers a larger one with 431.
    pub max_handshake_size: usize,
    /// Answer every ping with a pong carrying the same payload. Default true. The ping is
    /// delivered to the application either way.
    pub auto_pong: bool,
    /// Whole messages or fragments. Default [`ReceiveMode::Messages`].
    pub receive_mode: ReceiveMode,
    /// permessage-deflate (RFC 7692): what a client offers and a server accepts. Default: on,
    /// with [`DeflateConfig::default`]; `None` turns compression off. The shells negotiate it
    /// during the handshake and call [`crate::Connection::enable_deflate`].
    pub deflate: Option<DeflateConfig>,
    /// Seed of a client's masking-key generator. Default `None`: seeded from the operating
    /// system, as RFC 6455 section 5.3 asks (keys a peer cannot predict). `Some(seed)` makes
    /// the keys, and so every byte a client sends, the same on every run: for tests and
    /// fuzzing only. Servers do not mask and ignore it. (32 bits, non-zero: it fits in the
    /// padding of a `Config`, which every connection holds.)
    pub mask_seed: Option<NonZeroU32>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 1 << 20,
            max_handshake_size: 16 << 10,
            auto_pong: true,
            receive_mode: ReceiveMode::Messages,
            deflate: Some(DeflateConfig::default()),
            mask_seed: None,
        }
    }
}

impl Config {
    /// Sets [`Config::max_frame_size`].
    pub fn max_frame_size(mut self, bytes: usize) -> Config {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Config::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Config {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Config::max_handshake_size`].
    pub fn max_handshake_size(mut self, bytes: usize) -> Config {
        self.max_handshake_size = bytes;
        self
    }

    /// Sets [`Config::auto_pong`].
    pub fn auto_pong(mut self, on: bool) -> Config {
        self.auto_pong = on;
        self
    }

    /// Sets [`Config::deflate`] (`None`: no compression).
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Config {
        self.deflate = deflate;
        self
    }

    /// Sets [`Config::mask_seed`] (`Some` only in tests: predictable masking keys).
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use fullduplex_proto::Config;
    /// let config = Config::default().mask_seed(NonZeroU32::new(42));
    /// assert_eq!(config.mask_seed.map(NonZeroU32::get), Some(42));
    /// ```
    pub fn mask_seed(mut self, seed: Option<NonZeroU32>) -> Config {
        self.mask_seed = seed;
        self
    }

    /// Sets [`Config::receive_mode`].
    pub fn receive_mode(mut self, mode: ReceiveMode) -> Config {
        self.receive_mode = mode;
        self
    }
}
