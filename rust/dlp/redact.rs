//! Redaction: findings -> `[REDACTED:<ENTITY>]`, and the per-request call that scans every message text once.

use super::DlpError;
use super::engine::{Engine, ceil_char, floor_char};
use super::policy::{Direction, Policy};
use super::rules::Action;

/// The replacement for a finding of `entity`.
pub fn marker(entity: &str) -> String {
    format!("[REDACTED:{entity}]")
}

/// Replaces each byte span `(start, end, entity)` with its marker. Spans may come in any order; overlapping spans
/// are merged (the merged span takes the first span's entity); spans are widened to whole UTF-8 characters.
/// A span outside the text or with `start > end` is an error.
pub fn redact(text: &str, spans: &[(usize, usize, &str)]) -> Result<String, DlpError> {
    let hay = text.as_bytes();
    let mut sorted: Vec<(usize, usize, &str)> = Vec::with_capacity(spans.len());
    for &(s, e, ent) in spans {
        if s > e || e > hay.len() {
            return Err(DlpError::Span(format!(
                "{s}..{e} does not fit a text of {} bytes",
                hay.len()
            )));
        }
        if s < e {
            sorted.push((floor_char(hay, s), ceil_char(hay, e), ent));
        }
    }
    sorted.sort_by_key(|&(s, e, _)| (s, std::cmp::Reverse(e)));
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut i = 0;
    while i < sorted.len() {
        let (s, mut e, ent) = sorted[i];
        i += 1;
        while i < sorted.len() && sorted[i].0 < e {
            e = e.max(sorted[i].1);
            i += 1;
        }
        out.push_str(&text[pos..s]);
        out.push_str(&marker(ent));
        pos = e;
    }
    out.push_str(&text[pos..]);
    Ok(out)
}

/// Converts sorted, non-overlapping byte spans to char offsets in one pass.
pub fn char_spans(text: &str, spans: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(spans.len());
    let (mut byte, mut chars) = (0usize, 0usize);
    let mut advance = |to: usize| {
        let to = to.min(text.len());
        if to >= byte {
            chars += text.as_bytes()[byte..to].iter().filter(|&&b| b & 0xC0 != 0x80).count();
        } else {
            chars -= text.as_bytes()[to..byte].iter().filter(|&&b| b & 0xC0 != 0x80).count();
        }
        byte = to;
        chars
    };
    for &(s, e) in spans {
        let cs = advance(s);
        let ce = advance(e);
        out.push((cs, ce));
    }
    out
}

/// The outcome of one request: the decision, the redacted texts, counts per (rule, action), value hashes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    pub blocked: bool,
    /// The texts with redactions applied, or `None` when nothing was redacted.
    pub texts: Option<Vec<String>>,
    /// (rule index, action, count), in rule order.
    pub findings: Vec<(usize, Action, usize)>,
    /// (rule index, HMAC-SHA256 hex) per finding, when the policy has a key.
    pub value_hmacs: Vec<(usize, String)>,
}

/// Applies `policy` to `text`: the redacted text (or `None` if unchanged), the findings, whether one blocks.
pub(crate) fn apply_one(
    engine: &Engine,
    text: &str,
    policy: &Policy,
    actions: &[Action],
) -> (Option<String>, Vec<super::Finding>, bool) {
    let findings = engine.scan_actions(text, policy, actions);
    let spans: Vec<(usize, usize, &str)> = findings
        .iter()
        .filter(|f| f.action == Action::Redact)
        .map(|f| (f.start, f.end, engine.rule(f.rule).entity.as_str()))
        .collect();
    let blocked = findings.iter().any(|f| f.action == Action::Block);
    // Spans come from the scanner over this very text: they always fit.
    let redacted = if spans.is_empty() {
        None
    } else {
        redact(text, &spans).ok()
    };
    (redacted, findings, blocked)
}

/// The per-request call: every message text of one request, scanned once each.
pub fn apply(engine: &Engine, texts: &[&str], policy: &Policy, dir: Direction) -> ApplyResult {
    let mut res = ApplyResult::default();
    let mut counts: Vec<(usize, Action, usize)> = Vec::new();
    let mut out_texts: Vec<Option<String>> = Vec::with_capacity(texts.len());
    let mut any = false;
    let actions = engine.actions(policy, dir);
    for text in texts {
        let (redacted, findings, blocked) = apply_one(engine, text, policy, &actions);
        res.blocked |= blocked;
        any |= redacted.is_some();
        out_texts.push(redacted);
        for f in &findings {
            match counts.iter_mut().find(|(r, a, _)| *r == f.rule && *a == f.action) {
                Some(c) => c.2 += 1,
                None => counts.push((f.rule, f.action, 1)),
            }
            if let Some(h) = policy.value_hmac(&text.as_bytes()[f.start..f.end]) {
                res.value_hmacs.push((f.rule, h));
            }
        }
    }
    counts.sort_by_key(|&(r, a, _)| (r, a));
    res.findings = counts;
    if any {
        res.texts = Some(
            out_texts
                .into_iter()
                .zip(texts)
                .map(|(r, t)| r.unwrap_or_else(|| (*t).to_owned()))
                .collect(),
        );
    }
    res
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_is_utf8_safe() {
        let t = "héllo wörld";
        assert_eq!(redact(t, &[(0, 3, "A"), (2, 6, "B")]).unwrap(), "[REDACTED:A] wörld");
        assert_eq!(redact(t, &[(8, 9, "C")]).unwrap(), "héllo w[REDACTED:C]rld");
        assert!(redact(t, &[(0, 99, "A")]).is_err());
    }

    #[test]
    fn char_offsets() {
        let t = "é ab é cd";
        assert_eq!(char_spans(t, &[(3, 5), (9, 11)]), vec![(2, 4), (7, 9)]);
    }

    #[test]
    fn apply_counts() {
        let e = Engine::new(None, "regex").unwrap();
        let p = Policy::new(&[], &[], &[], &[], Some(b"k")).unwrap();
        let r = apply(
            &e,
            &["mail a@b.example and c@d.example", "fine"],
            &p,
            Direction::Request,
        );
        assert!(!r.blocked);
        assert_eq!(
            r.texts.unwrap(),
            vec![
                "mail [REDACTED:EMAIL] and [REDACTED:EMAIL]".to_owned(),
                "fine".to_owned()
            ]
        );
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].2, 2);
        assert_eq!(r.value_hmacs.len(), 2);
        let r = apply(
            &e,
            &["token ghp_ZyXwVuTsRqPoNmLkJiHgFeDcBa0123456789"],
            &p,
            Direction::Request,
        );
        assert!(r.blocked);
    }
}
