"""The HTTP/2 transport behind `HttpClient` (provider option `http2: true` or `http2: prior_knowledge`).

httpx with the `h2` package (install `httpx[http2]`): over https it offers h2 and http/1.1 by ALPN and speaks
whatever the upstream picks; with `prior_knowledge` it speaks HTTP/2 from the first byte, which also works over
plain http (h2c). One `AsyncClient` per provider; requests share connections as HTTP/2 streams, and a new
connection opens only when the upstream's MAX_CONCURRENT_STREAMS is reached, up to `max_connections`.

httpcore (1.0.x) does not reset a stream whose response is closed before its end (encode/httpcore#943): the
upstream keeps generating into a stream nobody reads, its flow-control window stays spent, and after 100 such
closes the connection refuses new streams ("Max outbound streams is 100, 100 open"). A gateway closes
streams early every time a client disconnects, so `_abandon` sends RST_STREAM(CANCEL) itself before closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

import h2.errors
import h2.exceptions
import httpx

from workjet_fast.config import ProviderConfig
from workjet_fast.providers.errors import UpstreamFailure
from workjet_fast.providers.http import StreamBody

__all__ = ["Http2Transport"]

KEEPALIVE_EXPIRY = 30.0  # seconds an idle connection is kept, as for HTTP/1.1


class _Http2Body(StreamBody):
    def __init__(self, response: httpx.Response, transport: Http2Transport) -> None:
        self.response = response
        self.status = response.status_code
        self.headers = response.headers
        self._transport = transport

    @property
    def http_version(self) -> str:
        """What was spoken: "HTTP/2", or "HTTP/1.1" when an https upstream did not choose h2 by ALPN."""
        return self.response.http_version

    async def read(self) -> bytes:
        try:
            return await self.response.aread()
        except (httpx.HTTPError, TimeoutError) as e:
            raise UpstreamFailure(f"reading the response failed: {_describe(e)}", unreachable=True) from None
        finally:
            await self.response.aclose()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self.response.aiter_bytes():
                yield data
        except (httpx.HTTPError, TimeoutError) as e:
            raise UpstreamFailure(f"the upstream stream broke: {_describe(e)}", unreachable=True) from None

    def close(self) -> None:
        if not self.response.is_closed:
            self._transport.later(_abandon(self.response))


class Http2Transport:
    """httpx.AsyncClient(http2=True) with the provider's pool size and timeouts."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        )
        # `timeout` (until the response headers) is enforced around send(); pool waits count against it too.
        timeout = httpx.Timeout(
            connect=config.connect_timeout, read=config.read_timeout, write=config.read_timeout, pool=None
        )
        self._client = httpx.AsyncClient(
            http1=not config.http2_prior_knowledge,
            http2=True,
            limits=limits,
            timeout=timeout,
            trust_env=False,
            follow_redirects=False,
        )
        del self._client.headers["user-agent"]
        self._pending: set[asyncio.Task[None]] = set()

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> StreamBody:
        request = self._client.build_request("POST", url, headers=headers, content=body)
        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(self.config.timeout):
                    response = await self._client.send(request, stream=True)
            else:  # pragma: no cover - 3.10
                response = await asyncio.wait_for(self._client.send(request, stream=True), self.config.timeout)
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamFailure(f"no response within {self.config.timeout:g}s", unreachable=True) from None
        except httpx.HTTPError as e:
            where = f"{request.url.host}:{request.url.port or (443 if request.url.scheme == 'https' else 80)}"
            raise UpstreamFailure(f"cannot connect to {where}: {_describe(e)}", unreachable=True) from None
        return _Http2Body(response, self)

    def later(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a clean-up that `StreamBody.close()` (synchronous) cannot await; `aclose()` waits for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._client.aclose()


async def _abandon(response: httpx.Response) -> None:
    """Reset the response's HTTP/2 stream if it is still open (see the module docstring), then close it."""
    try:
        inner = _h2_byte_stream(response.stream)
        conn = getattr(inner, "_connection", None)
        state = getattr(conn, "_h2_state", None)
        stream_id = getattr(inner, "_stream_id", None)
        request = getattr(inner, "_request", None)
        if conn is not None and state is not None and request is not None and isinstance(stream_id, int):
            stream = state.streams.get(stream_id)
            if stream is not None and not stream.closed:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    state.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
                    await conn._write_outgoing_data(request)
    except Exception:
        pass  # the connection is broken anyway; closing below drops it
    finally:
        await response.aclose()


def _h2_byte_stream(stream: object) -> object | None:
    """httpcore's HTTP2ConnectionByteStream under httpx's wrappers (BoundAsyncStream -> AsyncResponseStream ->
    PoolByteStream -> it): the object that knows the connection and the stream id. None for HTTP/1.1."""
    for _ in range(6):
        if hasattr(stream, "_stream_id") and hasattr(stream, "_connection"):
            return stream
        stream = getattr(stream, "_stream", None) or getattr(stream, "_httpcore_stream", None)
        if stream is None:
            return None
    return None


def _describe(e: BaseException) -> str:
    # Connection errors name host and port, never credentials (they travel in headers only).
    text = str(e) or type(e).__name__
    return text[:300]
