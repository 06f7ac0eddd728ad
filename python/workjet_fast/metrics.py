"""Prometheus metrics: counters and histograms kept in plain dicts, rendered in text format 0.0.4.

The hot-path calls (`observe_request`, `dlp_finding`, `rate_limited`) are a few dict updates each; label
values are stored as given and turned into text only at scrape time. Gauges that describe other
components (audit queue, circuit breakers) are read from callbacks when `/metrics` is scraped.
Each worker process has its own registry (scrape every worker, or run one).

    from workjet_fast import metrics
    metrics.observe_request(200, "gpt-4o-mini", "standard", "openai/gpt-4o-mini", 0.42, 0.40, 12, 30)
    metrics.register_audit(audit_log)
    metrics.register_circuits(lambda: {"openai/gpt-4o-mini": "closed"})
    body = metrics.render()   # GET /metrics, with headers {"content-type": metrics.CONTENT_TYPE}
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "METRICS",
    "Counter",
    "Histogram",
    "Metrics",
    "Sample",
    "dlp_finding",
    "observe_request",
    "rate_limited",
    "register_audit",
    "register_circuits",
    "register_collector",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CIRCUIT_STATES = ("closed", "half_open", "open")


class Sample(NamedTuple):
    """One gauge value produced by a collector callback at scrape time."""

    name: str
    help: str
    labels: Mapping[str, str]
    value: float


def _escape(v: Any) -> str:
    s = "" if v is None else str(v)
    if "\\" in s or '"' in s or "\n" in s:
        s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return s


def _labels(names: tuple[str, ...], values: Iterable[Any], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=False)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Counter:
    def __init__(self, name: str, help: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.values: dict[tuple[Any, ...], float] = {}

    def inc(self, key: tuple[Any, ...], n: float = 1) -> None:
        v = self.values
        v[key] = v.get(key, 0) + n

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} counter\n")
        for key, value in list(self.values.items()):
            out.append(f"{self.name}{_labels(self.labelnames, key)} {_num(value)}\n")


class Histogram:
    def __init__(self, name: str, help: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.bounds = tuple(sorted(buckets))
        self.series: dict[tuple[Any, ...], list[float]] = {}  # per-bucket counts, then +Inf, then the sum

    def observe(self, key: tuple[Any, ...], value: float) -> None:
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = [0] * (len(self.bounds) + 2)
        s[bisect_left(self.bounds, value)] += 1
        s[-1] += value

    def render(self, out: list[str]) -> None:
        n = self.name
        out.append(f"# HELP {n} {self.help}\n# TYPE {n} histogram\n")
        for key, s in list(self.series.items()):
            s = list(s)
            acc = 0.0
            for bound, c in zip((*self.bounds, math.inf), s, strict=False):
                acc += c
                le = 'le="' + _num(bound) + '"'
                out.append(f"{n}_bucket{_labels(self.labelnames, key, le)} {_num(acc)}\n")
            lab = _labels(self.labelnames, key)
            out.append(f"{n}_sum{lab} {_num(s[-1])}\n{n}_count{lab} {_num(acc)}\n")


class _AuditLike(Protocol):
    def stats(self) -> dict[str, int]: ...


Collector = Callable[[], Iterable[Sample]]


class Metrics:
    """The gateway's metrics. `METRICS` is the process-wide instance; tests make their own."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.requests = Counter(
            "workjet_requests_total", "Requests by status, model, tier and deployment.",
            ("status", "model", "tier", "deployment"),
        )  # fmt: skip
        self.latency = Histogram(
            "workjet_request_duration_seconds", "Total request latency seen by the gateway.", ("model",), buckets
        )
        self.upstream = Histogram(
            "workjet_upstream_duration_seconds", "Time spent waiting on the upstream.", ("deployment",), buckets
        )
        self.tokens = Counter("workjet_tokens_total", "Tokens by model and kind.", ("model", "kind"))
        self.dlp = Counter(
            "workjet_dlp_findings_total", "DLP findings by entity, action and direction.",
            ("entity", "action", "direction"),
        )  # fmt: skip
        self.limited = Counter("workjet_rate_limited_total", "Requests rejected by a rate limit.", ("limit",))
        self._series: list[Counter | Histogram] = [
            self.requests, self.latency, self.upstream, self.tokens, self.dlp, self.limited,
        ]  # fmt: skip
        self._collectors: list[Collector] = []

    # ---- hot path -----------------------------------------------------------------------------------
    def observe_request(
        self,
        status: int,
        model: str | None,
        tier: str | None,
        deployment: str | None,
        latency_s: float,
        upstream_s: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> None:
        self.requests.inc((status, model, tier, deployment))
        self.latency.observe((model,), latency_s)
        if upstream_s is not None:
            self.upstream.observe((deployment,), upstream_s)
        if prompt_tokens:
            self.tokens.inc((model, "prompt"), prompt_tokens)
        if completion_tokens:
            self.tokens.inc((model, "completion"), completion_tokens)

    def dlp_finding(self, entity: str, action: str, direction: str, n: int = 1) -> None:
        self.dlp.inc((entity, action, direction), n)

    def rate_limited(self, limit: str) -> None:
        self.limited.inc((limit,))

    # ---- scrape-time gauges -------------------------------------------------------------------------
    def register_collector(self, fn: Collector) -> None:
        """Call `fn` at every scrape; it returns gauge samples. A failing collector is skipped."""
        self._collectors.append(fn)

    def register_audit(self, audit: _AuditLike) -> None:
        def collect() -> Iterable[Sample]:
            st = audit.stats()
            yield Sample("workjet_audit_queue_depth", "Audit records waiting in memory.", {}, st["queue_depth"])
            for k in ("queued", "written", "spilled", "dropped", "replayed"):
                yield Sample(f"workjet_audit_{k}_total", f"Audit records {k} since start.", {}, st[k])

        self.register_collector(collect)

    def register_circuits(self, states: Callable[[], Mapping[str, str]]) -> None:
        """`states()` maps each deployment to closed | half_open | open."""

        def collect() -> Iterable[Sample]:
            for dep, state in states().items():
                for s in CIRCUIT_STATES:
                    yield Sample(
                        "workjet_circuit_state", "Circuit breaker state (1 = current).",
                        {"deployment": dep, "state": s}, 1 if state == s else 0,
                    )  # fmt: skip

        self.register_collector(collect)

    def render(self) -> bytes:
        """Everything in Prometheus text format 0.0.4."""
        out: list[str] = []
        for m in self._series:
            m.render(out)
        seen: set[str] = set()
        for fn in list(self._collectors):
            try:
                samples = list(fn())
            except Exception:
                continue
            for s in samples:
                if s.name not in seen:
                    seen.add(s.name)
                    out.append(f"# HELP {s.name} {s.help}\n# TYPE {s.name} gauge\n")
                names = tuple(s.labels)
                out.append(f"{s.name}{_labels(names, s.labels.values())} {_num(s.value)}\n")
        return "".join(out).encode()


METRICS = Metrics()
observe_request = METRICS.observe_request
dlp_finding = METRICS.dlp_finding
rate_limited = METRICS.rate_limited
register_collector = METRICS.register_collector
register_audit = METRICS.register_audit
register_circuits = METRICS.register_circuits
render = METRICS.render
