//! A client-side connection fed a fuzzed server byte stream in fuzzed chunks.
//! See `fullduplex_fuzz::frame_stream` for the input layout and the invariants.
#![no_main]

use fullduplex_proto::Role;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fullduplex_fuzz::frame_stream(Role::Client, data);
});
