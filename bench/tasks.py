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
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch
from torch import Tensor

if TYPE_CHECKING:  # episodes.py builds on the frozen base below, so its names are for annotations only
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


def task_digest(key: dict[str, object], *parts: Tensor | str) -> str:
    """sha256 of a frozen set's key and the random draws its tasks are built from (on the CPU, in order).

    The draws (uniforms, normals, indices), not values computed from them, are what a digest covers, so
    that a library computing a sine or a Cholesky factor differently in the last bit changes no digest.
    A ``str`` part is hashed as its UTF-8 bytes: the content digest of the data the draws index (a class
    bank's pixels), or the name of the draw that follows. Every task source's frozen digest is this one
    function; ``tests/test_golden_digests.py`` pins what it gives for every benchmark.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for part in parts:
        if isinstance(part, str):
            digest.update(part.encode())
        else:
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def frozen_generator(seed: int) -> torch.Generator:
    """The generator frozen tasks are drawn with: on the CPU whatever the run's device, because CUDA and
    CPU generators give different streams for one seed, and frozen tasks must be the same everywhere."""
    return torch.Generator(device="cpu").manual_seed(seed)


SourceT = TypeVar("SourceT", contravariant=True)


class FrozenTasks(Generic[SourceT]):
    """The base of every task source's frozen set: a key, a digest, a count and how to build tasks
    ``start:stop`` from the source; :meth:`batches` walks them ``batch_size`` at a time.

    Subclasses are frozen dataclasses holding their draws (and ``key`` and ``digest``); a source whose
    batches cannot be cut at any boundary (the GP's, one context size per batch) overrides ``batches``.
    """

    key: dict[str, object]
    digest: str

    @property
    def count(self) -> int:
        raise NotImplementedError

    def tasks(self, source: SourceT, start: int, stop: int) -> EpisodeBatch:
        """Tasks ``start`` to ``stop`` (exclusive) as one batch, built from ``source``."""
        raise NotImplementedError

    def batches(self, source: SourceT, batch_size: int) -> Iterator[EpisodeBatch]:
        for start in range(0, self.count, batch_size):
            yield self.tasks(source, start, min(start + batch_size, self.count))
