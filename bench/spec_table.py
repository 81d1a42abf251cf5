"""The TOML table a spec is read through: it remembers where it came from (file and key path) and which
keys were read, so that every error names the file and key and a key nothing reads is an error too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metabench.errors import SpecError


class SpecTable:
    """A TOML table that remembers where it came from, so every error names file and key."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = dict(data)
        self.where = where
        self.read: set[str] = set()

    def _fail(self, key: str, problem: str) -> SpecError:
        return SpecError(f"{self.where}.{key}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.read.add(key)
        if key not in self.data:
            if default is ...:
                raise self._fail(key, "missing (every spec states it; see registry/protonet.toml)")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self._fail(key, f"expected {_names(kinds)}, found a boolean")
        if not isinstance(value, kinds):
            raise self._fail(key, f"expected {_names(kinds)}, found {type(value).__name__} {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> Any:
        value = self.get(key, str, default)
        if value is not default and value not in choices:
            raise self._fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def positive(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, int, default)
        if value is not default and value is not None and value < 1:
            raise self._fail(key, f"must be a positive integer, found {value}")
        return value

    def count(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, int, default)
        if value is not default and value is not None and value < 0:
            raise self._fail(key, f"must be a non-negative integer, found {value}")
        return value

    def sub(self, key: str) -> SpecTable:
        return SpecTable(self.get(key, dict, {}), f"{self.where}.{key}")

    def reject_unread(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise self._fail(unknown[0], "unknown key (misspelt? remove it or see the README's spec format)")


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(
        {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
            "dict": "a table",
            "list": "a list",
        }.get(k.__name__, k.__name__)
        for k in kinds
    )
