"""Workjet Gateway: an OpenAI-compatible AI gateway.

The public Python API is what this module exports; every other module is an implementation detail.

    from workjet_fast import create_app, load_settings
    app = create_app(load_settings("workjet.yaml"))   # an ASGI app for any ASGI server
"""

from __future__ import annotations

from pathlib import Path

from workjet_fast._workjet_fast import (
    ChunkRelay,
    DlpEngine,
    DlpError,
    DlpPolicy,
    SseError,
    SseParser,
    TokenizerError,
    WorkjetError,
    __version__,
    count_chat_tokens,
    count_tokens,
    encoding_for_model,
    set_token_data_dir,
)
from workjet_fast.app import create_app
from workjet_fast.config import ConfigError, Settings, load_settings, parse_settings

# The token vocabularies ship beside the extension (`make` writes them with tools/dump_token_data.rs): loaded
# from there into the compact encoder, o200k_base keeps ~6 MB resident per process instead of the ~65 MB of
# bpe-openai's encoder built from the copy embedded in the extension, the fallback when the files are missing
# (an sdist install).
_DATA = Path(__file__).with_name("data")
if (_DATA / "o200k_base.tokens").is_file():
    set_token_data_dir(str(_DATA))

__all__ = [
    "ChunkRelay",
    "ConfigError",
    "DlpEngine",
    "DlpError",
    "DlpPolicy",
    "Settings",
    "SseError",
    "SseParser",
    "TokenizerError",
    "WorkjetError",
    "__version__",
    "count_chat_tokens",
    "count_tokens",
    "create_app",
    "encoding_for_model",
    "load_settings",
    "parse_settings",
]
