"""The contract every registry entry meets, so a new paper is tested the moment its spec exists.

For each benchmark of each spec: the spec loads and names an importable reproduction; the smoke
profile runs end to end through the real runner; its result validates against the schema and records
the frozen episodes' digest; accuracy clears chance by the margin the spec states; and learning
happened: the trained model beats the same model untrained on the same frozen episodes (of the test
part, or of the part a generalisation benchmark's smoke profile names in ``learning_part``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import metabench
from metabench import results
from metabench.data import channels, load_parts
from metabench.episodes import EpisodeShape
from metabench.evaluate import evaluate
from metabench.registry_loader import all_specs, implementation
from metabench.reproduction import TaskInfo
from tests.conftest import archive_folder, needs_archive

CASES = [(spec.key, bench.id) for spec in all_specs().values() for bench in spec.benchmarks]


def _code_path(paper: str, benchmark: str) -> str:
    """What a smoke run exercises apart from the episode shape: a benchmark that differs from an earlier one
    of its paper only in ways, shots and queries runs the same code on a differently sized episode."""
    bench = metabench.load_spec(paper).benchmark(benchmark)
    smoke = bench.profile("smoke")
    model = sorted((k, repr(v)) for k, v in smoke.model.items())
    return repr((paper, bench.dataset, bench.split, bench.metric, bench.transductive, bench.sequence, model))


#: Benchmarks whose smoke run trains exactly what another benchmark's does and only tests the result on
#: another network: the learned optimizer's MNIST generalisation variants meta-train on the base network
#: (about two minutes each under ``pytest -n 2``); the variant networks themselves are unit-tested.
SAME_TRAINING = {
    ("learned-optimizer", "mnist-40-sigmoid"),
    ("learned-optimizer", "mnist-20-20-sigmoid"),
    ("learned-optimizer", "mnist-20-relu"),
}


def _smoke_cases() -> list[object]:
    """Every benchmark's smoke run; one per code path in the default run, the shape variants (and the
    variants in ``SAME_TRAINING``) marked slow (``pytest -m slow`` runs them), which keeps the default
    suite within its 15-minute budget."""
    seen: set[str] = set()
    cases: list[object] = []
    for paper, benchmark in CASES:
        path = _code_path(paper, benchmark)
        slow = path in seen or (paper, benchmark) in SAME_TRAINING
        dataset = metabench.load_spec(paper).benchmark(benchmark).dataset
        marks = ([pytest.mark.slow] if slow else []) + ([pytest.mark.data] if needs_archive(dataset) else [])
        cases.append(pytest.param(paper, benchmark, marks=marks))
        seen.add(path)
    return cases


@pytest.mark.parametrize(("paper", "benchmark"), CASES)
def test_spec_loads_with_every_profile(paper: str, benchmark: str) -> None:
    """The spec names an importable reproduction that builds a module for every profile (that every
    profile exists and states its floor and margin is the parser's job, tested in ``test_spec.py``)."""
    spec = metabench.load_spec(paper)
    bench = spec.benchmark(benchmark)
    cls = implementation(spec)
    task = TaskInfo(channels(bench.dataset), bench.image_size, bench.ways, bench.shots)
    for profile in bench.profiles.values():
        assert isinstance(cls.build(profile.model, task), torch.nn.Module)


@pytest.mark.parametrize(("paper", "benchmark"), _smoke_cases())
def test_smoke_run_completes_validates_and_learns(
    paper: str, benchmark: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Gated on the benchmark's own dataset only: generated sources and synthetic miniImageNet always run,
    an Omniglot or MNIST case skips only when its own archive is missing (and is marked ``data``)."""
    bench = metabench.load_spec(paper).benchmark(benchmark)
    # miniImageNet cannot be shipped: its benchmarks run on the synthetic folder in the Ravi layout.
    folder = request.getfixturevalue("mini_root") if bench.dataset == "miniimagenet" else archive_folder(bench.dataset)
    _, path = metabench.run_benchmark(paper, benchmark=benchmark, profile="smoke", output=tmp_path, data_dir=folder)
    stored = results.read(path)
    assert stored["paper"] == paper and stored["benchmark"] == benchmark
    assert stored["test_episodes"]["count"] == len(stored["scores"])
    assert not list(tmp_path.glob(".checkpoints/*")), "a finished run leaves no checkpoint"

    smoke = bench.profile("smoke")
    banks = load_parts(bench.dataset, bench.split, bench.image_size, data_dir=folder, progress=False)

    def frozen_of(part: str):
        return banks[part].freeze(
            EpisodeShape(bench.ways, bench.shots, bench.queries, bench.sequence),
            smoke.test_episodes,
            bench.test_seed,
            {"dataset": bench.dataset, "split": bench.split, "part": part, "image_size": bench.image_size},
        )

    frozen = frozen_of(bench.test_part)
    assert frozen.digest == stored["test_episodes"]["digest"], "the result names the frozen episodes it used"
    trained = metabench.load_model(path)
    trained_scores = evaluate(trained, frozen, banks[bench.test_part], smoke.eval_batch, metric=bench.metric)
    assert torch.allclose(trained_scores, torch.tensor(stored["scores"], dtype=torch.float64), atol=1e-3)

    # Learning is checked on the test part, or on the part the smoke profile names (a generalisation
    # benchmark: transfer to its test distribution is the claim the run reports, not the path it proves).
    part = smoke.learning_part or bench.test_part
    if part != bench.test_part:
        frozen = frozen_of(part)
        trained_scores = evaluate(trained, frozen, banks[part], smoke.eval_batch, metric=bench.metric)
    assert bench.better_than(float(trained_scores.mean()), bench.chance, smoke.min_above_chance), "smoke beats chance"
    torch.manual_seed(stored["seed"])
    untrained = implementation(metabench.load_spec(paper)).build(
        smoke.model, TaskInfo(channels(bench.dataset), bench.image_size, bench.ways, bench.shots)
    )
    untrained_scores = evaluate(untrained, frozen, banks[part], smoke.eval_batch, metric=bench.metric)
    # 2 points of accuracy; otherwise a tenth of the untrained model's score's size (an error, or a
    # log-likelihood, which is negative: the margin must stay positive so that getting worse fails)
    margin = 2.0 if bench.metric == "accuracy" else 0.1 * abs(float(untrained_scores.mean()))
    improved = bench.better_than(float(trained_scores.mean()), float(untrained_scores.mean()), margin)
    assert improved, "training improved on the initial model"
