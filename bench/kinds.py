"""One strategy per kind of benchmark: how it is scored on its frozen episodes, judged, and stored.

* :class:`Scalar`: one number per episode (accuracy, an MSE, a loss), judged against the reported one;
  metrics listed in the benchmark's ``also`` are scored from the same predictions beside it.
* :class:`Vector`: one number per component of each episode (accuracy at the k-th instance, the
  log-likelihood given k context points), each component judged, the whole taking the worst verdict.
* :class:`Claim`: the method and each named competitor scored on the same episodes, judged by paired
  comparisons (see :func:`metabench.stats.judge_claim`).

Each strategy also owns what is done with a result it stored: its rows in ``compare``'s frame
(:meth:`Kind.rows`), the integrity problems ``check`` recomputes from its stored scores
(:meth:`Kind.problems`), the lines ``run`` prints about it (:meth:`Kind.lines`) and how its ``compare`` rows
are judged again against the registry as it is now (:meth:`Kind.current_targets`).

The runner calls :func:`kind_of` with a benchmark and the readers call :func:`kind_of_result` with a
typed result; neither branches on a kind itself, so adding a kind is one class here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from metabench import verify
from metabench.evaluate import evaluate, evaluate_components, evaluate_with
from metabench.reproduction import Reproduction
from metabench.result_schema import Result
from metabench.spec import Benchmark, Profile, Reported, component_label
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


#: a row of ``compare``'s frame: column name -> value (see :data:`metabench.compare.COLUMNS`)
Row = dict[str, Any]
#: the cells :meth:`Kind.current_targets` sets in a row, in groups of columns and their values
Updates = list[tuple[list[str], list[Any]]]


def part_columns(reported: dict[str, Any] | None, summary: dict[str, Any], verdict: dict[str, Any]) -> Row:
    """The ``compare`` columns of one judged part of a result (the whole, or a component), as
    :func:`scored` stored them: the reported number, the summary and the verdict."""
    reported = reported or {}
    return {
        "reported": reported.get("value", math.nan),
        "reported_pm": reported.get("plus_minus", math.nan),
        "pm_kind": reported.get("plus_minus_kind", ""),
        "reported_decimals": reported.get("decimals"),
        "mean": summary["mean"],
        "ci95": summary["ci95"],
        "difference": verdict["difference"],
        "band": verdict["band"],
        "verdict": verdict["verdict"],
    }


def also_cell(also: dict[str, Any]) -> str:
    """``mse 0.1234 ± 0.0056``: each metric reported beside the benchmark's, with its 95% interval."""
    return "; ".join(f"{name} {p['summary']['mean']:.4f} ± {p['summary']['ci95']:.4f}" for name, p in also.items())


def _also_lines(result: Result) -> list[tuple[str, str]]:
    return [
        (name, f"{part['summary']['mean']:.4f} ± {part['summary']['ci95']:.4f}  (reported beside, no verdict)")
        for name, part in result.also.items()
    ]


def _whole(result: Result) -> dict[str, Any]:
    """The result's own judged part, shaped as a component is (for :mod:`metabench.verify`)."""
    return {"summary": result.summary, "reported": result.reported, "verdict": result.verdict}


def _verdict_markup(verdict: str) -> str:
    from metabench.compare_table import verdict_style

    return f"[{verdict_style(verdict)}]{verdict}[/]"


@dataclass(frozen=True)
class Kind:
    """What every kind of benchmark does: at run time with its benchmark (``evaluate``, ``judge``), and
    with a result it stored, which needs no benchmark (``rows``, ``problems``, ``lines``)."""

    bench: Benchmark

    def evaluate(
        self, model: Reproduction, frozen: Frozen, bank: TaskSource, batch: int, advance: Advance, relabel: Relabel
    ) -> Evaluation:
        raise NotImplementedError

    def judge(self, profile: Profile, evaluation: Evaluation) -> Judged:
        raise NotImplementedError

    @classmethod
    def rows(cls, result: Result, common: Row) -> list[Row]:
        """The result's rows in ``compare``'s frame; ``common`` holds the columns every kind fills alike
        (paper, seed, device, the figures, the integrity problems, ...)."""
        raise NotImplementedError

    @classmethod
    def problems(cls, result: Result) -> list[str]:
        """Where the stored verdicts of this kind disagree with the stored summaries and scores (the
        summary, training steps and ``also`` metrics every result has are checked by
        :func:`metabench.verify.problems`)."""
        raise NotImplementedError

    @classmethod
    def lines(cls, result: Result) -> list[tuple[str, str]]:
        """``run``'s printout of this kind's parts: (label, rich markup), between the difference to the
        paper and the verdict."""
        return _also_lines(result)

    def current_targets(self, profile: Profile | None, row: Mapping[str, Any]) -> Updates:
        """The cells of a ``compare`` row (the whole, or a component) judged against this benchmark as the
        registry states it now: a corrected reported value or a re-measured floor applies to old results."""
        reported = self.bench.reported
        if row["component"]:
            component = self.bench.component(row["component"])
            if component is None:
                return []
            reported = component.reported
        measured = Interval(row["mean"], row["ci95"], int(row["episodes"]), math.nan)
        judgement = judge(reported, measured)
        updates: Updates = [
            (
                ["reported", "reported_pm", "pm_kind", "reported_decimals"],
                [reported.value, reported.plus_minus, reported.plus_minus_kind, reported.decimals]
                if reported
                else [math.nan, math.nan, "", None],
            ),
            (["difference", "band", "verdict"], [judgement.difference, judgement.band, judgement.verdict]),
            (["chance"], [self.bench.chance]),
        ]
        if profile is not None:
            floor = self.bench.floor_of(profile, row["component"])
            updates.append((["floor", "min_above_chance"], [floor, profile.min_above_chance]))
        return updates


@dataclass(frozen=True)
class Scalar(Kind):
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

    @classmethod
    def rows(cls, result: Result, common: Row) -> list[Row]:
        return [
            {
                **common,
                **part_columns(result.reported, result.summary, result.verdict),
                "component": "",
                "role": "",
                "floor": result.targets["floor"],
                "also": also_cell(result.also),
                "claim": "",
                "claim_expect": "",
            }
        ]

    @classmethod
    def problems(cls, result: Result) -> list[str]:
        return verify.verdict_problems(_whole(result), "")


@dataclass(frozen=True)
class Vector(Kind):
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

    @staticmethod
    def _components(result: Result) -> list[dict[str, Any]]:
        return result.components or []

    @classmethod
    def rows(cls, result: Result, common: Row) -> list[Row]:
        """One row per component, each judged and checked like a scalar result."""
        return [
            {
                **common,
                **part_columns(part["reported"], part["summary"], part["verdict"]),
                "component": part["name"],
                "role": "component",
                "floor": part["floor"],
                "also": "",
                "claim": "",
                "claim_expect": "",
            }
            for part in cls._components(result)
        ]

    @classmethod
    def problems(cls, result: Result) -> list[str]:
        """Each component's summary and verdict, and the whole's verdict: the worst component's."""
        found: list[str] = []
        judgements = []
        for index, part in enumerate(cls._components(result)):
            where = f"components[{index}]"
            found += verify.summary_problems(part["scores"], part["summary"], f"{where}.summary")
            found += verify.verdict_problems(part, f"{where}.")
            judgements.append(verify.judged(part))
        direction: Literal["higher", "lower"] = result.protocol["direction"]
        whole = worst(judgements, direction).verdict
        if result.verdict["verdict"] != whole:
            found.append(f"verdict is {result.verdict['verdict']!r}, but its components give {whole!r}")
        return found

    @classmethod
    def lines(cls, result: Result) -> list[tuple[str, str]]:
        lines = []
        for part in cls._components(result):
            paper = part["reported"]["value"] if part["reported"] else None
            against = "  " if paper is None else f"  paper {paper:g}, {part['verdict']['difference']:+.2f}, "
            floor = "" if part["floor"] is None or result.profile != "quick" else f"  floor {part['floor']:g}"
            lines.append(
                (
                    component_label(part["name"]),
                    f"{part['summary']['mean']:.2f} ± {part['summary']['ci95']:.2f}{against}"
                    f"{_verdict_markup(part['verdict']['verdict'])}{floor}",
                )
            )
        return lines + super().lines(result)


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

    @staticmethod
    def _claim(result: Result) -> dict[str, Any]:
        assert result.claim is not None, "a claim result stores its claim"
        return result.claim

    @classmethod
    def rows(cls, result: Result, common: Row) -> list[Row]:
        """The method's row with the claim's overall verdict, then one row per competitor: its own mean, and
        as difference and verdict the paired comparison of the method with it."""
        claim = cls._claim(result)
        method = {**super().rows(result, common)[0], "claim": claim["statement"]}
        method["claim_expect"] = claim.get("expect", "holds")
        competitors = [
            {
                **method,
                "component": name,
                "role": "competitor",
                "mean": result.competitors[name]["summary"]["mean"],
                "ci95": result.competitors[name]["summary"]["ci95"],
                "difference": comparison["mean_difference"],
                "band": comparison["ci95"],
                "verdict": comparison["verdict"],
                "floor": math.nan,
                "figures": "",
                "also": "",
            }
            for name, comparison in claim["comparisons"].items()
        ]
        return [method, *competitors]

    @classmethod
    def problems(cls, result: Result) -> list[str]:
        """Each competitor's summary and paired comparison, and the claim's verdict: fails if any
        comparison fails, else inconclusive if any is, else holds."""
        claim = cls._claim(result)
        found: list[str] = []
        for name in claim["against"]:
            competitor = result.competitors[name]
            found += verify.summary_problems(competitor["scores"], competitor["summary"], f"competitors.{name}.summary")
            found += verify.comparison_problems(
                result.scores, competitor["scores"], claim["comparisons"][name], name, result.protocol["direction"]
            )
        verdicts = {claim["comparisons"][name]["verdict"] for name in claim["against"]}
        overall = "fails" if "fails" in verdicts else "inconclusive" if "inconclusive" in verdicts else "holds"
        if claim["verdict"] != overall:
            found.append(f"claim.verdict is {claim['verdict']!r}, but its comparisons give {overall!r}")
        return found

    @classmethod
    def lines(cls, result: Result) -> list[tuple[str, str]]:
        claim = cls._claim(result)
        lines = [("claim", f"{claim['statement']} ({claim['confidence']}; {claim['source']})")]
        for name, comparison in claim["comparisons"].items():
            theirs = result.competitors[name]["summary"]
            lines.append(
                (
                    f"vs {name}",
                    f"{theirs['mean']:.4g} ± {theirs['ci95']:.2g}; method - {name} = "
                    f"{comparison['mean_difference']:+.4g} ± {comparison['ci95']:.2g} "
                    f"(p = {comparison['p_value']:.2g})  {_verdict_markup(comparison['verdict'])}",
                )
            )
        return super().lines(result) + lines

    def current_targets(self, profile: Profile | None, row: Mapping[str, Any]) -> Updates:
        """A claim's verdict needs the per-episode scores, judged at run time; only the floor moves."""
        updates: Updates = []
        if profile is not None:
            updates.append((["floor", "min_above_chance"], [profile.floor, profile.min_above_chance]))
        return [*updates, (["chance"], [self.bench.chance])]


def kind_of(bench: Benchmark) -> Kind:
    """The strategy for ``bench``: a claim, a vector of components, or a scalar."""
    if bench.claim is not None:
        return Claim(bench)
    if bench.is_vector:
        return Vector(bench)
    return Scalar(bench)


def kind_of_result(result: Result) -> type[Kind]:
    """The strategy of a stored result: a vector when it has components, a claim when it has a claim,
    else a scalar (what its benchmark was when it ran, whatever the registry says now)."""
    if result.components:
        return Vector
    if result.claim is not None:
        return Claim
    return Scalar
