"""Processes the benchmark starts: pinned with taskset, each in its own process group, all stopped at exit."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Proc", "free_port", "pin", "require_tools", "rss_bytes", "stop_all"]

_started: list[Proc] = []
NCPU = os.cpu_count() or 1


class BenchError(RuntimeError):
    """A setup problem the benchmark cannot work around (missing tool, process that will not start)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int, argv: Sequence[str]) -> list[str]:
    """`taskset -c core argv` (taskset execs, so the pid is the program's); unpinned on a 1-core machine."""
    if NCPU < 2 or shutil.which("taskset") is None:
        return list(argv)
    return ["taskset", "-c", str(core % NCPU), *argv]


class Proc:
    """A started process in its own session; `stop()` signals the whole group."""

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        _started.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 30.0, headers: dict[str, str] | None = None) -> None:
        """Until `url` answers with any status < 500, or raise with the log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            try:
                req = urllib.request.Request(url, headers=headers or {})
                with urllib.request.urlopen(req, timeout=1) as r:
                    if r.status < 500:
                        return
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer {url} within {timeout:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        # Children that left the group (none expected) would survive; the group kill covers uvicorn/nginx.
        if self in _started:
            _started.remove(self)


def stop_all() -> None:
    for p in reversed(list(_started)):
        try:
            p.stop()
        except Exception as e:  # keep stopping the others
            print(f"warning: stopping {p.name}: {e}", file=sys.stderr)


atexit.register(stop_all)


def rss_bytes(pid: int, with_children: bool = True) -> int:
    """Resident set size of `pid` (and its descendants: a server that forks workers is counted whole)."""
    total = _rss(pid)
    if with_children:
        for child in _descendants(pid):
            total += _rss(child)
    return total


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            kids = [int(x) for x in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        for k in kids:
            out += [k, *_descendants(k)]
    return out


def require_tools(names: Sequence[str]) -> dict[str, str]:
    """Paths of the tools; missing ones are installed with apt-get when running as root, else a clear error."""
    apt = {"wrk": "wrk", "nginx": "nginx-light", "taskset": "util-linux"}
    found: dict[str, str] = {}
    missing = [n for n in names if not _which(n)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        pkgs = sorted({apt.get(n, n) for n in missing})
        print(f"installing {' '.join(pkgs)} with apt-get", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], check=False, env=env, timeout=900)
        missing = [n for n in names if not _which(n)]
    if missing:
        hint = " ".join(sorted({apt.get(n, n) for n in missing}))
        raise BenchError(f"missing tools: {', '.join(missing)}; install them (Debian: apt-get install {hint})")
    for n in names:
        found[n] = _which(n) or n
    return found


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )
