"""The one registry of metrics a benchmark may report: what each is, which way is better, what a trivial
predictor scores, how it is scored and shown.

Every other module asks this registry instead of comparing metric names: the spec parser (which metrics
exist, which need listed instances or sequence episodes, which state their own ``chance``), the
evaluator (how a prediction is scored, which metric scores a Gaussian's mean), the floors (points or a
relative margin), the training log and the plots (unit and axis label), the result reader (vector or
scalar). Adding a metric is one entry in :data:`METRICS` plus its tests.

torch is imported inside the scoring functions only: parsing a spec or printing a table never needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import Tensor

Direction = Literal["higher", "lower"]
#: what the components of a vector metric are indexed by: the k-th presentation of a class, k context points
ComponentAxis = Literal["instance", "context"]
#: per-episode scores ``[B]`` of ``[B, queries, ...]`` predictions against their targets
Scorer = Callable[["Tensor", "Tensor"], "Tensor"]


def accuracy(predictions: Tensor, targets: Tensor) -> Tensor:
    """Accuracy (%) of the argmax per episode."""
    import torch

    return (predictions.argmax(-1) == targets).to(torch.float64).mean(1).mul(100.0)


def error(predictions: Tensor, targets: Tensor) -> Tensor:
    """100 - accuracy (%), what supervised papers report; for one-example tasks 0 or 100 per example."""
    import torch

    return (predictions.argmax(-1) != targets).to(torch.float64).mean(1).mul(100.0)


def mse(predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error per task, over every target value."""
    import torch

    return (predictions.to(torch.float64) - targets.to(torch.float64)).pow(2).flatten(1).mean(1)


def loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """The prediction already is the task's score (an optimizee's loss after its horizon, say), ``[B]`` or
    ``[B, ...]`` averaged over the trailing dimensions; the targets are not used."""
    import torch

    values = predictions.to(torch.float64)
    return values.flatten(1).mean(1) if values.dim() > 1 else values


def gaussian_log_likelihood(predictions: Tensor, targets: Tensor) -> Tensor:
    """Per task, the mean over targets of ``log N(y; mean, std)`` (summed over a target's dimensions).

    ``predictions`` is ``targets.shape + (2,)``: the mean and the standard deviation of each value. This is
    what CNP's notebook maximises (a diagonal Gaussian per target point, averaged over the targets).
    """
    import torch

    y = targets.to(torch.float64)
    mean, std = predictions[..., 0].to(torch.float64), predictions[..., 1].to(torch.float64)
    log_p = -0.5 * ((y - mean) / std).pow(2) - std.log() - 0.5 * math.log(2 * math.pi)
    return log_p.reshape(y.shape[0], y.shape[1], -1).sum(-1).mean(1)


def uniform_guess(ways: int) -> float:
    """Accuracy (%) of guessing uniformly among the ways."""
    return 100.0 / ways


def uniform_guess_error(ways: int) -> float:
    """Error (%) of guessing uniformly among the ways."""
    return 100.0 - 100.0 / ways


@dataclass(frozen=True)
class MetricInfo:
    """Everything the harness needs to know about one metric."""

    name: str
    #: which way is better; the spec states a benchmark's direction, the parser holds it to this one only
    #: where ``direction_required`` (an error better when higher is a typo, not a protocol)
    direction: Direction
    #: per-episode scores of the model's predictions
    score: Scorer
    #: the trivial baseline from the number of ways (classification); ``None``: the spec states ``chance``
    chance: Callable[[int], float] | None = None
    direction_required: bool = False
    #: decimals of the reproduced mean and interval in the comparison table
    decimals: int = 2
    #: how the training log writes a value's unit: ``"%"``, or ``""`` for `` <name>``
    unit: str = ""
    #: the y-axis of a validation curve, after "validation "; ``""`` for the metric's name
    axis: str = ""
    #: metrics a benchmark may report beside this one, scored from the same predictions (``also``)
    also: tuple[str, ...] = ()
    #: a vector metric's components: by instance or by context; ``None`` for a scalar metric
    components: ComponentAxis | None = None
    #: predictions are a Gaussian per target (mean, std): another metric scores the mean
    gaussian: bool = False
    #: the metric is only defined on sequence episodes (a class's k-th presentation)
    needs_sequence: bool = False

    @property
    def classification(self) -> bool:
        """Whether the trivial baseline is a uniform guess (100 / ways), with a margin in points."""
        return self.chance is not None

    @property
    def vector(self) -> bool:
        return self.components is not None

    @property
    def log_unit(self) -> str:
        return self.unit or f" {self.name}"

    @property
    def axis_label(self) -> str:
        return self.axis or self.name


def _registry(*entries: MetricInfo) -> dict[str, MetricInfo]:
    return {entry.name: entry for entry in entries}


#: every metric a spec may name, in the order the parser lists them
METRICS: dict[str, MetricInfo] = _registry(
    MetricInfo("accuracy", "higher", accuracy, uniform_guess, unit="%", axis="accuracy (%)"),
    MetricInfo("mse", "lower", mse),
    MetricInfo("accuracy-by-instance", "higher", accuracy, uniform_guess, components="instance", needs_sequence=True),
    MetricInfo("loss", "lower", loss),
    MetricInfo("log-likelihood", "higher", gaussian_log_likelihood, also=("mse",), gaussian=True),
    MetricInfo("log-likelihood-by-context", "higher", gaussian_log_likelihood, components="context", gaussian=True),
    MetricInfo("error", "lower", error, uniform_guess_error, direction_required=True, unit="%"),
)


def metric_of(name: str) -> MetricInfo:
    """The registry's entry for ``name`` (a ``KeyError`` for a name no spec may use)."""
    return METRICS[name]


def table_decimals(name: str) -> int:
    """Decimals of a mean, interval and difference in the comparison table (2 for a name the registry does
    not know)."""
    return METRICS[name].decimals if name in METRICS else 2


def axis_label(name: str) -> str:
    """A validation curve's y-axis, after "validation ": "accuracy (%)", or the metric's name (also for a
    name the registry does not know, from an old result)."""
    return METRICS[name].axis_label if name in METRICS else name


def is_vector(name: str) -> bool:
    """Whether ``name`` is a vector metric; ``False`` for a name the registry does not know (an old or
    damaged result is then read as a scalar one, as before the registry)."""
    entry = METRICS.get(name)
    return entry is not None and entry.vector
