"""Embedding networks shared by several papers, so that no method carries a private copy."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int, pool: bool = True, padding: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU and (optionally) 2x2 max-pooling: the Conv-4 block."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """The four-block embedding of Vinyals et al. and Snell et al.: 64 filters give 64-d on 28x28 Omniglot.

    Sung et al.'s Relation Networks use the same blocks with two changes their code makes: only the
    first ``pooled_blocks`` blocks pool, and the first ``unpadded_blocks`` convolutions have no padding;
    they also keep the spatial map (``flatten=False``) for their relation module to compare.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        blocks: int = 4,
        pooled_blocks: int | None = None,
        unpadded_blocks: int = 0,
        flatten: bool = True,
    ) -> None:
        super().__init__()
        pooled = blocks if pooled_blocks is None else pooled_blocks
        channels = [in_channels] + [hidden] * blocks
        self.layers = nn.Sequential(
            *(
                conv_block(a, b, pool=i < pooled, padding=0 if i < unpadded_blocks else 1)
                for i, (a, b) in enumerate(pairwise(channels))
            )
        )
        self.flatten = flatten

    def forward(self, images: Tensor) -> Tensor:
        """``[n, C, H, W]`` images to ``[n, features]`` embeddings (or ``[n, hidden, h, w]`` maps)."""
        maps = self.layers(images)
        return maps.flatten(1) if self.flatten else maps

    def output_shape(self, in_channels: int, image_size: int) -> tuple[int, ...]:
        """The shape of one image's output, found by running a blank image through the network."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            shape = tuple(self(torch.zeros(1, in_channels, image_size, image_size)).shape[1:])
        self.train(was_training)
        return shape
