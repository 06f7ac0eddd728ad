"""The one exception a provider attempt raises."""

from __future__ import annotations

import orjson


class UpstreamFailure(Exception):
    """One attempt failed before any byte reached the client.

    `unreachable` is true for connection errors, timeouts and open circuits (they add up to 503);
    otherwise the provider answered `status` with `message` (they add up to 502).
    `retryable` says whether another attempt or deployment may succeed (429, 5xx, unreachable).
    """

    def __init__(self, message: str, *, status: int | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.unreachable = unreachable

    @property
    def retryable(self) -> bool:
        return self.unreachable or self.status is None or self.status == 429 or self.status >= 500

    @property
    def client_fault(self) -> bool:
        """The upstream rejected the request itself (400/404/413/422): retrying elsewhere won't help."""
        return self.status in (400, 404, 413, 422)


def upstream_error_message(status: int, data: bytes) -> str:
    """`HTTP 429: <the provider's error.message>`; the raw text (truncated) when it is not JSON."""
    detail = ""
    try:
        obj = orjson.loads(data)
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            detail = str(err.get("message") or "")
        elif isinstance(err, str):
            detail = err
        elif isinstance(obj, dict) and isinstance(obj.get("message"), str):
            detail = obj["message"]
    except orjson.JSONDecodeError:
        detail = data[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
