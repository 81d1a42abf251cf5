"""Andrychowicz et al.'s protocol: tasks, baselines, tuning, the paired claim and the plot.

The long meta-training that decides the claim is not here; these tests check each piece is what it
says (a batch of problems is that many separate runs, the MLP is the network its parameters
describe, every optimizer sees the same minibatches) and that the whole path runs in seconds.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from metabench.data.problems import ProblemBatch, quadratic_parts
from metabench.episodes import EpisodeShape
from metabench.errors import MetabenchError
from metabench.reproduction import TaskInfo
from metabench.reproductions.learned_optimizer import (
    BASELINES,
    LEARNED,
    LR_GRID,
    LearnedOptimizer,
    LearnedOptimizerHyperparameters,
    MlpTask,
    Problems,
    QuadraticTask,
    plot_curves,
    run_baseline,
    run_learned,
    tune,
)
from metabench.reproductions.update_rules import CoordinateWiseLSTM


def toy_mlp_task(hidden: tuple[int, ...] = (5,), activation: str = "sigmoid") -> MlpTask:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(200, 12, generator=generator)
    labels = (images[:, :3].argmax(-1)).long()
    return MlpTask(images, labels, hidden=hidden, activation=activation, batch_size=16, classes=3)


def test_quadratics_are_the_released_code_s_distribution_and_formula() -> None:
    problems = QuadraticTask().sample(64, seed=3)
    again = QuadraticTask().sample(64, seed=3)
    assert problems.theta0.shape == (64, 10) and torch.equal(problems.theta0, again.theta0)
    assert float(problems.theta0.std()) == pytest.approx(0.01, rel=0.15)
    theta = torch.randn(64, 10)
    loss = problems.make_loss()(theta)
    assert loss.shape == (64,)
    torch.testing.assert_close(loss, again.make_loss()(theta))
    assert not torch.equal(QuadraticTask().sample(64, seed=4).theta0, problems.theta0)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize("hidden", [(5,), (4, 6)])
def test_mlp_parameters_describe_the_same_network_as_nn_sequential(hidden: tuple[int, ...], activation: str) -> None:
    task = toy_mlp_task(hidden, activation)
    theta = torch.randn(3, task.dims)
    x = torch.randn(3, 7, 12)
    logits = task.logits(theta, x)
    for problem in range(3):
        layers: list[nn.Module] = []
        offset = 0
        for index, (fan_in, fan_out) in enumerate(task.shapes):
            linear = nn.Linear(fan_in, fan_out)
            with torch.no_grad():
                linear.weight.copy_(theta[problem, offset : offset + fan_in * fan_out].view(fan_in, fan_out).T)
                offset += fan_in * fan_out
                linear.bias.copy_(theta[problem, offset : offset + fan_out])
                offset += fan_out
            layers.append(linear)
            if index < len(task.shapes) - 1:
                layers.append(nn.Sigmoid() if activation == "sigmoid" else nn.ReLU())
        assert offset == task.dims
        torch.testing.assert_close(logits[problem], nn.Sequential(*layers)(x[problem]))


def test_every_optimizer_sees_the_same_minibatches() -> None:
    problems = toy_mlp_task().sample(4, seed=0)
    first, second = problems.make_loss(), problems.make_loss()
    theta = problems.theta0
    sequence = [first(theta) for _ in range(3)]
    assert [torch.equal(a, second(theta)) for a in sequence] == [True] * 3
    assert not torch.equal(sequence[0], sequence[1])  # a new minibatch every step


@pytest.mark.parametrize("name", BASELINES)
def test_a_batch_of_problems_is_that_many_separate_runs(name: str) -> None:
    batch = QuadraticTask().sample(5, seed=1)
    together = run_baseline(name, 0.01, batch, steps=15)
    assert together.shape == (16, 5)
    for problem in range(5):
        alone = Problems(batch.theta0[problem : problem + 1], lambda p=problem: _one_quadratic(batch, p))
        torch.testing.assert_close(run_baseline(name, 0.01, alone, steps=15)[:, 0], together[:, problem])


def _one_quadratic(batch: Problems, problem: int):
    loss = batch.make_loss()

    def single(theta: torch.Tensor) -> torch.Tensor:
        padded = batch.theta0.clone()
        padded[problem] = theta[0]
        return loss(padded)[problem : problem + 1]

    return single


def test_sgd_baseline_is_gradient_descent() -> None:
    problems = QuadraticTask(dims=3).sample(2, seed=0)
    losses = run_baseline("sgd", 0.05, problems, steps=4)
    theta = problems.theta0.clone().requires_grad_()
    loss_fn = problems.make_loss()
    for step in range(4):
        loss = loss_fn(theta)
        torch.testing.assert_close(losses[step], loss.detach())
        (grad,) = torch.autograd.grad(loss.sum(), theta)
        theta = (theta - 0.05 * grad).detach().requires_grad_()
    torch.testing.assert_close(losses[4], loss_fn(theta).detach())


def test_tuning_picks_the_best_rate_and_diverged_runs_lose() -> None:
    problems = QuadraticTask().sample(16, seed=2)
    best, scores = tune("sgd", problems, steps=30, grid=(1e-4, 1e-2, 10.0))
    assert scores[10.0] == math.inf
    assert scores[1e-2] < scores[1e-4]
    assert best == 1e-2
    with pytest.raises(ValueError, match="unknown baseline"):
        tune("lbfgs", problems, steps=1, grid=(0.1,))


def test_lr_grid_spans_four_decades_in_half_decades() -> None:
    assert LR_GRID[0] == pytest.approx(1e-4) and LR_GRID[-1] == 1.0 and len(LR_GRID) == 9
    assert all(b / a == pytest.approx(math.sqrt(10)) for a, b in itertools.pairwise(LR_GRID))


def small_optimizer(**changes: object) -> LearnedOptimizer:
    settings = {"horizon": 10, "unroll": 5, "tune_problems": 6, "lr_grid": (1e-3, 1e-2, 1e-1), "preprocess": True}
    return LearnedOptimizer(LearnedOptimizerHyperparameters(**{**settings, **changes}), TaskInfo(10, 1, 1, 1))  # type: ignore[arg-type]


def test_meta_loss_carries_the_problems_across_the_segments_of_one_batch() -> None:
    torch.manual_seed(0)
    model = small_optimizer()
    batch = quadratic_parts("l2l")["train"].sampler(EpisodeShape(1, 1, 1), seed=0).sample(8)
    with pytest.raises(MetabenchError, match="no batch was started"):
        model.meta_loss(batch)
    with pytest.raises(MetabenchError, match="steps_per_batch to 2"):
        model.start_batch(batch, 5)  # the runner would take 5 steps on a 2-segment horizon
    model.start_batch(batch, 2)
    first = model.meta_loss(batch)
    assert first.loss.requires_grad and first.loss.shape == ()
    start = batch.require().theta0
    moved = model._optimizee
    assert moved is not None and moved.segment == 1 and not torch.equal(moved.theta, start)
    second = model.meta_loss(batch)
    # the second segment starts where the first stopped: the same 10 steps run straight through
    straight = run_learned(model.rule, batch.require(), 10)
    torch.testing.assert_close(second.score, straight[9].mean())
    with pytest.raises(MetabenchError, match="segments are done"):
        model.meta_loss(batch)  # a third segment of a 2-segment horizon
    model.start_batch(batch, 2)  # the same problems again start from their initial parameters
    torch.testing.assert_close(model.meta_loss(batch).score, first.score)


def test_competitors_are_tuned_on_the_validation_part_never_the_test_part(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = small_optimizer()
    parts = quadratic_parts("l2l")
    frozen = parts["test"].freeze(EpisodeShape(1, 1, 1), 12, 0, {"part": "test"})
    batch = next(frozen.batches(parts["test"], 12))
    assert model.competitors() == BASELINES
    assert batch.tuning is parts["val"]
    scores = {name: model.predict_competitor(name, batch) for name in BASELINES}
    assert model.tuning["part"] == "val" and set(model.tuning["tuned_lr"]) == set(BASELINES)
    tuning = parts["val"].freeze(EpisodeShape(1, 1, 1), 6, 0, {"purpose": "tuning", "part": "val"})
    assert model.tuning["digest"] == tuning.digest, "tuned on the frozen validation problems"
    for name, lr in model.tuning["tuned_lr"].items():
        torch.testing.assert_close(scores[name], run_baseline(name, lr, batch.require(), 10)[-1])
        assert lr == tune(name, next(tuning.batches(parts["val"], 6)).require(), 10, (1e-3, 1e-2, 1e-1))[0]
    assert model.predict(batch).shape == (12,)

    files = model.figures(batch, tmp_path / "quadratic__quick__seed0__T.json")
    stem = "quadratic__quick__seed0__T"
    assert [f.name for f in files] == [f"{stem}.png", f"{stem}.curves.csv", f"{stem}.tuning.csv"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = files[1].read_text().splitlines()
    assert curves[0].split(",") == ["step", LEARNED, *BASELINES] and len(curves) == 1 + 11
    tuning = [line.split(",") for line in files[2].read_text().splitlines()[1:]]
    assert len(tuning) == len(BASELINES) * 3 and {row[-1] for row in tuning} == {model.tuning["digest"]}
    assert sorted(row[0] for row in tuning if row[3] == "True") == sorted(BASELINES), "one chosen rate each"


def test_evaluation_runs_each_curve_once_per_problems_and_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures redraw what scoring ran; a cached curve never outlives the problems, nor the weights once
    :meth:`weights_changed` says they moved."""
    from dataclasses import replace

    from metabench.reproductions import learned_optimizer

    torch.manual_seed(0)
    model = small_optimizer()
    runs: list[int] = []
    real = learned_optimizer.run_learned
    monkeypatch.setattr(learned_optimizer, "run_learned", lambda *a, **k: runs.append(1) or real(*a, **k))
    family = toy_mlp_task()
    test = family.batch(family.draw(4, torch.Generator().manual_seed(0)))
    first = model.predict(test)
    torch.testing.assert_close(model.predict(test), first)
    assert len(runs) == 1, "the same problems and weights: one run"
    # another part's problems drawn from the same seed start at the same points but score other data
    other = replace(family, images=family.images.flip(0))
    model.predict(other.batch(other.draw(4, torch.Generator().manual_seed(0))))
    assert len(runs) == 2
    with torch.no_grad():
        model.rule.head.bias.add_(1.0)  # what an optimiser step does to the weights...
    model.weights_changed()  # ...and what the runner says after it
    moved = model.predict(test)
    assert not torch.equal(moved, first) and len(runs) == 3
    model.load_state_dict(model.state_dict())  # loading weights (a checkpoint, early stopping) says so itself
    torch.testing.assert_close(model.predict(test), moved)
    assert len(runs) == 4


def test_a_batch_without_a_tuning_part_is_refused() -> None:
    model = small_optimizer()
    batch = QuadraticTask().batch(QuadraticTask().draw(3, torch.Generator().manual_seed(0)))
    assert isinstance(batch, ProblemBatch) and batch.tuning is None
    with pytest.raises(MetabenchError, match="no tuning part"):
        model.predict_competitor("sgd", batch)


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    curves = {LEARNED: [3.0, 1.0, 0.5], "adam": [3.0, 2.0, math.inf]}
    png = plot_curves(curves, {"adam": 0.1}, 4, "toy", tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learned_run_scores_the_same_points_as_the_baselines() -> None:
    problems = QuadraticTask().sample(4, seed=0)

    class Sgd(CoordinateWiseLSTM):
        def readout(self, hidden: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
            return -0.01 * grad

    torch.testing.assert_close(run_learned(Sgd(), problems, steps=12), run_baseline("sgd", 0.01, problems, 12))


@pytest.mark.data
def test_mnist_mlp_task_on_the_real_data() -> None:
    from metabench.data import mnist

    data = mnist.load(download=False, progress=False)
    task = MlpTask(data.train.float_images(), data.train.labels)
    assert task.dims == 784 * 20 + 20 + 20 * 10 + 10
    losses = run_baseline("adam", 0.01, task.sample(2, seed=0), steps=20)
    assert float(losses[0].mean()) == pytest.approx(math.log(10), abs=0.05)  # tiny weights: uniform outputs
    assert float(losses[-1].mean()) < 0.8 * float(losses[0].mean())
