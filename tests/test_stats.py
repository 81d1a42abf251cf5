"""Intervals, the verdict rule for every kind of reported ±, and the paired comparison."""

from __future__ import annotations

import math

import pytest
import torch

from metabench.spec import Reported
from metabench.stats import Z95, is_worse, judge, mean_interval, paired, reported_allowance, worst


def reported(value: float, plus_minus: float = 0.0, kind: str = "none", decimals: int | None = None) -> Reported:
    if decimals is None and kind == "none":
        decimals = len(repr(value).split(".")[1])
    return Reported(value, plus_minus, kind, 600, "Table 1", "row", "HIGH", decimals=decimals)  # type: ignore[arg-type]


def test_interval_matches_the_textbook_formula() -> None:
    scores = [90.0, 100.0, 80.0, 100.0]
    interval = mean_interval(scores)
    std = torch.tensor(scores, dtype=torch.float64).std().item()
    assert interval.mean == pytest.approx(92.5)
    assert interval.std == pytest.approx(std)
    assert interval.half_width == pytest.approx(1.959964 * std / 2.0, rel=1e-6)
    assert (interval.low, interval.high) == pytest.approx((92.5 - interval.half_width, 92.5 + interval.half_width))


def test_interval_of_constant_scores_is_zero_width() -> None:
    assert mean_interval([100.0] * 10).half_width == 0.0


@pytest.mark.parametrize(
    ("value", "plus_minus", "kind", "decimals", "allowance"),
    [
        (98.8, 0.0, "none", 1, 0.05),
        (96.0, 0.0, "none", 1, 0.05),
        (48.70, 1.84, "ci95", None, 1.84),
        (47.07, 0.26, "unknown", None, 0.26),
        (50.0, 1.0, "std-runs", None, Z95),
        (98.95, 0.0, "none", 2, 0.005),
        (92.0, 0.0, "none", 0, 0.5),
    ],
)
def test_reported_allowance_follows_what_the_plus_minus_means(
    value: float, plus_minus: float, kind: str, decimals: int | None, allowance: float
) -> None:
    assert reported_allowance(reported(value, plus_minus, kind, decimals)) == pytest.approx(allowance)


def test_verdict_is_two_sided_with_band_widened_by_both_intervals() -> None:
    paper = reported(48.70, 1.84, "ci95")
    inside = mean_interval([48.0] * 300 + [46.0] * 300)  # mean 47.0, h_m about 0.08
    assert judge(paper, inside).verdict == "reproduced"
    far_below = mean_interval([40.0, 41.0] * 300)
    assert judge(paper, far_below).verdict == "below"
    far_above = mean_interval([60.0, 61.0] * 300)
    assert judge(paper, far_above).verdict == "above"
    judgement = judge(paper, far_below)
    assert judgement.difference == pytest.approx(40.5 - 48.70)
    assert judgement.band == pytest.approx(1.84 + far_below.half_width)


def test_bare_number_needs_the_reproduction_interval_to_reach_it() -> None:
    paper = reported(98.8)
    measured = mean_interval([98.0, 99.0] * 500)  # 98.5 ± ~0.03
    assert judge(paper, measured).verdict == "below"
    wide = mean_interval([97.0, 100.0] * 10)  # 98.5 ± ~0.69
    assert judge(paper, wide).verdict == "reproduced"


def test_no_target_gives_no_verdict() -> None:
    judgement = judge(None, mean_interval([50.0, 60.0]))
    assert judgement.verdict == "no target" and math.isnan(judgement.difference)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_diverged_episode_is_never_reproduced(bad: float) -> None:
    # The MAML sinusoid paper run at 6b953f9: one of 600 episodes' 10-step MSE was NaN, the mean NaN, and
    # NaN compared false on both sides of the band, so the verdict fell through to "reproduced".
    paper = reported(0.35)
    judgement = judge(paper, mean_interval([0.3] * 599 + [bad]))
    assert judgement.verdict == "diverged" and "diverged" in judgement.rule
    assert is_worse("diverged", "higher") and is_worse("diverged", "lower")
    fine = judge(paper, mean_interval([0.35] * 600))
    assert worst([fine, judgement], "lower").verdict == "diverged"
    assert worst([fine, fine], "lower").verdict == "reproduced"


def test_shortfall_depends_on_direction() -> None:
    assert is_worse("below", "higher") and not is_worse("above", "higher")
    assert is_worse("above", "lower") and not is_worse("below", "lower")
    assert not is_worse("reproduced", "higher")


def test_paired_comparison_on_known_differences() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(1000, generator=generator, dtype=torch.float64) * 100
    identical = paired(a, a.clone())
    assert identical.mean_difference == 0.0 and identical.p_value == 1.0 and not identical.distinguishable
    shifted = paired(a + 1.0 + torch.randn(1000, generator=generator, dtype=torch.float64) * 0.1, a)
    assert shifted.mean_difference == pytest.approx(1.0, abs=0.02)
    assert shifted.p_value < 1e-10 and shifted.distinguishable
    noisy = paired(a + torch.randn(1000, generator=generator, dtype=torch.float64) * 10, a)
    assert abs(noisy.mean_difference) < noisy.half_width * 2
    with pytest.raises(ValueError, match="differ in length"):
        paired([1.0, 2.0], [1.0])


def test_paired_p_value_matches_normal_tail() -> None:
    differences = torch.tensor([1.0, -1.0] * 50 + [3.0] * 4, dtype=torch.float64)
    result = paired(differences, torch.zeros_like(differences))
    z = differences.mean() / (differences.std() / math.sqrt(differences.numel()))
    assert result.p_value == pytest.approx(math.erfc(float(z) / math.sqrt(2)))
