"""The systems under test, each started pinned and reachable by URL; all answer the same two requests.

- `direct`: the fake upstream itself (nginx, core 0 beside wrk): the floor.
- `nginx-proxy`: nginx proxy_pass with keep-alive to the fake: a proxy hop at its best.
- `workjet-on`: auth, DLP, rate limits (memory, high limits), audit on SQLite, JSON access log.
- `workjet-off`: auth only (audit disabled, no limits, DLP off, access log off).
- `workjet-on-aiohttp`: `workjet-on` with `http_client: aiohttp` (the upstream client it replaced).
- `starlette-aiohttp`, `starlette-native`, `starlette-httpx`, `starlette-httpx-tuned`: minimal pass-through apps
  (passthrough.py); `native` is the gateway's own HTTP/1.1 client.
- `litellm`: LiteLLM proxy from PyPI in its own virtualenv, 1 worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benches.load.payloads import JSON_MODEL, SSE_MODEL
from benches.load.procs import BenchError, Proc, free_port, pin

__all__ = ["Target", "start_direct", "start_gateway", "start_litellm", "start_nginx_proxy", "start_passthrough"]

ROOT = Path(__file__).resolve().parents[2]
# Every system, in the order runs and reports list them.
SYSTEMS = [
    "direct",
    "nginx-proxy",
    "workjet-on",
    "workjet-off",
    "workjet-on-aiohttp",
    "starlette-aiohttp",
    "starlette-native",
    "starlette-httpx",
    "starlette-httpx-tuned",
    "litellm",
]
GATEWAY_CORE, DRIVER_CORE = 1, 0


@dataclass
class Target:
    name: str
    proc: Proc
    json_url: str
    sse_url: str
    headers: dict[str, str] = field(default_factory=dict)
    modes: tuple[str, ...] = ("json", "sse")
    note: str = ""

    def url(self, mode: str) -> str:
        return self.json_url if mode == "json" else self.sse_url


def start_direct(nginx: str, tmp: Path) -> Target:
    from benches.load.nginx import fake_upstream_conf

    port = free_port()
    conf = tmp / "fake.conf"
    conf.write_text(fake_upstream_conf(tmp, port))
    proc = Proc(
        "fake upstream (nginx)",
        pin(DRIVER_CORE, [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "fake.stderr.log")]),
        tmp / "fake.log",
    )
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/json/v1/chat/completions", 10)
    return Target("direct", proc, base + "/json/v1/chat/completions", base + "/sse/v1/chat/completions")


def start_nginx_proxy(nginx: str, tmp: Path, upstream_port: int) -> Target:
    from benches.load.nginx import proxy_conf

    port = free_port()
    conf = tmp / "proxy.conf"
    conf.write_text(proxy_conf(tmp, port, upstream_port))
    proc = Proc(
        "nginx proxy",
        pin(GATEWAY_CORE, [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "proxy.stderr.log")]),
        tmp / "proxy.log",
    )
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/json/v1/chat/completions", 10)
    return Target("nginx-proxy", proc, base + "/json/v1/chat/completions", base + "/sse/v1/chat/completions")


def gateway_config(upstream: str, data: Path, port: int, features: bool, http_client: str = "native") -> str:
    text = f"""
        server:
          host: 127.0.0.1
          port: {port}
          workers: 1
          data_dir: {data}
          access_log: {str(features).lower()}
        storage:
          url: sqlite:///{data}/workjet.db
        providers:
          fake_json: {{type: openai, base_url: {upstream}/json/v1, api_key: sk-upstream, max_connections: 256,
                      http_client: {http_client}}}
          fake_sse: {{type: openai, base_url: {upstream}/sse/v1, api_key: sk-upstream, max_connections: 256,
                     http_client: {http_client}}}
        models:
          {JSON_MODEL}: {{provider: fake_json, model: bench}}
          {SSE_MODEL}: {{provider: fake_sse, model: bench}}
        audit:
          enabled: {str(features).lower()}
        dlp:
          enabled: {str(features).lower()}
        """
    if features:
        text += """
        limits:
          backend: memory
          default: {rpm: 1000000000, tpm: 1000000000000, concurrency: 1000000}
        """
    return textwrap.dedent(text)


def start_gateway(
    name: str,
    upstream: str,
    tmp: Path,
    features: bool,
    http_client: str = "native",
    *,
    config: Callable[..., str] | None = None,
    serve: Sequence[str] | None = None,
    env: dict[str, str] | None = None,
) -> Target:
    """`config`: instead of `gateway_config` (same arguments); `serve`: the command that takes `--config` and
    `--port` instead of `workjet serve`; `env`: added to the server's environment."""
    workjet = str(Path(sys.executable).parent / "workjet")
    data = tmp / name
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = data / "workjet.yaml"
    text = (config or gateway_config)(upstream, data, port, features, http_client)
    cfg.write_text(text)
    check = subprocess.run([workjet, "config", "check", str(cfg)], capture_output=True, text=True, timeout=60)
    note = ""
    if check.returncode != 0 and "dlp" in (check.stdout + check.stderr):
        # DLP is being wired: run without the section if this build does not accept it, and say so.
        cfg.write_text(text.replace(f"dlp:\n  enabled: {str(features).lower()}\n", ""))
        note = "dlp section not accepted by this build: DLP default"
    key = subprocess.run(
        [workjet, "keys", "create", "--name", "bench", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=data,
    )
    if key.returncode != 0 or not key.stdout.strip():
        raise BenchError(f"workjet keys create failed:\n{key.stdout}\n{key.stderr}")
    proc = Proc(
        name,
        pin(GATEWAY_CORE, [*(serve or [workjet, "serve"]), "--config", str(cfg), "--port", str(port)]),
        data / "gateway.log",
        env=env,
        cwd=data,
    )
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/healthz", 30)
    url = base + "/v1/chat/completions"
    return Target(name, proc, url, url, {"Authorization": f"Bearer {key.stdout.strip().splitlines()[-1]}"}, note=note)


def start_passthrough(client: str, upstream: str, tmp: Path) -> Target:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "benches.load.passthrough",
        "--client",
        client,
        "--upstream",
        upstream,
        "--port",
        str(port),
    ]
    proc = Proc(f"starlette-{client}", pin(GATEWAY_CORE, argv), tmp / f"starlette-{client}.log", cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/healthz", 30)
    url = base + "/v1/chat/completions"
    return Target(f"starlette-{client}", proc, url, url)


LITELLM_VENV = Path(os.environ.get("WORKJET_BENCH_LITELLM_VENV", "/tmp/litellm-venv"))
LITELLM_KEY = "sk-bench-litellm-master"


def ensure_litellm(log: Path) -> Path:
    """The litellm executable in a cached virtualenv, installed from PyPI on first use (minutes)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    with log.open("ab") as out:
        print(f"installing litellm[proxy] into {LITELLM_VENV} (cached for later runs)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, stdout=out, stderr=out)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q"]
        r = subprocess.run([*pip, "litellm[proxy]"], stdout=out, stderr=out, timeout=1200)
    if r.returncode != 0 or not exe.exists():
        raise BenchError(f"pip install 'litellm[proxy]' failed (see {log})")
    return exe


def start_litellm(upstream: str, tmp: Path) -> Target:
    exe = ensure_litellm(tmp / "litellm-install.log")
    port = free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        textwrap.dedent(f"""
        model_list:
          - model_name: {JSON_MODEL}
            litellm_params: {{model: openai/bench, api_base: {upstream}/json/v1, api_key: sk-upstream}}
          - model_name: {SSE_MODEL}
            litellm_params: {{model: openai/bench, api_base: {upstream}/sse/v1, api_key: sk-upstream}}
        general_settings:
          master_key: {LITELLM_KEY}
        litellm_settings:
          set_verbose: false
        """)
    )
    env = {
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "true",
        "PATH": f"{LITELLM_VENV}/bin:{os.environ['PATH']}",
    }
    argv = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    proc = Proc("litellm", pin(GATEWAY_CORE, argv), tmp / "litellm.log", env=env, cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/health/liveliness", 180)
    time.sleep(1)
    url = base + "/v1/chat/completions"
    return Target("litellm", proc, url, url, {"Authorization": f"Bearer {LITELLM_KEY}"})
