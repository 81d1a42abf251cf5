"""Meta Networks (Munkhdalai & Yu, ICML 2017).

Two learners, each a CNN whose last layers are *augmented*: a layer with slow weights ``W`` (learned
across tasks by the runner's optimiser) and a parallel copy with fast weights ``W*`` (generated per
task or per example), their outputs summed after each one's nonlinearity, ``relu(W x) + relu(W* x)``
(the output layer sums logits, ``W x + W* x``).

* The dynamic representation learner ``u`` (slow ``Q``, fast ``Q*``) embeds examples. Its loss on the
  support set, ``loss_emb`` (cross-entropy of a slow softmax layer over the task's labels), has
  gradients ``grad_Q`` that the meta learner ``m`` turns into *task-level* fast weights ``Q*``.
* The base learner ``b`` (slow ``W``, fast ``W*``) classifies. The gradient of its loss on each support
  example is turned by the meta learner ``d`` into that example's *example-level* fast weights
  ``W*_i``, stored in a memory ``M`` under the key ``r'_i = u(Q, Q*, x'_i)``.
* A query reads the memory by attention: ``a = softmax(cos(r, r'_i))`` over the support keys, its fast
  weights are ``W* = a^T M``, and it is classified by ``b(W, W*, x)``; the runner minimises the query
  cross-entropy over the slow weights and both meta learners (Algorithm 1).

The label set is the task's: each episode's ``N`` classes get labels ``0..N-1`` in random order, and
both softmax layers have ``N`` outputs. Where the paper leaves a choice open this follows its
description and states the choice: ``m`` and ``d`` are coordinate-wise MLPs (two hidden layers of
``meta_hidden`` units) on gradients preprocessed as in Andrychowicz et al. (2016, p = 10); ``m``
averages the fast weights it makes from each support example; the support gradients are inputs to the
meta learners, not differentiated through (first order); the CNN trunks are the Conv-4 of the other
metric-based reproductions, one per learner, and two augmented layers sit on each trunk.

Line-by-line check against the released Chainer code (tsendeemts/MetaNet, ``MetaNetFull.py`` and its
Omniglot training script; issue 16):

* Keys: the code's key is ``key_fc1(h) + h W*^T``, a *linear* augmented layer with no ReLU, so keys and
  their cosines can be negative. This reproduction rectified both parts (``relu(Q g) + relu(Q* g)``),
  which puts every cosine in [0, 1] and caps the attention on the right support example at
  ``e / (e + n - 1)`` (0.40 at 5-way 1-shot). **Defect, fixed**: keys are linear (``key_relu = false``;
  ``true`` restores the old form for the ablation). ``loss_emb`` still reads the rectified hidden
  layer through the slow softmax layer, as the code's does.
* Gradient preprocessing: the code's ``logAndSign(..., k=7)``, where this used p = 10. **Defect, fixed**
  (``preprocess_p = 7``).
* Optimiser: Adam 1e-3 with ``GradientClipping(10)`` (a global norm clip). The clip is missing from the
  spec: **defect, fixed** there (``clip_grad_norm = 10``). The code sums the query losses where the
  runner averages them, so the clip binds at a different scale (documented departure).
* Trunks: the code has five conv blocks (each pooled) and fast weights for *every* conv and linear
  layer of both learners; here a Conv-4 trunk and fast weights for the two linear layers only.
  Documented departure (above), effect unknown.
* Task-level meta learner ``m``: the code runs an LSTM(2, 20) over the support set in 5 chunks and
  uses its last output; here a coordinate-wise MLP averaged over the support examples. Example-level
  ``d``: two ReLU layers of 20 and a linear output, same. Linear layers of the code have no biases,
  these do. Documented departures, effect unknown.
* Attention: softmax over cosines without a temperature, as in the code. Same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.episodes import EpisodeBatch
from metabench.reproduction import Reproduction, StepOutput, TaskInfo
from metabench.reproductions.backbones import Conv4

PREPROCESS_P = 7.0  # the released code's logAndSign(k=7)


@dataclass(frozen=True)
class MetaNetHyperparameters:
    hidden: int = 64
    units: int = 64
    meta_hidden: int = 20
    task_fast_weights: bool = True
    #: rectify the keys (true: this module before issue 16) or keep them linear (false: the released code)
    key_relu: bool = False
    #: ``p`` of the gradient preprocessing (the released code's ``logAndSign(k=7)``)
    preprocess_p: float = 7.0


def preprocess(gradients: Tensor, p: float = PREPROCESS_P) -> Tensor:
    """Andrychowicz et al.'s gradient preprocessing: ``(log|g| / p, sign g)`` when ``|g| >= e^-p``,
    else ``(-1, e^p g)``; a last axis of 2 is added."""
    magnitude = gradients.abs()
    big = magnitude >= math.exp(-p)
    first = torch.where(big, magnitude.clamp_min(math.exp(-p)).log() / p, torch.full_like(gradients, -1.0))
    second = torch.where(big, gradients.sign(), gradients * math.exp(p))
    return torch.stack([first, second], dim=-1)


class CoordinateMLP(nn.Module):
    """A meta learner: the same small MLP maps each preprocessed gradient coordinate to a fast weight."""

    def __init__(self, hidden: int, p: float = PREPROCESS_P) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 1)
        self.p = p

    def forward(self, gradients: Tensor) -> Tensor:
        return self.out(self.net(preprocess(gradients, self.p))).squeeze(-1)


class MetaNetwork(Reproduction):
    Hyperparameters = MetaNetHyperparameters

    def __init__(self, hparams: MetaNetHyperparameters, task: TaskInfo) -> None:
        super().__init__(hparams, task)
        self.base_trunk = Conv4(task.channels, hparams.hidden)
        self.key_trunk = Conv4(task.channels, hparams.hidden)
        features = math.prod(self.base_trunk.output_shape(task.channels, task.image_size))
        units, ways = hparams.units, task.ways
        self.base_hidden = nn.Linear(features, units)  # W1
        self.base_out = nn.Linear(units, ways)  # W2
        self.key_hidden = nn.Linear(features, units)  # Q (the augmented layer of u)
        self.key_out = nn.Linear(units, ways)  # u's softmax layer for loss_emb
        p = hparams.preprocess_p
        self.fast_hidden = CoordinateMLP(hparams.meta_hidden, p)  # d, for W1*
        self.fast_out = CoordinateMLP(hparams.meta_hidden, p)  # d, for W2*
        self.fast_key = CoordinateMLP(hparams.meta_hidden, p)  # m, for Q*

    # ----------------------------------------------------------------------- fast weights

    def task_fast_weights(self, support_g: Tensor, support_y: Tensor) -> Tensor:
        """``Q*`` ``[B, units, features]`` from the gradients of ``loss_emb`` on each support example."""
        pre = F.linear(support_g, self.key_hidden.weight, self.key_hidden.bias)
        hidden = F.relu(pre)
        probs = torch.softmax(self.key_out(hidden), dim=-1)
        error = probs - F.one_hot(support_y, probs.shape[-1]).to(probs.dtype)  # d loss / d logits
        delta = (error @ self.key_out.weight) * (pre > 0)  # d loss / d pre-activation
        gradients = (delta.unsqueeze(-1) * support_g.unsqueeze(-2)).detach()  # [B, S, units, features]
        return self.fast_key(gradients).mean(1)

    def example_fast_weights(self, support_f: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor]:
        """``W1*_i`` ``[B, S, units, features]`` and ``W2*_i`` ``[B, S, ways, units]``, one per support
        example, from the gradient of the base learner's loss on that example alone."""
        pre = self.base_hidden(support_f)
        hidden = F.relu(pre)
        probs = torch.softmax(self.base_out(hidden), dim=-1)
        error = probs - F.one_hot(support_y, probs.shape[-1]).to(probs.dtype)
        grad_out = (error.unsqueeze(-1) * hidden.unsqueeze(-2)).detach()
        delta = (error @ self.base_out.weight) * (pre > 0)
        grad_hidden = (delta.unsqueeze(-1) * support_f.unsqueeze(-2)).detach()
        return self.fast_hidden(grad_hidden), self.fast_out(grad_out)

    # ----------------------------------------------------------------------- learners

    def keys(self, g: Tensor, task_fast: Tensor | None) -> Tensor:
        """``u(Q, Q*, x)``: the augmented layer of the representation learner, ``[B, n, units]``; linear, as
        the released code's ``key_fc1(h) + h W*^T`` (rectified only with ``key_relu``)."""
        rectify = F.relu if self.hparams.key_relu else (lambda t: t)
        slow = rectify(self.key_hidden(g))
        if task_fast is None:
            return slow
        return slow + rectify(torch.einsum("buf,bnf->bnu", task_fast, g))

    def classify(self, f: Tensor, fast_hidden: Tensor | None, fast_out: Tensor | None) -> Tensor:
        """``b(W, W*, x)`` with per-example fast weights ``[B, n, units, features]``, ``[B, n, ways, units]``."""
        hidden = F.relu(self.base_hidden(f))
        if fast_hidden is not None:
            hidden = hidden + F.relu(torch.einsum("bnuf,bnf->bnu", fast_hidden, f))
        logits = self.base_out(hidden)
        if fast_out is not None:
            logits = logits + torch.einsum("bnwu,bnu->bnw", fast_out, hidden)
        return logits

    def _trunks(self, support_x: Tensor, query_x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        batch, shots_total = support_x.shape[:2]
        images = torch.cat([support_x, query_x], dim=1).flatten(0, 1)
        f = self.base_trunk(images).view(batch, -1, self.base_hidden.in_features)
        g = self.key_trunk(images).view(batch, -1, self.key_hidden.in_features)
        return f[:, :shots_total], f[:, shots_total:], g[:, :shots_total], g[:, shots_total:]

    def logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, fast: bool = True) -> Tensor:
        """Query logits ``[B, q, ways]`` after the one pass over the support set that Algorithm 1 makes.

        ``fast = False`` classifies with the slow weights alone (for tests and ablations).
        """
        support_f, query_f, support_g, query_g = self._trunks(support_x, query_x)
        if not fast:
            return self.classify(query_f, None, None)
        task_fast = self.task_fast_weights(support_g, support_y) if self.hparams.task_fast_weights else None
        memory_hidden, memory_out = self.example_fast_weights(support_f, support_y)  # M
        support_keys = self.keys(support_g, task_fast)  # R
        query_keys = self.keys(query_g, task_fast)
        attention = torch.softmax(
            F.normalize(query_keys, dim=-1) @ F.normalize(support_keys, dim=-1).transpose(1, 2), dim=-1
        )  # [B, q, S]
        fast_hidden = torch.einsum("bqs,bsuf->bquf", attention, memory_hidden)
        fast_out = torch.einsum("bqs,bswu->bqwu", attention, memory_out)
        return self.classify(query_f, fast_hidden, fast_out)

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        logits = self.logits(batch.support_x, batch.support_y, batch.query_x)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        accuracy = (logits.argmax(-1) == batch.query_y).float().mean().mul(100.0).detach()
        return StepOutput(loss, accuracy)

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self.logits(batch.support_x, batch.support_y, batch.query_x)
