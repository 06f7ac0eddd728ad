//! Exact, offline token counting compatible with tiktoken's `o200k_base` and `cl100k_base`.
