"""Claim benchmarks end to end: a toy reproduction whose competitors are known to be better, worse or
the same as its method, run through the real runner, result schema, compare and check."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor

import metabench
from metabench import compare, results
from metabench.episodes import EpisodeBatch
from metabench.errors import MetabenchError, ResultError, SpecError
from metabench.reproduction import Reproduction, StepOutput
from metabench.spec import parse_spec
from metabench.stats import judge_claim

SHIFTS = {"worse": 3.0, "same": 0.0, "better": -1.0}


class ToyClaim(Reproduction):
    """Predicts each sine task's support mean for every query; competitors are shifted copies of it.

    ``worse`` adds 3 to every prediction (a larger MSE on every task), ``same`` is identical, and
    ``better`` is an oracle that predicts the queries exactly.
    """

    @dataclass(frozen=True)
    class Hyperparameters:
        pass

    def __init__(self, hparams: Hyperparameters, task: object) -> None:
        super().__init__(hparams, task)
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def _mean(self, batch: EpisodeBatch) -> Tensor:
        return batch.support_y.mean(1, keepdim=True).expand_as(batch.query_y) + self.offset

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        loss = (self._mean(batch) - batch.query_y).pow(2).mean()
        return StepOutput(loss, loss.detach())

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self._mean(batch)

    def competitors(self) -> tuple[str, ...]:
        return tuple(SHIFTS)

    def predict_competitor(self, name: str, batch: EpisodeBatch) -> Tensor:
        if name == "better":
            return batch.query_y.clone()
        return self._mean(batch) + SHIFTS[name]


PROFILES = """
[profiles.smoke]
train_part = "train"
train_ways = 1
train_shots = 5
train_queries = 5
meta_batch = 4
train_episodes = 4
optimizer = "adam"
lr = 0.001
val_every = 2
val_episodes = 4
checkpoint_every = 2
test_episodes = 30
eval_batch = 16
min_above_chance = 0.1
model = {}

[profiles.quick]
train_part = "train"
train_ways = 1
train_shots = 5
train_queries = 5
meta_batch = 4
train_episodes = 4
optimizer = "adam"
lr = 0.001
val_every = 2
val_episodes = 4
checkpoint_every = 2
test_episodes = 600
eval_batch = 200
floor_note = "a toy for the tests"
model = {}

[profiles.paper]
train_part = "train"
train_ways = 1
train_shots = 5
train_queries = 5
meta_batch = 4
train_episodes = 4
optimizer = "adam"
lr = 0.001
val_every = 2
val_episodes = 4
checkpoint_every = 2
test_episodes = 600
eval_batch = 200
model = {}
"""


def _benchmark(bench_id: str, against: list[str], expect: str = "holds") -> str:
    names, plain = ", ".join(f'"{n}"' for n in against), " and ".join(against)
    return f"""
[[benchmarks]]
id = "{bench_id}"
dataset = "sinusoid"
split = "maml"
image_size = 1
ways = 1
shots = 5
queries = 10
metric = "mse"
direction = "lower"
transductive = false
chance = 4.25
claim = {{ statement = "the support mean beats {plain}", against = [{names}], confidence = "MED", source = "tests", \
expect = "{expect}" }}
"""


SPEC = (
    """key = "toyclaim"
title = "A toy claim"
authors = ["metabench tests"]
year = 2026
venue = "tests"
implementation = "tests.test_claims:ToyClaim"
"""
    + PROFILES
    + _benchmark("holds", ["worse"])
    + _benchmark("fails", ["worse", "better"])
    + _benchmark("inconclusive", ["same"])
    + _benchmark("unknown", ["nobody"])
    + _benchmark("negative-agrees", ["worse", "better"], expect="fails")
    + _benchmark("negative-contradicted", ["worse"], expect="fails")
)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "registry"
    folder.mkdir()
    (folder / "toyclaim.toml").write_text(SPEC, encoding="utf-8")
    monkeypatch.setenv("METABENCH_REGISTRY", str(folder))
    return tmp_path / "results"


@pytest.mark.parametrize("verdict", ["holds", "fails", "inconclusive"])
def test_a_claim_is_judged_on_the_same_frozen_tasks(registry: Path, verdict: str) -> None:
    _, path = metabench.run_benchmark("toyclaim", benchmark=verdict, profile="quick", output=registry)
    stored = results.read(path)
    assert stored["schema_version"] == results.SCHEMA_VERSION >= 3  # claims came with schema 3
    assert stored["verdict"]["verdict"] == stored["claim"]["verdict"] == verdict
    for name, entry in stored["competitors"].items():
        assert len(entry["scores"]) == stored["test_episodes"]["count"] == 600
        difference = torch.tensor(stored["scores"]) - torch.tensor(entry["scores"])
        assert stored["claim"]["comparisons"][name]["mean_difference"] == pytest.approx(
            float(difference.mean()), abs=1e-3
        )
    if verdict == "holds":
        # Shifting every prediction by 3 adds exactly 9 to each task's MSE less twice the residual's mean.
        assert stored["claim"]["comparisons"]["worse"]["mean_difference"] < -5.0
    if verdict == "fails":
        assert stored["claim"]["comparisons"]["worse"]["verdict"] == "holds"
        assert stored["claim"]["comparisons"]["better"]["verdict"] == "fails"

    frame = compare.load_frame([path])
    assert list(frame["role"]) == [""] + ["competitor"] * len(stored["claim"]["against"])
    method = frame.iloc[0]
    assert method["verdict"] == verdict, "compare keeps the run-time claim verdict"
    checked = compare.check(frame)
    assert checked["passed"].all(), "a quick run is checked on floors, never on whether the claim holds"
    markdown = compare.render(frame, "markdown")
    assert "claim" in markdown and "(vs " in markdown


def test_a_failed_claim_fails_check_only_for_a_paper_run(registry: Path) -> None:
    _, path = metabench.run_benchmark("toyclaim", benchmark="fails", profile="paper", output=registry)
    checked = compare.check(compare.load_frame([path]))
    method = checked[checked["role"] == ""].iloc[0]
    assert not method["passed"] and "claim fails" in method["reason"]
    assert checked[checked["role"] == "competitor"]["passed"].all()


@pytest.mark.parametrize(("benchmark", "passes"), [("negative-agrees", True), ("negative-contradicted", False)])
def test_a_claim_the_paper_reports_as_failing_passes_check_when_it_fails(
    registry: Path, benchmark: str, passes: bool
) -> None:
    _, path = metabench.run_benchmark("toyclaim", benchmark=benchmark, profile="paper", output=registry)
    assert results.read(path)["claim"]["expect"] == "fails"
    frame = compare.load_frame([path])
    method = compare.check(frame).iloc[0]
    assert bool(method["passed"]) is passes
    assert "the paper reports that it fails" in method["reason"]
    assert "claim (paper: fails)" in compare.render(frame, "markdown")


def test_a_claim_expectation_other_than_holds_or_fails_is_refused() -> None:
    bad = SPEC.replace('expect = "fails"', 'expect = "maybe"', 1)
    with pytest.raises(SpecError, match=r"expect.*'maybe' is not one of holds, fails"):
        parse_spec(tomllib.loads(bad), Path("toyclaim.toml"))


def test_a_claim_naming_a_competitor_the_model_lacks_is_refused_before_training(registry: Path) -> None:
    with pytest.raises(MetabenchError, match=r"'nobody'.*cannot predict as") as caught:
        metabench.run_benchmark("toyclaim", benchmark="unknown", profile="smoke", output=registry)
    assert "it offers: worse, same, better" in caught.value.hint
    assert not list(registry.rglob("*.json")), "no result is written"


def test_a_claim_result_without_its_competitors_is_invalid(registry: Path) -> None:
    _, path = metabench.run_benchmark("toyclaim", benchmark="holds", profile="smoke", output=registry)
    stored = results.read(path)
    del stored["competitors"]["worse"]
    with pytest.raises(ResultError, match=r"competitors\.'worse'"):
        results.validate(stored)
    stored = results.read(path)
    stored["verdict"]["verdict"] = "reproduced"
    with pytest.raises(ResultError, match="differs from the claim"):
        results.validate(stored)


@pytest.mark.parametrize(
    ("claim", "problem"),
    [
        ('claim = { statement = "s", against = [], confidence = "MED", source = "x" }', "against"),
        ('claim = { statement = "s", against = ["a", "a"], confidence = "MED", source = "x" }', "twice"),
        ('claim = { statement = "s", against = ["a"], confidence = "LOW", source = "x" }', "confidence"),
        ('claim = { statement = "s", against = ["a"], confidence = "MED" }', "source"),
        ('claim = { statement = "s", against = ["a"], confidence = "MED", source = "x", value = 1 }', "unknown key"),
    ],
)
def test_malformed_claims_name_the_key(claim: str, problem: str) -> None:

    text = SPEC.split("[[benchmarks]]")[0] + _benchmark("b", ["worse"]).split("claim = ")[0] + claim + "\n"
    with pytest.raises(SpecError, match=problem):
        parse_spec(tomllib.loads(text), Path("toyclaim.toml"))


def test_a_benchmark_cannot_state_both_a_number_and_a_claim() -> None:
    import tomllib

    text = (
        SPEC.split("[[benchmarks]]")[0]
        + _benchmark("b", ["worse"])
        + 'reported = { value = 0.3, plus_minus_kind = "none", decimals = 1, test_episodes = 600, table = "T", '
        'row = "r", confidence = "MED" }\n'
    )
    with pytest.raises(SpecError, match="either a reported number or a claim"):
        parse_spec(tomllib.loads(text), Path("toyclaim.toml"))


def test_judge_claim_needs_every_comparison_to_hold() -> None:
    from metabench.spec import Claim

    claim = Claim("m beats a and b", ("a", "b"), "MED", "tests")
    method = torch.linspace(0, 1, 400)
    clearly_worse, noise = method + 1.0, method + 0.01 * torch.randn(400, generator=torch.Generator().manual_seed(0))
    judgement, comparisons = judge_claim(claim, method, {"a": clearly_worse, "b": clearly_worse}, "lower")
    assert judgement.verdict == "holds" and math.isnan(judgement.difference)
    judgement, comparisons = judge_claim(
        claim, method, {"a": clearly_worse, "b": noise - noise.mean() + method.mean()}, "lower"
    )
    assert comparisons[0].verdict == "holds" and judgement.verdict in ("inconclusive", "fails")
    judgement, _ = judge_claim(claim, method, {"a": clearly_worse, "b": method - 1.0}, "lower")
    assert judgement.verdict == "fails"
    judgement, _ = judge_claim(claim, method, {"a": method - 1.0, "b": method - 1.0}, "higher")
    assert judgement.verdict == "holds", "direction decides which side is better"
    with pytest.raises(ValueError, match="'b'"):
        judge_claim(claim, method, {"a": method}, "lower")
