"""The command line as a researcher meets it: help, listings, runs, errors, compare and check."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import metabench
from metabench.cli import app
from metabench.errors import MetabenchError
from metabench.registry_loader import get_spec

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["list"],
        ["show"],
        ["run"],
        ["compare"],
        ["check"],
        ["data"],
        ["data", "verify"],
        ["data", "info"],
        ["data", "download"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output and len(result.output) > 200


def test_run_help_documents_every_option() -> None:
    text = invoke("run", "--help").output
    for option in (
        "--shots",
        "--ways",
        "--dataset",
        "--benchmark",
        "--seed",
        "--episodes",
        "--profile",
        "--output",
        "--device",
        "--resume",
        "--fresh",
        "--stop-after",
        "--data-dir",
        "--variant",
    ):
        assert option in text


def test_list_and_show_print_the_reported_numbers() -> None:
    listing = invoke("list")
    assert listing.exit_code == 0 and "protonet" in listing.output and "98.8" in listing.output
    shown = invoke("show", "protonet")
    assert shown.exit_code == 0 and "Snell" in shown.output and "omniglot-20w5s" in shown.output
    assert "train_ways" in shown.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["show", "protonett"], "did you mean 'protonet'"),
        (["run", "metanett"], "unknown paper 'metanett'"),
        (["run", "protonet", "--benchmark", "omniglot-5w2s"], "has no benchmark 'omniglot-5w2s'"),
        (["run", "protonet", "--ways", "7"], "no benchmark matching --ways 7"),
        (["run", "protonet", "--shots", "3"], "no benchmark matching --shots 3"),
        (["run", "protonet", "--shots", "1", "--episodes", "50"], "too few"),
        (["run", "protonet", "--resume", "--fresh"], "contradict"),
        (["compare", "no/such/folder"], "no such file or folder"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args: list[str], fragment: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two smoke results on the same frozen episodes (seeds 0 and 1) in one folder."""
    folder = tmp_path_factory.mktemp("results")
    if not (Path(__import__("os").environ.get("METABENCH_DATA", "")) / "omniglot").is_dir():
        pytest.skip("needs the Omniglot archives")
    for seed in (0, 1):
        metabench.run_benchmark("protonet", benchmark="omniglot-5w1s", profile="smoke", seed=seed, output=folder)
    return folder


@pytest.mark.data
def test_run_prints_paper_reproduced_and_verdict(tmp_path: Path, data_dir: Path) -> None:
    result = invoke("run", "protonet", "--shots", "1", "--profile", "smoke", "--output", str(tmp_path))
    assert result.exit_code == 0, result.output
    for fragment in ("omniglot-5w1s", "paper's default", "98.8", "reproduced", "verdict", "below"):
        assert fragment in result.output
    # The 1-shot 5-way training also serves the 1-shot 20-way row, scored and written on its own.
    assert "One training serves 2 benchmarks" in result.output
    written = sorted(p.name.split("__")[0] for p in tmp_path.glob("protonet/*.json"))
    assert written == ["omniglot-20w1s", "omniglot-5w1s"]


@pytest.mark.data
@pytest.mark.parametrize("fmt", ["markdown", "csv", "json"])
def test_compare_writes_every_format(smoke_results: Path, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"table.{fmt}"
    # --by-run: one row per result (two seeds of one benchmark would be aggregated by default).
    result = invoke("compare", str(smoke_results), "--by-run", "--format", fmt, "--output", str(target))
    assert result.exit_code == 0
    text = target.read_text()
    assert "omniglot-5w1s" in text and "98.8" in text
    if fmt == "json":
        rows = json.loads(text)
        assert len(rows) == 2 and {r["seed"] for r in rows} == {0, 1}
    if fmt == "markdown":
        assert text.startswith("| paper | benchmark | reported | reproduced | difference | verdict | profile")


@pytest.mark.data
def test_compare_plots_learning_curves(smoke_results: Path, tmp_path: Path) -> None:
    target = tmp_path / "curves.png"
    result = invoke("compare", str(smoke_results), "--plot", str(target))
    assert result.exit_code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 5000


@pytest.mark.data
def test_compare_table_and_paired(smoke_results: Path) -> None:
    table = invoke("compare", str(smoke_results))
    assert table.exit_code == 0 and "reported vs reproduced" in table.output
    a, b = sorted(smoke_results.glob("protonet/*.json"))
    paired = invoke("compare", "--paired", str(a), str(b))
    assert paired.exit_code == 0
    assert "shared episodes" in paired.output and "p =" in paired.output


def _rescored(data: dict, mean: float, ci95: float) -> None:
    """Give a scalar result per-episode scores with this mean and interval, and the summary and verdict
    they imply, so that a doctored result is a consistent one (``check`` recomputes everything)."""
    from metabench.stats import Z95, mean_interval
    from metabench.verify import judged

    n = len(data["scores"])
    spread = ci95 * math.sqrt(n) / Z95 * math.sqrt((n - 1) / n)
    scores = [mean + (spread if i % 2 == 0 else -spread) for i in range(n - n % 2)] + [mean] * (n % 2)
    summary = mean_interval(scores)
    data["scores"] = scores
    data["summary"] = {"mean": summary.mean, "ci95": summary.half_width, "std": summary.std, "n": summary.n}
    judged = judged(data)
    data["verdict"] = {
        "verdict": judged.verdict,
        "difference": judged.difference,
        "band": judged.band,
        "rule": judged.rule,
    }


def _doctored(source: Path, target_dir: Path, **changes) -> Path:
    data = json.loads(source.read_text())
    for dotted, value in changes.items():
        keys = dotted.split("__")
        holder = data
        for key in keys[:-1]:
            holder = holder[key]
        holder[keys[-1]] = value
    if any(key.startswith("summary__") for key in changes):
        _rescored(data, data["summary"]["mean"], data["summary"]["ci95"])
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    target.write_text(json.dumps(data))
    return target


@pytest.mark.data
def test_check_passes_good_results_and_fails_shortfalls(smoke_results: Path, tmp_path: Path) -> None:
    passed = invoke("check", str(smoke_results))
    assert passed.exit_code == 0 and "all 2 results pass" in passed.output and "checks" not in passed.output
    claims = invoke("check", str(Path(__file__).resolve().parents[1] / "results" / "learned-optimizer"))
    assert claims.exit_code == 0 and "checks: components and competitors are checked one by one" in claims.output
    source = sorted(smoke_results.glob("protonet/*.json"))[0]
    floor = get_spec("protonet").benchmark("omniglot-5w1s").profile("quick").floor
    _doctored(source, tmp_path / "quick", profile="quick", summary__mean=floor - 0.5)
    failed = invoke("check", str(tmp_path / "quick"))
    assert failed.exit_code == 1
    assert "below the quick floor" in failed.output and "by 0.50" in failed.output
    _doctored(source, tmp_path / "paper", profile="paper", summary__mean=90.0, summary__ci95=0.5)
    failed = invoke("check", str(tmp_path / "paper"))
    assert failed.exit_code == 1 and "below the paper's 98.8" in failed.output
    _doctored(source, tmp_path / "ok", profile="paper", summary__mean=98.81, summary__ci95=0.2)
    assert invoke("check", str(tmp_path / "ok")).exit_code == 0
    _doctored(source, tmp_path / "smoke", summary__mean=25.0)
    assert invoke("check", str(tmp_path / "smoke")).exit_code == 1


@pytest.mark.data
def test_paired_refuses_results_on_different_episodes(smoke_results: Path, tmp_path: Path) -> None:
    a = sorted(smoke_results.glob("protonet/*.json"))[0]
    other = _doctored(a, tmp_path, test_episodes__digest="f" * 64)
    result = runner.invoke(app, ["compare", "--paired", str(a), str(other)])
    assert result.exit_code == 2 and "different test episodes" in result.output


def test_corrupt_result_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 2 and "x.json: not valid JSON" in result.output


def test_data_verify_reports_corrupt_archives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METABENCH_DATA", raising=False)
    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    (tmp_path / "data" / "omniglot" / "images_background.zip").write_bytes(b"<html>not a zip</html>")
    result = runner.invoke(app, ["data", "verify", "omniglot", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert "corrupt" in result.output and "missing" in result.output


@pytest.mark.data
def test_data_verify_and_info_on_the_real_archives(data_dir: Path, tmp_path: Path) -> None:
    local = tmp_path / "omniglot"
    local.mkdir()
    shutil.copy(data_dir / "omniglot" / "images_evaluation.zip", local)
    verified = invoke("data", "verify", "omniglot", "--data-dir", str(tmp_path))
    assert verified.exit_code == 0 and verified.output.count("ok") == 2
    info = invoke("data", "info")
    assert info.exit_code == 0 and "brendenlake/omniglot" in info.output


@pytest.mark.data
def test_compare_plots_curves_against_training_examples(smoke_results: Path, tmp_path: Path) -> None:
    target = tmp_path / "by-examples.png"
    result = invoke("compare", str(smoke_results), "--plot", str(target), "--plot-against", "examples")
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_points_scale_the_recorded_budget_by_the_steps_done() -> None:
    from metabench.compare_runs import curve_points

    data = {
        "protocol": {"metric": "accuracy"},
        "budget": {"examples": 648000, "paper_examples": 7200000, "share": 0.09},
        "timing": {"train_steps": 1800},
        "curve": [
            {"step": 450, "seconds": 10.0, "val_accuracy": 90.0},
            {"step": 1800, "seconds": 40.0, "val_accuracy": 97.0},
            {"step": 1800, "seconds": 41.0, "train_loss": 0.1},  # no validation here: not a point
        ],
    }
    # 1,800 steps of 360 images each: a quarter of the steps is a quarter of the 648,000 examples
    assert curve_points(data, "examples") == [(162000.0, 90.0), (648000.0, 97.0)]
    assert curve_points(data, "time") == [(10.0, 90.0), (40.0, 97.0)]
    assert curve_points({**data, "budget": None}, "examples") == [], "no budget and no settings to derive it"
    older = {  # before schema 4 recorded the budget: derived from the stored settings and the registry
        **data,
        "budget": None,
        "paper": "protonet",
        "benchmark": "omniglot-5w1s",
        "hyperparameters": {
            "train_episodes": 1800,
            "meta_batch": 1,
            "train_ways": 60,
            "train_shots": 1,
            "train_queries": 5,
        },
    }
    assert curve_points(older, "examples") == curve_points(data, "examples")
    with pytest.raises(MetabenchError, match="unknown curve axis"):
        curve_points(data, "epochs")


def test_the_cli_offers_every_curve_axis_and_no_other() -> None:
    from metabench.cli import CurveAxis
    from metabench.compare_runs import CURVE_AXES

    assert {axis.value for axis in CurveAxis} == set(CURVE_AXES)
