//! Python glue for `crate::sse` and `crate::relay`: the `SseParser` and `ChunkRelay` classes.

use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::errors::SseError;
use crate::filter::FindingNote;
use crate::relay::{ChunkRelay, FilterFactory, RelayError};
use crate::sse::{self, SseLimits, SseParser};

/// Below this many bytes a call is cheaper than releasing and re-taking the GIL.
const DETACH_MIN_BYTES: usize = 16 * 1024;

// The `#[pyo3(signature)]` defaults below are literals so that Python sees them (and stubtest checks the .pyi).
const _: () = assert!(SseLimits::DEFAULT_MAX_LINE_BYTES == 1048576 && SseLimits::DEFAULT_MAX_EVENT_BYTES == 4194304);

impl From<sse::SseError> for PyErr {
    fn from(err: sse::SseError) -> Self {
        SseError::new_err(err.to_string())
    }
}

impl From<RelayError> for PyErr {
    fn from(err: RelayError) -> Self {
        match err {
            RelayError::Sse(err) => err.into(),
        }
    }
}

fn limits(max_line_bytes: usize, max_event_bytes: usize, lenient_eof: bool) -> SseLimits {
    SseLimits {
        max_line_bytes,
        max_event_bytes,
        lenient_eof,
    }
}

type PyEvent = (Option<String>, String);
type PyEventRef<'py> = (Option<Bound<'py, PyString>>, Bound<'py, PyString>);

fn py_event<'py>(py: Python<'py>, event: Option<&str>, data: &[u8]) -> PyEventRef<'py> {
    (
        event.map(|e| PyString::new(py, e)),
        PyString::new(py, &String::from_utf8_lossy(data)),
    )
}

fn to_py_events(events: Vec<sse::Event>) -> Vec<PyEvent> {
    events.into_iter().map(|e| (e.event, e.data)).collect()
}

/// Incremental SSE parser: `feed(bytes) -> [(event, data), ...]`, then `finish()` at end of stream.
#[pyclass(module = "workjet_fast._workjet_fast", name = "SseParser")]
pub struct PySseParser {
    inner: SseParser,
}

#[pymethods]
impl PySseParser {
    #[new]
    #[pyo3(signature = (max_line_bytes = 1048576, max_event_bytes = 4194304, lenient_eof = true))]
    fn new(max_line_bytes: usize, max_event_bytes: usize, lenient_eof: bool) -> Self {
        Self {
            inner: SseParser::new(limits(max_line_bytes, max_event_bytes, lenient_eof)),
        }
    }

    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Vec<PyEventRef<'py>>> {
        if data.len() >= DETACH_MIN_BYTES {
            let events = py.detach(|| self.inner.feed(data))?;
            return Ok(events
                .iter()
                .map(|e| py_event(py, e.event.as_deref(), e.data.as_bytes()))
                .collect());
        }
        // Small reads: build the Python strings straight from the parser's buffers, with no Rust copy in between.
        let mut events = Vec::new();
        self.inner
            .feed_with(data, &mut |e| events.push(py_event(py, e.event, e.data)))?;
        Ok(events)
    }

    fn finish(&mut self) -> Vec<PyEvent> {
        to_py_events(self.inner.finish())
    }
}

/// Relays an upstream OpenAI chat stream: `feed(bytes) -> bytes` per network read, `finish() -> bytes` at the end;
/// the stream's outcome is read from the properties once it is over.
#[pyclass(module = "workjet_fast._workjet_fast", name = "ChunkRelay")]
pub struct PyChunkRelay {
    /// A pyclass must be `Sync` and filters are only `Send`; `&mut self` methods reach it with `get_mut`, lock-free.
    inner: Mutex<ChunkRelay>,
    buf: Vec<u8>,
}

impl PyChunkRelay {
    /// A relay whose choices each get a filter from `factory`: the DLP glue builds its relays through this.
    #[allow(dead_code)] // until the DLP glue calls it
    pub(crate) fn with_filter(public_model: Option<String>, factory: FilterFactory, limits: SseLimits) -> Self {
        Self {
            inner: Mutex::new(ChunkRelay::new(public_model, Some(factory), limits)),
            buf: Vec::new(),
        }
    }

    fn relay(&self) -> std::sync::MutexGuard<'_, ChunkRelay> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl PyChunkRelay {
    #[new]
    #[pyo3(signature = (public_model = None, max_line_bytes = 1048576, max_event_bytes = 4194304))]
    fn new(public_model: Option<String>, max_line_bytes: usize, max_event_bytes: usize) -> Self {
        let limits = limits(max_line_bytes, max_event_bytes, true);
        Self {
            inner: Mutex::new(ChunkRelay::new(public_model, None, limits)),
            buf: Vec::new(),
        }
    }

    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        self.buf.clear();
        let (inner, buf) = (
            self.inner.get_mut().unwrap_or_else(PoisonError::into_inner),
            &mut self.buf,
        );
        if data.len() >= DETACH_MIN_BYTES {
            py.detach(|| inner.feed_into(data, buf))?;
        } else {
            inner.feed_into(data, buf)?;
        }
        Ok(PyBytes::new(py, &self.buf))
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.buf.clear();
        self.inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .finish_into(&mut self.buf);
        PyBytes::new(py, &self.buf)
    }

    #[getter]
    fn done(&self) -> bool {
        self.relay().done()
    }

    #[getter]
    fn blocked(&self) -> bool {
        self.relay().blocked()
    }

    #[getter]
    fn usage(&self) -> Option<(u64, u64)> {
        self.relay().usage()
    }

    #[getter]
    fn finish_reason(&self) -> Option<String> {
        self.relay().finish_reason().map(str::to_owned)
    }

    #[getter]
    fn error(&self) -> Option<String> {
        self.relay().error().map(str::to_owned)
    }

    #[getter]
    fn content_chars(&self) -> u64 {
        self.relay().content_chars()
    }

    /// `(rule_id, entity, action, value_hmac)` for every finding so far.
    #[getter]
    fn findings(&self) -> Vec<(String, String, &'static str, Option<String>)> {
        self.relay().findings().iter().map(finding_tuple).collect()
    }
}

fn finding_tuple(f: &FindingNote) -> (String, String, &'static str, Option<String>) {
    (f.rule_id.clone(), f.entity.clone(), f.action, f.value_hmac.clone())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySseParser>()?;
    m.add_class::<PyChunkRelay>()?;
    Ok(())
}
