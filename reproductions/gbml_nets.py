"""The networks of the gradient-based meta-learners, built for the inner-loop engine.

Every normalisation is :class:`metabench.inner.Norm`, never torch's ``BatchNorm2d`` module: the
native kernel's second-order gradients under ``vmap`` are wrong in torch 2.13 on the CPU, so ``Norm``
switches to elementary tensor operations under ``torch.func`` transforms.

* ``conv4-strided``: Finn et al.'s Omniglot network (and Nichol et al.'s): four 3x3 convolutions with
  stride 2 and "same" padding, norm, ReLU; 28 -> 14 -> 7 -> 4 -> 2. MAML averages the last map over
  space (64 features, its TensorFlow ``reduce_mean``); Reptile flattens it (256 features).
* ``conv4-pool``: the miniImageNet network: stride-1 convolutions, norm, ReLU, 2x2 max-pooling
  (32 filters in both papers), flattened.
* ``mlp``: fully connected layers with norm and ReLU (MAML's "no conv" Omniglot model, 256-128-64-64;
  its sinusoid model, 40-40, has no norm).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from torch import Tensor, nn

from metabench.inner import Norm, NormMode

Head = Literal["mean", "flatten"]


class ConvNet(nn.Module):
    """Four conv-norm-ReLU blocks (strided, or followed by max-pooling) and a linear classifier."""

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        outputs: int,
        image_size: int,
        *,
        strided: bool,
        head: Head,
        norm: NormMode,
        blocks: int = 4,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = image_size
        for a, b in pairwise([in_channels] + [hidden] * blocks):
            if strided:
                layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), Norm(b, norm), nn.ReLU()]
                size = (size + 1) // 2
            else:
                layers += [nn.Conv2d(a, b, 3, padding=1), Norm(b, norm), nn.ReLU(), nn.MaxPool2d(2)]
                size = size // 2
        self.features = nn.Sequential(*layers)
        self.head = head
        self.classifier = nn.Linear(hidden if head == "mean" else hidden * size * size, outputs)

    def forward(self, x: Tensor) -> Tensor:
        maps = self.features(x)
        pooled = maps.mean(dim=(-2, -1)) if self.head == "mean" else maps.flatten(1)
        return self.classifier(pooled)


class MLP(nn.Module):
    """Linear layers with ReLU (and :class:`Norm` when ``norm`` is given) on flattened inputs."""

    def __init__(self, inputs: int, hidden: tuple[int, ...], outputs: int, norm: NormMode | None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in pairwise([inputs, *hidden]):
            layers.append(nn.Linear(a, b))
            if norm is not None:
                layers.append(Norm(b, norm))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(hidden[-1] if hidden else inputs, outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.flatten(1))
