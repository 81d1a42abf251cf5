"""What ``metabench run`` prints about each result it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from metabench import floors


def print_outcome(result: dict[str, Any], path: Path, out: Console) -> None:
    """``metabench run``'s closing table for one result: the paper's number, the reproduced one, the
    verdict, the floor, the time; then the result's path on a line of its own."""
    from metabench.budget import format_share
    from metabench.compare import verdict_style
    from metabench.overrides import label
    from metabench.spec import component_label

    summary, reported, verdict = result["summary"], result["reported"], result["verdict"]
    table = Table(show_header=False, box=None)
    table.add_row("benchmark", f"{result['paper']} {result['benchmark']} ({result['profile']} profile)")
    if result.get("budget"):
        budget = result["budget"]
        table.add_row(
            "budget",
            f"{format_share(budget['share'])} of the paper profile's training "
            f"({budget['examples']:,} of {budget['paper_examples']:,} training examples)",
        )
    settings = (result.get("overrides") or {}).get("set")
    if settings:
        table.add_row("experiment", f"--set {label(settings)}: not the paper's profile, judged by nothing")
    if result.get("user_images"):
        mine = result["user_images"]
        parts = ", ".join(f"{len(p['classes'])} {name}" for name, p in mine["parts"].items())
        table.add_row("dataset", f"your images in {mine['path']} ({parts} classes): no paper number, no verdict")
    if reported:
        pm = "" if reported["plus_minus_kind"] == "none" else f" ± {reported['plus_minus']:g}"
        table.add_row("paper", f"{reported['value']:g}{pm}  ({reported['plus_minus_kind']}; {reported['table']})")
    table.add_row(
        "reproduced",
        f"{summary['mean']:.2f} ± {summary['ci95']:.2f}  (95% over {summary['n']} "
        f"frozen episodes, digest {result['test_episodes']['digest'][:12]})",
    )
    if reported:
        table.add_row("difference", f"{verdict['difference']:+.2f}  (band ±{verdict['band']:.2f})")
    for part in result.get("components", []):
        paper = part["reported"]["value"] if part["reported"] else None
        against = "  " if paper is None else f"  paper {paper:g}, {part['verdict']['difference']:+.2f}, "
        floor = "" if part["floor"] is None or result["profile"] != "quick" else f"  floor {part['floor']:g}"
        table.add_row(
            component_label(part["name"]),
            f"{part['summary']['mean']:.2f} ± {part['summary']['ci95']:.2f}{against}"
            f"[{verdict_style(part['verdict']['verdict'])}]{part['verdict']['verdict']}[/]{floor}",
        )
    for name, part in result.get("also", {}).items():
        table.add_row(
            name, f"{part['summary']['mean']:.4f} ± {part['summary']['ci95']:.4f}  (reported beside, no verdict)"
        )
    claim = result.get("claim")
    if claim:
        table.add_row("claim", f"{claim['statement']} ({claim['confidence']}; {claim['source']})")
        for name, comparison in claim["comparisons"].items():
            theirs = result["competitors"][name]["summary"]
            table.add_row(
                f"vs {name}",
                f"{theirs['mean']:.4g} ± {theirs['ci95']:.2g}; method - {name} = "
                f"{comparison['mean_difference']:+.4g} ± {comparison['ci95']:.2g} (p = {comparison['p_value']:.2g})  "
                f"[{verdict_style(comparison['verdict'])}]{comparison['verdict']}[/]",
            )
    style = verdict_style(verdict["verdict"])
    table.add_row("verdict", f"[{style}]{verdict['verdict']}[/]")
    targets = result["targets"]
    if result["profile"] == "quick" and isinstance(targets["floor"], int | float):
        lower = result["protocol"]["direction"] == "lower"
        met = floors.meets(summary["mean"], targets["floor"], result["protocol"]["direction"])
        table.add_row(f"quick {'ceiling' if lower else 'floor'}", f"{targets['floor']:g}: {'met' if met else 'MISSED'}")
    timing = result["timing"]
    table.add_row(
        "time",
        f"train {timing['train_seconds']:.0f}s ({timing['train_episodes_per_second']:.1f} ep/s), "
        f"test {timing['eval_seconds']:.0f}s on {result['environment']['device']}",
    )
    out.print(table)
    # The path on a line of its own, never wrapped or cut, so that it can be copied whole.
    out.print("result:", highlight=False)
    out.print(str(path), soft_wrap=True, highlight=False, markup=False)
