//! A client checking a fuzzed server answer to its upgrade request.
#![no_main]

use fullduplex_proto::deflate::{client_accept, client_offer, DeflateConfig, EXTENSION_NAME};
use fullduplex_proto::handshake::{
    parse_response, validate_response, ExtensionOffer, HandshakeError,
};
use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 8 << 10;
/// The key of RFC 6455 section 1.3; its accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    let (response, len) = match parse_response(data, MAX_HEAD) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(data.len() <= MAX_HEAD, "partial head over the limit");
            return;
        }
        Err(error) => {
            if error == HandshakeError::HeadTooLarge {
                assert!(data.len() > MAX_HEAD);
            }
            let _ = (error.status(), error.to_string());
            return;
        }
    };
    assert!(
        len > 0 && len <= data.len() && len <= MAX_HEAD,
        "head length {len}"
    );
    assert!(!matches!(
        parse_response(&data[..len - 1], MAX_HEAD),
        Ok(Some(_))
    ));

    let protocols = ["chat".to_owned(), "superchat".to_owned()];
    let config = DeflateConfig::default().with_server_max_window_bits(12);
    let extensions = [client_offer(&config), ExtensionOffer::new("x-fuzz")];
    match validate_response(&response, KEY, &protocols, &extensions) {
        Ok(accepted) => {
            if let Some(protocol) = &accepted.protocol {
                assert!(protocols.contains(protocol), "{protocol:?} was not offered");
            }
            for extension in &accepted.extensions {
                assert!(
                    extensions
                        .iter()
                        .any(|offer| offer.name.eq_ignore_ascii_case(&extension.name)),
                    "{extension:?} was not offered"
                );
                if extension.name.eq_ignore_ascii_case(EXTENSION_NAME) {
                    if let Ok(params) = client_accept(extension, &config) {
                        assert!(params.server_max_window_bits <= 12);
                    }
                }
            }
        }
        Err(error) => {
            let _ = (error.status(), error.to_string());
        }
    }
});
