"""Episode sampler properties, on a synthetic bank whose pixels name their (class, example)."""

from __future__ import annotations

import pytest
import torch

from metabench.episodes import ClassBank, EpisodeSampler, EpisodeShape, freeze, sample_index, smallest
from metabench.errors import MetabenchError

CLASSES, EXAMPLES, SIZE = 30, 20, 4


def labelled_bank() -> ClassBank:
    """Pixel (0, 0) holds the class id, pixel (0, 1) the example id, so episodes can be decoded."""
    images = torch.zeros(CLASSES, EXAMPLES, SIZE, SIZE, dtype=torch.uint8)
    images[:, :, 0, 0] = torch.arange(CLASSES, dtype=torch.uint8).view(-1, 1)
    images[:, :, 0, 1] = torch.arange(EXAMPLES, dtype=torch.uint8).view(1, -1)
    return ClassBank(images, "synthetic")


def decode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class id, example id) of each image in ``[B, n, 1, H, W]`` float images."""
    pixels = (x[:, :, 0, 0, :2] * 255).round().long()
    return pixels[..., 0], pixels[..., 1]


@pytest.mark.parametrize(("ways", "shots", "queries"), [(5, 1, 15), (5, 5, 15), (20, 1, 5), (30, 5, 15)])
def test_counts_labels_and_no_overlap(ways: int, shots: int, queries: int) -> None:
    batch = EpisodeSampler(labelled_bank(), EpisodeShape(ways, shots, queries), seed=0).sample(8)
    assert batch.support_x.shape == (8, ways * shots, 1, SIZE, SIZE)
    assert batch.query_x.shape == (8, ways * queries, 1, SIZE, SIZE)
    s_class, s_example = decode(batch.support_x)
    q_class, q_example = decode(batch.query_x)
    for episode in range(8):
        assert s_class[episode].unique().numel() == ways, "each episode has exactly `ways` distinct classes"
        for label in range(ways):
            support_of_label = s_class[episode][batch.support_y[episode] == label]
            query_of_label = q_class[episode][batch.query_y[episode] == label]
            assert support_of_label.numel() == shots and query_of_label.numel() == queries
            assert support_of_label.unique().numel() == 1, "a label maps to one class in an episode"
            assert torch.equal(query_of_label.unique(), support_of_label.unique())
            chosen = support_of_label[0]
            used = torch.cat(
                [s_example[episode][s_class[episode] == chosen], q_example[episode][q_class[episode] == chosen]]
            )
            assert used.unique().numel() == shots + queries, "no example is both support and query"


def test_labels_are_remapped_per_episode() -> None:
    batch = EpisodeSampler(labelled_bank(), EpisodeShape(5, 1, 1), seed=0).sample(50)
    s_class, _ = decode(batch.support_x)
    class_of_label0 = s_class[:, 0]
    assert class_of_label0.unique().numel() > 10, "label 0 is a different class from episode to episode"
    assert torch.equal(batch.support_y[0], torch.arange(5))


def test_same_seed_same_episodes_and_different_seeds_differ() -> None:
    bank, shape = labelled_bank(), EpisodeShape(5, 1, 5)
    first = EpisodeSampler(bank, shape, seed=3).sample(4)
    again = EpisodeSampler(bank, shape, seed=3).sample(4)
    other = EpisodeSampler(bank, shape, seed=4).sample(4)
    assert torch.equal(first.support_x, again.support_x) and torch.equal(first.query_x, again.query_x)
    assert not torch.equal(first.support_x, other.support_x)


def test_sampler_state_restores_the_stream() -> None:
    sampler = EpisodeSampler(labelled_bank(), EpisodeShape(5, 1, 5), seed=0)
    sampler.sample(2)
    state = sampler.state()
    expected = sampler.sample(2)
    sampler.restore(state)
    assert torch.equal(sampler.sample(2).support_x, expected.support_x)


def test_frozen_episodes_are_deterministic_and_digest_identifies_them() -> None:
    bank, shape = labelled_bank(), EpisodeShape(5, 1, 5)
    key = {"dataset": "synthetic", "split": "x", "part": "test"}
    a = freeze(bank, shape, 100, seed=0, key=key)
    b = freeze(bank, shape, 100, seed=0, key=key)
    assert a.digest == b.digest
    assert torch.equal(a.index.classes, b.index.classes) and torch.equal(a.index.examples, b.index.examples)
    assert freeze(bank, shape, 100, seed=1, key=key).digest != a.digest
    assert freeze(bank, EpisodeShape(5, 2, 5), 100, seed=0, key=key).digest != a.digest
    assert freeze(bank, shape, 101, seed=0, key=key).digest != a.digest
    assert freeze(bank, shape, 100, seed=0, key={**key, "split": "y"}).digest != a.digest
    changed = labelled_bank()
    changed.images[0, 0, 3, 3] = 7
    assert freeze(changed, shape, 100, seed=0, key=key).digest != a.digest, "the digest covers the pixels"


def test_frozen_batches_cover_every_episode_in_order() -> None:
    bank, shape = labelled_bank(), EpisodeShape(5, 1, 5)
    frozen = freeze(bank, shape, 23, seed=0, key={})
    batches = list(frozen.batches(bank, 10))
    assert [b.size for b in batches] == [10, 10, 3]
    whole = bank.gather(frozen.index, shape)
    assert torch.equal(torch.cat([b.query_x for b in batches]), whole.query_x)


def test_frozen_indices_do_not_depend_on_the_training_generator() -> None:
    bank, shape = labelled_bank(), EpisodeShape(5, 1, 5)
    before = freeze(bank, shape, 10, seed=0, key={})
    torch.manual_seed(123)
    EpisodeSampler(bank, shape, seed=9).sample(5)
    assert freeze(bank, shape, 10, seed=0, key={}).digest == before.digest


@pytest.mark.data
def test_rotation_classes_are_distinct_images(protonet_parts) -> None:
    """In the protonet split a character's four rotations are four classes whose drawings are rot90s."""
    trainval = protonet_parts["trainval"].images
    base, quarter = trainval[0], trainval[1]
    assert torch.equal(quarter, torch.rot90(base, 1, dims=(-2, -1)))
    assert not torch.equal(quarter, base)


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        (EpisodeShape(31, 1, 1), "30 classes"),
        (EpisodeShape(5, 10, 11), "20 examples per class"),
        (EpisodeShape(1, 1, 1), "at least 2 ways"),
        (EpisodeShape(5, 0, 1), "at least 2 ways, 1 shot"),
    ],
)
def test_impossible_episodes_are_refused_clearly(shape: EpisodeShape, fragment: str) -> None:
    with pytest.raises(MetabenchError, match="impossible episode") as caught:
        EpisodeSampler(labelled_bank(), shape, seed=0)
    assert fragment in str(caught.value)


def test_sample_index_draws_distinct_classes_and_examples() -> None:
    generator = torch.Generator().manual_seed(0)
    index = sample_index(CLASSES, EXAMPLES, EpisodeShape(10, 5, 15), 200, generator)
    assert all(row.unique().numel() == 10 for row in index.classes)
    assert all(row.unique().numel() == 20 for row in index.examples.flatten(0, 1))
    assert index.classes.max() < CLASSES and index.examples.max() < EXAMPLES


@pytest.mark.parametrize("k", [1, 5, 60, 99, 100])
def test_smallest_is_the_head_of_an_argsort_with_ties_and_without(k: int) -> None:
    """The sampler's shortcut for the first classes of a shuffle: the same positions as the argsort it
    replaces, on distinct keys (topk), on keys with ties among the smallest (the argsort's own answer),
    and when every position is asked for."""
    g = torch.Generator().manual_seed(3)
    distinct = torch.rand(8, 100, generator=g)
    tied = distinct.clone()
    tied[:, 7] = tied.min(dim=1).values  # a tie at the smallest key of every row
    coarse = torch.randint(0, 4, (8, 100), generator=g).float()  # ties everywhere
    for keys in (distinct, tied, coarse):
        assert torch.equal(smallest(keys, k), keys.argsort(dim=-1)[..., :k])
