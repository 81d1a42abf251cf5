"""The write stage: one result JSON (and its weights and figures) per scored benchmark, never over another.

A result is published weights first, JSON last, both created exclusively: a name is one run's alone, and
weights without their JSON are the leftovers of a killed write (see
:func:`metabench.checkpoint.remove_orphans`).
"""

from __future__ import annotations

import glob
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metabench import provenance, results
from metabench.budget import budget_of
from metabench.checkpoint import write_new
from metabench.errors import MetabenchError
from metabench.kinds import Judged, scored
from metabench.plan import Plan, RunRequest, Target
from metabench.reproduction import Reproduction
from metabench.spec import Benchmark, Profile
from metabench.tasks import Frozen, TaskSource
from metabench.training import TrainState


@dataclass(frozen=True)
class Scored:
    """One benchmark's test, ready to be written: its model, episodes, verdict and how long it took."""

    target: Target
    model: Reproduction
    frozen: Frozen
    bank: TaskSource
    scores: Tensor
    judged: Judged
    eval_seconds: float


def publish_weights(wanted: Path, weights: dict[str, Any]) -> Path:
    """Write the weights under the first free result name from ``wanted`` (``STEM.json``, ``STEM-2.json``, …)
    and return that result path.

    The weights are created exclusively, so the name is this run's alone: two runs finishing in the same
    second get two results. The JSON is written last and exclusively too; weights without it are the
    leftovers of a killed write, which ``remove_orphans`` clears.
    """
    for attempt in range(1, 1000):
        path = wanted if attempt == 1 else wanted.with_name(f"{wanted.stem}-{attempt}.json")
        if path.exists():
            continue
        try:
            write_new(path.with_suffix(".pt"), lambda temporary: torch.save(weights, temporary))
        except FileExistsError:
            continue
        return path
    raise MetabenchError(f"no free result name beside {wanted}", "move old results out of that folder")


def _figures(test: Scored, path: Path) -> list[str]:
    """Figures a reproduction draws of its own predictions (the sinusoid fits), beside the result, in
    evaluation mode as the scores were."""
    model, profile = test.model, test.target.profile
    was_training = model.training
    model.eval()
    try:
        return [f.name for f in model.figures(next(iter(test.frozen.batches(test.bank, profile.eval_batch))), path)]
    finally:
        model.train(was_training)


def _protocol(test: Scored) -> dict[str, Any]:
    bench = test.target.bench
    return {
        "dataset": bench.dataset,
        "split": bench.split,
        "image_size": bench.image_size,
        "ways": bench.ways,
        "shots": bench.shots,
        "queries": bench.queries,
        "metric": bench.metric,
        "direction": bench.direction,
        "transductive": bench.transductive,
        "test_part": bench.test_part,
        "sequence": bench.sequence,
        "variant": bench.variant,
    }


def _timing(test: Scored, state: TrainState, wall_seconds: float) -> dict[str, Any]:
    profile = test.target.profile
    return {
        "train_seconds": round(state.seconds, 3),
        "eval_seconds": round(test.eval_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "train_steps": state.step,
        "train_episodes_per_second": (state.step // profile.steps_per_batch)
        * profile.meta_batch
        / max(state.seconds, 1e-9),
        "eval_episodes_per_second": test.frozen.count / max(test.eval_seconds, 1e-9),
    }


def _early_stopping(test: Scored, state: TrainState) -> dict[str, Any]:
    if not test.target.profile.early_stopping:
        return {}
    metric = test.target.bench.metric
    return {
        "early_stopping": {"kept_step": state.best_step, f"val_{metric}": state.best_score, "last_step": state.step}
    }


@dataclass(frozen=True)
class Provenance:
    """What every result of one run records alike: the code, the command, the start of the run."""

    git: dict[str, Any]
    patch: bytes
    wall_started: float


def result_of(
    plan: Plan, request: RunRequest, test: Scored, state: TrainState, origin: Provenance, created: str, path: Path
) -> dict[str, Any]:
    """The result JSON of one scored benchmark (see :mod:`metabench.results` for the schema)."""
    bench, profile, spec, judged = test.target.bench, test.target.profile, plan.spec, test.judged
    learned = test.model.learned()
    shared = {"trained_with": plan.bench.id} if bench.id != plan.bench.id else {}
    return {
        "schema_version": results.SCHEMA_VERSION,
        "paper": spec.key,
        "title": spec.title,
        "benchmark": bench.id,
        "profile": profile.name,
        "spec_file": f"registry/{spec.source.name}",
        "spec_sha256": hashlib.sha256(spec.source.read_bytes()).hexdigest(),
        "protocol": _protocol(test),
        "hyperparameters": profile.hyperparameters(),
        "overrides": plan.overrides,
        "budget": budget_of(bench, profile).as_dict(),
        "seed": request.seed,
        "test_episodes": {"count": test.frozen.count, "seed": bench.test_seed, "digest": test.frozen.digest},
        **scored(test.scores, judged.summary, bench.reported, judged.judgement),
        "targets": targets_of(bench, profile),
        "curve": state.curve,
        "timing": _timing(test, state, time.perf_counter() - origin.wall_started),
        **judged.fields,
        **_early_stopping(test, state),
        **shared,
        "environment": provenance.machine(plan.device),
        "git": provenance.keep_patch(origin.git, origin.patch, path),
        "command": request.command,
        "created": created,
        "weights": path.with_suffix(".pt").name,
        "figures": _figures(test, path),
        **({"learned": learned} if learned else {}),
        **_user_images(bench),
    }


def targets_of(bench: Benchmark, profile: Profile) -> dict[str, Any]:
    """What ``check`` holds the result to, as JSON types: a vector benchmark's floors (a tuple in the
    spec, one per instance) are stored as the list the result schema and the file round trip give."""
    floor = list(profile.floor) if isinstance(profile.floor, tuple) else profile.floor
    return {"chance": bench.chance, "floor": floor, "min_above_chance": profile.min_above_chance}


def _user_images(bench: Benchmark) -> dict[str, Any]:
    """``{"user_images": ...}`` for a run on the user's folder: whose data, its digest and class split."""
    from metabench.data import imagefolder

    if bench.dataset not in imagefolder.DATASET_OF_MODE.values():
        return {}
    folder = imagefolder.load(Path(bench.split), bench.image_size, imagefolder.mode_for(bench))
    return {"user_images": folder.record()}


def write(
    plan: Plan, request: RunRequest, test: Scored, state: TrainState, origin: Provenance
) -> tuple[dict[str, Any], Path]:
    """Publish one scored benchmark's weights, figures and result JSON; returns the result and its path."""
    bench, spec = test.target.bench, plan.spec
    created = provenance.now()
    path = publish_weights(
        results.result_path(request.output, spec.key, bench.id, plan.label, request.seed, created),
        {
            "paper": spec.key,
            "benchmark": bench.id,
            "model": test.target.profile.model,
            "task": test.model.task.__dict__,
            "state_dict": test.model.state_dict(),
        },
    )
    try:
        result = result_of(plan, request, test, state, origin, created, path)
        results.write_atomic(result, path)
    except BaseException:
        # the weights and any figure were published first under this run's own stem (its weights were
        # created exclusively); without their result JSON they would be half a result
        for leftover in path.parent.glob(f"{glob.escape(path.stem)}.*"):
            leftover.unlink(missing_ok=True)
        raise
    return result, path
