//! DLP: rules, validators, multi-pattern engines, redaction and the streaming scanner.
//!
//! ```text
//! rules.rs       the rule model, the built-in ruleset, custom rules from JSON
//! validators.rs  Luhn, mod-97, SSN, IP, JWT, entropy, placeholders
//! engine.rs      compiled rules + candidate finder (pure Rust) + the selection that defines the findings
//! hyperscan.rs   the Vectorscan candidate finder (feature `hyperscan`)
//! policy.rs      per-request/stream policy: actions, allow-lists, disabled rules, HMAC of values
//! redact.rs      findings -> `[REDACTED:<ENTITY>]`
//! stream.rs      the streaming scanner (`crate::filter::TextFilter`)
//! ```
//!
//! # What a finding is (identical for every engine)
//!
//! For each rule and each byte position `p`, the rule has a *candidate* at `p` when its regex (leftmost-first,
//! ASCII semantics) matches anchored at `p`, the match contains one of the rule's keywords, the validator accepts
//! it and the policy does not allow-list the value. Findings are then chosen greedily left to right:
//! **leftmost start wins, then the longest match, then the higher confidence, then the earlier rule**; a chosen
//! finding hides every candidate that starts inside it. Because this definition only looks at each candidate's
//! own bytes (plus one byte before it), the engines are free to find candidates any way they like: the candidate
//! finder (Aho-Corasick keywords + one overlapping multi-pattern lazy-DFA pass, or one Vectorscan pass) only
//! reports byte windows that every match of a rule must lie in (keyword +- max length, or match end - max length);
//! the spans always come from the per-rule Rust regex run inside those windows, so both engines give identical
//! findings (tested on the corpus and on generated text, in Rust and from Python).

use std::fmt;

pub mod engine;
#[cfg(feature = "hyperscan")]
#[allow(unsafe_code)]
pub mod hyperscan;
pub mod policy;
pub mod redact;
pub mod rules;
pub mod stream;
pub mod validators;

pub use engine::{Engine, EngineKind, Finding};
pub use policy::{Direction, Policy};
pub use rules::{Action, Category, Rule};

/// Errors of the DLP core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlpError {
    /// A rule or policy is invalid; the message names it.
    Config(String),
    /// The requested engine is not available in this build or on this CPU.
    Engine(String),
    /// Offsets passed to `redact` do not fit the text.
    Span(String),
}

impl fmt::Display for DlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DlpError::Config(m) => write!(f, "invalid DLP configuration: {m}"),
            DlpError::Engine(m) => write!(f, "DLP engine unavailable: {m}"),
            DlpError::Span(m) => write!(f, "invalid finding span: {m}"),
        }
    }
}

impl std::error::Error for DlpError {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests;
