"""The state of each job of a sweep, read from its folder, never remembered.

A result file means done (whichever machine wrote it, so merged folders count), the job's state file
says running, interrupted or failed, and the scheduler's queue says queued. Kept apart from the
executors so that ``metabench sweep status`` needs neither submitit nor torch.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from metabench import results
from metabench.errors import MetabenchError
from metabench.sweep_plan import STATE_FOLDER, JobKey, job_paths, read_manifest
from metabench.sweepjob import read_state

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
        state_path, log = job_paths(output, key)
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
