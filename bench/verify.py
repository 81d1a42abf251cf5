"""Recompute a result's summaries and verdicts from its per-episode scores.

A result file is data someone can edit. ``check`` trusts no stored summary: every mean, interval,
verdict and paired comparison is recomputed from the stored per-episode scores (the method's, each
component's, each competitor's and each metric reported beside), and a result whose stored numbers
disagree fails. This module holds the recomputations; which of them a result needs is its kind's
(:meth:`metabench.kinds.Kind.problems`).

How close is "agrees": the runner summarises the unrounded scores and stores each one rounded to
``STORED_DECIMALS`` decimals, so each stored score is off by at most ``ROUNDING`` (half a unit of the
last stored digit). That moves the mean by at most ``ROUNDING`` and the sample standard deviation by at
most ``ROUNDING * sqrt(n / (n - 1))`` (the perturbation's norm is at most ``ROUNDING * sqrt(n)``). On top
of that, summing ``n`` float64 numbers may lose ``n * eps`` of their magnitude. A forged number off by
more than that is not an accident of arithmetic.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from metabench.result_schema import Result
from metabench.spec import Reported
from metabench.stats import Z95, Interval, Judgement, judge, mean_interval, paired

#: the runner stores per-episode scores rounded to this many decimals
STORED_DECIMALS = 4
ROUNDING = 0.5 * 10.0**-STORED_DECIMALS
EPS = sys.float_info.epsilon
#: the significance level of a claim's paired comparisons (see :func:`metabench.stats.judge_claim`)
ALPHA = 0.05


def _float_slack(values: Sequence[float], n: int) -> float:
    """What float64 accumulation over ``n`` values of this size may lose: a few ulps per addition."""
    largest = max((abs(v) for v in values), default=0.0)
    return 4.0 * n * EPS * (largest + 1.0)


def _close(stored: float, recomputed: float, tolerance: float) -> bool:
    if math.isnan(stored) or math.isnan(recomputed):
        return math.isnan(stored) and math.isnan(recomputed)
    if math.isinf(stored) or math.isinf(recomputed):  # a diverged episode: inf - inf is NaN, not 0
        return stored == recomputed
    return abs(stored - recomputed) <= tolerance


def summary_problems(scores: Sequence[float], summary: dict[str, Any], where: str, spread: float = 1.0) -> list[str]:
    """Whether a stored ``summary`` is the mean and interval of ``scores``, up to storage rounding.

    ``spread`` scales the rounding bound: 2 for a difference of two stored scores.
    """
    n = len(scores)
    if n == 0:
        return [f"{where}: no per-episode scores to recompute the summary from"]
    if summary["n"] != n:
        return [f"{where}.n is {summary['n']}, but {n} per-episode scores are stored"]
    truth = mean_interval(list(scores))
    slack = _float_slack(scores, n)
    rounding = spread * ROUNDING
    std_tolerance = rounding * math.sqrt(n / (n - 1)) + slack if n > 1 else slack
    checks = (
        ("mean", truth.mean, rounding + slack),
        ("std", truth.std, std_tolerance),
        ("ci95", truth.half_width, Z95 * std_tolerance / math.sqrt(n) + slack),
    )
    return [
        f"{where}.{key} is {summary[key]:.6g}, but the stored per-episode scores give {value:.6g}"
        for key, value, tolerance in checks
        if not _close(float(summary[key]), value, max(tolerance, slack))
    ]


def reported_of(stored: dict[str, Any] | None) -> Reported | None:
    """The :class:`Reported` a result stored beside its verdict."""
    if stored is None:
        return None
    return Reported(
        value=float(stored["value"]),
        plus_minus=float(stored["plus_minus"]),
        plus_minus_kind=stored["plus_minus_kind"],
        test_episodes=stored.get("test_episodes"),
        table=str(stored.get("table", "")),
        row=str(stored.get("row", "")),
        confidence=stored.get("confidence", "UNVERIFIED"),
        decimals=stored.get("decimals"),
    )


def judged(part: dict[str, Any]) -> Judgement:
    summary = part["summary"]
    measured = Interval(float(summary["mean"]), float(summary["ci95"]), int(summary["n"]), float(summary["std"]))
    return judge(reported_of(part["reported"]), measured)


def verdict_problems(part: dict[str, Any], where: str) -> list[str]:
    """Whether a stored verdict is what its stored summary and reported number give (``where``
    prefixes the keys named: ``"components[2]."``).

    The summary was checked against the scores first; judging the stored summary (not the recomputed
    one) keeps a mean that sits on the band's edge from flipping by storage rounding alone.
    """
    stored, truth = part["verdict"], judged(part)
    problems = []
    if stored["verdict"] != truth.verdict:
        problems.append(f"{where}verdict is {stored['verdict']!r}, but its summary gives {truth.verdict!r}")
    for key, value in (("difference", truth.difference), ("band", truth.band)):
        if not _close(float(stored[key]), value, 8 * EPS * (abs(value) + 1.0) if not math.isnan(value) else 0.0):
            problems.append(f"{where}verdict.{key} is {stored[key]!r}, but its summary gives {value:.6g}")
    return problems


def _comparison_verdict(mean_difference: float, p_value: float, direction: str) -> str:
    if not p_value < ALPHA:  # as stats.PairedComparison.distinguishable: a NaN p-value decides nothing
        return "inconclusive"
    return "holds" if (mean_difference > 0) == (direction == "higher") else "fails"


def comparison_problems(
    method: Sequence[float], competitor: Sequence[float], stored: dict[str, Any], name: str, direction: str
) -> list[str]:
    """Whether a claim's stored paired comparison with competitor ``name`` is what the method's and the
    competitor's stored scores give: the difference, its interval and count, the p-value and the verdict."""
    problems: list[str] = []
    where = f"claim.comparisons.{name}"
    truth = paired(method, competitor)
    n = truth.n
    slack = _float_slack([*method, *competitor], n)
    std_tolerance = 2 * ROUNDING * math.sqrt(n / (n - 1)) + slack if n > 1 else slack
    for key, value, tolerance in (
        ("mean_difference", truth.mean_difference, 2 * ROUNDING + slack),
        ("ci95", truth.half_width, Z95 * std_tolerance / math.sqrt(max(n, 1)) + slack),
    ):
        if not _close(float(stored[key]), value, tolerance):
            problems.append(f"{where}.{key} is {stored[key]!r}, but the stored scores give {value:.6g}")
    if stored["n"] != n:
        problems.append(f"{where}.n is {stored['n']!r}, but {n} paired scores are stored")
    expected_p = _p_value(float(stored["mean_difference"]), float(stored["ci95"]))
    if not _close(float(stored["p_value"]), expected_p, 1e3 * EPS * max(1.0, expected_p) + 1e-300):
        problems.append(
            f"{where}.p_value is {stored['p_value']!r}, but its difference and interval give {expected_p:.6g}"
        )
    verdict = _comparison_verdict(float(stored["mean_difference"]), float(stored["p_value"]), direction)
    if stored["verdict"] != verdict:
        problems.append(f"{where}.verdict is {stored['verdict']!r}, but its p-value and sign give {verdict!r}")
    return problems


def _p_value(mean_difference: float, ci95: float) -> float:
    """The paired z-test's two-sided p-value from a stored difference and its 95% half-width."""
    if ci95 == 0.0:
        return 1.0 if mean_difference == 0.0 else 0.0
    z = abs(mean_difference) * Z95 / ci95
    return math.erfc(z / math.sqrt(2.0))


def problems(result: Result) -> list[str]:
    """Every way a result's stored summaries or verdicts disagree with its scores, or show a model that
    was never trained; empty for an honest result. What every result has is checked here, the verdicts
    of its kind by its strategy (:meth:`metabench.kinds.Kind.problems`)."""
    from metabench.kinds import kind_of_result  # the strategies check with this module's helpers

    found: list[str] = []
    if result.timing["train_steps"] <= 0:
        found.append(f"timing.train_steps is {result.timing['train_steps']}: the model was never trained")
    found += summary_problems(result.scores, result.summary, "summary")
    found += kind_of_result(result).problems(result)
    for name, part in result.also.items():
        found += summary_problems(part["scores"], part["summary"], f"also.{name}.summary")
    return found
