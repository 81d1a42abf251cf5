"""Where metabench looks for datasets and keeps its cache.

Archives are searched, in order, in ``--data-dir``, ``$METABENCH_DATA`` and the user cache
(``$METABENCH_CACHE``, else ``$XDG_CACHE_HOME/metabench``, else ``~/.cache/metabench``). Each folder
holds one sub-folder per dataset (``omniglot/images_background.zip``), the layout of ``../shared/data``.
Downloads and preprocessed arrays always go to the cache, so a read-only data folder is fine.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The writable cache folder (created on first use)."""
    explicit = os.environ.get("METABENCH_CACHE")
    if explicit:
        root = Path(explicit)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "metabench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_dirs(data_dir: Path | None = None) -> list[Path]:
    """Folders to search for a dataset's archives, most specific first."""
    folders: list[Path] = []
    if data_dir is not None:
        folders.append(Path(data_dir).expanduser())
    env = os.environ.get("METABENCH_DATA")
    if env:
        folders.append(Path(env).expanduser())
    folders.append(cache_dir())
    return folders
