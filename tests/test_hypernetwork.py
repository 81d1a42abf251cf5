"""HyperNetworks (Ha et al. 2017): the generated kernel, the supervised MNIST source, the error metric and
early stopping in the runner."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

import metabench
from metabench import training
from metabench.data.labelled import LabelledImages, crop
from metabench.episodes import EpisodeShape
from metabench.errors import InterruptedRun, MetabenchError, SpecError
from metabench.evaluate import score
from metabench.registry_loader import get_spec
from metabench.reproduction import TaskInfo
from metabench.reproductions.hypernetwork import HyperConvNet, HyperNetworkHyperparameters
from metabench.runner import EarlyStopping
from metabench.spec import parse_spec

MNIST_TASK = TaskInfo(channels=1, image_size=28, ways=10, shots=0)


def build(hyper: bool) -> HyperConvNet:
    torch.manual_seed(0)
    return HyperConvNet(HyperNetworkHyperparameters(hyper=hyper), MNIST_TASK)


# --------------------------------------------------------------------------- the model


def test_generated_kernel_is_7x7x16x16_from_exactly_4244_parameters_against_12544() -> None:
    hyper, plain = build(True), build(False)
    assert hyper.second_kernel().shape == plain.second_kernel().shape == (16, 16, 7, 7)  # torch [out, in, f, f]
    n_z = d = 4
    n_in = n_out = 16
    f = 7
    hypernetwork = n_in * (d * n_z + d) + (f * f * n_out * d + f * f * n_out)  # W_i, B_i; W_out, B_out
    assert hypernetwork == 4240
    assert hyper.second_kernel_parameters() == n_z + hypernetwork == 4244
    assert plain.second_kernel_parameters() == f * f * n_in * n_out == 12544
    total = {m: sum(p.numel() for p in model.parameters()) for m, model in (("hyper", hyper), ("plain", plain))}
    assert total["plain"] - total["hyper"] == 12544 - 4244, "the rest of the network is the same"
    assert hyper.kernel2 is None and plain.generator is None


def test_generated_kernel_follows_the_papers_equations_and_trains_through_z() -> None:
    model = build(True)
    g = model.generator
    assert g is not None
    kernel = model.second_kernel()
    for i in (0, 5, 15):  # K_i = W_out (W_i z + B_i) + B_out reads input channel i
        a_i = g.w_in[4 * i : 4 * i + 4] @ g.z + g.b_in[4 * i : 4 * i + 4]
        k_i = (g.w_out @ a_i + g.b_out).view(16, 7, 7)
        torch.testing.assert_close(kernel[:, i], k_i)
    images = torch.rand(3, 1, 28, 28)
    model.logits(images).sum().backward()
    assert g.z.grad is not None and g.z.grad.abs().sum() > 0, "the embedding is learned through the kernel"


def test_predict_scores_each_query_image_alone() -> None:
    model = build(True).eval()
    images = torch.rand(6, 1, 28, 28)
    together = model.logits(images)
    alone = torch.cat([model.logits(images[k : k + 1]) for k in range(6)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- the supervised source


def tiny_part(n: int = 25, pad: int = 1) -> LabelledImages:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 6, 6), dtype=torch.uint8, generator=generator)
    return LabelledImages("train", images, torch.arange(n) % 10, classes=10, pad=pad)


def test_minibatches_walk_through_epochs_and_resume_exactly() -> None:
    part = tiny_part(25)
    shape = EpisodeShape(10, 0, 10)
    sampler = part.sampler(shape, seed=3)
    seen = [sampler._take(10) for _ in range(5)]  # 50 examples: two full epochs
    assert sorted(torch.cat(seen)[:25].tolist()) == list(range(25)), "an epoch shows every example once"
    assert sorted(torch.cat(seen)[25:].tolist()) == list(range(25))

    first = part.sampler(shape, seed=3)
    first.sample(2)  # 20 of 25: mid-epoch
    saved = first.state()
    expected = [first.sample(1) for _ in range(3)]  # crosses the epoch boundary
    resumed = part.sampler(shape, seed=99)
    resumed.restore(saved)
    for want, got in zip(expected, (resumed.sample(1) for _ in range(3)), strict=True):
        assert torch.equal(want.query_x, got.query_x) and torch.equal(want.query_y, got.query_y)
    other = part.sampler(shape, seed=4).sample(1)
    assert not torch.equal(other.query_y, part.sampler(shape, seed=3).sample(1).query_y)


def test_training_batches_are_padded_and_cropped_and_tasks_have_no_support() -> None:
    images = torch.rand(2, 5, 5)
    centred = crop(images, torch.tensor([[1, 1], [1, 1]]), pad=1)
    torch.testing.assert_close(centred, images)
    shifted = crop(images, torch.tensor([[0, 0], [2, 2]]), pad=1)
    torch.testing.assert_close(shifted[0, 1:, 1:], images[0, :-1, :-1])  # moved down-right by one
    assert shifted[0, 0].abs().sum() == 0 and shifted[0, :, 0].abs().sum() == 0, "the pad is background"
    torch.testing.assert_close(shifted[1, :-1, :-1], images[1, 1:, 1:])

    part = tiny_part(25, pad=1)
    batch = part.sampler(EpisodeShape(10, 0, 10), seed=0).sample(2)
    assert batch.query_x.shape == (2, 10, 1, 6, 6) and batch.support_x.shape == (2, 0, 1, 6, 6)
    assert batch.shots == 0 and batch.ways == 10
    unaugmented = tiny_part(25, pad=0)
    frozen = unaugmented.freeze(EpisodeShape(10, 0, 1), 25, seed=0, key={"part": "train"})
    plain = torch.cat([b.query_x for b in frozen.batches(unaugmented, 10)]).flatten(0, 1)
    assert torch.equal(plain.squeeze(1).mul(255).round().to(torch.uint8), unaugmented.images[frozen.index.flatten()])


def test_impossible_supervised_tasks_are_refused() -> None:
    part = tiny_part(25)
    with pytest.raises(MetabenchError, match="shots = 0"):
        part.sampler(EpisodeShape(10, 1, 10), seed=0)
    with pytest.raises(MetabenchError, match="ways = 10"):
        part.sampler(EpisodeShape(5, 0, 10), seed=0)
    with pytest.raises(MetabenchError, match="at most 25 test tasks"):
        part.freeze(EpisodeShape(10, 0, 1), 26, seed=0, key={})


@pytest.mark.data
def test_mnist_tensorflow_split_has_the_papers_sizes_and_is_fixed() -> None:
    from metabench.data import load_parts
    from metabench.data.mnist import load

    parts = load_parts("mnist", "tensorflow", 28, progress=False)
    assert {name: len(part) for name, part in parts.items()} == {"train": 55000, "val": 5000, "test": 10000}
    full = load(progress=False)
    assert torch.equal(parts["val"].images, full.train.images[:5000]), "TensorFlow validates on the first 5,000"
    assert torch.equal(parts["train"].images, full.train.images[5000:])
    assert torch.equal(parts["test"].labels, full.test.labels)
    assert (parts["train"].pad, parts["val"].pad, parts["test"].pad) == (1, 0, 0), "only training is augmented"
    again = load_parts("mnist", "tensorflow", 28, progress=False)
    assert all(parts[name].digest() == again[name].digest() for name in parts)
    shape, key = EpisodeShape(10, 0, 1), {"dataset": "mnist", "part": "test"}
    frozen = parts["test"].freeze(shape, 10000, 0, key)
    assert sorted(frozen.index.flatten().tolist()) == list(range(10000)), "every test image scored once"
    assert frozen.digest == again["test"].freeze(shape, 10000, 0, key).digest
    assert frozen.digest != parts["test"].freeze(shape, 10000, 1, key).digest


# --------------------------------------------------------------------------- the error metric


def test_error_is_100_minus_accuracy_per_task_and_lower_is_better() -> None:
    logits = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]], [[0.0, 1.0]], [[0.2, 0.1]]])  # four one-example tasks
    labels = torch.tensor([[1], [1], [1], [0]])
    assert score(logits, labels, "error").tolist() == [0.0, 100.0, 0.0, 0.0]
    torch.testing.assert_close(score(logits, labels, "error"), 100.0 - score(logits, labels, "accuracy"))
    bench = get_spec("hypernetwork").benchmark("mnist-hyper")
    assert bench.metric == "error" and bench.direction == "lower" and bench.chance == 90.0
    assert bench.better_than(0.7, 0.8, 0.05) and not bench.better_than(0.8, 0.7, 0.05)


def spec_data() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(get_spec("hypernetwork").source.read_text(encoding="utf-8"))


def test_spec_refuses_early_stopping_without_validation_and_error_that_rises() -> None:
    data = spec_data()
    source = get_spec("hypernetwork").source
    parse_spec(data, source)
    no_val = copy.deepcopy(data)
    del no_val["profiles"]["quick"]["val_part"]
    with pytest.raises(SpecError, match=r"profiles\.quick\.early_stopping: needs a val_part"):
        parse_spec(no_val, source)
    rising = copy.deepcopy(data)
    rising["benchmarks"][0]["direction"] = "higher"
    with pytest.raises(SpecError, match=r"mnist-hyper\]\.direction: an error is better when lower"):
        parse_spec(rising, source)
    negative = copy.deepcopy(data)
    negative["benchmarks"][0]["shots"] = -1
    with pytest.raises(SpecError, match="shots: must be a non-negative integer"):
        parse_spec(negative, source)


# --------------------------------------------------------------------------- early stopping


def test_early_stopping_keeps_the_first_best_point_in_the_metrics_direction() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    lower = EarlyStopping("lower")
    for step, val in [(10, 5.0), (20, 3.0), (30, 4.0), (40, 3.0), (50, 6.0)]:
        with torch.no_grad():
            model.weight.fill_(step)
        lower.consider(step, val, model)
    assert (lower.step, lower.score) == (20, 3.0), "a tie later does not replace the first best"
    lower.restore(model)
    assert float(model.weight.detach()) == 20.0
    higher = EarlyStopping("higher")
    for step, val in [(1, 50.0), (2, 70.0), (3, 60.0)]:
        higher.consider(step, val, model)
    assert higher.step == 2


@pytest.mark.data
def test_runner_tests_the_weights_of_the_best_validation_step_also_after_resume(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-made validation curve (30, 10, 20 at steps 10, 20, 30): step 20's weights are tested."""
    snapshots: list[dict[str, torch.Tensor]] = []
    curve = iter([])

    def scripted(model, *_args):  # type: ignore[no-untyped-def]
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(curve)

    monkeypatch.setattr(training, "validation_score", scripted)
    smoke = {"benchmark": "mnist-hyper", "profile": "smoke", "progress": False}
    curve = iter([30.0, 10.0, 20.0])
    result, path = metabench.run_benchmark("hypernetwork", **smoke, output=tmp_path / "a")
    assert result["early_stopping"] == {"kept_step": 20, "val_error": 10.0, "last_step": 30}
    assert [p["val_error"] for p in result["curve"]] == [30.0, 10.0, 20.0]
    tested = metabench.load_model(path).state_dict()
    assert all(torch.equal(tested[k], snapshots[1][k]) for k in tested), "step 20's weights were tested"
    assert not all(torch.equal(tested[k], snapshots[2][k]) for k in tested)

    snapshots.clear()
    curve = iter([30.0, 10.0, 20.0])
    with pytest.raises(InterruptedRun):
        metabench.run_benchmark("hypernetwork", **smoke, output=tmp_path / "b", stop_after=25)
    resumed, _ = metabench.run_benchmark("hypernetwork", **smoke, output=tmp_path / "b", resume=True)
    assert resumed["early_stopping"] == result["early_stopping"]
    assert resumed["scores"] == result["scores"], "the kept weights survive the checkpoint"
