"""A scalar benchmark: one number per episode (accuracy, an MSE, a loss), judged against the reported
one; metrics listed in the benchmark's ``also`` are scored from the same predictions beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metabench import verify
from metabench.evaluate import evaluate_with
from metabench.kinds.base import (
    Advance,
    Evaluation,
    Judged,
    Kind,
    Relabel,
    Row,
    also_cell,
    part_columns,
    summarised,
    whole_part,
)
from metabench.reproduction import Reproduction
from metabench.result_schema import Result
from metabench.spec import Profile
from metabench.stats import judge, mean_interval
from metabench.tasks import Frozen, TaskSource


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
        return verify.verdict_problems(whole_part(result), "")
