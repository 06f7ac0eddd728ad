"""A programmable OpenAI-compatible upstream for failure scenarios, over real HTTP on a loopback port.

Each request takes the next step of `script` (the last step repeats): an HTTP status (200 answers normally,
anything else with OpenAI's error envelope) or ``"stall"`` (never answers). Unlike the fake in
`openai_upstream.py` it shuts down promptly while a request is stalled, so stall tests can share a server.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import free_port

Step = int | str


@dataclass
class ScriptedUpstream:
    script: list[Step] = field(default_factory=lambda: [200])
    port: int = 0
    served: list[Step] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedUpstream:
        self.port = self.port or free_port()
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
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

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        step = self.script[min(len(self.served), len(self.script) - 1)]
        self.served.append(step)
        if step == "stall":
            await asyncio.sleep(3600)
        status = int(step)
        if status != 200:
            err = {"error": {"message": f"scripted {status}", "type": "scripted", "code": None}}
            return web.json_response(err, status=status)
        if body.get("stream"):
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
            chunk["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": None}]
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n")
            await resp.write_eof()
            return resp
        message = {"role": "assistant", "content": "ok"}
        return web.json_response(
            {
                "id": "chatcmpl-s",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )
