//! The rule model and the built-in ruleset.
//!
//! Patterns use a syntax both engines read the same way: ASCII classes, `\b` (ASCII word boundary), `\z`, counted
//! repeats, `(?i)`, lazy quantifiers; no look-around, no back-references and no `$` (PCRE's `$` also matches before
//! a final newline). A rule whose pattern has a capture group 1 reports that group as the finding (the keyword
//! context around an AWS secret is matched but not redacted).

use serde::Deserialize;

use super::DlpError;
use super::validators::Validator;

/// Secrets (keys, tokens) or personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Secret,
    Pii,
}

/// What the policy does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Not a finding at all: the rule is skipped.
    Allow,
    /// Report the finding, leave the text unchanged.
    Log,
    /// Replace the finding with `[REDACTED:<ENTITY>]`.
    Redact,
    /// Stop: the request is refused, the stream ends.
    Block,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "log" => Some(Action::Log),
            "redact" => Some(Action::Redact),
            "block" => Some(Action::Block),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Log => "log",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

/// One detection rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub entity: String,
    pub category: Category,
    pub pattern: String,
    pub validator: Option<Validator>,
    /// 0..=100; breaks ties between overlapping findings of the same span.
    pub confidence: u8,
    /// Default action on a request (prompt) and on a response (stream).
    pub request_action: Action,
    pub response_action: Action,
    /// Declared maximum match length in bytes; the compiled bound is the smaller of this and the pattern's own.
    pub max_len: Option<usize>,
    /// Case-insensitive literals, one of which every match contains (the prefilter relies on it and the
    /// confirmation step checks it, so both engines agree even for a wrong declaration).
    pub keywords: Vec<String>,
}

fn rule(
    id: &str,
    entity: &str,
    category: Category,
    confidence: u8,
    validator: Option<Validator>,
    keywords: &[&str],
    pattern: &str,
) -> Rule {
    let (request_action, response_action) = match category {
        Category::Secret => (Action::Block, Action::Redact),
        Category::Pii => (Action::Redact, Action::Redact),
    };
    Rule {
        id: id.to_owned(),
        entity: entity.to_owned(),
        category,
        pattern: pattern.to_owned(),
        validator,
        confidence,
        request_action,
        response_action,
        max_len: None,
        keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
    }
}

/// The built-in ruleset (v1). Sources: gitleaks `config/gitleaks.toml`, presidio recognizers.
pub fn builtin_rules() -> Vec<Rule> {
    use Category::{Pii, Secret};
    use Validator as V;
    let mut rules = vec![
        rule(
            "aws-access-key",
            "AWS_ACCESS_KEY",
            Secret,
            90,
            Some(V::Token),
            &["akia", "asia", "abia", "acca", "a3t"],
            r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        ),
        rule(
            "aws-secret-key",
            "AWS_SECRET_KEY",
            Secret,
            80,
            Some(V::AwsSecret),
            &["aws"],
            r#"(?i:aws)[A-Za-z0-9_ .-]{0,20}(?i:secret|key)[A-Za-z0-9_ .-]{0,20}["' ]{0,3}[:=]{1,2}[>"' ]{0,3}([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|\z)"#,
        ),
        rule(
            "github-token",
            "GITHUB_TOKEN",
            Secret,
            95,
            Some(V::Token),
            &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b",
        ),
        rule(
            "openai-key",
            "OPENAI_KEY",
            Secret,
            95,
            Some(V::Token),
            &["sk-"],
            r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,200}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b)",
        ),
        rule(
            "anthropic-key",
            "ANTHROPIC_KEY",
            Secret,
            95,
            Some(V::Token),
            &["sk-ant-"],
            r"\bsk-ant-(?:(?:api03|admin01)-[A-Za-z0-9_-]{93}AA\b|o[ar]t01-[A-Za-z0-9_-]{40,200})",
        ),
        rule(
            "slack-token",
            "SLACK_TOKEN",
            Secret,
            90,
            Some(V::Token),
            &["xox"],
            r"\bxox[bpears]-[0-9]{10,13}-[0-9A-Za-z-]{8,120}\b",
        ),
        rule(
            "slack-webhook",
            "SLACK_TOKEN",
            Secret,
            90,
            Some(V::Token),
            &["hooks.slack.com"],
            r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}",
        ),
        rule(
            "stripe-key",
            "STRIPE_KEY",
            Secret,
            90,
            Some(V::Token),
            &["sk_test_", "sk_live_", "sk_prod_", "rk_test_", "rk_live_", "rk_prod_"],
            r"\b(?:sk|rk)_(?:test|live|prod)_[A-Za-z0-9]{10,99}\b",
        ),
        rule(
            "google-api-key",
            "GOOGLE_API_KEY",
            Secret,
            90,
            Some(V::Token),
            &["aiza"],
            r"\bAIza[0-9A-Za-z_-]{35}",
        ),
        rule(
            "private-key",
            "PRIVATE_KEY",
            Secret,
            99,
            None,
            &["-----begin"],
            r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----(?s:.){64,}?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
        ),
        rule(
            "jwt",
            "JWT",
            Secret,
            85,
            Some(V::Jwt),
            &["eyj"],
            r"\beyJ[A-Za-z0-9_-]{10,500}\.ey[A-Za-z0-9_-]{10,2000}\.[A-Za-z0-9_-]{10,600}",
        ),
        rule(
            "generic-secret",
            "GENERIC_SECRET",
            Secret,
            30,
            Some(V::GenericSecret),
            &["key", "secret", "token", "passw", "auth"],
            r#"(?i)\b(?:api[_-]?key|secret|token|passw(?:or)?d|access[_-]?key|auth)[A-Za-z0-9_-]{0,20}["']?[ ]{0,3}[:=][ ]{0,3}["']?([A-Za-z0-9_./+=-]{16,128})"#,
        ),
        rule(
            "credit-card",
            "CREDIT_CARD",
            Pii,
            80,
            Some(V::Luhn),
            &[],
            r"\b[2-6][0-9]{3}(?:[ -]?[0-9]{2,6}){1,4}\b",
        ),
        rule(
            "us-ssn",
            "US_SSN",
            Pii,
            70,
            Some(V::Ssn),
            &[],
            r"\b[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}\b",
        ),
        rule(
            "email",
            "EMAIL",
            Pii,
            75,
            Some(V::Email),
            &["@"],
            r"\b[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}\b",
        ),
        rule(
            "phone",
            "PHONE",
            Pii,
            40,
            Some(V::Phone),
            &[],
            r"(?:\+1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|\b[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}\b|\+[1-9][0-9]{9,14}\b",
        ),
        rule(
            "iban",
            "IBAN",
            Pii,
            85,
            Some(V::Iban),
            &[],
            r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        ),
        rule(
            "ipv4-address",
            "IP_ADDRESS",
            Pii,
            50,
            Some(V::Ipv4),
            &[],
            r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?:\.[0-9]{1,3})?\b",
        ),
        rule(
            "ipv6-address",
            "IP_ADDRESS",
            Pii,
            50,
            Some(V::Ipv6),
            &[],
            r"\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b",
        ),
    ];
    // A JWT is often pasted on purpose (an ID token in a debugging question): redact it, do not refuse the request.
    for r in &mut rules {
        if r.id == "jwt" || r.id == "generic-secret" {
            r.request_action = Action::Redact;
        }
    }
    rules
}

/// A custom rule as written in configuration (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomRule {
    id: String,
    entity: String,
    pattern: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    request_action: Option<String>,
    #[serde(default)]
    response_action: Option<String>,
    #[serde(default)]
    validator: Option<String>,
    #[serde(default)]
    confidence: Option<u8>,
    #[serde(default)]
    max_len: Option<usize>,
    #[serde(default)]
    keywords: Vec<String>,
}

fn parse_action(rule_id: &str, s: &str) -> Result<Action, DlpError> {
    Action::parse(s).ok_or_else(|| DlpError::Config(format!("rule {rule_id:?}: unknown action {s:?}")))
}

/// Parses custom rules: a JSON list of objects
/// `{"id", "entity", "pattern", "category"?: "secret"|"pii", "action"?, "request_action"?, "response_action"?,
/// "validator"?: name, "confidence"?: 0-100, "max_len"?: bytes, "keywords"?: [str]}`.
pub fn parse_custom_rules(json: &str) -> Result<Vec<Rule>, DlpError> {
    let raw: Vec<CustomRule> =
        serde_json::from_str(json).map_err(|e| DlpError::Config(format!("custom rules JSON: {e}")))?;
    raw.into_iter()
        .map(|c| {
            let category = match c.category.as_deref() {
                None | Some("pii") => Category::Pii,
                Some("secret") => Category::Secret,
                Some(other) => return Err(DlpError::Config(format!("rule {:?}: unknown category {other:?}", c.id))),
            };
            let validator = match c.validator.as_deref() {
                None => None,
                Some(name) => Some(
                    Validator::by_name(name)
                        .ok_or_else(|| DlpError::Config(format!("rule {:?}: unknown validator {name:?}", c.id)))?,
                ),
            };
            let mut r = rule(
                &c.id,
                &c.entity,
                category,
                c.confidence.unwrap_or(50).min(100),
                validator,
                &[],
                &c.pattern,
            );
            if let Some(a) = &c.action {
                let a = parse_action(&c.id, a)?;
                r.request_action = a;
                r.response_action = a;
            }
            if let Some(a) = &c.request_action {
                r.request_action = parse_action(&c.id, a)?;
            }
            if let Some(a) = &c.response_action {
                r.response_action = parse_action(&c.id, a)?;
            }
            if c.keywords.iter().any(|k| k.is_empty()) {
                return Err(DlpError::Config(format!("rule {:?}: empty keyword", c.id)));
            }
            r.keywords = c.keywords;
            r.max_len = c.max_len;
            Ok(r)
        })
        .collect()
}
