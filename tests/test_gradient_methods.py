"""MAML, Reptile and what they added to the harness: regression task sources, the MSE metric, linear
annealing of the meta step, direction-aware checks, the specs' protocols and the sinusoid figure."""

from __future__ import annotations

import copy
import math
import sys
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import metabench
from metabench.compare import check
from metabench.data.sinusoid import load_parts as sine_parts
from metabench.episodes import EpisodeBatch, EpisodeShape
from metabench.errors import MetabenchError, SpecError
from metabench.evaluate import score
from metabench.reproduction import TaskInfo
from metabench.reproductions.maml import MAML, MAMLHyperparameters
from metabench.reproductions.plots import sine_from_points
from metabench.reproductions.reptile import Reptile, ReptileHyperparameters, minibatch_indices
from metabench.spec import parse_spec
from metabench.training import make_optimizer as _make_optimizer

MAML_SPEC = Path(__file__).resolve().parents[1] / "registry" / "maml.toml"


# ------------------------------------------------------------------ sinusoid task source


def test_sinusoid_tasks_follow_the_papers_ranges_and_functions() -> None:
    family = sine_parts("maml")["train"]
    shape = EpisodeShape(1, 5, 20)
    batch = family.sampler(shape, seed=0).sample(300)
    assert batch.support_x.shape == (300, 5, 1) and batch.query_y.shape == (300, 20, 1)
    x = torch.cat([batch.support_x, batch.query_x], 1)[..., 0]
    y = torch.cat([batch.support_y, batch.query_y], 1)[..., 0]
    assert float(x.min()) >= -5.0 and float(x.max()) <= 5.0
    a, b = sine_from_points(x, y)  # y = a sin x + b cos x exactly, with A = |(a, b)| and phase = atan2(b, a)
    amplitude, phase = torch.hypot(a, b), torch.atan2(b, a)
    assert float((a[:, None] * torch.sin(x) + b[:, None] * torch.cos(x) - y).abs().max()) < 1e-4
    assert float(amplitude.min()) >= 0.1 - 1e-4 and float(amplitude.max()) <= 5.0 + 1e-4
    assert float(phase.min()) >= -1e-4 and float(phase.max()) <= math.pi + 1e-4, "MAML's phase is in [0, pi]"
    zero_mse = float(y.pow(2).mean())
    assert zero_mse == pytest.approx(family.zero_mse, rel=0.15)


def test_frozen_sinusoid_tasks_are_reproducible_and_sampler_state_restores() -> None:
    family = sine_parts("maml")["test"]
    shape = EpisodeShape(1, 5, 10)
    first, again = family.freeze(shape, 50, 3, {"k": 1}), family.freeze(shape, 50, 3, {"k": 1})
    assert first.digest == again.digest and first.count == 50
    assert family.freeze(shape, 50, 4, {"k": 1}).digest != first.digest
    sampler = family.sampler(shape, seed=1)
    state = sampler.state()
    one = sampler.sample(4)
    sampler.restore(state)
    assert torch.equal(one.support_y, sampler.sample(4).support_y)
    with pytest.raises(MetabenchError, match="ways = 1"):
        family.sampler(EpisodeShape(5, 1, 1), seed=0)


def test_mse_score_is_per_task_and_accuracy_is_per_episode() -> None:
    predictions = torch.tensor([[[1.0], [3.0]], [[0.0], [0.0]]])
    targets = torch.tensor([[[0.0], [1.0]], [[2.0], [0.0]]])
    assert score(predictions, targets, "mse").tolist() == [2.5, 2.0]
    logits = torch.tensor([[[2.0, 1.0], [0.0, 1.0]]])
    assert score(logits, torch.tensor([[0, 0]]), "accuracy").tolist() == [50.0]


# ------------------------------------------------------------------ spec and runner additions


def _maml_toml() -> dict[str, Any]:
    return tomllib.loads(MAML_SPEC.read_text())


def _sine_only(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    data["benchmarks"] = [b for b in data["benchmarks"] if b["id"] == "sinusoid-5shot"]
    return data


def test_regression_benchmarks_state_their_chance_and_only_they_may_have_one_way() -> None:
    spec = parse_spec(_sine_only(_maml_toml()), MAML_SPEC)
    bench = spec.benchmarks[0]
    assert (bench.metric, bench.direction, bench.ways, bench.chance) == ("mse", "lower", 1, 4.25)
    assert bench.better_than(0.3, 4.25, 1.0) and not bench.better_than(3.5, 4.25, 1.0)
    missing = _sine_only(_maml_toml())
    del missing["benchmarks"][0]["chance"]
    with pytest.raises(SpecError, match=r"sinusoid-5shot\]\.chance: missing"):
        parse_spec(missing, MAML_SPEC)
    one_way = copy.deepcopy(_maml_toml())
    one_way["benchmarks"] = one_way["benchmarks"][:1]
    one_way["benchmarks"][0]["ways"] = 1
    with pytest.raises(SpecError, match="at least 2 ways"):
        parse_spec(one_way, MAML_SPEC)


def test_linear_schedule_anneals_the_meta_step_from_lr_to_zero() -> None:
    profile = metabench.load_spec("reptile").benchmark("omniglot-5w1s").profile("quick")
    assert (profile.optimizer, profile.lr, profile.lr_schedule) == ("sgd", 1.0, "linear")
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = _make_optimizer(model, profile)  # type: ignore[arg-type]
    rates = []
    for _ in range(profile.train_episodes):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 1.0 and rates[profile.train_episodes // 2] == pytest.approx(0.5)
    assert rates[-1] == pytest.approx(1.0 / profile.train_episodes)


def test_check_treats_an_error_metric_floor_as_a_ceiling() -> None:
    rows = pd.DataFrame(
        [
            {"profile": "quick", "floor": 0.5, "mean": 0.4, "direction": "lower", "chance": 4.25, "metric": "mse"},
            {"profile": "quick", "floor": 0.5, "mean": 0.6, "direction": "lower", "chance": 4.25, "metric": "mse"},
            {"profile": "smoke", "chance": 4.25, "min_above_chance": 1.0, "mean": 2.0, "direction": "lower"},
            {"profile": "smoke", "chance": 4.25, "min_above_chance": 1.0, "mean": 3.9, "direction": "lower"},
        ]
    )
    assert check(rows)["passed"].tolist() == [True, False, True, False]


# ------------------------------------------------------------------ the specs' protocols


def test_maml_and_reptile_specs_state_their_own_protocols() -> None:
    maml, reptile = metabench.load_spec("maml"), metabench.load_spec("reptile")
    m = maml.benchmark("omniglot-5w1s")
    assert (m.split, m.queries, m.transductive, m.profile("paper").meta_batch) == ("maml", 1, True, 32)
    assert m.profile("paper").model["backbone"] == "conv4-strided" and m.profile("paper").model["hidden"] == 64
    assert m.profile("paper").model["eval_inner_steps"] == 3
    twenty = maml.benchmark("omniglot-20w1s").profile("paper")
    assert (twenty.meta_batch, twenty.model["inner_lr"], twenty.model["inner_steps"]) == (16, 0.1, 5)
    r = reptile.benchmark("omniglot-5w1s")
    assert (r.split, r.queries, r.transductive, r.profile("paper").test_episodes) == ("reptile", 1, False, 10000)
    assert r.profile("paper").train_shots == 10 and r.profile("paper").model["eval_inner_steps"] == 50
    assert reptile.benchmark("omniglot-5w1s-trans").profile("paper").model["transductive"] is True
    assert reptile.benchmark("miniimagenet-5w1s").profile("paper").model["backbone"] == "conv4-pool"
    for bench in (*maml.benchmarks, *reptile.benchmarks):  # the model's mode agrees with the benchmark's
        model = bench.profile("paper").model
        if "transductive" in model:
            assert model["transductive"] == bench.transductive, bench.id


def test_reptile_split_tests_on_unrotated_characters(data_dir: Path) -> None:
    from metabench.data import load_parts

    parts = load_parts("omniglot", "reptile", 28, progress=False)
    assert parts["train"].num_classes == 1200 * 4 and parts["test"].num_classes == 423


# ------------------------------------------------------------------ Reptile


def test_minibatches_walk_through_shuffled_passes_of_the_task() -> None:
    torch.manual_seed(0)
    indices = minibatch_indices(3, 50, 10, 5, torch.device("cpu"))
    assert indices.shape == (3, 5, 10)
    for task in indices:
        assert sorted(task.flatten().tolist()) == list(range(50)), "5 batches of 10 are one pass over 50"
    straddling = minibatch_indices(1, 5, 10, 2, torch.device("cpu"))
    assert straddling.shape == (1, 2, 10) and torch.bincount(straddling.flatten()).tolist() == [4] * 5


def _episodes(tasks: int, ways: int = 5, shots: int = 1, queries: int = 1) -> EpisodeBatch:
    g = torch.Generator().manual_seed(0)
    support = torch.rand(tasks, ways * shots, 1, 28, 28, generator=g)
    query = torch.rand(tasks, ways * queries, 1, 28, 28, generator=g)
    return EpisodeBatch(
        support,
        torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1),
        query,
        torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1),
        ways,
        shots,
    )


def test_reptile_meta_gradient_is_theta_minus_the_mean_adapted_weights() -> None:
    torch.manual_seed(0)
    model = Reptile(ReptileHyperparameters(hidden=8, inner_steps=2, inner_batch=5), TaskInfo(1, 28, 5, 1))
    before = {k: p.detach().clone() for k, p in model.net.named_parameters()}
    torch.manual_seed(1)
    out = model.meta_loss(_episodes(3, shots=2))
    out.loss.backward()
    twin = Reptile(ReptileHyperparameters(hidden=8, inner_steps=2, inner_batch=5), TaskInfo(1, 28, 5, 1))
    torch.manual_seed(1)  # the same mini-batches, adapted by hand
    twin.load_state_dict({**model.state_dict(), **{f"net.{k}": v for k, v in before.items()}})
    twin.moments.load_state_dict({k: torch.zeros_like(v) for k, v in twin.moments.state_dict().items()})
    twin.adam_steps.zero_()
    batch = _episodes(3, shots=2)
    adapted, _ = twin._adapt(batch.support_x, batch.support_y, 5, 2)
    for name, p in model.net.named_parameters():
        assert p.grad is not None
        assert torch.allclose(p.grad, before[name] - adapted[name].mean(0), atol=1e-6), name
    assert int(model.adam_steps) == 2 and any(float(v.abs().max()) > 0 for v in model.moments.buffers())


def test_reptile_without_transduction_classifies_each_query_on_its_own() -> None:
    torch.manual_seed(0)
    task = TaskInfo(1, 28, 5, 1)
    model = Reptile(ReptileHyperparameters(hidden=8, eval_inner_steps=2, transductive=False), task).eval()
    batch = _episodes(2, queries=2)
    torch.manual_seed(3)
    full = model.predict(batch)
    altered = EpisodeBatch(
        batch.support_x, batch.support_y, batch.query_x.clone(), batch.query_y, batch.ways, batch.shots
    )
    altered.query_x[:, 1:] = 0.5  # change every query but the first of each task
    torch.manual_seed(3)
    assert torch.allclose(model.predict(altered)[:, 0], full[:, 0], atol=1e-5), "query 0 does not see the others"
    transductive = Reptile(ReptileHyperparameters(hidden=8, eval_inner_steps=2, transductive=True), task).eval()
    transductive.load_state_dict(model.state_dict())
    torch.manual_seed(3)
    shared = transductive.predict(batch)
    torch.manual_seed(3)
    assert not torch.allclose(transductive.predict(altered)[:, 0], shared[:, 0], atol=1e-5), "batch statistics shared"


# ------------------------------------------------------------------ MAML


def test_maml_regression_draws_the_fits_it_reports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hp = MAMLHyperparameters(backbone="mlp", mlp_hidden=(40, 40), norm="none", task="regression", inner_lr=0.01)
    model = MAML(hp, TaskInfo(1, 1, 1, 5))
    batch = sine_parts("maml")["test"].sampler(EpisodeShape(1, 5, 10), seed=0).sample(4)
    (figure,) = model.figures(batch, tmp_path / "run.json")
    assert figure == tmp_path / "run.png" and figure.stat().st_size > 1000
    assert model.predict_after(batch, 10).shape == batch.query_y.shape
    on_support = EpisodeBatch(batch.support_x, batch.support_y, batch.support_x, batch.support_y, 1, 5)
    before = score(model.predict_after(on_support, 0), batch.support_y, "mse").mean()
    after = score(model.predict_after(on_support, 10), batch.support_y, "mse").mean()
    assert float(after) < float(before), "ten inner steps reduce the error on the points they fit"


def test_maml_first_order_flag_reaches_the_engine() -> None:
    torch.manual_seed(0)
    task = TaskInfo(1, 28, 5, 1)
    second = MAML(MAMLHyperparameters(hidden=8), task)
    first = MAML(MAMLHyperparameters(hidden=8, first_order=True), task)
    first.load_state_dict(second.state_dict())
    batch = _episodes(2)
    g2 = torch.autograd.grad(second.meta_loss(batch).loss, list(second.parameters()))
    g1 = torch.autograd.grad(first.meta_loss(batch).loss, list(first.parameters()))
    assert max(float((a - b).abs().max()) for a, b in zip(g1, g2, strict=True)) > 1e-6


# ------------------------------------------------------------------ compare links figures; the speed command


def test_compare_links_a_runs_figures() -> None:
    from metabench.compare import display_frame, render

    frame = pd.DataFrame(
        [
            {
                "paper": "maml",
                "benchmark": "sinusoid-5shot",
                "component": "",
                "reported": 0.35,
                "reported_pm": 0.0,
                "pm_kind": "none",
                "reported_decimals": 2,
                "mean": 0.4,
                "ci95": 0.02,
                "difference": 0.05,
                "verdict": "above",
                "profile": "quick",
                "episodes": 600,
                "device": "cpu",
                "figures": "results/maml/run.png",
            }
        ]
    )
    assert display_frame(frame)["figures"].tolist() == ["[run.png](results/maml/run.png)"]
    assert "[run.png](results/maml/run.png)" in render(frame, "markdown")
    assert "figures" not in display_frame(frame.assign(figures=""))


def test_speed_measurement_reports_rates_flops_and_memory() -> None:
    """A functional check of the benchmark command's measurement (not a timing assertion)."""
    from metabench.speed import Setting, measure

    row = measure("engine-loop/first", Setting(meta_batch=2, iterations=1, warmup=0))
    assert row["iterations_per_second"] > 0 and row["gflop_per_iteration"] > 0 and row["peak_memory_mb"] > 0
    assert 0 < row["setup_memory_mb"] <= row["peak_memory_mb"] and row["step_memory_mb"] >= 0
    missing = measure("learn2learn/second", Setting(meta_batch=2, iterations=1))
    try:
        import learn2learn  # noqa: F401
    except ImportError:
        assert missing["skipped"].startswith("not installed")


def test_speed_times_the_registrys_maml_model_built_from_its_spec() -> None:
    """The core builds the timed model through the spec's implementation: the paper profile's conv-4 MAML."""
    from metabench.speed import MODEL, Setting, engine_model

    model = engine_model("batched", True, Setting())
    assert MODEL == ("maml", "omniglot-5w1s", "paper") and isinstance(model, MAML)
    assert model.hparams == MAMLHyperparameters(first_order=True, engine="batched")
    assert model.task == TaskInfo(1, 28, 5, 1)


def test_learn2learn_maml_loads_alone_when_the_package_import_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """learn2learn's package import pulls in torchvision, which fails beside a CPU torch; its MAML module does not."""
    from metabench.speed import _learn2learn_maml

    package = tmp_path / "learn2learn"
    (package / "algorithms").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    (package / "algorithms" / "__init__.py").write_text("import torchvision_is_missing\n")
    (package / "utils.py").write_text("def clone_module(m):\n    return m\n")
    (package / "algorithms" / "maml.py").write_text(
        "from learn2learn.utils import clone_module\n\nclass MAML:\n    clone = staticmethod(clone_module)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n.split(".")[0] == "learn2learn"]:
        monkeypatch.delitem(sys.modules, name)
    try:
        maml = _learn2learn_maml()
        assert maml.__module__ == "learn2learn.algorithms.maml" and maml.clone(3) == 3
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "learn2learn"]:
            del sys.modules[name]


def test_speed_report_compares_the_auto_path_with_each_library_as_ratios() -> None:
    from metabench.speed import against_libraries

    def row(config: str, rate: float, peak: float) -> dict[str, object]:
        return {"config": config, "iterations_per_second": rate, "peak_memory_mb": peak}

    report = {
        "auto_path": "loop",
        "rows": [
            row("engine-loop/second", 3.0, 400.0),
            row("engine-batched/second", 6.0, 800.0),
            row("learn2learn/second", 2.0, 500.0),
            {"config": "higher/second", "skipped": "not installed (higher)"},
        ],
    }
    (only,) = against_libraries(report)
    assert only["library"] == "learn2learn" and only["engine"] == "engine-loop" and only["order"] == "second"
    assert only["speed"] == pytest.approx(1.5) and only["speed_kind"] == "separate"
    assert only["memory"] == pytest.approx(0.8)
    report["paired"] = {"second": {"speed_of_first": {"learn2learn/second": 1.1}}}
    (only,) = against_libraries(report)
    assert only["speed"] == pytest.approx(1.1) and only["speed_kind"] == "paired", "the alternating rounds decide"


def test_paired_speed_times_configurations_in_turn_and_compares_the_first() -> None:
    from metabench.speed import Setting, paired

    out = paired(["engine-loop/first", "engine-batched/first"], Setting(meta_batch=2, iterations=3, warmup=0))
    assert [len(t) for t in out["seconds"].values()] == [3, 3]
    loop, batched = out["seconds"].values()
    ratios = sorted(b / a for a, b in zip(loop, batched, strict=True))
    assert out["speed_of_first"] == {"engine-batched/first": pytest.approx(ratios[1])}


def test_speed_rounds_reduce_to_the_median_round() -> None:
    from metabench.speed import _median_row

    runs = [
        {
            "config": "c",
            "iterations_per_second": rate,
            "peak_memory_mb": peak,
            "setup_memory_mb": 1.0,
            "step_memory_mb": 0.0,
        }
        for rate, peak in ((3.0, 300.0), (1.0, 310.0), (2.0, 290.0))
    ]
    row = _median_row(runs)
    assert row["iterations_per_second"] == 2.0 and row["peak_memory_mb"] == 300.0 and row["rounds"] == [3.0, 1.0, 2.0]
    assert _median_row([{"config": "c", "skipped": "not installed (higher)"}])["skipped"].startswith("not installed")


@pytest.mark.parametrize("mode", ["per-step", "per-parameter"])
def test_maml_learnable_inner_rates_receive_meta_gradients(mode: str) -> None:
    torch.manual_seed(0)
    model = MAML(MAMLHyperparameters(hidden=8, inner_steps=2, inner_lr_mode=mode), TaskInfo(1, 28, 5, 1))  # type: ignore[arg-type]
    assert len(model.rates) == 2 * len(list(model.net.parameters()))
    model.meta_loss(_episodes(2)).loss.backward()
    assert all(r.grad is not None for r in model.rates) and any(float(r.grad.abs().max()) > 0 for r in model.rates)
    model.eval()
    assert model.predict(_episodes(2)).shape == (2, 5, 5), "five test steps reuse the last learned rate"


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("mode", ["fixed", "per-parameter"])
def test_maml_meta_loss_task_by_task_equals_the_whole_batch(first_order: bool, mode: str) -> None:
    """The loop path frees each task's graph as it goes; its value and meta-gradient equal the batched path's."""
    torch.manual_seed(0)
    task = TaskInfo(1, 28, 5, 1)

    def build(engine: str) -> MAML:
        hp = MAMLHyperparameters(hidden=8, inner_steps=2, first_order=first_order, inner_lr_mode=mode, engine=engine)  # type: ignore[arg-type]
        return MAML(hp, task).double()

    loop, batched = build("loop"), build("batched")
    batched.load_state_dict(loop.state_dict())
    episodes = _episodes(3)
    batch = EpisodeBatch(
        episodes.support_x.double(), episodes.support_y, episodes.query_x.double(), episodes.query_y, 5, 1
    )
    by_task, whole = loop.meta_loss(batch), batched.meta_loss(batch)
    assert float(by_task.loss) == pytest.approx(float(whole.loss), abs=1e-12)
    assert float(by_task.score) == pytest.approx(float(whole.score), abs=1e-12)
    g_task = torch.autograd.grad(by_task.loss, list(loop.parameters()))
    g_whole = torch.autograd.grad(whole.loss, list(batched.parameters()))
    assert max(float((a - b).abs().max()) for a, b in zip(g_task, g_whole, strict=True)) < 1e-10
    assert max(float(g.abs().max()) for g in g_task) > 1e-6, "the meta-gradient is not trivially zero"


def test_first_order_benchmarks_differ_from_maml_only_in_first_order() -> None:
    """Issue 16: a first-order benchmark's every profile must be its second-order twin's with
    ``first_order = true`` and nothing else (shots, queries, meta-batch, rates, budget, norm)."""
    from metabench.registry_loader import get_spec

    spec = get_spec("maml")
    ids = {b.id for b in spec.benchmarks}
    twins = [(b, spec.benchmark(b.id.removesuffix("-fo"))) for b in spec.benchmarks if b.id.endswith("-fo")]
    assert twins and all(b.id.removesuffix("-fo") in ids for b, _ in twins)
    for first, second in twins:
        assert (first.ways, first.shots, first.queries, first.split) == (
            second.ways,
            second.shots,
            second.queries,
            second.split,
        )
        for name in ("paper", "quick", "smoke"):
            a, b = first.profile(name).hyperparameters(), second.profile(name).hyperparameters()
            assert a["model"].pop("first_order") is True and not b["model"].pop("first_order", False)
            for key in ("floor", "floor_note"):
                a.pop(key), b.pop(key)
            assert a == b, (first.id, name)
