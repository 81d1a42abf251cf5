"""``check``'s outcome for machines: JSON records and JUnit XML, one test case per checked row.

CI systems (GitLab, Jenkins, GitHub's test reporters) read JUnit XML and show each test case with its
status: a row that passes is a passing case, a failing row a ``<failure>`` with the reason, and a row
that passes without testing anything (a floor that does not beat the trivial baseline, an experiment
held to nothing) a ``<skipped>`` case whose message says why, so that it is visible rather than green.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd

from metabench.spec import component_label

#: the fields of one JSON record, in order
RECORD_FIELDS = (
    "paper",
    "benchmark",
    "component",
    "role",
    "profile",
    "seed",
    "experiment",
    "status",
    "passed",
    "tested",
    "reason",
    "mean",
    "ci95",
    "reported",
    "difference",
    "verdict",
    "floor",
    "known_shortfall",
    "path",
)


def status(row: Any) -> str:
    """``pass``, ``fail``, ``known`` (a paper run's shortfall the spec names as diagnosed) or ``untested``
    (passes, but its check would catch no regression)."""
    if not row["passed"]:
        return "fail"
    if row.get("known", False):
        return "known"
    return "pass" if row["tested"] else "untested"


def case_name(row: Any) -> str:
    """``omniglot-5class (2nd instance) [quick, seed 0]``: a checked row as a test case's name."""
    if row.get("role", "") == "competitor":
        name = f"{row['benchmark']} (vs {row['component']})"
    elif row.get("component", ""):
        name = f"{row['benchmark']} ({component_label(row['component'])})"
    else:
        name = str(row["benchmark"])
    experiment = f", --set {row['experiment']}" if row.get("experiment", "") else ""
    return f"{name} [{row['profile']}, seed {row['seed']}{experiment}]"


def _plain(value: Any) -> Any:
    """JSON types: numpy scalars as Python numbers, NaN as null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def records(checked: pd.DataFrame) -> list[dict[str, Any]]:
    """One JSON-ready record per checked row (see :data:`RECORD_FIELDS`)."""
    out = []
    for _, row in checked.iterrows():
        record = {name: _plain(row.get(name)) for name in RECORD_FIELDS if name != "status"}
        record["status"] = status(row)
        out.append({name: record.get(name) for name in RECORD_FIELDS})
    return out


def to_json(checked: pd.DataFrame) -> str:
    failed = int((~checked["passed"]).sum())
    summary = {
        "checks": len(checked),
        "results": int(checked["path"].nunique()),
        "failed": failed,
        "untested": int((checked["passed"] & ~checked["tested"] & ~checked["known"]).sum()),
        "known": int(checked["known"].sum()),
        "passed": failed == 0,
        "rows": records(checked),
    }
    return json.dumps(summary, indent=1) + "\n"


def to_junit(checked: pd.DataFrame) -> str:
    """The outcome as JUnit XML: one ``<testsuite>`` per paper, one ``<testcase>`` per checked row."""
    suites = ET.Element("testsuites", name="metabench check")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for paper, rows in checked.groupby("paper", sort=True):
        suite = ET.SubElement(suites, "testsuite", name=str(paper))
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for _, row in rows.iterrows():
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"metabench.{paper}",
                name=case_name(row),
                file=str(row["path"]),
                time="0",
            )
            counts["tests"] += 1
            outcome = status(row)
            if outcome == "fail":
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", message=str(row["reason"]), type="shortfall")
                failure.text = f"{case_name(row)}: {row['reason']}\n{row['path']}"
            elif outcome == "known":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=str(row["reason"]))
            elif outcome == "untested":
                counts["skipped"] += 1
                reason = str(row["reason"])
                message = reason if reason.startswith("not regression-tested") else f"not regression-tested: {reason}"
                ET.SubElement(case, "skipped", message=message)
            ET.SubElement(case, "system-out").text = str(row["reason"])
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("errors", "0")
    for key, value in totals.items():
        suites.set(key, str(value))
    suites.set("errors", "0")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(checked: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_junit(checked), encoding="utf-8")
    return path
