"""One strategy per kind of benchmark: how it is scored on its frozen episodes, judged, and stored.

* :class:`Scalar`: one number per episode (accuracy, an MSE, a loss), judged against the reported one;
  metrics listed in the benchmark's ``also`` are scored from the same predictions beside it.
* :class:`Vector`: one number per component of each episode (accuracy at the k-th instance, the
  log-likelihood given k context points), each component judged, the whole taking the worst verdict.
* :class:`Claim`: the method and each named competitor scored on the same episodes, judged by paired
  comparisons (see :func:`metabench.stats.judge_claim`).

The runner calls :func:`kind_of` and never branches on a kind itself; adding a kind is one class here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

from metabench.evaluate import evaluate, evaluate_components, evaluate_with
from metabench.reproduction import Reproduction
from metabench.spec import Benchmark, Profile, Reported
from metabench.stats import Interval, Judgement, judge, judge_claim, mean_interval, worst
from metabench.tasks import Frozen, TaskSource

#: called with the number of episodes just scored, and a new description when a new pass starts
Advance = Callable[[int], None]
Relabel = Callable[[str], None]


@dataclass
class Evaluation:
    """Per-episode scores of one benchmark: its own, beside-metrics, per component, per competitor."""

    scores: Tensor
    also: dict[str, Tensor] = field(default_factory=dict)
    by_component: Tensor | None = None
    competitors: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Judged:
    """The verdict of an evaluation and what a result stores beyond the benchmark's own scores."""

    summary: Interval
    judgement: Judgement
    fields: dict[str, Any]


def scored(scores: Tensor, summary: Interval, reported: Reported | None, judgement: Judgement) -> dict[str, Any]:
    """The per-episode scores, their summary, the reported number and the verdict, as a result stores them
    for a benchmark and for each component of a vector benchmark."""
    return {
        **summarised(scores, summary),
        "reported": None if reported is None else dict(reported.__dict__),
        "verdict": {
            "verdict": judgement.verdict,
            "difference": judgement.difference,
            "band": judgement.band,
            "rule": judgement.rule,
        },
    }


def summarised(scores: Tensor, summary: Interval | None = None) -> dict[str, Any]:
    """Per-episode scores and their summary, without a verdict: a claim's competitor, or a metric reported
    beside the benchmark's own (``also``)."""
    summary = summary or mean_interval(scores)
    return {
        "scores": [round(float(s), 4) for s in scores],
        "summary": {"mean": summary.mean, "ci95": summary.half_width, "std": summary.std, "n": summary.n},
    }


class Kind(Protocol):
    def evaluate(
        self, model: Reproduction, frozen: Frozen, bank: TaskSource, batch: int, advance: Advance, relabel: Relabel
    ) -> Evaluation: ...

    def judge(self, profile: Profile, evaluation: Evaluation) -> Judged: ...


@dataclass(frozen=True)
class Scalar:
    bench: Benchmark

    def evaluate(
        self, model: Reproduction, frozen: Frozen, bank: TaskSource, batch: int, advance: Advance, relabel: Relabel
    ) -> Evaluation:
        scores, also = evaluate_with(model, frozen, bank, batch, self.bench.metric, self.bench.also, on_batch=advance)
        return Evaluation(scores, also)

    def judge(self, profile: Profile, evaluation: Evaluation) -> Judged:
        summary = mean_interval(evaluation.scores)
        return Judged(summary, judge(self.bench.reported, summary), self._also(evaluation))

    @staticmethod
    def _also(evaluation: Evaluation) -> dict[str, Any]:
        # Metrics scored beside the benchmark's own from the same predictions (the MSE of a CNP's mean).
        also = {name: summarised(values) for name, values in evaluation.also.items()}
        return {"also": also} if also else {}


@dataclass(frozen=True)
class Vector:
    bench: Benchmark

    def evaluate(
        self, model: Reproduction, frozen: Frozen, bank: TaskSource, batch: int, advance: Advance, relabel: Relabel
    ) -> Evaluation:
        instances = tuple(c.instance for c in self.bench.components)
        scores, by_component = evaluate_components(
            model, frozen, bank, batch, self.bench.metric, instances, on_batch=advance
        )
        return Evaluation(scores, by_component=by_component)

    def judge(self, profile: Profile, evaluation: Evaluation) -> Judged:
        assert evaluation.by_component is not None, "a vector benchmark is evaluated by component"
        components, judgements = [], []
        for column, component in enumerate(self.bench.components):
            values = evaluation.by_component[:, column]
            part = mean_interval(values)
            verdict = judge(component.reported, part)
            judgements.append(verdict)
            components.append(
                {
                    "name": component.name,
                    "instance": component.instance,
                    **scored(values, part, component.reported, verdict),
                    "floor": self.bench.floor_of(profile, component.name),
                }
            )
        whole = worst(judgements, self.bench.direction)
        return Judged(mean_interval(evaluation.scores), whole, {"components": components})


@dataclass(frozen=True)
class Claim(Scalar):
    def evaluate(
        self, model: Reproduction, frozen: Frozen, bank: TaskSource, batch: int, advance: Advance, relabel: Relabel
    ) -> Evaluation:
        evaluation = super().evaluate(model, frozen, bank, batch, advance, relabel)
        assert self.bench.claim is not None
        for name in self.bench.claim.against:
            relabel(name)
            evaluation.competitors[name] = evaluate(
                model, frozen, bank, batch, on_batch=advance, metric=self.bench.metric, competitor=name
            )
        return evaluation

    def judge(self, profile: Profile, evaluation: Evaluation) -> Judged:
        claim = self.bench.claim
        assert claim is not None
        judgement, comparisons = judge_claim(
            claim, evaluation.scores, dict(evaluation.competitors), self.bench.direction
        )
        stored = {
            "competitors": {name: summarised(values) for name, values in evaluation.competitors.items()},
            "claim": {
                **dataclasses.asdict(claim),
                "against": list(claim.against),  # JSON has no tuples: the result reads back as written
                "verdict": judgement.verdict,
                "rule": judgement.rule,
                "comparisons": {
                    c.competitor: {
                        "mean_difference": c.comparison.mean_difference,
                        "ci95": c.comparison.half_width,
                        "p_value": c.comparison.p_value,
                        "n": c.comparison.n,
                        "verdict": c.verdict,
                    }
                    for c in comparisons
                },
            },
        }
        return Judged(mean_interval(evaluation.scores), judgement, {**self._also(evaluation), **stored})


def kind_of(bench: Benchmark) -> Kind:
    """The strategy for ``bench``: a claim, a vector of components, or a scalar."""
    if bench.claim is not None:
        return Claim(bench)
    if bench.is_vector:
        return Vector(bench)
    return Scalar(bench)
