//! The only PyO3 code: the `workjet_fast._workjet_fast` module.
//!
//! Each submodule converts arguments, calls one pure function and maps the error; nothing else.
#![allow(unsafe_code)] // PyO3's macro expansions use unsafe internally

use pyo3::prelude::*;

mod audit;
mod dlp;
mod errors;
mod head;
mod sse;
mod tokens;
mod validate;

#[pymodule(gil_used = false)]
fn _workjet_fast(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    audit::register(m)?;
    head::register(m)?;
    sse::register(m)?;
    tokens::register(m)?;
    dlp::register(m)?;
    validate::register(m)?;
    Ok(())
}
