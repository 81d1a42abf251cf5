"""A convergence ladder: one benchmark's results at several training budgets, against the paper's band.

A `quick` result that falls short of its paper says little on its own: the question a reader has is
whether more training closes the gap. The ladder answers it by drawing, for each benchmark with results
at two or more budgets, the reproduced number (with its 95% interval) against the share of the paper's
training it had, on a log axis, beside the paper's number and the allowance its printed precision or ±
gives. Only runs of the paper's own method count as rungs: its profiles, and experiments that change
nothing but how long it trains (:data:`BUDGET_KEYS`); an experiment that changes the method (a
temperature, an optimiser) is a different model and is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from metabench.errors import MetabenchError
from metabench.figures import save_figure
from metabench.metrics import axis_label

#: ``--set`` keys that change the budget of a run (and its schedule and bookkeeping), not its method
BUDGET_KEYS = frozenset({"train_episodes", "lr_decay_every", "checkpoint_every", "val_every", "test_episodes"})


def budget_only(experiment: str) -> bool:
    """Whether an experiment's ``--set`` list (``"k=v, k=v"``, as compare shows it) changes only the budget."""
    if not experiment:
        return True
    keys = {part.split("=", 1)[0].strip() for part in experiment.split(", ")}
    return keys <= BUDGET_KEYS


def rungs(frame: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (paper, benchmark), its method's rows at two or more distinct budgets, in budget order."""
    rows = frame[
        (frame["role"].fillna("") == "")
        & (frame["component"].fillna("") == "")
        & frame["experiment"].fillna("").map(budget_only)
        & frame["budget"].notna()
    ]
    found = {}
    for key, group in rows.groupby(["paper", "benchmark"], sort=True):
        if group["budget"].nunique() >= 2:
            found[(str(key[0]), str(key[1]))] = group.sort_values("budget")
    return found


def _rung_label(row: Any) -> str:
    """The profile's name, and for a budget experiment the steps it was given (``quick, 8100 steps``)."""
    settings = dict(part.split("=", 1) for part in str(getattr(row, "experiment", "") or "").split(", ") if "=" in part)
    steps = settings.get("train_episodes")
    return f"{row.profile}, {steps} steps" if steps else str(row.profile)


def plot_ladder(frame: pd.DataFrame, output: Path) -> Path:
    """One panel per benchmark with a ladder: mean ± 95% against the budget share, the paper's band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    ladders = rungs(frame)
    if not ladders:
        raise MetabenchError(
            "no benchmark among these results was run at two or more budgets",
            "run its quick and paper profiles (or `--set train_episodes=N` of one) and compare them",
        )
    figure, axes = plt.subplots(1, len(ladders), figsize=(4.4 * len(ladders), 3.4), squeeze=False)
    for axis, ((paper, bench), group) in zip(axes[0], ladders.items(), strict=True):
        shares = 100 * group["budget"]
        axis.errorbar(shares, group["mean"], yerr=group["ci95"], marker="o", capsize=3, label="reproduced ± 95%")
        for share, mean, label in zip(shares, group["mean"], map(_rung_label, group.itertuples()), strict=True):
            axis.annotate(label, (share, mean), textcoords="offset points", xytext=(4, -10), fontsize=7)
        reported = group["reported"].iloc[0]
        if pd.notna(reported):
            allowance = float(group["band"].iloc[0] - group["ci95"].iloc[0])
            axis.axhline(reported, color="black", linestyle="--", linewidth=1, label="paper")
            axis.axhspan(reported - allowance, reported + allowance, color="black", alpha=0.12)
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}%"))
        axis.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_title(f"{paper} {bench}", fontsize=10)
        axis.set_xlabel("training budget (% of the paper's)")
        axis.set_ylabel(f"test {axis_label(str(group['metric'].iloc[0]))}")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    return save_figure(figure, output)
