"""Comparison tables and regression checks over result files, through one pandas frame.

``load_frame`` reads every result into one row; ``render`` writes the table as markdown, csv or json;
``check`` decides pass or fail per result: a ``paper`` run fails when its verdict is a shortfall
against the reported band, a ``quick`` run when its mean misses the floor its spec states, a
``smoke`` run when it does not clear chance by the spec's margin.

A result of a vector benchmark (accuracy by instance, log-likelihood by context) becomes one row per
component, named in the ``component`` column ("1st", "2nd", ..., "100 context"), each judged and checked
like a scalar result; scalar results have an empty ``component``. A claim result adds one row per
competitor (``role`` "competitor", ``component`` its name): the competitor's own mean, and as difference
and verdict the paired comparison of the method with it; the method's row carries the claim's overall
verdict. Metrics a benchmark reports beside its own (``also``: the MSE beside a log-likelihood) are shown
in the ``also`` column, neither judged nor checked.

This module builds the frame; how it is shown (:mod:`metabench.compare_table`) and the readers that go
back to the result files (:mod:`metabench.compare_runs`) live beside it and are re-exported here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from metabench import overrides, provenance, results, verify

# Re-exported: ``metabench.compare.<name>`` is the public face of the comparison, wherever a name lives.
from metabench.checking import check as check
from metabench.checking import check_table as check_table
from metabench.compare_runs import paired_report as paired_report
from metabench.compare_runs import plot_curves as plot_curves
from metabench.compare_table import OPTIONAL_COLUMNS as OPTIONAL_COLUMNS
from metabench.compare_table import REQUIRED_COLUMNS as REQUIRED_COLUMNS
from metabench.compare_table import _benchmark_cell as _benchmark_cell
from metabench.compare_table import _reported_cell as _reported_cell
from metabench.compare_table import budget_cell as budget_cell
from metabench.compare_table import choose_columns as choose_columns
from metabench.compare_table import display_frame as display_frame
from metabench.compare_table import fit_columns as fit_columns
from metabench.compare_table import notes as notes
from metabench.compare_table import render as render
from metabench.compare_table import rich_table as rich_table
from metabench.compare_table import selectable_columns as selectable_columns
from metabench.compare_table import table_cells as table_cells
from metabench.compare_table import verdict_style as verdict_style
from metabench.compare_table import wrap_name as wrap_name
from metabench.kinds import kind_of, kind_of_result
from metabench.result_schema import Result

COLUMNS = [
    "paper",
    "benchmark",
    "component",
    "role",
    "profile",
    "budget",
    "experiment",
    "seed",
    "reported",
    "reported_pm",
    "pm_kind",
    "reported_decimals",
    "mean",
    "ci95",
    "difference",
    "band",
    "verdict",
    "floor",
    "chance",
    "min_above_chance",
    "direction",
    "episodes",
    "digest",
    "device",
    "train_seconds",
    "commit",
    "created",
    "path",
    "figures",
    "also",
    "claim",
    "claim_expect",
    "metric",
    "dirty",
    "patch",
    "integrity",
    "known_shortfall",
]


def load_frame(paths: list[Path], paper: str | None = None, profile: str | None = None) -> pd.DataFrame:
    """One row per result file under ``paths``, optionally filtered by paper and profile."""
    rows = []
    for path in results.find(paths):
        rows.extend(_rows(Result.read(path), path))

    frame = _with_current_targets(pd.DataFrame(rows, columns=COLUMNS))
    if paper is not None:
        frame = frame[frame["paper"] == paper]
    if profile is not None:
        frame = frame[frame["profile"] == profile]
    return frame.sort_values(["paper", "benchmark", "profile", "created"], kind="stable").reset_index(drop=True)


def _rows(result: Result, path: Path) -> list[dict[str, Any]]:
    """The frame rows of one result: the columns every kind fills alike, and those its kind's strategy
    fills (:meth:`metabench.kinds.Kind.rows`: itself, one per component, one per competitor)."""
    common = {
        "paper": result.paper,
        "benchmark": result.benchmark,
        "profile": result.profile,
        "seed": result.seed,
        "chance": result.targets["chance"],
        "min_above_chance": result.targets["min_above_chance"],
        "direction": result.protocol["direction"],
        "episodes": result.test_episodes["count"],
        "digest": result.test_episodes["digest"],
        "device": result.environment["device"],
        "train_seconds": result.timing["train_seconds"],
        "commit": result.git["commit"][:10],
        "created": result.created,
        "path": str(path),
        # Figures the run drew (the sinusoid fits), by their path beside the result.
        "figures": ";".join(str(path.with_name(name)) for name in result.figures),
        "metric": result.protocol["metric"],
        "dirty": result.git["dirty"] is True,
        "patch": provenance.patch_note(result.git, path),
        "integrity": "; ".join(verify.problems(result)),
        "budget": _budget_share(result),
        "experiment": overrides.label(result.settings),
        "known_shortfall": "",  # filled from the registry as it is now (_with_current_targets)
    }
    return kind_of_result(result).rows(result, common)


def _with_current_targets(frame: pd.DataFrame) -> pd.DataFrame:
    """Judge every result against the registry as it is now.

    The spec is the source of truth for targets: a corrected reported value or a re-measured floor
    applies to old results too. A result keeps what it was judged against at run time in its file;
    results of papers or benchmarks no longer in the registry keep their stored targets. How a row is
    judged again is its benchmark's kind's (:meth:`metabench.kinds.Kind.current_targets`).
    """
    from metabench.errors import UnknownNameError
    from metabench.registry_loader import get_spec

    for index, row in frame.iterrows():
        try:
            bench = get_spec(row["paper"]).benchmark(row["benchmark"])
        except UnknownNameError:
            continue
        known = bench.known_shortfall(Path(str(row["path"])).name)
        if known is not None and row["profile"] == "paper":
            frame.loc[index, "known_shortfall"] = known.finding
        if row.get("role", "") == "competitor":
            continue  # judged against the method from per-episode scores at run time
        for columns, values in kind_of(bench).current_targets(bench.profiles.get(row["profile"]), row):
            frame.loc[index, columns] = values
    return frame


def _budget_share(result: Result) -> float:
    """The result's budget share: recorded since schema 4, else computed from its stored hyperparameters
    (from the result already read: the file is not read again)."""
    from metabench.budget import stored_budget

    if result.budget:
        return float(result.budget.get("share", math.nan))
    budget = stored_budget(result.paper, result.benchmark, result.hyperparameters)
    return math.nan if budget is None else budget.share  # a result too old or damaged to say shows "—"
