"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Each class is represented by the mean embedding of its support examples (its prototype); a query is
classified by a softmax over negative squared Euclidean distances to the prototypes. Training is
episodic, often with more ways than at test (60-way on Omniglot), which the spec's profiles state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from metabench.episodes import EpisodeBatch
from metabench.reproduction import Reproduction, StepOutput, TaskInfo
from metabench.reproductions.backbones import Conv4


@dataclass(frozen=True)
class ProtoNetHyperparameters:
    hidden: int = 64
    distance: Literal["euclidean", "cosine"] = "euclidean"


def prototypes(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Mean embedding per label: ``[B, n, D]`` and ``[B, n]`` to ``[B, ways, D]``, for any support order."""
    one_hot = F.one_hot(labels, ways).to(embeddings.dtype)  # [B, n, ways]
    sums = one_hot.transpose(1, 2) @ embeddings
    return sums / one_hot.sum(1).unsqueeze(-1)


class PrototypicalNetwork(Reproduction):
    Hyperparameters = ProtoNetHyperparameters

    def __init__(self, hparams: ProtoNetHyperparameters, task: TaskInfo) -> None:
        super().__init__(hparams, task)
        if hparams.distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', not {hparams.distance!r}")
        self.encoder = Conv4(task.channels, hparams.hidden)

    def _embed(self, images: Tensor) -> Tensor:
        batch, count = images.shape[:2]
        return self.encoder(images.flatten(0, 1)).view(batch, count, -1)

    def _logits(self, batch: EpisodeBatch) -> Tensor:
        support_count = batch.support_x.shape[1]
        embedded = self._embed(torch.cat([batch.support_x, batch.query_x], dim=1))
        return self._classify(embedded[:, :support_count], batch.support_y, embedded[:, support_count:], batch.ways)

    def _classify(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        centres = prototypes(support, support_y, ways)
        if self.hparams.distance == "cosine":
            return F.normalize(query, dim=-1) @ F.normalize(centres, dim=-1).transpose(1, 2)
        return -(query.unsqueeze(2) - centres.unsqueeze(1)).pow(2).sum(-1)

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        logits = self._logits(batch)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        accuracy = (logits.argmax(-1) == batch.query_y).float().mean() * 100.0
        return StepOutput(loss, accuracy.detach())

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self._logits(batch)

    def embed(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def predict_embedded(self, batch: EpisodeBatch) -> Tensor:
        return self._classify(batch.support_x, batch.support_y, batch.query_x, batch.ways)
