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

__all__ = ["OpenAIProvider", "upstream_error_message"]


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
        resp = await self.client.post(self._url(model), self._headers, self._body(model, body))
        data = await resp.read()
        if resp.status != 200:
            raise UpstreamFailure(upstream_error_message(resp.status, data), status=resp.status)
        try:
            out = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure("the upstream answered 200 with a body that is not JSON", status=502) from None
        if not isinstance(out, dict) or not isinstance(out.get("choices"), list):
            raise UpstreamFailure("the upstream answered 200 without `choices`", status=502)
        return out

    async def stream(self, model: str, body: dict[str, Any]) -> UpstreamStream:
        resp = await self.client.post(self._url(model), self._headers, self._body(model, body))
        if resp.status != 200:
            data = await resp.read()
            raise UpstreamFailure(upstream_error_message(resp.status, data), status=resp.status)
        return _PassThroughStream(resp)


class _PassThroughStream(UpstreamStream):
    def __init__(self, body: StreamBody) -> None:
        self._body = body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body.chunks()

    async def aclose(self) -> None:
        self._body.close()


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
