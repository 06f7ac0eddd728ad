"""Validate a chat completion request body; answer 400 with `param` naming the field.

The body is parsed once (orjson) and the same dict travels on; fields the gateway does not use
(tools, tool_choice, response_format, stop, n, seed, user, stream_options, ...) pass through untouched.
The request path first asks the Rust `chat_ok`, which answers for valid bodies only (tests/test_validate.py
holds it to `validate_chat`); this module says what is wrong with the others.
"""

from __future__ import annotations

from typing import Any

import orjson

from workjet_fast.errors import BadRequest

__all__ = ["ROLES", "parse_body", "validate_chat"]

ROLES = frozenset({"system", "user", "assistant", "developer", "tool", "function"})
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        # orjson also rejects nesting deeper than 1024 levels here, so deep garbage is a 400, not a crash.
        raise BadRequest(f"The request body is not valid JSON: {e.msg} (at character {e.pos}).") from None
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {type(body).__name__}.")
    return body


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRequest(f"`{name}` must be a number.", param=name)
    if not lo <= v <= hi:
        raise BadRequest(f"`{name}` must be between {lo:g} and {hi:g}, got {v}.", param=name)


def _positive_int(body: dict[str, Any], name: str) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"`{name}` must be an integer.", param=name)
    if v <= 0:
        raise BadRequest(f"`{name}` must be greater than 0, got {v}.", param=name)


def _content(msg: dict[str, Any], i: int, role: str) -> None:
    param = f"messages[{i}].content"
    if "content" not in msg or msg["content"] is None:
        # An assistant turn may carry only tool calls; every other role needs content.
        if role == "assistant" and (msg.get("tool_calls") or msg.get("function_call")):
            return
        raise BadRequest(f"`{param}` is required for role {role!r}.", param=param)
    content = msg["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise BadRequest(f"`{param}` must be a string or an array of content parts.", param=param)
    for j, part in enumerate(content):
        pp = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise BadRequest(f"`{pp}` must be an object with a `type`.", param=pp)
        ptype = part.get("type")
        if not isinstance(ptype, str) or ptype not in _PART_TYPES:
            raise BadRequest(f"`{pp}.type` must be one of {', '.join(sorted(_PART_TYPES))}.", param=f"{pp}.type")
        if ptype == "text" and not isinstance(part.get("text"), str):
            raise BadRequest(f"`{pp}.text` must be a string.", param=f"{pp}.text")


def validate_chat(body: dict[str, Any]) -> tuple[str, bool]:
    """Check the fields the gateway relies on; returns (model, stream)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required: a model id or a tier name.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty array.", param="messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise BadRequest(f"`messages[{i}]` must be an object.", param=f"messages[{i}]")
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise BadRequest(
                f"`messages[{i}].role` must be one of system, user, assistant, developer, tool; got {role!r}.",
                param=f"messages[{i}].role",
            )
        _content(msg, i, role)
    _number(body, "temperature", 0.0, 2.0)
    _number(body, "top_p", 0.0, 1.0)
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("`stream` must be true or false.", param="stream")
    return model, stream
