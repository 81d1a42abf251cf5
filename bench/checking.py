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
from metabench.check_output import status
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
        return not shortfall, why  # check() passes it as known when its spec names the file
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


def _acknowledgement(row: pd.Series) -> str:
    """The page a paper row's spec names as diagnosing its file's shortfall, or ``""``: never for a row
    whose stored numbers are inconsistent (that failure stands) or for a claim's competitor rows."""
    if row.get("integrity", "") or row.get("role", "") == "competitor":
        return ""
    return str(row.get("known_shortfall", "") or "")


def check(frame: pd.DataFrame) -> pd.DataFrame:
    """Pass or fail per result, with the reason and, for failures, by how much.

    A paper row that fails only because it falls short passes as ``known`` when its spec names its file
    (compare fills ``known_shortfall`` from the registry). A named file none of whose rows falls short any
    more (a vector result is one file) fails instead: the acknowledgement has outlived its reason.
    """
    checked = frame.copy()
    outcomes = [_check_row(row) for _, row in frame.iterrows()]
    findings = [_acknowledgement(row) for _, row in frame.iterrows()]
    known = [bool(finding) and not ok for finding, (ok, _) in zip(findings, outcomes, strict=True)]
    paths = [str(row.get("path", "")) for _, row in frame.iterrows()]
    named = {path for path, finding in zip(paths, findings, strict=True) if finding}
    stale = named - {path for path, is_known in zip(paths, known, strict=True) if is_known}
    for index, (finding, is_known, path) in enumerate(zip(findings, known, paths, strict=True)):
        if is_known:
            outcomes[index] = (True, f"known shortfall: {outcomes[index][1]}; diagnosed in {finding}")
        elif finding and path in stale:
            outcomes[index] = (
                False,
                f"the spec names this result a known shortfall ({finding}) but nothing in it falls short: "
                "remove it from the benchmark's known_shortfalls",
            )
    checked["passed"] = [ok for ok, _ in outcomes]
    checked["reason"] = [reason for _, reason in outcomes]
    checked["known"] = known
    checked["tested"] = [
        not untested_floor(row) and not row.get("experiment", "") and not is_known
        for is_known, (_, row) in zip(known, frame.iterrows(), strict=True)
    ]
    return checked


#: how the terminal table shows each of :func:`metabench.check_output.status`'s outcomes
_MARKS = {
    "fail": "[red]FAIL[/]",
    "known": "[yellow]known[/]",
    "pass": "[green]pass[/]",
    "untested": "[yellow]untested[/]",
}


def check_table(checked: pd.DataFrame) -> Table:
    table = Table(title="metabench check")
    for column in ("paper", "benchmark", "profile", "result", "reason"):
        table.add_column(column)
    for row in checked.itertuples():
        mark = _MARKS[status(row._asdict())]
        name = (
            f"{row.benchmark} (vs {row.component})"
            if getattr(row, "role", "") == "competitor"
            else f"{row.benchmark} ({component_label(row.component)})"
            if row.component
            else row.benchmark
        )
        table.add_row(row.paper, name, row.profile, mark, row.reason)
    return table
