//! Hot paths of the Workjet gateway, as plain Rust.
//!
//! Every module here is pure Rust with its own `#[cfg(test)]` tests; `cargo test` never links
//! libpython. The PyO3 glue lives in `py/` behind the `python` feature and only converts
//! arguments, calls one function from here and maps errors.

pub mod audit;
pub mod dlp;
pub mod filter;
pub mod head;
pub mod limits;
pub mod relay;
pub mod request;
pub mod sse;
pub mod tokens;

#[cfg(feature = "python")]
mod py;
