"""DLP overhead on the request path: `Dlp.scan_request` on vs off for 1/16/128 KB prompts, and a 2,000-chunk stream
through the DLP relay vs the plain `ChunkRelay` (run from the repository root: `pytest benches/py --benchmark-only`).

The prompts are clean `make_corpus("mixed", size)` text (no findings: the common case, nothing is rewritten), sent as
a system + user message body. "off" is the same `Dlp` object built from `DlpConfig(enabled=False)`: the call the
gateway makes when DLP is disabled, i.e. the no-op baseline.
"""

from __future__ import annotations

import random

import orjson
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benches.corpus import make_corpus, split_reads
from workjet_fast._workjet_fast import ChunkRelay
from workjet_fast.config.dlp import DlpConfig
from workjet_fast.context import RequestContext
from workjet_fast.pipeline.dlp import Dlp

SIZES = {"1KB": 1024, "16KB": 16 * 1024, "128KB": 128 * 1024}
DLP = {"on": Dlp(DlpConfig(enabled=True)), "off": Dlp(DlpConfig(enabled=False))}
CTX = RequestContext(request_id="bench", key_id="k1", key_name="bench")
N_CHUNKS = 2000


def _body(size: int) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": make_corpus("mixed", size, seed=5)},
        ],
    }


@pytest.mark.parametrize("dlp", list(DLP))
@pytest.mark.parametrize("size", list(SIZES))
def test_scan_request(benchmark: BenchmarkFixture, size: str, dlp: str) -> None:
    body = _body(SIZES[size])
    before = orjson.dumps(body)
    d = DLP[dlp]
    benchmark.extra_info["bytes"] = SIZES[size]
    benchmark(d.scan_request, body, CTX, "gpt-4o-mini")
    assert orjson.dumps(body) == before  # clean text: nothing redacted, nothing blocked
    assert CTX.dlp_state == "clean"


def _stream() -> bytes:
    """2,000 `chat.completion.chunk` frames of ~4-word deltas, a finish frame and `[DONE]`."""
    r = random.Random(9)
    words = make_corpus("mixed", 64 * 1024, seed=9).split()
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764072000, "model": "gpt-4o"}
    frames = []
    for i in range(N_CHUNKS):
        n = r.randint(3, 5)
        delta = " ".join(words[(i * 4) % (len(words) - 8) :][:n]) + " "
        frames.append({**base, "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]})
    frames.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(b"data: " + orjson.dumps(f) + b"\n\n" for f in frames) + b"data: [DONE]\n\n"


STREAM = _stream()
READS = split_reads(STREAM, 1024, 4096, seed=9)


def _relay(dlp: str) -> ChunkRelay:
    if dlp == "off":
        return ChunkRelay("m")
    d = DLP["on"]
    assert d.engine is not None
    return d.engine.relay(d.policy("response", "gpt-4o-mini", "k1", "bench"), "m")


def _run(dlp: str) -> int:
    relay = _relay(dlp)
    n = sum(len(relay.feed(read)) for read in READS) + len(relay.finish())
    assert relay.done and not relay.blocked
    return n


@pytest.mark.parametrize("dlp", ["on", "off"])
def test_stream_2000_chunks(benchmark: BenchmarkFixture, dlp: str) -> None:
    benchmark.extra_info["chunks"] = N_CHUNKS
    benchmark.extra_info["reads"] = len(READS)
    out = benchmark(_run, dlp)
    assert out > len(STREAM) // 2
    assert _run("on") == _run("off")  # the DLP relay releases the same bytes when nothing is found
