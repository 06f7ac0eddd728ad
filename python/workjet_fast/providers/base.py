"""The provider interface: OpenAI chat format in, OpenAI chat format out, whatever the upstream speaks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

import orjson

from workjet_fast.config import ProviderConfig
from workjet_fast.providers.errors import UpstreamFailure, upstream_error_message
from workjet_fast.providers.http import HttpClient, StreamBody

__all__ = ["Provider", "UpstreamFailure", "UpstreamStream"]


class UpstreamStream(ABC):
    """An open upstream stream whose response headers said 200.

    Iterating yields OpenAI-format SSE bytes (`data: {chunk}\\n\\n` ... `data: [DONE]\\n\\n`), in whatever
    pieces the network delivers them. A failure while iterating raises `UpstreamFailure`.
    """

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def aclose(self) -> None:
        """Release the connection (also when the client went away mid-stream)."""


class Provider(ABC):
    """One configured upstream. Adapters translate; the `HttpClient` owns connections."""

    def __init__(self, config: ProviderConfig, client: HttpClient) -> None:
        self.config = config
        self.client = client
        self._headers: dict[str, str] = {}  # set by the adapter: content type and credentials

    async def _open(self, url: str, payload: bytes) -> StreamBody:
        """POST `payload`; any answer but 200 becomes an `UpstreamFailure` with the provider's message."""
        resp = await self.client.post(url, self._headers, payload)
        if resp.status != 200:
            data = await resp.read()
            raise UpstreamFailure(upstream_error_message(resp.status, data), status=resp.status)
        return resp

    async def _post_json(self, url: str, payload: bytes) -> Any:
        """`_open`, then the body parsed as JSON (a 200 that is not JSON is a failure too)."""
        data = await (await self._open(url, payload)).read()
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure("the upstream answered 200 with a body that is not JSON", status=502) from None

    @abstractmethod
    async def complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming call. `body` is an OpenAI chat request (already validated, `model` not yet set);
        returns an OpenAI `chat.completion` object."""

    @abstractmethod
    async def stream(self, model: str, body: dict[str, Any]) -> UpstreamStream:
        """Open a streaming call; returns once the upstream answered 200, raises `UpstreamFailure` otherwise."""

    async def aclose(self) -> None:
        await self.client.aclose()
