"""Native SSE parser and relay vs the pure-Python + orjson baseline, on one ~256 KiB OpenAI stream in 1-4 KiB reads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benches.corpus import make_corpus, make_openai_stream, split_reads
from benches.py.baseline_sse import PyChunkRelay, PySseParser
from workjet_fast._workjet_fast import ChunkRelay, SseParser

STREAM = make_openai_stream(make_corpus("mixed", 200 * 1024, seed=11), seed=11)
READS = split_reads(STREAM, 1024, 4096, seed=11)
# One ~2 KiB read made of whole frames, for the per-call latency (fed again and again to the same object).
_frames = [f + b"\n\n" for f in STREAM.split(b"\n\n")[5:]]
ONE_READ = b"".join(_frames[: next(i for i in range(len(_frames)) if sum(map(len, _frames[:i])) >= 2048)])


def _parse_native() -> int:
    parser = SseParser()
    return sum(len(parser.feed(r)) for r in READS) + len(parser.finish())


def _parse_python() -> int:
    parser = PySseParser()
    return sum(len(parser.feed(r)) for r in READS)


@pytest.mark.parametrize("impl", ["native", "python"])
def test_sse_parse_stream(benchmark: BenchmarkFixture, impl: str) -> None:
    fn = _parse_native if impl == "native" else _parse_python
    benchmark.extra_info["bytes"] = len(STREAM)
    assert benchmark(fn) == _parse_native()


def _relay(make: Callable[[], ChunkRelay | PyChunkRelay]) -> Callable[[], int]:
    def run() -> int:
        relay = make()
        return sum(len(relay.feed(r)) for r in READS)

    return run


RELAYS: dict[str, Callable[[], ChunkRelay | PyChunkRelay]] = {
    "native-passthrough": lambda: ChunkRelay(),
    "python-passthrough": lambda: PyChunkRelay(),
    "native-rewrite": lambda: ChunkRelay("workjet-large"),
    "python-rewrite": lambda: PyChunkRelay("workjet-large"),
}


@pytest.mark.parametrize("impl", list(RELAYS))
def test_relay_stream(benchmark: BenchmarkFixture, impl: str) -> None:
    benchmark.extra_info["bytes"] = len(STREAM)
    assert benchmark(_relay(RELAYS[impl])) > 0


@pytest.mark.parametrize("impl", list(RELAYS))
def test_relay_one_read(benchmark: BenchmarkFixture, impl: str) -> None:
    relay = RELAYS[impl]()
    benchmark.extra_info["bytes"] = len(ONE_READ)
    assert len(benchmark(relay.feed, ONE_READ)) > 0
