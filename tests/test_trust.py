"""`check` cannot be fooled: recomputed summaries, floors that test nothing, dirty code, bad options,
damaged archives (issue 14)."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabench import compare, floors, provenance, verify
from metabench.cli import app
from metabench.data import archives, omniglot
from metabench.errors import DataError, MetabenchError
from metabench.result_schema import Result

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SCALAR = sorted((REPO / "results" / "protonet").glob("omniglot-5w1s__quick__*.json"))[0]
VECTOR = sorted((REPO / "results" / "mann").glob("omniglot-5class__quick__*.json"))[0]
CLAIM = sorted((REPO / "results" / "learned-optimizer").glob("quadratic-10d__*.json"))[0]


def _write(tmp_path: Path, data: dict, name: str = "r.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _diverged_but_reproduced(data: dict) -> None:
    """What 6b953f9 wrote for a run with one NaN episode: NaN summary, verdict still "reproduced"."""
    data["scores"][0] = float("nan")
    data["summary"].update(mean=float("nan"), ci95=float("nan"), std=float("nan"))
    data["verdict"].update(verdict="reproduced", difference=float("nan"), band=float("nan"))


def test_a_diverged_competitor_is_checked_not_refused(tmp_path: Path) -> None:
    """The shrinkage sinusoid paper run: its MAML competitor's MSE overflowed on one task (inf), so the
    paired test has no p-value and the claim is inconclusive; check must recompute that, not call the
    stored infinities forged (inf - inf is NaN)."""
    data = json.loads(CLAIM.read_text())
    sgd = data["competitors"]["sgd"]
    sgd["scores"][0] = float("inf")
    sgd["summary"].update(mean=float("inf"), ci95=float("nan"), std=float("nan"))
    data["claim"]["comparisons"]["sgd"].update(
        mean_difference=float("-inf"), ci95=float("nan"), p_value=float("nan"), verdict="inconclusive"
    )
    data["claim"]["verdict"] = data["verdict"]["verdict"] = "inconclusive"
    assert verify.problems(Result.read(_write(tmp_path, data))) == []


@pytest.mark.parametrize("source", [SCALAR, VECTOR, CLAIM])
def test_committed_results_recompute_to_their_stored_summaries(source: Path) -> None:
    assert verify.problems(Result.read(source)) == []


@pytest.mark.parametrize(
    ("source", "forge", "named"),
    [
        (SCALAR, lambda d: d.update(scores=[0.0] * len(d["scores"])), "summary.mean"),
        (SCALAR, lambda d: d["summary"].update(mean=d["summary"]["mean"] + 0.01), "summary.mean"),
        (SCALAR, lambda d: d["summary"].update(ci95=d["summary"]["ci95"] / 2), "summary.ci95"),
        (SCALAR, lambda d: d["verdict"].update(verdict="reproduced"), "verdict is 'reproduced'"),
        (VECTOR, lambda d: d["components"][2]["summary"].update(mean=90.0), "components[2].summary.mean"),
        (VECTOR, lambda d: d["components"][0]["scores"].__setitem__(0, 1e6), "components[0].summary.mean"),
        (CLAIM, lambda d: d["competitors"]["adam"]["summary"].update(mean=0.0), "competitors.adam.summary.mean"),
        (CLAIM, lambda d: d["claim"]["comparisons"]["sgd"].update(p_value=0.5), "claim.comparisons.sgd.p_value"),
        (SCALAR, lambda d: d["timing"].update(train_steps=0), "never trained"),
        (SCALAR, _diverged_but_reproduced, "but its summary gives 'diverged'"),
    ],
)
def test_a_forged_number_fails_check(tmp_path: Path, source: Path, forge, named: str) -> None:
    data = json.loads(source.read_text())
    forge(data)
    path = _write(tmp_path, data)
    assert any(named in p for p in verify.problems(Result.read(path)))
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1 and named in result.output


def test_rounding_the_stored_scores_stays_within_the_tolerance(tmp_path: Path) -> None:
    """The one difference the bound allows: every score moved by the largest storage rounding."""
    from metabench.stats import mean_interval

    scores = json.loads(SCALAR.read_text())["scores"]
    truth = mean_interval(scores)
    summary = {"mean": truth.mean, "ci95": truth.half_width, "std": truth.std, "n": truth.n}
    assert verify.summary_problems([s + verify.ROUNDING for s in scores], summary, "summary") == []
    assert verify.summary_problems([s + 2 * verify.ROUNDING for s in scores], summary, "summary")


def test_check_refuses_an_empty_selection_unless_allowed(tmp_path: Path) -> None:
    empty = runner.invoke(app, ["check", str(tmp_path)])
    assert empty.exit_code == 2 and "no results found under" in empty.output
    assert runner.invoke(app, ["check", str(tmp_path), "--allow-empty"]).exit_code == 0


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda d: d["summary"].update(mean="high"), "summary.mean"),
        (lambda d: d["components"][1]["summary"].update(n="600"), "components[1].summary.n"),
        (lambda d: d["components"][1].update(reported={"value": 1}), "components[1].reported"),
        (lambda d: d["protocol"].update(direction="up"), "protocol.direction"),
        (lambda d: d["git"].update(commit=7), "git.commit"),
    ],
)
def test_malformed_result_is_one_line_naming_file_and_key(tmp_path: Path, edit, named: str) -> None:
    data = json.loads(VECTOR.read_text())
    edit(data)
    path = _write(tmp_path, data)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2 and str(path) in result.output.replace("\n", "") and named in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_non_utf8_result_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_bytes(b"\xff\xfe{")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 2 and "x.json: not UTF-8" in result.output


@pytest.mark.parametrize(
    ("floor", "baseline", "metric", "direction", "tested"),
    [
        (26.8, 20.0, "accuracy-by-instance", "higher", False),  # MANN's 3rd instance
        (30.0, 20.0, "accuracy", "higher", True),
        (-0.45, -0.25, "log-likelihood-by-context", "higher", False),  # below the trivial predictor
        (0.52, -0.25, "log-likelihood-by-context", "higher", True),
        (2.31, 2.303, "loss", "lower", False),  # learned optimizer, above ln 10
        (0.70, 2.303, "loss", "lower", True),
        (1.8, 90.0, "error", "lower", True),
    ],
)
def test_floor_must_beat_the_trivial_baseline_by_the_margin(floor, baseline, metric, direction, tested) -> None:
    assert (floors.uninformative(floor, baseline, metric, direction) == "") is tested


def test_committed_untested_floors_are_shown_not_passed() -> None:
    checked = compare.check(compare.load_frame([REPO / "results"]))
    experiments = checked["experiment"].fillna("").astype(bool)
    assert all(r.startswith("experiment") for r in checked.loc[experiments, "reason"]), "held to nothing, not tested"
    untested = checked[~checked["tested"] & ~experiments & ~checked["known"]]
    assert checked["passed"].all()
    assert set(untested["benchmark"]) == {
        "omniglot-5class",
        "omniglot-5class-lstm",
        "mnist-completion",
        "mnist-20-20-sigmoid",
    }
    assert all(r.startswith("not regression-tested") for r in untested["reason"])
    shown = compare.display_frame(compare.load_frame([REPO / "results" / "mann"]))
    assert (shown["notes"] == "floor not regression-tested").sum() == 9


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_dirty_run_keeps_a_patch_that_rebuilds_its_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    _git(tmp_path, "init", "-q", str(repo))
    (repo / "bench" / "a.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    monkeypatch.setattr(provenance, "PROJECT_ROOT", repo)
    assert provenance.code_state() == ({"commit": _git(repo, "rev-parse", "HEAD").strip(), "dirty": False}, b"")
    (repo / "bench" / "a.py").write_text("x = 2\n")
    (repo / "bench" / "new.py").write_text("y = 3\n")
    (repo / "notes.txt").write_text("not code\n")
    git, patch = provenance.code_state()
    assert git["dirty"] and git["untracked_in_patch"] == ["bench/new.py"] and len(git["diff_sha256"]) == 64
    kept = provenance.keep_patch(git, patch, tmp_path / "out" / "r.json")
    assert kept["patch"] == "r.patch" and (tmp_path / "out" / "r.patch").read_bytes() == patch
    assert provenance.patch_note(kept, tmp_path / "out" / "r.json") == "dirty: r.patch"
    _git(repo, "stash", "-q", "--include-untracked")
    _git(repo, "apply", str(tmp_path / "out" / "r.patch"))
    assert (repo / "bench" / "a.py").read_text() == "x = 2\n" and (repo / "bench" / "new.py").read_text() == "y = 3\n"


def test_committed_dirty_results_without_a_patch_load_and_are_marked() -> None:
    frame = compare.load_frame([REPO / "results" / "protonet"])
    assert set(frame["patch"]) <= {"", "dirty (no patch recorded)"} and frame["dirty"].any()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--seed", "99999999999999999999999"], "--seed 99999999999999999999999"),
        (["--seed", "-1"], "--seed -1"),
        (["--stop-after", "-3"], "--stop-after -3"),
        (["--stop-after", "0"], "--stop-after 0"),
        (["--train-episodes", "0"], "--train-episodes 0"),
        (["--train-episodes", "-5"], "--train-episodes -5"),
        (["--ways", "0"], "--ways 0"),
        (["--shots", "0"], "--shots 0"),
        (["--data-dir", "/no/such/folder"], "--data-dir /no/such/folder"),
    ],
)
def test_bad_run_options_fail_before_anything_loads(args: list[str], named: str, monkeypatch) -> None:
    import metabench.data as data

    monkeypatch.setattr(data, "load_parts", lambda *a, **k: pytest.fail("data loaded"))
    result = runner.invoke(app, ["run", "protonet", "--profile", "smoke", *args])
    assert result.exit_code == 2 and named in result.output and "Traceback" not in result.output


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    run = runner.invoke(app, ["run", "protonet", "--profile", "smoke", "--output", str(tmp_path / "f")])
    assert run.exit_code == 2 and "is a file, not a folder" in run.output
    table = runner.invoke(app, ["compare", str(SCALAR), "--output", str(tmp_path / "f" / "t.txt")])
    assert table.exit_code == 2 and "is a file, not a folder" in table.output
    plot = runner.invoke(app, ["compare", str(SCALAR), "--plot", str(tmp_path)])
    assert plot.exit_code == 2 and "is a folder" in plot.output


def test_compare_output_writes_the_plain_table(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", str(SCALAR), "--output", str(tmp_path / "t.txt")])
    assert result.exit_code == 0
    text = (tmp_path / "t.txt").read_text()
    assert "omniglot-5w1s" in text and "\x1b[" not in text


def test_data_verify_with_every_archive_missing_exits_1(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("METABENCH_DATA", raising=False)
    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path))
    result = runner.invoke(app, ["data", "verify"])
    assert result.exit_code == 1 and "no archive found" in result.output


def test_missing_registry_folder_warns(monkeypatch, capsys) -> None:
    from metabench import registry_loader

    monkeypatch.setenv("METABENCH_REGISTRY", "/no/such/registry")
    registry_loader._warn_missing.cache_clear()
    registry_loader.spec_files()
    assert "METABENCH_REGISTRY=/no/such/registry is not a folder" in capsys.readouterr().err


def test_archive_damaged_after_verification_is_a_clean_error(tmp_path: Path, monkeypatch) -> None:
    """Same size, same mtime, damaged bytes: the marker passes it, decoding must not crash."""
    import os

    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path / "cache"))
    png = io.BytesIO()
    from PIL import Image

    Image.new("L", (8, 8), 255).save(png, format="PNG")
    path = tmp_path / "images_background.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images_background/Latin/character01/0001_01.png", png.getvalue() * 4)
    archive = archives.CATALOGUE["omniglot"][0]
    archives._remember_verified(archive, path)
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    middle = raw.index(b"0001_01.png") + 40
    raw[middle : middle + 16] = bytes(16)
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert archives._marker(archive, path).is_file()
    with pytest.raises(DataError, match=r"images_background\.zip cannot be decoded") as caught:
        omniglot._decode([path], 8)
    assert "metabench data verify" in str(caught.value)
    assert not archives._marker(archive, path).is_file()
    assert isinstance(caught.value, MetabenchError)
