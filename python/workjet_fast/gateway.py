"""The gateway's long-lived parts, wired once per process: storage, keys, providers, router, limiter,
DLP, audit and metrics; and their start-up and shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.routing import BaseRoute

from workjet_fast.auth import KeyCache, KeyRecord, KeyStore
from workjet_fast.config import Settings
from workjet_fast.context import RequestContext
from workjet_fast.pipeline.route import Router
from workjet_fast.providers import Provider, make_provider
from workjet_fast.storage import open_database

__all__ = ["Gateway"]

log = logging.getLogger("workjet.gateway")
access_log = logging.getLogger("workjet.access")


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = open_database(settings.storage_url)
        self.keys = KeyCache(KeyStore(self.db), settings.auth.refresh_seconds)
        self.providers: dict[str, Provider] = {name: make_provider(p) for name, p in settings.providers.items()}
        self.router = Router(settings, self.providers)
        self.started = time.time()
        self._models_created = int(self.started)

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        await asyncio.to_thread(self.db.migrate)
        await asyncio.to_thread(self.keys.load)
        self.keys.start()
        try:
            yield
        finally:
            await self.keys.stop()
            for p in self.providers.values():
                await p.aclose()
            self.db.close()

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
                out.append({"id": tname, "object": "model", "created": self._models_created, "owned_by": "workjet-tier"})
        return out

    def audit_submit(self, ctx: RequestContext) -> None:
        """Hand the finished request to the audit log (off the request path) and the access log."""
        if self.settings.server.access_log and access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %s %s %.1fms",
                ctx.request_id,
                ctx.path,
                ctx.status,
                ctx.error_code or "-",
                ctx.latency_ms or 0.0,
            )

    def metrics_text(self) -> bytes:
        return b""

    def admin_routes(self) -> list[BaseRoute]:
        return []
