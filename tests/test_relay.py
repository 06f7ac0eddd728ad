"""The native stream relay (`ChunkRelay`) through its Python API."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from benches.corpus import make_corpus, make_openai_stream, split_reads
from workjet_fast._workjet_fast import ChunkRelay, SseError, SseParser

TEXT = make_corpus("mixed", 3000, seed=7)
STREAM = make_openai_stream(TEXT, seed=7)


def relay(data: bytes, reads: list[bytes] | None = None, public_model: str | None = None) -> tuple[bytes, ChunkRelay]:
    r = ChunkRelay(public_model)
    out = b"".join(r.feed(chunk) for chunk in (reads if reads is not None else [data]))
    return out + r.finish(), r


def frames(data: bytes) -> list[str]:
    parser = SseParser()
    return [d for _, d in parser.feed(data) + parser.finish()]


def content(data: bytes) -> str:
    text = ""
    for frame in frames(data):
        if frame != "[DONE]":
            for choice in json.loads(frame)["choices"]:
                text += choice["delta"].get("content") or ""
    return text


def test_passthrough_is_byte_identical_and_records_the_outcome() -> None:
    out, r = relay(STREAM, split_reads(STREAM, 1024, 4096, seed=1))
    assert out == STREAM
    assert r.done and not r.blocked
    assert r.finish_reason == "stop"
    assert r.usage is not None and r.usage[0] == 42
    assert r.content_chars == len(TEXT)
    assert r.error is None and r.findings == []


def test_model_is_rewritten_other_fields_kept() -> None:
    out, r = relay(STREAM, public_model="workjet-large")
    assert content(out) == TEXT
    for frame in frames(out)[:-1]:
        chunk = json.loads(frame)
        assert chunk["model"] == "workjet-large"
        assert chunk["created"] == 1764072000 and chunk["id"].startswith("chatcmpl-")
    assert frames(out)[-1] == "[DONE]" and r.done


def test_upstream_error_is_passed_through_and_recorded() -> None:
    data = b'data: {"error":{"message":"rate limited","code":429}}\n\n'
    out, r = relay(data)
    assert out == data
    assert r.error is not None and json.loads(r.error) == {"message": "rate limited", "code": 429}
    assert not r.done


def test_truncated_upstream_is_not_marked_done() -> None:
    cut = STREAM[: len(STREAM) // 2]
    out, r = relay(cut)
    assert not r.done
    assert TEXT.startswith(content(out))


def test_caps_raise_sse_error() -> None:
    with pytest.raises(SseError):
        ChunkRelay(max_line_bytes=64).feed(b"data: " + b"x" * 100)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30), st.booleans())
def test_any_chunking_gives_the_same_bytes(cuts: list[int], rewrite: bool) -> None:
    model = "pub" if rewrite else None
    points = sorted(set(cuts))
    reads = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert relay(STREAM, reads, model)[0] == relay(STREAM, None, model)[0]
