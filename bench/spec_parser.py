"""Parsing a spec's TOML into :mod:`metabench.spec`'s dataclasses, strictly.

Nothing is silently defaulted: a key that a profile needs and nobody set is an error naming the file and
the key, and so is a key that nothing reads (a typo would otherwise be ignored). A value of a shape none
of the checks foresaw still becomes a :class:`~metabench.errors.SpecError` naming the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from metabench.errors import SpecError
from metabench.metrics import METRICS, metric_of
from metabench.spec import (
    PROFILE_NAMES,
    Benchmark,
    Claim,
    ClaimConfidence,
    ClaimExpectation,
    Component,
    Confidence,
    Direction,
    KnownShortfall,
    LrSchedule,
    PaperEstimate,
    PlusMinusKind,
    Profile,
    Reported,
    Spec,
    component_name,
    minimum_test_episodes,
)
from metabench.spec_table import SpecTable as _Table


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


def _parse_estimate(table: _Table) -> PaperEstimate:
    estimate = PaperEstimate(hours=table.get("hours", float), measured=table.get("measured", str))
    table.reject_unread()
    if estimate.hours <= 0:
        raise table._fail("hours", f"must be positive, found {estimate.hours}")
    return estimate


def _parse_known_shortfalls(table: _Table, benchmark_id: str) -> tuple[KnownShortfall, ...]:
    entries = table.get("known_shortfalls", list, [])
    known = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise table._fail("known_shortfalls", 'each entry is { result = "FILE.json", finding = "docs/..." }')
        sub = _Table(entry, f"{table.where}.known_shortfalls[{index}]")
        shortfall = KnownShortfall(result=sub.get("result", str), finding=sub.get("finding", str))
        sub.reject_unread()
        prefix = f"{benchmark_id}__paper__"
        if not shortfall.result.startswith(prefix) or not shortfall.result.endswith(".json") or "/" in shortfall.result:
            raise sub._fail(
                "result",
                f"names a paper result of this benchmark by its file name ({prefix}seed0__STAMP.json), "
                f"found {shortfall.result!r}",
            )
        if not shortfall.finding.strip():
            raise sub._fail("finding", "says where the shortfall is diagnosed (a docs page and anchor)")
        known.append(shortfall)
    return tuple(known)


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
        optimizer=table.choice("optimizer", ("adam", "sgd", "rmsprop")),
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
        momentum=table.get("momentum", float, 0.0),
        early_stopping=table.get("early_stopping", bool, False),
        learning_part=table.get("learning_part", str, None),
        model=dict(model),
    )
    table.reject_unread()
    if profile.learning_part is not None and name != "smoke":
        raise table._fail("learning_part", "only a smoke profile names the part its learning check runs on")
    if profile.early_stopping and not profile.val_part:
        raise table._fail("early_stopping", "needs a val_part to choose the best model on")
    if not 0 <= profile.momentum < 1 or (profile.momentum and profile.optimizer == "adam"):
        raise table._fail("momentum", f"{profile.momentum} needs 0 <= momentum < 1 and the sgd or rmsprop optimizer")
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


def _parse_profiles(
    table: _Table, defaults: Mapping[str, Mapping[str, Any]], first_reported: Reported | None, components: int
) -> dict[str, Profile]:
    """A benchmark's smoke, quick and paper profiles: the spec-wide defaults overridden key by key."""
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
            name, _Table(merged, f"{table.where}.profiles.{name}"), first_reported, components
        )
    return profiles


def _check_benchmark(table: _Table, bench: Benchmark, instances: list[int]) -> None:
    """What no single key can be refused for: combinations of metric, shape, instances and baseline."""
    info = metric_of(bench.metric)
    allowed = info.also
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
    if info.components == "context" and max(instances) > bench.shots:
        raise table._fail(
            "instances", f"{max(instances)} context points cannot be given: a task has only shots = {bench.shots}"
        )
    classification = info.classification
    if classification and bench.ways < 2:
        raise table._fail("ways", "an episode needs at least 2 ways")
    if classification and bench.baseline is not None:
        raise table._fail("chance", "is 100 / ways for accuracy; state it only for a regression metric")
    if info.direction_required and bench.direction != info.direction:
        article = "an" if bench.metric[0] in "aeiou" else "a"
        fix = f'set direction = "{info.direction}"'
        raise table._fail("direction", f"{article} {bench.metric} is better when {info.direction}: {fix}")
    if not classification and bench.baseline is None:
        raise table._fail("chance", f"missing: a {bench.metric} benchmark states the score of a trivial predictor")


def _parse_benchmark(table: _Table, defaults: Mapping[str, Mapping[str, Any]]) -> Benchmark:
    metric = table.choice("metric", tuple(METRICS))
    vector = metric_of(metric).vector
    instances = table.get("instances", list, [])
    if vector:
        if not instances or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in instances):
            raise table._fail("instances", f"missing: metric {metric!r} lists the instances it reports, e.g. [1, 2, 5]")
        if metric_of(metric).needs_sequence and not table.get("sequence", bool, False):
            raise table._fail("sequence", f"metric {metric!r} needs sequence episodes: set sequence = true")
    elif instances:
        vectors = [name for name, info in METRICS.items() if info.vector]
        raise table._fail("instances", f"only vector metrics ({', '.join(vectors)}) list instances")
    reported_table = table.get("reported", dict, None)
    claim = _parse_claim(table.sub("claim")) if table.get("claim", dict, None) is not None else None
    if claim is not None and reported_table:
        raise table._fail("claim", "a benchmark states either a reported number or a claim, not both")
    reported: Reported | None = None
    components: tuple[Component, ...] = ()
    if reported_table and vector:
        components = _parse_components(_Table(reported_table, f"{table.where}.reported"), instances, metric)
        reported = None
    elif reported_table:
        reported = _parse_reported(_Table(reported_table, f"{table.where}.reported"))
    if vector and not components:
        components = tuple(Component(component_name(metric, k), k, None) for k in instances)
    first_reported = reported or (components[0].reported if components else None)
    profiles = _parse_profiles(table, defaults, first_reported, len(components))
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
        paper_estimate=_parse_estimate(table.sub("paper_estimate")) if "paper_estimate" in table.data else None,
        known_shortfalls=_parse_known_shortfalls(table, table.get("id", str)),
    )
    table.reject_unread()
    _check_benchmark(table, bench, instances)
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
