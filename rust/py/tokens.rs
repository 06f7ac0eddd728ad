//! Python glue for `crate::tokens`.

use pyo3::prelude::*;

use super::errors::TokenizerError;
use crate::tokens::{self, ChatMessage, Encoding, TokenError};

/// Below this many bytes counting is cheaper than releasing and re-taking the GIL.
const DETACH_MIN_BYTES: usize = 4 * 1024;

impl From<TokenError> for PyErr {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::UnknownEncoding(_) => TokenizerError::new_err(err.to_string()),
        }
    }
}

/// Tokens of `text` in `encoding` (`"o200k_base"` or `"cl100k_base"`); special-token text counts as ordinary text.
#[pyfunction]
#[pyo3(signature = (text, encoding = "o200k_base"))]
fn count_tokens(py: Python<'_>, text: &str, encoding: &str) -> PyResult<usize> {
    let encoding = Encoding::from_name(encoding)?;
    if text.len() >= DETACH_MIN_BYTES {
        Ok(py.detach(|| tokens::count(encoding, text)))
    } else {
        Ok(tokens::count(encoding, text))
    }
}

/// One chat message: `(role, content)` or `(role, content, name)`.
#[derive(FromPyObject)]
enum MessageArg {
    Named(String, String, Option<String>),
    Plain(String, String),
}

impl MessageArg {
    fn as_message(&self) -> ChatMessage<'_> {
        match self {
            Self::Named(role, content, name) => ChatMessage {
                role,
                content,
                name: name.as_deref(),
            },
            Self::Plain(role, content) => ChatMessage {
                role,
                content,
                name: None,
            },
        }
    }
}

/// Prompt tokens of a whole chat request for `model`, per the OpenAI Cookbook.
#[pyfunction]
fn count_chat_tokens(py: Python<'_>, messages: Vec<MessageArg>, model: &str) -> usize {
    let messages: Vec<ChatMessage<'_>> = messages.iter().map(MessageArg::as_message).collect();
    let size: usize = messages.iter().map(|m| m.content.len()).sum();
    if size >= DETACH_MIN_BYTES {
        py.detach(|| tokens::count_chat(model, &messages))
    } else {
        tokens::count_chat(model, &messages)
    }
}

/// Load token vocabularies from `<dir>/<encoding>.tokens` (written by `tools/dump_token_data.rs`) instead of the
/// copy embedded in this extension; false when a directory was already set.
#[pyfunction]
fn set_token_data_dir(dir: std::path::PathBuf) -> bool {
    tokens::set_data_dir(&dir)
}

/// Where `encoding`'s data came from: `"file"` or `"embedded: <why>"`; `None` before its first use.
#[pyfunction]
fn token_data_source(encoding: &str) -> PyResult<Option<String>> {
    Ok(Encoding::from_name(encoding)?.source())
}

/// The encoding name used for `model`; unknown models get `"o200k_base"` as an estimate.
#[pyfunction]
fn encoding_for_model(model: &str) -> &'static str {
    tokens::encoding_for_model(model).name()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(count_chat_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(encoding_for_model, m)?)?;
    m.add_function(wrap_pyfunction!(set_token_data_dir, m)?)?;
    m.add_function(wrap_pyfunction!(token_data_source, m)?)?;
    Ok(())
}
