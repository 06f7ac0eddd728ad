"""The `workjet` command: output contract (stdout for scripts, stderr for people) and exit codes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, WORKJET, base_config
from tests.fakes.openai_upstream import free_port

KEY_RE = re.compile(r"wj_live_[A-Za-z0-9]{32,}")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WORKJET, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "workjet.yaml"
    path.write_text(base_config(f"http://127.0.0.1:{free_port()}/v1", tmp_path / "data"))
    return path


def test_version() -> None:
    from workjet_fast import __version__

    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"workjet {__version__}"


def test_keys_create_prints_only_the_key(config: Path) -> None:
    r = run("keys", "create", "--name", "ci", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert KEY_RE.fullmatch(r.stdout.strip()), r.stdout
    assert r.stdout.count("\n") == 1
    assert "created key_" in r.stderr and "(ci)" in r.stderr
    assert r.stdout.strip() not in r.stderr  # the key appears once, on stdout


def test_keys_create_rejects_unknown_model(config: Path) -> None:
    r = run("keys", "create", "--name", "x", "--models", "nope", "--config", str(config))
    assert r.returncode == 2 and r.stdout == ""
    assert "nope" in r.stderr


def test_keys_list_table_and_json_never_show_keys(config: Path) -> None:
    c = ("--config", str(config))
    k1 = run("keys", "create", "--name", "alpha", *c).stdout.strip()
    k2 = run("keys", "create", "--name", "beta", "--models", "gpt-4o-mini", "--tiers", "premium", "--rpm", "7", *c)
    k2key = k2.stdout.strip()

    js = run("keys", "list", "--format", "json", *c)
    assert js.returncode == 0, js.stderr
    recs = orjson.loads(js.stdout)
    assert [r["name"] for r in recs] == ["alpha", "beta"]
    beta = recs[1]
    assert beta["models"] == ["gpt-4o-mini"] and beta["tiers"] == ["premium"] and beta["limits"] == {"rpm": 7}
    assert beta["revoked_at"] is None and k2key.startswith(beta["prefix"])

    table = run("keys", "list", *c)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "PREFIX", "STATUS", "MODELS/TIERS"]
    assert any(recs[0]["id"] in ln and "alpha" in ln and "active" in ln and ln.rstrip().endswith("*") for ln in lines)
    assert any(beta["id"] in ln and "gpt-4o-mini,premium" in ln for ln in lines)

    run("keys", "revoke", recs[0]["id"], *c)
    table = run("keys", "list", *c).stdout
    assert any(recs[0]["id"] in ln and "revoked" in ln for ln in table.splitlines())
    for out in (js.stdout, js.stderr, table):
        for key in (k1, k2key):
            assert key not in out and key[len("wj_live_") :] not in out


def test_keys_revoke(config: Path) -> None:
    c = ("--config", str(config))
    run("keys", "create", "--name", "gone", *c)
    (rec,) = orjson.loads(run("keys", "list", "--format", "json", *c).stdout)
    ok = run("keys", "revoke", rec["id"], *c)
    assert ok.returncode == 0 and ok.stdout == "" and "revoked" in ok.stderr
    again = run("keys", "revoke", rec["id"], *c)
    assert again.returncode == 1 and "no active key" in again.stderr
    unknown = run("keys", "revoke", "key_doesnotexist", *c)
    assert unknown.returncode == 1 and "key_doesnotexist" in unknown.stderr and unknown.stdout == ""


def test_config_check_example_is_ok() -> None:
    r = run("config", "check", str(ROOT / "examples" / "workjet.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert ": ok (" in r.stderr


BROKEN = """\
server:
  port: -5
  workers: zero
storage:
  url: mysql://db
providers:
  fake:
    type: nonsense
    base_url: ftp://x
    timeot: 3
models:
  m1:
    provider: nowhere
tiers:
  standard:
    models: [m1, ghost]
"""


def test_config_check_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    r = run("config", "check", str(path))
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    out = r.stdout
    expected = [
        (2, "server.port"),
        (3, "server.workers"),
        (5, "storage.url"),
        (8, "providers.fake.type"),
        (9, "providers.fake.base_url"),
        (10, "providers.fake.timeot"),
        (13, "models.m1.provider"),
        (16, "tiers.standard.models[1]"),
    ]
    for line, dotted in expected:
        assert f"{path}:{line}: {dotted}: " in out, (line, dotted, out)
    assert "unknown option" in out and "ghost" in out
    problems = [ln for ln in out.splitlines() if ln.startswith(str(path))]
    assert len(problems) >= len(expected)
    assert f"{len(problems)} problem(s)" in r.stderr


def test_config_check_not_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: [1\n")
    r = run("config", "check", str(bad))
    assert r.returncode == 1 and "not valid YAML" in r.stdout and f"{bad}:" in r.stdout
    r = run("config", "check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "cannot read the file" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_serve_with_invalid_config_exits_2(tmp_path: Path, config: Path) -> None:
    text = config.read_text().replace("  admin_token: test-admin-token\n", "  admin_token: x\n  workers: -1\n")
    config.write_text(text)
    proc = subprocess.run(
        [WORKJET, "serve", "--config", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "server.workers" in proc.stderr and "must be an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_db_migrate_is_idempotent(config: Path, tmp_path: Path) -> None:
    first = run("db", "migrate", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert re.search(r"applied migrations: \[1, 2", first.stderr), first.stderr
    assert (tmp_path / "data" / "workjet.db").exists()
    second = run("db", "migrate", "--config", str(config))
    assert second.returncode == 0 and "none (up to date)" in second.stderr


def test_usage_errors_exit_2() -> None:
    assert run().returncode == 2
    assert run("keys").returncode == 2
    assert run("keys", "create").returncode == 2  # --name is required


def test_serve_refuses_memory_limits_with_several_workers_unless_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text(base_config("http://127.0.0.1:9/v1", tmp_path))
    port = str(free_port())
    out = subprocess.run(
        [WORKJET, "serve", "--config", str(cfg), "--workers", "2", "--port", port],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "accept_per_process_limits" in out.stderr and "Traceback" not in out.stderr
