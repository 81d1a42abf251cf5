"""``metabench sweep`` and ``metabench sweep status``: the command line of :mod:`metabench.sweeps`.

Kept apart from :mod:`metabench.cli` so that the main command file gains one registration line only.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from metabench.cli import DataDir, _friendly, err, out

app = typer.Typer(
    help="Many runs (papers x benchmarks x profiles x seeds) through submitit, locally or on SLURM.",
    invoke_without_command=True,
)


class Executor(StrEnum):
    local = "local"
    slurm = "slurm"


class StatusFormat(StrEnum):
    table = "table"
    json = "json"


STATE_STYLE = {"done": "green", "running": "cyan", "queued": "blue", "interrupted": "yellow", "failed": "red"}


@app.callback()
@_friendly
def sweep(
    ctx: typer.Context,
    paper: Annotated[list[str] | None, typer.Option("--paper", help="Paper key or glob; repeatable.")] = None,
    benchmark: Annotated[
        list[str] | None, typer.Option("--benchmark", help="Benchmark id or glob (or PAPER/ID); repeatable.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every benchmark of every paper.")] = False,
    profile: Annotated[list[str] | None, typer.Option("--profile", help="smoke, quick, paper; repeatable.")] = None,
    seeds: Annotated[str, typer.Option(help="Seeds: 0-4, 0,2,7 or 3.")] = "0",
    output: Annotated[Path, typer.Option(help="The sweep's folder: results, manifest, logs.")] = Path("results/sweep"),
    executor: Annotated[Executor, typer.Option(help="local: this machine; slurm: a SLURM cluster.")] = Executor.local,
    device: Annotated[str, typer.Option(help="--device of each run (auto, cpu, cuda).")] = "auto",
    jobs: Annotated[int | None, typer.Option(help="local: at most this many jobs at once.")] = None,
    cpus_per_job: Annotated[
        int | None, typer.Option(help="local on a CPU: cores per job (default 2); slurm: --cpus-per-task.")
    ] = None,
    partition: Annotated[str | None, typer.Option(help="slurm: partition.")] = None,
    time_limit: Annotated[int | None, typer.Option("--time", help="slurm: minutes per job (default 240).")] = None,
    gpus: Annotated[int | None, typer.Option(help="slurm: GPUs per job.")] = None,
    mem_gb: Annotated[float | None, typer.Option("--mem-gb", help="slurm: memory per job in GB.")] = None,
    parallel: Annotated[
        int | None, typer.Option("--array-parallelism", help="slurm: most array jobs running at once.")
    ] = None,
    slurm_config: Annotated[
        Path | None, typer.Option("--slurm-config", help="slurm: a TOML file with a [slurm] table; flags win.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="slurm: wait until every job ends.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the jobs; submit nothing.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Run every (paper, benchmark, profile, seed) selected as one job; again, it skips what is done,
    resubmits what failed and resumes what was interrupted. `metabench sweep status DIR` reports."""
    if ctx.invoked_subcommand is not None:
        return
    from metabench import sweeps as sweeping

    request = sweeping.SweepRequest(
        papers=paper or [],
        benchmarks=benchmark or [],
        everything=all_,
        profiles=profile or ["quick"],
        seeds=sweeping.parse_seeds(seeds),
        output=output,
        executor=executor.value,
        device=device,
        jobs=jobs,
        cpus_per_job=cpus_per_job,
        slurm=sweeping.slurm_options(
            slurm_config,
            partition=partition,
            time=time_limit,
            gpus=gpus,
            cpus=cpus_per_job,
            mem_gb=mem_gb,
            array_parallelism=parallel,
        )
        if executor is Executor.slurm
        else sweeping.SlurmOptions(),
        extra=["--data-dir", str(data_dir)] if data_dir else [],
        wait=wait,
        dry_run=dry_run,
    )
    manifest = sweeping.sweep(request, on_event=lambda message: err.print(message, highlight=False))
    if dry_run:
        for name in manifest["jobs"]:
            out.print(name, highlight=False)
        out.print(f"{len(manifest['jobs'])} jobs (dry run: nothing submitted)")
        return
    _print_status(sweeping.status(output))


def _cell(row: dict[str, Any]) -> str:
    state = row["state"]
    if state == "done":
        return f"{row['verdict']}  {row['mean']:.4g} ± {row['ci95']:.2g}"
    if state in ("running", "queued") and "step" in row:
        eta = row.get("eta_seconds")
        left = f", ETA {eta / 60:.1f} min" if eta is not None else ""
        return f"step {row['step']}/{row['total']}{left}"
    return str(row.get("detail", ""))


def _print_status(rows: list[dict[str, Any]]) -> None:
    table = Table(title="metabench sweep")
    for column in ("paper", "benchmark", "profile", "seed", "state", "progress / verdict / last log line", "job id"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = STATE_STYLE.get(row["state"], "white")
        table.add_row(
            row["paper"],
            row["benchmark"],
            row["profile"],
            str(row["seed"]),
            f"[{style}]{row['state']}[/]",
            _cell(row),
            str(row.get("scheduler_id", "")),
        )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    table.caption = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    out.print(table)


@app.command("status")
@_friendly
def sweep_status(
    folder: Annotated[Path, typer.Argument(help="The sweep's output folder.")],
    format: Annotated[StatusFormat, typer.Option("--format", help="table or json.")] = StatusFormat.table,
) -> None:
    """Each job's state: queued, running (step, ETA), done (verdict), failed (last log line)."""
    from metabench import sweeps as sweeping

    rows = sweeping.status(folder)
    if format is StatusFormat.json:
        out.print(json.dumps(rows, indent=1), markup=False, highlight=False, soft_wrap=True)
        return
    _print_status(rows)
