"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016).

A query's label distribution is an attention-weighted sum of the support labels, the attention a
softmax over cosine similarities between the query's embedding and each support embedding. With full
context embeddings (FCE), each support embedding is re-read by a bidirectional LSTM over the whole
support set, ``g(x_i, S) = g'(x_i) + h_fwd_i + h_bwd_i``, and each query embedding is refined by an
LSTM that attends over those support embeddings for ``fce_steps`` processing steps:

    h_hat_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1});   h_k = h_hat_k + f'(x)
    r_k = sum_i softmax_i(h_k . g(x_i)) g(x_i)

The paper does not state the number of processing steps; the spec does.

Line-by-line check against the paper (Sec. 2.1, eqs. 1-2; Omniglot in Sec. 4.1.1) and the most used public
re-implementation (AntreasAntoniou/MatchingNetworks, ``one_shot_learning_network.py``), issue 16:

* Attention, eq. (2): ``a(x_hat, x_i) = softmax_i c(f(x_hat), g(x_i))`` with ``c`` the cosine: as the
  paper writes it (default). **Unknown, decided by ablation**: the embedding ends in ReLU and
  max-pooling, so every feature is >= 0 and every cosine lies in [0, 1]; the softmax over ``n``
  supports then gives the true support at most ``e / (e + n - 1)`` (0.40 at 5-way 1-shot, 0.13 at
  20-way), so the loss can never fall below ``-log`` of that and keeps pulling on examples it already
  classifies right. The paper states no temperature. Antoniou's code divides the dot product by the
  *support* norm only (``DistanceNetwork``: ``dot_product * rsqrt(sum_support)``), so the query's norm
  acts as a learned inverse temperature, and its embedding uses leaky ReLU (features can be negative).
  ``normalize_query = false`` reproduces the first; ``scale`` multiplies the similarities (a fixed
  inverse temperature). Both default to the paper's literal form.
* Embedding: Conv-4, 64 filters, BN, ReLU, 2x2 max-pool (paper Sec. 4.1.1): same. No FCE on Omniglot: same.
* Loss: negative log of the attention-weighted label mass of the true class: same.
* Optimiser, episode count, training queries: not published; the spec states its choices (departure,
  documented in ``registry/matchingnet.toml``).
* Batch norm: running statistics at test (``model.eval()``); the paper does not say. Unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.reproduction import TaskInfo
from metabench.reproductions.backbones import Conv4
from metabench.reproductions.metric import MetricReproduction


@dataclass(frozen=True)
class MatchingHyperparameters:
    hidden: int = 64
    fce: bool = False
    fce_steps: int = 5
    #: cosine (true, the paper) or the dot product over the support norm only (false, Antoniou's code)
    normalize_query: bool = True
    #: a fixed inverse temperature on the similarities (1.0: the paper's plain softmax over cosines)
    scale: float = 1.0


class AttentionLSTM(nn.Module):
    """The query-side LSTM of FCE: its hidden state is the pair ``[h, r]``, its output ``h`` has the
    embedding's size, and ``r`` is what attention over the support set read at the previous step."""

    def __init__(self, size: int, steps: int) -> None:
        super().__init__()
        self.input_gates = nn.Linear(size, 4 * size)
        self.hidden_gates = nn.Linear(2 * size, 4 * size, bias=False)
        self.steps = steps

    def forward(self, query: Tensor, support: Tensor) -> Tensor:
        """Refine ``query [B, Q, D]`` by attending over the (context-embedded) ``support [B, S, D]``."""
        h = torch.zeros_like(query)
        c = torch.zeros_like(query)
        read = torch.zeros_like(query)
        from_input = self.input_gates(query)
        for _ in range(self.steps):
            gates = from_input + self.hidden_gates(torch.cat([h, read], dim=-1))
            in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=-1)
            c = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
            h = torch.sigmoid(out_gate) * torch.tanh(c) + query
            attention = torch.softmax(h @ support.transpose(1, 2), dim=-1)
            read = attention @ support
        return h


class MatchingNetwork(MetricReproduction):
    Hyperparameters = MatchingHyperparameters

    def __init__(self, hparams: MatchingHyperparameters, task: TaskInfo) -> None:
        super().__init__(hparams, task)
        self.encoder = Conv4(task.channels, hparams.hidden)
        if hparams.fce:
            size = self.encoder.output_shape(task.channels, task.image_size)[0]
            self.support_lstm = nn.LSTM(size, size, batch_first=True, bidirectional=True)
            self.query_lstm = AttentionLSTM(size, hparams.fce_steps)

    def context(self, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """Full context embeddings of both sets (the identity without FCE)."""
        if not self.hparams.fce:
            return support, query
        both_ways, _ = self.support_lstm(support)
        forward, backward = both_ways.chunk(2, dim=-1)
        support = support + forward + backward
        return support, self.query_lstm(query, support)

    def attention(self, support: Tensor, query: Tensor) -> Tensor:
        """Eq. (2): softmax over the supports ``[B, S, D]`` of each query's ``[B, Q, D]`` similarity."""
        if self.hparams.normalize_query:
            query = F.normalize(query, dim=-1)
        similarity = query @ F.normalize(support, dim=-1).transpose(1, 2)
        return torch.softmax(self.hparams.scale * similarity, dim=-1)

    def compare(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """Log of the attention-weighted label distribution ``[B, Q, ways]``.

        It sums to one over the ways, so the base class's cross-entropy on it is exactly the paper's
        negative log-likelihood of the true label.
        """
        support, query = self.context(support, query)
        attention = self.attention(support, query)  # [B, Q, S]
        label_mass = attention @ F.one_hot(support_y, ways).to(attention.dtype)
        return label_mass.clamp_min(torch.finfo(label_mass.dtype).tiny).log()
