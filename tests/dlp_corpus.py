"""The DLP conformance corpus: per built-in rule, examples that must match and near-misses that must not.

One source for both test suites: the data lives in ``rust/dlp/corpus.json`` (the Rust tests `include_str!` it).
``MATCHES[rule_id]`` is a list of ``(example, value)`` where ``value`` is the exact text the finding must cover
(it differs from the example when the rule reports only the secret after a keyword); ``NEAR_MISSES[rule_id]`` is a
list of texts in which that rule must find nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "rust" / "dlp" / "corpus.json"
_DATA: dict[str, dict[str, list[object]]] = json.loads(_PATH.read_text(encoding="utf-8"))

MATCHES: dict[str, list[tuple[str, str]]] = {
    rule: [(str(pair[0]), str(pair[1])) for pair in entry["match"] if isinstance(pair, list)]
    for rule, entry in _DATA.items()
}
NEAR_MISSES: dict[str, list[str]] = {rule: [str(t) for t in entry["miss"]] for rule, entry in _DATA.items()}
RULE_IDS: tuple[str, ...] = tuple(sorted(_DATA))


def planted_examples() -> list[tuple[str, str, str]]:
    """``(rule_id, example, value)`` for every must-match example."""
    return [(rule, example, value) for rule in RULE_IDS for example, value in MATCHES[rule]]
