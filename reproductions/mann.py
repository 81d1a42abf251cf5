"""Memory-Augmented Neural Network (Santoro, Bartunov, Botvinick, Wierstra & Lillicrap, ICML 2016).

An LSTM controller reads an episode one example at a time: at step ``t`` it sees the image ``x_t``
with the *previous* step's label ``y_(t-1)``, so it must bind an image to its label one step later and
recall the binding when the class comes back. The binding lives in an external memory (128 slots of
40) written by least-recently-used access (LRUA), the paper's equations, with ``H`` heads:

* content addressing, eq. (2): ``w^r_t(i) = softmax_i K(k_t, M_t(i))`` with cosine similarity ``K``;
  the read is ``r_t = sum_i w^r_t(i) M_t(i)``;
* usage, eq. (5): ``w^u_t = gamma w^u_(t-1) + w^r_t + w^w_t``;
* least-used weights, eq. (6): ``w^lu_t(i) = 0`` if ``w^u_t(i)`` is above the ``n``-th smallest usage
  (``n`` = number of reads), else 1;
* write weights, eq. (7): ``w^w_t = sigma(alpha) w^r_(t-1) + (1 - sigma(alpha)) w^lu_(t-1)``;
* before writing, the least-used slot (from ``w^u_(t-1)``) is zeroed; then, eq. (8),
  ``M_t(i) = M_(t-1)(i) + w^w_t(i) k_t``: the write vector is the key itself.

Where the paper is silent this follows the usual reading of it (tristandeleu/ntm-one-shot): the
controller also receives the previous reads ``r_(t-1)``; keys are ``tanh`` of a linear map of the
controller state, one key and one gate ``alpha`` per head, and each head reads with its own key after
the write; the output is a softmax over the episode's classes of a linear map of ``[h_t; r_t]``. Memory,
usage and read weights start at zero in every episode (memory is wiped between episodes); a
least-used tie is broken by slot order. ``memory = false`` gives the paper's LSTM baseline: the same
controller reading ``(x_t, y_(t-1))`` with no external memory.

Line-by-line check against the paper and two published re-implementations, tristandeleu/ntm-one-shot
(``mann/model.py``, ``examples/omniglot.py``) and snowkylin/ntm (``ntm/mann_cell.py``, ``model.py``,
``one_shot_learning.py``), issue 16. No defect was found in the equations; what differs:

* Least-used weights with ``n`` heads: eq. (6) gives a multi-hot ``w^lu`` with ``n`` ones, which every
  head adds with ``1 - sigma(alpha)`` (here, and snowkylin's ``least_used``), so the ``n`` least-used
  slots receive the same sum of all heads' keys. tristandeleu gives head ``h`` the ``h``-th least-used
  slot alone (``inc_subtensor(ww_t[..., wlu_tm1.flatten()], 1 - sigma)``). Unknown;
  ``least_used_per_head = true`` gives tristandeleu's reading for the ablation.
* Write vector: eq. (8) writes the key ``k_t`` (here); both re-implementations write a separate
  ``a_t = tanh(W_a h_t + b_a)``. Documented (the paper's form kept).
* Initial state: zeros here; both re-implementations start the memory at 1e-6 and the read and usage
  weights one-hot on slot 0. Unknown, small (the first step's cosines only).
* Usage decay: 0.99 here (reported.md); 0.95 in both re-implementations. Unknown.
* Read addressing: on the memory after the write (here and tristandeleu); snowkylin addresses on the
  memory before the write (``address_before_write = true``). With the key as the write vector (eq. 8
  here, a separate vector in both re-implementations), addressing after the write finds this step's
  own key in the slot just written (cosine 1), which no re-implementation does. Unknown; an ablation.
* Optimiser: the spec's Adam 1e-3, as tristandeleu's (no clipping); snowkylin: RMSprop 1e-3, momentum
  0.9, decay 0.95, gradients clipped to [-10, 10]. Issue 16 quotes RMSprop 1e-4 from the paper's text,
  which the spec's header says the paper does not state; ``--set optimizer=rmsprop --set momentum=0.9``
  runs snowkylin's (torch's smoothing constant is 0.99, theirs 0.95; no clipping). Unknown.
* Episodes (5 classes, 10 presentations each, 50 steps), one-hot labels shuffled per episode, the label
  given one step late with zeros at the first step, memory wiped between episodes, LSTM of 200, memory
  128 x 40, 4 read heads, output softmax over ``[h_t; r_t]``, controller input ``[x_t, y_(t-1), r_(t-1)]``:
  same as the paper and both re-implementations.
* Controller LSTM: PyTorch's cell (forget-gate bias starting near 0) here; snowkylin's is TensorFlow's
  ``BasicLSTMCell``, whose ``forget_bias = 1.0`` is added at every step; tristandeleu's Theano LSTM has
  no such term. ``forget_bias = 1`` gives snowkylin's for the ablation. Unknown (the paper is silent).
* Budget: snowkylin's table (100,000 episodes, batch 16) has the LSTM baseline at 0.59 and MANN at 0.89
  on the 2nd instance. Here both sit on a plateau near chance until about 64,000 episodes (budget, on the
  shared path); at 100,000 the LSTM is near its row (47.0 on the 2nd instance) and MANN no better than it
  (46.5), at 200,000 MANN reaches 65.6. Neither ``forget_bias``, RMSprop nor ``address_before_write``
  moved that (docs/papers/mann.md, "At the paper's budget").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.episodes import EpisodeBatch, as_sequence
from metabench.reproduction import Reproduction, StepOutput, TaskInfo

COSINE_EPS = 1e-8


@dataclass(frozen=True)
class MANNHyperparameters:
    controller: int = 200
    memory_slots: int = 128
    memory_width: int = 40
    read_heads: int = 4
    gamma: float = 0.99
    memory: bool = True
    max_shift: int = 0
    #: false: every head writes to all ``n`` least-used slots (eq. 6 as written); true: head ``h`` to the
    #: ``h``-th least-used slot alone (tristandeleu/ntm-one-shot)
    least_used_per_head: bool = False
    #: false: each head addresses the memory after this step's write (here and tristandeleu); true: it
    #: addresses the memory as it was before the write and reads the written memory (snowkylin/ntm)
    address_before_write: bool = False
    #: added to the controller's forget-gate bias at initialisation. 0 is PyTorch's LSTM; 1 is TensorFlow's
    #: ``BasicLSTMCell(forget_bias=1.0)``, which snowkylin/ntm's controller uses (a constant added at every
    #: step, the same as a learnable bias started at 1): the gate starts at sigmoid(1) = 0.73 rather than
    #: 0.5, so the controller's state survives more of a 50-step episode before training has shaped it
    forget_bias: float = 0.0


@dataclass(frozen=True)
class MemoryState:
    """The memory ``[B, slots, width]``, usage ``w^u`` ``[B, slots]`` and last read weights ``[B, heads, slots]``."""

    memory: Tensor
    usage: Tensor
    read_weights: Tensor

    @staticmethod
    def blank(batch: int, heads: int, slots: int, width: int, device: torch.device) -> MemoryState:
        return MemoryState(
            torch.zeros(batch, slots, width, device=device),
            torch.zeros(batch, slots, device=device),
            torch.zeros(batch, heads, slots, device=device),
        )


def cosine_read_weights(keys: Tensor, memory: Tensor) -> Tensor:
    """Eq. (2): softmax over slots of the cosine similarity of each key ``[B, H, W]`` to each slot."""
    dots = keys @ memory.transpose(1, 2)  # [B, H, N]
    norms = keys.norm(dim=-1, keepdim=True) * memory.norm(dim=-1).unsqueeze(1)
    return torch.softmax(dots / (norms + COSINE_EPS), dim=-1)


def least_used(usage: Tensor, n: int) -> Tensor:
    """Eq. (6): 1 at the ``n`` slots of smallest usage, 0 elsewhere (``[B, N]``)."""
    smallest = usage.argsort(dim=-1, stable=True)[..., :n]
    return torch.zeros_like(usage).scatter_(-1, smallest, 1.0)


def least_used_each(usage: Tensor, n: int) -> Tensor:
    """tristandeleu's reading of eq. (6) for ``n`` heads: head ``h`` gets the ``h``-th least-used slot,
    ``[B, n, N]`` one-hot rows."""
    smallest = usage.argsort(dim=-1, stable=True)[..., :n]
    return F.one_hot(smallest, usage.shape[-1]).to(usage.dtype)


def lrua_step(
    state: MemoryState,
    keys: Tensor,
    gates: Tensor,
    gamma: float,
    per_head: bool = False,
    address_before_write: bool = False,
) -> tuple[Tensor, MemoryState]:
    """One write-then-read of LRUA memory with keys ``[B, H, W]`` and gate logits ``alpha`` ``[B, H]``.

    Returns the reads ``[B, H, W]`` and the new state; eqs. (2), (5)-(8) of the paper. ``per_head``
    gives each head its own least-used slot, ``address_before_write`` computes the read weights on the
    memory before this step's write (see the module notes).
    """
    heads = keys.shape[1]
    if per_head:
        previous_least_used = least_used_each(state.usage, heads)  # [B, H, N]
    else:
        previous_least_used = least_used(state.usage, heads).unsqueeze(1)  # [B, 1, N]
    sigma = torch.sigmoid(gates).unsqueeze(-1)
    write_weights = sigma * state.read_weights + (1.0 - sigma) * previous_least_used
    emptiest = F.one_hot(state.usage.argmin(dim=-1), state.usage.shape[-1]).to(state.memory.dtype)
    memory = state.memory * (1.0 - emptiest).unsqueeze(-1)
    memory = memory + write_weights.transpose(1, 2) @ keys
    read_weights = cosine_read_weights(keys, state.memory if address_before_write else memory)
    reads = read_weights @ memory
    usage = gamma * state.usage + read_weights.sum(1) + write_weights.sum(1)
    return reads, MemoryState(memory, usage, read_weights)


def translate(images: Tensor, max_shift: int) -> Tensor:
    """Shift each image ``[n, C, H, W]`` by a random whole number of pixels in ``[-max_shift, max_shift]``
    along each axis, filling with background (0): the paper's small random translations."""
    if max_shift <= 0:
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1), device=images.device)
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1), device=images.device)
    rows = (dy + torch.arange(height, device=images.device)).view(n, 1, height, 1)
    cols = (dx + torch.arange(width, device=images.device)).view(n, 1, 1, width)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


class MANN(Reproduction):
    """MANN with an LSTM controller and LRUA memory, or (``memory = false``) the LSTM baseline."""

    Hyperparameters = MANNHyperparameters

    def __init__(self, hparams: MANNHyperparameters, task: TaskInfo) -> None:
        super().__init__(hparams, task)
        pixels = task.channels * task.image_size * task.image_size
        reads = hparams.read_heads * hparams.memory_width if hparams.memory else 0
        self.controller = nn.LSTMCell(pixels + task.ways + reads, hparams.controller)
        if hparams.forget_bias:
            with torch.no_grad():  # gates are ordered input, forget, cell, output
                self.controller.bias_hh[hparams.controller : 2 * hparams.controller].add_(hparams.forget_bias)
        if hparams.memory:
            self.keys = nn.Linear(hparams.controller, hparams.read_heads * hparams.memory_width)
            self.gates = nn.Linear(hparams.controller, hparams.read_heads)
        self.output = nn.Linear(hparams.controller + reads, task.ways)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Logits ``[B, T, ways]`` for a sequence of images ``[B, T, C, H, W]`` and their labels ``[B, T]``."""
        h = self.hparams
        batch, steps = labels.shape
        x = images.flatten(2)
        previous = F.one_hot(labels, self.task.ways).to(x.dtype).roll(1, dims=1)
        previous[:, 0] = 0.0  # no label before the first step
        hidden = x.new_zeros(batch, h.controller)
        cell = x.new_zeros(batch, h.controller)
        state = MemoryState.blank(batch, h.read_heads, h.memory_slots, h.memory_width, x.device)
        reads = x.new_zeros(batch, h.read_heads * h.memory_width if h.memory else 0)
        outputs = []
        for t in range(steps):
            hidden, cell = self.controller(torch.cat([x[:, t], previous[:, t], reads], dim=1), (hidden, cell))
            if h.memory:
                keys = torch.tanh(self.keys(hidden)).view(batch, h.read_heads, h.memory_width)
                read, state = lrua_step(
                    state, keys, self.gates(hidden), h.gamma, h.least_used_per_head, h.address_before_write
                )
                reads = read.flatten(1)
            outputs.append(self.output(torch.cat([hidden, reads], dim=1)))
        return torch.stack(outputs, dim=1)

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        images, labels = as_sequence(batch)
        if self.hparams.max_shift:
            images = translate(images.flatten(0, 1), self.hparams.max_shift).view_as(images)
        logits = self(images, labels)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        accuracy = (logits.argmax(-1) == labels).float().mean().mul(100.0).detach()
        return StepOutput(loss, accuracy)

    def predict(self, batch: EpisodeBatch) -> Tensor:
        """Logits for every step of each sequence episode, ``[B, T, ways]``."""
        images, labels = as_sequence(batch)
        return self(images, labels)
