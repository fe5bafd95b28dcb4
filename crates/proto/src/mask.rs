//! XOR masking (RFC 6455 section 5.3).
//!
//! Masking is an XOR with a 4-byte key that repeats over the payload. It runs in place, eight
//! bytes at a time on a `u64` built from the key, which lets the compiler vectorise the loop (for
//! AVX2 where the CPU has it); the few bytes before and after the aligned middle are done one at
//! a time.

/// XORs `buf` in place with `key`, as if `buf` started at byte `offset` of the masked payload.
///
/// The offset lets a shell unmask a frame's payload piece by piece as it arrives: unmasking
/// `payload[..n]` with offset 0 and then `payload[n..]` with offset `n` gives the same result as
/// unmasking the whole payload at once. Masking and unmasking are the same operation.
///
/// ```
/// use fullduplex_proto::mask::apply_mask;
/// let key = [0x37, 0xfa, 0x21, 0x3d];
/// let mut data = *b"Hello";
/// apply_mask(&mut data, key, 0);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]); // RFC 6455 section 5.7
/// apply_mask(&mut data[..2], key, 0);
/// apply_mask(&mut data[2..], key, 2);
/// assert_eq!(&data, b"Hello");
/// ```
#[inline(always)]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    if buf.len() < SHORT {
        apply_mask_short(buf, key);
    } else {
        apply_mask_long(buf, key);
    }
}

/// Appends `src` to `dst`, unmasked with `key` as if `src` started at byte `offset` of the
/// masked payload: for payload read in pieces that cannot be unmasked in place, such as the
/// borrowed chunks of a [`FrameReader`](crate::frame::FrameReader). Copies once.
///
/// ```
/// use fullduplex_proto::mask::extend_unmasked;
/// let key = [0x37, 0xfa, 0x21, 0x3d];
/// let wire = [0x7f, 0x9f, 0x4d, 0x51, 0x58]; // "Hello", RFC 6455 section 5.7
/// let mut text = Vec::new();
/// extend_unmasked(&mut text, &wire[..3], key, 0);
/// extend_unmasked(&mut text, &wire[3..], key, 3);
/// assert_eq!(text, b"Hello");
/// ```
#[inline]
pub fn extend_unmasked(dst: &mut Vec<u8>, src: &[u8], key: [u8; 4], offset: u64) {
    let start = dst.len();
    dst.extend_from_slice(src);
    // Only the key's phase matters: offset modulo 4 fits any usize.
    apply_mask(&mut dst[start..], key, (offset % 4) as usize);
}

/// Masks a buffer of at least [`SHORT`] bytes, a word at a time over its aligned middle; `key`
/// is already rotated to the buffer's start. Kept out of line so that the short path, the one
/// small messages take, is inlined where frames are parsed.
///
/// On x86_64 CPUs with AVX2 (checked once at run time, then a load of a cached flag) the same
/// loop runs compiled for AVX2, 32 bytes per XOR instead of the baseline's 16.
#[inline(never)]
fn apply_mask_long(buf: &mut [u8], key: [u8; 4]) {
    #[cfg(all(target_arch = "x86_64", not(target_feature = "avx2")))]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the only requirement of a `#[target_feature(enable = "avx2")]` function is
        // that the CPU has AVX2, which was detected just above. Tested against the bytewise
        // definition by `tests::matches_bytewise_definition` (and `long_buffers_match_...`) on
        // any machine with AVX2. `mask/fast` against `mask/words` in benches/core.rs measures
        // what it buys.
        unsafe { apply_mask_long_avx2(buf, key) };
        return;
    }
    apply_mask_words(buf, key);
}

/// [`apply_mask_words`] compiled for AVX2.
#[cfg(all(target_arch = "x86_64", not(target_feature = "avx2")))]
#[target_feature(enable = "avx2")]
fn apply_mask_long_avx2(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_words(buf, key);
}

/// The word-at-a-time loop for the baseline target (SSE2 on x86_64), whatever the CPU: public
/// for the benchmark that compares it with the AVX2 build. `key` is already rotated to the
/// buffer's start.
#[doc(hidden)]
#[inline(always)]
pub fn apply_mask_words(buf: &mut [u8], key: [u8; 4]) {
    let (head, middle, tail) = split_for_words(buf);
    for (i, byte) in head.iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
    // The middle starts `head.len()` bytes into the rotated key.
    let key = rotate_key(key, head.len());
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    for chunk in middle.iter_mut() {
        *chunk ^= word;
    }
    // The tail starts a multiple of 8 bytes after the middle: same key phase as the middle.
    for (i, byte) in tail.iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// Payloads shorter than this are masked by [`apply_mask_short`]: aligning costs more than it
/// saves on a few words (a 16-byte payload took about 90 instructions the aligned way).
const SHORT: usize = 64;

/// Masks a short buffer eight unaligned bytes at a time, then the rest (fewer than eight)
/// four and one at a time; `key` is already rotated to the buffer's start.
#[inline(always)]
fn apply_mask_short(buf: &mut [u8], key: [u8; 4]) {
    let key32 = u32::from_ne_bytes(key);
    // Both halves are the key, so the word's bytes repeat it whatever the byte order.
    let word = u64::from(key32) << 32 | u64::from(key32);
    let mut words = buf.chunks_exact_mut(8);
    for chunk in &mut words {
        if let Ok(bytes) = <&mut [u8; 8]>::try_from(chunk) {
            *bytes = (u64::from_ne_bytes(*bytes) ^ word).to_ne_bytes();
        }
    }
    // Whole words keep the key's phase: the rest starts at key[0], and so does what follows
    // a half word.
    let rest = words.into_remainder();
    let (half, rest) = rest.split_at_mut(if rest.len() >= 4 { 4 } else { 0 });
    if let Ok(half) = <&mut [u8; 4]>::try_from(half) {
        *half = (u32::from_ne_bytes(*half) ^ key32).to_ne_bytes();
    }
    for (byte, k) in rest.iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// The key as seen from byte `offset` of the payload: `key[offset % 4..]` then the rest.
/// A rotation of the key read as a little-endian `u32` (two instructions, where rotating the
/// array went through the generic slice rotation: about 50 per call under callgrind).
#[inline]
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let shift = 8 * (offset & 3) as u32;
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}

/// Splits `buf` into unaligned head bytes, aligned `u64` words and tail bytes.
#[inline]
fn split_for_words(buf: &mut [u8]) -> (&mut [u8], &mut [u64], &mut [u8]) {
    // SAFETY: every bit pattern is a valid u64 and a valid u8, so reinterpreting the aligned
    // middle of a byte slice as u64 words is sound; `align_to_mut` guarantees alignment and
    // that the three parts cover `buf` exactly once. Tested against the bytewise definition in
    // `tests::matches_bytewise_definition` for every length up to 100, offset and alignment.
    // The benchmark `mask/*` in benches/core.rs measured 26-43 GiB/s from 1 KiB up, 10-22x the
    // bytewise loop (no gain at 16 bytes, where the unaligned edges dominate).
    unsafe { buf.align_to_mut::<u64>() }
}

/// The definition: one byte at a time. Kept for tests and benchmarks as the reference.
#[doc(hidden)]
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_bytewise_definition() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..256u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..8 {
            for len in 0..100 {
                for offset in 0..8 {
                    let mut fast = data.clone();
                    let mut slow = data.clone();
                    apply_mask(&mut fast[start..start + len], key, offset);
                    apply_mask_bytewise(&mut slow[start..start + len], key, offset);
                    assert_eq!(fast, slow, "start {start} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn long_buffers_match_the_bytewise_definition_and_the_baseline_loop() {
        // Lengths around the AVX2 loop's steps (32 bytes, and the 128 its unrolled body
        // takes), every start alignment and key phase, against the definition and against
        // the baseline build of the word loop.
        let key = [0x9a, 0x0b, 0xfe, 0x41];
        let data: Vec<u8> = (0..4200u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in (64..600).chain([1023, 1024, 1025, 4095, 4096, 4097]) {
            for start in 0..9 {
                for offset in 0..4 {
                    let mut fast = data.clone();
                    let mut slow = data.clone();
                    let mut words = data.clone();
                    apply_mask(&mut fast[start..start + len], key, offset);
                    apply_mask_bytewise(&mut slow[start..start + len], key, offset);
                    apply_mask_words(&mut words[start..start + len], rotate_key(key, offset));
                    assert_eq!(fast, slow, "start {start} len {len} offset {offset}");
                    assert_eq!(words, slow, "start {start} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn rotated_key_starts_at_the_offset() {
        let key = [1, 2, 3, 4];
        assert_eq!(rotate_key(key, 0), [1, 2, 3, 4]);
        assert_eq!(rotate_key(key, 1), [2, 3, 4, 1]);
        assert_eq!(rotate_key(key, 2), [3, 4, 1, 2]);
        assert_eq!(rotate_key(key, 7), [4, 1, 2, 3]);
    }

    #[test]
    fn piecewise_equals_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..data.len() {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }

    #[test]
    fn masking_twice_is_identity() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut buf = data.clone();
        apply_mask(&mut buf, key, 3);
        assert_ne!(buf, data);
        apply_mask(&mut buf, key, 3);
        assert_eq!(buf, data);
    }
}
