"""A claim: the method and each named competitor scored on the same episodes, judged by paired
comparisons (see :func:`metabench.stats.judge_claim`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metabench import verify
from metabench.evaluate import evaluate
from metabench.kinds.base import Advance, Evaluation, Judged, Relabel, Row, Updates, summarised, verdict_markup
from metabench.kinds.scalar import Scalar
from metabench.reproduction import Reproduction
from metabench.result_schema import Result
from metabench.spec import Profile
from metabench.stats import judge_claim, mean_interval
from metabench.tasks import Frozen, TaskSource


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
                    f"(p = {comparison['p_value']:.2g})  {verdict_markup(comparison['verdict'])}",
                )
            )
        return super().lines(result) + lines

    def current_targets(self, profile: Profile | None, row: Mapping[str, Any]) -> Updates:
        """A claim's verdict needs the per-episode scores, judged at run time; only the floor moves."""
        updates: Updates = []
        if profile is not None:
            updates.append((["floor", "min_above_chance"], [profile.floor, profile.min_above_chance]))
        return [*updates, (["chance"], [self.bench.chance])]
