//! The SSE parser (`checks::e2e::sse::Parser`): any bytes, cut into chunks anywhere, give the
//! same events and the same leftover as the whole stream fed at once, or the same overflow of a
//! cap; never a panic.
//!
//! Input: one byte choosing how the stream is cut, then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smokecheck::checks::e2e::sse::Parser;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Parser::default();
    let expected = whole.feed(stream);

    let mut chunked = Parser::default();
    let mut events = Vec::new();
    let mut rest = stream;
    let mut lengths = Lengths(u32::from(cut));
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(lengths.next().min(rest.len()));
        match chunked.feed(chunk) {
            Ok(more) => events.extend(more),
            Err(overflow) => {
                // A cap is a property of the stream, not of where it was cut.
                assert_eq!(Err(overflow), expected, "chunking changed the overflow");
                return;
            }
        }
        rest = tail;
    }
    assert_eq!(Ok(events), expected, "chunking changed the events");
    assert_eq!(
        chunked.finish(),
        whole.finish(),
        "chunking changed the leftover"
    );
});

/// Chunk lengths: all 1 byte for cut 0 (every boundary, `\r|\n` and mid-character included),
/// otherwise pseudo-random lengths of 1 to 64 bytes seeded by the cut byte (xorshift).
struct Lengths(u32);

impl Lengths {
    fn next(&mut self) -> usize {
        if self.0 == 0 {
            return 1;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        1 + (self.0 % 64) as usize
    }
}
