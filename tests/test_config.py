"""config/: ${ENV} interpolation, unknown options, cross-references; every problem with file:line and dotted path."""

from __future__ import annotations

from pathlib import Path

import pytest

from workjet_fast.config import ConfigError, load_settings, parse_settings

MINIMAL = """\
providers:
  up:
    type: openai
    base_url: {base_url}
    api_key: {api_key}
models:
  m1:
    provider: up
    model: upstream-m1
tiers:
  standard:
    models: [m1]
"""


def problems(text: str, file: str = "cfg.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, file)
    rendered = str(info.value).splitlines()
    assert len(rendered) == len(info.value.problems)
    return rendered


def test_minimal_config_parses() -> None:
    s = parse_settings(MINIMAL.format(base_url="http://127.0.0.1:1/v1/", api_key="k"))
    assert s.providers["up"].base_url == "http://127.0.0.1:1/v1"
    assert s.models["m1"].deployments[0].model == "upstream-m1"
    assert s.tiers["standard"].models == ("m1",)
    assert s.auth.refresh_seconds == 2.0 and s.server.max_body_bytes == 4 * 1024 * 1024


def test_env_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WJ_TEST_KEY", "sk-from-env")
    monkeypatch.setenv("WJ_TEST_HOST", "10.0.0.7")
    s = parse_settings(MINIMAL.format(base_url="http://${WJ_TEST_HOST}:8000/v1", api_key="${WJ_TEST_KEY}"))
    assert s.providers["up"].api_key == "sk-from-env"
    assert s.providers["up"].base_url == "http://10.0.0.7:8000/v1"


def test_env_set_wins_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WJ_TEST_KEY", "from-env")
    s = parse_settings(MINIMAL.format(base_url="http://x/v1", api_key="${WJ_TEST_KEY:-fallback}"))
    assert s.providers["up"].api_key == "from-env"


def test_env_set_but_empty_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WJ_TEST_KEY", "")
    s = parse_settings(MINIMAL.format(base_url="http://x/v1", api_key="${WJ_TEST_KEY:-fallback}"))
    assert s.providers["up"].api_key == ""


def test_env_unset_with_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WJ_TEST_KEY", raising=False)
    text = MINIMAL.format(base_url="${WJ_TEST_URL:-http://127.0.0.1:9/v1}", api_key="${WJ_TEST_KEY:-}")
    s = parse_settings(text)
    assert s.providers["up"].api_key == ""
    assert s.providers["up"].base_url == "http://127.0.0.1:9/v1"


def test_env_unset_is_a_problem_with_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WJ_TEST_MISSING", raising=False)
    out = problems(MINIMAL.format(base_url="http://x/v1", api_key="${WJ_TEST_MISSING}"))
    assert out == ["cfg.yaml:5: providers.up.api_key: environment variable WJ_TEST_MISSING is not set"]


def test_env_in_numbers_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WJ_TEST_PORT", "9999")
    monkeypatch.setenv("WJ_TEST_MODEL", "m1")
    text = "server:\n  port: ${WJ_TEST_PORT}\n  max_body_bytes: ${WJ_TEST_BODY:-2048}\n" + MINIMAL.format(
        base_url="http://x/v1", api_key="k"
    ).replace("models: [m1]", "models: ['${WJ_TEST_MODEL}']")
    s = parse_settings(text)
    assert s.server.port == 9999 and s.server.max_body_bytes == 2048
    assert s.tiers["standard"].models == ("m1",)


def test_unknown_options_reported_everywhere() -> None:
    text = (
        "srever:\n  port: 1\n"
        + MINIMAL.format(base_url="http://x/v1", api_key="k").replace(
            "    api_key: k\n", "    api_key: k\n    tiemout: 3\n"
        )
        + "routing:\n  max_attempt: 2\n"
    )
    out = problems(text)
    assert "cfg.yaml:1: srever: unknown option" in out
    assert "cfg.yaml:8: providers.up.tiemout: unknown option" in out
    assert "cfg.yaml:17: routing.max_attempt: unknown option" in out
    assert len(out) == 3


def test_tier_naming_unknown_model() -> None:
    text = MINIMAL.format(base_url="http://x/v1", api_key="k").replace("models: [m1]", "models: [m1, ghost, m2]")
    out = problems(text)
    assert out == [
        "cfg.yaml:12: tiers.standard.models[1]: names no model: 'ghost'",
        "cfg.yaml:12: tiers.standard.models[2]: names no model: 'm2'",
    ]


def test_model_naming_unknown_provider_and_tier_shadowing_a_model() -> None:
    text = MINIMAL.format(base_url="http://x/v1", api_key="k").replace("    provider: up\n", "    provider: nope\n")
    text += "  m1:\n    models: [m1]\n"
    out = problems(text)
    assert any("models.m1.provider: names no provider" in ln for ln in out)
    assert any("tiers.m1" in ln and "also a model id" in ln for ln in out)


def test_many_problems_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "server:\n  port: nope\n  max_body_bytes: 10\nauth:\n  refresh_seconds: 30\n"
        "providers:\n  up:\n    type: grpc\n    base_url: x\nmodels:\n  m1: {}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    paths = {p.path for p in info.value.problems}
    assert {"server.port", "server.max_body_bytes", "auth.refresh_seconds", "providers.up.type"} <= paths
    assert {"providers.up.base_url", "models.m1"} <= paths
    for line in str(info.value).splitlines():
        assert line.startswith(f"{path}:"), line


def test_missing_required_sections() -> None:
    out = problems("server: {}\n")
    assert any("providers: is required" in ln for ln in out)
    assert any("models: is required" in ln for ln in out)


def test_not_yaml_and_not_a_mapping() -> None:
    assert problems("a: [1\n")[0].startswith("cfg.yaml:")
    assert any(
        "must be a mapping" in ln for ln in problems("server: 5\n" + MINIMAL.format(base_url="http://x", api_key="k"))
    )


def test_example_config_loads() -> None:
    s = load_settings(Path(__file__).resolve().parent.parent / "examples" / "workjet.yaml")
    assert s.models and s.tiers and s.providers
    for tier in s.tiers.values():
        assert set(tier.models) <= set(s.models)
