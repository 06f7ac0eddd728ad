"""The server load benchmark: `make bench-load` or `python -m benches.load.run [--quick] [--soak 600]`.

Starts an nginx fake upstream, every system under test (targets.py) side by side, drives each with wrk
(1 and 32 connections, JSON and streaming, each point repeated and interleaved across systems), measures
streaming time-to-first-byte, RSS at idle and after ~100k requests, and profiles the gateway with py-spy.
Raw figures go to benches/load/results/*.json; the tables and chart to benches/RESULTS.md.
Every process it starts is in its own process group and is stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benches.load import profile as prof
from benches.load.payloads import JSON_MODEL, SSE_MODEL, chat_body
from benches.load.procs import BenchError, require_tools, rss_bytes, stop_all
from benches.load.targets import (
    DRIVER_CORE,
    ROOT,
    SYSTEMS,
    Target,
    start_direct,
    start_gateway,
    start_litellm,
    start_nginx_proxy,
    start_passthrough,
)
from benches.load.wrk import run_wrk

RESULTS = Path(__file__).with_name("results")
ALL = SYSTEMS
JSON_ONLY = {"starlette-httpx", "starlette-httpx-tuned"}  # upstream-client candidates: the JSON path is the question


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benches.load.run", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="runs per point, interleaved across systems (default 3)")
    p.add_argument("--connections", default="1,32", help="comma list (default 1,32)")
    p.add_argument("--modes", default="json,sse", help="json,sse (default both)")
    p.add_argument("--targets", default=",".join(ALL), help=f"comma list from {','.join(ALL)}")
    p.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (no install, no run)")
    p.add_argument("--ttfb-n", type=int, default=300, help="streaming requests per TTFB measurement (default 300)")
    p.add_argument("--mem-requests", type=int, default=100_000, help="requests before the RSS reading (100k)")
    p.add_argument("--mem-max-seconds", type=float, default=240, help="cap on the memory run per system (240)")
    p.add_argument("--profile", type=int, default=10, help="py-spy seconds on workjet-on under load; 0: skip")
    p.add_argument("--soak", type=int, default=0, help="soak workjet-on this many seconds, RSS every 10 s")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 2 s, no memory run, no profile")
    p.add_argument("--no-report", action="store_true", help="raw JSON only; leave benches/RESULTS.md alone")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.duration, a.mem_requests, a.profile, a.ttfb_n = 1, 2.0, 0, 0, 100
    return a


class Bench:
    def __init__(self, a: argparse.Namespace, tools: dict[str, str], tmp: Path) -> None:
        self.a, self.tools, self.tmp = a, tools, tmp
        self.targets: list[Target] = []
        self.unavailable: dict[str, str] = {}
        self.bodies = {"json": tmp / "body-json.json", "sse": tmp / "body-sse.json"}
        self.bodies["json"].write_bytes(chat_body(JSON_MODEL, False))
        self.bodies["sse"].write_bytes(chat_body(SSE_MODEL, True))
        self.out: dict[str, Any] = {"load": {}, "ttfb": {}, "rss_idle_mb": {}, "memory": {}, "notes": {}}

    # -- setup ------------------------------------------------------------------------------------------
    def start(self, wanted: list[str]) -> None:
        direct = start_direct(self.tools["nginx"], self.tmp)
        self.upstream = direct.json_url.split("/json/", 1)[0]
        up_port = int(self.upstream.rsplit(":", 1)[1])
        starters = {
            "direct": lambda: direct,
            "nginx-proxy": lambda: start_nginx_proxy(self.tools["nginx"], self.tmp, up_port),
            "workjet-on": lambda: start_gateway("workjet-on", self.upstream, self.tmp, True),
            "workjet-off": lambda: start_gateway("workjet-off", self.upstream, self.tmp, False),
            "workjet-on-aiohttp": lambda: start_gateway("workjet-on-aiohttp", self.upstream, self.tmp, True, "aiohttp"),
            "starlette-native": lambda: start_passthrough("native", self.upstream, self.tmp),
            "starlette-aiohttp": lambda: start_passthrough("aiohttp", self.upstream, self.tmp),
            "starlette-httpx": lambda: start_passthrough("httpx", self.upstream, self.tmp),
            "starlette-httpx-tuned": lambda: start_passthrough("httpx-tuned", self.upstream, self.tmp),
            "litellm": lambda: start_litellm(self.upstream, self.tmp),
        }
        for name in wanted:
            print(f"starting {name}", file=sys.stderr, flush=True)
            try:
                t = starters[name]()
            except BenchError as e:
                if name != "litellm":
                    raise
                self.unavailable[name] = str(e).splitlines()[0][:300]
                print(f"warning: {name} unavailable: {e}", file=sys.stderr)
                continue
            if name in JSON_ONLY:
                t.modes = ("json",)
            if t.note:
                self.out["notes"][name] = t.note
            self.targets.append(t)
        time.sleep(1)
        for t in self.targets:
            if t.name != "direct":
                self.out["rss_idle_mb"][t.name] = rss_bytes(t.proc.pid) / 2**20

    def wrk(self, t: Target, mode: str, conns: int, seconds: float) -> dict[str, Any]:
        return run_wrk(
            self.tools["wrk"], t.url(mode), self.bodies[mode], t.headers, conns, seconds, DRIVER_CORE
        ).to_dict()

    def _wrk_into(self, holder: dict[str, Any], t: Target, mode: str, conns: int, seconds: float) -> None:
        holder.update(self.wrk(t, mode, conns, seconds))

    # -- phases -----------------------------------------------------------------------------------------
    def load(self) -> None:
        conns = [int(c) for c in self.a.connections.split(",")]
        for mode in self.a.modes.split(","):
            ts = [t for t in self.targets if mode in t.modes]
            for t in ts:  # warm-up: pools filled, caches hot
                self.wrk(t, mode, max(conns), 1)
            for c in conns:
                runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in ts}
                for rep in range(self.a.repeats):
                    order = ts[rep % len(ts) :] + ts[: rep % len(ts)]  # rotate so no system always goes first
                    for t in order:
                        r = self.wrk(t, mode, c, self.a.duration)
                        runs[t.name].append(r)
                        print(
                            f"{mode:4} c={c:<2} rep {rep + 1} {t.name:22} {r['rps']:9.0f} req/s  p50 "
                            f"{r['p50_ms']:.3f}  p99 {r['p99_ms']:.3f} ms  errors {r['errors']}",
                            file=sys.stderr,
                            flush=True,
                        )
                for name, rs in runs.items():
                    self.out["load"].setdefault(mode, {}).setdefault(str(c), {})[name] = rs

    def ttfb(self) -> None:
        ts = [t for t in self.targets if "sse" in t.modes]
        res: dict[str, list[dict[str, float]]] = {t.name: [] for t in ts}
        for rep in range(self.a.repeats):
            for t in ts:
                n = self.a.ttfb_n if t.name != "litellm" else max(30, self.a.ttfb_n // 5)
                argv = [
                    sys.executable,
                    "-m",
                    "benches.load.ttfb",
                    t.sse_url,
                    str(self.bodies["sse"]),
                    str(n),
                    *(f"{k}: {v}" for k, v in t.headers.items()),
                ]
                from benches.load.procs import pin

                r = subprocess.run(pin(DRIVER_CORE, argv), capture_output=True, text=True, timeout=300, cwd=ROOT)
                if r.returncode != 0:
                    raise BenchError(f"ttfb client failed on {t.name}: {r.stderr[-800:]}")
                res[t.name].append(json.loads(r.stdout))
                print(
                    f"ttfb rep {rep + 1} {t.name:22} first data p50 {res[t.name][-1]['first_p50_ms']:.3f} ms",
                    file=sys.stderr,
                    flush=True,
                )
        self.out["ttfb"] = res

    def memory(self) -> None:
        """RSS after `mem_requests` requests in total (load phase included), topped up at 32 connections (JSON)
        for a duration computed from the measured rate; capped (LiteLLM at a tenth of our rate cannot get there)."""
        rates = self.out["load"].get("json", {}).get("32", {})
        for t in self.targets:
            if t.name not in ("workjet-on", "starlette-aiohttp", "litellm"):
                continue
            served = sum(
                x["requests"] for m in self.out["load"].values() for c in m.values() for x in c.get(t.name, [])
            )
            rate = statistics.median(r["rps"] for r in rates[t.name]) if t.name in rates else 1000.0
            cap = self.a.mem_max_seconds if t.name != "litellm" else min(60.0, self.a.mem_max_seconds)
            secs = min(cap, max(5.0, 1.1 * (self.a.mem_requests - served) / max(rate, 1.0)))
            before = rss_bytes(t.proc.pid) / 2**20
            r = self.wrk(t, "json", 32, secs)
            spent, total = secs, r["requests"]
            while served + total < self.a.mem_requests and spent < cap - 5:  # the rate under load was lower
                more = min(cap - spent, max(5.0, 1.2 * (self.a.mem_requests - served - total) / max(r["rps"], 1.0)))
                r2 = self.wrk(t, "json", 32, more)
                spent, total = spent + more, total + r2["requests"]
                r = {**r2, "errors": r["errors"] + r2["errors"], "requests": total}
            secs = spent
            time.sleep(1)
            after = rss_bytes(t.proc.pid) / 2**20
            self.out["memory"][t.name] = {
                "seconds": secs,
                "requests_this_run": r["requests"],
                "requests_total": served + r["requests"],
                "rss_before_mb": before,
                "rss_after_mb": after,
                "errors": r["errors"],
            }
            print(
                f"memory {t.name:22} {served + r['requests']} requests in total: RSS {before:.1f} -> {after:.1f} MB",
                file=sys.stderr,
                flush=True,
            )

    def profile(self) -> None:
        t = next((t for t in self.targets if t.name == "workjet-on"), None)
        py_spy = str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).exists():  # a measurement tool, not a project dependency
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], capture_output=True, timeout=300)
        if t is None or not Path(py_spy).exists():
            self.out["notes"]["profile"] = "skipped: py-spy not installed (.venv/bin/pip install py-spy)"
            return
        for mode in self.a.modes.split(","):
            out = RESULTS / f"profile-workjet-on-{mode}.speedscope.json"
            holder: dict[str, Any] = {}
            load = threading.Thread(target=self._wrk_into, args=(holder, t, mode, 32, self.a.profile + 4))
            load.start()
            time.sleep(1.5)
            try:
                try:
                    prof.record(py_spy, t.proc.pid, self.a.profile, out, DRIVER_CORE, native=True)
                except BenchError:
                    prof.record(py_spy, t.proc.pid, self.a.profile, out, DRIVER_CORE, native=False)
                self.out.setdefault("profile", {})[mode] = {**prof.summarize(out), "file": out.name}
            except BenchError as e:
                self.out["notes"][f"profile-{mode}"] = f"py-spy failed: {e}"
            finally:
                load.join()
            self.out.setdefault("profile", {}).setdefault(mode, {})["rps_while_profiling"] = holder.get("rps")

    def soak(self, seconds: int) -> None:
        t = next(t for t in self.targets if t.name == "workjet-on")
        samples: list[tuple[float, float]] = [(0.0, rss_bytes(t.proc.pid) / 2**20)]
        holder: dict[str, Any] = {}
        load = threading.Thread(target=self._wrk_into, args=(holder, t, "json", 32, seconds))
        t0 = time.monotonic()
        load.start()
        while load.is_alive():
            load.join(10)
            samples.append((round(time.monotonic() - t0, 1), rss_bytes(t.proc.pid) / 2**20))
        self.out["soak"] = {
            "seconds": seconds,
            "requests": holder.get("requests"),
            "rps": holder.get("rps"),
            "errors": holder.get("errors"),
            "rss_mb": samples,
        }
        print(
            f"soak {seconds}s: {holder.get('requests')} requests, RSS {samples[0][1]:.1f} -> {samples[-1][1]:.1f} MB",
            file=sys.stderr,
            flush=True,
        )


def machine() -> dict[str, str]:
    cpu = ""
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "python", "rust"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split("\n")
    load = os.getloadavg()
    try:  # which build of the extension ran: `make bench-load` installs the release (LTO) build first
        import workjet_fast._workjet_fast as ext

        st = Path(str(ext.__file__)).stat()
        extension = f"{st.st_size / 2**20:.0f} MB, built {time.strftime('%H:%M UTC', time.gmtime(st.st_mtime))}"
    except (ImportError, OSError):
        extension = "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit.stdout.strip()
        + (f" + {sum(1 for x in dirty if x.strip())} modified files" if any(x.strip() for x in dirty) else ""),
        "loadavg_at_start": f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        "extension": extension,
    }


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below on kill
    wanted = [n.strip() for n in a.targets.split(",") if n.strip()]
    if a.no_litellm and "litellm" in wanted:
        wanted.remove("litellm")
    if "direct" not in wanted:
        wanted.insert(0, "direct")
    tools = require_tools(["wrk", "nginx", "taskset"])
    RESULTS.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="workjet-bench-"))
    bench = Bench(a, tools, tmp)
    bench.out["machine"] = machine()
    bench.out["settings"] = {k: v for k, v in vars(a).items()}
    started = time.monotonic()
    try:
        bench.start(wanted)
        bench.out["unavailable"] = bench.unavailable
        bench.load()
        if a.ttfb_n and "sse" in a.modes:
            bench.ttfb()
        if a.mem_requests:
            bench.memory()
        if a.profile:
            bench.profile()
        if a.soak:
            bench.soak(a.soak)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        bench.out["wall_seconds"] = round(time.monotonic() - started)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        raw = json.dumps(bench.out, indent=1)
        (RESULTS / f"load-{stamp}.json").write_text(raw)
        (RESULTS / "latest.json").write_text(raw)
        if a.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if not a.no_report:
        from benches.load.report import write_report

        write_report(bench.out)
    print(
        f"done in {bench.out['wall_seconds']} s: benches/load/results/latest.json, benches/RESULTS.md", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
