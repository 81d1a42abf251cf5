"""The runner: determinism, checkpoints, --stop-after/--resume, interrupts, and benchmark selection."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import metabench
from metabench.errors import InterruptedRun, MetabenchError
from metabench.registry_loader import get_spec
from metabench.reproductions.protonet import PrototypicalNetwork
from metabench.runner import checkpoint_path, pick_device, resolve_benchmark

SMOKE = {"benchmark": "omniglot-5w1s", "profile": "smoke"}


@pytest.mark.data
def test_same_seed_same_numbers_and_stop_then_resume_matches(data_dir: Path, tmp_path: Path) -> None:
    straight, _ = metabench.run_benchmark("protonet", **SMOKE, output=tmp_path / "a")
    again, _ = metabench.run_benchmark("protonet", **SMOKE, output=tmp_path / "b")
    assert again["scores"] == straight["scores"]

    with pytest.raises(InterruptedRun, match="stopped after step 7 of 20"):
        metabench.run_benchmark("protonet", **SMOKE, output=tmp_path / "c", stop_after=7)
    assert checkpoint_path(tmp_path / "c", "protonet", "omniglot-5w1s", "smoke", 0).exists()
    assert not list((tmp_path / "c").glob("protonet/*.json")), "no result for an unfinished run"
    with pytest.raises(MetabenchError, match="add --resume to continue it"):
        metabench.run_benchmark("protonet", **SMOKE, output=tmp_path / "c")
    resumed, _ = metabench.run_benchmark("protonet", **SMOKE, output=tmp_path / "c", resume=True)
    assert resumed["scores"] == straight["scores"], "a resumed run gives the uninterrupted run's numbers"

    def trace(curve: list[dict[str, float]]) -> list[float]:
        return [p[key] for p in curve for key in ("step", "train_loss", "train_accuracy", "val_accuracy")]

    assert trace(resumed["curve"]) == pytest.approx(trace(straight["curve"]))
    assert not checkpoint_path(tmp_path / "c", "protonet", "omniglot-5w1s", "smoke", 0).exists()

    other_seed, _ = metabench.run_benchmark("protonet", **SMOKE, output=tmp_path / "d", seed=1)
    assert other_seed["scores"] != straight["scores"]
    assert other_seed["test_episodes"]["digest"] == straight["test_episodes"]["digest"], "test episodes are frozen"


@pytest.mark.data
def test_ctrl_c_mid_step_checkpoints_the_finished_step_and_resumes_exactly(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT after the fifth forward pass (batch norm's running statistics already updated) lets
    that step finish and checkpoints the boundary after it, so nothing is redone or half-saved."""
    original = PrototypicalNetwork.meta_loss
    calls = {"n": 0}

    def interrupting(self, batch):
        out = original(self, batch)
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(PrototypicalNetwork, "meta_loss", interrupting)
    with pytest.raises(InterruptedRun, match="interrupted at step 5 of 20"):
        metabench.run_benchmark("protonet", **SMOKE, output=tmp_path)
    assert calls["n"] == 5, "no step starts after the signal"
    assert checkpoint_path(tmp_path, "protonet", "omniglot-5w1s", "smoke", 0).exists()
    assert not list(tmp_path.rglob("*.json"))
    monkeypatch.setattr(PrototypicalNetwork, "meta_loss", original)
    result, _ = metabench.run_benchmark("protonet", **SMOKE, output=tmp_path, resume=True)
    straight, _ = metabench.run_benchmark("protonet", **SMOKE, output=tmp_path / "straight")
    assert result["timing"]["train_steps"] == 20
    assert result["scores"] == straight["scores"], "the resumed run gives the uninterrupted numbers"
    strip = [[{k: v for k, v in p.items() if k != "seconds"} for p in r["curve"]] for r in (result, straight)]
    assert strip[0] == strip[1]


@pytest.mark.data
def test_resume_refuses_a_checkpoint_of_other_settings(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InterruptedRun):
        metabench.run_benchmark("protonet", **SMOKE, output=tmp_path, stop_after=3)
    with pytest.raises(MetabenchError, match="belongs to different settings"):
        metabench.run_benchmark("protonet", **SMOKE, output=tmp_path, resume=True, train_episodes=30)
    fresh, _ = metabench.run_benchmark("protonet", **SMOKE, output=tmp_path, fresh=True)
    assert fresh["timing"]["train_steps"] == 20


@pytest.mark.data
def test_too_few_test_episodes_are_refused_outside_smoke(tmp_path: Path) -> None:
    with pytest.raises(MetabenchError, match="use at least 1000"):
        metabench.run_benchmark(
            "protonet", benchmark="omniglot-5w1s", profile="paper", test_episodes=600, output=tmp_path
        )
    with pytest.raises(MetabenchError, match="use at least 600"):
        metabench.run_benchmark(
            "protonet", benchmark="omniglot-5w1s", profile="quick", test_episodes=599, output=tmp_path
        )


def test_benchmark_selection_by_shots_ways_and_dataset() -> None:
    spec = get_spec("protonet")
    assert resolve_benchmark(spec, None, shots=1, ways=None, dataset=None)[0].id == "omniglot-5w1s"
    assert resolve_benchmark(spec, None, shots=5, ways=None, dataset=None)[0].id == "omniglot-5w5s"
    assert resolve_benchmark(spec, None, shots=5, ways=20, dataset=None)[0].id == "omniglot-20w5s"
    chosen, why = resolve_benchmark(spec, None, shots=None, ways=20, dataset="omniglot")
    assert chosen.id == "omniglot-20w1s" and "smallest matching" in why
    with pytest.raises(MetabenchError, match="no benchmark matching --ways 7"):
        resolve_benchmark(spec, None, shots=None, ways=7, dataset=None)
    with pytest.raises(MetabenchError, match="contradicts benchmark"):
        resolve_benchmark(spec, "omniglot-5w1s", shots=5, ways=None, dataset=None)


def test_unavailable_devices_are_refused_clearly() -> None:
    import torch

    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(MetabenchError, match="no CUDA device"):
            pick_device("cuda")
    with pytest.raises(MetabenchError, match="unknown device"):
        pick_device("tpu")
