"""Whether a quick profile's floor can catch a regression at all.

A floor (a ceiling, for a metric where lower is better) is only a regression test when a broken model
would miss it. A broken model does no better than the benchmark's trivial baseline: chance for
classification (100 / ways), and for any other metric the score the spec states as ``chance`` (the
predictor that ignores the context, ln 10 for a 10-class loss, the prior's log-likelihood). So the rule,
stated once and in the README's verdict section:

    a floor is informative when it beats the trivial baseline by at least the margin: 10 points for
    an accuracy or error (10% of the 0-100 scale), and 10% of the baseline's magnitude for any other
    metric (a loss, an MSE, a log-likelihood, which have no fixed scale).

A floor that does not is still shown and still compared against, but reported as "not
regression-tested" rather than passed as if it were a check.
"""

from __future__ import annotations

import math

from metabench.metrics import METRICS

#: points of accuracy or error a floor must clear chance by: 10% of the 0-100 scale
POINTS_MARGIN = 10.0
#: share of the trivial baseline's magnitude a floor must clear it by, for an unbounded metric
RELATIVE_MARGIN = 0.10


def margin(metric: str, baseline: float) -> float:
    """How far beyond the trivial baseline a floor must lie to catch anything."""
    if metric in METRICS and METRICS[metric].classification:
        return POINTS_MARGIN
    return RELATIVE_MARGIN * abs(baseline)


def uninformative(floor: float | None, baseline: float, metric: str, direction: str) -> str:
    """Why ``floor`` tests nothing, or ``""`` when it beats ``baseline`` by the margin (or is absent)."""
    if floor is None or math.isnan(floor) or math.isnan(baseline):
        return ""
    needed = margin(metric, baseline)
    beyond = baseline - floor if direction == "lower" else floor - baseline
    if beyond >= needed:
        return ""
    word = "ceiling" if direction == "lower" else "floor"
    return (
        f"not regression-tested: the {word} {floor:g} is {beyond:+.3g} beyond the trivial baseline "
        f"{baseline:.4g}, less than the margin {needed:.3g}"
    )


def meets(mean: float, floor: float, direction: str) -> bool:
    """Whether ``mean`` reaches ``floor``: at or above it, or at or below it for a ceiling (lower is better).
    The one floor check: ``check`` and ``run``'s printout both ask it."""
    return mean <= floor if direction == "lower" else mean >= floor
