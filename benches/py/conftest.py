"""Shared fixtures of the Python micro benchmarks (run from the repository root: `pytest benches/py`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benches.corpus` and `tools.*` are imported from the repository root
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiktoken_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Python tiktoken with its cache seeded from the tiktoken-rs crate source, so it never downloads."""
    tiktoken = pytest.importorskip("tiktoken")
    from tools.seed_tiktoken_cache import seed

    cache = tmp_path_factory.mktemp("tiktoken-cache")
    if not seed(cache):
        pytest.skip("tiktoken-rs crate source (with its assets/) not found in the cargo registry: run `cargo fetch`")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        yield tiktoken
