//! permessage-deflate (RFC 7692): negotiation and the per-message codec, without I/O.
//!
//! * [`params`]: what each side wants ([`DeflateConfig`]), the client's offer
//!   ([`client_offer`]) and its check of the answer ([`client_accept`]), the server's choice
//!   among offers ([`server_negotiate`]), and the result ([`DeflateParams`]).
//! * [`codec`]: [`Compressor`] and [`Decompressor`], which turn message payloads into
//!   compressed payloads (sent with RSV1 on the first frame) and back.
//!
//! The connection uses them like this: a message whose first frame has RSV1 set is fed frame
//! by frame to [`Decompressor::decompress`], bounded by the message size limit; an outgoing
//! message of at least [`Compressor::threshold`] bytes goes through [`Compressor::compress`]
//! and is sent with RSV1 set. Control frames are never compressed.
//!
//! ```
//! use bytes::BytesMut;
//! use fullduplex_proto::deflate::{
//!     client_accept, client_offer, server_negotiate, Compressor, Decompressor, DeflateConfig,
//! };
//! use fullduplex_proto::Role;
//!
//! // Handshake: the client offers, the server picks and answers, the client checks the answer.
//! let config = DeflateConfig::default();
//! let offer = client_offer(&config);
//! let (server_params, answer) = server_negotiate(&[offer], &config).expect("accepted");
//! let client_params = client_accept(&answer, &config)?;
//! assert_eq!(client_params, server_params);
//!
//! // Messages: the client compresses, the server decompresses.
//! let mut compressor = Compressor::new(&client_params, Role::Client, &config);
//! let mut decompressor = Decompressor::new(&server_params, Role::Server);
//! let mut wire = BytesMut::new();
//! compressor.compress(b"a message, a message, a message", &mut wire).unwrap();
//! let mut message = BytesMut::new();
//! decompressor.decompress(&wire, true, &mut message, 1 << 20).unwrap();
//! assert_eq!(&message[..], b"a message, a message, a message");
//! # Ok::<(), fullduplex_proto::deflate::DeflateNegotiationError>(())
//! ```

pub mod codec;
pub mod params;

pub use codec::{Compressor, Decompressor, DeflateError, Progress, DECOMPRESS_STEP, TAIL};
pub use params::{
    client_accept, client_offer, server_negotiate, DeflateConfig, DeflateNegotiationError,
    DeflateParams, EXTENSION_NAME, MAX_WINDOW_BITS, MIN_COMPRESSOR_WINDOW_BITS, MIN_WINDOW_BITS,
};
