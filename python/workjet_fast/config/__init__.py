"""Configuration: one YAML file -> typed, validated settings. Nothing else parses configuration.

`load_settings(path)` returns `Settings` or raises `ConfigError` carrying every problem found, each
with its file, line and dotted path. Sections owned by one feature live in their own module here
(`limits.py`, `audit.py`, `dlp.py`); this module reads the core and delegates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from workjet_fast.config._reader import Problem, Section, load_yaml
from workjet_fast.config.audit import AuditConfig, read_audit
from workjet_fast.config.dlp import DlpConfig, read_dlp
from workjet_fast.config.limits import LimitsConfig, read_limits

__all__ = [
    "AuditConfig",
    "AuthConfig",
    "ConfigError",
    "Deployment",
    "DlpConfig",
    "LimitsConfig",
    "ModelConfig",
    "Problem",
    "ProviderConfig",
    "RoutingConfig",
    "ServerConfig",
    "Settings",
    "TierConfig",
    "load_settings",
    "parse_settings",
]

PROVIDER_TYPES = ("openai", "azure_openai", "anthropic")


class ConfigError(Exception):
    """The configuration has problems; `problems` lists every one with its location."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.render(file) for p in problems))


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    base_url: str
    api_key: str = field(default="", repr=False)
    api_version: str | None = None  # azure_openai
    anthropic_version: str = "2023-06-01"
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    connect_timeout: float = 5.0
    timeout: float = 60.0  # per attempt, until the response headers arrive
    read_timeout: float = 120.0  # longest silence between two reads of a body or stream
    max_connections: int = 256
    default_max_tokens: int = 4096  # Anthropic requires max_tokens
    http2: bool = False  # `http2: true` (h2 via ALPN over https) or `http2: prior_knowledge` (also h2c over http)
    http2_prior_knowledge: bool = False  # speak HTTP/2 without negotiating it (`http2: prior_knowledge`)
    http_client: str = "native"  # HTTP/1.1 client: `native` (providers/http1.py) or `aiohttp` (optional extra)


@dataclass(frozen=True)
class Deployment:
    provider: str
    model: str  # the provider's model name
    weight: float = 1.0
    priority: int = 0  # lower goes first; equal priorities are balanced by weight
    max_tokens: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    id: str
    deployments: tuple[Deployment, ...]
    max_tokens: int | None = None
    owned_by: str = "workjet"


@dataclass(frozen=True)
class TierConfig:
    name: str
    models: tuple[str, ...]
    max_tokens: int | None = None


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 4 * 1024 * 1024
    data_dir: str = "data"
    admin_token: str = field(default="", repr=False)
    access_log: bool = True


@dataclass(frozen=True)
class AuthConfig:
    refresh_seconds: float = 2.0  # bound on how long a revoked key keeps working, in every process


@dataclass(frozen=True)
class RoutingConfig:
    total_timeout: float = 300.0
    max_attempts: int = 4
    retry_backoff: float = 0.05  # seconds, doubled per retry of the same deployment, with jitter
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    breaker_error_ratio: float | None = None  # open when failures/calls >= this over the window (None: off)
    breaker_window: int = 20  # the last N calls the ratio is computed over
    breaker_min_calls: int = 10  # no ratio verdict on fewer calls than this
    retry_after_max: float = 10.0  # longest Retry-After honoured before retrying the same deployment (0: ignore)


@dataclass(frozen=True)
class Settings:
    server: ServerConfig
    storage_url: str
    auth: AuthConfig
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    tiers: dict[str, TierConfig]
    routing: RoutingConfig
    dlp: DlpConfig
    limits: LimitsConfig
    audit: AuditConfig
    source: str = "<memory>"


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a configuration file; raise `ConfigError` with every problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(file, [Problem("", None, f"cannot read the file: {e.strerror or e}")]) from None
    return parse_settings(text, file)


def parse_settings(text: str, file: str = "<memory>") -> Settings:
    try:
        raw = load_yaml(text)
    except Exception as e:  # yaml raises many kinds; all mean "not valid YAML"
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(file, [Problem("", line, f"not valid YAML: {getattr(e, 'problem', e)}")]) from None
    problems: list[Problem] = []
    root = Section(raw, "", problems)
    settings = _read(root, file)
    root.finish()
    if problems:
        raise ConfigError(file, problems)
    return settings


def _read(root: Section, file: str) -> Settings:
    srv = root.section("server")
    server = ServerConfig(
        host=srv.str("host", "127.0.0.1"),
        port=srv.int("port", 8080, min=0),
        workers=srv.int("workers", 1, min=1),
        max_body_bytes=srv.int("max_body_bytes", 4 * 1024 * 1024, min=1024),
        data_dir=srv.str("data_dir", "data"),
        admin_token=srv.str("admin_token", ""),
        access_log=srv.bool("access_log", True),
    )
    srv.finish()

    st = root.section("storage")
    storage_url = st.str("url", f"sqlite:///{server.data_dir}/workjet.db")
    if not storage_url.startswith(("sqlite://", "postgresql://", "postgres://")):
        st.problem("url", "must start with sqlite:/// or postgresql://")
    st.finish()

    au = root.section("auth")
    auth = AuthConfig(refresh_seconds=au.float("refresh_seconds", 2.0, positive=True))
    if auth.refresh_seconds > 5:
        au.problem("refresh_seconds", "must be at most 5 (the bound on how long a revoked key keeps working)")
    au.finish()

    providers: dict[str, ProviderConfig] = {}
    for name, p in root.items("providers", required=True):
        ptype = p.str("type", required=True, choices=PROVIDER_TYPES)
        base_url = p.str("base_url", required=True)
        if isinstance(base_url, str) and not base_url.startswith(("http://", "https://")):
            p.problem("base_url", "must start with http:// or https://")
        http2 = p.data.get("http2", False)  # false | true | prior_knowledge
        p._seen.add("http2")
        if http2 not in (None, False, True, "prior_knowledge"):
            p.problem("http2", f"must be true, false or prior_knowledge, got {http2!r}")
        providers[name] = ProviderConfig(
            name=name,
            type=ptype or "openai",
            base_url=(base_url or "").rstrip("/"),
            api_key=p.str("api_key", ""),
            api_version=p.str("api_version", None),
            anthropic_version=p.str("anthropic_version", "2023-06-01"),
            headers={str(k): str(v) for k, v in (p.section("headers").data or {}).items()},
            connect_timeout=p.float("connect_timeout", 5.0, positive=True),
            timeout=p.float("timeout", 60.0, positive=True),
            read_timeout=p.float("read_timeout", 120.0, positive=True),
            max_connections=p.int("max_connections", 256, min=1),
            default_max_tokens=p.int("default_max_tokens", 4096, min=1),
            http2=http2 in (True, "prior_knowledge"),
            http2_prior_knowledge=http2 == "prior_knowledge",
            http_client=p.str("http_client", "native", choices=("native", "aiohttp")) or "native",
        )
        if ptype == "azure_openai" and not p.has("api_version"):
            p.problem("api_version", "is required for azure_openai")
        p.finish()
    if not providers and root.has("providers"):
        root.problem("providers", "must declare at least one provider")

    models: dict[str, ModelConfig] = {}
    for mid, m in root.items("models", required=True):
        deployments: list[Deployment] = []
        entries = m.list("deployments")
        if not entries and m.has("provider"):
            entries = [({"provider": m.data.get("provider"), "model": m.data.get("model", mid)}, m.path, m.line)]
            m._seen.update({"provider", "model"})
        if not entries:
            m.problem(None, "needs `provider` (and `model`) or a list of `deployments`")
        for value, path, line in entries:
            d = Section(value, path, root.problems, line)
            prov = d.str("provider", required=True)
            if prov is not None and prov not in providers:
                d.problem("provider", f"names no provider (known: {', '.join(sorted(providers)) or 'none'})")
            deployments.append(
                Deployment(
                    provider=prov or "",
                    model=d.str("model", mid),
                    weight=d.float("weight", 1.0, positive=True),
                    priority=d.int("priority", 0, min=0),
                    max_tokens=d.int("max_tokens", None, min=1),
                )
            )
            d.finish()
        models[mid] = ModelConfig(
            id=mid,
            deployments=tuple(deployments),
            max_tokens=m.int("max_tokens", None, min=1),
            owned_by=m.str("owned_by", "workjet"),
        )
        m.finish()

    tiers: dict[str, TierConfig] = {}
    for tname, t in root.items("tiers"):
        if tname in models:
            t.problem(None, f"tier name {tname!r} is also a model id; a name must mean one thing")
        names = t.str_list("models", required=True) or []
        for i, mname in enumerate(names):
            if mname not in models:
                t.problems.append(Problem(f"{t.path}.models[{i}]", t.line_of("models"), f"names no model: {mname!r}"))
        tiers[tname] = TierConfig(name=tname, models=tuple(names), max_tokens=t.int("max_tokens", None, min=1))
        t.finish()

    ro = root.section("routing")
    routing = RoutingConfig(
        total_timeout=ro.float("total_timeout", 300.0, positive=True),
        max_attempts=ro.int("max_attempts", 4, min=1),
        retry_backoff=ro.float("retry_backoff", 0.05),
        breaker_failures=ro.int("breaker_failures", 5, min=1),
        breaker_cooldown=ro.float("breaker_cooldown", 30.0, positive=True),
        breaker_error_ratio=ro.float("breaker_error_ratio", None, positive=True),
        breaker_window=ro.int("breaker_window", 20, min=1),
        breaker_min_calls=ro.int("breaker_min_calls", 10, min=1),
        retry_after_max=ro.float("retry_after_max", 10.0),
    )
    if routing.breaker_error_ratio is not None and routing.breaker_error_ratio > 1:
        ro.problem("breaker_error_ratio", "must be a ratio in (0, 1]")
    if routing.breaker_min_calls > routing.breaker_window:
        ro.problem("breaker_min_calls", f"must be at most breaker_window ({routing.breaker_window})")
    if routing.retry_after_max < 0:
        ro.problem("retry_after_max", "must be a number >= 0")
    ro.finish()

    known_ids = set(models) | set(tiers)
    dlp = read_dlp(root.section("dlp"), known_ids)
    limits = read_limits(root.section("limits"), known_ids)
    audit = read_audit(root.section("audit"), server.data_dir)
    return Settings(
        server=server,
        storage_url=storage_url,
        auth=auth,
        providers=providers,
        models=models,
        tiers=tiers,
        routing=routing,
        dlp=dlp,
        limits=limits,
        audit=audit,
        source=file,
    )
