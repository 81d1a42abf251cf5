"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017), and its first-order approximation.

Each task adapts the shared initialisation with ``inner_steps`` gradient steps of size ``inner_lr`` on
its support set; the meta-loss is the query loss of the adapted parameters, differentiated through the
adaptation (second order) or with the inner gradients treated as constants (``first_order``). At test
time a task takes ``eval_inner_steps`` steps (MAML trains Omniglot with 1 step and tests with 3).
All inner loops run on :mod:`metabench.inner`, on the path ``engine`` names.

Batch norm follows ``norm``: ``batch`` normalises with the statistics of whatever batch the network
sees, at test time too (MAML's TensorFlow code: its numbers are transductive); ``running`` keeps
running statistics of the training queries and uses them at test.

First-order MAML (issue 16's check): ``first_order`` changes one thing, the inner gradients are
constants (the loop path takes them without ``create_graph``; the batched path detaches them), so the
meta-gradient is the query loss's gradient at the adapted parameters. Batch norm's parameters are
adapted and meta-learned alike on both, its statistics are the batch's on both, the test always adapts
first-order (``first_order or not train``) for both, and the ``-fo`` benchmarks' profiles equal the
second-order ones but for ``first_order`` (``tests/test_gradient_methods.py`` checks each). Defects
found: none. The quick gap (87.9 vs 91.6 at 8000 episodes) is read as the first-order method's
slower start (its validation curve trails by 11 points at 2000 episodes and by 3.6 at 8000) until a
longer run decides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.episodes import EpisodeBatch
from metabench.inner import (
    Params,
    adapt,
    call,
    collect_running_stats,
    forward,
    meta_parameters,
    resolve_path,
    task_by_task,
)
from metabench.reproduction import Reproduction, StepOutput, TaskInfo
from metabench.reproductions.gbml_nets import MLP, ConvNet

Backbone = Literal["conv4-strided", "conv4-pool", "mlp"]


@dataclass(frozen=True)
class MAMLHyperparameters:
    backbone: Backbone = "conv4-strided"
    hidden: int = 64
    mlp_hidden: tuple[int, ...] = (256, 128, 64, 64)
    norm: Literal["batch", "running", "none"] = "batch"
    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_inner_steps: int = 3
    first_order: bool = False
    engine: Literal["auto", "batched", "loop"] = "auto"
    task: Literal["classification", "regression"] = "classification"
    #: ``fixed``: inner_lr for every step (the paper); ``per-step`` / ``per-parameter``: learnable rates
    #: initialised to inner_lr, one per training step, or one per step and weight (Meta-SGD style)
    inner_lr_mode: Literal["fixed", "per-step", "per-parameter"] = "fixed"


def build_network(hp: MAMLHyperparameters, task: TaskInfo, outputs: int) -> nn.Module:
    """The network a spec names, with :class:`~metabench.inner.Norm` wherever it normalises."""
    if hp.backbone == "mlp":
        norm = None if hp.norm == "none" else hp.norm
        return MLP(task.channels * task.image_size**2, tuple(hp.mlp_hidden), outputs, norm)
    if hp.norm == "none":
        raise ValueError("the conv-4 backbones always normalise: norm must be 'batch' or 'running'")
    strided = hp.backbone == "conv4-strided"
    return ConvNet(
        task.channels,
        hp.hidden,
        outputs,
        task.image_size,
        strided=strided,
        head="mean" if strided else "flatten",
        norm=hp.norm,
    )


class MAML(Reproduction):
    Hyperparameters = MAMLHyperparameters
    needs_grad_at_test = True

    def __init__(self, hparams: MAMLHyperparameters, task: TaskInfo) -> None:
        if isinstance(hparams.mlp_hidden, list):  # TOML arrays arrive as lists
            hparams = MAMLHyperparameters(**{**hparams.__dict__, "mlp_hidden": tuple(hparams.mlp_hidden)})
        super().__init__(hparams, task)
        if hparams.backbone not in ("conv4-strided", "conv4-pool", "mlp"):
            raise ValueError(f"unknown backbone {hparams.backbone!r}")
        self.regression = hparams.task == "regression"
        self.net = build_network(hparams, task, 1 if self.regression else task.ways)
        self.rates = nn.ParameterList()
        if hparams.inner_lr_mode not in ("fixed", "per-step", "per-parameter"):
            raise ValueError(f"unknown inner_lr_mode {hparams.inner_lr_mode!r}")
        if hparams.inner_lr_mode != "fixed":
            for _ in range(hparams.inner_steps):
                for _, p in self.net.named_parameters():
                    shape = p.shape if hparams.inner_lr_mode == "per-parameter" else ()
                    self.rates.append(nn.Parameter(torch.full(shape, hparams.inner_lr)))

    def step_rates(self, steps: int, train: bool) -> float | list[dict[str, Tensor]]:
        """The inner learning rate(s); learned rates beyond the trained steps repeat the last step's."""
        if self.hparams.inner_lr_mode == "fixed":
            return self.hparams.inner_lr
        names = [k for k, _ in self.net.named_parameters()]
        per_step = [
            dict(zip(names, list(self.rates)[i * len(names) : (i + 1) * len(names)], strict=True))
            for i in range(self.hparams.inner_steps)
        ]
        chosen = [per_step[min(i, len(per_step) - 1)] for i in range(steps)]
        return chosen if train else [{k: r.detach() for k, r in step.items()} for step in chosen]

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """One task's loss: cross-entropy over the ways, or the mean squared error."""
        if self.regression:
            return F.mse_loss(outputs, targets)
        return F.cross_entropy(outputs, targets)

    def score(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if self.regression:
            return (outputs - targets).pow(2).mean()
        return (outputs.argmax(-1) == targets).float().mean() * 100.0

    def adapted(self, batch: EpisodeBatch, steps: int, *, train: bool, task: int | None = None) -> Params:
        """Every task's adapted parameters (``[B, ...]``), or with ``task`` that one task's alone, adapted
        on the per-task loop and without the task axis."""
        hp = self.hparams
        params = meta_parameters(self.net)
        if not train:
            params = {k: p.detach() for k, p in params.items()}
        whole = task is None
        adapted, _ = adapt(
            self.net,
            params,
            batch.support_x if whole else batch.support_x[task],
            batch.support_y if whole else batch.support_y[task],
            self.loss,
            steps=steps,
            lr=self.step_rates(steps, train),
            first_order=hp.first_order or not train,
            path=hp.engine if whole else "loop",
            task_axis=whole,
        )
        return adapted

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        """The query loss after adaptation; on the loop path each task's graph is freed as it is done."""
        hp = self.hparams
        if resolve_path(hp.engine, batch.query_x.device) == "loop":
            seen: list[Tensor] = []

            def task_loss(i: int) -> Tensor:
                out = call(self.net, self.adapted(batch, hp.inner_steps, train=True, task=i), None, batch.query_x[i])
                seen.append(out.detach())
                return self.loss(out, batch.query_y[i])

            loss = task_by_task(list(self.parameters()), batch.size, task_loss)
            outputs = torch.stack(seen)
        else:
            outputs = forward(self.net, self.adapted(batch, hp.inner_steps, train=True), batch.query_x, hp.engine)
            loss = self.loss(outputs.flatten(0, 1), batch.query_y.flatten(0, 1))
        if hp.norm == "running":
            collect_running_stats(self.net, batch.query_x.flatten(0, 1))
        return StepOutput(loss, self.score(outputs.detach().flatten(0, 1), batch.query_y.flatten(0, 1)))

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self.predict_after(batch, self.hparams.eval_inner_steps)

    def predict_after(self, batch: EpisodeBatch, steps: int) -> Tensor:
        """Query predictions after ``steps`` inner steps on each task's support set."""
        with torch.enable_grad():
            adapted = self.adapted(batch, steps, train=False)
        with torch.no_grad():
            return forward(self.net, {k: p.detach() for k, p in adapted.items()}, batch.query_x, self.hparams.engine)

    def figures(self, batch: EpisodeBatch, result_path: Path) -> list[Path]:
        """For regression: the first tasks' fits after 0, 1 and 10 steps against the true sine curve."""
        if not self.regression:
            return []
        from metabench.reproductions.plots import plot_sine_fits

        return [plot_sine_fits(self, batch, result_path.with_suffix(".png"), steps=(0, 1, 10))]
