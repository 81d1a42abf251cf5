"""Embedding networks shared by several papers, so that no method carries a private copy."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _PoolChannelsLast(torch.autograd.Function):
    """2x2 max-pooling computed in the channels-last layout, its gradient in the usual one."""

    @staticmethod
    def forward(ctx: Any, maps: Tensor) -> Tensor:
        pooled, indices = F.max_pool2d_with_indices(maps.contiguous(memory_format=torch.channels_last), [2, 2])
        indices = indices.contiguous()
        ctx.save_for_backward(maps, indices)
        return pooled.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        maps, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, maps, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``, giving the same values, the same chosen elements and so the same gradients,
    but several times faster on a CPU.

    Why: torch's CPU kernel for max-pooling with indices is slow in the usual channels-first layout; on
    the 360 x 64 x 28 x 28 maps of a 60-way ProtoNet episode it took a fifth of the training step, about
    ten times what the channels-last kernel takes. This copies the maps to channels-last, pools there,
    and copies the result and indices back, so every later layer sees exactly what it saw before (a
    convolution given channels-last input would compute in another order). Both kernels scan a window in
    the same order and keep the first maximum, so ties pick the same element (``tests/test_backbones.py``
    checks it on tied maps). The backward is torch's own from those indices. Elsewhere (a GPU, inside
    ``torch.func`` transforms, other shapes) it is ``nn.MaxPool2d(2)`` itself.
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, maps: Tensor) -> Tensor:
        plain = maps.device.type != "cpu" or maps.dim() != 4 or not maps.is_contiguous()
        if plain or torch._C._functorch.peek_interpreter_stack() is not None:
            return super().forward(maps)
        pooled: Tensor = _PoolChannelsLast.apply(maps)
        return pooled


def conv_block(in_channels: int, out_channels: int, pool: bool = True, padding: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU and (optionally) 2x2 max-pooling: the Conv-4 block."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]
    if pool:
        layers.append(MaxPool2x2())
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
