"""One wrk run: fixed duration and connection count, our Lua script, the JSON line it prints."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benches.load.procs import BenchError, pin

__all__ = ["WrkResult", "run_wrk"]

LUA = Path(__file__).with_name("post.lua")


@dataclass
class WrkResult:
    rps: float
    requests: int
    errors: int  # socket errors + non-2xx/3xx answers + timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def run_wrk(
    wrk: str, url: str, body_file: Path, headers: dict[str, str], connections: int, seconds: float, core: int
) -> WrkResult:
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(body_file),
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    try:
        out = subprocess.run(pin(core, argv), capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from None
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise BenchError(f"wrk printed no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    d = json.loads(line[len("WRK_JSON ") :])
    secs = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    return WrkResult(
        rps=d["requests"] / secs if secs else 0.0,
        requests=d["requests"],
        errors=errors,
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
    )
