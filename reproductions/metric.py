"""What the metric-based family shares: embed each image on its own, then compare queries to supports.

Prototypical, Matching, Relation and Siamese networks differ only in how a query is compared with an
episode's support set and in the loss on those comparisons. The embedding of an image never depends
on the episode, so the evaluator embeds each test image once (see ``Reproduction.embed``) and only the
comparison runs per episode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.episodes import EpisodeBatch
from metabench.reproduction import Reproduction, StepOutput


class MetricReproduction(Reproduction):
    """Base of the metric-based methods: subclasses set ``encoder`` and define :meth:`compare`."""

    encoder: nn.Module

    def compare(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """Scores ``[B, queries, ways]`` (highest wins) from embedded supports ``[B, n, ...]`` and queries."""
        raise NotImplementedError

    def loss(self, scores: Tensor, query_y: Tensor, ways: int) -> Tensor:
        """The training loss on a batch's scores; cross-entropy over the ways unless a paper says otherwise."""
        return F.cross_entropy(scores.flatten(0, 1), query_y.flatten())

    def embed(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def predict_embedded(self, batch: EpisodeBatch) -> Tensor:
        return self.compare(batch.support_x, batch.support_y, batch.query_x, batch.ways)

    def predict(self, batch: EpisodeBatch) -> Tensor:
        support_count = batch.support_x.shape[1]
        images = torch.cat([batch.support_x, batch.query_x], dim=1)
        embedded = self.encoder(images.flatten(0, 1))
        embedded = embedded.view(images.shape[0], images.shape[1], *embedded.shape[1:])
        return self.compare(embedded[:, :support_count], batch.support_y, embedded[:, support_count:], batch.ways)

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        scores = self.predict(batch)
        accuracy = (scores.argmax(-1) == batch.query_y).float().mean() * 100.0
        return StepOutput(self.loss(scores, batch.query_y, batch.ways), accuracy.detach())


def class_sums(values: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Sum of ``values [B, n, ...]`` over the support examples of each label: ``[B, ways, ...]``."""
    one_hot = F.one_hot(labels, ways).to(values.dtype)  # [B, n, ways]
    sums = one_hot.transpose(1, 2) @ values.flatten(2)
    return sums.view(*sums.shape[:2], *values.shape[2:])


def class_means(values: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Mean of ``values [B, n, ...]`` over the support examples of each label: ``[B, ways, ...]``."""
    counts = F.one_hot(labels, ways).to(values.dtype).sum(1)  # [B, ways]
    sums = class_sums(values, labels, ways)
    return sums / counts.view(*counts.shape, *([1] * (sums.dim() - 2)))
