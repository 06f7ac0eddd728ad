//! Per-request / per-stream policy: action per rule, allow-lists, disabled rules, keyed hashes of values.

use std::collections::{HashMap, HashSet};

use hmac::{Hmac, Mac};
use regex_automata::{Anchored, Input, meta};
use sha2::Sha256;

use super::DlpError;
use super::engine::syntax_config;
use super::rules::{Action, Rule};

/// Which way the text flows: defaults differ (secrets block a request but are redacted in a response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// A validated policy. Unknown rule ids are ignored (a policy may name rules of another ruleset version).
#[derive(Debug, Default)]
pub struct Policy {
    actions: HashMap<String, Action>,
    disabled: HashSet<String>,
    allow_values: HashSet<Vec<u8>>,
    allow_patterns: Vec<meta::Regex>,
    hmac_key: Option<Vec<u8>>,
}

impl Policy {
    /// `actions`: rule id -> "block"|"redact"|"log"|"allow"; `allow_patterns` must match a whole value.
    pub fn new(
        actions: &[(String, String)],
        allow_values: &[String],
        allow_patterns: &[String],
        disabled: &[String],
        hmac_key: Option<&[u8]>,
    ) -> Result<Policy, DlpError> {
        let mut map = HashMap::new();
        for (id, a) in actions {
            let action = Action::parse(a)
                .ok_or_else(|| DlpError::Config(format!("policy for rule {id:?}: unknown action {a:?}")))?;
            map.insert(id.clone(), action);
        }
        let allow_patterns = allow_patterns
            .iter()
            .map(|p| {
                meta::Regex::builder()
                    .syntax(syntax_config())
                    .build(&format!(r"(?:{p})\z"))
                    .map_err(|e| DlpError::Config(format!("allow pattern {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            actions: map,
            disabled: disabled.iter().cloned().collect(),
            allow_values: allow_values.iter().map(|v| v.as_bytes().to_vec()).collect(),
            allow_patterns,
            hmac_key: hmac_key.map(<[u8]>::to_vec),
        })
    }

    /// The effective action of `rule`; `Allow` means the rule does not run.
    pub fn action(&self, rule: &Rule, dir: Direction) -> Action {
        if self.disabled.contains(&rule.id) {
            return Action::Allow;
        }
        if let Some(a) = self.actions.get(&rule.id) {
            return *a;
        }
        match dir {
            Direction::Request => rule.request_action,
            Direction::Response => rule.response_action,
        }
    }

    /// An allow-listed value is not a finding.
    pub fn allows_value(&self, value: &[u8]) -> bool {
        self.allow_values.contains(value)
            || self
                .allow_patterns
                .iter()
                .any(|re| re.is_match(Input::new(value).anchored(Anchored::Yes)))
    }

    /// HMAC-SHA256 of the value (hex), when the policy has a key.
    pub fn value_hmac(&self, value: &[u8]) -> Option<String> {
        let key = self.hmac_key.as_ref()?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
        mac.update(value);
        let out = mac.finalize().into_bytes();
        Some(out.iter().map(|b| format!("{b:02x}")).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hmac_known_vector() {
        // RFC 4231 test case 2.
        let p = Policy::new(&[], &[], &[], &[], Some(b"Jefe")).unwrap();
        assert_eq!(
            p.value_hmac(b"what do ya want for nothing?").as_deref(),
            Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn allow_pattern_is_whole_value() {
        let p = Policy::new(&[], &[], &["test-[0-9]+".into()], &[], None).unwrap();
        assert!(p.allows_value(b"test-123"));
        assert!(!p.allows_value(b"test-123x"));
        assert!(!p.allows_value(b"xtest-123"));
    }

    #[test]
    fn bad_action_names_rule() {
        let e = Policy::new(&[("jwt".into(), "nuke".into())], &[], &[], &[], None).unwrap_err();
        assert!(e.to_string().contains("jwt"));
    }
}
