"""Conditional Neural Processes (Garnelo et al., ICML 2018).

A CNP encodes each context pair on its own with an MLP ``h``, aggregates the encodings by their mean
into one representation ``r`` (so the prediction cannot depend on the order of the context), and
decodes each target from ``[r, x_t]`` with an MLP ``g``. One module serves the paper's three tasks,
chosen by the spec's ``model.task``:

* ``regression`` (1-D GP functions, MNIST image completion): a context pair is ``(x, y)``; the decoder
  outputs a mean and a raw scale per output dimension, and the standard deviation is bounded below,
  ``sigma = min_std + (1 - min_std) * softplus(raw)`` (the notebook's ``0.1 + 0.9 softplus``). The loss is
  the negative Gaussian log-likelihood of the targets (which include the context), averaged over them.
  :meth:`CNP.predict` returns ``[B, targets, y_dims, 2]``: mean and standard deviation.
* ``classification`` (Omniglot): a context pair is (image embedding, one-hot label), the image embedded
  by the Conv-4 of :mod:`metabench.reproductions.backbones`; the encodings are averaged per class into
  ``r_c``, and the decoder scores each (query embedding, ``r_c``) pair with one logit, so one decoder
  serves any number of ways; the loss is the cross-entropy (the categorical log-likelihood). The
  paper's exact classifier decoder is not confirmed (its table is UNVERIFIED); this is the design the
  registry notes state.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.episodes import EpisodeBatch
from metabench.evaluate import gaussian_log_likelihood
from metabench.reproduction import Reproduction, StepOutput, TaskInfo
from metabench.reproductions.backbones import Conv4
from metabench.reproductions.metric import class_means


@dataclass(frozen=True)
class CNPHyperparameters:
    task: Literal["regression", "classification"] = "regression"
    #: encoder MLP sizes; the last is the size of the representation r (the notebook: 4 x 128)
    encoder: tuple[int, ...] = (128, 128, 128, 128)
    #: decoder hidden sizes; its output layer (mean and scale per output, or one logit) is added
    decoder: tuple[int, ...] = (128, 128)
    #: the lower bound of the predicted standard deviation (0.1 in the notebook)
    min_std: float = 0.1
    #: Conv-4 filters of the image embedding (classification only)
    embedding: int = 64


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them and none after the last (the notebook's MLP)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class CNP(Reproduction):
    Hyperparameters = CNPHyperparameters

    def __init__(self, hparams: CNPHyperparameters, task: TaskInfo) -> None:
        hparams = CNPHyperparameters(  # TOML arrays arrive as lists
            **{**hparams.__dict__, "encoder": tuple(hparams.encoder), "decoder": tuple(hparams.decoder)}
        )
        super().__init__(hparams, task)
        if hparams.task not in ("regression", "classification"):
            raise ValueError(f"unknown CNP task {hparams.task!r} (regression or classification)")
        if not 0.0 < hparams.min_std < 1.0:
            raise ValueError(f"min_std must lie in (0, 1), found {hparams.min_std}")
        self.regression = hparams.task == "regression"
        represent = hparams.encoder[-1]
        if self.regression:
            self.x_dims, self.y_dims = task.channels, 1
            self.encoder = mlp((self.x_dims + self.y_dims, *hparams.encoder))
            self.decoder = mlp((represent + self.x_dims, *hparams.decoder, 2 * self.y_dims))
        else:
            self.embedder = Conv4(task.channels, hparams.embedding)
            features = self.embedder.output_shape(task.channels, task.image_size)[0]
            self.encoder = mlp((features + task.ways, *hparams.encoder))
            self.decoder = mlp((represent + features, *hparams.decoder, 1))

    # ------------------------------------------------------------------ regression

    def gaussian(self, context_x: Tensor, context_y: Tensor, target_x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation ``[B, targets, y_dims]`` of each target given the context."""
        representation = self.encoder(torch.cat([context_x, context_y], dim=-1)).mean(dim=1)  # [B, r]
        tiled = representation.unsqueeze(1).expand(-1, target_x.shape[1], -1)
        mean, raw = self.decoder(torch.cat([tiled, target_x], dim=-1)).chunk(2, dim=-1)
        floor = self.hparams.min_std
        return mean, floor + (1.0 - floor) * F.softplus(raw)

    # ------------------------------------------------------------------ classification

    def embed(self, images: Tensor) -> Tensor:
        """Conv-4 features of ``[n, C, H, W]`` images (classification): the evaluator embeds each test image once."""
        if self.regression:
            raise TypeError("a regression CNP has no image embedding")
        return self.embedder(images)

    def logits(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """``[B, queries, ways]`` from embedded supports ``[B, n, F]`` with labels and queries ``[B, q, F]``."""
        if ways != self.task.ways:
            raise ValueError(
                f"this CNP classifier encodes {self.task.ways}-way one-hot labels, got {ways}-way episodes"
            )
        encoded = self.encoder(torch.cat([support, F.one_hot(support_y, ways).to(support.dtype)], dim=-1))
        per_class = class_means(encoded, support_y, ways)  # [B, ways, r]
        pairs = torch.cat(
            [
                query.unsqueeze(2).expand(-1, -1, ways, -1),
                per_class.unsqueeze(1).expand(-1, query.shape[1], -1, -1),
            ],
            dim=-1,
        )
        return self.decoder(pairs).squeeze(-1)

    def predict_embedded(self, batch: EpisodeBatch) -> Tensor:
        return self.logits(batch.support_x, batch.support_y, batch.query_x, batch.ways)

    # ------------------------------------------------------------------ the interface

    def predict(self, batch: EpisodeBatch) -> Tensor:
        """Regression: ``[B, targets, y_dims, 2]`` (mean, standard deviation); classification: logits."""
        if self.regression:
            mean, std = self.gaussian(batch.support_x, batch.support_y, batch.query_x)
            return torch.stack([mean, std], dim=-1)
        count = batch.support_x.shape[1]
        images = torch.cat([batch.support_x, batch.query_x], dim=1)
        embedded = self.embedder(images.flatten(0, 1)).view(images.shape[0], images.shape[1], -1)
        return self.logits(embedded[:, :count], batch.support_y, embedded[:, count:], batch.ways)

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        """Regression: the negative log-likelihood per target (training score: the log-likelihood);
        classification: the cross-entropy (training score: accuracy in %)."""
        predictions = self.predict(batch)
        if self.regression:
            log_likelihood = gaussian_log_likelihood(predictions, batch.query_y)  # per task, float64
            return StepOutput(-log_likelihood.mean().float(), log_likelihood.mean().detach())
        loss = F.cross_entropy(predictions.flatten(0, 1), batch.query_y.flatten())
        accuracy = (predictions.argmax(-1) == batch.query_y).float().mean() * 100.0
        return StepOutput(loss, accuracy.detach())

    def figures(self, batch: EpisodeBatch, result_path: Path) -> list[Path]:
        """Regression on 1-D inputs: predicted mean and uncertainty against the true function; on pixel
        locations: completions of the first test images from growing numbers of context pixels."""
        if not self.regression:
            return []
        from metabench.reproductions.plots import plot_completions, plot_gaussian_fits

        with torch.no_grad():
            if self.x_dims == 1:
                return [plot_gaussian_fits(self.predict, batch, result_path.with_suffix(".png"))]
            if self.x_dims == 2:
                return [plot_completions(self.predict, batch, result_path.with_suffix(".png"))]
            return []
