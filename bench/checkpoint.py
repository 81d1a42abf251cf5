"""One run's checkpoint: where it lives, who may write it, what may be read from it, and when.

A :class:`Checkpointer` owns everything about the checkpoint of one (paper, benchmark, profile, seed)
under ``OUTPUT/.checkpoints/``:

* **The lock.** ``with Checkpointer(...)`` takes an exclusive ``flock`` on ``NAME.pt.lock`` beside the
  checkpoint and records the holder's pid and host in it, so a second run of the same settings is
  refused with the holder named, and ``--fresh`` can never delete a live run's checkpoint.
* **Loading as data.** A checkpoint may come from someone else (a results folder that was sent), so it
  is read with ``torch.load(weights_only=True)``: tensors and plain types only, never code. A damaged,
  foreign, older-format or other-settings file is a one-line :class:`~metabench.errors.MetabenchError`
  that offers ``--fresh``.
* **Atomic saving.** A checkpoint is written to a ``.part`` file, flushed, and renamed over the old
  one, so a killed write leaves the previous checkpoint whole; leftover ``.part`` files are removed
  the next time the lock is taken.
* **The interrupt boundary.** Inside :meth:`Checkpointer.deferring_signals`, SIGINT and SIGTERM only set
  a flag; the training loop calls :meth:`Checkpointer.at_boundary` between steps, which saves the state
  as it is there and raises :class:`~metabench.errors.InterruptedRun` (exit 130) or
  :class:`~metabench.errors.TerminatedRun` (exit 143). Nothing is ever saved from the middle of a step,
  so a resumed run continues to exactly the numbers of an uninterrupted one. A second signal while
  one is pending stops at once (``KeyboardInterrupt``), keeping the last checkpoint that was written.

The payload is the caller's: a dictionary of tensors and plain types (ints, floats, str, lists, tuples,
dicts). :func:`rng_state` and :func:`restore_rng` put the torch, CUDA, Python and NumPy generators in
that form.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pickle
import random
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from metabench.errors import InterruptedRun, MetabenchError, TerminatedRun

# Bumped whenever what a checkpoint holds changes; older checkpoints are refused, not guessed at.
# 1 was the pickled format before checkpoints were loaded as data.
FORMAT = 2

# The environment variable a test sets to deliver a signal at an exact phase and step (see ``mark``).
SIGNAL_HOOK = "METABENCH_SIGNAL_AT"

FRESH_HINT = "pass --fresh to discard it and start over"


def fingerprint(settings: Mapping[str, Any]) -> str:
    """sha256 of the settings that must match for a checkpoint to be resumed (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def rng_state() -> dict[str, Any]:
    """Every generator a training step may draw from, as tensors and plain types."""
    version, internal, gauss = random.getstate()
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple), "legacy=True gives the (name, keys, pos, has_gauss, cached) tuple"
    name, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put back the generators :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        (numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_new(path: Path, write: Callable[[Path], None]) -> None:
    """Create ``path`` whole or not at all, and never over an existing file.

    ``write`` fills a ``.part`` file beside ``path``, which is then hard-linked to ``path`` (atomic and
    exclusive: ``FileExistsError`` when ``path`` exists). On a filesystem without hard links ``path`` is
    claimed with ``O_EXCL`` first and the finished file renamed onto the claim.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        _flush(temporary)
        try:
            os.link(temporary, path)
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def remove_orphans(folder: Path, prefix: str) -> list[Path]:
    """Remove what a killed result write left in ``folder`` for names starting with ``prefix``.

    A result is published weights first and JSON last, so a ``prefix…`` file (weights, figures, CSVs)
    whose ``STEM.json`` does not exist belongs to a run that died before finishing; ``.part`` files are
    unfinished writes. Call only while holding the lock of these settings, so no live writer is hit.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.name.startswith(f".{prefix}") and entry.name.endswith(".part"):
            orphan = True
        elif entry.name.startswith(prefix) and not entry.name.endswith(".json"):
            orphan = not (folder / f"{entry.name.split('.', 1)[0]}.json").exists()
        else:
            orphan = False
        if orphan and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _flush(path: Path) -> None:
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())


class Checkpointer:
    """The checkpoint at ``path`` of a run whose settings hash to ``fingerprint``.

    Use it as a context manager: entering takes the lock (and removes ``.part`` leftovers), leaving
    releases it. ``load``, ``save`` and ``discard`` require the lock.
    """

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.requested: int | None = None  # the signal that asked the run to stop, if any
        self._lock_fd: int | None = None
        self._deferring = False
        self._saved_step: int | None = None  # the step the file on disk was saved at, by this process
        self._hook = _parse_hook(os.environ.get(SIGNAL_HOOK, ""))

    # -- the lock ---------------------------------------------------------------------------------

    def __enter__(self) -> Checkpointer:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the exclusive lock, or refuse naming the process that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise MetabenchError(
                        f"another run of these settings is in progress ({self.holder()}); it holds {self.lock_path}",
                        "wait for it to finish, or use another --output or --seed",
                    ) from None
                # The holder before us may have removed the file on release: then this lock guards nothing.
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            os.ftruncate(fd, 0)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
            os.write(fd, json.dumps(record).encode())
        except OSError as error:
            raise MetabenchError(
                f"cannot write checkpoints under {self.path.parent}: {error.strerror or error}",
                "pick a writable --output",
            ) from None
        self._lock_fd = fd
        for leftover in self.path.parent.glob(f".{self.path.name}.*.part"):
            leftover.unlink(missing_ok=True)

    def holder(self) -> str:
        """Who holds the lock, as its file records it ("pid 123 on host h since T")."""
        try:
            record = json.loads(self.lock_path.read_text(encoding="utf-8"))
            return f"pid {record['pid']} on host {record['host']} since {record['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that has not yet recorded its pid"

    def release(self) -> None:
        """Remove the lock file and release the lock (removal first, while it is still ours)."""
        if self._lock_fd is None:
            return
        self.lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("Checkpointer used without holding its lock (use it as a context manager)")

    # -- the file ---------------------------------------------------------------------------------

    @property
    def saved_step(self) -> int | None:
        """The step of the checkpoint this process last wrote (None before its first save)."""
        return self._saved_step

    def exists(self) -> bool:
        return self.path.exists()

    def discard(self) -> None:
        """Delete the checkpoint (``--fresh``); safe because no other run can hold the lock."""
        self._require_lock()
        self.path.unlink(missing_ok=True)

    def load(self) -> dict[str, Any]:
        """The payload saved at ``path``, read as data only, after checking format and settings."""
        self._require_lock()
        try:
            with warnings.catch_warnings():  # torch warns about foreign pickle protocols; the error says it all
                warnings.simplefilter("ignore")
                saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "unsupported global" in str(error).lower():
                raise MetabenchError(
                    f"checkpoint {self.path} holds objects other than tensors and plain types; "
                    "it was not loaded and none of its code ran",
                    f"it is not a metabench checkpoint; {FRESH_HINT}",
                ) from None
            raise self.unusable("unreadable as data; none of its code ran") from None
        except (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError) as error:
            raise self.unusable(error) from None
        if not isinstance(saved, dict) or "fingerprint" not in saved:
            raise self.unusable("it is not a checkpoint dictionary")
        if saved.get("format") != FORMAT:
            raise MetabenchError(
                f"checkpoint {self.path} was written by an older metabench (format {saved.get('format', 1)}, "
                f"this version reads {FORMAT})",
                f"it cannot be resumed; {FRESH_HINT}",
            )
        if saved["fingerprint"] != self.fingerprint:
            raise MetabenchError(
                f"checkpoint {self.path} belongs to different settings",
                f"rerun with the same profile and overrides, or {FRESH_HINT}",
            )
        if not isinstance(saved.get("payload"), dict):
            raise self.unusable("it holds no payload")
        return dict(saved["payload"])

    def unusable(self, cause: object) -> MetabenchError:
        """The error for a checkpoint that cannot be read or restored (truncated, edited, foreign)."""
        detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        return MetabenchError(f"checkpoint {self.path} is damaged ({detail})", f"it cannot be resumed; {FRESH_HINT}")

    def save(self, payload: Mapping[str, Any], step: int | None = None) -> None:
        """Write ``payload`` atomically: the old checkpoint stays whole until the new one is complete."""
        self._require_lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        os.close(handle)
        temporary = Path(name)
        try:
            torch.save({"format": FORMAT, "fingerprint": self.fingerprint, "payload": dict(payload)}, temporary)
            _flush(temporary)
            self.mark("checkpoint-write", step)
            os.replace(temporary, self.path)
            self._saved_step = step
        finally:
            temporary.unlink(missing_ok=True)

    # -- the interrupt boundary -------------------------------------------------------------------

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM raise ``KeyboardInterrupt`` (remembering which) until restored on exit.

        Outside :meth:`deferring_signals` there is no step boundary to wait for (loading data,
        evaluating), so a signal stops at once. In a thread other than the main one Python allows no
        handlers; then SIGINT keeps its default and SIGTERM ends the process.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def deferring_signals(self) -> Iterator[None]:
        """Within this block a first signal only sets :attr:`requested`; ``at_boundary`` acts on it."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._deferring and self.requested is None:
            self.requested = signum
            sys.stderr.write(
                f"\n{signal.Signals(signum).name}: stopping at the end of this step and saving a checkpoint "
                "(send it again to stop at once without saving)\n"
            )
            return
        if self.requested is None:
            self.requested = signum
        raise KeyboardInterrupt

    def at_boundary(self, payload: Callable[[], Mapping[str, Any]], step: int, total: int) -> None:
        """Between two steps: if a signal asked to stop, save ``payload()`` and raise the interrupt error."""
        if self.requested is None:
            return
        if self._saved_step != step:
            self.save(payload(), step)
        raise self.interrupted(
            f"interrupted at step {step} of {total}; checkpoint saved to {self.path}",
            "continue with the same command plus --resume",
        )

    def interrupted(self, message: str, hint: str) -> InterruptedRun:
        """The error for a stop by the signal in :attr:`requested`: exit 143 for SIGTERM, 130 otherwise."""
        if self.requested == signal.SIGTERM:
            return TerminatedRun(f"terminated (SIGTERM): {message}", hint)
        return InterruptedRun(message, hint)

    def mark(self, phase: str, step: int | None) -> None:
        """A test hook: with ``METABENCH_SIGNAL_AT=SIGNAME:PHASE:STEP`` set, send that signal to this process
        when the run reaches ``phase`` at ``step`` (phases: ``step``, ``validation``, ``checkpoint-write``).
        A no-op otherwise."""
        if self._hook is not None and self._hook[1:] == (phase, step):
            signum, self._hook = self._hook[0], None  # once: a phase can recur at the same step
            os.kill(os.getpid(), signum)


def _parse_hook(value: str) -> tuple[int, str, int] | None:
    if not value:
        return None
    try:
        name, phase, step = value.split(":")
        return int(signal.Signals[name]), phase, int(step)
    except (ValueError, KeyError):
        raise MetabenchError(f"{SIGNAL_HOOK}={value!r} is not SIGNAME:PHASE:STEP", "unset it") from None
