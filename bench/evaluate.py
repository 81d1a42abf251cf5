"""Scoring a model on frozen episodes: accuracy per episode in percent, or mean squared error per task."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from metabench.episodes import ClassBank, EpisodeBatch, FrozenEpisodes, split_episodes
from metabench.reproduction import Reproduction
from metabench.tasks import Frozen, TaskSource, frozen_batches

EMBED_CHUNK = 1024


def _embedded_batches(
    model: Reproduction, episodes: FrozenEpisodes, bank: ClassBank, batch_size: int
) -> Iterator[EpisodeBatch]:
    """Episodes over a bank of embeddings: every image is embedded once, then indexed like the images."""
    flat = bank.images.flatten(0, 1)
    chunks = []
    for start in range(0, flat.shape[0], EMBED_CHUNK):
        images = bank.as_float(flat[start : start + EMBED_CHUNK])  # [n, C, H, W]
        chunks.append(model.embed(images))
    features = torch.cat(chunks).view(bank.num_classes, bank.examples_per_class, *chunks[0].shape[1:])
    for start in range(0, episodes.count, batch_size):
        index = episodes.index.slice(start, start + batch_size).to(bank.device)
        yield split_episodes(features[index.classes.unsqueeze(-1), index.examples], episodes.shape)


def score(predictions: Tensor, targets: Tensor, metric: str) -> Tensor:
    """Per-episode scores of ``[B, queries, ...]`` predictions: accuracy (%) of the argmax, or the MSE."""
    if metric == "mse":
        return (predictions.to(torch.float64) - targets.to(torch.float64)).pow(2).flatten(1).mean(1)
    return (predictions.argmax(-1) == targets).to(torch.float64).mean(1).mul(100.0)


def evaluate(
    model: Reproduction,
    episodes: Frozen,
    bank: TaskSource,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    metric: str = "accuracy",
) -> Tensor:
    """The metric (accuracy in %, or MSE) on each frozen episode, in episode order, as float64 on the CPU.

    The model is put in evaluation mode (batch norm uses running statistics unless the reproduction
    implements a transductive mode itself) and restored to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    scores: list[Tensor] = []
    try:
        with torch.set_grad_enabled(model.needs_grad_at_test):
            if model.embeds_independently and isinstance(episodes, FrozenEpisodes) and isinstance(bank, ClassBank):
                batches, predict = _embedded_batches(model, episodes, bank, batch_size), model.predict_embedded
            else:
                batches, predict = frozen_batches(episodes, bank, batch_size), model.predict
            for batch in batches:
                scores.append(score(predict(batch).detach(), batch.query_y, metric).cpu())
                if on_batch is not None:
                    on_batch(batch.size)
    finally:
        model.train(was_training)
    return torch.cat(scores)
