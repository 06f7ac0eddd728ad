"""The native SSE parser through its Python API."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from benches.corpus import make_corpus, make_openai_stream
from workjet_fast._workjet_fast import SseError, SseParser

Events = list[tuple[str | None, str]]


def parse(data: bytes, cuts: list[int] | None = None, **kwargs: object) -> Events:
    parser = SseParser(**kwargs)  # type: ignore[arg-type]
    events: Events = []
    pos = 0
    for cut in sorted(set(cuts or [])):
        events += parser.feed(data[pos:cut])
        pos = cut
    events += parser.feed(data[pos:])
    return events + parser.finish()


def test_basic_framing() -> None:
    data = b": ping\n\nevent: delta\ndata: a\ndata:b\r\n\r\ndata: c\r\rdata: [DONE]\n\n"
    assert parse(data) == [("delta", "a\nb"), (None, "c"), (None, "[DONE]")]


def test_only_cr_lf_crlf_end_lines() -> None:
    payload = '{"t":"a\u2028b\u2029c\x85d"}'
    assert parse(f"data: {payload}\n\n".encode()) == [(None, payload)]


def test_bom_and_utf8_split_one_byte_at_a_time() -> None:
    data = "\ufeffdata: héllo 🌍\r\n\r\n".encode()
    assert parse(data, list(range(len(data)))) == [(None, "héllo 🌍")]


def test_crlf_split_across_reads_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r\n") == [(None, "a")]


def test_eof_policy() -> None:
    assert parse(b"data: a\n\ndata: tail") == [(None, "a"), (None, "tail")]
    assert parse(b"data: a\n\ndata: tail", lenient_eof=False) == [(None, "a")]


def test_caps_raise_sse_error() -> None:
    parser = SseParser(max_line_bytes=16)
    with pytest.raises(SseError, match="longer than 16 bytes"):
        parser.feed(b"data: " + b"x" * 32)
    with pytest.raises(SseError):
        parser.feed(b"\n\n")  # a failed parser refuses input until finish()
    parser.finish()
    assert parser.feed(b"data: ok\n\n") == [(None, "ok")]
    with pytest.raises(SseError, match="larger than 8 bytes"):
        SseParser(max_event_bytes=8).feed(b"data: 1234\ndata: 5678\n")


def test_large_feed_releases_the_gil_and_matches() -> None:
    stream = make_openai_stream(make_corpus("mixed", 64 * 1024, seed=3), seed=3)
    events = parse(stream)
    assert events[-1] == (None, "[DONE]")
    assert parse(stream, list(range(0, len(stream), 1500))) == events


STREAM = make_openai_stream(make_corpus("multilingual", 2048, seed=1), seed=1) + (
    b"event: x\r\nid: 1\r\ndata: one\r\rdata: two\r\n: c\n\n\xef\xbb\xbfdata: bad\n\ndata: end"
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    assert parse(STREAM, cuts) == parse(STREAM)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=20))
def test_arbitrary_bytes_never_crash(data: bytes, cuts: list[int]) -> None:
    assert parse(data, [c for c in cuts if c <= len(data)]) == parse(data)
