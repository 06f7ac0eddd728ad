"""Token counting: the native counter against Python tiktoken, offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import workjet_fast
from benches.corpus import KINDS, make_corpus
from tools.seed_tiktoken_cache import seed
from workjet_fast._workjet_fast import (
    TokenizerError,
    count_chat_tokens,
    count_tokens,
    encoding_for_model,
    token_data_source,
)

ENCODINGS = ("o200k_base", "cl100k_base")

SAMPLES = [
    "",
    "hello world",
    "<|endoftext|> and <|fim_prefix|> are ordinary text here",
    " " * 513 + "x" + "\n" * 40 + "\t \r\n" * 9,
    "emoji 😀🎉👩‍👩‍👧‍👦🇫🇷 and ZWJ",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "1234567890 3.14159 0xDEADBEEF",
] + [make_corpus(kind, size, seed) for kind in KINDS for size, seed in ((300, 1), (5000, 2))]


@pytest.fixture(scope="module")
def tiktoken_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Python tiktoken with its cache seeded from the tiktoken-rs crate: no network."""
    tiktoken = pytest.importorskip("tiktoken")
    cache: Path = tmp_path_factory.mktemp("tiktoken-cache")
    if seed(cache) != list(ENCODINGS[::-1]):
        pytest.skip("tiktoken-rs crate source (with its assets/) not found in the cargo registry: run `cargo fetch`")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        yield tiktoken


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_parity_with_python_tiktoken(tiktoken_offline: Any, encoding: str) -> None:
    enc = tiktoken_offline.get_encoding(encoding)
    for text in SAMPLES:
        assert count_tokens(text, encoding) == len(enc.encode_ordinary(text)), text[:80]


def test_default_encoding_is_o200k() -> None:
    text = make_corpus("prose", 2000, seed=5)
    assert count_tokens(text) == count_tokens(text, "o200k_base")
    assert count_tokens(text, "cl100k_base") != count_tokens(text, "o200k_base")


def test_unknown_encoding_raises() -> None:
    with pytest.raises(TokenizerError, match="p50k_base"):
        count_tokens("x", "p50k_base")


def test_adversarial_megabyte_is_counted() -> None:
    for ch in ("a", " ", "7", "é", "😀"):
        text = ch * ((1 << 20) // len(ch.encode()))
        assert 0 < count_tokens(text) <= len(text)


def test_encoding_for_model() -> None:
    for model in ("gpt-4o", "gpt-4o-mini", "o1", "o3-mini", "o4-mini", "gpt-4.1", "gpt-5", "openai/gpt-4o"):
        assert encoding_for_model(model) == "o200k_base", model
    for model in ("gpt-4", "gpt-4-turbo", "gpt-3.5-turbo", "gpt-35-turbo"):
        assert encoding_for_model(model) == "cl100k_base", model
    for model in ("claude-3-5-sonnet", "llama-3.1-8b", "unknown"):
        assert encoding_for_model(model) == "o200k_base", model


def test_count_chat_tokens_follows_the_cookbook() -> None:
    messages = [
        ("system", "You are a helpful assistant."),
        ("user", "Hello!", "alice"),
        ("assistant", "Hi.", None),
    ]
    enc = "cl100k_base"
    want = 3  # reply priming
    for message in messages:
        want += 3 + sum(count_tokens(part, enc) for part in message if part)
    want += 1  # the name
    assert count_chat_tokens(messages, "gpt-4") == want
    assert count_chat_tokens([], "gpt-4o") == 3
    with pytest.raises(TypeError):
        count_chat_tokens("not a list", "gpt-4o")  # type: ignore[arg-type]


def test_count_chat_tokens_cookbook_example(tiktoken_offline: Any) -> None:
    """The notebook's example conversation, counted its way with Python tiktoken."""
    example = [
        (
            "system",
            "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
        ),
        ("system", "New synergies will help drive top-line growth.", "example_user"),
        ("system", "Things working well together will increase revenue.", "example_assistant"),
        ("user", "This late pivot means we don't have time to boil the ocean for the client deliverable."),
    ]
    for model in ("gpt-4o", "gpt-4", "gpt-3.5-turbo"):
        enc = tiktoken_offline.encoding_for_model(model)
        want = 3
        for message in example:
            want += 3 + sum(len(enc.encode(part)) for part in message) + (1 if len(message) == 3 else 0)
        assert count_chat_tokens(example, model) == want, model


def test_encoders_come_from_the_shipped_data_files() -> None:
    """`make` writes the token vocabularies beside the package; the tiktoken parity tests above then exercise the
    encoders loaded from those files (the embedded copy is only the fallback)."""
    data = Path(workjet_fast.__file__).with_name("data")
    assert (data / "o200k_base.tokens").is_file(), "run make dev: it writes the token data"
    for encoding in ("o200k_base", "cl100k_base"):
        count_tokens("warm", encoding)
        assert token_data_source(encoding) == "file"
    with pytest.raises(TokenizerError):
        token_data_source("p50k_base")
