"""End to end: the official OpenAI SDK -> the real gateway (uvicorn subprocess) -> the fake Anthropic API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from tests.conftest import GatewayFactory, GatewayProc
from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropic
from tests.fakes.openai_upstream import free_port
from workjet_fast import _workjet_fast

pytestmark = pytest.mark.slow
needs_sse_parser = pytest.mark.skipif(
    not hasattr(_workjet_fast, "SseParser"), reason="the Rust SseParser is not built into this extension yet"
)
MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello claude"}]
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def gw(gateway_factory: GatewayFactory, claude: FakeAnthropic, tmp_path: Path) -> GatewayProc:
    sections = f"""
providers:
  claude:
    type: anthropic
    base_url: {claude.base_url}
    api_key: {API_KEY}
    default_max_tokens: 256
  dead:
    type: openai
    base_url: http://127.0.0.1:{free_port()}/v1
    connect_timeout: 1
models:
  claude-sonnet:
    provider: claude
    model: claude-sonnet-upstream
  claude-split:
    provider: claude
    model: "split:13"
  claude-midstream:
    provider: claude
    model: error-midstream
  claude-overloaded:
    provider: claude
    model: fail-529
  with-fallback:
    deployments:
      - {{provider: dead, model: gpt-nowhere}}
      - {{provider: claude, model: claude-backup, priority: 1}}
"""
    g = gateway_factory(sections=sections, name="claude-gw")
    g.keys["default"] = g.create_key("default")
    return g


def _client(gw: GatewayProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=gw.keys["default"], max_retries=0)


def test_sdk_non_streaming(gw: GatewayProc, claude: FakeAnthropic) -> None:
    resp = _client(gw).chat.completions.create(
        model="claude-sonnet",
        messages=[{"role": "system", "content": "Be brief."}, *MSG],
        temperature=1.5,
    )
    assert resp.model == "claude-sonnet"
    assert resp.choices[0].message.content == "You said: hello claude"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (21, 7)
    sent = claude.requests[-1].body
    assert sent["model"] == "claude-sonnet-upstream"
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 256 and sent["temperature"] == 1.0


def test_sdk_tool_round_trip(gw: GatewayProc) -> None:
    c = _client(gw)
    first = c.chat.completions.create(model="claude-sonnet", messages=MSG, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    follow: list[ChatCompletionMessageParam] = [
        *MSG,
        choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    second = c.chat.completions.create(model="claude-sonnet", messages=follow, tools=TOOLS)
    assert second.choices[0].message.content == "Tool said: 18C and sunny"


def test_fallback_from_a_refused_connection_to_anthropic(gw: GatewayProc) -> None:
    resp = _client(gw).chat.completions.create(model="with-fallback", messages=MSG)
    assert resp.choices[0].message.content == "You said: hello claude"
    assert resp.model == "with-fallback"


def test_overloaded_provider_is_502_with_its_message(gw: GatewayProc) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        _client(gw).chat.completions.create(model="claude-overloaded", messages=MSG)
    assert info.value.status_code == 502
    assert "fake anthropic says 529" in info.value.message
    assert API_KEY not in info.value.message


@needs_sse_parser
def test_sdk_streaming_with_usage(gw: GatewayProc) -> None:
    stream = _client(gw).chat.completions.create(
        model="claude-split",
        messages=MSG,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: hello claude"
    assert {c.model for c in chunks} == {"claude-split"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 28


@needs_sse_parser
def test_sdk_streaming_tool_call(gw: GatewayProc) -> None:
    stream = _client(gw).chat.completions.create(
        model="claude-sonnet",
        messages=MSG,
        tools=TOOLS,
        stream=True,
    )
    calls = [tc for c in stream if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    args = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert json.loads(args) == {"city": "Paris", "unit": "celsius"}


@needs_sse_parser
def test_sdk_sees_a_mid_stream_error(gw: GatewayProc) -> None:
    stream = _client(gw).chat.completions.create(model="claude-midstream", messages=MSG, stream=True)
    with pytest.raises(openai.APIError, match="Overloaded"):
        for _ in stream:
            pass
