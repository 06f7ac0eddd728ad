"""Running the app under uvicorn: one or several worker processes, uvloop and httptools when present."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from workjet_fast.config import ConfigError, Settings, load_settings

__all__ = ["app_factory", "run"]

CONFIG_ENV = "WORKJET_CONFIG"


def app_factory() -> Callable[..., Awaitable[None]]:
    """uvicorn's factory for worker processes: the config path travels in WORKJET_CONFIG."""
    from workjet_fast.app import create_app

    path = os.environ.get(CONFIG_ENV, "examples/workjet.yaml")
    try:
        settings = load_settings(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None
    _check_limits(settings)
    # The audit writer is a thread: when it holds the GIL, the event loop waits up to the switch interval
    # (5 ms by default) before it can run again. 0.5 ms bounds that stall without measurable overhead.
    sys.setswitchinterval(0.0005)
    tune_gc()
    return create_app(settings, freeze_gc=True)


# Young-generation collections every 5,000 net allocations instead of 700, older ones every 20 instead of 10.
# A request allocates a few hundred container objects and frees almost all of them by reference counting, so
# most collections found nothing to free and only walked the requests in flight: +4% requests per second with
# every feature on (benches/RESULTS.md), no change in resident memory. The cyclic garbage this lets wait is
# bounded by the threshold (a few MB at most).
GC_THRESHOLDS = (5000, 20, 20)


def tune_gc() -> None:
    """The collector thresholds of a worker process (`GC_THRESHOLDS`)."""
    gc.set_threshold(*GC_THRESHOLDS)


def _check_limits(settings: Settings) -> None:
    lim = settings.limits
    if lim.backend == "memory" and settings.server.workers > 1 and not lim.accept_per_process_limits:
        print(
            f"error: limits.backend is 'memory' with {settings.server.workers} workers: each worker would enforce"
            " its own copy of every limit. Use limits.backend: redis, or set limits.accept_per_process_limits: true.",
            file=sys.stderr,
        )
        raise SystemExit(2)


def _configure_logging() -> None:
    level = os.environ.get("WORKJET_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


def run(settings: Settings, config_path: str) -> None:
    import uvicorn

    _check_limits(settings)
    _configure_logging()
    os.environ[CONFIG_ENV] = config_path
    kwargs: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "workers": settings.server.workers,
        "factory": True,
        "access_log": False,
        "log_level": "warning",
        "timeout_graceful_shutdown": 30,
        "server_header": False,
    }
    try:
        import uvloop  # noqa: F401

        kwargs["loop"] = "uvloop"
    except ImportError:  # pragma: no cover
        pass
    try:
        import httptools  # noqa: F401

        from workjet_fast.http_protocol import HttpProtocol

        kwargs["http"] = HttpProtocol  # uvicorn's httptools protocol with a faster response head
    except ImportError:  # pragma: no cover
        pass
    print(
        f"workjet: serving on http://{settings.server.host}:{settings.server.port} "
        f"({settings.server.workers} worker{'s' if settings.server.workers > 1 else ''}, config {config_path})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run("workjet_fast.server:app_factory", **kwargs)
