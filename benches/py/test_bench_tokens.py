"""Native `count_tokens` vs Python tiktoken (`encode_ordinary`) on the same prompts."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benches.corpus import make_corpus
from workjet_fast._workjet_fast import count_tokens

PROMPTS = {size: make_corpus("mixed", size, seed=size) for size in (1024, 16 * 1024, 1024 * 1024)}


@pytest.mark.parametrize("size", list(PROMPTS), ids=["1KB", "16KB", "1MB"])
@pytest.mark.parametrize("impl", ["native", "tiktoken"])
def test_count_tokens(benchmark: BenchmarkFixture, tiktoken_offline: Any, impl: str, size: int) -> None:
    text = PROMPTS[size]
    enc = tiktoken_offline.get_encoding("o200k_base")
    want = len(enc.encode_ordinary(text))
    benchmark.extra_info["bytes"] = len(text.encode())
    if impl == "native":
        assert benchmark(count_tokens, text, "o200k_base") == want
    else:
        assert benchmark(lambda: len(enc.encode_ordinary(text))) == want


# One word with no break: a single piece to merge, the worst case per byte for every counter (tiktoken's merge is
# quadratic in it; ours is O(n log n)).
RUNS = {size: "x" * size for size in (64 * 1024, 256 * 1024)}


@pytest.mark.parametrize("size", list(RUNS), ids=["64KiB", "256KiB"])
@pytest.mark.parametrize("impl", ["native", "tiktoken"])
def test_count_tokens_one_long_word(benchmark: BenchmarkFixture, tiktoken_offline: Any, impl: str, size: int) -> None:
    text = RUNS[size]
    enc = tiktoken_offline.get_encoding("o200k_base")
    want = len(enc.encode_ordinary(text))
    if impl == "native":
        assert benchmark(count_tokens, text, "o200k_base") == want
    else:
        assert benchmark(lambda: len(enc.encode_ordinary(text))) == want
