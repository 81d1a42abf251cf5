"""Scoring a model on frozen episodes: accuracy per episode, in percent.

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


def _correct(
    model: Reproduction,
    episodes: FrozenEpisodes,
    bank: ClassBank,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Per batch: whether each scored prediction is right (``[B, n]`` float64) and its labels ``[B, n]``.

    The model is put in evaluation mode (batch norm uses running statistics unless the reproduction
    implements a transductive mode itself) and restored to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.set_grad_enabled(model.needs_grad_at_test):
            if model.embeds_independently and not episodes.shape.sequence:
                batches, predict = _embedded_batches(model, episodes, bank, batch_size), model.predict_embedded
            else:
                batches, predict = episodes.batches(bank, batch_size), model.predict
            for batch in batches:
                labels = targets(batch)
                yield (predict(batch).argmax(-1) == labels).to(torch.float64).cpu(), labels.cpu()
                if on_batch is not None:
                    on_batch(batch.size)
    finally:
        model.train(was_training)


def evaluate(
    model: Reproduction,
    episodes: FrozenEpisodes,
    bank: ClassBank,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> Tensor:
    """Accuracy (%) on each frozen episode, in episode order, as float64 on the CPU.

    For sequence episodes this is the accuracy over every step of the sequence.
    """
    return torch.cat([c.mean(1).mul(100.0) for c, _ in _correct(model, episodes, bank, batch_size, on_batch)])


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
    for correct, labels in _correct(model, episodes, bank, batch_size, on_batch):
        number = instance_numbers(labels, episodes.shape.ways)
        masks = torch.stack([(number == k) for k in instances], dim=1).to(torch.float64)  # [B, k, T]
        by_instance.append((masks * correct.unsqueeze(1)).sum(-1).div(masks.sum(-1)).mul(100.0))
        overall.append(correct.mean(1).mul(100.0))
    return torch.cat(overall), torch.cat(by_instance)
