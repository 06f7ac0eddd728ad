"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Together, ...) and Azure OpenAI.

The request body is already OpenAI's shape, so this adapter only sets the provider's model name,
credentials and URL. Reference: https://platform.openai.com/docs/api-reference/chat/create;
Azure: https://learn.microsoft.com/azure/ai-services/openai/reference (deployment URL, `api-version`
query parameter, `api-key` header).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from workjet_fast.config import ProviderConfig
from workjet_fast.providers.base import Provider, UpstreamFailure, UpstreamStream
from workjet_fast.providers.http import HttpClient, StreamBody

__all__ = ["OpenAIProvider"]


class OpenAIProvider(Provider):
    def __init__(self, config: ProviderConfig, client: HttpClient) -> None:
        super().__init__(config, client)
        headers = {"content-type": "application/json", **config.headers}
        if config.type == "azure_openai":
            if config.api_key:
                headers["api-key"] = config.api_key
        elif config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        self._headers = headers

    def _url(self, model: str) -> str:
        if self.config.type == "azure_openai":
            base = f"{self.config.base_url}/openai/deployments/{model}"
            return f"{base}/chat/completions?api-version={self.config.api_version}"
        return f"{self.config.base_url}/chat/completions"

    def _body(self, model: str, body: dict[str, Any]) -> bytes:
        body["model"] = model
        return orjson.dumps(body)

    async def complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        out = await self._post_json(self._url(model), self._body(model, body))
        if not isinstance(out, dict) or not isinstance(out.get("choices"), list):
            raise UpstreamFailure("the upstream answered 200 without `choices`", status=502)
        return out

    async def stream(self, model: str, body: dict[str, Any]) -> UpstreamStream:
        return _PassThroughStream(await self._open(self._url(model), self._body(model, body)))


class _PassThroughStream(UpstreamStream):
    def __init__(self, body: StreamBody) -> None:
        self._body = body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body.chunks()

    async def aclose(self) -> None:
        self._body.close()
