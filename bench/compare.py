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
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from metabench import overrides, provenance, results, verify
from metabench.checking import check as check  # re-exported: compare.check is public
from metabench.checking import check_table as check_table
from metabench.checking import untested_floor
from metabench.errors import MetabenchError, ResultError
from metabench.spec import component_label, printed_number
from metabench.stats import paired

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
]


def load_frame(paths: list[Path], paper: str | None = None, profile: str | None = None) -> pd.DataFrame:
    """One row per result file under ``paths``, optionally filtered by paper and profile."""
    rows = []
    for path in results.find(paths):
        data = results.read(path)
        rows.extend(_rows(data, path))

    frame = _with_current_targets(pd.DataFrame(rows, columns=COLUMNS))
    if paper is not None:
        frame = frame[frame["paper"] == paper]
    if profile is not None:
        frame = frame[frame["profile"] == profile]
    return frame.sort_values(["paper", "benchmark", "profile", "created"], kind="stable").reset_index(drop=True)


def _rows(data: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The frame rows of one result: itself, or one per component of a vector result, plus one per
    competitor of a claim."""
    parts = data.get("components") or [None]
    integrity = "; ".join(verify.problems(data))
    rows = []
    for part in parts:
        whole = part or data
        reported = whole["reported"] or {}
        rows.append(
            {
                "paper": data["paper"],
                "benchmark": data["benchmark"],
                "component": part["name"] if part else "",
                "role": "component" if part else "",
                "profile": data["profile"],
                "seed": data["seed"],
                "reported": reported.get("value", math.nan),
                "reported_pm": reported.get("plus_minus", math.nan),
                "pm_kind": reported.get("plus_minus_kind", ""),
                "reported_decimals": reported.get("decimals"),
                "mean": whole["summary"]["mean"],
                "ci95": whole["summary"]["ci95"],
                "difference": whole["verdict"]["difference"],
                "band": whole["verdict"]["band"],
                "verdict": whole["verdict"]["verdict"],
                "floor": part["floor"] if part else data["targets"]["floor"],
                "chance": data["targets"]["chance"],
                "min_above_chance": data["targets"]["min_above_chance"],
                "direction": data["protocol"]["direction"],
                "episodes": data["test_episodes"]["count"],
                "digest": data["test_episodes"]["digest"],
                "device": data["environment"]["device"],
                "train_seconds": data["timing"]["train_seconds"],
                "commit": data["git"]["commit"][:10],
                "created": data["created"],
                "path": str(path),
                # Figures the run drew (the sinusoid fits), by their path beside the result.
                "figures": ";".join(str(path.with_name(name)) for name in data.get("figures", [])),
                "also": "" if part else _also_cell(data.get("also", {})),
                "claim": data["claim"]["statement"] if "claim" in data else "",
                "claim_expect": data["claim"].get("expect", "holds") if "claim" in data else "",
                "metric": data["protocol"]["metric"],
                "dirty": data["git"]["dirty"] is True,
                "patch": provenance.patch_note(data["git"], path),
                "integrity": integrity,
                "budget": (data.get("budget") or {}).get("share", math.nan),
                "experiment": overrides.label((data.get("overrides") or {}).get("set") or {}),
            }
        )
    if "claim" in data:
        method = rows[0]
        for name, comparison in data["claim"]["comparisons"].items():
            summary = data["competitors"][name]["summary"]
            rows.append(
                {
                    **method,
                    "component": name,
                    "role": "competitor",
                    "mean": summary["mean"],
                    "ci95": summary["ci95"],
                    "difference": comparison["mean_difference"],
                    "band": comparison["ci95"],
                    "verdict": comparison["verdict"],
                    "floor": math.nan,
                    "figures": "",
                    "also": "",
                }
            )
    return rows


def _also_cell(also: dict[str, Any]) -> str:
    """``mse 0.1234 ± 0.0056``: each metric reported beside the benchmark's, with its 95% interval."""
    return "; ".join(f"{name} {p['summary']['mean']:.4f} ± {p['summary']['ci95']:.4f}" for name, p in also.items())


def _with_current_targets(frame: pd.DataFrame) -> pd.DataFrame:
    """Judge every result against the registry as it is now.

    The spec is the source of truth for targets: a corrected reported value or a re-measured floor
    applies to old results too. A result keeps what it was judged against at run time in its file;
    results of papers or benchmarks no longer in the registry keep their stored targets.
    """
    from metabench.errors import UnknownNameError
    from metabench.registry_loader import get_spec
    from metabench.stats import Interval, judge

    for index, row in frame.iterrows():
        try:
            bench = get_spec(row["paper"]).benchmark(row["benchmark"])
        except UnknownNameError:
            continue
        profile = bench.profiles.get(row["profile"])
        if pd.isna(row.get("budget", math.nan)):  # results before schema 4: from their stored hyperparameters
            frame.loc[index, "budget"] = _stored_budget(bench, row["path"])
        if row.get("role", "") == "competitor":
            continue  # judged against the method from per-episode scores at run time
        if bench.claim is not None:
            # A claim's verdict needs the per-episode scores, judged at run time; only the floor moves.
            if profile is not None:
                frame.loc[index, ["floor", "min_above_chance"]] = [profile.floor, profile.min_above_chance]
            frame.loc[index, "chance"] = bench.chance
            continue
        measured = Interval(row["mean"], row["ci95"], int(row["episodes"]), math.nan)
        reported = bench.reported
        if row["component"]:
            component = bench.component(row["component"])
            if component is None:
                continue
            reported = component.reported
        judgement = judge(reported, measured)
        frame.loc[index, ["reported", "reported_pm", "pm_kind", "reported_decimals"]] = (
            [reported.value, reported.plus_minus, reported.plus_minus_kind, reported.decimals]
            if reported
            else [math.nan, math.nan, "", None]
        )
        frame.loc[index, ["difference", "band", "verdict"]] = [judgement.difference, judgement.band, judgement.verdict]
        frame.loc[index, "chance"] = bench.chance
        if profile is not None:
            frame.loc[index, ["floor", "min_above_chance"]] = [
                bench.floor_of(profile, row["component"]),
                profile.min_above_chance,
            ]
    return frame


def _stored_budget(bench: Any, path: str) -> float:
    from metabench.budget import BUDGET_FIELDS, budget_of

    stored = results.read(Path(path))["hyperparameters"]
    counts = [stored.get(key) for key in BUDGET_FIELDS]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
        return math.nan  # a result too old or too damaged to say; its row shows "—"
    try:
        return budget_of(bench, stored).share
    except (KeyError, ValueError, ZeroDivisionError):
        return math.nan


def budget_cell(share: float) -> str:
    """``budget 9.0%`` (``—`` for a result whose budget cannot be known)."""
    from metabench.budget import format_share

    return "—" if pd.isna(share) else f"budget {format_share(float(share))}"


def verdict_style(verdict: str) -> str:
    return {"reproduced": "green", "holds": "green", "below": "red", "fails": "red", "above": "cyan"}.get(
        verdict, "yellow"
    )


def _benchmark_cell(row: pd.Series) -> str:
    if row.get("role", "") == "competitor":
        return f"{row['benchmark']} (vs {row['component']})"
    if row["component"]:
        return f"{row['benchmark']} ({component_label(row['component'])})"
    return str(row["benchmark"])


def _reported_cell(row: pd.Series) -> str:
    if row.get("role", "") == "competitor":
        return "competitor"
    if row.get("claim", ""):
        return "claim (paper: fails)" if row.get("claim_expect", "") == "fails" else "claim"
    if math.isnan(row["reported"]):
        return "—"
    decimals = None if pd.isna(row["reported_decimals"]) else int(row["reported_decimals"])
    if row["pm_kind"] in ("", "none"):
        return printed_number(row["reported"], decimals)
    return f"{printed_number(row['reported'], decimals)} ± {printed_number(row['reported_pm'], decimals)}"


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The human columns: paper, benchmark, reported, reproduced ± interval, difference, verdict, profile."""
    shown = pd.DataFrame(
        {
            "paper": frame["paper"],
            "benchmark": frame.apply(_benchmark_cell, axis=1) if len(frame) else [],
            "reported": frame.apply(_reported_cell, axis=1) if len(frame) else [],
            "reproduced": [f"{m:.2f} ± {c:.2f}" for m, c in zip(frame["mean"], frame["ci95"], strict=True)],
            "difference": [("—" if math.isnan(d) else f"{d:+.2f}") for d in frame["difference"]],
            "verdict": frame["verdict"],
            "profile": frame["profile"],
            "budget": [budget_cell(b) for b in frame.get("budget", pd.Series([math.nan] * len(frame)))],
            "episodes": frame["episodes"],
            "device": frame["device"],
        }
    )
    if len(frame):
        noted = [notes(row) for _, row in frame.iterrows()]
        if any(noted):
            shown["notes"] = noted
    if len(frame) and "also" in frame and frame["also"].fillna("").astype(bool).any():
        shown["also"] = frame["also"].fillna("")
    if len(frame) and frame["figures"].fillna("").astype(bool).any():
        shown["figures"] = [
            " ".join(f"[{Path(f).name}]({f})" for f in str(v).split(";") if f) if isinstance(v, str) else ""
            for v in frame["figures"]
        ]
    return shown


def rich_table(frame: pd.DataFrame) -> Table:
    table = Table(title="metabench: reported vs reproduced")
    shown = display_frame(frame)
    for column in shown.columns:
        table.add_column(column, justify="right" if column in ("reproduced", "difference", "episodes") else "left")
    for row in shown.itertuples(index=False):
        cells = [str(v) for v in row]
        verdict_at = list(shown.columns).index("verdict")
        cells[verdict_at] = f"[{verdict_style(row.verdict)}]{row.verdict}[/]"
        table.add_row(*cells)
    if frame.empty:
        table.caption = "no results found"
    return table


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The comparison as ``table`` (the terminal's table as plain text, for a file), ``markdown`` (human
    columns), ``csv`` or ``json`` (every column)."""
    if fmt == "table":
        import io

        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=240, color_system=None, force_terminal=False).print(rich_table(frame))
        return buffer.getvalue()
    if fmt == "markdown":
        shown = display_frame(frame)
        lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        return str(frame.to_csv(index=False))
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records")), indent=1) + "\n"
    raise MetabenchError(f"unknown format {fmt!r}", "use table, markdown, csv or json")


def notes(row: pd.Series) -> str:
    """What a reader must know before trusting a row: forged or inconsistent numbers, a floor that tests
    nothing, code that was not committed."""
    found = []
    if row.get("experiment", ""):
        found.append(f"experiment: --set {row['experiment']}")
    if row.get("integrity", ""):
        found.append("INCONSISTENT: " + str(row["integrity"]))
    if untested_floor(row):
        found.append("floor not regression-tested")
    if row.get("patch", ""):
        found.append(str(row["patch"]))
    return "; ".join(found)


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


def plot_curves(frame: pd.DataFrame, output: Path) -> Path:
    """Validation accuracy (or the benchmark's metric) against training time, one panel per benchmark, the
    paper's number dashed.

    Time rather than steps on the x-axis, because time-to-accuracy is what a researcher budgets for.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = sorted({(p, b) for p, b in zip(frame["paper"], frame["benchmark"], strict=True)})
    if not benchmarks:
        raise MetabenchError("no results to plot", "run a benchmark first, or point compare at a results folder")
    figure, axes = plt.subplots(1, len(benchmarks), figsize=(4.2 * len(benchmarks), 3.4), squeeze=False)
    for axis, (paper_key, bench_id) in zip(axes[0], benchmarks, strict=True):
        rows = frame[(frame["paper"] == paper_key) & (frame["benchmark"] == bench_id)].drop_duplicates("path")
        metric = "accuracy"
        for _, row in rows.iterrows():
            data = results.read(Path(row["path"]))
            metric = data["protocol"]["metric"]  # accuracy, or a regression metric (mse, log-likelihood)
            key = f"val_{metric}"
            points = [(p["seconds"], p[key]) for p in data["curve"] if key in p]
            if points:
                seconds, accuracy = zip(*points, strict=True)
                axis.plot(
                    seconds,
                    accuracy,
                    marker="o",
                    markersize=3,
                    label=f"{row['profile']} seed {row['seed']} ({row['device']})",
                )
        if not rows["component"].iloc[0] and not math.isnan(rows["reported"].iloc[0]):
            axis.axhline(rows["reported"].iloc[0], color="black", linestyle="--", linewidth=1, label="paper")
        axis.set_title(f"{paper_key} {bench_id}", fontsize=10)
        axis.set_xlabel("training time (s)")
        axis.set_ylabel("validation accuracy (%)" if metric == "accuracy" else f"validation {metric}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return output
