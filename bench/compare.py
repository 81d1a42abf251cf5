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


#: what ``compare`` shows at any terminal width (80 columns and up), never truncated
REQUIRED_COLUMNS = ("paper", "benchmark", "reported", "reproduced", "difference", "verdict")
#: what wider terminals add, in this order, while the table still fits
OPTIONAL_COLUMNS = ("profile", "budget", "episodes", "device", "figures", "notes", "also")
#: columns that never wrap (numbers, names, verdicts); the benchmark and reported columns may
_NO_WRAP = {"paper", "reproduced", "difference", "verdict", "profile", "budget", "episodes", "device", "seed"}
_RIGHT = {"reproduced", "difference", "episodes", "budget", "seed", "reported"}
#: the characters between two columns of the terminal table (``box.SIMPLE_HEAD``): two with room, else one
_GAP, _NARROW_GAP = 2, 1
#: the widths a benchmark name and a reported value may be wrapped to, to make room for optional columns
_COMPACT_BENCHMARK, _COMPACT_REPORTED = 30, 12


def table_cells(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The human table's cells as text: :func:`display_frame`'s columns, and any other column of the
    frame asked for by name, in the order asked."""
    shown = display_frame(frame)
    for name in columns or []:
        if name not in shown and name in frame:
            shown[name] = ["" if pd.isna(v) else str(v) for v in frame[name]] if len(frame) else []
    return shown if columns is None else shown[[c for c in columns if c in shown]]


def selectable_columns(frame: pd.DataFrame) -> list[str]:
    """Every name ``--columns`` accepts: the displayed columns, then the frame's own."""
    names = list(REQUIRED_COLUMNS) + list(OPTIONAL_COLUMNS)
    return names + [c for c in frame.columns if c not in names]


def choose_columns(frame: pd.DataFrame, requested: list[str]) -> list[str]:
    """Validate ``--columns``: known names, each once; an unknown one is an error with suggestions."""
    from metabench.errors import UnknownNameError, did_you_mean

    known = selectable_columns(frame)
    for name in requested:
        if name not in known:
            raise UnknownNameError(f"unknown column {name!r} for --columns", did_you_mean(name, known))
    return list(dict.fromkeys(requested))


def _natural(shown: pd.DataFrame, column: str) -> int:
    from rich.cells import cell_len

    return max([cell_len(column), *(cell_len(str(v)) for v in shown[column])])


def _longest_word(shown: pd.DataFrame, column: str) -> int:
    from rich.cells import cell_len

    words = [w for v in shown[column] for w in str(v).split()]
    return max([cell_len(column), *(cell_len(w) for w in words)])


def fit_columns(shown: pd.DataFrame, width: int) -> tuple[list[str], dict[str, int], int]:
    """The columns a terminal ``width`` wide shows, the width of each, and the gap between columns.

    The required columns always: names, numbers and verdicts at their full width; the reported value
    wraps between words if it must, and the benchmark name takes what is left (wrapped after a hyphen or
    a space, never cut). Then each optional column, in order, while every column still fits at its full
    width.
    """
    columns = [c for c in REQUIRED_COLUMNS if c in shown]
    natural = {c: _natural(shown, c) for c in shown.columns}
    # an optional column is worth wrapping a long benchmark name or a claim's reported note for
    compact = dict(natural)
    if "benchmark" in shown:
        compact["benchmark"] = min(natural["benchmark"], _COMPACT_BENCHMARK)
    if "reported" in shown:
        compact["reported"] = max(_longest_word(shown, "reported"), min(natural["reported"], _COMPACT_REPORTED))
    for column in OPTIONAL_COLUMNS:
        if column in shown and sum(compact[c] for c in [*columns, column]) + _GAP * len(columns) <= width:
            columns.append(column)
    widths = {c: natural[c] for c in columns}
    gap = _GAP if sum(widths.values()) + _GAP * (len(columns) - 1) <= width else _NARROW_GAP
    room = width - gap * (len(columns) - 1)
    excess = sum(widths.values()) - room
    if excess > 0 and "reported" in widths:  # wrap the reported value between its words
        shrunk = max(_longest_word(shown, "reported"), widths["reported"] - excess)
        excess -= widths["reported"] - shrunk
        widths["reported"] = shrunk
    if excess > 0 and "benchmark" in widths:  # the benchmark name wraps, folding a long word if it must
        widths["benchmark"] = max(len("benchmark"), widths["benchmark"] - excess)
    return columns, widths, gap


def wrap_name(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` cells, broken after a hyphen or at a space (a benchmark
    name: ``mnist-`` / ``completion`` / ``(10 context)``), a piece longer than a line folded."""
    import re

    lines: list[str] = []
    line = ""
    for piece in re.findall(r"[^\s-]*-|\S+|\s+", text):
        if piece.isspace():
            line += " " if line else ""
            continue
        while len(piece) > width:  # a piece wider than the column: fold it
            if line.strip():
                lines.append(line.rstrip())
                line = ""
            lines.append(piece[:width])
            piece = piece[width:]
        if len(line) + len(piece) > width and line.strip():
            lines.append(line.rstrip())
            line = ""
        line += piece
    if line.strip() or not lines:
        lines.append(line.rstrip())
    return "\n".join(lines)


def rich_table(frame: pd.DataFrame, width: int | None = None, columns: list[str] | None = None) -> Table:
    """The comparison as a terminal table.

    ``columns`` names the columns to show; else a ``width`` picks them (:func:`fit_columns`: at 80
    columns paper, benchmark, reported, reproduced ± interval, difference and verdict, wider terminals
    add profile, budget, episodes, device, figures, notes); with neither, every column at its full width
    (the table written to a file, the same on every terminal). Notes a narrow table has no room for are
    printed under it.
    """
    from rich import box

    shown = table_cells(frame, columns)
    if "budget" in shown:  # the header says it
        shown["budget"] = [str(v).removeprefix("budget ") for v in shown["budget"]]
    if "figures" in shown and len(frame):  # names: the files lie beside the result
        shown["figures"] = [" ".join(Path(f).name for f in str(v).split(";") if f) for v in frame["figures"].fillna("")]
    widths: dict[str, int] = {}
    gap = _GAP
    left_out: list[str] = []
    if columns is None and width is not None:
        chosen, widths, gap = fit_columns(shown, width)
        left_out = [c for c in ("notes", "also") if c in shown and c not in chosen]
        shown = shown[chosen].copy()
        if widths.get("benchmark", 0) < _natural(shown, "benchmark"):
            shown["benchmark"] = [wrap_name(str(v), widths["benchmark"]) for v in shown["benchmark"]]
    table = Table(
        title="metabench: reported vs reproduced",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 0) if gap == _NARROW_GAP else (0, 1),
        collapse_padding=True,
    )
    for column in shown.columns:
        table.add_column(
            column,
            justify="right" if column in _RIGHT else "left",
            no_wrap=column in _NO_WRAP,
            overflow="fold",
            width=widths.get(column),
        )
    for row in shown.itertuples(index=False):
        cells = [str(v) for v in row]
        if "verdict" in shown.columns:
            verdict_at = list(shown.columns).index("verdict")
            verdict = cells[verdict_at]
            cells[verdict_at] = f"[{verdict_style(verdict)}]{verdict}[/]"
        table.add_row(*cells)
    if frame.empty:
        table.caption = "no results found"
    elif left_out:
        full = table_cells(frame)
        lines = [
            f"{full['paper'][i]} {full['benchmark'][i]}: " + "; ".join(str(full[c][i]) for c in left_out if full[c][i])
            for i in range(len(full))
            if any(full[c][i] for c in left_out)
        ]
        if lines:
            table.caption = "\n".join(["notes (widen the terminal, or --columns, for a notes column):", *lines])
            table.caption_justify = "left"
    return table


def render(frame: pd.DataFrame, fmt: str, columns: list[str] | None = None) -> str:
    """The comparison as ``table`` (the terminal's table as plain text, for a file), ``markdown`` (human
    columns), ``csv`` or ``json`` (every column). ``columns`` picks the columns of ``table`` and
    ``markdown``; no format depends on the terminal's width."""
    if columns is not None and fmt in ("csv", "json"):
        raise MetabenchError(f"--columns applies to table and markdown; {fmt} holds every column")
    if fmt == "table":
        import io

        from rich.console import Console

        # every column at its full width, whatever the terminal: a file's table never depends on it
        buffer = io.StringIO()
        console = Console(file=buffer, width=100_000, color_system=None, force_terminal=False)
        console.print(rich_table(frame, columns=columns))
        return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"
    if fmt == "markdown":
        shown = display_frame(frame) if columns is None else table_cells(frame, columns)
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
