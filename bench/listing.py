"""The registry as data: every benchmark as a row (``list``), one spec as plain JSON types (``show``).

``list --format json`` and ``show --format json`` print these, the HTML report puts the paper's reported
table beside the reproduced one from them, and Python callers get a DataFrame from
:func:`list_benchmarks` without parsing a terminal table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from metabench.metrics import metric_of
from metabench.spec import Benchmark, Spec

#: the columns of :func:`list_benchmarks`, in order
LIST_COLUMNS = [
    "paper",
    "year",
    "benchmark",
    "default",
    "variant",
    "dataset",
    "split",
    "ways",
    "shots",
    "queries",
    "metric",
    "direction",
    "protocol",
    "reported",
    "reported_value",
    "plus_minus",
    "plus_minus_kind",
    "source",
    "confidence",
]


def protocol_text(bench: Benchmark) -> str:
    """``omniglot/protonet 5-way 1-shot, 15 queries``: a benchmark's protocol in one phrase."""
    if bench.sequence:
        return (
            f"{bench.dataset}/{bench.split} {bench.ways}-class sequences of "
            f"{bench.ways * (bench.shots + bench.queries)} steps"
        )
    if bench.shots == 0:
        return f"{bench.dataset}/{bench.split} supervised, {bench.ways} classes"
    return f"{bench.dataset}/{bench.split} {bench.ways}-way {bench.shots}-shot, {bench.queries} queries"


def reported_text(bench: Benchmark) -> str:
    """What the paper reported, as printed: a number (± and its meaning), a vector, a claim or nothing."""
    if bench.claim:
        return f"claim: beats {', '.join(bench.claim.against)}"
    if bench.components:
        shown = [f"{c.name} {c.reported.printed() if c.reported else '—'}" for c in bench.components]
        return f"by {metric_of(bench.metric).components}: " + " / ".join(shown)
    reported = bench.reported
    if reported is None:
        return "no target"
    if reported.plus_minus_kind == "none":
        return reported.printed()
    return f"{reported.printed()} ({reported.plus_minus_kind})"


def source_text(bench: Benchmark) -> str:
    """Where in the paper the number stands: ``Table 1, MAML (conv-4)``, or a claim's source."""
    if bench.claim:
        return bench.claim.source
    reported = bench.reported or next((c.reported for c in bench.components if c.reported), None)
    if reported is None:
        return ""
    return f"{reported.table}, {reported.row}" if reported.row else reported.table


def _confidence(bench: Benchmark) -> str:
    if bench.claim:
        return bench.claim.confidence
    reported = bench.reported or next((c.reported for c in bench.components if c.reported), None)
    return reported.confidence if reported else ""


def benchmark_row(spec: Spec, bench: Benchmark) -> dict[str, Any]:
    """One row of :func:`list_benchmarks`."""
    reported = bench.reported
    return {
        "paper": spec.key,
        "year": spec.year,
        "benchmark": bench.id,
        "default": bench.default,
        "variant": bench.variant,
        "dataset": bench.dataset,
        "split": bench.split,
        "ways": bench.ways,
        "shots": bench.shots,
        "queries": bench.queries,
        "metric": bench.metric,
        "direction": bench.direction,
        "protocol": protocol_text(bench),
        "reported": reported_text(bench),
        "reported_value": reported.value if reported else None,
        "plus_minus": reported.plus_minus if reported else None,
        "plus_minus_kind": reported.plus_minus_kind if reported else None,
        "source": source_text(bench),
        "confidence": _confidence(bench),
    }


def list_benchmarks() -> pd.DataFrame:
    """Every benchmark of every paper in the registry, one row each (see :data:`LIST_COLUMNS`)."""
    from metabench.registry_loader import all_specs

    rows = [benchmark_row(spec, bench) for spec in all_specs().values() for bench in spec.benchmarks]
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def _plain(value: Any) -> Any:
    """Tuples as lists and paths as strings: what ``json.dumps`` writes without a custom encoder."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def spec_dict(spec: Spec) -> dict[str, Any]:
    """One spec in full as JSON types: citation, every benchmark, its reported numbers and profiles."""
    data = _plain(dataclasses.asdict(spec))
    data["citation"] = spec.citation
    for entry, bench in zip(data["benchmarks"], spec.benchmarks, strict=True):
        entry["protocol"] = protocol_text(bench)
        entry["chance"] = bench.chance
    data["source"] = f"registry/{Path(spec.source).name}"
    return dict(data)
