//! An HTTP/1.1 response head (status line and headers) built in one pass, by uvicorn's rules.
//!
//! uvicorn writes a response head by walking the headers in Python: two regular expressions, a lower-casing and
//! three comparisons per header, about a microsecond each. The gateway's answers carry a dozen headers (OpenAI's
//! six rate-limit headers among them), so the walk costs more than everything else uvicorn does for a response.
//! `HeadBuilder` produces the same bytes for the headers it accepts, and accepts only the plain cases: a name or
//! value uvicorn would reject, a `connection` or `transfer-encoding` header, or a `content-length` that is not
//! plain digits or appears twice, make it give up, and then uvicorn's own code writes the head and decides.

/// A byte uvicorn refuses in a header name (its `HEADER_RE`): controls, DEL, separators, space, tab.
fn bad_name_byte(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b"()<>@,;:[]={} \\\"".contains(&b)
}

/// A byte uvicorn refuses in a header value (its `HEADER_VALUE_RE`): controls other than tab, and DEL.
fn bad_value_byte(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Bodies up to this many decimal digits, so every length fits an i64 (a longer one is not plain).
const MAX_LENGTH_DIGITS: usize = 18;

/// The head being built; `push` each header in order, then `finish`.
pub struct HeadBuilder {
    buf: Vec<u8>,
    content_length: Option<u64>,
    plain: bool,
}

/// A finished head: the bytes to write, and the body length it declares (None: the body goes chunked).
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub bytes: Vec<u8>,
    pub content_length: Option<u64>,
}

impl HeadBuilder {
    pub fn new(status_line: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(status_line);
        Self {
            buf,
            content_length: None,
            plain: true,
        }
    }

    /// Add one header; false (and every later call a no-op) when uvicorn's own code must write this head.
    pub fn push(&mut self, name: &[u8], value: &[u8]) -> bool {
        if !self.plain {
            return false;
        }
        if name.iter().any(|&b| bad_name_byte(b)) || value.iter().any(|&b| bad_value_byte(b)) {
            return self.give_up();
        }
        let start = self.buf.len();
        self.buf.extend(name.iter().map(u8::to_ascii_lowercase));
        let lower = &self.buf[start..];
        if lower == b"connection" || lower == b"transfer-encoding" {
            return self.give_up();
        }
        if lower == b"content-length" {
            match (self.content_length, parse_length(value)) {
                (None, Some(n)) => self.content_length = Some(n),
                _ => return self.give_up(),
            }
        }
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        true
    }

    fn give_up(&mut self) -> bool {
        self.plain = false;
        false
    }

    /// The head, or None when some header was not plain. `keep_alive: false` adds `connection: close`; a head
    /// without a content-length announces a chunked body (the caller does not use this for HEAD, 204 or 304).
    pub fn finish(mut self, keep_alive: bool) -> Option<Head> {
        if !self.plain {
            return None;
        }
        if !keep_alive {
            self.buf.extend_from_slice(b"connection: close\r\n");
        }
        if self.content_length.is_none() {
            self.buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        self.buf.extend_from_slice(b"\r\n");
        Some(Head {
            bytes: self.buf,
            content_length: self.content_length,
        })
    }
}

/// ASCII digits only (uvicorn's `int(value.decode())` also takes signs, spaces and underscores: not plain).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > MAX_LENGTH_DIGITS || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value
        .iter()
        .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&[u8], &[u8])], keep_alive: bool) -> Option<Head> {
        let mut b = HeadBuilder::new(b"HTTP/1.1 200 OK\r\n");
        for (n, v) in headers {
            b.push(n, v);
        }
        b.finish(keep_alive)
    }

    #[test]
    fn plain_headers_are_lower_cased_in_order() {
        let h = head(
            &[
                (b"Content-Type", b"application/json"),
                (b"content-length", b"12"),
                (b"X-Request-Id", b"Ab\tC"),
            ],
            true,
        );
        let expected = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\
                         x-request-id: Ab\tC\r\n\r\n";
        assert_eq!(
            h,
            Some(Head {
                bytes: expected.to_vec(),
                content_length: Some(12)
            })
        );
    }

    #[test]
    fn no_length_means_chunked_and_closing_connections_say_so() {
        let h = head(&[(b"content-type", b"text/event-stream")], false);
        let expected = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\
                         transfer-encoding: chunked\r\n\r\n";
        assert_eq!(h.as_ref().map(|h| h.bytes.as_slice()), Some(&expected[..]));
        assert_eq!(h.and_then(|h| h.content_length), None);
    }

    #[test]
    fn anything_uvicorn_treats_specially_is_left_to_it() {
        let cases: &[&[(&[u8], &[u8])]] = &[
            &[(b"bad name", b"x")],
            &[(b"x(", b"x")],
            &[(b"x", b"a\r\nb")],
            &[(b"x", b"\x7f")],
            &[(b"Connection", b"close")],
            &[(b"transfer-encoding", b"chunked")],
            &[(b"content-length", b" 12")],
            &[(b"content-length", b"+12")],
            &[(b"content-length", b"")],
            &[(b"content-length", b"99999999999999999999")],
            &[(b"content-length", b"1"), (b"content-length", b"1")],
        ];
        for case in cases {
            assert_eq!(head(case, true), None, "{case:?}");
        }
    }

    #[test]
    fn every_byte_is_judged_as_uvicorn_judges_it() {
        let name_ok = |b: u8| !(b < 0x20 || b == 0x7f || b"()<>@,;:[]={} \t\\\"".contains(&b));
        let value_ok = |b: u8| !(b <= 0x08 || (0x0a..=0x1f).contains(&b) || b == 0x7f);
        for b in 0..=255u8 {
            assert_eq!(!bad_name_byte(b), name_ok(b), "name byte {b}");
            assert_eq!(!bad_value_byte(b), value_ok(b), "value byte {b}");
        }
    }

    #[test]
    fn lengths_are_plain_digits_within_u64() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"1000000000000000000"), None); // 19 digits: uvicorn decides
        assert_eq!(parse_length(b"999999999999999999"), Some(999_999_999_999_999_999));
        assert_eq!(parse_length(b"1_0"), None);
        assert_eq!(parse_length(b"\xd9\xa1"), None); // a non-ASCII digit, which Python's int() would take
    }
}
