"""`workjet audit query | export | verify | prune` against a real configuration file and database."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import pytest

from tests.test_audit_store import fill, rec
from workjet_fast.audit import cli
from workjet_fast.audit.chain import Chain
from workjet_fast.audit.store import AuditStore


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "workjet.yaml"
    path.write_text(
        f"""
server:
  data_dir: {tmp_path}
storage:
  url: sqlite:///{tmp_path}/workjet.db
providers:
  fake: {{type: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  gpt-4o-mini: {{provider: fake, model: upstream-mini}}
audit:
  checkpoint_key: cli-test-key
{extra}
"""
    )
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = config(tmp_path)
    store = AuditStore.open(f"sqlite:///{tmp_path}/workjet.db")
    store.migrate()
    fill(store, 30)
    store.close()
    return path


def workjet_audit(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="workjet")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *argv])
    return int(args.func(args))


def test_query_table(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert workjet_audit("query", "-c", str(cfg), "--limit", "5") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["time", "request_id", "key"]
    assert [ln.split()[1] for ln in lines[1:]] == ["req-00029", "req-00028", "req-00027", "req-00026", "req-00025"]
    assert "--cursor" in err


def test_query_json_with_filters_and_cursor(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        workjet_audit("query", "-c", str(cfg), "--status", "4xx", "--key", "k2", "--limit", "2", "--format", "json")
        == 0
    )
    out, err = capsys.readouterr()
    assert [r["request_id"] for r in json.loads(out)] == ["req-00020", "req-00010"]
    cursor = err.split("--cursor ")[1].strip()
    args = ("query", "-c", str(cfg), "--status", "4xx", "--key", "k2", "--format", "json", "--cursor", cursor)
    assert workjet_audit(*args) == 0
    assert [r["request_id"] for r in json.loads(capsys.readouterr().out)] == ["req-00000"]


def test_query_csv_and_time_window(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("query", "-c", str(cfg), "--since", "2023-11-14T22:13:25Z", "--until", "1700000007", "--format", "csv")
    assert workjet_audit(*args) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["request_id"] for r in rows] == ["req-00006", "req-00005"]
    assert rows[0]["started_at"] == "2023-11-14T22:13:26.000Z"


def test_export_jsonl_and_csv_to_files(cfg: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    assert workjet_audit("export", "-c", str(cfg), "--output", str(out)) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["request_id"] for r in records] == [f"req-{i:05d}" for i in range(30)]
    out = tmp_path / "audit.csv"
    assert workjet_audit("export", "-c", str(cfg), "--format", "csv", "--model", "premium", "-o", str(out)) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 10 and {r["requested_model"] for r in rows} == {"premium"}
    assert tuple(rows[0]) == cli.CSV_COLUMNS


def test_verify_ok_then_tampered(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert workjet_audit("verify", "-c", str(cfg)) == 0
    assert capsys.readouterr().out.startswith("OK (1 chain(s), 30 record(s)")
    store = AuditStore.open(f"sqlite:///{tmp_path}/workjet.db")
    store.db.execute("DELETE FROM audit_log WHERE seq = 12")
    store.close()
    assert workjet_audit("verify", "-c", str(cfg)) == 1
    out = capsys.readouterr().out
    assert "deleted" in out and "chain-a:12" in out and "FAILED: 1 problem(s)" in out
    assert workjet_audit("verify", "-c", str(cfg), "--format", "json") == 1
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is False and body["problems"][0] | {"detail": ""} == {
        "chain_id": "chain-a",
        "seq": 12,
        "kind": "deleted",
        "detail": "",
    }


def test_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path)
    store = AuditStore.open(f"sqlite:///{tmp_path}/workjet.db")
    store.migrate()
    store.insert(Chain("c").link(rec(i) for i in range(5)))  # 2023: older than any retention
    store.close()
    assert workjet_audit("prune", "-c", str(path)) == 2  # no --days and no retention_days
    assert workjet_audit("prune", "-c", str(path), "--days", "30") == 0
    assert "pruned 5 record(s)" in capsys.readouterr().err
    assert workjet_audit("verify", "-c", str(path)) == 0


def test_bad_arguments_exit_2(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert workjet_audit("query", "-c", str(cfg), "--since", "last tuesday") == 2
    assert workjet_audit("query", "-c", str(cfg), "--status", "teapot") == 2
    assert workjet_audit("query", "-c", str(cfg), "--cursor", "garbage") == 2
    assert "error:" in capsys.readouterr().err


def test_bad_config_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("audit: {queue_size: 0}\n")
    assert workjet_audit("verify", "-c", str(path)) == 2
