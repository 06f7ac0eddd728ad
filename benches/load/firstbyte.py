"""Where a stream's first byte spends its time: `python -m benches.load.firstbyte [on off ...]`.

Starts the nginx fake upstream and one gateway per variant (ab.py's variants), each under `serve` below: the
normal `workjet serve`, with timestamps taken at the boundaries of the request path by wrappers around the
functions that mark them (no change to the gateway's code; each wrapper costs well under a microsecond). Then
runs benches/load/ttfb.py against each, which also records when it wrote each request and when the first
byte came back, and prints per variant the median and p90 of every stage, from the client's write to the
client's read, in microseconds, as a Markdown table, and the fake upstream's own time (`direct`, the floor)
for the same client. Used for "What bounds the first streamed byte" in
benches/RESULTS.md. `REPS` (default 3) runs of `N` (default 300) streams per variant, interleaved.

Stages (each ends where the next begins):
  hop in        the client's write until uvicorn's protocol gets the bytes (kernel, wake-up of the worker)
  parse         uvicorn parses the request and creates its task (httptools callbacks, the request cycle)
  to handler    the event loop runs the task; uvicorn's ASGI layers call the gateway's route
  auth          request context, the key from the headers
  body          the body read, parsed and validated; the model resolved
  route + DLP   the key's permission, the max_tokens cap, DLP on the request
  limits        admission (token and request buckets)
  to provider   the rate-limit headers; the router picks a deployment
  request out   the provider's request body and head built, a pooled connection taken, the write
  upstream      the fake upstream's answer (kernel both ways, nginx, wake-ups)
  head parse    the upstream's status line and headers parsed
  to stream     the task wakes; the provider, the router's fallback loop and its guard return the stream
  first event   the relay (DLP on the response), the response head, the disconnect watcher, the first
                event fed and written
  hop out       the write until the client's read returns (kernel, wake-up of the client, its event loop)

Also reported per variant: how long the handler runs after the stream's last byte (usage, DLP findings, the
limits settled, the audit record submitted), and how often the next request arrived before that was over.
The stamps stay in the printed temp directory (`marks-*.json`, `client-*.json`).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

STAGES = [
    ("hop in", "client_write", "req_in"),
    ("parse", "req_in", "parsed"),
    ("to handler", "parsed", "handler"),
    ("auth", "handler", "body_read"),
    ("body", "body_read", "resolved"),
    ("route + DLP", "resolved", "dlp_done"),
    ("limits", "dlp_done", "admitted"),
    ("to provider", "admitted", "routing"),
    ("request out", "routing", "up_write"),
    ("upstream", "up_write", "up_in"),
    ("head parse", "up_in", "up_head"),
    ("to stream", "up_head", "stream"),
    ("first event", "stream", "first_out"),
    ("hop out", "first_out", "client_read"),
]


# ---- the traced server ---------------------------------------------------------------------------------------


class _Marks:
    """One dict of perf_counter_ns stamps per request; requests are one at a time (one connection)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.done: list[dict[str, int]] = []
        self.cur: dict[str, int] = {}
        self.arrivals: list[tuple[int, int]] = []  # (before, after) uvicorn's data_received, per call

    def mark(self, name: str, once: bool = False) -> None:
        if not (once and name in self.cur):
            self.cur[name] = time.perf_counter_ns()

    def end(self) -> None:
        self.done.append(self.cur)
        self.cur = {}

    def dump(self) -> None:
        """Written whole, then renamed: the driver reads the file as soon as it exists."""
        part = self.out.with_suffix(".part")
        part.write_text(json.dumps({"requests": self.done, "arrivals": self.arrivals}))
        part.replace(self.out)


def _around(owner: Any, name: str, before: str | None, after: str | None, marks: _Marks, once: bool = False) -> None:
    f = getattr(owner, name)

    @functools.wraps(f)
    def wrapper(*a: Any, **k: Any) -> Any:
        if before:
            marks.mark(before, once)
        r = f(*a, **k)
        if after:
            marks.mark(after, once)
        return r

    setattr(owner, name, wrapper)


def _around_async(owner: Any, name: str, before: str | None, after: str | None, marks: _Marks) -> None:
    f = getattr(owner, name)

    @functools.wraps(f)
    async def wrapper(*a: Any, **k: Any) -> Any:
        if before:
            marks.mark(before)
        r = await f(*a, **k)
        if after:
            marks.mark(after)
        return r

    setattr(owner, name, wrapper)


def install(marks: _Marks) -> None:
    """Wrap the functions at the stage boundaries (module attributes, so the callers' lookups find them)."""
    from workjet_fast import handler, http_protocol
    from workjet_fast.pipeline import dlp, limits, route
    from workjet_fast.providers import http1

    received = http_protocol.HttpProtocol.data_received

    def data_received(self: Any, data: bytes) -> None:  # a request may arrive before the one before it ends
        t = time.perf_counter_ns()
        received(self, data)
        marks.arrivals.append((t, time.perf_counter_ns()))

    http_protocol.HttpProtocol.data_received = data_received  # type: ignore[method-assign]
    _around(http1._Conn, "send", None, "up_write", marks)
    _around(http1._Conn, "data_received", "up_in", None, marks, once=True)
    _around(http1._Conn, "on_headers_complete", None, "up_head", marks, once=True)
    _around(http_protocol.FastCycle, "_send_chunk", "first_out", None, marks, once=True)
    cycle_send = http_protocol.FastCycle.send

    async def send(self: Any, message: Any) -> None:
        await cycle_send(self, message)
        if message.get("type") == "http.response.body" and not message.get("more_body", False):
            marks.mark("last_out")

    http_protocol.FastCycle.send = send  # type: ignore[method-assign]
    _around_async(handler, "_read_body", "body_read", None, marks)
    _around(route.Router, "resolve", None, "resolved", marks)
    _around(dlp.Dlp, "scan_request", None, "dlp_done", marks)
    for cls in (limits.MemoryLimiter, limits.Limiter):
        if "admit" in vars(cls):
            _around_async(cls, "admit", None, "admitted", marks)
            break
    _around_async(route.Router, "stream", "routing", "stream", marks)

    call = handler.ChatHandler.__call__

    async def traced_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        marks.mark("handler")
        try:
            await call(self, scope, receive, send)
        finally:
            marks.mark("end")
            marks.end()

    handler.ChatHandler.__call__ = traced_call  # type: ignore[method-assign]


def serve(argv: list[str]) -> None:
    """`workjet serve ARGV` with the marks installed; SIGUSR1 writes them to $FIRSTBYTE_OUT (uvicorn ends a
    process it stopped by raising the signal again, so nothing runs at exit)."""
    from workjet_fast.cli import main as cli

    marks = _Marks(Path(os.environ["FIRSTBYTE_OUT"]))
    install(marks)
    signal.signal(signal.SIGUSR1, lambda *_: marks.dump())
    sys.exit(cli(["serve", *argv]))


# ---- the driver --------------------------------------------------------------------------------------------------


def _arrival(arrivals: list[list[int]], handler: int) -> list[int] | None:
    """The last of the sorted (before, after) data_received stamps before a handler started: its request's bytes."""
    i = bisect.bisect_left(arrivals, [handler, 0]) - 1
    return arrivals[i] if i >= 0 else None


def _join(client: list[list[int]], marks: dict[str, Any]) -> list[dict[str, int]]:
    """Each client request with the server request it started: the first arrival after its write, and the
    first request whose handler started after that arrival."""
    arrivals = sorted(marks["arrivals"])
    server = []
    for s in sorted((s for s in marks["requests"] if "handler" in s and "first_out" in s), key=lambda s: s["handler"]):
        got = _arrival(arrivals, s["handler"])
        if got is not None:
            server.append({**s, "req_in": got[0], "parsed": got[1]})
    out, j = [], 0
    for wrote, read in client:
        while j < len(server) and server[j]["req_in"] < wrote:
            j += 1
        if j == len(server):
            break
        s = server[j]
        if s["first_out"] <= read:
            out.append({**s, "client_write": wrote, "client_read": read})
    return out


def stage_table(rows: dict[str, list[dict[str, int]]]) -> str:
    names = list(rows)
    lines = [
        "| stage | " + " | ".join(f"{n} p50 | {n} p90" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]
    for label, a, b in [*STAGES, ("**client write to first byte**", "client_write", "client_read")]:
        cells = []
        for n in names:
            d = sorted((r[b] - r[a]) / 1000 for r in rows[n] if a in r and b in r)
            cells += [f"{statistics.median(d):.1f}", f"{d[int(0.9 * (len(d) - 1))]:.1f}"] if d else ["–", "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from benches.load import targets as T
    from benches.load.ab import config_for, features_on
    from benches.load.payloads import SSE_MODEL, chat_body
    from benches.load.procs import pin, require_tools, stop_all

    names = argv or ["on", "off"]
    reps, n = int(os.environ.get("REPS", "3")), int(os.environ.get("N", "300"))
    tools = require_tools(["nginx", "taskset"])
    tmp = Path(tempfile.mkdtemp(prefix="workjet-firstbyte-"))
    print(f"marks in {tmp}", file=sys.stderr)
    body = tmp / "body.json"
    body.write_bytes(chat_body(SSE_MODEL, True))
    outs = {name: tmp / f"marks-{name}.json" for name in names}
    client: dict[str, list[list[int]]] = {name: [] for name in names}
    try:
        direct = T.start_direct(tools["nginx"], tmp)
        upstream = direct.json_url.rsplit("/json/", 1)[0]
        serve_cmd = [sys.executable, "-m", "benches.load.firstbyte", "serve"]
        gateways = {
            name: T.start_gateway(
                f"fb-{name}",
                upstream,
                tmp,
                features_on(name),
                config=config_for(name),
                serve=serve_cmd,
                env={"FIRSTBYTE_OUT": str(outs[name]), "PYTHONPATH": str(ROOT)},  # the server runs in its data dir
            )
            for name in names
        }
        targets = {**gateways, "direct": direct}
        client["direct"] = []
        for r in range(reps):
            for name in [*names, "direct"] if r % 2 == 0 else ["direct", *names[::-1]]:
                g = targets[name]
                raw = tmp / f"client-{name}-{r}.json"
                argv2 = [sys.executable, "-m", "benches.load.ttfb", g.sse_url, str(body), str(n)]
                argv2 += [f"{k}: {v}" for k, v in g.headers.items()]
                env = {**os.environ, "TTFB_RAW": str(raw)}
                subprocess.run(
                    pin(T.DRIVER_CORE, argv2), capture_output=True, text=True, timeout=300, check=True, env=env
                )
                client[name] += json.loads(raw.read_text())
        for g in gateways.values():
            os.kill(g.proc.pid, signal.SIGUSR1)
        for name, out in outs.items():
            for _ in range(100):
                if out.exists():
                    break
                time.sleep(0.1)
            else:
                raise SystemExit(f"{name} wrote no marks to {out}")
    finally:
        stop_all()
    marks = {name: json.loads(outs[name].read_text()) for name in names}
    rows = {name: _join(client[name], marks[name]) for name in names}
    for name in names:
        print(f"{name}: {len(rows[name])} of {len(client[name])} requests matched", file=sys.stderr)
    print(stage_table(rows))
    floor = statistics.median(read - wrote for wrote, read in client["direct"]) / 1000
    print(f"\nfake upstream direct, client write to first byte: p50 {floor:.1f} µs ({len(client['direct'])} requests)")
    for name in names:
        total = statistics.median((r["client_read"] - r["client_write"]) / 1000 for r in rows[name])
        print(f"{name}: added over direct, p50 {total - floor:.1f} µs; {tail_note(marks[name])}")


def tail_note(marks: dict[str, Any]) -> str:
    """What the handler did after the stream's last byte, and whether the next request found it still at it."""
    done = sorted((r for r in marks["requests"] if "last_out" in r and "end" in r), key=lambda r: r["handler"])
    if len(done) < 2:
        return "no tail measured"
    tail = statistics.median((r["end"] - r["last_out"]) / 1000 for r in done)
    arrivals = sorted(marks["arrivals"])
    early = 0
    for prev, nxt in itertools.pairwise(done):
        got = _arrival(arrivals, nxt["handler"])
        early += got is not None and got[0] < prev["end"]
    return (
        f"after the last byte the handler ran {tail:.1f} µs more (p50); the next request arrived before that "
        f"ended in {100 * early / (len(done) - 1):.0f}% of requests"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2:])
    else:
        main(sys.argv[1:])
