"""The inner-loop engine every gradient-based meta-learner uses (MAML, first-order MAML, Reptile).

``adapt`` takes a model's parameters and a meta-batch of tasks (``[B, n, ...]`` support inputs and
targets) and returns each task's adapted parameters, stacked along a leading task axis. Two paths
compute the same thing:

``batched``  one ``torch.func.vmap`` over the tasks of a per-task loop whose gradients come from
             ``torch.func.grad``; the outer ``.backward()`` differentiates through it (second order)
             unless ``first_order`` detaches the inner gradients. On a GPU this removes the per-task
             launch overhead that dominates small models.
``loop``     a plain Python loop over tasks with ``torch.autograd.grad(create_graph=...)``: the
             reference the tests prove ``batched`` equal to, and the path with the least memory
             (:func:`task_by_task` frees each task's graph as a hand-written loop does).

``auto`` picks ``batched`` on CUDA and ``loop`` elsewhere: on a CPU the loop runs at learn2learn's
speed with its memory, while ``batched`` is faster but holds the whole meta-batch's graph (the README's
speed table).

Inner optimisers: plain gradient descent with one learning rate per step, or per step and per
parameter (tensors, possibly learnable); or Adam (Reptile's inner optimiser, ``beta1 = 0`` in its
paper) whose second-moment state is passed in and returned per task. ``batches`` optionally names
which support examples each step sees (Reptile's mini-batches); by default every step sees them all.

Priors: ``prior`` (a :class:`Prior`, a Gaussian ``N(centre, exp(log_variance))`` on each task's
parameters) turns adaptation into MAP estimation (Chen et al.'s shrinkage, iMAML's proximal term):
every step is the optimiser's step on the task loss followed by the exact proximal step of the prior's
negative log density ``||theta - centre||^2 / (2 variance)`` in the step's own metric. The proximal
form (rather than adding the penalty's gradient to the loss's) is stable for any variance and has the
right limits exactly: an infinite variance leaves the plain optimiser's step, a zero variance keeps
every parameter at the centre.

Normalisation: torch 2.13's native ``batch_norm`` and ``layer_norm`` give wrong *second-order*
gradients under ``vmap`` on the CPU (about 2e-2 off on Conv-4), while the same normalisation written
from elementary tensor operations is exact. :class:`Norm` takes the elementary form under ``torch.func``
transforms and torch's fused kernel elsewhere (exact there, and far cheaper); the batched second-order
path refuses models that contain the native layers (:func:`check_model`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Params = dict[str, Tensor]
Path = Literal["auto", "batched", "loop"]
LossFn = Callable[[Tensor, Tensor], Tensor]
#: a learning rate per inner step: one number, or one tensor per parameter (Meta-SGD-style, learnable)
StepRate = float | Tensor | Mapping[str, Tensor]

NATIVE_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)

from metabench.norm import Norm as Norm  # noqa: E402  (re-exported: inner.Norm is public)
from metabench.norm import NormMode as NormMode  # noqa: E402


def collect_running_stats(model: nn.Module, inputs: Tensor) -> None:
    """Update the running statistics of every ``running`` :class:`Norm` from one plain forward pass."""
    norms = [m for m in model.modules() if isinstance(m, Norm) and m.mode == "running"]
    if not norms:
        return
    for norm in norms:
        norm.collect = True
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for norm in norms:
            norm.collect = False


def check_model(model: nn.Module, path: Path, first_order: bool) -> None:
    """Refuse native normalisation layers on the batched second-order path, whose gradients are wrong."""
    if path != "batched" or first_order:
        return
    native = [name for name, m in model.named_modules() if isinstance(m, NATIVE_NORMS)]
    if native:
        raise ValueError(
            f"{type(model).__name__}.{native[0]} is a native normalisation layer: its second-order gradients "
            "under vmap are wrong in torch (2.13, CPU); use metabench.inner.Norm"
        )


def resolve_path(path: Path, device: torch.device) -> Literal["batched", "loop"]:
    """``auto``: batched on CUDA (launch overhead dominates), the per-task loop elsewhere (measured faster)."""
    if path == "auto":
        return "batched" if device.type == "cuda" else "loop"
    if path not in ("batched", "loop"):
        raise ValueError(f"inner-loop path must be auto, batched or loop, not {path!r}")
    return path


@dataclass(frozen=True)
class Adam:
    """Adam as an inner optimiser. The state is the second moment ``v`` and the step count so far."""

    lr: float
    beta1: float = 0.0
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class Prior:
    """A Gaussian prior ``N(centre, exp(log_variance))`` on a task's parameters (see the module notes).

    ``log_variance`` maps each parameter name to a tensor broadcastable to it: one number per module
    (Chen et al.'s per-layer shrinkage), or per element. Both may carry gradients: the proximal step is
    differentiable in the centre and in the log-variances.
    """

    centre: Params
    log_variance: Mapping[str, Tensor]


def _sgd_step(params: Params, grads: Params, rate: StepRate) -> tuple[Params, StepRate]:
    """One gradient step, and the step size each parameter took (for a prior's proximal step)."""
    if isinstance(rate, Mapping):
        return {k: p - rate[k] * grads[k] for k, p in params.items()}, rate
    return {k: p - rate * grads[k] for k, p in params.items()}, rate


def _adam_step(
    params: Params, grads: Params, m: Params, v: Params, t: int, opt: Adam
) -> tuple[Params, Params, Params, Params]:
    """One Adam step at step count ``t`` (1-based), elementwise so that it runs under ``vmap``; also
    returns the per-element step size ``D`` (the update is ``-D * m``), the metric a prior's proximal
    step uses."""
    m = {k: opt.beta1 * m[k] + (1 - opt.beta1) * g for k, g in grads.items()}
    v = {k: opt.beta2 * v[k] + (1 - opt.beta2) * g * g for k, g in grads.items()}
    c1 = 1 - opt.beta1**t
    c2 = 1 - opt.beta2**t
    step = opt.lr * (c2**0.5) / c1
    sizes = {k: step / (torch.sqrt(v[k]) + opt.eps * c2**0.5) for k in params}
    params = {k: p - sizes[k] * m[k] for k, p in params.items()}
    return params, m, v, sizes


def _log_size(size: float | Tensor) -> float | Tensor:
    return math.log(size) if isinstance(size, float | int) else torch.log(size)


def _proximal(params: Params, sizes: StepRate | Params, prior: Prior) -> Params:
    """The exact proximal step of ``||theta - centre||^2 / (2 var)`` with step size ``D`` per element:
    ``argmin_x ||x - theta||^2 / (2 D) + ||x - centre||^2 / (2 var) = lerp(theta, centre, D / (D + var))``.

    The weight is ``sigmoid(log D - log var)``: exactly 0 for an infinite variance (the plain step is
    kept bit for bit) and exactly 1 for a zero variance (the centre is returned bit for bit).
    """
    out = {}
    for k, p in params.items():
        size = sizes[k] if isinstance(sizes, Mapping) else sizes
        weight = torch.sigmoid(_log_size(size) - prior.log_variance[k])
        out[k] = torch.lerp(p, prior.centre[k].expand_as(p), weight.expand_as(p))
    return out


@dataclass
class InnerState:
    """Adam's moments per task after adaptation (``None`` for gradient descent)."""

    m: Params | None = None
    v: Params | None = None


def _inner_steps(
    p: Params,
    x: Tensor,
    y: Tensor,
    idx: Tensor | None,
    differentiate: Callable[[Params, Tensor, Tensor], Params],
    *,
    steps: int,
    lr: StepRate | Sequence[StepRate] | Adam,
    rates: list[StepRate],
    adam_state: tuple[Params, Params, int] | None,
    prior: Prior | None,
) -> tuple[Params, InnerState]:
    """One task's ``steps`` inner steps from ``p`` (SGD at ``rates`` or Adam from ``adam_state``), each a
    proximal step toward the prior's centre when there is one."""
    m = v = None
    t0 = 0
    if isinstance(lr, Adam):
        assert adam_state is not None
        m, v, t0 = dict(adam_state[0]), dict(adam_state[1]), adam_state[2]
    for step in range(steps):
        xs, ys = (x, y) if idx is None else (x[idx[step]], y[idx[step]])
        g = differentiate(p, xs, ys)
        sizes: StepRate | Params
        if isinstance(lr, Adam):
            assert m is not None and v is not None
            p, m, v, sizes = _adam_step(p, g, m, v, t0 + step + 1, lr)
        else:
            p, sizes = _sgd_step(p, g, rates[step])
        if prior is not None:
            p = _proximal(p, sizes, prior)
    return p, InnerState(m, v)


AdamState = tuple[Params, Params, int]


def _schedule(
    lr: StepRate | Sequence[StepRate] | Adam, steps: int, params: Params, adam_state: AdamState | None
) -> tuple[list[StepRate], AdamState | None]:
    """The SGD rate of each step, or Adam's starting state (zero moments unless given)."""
    if isinstance(lr, Adam):
        if adam_state is None:
            zeros = {k: torch.zeros_like(p) for k, p in params.items()}
            adam_state = (zeros, dict(zeros), 0)
        return [], adam_state
    rates = list(lr) if isinstance(lr, Sequence) else [lr] * steps
    if len(rates) != steps:
        raise ValueError(f"{len(rates)} inner learning rates for {steps} steps")
    return rates, adam_state


def _stacked(done: list[tuple[Params, InnerState]], params: Params, adam: bool) -> tuple[Params, InnerState]:
    """The loop path's per-task parameters (and Adam moments) stacked along a task axis."""
    adapted = {k: torch.stack([p[k] for p, _ in done]) for k in params}
    if adam:
        states = [state for _, state in done]
        return adapted, InnerState(
            {k: torch.stack([s.m[k] for s in states if s.m]) for k in params},
            {k: torch.stack([s.v[k] for s in states if s.v]) for k in params},
        )
    return adapted, InnerState()


def adapt(
    model: nn.Module,
    params: Params,
    support_x: Tensor,
    support_y: Tensor,
    loss_fn: LossFn,
    *,
    steps: int,
    lr: StepRate | Sequence[StepRate] | Adam,
    first_order: bool = False,
    path: Path = "auto",
    batches: Tensor | None = None,
    adam_state: tuple[Params, Params, int] | None = None,
    buffers: Params | None = None,
    prior: Prior | None = None,
    task_axis: bool = True,
) -> tuple[Params, InnerState]:
    """Each task's parameters after ``steps`` inner steps on its support set: ``{name: [B, ...]}``.

    ``params`` are shared by all tasks (the meta-parameters; gradients flow back to them unless they
    are detached); ``support_x [B, n, ...]`` and ``support_y [B, n, ...]``. ``lr`` is one rate for
    every step, a sequence of one per step, or an :class:`Adam`. ``batches [B, steps, m]`` are the
    indices of the support examples step ``s`` uses. ``adam_state = (m, v, t)`` is Adam's shared
    starting state (moments like ``params``, step count ``t``). With ``steps = 0`` every task keeps
    ``params``, expanded along the task axis. ``prior`` makes every step a proximal step toward its
    centre (MAP adaptation under a Gaussian prior; see the module notes).

    ``task_axis = False`` adapts one task given without the task axis (``support_x [n, ...]``,
    ``batches [steps, m]``) on the per-task loop and returns its parameters without one: a caller that
    loops over tasks itself (:func:`task_by_task`) then adds no stacking and slicing to every graph.
    """
    if not task_axis and path == "batched":
        raise ValueError("one task without a task axis is adapted on the loop path, not the batched one")
    tasks = support_x.shape[0]
    chosen = "loop" if not task_axis else resolve_path(path, support_x.device)
    check_model(model, chosen, first_order)
    rates, adam_state = _schedule(lr, steps, params, adam_state)

    def task_loss(p: Params, x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(call(model, p, buffers, x), y)

    run_task = functools.partial(_inner_steps, steps=steps, lr=lr, rates=rates, adam_state=adam_state, prior=prior)

    if chosen == "batched":
        inner_grad = grad(task_loss)

        def differentiate_batched(p: Params, x: Tensor, y: Tensor) -> Params:
            g = inner_grad(p, x, y)
            return {k: t.detach() for k, t in g.items()} if first_order else g

        def one(x: Tensor, y: Tensor, idx: Tensor | None) -> tuple[Params, Params, Params]:
            p, state = run_task(params, x, y, idx, differentiate_batched)
            return p, state.m or {}, state.v or {}

        adapted, m, v = vmap(one, in_dims=(0, 0, None if batches is None else 0))(support_x, support_y, batches)
        return adapted, InnerState(m or None, v or None)

    def differentiate_loop(p: Params, x: Tensor, y: Tensor) -> Params:
        needs = {k: t if t.requires_grad else t.detach().requires_grad_() for k, t in p.items()}
        loss = task_loss(needs, x, y)
        meta = list(params.values()) + ([] if prior is None else list(prior.log_variance.values()))
        create = not first_order and torch.is_grad_enabled() and any(t.requires_grad for t in meta)
        g = torch.autograd.grad(loss, list(needs.values()), create_graph=create)
        return dict(zip(needs, g, strict=True))

    if not task_axis:
        with torch.enable_grad():
            return run_task(params, support_x, support_y, batches, differentiate_loop)
    with torch.enable_grad():
        done = [
            run_task(params, support_x[i], support_y[i], None if batches is None else batches[i], differentiate_loop)
            for i in range(tasks)
        ]
    return _stacked(done, params, isinstance(lr, Adam))


def task_by_task(meta: Sequence[Tensor], tasks: int, task_loss: Callable[[int], Tensor]) -> Tensor:
    """The mean of ``task_loss(i)`` over ``tasks``, whose gradient to ``meta`` was taken one task at a time.

    Why: a meta-loss built over the whole meta-batch keeps every task's inner-loop graph alive until
    its ``.backward()``, so peak memory grows with the meta-batch (about 7 MiB per Omniglot task for
    second-order MAML). Here each task's graph is differentiated and freed as soon as its loss exists,
    as a hand-written per-task loop with ``backward()`` inside does. The returned tensor has the mean's
    value, and its ``.backward()`` puts exactly the accumulated gradient on ``meta``, so a caller's
    optimiser step is unchanged. The first task's gradients are the accumulators: no extra copy of the
    parameters is held.
    """
    meta = [m for m in meta if m.requires_grad]
    total: list[Tensor | None] = [None] * len(meta)
    value = torch.zeros(())
    for i in range(tasks):
        loss = task_loss(i) / tasks
        grads = torch.autograd.grad(loss, meta, allow_unused=True) if meta and loss.requires_grad else ()
        accumulators, addends = [], []
        for j, g in enumerate(grads):
            if g is None:
                continue
            acc = total[j]
            if acc is None:
                total[j] = g  # a new tensor from autograd.grad, ours to add into
            else:
                accumulators.append(acc)
                addends.append(g)
        if accumulators:
            torch._foreach_add_(accumulators, addends)
        value = value.to(loss.device) + loss.detach()
    return _PrecomputedGradient.apply(value, tuple(total), *meta)


class _PrecomputedGradient(torch.autograd.Function):
    """The identity on a loss value, whose backward hands each of ``meta`` its precomputed gradient."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, grads: tuple[Tensor | None, ...], *meta: Tensor) -> Tensor:
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx: Any, out: Tensor) -> tuple[Tensor | None, ...]:
        return (None, None, *(None if g is None else out * g for g in ctx.grads))


def call(model: nn.Module, params: Params, buffers: Params | None, x: Tensor) -> Tensor:
    """``model(x)`` with ``params`` (and ``buffers``, when given) in place of its own.

    The module's own buffers are used where none are given, and weight tying is not checked (no network
    here ties weights): both cut per-call Python work that dominates a small network on the per-task loop.
    """
    return functional_call(model, params if buffers is None else {**buffers, **params}, (x,), tie_weights=False)


def batched_forward(model: nn.Module, adapted: Params, x: Tensor, buffers: Params | None = None) -> Tensor:
    """Each task's model (its adapted parameters ``[B, ...]``) applied to its inputs ``x [B, n, ...]``."""

    def one(p: Params, xs: Tensor) -> Tensor:
        return call(model, p, buffers, xs)

    return vmap(one)(adapted, x)


def looped_forward(model: nn.Module, adapted: Params, x: Tensor, buffers: Params | None = None) -> Tensor:
    """The reference for :func:`batched_forward`: one ``functional_call`` per task."""
    return torch.stack([call(model, {k: t[i] for k, t in adapted.items()}, buffers, x[i]) for i in range(x.shape[0])])


def forward(model: nn.Module, adapted: Params, x: Tensor, path: Path = "auto") -> Tensor:
    """Apply each task's adapted model to its inputs by the same path ``adapt`` would take."""
    if resolve_path(path, x.device) == "batched":
        return batched_forward(model, adapted, x)
    return looped_forward(model, adapted, x)


def meta_parameters(model: nn.Module) -> Params:
    """The model's trainable parameters by name: the starting point every task adapts from."""
    return {k: p for k, p in model.named_parameters() if p.requires_grad}
