//! Incremental Server-Sent Events framing (WHATWG HTML §9.2.5/9.2.6).
