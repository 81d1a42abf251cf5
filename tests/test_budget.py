"""The training budget: examples counted per kind of task, shares against the paper profile, labels."""

from __future__ import annotations

import pytest

import metabench
from metabench.budget import budget_of, examples_of, format_share
from metabench.registry_loader import all_specs

BENCHMARKS = [
    pytest.param(spec.key, b.id, id=f"{spec.key}-{b.id}") for spec in all_specs().values() for b in spec.benchmarks
]


@pytest.mark.parametrize(("paper", "benchmark"), BENCHMARKS)
def test_a_paper_profile_is_the_whole_budget_and_smaller_profiles_are_less(paper: str, benchmark: str) -> None:
    bench = metabench.load_spec(paper).benchmark(benchmark)
    assert budget_of(bench, bench.profile("paper")).share == 1.0
    assert 0 < budget_of(bench, bench.profile("smoke")).share < budget_of(bench, bench.profile("quick")).share <= 1.0


def test_episodic_images_counted_by_hand() -> None:
    bench = metabench.load_spec("protonet").benchmark("omniglot-5w1s")
    # paper: 20,000 episodes of 60 classes x (1 shot + 5 queries); quick: 1,800 such episodes
    assert examples_of(bench, bench.profile("paper")) == 20_000 * 60 * 6
    assert budget_of(bench, bench.profile("quick")).label() == "budget 9.0%"


def test_supervised_minibatches_and_optimisation_problems_counted_by_hand() -> None:
    hyper = metabench.load_spec("hypernetwork").benchmark("mnist-hyper")
    assert examples_of(hyper, hyper.profile("paper")) == 5_500 * 1_000, "5,500 steps of minibatches of 1000 images"
    quadratic = metabench.load_spec("learned-optimizer").benchmark("quadratic-10d")
    paper = quadratic.profile("paper")
    assert examples_of(quadratic, paper) == paper.train_episodes * paper.meta_batch, "optimiser steps x problems"


def test_a_results_stored_hyperparameters_give_the_profiles_budget() -> None:
    bench = metabench.load_spec("maml").benchmark("omniglot-5w1s")
    quick = bench.profile("quick")
    assert budget_of(bench, quick.hyperparameters()) == budget_of(bench, quick)


@pytest.mark.parametrize(
    ("share", "label"), [(1.0, "100%"), (0.5, "50%"), (0.09, "9.0%"), (0.0042, "0.42%"), (0.00006, "0.006%")]
)
def test_small_shares_keep_their_digits(share: float, label: str) -> None:
    assert format_share(share) == label
