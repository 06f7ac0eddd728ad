//! Python glue for the chat body check: `chat_ok`, the fast positive answer of `pipeline/validate.py`.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::type_object::PyTypeCheck;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::request::{known_part_type, known_role};

/// `(model, stream)` when `validate_chat(body)` would return them without raising; None for anything else,
/// including what the check cannot decide as Python would (an int beyond 64 bits): `validate_chat` then runs and
/// says what is wrong.
#[pyfunction]
fn chat_ok<'py>(body: &Bound<'py, PyAny>) -> PyResult<Option<(Bound<'py, PyString>, bool)>> {
    let py = body.py();
    let Ok(body) = body.cast::<PyDict>() else {
        return Ok(None);
    };
    let Some(model) = item::<PyString>(body, intern!(py, "model"))? else {
        return Ok(None);
    };
    if model.to_str().map_or(true, str::is_empty) {
        return Ok(None);
    }
    let Some(messages) = item::<PyList>(body, intern!(py, "messages"))? else {
        return Ok(None);
    };
    if messages.is_empty() {
        return Ok(None);
    }
    for msg in messages.iter() {
        if !message_ok(&msg)? {
            return Ok(None);
        }
    }
    let number = |name: &Bound<'py, PyString>, hi: f64| -> PyResult<bool> {
        Ok(match body.get_item(name)? {
            None => true,
            Some(v) => number_ok(&v, hi),
        })
    };
    let positive = |name: &Bound<'py, PyString>| -> PyResult<bool> {
        Ok(match body.get_item(name)? {
            None => true,
            Some(v) => v.is_none() || positive_ok(&v),
        })
    };
    if !number(intern!(py, "temperature"), 2.0)?
        || !number(intern!(py, "top_p"), 1.0)?
        || !positive(intern!(py, "max_tokens"))?
        || !positive(intern!(py, "max_completion_tokens"))?
    {
        return Ok(None);
    }
    let stream = match body.get_item(intern!(py, "stream"))? {
        None => false,
        Some(v) if v.is_none() => false,
        Some(v) if v.is_exact_instance_of::<PyBool>() => v.is_truthy()?,
        Some(_) => return Ok(None),
    };
    Ok(Some((model, stream)))
}

/// `dict[name]` when it is there and a `T` (or a subclass, as `isinstance` says); None otherwise.
fn item<'py, T: PyTypeCheck>(
    dict: &Bound<'py, PyDict>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, T>>> {
    Ok(dict.get_item(name)?.and_then(|v| v.cast_into::<T>().ok()))
}

/// `_number`: None, or an int or float (not a bool) within [0, hi].
fn number_ok(v: &Bound<'_, PyAny>, hi: f64) -> bool {
    if v.is_none() {
        return true;
    }
    if v.is_instance_of::<PyBool>() {
        return false;
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        let f = f.value();
        return (0.0..=hi).contains(&f);
    }
    if v.is_instance_of::<PyInt>() {
        return v.extract::<i64>().is_ok_and(|i| i >= 0 && (i as f64) <= hi);
    }
    false
}

/// `_positive_int`: an int (not a bool) above 0.
fn positive_ok(v: &Bound<'_, PyAny>) -> bool {
    !v.is_instance_of::<PyBool>() && v.is_instance_of::<PyInt>() && v.extract::<i64>().is_ok_and(|i| i > 0)
}

/// One message as `validate_chat` and `_content` check it.
fn message_ok(msg: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = msg.py();
    let Ok(msg) = msg.cast::<PyDict>() else {
        return Ok(false);
    };
    let Some(role) = item::<PyString>(msg, intern!(py, "role"))? else {
        return Ok(false);
    };
    let Ok(role) = role.to_str() else {
        return Ok(false);
    };
    if !known_role(role) {
        return Ok(false);
    }
    let content = msg.get_item(intern!(py, "content"))?;
    let Some(content) = content.filter(|c| !c.is_none()) else {
        // Only an assistant turn that carries tool or function calls may go without content.
        let truthy = |name: &Bound<'_, PyString>| -> PyResult<bool> {
            Ok(match msg.get_item(name)? {
                Some(v) => v.is_truthy()?,
                None => false,
            })
        };
        return Ok(role == "assistant" && (truthy(intern!(py, "tool_calls"))? || truthy(intern!(py, "function_call"))?));
    };
    if content.is_instance_of::<PyString>() {
        return Ok(true);
    }
    let Ok(parts) = content.cast::<PyList>() else {
        return Ok(false);
    };
    for part in parts.iter() {
        let Ok(part) = part.cast::<PyDict>() else {
            return Ok(false);
        };
        let Some(kind) = item::<PyString>(part, intern!(py, "type"))? else {
            return Ok(false);
        };
        let Ok(kind) = kind.to_str() else {
            return Ok(false);
        };
        if !known_part_type(kind) {
            return Ok(false);
        }
        if kind == "text" {
            let text = part.get_item(intern!(py, "text"))?;
            if !text.is_some_and(|t| t.is_instance_of::<PyString>()) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(chat_ok, m)?)?;
    Ok(())
}
