//! Python glue for `crate::dlp`: `DlpEngine`, `DlpPolicy`, `Finding`, `ScanResult`, `DlpStream`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::errors::DlpError;
use super::sse::PyChunkRelay;
use crate::dlp::redact::{apply, char_spans, redact};
use crate::dlp::stream::{StreamScanner, filter_factory};
use crate::dlp::{self, Direction, Engine, Policy};
use crate::filter::{FilterOutput, FindingNote, TextFilter};
use crate::sse::SseLimits;

/// Below this many bytes a scan is cheaper than releasing and re-taking the GIL.
const DETACH_MIN_BYTES: usize = 4096;

impl From<dlp::DlpError> for PyErr {
    fn from(err: dlp::DlpError) -> Self {
        DlpError::new_err(err.to_string())
    }
}

fn direction(s: &str) -> Result<Direction, dlp::DlpError> {
    match s {
        "request" => Ok(Direction::Request),
        "response" => Ok(Direction::Response),
        other => Err(dlp::DlpError::Config(format!(
            "direction must be \"request\" or \"response\", not {other:?}"
        ))),
    }
}

/// What to do with findings: per-rule actions, allow-lists, disabled rules, an optional HMAC key.
#[pyclass(module = "workjet_fast._workjet_fast", name = "DlpPolicy", frozen)]
pub struct PyDlpPolicy {
    inner: Arc<Policy>,
}

#[pymethods]
impl PyDlpPolicy {
    #[new]
    #[pyo3(signature = (actions = None, allow_values = None, allow_patterns = None, disabled = None, hmac_key = None))]
    fn new(
        actions: Option<HashMap<String, String>>,
        allow_values: Option<Vec<String>>,
        allow_patterns: Option<Vec<String>>,
        disabled: Option<Vec<String>>,
        hmac_key: Option<Vec<u8>>,
    ) -> PyResult<Self> {
        let mut actions: Vec<(String, String)> = actions.unwrap_or_default().into_iter().collect();
        actions.sort();
        let policy = Policy::new(
            &actions,
            &allow_values.unwrap_or_default(),
            &allow_patterns.unwrap_or_default(),
            &disabled.unwrap_or_default(),
            hmac_key.as_deref(),
        )?;
        Ok(Self {
            inner: Arc::new(policy),
        })
    }
}

fn policy_of(policy: Option<&PyDlpPolicy>) -> Arc<Policy> {
    policy.map_or_else(|| Arc::new(Policy::default()), |p| Arc::clone(&p.inner))
}

/// One finding: rule, entity, char offsets (for Python slicing) and byte offsets (UTF-8).
#[pyclass(module = "workjet_fast._workjet_fast", name = "Finding", frozen, get_all)]
pub struct PyFinding {
    rule_id: String,
    entity: String,
    start: usize,
    end: usize,
    byte_start: usize,
    byte_end: usize,
}

#[pymethods]
impl PyFinding {
    fn __repr__(&self) -> String {
        format!(
            "Finding(rule_id={:?}, entity={:?}, start={}, end={}, byte_start={}, byte_end={})",
            self.rule_id, self.entity, self.start, self.end, self.byte_start, self.byte_end
        )
    }
}

/// The decision for one request: no matched values, only counts (and keyed hashes when asked for).
#[pyclass(module = "workjet_fast._workjet_fast", name = "ScanResult", frozen, get_all)]
pub struct PyScanResult {
    blocked: bool,
    texts: Option<Vec<String>>,
    findings: Vec<(String, String, String, usize)>,
    value_hmacs: Option<Vec<(String, String)>>,
}

/// A compiled ruleset: the built-ins plus custom rules (JSON), on the Vectorscan or the pure-Rust engine.
#[pyclass(module = "workjet_fast._workjet_fast", name = "DlpEngine", frozen)]
pub struct PyDlpEngine {
    inner: Arc<Engine>,
}

type NoteTuple = (String, String, String, Option<String>);

fn note_tuple(n: FindingNote) -> NoteTuple {
    (n.rule_id, n.entity, n.action.to_owned(), n.value_hmac)
}

#[pymethods]
impl PyDlpEngine {
    #[new]
    #[pyo3(signature = (rules_json = None, engine = "auto"))]
    fn new(py: Python<'_>, rules_json: Option<String>, engine: &str) -> PyResult<Self> {
        let engine = engine.to_owned();
        let inner = py.detach(|| Engine::new(rules_json.as_deref(), &engine))?;
        Ok(Self { inner: Arc::new(inner) })
    }

    /// "hyperscan" or "regex": the candidate finder actually in use.
    #[getter]
    fn engine(&self) -> &'static str {
        self.inner.kind().as_str()
    }

    #[getter]
    fn rule_ids(&self) -> Vec<String> {
        self.inner.rules().iter().map(|r| r.rule.id.clone()).collect()
    }

    /// `(rule_id, entity, category)` of every rule, for expanding per-entity policies to rule ids.
    #[getter]
    fn rules(&self) -> Vec<(String, String, &'static str)> {
        self.inner
            .rules()
            .iter()
            .map(|r| {
                let category = match r.rule.category {
                    dlp::rules::Category::Secret => "secret",
                    dlp::rules::Category::Pii => "pii",
                };
                (r.rule.id.clone(), r.rule.entity.clone(), category)
            })
            .collect()
    }

    /// `(rule_id, pattern)` of every rule, in rule order (the benchmarks run them with Python `re`).
    #[getter]
    fn patterns(&self) -> Vec<(String, String)> {
        self.inner
            .rules()
            .iter()
            .map(|r| (r.rule.id.clone(), r.rule.pattern.clone()))
            .collect()
    }

    /// Worst-case stream hold-back in bytes.
    #[getter]
    fn max_holdback(&self) -> usize {
        self.inner.max_holdback()
    }

    /// All findings of every rule (no policy).
    fn scan(&self, py: Python<'_>, text: &str) -> Vec<PyFinding> {
        let run = || self.inner.scan(text);
        let found = if text.len() >= DETACH_MIN_BYTES {
            py.detach(run)
        } else {
            run()
        };
        let spans: Vec<(usize, usize)> = found.iter().map(|f| (f.start, f.end)).collect();
        let chars = char_spans(text, &spans);
        found
            .iter()
            .zip(chars)
            .map(|(f, (cs, ce))| {
                let r = self.inner.rule(f.rule);
                PyFinding {
                    rule_id: r.id.clone(),
                    entity: r.entity.clone(),
                    start: cs,
                    end: ce,
                    byte_start: f.start,
                    byte_end: f.end,
                }
            })
            .collect()
    }

    /// `text` with each finding replaced by `[REDACTED:<ENTITY>]` (byte offsets are used; overlaps merged).
    fn redact(&self, text: &str, findings: Vec<PyRef<'_, PyFinding>>) -> PyResult<String> {
        let spans: Vec<(usize, usize, &str)> = findings
            .iter()
            .map(|f| (f.byte_start, f.byte_end, f.entity.as_str()))
            .collect();
        Ok(redact(text, &spans)?)
    }

    /// The per-request call: every message text at once, under `policy` ("request" defaults: secrets block).
    #[pyo3(signature = (texts, policy = None, direction = "request"))]
    fn apply(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        policy: Option<&PyDlpPolicy>,
        direction: &str,
    ) -> PyResult<PyScanResult> {
        let dir = self::direction(direction)?;
        let policy = policy_of(policy);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let size: usize = refs.iter().map(|t| t.len()).sum();
        let run = || apply(&self.inner, &refs, &policy, dir);
        let res = if size >= DETACH_MIN_BYTES {
            py.detach(run)
        } else {
            run()
        };
        let id = |r: usize| self.inner.rule(r).id.clone();
        let entity = |r: usize| self.inner.rule(r).entity.clone();
        let hashed = policy.value_hmac(b"").is_some();
        Ok(PyScanResult {
            blocked: res.blocked,
            texts: res.texts,
            findings: res
                .findings
                .iter()
                .map(|&(r, a, n)| (id(r), entity(r), a.as_str().to_owned(), n))
                .collect(),
            value_hmacs: hashed.then(|| res.value_hmacs.iter().map(|(r, h)| (id(*r), h.clone())).collect()),
        })
    }

    /// True when the request body's texts (what `pipeline/dlp.py` scans: contents, text parts, tool and function
    /// call arguments) have no finding under `policy` and total at most `max_bytes`: nothing to record or change,
    /// decided in one call. False when any of that does not hold, or the body has a shape the Python walk would
    /// read differently: the caller then scans the Python way, which decides.
    fn request_clean(&self, py: Python<'_>, body: &Bound<'_, PyAny>, policy: &PyDlpPolicy, max_bytes: usize) -> bool {
        let mut texts = Vec::new();
        request_texts(body, &mut texts).is_some() && self.clean(py, &texts, policy, Direction::Request, max_bytes)
    }

    /// `request_clean` for a JSON answer's texts (every choice's message content and call arguments).
    fn response_clean(
        &self,
        py: Python<'_>,
        result: &Bound<'_, PyAny>,
        policy: &PyDlpPolicy,
        max_bytes: usize,
    ) -> bool {
        let mut texts = Vec::new();
        response_texts(result, &mut texts).is_some() && self.clean(py, &texts, policy, Direction::Response, max_bytes)
    }

    /// A streaming scanner for one response text (response defaults: secrets are redacted).
    #[pyo3(signature = (policy = None))]
    fn stream(&self, policy: Option<&PyDlpPolicy>) -> PyDlpStream {
        let scanner = StreamScanner::new(Arc::clone(&self.inner), policy_of(policy));
        PyDlpStream {
            inner: Mutex::new(scanner),
            blocked: false,
            findings: Vec::new(),
        }
    }

    /// A `ChunkRelay` whose every choice's text goes through a streaming scanner of this engine.
    #[pyo3(signature = (policy = None, public_model = None, max_line_bytes = 1048576, max_event_bytes = 4194304))]
    fn relay(
        &self,
        policy: Option<&PyDlpPolicy>,
        public_model: Option<String>,
        max_line_bytes: usize,
        max_event_bytes: usize,
    ) -> PyChunkRelay {
        let factory = filter_factory(Arc::clone(&self.inner), policy_of(policy));
        let limits = SseLimits {
            max_line_bytes,
            max_event_bytes,
            lenient_eof: true,
        };
        PyChunkRelay::with_filter(public_model, factory, limits)
    }
}

impl PyDlpEngine {
    fn clean(
        &self,
        py: Python<'_>,
        texts: &[Bound<'_, PyString>],
        policy: &PyDlpPolicy,
        dir: Direction,
        max_bytes: usize,
    ) -> bool {
        let Ok(refs) = texts.iter().map(|t| t.to_str()).collect::<PyResult<Vec<&str>>>() else {
            return false; // not UTF-8 (a lone surrogate): the Python path says what that means
        };
        let size: usize = refs.iter().map(|t| t.len()).sum();
        if size > max_bytes {
            return false;
        }
        if size < DETACH_MIN_BYTES {
            return self.inner.all_clean(&refs, &policy.inner, dir);
        }
        let owned: Vec<String> = refs.iter().map(|t| (*t).to_owned()).collect();
        py.detach(|| {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            self.inner.all_clean(&refs, &policy.inner, dir)
        })
    }
}

/// The texts `_request_texts` in `pipeline/dlp.py` collects, in its order; `None` for a shape it would walk
/// differently (or fail on), which the Python path then handles.
fn request_texts<'py>(body: &Bound<'py, PyAny>, out: &mut Vec<Bound<'py, PyString>>) -> Option<()> {
    let Some(messages) = body.cast::<PyDict>().ok()?.get_item("messages").ok()? else {
        return Some(());
    };
    if messages.is_none() {
        return Some(());
    }
    for msg in messages.cast::<PyList>().ok()?.iter() {
        let msg = msg.cast_into::<PyDict>().ok()?;
        if let Some(content) = msg.get_item("content").ok()? {
            if let Ok(text) = content.cast::<PyString>() {
                out.push(text.clone());
            } else if let Ok(parts) = content.cast::<PyList>() {
                for part in parts.iter() {
                    if let Ok(part) = part.cast::<PyDict>() {
                        push_str(part.get_item("text").ok()?, out);
                    }
                }
            }
        }
        call_texts(&msg, out)?;
    }
    Some(())
}

/// The texts `_response_texts` collects from a JSON answer; `None` as for `request_texts`.
fn response_texts<'py>(result: &Bound<'py, PyAny>, out: &mut Vec<Bound<'py, PyString>>) -> Option<()> {
    let Some(choices) = result.cast::<PyDict>().ok()?.get_item("choices").ok()? else {
        return Some(());
    };
    if choices.is_none() {
        return Some(());
    }
    for choice in choices.cast::<PyList>().ok()?.iter() {
        let Ok(choice) = choice.cast::<PyDict>() else {
            continue;
        };
        let Some(msg) = choice.get_item("message").ok()? else {
            continue;
        };
        if let Ok(msg) = msg.cast::<PyDict>() {
            push_str(msg.get_item("content").ok()?, out);
            call_texts(msg, out)?;
        }
    }
    Some(())
}

/// `_calls`: tool call arguments, then a legacy function call's.
fn call_texts<'py>(msg: &Bound<'py, PyDict>, out: &mut Vec<Bound<'py, PyString>>) -> Option<()> {
    if let Some(calls) = msg.get_item("tool_calls").ok()?
        && !calls.is_none()
    {
        for call in calls.cast::<PyList>().ok()?.iter() {
            if let Ok(call) = call.cast::<PyDict>()
                && let Some(function) = call.get_item("function").ok()?
                && let Ok(function) = function.cast::<PyDict>()
            {
                push_str(function.get_item("arguments").ok()?, out);
            }
        }
    }
    if let Some(fc) = msg.get_item("function_call").ok()?
        && let Ok(fc) = fc.cast::<PyDict>()
    {
        push_str(fc.get_item("arguments").ok()?, out);
    }
    Some(())
}

fn push_str<'py>(value: Option<Bound<'py, PyAny>>, out: &mut Vec<Bound<'py, PyString>>) {
    if let Some(Ok(text)) = value.map(Bound::cast_into::<PyString>) {
        out.push(text);
    }
}

/// Streaming scanner: `push(text) -> released text`, `finish() -> the rest`.
#[pyclass(module = "workjet_fast._workjet_fast", name = "DlpStream")]
pub struct PyDlpStream {
    /// A pyclass must be `Sync`; `&mut self` methods reach the scanner with `get_mut`, lock-free.
    inner: Mutex<StreamScanner>,
    blocked: bool,
    findings: Vec<NoteTuple>,
}

impl PyDlpStream {
    fn take(&mut self, out: FilterOutput) -> String {
        self.blocked |= out.blocked;
        self.findings.extend(out.findings.into_iter().map(note_tuple));
        out.text
    }
}

#[pymethods]
impl PyDlpStream {
    fn push(&mut self, py: Python<'_>, text: &str) -> String {
        let scanner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        let out = if text.len() >= DETACH_MIN_BYTES {
            py.detach(|| scanner.push(text))
        } else {
            scanner.push(text)
        };
        self.take(out)
    }

    fn finish(&mut self) -> String {
        let out = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner).finish();
        self.take(out)
    }

    #[getter]
    fn blocked(&self) -> bool {
        self.blocked
    }

    /// (rule_id, entity, action, value_hmac) per finding so far.
    #[getter]
    fn findings(&self) -> Vec<NoteTuple> {
        self.findings.clone()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDlpEngine>()?;
    m.add_class::<PyDlpPolicy>()?;
    m.add_class::<PyFinding>()?;
    m.add_class::<PyScanResult>()?;
    m.add_class::<PyDlpStream>()?;
    Ok(())
}
