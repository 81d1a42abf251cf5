"""Data sources: each dataset's archives, preprocessing and named splits, as class banks.

``load_parts`` is the one entry the runner uses: it returns every part of a named split (``train``,
``val``, ``test``...) as a :class:`~metabench.episodes.ClassBank` on the CPU; the runner moves the parts
it needs to the device once. ``channels`` says how many colour channels a dataset's images have.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from metabench.episodes import ClassBank

if TYPE_CHECKING:
    from metabench.tasks import TaskSource
from metabench.errors import MetabenchError, UnknownNameError, did_you_mean

DATASETS = ("omniglot", "miniimagenet", "sinusoid")
_CHANNELS = {"omniglot": 1, "miniimagenet": 3, "sinusoid": 1}


def _unknown(dataset: str) -> UnknownNameError:
    return UnknownNameError(f"unknown dataset {dataset!r}", did_you_mean(dataset, list(DATASETS)))


def split_names(dataset: str) -> list[str]:
    if dataset == "omniglot":
        from metabench.data.omniglot import SPLITS

        return list(SPLITS)
    if dataset == "miniimagenet":
        from metabench.data.miniimagenet import SPLITS as MINI_SPLITS

        return list(MINI_SPLITS)
    if dataset == "sinusoid":
        from metabench.data.sinusoid import SPLITS as SINE_SPLITS

        return list(SINE_SPLITS)
    raise _unknown(dataset)


def channels(dataset: str) -> int:
    """Colour channels of the dataset's images: 1 for Omniglot (grayscale), 3 for miniImageNet (RGB).

    A regression source counts its input features as channels (sinusoid: 1, with ``image_size`` 1).
    """
    if dataset not in _CHANNELS:
        raise _unknown(dataset)
    return _CHANNELS[dataset]


def load_parts(
    dataset: str,
    split: str,
    image_size: int,
    data_dir: Path | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> dict[str, TaskSource]:
    """Every part of ``split`` of ``dataset`` at ``image_size``, as CPU class banks (or task families).

    ``download`` applies to datasets that can be downloaded; miniImageNet is always read from the
    user's folder (``data_dir``, ``$METABENCH_DATA`` or the cache; see :mod:`metabench.data.miniimagenet`).
    """
    names = split_names(dataset)
    if split not in names:
        raise UnknownNameError(f"{dataset} has no split {split!r}", did_you_mean(split, names))
    if dataset == "omniglot":
        from metabench.data import omniglot

        data = omniglot.load_images(image_size, data_dir, download=download, progress=progress)
        parts = omniglot.SPLITS[split](data)
        return {name: ClassBank(omniglot.class_images(data, classes), name) for name, classes in parts.items()}
    if dataset == "miniimagenet":
        from metabench.data import miniimagenet

        mini = miniimagenet.load_images(split, image_size, data_dir, progress=progress)
        return {name: ClassBank(part.images, name) for name, part in mini.items()}
    if dataset == "sinusoid":
        from metabench.data import sinusoid

        return dict(sinusoid.load_parts(split))
    raise MetabenchError(f"dataset {dataset!r} has no loader")  # pragma: no cover - guarded above
