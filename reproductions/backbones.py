"""Embedding networks shared by several papers, so that no method carries a private copy."""

from __future__ import annotations

from itertools import pairwise

from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int, pool: bool = True) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU and (optionally) 2x2 max-pooling: the Conv-4 block."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """The four-block embedding of Vinyals et al. and Snell et al.: 64 filters give 64-d on 28x28 Omniglot."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, blocks: int = 4) -> None:
        super().__init__()
        channels = [in_channels] + [hidden] * blocks
        self.layers = nn.Sequential(*(conv_block(a, b) for a, b in pairwise(channels)))

    def forward(self, images: Tensor) -> Tensor:
        """``[n, C, H, W]`` images to ``[n, features]`` embeddings."""
        return self.layers(images).flatten(1)
