"""The published result schema is the validator's tables, every committed result meets it, and the typed
result round-trips every committed file exactly (schemas 1 to 4 keep loading)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from metabench.result_schema import SCHEMA_FILE, Result, schema

RESULTS = sorted((Path(__file__).resolve().parents[1] / "results").rglob("*.json"))


def test_published_schema_is_the_generated_one() -> None:
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == schema(), "run python -m metabench.result_schema and commit schema/result.schema.json"
    jsonschema.Draft202012Validator.check_schema(committed)


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_result_meets_the_schema_and_round_trips(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]
    assert not errors, errors
    typed = Result.from_json(data, str(path))
    assert json.dumps(typed.to_json()) == json.dumps(data), "key for key, in order"


def test_schema_rejects_a_result_missing_its_digest() -> None:
    data = json.loads(RESULTS[0].read_text(encoding="utf-8"))
    del data["test_episodes"]["digest"]
    validator = jsonschema.Draft202012Validator(schema())
    assert any("digest" in e.message for e in validator.iter_errors(data))
