"""The provider interface: OpenAI chat format in, OpenAI chat format out, whatever the upstream speaks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from workjet_fast.config import ProviderConfig
from workjet_fast.providers.errors import UpstreamFailure
from workjet_fast.providers.http import HttpClient

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

    @abstractmethod
    async def complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming call. `body` is an OpenAI chat request (already validated, `model` not yet set);
        returns an OpenAI `chat.completion` object."""

    @abstractmethod
    async def stream(self, model: str, body: dict[str, Any]) -> UpstreamStream:
        """Open a streaming call; returns once the upstream answered 200, raises `UpstreamFailure` otherwise."""

    async def aclose(self) -> None:
        await self.client.aclose()
