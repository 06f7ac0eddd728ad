"""uvicorn's httptools protocol with a faster response head: `workjet serve` runs uvicorn with `HttpProtocol`.

uvicorn walks a response's headers in Python (two regular expressions, a lower-casing and three comparisons per
header); the gateway's answers carry a dozen headers. `FastCycle.send` builds the head in one Rust call
(`response_head`, the same bytes by uvicorn's rules) and holds it until the body so that head and body leave in
one write: one system call and one packet instead of two. A Content-Length head waits for its body. A streamed
(chunked) head waits only as long as the app runs without yielding to the event loop: when its first event is
already at hand (the upstream sent it with its own head) they leave together, and otherwise the head leaves as
soon as the app awaits anything, so a client sees a slow stream's headers before its first event.

Only the plain case takes this path: headers uvicorn would reject or treat specially (`connection`,
`transfer-encoding`, an unusual `content-length`), headers not in a list or tuple, HEAD requests, 1xx/204/304
answers, a paused or closed connection, uvicorn's access log, and everything after the first body message go
through uvicorn's own `send` unchanged. An app that fails or returns between its head and its body still has the
head written first, as uvicorn would have. tests/test_http_protocol.py checks the bytes, the connection state
and the errors against uvicorn's, message by message and through `run_asgi`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from workjet_fast._workjet_fast import response_head
from workjet_fast.deadlines import Deadlines, Key, deadlines

__all__ = ["FastCycle", "HttpProtocol"]

_NO_BODY = frozenset((204, 304))


class FastCycle(RequestResponseCycle):
    """A `RequestResponseCycle` whose plain response heads are built in Rust and leave with the body."""

    _held: bytes | None = None  # a head waiting for the first body write
    _loop: asyncio.AbstractEventLoop | None = None  # set by HttpProtocol; without it a stream's head leaves at once

    async def run_asgi(self, app: Any) -> None:
        async def app_then_head(scope: Any, receive: Any, send: Any) -> Any:
            try:
                return await app(scope, receive, send)
            finally:
                # An app that raised or returned before its first body message: the head still goes out before
                # uvicorn closes the connection or logs the incomplete response, as it would have without holding.
                self._release_head()

        await super().run_asgi(app_then_head)

    async def send(self, message: Any) -> None:
        kind = message.get("type")
        if self._held is not None:
            if kind == "http.response.body" and await (
                self._send_chunk(message) if self.chunked_encoding else self._send_body(message)
            ):
                return
            self._release_head()
        elif (
            kind == "http.response.start"
            and not self.response_started
            and not self.disconnected
            and not self.flow.write_paused
            and not self.access_log
            and self._start(message)
        ):
            return
        await super().send(message)

    def _release_head(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self.disconnected:
            self.transport.write(held)

    def _start(self, message: Any) -> bool:
        status = message.get("status")
        headers = message.get("headers", ())
        # Only what the fast path can read without consuming or failing: an int status, headers in a list or a
        # tuple (a one-shot iterable read half-way would reach uvicorn empty). The rest is uvicorn's to judge.
        if type(status) is not int or type(headers) not in (list, tuple):
            return False
        line = STATUS_LINE.get(status)
        if line is None or status < 200 or status in _NO_BODY or self.scope["method"] == "HEAD":
            return False
        built = response_head(line, self.default_headers, headers, self.keep_alive)
        if built is None:
            return False
        head, length = built
        self.response_started = True
        self.waiting_for_100_continue = False
        if length < 0:
            self.chunked_encoding = True
            if self._loop is None:
                self.transport.write(head)
            else:
                # Released by the first body, or by this callback when the app yields before it: the callback runs
                # before the event loop next waits for I/O, so holding never delays the head behind a wait.
                self._held = head
                self._loop.call_soon(self._release_head)
        else:
            self.chunked_encoding = False
            self.expected_content_length = length
            self._held = head
        return True

    async def _send_chunk(self, message: Any) -> bool:
        """The first body write of a chunked response, with the held head; False: uvicorn decides. No yield comes
        between the head and this write (the callback would have released the head), so writing cannot have
        been paused since `_start` checked."""
        if self.disconnected:
            self._held = None
            return True  # what uvicorn does: the message is dropped
        body = message.get("body", b"")
        held = self._held
        if held is None or type(body) is not bytes or self.flow.write_paused:
            return False
        self._held = None
        more_body = message.get("more_body", False)
        end = b"" if more_body else b"0\r\n\r\n"
        self.transport.write(b"%s%x\r\n%s\r\n%s" % (held, len(body), body, end) if body else held + end)
        if not more_body:
            self._end()
        return True

    def _end(self) -> None:
        """uvicorn's bookkeeping after a response's last write."""
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    async def _send_body(self, message: Any) -> bool:
        """The first body write of a Content-Length response, with the held head; False: uvicorn decides."""
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            self._held = None
            return True  # what uvicorn does: the message is dropped
        body = message.get("body", b"")
        if type(body) is not bytes:
            return False  # uvicorn writes (or fails to write) anything else itself, after the head
        more_body = message.get("more_body", False)
        left = self.expected_content_length - len(body)
        if left < 0 or (left and not more_body):
            return False  # uvicorn raises its own error for a body longer or shorter than declared
        held, self._held = self._held, None
        assert held is not None
        self.expected_content_length = left
        self.transport.write(held + body if body else held)
        if not more_body:
            self._end()
        return True


class _KeepAlive:
    """uvicorn's keep-alive timer as a coarse deadline (`deadlines.py`): uvicorn only ever cancels it."""

    __slots__ = ("_deadlines", "_key")

    def __init__(self, deadlines: Deadlines, key: Key) -> None:
        self._deadlines = deadlines
        self._key = key

    def cancel(self) -> None:
        self._deadlines.cancel(self._key)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's `HttpToolsProtocol` whose request cycles are `FastCycle`s (pass it as uvicorn's `http`), and whose
    keep-alive timer, set after every response and cancelled by the next request, is a coarse deadline instead of
    an event-loop timer (~2.5 µs less per request under uvloop; it fires up to 20 ms late)."""

    if hasattr(HttpToolsProtocol, "_start_asgi_task"):  # the uvicorn (0.30 and later) whose method this copies

        def on_response_complete(self) -> None:
            """uvicorn's `on_response_complete`, but for the keep-alive timer."""
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._unset_keepalive_if_required()
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                timers = deadlines(self.loop)
                key = timers.add(self.timeout_keep_alive, self.timeout_keep_alive_handler)
                self.timeout_keep_alive_task = _KeepAlive(timers, key)  # type: ignore[assignment]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # Every cycle starts here, pipelined ones too, before `run_asgi` is looked up. Same attributes, same
        # construction: only `send` and `run_asgi` differ. A uvicorn without this hook simply runs its own cycle
        # (tests/test_http_protocol.py checks that a served request takes the fast path).
        if type(cycle) is RequestResponseCycle:
            cycle.__class__ = FastCycle
            cycle._loop = self.loop  # type: ignore[attr-defined]
        super()._start_asgi_task(cycle, app)
