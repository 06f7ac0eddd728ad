"""The gateway's long-lived parts, wired once per process: storage, keys, providers, router, limiter,
DLP, audit and metrics; and their start-up and shutdown."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, BinaryIO

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from workjet_fast import metrics
from workjet_fast._workjet_fast import audit_record, count_tokens, encoding_for_model, token_data_source
from workjet_fast.audit import AuditLog, access_log_line, admin as audit_admin
from workjet_fast.auth import KeyCache, KeyRecord, KeyStore
from workjet_fast.config import Settings
from workjet_fast.context import RequestContext
from workjet_fast.errors import error_body
from workjet_fast.heap import release_free_heap
from workjet_fast.pipeline.dlp import Dlp
from workjet_fast.pipeline.limits import make_limiter
from workjet_fast.pipeline.route import Router
from workjet_fast.providers import Provider, make_provider
from workjet_fast.storage import open_database

__all__ = ["Gateway"]

log = logging.getLogger("workjet.gateway")

ACCESS_FLUSH_SECONDS = 0.5


class Gateway:
    def __init__(self, settings: Settings, *, freeze_gc: bool = False) -> None:
        self.settings = settings
        self._freeze_gc = freeze_gc
        self.db = open_database(settings.storage_url)
        self.keys = KeyCache(KeyStore(self.db), settings.auth.refresh_seconds)
        self.providers: dict[str, Provider] = {name: make_provider(p) for name, p in settings.providers.items()}
        self.router = Router(settings, self.providers)
        self.dlp = Dlp(settings.dlp)
        self.limiter = make_limiter(settings.limits, settings.server.workers)
        self.audit = AuditLog.open(settings.audit, settings.storage_url)
        self.in_flight = 0  # chat requests being served; kept by ChatHandler
        self.audit.watch_load(lambda: self.in_flight)
        self.metrics = metrics.METRICS
        self.metrics.register_audit(self.audit)
        self.metrics.register_circuits(
            lambda: {label: b["state"] for label, b in self.router.breakers.snapshot().items()}
        )
        self.metrics.register_collector(
            lambda: [metrics.Sample("workjet_requests_in_flight", "Chat requests being served.", {}, self.in_flight)]
        )
        # Access log lines are buffered and written at least every ACCESS_FLUSH_SECONDS (and at shutdown):
        # one write per batch instead of a syscall per request. The audit log is the durable record.
        self._access_out: BinaryIO | None = (
            open(sys.stderr.fileno(), "wb", buffering=64 * 1024, closefd=False) if settings.server.access_log else None
        )
        self._flusher: asyncio.Task[None] | None = None
        self._audit_on = settings.audit.enabled
        self.started = time.time()
        self._models_created = int(self.started)

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        await asyncio.to_thread(self.db.migrate)
        await asyncio.to_thread(self.keys.load)
        await asyncio.to_thread(self._warm_up_token_counter)
        self.keys.start()
        self.audit.start()
        if self._access_out is not None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_access_log())
        if self._freeze_gc:
            # Everything built so far (modules, configuration, caches) lives as long as the process. Left in the
            # collector's oldest generation, every full collection walks all of it (~18 ms measured in a worker),
            # every few thousand requests: a latency spike. Frozen, a full collection only walks what requests
            # created since. (Its effect on the load benchmark's p99 was within noise: benches/RESULTS.md.)
            gc.collect()
            gc.freeze()
            release_free_heap()
        try:
            yield
        finally:
            if self._flusher is not None:
                self._flusher.cancel()
            self._flush_access_now()
            await self.keys.stop()
            for p in self.providers.values():
                await p.aclose()
            await self.limiter.aclose()
            # Every queued audit record reaches the database or the spill file before the process exits.
            await asyncio.to_thread(self.audit.close)
            self.db.close()

    async def _flush_access_log(self) -> None:
        while True:
            await asyncio.sleep(ACCESS_FLUSH_SECONDS)
            self._flush_access_now()

    def _flush_access_now(self) -> None:
        if self._access_out is not None:
            try:
                self._access_out.flush()
            except (OSError, ValueError):
                pass

    def _warm_up_token_counter(self) -> None:
        """When a token budget is configured, build the encodings the configured models use now rather than
        on a first request. Only those: each costs a few MB (o200k_base ~6 MB; ~65 MB on the fallback without
        the data files, which is logged). Without a configured tpm budget they are built on first use (a key's
        own tpm, or a provider that reports no usage)."""
        lim = self.settings.limits
        specs = [lim.default, *lim.per_tier.values(), *lim.per_model.values()]
        if not any(spec.tpm for spec in specs):
            return
        names = set(self.settings.models) | {d.model for m in self.settings.models.values() for d in m.deployments}
        for encoding in sorted({encoding_for_model(n) for n in names} or {"o200k_base"}):
            count_tokens("warm up", encoding)
            source = token_data_source(encoding) or ""
            if source != "file":
                log.warning("token counter %s: %s (~65 MB resident instead of ~6)", encoding, source)

    async def readiness(self) -> list[str]:
        problems: list[str] = []
        try:
            await asyncio.to_thread(self.db.ping)
        except Exception as e:
            problems.append(f"storage: {e}")
        return problems

    def list_models(self, key: KeyRecord) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for mid, m in self.settings.models.items():
            if key.may_use(mid, False):
                out.append({"id": mid, "object": "model", "created": self._models_created, "owned_by": m.owned_by})
        for tname in self.settings.tiers:
            if key.may_use(tname, True):
                out.append(
                    {"id": tname, "object": "model", "created": self._models_created, "owned_by": "workjet-tier"}
                )
        return out

    def audit_submit(self, ctx: RequestContext) -> None:
        """The end of every request, accepted or rejected: metrics, the access log, the audit log."""
        self.metrics.observe_request(
            ctx.status,
            ctx.served_model or ctx.requested_model,
            ctx.requested_model if ctx.route_kind == "tier" else None,
            ctx.served_by,
            (ctx.latency_ms or 0.0) / 1000.0,
            ctx.upstream_ms / 1000.0 if ctx.attempts else None,
            ctx.prompt_tokens,
            ctx.completion_tokens,
        )
        out = self._access_out
        if out is None and not self._audit_on:
            return
        # One Rust call makes the audit record's text, its columns and the access-log line from the context; a
        # context holding a value the record would change (or bodies) takes the Python path, with the same result.
        made = audit_record(ctx, out is not None)
        if made is None:
            record = ctx.record()
            line = access_log_line(record) if out is not None else None
        else:
            text, line, cols = made
        if out is not None and line is not None:
            try:
                out.write(line)
            except (OSError, ValueError):
                pass
        if self._audit_on:
            if made is None:
                self.audit.submit(record)
            else:
                self.audit.submit_prepared(cols, text)

    def metrics_text(self) -> bytes:
        return self.metrics.render()

    def admin_routes(self) -> list[BaseRoute]:
        """`/admin/*`, behind `server.admin_token` (404 when no token is configured)."""
        token = self.settings.server.admin_token
        expected = f"Bearer {token}".encode()

        def denied(request: Request) -> Response | None:
            if not token:
                return Response(error_body("Not found", "invalid_request_error", "not_found"), 404)
            if not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
                body = error_body("A valid admin token is required.", "authentication_error", "unauthorized")
                return Response(body, 401, media_type="application/json")
            return None

        async def health(request: Request) -> Response:
            return denied(request) or JSONResponse(
                {**self.router.health(), "limiter": self.limiter.stats(), "audit": self.audit.stats()}
            )

        async def key_limits(request: Request) -> Response:
            """GET or PUT a key's limits: {"rpm": 60, "tpm": 100000, "concurrency": 4} (null removes one)."""
            if (d := denied(request)) is not None:
                return d
            key_id = request.path_params["key_id"]
            store = self.keys.store
            rec = await asyncio.to_thread(store.get, key_id)
            if rec is None:
                return Response(error_body(f"No key {key_id}", "invalid_request_error", "not_found"), 404)
            if request.method == "GET":
                return JSONResponse(rec.public())
            try:
                patch = await request.json()
            except ValueError:
                patch = None
            if not isinstance(patch, dict) or any(
                k not in ("rpm", "tpm", "concurrency") or not (v is None or (isinstance(v, int) and v > 0))
                for k, v in patch.items()
            ):
                body = error_body(
                    "Send a JSON object with rpm, tpm and/or concurrency: positive integers or null.",
                    "invalid_request_error",
                    "bad_request",
                )
                return Response(body, 400, media_type="application/json")
            limits = {k: v for k, v in {**rec.limits, **patch}.items() if v is not None}
            await asyncio.to_thread(store.set_limits, key_id, limits)
            await self.keys.reload()
            return JSONResponse({**rec.public(), "limits": limits})

        return [
            Route("/admin/health", health, methods=["GET"]),
            Route("/admin/keys/{key_id}/limits", key_limits, methods=["GET", "PUT"]),
            *audit_admin.routes(self.audit, token),
        ]
