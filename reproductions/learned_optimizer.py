"""Learning to learn by gradient descent by gradient descent (Andrychowicz et al., NeurIPS 2016).

The paper reports curves, not numbers: loss against optimisation step for its learned optimizer
(:class:`~metabench.reproductions.update_rules.CoordinateWiseLSTM`) and for SGD, NAG, RMSprop and
ADAM, each with a tuned learning rate. What a reproduction can check is the claim the curves make:
after the 100-step horizon, the learned optimizer's mean loss over held-out problems is below each
tuned baseline's. The runner does that with this module's :class:`LearnedOptimizer`:

1. meta-training: each sampled batch of problems is optimised for ``horizon`` steps by the LSTM, in
   ``horizon / unroll`` segments (the profile's ``steps_per_batch``); each segment's meta-loss is the
   sum of its steps' mean losses, and the runner's Adam steps on it (truncated backpropagation). The
   runner says where a batch's trajectory starts (:meth:`LearnedOptimizer.start_batch`, with the number
   of steps it will take on it); the reproduction carries the problems' parameters and the LSTM state
   from one segment to the next;
2. prediction (metric ``loss``): a held-out problem's loss after ``horizon`` learned steps;
3. competitors: SGD, NAG (momentum 0.9), RMSprop and Adam, each at the rate of ``lr_grid`` with the
   lowest mean final loss on the test part's *tuning* problems (frozen validation problems; see
   :mod:`metabench.data.problems`), never on the test problems. The runner scores each on the same
   held-out problems (same starting points, same minibatches) and makes the paired comparisons.

Problems run side by side as rows of one parameter tensor: the LSTM is coordinate-wise and the
baselines' updates are element-wise, so a batch of problems is exactly that many separate runs. One
difference from the released code is deliberate: it averages the loss over its batch of 128
quadratics, which divides every gradient by 128; here each problem is optimised on its own loss, as
the paper defines it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metabench.data.problems import MlpTask, ProblemBatch, Problems, QuadraticTask, tuning_problems
from metabench.episodes import EpisodeBatch
from metabench.errors import MetabenchError
from metabench.reproduction import Reproduction, StepOutput, TaskInfo
from metabench.reproductions.update_rules import CoordinateWiseLSTM, LSTMState, detach_state, unroll

__all__ = ["LearnedOptimizer", "MlpTask", "Problems", "QuadraticTask", "run_baseline", "run_learned", "tune"]

LEARNED = "lstm"
BASELINES = ("sgd", "nag", "rmsprop", "adam")
LR_GRID: tuple[float, ...] = tuple(round(10.0**e, 10) for e in (-4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0))
"""Half-decade steps from 1e-4 to 1. A tuned rate at either end of the grid shows in the run's
``RESULT.tuning.csv`` (every rate's score, the chosen one marked): the best rate may then lie outside
the grid and the baseline be under-tuned, as SGD's is on the 20-unit sigmoid MNIST network."""


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


def run_learned(rule: CoordinateWiseLSTM, problems: Problems, steps: int) -> Tensor:
    """Losses ``[steps + 1, B]`` of the learned optimizer, the same points as :func:`run_baseline`.

    Evaluation only: the rule runs without a graph (no meta-gradient is needed), which keeps the
    memory of a 16,000-coordinate MLP per problem at one step's worth.
    """
    loss_fn = problems.make_loss()
    theta = problems.theta0.detach()
    state: LSTMState = rule.initial_state(theta.reshape(-1))
    losses = []
    for _ in range(steps):
        theta = theta.detach().requires_grad_()
        loss = loss_fn(theta)
        (grad,) = torch.autograd.grad(loss.sum(), theta)
        with torch.no_grad():
            flat, state = rule.step(theta.detach().reshape(-1), grad.reshape(-1), loss.detach(), state)
        theta = flat.view(theta.shape)
        losses.append(loss.detach())
    with torch.no_grad():
        losses.append(loss_fn(theta))
    return torch.stack(losses)


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


# --------------------------------------------------------------------------- the reproduction


@dataclass(frozen=True)
class LearnedOptimizerHyperparameters:
    """The optimizer, how it is unrolled, and how its competitors are tuned.

    The defaults are the released code's quadratic settings (raw gradients, output scale 1); its
    MNIST settings, which a spec states, are log-and-sign preprocessing with ``p = 5`` and output
    scale 0.01.
    """

    hidden_size: int = 20
    num_layers: int = 2
    preprocess: bool = False
    preprocess_p: float = 5.0
    output_scale: float = 1.0
    horizon: int = 100
    unroll: int = 20
    baselines: tuple[str, ...] = BASELINES
    lr_grid: tuple[float, ...] = LR_GRID
    tune_problems: int = 128
    tune_seed: int = 0


@dataclass
class _Optimizee:
    """The problems of the batch being meta-trained on, where their optimisation stands."""

    loss: Any
    theta: Tensor
    state: LSTMState | None
    segment: int = 0


class LearnedOptimizer(Reproduction):
    """Andrychowicz et al.'s coordinate-wise LSTM optimizer, with tuned hand-written competitors."""

    Hyperparameters = LearnedOptimizerHyperparameters
    needs_grad_at_test = True

    def __init__(self, hparams: LearnedOptimizerHyperparameters, task: TaskInfo) -> None:
        hparams = LearnedOptimizerHyperparameters(
            **{**hparams.__dict__, "baselines": tuple(hparams.baselines), "lr_grid": tuple(hparams.lr_grid)}
        )
        super().__init__(hparams, task)
        unknown = [name for name in hparams.baselines if name not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline {unknown[0]!r} (known: {', '.join(BASELINES)})")
        if hparams.horizon % hparams.unroll:
            raise ValueError(f"horizon {hparams.horizon} is not a multiple of unroll {hparams.unroll}")
        self.rule = CoordinateWiseLSTM(
            hparams.hidden_size,
            hparams.num_layers,
            hparams.preprocess_p if hparams.preprocess else None,
            hparams.output_scale,
        )
        self.segments = hparams.horizon // hparams.unroll
        self._optimizee: _Optimizee | None = None
        #: loss curves already run at evaluation with the rule's present weights, by optimizer, rate and
        #: problems; emptied by :meth:`weights_changed`
        self._curves: dict[tuple[str, float, str], Tensor] = {}
        #: filled when the competitors are first asked for: rates, grid scores, tuning problems' digest
        self.tuning: dict[str, Any] = {}

    # ---------------------------------------------------------------- meta-training

    def start_batch(self, batch: EpisodeBatch, steps: int) -> None:
        """Start the batch's problems at their initial parameters, with a fresh LSTM state.

        ``steps``, the runner's optimiser steps on the batch (the profile's ``steps_per_batch``), must
        be the trajectory's ``horizon / unroll`` segments.
        """
        if steps != self.segments:
            raise MetabenchError(
                f"the runner takes {steps} steps on each batch, but a batch's horizon is "
                f"horizon / unroll = {self.segments} unroll segments",
                f"set the profile's steps_per_batch to {self.segments}",
            )
        problems = _problems(batch)
        self._optimizee = _Optimizee(problems.make_loss(), problems.theta0.detach(), None)

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        """The next truncated-backpropagation segment (``unroll`` steps) of the batch's optimisation.

        ``batch`` is the one :meth:`start_batch` started, whose problems it read; the first call after it
        runs the problems from their initial parameters and each further call continues where the last
        stopped.
        """
        run = self._optimizee
        if run is None or run.segment == self.segments:
            done = "no batch was started" if run is None else f"the batch's {self.segments} segments are done"
            raise MetabenchError(
                f"meta_loss has no segment to run: {done}",
                "call start_batch(batch, steps) on each new batch first, as the runner does",
            )
        theta = run.theta.detach().requires_grad_()
        state = self.rule.initial_state(theta.reshape(-1)) if run.state is None else run.state
        out = unroll(self.rule, run.loss, theta, state, self.hparams.unroll)
        run.theta, run.state, run.segment = out.theta.detach(), detach_state(out.state), run.segment + 1
        per_step = out.losses.reshape(out.losses.shape[0], -1).mean(-1)
        return StepOutput(per_step.sum(), per_step[-1].detach())

    def weights_changed(self) -> None:
        """The rule's weights moved: every cached curve is of the old ones."""
        self._curves.clear()

    # ---------------------------------------------------------------- evaluation

    def curve(self, name: str, lr: float, problems: Problems) -> Tensor:
        """Losses ``[horizon + 1, B]`` of optimizer ``name`` (the LSTM, or a baseline at ``lr``) on ``problems``.

        Each is run once per set of the rule's weights (:meth:`weights_changed` forgets them): the figures
        redraw the first test batch, which scoring has just run (for 32 MNIST MLPs, 20 s of the LSTM).
        """
        key = (name, lr, _fingerprint(problems))
        if key not in self._curves:
            if name == LEARNED:
                self._curves[key] = run_learned(self.rule, problems, self.hparams.horizon)
            else:
                self._curves[key] = run_baseline(name, lr, problems, self.hparams.horizon)
        return self._curves[key]

    def predict(self, batch: EpisodeBatch) -> Tensor:
        """Each problem's loss after ``horizon`` steps of the learned optimizer, ``[B]``."""
        return self.curve(LEARNED, 0.0, _problems(batch))[-1]

    def competitors(self) -> tuple[str, ...]:
        return tuple(self.hparams.baselines)

    def predict_competitor(self, name: str, batch: EpisodeBatch) -> Tensor:
        """Each problem's loss after ``horizon`` steps of a baseline at its tuned learning rate, ``[B]``."""
        if name not in self.hparams.baselines:
            raise NotImplementedError(f"no competitor {name!r} (known: {', '.join(self.hparams.baselines)})")
        return self.curve(name, self.tuned_lr(name, batch), _problems(batch))[-1]

    def tuned_lr(self, name: str, batch: EpisodeBatch) -> float:
        """``name``'s rate, tuned once per run on frozen problems of the part that ``batch`` tunes on."""
        if not self.tuning:
            family = getattr(batch, "tuning", None)
            if family is None:
                raise MetabenchError(
                    "these problems name no tuning part, so the baselines' rates cannot be tuned",
                    "a problem family's test part tunes on its validation part (metabench.data.problems)",
                )
            hp = self.hparams
            problems, digest = tuning_problems(family, hp.tune_problems, hp.tune_seed)
            rates, scores = {}, {}
            for baseline in hp.baselines:
                rates[baseline], by_lr = tune(baseline, problems, hp.horizon, hp.lr_grid)
                scores[baseline] = {f"{lr:g}": score for lr, score in by_lr.items()}
            self.tuning = {
                "part": family.name,
                "problems": hp.tune_problems,
                "seed": hp.tune_seed,
                "digest": digest,
                "grid": list(hp.lr_grid),
                "tuned_lr": rates,
                "scores": scores,
            }
        return float(self.tuning["tuned_lr"][name])

    def figures(self, batch: EpisodeBatch, result_path: Path) -> list[Path]:
        """Mean loss against step for every optimizer on the first test batch (PNG and CSV), and the tuning (CSV).

        The tables are CSV, not JSON, so that nothing but results is a ``.json`` in a results folder.
        """
        problems = _problems(batch)
        curves = {LEARNED: self.curve(LEARNED, 0.0, problems)}
        for name in self.hparams.baselines:
            curves[name] = self.curve(name, self.tuned_lr(name, batch), problems)
        means = {name: [float(v) for v in losses.mean(-1)] for name, losses in curves.items()}
        title = f"{result_path.stem.split('__')[0]}: learned optimizer against tuned baselines"
        png = plot_curves(means, self.tuning["tuned_lr"], problems.count, title, result_path.with_suffix(".png"))
        by_step = result_path.with_name(result_path.stem + ".curves.csv")
        rows = [",".join(["step", *means])]
        rows += [
            ",".join([str(step), *(f"{means[n][step]:.6g}" for n in means)]) for step in range(len(means[LEARNED]))
        ]
        by_step.write_text("\n".join(rows) + "\n")
        tuning = result_path.with_name(result_path.stem + ".tuning.csv")
        t = self.tuning
        rows = ["optimizer,lr,mean_final_loss_on_tuning_problems,chosen,tuning_part,tuning_problems,tuning_digest"]
        for name, scores in t["scores"].items():
            for lr, score in scores.items():
                chosen = float(lr) == t["tuned_lr"][name]
                rows.append(f"{name},{lr},{score:.6g},{chosen},{t['part']},{t['problems']},{t['digest']}")
        tuning.write_text("\n".join(rows) + "\n")
        return [png, by_step, tuning]


def _fingerprint(problems: Problems) -> str:
    """Which problems these are: their starting points and their first losses (the latter tell apart
    problems of two parts drawn from the same seed, which start alike but score different data)."""
    with torch.no_grad():
        first = problems.make_loss()(problems.theta0)
    digest = hashlib.sha256()
    for tensor in (problems.theta0, first):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _problems(batch: EpisodeBatch) -> Problems:
    if not isinstance(batch, ProblemBatch):
        raise MetabenchError(
            "the learned optimizer runs on optimisation problems, not episodes",
            "use a problem dataset (quadratic, mnist-mlp) in the benchmark",
        )
    return batch.require()


def plot_curves(
    curves: Mapping[str, Sequence[float]], tuned_lr: dict[str, float], problems: int, title: str, path: Path
) -> Path:
    """A PNG of mean loss against step for every optimizer, on a log scale, like the paper's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for name, curve in curves.items():
        label = "LSTM (learned)" if name == LEARNED else f"{name.upper()} (lr {tuned_lr[name]:g})"
        values = [v if math.isfinite(v) else float("nan") for v in curve]
        axes.plot(range(len(values)), values, label=label, linewidth=2.0 if name == LEARNED else 1.2)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel(f"mean loss over {problems} held-out problems")
    axes.set_title(title, fontsize=9)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
