"""HyperNetworks (Ha, Dai & Le, ICLR 2017): the static hypernetwork of the MNIST experiment (App. A.3.1).

The main network is a small convnet; its second kernel (7x7, 16 to 16 channels) is either an ordinary
weight (12,544 parameters) or *generated* by a two-layer linear hypernetwork from a learned 4-dim
embedding ``z`` (4 + 4,240 = 4,244 parameters). In the paper's notation (section 3.1), with ``N_z`` = 4,
``d`` = ``N_z`` (the paper sets the hidden size to the embedding size), ``N_in`` = ``N_out`` = 16 and
``f`` = 7:

* ``a_i = W_i z + B_i`` for each input channel ``i`` (``W_i``: ``d x N_z``, ``B_i``: ``d``), then
* ``K_i = W_out a_i + B_out`` (``W_out``: ``f*f*N_out x d``, ``B_out``: ``f*f*N_out``, shared by all ``i``)
  is the slice of the kernel that reads input channel ``i``.

Parameters: ``N_in (d N_z + d) + (f f N_out d + f f N_out)`` = 16 x 20 + (3,136 + 784) = 4,240, plus
the 4 of ``z``. The generated kernel has rank at most ``d + 1`` as a 16 x 784 matrix: the relaxed
weight sharing the paper trades for a third of the parameters.

The rest of the main network is not in the paper's text. It follows the authors' MNIST example
(hardmaru's notebook, as ported in public copies) and the summary of the arXiv v1 paper's MNIST model:
conv 7x7 1->16 ('same' padding), ReLU, 2x2 max-pool; conv 7x7 16->16 ('same'), ReLU, 2x2 max-pool;
a linear layer 7*7*16 = 784 -> 10. Both convolutions have biases, which count toward neither kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.episodes import EpisodeBatch
from metabench.reproduction import Reproduction, StepOutput, TaskInfo


@dataclass(frozen=True)
class HyperNetworkHyperparameters:
    #: generate the second kernel with the static hypernetwork (true) or learn it directly (false)
    hyper: bool = True
    channels: int = 16
    kernel_size: int = 7
    #: N_z, the embedding size; the hypernetwork's hidden size d equals it, as in the paper
    z_dim: int = 4


class StaticHyperNetwork(nn.Module):
    """Generates one ``[out, in, f, f]`` convolution kernel from a learned embedding ``z``.

    Initialisation (not stated in the paper): ``z`` ~ N(0, 1), ``W_i`` ~ N(0, 1/N_z) so that each
    ``a_i`` starts with entries of about unit variance, ``W_out`` ~ N(0, s^2/d) with ``s`` the standard
    deviation of PyTorch's default initialisation of the plain kernel (1/sqrt(3 fan_in)), biases zero:
    the generated kernel then starts at the plain kernel's scale, so the two variants differ only in
    how the kernel is parametrised, not in where training starts from.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, z_dim: int) -> None:
        super().__init__()
        self.shape = (in_channels, out_channels, kernel_size, kernel_size)
        hidden = z_dim
        self.z = nn.Parameter(torch.randn(z_dim))
        self.w_in = nn.Parameter(torch.randn(in_channels * hidden, z_dim) / math.sqrt(z_dim))  # W_1..W_N_in stacked
        self.b_in = nn.Parameter(torch.zeros(in_channels * hidden))
        scale = 1.0 / math.sqrt(3.0 * in_channels * kernel_size * kernel_size)
        outputs = out_channels * kernel_size * kernel_size
        self.w_out = nn.Parameter(torch.randn(outputs, hidden) * scale / math.sqrt(hidden))
        self.b_out = nn.Parameter(torch.zeros(outputs))

    def forward(self) -> Tensor:
        in_channels, out_channels, height, width = self.shape
        a = (self.w_in @ self.z + self.b_in).view(in_channels, -1)  # a_i, one row per input channel
        slices = a @ self.w_out.T + self.b_out  # K_i, one row per input channel: [N_in, N_out * f * f]
        return slices.view(in_channels, out_channels, height, width).transpose(0, 1)  # torch layout [out, in, f, f]


class HyperConvNet(Reproduction):
    """The paper's MNIST convnet, with a plain or a hypernetwork-generated second kernel.

    It is trained as plain supervised learning: a batch is tasks of labelled examples with no support
    set (see :mod:`metabench.data.labelled`), the loss is cross-entropy over every example, the
    training score is the error (%), and a prediction is the logits of each query image alone.
    """

    Hyperparameters = HyperNetworkHyperparameters

    def __init__(self, hparams: HyperNetworkHyperparameters, task: TaskInfo) -> None:
        super().__init__(hparams, task)
        c, f = hparams.channels, hparams.kernel_size
        if f % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, not {f}")
        self.conv1 = nn.Conv2d(task.channels, c, f, padding=f // 2)
        self.generator: StaticHyperNetwork | None = None
        self.kernel2: nn.Parameter | None = None
        if hparams.hyper:
            self.generator = StaticHyperNetwork(c, c, f, hparams.z_dim)
        else:
            plain = nn.Conv2d(c, c, f)  # only for PyTorch's default initialisation of its weight
            self.kernel2 = nn.Parameter(plain.weight.detach().clone())
        self.bias2 = nn.Parameter(torch.zeros(c))
        pooled = task.image_size // 4
        self.classifier = nn.Linear(c * pooled * pooled, task.ways)

    def second_kernel(self) -> Tensor:
        """The second convolution's kernel ``[out, in, f, f]``, generated or stored."""
        if self.generator is not None:
            return self.generator()
        assert self.kernel2 is not None
        return self.kernel2

    def second_kernel_parameters(self) -> int:
        """Learned numbers behind the second kernel: the hypernetwork and ``z``, or the kernel itself."""
        source = self.generator.parameters() if self.generator is not None else [self.kernel2]
        return sum(p.numel() for p in source if p is not None)

    def logits(self, images: Tensor) -> Tensor:
        """``[n, C, H, W]`` images to ``[n, classes]`` logits."""
        f = self.hparams.kernel_size
        x = F.max_pool2d(F.relu(self.conv1(images)), 2)
        x = F.max_pool2d(F.relu(F.conv2d(x, self.second_kernel(), self.bias2, padding=f // 2)), 2)
        return self.classifier(x.flatten(1))

    def predict(self, batch: EpisodeBatch) -> Tensor:
        size, queries = batch.query_y.shape
        return self.logits(batch.query_x.flatten(0, 1)).view(size, queries, -1)

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        logits = self.predict(batch).flatten(0, 1)
        labels = batch.query_y.flatten()
        loss = F.cross_entropy(logits, labels)
        error = (logits.argmax(-1) != labels).float().mean().mul(100.0).detach()
        return StepOutput(loss, error)
