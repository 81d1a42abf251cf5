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
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from metabench.errors import SpecError

PROFILE_NAMES = ("smoke", "quick", "paper")
PlusMinusKind = Literal["ci95", "std-runs", "unknown", "none"]
Confidence = Literal["HIGH", "MED"]
Direction = Literal["higher", "lower"]
#: accuracy and error (100 - accuracy) in %, per episode or per test example; mse and loss for regression
Metric = Literal[
    "accuracy", "mse", "accuracy-by-instance", "loss", "log-likelihood", "log-likelihood-by-context", "error"
]
#: how the runner's learning rate moves: multiplied by lr_decay_factor every lr_decay_every steps, or
#: annealed linearly from lr to 0 over the run (Reptile's meta step size)
LrSchedule = Literal["step", "linear"]
MIN_TEST_EPISODES = 600
METRICS: tuple[str, ...] = get_args(Metric)
VECTOR_METRICS = ("accuracy-by-instance", "log-likelihood-by-context")
#: metrics whose chance level is 100 / ways; every other metric states the score of a trivial predictor
CLASSIFICATION_METRICS = ("accuracy", "accuracy-by-instance", "error")
ClaimConfidence = Literal["HIGH", "MED", "UNVERIFIED"]
ClaimExpectation = Literal["holds", "fails"]
#: metrics a benchmark may report beside its own (``also``), computed from the same predictions: the MSE
#: of a Gaussian prediction is the MSE of its mean
ALSO_METRICS: dict[str, tuple[str, ...]] = {"log-likelihood": ("mse",)}


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
    return f"{k} context" if metric == "log-likelihood-by-context" else ordinal(k)


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
    optimizer: Literal["adam", "sgd"]
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
    #: them (1: a fresh batch every step)
    steps_per_batch: int = 1
    #: rescale the meta-gradient to at most this norm before each step (Ravi & Larochelle clip at 0.25)
    clip_grad_norm: float | None = None
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

    @property
    def chance(self) -> float:
        """Accuracy (%) of guessing uniformly among the ways (error: 100 minus that); for a regression
        metric, the spec's ``chance`` (the score of a trivial predictor, e.g. the MSE of always predicting 0)."""
        if self.baseline is not None:
            return self.baseline
        if self.metric == "error":
            return 100.0 - 100.0 / self.ways
        return 100.0 / self.ways

    def better_than(self, score: float, reference: float, margin: float) -> bool:
        """Whether ``score`` beats ``reference`` by at least ``margin`` in this metric's direction."""
        if self.direction == "lower":
            return score <= reference - margin
        return score >= reference + margin

    @property
    def is_vector(self) -> bool:
        """Whether the reported number is a vector (one component per instance) rather than a scalar."""
        return self.metric in VECTOR_METRICS

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


class _Table:
    """A TOML table that remembers where it came from, so every error names file and key."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = dict(data)
        self.where = where
        self.read: set[str] = set()

    def _fail(self, key: str, problem: str) -> SpecError:
        return SpecError(f"{self.where}.{key}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.read.add(key)
        if key not in self.data:
            if default is ...:
                raise self._fail(key, "missing (every spec states it; see registry/protonet.toml)")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self._fail(key, f"expected {_names(kinds)}, found a boolean")
        if not isinstance(value, kinds):
            raise self._fail(key, f"expected {_names(kinds)}, found {type(value).__name__} {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> Any:
        value = self.get(key, str, default)
        if value is not default and value not in choices:
            raise self._fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def positive(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, int, default)
        if value is not default and value is not None and value < 1:
            raise self._fail(key, f"must be a positive integer, found {value}")
        return value

    def count(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, int, default)
        if value is not default and value is not None and value < 0:
            raise self._fail(key, f"must be a non-negative integer, found {value}")
        return value

    def sub(self, key: str) -> _Table:
        return _Table(self.get(key, dict, {}), f"{self.where}.{key}")

    def reject_unread(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise self._fail(unknown[0], "unknown key (misspelt? remove it or see the README's spec format)")


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(
        {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
            "dict": "a table",
            "list": "a list",
        }.get(k.__name__, k.__name__)
        for k in kinds
    )


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Override ``base`` key by key; the ``model`` sub-table merges one level deeper."""
    merged = dict(base)
    for key, value in override.items():
        if key == "model" and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _parse_reported(table: _Table, value: float | None = None) -> Reported:
    kind = table.choice("plus_minus_kind", get_args(PlusMinusKind))
    plus_minus = table.get("plus_minus", float, 0.0)
    if kind == "none" and plus_minus != 0.0:
        raise table._fail("plus_minus", "is set but plus_minus_kind is 'none'")
    if kind != "none" and plus_minus <= 0.0:
        raise table._fail("plus_minus", f"must be positive when plus_minus_kind is {kind!r}")
    reported = Reported(
        value=table.get("value", float) if value is None else value,
        plus_minus=plus_minus,
        plus_minus_kind=kind,
        test_episodes=table.get("test_episodes", int, None),
        table=table.get("table", str),
        row=table.get("row", str),
        variant=table.get("variant", str, ""),
        confidence=table.choice("confidence", get_args(Confidence)),
        decimals=table.get("decimals", int, None),
    )
    table.reject_unread()
    if kind == "none" and reported.decimals is None:
        raise table._fail("decimals", "missing: a bare number needs its printed precision (96.0 -> decimals = 1)")
    return reported


def _parse_components(table: _Table, instances: list[int], metric: str) -> tuple[Component, ...]:
    """A vector benchmark's ``reported`` table: ``values`` (one per instance) instead of ``value``."""
    values = table.get("values", list)
    if len(values) != len(instances) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise table._fail("values", f"expected {len(instances)} numbers, one per instance {instances}")
    table.read.add("value")
    if "value" in table.data:
        raise table._fail("value", "a vector benchmark states `values`, one per instance, not one `value`")
    shared = {key: value for key, value in table.data.items() if key != "values"}
    return tuple(
        Component(component_name(metric, k), k, _parse_reported(_Table(shared, table.where), float(v)))
        for k, v in zip(instances, values, strict=True)
    )


def _parse_floor(table: _Table, components: int) -> float | tuple[float, ...] | None:
    floor = table.get("floor", (float, list), None)
    if isinstance(floor, list):
        if components == 0:
            raise table._fail("floor", "a list of floors is for vector benchmarks (one per instance)")
        if len(floor) != components or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in floor):
            raise table._fail("floor", f"expected {components} numbers, one per instance")
        return tuple(float(v) for v in floor)
    if floor is not None and components:
        raise table._fail("floor", f"a vector benchmark states one floor per instance ({components} numbers)")
    return floor


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


def _parse_claim(table: _Table) -> Claim:
    against = table.get("against", list)
    if not against or not all(isinstance(name, str) and name for name in against):
        raise table._fail("against", 'lists the competitors the claim is about, e.g. ["sgd", "adam"]')
    if len(set(against)) != len(against):
        raise table._fail("against", "names a competitor twice")
    claim = Claim(
        statement=table.get("statement", str),
        against=tuple(against),
        confidence=table.choice("confidence", get_args(ClaimConfidence)),
        source=table.get("source", str),
        expect=table.choice("expect", get_args(ClaimExpectation), "holds"),
    )
    table.reject_unread()
    return claim


def parse_profile_table(
    name: str, data: Mapping[str, Any], where: str, reported: Reported | None, *, targets: bool = True
) -> Profile:
    """A profile from a plain table (``--set`` re-validates a changed profile through this)."""
    return _parse_profile(name, _Table(data, where), reported, targets=targets)


def _parse_profile(
    name: str, table: _Table, reported: Reported | None, components: int = 0, *, targets: bool = True
) -> Profile:
    """``targets``: whether the smoke and quick profiles must state what they are held to (an
    experiment's changed profile is held to nothing, see :mod:`metabench.overrides`)."""
    model = table.get("model", dict, {})
    table.read.add("model")
    profile = Profile(
        name=name,
        train_part=table.get("train_part", str),
        val_part=table.get("val_part", str, None),
        train_ways=table.positive("train_ways"),
        train_shots=table.count("train_shots"),
        train_queries=table.positive("train_queries"),
        meta_batch=table.positive("meta_batch"),
        train_episodes=table.positive("train_episodes"),
        optimizer=table.choice("optimizer", ("adam", "sgd")),
        lr=table.get("lr", float),
        lr_decay_every=table.get("lr_decay_every", int, 0),
        lr_decay_factor=table.get("lr_decay_factor", float, 1.0),
        val_every=table.positive("val_every"),
        val_episodes=table.positive("val_episodes"),
        checkpoint_every=table.positive("checkpoint_every"),
        test_episodes=table.positive("test_episodes"),
        eval_batch=table.positive("eval_batch"),
        floor=_parse_floor(table, components),
        floor_note=table.get("floor_note", str, ""),
        min_above_chance=table.get("min_above_chance", float, None),
        lr_schedule=table.choice("lr_schedule", get_args(LrSchedule), "step"),
        steps_per_batch=table.positive("steps_per_batch", 1),
        clip_grad_norm=table.get("clip_grad_norm", float, None),
        early_stopping=table.get("early_stopping", bool, False),
        learning_part=table.get("learning_part", str, None),
        model=dict(model),
    )
    table.reject_unread()
    if profile.learning_part is not None and name != "smoke":
        raise table._fail("learning_part", "only a smoke profile names the part its learning check runs on")
    if profile.early_stopping and not profile.val_part:
        raise table._fail("early_stopping", "needs a val_part to choose the best model on")
    if profile.clip_grad_norm is not None and profile.clip_grad_norm <= 0:
        raise table._fail("clip_grad_norm", f"must be positive, found {profile.clip_grad_norm}")
    for key in ("train_episodes", "checkpoint_every"):
        if getattr(profile, key) % profile.steps_per_batch:
            raise table._fail(
                key,
                f"{getattr(profile, key)} is not a multiple of steps_per_batch = {profile.steps_per_batch} "
                "(checkpoints and the end of training fall on batch boundaries, so a resume is exact)",
            )
    needed = minimum_test_episodes(name, reported)
    if profile.test_episodes < needed:
        raise table._fail(
            "test_episodes",
            f"{profile.test_episodes} is too few for the {name!r} profile: at least {needed} "
            f"({'600, or the paper' + chr(39) + 's own count when larger' if name == 'paper' else '600'})",
        )
    if not targets:
        return profile
    if name == "smoke" and profile.min_above_chance is None:
        raise table._fail("min_above_chance", "missing: the smoke profile states how far above chance it must end")
    if name == "quick" and profile.floor is None and not profile.floor_note:
        raise table._fail(
            "floor",
            "missing: the quick profile states the floor it must reach (measured), or a floor_note "
            "saying why none could be measured (a dataset the user must supply, say)",
        )
    return profile


def _parse_benchmark(table: _Table, defaults: Mapping[str, Mapping[str, Any]]) -> Benchmark:
    metric = table.choice("metric", METRICS)
    instances = table.get("instances", list, [])
    if metric in VECTOR_METRICS:
        if not instances or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in instances):
            raise table._fail("instances", f"missing: metric {metric!r} lists the instances it reports, e.g. [1, 2, 5]")
        if metric == "accuracy-by-instance" and not table.get("sequence", bool, False):
            raise table._fail("sequence", f"metric {metric!r} needs sequence episodes: set sequence = true")
    elif instances:
        raise table._fail("instances", f"only vector metrics ({', '.join(VECTOR_METRICS)}) list instances")
    reported_table = table.get("reported", dict, None)
    claim = _parse_claim(table.sub("claim")) if table.get("claim", dict, None) is not None else None
    if claim is not None and reported_table:
        raise table._fail("claim", "a benchmark states either a reported number or a claim, not both")
    reported: Reported | None = None
    components: tuple[Component, ...] = ()
    if reported_table and metric in VECTOR_METRICS:
        components = _parse_components(_Table(reported_table, f"{table.where}.reported"), instances, metric)
        reported = None
    elif reported_table:
        reported = _parse_reported(_Table(reported_table, f"{table.where}.reported"))
    if metric in VECTOR_METRICS and not components:
        components = tuple(Component(component_name(metric, k), k, None) for k in instances)
    first_reported = reported or (components[0].reported if components else None)
    profile_tables = table.get("profiles", dict, {})
    unknown = set(profile_tables) - set(PROFILE_NAMES)
    if unknown:
        raise SpecError(f"{table.where}.profiles.{sorted(unknown)[0]}: unknown profile (use smoke, quick, paper)")
    profiles: dict[str, Profile] = {}
    for name in PROFILE_NAMES:
        merged = _merge(defaults.get(name, {}), profile_tables.get(name, {}))
        if not merged:
            raise SpecError(f"{table.where}.profiles.{name}: missing (every benchmark has smoke, quick, paper)")
        profiles[name] = _parse_profile(
            name, _Table(merged, f"{table.where}.profiles.{name}"), first_reported, len(components)
        )
    bench = Benchmark(
        id=table.get("id", str),
        dataset=table.get("dataset", str),
        split=table.get("split", str),
        image_size=table.positive("image_size"),
        ways=table.positive("ways"),
        shots=table.count("shots"),
        queries=table.positive("queries"),
        metric=metric,
        direction=table.choice("direction", get_args(Direction)),
        transductive=table.get("transductive", bool),
        test_part=table.get("test_part", str, "test"),
        test_seed=table.get("test_seed", int, 0),
        default=table.get("default", bool, False),
        reported=reported,
        profiles=profiles,
        notes=table.get("notes", str, ""),
        baseline=table.get("chance", float, None),
        sequence=table.get("sequence", bool, False),
        variant=table.get("variant", str, ""),
        components=components,
        claim=claim,
        also=tuple(table.get("also", list, [])),
    )
    table.reject_unread()
    allowed = ALSO_METRICS.get(bench.metric, ())
    for other in bench.also:
        if other not in allowed:
            raise table._fail(
                "also",
                f"{other!r} cannot be scored from {bench.metric!r} predictions"
                + (f" (possible: {', '.join(allowed)})" if allowed else " (this metric reports nothing beside it)"),
            )
    if bench.sequence and bench.is_vector and max(instances) > bench.shots + bench.queries:
        raise table._fail(
            "instances", f"instance {max(instances)} never occurs: a class appears shots + queries times per episode"
        )
    if bench.metric == "log-likelihood-by-context" and max(instances) > bench.shots:
        raise table._fail(
            "instances", f"{max(instances)} context points cannot be given: a task has only shots = {bench.shots}"
        )
    classification = bench.metric in CLASSIFICATION_METRICS
    if classification and bench.ways < 2:
        raise table._fail("ways", "an episode needs at least 2 ways")
    if classification and bench.baseline is not None:
        raise table._fail("chance", "is 100 / ways for accuracy; state it only for a regression metric")
    if bench.metric == "error" and bench.direction != "lower":
        raise table._fail("direction", 'an error is better when lower: set direction = "lower"')
    if not classification and bench.baseline is None:
        raise table._fail("chance", f"missing: a {bench.metric} benchmark states the score of a trivial predictor")
    return bench


def parse_spec(data: Mapping[str, Any], source: Path) -> Spec:
    """Validate a TOML document into a :class:`Spec`; errors name ``source`` and the key.

    The checks below name the key they refuse; a value of a shape none of them foresaw (found by the
    property-based tests) still becomes a :class:`SpecError` naming the file, never a traceback.
    """
    try:
        return _parse_spec(data, source)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as error:
        raise SpecError(f"{source.name}: malformed spec ({type(error).__name__}: {error})") from None


def _parse_spec(data: Mapping[str, Any], source: Path) -> Spec:
    top = _Table(data, source.name)
    defaults_table = top.get("profiles", dict, {})
    unknown = set(defaults_table) - set(PROFILE_NAMES)
    if unknown:
        raise SpecError(f"{source.name}.profiles.{sorted(unknown)[0]}: unknown profile (use smoke, quick, paper)")
    for name, table in defaults_table.items():
        if not isinstance(table, Mapping):
            raise SpecError(f"{source.name}.profiles.{name}: expected a table, found {type(table).__name__}")
    raw_benchmarks = top.get("benchmarks", list)
    if not raw_benchmarks:
        raise SpecError(f"{source.name}.benchmarks: empty (a spec reports at least one benchmark)")
    benchmarks = []
    for index, raw in enumerate(raw_benchmarks):
        label = raw.get("id", index) if isinstance(raw, Mapping) else index
        if not isinstance(raw, Mapping):
            raise SpecError(f"{source.name}.benchmarks[{index}]: expected a table")
        benchmarks.append(_parse_benchmark(_Table(raw, f"{source.name}.benchmarks[{label}]"), defaults_table))
    ids = [b.id for b in benchmarks]
    duplicated = {i for i in ids if ids.count(i) > 1}
    if duplicated:
        raise SpecError(f"{source.name}.benchmarks: duplicate id {sorted(duplicated)[0]!r}")
    implementation = top.get("implementation", str)
    if ":" not in implementation:
        raise top._fail("implementation", f"{implementation!r} is not of the form 'module:Class'")
    spec = Spec(
        key=top.get("key", str),
        title=top.get("title", str),
        authors=tuple(top.get("authors", list)),
        year=top.get("year", int),
        venue=top.get("venue", str),
        arxiv=top.get("arxiv", str, ""),
        implementation=implementation,
        benchmarks=tuple(benchmarks),
        source=source,
        notes=top.get("notes", str, ""),
    )
    top.reject_unread()
    if spec.key != source.stem:
        raise top._fail("key", f"{spec.key!r} differs from the file name {source.stem!r}")
    return spec


def load_spec_file(path: Path) -> Spec:
    """Read and validate one spec file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{Path(path).name}: not valid TOML: {error}") from None
    except OSError as error:
        raise SpecError(f"{path}: cannot be read: {error.strerror}") from None
    return parse_spec(data, Path(path))
