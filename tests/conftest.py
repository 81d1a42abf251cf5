"""Shared fixtures: the real data folder, one preprocessing cache per test session, tiny specs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Point metabench at the shared data and at a test cache that every xdist worker shares.

    Workers inherit the controller's environment, so all of them use one folder; preprocessing
    happens once (workers wait on the cache's file lock) and never touches the user's own cache.
    """
    if not os.environ.get("METABENCH_DATA") and SHARED_DATA.is_dir():
        os.environ["METABENCH_DATA"] = str(SHARED_DATA)
    os.environ.setdefault("COLUMNS", "200")  # rich sizes its consoles when the CLI module is imported
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)  # two workers on two cores: more threads each only spin against each other
    if not os.environ.get("METABENCH_CACHE"):
        os.environ["METABENCH_CACHE"] = str(Path(tempfile.gettempdir()) / f"metabench-test-cache-{os.getuid()}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with omniglot/ and mnist/ archives; tests that need it are marked ``data``."""
    folder = Path(os.environ.get("METABENCH_DATA", SHARED_DATA))
    if not (folder / "omniglot" / "images_background.zip").is_file():
        pytest.skip(f"Omniglot archives not found under {folder} (set METABENCH_DATA)")
    return folder


@pytest.fixture(scope="session")
def protonet_parts(data_dir: Path):
    from metabench.data import load_parts

    return load_parts("omniglot", "protonet", 28, progress=False)
