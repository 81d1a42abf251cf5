"""How long a profile takes on this machine, from a few timed steps, before committing hours to it.

A paper profile runs from minutes (HyperNetworks on MNIST) to days (MAML at 5 shots on a CPU), and a
researcher choosing what to run on which machine needs that number first. ``metabench estimate`` builds
the run exactly as ``metabench run`` would (same plan, data, model, sampler and optimiser), times
``steps`` training steps after ``warmup`` untimed ones, times the scoring of a few validation and test
episodes, and extrapolates each to the profile's counts. It writes nothing and trains nothing that is
kept.

Each part is timed twice: by the wall clock, which is what a run on this machine now would take, and by
the process's CPU time, which a busy machine does not inflate: with one torch thread the CPU time is
what the same run takes on the same machine when it is otherwise idle, which is why the estimates in
the specs (a profile's ``estimate_hours`` and ``estimate_note``) were measured that way. It is a guide
(a machine's speed drifts by tens of percent), not a promise.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from metabench import allocator, training
from metabench.banks import Banks
from metabench.checkpoint import Checkpointer
from metabench.episodes import EpisodeShape
from metabench.evaluate import evaluate
from metabench.plan import Plan, RunRequest, build_model, make_plan
from metabench.registry_loader import get_spec
from metabench.reproduction import Reproduction
from metabench.spec import Benchmark, Profile
from metabench.tasks import TaskSource

#: scoring is timed on this many episodes (or the profile's count, if smaller) and scaled
TIMED_EPISODES = 20


@dataclass(frozen=True)
class Estimate:
    """Measured rates of one profile on this machine and the times they extrapolate to."""

    paper: str
    benchmark: str
    profile: str
    device: str
    threads: int
    steps_timed: int
    seconds_per_step: float
    train_steps: int
    validation_seconds: float
    test_seconds: float
    #: every benchmark the run would score (the training serves them all; their test time is included)
    scored: tuple[str, ...]
    #: the same four figures measured as this process's CPU time (see the module's docstring)
    cpu_seconds_per_step: float
    cpu_validation_seconds: float
    cpu_test_seconds: float

    @property
    def train_seconds(self) -> float:
        return self.seconds_per_step * self.train_steps

    @property
    def total_seconds(self) -> float:
        return self.train_seconds + self.validation_seconds + self.test_seconds

    @property
    def cpu_total_seconds(self) -> float:
        return self.cpu_seconds_per_step * self.train_steps + self.cpu_validation_seconds + self.cpu_test_seconds

    def as_dict(self) -> dict[str, object]:
        return {
            **self.__dict__,
            "train_seconds": self.train_seconds,
            "total_seconds": self.total_seconds,
            "total_hours": self.total_seconds / 3600,
            "cpu_total_seconds": self.cpu_total_seconds,
            "cpu_total_hours": self.cpu_total_seconds / 3600,
        }


@contextmanager
def scratch_run(request: RunRequest, console: Console) -> Iterator[tuple[Plan, Banks, training.Trainer]]:
    """The request's run at step 0, built as ``metabench run`` builds it (plan, data, seeded model, sampler,
    optimiser), its checkpoint in a scratch folder removed afterwards: for timing steps, never for results."""
    plan = make_plan(request, get_spec(request.paper), console)
    banks = Banks(plan.bench, request.data_dir, plan.device, download=request.download, progress=request.progress)
    torch.manual_seed(request.seed)
    model = build_model(plan.spec, plan.targets[0]).to(plan.device)
    with tempfile.TemporaryDirectory() as scratch:
        ckpt = Checkpointer(Path(scratch) / "scratch.pt", plan.fingerprint(request.seed))
        trainer = training.start(model, plan.profile, plan.bench, banks, request.seed, ckpt, None, console)
        model.train()
        yield plan, banks, trainer


def estimate(request: RunRequest, steps: int, warmup: int, console: Console) -> Estimate:
    """Time ``steps`` training steps of the request's run (after ``warmup``) and its scoring, and
    extrapolate to the whole profile."""
    allocator.tune_for_training()
    with scratch_run(request, console) as (plan, banks, trainer):
        # whole batches only: a learned optimizer takes steps_per_batch steps on each batch it samples
        per_batch = plan.profile.steps_per_batch
        warmup, steps = (-(-count // per_batch) * per_batch for count in (warmup, steps))
        _steps(trainer, warmup, plan.device)
        train = _steps(trainer, steps, plan.device)
    model = trainer.model
    model.eval()
    validation = _validation_seconds(plan, banks, model)
    test = [_test_seconds(t.bench, t.profile, banks, model, plan.device) for t in plan.targets]
    return Estimate(
        paper=plan.spec.key,
        benchmark=plan.bench.id,
        profile=plan.label,
        device=str(plan.device),
        threads=torch.get_num_threads(),
        steps_timed=steps,
        seconds_per_step=train.wall / steps,
        train_steps=plan.profile.train_episodes,
        validation_seconds=validation.wall,
        test_seconds=sum(part.wall for part in test),
        scored=tuple(t.bench.id for t in plan.targets),
        cpu_seconds_per_step=train.cpu / steps,
        cpu_validation_seconds=validation.cpu,
        cpu_test_seconds=sum(part.cpu for part in test),
    )


@dataclass(frozen=True)
class Clocked:
    """Seconds by the wall clock and by this process's CPU time."""

    wall: float
    cpu: float

    def scaled(self, factor: float) -> Clocked:
        return Clocked(self.wall * factor, self.cpu * factor)


class _Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> _Clock:
        _synchronise(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        _synchronise(self.device)
        self.took = Clocked(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def _steps(trainer: training.Trainer, count: int, device: torch.device) -> Clocked:
    """The time of ``count`` training steps, sampling included (the runner samples on the same clock)."""
    per_batch, batch = trainer.profile.steps_per_batch, None
    with _Clock(device) as clock:
        for _ in range(count):
            if batch is None or trainer.state.step % per_batch == 0:
                batch = trainer.next_batch()
            trainer.step(batch)
    return clock.took


def _validation_seconds(plan: Plan, banks: Banks, model: Reproduction) -> Clocked:
    """Every validation pass of the profile: how many there are times one pass's scaled time."""
    profile, bench = plan.profile, plan.bench
    if not profile.val_part:
        return Clocked(0.0, 0.0)
    passes = -(-profile.train_episodes // profile.val_every)
    bank = banks.get(profile.val_part, f"{bench.id}.profiles.{profile.name}.val_part")
    return _scoring_seconds(bench, profile, bank, profile.val_episodes, model, plan.device).scaled(passes)


def _test_seconds(
    bench: Benchmark, profile: Profile, banks: Banks, model: Reproduction, device: torch.device
) -> Clocked:
    bank = banks.get(bench.test_part, f"{bench.id}.test_part")
    return _scoring_seconds(bench, profile, bank, profile.test_episodes, model, device)


def _scoring_seconds(
    bench: Benchmark, profile: Profile, bank: TaskSource, count: int, model: Reproduction, device: torch.device
) -> Clocked:
    """``count`` episodes' scoring time, from timing at most :data:`TIMED_EPISODES` of them (their own
    draw, not the benchmark's frozen set: only the cost is wanted)."""
    timed = min(count, TIMED_EPISODES)
    shape = EpisodeShape(bench.ways, bench.shots, bench.queries, bench.sequence)
    key = {"dataset": bench.dataset, "split": bench.split, "part": bank.name, "purpose": "estimate"}
    batch = min(profile.eval_batch, timed)
    warm = bank.freeze(shape, batch, bench.test_seed + 1, key)
    evaluate(model, warm, bank, batch, metric=bench.metric)  # first-call costs: allocations, lazy set-up
    episodes = bank.freeze(shape, timed, bench.test_seed, key)
    with _Clock(device) as clock:
        evaluate(model, episodes, bank, batch, metric=bench.metric)
    return clock.took.scaled(count / timed)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hours_text(seconds: float) -> str:
    """``12 s``, ``14 min``, ``2.1 h``, ``3.4 days``: the unit a reader plans with."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
