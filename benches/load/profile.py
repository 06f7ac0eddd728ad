"""py-spy on a server worker under load: record a speedscope profile, summarize the top costs."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from benches.load.procs import BenchError, pin

__all__ = ["record", "summarize"]


def record(py_spy: str, pid: int, seconds: int, out: Path, core: int, native: bool) -> None:
    argv = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "200",
        "--format",
        "speedscope",
        "--output",
        str(out),
        "--nonblocking",
    ]
    if native:
        argv.append("--native")
    r = subprocess.run(pin(core, argv), capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0 or not out.exists():
        raise BenchError(f"py-spy failed ({r.returncode}): {r.stderr.strip()[-500:]}")


def _label(frame: dict[str, object]) -> str:
    file = str(frame.get("file") or "")
    for marker in ("site-packages/", "python/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{frame.get('name')} ({file}:{frame.get('line', '')})" if file else str(frame.get("name"))


def summarize(path: Path, top: int = 15) -> dict[str, object]:
    """Per function and per package, the share of wall time (100% = one core busy) spent in it, over all threads;
    functions on threads other than the event loop's are tagged with the thread name."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    module_c: Counter[str] = Counter()
    threads: dict[str, float] = {}
    duration = 0.0
    for prof in doc["profiles"]:
        name = str(prof.get("name", ""))
        thread = name.split('"')[1] if name.count('"') >= 2 else name
        tag = "" if thread == "MainThread" else f"[{thread}] "
        busy = 0.0
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            if not stack:
                continue
            busy += weight
            labels = [_label(frames[i]) for i in stack]
            self_c[tag + labels[-1]] += weight
            for lab in set(labels):
                if not _entry(lab):
                    incl_c[tag + lab] += weight
            module_c[tag + _module(frames[stack[-1]])] += weight
        threads[thread] = busy
        duration = max(duration, float(prof.get("endValue", 0)) - float(prof.get("startValue", 0)))
    duration = duration or max(threads.values(), default=0.0) or 1.0

    def rows(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / duration, 1)) for k, v in c.most_common(top)]

    return {
        "seconds": round(duration, 2),
        "threads_busy_pct": {k: round(100 * v / duration, 1) for k, v in threads.items()},
        "self": rows(self_c),
        "inclusive": rows(incl_c),
        "self_by_package": rows(module_c),
    }


def _entry(label: str) -> bool:
    # Frames every sample of the loop thread passes through: they say nothing about where the time goes.
    return any(
        x in label
        for x in (
            "workjet_fast/cli.py",
            "workjet_fast/server.py",
            "asyncio/runners.py",
            "asyncio/base_events.py",
            "uvicorn/main.py",
            "uvicorn/server.py",
        )
    )


def _module(frame: dict[str, object]) -> str:
    file = str(frame.get("file") or "")
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/workjet_fast/" in file:
        return "workjet_fast." + file.split("/workjet_fast/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "lib/python3" in file:
        return "stdlib:" + file.split("lib/python3", 1)[1].split("/", 2)[1]
    return file or str(frame.get("name"))
