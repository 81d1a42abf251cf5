"""Modular meta-learning with shrinkage (Chen, Friesen, Behbahani, Doucet, Budden, Hoffman & de Freitas,
NeurIPS 2020, arXiv 1909.05557): sigma-MAML and sigma-Reptile, each trained beside its plain baseline.

Model. Each module ``m`` (here every layer: each Linear, Conv2d and Norm of the network) has a
shrinkage variance: a task's parameters are ``theta_m ~ N(phi_m, sigma_m^2 I)``. Task adaptation is MAP
estimation of ``theta`` under that prior on the task's training (support) examples, run by
:func:`metabench.inner.adapt` with a :class:`~metabench.inner.Prior`: every inner step is a gradient
step on the task loss followed by the prior's exact proximal step, so ``sigma_m -> inf`` is the plain
base algorithm bit for bit and ``sigma_m -> 0`` keeps module ``m`` at ``phi_m``. The meta-parameters are
``phi`` (the network's weights) and ``s_m = log sigma_m^2`` (``log_variance``).

Meta-learning, ``base = "maml"`` (sigma-MAML). The meta-loss is the validation (query) loss of the
adapted parameters, the MAP plug-in approximation of the predictive likelihood. With ``sigma_grad =
"unrolled"`` both ``phi`` and ``s`` are differentiated through the unrolled adaptation (second order,
or first order with ``first_order``); with ``"implicit"`` ``phi`` is, and ``s`` follows the implicit
gradient below.

``base = "reptile"`` (sigma-Reptile). No derivative through the adaptation. ``phi_m`` follows the
gradient of the prior's log density at the adapted parameters, ``(theta_m - phi_m) / sigma_m^2``,
preconditioned by ``sigma_m^2 + tau`` (``tau`` = the adaptation's summed step size, ``inner_steps *
inner_lr``): for ``sigma_m -> inf`` this is Reptile's step ``theta_m - phi_m`` exactly, and for a
shrunk module (small ``sigma_m``) it is ``tau`` times the training-loss gradient, Reptile's scale,
instead of vanishing (the preconditioner is this reproduction's choice; the paper's scaling is not
confirmed). ``s`` follows the implicit gradient of the validation loss: at a MAP ``theta``
(``grad l_train + Lambda (theta - phi) = 0``, ``Lambda = diag(exp(-s))``) the implicit function theorem
gives ``d l_val / d s_m = exp(-s_m) < (H^-1 grad l_val)_m, theta_m - phi_m >`` with ``H = hess l_train +
Lambda``; ``H^-1 grad l_val`` is solved by ``cg_steps`` conjugate-gradient iterations (Hessian-vector
products on the support set), started from ``Lambda^-1 grad l_val``: ``cg_steps = 0`` keeps that start
(the loss curvature neglected next to the prior's, the cheapest first-order form). Its step on ``s`` is
the runner's learning rate times ``sigma_lr``.

Baseline. The reproduction also holds the plain base algorithm's network (``maml`` or ``reptile``),
initialised identically, adapted on the same mini-batches and augmentations, trained on the same
batches (the two losses are summed; their parameters are disjoint, so the runner's optimiser trains
them independently) and scored on the same frozen tasks through :meth:`predict_competitor`. A run is
therefore one paired comparison of the paper's claim.

Augmented Omniglot (``augment``): every inner-loop mini-batch of support images gets a random affine
transform (rotation 0-360 degrees, translation up to 20% of the side, scale 0.8-1.2; Flennerhag et al.'s
``RandomAffine``), drawn from the run's random state in training and from a fixed seed at test, so
both networks and every scoring of the same tasks see the same images. Queries are not augmented.

What was learned: :meth:`learned` returns each module's variance ``sigma_m^2`` (the runner stores it in
the result under ``learned`` and prints it): a large variance is a module that adapts per task, a
small one a module shared across tasks.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metabench.episodes import EpisodeBatch
from metabench.inner import Params, Prior, adapt, forward, meta_parameters
from metabench.reproduction import Reproduction, StepOutput, TaskInfo
from metabench.reproductions.gbml_nets import MLP, ConvNet
from metabench.reproductions.reptile import minibatch_indices

Base = Literal["maml", "reptile"]
EVAL_SEED = 0


@dataclass(frozen=True)
class ShrinkageHyperparameters:
    base: Base = "maml"
    backbone: Literal["mlp", "conv4-pool", "conv4-strided"] = "mlp"
    hidden: int = 64
    mlp_hidden: tuple[int, ...] = (40, 40)
    norm: Literal["batch", "none"] = "none"
    task: Literal["classification", "regression"] = "regression"
    inner_lr: float = 0.01
    inner_steps: int = 1
    eval_inner_steps: int = 10
    #: examples per inner step (0: the whole support set every step)
    inner_batch: int = 0
    eval_inner_batch: int = 0
    first_order: bool = False
    #: initial log sigma^2 of every module
    init_log_variance: float = 0.0
    sigma_grad: Literal["unrolled", "implicit"] = "unrolled"
    cg_steps: int = 5
    sigma_lr: float = 1.0
    augment: bool = False
    engine: Literal["auto", "batched", "loop"] = "auto"


def module_of(name: str) -> str:
    """A parameter's module: the layer that owns it (``layers.0.weight`` -> ``layers.0``)."""
    return name.rsplit(".", 1)[0]


def random_affine(images: Tensor, generator: torch.Generator | None) -> Tensor:
    """Each ``[N, C, H, W]`` image rotated (0-360 degrees), translated (up to 20% of the side) and scaled
    (0.8-1.2) at random, zero (no ink) outside; as torchvision's ``RandomAffine((0, 360), (0.2, 0.2),
    (0.8, 1.2))`` draws them."""
    n = images.shape[0]
    u = torch.rand(n, 4, generator=generator, device=images.device, dtype=images.dtype)
    angle = u[:, 0] * 2 * math.pi
    scale = 0.8 + 0.4 * u[:, 1]
    shift = (u[:, 2:] * 2 - 1) * 0.2 * 2  # a fraction of the side, in [-1, 1] grid units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # The grid maps each output pixel back to the input: the inverse of scale-rotate-then-translate.
    inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # [N, 2, 2]
    offset = -(inverse @ shift.unsqueeze(-1))
    theta = torch.cat([inverse, offset], dim=-1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


def build_network(hp: ShrinkageHyperparameters, task: TaskInfo) -> nn.Module:
    outputs = 1 if hp.task == "regression" else task.ways
    if hp.backbone == "mlp":
        return MLP(
            task.channels * task.image_size**2, tuple(hp.mlp_hidden), outputs, None if hp.norm == "none" else "batch"
        )
    if hp.norm == "none":
        raise ValueError("the conv-4 backbones always normalise: norm must be 'batch'")
    strided = hp.backbone == "conv4-strided"
    return ConvNet(task.channels, hp.hidden, outputs, task.image_size, strided=strided, head="flatten", norm="batch")


@dataclass(frozen=True)
class _InnerData:
    """What every inner step of a batch's tasks sees: inputs, targets and per-step indices (or all)."""

    x: Tensor
    y: Tensor
    batches: Tensor | None


class Shrinkage(Reproduction):
    Hyperparameters = ShrinkageHyperparameters
    needs_grad_at_test = True

    def __init__(self, hparams: ShrinkageHyperparameters, task: TaskInfo) -> None:
        if isinstance(hparams.mlp_hidden, list):  # TOML arrays arrive as lists
            hparams = ShrinkageHyperparameters(**{**hparams.__dict__, "mlp_hidden": tuple(hparams.mlp_hidden)})
        super().__init__(hparams, task)
        if hparams.base not in ("maml", "reptile"):
            raise ValueError(f"unknown base {hparams.base!r}: maml or reptile")
        if hparams.base == "reptile" and hparams.sigma_grad != "implicit":
            raise ValueError("sigma-Reptile has no unrolled adaptation to differentiate: use sigma_grad = 'implicit'")
        self.regression = hparams.task == "regression"
        self.net = build_network(hparams, task)
        self.baseline = copy.deepcopy(self.net)  # the plain base algorithm, from the same initialisation
        self.modules_of = {k: module_of(k) for k, _ in self.net.named_parameters()}
        self.log_variance = nn.ParameterDict(
            {
                self._key(m): nn.Parameter(torch.tensor(float(hparams.init_log_variance)))
                for m in dict.fromkeys(self.modules_of.values())
            }
        )

    @staticmethod
    def _key(module: str) -> str:
        return module.replace(".", "__")

    # ------------------------------------------------------------------ shared pieces

    def competitors(self) -> tuple[str, ...]:
        return (self.hparams.base,)

    def learned(self) -> dict[str, Any]:
        """Each module's learned shrinkage variance sigma_m^2 (and log sigma_m^2), in network order."""
        logs = {m: float(self.log_variance[self._key(m)].detach()) for m in self._module_names()}
        return {"shrinkage_variance": {m: math.exp(s) for m, s in logs.items()}, "log_variance": logs}

    def _module_names(self) -> list[str]:
        return list(dict.fromkeys(self.modules_of.values()))

    def _log_variances(self, detach: bool) -> dict[str, Tensor]:
        per_module = {m: self.log_variance[self._key(m)] for m in self._module_names()}
        return {k: (per_module[m].detach() if detach else per_module[m]) for k, m in self.modules_of.items()}

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs, targets) if self.regression else F.cross_entropy(outputs, targets)

    def score(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if self.regression:
            return (outputs - targets).pow(2).mean()
        return (outputs.argmax(-1) == targets).float().mean() * 100.0

    def _inner_data(self, batch: EpisodeBatch, steps: int, size: int, generator: torch.Generator | None) -> _InnerData:
        """The support examples each inner step sees: all of them, or mini-batches (augmented if asked)."""
        x, y = batch.support_x, batch.support_y
        if size <= 0 and not self.hparams.augment:
            return _InnerData(x, y, None)
        tasks, n = x.shape[:2]
        size = size if size > 0 else n
        index = minibatch_indices(tasks, n, size, steps, x.device, generator)  # [B, steps, size]
        if not self.hparams.augment:
            return _InnerData(x, y, index)
        flat = index.flatten(1)
        picked = x[torch.arange(tasks, device=x.device).unsqueeze(1), flat]  # [B, steps * size, ...]
        images = random_affine(picked.flatten(0, 1), generator).view_as(picked)
        targets = y.gather(1, flat)
        order = torch.arange(steps * size, device=x.device).view(1, steps, size).expand(tasks, -1, -1)
        return _InnerData(images, targets, order)

    def _adapt(
        self, net: nn.Module, data: _InnerData, steps: int, *, shrink: bool, differentiate: bool
    ) -> tuple[Params, Params]:
        """Each task's adapted parameters, and the centre they started from (the meta-parameters)."""
        hp = self.hparams
        params = meta_parameters(net)
        if not differentiate:
            params = {k: p.detach() for k, p in params.items()}
        prior = None
        if shrink:
            unrolled_sigma = differentiate and hp.sigma_grad == "unrolled"
            prior = Prior(params, self._log_variances(detach=not unrolled_sigma))
        adapted, _ = adapt(
            net,
            params,
            data.x,
            data.y,
            self.loss,
            steps=steps,
            lr=hp.inner_lr,
            first_order=hp.first_order or not differentiate,
            path=hp.engine,
            batches=data.batches,
            prior=prior,
        )
        return adapted, params

    # ------------------------------------------------------------------ meta-training

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        hp = self.hparams
        data = self._inner_data(batch, hp.inner_steps, hp.inner_batch, None)
        if hp.base == "maml":
            loss_s, score_s = self._maml_loss(self.net, batch, data, shrink=True)
            loss_b, _ = self._maml_loss(self.baseline, batch, data, shrink=False)
        else:
            loss_s, score_s = self._reptile_loss(self.net, batch, data, shrink=True)
            loss_b, _ = self._reptile_loss(self.baseline, batch, data, shrink=False)
        return StepOutput(loss_s + loss_b, score_s)

    def _maml_loss(
        self, net: nn.Module, batch: EpisodeBatch, data: _InnerData, *, shrink: bool
    ) -> tuple[Tensor, Tensor]:
        hp = self.hparams
        adapted, _ = self._adapt(net, data, hp.inner_steps, shrink=shrink, differentiate=True)
        outputs = forward(net, adapted, batch.query_x, hp.engine)
        loss = self.loss(outputs.flatten(0, 1), batch.query_y.flatten(0, 1))
        if shrink and hp.sigma_grad == "implicit":
            loss = loss + self._sigma_surrogate(net, batch, {k: a.detach() for k, a in adapted.items()})
        return loss, self.score(outputs.detach().flatten(0, 1), batch.query_y.flatten(0, 1))

    def _reptile_loss(
        self, net: nn.Module, batch: EpisodeBatch, data: _InnerData, *, shrink: bool
    ) -> tuple[Tensor, Tensor]:
        hp = self.hparams
        with torch.enable_grad():
            adapted, _ = self._adapt(net, data, hp.inner_steps, shrink=shrink, differentiate=False)
        adapted = {k: a.detach() for k, a in adapted.items()}
        params = meta_parameters(net)
        tau = hp.inner_steps * hp.inner_lr
        log_var = self._log_variances(detach=True)
        terms = []
        for k, p in params.items():
            # 0.5 c ||phi - mean(theta)||^2: SGD at rate lr moves phi by lr * c * (mean(theta) - phi),
            # Reptile's step when c = 1 (the plain baseline, or an infinite variance).
            scale = 1.0
            if shrink:
                variance = torch.exp(log_var[k])
                scale = (variance + tau) / variance
            terms.append(0.5 * (scale * (p - adapted[k].mean(0)).pow(2)).sum())
        loss = torch.stack(terms).sum()
        if shrink:
            loss = loss + self._sigma_surrogate(net, batch, adapted)
        with torch.no_grad():
            outputs = forward(net, adapted, batch.query_x, hp.engine)
        return loss, self.score(outputs.flatten(0, 1), batch.query_y.flatten(0, 1))

    def _sigma_surrogate(self, net: nn.Module, batch: EpisodeBatch, adapted: Params) -> Tensor:
        """``sigma_lr * sum_m s_m * stopgrad(d l_val / d s_m)``: its gradient is the implicit one, scaled."""
        grads = self.implicit_sigma_gradient(net, batch, adapted)
        return self.hparams.sigma_lr * sum(
            (self.log_variance[self._key(m)] * g for m, g in grads.items()), torch.zeros(())
        )

    def implicit_sigma_gradient(self, net: nn.Module, batch: EpisodeBatch, adapted: Params) -> dict[str, Tensor]:
        """The mean over tasks of ``d l_val / d s_m`` by the implicit function theorem (see the module notes)."""
        centre = {k: p.detach() for k, p in meta_parameters(net).items()}
        precision = {k: torch.exp(-s) for k, s in self._log_variances(detach=True).items()}
        total = {m: torch.zeros((), device=batch.query_x.device) for m in self._module_names()}
        with torch.enable_grad():
            for i in range(batch.size):
                theta = {k: a[i].detach() for k, a in adapted.items()}
                solution = self._solve(net, theta, precision, batch, i)
                for k, x in solution.items():
                    m = self.modules_of[k]
                    total[m] = total[m] + precision[k] * (x * (theta[k] - centre[k])).sum()
        return {m: (t / batch.size).detach() for m, t in total.items()}

    def _solve(self, net: nn.Module, theta: Params, precision: Params, batch: EpisodeBatch, i: int) -> Params:
        """``H^-1 grad l_val`` for task ``i`` at its adapted ``theta``: ``cg_steps`` of conjugate gradient
        from ``Lambda^-1 grad l_val`` (which ``cg_steps = 0`` returns as it is)."""
        buffers = dict(net.named_buffers())
        theta = {k: t.requires_grad_() for k, t in theta.items()}
        names, leaves = list(theta), list(theta.values())

        def task_loss(x: Tensor, y: Tensor) -> Tensor:
            return self.loss(functional_call(net, (theta, buffers), (x,)), y)

        g_val = dict(
            zip(names, torch.autograd.grad(task_loss(batch.query_x[i], batch.query_y[i]), leaves), strict=True)
        )
        start = {k: g_val[k] / precision[k] for k in names}
        if self.hparams.cg_steps <= 0:
            return start
        g_train = torch.autograd.grad(task_loss(batch.support_x[i], batch.support_y[i]), leaves, create_graph=True)

        def hvp(v: Params) -> Params:
            hv = torch.autograd.grad(g_train, leaves, grad_outputs=[v[k] for k in names], retain_graph=True)
            return {k: h + precision[k] * v[k] for k, h in zip(names, hv, strict=True)}

        return {k: x.detach() for k, x in _conjugate_gradient(hvp, g_val, start, self.hparams.cg_steps).items()}

    # ------------------------------------------------------------------ prediction

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self.predict_after(batch, self.hparams.eval_inner_steps)

    def predict_competitor(self, name: str, batch: EpisodeBatch) -> Tensor:
        if name != self.hparams.base:
            raise ValueError(f"this reproduction predicts as {self.hparams.base!r}, not {name!r}")
        return self.predict_after(batch, self.hparams.eval_inner_steps, shrink=False)

    def predict_after(self, batch: EpisodeBatch, steps: int, shrink: bool = True) -> Tensor:
        """Query predictions after ``steps`` inner steps (sigma-model, or the plain baseline)."""
        hp = self.hparams
        # Mini-batch order and augmentation at test come from a fixed seed: the same frozen tasks give the
        # same numbers every time they are scored, and both networks see the same images.
        generator = torch.Generator(device=batch.support_x.device).manual_seed(EVAL_SEED)
        data = self._inner_data(batch, steps, hp.eval_inner_batch, generator)
        net = self.net if shrink else self.baseline
        with torch.enable_grad():
            adapted, _ = self._adapt(net, data, steps, shrink=shrink, differentiate=False)
        with torch.no_grad():
            return forward(net, {k: a.detach() for k, a in adapted.items()}, batch.query_x, hp.engine)

    def figures(self, batch: EpisodeBatch, result_path: Path) -> list[Path]:
        """Regression: the sigma-model's fits after 0, 1 and 10 steps, as MAML's figure draws them."""
        if not self.regression:
            return []
        from metabench.reproductions.plots import plot_sine_fits

        return [plot_sine_fits(self, batch, result_path.with_suffix(".png"), steps=(0, 1, 10))]


def _conjugate_gradient(hvp: Any, b: Params, x: Params, steps: int) -> Params:
    """``steps`` iterations of conjugate gradient on ``H x = b`` from ``x``; stops early on non-positive
    curvature (the loss Hessian need not be positive definite) or a vanishing residual."""

    def dot(u: Params, v: Params) -> Tensor:
        return sum(((u[k] * v[k]).sum() for k in u), torch.zeros((), dtype=next(iter(u.values())).dtype))

    hx = hvp(x)
    r = {k: b[k] - hx[k] for k in b}
    p = dict(r)
    rr = dot(r, r)
    for _ in range(steps):
        if float(rr) < 1e-20:
            break
        hp = hvp(p)
        curvature = dot(p, hp)
        if float(curvature) <= 0:
            break
        alpha = rr / curvature
        x = {k: x[k] + alpha * p[k] for k in x}
        r = {k: r[k] - alpha * hp[k] for k in r}
        new_rr = dot(r, r)
        p = {k: r[k] + (new_rr / rr) * p[k] for k in p}
        rr = new_rr
    return x
