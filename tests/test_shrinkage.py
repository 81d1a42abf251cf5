"""Shrinkage (Chen et al.): the prior's limits are exact, the implicit sigma-gradient is right, and the
alphabet-grouped Omniglot episodes draw every class of a task from one alphabet.

* An infinite shrinkage variance is MAML (and Reptile): adapted parameters and meta-gradients equal
  the plain algorithm's in float64.
* A zero variance moves no parameter at all, whatever the optimiser or engine path.
* The implicit sigma-gradient equals the derivative of the validation loss through a converged
  unrolled adaptation, and has the sign one expects on hand-made tasks.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.episodes import EpisodeBatch, EpisodeShape, GroupedClassBank
from metabench.inner import Adam, Prior, adapt, forward, meta_parameters
from metabench.reproduction import TaskInfo
from metabench.reproductions.gbml_nets import MLP, ConvNet
from metabench.reproductions.shrinkage import Shrinkage, ShrinkageHyperparameters, module_of, random_affine

TOL = 1e-10


def _regression_tasks(tasks: int = 3, n: int = 6, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(tasks, n, 1, generator=g, dtype=torch.float64) * 10 - 5
    xq = torch.rand(tasks, n, 1, generator=g, dtype=torch.float64) * 10 - 5
    amplitude = torch.rand(tasks, 1, 1, generator=g, dtype=torch.float64) * 4 + 1
    return xs, amplitude * torch.sin(xs), xq, amplitude * torch.sin(xq)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP(1, (16, 16), 1, None).double()


def _prior(model: nn.Module, params: dict[str, Tensor], log_variance: float) -> Prior:
    logs = {module_of(k): torch.tensor(log_variance, dtype=torch.float64, requires_grad=True) for k in params}
    return Prior(params, {k: logs[module_of(k)] for k in params})


@pytest.mark.parametrize("path", ["loop", "batched"])
def test_infinite_variance_adapts_and_meta_learns_exactly_like_maml(path: str) -> None:
    model, (xs, ys, xq, yq) = _mlp(), _regression_tasks()
    params = meta_parameters(model)
    common = {"steps": 3, "lr": 0.05, "path": path}
    plain, _ = adapt(model, params, xs, ys, F.mse_loss, **common)  # type: ignore[arg-type]
    shrunk, _ = adapt(model, params, xs, ys, F.mse_loss, prior=_prior(model, params, 1e4), **common)  # type: ignore[arg-type]
    big, _ = adapt(model, params, xs, ys, F.mse_loss, prior=_prior(model, params, 80.0), **common)  # type: ignore[arg-type]
    for k in params:
        assert torch.equal(plain[k], shrunk[k]), "an infinite variance must leave MAML's steps bit for bit"
        assert float((plain[k] - big[k]).abs().max()) < 1e-12, "a huge variance must match MAML to float64 precision"
        assert float((plain[k] - params[k]).abs().max()) > 1e-3, "the adaptation compared actually moved"
    grads = []
    for adapted in (plain, big):
        loss = F.mse_loss(forward(model, adapted, xq, path), yq)  # type: ignore[arg-type]
        grads.append(torch.autograd.grad(loss, list(params.values())))
    assert max(float((a - b).abs().max()) for a, b in zip(*grads, strict=True)) < TOL


@pytest.mark.parametrize("path", ["loop", "batched"])
@pytest.mark.parametrize("optimiser", ["sgd", "adam"])
def test_zero_variance_moves_no_parameter(path: str, optimiser: str) -> None:
    torch.manual_seed(0)
    model = ConvNet(1, 4, 5, 28, strided=True, head="mean", norm="batch").double()
    g = torch.Generator().manual_seed(1)
    xs = torch.rand(2, 10, 1, 28, 28, generator=g, dtype=torch.float64)
    ys = torch.arange(5).repeat(2, 2)
    params = meta_parameters(model)
    lr = Adam(0.01) if optimiser == "adam" else 0.4
    for log_variance, exact in ((-1e4, True), (-80.0, False)):
        adapted, _ = adapt(
            model,
            params,
            xs,
            ys,
            F.cross_entropy,
            steps=4,
            lr=lr,
            path=path,
            prior=_prior(model, params, log_variance),  # type: ignore[arg-type]
        )
        for k, p in params.items():
            moved = float((adapted[k] - p).abs().max())
            assert (moved == 0.0) if exact else (moved < 1e-20), (
                f"{k} moved by {moved} with log variance {log_variance}"
            )
    free, _ = adapt(model, params, xs, ys, F.cross_entropy, steps=4, lr=lr, path=path)  # type: ignore[arg-type]
    assert max(float((free[k] - p).abs().max()) for k, p in params.items()) > 1e-4, "without the prior they move"


def test_proximal_step_is_the_map_of_one_gradient_step() -> None:
    """One step: ``argmin_x ||x - (phi - a g)||^2 / (2a) + ||x - phi||^2 / (2 var)``, by hand."""
    model, (xs, ys, _, _) = _mlp(), _regression_tasks(tasks=1)
    params = meta_parameters(model)
    a, log_var = 0.05, math.log(0.3)
    adapted, _ = adapt(
        model, params, xs, ys, F.mse_loss, steps=1, lr=a, path="loop", prior=_prior(model, params, log_var)
    )
    grads = torch.autograd.grad(F.mse_loss(model(xs[0]), ys[0]), list(params.values()))
    var = 0.3
    for (k, p), g in zip(params.items(), grads, strict=True):
        expected = (var * (p - a * g) + a * p) / (var + a)
        assert float((adapted[k][0] - expected).abs().max()) < 1e-12


def _linear_shrinkage(steps: int, inner_lr: float = 0.2, cg_steps: int = 5) -> Shrinkage:
    hp = ShrinkageHyperparameters(
        base="maml",
        backbone="mlp",
        mlp_hidden=(),
        inner_lr=inner_lr,
        inner_steps=steps,
        init_log_variance=math.log(0.5),
        sigma_grad="implicit",
        cg_steps=cg_steps,
        engine="loop",
    )
    model = Shrinkage(hp, TaskInfo(1, 1, 1, 4)).double()
    with torch.no_grad():  # phi = (w, b) = (0, 0): the prior pulls toward the zero function
        for p in model.net.parameters():
            p.zero_()
    return model


def _line_batch(train_slope: float, val_slope: float) -> EpisodeBatch:
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=torch.float64)
    return EpisodeBatch(
        support_x=x.unsqueeze(0),
        support_y=(train_slope * x).unsqueeze(0),
        query_x=x.unsqueeze(0),
        query_y=(val_slope * x).unsqueeze(0),
        ways=1,
        shots=4,
    )


def _unrolled_sigma_gradient(model: Shrinkage, batch: EpisodeBatch) -> float:
    params = {k: p.detach() for k, p in meta_parameters(model.net).items()}
    log_variance = model.log_variance[model._key("layers.0")]
    prior = Prior(params, {k: log_variance for k in params})
    adapted, _ = adapt(
        model.net,
        params,
        batch.support_x,
        batch.support_y,
        F.mse_loss,
        steps=model.hparams.inner_steps,
        lr=model.hparams.inner_lr,
        path="loop",
        prior=prior,
    )
    loss = F.mse_loss(forward(model.net, adapted, batch.query_x, "loop"), batch.query_y)
    (grad,) = torch.autograd.grad(loss, [log_variance])
    return float(grad)


@pytest.mark.parametrize(("train_slope", "val_slope", "sign"), [(2.0, 2.0, -1.0), (2.0, 0.0, 1.0)])
def test_implicit_sigma_gradient_has_the_expected_sign_and_equals_the_converged_unrolled_one(
    train_slope: float, val_slope: float, sign: float
) -> None:
    """Validation data like the training data: a larger variance (adapt more) lowers the validation loss,
    so the gradient is negative; validation data at the prior's centre: it is positive."""
    model = _linear_shrinkage(steps=400)
    batch = _line_batch(train_slope, val_slope)
    with torch.enable_grad():
        adapted, _ = model._adapt(
            model.net, model._inner_data(batch, 400, 0, None), 400, shrink=True, differentiate=False
        )
    implicit = float(model.implicit_sigma_gradient(model.net, batch, adapted)["layers.0"])
    unrolled = _unrolled_sigma_gradient(model, batch)
    assert math.isfinite(implicit) and implicit * sign > 1e-3
    assert abs(implicit - unrolled) < 1e-8 * max(1.0, abs(unrolled))
    first_order = _linear_shrinkage(steps=400, cg_steps=0)
    approx = float(first_order.implicit_sigma_gradient(first_order.net, batch, adapted)["layers.0"])
    assert math.isfinite(approx) and approx * sign > 0, "the curvature-free approximation keeps the sign"


def test_sigma_maml_meta_gradient_is_finite_and_reaches_every_layer() -> None:
    model = Shrinkage(ShrinkageHyperparameters(inner_steps=2), TaskInfo(1, 1, 1, 5)).double()
    xs, ys, xq, yq = _regression_tasks(tasks=4)
    batch = EpisodeBatch(xs, ys, xq, yq, ways=1, shots=6)
    model.meta_loss(batch).loss.backward()
    grads = {k: p.grad for k, p in model.log_variance.items()}
    assert set(model.learned()["shrinkage_variance"]) == {"layers.0", "layers.2", "layers.4"}
    assert all(g is not None and math.isfinite(float(g)) and float(g) != 0.0 for g in grads.values())
    assert all(p.grad is not None for p in model.baseline.parameters()), "the plain MAML baseline trains too"


def test_sigma_reptile_with_infinite_variance_takes_reptile_step() -> None:
    hp = ShrinkageHyperparameters(
        base="reptile", backbone="conv4-pool", hidden=4, norm="batch", task="classification", inner_lr=0.1,
        inner_steps=3, eval_inner_steps=3, inner_batch=5, augment=True, init_log_variance=80.0,
        sigma_grad="implicit", cg_steps=2,
    )  # fmt: skip
    model = Shrinkage(hp, TaskInfo(1, 28, 5, 2)).double()
    g = torch.Generator().manual_seed(0)
    batch = EpisodeBatch(
        torch.rand(2, 10, 1, 28, 28, generator=g, dtype=torch.float64), torch.arange(5).repeat(2, 2),
        torch.rand(2, 5, 1, 28, 28, generator=g, dtype=torch.float64), torch.arange(5).repeat(2, 1), ways=5, shots=2,
    )  # fmt: skip
    torch.manual_seed(3)
    model.meta_loss(batch).loss.backward()
    for (name, p), q in zip(model.net.named_parameters(), model.baseline.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        assert float((p.grad - q.grad).abs().max()) < 1e-9, f"{name}: sigma-Reptile at sigma = inf is Reptile"
    assert max(float(q.grad.abs().max()) for q in model.baseline.parameters() if q.grad is not None) > 1e-6
    assert all(p.grad is not None and math.isfinite(float(p.grad)) for p in model.log_variance.values())
    assert model.competitors() == ("reptile",)
    model.eval()
    with torch.enable_grad():
        first, again = model.predict(batch), model.predict(batch)
    assert torch.equal(first, again), "scoring the same tasks twice gives the same numbers"
    assert model.predict_competitor("reptile", batch).shape == first.shape
    with pytest.raises(ValueError, match="predicts as"):
        model.predict_competitor("maml", batch)


def test_random_affine_keeps_shape_and_blank_images_blank() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(6, 1, 28, 28)
    images[:, :, 10:18, 10:18] = 1.0
    out = random_affine(images, g)
    assert out.shape == images.shape
    assert torch.equal(random_affine(torch.zeros(3, 1, 28, 28), g), torch.zeros(3, 1, 28, 28))
    assert not torch.allclose(out, images), "the images were transformed"
    mass = out.sum((1, 2, 3)) / images.sum((1, 2, 3))
    assert bool(((mass > 0.5) & (mass < 1.6)).all()), "ink is moved and scaled, not lost"


def test_grouped_bank_draws_every_class_of_an_episode_from_one_group() -> None:
    images = torch.randint(0, 255, (12, 6, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
    bank = GroupedClassBank(images, groups, "train")
    shape = EpisodeShape(4, 2, 1)
    index = bank.draw(shape, 200, torch.Generator().manual_seed(1))
    chosen = groups[index.classes]
    assert bool((chosen == chosen[:, :1]).all()), "one group per episode"
    assert set(chosen[:, 0].tolist()) == {0, 1}, "group 2 has too few classes for 4 ways"
    assert all(len(set(row.tolist())) == 4 for row in index.classes)
    a = bank.freeze(shape, 50, 7, {"part": "train"})
    b = bank.freeze(shape, 50, 7, {"part": "train"})
    other = GroupedClassBank(images, torch.tensor([0] * 6 + [1] * 6), "train").freeze(shape, 50, 7, {"part": "train"})
    assert a.digest == b.digest and a.digest != other.digest
    sampler = bank.sampler(shape, seed=3)
    state = sampler.state()
    first = sampler.sample(5)
    sampler.restore(state)
    assert torch.equal(first.support_x, sampler.sample(5).support_x)
    from metabench.errors import MetabenchError

    with pytest.raises(MetabenchError, match="no group"):
        bank.check_shape(EpisodeShape(6, 1, 1))


@pytest.mark.data
def test_flennerhag_split_has_30_train_and_10_test_alphabets_of_at_least_20_characters(data_dir: Path) -> None:
    from metabench.data import load_parts
    from metabench.data.omniglot import load_images

    parts = load_parts("omniglot", "flennerhag", 28, data_dir=data_dir, progress=False)
    sizes = {name: part.group_sizes() for name, part in parts.items() if isinstance(part, GroupedClassBank)}
    assert {name: len(s) for name, s in sizes.items()} == {"train": 30, "val": 6, "test": 10}
    assert all(int(s.min()) >= 20 for s in sizes.values())
    images = load_images(28, data_dir, progress=False)
    seen: list[set[bytes]] = [
        {bytes(c.numpy().tobytes()) for c in parts[name].images[:, 0]} for name in ("train", "val", "test")
    ]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2]), "disjoint characters"
    assert sum(len(s) for s in sizes.values()) == 46 and images.images.shape[0] == 1623
    episode = parts["test"].sampler(EpisodeShape(20, 15, 5), seed=0).sample(2)
    assert episode.support_x.shape == (2, 300, 1, 28, 28) and episode.query_x.shape == (2, 100, 1, 28, 28)
