"""The bytes on the wire: a ~1 KB chat request, the fake upstream's ~300-char answer and its 20-chunk stream."""

from __future__ import annotations

import orjson

__all__ = ["JSON_MODEL", "SSE_MODEL", "chat_body", "completion_json", "sse_stream"]

JSON_MODEL = "bench"
SSE_MODEL = "bench-stream"

_SYSTEM = (
    "You are a careful assistant for an engineering team. Answer briefly, cite the file and line you rely on, "
    "and say so when you are not sure. Prefer plain language over jargon and keep code blocks short."
)
_HISTORY = [
    (
        "user",
        "Our nightly job that rebuilds the search index started to time out after we moved it to the new "
        "cluster. It used to take about forty minutes; now it is killed after two hours. What should we look at first?",
    ),
    (
        "assistant",
        "Start with what changed: the node sizes, the disk class and the index settings. Compare the "
        "refresh interval and replica count during the rebuild, and check whether the job now runs next to other "
        "heavy batch work on the same nodes.",
    ),
    (
        "user",
        "Replicas are the same, refresh is disabled during the rebuild as before. The disks are network "
        "attached now instead of local NVMe. Could that alone explain a threefold slowdown? Give me a short checklist "
        "(question #N#).",
    ),
]


def chat_body(model: str, stream: bool) -> bytes:
    """About 1 KB, the shape the OpenAI SDK sends. `#N#` in the last message is replaced by a request counter in
    the wrk script (post.lua) and by `1` elsewhere, so each request asks a new question on the same history."""
    messages = [{"role": "system", "content": _SYSTEM}] + [{"role": r, "content": c} for r, c in _HISTORY]
    body: dict[str, object] = {"model": model, "messages": messages, "max_tokens": 256, "temperature": 0.2}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


_ANSWER = "Yes: network disks add latency to every flush. Check IOPS limits, merge throttling and the bulk size."


def completion_json() -> bytes:
    """A complete `chat.completion`, about 300 characters of JSON with usage."""
    return orjson.dumps(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": 1764000000,
            "model": "bench",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": _ANSWER}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 230, "completion_tokens": 24, "total_tokens": 254},
        }
    )


def sse_stream(chunks: int = 20) -> bytes:
    """`chunks` content deltas, a usage chunk and `[DONE]`, as an OpenAI upstream streams them."""
    words = _ANSWER.split(" ")
    out = []
    head = {"id": "chatcmpl-bench0002", "object": "chat.completion.chunk", "created": 1764000000, "model": "bench"}
    for i in range(chunks):
        piece = (" " if i else "") + words[i % len(words)]
        delta: dict[str, str] = {"content": piece}
        if i == 0:
            delta["role"] = "assistant"
        finish = "stop" if i == chunks - 1 else None
        frame = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        out.append(b"data: " + orjson.dumps(frame) + b"\n\n")
    usage = {**head, "choices": [], "usage": {"prompt_tokens": 230, "completion_tokens": chunks, "total_tokens": 250}}
    out.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)
