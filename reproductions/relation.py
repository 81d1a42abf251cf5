"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018).

The distance is learned: a relation module (two convolution blocks and a two-layer head with a
sigmoid) scores each (class, query) pair of feature maps, the class map being the sum of its support
maps, and is trained by mean squared error against one-hot relation scores. The embedding is the
shared Conv-4 as the authors' code builds it for this paper: pooling in the first two blocks only,
unpadded convolutions in those two, and the spatial map kept for the relation module.

Line-by-line check against the released code (floodsung/LearningToCompare_FSL,
``omniglot/omniglot_train_one_shot.py`` and ``omniglot_train_few_shot.py``; issue 16):

* Encoder ``CNNEncoder``: conv 3x3 unpadded + BN + ReLU + pool twice, then conv 3x3 padded + BN + ReLU
  twice, no pooling: 28x28 -> 64x5x5. Same.
* Relation module (Omniglot): two blocks of padded conv + BN + ReLU + pool (5 -> 2 -> 1), ``fc1`` 64 -> 8
  with ReLU, ``fc2`` 8 -> 1 with a sigmoid; pairs are ``cat(class map, query map)`` in that order. Same
  (``relation_padding = 1``; 0 for miniImageNet, whose code does not pad).
* Class map: the sum of the class's support maps (``torch.sum(sample_features, 1)``). Same.
* Loss: ``MSELoss`` (mean) of the relation scores against one-hot labels. Same.
* Optimiser: Adam 1e-3 for each of the two modules, ``StepLR(step_size=100000, gamma=0.5)``. Same (one
  Adam over both is the same update).
* Gradient clipping: ``clip_grad_norm(..., 0.5)`` on each module before every step. **Defect, fixed in
  the spec** (``clip_grad_norm = 0.5`` in the paper and quick profiles); departure: the runner clips the
  norm of both modules' gradients together, the code each module's on its own.
* Initialisation ``weights_init``: conv weights N(0, 2 / (9 * out_channels)), conv biases 0; BN 1 and 0;
  linear weights N(0, 0.01) and biases **1** (the relation scores start near sigmoid(1) = 0.73). Torch's
  defaults differ. Unknown effect (Adam and BN make the scale of the conv weights an effective learning
  rate): ``init = "released"`` gives the code's, the default keeps torch's until an ablation decides.
* Queries per class at training (README ``-b``): 19 / 15 / 10 / 5 for Omniglot 5w1s / 5w5s / 20w1s /
  20w5s; at test ``K`` per class. Same (the spec's ``train_queries`` and ``queries``).
* Batch norm: ``momentum=1`` and the test loop never calls ``.eval()``, so the code normalises each
  batch by its own statistics at test too (support and query maps are separate batches, at training as
  well): its numbers are transductive in the batch-norm sense. Here support and query go through the
  encoder as one batch and the test uses running statistics. Documented departure (the harness's
  evaluator owns ``eval()``); it can only make this reproduction's test harder, not easier.
* Data: the code rotates a whole episode by one random multiple of 90 degrees and normalises pixels
  with mean 0.92206, std 0.08426; here rotations are separate classes (MAML's split) and pixels are in
  [0, 1] (ink = 1). Documented departures (the spec's header).
* Budget: 1,000,000 episodes in the code; the quick profile's 1000 are 0.1%. At 1000 episodes a 5-way
  episode carries 100 images and 475 relation pairs, a 20-way one 220 images and 4000 pairs, which is
  why the quick 20-way result can sit closer to its paper than the 5-way one (not a defect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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
    #: ``torch``: torch's default initialisation; ``released``: the authors' ``weights_init``
    init: Literal["torch", "released"] = "torch"


def released_init(module: nn.Module) -> None:
    """The released code's ``weights_init``: He-normal conv weights over ``k * k * out_channels``, zero
    conv biases, BN weight 1 and bias 0, linear weights N(0, 0.01) and linear biases 1."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (kh * kw * module.out_channels)))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.01)
        nn.init.ones_(module.bias)


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
        if hparams.init not in ("torch", "released"):
            raise ValueError(f"init must be 'torch' or 'released', not {hparams.init!r}")
        if hparams.init == "released":
            self.apply(released_init)

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
