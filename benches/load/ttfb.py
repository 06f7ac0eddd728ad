"""Time to first byte of a stream, over one keep-alive connection: `python -m benches.load.ttfb URL BODY N`.

A raw asyncio HTTP/1.1 client (no client library in the measurement). For each request it records the time
from the last byte written to the response's first byte (`head`) and to the first `data:` byte (`first`),
and to the end of the body (`total`). Prints one JSON object with the medians and p90/p99 in milliseconds;
with `TTFB_RAW=FILE`, also writes each request's write and first-`data:` times there (benches/load/firstbyte.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from urllib.parse import urlsplit


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def _one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes, raw: list[tuple[int, int]]
) -> tuple[float, float, float]:
    wrote = time.perf_counter()
    writer.write(req)
    await writer.drain()
    t0 = time.perf_counter()
    buf = await reader.read(65536)
    if not buf:
        raise ConnectionError("closed")
    t_head = time.perf_counter() - t0
    t_first = t_head if b"data:" in buf else -1.0
    while b"\r\n\r\n" not in buf:
        buf += await reader.read(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].split(b" ")[1].startswith(b"2"):
        raise RuntimeError(f"status {lines[0]!r}: {rest[:300]!r}")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines[1:])}
    n = int(hdrs[b"content-length"]) if b"content-length" in hdrs else None
    # Content-Length: read that many bytes; chunked: read until the last chunk.
    while (len(rest) < n) if n is not None else not rest.endswith(b"0\r\n\r\n"):
        more = await reader.read(65536)
        if not more:
            raise ConnectionError("closed mid-body")
        if t_first < 0 and b"data:" in more:
            t_first = time.perf_counter() - t0
        rest += more
    if t_first < 0 and b"data:" in rest:
        t_first = t_head
    raw.append((round(wrote * 1e9), round((t0 + t_first) * 1e9)))
    return t_head, t_first, time.perf_counter() - t0


async def measure(
    url: str, body: bytes, n: int, headers: dict[str, str], warmup: int = 50, raw: list[tuple[int, int]] | None = None
) -> dict[str, float]:
    """`raw`, if given, gets per measured request when it was written and when its first `data:` byte came
    back, as perf_counter nanoseconds (the machine's monotonic clock, comparable across processes)."""
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    def request(i: int) -> bytes:  # a new question each time, as post.lua does
        b = body.replace(b"#N#", str(i).encode())
        head = (
            f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(b)}\r\n\r\n"
        )
        return head.encode() + b

    heads, firsts, totals = [], [], []
    stamps: list[tuple[int, int]] = []
    try:
        for i in range(warmup + n):
            h, f, t = await _one(reader, writer, request(i), stamps)
            if i >= warmup:
                heads.append(h * 1000)
                firsts.append(f * 1000)
                totals.append(t * 1000)
    finally:
        writer.close()
    if raw is not None:
        raw.extend(stamps[warmup:])
    return {
        "n": n,
        "head_p50_ms": statistics.median(heads),
        "first_p50_ms": statistics.median(firsts),
        "first_p90_ms": _pct(firsts, 90),
        "first_p99_ms": _pct(firsts, 99),
        "total_p50_ms": statistics.median(totals),
    }


def main() -> None:
    url, body_file, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    headers = dict(h.split(": ", 1) for h in sys.argv[4:])
    with open(body_file, "rb") as f:
        body = f.read()
    raw: list[tuple[int, int]] = []
    print(json.dumps(asyncio.run(measure(url, body, n, headers, raw=raw))))
    if os.environ.get("TTFB_RAW"):  # benches/load/firstbyte.py joins these with the gateway's own stamps
        with open(os.environ["TTFB_RAW"], "w") as f:
            json.dump(raw, f)


if __name__ == "__main__":
    main()
