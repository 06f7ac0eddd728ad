//! Incremental Server-Sent Events framing (WHATWG HTML §9.2.5/9.2.6).
//!
//! A sans-IO parser: [`SseParser::feed`] takes whatever bytes the network produced and returns the events that
//! became complete; [`SseParser::finish`] ends the stream. The parser frames on bytes (CR and LF never occur inside
//! a UTF-8 sequence), so a character split across reads is decoded whole; each field value is decoded lossily
//! (invalid UTF-8 becomes U+FFFD, as the spec says). Lines end with CRLF, LF or a lone CR; a CR at the end of a
//! read is held until the next byte shows whether it was a CRLF. One leading BOM is stripped, even when it
//! arrives one byte per read.
//!
//! Deviation from the spec, on purpose: with `lenient_eof` (the gateway's default), [`SseParser::finish`]
//! dispatches an event that has data but was not followed by a blank line, because real upstreams sometimes
//! end a stream that way. With `lenient_eof = false` it is discarded, as the spec says.
//!
//! Line and event sizes are capped; a stream that breaks a cap gets an [`SseError`] instead of unbounded memory,
//! and the parser refuses every later call with the same error.

use std::fmt;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Size caps and end-of-stream policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseLimits {
    /// Longest line, in bytes, without its terminator.
    pub max_line_bytes: usize,
    /// Largest `data` buffer of one event, in bytes.
    pub max_event_bytes: usize,
    /// Dispatch a final event that has data but no blank line after it (see the module docs).
    pub lenient_eof: bool,
}

impl SseLimits {
    pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 << 20;
}

impl Default for SseLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: Self::DEFAULT_MAX_LINE_BYTES,
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
            lenient_eof: true,
        }
    }
}

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The data lines joined with LF.
    pub data: String,
    /// The last event ID in force when this event was dispatched (it persists across events).
    pub id: Option<String>,
    /// A valid `retry` field seen in this event's block, in milliseconds.
    pub retry: Option<u64>,
}

/// A dispatched event borrowed from the parser's buffers: `data` is raw bytes, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    pub event: Option<&'a str>,
    pub data: &'a [u8],
    pub id: Option<&'a str>,
    pub retry: Option<u64>,
}

impl RawEvent<'_> {
    pub fn to_event(&self) -> Event {
        Event {
            event: self.event.map(str::to_owned),
            data: String::from_utf8_lossy(self.data).into_owned(),
            id: self.id.map(str::to_owned),
            retry: self.retry,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// A line grew past `max_line_bytes` before its terminator arrived.
    LineTooLong { limit: usize },
    /// An event's data grew past `max_event_bytes` before its blank line arrived.
    EventTooLarge { limit: usize },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong { limit } => write!(f, "event stream line longer than {limit} bytes"),
            Self::EventTooLarge { limit } => write!(f, "event stream event larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for SseError {}

/// The incremental parser. See the module docs.
#[derive(Debug)]
pub struct SseParser {
    limits: SseLimits,
    /// Bytes of a line whose terminator has not arrived yet.
    line: Vec<u8>,
    /// The previous read ended with CR: a leading LF of the next read belongs to it.
    pending_cr: bool,
    /// How many BOM bytes matched at stream start; `None` once the BOM question is settled.
    bom_matched: Option<usize>,
    data: Vec<u8>,
    event_type: Option<String>,
    last_id: Option<String>,
    retry: Option<u64>,
    failed: Option<SseError>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(SseLimits::default())
    }
}

impl SseParser {
    pub fn new(limits: SseLimits) -> Self {
        Self {
            limits,
            line: Vec::new(),
            pending_cr: false,
            bom_matched: Some(0),
            data: Vec::new(),
            event_type: None,
            last_id: None,
            retry: None,
            failed: None,
        }
    }

    pub fn limits(&self) -> SseLimits {
        self.limits
    }

    /// Feed bytes; returns the events completed by them, in order.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut events = Vec::new();
        self.feed_with(input, &mut |ev| events.push(ev.to_event()))?;
        Ok(events)
    }

    /// End of stream: returns the last event if `lenient_eof` allows it (see the module docs), and resets the
    /// parser for a new stream (the last event ID is kept).
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.finish_with(&mut |ev| events.push(ev.to_event()));
        events
    }

    /// Like [`Self::feed`], but hands each event to `on_event` as borrowed bytes: no allocation per event.
    pub fn feed_with(&mut self, mut input: &[u8], on_event: &mut dyn FnMut(RawEvent<'_>)) -> Result<(), SseError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let result = self.feed_inner(&mut input, on_event);
        if let Err(err) = result {
            self.failed = Some(err);
        }
        result
    }

    /// Like [`Self::finish`], with borrowed events.
    pub fn finish_with(&mut self, on_event: &mut dyn FnMut(RawEvent<'_>)) {
        if self.failed.is_none() {
            if let Some(n) = self.bom_matched.take() {
                // A stream that ended inside a would-be BOM: those bytes were a line after all.
                self.line.extend_from_slice(&BOM[..n]);
            }
            if self.limits.lenient_eof {
                if !self.line.is_empty() {
                    let line = std::mem::take(&mut self.line);
                    // Size caps were checked as the line grew; a field error here cannot happen, but stay total.
                    let _ = self.process_line(&line, on_event);
                    self.line = line;
                }
                self.dispatch(on_event);
            }
        }
        self.line.clear();
        self.data.clear();
        self.event_type = None;
        self.retry = None;
        self.pending_cr = false;
        self.bom_matched = Some(0);
        self.failed = None;
    }

    fn feed_inner(&mut self, input: &mut &[u8], on_event: &mut dyn FnMut(RawEvent<'_>)) -> Result<(), SseError> {
        if let Some(n) = self.bom_matched {
            let mut matched = n;
            while matched < BOM.len() {
                match input.first() {
                    None => {
                        self.bom_matched = Some(matched);
                        return Ok(());
                    }
                    Some(&b) if b == BOM[matched] => {
                        matched += 1;
                        *input = &input[1..];
                    }
                    Some(_) => break,
                }
            }
            self.bom_matched = None;
            if matched < BOM.len() {
                // Not a BOM: the bytes taken so far start the first line.
                self.line.extend_from_slice(&BOM[..matched]);
            }
        }
        if self.pending_cr {
            if input.is_empty() {
                return Ok(());
            }
            self.pending_cr = false;
            if input[0] == b'\n' {
                *input = &input[1..];
            }
        }
        let mut rest: &[u8] = input;
        while let Some(pos) = memchr::memchr2(b'\r', b'\n', rest) {
            let terminator = rest[pos];
            let body = &rest[..pos];
            if self.line.is_empty() {
                self.check_line(body.len())?;
                self.process_line(body, on_event)?;
            } else {
                self.check_line(self.line.len() + body.len())?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(body);
                let result = self.process_line(&line, on_event);
                line.clear();
                self.line = line;
                result?;
            }
            rest = &rest[pos + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
        }
        if !rest.is_empty() {
            self.check_line(self.line.len() + rest.len())?;
            self.line.extend_from_slice(rest);
        }
        Ok(())
    }

    fn check_line(&self, len: usize) -> Result<(), SseError> {
        if len > self.limits.max_line_bytes {
            return Err(SseError::LineTooLong {
                limit: self.limits.max_line_bytes,
            });
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut dyn FnMut(RawEvent<'_>)) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return Ok(()), // a comment, e.g. a keep-alive
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.limits.max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.limits.max_event_bytes,
                    });
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => self.event_type = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" if memchr::memchr(0, value).is_none() => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            // All ASCII digits, so valid UTF-8; a value past u64 is ignored like any invalid one.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(ms) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(RawEvent<'_>)) {
        let event_type = self.event_type.take();
        let retry = self.retry.take();
        if self.data.is_empty() {
            return;
        }
        let end = self.data.len() - 1; // drop the LF after the last data line
        let event = event_type.as_deref().filter(|t| !t.is_empty());
        on_event(RawEvent {
            event,
            data: &self.data[..end],
            id: self.last_id.as_deref(),
            retry,
        });
        self.data.clear();
    }
}

/// Test helper: `input` cut into pieces of the given sizes, cycling through them (a size of 0 counts as 1),
/// as network reads would deliver it.
#[cfg(test)]
pub(crate) fn chunked<'a>(input: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = input;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        i += 1;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(data: &str) -> Event {
        Event {
            data: data.to_owned(),
            ..Event::default()
        }
    }

    fn parse_all(input: &[u8]) -> Vec<Event> {
        let mut p = SseParser::default();
        let mut out = p.feed(input).unwrap_or_default();
        out.extend(p.finish());
        out
    }

    fn parse_chunked(input: &[u8], sizes: &[usize]) -> Vec<Event> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for piece in chunked(input, sizes) {
            out.extend(p.feed(piece).unwrap_or_default());
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn basic_events_and_line_endings() {
        let got = parse_all(b"data: a\n\ndata:b\r\n\r\ndata: c\r\rdata: d\ndata: e\n\n");
        assert_eq!(got, vec![ev("a"), ev("b"), ev("c"), ev("d\ne")]);
    }

    #[test]
    fn comments_unknown_fields_and_empty_data() {
        let got = parse_all(b": keep-alive\n\nfoo: bar\ndata\n\ndata:\ndata:\n\n");
        assert_eq!(got, vec![ev(""), ev("\n")]);
    }

    #[test]
    fn only_one_space_is_stripped() {
        assert_eq!(parse_all(b"data:  two\n\n"), vec![ev(" two")]);
    }

    #[test]
    fn event_id_retry() {
        let got = parse_all(b"event: add\nid: 7\nretry: 1500\ndata: x\n\ndata: y\n\nid: a\0b\nretry: 12a\ndata: z\n\n");
        assert_eq!(
            got,
            vec![
                Event {
                    event: Some("add".into()),
                    data: "x".into(),
                    id: Some("7".into()),
                    retry: Some(1500)
                },
                Event {
                    event: None,
                    data: "y".into(),
                    id: Some("7".into()),
                    retry: None
                },
                Event {
                    event: None,
                    data: "z".into(),
                    id: Some("7".into()),
                    retry: None
                },
            ]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_resets_type() {
        assert_eq!(parse_all(b"event: x\n\ndata: y\n\n"), vec![ev("y")]);
    }

    #[test]
    fn bom_stripped_once_even_split() {
        let input = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n";
        let want = vec![ev("a")]; // the second BOM makes an unknown field name
        assert_eq!(parse_all(input), want);
        assert_eq!(parse_chunked(input, &[1]), want);
        assert_eq!(parse_chunked(input, &[2, 1]), want);
    }

    #[test]
    fn partial_bom_is_data() {
        assert_eq!(parse_chunked(b"\xEFdata: a\n\n", &[1]), vec![]);
        assert_eq!(parse_chunked(b"\xEF\xBB\n\ndata: a\n\n", &[1]), vec![ev("a")]);
    }

    #[test]
    fn cr_at_chunk_end_is_deferred() {
        let mut p = SseParser::default();
        let mut out = p.feed(b"data: a\r").unwrap_or_default();
        assert!(out.is_empty());
        out.extend(p.feed(b"\n").unwrap_or_default());
        assert!(out.is_empty(), "CRLF split across reads is one line ending");
        out.extend(p.feed(b"\r").unwrap_or_default());
        out.extend(p.feed(b"\n").unwrap_or_default());
        assert_eq!(out, vec![ev("a")]);
    }

    #[test]
    fn utf8_split_across_chunks() {
        let input = "data: héllo 🌍\n\n".as_bytes();
        assert_eq!(parse_chunked(input, &[1]), vec![ev("héllo 🌍")]);
        assert_eq!(parse_all(b"data: \xFFx\n\n"), vec![ev("\u{FFFD}x")]);
    }

    #[test]
    fn unicode_line_separators_are_not_line_endings() {
        assert_eq!(
            parse_all("data: a\u{2028}b\u{85}c\n\n".as_bytes()),
            vec![ev("a\u{2028}b\u{85}c")]
        );
    }

    #[test]
    fn eof_policy() {
        let input = b"data: a\n\ndata: tail";
        assert_eq!(parse_all(input), vec![ev("a"), ev("tail")]);
        let mut strict = SseParser::new(SseLimits {
            lenient_eof: false,
            ..SseLimits::default()
        });
        let mut out = strict.feed(input).unwrap_or_default();
        out.extend(strict.finish());
        assert_eq!(out, vec![ev("a")]);
        // A complete line without a blank line after it is also an unfinished event.
        assert_eq!(parse_all(b"data: x\n"), vec![ev("x")]);
    }

    #[test]
    fn caps_return_errors_and_stick() {
        let limits = SseLimits {
            max_line_bytes: 8,
            max_event_bytes: 64,
            lenient_eof: true,
        };
        let mut p = SseParser::new(limits);
        assert!(p.feed(b"data: 12").is_ok());
        assert_eq!(p.feed(b"3"), Err(SseError::LineTooLong { limit: 8 }));
        assert_eq!(p.feed(b"\n\n"), Err(SseError::LineTooLong { limit: 8 }));
        let mut p = SseParser::new(SseLimits {
            max_line_bytes: 16,
            max_event_bytes: 10,
            lenient_eof: true,
        });
        assert_eq!(
            p.feed(b"data: 12345\ndata: 6789\n"),
            Err(SseError::EventTooLarge { limit: 10 })
        );
        // finish() resets a failed parser for a new stream.
        let _ = p.finish();
        assert_eq!(p.feed(b"data: ok\n\n"), Ok(vec![ev("ok")]));
    }

    fn corpus() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"\xEF\xBB\xBF: hello\r\n");
        for i in 0..20 {
            let term: &[u8] = match i % 3 {
                0 => b"\n",
                1 => b"\r\n",
                _ => b"\r",
            };
            s.extend_from_slice(format!("id: {i}").as_bytes());
            s.extend_from_slice(term);
            s.extend_from_slice(format!("data: {{\"n\":{i},\"t\":\"é🌍\u{2028}\"}}").as_bytes());
            s.extend_from_slice(term);
            if i % 4 == 0 {
                s.extend_from_slice(b"event: x");
                s.extend_from_slice(term);
                s.extend_from_slice(b"data:second");
                s.extend_from_slice(term);
            }
            s.extend_from_slice(term);
        }
        s.extend_from_slice(b"data: [DONE]\n\ndata: trailing");
        s
    }

    #[test]
    fn one_byte_chunks_equal_whole() {
        let c = corpus();
        let whole = parse_all(&c);
        assert_eq!(whole.len(), 22);
        assert_eq!(parse_chunked(&c, &[1]), whole);
    }

    proptest! {
        #[test]
        fn any_chunking_equals_whole(sizes in proptest::collection::vec(1usize..64, 1..32)) {
            let c = corpus();
            prop_assert_eq!(parse_chunked(&c, &sizes), parse_all(&c));
        }

        #[test]
        fn arbitrary_bytes_never_fail_and_chunking_is_invariant(
            data in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '),
                Just(b'd'), Just(b'a'), Just(b't'), Just(0xEFu8), Just(0xBBu8), Just(0xBFu8), any::<u8>()], 0..200),
            sizes in proptest::collection::vec(1usize..16, 1..8),
        ) {
            prop_assert_eq!(parse_chunked(&data, &sizes), parse_all(&data));
        }
    }
}
