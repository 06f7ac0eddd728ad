//! DLP: rules, validators, multi-pattern engines, redaction and the streaming scanner.
