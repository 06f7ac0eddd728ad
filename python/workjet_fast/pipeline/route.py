"""Routing: a public model id or tier -> an ordered list of deployments, tried with fallback.

A model id maps to its deployments (lower `priority` first; equal priorities balanced by `weight`);
a tier maps to its models in order, each model's deployments ordered the same way. The `max_tokens`
cap (the tighter of the model's or tier's and the deployment's) is applied per attempt: a client asking
for more, or for nothing, gets the cap.

Before the first byte reaches the client a connection error, timeout, 429 or 5xx moves on to the next
candidate; once every candidate had its turn, retryable ones are tried again after a short, capped,
jittered backoff while `routing.max_attempts` and `routing.total_timeout` allow. Open circuits are skipped
without waiting. Once streaming began nothing is retried.

A 429 or 503 with `Retry-After` moves on to the next candidate at once, like any retryable failure; only a
retry of that same deployment waits until its Retry-After has passed. A Retry-After longer than
`routing.retry_after_max` (or one that would end past the total timeout) takes the deployment out of this
request's retries instead of waiting less than the upstream asked. When no candidate succeeded:

- the upstream rejected the request itself (400, 413, 422) -> 400 `bad_request` with the provider's message,
  not retried: the same request fails everywhere, and a 5xx would make SDKs retry it in vain;
- every candidate was unreachable (refused, timed out, circuit open) -> 503 `provider_unavailable`;
- otherwise (a 404 — a deployment names a model the provider does not have — 401, 429, 5xx) ->
  502 `provider_error` with the last answering provider's status and message.

Every message lists what was tried and why; `ctx.attempts` records each attempt (see docs/routing.md).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from workjet_fast.config import Deployment, Settings
from workjet_fast.context import Attempt, RequestContext
from workjet_fast.deadlines import deadlines, within
from workjet_fast.errors import BadRequest, ProviderError, ProviderUnavailable
from workjet_fast.pipeline.breaker import BreakerBoard
from workjet_fast.providers import Provider, UpstreamFailure, UpstreamStream
from workjet_fast.providers.http import aclose_iterator, retry_after_box

__all__ = ["Candidate", "Route", "Router"]

T = TypeVar("T")
MAX_BACKOFF = 2.0  # seconds; the retry backoff never grows past this


@dataclass(frozen=True)
class Candidate:
    public_id: str  # the public model id this deployment serves
    deployment: Deployment
    label: str  # "provider/model", the name in attempts, logs and health
    cap: int | None  # the max_tokens cap for an attempt on this deployment


@dataclass(frozen=True)
class Route:
    public_id: str
    is_tier: bool
    candidates: tuple[Candidate, ...]
    max_tokens: int | None  # the gateway's cap for this model or tier


def _tighter(*caps: int | None) -> int | None:
    present = [c for c in caps if c is not None]
    return min(present) if present else None


class Router:
    """Resolves public ids and runs attempts with fallback, retries, a total timeout and circuit breakers."""

    def __init__(self, settings: Settings, providers: dict[str, Provider]) -> None:
        self.settings = settings
        self.providers = providers
        r = settings.routing
        self.breakers = BreakerBoard(
            r.breaker_failures,
            r.breaker_cooldown,
            error_ratio=r.breaker_error_ratio,
            window=r.breaker_window,
            min_calls=r.breaker_min_calls,
        )
        self._routes: dict[str, Route] = {}
        for mid, m in settings.models.items():
            cands = tuple(self._candidate(mid, d, m.max_tokens) for d in m.deployments)
            self._routes[mid] = Route(mid, False, cands, m.max_tokens)
        for tname, t in settings.tiers.items():
            cands = tuple(
                self._candidate(mid, d, _tighter(t.max_tokens, settings.models[mid].max_tokens))
                for mid in t.models
                for d in settings.models[mid].deployments
            )
            self._routes[tname] = Route(tname, True, cands, t.max_tokens)

    @staticmethod
    def _candidate(public_id: str, d: Deployment, route_cap: int | None) -> Candidate:
        return Candidate(public_id, d, f"{d.provider}/{d.model}", _tighter(route_cap, d.max_tokens))

    def resolve(self, requested: str) -> Route:
        """The route for a public model id or tier name; `BadRequest` when there is none."""
        route = self._routes.get(requested)
        if route is None:
            raise BadRequest(
                f"Unknown model or tier: {requested!r}. GET /v1/models lists what you may use.", param="model"
            )
        return route

    def order(self, route: Route) -> list[Candidate]:
        """Candidates in the order to try. A model: by priority, weighted random among equals. A tier: its
        models in the configured order, each model's deployments ordered like a model's."""
        cands = route.candidates
        if len(cands) == 1:
            return [cands[0]]
        rank: dict[str, int] = {}
        if route.is_tier:
            for c in cands:
                rank.setdefault(c.public_id, len(rank))
        # Efraimidis-Spirakis: sorting by u^(1/w) descending is a weighted random permutation.
        rnd = random.random
        return sorted(
            cands,
            key=lambda c: (rank.get(c.public_id, 0), c.deployment.priority, -(rnd() ** (1.0 / c.deployment.weight))),
        )

    def health(self) -> dict[str, Any]:
        """Per-deployment circuit state for an admin/health endpoint; `status` is `ok` when every circuit
        is closed, `degraded` when some are not, `down` when a model has no closed or half-open circuit."""
        board = self.breakers.snapshot()
        deployments: dict[str, Any] = {}
        for m in self.settings.models.values():
            for d in m.deployments:
                label = f"{d.provider}/{d.model}"
                deployments[label] = board.get(label) or self.breakers.get(label).snapshot()
        models = {
            mid: "down"
            if all(deployments[f"{d.provider}/{d.model}"]["state"] == "open" for d in m.deployments)
            else "ok"
            for mid, m in self.settings.models.items()
        }
        any_open = any(v["state"] != "closed" for v in deployments.values())
        status = "down" if any(s == "down" for s in models.values()) else "degraded" if any_open else "ok"
        return {"status": status, "models": models, "deployments": deployments}

    async def complete(self, route: Route, body: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """A non-streaming call with fallback; returns the OpenAI `chat.completion` of the first success."""
        deadline = _now() + self.settings.routing.total_timeout
        return await self._run(route, body, ctx, deadline, lambda p, m, b: p.complete(m, b))

    async def stream(self, route: Route, body: dict[str, Any], ctx: RequestContext) -> UpstreamStream:
        """Open a stream with fallback; returns once a deployment answered 200. Iterating the result after
        `routing.total_timeout` (counted from this call) raises `UpstreamFailure`."""
        deadline = _now() + self.settings.routing.total_timeout
        label_box: list[str] = []
        upstream = await self._run(route, body, ctx, deadline, lambda p, m, b: p.stream(m, b), label_box)
        return _GuardedStream(upstream, deadline, self.breakers.get(label_box[0]).failure)

    async def _run(
        self,
        route: Route,
        body: dict[str, Any],
        ctx: RequestContext,
        deadline: float,
        call: Callable[[Provider, str, dict[str, Any]], Awaitable[T]],
        label_box: list[str] | None = None,
    ) -> T:
        routing = self.settings.routing
        failures: list[UpstreamFailure] = []
        attempts = 0
        pending = self.order(route)
        not_before: dict[str, float] = {}  # label -> when its Retry-After allows a retry
        round_no = 0
        while pending and attempts < routing.max_attempts:
            if round_no:
                pause = min(MAX_BACKOFF, routing.retry_backoff * 2 ** (round_no - 1)) * random.uniform(0.5, 1.0)
                if _now() + pause >= deadline:
                    break
                await _sleep(pause)
            retry: list[Candidate] = []
            for cand in pending:
                if attempts >= routing.max_attempts:
                    break
                wait = not_before.get(cand.label, 0.0) - _now()
                if wait > 0:
                    if _now() + wait >= deadline:
                        continue  # its Retry-After ends past the total timeout: not retried
                    await _sleep(wait)
                breaker = self.breakers.get(cand.label)
                if not breaker.allow():
                    ctx.attempts.append(Attempt(cand.label, "circuit_open", None, 0.0, "circuit open"))
                    failures.append(UpstreamFailure("circuit open", unreachable=True))
                    continue
                remaining = deadline - _now()
                if remaining <= 0:
                    breaker.release()
                    break
                attempts += 1
                provider = self.providers[cand.deployment.provider]
                t = time.perf_counter()
                retry_after = retry_after_box()
                try:
                    result = await _within(remaining, call(provider, cand.deployment.model, _capped(body, cand.cap)))
                except UpstreamFailure as f:
                    ms = (time.perf_counter() - t) * 1000
                    ctx.upstream_ms += ms
                    outcome = "unreachable" if f.unreachable else "error"
                    ctx.attempts.append(Attempt(cand.label, outcome, f.status, round(ms, 3), f.message))
                    failures.append(f)
                    if f.client_fault and f.status != 404:
                        breaker.release()  # the upstream is fine; the request is not
                        raise BadRequest(
                            f"The provider rejected the request: {f.message} (tried {_tried(ctx)})."
                        ) from None
                    breaker.failure(f.message)
                    if f.client_fault:  # 404: this deployment is misconfigured, others may not be
                        continue
                    if f.retryable:
                        delay = retry_after[-1] if retry_after and routing.retry_after_max > 0 else None
                        if delay is None:
                            retry.append(cand)
                        elif delay <= routing.retry_after_max and _now() + delay < deadline:
                            not_before[cand.label] = _now() + delay
                            retry.append(cand)
                    continue
                except BaseException:
                    breaker.release()
                    raise
                ms = (time.perf_counter() - t) * 1000
                breaker.success()
                ctx.upstream_ms += ms
                ctx.upstream_ttfb_ms = round(ms, 3)
                ctx.attempts.append(Attempt(cand.label, "ok", 200, round(ms, 3)))
                ctx.served_by = cand.label
                ctx.served_model = cand.public_id
                if label_box is not None:
                    label_box.append(cand.label)
                return result
            pending = retry
            round_no += 1
        raise self._give_up(route, ctx, failures, deadline)

    @staticmethod
    def _give_up(
        route: Route, ctx: RequestContext, failures: list[UpstreamFailure], deadline: float
    ) -> ProviderError | ProviderUnavailable:
        if _now() >= deadline and not failures:
            return ProviderUnavailable(f"No provider for {route.public_id!r} answered within the total timeout.")
        if all(f.unreachable for f in failures):
            return ProviderUnavailable(
                f"All configured providers for {route.public_id!r} are unavailable (tried {_tried(ctx)})."
            )
        last = next(f for f in reversed(failures) if not f.unreachable)
        return ProviderError(f"The provider returned an error: {last.message} (tried {_tried(ctx)}).")


def _tried(ctx: RequestContext) -> str:
    """What was tried and why it failed, a repeated attempt folded into one entry: `x: refused (3 attempts)`."""
    parts: list[tuple[str, int]] = []
    for a in ctx.attempts:
        text = f"{a.deployment}: {a.error or a.outcome}"
        if parts and parts[-1][0] == text:
            parts[-1] = (text, parts[-1][1] + 1)
        else:
            parts.append((text, 1))
    return "; ".join(text if n == 1 else f"{text} ({n} attempts)" for text, n in parts)


def _capped(body: dict[str, Any], cap: int | None) -> dict[str, Any]:
    """A per-attempt copy with the max_tokens cap applied (providers may set keys on their copy)."""
    out = dict(body)
    if cap is None:
        return out
    key = "max_completion_tokens" if "max_completion_tokens" in out else "max_tokens"
    asked = out.get(key)
    if not isinstance(asked, int) or isinstance(asked, bool) or asked > cap:
        out[key] = cap
    return out


_now = time.monotonic
_sleep = asyncio.sleep  # tests replace it to see the waits without waiting


async def _within(seconds: float, aw: Awaitable[T]) -> T:
    """Await with the remaining total budget; running out counts as unreachable."""
    try:
        return await within(seconds, aw)
    except TimeoutError:
        raise UpstreamFailure(f"the total timeout ran out after {seconds:.3g}s", unreachable=True) from None


class _GuardedStream(UpstreamStream):
    """The chosen deployment's stream, held to the total deadline; a break mid-stream counts against its
    circuit. Nothing is retried here: the client already has bytes.

    The deadline is one entry for the whole stream (it closes the upstream when it fires), not a timeout
    around every read: a stream of 2,000 chunks would otherwise pay for 2,000 of them."""

    def __init__(self, inner: UpstreamStream, deadline: float, on_failure: Callable[[str | None], None]) -> None:
        self._inner = inner
        self._on_failure = on_failure
        self._gen: AsyncGenerator[bytes, None] | None = None
        self._expired = False
        self._deadlines = deadlines()
        self._timer = self._deadlines.add(deadline - _now(), self._expire)

    def _expire(self) -> None:
        self._expired = True
        task = asyncio.ensure_future(self._inner.aclose())
        _background.add(task)
        task.add_done_callback(_background.discard)

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._gen = self._pieces()
        return self._gen

    async def _pieces(self) -> AsyncGenerator[bytes, None]:
        inner = self._inner.__aiter__()
        try:
            async for piece in inner:
                if self._expired:
                    break
                yield piece
        except UpstreamFailure as f:
            if not self._expired:
                self._on_failure(f.message)
                raise
        except Exception as e:  # the upstream was closed under the reader by the deadline timer
            if not self._expired:
                raise UpstreamFailure(f"the upstream stream broke: {e}", unreachable=True) from None
        finally:
            await aclose_iterator(inner)
        if self._expired:
            raise UpstreamFailure("the total timeout ran out mid-stream", unreachable=True)

    async def aclose(self) -> None:
        self._deadlines.cancel(self._timer)
        if self._gen is not None:
            await self._gen.aclose()
        await self._inner.aclose()


_background: set[asyncio.Task[None]] = set()
