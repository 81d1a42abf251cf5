"""`metabench bench-steps`: both allocator settings run, paired, and the table's arithmetic holds (not speed)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from metabench import allocator
from metabench.cli import app
from metabench.step_speed import Clocks, measure, summary

runner = CliRunner()
glibc = pytest.mark.skipif(allocator._libc() is None, reason="the settings compared exist on glibc only")


def test_the_rows_follow_from_the_step_times() -> None:
    clocks = {"before": Clocks([0.4, 0.2, 0.3], [1.0, 0.5, 0.6], [10, 20, 30], [0.1, 0.1, 0.1])}
    clocks["after"] = Clocks([0.2, 0.2, 0.1], [0.4, 0.5, 0.2], [0, 0, 3], [0.0, 0.0, 0.0])
    before, after = summary("maml", clocks, flops=3 * 10**9, rate=100e9)
    assert (before["config"], after["config"]) == ("before", "after")
    assert before["steps_per_second"] == pytest.approx(1 / 0.3) and after["steps_per_second"] == pytest.approx(5.0)
    assert before["wall_steps_per_second"] == pytest.approx(1 / 0.6)
    assert after["gflops"] == pytest.approx(3 / 0.2) and after["fraction_of_matmul"] == pytest.approx(0.15)
    assert before["minor_faults_per_step"] == 20 and after["system_seconds_per_step"] == 0.0
    # paired: the median of 0.4/0.2, 0.2/0.2, 0.3/0.1, not the ratio of the medians
    assert after["speed_vs_before"] == pytest.approx(statistics.median([2.0, 1.0, 3.0]))
    assert before["speed_vs_before"] == 1.0


@pytest.mark.data
@glibc
@pytest.mark.parametrize(("pairing", "methods"), [("lockstep", ["mann"]), ("in-process", ["protonet", "mann"])])
def test_both_settings_run_on_the_runners_own_step(data_dir: Path, pairing: str, methods: list[str]) -> None:
    quiet = Console(quiet=True)
    report = measure(methods, "smoke", 2, 1, data_dir, quiet, pairing=pairing, seconds=0.1)
    assert [(r["method"], r["config"]) for r in report["rows"]] == [
        (m, c) for m in methods for c in ("before", "after")
    ]
    for row in report["rows"]:
        assert row["steps"] == 2 and row["steps_per_second"] > 0 and row["gflop_per_step"] > 0
        assert row["peak_rss_mib"] > 0
        assert row["gflops"] == pytest.approx(row["gflop_per_step"] / row["cpu_seconds_per_step"])
        assert row["fraction_of_matmul"] == pytest.approx(row["gflops"] / report["matmul_gflops"])
    assert report["threads"] == 1 and report["matmul_gflops"] > 0 and report["pairing"] == pairing


@pytest.mark.data
@glibc
def test_the_command_prints_the_table_and_writes_json(data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "steps.json"
    args = ["bench-steps", "--method", "maml", "--profile", "smoke", "--rounds", "1", "--warmup", "0", "--pairing"]
    args.append("in-process")
    got = runner.invoke(app, [*args, "--matmul-seconds", "0.1", "--json", str(target)], terminal_width=200)
    assert got.exit_code == 0, got.output
    assert "x before" in got.output and "maml: after runs at" in got.output
    assert [r["config"] for r in json.loads(target.read_text())["rows"]] == ["before", "after"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--method", "reptile"], "--method reptile"),
        (["--rounds", "0"], "--rounds"),
        (["--warmup", "-1"], "--warmup"),
        (["--matmul-seconds", "0"], "--matmul-seconds"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], named: str) -> None:
    got = runner.invoke(app, ["bench-steps", *args])
    assert got.exit_code == 2 and named in got.output and "Traceback" not in got.output
