//! The core's `FrameReader` fed a fuzzed byte stream in fuzzed pieces.
//! See `fullduplex_fuzz::frame_reader` for the input layout and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fullduplex_fuzz::frame_reader::frame_reader(data);
});
