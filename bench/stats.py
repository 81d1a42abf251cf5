"""Intervals, verdicts and paired comparisons: the statistics every result and table relies on.

The verdict rule (also in the README): a reproduced mean ``m`` with 95% half-width ``h_m`` is compared
with the reported value ``r`` and its allowance ``h_r``. The band is ``r ± (h_r + h_m)``:

* ``reproduced``  m lies inside the band;
* ``below``       m < r - (h_r + h_m);
* ``above``       m > r + (h_r + h_m);
* ``diverged``    m or h_m is not finite (some test episode's score is NaN or infinite): a shortfall.

``h_r`` depends on what the paper's ± means: a 95% interval over episodes is used as printed; one
standard deviation over runs becomes 1.96 standard deviations (where one more run should fall); a ±
of unstated meaning is used as printed; a bare number allows half a unit of its last printed digit
(98.8 or 96.0 allow 0.05: the spec states the printed decimals), since the paper rounded it. For a
metric where lower is better (an MSE), "below" still means the number is smaller; :func:`is_worse`
says which side is a shortfall.

A claim (the method beats named competitors, see :class:`~metabench.spec.Claim`) is judged by
:func:`judge_claim` from paired comparisons on the same frozen tasks: it ``holds`` when the method is
better than every competitor at the 5% level, ``fails`` when some competitor is better at that level,
and is ``inconclusive`` otherwise. Requiring every comparison to hold (an intersection-union test)
keeps the overall error rate at 5% without a multiple-comparison correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from metabench.spec import Claim, Reported

Verdict = Literal["reproduced", "below", "above", "no target", "holds", "fails", "inconclusive", "diverged"]
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A mean and the half-width of its 95% interval (normal approximation, as the papers used)."""

    mean: float
    half_width: float
    n: int
    std: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_interval(values: Tensor | list[float]) -> Interval:
    """Mean of per-episode scores with a 95% interval ``1.96 * std / sqrt(n)`` (sample std)."""
    scores = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = scores.numel()
    if n == 0:
        raise ValueError("no scores to summarise")
    std = float(scores.std(unbiased=True)) if n > 1 else 0.0
    return Interval(float(scores.mean()), Z95 * std / math.sqrt(n), n, std)


def reported_allowance(reported: Reported) -> float:
    """``h_r``: how far from the printed value the paper's own uncertainty reaches."""
    if reported.plus_minus_kind == "ci95":
        return reported.plus_minus
    if reported.plus_minus_kind == "std-runs":
        return Z95 * reported.plus_minus
    if reported.plus_minus_kind == "unknown":
        return reported.plus_minus
    return 0.5 * 10.0 ** (-(reported.decimals or 0))


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    difference: float
    band: float
    rule: str


def judge(reported: Reported | None, measured: Interval) -> Judgement:
    """The two-sided verdict of ``measured`` against ``reported`` (see the module docstring)."""
    if reported is None:
        return Judgement("no target", math.nan, math.nan, "no reported number to compare with")
    allowance = reported_allowance(reported)
    band = allowance + measured.half_width
    difference = measured.mean - reported.value
    if not (math.isfinite(difference) and math.isfinite(band)):
        # NaN compares false both ways: without this a diverged run fell through to "reproduced"
        return Judgement(
            "diverged", math.nan, math.nan, "the mean or its interval is not finite: some test episodes diverged"
        )
    if difference < -band:
        verdict: Verdict = "below"
    elif difference > band:
        verdict = "above"
    else:
        verdict = "reproduced"
    rule = (
        f"|m - r| <= h_r + h_m: h_r = {allowance:.3g} ({reported.plus_minus_kind}), "
        f"h_m = {measured.half_width:.3g} (95% over {measured.n} episodes)"
    )
    return Judgement(verdict, difference, band, rule)


def worst(judgements: list[Judgement], direction: Literal["higher", "lower"]) -> Judgement:
    """One verdict for a vector benchmark: each component is judged by :func:`judge`, and the whole is
    a shortfall if any component is, else beyond the band if any component is, else reproduced."""
    verdicts = [j.verdict for j in judgements if j.verdict != "no target"]
    rule = "each component judged by |m - r| <= h_r + h_m; the whole takes the worst"
    if not verdicts:
        return Judgement("no target", math.nan, math.nan, "no reported numbers to compare with")
    shortfall: Verdict = "below" if direction == "higher" else "above"
    excess: Verdict = "above" if direction == "higher" else "below"
    verdict: Verdict = (
        "diverged"
        if "diverged" in verdicts
        else shortfall
        if shortfall in verdicts
        else excess
        if excess in verdicts
        else "reproduced"
    )
    return Judgement(verdict, math.nan, math.nan, rule)


def is_worse(verdict: Verdict, direction: Literal["higher", "lower"]) -> bool:
    """Whether a verdict is a shortfall for a metric where ``direction`` is better (a failed claim is)."""
    return verdict in ("fails", "diverged") or verdict == ("below" if direction == "higher" else "above")


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` on the same episodes: mean difference, its 95% interval, and a two-sided p-value."""

    mean_difference: float
    half_width: float
    p_value: float
    n: int

    @property
    def distinguishable(self) -> bool:
        return self.p_value < 0.05


def paired(a: Tensor | list[float], b: Tensor | list[float]) -> PairedComparison:
    """Paired comparison of two methods scored on identical episodes (a paired z-test on differences).

    With hundreds of episodes the t and normal distributions agree to the third digit, so the normal
    tail is used; with zero variance the p-value is 1 for no difference and 0 otherwise.
    """
    first = torch.as_tensor(a, dtype=torch.float64).flatten()
    second = torch.as_tensor(b, dtype=torch.float64).flatten()
    if first.shape != second.shape:
        raise ValueError(f"paired scores differ in length: {first.numel()} and {second.numel()}")
    summary = mean_interval(first - second)
    if summary.std == 0.0:
        p_value = 1.0 if summary.mean == 0.0 else 0.0
    else:
        z = abs(summary.mean) / (summary.std / math.sqrt(summary.n))
        p_value = math.erfc(z / math.sqrt(2.0))
    return PairedComparison(summary.mean, summary.half_width, p_value, summary.n)


@dataclass(frozen=True)
class ClaimComparison:
    """The method against one competitor: ``method - competitor`` on shared tasks, and what it says."""

    competitor: str
    comparison: PairedComparison
    verdict: Verdict


def judge_claim(
    claim: Claim,
    method: Tensor | list[float],
    competitors: dict[str, Tensor | list[float]],
    direction: Literal["higher", "lower"],
) -> tuple[Judgement, list[ClaimComparison]]:
    """The claim's verdict over paired comparisons of ``method`` with each competitor it names."""
    missing = [name for name in claim.against if name not in competitors]
    if missing:
        raise ValueError(f"no scores for competitor {missing[0]!r} of the claim")
    comparisons = []
    for name in claim.against:
        comparison = paired(method, competitors[name])
        method_better = (comparison.mean_difference > 0) == (direction == "higher")
        verdict: Verdict = "inconclusive" if not comparison.distinguishable else "holds" if method_better else "fails"
        comparisons.append(ClaimComparison(name, comparison, verdict))
    verdicts = {c.verdict for c in comparisons}
    overall: Verdict = "fails" if "fails" in verdicts else "inconclusive" if "inconclusive" in verdicts else "holds"
    rule = (
        "paired z-test of method - competitor on the same tasks at the 5% level; the claim holds when it "
        "holds against every competitor, fails when any competitor is significantly better"
    )
    return Judgement(overall, math.nan, math.nan, rule), comparisons
