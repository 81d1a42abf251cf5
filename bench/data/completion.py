"""Image completion as regression (Garnelo et al. 2018, section 4.2): pixel location to intensity.

A task is one image. Its points are its pixels: ``x`` the pixel's (row, column) scaled to [-1, 1],
``y`` its intensity in [0, 1]. The context is a random subset of the pixels and the targets include it.
Training batches share one context size ``n`` (uniform in ``min_context..shots``) and one number of
extra targets ``m`` (uniform in ``min_extra..queries``): the first ``n`` of a random order of the pixels
are the context, the first ``n + m`` (at most every pixel) the targets, as in the CNP notebook's curves.

A frozen test task is an image and a random order of its pixels: the context is the first ``shots`` in
that order and the targets the first ``queries`` (``queries`` = every pixel: the whole image is
predicted). Scoring with fewer context points takes the first ``k`` of them (a random, nested subset:
see :func:`metabench.evaluate.evaluate_by_context`). The digest covers the images' pixels, which image
each task is, and the pixel orders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from metabench.episodes import EpisodeBatch, EpisodeShape, SeededSampler
from metabench.errors import MetabenchError
from metabench.tasks import FrozenTasks, frozen_generator, task_digest


@dataclass(frozen=True)
class PixelCompletion:
    """The images of one split part (``uint8 [n, H, W]``, on the run's device) as completion tasks."""

    name: str
    images: Tensor
    min_context: int
    min_extra: int

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def pixels(self) -> int:
        return int(self.images.shape[1] * self.images.shape[2])

    def to(self, device: torch.device | str) -> PixelCompletion:
        return PixelCompletion(self.name, self.images.to(device), self.min_context, self.min_extra)

    def coordinates(self) -> Tensor:
        """``[pixels, 2]`` (row, column) of every pixel in raster order, scaled to [-1, 1]."""
        height, width = self.images.shape[1:]
        rows, cols = torch.meshgrid(
            torch.linspace(-1, 1, height, device=self.device),
            torch.linspace(-1, 1, width, device=self.device),
            indexing="ij",
        )
        return torch.stack([rows.flatten(), cols.flatten()], dim=-1)

    def check_shape(self, shape: EpisodeShape) -> None:
        if shape.ways != 1 or not self.min_context <= shape.shots <= self.pixels or shape.queries < 1:
            raise MetabenchError(
                f"impossible completion task: {shape.ways} ways, {shape.shots} shots, {shape.queries} queries",
                f"a completion task has ways = 1, {self.min_context} <= shots <= {self.pixels} (context pixels) "
                "and queries >= 1",
            )

    def batch(self, which: Tensor, order: Tensor, context: int, targets: int) -> EpisodeBatch:
        """Tasks of images ``which [B]`` whose pixels are taken in ``order [B, >= targets]``: the first
        ``context`` are the context, the first ``targets`` the targets."""
        order = order[:, :targets].to(self.device)
        intensities = self.images[which.to(self.device)].flatten(1).float().div_(255.0)  # [B, pixels]
        x = self.coordinates()[order]  # [B, targets, 2]
        y = intensities.gather(1, order).unsqueeze(-1)  # [B, targets, 1]
        return EpisodeBatch(x[:, :context], y[:, :context], x, y, ways=1, shots=context)

    def sampler(self, shape: EpisodeShape, seed: int) -> CompletionSampler:
        return CompletionSampler(self, shape, seed)

    def freeze(self, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> FrozenCompletion:
        """Test tasks drawn on the CPU from ``seed``: distinct images (with replacement only beyond the
        part's size) and one random order of each image's pixels."""
        self.check_shape(shape)
        if shape.queries < shape.shots or shape.queries > self.pixels:
            raise MetabenchError(
                f"impossible completion test task: {shape.queries} targets for {shape.shots} context pixels",
                f"the targets include the context: keep shots <= queries <= {self.pixels}",
            )
        generator = frozen_generator(seed)
        total = int(self.images.shape[0])
        which = torch.cat([torch.randperm(total, generator=generator) for _ in range(-(-count // total))])[:count]
        order = torch.rand(count, self.pixels, generator=generator).argsort(dim=1)[:, : shape.queries]
        full_key = {
            **key,
            "ways": 1,
            "shots": shape.shots,
            "queries": shape.queries,
            "seed": seed,
            "count": count,
            "images": hashlib.sha256(self.images.cpu().contiguous().numpy().tobytes()).hexdigest(),
        }
        digest = task_digest(full_key, which.to(torch.int64), order.to(torch.int64))
        return FrozenCompletion(full_key, which, order, shape, digest)


class CompletionSampler(SeededSampler):
    """Training tasks: random images, one context size and one number of extra targets per batch."""

    def __init__(self, source: PixelCompletion, shape: EpisodeShape, seed: int) -> None:
        source.check_shape(shape)
        super().__init__(source.device, seed)
        self.source, self.shape = source, shape

    def sample(self, count: int) -> EpisodeBatch:
        source, generator = self.source, self.generator
        context = self.integer(source.min_context, self.shape.shots)
        targets = min(source.pixels, context + self.integer(source.min_extra, self.shape.queries))
        which = torch.randint(int(source.images.shape[0]), (count,), generator=generator, device=generator.device)
        keys = torch.rand(count, source.pixels, generator=generator, device=generator.device)
        return source.batch(which, keys.argsort(dim=1), context, targets)


@dataclass(frozen=True)
class FrozenCompletion(FrozenTasks[PixelCompletion]):
    """Frozen completion tasks: which image ``[E]`` and the pixel order ``[E, queries]`` of each."""

    key: dict[str, object]
    which: Tensor
    order: Tensor
    shape: EpisodeShape
    digest: str

    @property
    def count(self) -> int:
        return int(self.which.shape[0])

    def tasks(self, source: PixelCompletion, start: int, stop: int) -> EpisodeBatch:
        return source.batch(self.which[start:stop], self.order[start:stop], self.shape.shots, self.shape.queries)


#: MNIST digits: 55,000 training images, the last 5,000 of the training file for validation and the
#: 10,000 test images held out; at least 1 context pixel, no extra target required.
SPLITS = {"mnist": {"validation": 5_000, "min_context": 1, "min_extra": 0}}


def load_parts(split: str, images: Tensor, test_images: Tensor) -> dict[str, PixelCompletion]:
    """Train, validation and test parts of a split of MNIST's training and test images."""
    settings = SPLITS[split]
    keep = images.shape[0] - settings["validation"]
    low, extra = settings["min_context"], settings["min_extra"]
    return {
        "train": PixelCompletion("train", images[:keep], low, extra),
        "val": PixelCompletion("val", images[keep:], low, extra),
        "test": PixelCompletion("test", test_images, low, extra),
    }
