"""Where a request's time goes inside a loaded worker: `python -m benches.load.stages [on] [off] ...`.

A load profile by sampling (py-spy, `run.py --profile`) charges time to whatever line was running; this one times
each stage of the JSON route directly. The gateway runs in-process with thin timing wrappers around the
functions and methods the handler calls (`serve` below), wrk drives it at `CONNS` (default 32) connections for
`SECONDS` (default 8), and the server reports, per stage, the mean wall time per request. Stages run without
awaiting anything else, so their wall time is CPU time of the event loop, plus whatever the audit writer thread
took while it held the GIL. The process's CPU time per request (from /proc), and the audit writer thread's, are
reported beside them; what no stage covers is uvicorn, the event loop, and the upstream client's own work.
The writer's figure counts the writer threads alive when the figures are read: a background writer that
handed over to one at normal priority during the window (docs/audit.md) is counted in the process's CPU only.

The wrappers cost ~0.3 µs each (a dozen per request); the figures are for comparing stages and variants in the
same run, not for the headline numbers (those come from `run.py`, uninstrumented).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "serve"]

Stats = dict[str, list[float]]  # stage -> [total seconds, calls]


def _timed_sync(stats: Stats, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    pc = time.perf_counter
    slot = stats.setdefault(name, [0.0, 0])

    def wrapper(*a: Any, **k: Any) -> Any:
        t = pc()
        try:
            return fn(*a, **k)
        finally:
            slot[0] += pc() - t
            slot[1] += 1

    return wrapper


def _timed_async(stats: Stats, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    pc = time.perf_counter
    slot = stats.setdefault(name, [0.0, 0])

    async def wrapper(*a: Any, **k: Any) -> Any:
        t = pc()
        try:
            return await fn(*a, **k)
        finally:
            slot[0] += pc() - t
            slot[1] += 1

    return wrapper


def _thread_cpu(name: str) -> float:
    """CPU seconds of this process's Python threads called `name` (/proc/self/task/<native id>/stat)."""
    import threading

    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for t in threading.enumerate():
        if t.name != name or t.native_id is None:
            continue
        try:
            f = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tck
        except OSError:
            continue
    return total


def serve(argv: list[str]) -> None:
    """`workjet serve ARGV` with the handler's stages timed; SIGUSR1 writes the figures to $WORKJET_STAGES_OUT."""
    from workjet_fast import cli, gateway, handler
    from workjet_fast.auth import KeyCache
    from workjet_fast.pipeline import dlp, limits, route

    stats: Stats = {}
    handler.parse_body = _timed_sync(stats, "parse body", handler.parse_body)
    handler.validate_chat = _timed_sync(stats, "validate", handler.validate_chat)
    handler._headers = _timed_sync(stats, "auth: headers", handler._headers)
    KeyCache.cached = _timed_sync(stats, "auth: key look-up", KeyCache.cached)  # type: ignore[method-assign]
    KeyCache.authenticate = _timed_async(stats, "auth: key look-up", KeyCache.authenticate)  # type: ignore[method-assign]
    dlp.Dlp.scan_request = _timed_sync(stats, "DLP: request", dlp.Dlp.scan_request)  # type: ignore[method-assign]
    dlp.Dlp.scan_response = _timed_sync(stats, "DLP: response", dlp.Dlp.scan_response)  # type: ignore[method-assign]
    handler._chat_texts = _timed_sync(stats, "prompt count: texts", handler._chat_texts)
    handler.count_chat_tokens = _timed_sync(stats, "prompt count: tokens", handler.count_chat_tokens)
    handler.count_tokens = _timed_sync(stats, "completion count", handler.count_tokens)
    limits.Limiter.admit = _timed_async(stats, "limits: admit", limits.Limiter.admit)  # type: ignore[method-assign]
    limits.MemoryLimiter.settle = _timed_async(stats, "limits: settle", limits.MemoryLimiter.settle)  # type: ignore[method-assign]
    gateway.Gateway.audit_submit = _timed_sync(
        stats, "metrics + access log + audit submit", gateway.Gateway.audit_submit
    )  # type: ignore[method-assign]
    route.Router.complete = _timed_async(stats, "(upstream call, wall: includes waiting)", route.Router.complete)  # type: ignore[method-assign]
    sent = stats.setdefault("response: uvicorn send", [0.0, 0])
    whole = stats.setdefault("(whole request, wall)", [0.0, 0])
    original_call = handler.ChatHandler.__call__
    pc = time.perf_counter

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        async def timed_send(message: Any) -> None:
            t = pc()
            await send(message)
            sent[0] += pc() - t
            if not message.get("more_body", False) and message["type"] == "http.response.body":
                sent[1] += 1

        t = pc()
        await original_call(self, scope, receive, timed_send)
        whole[0] += pc() - t
        whole[1] += 1

    handler.ChatHandler.__call__ = call  # type: ignore[method-assign]
    t0 = [os.times(), 0]

    def dump(*_: Any) -> None:
        now = os.times()
        out = {
            "stages": dict(stats),
            "process_cpu_s": (now.user + now.system) - (t0[0].user + t0[0].system),
            "writer_cpu_s": _thread_cpu("workjet-audit-writer") - t0[1],
            "requests": whole[1],
        }
        target = Path(os.environ["WORKJET_STAGES_OUT"])
        part = target.with_suffix(".part")
        part.write_text(json.dumps(out))
        os.replace(part, target)  # the driver never reads a half-written file

    def reset(*_: Any) -> None:
        for v in stats.values():
            v[0], v[1] = 0.0, 0
        t0[0], t0[1] = os.times(), _thread_cpu("workjet-audit-writer")

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, reset)
    sys.exit(cli.main(["serve", *argv]))


def main(names: list[str]) -> None:
    from benches.load import targets as T
    from benches.load.ab import VARIANTS, config_for, features_on
    from benches.load.payloads import JSON_MODEL, chat_body
    from benches.load.procs import require_tools, stop_all
    from benches.load.wrk import run_wrk

    names = names or ["on", "off"]
    unknown = [n for n in names if any(v not in VARIANTS for v in n.split("+"))]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; combine these with '+': {sorted(VARIANTS)}")
    conns = int(os.environ.get("CONNS", "32"))
    seconds = float(os.environ.get("SECONDS", "8"))
    tools = require_tools(["wrk", "nginx", "taskset"])
    tmp = Path(tempfile.mkdtemp(prefix="workjet-stages-"))
    body = tmp / "body.json"
    body.write_bytes(chat_body(JSON_MODEL, False))
    results: dict[str, dict[str, Any]] = {}
    try:
        direct = T.start_direct(tools["nginx"], tmp)
        upstream = direct.json_url.rsplit("/json/", 1)[0]
        for n in names:
            out = tmp / f"stages-{n}.json"
            g = T.start_gateway(
                f"stages-{n}",
                upstream,
                tmp,
                features_on(n),
                config=config_for(n),
                serve=[sys.executable, "-m", "benches.load.stages", "--serve"],
                env={"WORKJET_STAGES_OUT": str(out), "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            )
            proc, url, headers = g.proc, g.json_url, g.headers
            run_wrk(tools["wrk"], url, body, headers, conns, 2, T.DRIVER_CORE)  # warm-up
            os.kill(proc.pid, signal.SIGUSR2)
            w = run_wrk(tools["wrk"], url, body, headers, conns, seconds, T.DRIVER_CORE)
            if w.errors:
                raise SystemExit(f"{n}: {w.errors} of {w.requests} requests failed; see {proc.log}")
            os.kill(proc.pid, signal.SIGUSR1)
            for _ in range(50):
                if out.exists():
                    break
                time.sleep(0.1)
            results[n] = json.loads(out.read_text()) | {"rps": w.rps}
            proc.stop()
    finally:
        stop_all()
    print(render(results))


def render(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    stages: list[str] = []
    for r in results.values():
        stages += [s for s in r["stages"] if s not in stages]
    head = "| stage, µs per request | " + " | ".join(names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]

    def per_req(r: dict[str, Any], total: float) -> float:
        return total / max(r["requests"], 1) * 1e6

    for s in stages:
        cells = []
        for n in names:
            v = results[n]["stages"].get(s, [0.0, 0])
            cells.append(f"{per_req(results[n], v[0]):.1f}" if v[1] else "–")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    for label, key in (("audit writer thread CPU", "writer_cpu_s"), ("**process CPU**", "process_cpu_s")):
        lines.append(f"| {label} | " + " | ".join(f"{per_req(results[n], results[n][key]):.1f}" for n in names) + " |")
    lines.append("| req/s (instrumented) | " + " | ".join(f"{results[n]['rps']:,.0f}" for n in names) + " |")
    timed = {n: sum(v[0] for s, v in results[n]["stages"].items() if not s.startswith("(")) for n in names}
    lines.append(
        "| stages above, summed (no upstream wait) | "
        + " | ".join(f"{per_req(results[n], timed[n]):.1f}" for n in names)
        + " |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
    else:
        main(sys.argv[1:])
