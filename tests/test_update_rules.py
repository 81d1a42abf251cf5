"""The learned-update-rule machinery pinned to what it must reduce to.

Issue 5, requirement 6: the LSTM optimizer whose output is fixed to a constant times the gradient is
plain SGD, step for step; the gradient preprocessing matches its formula at small, large and zero
gradients; the Meta-LSTM cell with its forget gate at 1 and its input gate at the learning rate is
SGD. Each comparison is against ``torch.optim.SGD`` on an ``nn.Module``, so the flattening of the
parameters, the per-problem gradients and the order of loss and update are all checked with it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from metabench.reproductions.update_rules import (
    CoordinateWiseLSTM,
    FlatParameters,
    MetaLearner,
    MetaLSTMCell,
    MetaLSTMState,
    detach_state,
    preprocess_gradient,
    truncated_bptt,
    unroll,
)

LR = 0.1


# --------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("p", [10.0, 5.0])
def test_preprocessing_matches_the_formula(p: float) -> None:
    small = [0.0, 1e-7, -1e-7, 0.5 * math.exp(-p), -0.99 * math.exp(-p)]
    large = [math.exp(-p), -math.exp(-p), 1e-3, -0.25, 1.0, 3.0e4, -7.5e8]
    x = torch.tensor(small + large, dtype=torch.float64)
    out = preprocess_gradient(x, p)
    assert out.shape == (len(x), 2)
    for value, (log_part, sign_part) in zip(x.tolist(), out.tolist(), strict=True):
        if abs(value) >= math.exp(-p):
            assert log_part == pytest.approx(math.log(abs(value)) / p, rel=1e-12)
            assert sign_part == math.copysign(1.0, value)
        else:
            assert log_part == -1.0
            assert sign_part == pytest.approx(math.exp(p) * value, rel=1e-12, abs=0.0)


def test_preprocessing_at_zero_and_at_the_threshold() -> None:
    zero = preprocess_gradient(torch.zeros(3))
    assert zero.tolist() == [[-1.0, 0.0]] * 3
    edge = math.exp(-10.0)
    below, at = preprocess_gradient(torch.tensor([edge * (1 - 1e-9), edge], dtype=torch.float64)).tolist()
    assert below[0] == at[0] == pytest.approx(-1.0)  # the log feature is continuous at e^-p
    assert below[1] == pytest.approx(1.0) and at[1] == 1.0


def test_preprocessing_keeps_shape_and_has_finite_gradients_at_zero() -> None:
    x = torch.tensor([[0.0, 1e-9], [-2.0, 5.0]], requires_grad=True)
    out = preprocess_gradient(x)
    assert out.shape == (2, 2, 2)
    out.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


# --------------------------------------------------------------------------- tasks


def quadratics(problems: int = 8, dims: int = 10, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``W [B, d, d]``, ``y [B, d]`` and ``theta_0 [B, d]``, as the released code samples them."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.rand(problems, dims, dims, generator=generator)
    y = torch.rand(problems, dims, generator=generator)
    theta = 0.01 * torch.randn(problems, dims, generator=generator)
    return w, y, theta


def quadratic_loss(w: Tensor, y: Tensor):
    def loss(theta: Tensor) -> Tensor:
        return ((torch.einsum("bij,bj->bi", w, theta) - y) ** 2).sum(-1)

    return loss


def mlp_and_batch(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(12, 7), nn.Sigmoid(), nn.Linear(7, 3))
    return net, torch.randn(16, 12), torch.randint(0, 3, (16,))


def sgd_trajectory(net: nn.Module, x: Tensor, labels: Tensor, steps: int) -> tuple[list[Tensor], list[float]]:
    """Parameters after each step and the loss before it, from ``torch.optim.SGD``."""
    net = copy.deepcopy(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    flat = FlatParameters.of(net)
    params, losses = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(x), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        params.append(flat.flatten(dict(net.named_parameters())).detach().clone())
    return params, losses


class FixedOutputLSTM(CoordinateWiseLSTM):
    """The learned optimizer with its output replaced by ``-LR * grad``; the LSTM still runs."""

    def readout(self, hidden: Tensor, grad: Tensor) -> Tensor:
        assert hidden.shape == (grad.numel(), 20)
        return -LR * grad


# --------------------------------------------------------------------------- LSTM optimizer


def test_lstm_optimizer_with_fixed_output_is_sgd_on_an_mlp() -> None:
    net, x, labels = mlp_and_batch()
    flat = FlatParameters.of(net)
    expected_params, expected_losses = sgd_trajectory(net, x, labels, steps=6)

    rule = FixedOutputLSTM()

    def loss_fn(theta: Tensor) -> Tensor:
        return nn.functional.cross_entropy(functional_call(net, flat.unflatten(theta), (x,)), labels)

    theta = flat.flatten(dict(net.named_parameters())).detach().requires_grad_()
    state = rule.initial_state(theta)
    for step in range(6):
        out = unroll(rule, loss_fn, theta, state, steps=1)
        theta, state = out.theta, out.state
        assert out.losses.item() == pytest.approx(expected_losses[step], rel=1e-6)
        torch.testing.assert_close(theta.detach(), expected_params[step], rtol=1e-6, atol=1e-7)
    assert len(state) == 1 and state[0][0].shape == (2, len(flat), 20)


def test_lstm_optimizer_with_fixed_output_is_sgd_on_a_batch_of_quadratics() -> None:
    w, y, theta0 = quadratics()
    rule = FixedOutputLSTM()
    out = unroll(rule, quadratic_loss(w, y), theta0.clone().requires_grad_(), rule.initial_state(theta0), steps=5)

    theta = theta0.clone().requires_grad_()
    optimizer = torch.optim.SGD([theta], lr=LR)
    for step in range(5):
        optimizer.zero_grad()
        loss = quadratic_loss(w, y)(theta)
        loss.sum().backward()
        optimizer.step()
        torch.testing.assert_close(out.losses[step].detach(), loss.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.theta.detach(), theta.detach(), rtol=1e-6, atol=1e-7)


def test_lstm_optimizer_is_coordinatewise_with_shared_weights() -> None:
    torch.manual_seed(0)
    rule = CoordinateWiseLSTM()
    assert sum(p.numel() for p in rule.parameters()) == (4 * 20 * (2 + 20 + 2)) + (4 * 20 * (20 + 20 + 2)) + 21
    grads = torch.tensor([1e-3, -2.0, 0.0, 5.0])
    together, _ = rule(grads, rule.initial_state(grads))
    alone = [rule(g.view(1), rule.initial_state(g.view(1)))[0] for g in grads]
    torch.testing.assert_close(together, torch.cat(alone))
    swapped, _ = rule(grads.flip(0), rule.initial_state(grads))
    torch.testing.assert_close(swapped, together.flip(0))


def test_lstm_optimizer_stack_equals_a_chain_of_lstm_cells_and_starts_from_their_weights() -> None:
    """The fused ``nn.LSTM`` step is the paper's two stacked cells: same updates, same gradients, same init."""
    torch.manual_seed(0)
    rule = CoordinateWiseLSTM(output_scale=0.1).double()
    torch.manual_seed(0)
    cells = nn.ModuleList([nn.LSTMCell(2, 20), nn.LSTMCell(20, 20)]).double()
    stacked = [p for cell in cells for p in cell.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(rule.lstm.parameters(), stacked, strict=True)), "same initial weights"
    head = rule.head
    grads = torch.randn(3, 50, dtype=torch.float64) * torch.logspace(-6, 1, 50, dtype=torch.float64)
    state = rule.initial_state(grads[0])
    chain = [(torch.zeros(50, 20, dtype=torch.float64), torch.zeros(50, 20, dtype=torch.float64))] * 2
    fused_total = chained_total = torch.zeros((), dtype=torch.float64)
    for g in grads:
        update, state = rule(g, state)
        x = rule.features(g)
        new_chain = []
        for cell, hc in zip(cells, chain, strict=True):
            h, c = cell(x, hc)
            new_chain.append((h, c))
            x = h
        chain = new_chain
        expected = 0.1 * head(x).squeeze(-1)
        torch.testing.assert_close(update, expected, rtol=1e-12, atol=1e-14)
        fused_total, chained_total = fused_total + update.sum(), chained_total + expected.sum()
    fused_grads = torch.autograd.grad(fused_total, list(rule.lstm.parameters()))
    chained_grads = torch.autograd.grad(chained_total, stacked)
    for a, b in zip(fused_grads, chained_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_lstm_optimizer_without_a_graph_runs_in_chunks_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from metabench.reproductions import update_rules

    torch.manual_seed(0)
    rule = CoordinateWiseLSTM(output_scale=0.1).double()
    grads = torch.randn(2, 37, dtype=torch.float64)
    whole_state = chunked_state = rule.initial_state(grads[0])
    monkeypatch.setattr(update_rules, "EVAL_CHUNK", 10)
    for g in grads:
        whole, whole_state = rule(g, whole_state)  # grad mode: one call
        with torch.no_grad():
            chunked, chunked_state = rule(g, chunked_state)  # four chunks of at most 10
        torch.testing.assert_close(chunked, whole.detach(), rtol=1e-12, atol=1e-14)
    assert len(chunked_state) == 4, "the state is kept one pair per chunk"
    for a, b in zip(
        (torch.cat([h for h, _ in chunked_state], 1), torch.cat([c for _, c in chunked_state], 1)),
        whole_state[0],
        strict=True,
    ):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)


def test_meta_gradient_reaches_the_lstm_only_within_a_segment() -> None:
    torch.manual_seed(0)
    w, y, theta0 = quadratics(problems=4)
    rule = CoordinateWiseLSTM(preprocess_p=None, output_scale=0.1)
    segments: list[Tensor] = []

    def meta_step(meta_loss: Tensor) -> None:
        grads = torch.autograd.grad(meta_loss, list(rule.parameters()), allow_unused=True)
        segments.append(torch.cat([g.reshape(-1) for g in grads if g is not None]))

    losses = truncated_bptt(rule, quadratic_loss(w, y), theta0, horizon=10, unroll_length=4, meta_step=meta_step).losses
    assert losses.shape == (10, 4) and not losses.requires_grad
    assert len(segments) == 3  # steps 0-3, 4-7, 8-9
    assert all(bool(s.abs().sum() > 0) for s in segments)

    with_cut = truncated_bptt(rule, quadratic_loss(w, y), theta0, horizon=10, unroll_length=4, meta_step=None)
    torch.testing.assert_close(with_cut.losses, losses)
    whole = truncated_bptt(rule, quadratic_loss(w, y), theta0, horizon=10, unroll_length=10, meta_step=None)
    torch.testing.assert_close(whole.losses, with_cut.losses)  # cutting the graph never changes the path
    torch.testing.assert_close(whole.theta, with_cut.theta)
    assert not torch.allclose(with_cut.theta, theta0)


def test_truncated_bptt_meta_training_lowers_the_loss_on_quadratics() -> None:
    torch.manual_seed(0)
    rule = CoordinateWiseLSTM(preprocess_p=None, output_scale=0.1)
    meta = torch.optim.Adam(rule.parameters(), lr=0.03)

    def meta_step(meta_loss: Tensor) -> None:
        meta.zero_grad()
        meta_loss.backward()
        meta.step()

    def losses_on_held_out() -> Tensor:
        w, y, theta0 = quadratics(problems=32, seed=999)
        return truncated_bptt(rule, quadratic_loss(w, y), theta0, horizon=20, unroll_length=20, meta_step=None).losses

    before = losses_on_held_out()
    for seed in range(10):
        w, y, theta0 = quadratics(problems=16, seed=seed)
        truncated_bptt(rule, quadratic_loss(w, y), theta0, horizon=20, unroll_length=10, meta_step=meta_step)
    after = losses_on_held_out()
    torch.testing.assert_close(after[0], before[0])  # same held-out problems, same starting loss
    assert float(after[-1].mean()) < 0.25 * float(after[0].mean())
    assert float(after[-1].mean()) < 0.25 * float(before[-1].mean())


def test_unroll_refuses_losses_that_are_not_one_per_problem() -> None:
    w, y, theta0 = quadratics(problems=4)
    with pytest.raises(ValueError, match="not one per problem"):
        rule = FixedOutputLSTM()
        loss_fn = quadratic_loss(w, y)
        unroll(rule, lambda t: loss_fn(t).repeat(2), theta0.requires_grad_(), rule.initial_state(theta0), 1)


# --------------------------------------------------------------------------- Meta-LSTM


def pin_gates_to_sgd(cell: MetaLSTMCell, lr: float) -> None:
    """Zero the gate weights; forget bias so large that f = 1 exactly, input bias logit(lr)."""
    with torch.no_grad():
        cell.forget_weight.zero_()
        cell.input_weight.zero_()
        cell.forget_bias.fill_(40.0)
        cell.input_bias.fill_(math.log(lr / (1 - lr)))


def test_meta_lstm_with_forget_1_and_input_lr_is_sgd() -> None:
    torch.manual_seed(1)
    net, x, labels = mlp_and_batch(seed=3)
    flat = FlatParameters.of(net)
    expected_params, expected_losses = sgd_trajectory(net, x, labels, steps=8)

    learner = MetaLearner()
    pin_gates_to_sgd(learner.update, LR)

    def loss_fn(theta: Tensor) -> Tensor:
        return nn.functional.cross_entropy(functional_call(net, flat.unflatten(theta), (x,)), labels)

    theta0 = flat.flatten(dict(net.named_parameters())).detach().requires_grad_()
    out = unroll(learner, loss_fn, theta0, learner.initial_state(theta0), steps=8)
    for step in range(8):
        assert out.losses[step].item() == pytest.approx(expected_losses[step], rel=1e-6)
    torch.testing.assert_close(out.theta.detach(), expected_params[-1], rtol=1e-5, atol=1e-6)
    assert isinstance(out.state, MetaLSTMState)
    assert torch.equal(out.state.forget, torch.ones_like(out.state.forget))
    torch.testing.assert_close(out.state.input, torch.full_like(out.state.input, LR))


def test_meta_lstm_cell_follows_ravi_and_larochelle_equations() -> None:
    torch.manual_seed(2)
    cell = MetaLSTMCell(input_size=3)
    with torch.no_grad():
        cell.forget_weight.normal_()
        cell.input_weight.normal_()
    x, theta, grad = torch.randn(5, 3), torch.randn(5), torch.randn(5)
    f_prev, i_prev = torch.rand(5), torch.rand(5)
    new_theta, f, i = cell(x, theta, grad, f_prev, i_prev)
    wf, wi = cell.forget_weight, cell.input_weight
    for n in range(5):
        f_n = torch.sigmoid(x[n] @ wf[:3] + theta[n] * wf[3] + f_prev[n] * wf[4] + cell.forget_bias)
        i_n = torch.sigmoid(x[n] @ wi[:3] + theta[n] * wi[3] + i_prev[n] * wi[4] + cell.input_bias)
        torch.testing.assert_close(f[n], f_n[0])
        torch.testing.assert_close(i[n], i_n[0])
        torch.testing.assert_close(new_theta[n], f_n[0] * theta[n] - i_n[0] * grad[n])


def test_meta_lstm_starts_near_small_step_sgd_and_trains_its_gates() -> None:
    torch.manual_seed(0)
    learner = MetaLearner()
    theta = torch.randn(50)
    state = learner.initial_state(theta)
    _, state = learner.step(theta, torch.randn(50), torch.tensor(1.5), state)
    assert bool((state.forget > 0.98).all()) and bool((state.input < 0.02).all())

    theta0 = theta.clone().requires_grad_()
    out = unroll(learner, lambda t: (t**2).sum(), theta0, learner.initial_state(theta0), steps=3)
    out.losses.sum().backward()
    for name, parameter in learner.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name


def test_detach_state_cuts_every_tensor() -> None:
    learner = MetaLearner()
    theta = torch.randn(4, requires_grad=True)
    _, state = learner.step(theta, torch.randn(4), torch.tensor(0.3), learner.initial_state(theta))
    cut = detach_state(state)
    assert state.forget.requires_grad and not cut.forget.requires_grad
    assert not any(t.requires_grad for pair in cut.lstm for t in pair)
    with pytest.raises(TypeError, match="cannot detach"):
        detach_state({"h": theta})
