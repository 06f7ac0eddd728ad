"""`FastCycle` against uvicorn's own `RequestResponseCycle`: the same bytes, the same state, the same errors."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from workjet_fast.http_protocol import FastCycle, HttpProtocol


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _cycle(
    cls: type[RequestResponseCycle], method: str, keep_alive: bool, loop: bool = False
) -> tuple[Any, Transport, list[int]]:
    """A cycle on a recording transport; `loop`: a FastCycle given the running loop, as `HttpProtocol` does."""
    transport = Transport()
    done: list[int] = []
    log = logging.getLogger("test")
    cycle = cls(
        scope={"type": "http", "method": method, "path": "/", "http_version": "1.1"},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=log,
        access_logger=log,
        access_log=False,
        default_headers=[(b"date", b"Wed, 25 Nov 2026 22:00:00 GMT")],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: done.append(1),
    )
    if loop and cls is FastCycle:
        cycle._loop = asyncio.get_running_loop()
    return cycle, transport, done


async def _play(
    cls: type[RequestResponseCycle], method: str, keep_alive: bool, messages: list[Any], loop: bool = False
) -> tuple[Any, int]:
    """What the client and the cycle end up with (compared between the two cycles), and how many writes it took.
    The messages are sent without yielding to the event loop in between; the app yields after the last one."""
    cycle, transport, done = _cycle(cls, method, keep_alive, loop)
    error = None
    for m in messages:
        try:
            await cycle.send(m)
        except Exception as e:  # the outcome compared includes uvicorn's errors
            error = (type(e).__name__, str(e))
            break
    await asyncio.sleep(0)
    state = (cycle.response_started, cycle.response_complete, cycle.keep_alive, cycle.chunked_encoding)
    return (b"".join(transport.writes), transport.closed, len(done), state, error), len(transport.writes)


def _same(method: str, keep_alive: bool, messages: list[Any], loop: bool = False) -> int:
    """Play the messages on both cycles; returns how many writes FastCycle made."""

    async def both() -> tuple[tuple[Any, int], tuple[Any, int]]:
        ours = await _play(FastCycle, method, keep_alive, messages, loop)
        return ours, await _play(RequestResponseCycle, method, keep_alive, messages)

    (ours, writes), (theirs, _) = asyncio.run(both())
    assert ours == theirs, messages
    return writes


def _start(headers: list[Any], status: int = 200) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def _body(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": more}


JSON = [(b"x-request-id", b"abc"), (b"content-type", b"application/json"), (b"content-length", b"2")]


def test_a_json_answer_leaves_in_one_write_with_uvicorns_bytes() -> None:
    assert _same("POST", True, [_start(JSON), _body(b"{}")]) == 1


def test_a_stream_sends_its_head_at_once_then_uvicorn_frames_the_chunks() -> None:
    msgs = [_start([(b"content-type", b"text/event-stream")]), _body(b"data: 1\n\n", True), _body(b"", False)]
    assert _same("POST", True, msgs) == 3

    async def head_only() -> list[bytes]:
        cycle, transport, _ = _cycle(FastCycle, "POST", True)
        await cycle.send(msgs[0])
        return transport.writes

    writes = asyncio.run(head_only())
    assert len(writes) == 1 and writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")


STREAM = [(b"content-type", b"text/event-stream")]


@pytest.mark.parametrize(
    "tail",
    [[_body(b"data: 2\n\n", True), _body(b"")], [_body(b"data: 2\n\n")], [_body(b"", True), _body(b"")]],
)
def test_a_stream_whose_first_event_is_at_hand_sends_it_with_the_head(tail: list[Any]) -> None:
    """In the server (HttpProtocol gives the cycle its loop): an app that sends its first event without awaiting
    anything in between sends it in the head's write; the bytes are uvicorn's."""
    msgs = [_start(STREAM), _body(b"data: 1\n\n", True), *tail]
    assert _same("POST", True, msgs, loop=True) == len(msgs) - 1
    assert _same("POST", True, [_start(STREAM), _body(b"data: 1\n\n")], loop=True) == 1


def test_a_stream_that_waits_for_its_first_event_sends_its_head_at_once() -> None:
    async def play() -> tuple[list[bytes], list[bytes]]:
        cycle, transport, _ = _cycle(FastCycle, "POST", True, loop=True)
        await cycle.send(_start(STREAM))
        assert transport.writes == []  # held while the app runs on
        await asyncio.sleep(0)  # the app awaits something: the head leaves before the loop waits
        after_wait = list(transport.writes)
        await cycle.send(_body(b"data: 1\n\n", True))
        await cycle.send(_body(b""))
        return after_wait, transport.writes

    after_wait, writes = asyncio.run(play())
    assert len(after_wait) == 1 and after_wait[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]  # uvicorn's framing, as before


def test_a_stream_whose_client_left_before_its_first_event_gets_nothing() -> None:
    async def play() -> tuple[bool, list[bytes]]:
        cycle, transport, _ = _cycle(FastCycle, "POST", True, loop=True)
        await cycle.send(_start(STREAM))
        cycle.disconnected = True
        await asyncio.sleep(0)
        await cycle.send(_body(b"data: 1\n\n", True))
        return cycle.response_complete, transport.writes

    assert asyncio.run(play()) == (False, [])


@pytest.mark.parametrize("keep_alive", [True, False])
def test_a_closing_connection_is_closed_after_the_answer(keep_alive: bool) -> None:
    _same("POST", keep_alive, [_start(JSON), _body(b"{}")])
    _same("POST", keep_alive, [_start(STREAM), _body(b"data: 1\n\n")], loop=True)


@pytest.mark.parametrize(
    "messages",
    [
        [_start(JSON), _body(b"{", True), _body(b"}")],  # the body in two parts
        [_start(JSON), _body(b"{}!")],  # longer than declared
        [_start(JSON), _body(b"{")],  # shorter than declared
        [_start(JSON), _start(JSON)],  # a second start
        [_start(JSON), _body(b"{}"), _body(b"")],  # a body after the end
        [_body(b"{}")],  # a body before the start
        [_start(JSON, 204), _body(b"")],
        [_start(JSON, 304), _body(b"")],
        [_start([(b"content-length", b"0")], 101), _body(b"")],
        [_start(JSON, 599), _body(b"{}")],
        [_start([*JSON, (b"Connection", b"close")]), _body(b"{}")],
        [_start([(b"transfer-encoding", b"chunked")]), _body(b"ab")],
        [_start([(b"content-length", b" 2")]), _body(b"{}")],
        [_start([(b"content-length", b"2"), (b"content-length", b"3")]), _body(b"{}")],
        [_start([(b"bad name", b"x")]), _body(b"")],
        [_start([(b"x", b"a\r\nb")]), _body(b"")],
        [_start([[b"content-length", b"2"]]), _body(b"{}")],  # a list, not a tuple: uvicorn's path
        [_start([("content-length", "2")]), _body(b"{}")],  # str, not bytes
    ],
)
def test_every_unusual_case_behaves_as_uvicorn(messages: list[Any]) -> None:
    _same("POST", True, messages)
    _same("POST", True, messages, loop=True)


def test_head_requests_go_through_uvicorn() -> None:
    _same("HEAD", True, [_start(JSON), _body(b"")])
    _same("HEAD", True, [_start(STREAM), _body(b"")], loop=True)


def test_a_disconnected_client_gets_nothing_more() -> None:
    async def play(cls: type[RequestResponseCycle]) -> tuple[bool, int]:
        cycle, transport, _ = _cycle(cls, "POST", True)
        await cycle.send(_start(JSON))
        cycle.disconnected = True
        await cycle.send(_body(b"{}"))
        return cycle.response_complete, len(transport.writes)

    assert asyncio.run(play(RequestResponseCycle)) == (False, 1)  # uvicorn had written the head
    assert asyncio.run(play(FastCycle)) == (False, 0)  # the held head is dropped with the body


def test_random_headers_match_uvicorn() -> None:
    rng = random.Random(7)
    alphabet = [b"a", b"B", b"-", b"0", b" ", b"\t", b":", b"\x00", b"\x7f", b"\xe9", b"(", b"\r"]
    names = [b"x-a", b"X-Ratelimit-Limit-Requests", b"content-length", b"Content-Length", b"connection", b"te"]
    for _ in range(400):
        headers = []
        for _ in range(rng.randrange(0, 6)):
            name = rng.choice(names) if rng.random() < 0.6 else b"".join(rng.choices(alphabet, k=rng.randrange(1, 5)))
            value = b"".join(rng.choices(alphabet, k=rng.randrange(0, 6)))
            if name.lower() == b"content-length" and rng.random() < 0.7:
                value = str(rng.randrange(0, 4)).encode()
            headers.append((name, value))
        body = b"x" * rng.randrange(0, 4)
        messages = [_start(headers, rng.choice([200, 201, 404, 500])), _body(body, rng.random() < 0.2), _body(b"")]
        _same(rng.choice(["GET", "POST"]), rng.random() < 0.8, messages, loop=rng.random() < 0.5)


def test_a_server_with_it_answers_on_a_kept_alive_connection_by_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken: list[bool] = []
    start = FastCycle._start

    def spy(self: FastCycle, message: Any) -> bool:
        taken.append(start(self, message))
        return taken[-1]

    monkeypatch.setattr(FastCycle, "_start", spy)
    asyncio.run(_serve_and_ask(_free_port()))
    assert taken == [True, True, True, True, True]


def test_an_idle_kept_alive_connection_is_closed_by_its_deadline_and_pipelining_still_works() -> None:
    async def main() -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                await send(_start([(b"content-length", b"2")]))
                await send(_body(b"ok"))

        port = _free_port()
        config = uvicorn.Config(
            app,
            port=port,
            http=HttpProtocol,
            log_level="warning",
            lifespan="off",
            timeout_keep_alive=0.2,  # type: ignore[arg-type]  # typed int, read as a number of seconds
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            ask = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
            writer.write(ask * 2)  # pipelined: the second starts when the first is answered
            answers = b""
            while answers.count(b"ok") < 2:
                answers += await asyncio.wait_for(reader.read(4096), 5)
            assert answers.count(b"HTTP/1.1 200 OK") == 2
            (protocol,) = server.server_state.connections
            assert isinstance(protocol, HttpProtocol)
            assert type(protocol.timeout_keep_alive_task).__name__ == "_KeepAlive"  # the deadline, not a loop timer
            started = asyncio.get_running_loop().time()
            assert await asyncio.wait_for(reader.read(4096), 5) == b""  # closed by the server, idle
            waited = asyncio.get_running_loop().time() - started
            assert 0.15 <= waited < 0.2 + 0.5, waited
            writer.close()
        finally:
            server.should_exit = True
            await task

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve_and_ask(port: int) -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":  # the first event at hand: it leaves with the head
            await send(_start(STREAM))
            await send(_body(b"data: 1\n\n", True))
            await asyncio.sleep(0)
            await send(_body(b"data: 2\n\n"))
            return
        if scope["path"] == "/slow":  # the first event waits on the client, which must see the head first
            await send(_start(STREAM))
            await gate.wait()
            await send(_body(b"data: 1\n\n"))
            return
        await send(_start([(b"content-type", b"application/json"), (b"content-length", b"11")]))
        await send(_body(b'{"ok":true}'))

    # As `workjet serve` runs it: uvicorn's access log off (with it on, uvicorn's own send writes every head).
    config = uvicorn.Config(app, port=port, http=HttpProtocol, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            for _ in range(3):  # keep-alive: the same connection answers again
                r = await client.get(f"http://127.0.0.1:{port}/")
                assert r.status_code == 200 and r.json() == {"ok": True}
                assert r.headers["content-length"] == "11" and "date" in r.headers
            r = await client.get(f"http://127.0.0.1:{port}/stream")
            assert r.text == "data: 1\n\ndata: 2\n\n" and r.headers["transfer-encoding"] == "chunked"
            async with asyncio.timeout(10), client.stream("GET", f"http://127.0.0.1:{port}/slow") as slow:
                assert slow.headers["content-type"] == "text/event-stream"  # before any event was sent
                gate.set()
                assert await slow.aread() == b"data: 1\n\n"
    finally:
        server.should_exit = True
        await task


# ---- through run_asgi: apps that fail or stop half-way -----------------------------------------------------------


def _run_app(cls: type[RequestResponseCycle], app: Any, loop: bool = False) -> Any:
    async def go() -> Any:
        cycle, transport, done = _cycle(cls, "POST", True, loop)
        logging.getLogger("test").disabled = True  # uvicorn logs the failures these apps are made of
        try:
            await cycle.run_asgi(app)
        finally:
            logging.getLogger("test").disabled = False
        return b"".join(transport.writes), transport.closed, len(done), cycle.response_complete

    return asyncio.run(go())


def _app(*messages: Any, fail: bool = False) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for m in messages:
            await send(m)
        if fail:
            raise ValueError("the app failed")

    return app


def _one_shot(headers: list[tuple[bytes, bytes]]) -> Any:
    return (h for h in headers)


@pytest.mark.parametrize(
    "make_app",  # a new app per run: a one-shot iterable of headers is used up by the first
    [
        lambda: _app(_start(JSON), _body(b"{}")),
        lambda: _app(_start(JSON), fail=True),  # raised between head and body
        lambda: _app(_start([(b"content-length", b"0")])),  # returned without a body message
        lambda: _app(_start(JSON), _body("{}")),  # type: ignore[arg-type]  # a str body
        lambda: _app({"type": "http.response.start", "headers": JSON}),  # no status
        lambda: _app({"type": "http.response.start", "status": 200, "headers": None}),
        lambda: _app({"type": "http.response.start", "status": 200, "headers": _one_shot([(b"x-a", b"1"), *JSON])}),
        lambda: _app(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _one_shot([(b"x-a", b"1"), (b"connection", b"close"), *JSON]),
            },
            _body(b"{}"),
        ),
        lambda: _app(_start([(b"content-type", b"text/event-stream")]), _body(b"data: 1\n\n", True), fail=True),
        lambda: _app(_start([(b"content-type", b"text/event-stream")]), fail=True),  # failed before its first event
        lambda: _app(_start([(b"content-type", b"text/event-stream")])),  # returned without an event
    ],
)
def test_apps_that_fail_or_stop_half_way_get_uvicorns_bytes(make_app: Any) -> None:
    theirs = _run_app(RequestResponseCycle, make_app())
    assert _run_app(FastCycle, make_app()) == theirs
    assert _run_app(FastCycle, make_app(), loop=True) == theirs
