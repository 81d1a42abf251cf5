"""The result schema and atomic writes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import metabench
from metabench import results, writing
from metabench.errors import ResultError
from metabench.registry_loader import all_specs


def minimal() -> dict[str, Any]:
    return {
        "schema_version": results.SCHEMA_VERSION,
        "paper": "protonet",
        "title": "t",
        "benchmark": "omniglot-5w1s",
        "profile": "smoke",
        "spec_file": "registry/protonet.toml",
        "spec_sha256": "0" * 64,
        "protocol": {
            "dataset": "omniglot",
            "split": "protonet",
            "image_size": 28,
            "ways": 5,
            "shots": 1,
            "queries": 15,
            "metric": "accuracy",
            "direction": "higher",
            "transductive": False,
            "test_part": "test",
        },
        "hyperparameters": {},
        "budget": {"examples": 1000, "paper_examples": 4000, "share": 0.25},
        "seed": 0,
        "test_episodes": {"count": 2, "seed": 0, "digest": "ab" * 32},
        "scores": [100.0, 80.0],
        # exactly what check recomputes from the two scores (std sqrt(200), 1.96 std / sqrt(2))
        "summary": {"mean": 90.0, "ci95": 19.59963984540054, "std": 14.142135623730951, "n": 2},
        "reported": None,
        "verdict": {"verdict": "no target", "difference": float("nan"), "band": float("nan"), "rule": ""},
        "targets": {"chance": 20.0, "floor": None, "min_above_chance": 20.0},
        "curve": [],
        "timing": {
            "train_seconds": 1.0,
            "eval_seconds": 1.0,
            "wall_seconds": 2.0,
            "train_steps": 1,
            "train_episodes_per_second": 1.0,
            "eval_episodes_per_second": 2.0,
        },
        "environment": {"device": "cpu", "torch": "2", "python": "3.11", "cpu": "x"},
        "git": {"commit": "abc", "dirty": False},
        "command": "metabench run protonet",
        "created": "2026-01-01T00:00:00Z",
    }


def test_a_complete_result_validates_and_round_trips(tmp_path: Path) -> None:
    path = results.write_atomic(minimal(), tmp_path / "r.json")
    assert results.read(path)["scores"] == [100.0, 80.0]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d.pop("command"), "missing key 'command'"),
        (lambda d: d["summary"].pop("ci95"), "missing key summary.'ci95'"),
        (lambda d: d.update(seed="0"), "'seed' has the wrong type"),
        (lambda d: d.update(seed=True), "'seed' has the wrong type"),
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d.update(scores=[1.0]), "1 scores for 2 episodes"),
        (lambda d: d.update(scores=["a", "b"]), "scores must be numbers"),
    ],
)
def test_invalid_results_name_the_key(change, fragment: str) -> None:
    data = copy.deepcopy(minimal())
    change(data)
    with pytest.raises(ResultError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        results.validate(data, "r.json")


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    bad = minimal()
    bad["hyperparameters"] = {"not json": object()}
    with pytest.raises(TypeError):
        results.write_atomic(bad, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []
    invalid = minimal()
    invalid.pop("paper")
    with pytest.raises(ResultError):
        results.write_atomic(invalid, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_results_are_reported_with_their_path(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{ half")
    with pytest.raises(ResultError, match=r"broken\.json: not valid JSON"):
        results.read(broken)
    with pytest.raises(ResultError, match="no such file"):
        results.find([tmp_path / "missing"])


def test_find_skips_checkpoints_and_hidden_folders(tmp_path: Path) -> None:
    results.write_atomic(minimal(), tmp_path / "protonet" / "a.json")
    (tmp_path / ".checkpoints").mkdir()
    (tmp_path / ".checkpoints" / "x.json").write_text(json.dumps({}))
    assert [p.name for p in results.find([tmp_path])] == ["a.json"]


def test_compare_prints_reported_numbers_with_the_papers_decimals(tmp_path: Path) -> None:
    from metabench import compare

    data = minimal()
    data["benchmark"] = "omniglot-20w1s"
    results.write_atomic(data, tmp_path / "r.json")
    shown = compare.display_frame(compare.load_frame([tmp_path]))
    assert shown["reported"].tolist() == ["96.0"]


def test_a_schema_4_result_states_its_budget_and_older_ones_need_not() -> None:
    data = minimal()
    data["budget"]["share"] = 0.5
    with pytest.raises(ResultError, match=r"budget\.share"):
        results.validate(data)
    del data["budget"]
    with pytest.raises(ResultError, match="missing key 'budget'"):
        results.validate(data)
    data["schema_version"] = 3
    results.validate(data)


# --------------------------------------------------------------------------- what a run writes

PROFILES = [
    pytest.param(spec, bench, profile, id=f"{key}-{bench.id}-{name}")
    for key, spec in sorted(all_specs().items())
    for bench in spec.benchmarks
    for name, profile in sorted(bench.profiles.items())
]


@pytest.mark.parametrize(("spec", "bench", "profile"), PROFILES)
def test_every_profiles_targets_are_stored_as_the_file_will_read_them(spec: Any, bench: Any, profile: Any) -> None:
    """A vector benchmark's quick floors are a tuple in the spec; written as such, the result failed its
    schema at the very end of a 40-minute MANN run (`targets.floor is (37.4, ...)`). Every profile's
    targets must survive the JSON round trip unchanged and be the types the schema accepts."""
    targets = writing.targets_of(bench, profile)
    assert json.loads(json.dumps(targets)) == targets
    floor = targets["floor"]
    assert floor is None or isinstance(floor, int | float) or all(isinstance(v, int | float) for v in floor)


def test_a_result_that_fails_validation_leaves_no_weights_or_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(data: dict, source: str) -> None:
        raise ResultError(f"{source}: refused by the test")

    monkeypatch.setattr(results, "validate", refuse)
    with pytest.raises(ResultError, match="refused by the test"):
        metabench.run_benchmark("maml", benchmark="sinusoid-5shot", profile="smoke", train_episodes=4, output=tmp_path)
    left = [p.name for p in (tmp_path / "maml").iterdir() if p.is_file()]
    assert left == [], left
