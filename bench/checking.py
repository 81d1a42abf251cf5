"""``check``: pass or fail per row of the comparison frame, and why.

A ``paper`` run fails when its verdict is a shortfall against the reported band (or its claim fails), a
``quick`` run when its mean misses the floor its spec states (:func:`metabench.floors.meets`), a
``smoke`` run when it does not clear chance by the spec's margin; any row whose stored numbers disagree
with its per-episode scores fails. An experiment (``--set``) is held to nothing.

A paper run that falls short passes as ``known`` only when its benchmark's spec names that very file in
``known_shortfalls`` with the page where the shortfall is diagnosed (:class:`metabench.spec.KnownShortfall`);
a file named there that no longer falls short fails, so the acknowledgement cannot outlive its reason.
"""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from metabench import floors
from metabench.spec import component_label
from metabench.stats import is_worse


def untested_floor(row: pd.Series) -> str:
    """Why a ``quick`` row's floor catches no regression (see :mod:`metabench.floors`), else ``""``."""
    if row["profile"] != "quick" or row.get("role", "") == "competitor":
        return ""
    floor = row.get("floor")
    if floor is None or pd.isna(floor):
        return ""
    return floors.uninformative(float(floor), float(row["chance"]), str(row["metric"]), str(row["direction"]))


def _paper_shortfall(row: pd.Series) -> tuple[bool, str]:
    """Whether a ``paper`` row falls short of its paper (its verdict, or its claim's), and why in words."""
    if row["verdict"] == "no target":
        return False, "no reported number"
    if row.get("claim", ""):
        if row.get("claim_expect", "") == "fails":
            if row["verdict"] == "holds":
                return True, "the claim holds, but the paper reports that it fails (a negative finding)"
            return False, f"claim {row['verdict']} (the paper reports that it fails)"
        if row["verdict"] == "fails":
            return True, "the paper's claim fails: a competitor is better at the 5% level (see its vs rows)"
        return False, f"claim {row['verdict']}"
    if row["verdict"] == "diverged":
        return True, f"diverged: some test episodes' scores are not finite, so the mean is {row['mean']}"
    if is_worse(row["verdict"], row["direction"]):
        return True, (
            f"{row['mean']:.2f} is {row['verdict']} the paper's {row['reported']:g}: "
            f"{abs(row['difference']):.2f} away, {abs(row['difference']) - row['band']:.2f} "
            f"beyond the band ±{row['band']:.2f}"
        )
    return False, f"{row['verdict']} ({row['difference']:+.2f})"


def _check_row(row: pd.Series) -> tuple[bool, str]:
    if row.get("integrity", ""):
        return False, f"stored numbers disagree with the per-episode scores: {row['integrity']}"
    if row.get("role", "") == "competitor":
        return True, f"claim vs {row['component']}: {row['verdict']} (the method's row is what is checked)"
    if row.get("experiment", ""):
        return True, f"experiment (--set {row['experiment']}): not the paper's profile, held to nothing"
    if row["profile"] == "paper":
        shortfall, why = _paper_shortfall(row)
        known = str(row.get("known_shortfall", "") or "")
        if known and shortfall:
            return True, f"known shortfall: {why}; diagnosed in {known}"
        return not shortfall, why  # an acknowledged file with no shortfall at all fails in check()
    if row["profile"] == "quick":
        floor = row["floor"]
        if floor is None or pd.isna(floor):
            return True, "no floor measured for this benchmark (see its floor_note)"
        untested = untested_floor(row)
        if untested:
            return True, untested
        met = floors.meets(row["mean"], floor, row["direction"])
        if row["direction"] == "lower":  # for an error metric the floor is a ceiling
            if not met:
                return False, f"{row['mean']:.3f} is above the quick ceiling {floor:g} by {row['mean'] - floor:.3f}"
            return True, f"{row['mean']:.3f} <= ceiling {floor:g}"
        if not met:
            return False, f"{row['mean']:.2f} is below the quick floor {floor:g} by {floor - row['mean']:.2f}"
        return True, f"{row['mean']:.2f} >= floor {floor:g}"
    if row["direction"] == "lower":
        needed = row["chance"] - row["min_above_chance"]
        if row["mean"] > needed:
            return False, f"{row['mean']:.3f} does not beat chance {row['chance']:.2f} - {row['min_above_chance']:g}"
        return True, f"{row['mean']:.3f} <= chance - {row['min_above_chance']:g}"
    needed = row["chance"] + row["min_above_chance"]
    if row["mean"] < needed:
        return False, f"{row['mean']:.2f} does not clear chance {row['chance']:.1f} + {row['min_above_chance']:g}"
    return True, f"{row['mean']:.2f} >= chance + {row['min_above_chance']:g}"


def _stale_acknowledgements(frame: pd.DataFrame) -> set[str]:
    """Result files the spec names as known shortfalls of which no row falls short any more (a vector
    result is one file: it is acknowledged while any of its components falls short)."""
    if "path" not in frame or "known_shortfall" not in frame:
        return set()  # a frame not built by compare (hand-made rows) acknowledges nothing
    named = frame[
        (frame["profile"] == "paper")
        & frame["known_shortfall"].fillna("").astype(bool)
        & (frame.get("role", pd.Series("", index=frame.index)).fillna("") != "competitor")
    ]
    stale = set()
    for path, rows in named.groupby("path"):
        if not any(_paper_shortfall(row)[0] for _, row in rows.iterrows()):
            stale.add(str(path))
    return stale


def check(frame: pd.DataFrame) -> pd.DataFrame:
    """Pass or fail per result, with the reason and, for failures, by how much."""
    checked = frame.copy()
    stale = _stale_acknowledgements(frame) if not frame.empty else set()
    outcomes = [
        (
            False,
            f"the spec names this result a known shortfall ({row['known_shortfall']}) but nothing in it falls "
            "short: remove it from the benchmark's known_shortfalls",
        )
        if str(row.get("path", "")) in stale and not row.get("integrity", "")
        else _check_row(row)
        for _, row in frame.iterrows()
    ]
    checked["passed"] = [ok for ok, _ in outcomes]
    checked["reason"] = [reason for _, reason in outcomes]
    checked["known"] = [
        bool(ok and reason.startswith("known shortfall"))
        for ok, reason in zip(checked["passed"], checked["reason"], strict=True)
    ]
    checked["tested"] = [
        not untested_floor(row) and not row.get("experiment", "") and not known
        for known, (_, row) in zip(checked["known"], frame.iterrows(), strict=True)
    ]
    return checked


def check_table(checked: pd.DataFrame) -> Table:
    table = Table(title="metabench check")
    for column in ("paper", "benchmark", "profile", "result", "reason"):
        table.add_column(column)
    for row in checked.itertuples():
        mark = (
            "[red]FAIL[/]"
            if not row.passed
            else "[yellow]known[/]"
            if getattr(row, "known", False)
            else "[green]pass[/]"
            if row.tested
            else "[yellow]untested[/]"
        )
        name = (
            f"{row.benchmark} (vs {row.component})"
            if getattr(row, "role", "") == "competitor"
            else f"{row.benchmark} ({component_label(row.component)})"
            if row.component
            else row.benchmark
        )
        table.add_row(row.paper, name, row.profile, mark, row.reason)
    return table
