"""Command-line values checked before anything loads or trains.

A wrong value found after the data loaded, or at the first checkpoint 100 steps in, costs minutes; a
value silently read as "unset" (``--ways 0``) runs something the user did not ask for. Every check here
raises :class:`~metabench.errors.MetabenchError` naming the option and the value.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from metabench.errors import MetabenchError

#: torch.manual_seed takes any integer that fits in 64 bits; a negative one is folded onto the same
#: range, so two different seeds would give one run: seeds are 0 to 2**64 - 1.
SEED_MAX = 2**64 - 1


def seed(value: int) -> int:
    if not 0 <= value <= SEED_MAX:
        raise MetabenchError(f"--seed {value} is out of range", f"use a whole number from 0 to {SEED_MAX}")
    return value


def positive(option: str, value: int | None, hint: str | None = None) -> int | None:
    """``value`` when unset or at least 1."""
    if value is not None and value < 1:
        raise MetabenchError(
            f"{option} {value} must be at least 1", hint or f"leave {option} out to use the profile's own"
        )
    return value


def at_least(option: str, value: int | None, least: int) -> int | None:
    if value is not None and value < least:
        raise MetabenchError(f"{option} {value} must be at least {least}")
    return value


def existing_folder(option: str, value: Path | None) -> Path | None:
    """An explicit folder must exist: a typo must not fall back to ``$METABENCH_DATA`` unnoticed."""
    if value is not None and not Path(value).expanduser().is_dir():
        what = "is not a folder" if Path(value).expanduser().exists() else "does not exist"
        raise MetabenchError(f"{option} {value} {what}", "pass the folder that holds DATASET/FILE archives")
    return value


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (trying beats ``os.access``, which root always passes)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".metabench-write-test-"):
            return True
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def writable_folder(option: str, value: Path) -> Path:
    """A folder results (and checkpoints) can be written to, or one that can be created."""
    path = Path(value).expanduser()
    found = _nearest_existing(path.absolute())
    if not found.is_dir():
        raise MetabenchError(f"{option} {value}: {found} is a file, not a folder", f"choose another {option}")
    if not _writable(found):
        raise MetabenchError(
            f"{option} {value}: cannot write in {found}", f"choose another {option}, or fix its permissions"
        )
    return value


def writable_file(option: str, value: Path | None) -> Path | None:
    """A file that can be created or replaced: its folder is writable and it is not a folder itself."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise MetabenchError(f"{option} {value} is a folder", "give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise MetabenchError(f"{option} {value}: the file is read-only", f"choose another {option}")
    writable_folder(option, path.parent)
    return value
