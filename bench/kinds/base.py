"""What every kind of benchmark shares: the evaluation and judgement a kind hands the runner, the
stored form of a judged part (:func:`scored`, :func:`summarised`) and how ``compare`` reads it back
(:func:`part_columns`), and the :class:`Kind` base class whose methods each kind implements."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from metabench.reproduction import Reproduction
from metabench.result_schema import Result
from metabench.spec import Benchmark, Profile, Reported
from metabench.stats import Interval, Judgement, judge, mean_interval
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


def also_lines(result: Result) -> list[tuple[str, str]]:
    """``run``'s lines for the metrics reported beside the benchmark's own: neither judged nor checked."""
    return [
        (name, f"{part['summary']['mean']:.4f} ± {part['summary']['ci95']:.4f}  (reported beside, no verdict)")
        for name, part in result.also.items()
    ]


def whole_part(result: Result) -> dict[str, Any]:
    """The result's own judged part, shaped as a component is (for :mod:`metabench.verify`)."""
    return {"summary": result.summary, "reported": result.reported, "verdict": result.verdict}


def verdict_markup(verdict: str) -> str:
    from metabench.compare_table import verdict_style

    return f"[{verdict_style(verdict)}]{verdict}[/]"


@dataclass(frozen=True)
class Kind:
    """What every kind of benchmark does: at run time with its benchmark (``evaluate``, ``judge``); with
    a result it stored, which needs no benchmark (the class methods ``rows``, ``problems``, ``lines``);
    and with a ``compare`` row of such a result against its benchmark now (``current_targets``)."""

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
        return also_lines(result)

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
