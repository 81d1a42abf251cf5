"""The contract every registry entry meets, so a new paper is tested the moment its spec exists.

For every benchmark of every spec:

* the reproduction builds for every profile and offers every competitor a claim names;
* the interface: ``meta_loss`` gives a differentiable scalar loss and a scalar score, ``predict`` the
  shape the benchmark's metric scores, and where the reproduction offers ``embed`` the evaluator's
  embed-once path gives ``predict``'s predictions, to rounding;
* the smoke profile runs end to end through the real runner: its result validates, names the frozen
  episodes it used, holds the scores the reloaded model gives and a claim's every competitor's; accuracy
  clears chance by the margin the spec states; and learning happened: the trained model beats the same
  model untrained on the same frozen episodes (of the test part, or of the part a generalisation
  benchmark's smoke profile names in ``learning_part``).

And one benchmark per code path (metric, gradient-based, memory, claim, supervised, regression) is
stopped mid-run and resumed, and must give the uninterrupted run's numbers bit for bit.

Each case is gated on its own dataset only. Generated sources (sinusoid, GP, quadratics) and the
synthetic miniImageNet folder always run. An Omniglot or MNIST smoke run on the real archives is marked
``data`` and skips without them; one per paper and dataset also runs, shortened and without re-scoring
or the learning check, on synthetic archives in the real formats (``tests/synthetic_data.py``, marked
``synthetic``, always run), which the interface and resume cases of those datasets read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import metabench
from metabench import results
from metabench.data import channels, load_parts
from metabench.episodes import ClassBank, EpisodeBatch, EpisodeShape
from metabench.errors import InterruptedRun
from metabench.evaluate import _embedded_batches, evaluate, targets
from metabench.metrics import METRICS
from metabench.registry_loader import all_specs, implementation
from metabench.reproduction import Reproduction, TaskInfo
from metabench.spec import Benchmark, Spec
from metabench.tasks import Frozen, TaskSource
from tests.conftest import archive_folder, needs_archive
from tests.resume import result_numbers

CASES = [(spec.key, bench.id) for spec in all_specs().values() for bench in spec.benchmarks]


def _code_path(paper: str, benchmark: str) -> str:
    """What a smoke run exercises apart from the episode shape: a benchmark that differs from an earlier one
    of its paper only in ways, shots and queries runs the same code on a differently sized episode."""
    bench = metabench.load_spec(paper).benchmark(benchmark)
    smoke = bench.profile("smoke")
    model = sorted((k, repr(v)) for k, v in smoke.model.items())
    return repr((paper, bench.dataset, bench.split, bench.metric, bench.transductive, bench.sequence, model))


#: Benchmarks whose smoke run trains exactly what another benchmark's does and only tests the result on
#: another network: the learned optimizer's MNIST generalisation variants meta-train on the base network
#: (about two minutes each under ``pytest -n 2``); the variant networks themselves are unit-tested.
SAME_TRAINING = {
    ("learned-optimizer", "mnist-40-sigmoid"),
    ("learned-optimizer", "mnist-20-20-sigmoid"),
    ("learned-optimizer", "mnist-20-relu"),
}


def _smoke_cases(synthetic: bool = False) -> list[Any]:
    """Every benchmark's smoke run, or with ``synthetic`` every Omniglot and MNIST benchmark's on the
    synthetic archives. The default run keeps one per code path (a synthetic one per paper and dataset:
    every variant's model meets the interface on the synthetic data anyway) and marks the rest slow
    (``pytest -m slow`` runs them), as it does the variants in ``SAME_TRAINING``, which keeps the default
    suite within its 15-minute budget."""
    seen: set[object] = set()
    cases: list[Any] = []
    for paper, benchmark in CASES:
        dataset = metabench.load_spec(paper).benchmark(benchmark).dataset
        archive = needs_archive(dataset)
        if synthetic and not archive:
            continue
        key = (paper, dataset) if synthetic else _code_path(paper, benchmark)
        marks = [pytest.mark.slow] if key in seen or (paper, benchmark) in SAME_TRAINING else []
        seen.add(key)
        if archive:
            marks.append(pytest.mark.synthetic if synthetic else pytest.mark.data)
        cases.append(pytest.param(paper, benchmark, marks=marks))
    return cases


def _always_there(dataset: str, request: pytest.FixtureRequest) -> Path | None:
    """The data folder of a case that never skips: the synthetic archives for Omniglot and MNIST, the
    synthetic miniImageNet folder, nothing for a generated source."""
    if dataset == "miniimagenet":
        return request.getfixturevalue("mini_root")
    return request.getfixturevalue("synthetic_root") if needs_archive(dataset) else None


def _task(bench: Benchmark) -> TaskInfo:
    return TaskInfo(channels(bench.dataset), bench.image_size, bench.ways, bench.shots)


def _frozen(bench: Benchmark, part: TaskSource, part_name: str, count: int) -> Frozen:
    """``count`` frozen episodes of ``bench``'s test shape from ``part``, keyed as the runner keys them."""
    return part.freeze(
        EpisodeShape(bench.ways, bench.shots, bench.queries, bench.sequence),
        count,
        bench.test_seed,
        {"dataset": bench.dataset, "split": bench.split, "part": part_name, "image_size": bench.image_size},
    )


# --------------------------------------------------------------------------- building


@pytest.mark.parametrize(("paper", "benchmark"), CASES)
def test_every_profile_builds_and_offers_the_claims_competitors(paper: str, benchmark: str) -> None:
    """The spec's reproduction builds a model for every profile, and each offers every competitor the
    benchmark's claim names. (That every profile exists and states its floor and margin is the parser's
    job, tested in ``test_spec.py``; that the class is a ``Reproduction``, the registry loader's.)"""
    spec = metabench.load_spec(paper)
    bench = spec.benchmark(benchmark)
    cls = implementation(spec)
    for profile in bench.profiles.values():
        model = cls.build(profile.model, _task(bench))
        if bench.claim is not None:
            missing = sorted(set(bench.claim.against) - set(model.competitors()))
            assert not missing, f"the {profile.name} profile's model cannot predict as {', '.join(missing)}"


# --------------------------------------------------------------------------- the interface


def _prediction_shape(bench: Benchmark, batch: EpisodeBatch) -> tuple[int, ...]:
    """What the benchmark's metric scores: logits over the ways per target (classification), a mean and a
    standard deviation per target value (a Gaussian metric), else one value per target (a regression's
    MSE; a problem's loss, whose target is one value per problem)."""
    info = METRICS[bench.metric]
    wanted = tuple(targets(batch).shape)
    if info.classification:
        return (*wanted, batch.ways)
    return (*wanted, 2) if info.gaussian else wanted


def _embed_tolerance(model: Reproduction, images: torch.Tensor, predictions: torch.Tensor) -> float:
    """How far the embed-once path may be from ``predict``, from the arithmetic.

    Both paths run the same layers on the same images and differ only in how the images are batched (the
    bank's in chunks, ``predict`` an episode's), which may change the order in which a layer sums its
    terms. A float32 sum of ``n`` terms is then off by at most about ``n * eps * sum|terms|``. The sums
    are a layer's dot products (``n`` its fan-in, at most that of the widest weight) and the comparison's
    over an embedding's ``F`` values; the terms are bounded by the predictions' size (plus 1, for
    predictions near 0). Measured on the smoke models at one and two threads: 0 on the one-episode
    batches here; with two episodes a batch only the FCE's LSTM differed, by under 1/500 of the bound."""
    with torch.no_grad():
        features = model.embed(images[:1]).numel()
    fan_in = max(weight[0].numel() for weight in model.parameters() if weight.dim() >= 2)
    eps = torch.finfo(torch.float32).eps
    return (fan_in + features) * eps * (1.0 + float(predictions.abs().max()))


def _check_interface(spec: Spec, benchmark: str, parts: dict[str, TaskSource]) -> None:
    """``meta_loss`` and ``predict`` shapes of the smoke model on the benchmark's episodes, and the
    embed-once path against ``predict`` where the evaluator would take it."""
    bench = spec.benchmark(benchmark)
    smoke = bench.profile("smoke")
    torch.manual_seed(0)
    model = implementation(spec).build(smoke.model, _task(bench))
    train_shape = EpisodeShape(smoke.train_ways, smoke.train_shots, smoke.train_queries, bench.sequence)
    batch = parts[smoke.train_part].sampler(train_shape, seed=0).sample(1)
    model.start_batch(batch, smoke.steps_per_batch)  # as the runner announces every batch
    step = model.meta_loss(batch)
    assert step.loss.shape == () and step.loss.requires_grad, "meta_loss's loss is a differentiable scalar"
    assert step.score.shape == (), "meta_loss's score is a scalar"

    part = parts[bench.test_part]
    if type(part) is ClassBank:  # an episode's classes are enough, and the embed-once path embeds the whole bank
        part = ClassBank(part.images[: bench.ways], part.name)
    frozen = _frozen(bench, part, bench.test_part, 1)
    batch = next(iter(frozen.batches(part, 1)))
    model.eval()
    with torch.set_grad_enabled(model.needs_grad_at_test):
        predictions = model.predict(batch).detach()
        assert predictions.shape == _prediction_shape(bench, batch), f"predict gives {tuple(predictions.shape)}"
        if model.embeds_independently and isinstance(part, ClassBank) and not bench.sequence:
            (embedded,) = _embedded_batches(model, frozen, part, 1)
            once = model.predict_embedded(embedded).detach()
            tolerance = _embed_tolerance(model, batch.query_x[0], predictions)
            difference = float((once - predictions).abs().max())
            assert difference <= tolerance, f"embed-once differs from predict by {difference:.3g} > {tolerance:.3g}"


def _data_groups() -> list[Any]:
    """The benchmarks by the data they read (dataset, split, image size), so that each is loaded once."""
    groups: dict[tuple[str, str, int], list[tuple[str, str]]] = {}
    for paper, benchmark in CASES:
        bench = metabench.load_spec(paper).benchmark(benchmark)
        groups.setdefault((bench.dataset, bench.split, bench.image_size), []).append((paper, benchmark))
    return [
        pytest.param(key, members, id="-".join(map(str, key)), marks=[pytest.mark.synthetic] * needs_archive(key[0]))
        for key, members in groups.items()
    ]


@pytest.mark.parametrize(("data", "members"), _data_groups())
def test_every_reproduction_meets_the_interface(
    data: tuple[str, str, int], members: list[tuple[str, str]], request: pytest.FixtureRequest
) -> None:
    """Every benchmark reading this data, on an untrained smoke model: ``meta_loss`` and ``predict``
    shapes, and embed-once equal to ``predict``. Every failing benchmark is named, not just the first."""
    dataset, split, image_size = data
    parts = load_parts(dataset, split, image_size, data_dir=_always_there(dataset, request), progress=False)
    failures = []
    for paper, benchmark in members:
        try:
            _check_interface(metabench.load_spec(paper), benchmark, parts)
        except AssertionError as error:
            failures.append(f"{paper} {benchmark}: {error}")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- smoke runs


def _smoke_run(
    paper: str, benchmark: str, folder: Path | None, output: Path, **overrides: Any
) -> tuple[dict[str, Any], Path, dict[str, TaskSource]]:
    """Run the smoke profile through the real runner and check what any finished run must give: a valid
    result of this benchmark on the episodes frozen from the data, a claim's every competitor scored and
    no checkpoint left behind. Return the stored result, its path and the split's parts."""
    bench = metabench.load_spec(paper).benchmark(benchmark)
    _, path = metabench.run_benchmark(
        paper, benchmark=benchmark, profile="smoke", output=output, data_dir=folder, **overrides
    )
    stored = results.read(path)  # validated against the schema: counts, types, a claim's competitors' scores
    assert stored["paper"] == paper and stored["benchmark"] == benchmark
    assert not list(output.glob(".checkpoints/*")), "a finished run leaves no checkpoint"
    if bench.claim is not None:
        assert stored["claim"]["against"] == list(bench.claim.against), "every competitor the spec names is scored"
    banks = load_parts(bench.dataset, bench.split, bench.image_size, data_dir=folder, progress=False)
    frozen = _frozen(bench, banks[bench.test_part], bench.test_part, stored["test_episodes"]["count"])
    assert frozen.digest == stored["test_episodes"]["digest"], "the result names the frozen episodes it used"
    return stored, path, banks


@pytest.mark.parametrize(("paper", "benchmark"), _smoke_cases())
def test_smoke_run_completes_validates_and_learns(
    paper: str, benchmark: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Gated on the benchmark's own dataset only: generated sources and synthetic miniImageNet always run,
    an Omniglot or MNIST case skips only when its own archive is missing (and is marked ``data``)."""
    bench = metabench.load_spec(paper).benchmark(benchmark)
    # miniImageNet cannot be shipped: its benchmarks run on the synthetic folder in the Ravi layout.
    folder = request.getfixturevalue("mini_root") if bench.dataset == "miniimagenet" else archive_folder(bench.dataset)
    stored, path, banks = _smoke_run(paper, benchmark, folder, tmp_path)
    smoke = bench.profile("smoke")
    trained = metabench.load_model(path)
    frozen = _frozen(bench, banks[bench.test_part], bench.test_part, smoke.test_episodes)
    trained_scores = evaluate(trained, frozen, banks[bench.test_part], smoke.eval_batch, metric=bench.metric)
    assert torch.allclose(trained_scores, torch.tensor(stored["scores"], dtype=torch.float64), atol=1e-3)

    # Learning is checked on the test part, or on the part the smoke profile names (a generalisation
    # benchmark: transfer to its test distribution is the claim the run reports, not the path it proves).
    part = smoke.learning_part or bench.test_part
    if part != bench.test_part:
        frozen = _frozen(bench, banks[part], part, smoke.test_episodes)
        trained_scores = evaluate(trained, frozen, banks[part], smoke.eval_batch, metric=bench.metric)
    assert bench.better_than(float(trained_scores.mean()), bench.chance, smoke.min_above_chance), "smoke beats chance"
    torch.manual_seed(stored["seed"])
    untrained = implementation(metabench.load_spec(paper)).build(smoke.model, _task(bench))
    untrained_scores = evaluate(untrained, frozen, banks[part], smoke.eval_batch, metric=bench.metric)
    # 2 points of accuracy; otherwise a tenth of the untrained model's score's size (an error, or a
    # log-likelihood, which is negative: the margin must stay positive so that getting worse fails)
    margin = 2.0 if bench.metric == "accuracy" else 0.1 * abs(float(untrained_scores.mean()))
    improved = bench.better_than(float(trained_scores.mean()), float(untrained_scores.mean()), margin)
    assert improved, "training improved on the initial model"


#: A synthetic smoke run's length: two optimiser batches and two test episodes prove the path from the
#: archives' bytes to a result (whether the smoke profile learns is the real-data case's question).
SYNTHETIC_BATCHES, SYNTHETIC_EPISODES = 2, 2
#: The learned optimizer's MNIST runs, shortened further: a 20-step horizon in the same 5 segments and
#: two tuning problems (the smoke profile's 100 steps and 8 problems take 10 s on the synthetic data).
SYNTHETIC_SETTINGS = {"mnist-mlp": {"model.horizon": 20, "model.unroll": 4, "model.tune_problems": 2}}


@pytest.mark.parametrize(("paper", "benchmark"), _smoke_cases(synthetic=True))
def test_smoke_run_on_synthetic_archives(paper: str, benchmark: str, tmp_path: Path, synthetic_root: Path) -> None:
    """An Omniglot or MNIST benchmark's smoke run, shortened, on synthetic archives in the real formats:
    the reader, decoder, cache, sampler, model, runner, evaluator and writer all run without the data.
    (The reloaded model's scores and learning are checked on the real data: re-scoring would embed the
    whole test part once more, seconds a case for a check that the other datasets' cases make anyway.)"""
    bench = metabench.load_spec(paper).benchmark(benchmark)
    _smoke_run(
        paper,
        benchmark,
        synthetic_root,
        tmp_path,
        train_episodes=SYNTHETIC_BATCHES * bench.profile("smoke").steps_per_batch,
        test_episodes=SYNTHETIC_EPISODES,
        settings=SYNTHETIC_SETTINGS.get(bench.dataset, {}),
    )


# --------------------------------------------------------------------------- resuming

#: One benchmark per code path, on data every run has: the synthetic archives or miniImageNet folder.
RESUMED = {
    "metric": ("matchingnet", "miniimagenet-ravi-5w1s"),  # validation and test through the embed-once path
    "gradient-based": ("maml", "omniglot-5w1s"),
    "memory": ("mann", "omniglot-5class"),
    "claim": ("shrinkage", "sinusoid-5shot"),  # its competitor, plain MAML, trains beside it
    "supervised": ("hypernetwork", "mnist-hyper"),  # with early stopping's kept weights
    "regression": ("cnp", "gp-regression"),
}


def _resume_cases() -> list[Any]:
    cases = []
    for path, (paper, benchmark) in RESUMED.items():
        archive = needs_archive(metabench.load_spec(paper).benchmark(benchmark).dataset)
        cases.append(pytest.param(paper, benchmark, id=path, marks=[pytest.mark.synthetic] * archive))
    return cases


@pytest.mark.parametrize(("paper", "benchmark"), _resume_cases())
def test_a_run_stopped_mid_way_resumes_to_the_uninterrupted_numbers(
    paper: str, benchmark: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``--stop-after`` then ``--resume`` gives the uninterrupted run's per-episode scores, learning curve
    and weights bit for bit, and its competitors', components' and early-stopping choice. Shortened to 6
    batches of one task with validation and a checkpoint every 4, stopped after 3: the resumed part
    crosses a validation point, a periodic checkpoint and the end."""
    bench = metabench.load_spec(paper).benchmark(benchmark)
    per = bench.profile("smoke").steps_per_batch
    run = {
        "benchmark": benchmark,
        "profile": "smoke",
        "data_dir": _always_there(bench.dataset, request),
        "train_episodes": 6 * per,
        "test_episodes": 4,
        "settings": {"meta_batch": 1, "val_every": 4 * per, "checkpoint_every": 4 * per},
    }
    metabench.run_benchmark(paper, **run, output=tmp_path / "straight")
    with pytest.raises(InterruptedRun, match=f"stopped after step {3 * per} of {6 * per}"):
        metabench.run_benchmark(paper, **run, output=tmp_path / "resumed", stop_after=3 * per)
    metabench.run_benchmark(paper, **run, output=tmp_path / "resumed", resume=True)
    straight = result_numbers(tmp_path / "straight")
    assert len(straight) == 1 and result_numbers(tmp_path / "resumed") == straight
