"""The `workjet` command: serve, keys, config check, db migrate, audit.

Output contract: what a script wants to capture goes to stdout alone (a new key, JSON listings);
everything else (details, progress, problems) goes to stderr. Exit codes: 0 ok, 1 failure, 2 bad usage
or bad configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

import orjson

from workjet_fast import __version__
from workjet_fast.config import ConfigError, Settings, load_settings

__all__ = ["main"]

DEFAULT_CONFIG = "examples/workjet.yaml"


def _settings(path: str) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        print(f"{len(e.problems)} problem(s) in {path}", file=sys.stderr)
        raise SystemExit(2) from None


def _key_store(settings: Settings):  # type: ignore[no-untyped-def]
    from workjet_fast.auth import KeyStore
    from workjet_fast.storage import StorageError, open_database

    db = open_database(settings.storage_url)
    try:
        db.migrate()
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    return KeyStore(db)


def _limits_from(args: argparse.Namespace) -> dict[str, int]:
    return {k: v for k in ("rpm", "tpm", "concurrency") if (v := getattr(args, k, None)) is not None}


def cmd_serve(args: argparse.Namespace) -> int:
    from workjet_fast.server import run

    settings = _settings(args.config)
    server = settings.server
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v}
    if overrides:
        settings = dataclasses.replace(settings, server=dataclasses.replace(server, **overrides))
    run(settings, args.config)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    unknown = [m for m in args.models or [] if m not in settings.models] + [
        t for t in args.tiers or [] if t not in settings.tiers
    ]
    if unknown:
        print(f"error: not in the configuration: {', '.join(unknown)}", file=sys.stderr)
        return 2
    key, rec = _key_store(settings).create(args.name, args.models, args.tiers, _limits_from(args))
    print(key)  # alone on stdout, shown once
    print(f"created {rec.id} ({rec.name}), prefix {rec.prefix}; the key is shown only this once", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    recs = _key_store(_settings(args.config)).list()
    if args.format == "json":
        print(orjson.dumps([r.public() for r in recs]).decode())
        return 0
    print(f"{'ID':<22} {'NAME':<20} {'PREFIX':<16} {'STATUS':<8} MODELS/TIERS")
    for r in recs:
        scope = ",".join((*r.models, *r.tiers)) or "*"
        print(f"{r.id:<22} {r.name[:20]:<20} {r.prefix:<16} {'revoked' if r.revoked_at else 'active':<8} {scope}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    store = _key_store(_settings(args.config))
    if store.revoke(args.id):
        print(f"revoked {args.id}; every gateway process stops accepting it within a few seconds", file=sys.stderr)
        return 0
    print(f"error: no active key with id {args.id}", file=sys.stderr)
    return 1


def cmd_keys_limits(args: argparse.Namespace) -> int:
    store = _key_store(_settings(args.config))
    rec = store.get(args.id)
    if rec is None:
        print(f"error: no key with id {args.id}", file=sys.stderr)
        return 1
    limits = {**rec.limits, **_limits_from(args)}
    for name in args.clear or []:
        limits.pop(name, None)
    store.set_limits(args.id, limits)
    print(orjson.dumps(limits).decode())
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as e:
        print(e)
        print(f"{len(e.problems)} problem(s) in {args.file}", file=sys.stderr)
        return 1
    print(
        f"{args.file}: ok ({len(settings.providers)} providers, {len(settings.models)} models, "
        f"{len(settings.tiers)} tiers)",
        file=sys.stderr,
    )
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from workjet_fast.storage import StorageError, open_database

    settings = _settings(args.config)
    try:
        applied = open_database(settings.storage_url).migrate()
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"applied migrations: {applied or 'none (up to date)'}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workjet", description="Workjet Gateway: an OpenAI-compatible AI gateway.")
    p.add_argument("--version", action="version", version=f"workjet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"configuration file (default {DEFAULT_CONFIG})")
        return sp

    s = with_config(sub.add_parser("serve", help="run the gateway"))
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    s.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="create, list, revoke API keys").add_subparsers(dest="keys_cmd", required=True)
    kc = with_config(keys.add_parser("create", help="create a key; prints it once, alone on stdout"))
    kc.add_argument("--name", required=True)
    kc.add_argument("--models", nargs="*", help="model ids the key may use (default: all)")
    kc.add_argument("--tiers", nargs="*", help="tiers the key may use (default: all)")
    for name in ("rpm", "tpm", "concurrency"):
        kc.add_argument(f"--{name}", type=int, help=f"per-key {name} limit")
    kc.set_defaults(func=cmd_keys_create)
    kl = with_config(keys.add_parser("list", help="list keys (never the keys themselves)"))
    kl.add_argument("--format", choices=("table", "json"), default="table")
    kl.set_defaults(func=cmd_keys_list)
    kr = with_config(keys.add_parser("revoke", help="revoke a key by id"))
    kr.add_argument("id")
    kr.set_defaults(func=cmd_keys_revoke)
    kL = with_config(keys.add_parser("limits", help="set a key's limits"))
    kL.add_argument("id")
    for name in ("rpm", "tpm", "concurrency"):
        kL.add_argument(f"--{name}", type=int)
    kL.add_argument("--clear", nargs="*", choices=("rpm", "tpm", "concurrency"))
    kL.set_defaults(func=cmd_keys_limits)

    cfg = sub.add_parser("config", help="configuration tools").add_subparsers(dest="config_cmd", required=True)
    cc = cfg.add_parser("check", help="validate a configuration file; prints every problem with its location")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_config_check)

    db = sub.add_parser("db", help="database tools").add_subparsers(dest="db_cmd", required=True)
    with_config(db.add_parser("migrate", help="apply schema migrations")).set_defaults(func=cmd_db_migrate)

    from workjet_fast.audit import cli as audit_cli

    audit_cli.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
