"""Preprocessed arrays, built once per machine and loaded in milliseconds after.

Two processes that need the same array (two pytest workers, two runs) take a file lock, so one builds
while the other waits and then loads; the file appears atomically, so a crash never leaves half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from metabench.paths import cache_dir


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``PATH.lock`` while the body runs, so that concurrent processes (xdist workers, two runs)
    build ``path`` once; other processes wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; a duplicate build is harmless
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Save to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def cached_tensors(relative: str, build: Callable[[], dict[str, Any]], description: str) -> dict[str, Any]:
    """Load ``cache_dir()/relative``, building it with ``build()`` the first time."""
    path = cache_dir() / relative
    if not path.exists():
        with locked(path):
            if not path.exists():
                from rich.console import Console

                with Console(stderr=True).status(description):
                    atomic_torch_save(build(), path)
    try:
        return torch.load(path, weights_only=True)
    except Exception:
        path.unlink(missing_ok=True)
        return cached_tensors(relative, build, description)
