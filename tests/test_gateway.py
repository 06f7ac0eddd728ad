"""gateway.py's start-up pieces; the gateway as a whole is tested end to end (test_chat_e2e.py and others)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from tests.test_config import MINIMAL
from workjet_fast.config import parse_settings
from workjet_fast.gateway import Gateway

WITH_TPM = MINIMAL.format(base_url="http://127.0.0.1:1/v1", api_key="k") + "limits:\n  default: {tpm: 1000}\n"


def test_token_counter_warm_up_is_quiet_on_the_shipped_data(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="workjet.gateway"):
        Gateway._warm_up_token_counter(SimpleNamespace(settings=parse_settings(WITH_TPM)))  # type: ignore[arg-type]
    assert caplog.records == []


def test_token_counter_warm_up_warns_about_the_fallback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("workjet_fast.gateway.token_data_source", lambda _encoding: "embedded: no data directory set")
    with caplog.at_level(logging.WARNING, logger="workjet.gateway"):
        Gateway._warm_up_token_counter(SimpleNamespace(settings=parse_settings(WITH_TPM)))  # type: ignore[arg-type]
    assert "token counter o200k_base: embedded: no data directory set" in caplog.text
