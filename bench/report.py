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

The page layout lives in ``report_template.html`` (package data); this module fills it. Every string
that comes from a result is escaped, so a result file cannot inject markup or script into the report.
"""

from __future__ import annotations

import base64
import html
import io
import json
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

#: figures larger than this are linked by name instead of inlined (a report should stay mailable)
MAX_INLINE_BYTES = 4 * 2**20
#: the verdict colours, as the terminal's (``compare.verdict_style``) names them
_VERDICT_CLASS = {"green": "v-green", "red": "v-red", "cyan": "v-cyan", "yellow": "v-yellow"}
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


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def verdict_badge(verdict: str) -> str:
    css = _VERDICT_CLASS.get(compare.verdict_style(verdict), "v-yellow")
    return f'<span class="verdict {css}" data-verdict="{_e(verdict)}">{_e(verdict)}</span>'


def _number(value: Any) -> str:
    """A sort key for a numeric cell ("" for a missing number, which sorts last)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(number) else repr(number)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --------------------------------------------------------------------------- learning curves


def curve_png(result: Mapping[str, Any]) -> bytes | None:
    """The learning curve as PNG bytes: training loss against steps, validation score against steps and
    against training time, the paper's number dashed; ``None`` for a result without a curve."""
    curve = result.get("curve") or []
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result["protocol"]["metric"]
    val_key = f"val_{metric}"
    validated = [p for p in curve if val_key in p and p[val_key] is not None]
    panels = 3 if validated else 1
    figure, axes = plt.subplots(1, panels, figsize=(3.3 * panels, 2.4), squeeze=False)
    axis = axes[0][0]
    trained = [p for p in curve if p.get("train_loss") is not None]
    axis.plot([p["step"] for p in trained], [p["train_loss"] for p in trained], marker="o", markersize=2.5)
    axis.set_title("training loss", fontsize=9)
    axis.set_xlabel("step", fontsize=8)
    reported = (result.get("reported") or {}).get("value")
    label = "validation accuracy (%)" if metric == "accuracy" else f"validation {metric}"
    if validated:
        for axis, x_key, x_label in ((axes[0][1], "step", "step"), (axes[0][2], "seconds", "training time (s)")):
            axis.plot(
                [p[x_key] for p in validated], [p[val_key] for p in validated], marker="o", markersize=2.5, color="C2"
            )
            if reported is not None and not result.get("components"):
                axis.axhline(reported, color="black", linestyle="--", linewidth=0.8, label="paper")
                axis.legend(fontsize=7)
            axis.set_title(label, fontsize=9)
            axis.set_xlabel(x_label, fontsize=8)
    for axis in axes[0]:
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


# --------------------------------------------------------------------------- pieces of the page


def _kv_table(pairs: Iterable[tuple[str, Any]], mono: Iterable[str] = ()) -> str:
    monospaced = set(mono)
    rows = []
    for key, value in pairs:
        cell = f"<code>{_e(value)}</code>" if key in monospaced else _e(value)
        rows.append(f"<tr><th>{_e(key)}</th><td>{cell}</td></tr>")
    return '<table class="kv">' + "".join(rows) + "</table>"


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            pairs.extend(_flatten(value, f"{prefix}{key}."))
        else:
            pairs.append((f"{prefix}{key}", json.dumps(value) if isinstance(value, list | dict | bool) else value))
    return pairs


def machine_text(environment: Mapping[str, Any]) -> str:
    """``cpu (AMD EPYC, 2 cores), Linux-6.1-x86_64, torch 2.13.0+cpu, Python 3.11.7``."""
    name = environment.get("device_name") or environment.get("cpu") or ""
    cores = f", {environment['cpu_count']} cores" if environment.get("cpu_count") else ""
    host = f" on {environment['hostname']}" if environment.get("hostname") else ""
    platform = f", {environment['platform']}" if environment.get("platform") else ""
    return (
        f"{environment.get('device', '?')} ({name}{cores}){host}{platform}, torch {environment.get('torch', '?')}, "
        f"Python {environment.get('python', '?')}"
    )


def _provenance(result: Mapping[str, Any], path: Path) -> str:
    git = result["git"]
    dirty = git.get("dirty")
    dirty_text = "unknown (not a git checkout)" if dirty is None else "yes" if dirty else "no"
    if dirty:
        sha = f", sha256 {git['diff_sha256'][:12]}" if git.get("diff_sha256") else ""
        dirty_text += f" ({provenance_note(git, path)}{sha})"
    episodes = result["test_episodes"]
    timing = result["timing"]
    return _kv_table(
        [
            ("command", result["command"]),
            ("commit", git["commit"]),
            ("dirty", dirty_text),
            ("machine", machine_text(result["environment"])),
            ("date", result["created"]),
            ("episode digest", episodes["digest"]),
            ("test episodes", f"{episodes['count']} (test seed {episodes['seed']})"),
            (
                "time",
                f"train {timing['train_seconds']:.0f} s ({timing['train_steps']} steps, "
                f"{timing['train_episodes_per_second']:.1f} ep/s), test {timing['eval_seconds']:.0f} s",
            ),
            ("spec", f"{result['spec_file']} (sha256 {result['spec_sha256'][:12]})"),
            ("file", str(path)),
        ],
        mono=("command", "commit", "episode digest", "file"),
    )


def provenance_note(git: Mapping[str, Any], path: Path) -> str:
    from metabench.provenance import patch_note

    return str(patch_note(dict(git), path) or "")


def _figures(result: Mapping[str, Any], path: Path) -> str:
    parts = []
    for name in result.get("figures") or []:
        file = path.with_name(name)
        if not file.is_file():
            parts.append(f'<p class="note">figure {_e(name)} is not beside the result</p>')
            continue
        size = file.stat().st_size
        suffix = file.suffix.lower()
        if suffix in (".png", ".svg") and size <= MAX_INLINE_BYTES:
            mime = "image/png" if suffix == ".png" else "image/svg+xml"
            uri = _data_uri(file.read_bytes(), mime)
            parts.append(f'<figure><img src="{uri}" alt="{_e(name)}"><figcaption class="note">{_e(name)}</figcaption>')
            parts.append("</figure>")
        elif suffix == ".csv" and size <= MAX_INLINE_BYTES:
            uri = _data_uri(file.read_bytes(), "text/csv")
            parts.append(f'<p><a download="{_e(name)}" href="{uri}">{_e(name)}</a> (data, {size / 1024:.0f} KiB)</p>')
        else:
            parts.append(f'<p class="note">{_e(name)} ({size / 1024:.0f} KiB, not inlined)</p>')
    return "".join(parts)


def result_panel(anchor: str, result: Mapping[str, Any], path: Path, rows: pd.DataFrame) -> str:
    """One result's panel: headline, learning curve, figures, protocol, hyperparameters, provenance."""
    title = f"{result['paper']} {result['benchmark']}"
    verdicts = " ".join(
        (f"{_e(compare._benchmark_cell(row).removeprefix(str(row['benchmark'])).strip())} " if row["component"] else "")
        + verdict_badge(str(row["verdict"]))
        for _, row in rows.iterrows()
        if row.get("role", "") != "competitor"
    )
    first = rows.iloc[0]
    summary = result["summary"]
    budget = result.get("budget") or {}
    share = budget.get("share", first.get("budget", math.nan))
    headline = (
        f"{summary['mean']:.2f} ± {summary['ci95']:.2f} over {summary['n']} frozen episodes; "
        f"paper {compare._reported_cell(first)}; {compare.budget_cell(share)}"
    )
    experiment = (result.get("overrides") or {}).get("set")
    tag = f' <span class="tag">experiment: --set {_e(first["experiment"])}</span>' if experiment else ""
    curve = curve_png(result)
    curve_html = (
        f'<img src="{_data_uri(curve, "image/png")}" alt="learning curve of {_e(title)}">'
        if curve
        else '<p class="note">no learning curve recorded</p>'
    )
    protocol = dict(result["protocol"])
    protocol["test_episodes"] = result["test_episodes"]["count"]
    if result.get("user_images"):
        mine = result["user_images"]
        protocol["dataset"] = f"the user's images in {mine['path']} (sha256 {mine['content_sha256'][:12]})"
        protocol["class split"] = mine["split_rule"]
        for name, part in mine["parts"].items():
            protocol[f"{name} classes"] = f"{len(part['classes'])} x {part['examples_per_class']} images"
    note = compare.notes(first)
    return (
        f'<section class="result" id="{anchor}" data-paper="{_e(result["paper"])}">'
        f'<h3>{_e(title)} <span class="meta">({_e(result["profile"])} profile, seed {_e(result["seed"])})</span>'
        f"{tag}</h3>"
        f"<p>{verdicts} {_e(headline)}</p>"
        + (f'<p class="note">{_e(note)}</p>' if note else "")
        + f"<h4>learning curve</h4>{curve_html}"
        + (f"<h4>figures</h4>{_figures(result, path)}" if result.get("figures") else "")
        + '<div class="grid"><div><h4>protocol</h4>'
        + _kv_table(_flatten(protocol))
        + "<h4>provenance</h4>"
        + _provenance(result, path)
        + "</div><div><h4>hyperparameters</h4>"
        + _kv_table(_flatten(result["hyperparameters"]))
        + "</div></div></section>"
    )


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
