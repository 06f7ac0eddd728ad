"""The `dlp:` section: request and response policies (owned by the DLP feature)."""

from __future__ import annotations

from dataclasses import dataclass

from workjet_fast.config._reader import Section


@dataclass(frozen=True)
class DlpConfig:
    enabled: bool = True


def read_dlp(s: Section, known_ids: set[str]) -> DlpConfig:
    cfg = DlpConfig(enabled=s.bool("enabled", True))
    s.finish()
    return cfg
