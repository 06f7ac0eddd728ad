//! The audit record's canonical text and its access-log line, made in one pass for the request path.
//!
//! The reference is Python's `workjet_fast/audit/record.py`: `normalise` picks the fields, `canonical` writes
//! them with orjson (sorted keys, compact), `access_log_line` writes the access log's subset in its own order.
//! The glue (`py/audit.rs`) hands over only records whose values already have the types `normalise` would keep
//! unchanged; everything else takes the Python path. So the bytes here must be orjson's: strings escaped as it
//! escapes them, floats in its notation (fixed from 1e-5 up to 1e16, else `1.5e-7` / `1e+16`).
//! `tests/test_audit_fast.py` compares the two paths on generated records.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// One JSON scalar of the record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

/// The record's fields in `record.FIELDS` order; `attempts` and `dlp_findings` are lists, held apart.
pub const FIELDS: [&str; 26] = [
    "request_id",
    "client",
    "started_at",
    "path",
    "key_id",
    "key_name",
    "user",
    "requested_model",
    "route_kind",
    "served_by",
    "served_model",
    "attempts",
    "status",
    "error_code",
    "stream",
    "upstream_ttfb_ms",
    "upstream_ms",
    "prompt_tokens",
    "prompt_tokens_source",
    "completion_tokens",
    "completion_tokens_source",
    "finish_reason",
    "dlp_findings",
    "dlp_state",
    "ended_at",
    "latency_ms",
];
pub const ATTEMPTS: usize = 11;
pub const FINDINGS: usize = 22;
const REQUEST_ID: usize = 0;
const STARTED_AT: usize = 2;
const KEY_ID: usize = 4;
const KEY_NAME: usize = 5;
const REQUESTED_MODEL: usize = 7;
const SERVED_BY: usize = 9;
const STATUS: usize = 12;
const ENDED_AT: usize = 24;
/// The audit table's indexed columns, as `record.columns` returns them: request_id, started_at, key_id,
/// key_name, requested_model, served_by, status.
pub const COLUMNS: [usize; 7] = [
    REQUEST_ID,
    STARTED_AT,
    KEY_ID,
    KEY_NAME,
    REQUESTED_MODEL,
    SERVED_BY,
    STATUS,
];

/// How `record.normalise` treats each field. A value it would change is not `keeps`: the record then takes the
/// Python path, so the two paths cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Kept as is: any JSON scalar.
    Any,
    /// `request_id`: a non-empty ASCII string without NUL (an empty one gets a new id).
    Id,
    /// Indexed text columns: None, or ASCII without NUL (anything else is made storable).
    Text,
    /// `_NUMBERS`: None, or a float within ±1e300 (ints become floats, others None).
    Number,
    /// `started_at`: a non-zero float within ±1e300 (None takes `ended_at or 0.0`, and the column of a zero is
    /// `float(0.0 or 0.0)`, which drops the sign of -0.0).
    Start,
    /// `status`: None, or an int that fits an INTEGER column.
    Status,
    /// Token counts: None, or an int in 0..2^63.
    Count,
    /// `attempts` and `dlp_findings`, read apart.
    List,
}

impl Kind {
    pub fn keeps(self, v: Value<'_>) -> bool {
        match (self, v) {
            (Kind::Any, _) => true,
            (Kind::Id, Value::Str(s)) => !s.is_empty() && plain_text(s),
            (Kind::Text, Value::Str(s)) => plain_text(s),
            (Kind::Text | Kind::Number | Kind::Status | Kind::Count, Value::Null) => true,
            (Kind::Number, Value::Float(f)) => -1e300 < f && f < 1e300,
            (Kind::Start, Value::Float(f)) => f != 0.0 && -1e300 < f && f < 1e300,
            (Kind::Status, Value::Int(i)) => i32::try_from(i).is_ok(),
            (Kind::Count, Value::Int(i)) => i >= 0,
            _ => false,
        }
    }
}

fn plain_text(s: &str) -> bool {
    s.is_ascii() && !s.contains('\0')
}

/// Each field's `Kind`, by `FIELDS` index.
pub const KINDS: [Kind; 26] = {
    use Kind::{Any, Count, Id, List, Number, Start, Status, Text};
    [
        Id, Any, Start, Any, Text, Text, Any, Text, Any, Text, Any, List, Status, Any, Any, Number, Number, Count, Any,
        Count, Any, Any, List, Any, Number, Number,
    ]
};

/// An attempt's fields, in `record._ATTEMPT_FIELDS` order.
pub const ATTEMPT_FIELDS: [&str; 5] = ["deployment", "outcome", "status", "latency_ms", "error"];
/// A DLP finding's fields, in `record._FINDING_FIELDS` order (never the matched value).
pub const FINDING_FIELDS: [&str; 5] = ["rule_id", "entity", "count", "direction", "action"];

/// Indexes into `FIELDS`, in the sorted order of the names (orjson's `OPT_SORT_KEYS`).
const SORTED: [usize; 26] = [
    11, 1, 19, 20, 22, 23, 24, 13, 21, 4, 5, 25, 3, 17, 18, 0, 7, 8, 9, 10, 2, 12, 14, 16, 15, 6,
];
const ATTEMPT_SORTED: [usize; 5] = [0, 4, 3, 1, 2];
const FINDING_SORTED: [usize; 5] = [4, 2, 3, 1, 0];

/// Where an access-log field comes from.
#[derive(Clone, Copy)]
enum Source {
    Field(usize),
    /// `ended_at or started_at`.
    Ts,
}

/// The access log's fields, in the line's order.
const ACCESS: [(&str, Source); 15] = [
    ("request_id", Source::Field(REQUEST_ID)),
    ("ts", Source::Ts),
    ("client", Source::Field(1)),
    ("path", Source::Field(3)),
    ("key_id", Source::Field(KEY_ID)),
    ("model", Source::Field(REQUESTED_MODEL)),
    ("served_by", Source::Field(SERVED_BY)),
    ("status", Source::Field(STATUS)),
    ("error_code", Source::Field(13)),
    ("stream", Source::Field(14)),
    ("latency_ms", Source::Field(25)),
    ("upstream_ms", Source::Field(16)),
    ("prompt_tokens", Source::Field(17)),
    ("completion_tokens", Source::Field(19)),
    ("dlp_state", Source::Field(23)),
];

/// A record as `normalise` returns it (without bodies).
#[derive(Clone, Debug, PartialEq)]
pub struct Record<'a> {
    /// By `FIELDS` index; the `ATTEMPTS` and `FINDINGS` slots are not read.
    pub fields: [Value<'a>; 26],
    pub attempts: Vec<[Value<'a>; 5]>,
    pub findings: Vec<[Value<'a>; 5]>,
}

impl<'a> Record<'a> {
    /// The canonical text: what is stored and what the hash chain covers.
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(768);
        out.push('{');
        for (n, &i) in SORTED.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            key(&mut out, FIELDS[i]);
            match i {
                ATTEMPTS => objects(&mut out, &self.attempts, &ATTEMPT_FIELDS, &ATTEMPT_SORTED),
                FINDINGS => objects(&mut out, &self.findings, &FINDING_FIELDS, &FINDING_SORTED),
                _ => value(&mut out, self.fields[i]),
            }
        }
        out.push('}');
        out
    }

    /// The JSON access-log line, newline-terminated: no bodies, no key, no findings.
    pub fn access_line(&self) -> String {
        let mut out = String::with_capacity(384);
        out.push('{');
        for (n, &(name, i)) in ACCESS.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            key(&mut out, name);
            let v = match i {
                Source::Field(i) => self.fields[i],
                Source::Ts => self.ts(),
            };
            value(&mut out, v);
        }
        out.push_str("}\n");
        out
    }

    /// `ended_at or started_at`: `ended_at` is a `Kind::Number`, so None and ±0.0 are its falsy values.
    fn ts(&self) -> Value<'a> {
        match self.fields[ENDED_AT] {
            Value::Null | Value::Float(0.0) => self.fields[STARTED_AT],
            v => v,
        }
    }
}

fn key(out: &mut String, name: &str) {
    string(out, name);
    out.push(':');
}

fn objects(out: &mut String, items: &[[Value<'_>; 5]], names: &[&str; 5], order: &[usize; 5]) {
    out.push('[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push('{');
        for (m, &i) in order.iter().enumerate() {
            if m > 0 {
                out.push(',');
            }
            key(out, names[i]);
            value(out, item[i]);
        }
        out.push('}');
    }
    out.push(']');
}

fn value(out: &mut String, v: Value<'_>) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(i) => out.push_str(itoa::Buffer::new().format(i)),
        Value::Float(f) => float(out, f),
        Value::Str(s) => string(out, s),
    }
}

/// A JSON string as orjson writes it: `"` and `\` escaped, control characters as `\n`-style or `\u00xx`
/// escapes, everything else (DEL, non-ASCII, `/`) as is.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    // Most texts need no escape: one pass without early exit (it vectorises), then one copy.
    if s.bytes()
        .fold(true, |plain, b| plain & (b >= 0x20 && b != b'"' && b != b'\\'))
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A float as orjson writes it: the shortest digits that read back the same (ryu), in fixed notation when the
/// decimal exponent is in -5..16 (`12345.0`, `0.00001`), else scientific (`1.5e-7`, `1e+16`). Not finite: null.
pub fn float(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push_str("null");
        return;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(f.abs());
    if f.is_sign_negative() {
        out.push('-');
    }
    if text.contains('e') {
        from_digits(out, text);
    } else {
        // ryu writes fixed notation for the same exponents (-5..16) and with the same digits as orjson (a test
        // holds it to `from_digits` for any float).
        out.push_str(text);
    }
}

/// orjson's text of a non-negative float from ryu's text of it (`float` without the sign).
fn from_digits(out: &mut String, text: &str) {
    let (digits, exp) = shortest(text);
    if digits.is_empty() {
        out.push_str("0.0");
        return;
    }
    // value = 0.d1d2d3... x 10^(exp + 1), i.e. d1.d2d3... x 10^exp
    if (-5..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{}", if exp > 0 { "+" } else { "" }, exp);
    }
}

/// ryu's text of a non-negative finite float as (significant digits without leading or trailing zeros, decimal
/// exponent of the first digit); zero gives no digits.
fn shortest(text: &str) -> (String, i32) {
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)), // ryu writes a plain integer exponent
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int_part.chars().chain(frac_part.chars()).collect();
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0').to_string();
    // The first digit of `all` has exponent int_part.len() - 1 (+ exp); each leading zero lowers it by one.
    let first = int_part.len() as i32 - 1 + exp - lead as i32;
    (digits, first)
}

/// The `hash` of each row of a run of one chain, as `chain.row_hash` makes it: the hex SHA-256 of
/// `chain_id \n seq \n prev_hash \n record`. Rows are numbered from `first_seq`; the first links to `prev`, and
/// each hash is the next row's `prev_hash`. The audit writer links a batch in one call instead of a Python loop.
pub fn chain_hashes<S: AsRef<str>>(chain_id: &str, first_seq: u64, prev: &str, records: &[S]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(records.len());
    let mut prefix = String::new();
    for (seq, record) in (first_seq..).zip(records) {
        prefix.clear();
        let _ = write!(
            prefix,
            "{chain_id}\n{seq}\n{}\n",
            out.last().map_or(prev, String::as_str)
        );
        let mut h = Sha256::new();
        h.update(prefix.as_bytes());
        h.update(record.as_ref().as_bytes());
        out.push(hex(&h.finalize()));
    }
    out
}

/// Lower-case hex of `bytes`, as Python's `hexdigest()` writes it.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn ryus_fixed_notation_is_orjsons(bits in proptest::num::u64::ANY) {
            let x = f64::from_bits(bits).abs();
            proptest::prop_assume!(x.is_finite());
            let mut general = String::new();
            from_digits(&mut general, ryu::Buffer::new().format_finite(x));
            proptest::prop_assert_eq!(f(x), general);
        }

        #[test]
        fn plain_and_escaped_strings_agree(s in "[a-z\"\\\\\u{0}-\u{1f}é ]{0,40}") {
            // The one-copy path for plain texts and the escaping path write the same as escaping every text.
            let mut fast = String::new();
            string(&mut fast, &s);
            let mut slow = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => slow.push_str("\\\""),
                    '\\' => slow.push_str("\\\\"),
                    '\n' => slow.push_str("\\n"),
                    '\r' => slow.push_str("\\r"),
                    '\t' => slow.push_str("\\t"),
                    '\u{8}' => slow.push_str("\\b"),
                    '\u{c}' => slow.push_str("\\f"),
                    c if (c as u32) < 0x20 => slow.push_str(&format!("\\u{:04x}", c as u32)),
                    c => slow.push(c),
                }
            }
            slow.push('"');
            proptest::prop_assert_eq!(fast, slow);
        }
    }

    fn f(x: f64) -> String {
        let mut s = String::new();
        float(&mut s, x);
        s
    }

    #[test]
    fn floats_as_orjson_writes_them() {
        // Each pair was printed by orjson 3.13 (`orjson.dumps(x)`).
        let cases = [
            (1e16, "1e+16"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-7, "1e-7"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1795652047.0854225, "1795652047.0854225"),
            (5e-324, "5e-324"),
            (1e300, "1e+300"),
            (0.018156999, "0.018156999"),
            (12345.0, "12345.0"),
            (1e15, "1000000000000000.0"),
            (1.5e-5, "0.000015"),
            (100.0, "100.0"),
            (1e-6, "1e-6"),
            (9.99e-7, "9.99e-7"),
            (1e-5, "0.00001"),
            (9999999999999998.0, "9999999999999998.0"),
            (1.5e16, "1.5e+16"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (2.5e-300, "2.5e-300"),
            (1234567.125, "1234567.125"),
            (-1.5e-7, "-1.5e-7"),
            (0.3, "0.3"),
        ];
        for (x, want) in cases {
            assert_eq!(f(x), want, "{x:?}");
        }
        assert_eq!(f(f64::NAN), "null");
        assert_eq!(f(f64::INFINITY), "null");
    }

    #[test]
    fn strings_escape_as_orjson_does() {
        let mut s = String::new();
        string(&mut s, "\u{1}\u{1f}\u{7f}\u{2028}é\"\\/\t\u{8}\u{c}\r\n");
        assert_eq!(s, "\"\\u0001\\u001f\u{7f}\u{2028}é\\\"\\\\/\\t\\b\\f\\r\\n\"");
    }

    #[test]
    fn sorted_orders_are_the_names_sorted() {
        let names: Vec<&str> = SORTED.iter().map(|&i| FIELDS[i]).collect();
        let mut want = FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(names, want);
        for (order, fields) in [(ATTEMPT_SORTED, ATTEMPT_FIELDS), (FINDING_SORTED, FINDING_FIELDS)] {
            let names: Vec<&str> = order.iter().map(|&i| fields[i]).collect();
            let mut want = fields.to_vec();
            want.sort_unstable();
            assert_eq!(names, want);
        }
    }

    #[test]
    fn kinds_keep_only_what_normalise_keeps() {
        assert_eq!(KINDS[REQUEST_ID], Kind::Id);
        assert_eq!(KINDS[ATTEMPTS], Kind::List);
        assert_eq!(KINDS[FINDINGS], Kind::List);
        assert_eq!(FIELDS[STARTED_AT], "started_at");
        assert_eq!(
            COLUMNS.map(|i| FIELDS[i]),
            [
                "request_id",
                "started_at",
                "key_id",
                "key_name",
                "requested_model",
                "served_by",
                "status"
            ]
        );
        assert!(Kind::Id.keeps(Value::Str("wj-1")));
        assert!(!Kind::Id.keeps(Value::Str("")) && !Kind::Id.keeps(Value::Null));
        assert!(!Kind::Text.keeps(Value::Str("clé")) && !Kind::Text.keeps(Value::Str("a\0b")));
        assert!(Kind::Text.keeps(Value::Null) && Kind::Text.keeps(Value::Str("team")));
        assert!(Kind::Number.keeps(Value::Float(0.5)) && !Kind::Number.keeps(Value::Int(1)));
        assert!(!Kind::Number.keeps(Value::Float(1e300)) && !Kind::Number.keeps(Value::Float(-1e300)));
        assert!(Kind::Start.keeps(Value::Float(1.7e9)) && !Kind::Start.keeps(Value::Null));
        assert!(!Kind::Start.keeps(Value::Float(0.0)) && !Kind::Start.keeps(Value::Float(-0.0)));
        assert!(Kind::Status.keeps(Value::Int(-(1 << 31))) && !Kind::Status.keeps(Value::Int(1 << 31)));
        assert!(!Kind::Status.keeps(Value::Bool(true)));
        assert!(Kind::Count.keeps(Value::Int(0)) && !Kind::Count.keeps(Value::Int(-1)));
        assert!(Kind::Any.keeps(Value::Float(1e308)));
        assert!(!Kind::List.keeps(Value::Null));
        for (name, source) in ACCESS {
            if let Source::Field(i) = source {
                assert_eq!(if name == "model" { "requested_model" } else { name }, FIELDS[i]);
            }
        }
    }

    fn record() -> Record<'static> {
        let mut fields = [Value::Null; 26];
        fields[0] = Value::Str("wj-1");
        fields[STARTED_AT] = Value::Float(10.5);
        fields[12] = Value::Int(200);
        fields[14] = Value::Bool(false);
        fields[ENDED_AT] = Value::Float(11.25);
        Record {
            fields,
            attempts: vec![[
                Value::Str("openai/m"),
                Value::Str("ok"),
                Value::Int(200),
                Value::Float(0.5),
                Value::Null,
            ]],
            findings: vec![],
        }
    }

    #[test]
    fn canonical_sorts_keys_and_nests_lists() {
        let text = record().canonical();
        assert!(text.starts_with(
            "{\"attempts\":[{\"deployment\":\"openai/m\",\"error\":null,\"latency_ms\":0.5,\"outcome\":\"ok\",\
             \"status\":200}],\"client\":null,"
        ));
        assert!(text.contains(",\"dlp_findings\":[],"));
        assert!(text.ends_with(",\"upstream_ttfb_ms\":null,\"user\":null}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["ended_at"], 11.25);
        assert_eq!(v.as_object().map(|o| o.len()), Some(26));
    }

    #[test]
    fn access_line_takes_ended_at_or_else_started_at() {
        let mut rec = record();
        assert!(
            rec.access_line()
                .starts_with("{\"request_id\":\"wj-1\",\"ts\":11.25,\"client\":null,")
        );
        assert!(rec.access_line().ends_with(",\"dlp_state\":null}\n"));
        rec.fields[ENDED_AT] = Value::Float(0.0);
        assert!(rec.access_line().contains("\"ts\":10.5,"));
        rec.fields[ENDED_AT] = Value::Null;
        assert!(rec.access_line().contains("\"ts\":10.5,"));
    }

    #[test]
    fn chain_hashes_link_each_row_to_the_one_before() {
        // Known values, from Python: hashlib.sha256(b"c\n1\n" + b"0" * 64 + b"\n{}").hexdigest(), and so on.
        let genesis = "0".repeat(64);
        let got = chain_hashes("c", 1, &genesis, &["{}", "{\"a\":\"\u{e9}\"}"]);
        assert_eq!(
            got[0],
            "a3691b98c44054285e4c1d726b7af6a9339d26c54bc7645c38a17a162b4bb57e"
        );
        let second = hex(&Sha256::digest(
            format!("c\n2\n{}\n{{\"a\":\"\u{e9}\"}}", got[0]).as_bytes(),
        ));
        assert_eq!(got[1], second);
        assert!(chain_hashes::<&str>("c", 1, &genesis, &[]).is_empty());
        assert_eq!(hex(&[0, 15, 16, 255]), "000f10ff");
    }
}
