"""The pure-Python baseline the native SSE parser and relay are measured against.

A straightforward, reasonably tuned implementation of what a Python gateway does without the extension: split the
byte buffer on LF (stripping a CR), collect `data:` lines, decode each frame with orjson, rewrite it and encode it
again. It handles what OpenAI streams contain, not the whole WHATWG grammar (no lone-CR line ends, no BOM).
"""

from __future__ import annotations

from typing import Any

import orjson


class PySseParser:
    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        lines = (self._buf + chunk).split(b"\n")
        self._buf = lines.pop()
        events: list[tuple[str | None, str]] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._data:
                    events.append((self._event, b"\n".join(self._data).decode("utf-8", "replace")))
                self._data = []
                self._event = None
            elif line.startswith(b":"):
                continue
            else:
                field, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if field == b"data":
                    self._data.append(value)
                elif field == b"event":
                    self._event = value.decode("utf-8", "replace")
        return events


class PyChunkRelay:
    """Parse, decode each frame with orjson, record usage/finish reason/content length, rewrite the model."""

    def __init__(self, public_model: str | None = None) -> None:
        self._parser = PySseParser()
        self._public_model = public_model
        self.done = False
        self.usage: tuple[int, int] | None = None
        self.finish_reason: str | None = None
        self.content_chars = 0

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for _, data in self._parser.feed(chunk):
            if data == "[DONE]":
                self.done = True
                out.append(b"data: [DONE]\n\n")
                continue
            try:
                obj: dict[str, Any] = orjson.loads(data)
            except orjson.JSONDecodeError:
                out.append(b"data: " + data.encode() + b"\n\n")
                continue
            if usage := obj.get("usage"):
                self.usage = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            for choice in obj.get("choices") or ():
                if content := (choice.get("delta") or {}).get("content"):
                    self.content_chars += len(content)
                if reason := choice.get("finish_reason"):
                    self.finish_reason = reason
            if self._public_model is not None and "model" in obj:
                obj["model"] = self._public_model
                out.append(b"data: " + orjson.dumps(obj) + b"\n\n")
            else:
                out.append(b"data: " + data.encode() + b"\n\n")
        return b"".join(out)
