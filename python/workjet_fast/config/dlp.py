"""The `dlp:` section: request and response policies, overrides, custom rules, allow-lists.

Actions are named per entity (`CREDIT_CARD`) or per rule id (`credit-card`); a rule id wins over its entity.
Custom rules are compiled here, so `workjet config check` reports an invalid pattern with the rule's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from workjet_fast.config._reader import Section

ACTIONS = ("block", "redact", "log", "allow")
ENGINES = ("auto", "hyperscan", "regex")


@dataclass(frozen=True)
class PolicyOverride:
    request: dict[str, str] = field(default_factory=dict)  # entity or rule id -> action
    response: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DlpConfig:
    enabled: bool = True
    engine: str = "auto"
    fail_mode: str = "closed"  # scanning cannot run: closed (block) | open (forward, counted and logged)
    max_scan_bytes: int = 4 * 1024 * 1024
    hmac_key: str = field(default="", repr=False)
    rules_json: str | None = None  # custom rules, as the engine takes them
    disabled_rules: tuple[str, ...] = ()
    allow_values: tuple[str, ...] = ()
    allow_patterns: tuple[str, ...] = ()
    base: PolicyOverride = field(default_factory=PolicyOverride)
    routes: dict[str, PolicyOverride] = field(default_factory=dict)  # per tier or model id
    keys: dict[str, PolicyOverride] = field(default_factory=dict)  # per key id or key name
    rules: tuple[tuple[str, str, str], ...] = ()  # (rule id, entity, category) of the compiled ruleset


def _actions(s: Section, key: str, names: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    sub = s.section(key)
    for name in list(sub.data):
        action = sub.str(name, choices=ACTIONS)
        if name not in names:
            sub.problem(name, "names no DLP rule id or entity")
        elif action is not None:
            out[name] = action
    return out


def _override(s: Section, names: set[str]) -> PolicyOverride:
    o = PolicyOverride(request=_actions(s, "request", names), response=_actions(s, "response", names))
    s.finish()
    return o


def _custom_rules(s: Section) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for value, path, line in s.list("custom_rules"):
        r = Section(value, path, s.problems, line)
        rule: dict[str, Any] = {
            "id": r.str("id", required=True),
            "entity": r.str("entity", required=True),
            "pattern": r.str("pattern", required=True),
        }
        for opt in ("category", "action", "request_action", "response_action", "validator"):
            if (v := r.str(opt, None)) is not None:
                rule[opt] = v
        if (v := r.int("max_len", None, min=1)) is not None:
            rule["max_len"] = v
        if (v := r.float("confidence", None)) is not None:
            rule["confidence"] = v
        if (v := r.str_list("keywords", None)) is not None:
            rule["keywords"] = v
        r.finish()
        if all(rule[k] for k in ("id", "entity", "pattern")):
            rules.append(rule)
    return rules


def read_dlp(s: Section, known_ids: set[str]) -> DlpConfig:
    enabled = s.bool("enabled", True)
    engine = s.str("engine", "auto", choices=ENGINES)
    custom = _custom_rules(s)
    rules_json = orjson.dumps(custom).decode() if custom else None
    compiled: list[tuple[str, str, str]] = []
    try:
        from workjet_fast._workjet_fast import DlpEngine, DlpError

        try:
            compiled = DlpEngine(rules_json, engine if engine in ENGINES else "auto").rules
        except DlpError as e:
            s.problem("custom_rules", str(e))
        except ValueError as e:
            s.problem("engine", str(e))
    except ImportError:  # pragma: no cover - the native module is part of the package
        s.problem(None, "the native DLP engine is not available in this build")
    names = {r[0] for r in compiled} | {r[1] for r in compiled}

    disabled = tuple(s.str_list("disabled_rules", []) or [])
    for rid in disabled:
        if compiled and rid not in names:
            s.problem("disabled_rules", f"names no DLP rule: {rid!r}")
    allow = s.section("allow")
    allow_values = tuple(allow.str_list("values", []) or [])
    allow_patterns = tuple(allow.str_list("patterns", []) or [])
    allow.finish()

    base = PolicyOverride(request=_actions(s, "request", names), response=_actions(s, "response", names))
    routes: dict[str, PolicyOverride] = {}
    for name, sub in s.items("tiers"):
        if name not in known_ids:
            sub.problem(None, f"names no tier or model: {name!r}")
        routes[name] = _override(sub, names)
    keys = {name: _override(sub, names) for name, sub in s.items("keys")}
    cfg = DlpConfig(
        enabled=enabled,
        engine=engine,
        fail_mode=s.str("fail_mode", "closed", choices=("closed", "open")),
        max_scan_bytes=s.int("max_scan_bytes", 4 * 1024 * 1024, min=1),
        hmac_key=s.str("hmac_key", ""),
        rules_json=rules_json,
        disabled_rules=disabled,
        allow_values=allow_values,
        allow_patterns=allow_patterns,
        base=base,
        routes=routes,
        keys=keys,
        rules=tuple(compiled),
    )
    s.finish()
    return cfg
