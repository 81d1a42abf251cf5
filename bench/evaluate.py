"""Scoring a model on frozen episodes: accuracy per episode in percent, or mean squared error per task.

For set episodes a model predicts the queries; for sequence episodes (see ``episodes.as_sequence``) it
predicts every step of the sequence, and :func:`evaluate_by_instance` also scores each episode at the
k-th presentation of its classes, the way MANN's Table 1 reports accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from metabench.episodes import (
    ClassBank,
    EpisodeBatch,
    FrozenEpisodes,
    as_sequence,
    instance_numbers,
    split_episodes,
)
from metabench.reproduction import Reproduction
from metabench.tasks import Frozen, TaskSource

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


def targets(batch: EpisodeBatch) -> Tensor:
    """What a prediction is scored against: the query labels, or every label of a sequence episode."""
    return batch.query_y if batch.order is None else as_sequence(batch)[1]


def score(predictions: Tensor, targets: Tensor, metric: str) -> Tensor:
    """Per-episode scores of ``[B, queries, ...]`` predictions: accuracy (%) of the argmax, or the MSE.

    For ``loss`` the prediction already is the task's score (an optimizee's loss after its horizon,
    say), ``[B]`` or ``[B, ...]`` averaged over the trailing dimensions; the targets are not used.
    """
    if metric == "loss":
        values = predictions.to(torch.float64)
        return values.flatten(1).mean(1) if values.dim() > 1 else values
    if metric == "mse":
        return (predictions.to(torch.float64) - targets.to(torch.float64)).pow(2).flatten(1).mean(1)
    return (predictions.argmax(-1) == targets).to(torch.float64).mean(1).mul(100.0)


def _predictions(
    model: Reproduction,
    episodes: Frozen,
    bank: TaskSource,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
    competitor: str | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Per batch of frozen episodes: the model's predictions and their targets, detached.

    With ``competitor`` the predictions are the named competitor's (:meth:`Reproduction.predict_competitor`).

    The model is put in evaluation mode (batch norm uses running statistics unless the reproduction
    implements a transductive mode itself) and restored to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.set_grad_enabled(model.needs_grad_at_test):
            embedded = (
                competitor is None
                and model.embeds_independently
                and isinstance(episodes, FrozenEpisodes)
                and isinstance(bank, ClassBank)
                and not episodes.shape.sequence
            )
            if embedded:
                batches, predict = _embedded_batches(model, episodes, bank, batch_size), model.predict_embedded
            elif competitor is not None:
                batches = episodes.batches(bank, batch_size)
                predict = lambda batch: model.predict_competitor(competitor, batch)  # noqa: E731
            else:
                batches, predict = episodes.batches(bank, batch_size), model.predict
            for batch in batches:
                yield predict(batch).detach(), targets(batch)
                if on_batch is not None:
                    on_batch(batch.size)
    finally:
        model.train(was_training)


def evaluate(
    model: Reproduction,
    episodes: Frozen,
    bank: TaskSource,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    metric: str = "accuracy",
    competitor: str | None = None,
) -> Tensor:
    """The metric (accuracy in %, or MSE) on each frozen episode, in episode order, as float64 on the CPU.

    For sequence episodes the accuracy is over every step of the sequence. ``competitor`` scores a
    claim's competitor instead of the model's own method, on the same episodes.
    """
    batches = _predictions(model, episodes, bank, batch_size, on_batch, competitor)
    return torch.cat([score(predictions, labels, metric).cpu() for predictions, labels in batches])


def evaluate_by_instance(
    model: Reproduction,
    episodes: FrozenEpisodes,
    bank: ClassBank,
    batch_size: int,
    instances: tuple[int, ...],
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Accuracy (%) per sequence episode over all steps ``[E]``, and at each listed instance ``[E, k]``.

    The accuracy at instance ``k`` of an episode is the fraction of its classes whose ``k``-th
    presentation was labelled correctly; every class of a metabench sequence episode is presented
    exactly ``shots + queries`` times, so every listed instance exists in every episode.
    """
    if not episodes.shape.sequence:
        raise ValueError("accuracy by instance needs sequence episodes")
    overall, by_instance = [], []
    for predictions, labels in _predictions(model, episodes, bank, batch_size, on_batch):
        correct = (predictions.argmax(-1) == labels).to(torch.float64).cpu()
        number = instance_numbers(labels.cpu(), episodes.shape.ways)
        masks = torch.stack([(number == k) for k in instances], dim=1).to(torch.float64)  # [B, k, T]
        by_instance.append((masks * correct.unsqueeze(1)).sum(-1).div(masks.sum(-1)).mul(100.0))
        overall.append(correct.mean(1).mul(100.0))
    return torch.cat(overall), torch.cat(by_instance)
