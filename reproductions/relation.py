"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018).

The distance is learned: a relation module (two convolution blocks and a two-layer head with a
sigmoid) scores each (class, query) pair of feature maps, the class map being the sum of its support
maps, and is trained by mean squared error against one-hot relation scores. The embedding is the
shared Conv-4 as the authors' code builds it for this paper: pooling in the first two blocks only,
unpadded convolutions in those two, and the spatial map kept for the relation module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.reproduction import TaskInfo
from metabench.reproductions.backbones import Conv4, conv_block
from metabench.reproductions.metric import MetricReproduction, class_sums


@dataclass(frozen=True)
class RelationHyperparameters:
    hidden: int = 64
    relation_hidden: int = 8
    relation_padding: int = 1  # the code pads the relation module's convolutions on Omniglot, not on miniImageNet


class RelationNetwork(MetricReproduction):
    Hyperparameters = RelationHyperparameters

    def __init__(self, hparams: RelationHyperparameters, task: TaskInfo) -> None:
        super().__init__(hparams, task)
        self.encoder = Conv4(task.channels, hparams.hidden, pooled_blocks=2, unpadded_blocks=2, flatten=False)
        channels, height, width = self.encoder.output_shape(task.channels, task.image_size)
        self.relation_blocks = nn.Sequential(
            conv_block(2 * channels, hparams.hidden, padding=hparams.relation_padding),
            conv_block(hparams.hidden, hparams.hidden, padding=hparams.relation_padding),
        )
        with torch.no_grad():
            flat = self.relation_blocks.eval()(torch.zeros(1, 2 * channels, height, width)).numel()
        self.relation_blocks.train()
        self.relation_head = nn.Sequential(
            nn.Linear(flat, hparams.relation_hidden), nn.ReLU(), nn.Linear(hparams.relation_hidden, 1), nn.Sigmoid()
        )

    def compare(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """Relation scores in [0, 1], ``[B, Q, ways]``, of each query with each class's summed map."""
        classes = class_sums(support, support_y, ways)  # [B, ways, C, h, w]
        batch, queries = query.shape[:2]
        pairs = torch.cat(
            [
                classes.unsqueeze(1).expand(batch, queries, *classes.shape[1:]),
                query.unsqueeze(2).expand(batch, queries, ways, *query.shape[2:]),
            ],
            dim=3,
        )
        maps = self.relation_blocks(pairs.flatten(0, 2))
        return self.relation_head(maps.flatten(1)).view(batch, queries, ways)

    def loss(self, scores: Tensor, query_y: Tensor, ways: int) -> Tensor:
        return F.mse_loss(scores, F.one_hot(query_y, ways).to(scores.dtype))
