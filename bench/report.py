"""``metabench report``: every result of a folder in one self-contained HTML file.

The file needs nothing but a browser: styles and the sorting/filtering script are inline, and every
image (learning curves drawn here with matplotlib, figures a run drew) is a base64 ``data:`` URI, so a
report can be mailed, attached to a CI run or opened offline. It holds

- the reported-vs-reproduced table (the rows ``compare`` shows, sortable by any column and filterable by
  paper, verdict and profile, verdicts coloured, budget share, experiments labelled), and the same rows
  aggregated over seeds when a benchmark was run with several;
- per paper, the paper's reported table (from the registry) beside the reproduced one;
- per result, a panel: the learning curve (training loss; validation score against steps and against
  time), the figures the run drew, the protocol and every hyperparameter, and its provenance (command,
  commit, dirty tree, machine, date, test-episode digest).

This module gathers the results into the page's tables; one result's panel (curve, figures, provenance)
is :mod:`metabench.report_panel`'s. The page layout lives in ``report_template.html`` (package data);
this module fills it. Every string that comes from a result is escaped, so a result file cannot inject
markup or script into the report.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from metabench import compare, results
from metabench.errors import ResultError
from metabench.report_panel import escape as _e
from metabench.report_panel import result_panel, verdict_badge

#: the table's columns: header, and whether it is numeric (right-aligned, sorted by number)
_TABLE_COLUMNS = (
    ("paper", False),
    ("benchmark", False),
    ("profile", False),
    ("seed", True),
    ("reported", True),
    ("reproduced", True),
    ("difference", True),
    ("verdict", False),
    ("budget", True),
    ("episodes", True),
    ("device", False),
    ("notes", False),
)


def _number(value: Any) -> str:
    """A sort key for a numeric cell ("" for a missing number, which sorts last)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(number) else repr(number)


def _select(name: str, values: Iterable[str]) -> str:
    options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in sorted(set(values)))
    return (
        f'<label>{_e(name)} <select data-filter="{_e(name)}" id="filter-{_e(name)}">'
        f'<option value="">all</option>{options}</select></label>'
    )


def results_table(frame: pd.DataFrame, anchors: Mapping[str, str]) -> str:
    """The reported-vs-reproduced table: one row per frame row, linked to its result's panel."""
    shown = compare.display_frame(frame)
    head = "".join(
        f'<th class="{"num" if numeric else ""}" data-column="{name}">{name}</th>' for name, numeric in _TABLE_COLUMNS
    )
    body = []
    for (_, row), (_, cells) in zip(frame.iterrows(), shown.iterrows(), strict=True):
        experiment = f' <span class="tag">--set {_e(row["experiment"])}</span>' if row.get("experiment", "") else ""
        link = f'<a href="#{anchors[row["path"]]}">{_e(cells["benchmark"])}</a>{experiment}'
        notes = cells.get("notes", "") if "notes" in shown.columns else ""
        values = {
            "paper": (_e(row["paper"]), None),
            "benchmark": (link, str(cells["benchmark"])),
            "profile": (_e(row["profile"]), None),
            "seed": (_e(row["seed"]), _number(row["seed"])),
            "reported": (_e(cells["reported"]), _number(row["reported"])),
            "reproduced": (_e(cells["reproduced"]), _number(row["mean"])),
            "difference": (_e(cells["difference"]), _number(row["difference"])),
            "verdict": (verdict_badge(str(row["verdict"])), str(row["verdict"])),
            "budget": (_e(str(cells["budget"]).removeprefix("budget ")), _number(row.get("budget", math.nan))),
            "episodes": (_e(row["episodes"]), _number(row["episodes"])),
            "device": (_e(row["device"]), None),
            "notes": (_e(notes), None),
        }
        tds = []
        for name, numeric in _TABLE_COLUMNS:
            content, sort = values[name]
            attributes = (' class="num"' if numeric else "") + (f' data-sort="{_e(sort)}"' if sort is not None else "")
            tds.append(f"<td{attributes}>{content}</td>")
        body.append(
            f'<tr data-paper="{_e(row["paper"])}" data-verdict="{_e(row["verdict"])}" '
            f'data-profile="{_e(row["profile"])}" data-path="{_e(row["path"])}">' + "".join(tds) + "</tr>"
        )
    filters = (
        '<div class="filters">'
        + _select("paper", frame["paper"])
        + _select("verdict", frame["verdict"])
        + _select("profile", frame["profile"])
        + '<label>search <input id="filter-text" type="search" placeholder="benchmark, note, …"></label>'
        + f'<span class="counts"><span id="shown-count">{len(frame)}</span> of {len(frame)} rows shown</span></div>'
    )
    return (
        filters + '<table id="results"><thead><tr>' + head + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>"
    )


def seeds_table(frame: pd.DataFrame) -> str:
    """Rows run with several seeds, aggregated: mean of the seeds' means and their spread."""
    if frame.empty:
        return ""
    keyed = frame.assign(_name=compare.display_frame(frame)["benchmark"].to_numpy())
    groups = keyed.groupby(["paper", "_name", "profile", "experiment"], sort=True, dropna=False)
    rows = []
    for (paper, name, profile, experiment), group in groups:
        seeds = sorted(set(group["seed"]))
        if len(seeds) < 2:
            continue
        means = group.groupby("seed")["mean"].mean()
        verdicts = ", ".join(f"{v} ×{n}" for v, n in group["verdict"].value_counts().sort_index().items())
        rows.append(
            f"<tr><td>{_e(paper)}</td><td>{_e(name)}"
            + (f' <span class="tag">--set {_e(experiment)}</span>' if experiment else "")
            + f"</td><td>{_e(profile)}</td><td class='num'>{len(seeds)}</td>"
            f"<td class='num'>{means.mean():.2f}</td><td class='num'>{means.std(ddof=1):.2f}</td>"
            f"<td>{_e(verdicts)}</td></tr>"
        )
    if not rows:
        return '<p class="note">Every benchmark here was run with one seed; several seeds are aggregated here.</p>'
    return (
        '<table id="seeds"><thead><tr><th>paper</th><th>benchmark</th><th>profile</th><th class="num">seeds</th>'
        '<th class="num">mean of means</th><th class="num">std across seeds</th><th>verdicts</th></tr></thead>'
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def paper_sections(frame: pd.DataFrame, anchors: Mapping[str, str]) -> str:
    """Per paper: the paper's reported table (from the registry) beside the reproduced one."""
    from metabench.errors import UnknownNameError
    from metabench.listing import protocol_text, reported_text, source_text
    from metabench.registry_loader import get_spec

    shown = compare.display_frame(frame)
    sections = []
    for paper in sorted(set(frame["paper"])):
        mine = frame[frame["paper"] == paper]
        try:
            spec = get_spec(paper)
        except UnknownNameError:
            spec = None
        if spec is not None:
            reported_rows = "".join(
                f"<tr><td>{_e(b.id)}</td><td>{_e(protocol_text(b))}</td><td>{_e(reported_text(b))}</td>"
                f"<td>{_e(source_text(b))}</td></tr>"
                for b in spec.benchmarks
            )
            citation = f'<p class="meta">{_e(spec.citation)}</p>'
        else:
            reported_rows = '<tr><td colspan="4">this paper is no longer in the registry</td></tr>'
            citation = ""
        reproduced_rows = "".join(
            f'<tr><td><a href="#{anchors[row["path"]]}">{_e(shown.loc[index, "benchmark"])}</a></td>'
            f"<td>{_e(row['profile'])}</td><td class='num'>{_e(shown.loc[index, 'reproduced'])}</td>"
            f"<td class='num'>{_e(shown.loc[index, 'difference'])}</td><td>{verdict_badge(str(row['verdict']))}</td>"
            f"<td class='num'>{_e(str(shown.loc[index, 'budget']).removeprefix('budget '))}</td></tr>"
            for index, row in mine.iterrows()
        )
        sections.append(
            f'<section class="paper" id="paper-{_e(paper)}"><h3>{_e(paper)}</h3>{citation}<div class="side">'
            "<div><h4>reported by the paper</h4><table><thead><tr><th>benchmark</th><th>protocol</th>"
            f"<th>reported</th><th>source</th></tr></thead><tbody>{reported_rows}</tbody></table></div>"
            "<div><h4>reproduced here</h4><table><thead><tr><th>benchmark</th><th>profile</th>"
            '<th class="num">reproduced</th><th class="num">difference</th><th>verdict</th>'
            f'<th class="num">budget</th></tr></thead><tbody>{reproduced_rows}</tbody></table></div>'
            "</div></section>"
        )
    return '<div class="papers">' + "".join(sections) + "</div>"


# --------------------------------------------------------------------------- the page


def render(paths: list[Path], title: str = "metabench report") -> str:
    """The whole report for the results under ``paths``, as one HTML string."""
    from metabench import __version__

    frame = compare.load_frame(paths)
    if frame.empty:
        where = ", ".join(str(p) for p in paths)
        raise ResultError(
            f"no results found under {where}", "run a benchmark first, or point report at a results folder"
        )
    unique_paths = list(dict.fromkeys(frame["path"]))
    anchors = {p: f"result-{i + 1}" for i, p in enumerate(unique_paths)}
    panels = []
    for p in unique_paths:
        panels.append(result_panel(anchors[p], results.read(Path(p)), Path(p), frame[frame["path"] == p]))
    counts = frame.drop_duplicates("path")["verdict"].value_counts()
    tally = ", ".join(f"{n} {v}" for v, n in counts.items())
    body = (
        "<h2>Reported vs reproduced</h2>"
        + '<p class="note">Click a column header to sort; filter by paper, verdict and profile. '
        "The budget is the share of the paper profile's training examples a run used. "
        "A benchmark links to its result's panel.</p>"
        + results_table(frame, anchors)
        + "<h2>Across seeds</h2>"
        + seeds_table(frame)
        + "<h2>Papers</h2>"
        + paper_sections(frame, anchors)
        + "<h2>Results</h2>"
        + "".join(panels)
    )
    template = string.Template(resources.files("metabench").joinpath("report_template.html").read_text("utf-8"))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return template.substitute(
        title=_e(title),
        version=_e(__version__),
        subtitle=_e(
            f"{len(unique_paths)} results ({tally}) from {', '.join(str(p) for p in paths)}; "
            f"generated {generated} by metabench {__version__}"
        ),
        body=body,
    )


def write(paths: list[Path], output: Path, title: str = "metabench report") -> Path:
    """Write the report to ``output`` (atomically: a half-written report never replaces a good one)."""
    text = render(paths, title)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.part")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(output)
    return output
