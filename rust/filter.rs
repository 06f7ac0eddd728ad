//! The seam between the stream relay and the DLP streaming scanner.
//!
//! The relay (`crate::relay`) decodes each upstream chunk's `delta.content` (and streamed tool-call arguments) and
//! hands the text to one `TextFilter` per choice index (and per tool call); the DLP scanner (`crate::dlp`) implements it. Neither module knows the other.

/// What a filter releases after one increment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FilterOutput {
    /// Text that is safe to send to the client now (already redacted where the policy says so).
    pub text: String,
    /// The policy says the stream must stop: send nothing more of this choice's text.
    pub blocked: bool,
    /// Findings completed by this increment: (rule id, entity, action taken). Never the matched value.
    pub findings: Vec<FindingNote>,
}

/// One finding as it travels to the audit log and metrics: no matched value, ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingNote {
    pub rule_id: String,
    pub entity: String,
    pub action: &'static str,
    /// Optional keyed hash (HMAC-SHA256, hex) of the matched value, for correlation without storage.
    pub value_hmac: Option<String>,
}

/// A streaming text filter: fed successive text increments, it returns what may be released now and
/// holds back only a tail that could still become part of a match.
pub trait TextFilter: Send {
    fn push(&mut self, text: &str) -> FilterOutput;
    /// End of stream: release (or redact, or block) everything still held back.
    fn finish(&mut self) -> FilterOutput;
}
