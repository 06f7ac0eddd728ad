//! Compiled rules, candidate finders and the selection that defines the findings (see the module docs of
//! `crate::dlp` for the definition).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex_automata::util::captures::Captures;
use regex_automata::util::syntax;
use std::sync::Mutex;

use regex_automata::{Input, hybrid, meta};

use super::DlpError;
use super::policy::{Direction, Policy};
use super::rules::{Action, Rule, builtin_rules, parse_custom_rules};

/// Hold-back cap for rules without a finite maximum length (PEM private keys): 8 KiB. A candidate that is still
/// open after this many bytes in a stream is treated as a match (fail closed).
pub const UNBOUNDED_CAP: usize = 8192;

/// The one syntax both engines read the same way: bytes, ASCII classes and ASCII `\b`.
pub(crate) fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

/// Which candidate finder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Aho-Corasick keywords + one multi-pattern lazy-DFA pass (pure Rust).
    Regex,
    /// One Vectorscan pass over all rules (feature `hyperscan`).
    Hyperscan,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Regex => "regex",
            EngineKind::Hyperscan => "hyperscan",
        }
    }
}

/// A rule with its compiled automata.
pub struct CompiledRule {
    pub rule: Rule,
    re: meta::Regex,
    /// Anchored forward lazy DFA: the stream asks "can a match still start here?".
    pub(crate) dfa: hybrid::dfa::DFA,
    keywords: Option<AhoCorasick>,
    /// Report capture group 1 instead of the whole match.
    group: bool,
    /// Maximum match length in bytes, `None` when unbounded.
    pub max_len: Option<usize>,
    /// Bytes a match can start with (any look-behind): the stream skips other positions without a DFA walk.
    pub(crate) first: [bool; 256],
}

/// Bytes after which the anchored automaton is not dead, under each kind of look-behind (none, word, space, line).
fn first_bytes(dfa: &hybrid::dfa::DFA) -> [bool; 256] {
    let mut first = [false; 256];
    let mut cache = dfa.create_cache();
    for b in 0..=255u8 {
        for ctx in [&[][..], b"a", b" ", b"\n"] {
            let mut hay = ctx.to_vec();
            hay.push(b);
            let input = Input::new(&hay)
                .range(ctx.len()..)
                .anchored(regex_automata::Anchored::Yes);
            let open = match dfa.start_state_forward(&mut cache, &input) {
                Ok(sid) => dfa.next_state(&mut cache, sid, b).map_or(true, |s| !s.is_dead()),
                Err(_) => true,
            };
            first[usize::from(b)] |= open;
        }
    }
    first
}

fn compile_rule(rule: Rule) -> Result<CompiledRule, DlpError> {
    let name = rule.id.clone();
    let err = |e: &dyn std::fmt::Display| DlpError::Config(format!("rule {name:?}: {e}"));
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(&rule.pattern)
        .map_err(|e| err(&e))?;
    let props = hir.properties();
    if props.minimum_len().unwrap_or(0) == 0 {
        return Err(err(&"the pattern can match the empty string"));
    }
    let group = props.explicit_captures_len() >= 1;
    let max_len = match (props.maximum_len(), rule.max_len) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let re = meta::Regex::builder()
        .syntax(syntax_config())
        .build(&rule.pattern)
        .map_err(|e| err(&e))?;
    let dfa = hybrid::dfa::DFA::builder()
        .syntax(syntax_config())
        .configure(
            hybrid::dfa::DFA::config()
                .cache_capacity(STREAM_DFA_CACHE_BYTES)
                .skip_cache_capacity_check(true),
        )
        .build(&rule.pattern)
        .map_err(|e| err(&e))?;
    let keywords = if rule.keywords.is_empty() {
        None
    } else {
        Some(
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .build(&rule.keywords)
                .map_err(|e| err(&e))?,
        )
    };
    let first = first_bytes(&dfa);
    Ok(CompiledRule {
        rule,
        re,
        dfa,
        keywords,
        group,
        max_len,
        first,
    })
}

/// A candidate: the match span `[ms, me)` used for selection and the reported span `[fs, fe)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cand {
    /// An allow-listed value: chosen like a finding (it hides what overlaps it) but never reported.
    pub allowed: bool,
    pub ms: usize,
    pub me: usize,
    pub fs: usize,
    pub fe: usize,
}

impl CompiledRule {
    /// The first candidate of this rule starting at or after `at`, searching only inside `windows` (sorted,
    /// disjoint; every match of the rule lies inside one of them) from window `*wi` on.
    pub(crate) fn next_candidate(
        &self,
        hay: &[u8],
        mut at: usize,
        windows: &[(usize, usize)],
        wi: &mut usize,
        policy: &Policy,
        caps: &mut Option<Captures>,
    ) -> Option<Cand> {
        while let Some(&(ws, we)) = windows.get(*wi) {
            if at.max(ws) >= we {
                *wi += 1;
                continue;
            }
            let input = Input::new(hay).range(at.max(ws)..we);
            let found = if self.group {
                let caps = caps.get_or_insert_with(|| self.re.create_captures());
                self.re.search_captures(&input, caps);
                caps.get_match().map(|m| {
                    let g = caps.get_group(1).unwrap_or(m.range().into());
                    (m.start(), m.end(), g.start, g.end)
                })
            } else {
                self.re.search(&input).map(|m| (m.start(), m.end(), m.start(), m.end()))
            };
            let Some((ms, me, fs, fe)) = found else {
                *wi += 1;
                continue;
            };
            if let Some(c) = self.confirm(
                hay,
                Cand {
                    allowed: false,
                    ms,
                    me,
                    fs,
                    fe,
                },
                policy,
            ) {
                return Some(c);
            }
            at = ms + 1;
        }
        None
    }

    /// Keyword, validator and allow-list checks on one regex match.
    fn confirm(&self, hay: &[u8], mut c: Cand, policy: &Policy) -> Option<Cand> {
        if self.keywords.as_ref().is_some_and(|kw| !kw.is_match(&hay[c.ms..c.me])) {
            return None;
        }
        if let Some(v) = self.rule.validator {
            let prev = c.fs.checked_sub(1).map(|i| hay[i]);
            c.fe = c.fs + v.check(&hay[c.fs..c.fe], prev)?;
            if !self.group {
                c.me = c.fe;
            }
        }
        c.allowed = policy.allows_value(&hay[c.fs..c.fe]);
        // Spans of custom byte patterns may cut a UTF-8 character: widen them to whole characters.
        c.fs = floor_char(hay, c.fs);
        c.fe = ceil_char(hay, c.fe);
        Some(c)
    }

    /// The window a match ending at `end` lies in.
    pub(crate) fn window_ending_at(&self, end: usize) -> (usize, usize) {
        (self.max_len.map_or(0, |l| end.saturating_sub(l)), end)
    }
}

fn is_char_start(hay: &[u8], i: usize) -> bool {
    i >= hay.len() || hay[i] & 0xC0 != 0x80
}

pub(crate) fn floor_char(hay: &[u8], mut i: usize) -> usize {
    i = i.min(hay.len());
    while i > 0 && !is_char_start(hay, i) {
        i -= 1;
    }
    i
}

pub(crate) fn ceil_char(hay: &[u8], mut i: usize) -> usize {
    while i < hay.len() && !is_char_start(hay, i) {
        i += 1;
    }
    i.min(hay.len())
}

/// A finding: rule index and byte span in the scanned text, with the action the policy gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
    pub action: Action,
}

/// Per rule that may match: the byte windows its matches must lie in (sorted, disjoint).
pub(crate) type Candidates = Vec<(usize, Vec<(usize, usize)>)>;

/// Collects windows per rule; reports may come in any order, `finish` sorts and merges.
pub(crate) struct WindowSet {
    per_rule: Vec<Vec<(usize, usize)>>,
}

impl WindowSet {
    pub(crate) fn new(rules: usize) -> WindowSet {
        WindowSet {
            per_rule: vec![Vec::new(); rules],
        }
    }

    pub(crate) fn add(&mut self, rule: usize, (s, e): (usize, usize)) {
        let v = &mut self.per_rule[rule];
        match v.last_mut() {
            Some(last) if s <= last.1 && e >= last.0 => *last = (last.0.min(s), last.1.max(e)),
            _ => v.push((s, e)),
        }
    }

    fn finish(self) -> Candidates {
        let mut out = Vec::new();
        for (rule, mut v) in self.per_rule.into_iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            v.sort_unstable();
            let mut merged: Vec<(usize, usize)> = Vec::with_capacity(v.len());
            for (s, e) in v {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            out.push((rule, merged));
        }
        out
    }
}

/// The pure-Rust candidate finder: Aho-Corasick over the keywords, one overlapping lazy-DFA pass over the rules
/// without keywords. Both report positions, so each rule is confirmed only around them.
struct RegexFinder {
    /// Keywords of all keyword rules, case-insensitive; pattern index -> rule index.
    keywords: Option<AhoCorasick>,
    keyword_rule: Vec<usize>,
    /// One multi-pattern DFA (all matches) over the rules without keywords; pattern index -> rule index.
    union: Option<hybrid::dfa::DFA>,
    union_rule: Vec<usize>,
    caches: Mutex<Vec<hybrid::dfa::Cache>>,
}

impl RegexFinder {
    fn new(rules: &[CompiledRule]) -> Result<RegexFinder, DlpError> {
        let mut kws = Vec::new();
        let mut keyword_rule = Vec::new();
        let mut pats = Vec::new();
        let mut union_rule = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if r.keywords.is_some() {
                for k in &r.rule.keywords {
                    kws.push(k.as_str());
                    keyword_rule.push(i);
                }
            } else {
                pats.push(r.rule.pattern.as_str());
                union_rule.push(i);
            }
        }
        let keywords = if kws.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&kws)
                    .map_err(|e| DlpError::Config(format!("keywords: {e}")))?,
            )
        };
        let union = if pats.is_empty() {
            None
        } else {
            Some(
                hybrid::dfa::DFA::builder()
                    .syntax(syntax_config())
                    .configure(
                        hybrid::dfa::DFA::config()
                            .match_kind(regex_automata::MatchKind::All)
                            .cache_capacity(8 << 20)
                            .skip_cache_capacity_check(true),
                    )
                    .build_many(&pats)
                    .map_err(|e| DlpError::Config(format!("rule set: {e}")))?,
            )
        };
        Ok(RegexFinder {
            keywords,
            keyword_rule,
            union,
            union_rule,
            caches: Mutex::new(Vec::new()),
        })
    }

    fn candidates(&self, hay: &[u8], active: &[bool], rules: &[CompiledRule], ws: &mut WindowSet) {
        if let Some(ac) = &self.keywords {
            for m in ac.find_overlapping_iter(hay) {
                let r = self.keyword_rule[m.pattern().as_usize()];
                if active[r] {
                    // A match containing this keyword starts and ends within max_len of it.
                    let w = match rules[r].max_len {
                        Some(l) => (m.end().saturating_sub(l), m.start().saturating_add(l).min(hay.len())),
                        None => (0, hay.len()),
                    };
                    ws.add(r, w);
                }
            }
        }
        let Some(dfa) = &self.union else { return };
        if !self.union_rule.iter().any(|&r| active[r]) {
            return;
        }
        let mut cache = self
            .caches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| dfa.create_cache());
        let input = Input::new(hay);
        let mut state = hybrid::dfa::OverlappingState::start();
        loop {
            if dfa.try_search_overlapping_fwd(&mut cache, &input, &mut state).is_err() {
                // The lazy DFA gave up (cache thrashing): confirm these rules over the whole text.
                for &r in &self.union_rule {
                    if active[r] {
                        ws.add(r, (0, hay.len()));
                    }
                }
                break;
            }
            let Some(hm) = state.get_match() else { break };
            let r = self.union_rule[hm.pattern().as_usize()];
            if active[r] {
                ws.add(r, rules[r].window_ending_at(hm.offset()));
            }
        }
        self.caches.lock().unwrap_or_else(|e| e.into_inner()).push(cache);
    }
}

enum Finder {
    Regex(Box<RegexFinder>),
    #[cfg(feature = "hyperscan")]
    Hyperscan(super::hyperscan::HsFinder),
}

/// Compiled rules plus one candidate finder. Immutable and `Sync`: share one per configuration.
pub struct Engine {
    rules: Vec<CompiledRule>,
    finder: Finder,
    kind: EngineKind,
    /// The longest hold-back any rule can ask for, in bytes.
    max_holdback: usize,
    /// A rule's candidates in one text are candidates in that text joined with others by line breaks, for every
    /// rule: its candidates come from its keywords (plain words), or from a pattern that cannot anchor to a text's
    /// start or end. [`Engine::all_clean`] may then look for candidates in one pass.
    joinable: bool,
    /// Lazy-DFA caches of the per-rule stream automata, lent to a stream scanner for one push: the states a
    /// stream determinised stay built for the next stream (a fresh set per stream re-determinised them every
    /// time, ~40 µs per short stream). One set per concurrent push, at most [`STREAM_CACHE_POOL`] kept.
    stream_caches: Mutex<Vec<StreamCaches>>,
}

/// One lazy-DFA cache per rule, created on first use.
pub(crate) type StreamCaches = Vec<Option<hybrid::dfa::Cache>>;

/// Cache sets kept for reuse; pushes running at once beyond this (threads) make and drop their own.
const STREAM_CACHE_POOL: usize = 8;

/// Bound of one rule's stream lazy-DFA cache (it is cleared and rebuilt when full). The whole DLP corpus streamed
/// through the built-ins leaves ~25 KiB per rule, so a set stays under ~5 MiB at worst (19 rules), and the pool
/// under ~38 MiB, kept for the life of the engine (reached only with 8 pushes at once, from threads).
const STREAM_DFA_CACHE_BYTES: usize = 256 * 1024;

impl Engine {
    /// Built-in rules plus `custom_json` (a custom rule with a built-in's id replaces it). `engine` is
    /// "auto" (Vectorscan when compiled in and the CPU supports it, else pure Rust), "hyperscan" or "regex".
    pub fn new(custom_json: Option<&str>, engine: &str) -> Result<Engine, DlpError> {
        let mut rules = builtin_rules();
        if let Some(json) = custom_json {
            for c in parse_custom_rules(json)? {
                match rules.iter_mut().find(|r| r.id == c.id) {
                    Some(slot) => *slot = c,
                    None => rules.push(c),
                }
            }
        }
        Engine::from_rules(rules, engine)
    }

    pub fn from_rules(rules: Vec<Rule>, engine: &str) -> Result<Engine, DlpError> {
        for (i, r) in rules.iter().enumerate() {
            if rules[..i].iter().any(|o| o.id == r.id) {
                return Err(DlpError::Config(format!("duplicate rule id {:?}", r.id)));
            }
        }
        let rules = rules.into_iter().map(compile_rule).collect::<Result<Vec<_>, _>>()?;
        let max_holdback = rules
            .iter()
            .map(|r| r.max_len.unwrap_or(UNBOUNDED_CAP).min(UNBOUNDED_CAP))
            .max()
            .unwrap_or(0);
        let (finder, kind) = match engine {
            "regex" => (Finder::Regex(Box::new(RegexFinder::new(&rules)?)), EngineKind::Regex),
            "hyperscan" => (Engine::hyperscan_finder(&rules)?, EngineKind::Hyperscan),
            "auto" => match Engine::hyperscan_finder(&rules) {
                Ok(f) => (f, EngineKind::Hyperscan),
                Err(_) => (Finder::Regex(Box::new(RegexFinder::new(&rules)?)), EngineKind::Regex),
            },
            other => {
                return Err(DlpError::Config(format!(
                    "unknown engine {other:?} (auto, hyperscan, regex)"
                )));
            }
        };
        let joinable = rules
            .iter()
            .all(|r| !r.rule.keywords.is_empty() || unanchored(&r.rule.pattern));
        Ok(Engine {
            rules,
            finder,
            kind,
            max_holdback,
            joinable,
            stream_caches: Mutex::new(Vec::new()),
        })
    }

    /// A set of stream caches (warm when one was returned before); give it back with [`Engine::put_stream_caches`].
    pub(crate) fn take_stream_caches(&self) -> StreamCaches {
        let pooled = self.stream_caches.lock().unwrap_or_else(|e| e.into_inner()).pop();
        pooled.unwrap_or_else(|| (0..self.rules.len()).map(|_| None).collect())
    }

    #[cfg(test)]
    pub(crate) fn stream_cache_pool_len(&self) -> usize {
        self.stream_caches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(crate) fn put_stream_caches(&self, caches: StreamCaches) {
        let mut pool = self.stream_caches.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < STREAM_CACHE_POOL && caches.len() == self.rules.len() {
            pool.push(caches);
        }
    }

    #[cfg(feature = "hyperscan")]
    fn hyperscan_finder(rules: &[CompiledRule]) -> Result<Finder, DlpError> {
        Ok(Finder::Hyperscan(super::hyperscan::HsFinder::new(rules)?))
    }

    #[cfg(not(feature = "hyperscan"))]
    fn hyperscan_finder(_rules: &[CompiledRule]) -> Result<Finder, DlpError> {
        Err(DlpError::Engine("this build has no hyperscan feature".into()))
    }

    /// Rules the Vectorscan database could not take (always confirmed by the Rust regex); empty for `regex`.
    pub fn hyperscan_fallback_rules(&self) -> Vec<&str> {
        match &self.finder {
            Finder::Regex(_) => Vec::new(),
            #[cfg(feature = "hyperscan")]
            Finder::Hyperscan(f) => f
                .fallback_rules()
                .iter()
                .map(|&i| self.rules[i].rule.id.as_str())
                .collect(),
        }
    }

    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    pub fn rule(&self, idx: usize) -> &Rule {
        &self.rules[idx].rule
    }

    /// Worst-case added stream latency in bytes (= characters for the ASCII patterns of the built-ins).
    pub fn max_holdback(&self) -> usize {
        self.max_holdback
    }

    /// Per-rule effective action under `policy`.
    pub(crate) fn actions(&self, policy: &Policy, dir: Direction) -> Vec<Action> {
        self.rules.iter().map(|r| policy.action(&r.rule, dir)).collect()
    }

    pub(crate) fn candidates(&self, hay: &[u8], actions: &[Action]) -> Candidates {
        let active: Vec<bool> = actions.iter().map(|&a| a != Action::Allow).collect();
        let mut ws = WindowSet::new(self.rules.len());
        match &self.finder {
            Finder::Regex(f) => f.candidates(hay, &active, &self.rules, &mut ws),
            #[cfg(feature = "hyperscan")]
            Finder::Hyperscan(f) => f.candidates(hay, &active, &self.rules, &mut ws),
        }
        ws.finish()
    }

    /// All findings with every rule on (request defaults, empty policy).
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        self.scan_with(text, &Policy::default(), Direction::Request)
    }

    /// All findings under `policy` (disabled and `allow` rules, allow-listed values are not findings).
    pub fn scan_with(&self, text: &str, policy: &Policy, dir: Direction) -> Vec<Finding> {
        self.scan_actions(text, policy, &self.actions(policy, dir))
    }

    /// `scan_with` for `actions` already resolved (`actions(policy, dir)`): texts of one request share them.
    pub(crate) fn scan_actions(&self, text: &str, policy: &Policy, actions: &[Action]) -> Vec<Finding> {
        let hay = text.as_bytes();
        let mut sel = Selector::new(self, hay, 0, actions, policy);
        let mut out = Vec::new();
        while let Some((rule, c)) = sel.next(usize::MAX) {
            if c.allowed {
                continue;
            }
            out.push(Finding {
                rule,
                start: c.fs,
                end: c.fe,
                action: actions[rule],
            });
        }
        out
    }

    /// True when no text has a finding under `policy`: `apply` would report nothing and change nothing. Stops at
    /// the first finding, and builds nothing on the way (the request path's common case, in one pass).
    ///
    /// Several texts are first searched for candidates as one, joined by line breaks: a candidate of one text is
    /// a candidate there too (a keyword is found wherever it is; a line break is not a word character, so `\b` at a
    /// text's edge holds as before; and no searched pattern anchors to a text's start or end, see `joinable`), so
    /// none at all means every text is clean.
    /// Only when there is one (maybe made by the join) is each text searched on its own.
    pub fn all_clean(&self, texts: &[&str], policy: &Policy, dir: Direction) -> bool {
        let actions = self.actions(policy, dir);
        if self.joinable && texts.len() > 1 && self.candidates(texts.join("\n").as_bytes(), &actions).is_empty() {
            return true;
        }
        texts.iter().all(|text| {
            let mut sel = Selector::new(self, text.as_bytes(), 0, &actions, policy);
            while let Some((_, c)) = sel.next(usize::MAX) {
                if !c.allowed {
                    return false;
                }
            }
            true
        })
    }
}

/// False when `pattern` may anchor to the start or end of its text (`^`, `$`, `\A`, `\z`, `\Z`, `\G`; a `^` that
/// negates a class counts too: the check only has to be safe).
fn unanchored(pattern: &str) -> bool {
    !(pattern.contains(['^', '$']) || ["\\A", "\\z", "\\Z", "\\G"].iter().any(|a| pattern.contains(a)))
}

/// One rule's state in the selection: its windows, the current window, its next candidate.
struct Head {
    rule: usize,
    windows: Vec<(usize, usize)>,
    wi: usize,
    next: Option<Cand>,
    done: bool,
    caps: Option<Captures>,
}

/// Greedy left-to-right selection over per-rule candidate streams.
pub(crate) struct Selector<'a> {
    engine: &'a Engine,
    hay: &'a [u8],
    policy: &'a Policy,
    /// Selection cursor: candidates starting before it are hidden.
    cursor: usize,
    heads: Vec<Head>,
}

impl<'a> Selector<'a> {
    pub(crate) fn new(
        engine: &'a Engine,
        hay: &'a [u8],
        cursor: usize,
        actions: &[Action],
        policy: &'a Policy,
    ) -> Selector<'a> {
        let heads = engine
            .candidates(hay, actions)
            .into_iter()
            .map(|(rule, windows)| Head {
                rule,
                windows,
                wi: 0,
                next: None,
                done: false,
                caps: None,
            })
            .collect();
        Selector {
            engine,
            hay,
            policy,
            cursor,
            heads,
        }
    }

    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    /// The next chosen candidate whose match starts before `limit`, advancing past it; `None` leaves the state
    /// unchanged (a later call with a larger limit may still return it).
    pub(crate) fn next(&mut self, limit: usize) -> Option<(usize, Cand)> {
        let mut best: Option<(usize, Cand)> = None;
        for h in &mut self.heads {
            if h.done {
                continue;
            }
            if h.next.is_none_or(|c| c.ms < self.cursor) {
                let rule = &self.engine.rules[h.rule];
                h.next = rule.next_candidate(self.hay, self.cursor, &h.windows, &mut h.wi, self.policy, &mut h.caps);
                if h.next.is_none() {
                    h.done = true;
                    continue;
                }
            }
            let Some(c) = h.next else { continue };
            if c.ms >= limit {
                continue;
            }
            let better = match &best {
                None => true,
                Some((br, bc)) => {
                    let conf = self.engine.rules[h.rule].rule.confidence;
                    let bconf = self.engine.rules[*br].rule.confidence;
                    (c.ms, std::cmp::Reverse(c.me), std::cmp::Reverse(conf), h.rule)
                        < (bc.ms, std::cmp::Reverse(bc.me), std::cmp::Reverse(bconf), *br)
                }
            };
            if better {
                best = Some((h.rule, c));
            }
        }
        if let Some((_, c)) = best {
            self.cursor = c.me;
        }
        best
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids(e: &Engine, text: &str) -> Vec<(String, String)> {
        e.scan(text)
            .iter()
            .map(|f| (e.rule(f.rule).id.clone(), text[f.start..f.end].to_owned()))
            .collect()
    }

    #[test]
    fn finds_and_orders() {
        let e = Engine::new(None, "regex").unwrap();
        let t = "mail bob@example.com, card 4111 1111 1111 1111, key AKIAZ3MPLQ7RT2VWX4YB.";
        assert_eq!(
            ids(&e, t),
            vec![
                ("email".into(), "bob@example.com".into()),
                ("credit-card".into(), "4111 1111 1111 1111".into()),
                ("aws-access-key".into(), "AKIAZ3MPLQ7RT2VWX4YB".into()),
            ]
        );
    }

    #[test]
    fn invalid_custom_pattern_names_rule() {
        let json = r#"[{"id": "my-rule", "entity": "X", "pattern": "ab(c"}]"#;
        let e = Engine::new(Some(json), "regex").err().unwrap();
        assert!(e.to_string().contains("my-rule"), "{e}");
        let json = r#"[{"id": "empty", "entity": "X", "pattern": "a*"}]"#;
        assert!(
            Engine::new(Some(json), "regex")
                .err()
                .unwrap()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn group_rule_reports_value() {
        let e = Engine::new(None, "regex").unwrap();
        let t = "aws_secret_access_key = \"Zx9Q2vB7rT1mK8pL4wN6yH3cF5dJ0sA2gE7uI9oX\"\n";
        assert_eq!(
            ids(&e, t),
            vec![(
                "aws-secret-key".into(),
                "Zx9Q2vB7rT1mK8pL4wN6yH3cF5dJ0sA2gE7uI9oX".into()
            )]
        );
    }
}
