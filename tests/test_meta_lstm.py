"""The Meta-LSTM reproduction (Ravi & Larochelle): the learner's parameters are the update cell's state.

With its gates pinned (forget 1, input a learning rate) the meta-learner must train the conv-4 learner
exactly as SGD would; the meta-gradient must reach both the meta-learner and the learned initial
parameters; and prediction adapts a copy, never the model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metabench.episodes import EpisodeBatch
from metabench.reproduction import TaskInfo
from metabench.reproductions.meta_lstm import MetaLSTM, MetaLSTMHyperparameters
from metabench.reproductions.update_rules import MetaLSTMCell

TASK = TaskInfo(channels=1, image_size=28, ways=5, shots=1)


def episode_batch(episodes: int = 2, queries: int = 3) -> EpisodeBatch:
    generator = torch.Generator().manual_seed(0)
    support_y = torch.arange(5).repeat(episodes, 1)
    query_y = torch.arange(5).repeat_interleave(queries).repeat(episodes, 1)
    return EpisodeBatch(
        support_x=torch.rand(episodes, 5, 1, 28, 28, generator=generator),
        support_y=support_y,
        query_x=torch.rand(episodes, 5 * queries, 1, 28, 28, generator=generator),
        query_y=query_y,
        ways=5,
        shots=1,
    )


def test_pinned_gates_train_the_learner_like_sgd(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = MetaLSTM(MetaLSTMHyperparameters(hidden=8, updates=4, eval_updates=4), TASK).double()
    lr = 0.1

    def pinned(self, x, theta, forget, input):  # type: ignore[no-untyped-def]
        return torch.ones_like(theta), torch.full_like(theta, lr)

    monkeypatch.setattr(MetaLSTMCell, "gates", pinned)
    batch = episode_batch()
    x, y = batch.support_x[0].double(), batch.support_y[0]
    adapted = model.adapt(x, y, 4)
    theta = model.initial.detach().clone()
    for _ in range(4):
        theta.requires_grad_()
        (grad,) = torch.autograd.grad(F.cross_entropy(model.logits(theta, x), y), theta)
        theta = (theta - lr * grad).detach()
    torch.testing.assert_close(adapted.detach(), theta, rtol=1e-10, atol=1e-12)
    assert not torch.equal(theta, model.initial.detach()), "the learner moved"


def test_the_meta_gradient_reaches_the_meta_learner_and_the_initial_parameters() -> None:
    torch.manual_seed(0)
    model = MetaLSTM(MetaLSTMHyperparameters(hidden=8, updates=3, eval_updates=3), TASK)
    out = model.meta_loss(episode_batch())
    out.loss.backward()
    assert model.initial.grad is not None and float(model.initial.grad.abs().sum()) > 0
    gates = model.meta_learner.update
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in gates.parameters())
    assert all(p.grad is None for p in model.learner.parameters()), "the learner module only describes the network"
    assert 0.0 <= float(out.score) <= 100.0


def test_prediction_adapts_a_copy_and_returns_query_logits() -> None:
    torch.manual_seed(0)
    model = MetaLSTM(MetaLSTMHyperparameters(hidden=8, updates=2, eval_updates=5), TASK)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    logits = model.predict(episode_batch(episodes=3, queries=2))
    assert logits.shape == (3, 10, 5) and not logits.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_at_least_one_update() -> None:
    with pytest.raises(ValueError, match="at least one update"):
        MetaLSTM(MetaLSTMHyperparameters(updates=0), TASK)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"shots": 1}, "omniglot-5w1s"),
        ({"shots": 1, "dataset": "miniimagenet"}, "miniimagenet-5w1s"),
        ({"shots": 5}, "miniimagenet-5w5s"),
    ],
)
def test_run_meta_lstm_shots_1_picks_the_benchmark_that_runs_anywhere(filters: dict, expected: str) -> None:
    from metabench.registry_loader import get_spec
    from metabench.runner import resolve_benchmark

    spec = get_spec("meta-lstm")
    chosen, _ = resolve_benchmark(spec, None, shots=filters.get("shots"), ways=None, dataset=filters.get("dataset"))
    assert chosen.id == expected
    assert (chosen.reported is None) == (chosen.dataset == "omniglot"), "Omniglot has no number in the paper"
    if chosen.dataset == "miniimagenet":
        assert chosen.profile("paper").model["updates"] == (12 if chosen.shots == 1 else 5), "the paper's updates"
