"""N-way K-shot episodes built from index tensors over a class bank on the device.

A :class:`ClassBank` holds every image of one split part as one ``uint8`` tensor ``[classes,
examples, H, W]`` (grayscale) or ``[classes, examples, C, H, W]`` (e.g. RGB) on the run's device. An
episode is two index tensors (which classes, which examples of each); gathering them is one indexing
operation, with no Python loop per example.

Training episodes come from a ``torch.Generator`` on the run's device. Test episodes are *frozen*:
their indices are drawn on the CPU from a generator seeded by the benchmark's test seed, so the same
(dataset, split, part, ways, shots, queries, seed, count) yields the same episodes on any machine and
any device. Their digest, stored in every result, proves two results were scored on the same tasks.

*Sequence* episodes (MANN's protocol) are the same episodes presented one example at a time: the
shape's ``sequence`` flag makes the sampler also draw a random order of the episode's ``ways * (shots +
queries)`` examples, stored in the index (and so frozen and digested with it); :func:`as_sequence`
lays a batch out in that order. The order is drawn after the classes and examples, so set episodes
(and their digests) are exactly what they were before sequences existed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from metabench.errors import MetabenchError
from metabench.tasks import FrozenTasks, frozen_generator, task_digest


@dataclass(frozen=True)
class EpisodeShape:
    """How many classes an episode has, and support and query examples per class."""

    ways: int
    shots: int
    queries: int
    sequence: bool = False

    @property
    def per_class(self) -> int:
        return self.shots + self.queries

    @property
    def length(self) -> int:
        """Examples in one episode, i.e. steps of a sequence episode."""
        return self.ways * self.per_class


@dataclass(frozen=True)
class EpisodeBatch:
    """A batch of episodes. Images are float in [0, 1], ``[B, n, C, H, W]``; labels ``[B, n]`` in 0..ways-1.

    Labels are remapped per episode: label ``i`` is the episode's ``i``-th sampled class, and classes
    are sampled in random order, so a label says nothing about the underlying class.

    ``order`` (``[B, ways * (shots + queries)]``, sequence episodes only) is the presentation order of
    the episode's examples, as positions in the class-major layout (class ``c``'s ``j``-th example,
    support first, at ``c * (shots + queries) + j``); see :func:`as_sequence`.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    ways: int
    shots: int
    order: Tensor | None = None

    @property
    def size(self) -> int:
        return self.support_x.shape[0]

    def tasks(self, start: int, stop: int) -> EpisodeBatch:
        """Episodes ``start`` to ``stop`` (exclusive) as a batch of their own, views of this one's tensors."""
        order = None if self.order is None else self.order[start:stop]
        return replace(
            self,
            support_x=self.support_x[start:stop],
            support_y=self.support_y[start:stop],
            query_x=self.query_x[start:stop],
            query_y=self.query_y[start:stop],
            order=order,
        )


@dataclass(frozen=True)
class EpisodeIndex:
    """Which classes (``[B, ways]``), which examples of each (``[B, ways, shots + queries]``) and, for
    sequence episodes, their presentation order (``[B, ways * (shots + queries)]``)."""

    classes: Tensor
    examples: Tensor
    order: Tensor | None = None

    def slice(self, start: int, stop: int) -> EpisodeIndex:
        order = None if self.order is None else self.order[start:stop]
        return EpisodeIndex(self.classes[start:stop], self.examples[start:stop], order)

    def to(self, device: torch.device | str) -> EpisodeIndex:
        order = None if self.order is None else self.order.to(device)
        return EpisodeIndex(self.classes.to(device), self.examples.to(device), order)


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

    def sampler(self, shape: EpisodeShape, seed: int) -> EpisodeSampler:
        """A seeded training sampler of ``shape`` episodes over this bank."""
        return EpisodeSampler(self, shape, seed)

    def freeze(self, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> FrozenEpisodes:
        """The frozen episodes of ``shape`` drawn from ``seed``; see :func:`freeze`."""
        return freeze(self, shape, count, seed, key)

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

    def draw(self, shape: EpisodeShape, count: int, generator: torch.Generator) -> EpisodeIndex:
        """``count`` episodes' indices: any ``ways`` distinct classes of the bank (see :func:`sample_index`)."""
        return sample_index(self.num_classes, self.examples_per_class, shape, count, generator)

    def gather(self, index: EpisodeIndex, shape: EpisodeShape) -> EpisodeBatch:
        """Images (float in [0, 1], with a channel axis) and remapped labels of the indexed episodes."""
        index = index.to(self.device)
        images = self.images[index.classes.unsqueeze(-1), index.examples]  # [B, N, K+Q, (C,) H, W]
        return split_episodes(self.as_float(images), shape, index.order)


def split_episodes(values: Tensor, shape: EpisodeShape, order: Tensor | None = None) -> EpisodeBatch:
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
        order=order,
    )


def as_sequence(batch: EpisodeBatch) -> tuple[Tensor, Tensor]:
    """A sequence episode's examples and labels in presentation order: ``[B, T, ...]`` and ``[B, T]``."""
    if batch.order is None:
        raise ValueError("not a sequence episode: its shape was drawn without sequence=True")
    size, ways = batch.size, batch.ways
    item = batch.support_x.shape[2:]
    values = torch.cat(
        [batch.support_x.view(size, ways, -1, *item), batch.query_x.view(size, ways, -1, *item)], dim=2
    ).flatten(1, 2)
    labels = torch.cat([batch.support_y.view(size, ways, -1), batch.query_y.view(size, ways, -1)], dim=2).flatten(1)
    gather = batch.order.view(size, -1, *([1] * len(item))).expand(-1, -1, *item)
    return values.gather(1, gather), labels.gather(1, batch.order)


def instance_numbers(labels: Tensor, ways: int) -> Tensor:
    """For each step of ``[B, T]`` labels, which presentation of its class it is: 1 for the first, ..."""
    one_hot = torch.nn.functional.one_hot(labels, ways)
    return (one_hot.cumsum(1) * one_hot).sum(-1)


def smallest(keys: Tensor, k: int) -> Tensor:
    """The positions of the ``k`` smallest ``keys`` along the last axis, smallest first: exactly
    ``keys.argsort(dim=-1)[..., :k]``.

    Why: a batch's classes are the first ways of an argsort of one key per class of the bank, and a
    full sort of thousands of keys per episode (32 x 4400 for MAML's meta-batch on Omniglot) took 2-3%
    of a training step; ``topk`` takes a fiftieth of that. Where the ``k + 1`` smallest keys of every row
    are distinct, the first ``k`` of an argsort are fixed whatever its order among equal keys, and
    ``topk`` returns them; a tie among them (rare for uniform floats) falls back to the argsort itself.
    """
    if k >= keys.shape[-1]:
        return keys.argsort(dim=-1)[..., :k]
    values, positions = keys.topk(k + 1, dim=-1, largest=False, sorted=True)
    if bool((values[..., 1:] == values[..., :-1]).any()):
        return keys.argsort(dim=-1)[..., :k]
    return positions[..., :k]


def sample_index(
    num_classes: int, examples_per_class: int, shape: EpisodeShape, count: int, generator: torch.Generator
) -> EpisodeIndex:
    """Draw ``count`` episodes: distinct classes per episode, distinct examples per class.

    Sorting uniform keys gives a uniformly random permutation per row, for a whole batch at once.
    """
    device = generator.device
    class_keys = torch.rand(count, num_classes, generator=generator, device=device)
    classes = smallest(class_keys, shape.ways)
    example_keys = torch.rand(count, shape.ways, examples_per_class, generator=generator, device=device)
    examples = example_keys.argsort(dim=2)[:, :, : shape.per_class]
    if not shape.sequence:
        return EpisodeIndex(classes, examples)
    order = torch.rand(count, shape.length, generator=generator, device=device).argsort(dim=1)
    return EpisodeIndex(classes, examples, order)


class SeededSampler:
    """A training sampler whose only state is a seeded generator on the data's device.

    Checkpoints save :meth:`state` and a resumed run passes it to :meth:`restore`, so the episodes
    after a resume are exactly those an uninterrupted run would have drawn.
    """

    def __init__(self, device: torch.device, seed: int) -> None:
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def state(self) -> Tensor:
        return self.generator.get_state()

    def restore(self, state: Tensor) -> None:
        self.generator.set_state(state)

    def integer(self, low: int, high: int) -> int:
        """A uniform integer in ``[low, high]`` from the sampler's generator: a size shared by one batch
        (CNP's number of context points), drawn like everything else so that a resumed run draws it again."""
        return int(torch.randint(low, high + 1, (1,), generator=self.generator, device=self.generator.device))


class EpisodeSampler(SeededSampler):
    """Training episodes from a bank, drawn by a generator on the bank's device."""

    def __init__(self, bank: ClassBank, shape: EpisodeShape, seed: int) -> None:
        bank.check_shape(shape)
        super().__init__(bank.device, seed)
        self.bank = bank
        self.shape = shape

    def sample(self, count: int) -> EpisodeBatch:
        return self.bank.gather(self.bank.draw(self.shape, count, self.generator), self.shape)


@dataclass(frozen=True)
class FrozenEpisodes(FrozenTasks["ClassBank"]):
    """A fixed list of test episodes and the digest that identifies them."""

    key: dict[str, object]
    index: EpisodeIndex
    shape: EpisodeShape
    digest: str

    @property
    def count(self) -> int:
        return self.index.classes.shape[0]

    def tasks(self, bank: ClassBank, start: int, stop: int) -> EpisodeBatch:
        return bank.gather(self.index.slice(start, stop), self.shape)


def freeze(bank: ClassBank, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> FrozenEpisodes:
    """The frozen test episodes for ``key`` (dataset, split, part, ...) and ``seed``.

    Indices are drawn on the CPU whatever the bank's device, because CUDA and CPU generators give
    different streams for the same seed; the digest covers the key, the bank's contents and the indices.
    The bank draws them (:meth:`ClassBank.draw`), so a bank with its own rule (classes of one group)
    freezes the same way.
    """
    bank.check_shape(shape)
    index = bank.draw(shape, count, frozen_generator(seed))
    full_key = {**key, "ways": shape.ways, "shots": shape.shots, "queries": shape.queries, "seed": seed, "count": count}
    if shape.sequence:
        full_key["sequence"] = True
    draws = [index.classes, index.examples] + ([] if index.order is None else [index.order])
    digest = task_digest(full_key, bank_digest(bank), *(draw.to(torch.int64) for draw in draws))
    return FrozenEpisodes(full_key, index, shape, digest)


def bank_digest(bank: ClassBank) -> str:
    """sha256 of a bank's pixels: the same images in the same order give the same digest (a grouped
    bank's groups are covered too, so two groupings of the same images never share a digest)."""
    digest = hashlib.sha256(bank.images.cpu().contiguous().numpy().tobytes())
    if isinstance(bank, GroupedClassBank):
        digest.update(bank.groups.cpu().to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


class GroupedClassBank(ClassBank):
    """A class bank whose episodes draw all their classes from one group: one Omniglot alphabet per task
    (Flennerhag et al.'s protocol), rather than characters from anywhere.

    ``groups [classes]`` names each class's group. An episode first picks a group uniformly among those
    with at least ``ways`` classes, then ``ways`` distinct classes of it and distinct examples of each,
    all with the same generator, so training samplers checkpoint and test episodes freeze and digest
    exactly as for a plain bank.
    """

    def __init__(self, images: Tensor, groups: Tensor, name: str = "") -> None:
        super().__init__(images, name)
        if groups.shape != (images.shape[0],):
            raise ValueError(f"one group per class expected: {images.shape[0]} classes, groups {tuple(groups.shape)}")
        self.groups = groups.to(torch.long)

    def to(self, device: torch.device | str) -> GroupedClassBank:
        return GroupedClassBank(self.images.to(device), self.groups.to(device), self.name)

    def group_sizes(self) -> Tensor:
        return torch.bincount(self.groups.cpu())

    def check_shape(self, shape: EpisodeShape) -> None:
        super().check_shape(shape)
        largest = int(self.group_sizes().max())
        if shape.ways > largest:
            raise MetabenchError(
                f"impossible episode: {shape.ways} ways but no group of the {self.name} part has more than "
                f"{largest} classes",
                f"use --ways {largest} or fewer",
            )

    def draw(self, shape: EpisodeShape, count: int, generator: torch.Generator) -> EpisodeIndex:
        device = generator.device
        sizes = self.group_sizes()
        eligible = (sizes >= shape.ways).nonzero().flatten().to(device)
        chosen = eligible[torch.randint(len(eligible), (count,), generator=generator, device=device)]
        keys = torch.rand(count, self.num_classes, generator=generator, device=device)
        # Classes outside the episode's group sort after every class in it (keys of the group are < 1).
        keys = keys + (self.groups.to(device).unsqueeze(0) != chosen.unsqueeze(1)).to(keys.dtype) * 2.0
        classes = smallest(keys, shape.ways)
        example_keys = torch.rand(count, shape.ways, self.examples_per_class, generator=generator, device=device)
        examples = example_keys.argsort(dim=2)[:, :, : shape.per_class]
        order = None
        if shape.sequence:
            order = torch.rand(count, shape.length, generator=generator, device=device).argsort(dim=1)
        return EpisodeIndex(classes, examples, order)
