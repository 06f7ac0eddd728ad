"""`POST /v1/chat/completions` as plain ASGI: the gateway's hot route.

Order: auth (headers only) -> body (size cap, 413 without reading it whole) -> validate -> route and
per-key permission -> max_tokens cap -> DLP on the request -> limits -> provider -> response (JSON, or
SSE relayed chunk by chunk through the Rust `ChunkRelay`) -> audit. A client that disconnects mid-stream
cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from workjet_fast._workjet_fast import chat_ok, count_chat_tokens, count_tokens, request_key
from workjet_fast.context import RequestContext
from workjet_fast.errors import Forbidden, GatewayError, PayloadTooLarge
from workjet_fast.gateway import Gateway
from workjet_fast.heap import release_free_heap
from workjet_fast.pipeline.route import Route
from workjet_fast.pipeline.validate import parse_body, validate_chat
from workjet_fast.providers import UpstreamFailure
from workjet_fast.web import Receive, Scope, Send, api_key_from, new_request_id

__all__ = ["ChatHandler"]

log = logging.getLogger("workjet.handler")

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientGone(Exception):
    """The client disconnected before the request body was read."""


class ChatHandler:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.max_body = gateway.settings.server.max_body_bytes
        self.store_bodies = gateway.settings.audit.store_bodies
        self.dlp_on = gateway.settings.dlp.enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        ctx = RequestContext(
            request_id=new_request_id(), client=client[0] if client else None, path="/v1/chat/completions"
        )
        headers: list[tuple[bytes, bytes]] = [(b"x-request-id", ctx.request_id.encode())]
        gw = self.gw
        gw.in_flight += 1
        try:
            await self._handle(scope, receive, send, ctx, headers)
        except GatewayError as e:
            ctx.finish(e.status, e.code)
            await _send_error(send, e, headers)
        except ClientGone:
            ctx.finish(499, "client_closed")
        except asyncio.CancelledError:
            if ctx.error_code != "client_closed":
                ctx.finish(499, "client_closed")
                raise  # cancelled from outside (shutdown): let it propagate
            # Our own disconnect watcher cancelled the stream: the client is gone and the upstream is closed;
            # nothing is wrong with the server, so the cancellation ends here instead of reaching uvicorn.
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            ctx.finish(499, "client_closed")
        except Exception:
            log.exception("request %s failed", ctx.request_id)
            err = GatewayError("The gateway failed to handle this request; it has been logged.")
            ctx.finish(500, err.code)
            await _send_error(send, err, headers)
        finally:
            gw.in_flight -= 1
            if ctx.ended_at is None:
                ctx.finish(ctx.status)
            gw.audit_submit(ctx)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext, headers: list[tuple[bytes, bytes]]
    ) -> None:
        keys = self.gw.keys
        # One Rust call reads the key's hash and the body's length from the headers; any key it cannot judge as
        # the Python code would (none, malformed, blanks to strip), or one not in the cache, takes the full path.
        fast = request_key(scope["headers"])
        key_hash, content_length = fast if fast is not None else (None, _headers(scope).get("content-length"))
        key = keys.by_hash(key_hash) if key_hash is not None else None
        if key is None:
            api_key = api_key_from(_headers(scope))
            key = keys.cached(api_key) or await keys.authenticate(api_key)
        ctx.key_id, ctx.key_name = key.id, key.name

        raw = await _read_body(receive, content_length, self.max_body)
        body = parse_body(raw)
        checked = chat_ok(body)  # a valid body is told in one Rust call; any other gets validate_chat's error
        model, stream = checked if checked is not None else validate_chat(body)
        ctx.requested_model, ctx.stream = model, stream
        user = body.get("user")
        ctx.user = user if isinstance(user, str) else None

        route = self.gw.router.resolve(model)
        ctx.route_kind = "tier" if route.is_tier else "model"
        if not key.may_use(route.public_id, route.is_tier):
            raise _forbidden(route)
        _apply_cap(body, route)
        self.gw.dlp.scan_request(body, ctx, route.public_id)
        if self.store_bodies:
            ctx.request_body = body

        limiter = self.gw.limiter
        spec = limiter.spec_for(key.limits, route.public_id, route.is_tier)
        prompt_tokens = 0
        exact = None
        if spec.tpm is not None:  # a token budget needs the prompt's tokens before the call
            if len(raw) * BOUND_SHARE <= spec.tpm and ctx.dlp_state != "redacted":
                # The body's length bounds the prompt's tokens, and is small beside the budget: admit on the bound,
                # count only if the bound is refused, and charge the actual tokens at settle.
                prompt_tokens = len(raw)
                exact = self._counter(body["messages"], model, ctx)
            else:
                prompt_tokens = await _count_prompt(body["messages"], model)
                ctx.prompt_tokens, ctx.prompt_tokens_source = prompt_tokens, "gateway"
        max_out = body.get("max_tokens") or body.get("max_completion_tokens")
        try:
            admission = await limiter.admit(key.id, spec, prompt_tokens, max_out, exact)
        except GatewayError as e:
            if e.status == 429:
                self.gw.metrics.rate_limited(e.message.split(":", 1)[0])
            raise
        headers.extend(admission.header_pairs())
        try:
            if stream:
                await self._stream(route, body, receive, send, ctx, headers)
            else:
                await self._complete(route, body, send, ctx, headers)
        finally:
            try:
                if ctx.prompt_tokens is None and (ctx.attempts or exact is not None):
                    # Not counted before the call (no budget needed it, or its bound was admitted) and the provider
                    # reported no usage: count now, after the response. A prompt admitted on its bound is counted
                    # even when no provider was reached, as it would have been before the call.
                    ctx.prompt_tokens = await _count_prompt(body["messages"], model)
                    ctx.prompt_tokens_source = "gateway"
            finally:  # the count may wait on a thread; whatever becomes of it, the admission is settled
                await limiter.settle(admission, ctx.prompt_tokens or 0, ctx.completion_tokens or 0)

    @staticmethod
    def _counter(messages: list[Any], model: str, ctx: RequestContext) -> Callable[[], Awaitable[int]]:
        async def count() -> int:
            ctx.prompt_tokens = await _count_prompt(messages, model)
            ctx.prompt_tokens_source = "gateway"
            return ctx.prompt_tokens

        return count

    async def _complete(
        self, route: Route, body: dict[str, Any], send: Send, ctx: RequestContext, headers: list[tuple[bytes, bytes]]
    ) -> None:
        result = await self.gw.router.complete(route, body, ctx)
        _account_usage(ctx, result.get("usage"))
        choices = result.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            ctx.finish_reason = choices[0].get("finish_reason")
            if ctx.completion_tokens is None:
                text = (choices[0].get("message") or {}).get("content")
                if isinstance(text, str):
                    ctx.completion_tokens, ctx.completion_tokens_source = count_tokens(text), "gateway"
        self.gw.dlp.scan_response(result, ctx, route.public_id)
        if self.store_bodies:
            ctx.response_body = result
        result["model"] = ctx.served_model or route.public_id
        payload = orjson.dumps(result)
        ctx.finish(200)
        headers.append(_JSON)
        headers.append((b"content-length", b"%d" % len(payload)))  # not chunked: what OpenAI sends, less framing
        headers.append((b"x-workjet-dlp", ctx.dlp_state.encode() if self.dlp_on else b"off"))
        headers.append(_overhead(ctx))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _stream(
        self,
        route: Route,
        body: dict[str, Any],
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        upstream = await self.gw.router.stream(route, body, ctx)
        relay = self.gw.dlp.relay(ctx.served_model or route.public_id, ctx, route.public_id)
        headers.extend(_SSE_HEADERS)
        # A stream's headers leave before its text is scanned: the header tells the request side only.
        headers.append((b"x-workjet-dlp", ctx.dlp_state.encode() if self.dlp_on else b"off"))
        headers.append(_overhead(ctx))
        watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(receive, asyncio.current_task(), ctx))
        ctx.status = 200
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            t_up = time.perf_counter()
            last = b""  # the output of the piece that ended the stream, sent with the tail in one write
            try:
                first = True
                async for piece in upstream:
                    parts: tuple[bytes, ...] = (piece,)
                    if first:
                        # A first read holding more than one event (a fast or cached upstream): while this is the
                        # only request in flight, its first event leaves before the rest is relayed and scanned.
                        # The first `data:` byte comes sooner, the last a little later (docs/routing.md); with others
                        # in flight the extra write and wake-up (~25 µs of CPU) would cost throughput instead.
                        first = False
                        cut = _first_event_end(piece)
                        if 0 < cut < len(piece) and self.gw.in_flight <= 1:
                            parts = (piece[:cut], piece[cut:])
                    for part in parts:
                        out = relay.feed(part)
                        if relay.done:
                            last = out
                            break
                        if out:
                            await send({"type": "http.response.body", "body": out, "more_body": True})
                    else:
                        continue
                    break  # the relay is done
                tail = last + relay.finish()
            except UpstreamFailure as f:
                # After the first byte nothing is retried: tell the client in the stream and end it cleanly.
                tail = relay.finish() + _sse_error(f"The upstream stream failed: {f.message}", "provider_error")
                ctx.error_code = "provider_error"
            ctx.upstream_ms += (time.perf_counter() - t_up) * 1000
            if relay.error is not None:
                ctx.error_code = ctx.error_code or "provider_error"
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            usage = relay.usage
            if usage is not None:
                _account_usage(ctx, {"prompt_tokens": usage[0], "completion_tokens": usage[1]})
            else:
                # No usage from the provider: estimate from the characters released (~4 per token).
                ctx.completion_tokens = -(-relay.content_chars // 4)
                ctx.completion_tokens_source = "gateway"
            ctx.finish_reason = relay.finish_reason
            self.gw.dlp.record_stream(relay, ctx)
            ctx.finish(200, ctx.error_code)
        finally:
            watcher.cancel()
            await upstream.aclose()


def _first_event_end(data: bytes) -> int:
    """Where the first SSE event in `data` ends (after its blank line, LF or CRLF), or -1."""
    lf, crlf = data.find(b"\n\n"), data.find(b"\r\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 4
    return lf + 2 if lf >= 0 else -1


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any] | None, ctx: RequestContext) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if task is not None:
                ctx.error_code = "client_closed"  # tells the handler this cancellation is ours
                task.cancel()
            return


_WANTED = frozenset((b"authorization", b"x-api-key", b"content-length"))


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers the route reads (uvicorn gives names in lower case); the others are not decoded."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _WANTED}


async def _read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = -1
        if declared > limit:
            raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {limit}.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _forbidden(route: Route) -> GatewayError:
    what = "tier" if route.is_tier else "model"
    return Forbidden(f"This API key may not use the {what} {route.public_id!r}.", param="model")


def _apply_cap(body: dict[str, Any], route: Route) -> None:
    """The tier's or model's max_tokens cap: a client asking for more, or for nothing, gets the cap."""
    cap = route.max_tokens
    if cap is None:
        return
    for name in ("max_tokens", "max_completion_tokens"):
        asked = body.get(name)
        if asked is not None and asked > cap:
            body[name] = cap
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = cap


# A prompt never has more tokens than the request body has bytes: every token stands for at least one byte of a text,
# every JSON escape decodes to no more bytes than it takes, and each message's JSON around its strings is longer than
# the per-message overhead the count adds (tests/test_prompt_bound.py checks it; tool-call arguments that are not
# strings, as the API requires, are the exception: docs/limits.md). When that bound is at most 1/BOUND_SHARE of the
# key's tpm budget, admission reserves the bound instead of counting first: a request then over-reserves by at most
# 0.1% of the budget until it settles with the actual usage, and the count (~15 µs in a loaded worker, more for long
# prompts) leaves the path to the first byte; it is never made when the provider reports the usage. In-flight
# requests add up: N of them over-reserve by at most N x 0.1% (docs/limits.md).
BOUND_SHARE = 1000
# Prompts with this many characters of text or more are counted in a worker thread (the count releases the
# GIL): ordinary text counts at ~25 MB/s, one long word (the worst case) at ~5 MB/s, so on the event loop a
# multi-megabyte prompt would stall every other request for up to a second. Below this, the worst case stays
# around 10 ms on the loop, and the hop to a thread (~0.1 ms) would cost more than most counts.
COUNT_IN_THREAD_CHARS = 16 * 1024
# From here on, the C heap is trimmed after the count: the merge scratch of a long word (~20 bytes per byte of it)
# would otherwise stay in the counting thread's malloc arena (six 900K-character words at once left 13 MB
# resident; the trim, ~0.1 ms, brings that back to ~2).
TRIM_AFTER_CHARS = 256 * 1024
# From here on, prompts are counted one at a time in their own thread: a burst of them queues there instead of
# taking every thread of the default executor, and the scratch of a 4 MB word (~100 MB) exists once at a time.
COUNT_ALONE_CHARS = 1024 * 1024
_HUGE_COUNTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workjet-count")


async def _count_prompt(messages: list[Any], model: str) -> int:
    texts = _chat_texts(messages)
    chars = sum(len(text) for _, text, _ in texts)
    if chars < COUNT_IN_THREAD_CHARS:
        return count_chat_tokens(texts, model)
    count = _count_and_trim if chars >= TRIM_AFTER_CHARS else count_chat_tokens
    executor = _HUGE_COUNTS if chars >= COUNT_ALONE_CHARS else None  # None: the loop's default executor
    return await asyncio.get_running_loop().run_in_executor(executor, count, texts, model)


def _count_and_trim(texts: list[tuple[str, str, str | None]], model: str) -> int:
    try:
        return count_chat_tokens(texts, model)
    finally:
        release_free_heap()


def _chat_texts(messages: list[Any]) -> list[tuple[str, str, str | None]]:
    """(role, text, name) per message for the token counter: text parts joined, tool arguments included."""
    out: list[tuple[str, str, str | None]] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        elif not isinstance(content, str):
            content = ""
        for call in m.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                content += str(call["function"].get("arguments") or "")
        name = m.get("name")
        out.append((str(m.get("role")), content, name if isinstance(name, str) else None))
    return out


def _account_usage(ctx: RequestContext, usage: Any) -> None:
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int):
            ctx.prompt_tokens, ctx.prompt_tokens_source = p, "provider"
        if isinstance(c, int):
            ctx.completion_tokens, ctx.completion_tokens_source = c, "provider"


def _overhead(ctx: RequestContext) -> tuple[bytes, bytes]:
    """The gateway's own time so far: wall time minus the time spent waiting on the upstream."""
    ms = (time.perf_counter() - ctx.t0) * 1000 - ctx.upstream_ms
    return (b"x-workjet-overhead-ms", f"{max(ms, 0.0):.3f}".encode())


def _sse_error(message: str, code: str) -> bytes:
    err = {"error": {"message": message, "type": "api_error", "code": code, "param": None}}
    return b"data: " + orjson.dumps(err) + b"\n\ndata: [DONE]\n\n"


async def _send_error(send: Send, e: GatewayError, headers: list[tuple[bytes, bytes]]) -> None:
    hdrs = [h for h in headers if h[0] == b"x-request-id"]
    hdrs.append(_JSON)
    hdrs.extend((k.lower().encode(), v.encode()) for k, v in e.headers.items())
    try:
        await send({"type": "http.response.start", "status": e.status, "headers": hdrs})
        await send({"type": "http.response.body", "body": e.body()})
    except Exception:
        # The response had already started (or the client is gone): nothing more can be said.
        pass
