"""Scoring a model on frozen episodes: accuracy or error per episode in percent, mean squared error or
Gaussian log-likelihood per task.

For set episodes a model predicts the queries; for sequence episodes (see ``episodes.as_sequence``) it
predicts every step of the sequence, and :func:`evaluate_by_instance` also scores each episode at the
k-th presentation of its classes, the way MANN's Table 1 reports accuracy. A model scored by
log-likelihood predicts a Gaussian per target, ``[..., 2]`` = (mean, standard deviation);
:func:`evaluate_by_context` scores it given the first k context points of each task, the way CNP's
image completion is reported by number of context pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

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
from metabench.metrics import METRICS
from metabench.metrics import gaussian_log_likelihood as gaussian_log_likelihood  # CNP's training loss
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


def point_predictions(predictions: Tensor, metric: str) -> Tensor:
    """What a metric other than ``metric`` scores: the mean of a Gaussian prediction, else the predictions."""
    return predictions[..., 0] if metric in METRICS and METRICS[metric].gaussian else predictions


def score(predictions: Tensor, targets: Tensor, metric: str) -> Tensor:
    """Per-episode scores of ``[B, queries, ...]`` predictions by ``metric``'s scorer in the registry
    (:mod:`metabench.metrics`): accuracy or error (%) of the argmax, the MSE, the Gaussian log-likelihood of
    ``[B, queries, ..., 2]`` (mean, std) predictions, or for ``loss`` the prediction itself.

    A name the registry does not know is scored as an accuracy, as before the registry.
    """
    return METRICS.get(metric, METRICS["accuracy"]).score(predictions, targets)


def _predictions(
    model: Reproduction,
    episodes: Frozen,
    bank: TaskSource,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
    competitor: str | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Per batch of frozen episodes: the model's (or a competitor's) predictions and their targets, detached."""
    for _, predictions, labels in _predictions_of(model, episodes, bank, batch_size, on_batch, competitor):
        yield predictions, labels


def _predictions_of(
    model: Reproduction,
    episodes: Frozen,
    bank: TaskSource,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
    competitor: str | None = None,
) -> Iterator[tuple[EpisodeBatch, Tensor, Tensor]]:
    """Per batch of frozen episodes: the batch, the model's predictions and their targets, detached.

    With ``competitor`` the predictions are the named competitor's (:meth:`Reproduction.predict_competitor`).

    The model is put in evaluation mode (batch norm uses running statistics unless the reproduction
    implements a transductive mode itself) and restored to its previous mode afterwards; the consumer
    may predict more on the batch in that mode before asking for the next one.
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
                yield batch, predict(batch).detach(), targets(batch)
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
    """The metric (accuracy or error in %, MSE, log-likelihood) on each frozen episode, in episode order, as
    float64 on the CPU.

    For sequence episodes the accuracy is over every step of the sequence; for log-likelihood by context,
    it is the log-likelihood given every context point of the task (all ``shots`` of them).
    ``competitor`` scores a claim's competitor instead of the model's own method, on the same episodes.
    """
    return evaluate_with(model, episodes, bank, batch_size, metric, (), on_batch, competitor)[0]


def evaluate_with(
    model: Reproduction,
    episodes: Frozen,
    bank: TaskSource,
    batch_size: int,
    metric: str,
    also: tuple[str, ...] = (),
    on_batch: Callable[[int], None] | None = None,
    competitor: str | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Like :func:`evaluate`, and each metric in ``also`` scored from the same predictions (a benchmark's
    ``also``: the MSE of a Gaussian prediction's mean beside its log-likelihood), per episode."""
    scores: list[Tensor] = []
    others: dict[str, list[Tensor]] = {name: [] for name in also}
    for predictions, labels in _predictions(model, episodes, bank, batch_size, on_batch, competitor):
        scores.append(score(predictions, labels, metric).cpu())
        for name in also:
            others[name].append(score(point_predictions(predictions, metric), labels, name).cpu())
    return torch.cat(scores), {name: torch.cat(values) for name, values in others.items()}


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


def evaluate_by_context(
    model: Reproduction,
    episodes: Frozen,
    bank: TaskSource,
    batch_size: int,
    counts: tuple[int, ...],
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Log-likelihood of each task's targets given all its context points ``[E]``, and given only the first
    ``k`` of them for each listed count ``[E, k]``.

    A frozen task's context points are in random order, so its first ``k`` are a random subset, and the
    subsets are nested (100 context pixels include the first 10): the curve over ``k`` is the paper's
    "log-likelihood by number of context points", each count scored on the same tasks and targets.
    """
    overall, by_count = [], []
    for batch, predictions, labels in _predictions_of(model, episodes, bank, batch_size, on_batch):
        overall.append(gaussian_log_likelihood(predictions, labels).cpu())
        columns = []
        for k in counts:
            if k > batch.support_x.shape[1]:
                raise ValueError(f"{k} context points asked of tasks with {batch.support_x.shape[1]}")
            fewer = replace(batch, support_x=batch.support_x[:, :k], support_y=batch.support_y[:, :k], shots=k)
            columns.append(gaussian_log_likelihood(model.predict(fewer).detach(), labels).cpu())
        by_count.append(torch.stack(columns, dim=1))
    return torch.cat(overall), torch.cat(by_count)


def evaluate_components(
    model: Reproduction,
    episodes: Frozen,
    bank: TaskSource,
    batch_size: int,
    metric: str,
    instances: tuple[int, ...],
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """A vector benchmark's scores: per episode overall ``[E]`` and per component ``[E, k]``, by its metric."""
    components = METRICS[metric].components if metric in METRICS else None
    if components == "context":
        return evaluate_by_context(model, episodes, bank, batch_size, instances, on_batch)
    if components == "instance":
        if not isinstance(episodes, FrozenEpisodes) or not isinstance(bank, ClassBank):
            raise ValueError("accuracy by instance needs frozen episodes over a class bank")
        return evaluate_by_instance(model, episodes, bank, batch_size, instances, on_batch)
    raise ValueError(f"{metric!r} is not a vector metric")
