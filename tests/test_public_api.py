"""`workjet_fast/__init__.py` is the only public door: an explicit, sorted `__all__` that all resolves."""

from __future__ import annotations

import workjet_fast


def test_all_is_sorted_and_complete() -> None:
    assert workjet_fast.__all__ == sorted(workjet_fast.__all__)
    for name in workjet_fast.__all__:
        assert getattr(workjet_fast, name) is not None, name


def test_public_names_work_together(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = workjet_fast.parse_settings(
        f"""
providers: {{up: {{type: openai, base_url: "http://127.0.0.1:9/v1"}}}}
models: {{m: {{provider: up}}}}
storage: {{url: "sqlite:///{tmp_path}/w.db"}}
"""
    )
    app = workjet_fast.create_app(settings)
    assert callable(app)
    assert workjet_fast.count_tokens("hello world") == 2
    assert [f.entity for f in workjet_fast.DlpEngine().scan("card 4111 1111 1111 1111")] == ["CREDIT_CARD"]
