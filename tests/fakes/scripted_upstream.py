"""A programmable OpenAI-compatible upstream for failure scenarios, over real HTTP on a loopback port.

Each request takes the next step of `script` (the last step repeats): an HTTP status (200 answers normally,
anything else with OpenAI's error envelope) or ``"stall"`` (never answers). Unlike the fake in
`openai_upstream.py` it shuts down promptly while a request is stalled, so stall tests can share a server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from tests.fakes._server import Fake, Handler, ServerThread

Step = int | str


@dataclass
class ScriptedUpstream(Fake):
    script: list[Step] = field(default_factory=lambda: [200])
    port: int = 0
    served: list[Step] = field(default_factory=list)
    _server: ServerThread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self) -> list[tuple[str, Handler]]:
        return [("/v1/chat/completions", self._chat)]

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
