//! The Python exception hierarchy, declared once:
//!
//! ```text
//! WorkjetError
//!  ├── SseError        (a stream broke a size cap or the framing contract)
//!  ├── DlpError        (a rule failed to compile, a scan could not run)
//!  └── TokenizerError  (unknown encoding)
//! ```

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _workjet_fast,
    WorkjetError,
    PyException,
    "Base class of every error raised by the native module."
);
create_exception!(
    _workjet_fast,
    SseError,
    WorkjetError,
    "An event stream broke a size cap or the framing contract."
);
create_exception!(
    _workjet_fast,
    DlpError,
    WorkjetError,
    "A DLP rule failed to compile or a scan could not run."
);
create_exception!(
    _workjet_fast,
    TokenizerError,
    WorkjetError,
    "A token counting request could not be served."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("WorkjetError", py.get_type::<WorkjetError>())?;
    m.add("SseError", py.get_type::<SseError>())?;
    m.add("DlpError", py.get_type::<DlpError>())?;
    m.add("TokenizerError", py.get_type::<TokenizerError>())?;
    Ok(())
}
