//! Criterion benchmarks of the DLP engines (filled in below).
fn main() {}
