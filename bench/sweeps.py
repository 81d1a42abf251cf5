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
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metabench import results
from metabench.errors import MetabenchError, UnknownNameError, did_you_mean
from metabench.sweepjob import SweepJob, read_state

STATE_FOLDER = ".sweep"
#: the manifest, hidden with the jobs' states and logs: a results folder holds only results as ``*.json``
MANIFEST = f"{STATE_FOLDER}/manifest.json"
SCHEMA = 1
INSTALL_HINT = 'install it with: pip install "metabench[cluster]" (or pip install submitit)'
PROFILES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class JobKey:
    """One run of a sweep: what ``metabench run`` is told."""

    paper: str
    benchmark: str
    profile: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.paper}__{self.benchmark}__{self.profile}__seed{self.seed}"


@dataclass
class SlurmOptions:
    """Per-job resources on SLURM; any left ``None`` is the cluster's default."""

    partition: str | None = None
    time: int = 240  # minutes; a SLURM job without one gets the partition's limit or submitit's 5 minutes
    gpus: int = 0
    cpus: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ...)
    extra: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {"exclude": "n3"}


def slurm_options(config: Path | None, **flags: Any) -> SlurmOptions:
    """Options from the TOML file's ``[slurm]`` table (or its top level), then the flags given (not ``None``)."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise MetabenchError(f"{config}: {error}", "a TOML file with a [slurm] table") from None
        values = dict(data.get("slurm", data))
    known = set(SlurmOptions.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise UnknownNameError(
            f"{config}: unknown SLURM option {unknown[0]!r}", did_you_mean(unknown[0], sorted(known))
        )
    values.update({k: v for k, v in flags.items() if v is not None})
    return SlurmOptions(**values)


def parse_seeds(text: str) -> list[int]:
    """``0-4``, ``0,2,7`` or ``3`` (ranges inclusive, as people write them)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise MetabenchError(f"--seeds {text!r}: {part!r} is not a seed or a range", "e.g. --seeds 0-4 or 0,2,7")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        seeds.extend(s for s in range(low, high + 1) if s not in seeds)
    return seeds


def select(papers: list[str], benchmarks: list[str], everything: bool = False) -> list[tuple[str, str]]:
    """(paper, benchmark) pairs chosen by paper keys and benchmark ids, each a name or a glob.

    A benchmark pattern matches an id (``sinusoid-*``) or ``paper/id``; papers alone select all their
    benchmarks; ``everything`` is the whole registry. A plain name that matches nothing is an error
    with the closest names, so a typo never silently shrinks a sweep.
    """
    from metabench.registry_loader import all_specs

    specs = all_specs()
    if everything:
        return [(key, b.id) for key, spec in specs.items() for b in spec.benchmarks]
    if not papers and not benchmarks:
        raise MetabenchError("nothing selected", "name papers (--paper), benchmarks (--benchmark) or use --all")
    keys = list(specs)
    chosen_papers: list[str] = []
    for pattern in papers:
        matched = fnmatch.filter(keys, pattern)
        if not matched:
            raise UnknownNameError(f"no paper matches {pattern!r}", did_you_mean(pattern, keys))
        chosen_papers.extend(k for k in matched if k not in chosen_papers)
    pool = [(key, b.id) for key in (chosen_papers or keys) for b in specs[key].benchmarks]
    if not benchmarks:
        return pool
    picked: list[tuple[str, str]] = []
    for pattern in benchmarks:
        matched = [p for p in pool if fnmatch.fnmatch(p[1], pattern) or fnmatch.fnmatch(f"{p[0]}/{p[1]}", pattern)]
        if not matched:
            raise UnknownNameError(
                f"no benchmark matches {pattern!r}" + (f" in {', '.join(chosen_papers)}" if chosen_papers else ""),
                did_you_mean(pattern, sorted({b for _, b in pool})),
            )
        picked.extend(p for p in matched if p not in picked)
    return picked


def plan(pairs: list[tuple[str, str]], profiles: list[str], seeds: list[int]) -> list[JobKey]:
    for profile in profiles:
        if profile not in PROFILES:
            raise UnknownNameError(f"unknown profile {profile!r}", did_you_mean(profile, list(PROFILES)))
    return [JobKey(p, b, profile, s) for p, b in pairs for profile in profiles for s in seeds]


# --- the manifest -------------------------------------------------------------------------------------


def manifest_path(output: Path) -> Path:
    return Path(output) / MANIFEST


def read_manifest(output: Path) -> dict[str, Any]:
    path = manifest_path(output)
    if not path.is_file():
        raise MetabenchError(f"{output} holds no sweep ({MANIFEST} is missing)", "start one with metabench sweep")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise MetabenchError(f"{path}: not valid JSON ({error})") from None
    if data.get("schema") != SCHEMA or not isinstance(data.get("jobs"), dict):
        raise MetabenchError(f"{path}: not a metabench sweep manifest of schema {SCHEMA}")
    return data


def write_manifest(output: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = manifest_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    temporary.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _paths(output: Path, key: JobKey) -> tuple[Path, Path]:
    """The job's state file and log, inside the output folder so that they travel with it."""
    root = Path(output) / STATE_FOLDER
    return root / "state" / f"{key.name}.json", root / "logs" / f"{key.name}.log"


def command(key: JobKey, output: Path, device: str, extra: list[str]) -> list[str]:
    """The job's ``metabench run``; always ``--resume`` (from step 0 when there is no checkpoint), and
    ``--only-this-benchmark``: a job is one result, and the sweep runs a benchmark that shares another's
    training as a job of its own (sharing across jobs would write the same result twice)."""
    return [
        sys.executable,
        "-m",
        "metabench",
        "run",
        key.paper,
        "--benchmark",
        key.benchmark,
        "--profile",
        key.profile,
        "--seed",
        str(key.seed),
        "--device",
        device,
        "--output",
        str(Path(output).resolve()),
        "--resume",
        "--no-progress",
        "--only-this-benchmark",
        *extra,
    ]


# --- state of each job ----------------------------------------------------------------------------------

_STEP = re.compile(r"step (\d+)/(\d+)\s.*?(\d+)s\s*$")


def _done_results(output: Path) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """Finished runs in the folder (merged ones too) by (paper, benchmark, profile, seed); experiments
    (``--set``) are not the job a sweep asked for."""
    found: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for path in results.find([Path(output)]):
        try:
            data = results.read(path)
        except MetabenchError:
            continue
        if (data.get("overrides") or {}).get("set"):
            continue
        verdict = data["verdict"]["verdict"]
        summary = data["summary"]
        found[(data["paper"], data["benchmark"], data["profile"], int(data["seed"]))] = {
            "result": str(path),
            "verdict": verdict,
            "mean": summary["mean"],
            "ci95": summary["ci95"],
        }
    return found


def _slurm_queue() -> dict[str, str] | None:
    """SLURM job id (array elements as ``ID_TASK``) to state, or ``None`` where squeue cannot be asked."""
    if shutil.which("squeue") is None:
        return None
    try:
        listing = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.split("|", 1) for line in listing.splitlines() if "|" in line)


def _alive(state: dict[str, Any], queue: dict[str, str] | None) -> bool | None:
    """Whether a job recorded as running still runs; ``None`` when this machine cannot tell."""
    scheduler_id = state.get("scheduler_id")
    if scheduler_id and queue is not None:
        return scheduler_id in queue
    if state.get("host") == socket.gethostname() and state.get("pid"):
        try:
            os.kill(int(state["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return None


def last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def progress(log: Path) -> dict[str, Any]:
    """The last step the run logged, its total and a linear ETA (from the runner's validation lines)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    # Only the latest attempt counts: a requeued job's log holds its earlier attempts too.
    text = text.rsplit("\n== ", 1)[-1]
    for line in reversed(text.splitlines()):
        match = _STEP.search(line)
        if match:
            step, total, seconds = (int(g) for g in match.groups())
            eta = seconds / step * (total - step) if step else None
            return {"step": step, "total": total, "eta_seconds": eta}
    return {}


def status(output: Path) -> list[dict[str, Any]]:
    """Every job of the sweep in ``output`` with its state: pending (never submitted), queued, running
    (step, ETA), interrupted, done (verdict, result) or failed (the last line of its log)."""
    manifest = read_manifest(output)
    done = _done_results(output)
    queue = _slurm_queue() if any(j.get("executor") == "slurm" for j in manifest["jobs"].values()) else None
    rows = []
    for name, job in manifest["jobs"].items():
        key = JobKey(job["paper"], job["benchmark"], job["profile"], int(job["seed"]))
        state_path, log = _paths(output, key)
        row: dict[str, Any] = {"job": name, **asdict(key), "scheduler_id": job.get("scheduler_id", "")}
        row["submissions"] = job.get("submissions", 0)
        recorded = read_state(state_path)
        if key.paper and (key.paper, key.benchmark, key.profile, key.seed) in done:
            row.update(state="done", **done[(key.paper, key.benchmark, key.profile, key.seed)])
        elif recorded.get("state") == "running":
            alive = _alive(recorded, queue)
            pending = queue is not None and queue.get(str(recorded.get("scheduler_id")), "RUNNING") != "RUNNING"
            row["state"] = "interrupted" if alive is False else "queued" if pending else "running"
            row.update(progress(log))
            if alive is False:
                row["detail"] = "the job stopped without recording an end; rerun the sweep to resume it"
        elif row["scheduler_id"] and queue is not None and row["scheduler_id"] in queue:
            # Requeued after a pre-emption, or not yet started.
            row["state"] = "queued" if queue[row["scheduler_id"]] != "RUNNING" else "running"
            row.update(progress(log))
        elif recorded.get("state") in ("interrupted", "failed"):
            row["state"] = recorded["state"]
            row["returncode"] = recorded.get("returncode")
            row["detail"] = last_line(log)
        elif recorded.get("state") == "done":
            row.update(state="failed", detail="finished, but its result file is not in the folder")
        elif job.get("submissions"):
            queued = job.get("executor") == "local" or queue is None
            row["state"] = "queued" if queued else "failed"
            if not queued:
                row["detail"] = f"SLURM job {row['scheduler_id']} is gone and never started; see {STATE_FOLDER}/slurm"
        else:
            row["state"] = "pending"
        rows.append(row)
    return rows


# --- executors --------------------------------------------------------------------------------------------


def _submitit() -> Any:
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
    state_path, log = _paths(output, key)
    return SweepJob(key.name, command(key, output, device, extra), str(state_path), str(log), env, cpus)


def _run_local(
    output: Path,
    keys: list[JobKey],
    manifest: dict[str, Any],
    slots: list[Slot],
    device: str,
    extra: list[str],
    on_event: Any,
) -> None:
    """Run ``keys`` on this machine, at most one per slot at a time, and wait for all of them."""
    submitit = _submitit()
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
                    state = read_state(_paths(output, key)[0]).get("state", "failed")
                    on_event(f"{state} {key.name}")
            time.sleep(0.3)
    except KeyboardInterrupt:
        # Ctrl-C reached the runs too; each checkpoints at its step boundary. Wait for them to say so.
        for _, handle in running.values():
            # An interrupted job's error is its own state file's business.
            with contextlib.suppress(Exception):
                handle.wait()
        raise


def _submit_slurm(
    output: Path, keys: list[JobKey], manifest: dict[str, Any], options: SlurmOptions, device: str, extra: list[str]
) -> list[str]:
    """Queue ``keys`` as one SLURM job array (``--array 0-N%parallelism``); returns the job ids."""
    submitit = _submitit()
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


# --- the sweep ----------------------------------------------------------------------------------------------


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
        _submitit()  # before anything is written: without submitit, say how to install it
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
        _run_local(output, todo, manifest, slots, request.device, request.extra, say)
    elif todo:
        ids = _submit_slurm(output, todo, manifest, request.slurm, request.device, request.extra)
        say(f"submitted {len(ids)} SLURM jobs ({ids[0].split('_')[0]}, array of {len(ids)})")
        if request.wait:
            wait(output, [k.name for k in keys], request.poll_seconds)
    return read_manifest(output)


def wait(
    output: Path, names: list[str] | None = None, poll_seconds: float = 5.0, timeout: float | None = None
) -> list[dict[str, Any]]:
    """Poll :func:`status` until no job (of ``names``) is queued or running; returns the last status."""
    started = time.monotonic()
    while True:
        rows = [r for r in status(output) if names is None or r["job"] in names]
        if not any(r["state"] in ("queued", "running") for r in rows):
            return rows
        if timeout is not None and time.monotonic() - started > timeout:
            raise MetabenchError(f"the sweep in {output} did not finish within {timeout:.0f} s")
        time.sleep(poll_seconds)
