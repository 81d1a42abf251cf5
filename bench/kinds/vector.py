"""A vector benchmark: one number per component of each episode (accuracy at the k-th instance, the
log-likelihood given k context points), each component judged, the whole taking the worst verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from metabench import verify
from metabench.evaluate import evaluate_components
from metabench.kinds.base import Advance, Evaluation, Judged, Kind, Relabel, Row, part_columns, scored, verdict_markup
from metabench.reproduction import Reproduction
from metabench.result_schema import Result
from metabench.spec import Profile, component_label
from metabench.stats import judge, mean_interval, worst
from metabench.tasks import Frozen, TaskSource


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
                    f"{verdict_markup(part['verdict']['verdict'])}{floor}",
                )
            )
        return lines + super().lines(result)
