"""Sinusoid regression tasks (Finn et al. 2017, section 5.1): a non-image task source.

A task is ``y = A sin(x + phase)`` with the amplitude, phase and inputs drawn uniformly from the
split's ranges; its support set is ``shots`` points and its queries ``queries`` more points of the same
function. The source plays the part a :class:`~metabench.episodes.ClassBank` plays for images: it
hands the runner a seeded sampler for training and frozen, digested tasks for testing, and the
episode batches it yields have the same fields (``x`` and ``y`` are ``[B, n, 1]`` floats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metabench.episodes import EpisodeBatch, EpisodeShape, SeededSampler
from metabench.errors import MetabenchError
from metabench.tasks import FrozenTasks, frozen_generator, task_digest

CPU = torch.device("cpu")


@dataclass(frozen=True)
class SinusoidFamily:
    """The distribution of sine functions one split part draws from, and the device its tasks live on."""

    name: str
    amplitude: tuple[float, float]
    phase: tuple[float, float]
    x_range: tuple[float, float]
    device: torch.device = CPU

    def to(self, device: torch.device | str) -> SinusoidFamily:
        return SinusoidFamily(self.name, self.amplitude, self.phase, self.x_range, torch.device(device))

    def check_shape(self, shape: EpisodeShape) -> None:
        if shape.ways != 1 or shape.shots < 1 or shape.queries < 1:
            raise MetabenchError(
                f"impossible regression task: {shape.ways} ways, {shape.shots} shots, {shape.queries} queries",
                "a sinusoid task has ways = 1 (one function) and at least 1 shot and 1 query",
            )

    def draw(self, count: int, shape: EpisodeShape, generator: torch.Generator) -> Tensor:
        """``[count, 2 + shots + queries]``: amplitude, phase, then the inputs, on the generator's device."""
        u = torch.rand(count, 2 + shape.per_class, generator=generator, device=generator.device, dtype=torch.float64)
        low = torch.tensor([self.amplitude[0], self.phase[0]] + [self.x_range[0]] * shape.per_class, device=u.device)
        high = torch.tensor([self.amplitude[1], self.phase[1]] + [self.x_range[1]] * shape.per_class, device=u.device)
        return low + u * (high - low)

    def batch(self, draws: Tensor, shape: EpisodeShape) -> EpisodeBatch:
        """The episode batch of drawn functions (float32 on this family's device)."""
        draws = draws.to(self.device)
        amplitude, phase, x = draws[:, :1], draws[:, 1:2], draws[:, 2:]
        y = amplitude * torch.sin(x + phase)
        x, y = x.float().unsqueeze(-1), y.float().unsqueeze(-1)
        return EpisodeBatch(
            support_x=x[:, : shape.shots],
            support_y=y[:, : shape.shots],
            query_x=x[:, shape.shots :],
            query_y=y[:, shape.shots :],
            ways=1,
            shots=shape.shots,
        )

    @property
    def zero_mse(self) -> float:
        """Expected MSE of always predicting 0 (``E[A^2] E[sin^2]``, the latter 1/2 over a full period)."""
        a, b = self.amplitude
        return (b**3 - a**3) / (3 * (b - a)) / 2

    def sampler(self, shape: EpisodeShape, seed: int) -> FunctionSampler:
        return FunctionSampler(self, shape, seed)

    def freeze(self, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> FrozenFunctions:
        """Test functions drawn on the CPU from ``seed`` (the same on every device), with their digest."""
        self.check_shape(shape)
        draws = self.draw(count, shape, frozen_generator(seed))
        full_key = {**key, "ways": 1, "shots": shape.shots, "queries": shape.queries, "seed": seed, "count": count}
        return FrozenFunctions(full_key, draws, shape, task_digest(full_key, draws))


class FunctionSampler(SeededSampler):
    """Training functions drawn by a generator on the family's device; its state checkpoints like a sampler's."""

    def __init__(self, family: SinusoidFamily, shape: EpisodeShape, seed: int) -> None:
        family.check_shape(shape)
        super().__init__(family.device, seed)
        self.family, self.shape = family, shape

    def sample(self, count: int) -> EpisodeBatch:
        return self.family.batch(self.family.draw(count, self.shape, self.generator), self.shape)


@dataclass(frozen=True)
class FrozenFunctions(FrozenTasks[SinusoidFamily]):
    """A fixed list of test functions (amplitude, phase and inputs of each) and their digest."""

    key: dict[str, object]
    draws: Tensor
    shape: EpisodeShape
    digest: str

    @property
    def count(self) -> int:
        return self.draws.shape[0]

    def tasks(self, family: SinusoidFamily, start: int, stop: int) -> EpisodeBatch:
        return family.batch(self.draws[start:stop], self.shape)


#: Finn et al.'s ranges: amplitude 0.1..5, phase 0..pi, x in -5..5; every part draws from the same family.
MAML = {"amplitude": (0.1, 5.0), "phase": (0.0, math.pi), "x_range": (-5.0, 5.0)}
#: Nichol et al.'s toy example differs in the phase range (0..2 pi).
REPTILE = {"amplitude": (0.1, 5.0), "phase": (0.0, 2 * math.pi), "x_range": (-5.0, 5.0)}
SPLITS = {"maml": MAML, "reptile": REPTILE}


def load_parts(split: str) -> dict[str, SinusoidFamily]:
    """Train, validation and test parts: the same distribution (tasks differ by their draws and seeds)."""
    ranges = SPLITS[split]
    return {
        part: SinusoidFamily(part, ranges["amplitude"], ranges["phase"], ranges["x_range"])
        for part in ("train", "val", "test")
    }
