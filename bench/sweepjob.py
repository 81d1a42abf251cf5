"""One job of a sweep: the process a scheduler runs, which runs one ``metabench run`` and records how it went.

The job is a picklable callable (submitit pickles it for SLURM and its local executor alike). It runs
``metabench run ... --resume --no-progress`` as a child process, its output appended to the job's log,
and writes a small state file (running, done, interrupted, failed) that ``sweep status`` reads: state
lives in the output folder, not in a scheduler's database, so a folder copied from another machine still
says what happened, and every executor is reported the same way.

Pre-emption: SLURM sends SIGTERM to every process of a job that it cancels or requeues (``scontrol
requeue``); the child checkpoints at a step boundary and exits 143, and the requeued job's
``--resume`` continues from there. submitit's own pre-emption signal (USR2, ``--signal=USR2@90``) reaches
this wrapper, whose :meth:`SweepJob.checkpoint` forwards SIGTERM to the child, waits for its checkpoint
and asks submitit to requeue. The child ignores USR2 (an ignored signal stays ignored across ``exec``),
so that signal never kills it between two steps.

Nothing here imports torch: the wrapper stays small beside the run it supervises.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: exit codes of ``metabench run`` that mean "stopped at a step boundary, resumable"
INTERRUPTED = (130, 143)


def write_state(path: Path, **state: Any) -> None:
    """Replace the job's state file atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    temporary.write_text(json.dumps({**state, "updated": time.time()}, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_state(path: Path) -> dict[str, Any]:
    """The job's last recorded state, or ``{}`` when it never started."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def result_from_log(log: Path) -> str | None:
    """The result path ``metabench run`` prints on the line after ``result:`` (the last one in the log)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    found = None
    for before, line in itertools.pairwise(lines):
        if before.strip() == "result:":
            found = line.strip()
    return found


def _scheduler_id() -> str:
    """The job id the scheduler knows this job by (SLURM array jobs as ``ARRAY_TASK``), if any."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", "")


@dataclass
class SweepJob:
    """Run ``command`` (a ``metabench run`` argv) with ``env`` added, pinned to ``cpus`` when given."""

    key: str
    command: list[str]
    state_path: str
    log_path: str
    env: dict[str, str] = field(default_factory=dict)
    cpus: list[int] | None = None
    _child: Any = field(default=None, repr=False, compare=False)

    def _prepare_child(self) -> None:
        """In the child, before exec: ignore submitit's USR2 (the wrapper handles it) and pin the cores."""
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        if self.cpus:
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setaffinity(0, self.cpus)

    def __call__(self) -> dict[str, Any]:
        state = Path(self.state_path)
        log = Path(self.log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        common = {"host": socket.gethostname(), "scheduler_id": _scheduler_id(), "started": started}
        write_state(state, state="running", pid=os.getpid(), **common)
        with log.open("a", encoding="utf-8") as sink:
            sink.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {common['host']} {' '.join(self.command)}\n")
            sink.flush()
            self._child = subprocess.Popen(
                self.command,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200", **self.env},  # log lines unwrapped, for status
                preexec_fn=self._prepare_child,
            )
            try:
                code = self._child.wait()
            except KeyboardInterrupt:
                # The child got the same Ctrl-C and is checkpointing; its exit code says how it ended.
                code = self._child.wait()
        outcome = "done" if code == 0 else "interrupted" if code in INTERRUPTED else "failed"
        record = {"state": outcome, "returncode": code, "finished": time.time(), **common}
        if outcome == "done":
            record["result"] = result_from_log(log)
        write_state(state, **record)
        return record

    def checkpoint(self) -> Any:
        """submitit's pre-emption hook: let the run checkpoint at its next step boundary, then requeue."""
        import submitit

        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=80)  # submitit signals 90 s before the kill
        write_state(Path(self.state_path), state="interrupted", returncode=143, finished=time.time())
        return submitit.helpers.DelayedSubmission(
            SweepJob(self.key, self.command, self.state_path, self.log_path, self.env, self.cpus)
        )
