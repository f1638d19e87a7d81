//! Server-sent events, parsed as the spec says (not by looking for `data: ` at line starts):
//! events end at a blank line, `data` lines of one event are joined with newlines, the one
//! space after the colon is dropped, comments (`:`) and other fields are ignored, and a chunk
//! boundary may fall anywhere, even inside a UTF-8 character or between `\r` and `\n`.
//!
//! What it holds is bounded: a line over [`MAX_LINE`] or an event over [`MAX_EVENT`] is an
//! [`Overflow`], so a stream that never sends a newline cannot grow the run's memory.

/// The longest line a stream may send: 64 KiB. An OpenAI chunk of a few tokens is a few
/// hundred bytes; an error event with a traceback a few KiB.
pub const MAX_LINE: usize = 64 << 10;
/// The most data one event may carry, its data lines joined: 128 KiB, room for an error
/// event split over a few lines.
pub const MAX_EVENT: usize = 128 << 10;

/// Where a stream went over a cap of the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// A line longer than [`MAX_LINE`].
    Line,
    /// An event whose data is over [`MAX_EVENT`].
    Event,
}

impl Overflow {
    /// What went over, and its cap in bytes.
    pub fn what(self) -> (&'static str, usize) {
        match self {
            Overflow::Line => ("a line", MAX_LINE),
            Overflow::Event => ("an event", MAX_EVENT),
        }
    }
}

#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// `data` lines of the event being read.
    data: Vec<String>,
    /// Bytes of `data`, joined.
    data_len: usize,
    /// Whether the event being read has any data field (an empty `data:` is an event).
    has_data: bool,
}

impl Parser {
    /// Feeds a chunk; returns the data of every event it completed, or the cap the stream
    /// went over (the parser is then done).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, Overflow> {
        let mut out = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, &mut out)?;
            } else if self.line.len() >= MAX_LINE {
                return Err(Overflow::Line);
            } else {
                self.line.push(b);
            }
        }
        Ok(out)
    }

    /// The stream ended: an event not closed by a blank line is dropped, as the spec says; the
    /// caller learns whether something was left over.
    pub fn finish(&mut self) -> bool {
        let leftover = self.has_data || !self.line.is_empty();
        self.line.clear();
        self.data.clear();
        self.data_len = 0;
        self.has_data = false;
        leftover
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) -> Result<(), Overflow> {
        if line.is_empty() {
            if self.has_data {
                out.push(self.data.join("\n"));
            }
            self.data.clear();
            self.data_len = 0;
            self.has_data = false;
            return Ok(());
        }
        if line.first() == Some(&b':') {
            return Ok(());
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        if field == "data" {
            // Each line after the first adds its joining newline.
            self.data_len += value.len() + usize::from(self.has_data);
            if self.data_len > MAX_EVENT {
                return Err(Overflow::Event);
            }
            self.data.push(value.to_string());
            self.has_data = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let stream = "data: {\"a\":\"é\"}\r\n\r\n: keep-alive\n\ndata:x\ndata: y\n\nevent: e\ndata: [DONE]\n\n";
        let bytes = stream.as_bytes();
        for cut in 0..bytes.len() {
            let mut p = Parser::default();
            let mut events = p.feed(&bytes[..cut]).expect("within the caps");
            events.extend(p.feed(&bytes[cut..]).expect("within the caps"));
            assert_eq!(
                events,
                vec!["{\"a\":\"é\"}", "x\ny", "[DONE]"],
                "cut at {cut}"
            );
            assert!(!p.finish());
        }
    }

    #[test]
    fn an_unterminated_event_is_leftover_not_an_event() {
        let mut p = Parser::default();
        assert_eq!(p.feed(b"data: [DONE]"), Ok(Vec::new()));
        assert!(p.finish());
    }

    #[test]
    fn a_line_that_never_ends_overflows_at_64_kib() {
        let mut p = Parser::default();
        let line = [b"data: ".as_slice(), &[b'x'; MAX_LINE - 6]].concat();
        assert_eq!(p.feed(&line), Ok(Vec::new()), "a line of exactly the cap");
        assert_eq!(p.feed(b"\n\n").map(|e| e[0].len()), Ok(MAX_LINE - 6));
        let mut p = Parser::default();
        let mut fed = 0;
        let overflow = loop {
            match p.feed(&[b'x'; 1000]) {
                Ok(_) => fed += 1000,
                Err(o) => break o,
            }
            assert!(fed <= MAX_LINE, "fed {fed} bytes without a newline");
        };
        assert_eq!(overflow, Overflow::Line);
    }

    #[test]
    fn an_event_of_many_lines_overflows_at_its_cap() {
        let mut p = Parser::default();
        let line = format!("data: {}\n", "y".repeat(1000));
        let mut lines = 0;
        let overflow = loop {
            match p.feed(line.as_bytes()) {
                Ok(events) => assert!(events.is_empty()),
                Err(o) => break o,
            }
            lines += 1;
            assert!(lines <= MAX_EVENT / 1000, "{lines} lines in one event");
        };
        assert_eq!(overflow, Overflow::Event);
        assert_eq!(lines, MAX_EVENT / 1001);
    }
}
