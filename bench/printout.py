"""What ``metabench run`` prints about each result it wrote."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from metabench import floors
from metabench.kinds import kind_of_result
from metabench.result_schema import Result


def print_outcome(result: Result, path: Path, out: Console) -> None:
    """``metabench run``'s closing table for one result: the paper's number, the reproduced one, the
    parts its kind prints (:meth:`metabench.kinds.Kind.lines`), the verdict, the floor, the time; then
    the result's path on a line of its own."""
    from metabench.budget import format_share
    from metabench.compare import verdict_style
    from metabench.overrides import label

    summary, reported, verdict = result.summary, result.reported, result.verdict
    table = Table(show_header=False, box=None)
    table.add_row("benchmark", f"{result.paper} {result.benchmark} ({result.profile} profile)")
    if result.budget:
        budget = result.budget
        table.add_row(
            "budget",
            f"{format_share(budget['share'])} of the paper profile's training "
            f"({budget['examples']:,} of {budget['paper_examples']:,} training examples)",
        )
    if result.settings:
        table.add_row("experiment", f"--set {label(result.settings)}: not the paper's profile, judged by nothing")
    if result.user_images:
        mine = result.user_images
        parts = ", ".join(f"{len(p['classes'])} {name}" for name, p in mine["parts"].items())
        table.add_row("dataset", f"your images in {mine['path']} ({parts} classes): no paper number, no verdict")
    if reported:
        pm = "" if reported["plus_minus_kind"] == "none" else f" ± {reported['plus_minus']:g}"
        table.add_row("paper", f"{reported['value']:g}{pm}  ({reported['plus_minus_kind']}; {reported['table']})")
    table.add_row(
        "reproduced",
        f"{summary['mean']:.2f} ± {summary['ci95']:.2f}  (95% over {summary['n']} "
        f"frozen episodes, digest {result.test_episodes['digest'][:12]})",
    )
    if reported:
        table.add_row("difference", f"{verdict['difference']:+.2f}  (band ±{verdict['band']:.2f})")
    for name, text in kind_of_result(result).lines(result):
        table.add_row(name, text)
    style = verdict_style(verdict["verdict"])
    table.add_row("verdict", f"[{style}]{verdict['verdict']}[/]")
    targets = result.targets
    if result.profile == "quick" and isinstance(targets["floor"], int | float):
        lower = result.protocol["direction"] == "lower"
        met = floors.meets(summary["mean"], targets["floor"], result.protocol["direction"])
        table.add_row(f"quick {'ceiling' if lower else 'floor'}", f"{targets['floor']:g}: {'met' if met else 'MISSED'}")
    timing = result.timing
    table.add_row(
        "time",
        f"train {timing['train_seconds']:.0f}s ({timing['train_episodes_per_second']:.1f} ep/s), "
        f"test {timing['eval_seconds']:.0f}s on {result.environment['device']}",
    )
    out.print(table)
    # The path on a line of its own, never wrapped or cut, so that it can be copied whole.
    out.print("result:", highlight=False)
    out.print(str(path), soft_wrap=True, highlight=False, markup=False)
