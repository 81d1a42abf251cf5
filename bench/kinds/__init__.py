"""One strategy per kind of benchmark: how it is scored on its frozen episodes, judged, and stored.

* :class:`Scalar` (``scalar.py``): one number per episode (accuracy, an MSE, a loss), judged against the
  reported one; metrics listed in the benchmark's ``also`` are scored from the same predictions beside it.
* :class:`Vector` (``vector.py``): one number per component of each episode (accuracy at the k-th
  instance, the log-likelihood given k context points), each component judged, the whole taking the worst
  verdict.
* :class:`Claim` (``claim.py``): the method and each named competitor scored on the same episodes, judged
  by paired comparisons (see :func:`metabench.stats.judge_claim`).

Each strategy also owns what is done with a result it stored: its rows in ``compare``'s frame
(:meth:`Kind.rows`), the integrity problems ``check`` recomputes from its stored scores
(:meth:`Kind.problems`), the lines ``run`` prints about it (:meth:`Kind.lines`) and how its ``compare`` rows
are judged again against the registry as it is now (:meth:`Kind.current_targets`).

The runner calls :func:`kind_of` with a benchmark and the readers (``compare``, ``check``, ``run``'s
printout) call :func:`kind_of_result` with a typed result; none of them branches on a kind itself, so
adding a kind is one module in this package (a :class:`~metabench.kinds.base.Kind` subclass) and its line
in those two functions.
"""

from __future__ import annotations

from metabench.kinds.base import (
    Advance,
    Evaluation,
    Judged,
    Kind,
    Relabel,
    Row,
    Updates,
    also_cell,
    part_columns,
    scored,
    summarised,
)
from metabench.kinds.claim import Claim
from metabench.kinds.scalar import Scalar
from metabench.kinds.vector import Vector
from metabench.result_schema import Result
from metabench.spec import Benchmark

__all__ = [
    "Advance",
    "Claim",
    "Evaluation",
    "Judged",
    "Kind",
    "Relabel",
    "Row",
    "Scalar",
    "Updates",
    "Vector",
    "also_cell",
    "kind_of",
    "kind_of_result",
    "part_columns",
    "scored",
    "summarised",
]


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
