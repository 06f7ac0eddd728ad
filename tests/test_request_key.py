"""`request_key`: the hot route's one-call reading of the API key's hash and the body's length must say what the
Python code says (`web.api_key_from`, `KeyCache._checked`, `auth.hash_key`, the handler's header dict), or
nothing (None for the key, and the Python code then judges it)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from workjet_fast._workjet_fast import request_key
from workjet_fast.auth import KeyCache, generate_key, hash_key
from workjet_fast.errors import Unauthorized
from workjet_fast.handler import _headers
from workjet_fast.web import api_key_from

KEY = generate_key()


def _python(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    d = _headers({"headers": headers})
    try:
        h: str | None = hash_key(KeyCache._checked(api_key_from(d)))
    except Unauthorized:
        h = None
    return h, d.get("content-length")


_key_text = st.one_of(
    st.just(KEY),
    st.just(KEY[:20]),  # too short
    st.just(KEY + "-x"),
    st.just("wj_live_" + "a" * 121),  # one byte too long
    st.just("wj_live_" + "a" * 120),
    st.text(alphabet="wj_live_aZ09 \t-é", max_size=50),
)
_auth = st.builds(
    lambda scheme, sep, key, tail: f"{scheme}{sep}{key}{tail}",
    st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "", "Bearerx"]),
    st.sampled_from([" ", "  ", "", "\t"]),
    _key_text,
    st.sampled_from(["", " ", "\t", "\xa0"]),
)
_header = st.one_of(
    st.tuples(st.just(b"authorization"), _auth.map(lambda s: s.encode("latin-1", "replace"))),
    st.tuples(st.just(b"x-api-key"), _key_text.map(lambda s: s.encode("latin-1", "replace"))),
    st.tuples(st.just(b"content-length"), st.sampled_from([b"12", b"", b"abc", b"1\xe9"])),
    st.tuples(st.sampled_from([b"host", b"Authorization", b"content-type"]), st.just(b"x")),
    st.tuples(st.just(b"authorization"), st.just(b"")),
)


@settings(max_examples=500)
@given(headers=st.lists(_header, max_size=5))
def test_request_key_says_what_the_python_code_says_or_nothing(headers: list[tuple[bytes, bytes]]) -> None:
    got = request_key(headers)
    assert got is not None
    want_hash, want_length = _python(headers)
    assert got[1] == want_length
    assert got[0] is None or got[0] == want_hash


def test_the_usual_headers_take_the_fast_path() -> None:
    for headers in (
        [(b"host", b"x"), (b"authorization", f"Bearer {KEY}".encode()), (b"content-length", b"120")],
        [(b"x-api-key", KEY.encode())],
    ):
        got = request_key(headers)
        assert got is not None and got[0] == hash_key(KEY) and got[0] == _python(headers)[0]


def test_an_unusual_header_list_is_left_to_python() -> None:
    assert request_key([[b"authorization", b"Bearer x"]]) is None  # a list, not a tuple
    assert request_key([(b"authorization", "Bearer x")]) is None  # not bytes
    assert request_key([(b"a", b"b", b"c")]) is None
