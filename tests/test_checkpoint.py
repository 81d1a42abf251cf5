"""Checkpoints: read as data only, damaged ones refused cleanly, one run per checkpoint, results never
overwritten, and an interrupt (SIGINT or SIGTERM, at any moment) resumes to the uninterrupted numbers."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import metabench
from metabench import checkpoint
from metabench.checkpoint import SIGNAL_HOOK, Checkpointer, remove_orphans, restore_rng, rng_state, write_new
from metabench.cli import app
from metabench.errors import InterruptedRun, MetabenchError, TerminatedRun
from metabench.runner import checkpoint_path
from metabench.writing import publish_weights as _publish_weights
from tests.resume import result_numbers

PROTONET = ["run", "protonet", "--benchmark", "omniglot-5w1s", "--profile", "smoke", "--no-progress"]
SINUSOID = {"benchmark": "sinusoid-5shot", "profile": "smoke", "train_episodes": 60}


class _WritesMarker:
    """A pickle payload that, when unpickled, creates the file ``marker`` (as any code could)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def _plant(path: Path, marker: Path, as_torch_zip: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": checkpoint.FORMAT, "fingerprint": "x", "payload": {"model": _WritesMarker(marker)}}
    if as_torch_zip:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))


def _one_line_error(output: str) -> str:
    """The error line of a CLI failure; asserts there is no traceback."""
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("as_torch_zip", [True, False], ids=["torch-zip", "bare-pickle"])
def test_a_planted_checkpoint_runs_no_code_on_resume(tmp_path: Path, as_torch_zip: bool) -> None:
    # The payload is live: loading it the way the runner used to (weights_only=False) runs its code.
    probe = tmp_path / "probe"
    _plant(tmp_path / "probe.pt", probe / "ran", as_torch_zip)
    probe.mkdir()
    with contextlib.suppress(RuntimeError):  # a bare pickle is no torch file, but its code ran as torch read it
        torch.load(tmp_path / "probe.pt", weights_only=False)
    assert (probe / "ran").exists(), "the planted payload must be one that runs when unpickled"

    output, marker = tmp_path / "out", tmp_path / "ran"
    planted = checkpoint_path(output, "protonet", "omniglot-5w1s", "smoke", 0)
    _plant(planted, marker, as_torch_zip)
    outcome = CliRunner().invoke(app, [*PROTONET, "--output", str(output), "--resume"])
    assert outcome.exit_code == 2
    assert not marker.exists(), "nothing in a checkpoint may run"
    line = _one_line_error(outcome.output)
    assert str(planted) in line.replace("\n", "")
    assert "--fresh" in outcome.output
    assert planted.exists(), "a refused checkpoint is left for the user to inspect"


def _saved_checkpoint(tmp_path: Path) -> Path:
    path = checkpoint_path(tmp_path, "protonet", "omniglot-5w1s", "smoke", 0)
    with Checkpointer(path, "not checked here") as ckpt:
        ckpt.save({"model": {"w": torch.arange(10000.0)}, "state": {"step": 3}}, 3)
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_is_a_one_line_error_offering_fresh(tmp_path: Path, damage: str) -> None:
    path = _saved_checkpoint(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(
        {"truncated": whole[: len(whole) // 2], "garbage": b"\x00not a checkpoint" * 9, "empty": b""}[damage]
    )
    outcome = CliRunner().invoke(app, [*PROTONET, "--output", str(tmp_path), "--resume"])
    assert outcome.exit_code == 2
    assert "is damaged" in _one_line_error(outcome.output)
    assert "--fresh" in outcome.output


def test_an_older_format_or_other_settings_are_refused_with_fresh_offered(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path, "protonet", "omniglot-5w1s", "smoke", 0)
    path.parent.mkdir(parents=True)
    torch.save({"fingerprint": "abc", "model": {}, "torch_rng": torch.zeros(3)}, path)  # format 1's layout
    outcome = CliRunner().invoke(app, [*PROTONET, "--output", str(tmp_path), "--resume"])
    assert outcome.exit_code == 2
    assert "older metabench" in _one_line_error(outcome.output) and "--fresh" in outcome.output

    path.unlink()
    _saved_checkpoint(tmp_path)
    outcome = CliRunner().invoke(app, [*PROTONET, "--output", str(tmp_path), "--resume"])
    assert outcome.exit_code == 2
    assert "belongs to different settings" in _one_line_error(outcome.output)


def test_a_live_run_holds_its_checkpoint_against_a_second_run_and_fresh(tmp_path: Path) -> None:
    path = _saved_checkpoint(tmp_path)
    with Checkpointer(path, "the live run"):
        for extra in (["--resume"], ["--fresh"], []):
            outcome = CliRunner().invoke(app, [*PROTONET, "--output", str(tmp_path), *extra])
            assert outcome.exit_code == 2
            line = _one_line_error(outcome.output)
            assert "another run of these settings is in progress" in line
            assert f"pid {os.getpid()}" in line
            assert path.exists(), "--fresh must not delete a live run's checkpoint"
    assert not path.with_name(path.name + ".lock").exists(), "the lock file goes with its holder"
    with Checkpointer(path, "the next run"):
        pass  # free again once released


def test_a_stale_lock_file_and_part_files_of_a_killed_run_are_taken_over(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path, "p", "b", "smoke", 0)
    path.parent.mkdir(parents=True)
    path.with_name(path.name + ".lock").write_text('{"pid": 1, "host": "gone", "since": "then"}')
    part = path.with_name(f".{path.name}.abc123.part")
    part.write_bytes(b"half a checkpoint")
    with Checkpointer(path, "f") as ckpt:
        assert not part.exists()
        record = json.loads(ckpt.lock_path.read_text())
        assert record["pid"] == os.getpid()


def test_checkpoint_payloads_and_generators_round_trip_as_plain_data(tmp_path: Path) -> None:
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    state = rng_state()
    with Checkpointer(tmp_path / "c.pt", "f") as ckpt:
        ckpt.save({"rng": state, "curve": [{"step": 1, "loss": 0.5}], "name": "x"}, 1)
        loaded = ckpt.load()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    restore_rng(loaded["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    assert loaded["curve"] == [{"step": 1, "loss": 0.5}] and loaded["name"] == "x"


def test_results_are_never_overwritten_and_get_unique_names(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    write_new(target, lambda t: t.write_text("first"))
    with pytest.raises(FileExistsError):
        write_new(target, lambda t: t.write_text("second"))
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"], "no .part file is left behind"

    wanted = tmp_path / "p" / "b__smoke__seed0__20260101T000000Z.json"
    first = _publish_weights(wanted, {"w": torch.ones(2)})
    (first).write_text("{}")
    second = _publish_weights(wanted, {"w": torch.zeros(2)})
    assert (first.name, second.name) == (wanted.name, "b__smoke__seed0__20260101T000000Z-2.json")
    assert torch.equal(torch.load(first.with_suffix(".pt"))["w"], torch.ones(2))


def test_leftovers_of_a_killed_result_write_are_removed_and_nothing_else(tmp_path: Path) -> None:
    prefix = "b__smoke__seed0__"
    keep = [f"{prefix}1.json", f"{prefix}1.pt", f"{prefix}1.png", "b__smoke__seed1__9.pt", "notes.txt"]
    gone = [f"{prefix}2.pt", f"{prefix}2.curves.csv", f".{prefix}3.json.x1.part", f".{prefix}3.pt.y2.part"]
    for name in keep + gone:
        (tmp_path / name).write_text("x")
    removed = remove_orphans(tmp_path, prefix)
    assert sorted(p.name for p in removed) == sorted(gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


@pytest.fixture(scope="module")
def sinusoid_straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ...]:
    output = tmp_path_factory.mktemp("straight")
    metabench.run_benchmark("maml", **SINUSOID, output=output)
    (numbers,) = result_numbers(output)
    return numbers


@pytest.mark.parametrize(
    ("name", "phase", "step"),
    [
        ("SIGINT", "step", 7),  # mid-step: after the optimiser step, before the averaging window is updated
        ("SIGTERM", "validation", 50),
        ("SIGINT", "checkpoint-write", 30),  # while the periodic checkpoint is being written
        ("SIGTERM", "checkpoint-write", 60),  # while the final checkpoint is being written
    ],
)
def test_a_signal_at_any_phase_stops_at_the_boundary_and_resumes_exactly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sinusoid_straight: tuple[Any, ...],
    name: str,
    phase: str,
    step: int,
) -> None:
    monkeypatch.setenv(SIGNAL_HOOK, f"{name}:{phase}:{step}")
    expected = TerminatedRun if name == "SIGTERM" else InterruptedRun
    # whatever was installed before (Python's default, or SIG_IGN in a pytest-xdist worker) comes back
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with pytest.raises(expected, match=f"at step {step} of 60") as stopped:
        metabench.run_benchmark("maml", **SINUSOID, output=tmp_path)
    assert stopped.value.exit_code == (143 if name == "SIGTERM" else 130)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before, "handlers are restored"
    monkeypatch.delenv(SIGNAL_HOOK)
    resumed, _ = metabench.run_benchmark("maml", **SINUSOID, output=tmp_path, resume=True)
    assert resumed["timing"]["train_steps"] == 60
    assert result_numbers(tmp_path) == [sinusoid_straight]


def test_the_signal_hook_is_validated() -> None:
    with pytest.raises(MetabenchError, match="SIGNAME:PHASE:STEP"):
        checkpoint._parse_hook("SIGINT:step")


# -- a real process, signalled at random moments -------------------------------------------------------


def _metabench(output: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "metabench", *PROTONET, "--output", str(output), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
@pytest.mark.data
def test_sigint_and_sigterm_at_random_moments_of_a_real_run_resume_to_the_uninterrupted_numbers(
    data_dir: Path, tmp_path: Path
) -> None:
    """ProtoNets (batch norm: a forward pass changes running statistics) under a smoke profile, signalled
    at 4 fixed phases (mid-step, validation, checkpoint writing) and 8 random moments of the whole run
    (start-up, data loading, training, validation, testing), each resumed and compared bit for bit."""
    env = {"METABENCH_DATA": str(data_dir)}
    began = time.perf_counter()
    straight = _metabench(tmp_path / "straight", env=env)
    assert straight.wait(timeout=300) == 0, straight.stderr.read() if straight.stderr else ""
    wall = time.perf_counter() - began
    (reference,) = result_numbers(tmp_path / "straight")

    moments: list[tuple[str, str | float]] = [
        ("SIGINT", "step:5"),
        ("SIGTERM", "validation:10"),
        ("SIGINT", "checkpoint-write:10"),
        ("SIGTERM", "validation:20"),
    ]
    draw = random.Random(14)
    moments += [(("SIGINT", "SIGTERM")[i % 2], draw.uniform(0.3, wall)) for i in range(8)]
    for trial, (name, when) in enumerate(moments):
        output = tmp_path / f"trial{trial}"
        hook = {SIGNAL_HOOK: f"{name}:{when}"} if isinstance(when, str) else {}
        process = _metabench(output, env={**env, **hook})
        if isinstance(when, float):
            time.sleep(when)
            process.send_signal(signal.Signals[name])
        code = process.wait(timeout=300)
        log = process.stderr.read() if process.stderr else ""
        if hook:
            assert code == (143 if name == "SIGTERM" else 130), log
        # A signal may land before the handlers exist (start-up) or after the result is written.
        assert code in (0, 130, 143, -signal.Signals[name], 1), log
        assert "Traceback" not in log or code in (1, -signal.Signals[name]), log
        if code != 0:
            resumed = _metabench(output, "--resume", env=env)
            assert resumed.wait(timeout=300) == 0, resumed.stderr.read() if resumed.stderr else ""
        found = result_numbers(output)
        assert found and all(numbers == reference for numbers in found), f"trial {trial}: {name} at {when}"
