//! Negotiation of permessage-deflate parameters (RFC 7692 section 7.1).
//!
//! Four parameters exist. Two are flags and two carry a window size (the base-2 logarithm of
//! the LZ77 sliding window, 8 to 15):
//!
//! | parameter                    | limits                      | offer            | answer      |
//! |------------------------------|-----------------------------|------------------|-------------|
//! | `server_no_context_takeover` | the server's compressor     | flag             | flag        |
//! | `client_no_context_takeover` | the client's compressor     | flag             | flag        |
//! | `server_max_window_bits`     | the server's compressor     | `8..=15`         | `8..=15`    |
//! | `client_max_window_bits`     | the client's compressor     | bare or `8..=15` | `8..=15`    |
//!
//! A compressor may always use a smaller window than it is allowed, and a decompressor may
//! always use a larger one. This crate's decompressor always uses a 15-bit window, so it reads
//! whatever the peer's compressor was allowed to produce.
//!
//! # 8-bit windows
//!
//! zlib (and zlib-rs, which this crate uses) cannot compress with an 8-bit window in raw
//! deflate mode: it silently uses 9 bits, which can produce back-references a peer with an
//! 8-bit window cannot resolve. So this crate never lets its *own* compressor be limited to 8
//! bits: a server declines an offer with `server_max_window_bits=8`, and a client fails the
//! handshake when the server answers `client_max_window_bits=8`. A *peer's* compressor limited
//! to 8 bits is always fine.

use crate::extension::{ExtensionOffer, ExtensionParam};
use crate::role::Role;

/// The extension token, `permessage-deflate`.
pub const EXTENSION_NAME: &str = "permessage-deflate";

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// The smallest window size RFC 7692 allows on the wire.
pub const MIN_WINDOW_BITS: u8 = 8;
/// The largest (and default) window size.
pub const MAX_WINDOW_BITS: u8 = 15;
/// The smallest window this crate's compressor can honour (see the module docs on 8-bit
/// windows).
pub const MIN_COMPRESSOR_WINDOW_BITS: u8 = 9;

/// What this endpoint wants from permessage-deflate, in either role.
///
/// The window sizes are upper bounds. Where a value limits this endpoint's own compressor
/// (`server_max_window_bits` for a server, `client_max_window_bits` for a client) it is raised
/// to at least 9 (see the module docs on 8-bit windows); where it limits the peer's compressor
/// it may be 8.
///
/// The default enables compression with 15-bit windows, context takeover in both directions,
/// level 6 and a threshold of 64 bytes.
///
/// ```
/// use fullduplex_proto::deflate::DeflateConfig;
///
/// let config = DeflateConfig::default()
///     .with_server_no_context_takeover(true)
///     .with_client_max_window_bits(12)
///     .with_compression_level(1);
/// assert_eq!(config.client_max_window_bits, Some(12));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// The server resets its compressor after every message.
    ///
    /// As a client: ask for it in the offer. As a server: always answer with it.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    ///
    /// As a client: announce it in the offer (and do it). As a server: always answer with it.
    pub client_no_context_takeover: bool,
    /// The largest window the server's compressor may use; `None` is 15 (not requested).
    ///
    /// As a client: offered as `server_max_window_bits=N`, and an answer with a larger window
    /// (or none) fails the handshake. As a server: the largest window our compressor uses,
    /// answered even when the client did not ask for a limit.
    pub server_max_window_bits: Option<u8>,
    /// The largest window the client's compressor may use; `None` is 15.
    ///
    /// As a client: our compressor's window, offered as a hint (`client_max_window_bits=N`;
    /// without a value when `None`). As a server: answered as `client_max_window_bits=N` when
    /// the client offered the parameter (an offer without it is still accepted: our
    /// decompressor reads any window).
    pub client_max_window_bits: Option<u8>,
    /// The zlib compression level, 0 (store only) to 9 (smallest output); larger values act
    /// as 9.
    pub compression_level: u32,
    /// Messages with fewer payload bytes than this are sent uncompressed.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    /// Compression on, 15-bit windows, context takeover both ways, level 6, threshold 64.
    ///
    /// Level 6 is zlib's default and what Python `websockets` and Node's `ws` use, so ratios
    /// match what peers and users expect. Measured with zlib-rs: on English-like text it
    /// sends 36-42% of the bytes where level 1 sends 58% (level 1 uses fixed Huffman codes
    /// only), while on small repetitive JSON with context takeover level 1 comes within 20%
    /// of it at about a tenth of the CPU (0.4 against 4.5 microseconds for a 120-byte
    /// message). Servers that compress one message for many subscribers may prefer level 1.
    ///
    /// The threshold of 64 bytes is where a fresh context stops growing the message: 2, 10
    /// and 32 bytes compress to 4, 12 and 34 bytes, 64 to 64 and 122 to 102. With context
    /// takeover even shorter messages shrink, but by a few bytes only.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
            compression_level: 6,
            threshold: 64,
        }
    }
}

impl DeflateConfig {
    /// This config with `server_no_context_takeover` set to `value`.
    pub fn with_server_no_context_takeover(mut self, value: bool) -> Self {
        self.server_no_context_takeover = value;
        self
    }

    /// This config with `client_no_context_takeover` set to `value`.
    pub fn with_client_no_context_takeover(mut self, value: bool) -> Self {
        self.client_no_context_takeover = value;
        self
    }

    /// This config with `server_max_window_bits` set to `bits`, clamped to 8..=15.
    pub fn with_server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = Some(bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS));
        self
    }

    /// This config with `client_max_window_bits` set to `bits`, clamped to 8..=15.
    pub fn with_client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = Some(bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS));
        self
    }

    /// This config with the compression level set to `level`, clamped to 0..=9.
    pub fn with_compression_level(mut self, level: u32) -> Self {
        self.compression_level = level.min(9);
        self
    }

    /// This config with the threshold set to `bytes`.
    pub fn with_threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// The window limit for our own compressor in `role`: 9..=15.
    fn own_compressor_bits(&self, role: Role) -> u8 {
        let bits = match role {
            Role::Client => self.client_max_window_bits,
            Role::Server => self.server_max_window_bits,
        };
        bits.unwrap_or(MAX_WINDOW_BITS)
            .clamp(MIN_COMPRESSOR_WINDOW_BITS, MAX_WINDOW_BITS)
    }

    /// The window limit we ask of the peer's compressor in `role`, if any: 8..=15.
    fn peer_compressor_bits(&self, role: Role) -> Option<u8> {
        let bits = match role {
            Role::Client => self.server_max_window_bits,
            Role::Server => self.client_max_window_bits,
        };
        bits.map(|b| b.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS))
    }
}

/// The negotiated permessage-deflate parameters, resolved to concrete values.
///
/// The window sizes are the upper bounds each side's compressor must respect (15 when the
/// parameter was not negotiated). Build it with [`client_accept`] or [`server_negotiate`];
/// [`DeflateParams::default`] is what an answer without parameters means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor (and the client its decompressor) after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor (and the server its decompressor) after each message.
    pub client_no_context_takeover: bool,
    /// The window bound of the server's compressor, 8..=15.
    pub server_max_window_bits: u8,
    /// The window bound of the client's compressor, 8..=15.
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    /// Context takeover both ways, 15-bit windows.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

impl DeflateParams {
    /// The window size our compressor uses in `role`, 9..=15.
    ///
    /// Negotiation never limits our own compressor to 8 bits; a hand-built value of 8 (or
    /// anything outside 9..=15) is clamped.
    pub fn compressor_window_bits(&self, role: Role) -> u8 {
        let bits = match role {
            Role::Client => self.client_max_window_bits,
            Role::Server => self.server_max_window_bits,
        };
        bits.clamp(MIN_COMPRESSOR_WINDOW_BITS, MAX_WINDOW_BITS)
    }

    /// The window size our decompressor uses: always 15, which reads any peer window.
    pub fn decompressor_window_bits(&self, _role: Role) -> u8 {
        MAX_WINDOW_BITS
    }

    /// Whether our compressor resets after every message in `role`.
    pub fn compressor_no_context_takeover(&self, role: Role) -> bool {
        match role {
            Role::Client => self.client_no_context_takeover,
            Role::Server => self.server_no_context_takeover,
        }
    }

    /// Whether the peer's compressor resets after every message, so that our decompressor
    /// may too.
    pub fn decompressor_no_context_takeover(&self, role: Role) -> bool {
        match role {
            Role::Client => self.server_no_context_takeover,
            Role::Server => self.client_no_context_takeover,
        }
    }
}

/// Why a client rejects the server's permessage-deflate answer. RFC 7692 section 7.1 says the
/// client must then _Fail the WebSocket Connection_.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeflateNegotiationError {
    /// The answer names another extension.
    #[error("extension {0:?} is not permessage-deflate")]
    WrongExtension(String),
    /// A parameter that RFC 7692 does not define for a response.
    #[error("unknown permessage-deflate parameter {0:?}")]
    UnknownParameter(String),
    /// A parameter that appears more than once.
    #[error("duplicate permessage-deflate parameter {0:?}")]
    DuplicateParameter(String),
    /// A flag parameter that carries a value.
    #[error("permessage-deflate parameter {0:?} must not have a value")]
    UnexpectedValue(String),
    /// A window size that is missing or not an integer from 8 to 15.
    #[error("permessage-deflate parameter {name:?} has an invalid window size {value:?}")]
    InvalidWindowBits {
        /// The parameter.
        name: String,
        /// Its value, if any.
        value: Option<String>,
    },
    /// The server's compressor window is larger than the `server_max_window_bits` we offered
    /// (a missing answer means 15).
    #[error("server window of {answered} bits exceeds the {offered} bits we offered")]
    ServerWindowTooLarge {
        /// What we offered.
        offered: u8,
        /// What the server answered.
        answered: u8,
    },
    /// The server limits our compressor to 8 bits, which zlib cannot produce.
    #[error("client_max_window_bits=8 is not supported by our compressor")]
    UnsupportedClientWindow,
}

/// The parameters of one offer or answer, checked for syntax.
#[derive(Debug, Default)]
struct Parsed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Parses a window size exactly as RFC 7692 writes them: "8" to "15", no sign, no leading
/// zero.
fn parse_window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.is_empty() || value.len() > 2 {
        return None;
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (MIN_WINDOW_BITS..=MAX_WINDOW_BITS)
        .contains(&bits)
        .then_some(bits)
}

/// Which side parses: an offer allows a bare `client_max_window_bits`, an answer does not.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Offer,
    Answer,
}

fn parse_params(
    params: &[ExtensionParam],
    direction: Direction,
) -> Result<Parsed, DeflateNegotiationError> {
    let mut parsed = Parsed::default();
    let mut seen = [false; 4];
    for param in params {
        let name = param.name.to_ascii_lowercase();
        let index = match name.as_str() {
            SERVER_NO_CONTEXT_TAKEOVER => 0,
            CLIENT_NO_CONTEXT_TAKEOVER => 1,
            SERVER_MAX_WINDOW_BITS => 2,
            CLIENT_MAX_WINDOW_BITS => 3,
            _ => {
                return Err(DeflateNegotiationError::UnknownParameter(
                    param.name.clone(),
                ))
            }
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(DeflateNegotiationError::DuplicateParameter(
                param.name.clone(),
            ));
        }
        let value = param.value.as_deref();
        let bits = || {
            value.and_then(parse_window_bits).ok_or_else(|| {
                DeflateNegotiationError::InvalidWindowBits {
                    name: param.name.clone(),
                    value: param.value.clone(),
                }
            })
        };
        match index {
            0 | 1 => {
                if value.is_some() {
                    return Err(DeflateNegotiationError::UnexpectedValue(param.name.clone()));
                }
                if index == 0 {
                    parsed.server_no_context_takeover = true;
                } else {
                    parsed.client_no_context_takeover = true;
                }
            }
            2 => parsed.server_max_window_bits = Some(bits()?),
            _ => {
                parsed.client_max_window_bits = Some(match (value, direction) {
                    (None, Direction::Offer) => None,
                    _ => Some(bits()?),
                });
            }
        }
    }
    Ok(parsed)
}

/// The client's offer for `config`.
///
/// It always carries `client_max_window_bits` (with our window as a hint when
/// [`DeflateConfig::client_max_window_bits`] is set, bare otherwise) to say that we accept the
/// server limiting our compressor's window.
///
/// ```
/// use fullduplex_proto::deflate::{client_offer, DeflateConfig};
/// use fullduplex_proto::handshake::format_extensions;
///
/// let offer = client_offer(&DeflateConfig::default().with_server_max_window_bits(10));
/// assert_eq!(
///     format_extensions(&[offer]),
///     "permessage-deflate; server_max_window_bits=10; client_max_window_bits"
/// );
/// ```
pub fn client_offer(config: &DeflateConfig) -> ExtensionOffer {
    let mut offer = ExtensionOffer::new(EXTENSION_NAME);
    if config.server_no_context_takeover {
        offer = offer.with_param(ExtensionParam::new(SERVER_NO_CONTEXT_TAKEOVER, None));
    }
    if config.client_no_context_takeover {
        offer = offer.with_param(ExtensionParam::new(CLIENT_NO_CONTEXT_TAKEOVER, None));
    }
    if let Some(bits) = config.peer_compressor_bits(Role::Client) {
        offer = offer.with_param(ExtensionParam::new(
            SERVER_MAX_WINDOW_BITS,
            Some(&bits.to_string()),
        ));
    }
    let hint = config
        .client_max_window_bits
        .map(|_| config.own_compressor_bits(Role::Client).to_string());
    offer.with_param(ExtensionParam::new(CLIENT_MAX_WINDOW_BITS, hint.as_deref()))
}

/// Checks the server's answer to [`client_offer`]`(config)` and resolves the parameters.
///
/// Fails (and the client must fail the connection) on another extension name, an unknown or
/// repeated parameter, a value on a flag, a window size that is missing or not 8..=15, a
/// server window larger than the `server_max_window_bits` we offered, or
/// `client_max_window_bits=8`.
///
/// ```
/// use fullduplex_proto::deflate::{client_accept, DeflateConfig};
/// use fullduplex_proto::handshake::{ExtensionOffer, ExtensionParam};
///
/// let answer = ExtensionOffer::new("permessage-deflate")
///     .with_param(ExtensionParam::new("client_max_window_bits", Some("10")));
/// let params = client_accept(&answer, &DeflateConfig::default())?;
/// assert_eq!(params.client_max_window_bits, 10);
/// assert_eq!(params.server_max_window_bits, 15);
/// # Ok::<(), fullduplex_proto::deflate::DeflateNegotiationError>(())
/// ```
pub fn client_accept(
    response: &ExtensionOffer,
    config: &DeflateConfig,
) -> Result<DeflateParams, DeflateNegotiationError> {
    if !response.name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return Err(DeflateNegotiationError::WrongExtension(
            response.name.clone(),
        ));
    }
    let parsed = parse_params(&response.params, Direction::Answer)?;

    let server_bits = parsed.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
    if let Some(offered) = config.peer_compressor_bits(Role::Client) {
        if server_bits > offered {
            return Err(DeflateNegotiationError::ServerWindowTooLarge {
                offered,
                answered: server_bits,
            });
        }
    }

    let own = config.own_compressor_bits(Role::Client);
    let client_bits = match parsed.client_max_window_bits {
        Some(Some(bits)) if bits < MIN_COMPRESSOR_WINDOW_BITS => {
            return Err(DeflateNegotiationError::UnsupportedClientWindow)
        }
        Some(Some(bits)) => bits.min(own),
        // The answer parser requires a value, so `Some(None)` does not occur.
        _ => own,
    };

    Ok(DeflateParams {
        server_no_context_takeover: parsed.server_no_context_takeover,
        client_no_context_takeover: parsed.client_no_context_takeover
            || config.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    })
}

/// Picks the first acceptable `permessage-deflate` offer and builds the answer to send.
///
/// Offers for other extensions are ignored. An offer is declined (and the next one tried) when
/// it has an unknown or repeated parameter, a value on a flag, a window size that is missing
/// or not 8..=15, or `server_max_window_bits=8` (which our compressor cannot honour). `None`
/// means no offer was acceptable: answer without permessage-deflate.
///
/// The answer stays within the offer: `server_max_window_bits` is at most the offered value,
/// `client_max_window_bits` is only answered when the client offered it, and the
/// `*_no_context_takeover` flags the client asked for are echoed.
///
/// ```
/// use fullduplex_proto::deflate::{server_negotiate, DeflateConfig};
/// use fullduplex_proto::handshake::{format_extensions, parse_extensions};
/// use http::{HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     "sec-websocket-extensions",
///     HeaderValue::from_static(
///         "permessage-deflate; server_max_window_bits=8, \
///          permessage-deflate; server_max_window_bits=10; client_max_window_bits",
///     ),
/// );
/// let offers = parse_extensions(&headers)?;
/// let config = DeflateConfig::default().with_client_max_window_bits(12);
/// let (params, answer) = server_negotiate(&offers, &config).expect("second offer accepted");
/// assert_eq!(
///     format_extensions(&[answer]),
///     "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"
/// );
/// assert_eq!(params.server_max_window_bits, 10);
/// # Ok::<(), fullduplex_proto::handshake::HandshakeError>(())
/// ```
pub fn server_negotiate(
    offers: &[ExtensionOffer],
    config: &DeflateConfig,
) -> Option<(DeflateParams, ExtensionOffer)> {
    offers
        .iter()
        .filter(|offer| offer.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|offer| server_accept_one(offer, config))
}

/// The answer to one offer, or `None` to decline it.
fn server_accept_one(
    offer: &ExtensionOffer,
    config: &DeflateConfig,
) -> Option<(DeflateParams, ExtensionOffer)> {
    let parsed = parse_params(&offer.params, Direction::Offer).ok()?;

    let server_no_context_takeover =
        parsed.server_no_context_takeover || config.server_no_context_takeover;
    let client_no_context_takeover =
        parsed.client_no_context_takeover || config.client_no_context_takeover;

    // Our compressor: at most what the client allows and what we want, never 8.
    let own = config.own_compressor_bits(Role::Server);
    let server_bits = match parsed.server_max_window_bits {
        Some(bits) if bits < MIN_COMPRESSOR_WINDOW_BITS => return None,
        Some(bits) => Some(bits.min(own)),
        None => (own < MAX_WINDOW_BITS).then_some(own),
    };

    // The client's compressor: we may only answer a limit when the client offered the
    // parameter, and at most the value it offered.
    let client_bits = match parsed.client_max_window_bits {
        None => None,
        Some(offered) => match (offered, config.peer_compressor_bits(Role::Server)) {
            (Some(offered), Some(wanted)) => Some(offered.min(wanted)),
            (None, Some(wanted)) => Some(wanted),
            (_, None) => None,
        },
    };

    let mut answer = ExtensionOffer::new(EXTENSION_NAME);
    if server_no_context_takeover {
        answer = answer.with_param(ExtensionParam::new(SERVER_NO_CONTEXT_TAKEOVER, None));
    }
    if client_no_context_takeover {
        answer = answer.with_param(ExtensionParam::new(CLIENT_NO_CONTEXT_TAKEOVER, None));
    }
    if let Some(bits) = server_bits {
        answer = answer.with_param(ExtensionParam::new(
            SERVER_MAX_WINDOW_BITS,
            Some(&bits.to_string()),
        ));
    }
    if let Some(bits) = client_bits {
        answer = answer.with_param(ExtensionParam::new(
            CLIENT_MAX_WINDOW_BITS,
            Some(&bits.to_string()),
        ));
    }

    let params = DeflateParams {
        server_no_context_takeover,
        client_no_context_takeover,
        server_max_window_bits: server_bits.unwrap_or(MAX_WINDOW_BITS),
        // Without an answer the client still keeps to the hint it offered, if any.
        client_max_window_bits: client_bits
            .or(parsed.client_max_window_bits.flatten())
            .unwrap_or(MAX_WINDOW_BITS),
    };
    Some((params, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bits_syntax() {
        for (text, bits) in [("8", Some(8)), ("15", Some(15)), ("9", Some(9))] {
            assert_eq!(parse_window_bits(text), bits, "{text}");
        }
        for text in [
            "", "7", "16", "08", "+9", "-9", "1a", "015", "255", "256", " 9",
        ] {
            assert_eq!(parse_window_bits(text), None, "{text:?}");
        }
    }

    #[test]
    fn own_bits_never_eight() {
        let config = DeflateConfig {
            client_max_window_bits: Some(3),
            server_max_window_bits: Some(200),
            ..DeflateConfig::default()
        };
        assert_eq!(config.own_compressor_bits(Role::Client), 9);
        assert_eq!(config.own_compressor_bits(Role::Server), 15);
        assert_eq!(config.peer_compressor_bits(Role::Server), Some(8));
        assert_eq!(config.peer_compressor_bits(Role::Client), Some(15));
    }
}
