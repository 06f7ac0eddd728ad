"""An aiohttp application served from its own thread and event loop on a loopback port: the one piece every
fake upstream shares."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def write_split(resp: web.StreamResponse, frames: list[bytes], size: int) -> None:
    """Write the stream in pieces of `size` bytes, whatever the frame boundaries (a network read can end
    anywhere: in a line, in a UTF-8 character, between CR and LF)."""
    raw = b"".join(frames)
    for i in range(0, len(raw), size):
        await resp.write(raw[i : i + size])
        await asyncio.sleep(0)


async def _cancel_pending() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ServerThread:
    def __init__(self, routes: list[tuple[str, Handler]], port: int = 0) -> None:
        self.routes = routes  # (path, handler) for POST
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ServerThread:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            for path, handler in self.routes:
                app.router.add_post(path, handler)
            # A short shutdown timeout: stalled handlers must not hold a test's teardown.
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(_cancel_pending())  # handlers still stalled: end them before closing
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None


F = TypeVar("F", bound="Fake")


class Fake:
    """What every fake upstream shares: `start()` (or `with`) serves `routes()` on `port` (0: a free one)."""

    port: int
    _server: ServerThread | None

    def routes(self) -> list[tuple[str, Handler]]:
        raise NotImplementedError

    def start(self: F) -> F:
        self._server = ServerThread(self.routes(), self.port).start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self: F) -> F:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
