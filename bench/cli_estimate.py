"""``metabench estimate``: time a few steps of a profile and say how long the whole run would take
(registered on :data:`metabench.cli.app` when the CLI module loads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from metabench import cli, options
from metabench.cli import (
    BenchmarkOption,
    DataDir,
    DatasetOption,
    DeviceName,
    DeviceOption,
    PaperArgument,
    ProfileName,
    SetOption,
    ShotsOption,
    VariantOption,
    WaysOption,
)


@cli.app.command()
@cli._friendly
def estimate(
    paper: PaperArgument,
    shots: ShotsOption = None,
    ways: WaysOption = None,
    dataset: DatasetOption = None,
    variant: VariantOption = None,
    benchmark: BenchmarkOption = None,
    profile: Annotated[ProfileName, typer.Option(help="The profile to time.")] = ProfileName.paper,
    set_: SetOption = None,
    steps: Annotated[int, typer.Option(help="Training steps timed (after the warm-up ones).")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed training steps first (allocations, caches).")] = 3,
    device: DeviceOption = DeviceName.auto,
    data_dir: DataDir = None,
    json_output: Annotated[Path | None, typer.Option("--json", help="Also write the estimate as JSON here.")] = None,
) -> None:
    """How long `metabench run` would take here: times a few training steps and the scoring of a few
    validation and test episodes, and extrapolates to the profile's counts. Trains nothing that is kept
    and writes no result."""
    from metabench import overrides
    from metabench.estimate import estimate as measure
    from metabench.estimate import hours_text
    from metabench.plan import RunRequest

    options.positive("--steps", steps)
    options.at_least("--warmup", warmup, 0)
    options.positive("--ways", ways)
    options.at_least("--shots", shots, 0)
    options.existing_folder("--data-dir", data_dir)
    request = RunRequest(
        paper=paper,
        benchmark=benchmark,
        profile=profile.value,
        device=device.value,
        shots=shots,
        ways=ways,
        dataset=dataset,
        variant=variant,
        settings=overrides.parse_assignments(set_ or []),
        data_dir=data_dir,
        share_training=True,
        progress=False,
    )
    found = measure(request, steps, warmup, cli.err)
    table = Table(title=f"{found.paper} {found.benchmark}, profile {found.profile}, on {found.device}")
    for column in ("part", "count", "wall clock", "CPU time"):
        table.add_column(column)
    table.add_row(
        "training",
        f"{found.train_steps} steps",
        f"{hours_text(found.train_seconds)} ({found.seconds_per_step:.3g} s/step)",
        f"{hours_text(found.cpu_seconds_per_step * found.train_steps)} ({found.cpu_seconds_per_step:.3g} s/step)",
    )
    table.add_row("validation", "", hours_text(found.validation_seconds), hours_text(found.cpu_validation_seconds))
    table.add_row("test scoring", "", hours_text(found.test_seconds), hours_text(found.cpu_test_seconds))
    table.add_row(
        "[bold]total[/]", "", f"[bold]{hours_text(found.total_seconds)}[/]", hours_text(found.cpu_total_seconds)
    )
    cli.out.print(table)
    cli.out.print(
        f"Timed {found.steps_timed} steps with {found.threads} torch thread(s). Wall clock: what the run takes "
        "here now. CPU time: with one thread, what it takes on this machine when nothing else runs (with more "
        "threads, divide by their number for a bound). A claim's competitors are scored on top of the test "
        "time shown.",
        highlight=False,
    )
    if json_output is not None:
        json_output.write_text(json.dumps(found.as_dict(), indent=1) + "\n", encoding="utf-8")
