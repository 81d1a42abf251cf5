"""Optimisation problems as task sources: what a learned optimizer is trained and tested on.

Andrychowicz et al. (2016) meta-train an optimizer on random problems of one family and test it on
held-out problems of the same family (or a related one). Here a *problem* is everything that fixes
one optimisation run: for a quadratic ``f(theta) = ||W theta - y||^2`` its ``W``, ``y`` and starting
point; for an MNIST MLP its initial weights and the seed of its minibatch stream (128 images drawn
with replacement at every step). Families implement :class:`~metabench.tasks.TaskSource`: a seeded
sampler for meta-training, and frozen, digested held-out problems drawn on the CPU from a seed, so
every optimizer, machine and device sees the same problems, step for step the same minibatches.

A batch of problems is a :class:`ProblemBatch`, an :class:`~metabench.episodes.EpisodeBatch` whose
``problems`` make a fresh loss function per optimisation run (``support_x`` holds the starting
points, so ``size`` and device moves work as for episodes). A test part names the part whose
problems tune the baselines' learning rates (``tuning``), so no rate is ever tuned on test problems.

Distributions follow the released code (deepmind/learning-to-learn, ``problems.py``): ``W`` and
``y`` uniform on [0, 1), ``theta_0 ~ N(0, 0.01^2)``; MLP weights and biases ``N(0, 0.01^2)``,
cross-entropy on minibatches of 128.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from metabench.episodes import EpisodeBatch, EpisodeShape, SeededSampler
from metabench.errors import MetabenchError
from metabench.tasks import FrozenTasks, frozen_generator, task_digest

CPU = torch.device("cpu")
LossFn = Callable[[Tensor], Tensor]
Draws = dict[str, Tensor]


@dataclass(frozen=True)
class Problems:
    """A batch of optimisation problems: starting points ``[B, d]`` and a way to score parameters.

    ``make_loss()`` returns a fresh loss function; each call of one maps parameters ``[B, d]`` to the
    per-problem losses ``[B]`` and, for stochastic problems, moves on to the next minibatch. Two
    optimizers that each take a fresh loss function therefore see identical minibatches.
    """

    theta0: Tensor
    make_loss: Callable[[], LossFn]

    @property
    def count(self) -> int:
        return int(self.theta0.shape[0])


@dataclass(frozen=True)
class ProblemBatch(EpisodeBatch):
    """Problems in the runner's batch type. ``tuning`` is the part that tunes baselines for them."""

    problems: Problems | None = None
    tuning: ProblemFamily | None = None

    def require(self) -> Problems:
        if self.problems is None:
            raise TypeError("this batch holds no problems: the benchmark's dataset is not a problem family")
        return self.problems


class ProblemFamily:
    """What quadratics and MLPs share: seeded draws, problems from draws, sampling and freezing.

    Subclasses define :meth:`draw` (the random numbers that fix ``count`` problems, as tensors with a
    leading problem axis) and :meth:`problems` (the problems those numbers describe, on ``device``).
    """

    name: str
    device: torch.device
    tuning: ProblemFamily | None

    def draw(self, count: int, generator: torch.Generator) -> Draws:
        raise NotImplementedError

    def problems(self, draws: Draws) -> Problems:
        raise NotImplementedError

    def to(self, device: torch.device | str) -> ProblemFamily:
        tuning = None if self.tuning is None else self.tuning.to(device)
        return replace(self, device=torch.device(device), tuning=tuning)  # type: ignore[type-var]

    def check_shape(self, shape: EpisodeShape) -> None:
        if (shape.ways, shape.shots, shape.queries) != (1, 1, 1) or shape.sequence:
            raise MetabenchError(
                f"a problem family has no episodes of {shape.ways} ways, {shape.shots} shots, {shape.queries} queries",
                "state ways = 1, shots = 1, queries = 1 (and the same train_ways/shots/queries) for problems",
            )

    def batch(self, draws: Draws) -> ProblemBatch:
        problems = self.problems(draws)
        theta0 = problems.theta0
        return ProblemBatch(
            support_x=theta0,
            support_y=theta0.new_zeros(theta0.shape[0], 0),
            query_x=theta0,
            query_y=theta0.new_zeros(theta0.shape[0]),
            ways=1,
            shots=1,
            problems=problems,
            tuning=self.tuning,
        )

    def sample(self, count: int, seed: int) -> Problems:
        """``count`` problems drawn on the CPU from ``seed`` (a convenience for tests and scripts)."""
        return self.problems(self.draw(count, torch.Generator().manual_seed(seed)))

    def sampler(self, shape: EpisodeShape, seed: int) -> ProblemSampler:
        return ProblemSampler(self, shape, seed)

    def freeze(self, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> FrozenProblems:
        """Held-out problems drawn on the CPU from ``seed`` (the same on every device), with their digest."""
        self.check_shape(shape)
        draws = self.draw(count, frozen_generator(seed))
        full_key = {**key, "family": self.describe(), "seed": seed, "count": count}
        named = [part for name in sorted(draws) for part in (name, draws[name])]
        return FrozenProblems(full_key, draws, task_digest(full_key, *named))

    def describe(self) -> dict[str, object]:
        """What, besides the draws, defines this family's problems (part of the frozen digest)."""
        raise NotImplementedError


class ProblemSampler(SeededSampler):
    """Meta-training problems drawn by a generator on the family's device; its state checkpoints."""

    def __init__(self, family: ProblemFamily, shape: EpisodeShape, seed: int) -> None:
        family.check_shape(shape)
        super().__init__(family.device, seed)
        self.family = family

    def sample(self, count: int) -> ProblemBatch:
        return self.family.batch(self.family.draw(count, self.generator))


@dataclass(frozen=True)
class FrozenProblems(FrozenTasks[ProblemFamily]):
    """A fixed list of held-out problems (the draws that define them) and their digest."""

    key: dict[str, object]
    draws: Draws
    digest: str

    @property
    def count(self) -> int:
        return int(next(iter(self.draws.values())).shape[0])

    def tasks(self, family: ProblemFamily, start: int, stop: int) -> ProblemBatch:
        return family.batch({name: t[start:stop] for name, t in self.draws.items()})


@dataclass(frozen=True)
class QuadraticTask(ProblemFamily):
    """Random ``dims``-dimensional quadratics ``||W theta - y||^2``, one loss per problem."""

    dims: int = 10
    init_std: float = 0.01
    name: str = "quadratic"
    device: torch.device = CPU
    tuning: ProblemFamily | None = None

    def describe(self) -> dict[str, object]:
        return {"kind": "quadratic", "dims": self.dims, "init_std": self.init_std}

    def draw(self, count: int, generator: torch.Generator) -> Draws:
        g, d = generator, generator.device
        return {
            "w": torch.rand(count, self.dims, self.dims, generator=g, device=d),
            "y": torch.rand(count, self.dims, generator=g, device=d),
            "theta0": self.init_std * torch.randn(count, self.dims, generator=g, device=d),
        }

    def problems(self, draws: Draws) -> Problems:
        w, y = draws["w"].to(self.device), draws["y"].to(self.device)

        def loss(theta: Tensor) -> Tensor:
            return ((torch.einsum("bij,bj->bi", w, theta) - y) ** 2).sum(-1)

        return Problems(draws["theta0"].to(self.device), lambda: loss)


@dataclass(frozen=True)
class MlpTask(ProblemFamily):
    """An MLP classifier per problem on ``images [N, features]`` (floats) and ``labels [N]``.

    A problem is its initial weights (every weight and bias ``N(0, init_std^2)``) and the seed of its
    own minibatch stream: ``batch_size`` examples drawn with replacement at every step by a CPU
    generator, so a problem's minibatches do not depend on which other problems share its batch.
    """

    images: Tensor = field(repr=False, default_factory=lambda: torch.zeros(0, 1))
    labels: Tensor = field(repr=False, default_factory=lambda: torch.zeros(0, dtype=torch.long))
    hidden: tuple[int, ...] = (20,)
    activation: str = "sigmoid"
    batch_size: int = 128
    init_std: float = 0.01
    classes: int = 10
    name: str = "mnist-mlp"
    device: torch.device = CPU
    tuning: ProblemFamily | None = None
    data: str = ""

    def __post_init__(self) -> None:
        if self.activation not in ("sigmoid", "relu"):
            raise ValueError(f"activation {self.activation!r}: use sigmoid or relu")

    def to(self, device: torch.device | str) -> MlpTask:
        tuning = None if self.tuning is None else self.tuning.to(device)
        where = torch.device(device)
        return replace(self, images=self.images.to(where), labels=self.labels.to(where), device=where, tuning=tuning)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        sizes = [int(self.images.shape[1]), *self.hidden, self.classes]
        return list(itertools.pairwise(sizes))

    @property
    def dims(self) -> int:
        return sum(a * b + b for a, b in self.shapes)

    def describe(self) -> dict[str, object]:
        return {
            "kind": "mlp",
            "data": self.data,
            "examples": int(self.labels.shape[0]),
            "hidden": list(self.hidden),
            "activation": self.activation,
            "batch_size": self.batch_size,
            "init_std": self.init_std,
        }

    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        """``x [B, n, features]`` through each problem's network, ``theta [B, dims]``: ``[B, n, classes]``."""
        act = torch.sigmoid if self.activation == "sigmoid" else torch.relu
        offset = 0
        for layer, (fan_in, fan_out) in enumerate(self.shapes):
            w = theta[:, offset : offset + fan_in * fan_out].view(-1, fan_in, fan_out)
            offset += fan_in * fan_out
            b = theta[:, offset : offset + fan_out].unsqueeze(1)
            offset += fan_out
            x = torch.baddbmm(b, x, w)
            if layer < len(self.shapes) - 1:
                x = act(x)
        return x

    def draw(self, count: int, generator: torch.Generator) -> Draws:
        g, d = generator, generator.device
        return {
            "theta0": self.init_std * torch.randn(count, self.dims, generator=g, device=d),
            "stream": torch.randint(0, 2**62, (count,), generator=g, device=d),
        }

    def problems(self, draws: Draws) -> Problems:
        seeds = [int(s) for s in draws["stream"].cpu()]
        count = len(seeds)

        def make_loss() -> LossFn:
            streams = [torch.Generator().manual_seed(s) for s in seeds]

            def loss(theta: Tensor) -> Tensor:
                index = torch.stack(
                    [torch.randint(0, self.labels.shape[0], (self.batch_size,), generator=g) for g in streams]
                ).to(self.device)
                logits = self.logits(theta, self.images[index])
                return (
                    torch.nn.functional.cross_entropy(
                        logits.reshape(-1, self.classes), self.labels[index].reshape(-1), reduction="none"
                    )
                    .view(count, self.batch_size)
                    .mean(-1)
                )

            return loss

        return Problems(draws["theta0"].to(self.device), make_loss)


# --------------------------------------------------------------------------- splits

#: MNIST MLPs of the paper: the base problem (one hidden layer of 20 sigmoid units) and the three
#: generalisation variants of its Figure 5 (40 units, two hidden layers, ReLU).
MLP_ARCHITECTURES: dict[str, tuple[tuple[int, ...], str]] = {
    "20-sigmoid": ((20,), "sigmoid"),
    "40-sigmoid": ((40,), "sigmoid"),
    "20-20-sigmoid": ((20, 20), "sigmoid"),
    "20-relu": ((20,), "relu"),
}
MNIST_TRAIN_EXAMPLES = 50_000
QUADRATIC_SPLITS = ("l2l",)


def quadratic_parts(split: str) -> dict[str, ProblemFamily]:
    """Train, validation and test quadratics of one distribution; the test part tunes on validation."""
    val = QuadraticTask(name="val")
    return {"train": QuadraticTask(name="train"), "val": val, "test": QuadraticTask(name="test", tuning=val)}


def mnist_parts(split: str, data_dir: Path | None, download: bool, progress: bool) -> dict[str, ProblemFamily]:
    """MNIST MLP problems: meta-training always on the base problem, testing on ``split``'s network.

    ``train`` is the base MLP (20 sigmoid units) on the first 50,000 training images and ``val`` the
    base MLP on the last 10,000 (where early stopping picks the optimizer's weights); ``test`` is
    ``split``'s MLP on the 10,000 test images, whose baselines are tuned on ``split``'s MLP on the last
    10,000 training images. A variant split therefore tests an optimizer trained and chosen on the base
    problem on a network it never saw, as the paper's generalisation experiments do, against baselines
    tuned for that network.
    """
    from metabench.data import mnist

    data = mnist.load(data_dir, download=download, progress=progress)
    images, labels = data.train.float_images(), data.train.labels
    cut = MNIST_TRAIN_EXAMPLES
    hidden, activation = MLP_ARCHITECTURES[split]
    base_hidden, base_activation = MLP_ARCHITECTURES["20-sigmoid"]
    tuning = MlpTask(images[cut:], labels[cut:], hidden, activation, name="val", data="mnist-train[50000:]")
    base_val = (
        tuning
        if (hidden, activation) == (base_hidden, base_activation)
        else MlpTask(
            images[cut:], labels[cut:], base_hidden, base_activation, name="val-base", data="mnist-train[50000:]"
        )
    )
    return {
        "train": MlpTask(
            images[:cut], labels[:cut], base_hidden, base_activation, name="train", data="mnist-train[:50000]"
        ),
        "val": base_val,
        "test": MlpTask(
            data.test.float_images(),
            data.test.labels,
            hidden,
            activation,
            name="test",
            tuning=tuning,
            data="mnist-test",
        ),
    }


def tuning_problems(family: ProblemFamily, count: int, seed: int) -> tuple[Problems, str]:
    """``count`` frozen problems of ``family`` for tuning baselines, and their digest."""
    frozen = family.freeze(EpisodeShape(1, 1, 1), count, seed, {"purpose": "tuning", "part": family.name})
    batch = next(frozen.batches(family, count))
    return batch.require(), frozen.digest
