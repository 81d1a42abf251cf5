"""`metabench estimate`: a few timed steps extrapolated to a profile, writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from metabench.cli import app
from metabench.estimate import estimate, hours_text
from metabench.plan import RunRequest

runner = CliRunner()


def test_the_estimate_extrapolates_the_timed_rates_to_the_profiles_counts(tmp_path: Path) -> None:
    request = RunRequest(paper="maml", benchmark="sinusoid-5shot", profile="smoke", output=tmp_path, progress=False)
    found = estimate(request, steps=3, warmup=1, console=Console(quiet=True))
    assert (found.paper, found.benchmark, found.profile, found.steps_timed) == ("maml", "sinusoid-5shot", "smoke", 3)
    assert found.train_steps > 3, "the smoke profile's step count, not the timed count"
    assert found.seconds_per_step > 0 and found.cpu_seconds_per_step > 0
    assert found.test_seconds > 0
    assert found.train_seconds == pytest.approx(found.seconds_per_step * found.train_steps, rel=1e-12)
    parts = found.train_seconds + found.validation_seconds + found.test_seconds
    assert found.total_seconds == pytest.approx(parts, rel=1e-12)
    assert list(tmp_path.iterdir()) == [], "an estimate writes no result and no checkpoint"


def test_a_learned_optimizer_is_timed_in_whole_batches(tmp_path: Path) -> None:
    request = RunRequest(
        paper="learned-optimizer", benchmark="quadratic-10d", profile="smoke", output=tmp_path, progress=False
    )
    found = estimate(request, steps=3, warmup=1, console=Console(quiet=True))
    per_batch = 2  # the smoke profile's horizon / unroll: a batch started mid-way would be refused
    assert found.steps_timed == 4 and found.steps_timed % per_batch == 0


def test_the_command_prints_both_clocks_and_writes_json(tmp_path: Path) -> None:
    target = tmp_path / "estimate.json"
    smoke = ["--benchmark", "sinusoid-5shot", "--profile", "smoke", "--steps", "2"]
    got = runner.invoke(app, ["estimate", "maml", *smoke, "--json", str(target)])
    assert got.exit_code == 0, got.output
    assert "wall clock" in got.output and "CPU time" in got.output
    data = json.loads(target.read_text())
    assert data["benchmark"] == "sinusoid-5shot" and data["total_seconds"] > 0


@pytest.mark.parametrize(("args", "named"), [(["--steps", "0"], "--steps"), (["--warmup", "-1"], "--warmup")])
def test_bad_counts_are_one_line_errors(args: list[str], named: str) -> None:
    got = runner.invoke(app, ["estimate", "maml", "--benchmark", "sinusoid-5shot", *args])
    assert got.exit_code == 2 and named in got.output and "Traceback" not in got.output


def test_an_unknown_paper_is_named() -> None:
    got = runner.invoke(app, ["estimate", "nosuchpaper"])
    assert got.exit_code == 2 and "nosuchpaper" in got.output


@pytest.mark.parametrize(
    ("seconds", "text"), [(12, "12 s"), (14 * 60, "14 min"), (2.1 * 3600, "2.1 h"), (3.4 * 86400, "3.4 days")]
)
def test_times_are_given_in_the_unit_a_reader_plans_with(seconds: float, text: str) -> None:
    assert hours_text(seconds) == text
