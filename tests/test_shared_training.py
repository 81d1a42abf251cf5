"""One training, every test shape it serves: which benchmarks share a training, and that scoring the
others changes nothing of the asked benchmark's result."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from typer.testing import CliRunner

import metabench
from metabench.cli import app
from metabench.plan import RunRequest, make_plan
from metabench.registry_loader import get_spec

SINUSOID = {"benchmark": "sinusoid-5shot", "profile": "smoke", "progress": False}


def _targets(paper: str, **asked: object) -> list[str]:
    request = RunRequest(paper=paper, share_training=True, **asked)  # type: ignore[arg-type]
    plan = make_plan(request, get_spec(paper), Console(quiet=True))
    return [t.bench.id for t in plan.targets]


def test_benchmarks_that_differ_only_in_their_test_share_one_training() -> None:
    assert _targets("protonet", shots=1, profile="paper") == ["omniglot-5w1s", "omniglot-20w1s"]
    assert _targets("protonet", shots=5, profile="quick") == ["omniglot-5w5s", "omniglot-20w5s"]
    # eval_inner_steps is a test-time setting: MAML's sinusoid rows after 1, 5 and 10 steps share training
    assert _targets("maml", benchmark="sinusoid-5shot", profile="paper") == [
        "sinusoid-5shot",
        "sinusoid-5shot-1step",
        "sinusoid-5shot-5step",
    ]
    # MAML's 20-way model trains 20-way episodes with another head: nothing to share with the 5-way one
    assert _targets("maml", shots=1, ways=5, profile="quick") == ["omniglot-5w1s"]


def test_set_changes_every_benchmark_alike_and_the_api_shares_only_when_asked() -> None:
    assert _targets("maml", benchmark="sinusoid-5shot", profile="smoke", settings={"lr": 0.01}) == [
        "sinusoid-5shot",
        "sinusoid-5shot-1step",
        "sinusoid-5shot-5step",
    ]
    alone = RunRequest(paper="protonet", shots=1, profile="quick")
    assert [t.bench.id for t in make_plan(alone, get_spec("protonet"), Console(quiet=True)).targets] == [
        "omniglot-5w1s"
    ], "the Python API scores only the asked benchmark unless told to share"


def test_shared_results_keep_the_asked_benchmark_unchanged(tmp_path: Path) -> None:
    alone, _ = metabench.run_benchmark("maml", **SINUSOID, output=tmp_path / "alone")
    shared = metabench.run_benchmarks("maml", **SINUSOID, output=tmp_path / "shared")
    assert [r["benchmark"] for r, _ in shared] == ["sinusoid-5shot", "sinusoid-5shot-1step", "sinusoid-5shot-5step"]
    first, path = shared[0]
    timeless = [[{k: v for k, v in p.items() if k != "seconds"} for p in r["curve"]] for r in (first, alone)]
    assert first["scores"] == alone["scores"] and timeless[0] == timeless[1]
    assert "trained_with" not in first
    weights = torch.load(path.with_suffix(".pt"), weights_only=True)["state_dict"]
    for result, other in shared[1:]:
        assert result["trained_with"] == "sinusoid-5shot"
        assert result["test_episodes"]["digest"] != first["test_episodes"]["digest"] or (
            result["hyperparameters"]["model"] != first["hyperparameters"]["model"]
        )
        theirs = torch.load(other.with_suffix(".pt"), weights_only=True)["state_dict"]
        assert all(torch.equal(weights[k], theirs[k]) for k in weights), "one training, the same weights"


def test_only_this_benchmark_scores_the_asked_one(tmp_path: Path) -> None:
    args = ["run", "maml", "--benchmark", "sinusoid-5shot", "--profile", "smoke", "--output", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--only-this-benchmark"])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("maml/*.json"))) == 1
    assert "One training serves" not in result.output
