"""``--set``: values parsed as TOML, validated like the spec, recorded, and never judged as the paper's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import metabench
from metabench import overrides
from metabench.cli import app
from metabench.errors import MetabenchError, SpecError

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lr=1e-4", ("lr", 1e-4)),
        ("model.scale=10", ("model.scale", 10)),
        ("model.normalize_query=false", ("model.normalize_query", False)),
        ('model.init="released"', ("model.init", "released")),
        ("optimizer=sgd", ("optimizer", "sgd")),
        ("model.mlp_hidden=[64, 32]", ("model.mlp_hidden", [64, 32])),
    ],
)
def test_values_are_toml_or_a_bare_word(text: str, expected: tuple[str, object]) -> None:
    assert overrides.parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["lr", "=3", "lr=", "lr=1e-4 2", "model.scale=[1,", "lr=tru e"])
def test_malformed_assignments_are_refused(text: str) -> None:
    with pytest.raises(MetabenchError):
        overrides.parse_assignment(text)


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(MetabenchError, match="twice"):
        overrides.parse_assignments(["lr=0.1", "lr=0.2"])


def _profile(paper: str = "matchingnet", benchmark: str = "omniglot-5w1s", name: str = "quick"):
    bench = metabench.load_spec(paper).benchmark(benchmark)
    return bench, bench.profile(name)


def test_a_changed_profile_keeps_its_targets_and_changes_only_what_was_set() -> None:
    bench, quick = _profile()
    changed = overrides.apply(quick, {"lr": 0.002, "model.scale": 10}, bench.reported, ["scale", "normalize_query"])
    assert changed.lr == 0.002 and changed.model["scale"] == 10
    assert (changed.floor, changed.floor_note, changed.train_episodes) == (
        quick.floor,
        quick.floor_note,
        quick.train_episodes,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr": "fast"}, "expected a number"),
        ({"meta_batch": 0}, "positive integer"),
        ({"optimizer": "lbfgs"}, "not one of"),
        ({"floor": 0.0}, "not a setting"),
        ({"model.scael": 10}, "no such model setting"),
        ({"lr.rate": 1}, "not a setting"),
    ],
)
def test_a_wrong_key_or_type_is_the_spec_parsers_error(settings: dict[str, object], message: str) -> None:
    bench, quick = _profile()
    with pytest.raises(SpecError, match=message):
        overrides.apply(quick, settings, bench.reported, ["scale"])


def test_an_experiment_is_recorded_named_apart_and_held_to_nothing(tmp_path: Path) -> None:
    common = ["run", "maml", "--benchmark", "sinusoid-5shot", "--profile", "smoke", "--output", str(tmp_path)]
    done = runner.invoke(
        app, [*common, "--set", "lr=0.003", "--no-progress", "--only-this-benchmark"], catch_exceptions=False
    )
    assert done.exit_code == 0, done.output
    [path] = (tmp_path / "maml").glob("*.json")
    stored = json.loads(path.read_text())
    assert stored["overrides"]["set"] == {"lr": 0.003} and stored["hyperparameters"]["lr"] == 0.003
    assert f"smoke+set-{overrides.digest({'lr': 0.003})}" in path.name, "its name never collides with the profile's"
    checked = runner.invoke(app, ["check", str(tmp_path)], catch_exceptions=False)
    assert checked.exit_code == 0 and "experiment" in checked.output
    shown = runner.invoke(app, ["compare", str(tmp_path), "--format", "markdown"], catch_exceptions=False)
    assert "experiment: --set lr=0.003" in shown.output and "budget 0.14%" in shown.output


def test_a_bad_set_is_refused_before_anything_runs(tmp_path: Path) -> None:
    done = runner.invoke(
        app, ["run", "maml", "--benchmark", "sinusoid-5shot", "--set", "model.nope=1", "--output", str(tmp_path)]
    )
    assert done.exit_code == 2 and "no such model setting" in done.output
    assert not (tmp_path / "maml").exists()
