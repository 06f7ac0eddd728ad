"""A revoked key stops working in every gateway process within `auth.refresh_seconds`, not just the one
that happened to see the revocation: two processes share one database."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import base_config, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_revocation_reaches_every_process_within_the_bound(tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    text = base_config(fake_upstream.base_url, tmp_path) + "auth:\n  refresh_seconds: 1\n"
    a = start_gateway(text, tmp_path)
    b = start_gateway(text, tmp_path)
    try:
        key = a.create_key("shared")
        auth = {"authorization": f"Bearer {key}"}
        for gw in (a, b):
            assert httpx.post(gw.v1 + "/chat/completions", json=CHAT, headers=auth).status_code == 200
        key_id = json.loads(a.cli("keys", "list", "--format", "json").stdout)[0]["id"]
        a.cli("keys", "revoke", key_id)
        revoked_at = time.monotonic()
        seen: dict[str, float] = {}
        while len(seen) < 2 and time.monotonic() - revoked_at < 15:  # 15 s bounds a hung test only
            for name, gw in (("a", a), ("b", b)):
                if name not in seen:
                    r = httpx.post(gw.v1 + "/chat/completions", json=CHAT, headers=auth)
                    if r.status_code == 401:
                        seen[name] = time.monotonic() - revoked_at
            time.sleep(0.05)
        assert set(seen) == {"a", "b"}
        # The bound: at most 5 s (here refresh_seconds is 1 s, so this leaves room for a loaded machine).
        assert max(seen.values()) < 5.0
    finally:
        a.stop()
        b.stop()
