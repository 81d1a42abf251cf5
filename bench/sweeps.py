"""Sweeps: many runs (papers x benchmarks x profiles x seeds) through an existing scheduler, submitit.

One job is one ``metabench run PAPER --benchmark ID --profile P --seed S --resume`` into the sweep's
output folder (see :mod:`metabench.sweepjob`). Two executors:

* ``local``: this machine, jobs in parallel, one per GPU (``CUDA_VISIBLE_DEVICES``) or one per group of
  cores (pinned, ``OMP_NUM_THREADS`` set), never more than the machine holds; the command waits for them.
* ``slurm``: one job array per submission, with a concurrency limit; partition, time, GPUs, CPUs and
  memory per job from flags or a small TOML file. The command returns once the array is queued.

``OUTPUT/.sweep/manifest.json`` (the manifest) lists every job the sweep was asked for and each submission of it.
A job's state is read from the folder, never remembered: a result file means done (whichever machine
wrote it, so merged folders count), the job's state file says running, interrupted or failed, and the
scheduler's queue says queued. Running the same sweep again therefore skips what is done or still
alive and resubmits the rest; ``--resume`` makes an interrupted job continue from its checkpoint.

The pieces live in :mod:`metabench.sweep_plan` (selection, manifest, commands),
:mod:`metabench.sweep_state` (each job's state) and :mod:`metabench.sweep_executors` (local slots,
SLURM arrays); this module joins them into :func:`sweep` and re-exports the names callers use.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metabench.errors import MetabenchError, UnknownNameError, did_you_mean
from metabench.sweep_executors import INSTALL_HINT, Slot, local_slots, require_submitit, run_local, submit_slurm
from metabench.sweep_plan import (
    MANIFEST,
    PROFILES,
    SCHEMA,
    STATE_FOLDER,
    JobKey,
    SlurmOptions,
    command,
    job_paths,
    manifest_path,
    parse_seeds,
    plan,
    read_manifest,
    select,
    slurm_options,
    write_manifest,
)
from metabench.sweep_state import last_line, progress, status, wait

__all__ = [
    "INSTALL_HINT",
    "MANIFEST",
    "PROFILES",
    "SCHEMA",
    "STATE_FOLDER",
    "JobKey",
    "Slot",
    "SlurmOptions",
    "SweepRequest",
    "command",
    "job_paths",
    "last_line",
    "local_slots",
    "manifest_path",
    "parse_seeds",
    "plan",
    "progress",
    "read_manifest",
    "select",
    "slurm_options",
    "status",
    "sweep",
    "wait",
    "write_manifest",
]


@dataclass
class SweepRequest:
    """Everything ``metabench sweep`` and :func:`metabench.sweep` take."""

    papers: list[str] = field(default_factory=list)
    benchmarks: list[str] = field(default_factory=list)
    everything: bool = False
    profiles: list[str] = field(default_factory=lambda: ["quick"])
    seeds: list[int] = field(default_factory=lambda: [0])
    output: Path = Path("results/sweep")
    executor: str = "local"
    device: str = "auto"
    jobs: int | None = None  # local: the most jobs at once (never more than the slots the machine has)
    cpus_per_job: int | None = None  # local, CPU only: cores per job (default 2)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    extra: list[str] = field(default_factory=list)  # more `metabench run` options, e.g. ["--data-dir", "X"]
    wait: bool = True  # slurm: wait for the array to finish (local always waits)
    poll_seconds: float = 5.0
    dry_run: bool = False


def sweep(request: SweepRequest, on_event: Any = None) -> dict[str, Any]:
    """Run or submit every job of the request not yet done or alive; returns the manifest.

    Jobs already done (a result in the folder), running or queued are left alone; failed, interrupted
    and never-submitted ones are (re)submitted, and ``--resume`` continues the interrupted.
    """
    say = on_event or (lambda message: None)
    if request.executor not in ("local", "slurm"):
        raise UnknownNameError(
            f"unknown executor {request.executor!r}", did_you_mean(request.executor, ["local", "slurm"])
        )
    if not request.dry_run:
        require_submitit()  # before anything is written: without submitit, say how to install it
    keys = plan(select(request.papers, request.benchmarks, request.everything), request.profiles, request.seeds)
    output = Path(request.output)
    output.mkdir(parents=True, exist_ok=True)
    try:
        manifest = read_manifest(output)
    except MetabenchError:
        if manifest_path(output).exists():
            raise
        manifest = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": {}}
    for key in keys:
        manifest["jobs"].setdefault(key.name, {**asdict(key), "submissions": 0})
    manifest["output"] = str(output.resolve())
    if request.dry_run:
        return manifest
    write_manifest(output, manifest)
    wanted = {key.name for key in keys}
    states = {row["job"]: row for row in status(output)}
    todo = [key for key in keys if states[key.name]["state"] not in ("done", "running", "queued")]
    skipped = len(wanted) - len(todo)
    say(f"{len(wanted)} jobs: {skipped} done or under way, {len(todo)} to run")
    if todo and request.executor == "local":
        slots = local_slots(request.jobs, request.cpus_per_job, None if request.device != "cpu" else 0)
        say(f"running on {len(slots)} slot(s): {'; '.join(s.label for s in slots)}")
        run_local(output, todo, manifest, slots, request.device, request.extra, say)
    elif todo:
        ids = submit_slurm(output, todo, manifest, request.slurm, request.device, request.extra)
        say(f"submitted {len(ids)} SLURM jobs ({ids[0].split('_')[0]}, array of {len(ids)})")
        if request.wait:
            wait(output, [k.name for k in keys], request.poll_seconds)
    return read_manifest(output)
