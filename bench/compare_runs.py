"""Readers that go back to the result files behind a comparison: the paired report of two runs on the
same episodes, and the validation curves of each benchmark.

Split from :mod:`metabench.compare`, which re-exports both; they need each run's per-episode scores or
curve, which the one-row-per-result frame does not hold.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from metabench import overrides, results
from metabench.errors import MetabenchError, ResultError
from metabench.figures import save_figure
from metabench.metrics import axis_label
from metabench.stats import paired


def _run_name(data: dict[str, Any]) -> str:
    """``matchingnet omniglot-5w1s (quick, seed 0, --set model.scale=10)``: which run a paired side is."""
    settings = (data.get("overrides") or {}).get("set")
    changes = f", --set {overrides.label(settings)}" if settings else ""
    return f"{data['paper']} {data['benchmark']} ({data['profile']}, seed {data['seed']}{changes})"


def paired_report(first: Path, second: Path) -> str:
    """Mean difference A - B with its interval and a paired test, for results on the same episodes."""
    a, b = results.read(first), results.read(second)
    if a["test_episodes"]["digest"] != b["test_episodes"]["digest"]:
        raise ResultError(
            f"{first.name} and {second.name} were scored on different test episodes "
            f"({a['test_episodes']['digest'][:12]} vs {b['test_episodes']['digest'][:12]})",
            "a paired comparison needs the same benchmark protocol, test seed and episode count",
        )
    comparison = paired(a["scores"], b["scores"])
    name_a, name_b = _run_name(a), _run_name(b)
    lines = [
        f"A: {name_a}: {a['summary']['mean']:.2f} ± {a['summary']['ci95']:.2f}",
        f"B: {name_b}: {b['summary']['mean']:.2f} ± {b['summary']['ci95']:.2f}",
        f"A - B over {comparison.n} shared episodes: {comparison.mean_difference:+.2f} "
        f"± {comparison.half_width:.2f} (95%), paired z-test p = {comparison.p_value:.3g}",
        "the two cannot be told apart at the 5% level"
        if not comparison.distinguishable
        else ("A" if (comparison.mean_difference > 0) == (a["protocol"]["direction"] == "higher") else "B")
        + " is better at the 5% level",
    ]
    return "\n".join(lines) + "\n"


#: what a curve's x-axis can be: the training time, or the training examples processed so far (the
#: budget's numerator), which puts methods with different episode shapes on one scale
CURVE_AXES = {"time": "training time (s)", "examples": "training examples seen"}


def _axis_label(against: str) -> str:
    """The x-axis label of ``against``, or a clear error for an axis :data:`CURVE_AXES` does not name."""
    if against not in CURVE_AXES:
        raise MetabenchError(f"unknown curve axis {against!r}", f"use one of: {', '.join(CURVE_AXES)}")
    return CURVE_AXES[against]


def curve_points(data: dict[str, Any], against: str = "time") -> list[tuple[float, float]]:
    """A result's validation curve as (x, metric) points, x as :data:`CURVE_AXES` names it.

    Examples at a point are the run's recorded budget scaled by the share of its steps done there (every
    step processes the same number of examples); a result too old to record its budget has no such curve.
    """
    from metabench.budget import stored_budget

    _axis_label(against)
    key = f"val_{data['protocol']['metric']}"
    points = [p for p in data["curve"] if key in p]
    if against == "time":
        return [(float(p["seconds"]), float(p[key])) for p in points]
    examples = (data.get("budget") or {}).get("examples")
    if not examples:
        derived = stored_budget(data.get("paper", ""), data.get("benchmark", ""), data.get("hyperparameters") or {})
        examples = derived.examples if derived else None
    steps = (data.get("timing") or {}).get("train_steps")
    if not examples or not steps:
        return []
    return [(examples * p["step"] / steps, float(p[key])) for p in points]


def _curve_label(row: pd.Series) -> str:
    """``quick seed 0 (cpu, budget 2.6%, experiment)``: short enough for a legend; compare's table names
    an experiment's full ``--set``."""
    from metabench.compare_table import budget_cell

    share = row.get("budget", math.nan)
    extra = "" if share is None or pd.isna(share) else f", {budget_cell(float(share))}"
    extra += ", experiment" if row.get("experiment", "") else ""
    return f"{row['profile']} seed {row['seed']} ({row['device']}{extra})"


def _millions(value: float, _position: int) -> str:
    return f"{value / 1e6:g}M"


def plot_curves(frame: pd.DataFrame, output: Path, against: str = "time") -> Path:
    """Validation accuracy (or the benchmark's metric) against training time or training examples, one
    panel per benchmark, the paper's number dashed.

    Time by default, because time-to-accuracy is what a researcher budgets for; examples to compare runs
    (or methods) at equal budgets, whatever their episode shapes and machines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    x_label = _axis_label(against)  # before any figure is made
    benchmarks = sorted({(p, b) for p, b in zip(frame["paper"], frame["benchmark"], strict=True)})
    if not benchmarks:
        raise MetabenchError("no results to plot", "run a benchmark first, or point compare at a results folder")
    figure, axes = plt.subplots(
        1, len(benchmarks), figsize=(4.2 * len(benchmarks), 3.4), squeeze=False, sharex=against == "examples"
    )
    for axis, (paper_key, bench_id) in zip(axes[0], benchmarks, strict=True):
        rows = frame[(frame["paper"] == paper_key) & (frame["benchmark"] == bench_id)].drop_duplicates("path")
        metric = "accuracy"
        for _, row in rows.iterrows():
            data = results.read(Path(row["path"]))
            metric = data["protocol"]["metric"]  # accuracy, or a regression metric (mse, log-likelihood)
            points = curve_points(data, against)
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", markersize=3, label=_curve_label(row))
        if not rows["component"].iloc[0] and not math.isnan(rows["reported"].iloc[0]):
            axis.axhline(rows["reported"].iloc[0], color="black", linestyle="--", linewidth=1, label="paper")
        axis.set_title(f"{paper_key} {bench_id}", fontsize=10)
        axis.set_xlabel(x_label)
        if against == "examples":
            axis.xaxis.set_major_formatter(FuncFormatter(_millions))
        axis.set_ylabel(f"validation {axis_label(metric)}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return save_figure(figure, output)
