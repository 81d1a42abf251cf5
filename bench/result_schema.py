"""The result file as types: a dataclass with exact JSON round-trip, and the JSON Schema published in
``schema/result.schema.json``.

Both are derived from the tables :mod:`metabench.results` validates with (required keys, nested keys,
typed leaves), so the published schema cannot drift from the validator: ``python -m
metabench.result_schema`` rewrites the file and a test fails when the committed one differs. Schemas
1 to 4 all validate: later versions only add optional keys.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from metabench import results

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema" / "result.schema.json"

_JSON_TYPES = {int: "integer", str: "string", dict: "object", list: "array", bool: "boolean", type(None): "null"}


def _types(kinds: tuple[Any, ...]) -> list[str]:
    return ["number" if kind == results._NUMBER else _JSON_TYPES[kind] for kind in kinds]


def _table(keys: tuple[str, ...], leaves: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """An object that requires ``keys`` and types the ``leaves`` it holds (required or not)."""
    props = {name: {"type": _types(kinds)} for name, kinds in leaves.items()}
    return {"type": "object", "required": list(keys), "properties": props}


def _leaves_under(prefix: str) -> dict[str, tuple[Any, ...]]:
    start = f"{prefix}."
    return {key[len(start) :]: kinds for key, kinds in results._LEAVES.items() if key.startswith(start)}


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every result of schema versions 1 to 4 meets."""
    nested = {
        "summary": _table(results._NESTED["summary"], results._SUMMARY_LEAVES),
        "verdict": _table(results._NESTED["verdict"], results._VERDICT_LEAVES),
    }
    props: dict[str, Any] = {key: {"type": _types(kinds)} for key, kinds in results._REQUIRED.items()}
    for key, keys in results._NESTED.items():
        props[key] = nested.get(key) or _table(keys, _leaves_under(key))
    props["schema_version"] = {"type": "integer", "enum": list(results.SUPPORTED_VERSIONS)}
    props["scores"] = {"type": "array", "items": {"type": ["number", "array"]}}
    props["reported"] = {"anyOf": [{"type": "null"}, _table(("value",), results._REPORTED_LEAVES)]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/metabench/metabench/schema/result.schema.json",
        "title": "metabench result",
        "description": "One scored benchmark of one run (metabench.results; schema versions 1-4).",
        "type": "object",
        "required": list(results._REQUIRED),
        "properties": props,
    }


@dataclass
class Result:
    """A result file as a typed object; ``extra`` keeps the optional keys (weights, figures, budget,
    claim, competitors, components, ...) and ``order`` the file's key order, so that
    ``Result.from_json(data).to_json() == data`` holds key for key and in order."""

    schema_version: int
    paper: str
    title: str
    benchmark: str
    profile: str
    spec_file: str
    spec_sha256: str
    protocol: dict[str, Any]
    hyperparameters: dict[str, Any]
    seed: int
    test_episodes: dict[str, Any]
    scores: list[Any]
    summary: dict[str, Any]
    reported: dict[str, Any] | None
    verdict: dict[str, Any]
    targets: dict[str, Any]
    curve: list[Any]
    timing: dict[str, Any]
    environment: dict[str, Any]
    git: dict[str, Any]
    command: str
    created: str
    extra: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "result") -> Result:
        """A validated result (:func:`metabench.results.validate`) as a typed object."""
        return cls._of_valid(results.validate(data, source))

    @classmethod
    def read(cls, path: Path) -> Result:
        """The result file at ``path``, read and validated as :func:`metabench.results.read` does."""
        return cls._of_valid(results.read(path))

    @classmethod
    def _of_valid(cls, data: dict[str, Any]) -> Result:
        typed = {f.name for f in fields(cls)} - {"extra", "order"}
        known = {key: value for key, value in data.items() if key in typed}
        extra = {key: value for key, value in data.items() if key not in typed}
        return cls(**known, extra=extra, order=tuple(data))

    # The optional keys, by the schema version that added them (absent in older files).

    @property
    def components(self) -> list[dict[str, Any]] | None:
        """A vector benchmark's components (schema 2): each one's scores, summary, reported, verdict, floor."""
        return self.extra.get("components")

    @property
    def claim(self) -> dict[str, Any] | None:
        """A claim benchmark's statement, paired comparisons and verdict (schema 3)."""
        return self.extra.get("claim")

    @property
    def competitors(self) -> dict[str, Any]:
        """A claim's competitors, each with its per-episode scores and summary (schema 3)."""
        return self.extra.get("competitors") or {}

    @property
    def also(self) -> dict[str, Any]:
        """Metrics reported beside the benchmark's own, each with its scores and summary (schema 3)."""
        return self.extra.get("also") or {}

    @property
    def figures(self) -> list[str]:
        """File names of the figures the run drew, beside the result."""
        return self.extra.get("figures") or []

    @property
    def budget(self) -> dict[str, Any] | None:
        """Training examples against the paper profile's (schema 4)."""
        return self.extra.get("budget")

    @property
    def settings(self) -> dict[str, Any]:
        """The ``--set`` changes of an experiment (``overrides.set``, schema 4); empty for a profile's run."""
        return (self.extra.get("overrides") or {}).get("set") or {}

    @property
    def weights(self) -> str | None:
        """The file name of the trained model's weights, beside the result."""
        return self.extra.get("weights")

    @property
    def user_images(self) -> dict[str, Any] | None:
        """The user's image folder a run was scored on (``--images``), in place of a paper's dataset."""
        return self.extra.get("user_images")

    def to_json(self) -> dict[str, Any]:
        """The result as the JSON object it was read from (in the same key order)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "order")}
        values.update(self.extra)
        order = list(self.order) + [key for key in values if key not in self.order]
        return {key: values[key] for key in order}


def write_schema(path: Path = SCHEMA_FILE) -> None:
    path.write_text(json.dumps(schema(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_schema(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_FILE)
