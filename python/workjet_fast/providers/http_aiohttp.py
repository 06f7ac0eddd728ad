"""HTTP/1.1 over aiohttp (`http_client: aiohttp` on a provider): the transport before `http1.py` replaced it,
kept as a measured alternative (benches/RESULTS.md, "Upstream client"). Needs `pip install aiohttp`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping

import aiohttp

from workjet_fast.config import ProviderConfig
from workjet_fast.providers.errors import UpstreamFailure
from workjet_fast.providers.http import StreamBody

__all__ = ["AiohttpTransport"]


class _AiohttpBody(StreamBody):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.status = response.status
        self.headers = response.headers

    async def read(self) -> bytes:
        try:
            return await self.response.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UpstreamFailure(f"reading the response failed: {_describe(e)}", unreachable=True) from None
        finally:
            self.response.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self.response.content.iter_any():
                yield data
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UpstreamFailure(f"the upstream stream broke: {_describe(e)}", unreachable=True) from None

    def close(self) -> None:
        # close(), not release(): an unfinished body must not go back to the pool.
        self.response.close()


class AiohttpTransport:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_connections, limit_per_host=self.config.max_connections, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, skip_auto_headers=("User-Agent",), auto_decompress=True
            )
        return self._session

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> StreamBody:
        session = self._get_session()
        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(self.config.timeout):
                    response = await session.post(url, data=body, headers=headers)
            else:  # pragma: no cover - 3.10
                response = await asyncio.wait_for(session.post(url, data=body, headers=headers), self.config.timeout)
        except TimeoutError:
            raise UpstreamFailure(f"no response within {self.config.timeout:g}s", unreachable=True) from None
        except aiohttp.ClientError as e:
            raise UpstreamFailure(f"cannot connect: {_describe(e)}", unreachable=True) from None
        return _AiohttpBody(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(e: BaseException) -> str:
    # Connection errors name host and port, never credentials (they travel in headers only).
    text = str(e) or type(e).__name__
    return text[:300]
