"""pipeline/validate.py: every malformed request is a 400 `bad_request` whose `param` names the field."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from workjet_fast._workjet_fast import chat_ok
from workjet_fast.errors import BadRequest
from workjet_fast.pipeline.validate import parse_body, validate_chat

MSG = [{"role": "user", "content": "hi"}]


def ok(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": MSG, **extra}


def rejected(body: dict[str, Any]) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        validate_chat(body)
    e = info.value
    assert (e.status, e.code, e.type) == (400, "bad_request", "invalid_request_error")
    envelope = orjson.loads(e.body())["error"]
    assert envelope == {"message": e.message, "type": e.type, "code": e.code, "param": e.param}
    return e


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"model": }', b"\xff\xfe", b"[" * 2000, b'{"a": 1} trailing', b"NaN"],
    ids=["empty", "truncated", "bad-value", "invalid-utf8", "deep-nesting", "trailing", "nan"],
)
def test_malformed_json_is_a_400(raw: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(raw)
    assert info.value.status == 400 and info.value.code == "bad_request"


@pytest.mark.parametrize("raw", [b"null", b"1", b"1.5", b'"text"', b"[]", b"[{}]", b"true"])
def test_non_object_body_is_a_400(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="must be a JSON object"):
        parse_body(raw)


def test_valid_body_parses_and_validates() -> None:
    body = parse_body(orjson.dumps(ok(stream=True, temperature=0.5, tools=[{"x": 1}])))
    assert validate_chat(body) == ("gpt-4o-mini", True)
    assert body["tools"] == [{"x": 1}]  # unknown fields pass through untouched
    assert validate_chat(ok(stream=None)) == ("gpt-4o-mini", False)


@pytest.mark.parametrize("model", [None, "", 5, ["gpt-4o-mini"]])
def test_model_is_required(model: Any) -> None:
    body = ok(model=model)
    if model is None:
        del body["model"]
    assert rejected(body).param == "model"


@pytest.mark.parametrize("messages", [None, [], {}, "hi", 3])
def test_messages_missing_or_empty(messages: Any) -> None:
    body = ok(messages=messages)
    if messages is None:
        del body["messages"]
    assert rejected(body).param == "messages"


def test_message_must_be_an_object() -> None:
    assert rejected(ok(messages=[MSG[0], "hi"])).param == "messages[1]"


@pytest.mark.parametrize("role", ["robot", "", None, 1, "USER", [], {"a": 1}])
def test_unknown_role(role: Any) -> None:
    assert rejected(ok(messages=[MSG[0], {"role": role, "content": "x"}])).param == "messages[1].role"


@pytest.mark.parametrize("role", ["system", "user", "assistant", "developer", "tool", "function"])
def test_known_roles_accepted(role: str) -> None:
    assert validate_chat(ok(messages=[{"role": role, "content": "x"}]))[0] == "gpt-4o-mini"


@pytest.mark.parametrize(
    "content",
    [
        "plain text",
        "",
        [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
        [],
    ],
)
def test_content_string_or_parts_accepted(content: Any) -> None:
    validate_chat(ok(messages=[{"role": "user", "content": content}]))


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (5, "messages[0].content"),
        ({"type": "text", "text": "a"}, "messages[0].content"),
        (True, "messages[0].content"),
        (["text"], "messages[0].content[0]"),
        ([{"text": "a"}], "messages[0].content[0].type"),
        ([{"type": "video", "text": "a"}], "messages[0].content[0].type"),
        ([{"type": ["text"], "text": "a"}], "messages[0].content[0].type"),
        ([{"type": {}, "text": "a"}], "messages[0].content[0].type"),
        ([{"type": "text", "text": 5}], "messages[0].content[0].text"),
        ([{"type": "text"}], "messages[0].content[0].text"),
        ([{"type": "text", "text": "ok"}, {"type": "text", "text": None}], "messages[0].content[1].text"),
    ],
)
def test_bad_content_names_the_field(content: Any, param: str) -> None:
    assert rejected(ok(messages=[{"role": "user", "content": content}])).param == param


def test_missing_content() -> None:
    assert rejected(ok(messages=[{"role": "user"}])).param == "messages[0].content"
    assert rejected(ok(messages=[MSG[0], {"role": "system", "content": None}])).param == "messages[1].content"
    # an assistant turn that only calls tools needs no content
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    validate_chat(ok(messages=[MSG[0], {"role": "assistant", "content": None, "tool_calls": calls}]))
    assert rejected(ok(messages=[MSG[0], {"role": "assistant"}])).param == "messages[1].content"


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("temperature", [0, 0.0, 1, 2, 2.0, 1.3], [-0.01, 2.01, 3, -1, "1", True, [1]]),
        ("top_p", [0, 0.5, 1, 1.0], [-0.1, 1.01, 2, "0.5", False]),
    ],
)
def test_number_ranges(name: str, good: list[Any], bad: list[Any]) -> None:
    for v in good:
        validate_chat(ok(**{name: v}))
    for v in bad:
        assert rejected(ok(**{name: v})).param == name, v
    validate_chat(ok(**{name: None}))  # null means "not set"


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, 10.0, "10", True, [10]])
def test_max_tokens_positive_integer(name: str, bad: Any) -> None:
    assert rejected(ok(**{name: bad})).param == name


def test_max_tokens_accepted() -> None:
    validate_chat(ok(max_tokens=1, max_completion_tokens=100000))


@pytest.mark.parametrize("stream", ["true", 1, 0, {}])
def test_stream_must_be_boolean(stream: Any) -> None:
    assert rejected(ok(stream=stream)).param == "stream"


def test_first_problem_in_order_is_reported() -> None:
    e = rejected({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "x"}], "temperature": 9})
    assert e.param == "messages[1].role"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "tool", "bogus"]) | json_values,
        "content": json_values
        | st.lists(st.fixed_dictionaries({}, optional={"type": json_values, "text": json_values})),
        "tool_calls": json_values,
    },
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.text(max_size=5) | json_values,
        "messages": st.lists(message | json_values, max_size=3) | json_values,
        "temperature": json_values,
        "top_p": json_values,
        "max_tokens": json_values,
        "max_completion_tokens": json_values,
        "stream": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, request_like))
def test_validate_raises_only_bad_request(value: Any) -> None:
    """Any JSON value, through the gateway's own parse + validate: either accepted, or a BadRequest."""
    raw = json.dumps(value).encode()  # stdlib: integers beyond 64 bits are valid JSON too
    try:
        body = parse_body(raw)
        model, stream = validate_chat(body)
    except BadRequest as e:
        assert e.status == 400 and e.code == "bad_request"
        assert e.param is None or isinstance(e.param, str)
    else:
        assert isinstance(model, str) and model and isinstance(stream, bool)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_body_raises_only_bad_request_on_bytes(raw: bytes) -> None:
    try:
        body = parse_body(raw)
    except BadRequest as e:
        assert e.status == 400
    else:
        assert isinstance(body, dict)


# ---- chat_ok: the request path's one-call answer for valid bodies -----------------------------------------------

_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=5)}),
    st.fixed_dictionaries({"type": st.sampled_from(["image_url", "input_audio", "file", "refusal"])}),
    st.fixed_dictionaries({"type": st.sampled_from(["text", "video", 3])}),  # a text part without text, a bad type
)
_valid_message = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "developer", "tool", "function"]),
            "content": st.text(max_size=5) | st.lists(_part, max_size=2),
        }
    ),
    st.fixed_dictionaries(  # an assistant turn with calls and maybe no content; or another role without content
        {"role": st.sampled_from(["assistant", "assistant", "user"])},
        optional={
            "content": st.none(),
            "tool_calls": st.lists(st.just({"id": "c"}), max_size=1) | st.none(),
            "function_call": st.just({"name": "f"}) | st.just({}),
        },
    ),
)
_ok_number = st.one_of(st.none(), st.integers(1, 1), st.floats(0.0, 1.0))  # valid for every number field
_number = st.one_of(
    _ok_number,
    _ok_number,
    _ok_number,
    st.booleans(),
    st.integers(-2, 3),
    st.floats(-0.5, 2.5),
    st.sampled_from([-0.0, 0, 2.0, 2**70]),
)
valid_like = st.fixed_dictionaries(
    {
        "model": st.text(min_size=1, max_size=5) | st.just(""),
        "messages": st.lists(_valid_message, min_size=1, max_size=3),
    },
    optional={
        "temperature": _number,
        "top_p": _number,
        "max_tokens": _number,
        "max_completion_tokens": _number,
        "stream": st.sampled_from([True, False, None, True, False, 1, "true"]),
        "user": st.text(max_size=3),
    },
)


@settings(max_examples=600, deadline=None)
@given(st.one_of(valid_like, request_like, json_values))
def test_chat_ok_answers_only_what_validate_chat_answers(body: Any) -> None:
    try:
        want: tuple[str, bool] | None = validate_chat(body) if isinstance(body, dict) else None
    except BadRequest:
        want = None
    got = chat_ok(body)
    assert got is None or got == want
    if want is not None and not _has_big_int(body):  # a valid body is told at once (unless an int is beyond 64 bits)
        assert got == want


def _has_big_int(body: dict[str, Any]) -> bool:
    return any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in body.values())


def test_chat_ok_on_the_usual_bodies() -> None:
    assert chat_ok(ok()) == ("gpt-4o-mini", False) == validate_chat(ok())
    assert chat_ok(ok(stream=True, temperature=0.2, max_tokens=256)) == ("gpt-4o-mini", True)
    assert chat_ok(ok(max_tokens=2**70)) is None  # valid, but left to Python
    assert chat_ok(ok(temperature=True)) is None and chat_ok(ok(stream=1)) is None
