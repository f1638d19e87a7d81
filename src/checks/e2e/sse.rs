//! Server-sent events, parsed as the spec says (not by looking for `data: ` at line starts):
//! events end at a blank line, `data` lines of one event are joined with newlines, the one
//! space after the colon is dropped, comments (`:`) and other fields are ignored, and a chunk
//! boundary may fall anywhere, even inside a UTF-8 character or between `\r` and `\n`.

#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// `data` lines of the event being read.
    data: Vec<String>,
    /// Whether the event being read has any data field (an empty `data:` is an event).
    has_data: bool,
}

impl Parser {
    /// Feeds a chunk; returns the data of every event it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, &mut out);
            } else {
                self.line.push(b);
            }
        }
        out
    }

    /// The stream ended: an event not closed by a blank line is dropped, as the spec says; the
    /// caller learns whether something was left over.
    pub fn finish(&mut self) -> bool {
        let leftover = self.has_data || !self.line.is_empty();
        self.line.clear();
        self.data.clear();
        self.has_data = false;
        leftover
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) {
        if line.is_empty() {
            if self.has_data {
                out.push(self.data.join("\n"));
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
            None => (text.to_string(), String::new()),
        };
        if field == "data" {
            self.data.push(value);
            self.has_data = true;
        }
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
            let mut events = p.feed(&bytes[..cut]);
            events.extend(p.feed(&bytes[cut..]));
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
        assert!(p.feed(b"data: [DONE]").is_empty());
        assert!(p.finish());
    }
}
