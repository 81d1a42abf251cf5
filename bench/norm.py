"""The batch normalisation of the MAML family, exact to second order inside and outside ``torch.func``."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NormMode = Literal["batch", "running"]


class Norm(nn.Module):
    """Batch normalisation over all axes but the channel axis (1), exact to second order everywhere.

    Under a ``torch.func`` transform it is written from elementary tensor operations (the native kernel's
    second-order gradients under ``vmap`` are wrong in torch 2.13); elsewhere (the per-task loop, plain
    forward passes) it calls torch's fused ``batch_norm``, whose double backward is right there and which is
    several times cheaper for small networks. The tests hold the two forms equal in float64.

    ``mode = "batch"`` always normalises with the statistics of the batch it sees: at test time that is
    the task's own examples (MAML's TensorFlow code, hence "transductive"). ``mode = "running"`` uses
    running statistics in evaluation mode; they are updated only inside :meth:`collecting`, a plain
    no-grad forward pass that the reproduction runs outside any ``vmap`` (a side effect on a buffer
    cannot happen inside one).
    """

    def __init__(self, channels: int, mode: NormMode = "batch", momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if mode not in ("batch", "running"):
            raise ValueError(f"norm mode must be 'batch' or 'running', not {mode!r}")
        self.mode = mode
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.running_mean: Tensor
        self.running_var: Tensor
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.collect = False

    def forward(self, x: Tensor) -> Tensor:
        use_running = self.mode == "running" and not self.training and not self.collect
        if not self.collect and not _under_functorch() and (use_running or x.numel() > x.shape[1]):
            # Outside torch.func transforms torch's fused kernel is exact to any order and one op instead of
            # about ten, which is most of a small network's time on the per-task loop path.
            return F.batch_norm(
                x,
                self.running_mean if use_running else None,
                self.running_var if use_running else None,
                self.weight,
                self.bias,
                training=not use_running,
                eps=self.eps,
            )
        shape = [1, -1] + [1] * (x.dim() - 2)
        axes = [0, *range(2, x.dim())]
        if self.mode == "running" and not self.training and not self.collect:
            mean, var = self.running_mean.view(shape), self.running_var.view(shape)
        else:
            mean = x.mean(dim=axes, keepdim=True)
            centred = x - mean
            var = (centred * centred).mean(dim=axes, keepdim=True)
            if self.collect:
                with torch.no_grad():
                    count = x.numel() // x.shape[1]
                    unbiased = var.flatten() * count / max(count - 1, 1)
                    self.running_mean.lerp_(mean.flatten(), self.momentum)
                    self.running_var.lerp_(unbiased, self.momentum)
            return centred / torch.sqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


def _under_functorch() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``) is running: there :class:`Norm` must use its
    elementary form, because the native kernel's second-order gradients under ``vmap`` are wrong."""
    return torch._C._functorch.peek_interpreter_stack() is not None
