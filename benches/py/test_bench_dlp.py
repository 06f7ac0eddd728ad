"""DLP: one native `DlpEngine.apply` call per request vs Python `re` running the same rules (one pass per pattern).

Same run, same inputs: `make_corpus("mixed", ...)` prompts of ~620 B, 16 KiB and 1 MiB, clean or with planted
PII/secrets (one corpus example every ~2 KiB, and at least one). The PyPI `hyperscan` package (a wheel with
Vectorscan statically linked) is the raw-engine reference when installed: one block scan of all patterns, no
confirmation, no validators, so it is a floor, not a like-for-like.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benches.corpus import make_corpus
from tests.dlp_corpus import planted_examples
from workjet_fast._workjet_fast import DlpEngine

NATIVE = {"auto": DlpEngine(), "regex": DlpEngine(engine="regex")}
SIZES = {"620B": 620, "16KiB": 16 * 1024, "1MiB": 1024 * 1024}
_EXAMPLES = [example for _, example, _ in planted_examples()]


def _prompt(size: int, planted: bool) -> str:
    text = make_corpus("mixed", size, seed=5)
    if not planted:
        return text
    rng = random.Random(5)
    parts: list[str] = []
    for i in range(0, len(text), 2048):
        parts.append(text[i : i + 2048 - 60])
        parts.append(f" {rng.choice(_EXAMPLES)} ")
    return "".join(parts)[: max(size, 700)]


def _python_rules() -> list[re.Pattern[str]]:
    """The engine's patterns compiled by Python `re` (ASCII classes, `\\z` spelled `\\Z`)."""
    return [re.compile(p.replace(r"\z", r"\Z"), re.ASCII) for _, p in NATIVE["regex"].patterns]


PY_RULES = _python_rules()


def _python_scan(text: str) -> int:
    return sum(1 for rx in PY_RULES for _ in rx.finditer(text))


def _hyperscan_scanner() -> Callable[[bytes], int] | None:
    try:
        import hyperscan  # type: ignore[import-not-found]
    except ImportError:
        return None
    patterns = [p.encode() for _, p in NATIVE["regex"].patterns]
    db = hyperscan.Database()
    db.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns))
    scratch = hyperscan.Scratch(db)

    def scan(data: bytes) -> int:
        hits = [0]

        def on_match(*_: Any) -> None:
            hits[0] += 1

        db.scan(data, match_event_handler=on_match, scratch=scratch)
        return hits[0]

    return scan


HS_SCAN = _hyperscan_scanner()


def _run(benchmark: BenchmarkFixture, fn: Callable[[], object], size: int) -> None:
    if size >= 1 << 20:
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn)


def test_python_patterns_are_the_builtins() -> None:
    assert len(PY_RULES) == len(NATIVE["regex"].rule_ids)


@pytest.mark.parametrize("planted", [False, True], ids=["clean", "pii"])
@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("impl", ["native-auto", "native-regex", "python-re", "hyperscan-raw"])
def test_dlp_apply(benchmark: BenchmarkFixture, impl: str, size: str, planted: bool) -> None:
    text = _prompt(SIZES[size], planted)
    benchmark.extra_info["bytes"] = len(text.encode())
    if impl.startswith("native"):
        engine = NATIVE[impl.removeprefix("native-")]
        _run(benchmark, lambda: engine.apply([text]), SIZES[size])
        result = engine.apply([text])
        assert (result.findings != []) == planted or not planted
    elif impl == "python-re":
        _run(benchmark, lambda: _python_scan(text), SIZES[size])
    else:
        if HS_SCAN is None:
            pytest.skip("PyPI hyperscan is not installed")
        data = text.encode()
        _run(benchmark, lambda: HS_SCAN(data), SIZES[size])
