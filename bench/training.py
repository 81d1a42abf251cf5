"""The train stage: meta-train a model under a profile, with validation, checkpoints and early stopping.

Every step ends at a boundary where the run's whole state is consistent: the checkpoint is written
there (periodically, at the end, and when a signal asked to stop), never from inside a step, so a step
that was under way when the signal came is finished first and a resumed run repeats nothing. The
:class:`~metabench.checkpoint.Checkpointer` owns the file, its lock and the signals; this module owns
what goes into the payload and when.

A profile's ``steps_per_batch`` takes several optimiser steps on each sampled batch (a learned
optimizer's truncated-backpropagation segments); the boundaries are then the batch boundaries, and an
interrupt waits for the batch under way to end. The reproduction is told: ``start_batch(batch, steps)``
when a batch is sampled, then ``meta_loss(batch)`` once per step, and ``weights_changed()`` after every
optimiser step (see :class:`~metabench.reproduction.Reproduction`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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

from metabench.banks import Banks
from metabench.checkpoint import Checkpointer, restore_rng, rng_state
from metabench.episodes import EpisodeShape
from metabench.errors import InterruptedRun, MetabenchError
from metabench.evaluate import evaluate
from metabench.metrics import metric_of
from metabench.reproduction import Reproduction
from metabench.spec import Benchmark, Profile
from metabench.tasks import Frozen, Sampler, TaskSource

VALIDATION_SEED_OFFSET = 1


def progress_bar(console: Console, enabled: bool) -> Progress:
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


def make_optimizer(model: Reproduction, profile: Profile) -> tuple[torch.optim.Optimizer, Any]:
    """The profile's optimiser over the model's trainable parameters, and its learning-rate schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer
    if profile.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=profile.lr)
    elif profile.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(params, lr=profile.lr, momentum=profile.momentum)
    else:
        optimizer = torch.optim.SGD(params, lr=profile.lr, momentum=profile.momentum)
    if profile.lr_schedule == "linear":
        total = profile.train_episodes
        # Reptile's annealing: step i (0-based) uses lr * (1 - i / total), reaching 0 at the end.
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: max(0.0, 1.0 - i / total))
    step = profile.lr_decay_every if profile.lr_decay_every > 0 else 10**12
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=profile.lr_decay_factor)


def log_line(bench: Benchmark, profile: Profile, point: dict[str, float]) -> str:
    """One plain line per validation point, for logs where no progress bar is drawn."""
    unit = metric_of(bench.metric).log_unit
    key = f"val_{bench.metric}"
    val = f"  val {point[key]:.3f}{unit}" if key in point else ""
    return (
        f"{bench.id} step {point['step']}/{profile.train_episodes}  loss {point['train_loss']:.4f}  "
        f"train {point[f'train_{bench.metric}']:.3f}{unit}{val}  {point['seconds']:.0f}s"
    )


@dataclass
class TrainState:
    """What a checkpoint restores so that a resumed run trains and logs exactly as an uninterrupted one.

    ``window_score`` sums the training score (accuracy, MSE or loss: the benchmark's metric) of the steps
    since the last curve point.
    """

    step: int = 0
    seconds: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)
    window_loss: float = 0.0
    window_score: float = 0.0
    window_steps: int = 0
    best_step: int | None = None
    best_score: float | None = None

    @classmethod
    def restored(cls, saved: dict[str, Any]) -> TrainState:
        """From a checkpoint's ``state``; checkpoints before the rename stored ``window_accuracy``."""
        saved = dict(saved)
        if "window_accuracy" in saved:
            saved["window_score"] = saved.pop("window_accuracy")
        return cls(**saved)


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


def validation_episodes(bench: Benchmark, profile: Profile, banks: Banks) -> tuple[Frozen, TaskSource] | None:
    """The frozen validation episodes (at the benchmark's test shape) and their bank, if the profile validates."""
    if not profile.val_part:
        return None
    bank = banks.get(profile.val_part, f"{bench.id}.profiles.{profile.name}.val_part")
    key = {"dataset": bench.dataset, "split": bench.split, "part": profile.val_part, "image_size": bench.image_size}
    shape = EpisodeShape(bench.ways, bench.shots, bench.queries, bench.sequence)
    return bank.freeze(shape, profile.val_episodes, bench.test_seed + VALIDATION_SEED_OFFSET, key), bank


@dataclass
class Trainer:
    """One run's training: the model, its optimiser and schedule, the sampler, the state a checkpoint
    restores, and the places (checkpointer, console) it reports to."""

    model: Reproduction
    profile: Profile
    bench: Benchmark
    sampler: Sampler
    validation: tuple[Frozen, TaskSource] | None
    ckpt: Checkpointer
    console: Console
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: TrainState = field(default_factory=TrainState)
    #: told of every curve point as it is recorded (``--tracker``, or a caller's own)
    on_point: Callable[[dict[str, Any]], None] | None = None
    best: EarlyStopping = field(init=False)

    def __post_init__(self) -> None:
        self.best = EarlyStopping(self.bench.direction)

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint payload (see :meth:`payload`); a payload that does not fit is damaged."""
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            self.sampler.restore(saved["sampler"])
            restore_rng(saved["rng"])
            self.state = TrainState.restored(saved["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise self.ckpt.unusable(error) from None
        self.best.step, self.best.score = self.state.best_step, self.state.best_score
        self.best.weights = saved.get("best_model")
        self.console.print(f"Resuming from step {self.state.step} of {self.profile.train_episodes} ({self.ckpt.path})")

    def payload(self) -> dict[str, Any]:
        """The run's state at a step boundary, as tensors and plain types."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state(),
            "rng": rng_state(),
            "state": dataclasses.asdict(self.state),
            "best_model": self.best.weights,
        }

    def next_batch(self) -> Any:
        """A freshly sampled batch, announced to the reproduction with the steps it will take on it."""
        batch = self.sampler.sample(self.profile.meta_batch)
        self.model.start_batch(batch, self.profile.steps_per_batch)
        return batch

    def step(self, batch: Any) -> None:
        """One optimiser step on ``batch``; a non-finite loss stops the run (the last checkpoint is kept)."""
        out = self.model.meta_loss(batch)
        if not torch.isfinite(out.loss):
            raise MetabenchError(
                f"training diverged at step {self.state.step}: loss is {out.loss.item()}",
                "lower the profile's lr; the last checkpoint is kept",
            )
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.profile.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.grad is not None], self.profile.clip_grad_norm
            )
        self.optimizer.step()
        self.model.weights_changed()
        self.scheduler.step()
        self.ckpt.mark("step", self.state.step + 1)
        self.state.step += 1
        self.state.window_loss += float(out.loss.detach())
        self.state.window_score += float(out.score)
        self.state.window_steps += 1

    def status(self, elapsed: float) -> str:
        """The progress bar's running loss, training score and speed."""
        state, rate = self.state, self.episodes() / max(elapsed, 1e-9)
        return (
            f"loss {state.window_loss / state.window_steps:.3f}  "
            f"{self.bench.metric} {state.window_score / state.window_steps:6.3g}  {rate:6.1f} ep/s"
        )

    def episodes(self) -> int:
        """Training episodes (tasks) processed so far."""
        return self.state.step // self.profile.steps_per_batch * self.profile.meta_batch

    def curve_point(self, elapsed: float, log: bool) -> None:
        """Record a point of the learning curve, validating (and keeping the best weights) if asked."""
        state, metric = self.state, self.bench.metric
        point: dict[str, float] = {
            "step": state.step,
            "episodes": self.episodes(),
            "seconds": round(elapsed, 3),
            "train_loss": state.window_loss / state.window_steps,
            f"train_{metric}": state.window_score / state.window_steps,
        }
        if self.validation is not None:
            point[f"val_{metric}"] = validation_score(
                self.model, self.validation, self.profile, self.bench, self.ckpt, state.step
            )
            if self.profile.early_stopping and self.best.consider(state.step, point[f"val_{metric}"], self.model):
                state.best_step, state.best_score = self.best.step, self.best.score
        state.curve.append(point)
        if self.on_point is not None:
            self.on_point(point)
        if log:
            self.console.print(log_line(self.bench, self.profile, point), highlight=False)
        state.window_loss, state.window_score, state.window_steps = 0.0, 0.0, 0


def start(
    model: Reproduction,
    profile: Profile,
    bench: Benchmark,
    banks: Banks,
    seed: int,
    ckpt: Checkpointer,
    saved: dict[str, Any] | None,
    console: Console,
) -> Trainer:
    """A :class:`Trainer` at step 0, or where the checkpoint payload ``saved`` left off."""
    sampler = banks.get(profile.train_part, f"{bench.id}.profiles.{profile.name}.train_part").sampler(
        EpisodeShape(profile.train_ways, profile.train_shots, profile.train_queries, bench.sequence), seed=seed
    )
    validation = validation_episodes(bench, profile, banks)
    optimizer, scheduler = make_optimizer(model, profile)
    trainer = Trainer(model, profile, bench, sampler, validation, ckpt, console, optimizer, scheduler)
    if saved is not None:
        trainer.restore(saved)
    return trainer


def train(trainer: Trainer, stop_after: int | None, progress: bool) -> TrainState:
    """Meta-train until the profile's last step (or ``stop_after`` more steps, rounded up to a batch),
    checkpointing at the boundaries; the early-stopping weights, if kept, are loaded at the end."""
    state, profile, ckpt = trainer.state, trainer.profile, trainer.ckpt
    per_batch, total = profile.steps_per_batch, profile.train_episodes
    stop_at = total if stop_after is None else min(total, state.step + -(-stop_after // per_batch) * per_batch)
    # With several steps per batch the boundaries are the batch boundaries (what a reproduction carries
    # between a batch's steps, from start_batch on, is not in the checkpoint); a stop waits for the batch to end.
    trainer.model.train()
    with progress_bar(trainer.console, progress) as bar, ckpt.deferring_signals():
        task = bar.add_task(f"{trainer.bench.id} train", total=total, completed=state.step, status="")
        started = time.perf_counter()

        def clock() -> None:
            nonlocal started
            state.seconds, started = state.seconds + time.perf_counter() - started, time.perf_counter()

        while state.step < stop_at:
            if state.step % per_batch == 0:
                clock()
                ckpt.at_boundary(trainer.payload, state.step, total)
                batch = trainer.next_batch()
            trainer.step(batch)
            elapsed = state.seconds + time.perf_counter() - started
            bar.update(task, completed=state.step, status=trainer.status(elapsed))
            if state.step % profile.val_every == 0 or state.step == total:
                trainer.curve_point(elapsed, log=not progress)
            if state.step % profile.checkpoint_every == 0:
                clock()
                ckpt.save(trainer.payload(), state.step)
        clock()
        if ckpt.saved_step != state.step:
            ckpt.save(trainer.payload(), state.step)
        ckpt.at_boundary(trainer.payload, state.step, total)
    _finish(trainer)
    return state


def _finish(trainer: Trainer) -> None:
    """Stop short of the end for ``--stop-after``; else load the early-stopping weights that are tested."""
    state, profile, best = trainer.state, trainer.profile, trainer.best
    if state.step < profile.train_episodes:
        raise InterruptedRun(
            f"stopped after step {state.step} of {profile.train_episodes} (--stop-after); "
            f"checkpoint saved to {trainer.ckpt.path}",
            "continue with the same command plus --resume",
        )
    if profile.early_stopping:
        best.restore(trainer.model)
        last = "the last step" if best.step == state.step else f"not of the last step {state.step}"
        trainer.console.print(
            f"Early stopping: testing the weights of step {best.step} "
            f"(validation {trainer.bench.metric} {best.score:.4g}), {last}"
        )
