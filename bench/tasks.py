"""Where episodes come from, whatever the data: class banks of images, families of functions, problems.

The runner asks a split part for a seeded training sampler and for frozen test episodes, and nothing
else. Image datasets answer with :class:`~metabench.episodes.ClassBank` (episodes of classes and
examples); regression sources such as :class:`~metabench.data.sinusoid.SinusoidFamily` answer with
their own sampler and frozen tasks. A new kind of source implements the :class:`TaskSource` protocol
(``sampler``, ``freeze``, ``to``, ``check_shape``) and registers its loader in
:mod:`metabench.data`; the runner and evaluator need no change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from metabench.episodes import EpisodeBatch, EpisodeShape


class Sampler(Protocol):
    """Seeded training batches whose generator state checkpoints with the run."""

    def sample(self, count: int) -> EpisodeBatch: ...
    def state(self) -> Tensor: ...
    def restore(self, state: Tensor) -> None: ...


class Frozen(Protocol):
    """A fixed, digest-identified list of test tasks, the same on every machine and device."""

    @property
    def count(self) -> int: ...

    @property
    def digest(self) -> str: ...

    def batches(self, source: Any, batch_size: int) -> Iterator[EpisodeBatch]:
        """The tasks in order, ``batch_size`` at a time, built from ``source`` (the part they were frozen from)."""
        ...


class TaskSource(Protocol):
    """One part of a split (train, val, test): what episodes or tasks are drawn from."""

    name: str

    def to(self, device: torch.device | str) -> TaskSource: ...
    def check_shape(self, shape: EpisodeShape) -> None: ...
    def sampler(self, shape: EpisodeShape, seed: int) -> Sampler: ...
    def freeze(self, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> Frozen: ...


def task_digest(key: dict[str, object], *draws: Tensor) -> str:
    """sha256 of a frozen set's key and the random draws its tasks are built from (on the CPU, in order).

    The draws (uniforms, normals, indices), not values computed from them, are what a digest covers, so
    that a library computing a sine or a Cholesky factor differently in the last bit changes no digest.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for draw in draws:
        digest.update(draw.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
