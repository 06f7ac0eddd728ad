//! Conformance tests: the shared corpus (`corpus.json`, also read by `tests/dlp_corpus.py`), the differential
//! test between engines, and the streaming invariant.

use std::sync::Arc;

use proptest::prelude::*;

use super::engine::Engine;
use super::policy::{Direction, Policy};
use super::redact::{apply, marker};
use super::rules::Action;
use super::stream::StreamScanner;
use crate::filter::TextFilter;

type Corpus = Vec<(String, Vec<(String, String)>, Vec<String>)>;

fn corpus() -> Corpus {
    let v: serde_json::Value = serde_json::from_str(include_str!("corpus.json")).unwrap();
    let obj = v.as_object().unwrap();
    obj.iter()
        .map(|(rule, e)| {
            let matches = e["match"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()))
                .collect();
            let misses = e["miss"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            (rule.clone(), matches, misses)
        })
        .collect()
}

fn engines() -> Vec<Arc<Engine>> {
    let mut v = vec![Arc::new(Engine::new(None, "regex").unwrap())];
    if cfg!(feature = "hyperscan") {
        v.push(Arc::new(Engine::new(None, "hyperscan").unwrap()));
    }
    v
}

fn found(e: &Engine, text: &str) -> Vec<(String, usize, usize)> {
    e.scan(text)
        .iter()
        .map(|f| (e.rule(f.rule).id.clone(), f.start, f.end))
        .collect()
}

#[test]
fn every_builtin_rule_has_examples() {
    let c = corpus();
    let e = Engine::new(None, "regex").unwrap();
    for r in e.rules() {
        let entry = c.iter().find(|(id, _, _)| *id == r.rule.id);
        let Some((_, m, n)) = entry else {
            panic!("no corpus entry for {}", r.rule.id)
        };
        assert!(!m.is_empty() && !n.is_empty(), "{}", r.rule.id);
    }
}

#[test]
fn vectorscan_takes_every_builtin_rule() {
    for e in engines() {
        assert_eq!(e.hyperscan_fallback_rules(), Vec::<&str>::new());
    }
}

#[test]
fn corpus_matches_and_near_misses() {
    for e in engines() {
        for (rule, matches, misses) in corpus() {
            for (example, value) in &matches {
                let text = format!("Here it is: {example} (thanks).");
                let f = found(&e, &text);
                assert!(
                    f.iter().any(|(id, s, en)| *id == rule && &text[*s..*en] == value),
                    "{} engine: rule {rule} missed {example:?}: {f:?}",
                    e.kind().as_str()
                );
            }
            for miss in &misses {
                let text = format!("Here it is: {miss} (thanks).");
                let f = found(&e, &text);
                assert!(
                    !f.iter().any(|(id, _, _)| *id == rule),
                    "rule {rule} matched near-miss {miss:?}: {f:?}"
                );
            }
        }
    }
}

/// What the stream must have released in total: the batch result, cut at the first blocking finding.
fn expected_stream(e: &Engine, policy: &Policy, text: &str) -> (String, bool) {
    let mut out = String::new();
    let mut pos = 0;
    for f in e.scan_with(text, policy, Direction::Response) {
        match f.action {
            Action::Redact => {
                out.push_str(&text[pos..f.start]);
                out.push_str(&marker(&e.rule(f.rule).entity));
                pos = f.end;
            }
            Action::Block => {
                out.push_str(&text[pos..f.start]);
                return (out, true);
            }
            _ => {}
        }
    }
    out.push_str(&text[pos..]);
    (out, false)
}

fn run_stream(e: &Arc<Engine>, policy: &Arc<Policy>, chunks: &[&str]) -> (String, bool) {
    let mut s = StreamScanner::new(Arc::clone(e), Arc::clone(policy));
    let mut out = String::new();
    let mut blocked = false;
    for c in chunks {
        let o = s.push(c);
        out.push_str(&o.text);
        blocked |= o.blocked;
    }
    let o = s.finish();
    out.push_str(&o.text);
    (out, blocked || o.blocked)
}

fn split_points(text: &str) -> Vec<usize> {
    (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect()
}

#[test]
fn secret_split_anywhere_is_caught() {
    let policies = [
        Arc::new(Policy::default()),
        Arc::new(Policy::new(&[("email".into(), "block".into())], &[], &[], &[], None).unwrap()),
    ];
    for e in engines() {
        for (_, matches, _) in corpus() {
            for (example, value) in &matches {
                let text = format!("Note: {example} ok");
                for policy in &policies {
                    let want = expected_stream(&e, policy, &text);
                    assert!(!want.0.contains(value.as_str()) || want.1, "batch leaks {value:?}");
                    for i in split_points(&text) {
                        let got = run_stream(&e, policy, &[&text[..i], &text[i..]]);
                        assert_eq!(got, want, "split at {i} of {text:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn prose_is_released_without_delay() {
    let e = Arc::new(Engine::new(None, "regex").unwrap());
    let mut s = StreamScanner::new(Arc::clone(&e), Arc::new(Policy::default()));
    let o = s.push("The quick brown fox jumps over the lazy dog. ");
    assert_eq!(o.text, "The quick brown fox jumps over the lazy dog. ");
    // A trailing word may still become an email address: held, and only it.
    let o = s.push("Write to jane");
    assert_eq!(o.text, "Write to ");
    let o = s.push(".doe@example.com now");
    assert_eq!(o.text, "[REDACTED:EMAIL] ");
    assert_eq!(s.finish().text, "now");
}

#[test]
fn interleaved_streams_share_warm_caches_without_mixing_state() {
    // Scanners borrow the engine's lazy-DFA caches push by push: two streams interleaved chunk by chunk, on
    // caches the other one warmed, must each still give the batch result of its own text.
    let policy = Arc::new(Policy::default());
    for e in engines() {
        let texts = [
            "Mail jane.doe@example.com or call 415-555-0132 about card 4111 1111 1111 1111 today.",
            "The key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD was pasted; ssn 123-45-6789.",
        ];
        let mut scanners: Vec<StreamScanner> = (0..2)
            .map(|_| StreamScanner::new(Arc::clone(&e), Arc::clone(&policy)))
            .collect();
        let mut outs = [String::new(), String::new()];
        for step in 0..texts[0].len().max(texts[1].len()).div_ceil(7) {
            for (i, t) in texts.iter().enumerate() {
                let (a, b) = ((step * 7).min(t.len()), (step * 7 + 7).min(t.len()));
                outs[i].push_str(&scanners[i].push(&t[a..b]).text);
            }
        }
        for (i, s) in scanners.iter_mut().enumerate() {
            outs[i].push_str(&s.finish().text);
            assert_eq!(outs[i], expected_stream(&e, &policy, texts[i]).0, "stream {i}");
        }
        // Many streams at once still leave a bounded pool behind.
        let many: Vec<_> = (0..40).map(|_| e.take_stream_caches()).collect();
        for c in many {
            e.put_stream_caches(c);
        }
        assert!(e.stream_cache_pool_len() <= 8);
    }
}

#[test]
fn unbounded_rule_fails_closed_at_cap() {
    let e = Arc::new(Engine::new(None, "regex").unwrap());
    let mut s = StreamScanner::new(Arc::clone(&e), Arc::new(Policy::default()));
    let mut out = s.push("key: -----BEGIN RSA PRIVATE KEY-----\n").text;
    for _ in 0..300 {
        out.push_str(&s.push("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n").text);
    }
    out.push_str(&s.finish().text);
    assert_eq!(out, "key: [REDACTED:PRIVATE_KEY]");
}

#[test]
fn allow_list_and_disabled() {
    let e = Engine::new(None, "regex").unwrap();
    let text = "a jane.doe@example.com b 536-22-8146";
    let p = Policy::new(&[], &["jane.doe@example.com".into()], &[], &["us-ssn".into()], None).unwrap();
    assert!(e.scan_with(text, &p, Direction::Request).is_empty());
}

/// `all_clean`'s answer is `apply`'s "no finding", text by text, under every engine and policy.
fn clean_by_apply(e: &Engine, texts: &[&str], policy: &Policy, dir: Direction) -> bool {
    apply(e, texts, policy, dir).findings.is_empty()
}

const KEY_TAIL: &str =
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0123456789QUJDREVGR0hJSktMTU5PUFFS\n-----END RSA PRIVATE KEY-----";

#[test]
fn all_clean_cases() {
    let whole = format!("-----BEGIN RSA PRIVATE KEY-----\n{KEY_TAIL}");
    assert!(!clean_by_apply(
        &Engine::new(None, "regex").unwrap(),
        &[&whole],
        &Policy::default(),
        Direction::Request
    ));
    let allow = Policy::new(&[], &["jane.doe@example.com".into()], &[], &[], None).unwrap();
    let plain = Policy::default();
    let cases: [(&[&str], &Policy, bool); 7] = [
        (&[], &plain, true),
        (&["Our nightly job", "takes forty minutes", "é"], &plain, true),
        (&["fine", "mail jane.doe@example.com"], &plain, false),
        (&["fine", "mail jane.doe@example.com"], &allow, true),
        // Joined, these two make a whole private key, which neither text holds: each is then searched alone.
        (&["-----BEGIN RSA PRIVATE KEY-----", KEY_TAIL], &plain, true),
        (&["jane.doe@example.com", ""], &plain, false),
        (&["", "key 536-22-8146"], &plain, false),
    ];
    for e in engines() {
        for (texts, policy, want) in cases {
            for dir in [Direction::Request, Direction::Response] {
                assert_eq!(e.all_clean(texts, policy, dir), want, "{texts:?} {}", e.kind().as_str());
                assert_eq!(clean_by_apply(&e, texts, policy, dir), want, "{texts:?}");
            }
        }
    }
}

#[test]
fn all_clean_with_an_anchored_rule_searches_each_text() {
    // `^secret` matches at the start of the second text only: joined, that start is no longer a text's start.
    let json = r#"[{"id": "starts-secret", "entity": "SECRET_START", "pattern": "^secret[0-9]"}]"#;
    // The same pattern behind a keyword is found through its keyword, wherever the text starts.
    let keyed =
        r#"[{"id": "starts-secret", "entity": "SECRET_START", "pattern": "^secret[0-9]", "keywords": ["secret"]}]"#;
    for (kind, json) in [("regex", json), ("auto", json), ("regex", keyed), ("auto", keyed)] {
        let e = Engine::new(Some(json), kind).unwrap();
        let texts = ["hello", "secret7 is here"];
        assert!(!clean_by_apply(&e, &texts, &Policy::default(), Direction::Request));
        assert!(!e.all_clean(&texts, &Policy::default(), Direction::Request), "{kind}");
        assert!(
            e.all_clean(&["hello", "a secret7"], &Policy::default(), Direction::Request),
            "{kind}"
        );
    }
}

fn arb_text() -> impl Strategy<Value = String> {
    let pieces: Vec<String> = corpus()
        .into_iter()
        .flat_map(|(_, m, n)| m.into_iter().map(|(ex, _)| ex).chain(n))
        .chain(
            [
                "é", " ", "\n", "@", "-", ".", "1", "ey", "sk-", "=", ":", "AKIA", "0", "7",
            ]
            .map(String::from),
        )
        .collect();
    prop::collection::vec((prop::sample::select(pieces), "[a-zA-Z0-9 .:@=_/+-]{0,12}"), 0..8)
        .prop_map(|v| v.into_iter().map(|(a, b)| a + &b).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn engines_agree(text in arb_text()) {
        let es = engines();
        let first = found(&es[0], &text);
        for e in &es[1..] {
            prop_assert_eq!(&found(e, &text), &first);
        }
    }

    #[test]
    fn all_clean_is_apply_without_findings(texts in prop::collection::vec(arb_text(), 0..5), resp in any::<bool>()) {
        let dir = if resp { Direction::Response } else { Direction::Request };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let policy = Policy::default();
        for e in engines() {
            prop_assert_eq!(e.all_clean(&refs, &policy, dir), clean_by_apply(&e, &refs, &policy, dir));
        }
    }

    #[test]
    fn any_chunking_gives_the_batch_result(text in arb_text(), cuts in prop::collection::vec(0usize..4096, 0..6)) {
        let e = Arc::new(Engine::new(None, "regex").unwrap());
        let policy = Arc::new(Policy::default());
        let points = split_points(&text);
        let mut idx: Vec<usize> = cuts.iter().map(|c| points[c % points.len()]).collect();
        idx.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for i in idx {
            chunks.push(&text[last..i]);
            last = i;
        }
        chunks.push(&text[last..]);
        prop_assert_eq!(run_stream(&e, &policy, &chunks), expected_stream(&e, &policy, &text));
    }
}
