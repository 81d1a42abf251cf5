"""Data sources: each dataset's archives, preprocessing and named splits, as task sources.

``load_parts`` is the one entry the runner uses: it returns every part of a named split (``train``,
``val``, ``test``...) as a task source on the CPU (a :class:`~metabench.episodes.ClassBank` for image
datasets, a family of functions or problems otherwise); the runner moves the parts it needs to the
device once. A new dataset is one :class:`Dataset` entry in ``DATASETS``: its splits, its channel
count and its loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from metabench.episodes import ClassBank, EpisodeShape, GroupedClassBank
from metabench.errors import MetabenchError, UnknownNameError, did_you_mean

if TYPE_CHECKING:
    from metabench.tasks import TaskSource


@dataclass(frozen=True)
class LoadRequest:
    """What a loader is asked for: a split at an image size, from a folder, downloading or not."""

    split: str
    image_size: int
    data_dir: Path | None
    download: bool
    progress: bool


@dataclass(frozen=True)
class Dataset:
    """A dataset the registry can name: its split names, input channels and loader.

    ``channels`` counts colour channels of images, or input features of a regression source (the
    sinusoid has 1, with ``image_size`` 1). ``splits`` is called lazily so that listing datasets does not
    import every loader. ``examples_per_task`` is what one training task of a shape holds, the unit in
    which a run's training budget is counted (:mod:`metabench.budget`).
    """

    channels: int
    splits: Callable[[], list[str]]
    load: Callable[[LoadRequest], dict[str, TaskSource]]
    examples_per_task: Callable[[EpisodeShape], int] = lambda shape: shape.ways * shape.per_class
    #: the split is not one of a list but names where the data is (a user's image folder: its path)
    open_splits: bool = False


def _one_problem(shape: EpisodeShape) -> int:
    """An optimisation problem is one example: its optimiser steps are counted by the runner's steps."""
    return 1


def _minibatch(shape: EpisodeShape) -> int:
    """A supervised task is a minibatch of ``queries`` examples of all classes."""
    return shape.queries


def _omniglot_splits() -> list[str]:
    from metabench.data.omniglot import SPLITS

    return list(SPLITS)


def _load_omniglot(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import omniglot

    data = omniglot.load_images(
        request.image_size, request.data_dir, download=request.download, progress=request.progress
    )
    parts = omniglot.SPLITS[request.split](data)
    if request.split in omniglot.GROUPED_SPLITS:
        return {
            name: GroupedClassBank(omniglot.class_images(data, classes), omniglot.alphabet_groups(data, classes), name)
            for name, classes in parts.items()
        }
    return {name: ClassBank(omniglot.class_images(data, classes), name) for name, classes in parts.items()}


def _mini_splits() -> list[str]:
    from metabench.data.miniimagenet import SPLITS

    return list(SPLITS)


def _load_mini(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import miniimagenet

    mini = miniimagenet.load_images(request.split, request.image_size, request.data_dir, progress=request.progress)
    return {name: ClassBank(part.images, name) for name, part in mini.items()}


def _no_named_splits() -> list[str]:
    return []


def _load_user_grey(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import imagefolder

    return dict(imagefolder.load_parts(request.split, request.image_size, "L"))


def _load_user_rgb(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import imagefolder

    return dict(imagefolder.load_parts(request.split, request.image_size, "RGB"))


def _sinusoid_splits() -> list[str]:
    from metabench.data.sinusoid import SPLITS

    return list(SPLITS)


def _load_sinusoid(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import sinusoid

    return dict(sinusoid.load_parts(request.split))


def _quadratic_splits() -> list[str]:
    from metabench.data.problems import QUADRATIC_SPLITS

    return list(QUADRATIC_SPLITS)


def _load_quadratic(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import problems

    return dict(problems.quadratic_parts(request.split))


def _mlp_splits() -> list[str]:
    from metabench.data.problems import MLP_ARCHITECTURES

    return list(MLP_ARCHITECTURES)


def _load_mnist_mlp(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import problems

    return dict(problems.mnist_parts(request.split, request.data_dir, request.download, request.progress))


def _gp_splits() -> list[str]:
    from metabench.data.gp import SPLITS

    return list(SPLITS)


def _load_gp(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import gp

    return dict(gp.load_parts(request.split))


def _completion_splits() -> list[str]:
    from metabench.data.completion import SPLITS

    return list(SPLITS)


def _load_mnist_completion(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import completion, mnist

    if request.image_size != mnist.IMAGE_SIZE:
        raise MetabenchError(
            f"mnist-completion has 28x28 images, not {request.image_size}x{request.image_size}", "set image_size = 28"
        )
    data = mnist.load(request.data_dir, download=request.download, progress=request.progress)
    return dict(completion.load_parts(request.split, data.train.images, data.test.images))


def _mnist_splits() -> list[str]:
    from metabench.data.mnist import SPLITS

    return list(SPLITS)


def _load_mnist(request: LoadRequest) -> dict[str, TaskSource]:
    from metabench.data import mnist

    if request.image_size != mnist.IMAGE_SIZE:
        raise MetabenchError(
            f"MNIST is {mnist.IMAGE_SIZE}x{mnist.IMAGE_SIZE}; image_size {request.image_size} is not offered",
            f"set image_size = {mnist.IMAGE_SIZE} in the spec",
        )
    parts = mnist.load_parts(request.split, request.data_dir, download=request.download, progress=request.progress)
    return dict(parts)


DATASETS: dict[str, Dataset] = {
    "omniglot": Dataset(1, _omniglot_splits, _load_omniglot),
    "miniimagenet": Dataset(3, _mini_splits, _load_mini),
    "sinusoid": Dataset(1, _sinusoid_splits, _load_sinusoid),
    # MNIST as a labelled set (HyperNetworks): minibatches to train on, one-example test tasks
    "mnist": Dataset(1, _mnist_splits, _load_mnist, _minibatch),
    # optimisation problems (Andrychowicz et al.): channels are one problem's input size (10 dims, 784 pixels)
    "quadratic": Dataset(10, _quadratic_splits, _load_quadratic, _one_problem),
    "mnist-mlp": Dataset(784, _mlp_splits, _load_mnist_mlp, _one_problem),
    # CNP's 1-D regression: functions drawn from a GP (one input)
    "gp": Dataset(1, _gp_splits, _load_gp),
    # CNP's image completion: MNIST pixels as regression tasks (two inputs: row and column)
    "mnist-completion": Dataset(2, _completion_splits, _load_mnist_completion),
    # the user's own images (`run PAPER --images FOLDER`), grey or RGB as the method expects; the split
    # is the folder's path (see metabench.data.imagefolder)
    "imagefolder": Dataset(1, _no_named_splits, _load_user_grey, open_splits=True),
    "imagefolder-rgb": Dataset(3, _no_named_splits, _load_user_rgb, open_splits=True),
}


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise UnknownNameError(f"unknown dataset {name!r}", did_you_mean(name, list(DATASETS)))
    return DATASETS[name]


def split_names(dataset: str) -> list[str]:
    return _dataset(dataset).splits()


def examples_per_task(dataset: str, shape: EpisodeShape) -> int:
    """Examples one training task of ``shape`` holds (images, points, or problems), for budgets."""
    return _dataset(dataset).examples_per_task(shape)


def channels(dataset: str) -> int:
    """Colour channels of the dataset's images (Omniglot 1, miniImageNet 3), or a regression source's inputs."""
    return _dataset(dataset).channels


def load_parts(
    dataset: str,
    split: str,
    image_size: int,
    data_dir: Path | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> dict[str, TaskSource]:
    """Every part of ``split`` of ``dataset`` at ``image_size``, as CPU task sources.

    ``download`` applies to datasets that can be downloaded; miniImageNet is always read from the
    user's folder (``data_dir``, ``$METABENCH_DATA`` or the cache; see :mod:`metabench.data.miniimagenet`).
    """
    source = _dataset(dataset)
    names = source.splits()
    if split not in names and not source.open_splits:
        raise UnknownNameError(f"{dataset} has no split {split!r}", did_you_mean(split, names))
    return source.load(LoadRequest(split, image_size, data_dir, download, progress))
