"""DLP on the request path: policies resolved once, one Rust call per request, one per upstream chunk.

Request: every text the upstream will see (message contents, text parts, tool call arguments, tool results)
goes to `DlpEngine.apply` in one call. Before that, `DlpEngine.request_clean` walks the same texts in Rust and
stops at the first finding: a clean request (the common case) is decided there, and only a request with a
finding, or a shape the Rust walk does not read as `_request_texts` does, takes the Python walk and `apply`.
`block` -> 403 `dlp_blocked` naming entity types and counts, never the text; `redact` -> the upstream receives
`[REDACTED:<ENTITY>]`. Response: the JSON answer's texts in one call (`response_clean` first); streams through
`DlpEngine.relay` (the Rust relay with a streaming scanner per choice). If scanning cannot run (engine error,
text over `max_scan_bytes`) the request is blocked unless `fail_mode: open`; either way it is counted and
logged. Findings travel to the audit log and metrics as (rule id, entity, count, direction, action[, HMAC of the
value]); matched values never leave Rust.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from workjet_fast import metrics
from workjet_fast._workjet_fast import ChunkRelay, DlpEngine, DlpError, DlpPolicy
from workjet_fast.config.dlp import DlpConfig, PolicyOverride
from workjet_fast.context import RequestContext
from workjet_fast.errors import DlpBlocked

__all__ = ["Dlp"]

log = logging.getLogger("workjet.dlp")

Slot = tuple[Any, Any]  # (container, key): where a text lives in the body, to write the redacted text back


class Dlp:
    def __init__(self, cfg: DlpConfig) -> None:
        self.cfg = cfg
        self.engine = DlpEngine(cfg.rules_json, cfg.engine) if cfg.enabled else None
        self._entity_rules: dict[str, list[str]] = {}
        for rid, entity, _cat in self.engine.rules if self.engine else ():
            self._entity_rules.setdefault(entity, []).append(rid)
        self._hmac = cfg.hmac_key.encode() if cfg.hmac_key else None
        self._policies: dict[tuple[str, str, str], DlpPolicy] = {}
        self.errors = 0

    # ---- policies ------------------------------------------------------------------------------------
    def _expand(self, actions: dict[str, str]) -> dict[str, str]:
        """Entity names become their rule ids; a rule id named explicitly wins over its entity."""
        out: dict[str, str] = {}
        for name, action in actions.items():
            for rid in self._entity_rules.get(name, ()):
                out.setdefault(rid, action)
        for name, action in actions.items():
            if name not in self._entity_rules:
                out[name] = action
        return out

    def policy(self, direction: str, route_id: str, key_id: str, key_name: str) -> DlpPolicy:
        """Base policy <- tier/model override <- key override (by id, else by name); cached."""
        cache_key = (direction, route_id, key_id)
        pol = self._policies.get(cache_key)
        if pol is None:
            layers: list[PolicyOverride] = [self.cfg.base]
            if route_id in self.cfg.routes:
                layers.append(self.cfg.routes[route_id])
            key_layer = self.cfg.keys.get(key_id) or self.cfg.keys.get(key_name)
            if key_layer is not None:
                layers.append(key_layer)
            actions: dict[str, str] = {}
            for layer in layers:
                actions.update(self._expand(layer.request if direction == "request" else layer.response))
            pol = DlpPolicy(
                actions=actions,
                allow_values=list(self.cfg.allow_values),
                allow_patterns=list(self.cfg.allow_patterns),
                disabled=list(self.cfg.disabled_rules),
                hmac_key=self._hmac,
            )
            self._policies[cache_key] = pol
        return pol

    # ---- request and JSON response --------------------------------------------------------------------
    def scan_request(self, body: dict[str, Any], ctx: RequestContext, route_id: str) -> None:
        """Scan and, where the policy says so, redact the request in place; raise `DlpBlocked` to block."""
        if self.engine is None:
            return
        policy = self.policy("request", route_id, ctx.key_id or "", ctx.key_name or "")
        if self.engine.request_clean(body, policy, self.cfg.max_scan_bytes):
            return  # the common case, decided in one Rust call: nothing found, nothing to record or change
        slots, texts = _request_texts(body)
        if texts:
            self._apply(texts, slots, policy, "request", ctx)

    def scan_response(self, result: dict[str, Any], ctx: RequestContext, route_id: str) -> None:
        """Scan a JSON answer; redact in place, or replace a blocked choice by a `content_filter` finish."""
        if self.engine is None:
            return
        policy = self.policy("response", route_id, ctx.key_id or "", ctx.key_name or "")
        if self.engine.response_clean(result, policy, self.cfg.max_scan_bytes):
            return
        slots, texts = _response_texts(result)
        if not texts:
            return
        try:
            self._apply(texts, slots, policy, "response", ctx)
        except DlpBlocked:
            for choice in result.get("choices") or ():
                if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
                    choice["message"]["content"] = ""
                    choice["message"].pop("tool_calls", None)
                    choice["finish_reason"] = "content_filter"
            ctx.finish_reason = "content_filter"

    def _apply(
        self, texts: list[str], slots: list[Slot], policy: DlpPolicy, direction: str, ctx: RequestContext
    ) -> None:
        assert self.engine is not None
        size = sum(len(t) for t in texts)
        try:
            if size > self.cfg.max_scan_bytes:
                raise DlpError(
                    f"the text to scan is {size} characters; dlp.max_scan_bytes is {self.cfg.max_scan_bytes}"
                )
            result = self.engine.apply(texts, policy, direction)
        except DlpError as e:
            self.errors += 1
            metrics.dlp_finding("SCAN_ERROR", "fail_" + self.cfg.fail_mode, direction)
            log.warning("DLP could not scan the %s of %s: %s (fail_mode=%s)", direction, ctx.request_id, e,
                        self.cfg.fail_mode)  # fmt: skip
            ctx.dlp_findings.append(
                {"rule_id": "scan-error", "entity": "SCAN_ERROR", "count": 1, "direction": direction,
                 "action": "fail_" + self.cfg.fail_mode}
            )  # fmt: skip
            if self.cfg.fail_mode == "open":
                return
            ctx.dlp_state = "blocked"
            raise DlpBlocked(f"Request blocked by DLP policy: the {direction} could not be scanned ({e}).") from None
        self.record(result.findings, direction, ctx, result.value_hmacs)
        if result.blocked:
            ctx.dlp_state = "blocked"
            counts = Counter[str]()
            for _rid, entity, action, n in result.findings:
                if action == "block":
                    counts[entity] += n
            what = ", ".join(f"{n} {entity}" for entity, n in sorted(counts.items()))
            raise DlpBlocked(f"Request blocked by DLP policy: {what} found in the {direction}.")
        if result.texts is not None:
            for (container, key), text in zip(slots, result.texts, strict=True):
                container[key] = text

    def record(
        self,
        findings: list[tuple[str, str, str, int]],
        direction: str,
        ctx: RequestContext,
        hmacs: list[tuple[str, str]] | None = None,
    ) -> None:
        for rid, entity, action, n in findings:
            entry: dict[str, Any] = {"rule_id": rid, "entity": entity, "count": n, "direction": direction,
                                     "action": action}  # fmt: skip
            if hmacs:
                entry["value_hmacs"] = [h for r, h in hmacs if r == rid]
            ctx.dlp_findings.append(entry)
            metrics.dlp_finding(entity, action, direction, n)
            _raise_state(ctx, action)

    # ---- streams ----------------------------------------------------------------------------------------
    def relay(self, public_model: str, ctx: RequestContext, route_id: str) -> ChunkRelay:
        if self.engine is None:
            return ChunkRelay(public_model)
        policy = self.policy("response", route_id, ctx.key_id or "", ctx.key_name or "")
        return self.engine.relay(policy, public_model)

    def record_stream(self, relay: ChunkRelay, ctx: RequestContext) -> None:
        counts: Counter[tuple[str, str, str]] = Counter()
        hmacs: dict[str, list[str]] = {}
        for rid, entity, action, value_hmac in relay.findings:
            counts[(rid, entity, action)] += 1
            if value_hmac:
                hmacs.setdefault(rid, []).append(value_hmac)
        for (rid, entity, action), n in counts.items():
            entry: dict[str, Any] = {"rule_id": rid, "entity": entity, "count": n, "direction": "response",
                                     "action": action}  # fmt: skip
            if rid in hmacs:
                entry["value_hmacs"] = hmacs[rid]
            ctx.dlp_findings.append(entry)
            metrics.dlp_finding(entity, action, "response", n)
            _raise_state(ctx, action)
        if relay.blocked:
            ctx.dlp_state = "blocked"


_RANK = {"clean": 0, "logged": 1, "redacted": 2, "blocked": 3}
_STATE = {"log": "logged", "redact": "redacted", "block": "blocked"}


def _raise_state(ctx: RequestContext, action: str) -> None:
    state = _STATE.get(action)
    if state is not None and _RANK[state] > _RANK.get(ctx.dlp_state, 0):
        ctx.dlp_state = state


def _request_texts(body: dict[str, Any]) -> tuple[list[Slot], list[str]]:
    """Every text the upstream will see: contents (strings and text parts) of every role, tool call
    arguments, legacy function_call arguments."""
    slots: list[Slot] = []
    texts: list[str] = []
    for msg in body.get("messages") or ():
        content = msg.get("content")
        if isinstance(content, str):
            slots.append((msg, "content"))
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    slots.append((part, "text"))
                    texts.append(part["text"])
        _calls(msg, slots, texts)
    return slots, texts


def _response_texts(result: dict[str, Any]) -> tuple[list[Slot], list[str]]:
    slots: list[Slot] = []
    texts: list[str] = []
    for choice in result.get("choices") or ():
        msg = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(msg, dict):
            if isinstance(msg.get("content"), str):
                slots.append((msg, "content"))
                texts.append(msg["content"])
            _calls(msg, slots, texts)
    return slots, texts


def _calls(msg: dict[str, Any], slots: list[Slot], texts: list[str]) -> None:
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            slots.append((fn, "arguments"))
            texts.append(fn["arguments"])
    fc = msg.get("function_call")
    if isinstance(fc, dict) and isinstance(fc.get("arguments"), str):
        slots.append((fc, "arguments"))
        texts.append(fc["arguments"])
