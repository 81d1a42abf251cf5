"""The metric registry is the one place a metric is described: every spec's metric is in it, and what the
parser, the floors and the evaluator used to hard-code follows from its entries."""

from __future__ import annotations

import math

import pytest
import torch

from metabench import floors, metrics
from metabench.registry_loader import all_specs
from metabench.spec import METRICS


def test_every_spec_metric_and_also_is_registered() -> None:
    for spec in all_specs().values():
        for bench in spec.benchmarks:
            info = metrics.metric_of(bench.metric)
            assert bench.is_vector == info.vector
            assert set(bench.also) <= set(info.also)
            if info.direction_required:
                assert bench.direction == info.direction


def test_the_spec_lists_the_registry() -> None:
    assert tuple(metrics.METRICS) == METRICS


@pytest.mark.parametrize(
    ("name", "ways", "chance"),
    [("accuracy", 5, 20.0), ("accuracy-by-instance", 5, 20.0), ("error", 10, 90.0), ("mse", 5, None)],
)
def test_trivial_baseline(name: str, ways: int, chance: float | None) -> None:
    uniform = metrics.metric_of(name).chance
    assert (uniform(ways) if uniform else None) == chance


def test_margin_is_points_for_classification_and_relative_otherwise() -> None:
    assert floors.margin("error", 90.0) == floors.POINTS_MARGIN
    assert floors.margin("loss", -2.0) == pytest.approx(0.2)


def test_vector_metrics_and_unknown_names() -> None:
    assert {n for n, m in metrics.METRICS.items() if m.vector} == {"accuracy-by-instance", "log-likelihood-by-context"}
    assert not metrics.is_vector("no-such-metric")
    assert metrics.axis_label("accuracy") == "accuracy (%)"
    assert metrics.axis_label("no-such-metric") == "no-such-metric"


def test_scorers() -> None:
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    labels = torch.tensor([[1, 1]])
    assert metrics.metric_of("accuracy").score(logits, labels).item() == 50.0
    assert metrics.metric_of("error").score(logits, labels).item() == 50.0
    assert metrics.metric_of("mse").score(torch.ones(1, 3), torch.zeros(1, 3)).item() == 1.0
    gaussian = torch.tensor([[[0.0, 1.0]]])
    expected = -0.5 * math.log(2 * math.pi)
    assert metrics.metric_of("log-likelihood").score(gaussian, torch.zeros(1, 1)).item() == pytest.approx(expected)
