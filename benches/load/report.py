"""benches/RESULTS.md sections from a run's raw JSON: ratios first, then tables, a chart, the profile.

Owns the sections `## Load benchmark (make bench-load)`, `## Upstream client` and `## Profile`; every other
section of RESULTS.md is left as it is. `python -m benches.load.report [results/latest.json]` rewrites them.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benches.load.targets import SYSTEMS

__all__ = ["replace_sections", "write_report"]

HERE = Path(__file__).parent
RESULTS_MD = HERE.parent / "RESULTS.md"
CHART = HERE / "results" / "chart.png"
LOAD, CLIENT, PROFILE = "## Load benchmark (make bench-load)", "## Upstream client", "## Profile"
ORDER = SYSTEMS
LABEL = {
    "direct": "fake upstream direct (floor)",
    "nginx-proxy": "nginx proxy_pass",
    "workjet-on": "**workjet, all features on**",
    "workjet-off": "workjet, features off",
    "workjet-on-aiohttp": "workjet, all features on, aiohttp client",
    "starlette-aiohttp": "Starlette + aiohttp pass-through",
    "starlette-native": "Starlette + workjet's HTTP/1.1 client",
    "starlette-httpx": "Starlette + httpx (default pool)",
    "starlette-httpx-tuned": "Starlette + httpx (Limits 256/256)",
    "litellm": "LiteLLM proxy, 1 worker",
}


# -- numbers --------------------------------------------------------------------------------------------
def _med(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs)) if runs else float("nan")


def _spread(runs: list[dict[str, Any]], key: str) -> tuple[float, float]:
    vals = [r[key] for r in runs]
    return (min(vals), max(vals)) if vals else (float("nan"), float("nan"))


def _runs(out: dict[str, Any], mode: str, conns: int, name: str) -> list[dict[str, Any]]:
    return list(out.get("load", {}).get(mode, {}).get(str(conns), {}).get(name, []))


def _rps(out: dict[str, Any], mode: str, conns: int, name: str) -> float:
    return _med(_runs(out, mode, conns, name), "rps")


def _ratio(a: float, b: float) -> str:
    if not (a == a and b == b) or b <= 0:
        return "n/a"
    return f"{a / b:.1f}x" if a / b < 100 else f"{a / b:.0f}x"


def _fmt_rps(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "–"
    lo, hi = _spread(runs, "rps")
    return f"{_med(runs, 'rps'):,.0f} [{lo:,.0f}–{hi:,.0f}]"


def _ms(x: float) -> str:
    if x != x:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _lat(runs: list[dict[str, Any]]) -> str:
    if not runs or all(r["requests"] == 0 for r in runs):
        return "–"
    return " / ".join(_ms(_med(runs, k)) for k in ("p50_ms", "p90_ms", "p99_ms"))


def _ttfb(out: dict[str, Any], name: str, key: str = "first_p50_ms") -> float:
    rs = out.get("ttfb", {}).get(name, [])
    return _med(rs, key)


# -- sections -------------------------------------------------------------------------------------------
def _header(out: dict[str, Any]) -> list[str]:
    m, s = out.get("machine", {}), out.get("settings", {})
    return [
        f"Run {m.get('date')} on {m.get('cpu')} ({m.get('cores')} cores, shared and noisy: load average "
        f"{m.get('loadavg_at_start')} at start), Linux {m.get('kernel')}, Python {m.get('python')}, commit "
        f"{m.get('commit')}, extension {m.get('extension', '?')}. `python -m benches.load.run`: "
        f"{s.get('duration')} s per wrk run, {s.get('repeats')} runs "
        "per point interleaved across systems (rotated order); the system under test is pinned to core 1, wrk, "
        "the nginx fake upstream and the TTFB client to core 0. Figures are the median of the runs, "
        "[min–max] the spread; latencies p50 / p90 / p99 in ms as wrk reports them (streams: whole stream). "
        f"Raw: `benches/load/results/latest.json`. Wall time {out.get('wall_seconds')} s.",
        "",
    ]


def load_section(out: dict[str, Any]) -> str:
    L = [LOAD, ""] + _header(out)
    names = [n for n in ORDER if any(n in c for m in out.get("load", {}).values() for c in m.values())]
    on = "workjet-on"
    L += ["### Ratios (same run)", "", "| | non-streaming | streaming |", "|---|---|---|"]
    for label, other in (
        ("LiteLLM", "litellm"),
        ("Starlette + aiohttp pass-through", "starlette-aiohttp"),
        ("nginx proxy_pass", "nginx-proxy"),
        ("workjet, features off", "workjet-off"),
    ):
        cells = [_ratio(_rps(out, m, 32, on), _rps(out, m, 32, other)) for m in ("json", "sse")]
        L.append(f"| workjet all-on vs {label}, req/s @32 | {cells[0]} | {cells[1]} |")
    cells = [_ratio(_rps(out, m, 32, "direct"), _rps(out, m, 32, on)) for m in ("json", "sse")]
    L.append(f"| fake upstream's own rate vs workjet all-on @32 (headroom) | {cells[0]} | {cells[1]} |")
    for k, lab in (("p50_ms", "p50"), ("p99_ms", "p99")):
        cells = [_ms(_med(_runs(out, m, 1, on), k) - _med(_runs(out, m, 1, "direct"), k)) for m in ("json", "sse")]
        L.append(f"| workjet all-on latency added over direct @1, {lab} (ms) | {cells[0]} | {cells[1]} |")
    L.append(
        f"| streaming time to first `data:` added over direct, p50 (ms) | | "
        f"{_ms(_ttfb(out, on) - _ttfb(out, 'direct'))} |"
    )
    L += [
        "",
        "### Against the issue's targets (reported, not tests)",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    rss_after = (
        out.get("soak", {}).get("rss_mb", [[0, float("nan")]])[-1][1]
        if out.get("soak")
        else out.get("memory", {}).get(on, {}).get("rss_after_mb", float("nan"))
    )
    checks = [
        (
            "all-on vs LiteLLM @32 (JSON)",
            ">= 50x",
            _rps(out, "json", 32, on) / _rps(out, "json", 32, "litellm")
            if _rps(out, "json", 32, "litellm") > 0
            else float("nan"),
            50.0,
            True,
            "x",
        ),
        (
            "all-on vs Starlette+aiohttp @32 (JSON)",
            ">= 1.25x",
            _rps(out, "json", 32, on) / _rps(out, "json", 32, "starlette-aiohttp"),
            1.25,
            True,
            "x",
        ),
        (
            "added p50 @1 (JSON)",
            "<= 0.3 ms",
            _med(_runs(out, "json", 1, on), "p50_ms") - _med(_runs(out, "json", 1, "direct"), "p50_ms"),
            0.3,
            False,
            " ms",
        ),
        (
            "added p99 @1 (JSON)",
            "<= 1.5 ms",
            _med(_runs(out, "json", 1, on), "p99_ms") - _med(_runs(out, "json", 1, "direct"), "p99_ms"),
            1.5,
            False,
            " ms",
        ),
        ("streaming TTFB added (p50)", "<= 0.3 ms", _ttfb(out, on) - _ttfb(out, "direct"), 0.3, False, " ms"),
        (
            "RSS per worker after " + ("the soak" if out.get("soak") else "~100k requests"),
            "<= 60 MB",
            rss_after,
            60.0,
            False,
            " MB",
        ),
    ]
    for what, goal, val, lim, higher, unit in checks:
        ok = "n/a" if val != val else ("yes" if (val >= lim if higher else val <= lim) else "**no**")
        shown = "n/a" if val != val else (f"{val:.2f}{unit}" if unit != "x" else f"{val:.1f}x")
        L.append(f"| {what} | {goal} | {shown} | {ok} |")
    for mode, title in (("json", "Non-streaming"), ("sse", "Streaming (20 chunks; latency = whole stream)")):
        L += [
            "",
            f"### {title}",
            "",
            "| system | req/s @1 | p50 / p90 / p99 @1 | req/s @32 | p50 / p90 / p99 @32 | errors |",
            "|---|---|---|---|---|---|",
        ]
        for n in names:
            r1, r32 = _runs(out, mode, 1, n), _runs(out, mode, 32, n)
            if not r1 and not r32:
                continue
            errs = sum(r["errors"] for r in r1 + r32)
            L.append(f"| {LABEL.get(n, n)} | {_fmt_rps(r1)} | {_lat(r1)} | {_fmt_rps(r32)} | {_lat(r32)} | {errs} |")
    if out.get("ttfb"):
        L += [
            "",
            "### Streaming time to first byte (1 connection, raw asyncio client)",
            "",
            "| system | first `data:` p50 | p90 | p99 | response head p50 | whole stream p50 | requests |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in names:
            rs = out["ttfb"].get(n)
            if rs:
                L.append(
                    f"| {LABEL.get(n, n)} | {_ms(_med(rs, 'first_p50_ms'))} | {_ms(_med(rs, 'first_p90_ms'))} "
                    f"| {_ms(_med(rs, 'first_p99_ms'))} | {_ms(_med(rs, 'head_p50_ms'))} | "
                    f"{_ms(_med(rs, 'total_p50_ms'))} | {len(rs)} x {rs[0]['n']} |"
                )
    L += [
        "",
        "### Memory (RSS of the server process and its children)",
        "",
        "| system | idle | after the memory run | requests served in total | memory run |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        idle = out.get("rss_idle_mb", {}).get(n)
        mem = out.get("memory", {}).get(n)
        if idle is None:
            continue
        if mem:
            L.append(
                f"| {LABEL.get(n, n)} | {idle:.1f} MB | {mem['rss_after_mb']:.1f} MB | "
                f"{mem['requests_total']:,} | {mem['requests_this_run']:,} requests in {mem['seconds']:.0f} s |"
            )
        else:
            L.append(f"| {LABEL.get(n, n)} | {idle:.1f} MB | – | – | – |")
    soak = out.get("soak")
    if soak:
        rss = soak["rss_mb"]
        L += [
            "",
            f"Soak (workjet all-on, 32 connections, JSON): {soak['seconds']} s, {soak['requests']:,} requests "
            f"({soak['rps']:,.0f} req/s, {soak['errors']} errors); RSS every 10 s: "
            + ", ".join(f"{v:.1f}" for _, v in rss)
            + " MB.",
        ]
    else:
        L += ["", "No soak in this run (`python -m benches.load.run --soak 600` for the 10-minute one)."]
    notes = dict(out.get("notes", {}))
    notes.update({k: f"unavailable: {v}" for k, v in out.get("unavailable", {}).items()})
    if notes:
        L += ["", "Notes: " + "; ".join(f"{k}: {v}" for k, v in notes.items()) + "."]
    L += _history()
    if CHART.exists():
        L += ["", "![req/s at 32 connections and p50 at 1 connection](load/results/chart.png)"]
    return "\n".join(L) + "\n"


def _history() -> list[str]:
    """One line per raw result in results/: how much the headline figures move from run to run."""
    rows = []
    for f in sorted((HERE / "results").glob("load-*.json")):
        try:
            o = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if o.get("settings", {}).get("repeats", 0) < 3 or not o.get("load"):
            continue  # smoke runs (--quick, a subset) say little about run-to-run spread
        on = _rps(o, "json", 32, "workjet-on")
        cells = [f"{on:,.0f}" if on == on else "–"]
        for other in ("workjet-off", "starlette-aiohttp", "nginx-proxy", "litellm"):
            v = _rps(o, "json", 32, other)
            cells.append(f"{v:,.0f} ({_ratio(on, v)})" if v == v else "–")
        m = o.get("machine", {})
        rows.append(f"| {m.get('date')} | {m.get('commit')} | " + " | ".join(cells) + " |")
    if len(rows) < 2:
        return []
    return [
        "",
        "### Run to run (non-streaming, req/s @32; in brackets workjet all-on relative to it)",
        "",
        "| run | commit | workjet all-on | features off | Starlette+aiohttp | nginx proxy | LiteLLM |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


# The upstream-client comparison: the pass-through with each client, then the gateway with each.
CLIENT_ROWS = (
    "starlette-aiohttp",
    "starlette-native",
    "starlette-httpx",
    "starlette-httpx-tuned",
    "workjet-on",
    "workjet-on-aiohttp",
)


def client_section(out: dict[str, Any]) -> str:
    L = [
        CLIENT,
        "",
        "The same minimal Starlette app (`benches/load/passthrough.py`: read the body, POST it upstream, return "
        "the answer) with each client, in the run above (same machine, same minute, interleaved):",
        "",
        "| client | req/s @1 | p50 / p90 / p99 @1 | req/s @32 | p50 / p90 / p99 @32 | vs aiohttp @32 |",
        "|---|---|---|---|---|---|",
    ]
    base = _rps(out, "json", 32, "starlette-aiohttp")
    for n in CLIENT_ROWS:
        r1, r32 = _runs(out, "json", 1, n), _runs(out, "json", 32, n)
        if r1 or r32:
            L.append(
                f"| {LABEL[n]} | {_fmt_rps(r1)} | {_lat(r1)} | {_fmt_rps(r32)} | {_lat(r32)} | "
                f"{_ratio(_rps(out, 'json', 32, n), base)} |"
            )
    a32, n32, h32, t32, on32, onaio32 = (_rps(out, "json", 32, n) for n in CLIENT_ROWS)
    a1, n1 = (_med(_runs(out, "json", 1, n), "p50_ms") for n in ("starlette-aiohttp", "starlette-native"))
    if n32 == n32 and a32 == a32:
        best = max(
            (v, k) for k, v in (("native", n32), ("aiohttp", a32), ("httpx", h32), ("httpx-tuned", t32)) if v == v
        )
        why = (
            f"At 32 connections the pass-through served {_ratio(n32, a32)} the requests with the gateway's own client "
            f"(`python/workjet_fast/providers/http1.py`: asyncio protocols + httptools) as with aiohttp, "
            f"{_ratio(a32, h32)} is aiohttp over httpx with its default pool and {_ratio(a32, t32)} over httpx with a "
            f"pool sized like ours; at 1 connection the p50 is {_ms(n1)} ms (native) against {_ms(a1)} ms (aiohttp). "
            f"Fastest here: {best[1]}. "
        )
        if on32 == on32 and onaio32 == onaio32:
            why += (
                f"Inside the gateway with every feature on, the native client gives {_ratio(on32, onaio32)} the "
                f"throughput of the same gateway with `http_client: aiohttp`. "
            )
        why += (
            "httpx's gap does not close with a larger pool, so it is per-request cost in the client (the pattern "
            "reported in encode/httpx#3215). The gateway uses the native client by default and keeps aiohttp "
            "selectable per provider (`http_client: aiohttp`) behind the same `HttpClient` interface."
        )
    else:
        why = (
            "This run did not measure both the native and the aiohttp pass-through: the choice in "
            "`python/workjet_fast/providers/http.py` should be re-measured before it is relied on."
        )
    L += ["", why, ""]
    return "\n".join(L) + "\n"


def profile_section(out: dict[str, Any]) -> str:
    L = [PROFILE, ""]
    profs = out.get("profile") or {}
    if not profs:
        L += ["No profile in this run (`--profile SECONDS`, needs py-spy in .venv).", ""]
        return "\n".join(L) + "\n"
    L += [
        "py-spy (200 Hz, nonblocking; `--native` when it works) on the workjet all-on worker under wrk at 32 "
        "connections. Time in Rust or C is charged to the Python line that called it. Speedscope files: "
        + ", ".join(f"`benches/load/results/{p['file']}`" for p in profs.values() if "file" in p)
        + ".",
        "",
    ]
    for mode, p in profs.items():
        if "self" not in p:
            continue
        title = "non-streaming" if mode == "json" else "streaming"
        busy = ", ".join(f"{k} {v}%" for k, v in p.get("threads_busy_pct", {}).items())
        L += [
            f"### {title} ({p.get('rps_while_profiling') or 0:,.0f} req/s while sampled; threads busy: {busy})",
            "",
            "Shares are of wall time (100% = one core); `[thread]` marks work off the event-loop thread.",
            "",
            "| self time by package | % |",
            "|---|---|",
        ]
        L += [f"| {k} | {v} |" for k, v in p["self_by_package"][:12]]
        L += ["", "| function (self) | % |", "|---|---|"]
        L += [f"| `{k}` | {v} |" for k, v in p["self"][:15]]
        ours = [(k, v) for k, v in p["inclusive"] if "workjet_fast" in k][:12]
        if ours:
            L += ["", "| workjet function (inclusive) | % |", "|---|---|"]
            L += [f"| `{k}` | {v} |" for k, v in ours]
        L.append("")
    return "\n".join(L) + "\n"


# -- chart and file -------------------------------------------------------------------------------------
def chart(out: dict[str, Any]) -> str | None:
    try:
        import matplotlib
    except ImportError:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], capture_output=True)
        if r.returncode != 0:
            return "matplotlib not installable: no chart"
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for col, mode in enumerate(("json", "sse")):
        names = [n for n in ORDER if _runs(out, mode, 32, n)]
        for row, (conns, key, ylabel) in enumerate(
            ((32, "rps", "req/s @32 conns (log)"), (1, "p50_ms", "p50 ms @1 conn (log)"))
        ):
            ax = axes[row][col]
            vals = [_med(_runs(out, mode, conns, n), key) for n in names]
            lo = [v - _spread(_runs(out, mode, conns, n), key)[0] for n, v in zip(names, vals, strict=True)]
            hi = [_spread(_runs(out, mode, conns, n), key)[1] - v for n, v in zip(names, vals, strict=True)]
            colors = ["#d62728" if n.startswith("workjet") else "#7f7f7f" for n in names]
            ax.bar(range(len(names)), [max(v, 1e-3) for v in vals], yerr=[lo, hi], color=colors, capsize=3)
            ax.set_yscale("log")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(ylabel)
            ax.set_title(("non-streaming" if mode == "json" else "streaming") + f", {conns} conn")
            for i, v in enumerate(vals):
                ax.annotate(
                    f"{v:,.0f}" if key == "rps" else f"{v:.2f}", (i, max(v, 1e-3)), ha="center", va="bottom", fontsize=7
                )
    fig.suptitle(f"Workjet load benchmark {out.get('machine', {}).get('date', '')} (median of runs, bars: min–max)")
    fig.tight_layout()
    CHART.parent.mkdir(exist_ok=True)
    fig.savefig(CHART, dpi=90)
    plt.close(fig)
    return None


def replace_sections(text: str, sections: dict[str, str]) -> str:
    """Replace each `## heading` section (up to the next `## `) whose heading is a key; append missing ones."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    done: set[str] = set()
    skipping = False
    for line in lines:
        if line.startswith("## "):
            head = line.rstrip("\n")
            skipping = head in sections
            if skipping:
                out.append(sections[head] + "\n")
                done.add(head)
                continue
        if not skipping:
            out.append(line)
    result = "".join(out)
    for head, body in sections.items():
        if head not in done:
            result = result.rstrip("\n") + ("\n\n" if result.strip() else "") + body + "\n"
    return result.rstrip("\n") + "\n"


def write_report(out: dict[str, Any]) -> None:
    from benches.load.profile import summarize

    for p in (out.get("profile") or {}).values():  # re-read: the summary may have improved since the run
        f = HERE / "results" / str(p.get("file", ""))
        if p.get("file") and f.exists():
            p.update(summarize(f))
    note = chart(out)
    if note:
        out.setdefault("notes", {})["chart"] = note
    sections = {LOAD: load_section(out), CLIENT: client_section(out), PROFILE: profile_section(out)}
    current = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    RESULTS_MD.write_text(replace_sections(current, sections))


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "latest.json"
    write_report(json.loads(src.read_text()))
    print(f"wrote {RESULTS_MD}")
