//! The streaming scanner: fed text increments, releases what can no longer change, holds back the rest.
//!
//! # Hold-back rule (prefix-aware)
//!
//! After each increment the scanner finds `h`, the first position where some active rule's anchored automaton is
//! still alive at the end of the buffered text: a match could still start there. Everything before `h` is
//! final: every candidate starting before `h` has its end decided, so the findings there are exactly those of the
//! whole text, and the text up to `h` is released (redacted). Prose with no open candidate is released at once;
//! text is held only while its tail could still be (the start of) a match, e.g. a word that may yet become an
//! email address, a digit run that may become a card number, `sk-ant-...` before its last character.
//!
//! # Worst-case added latency
//!
//! A position stops being open once more than its rule's maximum match length follows it (or earlier, as soon
//! as the rule's automaton dies), so text is delayed by at most `max_len + 1` bytes of the longest rule that is
//! *still open* on the tail. For the built-ins (bytes = characters, the patterns are ASCII): `private-key`
//! unbounded, capped at [`UNBOUNDED_CAP`] = 8,192; `jwt` 3,107 (only while the tail looks like `eyJ...`); `email`
//! 601 (only while the tail is a run of local-part/domain characters containing or able to reach an `@`); the key
//! and token rules 20-213 (`anthropic-key` 213, `openai-key` 211, `generic-secret` 167); the PII number rules
//! 11-43. `Engine::max_holdback()` reports the bound of a compiled ruleset (8,192 with the built-ins). Prose with
//! no open candidate has no delay: a trailing word is held only until the next byte shows it cannot become a
//! match. Reaching the cap inside an open candidate fails closed: it counts as a finding of that rule spanning the
//! held text, with the rule's action; for `redact` the rest of the stream is suppressed (the key body may go on).

//! # Invariant
//!
//! `concat(outputs) == apply(full text)` under the same policy (response direction), or its prefix up to the
//! start of a blocking finding; the one exception is the fail-closed cap above.

use std::sync::Arc;

use regex_automata::{Anchored, Input};

use super::engine::{Engine, Selector, StreamCaches, UNBOUNDED_CAP, ceil_char, floor_char};
use super::policy::{Direction, Policy};
use super::redact::marker;
use super::rules::Action;
use crate::filter::{FilterOutput, FindingNote, TextFilter};

enum Walk {
    Dead,
    Matched,
    Open,
}

/// One stream's scanner state.
pub struct StreamScanner {
    engine: Arc<Engine>,
    policy: Arc<Policy>,
    actions: Vec<Action>,
    /// Unreleased text, preceded by at most one released character kept as look-behind context.
    buf: String,
    /// Release frontier in `buf`.
    pos: usize,
    /// Selection cursor in `buf` (>= pos): candidates starting before it are decided.
    cur: usize,
    blocked: bool,
    /// Fail-closed mode after the cap: everything else is dropped.
    suppress: bool,
    /// Lazy-DFA caches, borrowed from the engine's pool for the length of one push (empty between pushes).
    caches: StreamCaches,
}

impl StreamScanner {
    pub fn new(engine: Arc<Engine>, policy: Arc<Policy>) -> StreamScanner {
        let actions = engine.actions(&policy, Direction::Response);
        StreamScanner {
            engine,
            policy,
            actions,
            buf: String::new(),
            pos: 0,
            cur: 0,
            blocked: false,
            suppress: false,
            caches: Vec::new(),
        }
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Bytes currently held back.
    pub fn held(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Is rule `i`'s automaton, started at `p`, still alive at the end of `hay`?
    fn open_at(&mut self, i: usize, hay: &[u8], p: usize) -> bool {
        let dfa = &self.engine.rules()[i].dfa;
        let cache = self.caches[i].get_or_insert_with(|| dfa.create_cache());
        let input = Input::new(hay).range(p..).anchored(Anchored::Yes);
        // Any error (a cache that gives up) counts as open: holding is always safe.
        let Ok(mut sid) = dfa.start_state_forward(cache, &input) else {
            return true;
        };
        for &b in &hay[p..] {
            if sid.is_dead() {
                return false;
            }
            if sid.is_quit() {
                return true;
            }
            match dfa.next_state(cache, sid, b) {
                Ok(s) => sid = s,
                Err(_) => return true,
            }
        }
        !sid.is_dead()
    }

    /// Walks rule `i`'s anchored automaton from `p` to the end of `hay`: dead before the end (with or without a
    /// match on the way), or still open (also on a cache error or a quit byte: holding is always safe).
    fn walk(&mut self, i: usize, hay: &[u8], p: usize) -> Walk {
        let dfa = &self.engine.rules()[i].dfa;
        let cache = self.caches[i].get_or_insert_with(|| dfa.create_cache());
        let input = Input::new(hay).range(p..).anchored(Anchored::Yes);
        let Ok(mut sid) = dfa.start_state_forward(cache, &input) else {
            return Walk::Open;
        };
        for &b in &hay[p..] {
            match dfa.next_state(cache, sid, b) {
                Ok(s) => sid = s,
                Err(_) => return Walk::Open,
            }
            // Match states are tagged one byte late: a match ending just before `b`.
            if sid.is_match() {
                return Walk::Matched;
            }
            if sid.is_dead() {
                return Walk::Dead;
            }
            if sid.is_quit() {
                return Walk::Open;
            }
        }
        Walk::Open
    }

    /// The common case, without the candidate finder: when no active rule's automaton reaches a match from any
    /// position between the cursor and the first still-open position `h`, the selection has nothing before `h`,
    /// so the text up to `h` is released as it is. `None` when a match (or the cap) needs the full path.
    fn quick(&mut self) -> Option<FilterOutput> {
        let buf = std::mem::take(&mut self.buf);
        let hay = buf.as_bytes();
        let len = hay.len();
        let mut h = len;
        let mut full = false;
        'scan: for p in self.cur..len {
            let b = usize::from(hay[p]);
            for i in 0..self.actions.len() {
                if self.actions[i] == Action::Allow || !self.engine.rules()[i].first[b] {
                    continue;
                }
                match self.walk(i, hay, p) {
                    Walk::Dead => {}
                    Walk::Matched => {
                        full = true;
                        break 'scan;
                    }
                    Walk::Open => {
                        full = self.engine.rules()[i].max_len.is_none() && len - p >= UNBOUNDED_CAP;
                        h = p;
                        break 'scan;
                    }
                }
            }
        }
        self.buf = buf;
        if full {
            return None;
        }
        let hay = self.buf.as_bytes();
        let release = floor_char(hay, h).max(self.pos);
        let text = self.buf[self.pos..release].to_owned();
        self.pos = release;
        self.cur = self.cur.max(h);
        self.keep_context();
        Some(FilterOutput {
            text,
            ..FilterOutput::default()
        })
    }

    /// Drops released text but one character, kept as look-behind context (`\b`, the IPv4 validator's previous
    /// byte).
    fn keep_context(&mut self) {
        let hay = self.buf.as_bytes();
        let keep = floor_char(hay, self.pos.saturating_sub(1)).min(self.pos);
        self.buf.drain(..keep);
        self.pos -= keep;
        self.cur = ceil_char(self.buf.as_bytes(), self.cur.saturating_sub(keep)).max(self.pos);
    }

    /// The first position `>= from` where a match may still start, and the rule when it hit the cap.
    fn hold_point(&mut self, hay: &[u8], from: usize) -> (usize, Option<usize>) {
        let len = hay.len();
        let n = self.actions.len();
        for p in from..len {
            for i in 0..n {
                let rule = &self.engine.rules()[i];
                if self.actions[i] == Action::Allow || !rule.first[usize::from(hay[p])] {
                    continue;
                }
                let max = rule.max_len;
                if max.is_some_and(|m| len - p > m + 1) {
                    continue;
                }
                if self.open_at(i, hay, p) {
                    let capped = max.is_none() && len - p >= UNBOUNDED_CAP;
                    return (p, capped.then_some(i));
                }
            }
        }
        (len, None)
    }

    fn note(&self, rule: usize, action: Action, value: &[u8]) -> FindingNote {
        let r = self.engine.rule(rule);
        FindingNote {
            rule_id: r.id.clone(),
            entity: r.entity.clone(),
            action: action.as_str(),
            value_hmac: self.policy.value_hmac(value),
        }
    }

    /// Runs `f` with the engine's stream caches lent to this scanner, and gives them back.
    fn with_caches(&mut self, f: impl FnOnce(&mut Self) -> FilterOutput) -> FilterOutput {
        self.caches = self.engine.take_stream_caches();
        let out = f(self);
        self.engine.put_stream_caches(std::mem::take(&mut self.caches));
        out
    }

    fn process(&mut self, eof: bool) -> FilterOutput {
        let mut out = FilterOutput::default();
        let buf = std::mem::take(&mut self.buf);
        let hay = buf.as_bytes();
        let engine = Arc::clone(&self.engine);
        let policy = Arc::clone(&self.policy);
        let actions = self.actions.clone();
        let mut sel = Selector::new(&engine, hay, self.cur, &actions, &policy);
        loop {
            let (h, capped) = if eof {
                (hay.len(), None)
            } else {
                self.hold_point(hay, sel.cursor())
            };
            if let Some((rule, c)) = sel.next(h) {
                if c.allowed {
                    continue;
                }
                let action = actions[rule];
                out.findings.push(self.note(rule, action, &hay[c.fs..c.fe]));
                match action {
                    Action::Redact => {
                        out.text.push_str(&buf[self.pos..c.fs]);
                        out.text.push_str(&marker(&engine.rule(rule).entity));
                        self.pos = c.fe;
                    }
                    Action::Block => {
                        out.text.push_str(&buf[self.pos..c.fs]);
                        self.blocked = true;
                        out.blocked = true;
                        self.pos = hay.len();
                        self.cur = hay.len();
                        break;
                    }
                    Action::Log | Action::Allow => {}
                }
                continue;
            }
            let release = floor_char(hay, h).max(self.pos);
            out.text.push_str(&buf[self.pos..release]);
            self.pos = release;
            self.cur = sel.cursor().max(h);
            if let Some(rule) = capped {
                let action = actions[rule];
                out.findings.push(self.note(rule, action, &hay[h..]));
                match action {
                    Action::Redact => {
                        out.text.push_str(&marker(&engine.rule(rule).entity));
                        self.suppress = true;
                    }
                    Action::Block => {
                        self.blocked = true;
                        out.blocked = true;
                    }
                    Action::Log | Action::Allow => out.text.push_str(&buf[release..]),
                }
                self.pos = hay.len();
                self.cur = hay.len();
            }
            break;
        }
        self.buf = buf;
        self.keep_context();
        out
    }
}

impl TextFilter for StreamScanner {
    fn push(&mut self, text: &str) -> FilterOutput {
        if self.blocked || self.suppress {
            return FilterOutput {
                blocked: self.blocked,
                ..FilterOutput::default()
            };
        }
        self.buf.push_str(text);
        self.with_caches(|s| match s.quick() {
            Some(out) => out,
            None => s.process(false),
        })
    }

    fn finish(&mut self) -> FilterOutput {
        if self.blocked || self.suppress {
            return FilterOutput {
                blocked: self.blocked,
                ..FilterOutput::default()
            };
        }
        let out = self.with_caches(|s| s.process(true));
        self.buf.clear();
        self.pos = 0;
        self.cur = 0;
        out
    }
}

/// A factory of per-choice filters for the stream relay: one engine and policy, a fresh scanner per call.
#[allow(dead_code)] // the stream relay (`crate::relay`) is its caller
pub(crate) fn filter_factory(
    engine: Arc<Engine>,
    policy: Arc<Policy>,
) -> Box<dyn Fn() -> Box<dyn TextFilter> + Send + Sync> {
    Box::new(move || Box::new(StreamScanner::new(Arc::clone(&engine), Arc::clone(&policy))) as Box<dyn TextFilter>)
}
