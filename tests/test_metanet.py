"""Meta Networks' fast weights: made from support gradients, and they change what the model predicts."""

from __future__ import annotations

import math

import torch

from metabench.reproduction import TaskInfo
from metabench.reproductions.metanet import MetaNetHyperparameters, MetaNetwork, preprocess


def model_and_support(ways: int = 3) -> tuple[MetaNetwork, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = MetaNetwork(MetaNetHyperparameters(hidden=8, units=8, meta_hidden=6), TaskInfo(1, 28, ways, 1)).eval()
    support_x = torch.rand(1, ways, 1, 28, 28)
    support_y = torch.arange(ways).view(1, ways)
    return model, support_x, support_y


def test_a_support_examples_fast_weights_change_its_own_prediction() -> None:
    model, support_x, support_y = model_and_support()
    with torch.no_grad():
        slow = model.logits(support_x, support_y, support_x, fast=False)
        fast = model.logits(support_x, support_y, support_x)
        # the fast weights come from the gradient of the example's own labelled loss: relabel example 0
        # and its own prediction changes, while the slow weights alone cannot see labels at all
        relabelled = support_y.clone()
        relabelled[0, 0] = 2
        swapped = model.logits(support_x, relabelled, support_x)
        slow_swapped = model.logits(support_x, relabelled, support_x, fast=False)
    assert not torch.allclose(fast[0, 0], slow[0, 0], atol=1e-4), "fast weights change the prediction"
    assert not torch.allclose(swapped[0, 0], fast[0, 0], atol=1e-4), "and they depend on the example's label"
    assert torch.equal(slow_swapped, slow)


def test_example_fast_weights_are_the_meta_learners_image_of_each_examples_own_gradient() -> None:
    model, support_x, support_y = model_and_support()
    features = model.base_trunk(support_x.flatten(0, 1)).view(1, 3, -1)
    fast_hidden, fast_out = model.example_fast_weights(features, support_y)
    for i in range(3):  # the gradient of example i's loss alone, by autograd
        loss = torch.nn.functional.cross_entropy(
            model.base_out(torch.relu(model.base_hidden(features[0, i : i + 1]))), support_y[0, i : i + 1]
        )
        g_hidden, g_out = torch.autograd.grad(loss, [model.base_hidden.weight, model.base_out.weight])
        assert torch.allclose(fast_hidden[0, i], model.fast_hidden(g_hidden), atol=1e-5)
        assert torch.allclose(fast_out[0, i], model.fast_out(g_out), atol=1e-5)


def test_gradient_preprocessing_matches_andrychowicz() -> None:
    g = torch.tensor([1.0, -math.exp(-5.0), 1e-6, 0.0])
    out = preprocess(g, p=10.0)
    assert torch.allclose(out[0], torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[1], torch.tensor([-0.5, -1.0]))
    assert torch.allclose(out[2], torch.tensor([-1.0, 1e-6 * math.exp(10.0)]))
    assert torch.allclose(out[3], torch.tensor([-1.0, 0.0]))


def test_queries_read_fast_weights_by_attention_over_support_keys() -> None:
    """A query identical to support example i attends most to i, so it gets mostly i's fast weights."""
    model, support_x, support_y = model_and_support()
    _, _, support_g, _ = model._trunks(support_x, support_x)
    task_fast = model.task_fast_weights(support_g, support_y)
    keys = model.keys(support_g, task_fast)
    attention = torch.softmax(
        torch.nn.functional.normalize(keys, dim=-1) @ torch.nn.functional.normalize(keys, dim=-1).transpose(1, 2), -1
    )
    assert torch.equal(attention[0].argmax(-1), torch.arange(3))
    assert torch.allclose(attention.sum(-1), torch.ones(1, 3))


def test_keys_are_linear_as_in_the_released_code() -> None:
    """Issue 16: rectified keys put every cosine in [0, 1] and cap the attention at e / (e + n - 1); the
    released code's key layer (``key_fc1(h) + h W*^T``) is linear, so keys take both signs."""
    model, support_x, support_y = model_and_support()
    g = model.key_trunk(support_x.flatten(0, 1)).view(1, 3, -1)
    with torch.no_grad():
        keys = model.keys(g, model.task_fast_weights(g, support_y))
        slow = model.keys(g, None)
    assert bool((keys < 0).any()), "a linear key layer has negative outputs"
    assert torch.allclose(slow, model.key_hidden(g))
    rectified = MetaNetwork(
        MetaNetHyperparameters(hidden=8, units=8, meta_hidden=6, key_relu=True), TaskInfo(1, 28, 3, 1)
    )
    rectified.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert bool((rectified.keys(g, None) >= 0).all())


def test_preprocessing_uses_the_released_codes_k_7() -> None:
    model, _, _ = model_and_support()
    assert MetaNetHyperparameters().preprocess_p == 7.0
    g = torch.tensor([2e-3, 1e-4])  # above and below e^-7 = 9.1e-4
    out = model.fast_key.net[0].weight.new_tensor(0.0)  # device/dtype anchor
    expected = torch.stack([torch.tensor([math.log(2e-3) / 7, 1.0]), torch.tensor([-1.0, 1e-4 * math.exp(7.0)])])
    assert torch.allclose(preprocess(g, p=model.fast_key.p) + out, expected)


def test_spec_clips_the_gradient_norm_at_10_as_the_released_code() -> None:
    from metabench.registry_loader import get_spec

    for bench in get_spec("metanet").benchmarks:
        for name in ("paper", "quick"):
            assert bench.profile(name).clip_grad_norm == 10.0, (bench.id, name)
