"""Sweeps (issue 18): selection, the manifest and job states, local and SLURM executors, pre-emption and
resume, and aggregation over seeds.

The local sweep runs two smoke benchmarks x two seeds twice: first with every run told to stop at step 50
(as SIGTERM from a scheduler would), then again, which must resume each from its checkpoint to the numbers
of an uninterrupted run. The SLURM test (marker ``slurm``) runs the same grid through ``sbatch`` on the
single-node cluster ``scripts/slurm-up.sh`` starts, requeues one job mid-run with ``scontrol requeue`` and
requires every number to equal the local sweep's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

import metabench
from metabench import aggregate, sweeps
from metabench.cli import app
from metabench.errors import MetabenchError

PAPER = "maml"
BENCHMARKS = ["sinusoid-5shot", "sinusoid-5shot-1step"]
SEEDS = [0, 1]
runner = CliRunner()


# --- selection, options, slots ------------------------------------------------------------------------


def test_seeds_parse_ranges_lists_and_refuse_nonsense() -> None:
    assert sweeps.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert sweeps.parse_seeds("3, 0-1,3") == [3, 0, 1]
    for bad in ("4-1", "a", "1-", ""):
        with pytest.raises(MetabenchError):
            sweeps.parse_seeds(bad)


def test_selection_by_names_globs_and_all() -> None:
    assert sweeps.select(["maml"], ["sinusoid-5shot"]) == [("maml", "sinusoid-5shot")]
    globbed = sweeps.select(["maml"], ["sinusoid-*"])
    assert ("maml", "sinusoid-5shot-1step") in globbed and all(b.startswith("sinusoid-") for _, b in globbed)
    assert sweeps.select([], ["shrinkage/sinusoid-*"]) == [("shrinkage", "sinusoid-5shot")]
    everything = sweeps.select([], [], everything=True)
    assert len(everything) == len(metabench.list_benchmarks())
    with pytest.raises(MetabenchError, match="no paper matches"):
        sweeps.select(["mamll"], [])
    with pytest.raises(MetabenchError, match="no benchmark matches"):
        sweeps.select(["maml"], ["omniglot-99w"])
    with pytest.raises(MetabenchError, match="nothing selected"):
        sweeps.select([], [])


def test_local_slots_never_exceed_the_machine() -> None:
    cores = len(os.sched_getaffinity(0))
    slots = sweeps.local_slots(jobs=64, cpus_per_job=1, gpus=0)
    assert len(slots) == cores
    assert sorted(c for s in slots for c in s.cpus or []) == sorted(os.sched_getaffinity(0))
    assert all(s.env["OMP_NUM_THREADS"] == "1" for s in slots)
    assert len(sweeps.local_slots(jobs=None, cpus_per_job=10_000, gpus=0)) == 1
    gpu_slots = sweeps.local_slots(jobs=8, cpus_per_job=None, gpus=3)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpu_slots] == ["0", "1", "2"]


def test_slurm_options_from_toml_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text('[slurm]\npartition = "gpu"\ntime = 600\ngpus = 1\nsetup = ["module load cuda"]\n')
    options = sweeps.slurm_options(config, time=30, gpus=None)
    assert (options.partition, options.time, options.gpus, options.setup) == ("gpu", 30, 1, ["module load cuda"])
    config.write_text("[slurm]\npartitoin = 'gpu'\n")
    with pytest.raises(MetabenchError, match="partition"):
        sweeps.slurm_options(config)


def test_without_submitit_the_slurm_executor_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)
    result = runner.invoke(
        app, ["sweep", "--paper", PAPER, "--benchmark", BENCHMARKS[0], "--executor", "slurm", "--output", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert 'pip install "metabench[cluster]"' in result.output


def test_list_json_is_list_benchmarks() -> None:
    result = runner.invoke(app, ["list", "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = pd.DataFrame(json.loads(result.output))
    frame = metabench.list_benchmarks()
    assert list(listed["benchmark"]) == list(frame["benchmark"])
    assert {"paper", "benchmark", "protocol", "reported", "default"} <= set(frame.columns)


def test_status_reads_failed_and_running_jobs_from_the_folder(tmp_path: Path) -> None:
    """A failed job shows the last line of its log; a live one its step and a linear ETA."""
    keys = [sweeps.JobKey(PAPER, BENCHMARKS[0], "smoke", s) for s in (0, 1)]
    manifest: dict[str, Any] = {"schema": sweeps.SCHEMA, "jobs": {}}
    for key in keys:
        manifest["jobs"][key.name] = {**dataclasses.asdict(key), "executor": "local", "submissions": 1}
    sweeps.write_manifest(tmp_path, manifest)
    (state0, log0), (state1, log1) = (sweeps.job_paths(tmp_path, k) for k in keys)
    log0.parent.mkdir(parents=True)
    log0.write_text("== start\nTraceback ...\nRuntimeError: out of memory\n")
    state0.parent.mkdir(parents=True)
    state0.write_text(json.dumps({"state": "failed", "returncode": 1}))
    log1.write_text("== start\nsinusoid-5shot step 25/100  loss 1.0  train 1.0 mse  10s\n")
    state1.write_text(json.dumps({"state": "running", "pid": os.getpid(), "host": socket.gethostname()}))
    rows = {r["seed"]: r for r in sweeps.status(tmp_path)}
    assert rows[0]["state"] == "failed" and rows[0]["detail"] == "RuntimeError: out of memory"
    assert rows[1]["state"] == "running" and (rows[1]["step"], rows[1]["total"]) == (25, 100)
    assert rows[1]["eta_seconds"] == pytest.approx(30.0)
    shown = runner.invoke(app, ["sweep", "status", str(tmp_path)])
    assert "out of memory" in shown.output and "step 25/100" in shown.output


# --- aggregation over seeds -----------------------------------------------------------------------------


def _frame(means: list[float], pm_kind: str, pm: float, reported: float = 50.0) -> pd.DataFrame:
    from metabench.compare import COLUMNS

    rows = []
    for seed, mean in enumerate(means):
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            paper="reptile", benchmark="b", profile="paper", seed=seed, mean=mean, ci95=0.1, reported=reported,
            reported_pm=pm, pm_kind=pm_kind, reported_decimals=2, verdict="below", direction="higher",
            created=f"2026-01-0{seed + 1}", path=f"r{seed}.json", train_seconds=1.0, device="cpu", dirty=False,
            figures="", budget=1.0, episodes=600,
        )  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def test_t_interval_across_seeds() -> None:
    interval = aggregate.seed_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.std == 1.0
    assert interval.half_width == pytest.approx(4.303 / math.sqrt(3))
    assert aggregate.t975(200) == pytest.approx(1.972, abs=1e-3)


def test_by_seed_judges_the_mean_over_seeds_against_what_the_plus_minus_means() -> None:
    """Each seed is 'below' on its tight episode interval, but a paper ± that is a std over runs allows
    for training spread: the mean over seeds is within 1.96 std + the seed t-interval."""
    frame = _frame([48.0, 48.5, 49.0], "std-runs", 1.0)
    collapsed = aggregate.by_seed(frame)
    assert len(collapsed) == 1
    row = collapsed.iloc[0]
    assert row["seeds"] == 3 and row["mean"] == pytest.approx(48.5)
    assert row["band"] == pytest.approx(1.959964 + 4.303 * 0.5 / math.sqrt(3))
    assert row["verdict"] == "reproduced"
    assert "sd 0.50 (paper 1)" in aggregate.render(collapsed, "markdown", seed_means=True)
    assert aggregate.wanted(frame, None) and not aggregate.wanted(frame.iloc[:1], None)
    # A bare printed number allows only its rounding: the same seeds fall short of it.
    assert aggregate.by_seed(_frame([40.0, 40.5, 41.0], "none", 0.0)).iloc[0]["verdict"] == "below"


# --- real sweeps ----------------------------------------------------------------------------------------


def _means(folder: Path) -> dict[tuple[str, int], list[float]]:
    frame = metabench.load_results(folder)
    out: dict[tuple[str, int], list[float]] = {}
    for path, bench, seed in zip(frame["path"], frame["benchmark"], frame["seed"], strict=True):
        data = json.loads(Path(path).read_text())
        out[(bench, int(seed))] = [data["summary"]["mean"], *data["scores"][:20]]
    return out


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two smoke benchmarks x two seeds, each stopped at step 50 by SIGTERM, then resumed by a rerun."""
    folder = tmp_path_factory.mktemp("sweep-local")
    options = {"profiles": "smoke", "seeds": "0-1", "output": folder, "jobs": 2, "cpus_per_job": 1, "device": "cpu"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METABENCH_SIGNAL_AT", "SIGTERM:step:50")
        metabench.sweep(PAPER, BENCHMARKS, **options)
    states = metabench.sweep_status(folder)
    assert set(states["state"]) == {"interrupted"}, states
    assert all("--resume" in d for d in states["detail"]), states["detail"]
    manifest = metabench.sweep(PAPER, BENCHMARKS, **options)
    assert all(job["submissions"] == 2 for job in manifest["jobs"].values())
    return folder


def test_local_sweep_resumes_interrupted_jobs_to_the_uninterrupted_numbers(local_sweep: Path, tmp_path: Path) -> None:
    rows = metabench.sweep_status(local_sweep)
    assert len(rows) == 4 and set(rows["state"]) == {"done"}
    for log in (local_sweep / ".sweep" / "logs").glob("*.log"):
        assert "Resuming from step 5" in log.read_text()
    # The reference: one of the jobs run in one go, with the job's one thread (another thread count sums in
    # another order, and a few hundred training steps carry that difference into the scores).
    subprocess.run(
        [sys.executable, "-m", "metabench", "run", PAPER, "--benchmark", BENCHMARKS[0], "--profile", "smoke",
         "--seed", "1", "--device", "cpu", "--output", str(tmp_path), "--no-progress"],
        check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )  # fmt: skip
    assert _means(tmp_path)[(BENCHMARKS[0], 1)] == _means(local_sweep)[(BENCHMARKS[0], 1)]
    # Again: everything is done, nothing is submitted.
    manifest = metabench.sweep(PAPER, BENCHMARKS, profiles="smoke", seeds="0-1", output=local_sweep, jobs=2)
    assert all(job["submissions"] == 2 for job in manifest["jobs"].values())
    # compare aggregates the seeds by default; check judges the aggregate.
    shown = runner.invoke(app, ["compare", str(local_sweep), "--format", "json"])
    collapsed = json.loads(shown.output)
    assert sorted(r["benchmark"] for r in collapsed) == sorted(BENCHMARKS)
    assert all(r["seeds"] == 2 and r["seed_list"] == "0,1" for r in collapsed)
    assert (
        len(json.loads(runner.invoke(app, ["compare", str(local_sweep), "--by-run", "--format", "json"]).output)) == 4
    )
    checked = runner.invoke(app, ["check", str(local_sweep)])
    assert checked.exit_code == 0, checked.output


def _slurm_answers() -> str:
    """Why the SLURM test cannot run here, or ``""`` when sbatch is on PATH and the cluster answers."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (start a cluster with scripts/slurm-up.sh, as .ci/run does)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return f"sinfo failed: {error}"
    if not any(s.strip() in ("idle", "mixed", "allocated") for s in states.splitlines()):
        return f"the SLURM cluster has no usable node (sinfo: {states.strip() or 'no answer'})"
    return ""


@pytest.mark.slurm
@pytest.mark.skipif(bool(_slurm_answers()), reason=_slurm_answers() or "SLURM answers")
def test_slurm_sweep_through_sbatch_requeued_mid_run_gives_the_same_numbers(local_sweep: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sweep-slurm"
    result = runner.invoke(
        app,
        ["sweep", "--paper", PAPER, "--benchmark", BENCHMARKS[0], "--benchmark", BENCHMARKS[1], "--profile",
         "smoke", "--seeds", "0-1", "--executor", "slurm", "--cpus-per-job", "1", "--time", "10",
         "--array-parallelism", "2", "--output", str(folder), "--no-wait"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((folder / ".sweep" / "manifest.json").read_text())
    ids = {name: job["scheduler_id"] for name, job in manifest["jobs"].items()}
    assert all(job["executor"] == "slurm" for job in manifest["jobs"].values())
    assert len({i.split("_")[0] for i in ids.values()}) == 1  # one job array
    script = next((folder / ".sweep" / "slurm").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --requeue" in script

    target = sweeps.JobKey(PAPER, BENCHMARKS[0], "smoke", 0)
    log = sweeps.job_paths(folder, target)[1]
    deadline = time.monotonic() + 120
    while not (log.exists() and "step 50/" in log.read_text()):
        assert time.monotonic() < deadline, "the job never reached step 50"
        time.sleep(0.1)
    subprocess.run(["scontrol", "requeue", ids[target.name]], check=True)

    rows = sweeps.wait(folder, poll_seconds=1.0, timeout=240)
    assert {r["state"] for r in rows} == {"done"}, rows
    text = log.read_text()
    assert "SIGTERM" in text and "Resuming from step" in text, text
    assert _means(folder) == _means(local_sweep)
    shown = runner.invoke(app, ["sweep", "status", str(folder), "--format", "json"])
    assert [r["state"] for r in json.loads(shown.output)] == ["done"] * 4
