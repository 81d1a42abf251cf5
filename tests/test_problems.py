"""Optimisation problems as task sources, the runner's steps_per_batch, and the learned optimizer's claim.

Sources: seeded and frozen problems are reproducible, digested, independent of how they are batched,
and the test part tunes on the validation part. Runner: a run with several optimiser steps per batch
tells the reproduction where each batch starts and when its weights move, and one that stops or is
interrupted mid-batch resumes to the uninterrupted run's numbers. Claim: a smoke run
of the learned optimizer stores every tuned baseline's scores, the paired comparisons and the figures.
"""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch

import metabench
from metabench import results
from metabench.data import load_parts
from metabench.data.problems import MLP_ARCHITECTURES, MlpTask, ProblemBatch, QuadraticTask, quadratic_parts
from metabench.episodes import EpisodeShape
from metabench.errors import InterruptedRun, MetabenchError, SpecError
from metabench.reproductions.learned_optimizer import BASELINES, LearnedOptimizer
from metabench.runner import checkpoint_path
from metabench.spec import load_spec_file

ONE = EpisodeShape(1, 1, 1)
SMOKE = {"paper": "learned-optimizer", "benchmark": "quadratic-10d", "profile": "smoke"}


def toy_mlp(name: str = "toy", **changes: object) -> MlpTask:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(300, 12, generator=generator)
    return MlpTask(images, images[:, :3].argmax(-1), batch_size=16, classes=3, name=name, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", [QuadraticTask(), toy_mlp()], ids=["quadratic", "mlp"])
def test_sampled_problems_are_seeded_and_the_sampler_state_restores(family) -> None:
    sampler = family.sampler(ONE, seed=3)
    state = sampler.state()
    first = sampler.sample(4)
    assert isinstance(first, ProblemBatch) and first.size == 4
    again = family.sampler(ONE, seed=3).sample(4)
    torch.testing.assert_close(first.require().theta0, again.require().theta0)
    theta = torch.randn_like(first.require().theta0)
    torch.testing.assert_close(first.require().make_loss()(theta), again.require().make_loss()(theta))
    sampler.restore(state)
    torch.testing.assert_close(sampler.sample(4).require().theta0, first.require().theta0)
    assert not torch.equal(sampler.sample(4).require().theta0, first.require().theta0), "the stream moves on"
    assert not torch.equal(family.sampler(ONE, seed=4).sample(4).require().theta0, first.require().theta0)


@pytest.mark.parametrize("family", [QuadraticTask(), toy_mlp()], ids=["quadratic", "mlp"])
def test_frozen_problems_do_not_depend_on_how_they_are_batched(family) -> None:
    frozen = family.freeze(ONE, 6, seed=0, key={"part": "test"})
    assert frozen.digest == family.freeze(ONE, 6, seed=0, key={"part": "test"}).digest
    assert frozen.digest != family.freeze(ONE, 6, seed=1, key={"part": "test"}).digest
    whole = next(frozen.batches(family, 6)).require()
    pieces = [b.require() for b in frozen.batches(family, 4)]
    assert [p.count for p in pieces] == [4, 2]
    theta = whole.theta0 + 0.1
    losses, steps = whole.make_loss(), 3
    by_piece = [p.make_loss() for p in pieces]
    for _ in range(steps):  # the same minibatches step after step, however the problems are grouped
        torch.testing.assert_close(
            losses(theta),
            torch.cat(
                [f(theta[i * 4 : i * 4 + p.count]) for i, (f, p) in enumerate(zip(by_piece, pieces, strict=True))]
            ),
        )


def test_the_digest_names_the_family() -> None:
    shared = {"part": "test"}
    assert (
        QuadraticTask().freeze(ONE, 3, 0, shared).digest != QuadraticTask(init_std=0.1).freeze(ONE, 3, 0, shared).digest
    )
    assert toy_mlp().freeze(ONE, 3, 0, shared).digest != toy_mlp(hidden=(7,)).freeze(ONE, 3, 0, shared).digest


def test_problems_have_no_episodes_of_several_ways() -> None:
    with pytest.raises(MetabenchError, match="ways = 1"):
        QuadraticTask().sampler(EpisodeShape(5, 1, 1), seed=0)


def test_quadratic_split_is_registered_and_its_test_part_tunes_on_validation() -> None:
    parts = load_parts("quadratic", "l2l", 1, progress=False)
    assert set(parts) == {"train", "val", "test"}
    assert parts["test"].tuning is parts["val"] and parts["train"].tuning is None  # type: ignore[attr-defined]
    frozen = parts["test"].freeze(ONE, 5, 0, {})
    assert next(frozen.batches(parts["test"], 5)).tuning is parts["val"]
    assert quadratic_parts("l2l")["test"].freeze(ONE, 5, 0, {}).digest == frozen.digest


@pytest.mark.data
def test_mnist_splits_train_on_the_base_network_and_test_the_variant() -> None:
    for split, (hidden, activation) in MLP_ARCHITECTURES.items():
        parts = load_parts("mnist-mlp", split, 1, download=False, progress=False)
        train, val, test = parts["train"], parts["val"], parts["test"]
        tuning = test.tuning  # type: ignore[attr-defined]
        # trained and early-stopped on the base network; the variant's baselines tuned on the variant
        assert (train.hidden, train.activation) == ((20,), "sigmoid") == (val.hidden, val.activation)  # type: ignore[attr-defined]
        assert (test.hidden, test.activation) == (hidden, activation) == (tuning.hidden, tuning.activation)  # type: ignore[attr-defined]
        assert (train.labels.shape[0], val.labels.shape[0], test.labels.shape[0]) == (50_000, 10_000, 10_000)  # type: ignore[attr-defined]
        assert torch.equal(val.images, tuning.images) and not torch.equal(val.images[:1], train.images[:1])  # type: ignore[attr-defined]
        assert (tuning is val) == (split == "20-sigmoid") and tuning.name == "val"  # type: ignore[attr-defined]
    problems = parts["test"].freeze(ONE, 2, 0, {}).batches(parts["test"], 2)
    loss = next(problems).require()
    assert float(loss.make_loss()(loss.theta0).mean()) == pytest.approx(math.log(10), abs=0.05)


# --------------------------------------------------------------------------- the runner


def _trace(curve: list[dict[str, float]]) -> list[float]:
    return [p[key] for p in curve for key in ("step", "train_loss", "train_loss", "val_loss")]


def test_steps_per_batch_stop_and_resume_give_the_uninterrupted_numbers(tmp_path: Path) -> None:
    straight, _ = metabench.run_benchmark(**SMOKE, output=tmp_path / "a")
    # 7 steps with 2 per batch: the run stops at the next batch boundary, step 8
    with pytest.raises(InterruptedRun, match="stopped after step 8 of 60"):
        metabench.run_benchmark(**SMOKE, output=tmp_path / "b", stop_after=7)
    resumed, _ = metabench.run_benchmark(**SMOKE, output=tmp_path / "b", resume=True)
    assert resumed["scores"] == straight["scores"]
    assert _trace(resumed["curve"]) == pytest.approx(_trace(straight["curve"]))
    for name in BASELINES:
        assert resumed["competitors"][name]["scores"] == straight["competitors"][name]["scores"]


def test_the_runner_says_where_each_batch_starts_and_when_the_weights_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The explicit contract that replaced guessing (a batch's identity, torch's private ``_version``)."""
    events: list[object] = []
    for name in ("start_batch", "meta_loss", "weights_changed"):
        real = getattr(LearnedOptimizer, name)

        def recording(self, *args, _real=real, _name=name):  # type: ignore[no-untyped-def]
            events.append((_name, *args[1:]))  # the number of steps start_batch is told; never the batch
            return _real(self, *args)

        monkeypatch.setattr(LearnedOptimizer, name, recording)
    metabench.run_benchmark(**SMOKE, output=tmp_path)
    one_batch = [("start_batch", 2), ("meta_loss",), ("weights_changed",), ("meta_loss",), ("weights_changed",)]
    assert events[: 30 * len(one_batch)] == one_batch * 30, "60 steps: 30 batches of 2 segments"
    assert ("start_batch", 2) not in events[30 * len(one_batch) :]


def test_train_episodes_override_must_end_on_a_batch_boundary(tmp_path: Path) -> None:
    with pytest.raises(MetabenchError, match="not a multiple of the profile's steps_per_batch"):
        metabench.run_benchmark(**SMOKE, output=tmp_path, train_episodes=7)


def test_an_interrupt_mid_batch_stops_at_the_batch_end_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight, _ = metabench.run_benchmark(**SMOKE, output=tmp_path / "a")
    original = LearnedOptimizer.meta_loss
    calls = {"n": 0}

    def interrupting(self, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 35:  # the first segment of the 18th batch: the signal comes mid-batch
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch)

    monkeypatch.setattr(LearnedOptimizer, "meta_loss", interrupting)
    with pytest.raises(InterruptedRun, match="interrupted at step 36 of 60"):
        metabench.run_benchmark(**SMOKE, output=tmp_path / "b")
    assert calls["n"] == 36, "the batch under way is finished, no further one begun"
    saved = torch.load(
        checkpoint_path(tmp_path / "b", "learned-optimizer", "quadratic-10d", "smoke", 0), weights_only=True
    )
    assert saved["payload"]["state"]["step"] == 36, "the checkpoint is the state at the batch boundary"
    monkeypatch.setattr(LearnedOptimizer, "meta_loss", original)
    resumed, _ = metabench.run_benchmark(**SMOKE, output=tmp_path / "b", resume=True)
    assert resumed["scores"] == straight["scores"]


def test_the_claim_stores_every_tuned_baseline_and_the_figures(tmp_path: Path) -> None:
    stored, path = metabench.run_benchmark(**SMOKE, output=tmp_path)
    stored = results.read(path)
    assert set(stored["competitors"]) == set(BASELINES) == set(stored["claim"]["comparisons"])
    assert stored["claim"]["verdict"] in ("holds", "fails", "inconclusive")
    for entry in stored["competitors"].values():
        assert len(entry["scores"]) == stored["test_episodes"]["count"]
    png, curves, tuning = (path.with_name(name) for name in stored["figures"])
    assert png.suffix == ".png" and png.read_bytes()[:4] == b"\x89PNG"
    assert curves.read_text().startswith("step,lstm,sgd,nag,rmsprop,adam")
    rows = [line.split(",") for line in tuning.read_text().splitlines()[1:]]
    assert {row[4] for row in rows} == {"val"}, "tuned on the validation part"
    assert sorted(row[0] for row in rows if row[3] == "True") == sorted(BASELINES)
    assert not list(path.parent.glob("*.optimizers.json")), "no JSON beside a result but the result"


@pytest.mark.parametrize(
    ("edit", "message"),
    [("train_episodes = 60", "not a multiple of steps_per_batch"), ("clip_grad_norm = -1.0", "must be positive")],
)
def test_spec_checks_batch_boundaries_and_clipping(tmp_path: Path, edit: str, message: str) -> None:
    source = Path(metabench.load_spec("learned-optimizer").source).read_text(encoding="utf-8")
    line = "\ntrain_episodes = 60\n"  # the spec-wide smoke profile's own line
    assert source.count(line) == 1
    text = source.replace(line, f"\n{edit.replace('60', '61')}\n" if "train" in edit else f"{line}{edit}\n")
    spec = tmp_path / "learned-optimizer.toml"
    spec.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match=message):
        load_spec_file(spec)
