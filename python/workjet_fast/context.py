"""What one request learns on its way through the gateway; it becomes the audit record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Attempt", "RequestContext"]


@dataclass(slots=True)
class Attempt:
    deployment: str  # "provider/model"
    outcome: str  # ok | error | unreachable | circuit_open
    status: int | None = None
    latency_ms: float = 0.0
    error: str | None = None


@dataclass(slots=True)
class RequestContext:
    request_id: str
    client: str | None = None
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    path: str = ""
    key_id: str | None = None
    key_name: str | None = None
    user: str | None = None
    requested_model: str | None = None
    route_kind: str | None = None  # model | tier
    served_by: str | None = None  # "provider/provider-model" of the deployment that answered
    served_model: str | None = None  # the public model id that answered (differs from requested for tiers)
    attempts: list[Attempt] = field(default_factory=list)
    status: int = 200
    error_code: str | None = None
    stream: bool = False
    upstream_ttfb_ms: float | None = None
    upstream_ms: float = 0.0  # time spent waiting on the upstream (excluded from the overhead)
    prompt_tokens: int | None = None
    prompt_tokens_source: str | None = None  # provider | gateway
    completion_tokens: int | None = None
    completion_tokens_source: str | None = None
    finish_reason: str | None = None
    dlp_findings: list[dict[str, Any]] = field(default_factory=list)  # rule_id, entity, count, direction, action
    dlp_state: str = "clean"  # clean | logged | redacted | blocked
    ended_at: float | None = None
    latency_ms: float | None = None
    # Only with audit.store_bodies (after DLP redaction); a stream's response body is not kept.
    request_body: Any = None
    response_body: Any = None

    def finish(self, status: int, error_code: str | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.ended_at = time.time()
        self.latency_ms = (time.perf_counter() - self.t0) * 1000.0

    def record(self) -> dict[str, Any]:
        """The audit record: no API key, no matched DLP values; bodies only when they were kept.

        Built field by field (not `dataclasses.asdict`, which deep-copies): this runs on every request."""
        d = {name: getattr(self, name) for name in _RECORD_FIELDS}
        d["attempts"] = [
            {"deployment": a.deployment, "outcome": a.outcome, "status": a.status, "latency_ms": a.latency_ms,
             "error": a.error}
            for a in self.attempts
        ]  # fmt: skip
        if self.request_body is None:
            del d["request_body"], d["response_body"]
        return d


_RECORD_FIELDS = tuple(f.name for f in fields(RequestContext) if f.name != "t0")
