//! The push server's parsing of what clients send: `wire::parse` (a WebSocket text message:
//! the request and its `id`), `wire::parse_request`, and `wire::parse_json_value` (the body of
//! `POST /publish` and the server API's `data`).
//!
//! Input: the bytes of one message (as UTF-8 when they are; `parse_json_value` takes any
//! bytes).
//!
//! Invariants: nothing panics or hangs, whatever the nesting; `parse` and `parse_request`
//! agree (same request, and `parse` knows the `id` whenever `parse_request` accepted it);
//! an accepted `id` is a JSON string or number (by syntax: `1e400` is one, the campaign's
//! first finding, and is answered as it came) of at most the documented size; a refused
//! request has an error code from the documented set; an accepted JSON value is the input
//! without surrounding whitespace and is valid JSON again.
#![no_main]

use fullduplex_hub::wire::{parse, parse_json_value, parse_request, MAX_ID_LEN};
use libfuzzer_sys::fuzz_target;

/// The error codes PROTOCOL.md lists for refused requests.
const CODES: [&str; 4] = ["bad_json", "bad_request", "unknown_type", "invalid_topic"];

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = parse_json_value(data) {
        let text = value.get();
        assert_eq!(text, text.trim(), "surrounding whitespace kept");
        assert!(serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok());
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(text);
    match (parse_request(text), &parsed.request) {
        (Ok((id, _)), Ok(_)) => {
            assert_eq!(parsed.id, id, "parse and parse_request disagree on the id");
            if let Some(id) = id {
                // JSON syntax: a number (of any size: JSON sets no range, and the id goes
                // back to the client as it came) or a string.
                let json: &serde_json::value::RawValue =
                    serde_json::from_str(id).expect("an accepted id is JSON");
                let first = json.get().as_bytes()[0];
                assert!(
                    first == b'"' || first == b'-' || first.is_ascii_digit(),
                    "id {id}"
                );
                assert!(id.len() <= MAX_ID_LEN, "id of {} bytes", id.len());
            }
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.code(), b.code());
            assert!(CODES.contains(&a.code()), "undocumented code {}", a.code());
        }
        (a, b) => panic!("parse and parse_request disagree: {a:?} / {b:?}"),
    }
});
