"""Workjet Gateway: an OpenAI-compatible AI gateway.

The public Python API is what this module exports; every other module is an implementation detail.

    from workjet_fast import create_app, load_settings
    app = create_app(load_settings("workjet.yaml"))   # an ASGI app for any ASGI server
"""

from __future__ import annotations

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
)
from workjet_fast.app import create_app
from workjet_fast.config import ConfigError, Settings, load_settings, parse_settings

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
