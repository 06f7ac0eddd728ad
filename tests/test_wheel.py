"""`make wheel`'s product works outside the source tree: build an abi3 wheel, install it into a fresh
virtualenv, run `workjet --version` and a request end to end with the installed package."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, base_config, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

MATURIN = shutil.which("maturin", path=str(Path(sys.executable).parent)) or shutil.which("maturin")


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.skipif(MATURIN is None, reason="maturin is not installed (make test installs it)")
def test_wheel_installs_and_serves(tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    features = "python,hyperscan" if glob.glob("/usr/lib/*/libhs.a") else "python"
    out = tmp_path / "dist"
    # The CI profile reuses the build `make test` already made; `make wheel` uses --release.
    subprocess.run(
        [str(MATURIN), "build", "-q", "--profile", "ci", "--features", features, "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=900,
    )
    wheels = list(out.glob("workjet_fast-*-abi3-*.whl"))
    assert len(wheels) == 1, wheels  # one abi3 wheel serves every CPython >= 3.10
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
    assert {"workjet_fast/data/o200k_base.tokens", "workjet_fast/data/cl100k_base.tokens"} <= names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheels[0])], check=True, capture_output=True, timeout=600)
    workjet = str(venv / "bin" / "workjet")

    version = subprocess.run([workjet, "--version"], check=True, capture_output=True, text=True, timeout=60)
    assert version.stdout.strip().startswith("workjet 0.")
    # The installed package loads its token encoders from the shipped files, not the copy in the extension.
    probe = (
        "import workjet_fast as w, workjet_fast._workjet_fast as n; "
        "w.count_tokens('x'); print(n.token_data_source('o200k_base'))"
    )
    source = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert source.stdout.strip() == "file"

    # The installed package, not the source tree: run from a directory without python/ in it.
    data = tmp_path / "gw"
    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    gw = start_gateway(base_config(fake_upstream.base_url, data), data, env=env, workjet=workjet, cwd=tmp_path)
    try:
        key = gw.create_key("wheel")
        r = httpx.post(
            gw.v1 + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "from the wheel"}]},
            headers={"authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "You said: from the wheel"
        imported = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import workjet_fast, sys; print(workjet_fast.__file__)"],
            check=True, capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert str(venv) in imported.stdout
    finally:
        gw.stop()
