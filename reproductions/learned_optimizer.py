"""Learning to learn by gradient descent by gradient descent (Andrychowicz et al., NeurIPS 2016).

The paper reports curves, not numbers: loss against optimisation step for its learned optimizer
(:class:`~metabench.reproductions.update_rules.CoordinateWiseLSTM`) and for SGD, NAG, RMSprop and
ADAM, each with a tuned learning rate. What a reproduction can check is the claim the curves make:
after the 100-step horizon, the learned optimizer's mean loss over held-out problems is below each
tuned baseline's. :func:`run_experiment` does the whole protocol:

1. meta-train the LSTM with truncated backpropagation (20-step segments of a 100-step horizon, the
   meta-loss the sum of the losses, Adam), on freshly sampled problems every iteration;
2. tune each baseline's learning rate on a grid, on *tuning* problems that are neither the
   meta-training nor the held-out ones (the lowest mean final loss wins; diverged runs lose);
3. run every optimizer on the same held-out problems (same initial parameters, same minibatches)
   and compare final losses problem by problem: a paired mean difference with its 95% interval;
   the claim holds against a baseline when the whole interval is below zero.

Tasks follow the released code (``problems.py`` of deepmind/learning-to-learn): quadratics
``f(theta) = ||W theta - y||^2`` with ``W``, ``y`` uniform on [0, 1) and ``theta_0 ~ N(0, 0.01^2)``;
and an MLP on MNIST (one hidden layer of 20 sigmoid units, cross-entropy, a minibatch of 128 drawn
with replacement every step, every weight and bias initialised ``N(0, 0.01^2)``). One difference is
deliberate: the released code averages the loss over its batch of 128 quadratics, which divides
every gradient by 128; here each problem is optimised on its own loss, as the paper defines it.
Problems run side by side as rows of one parameter tensor: the LSTM is coordinate-wise and the
baselines' updates are element-wise, so a batch of problems is exactly that many separate runs.

This module is runner-agnostic: plain functions and dataclasses that return JSON-ready summaries,
so the harness can drive it once its runner and result schema accept non-episode claims.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from metabench.reproductions.update_rules import CoordinateWiseLSTM, truncated_bptt
from metabench.stats import mean_interval, paired

LEARNED = "lstm"
BASELINES = ("sgd", "nag", "rmsprop", "adam")
LR_GRID: tuple[float, ...] = tuple(round(10.0**e, 10) for e in (-4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0))
"""Half-decade steps from 1e-4 to 1. A tuned rate on the grid's edge is reported (``tuned_at_edge``),
because the best rate may then lie outside the grid and the baseline be under-tuned."""

LossFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Problems:
    """A batch of optimisation problems: initial parameters ``[B, d]`` and a way to score them.

    ``make_loss()`` returns a fresh loss function; every call of one returns the per-problem losses
    ``[B]`` and, for stochastic tasks, moves on to the next minibatch. Two optimizers that each take
    a fresh loss function therefore see identical minibatches, step for step.
    """

    theta0: Tensor
    make_loss: Callable[[], LossFn]

    @property
    def count(self) -> int:
        return int(self.theta0.shape[0])


class Task(Protocol):
    name: str

    def sample(self, count: int, seed: int) -> Problems: ...


@dataclass(frozen=True)
class QuadraticTask:
    """Random ``dims``-dimensional quadratics ``||W theta - y||^2``."""

    dims: int = 10
    init_std: float = 0.01
    name: str = "quadratic"

    def sample(self, count: int, seed: int) -> Problems:
        generator = torch.Generator().manual_seed(seed)
        w = torch.rand(count, self.dims, self.dims, generator=generator)
        y = torch.rand(count, self.dims, generator=generator)
        theta0 = self.init_std * torch.randn(count, self.dims, generator=generator)

        def loss(theta: Tensor) -> Tensor:
            return ((torch.einsum("bij,bj->bi", w, theta) - y) ** 2).sum(-1)

        return Problems(theta0, lambda: loss)


@dataclass(frozen=True)
class MlpTask:
    """An MLP classifier on ``images [N, features]`` (floats) and ``labels [N]``, one network per problem."""

    images: Tensor
    labels: Tensor
    hidden: tuple[int, ...] = (20,)
    activation: str = "sigmoid"
    batch_size: int = 128
    init_std: float = 0.01
    classes: int = 10
    name: str = "mnist-mlp"

    @property
    def shapes(self) -> list[tuple[int, int]]:
        sizes = [int(self.images.shape[1]), *self.hidden, self.classes]
        return list(itertools.pairwise(sizes))

    @property
    def dims(self) -> int:
        return sum(a * b + b for a, b in self.shapes)

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

    def sample(self, count: int, seed: int) -> Problems:
        if self.activation not in ("sigmoid", "relu"):
            raise ValueError(f"activation {self.activation!r}: use sigmoid or relu")
        generator = torch.Generator().manual_seed(seed)
        theta0 = self.init_std * torch.randn(count, self.dims, generator=generator)
        batch_seed = int(torch.randint(0, 2**62, (1,), generator=generator))

        def make_loss() -> LossFn:
            batches = torch.Generator().manual_seed(batch_seed)

            def loss(theta: Tensor) -> Tensor:
                index = torch.randint(0, self.labels.shape[0], (count, self.batch_size), generator=batches)
                logits = self.logits(theta, self.images[index])
                return (
                    torch.nn.functional.cross_entropy(
                        logits.reshape(-1, self.classes), self.labels[index].reshape(-1), reduction="none"
                    )
                    .view(count, self.batch_size)
                    .mean(-1)
                )

            return loss

        return Problems(theta0, make_loss)


# --------------------------------------------------------------------------- optimizers


def _baseline(name: str, param: Tensor, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD([param], lr=lr)
    if name == "nag":
        return torch.optim.SGD([param], lr=lr, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return torch.optim.RMSprop([param], lr=lr)
    if name == "adam":
        return torch.optim.Adam([param], lr=lr)
    raise ValueError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")


def run_baseline(name: str, lr: float, problems: Problems, steps: int) -> Tensor:
    """Losses ``[steps + 1, B]``: before each of ``steps`` updates, and after the last."""
    theta = problems.theta0.clone().requires_grad_()
    optimizer = _baseline(name, theta, lr)
    loss_fn = problems.make_loss()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(theta)
        loss.sum().backward()
        optimizer.step()
        losses.append(loss.detach())
    with torch.no_grad():
        losses.append(loss_fn(theta))
    return torch.stack(losses)


def run_learned(rule: CoordinateWiseLSTM, problems: Problems, steps: int, unroll: int) -> Tensor:
    """Losses ``[steps + 1, B]`` of the learned optimizer, the same points as :func:`run_baseline`."""
    loss_fn = problems.make_loss()
    trajectory = truncated_bptt(rule, loss_fn, problems.theta0, steps, unroll, meta_step=None)
    with torch.no_grad():
        final = loss_fn(trajectory.theta)
    return torch.cat((trajectory.losses, final.unsqueeze(0)))


def _final_score(losses: Tensor) -> float:
    """Mean final loss, with a run that diverged anywhere counted as infinitely bad."""
    if not bool(torch.isfinite(losses).all()):
        return math.inf
    return float(losses[-1].mean())


def tune(
    name: str, problems: Problems, steps: int, grid: Sequence[float] = LR_GRID
) -> tuple[float, dict[float, float]]:
    """The grid learning rate with the lowest mean final loss, and every rate's score."""
    scores = {lr: _final_score(run_baseline(name, lr, problems, steps)) for lr in grid}
    best = min(scores, key=lambda lr: scores[lr])
    return best, scores


# --------------------------------------------------------------------------- meta-training


@dataclass(frozen=True)
class MetaTraining:
    """The learned optimizer's settings and how it is meta-trained.

    The defaults are the released code's for the quadratics (no preprocessing, output scale 1,
    batches of 128 problems). Its MNIST configuration differs, and a spec must say so: log-and-sign
    preprocessing with ``p = 5``, output scale 0.01, and one network per problem (its 128 is the
    minibatch size, :attr:`MlpTask.batch_size`).
    """

    hidden_size: int = 20
    num_layers: int = 2
    preprocess_p: float | None = None
    output_scale: float = 1.0
    horizon: int = 100
    unroll: int = 20
    meta_lr: float = 0.001
    iterations: int = 100
    problems_per_iteration: int = 128
    clip_grad_norm: float | None = None


def meta_train(
    task: Task, settings: MetaTraining, seed: int, on_iteration: Callable[[int, float], None] | None = None
) -> tuple[CoordinateWiseLSTM, list[float]]:
    """A meta-trained optimizer and the mean loss after the horizon at every iteration (its curve)."""
    torch.manual_seed(seed)
    rule = CoordinateWiseLSTM(settings.hidden_size, settings.num_layers, settings.preprocess_p, settings.output_scale)
    meta = torch.optim.Adam(rule.parameters(), lr=settings.meta_lr)

    def meta_step(meta_loss: Tensor) -> None:
        meta.zero_grad()
        if not bool(torch.isfinite(meta_loss)):
            return  # a segment that diverged teaches nothing; the next problems start afresh
        meta_loss.backward()
        if settings.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(rule.parameters(), settings.clip_grad_norm)
        meta.step()

    curve = []
    for iteration in range(settings.iterations):
        problems = task.sample(settings.problems_per_iteration, seed=_stream_seed(seed, "train", iteration))
        trajectory = truncated_bptt(
            rule, problems.make_loss(), problems.theta0, settings.horizon, settings.unroll, meta_step
        )
        curve.append(float(trajectory.losses[-1].mean()))
        if on_iteration is not None:
            on_iteration(iteration, curve[-1])
    return rule, curve


def _stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """Separate, reproducible seeds for meta-training, tuning and held-out problems."""
    offsets = {"train": 1_000_003, "tune": 2_000_003, "test": 3_000_017}
    return seed * 10_000_019 + offsets[stream] + index


# --------------------------------------------------------------------------- the claim


@dataclass
class Comparison:
    """Learned minus one tuned baseline, on the final losses of the same held-out problems."""

    baseline: str
    lr: float
    mean_difference: float
    half_width: float
    p_value: float
    holds: bool


@dataclass
class ExperimentResult:
    task: str
    steps: int
    problems: int
    final: dict[str, dict[str, float]]
    comparisons: list[Comparison]
    tuned_lr: dict[str, float]
    tuning_scores: dict[str, dict[str, float]]
    meta_curve: list[float]
    curves: dict[str, list[float]] = field(default_factory=dict)
    tuned_at_edge: list[str] = field(default_factory=list)

    @property
    def claim_holds(self) -> bool:
        """The paper's claim: below *every* tuned baseline, each by a whole 95% interval."""
        return all(c.holds for c in self.comparisons)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["claim_holds"] = self.claim_holds
        return out


def compare(final: dict[str, Tensor], tuned_lr: dict[str, float]) -> list[Comparison]:
    """Paired comparisons of the learned optimizer's final losses with each baseline's."""
    comparisons = []
    for name in tuned_lr:
        test = paired(final[LEARNED], final[name])
        holds = math.isfinite(test.mean_difference) and test.mean_difference + test.half_width < 0.0
        comparisons.append(Comparison(name, tuned_lr[name], test.mean_difference, test.half_width, test.p_value, holds))
    return comparisons


def run_experiment(
    task: Task,
    settings: MetaTraining,
    *,
    seed: int = 0,
    test_problems: int = 128,
    tune_problems: int = 64,
    baselines: Sequence[str] = BASELINES,
    grid: Sequence[float] = LR_GRID,
    rule: CoordinateWiseLSTM | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
) -> tuple[ExperimentResult, CoordinateWiseLSTM]:
    """Meta-train (unless ``rule`` is given), tune the baselines, evaluate all on held-out problems."""
    meta_curve: list[float] = []
    if rule is None:
        rule, meta_curve = meta_train(task, settings, seed, on_iteration)
    steps = settings.horizon
    tuning = task.sample(tune_problems, seed=_stream_seed(seed, "tune"))
    tuned_lr: dict[str, float] = {}
    scores: dict[str, dict[str, float]] = {}
    for name in baselines:
        tuned_lr[name], by_lr = tune(name, tuning, steps, grid)
        scores[name] = {f"{lr:g}": score for lr, score in by_lr.items()}
    held_out = task.sample(test_problems, seed=_stream_seed(seed, "test"))
    losses = {LEARNED: run_learned(rule, held_out, steps, settings.unroll)}
    for name in baselines:
        losses[name] = run_baseline(name, tuned_lr[name], held_out, steps)
    final = {name: curve[-1] for name, curve in losses.items()}
    summaries = {}
    for name, values in final.items():
        interval = mean_interval(values)
        summaries[name] = {"mean": interval.mean, "half_width": interval.half_width, "n": interval.n}
    result = ExperimentResult(
        task=task.name,
        steps=steps,
        problems=test_problems,
        final=summaries,
        comparisons=compare(final, tuned_lr),
        tuned_lr=tuned_lr,
        tuning_scores=scores,
        meta_curve=meta_curve,
        curves={name: curve.mean(-1).tolist() for name, curve in losses.items()},
        tuned_at_edge=[name for name, lr in tuned_lr.items() if lr in (min(grid), max(grid))],
    )
    return result, rule


def plot_curves(result: ExperimentResult, path: Path) -> Path:
    """A PNG of mean loss against step for every optimizer, on a log scale, like the paper's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for name, curve in result.curves.items():
        label = "LSTM (learned)" if name == LEARNED else f"{name.upper()} (lr {result.tuned_lr[name]:g})"
        axes.plot(range(len(curve)), curve, label=label, linewidth=2.0 if name == LEARNED else 1.2)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel(f"mean loss over {result.problems} held-out problems")
    axes.set_title(f"{result.task}: learned optimizer against tuned baselines")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
