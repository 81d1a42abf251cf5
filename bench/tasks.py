"""Where episodes come from, whatever the data: class banks of images, or families of functions.

The runner asks a split part for a seeded training sampler and for frozen test episodes, and nothing
else. Image datasets answer with :class:`~metabench.episodes.ClassBank` (episodes of classes and
examples); regression sources such as :class:`~metabench.data.sinusoid.SinusoidFamily` answer with
their own sampler and frozen tasks. A new kind of source implements ``sampler``, ``freeze``, ``to``
and ``check_shape`` and needs no change to the runner.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeAlias

from torch import Tensor

from metabench.data.sinusoid import FrozenFunctions, SinusoidFamily
from metabench.episodes import ClassBank, EpisodeBatch, EpisodeSampler, EpisodeShape, FrozenEpisodes, freeze

TaskSource: TypeAlias = ClassBank | SinusoidFamily
Frozen: TypeAlias = FrozenEpisodes | FrozenFunctions


class Sampler(Protocol):
    def sample(self, count: int) -> EpisodeBatch: ...
    def state(self) -> Tensor: ...
    def restore(self, state: Tensor) -> None: ...


def make_sampler(source: TaskSource, shape: EpisodeShape, seed: int) -> Sampler:
    """A seeded training sampler over ``source``."""
    if isinstance(source, ClassBank):
        return EpisodeSampler(source, shape, seed)
    return source.sampler(shape, seed)


def freeze_tasks(source: TaskSource, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> Frozen:
    """The frozen test (or validation) episodes of ``source``; the same on every machine and device."""
    if isinstance(source, ClassBank):
        return freeze(source, shape, count, seed, key)
    return source.freeze(shape, count, seed, key)


def frozen_batches(frozen: Frozen, source: TaskSource, batch_size: int) -> Iterator[EpisodeBatch]:
    if isinstance(frozen, FrozenEpisodes):
        assert isinstance(source, ClassBank)
        return frozen.batches(source, batch_size)
    assert isinstance(source, SinusoidFamily)
    return frozen.batches(source, batch_size)
