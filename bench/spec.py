"""The reproduction spec: what a paper reported and how to reproduce it, parsed from TOML.

A spec file holds the citation, the implementation to load, spec-wide profile defaults and a list of
benchmarks. Each benchmark states its protocol (dataset, split, ways, shots, queries, transductive or
not), the reported number with what its ± means, and the profiles ``smoke``, ``quick`` and ``paper``.
A profile is the full set of hyperparameters: spec-wide ``[profiles.NAME]`` tables give defaults that a
benchmark's ``[benchmarks.profiles.NAME]`` overrides key by key. Nothing is silently defaulted: a key
that a profile needs and nobody set is an error naming the file and the key, and so is a key that
nothing reads (a typo would otherwise be ignored).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metabench import metrics
from metabench.metrics import Direction as Direction

PROFILE_NAMES = ("smoke", "quick", "paper")
PlusMinusKind = Literal["ci95", "std-runs", "unknown", "none"]
Confidence = Literal["HIGH", "MED"]
#: a metric's name: one of :data:`metabench.metrics.METRICS`, where everything about it is registered
Metric = str
#: how the runner's learning rate moves: multiplied by lr_decay_factor every lr_decay_every steps, or
#: annealed linearly from lr to 0 over the run (Reptile's meta step size)
LrSchedule = Literal["step", "linear"]
MIN_TEST_EPISODES = 600
#: the registry's names, kept here for readers of the spec (the registry is the one source)
METRICS: tuple[str, ...] = tuple(metrics.METRICS)
ClaimConfidence = Literal["HIGH", "MED", "UNVERIFIED"]
ClaimExpectation = Literal["holds", "fails"]


@dataclass(frozen=True)
class Reported:
    """A number as the paper printed it, and what its ± means.

    ``plus_minus_kind``: ``ci95`` is a 95% interval over test episodes; ``std-runs`` one standard
    deviation over training runs; ``unknown`` a ± whose meaning the paper does not state; ``none`` a
    bare number (then ``plus_minus`` is 0 and the verdict allows for the printed precision only).
    """

    value: float
    plus_minus: float
    plus_minus_kind: PlusMinusKind
    test_episodes: int | None
    table: str
    row: str
    confidence: Confidence
    variant: str = ""
    decimals: int | None = None

    def printed(self) -> str:
        """The number as the paper printed it, with its ± when it has one."""
        if self.plus_minus_kind == "none":
            return printed_number(self.value, self.decimals)
        return f"{printed_number(self.value, self.decimals)} ± {printed_number(self.plus_minus, self.decimals)}"


def printed_number(value: float, decimals: int | None) -> str:
    """``value`` with the paper's decimals: TOML reads 96.0 as 96 and 60.60 as 60.6; the spec keeps them."""
    return f"{value:g}" if decimals is None else f"{value:.{decimals}f}"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st: how the papers name a presentation."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def component_name(metric: str, k: int) -> str:
    """A vector benchmark's ``k``-th listed component: the ``k``-th presentation of a class ("2nd") for
    accuracy by instance, ``k`` context points ("100 context") for log-likelihood by context."""
    return f"{k} context" if metrics.metric_of(metric).components == "context" else ordinal(k)


def component_label(name: str) -> str:
    """How tables and messages name a component: MANN's "2nd" is the "2nd instance"; a count of context
    points ("100 context") is shown as it is."""
    return name if name.endswith("context") else f"{name} instance"


@dataclass(frozen=True)
class Component:
    """One element of a vector-valued benchmark, judged on its own like a scalar benchmark.

    For ``accuracy-by-instance`` (MANN's Table 1) a component is the accuracy at the ``instance``-th
    presentation of a class within an episode; ``name`` is how tables and results label it ("2nd").
    For ``log-likelihood-by-context`` (CNP image completion) it is the log-likelihood of the targets
    given the first ``instance`` context points of each task ("100 context").
    """

    name: str
    instance: int
    reported: Reported | None


@dataclass(frozen=True)
class Claim:
    """What a paper claims instead of a number: that its method beats named competitors.

    Papers that report curves (learned optimizers) or unconfirmed numbers (shrinkage) are checked this
    way: the run scores the method and every competitor in ``against`` on the same frozen test tasks,
    and the claim holds when every paired comparison favours the method at the 5% level.
    """

    statement: str
    against: tuple[str, ...]
    confidence: ClaimConfidence
    source: str
    #: what the paper reports: ``holds``, or ``fails`` for a negative finding (say, a learned optimizer
    #: that does *not* generalise to ReLU networks), which a reproduction agrees with by failing
    expect: ClaimExpectation = "holds"


@dataclass(frozen=True)
class Profile:
    """Every hyperparameter one run uses. The runner reads the named fields; ``model`` goes to the paper."""

    name: str
    train_part: str
    val_part: str | None
    train_ways: int
    train_shots: int
    train_queries: int
    meta_batch: int
    train_episodes: int
    optimizer: Literal["adam", "sgd", "rmsprop"]
    lr: float
    lr_decay_every: int
    lr_decay_factor: float
    val_every: int
    val_episodes: int
    checkpoint_every: int
    test_episodes: int
    eval_batch: int
    floor: float | tuple[float, ...] | None = None
    floor_note: str = ""
    min_above_chance: float | None = None
    lr_schedule: LrSchedule = "step"
    #: optimiser steps taken on each sampled batch: a learned optimizer's truncated backpropagation
    #: takes horizon / unroll steps on the same problems, the reproduction carrying the optimizee between
    #: them from ``Reproduction.start_batch`` on (1: a fresh batch every step)
    steps_per_batch: int = 1
    #: rescale the meta-gradient to at most this norm before each step (Ravi & Larochelle clip at 0.25)
    clip_grad_norm: float | None = None
    #: momentum of the ``sgd`` and ``rmsprop`` optimisers (Santoro et al.'s re-implementations use RMSprop
    #: with momentum 0.9); Adam has its own betas
    momentum: float = 0.0
    #: keep the weights of the best validation point and restore them before testing (needs val_part)
    early_stopping: bool = False
    #: smoke only: the part on which the contract suite checks that learning happened, when it is not the
    #: test part (a generalisation benchmark, whose test tasks come from a distribution the model never
    #: trained on: whether it transfers is the claim under test, not the path the smoke run proves)
    learning_part: str | None = None
    model: dict[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> dict[str, Any]:
        """A JSON-ready copy of every value, as stored in a result."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PaperEstimate:
    """How long the benchmark's ``paper`` profile took to run on a named machine, from ``metabench
    estimate`` (timed steps extrapolated): a guide to what a run costs before it is started."""

    hours: float
    #: the machine, thread count, commit and date the estimate was measured with
    measured: str


@dataclass(frozen=True)
class KnownShortfall:
    """A committed ``paper`` result that falls short of its paper, examined and written up as a finding.

    ``check`` fails a paper run that falls short, because CI uses it as a regression check against the
    reported numbers. A shortfall that has been diagnosed (the evidence on a docs page) is a finding,
    not a regression: naming its result file here lets that one file pass as ``known``, while any other
    run of the benchmark that falls short (a rerun is a new file) still fails until it too is examined.
    """

    #: the result's file name, ``BENCHMARK__paper__seedS__STAMP.json`` (in ``results/PAPER/``)
    result: str
    #: where the diagnosis is written up, e.g. ``docs/papers/maml.md#sinusoid-at-the-papers-budget``
    finding: str


@dataclass(frozen=True)
class Benchmark:
    """One reported number and the protocol that produced it."""

    id: str
    dataset: str
    split: str
    image_size: int
    ways: int
    shots: int
    queries: int
    metric: Metric
    direction: Direction
    transductive: bool
    test_part: str
    test_seed: int
    default: bool
    reported: Reported | None
    profiles: dict[str, Profile]
    notes: str = ""
    baseline: float | None = None
    sequence: bool = False
    variant: str = ""
    components: tuple[Component, ...] = ()
    claim: Claim | None = None
    also: tuple[str, ...] = ()
    paper_estimate: PaperEstimate | None = None
    known_shortfalls: tuple[KnownShortfall, ...] = ()

    def known_shortfall(self, result_name: str) -> KnownShortfall | None:
        """The acknowledgement naming the result file ``result_name``, if the spec has one."""
        return next((known for known in self.known_shortfalls if known.result == result_name), None)

    @property
    def chance(self) -> float:
        """Accuracy (%) of guessing uniformly among the ways (error: 100 minus that); for a regression
        metric, the spec's ``chance`` (the score of a trivial predictor, e.g. the MSE of always predicting 0)."""
        if self.baseline is not None:
            return self.baseline
        uniform = metrics.metric_of(self.metric).chance
        return uniform(self.ways) if uniform is not None else 100.0 / self.ways

    def better_than(self, score: float, reference: float, margin: float) -> bool:
        """Whether ``score`` beats ``reference`` by at least ``margin`` in this metric's direction."""
        if self.direction == "lower":
            return score <= reference - margin
        return score >= reference + margin

    @property
    def first_reported(self) -> Reported | None:
        """The reported number a benchmark is introduced by: its own, or its first component's that has one
        (what the test-episode minimum and ``show`` go by). The one place that picks it."""
        return self.reported or next((c.reported for c in self.components if c.reported), None)

    @property
    def is_vector(self) -> bool:
        """Whether the reported number is a vector (one component per instance) rather than a scalar."""
        return metrics.is_vector(self.metric)

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    def floor_of(self, profile: Profile, component: str = "") -> float | None:
        """The floor ``profile`` sets for the whole benchmark, or for one component of a vector one."""
        if isinstance(profile.floor, tuple):
            names = [c.name for c in self.components]
            return profile.floor[names.index(component)] if component in names else None
        return profile.floor

    def profile(self, name: str) -> Profile:
        from metabench.errors import UnknownNameError, did_you_mean

        if name not in self.profiles:
            raise UnknownNameError(
                f"benchmark {self.id!r} has no profile {name!r}", did_you_mean(name, list(self.profiles))
            )
        return self.profiles[name]


@dataclass(frozen=True)
class Spec:
    """A paper: citation, implementation and benchmarks."""

    key: str
    title: str
    authors: tuple[str, ...]
    year: int
    venue: str
    arxiv: str
    implementation: str
    benchmarks: tuple[Benchmark, ...]
    source: Path
    notes: str = ""

    def benchmark(self, benchmark_id: str) -> Benchmark:
        from metabench.errors import UnknownNameError, did_you_mean

        for bench in self.benchmarks:
            if bench.id == benchmark_id:
                return bench
        ids = [b.id for b in self.benchmarks]
        raise UnknownNameError(f"paper {self.key!r} has no benchmark {benchmark_id!r}", did_you_mean(benchmark_id, ids))

    @property
    def citation(self) -> str:
        authors = ", ".join(self.authors)
        where = f" arXiv:{self.arxiv}" if self.arxiv else ""
        return f"{authors}. {self.title}. {self.venue} {self.year}.{where}"


def minimum_test_episodes(profile: str, reported: Reported | None) -> int:
    """The fewest frozen test episodes a profile may use.

    ``paper`` follows the paper's own count when it is larger than 600 (Reptile's 10,000 tasks), so a
    paper run is judged on the paper's protocol; ``quick`` needs 600, the design's minimum, because a
    budget run whose evaluation alone takes hours on a CPU (Reptile's) would never be measured at all;
    ``smoke`` is a test of the plumbing and needs 1.
    """
    if profile == "smoke":
        return 1
    if profile == "paper" and reported is not None and reported.test_episodes:
        return max(MIN_TEST_EPISODES, reported.test_episodes)
    return MIN_TEST_EPISODES


def parse_spec(data: Mapping[str, Any], source: Path) -> Spec:
    """Validate a TOML document into a :class:`Spec` (see :mod:`metabench.spec_parser`)."""
    from metabench.spec_parser import parse_spec as parse

    return parse(data, source)


def parse_profile_table(
    name: str, data: Mapping[str, Any], where: str, reported: Reported | None, *, targets: bool = True
) -> Profile:
    """A profile from a plain table (``--set`` re-validates a changed profile through this)."""
    from metabench.spec_parser import parse_profile_table as parse

    return parse(name, data, where, reported, targets=targets)


def load_spec_file(path: Path) -> Spec:
    """Read and validate one spec file (see :mod:`metabench.spec_parser`)."""
    from metabench.spec_parser import load_spec_file as load

    return load(path)
