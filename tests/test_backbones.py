"""The shared embedding networks: ``MaxPool2x2`` is ``nn.MaxPool2d(2)`` to the bit, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metabench.reproductions.backbones import Conv4, MaxPool2x2


def _tied_maps(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if kind == "relu":  # a ReLU's output: windows of zeros, the usual case after conv-BN-ReLU
        return torch.relu(torch.randn(6, 8, 14, 14, generator=g))
    if kind == "coarse":  # few distinct values: ties among positive maxima too
        return torch.randint(0, 3, (6, 8, 14, 14), generator=g).to(torch.float32)
    return torch.randn(6, 8, 15, 15, generator=g, dtype=torch.float64)  # odd size, float64


@pytest.mark.parametrize("kind", ["relu", "coarse", "odd"])
def test_the_pooling_picks_the_same_elements_and_passes_the_same_gradient(kind: str) -> None:
    maps = _tied_maps(kind)
    weights = torch.randn(maps.shape[0], maps.shape[1], maps.shape[2] // 2, maps.shape[3] // 2, dtype=maps.dtype)
    outputs, grads = [], []
    for pool in (nn.MaxPool2d(2), MaxPool2x2()):
        x = maps.clone().requires_grad_()
        out = pool(x)
        (out * weights).sum().backward()
        assert out.is_contiguous()
        outputs.append(out)
        grads.append(x.grad)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(grads[0], grads[1])


def test_conv4_trains_to_the_same_bits_with_either_pooling() -> None:
    torch.manual_seed(0)
    fast = Conv4(1, 16)
    plain = Conv4(1, 16)
    plain.load_state_dict(fast.state_dict())
    for block in plain.layers:
        block[-1] = nn.MaxPool2d(2)
    images = torch.rand(20, 1, 28, 28)
    for net in (fast, plain):
        net(images).pow(2).sum().backward()
    assert torch.equal(fast(images), plain(images))
    for a, b in zip(fast.parameters(), plain.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None and torch.equal(a.grad, b.grad)


def test_inside_torch_func_it_is_the_plain_layer() -> None:
    maps = _tied_maps("relu")
    batched = torch.func.vmap(MaxPool2x2())(maps.unsqueeze(1))
    assert torch.equal(batched.squeeze(1), nn.MaxPool2d(2)(maps))
