"""Long and device-specific checks, deselected by default (``pytest -m slow``, ``pytest -m gpu``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import metabench
from metabench.compare import check, load_frame
from metabench.episodes import ClassBank, EpisodeShape, freeze


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("benchmark", ["omniglot-5w1s", "omniglot-20w5s"])
def test_quick_profile_reaches_its_floor(benchmark: str, data_dir: Path, tmp_path: Path) -> None:
    """The quick profile, run in full, clears the floor its spec records (about 12 minutes each on 2 cores)."""
    metabench.run_benchmark("protonet", benchmark=benchmark, profile="quick", output=tmp_path)
    outcome = check(load_frame([tmp_path]))
    assert bool(outcome["passed"].all()), outcome["reason"].tolist()


@pytest.mark.gpu
def test_frozen_episodes_are_identical_on_cuda_and_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    images = torch.randint(0, 256, (40, 20, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    shape = EpisodeShape(5, 1, 15)
    on_cpu = freeze(ClassBank(images), shape, 200, seed=0, key={})
    cuda_bank = ClassBank(images.cuda())
    on_cuda = freeze(cuda_bank, shape, 200, seed=0, key={})
    assert on_cpu.digest == on_cuda.digest
    assert torch.equal(
        cuda_bank.gather(on_cuda.index, shape).query_x.cpu(), ClassBank(images).gather(on_cpu.index, shape).query_x
    )


@pytest.mark.gpu
@pytest.mark.data
def test_smoke_run_on_cuda_scores_the_cpu_episodes(data_dir: Path, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    gpu, _ = metabench.run_benchmark(
        "protonet", benchmark="omniglot-5w1s", profile="smoke", device="cuda", output=tmp_path / "gpu"
    )
    cpu, _ = metabench.run_benchmark(
        "protonet", benchmark="omniglot-5w1s", profile="smoke", device="cpu", output=tmp_path / "cpu"
    )
    assert gpu["test_episodes"]["digest"] == cpu["test_episodes"]["digest"]
    assert gpu["environment"]["device"].startswith("cuda")
