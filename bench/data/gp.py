"""Functions drawn from a Gaussian process: the 1-D regression tasks of Conditional Neural Processes.

The protocol is DeepMind's CNP notebook (``GPCurvesReader``): a squared-exponential kernel with length
scale 0.4 and signal 1.0, plus ``noise**2`` (noise 2e-2) on the diagonal, which the notebook adds so that
the Cholesky factorisation works; ``x`` in [-2, 2]. A training batch shares one number of context
points ``n`` (uniform in ``min_context..shots``) and of extra targets ``m`` (uniform in
``min_extra..queries``): ``n + m`` inputs are drawn uniformly, the function is sampled at them, the
first ``n`` are the context and all ``n + m`` are the targets (the targets include the context).

Test tasks are the notebook's test curves: the targets are ``queries`` evenly spaced inputs (400 on
[-2, 2) in steps of 0.01) and the context is a random subset of them, of a size uniform in
``min_context..shots`` drawn per task. The frozen tasks are stored in order of their context size, so
that tasks of one size are scored together in a batch; their digest covers the sizes, the context
indices and the normal draws the functions are made from. The true function on the grid is in every
test batch (``query_y``), which is what the figure of the fits draws.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from metabench.episodes import EpisodeBatch, EpisodeShape, SeededSampler
from metabench.errors import MetabenchError
from metabench.tasks import FrozenTasks, frozen_generator, task_digest

CPU = torch.device("cpu")


@dataclass(frozen=True)
class GPFamily:
    """The functions one split part draws: kernel, input range, and the fewest context and extra points."""

    name: str
    length_scale: float
    signal: float
    noise: float
    x_range: tuple[float, float]
    min_context: int
    min_extra: int
    device: torch.device = CPU

    def to(self, device: torch.device | str) -> GPFamily:
        return replace(self, device=torch.device(device))

    def check_shape(self, shape: EpisodeShape) -> None:
        if shape.ways != 1 or shape.shots < self.min_context or shape.queries < max(self.min_extra, 1):
            raise MetabenchError(
                f"impossible GP task: {shape.ways} ways, {shape.shots} shots, {shape.queries} queries",
                f"a GP task has ways = 1, shots >= {self.min_context} (the most context points) and queries "
                f">= {max(self.min_extra, 1)} (training: the most extra targets; test: the grid's points)",
            )

    def kernel(self, x: Tensor) -> Tensor:
        """``[..., n, n]`` covariance of inputs ``[..., n]``, with the notebook's diagonal term."""
        distance = (x.unsqueeze(-1) - x.unsqueeze(-2)) / self.length_scale
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        return self.signal**2 * torch.exp(-0.5 * distance.pow(2)) + self.noise**2 * eye

    def values(self, x: Tensor, normals: Tensor) -> Tensor:
        """Function values at ``x [B, n]`` from standard normals ``[B, n]``: ``L z`` with ``L L^T = K``, in float64."""
        factor = torch.linalg.cholesky(self.kernel(x.to(torch.float64)))
        return (factor @ normals.to(torch.float64).unsqueeze(-1)).squeeze(-1)

    def grid(self, points: int) -> Tensor:
        """``points`` evenly spaced inputs from the low end of the range, excluding the high end (float64)."""
        low, high = self.x_range
        return low + torch.arange(points, dtype=torch.float64) * ((high - low) / points)

    def sampler(self, shape: EpisodeShape, seed: int) -> GPSampler:
        return GPSampler(self, shape, seed)

    def freeze(self, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> FrozenGP:
        """Test tasks drawn on the CPU from ``seed``: per task a context size, which grid points are the
        context, and the normals of its function; sorted by context size (stable)."""
        self.check_shape(shape)
        if shape.shots > shape.queries:
            raise MetabenchError(
                f"impossible GP test task: {shape.shots} context points from a grid of {shape.queries}",
                "the test context is a subset of the grid: keep shots <= queries",
            )
        generator = frozen_generator(seed)
        sizes = torch.randint(self.min_context, shape.shots + 1, (count,), generator=generator)
        context = torch.rand(count, shape.queries, generator=generator).argsort(dim=1)[:, : shape.shots]
        normals = torch.randn(count, shape.queries, generator=generator, dtype=torch.float64)
        order = sizes.argsort(stable=True)
        sizes, context, normals = sizes[order], context[order], normals[order]
        full_key = {
            **key,
            "ways": 1,
            "shots": shape.shots,
            "queries": shape.queries,
            "seed": seed,
            "count": count,
            "gp": [self.length_scale, self.signal, self.noise, list(self.x_range), self.min_context],
        }
        digest = task_digest(full_key, sizes.to(torch.int64), context.to(torch.int64), normals)
        return FrozenGP(full_key, sizes, context, normals, shape, digest)


def _batch(x: Tensor, y: Tensor, context: Tensor | int) -> EpisodeBatch:
    """An episode batch of functions at ``x [B, n]`` (float32, ``[B, n, 1]``): targets are all ``n`` points,
    the context the first ``context`` of them or the points at indices ``context [B, k]``."""
    x, y = x.float().unsqueeze(-1), y.float().unsqueeze(-1)
    if isinstance(context, int):
        support_x, support_y = x[:, :context], y[:, :context]
    else:
        index = context.unsqueeze(-1)
        support_x, support_y = x.gather(1, index), y.gather(1, index)
    return EpisodeBatch(support_x, support_y, x, y, ways=1, shots=support_x.shape[1])


class GPSampler(SeededSampler):
    """Training functions in the notebook's way: one context size and one number of extra targets per batch."""

    def __init__(self, family: GPFamily, shape: EpisodeShape, seed: int) -> None:
        family.check_shape(shape)
        super().__init__(family.device, seed)
        self.family, self.shape = family, shape

    def sample(self, count: int) -> EpisodeBatch:
        family, device = self.family, self.generator.device
        context = self.integer(family.min_context, self.shape.shots)
        total = context + self.integer(family.min_extra, self.shape.queries)
        low, high = family.x_range
        u = torch.rand(count, total, generator=self.generator, device=device, dtype=torch.float64)
        x = low + u * (high - low)
        normals = torch.randn(count, total, generator=self.generator, device=device, dtype=torch.float64)
        return _batch(x, family.values(x, normals), context)


@dataclass(frozen=True)
class FrozenGP(FrozenTasks[GPFamily]):
    """Frozen test functions on the grid: context sizes ``[E]`` (ascending), context indices ``[E, shots]``
    into the grid (a task uses the first ``size`` of its row) and normals ``[E, queries]``."""

    key: dict[str, object]
    sizes: Tensor
    context: Tensor
    normals: Tensor
    shape: EpisodeShape
    digest: str

    @property
    def count(self) -> int:
        return int(self.sizes.shape[0])

    def batches(self, family: GPFamily, batch_size: int) -> Iterator[EpisodeBatch]:
        """In order, at most ``batch_size`` tasks at a time, each batch of one context size."""
        grid = family.grid(self.shape.queries)
        factor = torch.linalg.cholesky(family.kernel(grid)).to(family.device)  # one grid, one factor
        grid = grid.to(family.device)
        start = 0
        while start < self.count:
            size = int(self.sizes[start])
            stop = start + 1
            while stop < min(self.count, start + batch_size) and int(self.sizes[stop]) == size:
                stop += 1
            normals = self.normals[start:stop].to(family.device)
            y = normals @ factor.T
            x = grid.expand(stop - start, -1)
            yield _batch(x, y, self.context[start:stop, :size].to(family.device))
            start = stop


#: DeepMind's CNP notebook: length scale 0.4, signal 1.0, diagonal noise 2e-2, x in [-2, 2], at least 3
#: context points and 2 extra targets in training.
NOTEBOOK = {"length_scale": 0.4, "signal": 1.0, "noise": 2e-2, "x_range": (-2.0, 2.0), "min_context": 3, "min_extra": 2}
SPLITS = {"cnp": NOTEBOOK}


def load_parts(split: str) -> dict[str, GPFamily]:
    """Train, validation and test parts: one distribution; tasks differ by their draws and seeds."""
    settings = SPLITS[split]
    return {part: GPFamily(part, **settings) for part in ("train", "val", "test")}  # type: ignore[arg-type]
