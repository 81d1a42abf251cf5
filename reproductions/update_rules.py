"""Learned update rules: what the learned optimizer and the Meta-LSTM share.

Andrychowicz et al. (2016) and Ravi & Larochelle (2017) both replace a hand-written update such as
``theta - lr * grad`` with a small LSTM that reads each coordinate's gradient. Both apply the LSTM
*coordinate-wise*: one set of weights shared by every coordinate of the optimizee, and a separate
hidden state per coordinate, which this module gets by treating the coordinates as the LSTM's batch
dimension. That is what lets a rule with a few thousand weights optimise a network of any size.

Contents:

- :func:`preprocess_gradient`: the log-magnitude and sign encoding of Andrychowicz et al.'s
  appendix, which maps gradients spanning many orders of magnitude into a range an LSTM can read.
- :class:`CoordinateWiseLSTM`: the learned optimizer, ``theta_{t+1} = theta_t + g_t`` with ``g_t``
  the output of a two-layer, 20-unit LSTM.
- :class:`MetaLSTMCell` and :class:`MetaLearner`: Ravi & Larochelle's meta-learner, whose cell state
  *is* the learner's parameters and whose input and forget gates are learned.
- :func:`unroll` and :func:`truncated_bptt`: running a rule on a loss for some steps while keeping
  the graph from the rule's weights to every loss, and cutting that graph every ``unroll`` steps.
- :class:`FlatParameters`: a module's parameters as one vector and back, so a rule can treat a
  network as a single list of coordinates.

Both papers drop the second derivatives: the gradient the rule reads is treated as an input, not a
function of earlier updates (both papers state this simplification). The loss
still depends on the rule's weights through the parameters it produced, so meta-training works; it
only forgoes the Hessian-vector products, as the papers did. ``second_order=True`` keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

PREPROCESS_P = 10.0
"""The paper's ``p``. Ravi & Larochelle's notes state 10; Andrychowicz et al.'s released code uses 5."""


def preprocess_gradient(x: Tensor, p: float = PREPROCESS_P) -> Tensor:
    """Two features per coordinate, ``[..., 2]``: the appendix of Andrychowicz et al.

    ``(log|x| / p, sign x)`` when ``|x| >= e^-p``, else ``(-1, e^p x)``. Both pieces meet at the
    threshold (``log(e^-p)/p = -1``), and very small values keep their sign and size in the second
    feature instead of vanishing. Used for gradients and, in the Meta-LSTM, for the loss.
    """
    threshold = math.exp(-p)
    magnitude = x.abs()
    large = magnitude >= threshold
    # The clamp keeps log finite on the branch ``where`` discards, so backward never sees inf * 0.
    log_part = torch.where(large, torch.log(magnitude.clamp_min(threshold)) / p, torch.full_like(x, -1.0))
    sign_part = torch.where(large, torch.sign(x), x * math.exp(p))
    return torch.stack((log_part, sign_part), dim=-1)


LSTMState = list[tuple[Tensor, Tensor]]

EVAL_CHUNK = 16_384
"""Coordinates per chunk when a learned optimizer runs without a graph (about one MNIST MLP)."""


class UpdateRule(Protocol):
    """A rule that maps (parameters, gradient, loss) to new parameters, carrying its own state.

    ``theta`` and ``grad`` are flat vectors of the same length; ``loss`` is a scalar or broadcasts to
    ``theta``. Both papers' meta-learners fit, and so does SGD, which is how the tests pin them down.
    """

    def initial_state(self, theta: Tensor) -> Any: ...

    def step(self, theta: Tensor, grad: Tensor, loss: Tensor, state: Any) -> tuple[Tensor, Any]: ...


def _zeros_state(sizes: list[int], coordinates: int, like: Tensor) -> LSTMState:
    return [(like.new_zeros(coordinates, size), like.new_zeros(coordinates, size)) for size in sizes]


def _run_cells(cells: nn.ModuleList, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
    new_state: LSTMState = []
    for cell, (h, c) in zip(cells, state, strict=True):
        h, c = cell(x, (h, c))
        new_state.append((h, c))
        x = h
    return x, new_state


class CoordinateWiseLSTM(nn.Module):
    """Andrychowicz et al.'s optimizer ``m``: ``theta_{t+1} = theta_t + output_scale * W h_t``.

    ``h_t`` is the top hidden state of a stack of LSTM layers (two of 20 units in the paper) fed, per
    coordinate, the preprocessed gradient (or the raw gradient when ``preprocess_p`` is ``None``, as
    the released code does for the quadratics). ``output_scale`` is the released code's ``scale``
    (1.0 for the quadratics, 0.01 for MNIST), which starts the optimizer at sensible step sizes.

    The stack is one ``nn.LSTM`` run for a single time step, not a chain of ``nn.LSTMCell``: the same
    computation (the tests check it against cells with the same weights, which are also initialised
    identically), but torch's fused kernel is about twice as fast on the CPU for the ~16,000
    coordinates of an MNIST MLP, where the skinny matrix products leave the step memory-bound. The
    state is one ``(h, c)`` pair of ``[layers, coordinates, hidden]`` tensors.
    """

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        preprocess_p: float | None = PREPROCESS_P,
        output_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.preprocess_p = preprocess_p
        self.output_scale = output_scale
        inputs = 2 if preprocess_p is not None else 1
        self.lstm = nn.LSTM(inputs, hidden_size, num_layers)
        self.head = nn.Linear(hidden_size, 1)
        self.hidden_size, self.num_layers = hidden_size, num_layers

    def initial_state(self, theta: Tensor) -> LSTMState:
        """Zero hidden and cell states, one row per coordinate of ``theta``."""
        zeros = theta.new_zeros(self.num_layers, theta.numel(), self.hidden_size)
        return [(zeros, zeros.clone())]

    def features(self, grad: Tensor) -> Tensor:
        if self.preprocess_p is None:
            return grad.unsqueeze(-1)
        return preprocess_gradient(grad, self.preprocess_p)

    def readout(self, hidden: Tensor, grad: Tensor) -> Tensor:
        """The update ``g_t`` from the top hidden state (``grad`` is there for rules that override this)."""
        return self.output_scale * self.head(hidden).squeeze(-1)

    def forward(self, grad: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """The update for a flat gradient ``[n]`` and the next state.

        Without a graph (evaluation) the coordinates go through in chunks of ``EVAL_CHUNK``: the step
        is memory-bound, and a chunk whose state fits in the CPU's cache runs about 1.6 times faster
        per coordinate than 600 MLPs' worth at once. The result is the same, coordinate by coordinate.
        The state is then kept as one ``(h, c)`` pair per chunk, so no step copies the whole state
        (for 32 MLPs, two 80 MB tensors) into new memory.
        """
        x = self.features(grad).unsqueeze(0)
        if torch.is_grad_enabled() or grad.numel() <= EVAL_CHUNK:
            ((h, c),) = state
            out, (h, c) = self.lstm(x, (h, c))
            return self.readout(out[0], grad), [(h, c)]
        parts = [slice(start, start + EVAL_CHUNK) for start in range(0, grad.numel(), EVAL_CHUNK)]
        if len(state) != len(parts):  # a whole state (the initial one): cut it into the chunks' own
            ((h, c),) = state
            state = [(h[:, part].contiguous(), c[:, part].contiguous()) for part in parts]
        updates = torch.empty_like(grad)
        chunks: LSTMState = []
        for part, (h, c) in zip(parts, state, strict=True):
            out, (h, c) = self.lstm(x[:, part], (h, c))
            updates[part] = self.readout(out[0], grad[part])
            chunks.append((h, c))
        return updates, chunks

    def step(self, theta: Tensor, grad: Tensor, loss: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        update, state = self(grad, state)
        return theta + update, state


@dataclass
class MetaLSTMState:
    """The Meta-LSTM's state: its first layer's ``(h, c)``, and the previous forget and input gates.

    The cell state of the second layer is the learner's parameters, passed as ``theta``, not kept here.
    """

    lstm: LSTMState
    forget: Tensor
    input: Tensor


class MetaLSTMCell(nn.Module):
    """Ravi & Larochelle's update cell, in the form their code uses::

        f_t = sigmoid(W_F [x_t, theta_{t-1}, f_{t-1}] + b_F)
        i_t = sigmoid(W_I [x_t, theta_{t-1}, i_{t-1}] + b_I)
        theta_t = f_t * theta_{t-1} + i_t * (-grad_t)

    per coordinate, with ``W_F``, ``W_I``, ``b_F``, ``b_I`` shared by all coordinates; ``x_t`` is what
    the layer below read from the gradient and loss (the paper writes the gradient and loss there).
    The biases start as in the common PyTorch port of the official code (forget in [4, 6], so ``f``
    is near 1 and nothing is forgotten; input in [-5, -4], so ``i`` is a small learning rate) and the
    weights near zero, so training starts close to SGD with a small step.
    """

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.forget_weight = nn.Parameter(torch.empty(input_size + 2).uniform_(-0.01, 0.01))
        self.input_weight = nn.Parameter(torch.empty(input_size + 2).uniform_(-0.01, 0.01))
        self.forget_bias = nn.Parameter(torch.empty(1).uniform_(4.0, 6.0))
        self.input_bias = nn.Parameter(torch.empty(1).uniform_(-5.0, -4.0))

    def gates(self, x: Tensor, theta: Tensor, forget: Tensor, input: Tensor) -> tuple[Tensor, Tensor]:
        """``(f_t, i_t)`` for every coordinate: ``x`` is ``[n, input_size]``, the rest ``[n]``."""
        previous = theta.unsqueeze(-1)
        f = torch.sigmoid(torch.cat((x, previous, forget.unsqueeze(-1)), -1) @ self.forget_weight + self.forget_bias)
        i = torch.sigmoid(torch.cat((x, previous, input.unsqueeze(-1)), -1) @ self.input_weight + self.input_bias)
        return f, i

    def forward(
        self, x: Tensor, theta: Tensor, grad: Tensor, forget: Tensor, input: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(theta_t, f_t, i_t)``: the new parameters and the gates the next step reads."""
        f, i = self.gates(x, theta, forget, input)
        return f * theta - i * grad, f, i


class MetaLearner(nn.Module):
    """Ravi & Larochelle's two-layer meta-learner: an ordinary LSTM, then the :class:`MetaLSTMCell`.

    The first layer (``hidden_size`` units, 20 in the common PyTorch port) reads four features per
    coordinate, the preprocessed loss and gradient; its hidden state is the ``x_t`` of the update
    cell's gates. The learner's initial parameters (the update cell's ``c_0``) are meta-learned too,
    but they belong to the learner and are passed in as ``theta``.
    """

    def __init__(self, hidden_size: int = 20, preprocess_p: float = PREPROCESS_P) -> None:
        super().__init__()
        self.preprocess_p = preprocess_p
        self.lstm = nn.ModuleList([nn.LSTMCell(4, hidden_size)])
        self.update = MetaLSTMCell(hidden_size)
        self.hidden_size = hidden_size

    def initial_state(self, theta: Tensor) -> MetaLSTMState:
        """Zero first-layer state and zero previous gates, as in the common PyTorch port."""
        n = theta.numel()
        return MetaLSTMState(_zeros_state([self.hidden_size], n, theta), theta.new_zeros(n), theta.new_zeros(n))

    def step(self, theta: Tensor, grad: Tensor, loss: Tensor, state: MetaLSTMState) -> tuple[Tensor, MetaLSTMState]:
        p = self.preprocess_p
        loss_features = preprocess_gradient(loss.expand_as(grad), p)
        x = torch.cat((loss_features, preprocess_gradient(grad, p)), -1)
        hidden, lstm = _run_cells(self.lstm, x, state.lstm)
        theta, forget, input = self.update(hidden, theta, grad, state.forget, state.input)
        return theta, MetaLSTMState(lstm, forget, input)


# --------------------------------------------------------------------------- running a rule


@dataclass
class Unrolled:
    """Where an unroll ended, and the loss before each of its updates (``[steps, *loss shape]``).

    ``losses`` keeps the graph to the rule's weights, so their sum is a meta-loss; ``theta`` and
    ``state`` continue the trajectory.
    """

    theta: Tensor
    state: Any
    losses: Tensor


def unroll(
    rule: UpdateRule,
    loss_fn: Callable[[Tensor], Tensor],
    theta: Tensor,
    state: Any,
    steps: int,
    *,
    second_order: bool = False,
) -> Unrolled:
    """Apply ``rule`` ``steps`` times to ``loss_fn``, starting from ``theta`` (any shape).

    ``loss_fn`` may return one loss per problem (say ``[128]`` for a batch of quadratics whose
    parameters are the rows of ``theta [128, 10]``): the gradient is taken of their sum, so each
    problem gets its own gradient, and the rule sees each coordinate's own problem's loss. ``theta``
    must require grad (a leaf, or the output of an earlier unroll).
    """
    losses = []
    shape = theta.shape
    for _ in range(steps):
        loss = loss_fn(theta)
        if loss.dim() and tuple(shape[: loss.dim()]) != tuple(loss.shape):
            raise ValueError(f"loss of shape {tuple(loss.shape)} is not one per problem of theta {tuple(shape)}")
        (grad,) = torch.autograd.grad(loss.sum(), theta, create_graph=second_order, retain_graph=True)
        if not second_order:
            grad = grad.detach()
        seen = loss.detach()
        if seen.dim():
            seen = seen.reshape(*seen.shape, *[1] * (len(shape) - seen.dim())).expand(shape).reshape(-1)
        flat, state = rule.step(theta.reshape(-1), grad.reshape(-1), seen, state)
        theta = flat.view(shape)
        losses.append(loss)
    return Unrolled(theta, state, torch.stack(losses))


def detach_state(state: Any) -> Any:
    """The same state cut from its graph (tensors, and lists, tuples and dataclasses of them)."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, list | tuple):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, MetaLSTMState):
        return MetaLSTMState(detach_state(state.lstm), state.forget.detach(), state.input.detach())
    raise TypeError(f"cannot detach a state of type {type(state).__name__}")


@dataclass
class Trajectory:
    """A whole optimisation: the loss before every step, ``[horizon, *loss shape]``, and where it ended."""

    losses: Tensor
    theta: Tensor


def truncated_bptt(
    rule: UpdateRule,
    loss_fn: Callable[[Tensor], Tensor],
    theta: Tensor,
    horizon: int,
    unroll_length: int,
    meta_step: Callable[[Tensor], None] | None,
) -> Trajectory:
    """Optimise ``loss_fn`` for ``horizon`` steps, calling ``meta_step(meta_loss)`` every ``unroll_length``.

    The meta-loss of a segment is the sum over its steps of the mean loss over problems, Andrychowicz
    et al.'s objective with all weights 1. Between segments the parameters and the rule's state are
    detached, so backpropagation never reaches further back than one segment. ``meta_step`` owns the
    meta-optimiser (zero grads, backward, clip, step); ``None`` only runs the rule, as at evaluation.
    The returned losses and parameters are detached.
    """
    theta = theta.detach().requires_grad_()
    state = rule.initial_state(theta.reshape(-1))
    seen: list[Tensor] = []
    for start in range(0, horizon, unroll_length):
        out = unroll(rule, loss_fn, theta, state, min(unroll_length, horizon - start))
        if meta_step is not None:
            per_step = out.losses.reshape(out.losses.shape[0], -1).mean(-1)
            meta_step(per_step.sum())
        seen.append(out.losses.detach())
        theta = out.theta.detach().requires_grad_()
        state = detach_state(out.state)
    return Trajectory(torch.cat(seen), theta.detach())


# --------------------------------------------------------------------------- networks as vectors


class FlatParameters:
    """A module's parameters as one flat vector, and that vector back as ``functional_call`` input.

    The rule sees a network as one list of coordinates; the network is evaluated with
    ``torch.func.functional_call(module, flat.unflatten(vector), inputs)``, so gradients reach the
    vector without the module's own parameters ever being overwritten.
    """

    def __init__(self, named: Mapping[str, Tensor] | Iterator[tuple[str, Tensor]]) -> None:
        items = list(named.items()) if isinstance(named, Mapping) else list(named)
        self.names = [name for name, _ in items]
        self.shapes = [tuple(t.shape) for _, t in items]
        self.sizes = [t.numel() for _, t in items]

    @classmethod
    def of(cls, module: nn.Module) -> FlatParameters:
        return cls(module.named_parameters())

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([tensors[name].reshape(-1) for name in self.names])

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        pieces = torch.split(vector, self.sizes)
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)}

    def __len__(self) -> int:
        return sum(self.sizes)
