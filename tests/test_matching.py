"""Matching Networks' attention (Vinyals et al. eq. 2), checked against hand-computed values (issue 16)."""

from __future__ import annotations

import math

import torch

from metabench.reproduction import TaskInfo
from metabench.reproductions.matching import MatchingHyperparameters, MatchingNetwork


def network(**settings: object) -> MatchingNetwork:
    torch.manual_seed(0)
    return MatchingNetwork(MatchingHyperparameters(hidden=4, **settings), TaskInfo(1, 28, 2, 1)).eval()  # type: ignore[arg-type]


SUPPORT = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])  # [B=1, S=2, D=2]: orthogonal supports, different norms
QUERY = torch.tensor([[[3.0, 0.0]]])  # [B=1, Q=1, D=2]: the direction of support 0, norm 3


def test_attention_is_a_softmax_over_plain_cosines() -> None:
    attention = network().attention(SUPPORT, QUERY)
    # cosines 1 and 0, whatever the norms: softmax([1, 0]) = e / (e + 1)
    assert math.isclose(float(attention[0, 0, 0]), math.e / (math.e + 1), rel_tol=1e-6)


def test_the_log_label_mass_is_the_log_of_the_attention_on_each_class() -> None:
    model = network()
    log_mass = model.compare(SUPPORT, torch.tensor([[1, 0]]), QUERY, ways=2)
    assert math.isclose(float(log_mass[0, 0, 1].exp()), math.e / (math.e + 1), rel_tol=1e-6)


def test_non_negative_features_cap_the_attention_at_e_over_e_plus_n_minus_1() -> None:
    """The structural limit the issue names: ReLU features give cosines in [0, 1], so even a perfect
    embedding (the true support identical to the query, every other orthogonal) cannot give the true
    support more than e / (e + n - 1) of the attention."""
    for n in (5, 20):
        support = torch.eye(n).unsqueeze(0)
        query = support[:, :1]
        attention = network().attention(support, query)
        assert math.isclose(float(attention[0, 0, 0]), math.e / (math.e + n - 1), rel_tol=1e-6)


def test_scale_is_an_inverse_temperature_on_the_cosines() -> None:
    attention = network(scale=10.0).attention(SUPPORT, QUERY)
    assert math.isclose(float(attention[0, 0, 0]), math.exp(10) / (math.exp(10) + 1), rel_tol=1e-6)


def test_unnormalised_query_lets_its_norm_set_the_temperature() -> None:
    """Antoniou's DistanceNetwork: the dot product over the support norm only (3 * 1 and 0 here)."""
    attention = network(normalize_query=False).attention(SUPPORT, QUERY)
    assert math.isclose(float(attention[0, 0, 0]), math.exp(3) / (math.exp(3) + 1), rel_tol=1e-6)


def test_defaults_are_the_papers_literal_form() -> None:
    hp = MatchingHyperparameters()
    assert hp.normalize_query and hp.scale == 1.0 and not hp.fce
