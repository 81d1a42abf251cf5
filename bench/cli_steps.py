"""``metabench bench-steps``: the training step of ProtoNets, MAML and MANN under glibc's allocator
settings and under the tuned ones, paired in one process (registered on :data:`metabench.cli.app` when
the CLI module loads)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from metabench import cli, options
from metabench.cli import DataDir, ProfileName
from metabench.errors import MetabenchError

METHOD_HELP = "Method to time: protonet, maml or mann; repeatable (default: all three)."
PAIRING_HELP = (
    "lockstep: each setting in its own fresh process, one step of each in turn (before is glibc untouched); "
    "in-process: one process switching the setting with mallopt before every step."
)


class Pairing(StrEnum):
    lockstep = "lockstep"
    in_process = "in-process"


@cli.app.command("bench-steps")
@cli._friendly
def bench_steps(
    method: Annotated[list[str] | None, typer.Option("--method", help=METHOD_HELP, show_default=False)] = None,
    profile: Annotated[ProfileName, typer.Option(help="The profile whose step is timed.")] = ProfileName.paper,
    rounds: Annotated[int, typer.Option(help="Timed rounds; each times one step of before, then one of after.")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed rounds first (allocations, caches).")] = 2,
    matmul_seconds: Annotated[float, typer.Option(help="CPU seconds spent measuring the matmul rate.")] = 2.0,
    pairing: Annotated[Pairing, typer.Option(help=PAIRING_HELP)] = Pairing.lockstep,
    data_dir: DataDir = None,
    json_output: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Steps/s of each method's training step (the runner's own: sampling, loss, backward, optimiser)
    with glibc's allocator settings (before) and metabench's (after), alternating step by step in one
    process; CPU time on one torch thread, GFLOP/s as a share of the matmul rate measured the same way."""
    from metabench.step_speed import METHODS, measure, report_table

    methods = method or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise MetabenchError(f"--method {unknown[0]} is not timed here", f"choose from {', '.join(METHODS)}")
    options.positive("--rounds", rounds, "time at least one round")
    options.at_least("--warmup", warmup, 0)
    if not matmul_seconds > 0:
        raise MetabenchError(f"--matmul-seconds {matmul_seconds} must be above 0")
    options.existing_folder("--data-dir", data_dir)
    options.writable_file("--json", json_output)
    report = measure(
        methods, profile.value, rounds, warmup, data_dir, cli.err, pairing=pairing.value, seconds=matmul_seconds
    )
    cli.out.print(report_table(report))
    for name in dict.fromkeys(row["method"] for row in report["rows"]):
        after = next(r for r in report["rows"] if r["method"] == name and r["config"] == "after")
        cli.out.print(
            f"{name}: after runs at {after['speed_vs_before']:.2f}x before's speed "
            f"(median over {rounds} rounds of before's CPU time over after's, paired {pairing.value})",
            highlight=False,
        )
    if pairing is Pairing.in_process:
        cli.out.print("peak MiB: this one process's, common to both settings", highlight=False)
    if json_output is not None:
        json_output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
