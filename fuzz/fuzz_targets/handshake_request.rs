//! A server parsing and answering a fuzzed upgrade request: parse, validate, negotiate, accept or
//! reject, encode, and check that a client accepts what was encoded.
#![no_main]

use bytes::{Bytes, BytesMut};
use fullduplex_proto::deflate::{client_accept, server_negotiate, DeflateConfig};
use fullduplex_proto::handshake::{
    accept_response, encode_response, encode_response_head, format_extensions, offered_protocols,
    parse_request, parse_response, rejection, validate_request, validate_response, HandshakeError,
};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 8 << 10;

fuzz_target!(|data: &[u8]| {
    let (request, len) = match parse_request(data, MAX_HEAD) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(data.len() <= MAX_HEAD, "partial head over the limit");
            return;
        }
        Err(error) => {
            if error == HandshakeError::HeadTooLarge {
                assert!(data.len() > MAX_HEAD);
            }
            reject(&error);
            return;
        }
    };
    assert!(
        len > 0 && len <= data.len() && len <= MAX_HEAD,
        "head length {len}"
    );
    // The head ends where parse_request says: a strict prefix is not a head, and the bytes
    // after it (WebSocket frames) do not change it.
    assert!(!matches!(
        parse_request(&data[..len - 1], MAX_HEAD),
        Ok(Some(_))
    ));
    assert!(matches!(parse_request(&data[..len], MAX_HEAD), Ok(Some((_, l))) if l == len));

    let upgrade = match validate_request(request) {
        Ok(upgrade) => upgrade,
        Err(error) => {
            reject(&error);
            return;
        }
    };
    // What an application looks at before it decides.
    let _ = (upgrade.path(), upgrade.query(), upgrade.origin());
    let _ = upgrade.header("user-agent");
    let _ = upgrade.cookies().count();
    assert_eq!(upgrade.accept_key().len(), 28);
    let protocols = upgrade.protocols().to_vec();
    assert_eq!(offered_protocols(upgrade.request()), protocols);

    // A protocol the client did not offer is refused.
    let unoffered = protocols.concat() + "x";
    match accept_response(&upgrade, Some(&unoffered), None) {
        Err(HandshakeError::ProtocolNotOffered(p)) => assert_eq!(p, unoffered),
        other => panic!("unoffered protocol accepted: {other:?}"),
    }

    // Accept: the first protocol, and permessage-deflate if an offer is acceptable.
    let protocol = protocols.first().map(String::as_str);
    let deflate = DeflateConfig::default();
    let negotiated = server_negotiate(upgrade.extensions(), &deflate);
    let answer = negotiated
        .as_ref()
        .map(|(_, answer)| format_extensions(std::slice::from_ref(answer)));
    let response = accept_response(&upgrade, protocol, answer.as_deref())
        .expect("accepting an offered protocol and a formatted answer");
    let mut head = BytesMut::new();
    encode_response_head(&response, &mut head);
    let mut whole = BytesMut::new();
    encode_response(&response.clone().map(|()| Bytes::new()), &mut whole);
    assert_eq!(head, whole, "a 101 has no body");

    // The client that sent this request accepts the answer.
    let (parsed, n) = parse_response(&head, 64 << 10)
        .expect("encoded response parses")
        .expect("encoded response is complete");
    assert_eq!(n, head.len());
    let accepted = validate_response(&parsed, upgrade.key(), &protocols, upgrade.extensions())
        .expect("the client accepts our answer");
    assert_eq!(accepted.protocol.as_deref(), protocol);
    match &negotiated {
        Some((_, answer)) => {
            assert_eq!(accepted.extensions, std::slice::from_ref(answer));
            let _ = client_accept(&accepted.extensions[0], &deflate);
        }
        None => assert!(accepted.extensions.is_empty()),
    }
});

/// The rejection for `error` encodes to a response a client can parse, with the same status.
fn reject(error: &HandshakeError) {
    let status = error.status();
    assert!(status.is_client_error() || status == StatusCode::INTERNAL_SERVER_ERROR);
    let response = rejection(error);
    assert_eq!(response.status(), status);
    let mut out = BytesMut::new();
    encode_response(&response, &mut out);
    let (parsed, n) = parse_response(&out, 64 << 10)
        .expect("rejection parses")
        .expect("rejection is complete");
    assert_eq!(parsed.status(), status);
    assert_eq!(&out[n..], &response.body()[..]);
}
