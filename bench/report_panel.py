"""One result's panel of ``metabench report``: headline, learning curve, figures, protocol, hyperparameters
and provenance, plus the small HTML helpers the page's tables share.

Split from :mod:`metabench.report` so that drawing and describing a single result reads apart from
gathering every result into the page's tables. Every string that comes from a result is escaped here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from metabench import compare, metrics

#: figures larger than this are linked by name instead of inlined (a report should stay mailable)
MAX_INLINE_BYTES = 4 * 2**20
#: the verdict colours, as the terminal's (``compare.verdict_style``) names them
_VERDICT_CLASS = {"green": "v-green", "red": "v-red", "cyan": "v-cyan", "yellow": "v-yellow"}


def escape(value: Any) -> str:
    """Text for HTML body or attribute, quotes included: result strings never become markup."""
    return html.escape(str(value), quote=True)


_e = escape


def verdict_badge(verdict: str) -> str:
    css = _VERDICT_CLASS.get(compare.verdict_style(verdict), "v-yellow")
    return f'<span class="verdict {css}" data-verdict="{_e(verdict)}">{_e(verdict)}</span>'


def data_uri(data: bytes, mime: str) -> str:
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
    label = f"validation {metrics.axis_label(metric)}"
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


def kv_table(pairs: Iterable[tuple[str, Any]], mono: Iterable[str] = ()) -> str:
    monospaced = set(mono)
    rows = []
    for key, value in pairs:
        cell = f"<code>{_e(value)}</code>" if key in monospaced else _e(value)
        rows.append(f"<tr><th>{_e(key)}</th><td>{cell}</td></tr>")
    return '<table class="kv">' + "".join(rows) + "</table>"


def flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            pairs.extend(flatten(value, f"{prefix}{key}."))
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
    return kv_table(
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
            uri = data_uri(file.read_bytes(), mime)
            parts.append(f'<figure><img src="{uri}" alt="{_e(name)}"><figcaption class="note">{_e(name)}</figcaption>')
            parts.append("</figure>")
        elif suffix == ".csv" and size <= MAX_INLINE_BYTES:
            uri = data_uri(file.read_bytes(), "text/csv")
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
        f'<img src="{data_uri(curve, "image/png")}" alt="learning curve of {_e(title)}">'
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
        + kv_table(flatten(protocol))
        + "<h4>provenance</h4>"
        + _provenance(result, path)
        + "</div><div><h4>hyperparameters</h4>"
        + kv_table(flatten(result["hyperparameters"]))
        + "</div></div></section>"
    )
