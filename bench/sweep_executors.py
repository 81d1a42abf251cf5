"""Where a sweep's jobs run: this machine's slots (a GPU each, or a group of cores) or a SLURM job array,
both through submitit. Each submission is recorded in the manifest as it happens.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metabench.errors import MetabenchError
from metabench.sweep_plan import STATE_FOLDER, JobKey, SlurmOptions, command, job_paths, write_manifest
from metabench.sweepjob import SweepJob, read_state

INSTALL_HINT = 'install it with: pip install "metabench[cluster]" (or pip install submitit)'


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise MetabenchError("sweeps submit through submitit, which is not installed", INSTALL_HINT) from None
    return submitit


@dataclass(frozen=True)
class Slot:
    """Where one local job runs: its GPU, or its group of cores."""

    env: dict[str, str]
    cpus: list[int] | None
    label: str


def local_slots(jobs: int | None, cpus_per_job: int | None, gpus: int | None = None) -> list[Slot]:
    """One slot per visible GPU, else one per group of ``cpus_per_job`` cores, capped by ``jobs``.

    Never more than the machine holds: asking for more slots than GPUs or core groups gives what exists.
    """
    if gpus is None:
        gpus = _cuda_devices()
    if gpus:
        count = min(gpus, jobs or gpus)
        return [Slot({"CUDA_VISIBLE_DEVICES": str(i)}, None, f"GPU {i}") for i in range(count)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    width = max(1, min(cpus_per_job or 2, len(cores)))
    count = max(1, len(cores) // width)
    if jobs is not None:
        count = max(1, min(count, jobs))
    slots = []
    for i in range(count):
        group = cores[i * width : (i + 1) * width]
        threads = str(len(group))
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ""}
        slots.append(Slot(env, group, f"cores {','.join(map(str, group))}"))
    return slots


def _cuda_devices() -> int:
    """Visible CUDA devices, asked of torch only when it is already the machine's business."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _job(
    output: Path, key: JobKey, device: str, extra: list[str], env: dict[str, str], cpus: list[int] | None
) -> SweepJob:
    state_path, log = job_paths(output, key)
    return SweepJob(key.name, command(key, output, device, extra), str(state_path), str(log), env, cpus)


def run_local(
    output: Path,
    keys: list[JobKey],
    manifest: dict[str, Any],
    slots: list[Slot],
    device: str,
    extra: list[str],
    on_event: Any,
) -> None:
    """Run ``keys`` on this machine, at most one per slot at a time, and wait for all of them."""
    submitit = require_submitit()
    executor = submitit.LocalExecutor(folder=str(Path(output) / STATE_FOLDER / "submitit" / "%j"))
    executor.update_parameters(timeout_min=7 * 24 * 60)
    waiting = deque(keys)
    running: dict[int, tuple[JobKey, Any]] = {}
    try:
        while waiting or running:
            for index, slot in enumerate(slots):
                if index in running or not waiting:
                    continue
                key = waiting.popleft()
                handle = executor.submit(_job(output, key, device, extra, slot.env, slot.cpus))
                _record_submission(manifest, key, "local", str(handle.job_id))
                write_manifest(output, manifest)
                on_event(f"started {key.name} on {slot.label}")
                running[index] = (key, handle)
            for index, (key, handle) in list(running.items()):
                if handle.done():
                    del running[index]
                    state = read_state(job_paths(output, key)[0]).get("state", "failed")
                    on_event(f"{state} {key.name}")
            time.sleep(0.3)
    except KeyboardInterrupt:
        # Ctrl-C reached the runs too; each checkpoints at its step boundary. Wait for them to say so.
        for _, handle in running.values():
            # An interrupted job's error is its own state file's business.
            with contextlib.suppress(Exception):
                handle.wait()
        raise


def submit_slurm(
    output: Path, keys: list[JobKey], manifest: dict[str, Any], options: SlurmOptions, device: str, extra: list[str]
) -> list[str]:
    """Queue ``keys`` as one SLURM job array (``--array 0-N%parallelism``); returns the job ids."""
    submitit = require_submitit()
    executor = submitit.SlurmExecutor(folder=str(Path(output).resolve() / STATE_FOLDER / "slurm" / "%j"))
    params: dict[str, Any] = {
        "time": options.time,
        "cpus_per_task": options.cpus,
        "array_parallelism": options.array_parallelism,
        "job_name": "metabench-sweep",
        "additional_parameters": {"requeue": True, **options.extra},
        "setup": list(options.setup),
        "stderr_to_stdout": True,
    }
    for name, value in (
        ("partition", options.partition),
        ("account", options.account),
        ("qos", options.qos),
        ("constraint", options.constraint),
    ):
        if value:
            params[name] = value
    if options.gpus:
        params["gpus_per_node"] = options.gpus
    if options.mem_gb:
        params["mem"] = f"{int(options.mem_gb * 1024)}MB"
    executor.update_parameters(**params)
    threads = str(options.cpus)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if device == "auto" and not options.gpus:
        device = "cpu"
    handles = []
    with executor.batch():
        for key in keys:
            handles.append(executor.submit(_job(output, key, device, extra, env, None)))
    ids = [str(h.job_id) for h in handles]
    for key, job_id in zip(keys, ids, strict=True):
        _record_submission(manifest, key, "slurm", job_id)
    write_manifest(output, manifest)
    return ids


def _record_submission(manifest: dict[str, Any], key: JobKey, executor: str, job_id: str) -> None:
    job = manifest["jobs"][key.name]
    job.update(executor=executor, scheduler_id=job_id, submitted=time.strftime("%Y-%m-%dT%H:%M:%S"))
    job["submissions"] = int(job.get("submissions", 0)) + 1
