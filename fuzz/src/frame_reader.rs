//! The `frame_reader` target: [`FrameReader`] over a fuzzed byte stream fed in fuzzed pieces.
//!
//! Input layout:
//!
//! ```text
//! byte 0   low 3 bits: how many piece-size bytes follow (0: the stream in one piece);
//!          bit 3: read with `FrameReader::read` instead of `feed`
//! bytes    piece sizes, used in turn; 0 means "everything that is left"
//! rest     the byte stream
//! ```
//!
//! Checked: never panics; the stream fed in pieces yields the same headers, unmasked payloads
//! and error as fed whole, and both agree with an independent reading of the whole stream
//! with [`FrameHeader::parse`] and a byte-wise unmask; every frame yields its header, then
//! chunks whose offsets follow each other and carry the header's key, the last one flagged;
//! the position queries (`is_at_frame_boundary`, `current_header`, `payload_remaining`)
//! agree with what was read; an error is sticky (every later non-empty feed yields it again
//! and nothing else).

use fullduplex_proto::frame::{FrameError, FrameHeader, FrameItem, FrameReader};
use fullduplex_proto::mask::apply_mask_bytewise;

/// What a reader made of a stream: the frames (header, unmasked payload so far, complete),
/// the error that stopped it, and whether it stopped inside a header.
#[derive(Debug, PartialEq, Eq, Default)]
struct Reading {
    frames: Vec<(FrameHeader, Vec<u8>, bool)>,
    error: Option<FrameError>,
}

/// The stream read by hand: headers parsed one after the other, payloads sliced and unmasked
/// byte by byte. Returns the reading and whether a partial header is left at the end.
fn oracle(stream: &[u8]) -> (Reading, bool) {
    let mut reading = Reading::default();
    let mut rest = stream;
    loop {
        let (header, header_len) = match FrameHeader::parse(rest) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return (reading, !rest.is_empty()),
            Err(error) => {
                reading.error = Some(error);
                return (reading, false);
            }
        };
        rest = &rest[header_len..];
        let take = usize::try_from(header.payload_len).map_or(rest.len(), |n| n.min(rest.len()));
        let mut payload = rest[..take].to_vec();
        if let Some(key) = header.mask {
            apply_mask_bytewise(&mut payload, key, 0);
        }
        let complete = take as u64 == header.payload_len;
        rest = &rest[take..];
        reading.frames.push((header, payload, complete));
        if !complete {
            return (reading, false);
        }
    }
}

/// Collects items into a reading, checking their order.
struct Collector {
    reading: Reading,
    /// The frame whose payload is passing.
    open: bool,
}

impl Collector {
    fn item(&mut self, item: Result<FrameItem<'_>, FrameError>) {
        let item = match item {
            Ok(item) => item,
            Err(error) => {
                assert_eq!(self.reading.error, None, "a second error {error:?}");
                assert!(!self.open, "an error inside a frame's payload");
                self.reading.error = Some(error);
                return;
            }
        };
        assert_eq!(self.reading.error, None, "{item:?} after an error");
        match item {
            FrameItem::Header(header) => {
                assert!(!self.open, "a header inside a frame");
                self.open = true;
                // Complete with its last chunk (a frame without payload yields one, empty).
                self.reading.frames.push((header, Vec::new(), false));
            }
            FrameItem::Payload(chunk) => {
                assert!(self.open, "a chunk outside a frame");
                let Some((header, payload, complete)) = self.reading.frames.last_mut() else {
                    panic!("a chunk before any header");
                };
                assert_eq!(chunk.offset, payload.len() as u64, "chunk offset");
                assert_eq!(chunk.mask, header.mask, "chunk key");
                chunk.unmask_into(payload);
                let seen = payload.len() as u64;
                assert!(seen <= header.payload_len, "payload past its length");
                assert_eq!(chunk.is_last, seen == header.payload_len, "is_last");
                *complete = chunk.is_last;
                self.open = !chunk.is_last;
            }
        }
    }
}

/// Feeds `pieces` to a fresh reader and checks its position after each.
fn read_pieces(pieces: &[&[u8]], with_read: bool) -> (Reading, FrameReader) {
    let mut reader = FrameReader::new();
    let mut collector = Collector {
        reading: Reading::default(),
        open: false,
    };
    for piece in pieces {
        if let Some(error) = reader.error() {
            // Sticky: the error again, and nothing else.
            if with_read {
                assert_eq!(reader.read(piece), Err(error), "error not sticky");
            } else {
                let again: Vec<_> = reader.feed(piece).collect();
                assert_eq!(again, vec![Err(error)], "error not sticky");
            }
            check_position(&reader, &collector);
            continue;
        }
        if with_read {
            let mut rest: &[u8] = piece;
            loop {
                match reader.read(rest) {
                    Ok((used, item)) => {
                        assert!(used <= rest.len(), "read consumed {used} of {}", rest.len());
                        rest = &rest[used..];
                        match item {
                            Some(item) => collector.item(Ok(item)),
                            None => {
                                assert!(rest.is_empty(), "Ok((_, None)) with input left");
                                break;
                            }
                        }
                        // The last chunk of an empty frame needs no input: read on.
                        if rest.is_empty()
                            && !(reader.current_header().is_some()
                                && reader.payload_remaining() == 0)
                        {
                            break;
                        }
                    }
                    Err(error) => {
                        collector.item(Err(error));
                        break;
                    }
                }
            }
        } else {
            let mut items = reader.feed(piece);
            for item in items.by_ref() {
                collector.item(item);
            }
            assert!(items.remaining().is_empty(), "feed left bytes unconsumed");
        }
        check_position(&reader, &collector);
    }
    (collector.reading, reader)
}

fn check_position(reader: &FrameReader, collector: &Collector) {
    assert_eq!(reader.error(), collector.reading.error, "error()");
    match collector.reading.frames.last() {
        Some((header, payload, false)) if collector.open => {
            assert_eq!(reader.current_header(), Some(header), "current_header");
            assert_eq!(
                reader.payload_remaining(),
                header.payload_len - payload.len() as u64
            );
            assert!(!reader.is_at_frame_boundary());
        }
        _ => {
            assert_eq!(
                reader.current_header(),
                None,
                "current_header between frames"
            );
            assert_eq!(reader.payload_remaining(), 0);
        }
    }
}

/// Runs the target on `data` (see the module docs for the layout).
pub fn frame_reader(data: &[u8]) {
    let Some((&layout, rest)) = data.split_first() else {
        return;
    };
    let n_sizes = usize::from(layout & 7).min(rest.len());
    let with_read = layout & 8 != 0;
    let (sizes, stream) = rest.split_at(n_sizes);
    let mut pieces = Vec::new();
    let mut left = stream;
    let mut i = 0;
    while !left.is_empty() {
        let size = match sizes.get(i % sizes.len().max(1)) {
            Some(&0) | None => left.len(),
            Some(&s) => usize::from(s).min(left.len()),
        };
        let (piece, tail) = left.split_at(size);
        pieces.push(piece);
        left = tail;
        i += 1;
    }

    let (expected, partial_header) = oracle(stream);
    let (whole, whole_reader) = read_pieces(&[stream], with_read);
    assert_eq!(whole, expected, "fed whole: not what the headers say");
    let (split, reader) = read_pieces(&pieces, with_read);
    assert_eq!(split, expected, "fed in pieces: not what the headers say");

    let open_frame = matches!(expected.frames.last(), Some((_, _, false)));
    let at_boundary = expected.error.is_none() && !open_frame && !partial_header;
    assert_eq!(
        reader.is_at_frame_boundary(),
        at_boundary,
        "is_at_frame_boundary"
    );
    assert_eq!(whole_reader.is_at_frame_boundary(), at_boundary);

    // After an error, more bytes bring the error again and nothing else.
    if let Some(error) = expected.error {
        let mut reader = reader;
        let again: Vec<_> = reader.feed(b"\x82\x00\x81\x00").collect();
        assert_eq!(again, vec![Err(error)], "error not sticky");
        assert_eq!(reader.read(b"\x82\x00"), Err(error));
        assert_eq!(reader.feed(b"").count(), 0);
    }
}
