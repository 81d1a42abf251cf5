"""`run --tracker tensorboard|wandb`: the curve streamed as it is recorded, the final numbers at the end;
each test skips when its tracker is not installed (neither is a dependency)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabench import results, trackers
from metabench.cli import app
from metabench.errors import MetabenchError
from tests.test_imagefolder import make_folder

REPO = Path(__file__).resolve().parents[1]
RESULT = sorted((REPO / "results" / "protonet").glob("omniglot-5w1s__quick__*.json"))[0]
runner = CliRunner()


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return found


def test_tensorboard_gets_the_curve_and_the_result(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install tensorboard)")
    result = results.read(RESULT)
    tracking = trackers.open_trackers(["tensorboard"], tmp_path, "run-1")
    for point in result["curve"]:
        tracking.log_point(point)
    tracking.finish(result, RESULT)
    scalars = _scalars(tmp_path / ".tensorboard" / "run-1")
    assert [s for s, _ in scalars["train/loss"]] == [p["step"] for p in result["curve"]]
    assert scalars["val/accuracy"][-1][1] == pytest.approx(result["curve"][-1]["val_accuracy"])
    assert scalars["test/mean"][0][1] == pytest.approx(result["summary"]["mean"])


def test_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb not installed (pip install wandb)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = results.read(RESULT)
    tracking = trackers.open_trackers(["wandb"], tmp_path, "run-1")
    for point in result["curve"]:
        tracking.log_point(point)
    tracking.finish(result, RESULT)
    runs = list((tmp_path / ".wandb").rglob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))


def test_unknown_or_missing_tracker_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MetabenchError, match="unknown tracker 'tensorbord'") as caught:
        trackers.open_trackers(["tensorbord"], tmp_path, "x")
    assert "tensorboard" in (caught.value.hint or "")
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(MetabenchError, match="pip install wandb"):
        trackers.open_trackers(["wandb"], tmp_path, "x")


def test_a_run_streams_its_curve_to_tensorboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install tensorboard)")
    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path / "cache"))
    parts = {"train": range(6), "val": range(6, 11), "test": range(11, 16)}
    folder = make_folder(tmp_path / "mine", classes=0, per_class=16, parts=parts)
    out = tmp_path / "out"
    args = ["run", "protonet", "--shots", "1", "--profile", "smoke", "--images", str(folder), "--output", str(out)]
    result = runner.invoke(app, [*args, "--tracker", "tensorboard"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    scalars = _scalars(out / ".tensorboard")
    assert [s for s, _ in scalars["val/accuracy"]] == [10, 20]  # the smoke profile validates every 10 steps
    assert "test/mean" in scalars
    assert len(results.find([out])) == 1  # the tracker's files are not taken for results
