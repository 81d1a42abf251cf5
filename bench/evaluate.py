"""Scoring a model on frozen episodes: accuracy per episode, in percent."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from metabench.episodes import ClassBank, EpisodeBatch, FrozenEpisodes, split_episodes
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


def evaluate(
    model: Reproduction,
    episodes: FrozenEpisodes,
    bank: ClassBank,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> Tensor:
    """Accuracy (%) on each frozen episode, in episode order, as float64 on the CPU.

    The model is put in evaluation mode (batch norm uses running statistics unless the reproduction
    implements a transductive mode itself) and restored to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    scores: list[Tensor] = []
    try:
        with torch.set_grad_enabled(model.needs_grad_at_test):
            if model.embeds_independently:
                batches, predict = _embedded_batches(model, episodes, bank, batch_size), model.predict_embedded
            else:
                batches, predict = episodes.batches(bank, batch_size), model.predict
            for batch in batches:
                correct = (predict(batch).argmax(-1) == batch.query_y).to(torch.float64)
                scores.append(correct.mean(1).mul(100.0).cpu())
                if on_batch is not None:
                    on_batch(batch.size)
    finally:
        model.train(was_training)
    return torch.cat(scores)
