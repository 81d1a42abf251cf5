"""A run's training budget: the training examples it processed, as a share of its paper profile's.

A number measured after 1% of the paper's training says something else than one measured after all of
it, so every result carries its budget and every table shows it. The unit is what one training task
holds (:func:`metabench.data.examples_per_task`): images of an episode, points of a regression task, a
minibatch of a supervised set, or one optimisation problem. A run processes ``train_episodes`` optimiser
steps of ``meta_batch`` tasks each, so::

    examples = train_episodes * meta_batch * examples_per_task(train_ways, train_shots, train_queries)

and the share divides that by the same product for the benchmark's ``paper`` profile. The count ignores
what a method does with an example (MAML's inner steps, a learned optimizer's unroll), which is the
same in every profile of a benchmark, so the share is a fair ratio of compute within one benchmark; it
is not meant to compare two papers' budgets, whose examples cost differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metabench.data import examples_per_task
from metabench.episodes import EpisodeShape
from metabench.spec import Benchmark, Profile

#: the fields of a profile (or of a result's stored hyperparameters) that decide the budget
BUDGET_FIELDS = ("train_episodes", "meta_batch", "train_ways", "train_shots", "train_queries")


@dataclass(frozen=True)
class Budget:
    """Training examples a run processed, those its paper profile processes, and their ratio."""

    examples: int
    paper_examples: int

    @property
    def share(self) -> float:
        return self.examples / self.paper_examples

    def as_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "paper_examples": self.paper_examples, "share": self.share}

    def label(self) -> str:
        return f"budget {format_share(self.share)}"


def format_share(share: float) -> str:
    """Whole percents from 10% up (``100%``, ``50%``), then one, two or three decimals (``9.0%``, ``0.42%``,
    ``0.006%``), so that a small budget never prints as ``0%``."""
    percent = 100.0 * share
    if percent >= 10 or percent == 0:
        return f"{percent:.0f}%"
    digits = 1 if percent >= 1 else 2 if percent >= 0.1 else 3
    return f"{percent:.{digits}f}%"


def examples_of(bench: Benchmark, settings: Profile | Mapping[str, Any]) -> int:
    """Training examples processed under ``settings``: a profile, or a result's stored hyperparameters."""
    values = {
        name: getattr(settings, name) if isinstance(settings, Profile) else settings[name] for name in BUDGET_FIELDS
    }
    shape = EpisodeShape(values["train_ways"], values["train_shots"], values["train_queries"], bench.sequence)
    return int(values["train_episodes"]) * int(values["meta_batch"]) * examples_per_task(bench.dataset, shape)


def budget_of(bench: Benchmark, settings: Profile | Mapping[str, Any]) -> Budget:
    """The budget of a run of ``bench`` under ``settings`` against the benchmark's ``paper`` profile."""
    return Budget(examples_of(bench, settings), examples_of(bench, bench.profile("paper")))


def stored_budget(paper: str, benchmark: str, stored: Mapping[str, Any]) -> Budget | None:
    """The budget of a result older than recorded budgets (schema 4), from its stored hyperparameters and
    its benchmark as the registry has it now; None for a result too old or too damaged to say, or whose
    paper or benchmark the registry no longer has."""
    from metabench.errors import UnknownNameError
    from metabench.registry_loader import get_spec

    counts = [stored.get(key) for key in BUDGET_FIELDS]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
        return None
    try:
        return budget_of(get_spec(paper).benchmark(benchmark), stored)
    except (UnknownNameError, KeyError, ValueError, ZeroDivisionError):
        return None
