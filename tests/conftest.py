"""Factory fixtures: a fake upstream, a configuration, and the real gateway in a uvicorn subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAI, free_port

ROOT = Path(__file__).resolve().parent.parent
WORKJET = str(Path(sys.executable).parent / "workjet")
PG_DSN = os.environ.get("WORKJET_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("WORKJET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def _close_sdk_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests make OpenAI SDK clients freely; each is closed after its test. Otherwise a pooled socket is left for
    the garbage collector, whose ResourceWarning (an error under our warning filter) lands in a later test."""
    import openai

    made: list[openai.OpenAI] = []
    init = openai.OpenAI.__init__

    def tracked(self: openai.OpenAI, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(openai.OpenAI, "__init__", tracked)
    yield
    for client in made:
        client.close()


@pytest.fixture
def fake_upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def base_config(upstream_url: str, data_dir: Path, extra: str = "") -> str:
    """A complete configuration: models `gpt-4o-mini` (normal), `broken` (500), `down` (nothing listens),
    `stall`, `breaker` (drops mid-stream), `slow`, `split1`/`split7` (streams in pieces of 1 or 7 bytes), `burst`
    (a whole stream in one write), `burst2` (in two writes of several events), and tiers `standard` (capped) and
    `premium`."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    return textwrap.dedent(
        f"""
            server:
              data_dir: {data_dir}
              admin_token: test-admin-token
            storage:
              url: sqlite:///{data_dir}/workjet.db
            providers:
              fake:
                type: openai
                base_url: {upstream_url}
                api_key: sk-upstream-secret-value
                timeout: 2
                read_timeout: 5
              dead:
                type: openai
                base_url: {dead}
                api_key: sk-dead-secret
                connect_timeout: 1
                timeout: 1
            models:
              gpt-4o-mini:
                provider: fake
                model: upstream-mini
              broken: {{provider: fake, model: fail-500}}
              bad-request: {{provider: fake, model: fail-400}}
              down: {{provider: dead, model: whatever}}
              stall: {{provider: fake, model: stall}}
              breaker: {{provider: fake, model: break}}
              slow: {{provider: fake, model: slow}}
              split1: {{provider: fake, model: "split:1"}}
              split7: {{provider: fake, model: "split:7"}}
              burst: {{provider: fake, model: "split:1000000"}}
              burst2: {{provider: fake, model: "bursts:2"}}
              capped:
                provider: fake
                model: upstream-capped
                max_tokens: 50
            tiers:
              standard:
                models: [gpt-4o-mini]
                max_tokens: 100
              premium:
                models: [down, gpt-4o-mini]
            """
    ) + textwrap.dedent(extra)


@dataclass
class GatewayProc:
    url: str
    config: Path
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    keys: dict[str, str] = field(default_factory=dict)
    workjet: str = WORKJET

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.workjet, *args, "--config", str(self.config)], capture_output=True, text=True, check=check, timeout=60
        )

    def create_key(self, name: str = "test", *extra: str) -> str:
        out = self.cli("keys", "create", "--name", name, *extra)
        return out.stdout.strip()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_gateway(
    config_text: str,
    tmp: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    workjet: str = WORKJET,
    cwd: Path = ROOT,
) -> GatewayProc:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "workjet.yaml"
    config.write_text(config_text)
    port = port or free_port()
    log = tmp / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [workjet, "serve", "--config", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    gw = GatewayProc(f"http://127.0.0.1:{port}", config, tmp, proc, log, workjet=workjet)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gw.output()}")
        try:
            if httpx.get(gw.url + "/healthz", timeout=0.5).status_code == 200:
                return gw
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    gw.stop()
    raise RuntimeError(f"gateway did not start:\n{gw.output()}")


GatewayFactory = Callable[..., GatewayProc]


def wait_for(predicate: Callable[[], object], deadline_s: float = 15.0) -> bool:
    """Poll until `predicate()` holds; the deadline is a correctness bound, not a performance threshold."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture
def gateway_factory(tmp_path: Path, fake_upstream: FakeOpenAI) -> Iterator[GatewayFactory]:
    started: list[GatewayProc] = []

    def make(
        extra: str = "",
        *,
        config_text: str | None = None,
        sections: str | None = None,
        name: str = "gw",
        **kw: object,
    ) -> GatewayProc:
        """The base configuration plus `extra`; or `config_text` whole; or `sections` (providers, models, ...)
        under a server/storage header that points at this gateway's own data directory."""
        data = tmp_path / name
        if sections is not None:
            config_text = f"server:\n  data_dir: {data}\nstorage:\n  url: sqlite:///{data}/workjet.db\n" + sections
        text = config_text if config_text is not None else base_config(fake_upstream.base_url, data, extra)
        gw = start_gateway(text, data, **kw)  # type: ignore[arg-type]
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> GatewayProc:
    gw = gateway_factory()
    gw.keys["default"] = gw.create_key("default")
    return gw
