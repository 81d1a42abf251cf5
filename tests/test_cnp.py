"""Conditional Neural Processes: the model's invariances and shapes, the GP and pixel-completion task
sources, the log-likelihood metric (with the MSE beside it) and log-likelihood by number of context points."""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import metabench
from metabench import compare, results
from metabench.data.completion import PixelCompletion
from metabench.data.gp import load_parts
from metabench.episodes import EpisodeBatch, EpisodeShape
from metabench.errors import InterruptedRun, MetabenchError, ResultError, SpecError
from metabench.evaluate import evaluate, evaluate_by_context, evaluate_with, score
from metabench.registry_loader import get_spec
from metabench.reproduction import Reproduction, TaskInfo
from metabench.reproductions.cnp import CNP
from metabench.spec import parse_spec
from tests.test_results import minimal

CNP_TOML = Path(__file__).resolve().parents[1] / "registry" / "cnp.toml"
TRAIN_SHAPE = EpisodeShape(1, 9, 9)
TEST_SHAPE = EpisodeShape(1, 9, 400)


def regression_model(x_dims: int = 1, seed: int = 0) -> CNP:
    torch.manual_seed(seed)
    model = CNP.build({"encoder": [32, 32, 32], "decoder": [32]}, TaskInfo(x_dims, 1, 1, 9))
    return model.eval()  # type: ignore[return-value]


def permuted(batch: EpisodeBatch, order: Tensor) -> EpisodeBatch:
    return replace(batch, support_x=batch.support_x[:, order], support_y=batch.support_y[:, order])


# --------------------------------------------------------------------------- the model


def test_regression_output_does_not_depend_on_the_order_of_the_context() -> None:
    model = regression_model()
    batch = load_parts("cnp")["train"].sampler(TRAIN_SHAPE, seed=3).sample(4)
    order = torch.randperm(batch.support_x.shape[1], generator=torch.Generator().manual_seed(1))
    assert not torch.equal(order, torch.arange(order.numel())), "the permutation moves something"
    with torch.no_grad():
        plain, shuffled = model.predict(batch), model.predict(permuted(batch, order))
    torch.testing.assert_close(shuffled, plain, rtol=1e-5, atol=1e-6)
    # and it does depend on the context: dropping a point changes the prediction
    with torch.no_grad():
        fewer = model.predict(replace(batch, support_x=batch.support_x[:, 1:], support_y=batch.support_y[:, 1:]))
    assert not torch.allclose(fewer, plain, atol=1e-4)


def test_classifier_output_does_not_depend_on_the_order_of_the_support_set() -> None:
    torch.manual_seed(0)
    task = TaskInfo(channels=1, image_size=28, ways=5, shots=2)
    model = CNP.build({"task": "classification", "embedding": 8, "encoder": [16, 16], "decoder": [16]}, task).eval()
    images = torch.rand(2, 15, 1, 28, 28)
    support_y = torch.arange(5).repeat(2).expand(2, -1)  # 2 shots of each of 5 classes
    query_y = torch.arange(5).expand(2, -1)
    batch = EpisodeBatch(images[:, :10], support_y, images[:, 10:], query_y, ways=5, shots=2)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model.predict(batch)
        shuffled = model.predict(permuted(batch, order))
        embedded = model.predict_embedded(
            replace(
                batch,
                support_x=model.embed(batch.support_x.flatten(0, 1)).view(2, 10, -1),
                query_x=model.embed(batch.query_x.flatten(0, 1)).view(2, 5, -1),
            )
        )
    assert logits.shape == (2, 5, 5)
    torch.testing.assert_close(shuffled, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embedded, logits, rtol=1e-5, atol=1e-5)  # the evaluator's embed-once path


def test_shapes_and_the_bounded_standard_deviation() -> None:
    model = regression_model()
    batch = load_parts("cnp")["train"].sampler(TRAIN_SHAPE, seed=0).sample(6)
    n = batch.support_x.shape[1]
    assert batch.support_x.shape == (6, n, 1) and batch.query_x.shape[0] == 6
    with torch.no_grad():
        predicted = model.predict(batch)
    assert predicted.shape == (*batch.query_y.shape, 2)
    assert bool((predicted[..., 1] >= 0.1).all()), "sigma = 0.1 + 0.9 softplus(.) is at least 0.1"
    out = model.train().meta_loss(batch)
    assert out.loss.dim() == 0 and out.loss.requires_grad
    assert float(out.score) == pytest.approx(-float(out.loss.detach()), rel=1e-5), (
        "the training score is the log-likelihood"
    )
    notebook = CNP.build({}, TaskInfo(1, 1, 1, 9))
    linear = [m for m in notebook.encoder if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [128, 128, 128, 128], "encoder MLP 4 x 128"
    assert [m.out_features for m in notebook.decoder if isinstance(m, torch.nn.Linear)] == [128, 128, 2]


def test_two_dimensional_inputs_for_image_completion() -> None:
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    source = PixelCompletion("test", images, min_context=1, min_extra=0)
    batch = source.sampler(EpisodeShape(1, 50, 20), seed=0).sample(3)
    n, t = batch.support_x.shape[1], batch.query_x.shape[1]
    assert 1 <= n <= 50 and n <= t <= n + 20
    assert batch.support_x.shape == (3, n, 2) and batch.support_y.shape == (3, n, 1)
    assert torch.equal(batch.query_x[:, :n], batch.support_x), "the targets include the context"
    assert float(batch.query_x.abs().max()) <= 1.0 and float(batch.query_y.min()) >= 0.0
    with torch.no_grad():
        assert regression_model(x_dims=2).predict(batch).shape == (3, t, 1, 2)


# --------------------------------------------------------------------------- the GP task source


def test_gp_training_batches_follow_the_notebook() -> None:
    family = load_parts("cnp")["train"]
    sampler = family.sampler(TRAIN_SHAPE, seed=0)
    contexts, extras = set(), set()
    for _ in range(60):
        batch = sampler.sample(2)
        n, t = batch.support_x.shape[1], batch.query_x.shape[1]
        contexts.add(n)
        extras.add(t - n)
        assert torch.equal(batch.query_x[:, :n], batch.support_x) and torch.equal(batch.query_y[:, :n], batch.support_y)
        assert float(batch.query_x.min()) >= -2.0 and float(batch.query_x.max()) <= 2.0
    assert contexts == set(range(3, 10)), "3 to 9 context points"
    assert extras == set(range(2, 10)), "2 to 9 extra targets"


def test_gp_sampler_is_seeded_and_resumable() -> None:
    family = load_parts("cnp")["train"]
    first, second = family.sampler(TRAIN_SHAPE, seed=5), family.sampler(TRAIN_SHAPE, seed=5)
    a, b = first.sample(4), second.sample(4)
    assert torch.equal(a.query_x, b.query_x) and torch.equal(a.query_y, b.query_y)
    state = first.state()
    after = first.sample(4)
    first.restore(state)
    assert torch.equal(first.sample(4).query_y, after.query_y)
    assert not torch.equal(family.sampler(TRAIN_SHAPE, seed=6).sample(4).query_x, a.query_x)


def test_gp_functions_have_the_kernels_covariance() -> None:
    """Values at two inputs 0.4 apart: variance 1 + 0.02^2, correlation exp(-1/2) (length scale 0.4)."""
    family = load_parts("cnp")["train"]
    generator = torch.Generator().manual_seed(0)
    x = torch.tensor([0.0, 0.4]).expand(20000, -1)
    y = family.values(x, torch.randn(20000, 2, generator=generator, dtype=torch.float64))
    covariance = torch.cov(y.T)
    assert float(covariance[0, 0]) == pytest.approx(1.0004, abs=0.04)
    assert float(covariance[0, 1] / covariance[0, 0].sqrt() / covariance[1, 1].sqrt()) == pytest.approx(
        math.exp(-0.5), abs=0.03
    )


#: sha256 of the first 10 frozen test tasks of the registry's GP benchmark (test seed 0): if this changes,
#: every committed GP result was scored on other tasks than a new run would be.
GP_DIGEST_10 = "41d9629d4be438c92dab7a8f89bf5ab5264fb330e6f25a4e081a22f7e5febd84"


def test_gp_test_tasks_are_frozen_with_a_stable_digest() -> None:
    family = load_parts("cnp")["test"]
    key = {"dataset": "gp", "split": "cnp", "part": "test", "image_size": 1}
    frozen = family.freeze(TEST_SHAPE, 10, seed=0, key=key)
    again = load_parts("cnp")["test"].freeze(TEST_SHAPE, 10, seed=0, key=key)
    assert frozen.digest == again.digest == GP_DIGEST_10
    assert family.freeze(TEST_SHAPE, 10, seed=1, key=key).digest != frozen.digest
    sizes = frozen.sizes.tolist()
    assert sizes == sorted(sizes) and set(sizes) <= set(range(3, 10))
    batches = list(frozen.batches(family, 4))
    assert sum(b.size for b in batches) == 10
    for batch in batches:
        assert batch.query_x.shape == (batch.size, 400, 1), "400 test targets"
        assert float(batch.query_x[0, 0]) == -2.0 and float(batch.query_x[0, -1]) == pytest.approx(1.99)
        # the context is among the targets, with the same values
        index = ((batch.support_x[..., 0] + 2.0) * 100).round().long()
        assert torch.equal(batch.query_y[..., 0].gather(1, index), batch.support_y[..., 0])
    assert [b.support_x.shape[1] for b in batches] == [s for s in _runs(sizes, 4)]


def _runs(sizes: list[int], limit: int) -> list[int]:
    """The context size of each batch when equal sizes are grouped, at most ``limit`` at a time."""
    out, start = [], 0
    while start < len(sizes):
        stop = start + 1
        while stop < min(len(sizes), start + limit) and sizes[stop] == sizes[start]:
            stop += 1
        out.append(sizes[start])
        start = stop
    return out


def test_completion_test_tasks_are_frozen_and_nested() -> None:
    images = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    source = PixelCompletion("test", images, 1, 0)
    shape = EpisodeShape(1, 784, 784)
    frozen = source.freeze(shape, 8, seed=0, key={})
    assert frozen.digest == source.freeze(shape, 8, seed=0, key={}).digest
    changed = PixelCompletion("test", images.flip(0), 1, 0)
    assert changed.freeze(shape, 8, seed=0, key={}).digest != frozen.digest, "the digest covers the pixels"
    batch = next(frozen.batches(source, 8))
    assert torch.equal(batch.support_x, batch.query_x), "context: every pixel, in the task's random order"
    assert len(set(frozen.which.tolist())) == 8, "distinct images"


# --------------------------------------------------------------------------- the metrics


def test_log_likelihood_is_the_gaussian_log_density() -> None:
    predictions = torch.tensor([[[[0.5, 2.0]], [[-1.0, 0.1]]]])  # one task, two targets: (mean, std)
    targets = torch.tensor([[[1.5], [-1.0]]])
    by_hand = [
        -0.5 * (1.0 / 2.0) ** 2 - math.log(2.0) - 0.5 * math.log(2 * math.pi),
        -math.log(0.1) - 0.5 * math.log(2 * math.pi),
    ]
    assert score(predictions, targets, "log-likelihood").tolist() == pytest.approx([sum(by_hand) / 2])
    normal = torch.distributions.Normal(predictions[..., 0].double(), predictions[..., 1].double())
    assert float(score(predictions, targets, "log-likelihood")) == pytest.approx(
        float(normal.log_prob(targets.double()).mean())
    )


class _CountingModel(Reproduction):
    """Predicts mean = the number of context points it was given and std 1, whatever the inputs."""

    Hyperparameters = dict  # type: ignore[assignment]

    def predict(self, batch: EpisodeBatch) -> Tensor:
        count = float(batch.support_x.shape[1])
        mean = torch.full_like(batch.query_y, count)
        return torch.stack([mean, torch.ones_like(mean)], dim=-1)


def test_log_likelihood_by_context_scores_the_first_k_context_points() -> None:
    images = torch.zeros(4, 28, 28, dtype=torch.uint8)  # every target is 0
    source = PixelCompletion("test", images, 1, 0)
    frozen = source.freeze(EpisodeShape(1, 784, 784), 4, seed=0, key={})
    model = _CountingModel(None, TaskInfo(2, 28, 1, 784))
    overall, by_count = evaluate_by_context(model, frozen, source, 3, (1, 10, 100))
    gauss = -0.5 * math.log(2 * math.pi)
    assert by_count.shape == (4, 3)
    assert by_count[0].tolist() == pytest.approx([gauss - 0.5 * k**2 for k in (1, 10, 100)])
    assert overall.tolist() == pytest.approx([gauss - 0.5 * 784**2] * 4), "overall: every context point"
    assert evaluate(model, frozen, source, 3, metric="log-likelihood-by-context").tolist() == overall.tolist()


def test_mse_is_reported_beside_the_log_likelihood_from_the_same_predictions() -> None:
    family = load_parts("cnp")["test"]
    frozen = family.freeze(TEST_SHAPE, 12, seed=0, key={})
    model = regression_model()
    scores, also = evaluate_with(model, frozen, family, 5, "log-likelihood", ("mse",))
    means, targets = [], []
    with torch.no_grad():
        for batch in frozen.batches(family, 5):
            means.append(model.predict(batch)[..., 0])
            targets.append(batch.query_y)
    by_hand = torch.cat([(m - t).double().pow(2).mean((1, 2)) for m, t in zip(means, targets, strict=True)])
    assert also["mse"].tolist() == pytest.approx(by_hand.tolist())
    assert (
        scores.shape == (12,)
        and scores.tolist() == evaluate(model, frozen, family, 5, metric="log-likelihood").tolist()
    )


# --------------------------------------------------------------------------- spec, results, compare


def cnp_data() -> dict[str, Any]:
    return tomllib.loads(CNP_TOML.read_text())


def test_the_spec_states_the_protocol_and_no_targets() -> None:
    spec = get_spec("cnp")
    gp = spec.benchmark("gp-regression")
    assert (gp.metric, gp.also, gp.direction, gp.reported) == ("log-likelihood", ("mse",), "higher", None)
    assert gp.profile("paper").train_episodes == 200000 and gp.profile("paper").meta_batch == 64
    assert gp.profile("paper").lr == pytest.approx(1e-4)
    completion = spec.benchmark("mnist-completion")
    assert [c.name for c in completion.components] == ["10 context", "100 context", "300 context", "784 context"]
    assert all(b.reported is None and not any(c.reported for c in b.components) for b in spec.benchmarks)
    assert "UNVERIFIED" in spec.benchmark("omniglot-20w1s").notes


@pytest.mark.parametrize(
    ("index", "change", "fragment"),
    [
        (0, {"also": ["accuracy"]}, "also: 'accuracy' cannot be scored from 'log-likelihood' predictions"),
        (1, {"also": ["mse"]}, "also: 'mse' cannot be scored from 'log-likelihood-by-context'"),
        (1, {"instances": [10, 100, 300, 1000]}, "1000 context points cannot be given"),
        (0, {"chance": None}, "chance: missing"),
    ],
)
def test_malformed_cnp_benchmarks_are_refused(index: int, change: dict[str, Any], fragment: str) -> None:
    data = cnp_data()
    data["benchmarks"][index].update(change)
    if change.get("chance", 0) is None:
        del data["benchmarks"][index]["chance"]
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(")):
        parse_spec(data, Path("cnp.toml"))


def also_result() -> dict[str, Any]:
    data = minimal()
    data.update(paper="cnp", benchmark="gp-regression", spec_file="registry/cnp.toml")
    data["protocol"].update(dataset="gp", split="cnp", ways=1, shots=9, queries=400, metric="log-likelihood")
    data["scores"] = [-0.5, -0.7]
    data["summary"] = {"mean": -0.6, "ci95": 0.28, "std": 0.14, "n": 2}
    data["targets"] = {"chance": -1.42, "floor": None, "min_above_chance": 0.15}
    data["also"] = {"mse": {"scores": [0.1, 0.3], "summary": {"mean": 0.2, "ci95": 0.28, "std": 0.14, "n": 2}}}
    return data


def test_results_carry_the_metrics_reported_beside(tmp_path: Path) -> None:
    path = results.write_atomic(also_result(), tmp_path / "cnp" / "a.json")
    assert results.read(path)["also"]["mse"]["summary"]["mean"] == 0.2
    broken = copy.deepcopy(also_result())
    broken["also"]["mse"]["scores"] = [0.1]
    with pytest.raises(ResultError, match=r"also\.mse has 1 scores"):
        results.validate(broken)
    frame = compare.load_frame([tmp_path])
    assert frame["also"].tolist() == ["mse 0.2000 ± 0.2800"]
    table = compare.render(frame, "markdown")
    assert table.splitlines()[0].rstrip(" |").endswith("also")
    assert "mse 0.2000 ± 0.2800" in table


def test_compare_names_context_components(tmp_path: Path) -> None:
    data = minimal()
    data.update(paper="cnp", benchmark="mnist-completion", spec_file="registry/cnp.toml")
    data["protocol"].update(dataset="mnist-completion", split="mnist", ways=1, metric="log-likelihood-by-context")
    part = {"scores": [0.1, 0.2], "summary": {"mean": 0.15, "ci95": 0.1, "std": 0.07, "n": 2}, "reported": None}
    verdict = {"verdict": "no target", "difference": float("nan"), "band": float("nan"), "rule": ""}
    data["components"] = [
        {"name": f"{k} context", "instance": k, **part, "verdict": verdict, "floor": None} for k in (10, 100, 300, 784)
    ]
    results.write_atomic(data, tmp_path / "cnp" / "b.json")
    table = compare.render(compare.load_frame([tmp_path]), "markdown")
    assert "mnist-completion (100 context)" in table and "instance" not in table


# --------------------------------------------------------------------------- the runner, end to end


def test_gp_run_resumes_exactly_and_draws_its_figure(tmp_path: Path) -> None:
    settings = {"benchmark": "gp-regression", "profile": "smoke", "train_episodes": 60}
    straight, path = metabench.run_benchmark("cnp", **settings, output=tmp_path / "a")
    assert straight["figures"] == [path.with_suffix(".png").name] and path.with_suffix(".png").stat().st_size > 0
    assert set(straight["also"]) == {"mse"} and len(straight["also"]["mse"]["scores"]) == 50
    with pytest.raises(InterruptedRun, match="stopped after step 25 of 60"):
        metabench.run_benchmark("cnp", **settings, output=tmp_path / "b", stop_after=25)
    with pytest.raises(MetabenchError, match="add --resume"):
        metabench.run_benchmark("cnp", **settings, output=tmp_path / "b")
    resumed, _ = metabench.run_benchmark("cnp", **settings, output=tmp_path / "b", resume=True)
    assert resumed["scores"] == straight["scores"], "the context sizes are redrawn exactly after a resume"
    assert resumed["also"] == straight["also"]
