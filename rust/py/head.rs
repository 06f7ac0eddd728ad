//! Python glue for `crate::head`: `response_head`, for the gateway's uvicorn protocol.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::head::HeadBuilder;

/// Feed ASGI headers (an iterable of `(name, value)` bytes pairs) to the builder; false when one is not plain.
fn push_all(builder: &mut HeadBuilder, headers: &Bound<'_, PyAny>) -> PyResult<bool> {
    for item in headers.try_iter()? {
        let item = item?;
        let Ok(pair) = item.cast::<PyTuple>() else {
            return Ok(false);
        };
        if pair.len() != 2 {
            return Ok(false);
        }
        let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
        let (Ok(name), Ok(value)) = (name.cast::<PyBytes>(), value.cast::<PyBytes>()) else {
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(response_head, m)?)?;
    Ok(())
}
