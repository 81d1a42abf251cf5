"""N-way K-shot episodes built from index tensors over a class bank on the device.

A :class:`ClassBank` holds every image of one split part as one ``uint8`` tensor ``[classes,
examples, H, W]`` (grayscale) or ``[classes, examples, C, H, W]`` (e.g. RGB) on the run's device. An
episode is two index tensors (which classes, which examples of each); gathering them is one indexing
operation, with no Python loop per example.

Training episodes come from a ``torch.Generator`` on the run's device. Test episodes are *frozen*:
their indices are drawn on the CPU from a generator seeded by the benchmark's test seed, so the same
(dataset, split, part, ways, shots, queries, seed, count) yields the same episodes on any machine and
any device. Their digest, stored in every result, proves two results were scored on the same tasks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from metabench.errors import MetabenchError


@dataclass(frozen=True)
class EpisodeShape:
    """How many classes an episode has, and support and query examples per class."""

    ways: int
    shots: int
    queries: int

    @property
    def per_class(self) -> int:
        return self.shots + self.queries


@dataclass(frozen=True)
class EpisodeBatch:
    """A batch of episodes. Images are float in [0, 1], ``[B, n, C, H, W]``; labels ``[B, n]`` in 0..ways-1.

    Labels are remapped per episode: label ``i`` is the episode's ``i``-th sampled class, and classes
    are sampled in random order, so a label says nothing about the underlying class.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    ways: int
    shots: int

    @property
    def size(self) -> int:
        return self.support_x.shape[0]


@dataclass(frozen=True)
class EpisodeIndex:
    """Which classes (``[B, ways]``) and which examples of each (``[B, ways, shots + queries]``)."""

    classes: Tensor
    examples: Tensor

    def slice(self, start: int, stop: int) -> EpisodeIndex:
        return EpisodeIndex(self.classes[start:stop], self.examples[start:stop])

    def to(self, device: torch.device | str) -> EpisodeIndex:
        return EpisodeIndex(self.classes.to(device), self.examples.to(device))


class ClassBank:
    """Every image of one split part on one device: ``uint8 [classes, examples, H, W]`` for grayscale
    images, ``uint8 [classes, examples, C, H, W]`` for ``C`` channels. The tensor is kept as given (a
    grayscale bank gets no channel axis), so existing banks and their digests are unchanged.
    """

    def __init__(self, images: Tensor, name: str = "") -> None:
        if images.dim() not in (4, 5) or images.dtype != torch.uint8:
            raise ValueError(
                "a class bank is uint8 [classes, examples, H, W] or [classes, examples, C, H, W], "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        self.images = images
        self.name = name

    @property
    def channels(self) -> int:
        """1 for a grayscale ``[classes, examples, H, W]`` bank, else the size of its channel axis."""
        return 1 if self.images.dim() == 4 else self.images.shape[2]

    def as_float(self, pixels: Tensor) -> Tensor:
        """Images indexed from :attr:`images` (``[..., H, W]`` or ``[..., C, H, W]``) as float in [0, 1],
        always with the channel axis: ``[..., C, H, W]``."""
        if self.images.dim() == 4:
            pixels = pixels.unsqueeze(-3)
        return pixels.float().div_(255.0)

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    @property
    def examples_per_class(self) -> int:
        return self.images.shape[1]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ClassBank:
        return ClassBank(self.images.to(device), self.name)

    def check_shape(self, shape: EpisodeShape) -> None:
        """Refuse an episode this bank cannot provide, saying which number to lower."""
        label = f"the {self.name} part" if self.name else "this class bank"
        if shape.ways < 2 or shape.shots < 1 or shape.queries < 1:
            raise MetabenchError(
                f"impossible episode: {shape.ways}-way {shape.shots}-shot with {shape.queries} queries",
                "an episode needs at least 2 ways, 1 shot and 1 query per class",
            )
        if shape.ways > self.num_classes:
            raise MetabenchError(
                f"impossible episode: {shape.ways} ways but {label} has {self.num_classes} classes",
                f"use --ways {self.num_classes} or fewer",
            )
        if shape.per_class > self.examples_per_class:
            raise MetabenchError(
                f"impossible episode: {shape.shots} shots + {shape.queries} queries per class but {label} "
                f"has {self.examples_per_class} examples per class",
                f"keep shots + queries at most {self.examples_per_class}",
            )

    def gather(self, index: EpisodeIndex, shape: EpisodeShape) -> EpisodeBatch:
        """Images (float in [0, 1], with a channel axis) and remapped labels of the indexed episodes."""
        index = index.to(self.device)
        images = self.images[index.classes.unsqueeze(-1), index.examples]  # [B, N, K+Q, (C,) H, W]
        return split_episodes(self.as_float(images), shape)


def split_episodes(values: Tensor, shape: EpisodeShape) -> EpisodeBatch:
    """Cut gathered ``[B, ways, shots + queries, ...]`` values into support and query sets with labels.

    The trailing axes are whatever the bank holds: images, or embeddings of them (see ``evaluate``).
    """
    batch, ways = values.shape[:2]
    item = values.shape[3:]
    labels = torch.arange(ways, device=values.device).view(1, ways, 1)
    return EpisodeBatch(
        support_x=values[:, :, : shape.shots].reshape(batch, ways * shape.shots, *item),
        support_y=labels.expand(batch, ways, shape.shots).reshape(batch, -1),
        query_x=values[:, :, shape.shots :].reshape(batch, ways * shape.queries, *item),
        query_y=labels.expand(batch, ways, shape.queries).reshape(batch, -1),
        ways=ways,
        shots=shape.shots,
    )


def sample_index(
    num_classes: int, examples_per_class: int, shape: EpisodeShape, count: int, generator: torch.Generator
) -> EpisodeIndex:
    """Draw ``count`` episodes: distinct classes per episode, distinct examples per class.

    Sorting uniform keys gives a uniformly random permutation per row, for a whole batch at once.
    """
    device = generator.device
    class_keys = torch.rand(count, num_classes, generator=generator, device=device)
    classes = class_keys.argsort(dim=1)[:, : shape.ways]
    example_keys = torch.rand(count, shape.ways, examples_per_class, generator=generator, device=device)
    examples = example_keys.argsort(dim=2)[:, :, : shape.per_class]
    return EpisodeIndex(classes, examples)


class EpisodeSampler:
    """Training episodes from a bank, drawn by a generator on the bank's device."""

    def __init__(self, bank: ClassBank, shape: EpisodeShape, seed: int) -> None:
        bank.check_shape(shape)
        self.bank = bank
        self.shape = shape
        self.generator = torch.Generator(device=bank.device)
        self.generator.manual_seed(seed)

    def sample(self, count: int) -> EpisodeBatch:
        index = sample_index(self.bank.num_classes, self.bank.examples_per_class, self.shape, count, self.generator)
        return self.bank.gather(index, self.shape)

    def state(self) -> Tensor:
        return self.generator.get_state()

    def restore(self, state: Tensor) -> None:
        self.generator.set_state(state)


@dataclass(frozen=True)
class FrozenEpisodes:
    """A fixed list of test episodes and the digest that identifies them."""

    key: dict[str, object]
    index: EpisodeIndex
    shape: EpisodeShape
    digest: str

    @property
    def count(self) -> int:
        return self.index.classes.shape[0]

    def batches(self, bank: ClassBank, batch_size: int) -> Iterator[EpisodeBatch]:
        for start in range(0, self.count, batch_size):
            yield bank.gather(self.index.slice(start, start + batch_size), self.shape)


def freeze(bank: ClassBank, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> FrozenEpisodes:
    """The frozen test episodes for ``key`` (dataset, split, part, ...) and ``seed``.

    Indices are drawn on the CPU whatever the bank's device, because CUDA and CPU generators give
    different streams for the same seed; the digest covers the key, the bank's contents and the indices.
    """
    bank.check_shape(shape)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    index = sample_index(bank.num_classes, bank.examples_per_class, shape, count, generator)
    full_key = {**key, "ways": shape.ways, "shots": shape.shots, "queries": shape.queries, "seed": seed, "count": count}
    digest = hashlib.sha256()
    digest.update(json.dumps(full_key, sort_keys=True).encode())
    digest.update(bank_digest(bank).encode())
    digest.update(index.classes.to(torch.int64).numpy().tobytes())
    digest.update(index.examples.to(torch.int64).numpy().tobytes())
    return FrozenEpisodes(full_key, index, shape, digest.hexdigest())


def bank_digest(bank: ClassBank) -> str:
    """sha256 of a bank's pixels: the same images in the same order give the same digest."""
    return hashlib.sha256(bank.images.cpu().contiguous().numpy().tobytes()).hexdigest()
