"""The one training and evaluation path every reproduction runs through, in stages a reader can name.

``run`` goes **plan** (:mod:`metabench.plan`: spec, benchmark, profile with the request's overrides,
device, and the other benchmarks the same training serves), **data** (:mod:`metabench.banks`: the
split's parts on the device, each benchmark's frozen test episodes), **model** (built and seeded),
**train** (:mod:`metabench.training`, checkpointed at step boundaries through a
:class:`~metabench.checkpoint.Checkpointer`, with validation and early stopping), **score** and
**judge** (:mod:`metabench.kinds`, one strategy per kind of benchmark) and **write**
(:mod:`metabench.writing`, one result per scored benchmark).

Ctrl-C, SIGTERM or ``--stop-after`` checkpoint the state at a step boundary (see
:mod:`metabench.checkpoint`, which owns the file, its lock and the signals) and ``--resume`` continues
from exactly there; a crash keeps the last periodic checkpoint; a result file exists only for a
finished run, under a name of its own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from metabench import allocator, provenance, training
from metabench.banks import Banks
from metabench.budget import budget_of
from metabench.checkpoint import Checkpointer, remove_orphans
from metabench.errors import MetabenchError
from metabench.kinds import kind_of
from metabench.plan import (
    Plan,
    RunRequest,
    Target,
    build_model,
    checkpoint_path,
    make_plan,
    pick_device,
    resolve_benchmark,
)
from metabench.registry_loader import get_spec
from metabench.reproduction import Reproduction
from metabench.tasks import Frozen, TaskSource
from metabench.training import EarlyStopping, make_optimizer, progress_bar, validation_score
from metabench.writing import Provenance, Scored, publish_weights, write

__all__ = [
    "EarlyStopping",
    "RunRequest",
    "checkpoint_path",
    "make_optimizer",
    "pick_device",
    "publish_weights",
    "resolve_benchmark",
    "run",
    "run_all",
    "validation_score",
]

Outcome = tuple[dict[str, Any], Path]


def run(request: RunRequest, console: Console | None = None) -> Outcome:
    """Run one benchmark end to end; returns its result and the path it was written to (the results of
    other benchmarks its training served are written too: see :func:`run_all`)."""
    return run_all(request, console)[0]


def run_all(request: RunRequest, console: Console | None = None) -> list[Outcome]:
    """Run the asked benchmark and score every benchmark its training serves; the asked one comes first."""
    allocator.tune_for_training()
    console = console or Console(stderr=True)
    plan = make_plan(request, get_spec(request.paper), console)
    announce(plan, request, console)
    checkpointer = Checkpointer(
        checkpoint_path(request.output, plan.spec.key, plan.bench.id, plan.label, request.seed),
        plan.fingerprint(request.seed),
    )
    # The lock comes before anything looks at the checkpoint, so that a live run's is never judged
    # "unfinished" or deleted by --fresh; signals are caught from here so that SIGTERM is handled too.
    with checkpointer, checkpointer.signals():
        try:
            return _run_locked(request, plan, checkpointer, console)
        except KeyboardInterrupt:
            raise checkpointer.interrupted(
                f"stopped at once; the last checkpoint written (if any) is kept at {checkpointer.path}",
                "continue with the same command plus --resume",
            ) from None


def announce(plan: Plan, request: RunRequest, console: Console) -> None:
    """Say what the run will do before it does it: the benchmark, budget, device and every benchmark scored."""
    console.print(
        f"[bold]{plan.spec.key}[/]: {plan.why}; profile {plan.profile.name} "
        f"({budget_of(plan.bench, plan.profile).label()} of the paper's training), seed {request.seed}, "
        f"device {plan.device}"
    )
    estimate = plan.bench.paper_estimate
    if plan.profile.name == "paper" and estimate is not None:
        console.print(f"Expect about {estimate.hours:g} h on a machine like the one in the spec ({estimate.measured})")
    if len(plan.targets) > 1:
        others = ", ".join(t.bench.id for t in plan.targets[1:])
        console.print(
            f"One training serves {len(plan.targets)} benchmarks: {plan.bench.id} and {others} differ only in "
            "how they are tested, so each is scored on its own frozen episodes and gets its own result "
            "(--only-this-benchmark scores the asked one alone)",
            highlight=False,
        )


def _resume(request: RunRequest, plan: Plan, ckpt: Checkpointer, console: Console) -> dict[str, Any] | None:
    """The checkpoint payload to continue from, if ``--resume``; clears what killed runs left behind."""
    if ckpt.exists() and not (request.resume or request.fresh):
        raise MetabenchError(
            f"an unfinished run of these settings left a checkpoint at {ckpt.path}",
            "add --resume to continue it, or --fresh to start over",
        )
    if request.fresh:
        ckpt.discard()
    saved: dict[str, Any] | None = None
    if request.resume:
        if ckpt.exists():
            saved = ckpt.load()  # before any data loads: a bad checkpoint is refused at once
        else:
            console.print(f"No checkpoint at {ckpt.path}; starting from step 0")
    for target in plan.targets:
        stem = f"{target.bench.id}__{plan.label}__seed{request.seed}__"
        for leftover in remove_orphans(Path(request.output) / plan.spec.key, stem):
            console.print(f"Removed {leftover}, left by a run killed while writing its result", highlight=False)
    return saved


def _check_competitors(plan: Plan, model: Reproduction) -> None:
    """A claim names competitors the model must be able to predict as; refuse before training if not."""
    for target in plan.targets:
        claim = target.bench.claim
        missing = [name for name in claim.against if name not in model.competitors()] if claim else []
        if missing:
            raise MetabenchError(
                f"{plan.spec.source.name}: benchmark {target.bench.id!r} claims a comparison with {missing[0]!r}, "
                f"which {type(model).__name__} cannot predict as",
                f"it offers: {', '.join(model.competitors()) or 'no competitors'}; fix the claim's 'against' list",
            )


def _run_locked(request: RunRequest, plan: Plan, ckpt: Checkpointer, console: Console) -> list[Outcome]:
    """Everything of ``run`` that needs the checkpoint's lock: resume, train, test, write the results."""
    saved = _resume(request, plan, ckpt, console)
    wall_started = time.perf_counter()
    git, patch = provenance.code_state()  # the code that runs is the code at the start, whatever is edited meanwhile
    origin = Provenance(git, patch, wall_started)
    banks = Banks(plan.bench, request.data_dir, plan.device, download=request.download, progress=request.progress)
    episodes = [banks.test_episodes(t.bench, t.profile) for t in plan.targets]

    torch.manual_seed(request.seed)
    model = build_model(plan.spec, plan.targets[0]).to(plan.device)
    _check_competitors(plan, model)
    trainer = training.start(model, plan.profile, plan.bench, banks, request.seed, ckpt, saved, console)
    trainer.on_point = request.on_point
    state = training.train(trainer, request.stop_after, request.progress)

    outcomes = []
    for target, (frozen, bank) in zip(plan.targets, episodes, strict=True):
        tested = model if target is plan.targets[0] else _served(plan, target, model)
        test = _score(target, tested, frozen, bank, ckpt, console, request.progress)
        learned = tested.learned()
        if learned:
            console.print(f"Learned: {json.dumps(learned)}", highlight=False)
        outcomes.append(write(plan, request, test, state, origin))
    ckpt.discard()
    return outcomes


def _served(plan: Plan, target: Target, trained: Reproduction) -> Reproduction:
    """A model built for ``target``'s test shape holding the trained weights (the plan checked they fit)."""
    model = build_model(plan.spec, target).to(plan.device)
    model.load_state_dict(trained.state_dict())
    model.train(trained.training)
    return model


def _score(
    target: Target,
    model: Reproduction,
    frozen: Frozen,
    bank: TaskSource,
    ckpt: Checkpointer,
    console: Console,
    progress: bool,
) -> Scored:
    """Score and judge ``model`` on ``target``'s frozen test episodes, as its kind of benchmark does."""
    bench, kind = target.bench, kind_of(target.bench)
    started = time.perf_counter()
    with progress_bar(console, progress) as bar:
        task = bar.add_task(f"{bench.id} test", total=frozen.count, status=f"{frozen.count} frozen episodes")

        def advance(n: int) -> None:
            bar.advance(task, n)

        def relabel(name: str) -> None:
            bar.update(task, description=f"{bench.id} test: {name}", completed=0)

        try:
            evaluation = kind.evaluate(model, frozen, bank, target.profile.eval_batch, advance, relabel)
        except KeyboardInterrupt:
            raise ckpt.interrupted(
                f"interrupted during evaluation; training is checkpointed at {ckpt.path}",
                "continue with the same command plus --resume",
            ) from None
    seconds = time.perf_counter() - started
    judged = kind.judge(target.profile, evaluation)
    return Scored(target, model, frozen, bank, evaluation.scores, judged, seconds)
