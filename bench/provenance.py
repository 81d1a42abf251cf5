"""Where a number came from: the command, commit, machine and software that produced it.

A run from uncommitted code records what was uncommitted: the patch against ``HEAD`` is written beside
the result (``RESULT.patch``) and its sha256 goes into the result's ``git`` table, so ``git apply`` on
the recorded commit rebuilds the code that ran. The patch holds ``git diff HEAD`` (tracked files) plus
every untracked, not-ignored file under the folders whose code a run executes (``CODE_FOLDERS``); other
untracked files (scratch notes, results) are not included, and the result names the untracked files it
did include.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


#: folders whose untracked files a run may execute or read as specs, so a dirty run's patch includes them
CODE_FOLDERS = ("bench", "reproductions", "registry")


def _git_bytes(*args: str, ok: tuple[int, ...] = (0,)) -> bytes | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode in ok else None


def working_patch() -> tuple[bytes, list[str]] | None:
    """``git diff HEAD`` plus each untracked code file as an added file, and those files' names;
    ``None`` outside a git checkout."""
    tracked = _git_bytes("diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
    listed = _git_bytes("ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_FOLDERS)
    if tracked is None or listed is None:
        return None
    untracked = sorted(name for name in listed.decode("utf-8", "surrogateescape").split("\0") if name)
    parts = [tracked]
    for name in untracked:
        # --no-index exits 1 when the files differ, which an added file always does
        added = _git_bytes("diff", "--no-index", "--binary", "--no-color", "--", os.devnull, name, ok=(0, 1))
        parts.append(added or b"")
    return b"".join(parts), untracked


def git_state() -> dict[str, Any]:
    """The project's commit, whether the working tree differs from it, and the digest of the difference
    (``diff_sha256``; the patch itself comes from :func:`code_state`)."""
    return code_state()[0]


def code_state() -> tuple[dict[str, Any], bytes]:
    """:func:`git_state` and the patch it hashes, taken together so they describe the same code."""
    commit = _git("rev-parse", "HEAD")
    found = working_patch()
    if found is None:
        return {"commit": commit or "unknown", "dirty": None}, b""
    patch, untracked = found
    state: dict[str, Any] = {"commit": commit or "unknown", "dirty": bool(patch)}
    if patch:
        state["diff_sha256"] = hashlib.sha256(patch).hexdigest()
        state["untracked_in_patch"] = untracked
    return state, patch


def keep_patch(git: dict[str, Any], patch: bytes, result: Path) -> dict[str, Any]:
    """Write a dirty run's patch beside its result (``RESULT.patch``) and name it in the ``git`` table."""
    if not patch:
        return git
    where = result.with_suffix(".patch")
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_bytes(patch)
    return {**git, "patch": where.name}


def patch_note(git: dict[str, Any], result: Path) -> str:
    """How a result's code differs from its commit, for tables: empty when it does not."""
    if git.get("dirty") is not True:
        return ""
    name = git.get("patch")
    if isinstance(name, str) and (Path(result).parent / name).is_file():
        return f"dirty: {name}"
    return "dirty (no patch recorded)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """The hardware and software a run used."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = info["cpu"] if device.type == "cpu" else device.type
    return info


def command_line() -> str:
    """The command as typed, with the program shown as ``metabench`` when run through the CLI."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("metabench", "__main__.py", "cli.py"):
        argv[0] = "metabench"
    return shlex.join(argv)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
