//! Python glue for `crate::audit`: `audit_record`, one call per request for the audit log and the access log, and
//! `chain_hashes`, one call per batch of the audit writer.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::audit::{
    self, ATTEMPT_FIELDS, ATTEMPTS, COLUMNS, FIELDS, FINDING_FIELDS, FINDINGS, KINDS, Kind, Record, Value,
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

/// The five values of each item of a list: by attribute for attempts (`Attempt` objects: `ctx.record()` reads
/// them so), by key for DLP findings (dicts: a missing key is None). None for an item of another kind.
fn items<'py>(list: &Bound<'py, PyAny>, names: &[Py<PyString>], by_key: bool) -> Option<Vec<[Bound<'py, PyAny>; 5]>> {
    let list = list.cast_exact::<PyList>().ok()?;
    let py = list.py();
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        let dict = item.cast_exact::<PyDict>().ok();
        if dict.is_some() != by_key {
            return None;
        }
        let get = |name: &Py<PyString>| -> Option<Bound<'py, PyAny>> {
            let name = name.bind(py);
            match dict {
                Some(d) => Some(d.get_item(name).ok()?.unwrap_or_else(|| py.None().into_bound(py))),
                None => item.getattr(name).ok(),
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
        items(&objs[ATTEMPTS], &names.attempt, false),
        items(&objs[FINDINGS], &names.finding, true),
    ) else {
        return Ok(None);
    };
    let mut fields = [Value::Null; 26];
    for (i, (obj, &kind)) in objs.iter().zip(KINDS.iter()).enumerate() {
        if kind != Kind::List {
            match scalar(obj) {
                Some(v) if kind.keeps(v) => fields[i] = v,
                _ => return Ok(None),
            }
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
    let cols = PyTuple::new(py, COLUMNS.map(|i| &objs[i]))?;
    Ok(Some((text, line, cols)))
}

/// Below this many bytes the hashes are made with the GIL held: `chain_hashes` also runs on the request path (a
/// record overflowing a full queue is linked there), where giving up the GIL can cost the event loop a switch
/// interval for ~2 µs of hashing.
const DETACH_MIN_BYTES: usize = 16 * 1024;

/// The `hash` of each of `records` (canonical texts) chained from `prev`, the first numbered `first_seq`, as
/// `chain.row_hash` makes them one by one (`crate::audit::chain_hashes`); a writer's batch is hashed without
/// the GIL.
#[pyfunction]
fn chain_hashes(py: Python<'_>, chain_id: &str, first_seq: u64, prev: &str, records: Vec<PyBackedStr>) -> Vec<String> {
    let run = || audit::chain_hashes(chain_id, first_seq, prev, &records);
    if records.iter().map(|r| r.len()).sum::<usize>() >= DETACH_MIN_BYTES {
        py.detach(run)
    } else {
        run()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(audit_record, m)?)?;
    m.add_function(wrap_pyfunction!(chain_hashes, m)?)?;
    Ok(())
}
