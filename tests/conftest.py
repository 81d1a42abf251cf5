"""Shared fixtures: the real data folder, one preprocessing cache per test session, synthetic data folders."""

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


#: the archive each real dataset is read from; a dataset not named here is generated (sinusoid, GP,
#: quadratics) or, like miniImageNet, only ever tested on a synthetic folder
ARCHIVE_FILES = {
    "omniglot": "omniglot/images_background.zip",
    "mnist": "mnist/train-images-idx3-ubyte.gz",
    "mnist-mlp": "mnist/train-images-idx3-ubyte.gz",
    "mnist-completion": "mnist/train-images-idx3-ubyte.gz",
}


def data_folder() -> Path:
    return Path(os.environ.get("METABENCH_DATA", SHARED_DATA))


def needs_archive(dataset: str) -> bool:
    return dataset in ARCHIVE_FILES


def archive_folder(dataset: str) -> Path | None:
    """The data folder for ``dataset``'s own archive, skipping (saying which) when that archive is missing;
    ``None`` for a dataset that needs none. One dataset's absence never skips another's cases."""
    if not needs_archive(dataset):
        return None
    folder = data_folder()
    if not (folder / ARCHIVE_FILES[dataset]).is_file():
        pytest.skip(f"{ARCHIVE_FILES[dataset]} not found under {folder} (set METABENCH_DATA)")
    return folder


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


# --------------------------------------------------------------------------- synthetic miniImageNet

MINI_SPLITS = {
    "miniimagenet": {"train": 8, "val": 5, "test": 5},
    "miniimagenet-vinyals": {"train": 6, "test": 5},
}
MINI_EXAMPLES = 24  # enough for 5-shot episodes with 15 queries per class, as the papers test
MINI_WIDTH, MINI_HEIGHT = 40, 30  # not 84x84, so that loading exercises the resize


def mini_label(k: int) -> str:
    return f"n{9000000 + k:08d}"


def mini_image(k: int, example: int) -> bytes:
    """PNG bytes of example ``example`` of synthetic class ``k``: the class's colour under random stripes.

    What identifies a class is its mean colour (its own hue); every image also gets a random colour
    shift, strong stripes of random angle, period, phase and tint, and pixel noise. An untrained
    network is distracted by the stripes (about 65% on 5-way 1-shot) and a few meta-training steps
    teach it to look at the colour (about 85% after 20 ProtoNet steps of 4 episodes), so the contract's "learning
    happened" check has room to pass.
    """
    import colorsys
    import io

    import torch
    from PIL import Image

    generator = torch.Generator().manual_seed(1000 * k + example)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    colour = torch.tensor(colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.5, 0.6)) * 255
    y = torch.arange(MINI_HEIGHT, dtype=torch.float32).view(-1, 1)
    x = torch.arange(MINI_WIDTH, dtype=torch.float32).view(1, -1)
    angle, period = float(uniform(1)) * torch.pi, 3.0 + 6.0 * float(uniform(1))
    across = x * torch.cos(torch.tensor(angle)) + y * torch.sin(torch.tensor(angle)) + float(uniform(1)) * period
    stripes = torch.sin(across * (2 * torch.pi / period)).unsqueeze(-1) * (2 * uniform(3) - 1)
    pixels = colour + 60.0 * (uniform(3) - 0.5) + 90.0 * stripes
    pixels = pixels + 20.0 * torch.randn(MINI_HEIGHT, MINI_WIDTH, 3, generator=generator)
    array = pixels.clamp(0, 255).round().to(torch.uint8).contiguous()
    buffer = io.BytesIO()
    Image.frombytes("RGB", (MINI_WIDTH, MINI_HEIGHT), array.numpy().tobytes()).save(buffer, format="PNG")
    return buffer.getvalue()


def write_mini_folder(folder: Path, parts: dict[str, int], examples: int = MINI_EXAMPLES, first: int = 0) -> None:
    """A miniImageNet folder in the Ravi layout: ``images/`` and one ``<part>.csv`` per part.

    Classes get consecutive ids from ``first`` across the parts; rows interleave the classes, listed in
    descending id order, so that the loader's sorting by class id and keeping of csv order are tested.
    """
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    k = first
    for part, count in parts.items():
        classes = list(range(k, k + count))
        k += count
        lines = ["filename,label"]
        for example in range(examples):
            for c in reversed(classes):
                name = f"{mini_label(c)}{example:08d}.png"
                (images / name).write_bytes(mini_image(c, example))
                lines.append(f"{name},{mini_label(c)}")
        (folder / f"{part}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with synthetic, learnable ``miniimagenet/`` (Ravi layout: train 8, val 5, test 5
    classes of 24 images, 40x30 PNGs) and ``miniimagenet-vinyals/`` (train and test csv files only).

    Pass it as ``data_dir`` (``--data-dir``) to load either split. The pixels are a pure function of the
    class and example, so the csv digest that keys metabench's cache always means the same pixels;
    whoever changes :func:`mini_image` must change the file names too (or the test cache keeps the
    old pixels).
    """
    root = tmp_path_factory.mktemp("mini-data")
    first = 0
    for dirname, parts in MINI_SPLITS.items():
        write_mini_folder(root / dirname, parts, first=first)
        first += sum(parts.values())
    return root


# --------------------------------------------------------------------------- synthetic Omniglot and MNIST


@pytest.fixture(scope="session")
def synthetic_archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding synthetic ``omniglot/`` and ``mnist/`` archives in the real formats (see
    ``tests/synthetic_data.py``), written once per test session: pytest-xdist's workers share one folder,
    which the first to ask writes while the others wait. Tests use it through ``synthetic_root``."""
    from tests import synthetic_data

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above every worker's own
    folder = base / "synthetic-archives"
    from metabench.data.cache import locked  # not at import: the CLI's consoles must see COLUMNS first

    with locked(base / "synthetic-archives"):
        if not (folder / synthetic_data.DIGESTS).is_file():
            synthetic_data.write_archives(folder)
    return folder


@pytest.fixture
def synthetic_root(synthetic_archives: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The synthetic archives' folder, to pass as ``data_dir``, with metabench's catalogue holding their
    digests for the test's duration (so they verify; the swap is undone after the test). The cache keys
    decoded arrays by those digests, so synthetic arrays are never mistaken for the real ones."""
    from metabench.data import archives
    from tests import synthetic_data

    for dataset, entries in synthetic_data.catalogue(synthetic_archives).items():
        monkeypatch.setitem(archives.CATALOGUE, dataset, entries)
    return synthetic_archives
