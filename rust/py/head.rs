//! Python glue for `crate::head`, `crate::limits` and `crate::request`: `response_head`, for the gateway's uvicorn
//! protocol, `ratelimit_header_pairs`, the limiter's headers for it, and `request_key`, what the hot route reads
//! from a request's headers.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::head::HeadBuilder;
use crate::limits::ratelimit_headers;
use crate::request::{api_key, key_hash};

/// One ASGI header: a `(name, value)` tuple of bytes, or None for anything else.
fn bytes_pair<'py>(item: &Bound<'py, PyAny>) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let Ok(pair) = item.cast::<PyTuple>() else {
        return Ok(None);
    };
    if pair.len() != 2 {
        return Ok(None);
    }
    let (Ok(name), Ok(value)) = (
        pair.get_item(0)?.cast_into::<PyBytes>(),
        pair.get_item(1)?.cast_into::<PyBytes>(),
    ) else {
        return Ok(None);
    };
    Ok(Some((name, value)))
}

/// Feed ASGI headers (an iterable of `(name, value)` bytes pairs) to the builder; false when one is not plain.
fn push_all(builder: &mut HeadBuilder, headers: &Bound<'_, PyAny>) -> PyResult<bool> {
    for item in headers.try_iter()? {
        let Some((name, value)) = bytes_pair(&item?)? else {
            return Ok(false);
        };
        if !builder.push(name.as_bytes(), value.as_bytes()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `(head, content_length)` for a response head uvicorn would write the same way (`content_length` -1: the body
/// is chunked), or None when a header needs uvicorn's own code (invalid, `connection`, `transfer-encoding`, an
/// unusual `content-length`, or not a pair of bytes).
#[pyfunction]
fn response_head<'py>(
    py: Python<'py>,
    status_line: &[u8],
    defaults: &Bound<'py, PyAny>,
    headers: &Bound<'py, PyAny>,
    keep_alive: bool,
) -> PyResult<Option<(Bound<'py, PyBytes>, i64)>> {
    let mut builder = HeadBuilder::new(status_line);
    if !push_all(&mut builder, defaults)? || !push_all(&mut builder, headers)? {
        return Ok(None);
    }
    Ok(builder.finish(keep_alive).map(|head| {
        let length = head.content_length.and_then(|n| i64::try_from(n).ok()).unwrap_or(-1);
        (PyBytes::new(py, &head.bytes), length)
    }))
}

/// OpenAI's `x-ratelimit-*` headers as ASGI `(name, value)` bytes pairs, the values of Python's
/// `ratelimit_headers`; None when a limit is above 2**53 or a level is not finite (Python then builds them).
#[pyfunction]
fn ratelimit_header_pairs<'py>(
    py: Python<'py>,
    rpm: Option<&Bound<'py, PyAny>>,
    tpm: Option<&Bound<'py, PyAny>>,
    rpm_level: f64,
    tpm_level: f64,
) -> Option<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let (Some(rpm), Some(tpm)) = (as_limit(rpm), as_limit(tpm)) else {
        return None;
    };
    let headers = ratelimit_headers(rpm, tpm, rpm_level, tpm_level)?;
    Some(
        headers
            .iter()
            .map(|(name, value)| (PyBytes::new(py, name), PyBytes::new(py, value)))
            .collect(),
    )
}

/// `Some(None)` for no limit, `Some(Some(n))` for a limit, `None` for an int beyond 64 bits (Python's are unbounded).
fn as_limit(v: Option<&Bound<'_, PyAny>>) -> Option<Option<u64>> {
    match v {
        None => Some(None),
        Some(v) => v.extract::<u64>().ok().map(Some),
    }
}

/// `(key_hash, content_length)` from ASGI request headers (lower-case names; the last value of a name counts, as in
/// a dict): the SHA-256 hex of an API key the fast path can judge (else None: the Python code judges it), and the
/// `content-length` value as latin-1 text (or None). None when an item is not a pair of bytes.
#[pyfunction]
fn request_key(headers: &Bound<'_, PyAny>) -> PyResult<Option<(Option<String>, Option<String>)>> {
    let (mut authorization, mut x_api_key, mut length) = (None, None, None);
    for item in headers.try_iter()? {
        let Some((name, value)) = bytes_pair(&item?)? else {
            return Ok(None);
        };
        match name.as_bytes() {
            b"authorization" => authorization = Some(value),
            b"x-api-key" => x_api_key = Some(value),
            b"content-length" => length = Some(value),
            _ => {}
        }
    }
    let (authorization, x_api_key) = (
        authorization.as_ref().map(|v| v.as_bytes()),
        x_api_key.as_ref().map(|v| v.as_bytes()),
    );
    let hash = api_key(authorization, x_api_key).map(key_hash);
    let length = length.map(|v| v.as_bytes().iter().map(|&b| char::from(b)).collect());
    Ok(Some((hash, length)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(response_head, m)?)?;
    m.add_function(wrap_pyfunction!(ratelimit_header_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(request_key, m)?)?;
    Ok(())
}
