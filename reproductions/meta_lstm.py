"""Optimization as a Model for Few-Shot Learning (Ravi & Larochelle, ICLR 2017): the Meta-LSTM.

A learner (conv-4 with 32 filters, batch norm, ReLU and max-pooling, then a linear classifier) is
trained on an episode's support set by a meta-learner instead of by SGD. The meta-learner is
:class:`~metabench.reproductions.update_rules.MetaLearner`: an LSTM layer that reads the preprocessed
loss and gradient of every learner coordinate, under the "cell = parameters" update of
:class:`~metabench.reproductions.update_rules.MetaLSTMCell`::

    theta_t = f_t * theta_{t-1} - i_t * grad_t

with learned forget and input gates computed from the gradient, the loss, the previous parameters and
the previous gates, every weight shared by all coordinates. The learner's initial parameters (the
cell's ``c_0``) are learned with the meta-learner. After ``updates`` updates on the support set the
learner classifies the queries; the query loss, backpropagated through every update (the gradients
the meta-learner reads are treated as inputs, as the paper does), trains the meta-learner and the
initialisation. The runner's Adam and ``clip_grad_norm`` (0.25 in the paper's code) do the step.

Updates per episode: the paper gives 12 updates for 1-shot and 5 for 5-shot, each on the whole
support set (batch 5 and batch 25). The official 5-shot configuration instead runs ``nEpochs = 8``;
the specs follow the paper. Batch norm always normalises with the statistics of the batch it sees,
at test time too (the paper does not collect population statistics), so the numbers are
transductive over each episode's queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metabench.episodes import EpisodeBatch
from metabench.reproduction import Reproduction, StepOutput, TaskInfo
from metabench.reproductions.gbml_nets import ConvNet
from metabench.reproductions.update_rules import PREPROCESS_P, FlatParameters, MetaLearner, unroll


@dataclass(frozen=True)
class MetaLSTMHyperparameters:
    #: the learner's filters per convolution (32 in the paper)
    hidden: int = 32
    #: learner updates per training episode (paper: 12 for 1-shot, 5 for 5-shot)
    updates: int = 12
    #: learner updates per test episode (the paper uses the training number)
    eval_updates: int = 12
    #: units of the meta-learner's first (ordinary) LSTM layer
    meta_hidden: int = 20
    #: ``p`` of the log-and-sign preprocessing of loss and gradient (10 in the paper)
    preprocess_p: float = PREPROCESS_P


class MetaLSTM(Reproduction):
    Hyperparameters = MetaLSTMHyperparameters
    needs_grad_at_test = True

    def __init__(self, hparams: MetaLSTMHyperparameters, task: TaskInfo) -> None:
        super().__init__(hparams, task)
        if hparams.updates < 1 or hparams.eval_updates < 1:
            raise ValueError("the learner takes at least one update per episode")
        # The learner module only describes the network; its weights live in the flat vector below,
        # which is the meta-learner's cell state, so the module's own copy is never trained.
        self.learner = ConvNet(
            task.channels, hparams.hidden, task.ways, task.image_size, strided=False, head="flatten", norm="batch"
        )
        self.layout = FlatParameters.of(self.learner)
        self.initial = nn.Parameter(self.layout.flatten(dict(self.learner.named_parameters())).detach().clone())
        for parameter in self.learner.parameters():
            parameter.requires_grad_(False)
        self.meta_learner = MetaLearner(hparams.meta_hidden, hparams.preprocess_p)

    def logits(self, theta: Tensor, images: Tensor) -> Tensor:
        """The learner with flat parameters ``theta`` on ``images [n, C, H, W]``: ``[n, ways]``."""
        return functional_call(self.learner, self.layout.unflatten(theta), (images,))

    def adapt(self, support_x: Tensor, support_y: Tensor, updates: int) -> Tensor:
        """The learner's parameters after ``updates`` meta-learner updates on one episode's support set."""

        def loss(theta: Tensor) -> Tensor:
            return F.cross_entropy(self.logits(theta, support_x), support_y)

        state = self.meta_learner.initial_state(self.initial)
        return unroll(self.meta_learner, loss, self.initial, state, updates).theta

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        losses, correct = [], []
        for episode in range(batch.size):
            theta = self.adapt(batch.support_x[episode], batch.support_y[episode], self.hparams.updates)
            logits = self.logits(theta, batch.query_x[episode])
            losses.append(F.cross_entropy(logits, batch.query_y[episode]))
            correct.append((logits.detach().argmax(-1) == batch.query_y[episode]).float().mean())
        return StepOutput(torch.stack(losses).mean(), torch.stack(correct).mean() * 100.0)

    def predict(self, batch: EpisodeBatch) -> Tensor:
        outputs = []
        for episode in range(batch.size):
            with torch.enable_grad():
                theta = self.adapt(batch.support_x[episode], batch.support_y[episode], self.hparams.eval_updates)
            with torch.no_grad():
                outputs.append(self.logits(theta.detach(), batch.query_x[episode]))
        return torch.stack(outputs)
