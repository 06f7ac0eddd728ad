"""Typed reading of YAML with every problem reported at its location.

The loader remembers the line of each mapping key, so a problem reads
``examples/workjet.yaml:12: providers.openai.timeout: must be a number > 0``.
A `Section` never raises: it records a `Problem` and returns a default, so one pass finds every problem.
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
_MISSING: Any = object()
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    message: str

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class LineDict(dict[str, Any]):
    """A mapping that knows the line (1-based) of each of its keys."""

    lines: dict[str, int]
    line: int | None = None


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.lines = {}
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[str(key)] = loader.construct_object(value_node, deep=True)
        out.lines[str(key)] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader


def interpolate(value: str, path: str, problems: list[Problem], line: int | None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` from the environment; an unset variable is a problem."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        problems.append(Problem(path, line, f"environment variable {name} is not set"))
        return ""

    return _ENV.sub(sub, value)


class Section:
    """A mapping being read: typed getters that record problems instead of raising."""

    def __init__(self, data: Any, path: str, problems: list[Problem], line: int | None = None) -> None:
        self.path = path
        self.problems = problems
        if data is None:
            data = LineDict()
            data.lines = {}
        if not isinstance(data, dict):
            problems.append(Problem(path, line, f"must be a mapping, got {type(data).__name__}"))
            data = LineDict()
            data.lines = {}
        self.data: dict[str, Any] = data
        self.line = getattr(data, "line", line)
        self._seen: set[str] = set()

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int | None:
        lines = getattr(self.data, "lines", None)
        return lines.get(key, self.line) if lines else self.line

    def problem(self, key: str | None, message: str) -> None:
        if key is None:
            self.problems.append(Problem(self.path, self.line, message))
        else:
            self.problems.append(Problem(self._p(key), self.line_of(key), message))

    def has(self, key: str) -> bool:
        return key in self.data

    def _raw(self, key: str, default: Any, required: bool) -> Any:
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                self.problems.append(Problem(self._p(key), self.line, "is required"))
            return _MISSING if default is _MISSING else default
        return self.data[key]

    def _typed(self, key: str, default: Any, required: bool, check: Callable[[Any], T | None], what: str) -> Any:
        raw = self._raw(key, default, required)
        if raw is _MISSING or raw is default:
            return None if raw is _MISSING else raw
        value = check(raw)
        if value is None:
            self.problem(key, f"must be {what}, got {raw!r}")
            return None if default is _MISSING else default
        return value

    def str(self, key: str, default: Any = _MISSING, *, required: bool = False, choices: tuple[str, ...] = ()) -> Any:
        def check(v: Any) -> str | None:
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                return None
            s = interpolate(str(v), self._p(key), self.problems, self.line_of(key))
            return s

        value = self._typed(key, default, required, check, "a string")
        if choices and value is not None and value not in choices:
            self.problem(key, f"must be one of {', '.join(choices)}, got {value!r}")
            return None if default is _MISSING else default
        return value

    def int(
        self,
        key: builtins.str,
        default: Any = _MISSING,
        *,
        required: builtins.bool = False,
        min: builtins.int | None = None,
    ) -> Any:
        def check(v: Any) -> int | None:
            if isinstance(v, str):
                v = interpolate(v, self._p(key), self.problems, self.line_of(key))
                try:
                    v = int(v)
                except ValueError:
                    return None
            if isinstance(v, bool) or not isinstance(v, int):
                return None
            return v if min is None or v >= min else None

        what = "an integer" if min is None else f"an integer >= {min}"
        return self._typed(key, default, required, check, what)

    def float(
        self,
        key: builtins.str,
        default: Any = _MISSING,
        *,
        required: builtins.bool = False,
        positive: builtins.bool = False,
    ) -> Any:
        def check(v: Any) -> float | None:
            if isinstance(v, str):
                v = interpolate(v, self._p(key), self.problems, self.line_of(key))
                try:
                    v = float(v)
                except ValueError:
                    return None
            if isinstance(v, bool) or not isinstance(v, int | float):
                return None
            return float(v) if not positive or v > 0 else None

        return self._typed(key, default, required, check, "a number > 0" if positive else "a number")

    def bool(self, key: builtins.str, default: Any = _MISSING, *, required: builtins.bool = False) -> Any:
        return self._typed(key, default, required, lambda v: v if isinstance(v, bool) else None, "true or false")

    def str_list(self, key: builtins.str, default: Any = _MISSING, *, required: builtins.bool = False) -> Any:
        def check(v: Any) -> list[str] | None:
            if isinstance(v, str):
                return [v]
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return [interpolate(x, self._p(key), self.problems, self.line_of(key)) for x in v]
            return None

        return self._typed(key, default, required, check, "a list of strings")

    def section(self, key: builtins.str, *, required: builtins.bool = False) -> Section:
        raw = self._raw(key, None, required)
        return Section(raw, self._p(key), self.problems, self.line_of(key))

    def items(self, key: builtins.str, *, required: builtins.bool = False) -> Iterator[tuple[builtins.str, Section]]:
        """The entries of a mapping of named sections (``providers: {name: {...}}``)."""
        parent = self.section(key, required=required)
        for name, value in list(parent.data.items()):
            parent._seen.add(name)
            yield name, Section(value, parent._p(name), self.problems, parent.line_of(name))

    def list(
        self, key: builtins.str, *, required: builtins.bool = False
    ) -> builtins.list[tuple[Any, builtins.str, builtins.int | None]]:
        """The items of a list with their paths: ``[(value, "tiers.standard.models[0]", line)]``."""
        raw = self._raw(key, None, required)
        if raw is None or raw is _MISSING:
            return []
        if not isinstance(raw, list):
            self.problem(key, f"must be a list, got {type(raw).__name__}")
            return []
        return [(v, f"{self._p(key)}[{i}]", self.line_of(key)) for i, v in enumerate(raw)]

    def finish(self) -> None:
        """Report keys nobody read: they are typos or options this version does not have."""
        for key in self.data:
            if key not in self._seen:
                self.problem(key, "unknown option")
