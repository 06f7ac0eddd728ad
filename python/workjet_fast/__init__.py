"""Workjet Gateway: an OpenAI-compatible AI gateway.

The public Python API is what this module exports; everything else is private.
"""

from __future__ import annotations

from workjet_fast._workjet_fast import __version__

__all__ = ["__version__"]
