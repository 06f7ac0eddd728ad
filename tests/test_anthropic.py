"""The Anthropic adapter: translation both ways, streaming events -> OpenAI chunks, and the provider over real
HTTP against the fake Anthropic API (tests/fakes/anthropic_upstream.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropic, error_body, sse
from workjet_fast._workjet_fast import SseParser
from workjet_fast.config import ProviderConfig
from workjet_fast.errors import BadRequest
from workjet_fast.providers import UpstreamFailure, make_provider
from workjet_fast.providers.anthropic import OPENING_USER_TEXT, from_anthropic, to_anthropic
from workjet_fast.providers.anthropic_stream import AnthropicTranslator


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as f:
        yield f


def _config(base_url: str, **kw: Any) -> ProviderConfig:
    return ProviderConfig(name="claude", type="anthropic", base_url=base_url, api_key=API_KEY, **kw)


# ---- request translation ---------------------------------------------------------------------------------------


def test_system_messages_are_hoisted_and_joined() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
        ]
    }
    out = to_anthropic("claude-x", body, 512)
    assert out["system"] == "Be brief.\n\nNo emoji."
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert out["max_tokens"] == 512
    assert out["model"] == "claude-x"


def test_consecutive_same_role_messages_merge() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": "four"},
        ]
    }
    out = to_anthropic("m", body, 10)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]
    assert [b["text"] for b in out["messages"][0]["content"]] == ["one", "two"]
    assert [b["text"] for b in out["messages"][1]["content"]] == ["three", "four"]


def test_conversation_starting_with_assistant_gets_an_opening_user_turn() -> None:
    out = to_anthropic("m", {"messages": [{"role": "assistant", "content": "Hello! "}]}, 10)
    assert out["messages"][0] == {"role": "user", "content": [{"type": "text", "text": OPENING_USER_TEXT}]}
    # a final assistant turn is a prefill, and Anthropic refuses trailing whitespace there
    assert out["messages"][1]["content"][0]["text"] == "Hello!"


def test_only_system_messages_still_make_a_valid_request() -> None:
    out = to_anthropic("m", {"messages": [{"role": "system", "content": "Say hi."}]}, 10)
    assert out["system"] == "Say hi."
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_max_tokens_temperature_top_p_stop_and_user() -> None:
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 77,
        "max_tokens": 5,
        "temperature": 1.7,
        "top_p": 0.9,
        "stop": "END",
        "user": "u-1",
        "presence_penalty": 0.5,
        "seed": 3,
    }
    out = to_anthropic("m", body, 10)
    assert out["max_tokens"] == 77
    assert out["temperature"] == 1.0  # clamped into Anthropic's 0-1
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert "presence_penalty" not in out and "seed" not in out
    assert to_anthropic("m", {**body, "max_completion_tokens": None}, 10)["max_tokens"] == 5
    assert to_anthropic("m", {**body, "stop": ["a", "b"]}, 10)["stop_sequences"] == ["a", "b"]


@given(st.floats(min_value=0, max_value=2, allow_nan=False))
def test_temperature_always_lands_in_anthropic_range(t: float) -> None:
    out = to_anthropic("m", {"messages": [{"role": "user", "content": "x"}], "temperature": t}, 10)
    assert 0.0 <= out["temperature"] <= 1.0
    assert out["temperature"] == min(t, 1.0)


def test_images_become_image_blocks() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    out = to_anthropic("m", {"messages": [{"role": "user", "content": parts}]}, 10)
    blocks = out["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
        {"messages": [{"role": "function", "content": "x", "name": "f"}]},
        {"messages": [{"role": "user", "content": "x"}], "n": 2},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {}}]},
    ],
)
def test_untranslatable_requests_are_refused_with_400(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        to_anthropic("m", body, 10)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def test_tools_tool_calls_and_tool_results() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "And so?"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    out = to_anthropic("m", body, 10)
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": TOOLS[0]["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "text", "text": "And so?"},
        ],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_mapping(choice: Any, expected: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": choice}
    assert to_anthropic("m", body, 10)["tool_choice"] == expected


def test_tool_results_go_first_in_their_user_turn() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": ""}}]},
            {"role": "user", "content": "also this"},
            {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "r"}]},
        ]
    }
    out = to_anthropic("m", body, 10)
    assert out["messages"][1]["content"][0]["input"] == {}
    assert [b["type"] for b in out["messages"][2]["content"]] == ["tool_result", "text"]


# ---- response translation ----------------------------------------------------------------------------------------


def test_response_with_text_and_tool_use() -> None:
    msg = {
        "id": "msg_01ABC",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 4},
    }
    out = from_anthropic(msg, "claude-x")
    assert out["id"] == "chatcmpl-01ABC"
    assert out["object"] == "chat.completion"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_1" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert out["usage"] == {
        "prompt_tokens": 14,
        "completion_tokens": 5,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls")],
)
def test_stop_reason_mapping(stop: str, finish: str) -> None:
    msg = {"id": "msg_1", "content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {}}
    assert from_anthropic(msg, "m")["choices"][0]["finish_reason"] == finish


# ---- streaming translation -----------------------------------------------------------------------------------------


def _anthropic_stream(with_tool: bool = True) -> bytes:
    start: dict[str, Any] = {
        "id": "msg_S1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "c",
        "stop_reason": None,
    }
    start["usage"] = {"input_tokens": 25, "output_tokens": 1}
    out = sse("message_start", {"type": "message_start", "message": start})
    out += sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    out += sse("ping", {"type": "ping"})
    for piece in ("Hel", "lo"):
        out += sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
        )
    out += sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    if with_tool:
        block = {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}
        out += sse("content_block_start", {"type": "content_block_start", "index": 1, "content_block": block})
        for piece in ('{"ci', 'ty": "Paris"}'):
            delta = {"type": "input_json_delta", "partial_json": piece}
            out += sse("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": delta})
        out += sse("content_block_stop", {"type": "content_block_stop", "index": 1})
    stop = "tool_use" if with_tool else "end_turn"
    out += sse(
        "message_delta", {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 15}}
    )
    out += sse("message_stop", {"type": "message_stop"})
    return out


def _translate(raw: bytes, cuts: list[int], include_usage: bool = True) -> bytes:
    tr = AnthropicTranslator("claude-x", include_usage, created=1700000000)
    parser = SseParser()
    out = b""
    prev = 0
    for cut in [*sorted(cuts), len(raw)]:
        for name, data in parser.feed(raw[prev:cut]):
            out += tr.event(name, data)
        prev = cut
    for name, data in parser.finish():
        out += tr.event(name, data)
    return out + tr.finish()


def _frames(out: bytes) -> list[Any]:
    return [
        "[DONE]" if f == b"data: [DONE]" else orjson.loads(f.removeprefix(b"data: ")) for f in out.split(b"\n\n") if f
    ]


def test_stream_events_become_openai_chunks() -> None:
    frames = _frames(_translate(_anthropic_stream(), []))
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    assert {c["id"] for c in chunks} == {"chatcmpl-S1"}
    assert {c["created"] for c in chunks} == {1700000000}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello"
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(tc["index"] == 0 for tc in calls)
    assert orjson.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "Paris"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_stream_without_include_usage_ends_with_finish_reason_then_done() -> None:
    frames = _frames(_translate(_anthropic_stream(with_tool=False), [], include_usage=False))
    assert frames[-1] == "[DONE]"
    assert frames[-2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in f for f in frames[:-1])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_chunking_of_the_upstream_gives_the_same_frames(data: st.DataObject) -> None:
    raw = _anthropic_stream()
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=30))
    assert _translate(raw, cuts) == _translate(raw, [])


def test_error_event_becomes_an_error_frame_and_ends_the_stream() -> None:
    raw = _anthropic_stream(with_tool=False)
    cut = raw.index(b"event: content_block_stop")
    raw = raw[:cut] + sse("error", error_body(529, "Overloaded")) + raw[cut:]
    frames = _frames(_translate(raw, []))
    assert frames[-1] == {"error": {"message": "Overloaded", "type": "overloaded_error", "code": None, "param": None}}
    assert "[DONE]" not in frames


def test_truncated_stream_ends_with_an_error_frame() -> None:
    raw = _anthropic_stream(with_tool=False)
    frames = _frames(_translate(raw[: raw.index(b"event: message_delta")], []))
    assert "error" in frames[-1]
    assert "[DONE]" not in frames


# ---- the provider over real HTTP -----------------------------------------------------------------------------------


def test_complete_against_the_fake_api(fake: FakeAnthropic) -> None:
    async def go() -> dict[str, Any]:
        p = make_provider(_config(fake.base_url, default_max_tokens=333))
        try:
            body = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "ping"}]}
            return await p.complete("claude-test", body)
        finally:
            await p.aclose()

    out = asyncio.run(go())
    assert out["choices"][0]["message"]["content"] == "You said: ping"
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["total_tokens"] == 28
    sent = fake.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["max_tokens"] == 333 and sent.body["system"] == "S"


def test_stream_against_the_fake_api_with_tools(fake: FakeAnthropic) -> None:
    async def go() -> bytes:
        p = make_provider(_config(fake.base_url))
        try:
            body = {"messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS, "stream": True}
            s = await p.stream("split:17", {**body, "stream_options": {"include_usage": True}})
            return b"".join([piece async for piece in s])
        finally:
            await p.aclose()

    frames = _frames(asyncio.run(go()))
    assert frames[-1] == "[DONE]"
    calls = [tc for f in frames[:-1] if f["choices"] for tc in f["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather"
    assert orjson.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris", "unit": "celsius"}
    assert frames[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert frames[-2]["usage"]["completion_tokens"] == 7


def test_mid_stream_error_event_over_http(fake: FakeAnthropic) -> None:
    async def go() -> bytes:
        p = make_provider(_config(fake.base_url))
        try:
            s = await p.stream("error-midstream", {"messages": [{"role": "user", "content": "hello there"}]})
            return b"".join([piece async for piece in s])
        finally:
            await p.aclose()

    frames = _frames(asyncio.run(go()))
    assert frames[0]["choices"][0]["delta"]["role"] == "assistant"
    assert frames[-1]["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (401, False), (429, True), (500, True), (529, True)])
def test_error_answers_carry_the_provider_message(fake: FakeAnthropic, status: int, retryable: bool) -> None:
    async def go() -> UpstreamFailure:
        p = make_provider(_config(fake.base_url))
        try:
            with pytest.raises(UpstreamFailure) as info:
                await p.complete(f"fail-{status}", {"messages": [{"role": "user", "content": "x"}]})
            return info.value
        finally:
            await p.aclose()

    failure = asyncio.run(go())
    assert failure.status == status
    assert failure.message == f"HTTP {status}: fake anthropic says {status}"
    assert failure.retryable is retryable
    assert API_KEY not in failure.message


def test_wrong_key_is_an_error_without_the_key_in_the_message(fake: FakeAnthropic) -> None:
    async def go() -> UpstreamFailure:
        cfg = ProviderConfig(name="c", type="anthropic", base_url=fake.base_url, api_key="sk-ant-wrong-key")
        p = make_provider(cfg)
        try:
            with pytest.raises(UpstreamFailure) as info:
                await p.stream("m", {"messages": [{"role": "user", "content": "x"}]})
            return info.value
        finally:
            await p.aclose()

    failure = asyncio.run(go())
    assert failure.status == 401
    assert "sk-ant-wrong-key" not in failure.message


def test_closing_a_stream_early_releases_it(fake: FakeAnthropic) -> None:
    async def go() -> bytes:
        p = make_provider(_config(fake.base_url))
        try:
            s = await p.stream("split:9", {"messages": [{"role": "user", "content": "a long enough reply please"}]})
            first = b""
            async for piece in s:
                first = piece
                break
            await s.aclose()
            with pytest.raises(UpstreamFailure, match="connection closed"):  # the connection is gone, not pooled
                await s.__aiter__().__anext__()
            return first
        finally:
            await p.aclose()

    assert b'"role":"assistant"' in asyncio.run(go())
