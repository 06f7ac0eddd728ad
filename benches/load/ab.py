"""A/B of gateway configurations under load: `python -m benches.load.ab on noaudit nodlp ...`.

Starts the nginx fake upstream and one gateway per variant (the `workjet-on` configuration of targets.py with
one change each; `a+b` combines variants), then drives them with wrk, interleaved and in alternating order, and
prints per variant the median req/s, p50, p99 and the server's CPU time per request (user + system, all its
threads, from /proc), then each server's resident memory after the runs. `pt-aiohttp` and `pt-native` are the
Starlette pass-through with either client, for a baseline in the same run. `REPS` (default 3) runs of `SECONDS`
(default 4) at each of `CONNS` (default 1,32). `MODE=sse` drives the streaming route instead of the JSON one;
`TTFB=N` (streaming) measures instead, per run and variant, the time to the first `data:` byte of N streams
over one connection (benches/load/ttfb.py). Used for "What each feature costs under load" in benches/RESULTS.md.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benches.load import targets as T
from benches.load.payloads import JSON_MODEL, SSE_MODEL, chat_body
from benches.load.procs import pin, require_tools, rss_bytes, stop_all
from benches.load.wrk import WrkResult, run_wrk

VARIANTS: dict[str, Callable[[str], str]] = {
    "on": lambda t: t,
    "off": lambda t: t,  # features=False: the workjet-off configuration
    "noaudit": lambda t: t.replace("audit:\n  enabled: true", "audit:\n  enabled: false"),
    "nodlp": lambda t: t.replace("dlp:\n  enabled: true", "dlp:\n  enabled: false"),
    "notpm": lambda t: t.replace(", tpm: 1000000000000", ""),
    "nolog": lambda t: t.replace("access_log: true", "access_log: false"),
    "rx": lambda t: t.replace("dlp:\n  enabled: true", "dlp:\n  enabled: true\n  engine: regex"),
    "aiohttp": lambda t: t.replace("http_client: native", "http_client: aiohttp"),
    "fgwriter": lambda t: t.replace("audit:\n  enabled: true", "audit:\n  enabled: true\n  background_writer: false"),
    "noyield": lambda t: t.replace("audit:\n  enabled: true", "audit:\n  enabled: true\n  yield_below: 0"),
    "bgwriter": lambda t: t.replace("audit:\n  enabled: true", "audit:\n  enabled: true\n  background_writer: true"),
}


PASSTHROUGH = ("pt-aiohttp", "pt-native")
DIRECT = "direct"  # the fake upstream itself: the floor


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def features_on(name: str) -> bool:
    """Whether a variant runs with every feature on: any but one that has `off` among its `+`-joined parts."""
    return "off" not in name.split("+")


def config_for(name: str) -> Callable[..., str]:
    """The workjet-on configuration with each `+`-joined variant applied in turn."""

    def config(*a: object, **k: object) -> str:
        return functools.reduce(lambda text, v: VARIANTS[v](text), name.split("+"), T.gateway_config(*a, **k))  # type: ignore[arg-type]

    return config


def main(argv: list[str]) -> None:
    names = argv or ["on", "off"]
    unknown = [n for n in names if n not in (*PASSTHROUGH, DIRECT) and any(v not in VARIANTS for v in n.split("+"))]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; combine with +: {sorted(VARIANTS)}, or {PASSTHROUGH}, {DIRECT}")
    reps = int(os.environ.get("REPS", "3"))
    seconds = float(os.environ.get("SECONDS", "4"))
    conns = tuple(int(c) for c in os.environ.get("CONNS", "1,32").split(","))
    sse = os.environ.get("MODE", "json") == "sse"
    ttfb_n = int(os.environ.get("TTFB", "0"))
    tools = require_tools(["wrk", "nginx", "taskset"])
    tmp = Path(tempfile.mkdtemp(prefix="workjet-ab-"))
    body = tmp / "body.json"
    body.write_bytes(chat_body(SSE_MODEL, True) if sse or ttfb_n else chat_body(JSON_MODEL, False))
    try:
        direct = T.start_direct(tools["nginx"], tmp)
        upstream = direct.json_url.rsplit("/json/", 1)[0]
        gateways = {}
        for n in names:
            if n == DIRECT:
                gateways[n] = direct
                continue
            if n in PASSTHROUGH:
                gateways[n] = T.start_passthrough(n.removeprefix("pt-"), upstream, tmp)
                continue
            gateways[n] = T.start_gateway(f"ab-{n}", upstream, tmp, features_on(n), config=config_for(n))
        if ttfb_n:
            _ttfb(gateways, names, body, ttfb_n, reps)
            return
        runs: dict[tuple[str, int], list[WrkResult]] = {(n, c): [] for n in names for c in conns}
        cpu: dict[tuple[str, int], list[float]] = {(n, c): [] for n in names for c in conns}
        for r in range(reps):
            for c in conns:
                for n in names if r % 2 == 0 else names[::-1]:
                    g = gateways[n]
                    before = cpu_seconds(g.proc.pid)
                    url = g.sse_url if sse else g.json_url
                    w = run_wrk(tools["wrk"], url, body, g.headers, c, seconds, T.DRIVER_CORE)
                    if w.errors:
                        raise SystemExit(f"{n}: {w.errors} of {w.requests} requests failed at {c} connections")
                    runs[(n, c)].append(w)
                    cpu[(n, c)].append((cpu_seconds(g.proc.pid) - before) / max(w.requests, 1) * 1e6)
        for c in conns:
            base = statistics.median(w.rps for w in runs[(names[0], c)])
            for n in names:
                ws = runs[(n, c)]
                rps = statistics.median(w.rps for w in ws)
                p50 = statistics.median(w.p50_ms for w in ws)
                p99 = statistics.median(w.p99_ms for w in ws)
                us = statistics.median(cpu[(n, c)])
                print(f"c={c:<3} {n:<10} {rps:8.0f} req/s ({rps / base:.2f}x)  p50 {p50:.3f}  p99 {p99:.3f} ms  "
                      f"CPU {us:5.0f} µs/request")  # fmt: skip
        for n in names:
            print(f"RSS after the runs  {n:<10} {rss_bytes(gateways[n].proc.pid) / 2**20:6.1f} MB")
    finally:
        stop_all()


def _ttfb(gateways: dict[str, T.Target], names: list[str], body: Path, n: int, reps: int) -> None:
    """First `data:` byte of `n` streams per run and variant, runs interleaved in alternating order."""
    firsts: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(reps):
        for name in names if r % 2 == 0 else names[::-1]:
            g = gateways[name]
            argv = [sys.executable, "-m", "benches.load.ttfb", g.sse_url, str(body), str(n)]
            argv += [f"{k}: {v}" for k, v in g.headers.items()]
            out = subprocess.run(pin(T.DRIVER_CORE, argv), capture_output=True, text=True, timeout=300, check=True)
            firsts[name].append(json.loads(out.stdout))
    for name in names:
        p50 = statistics.median(x["first_p50_ms"] for x in firsts[name])
        p90 = statistics.median(x["first_p90_ms"] for x in firsts[name])
        p99 = statistics.median(x["first_p99_ms"] for x in firsts[name])
        print(f"ttfb  {name:<10} first data: p50 {p50:.3f}  p90 {p90:.3f}  p99 {p99:.3f} ms  ({reps} x {n} streams)")


if __name__ == "__main__":
    main(sys.argv[1:])
