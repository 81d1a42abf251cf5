"""Relation Networks against the authors' released code (floodsung/LearningToCompare_FSL; issue 16)."""

from __future__ import annotations

import math

import pytest
import torch

from metabench.registry_loader import get_spec
from metabench.reproduction import TaskInfo
from metabench.reproductions.relation import RelationHyperparameters, RelationNetwork


def network(**settings: object) -> RelationNetwork:
    torch.manual_seed(0)
    return RelationNetwork(RelationHyperparameters(**settings), TaskInfo(1, 28, 5, 1))  # type: ignore[arg-type]


def test_encoder_keeps_a_64x5x5_map_and_the_relation_head_sees_64_features() -> None:
    model = network()
    assert model.encoder.output_shape(1, 28) == (64, 5, 5)
    assert model.relation_head[0].in_features == 64  # two padded, pooled blocks: 5 -> 2 -> 1


def test_loss_is_the_mean_squared_error_against_one_hot_relations() -> None:
    scores = torch.tensor([[[0.9, 0.2], [0.4, 0.5]]])
    loss = network().loss(scores, torch.tensor([[0, 1]]), ways=2)
    expected = ((0.9 - 1) ** 2 + 0.2**2 + 0.4**2 + (0.5 - 1) ** 2) / 4
    assert math.isclose(float(loss), expected, rel_tol=1e-6)


def test_released_init_matches_weights_init() -> None:
    model = network(init="released")
    first, last = model.relation_head[0], model.relation_head[2]
    assert torch.equal(first.bias, torch.ones_like(first.bias)) and torch.equal(last.bias, torch.ones_like(last.bias))
    assert abs(float(first.weight.detach().std()) - 0.01) < 0.002
    conv = model.encoder.layers[2][0]
    assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2 / (9 * 64))) < 0.005
    with torch.no_grad():  # linear weights near zero and biases 1: every relation starts near sigmoid(1)
        episode = torch.rand(1, 10, 1, 28, 28)
        maps = model.encoder(episode.flatten(0, 1)).view(1, 10, 64, 5, 5)
        scores = model.compare(maps[:, :5], torch.arange(5).view(1, 5), maps[:, 5:], 5)
    assert torch.allclose(scores, torch.full_like(scores, 1 / (1 + math.exp(-1))), atol=0.02)


def test_unknown_init_is_refused() -> None:
    with pytest.raises(ValueError, match="init"):
        network(init="xavier")


@pytest.mark.parametrize(
    ("benchmark", "train_queries", "queries"),
    [("omniglot-5w1s", 19, 1), ("omniglot-5w5s", 15, 5), ("omniglot-20w1s", 10, 1), ("omniglot-20w5s", 5, 5)],
)
def test_spec_follows_the_released_codes_queries_and_clipping(benchmark: str, train_queries: int, queries: int) -> None:
    bench = get_spec("relationnet").benchmark(benchmark)
    assert bench.queries == queries  # the code tests K queries per class on Omniglot
    for name in ("paper", "quick"):
        profile = bench.profile(name)
        assert profile.train_queries == train_queries  # README's -b
        assert profile.clip_grad_norm == 0.5  # clip_grad_norm(..., 0.5) before every step
        assert profile.optimizer == "adam" and profile.lr == 0.001 and profile.lr_decay_factor == 0.5
    assert bench.profile("paper").lr_decay_every == 100000  # StepLR(step_size=100000, gamma=0.5)
