"""The convergence ladder: which results are rungs, and the plot they make."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from metabench.errors import MetabenchError
from metabench.ladder import budget_only, plot_ladder, rungs


def row(profile: str, budget: float, experiment: str = "", mean: float = 90.0, **extra: object) -> dict[str, object]:
    base = {
        "paper": "protonet",
        "benchmark": "omniglot-5w1s",
        "profile": profile,
        "budget": budget,
        "experiment": experiment,
        "mean": mean,
        "ci95": 0.3,
        "reported": 98.8,
        "band": 0.35,
        "metric": "accuracy",
        "role": "",
        "component": "",
    }
    return {**base, **extra}


@pytest.mark.parametrize(
    ("experiment", "only"),
    [
        ("", True),
        ("train_episodes=5000", True),
        ("checkpoint_every=300, lr_decay_every=2025, train_episodes=8100", True),
        ("model.scale=10", False),
        ("lr=0.01, train_episodes=5000", False),
    ],
)
def test_only_budget_changes_make_a_rung(experiment: str, only: bool) -> None:
    assert budget_only(experiment) is only


def test_rungs_keep_the_methods_runs_at_two_or_more_budgets_in_budget_order() -> None:
    frame = pd.DataFrame(
        [
            row("paper", 1.0, mean=98.5),
            row("quick", 0.09, mean=97.9),
            row("paper", 0.25, "train_episodes=5000", mean=98.3),
            row("quick", 0.09, "model.scale=10", mean=99.0),  # another method: not a rung
            row("quick", 0.05, benchmark="omniglot-20w5s"),  # one budget only: no ladder
        ]
    )
    found = rungs(frame)
    assert list(found) == [("protonet", "omniglot-5w1s")]
    assert list(found[("protonet", "omniglot-5w1s")]["budget"]) == [0.09, 0.25, 1.0]


def test_the_plot_is_written_and_no_ladder_is_a_clear_error(tmp_path: Path) -> None:
    frame = pd.DataFrame([row("quick", 0.09), row("paper", 1.0, mean=98.6)])
    written = plot_ladder(frame, tmp_path / "ladder.png")
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MetabenchError, match="two or more budgets"):
        plot_ladder(frame.iloc[:1], tmp_path / "none.png")
