"""Streamed tool-call arguments through `DlpEngine().relay(...)`: a key split anywhere never leaves whole."""

from __future__ import annotations

import json

import pytest

from workjet_fast._workjet_fast import DlpEngine, DlpPolicy, SseParser

KEY = "AKIAZ3MPLQ7RT2VWX4YB"
ARGS = json.dumps({"command": f"aws configure set aws_access_key_id {KEY}", "region": "eu-west-1"})
BASE = {"id": "chatcmpl-tools", "object": "chat.completion.chunk", "created": 1764072000, "model": "gpt-4o"}


def frame(delta: dict[str, object], finish: str | None = None) -> bytes:
    chunk = dict(BASE, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def tool_stream(cut: int) -> bytes:
    head = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": ""}}
    out = [frame({"role": "assistant", "tool_calls": [head]})]
    for part in (ARGS[:cut], ARGS[cut:]):
        out.append(frame({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
    out.append(frame({}, "tool_calls"))
    return b"".join(out) + b"data: [DONE]\n\n"


def relay_frames(data: bytes) -> list[str]:
    relay = DlpEngine().relay(None, "workjet-large")
    out = b"".join(relay.feed(data[i : i + 97]) for i in range(0, len(data), 97)) + relay.finish()
    assert relay.done and not relay.blocked
    assert [f[1] for f in relay.findings] == ["AWS_ACCESS_KEY"]
    parser = SseParser()
    return [d for _, d in parser.feed(out) + parser.finish()]


@pytest.mark.parametrize("cut", range(1, len(ARGS)))
def test_key_split_anywhere_in_tool_arguments_is_redacted(cut: int) -> None:
    frames = relay_frames(tool_stream(cut))
    assert frames[-1] == "[DONE]"
    args = ""
    reasons = []
    for data in frames[:-1]:
        assert KEY not in data
        chunk = json.loads(data)  # every output chunk is JSON
        assert chunk["model"] == "workjet-large"
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls", []):
                assert call["index"] == 0
                args += call.get("function", {}).get("arguments", "")
            if choice["finish_reason"]:
                reasons.append(choice["finish_reason"])
    assert args == ARGS.replace(KEY, "[REDACTED:AWS_ACCESS_KEY]")
    assert reasons == ["tool_calls"]


def test_tool_call_arguments_can_block_the_stream() -> None:
    relay = DlpEngine().relay(DlpPolicy(actions={"aws-access-key": "block"}), None)
    out = relay.feed(tool_stream(len(ARGS) // 2)) + relay.finish()
    assert relay.done and relay.blocked and relay.finish_reason == "content_filter"
    assert KEY not in out.decode()
    parser = SseParser()
    frames = [d for _, d in parser.feed(out) + parser.finish()]
    assert frames[-1] == "[DONE]"
    assert json.loads(frames[-2])["choices"][0]["finish_reason"] == "content_filter"
