//! Python glue for `crate::audit`: `audit_record`, one call per request for the audit log and the access log.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::audit::{ATTEMPT_FIELDS, ATTEMPTS, FIELDS, FINDING_FIELDS, FINDINGS, Record, Value};

/// How `record.normalise` treats a field; a value it would change sends the record to the Python path.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Kept as is: any JSON scalar.
    Any,
    /// `request_id`: a non-empty ASCII string without NUL.
    Id,
    /// Indexed text columns: None, or ASCII without NUL.
    Text,
    /// `_NUMBERS`: None, or a float within ±1e300.
    Number,
    /// `started_at`: a float within ±1e300 (None takes `ended_at or 0.0`: the Python path).
    Start,
    /// `status`: None, or an int that fits an INTEGER column.
    Status,
    /// Token counts: None, or an int in 0..2^63.
    Count,
    /// The lists, read apart.
    List,
}

const KINDS: [Kind; 26] = {
    use Kind::*;
    [
        Id, Any, Start, Any, Text, Text, Any, Text, Any, Text, Any, List, Status, Any, Any, Number, Number, Count, Any,
        Count, Any, Any, List, Any, Number, Number,
    ]
};

/// The attribute and key names, interned once: making them per call cost more than the rest of the call.
struct Names {
    fields: Vec<Py<PyString>>,
    attempt: Vec<Py<PyString>>,
    finding: Vec<Py<PyString>>,
}

static NAMES: PyOnceLock<Names> = PyOnceLock::new();

fn names(py: Python<'_>) -> &Names {
    NAMES.get_or_init(py, || {
        let all = |names: &[&str]| names.iter().map(|n| PyString::intern(py, n).unbind()).collect();
        Names {
            fields: all(&FIELDS),
            attempt: all(&ATTEMPT_FIELDS),
            finding: all(&FINDING_FIELDS),
        }
    })
}

/// A JSON scalar orjson writes without `default=str`, borrowed from its Python object; None for anything else.
fn scalar<'a>(obj: &'a Bound<'_, PyAny>) -> Option<Value<'a>> {
    if obj.is_none() {
        Some(Value::Null)
    } else if let Ok(s) = obj.cast_exact::<PyString>() {
        s.to_str().ok().map(Value::Str) // lone surrogates: orjson refuses them, so does the Python path's fallback
    } else if obj.is_exact_instance_of::<PyBool>() {
        Some(Value::Bool(obj.is_truthy().ok()?))
    } else if obj.is_exact_instance_of::<PyInt>() {
        obj.extract::<i64>().ok().map(Value::Int)
    } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
        let v = f.value();
        v.is_finite().then_some(Value::Float(v))
    } else {
        None
    }
}

fn plain_text(s: &str) -> bool {
    s.is_ascii() && !s.contains('\0')
}

fn field<'a>(obj: &'a Bound<'_, PyAny>, kind: Kind) -> Option<Value<'a>> {
    let v = scalar(obj)?;
    let ok = match (kind, v) {
        (Kind::Any, _) => true,
        (Kind::Id, Value::Str(s)) => !s.is_empty() && plain_text(s),
        (Kind::Text, Value::Str(s)) => plain_text(s),
        (Kind::Text | Kind::Number | Kind::Status | Kind::Count, Value::Null) => true,
        (Kind::Number | Kind::Start, Value::Float(f)) => -1e300 < f && f < 1e300,
        (Kind::Status, Value::Int(i)) => i32::try_from(i).is_ok(),
        (Kind::Count, Value::Int(i)) => i >= 0,
        _ => false,
    };
    ok.then_some(v)
}

/// The five values of each item, read by attribute (an `Attempt`) or by key (a dict; a missing key is None).
fn items<'py>(list: &Bound<'py, PyAny>, names: &[Py<PyString>]) -> Option<Vec<[Bound<'py, PyAny>; 5]>> {
    let list = list.cast_exact::<PyList>().ok()?;
    let py = list.py();
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        let get = |name: &Py<PyString>| -> Option<Bound<'py, PyAny>> {
            let name = name.bind(py);
            if let Ok(d) = item.cast_exact::<PyDict>() {
                Some(d.get_item(name).ok()?.unwrap_or_else(|| py.None().into_bound(py)))
            } else {
                item.getattr(name).ok()
            }
        };
        out.push([
            get(&names[0])?,
            get(&names[1])?,
            get(&names[2])?,
            get(&names[3])?,
            get(&names[4])?,
        ]);
    }
    Some(out)
}

fn values<'a>(objs: &'a [[Bound<'_, PyAny>; 5]]) -> Option<Vec<[Value<'a>; 5]>> {
    objs.iter()
        .map(|o| {
            Some([
                scalar(&o[0])?,
                scalar(&o[1])?,
                scalar(&o[2])?,
                scalar(&o[3])?,
                scalar(&o[4])?,
            ])
        })
        .collect()
}

/// What `audit_record` returns: (canonical text, access-log line or None, columns).
type Made<'py> = (Bound<'py, PyString>, Option<Bound<'py, PyBytes>>, Bound<'py, PyTuple>);

/// `(canonical text, access-log line or None, columns)` for a finished `RequestContext`, exactly what
/// `normalise` + `canonical` + `access_log_line` + `columns` make of `ctx.record()`; None when a value is one
/// `normalise` would change or orjson would need `default=str` for (and when bodies were kept): the caller
/// takes the Python path then. `columns`: (request_id, started_at, key_id, key_name, requested_model, served_by,
/// status), the audit table's indexed columns.
#[pyfunction]
fn audit_record<'py>(py: Python<'py>, ctx: &Bound<'py, PyAny>, access: bool) -> PyResult<Option<Made<'py>>> {
    if !ctx.getattr(intern!(py, "request_body"))?.is_none() || !ctx.getattr(intern!(py, "response_body"))?.is_none() {
        return Ok(None);
    }
    let names = names(py);
    let mut objs: Vec<Bound<'py, PyAny>> = Vec::with_capacity(FIELDS.len());
    for name in &names.fields {
        objs.push(ctx.getattr(name.bind(py))?);
    }
    let (Some(attempts), Some(findings)) = (
        items(&objs[ATTEMPTS], &names.attempt),
        items(&objs[FINDINGS], &names.finding),
    ) else {
        return Ok(None);
    };
    let mut fields = [Value::Null; 26];
    for (i, (obj, &kind)) in objs.iter().zip(KINDS.iter()).enumerate() {
        if kind != Kind::List {
            let Some(v) = field(obj, kind) else {
                return Ok(None);
            };
            fields[i] = v;
        }
    }
    let (Some(attempts), Some(findings)) = (values(&attempts), values(&findings)) else {
        return Ok(None);
    };
    let rec = Record {
        fields,
        attempts,
        findings,
    };
    let text = PyString::new(py, &rec.canonical());
    let line = access.then(|| PyBytes::new(py, rec.access_line().as_bytes()));
    let cols = PyTuple::new(py, [0usize, 2, 4, 5, 7, 9, 12].map(|i| &objs[i]))?;
    Ok(Some((text, line, cols)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(audit_record, m)?)?;
    Ok(())
}
