"""The one training and evaluation loop every reproduction runs through.

``run`` resolves a benchmark and profile, puts the split's class banks on the device, meta-trains
with the profile's optimiser and schedule (progress bar, periodic validation, checkpoints; with
``early_stopping`` the weights of the best validation point are the ones tested), evaluates
on the benchmark's frozen test episodes, judges the result against the paper and writes the result
JSON atomically. Ctrl-C, SIGTERM or ``--stop-after`` checkpoint the state at a step boundary (see
:mod:`metabench.checkpoint`, which owns the file, its lock and the signals) and ``--resume`` continues
from exactly there; a crash keeps the last periodic checkpoint; a result file exists only for a
finished run, under a name of its own.

A profile's ``steps_per_batch`` takes several optimiser steps on each sampled batch (a learned
optimizer's truncated-backpropagation segments, the reproduction carrying its optimizee between them);
the boundaries are then the batch boundaries, and an interrupt waits for the batch under way to end.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor

from metabench import allocator, checkpoint, provenance, results
from metabench import overrides as overrides_module
from metabench.budget import budget_of
from metabench.checkpoint import Checkpointer, remove_orphans, restore_rng, rng_state, write_new
from metabench.data import channels as dataset_channels
from metabench.data import load_parts
from metabench.episodes import EpisodeShape
from metabench.errors import InterruptedRun, MetabenchError, UnknownNameError, did_you_mean
from metabench.evaluate import evaluate, evaluate_components, evaluate_with
from metabench.registry_loader import get_spec, implementation
from metabench.reproduction import Reproduction, TaskInfo
from metabench.spec import Benchmark, Profile, Reported, Spec, minimum_test_episodes
from metabench.stats import Interval, Judgement, judge, judge_claim, mean_interval, worst
from metabench.tasks import Frozen, TaskSource

VALIDATION_SEED_OFFSET = 1


@dataclass
class RunRequest:
    """Everything a run needs; the CLI and the Python API both build one."""

    paper: str
    benchmark: str | None = None
    profile: str = "quick"
    seed: int = 0
    device: str = "auto"
    shots: int | None = None
    ways: int | None = None
    dataset: str | None = None
    variant: str | None = None
    test_episodes: int | None = None
    train_episodes: int | None = None
    #: ``--set`` changes to the profile (see :mod:`metabench.overrides`), already parsed
    settings: dict[str, Any] = field(default_factory=dict)
    data_dir: Path | None = None
    output: Path = Path("results")
    resume: bool = False
    fresh: bool = False
    stop_after: int | None = None
    download: bool = True
    progress: bool = True
    command: str = field(default_factory=provenance.command_line)
    #: ``--images FOLDER``: the benchmark's method and profile on the user's own classes
    images: Path | None = None
    #: called with every point of the learning curve as it is recorded (``--tracker``, or a caller's own)
    on_point: Callable[[dict[str, Any]], None] | None = None


def pick_device(name: str) -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MetabenchError(
            "--device cuda: no CUDA device is visible to this torch build",
            f"torch {torch.__version__}; use --device cpu or install a CUDA build of torch",
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MetabenchError("--device mps: Apple's MPS backend is not available here", "use --device cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise UnknownNameError(f"unknown device {name!r}", did_you_mean(name, ["auto", "cpu", "cuda", "mps"]))
    return torch.device(name)


def resolve_benchmark(
    spec: Spec,
    benchmark: str | None,
    *,
    shots: int | None,
    ways: int | None,
    dataset: str | None,
    variant: str | None = None,
) -> tuple[Benchmark, str]:
    """The benchmark a request names, or the paper's default for its shots/ways/dataset, and why.

    Without ``variant`` only a paper's main benchmarks are candidates; ``variant`` (e.g. MANN's
    ``lstm`` baseline) picks among the benchmarks that reproduce that row of the paper instead.
    """
    if benchmark is not None:
        chosen = spec.benchmark(benchmark)
        clashes = [
            f"--{n} {v}"
            for n, v, b in (
                ("shots", shots, chosen.shots),
                ("ways", ways, chosen.ways),
                ("dataset", dataset, chosen.dataset),
                ("variant", variant, chosen.variant),
            )
            if v is not None and v != b
        ]
        if clashes:
            raise MetabenchError(
                f"{', '.join(clashes)} contradicts benchmark {chosen.id!r}",
                "give either --benchmark or the filters, not both",
            )
        return chosen, f"benchmark {chosen.id} (as asked)"
    variants = sorted({b.variant for b in spec.benchmarks if b.variant})
    if variant is not None and variant not in variants:
        raise UnknownNameError(
            f"{spec.key} has no variant {variant!r}",
            did_you_mean(variant, variants) if variants else "this paper has no variants",
        )
    matching = [
        b
        for b in spec.benchmarks
        if (shots is None or b.shots == shots)
        and (ways is None or b.ways == ways)
        and (dataset is None or b.dataset == dataset)
        and b.variant == (variant or "")
    ]
    if not matching:
        offered = ", ".join(f"{b.id} ({b.ways}-way {b.shots}-shot {b.dataset})" for b in spec.benchmarks)
        asked = " ".join(
            f"--{n} {v}"
            for n, v in (("ways", ways), ("shots", shots), ("dataset", dataset), ("variant", variant))
            if v is not None
        )
        raise MetabenchError(f"{spec.key} has no benchmark matching {asked or 'the request'}", f"it has: {offered}")
    chosen = next((b for b in matching if b.default), None)
    if chosen is None:
        chosen = min(matching, key=lambda b: (b.ways, b.shots))
    why = "the paper's default" if chosen.default else "the smallest matching setting"
    setting = f"{chosen.ways}-way {chosen.shots}-shot" if chosen.shots else f"supervised, {chosen.ways} classes"
    return chosen, f"benchmark {chosen.id} ({setting} {chosen.dataset}; {why})"


class _Banks:
    """The split's parts on the device, loaded once per run."""

    def __init__(self, bench: Benchmark, request: RunRequest, device: torch.device) -> None:
        self.cpu = load_parts(
            bench.dataset,
            bench.split,
            bench.image_size,
            request.data_dir,
            download=request.download,
            progress=request.progress,
        )
        self.device = device
        self._on_device: dict[str, TaskSource] = {}

    def get(self, part: str, where: str) -> TaskSource:
        if part not in self.cpu:
            raise MetabenchError(f"{where}: split has no part {part!r}", did_you_mean(part, list(self.cpu)))
        if part not in self._on_device:
            self._on_device[part] = self.cpu[part].to(self.device)
        return self._on_device[part]


def _fingerprint(spec: Spec, bench: Benchmark, profile: Profile, seed: int) -> str:
    """What a checkpoint must have been trained with to be resumed by this request."""
    return checkpoint.fingerprint(
        {"paper": spec.key, "benchmark": bench.id, "profile": profile.hyperparameters(), "seed": seed}
    )


def _run_label(profile: Profile, overrides: dict[str, Any]) -> str:
    """The profile's name, or ``quick+set-1a2b3c4d`` for an experiment, in checkpoint and result names."""
    settings = overrides.get("set")
    return f"{profile.name}+set-{overrides_module.digest(settings)}" if settings else profile.name


def checkpoint_path(output: Path, paper: str, bench: str, profile: str, seed: int) -> Path:
    return Path(output) / results.CHECKPOINT_FOLDER / f"{paper}__{bench}__{profile}__seed{seed}.pt"


def _make_optimizer(model: Reproduction, profile: Profile) -> tuple[torch.optim.Optimizer, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer
    if profile.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=profile.lr)
    else:
        optimizer = torch.optim.SGD(params, lr=profile.lr)
    if profile.lr_schedule == "linear":
        total = profile.train_episodes
        # Reptile's annealing: step i (0-based) uses lr * (1 - i / total), reaching 0 at the end.
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: max(0.0, 1.0 - i / total))
    step = profile.lr_decay_every if profile.lr_decay_every > 0 else 10**12
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=profile.lr_decay_factor)


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def _log_line(bench: Benchmark, profile: Profile, point: dict[str, float]) -> str:
    """One plain line per validation point, for logs where no progress bar is drawn."""
    unit = "%" if bench.metric in ("accuracy", "error") else f" {bench.metric}"
    key = f"val_{bench.metric}"
    val = f"  val {point[key]:.3f}{unit}" if key in point else ""
    return (
        f"{bench.id} step {point['step']}/{profile.train_episodes}  loss {point['train_loss']:.4f}  "
        f"train {point[f'train_{bench.metric}']:.3f}{unit}{val}  {point['seconds']:.0f}s"
    )


@dataclass
class _TrainState:
    """What a checkpoint restores so that a resumed run trains and logs exactly as an uninterrupted one."""

    step: int = 0
    seconds: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)
    window_loss: float = 0.0
    window_accuracy: float = 0.0
    window_steps: int = 0
    best_step: int | None = None
    best_score: float | None = None


class EarlyStopping:
    """The best validation point of a run and a copy of the weights it had (``early_stopping = true``).

    A point replaces the best only when it is strictly better in the metric's direction, so of equal
    scores the earliest is kept. The copy lives on the CPU and goes into checkpoints with the run, so a
    resumed run restores the same weights as an uninterrupted one.
    """

    def __init__(self, direction: str) -> None:
        self.direction = direction
        self.step: int | None = None
        self.score: float | None = None
        self.weights: dict[str, Tensor] | None = None

    def consider(self, step: int, score: float, model: torch.nn.Module) -> bool:
        """Keep ``model``'s weights if ``score`` (at ``step``) beats the best so far; says whether it did."""
        better = (
            self.score is None
            or (self.direction == "lower" and score < self.score)
            or (self.direction == "higher" and score > self.score)
        )
        if better:
            self.step, self.score = step, score
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return better

    def restore(self, model: torch.nn.Module) -> None:
        """Load the kept weights into ``model`` (nothing to do before the first validation point)."""
        if self.weights is not None:
            model.load_state_dict(self.weights)


def _mark_validation(ckpt: Checkpointer, step: int, _batch_size: int) -> None:
    ckpt.mark("validation", step)


def validation_score(
    model: Reproduction,
    validation: tuple[Frozen, TaskSource],
    profile: Profile,
    bench: Benchmark,
    ckpt: Checkpointer,
    step: int,
) -> float:
    """The mean validation score at ``step`` (what early stopping and the curve record)."""
    episodes, bank = validation
    on_batch = functools.partial(_mark_validation, ckpt, step)
    return float(evaluate(model, episodes, bank, profile.eval_batch, metric=bench.metric, on_batch=on_batch).mean())


def _train(
    model: Reproduction,
    profile: Profile,
    bench: Benchmark,
    banks: _Banks,
    request: RunRequest,
    ckpt: Checkpointer,
    saved: dict[str, Any] | None,
    console: Console,
) -> _TrainState:
    """Meta-train ``model``, resuming from ``saved`` (a checkpoint payload) when given.

    Every step ends at a boundary where the run's whole state is consistent: the checkpoint is written
    there (periodically, at the end, and when a signal asked to stop), never from inside a step, so a
    step that was under way when the signal came is finished first and a resumed run repeats nothing.
    """
    sampler = banks.get(profile.train_part, f"{bench.id}.profiles.{profile.name}.train_part").sampler(
        EpisodeShape(profile.train_ways, profile.train_shots, profile.train_queries, bench.sequence),
        seed=request.seed,
    )
    validation: tuple[Frozen, TaskSource] | None = None
    if profile.val_part:
        val_bank = banks.get(profile.val_part, f"{bench.id}.profiles.{profile.name}.val_part")
        val_key = {
            "dataset": bench.dataset,
            "split": bench.split,
            "part": profile.val_part,
            "image_size": bench.image_size,
        }
        validation = (
            val_bank.freeze(
                EpisodeShape(bench.ways, bench.shots, bench.queries, bench.sequence),
                profile.val_episodes,
                bench.test_seed + VALIDATION_SEED_OFFSET,
                val_key,
            ),
            val_bank,
        )
    optimizer, scheduler = _make_optimizer(model, profile)
    state = _TrainState()
    best = EarlyStopping(bench.direction)
    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            sampler.restore(saved["sampler"])
            restore_rng(saved["rng"])
            state = _TrainState(**saved["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ckpt.unusable(error) from None
        best.step, best.score, best.weights = state.best_step, state.best_score, saved.get("best_model")
        console.print(f"Resuming from step {state.step} of {profile.train_episodes} ({ckpt.path})")

    def payload() -> dict[str, Any]:
        """The run's state at a step boundary, as tensors and plain types."""
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "sampler": sampler.state(),
            "rng": rng_state(),
            "state": dataclasses.asdict(state),
            "best_model": best.weights,
        }

    model.train()
    per_batch = profile.steps_per_batch
    stop_at = (
        profile.train_episodes
        if request.stop_after is None
        else min(profile.train_episodes, state.step + -(-request.stop_after // per_batch) * per_batch)
    )
    # With several steps per batch the boundaries are the batch boundaries (the reproduction's optimizee
    # state between a batch's steps is not in the checkpoint); a stop waits for the batch to end.
    with _progress(console, request.progress) as bar, ckpt.deferring_signals():
        task = bar.add_task(f"{bench.id} train", total=profile.train_episodes, completed=state.step, status="")
        started = time.perf_counter()

        def clock() -> None:
            nonlocal started
            state.seconds = state.seconds + time.perf_counter() - started
            started = time.perf_counter()

        while state.step < stop_at:
            if state.step % per_batch == 0:
                clock()
                ckpt.at_boundary(payload, state.step, profile.train_episodes)
                batch = sampler.sample(profile.meta_batch)
            out = model.meta_loss(batch)
            if not torch.isfinite(out.loss):
                raise MetabenchError(
                    f"training diverged at step {state.step}: loss is {out.loss.item()}",
                    "lower the profile's lr; the last checkpoint is kept",
                )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if profile.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.grad is not None], profile.clip_grad_norm
                )
            optimizer.step()
            scheduler.step()
            ckpt.mark("step", state.step + 1)
            state.step += 1
            state.window_loss += float(out.loss.detach())
            state.window_accuracy += float(out.accuracy)
            state.window_steps += 1
            elapsed = state.seconds + time.perf_counter() - started
            rate = state.step // per_batch * profile.meta_batch / max(elapsed, 1e-9)
            bar.update(
                task,
                completed=state.step,
                status=(
                    f"loss {state.window_loss / state.window_steps:.3f}  "
                    f"{bench.metric} {state.window_accuracy / state.window_steps:6.3g}  {rate:6.1f} ep/s"
                ),
            )
            if state.step % profile.val_every == 0 or state.step == profile.train_episodes:
                point = {
                    "step": state.step,
                    "episodes": state.step // per_batch * profile.meta_batch,
                    "seconds": round(elapsed, 3),
                    "train_loss": state.window_loss / state.window_steps,
                    f"train_{bench.metric}": state.window_accuracy / state.window_steps,
                }
                if validation is not None:
                    point[f"val_{bench.metric}"] = validation_score(model, validation, profile, bench, ckpt, state.step)
                    if profile.early_stopping and best.consider(state.step, point[f"val_{bench.metric}"], model):
                        state.best_step, state.best_score = best.step, best.score
                state.curve.append(point)
                if request.on_point is not None:
                    request.on_point(point)
                if not request.progress:
                    console.print(_log_line(bench, profile, point), highlight=False)
                state.window_loss, state.window_accuracy, state.window_steps = 0.0, 0.0, 0
            if state.step % profile.checkpoint_every == 0:
                clock()
                ckpt.save(payload(), state.step)
        clock()
        if ckpt.saved_step != state.step:
            ckpt.save(payload(), state.step)
        ckpt.at_boundary(payload, state.step, profile.train_episodes)
    if state.step < profile.train_episodes:
        raise InterruptedRun(
            f"stopped after step {state.step} of {profile.train_episodes} (--stop-after); "
            f"checkpoint saved to {ckpt.path}",
            "continue with the same command plus --resume",
        )
    if profile.early_stopping:
        best.restore(model)
        last = "the last step" if best.step == state.step else f"not of the last step {state.step}"
        console.print(
            f"Early stopping: testing the weights of step {best.step} "
            f"(validation {bench.metric} {best.score:.4g}), {last}"
        )
    return state


def _scored(scores: Tensor, summary: Interval, reported: Reported | None, judgement: Judgement) -> dict[str, Any]:
    """The per-episode scores, their summary, the reported number and the verdict, as a result stores them
    for a benchmark and for each component of a vector benchmark."""
    return {
        "scores": [round(float(s), 4) for s in scores],
        "summary": {"mean": summary.mean, "ci95": summary.half_width, "std": summary.std, "n": summary.n},
        "reported": None if reported is None else dict(reported.__dict__),
        "verdict": {
            "verdict": judgement.verdict,
            "difference": judgement.difference,
            "band": judgement.band,
            "rule": judgement.rule,
        },
    }


def _user_images(bench: Benchmark) -> dict[str, Any]:
    """``{"user_images": ...}`` for a run on the user's folder: whose data, its digest and class split."""
    from metabench.data import imagefolder

    if bench.dataset not in imagefolder.DATASET_OF_MODE.values():
        return {}
    folder = imagefolder.load(Path(bench.split), bench.image_size, imagefolder.mode_for(bench))
    return {"user_images": folder.record()}


def _summarised(scores: Tensor) -> dict[str, Any]:
    """Per-episode scores and their summary, without a verdict: a claim's competitor, or a metric reported
    beside the benchmark's own (``also``)."""
    summary = mean_interval(scores)
    return {
        "scores": [round(float(s), 4) for s in scores],
        "summary": {"mean": summary.mean, "ci95": summary.half_width, "std": summary.std, "n": summary.n},
    }


def run(request: RunRequest, console: Console | None = None) -> tuple[dict[str, Any], Path]:
    """Run one benchmark end to end; returns the result and the path it was written to."""
    allocator.tune_for_training()
    console = console or Console(stderr=True)
    spec = get_spec(request.paper)
    bench, why = resolve_benchmark(
        spec,
        request.benchmark,
        shots=request.shots,
        ways=request.ways,
        dataset=request.dataset,
        variant=request.variant,
    )
    if request.images is not None:
        from metabench.data import imagefolder

        bench = imagefolder.user_benchmark(bench, request.images)
        why += f", on your images in {bench.split} (no paper verdict)"
    profile = bench.profile(request.profile)
    overrides: dict[str, Any] = {}
    if request.train_episodes is not None:
        if request.train_episodes % profile.steps_per_batch:
            raise MetabenchError(
                f"--train-episodes {request.train_episodes} is not a multiple of the profile's steps_per_batch "
                f"({profile.steps_per_batch})",
                "training ends on a batch boundary; round it to a multiple",
            )
        overrides["train_episodes"] = request.train_episodes
    if request.test_episodes is not None:
        first_reported = bench.reported or next((c.reported for c in bench.components if c.reported), None)
        minimum = minimum_test_episodes(profile.name, first_reported)
        if request.test_episodes < minimum:
            raise MetabenchError(
                f"--episodes {request.test_episodes} is too few for the {profile.name} profile",
                f"use at least {minimum} (600; a paper run also the paper's own count when larger)",
            )
        overrides["test_episodes"] = request.test_episodes
    profile = replace(profile, **overrides)
    if request.settings:
        first_reported = bench.reported or next((c.reported for c in bench.components if c.reported), None)
        model_keys = [f.name for f in dataclasses.fields(implementation(spec).Hyperparameters)]
        profile = overrides_module.apply(profile, request.settings, first_reported, model_keys)
        overrides["set"] = dict(request.settings)
        console.print(f"Experiment, not the paper's profile: --set {overrides_module.label(request.settings)}")
    device = pick_device(request.device)
    if request.images is not None:
        imagefolder.check_fits(
            imagefolder.load(Path(bench.split), bench.image_size, imagefolder.mode_for(bench)), bench, profile
        )
    console.print(
        f"[bold]{spec.key}[/]: {why}; profile {profile.name} ({budget_of(bench, profile).label()} of the paper's "
        f"training), seed {request.seed}, device {device}"
    )

    checkpointer = Checkpointer(
        checkpoint_path(request.output, spec.key, bench.id, _run_label(profile, overrides), request.seed),
        _fingerprint(spec, bench, profile, request.seed),
    )
    # The lock comes before anything looks at the checkpoint, so that a live run's is never judged
    # "unfinished" or deleted by --fresh; signals are caught from here so that SIGTERM is handled too.
    with checkpointer, checkpointer.signals():
        try:
            return _run_locked(request, spec, bench, profile, overrides, device, checkpointer, console)
        except KeyboardInterrupt:
            raise checkpointer.interrupted(
                f"stopped at once; the last checkpoint written (if any) is kept at {checkpointer.path}",
                "continue with the same command plus --resume",
            ) from None


def _run_locked(
    request: RunRequest,
    spec: Spec,
    bench: Benchmark,
    profile: Profile,
    overrides: dict[str, Any],
    device: torch.device,
    ckpt: Checkpointer,
    console: Console,
) -> tuple[dict[str, Any], Path]:
    """Everything of ``run`` that needs the checkpoint's lock: resume, train, test, write the result."""
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
    stem = f"{bench.id}__{_run_label(profile, overrides)}__seed{request.seed}__"
    for leftover in remove_orphans(Path(request.output) / spec.key, stem):
        console.print(f"Removed {leftover}, left by a run killed while writing its result", highlight=False)

    wall_started = time.perf_counter()
    git, patch = provenance.code_state()  # the code that runs is the code at the start, whatever is edited meanwhile
    banks = _Banks(bench, request, device)
    test_bank = banks.get(bench.test_part, f"{bench.id}.test_part")
    shape = EpisodeShape(bench.ways, bench.shots, bench.queries, bench.sequence)
    test_key = {"dataset": bench.dataset, "split": bench.split, "part": bench.test_part, "image_size": bench.image_size}
    frozen = test_bank.freeze(shape, profile.test_episodes, bench.test_seed, test_key)

    torch.manual_seed(request.seed)
    cls = implementation(spec)
    task = TaskInfo(
        channels=dataset_channels(bench.dataset), image_size=bench.image_size, ways=bench.ways, shots=bench.shots
    )
    model = cls.build(
        profile.model, task, where=f"{spec.source.name}.benchmarks[{bench.id}].profiles.{profile.name}.model"
    ).to(device)
    if bench.claim is not None:
        offered = model.competitors()
        missing = [name for name in bench.claim.against if name not in offered]
        if missing:
            raise MetabenchError(
                f"{spec.source.name}: benchmark {bench.id!r} claims a comparison with {missing[0]!r}, "
                f"which {cls.__name__} cannot predict as",
                f"it offers: {', '.join(offered) or 'no competitors'}; fix the claim's 'against' list",
            )
    state = _train(model, profile, bench, banks, request, ckpt, saved, console)

    eval_started = time.perf_counter()
    with _progress(console, request.progress) as bar:
        task_id = bar.add_task(f"{bench.id} test", total=frozen.count, status=f"{frozen.count} frozen episodes")
        try:
            advance = lambda n: bar.advance(task_id, n)  # noqa: E731
            also: dict[str, Tensor] = {}
            if bench.is_vector:
                instances = tuple(c.instance for c in bench.components)
                scores, by_instance = evaluate_components(
                    model, frozen, test_bank, profile.eval_batch, bench.metric, instances, on_batch=advance
                )
            else:
                scores, also = evaluate_with(
                    model, frozen, test_bank, profile.eval_batch, bench.metric, bench.also, on_batch=advance
                )
            competitor_scores: dict[str, Tensor] = {}
            for name in bench.claim.against if bench.claim else ():
                bar.update(task_id, description=f"{bench.id} test: {name}", completed=0)
                competitor_scores[name] = evaluate(
                    model,
                    frozen,
                    test_bank,
                    profile.eval_batch,
                    on_batch=advance,
                    metric=bench.metric,
                    competitor=name,
                )
        except KeyboardInterrupt:
            raise ckpt.interrupted(
                f"interrupted during evaluation; training is checkpointed at {ckpt.path}",
                "continue with the same command plus --resume",
            ) from None
    eval_seconds = time.perf_counter() - eval_started
    summary = mean_interval(scores)
    judgement = judge(bench.reported, summary)
    components: list[dict[str, Any]] = []
    if bench.is_vector:
        judgements = []
        for column, component in enumerate(bench.components):
            part = mean_interval(by_instance[:, column])
            verdict = judge(component.reported, part)
            judgements.append(verdict)
            components.append(
                {
                    "name": component.name,
                    "instance": component.instance,
                    **_scored(by_instance[:, column], part, component.reported, verdict),
                    "floor": bench.floor_of(profile, component.name),
                }
            )
        judgement = worst(judgements, bench.direction)
    claim: dict[str, Any] = {}
    if bench.claim is not None:
        judgement, comparisons = judge_claim(bench.claim, scores, dict(competitor_scores), bench.direction)
        claim = {
            "competitors": {name: _summarised(values) for name, values in competitor_scores.items()},
            "claim": {
                **dataclasses.asdict(bench.claim),
                "against": list(bench.claim.against),  # JSON has no tuples: the result reads back as written
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

    created = provenance.now()
    learned = model.learned()
    if learned:
        console.print(f"Learned: {json.dumps(learned)}", highlight=False)
    path = _publish_weights(
        results.result_path(request.output, spec.key, bench.id, _run_label(profile, overrides), request.seed, created),
        {
            "paper": spec.key,
            "benchmark": bench.id,
            "model": profile.model,
            "task": task.__dict__,
            "state_dict": model.state_dict(),
        },
    )
    weights = path.with_suffix(".pt")
    # Figures a reproduction draws of its own predictions (the sinusoid fits), beside the result, in
    # evaluation mode as the scores were.
    was_training = model.training
    model.eval()
    try:
        figures = [f.name for f in model.figures(next(iter(frozen.batches(test_bank, profile.eval_batch))), path)]
    finally:
        model.train(was_training)
    result = {
        "schema_version": results.SCHEMA_VERSION,
        "paper": spec.key,
        "title": spec.title,
        "benchmark": bench.id,
        "profile": profile.name,
        "spec_file": f"registry/{spec.source.name}",
        "spec_sha256": hashlib.sha256(spec.source.read_bytes()).hexdigest(),
        "protocol": {
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
        },
        "hyperparameters": profile.hyperparameters(),
        "overrides": overrides,
        "budget": budget_of(bench, profile).as_dict(),
        "seed": request.seed,
        "test_episodes": {"count": frozen.count, "seed": bench.test_seed, "digest": frozen.digest},
        **_scored(scores, summary, bench.reported, judgement),
        "targets": {"chance": bench.chance, "floor": profile.floor, "min_above_chance": profile.min_above_chance},
        "curve": state.curve,
        "timing": {
            "train_seconds": round(state.seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "wall_seconds": round(time.perf_counter() - wall_started, 3),
            "train_steps": state.step,
            "train_episodes_per_second": (state.step // profile.steps_per_batch)
            * profile.meta_batch
            / max(state.seconds, 1e-9),
            "eval_episodes_per_second": frozen.count / max(eval_seconds, 1e-9),
        },
        **({"components": components} if components else {}),
        **_user_images(bench),
        # Metrics scored beside the benchmark's own from the same predictions (the MSE of a CNP's mean).
        **({"also": {name: _summarised(values) for name, values in also.items()}} if also else {}),
        **claim,
        **(
            {
                "early_stopping": {
                    "kept_step": state.best_step,
                    f"val_{bench.metric}": state.best_score,
                    "last_step": state.step,
                }
            }
            if profile.early_stopping
            else {}
        ),
        "environment": provenance.machine(device),
        "git": provenance.keep_patch(git, patch, path),
        "command": request.command,
        "created": created,
        "weights": weights.name,
        "figures": figures,
        **({"learned": learned} if learned else {}),
    }
    results.write_atomic(result, path)
    ckpt.discard()
    return result, path


def _publish_weights(wanted: Path, weights: dict[str, Any]) -> Path:
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
