"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Each class is represented by the mean embedding of its support examples (its prototype); a query is
classified by a softmax over negative squared Euclidean distances to the prototypes. Training is
episodic, often with more ways than at test (60-way on Omniglot), which the spec's profiles state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from metabench.reproduction import TaskInfo
from metabench.reproductions.backbones import Conv4
from metabench.reproductions.metric import MetricReproduction, class_means


@dataclass(frozen=True)
class ProtoNetHyperparameters:
    hidden: int = 64
    distance: Literal["euclidean", "cosine"] = "euclidean"


def prototypes(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Mean embedding per label: ``[B, n, D]`` and ``[B, n]`` to ``[B, ways, D]``, for any support order."""
    return class_means(embeddings, labels, ways)


class PrototypicalNetwork(MetricReproduction):
    Hyperparameters = ProtoNetHyperparameters

    def __init__(self, hparams: ProtoNetHyperparameters, task: TaskInfo) -> None:
        super().__init__(hparams, task)
        if hparams.distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', not {hparams.distance!r}")
        self.encoder = Conv4(task.channels, hparams.hidden)

    def compare(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        centres = prototypes(support, support_y, ways)
        if self.hparams.distance == "cosine":
            return F.normalize(query, dim=-1) @ F.normalize(centres, dim=-1).transpose(1, 2)
        return -(query.unsqueeze(2) - centres.unsqueeze(1)).pow(2).sum(-1)
