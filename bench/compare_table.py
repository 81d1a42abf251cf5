"""How a comparison frame is shown: the human cells of each row, the terminal table fitted to its width,
and the markdown, csv, json and plain-table renderings.

Split from :mod:`metabench.compare` (which builds the frame and re-exports every name here) so that the
frame's contents and its presentation can change apart; nothing here reads a result file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from rich.table import Table

from metabench.checking import untested_floor
from metabench.errors import MetabenchError
from metabench.metrics import table_decimals
from metabench.spec import component_label, printed_number


def budget_cell(share: float) -> str:
    """``budget 9.0%`` (``—`` for a result whose budget cannot be known)."""
    from metabench.budget import format_share

    return "—" if pd.isna(share) else f"budget {format_share(float(share))}"


def verdict_style(verdict: str) -> str:
    return {
        "reproduced": "green",
        "holds": "green",
        "below": "red",
        "fails": "red",
        "diverged": "red",
        "above": "cyan",
    }.get(verdict, "yellow")


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
    metric_names = frame["metric"] if "metric" in frame else ["accuracy"] * len(frame)
    decimals = [table_decimals(str(name)) for name in metric_names]  # the registry's, per row's metric
    shown = pd.DataFrame(
        {
            "paper": frame["paper"],
            "benchmark": frame.apply(_benchmark_cell, axis=1) if len(frame) else [],
            "reported": frame.apply(_reported_cell, axis=1) if len(frame) else [],
            "reproduced": [
                f"{m:.{n}f} ± {c:.{n}f}" for m, c, n in zip(frame["mean"], frame["ci95"], decimals, strict=True)
            ],
            "difference": [
                ("—" if math.isnan(d) else f"{d:+.{n}f}") for d, n in zip(frame["difference"], decimals, strict=True)
            ],
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
